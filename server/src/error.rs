//! One error type for HTTP handlers: a stable code and a safe message for the
//! client, the internal cause only in the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Also the answer for "exists but not yours": nobody learns a case
    /// exists from us.
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The caller may see the object but not do this to it.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Over a rate limit: 429; retry later.
    #[error("rate limited")]
    RateLimited,
    /// An invitation that was valid once: expired, revoked or used.
    /// (code, message), e.g. `invitation_used`.
    #[error("gone: {1}")]
    Gone(&'static str, &'static str),
    #[error("invalid JSON body")]
    BadJson(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A missing or invalid token: 401 with a generic message.
    #[error("unauthorized")]
    Auth(crate::auth::AuthRejection),
}

impl AppError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        AppError::Internal(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            AppError::Auth(rejection) => return rejection.into_response(),
            other => other.parts(),
        };
        (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

impl AppError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            AppError::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized"),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found", "not found"),
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", *m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", *m),
            AppError::Gone(code, m) => (StatusCode::GONE, *code, *m),
            AppError::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; slow down and retry",
            ),
            AppError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json", "invalid JSON body"),
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(%cause, "service unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "temporarily unavailable, retry",
                )
            }
        }
    }
}
