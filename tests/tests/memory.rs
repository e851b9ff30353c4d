//! Memory: a case nobody uses is unloaded, so the server's memory follows
//! the cases in use rather than every case touched since boot; the next
//! request loads it again, with nothing missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use casesync_tests::{wait, Api, ServerOptions, TestDevice, TestServer};
use common::{set, PATIENCE};
use sync_core::model::{Field, MilitaryField};

const UNIT: Field = Field::Military(MilitaryField::Unit);

async fn loaded(api: &Api) -> f64 {
    api.metric("casesync_documents_loaded").await.unwrap()
}

async fn until_loaded(api: &Api, n: f64, what: &str) {
    wait::wait_for_async(PATIENCE, what, || async { loaded(api).await == n })
        .await
        .unwrap_or_else(|e| panic!("{e}: {} loaded", n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cases_are_unloaded_and_reload_intact() {
    let server = TestServer::start(ServerOptions {
        idle_unload_secs: Some(1),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let api = server.api().unwrap();
    let owner = server.token("olena", "web").await.unwrap();

    // Step 1: three cases. Creating a case writes it to the store without
    // keeping it in memory.
    let mut cases = Vec::new();
    for _ in 0..3 {
        cases.push(api.create_case(&owner, &[]).await.unwrap().id);
    }
    assert_eq!(loaded(&api).await, 0.0);

    // Step 2: Olena's phone opens all three and names a unit in each; the
    // home computer opens only the first.
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    let mut home = TestDevice::minted(&server, "olena", "home-pc")
        .await
        .unwrap();
    for doc in &cases {
        phone.open(*doc);
    }
    home.open(cases[0]);
    phone.connect(&server).await.unwrap();
    home.connect(&server).await.unwrap();
    for (i, doc) in cases.iter().enumerate() {
        phone
            .wait_until(PATIENCE, "the case", |s| !s.heads(doc).is_empty())
            .await
            .unwrap();
        phone.edit(doc, &set(UNIT, &format!("unit {i}"))).unwrap();
    }
    for doc in &cases {
        phone.wait_acknowledged(doc, PATIENCE).await.unwrap();
    }
    wait::until_converged(&[&phone, &home], &cases[0], PATIENCE)
        .await
        .unwrap();
    assert_eq!(loaded(&api).await, 3.0);
    let unloaded_before = api
        .metric("casesync_documents_unloaded_total")
        .await
        .unwrap();

    // Step 3: the phone goes offline. The two cases only it had open are
    // unloaded once idle; the one the home computer still has open stays.
    phone.disconnect().await;
    until_loaded(&api, 1.0, "the two idle cases to unload").await;
    home.edit(&cases[0], &set(UNIT, "unit 0, still in use"))
        .unwrap();
    home.wait_acknowledged(&cases[0], PATIENCE).await.unwrap();
    assert_eq!(loaded(&api).await, 1.0);

    // Step 4: the home computer goes offline too: nothing stays loaded.
    home.disconnect().await;
    until_loaded(&api, 0.0, "every case to unload").await;
    let unloaded = api
        .metric("casesync_documents_unloaded_total")
        .await
        .unwrap();
    assert_eq!(unloaded - unloaded_before, 3.0, "each unload is counted");

    // Step 5: reading a case over HTTP loads it again, with its data; idle,
    // it unloads again (one more unload counted).
    let view = api.get_case(&owner, &cases[1]).await.unwrap();
    assert_eq!(
        view.get("military.unit").and_then(|v| v.as_str()),
        Some("unit 1")
    );
    wait::wait_for_async(PATIENCE, "the read case to unload again", || async {
        loaded(&api).await == 0.0
            && api
                .metric("casesync_documents_unloaded_total")
                .await
                .unwrap()
                == unloaded + 1.0
    })
    .await
    .unwrap();

    // Step 6: the phone comes back and a new tablet opens the third case:
    // both get everything, from the reloaded documents.
    let mut tablet = TestDevice::minted(&server, "olena", "tablet")
        .await
        .unwrap();
    tablet.open(cases[2]);
    tablet.open(cases[0]);
    tablet.connect(&server).await.unwrap();
    phone.connect(&server).await.unwrap();
    for doc in [&cases[0], &cases[2]] {
        wait::until_converged(&[&phone, &tablet], doc, PATIENCE)
            .await
            .unwrap();
    }
    let third = tablet.read_case(&cases[2]).unwrap();
    assert_eq!(
        third.military.unit.value().map(String::as_str),
        Some("unit 2")
    );
    let first = tablet.read_case(&cases[0]).unwrap();
    assert_eq!(
        first.military.unit.value().map(String::as_str),
        Some("unit 0, still in use")
    );
    assert_eq!(loaded(&api).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_an_unload_are_never_lost() {
    // Unload as soon as a case is unused: every read ends with the actor
    // going idle, so requests keep arriving just as it stops. Each must be
    // served, by that actor or by a fresh one, never dropped.
    let server = TestServer::start(ServerOptions {
        idle_unload_secs: Some(0),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let api = server.api().unwrap();
    let owner = server.token("olena", "web").await.unwrap();
    let doc = api
        .create_case(&owner, &[("military.unit", "93rd brigade")])
        .await
        .unwrap()
        .id;

    // Step 1: four readers, 500 reads each, all at once.
    let path = format!("/api/cases/{}", doc.to_url());
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (api, owner, path) = (api.clone(), owner.clone(), path.clone());
        readers.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..500 {
                let (status, body) = api.get_json(&path, &owner).await.unwrap();
                if status != 200 {
                    refused.push((status, body));
                }
            }
            refused
        }));
    }

    // Step 2: meanwhile a phone reconnects again and again, opening the
    // case on each new connection, and each time writes to it: the edit is
    // acknowledged (never `doc-unavailable`, never ignored).
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    phone.open(doc);
    for round in 0..20 {
        phone.connect(&server).await.unwrap();
        phone
            .wait_case(&doc, PATIENCE, "the case", |_| true)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        phone
            .edit(&doc, &set(UNIT, &format!("round {round}")))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        phone
            .wait_acknowledged(&doc, PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            !phone.inspect(|s| s.is_unavailable(&doc)),
            "round {round}: doc-unavailable for a case the phone may see"
        );
        phone.disconnect().await;
    }
    for reader in readers {
        let refused = reader.await.unwrap();
        assert!(refused.is_empty(), "reads refused: {refused:?}");
    }
}
