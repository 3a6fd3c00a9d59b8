//! Building events where they happen. A producer holds one [`Emitter`] (its audit client and
//! its name); handlers and layers build events from the request they serve, so every event
//! carries the caller, peer, user agent, resource and correlation id the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use tonic::Code;
use umcp_authz::Principal;
use umcp_proto::audit::v1::{Actor, AuditEvent, EventType, Outcome, Severity};
use umcp_proto::common::v1::{Value, value::Kind};

use crate::{AuditClient, AuditClientError};

/// A producer's handle for emitting events; cheap to clone. Without a client (audit not
/// configured) every emit is a no-op and required events succeed, which the producer logs
/// loudly at start-up.
#[derive(Debug, Clone)]
pub struct Emitter {
    client: Option<AuditClient>,
    service: &'static str,
    fail_closed: bool,
}

impl Emitter {
    /// An emitter writing through `client` for the process named `service`.
    #[must_use]
    pub fn new(client: Option<AuditClient>, service: &'static str) -> Self {
        Self {
            client,
            service,
            fail_closed: true,
        }
    }

    /// Whether [`Self::emit_required`] refuses when the event cannot be recorded (default) or
    /// records it in the background and lets the operation run.
    #[must_use]
    pub fn fail_closed(mut self, fail_closed: bool) -> Self {
        self.fail_closed = fail_closed;
        self
    }

    /// Whether events go anywhere.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The client, for metrics.
    #[must_use]
    pub fn client(&self) -> Option<&AuditClient> {
        self.client.as_ref()
    }

    /// A new event of `event_type` for `action` on `resource`, from this service.
    #[must_use]
    pub fn event(&self, event_type: EventType, resource: &str, action: &str) -> Event {
        Event(AuditEvent {
            event_type: event_type as i32,
            severity: default_severity(event_type) as i32,
            service: self.service.to_owned(),
            resource: resource.to_owned(),
            action: action.to_owned(),
            outcome: Some(Outcome {
                success: true,
                grpc_code: 0,
                reason: String::new(),
            }),
            actor: Some(anonymous()),
            ..AuditEvent::default()
        })
    }

    /// Enqueues the event (never blocks, never fails the caller).
    pub fn emit(&self, event: Event) {
        if let Some(client) = &self.client {
            client.record(event.0);
        }
    }

    /// Records the event durably before the caller goes on; for audited-critical operations.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the event can be neither sent nor spooled: the operation must not run.
    pub async fn emit_required(&self, event: Event) -> Result<(), tonic::Status> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        if !self.fail_closed {
            client.record(event.0);
            return Ok(());
        }
        client.record_required(event.0).await.map_err(|e| match e {
            AuditClientError::Rejected(reason) => {
                tracing::error!(%reason, "audit event refused by the client");
                tonic::Status::internal("the audit event for this call could not be built")
            }
            other => {
                tracing::error!(error = %other, "required audit event not recorded; refusing the call");
                tonic::Status::unavailable(
                    "the audit log is unavailable, and this operation is only allowed when it is \
                     recorded; retry later",
                )
            }
        })
    }
}

fn anonymous() -> Actor {
    Actor {
        user_id: String::new(),
        roles: Vec::new(),
        auth_method: "anonymous".into(),
    }
}

/// Severity of an event type when nothing more specific is known.
#[must_use]
pub fn default_severity(event_type: EventType) -> Severity {
    match event_type {
        EventType::SecurityViolation | EventType::SystemError => Severity::Critical,
        EventType::AuthFailure
        | EventType::AuthzDenied
        | EventType::TokenValidation
        | EventType::RateLimitExceeded => Severity::Warning,
        _ => Severity::Info,
    }
}

/// An event being built.
#[derive(Debug, Clone)]
pub struct Event(pub AuditEvent);

impl Event {
    /// Takes correlation id, peer address (`x-forwarded-for` set by the gateway, else
    /// `peer`) and user agent from the request headers.
    #[must_use]
    pub fn headers(mut self, headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect::<String>())
        };
        if let Some(id) = text("x-correlation-id") {
            self.0.correlation_id = id;
        }
        self.0.peer_address = text("x-forwarded-for")
            .or_else(|| peer.map(|p| p.ip().to_string()))
            .unwrap_or_default();
        self.0.user_agent = text("user-agent").unwrap_or_default();
        // W3C `version-traceid-spanid-flags`; servers rewrite it to name their own span, so
        // the ids are those of the hop recording the event.
        if let Some(traceparent) = text("traceparent")
            && let Some(trace) = umcp_telemetry::trace::trace_id_of(&traceparent)
        {
            trace.clone_into(&mut self.0.trace_id);
            if let Some(span) = traceparent.split('-').nth(2) {
                span.clone_into(&mut self.0.span_id);
            }
        }
        self
    }

    /// The caller.
    #[must_use]
    pub fn actor(mut self, principal: &Principal) -> Self {
        self.0.actor = Some(Actor {
            user_id: principal.user_id.clone(),
            roles: principal
                .roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            auth_method: principal.auth_method.as_str().to_owned(),
        });
        self
    }

    /// The outcome as a gRPC code (OK is success) and a short reason, never a secret.
    #[must_use]
    pub fn outcome(mut self, code: Code, reason: &str) -> Self {
        self.0.outcome = Some(Outcome {
            success: code == Code::Ok,
            grpc_code: code as i32,
            reason: reason.chars().take(512).collect(),
        });
        if code != Code::Ok && self.0.severity == Severity::Info as i32 {
            self.0.severity = Severity::Warning as i32;
        }
        self
    }

    /// How long the action took.
    #[must_use]
    pub fn duration(mut self, elapsed: Duration) -> Self {
        self.0.duration_micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self
    }

    /// Overrides the severity.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.0.severity = severity as i32;
        self
    }

    /// A string detail (never a password, token, key or raw code: the audit service refuses
    /// keys that look like secrets).
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.details.insert(
            key.to_owned(),
            Value {
                kind: Some(Kind::StringValue(value.into())),
            },
        );
        self
    }

    /// An integer detail.
    #[must_use]
    pub fn detail_int(mut self, key: &str, value: i64) -> Self {
        self.0.details.insert(
            key.to_owned(),
            Value {
                kind: Some(Kind::IntValue(value)),
            },
        );
        self
    }
}

/// Aggregates rate-limit rejections per principal and method class and window, so a flood of
/// rejected calls becomes a bounded number of events: the first rejection of a window is
/// emitted at once, the rest are counted and emitted as one summary when the window ends.
#[derive(Debug, Clone)]
pub struct RateLimitReporter {
    emitter: Emitter,
    window: Duration,
    counts: Arc<parking_lot::Mutex<HashMap<(String, String), Pending>>>,
}

#[derive(Debug)]
struct Pending {
    suppressed: u64,
    sample: Event,
}

impl RateLimitReporter {
    /// A reporter emitting through `emitter`, summarising every `window`. Starts the flush
    /// task (needs a Tokio runtime); it stops when the last clone is dropped.
    #[must_use]
    pub fn start(emitter: Emitter, window: Duration) -> Self {
        let counts = Arc::new(parking_lot::Mutex::new(HashMap::new()));
        let weak = Arc::downgrade(&counts);
        let flusher = emitter.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(window);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(counts) = weak.upgrade() else {
                    return;
                };
                flush(&counts, &flusher, window);
            }
        });
        Self {
            emitter,
            window,
            counts,
        }
    }

    /// Reports one rejection of `principal` (user id or peer address) on `class`.
    pub fn exceeded(&self, principal: &str, class: &str, event: Event) {
        let mut counts = self.counts.lock();
        let key = (principal.to_owned(), class.to_owned());
        match counts.get_mut(&key) {
            Some(pending) => pending.suppressed += 1,
            None => {
                let first = event
                    .clone()
                    .detail("window_secs", self.window.as_secs().to_string());
                self.emitter.emit(first);
                counts.insert(
                    key,
                    Pending {
                        suppressed: 0,
                        sample: event,
                    },
                );
            }
        }
    }

    /// Emits one summary per key with rejections beyond the first, and starts new windows.
    pub fn flush(&self) {
        flush(&self.counts, &self.emitter, self.window);
    }
}

fn flush(
    counts: &parking_lot::Mutex<HashMap<(String, String), Pending>>,
    emitter: &Emitter,
    window: Duration,
) {
    let drained: Vec<Pending> = counts.lock().drain().map(|(_, p)| p).collect();
    for pending in drained {
        if pending.suppressed > 0 {
            let summary = pending
                .sample
                .detail_int(
                    "suppressed_in_window",
                    i64::try_from(pending.suppressed).unwrap_or(i64::MAX),
                )
                .detail("window_secs", window.as_secs().to_string());
            emitter.emit(summary);
        }
    }
}
