//! Power loss: the server runs on a filesystem that forgets every write not
//! made durable by `fsync` (`casesync_tests::powercut`), a phone writes to a
//! case, and the power is cut at a seeded moment: at a random time, at a
//! random filesystem operation (often between a WAL write and its fsync),
//! during a WAL checkpoint, or right after an acknowledgement. A new server
//! then starts on what the disk kept. `casesync check` passes, every change
//! the phone was told is stored is there, and the phone re-sends the rest.
//!
//! The shipped configuration passes 200 such runs. The negative control runs
//! the same procedure with `CASESYNC_TEST_UNSAFE_SYNCHRONOUS=NORMAL` (commits
//! no longer fsync the WAL) and must lose an acknowledged change, so this
//! test can fail. A third test shows the filesystem itself drops unsynced
//! data.
//!
//! `CASESYNC_POWER_SEED` replays the runs (the seed is printed);
//! `CASESYNC_POWER_RUN=N` runs only run N of that seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use automerge::transaction::Transactable as _;
use automerge::ChangeHash;
use casesync_tests::powercut::{CutReport, CutTrigger, PowerCutFs};
use casesync_tests::{binary_path, workload, Api, HarnessError, TestDevice};
use common::{hex_heads, sorted, PATIENCE};
use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_core::ids::DocumentId;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Runs of the shipped configuration, each with its own cut.
const RUNS: u64 = 200;
/// Runs going on at once (each has its own filesystem and server).
const PARALLEL: usize = 3;
/// Runs of the negative control, of which at least one must lose an
/// acknowledged change.
const CONTROL_RUNS: u64 = 10;
/// The database file: only checkpoints write it once the WAL exists.
const DB_FILE: &str = "casesync.db";
const LISTENING: &str = "casesync listening on http://";
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn seed() -> u64 {
    std::env::var("CASESYNC_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0b1a_c0c7_5eed)
}

fn only_run() -> Option<u64> {
    std::env::var("CASESYNC_POWER_RUN")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// When the power goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cut {
    /// This many milliseconds into a stream of edits.
    AtTime(u64),
    /// Before the N-th mutating filesystem operation once edits start.
    AtOperation(u64),
    /// Before the N-th write of the database file once edits start: only a
    /// checkpoint writes it, so bulky edits fill the WAL until one runs.
    InCheckpoint(u64),
    /// Right after the phone saw its last edit acknowledged.
    AfterAck,
}

impl Cut {
    fn draw(rng: &mut ChaCha8Rng) -> Self {
        match rng.random_range(0..20) {
            0..=6 => Cut::AtTime(rng.random_range(0..400)),
            7..=14 => Cut::AtOperation(rng.random_range(1..300)),
            15..=16 => Cut::InCheckpoint(rng.random_range(1..40)),
            _ => Cut::AfterAck,
        }
    }
}

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    cut: Cut,
    report: CutReport,
    made: usize,
    acked: usize,
    /// The phone's edits covered by the acknowledged heads.
    acked_edits: usize,
    /// Acknowledged changes missing after the restart.
    lost: Vec<ChangeHash>,
    /// The server after the cut still had the case.
    case_survived: bool,
    /// The servers' log, when something was lost.
    log_tail: String,
    took: Duration,
}

/// A `casesync serve` process on some data directory.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Served {
    async fn start(data_dir: &Path, log: &Path, unsafe_normal: bool) -> Result<Self, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("log {}: {e}", log.display()))?;
        let mut cmd = Command::new(binary_path());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        for var in [
            "CASESYNC_LISTEN",
            "CASESYNC_DATA_DIR",
            "CASESYNC_CONFIG",
            "CASESYNC_IDLE_UNLOAD_SECS",
            "CASESYNC_TEST_UNSAFE_SYNCHRONOUS",
        ] {
            cmd.env_remove(var);
        }
        if unsafe_normal {
            cmd.env("CASESYNC_TEST_UNSAFE_SYNCHRONOUS", "NORMAL");
        }
        cmd.env("CASESYNC_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary_path().display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    return rest.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(addr) = addr else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!(
                "the server did not start on {}:\n{}",
                data_dir.display(),
                tail(log)
            ));
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, addr })
    }

    fn api(&self) -> Api {
        Api::new(self.addr).expect("an HTTP client")
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    /// SIGKILL, and wait until the process is gone (and so has closed every
    /// file on the filesystem).
    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn casesync(args: &[&str], data_dir: &Path) -> Result<String, String> {
    let out = Command::new(binary_path())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CASESYNC_DATA_DIR")
        .env_remove("CASESYNC_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("casesync {args:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "casesync {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

async fn token(data_dir: &Path, device: &str) -> Result<String, String> {
    let out = casesync(&["token", "--user", "olena", "--device", device], data_dir).await?;
    Ok(out.trim().to_owned())
}

/// One edit the phone makes: a random small one, or (to fill the WAL until
/// a checkpoint) 48 KiB of random bytes in one value, which no model edit
/// allows but the server stores like any other change.
fn one_edit(
    phone: &TestDevice,
    doc: &DocumentId,
    rng: &mut ChaCha8Rng,
    bulky: bool,
) -> Result<Option<ChangeHash>, HarnessError> {
    if bulky {
        let filler: Vec<u8> = (0..48 * 1024).map(|_| rng.random()).collect();
        let heads = phone.edit_raw(doc, move |am| {
            am.transact::<_, _, automerge::AutomergeError>(|tx| {
                tx.put(automerge::ROOT, "powercut_filler", filler)?;
                Ok(())
            })
            .map(|_| am.get_heads())
            .map_err(|failure| failure.error.to_string())
        })?;
        return Ok(heads.map_err(HarnessError::Unexpected)?.first().copied());
    }
    let edit = workload::random_edit(rng, &phone.read_case(doc)?, "p")?;
    phone.edit(doc, &edit)
}

/// The document as the server holding `data_dir` has it, fetched by a fresh
/// device; `None` when the server does not have the case at all.
async fn stored_doc(
    server: &Served,
    data_dir: &Path,
    doc: &DocumentId,
) -> Result<Option<automerge::Automerge>, String> {
    let auditor_token = token(data_dir, "auditor").await?;
    let stored = match server.api().get_case(&auditor_token, doc).await {
        Ok(view) => sorted(view.heads),
        Err(HarnessError::Status { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(format!("GET the case: {e}")),
    };
    let mut auditor =
        TestDevice::new("olena", "auditor", auditor_token).map_err(|e| e.to_string())?;
    auditor.open(*doc);
    auditor
        .connect_url(&server.ws_url())
        .await
        .map_err(|e| format!("auditor: {e}"))?;
    auditor
        .wait_until(PATIENCE, "the stored case", |s| {
            hex_heads(&s.heads(doc)) == stored
        })
        .await
        .map_err(|e| format!("auditor: {e}"))?;
    let out = auditor.doc(doc);
    auditor.disconnect().await;
    Ok(out)
}

/// One run: a fresh filesystem, a server on it, a phone writing, a cut, a
/// new server on what survived. `Err` is a failure of the harness or of
/// the server; a lost acknowledged change is in `Outcome::lost`.
async fn run_once(run_seed: u64, cut: Cut, unsafe_normal: bool) -> Result<Outcome, String> {
    let scratch = tempfile::Builder::new()
        .prefix("casesync-power-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    match run_in(scratch.path(), run_seed, cut, unsafe_normal).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Keep the durable image and the log for whoever investigates.
            let kept = scratch.keep();
            Err(format!(
                "{e}\n(image and server.log kept in {})",
                kept.display()
            ))
        }
    }
}

async fn run_in(
    scratch: &Path,
    run_seed: u64,
    cut: Cut,
    unsafe_normal: bool,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(run_seed);
    let log = scratch.join("server.log");
    let fs = PowerCutFs::mount().map_err(|e| e.to_string())?;

    // Step 1: the operator creates the data directory (durably), and the
    // server starts on it.
    let data_dir = fs.path().join("data");
    std::fs::create_dir(&data_dir).map_err(|e| format!("mkdir on the mount: {e}"))?;
    std::fs::File::open(fs.path())
        .and_then(|root| root.sync_all())
        .map_err(|e| format!("fsync the mount's root: {e}"))?;
    let server = Served::start(&data_dir, &log, unsafe_normal).await?;
    // Everything the start wrote must already be durable (`storage-id`
    // once was not: `storage_id_is_durable_from_the_first_start`). The
    // `-shm` file is never synced, by design: SQLite rebuilds it.
    let settled = fs.sync_all();
    let needed: Vec<String> = settled
        .unsynced
        .keys()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.ends_with("-shm"))
        .collect();
    // (With synchronous=NORMAL the WAL is unsynced too: that is what the
    // control must catch later, from lost acknowledgements.)
    let allowed = |n: &String| unsafe_normal && n.ends_with("-wal");
    if !needed.iter().all(allowed) || settled.unsynced_dirs > 0 {
        return Err(format!(
            "the start left files unsynced: {needed:?}, {} directories",
            settled.unsynced_dirs
        ));
    }

    // Step 2: Olena creates a case and opens it on her phone.
    let web = token(&data_dir, "web").await?;
    let doc = server
        .api()
        .create_case(&web, &[("military.unit", "93rd brigade")])
        .await
        .map_err(|e| format!("create the case: {e}"))?
        .id;
    let mut phone = TestDevice::new("olena", "phone", token(&data_dir, "phone").await?)
        .map_err(|e| e.to_string())?;
    phone.open(doc);
    phone
        .connect_url(&server.ws_url())
        .await
        .map_err(|e| format!("phone: {e}"))?;
    phone
        .wait_until(PATIENCE, "the case on the phone", |s| {
            !s.heads(&doc).is_empty()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut made: BTreeSet<ChangeHash> = BTreeSet::new();

    // Step 3: she writes, and the power goes.
    let bulky = matches!(cut, Cut::InCheckpoint(_));
    match &cut {
        Cut::AtOperation(n) => fs.arm(CutTrigger {
            after: *n,
            file: None,
        }),
        Cut::InCheckpoint(n) => fs.arm(CutTrigger {
            after: *n,
            file: Some(DB_FILE.into()),
        }),
        Cut::AtTime(_) | Cut::AfterAck => {}
    }
    let edits_started = Instant::now();
    match &cut {
        Cut::AtTime(ms) => {
            while edits_started.elapsed() < Duration::from_millis(*ms) {
                made.extend(one_edit(&phone, &doc, &mut rng, false).map_err(|e| e.to_string())?);
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
            }
            fs.cut();
        }
        Cut::AtOperation(_) | Cut::InCheckpoint(_) => {
            // The trigger cuts; a run that never reaches it is cut by hand.
            let limit = Duration::from_secs(if bulky { 20 } else { 5 });
            while fs.cut_report().is_none() && edits_started.elapsed() < limit {
                made.extend(one_edit(&phone, &doc, &mut rng, bulky).map_err(|e| e.to_string())?);
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..6))).await;
            }
            fs.cut();
        }
        Cut::AfterAck => {
            for _ in 0..rng.random_range(2..6) {
                made.extend(one_edit(&phone, &doc, &mut rng, false).map_err(|e| e.to_string())?);
            }
            phone
                .wait_acknowledged(&doc, PATIENCE)
                .await
                .map_err(|e| e.to_string())?;
            fs.cut();
        }
    }
    let report = fs.cut_report().ok_or("no cut")?;

    // Step 4: the machine is dead. What the phone was told is stored, now
    // that it has read every frame the server managed to send.
    server.kill().await;
    phone
        .wait_offline(PATIENCE)
        .await
        .map_err(|e| e.to_string())?;
    let acked = phone.acked_heads(&doc);
    // The phone's own edits those heads cover: what this run really checks.
    let unacked: BTreeSet<ChangeHash> = phone
        .doc(&doc)
        .map(|d| d.get_changes(&acked).iter().map(|c| c.hash()).collect())
        .unwrap_or_default();
    let acked_edits = made.iter().filter(|h| !unacked.contains(h)).count();
    let image = scratch.join("image");
    std::fs::create_dir(&image).map_err(|e| e.to_string())?;
    fs.write_durable_image(&image).map_err(|e| e.to_string())?;
    // An untouched copy: `check` and the server recover the other one.
    let raw = scratch.join("image.raw");
    std::fs::create_dir(&raw).map_err(|e| e.to_string())?;
    fs.write_durable_image(&raw).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || fs.unmount())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("unmount: {e}"))?;

    // Step 5: after the reboot, the database is consistent and a server
    // starts on it.
    let data_dir = image.join("data");
    // (The document actor once let two persist batches reach the group
    // commit in the opposite order, and a cut between the two commits left
    // a change without its dependency: `check` said "lacks 1
    // dependencies". Any failure of `check` fails the run.)
    match casesync(&["check"], &data_dir).await {
        Ok(text) if text.starts_with("ok") => {}
        Ok(text) => return Err(format!("casesync check after the cut: {text}")),
        Err(e) => return Err(format!("casesync check after the cut: {e}")),
    }
    let server = Served::start(&data_dir, &log, false).await?;

    // Step 6: every acknowledged change is there.
    let stored = stored_doc(&server, &data_dir, &doc).await?;
    let case_survived = stored.is_some();
    let lost: Vec<ChangeHash> = acked
        .iter()
        .filter(|h| {
            stored
                .as_ref()
                .is_none_or(|d| d.get_change_meta_by_hash(h).is_none())
        })
        .copied()
        .collect();

    // Step 7: the phone reconnects (its token still holds: the key was
    // durable) and re-sends what was lost; then the server has everything
    // she typed.
    if lost.is_empty() {
        phone
            .connect_url(&server.ws_url())
            .await
            .map_err(|e| format!("the phone reconnecting: {e}"))?;
        phone
            .wait_acknowledged(&doc, PATIENCE)
            .await
            .map_err(|e| format!("re-upload: {e}"))?;
        let view = server
            .api()
            .get_case(&web, &doc)
            .await
            .map_err(|e| format!("GET the case: {e}"))?;
        if sorted(view.heads.clone()) != hex_heads(&phone.heads(&doc)) {
            return Err(format!(
                "after re-upload the server has {:?}, the phone {:?}",
                view.heads,
                phone.heads(&doc)
            ));
        }
        let stored = stored_doc(&server, &data_dir, &doc)
            .await?
            .ok_or("the case is gone")?;
        if let Some(h) = made
            .iter()
            .find(|h| stored.get_change_meta_by_hash(h).is_none())
        {
            return Err(format!("the phone's change {h} is not on the server"));
        }
        phone.disconnect().await;
    }
    server.kill().await;
    Ok(Outcome {
        cut,
        report,
        made: made.len(),
        acked: acked.len(),
        acked_edits,
        case_survived,
        log_tail: if lost.is_empty() {
            String::new()
        } else {
            tail(&log)
        },
        lost,
        took: started.elapsed(),
    })
}

fn run_seed(seed: u64, run: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_loses_nothing_acknowledged() {
    let seed = seed();
    println!("CASESYNC_POWER_SEED={seed}");
    let runs: Vec<u64> = match only_run() {
        Some(run) => vec![run],
        None => (0..RUNS).collect(),
    };
    let started = Instant::now();
    let outcomes: Vec<(u64, Result<Outcome, String>)> = futures_util::stream::iter(runs)
        .map(|run| async move {
            let s = run_seed(seed, run);
            let cut = Cut::draw(&mut ChaCha8Rng::seed_from_u64(s ^ 0xc07));
            let outcome = run_once(s, cut.clone(), false)
                .await
                .map_err(|e| format!("cut {cut:?}: {e}"));
            (run, outcome)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;

    let mut failures = Vec::new();
    let (mut acked, mut made, mut mid_commit, mut mid_checkpoint, mut slowest) =
        (0, 0, 0, 0, Duration::ZERO);
    let mut by_cut = [0usize; 4];
    for (run, outcome) in &outcomes {
        match outcome {
            Err(e) => failures.push(format!(
                "run {run} (CASESYNC_POWER_SEED={seed} CASESYNC_POWER_RUN={run}): {e}"
            )),
            Ok(o) if !o.lost.is_empty() => failures.push(format!(
                "run {run} (CASESYNC_POWER_SEED={seed} CASESYNC_POWER_RUN={run}), cut {:?}: \
                 {} of {} acknowledged changes lost: {:?}; at the cut: {:?}\n{}",
                o.cut,
                o.lost.len(),
                o.acked,
                o.lost,
                o.report,
                o.log_tail
            )),
            Ok(o) => {
                acked += o.acked_edits;
                by_cut[match o.cut {
                    Cut::AtTime(_) => 0,
                    Cut::AtOperation(_) => 1,
                    Cut::InCheckpoint(_) => 2,
                    Cut::AfterAck => 3,
                }] += 1;
                made += o.made;
                if o.report.unsynced_bytes(&format!("{DB_FILE}-wal")) > 0 {
                    mid_commit += 1;
                }
                if o.report.unsynced_bytes(DB_FILE) > 0 {
                    mid_checkpoint += 1;
                }
                slowest = slowest.max(o.took);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
    println!(
        "{} runs in {:.1} s (slowest {:.2} s); cuts at a time, at an operation, in a \
         checkpoint, after an ack: {by_cut:?}; {made} edits made, {acked} of them acknowledged \
         before the cut and found after it; cuts with unsynced WAL bytes: {mid_commit}, during \
         a checkpoint (database file written, not yet synced): {mid_checkpoint}",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64()
    );
    if only_run().is_none() {
        assert!(mid_commit > 0, "no cut landed with unsynced WAL bytes");
        assert!(mid_checkpoint > 0, "no cut landed during a checkpoint");
    }
}

/// The negative control: with `synchronous=NORMAL` a commit does not fsync
/// the WAL, so a cut right after an acknowledgement loses it, and this
/// procedure must notice. Every run is counted; at least one must lose an
/// acknowledged change (in practice every one does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_synchronous_normal_is_caught() {
    let seed = seed();
    println!("CASESYNC_POWER_SEED={seed}");
    let mut caught = 0;
    let mut tries = Vec::new();
    for run in 0..CONTROL_RUNS {
        let outcome = run_once(run_seed(seed, 1_000_000 + run), Cut::AfterAck, true)
            .await
            .unwrap_or_else(|e| panic!("control run {run}: {e}"));
        if !outcome.lost.is_empty() {
            caught += 1;
        }
        tries.push(format!(
            "{} of {} acknowledged heads lost{}",
            outcome.lost.len(),
            outcome.acked,
            if outcome.case_survived {
                ""
            } else {
                " (the whole case)"
            }
        ));
    }
    println!(
        "negative control: {caught} of {CONTROL_RUNS} runs lost an acknowledged change: {}",
        tries.join("; ")
    );
    assert!(
        caught > 0,
        "with synchronous=NORMAL no acknowledged change was lost in {CONTROL_RUNS} runs: \
         the test cannot fail. {}",
        tries.join("; ")
    );
}

/// `storage-id` is durable from the first start: a power cut right after
/// it leaves the same identifier, and the server starts on what is left.
/// (It was once written without fsync: the cut left it empty and no server
/// would start, although `casesync check` passed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_id_is_durable_from_the_first_start() {
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("server.log");
    let fs = PowerCutFs::mount().unwrap_or_else(|e| panic!("{e}"));
    let data_dir = fs.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::File::open(fs.path()).unwrap().sync_all().unwrap();
    let server = Served::start(&data_dir, &log, false).await.unwrap();
    let written = std::fs::read(data_dir.join("storage-id")).unwrap();
    assert_eq!(written.len(), 32, "a 16-byte identifier in hex");
    let report = fs.cut();
    server.kill().await;
    assert_eq!(report.unsynced_bytes("storage-id"), 0, "{report:?}");
    let image = scratch.path().join("image");
    std::fs::create_dir(&image).unwrap();
    fs.write_durable_image(&image).unwrap();
    tokio::task::spawn_blocking(move || fs.unmount())
        .await
        .unwrap()
        .unwrap();
    let data_dir = image.join("data");
    assert_eq!(std::fs::read(data_dir.join("storage-id")).unwrap(), written);
    assert!(casesync(&["check"], &data_dir)
        .await
        .unwrap()
        .starts_with("ok"));
    let server = Served::start(&data_dir, &log, false)
        .await
        .expect("the server starts on what the cut left");
    server.kill().await;
}

/// The filesystem itself: unsynced bytes and unsynced names are gone after
/// a cut, synced ones are kept, and nothing gets through after the cut.
#[test]
fn the_filesystem_drops_what_was_not_synced() {
    let fs = PowerCutFs::mount().unwrap_or_else(|e| panic!("{e}"));
    let root = fs.path().to_owned();
    let write = |name: &str, bytes: &[u8], sync: bool| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(name))
            .unwrap();
        f.write_all(bytes).unwrap();
        if sync {
            f.sync_all().unwrap();
        }
    };
    let sync_root = || std::fs::File::open(&root).unwrap().sync_all().unwrap();

    // Durable: written, fsynced, and its directory fsynced.
    write("kept", b"kept", true);
    write("prefix", b"synced;", true);
    std::fs::create_dir(root.join("sub")).unwrap();
    // A shrink, then a write past the end: the hole must come back as
    // zeros, not as the bytes durable there before the shrink.
    write("holes", b"0123456789", true);
    {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("holes"))
            .unwrap();
        f.set_len(2).unwrap();
        f.write_at(b"xy", 6).unwrap();
        f.sync_all().unwrap();
    }
    sync_root();
    // Not durable: appended after the fsync; fsynced but its name never
    // was; never fsynced at all; removed but the removal never synced.
    write("prefix", b"unsynced", false);
    write("unnamed", b"synced bytes, unsynced name", true);
    write("sub/never", b"never synced", false);
    write("nothing", b"nothing synced", false);
    std::fs::remove_file(root.join("kept")).unwrap();
    assert_eq!(
        std::fs::read(root.join("prefix")).unwrap(),
        b"synced;unsynced"
    );

    let report = fs.cut();
    assert_eq!(report.unsynced_bytes("prefix"), 8);
    assert!(report.unsynced_dirs >= 1);
    let err = std::fs::write(root.join("after"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO after the cut: {err}");

    let image = tempfile::tempdir().unwrap();
    fs.write_durable_image(image.path()).unwrap();
    fs.unmount().unwrap();
    let names = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(image.path()), ["holes", "kept", "prefix", "sub"]);
    assert_eq!(
        std::fs::read(image.path().join("holes")).unwrap(),
        b"01\0\0\0\0xy"
    );
    assert_eq!(names(&image.path().join("sub")), Vec::<String>::new());
    assert_eq!(std::fs::read(image.path().join("kept")).unwrap(), b"kept");
    assert_eq!(
        std::fs::read(image.path().join("prefix")).unwrap(),
        b"synced;"
    );
}

/// A run that fails half-way, with a file still open on the filesystem,
/// leaves no mount behind.
#[test]
fn a_busy_filesystem_is_detached_when_dropped() {
    let fs = PowerCutFs::mount().unwrap_or_else(|e| panic!("{e}"));
    let path = fs.path().to_owned();
    let open = std::fs::File::create(path.join("held")).unwrap();
    let mounted = || {
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(path.to_str().unwrap()))
    };
    assert!(mounted());
    drop(fs);
    assert!(!mounted(), "{} is still mounted", path.display());
    drop(open);
}
