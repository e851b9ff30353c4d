//! What survives: reopening, damaged files, foreign files, and online backups
//! taken while devices keep writing.

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use casesync_server::store::{
    ChangeRecord, DocumentKind, NewDocument, SqliteConfig, SqliteStorage, Storage, Store,
    StoreConfig, StoreError, WriteOp,
};
use sync_core::ids::DocumentId;

fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

fn change(doc: DocumentId, n: u32) -> ChangeRecord {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(doc.as_bytes());
    hash[16..20].copy_from_slice(&n.to_be_bytes());
    ChangeRecord {
        doc,
        hash,
        bytes: format!("change {n}: what the comrade said about the last contact").into_bytes(),
        actor: vec![7; 16],
        seq: u64::from(n) + 1,
        user: "wife".into(),
        device: "phone".into(),
        received_at_ms: 1_700_000_000_000 + i64::from(n),
    }
}

fn new_doc(doc: DocumentId) -> NewDocument {
    NewDocument {
        id: doc,
        kind: DocumentKind::Case,
        created_by: "wife".into(),
        created_at_ms: 1_700_000_000_000,
    }
}

#[tokio::test]
async fn acknowledged_changes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let doc = doc_id(1);
    {
        let store =
            Store::open_sqlite(SqliteConfig::new(dir.path()), StoreConfig::default()).unwrap();
        store.create_document(new_doc(doc)).await.unwrap();
        for n in 0..20 {
            store.append_changes(vec![change(doc, n)]).await.unwrap();
        }
        store
            .save_sync_state(doc, "phone/s1".into(), vec![42])
            .await
            .unwrap();
        store.shutdown().await.unwrap();
    }

    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    let loaded = storage.load_document(&doc).unwrap().unwrap();
    assert_eq!(
        loaded.changes,
        (0..20).map(|n| change(doc, n).bytes).collect::<Vec<_>>()
    );
    assert_eq!(
        storage.load_sync_state(&doc, "phone/s1").unwrap(),
        Some(vec![42])
    );
    assert!(storage.is_member(&doc, "wife").unwrap());
    storage.integrity_check().unwrap();
}

#[test]
fn log_seqs_are_not_reused_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let doc = doc_id(1);
    let first = {
        let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
        storage.create_document(new_doc(doc)).unwrap();
        storage.append_changes(&[change(doc, 0)]).unwrap()
    };
    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    let second = storage.append_changes(&[change(doc, 1)]).unwrap();
    assert!(second[0].log_seq > first[0].log_seq);
}

#[test]
fn integrity_check_passes_on_a_good_database_and_fails_on_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let doc = doc_id(1);
    {
        let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
        storage.create_document(new_doc(doc)).unwrap();
        let changes: Vec<_> = (0..3000).map(|n| change(doc, n)).collect();
        storage.append_changes(&changes).unwrap();
        storage.integrity_check().unwrap();
        // Dropping the last connection checkpoints the WAL into the file.
    }

    let path = dir.path().join("casesync.db");
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 64 * 4096, "the database should span many pages");
    // Scribble over two whole pages in the middle of the file.
    let page = 4096;
    let middle = (len / 2) / page * page;
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(middle)).unwrap();
    file.write_all(&vec![0xA5; 2 * page as usize]).unwrap();
    file.sync_all().unwrap();
    drop(file);

    // Page 1 is intact, so the file opens; the check must find the damage.
    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    let error = storage.integrity_check().unwrap_err();
    assert!(error.is_corruption(), "{error}");
    assert!(
        matches!(error, StoreError::IntegrityCheckFailed { ref problems, .. } if !problems.is_empty())
    );
}

#[test]
fn a_file_that_is_not_a_database_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("casesync.db"),
        vec![0x42; 8192], // not a SQLite header
    )
    .unwrap();
    let error = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(error.is_corruption());
}

#[test]
fn another_programs_database_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("casesync.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    let error = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap_err();
    assert!(matches!(error, StoreError::NotCasesync { .. }), "{error}");
    // Still only their table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap());
    {
        let conn = rusqlite::Connection::open(dir.path().join("casesync.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found: 99, .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_holds_everything_acknowledged_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(SqliteConfig::new(dir.path()), StoreConfig::default()).unwrap();
    let doc = doc_id(1);
    store.create_document(new_doc(doc)).await.unwrap();

    // Devices keep writing during the whole backup.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let store = store.clone();
            let acknowledged = acknowledged.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let c = change(doc, n);
                    store
                        .commit(WriteOp::AppendChanges(vec![c.clone()]).into())
                        .await
                        .unwrap();
                    acknowledged.lock().unwrap().push(c.hash);
                    n += 1;
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let before_backup: Vec<[u8; 32]> = acknowledged.lock().unwrap().clone();
    let target = backup_dir.path().join("casesync.db");
    store.backup_to(target.clone()).await.unwrap();

    // The writers unwrap every commit: the backup neither failed nor blocked
    // them.
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // A second backup to the same name is refused rather than overwriting.
    let again = store.backup_to(target.clone()).await;
    assert!(matches!(again, Err(StoreError::BackupTargetExists(_))));
    store.shutdown().await.unwrap();

    // One self-contained file: no WAL or partial file left beside it.
    let mut files: Vec<_> = std::fs::read_dir(backup_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, vec!["casesync.db".to_owned()]);

    let restored = SqliteStorage::open(SqliteConfig::new(backup_dir.path())).unwrap();
    restored.integrity_check().unwrap();
    let in_backup: std::collections::HashSet<[u8; 32]> = restored
        .change_log(&doc, None, u32::MAX)
        .unwrap()
        .into_iter()
        .map(|c| c.hash)
        .collect();
    let missing = before_backup
        .iter()
        .filter(|h| !in_backup.contains(*h))
        .count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged changes missing from the backup"
    );
    assert!(restored.is_member(&doc, "wife").unwrap());
}

#[test]
fn the_database_is_a_versioned_wal_database() {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    assert_eq!(storage.path(), dir.path().join("casesync.db"));

    let conn = rusqlite::Connection::open(storage.path()).unwrap();
    let journal_mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(journal_mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(
        version,
        casesync_server::store::schema::MIGRATIONS.len() as i64
    );
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app_id, casesync_server::store::schema::APPLICATION_ID);
}
