//! Waiting, with a timeout as the failure guard.
//!
//! Waits on devices wake whenever any of them changes state; waits on the
//! server (HTTP) poll. A timeout is an error that says what was awaited.

use std::future::Future;
use std::time::Duration;

use automerge::ChangeHash;
use futures_util::future::select_all;
use sync_core::ids::DocumentId;
use tokio::time::Instant;

use crate::device::TestDevice;
use crate::error::HarnessError;

/// Waits re-check their predicate at least this often, in case it depends
/// on something that does not wake them.
const RECHECK: Duration = Duration::from_millis(250);
/// How often server-side conditions are polled.
const POLL: Duration = Duration::from_millis(25);

fn timeout_error(what: &str, timeout: Duration) -> HarnessError {
    HarnessError::Timeout {
        what: what.to_owned(),
        secs: timeout.as_secs_f64(),
    }
}

/// Waits until `pred` holds, re-checking whenever one of `devices` changes.
pub async fn until(
    devices: &[&TestDevice],
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    // Subscribed before the first check, so no change is missed between
    // the check and the wait.
    let mut receivers: Vec<_> = devices.iter().map(|d| d.subscribe()).collect();
    loop {
        if pred() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(timeout_error(what, timeout));
        }
        let nap = (deadline - now).min(RECHECK);
        if receivers.is_empty() {
            tokio::time::sleep(nap).await;
        } else {
            let changed = select_all(receivers.iter_mut().map(|rx| Box::pin(rx.changed())));
            let _ = tokio::time::timeout(nap, changed).await;
        }
    }
}

/// Waits until an async check (usually an HTTP request) returns true.
pub async fn wait_for_async<F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
) -> Result<(), HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Ok(true) = tokio::time::timeout(remaining, check()).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timeout_error(what, timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// True when every device is online, has every change of `doc`
/// acknowledged, and all have the same non-empty heads.
pub fn converged(devices: &[&TestDevice], doc: &DocumentId) -> bool {
    let mut heads: Option<Vec<ChangeHash>> = None;
    for d in devices {
        let (online, unacked, h) =
            d.inspect(|s| (s.is_online(), s.unacknowledged(doc), s.heads(doc)));
        if !online || unacked != 0 || h.is_empty() {
            return false;
        }
        match &heads {
            Some(first) if *first != h => return false,
            Some(_) => {}
            None => heads = Some(h),
        }
    }
    true
}

/// Waits until the devices have converged on `doc` (see [`converged`]) and
/// returns the common heads.
pub async fn until_converged(
    devices: &[&TestDevice],
    doc: &DocumentId,
    timeout: Duration,
) -> Result<Vec<ChangeHash>, HarnessError> {
    let result = until(devices, timeout, "the devices to converge", || {
        converged(devices, doc)
    })
    .await;
    if let Err(HarnessError::Timeout { what, secs }) = result {
        let states: Vec<String> = devices
            .iter()
            .map(|d| {
                d.inspect(|s| {
                    format!(
                        "{}: online={} unacked={} heads={:?} closes={:?}",
                        d.peer_id(),
                        s.is_online(),
                        s.unacknowledged(doc),
                        s.heads(doc),
                        s.closes()
                    )
                })
            })
            .collect();
        return Err(HarnessError::Timeout {
            what: format!("{what}\n  {}", states.join("\n  ")),
            secs,
        });
    }
    Ok(devices.first().map(|d| d.heads(doc)).unwrap_or_default())
}

/// Waits until none of the devices has an unacknowledged change of `doc`.
pub async fn until_acknowledged(
    devices: &[&TestDevice],
    doc: &DocumentId,
    timeout: Duration,
) -> Result<(), HarnessError> {
    until(devices, timeout, "every change acknowledged", || {
        devices.iter().all(|d| d.unacknowledged(doc) == 0)
    })
    .await
}
