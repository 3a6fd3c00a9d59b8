//! What commands print: JSON for scripts (`--json`), aligned tables and lines for people, and a
//! spinner on stderr while a long call runs (only when stderr is a terminal).

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use crate::error::CliError;

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// `json` is `--json`.
    #[must_use]
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// True with `--json`.
    #[must_use]
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as pretty JSON on stdout.
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub fn print_json(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        writeln!(out)?;
        Ok(())
    }

    /// Prints one compact JSON document per line (for streams such as `audit tail`).
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub fn print_json_line(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, value)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        writeln!(out)?;
        out.flush()?;
        Ok(())
    }

    /// Prints a line on stdout.
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub fn line(&self, text: impl std::fmt::Display) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        Ok(())
    }

    /// Prints `rows` under `headers`, columns padded to their widest cell (the last column is
    /// not padded, so long messages do not drag trailing blanks).
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        out.write_all(render_table(headers, rows).as_bytes())?;
        Ok(())
    }
}

/// The table as text (see [`Output::table`]).
#[must_use]
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push('\n');
    };
    push_row(headers.to_vec());
    for row in rows {
        push_row(row.iter().map(String::as_str).collect());
    }
    text
}

/// Runs `call` with a spinner saying `what` on stderr, when stderr is a terminal.
pub async fn with_spinner<F: Future>(what: &str, call: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return call.await;
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(100));
    let result = call.await;
    spinner.finish_and_clear();
    result
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptor set is compiled into umcp-proto from the same files as the types.
        DescriptorPool::decode(umcp_proto::FILE_DESCRIPTOR_SET)
            .expect("umcp-proto's descriptor set decodes")
    })
}

/// `message` (of proto type `full_name`, e.g. `umcp.auth.v1.WhoAmIResponse`) as canonical
/// proto3 JSON: lowerCamelCase names, enum names, every field present (also zero values, so
/// scripts can rely on the keys), 64-bit integers as JSON numbers.
///
/// # Panics
/// When `full_name` is not a message of the descriptor set (a programming error, caught by
/// the tests of every command).
#[must_use]
pub fn proto_json<M: prost::Message>(message: &M, full_name: &str) -> serde_json::Value {
    let descriptor = pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} is not in the descriptor set"));
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("a message re-encodes as its own type");
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("proto JSON serialises")
}

/// A protobuf timestamp as RFC 3339 (UTC, seconds), or `-` when unset.
#[must_use]
pub fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|ts| {
        let secs = u64::try_from(ts.seconds).ok()?;
        Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string())
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// Unix seconds as RFC 3339.
#[must_use]
pub fn unix_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// `SystemTime` → protobuf timestamp.
#[must_use]
pub fn to_timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration in seconds with millisecond precision, e.g. `0.153s`.
#[must_use]
pub fn seconds(duration: Option<&prost_types::Duration>) -> String {
    let Some(d) = duration else {
        return "-".to_owned();
    };
    let millis = d.seconds * 1000 + i64::from(d.nanos / 1_000_000);
    format!("{}.{:03}s", millis / 1000, millis % 1000)
}

/// Role enum names without their prefix, lower case: `admin`, `developer`.
#[must_use]
pub fn role_names(roles: &[i32]) -> String {
    roles
        .iter()
        .map(|r| {
            umcp_proto::auth::v1::Role::try_from(*r)
                .map(|r| r.as_str_name().trim_start_matches("ROLE_").to_lowercase())
                .unwrap_or_else(|_| r.to_string())
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_every_column_but_the_last() {
        let text = render_table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "one".into()],
                vec!["22222".into(), "x".into()],
            ],
        );
        assert_eq!(text, "ID     NAME\n1      one\n22222  x\n");
    }

    #[test]
    fn proto_json_has_every_field_with_enum_names_and_numbers() {
        let message = umcp_proto::auth::v1::WhoAmIResponse {
            user_id: "u1".into(),
            roles: vec![umcp_proto::auth::v1::Role::Admin as i32],
            ..Default::default()
        };
        let json = proto_json(&message, "umcp.auth.v1.WhoAmIResponse");
        assert_eq!(json["userId"], "u1");
        assert_eq!(json["roles"][0], "ROLE_ADMIN");
        assert_eq!(json["username"], "");
    }
}
