//! Admission: fairness across users, the queue bound, deadlines and cancellation.

use std::sync::Arc;

use super::*;
use tonic::Code;

fn limits(max_concurrent: usize, max_queue: usize, max_per_user: usize) -> AdmissionLimits {
    AdmissionLimits {
        max_concurrent,
        max_queue,
        queue_timeout: Duration::from_secs(30),
        max_per_user,
    }
}

/// Queues `count` requests of `user` in order, each recording its user in `order` when it is
/// granted and holding its slot until the next yield.
fn queue_calls(
    a: &Arc<Admission>,
    user: &'static str,
    count: usize,
    order: &Arc<Mutex<Vec<&'static str>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let (a, order) = (Arc::clone(a), Arc::clone(order));
            tokio::spawn(async move {
                let _ticket = a.admit(user).await.expect("admitted");
                order.lock().push(user);
                tokio::task::yield_now().await;
            })
        })
        .collect()
}

async fn until_queued(a: &Admission, n: usize) {
    let bound = Instant::now() + Duration::from_secs(10);
    while a.queued() < n {
        assert!(Instant::now() < bound, "requests never queued");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn one_users_burst_does_not_starve_another_user() {
    let a = Arc::new(Admission::new(limits(1, 1024, 1)));
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = a.admit("burst").await.expect("free slot");
    let mut tasks = queue_calls(&a, "burst", 50, &order);
    until_queued(&a, 50).await;
    tasks.extend(queue_calls(&a, "single", 1, &order));
    until_queued(&a, 51).await;
    drop(held);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no hang")
            .expect("task");
    }
    let order = order.lock();
    assert_eq!(order.len(), 51);
    let position = order.iter().position(|u| *u == "single").expect("served");
    assert!(
        position <= 1,
        "the single call waits for at most one run of the burst, was served {position}th"
    );
}

#[tokio::test]
async fn users_are_served_round_robin() {
    let a = Arc::new(Admission::new(limits(1, 1024, 1)));
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = a.admit("x").await.expect("free slot");
    let mut tasks = Vec::new();
    for user in ["a", "b", "c"] {
        tasks.extend(queue_calls(&a, user, 3, &order));
        until_queued(&a, tasks.len()).await;
    }
    drop(held);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        order.lock().join(""),
        "abcabcabc",
        "one request per user in turn"
    );
}

#[tokio::test]
async fn per_user_cap_lets_other_users_use_free_slots() {
    let a = Arc::new(Admission::new(limits(2, 16, 1)));
    let first = a.admit("a").await.expect("a runs");
    let a2 = Arc::clone(&a);
    let waiting = tokio::spawn(async move { a2.admit("a").await.map(|_| ()) });
    until_queued(&a, 1).await;
    let other = tokio::time::timeout(Duration::from_secs(5), a.admit("b"))
        .await
        .expect("b is not queued behind a's capped request")
        .expect("b runs");
    drop(other);
    drop(first);
    waiting.await.expect("task").expect("a's second call runs");
}

#[tokio::test]
async fn a_full_queue_is_refused_with_retry_after() {
    let a = Arc::new(Admission::new(limits(1, 1, 8)));
    let _held = a.admit("x").await.expect("free slot");
    let a2 = Arc::clone(&a);
    let _queued = tokio::spawn(async move { a2.admit("y").await.map(|_| ()) });
    until_queued(&a, 1).await;
    let err = a.admit("z").await.expect_err("queue full");
    assert!(err.to_string().contains("queue is full"), "{err}");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());
}

#[tokio::test]
async fn a_deadline_shorter_than_the_expected_wait_is_refused_at_once() {
    let a = Arc::new(Admission::new(limits(1, 1024, 8)));
    let _held = a.admit("x").await.expect("free slot");
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let a2 = Arc::clone(&a);
        waiters.push(tokio::spawn(async move { a2.admit("y").await.map(|_| ()) }));
    }
    until_queued(&a, 4).await;
    // Four ahead at 50 ms each on one slot: 250 ms expected, the call allows 100 ms.
    let deadline = Some(Instant::now() + Duration::from_millis(100));
    let started = Instant::now();
    let err = with_deadline(deadline, a.admit("z"))
        .await
        .expect_err("cannot fit");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );
    let text = err.to_string();
    assert!(
        text.contains("expected wait") && text.contains("deadline"),
        "{text}"
    );
    assert_eq!(tonic::Status::from(err).code(), Code::ResourceExhausted);
    // A generous deadline queues instead.
    let deadline = Some(Instant::now() + Duration::from_secs(30));
    let a2 = Arc::clone(&a);
    let _patient = tokio::spawn(with_deadline(deadline, async move {
        a2.admit("z").await.map(|_| ())
    }));
    until_queued(&a, 5).await;
    for w in waiters {
        w.abort();
    }
}

#[tokio::test]
async fn a_caller_that_goes_away_leaves_the_queue_and_the_slot_passes_on() {
    let a = Arc::new(Admission::new(limits(1, 1024, 8)));
    let held = a.admit("x").await.expect("free slot");
    let a2 = Arc::clone(&a);
    let gone = tokio::spawn(async move { a2.admit("gone").await.map(|_| ()) });
    until_queued(&a, 1).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(a.queued(), 0, "the cancelled request left the queue");
    let a3 = Arc::clone(&a);
    let next = tokio::spawn(async move { a3.admit("next").await.map(|_| ()) });
    until_queued(&a, 1).await;
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("no hang")
        .expect("task")
        .expect("next runs");
    // Every slot is free again.
    let _again = a.admit("x").await.expect("slot free");
}

#[tokio::test]
async fn a_call_without_deadline_times_out_after_the_queue_timeout() {
    let a = Admission::new(AdmissionLimits {
        queue_timeout: Duration::from_millis(100),
        ..limits(1, 16, 8)
    });
    let _held = a.admit("x").await.expect("free slot");
    let err = a.admit("y").await.expect_err("times out");
    assert!(err.to_string().contains("within"), "{err}");
    assert_eq!(a.queued(), 0);
}
