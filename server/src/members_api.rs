//! The HTTP API for people: invitations, memberships, coordinator
//! assignments, devices and the quarantine (issue 4; DESIGN.md section 6).
//!
//! Every route authenticates with `api::authenticated` (Bearer header only,
//! revoked devices refused) and checks the object: a case the caller may
//! not see is 404, exactly like one that does not exist. A case the caller
//! may see but not act on in this way is 403. Every change of who may see
//! what goes to the audit log, and then to the live connections (a
//! revocation closes the affected sockets at once).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sync_core::ids::{DeviceId, DocumentId, UserId};

use crate::acl::Principal;
use crate::api::{authenticated, now_ms, visible_case};
use crate::app::{AppState, Revocation};
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{AuthRejection, Authenticated, Role};
use crate::docs::Provenance;
use crate::error::AppError;
use crate::identity::{InviteRefusal, MemberRole};

/// How long an invitation lasts unless the inviter says otherwise.
pub const DEFAULT_INVITATION_HOURS: u64 = 72;
/// The longest an invitation may last.
pub const MAX_INVITATION_HOURS: u64 = 30 * 24;
/// Quarantined changes decided in one request.
const MAX_DECISIONS: usize = 1000;

/// Runs a blocking identity-table call off the executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::identity::IdentityError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AppError::internal)?
        .map_err(|e| AppError::Unavailable(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::BadJson(e.to_string()))
}

/// Random URL-safe text with `bytes` bytes of entropy.
fn random_token(bytes: usize) -> Result<String, AppError> {
    use base64::Engine as _;
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(AppError::internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// The case `{id}` names, if the caller may see it.
fn case_for(state: &AppState, auth: &Authenticated, id: &str) -> Result<DocumentId, AppError> {
    visible_case(state, auth, id)
}

/// Whether the caller coordinates `case` (an assigned coordinator or an
/// admin).
fn coordinates(state: &AppState, auth: &Authenticated, case: &DocumentId) -> bool {
    state
        .inner
        .acl
        .is_case_coordinator(&Principal::of(&auth.identity), case)
}

fn require_coordinator(
    state: &AppState,
    auth: &Authenticated,
    case: &DocumentId,
) -> Result<(), AppError> {
    if coordinates(state, auth, case) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "only the case's coordinators may do this",
        ))
    }
}

fn require_admin(auth: &Authenticated) -> Result<(), AppError> {
    if auth.identity.role() == Role::Admin {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

fn valid_user(user: &str) -> Result<(), AppError> {
    UserId::new(user)
        .map(drop)
        .map_err(|_| AppError::BadRequest("not a valid user id"))
}

fn valid_device(device: &str) -> Result<(), AppError> {
    DeviceId::new(device)
        .map(drop)
        .map_err(|_| AppError::BadRequest("not a valid device id"))
}

// ----- invitations ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitationBody {
    expires_in_hours: Option<u64>,
    /// Finer than hours, for a code read out over the phone.
    expires_in_secs: Option<u64>,
}

/// `POST /api/cases/{id}/invitations`: a single-use, expiring invitation
/// for one more relative. The code is shown once, here; only its hash is
/// stored. Family members and the case's coordinators may invite.
pub async fn create_invitation(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    let body: InvitationBody = parse_json(&body)?;
    let secs = match (body.expires_in_secs, body.expires_in_hours) {
        (Some(secs), None) => secs,
        (None, hours) => hours
            .unwrap_or(DEFAULT_INVITATION_HOURS)
            .saturating_mul(3600),
        (Some(_), Some(_)) => {
            return Err(AppError::BadRequest(
                "give expires_in_secs or expires_in_hours, not both",
            ))
        }
    };
    if secs == 0 || secs > MAX_INVITATION_HOURS * 3600 {
        return Err(AppError::BadRequest(
            "an invitation lasts from one second to 30 days",
        ));
    }
    let now = now_ms();
    let expires_at_ms = now.saturating_add(i64::try_from(secs).unwrap_or(0) * 1000);
    let inv_id = random_token(9)?;
    let code = random_token(18)?;
    let by = auth.identity.user().to_string();
    {
        let identity = state.inner.identity.clone();
        let (inv_id, code, by) = (inv_id.clone(), code.clone(), by.clone());
        blocking(move || {
            identity.create_invitation(
                &inv_id,
                &code,
                case,
                MemberRole::Relative,
                &by,
                now,
                expires_at_ms,
            )
        })
        .await?;
    }
    state
        .inner
        .audit
        .record(
            AuditEvent::new(AuditKind::InvitationCreated)
                .by(&auth.identity)
                .doc(case)
                .subject(inv_id.clone())
                .detail(json!({ "expires_at_ms": expires_at_ms })),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": inv_id,
            "code": code,
            "case": case.to_url(),
            "expires_at_ms": expires_at_ms,
            "link": format!("/app/#invite={code}"),
        })),
    )
        .into_response())
}

/// `GET /api/cases/{id}/invitations`: the case's invitations (never codes).
pub async fn list_invitations(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    let identity = state.inner.identity.clone();
    let rows = blocking(move || identity.invitations_of(case)).await?;
    Ok(Json(json!({ "invitations": rows })).into_response())
}

/// `DELETE /api/cases/{id}/invitations/{invitation}`: revokes an unused
/// invitation. Family members and coordinators may.
pub async fn revoke_invitation(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((id, inv_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    let identity = state.inner.identity.clone();
    let by = auth.identity.user().to_string();
    let now = now_ms();
    let revoked = {
        let inv_id = inv_id.clone();
        blocking(move || identity.revoke_invitation(case, &inv_id, &by, now)).await?
    };
    if !revoked {
        return Err(AppError::NotFound);
    }
    state
        .inner
        .audit
        .record(
            AuditEvent::new(AuditKind::InvitationRevoked)
                .by(&auth.identity)
                .doc(case)
                .subject(inv_id),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/invitations/{code}/accept`: makes the caller a member of the
/// invitation's case. Unknown codes are 404; expired, revoked and used ones
/// 410 (the holder of a real code learns only that it no longer works).
pub async fn accept_invitation(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    if code.is_empty() || code.len() > 128 {
        return Err(AppError::NotFound);
    }
    let identity = state.inner.identity.clone();
    let user = auth.identity.user().to_string();
    let now = now_ms();
    let outcome = blocking(move || identity.accept_invitation(&code, &user, now)).await?;
    match outcome {
        Ok((case, role, inv_id)) => {
            state
                .inner
                .acl
                .set_member(case, auth.identity.user().as_str(), role);
            state
                .inner
                .audit
                .record(
                    AuditEvent::new(AuditKind::InvitationAccepted)
                        .by(&auth.identity)
                        .doc(case)
                        .subject(inv_id),
                )
                .await;
            Ok(Json(json!({
                "case": case.to_url(),
                "coordination": state.inner.acl.coordination_of(&case).map(|c| c.to_url()),
                "role": role,
            }))
            .into_response())
        }
        Err(refusal) => {
            state
                .inner
                .audit
                .record(
                    AuditEvent::new(AuditKind::InvitationRefused)
                        .by(&auth.identity)
                        .detail(json!({ "reason": refusal.as_str() })),
                )
                .await;
            Err(match refusal {
                InviteRefusal::Unknown => AppError::NotFound,
                InviteRefusal::Expired => {
                    AppError::Gone("invitation_expired", "this invitation has expired")
                }
                InviteRefusal::Revoked => {
                    AppError::Gone("invitation_revoked", "this invitation was withdrawn")
                }
                InviteRefusal::AlreadyUsed => {
                    AppError::Gone("invitation_used", "this invitation was already used")
                }
            })
        }
    }
}

// ----- members and coordinators --------------------------------------------

/// `GET /api/cases/{id}/members`: who is in the case.
pub async fn list_members(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    let identity = state.inner.identity.clone();
    let rows = blocking(move || identity.members_of(case)).await?;
    Ok(Json(json!({ "members": rows })).into_response())
}

/// `DELETE /api/cases/{id}/members/{user}`: a coordinator (or admin)
/// revokes a relative's membership. Their sockets with the case open close
/// at once; what their devices send later is quarantined.
pub async fn revoke_member(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    require_coordinator(&state, &auth, &case)?;
    end_membership(
        &state,
        &auth,
        case,
        user,
        &[MemberRole::Creator, MemberRole::Relative],
        AuditKind::MemberRevoked,
    )
    .await
}

/// Ends `user`'s membership of `case` if it has one of `roles`: the row
/// first, then the index, then the live connections, then the audit log.
async fn end_membership(
    state: &AppState,
    auth: &Authenticated,
    case: DocumentId,
    user: String,
    roles: &'static [MemberRole],
    kind: AuditKind,
) -> Result<Response, AppError> {
    valid_user(&user)?;
    let identity = state.inner.identity.clone();
    let by = auth.identity.user().to_string();
    let now = now_ms();
    let ended = {
        let user = user.clone();
        blocking(move || identity.revoke_member(case, &user, roles, &by, now)).await?
    };
    if !ended {
        return Err(AppError::NotFound);
    }
    state.inner.acl.revoke_member(case, &user);
    let _ = state.inner.revocations.send(Revocation::Member {
        user: user.clone(),
        case,
    });
    state
        .inner
        .audit
        .record(
            AuditEvent::new(kind)
                .by(&auth.identity)
                .doc(case)
                .subject(user),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/cases/{id}/coordinators/{user}`: an admin assigns a
/// coordinator to a case.
pub async fn assign_coordinator(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    require_admin(&auth)?;
    let case = case_for(&state, &auth, &id)?;
    valid_user(&user)?;
    if state.inner.acl.member_role(&case, &user).is_some() {
        return Err(AppError::BadRequest(
            "this user is already a member of the case",
        ));
    }
    let identity = state.inner.identity.clone();
    let now = now_ms();
    {
        let user = user.clone();
        blocking(move || identity.add_member(case, &user, MemberRole::Coordinator, now)).await?;
    }
    state
        .inner
        .acl
        .set_member(case, &user, MemberRole::Coordinator);
    state
        .inner
        .audit
        .record(
            AuditEvent::new(AuditKind::CoordinatorAssigned)
                .by(&auth.identity)
                .doc(case)
                .subject(user),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/cases/{id}/coordinators/{user}`: an admin removes a
/// coordinator from a case.
pub async fn remove_coordinator(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((id, user)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    require_admin(&auth)?;
    let case = case_for(&state, &auth, &id)?;
    end_membership(
        &state,
        &auth,
        case,
        user,
        &[MemberRole::Coordinator],
        AuditKind::CoordinatorRemoved,
    )
    .await
}

// ----- devices -------------------------------------------------------------

/// `GET /api/devices`: the caller's own devices.
pub async fn list_devices(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let identity = state.inner.identity.clone();
    let user = auth.identity.user().to_string();
    let rows = blocking(move || identity.devices_of(&user)).await?;
    Ok(Json(json!({
        "current": auth.identity.device().as_str(),
        "devices": rows,
    }))
    .into_response())
}

async fn revoke_device_of(
    state: &AppState,
    auth: &Authenticated,
    user: String,
    device: String,
) -> Result<Response, AppError> {
    valid_user(&user)?;
    valid_device(&device)?;
    let identity = state.inner.identity.clone();
    let by = auth.identity.user().to_string();
    let now = now_ms();
    {
        let (user, device) = (user.clone(), device.clone());
        blocking(move || identity.revoke_device(&user, &device, &by, now)).await?;
    }
    state.inner.acl.revoke_device(&user, &device);
    let _ = state.inner.revocations.send(Revocation::Device {
        user: user.clone(),
        device: device.clone(),
    });
    state
        .inner
        .audit
        .record(
            AuditEvent::new(AuditKind::DeviceRevoked)
                .by(&auth.identity)
                .subject(format!("{user}:{device}")),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/devices/{device}`: a user revokes one of their own devices
/// (a lost or seized phone). Revoking the device making the request is
/// allowed too.
pub async fn revoke_own_device(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(device): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let user = auth.identity.user().to_string();
    revoke_device_of(&state, &auth, user, device).await
}

/// `DELETE /api/users/{user}/devices/{device}`: a coordinator revokes a
/// device of a member of one of their cases; an admin, any device. To
/// anyone else the user does not exist (404).
pub async fn revoke_user_device(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path((user, device)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let principal = Principal::of(&auth.identity);
    let allowed = match auth.identity.role() {
        Role::Admin => true,
        Role::Coordinator => state.inner.acl.cases_of(&principal).iter().any(|case| {
            state.inner.acl.is_case_coordinator(&principal, case)
                && state
                    .inner
                    .acl
                    .member_role(case, &user)
                    .is_some_and(MemberRole::is_family)
        }),
        Role::Relative => false,
    };
    if !allowed {
        return Err(AppError::NotFound);
    }
    revoke_device_of(&state, &auth, user, device).await
}

// ----- quarantine ----------------------------------------------------------

/// `GET /api/cases/{id}/quarantine`: changes held back from the case, for
/// its coordinators. Metadata only; the changes are not decoded here.
pub async fn list_quarantine(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    require_coordinator(&state, &auth, &case)?;
    let identity = state.inner.identity.clone();
    let rows = blocking(move || identity.quarantined(case, false)).await?;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|q| {
            json!({
                "id": q.id,
                "hash": crate::store::hex(&q.hash),
                "actor": crate::store::hex(&q.actor),
                "user": q.user,
                "device": q.device,
                "received_at_ms": q.received_at_ms,
                "reason": q.reason,
                "bytes": q.bytes.len(),
            })
        })
        .collect();
    Ok(Json(json!({ "quarantine": items })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    ids: Vec<i64>,
}

/// `POST /api/cases/{id}/quarantine/accept` with `{"ids": [...]}`: merges
/// the chosen quarantined changes into the case, in the order they
/// arrived, under the name of the device that sent them.
pub async fn accept_quarantined(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    decide(state, auth, id, body, true).await
}

/// `POST /api/cases/{id}/quarantine/discard` with `{"ids": [...]}`.
pub async fn discard_quarantined(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    decide(state, auth, id, body, false).await
}

async fn decide(
    state: AppState,
    auth: Result<Authenticated, AuthRejection>,
    id: String,
    body: Bytes,
    accept: bool,
) -> Result<Response, AppError> {
    let auth = authenticated(&state, auth)?;
    let case = case_for(&state, &auth, &id)?;
    require_coordinator(&state, &auth, &case)?;
    let body: DecisionBody = parse_json(&body)?;
    if body.ids.is_empty() || body.ids.len() > MAX_DECISIONS {
        return Err(AppError::BadRequest("ids must list 1 to 1000 changes"));
    }
    let identity = state.inner.identity.clone();
    let pending = blocking(move || identity.quarantined(case, false)).await?;
    let chosen: Vec<_> = pending
        .into_iter()
        .filter(|q| body.ids.contains(&q.id))
        .collect();
    if chosen.len() != body.ids.len() {
        return Err(AppError::NotFound);
    }
    let mut merged = 0;
    if accept {
        let changes = chosen
            .iter()
            .map(|q| {
                (
                    q.bytes.clone(),
                    Provenance {
                        user: q.user.clone(),
                        device: q.device.clone(),
                    },
                    q.received_at_ms,
                )
            })
            .collect();
        merged = state
            .inner
            .docs
            .merge(case, changes)
            .await
            .map_err(|e| AppError::Unavailable(e.to_string()))?
            .map_err(|e| {
                tracing::info!(error = %e, "quarantined change refused on merge");
                AppError::BadRequest("a quarantined change could not be merged")
            })?;
    }
    let identity = state.inner.identity.clone();
    let ids: Vec<i64> = chosen.iter().map(|q| q.id).collect();
    let by = auth.identity.user().to_string();
    let now = now_ms();
    let decided = {
        let ids = ids.clone();
        blocking(move || identity.decide_quarantined(case, &ids, accept, &by, now)).await?
    };
    state
        .inner
        .audit
        .record(
            AuditEvent::new(if accept {
                AuditKind::QuarantineAccepted
            } else {
                AuditKind::QuarantineDiscarded
            })
            .by(&auth.identity)
            .doc(case)
            .detail(json!({ "ids": decided, "merged_changes": merged })),
        )
        .await;
    Ok(Json(json!({ "decided": decided, "merged_changes": merged })).into_response())
}
