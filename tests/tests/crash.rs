//! Crash: the server is killed with SIGKILL, again and again, at random
//! (seeded) moments while phones are syncing. Whatever a phone was told is
//! stored survives every crash, the database passes `casesync check` after
//! each one, and once the phones have re-sent what was not acknowledged,
//! nothing anyone typed is lost.
//!
//! `CASESYNC_CRASH_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use automerge::ChangeHash;
use casesync_tests::{wait, workload, ServerOptions, TestDevice, TestServer};
use common::{hex_heads, sorted, PATIENCE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::ids::DocumentId;
use tokio::time::Instant;

/// Crashes per run: at least 20, as the issue asks.
const CRASHES: usize = 24;
/// The longest a round of syncing lasts before the kill.
const MAX_ROUND_MS: u64 = 400;

fn seed() -> u64 {
    std::env::var("CASESYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_5eed)
}

/// Fetches every case with a fresh device, once the server has restarted
/// and before any phone is back, and returns the documents.
async fn audit(
    server: &TestServer,
    token: &str,
    owner: &str,
    docs: &[DocumentId],
) -> BTreeMap<DocumentId, automerge::Automerge> {
    let api = server.api().unwrap();
    let mut auditor = TestDevice::new("olena", "auditor", token.to_owned()).unwrap();
    for doc in docs {
        auditor.open(*doc);
    }
    auditor.connect(server).await.unwrap();
    let mut out = BTreeMap::new();
    for doc in docs {
        let stored = sorted(api.get_case(owner, doc).await.unwrap().heads);
        auditor
            .wait_until(PATIENCE, "the stored case", |s| {
                hex_heads(&s.heads(doc)) == stored
            })
            .await
            .unwrap();
        out.insert(*doc, auditor.doc(doc).unwrap());
    }
    auditor.disconnect().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_sync_loses_nothing_acknowledged() {
    let seed = seed();
    println!("CASESYNC_CRASH_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();

    // Step 1: two cases, three phones with both open, and an auditor.
    let owner = server.token("olena", "web").await.unwrap();
    let mut docs = Vec::new();
    for _ in 0..2 {
        docs.push(api.create_case(&owner, &[]).await.unwrap().id);
    }
    let auditor_token = server.token("olena", "auditor").await.unwrap();
    let mut phones = Vec::new();
    for name in ["phone", "mother-phone", "sister-phone"] {
        let phone = TestDevice::minted(&server, "olena", name).await.unwrap();
        for doc in &docs {
            phone.open(*doc);
        }
        phones.push(phone);
    }
    for phone in &mut phones {
        phone.connect(&server).await.unwrap();
    }
    for phone in &phones {
        phone
            .wait_until(PATIENCE, "both cases", |s| {
                docs.iter().all(|d| !s.heads(d).is_empty())
            })
            .await
            .unwrap();
    }
    // Every change each phone made, to check at the end that none is lost.
    let mut made: Vec<BTreeSet<ChangeHash>> = vec![BTreeSet::new(); phones.len()];
    let mut verified_acks = 0usize;
    let mut unacked_at_kill = 0usize;

    for round in 0..CRASHES {
        // Step 2: the phones (re)connect and edit while syncing, until the
        // kill, at a seeded moment: sometimes during the reconnect storm
        // itself, sometimes in the middle of a stream of edits.
        let round_ms = if rng.random_bool(0.2) {
            0
        } else {
            rng.random_range(0..MAX_ROUND_MS)
        };
        for phone in &mut phones {
            if !phone.inspect(|s| s.is_linked()) {
                phone.connect(&server).await.unwrap();
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(round_ms) {
            let p = rng.random_range(0..phones.len());
            let doc = docs[rng.random_range(0..docs.len())];
            let case = phones[p].read_case(&doc).unwrap();
            let edit = workload::random_edit(&mut rng, &case, &format!("p{p}")).unwrap();
            if let Some(hash) = phones[p].edit(&doc, &edit).unwrap() {
                made[p].insert(hash);
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
        }
        // Sometimes a phone leaves and comes back just before the kill, so
        // the sync state the server stores at a goodbye meets a crash too.
        if rng.random_bool(0.3) {
            let p = rng.random_range(0..phones.len());
            phones[p].disconnect().await;
            phones[p].connect(&server).await.unwrap();
        }
        // One more edit, sent but certainly not acknowledged yet.
        let p = rng.random_range(0..phones.len());
        let doc = docs[rng.random_range(0..docs.len())];
        let case = phones[p].read_case(&doc).unwrap();
        let edit = workload::random_edit(&mut rng, &case, &format!("p{p}")).unwrap();
        if let Some(hash) = phones[p].edit(&doc, &edit).unwrap() {
            made[p].insert(hash);
        }

        // Step 3: SIGKILL.
        server.kill().await.unwrap();
        for phone in &phones {
            phone.wait_offline(PATIENCE).await.unwrap();
        }
        // What each phone was told is stored, now that it has read every
        // frame the dead server managed to send.
        let acked: Vec<(DocumentId, Vec<ChangeHash>)> = phones
            .iter()
            .flat_map(|phone| {
                docs.iter()
                    .map(|doc| (*doc, phone.acked_heads(doc)))
                    .collect::<Vec<_>>()
            })
            .collect();
        unacked_at_kill += phones
            .iter()
            .flat_map(|phone| docs.iter().map(|doc| phone.unacknowledged(doc)))
            .sum::<usize>();

        // Step 4: the database left behind is consistent.
        let report = server.check().await.unwrap_or_else(|e| {
            panic!("round {round}: check failed: {e}\n{}", server.log_tail(30))
        });
        assert!(report.starts_with("ok"), "{report}");

        // Step 5: while the server is down, some phones keep editing.
        for (p, phone) in phones.iter().enumerate() {
            for _ in 0..rng.random_range(0..3) {
                let doc = docs[rng.random_range(0..docs.len())];
                let case = phone.read_case(&doc).unwrap();
                let edit = workload::random_edit(&mut rng, &case, &format!("p{p}")).unwrap();
                if let Some(hash) = phone.edit(&doc, &edit).unwrap() {
                    made[p].insert(hash);
                }
            }
        }

        // Step 6: restart; every acknowledged change is there.
        server.restart().await.unwrap();
        let stored = audit(&server, &auditor_token, &owner, &docs).await;
        for (doc, heads) in &acked {
            for h in heads {
                assert!(
                    stored[doc].get_change_meta_by_hash(h).is_some(),
                    "round {round} (seed {seed}): acknowledged change {h} of {doc} was lost"
                );
                verified_acks += 1;
            }
        }
    }

    // Step 7: the phones come back for good, re-send what was never
    // acknowledged, and converge.
    for phone in &mut phones {
        phone.connect(&server).await.unwrap();
    }
    let refs: Vec<&TestDevice> = phones.iter().collect();
    for doc in &docs {
        wait::until_converged(&refs, doc, PATIENCE).await.unwrap();
    }

    // Step 8: nothing anyone typed is lost: the server has every change.
    let stored = audit(&server, &auditor_token, &owner, &docs).await;
    let mut total = 0;
    for (p, hashes) in made.iter().enumerate() {
        for h in hashes {
            assert!(
                stored
                    .values()
                    .any(|d| d.get_change_meta_by_hash(h).is_some()),
                "seed {seed}: phone {p}'s change {h} was lost"
            );
            total += 1;
        }
    }
    for doc in &docs {
        assert_eq!(stored[doc].get_heads(), phones[0].heads(doc));
    }
    assert!(verified_acks > 0);
    println!(
        "{CRASHES} crashes, {total} changes made, {verified_acks} acknowledged heads checked, \
         {unacked_at_kill} changes unacknowledged at the kills"
    );

    for phone in &mut phones {
        phone.disconnect().await;
    }
    assert!(server.stop().await.unwrap().success());
    assert!(server.check().await.unwrap().starts_with("ok"));
    assert_eq!(server.starts(), CRASHES + 1);
}
