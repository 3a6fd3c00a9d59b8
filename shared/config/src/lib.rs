//! Typed configuration for every umcp binary.
//!
//! Sources, later ones winning: the struct's `Default`, then an optional TOML file (the path
//! comes from `--config <path>` or `UMCP_CONFIG`), then `UMCP_*` environment variables
//! (`UMCP_LISTEN`, `UMCP_LOG_FORMAT`, nested keys with `__`: `UMCP_BACKENDS__GRAPH`).
//! The result is validated before the process binds anything, and every problem is reported
//! at once with the key it is about.
//!
//! The file is strict (an unknown key is an error: a typo must not silently fall back to a
//! default), while environment variables are matched only against the keys the struct knows,
//! because one environment is often shared by every process of the mesh.

#![warn(missing_docs)]

mod checks;
mod secret;

pub use checks::{check_http_url, check_range, check_socket_addr};
pub use secret::Secret;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Prefix of every environment variable read by [`load`].
pub const ENV_PREFIX: &str = "UMCP_";

/// A configuration that can check itself after loading.
pub trait Validate {
    /// Returns every problem found, each naming its key and what is allowed.
    fn validate(&self) -> Vec<String>;
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed, or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// Values parsed but broke a rule.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Where configuration comes from; [`Sources::from_process`] for binaries, explicit values in tests.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Optional TOML file.
    pub file: Option<PathBuf>,
    /// `(name, value)` pairs of environment variables, names including the `UMCP_` prefix.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// Reads `--config <path>` from the command line and the process environment.
    ///
    /// # Errors
    /// An unknown command-line argument is an error (the binaries take no other arguments).
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut args = std::env::args().skip(1);
        let mut file = None;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => {
                    let path = args
                        .next()
                        .ok_or_else(|| ConfigError::Parse("--config needs a file path".into()))?;
                    file = Some(PathBuf::from(path));
                }
                other => {
                    return Err(ConfigError::Parse(format!(
                        "unknown argument `{other}`; the only argument is --config <file.toml>, \
                         everything else is set with UMCP_* environment variables"
                    )));
                }
            }
        }
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        if file.is_none() {
            file = env
                .iter()
                .find(|(k, _)| k == "UMCP_CONFIG")
                .map(|(_, v)| PathBuf::from(v));
        }
        Ok(Self { file, env })
    }

    /// Sources with only the given environment variables (for tests).
    pub fn env<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            file: None,
            env: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Loads and validates a configuration of type `T`.
///
/// # Errors
/// [`ConfigError::Parse`] when a source cannot be read or a value has the wrong type,
/// [`ConfigError::Invalid`] when validation fails.
pub fn load<T>(sources: &Sources) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let defaults = T::default();
    let known = top_level_keys(&defaults)?;
    let mut figment = Figment::from(Serialized::defaults(&defaults));
    if let Some(file) = &sources.file {
        figment = figment.merge(file_source(file)?);
    }
    let env: Vec<(String, String)> = sources
        .env
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            let top = key.split("__").next().unwrap_or_default();
            known.contains(top).then(|| (key, v.clone()))
        })
        .collect();
    // figment's `Env` provider reads the real process environment; merging the filtered pairs
    // ourselves keeps tests hermetic and lets unrelated UMCP_* variables coexist.
    for (key, value) in env {
        let path = key.replace("__", ".");
        figment = figment.merge((path.as_str(), parse_env_value(&value)));
    }
    let config: T = figment
        .extract()
        .map_err(|e| ConfigError::Parse(describe(&e)))?;
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Parses an environment value the way figment's `Env` does (numbers, booleans, arrays
/// `[a, b]`, else a string), so `UMCP_MAX_ROWS=10` is an integer.
fn parse_env_value(value: &str) -> figment::value::Value {
    value
        .parse::<figment::value::Value>()
        .unwrap_or_else(|_| figment::value::Value::from(value.to_owned()))
}

/// Reads the file eagerly: figment silently skips a missing file, and a configured file that
/// is missing must be an error. Unknown keys are rejected by `#[serde(deny_unknown_fields)]`
/// on the configuration structs.
fn file_source(path: &Path) -> Result<figment::providers::Data<Toml>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Parse(format!("cannot read {}: {e}", path.display())))?;
    Ok(Toml::string(&text))
}

fn top_level_keys<T: Serialize>(value: &T) -> Result<BTreeSet<String>, ConfigError> {
    let dict = Figment::from(Serialized::defaults(value))
        .data()
        .map_err(|e| ConfigError::Parse(describe(&e)))?;
    Ok(dict.into_values().flat_map(|d| d.into_keys()).collect())
}

fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            if key.is_empty() {
                e.kind.to_string()
            } else {
                format!("`{key}` ({}): {}", env_name(&key), e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The environment variable that sets `key` (`backends.graph` → `UMCP_BACKENDS__GRAPH`).
#[must_use]
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        max_rows: u32,
        nested: Nested,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        graph: String,
        enabled: bool,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:1".into(),
                max_rows: 10,
                nested: Nested::default(),
            }
        }
    }

    impl Default for Nested {
        fn default() -> Self {
            Self {
                graph: "http://a".into(),
                enabled: false,
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Vec<String> {
            let mut problems = Vec::new();
            problems.extend(check_range("max_rows", self.max_rows, 1..=100));
            problems
        }
    }

    #[test]
    fn defaults_then_env_with_nesting_and_types() {
        let cfg: Sample = load(&Sources::env([
            ("UMCP_MAX_ROWS", "42"),
            ("UMCP_NESTED__ENABLED", "true"),
            ("UMCP_NESTED__GRAPH", "http://b:1"),
            ("UMCP_SOMETHING_ELSE", "ignored: belongs to another process"),
        ]))
        .unwrap();
        assert_eq!(cfg.max_rows, 42);
        assert!(cfg.nested.enabled);
        assert_eq!(cfg.nested.graph, "http://b:1");
        assert_eq!(cfg.listen, "127.0.0.1:1");
    }

    #[test]
    fn file_is_strict_and_env_wins_over_file() {
        let dir = std::env::temp_dir().join(format!("umcp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "max_rows = 7\n[nested]\ngraph = \"http://file\"\n").unwrap();
        let mut sources = Sources::env([("UMCP_MAX_ROWS", "8")]);
        sources.file = Some(good);
        let cfg: Sample = load(&sources).unwrap();
        assert_eq!(
            (cfg.max_rows, cfg.nested.graph.as_str()),
            (8, "http://file")
        );

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "max_rowz = 7\n").unwrap();
        let err = load::<Sample>(&Sources {
            file: Some(bad),
            env: vec![],
        })
        .unwrap_err();
        assert!(err.to_string().contains("max_rowz"), "{err}");

        let missing = load::<Sample>(&Sources {
            file: Some(dir.join("nope.toml")),
            env: vec![],
        });
        assert!(missing.unwrap_err().to_string().contains("cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn address_and_url_checks_name_the_variable() {
        assert_eq!(check_socket_addr("listen", "127.0.0.1:1", "x"), None);
        let p = check_socket_addr("listen", "localhost", "127.0.0.1:50051").unwrap();
        assert!(
            p.contains("UMCP_LISTEN") && p.contains("127.0.0.1:50051"),
            "{p}"
        );
        assert_eq!(check_http_url("backends.graph", "http://a:1", None), None);
        assert_eq!(
            check_http_url("audit.url", "", Some("disable auditing")),
            None
        );
        let p = check_http_url("backends.graph", "", None).unwrap();
        assert!(p.contains("UMCP_BACKENDS__GRAPH"), "{p}");
        let p = check_http_url("audit.url", "graph:1", Some("disable auditing")).unwrap();
        assert!(p.contains("or empty to disable auditing"), "{p}");
    }

    #[test]
    fn wrong_type_names_the_variable_and_validation_lists_problems() {
        let err = load::<Sample>(&Sources::env([("UMCP_MAX_ROWS", "many")])).unwrap_err();
        assert!(err.to_string().contains("UMCP_MAX_ROWS"), "{err}");
        let err = load::<Sample>(&Sources::env([("UMCP_MAX_ROWS", "1000")])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid(ref p) if p.len() == 1),
            "{err}"
        );
        assert!(err.to_string().contains("1..=100"));
    }
}
