//! `loadgen`: simulated phones against a sync server, speaking
//! automerge-repo's protocol over real WebSockets, with results as JSON.
//!
//! ```text
//! loadgen --server casesync --url ws://127.0.0.1:8080/sync --data-dir DATA \
//!         --workload all --out casesync.json
//! loadgen --server peer --url ws://127.0.0.1:3030 --workload storm --out peer.json
//! loadgen compare casesync.json peer.json
//! ```
//!
//! Every workload verifies what it measures: each change acknowledged,
//! every device at the same heads as the server. A run that does not
//! converge or loses a change is reported as `failed`, and the exit status
//! is then 1. `scripts/bench.sh` runs it against both servers.

#[path = "../loadgen/mod.rs"]
mod loadgen;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use loadgen::target::{ServerKind, Target, TargetOptions};
use loadgen::workloads::{self, Sizes};
use loadgen::LoadError;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for casesync and automerge-repo's sync server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print two results files side by side (Markdown), with ratios.
    Compare {
        /// casesync's results.
        casesync: PathBuf,
        /// The peer's results.
        peer: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Storm,
    Idle,
    Fanout,
    Cold,
    History,
    All,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server's WebSocket URL (casesync: ws://HOST:PORT/sync; the peer:
    /// ws://HOST:PORT).
    #[arg(long, default_value = "ws://127.0.0.1:8080/sync")]
    url: String,
    /// Which server this is.
    #[arg(long, value_enum, default_value_t = ServerKind::Casesync)]
    server: ServerKind,
    /// Workloads to run (repeat or comma-separate; `all` is every one).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<Workload>,
    /// The server's pid, for its CPU time and RSS (default: the process
    /// listening on the URL's port).
    #[arg(long)]
    server_pid: Option<u32>,
    /// casesync's data directory, to mint tokens with `casesync token`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The `casesync` binary for tokens (default: $CASESYNC_BIN, else
    /// target/debug/casesync).
    #[arg(long)]
    casesync_bin: Option<PathBuf>,
    /// A shell command that restarts the server on the same address and
    /// prints its new pid last (for the cold load).
    #[arg(long)]
    restart_cmd: Option<String>,
    /// Reconnect storm: devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Shared cases (storm, idle).
    #[arg(long, default_value_t = 100)]
    cases: usize,
    /// Cases each device has (storm, idle).
    #[arg(long, default_value_t = 3)]
    cases_per_device: usize,
    /// Storm: offline edits per device per case.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// Idle fleet: connected devices.
    #[arg(long, default_value_t = 10_000)]
    idle_devices: usize,
    /// Idle fleet: seconds of idling measured.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Fan-out: users (one device each).
    #[arg(long, default_value_t = 100)]
    fanout_users: usize,
    /// Fan-out: cases the users share.
    #[arg(long, default_value_t = 10)]
    fanout_cases: usize,
    /// Fan-out: edits per second per user.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Fan-out: seconds of editing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Cold load: changes in the big case.
    #[arg(long, default_value_t = 20_000)]
    cold_changes: usize,
    /// Cold load: devices writing them.
    #[arg(long, default_value_t = 8)]
    cold_writers: usize,
    /// Cold load: edits of the reconnecting writer.
    #[arg(long, default_value_t = 20)]
    reconnect_edits: usize,
    /// Seconds a phase may take to converge before the run counts as failed.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the results (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// mimalloc, as the server uses: the generator must not be the bottleneck
/// of what it measures, and with glibc's allocator malloc and free were a
/// quarter of its CPU in the reconnect storm (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Compare { casesync, peer }) = cli.command {
        return match compare(&casesync, &peer) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen compare: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.run)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_json(path: &PathBuf) -> Result<Value, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(LoadError::io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| LoadError::other(format!("{} is not JSON: {e}", path.display())))
}

fn compare(casesync: &PathBuf, peer: &PathBuf) -> Result<String, LoadError> {
    Ok(loadgen::compare::table(
        &read_json(casesync)?,
        &read_json(peer)?,
    ))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
    });
    let mem_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    });
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu": cpu,
        "mem_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
    })
}

async fn run(args: RunArgs) -> Result<bool, LoadError> {
    let started = Instant::now();
    let target = Target::new(TargetOptions {
        kind: args.server,
        url: args.url.clone(),
        server_pid: args.server_pid,
        casesync_bin: args.casesync_bin.clone(),
        data_dir: args.data_dir.clone(),
        restart_cmd: args.restart_cmd.clone(),
        seed: args.seed,
    })
    .await?;
    let sizes = Sizes {
        devices: args.devices,
        cases: args.cases.max(1),
        cases_per_device: args.cases_per_device.max(1),
        edits: args.edits,
        idle_devices: args.idle_devices,
        idle_secs: args.idle_secs,
        fanout_users: args.fanout_users,
        fanout_cases: args.fanout_cases,
        rate: args.rate,
        duration_secs: args.duration,
        cold_changes: args.cold_changes,
        cold_writers: args.cold_writers,
        reconnect_edits: args.reconnect_edits,
        timeout: Duration::from_secs(args.timeout),
    };
    let all = args.workload.contains(&Workload::All);
    let wants = |w: Workload| all || args.workload.contains(&w);
    eprintln!(
        "loadgen: {} at {} (server pid {})",
        target.kind.name(),
        target.url,
        target
            .watch()
            .map_or("unknown".to_owned(), |w| w.pid().to_string())
    );
    let mut results = serde_json::Map::new();
    let mut record = |name: &str, result: Result<Value, LoadError>, took: Duration| {
        let mut v = result.unwrap_or_else(
            |e| json!({ "status": "failed", "failures": [format!("could not run: {e}")] }),
        );
        if let Some(o) = v.as_object_mut() {
            o.insert("took_s".to_owned(), json!(took.as_secs_f64()));
        }
        eprintln!("loadgen: {name}: {}", one_line(&v));
        results.insert(name.to_owned(), v);
    };
    if wants(Workload::Storm) {
        let t = Instant::now();
        let r = workloads::storm(&target, &sizes).await;
        record("storm", r, t.elapsed());
    }
    if wants(Workload::Fanout) {
        let t = Instant::now();
        let r = workloads::fanout(&target, &sizes).await;
        record("fanout", r, t.elapsed());
    }
    if wants(Workload::Cold) || wants(Workload::History) {
        let t = Instant::now();
        let r = workloads::cold(&target, &sizes).await;
        let (cold, case) = match r {
            Ok((v, case)) => (Ok(v), case),
            Err(e) => (Err(e), None),
        };
        if wants(Workload::Cold) {
            record("cold", cold, t.elapsed());
        }
        if wants(Workload::History) {
            let t = Instant::now();
            let r = match &case {
                Some(case) => workloads::history(&target, case).await,
                None => Err(LoadError::other(
                    "the cold-load case could not be built".to_owned(),
                )),
            };
            record("history", r, t.elapsed());
        }
    }
    if wants(Workload::Idle) {
        let t = Instant::now();
        let r = workloads::idle(&target, &sizes).await;
        record("idle", r, t.elapsed());
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, v)| v.get("status").and_then(Value::as_str) == Some("failed"))
        .map(|(k, _)| k.clone())
        .collect();
    let report = json!({
        "generator": "casesync loadgen",
        "server": target.kind.name(),
        "url": target.url,
        "server_pid": target.watch().map(|w| w.pid()),
        "durability": match target.kind {
            ServerKind::Casesync => "casesync acknowledges a change only once it is durably committed (SQLite, synchronous=FULL)",
            ServerKind::Peer => "the peer acknowledges from memory and writes to disk later, without fsync",
        },
        "machine": machine(),
        "sizes": {
            "devices": sizes.devices, "cases": sizes.cases, "cases_per_device": sizes.cases_per_device,
            "edits": sizes.edits, "idle_devices": sizes.idle_devices, "idle_secs": sizes.idle_secs,
            "fanout_users": sizes.fanout_users, "fanout_cases": sizes.fanout_cases, "rate": sizes.rate,
            "duration": sizes.duration_secs, "cold_changes": sizes.cold_changes,
            "cold_writers": sizes.cold_writers, "reconnect_edits": sizes.reconnect_edits,
            "timeout": sizes.timeout.as_secs(), "seed": args.seed,
        },
        "workloads": results,
        "failed": failed,
        "ok": failed.is_empty(),
        "total_s": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| LoadError::other(format!("results to JSON: {e}")))?;
    match &args.out {
        Some(path) => std::fs::write(path, text + "\n")
            .map_err(LoadError::io(format!("writing {}", path.display())))?,
        None => println!("{text}"),
    }
    if failed.is_empty() {
        eprintln!("loadgen: OK ({:.1} s)", started.elapsed().as_secs_f64());
    } else {
        eprintln!("loadgen: FAILED: {}", failed.join(", "));
    }
    Ok(failed.is_empty())
}

/// A workload's result in one line for the console.
fn one_line(v: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            match x {
                Value::Object(_) | Value::Array(_) if k != "failures" => {}
                _ => parts.push(format!("{k}={x}")),
            }
        }
        for k in ["ack", "arrival", "usage"] {
            if let Some(Value::Object(sub)) = o.get(k) {
                let inner: Vec<String> = sub
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(a, b)| format!("{a}={b}"))
                    .collect();
                parts.push(format!("{k}{{{}}}", inner.join(" ")));
            }
        }
    }
    parts.join(" ")
}
