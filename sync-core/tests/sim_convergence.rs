//! Property tests on the simulated network: random offline edits on several
//! devices, random disconnects, reconnects, interleavings and server crashes.
//! Every run must converge with nothing lost and nothing acknowledged before
//! it was durable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use automerge::Automerge;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim::{doc_id, random_text, Sim};
use sync_core::model::{
    self, CaseInit, Collection, DisappearanceField, Edit, Field, FieldValue, ItemField, ItemId,
    ItemRef, MilitaryField, Status, TimelineField,
};

/// The server-created template: every container exists once, before any
/// device, exactly as `POST /api/cases` makes it.
fn template() -> Automerge {
    // A fixed actor, so that a seed replays exactly.
    let mut doc = Automerge::new().with_actor(automerge::ActorId::from([0xAAu8; 16]));
    model::create_case(
        &mut doc,
        &CaseInit {
            created_by: "server".into(),
            coordination: None,
        },
        0,
    )
    .unwrap();
    doc
}

/// One random edit through the case model, as a relative's phone makes it.
fn random_edit(rng: &mut ChaCha8Rng, doc: &mut Automerge, who: &str) {
    let case = model::read_case(doc).unwrap();
    let text = random_text(rng, 6);
    let edit = match rng.random_range(0..5) {
        0 => {
            let fields = [
                MilitaryField::Unit,
                MilitaryField::Rank,
                MilitaryField::CallSign,
            ];
            Edit::SetField {
                field: Field::Military(fields[rng.random_range(0..fields.len())]),
                value: FieldValue::Str(text),
            }
        }
        1 => {
            let len = case
                .disappearance
                .circumstances
                .as_deref()
                .map_or(0, |t| t.chars().count());
            let pos = rng.random_range(0..=len);
            let delete = rng.random_range(0..=(len - pos).min(2));
            Edit::SpliceText {
                field: Field::Disappearance(DisappearanceField::Circumstances),
                pos,
                delete,
                insert: text,
            }
        }
        2 => Edit::AddItem {
            item: ItemRef::new(
                Collection::Timeline,
                ItemId::new(format!("t{:x}", rng.random::<u64>())).unwrap(),
            ),
            values: vec![(
                ItemField::Timeline(TimelineField::Title),
                FieldValue::Str(text),
            )],
        },
        3 => match case.timeline.keys().next() {
            Some(id) => Edit::DeleteItem {
                item: ItemRef::new(Collection::Timeline, id.clone()),
            },
            None => return,
        },
        _ => Edit::AddStatusClaim {
            id: ItemId::new(format!("c{:x}", rng.random::<u64>())).unwrap(),
            status: if rng.random() {
                Status::Captured
            } else {
                Status::Killed
            },
            claimed_by: "comrade".into(),
            as_of: None,
            statement: text,
            sources: vec![],
        },
    };
    model::apply_edit(doc, &edit, who, 1_700_000_000_000).unwrap();
}

fn run(seed: u64, n_devices: usize, n_docs: u8, actions: usize) -> Sim<ChaCha8Rng> {
    let rng = ChaCha8Rng::seed_from_u64(seed);
    let docs = (1..=n_docs).map(|n| (doc_id(n), template())).collect();
    let mut sim = Sim::new(rng, n_devices, docs);
    // Every relative opens the case once while online.
    for i in 0..n_devices {
        sim.go_online(i);
    }
    sim.run_until_quiescent(10_000);
    for _ in 0..actions {
        let i = sim.rng.random_range(0..n_devices);
        match sim.rng.random_range(0..100) {
            0..=34 => {
                let doc = sim.rng.random_range(0..n_docs as usize);
                let mut edit_rng = ChaCha8Rng::seed_from_u64(sim.rng.random());
                sim.edit(i, doc, |d| random_edit(&mut edit_rng, d, "relative"));
            }
            35..=44 => sim.go_offline(i),
            45..=54 => sim.go_online(i),
            55..=56 => {
                // Power cut: devices lose their sockets too.
                for j in 0..n_devices {
                    sim.go_offline(j);
                }
                sim.server.crash();
            }
            _ => {
                sim.step_network();
            }
        }
    }
    sim.heal_and_check(100_000);
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_offline_edits_converge_with_nothing_lost(
        seed in any::<u64>(),
        n_devices in 2usize..5,
        n_docs in 1u8..3,
        actions in 20usize..200,
    ) {
        // The seed is in the failure message; rerun with it to replay.
        let sim = run(seed, n_devices, n_docs, actions);
        prop_assert!(sim.devices.iter().all(|d| d.online));
    }
}

#[test]
fn three_offline_devices_reconnecting_at_once_converge() {
    // Step 1: three relatives open the case online.
    let rng = ChaCha8Rng::seed_from_u64(7);
    let mut sim = Sim::new(rng, 3, vec![(doc_id(1), template())]);
    for i in 0..3 {
        sim.go_online(i);
    }
    sim.run_until_quiescent(10_000);
    // Step 2: all go offline and each edits a lot.
    for i in 0..3 {
        sim.go_offline(i);
    }
    for round in 0..20 {
        for i in 0..3 {
            let mut edit_rng = ChaCha8Rng::seed_from_u64(round * 10 + i as u64);
            sim.edit(i, 0, |d| random_edit(&mut edit_rng, d, "relative"));
        }
    }
    assert!(sim.devices.iter().all(|d| d.made.len() >= 10));
    // Step 3: they reconnect at the same moment and converge.
    sim.heal_and_check(100_000);
    // The server paced the devices (held messages until they answered) on
    // the way: the convergence above holds with pacing on.
    assert!(sim.paced_steps > 0);
    let doc = sim.server.doc(&doc_id(1));
    let total: usize = sim.devices.iter().map(|d| d.made.len()).sum();
    assert_eq!(
        doc.get_changes(&[]).len(),
        total + 1,
        "template + every edit"
    );
}

#[test]
fn a_crash_loses_only_unacknowledged_changes_which_devices_resend() {
    let rng = ChaCha8Rng::seed_from_u64(11);
    let mut sim = Sim::new(rng, 1, vec![(doc_id(1), template())]);
    sim.go_online(0);
    sim.run_until_quiescent(10_000);
    let mut edit_rng = ChaCha8Rng::seed_from_u64(1);
    sim.edit(0, 0, |d| random_edit(&mut edit_rng, d, "relative"));
    // Deliver the device's frames to the server but never fsync.
    for _ in 0..10 {
        sim.pump_only_uplink(0);
    }
    let h = *sim.devices[0].made.iter().next().unwrap();
    assert!(!sim.server.is_durable(&doc_id(1), &h));
    assert_eq!(sim.devices[0].engine.unacknowledged(&doc_id(1)), 1);
    sim.go_offline(0);
    sim.server.crash();
    // The device still counts it unacknowledged and resends it.
    assert_eq!(sim.devices[0].engine.unacknowledged(&doc_id(1)), 1);
    sim.heal_and_check(10_000);
    assert!(sim.server.is_durable(&doc_id(1), &h));
}
