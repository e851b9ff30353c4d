//! The axum side: an extractor that turns a request into an [`Identity`], and
//! the 401 response for a refused one.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::claims::Identity;
use super::error::AuthError;
use super::extract::{extract_token, TokenSource};
use super::verify::Verifier;

/// An authenticated request. Routes that must not take a token from the URL
/// (everything but the WebSocket upgrade) can refuse
/// [`TokenSource::QueryParameter`].
///
/// The state must provide an `Arc<Verifier>` through `FromRef`.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub source: TokenSource,
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<Verifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<Verifier>::from_ref(state);
        authenticate(&verifier, parts, super::unix_now()).map_err(AuthRejection)
    }
}

/// The extractor's logic with the clock passed in.
pub fn authenticate(
    verifier: &Verifier,
    parts: &Parts,
    now: i64,
) -> Result<Authenticated, AuthError> {
    let extracted = extract_token(&parts.headers, &parts.uri)?;
    let identity = verifier.verify(extracted.token.expose(), now)?;
    Ok(Authenticated {
        identity,
        source: extracted.source,
    })
}

/// A refused request: `401` with `WWW-Authenticate: Bearer` and
/// `{"error":{"code":"unauthorized","message":…}}`. The message is
/// [`AuthError::public_message`]; the precise reason is logged, never the token.
#[derive(Debug)]
pub struct AuthRejection(pub AuthError);

impl From<AuthError> for AuthRejection {
    fn from(err: AuthError) -> Self {
        Self(err)
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        tracing::info!(reason = %self.0, "authentication refused");
        let body = serde_json::json!({
            "error": {
                "code": "unauthorized",
                "message": self.0.public_message(),
            }
        });
        let challenge = match self.0 {
            AuthError::MissingToken => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        };
        let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        response
    }
}
