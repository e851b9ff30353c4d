//! The HTTP API: cases, health and metrics.
//!
//! Every route but `/healthz` and `/metrics` needs a valid token. A case the
//! caller may not see answers 404, exactly like a case that does not exist.

use std::collections::BTreeMap;

use automerge::{Automerge, ChangeHash};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use sync_core::ids::DocumentId;
use sync_core::model::{
    self, CaseInit, CoordinationInit, Edit, Field, FieldKind, FieldValue, RawValue,
};

use crate::acl::Principal;
use crate::app::AppState;
use crate::auth::{AuthError, AuthRejection, Authenticated, TokenSource};
use crate::error::AppError;
use crate::store::{ChangeRecord, DocumentKind, NewDocument, WriteBatch, WriteOp};

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    let store = inner.store.metrics().to_prometheus("casesync_store");
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        inner.metrics.render(&store),
    )
        .into_response()
}

/// Turns an auth failure into a 401 and counts it.
///
/// The API takes its token from `Authorization: Bearer` only. `?token=` and
/// the `Sec-WebSocket-Protocol` entry exist for WebSocket clients that can
/// set nothing else; a token in a URL ends up in proxy logs and browser
/// history, so a plain HTTP request carrying one there is refused.
pub(crate) fn authenticated(
    state: &AppState,
    auth: Result<Authenticated, AuthRejection>,
) -> Result<Authenticated, AppError> {
    let auth = auth.and_then(|a| match a.source {
        TokenSource::AuthorizationHeader => Ok(a),
        TokenSource::QueryParameter | TokenSource::WebSocketProtocol => {
            Err(AuthRejection(AuthError::UnsupportedAuthScheme))
        }
    });
    // A revoked device is refused on every API route; on `/sync` it may
    // still deliver its late offline edits, into quarantine.
    let auth = auth.and_then(|a| {
        let id = &a.identity;
        if state
            .inner
            .acl
            .is_device_revoked(id.user().as_str(), id.device().as_str())
        {
            Err(AuthRejection(AuthError::DeviceRevoked))
        } else {
            Ok(a)
        }
    });
    auth.map_err(|rejection| {
        state.inner.metrics.auth_failures.inc();
        state.inner.audit.auth_failed(&rejection.0, "/api");
        AppError::Auth(rejection)
    })
}

pub(crate) fn now_ms() -> i64 {
    crate::auth::unix_now().saturating_mul(1000)
}

pub(crate) fn random_id() -> Result<DocumentId, AppError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(AppError::internal)?;
    Ok(DocumentId::from_bytes(bytes))
}

fn random_actor() -> Result<automerge::ActorId, AppError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(AppError::internal)?;
    Ok(automerge::ActorId::from(bytes))
}

/// The optional body of `POST /api/cases`: initial values of registers and
/// narratives, keyed by their path (`person.full_name`, `military.unit`,
/// `disappearance.circumstances`, …).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCaseBody {
    #[serde(default)]
    values: BTreeMap<String, String>,
}

fn initial_edits(body: &CreateCaseBody) -> Result<Vec<Edit>, AppError> {
    let mut edits = Vec::new();
    for (path, value) in &body.values {
        // Only the sections relatives fill in; the coordination sections
        // live in their own document.
        let field = Field::by_path(path)
            .filter(|f| {
                matches!(
                    f,
                    Field::Person(_)
                        | Field::Military(_)
                        | Field::Disappearance(_)
                        | Field::Burial(_)
                )
            })
            .ok_or(AppError::BadRequest("unknown field in `values`"))?;
        let edit = match field.kind() {
            FieldKind::Str => Edit::SetField {
                field,
                value: FieldValue::Str(value.clone()),
            },
            FieldKind::Text => Edit::SpliceText {
                field,
                pos: 0,
                delete: 0,
                insert: value.clone(),
            },
            _ => {
                return Err(AppError::BadRequest(
                    "only text fields can be given at creation",
                ))
            }
        };
        edits.push(edit);
    }
    Ok(edits)
}

fn change_records(
    doc_id: DocumentId,
    doc: &Automerge,
    user: &str,
    device: &str,
    at: i64,
) -> Vec<ChangeRecord> {
    doc.get_changes(&[])
        .into_iter()
        .map(|c| ChangeRecord {
            doc: doc_id,
            hash: c.hash().0,
            bytes: c.raw_bytes().to_vec(),
            actor: c.actor_id().to_bytes().to_vec(),
            seq: c.seq(),
            user: user.to_owned(),
            device: device.to_owned(),
            received_at_ms: at,
        })
        .collect()
}

/// `POST /api/cases`: creates a case document and its coordination
/// document from the templates, durably, and makes the caller a member.
pub async fn create_case(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    body: Bytes,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    create_case_inner(&state, &auth, &body).await
}

async fn create_case_inner(
    state: &AppState,
    auth: &Authenticated,
    body: &[u8],
) -> Result<Response, AppError> {
    let body: CreateCaseBody = if body.iter().all(u8::is_ascii_whitespace) {
        CreateCaseBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| AppError::BadJson(e.to_string()))?
    };
    let edits = initial_edits(&body)?;
    let user = auth.identity.user().as_str().to_owned();
    let device = auth.identity.device().as_str().to_owned();
    let now = now_ms();
    let case_id = random_id()?;
    let coordination_id = random_id()?;

    let mut case = Automerge::new().with_actor(random_actor()?);
    model::create_case(
        &mut case,
        &CaseInit {
            created_by: user.clone(),
            coordination: Some(coordination_id),
        },
        now,
    )
    .map_err(AppError::internal)?;
    for edit in &edits {
        model::apply_edit(&mut case, edit, &user, now).map_err(|e| {
            tracing::info!(error = %e, "initial value refused");
            AppError::BadRequest("an initial value was refused")
        })?;
    }
    let mut coordination = Automerge::new().with_actor(random_actor()?);
    model::create_coordination(
        &mut coordination,
        &CoordinationInit {
            created_by: user.clone(),
            case: case_id,
        },
        now,
    )
    .map_err(AppError::internal)?;

    let batch = WriteBatch::new()
        .with(WriteOp::CreateDocument(NewDocument {
            id: case_id,
            kind: DocumentKind::Case,
            created_by: user.clone(),
            created_at_ms: now,
        }))
        .with(WriteOp::AppendChanges(change_records(
            case_id, &case, &user, &device, now,
        )))
        .with(WriteOp::CreateDocument(NewDocument {
            id: coordination_id,
            kind: DocumentKind::Coordination,
            created_by: user.clone(),
            created_at_ms: now,
        }))
        .with(WriteOp::AppendChanges(change_records(
            coordination_id,
            &coordination,
            &user,
            &device,
            now,
        )));
    state
        .inner
        .store
        .commit(batch)
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let identity = state.inner.identity.clone();
    tokio::task::spawn_blocking(move || identity.link_case(case_id, coordination_id))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    state.inner.acl.add_case(case_id, coordination_id, &user);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": case_id.to_url(),
            "coordination": coordination_id.to_url(),
        })),
    )
        .into_response())
}

/// `GET /api/cases`: the cases the caller may see.
pub async fn list_cases(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let cases: Vec<Json_> = state
        .inner
        .acl
        .cases_of(&Principal::of(&auth.identity))
        .into_iter()
        .map(|id| json!({ "id": id.to_url() }))
        .collect();
    Ok(Json(json!({ "cases": cases })).into_response())
}

/// Resolves `{id}` (URL or bare id) to a case the caller may see; anything
/// else is 404.
pub fn visible_case(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
) -> Result<DocumentId, AppError> {
    let doc = DocumentId::parse_url_or_id(id).map_err(|_| AppError::NotFound)?;
    let principal = Principal::of(&auth.identity);
    match state.inner.acl.case_of(&doc) {
        Some((case, DocumentKind::Case)) if state.inner.acl.mode(&principal, &case).can_read() => {
            Ok(case)
        }
        _ => Err(AppError::NotFound),
    }
}

fn raw_json(v: &RawValue) -> Json_ {
    match v {
        RawValue::Str(s) | RawValue::Text(s) => json!(s),
        RawValue::Int(i) | RawValue::Timestamp(i) | RawValue::Counter(i) => json!(i),
        RawValue::Uint(u) => json!(u),
        RawValue::F64(f) => json!(f),
        RawValue::Bool(b) => json!(b),
        RawValue::Bytes(b) => json!({ "$bytes_len": b.len() }),
        RawValue::Map => json!({}),
        RawValue::List => json!([]),
        RawValue::Unknown => Json_::Null,
    }
}

/// The conflicts of a document as JSON: each register with concurrent
/// values, every value with the actor that wrote it.
pub fn conflicts_json(doc: &Automerge) -> Json_ {
    Json_::Array(
        model::conflicts(doc)
            .iter()
            .map(|c| {
                json!({
                    "path": c.path,
                    "values": c.values.iter().map(|v| json!({
                        "value": v.value.as_ref().map(raw_json).unwrap_or(Json_::Null),
                        "actor": v.actor,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn heads_json(heads: &[ChangeHash]) -> Json_ {
    Json_::Array(heads.iter().map(|h| json!(h.to_string())).collect())
}

/// `GET /api/cases/{id}`: the current case and its conflicts.
pub async fn get_case(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let doc_id = visible_case(&state, &auth, &id)?;
    let doc = state.inner.docs.read(doc_id).await.map_err(|e| match e {
        crate::docs::DocError::NotFound => AppError::NotFound,
        other => AppError::Unavailable(other.to_string()),
    })?;
    // Reading a large document is CPU work: off the executor.
    let body = tokio::task::spawn_blocking(move || {
        json!({
            "id": doc_id.to_url(),
            "heads": heads_json(&doc.get_heads()),
            "case": sync_core::view::to_json(&doc, None),
            "conflicts": conflicts_json(&doc),
        })
    })
    .await
    .map_err(AppError::internal)?;
    Ok(Json(body).into_response())
}
