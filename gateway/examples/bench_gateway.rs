//! Gateway overhead benchmark: the same cheap RPC (`GraphService/GetMetrics`) sent straight to
//! the graph service, through the gateway with authentication, and through a gateway with its
//! own authentication off (`UMCP_REQUIRE_AUTH=false`; the graph service still verifies), under
//! the same concurrent load, in one run; plus `gw-1conn`, a gateway whose upstream pool keeps one
//! HTTP/2 connection to the graph service instead of the default two
//! (`UMCP_UPSTREAM__CONNECTIONS_PER_ENDPOINT=1`), to show what the pool buys; `gw-limits`, a gateway
//! with rate limits decided in a real `redis-server` (budget never reached); and `nginx`
//! (`grpc_pass`, no authentication), the peer, when installed. Every call carries a real EdDSA token; the processes
//! read the matching JWKS from a file, so no auth service sits on the request path (it never
//! does: verification is local).
//!
//! Run with `make bench` (it builds the release binaries first), or:
//! `cargo run --release -p umcp-gateway --example bench_gateway -- [seconds] [connections] [in-flight per connection]`
//!
//! Both processes are the real release binaries, started here on free ports with a throw-away
//! data directory; rounds alternate direct / gateway so machine noise hits both alike.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use hdrhistogram::Histogram;
use support::{free_port, mint, nginx, spawn};
use tonic::transport::{Channel, Endpoint};
use umcp_proto::common::v1::{Value, value::Kind};
use umcp_proto::graph::v1::graph_service_client::GraphServiceClient;
use umcp_proto::graph::v1::{GetMetricsRequest, NodeInput, QueryRequest, UpsertRequest};

struct Round {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The RPC a round sends.
#[derive(Clone, Copy)]
enum Call {
    /// `GetMetrics`: the cheapest call there is.
    Metrics,
    /// `Query`: a read over 500 nodes, the work the graph cache saves.
    Query,
}

const QUERY: &str = "MATCH (n:Item) WHERE n.n >= $min RETURN n.key, n.n ORDER BY n.n LIMIT 20";

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {}", TOKEN.get().expect("token minted"));
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii token"));
    request
}

async fn send(client: &mut GraphServiceClient<Channel>, call: Call) -> Result<(), tonic::Status> {
    match call {
        Call::Metrics => client.get_metrics(request()).await.map(drop),
        Call::Query => {
            let parameters = [(
                "min".to_owned(),
                Value {
                    kind: Some(Kind::IntValue(250)),
                },
            )]
            .into();
            let query = QueryRequest {
                cypher: QUERY.into(),
                parameters,
                row_limit: 20,
            };
            client.query(authorized(query)).await.map(drop)
        }
    }
}

/// Writes the 500 `Item` nodes [`QUERY`] reads.
async fn seed(url: &str) {
    let nodes = (0..500)
        .map(|i| NodeInput {
            key: format!("item_{i}"),
            labels: vec!["Item".into()],
            properties: [(
                "n".to_owned(),
                Value {
                    kind: Some(Kind::IntValue(i)),
                },
            )]
            .into(),
        })
        .collect();
    let mut client = GraphServiceClient::new(connect(url).await);
    client
        .upsert(authorized(UpsertRequest {
            nodes,
            relationships: Vec::new(),
        }))
        .await
        .expect("seed upsert");
}

fn request() -> tonic::Request<GetMetricsRequest> {
    let mut request = tonic::Request::new(GetMetricsRequest {});
    let value = format!("Bearer {}", TOKEN.get().expect("token minted"));
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii token"));
    request
}

async fn connect(url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .expect("url")
        .tcp_nodelay(true);
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            let mut client = GraphServiceClient::new(channel.clone());
            if client.get_metrics(request()).await.is_ok() {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered GetMetrics");
}

async fn round(
    url: &str,
    call: Call,
    seconds: u64,
    connections: usize,
    per_connection: usize,
) -> Round {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(connect(url).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for channel in &channels {
        for _ in 0..per_connection {
            let mut client = GraphServiceClient::new(channel.clone());
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut latency =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut ok, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match send(&mut client, call).await {
                        Ok(_) => {
                            ok += 1;
                            let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                            let _ = latency.record(micros.max(1));
                        }
                        Err(_) => errors += 1,
                    }
                }
                (ok, errors, latency)
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Round {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    for task in tasks {
        let (ok, errors, latency) = task.await.expect("load task");
        total.requests += ok;
        total.errors += errors;
        total.latency.add(latency).expect("same bounds");
    }
    total.elapsed = started.elapsed();
    total
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = args.first().copied().unwrap_or(5);
    let connections = usize::try_from(args.get(1).copied().unwrap_or(4)).unwrap_or(4);
    let per_connection = usize::try_from(args.get(2).copied().unwrap_or(16)).unwrap_or(16);

    let data = tempfile::tempdir().expect("tempdir");
    let jwks = data.path().join("jwks.json");
    let _ = TOKEN.set(mint(&jwks, &["admin"]));
    let jwks = jwks.display().to_string();
    let (graph_port, gateway_port, open_port, single_port) =
        (free_port(), free_port(), free_port(), free_port());
    // A graph service on `port` with its own data directory, its cache on or off.
    let graph = |port: u16, dir: &str, cache: bool| {
        spawn(
            "umcp-graph",
            &[
                ("UMCP_LISTEN", format!("127.0.0.1:{port}")),
                ("UMCP_DATA_DIR", data.path().join(dir).display().to_string()),
                ("UMCP_AUTH__JWKS_FILE", jwks.clone()),
                ("UMCP_CACHE__ENABLED", cache.to_string()),
                ("UMCP_LOG__FILTER", "error".into()),
                // No operations port: its default (127.0.0.1:9103) is one per machine, and the
                // second graph would fail to start.
                ("UMCP_HTTP__LISTEN", String::new()),
            ],
        )
    };
    let _graph = graph(graph_port, "graph", true);
    let gateway =
        |port: u16, backend: u16, require_auth: bool, connections: usize, limits: Option<&str>| {
            let mut env = vec![
                ("UMCP_LISTEN", format!("127.0.0.1:{port}")),
                (
                    "UMCP_BACKENDS__GRAPH",
                    format!("http://127.0.0.1:{backend}"),
                ),
                ("UMCP_BACKENDS__AUTH", String::new()),
                ("UMCP_BACKENDS__EXECUTION", String::new()),
                ("UMCP_BACKENDS__AUDIT", String::new()),
                ("UMCP_AUTH__JWKS_FILE", jwks.clone()),
                ("UMCP_REQUIRE_AUTH", require_auth.to_string()),
                // One principal sends the whole load: measure the path, not the limiter.
                ("UMCP_RATE_LIMITS__ENABLED", "false".into()),
                (
                    "UMCP_UPSTREAM__CONNECTIONS_PER_ENDPOINT",
                    connections.to_string(),
                ),
                ("UMCP_LOG__FILTER", "error".into()),
                // Several gateways run at once: the HTTP (MCP) port is not measured here.
                ("UMCP_HTTP__LISTEN", String::new()),
            ];
            if let Some(redis_url) = limits {
                // Limits on, decided in Redis, with a budget the load never reaches: the cost of
                // one GCRA round trip per call, not of refusals.
                env.retain(|(k, _)| *k != "UMCP_RATE_LIMITS__ENABLED");
                env.extend([
                    ("UMCP_REDIS__URL", redis_url.to_owned()),
                    ("UMCP_RATE_LIMITS__QUERY__LIMIT", "1000000".into()),
                    ("UMCP_RATE_LIMITS__QUERY__PERIOD_SECS", "1".into()),
                ]);
            }
            spawn("umcp-gateway", &env)
        };
    let _gateway = gateway(gateway_port, graph_port, true, 2, None);
    let _open_gateway = gateway(open_port, graph_port, false, 2, None);
    let _single_gateway = gateway(single_port, graph_port, true, 1, None);
    // A real redis-server for the limits-on path (skipped when it is not installed).
    let redis = umcp_testkit::redis::available().then(umcp_testkit::redis::RedisServer::start);
    let limits_port = free_port();
    let _limits_gateway = redis
        .as_ref()
        .map(|r| gateway(limits_port, graph_port, true, 2, Some(&r.url())));
    let mut paths = vec![
        ("direct", format!("http://127.0.0.1:{graph_port}")),
        ("gateway", format!("http://127.0.0.1:{gateway_port}")),
        ("gw-noauth", format!("http://127.0.0.1:{open_port}")),
        ("gw-1conn", format!("http://127.0.0.1:{single_port}")),
    ];
    if redis.is_some() {
        paths.push(("gw-limits", format!("http://127.0.0.1:{limits_port}")));
    } else {
        println!("redis-server not installed: the limits-on path is skipped");
    }
    // The peer: nginx proxying gRPC with no authentication at all (compare with gw-noauth).
    let nginx_port = free_port();
    let nginx_proc = nginx(data.path(), nginx_port, graph_port);
    if nginx_proc.is_some() {
        std::thread::sleep(Duration::from_millis(300));
        paths.push(("nginx", format!("http://127.0.0.1:{nginx_port}")));
    } else {
        println!("nginx not installed: the peer column is skipped");
    }
    // Warm every path (connections, allocator, caches) before measuring.
    for (_, url) in &paths {
        let _ = round(url, Call::Metrics, 1, connections, per_connection).await;
    }

    println!(
        "GetMetrics with a bearer token, {connections} connections x {per_connection} in flight, {seconds} s per round, client on 1 thread"
    );
    println!(
        "{:<10} {:>5} {:>10} {:>9} {:>9} {:>7}",
        "path", "round", "req/s", "p50 ms", "p99 ms", "errors"
    );
    let mut results: Vec<(&str, Round)> = Vec::new();
    for r in 1..=2 {
        for (name, url) in &paths {
            let result = round(url, Call::Metrics, seconds, connections, per_connection).await;
            println!(
                "{:<10} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>7}",
                name,
                r,
                result.rps(),
                result.p(0.5),
                result.p(0.99),
                result.errors
            );
            results.push((name, result));
        }
    }
    let mean = |path: &str, f: &dyn Fn(&Round) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, r)| f(r))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    for (name, _) in &paths {
        println!(
            "summary: {name} {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
            mean(name, &Round::rps),
            mean(name, &|r| r.p(0.5)),
            mean(name, &|r| r.p(0.99))
        );
    }
    // Added latency is read at one call in flight: under saturation every path's latency is
    // just its queueing delay (in-flight calls / throughput), which says nothing about the hop.
    println!("latency, 1 connection x 1 in flight, {seconds} s per path");
    let mut idle = Vec::new();
    for (name, url) in &paths {
        let result = round(url, Call::Metrics, seconds, 1, 1).await;
        println!(
            "{name:<10} p50 {:.3} ms  p99 {:.3} ms",
            result.p(0.5),
            result.p(0.99)
        );
        idle.push(result);
    }
    let (d_rps, g_rps, o_rps) = (
        mean("direct", &Round::rps),
        mean("gateway", &Round::rps),
        mean("gw-noauth", &Round::rps),
    );
    println!(
        "summary: gateway keeps {:.1}% of direct throughput (target >= 60%), adds {:.3} ms p50 / {:.3} ms p99 at one call in flight (target < 0.5 ms p50)",
        100.0 * g_rps / d_rps,
        idle[1].p(0.5) - idle[0].p(0.5),
        idle[1].p(0.99) - idle[0].p(0.99)
    );
    println!(
        "summary: authentication costs {:.1}% of gateway throughput (target <= 10%)",
        100.0 * (o_rps - g_rps) / o_rps
    );
    println!(
        "summary: the 2-connection upstream pool gives {:.1}% of the 1-connection gateway's throughput",
        100.0 * g_rps / mean("gw-1conn", &Round::rps)
    );
    // Cached vs uncached `Query` through the gateway: the same graph binary with its cache off
    // (`UMCP_CACHE__ENABLED=false`) behind a gateway of its own, both seeded alike.
    let uncached_port = free_port();
    let _uncached_graph = graph(uncached_port, "graph-uncached", false);
    let uncached_gateway_port = free_port();
    let _uncached_gateway = gateway(uncached_gateway_port, uncached_port, true, 2, None);
    let query_paths = [
        ("cached", format!("http://127.0.0.1:{gateway_port}")),
        (
            "uncached",
            format!("http://127.0.0.1:{uncached_gateway_port}"),
        ),
    ];
    for (_, url) in &query_paths {
        seed(url).await;
        let _ = round(url, Call::Query, 1, connections, per_connection).await;
    }
    println!("Query ({QUERY}) through the gateway, graph cache on vs off, {seconds} s per round");
    let mut query_rps = [0.0f64; 2];
    for r in 1..=2 {
        for (i, (name, url)) in query_paths.iter().enumerate() {
            let result = round(url, Call::Query, seconds, connections, per_connection).await;
            println!(
                "{:<10} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>7}",
                name,
                r,
                result.rps(),
                result.p(0.5),
                result.p(0.99),
                result.errors
            );
            query_rps[i] += result.rps() / 2.0;
        }
    }
    println!(
        "summary: cached Query {:.0} req/s vs uncached {:.0} req/s through the gateway: {:.1}x (target >= 5x)",
        query_rps[0],
        query_rps[1],
        query_rps[0] / query_rps[1]
    );
    if paths.iter().any(|(name, _)| *name == "gw-limits") {
        println!(
            "summary: rate limits on (GCRA in Redis per call) keep {:.1}% of the gateway's throughput with limits off (target >= 90%)",
            100.0 * mean("gw-limits", &Round::rps) / g_rps
        );
    }
    if let Some(position) = paths.iter().position(|(name, _)| *name == "nginx") {
        let n_rps = mean("nginx", &Round::rps);
        println!(
            "summary: nginx (grpc_pass, no auth) {n_rps:.0} req/s; the gateway with auth gives {:.1}% of it, without auth {:.1}%; nginx adds {:.3} ms p50 at one call in flight, the gateway {:.3} ms",
            100.0 * g_rps / n_rps,
            100.0 * o_rps / n_rps,
            idle[position].p(0.5) - idle[0].p(0.5),
            idle[1].p(0.5) - idle[0].p(0.5)
        );
    }
}
