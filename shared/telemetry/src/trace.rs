//! Distributed traces: `tracing` spans exported over OTLP/gRPC, W3C `traceparent` in gRPC
//! metadata.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! is set, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK and the
//! exporter read the other standard variables themselves: `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`), `OTEL_BSP_*` (batching),
//! `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (the service name defaults to `umcp-<component>`, the version to
//! this build's).
//!
//! Servers adopt the caller's context with [`server_span`] (which also writes the server
//! span's own context back into the request's `traceparent`, so audit events recorded while
//! handling it name the trace); clients start a child span and inject it with [`ClientLayer`].
//! Without export nothing is created or injected, and `trace_id` on log lines comes from an
//! incoming `traceparent` alone.

mod client;

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use client::{ClientLayer, ClientService, TracedBody};

/// Whether spans are exported (set once by [`crate::init`]); everything here is a cheap no-op
/// otherwise.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// Whether this process exports spans.
#[must_use]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether the standard variables ask for export.
pub(crate) fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The tracer provider exporting this process's spans over OTLP/gRPC. Must run on a tokio
/// runtime: the exporter's channel (connected lazily) spawns its worker there.
pub(crate) fn provider(
    component: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    // OTEL_SERVICE_NAME (read by the default detectors) wins over our default.
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(format!("umcp-{component}"));
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Installs `provider` as the source of the `tracing` layer's tracer and the W3C propagator.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    EXPORTING.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("umcp"))
        // Our spans carry their own fields; thread ids and source locations are noise.
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
}

/// Makes `span` (a server span just created, with an empty `trace_id` field) the child of the
/// caller's `traceparent`, records the trace id on it and, when exporting, rewrites the
/// request's `traceparent` to name `span` (so what the handler records, audit events
/// included, points at this hop).
pub fn server_span(span: &Span, headers: &mut HeaderMap) {
    if exporting() {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // Fails only when the span is already built or not recorded by the layer (filtered
        // out): then it simply has no remote parent.
        let _ = span.set_parent(parent);
        let cx = span.context();
        let trace_id = cx.span().span_context().trace_id();
        if cx.span().span_context().is_valid() {
            span.record("trace_id", tracing::field::display(trace_id));
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        }
    } else if let Some(trace_id) = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(trace_id_of)
    {
        span.record("trace_id", trace_id);
    }
}

/// Writes the context of `span` into `headers` as `traceparent` (when exporting).
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if exporting() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    }
}

/// Makes `span` the child of a remote span named by its ids (32 and 16 hex digits), e.g. one
/// recorded in an audit event; ignores ids that are not valid.
pub fn follow(span: &Span, trace_id: &str, span_id: &str) {
    if !exporting() {
        return;
    }
    let (Ok(trace), Ok(parent)) = (
        opentelemetry::trace::TraceId::from_hex(trace_id),
        opentelemetry::trace::SpanId::from_hex(span_id),
    ) else {
        return;
    };
    let remote = opentelemetry::trace::SpanContext::new(
        trace,
        parent,
        opentelemetry::trace::TraceFlags::SAMPLED,
        true,
        opentelemetry::trace::TraceState::default(),
    );
    if remote.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// The (trace id, span id) of the current span, in hex, when exporting and valid.
#[must_use]
pub fn current_ids() -> Option<(String, String)> {
    if !exporting() {
        return None;
    }
    let cx = Span::current().context();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| {
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), when valid.
#[must_use]
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && hex(flags, 2);
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids_are_validated() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(ok), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }
}
