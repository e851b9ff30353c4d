//! Memory bounds (issue 8): no single message, accepted or refused, grows
//! the server's resident memory by more than 64 MiB. The server runs under
//! a hard address-space limit (`prlimit --as`), an attacker sends every
//! hostile seed of the fuzz corpus (DEFLATE bombs, run-length op bombs,
//! absurd Bloom filters and counts, CBOR nests) one by one, the peak
//! resident set (`VmHWM`) is read after each, and a relative's phone keeps
//! syncing throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use casesync_tests::{wait, RawSocket, Received, ServerOptions, TestDevice, TestServer, WsAuth};
use common::{splice, PATIENCE};
use sync_core::ids::PeerId;
use sync_core::model::{DisappearanceField, Field};
use sync_core::protocol::Message;

const MIB: u64 = 1024 * 1024;
/// The bound on what one message may cost.
const PER_MESSAGE: u64 = 64 * MIB;
/// The server's address space: generous for its threads' reservations,
/// small enough that a gigabyte-sized allocation fails.
const ADDRESS_SPACE: u64 = 3 * 1024 * MIB;

fn hostile(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hostile-"))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Waits until the server has answered `raw` or closed it: whatever the
/// message did, it is done with it.
async fn settle(raw: &mut RawSocket) {
    let _ = raw.recv(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_message_grows_the_server_by_more_than_64_mib() {
    let server = TestServer::start(ServerOptions {
        address_space_limit: Some(ADDRESS_SPACE),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let api = server.api().unwrap();
    let ws = server.ws_url().unwrap();

    // A relative's phone, syncing a case the whole time.
    let mut phone = TestDevice::minted(&server, "olena", "phone").await.unwrap();
    let case = api.create_case(phone.token(), &[]).await.unwrap().id;
    phone.connect(&server).await.unwrap();
    phone.open(case);
    phone
        .wait_until(PATIENCE, "the case", |s| !s.heads(&case).is_empty())
        .await
        .unwrap();

    // The attacker's own case, so its sync messages reach the document.
    let mallory = server.token("mallory", "phone").await.unwrap();
    let target = api.create_case(&mallory, &[]).await.unwrap().id;
    let me: PeerId = "user:mallory:phone".parse().unwrap();

    let mut bombs: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, data) in hostile("sync_into_document") {
        bombs.push((name, data));
    }
    let frames = hostile("frame_to_message");
    assert!(
        bombs.len() >= 10 && frames.len() >= 5,
        "the corpus is there"
    );

    let mut worst = (0u64, String::new());
    let mut lines = 0;
    let all = bombs
        .iter()
        .map(|(n, d)| (n.clone(), d.clone(), true))
        .chain(frames.iter().map(|(n, d)| (n.clone(), d.clone(), false)));
    for (name, bytes, as_sync) in all {
        let before = server.status_kib("VmHWM").unwrap() * 1024;
        let mut raw = RawSocket::connect(&ws, &WsAuth::Bearer(mallory.clone()))
            .await
            .unwrap();
        let server_peer = raw.join_ok(&me, PATIENCE).await.unwrap();
        if as_sync {
            raw.send(&Message::Sync {
                sender_id: me.clone(),
                target_id: server_peer,
                document_id: target,
                data: bytes,
            })
            .await
            .unwrap();
        } else {
            raw.send_binary(bytes).await.unwrap();
        }
        settle(&mut raw).await;
        let after = server.status_kib("VmHWM").expect("the server is alive") * 1024;
        let grew = after.saturating_sub(before);
        assert!(
            grew <= PER_MESSAGE,
            "{name} grew the server's peak memory by {} MiB",
            grew / MIB
        );
        if grew >= worst.0 {
            worst = (grew, name.clone());
        }

        // The phone is not affected: a line written now is acknowledged.
        let len = phone
            .read_case(&case)
            .unwrap()
            .disappearance
            .circumstances
            .unwrap_or_default()
            .chars()
            .count();
        phone
            .edit(
                &case,
                &splice(
                    Field::Disappearance(DisappearanceField::Circumstances),
                    len,
                    "+",
                ),
            )
            .unwrap();
        lines += 1;
        phone.wait_acknowledged(&case, PATIENCE).await.unwrap();
        drop(raw);
    }
    println!(
        "largest peak growth: {} KiB ({}); peak resident set {} MiB",
        worst.0 / 1024,
        worst.1,
        server.status_kib("VmHWM").unwrap() / 1024
    );
    assert!(phone.is_online(), "the phone kept its socket");
    assert!(phone.closes().is_empty(), "{:?}", phone.closes());
    wait::until_acknowledged(&[&phone], &case, PATIENCE)
        .await
        .unwrap();
    let view = api.get_case(phone.token(), &case).await.unwrap();
    assert_eq!(
        view.get("disappearance.circumstances")
            .and_then(|v| v.as_str()),
        Some("+".repeat(lines).as_str())
    );
    // Nothing was refused in a way that left Mallory's case broken either:
    // it still loads.
    let (status, _) = api
        .get_json(&format!("/api/cases/{}", target.to_url()), &mallory)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(matches!(
        RawSocket::connect(&ws, &WsAuth::Bearer(mallory.clone()))
            .await
            .unwrap()
            .join(&me, PATIENCE)
            .await
            .unwrap(),
        Received::Message(Message::Peer { .. })
    ));
}
