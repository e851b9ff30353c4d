//! Finding the bearer token in an HTTP request or WebSocket upgrade.
//!
//! Three places are accepted, because clients differ in what they can set:
//!
//! - `Authorization: Bearer <token>`: native apps and every HTTP route.
//! - `Sec-WebSocket-Protocol`: browsers cannot set headers on a WebSocket, but
//!   they can offer subprotocols. The client offers two entries,
//!   `casesync.v1, casesync.bearer.<token>`; the server accepts the socket
//!   with the subprotocol `casesync.v1` ([`WS_PROTOCOL`]) and never echoes the
//!   bearer entry. A browser fails the handshake if it offered subprotocols and
//!   the server selects none, so a client that sends the bearer entry must
//!   also offer `casesync.v1`. (A JWT uses only base64url characters and dots,
//!   which are all valid in a subprotocol token.)
//! - `?token=<token>` in the URL, percent-decoded: for stock automerge-repo
//!   clients that can only set the URL. URLs end up in proxy and access logs,
//!   so log requests through [`uri_for_logging`], never the raw URI.
//!
//! A request that carries a token in more than one place, or two tokens in one
//! place, is refused: there is no rule for which one to believe.

use std::fmt;

use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::{HeaderMap, Uri};

use super::error::AuthError;

/// The non-secret subprotocol the server selects on a WebSocket upgrade.
pub const WS_PROTOCOL: &str = "casesync.v1";
/// Prefix of the subprotocol entry that carries the bearer token.
pub const WS_BEARER_PROTOCOL_PREFIX: &str = "casesync.bearer.";
/// Query parameter that carries the bearer token.
pub const TOKEN_QUERY_PARAM: &str = "token";

/// Where in the request the token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenSource {
    AuthorizationHeader,
    WebSocketProtocol,
    QueryParameter,
}

/// A bearer token as it arrived. Its `Debug` prints `[redacted]` and it has no
/// `Display`, so it cannot end up in a log line by accident. It has no
/// `PartialEq` either: nothing should compare tokens, and if something must,
/// it has to do so in constant time.
#[derive(Clone)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, to hand to [`Verifier::verify`](super::Verifier::verify).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

/// A token and where it was found.
#[derive(Debug, Clone)]
pub struct ExtractedToken {
    pub token: BearerToken,
    pub source: TokenSource,
}

/// Finds the one bearer token in a request.
pub fn extract_token(headers: &HeaderMap, uri: &Uri) -> Result<ExtractedToken, AuthError> {
    let mut found: Option<ExtractedToken> = None;
    let mut put = |token: String, source: TokenSource| {
        if found.is_some() {
            return Err(AuthError::AmbiguousToken);
        }
        found = Some(ExtractedToken {
            token: BearerToken(token),
            source,
        });
        Ok(())
    };

    if let Some(token) = from_authorization(headers)? {
        put(token, TokenSource::AuthorizationHeader)?;
    }
    if let Some(token) = from_websocket_protocol(headers)? {
        put(token, TokenSource::WebSocketProtocol)?;
    }
    if let Some(token) = from_query(uri)? {
        put(token, TokenSource::QueryParameter)?;
    }
    found.ok_or(AuthError::MissingToken)
}

fn from_authorization(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::AmbiguousToken);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::UnsupportedAuthScheme)?;
    // RFC 7235: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::UnsupportedAuthScheme);
    }
    non_empty(token.trim())
}

fn from_websocket_protocol(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let mut token = None;
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().map_err(|_| AuthError::MalformedToken)?;
        for entry in value.split(',').map(str::trim) {
            if let Some(t) = entry.strip_prefix(WS_BEARER_PROTOCOL_PREFIX) {
                if token.is_some() {
                    return Err(AuthError::AmbiguousToken);
                }
                token = non_empty(t)?;
            }
        }
    }
    Ok(token)
}

fn from_query(uri: &Uri) -> Result<Option<String>, AuthError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut token = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == TOKEN_QUERY_PARAM {
            if token.is_some() {
                return Err(AuthError::AmbiguousToken);
            }
            token = non_empty(&value)?;
        }
    }
    Ok(token)
}

fn non_empty(token: &str) -> Result<Option<String>, AuthError> {
    if token.is_empty() {
        Err(AuthError::MalformedToken)
    } else {
        Ok(Some(token.to_owned()))
    }
}

/// The subprotocol to select on a WebSocket upgrade: [`WS_PROTOCOL`] if the
/// client offered it, otherwise none. Never the bearer entry.
pub fn websocket_protocol_to_select(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| entry.trim() == WS_PROTOCOL)
        .then_some(WS_PROTOCOL)
}

/// The request path and query for logs, with the value of every `token`
/// parameter replaced by `[redacted]`.
pub fn uri_for_logging(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or(pair);
            let decoded_key: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or_default();
            if decoded_key == TOKEN_QUERY_PARAM {
                format!("{key}=[redacted]")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}
