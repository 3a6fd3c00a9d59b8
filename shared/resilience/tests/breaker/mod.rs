//! The breaker's exact transition points (resilience4j defaults), on paused time.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::Code;
use tower::{Layer, Service};
use umcp_resilience::breaker::{Breaker, BreakerConfig, CircuitBreaker, Open, State};
use umcp_resilience::timeout::TimeoutLayer;
use umcp_resilience::{BoxError, CircuitBreakerLayer, GrpcClassifier};

type Reply = http::Response<()>;
type Svc =
    CircuitBreaker<tower::util::BoxCloneService<(Code, Duration), Reply, BoxError>, GrpcClassifier>;

/// A backend answering `(code, after)` with a trailers-only response, counting its calls.
fn backend(
    calls: Arc<AtomicUsize>,
) -> tower::util::BoxCloneService<(Code, Duration), Reply, BoxError> {
    tower::util::BoxCloneService::new(tower::service_fn(move |(code, after): (Code, Duration)| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(after).await;
            let reply = http::Response::builder()
                .header("grpc-status", (code as i32).to_string())
                .body(())
                .expect("response");
            Ok::<_, BoxError>(reply)
        }
    }))
}

struct Harness {
    svc: Svc,
    breaker: Breaker,
    calls: Arc<AtomicUsize>,
}

fn harness(config: BreakerConfig) -> Harness {
    let calls = Arc::new(AtomicUsize::new(0));
    let breaker = Breaker::new("test", config);
    let svc = CircuitBreakerLayer::new(breaker.clone(), GrpcClassifier::new())
        .layer(backend(Arc::clone(&calls)));
    Harness {
        svc,
        breaker,
        calls,
    }
}

impl Harness {
    fn start(
        &mut self,
        code: Code,
        after: Duration,
    ) -> impl Future<Output = Result<Reply, BoxError>> + use<> {
        self.svc.call((code, after))
    }

    async fn run(&mut self, code: Code) -> Result<Reply, BoxError> {
        self.start(code, Duration::ZERO).await
    }

    async fn run_n(&mut self, n: usize, code: Code) {
        for _ in 0..n {
            self.run(code).await.expect("permitted");
        }
    }

    fn state(&self) -> State {
        self.breaker.state()
    }
}

fn rejected(r: &Result<Reply, BoxError>) -> bool {
    matches!(r, Err(e) if e.is::<Open>())
}

#[tokio::test(start_paused = true)]
async fn no_decision_before_the_minimum_number_of_calls() {
    let mut h = harness(BreakerConfig::default());
    h.run_n(99, Code::Unavailable).await;
    let m = h.breaker.metrics();
    assert_eq!(
        (m.state, m.failure_rate, m.failed_calls),
        (State::Closed, None, 99),
        "99 failures of 99 calls decide nothing"
    );
    h.run_n(1, Code::Unavailable).await;
    assert_eq!(h.state(), State::Open, "the 100th call decides");
    assert_eq!(h.breaker.metrics().transitions, 1);
}

#[tokio::test(start_paused = true)]
async fn opens_at_exactly_half_failed() {
    let mut h = harness(BreakerConfig::default());
    h.run_n(51, Code::Ok).await;
    h.run_n(49, Code::Unavailable).await;
    let m = h.breaker.metrics();
    assert_eq!((m.state, m.failure_rate), (State::Closed, Some(49.0)));
    // The window slides: the oldest success leaves, 50 of 100 failed.
    h.run_n(1, Code::DeadlineExceeded).await;
    assert_eq!(h.state(), State::Open);

    let mut h = harness(BreakerConfig::default());
    h.run_n(50, Code::Ok).await;
    h.run_n(49, Code::Unavailable).await;
    assert_eq!(h.state(), State::Closed);
    h.run_n(1, Code::Unavailable).await;
    assert_eq!(h.state(), State::Open, "50 of 100");
}

#[tokio::test(start_paused = true)]
async fn caller_mistakes_never_count() {
    let mut h = harness(BreakerConfig::default());
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::FailedPrecondition,
    ] {
        h.run_n(100, code).await;
    }
    let m = h.breaker.metrics();
    assert_eq!((m.state, m.failure_rate), (State::Closed, Some(0.0)));
    // Cancelled calls are not recorded at all.
    h.run_n(30, Code::Cancelled).await;
    assert_eq!(h.breaker.metrics().buffered_calls, 100);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_count_even_when_they_succeed() {
    let config = BreakerConfig {
        slow_call_duration_threshold: Duration::from_secs(2),
        ..BreakerConfig::default()
    };
    let mut h = harness(config);
    h.start(Code::Ok, Duration::from_millis(1999))
        .await
        .unwrap();
    for _ in 0..98 {
        h.start(Code::Ok, Duration::from_secs(2)).await.unwrap();
    }
    let m = h.breaker.metrics();
    assert_eq!((m.state, m.slow_calls), (State::Closed, 98));
    h.start(Code::Ok, Duration::from_secs(3)).await.unwrap();
    let m = h.breaker.metrics();
    assert_eq!(
        m.slow_call_rate,
        Some(99.0),
        "one fast call keeps it closed"
    );
    assert_eq!(m.state, State::Closed);
    h.start(Code::Ok, Duration::from_secs(2)).await.unwrap();
    assert_eq!(h.state(), State::Open, "100% slow");
}

async fn open(h: &mut Harness) {
    h.run_n(100, Code::Unavailable).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_without_calling_the_backend() {
    let mut h = harness(BreakerConfig::default());
    open(&mut h).await;
    let before = h.calls.load(Ordering::SeqCst);
    for _ in 0..1000 {
        assert!(rejected(&h.run(Code::Ok).await));
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), before, "no call reached it");
    assert_eq!(h.breaker.metrics().not_permitted_calls, 1000);
    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert_eq!(h.breaker.retry_after(), Some(Duration::from_millis(1)));
    assert!(rejected(&h.run(Code::Ok).await), "still open before 60 s");
    // A tonic client above the layer sees UNAVAILABLE and can tell it was the breaker.
    let status = tonic::Status::from_error(Box::new(Open));
    assert_eq!(status.code(), Code::Unavailable);
    assert!(umcp_resilience::breaker::is_breaker_open(&status));
}

#[tokio::test(start_paused = true)]
async fn half_open_permits_exactly_n_probes_then_closes() {
    let mut h = harness(BreakerConfig::default());
    open(&mut h).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let probes: Vec<_> = (0..10)
        .map(|_| h.start(Code::Ok, Duration::from_secs(1)))
        .collect();
    assert_eq!(h.state(), State::HalfOpen);
    assert!(
        rejected(&h.run(Code::Ok).await),
        "the 11th call is rejected"
    );
    for (i, probe) in probes.into_iter().enumerate() {
        assert_eq!(h.state(), State::HalfOpen, "decided only after all 10");
        probe.await.unwrap_or_else(|e| panic!("probe {i}: {e}"));
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.breaker.retry_after(), None);
    let m = h.breaker.metrics();
    assert_eq!(
        (m.buffered_calls, m.failure_rate),
        (0, None),
        "a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_at_the_threshold_and_closes_below_it() {
    for (failed, expect) in [(5, State::Open), (4, State::Closed), (10, State::Open)] {
        let mut h = harness(BreakerConfig::default());
        open(&mut h).await;
        tokio::time::advance(Duration::from_secs(60)).await;
        h.run_n(failed, Code::Unavailable).await;
        h.run_n(10 - failed, Code::Ok).await;
        assert_eq!(h.state(), expect, "{failed} of 10 probes failed");
        if expect == State::Open {
            assert!(rejected(&h.run(Code::Ok).await), "the wait starts again");
            tokio::time::advance(Duration::from_secs(60)).await;
            h.run(Code::Ok).await.expect("probe after the second wait");
            assert_eq!(h.state(), State::HalfOpen);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_gives_its_slot_back() {
    let config = BreakerConfig {
        permitted_number_of_calls_in_half_open_state: 2,
        ..BreakerConfig::default()
    };
    let mut h = harness(config);
    open(&mut h).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    let first = h.start(Code::Ok, Duration::from_secs(1));
    let second = h.start(Code::Ok, Duration::from_secs(1));
    assert!(rejected(&h.run(Code::Ok).await));
    drop(second);
    let third = h.start(Code::Ok, Duration::ZERO);
    third.await.expect("the freed slot");
    first.await.expect("first probe");
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn calls_started_before_opening_do_not_count_as_probes() {
    let mut h = harness(BreakerConfig::default());
    h.run_n(99, Code::Unavailable).await;
    let late = h.start(Code::Unavailable, Duration::from_secs(61));
    h.run_n(1, Code::Unavailable).await;
    assert_eq!(h.state(), State::Open);
    tokio::time::advance(Duration::from_secs(60)).await;
    h.run_n(9, Code::Ok).await;
    // The closed-state call ends during half-open: it is not one of the 10 probes.
    late.await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    h.run_n(1, Code::Ok).await;
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn timeouts_under_the_breaker_count_as_failures() {
    let breaker = Breaker::new(
        "timeouts",
        BreakerConfig {
            sliding_window_size: 10,
            minimum_number_of_calls: 10,
            ..BreakerConfig::default()
        },
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CircuitBreakerLayer::new(breaker.clone(), GrpcClassifier::new())
        .layer(TimeoutLayer::new(Duration::from_millis(100)).layer(backend(Arc::clone(&calls))));
    for _ in 0..10 {
        let err = svc
            .call((Code::Ok, Duration::from_secs(5)))
            .await
            .expect_err("times out");
        let status = tonic::Status::from_error(err);
        assert_eq!(status.code(), Code::DeadlineExceeded);
    }
    assert_eq!(breaker.state(), State::Open);
}
