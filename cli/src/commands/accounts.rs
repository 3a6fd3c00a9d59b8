//! `umcp keys create|list|revoke` and `umcp users create|list|set-roles|disable`.

use std::io::IsTerminal;
use std::time::SystemTime;

use serde_json::json;
use umcp_proto::auth::v1 as pb;
use umcp_proto::common::v1::PageRequest;

use super::auth::read_stdin_line;
use crate::args::{
    GlobalOpts, KeysCommand, KeysCreateArgs, KeysListArgs, RoleArg, UsersCommand, UsersCreateArgs,
};
use crate::error::CliError;
use crate::output::{Output, proto_json, role_names, timestamp, to_timestamp};
use crate::session::{Session, missing};

/// The largest page ListUsers and ListApiKeys serve.
const MAX_PAGE: u32 = 1000;

fn role(arg: RoleArg) -> i32 {
    match arg {
        RoleArg::Viewer => pb::Role::Viewer as i32,
        RoleArg::Developer => pb::Role::Developer as i32,
        RoleArg::Admin => pb::Role::Admin as i32,
    }
}

/// Runs one `umcp keys` subcommand.
///
/// # Errors
/// No credentials, a failed call.
pub async fn keys(opts: &GlobalOpts, command: &KeysCommand, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    match command {
        KeysCommand::Create(args) => create_key(&session, args, out).await,
        KeysCommand::List(args) => list_keys(&session, args, out).await,
        KeysCommand::Revoke { id } => {
            session
                .connection()
                .auth()
                .revoke_api_key(
                    session
                        .request(pb::RevokeApiKeyRequest { key_id: id.clone() })
                        .await?,
                )
                .await
                .map_err(CliError::rpc(
                    "AuthService/RevokeApiKey",
                    session.endpoint(),
                ))?;
            if out.is_json() {
                return out.print_json(&json!({"id": id, "revoked": true}));
            }
            out.line(format!("revoked API key {id}"))
        }
    }
}

async fn create_key(session: &Session, args: &KeysCreateArgs, out: Output) -> Result<(), CliError> {
    let request = pb::CreateApiKeyRequest {
        name: args.name.clone(),
        expires_at: args.expires_in.map(|d| to_timestamp(SystemTime::now() + d)),
        roles: args.roles.iter().copied().map(role).collect(),
        owner_user_id: args.user.clone().unwrap_or_default(),
    };
    let answer = session
        .connection()
        .auth()
        .create_api_key(session.request(request).await?)
        .await
        .map_err(CliError::rpc(
            "AuthService/CreateApiKey",
            session.endpoint(),
        ))?
        .into_inner();
    if out.is_json() {
        return out.print_json(&proto_json(&answer, "umcp.auth.v1.CreateApiKeyResponse"));
    }
    let info = answer
        .key
        .ok_or_else(|| missing("AuthService/CreateApiKey", "key"))?;
    // The secret alone on stdout, so `KEY=$(umcp keys create ci)` works; the rest on stderr.
    eprintln!(
        "created API key {} ({}, roles {}, expires {}); the secret below is shown only once:",
        info.id,
        info.name,
        role_names(&info.roles),
        timestamp(info.expires_at.as_ref())
    );
    out.line(answer.api_key)
}

async fn list_keys(session: &Session, args: &KeysListArgs, out: Output) -> Result<(), CliError> {
    let owner = if args.all {
        "*".to_owned()
    } else {
        args.user.clone().unwrap_or_default()
    };
    let mut keys = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListApiKeysRequest {
            page: Some(PageRequest {
                page_size: MAX_PAGE,
                page_token: token,
            }),
            owner_user_id: owner.clone(),
        };
        let page = session
            .connection()
            .auth()
            .list_api_keys(session.request(request).await?)
            .await
            .map_err(CliError::rpc("AuthService/ListApiKeys", session.endpoint()))?
            .into_inner();
        keys.extend(page.keys);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    if out.is_json() {
        let list: Vec<_> = keys
            .iter()
            .map(|k| proto_json(k, "umcp.auth.v1.ApiKeyInfo"))
            .collect();
        return out.print_json(&json!({ "keys": list }));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.clone(),
                k.name.clone(),
                k.prefix.clone(),
                k.owner_user_id.clone(),
                role_names(&k.roles),
                timestamp(k.expires_at.as_ref()),
                timestamp(k.last_used_at.as_ref()),
                if k.revoked { "revoked" } else { "active" }.to_owned(),
            ]
        })
        .collect();
    out.table(
        &[
            "ID",
            "NAME",
            "PREFIX",
            "OWNER",
            "ROLES",
            "EXPIRES",
            "LAST USED",
            "STATE",
        ],
        &rows,
    )
}

/// Runs one `umcp users` subcommand.
///
/// # Errors
/// No credentials, an unknown user, a failed call.
pub async fn users(opts: &GlobalOpts, command: &UsersCommand, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    let user = match command {
        UsersCommand::Create(args) => create_user(&session, args).await?,
        UsersCommand::List => {
            let users = all_users(&session).await?;
            if out.is_json() {
                let list: Vec<_> = users
                    .iter()
                    .map(|u| proto_json(u, "umcp.auth.v1.User"))
                    .collect();
                return out.print_json(&json!({ "users": list }));
            }
            let rows: Vec<Vec<String>> = users.iter().map(user_row).collect();
            return out.table(&["ID", "USERNAME", "ROLES", "STATE", "CREATED"], &rows);
        }
        UsersCommand::SetRoles { user, roles } => {
            let user_id = resolve(&session, user).await?;
            let request = pb::SetUserRolesRequest {
                user_id,
                roles: roles.iter().copied().map(role).collect(),
            };
            session
                .connection()
                .auth()
                .set_user_roles(session.request(request).await?)
                .await
                .map_err(CliError::rpc(
                    "AuthService/SetUserRoles",
                    session.endpoint(),
                ))?
                .into_inner()
                .user
        }
        UsersCommand::Disable { user } => {
            let user_id = resolve(&session, user).await?;
            session
                .connection()
                .auth()
                .disable_user(session.request(pb::DisableUserRequest { user_id }).await?)
                .await
                .map_err(CliError::rpc("AuthService/DisableUser", session.endpoint()))?
                .into_inner()
                .user
        }
    };
    let user = user.ok_or_else(|| missing("AuthService", "user"))?;
    if out.is_json() {
        return out.print_json(&proto_json(&user, "umcp.auth.v1.User"));
    }
    out.table(
        &["ID", "USERNAME", "ROLES", "STATE", "CREATED"],
        &[user_row(&user)],
    )
}

fn user_row(user: &pb::User) -> Vec<String> {
    vec![
        user.id.clone(),
        user.username.clone(),
        role_names(&user.roles),
        if user.disabled { "disabled" } else { "active" }.to_owned(),
        timestamp(user.created_at.as_ref()),
    ]
}

async fn create_user(
    session: &Session,
    args: &UsersCreateArgs,
) -> Result<Option<pb::User>, CliError> {
    let password = if args.password_stdin {
        read_stdin_line()?
    } else if std::io::stdin().is_terminal() {
        let ask = |prompt: &str| {
            rpassword::prompt_password(prompt).map_err(|e| {
                CliError::Usage(format!("cannot read the password from the terminal: {e}"))
            })
        };
        let first = ask(&format!("password for {}: ", args.username))?;
        if ask("again: ")? != first {
            return Err(CliError::BadInput("the two passwords differ".into()));
        }
        first
    } else {
        return Err(CliError::Usage(
            "no terminal to ask for the password on: pass --password-stdin and pipe it in".into(),
        ));
    };
    let request = pb::CreateUserRequest {
        username: args.username.clone(),
        password,
        roles: args.roles.iter().copied().map(role).collect(),
    };
    Ok(session
        .connection()
        .auth()
        .create_user(session.request(request).await?)
        .await
        .map_err(CliError::rpc("AuthService/CreateUser", session.endpoint()))?
        .into_inner()
        .user)
}

async fn all_users(session: &Session) -> Result<Vec<pb::User>, CliError> {
    let mut users = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::ListUsersRequest {
            page: Some(PageRequest {
                page_size: MAX_PAGE,
                page_token: token,
            }),
        };
        let page = session
            .connection()
            .auth()
            .list_users(session.request(request).await?)
            .await
            .map_err(CliError::rpc("AuthService/ListUsers", session.endpoint()))?
            .into_inner();
        users.extend(page.users);
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            return Ok(users);
        }
    }
}

/// A user id from an id or a username.
async fn resolve(session: &Session, user: &str) -> Result<String, CliError> {
    all_users(session)
        .await?
        .into_iter()
        .find(|u| u.id == user || u.username == user)
        .map(|u| u.id)
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "no user with id or username `{user}` (see `umcp users list`)"
            ))
        })
}
