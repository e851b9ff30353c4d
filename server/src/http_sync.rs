//! `POST /sync/http`: the protocol over plain HTTP, for networks that break
//! WebSockets (captive portals, some proxies, links that drop long-lived
//! connections).
//!
//! One request carries protocol frames for any number of cases; its
//! response carries the replies. Body and response are the same binary
//! framing: each frame is a 4-byte big-endian length followed by that many
//! bytes (the frames themselves are the WebSocket's CBOR messages). The
//! server keeps a session per device between requests, so sync state
//! carries over exactly as on a socket; a session idle for
//! [`SESSION_IDLE`] is dropped, and the device starts again with `join`.
//! Authentication, guards and authorization are the same code as the
//! WebSocket's: frames go through the same `Conn`.
//!
//! `?wait=MS` (at most 25 s) holds the response until something arrives for
//! the device, for long polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sync_core::ids::PeerId;
use tokio::sync::{broadcast, Mutex};

use crate::app::{AppState, Revocation};
use crate::auth::{AuthRejection, Authenticated};
use crate::docs::OutboundRx;
use crate::error::AppError;
use crate::ws::{Conn, Flow};

/// How long a device's HTTP session survives without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(120);
/// The longest a request may wait for news (long polling).
const MAX_WAIT: Duration = Duration::from_secs(25);
/// After the first reply, how long to keep collecting: the actors answer
/// within one group commit.
const GRACE: Duration = Duration::from_millis(150);
/// Frames in one request.
const MAX_FRAMES: usize = 1024;

struct HttpSession {
    conn: Conn,
    out_rx: OutboundRx,
    /// Revocations since the session began; a hit ends the session.
    revocations: broadcast::Receiver<Revocation>,
    last_used: Instant,
}

impl HttpSession {
    /// Whether a revocation since the last request concerns this session.
    fn revoked(&mut self) -> bool {
        loop {
            match self.revocations.try_recv() {
                Ok(r) => {
                    if let Flow::Close(..) = self.conn.handle_revocation(Ok(r)) {
                        return true;
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    let lagged = Err(broadcast::error::RecvError::Lagged(n));
                    if let Flow::Close(..) = self.conn.handle_revocation(lagged) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

/// The live HTTP sessions, one per device.
#[derive(Default)]
pub struct Sessions {
    // A std Mutex guards only the map; each session has its own tokio
    // Mutex, held across `.await` while one request of that device runs
    // (requests of one device are processed in order, as on a socket).
    map: std::sync::Mutex<HashMap<PeerId, Arc<Mutex<HttpSession>>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Sessions").field("count", &n).finish()
    }
}

#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    wait: Option<u64>,
}

/// Splits the request body into frames.
pub fn decode_frames(body: &[u8], max_frame: usize) -> Result<Vec<&[u8]>, &'static str> {
    let mut frames = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(4).ok_or("truncated frame length")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > max_frame {
            return Err("frame too large");
        }
        let (frame, tail) = tail.split_at_checked(len).ok_or("truncated frame")?;
        frames.push(frame);
        if frames.len() > MAX_FRAMES {
            return Err("too many frames in one request");
        }
        rest = tail;
    }
    Ok(frames)
}

/// Joins frames into a response body.
pub fn encode_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 4).sum());
    for f in frames {
        // Frames come from our own encoder and are far below 4 GiB.
        let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

pub async fn sync_http(
    State(state): State<AppState>,
    auth: Result<Authenticated, AuthRejection>,
    Query(query): Query<SyncQuery>,
    body: Bytes,
) -> Result<Response, AppError> {
    let auth = auth.map_err(|r| {
        state.inner.metrics.auth_failures.inc();
        state.inner.audit.auth_failed(&r.0, "/sync/http");
        AppError::Auth(r)
    })?;
    let limits = &state.inner.config.limits;
    let frames = decode_frames(&body, limits.max_frame_bytes).map_err(|e| {
        state.inner.metrics.rejected_inputs.inc();
        AppError::BadRequest(e)
    })?;
    let sessions = &state.inner.http_sessions;
    sweep(sessions).await;

    let peer = auth.identity.peer_id().clone();
    let new_session = || {
        let (conn, out_rx) = Conn::new(state.clone(), auth.identity.clone());
        Arc::new(Mutex::new(HttpSession {
            conn,
            out_rx,
            revocations: state.inner.revocations.subscribe(),
            last_used: Instant::now(),
        }))
    };
    let session = {
        let mut map = sessions
            .map
            .lock()
            .map_err(|_| AppError::Internal("session map poisoned".into()))?;
        map.entry(peer.clone()).or_insert_with(new_session).clone()
    };
    let mut s = session.lock().await;
    if s.revoked() {
        // Its standing changed: end the old session (as a socket would be
        // closed) and answer this request from a fresh one.
        s.conn.cleanup().await;
        drop(s);
        let fresh = new_session();
        if let Ok(mut map) = sessions.map.lock() {
            map.insert(peer.clone(), fresh.clone());
        }
        return Box::pin(sync_http_session(state.clone(), fresh, peer, query, frames)).await;
    }
    drop(s);
    sync_http_session(state.clone(), session, peer, query, frames).await
}

/// One request's frames through the device's session.
async fn sync_http_session(
    state: AppState,
    session: Arc<Mutex<HttpSession>>,
    peer: PeerId,
    query: SyncQuery,
    frames: Vec<&[u8]>,
) -> Result<Response, AppError> {
    let sessions = &state.inner.http_sessions;
    let mut s = session.lock().await;
    s.last_used = Instant::now();
    let mut closed = false;
    for frame in frames {
        if let Flow::Close(_, reason) = s.conn.handle_frame(frame).await {
            if reason == crate::ws::RATE_LIMITED {
                // As a socket would be closed: the session ends, and the
                // device hears 429 and backs off.
                s.conn.cleanup().await;
                drop(s);
                if let Ok(mut map) = sessions.map.lock() {
                    map.remove(&peer);
                }
                return Err(AppError::RateLimited);
            }
            closed = true;
            break;
        }
    }
    let mut out = Vec::new();
    while let Some(f) = s.conn.poll_transmit() {
        out.push(f);
    }
    if !closed {
        // Collect what the document actors answer (after their fsync), and
        // for long polls wait for the first news.
        let wait = Duration::from_millis(query.wait.unwrap_or(0)).min(MAX_WAIT);
        let first = if out.is_empty() {
            wait.max(GRACE)
        } else {
            GRACE
        };
        let mut deadline = tokio::time::Instant::now() + first;
        loop {
            let s = &mut *s;
            let flow = tokio::select! {
                msg = tokio::time::timeout_at(deadline, s.out_rx.recv()) => match msg {
                    Ok(Some(msg)) => s.conn.handle_outbound(*msg),
                    _ => break,
                },
                // A revocation ends a long poll at once.
                r = s.revocations.recv() => s.conn.handle_revocation(r),
            };
            if let Flow::Close(..) = flow {
                closed = true;
            }
            while let Some(f) = s.conn.poll_transmit() {
                out.push(f);
            }
            if closed {
                break;
            }
            deadline = tokio::time::Instant::now() + GRACE;
        }
    }
    if closed {
        s.conn.cleanup().await;
        drop(s);
        if let Ok(mut map) = sessions.map.lock() {
            map.remove(&peer);
        }
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encode_frames(&out),
    )
        .into_response())
}

/// Drops sessions idle for longer than [`SESSION_IDLE`].
async fn sweep(sessions: &Sessions) {
    let stale: Vec<Arc<Mutex<HttpSession>>> = {
        let Ok(mut map) = sessions.map.lock() else {
            return;
        };
        let mut stale = Vec::new();
        map.retain(|_, s| match s.try_lock() {
            Ok(g) if g.last_used.elapsed() > SESSION_IDLE => {
                drop(g);
                stale.push(s.clone());
                false
            }
            _ => true,
        });
        stale
    };
    for s in stale {
        s.lock().await.conn.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_framing_is_refused() {
        let frames = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let body = encode_frames(&frames);
        let back = decode_frames(&body, 1024).expect("valid");
        assert_eq!(back, vec![&[1u8, 2, 3][..], &[][..], &[9u8; 300][..]]);
        assert_eq!(
            decode_frames(&body[..2], 1024),
            Err("truncated frame length")
        );
        assert_eq!(decode_frames(&body[..5], 1024), Err("truncated frame"));
        assert_eq!(decode_frames(&body, 100), Err("frame too large"));
        let huge = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_frames(&huge, 1 << 20), Err("frame too large"));
    }
}
