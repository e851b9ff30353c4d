//! Panic isolation (issue 8): a test-only hook makes one case's actor panic
//! on a marker change. That case's sessions close cleanly (1001, "reconnect"),
//! the case reloads on the next request, and another case's device keeps
//! its socket and keeps getting its edits acknowledged throughout.

mod support;

use std::time::{Duration, Instant};

use automerge::transaction::{CommitOptions, Transactable};
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field};

const MARKER: &str = "PANIC-MARKER";

fn line(device: &mut EngineDevice, doc: DocumentId, text: &str) {
    let len = device.view(doc)["disappearance"]["circumstances"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .count();
    device.edit(
        doc,
        &Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos: len,
            delete: 0,
            insert: text.to_owned(),
        },
    );
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let i = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    samples.get(i).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_case_closes_only_its_own_sessions_and_reloads() {
    let mut server = TestServer::start_with(|c| c.test_panic_marker = Some(MARKER.into())).await;
    let olena = server.token("olena", "phone");
    let ivan = server.token("ivan", "phone");
    let a = DocumentId::parse_url_or_id(&server.create_case(&olena, serde_json::json!({})).await)
        .expect("case a");
    let b = DocumentId::parse_url_or_id(&server.create_case(&ivan, serde_json::json!({})).await)
        .expect("case b");
    let mut a_phone = EngineDevice::connect(&server, "olena", "phone").await;
    let mut a_tablet = EngineDevice::connect(&server, "olena", "tablet").await;
    let mut b_phone = EngineDevice::connect(&server, "ivan", "phone").await;
    a_phone.find(a).await;
    a_tablet.find(a).await;
    b_phone.find(b).await;

    // Ivan's phone edits case B steadily; each edit's acknowledgement time
    // is recorded (reported, not asserted: tests check correctness).
    let mut before = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        line(&mut b_phone, b, &format!("[b{i}]"));
        b_phone.wait_acknowledged(b).await;
        before.push(t.elapsed());
    }

    // Step 1: a marker change reaches case A's actor, which panics.
    let now = casesync_server::auth::unix_now();
    a_phone
        .device
        .edit(&a, |doc| {
            doc.transact_with::<_, _, automerge::AutomergeError, _>(
                |_| CommitOptions::default().with_message(MARKER).with_time(now),
                |tx| tx.put(automerge::ROOT, "marker", 1),
            )
            .map(drop)
            .map_err(|failure| failure.error)
        })
        .expect("open document")
        .expect("marker change");
    assert_eq!(
        a_phone.wait_closed().await,
        Some(1001),
        "A's sender: reconnect"
    );
    assert_eq!(
        a_tablet.wait_closed().await,
        Some(1001),
        "A's other session: reconnect"
    );

    // Step 2: case B never noticed: same socket, edits still acknowledged.
    let mut during = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        line(&mut b_phone, b, &format!("[b-after{i}]"));
        b_phone.wait_acknowledged(b).await;
        during.push(t.elapsed());
    }
    println!(
        "case B acknowledgement p99: {:?} before, {:?} after case A's panic",
        p99(before),
        p99(during)
    );
    assert_eq!(
        server.metric("casesync_document_actor_panics_total").await,
        1.0
    );

    // Step 3: case A reloads on the next request, from what was stored
    // (the marker change never was), and works.
    a_tablet.reconnect(&server).await;
    a_tablet.find(a).await;
    line(&mut a_tablet, a, "after the reload");
    a_tablet.wait_acknowledged(a).await;
    let case_a = server.get_case(&olena, &a.to_url()).await;
    assert_eq!(
        case_a["case"]["disappearance"]["circumstances"].as_str(),
        Some("after the reload")
    );
    assert!(case_a["case"].get("marker").is_none());
    let case_b = server.get_case(&ivan, &b.to_url()).await;
    let text = case_b["case"]["disappearance"]["circumstances"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.starts_with("[b0]") && text.ends_with("[b-after19]"),
        "{text}"
    );
    server.shutdown().await;
}
