//! Authentication: who is on the other end of a request or socket.
//!
//! - [`AuthConfig`] fixes the algorithm, issuer, audience, leeway and the set of
//!   verification keys (by `kid`, so keys can be rotated).
//! - [`Verifier::verify`] turns a JWT into an [`Identity`], or says why not
//!   ([`AuthError`]). Time is a parameter.
//! - [`extract_token`] finds the token in a request (header, WebSocket
//!   subprotocol or `?token=`); [`Authenticated`] is the axum extractor.
//! - [`check_peer_id`] binds the peer id a device announces to its token.
//! - [`DevKeys`] and [`mint_token`] are the development issuer.
//!
//! Invariant: no type here prints a token or key material through `Debug` or
//! `Display`, and no error carries text taken from a token.

mod claims;
mod config;
mod dev_keys;
mod error;
mod extract;
mod http;
mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

use sync_core::ids::PeerId;

pub use claims::{Audience, Claims, Identity, Role};
pub use config::{
    AuthConfig, TokenAlgorithm, VerificationKey, DEFAULT_LEEWAY_SECS, MAX_KID_LEN, MAX_LEEWAY_SECS,
    MIN_HMAC_SECRET_LEN, MIN_RSA_BITS,
};
pub use dev_keys::{
    mint_token, DevKeyError, DevKeys, MintError, DEV_AUDIENCE, DEV_ISSUER, DEV_KEY_FILE, KEYS_DIR,
    MAX_DEV_TOKEN_TTL,
};
pub use error::{AuthConfigError, AuthError};
pub use extract::{
    extract_token, uri_for_logging, websocket_protocol_to_select, BearerToken, ExtractedToken,
    TokenSource, TOKEN_QUERY_PARAM, WS_BEARER_PROTOCOL_PREFIX, WS_PROTOCOL,
};
pub use http::{authenticate, AuthRejection, Authenticated};
pub use verify::{Verifier, MAX_TOKEN_LEN};

/// The peer id a device announces in `join` must be the one its token proves:
/// `user:<sub>:<device>`. Anything else closes the socket.
pub fn check_peer_id(identity: &Identity, announced: &PeerId) -> Result<(), AuthError> {
    if announced == identity.peer_id() {
        Ok(())
    } else {
        Err(AuthError::PeerIdMismatch)
    }
}

/// Seconds since the Unix epoch, negative if the clock is before 1970 (so a
/// broken clock never makes expired tokens look fresh).
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
