//! The backup drill (issue 8): an online backup taken while a device
//! writes, restored into a fresh data directory, holds exactly the case as
//! it stood at some committed moment of the source; `casesync check` passes
//! on it; and the device, reconnecting to the restored server, re-uploads
//! what came after the backup, so nothing is lost.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use automerge::ChangeHash;
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field};

fn casesync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casesync"))
        .args(args)
        .env_remove("CASESYNC_DATA_DIR")
        .env_remove("CASESYNC_CONFIG")
        .output()
        .expect("run casesync")
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<String> {
    heads.sort();
    heads.iter().map(ToString::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_restores_and_devices_fill_the_gap() {
    let mut source = TestServer::start().await;
    let olena = source.token("olena", "phone");
    let case =
        DocumentId::parse_url_or_id(&source.create_case(&olena, serde_json::json!({})).await)
            .expect("case id");
    let mut phone = EngineDevice::connect(&source, "olena", "phone").await;
    phone.find(case).await;

    // Step 1: the phone writes lines, each acknowledged (one commit each),
    // recording the heads after each. The backup starts after 5 lines; the
    // phone goes on until 5 lines after the backup ended.
    let progress = Arc::new(AtomicUsize::new(0));
    let backup_done = Arc::new(AtomicUsize::new(usize::MAX));
    let (writer_progress, writer_done) = (progress.clone(), backup_done.clone());
    let writer = tokio::spawn(async move {
        let mut states = vec![sorted(phone.device.doc(&case).expect("open").get_heads())];
        for i in 0..2000 {
            if i >= writer_done.load(Ordering::SeqCst).saturating_add(5) {
                break;
            }
            let len = phone.view(case)["disappearance"]["circumstances"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .count();
            phone.edit(
                case,
                &Edit::SpliceText {
                    field: Field::Disappearance(DisappearanceField::Circumstances),
                    pos: len,
                    delete: 0,
                    insert: format!("[{i}]"),
                },
            );
            phone.wait_acknowledged(case).await;
            states.push(sorted(phone.device.doc(&case).expect("open").get_heads()));
            writer_progress.store(i + 1, Ordering::SeqCst);
        }
        (phone, states)
    });
    let dir = tempfile::tempdir().expect("tmp");
    let backup = dir.path().join("casesync-backup.db");
    let source_dir = source.data_dir();
    let backup_arg = backup.to_str().expect("utf-8 path").to_owned();
    let source_arg = source_dir.to_str().expect("utf-8 path").to_owned();
    while progress.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let out = tokio::task::spawn_blocking(move || {
        casesync(&["backup", &backup_arg, "--data-dir", &source_arg])
    })
    .await
    .expect("backup task");
    backup_done.store(progress.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut phone, states) = writer.await.expect("writer");
    source.shutdown().await;

    // Step 2: restore into a fresh data directory (the keys come from
    // where the operator keeps them); `casesync check` passes on it.
    let restored = tempfile::tempdir().expect("tmp");
    let restored_arg = restored.path().to_str().expect("utf-8").to_owned();
    let out = casesync(&[
        "restore",
        backup.to_str().expect("utf-8"),
        "--data-dir",
        &restored_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = casesync(&[
        "restore",
        backup.to_str().expect("utf-8"),
        "--data-dir",
        &restored_arg,
    ]);
    assert!(!again.status.success(), "a restore never overwrites");
    let keys = restored.path().join("keys");
    std::fs::create_dir(&keys).expect("keys dir");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for entry in std::fs::read_dir(source_dir.join("keys")).expect("source keys") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), keys.join(entry.file_name())).expect("copy key");
    }
    let out = casesync(&["check", "--data-dir", &restored_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Step 3: the restored case is the case as it stood at one committed
    // moment of the source, during the writing.
    let target = TestServer::start_in_dir(restored).await;
    let view = target.get_case(&olena, &case.to_url()).await;
    let heads: Vec<String> = view["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .map(|h| {
            sync_core::protocol::decode_head(&h)
                .map(|c| c.to_string())
                .unwrap_or(h)
        })
        .collect();
    let mut heads = heads;
    heads.sort();
    let at = states
        .iter()
        .position(|s| *s == heads)
        .unwrap_or_else(|| panic!("restored heads {heads:?} are none of the source's states"));
    let written = states.len() - 1;
    println!("the backup holds the case after {at} of {written} edits");
    assert!(
        at >= 5 && at < written,
        "the backup was taken while writing"
    );

    // Step 4: the phone reconnects to the restored server and re-uploads
    // what came after the backup: nothing is lost.
    // (The phone's own "saved" bookkeeping still names the old server's
    // acknowledgements, so the test watches the restored server instead.)
    phone.reconnect(&target).await;
    let expected: String = (0..written).map(|i| format!("[{i}]")).collect();
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        // Let the phone and the server talk for a moment, then look.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            phone.pump_until("the restored server to catch up", |_| false),
        )
        .await;
        let view = target.get_case(&olena, &case.to_url()).await;
        if view["case"]["disappearance"]["circumstances"].as_str() == Some(expected.as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restored server never got the lost edits back: {}",
            view["case"]["disappearance"]["circumstances"]
        );
    }
}
