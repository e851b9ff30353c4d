//! Two results files (casesync and the peer) as one side-by-side table.

use serde_json::Value;

/// A row: workload, label, JSON path in that workload's object, and
/// whether lower is better.
const ROWS: &[(&str, &str, &str, bool)] = &[
    ("storm", "status", "status", true),
    ("storm", "changes", "changes", true),
    ("storm", "time to converge (s)", "converge_s", true),
    ("storm", "ack latency p50 (ms)", "ack.p50_ms", true),
    ("storm", "ack latency p95 (ms)", "ack.p95_ms", true),
    ("storm", "ack latency p99 (ms)", "ack.p99_ms", true),
    ("storm", "server CPU (s)", "usage.server_cpu_s", true),
    (
        "storm",
        "server peak RSS (MiB)",
        "usage.server_peak_rss_mib",
        true,
    ),
    ("storm", "bytes on the wire", "bytes_total", true),
    ("storm", "sockets dropped", "dropped_sockets", true),
    ("idle", "status", "status", true),
    ("idle", "devices", "devices", true),
    ("idle", "connect + sync all (s)", "connect_and_sync_s", true),
    (
        "idle",
        "RSS per connection (KiB)",
        "rss_per_connection_kib",
        true,
    ),
    (
        "idle",
        "idle CPU (% of a core)",
        "idle_cpu_pct_of_one_core",
        true,
    ),
    ("idle", "dropped while idle", "dropped_while_idle", true),
    ("fanout", "status", "status", true),
    ("fanout", "edits", "edits", true),
    ("fanout", "edit→arrival p50 (ms)", "arrival.p50_ms", true),
    ("fanout", "edit→arrival p95 (ms)", "arrival.p95_ms", true),
    ("fanout", "edit→arrival p99 (ms)", "arrival.p99_ms", true),
    ("fanout", "ack latency p99 (ms)", "ack.p99_ms", true),
    ("fanout", "server CPU (s)", "usage.server_cpu_s", true),
    ("cold", "status", "status", true),
    ("cold", "changes", "changes", true),
    ("cold", "server restarted", "restarted", true),
    ("cold", "fetch after restart (ms)", "fetch_ms", true),
    (
        "cold",
        "server CPU for the fetch (ms)",
        "fetch_server_cpu_ms",
        true,
    ),
    (
        "cold",
        "server RSS growth (MiB)",
        "server_rss_growth_mib",
        true,
    ),
    (
        "cold",
        "bytes of the fetch",
        "fetch_bytes_from_server",
        true,
    ),
    (
        "cold",
        "reconnect, 20 edits: bytes",
        "reconnect.bytes_total",
        true,
    ),
    ("cold", "build the case (s)", "build_s", true),
    ("history", "status", "status", true),
    (
        "history",
        "server: change list (ms)",
        "server.change_list.median_ms",
        true,
    ),
    (
        "history",
        "server: view at a point (ms)",
        "server.view_at_point.median_ms",
        true,
    ),
    (
        "history",
        "client: change list (ms)",
        "client_side.change_list_ms",
        true,
    ),
    (
        "history",
        "client: view at a point (ms)",
        "client_side.view_at_point_ms",
        true,
    ),
];

fn get<'a>(v: &'a Value, workload: &str, path: &str) -> Option<&'a Value> {
    let w = v.get("workloads")?.get(workload)?;
    // A server figure counts only if the server answered 200.
    if let Some(rest) = path.strip_prefix("server.") {
        let endpoint = rest.split('.').next()?;
        let status = w.get("server")?.get(endpoint)?.get("status")?.as_u64();
        if status != Some(200) {
            return None;
        }
    }
    path.split('.').try_fold(w, |v, k| v.get(k))
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "–".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f.abs() >= 100.0 {
                    format!("{f:.0}")
                } else if f.abs() >= 1.0 {
                    format!("{f:.2}")
                } else {
                    format!("{f:.3}")
                }
            }
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// The table, as Markdown. Ratio is peer ÷ casesync: above 1 means
/// casesync is lower (for every row here, lower is better).
pub fn table(casesync: &Value, peer: &Value) -> String {
    let mut out = String::new();
    out.push_str("| workload | metric | casesync | peer | peer ÷ casesync |\n");
    out.push_str("|---|---|---:|---:|---:|\n");
    for (workload, label, path, _lower_better) in ROWS {
        let a = get(casesync, workload, path);
        let b = get(peer, workload, path);
        if a.is_none() && b.is_none() {
            continue;
        }
        let ratio = match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
            (Some(x), Some(y))
                if x > 0.0 && *path != "changes" && *path != "edits" && *path != "devices" =>
            {
                format!("{:.2}×", y / x)
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "| {workload} | {label} | {} | {} | {ratio} |\n",
            show(a),
            show(b)
        ));
    }
    for (name, v) in [("casesync", casesync), ("peer", peer)] {
        let Some(ws) = v.get("workloads").and_then(Value::as_object) else {
            continue;
        };
        for (w, r) in ws {
            if let Some(f) = r.get("failures").and_then(Value::as_array) {
                for f in f {
                    out.push_str(&format!("\n{name} {w} FAILED: {}", show(Some(f))));
                }
            }
            if let Some(n) = r.get("note").and_then(Value::as_str) {
                out.push_str(&format!("\n{name} {w}: {n}"));
            }
        }
    }
    out.push('\n');
    out
}
