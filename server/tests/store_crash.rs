//! An acknowledged change survives SIGKILL: a child process commits changes
//! and prints each acknowledgement; the test kills it mid-stream and reopens
//! the database.
//!
//! (SIGKILL leaves the OS page cache intact, so this proves that the store
//! acknowledges only after commit; power-loss safety rests on
//! `synchronous=FULL`, which the store verifies at open.)

// Tests unwrap: any unexpected error should stop the test right there.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use casesync_server::store::{
    ChangeRecord, DocumentKind, NewDocument, SqliteConfig, SqliteStorage, Storage, Store,
    StoreConfig,
};
use sync_core::ids::DocumentId;

const CHILD_ENV: &str = "CASESYNC_STORE_CRASH_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_changes_survive_sigkill";

fn doc() -> DocumentId {
    DocumentId::from_bytes([3; 16])
}

fn change(n: u32) -> ChangeRecord {
    let mut hash = [0u8; 32];
    hash[..4].copy_from_slice(&n.to_be_bytes());
    ChangeRecord {
        doc: doc(),
        hash,
        bytes: format!("change {n}").into_bytes(),
        actor: vec![1; 16],
        seq: u64::from(n) + 1,
        user: "mother".into(),
        device: format!("phone-{}", n % 8),
        received_at_ms: 1_700_000_000_000,
    }
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(&dir);
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acknowledged = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acknowledged.push(n.parse::<u32>().unwrap());
            if acknowledged.len() >= 500 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(acknowledged.len() >= 500, "the child stopped early");

    let storage = SqliteStorage::open(SqliteConfig::new(dir.path())).unwrap();
    storage.integrity_check().unwrap();
    let stored: std::collections::HashSet<[u8; 32]> = storage
        .change_log(&doc(), None, u32::MAX)
        .unwrap()
        .into_iter()
        .map(|c| c.hash)
        .collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !stored.contains(&change(**n).hash))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

/// Commits forever from 16 concurrent writers, printing each acknowledgement.
fn run_child(dir: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open_sqlite(SqliteConfig::new(dir), StoreConfig::default()).unwrap();
        store
            .create_document(NewDocument {
                id: doc(),
                kind: DocumentKind::Case,
                created_by: "mother".into(),
                created_at_ms: 1_700_000_000_000,
            })
            .await
            .unwrap();
        let writers: Vec<_> = (0..16u32)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let n = i * 16 + w;
                        store.append_changes(vec![change(n)]).await.unwrap();
                        println!("ACK {n}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
}
