//! Record: sequencing, idempotency across restarts, SIGKILL durability, input validation, permissions.

use super::*;

#[tokio::test]
async fn record_is_sequenced_and_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let batch = simple(3);
    assert_eq!(record(&mut client, batch.clone()).await.unwrap(), (3, 0, 3));
    assert_eq!(record(&mut client, batch.clone()).await.unwrap(), (0, 3, 3));
    // Repeated within one call: stored once.
    let twice = vec![batch[0].clone(), simple(1)[0].clone(), simple(1)[0].clone()];
    let mut twice = twice;
    twice[2] = twice[1].clone();
    assert_eq!(record(&mut client, twice).await.unwrap(), (1, 2, 4));
    server.stop().await;

    let server = start_with(&TestIssuer::new(), config(dir.path())).await;
    let mut client = server.service();
    assert_eq!(record(&mut client, batch).await.unwrap(), (0, 3, 4));
    assert_eq!(record(&mut client, simple(2)).await.unwrap(), (2, 0, 6));
    let page = server
        .admin()
        .query(QueryRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, vec![6, 5, 4, 3, 2, 1], "newest first");
    assert!(page.events.iter().all(|e| e.chain_hash.len() == 64));
    let report = verify(&mut server.admin(), 0, 0).await;
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events_checked, report.head_sequence), (6, 6));
    assert_eq!(report.head_hash, page.events[0].chain_hash);
    let range = verify(&mut server.admin(), 2, 4).await;
    assert!(range.ok && range.events_checked == 3, "{range:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_chain_key_refuses_to_start_instead_of_forking_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(2)).await.unwrap();
    server.stop().await;
    std::fs::remove_file(dir.path().join("chain.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let verifier = TestIssuer::new().verifier();
    let result = umcp_audit::serve(
        listener,
        config(dir.path()),
        verifier,
        std::future::pending(),
    )
    .await;
    let error = result
        .expect_err("must not start with a fresh key")
        .to_string();
    assert!(error.contains("chain key"), "{error}");
    assert!(
        !dir.path().join("chain.key").exists(),
        "no new key was created"
    );
}

#[tokio::test]
async fn every_bad_input_gets_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client = server.service();
    let jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLWJ5dGVz";
    let cases: Vec<(&str, Vec<AuditEvent>, &str)> = vec![
        ("empty batch", vec![], "events"),
        ("1001 events", simple(1001), "events"),
        (
            "uuid v4",
            with(|e| e.event_id = uuid::Uuid::new_v4().to_string()),
            "events[0].event_id",
        ),
        ("no id", with(|e| e.event_id.clear()), "events[0].event_id"),
        (
            "sequence set",
            with(|e| e.sequence = 9),
            "events[0].sequence",
        ),
        (
            "chain hash set",
            with(|e| e.chain_hash = "ab".into()),
            "events[0].chain_hash",
        ),
        (
            "no timestamp",
            with(|e| e.timestamp = None),
            "events[0].timestamp",
        ),
        (
            "no type",
            with(|e| e.event_type = 0),
            "events[0].event_type",
        ),
        (
            "unknown type",
            with(|e| e.event_type = 18),
            "events[0].event_type",
        ),
        (
            "no severity",
            with(|e| e.severity = 0),
            "events[0].severity",
        ),
        (
            "no service",
            with(|e| e.service.clear()),
            "events[0].service",
        ),
        (
            "auth method",
            with(|e| e.actor.as_mut().unwrap().auth_method = "magic".into()),
            "events[0].actor.auth_method",
        ),
        (
            "grpc code",
            with(|e| e.outcome.as_mut().unwrap().grpc_code = 99),
            "events[0].outcome.grpc_code",
        ),
        (
            "password key",
            detail("password", "hunter2"),
            "events[0].details[\"password\"]",
        ),
        (
            "token key",
            detail("access_token", "x"),
            "events[0].details[\"access_token\"]",
        ),
        (
            "secret key",
            detail("client_secret", "x"),
            "events[0].details[\"client_secret\"]",
        ),
        (
            "api key key",
            detail("apiKey", "x"),
            "events[0].details[\"apiKey\"]",
        ),
        (
            "authorization key",
            detail("Authorization", "x"),
            "events[0].details[\"Authorization\"]",
        ),
        (
            "code key",
            detail("code", "print(1)"),
            "events[0].details[\"code\"]",
        ),
        (
            "jwt value",
            detail("note", &format!("Bearer {jwt}")),
            "events[0].details[\"note\"]",
        ),
        (
            "api key value",
            detail("note", "umcp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdef12"),
            "events[0].details[\"note\"]",
        ),
        (
            "jwt in user agent",
            with(|e| e.user_agent = jwt.into()),
            "events[0].user_agent",
        ),
        (
            "too many details",
            with(|e| {
                for i in 0..65 {
                    e.details.insert(format!("k{i}"), Value::default());
                }
            }),
            "events[0].details",
        ),
    ];
    for (name, events, field) in cases {
        let status = record(&mut client, events).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{name}: {}",
            status.message()
        );
    }
    // Nothing was stored by any of them.
    assert_eq!(verify(&mut server.admin(), 0, 0).await.head_sequence, 0);

    let mut admin = server.admin();
    let bad_queries = [
        QueryRequest {
            page: Some(PageRequest {
                page_size: 1001,
                page_token: String::new(),
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            page: Some(PageRequest {
                page_size: 10,
                page_token: "garbage".into(),
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            event_types: vec![0],
            ..QueryRequest::default()
        },
        QueryRequest {
            since: Some(Timestamp {
                seconds: 20,
                nanos: 0,
            }),
            until: Some(Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            ..QueryRequest::default()
        },
        QueryRequest {
            outcome: 3,
            ..QueryRequest::default()
        },
        // The deprecated alias cannot contradict the field that replaces it.
        QueryRequest {
            failures_only: true,
            outcome: OutcomeFilter::Success as i32,
            ..QueryRequest::default()
        },
    ];
    for q in bad_queries {
        let status = admin.query(q.clone()).await.expect_err("bad query");
        assert_eq!(status.code(), Code::InvalidArgument, "{q:?}: {status:?}");
    }
    let status = admin
        .verify(VerifyRequest {
            from_sequence: 5,
            to_sequence: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for bad in [
        TailRequest {
            event_types: vec![42],
            ..TailRequest::default()
        },
        TailRequest {
            outcome: 7,
            ..TailRequest::default()
        },
    ] {
        let status = admin.tail(bad.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn callers_without_the_permission_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    for role in [Role::Admin, Role::Developer, Role::Viewer] {
        let status = record(&mut server.client(role), simple(1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let status = server
        .service()
        .query(QueryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = server
        .service()
        .verify(VerifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    for role in [Role::Service, Role::Developer, Role::Viewer] {
        let status = server
            .client(role)
            .export_checkpoint(ExportCheckpointRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}");
    }
    let mut anonymous = AuditServiceClient::new(server.spawned.channel());
    let status = anonymous
        .record(RecordRequest { events: simple(1) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_of_the_binary() {
    let issuer = TestIssuer::new();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json()).unwrap();
    let data = dir.path().join("audit");
    let port = umcp_testkit::free_port();
    let channel = umcp_testkit::channel(([127, 0, 0, 1], port).into());
    let mut service = AuditServiceClient::new(umcp_testkit::authed(
        channel.clone(),
        issuer.bearer("svc", &[Role::Service]),
    ));
    let mut admin = AuditServiceClient::new(umcp_testkit::authed(
        channel,
        issuer.bearer("svc", &[Role::Admin]),
    ));

    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let child = spawn_binary(&data, port, &jwks);
        let up = eventually(Duration::from_secs(20), || {
            let mut c = admin.clone();
            async move { c.verify(VerifyRequest::default()).await.is_ok() }
        })
        .await;
        assert!(up, "umcp-audit did not come up (round {round})");
        // Writers racing the kill: whatever was acknowledged must be there after restart.
        let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut writers = Vec::new();
        for _ in 0..4 {
            let mut c = service.clone();
            let acked = Arc::clone(&acked);
            writers.push(tokio::spawn(async move {
                loop {
                    let batch = simple(5);
                    let ids: Vec<String> = batch.iter().map(|e| e.event_id.clone()).collect();
                    match c.record(RecordRequest { events: batch }).await {
                        Ok(_) => acked.lock().extend(ids),
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(child); // SIGKILL
        for w in writers {
            w.await.unwrap();
        }
        acknowledged.extend(acked.lock().drain(..));
    }
    let _child = spawn_binary(&data, port, &jwks);
    let up = eventually(Duration::from_secs(20), || {
        let mut c = admin.clone();
        async move { c.verify(VerifyRequest::default()).await.is_ok() }
    })
    .await;
    assert!(up);
    let report = admin
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    let mut stored = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let page = QueryRequest {
            page: Some(PageRequest {
                page_size: 1000,
                page_token: token,
            }),
            ..Default::default()
        };
        let r = admin.query(page).await.unwrap().into_inner();
        stored.extend(r.events.into_iter().map(|e| e.event_id));
        token = r.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(!acknowledged.is_empty());
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events lost",
        lost.len(),
        acknowledged.len()
    );
    assert_eq!(
        report.head_sequence as usize,
        stored.len(),
        "sequence numbers have no gaps"
    );
    // The signed checkpoints written between the kills still pin this log.
    let cp = export(&mut admin).await;
    assert!(verify_offline(&cp), "{cp:?}");
    assert!(
        cp.sequence > 0 && cp.sequence <= report.head_sequence,
        "{cp:?}"
    );
    assert_eq!(verify(&mut admin, 0, cp.sequence).await.head_hash, cp.hash);
    // Still accepting writes after all that.
    assert!(
        service
            .record(RecordRequest { events: simple(1) })
            .await
            .is_ok()
    );
}
