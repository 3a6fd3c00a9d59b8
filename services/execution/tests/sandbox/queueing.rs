//! Admission through the real service: bursts queue instead of being refused, and are served
//! fairly across users.

use std::sync::atomic::AtomicUsize;

use super::*;

/// A service with `slots` sandboxes and the default (large) queue.
async fn queueing_service(slots: usize) -> Arc<ExecutionService> {
    service_with(ExecutionConfig {
        max_queue: ExecutionConfig::default().max_queue,
        max_per_user: ExecutionConfig::default().max_per_user,
        ..config(slots)
    })
    .await
}

/// Runs `calls` (user, code) concurrently; every call must succeed with its own output.
async fn all_complete(svc: &Arc<ExecutionService>, calls: Vec<(String, String)>) {
    let runs = calls.into_iter().map(|(user, code)| {
        let svc = Arc::clone(svc);
        tokio::spawn(async move {
            let r = svc.execute(&user, py(&code)).await;
            (code, r)
        })
    });
    let results = tokio::time::timeout(Duration::from_secs(120), futures_join(runs.collect()))
        .await
        .expect("every queued call completes (hang bound)");
    for (code, r) in results {
        let r = r.unwrap_or_else(|e| panic!("{code}: refused: {e}"));
        assert_eq!(r.status, RunStatus::Ok, "{}", text(&r.stderr));
        assert!(code.contains(text(&r.stdout).trim()), "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_from_one_user_all_complete() {
    let svc = queueing_service(8).await;
    let calls = (0..100)
        .map(|i| ("one".to_owned(), format!("print({i})")))
        .collect();
    all_complete(&svc, calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_from_twenty_five_users_all_complete() {
    let svc = queueing_service(8).await;
    let calls = (0..100)
        .map(|i| (format!("user-{}", i % 25), format!("print({i})")))
        .collect();
    all_complete(&svc, calls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_delays_another_users_single_call_by_about_one_run() {
    let svc = queueing_service(2).await;
    let finished = Arc::new(AtomicUsize::new(0));
    let spawn = |user: &'static str| {
        let (svc, finished) = (Arc::clone(&svc), Arc::clone(&finished));
        tokio::spawn(async move {
            let r = svc
                .execute(user, input(Language::Bash, "sleep 0.2"))
                .await
                .expect("queued, not refused");
            assert_eq!(r.status, RunStatus::Ok);
            finished.fetch_add(1, Ordering::SeqCst)
        })
    };
    let burst: Vec<_> = (0..20).map(|_| spawn("burst")).collect();
    // Let the burst fill both slots and the queue (ordering only; nothing is timed).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let single = spawn("single");
    let position = tokio::time::timeout(Duration::from_secs(60), single)
        .await
        .expect("no hang")
        .expect("task");
    futures_join(burst).await;
    // First come, first served would finish it 21st; round robin starts it after at most one
    // more run of the burst per slot.
    assert!(
        position <= 5,
        "the single call finished {}th of 21",
        position + 1
    );
}
