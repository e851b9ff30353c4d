//! The document actor keeps a snapshot of each case current, so that a
//! restart loads a snapshot and a short tail of the change log rather than
//! every change (issue 7's cold load). It counts changes, not deliveries: a
//! phone that comes back with hundreds of offline edits in one message
//! moves the case that many changes along.

mod support;

use std::time::Duration;

use casesync_server::store::{SqliteConfig, SqliteStorage, Storage};
use support::{EngineDevice, TestServer};
use sync_core::model::{DisappearanceField, Edit, Field};

const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_of_many_offline_edits_leads_to_a_snapshot() {
    let server = TestServer::start().await;
    let olena = server.token("olena", "phone");
    let case = server.new_case(&olena).await;
    let mut phone = EngineDevice::connect(&server, "olena", "phone").await;
    phone.find(case).await;
    // 600 edits (the actor snapshots every 500 changes), sent together.
    for n in 0..600 {
        phone.edit(
            case,
            &Edit::SpliceText {
                field: CIRCUMSTANCES,
                pos: 0,
                delete: 0,
                insert: format!("[{n}]"),
            },
        );
    }
    phone.wait_acknowledged(case).await;

    // The snapshot is written after the acknowledgement, off the actor.
    let storage =
        SqliteStorage::open(SqliteConfig::new(server.data_dir())).expect("open the store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let loaded = loop {
        let loaded = storage
            .load_document(&case)
            .expect("load")
            .expect("the case is stored");
        if loaded.snapshot.is_some() || tokio::time::Instant::now() > deadline {
            break loaded;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        loaded.snapshot.is_some(),
        "no snapshot after 600 changes in one delivery"
    );
    assert!(
        loaded.changes.len() < 500,
        "the tail after the snapshot is short: {} changes",
        loaded.changes.len()
    );
    // And the snapshot plus the tail is the case the phone has.
    let mut doc = sync_core::guard::load_document(
        loaded.snapshot.as_deref().unwrap_or_default(),
        &sync_core::guard::Limits::default(),
    )
    .expect("the snapshot loads");
    for c in &loaded.changes {
        doc.load_incremental(c).expect("a stored change loads");
    }
    let phone_doc = phone.device.doc(&case).expect("open document");
    assert_eq!(doc.get_heads(), phone_doc.get_heads());
}

/// After a restart, a device that has nothing is answered from the stored
/// snapshot before the case loads (`engine::cold`; the shutdown snapshots
/// the log's tail, and `engine::cold`'s unit tests cover a reply with a
/// tail): it gets
/// every change, and the sync then carries on through the loaded case, in
/// both directions. A case already loaded answers the usual way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_nothing_is_answered_from_storage_after_a_restart() {
    let server = TestServer::start().await;
    let olena = server.token("olena", "phone");
    let case = server.new_case(&olena).await;
    let mut phone = EngineDevice::connect(&server, "olena", "phone").await;
    phone.find(case).await;
    let splice = |n: usize| Edit::SpliceText {
        field: CIRCUMSTANCES,
        pos: 0,
        delete: 0,
        insert: format!("[{n}]"),
    };
    for n in 0..600 {
        phone.edit(case, &splice(n));
    }
    phone.wait_acknowledged(case).await;
    // A tail after the snapshot.
    for n in 600..610 {
        phone.edit(case, &splice(n));
        phone.wait_acknowledged(case).await;
    }
    let storage =
        SqliteStorage::open(SqliteConfig::new(server.data_dir())).expect("open the store");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let loaded = storage.load_document(&case).expect("load").expect("stored");
        if loaded.snapshot.is_some() && !loaded.changes.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot with a tail: {loaded:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(storage);
    let heads = phone.device.doc(&case).expect("open").get_heads();
    phone.close().await;

    let server = server.restart().await;
    assert_eq!(server.metric("casesync_documents_loaded").await, 0.0);
    let mut tablet = EngineDevice::connect(&server, "olena", "tablet").await;
    tablet.find(case).await;
    assert_eq!(tablet.device.doc(&case).expect("open").get_heads(), heads);
    assert_eq!(server.metric("casesync_cold_replies_total").await, 1.0);

    // The sync goes on through the loaded case: the tablet's edit is
    // acknowledged, and a phone that reconnects gets it.
    tablet.edit(case, &splice(1000));
    tablet.wait_acknowledged(case).await;
    let after = tablet.device.doc(&case).expect("open").get_heads();
    assert_ne!(after, heads);
    let mut laptop = EngineDevice::connect(&server, "olena", "laptop").await;
    laptop.find(case).await;
    laptop
        .pump_until("the tablet's edit", |d| {
            d.doc(&case).is_some_and(|am| am.get_heads() == after)
        })
        .await;
    assert_eq!(laptop.view(case), tablet.view(case));
    // The laptop found the case loaded: answered by the case itself.
    assert_eq!(server.metric("casesync_cold_replies_total").await, 1.0);
    assert_eq!(server.metric("casesync_rejected_inputs_total").await, 0.0);
}

/// A graceful shutdown writes a snapshot of every case whose change log
/// grew since its last one, so the next start loads no tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_leaves_a_snapshot_of_every_change() {
    let server = TestServer::start().await;
    let olena = server.token("olena", "phone");
    let case = server.new_case(&olena).await;
    let mut phone = EngineDevice::connect(&server, "olena", "phone").await;
    phone.find(case).await;
    for n in 0..20 {
        phone.edit(
            case,
            &Edit::SpliceText {
                field: CIRCUMSTANCES,
                pos: 0,
                delete: 0,
                insert: format!("[{n}]"),
            },
        );
        phone.wait_acknowledged(case).await;
    }
    let heads = phone.device.doc(&case).expect("open").get_heads();
    {
        let storage =
            SqliteStorage::open(SqliteConfig::new(server.data_dir())).expect("open the store");
        let loaded = storage.load_document(&case).expect("load").expect("stored");
        assert!(
            loaded.changes.len() >= 20,
            "before the shutdown the edits are in the log only: {loaded:?}"
        );
    }
    phone.close().await;
    let mut server = server.restart().await;
    server.shutdown().await;
    let storage =
        SqliteStorage::open(SqliteConfig::new(server.data_dir())).expect("open the store");
    let loaded = storage.load_document(&case).expect("load").expect("stored");
    assert!(
        loaded.changes.is_empty(),
        "a tail after shutdown: {loaded:?}"
    );
    let snapshot = loaded.snapshot.expect("a snapshot");
    let doc = sync_core::guard::load_document(&snapshot, &sync_core::guard::Limits::default())
        .expect("the snapshot loads");
    assert_eq!(doc.get_heads(), heads);
}
