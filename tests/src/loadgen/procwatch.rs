//! The server process as the kernel sees it: CPU time from
//! `/proc/<pid>/stat`, resident memory from `/proc/<pid>/status`.
//!
//! Peak RSS of a phase: the kernel's high-water mark (`VmHWM`), reset at
//! the start of the phase through `/proc/<pid>/clear_refs` when allowed,
//! and in any case the largest `VmRSS` seen by a sampler every 50 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcWatch {
    pid: u32,
}

impl ProcWatch {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// This process (the generator itself).
    pub fn current() -> Self {
        Self {
            pid: std::process::id(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// User plus system CPU time so far, in seconds.
    pub fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3 of the man page, utime 14, stime 15.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) as f64 / TICKS_PER_SEC)
    }

    fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.trim().trim_end_matches("kB").trim().parse().ok()
        })
    }

    /// Resident set size now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS")
    }

    /// The kernel's peak RSS since start or since [`Self::reset_peak`], KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM")
    }

    /// Resets the kernel's peak RSS (needs the same user or root).
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }
}

/// The pid of the process listening on a local TCP port, from
/// `/proc/net/tcp{,6}` and the socket links in `/proc/*/fd`.
pub fn find_pid_by_port(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some((_, port_hex)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(port_hex, 16).ok() == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// One measured phase of a workload: wall time, the server's CPU time and
/// its memory, and the generator's own CPU time (it shares the machine).
#[derive(Debug)]
pub struct Phase {
    server: Option<ProcWatch>,
    start: Instant,
    server_cpu0: Option<f64>,
    own_cpu0: Option<f64>,
    rss0: Option<u64>,
    peak_reset: bool,
    max_rss: Arc<AtomicU64>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

impl Phase {
    pub fn start(server: Option<ProcWatch>) -> Self {
        let max_rss = Arc::new(AtomicU64::new(0));
        let mut peak_reset = false;
        let mut sampler = None;
        let mut rss0 = None;
        let mut server_cpu0 = None;
        if let Some(w) = server {
            peak_reset = w.reset_peak();
            rss0 = w.rss_kib();
            server_cpu0 = w.cpu_secs();
            let max = max_rss.clone();
            sampler = Some(tokio::spawn(async move {
                loop {
                    if let Some(rss) = w.rss_kib() {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            }));
        }
        Self {
            server,
            start: Instant::now(),
            server_cpu0,
            own_cpu0: ProcWatch::current().cpu_secs(),
            rss0,
            peak_reset,
            max_rss,
            sampler,
        }
    }

    /// The server's CPU seconds since the phase started.
    pub fn server_cpu(&self) -> Option<f64> {
        Some(self.server?.cpu_secs()? - self.server_cpu0?)
    }

    pub fn finish(self) -> Usage {
        if let Some(s) = &self.sampler {
            s.abort();
        }
        let wall = self.start.elapsed().as_secs_f64();
        let server_cpu = self.server_cpu();
        let own_cpu = ProcWatch::current()
            .cpu_secs()
            .zip(self.own_cpu0)
            .map(|(a, b)| a - b);
        let rss1 = self.server.and_then(|w| w.rss_kib());
        let sampled = self.max_rss.load(Ordering::Relaxed);
        let hwm = if self.peak_reset {
            self.server.and_then(|w| w.peak_kib())
        } else {
            None
        };
        let peak = [Some(sampled), hwm, rss1]
            .into_iter()
            .flatten()
            .max()
            .filter(|p| *p > 0);
        Usage {
            wall_s: wall,
            server_cpu_s: server_cpu,
            generator_cpu_s: own_cpu,
            rss_start_kib: self.rss0,
            rss_end_kib: rss1,
            peak_rss_kib: peak,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub wall_s: f64,
    pub server_cpu_s: Option<f64>,
    pub generator_cpu_s: Option<f64>,
    pub rss_start_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
}

impl Usage {
    pub fn to_json(self) -> Value {
        json!({
            "wall_s": self.wall_s,
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_pct_of_one_core": self.server_cpu_s.map(|c| 100.0 * c / self.wall_s.max(1e-9)),
            "generator_cpu_s": self.generator_cpu_s,
            "server_rss_start_mib": self.rss_start_kib.map(kib_to_mib),
            "server_rss_end_mib": self.rss_end_kib.map(kib_to_mib),
            "server_peak_rss_mib": self.peak_rss_kib.map(kib_to_mib),
        })
    }
}

pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
