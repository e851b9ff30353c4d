//! Rate limits (issue 4): a device that floods the server with messages or
//! bytes gets a clear error and is closed (the HTTP fallback answers 429),
//! and another user syncing at the same time is not affected.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::{TestServer, WAIT};
use sync_core::ids::{DocumentId, PeerId};
use sync_core::protocol::{self, Message};
use tokio_tungstenite::tungstenite::Message as Ws;

fn join(peer: &PeerId) -> Vec<u8> {
    protocol::encode(&Message::Join {
        sender_id: peer.clone(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    })
}

fn request(peer: &PeerId, doc: DocumentId) -> Vec<u8> {
    let empty = automerge::Automerge::new();
    let mut state = automerge::sync::State::new();
    let data = automerge::sync::SyncDoc::generate_sync_message(&empty, &mut state)
        .map(|m| m.encode())
        .unwrap_or_default();
    protocol::encode(&Message::Request {
        sender_id: peer.clone(),
        target_id: "server".parse().expect("peer id"),
        document_id: doc,
        data,
    })
}

/// Everything the server sends until the socket ends: decoded messages and
/// the close frame.
async fn drain(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (Vec<Message>, Option<(u16, String)>) {
    let mut messages = Vec::new();
    let mut close = None;
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = ws.next().await {
            match frame {
                Ws::Binary(b) => {
                    if let Ok(m) = protocol::decode(&b) {
                        messages.push(m);
                    }
                }
                Ws::Close(f) => {
                    close = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    break;
                }
                _ => {}
            }
        }
    })
    .await;
    (messages, close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_device_is_closed_and_another_user_syncs_on() {
    let mut server = TestServer::start_with(|c| {
        c.rate.conn_messages_per_sec = 20;
        c.rate.user_messages_per_sec = 30;
        c.rate.burst_secs = 1;
    })
    .await;
    let mallory = server.token("mallory", "phone");
    let olena = server.token("olena", "phone");
    let case_url = server.create_case(&olena, serde_json::json!({})).await;
    let case = DocumentId::parse_url_or_id(&case_url).expect("case id");

    // Olena's phone is connected and has the case.
    let (mut good, _) = tokio_tungstenite::connect_async(server.ws_url(&olena))
        .await
        .expect("olena connects");
    let olena_peer: PeerId = "user:olena:phone".parse().expect("peer id");
    good.send(Ws::Binary(join(&olena_peer).into()))
        .await
        .expect("join");

    // Mallory floods: 500 requests as fast as the socket takes them.
    let (mut bad, _) = tokio_tungstenite::connect_async(server.ws_url(&mallory))
        .await
        .expect("mallory connects");
    let mallory_peer: PeerId = "user:mallory:phone".parse().expect("peer id");
    bad.send(Ws::Binary(join(&mallory_peer).into()))
        .await
        .expect("join");
    let flood = request(&mallory_peer, DocumentId::from_bytes([7; 16]));
    for _ in 0..500 {
        if bad.send(Ws::Binary(flood.clone().into())).await.is_err() {
            break;
        }
    }
    let (messages, close) = drain(&mut bad).await;
    assert!(
        messages
            .iter()
            .any(|m| matches!(m, Message::Error { message, .. } if message.contains("rate limit"))),
        "a clear error: {messages:?}"
    );
    let (code, reason) = close.expect("a close frame");
    assert_eq!(code, 1008);
    assert!(reason.contains("rate limit"), "{reason}");
    // The socket was cut off long before the 500 were through (the
    // budget is 20 at once plus 20 per second).
    let answered = messages
        .iter()
        .filter(|m| matches!(m, Message::DocUnavailable { .. }))
        .count();
    assert!(answered < 250, "{answered} answered");

    // Olena, meanwhile, syncs as usual.
    good.send(Ws::Binary(request(&olena_peer, case).into()))
        .await
        .expect("request");
    let got = tokio::time::timeout(WAIT, async {
        while let Some(Ok(frame)) = good.next().await {
            if let Ws::Binary(b) = frame {
                if let Ok(Message::Sync { document_id, .. }) = protocol::decode(&b) {
                    return document_id;
                }
            }
        }
        panic!("olena's socket ended");
    })
    .await
    .expect("olena's reply in time");
    assert_eq!(got, case);

    // Over HTTP, the same flood is answered 429.
    let mut body = Vec::new();
    for frame in std::iter::once(join(&mallory_peer)).chain(std::iter::repeat_n(flood, 100)) {
        body.extend(u32::try_from(frame.len()).expect("small").to_be_bytes());
        body.extend(frame);
    }
    let status = reqwest::Client::new()
        .post(format!("http://{}/sync/http", server.addr))
        .bearer_auth(&mallory)
        .body(body)
        .send()
        .await
        .expect("HTTP fallback answers")
        .status()
        .as_u16();
    assert_eq!(status, 429);
    assert!(server.metric("casesync_rejected_inputs_total").await >= 2.0);
    server.shutdown().await;
}
