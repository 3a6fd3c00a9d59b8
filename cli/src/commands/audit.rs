//! `umcp audit query|tail|verify` (admin).

use std::time::{Duration, SystemTime};

use umcp_proto::audit::v1 as pb;
use umcp_proto::common::v1::{EventType, PageRequest};

use crate::args::{
    AuditCommand, AuditFilter, AuditQueryArgs, AuditTailArgs, AuditVerifyArgs, GlobalOpts,
};
use crate::error::CliError;
use crate::output::{Output, proto_json, timestamp, to_timestamp, with_spinner};
use crate::session::Session;

/// The largest page the audit service serves.
const MAX_PAGE: u32 = 1000;

/// Runs one `umcp audit` subcommand.
///
/// # Errors
/// Bad filters, no credentials, a failed call, and [`CliError::Findings`] for a broken chain.
pub async fn audit(opts: &GlobalOpts, command: &AuditCommand, out: Output) -> Result<(), CliError> {
    match command {
        AuditCommand::Query(args) => query(opts, args, out).await,
        AuditCommand::Tail(args) => tail(opts, args, out).await,
        AuditCommand::Verify(args) => verify(opts, args, out).await,
    }
}

/// `auth_failure` (or `EVENT_TYPE_AUTH_FAILURE`) → the enum value.
///
/// # Errors
/// An unknown name; the message lists the known ones.
pub fn event_type(name: &str) -> Result<i32, CliError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("EVENT_TYPE_") {
        upper
    } else {
        format!("EVENT_TYPE_{upper}")
    };
    EventType::from_str_name(&full)
        .filter(|t| *t != EventType::Unspecified)
        .map(|t| t as i32)
        .ok_or_else(|| {
            let known: Vec<String> = (1..=32)
                .filter_map(|n| EventType::try_from(n).ok())
                .map(|t| {
                    t.as_str_name()
                        .trim_start_matches("EVENT_TYPE_")
                        .to_lowercase()
                })
                .collect();
            CliError::Usage(format!(
                "unknown event type `{name}`; known: {}",
                known.join(", ")
            ))
        })
}

fn short_type(value: i32) -> String {
    EventType::try_from(value).map_or(value.to_string(), |t| {
        t.as_str_name()
            .trim_start_matches("EVENT_TYPE_")
            .to_lowercase()
    })
}

/// `2026-12-04T10:00:00Z`, or an age such as `15m` (that long ago).
///
/// # Errors
/// Neither form.
pub fn time_arg(text: &str, flag: &str) -> Result<prost_types::Timestamp, CliError> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(to_timestamp(time));
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        CliError::Usage(format!(
            "{flag} `{text}`: expected RFC 3339 (2026-12-04T10:00:00Z) or an age such as 15m"
        ))
    })?;
    Ok(to_timestamp(
        SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    ))
}

fn outcome(filter: &AuditFilter) -> i32 {
    if filter.failures {
        pb::OutcomeFilter::Failure as i32
    } else if filter.successes {
        pb::OutcomeFilter::Success as i32
    } else {
        pb::OutcomeFilter::Unspecified as i32
    }
}

fn types(filter: &AuditFilter) -> Result<Vec<i32>, CliError> {
    filter.types.iter().map(|t| event_type(t)).collect()
}

fn row(event: &pb::AuditEvent) -> Vec<String> {
    let actor = event.actor.as_ref().map_or("-".to_owned(), |a| {
        if a.user_id.is_empty() {
            a.auth_method.clone()
        } else {
            a.user_id.clone()
        }
    });
    let outcome = event.outcome.as_ref().map_or("-".to_owned(), |o| {
        if o.success {
            "ok".to_owned()
        } else {
            format!(
                "failed ({})",
                crate::error::code_name(tonic::Code::from_i32(o.grpc_code))
            )
        }
    });
    vec![
        event.sequence.to_string(),
        timestamp(event.timestamp.as_ref()),
        short_type(event.event_type),
        actor,
        outcome,
        event.resource.clone(),
        event.correlation_id.clone(),
    ]
}

const HEADERS: [&str; 7] = [
    "SEQ",
    "TIME",
    "TYPE",
    "ACTOR",
    "OUTCOME",
    "RESOURCE",
    "CORRELATION",
];

async fn query(opts: &GlobalOpts, args: &AuditQueryArgs, out: Output) -> Result<(), CliError> {
    let base = pb::QueryRequest {
        event_types: types(&args.filter)?,
        user_id: args.filter.user.clone().unwrap_or_default(),
        correlation_id: args.filter.correlation.clone().unwrap_or_default(),
        since: args
            .since
            .as_deref()
            .map(|t| time_arg(t, "--since"))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| time_arg(t, "--until"))
            .transpose()?,
        resource: args.filter.resource.clone().unwrap_or_default(),
        outcome: outcome(&args.filter),
        ..pb::QueryRequest::default()
    };
    let session = Session::load(opts)?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let events = with_spinner("querying the audit log", async {
        let mut events = Vec::new();
        let mut token = String::new();
        loop {
            let want = u32::try_from(limit - events.len())
                .unwrap_or(MAX_PAGE)
                .min(MAX_PAGE);
            let request = pb::QueryRequest {
                page: Some(PageRequest {
                    page_size: want,
                    page_token: token.clone(),
                }),
                ..base.clone()
            };
            let page = session
                .connection()
                .audit()
                .query(session.request(request).await?)
                .await
                .map_err(CliError::rpc("AuditService/Query", session.endpoint()))?
                .into_inner();
            events.extend(page.events);
            token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() || events.len() >= limit {
                break Ok::<_, CliError>(events);
            }
        }
    })
    .await?;
    if out.is_json() {
        let list: Vec<_> = events
            .iter()
            .map(|e| proto_json(e, "umcp.audit.v1.AuditEvent"))
            .collect();
        return out.print_json(&serde_json::json!({ "events": list }));
    }
    let rows: Vec<Vec<String>> = events.iter().map(row).collect();
    out.table(&HEADERS, &rows)
}

async fn tail(opts: &GlobalOpts, args: &AuditTailArgs, out: Output) -> Result<(), CliError> {
    let request = pb::TailRequest {
        after_sequence: args.after,
        event_types: types(&args.filter)?,
        user_id: args.filter.user.clone().unwrap_or_default(),
        correlation_id: args.filter.correlation.clone().unwrap_or_default(),
        resource: args.filter.resource.clone().unwrap_or_default(),
        outcome: outcome(&args.filter),
    };
    let session = Session::load(opts)?;
    // A tail runs until stopped: no deadline beyond a very long one.
    let forever = Duration::from_secs(365 * 24 * 3600);
    let call = CliError::rpc("AuditService/Tail", session.endpoint());
    let mut stream = session
        .connection()
        .audit()
        .tail(session.request_within(request, forever).await?)
        .await
        .map_err(CliError::rpc("AuditService/Tail", session.endpoint()))?
        .into_inner();
    let mut seen = 0u64;
    if !out.is_json() {
        out.table(&HEADERS, &[])?;
    }
    while args.count.is_none_or(|count| seen < count) {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = tokio::signal::ctrl_c() => break,
        };
        match message {
            Ok(Some(pb::TailResponse { event: Some(event) })) => {
                seen += 1;
                if out.is_json() {
                    out.print_json_line(&proto_json(&event, "umcp.audit.v1.AuditEvent"))?;
                } else {
                    out.line(row(&event).join("  "))?;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(status) => return Err(call(status)),
        }
    }
    Ok(())
}

async fn verify(opts: &GlobalOpts, args: &AuditVerifyArgs, out: Output) -> Result<(), CliError> {
    let session = Session::load(opts)?;
    let answer = with_spinner("verifying the hash chain", async {
        session
            .connection()
            .audit()
            .verify(
                session
                    .request(pb::VerifyRequest {
                        from_sequence: args.from,
                        to_sequence: args.to,
                    })
                    .await?,
            )
            .await
            .map_err(CliError::rpc("AuditService/Verify", session.endpoint()))
    })
    .await?
    .into_inner();
    if out.is_json() {
        out.print_json(&proto_json(&answer, "umcp.audit.v1.VerifyResponse"))?;
    } else if answer.ok {
        out.line(format!(
            "ok: {} event(s) checked; head {} {}",
            answer.events_checked, answer.head_sequence, answer.head_hash
        ))?;
    } else {
        out.line(format!(
            "BROKEN at sequence {}: {} ({} event(s) checked)",
            answer.first_bad_sequence, answer.problem, answer.events_checked
        ))?;
    }
    if !answer.ok {
        return Err(CliError::Findings(format!(
            "the audit chain is broken at sequence {}: {}",
            answer.first_bad_sequence, answer.problem
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_by_short_or_full_name() {
        assert_eq!(
            event_type("auth_failure").unwrap(),
            EventType::AuthFailure as i32
        );
        assert_eq!(
            event_type("EVENT_TYPE_AUTHZ_DENIED").unwrap(),
            EventType::AuthzDenied as i32
        );
        let error = event_type("nope").unwrap_err().to_string();
        assert!(error.contains("code_execution"), "{error}");
    }

    #[test]
    fn times_are_rfc3339_or_ages() {
        assert_eq!(
            time_arg("2026-12-04T10:00:00Z", "--since").unwrap().seconds,
            1_796_378_400
        );
        assert!(time_arg("15m", "--since").is_ok());
        assert!(time_arg("yesterday", "--since").is_err());
    }
}
