//! Pacing (`DocsConfig::reply_wait`): once a device has been sent a sync
//! message with changes, a case sends it nothing more until it answers, or
//! until `reply_wait` has passed; then one message carries all that is
//! new. A device that reads slowly gets fewer, larger messages; a device
//! that never answers still hears of every change.

mod support;

use std::time::Duration;

use automerge::ChangeHash;
use rand::distr::{Alphanumeric, SampleString};
use rand::SeedableRng;
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{Edit, Field, FieldValue, MilitaryField};

fn unit(value: &str) -> Edit {
    Edit::SetField {
        field: Field::Military(MilitaryField::Unit),
        value: FieldValue::Str(value.into()),
    }
}

/// Reads frames from the server without answering until one changes the
/// tablet's copy of `case`; its heads then.
async fn next_news(tablet: &mut EngineDevice, case: DocumentId) -> Vec<ChangeHash> {
    let before = heads(tablet, case);
    loop {
        tablet
            .next_frame_unanswered(support::WAIT)
            .await
            .expect("the server sent the tablet the phone's changes");
        let now = heads(tablet, case);
        if now != before {
            return now;
        }
    }
}

fn heads(device: &EngineDevice, case: DocumentId) -> Vec<ChangeHash> {
    device.device.doc(&case).expect("open case").get_heads()
}

/// The phone makes an edit and waits for its acknowledgement; its heads.
async fn edit(phone: &mut EngineDevice, case: DocumentId, value: &str) -> Vec<ChangeHash> {
    phone.edit(case, &unit(value));
    phone.wait_acknowledged(case).await;
    heads(phone, case)
}

/// A case with a phone and a tablet of one user on it, both synced.
async fn phone_and_tablet(
    reply_wait: Duration,
) -> (TestServer, DocumentId, EngineDevice, EngineDevice) {
    let server = TestServer::start_with(|c| c.reply_wait = reply_wait).await;
    let (case, mut phone, mut tablet) = support::phone_and_tablet_on_a_new_case(&server).await;
    // Both have everything there is, and the tablet has answered it all.
    let now = edit(&mut phone, case, "set-up").await;
    tablet
        .pump_until("the tablet has the set-up edit", |d| {
            d.doc(&case).is_some_and(|am| am.get_heads() == now)
        })
        .await;
    (server, case, phone, tablet)
}

/// A wait far longer than any test: only answers release a device.
const NEVER: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_has_not_answered_gets_the_next_changes_together() {
    let (_server, case, mut phone, mut tablet) = phone_and_tablet(NEVER).await;

    // One edit: the tablet is sent it, and reads it, but does not answer.
    let first = edit(&mut phone, case, "72nd brigade").await;
    assert_eq!(next_news(&mut tablet, case).await, first);

    // Three more edits, each committed and acknowledged on its own:
    // unpaced, each went to the tablet in a message of its own.
    edit(&mut phone, case, "93rd brigade").await;
    edit(&mut phone, case, "3rd assault brigade").await;
    let last = edit(&mut phone, case, "47th brigade").await;
    // The tablet answers now (its answer to the first message), and the
    // next message that brings it anything brings all three.
    tablet
        .pump_until("nothing: only send the answer", |_| true)
        .await;
    assert_eq!(next_news(&mut tablet, case).await, last);
    assert_eq!(
        support::at(&tablet.view(case), "military.unit"),
        &serde_json::json!("47th brigade")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_never_answers_still_hears_of_new_changes() {
    // Short: the test waits for it once.
    let (_server, case, mut phone, mut tablet) = phone_and_tablet(Duration::from_millis(300)).await;
    let first = edit(&mut phone, case, "72nd brigade").await;
    assert_eq!(next_news(&mut tablet, case).await, first);
    // The tablet never answers; once `reply_wait` has passed, the server
    // stops waiting for it and sends the next edit anyway.
    let second = edit(&mut phone, case, "93rd brigade").await;
    assert_eq!(next_news(&mut tablet, case).await, second);
    assert_eq!(
        support::at(&tablet.view(case), "military.unit"),
        &serde_json::json!("93rd brigade")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_is_sent_each_change_as_it_comes() {
    let (_server, case, mut phone, mut tablet) = phone_and_tablet(NEVER).await;
    for n in 0..5 {
        let value = format!("unit {n}");
        let heads = edit(&mut phone, case, &value).await;
        tablet
            .pump_until("the tablet has the phone's edit", |d| {
                d.doc(&case).is_some_and(|am| am.get_heads() == heads)
            })
            .await;
        assert_eq!(
            support::at(&tablet.view(case), "military.unit"),
            &serde_json::json!(value)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_device_does_not_make_its_case_spin() {
    // A wait of a millisecond: the case sends the tablet, which reads
    // nothing from here on, every step, until the tablet's outbound
    // channel is nearly full and the case holds it back.
    let (server, case, mut phone, _tablet) = phone_and_tablet(Duration::from_millis(1)).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.metric("casesync_devices_held_back_total").await == 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tablet, reading nothing, was never held back"
        );
        for _ in 0..16 {
            phone.edit(case, &unit(&Alphanumeric.sample_string(&mut rng, 4000)));
        }
        phone.wait_acknowledged(case).await;
    }
    // Quiet now. The tablet stays held back (it is dropped only after
    // `idle_timeout`, 90 s), and its last wait has run out: the case
    // retries it every 20 ms. Before the fix the run-out wait stayed the
    // case's next deadline, already past, and the actor went round
    // without pause: over a million turns in three seconds.
    let before = server.metric("casesync_document_routes_total").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let routes = server.metric("casesync_document_routes_total").await - before;
    assert!(
        routes < 5_000.0,
        "{routes} routes in 2 quiet seconds: the case spins"
    );
}
