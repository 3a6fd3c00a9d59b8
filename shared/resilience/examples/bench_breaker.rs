//! Circuit breaker costs: rejection latency while open, and the overhead a closed breaker adds
//! to a call, with heap allocations counted on both paths.
//!
//! `cargo run --release -p umcp-resilience --example bench_breaker [calls]`
//!
//! The inner service answers at once, so what is measured is the layer alone: a call is made
//! and its future polled to completion on the spot (no runtime scheduling in the numbers).
// why unsafe: counting allocations needs a global allocator, whose trait is unsafe; it only
// forwards to the system allocator.
#![allow(unsafe_code, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::Code;
use tower::{Layer, Service};
use umcp_resilience::breaker::{Breaker, BreakerConfig, State};
use umcp_resilience::{BoxError, CircuitBreakerLayer, GrpcClassifier};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Polls `future` once; the services here are always ready at once.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmark services complete at once"),
    }
}

/// A backend answering OK at once without allocating (the response is built once and cloned
/// cheaply: `http::Response<()>` with an empty header map does not allocate).
fn backend()
-> impl Service<(), Response = http::Response<()>, Error = BoxError, Future: Send> + Clone {
    tower::service_fn(|()| std::future::ready(Ok::<_, BoxError>(http::Response::new(()))))
}

struct Measured {
    histogram: Histogram<u64>,
    allocations: u64,
}

/// Times `calls` calls of `svc`, one at a time.
fn measure<S>(svc: &mut S, calls: u64) -> Measured
where
    S: Service<(), Response = http::Response<()>>,
{
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    // Warm up (lazy statics, caches).
    for _ in 0..10_000 {
        let _ = complete(svc.call(()));
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..calls {
        let start = Instant::now();
        let _ = complete(svc.call(()));
        let ns = start.elapsed().as_nanos() as u64;
        histogram.record(ns.max(1)).expect("in range");
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    Measured {
        histogram,
        allocations,
    }
}

fn report(name: &str, m: &Measured, calls: u64) {
    let h = &m.histogram;
    println!(
        "{name:<28} p50 {:>6} ns  p99 {:>6} ns  p99.9 {:>6} ns  max {:>8} ns  allocations/call {:.3}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        m.allocations as f64 / calls as f64
    );
}

fn main() {
    let calls: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();

    let mut bare = backend();
    let bare_m = measure(&mut bare, calls);

    let closed = Breaker::new("bench-closed", BreakerConfig::default());
    let mut closed_svc =
        CircuitBreakerLayer::new(closed.clone(), GrpcClassifier::new()).layer(backend());
    let closed_m = measure(&mut closed_svc, calls);
    assert_eq!(closed.state(), State::Closed);

    let open = Breaker::new(
        "bench-open",
        BreakerConfig {
            wait_duration_in_open_state: Duration::from_secs(3600),
            ..BreakerConfig::default()
        },
    );
    let failing = tower::service_fn(|()| {
        let reply = http::Response::builder()
            .header("grpc-status", (Code::Unavailable as i32).to_string())
            .body(())
            .expect("response");
        std::future::ready(Ok::<_, BoxError>(reply))
    });
    let mut tripper = CircuitBreakerLayer::new(open.clone(), GrpcClassifier::new()).layer(failing);
    for _ in 0..100 {
        let _ = complete(tripper.call(()));
    }
    assert_eq!(open.state(), State::Open);
    let mut open_svc =
        CircuitBreakerLayer::new(open.clone(), GrpcClassifier::new()).layer(backend());
    let open_m = measure(&mut open_svc, calls);
    assert_eq!(open.metrics().not_permitted_calls, calls + 10_000);

    println!("{calls} calls each, one at a time, inner service answering at once");
    report("bare service", &bare_m, calls);
    report("closed breaker", &closed_m, calls);
    report("open breaker (rejection)", &open_m, calls);
    let overhead = closed_m.histogram.value_at_quantile(0.5) as i64
        - bare_m.histogram.value_at_quantile(0.5) as i64;
    println!("closed-breaker overhead per call (p50 difference): {overhead} ns");
}
