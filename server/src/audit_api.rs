//! `GET /api/audit?after=<seq>&limit=<n>`: the audit log, oldest first, for
//! admins only.
//!
//! Anyone else with a valid token gets the same 404 as for a case they may
//! not see; without a valid token, 401 like every `/api` route. Every read
//! is itself audited (`audit_read`), and the rows are served only once that
//! record is durable.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::authenticated;
use crate::app::AppState;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{AuthRejection, Authenticated, Role};
use crate::error::AppError;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most rows one request returns (a larger `limit` is lowered to it).
pub const MAX_LIMIT: usize = 1000;

/// `GET /api/audit`: `{"rows": [...], "next_after": seq}`; pass
/// `next_after` as `after` for the next page.
pub async fn list_audit(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    if auth.identity.role() != Role::Admin {
        return Err(AppError::NotFound);
    }
    // Parsed only after the role check, so nobody else learns anything
    // from how their query is answered.
    let (after, limit) = parse_query(query.as_deref().unwrap_or(""))?;
    let event = AuditEvent::new(AuditKind::AuditRead)
        .by(&auth.identity)
        .detail(json!({ "after": after, "limit": limit }));
    let log = state.inner.audit.clone();
    tokio::task::spawn_blocking(move || log.record_blocking(event))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let rows = state
        .inner
        .audit
        .list(after, limit)
        .await
        .map_err(AppError::internal)?;
    let next_after = rows.last().map_or(after, |r| r.seq);
    Ok(Json(json!({ "rows": rows, "next_after": next_after })).into_response())
}

/// `after` (default 0) and `limit` (default [`DEFAULT_LIMIT`], at most
/// [`MAX_LIMIT`]).
fn parse_query(query: &str) -> Result<(i64, usize), AppError> {
    let mut after = 0i64;
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| AppError::BadRequest("`after` must be an integer"))?;
            }
            "limit" => {
                limit = value
                    .parse()
                    .map_err(|_| AppError::BadRequest("`limit` must be a non-negative integer"))?;
            }
            _ => {}
        }
    }
    Ok((after, limit.min(MAX_LIMIT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_caps() {
        assert_eq!(parse_query("").ok(), Some((0, DEFAULT_LIMIT)));
        assert_eq!(parse_query("after=5&limit=7").ok(), Some((5, 7)));
        assert_eq!(parse_query("limit=5000").ok(), Some((0, MAX_LIMIT)));
        assert!(parse_query("after=x").is_err());
        assert!(parse_query("limit=-1").is_err());
    }
}
