//! Live fan-out keeps flowing while a device edits faster than the disk
//! commits (issue 7's fan-out workload, as a correctness property).
//!
//! Nothing goes out while a change is not durable. If the document actor
//! applied every arriving sync message at once, a steady stream of edits
//! arriving faster than one commit would keep that gate closed for the
//! whole stream, and nobody would hear of any edit until the stream ended.
//! The actor holds such messages back until the gate has opened, so other
//! devices receive edits while the stream goes on, and nothing is lost.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field};

const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);
/// Each write transaction takes this much longer than the disk's own.
const SLOW_COMMIT: Duration = Duration::from_millis(40);
/// A new edit is sent this often: several arrive during each commit.
const EDIT_EVERY: Duration = Duration::from_millis(10);
const EDITS: usize = 80;

fn circumstances(device: &EngineDevice, doc: DocumentId) -> String {
    device.view(doc)["disappearance"]["circumstances"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_devices_hear_of_edits_while_a_fast_stream_of_them_goes_on() {
    let (server, faulty) = TestServer::start_faulty().await;
    let olena = server.token("olena", "phone");
    let (case, mut phone, mut tablet) = support::phone_and_tablet_on_a_new_case(&server).await;
    faulty.slow_writes(SLOW_COMMIT);

    // The tablet listens until it has seen the 21st edit; it reports
    // whether the phone was still sending then. (Before the fix it saw
    // nothing past the first commit until the stream had ended.)
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still_sending = sending.clone();
    let listener = tokio::spawn(async move {
        tablet
            .pump_until("the phone's 21st edit", |d| {
                d.doc(&case).is_some_and(|am| {
                    sync_core::view::to_json(am, None)["disappearance"]["circumstances"]
                        .as_str()
                        .is_some_and(|s| s.contains("[20]"))
                })
            })
            .await;
        let during = still_sending.load(std::sync::atomic::Ordering::SeqCst);
        (tablet, during)
    });

    let mut expected = String::new();
    for n in 0..EDITS {
        let line = format!("[{n}]");
        let pos = circumstances(&phone, case).chars().count();
        phone.edit(
            case,
            &Edit::SpliceText {
                field: CIRCUMSTANCES,
                pos,
                delete: 0,
                insert: line.clone(),
            },
        );
        expected.push_str(&line);
        // Send without waiting for the acknowledgement.
        phone.pump_until("nothing (send only)", |_| true).await;
        tokio::time::sleep(EDIT_EVERY).await;
    }
    sending.store(false, std::sync::atomic::Ordering::SeqCst);

    let (mut tablet, during) = listener.await.expect("the tablet's task");
    assert!(
        during,
        "the tablet heard of the 21st edit only after the phone's stream of {EDITS} edits had ended"
    );
    phone.wait_acknowledged(case).await;
    assert_eq!(circumstances(&phone, case), expected);
    tablet
        .pump_until("every edit of the phone", |d| {
            d.doc(&case).is_some_and(|am| {
                sync_core::view::to_json(am, None)["disappearance"]["circumstances"].as_str()
                    == Some(expected.as_str())
            })
        })
        .await;
    faulty.slow_writes(Duration::ZERO);
    let stored = server.get_case(&olena, &case.to_url()).await;
    assert_eq!(
        stored["case"]["disappearance"]["circumstances"].as_str(),
        Some(expected.as_str()),
        "every edit is stored"
    );
}
