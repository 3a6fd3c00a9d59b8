//! Request rules shared by the RPCs (documented in auth.proto). Every failure names the field
//! and says what is allowed.

use umcp_authz::permissions::Role;
use umcp_proto::auth::v1 as pb;

use crate::error::AuthError;

type Result<T> = std::result::Result<T, AuthError>;

const USERNAME_RULE: &str = "1 to 64 characters: ASCII letters, digits, `_`, `.` or `-`";
/// Longest password accepted anywhere (argon2 input is bounded to keep hashing cost fixed).
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password for new users (and the bootstrap admin).
pub(crate) const MIN_NEW_PASSWORD_BYTES: usize = 12;
/// Default and maximum page sizes of the list calls.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 100;
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

/// Checks a username and returns its canonical (lowercase) form: usernames are unique and
/// looked up case-insensitively, so `Admin` cannot impersonate `admin`.
pub(crate) fn username(field: &str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(AuthError::invalid(
            field,
            format!("username must be {USERNAME_RULE}"),
        ))
    }
}

/// Checks a password presented at login (any non-empty value up to the maximum).
pub(crate) fn login_password(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::invalid(
            field,
            format!("password must be 1 to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks a new password.
pub(crate) fn new_password(field: &str, value: &str) -> Result<()> {
    if value.len() < MIN_NEW_PASSWORD_BYTES || value.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::invalid(
            field,
            format!(
                "password is {} bytes; it must be {MIN_NEW_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Checks an API key name: 1–64 characters, no control characters.
pub(crate) fn key_name(field: &str, value: &str) -> Result<()> {
    let chars = value.chars().count();
    if chars == 0 || chars > 64 || value.chars().any(char::is_control) || value.trim().is_empty() {
        return Err(AuthError::invalid(
            field,
            "name must be 1 to 64 characters, not blank, without control characters",
        ));
    }
    Ok(())
}

/// Converts a proto role.
pub(crate) fn role_from_proto(field: &str, value: i32) -> Result<Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Viewer) => Ok(Role::Viewer),
        Ok(pb::Role::Developer) => Ok(Role::Developer),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Service) => Ok(Role::Service),
        Ok(pb::Role::Unspecified) | Err(_) => Err(AuthError::invalid(
            field,
            format!(
                "role {value} is not allowed; use ROLE_VIEWER, ROLE_DEVELOPER, ROLE_ADMIN or ROLE_SERVICE"
            ),
        )),
    }
}

/// The proto value of a role.
#[must_use]
pub(crate) fn role_to_proto(role: Role) -> i32 {
    match role {
        Role::Viewer => pb::Role::Viewer,
        Role::Developer => pb::Role::Developer,
        Role::Admin => pb::Role::Admin,
        Role::Service => pb::Role::Service,
    }
    .into()
}

/// Converts a role list, sorted and without duplicates; `required` refuses an empty list.
pub(crate) fn roles(field: &str, values: &[i32], required: bool) -> Result<Vec<Role>> {
    if required && values.is_empty() {
        return Err(AuthError::invalid(
            field,
            "at least one role is required (ROLE_VIEWER, ROLE_DEVELOPER, ROLE_ADMIN or ROLE_SERVICE)",
        ));
    }
    let mut out = values
        .iter()
        .enumerate()
        .map(|(i, v)| role_from_proto(&format!("{field}[{i}]"), *v))
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resolves a page request: size (0 → default) and the cursor (empty → first page).
pub(crate) fn page(
    page: Option<&umcp_proto::common::v1::PageRequest>,
) -> Result<(u32, Option<String>)> {
    let Some(page) = page else {
        return Ok((DEFAULT_PAGE_SIZE, None));
    };
    let size = match page.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(AuthError::invalid(
                "page.page_size",
                format!(
                    "page_size {n} is too large; allowed: 0 (default {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
                ),
            ));
        }
        n => n,
    };
    if page.page_token.is_empty() {
        return Ok((size, None));
    }
    // Cursors are ids we handed out: 32 lowercase hex digits.
    if is_id(&page.page_token) {
        Ok((size, Some(page.page_token.clone())))
    } else {
        Err(AuthError::invalid(
            "page.page_token",
            "not a page token from a previous response; leave it empty for the first page",
        ))
    }
}

/// Whether `value` has the shape of an id this service generates (a UUIDv7 as 32 hex digits).
#[must_use]
pub(crate) fn is_id(value: &str) -> bool {
    value.len() == 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks an id field.
pub(crate) fn id(field: &str, value: &str) -> Result<()> {
    if is_id(value) {
        Ok(())
    } else {
        Err(AuthError::invalid(
            field,
            "must be an id as returned by this service (32 hex digits)",
        ))
    }
}

/// A new id: UUIDv7 as 32 hex digits, so ids sort by creation time and fit store keys.
#[must_use]
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_checked_and_lowercased() {
        assert_eq!(username("u", "Alice.B-1_x").unwrap(), "alice.b-1_x");
        for bad in ["", "a b", "ä", &"a".repeat(65), "a/b"] {
            let e = username("username", bad).unwrap_err();
            assert!(e.to_string().starts_with("username: "), "{e}");
        }
    }

    #[test]
    fn passwords_and_names_have_bounds() {
        assert!(login_password("p", "x").is_ok());
        assert!(login_password("p", "").is_err());
        assert!(login_password("p", &"x".repeat(1025)).is_err());
        assert!(new_password("p", "short").is_err());
        assert!(new_password("p", "long enough pw").is_ok());
        assert!(key_name("n", "ci key").is_ok());
        assert!(key_name("n", "  ").is_err());
        assert!(key_name("n", "a\nb").is_err());
    }

    #[test]
    fn roles_convert_and_reject_unspecified() {
        assert_eq!(
            roles("roles", &[3, 1, 1], true).unwrap(),
            vec![Role::Viewer, Role::Admin]
        );
        assert!(roles("roles", &[], true).is_err());
        assert!(roles("roles", &[], false).unwrap().is_empty());
        let e = roles("roles", &[1, 0], true).unwrap_err();
        assert!(e.to_string().starts_with("roles[1]: "), "{e}");
        assert!(roles("roles", &[99], true).is_err());
        for role in Role::ALL {
            assert_eq!(role_from_proto("r", role_to_proto(role)).unwrap(), role);
        }
    }

    #[test]
    fn pages_default_bound_and_cursor() {
        assert_eq!(page(None).unwrap(), (100, None));
        let p = |size, token: &str| umcp_proto::common::v1::PageRequest {
            page_size: size,
            page_token: token.into(),
        };
        assert_eq!(page(Some(&p(0, ""))).unwrap(), (100, None));
        assert!(page(Some(&p(1001, ""))).is_err());
        let id = new_id();
        assert_eq!(page(Some(&p(5, &id))).unwrap(), (5, Some(id)));
        assert!(page(Some(&p(5, "nope"))).is_err());
    }
}
