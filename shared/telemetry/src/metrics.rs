//! The process's metrics registry (Prometheus text exposition through `prometheus-client`).
//!
//! One explicit [`Registry`] per process, owned here: the RPC families ([`rpc`]) are registered
//! on first use, and components whose counters already live in their own structs (cache,
//! limiter, breakers, sandbox, audit spool) register a [`Stats`] source — a closure read at
//! scrape time — instead of mirroring every counter into a second set of atomics.
//!
//! // why a closure and not `prometheus-client` types in every crate: the crates that count
//! things stay free of the exposition format, and a scrape reads their state exactly as it is.

use std::sync::LazyLock;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// The Prometheus text exposition of everything registered (what `/metrics` serves).
#[must_use]
pub fn encode() -> String {
    // Registered before the first scrape, so a process that served nothing still shows them.
    LazyLock::force(&RPC);
    let mut out = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &REGISTRY.lock()) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    out
}

/// Labels of every RPC metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The component serving it (`gateway`, `graph`, …).
    pub component: String,
    /// The gRPC service (`umcp.graph.v1.GraphService`).
    pub service: String,
    /// The method (`Query`).
    pub method: String,
    /// The gRPC status code name (`OK`, `INVALID_ARGUMENT`, …).
    pub code: String,
}

/// Labels of the in-flight gauge (no code yet).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The component serving it.
    pub component: String,
    /// The gRPC service.
    pub service: String,
    /// The method.
    pub method: String,
}

/// The RPC families every server records into.
#[derive(Debug)]
pub struct RpcMetrics {
    /// `umcp_rpc_requests_total`: calls finished, by code.
    pub requests: Family<RpcLabels, Counter>,
    /// `umcp_rpc_duration_seconds`: from request headers to the end of the response.
    pub duration: Family<RpcLabels, Histogram>,
    /// `umcp_rpc_in_flight`: calls started and not finished.
    pub in_flight: Family<MethodLabels, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 100 µs … ~105 s: a cached read and a long sandbox run both land inside.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

static RPC: LazyLock<RpcMetrics> = LazyLock::new(|| {
    let metrics = RpcMetrics {
        requests: Family::default(),
        duration: Family::new_with_constructor(duration_histogram),
        in_flight: Family::default(),
    };
    let mut registry = REGISTRY.lock();
    registry.register(
        "umcp_rpc_requests",
        "RPCs finished, by component, service, method and gRPC code",
        metrics.requests.clone(),
    );
    registry.register(
        "umcp_rpc_duration_seconds",
        "RPC latency from request headers to the end of the response",
        metrics.duration.clone(),
    );
    registry.register(
        "umcp_rpc_in_flight",
        "RPCs started and not yet finished",
        metrics.in_flight.clone(),
    );
    metrics
});

/// The RPC families.
#[must_use]
pub fn rpc() -> &'static RpcMetrics {
    &RPC
}

/// What a [`Stats`] sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (exposed with the `_total` suffix).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One value read at scrape time.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name without the `_total` suffix (e.g. `umcp_cache_hits`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label pairs.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A counter sample.
    #[must_use]
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Self {
        Self {
            name,
            help,
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// A gauge sample.
    #[must_use]
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Self {
        Self {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.push((key.to_owned(), value.into()));
        self
    }
}

/// A source of samples read at every scrape.
pub struct Stats(Box<dyn Fn() -> Vec<Sample> + Send + Sync>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

/// Registers `read`, called at every scrape. Samples of one name must share kind and help;
/// several sources may add samples of the same name only with different labels.
pub fn register_stats(read: impl Fn() -> Vec<Sample> + Send + Sync + 'static) {
    REGISTRY
        .lock()
        .register_collector(Box::new(Stats(Box::new(read))));
}

impl Collector for Stats {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut samples = (self.0)();
        samples.sort_by_key(|s| s.name);
        let mut rest = samples.as_slice();
        while let Some(first) = rest.first() {
            let same = rest.iter().take_while(|s| s.name == first.name).count();
            let (group, tail) = rest.split_at(same);
            rest = tail;
            let kind = match first.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(first.name, first.help, None, kind)?;
            for sample in group {
                let metric = family.encode_family(&sample.labels)?;
                match sample.kind {
                    Kind::Counter => ConstCounter::new(sample.value).encode(metric)?,
                    Kind::Gauge => ConstGauge::new(sample.value).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_families_and_stats_are_exposed_with_their_types() {
        let labels = RpcLabels {
            component: "test".into(),
            service: "umcp.test.v1.T".into(),
            method: "M".into(),
            code: "OK".into(),
        };
        rpc().requests.get_or_create(&labels).inc();
        rpc().duration.get_or_create(&labels).observe(0.002);
        let method = MethodLabels {
            component: "test".into(),
            service: "umcp.test.v1.T".into(),
            method: "M".into(),
        };
        rpc().in_flight.get_or_create(&method).inc();
        register_stats(|| {
            vec![
                Sample::counter("umcp_test_things", "things seen", 7).label("tier", "l1"),
                Sample::counter("umcp_test_things", "things seen", 2).label("tier", "l2"),
                Sample::gauge("umcp_test_depth", "queue depth", 3.0),
            ]
        });
        let text = encode();
        for expected in [
            "# TYPE umcp_rpc_requests counter",
            "umcp_rpc_requests_total{component=\"test\",service=\"umcp.test.v1.T\",method=\"M\",code=\"OK\"} 1",
            "# TYPE umcp_rpc_duration_seconds histogram",
            "# TYPE umcp_rpc_in_flight gauge",
            "# TYPE umcp_test_things counter",
            "umcp_test_things_total{tier=\"l1\"} 7",
            "umcp_test_things_total{tier=\"l2\"} 2",
            "# TYPE umcp_test_depth gauge",
            "umcp_test_depth 3",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
