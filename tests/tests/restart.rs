//! Restart: the operator stops the server gracefully (SIGTERM), starts it
//! again on the same data directory, and nothing is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use casesync_tests::{wait, ServerOptions, TestDevice, TestServer};
use common::{hex_heads, sorted, splice, PATIENCE};
use sync_core::model::{DisappearanceField, Field};

const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);
/// The close code of a server going away (RFC 6455).
const GOING_AWAY: u16 = 1001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_everything() {
    let mut server = TestServer::start(ServerOptions::default()).await.unwrap();
    let owner = server.token("olena", "web").await.unwrap();
    let case = server
        .api()
        .unwrap()
        .create_case(&owner, &[("disappearance.circumstances", "Start.")])
        .await
        .unwrap();
    let doc = case.id;

    // Step 1: Olena's phone writes five lines and sees them stored.
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    phone.open(doc);
    phone.connect(&server).await.unwrap();
    phone
        .wait_case(&doc, PATIENCE, "the case from the server", |c| {
            c.disappearance.circumstances.is_some()
        })
        .await
        .unwrap();
    let mut made = BTreeSet::new();
    for i in 0..5 {
        let len = phone
            .read_case(&doc)
            .unwrap()
            .disappearance
            .circumstances
            .unwrap()
            .chars()
            .count();
        made.insert(
            phone
                .edit(&doc, &splice(CIRCUMSTANCES, len, &format!(" Line {i}.")))
                .unwrap()
                .unwrap(),
        );
    }
    phone.wait_acknowledged(&doc, PATIENCE).await.unwrap();

    // Step 2: five more lines, and the operator stops the server at once,
    // without waiting for them.
    for i in 5..10 {
        let len = phone
            .read_case(&doc)
            .unwrap()
            .disappearance
            .circumstances
            .unwrap()
            .chars()
            .count();
        made.insert(
            phone
                .edit(&doc, &splice(CIRCUMSTANCES, len, &format!(" Line {i}.")))
                .unwrap()
                .unwrap(),
        );
    }
    let status = server.stop().await.unwrap();
    assert!(
        status.success(),
        "SIGTERM exits cleanly: {status:?}\n{}",
        server.log_tail(20)
    );

    // Step 3: the phone was told the server is going away.
    phone.wait_offline(PATIENCE).await.unwrap();
    let close = phone.closes().last().cloned().unwrap();
    assert_eq!(close.code, Some(GOING_AWAY), "{close:?}");
    let acked = phone.acked_heads(&doc);
    assert!(!acked.is_empty());

    // Step 4: the stopped database is consistent.
    let report = server.check().await.unwrap();
    assert!(report.starts_with("ok"), "{report}");

    // Step 5: the server starts again on the same data directory, and a
    // fresh device (the home computer) gets everything that was
    // acknowledged, before the phone is back.
    server.restart().await.unwrap();
    let mut home = TestDevice::minted(&server, "olena", "home-pc")
        .await
        .unwrap();
    home.open(doc);
    home.connect(&server).await.unwrap();
    let api = server.api().unwrap();
    let stored = api.get_case(&owner, &doc).await.unwrap();
    home.wait_until(PATIENCE, "the stored case", |s| {
        hex_heads(&s.heads(&doc)) == sorted(stored.heads.clone())
    })
    .await
    .unwrap();
    let home_doc = home.doc(&doc).unwrap();
    for h in &acked {
        assert!(
            home_doc.get_change_meta_by_hash(h).is_some(),
            "acknowledged {h} survived the restart"
        );
    }

    // Step 6: the phone reconnects and sends whatever was not stored; both
    // converge on all ten lines.
    phone.connect(&server).await.unwrap();
    wait::until_converged(&[&phone, &home], &doc, PATIENCE)
        .await
        .unwrap();
    let home_doc = home.doc(&doc).unwrap();
    for h in &made {
        assert!(
            home_doc.get_change_meta_by_hash(h).is_some(),
            "{h} reached the home computer"
        );
    }
    let text = home
        .read_case(&doc)
        .unwrap()
        .disappearance
        .circumstances
        .unwrap();
    let expected: String = std::iter::once("Start.".to_owned())
        .chain((0..10).map(|i| format!(" Line {i}.")))
        .collect();
    assert_eq!(text, expected);
    let view = api.get_case(&owner, &doc).await.unwrap();
    assert_eq!(sorted(view.heads), hex_heads(&home.heads(&doc)));

    // Step 7: a second graceful stop and check, with everything in.
    phone.disconnect().await;
    home.disconnect().await;
    assert!(server.stop().await.unwrap().success());
    assert!(server.check().await.unwrap().starts_with("ok"));
}
