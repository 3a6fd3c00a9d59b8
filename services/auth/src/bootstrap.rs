//! First start: with an empty store, create `admin` (role admin).
//!
//! The password is `UMCP_BOOTSTRAP_ADMIN_PASSWORD` when set. Otherwise a generated one is
//! written to `<data_root>/bootstrap-admin.txt` (mode 0600, before the user exists, so a crash
//! cannot leave an admin whose password nobody knows) and printed once to stdout. It is never
//! logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use umcp_authz::permissions::Role;

use crate::config::AuthConfig;
use crate::error::AuthError;
use crate::secrets;
use crate::service::AuthCore;

/// The bootstrap user's name.
pub const ADMIN_USERNAME: &str = "admin";
const GENERATED_LEN: usize = 24;

/// Creates the bootstrap admin when the store has no user yet.
///
/// # Errors
/// Store errors, or the password file cannot be written.
pub async fn ensure_admin(core: &AuthCore, config: &AuthConfig) -> Result<(), AuthError> {
    if core.has_users().await? {
        if config.bootstrap_admin_password.is_some() {
            tracing::info!("users exist; the bootstrap admin password is ignored");
        }
        return Ok(());
    }
    let (password, generated) = match &config.bootstrap_admin_password {
        Some(secret) => (secret.expose().to_owned(), false),
        None => (secrets::base62(GENERATED_LEN)?, true),
    };
    let file = config.bootstrap_file();
    if generated {
        write_password_file(&file, &password).map_err(|e| {
            tracing::error!(path = %file.display(), error = %e, "cannot write the bootstrap password file");
            AuthError::DependencyUnavailable(format!("cannot write {}", file.display()))
        })?;
    }
    let user = core
        .provision_user(ADMIN_USERNAME, &password, vec![Role::Admin])
        .await?;
    if generated {
        announce(&password, &file);
        tracing::info!(user_id = %user.id, path = %file.display(), "bootstrap admin created with a generated password");
    } else {
        tracing::info!(user_id = %user.id, "bootstrap admin created with the configured password");
    }
    Ok(())
}

/// The service account of a single-machine mesh.
pub const SERVICE_USERNAME: &str = "mesh-services";

/// Writes an API key of the `mesh-services` service account to
/// `config.bootstrap_service_key_file` when that file is configured and missing.
///
/// # Errors
/// Store errors, or the key file cannot be written.
pub async fn ensure_service_key(core: &AuthCore, config: &AuthConfig) -> Result<(), AuthError> {
    let Some(file) = &config.bootstrap_service_key_file else {
        return Ok(());
    };
    if file.exists() {
        return Ok(());
    }
    let user = match core.user_by_username(SERVICE_USERNAME).await? {
        Some(user) => user,
        None => {
            // Nobody can log in as the service account: its password is random and unknown.
            let password = secrets::base62(GENERATED_LEN)?;
            core.provision_user(SERVICE_USERNAME, &password, vec![Role::Service])
                .await?
        }
    };
    let (key, secret) = core
        .provision_api_key(&user.id, "mesh bootstrap", vec![Role::Service])
        .await?;
    write_secret_file(file, &secret).map_err(|e| {
        tracing::error!(path = %file.display(), error = %e, "cannot write the service key file");
        AuthError::DependencyUnavailable(format!("cannot write {}", file.display()))
    })?;
    tracing::info!(key_id = %key.id, path = %file.display(), "service api key written");
    Ok(())
}

fn write_password_file(path: &Path, password: &str) -> std::io::Result<()> {
    write_secret_file(
        path,
        &format!("username: {ADMIN_USERNAME}\npassword: {password}"),
    )
}

/// Writes `text` (and a newline) to a new file only its owner can read, durably.
fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to new files; an old file keeps its mode unless tightened.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{text}")?;
    f.sync_all()
}

// The one place a secret is printed: the operator has to learn the generated password once,
// and stdout (not the log stream) is where a first start is watched.
#[allow(clippy::print_stdout)]
fn announce(password: &str, file: &Path) {
    println!(
        "umcp-auth: created bootstrap user `{ADMIN_USERNAME}` with password {password} \
         (also in {}, mode 0600; delete the file once it is stored safely)",
        file.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_is_private_even_when_it_existed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bootstrap-admin.txt");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_password_file(&path, "s3cret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "username: admin\npassword: s3cret\n"
        );
    }
}
