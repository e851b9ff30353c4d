//! Storage faults (issue 8): the N-th write transaction fails with "disk
//! full" or an I/O error, for N = 1…4. The change it carried is not
//! acknowledged, nothing panics, the device retries after the fault clears,
//! and in the end every edit is on the server, with nothing lost.

mod support;

use casesync_server::store::faults::Fault;
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field};

const CIRCUMSTANCES: Field = Field::Disappearance(DisappearanceField::Circumstances);

fn append(device: &mut EngineDevice, doc: DocumentId, line: &str) {
    let len = device.view(doc)["disappearance"]["circumstances"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .count();
    device.edit(
        doc,
        &Edit::SpliceText {
            field: CIRCUMSTANCES,
            pos: len,
            delete: 0,
            insert: line.to_owned(),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_not_acknowledged_and_the_retry_loses_nothing() {
    let (server, faulty) = TestServer::start_faulty().await;
    let olena = server.token("olena", "phone");
    let case = server.new_case(&olena).await;
    let mut phone = EngineDevice::connect(&server, "olena", "phone").await;
    phone.find(case).await;

    let mut expected = String::new();
    for n in 1..=4u64 {
        let fault = if n % 2 == 1 {
            Fault::DiskFull
        } else {
            Fault::Io
        };
        // The n-th write from now fails: the first n - 1 edits are stored
        // and acknowledged, the n-th is not.
        faulty.fail_writes(n, 1, fault);
        let failed_before = faulty.failed();
        for i in 1..=n {
            let line = format!("[{n}.{i}]");
            append(&mut phone, case, &line);
            expected.push_str(&line);
            if i < n {
                phone.wait_acknowledged(case).await;
            }
        }
        // The failed write closes the document's sessions; the edit stays
        // unacknowledged on the phone.
        let code = phone.wait_closed().await;
        assert_eq!(code, Some(1001), "round {n}: closed as 'reconnect'");
        assert_eq!(
            faulty.failed(),
            failed_before + 1,
            "round {n}: one write failed"
        );
        assert!(
            phone.device.unacknowledged(&case) > 0,
            "round {n}: not acknowledged"
        );

        // The disk works again: the phone reconnects and re-sends.
        faulty.clear();
        phone.reconnect(&server).await;
        phone.wait_acknowledged(case).await;
        let on_server = server.get_case(&olena, &case.to_url()).await;
        assert_eq!(
            on_server["case"]["disappearance"]["circumstances"].as_str(),
            Some(expected.as_str()),
            "round {n}: nothing lost"
        );
    }
    assert!(server.metric("casesync_document_actor_panics_total").await == 0.0);

    // And after a restart, it is all still there.
    let server = server.restart().await;
    let on_server = server.get_case(&olena, &case.to_url()).await;
    assert_eq!(
        on_server["case"]["disappearance"]["circumstances"].as_str(),
        Some(expected.as_str())
    );
}
