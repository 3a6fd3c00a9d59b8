//! Retry rules and the budget's bound on amplification, on paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};
use umcp_resilience::BoxError;
use umcp_resilience::breaker::Open;
use umcp_resilience::retry::{
    Attempt, BudgetConfig, Idempotency, Idempotent, Retrier, RetryConfig, RetryLayer,
};

fn retrier(budget: Option<BudgetConfig>) -> Retrier {
    Retrier::new(RetryConfig {
        budget,
        ..RetryConfig::default()
    })
}

/// Offers `n` calls evenly over `over` to a backend that always fails with UNAVAILABLE;
/// returns the attempts the backend saw.
async fn offered_load(retrier: &Retrier, n: usize, over: Duration) -> usize {
    let attempts = Arc::new(AtomicUsize::new(0));
    let gap = over / n as u32;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (retrier, attempts) = (retrier.clone(), Arc::clone(&attempts));
        tasks.push(tokio::spawn(async move {
            retrier
                .call(Idempotency::Idempotent, None, |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(Status::unavailable("down")) }
                })
                .await
        }));
        tokio::time::sleep(gap).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().code(), Code::Unavailable);
    }
    attempts.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_amplification_under_total_failure() {
    let (n, over) = (20_000, Duration::from_secs(20));
    let budgeted = retrier(Some(BudgetConfig::default()));
    let with_budget = offered_load(&budgeted, n, over).await;
    let without_budget = offered_load(&retrier(None), n, over).await;
    let ratio = with_budget as f64 / n as f64;
    // 20 % of the calls, plus the 10/s floor: 10/s over the 20 s, plus the 10 s reserve.
    let floor = 10 * 20 + 100;
    assert!(
        with_budget <= n + n / 5 + floor,
        "{with_budget} attempts for {n} calls ({ratio:.3}x)"
    );
    eprintln!("amplification under 100% failure: {ratio:.3}x with the budget, 3x without");
    assert!(ratio <= 1.215, "{ratio:.3}x");
    assert!(
        ratio >= 1.15,
        "the budget is used, not just refused: {ratio:.3}x"
    );
    assert_eq!(without_budget, 3 * n, "every call tried 3 times without it");
    let stats = budgeted.stats();
    assert_eq!(stats.calls, n as u64);
    assert_eq!(stats.retries as usize, with_budget - n);
    assert!(stats.budget_exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn only_idempotent_unavailable_calls_are_retried() {
    let r = retrier(Some(BudgetConfig::default()));
    let count = |idempotency, status: fn() -> Status| {
        let r = r.clone();
        async move {
            let n = AtomicUsize::new(0);
            let _ = r
                .call(idempotency, None, |_| {
                    n.fetch_add(1, Ordering::SeqCst);
                    async move { Err::<(), _>(status()) }
                })
                .await;
            n.load(Ordering::SeqCst)
        }
    };
    let unavailable = || Status::unavailable("down");
    assert_eq!(count(Idempotency::Idempotent, unavailable).await, 3);
    assert_eq!(count(Idempotency::NotIdempotent, unavailable).await, 1);
    for other in [
        || Status::invalid_argument("bad"),
        || Status::deadline_exceeded("slow"),
        || Status::internal("bug"),
        || Status::from_error(Box::new(Open)),
    ] {
        assert_eq!(count(Idempotency::Idempotent, other).await, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_succeeds_with_backoff_within_bounds() {
    let r = retrier(Some(BudgetConfig::default()));
    let started = Instant::now();
    let mut seen = Vec::new();
    let value = r
        .call(Idempotency::Idempotent, None, |a: Attempt| {
            seen.push((a.number, started.elapsed()));
            async move {
                if a.number < 3 {
                    Err(Status::unavailable("blip"))
                } else {
                    Ok(7)
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(value, 7);
    assert_eq!(seen.len(), 3);
    // Full jitter: retry 1 waits at most 50 ms, retry 2 at most 100 ms more.
    assert!(seen[1].1 <= Duration::from_millis(50), "{seen:?}");
    assert!(
        seen[2].1 - seen[1].1 <= Duration::from_millis(100),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stay_within_the_deadline() {
    let r = Retrier::new(RetryConfig {
        max_attempts: 50,
        ..RetryConfig::default()
    });
    let started = Instant::now();
    let deadline = started + Duration::from_millis(1500);
    let mut remaining = Vec::new();
    let status = r
        .call(Idempotency::Idempotent, Some(deadline), |a: Attempt| {
            remaining.push(a.remaining.expect("a deadline"));
            async { Err::<(), _>(Status::unavailable("down")) }
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(Instant::now() <= deadline, "never sleeps past the deadline");
    assert!(remaining.windows(2).all(|w| w[1] < w[0]), "{remaining:?}");
    assert!(remaining.len() < 50);
    assert_eq!(r.stats().deadline_reached, 1);
    let late = r
        .call(Idempotency::Idempotent, Some(Instant::now()), |_| async {
            Ok::<_, Status>(())
        })
        .await;
    assert_eq!(late.unwrap_err().code(), Code::DeadlineExceeded);
}

// ===== the http-level layer =====

type Grpc = http::Request<tonic::body::Body>;
type Seen = Arc<Log>;

/// What the backend received: (body, grpc-previous-rpc-attempts) per attempt.
#[derive(Default)]
struct Log(parking_lot::Mutex<Vec<(Vec<u8>, Option<String>)>>);

/// A transport answering each attempt with `answers[i]` (the last repeats): a grpc-status
/// code for a trailers-only reply, `None` for a normal 200 with headers.
fn transport(
    answers: Vec<Option<Code>>,
    seen: Seen,
) -> impl Service<Grpc, Response = http::Response<()>, Error = BoxError, Future: Send> + Clone + Send
{
    tower::service_fn(move |req: Grpc| {
        let (answers, seen) = (answers.clone(), Arc::clone(&seen));
        async move {
            let previous = req
                .headers()
                .get("grpc-previous-rpc-attempts")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = req.into_body().collect().await?.to_bytes().to_vec();
            let n = {
                let mut log = seen.0.lock();
                log.push((body, previous));
                log.len()
            };
            let answer = answers[(n - 1).min(answers.len() - 1)];
            let mut reply = http::Response::builder();
            if let Some(code) = answer {
                reply = reply.header("grpc-status", (code as i32).to_string());
            }
            Ok::<_, BoxError>(reply.body(()).unwrap())
        }
    })
}

fn grpc_request(body: &'static [u8], idempotent: bool) -> Grpc {
    let mut req = http::Request::builder()
        .uri("http://backend/umcp.graph.v1.GraphService/Upsert")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from_static(body),
        )))
        .unwrap();
    if idempotent {
        req.extensions_mut().insert(Idempotent);
    }
    req
}

async fn send(layer: &RetryLayer, answers: Vec<Option<Code>>, req: Grpc) -> (Seen, Option<Code>) {
    let seen: Seen = Arc::default();
    let svc = layer.layer(transport(answers, Arc::clone(&seen)));
    let reply = svc.oneshot(req).await.expect("reply");
    let code = reply
        .headers()
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()));
    (seen, code)
}

#[tokio::test(start_paused = true)]
async fn the_layer_replays_buffered_bodies_of_marked_requests() {
    let layer = RetryLayer::new(retrier(Some(BudgetConfig::default())));
    let (seen, code) = send(
        &layer,
        vec![
            Some(Code::Unavailable),
            Some(Code::Unavailable),
            Some(Code::Ok),
        ],
        grpc_request(b"message", true),
    )
    .await;
    assert_eq!(code, Some(Code::Ok));
    let log = seen.0.lock();
    assert_eq!(log.len(), 3);
    assert!(
        log.iter().all(|(body, _)| body == b"message"),
        "same bytes each time"
    );
    let previous: Vec<_> = log.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(previous, [None, Some("1".into()), Some("2".into())]);
}

#[tokio::test(start_paused = true)]
async fn the_layer_never_retries_after_headers_or_unmarked_or_oversized() {
    let layer = RetryLayer::new(retrier(Some(BudgetConfig::default())));
    // Headers arrived (status will come in trailers): committed.
    let (seen, code) = send(&layer, vec![None], grpc_request(b"m", true)).await;
    assert_eq!((seen.0.lock().len(), code), (1, None));
    // Not marked idempotent.
    let (seen, code) = send(
        &layer,
        vec![Some(Code::Unavailable)],
        grpc_request(b"m", false),
    )
    .await;
    assert_eq!((seen.0.lock().len(), code), (1, Some(Code::Unavailable)));
    // Caller mistakes are answers, not outages.
    let (seen, _) = send(
        &layer,
        vec![Some(Code::InvalidArgument)],
        grpc_request(b"m", true),
    )
    .await;
    assert_eq!(seen.0.lock().len(), 1);
    // Too large to buffer: sent once, intact.
    let small = RetryLayer::new(retrier(None)).max_replay_bytes(4);
    let (seen, _) = send(
        &small,
        vec![Some(Code::Unavailable)],
        grpc_request(b"0123456789", true),
    )
    .await;
    assert_eq!(seen.0.lock().as_slice(), [(b"0123456789".to_vec(), None)]);
    // Listed methods need no marker.
    let listed =
        RetryLayer::new(retrier(None)).idempotent_methods(["/umcp.graph.v1.GraphService/Upsert"]);
    let (seen, _) = send(
        &listed,
        vec![Some(Code::Unavailable)],
        grpc_request(b"m", false),
    )
    .await;
    assert_eq!(seen.0.lock().len(), 3);
}
