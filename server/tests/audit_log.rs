//! The audit log: a hash chain that survives reopening and concurrent
//! writers, and that `casesync audit verify` (the real binary) finds broken
//! at the right row after any edit, deletion or reordering of a row. And
//! `GET /api/audit`, which only admins can see.

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use casesync_server::audit::{self, AuditEvent, AuditKind, AuditLog, AuditRow};
use casesync_server::auth::{mint_token, unix_now, AuthError, DevKeys, Role, Verifier};
use casesync_server::store::{SqliteConfig, SqliteStorage};
use serde_json::{json, Value};
use support::TestServer;
use sync_core::ids::{DeviceId, DocumentId, UserId};

/// A data directory with the store's schema (the audit log lives in the
/// store's database file) and an open audit log.
fn fresh() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap());
    let log = AuditLog::open(&audit::db_path(dir.path()), None).unwrap();
    (dir, log)
}

/// Five varied rows: with and without user, device, document and subject.
fn record_five(log: &AuditLog) {
    let doc = DocumentId::from_bytes([9; 16]);
    let events = [
        AuditEvent::new(AuditKind::AuthFailed)
            .detail(json!({ "reason": "expired", "route": "/api" })),
        AuditEvent::new(AuditKind::InvitationCreated)
            .doc(doc)
            .subject("inv-1")
            .detail(json!({ "role": "relative", "expires_in_s": 86400 })),
        AuditEvent::new(AuditKind::MemberAdded)
            .doc(doc)
            .subject("brother")
            .detail(json!({ "role": "relative" })),
        AuditEvent::new(AuditKind::DeviceRevoked).subject("brother/old-phone"),
        AuditEvent::new(AuditKind::CoordinatorRead).doc(doc),
    ];
    for (i, mut event) in events.into_iter().enumerate() {
        event.user = Some("mother".into());
        event.device = (i % 2 == 0).then(|| "phone".to_owned());
        log.record_blocking(event).unwrap();
    }
}

fn all_rows(log: &AuditLog) -> Vec<AuditRow> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(log.list(0, 1000))
        .unwrap()
}

/// Runs `casesync audit verify --data-dir DIR`: exit code, stdout, stderr.
fn verify_cli(data_dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_casesync"))
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .env_remove("CASESYNC_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an attacker with the database file does: plain SQL.
fn tamper(data_dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(audit::db_path(data_dir)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// Asserts the binary exits 1 and names `row` as the broken one.
fn assert_broken_at(data_dir: &Path, row: i64) -> String {
    let (code, stdout, stderr) = verify_cli(data_dir);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains(&format!("audit log broken at row {row}:")),
        "stderr does not name row {row}: {stderr}"
    );
    stderr
}

#[test]
fn recorded_events_verify_and_the_chain_survives_reopening() {
    let (dir, log) = fresh();
    let empty = audit::verify(&audit::db_path(dir.path()), None).unwrap();
    assert_eq!((empty.rows, empty.broken, empty.head), (0, None, None));

    record_five(&log);
    let report = audit::verify(&audit::db_path(dir.path()), None).unwrap();
    assert_eq!(report.rows, 5);
    assert_eq!(report.broken, None);
    let rows = all_rows(&log);
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(report.head.as_deref(), Some(rows[4].hash.as_str()));
    assert_eq!(rows[1].kind, "invitation_created");
    assert_eq!(
        rows[1].doc.as_deref(),
        Some(DocumentId::from_bytes([9; 16]).to_url().as_str())
    );
    assert_eq!(rows[1].detail["role"], "relative");
    assert_eq!(rows[3].subject.as_deref(), Some("brother/old-phone"));
    assert_eq!(rows[1].device, None);
    assert_eq!(rows[2].device.as_deref(), Some("phone"));

    // A new connection (a restarted server) goes on with the same chain.
    drop(log);
    let log = AuditLog::open(&audit::db_path(dir.path()), None).unwrap();
    assert_eq!(
        log.record_blocking(AuditEvent::new(AuditKind::Export))
            .unwrap(),
        6
    );
    let report = audit::verify(&audit::db_path(dir.path()), None).unwrap();
    assert_eq!((report.rows, report.broken), (6, None));

    let (code, stdout, stderr) = verify_cli(dir.path());
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("audit log intact: 6 rows"), "{stdout}");
}

#[test]
fn by_records_the_identity_a_token_proves() {
    let (dir, log) = fresh();
    let keys = DevKeys::load_or_create(dir.path()).unwrap();
    let token = mint_token(
        &keys,
        &UserId::new("coord-1").unwrap(),
        &DeviceId::new("laptop").unwrap(),
        Role::Coordinator,
        Duration::from_secs(60),
        unix_now(),
    )
    .unwrap();
    let identity = Verifier::new(keys.auth_config().unwrap())
        .verify(&token, unix_now())
        .unwrap();
    log.record_blocking(AuditEvent::new(AuditKind::CoordinatorRead).by(&identity))
        .unwrap();
    let rows = all_rows(&log);
    assert_eq!(rows[0].user.as_deref(), Some("coord-1"));
    assert_eq!(rows[0].device.as_deref(), Some("laptop"));
}

#[test]
fn oversized_detail_is_stored_as_a_marker() {
    let (_dir, log) = fresh();
    log.record_blocking(
        AuditEvent::new(AuditKind::AccessRefused)
            .detail(json!({ "x": "y".repeat(audit::MAX_DETAIL_BYTES * 4) })),
    )
    .unwrap();
    let rows = all_rows(&log);
    assert_eq!(rows[0].detail["detail_too_large"], true);
    assert!(rows[0].detail.to_string().len() < 200);
}

#[test]
fn tamper_one_byte_of_detail_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    // `{"reason":...,"role":"relative"}` of row 3, one letter changed: still
    // valid JSON, so only the chain can tell.
    tamper(
        dir.path(),
        "UPDATE audit_log SET detail = replace(detail, 'relative', 'relativf') WHERE seq = 3",
    );
    let stderr = assert_broken_at(dir.path(), 3);
    assert!(stderr.contains("row edited"), "{stderr}");
}

#[test]
fn tamper_one_byte_of_kind_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    // member_added -> member_addee: not a known kind.
    tamper(
        dir.path(),
        "UPDATE audit_log SET kind = 'member_addee' WHERE seq = 3",
    );
    assert_broken_at(dir.path(), 3);
}

#[test]
fn tamper_a_known_kind_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    // device_revoked -> member_revoked: a valid kind, a different story.
    tamper(
        dir.path(),
        "UPDATE audit_log SET kind = 'member_revoked' WHERE seq = 3",
    );
    assert_broken_at(dir.path(), 3);
}

#[test]
fn tamper_at_ms_by_one_millisecond_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(
        dir.path(),
        "UPDATE audit_log SET at_ms = at_ms + 1 WHERE seq = 3",
    );
    assert_broken_at(dir.path(), 3);
}

#[test]
fn tamper_a_column_type_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(
        dir.path(),
        "UPDATE audit_log SET subject = x'6272' WHERE seq = 3",
    );
    let stderr = assert_broken_at(dir.path(), 3);
    assert!(stderr.contains("subject"), "{stderr}");
}

#[test]
fn tamper_the_stored_hash_names_the_row() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(
        dir.path(),
        "UPDATE audit_log SET hash = zeroblob(32) WHERE seq = 3",
    );
    assert_broken_at(dir.path(), 3);
}

#[test]
fn a_deleted_row_is_named() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq = 3");
    let stderr = assert_broken_at(dir.path(), 3);
    assert!(stderr.contains("missing"), "{stderr}");
}

#[test]
fn a_deleted_first_row_is_named() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq = 1");
    assert_broken_at(dir.path(), 1);
}

#[test]
fn a_deleted_row_with_the_rest_renumbered_is_named() {
    let (dir, log) = fresh();
    record_five(&log);
    // Hide the gap: delete row 3 and move 4 and 5 down.
    tamper(
        dir.path(),
        "DELETE FROM audit_log WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = 5;",
    );
    assert_broken_at(dir.path(), 3);
}

#[test]
fn two_swapped_rows_are_named() {
    let (dir, log) = fresh();
    record_five(&log);
    tamper(
        dir.path(),
        "UPDATE audit_log SET seq = -3 WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE seq = -3;",
    );
    let stderr = assert_broken_at(dir.path(), 3);
    assert!(stderr.contains("prev_hash"), "{stderr}");
}

#[test]
fn dropping_the_newest_row_is_seen_only_through_the_head_hash() {
    // The chain alone cannot show that its end was cut off: what verify
    // prints as the head hash, kept elsewhere, can.
    let (dir, log) = fresh();
    record_five(&log);
    let (code, before, _) = verify_cli(dir.path());
    assert_eq!(code, 0);
    tamper(dir.path(), "DELETE FROM audit_log WHERE seq = 5");
    let (code, after, stderr) = verify_cli(dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(after.contains("audit log intact: 4 rows"), "{after}");
    let head = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("head hash: "))
            .map(str::to_owned)
    };
    assert!(head(&before).is_some(), "{before}");
    assert_ne!(head(&before), head(&after));
}

#[test]
fn verify_of_a_missing_database_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = verify_cli(&dir.path().join("nothing-here"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        !dir.path().join("nothing-here").exists(),
        "verify created files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_from_two_connections_make_one_gapless_chain() {
    let (dir, first) = fresh();
    // A second connection to the same file: another process would be the
    // same to SQLite.
    let second = AuditLog::open(&audit::db_path(dir.path()), None).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let log = if t % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..25u32 {
                log.record(
                    AuditEvent::new(AuditKind::AccessRefused)
                        .subject(format!("task-{t}"))
                        .detail(json!({ "i": i })),
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = audit::verify(&audit::db_path(dir.path()), None).unwrap();
    assert_eq!((report.rows, report.broken), (200, None));
    let rows = first.list(0, 1000).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<i64>>()
    );
    // Paging.
    let page = first.list(150, 10).await.unwrap();
    assert_eq!(page.first().map(|r| r.seq), Some(151));
    assert_eq!(page.len(), 10);
}

/// Polls the log until `done` holds (bounded).
async fn wait_rows(
    log: &AuditLog,
    what: &str,
    done: impl Fn(&[AuditRow]) -> bool,
) -> Vec<AuditRow> {
    let deadline = Instant::now() + support::WAIT;
    loop {
        let rows = log.list(0, 1000).await.unwrap();
        if done(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_auth_failures_costs_one_row_per_reason_per_second() {
    let (_dir, log) = fresh();
    for _ in 0..50 {
        log.auth_failed(&AuthError::Expired, "/api");
    }
    log.auth_failed(&AuthError::BadSignature, "/sync");
    // The first of each reason at once; the other 49 expired ones as one
    // row when their window closes.
    let rows = wait_rows(&log, "the summary row", |rows| {
        rows.iter().any(|r| r.detail.get("suppressed").is_some())
    })
    .await;
    let expired: Vec<&AuditRow> = rows
        .iter()
        .filter(|r| r.detail["reason"] == "expired")
        .collect();
    assert_eq!(expired.len(), 2, "{rows:?}");
    assert_eq!(
        expired[0].detail,
        json!({ "reason": "expired", "route": "/api" })
    );
    assert_eq!(
        expired[1].detail,
        json!({ "reason": "expired", "route": "/api", "suppressed": 49 })
    );
    let bad_signature = rows
        .iter()
        .filter(|r| r.detail["reason"] == "bad_signature")
        .count();
    assert_eq!(bad_signature, 1, "{rows:?}");
    assert!(rows.iter().all(|r| r.kind == "auth_failed"));
    assert!(rows.iter().all(|r| r.user.is_none() && r.device.is_none()));
}

fn token(server: &TestServer, user: &str, role: Role) -> String {
    let keys = DevKeys::load_or_create(&server.data_dir()).unwrap();
    mint_token(
        &keys,
        &UserId::new(user).unwrap(),
        &DeviceId::new("dev").unwrap(),
        role,
        Duration::from_secs(600),
        unix_now(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_can_read_the_audit_log_and_every_read_is_recorded() {
    let mut server = TestServer::start().await;
    let relative = token(&server, "mother", Role::Relative);
    let coordinator = token(&server, "coord", Role::Coordinator);
    let admin = token(&server, "root", Role::Admin);

    // A failed authentication, for the log to hold something.
    // One character of the signature changed.
    let mut forged = relative.clone().into_bytes();
    let at = relative.rfind('.').unwrap() + 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, _) = server.http("GET", "/api/cases", &forged, None).await;
    assert_eq!(status, 401);

    for path in [
        "/api/audit",
        "/api/audit?after=0&limit=10",
        "/api/audit?limit=oops",
    ] {
        let (status, body) = server.http("GET", path, "", None).await;
        assert_eq!(status, 401, "anonymous {path}: {body}");
        for (who, token) in [("relative", &relative), ("coordinator", &coordinator)] {
            let (status, body) = server.http("GET", path, token, None).await;
            assert_eq!(status, 404, "{who} {path}: {body}");
        }
    }

    // The auth failures above are written in the background: wait for the
    // first one to show.
    let deadline = Instant::now() + support::WAIT;
    let body = loop {
        let (status, body) = server
            .http("GET", "/api/audit?limit=1000", &admin, None)
            .await;
        assert_eq!(status, 200, "admin: {body}");
        let rows = body["rows"].as_array().unwrap();
        if rows.iter().any(|r| r["kind"] == "auth_failed") {
            break body;
        }
        assert!(Instant::now() < deadline, "no auth_failed row: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rows = body["rows"].as_array().unwrap();
    let failed = rows.iter().find(|r| r["kind"] == "auth_failed").unwrap();
    assert_eq!(failed["detail"]["route"], "/api");
    assert_eq!(failed["user"], Value::Null);
    let read = rows.iter().find(|r| r["kind"] == "audit_read").unwrap();
    assert_eq!(read["user"], "root");
    assert_eq!(read["detail"], json!({ "after": 0, "limit": 1000 }));
    assert_eq!(read["hash"].as_str().unwrap().len(), 64);
    assert_eq!(body["next_after"], rows.last().unwrap()["seq"]);
    // No refused non-admin read was recorded as a read.
    assert!(rows
        .iter()
        .filter(|r| r["kind"] == "audit_read")
        .all(|r| r["user"] == "root"));
    assert!(!body.to_string().contains(&forged));

    // Paging: one row after the first.
    let (status, page) = server
        .http("GET", "/api/audit?after=1&limit=1", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["rows"].as_array().unwrap().len(), 1);
    assert_eq!(page["rows"][0]["seq"], 2);
    assert_eq!(page["next_after"], 2);
    let (status, _) = server.http("GET", "/api/audit?after=x", &admin, None).await;
    assert_eq!(status, 400);

    server.shutdown().await;
    let report = audit::verify(&audit::db_path(&server.data_dir()), None).unwrap();
    assert_eq!(report.broken, None);
    assert!(report.rows >= 3);
}
