//! Checks every config shares, each with one message format: the setting, the environment
//! variable that sets it, what is allowed and what was given.

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};

use crate::env_name;

/// A problem when `value` (the setting `key`) is not a socket address like `example`.
#[must_use]
pub fn check_socket_addr(key: &str, value: &str, example: &str) -> Option<String> {
    value.parse::<std::net::SocketAddr>().is_err().then(|| {
        format!(
            "{key} ({}) `{value}` is not a socket address like {example}",
            env_name(key)
        )
    })
}

/// A problem when `value` (the setting `key`) is not an `http://host:port` URL; an empty value
/// is allowed when `empty_means` says what it means (e.g. "disable auditing").
#[must_use]
pub fn check_http_url(key: &str, value: &str, empty_means: Option<&str>) -> Option<String> {
    if value.is_empty() && empty_means.is_some() {
        return None;
    }
    let ok = value
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
    (!ok).then(|| match empty_means {
        Some(meaning) => format!(
            "{key} ({}) `{value}` must be an http://host:port URL, or empty to {meaning}",
            env_name(key)
        ),
        None => format!(
            "{key} ({}) `{value}` must be an http://host:port URL",
            env_name(key)
        ),
    })
}

/// A problem when `value` (the setting `key`) is outside `allowed`, in the one format every
/// config uses: `max_rows (UMCP_MAX_ROWS) must be 1..=100, got 0`; a range open at one end
/// reads `must be at least 8` or `must be at most 300`.
#[must_use]
pub fn check_range<T, R>(key: &str, value: T, allowed: R) -> Option<String>
where
    T: PartialOrd + Display,
    R: RangeBounds<T>,
{
    if allowed.contains(&value) {
        return None;
    }
    let bounds = match (allowed.start_bound(), allowed.end_bound()) {
        (Bound::Included(lo), Bound::Included(hi)) => format!("{lo}..={hi}"),
        (Bound::Included(lo), Bound::Excluded(hi)) => format!("{lo}..{hi}"),
        (Bound::Included(lo), Bound::Unbounded) => format!("at least {lo}"),
        (Bound::Excluded(lo), Bound::Unbounded) => format!("more than {lo}"),
        (Bound::Unbounded, Bound::Included(hi)) => format!("at most {hi}"),
        (Bound::Unbounded, Bound::Excluded(hi)) => format!("less than {hi}"),
        (Bound::Excluded(lo), Bound::Included(hi)) => format!("more than {lo} and at most {hi}"),
        (Bound::Excluded(lo), Bound::Excluded(hi)) => format!("more than {lo} and less than {hi}"),
        (Bound::Unbounded, Bound::Unbounded) => {
            unreachable!("an unbounded range contains every value")
        }
    };
    Some(format!(
        "{key} ({}) must be {bounds}, got {value}",
        env_name(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_messages_name_the_setting_its_variable_and_the_bounds() {
        assert_eq!(check_range("max_rows", 5, 1..=100), None);
        assert_eq!(
            check_range("max_rows", 0, 1..=100).unwrap(),
            "max_rows (UMCP_MAX_ROWS) must be 1..=100, got 0"
        );
        assert_eq!(
            check_range("password.iterations", 1, 2..).unwrap(),
            "password.iterations (UMCP_PASSWORD__ITERATIONS) must be at least 2, got 1"
        );
        assert_eq!(
            check_range("auth.leeway_secs", 301, ..=300).unwrap(),
            "auth.leeway_secs (UMCP_AUTH__LEEWAY_SECS) must be at most 300, got 301"
        );
    }
}
