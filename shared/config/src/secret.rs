//! Secret configuration values (passwords, API keys): redacted wherever they could be printed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string, never printed by `Debug` (which is what logs and error messages use).
///
/// `Serialize` writes the value itself: `umcp_config::load` feeds the defaults to figment by
/// serialising them, and a redacted default would become a set secret. Nothing serialises a
/// configuration for display.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Environment values that look like numbers or booleans arrive typed; a password of
        // digits is still a password.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_digits_stay_a_string() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(s.expose(), "hunter2-hunter2");
        let from_env: Secret = figment::Figment::new()
            .merge(figment::providers::Serialized::default(
                "v",
                123_456_789_012u64,
            ))
            .extract_inner("v")
            .unwrap();
        assert_eq!(from_env.expose(), "123456789012");
    }

    #[test]
    fn an_empty_default_stays_empty_through_load() {
        #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        struct C {
            key: Secret,
        }
        impl crate::Validate for C {
            fn validate(&self) -> Vec<String> {
                Vec::new()
            }
        }
        let empty: C = crate::load(&crate::Sources::env(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(empty.key.expose(), "");
        let set: C = crate::load(&crate::Sources::env([("UMCP_KEY", "s3cret")])).unwrap();
        assert_eq!(set.key.expose(), "s3cret");
        assert!(!format!("{set:?}").contains("s3cret"));
    }
}
