//! Target `token_and_first_message`: everything a stranger controls before
//! the server knows who they are.
//!
//! The first input byte picks a mode (`byte % 5`), the rest is its payload:
//!
//! | mode | payload | entry point |
//! |---|---|---|
//! | 0 | a token | `Verifier::verify`, EdDSA and HS256 configs |
//! | 1 | a request head: the request target, then `name: value` lines | `extract_token`, then `verify` on what it finds |
//! | 2 | the first frame on a new socket | `ServerSession::handle_frame` (the `join` parser) |
//! | 3 | JOSE header JSON, `\n`, claims JSON | signed with the EdDSA test key, then `verify` |
//! | 4 | as mode 3 | signed with the HS256 test secret, then `verify` |
//!
//! Modes 3 and 4 sign whatever JSON the fuzzer wrote, so the header and
//! claim checks that run only after a good signature get fuzzed too. A token
//! that verifies must name a peer id that can join.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use casesync_server::auth::{
    self, AuthConfig, TokenAlgorithm, VerificationKey, Verifier, DEV_AUDIENCE, DEV_ISSUER,
};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::SigningKey;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use sync_core::engine::SessionEvent;
use sync_core::ids::PeerId;

use crate::{drain, join_frame, new_session, peer_id, Outcome, Permissive, PEER};

pub const MODE_TOKEN: u8 = 0;
pub const MODE_REQUEST_HEAD: u8 = 1;
pub const MODE_FIRST_MESSAGE: u8 = 2;
pub const MODE_SIGNED_EDDSA: u8 = 3;
pub const MODE_SIGNED_HS256: u8 = 4;

/// The `kid`s of the two test keys.
pub const EDDSA_KID: &str = "fuzz-ed25519";
pub const HS256_KID: &str = "fuzz-hs256";
/// The verifier's clock, in seconds since the Unix epoch.
pub const NOW: i64 = 1_750_000_000;

const EDDSA_SEED: [u8; 32] = [0x07; 32];
const HS256_SECRET: [u8; 32] = [0x09; 32];

struct Keys {
    eddsa: Verifier,
    eddsa_signing: EncodingKey,
    hs256: Verifier,
    hs256_signing: EncodingKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signing = SigningKey::from_bytes(&EDDSA_SEED);
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM-encoding a public key");
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PEM-encoding a private key");
        // The same shape as `DevKeys::auth_config`: EdDSA, the development
        // issuer and audience, default leeway; only the key is fixed, so
        // runs replay exactly.
        let eddsa = AuthConfig::new(
            TokenAlgorithm::EdDsa,
            DEV_ISSUER,
            DEV_AUDIENCE,
            vec![VerificationKey::ed25519_pem(EDDSA_KID, public.as_bytes())
                .expect("a valid Ed25519 key")],
        )
        .expect("a valid config");
        let hs256 = AuthConfig::new(
            TokenAlgorithm::Hs256Development,
            DEV_ISSUER,
            DEV_AUDIENCE,
            vec![VerificationKey::hmac_secret(HS256_KID, &HS256_SECRET)
                .expect("a long enough secret")],
        )
        .expect("a valid config");
        Keys {
            eddsa: Verifier::new(eddsa),
            eddsa_signing: EncodingKey::from_ed_pem(private.as_bytes())
                .expect("a valid Ed25519 private key"),
            hs256: Verifier::new(hs256),
            hs256_signing: EncodingKey::from_secret(&HS256_SECRET),
        }
    })
}

/// Signs `header` and `claims` (any bytes; meant to be JSON) as a compact
/// JWS with one of the test keys.
pub fn sign(header: &[u8], claims: &[u8], hs256: bool) -> String {
    let keys = keys();
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = if hs256 {
        jsonwebtoken::crypto::sign(message.as_bytes(), &keys.hs256_signing, Algorithm::HS256)
    } else {
        jsonwebtoken::crypto::sign(message.as_bytes(), &keys.eddsa_signing, Algorithm::EdDSA)
    }
    .expect("signing with a valid key");
    format!("{message}.{signature}")
}

fn verify(token: &str, hs256: bool) {
    let keys = keys();
    let verifier = if hs256 { &keys.hs256 } else { &keys.eddsa };
    let Ok(identity) = verifier.verify(token, NOW) else {
        return;
    };
    let leeway = i64::try_from(verifier.config().leeway_secs()).unwrap_or(i64::MAX);
    assert!(
        identity.expires_at().saturating_add(leeway) > NOW,
        "a verified token has not expired"
    );
    let peer = PeerId::new(identity.peer_id().as_str())
        .expect("a verified token names a peer id a client can announce");
    let (user, device) = peer
        .user_and_device()
        .expect("a verified token's peer id splits into user and device");
    assert_eq!(&user, identity.user());
    assert_eq!(&device, identity.device());
    // ...and that device can join with it.
    let mut session = new_session(&peer);
    let events = session
        .handle_frame(&join_frame(peer.as_str()), &Permissive)
        .expect("a verified device can join under its own peer id");
    assert!(matches!(events.as_slice(), [SessionEvent::Joined { .. }]));
    drain(&mut session);
}

/// Mode 1: the first line is the request target (`/sync?token=...`), the
/// others are headers (`name: value`); lines that are not valid HTTP are
/// skipped, as hyper would have refused them.
pub fn request_head(payload: &[u8]) -> (HeaderMap, Uri) {
    let mut lines = payload.split(|b| *b == b'\n');
    let uri = lines
        .next()
        .and_then(|line| Uri::try_from(line.strip_suffix(b"\r").unwrap_or(line)).ok())
        .unwrap_or_else(|| Uri::from_static("/sync"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (headers, uri)
}

/// The first frame on a fresh socket whose token was for [`PEER`]. Anything
/// but a valid `join` from that peer is refused and closes the session.
pub fn first_message(frame: &[u8]) -> Outcome {
    let mut session = new_session(&peer_id(PEER));
    let outcome = match session.handle_frame(frame, &Permissive) {
        Ok(events) => {
            assert!(
                matches!(events.as_slice(), [SessionEvent::Joined { peer, .. }] if peer.as_str() == PEER),
                "the only first message accepted is a join from the token's peer"
            );
            assert!(session.is_ready());
            Outcome::Accepted
        }
        Err(e) => {
            assert!(
                session.is_closed(),
                "a refused first message closes the session"
            );
            Outcome::Refused(e.to_string())
        }
    };
    drain(&mut session);
    outcome
}

pub fn token_and_first_message(data: &[u8]) {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        MODE_TOKEN => {
            let token = String::from_utf8_lossy(payload);
            verify(&token, false);
            verify(&token, true);
        }
        MODE_REQUEST_HEAD => {
            let (headers, uri) = request_head(payload);
            let _ = auth::websocket_protocol_to_select(&headers);
            let _ = auth::uri_for_logging(&uri);
            if let Ok(found) = auth::extract_token(&headers, &uri) {
                assert!(
                    !found.token.expose().is_empty(),
                    "an extracted token is not empty"
                );
                verify(found.token.expose(), false);
            }
        }
        MODE_FIRST_MESSAGE => {
            let _ = first_message(payload);
        }
        mode => {
            let (header, claims) = match payload.iter().position(|b| *b == b'\n') {
                Some(i) => (&payload[..i], &payload[i + 1..]),
                None => (payload, &b"{}"[..]),
            };
            let hs256 = mode == MODE_SIGNED_HS256;
            verify(&sign(header, claims, hs256), hs256);
        }
    }
}
