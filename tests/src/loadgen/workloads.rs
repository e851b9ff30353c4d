//! The five workloads of DESIGN.md section 8. Each returns a JSON object
//! with a `status`: `ok`, `failed` (with `failures`: it did not converge,
//! lost a change, or could not run) or `unavailable` (the server has no
//! such API). A failed run's timings are kept for diagnosis but are never
//! a result.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::{Automerge, ChangeHash};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sync_core::ids::DocumentId;
use sync_core::model;

use super::device::{at_heads, converged, Fleet, Plan, Progress, Registry, SimDevice};
use super::procwatch::{kib_to_mib, Phase};
use super::stats::{round3, summary};
use super::target::{Cases, Target, OWNER};
use super::LoadError;

/// The sizes of every workload (the CLI's defaults are the issue's).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub devices: usize,
    pub cases: usize,
    pub cases_per_device: usize,
    pub edits: usize,
    pub idle_devices: usize,
    pub idle_secs: u64,
    pub fanout_users: usize,
    pub fanout_cases: usize,
    pub rate: f64,
    pub duration_secs: u64,
    pub cold_changes: usize,
    pub cold_writers: usize,
    pub reconnect_edits: usize,
    pub timeout: Duration,
}

/// What a fleet left behind.
#[derive(Debug, Default)]
struct Collected {
    devices: Vec<SimDevice>,
    ack: Vec<Duration>,
    arrivals: Vec<Duration>,
    rx: u64,
    tx: u64,
    frames_rx: u64,
    frames_tx: u64,
    drops: u32,
    connections: u32,
    problems: Vec<String>,
}

fn collect(back: Vec<(SimDevice, Result<(), LoadError>)>) -> Collected {
    let mut c = Collected::default();
    for (mut d, result) in back {
        c.ack.append(&mut d.ack_latencies);
        c.arrivals.append(&mut d.arrival_latencies);
        c.rx += d.counters.rx();
        c.tx += d.counters.tx();
        c.frames_rx += d.counters.frames_rx();
        c.frames_tx += d.counters.frames_tx();
        c.drops += d.drops;
        c.connections += d.connections;
        if c.problems.len() < 5 {
            if let Err(e) = result {
                c.problems.push(format!("{}: {e}", d.name));
            } else if let Some(r) = d.drop_reasons.first() {
                c.problems.push(format!("{}: dropped: {r}", d.name));
            } else if let Some(e) = d.frame_errors.first().or(d.server_errors.first()) {
                c.problems.push(format!("{}: {e}", d.name));
            }
        }
        d.drops = 0;
        d.drop_reasons.clear();
        d.connections = 0;
        d.counters.reset();
        c.devices.push(d);
    }
    c
}

/// Latest moment any device's documents or acknowledgements changed,
/// after `t0`.
fn settled_after(snapshot: &[Progress], t0: Instant) -> Duration {
    snapshot
        .iter()
        .flat_map(|p| [p.last_change, p.last_ack])
        .flatten()
        .map(|t| t.saturating_duration_since(t0))
        .max()
        .unwrap_or_default()
}

/// What is wrong with the first device that has not converged.
fn first_mismatch(
    snapshot: &[Progress],
    expected: &BTreeMap<DocumentId, Vec<ChangeHash>>,
) -> String {
    for (i, p) in snapshot.iter().enumerate() {
        if p.pending > 0 || !p.plan_done {
            return format!(
                "device #{i}: {} changes unacknowledged, plan done: {}",
                p.pending, p.plan_done
            );
        }
        for (d, h) in &p.heads {
            let e = expected.get(d).cloned().unwrap_or_default();
            if *h != e {
                return format!(
                    "device #{i}: {d} at {} heads {:?}, expected {} {:?}",
                    h.len(),
                    h.iter()
                        .map(|x| x.to_string()[..8].to_owned())
                        .collect::<Vec<_>>(),
                    e.len(),
                    e.iter()
                        .map(|x| x.to_string()[..8].to_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
    }
    "every device at the expected heads".to_owned()
}

fn status(failures: &[String]) -> &'static str {
    if failures.is_empty() {
        "ok"
    } else {
        "failed"
    }
}

/// Makes `n` devices, `group` per user (users `{prefix}0..`), each user a
/// member of `per` random cases, which all its devices open.
async fn make_devices(
    t: &Target,
    prefix: &str,
    n: usize,
    group: usize,
    cases: &Cases,
    per: usize,
    rng: &mut StdRng,
) -> Result<Vec<SimDevice>, LoadError> {
    let group = group.max(1);
    let specs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{prefix}{}", i / group), format!("p{}", i % group)))
        .collect();
    let tokens = t.tokens(&specs).await?;
    let per = per.min(cases.ids.len());
    let users = n.div_ceil(group);
    let user_cases: Vec<Vec<DocumentId>> = (0..users)
        .map(|_| {
            rand::seq::index::sample(rng, cases.ids.len(), per)
                .into_iter()
                .map(|i| cases.ids[i])
                .collect()
        })
        .collect();
    let memberships: Vec<(Option<String>, DocumentId)> = (0..users)
        .flat_map(|u| {
            let token = tokens.get(u * group).cloned().flatten();
            user_cases[u].iter().map(move |c| (token.clone(), *c))
        })
        .collect();
    t.grant(&memberships).await?;
    let mut devices = Vec::with_capacity(n);
    for (i, ((user, name), token)) in specs.iter().zip(tokens).enumerate() {
        let mut d = SimDevice::new(user, name, token, rng.random())?;
        for doc in &user_cases[i / group] {
            d.open_empty(*doc);
        }
        devices.push(d);
    }
    Ok(devices)
}

/// Connects the devices until each has its cases at `base`, then closes
/// them (each keeps its sync state, as a phone does).
async fn fetch(
    t: &Target,
    devices: Vec<SimDevice>,
    base: &BTreeMap<DocumentId, Vec<ChangeHash>>,
    timeout: Duration,
) -> Result<Vec<SimDevice>, LoadError> {
    let n = devices.len();
    let fleet = Fleet::launch(devices, &t.fleet_options(None));
    let waited = fleet.wait_all(timeout, |p| at_heads(p, base)).await;
    let back = collect(fleet.stop().await?);
    if waited.missing > 0 {
        return Err(LoadError::other(format!(
            "setup: {} of {n} devices did not get their cases within {:.0} s ({:?})",
            waited.missing,
            timeout.as_secs_f64(),
            back.problems
        )));
    }
    Ok(back.devices)
}

/// A fresh device fetches every case and must reach exactly `expected`:
/// the server has every change, and nothing else.
async fn verify_server(
    t: &Target,
    tag: &str,
    expected: &BTreeMap<DocumentId, Vec<ChangeHash>>,
    timeout: Duration,
) -> Result<Option<String>, LoadError> {
    // The owner created every case, so its devices may read them all.
    let mut v = t.device(OWNER, &format!("verify-{tag}")).await?;
    for doc in expected.keys() {
        v.open_empty(*doc);
    }
    let fleet = Fleet::launch(vec![v], &t.fleet_options(None));
    let waited = fleet.wait_all(timeout, |p| at_heads(p, expected)).await;
    let snap = fleet.snapshot();
    fleet.stop().await?;
    if waited.missing == 0 {
        return Ok(None);
    }
    let wrong = snap
        .first()
        .map(|p| {
            p.heads
                .iter()
                .filter(|(d, h)| expected.get(d) != Some(h))
                .count()
        })
        .unwrap_or(expected.len());
    Ok(Some(format!(
        "a fresh device fetching from the server found {wrong} of {} cases without the expected heads after {:.0} s: changes are missing (or extra) on the server",
        expected.len(),
        timeout.as_secs_f64()
    )))
}

fn bytes_json(rx: u64, tx: u64, changes: usize) -> Value {
    json!({
        "bytes_from_server": rx,
        "bytes_to_server": tx,
        "bytes_total": rx + tx,
        "bytes_per_change": if changes > 0 { round3((rx + tx) as f64 / changes as f64) } else { 0.0 },
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

/// 1. Reconnect storm: every device fetched its cases, went offline, made
///    `edits` edits to each of them, and all reconnect at once.
pub async fn storm(t: &Target, s: &Sizes) -> Result<Value, LoadError> {
    let setup = Instant::now();
    let mut rng = StdRng::seed_from_u64(t.next_seed());
    let cases = t.create_cases(s.cases, "storm").await?;
    // One user per phone, as in a real storm.
    let devices = make_devices(t, "s", s.devices, 1, &cases, s.cases_per_device, &mut rng).await?;
    let mut devices = fetch(t, devices, &cases.base, s.timeout).await?;
    let registry = Arc::new(Registry::default());
    for d in &mut devices {
        for doc in d.docs.clone() {
            for _ in 0..s.edits {
                d.random_edit(&doc, &mut rng, Some(&registry))?;
            }
        }
    }
    let expected = registry.expected_heads(&cases.base);
    let changes = registry.len();
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!(
        "  storm: {} devices, {changes} offline changes ready ({setup_s:.1} s of setup); all reconnect now",
        devices.len()
    );

    let phase = Phase::start(t.watch());
    let mut options = t.fleet_options(None);
    options.dial_limit = None;
    let fleet = Fleet::launch(devices, &options);
    let t0 = fleet.started;
    let waited = fleet.wait_all(s.timeout, |p| converged(p, &expected)).await;
    let snapshot = fleet.snapshot();
    let usage = phase.finish();
    let back = collect(fleet.stop().await?);

    let mut failures = Vec::new();
    let unacked: usize = snapshot.iter().map(|p| p.pending).sum();
    if waited.missing > 0 {
        failures.push(format!(
            "{} of {} devices did not converge within {:.0} s ({unacked} changes never acknowledged); {:?}",
            waited.missing,
            snapshot.len(),
            s.timeout.as_secs_f64(),
            back.problems
        ));
    }
    if let Some(f) = verify_server(t, "storm", &expected, s.timeout).await? {
        failures.push(f);
    }
    let mut out = json!({
        "status": status(&failures),
        "failures": failures,
        "devices": s.devices,
        "cases": s.cases,
        "cases_per_device": s.cases_per_device.min(s.cases),
        "edits_per_device_per_case": s.edits,
        "changes": changes,
        "setup_s": round3(setup_s),
        "converge_s": round3(settled_after(&snapshot, t0).as_secs_f64()),
        "ack": summary(&back.ack),
        "dropped_sockets": back.drops,
        "connections": back.connections,
        "usage": usage.to_json(),
        "messages_from_server": back.frames_rx,
        "messages_to_server": back.frames_tx,
    });
    merge(&mut out, bytes_json(back.rx, back.tx, changes));
    Ok(out)
}

/// 2. Idle fleet: many devices connected, each with a few cases, doing
///    nothing.
pub async fn idle(t: &Target, s: &Sizes) -> Result<Value, LoadError> {
    let mut rng = StdRng::seed_from_u64(t.next_seed());
    let cases = t.create_cases(s.cases, "idle").await?;
    // Ten devices per user keeps the number of invitations down; a user's
    // devices share its cases.
    let devices = make_devices(
        t,
        "i",
        s.idle_devices,
        10,
        &cases,
        s.cases_per_device,
        &mut rng,
    )
    .await?;
    let n = devices.len();
    let watch = t.watch();
    // Let the server settle after the case creation before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = watch.and_then(|w| w.rss_kib());
    let phase = Phase::start(watch);
    let fleet = Fleet::launch(devices, &t.fleet_options(None));
    let connect_timeout = s.timeout.max(Duration::from_secs(n as u64 / 20));
    let waited = fleet
        .wait_all(connect_timeout, |p| at_heads(p, &cases.base))
        .await;
    let connect_s = waited.elapsed.as_secs_f64();
    eprintln!("  idle: {n} devices connected and synced in {connect_s:.1} s; idling");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_connected = watch.and_then(|w| w.rss_kib());
    let drops_before: u32 = fleet.snapshot().iter().map(|p| p.drops).sum();
    let cpu0 = watch.and_then(|w| w.cpu_secs());
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(s.idle_secs)).await;
    let idle_wall = idle_start.elapsed().as_secs_f64();
    let cpu1 = watch.and_then(|w| w.cpu_secs());
    let snapshot = fleet.snapshot();
    let drops_after: u32 = snapshot.iter().map(|p| p.drops).sum();
    let offline = snapshot.iter().filter(|p| !p.online).count();
    let usage = phase.finish();
    let back = collect(fleet.stop().await?);

    let mut failures = Vec::new();
    if waited.missing > 0 {
        failures.push(format!(
            "{} of {n} devices did not connect and sync within {:.0} s; {:?}",
            waited.missing,
            connect_timeout.as_secs_f64(),
            back.problems
        ));
    }
    let per_conn = rss_before
        .zip(rss_connected)
        .map(|(a, b)| (b as f64 - a as f64) / n.max(1) as f64);
    let idle_cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| 100.0 * (b - a) / idle_wall.max(1e-9));
    Ok(json!({
        "status": status(&failures),
        "failures": failures,
        "devices": n,
        "cases": s.cases,
        "cases_per_device": s.cases_per_device.min(s.cases),
        "connect_and_sync_s": round3(connect_s),
        "server_rss_before_mib": rss_before.map(kib_to_mib),
        "server_rss_connected_mib": rss_connected.map(kib_to_mib),
        "rss_per_connection_kib": per_conn.map(round3),
        "idle_window_s": round3(idle_wall),
        "idle_cpu_pct_of_one_core": idle_cpu.map(round3),
        "dropped_while_idle": drops_after.saturating_sub(drops_before),
        "offline_at_end": offline,
        "dropped_sockets": back.drops,
        "usage": usage.to_json(),
    }))
}

/// 3. Live fan-out: users on shared cases, each editing at a steady rate;
///    how long from one user's edit to its arrival on the others' devices.
pub async fn fanout(t: &Target, s: &Sizes) -> Result<Value, LoadError> {
    let mut rng = StdRng::seed_from_u64(t.next_seed());
    let cases = t.create_cases(s.fanout_cases.max(1), "fanout").await?;
    // One user per device: casesync limits messages per user.
    let specs: Vec<(String, String)> = (0..s.fanout_users)
        .map(|i| (format!("f{i}"), "p0".to_owned()))
        .collect();
    let tokens = t.tokens(&specs).await?;
    let memberships: Vec<(Option<String>, DocumentId)> = tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| (tok.clone(), cases.ids[i % cases.ids.len()]))
        .collect();
    t.grant(&memberships).await?;
    let period = Duration::from_secs_f64(1.0 / s.rate.max(0.001));
    let length = Duration::from_secs(s.duration_secs);
    let mut users_on: BTreeMap<DocumentId, usize> = BTreeMap::new();
    let mut devices = Vec::new();
    for (i, ((user, name), token)) in specs.iter().zip(tokens).enumerate() {
        let doc = cases.ids[i % cases.ids.len()];
        let mut d = SimDevice::new(user, name, token, rng.random())?;
        d.open_empty(doc);
        d.plan = Plan::Rate {
            doc,
            period,
            offset: period.mul_f64(rng.random::<f64>()),
            length,
        };
        *users_on.entry(doc).or_insert(0) += 1;
        devices.push(d);
    }
    let registry = Arc::new(Registry::default());
    let fleet = Fleet::launch(devices, &t.fleet_options(Some(registry.clone())));
    let waited = fleet
        .wait_all(s.timeout, |p| at_heads(p, &cases.base))
        .await;
    if waited.missing > 0 {
        let back = collect(fleet.stop().await?);
        return Err(LoadError::other(format!(
            "setup: {} users did not get their case: {:?}",
            waited.missing, back.problems
        )));
    }
    let phase = Phase::start(t.watch());
    fleet.go();
    let edit_end = fleet.wait_all(length + s.timeout, |p| p.plan_done).await;
    let expected = registry.expected_heads(&cases.base);
    let waited = fleet.wait_all(s.timeout, |p| converged(p, &expected)).await;
    let usage = phase.finish();
    let snapshot = fleet.snapshot();
    let back = collect(fleet.stop().await?);

    let made = registry.count_by_doc();
    let edits: usize = made.values().sum();
    let expected_arrivals: usize = made
        .iter()
        .map(|(d, n)| n * users_on.get(d).copied().unwrap_or(1).saturating_sub(1))
        .sum();
    let mut failures = Vec::new();
    if edit_end.missing > 0 || waited.missing > 0 {
        let unacked: usize = snapshot.iter().map(|p| p.pending).sum();
        failures.push(format!(
            "{} of {} users did not converge within {:.0} s of the end of editing ({unacked} changes never acknowledged); {:?}",
            waited.missing.max(edit_end.missing),
            snapshot.len(),
            s.timeout.as_secs_f64(),
            back.problems
        ));
    } else if back.arrivals.len() != expected_arrivals {
        failures.push(format!(
            "{} arrivals seen, {expected_arrivals} expected",
            back.arrivals.len()
        ));
    }
    if let Some(f) = verify_server(t, "fanout", &expected, s.timeout).await? {
        failures.push(f);
    }
    let mut out = json!({
        "status": status(&failures),
        "failures": failures,
        "users": s.fanout_users,
        "cases": cases.ids.len(),
        "target_rate_per_user": s.rate,
        "edit_secs": s.duration_secs,
        "edits": edits,
        "achieved_edits_per_s": round3(edits as f64 / length.as_secs_f64().max(1e-9)),
        "arrivals": back.arrivals.len(),
        "expected_arrivals": expected_arrivals,
        "arrival": summary(&back.arrivals),
        "ack": summary(&back.ack),
        "dropped_sockets": back.drops,
        "usage": usage.to_json(),
    });
    merge(&mut out, bytes_json(back.rx, back.tx, edits));
    Ok(out)
}

/// What the cold load leaves for the history query.
#[derive(Debug)]
pub struct ColdCase {
    pub doc: DocumentId,
    pub fetched: Automerge,
    pub changes: usize,
}

/// 4. Cold load: a case with many changes from a few writers; the server
///    restarts; a fresh device fetches it. Then one writer makes a few
///    offline edits and reconnects with the sync state it kept.
pub async fn cold(t: &Target, s: &Sizes) -> Result<(Value, Option<ColdCase>), LoadError> {
    let (mut out, case) = build_big_case(t, s).await?;
    let Some((doc, base, registry, mut writers)) = case else {
        return Ok((out, None));
    };
    let mut failures: Vec<String> = Vec::new();
    let expected = registry.expected_heads(&base);
    // The peer writes to disk about 100 ms after it acknowledges; give
    // both servers the same quiet time before the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = t.restart().await?;
    let watch = t.watch();
    let rss_before = watch.and_then(|w| w.rss_kib());

    let mut fresh = t.device(OWNER, "fresh-cold").await?;
    fresh.open_empty(doc);
    let phase = Phase::start(watch);
    let mut options = t.fleet_options(None);
    options.dial_limit = None;
    let fleet = Fleet::launch(vec![fresh], &options);
    let t0 = fleet.started;
    let waited = fleet.wait_all(s.timeout, |p| at_heads(p, &expected)).await;
    let fetch_s = settled_after(&fleet.snapshot(), t0).as_secs_f64();
    let usage = phase.finish();
    let mut back = collect(fleet.stop().await?);
    if waited.missing > 0 {
        failures.push(format!(
            "the fresh device did not get the whole case within {:.0} s after the restart: {:?}",
            s.timeout.as_secs_f64(),
            back.problems
        ));
    }
    let fetched = back
        .devices
        .pop()
        .and_then(|d| d.doc(&doc).cloned())
        .unwrap_or_default();

    // The reconnect of a writer that kept its sync state.
    let mut rng = StdRng::seed_from_u64(t.next_seed());
    let mut reconnect = json!({});
    if let Some(mut w) = writers.pop() {
        for _ in 0..s.reconnect_edits {
            let edit = super::edits::blind_edit(&mut rng, &w.name)?;
            w.edit(&doc, &edit, Some(&registry))?;
        }
        let expected = registry.expected_heads(&base);
        let fleet = Fleet::launch(vec![w], &options);
        let t1 = fleet.started;
        let waited = fleet.wait_all(s.timeout, |p| converged(p, &expected)).await;
        let took = settled_after(&fleet.snapshot(), t1).as_secs_f64();
        let back = collect(fleet.stop().await?);
        if waited.missing > 0 {
            failures.push(format!(
                "the writer's reconnect with {} new edits did not converge: {:?}",
                s.reconnect_edits, back.problems
            ));
        }
        reconnect = json!({
            "edits": s.reconnect_edits,
            "converge_ms": round3(took * 1e3),
            "bytes_from_server": back.rx,
            "bytes_to_server": back.tx,
            "bytes_total": back.rx + back.tx,
        });
    }
    let changes = fetched.get_changes_meta(&[]).len();
    merge(
        &mut out,
        json!({
            "status": status(&failures),
            "failures": failures,
            "restarted": restarted,
            "fetch_ms": round3(fetch_s * 1e3),
            "fetch_server_cpu_ms": usage.server_cpu_s.map(|c| round3(c * 1e3)),
            "fetch_bytes_from_server": back.rx,
            "fetch_bytes_to_server": back.tx,
            "server_rss_before_fetch_mib": rss_before.map(kib_to_mib),
            "server_rss_after_fetch_mib": usage.rss_end_kib.map(kib_to_mib),
            "server_rss_growth_mib": rss_before.zip(usage.rss_end_kib).map(|(a, b)| round3(kib_to_mib(b) - kib_to_mib(a))),
            "reconnect": reconnect,
            "usage": usage.to_json(),
        }),
    );
    Ok((
        out,
        Some(ColdCase {
            doc,
            fetched,
            changes,
        }),
    ))
}

type BigCase = (
    DocumentId,
    BTreeMap<DocumentId, Vec<ChangeHash>>,
    Arc<Registry>,
    Vec<SimDevice>,
);

/// Writers fill one case with `cold_changes` changes, each batch after the
/// last was acknowledged, and converge.
async fn build_big_case(t: &Target, s: &Sizes) -> Result<(Value, Option<BigCase>), LoadError> {
    let start = Instant::now();
    let cases = t.create_cases(1, "cold").await?;
    let doc = cases.ids[0];
    let w = s.cold_writers.max(1);
    let mut writers = Vec::with_capacity(w);
    let mut memberships = Vec::with_capacity(w);
    for i in 0..w {
        let mut d = t.device(&format!("w{i}"), "p0").await?;
        memberships.push((t.token(&format!("w{i}"), "p0", "relative").await?, doc));
        d.open_empty(doc);
        let share = s.cold_changes / w + usize::from(i < s.cold_changes % w);
        d.plan = Plan::Bulk {
            doc,
            left: share,
            batch: 100,
        };
        writers.push(d);
    }
    t.grant(&memberships).await?;
    // The bulk plans run without a registry (no arrival bookkeeping while
    // building); the changes are read back from the writers' copies below.
    let fleet = Fleet::launch(writers, &t.fleet_options(None));
    let build_timeout = s.timeout * 5;
    let done = fleet
        .wait_all(build_timeout, |p| p.plan_done && p.pending == 0)
        .await;
    let back = collect(fleet.stop().await?);
    let registry = Arc::new(Registry::default());
    let mut failures = Vec::new();
    let base = cases.base.clone();
    let made: usize = back.devices.iter().map(|d| d.edits_made).sum();
    let mut union = Automerge::new();
    for d in &back.devices {
        if let Some(am) = d.doc(&doc) {
            let mut copy = am.clone();
            union
                .merge(&mut copy)
                .map_err(|e| LoadError::other(format!("merging the writers' copies: {e}")))?;
        }
    }
    // Every change, the server's template included, so that the deps of
    // the base heads are known too.
    for meta in union.get_changes_meta(&[]) {
        registry.insert(
            meta.hash,
            super::device::Made {
                doc,
                at: Instant::now(),
                deps: meta.deps.clone(),
            },
        );
    }
    let expected = registry.expected_heads(&base);
    // A blind edit that sets a register to the value it has makes no
    // change, so `made` may be a little under `cold_changes`.
    if done.missing > 0 {
        failures.push(format!(
            "{} writers did not finish (made {made} of {} changes) or not every change was acknowledged within {:.0} s: {:?}",
            done.missing,
            s.cold_changes,
            build_timeout.as_secs_f64(),
            back.problems
        ));
    }
    // Every writer must hold the whole case: converge them once more.
    let fleet = Fleet::launch(back.devices, &t.fleet_options(None));
    let waited = fleet.wait_all(s.timeout, |p| converged(p, &expected)).await;
    let snapshot = fleet.snapshot();
    let back = collect(fleet.stop().await?);
    if waited.missing > 0 {
        failures.push(format!(
            "{} writers did not converge on the big case: {}; {:?}",
            waited.missing,
            first_mismatch(&snapshot, &expected),
            back.problems
        ));
    }
    let build_s = start.elapsed().as_secs_f64();
    eprintln!("  cold: {made} changes from {w} writers in {build_s:.1} s");
    let out = json!({
        "status": status(&failures),
        "failures": failures.clone(),
        "changes": made,
        "writers": w,
        "build_s": round3(build_s),
    });
    if !failures.is_empty() {
        return Ok((out, None));
    }
    Ok((out, Some((doc, base, registry, back.devices))))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// 5. History: the change list and a view at one point of the big case,
///    from casesync's history API (issue 6's paths); what the same costs a
///    client holding the whole document, for both servers.
pub async fn history(t: &Target, case: &ColdCase) -> Result<Value, LoadError> {
    let metas = case.fetched.get_changes_meta(&[]);
    let Some(mid) = metas.get(metas.len() / 2).map(|m| m.hash) else {
        return Err(LoadError::other("the cold case is empty".to_owned()));
    };
    // Client side: list every change's metadata; read the case at `mid`.
    let start = Instant::now();
    let list: Vec<(ChangeHash, u64, i64)> = case
        .fetched
        .get_changes_meta(&[])
        .into_iter()
        .map(|m| (m.hash, m.seq, m.timestamp))
        .collect();
    let client_list_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let view = model::read_case_at(&case.fetched, &[mid]);
    let client_view_ms = start.elapsed().as_secs_f64() * 1e3;
    let client = json!({
        "change_list_ms": round3(client_list_ms),
        "changes_listed": list.len(),
        "view_at_point_ms": round3(client_view_ms),
        "view_ok": view.is_ok(),
        "note": "what a client that fetched the whole document pays: automerge's change metadata, and the typed case read at one change",
    });
    let Some(api) = t.api() else {
        return Ok(json!({
            "status": "client-side",
            "failures": [],
            "note": "the peer has no history API; the client-side figures are the cost instead (after the cold fetch of the whole document)",
            "changes": case.changes,
            "client_side": client,
        }));
    };
    let admin = t
        .token("admin", "console", "admin")
        .await?
        .ok_or_else(|| LoadError::other("no admin token".to_owned()))?;
    let url = case.doc.to_url();
    let paths = [
        ("change_list", format!("/api/cases/{url}/history?limit=50")),
        ("view_at_point", format!("/api/cases/{url}/at/{mid}")),
    ];
    let mut server = serde_json::Map::new();
    let mut failures = Vec::new();
    let mut missing = false;
    for (name, path) in paths {
        let mut times = Vec::new();
        let mut last_status = 0;
        for _ in 0..5 {
            let start = Instant::now();
            let (code, _body) = api.get_json(&path, &admin).await?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            last_status = code;
            if code != 200 {
                break;
            }
        }
        if last_status == 404 || last_status == 405 {
            missing = true;
        } else if last_status != 200 {
            failures.push(format!("GET {path} answered {last_status}"));
        }
        server.insert(
            name.to_owned(),
            json!({
                "path": path,
                "status": last_status,
                "first_ms": round3(times.first().copied().unwrap_or(0.0)),
                "median_ms": round3(median(times)),
            }),
        );
    }
    let status = if missing && failures.is_empty() {
        "unavailable"
    } else {
        status(&failures)
    };
    let mut out = json!({
        "status": status,
        "failures": failures,
        "changes": case.changes,
        "server": server,
        "client_side": client,
    });
    if missing {
        merge(
            &mut out,
            json!({ "note": "casesync answered 404: the history API (issue 6) is not on this server yet" }),
        );
    }
    Ok(out)
}
