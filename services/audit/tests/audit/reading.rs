//! Query and Tail: filters, newest-first pages, resumable and bounded tails.

use super::*;

#[tokio::test]
async fn query_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let mut events = Vec::new();
    for i in 0..30i64 {
        let user = ["alice", "bob", "carol"][(i % 3) as usize];
        let kind = if i % 2 == 0 {
            EventType::GraphQuery
        } else {
            EventType::AuthFailure
        };
        let mut e = event(kind, user, i % 5 != 0, 1_000 + i);
        if i % 4 == 0 {
            e.resource = "/umcp.graph.v1.GraphService/Query".into();
        }
        events.push(e);
    }
    // No outcome at all: neither a success nor a failure.
    events[29].outcome = None;
    record(&mut client, events).await.unwrap();
    let mut admin = server.admin();
    let reader = admin.clone();
    let query = |q: QueryRequest| {
        let mut admin = reader.clone();
        async move {
            let r = admin.query(q).await.unwrap().into_inner();
            r.events
                .iter()
                .map(|e| e.timestamp.unwrap().seconds - 1_000)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(
        query(QueryRequest {
            user_id: "bob".into(),
            ..Default::default()
        })
        .await,
        vec![28, 25, 22, 19, 16, 13, 10, 7, 4, 1]
    );
    let failures = vec![25, 20, 15, 10, 5, 0];
    assert_eq!(
        query(QueryRequest {
            outcome: OutcomeFilter::Failure as i32,
            ..Default::default()
        })
        .await,
        failures
    );
    // The deprecated alias selects the same, alone or with the field it stands for.
    for outcome in [OutcomeFilter::Unspecified, OutcomeFilter::Failure] {
        let q = QueryRequest {
            failures_only: true,
            outcome: outcome as i32,
            ..Default::default()
        };
        assert_eq!(query(q).await, failures);
    }
    let successes = query(QueryRequest {
        outcome: OutcomeFilter::Success as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(successes.len(), 30 - 6 - 1);
    assert!(!successes.contains(&29) && !successes.contains(&25));
    assert_eq!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService/Query".into(),
            ..Default::default()
        })
        .await,
        vec![28, 24, 20, 16, 12, 8, 4, 0]
    );
    assert_eq!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService/Query".into(),
            outcome: OutcomeFilter::Success as i32,
            user_id: "bob".into(),
            ..Default::default()
        })
        .await,
        vec![28, 16, 4]
    );
    assert!(
        query(QueryRequest {
            resource: "/umcp.graph.v1.GraphService".into(),
            ..Default::default()
        })
        .await
        .is_empty(),
        "resource is an exact match"
    );
    assert_eq!(
        query(QueryRequest {
            event_types: vec![EventType::AuthFailure as i32],
            failures_only: true,
            ..Default::default()
        })
        .await,
        vec![25, 15, 5]
    );
    assert_eq!(
        query(QueryRequest {
            correlation_id: "corr-carol-1008".into(),
            ..Default::default()
        })
        .await,
        vec![8]
    );
    assert_eq!(
        query(QueryRequest {
            since: Some(Timestamp {
                seconds: 1_010,
                nanos: 0
            }),
            until: Some(Timestamp {
                seconds: 1_013,
                nanos: 0
            }),
            ..Default::default()
        })
        .await,
        vec![12, 11, 10]
    );
    assert!(
        query(QueryRequest {
            user_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );

    // Paging: 30 events in pages of 7, newest first, each exactly once; an event committed
    // while paging does not disturb the cursor.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = QueryRequest {
            page: Some(PageRequest {
                page_size: 7,
                page_token: token.clone(),
            }),
            ..Default::default()
        };
        let r = admin.query(page).await.unwrap().into_inner();
        seen.extend(r.events.iter().map(|e| e.sequence));
        token = r.page.unwrap().next_page_token;
        if seen.len() == 7 {
            record(&mut client, simple(1)).await.unwrap();
        }
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<u64>>());
    // A page that ends exactly at the oldest match has no next page.
    let bob = |token: String| QueryRequest {
        user_id: "bob".into(),
        page: Some(PageRequest {
            page_size: 5,
            page_token: token,
        }),
        ..Default::default()
    };
    let first = admin.query(bob(String::new())).await.unwrap().into_inner();
    let second = admin
        .query(bob(first.page.unwrap().next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.events.len(), 5);
    assert_eq!(second.page.unwrap().next_page_token, "");
    // A cursor is bound to its filters, and must be one the service made.
    let first = admin
        .query(QueryRequest {
            page: Some(PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cursor = first.page.unwrap().next_page_token;
    for (failures_only, token) in [
        (true, cursor.clone()),
        (false, format!("{:016x}{}", 1_000_000u64, &cursor[16..])),
        (false, format!("{:016x}{}", 0u64, &cursor[16..])),
        (false, "garbage".into()),
    ] {
        let other = QueryRequest {
            failures_only,
            page: Some(PageRequest {
                page_size: 2,
                page_token: token.clone(),
            }),
            ..Default::default()
        };
        let status = admin.query(other).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{token}: {status:?}");
        assert!(
            status.message().starts_with("page.page_token: "),
            "{status:?}"
        );
    }
    // Default page size is 100.
    record(&mut client, simple(150)).await.unwrap();
    assert_eq!(query(QueryRequest::default()).await.len(), 100);
    server.stop().await;
}

#[tokio::test]
async fn tail_replays_history_then_follows_live_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    record(&mut client, simple(5)).await.unwrap();
    let mut admin = server.admin();
    let mut from_two = admin
        .tail(TailRequest {
            after_sequence: 2,
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut only_new = admin
        .tail(TailRequest {
            after_sequence: 0,
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut denials = admin
        .tail(TailRequest {
            after_sequence: 0,
            event_types: vec![EventType::AuthzDenied as i32],
            ..TailRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = async |s: &mut tonic::Streaming<umcp_proto::audit::v1::TailResponse>| {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("tail delivers")
            .unwrap()
            .unwrap()
            .event
            .unwrap()
    };
    for want in 3..=5 {
        assert_eq!(next(&mut from_two).await.sequence, want);
    }
    // No pause needed: a tail is subscribed once its call returned.
    let mut live = simple(2);
    live[1].event_type = EventType::AuthzDenied as i32;
    record(&mut client, live).await.unwrap();
    assert_eq!(next(&mut from_two).await.sequence, 6);
    assert_eq!(next(&mut from_two).await.sequence, 7);
    assert_eq!(next(&mut only_new).await.sequence, 6);
    assert_eq!(next(&mut only_new).await.sequence, 7);
    let denial = next(&mut denials).await;
    assert_eq!(
        (denial.sequence, denial.event_type),
        (7, EventType::AuthzDenied as i32)
    );
    server.stop().await;
}

#[tokio::test]
async fn tail_filters_like_query_and_resumes_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let admin = server.admin();
    // Sequences 1..=12: users alternate, every third fails, every fourth is on another
    // resource, 12 has a correlation id of its own.
    let batch = |from: i64| {
        (from..from + 12)
            .map(|i| {
                let mut e = event(
                    EventType::DataWrite,
                    ["alice", "bob"][(i % 2) as usize],
                    i % 3 != 0,
                    i,
                );
                if i % 4 == 0 {
                    e.resource = "/umcp.auth.v1.AuthService/Login".into();
                }
                e
            })
            .collect::<Vec<_>>()
    };
    let mut history = batch(1);
    history[11].correlation_id = "corr-wanted".into();
    record(&mut client, history).await.unwrap();
    let tail = |request: TailRequest| {
        let mut admin = admin.clone();
        async move { admin.tail(request).await.unwrap().into_inner() }
    };
    let seconds = |e: &AuditEvent| e.timestamp.unwrap().seconds;
    // Replay of history through the filters, then live events through the same filters.
    let mut bob_failures = tail(TailRequest {
        after_sequence: 1,
        user_id: "bob".into(),
        outcome: OutcomeFilter::Failure as i32,
        ..TailRequest::default()
    })
    .await;
    let mut login_successes = tail(TailRequest {
        after_sequence: 1,
        resource: "/umcp.auth.v1.AuthService/Login".into(),
        outcome: OutcomeFilter::Success as i32,
        ..TailRequest::default()
    })
    .await;
    let mut correlated = tail(TailRequest {
        after_sequence: 1,
        correlation_id: "corr-wanted".into(),
        ..TailRequest::default()
    })
    .await;
    for want in [3, 9] {
        assert_eq!(seconds(&next_event(&mut bob_failures).await), want);
    }
    for want in [4, 8] {
        assert_eq!(seconds(&next_event(&mut login_successes).await), want);
    }
    assert_eq!(next_event(&mut correlated).await.sequence, 12);
    record(&mut client, batch(13)).await.unwrap();
    for want in [15, 21] {
        assert_eq!(seconds(&next_event(&mut bob_failures).await), want);
    }
    for want in [16, 20] {
        assert_eq!(seconds(&next_event(&mut login_successes).await), want);
    }
    // Resuming from the last sequence received: nothing repeated, nothing skipped.
    drop(bob_failures);
    record(&mut client, batch(25)).await.unwrap();
    let mut resumed = tail(TailRequest {
        after_sequence: 21,
        user_id: "bob".into(),
        outcome: OutcomeFilter::Failure as i32,
        ..TailRequest::default()
    })
    .await;
    for want in [27, 33] {
        assert_eq!(seconds(&next_event(&mut resumed).await), want);
    }
    let quiet = tokio::time::timeout(Duration::from_millis(200), resumed.next()).await;
    assert!(quiet.is_err(), "only matching events: {quiet:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tail_never_blocks_commits_and_is_ended_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let mut stalled = server
        .admin()
        .tail(TailRequest::default())
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    for _ in 0..20 {
        record(&mut client, simple(1000)).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "commits were held up"
    );
    let mut received = 0u64;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("stream answers")
        {
            Some(Ok(_)) => received += 1,
            Some(Err(status)) => break status,
            None => panic!("stream ended without a status after {received} events"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("after_sequence="),
        "{}",
        status.message()
    );
    assert!(received < 20_000);
    server.stop().await;
}

#[tokio::test]
async fn verify_detects_tail_truncations_and_checkpoint_tampering() {
    // Whole records cut off the end: the chain is intact, the signed checkpoint is not met.
    for keep in [9usize, 5, 0] {
        let report = tampered(|dir, bytes| {
            let end = if keep == 0 {
                16
            } else {
                records(&bytes)[keep - 1].end
            };
            write(dir, &[&bytes[..end]]);
        })
        .await;
        assert_problem(&report, keep as u64 + 1, "truncated");
    }
    // An acknowledged record cut in the middle is never "repaired" away.
    let dir = tempfile::tempdir().unwrap();
    let log = ten_events(dir.path()).await;
    let bytes = std::fs::read(&log).unwrap();
    let last = records(&bytes)[9].clone();
    write(dir.path(), &[&bytes[..last.start + 20]]);
    let report = verify_after_restart(dir.path()).await;
    assert_problem(&report, 10, "truncated");
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        last.start as u64 + 20,
        "evidence kept"
    );
    // The log deleted entirely.
    let report = tampered(|dir, _| std::fs::remove_file(dir.join("audit.log")).unwrap()).await;
    assert_problem(&report, 1, "truncated");
    // Truncation plus a deleted checkpoint, and a forged checkpoint.
    let report = tampered(|dir, bytes| {
        write(dir, &[&bytes[..records(&bytes)[8].end]]);
        std::fs::remove_file(dir.join("checkpoint")).unwrap();
    })
    .await;
    assert_problem(&report, 10, "checkpoint");
    let report = tampered(|dir, _| {
        let path = dir.join("checkpoint");
        let mut cp = std::fs::read(&path).unwrap();
        cp[8] ^= 0x10;
        cp[80 + 8] ^= 0x10;
        std::fs::write(&path, cp).unwrap();
    })
    .await;
    assert_problem(&report, 11, "checkpoint");
}
