//! What a producer may put into an event. Everything here is about keeping the log useful and
//! free of secrets: a leaked token in an append-only log cannot be deleted afterwards.

use prost::Message;
use umcp_proto::audit::v1::{AuditEvent, EventType, Severity};
use umcp_proto::common::v1::Value;
use umcp_proto::common::v1::value::Kind;

use crate::error::AuditError;

/// Events per `Record` call.
pub const MAX_BATCH: usize = 1000;
/// Entries in `details`.
pub const MAX_DETAILS: usize = 64;
/// Encoded size of `details`.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;
/// Nesting of lists and maps inside `details`.
const MAX_DEPTH: usize = 4;
const AUTH_METHODS: &[&str] = &["", "password", "refresh", "api_key", "service", "anonymous"];

/// Words that make a details key look like it holds a secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "privatekey",
    "code",
];
/// Words after a secret word that make the key about the secret, not the secret itself
/// (`code_sha256`, `token_id`, `api_key_prefix`).
const QUALIFIERS: &[&str] = &[
    "sha256", "hash", "digest", "hmac", "id", "kid", "prefix", "type", "kind", "len", "length",
    "bytes", "lines", "count", "language", "expired", "revoked",
];
/// Words before `code` that make it a status code (`exit_code`, `grpc_code`).
const STATUS_WORDS: &[&str] = &[
    "grpc", "status", "exit", "error", "http", "response", "return",
];

/// Checks a batch (count and each event) and returns it with ids parsed.
///
/// # Errors
/// [`AuditError::InvalidArgument`] naming the first offending field.
pub fn batch(events: &[AuditEvent]) -> Result<Vec<u128>, AuditError> {
    if events.is_empty() || events.len() > MAX_BATCH {
        return Err(AuditError::invalid(
            "events",
            format!("1 to {MAX_BATCH} events per call, got {}", events.len()),
        ));
    }
    events
        .iter()
        .enumerate()
        .map(|(i, e)| event(&format!("events[{i}]"), e))
        .collect()
}

fn bad(field: String, message: impl Into<String>) -> AuditError {
    AuditError::invalid(field, message)
}

fn text(field: String, value: &str, max: usize, required: bool) -> Result<(), AuditError> {
    if required && value.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(bad(field, format!("at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    if looks_like_secret_value(value) {
        return Err(bad(
            field,
            "looks like a JWT or an API key; never log credentials (log a key id or a SHA-256)",
        ));
    }
    Ok(())
}

/// Checks one event; returns its id as a number.
fn event(path: &str, e: &AuditEvent) -> Result<u128, AuditError> {
    let f = |name: &str| format!("{path}.{name}");
    let id = uuid::Uuid::try_parse(&e.event_id)
        .ok()
        .filter(|u| u.get_version_num() == 7)
        .ok_or_else(|| bad(f("event_id"), "must be a UUIDv7 chosen by the producer"))?;
    if e.sequence != 0 {
        return Err(bad(
            f("sequence"),
            "must be 0: the audit service assigns it",
        ));
    }
    if !e.chain_hash.is_empty() {
        return Err(bad(
            f("chain_hash"),
            "must be empty: the audit service computes it",
        ));
    }
    match &e.timestamp {
        Some(t) if t.seconds > 0 && (0..1_000_000_000).contains(&t.nanos) => {}
        _ => {
            return Err(bad(
                f("timestamp"),
                "required: when the event happened (after 1970)",
            ));
        }
    }
    match EventType::try_from(e.event_type) {
        Ok(EventType::Unspecified) | Err(_) => {
            return Err(bad(f("event_type"), "one of the 17 EVENT_TYPE_* values"));
        }
        Ok(_) => {}
    }
    match Severity::try_from(e.severity) {
        Ok(Severity::Unspecified) | Err(_) => {
            return Err(bad(f("severity"), "one of INFO, WARNING, ERROR, CRITICAL"));
        }
        Ok(_) => {}
    }
    text(f("service"), &e.service, 64, true)?;
    if let Some(actor) = &e.actor {
        text(f("actor.user_id"), &actor.user_id, 256, false)?;
        if actor.roles.len() > 16 {
            return Err(bad(f("actor.roles"), "at most 16 roles"));
        }
        for (i, role) in actor.roles.iter().enumerate() {
            text(f(&format!("actor.roles[{i}]")), role, 64, true)?;
        }
        if !AUTH_METHODS.contains(&actor.auth_method.as_str()) {
            return Err(bad(
                f("actor.auth_method"),
                "one of password, refresh, api_key, service, anonymous (or empty)",
            ));
        }
    }
    text(f("peer_address"), &e.peer_address, 256, false)?;
    text(f("user_agent"), &e.user_agent, 512, false)?;
    text(f("resource"), &e.resource, 512, false)?;
    text(f("action"), &e.action, 128, false)?;
    text(f("correlation_id"), &e.correlation_id, 128, false)?;
    text(f("trace_id"), &e.trace_id, 128, false)?;
    text(f("span_id"), &e.span_id, 64, false)?;
    if let Some(outcome) = &e.outcome {
        if !(0..=16).contains(&outcome.grpc_code) {
            return Err(bad(f("outcome.grpc_code"), "a gRPC status code 0..=16"));
        }
        text(f("outcome.reason"), &outcome.reason, 1024, false)?;
    }
    if e.details.len() > MAX_DETAILS {
        return Err(bad(f("details"), format!("at most {MAX_DETAILS} entries")));
    }
    let encoded: usize = e
        .details
        .iter()
        .map(|(k, v)| k.len() + v.encoded_len() + 8)
        .sum();
    if encoded > MAX_DETAILS_BYTES {
        return Err(bad(
            f("details"),
            format!("at most {MAX_DETAILS_BYTES} bytes encoded"),
        ));
    }
    let mut keys: Vec<&String> = e.details.keys().collect();
    keys.sort();
    for key in keys {
        detail(&f(&format!("details[{key:?}]")), key, &e.details[key], 0)?;
    }
    Ok(id.as_u128())
}

fn detail(path: &str, key: &str, value: &Value, depth: usize) -> Result<(), AuditError> {
    if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
        return Err(bad(
            path.to_owned(),
            "keys are 1 to 128 printable characters",
        ));
    }
    if key_looks_secret(key) {
        return Err(bad(
            path.to_owned(),
            "this key looks like it holds a secret (password, token, secret, api key, \
             authorization, code); log a SHA-256 or an id instead, e.g. `code_sha256`",
        ));
    }
    value_ok(path, value, depth)
}

fn value_ok(path: &str, value: &Value, depth: usize) -> Result<(), AuditError> {
    if depth > MAX_DEPTH {
        return Err(bad(
            path.to_owned(),
            format!("at most {MAX_DEPTH} levels of nesting"),
        ));
    }
    match &value.kind {
        Some(Kind::StringValue(s)) => text(path.to_owned(), s, MAX_DETAILS_BYTES, false),
        Some(Kind::DoubleValue(d)) if !d.is_finite() => {
            Err(bad(path.to_owned(), "NaN and infinities are not allowed"))
        }
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| value_ok(&format!("{path}[{i}]"), v, depth + 1)),
        Some(Kind::MapValue(map)) => map
            .fields
            .iter()
            .try_for_each(|(k, v)| detail(&format!("{path}[{k:?}]"), k, v, depth + 1)),
        Some(Kind::NodeValue(_) | Kind::RelationshipValue(_) | Kind::PathValue(_)) => Err(bad(
            path.to_owned(),
            "graph elements are not allowed in details; log their keys",
        )),
        _ => Ok(()),
    }
}

/// Splits `apiKey`, `api_key`, `api-key.x` into lowercase words, joining `api key` and
/// `private key` so they match one entry.
fn words(key: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    let mut joined: Vec<String> = Vec::with_capacity(words.len());
    for word in words {
        if word == "key"
            && let Some(last) = joined.last_mut()
            && (last == "api" || last == "private")
        {
            last.push_str("key");
            continue;
        }
        joined.push(word);
    }
    joined
}

/// Whether a details key names a secret rather than something about one.
#[must_use]
pub fn key_looks_secret(key: &str) -> bool {
    let words = words(key);
    words.iter().enumerate().any(|(i, word)| {
        let glued = SECRET_WORDS.contains(&word.as_str())
            // Catch `accesstoken`, `apikeyvalue`, `dbpassword`.
            || (word.len() > 4 && SECRET_WORDS.iter().filter(|s| s.len() > 4).any(|s| word.contains(s)));
        if !glued {
            return false;
        }
        let qualified = words.get(i + 1).is_some_and(|n| QUALIFIERS.contains(&n.as_str()));
        let status_code = word == "code"
            && i > 0
            && STATUS_WORDS.contains(&words[i - 1].as_str());
        !qualified && !status_code
    })
}

/// Whether a string contains something shaped like a JWT or a umcp API key / refresh token.
#[must_use]
pub fn looks_like_secret_value(value: &str) -> bool {
    value
        .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '=' | ':'))
        .any(|part| is_jwt(part) || is_umcp_key(part))
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_jwt(part: &str) -> bool {
    let segments: Vec<&str> = part.split('.').collect();
    segments.len() == 3
        && segments[0].starts_with("eyJ")
        && segments[0].len() >= 10
        && segments[1].len() >= 10
        && segments.iter().all(|s| is_b64url(s))
}

fn is_umcp_key(part: &str) -> bool {
    part.match_indices("umcp_").any(|(i, _)| {
        let rest = &part[i + 5..];
        let run = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        run >= 20
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised_and_descriptions_of_them_are_not() {
        for key in [
            "password",
            "Password",
            "db_password",
            "token",
            "access_token",
            "accessToken",
            "refresh-token",
            "secret",
            "client_secret",
            "api_key",
            "apiKey",
            "API-KEY",
            "authorization",
            "Authorization",
            "code",
            "source_code",
            "raw.code",
            "private_key",
            "session_cookie",
            "credentials",
            "dbpassword",
        ] {
            assert!(key_looks_secret(key), "{key} should be refused");
        }
        for key in [
            "code_sha256",
            "token_id",
            "api_key_prefix",
            "api_key_id",
            "exit_code",
            "grpc_code",
            "status_code",
            "language",
            "kid",
            "token_type",
            "duration_ms",
            "node_count",
            "password_length",
            "user",
            "coder",
        ] {
            assert!(!key_looks_secret(key), "{key} should be allowed");
        }
    }

    #[test]
    fn jwts_and_api_keys_in_values_are_recognised() {
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVz";
        assert!(looks_like_secret_value(jwt));
        assert!(looks_like_secret_value(&format!("Bearer {jwt}")));
        assert!(looks_like_secret_value(
            "key=umcp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd123456"
        ));
        assert!(looks_like_secret_value(
            "umcp_rt_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg"
        ));
        for ok in [
            "umcp_graph",
            "api.example.com",
            "a.b.c",
            "/umcp.graph.v1.GraphService/Upsert",
            "",
        ] {
            assert!(!looks_like_secret_value(ok), "{ok}");
        }
    }
}
