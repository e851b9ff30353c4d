//! Auth: forged, expired and malformed tokens are refused with 401 on every
//! HTTP route and on the WebSocket upgrade, before any protocol message; a
//! device that announces someone else's peer id is closed; a socket whose
//! token expires is closed.
//!
//! The tokens are crafted here, with the server's own development key (read
//! from `DATA_DIR/keys/dev-ed25519.pem`) where a valid signature is needed,
//! so each one is wrong in exactly one way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use casesync_tests::{upgrade_status, RawSocket, Received, ServerOptions, TestServer, WsAuth};
use common::forge::{unix_now, unsigned, Forge};
use common::PATIENCE;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sync_core::ids::PeerId;
use sync_core::protocol::Message;

const POLICY_VIOLATION: u16 = 1008;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_on_http_and_websocket() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let api = server.api().unwrap();
    let ws = server.ws_url().unwrap();
    let minted = server.token("olena", "phone").await.unwrap();
    let forge = Forge::new(&server, &minted);

    // Step 1: the forge is right: a token it signs with the server's key and
    // good claims is accepted everywhere. Every refusal below is therefore
    // about the one thing that token gets wrong.
    let good = forge.sign(&forge.claims());
    assert_eq!(api.get_json("/api/cases", &good).await.unwrap().0, 200);
    for auth in [
        WsAuth::Bearer(good.clone()),
        WsAuth::Subprotocol(good.clone()),
        WsAuth::Query(good.clone()),
    ] {
        assert_eq!(upgrade_status(&ws, &auth).await.unwrap(), 101, "{auth:?}");
    }

    // Step 2: the bad ones.
    let now = unix_now();
    let public_pem = forge
        .key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let attacker = SigningKey::from_bytes(&[7u8; 32]);
    let mut tampered = good.clone().into_bytes();
    let mid = good.rfind('.').unwrap() + 20;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(forge.kid.clone());
    let bad: Vec<(&str, String)> = vec![
        ("expired", forge.with("exp", json!(now - 3600))),
        ("wrong audience", forge.with("aud", json!("other-service"))),
        (
            "wrong issuer",
            forge.with("iss", json!("https://evil.example")),
        ),
        (
            // The classic confusion: HMAC keyed with the server's public key.
            "wrong algorithm (HS256 keyed with the public key)",
            jsonwebtoken::encode(
                &hs256,
                &forge.claims(),
                &EncodingKey::from_secret(public_pem.as_bytes()),
            )
            .unwrap(),
        ),
        (
            "signed by another key under the server's kid",
            forge.sign_with(&attacker, &forge.claims()),
        ),
        ("signature bytes altered", tampered),
        (
            "unsigned (alg none)",
            unsigned(
                &json!({"alg": "none", "typ": "JWT", "kid": forge.kid}),
                &forge.claims(),
            ),
        ),
        (
            "unsigned, alg EdDSA with an empty signature",
            unsigned(
                &json!({"alg": "EdDSA", "typ": "JWT", "kid": forge.kid}),
                &forge.claims(),
            ),
        ),
        (
            "exp as a string",
            forge.with("exp", json!((now + 3600).to_string())),
        ),
        ("no exp", {
            let mut c = forge.claims();
            c.as_object_mut().unwrap().remove("exp");
            forge.sign(&c)
        }),
        ("not a JWT", "hello".to_owned()),
        (
            "unknown kid",
            forge.sign_header(|h| h.kid = Some("rotated-away".into())),
        ),
        ("no kid", forge.sign_header(|h| h.kid = None)),
        (
            "jku pointing at an attacker's keys",
            forge.sign_header(|h| h.jku = Some("https://evil.example/jwks.json".into())),
        ),
        (
            "x5u pointing at an attacker's certificate",
            forge.sign_header(|h| h.x5u = Some("https://evil.example/cert.pem".into())),
        ),
        ("nbf in the future", forge.with("nbf", json!(now + 3600))),
        ("nbf as a string", forge.with("nbf", json!(now.to_string()))),
        ("no aud", forge.without("aud")),
        ("no iss", forge.without("iss")),
        ("no sub", forge.without("sub")),
        ("empty sub", forge.with("sub", json!(""))),
        ("sub not a string", forge.with("sub", json!(42))),
        ("signature stripped", {
            let cut = good.rfind('.').unwrap();
            good[..=cut].to_owned()
        }),
        ("unknown role", forge.with("role", json!("superuser"))),
    ];
    assert!(bad.len() >= 20, "at least 20 crafted bad tokens");
    let failures_before = api.metric("casesync_auth_failures_total").await.unwrap();
    let mut refusals = 0.0;
    for (what, token) in &bad {
        let (status, body) = api.get_json("/api/cases", token).await.unwrap();
        assert_eq!(status, 401, "HTTP, {what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        let (status, _) = api
            .get_json("/api/cases/automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu", token)
            .await
            .unwrap();
        assert_eq!(status, 401, "HTTP case, {what}");
        let status = api
            .request(reqwest::Method::POST, "/api/cases")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 401, "HTTP create, {what}");
        for auth in [
            WsAuth::Bearer(token.clone()),
            WsAuth::Subprotocol(token.clone()),
            WsAuth::Query(token.clone()),
        ] {
            assert_eq!(
                upgrade_status(&ws, &auth).await.unwrap(),
                401,
                "WebSocket, {what}, {auth:?}"
            );
        }
        refusals += 6.0;
    }
    // No token at all.
    assert_eq!(upgrade_status(&ws, &WsAuth::None).await.unwrap(), 401);
    let status = api
        .request(reqwest::Method::GET, "/api/cases")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
    refusals += 2.0;
    let failures = api.metric("casesync_auth_failures_total").await.unwrap() - failures_before;
    assert_eq!(failures, refusals, "every refusal is counted");

    // Step 3: nothing was created by any of them.
    assert!(api.list_cases(&minted).await.unwrap().is_empty());

    // Step 4: the HTTP API takes its token from the Authorization header
    // only. URLs end up in proxy logs and browser history, so `?token=` is
    // for WebSocket clients that have no other way, never for the API.
    for path in [
        "/api/cases",
        "/api/cases/automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu",
    ] {
        let status = api
            .request(reqwest::Method::GET, &format!("{path}?token={minted}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401, "GET {path}?token=");
    }
    let status = api
        .request(reqwest::Method::POST, &format!("/api/cases?token={minted}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401, "POST /api/cases?token=");
    let status = api
        .request(reqwest::Method::GET, "/api/cases")
        .header(
            "sec-websocket-protocol",
            format!("casesync.v1, casesync.bearer.{minted}"),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401, "a subprotocol token on plain HTTP");
    assert!(api.list_cases(&minted).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_must_announce_its_own_peer_id() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let ws = server.ws_url().unwrap();
    let token = server.token("olena", "phone").await.unwrap();

    // Step 1: Olena's phone announces her tablet, then Ivan's phone, then
    // itself with a sync message before `join`: each is closed with an
    // `error` and a policy close.
    for (what, first) in [
        (
            "another device of the same user",
            Message::Join {
                sender_id: "user:olena:tablet".parse().unwrap(),
                supported_protocol_versions: vec!["1".into()],
                metadata: None,
            },
        ),
        (
            "another user",
            Message::Join {
                sender_id: "user:ivan:phone".parse().unwrap(),
                supported_protocol_versions: vec!["1".into()],
                metadata: None,
            },
        ),
        (
            "a bare peer id",
            Message::Join {
                sender_id: "olena".parse().unwrap(),
                supported_protocol_versions: vec!["1".into()],
                metadata: None,
            },
        ),
        (
            "no join at all",
            Message::Leave {
                sender_id: "user:olena:phone".parse().unwrap(),
            },
        ),
    ] {
        let mut raw = RawSocket::connect(&ws, &WsAuth::Bearer(token.clone()))
            .await
            .unwrap();
        raw.send(&first).await.unwrap();
        let got = raw.recv_until_end(PATIENCE).await.unwrap();
        assert!(
            matches!(got.first(), Some(Received::Message(Message::Error { .. }))),
            "{what}: {got:?}"
        );
        assert!(
            matches!(
                got.last(),
                Some(Received::Close(Some((POLICY_VIOLATION, _))))
            ),
            "{what}: {got:?}"
        );
    }

    // Step 2: announcing its own peer id works.
    let mut raw = RawSocket::connect(&ws, &WsAuth::Bearer(token.clone()))
        .await
        .unwrap();
    let me: PeerId = "user:olena:phone".parse().unwrap();
    raw.join_ok(&me, PATIENCE).await.unwrap();

    // Step 3: after `join`, a message sent in another peer's name is refused
    // the same way.
    raw.send(&Message::Leave {
        sender_id: "user:olena:tablet".parse().unwrap(),
    })
    .await
    .unwrap();
    let got = raw.recv_until_end(PATIENCE).await.unwrap();
    assert!(
        matches!(
            got.last(),
            Some(Received::Close(Some((POLICY_VIOLATION, _))))
        ),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_when_its_token_expires() {
    let server = TestServer::start(ServerOptions::default()).await.unwrap();
    let token = server
        .token_with(&casesync_tests::TokenRequest {
            ttl: "2s",
            ..casesync_tests::TokenRequest::new("olena", "phone")
        })
        .await
        .unwrap();
    let mut raw = RawSocket::connect(&server.ws_url().unwrap(), &WsAuth::Bearer(token))
        .await
        .unwrap();
    raw.join_ok(&"user:olena:phone".parse().unwrap(), PATIENCE)
        .await
        .unwrap();
    // Nothing else is sent: the server closes the socket by itself.
    let got = raw.recv_until_end(PATIENCE).await.unwrap();
    assert!(
        got.iter().any(|r| matches!(r, Received::Message(Message::Error { message, .. }) if message.contains("expired"))),
        "{got:?}"
    );
    assert!(
        matches!(
            got.last(),
            Some(Received::Close(Some((POLICY_VIOLATION, _))))
        ),
        "{got:?}"
    );
}
