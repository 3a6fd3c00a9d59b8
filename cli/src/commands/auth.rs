//! `umcp login`, `umcp logout`, `umcp whoami`.

use std::io::{BufRead, IsTerminal};

use serde_json::json;
use umcp_proto::auth::v1 as pb;

use crate::args::{GlobalOpts, LoginArgs};
use crate::error::CliError;
use crate::output::{Output, proto_json, role_names, timestamp, unix_time};
use crate::session::{Connection, Session, missing};
use crate::store::Login;

/// `umcp login`: asks for what is missing, logs in, stores the tokens.
///
/// # Errors
/// No terminal to ask on, a refused login, an unwritable store.
pub async fn login(opts: &GlobalOpts, args: &LoginArgs, out: Output) -> Result<(), CliError> {
    let connection = Connection::open(opts)?;
    let username = match &args.username {
        Some(name) => name.clone(),
        None => ask("username: ")?,
    };
    let password = if args.password_stdin {
        read_stdin_line()?
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {username}: ")).map_err(|e| {
            CliError::Usage(format!("cannot read the password from the terminal: {e}"))
        })?
    } else {
        return Err(CliError::Usage(
            "no terminal to ask for the password on: pass --password-stdin and pipe it in".into(),
        ));
    };
    let tokens = connection
        .auth()
        .login(connection.anonymous(pb::LoginRequest {
            username: username.clone(),
            password,
        }))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated => CliError::Rpc {
                call: "AuthService/Login",
                endpoint: connection.endpoint().to_owned(),
                status: Box::new(tonic::Status::unauthenticated(format!(
                    "{} (check the username and password)",
                    status.message()
                ))),
            },
            _ => CliError::rpc("AuthService/Login", connection.endpoint())(status),
        })?
        .into_inner()
        .tokens
        .ok_or_else(|| missing("AuthService/Login", "tokens"))?;
    let login = Login::from_tokens(&username, &tokens);
    let (access_until, refresh_until) = (login.access_expires_at, login.refresh_expires_at);
    connection.save_login(login)?;
    if out.is_json() {
        return out.print_json(&json!({
            "endpoint": connection.endpoint(),
            "username": username,
            "accessExpiresAt": unix_time(access_until),
            "refreshExpiresAt": unix_time(refresh_until),
            "credentials": connection.store().path(),
        }));
    }
    out.line(format!(
        "logged in to {} as {username}; the login refreshes itself until {} (stored in {})",
        connection.endpoint(),
        unix_time(refresh_until),
        connection.store().path().display()
    ))
}

/// `umcp logout`: revokes the login's session at the auth service, then forgets it locally
/// (also when the service already considered it dead).
///
/// # Errors
/// The gateway is unreachable (the login is then kept, so logout can be retried), or the
/// store cannot be written.
pub async fn logout(opts: &GlobalOpts, out: Output) -> Result<(), CliError> {
    let connection = Connection::open(opts)?;
    let stored = connection
        .store()
        .read()?
        .logins
        .contains_key(connection.endpoint());
    if !stored {
        let text = format!("not logged in to {}", connection.endpoint());
        return if out.is_json() {
            out.print_json(
                &json!({"endpoint": connection.endpoint(), "revoked": false, "wasLoggedIn": false}),
            )
        } else {
            out.line(text)
        };
    }
    // The stored login only: `UMCP_TOKEN` / `--api-key` are not ours to revoke.
    let stored_only = GlobalOpts {
        api_key: None,
        token: None,
        ..opts.clone()
    };
    let session = Session::load(&stored_only)?;
    let revoked = match revoke(&session).await {
        Ok(()) => true,
        // Dead already (expired, revoked elsewhere): nothing left to revoke.
        Err(CliError::LoginExpired { .. } | CliError::NotLoggedIn { .. }) => false,
        Err(e)
            if e.status()
                .is_some_and(|s| s.code() == tonic::Code::Unauthenticated) =>
        {
            false
        }
        Err(e) => return Err(e),
    };
    connection.forget_login()?;
    if out.is_json() {
        return out.print_json(
            &json!({"endpoint": connection.endpoint(), "revoked": revoked, "wasLoggedIn": true}),
        );
    }
    if revoked {
        out.line(format!("logged out of {}", connection.endpoint()))
    } else {
        out.line(format!(
            "the login to {} had already expired or been revoked; forgot it",
            connection.endpoint()
        ))
    }
}

async fn revoke(session: &Session) -> Result<(), CliError> {
    // A fresh access token first: refreshing rotates the refresh token revoked below.
    session.access_token().await?;
    let refresh_token = session.refresh_token().await;
    let request = session.request(pb::LogoutRequest { refresh_token }).await?;
    session
        .connection()
        .auth()
        .logout(request)
        .await
        .map_err(CliError::rpc("AuthService/Logout", session.endpoint()))?;
    Ok(())
}

/// `umcp whoami`.
///
/// # Errors
/// No credentials, or the call fails.
pub async fn whoami(opts: &GlobalOpts, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    let me = session
        .connection()
        .auth()
        .who_am_i(session.request(pb::WhoAmIRequest {}).await?)
        .await
        .map_err(CliError::rpc("AuthService/WhoAmI", session.endpoint()))?
        .into_inner();
    if out.is_json() {
        let mut value = proto_json(&me, "umcp.auth.v1.WhoAmIResponse");
        value["endpoint"] = json!(session.endpoint());
        return out.print_json(&value);
    }
    out.line(format!("user:        {} ({})", me.username, me.user_id))?;
    out.line(format!("roles:       {}", role_names(&me.roles)))?;
    out.line(format!("permissions: {}", me.permissions.join(" ")))?;
    out.line(format!("auth method: {}", me.auth_method))?;
    out.line(format!(
        "token until: {}",
        timestamp(me.token_expires_at.as_ref())
    ))?;
    out.line(format!("endpoint:    {}", session.endpoint()))
}

/// Asks for one line on the terminal (stderr prompt).
fn ask(prompt: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "no terminal to ask for the {} on: pass it as a flag",
            prompt.trim_end_matches(": ")
        )));
    }
    eprint!("{prompt}");
    read_stdin_line()
}

/// The first line of stdin without its line ending.
pub(crate) fn read_stdin_line() -> Result<String, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|source| CliError::ReadInput {
            path: "-".into(),
            source,
        })?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(CliError::BadInput("stdin gave an empty line".into()));
    }
    Ok(line)
}
