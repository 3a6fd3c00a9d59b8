//! Reading what the command line names: files or stdin (`-`), languages, `name=VALUE` pairs.

use std::io::Read;
use std::path::Path;

use serde_json::Value as Json;
use umcp_proto::execution::v1::Language;

use crate::args::Lang;
use crate::error::CliError;

/// The bytes of `path`, or of stdin for `-`.
///
/// # Errors
/// [`CliError::ReadInput`] naming the file.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, CliError> {
    let read = if path == Path::new("-") {
        let mut buffer = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buffer)
            .map(|_| buffer)
    } else {
        std::fs::read(path)
    };
    read.map_err(|source| CliError::ReadInput {
        path: path.to_path_buf(),
        source,
    })
}

/// The text of `path` (UTF-8), or of stdin for `-`.
///
/// # Errors
/// Unreadable, or not UTF-8.
pub fn read_text(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|_| CliError::BadInput(format!("{} is not UTF-8 text", path.display())))
}

/// The JSON document in `path` (or stdin).
///
/// # Errors
/// Unreadable, or not JSON (the message has the line and column).
pub fn read_json(path: &Path) -> Result<Json, CliError> {
    let bytes = read_bytes(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::BadInput(format!("{} is not valid JSON: {e}", path.display())))
}

/// The language: `--lang` when given, else from the file extension.
///
/// # Errors
/// Neither says (stdin, an unknown extension).
pub fn language(lang: Option<Lang>, path: &Path) -> Result<Language, CliError> {
    let lang = match lang {
        Some(lang) => lang,
        None => match path.extension().and_then(|e| e.to_str()) {
            Some("py") => Lang::Python,
            Some("js" | "mjs" | "cjs") => Lang::Javascript,
            Some("sh" | "bash") => Lang::Bash,
            _ => {
                return Err(CliError::BadInput(format!(
                    "cannot tell the language of {}: pass --lang python|javascript|bash",
                    path.display()
                )));
            }
        },
    };
    Ok(match lang {
        Lang::Python => Language::Python,
        Lang::Javascript => Language::Javascript,
        Lang::Bash => Language::Bash,
    })
}

/// `name=VALUE` → (name, JSON value): VALUE parsed as JSON when it is JSON, else the string.
///
/// # Errors
/// No `=`, or an empty name.
pub fn assignment(text: &str, flag: &str) -> Result<(String, Json), CliError> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(CliError::Usage(format!(
            "{flag} `{text}`: expected NAME=VALUE"
        )));
    };
    if name.is_empty() {
        return Err(CliError::Usage(format!(
            "{flag} `{text}`: the name is empty"
        )));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Json::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

/// The lower-case language name without its enum prefix.
#[must_use]
pub fn language_name(language: i32) -> String {
    Language::try_from(language).map_or_else(
        |_| language.to_string(),
        |l| {
            l.as_str_name()
                .trim_start_matches("LANGUAGE_")
                .to_lowercase()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_take_json_or_fall_back_to_text() {
        assert_eq!(assignment("n=3", "--set").unwrap().1, serde_json::json!(3));
        assert_eq!(
            assignment("s=hello world", "--set").unwrap().1,
            serde_json::json!("hello world")
        );
        assert!(assignment("novalue", "--set").is_err());
    }

    #[test]
    fn the_extension_picks_the_language_and_stdin_needs_a_flag() {
        assert_eq!(language(None, Path::new("a.py")).unwrap(), Language::Python);
        assert_eq!(language(None, Path::new("a.sh")).unwrap(), Language::Bash);
        let error = language(None, Path::new("-")).unwrap_err().to_string();
        assert!(error.contains("--lang"), "{error}");
    }
}
