//! Tamper evidence: edits, deletions, insertions, reorderings, truncations and checkpoints, made on disk.

use super::*;

#[tokio::test]
async fn verify_detects_every_single_record_edit() {
    // Every record, a byte in the middle of its event: checksum mismatch.
    for target in 0..10usize {
        let report = tampered(|dir, mut bytes| {
            let r = records(&bytes)[target].clone();
            bytes[r.start + 8 + 40 + 5] ^= 0x01;
            write(dir, &[&bytes]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "edited");
    }
    // A record wiped with zeros (its length prefix with it).
    let report = tampered(|dir, mut bytes| {
        let r = records(&bytes)[4].clone();
        bytes[r].fill(0);
        write(dir, &[&bytes]);
    })
    .await;
    assert_problem(&report, 5, "edited");
    // An edit with the checksum recomputed: only the keyed chain can tell.
    for target in [0usize, 4, 9] {
        let report = tampered(|dir, mut bytes| {
            let r = records(&bytes)[target].clone();
            let rec = &mut bytes[r.clone()];
            let at = rec.windows(5).position(|w| w == b"alice").unwrap();
            rec[at..at + 5].copy_from_slice(b"mallo");
            fix_crc(rec);
            write(dir, &[&bytes]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "edited");
    }
}

#[tokio::test]
async fn verify_detects_deletions_insertions_and_reorderings() {
    for target in [0usize, 4, 8] {
        let report = tampered(|dir, bytes| {
            let r = records(&bytes)[target].clone();
            write(dir, &[&bytes[..r.start], &bytes[r.end..]]);
        })
        .await;
        assert_problem(&report, target as u64 + 1, "missing");
    }
    // A replayed copy of record 3 right after it.
    let report = tampered(|dir, bytes| {
        let r = records(&bytes)[2].clone();
        write(dir, &[&bytes[..r.end], &bytes[r.clone()], &bytes[r.end..]]);
    })
    .await;
    assert_problem(&report, 4, "inserted");
    // A forged record (a copy of 5 with another user, checksum fixed) before the genuine 5.
    let report = tampered(|dir, bytes| {
        let r = records(&bytes)[4].clone();
        let mut forged = bytes[r.clone()].to_vec();
        let at = forged.windows(5).position(|w| w == b"alice").unwrap();
        forged[at..at + 5].copy_from_slice(b"eve__");
        fix_crc(&mut forged);
        write(dir, &[&bytes[..r.start], &forged, &bytes[r.start..]]);
    })
    .await;
    assert_problem(&report, 5, "inserted");
    // Swaps of neighbours and of distant records.
    for (a, b) in [(3usize, 4usize), (0, 9), (8, 9)] {
        let report = tampered(|dir, bytes| {
            let rs = records(&bytes);
            let (ra, rb) = (rs[a].clone(), rs[b].clone());
            write(
                dir,
                &[
                    &bytes[..ra.start],
                    &bytes[rb.clone()],
                    &bytes[ra.end..rb.start],
                    &bytes[ra.clone()],
                    &bytes[rb.end..],
                ],
            );
        })
        .await;
        assert_problem(&report, a as u64 + 1, "reordered");
    }
}

#[tokio::test]
async fn a_torn_unacknowledged_write_is_removed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_events(dir.path()).await;
    let mut bytes = std::fs::read(&log).unwrap();
    let clean_len = bytes.len();
    // What a crash in the middle of appending record 11 leaves behind.
    let copy = bytes[records(&bytes)[9].clone()].to_vec();
    bytes.extend_from_slice(&copy[..copy.len() / 2]);
    std::fs::write(&log, &bytes).unwrap();
    let server = start(dir.path()).await;
    assert_eq!(std::fs::metadata(&log).unwrap().len(), clean_len as u64);
    let report = verify(&mut server.admin(), 0, 0).await;
    assert!(report.ok && report.head_sequence == 10, "{report:?}");
    assert_eq!(
        record(&mut server.service(), simple(1)).await.unwrap().2,
        11
    );
    assert!(verify(&mut server.admin(), 0, 0).await.ok);
    server.stop().await;
}

#[tokio::test]
async fn signed_checkpoints_follow_commits_and_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        sign_every_events: 5,
        sign_interval_ms: 3_600_000,
        ..config(dir.path())
    };
    let server = start_with(&TestIssuer::new(), cfg).await;
    let mut admin = server.admin();
    let mut client = server.service();
    // The empty log is signed at start.
    let genesis = export(&mut admin).await;
    assert_eq!(
        (genesis.sequence, genesis.hash.as_str()),
        (0, "0".repeat(64).as_str())
    );
    assert!(verify_offline(&genesis), "{genesis:?}");
    // Below the count (and long before the interval): not re-signed.
    record(&mut client, simple(4)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(export(&mut admin).await.sequence, 0);
    record(&mut client, simple(1)).await.unwrap();
    let signed = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { export(&mut admin).await.sequence == 5 }
    })
    .await;
    assert!(signed, "signed after 5 events");
    let cp = export(&mut admin).await;
    assert!(verify_offline(&cp), "{cp:?}");
    assert_eq!(cp.key_id, genesis.key_id);
    // The export pins the history: the log still carries that hash at that sequence.
    assert_eq!(verify(&mut admin, 0, cp.sequence).await.head_hash, cp.hash);
    // Edited fields do not verify.
    for forged in [
        ExportCheckpointResponse {
            sequence: 6,
            ..cp.clone()
        },
        ExportCheckpointResponse {
            hash: "ab".repeat(32),
            ..cp.clone()
        },
        ExportCheckpointResponse {
            time: Some(Timestamp {
                seconds: cp.time.unwrap().seconds + 1,
                nanos: cp.time.unwrap().nanos,
            }),
            ..cp.clone()
        },
        ExportCheckpointResponse {
            signature: genesis.signature.clone(),
            ..cp.clone()
        },
    ] {
        assert!(!verify_offline(&forged), "{forged:?}");
    }
    // The final head is signed at shutdown, with the same key after a restart.
    record(&mut client, simple(2)).await.unwrap();
    server.stop().await;
    let server = start(dir.path()).await;
    let after = export(&mut server.admin()).await;
    assert_eq!((after.sequence, &after.key_id), (7, &cp.key_id));
    assert!(verify_offline(&after));
    server.stop().await;

    // By time: one event, far below the count.
    let cfg = AuditConfig {
        sign_interval_ms: 100,
        ..config(dir.path())
    };
    let server = start_with(&TestIssuer::new(), cfg).await;
    record(&mut server.service(), simple(1)).await.unwrap();
    let admin = server.admin();
    let signed = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move { export(&mut admin).await.sequence == 8 }
    })
    .await;
    assert!(signed, "signed within the interval");
    server.stop().await;
}

#[tokio::test]
async fn a_log_rolled_back_behind_its_signed_checkpoint_is_truncated() {
    // The attack the MAC'd checkpoint alone cannot see: an older log restored together with
    // the MAC'd checkpoint of that time.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(5)).await.unwrap();
    server.stop().await;
    let old_log = std::fs::read(dir.path().join("audit.log")).unwrap();
    let old_checkpoint = std::fs::read(dir.path().join("checkpoint")).unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(5)).await.unwrap();
    server.stop().await;
    std::fs::write(dir.path().join("audit.log"), &old_log).unwrap();
    std::fs::write(dir.path().join("checkpoint"), &old_checkpoint).unwrap();
    let report = verify_after_restart(dir.path()).await;
    assert_problem(&report, 6, "truncated");
    assert!(report.problem.contains("Ed25519"), "{report:?}");
}

#[tokio::test]
async fn an_edited_or_deleted_signed_checkpoint_is_detected() {
    // Any edited byte, on disk while stopped.
    for at in [8usize, 30, 50, 100] {
        let report = tampered(|dir, _| {
            let path = dir.join("signed_checkpoint");
            let mut cp = std::fs::read(&path).unwrap();
            cp[at] ^= 0x04;
            std::fs::write(&path, cp).unwrap();
        })
        .await;
        assert_problem(&report, 11, "checkpoint");
    }
    // Deleted under the running service.
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    record(&mut server.service(), simple(3)).await.unwrap();
    std::fs::remove_file(dir.path().join("signed_checkpoint")).unwrap();
    let report = verify(&mut server.admin(), 0, 0).await;
    assert_problem(&report, 4, "checkpoint");
    server.stop().await;
    // A lost signing key is not silently replaced while a checkpoint it signed exists.
    std::fs::remove_file(dir.path().join("signing.key")).unwrap();
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
    assert!(error.contains("signing key"), "{error}");
}
