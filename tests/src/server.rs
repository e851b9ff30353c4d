//! A `casesync serve` process on a fresh data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::api::Api;
use crate::error::HarnessError;

/// How long a start may take before it counts as failed. Generous: a cold
/// start on a loaded 2-core CI machine creates a key and a database.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The line `casesync serve` prints once its listener is bound.
const LISTENING: &str = "casesync listening on http://";

/// The `casesync` binary the harness runs: `$CASESYNC_BIN` if set, else
/// `<workspace>/target/debug/casesync`.
pub fn binary_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CASESYNC_BIN") {
        return PathBuf::from(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().unwrap_or(manifest);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug").join("casesync")
}

fn binary() -> Result<PathBuf, HarnessError> {
    let path = binary_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::BinaryMissing(path))
    }
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--idle-unload-secs`.
    pub idle_unload_secs: Option<u64>,
    /// `max_frame_bytes` in a `--config` file.
    pub max_frame_bytes: Option<usize>,
    /// `CASESYNC_LOG`, the server's log filter. The log goes to
    /// `server.log` beside the data directory.
    pub log_filter: String,
    /// Runs the server under `prlimit --as=BYTES` (a hard cap on its address
    /// space: past it, allocations fail and the process aborts).
    pub address_space_limit: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            idle_unload_secs: None,
            max_frame_bytes: None,
            log_filter: "info".to_owned(),
            address_space_limit: None,
        }
    }
}

/// What `casesync token` should mint.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    pub user: &'a str,
    pub device: &'a str,
    /// `relative`, `coordinator` or `admin`.
    pub role: &'a str,
    /// `--ttl`, e.g. `1h`.
    pub ttl: &'a str,
}

impl<'a> TokenRequest<'a> {
    /// A relative's token valid for an hour.
    pub fn new(user: &'a str, device: &'a str) -> Self {
        Self {
            user,
            device,
            role: "relative",
            ttl: "1h",
        }
    }
}

/// A running (or stopped) `casesync serve` and its data directory. The
/// directory lives as long as this value; the process is killed on drop.
#[derive(Debug)]
pub struct TestServer {
    dir: TempDir,
    options: ServerOptions,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    api: Option<Api>,
    starts: usize,
}

impl Drop for TestServer {
    /// A failing test shows the end of the server's log (the data directory
    /// is deleted with this value, and the process killed).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the casesync server log ---\n{}\n---",
                self.log_tail(40)
            );
        }
    }
}

impl TestServer {
    /// Starts a server on a fresh temporary data directory.
    pub async fn start(options: ServerOptions) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new().prefix("casesync-e2e-").tempdir()?;
        let mut server = Self {
            dir,
            options,
            child: None,
            addr: None,
            api: None,
            starts: 0,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last `lines` lines of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// How many times the process was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The address the running server listens on.
    pub fn addr(&self) -> Result<SocketAddr, HarnessError> {
        self.addr.ok_or(HarnessError::NotRunning)
    }

    /// `ws://ADDR/sync`.
    pub fn ws_url(&self) -> Result<String, HarnessError> {
        Ok(format!("ws://{}/sync", self.addr()?))
    }

    /// The HTTP API of the running server.
    pub fn api(&self) -> Result<Api, HarnessError> {
        self.api.clone().ok_or(HarnessError::NotRunning)
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let bin = binary()?;
        let data_dir = self.data_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = match self.options.address_space_limit {
            Some(bytes) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--as={bytes}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(secs) = self.options.idle_unload_secs {
            cmd.arg("--idle-unload-secs").arg(secs.to_string());
        }
        if let Some(max) = self.options.max_frame_bytes {
            let path = self.dir.path().join("casesync.toml");
            std::fs::write(&path, format!("max_frame_bytes = {max}\n"))?;
            cmd.arg("--config").arg(path);
        }
        for var in [
            "CASESYNC_LISTEN",
            "CASESYNC_DATA_DIR",
            "CASESYNC_CONFIG",
            "CASESYNC_IDLE_UNLOAD_SECS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("CASESYNC_LOG", &self.options.log_filter)
            // The log is a file, read by people: no colour codes.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Start("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    return rest
                        .trim()
                        .parse::<SocketAddr>()
                        .map_err(|e| HarnessError::Start(format!("bad address {rest:?}: {e}")));
                }
            }
            Err(HarnessError::Start(
                "the process exited before listening".into(),
            ))
        })
        .await
        .map_err(|_| HarnessError::Start("no `listening` line in time".into()))?;
        let addr = match addr {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(HarnessError::Start(format!("{e}\n{}", self.log_tail(20))));
            }
        };
        // Keep reading stdout so the server never writes into a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        self.addr = Some(addr);
        let api = Api::new(addr)?;
        self.api = Some(api.clone());
        self.starts += 1;
        crate::wait::wait_for_async(START_TIMEOUT, "/healthz", || {
            let api = api.clone();
            async move { api.healthz().await.unwrap_or(false) }
        })
        .await
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// A field of the server's `/proc/PID/status` in KiB (`VmHWM`, the
    /// peak resident set; `VmRSS`, the current one).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Starts the server again on the same data directory (on a new port).
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Err(HarnessError::Start("already running".into()));
        }
        self.spawn().await
    }

    /// Graceful stop: SIGTERM, then wait for the process to exit.
    pub async fn stop(&mut self) -> Result<ExitStatus, HarnessError> {
        let mut child = self.child.take().ok_or(HarnessError::NotRunning)?;
        self.addr = None;
        self.api = None;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| HarnessError::Unexpected("server has no pid".into()))?;
        signal::kill(Pid::from_raw(pid), Signal::SIGTERM)
            .map_err(|e| HarnessError::Io(std::io::Error::from(e)))?;
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(HarnessError::Timeout {
                    what: "the server to exit after SIGTERM".into(),
                    secs: STOP_TIMEOUT.as_secs_f64(),
                })
            }
        }
    }

    /// SIGKILL: no flush, no goodbye. Returns once the process is gone.
    pub async fn kill(&mut self) -> Result<(), HarnessError> {
        let mut child = self.child.take().ok_or(HarnessError::NotRunning)?;
        self.addr = None;
        self.api = None;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// Mints a token with `casesync token` against this data directory.
    pub async fn token(&self, user: &str, device: &str) -> Result<String, HarnessError> {
        self.token_with(&TokenRequest::new(user, device)).await
    }

    pub async fn token_with(&self, req: &TokenRequest<'_>) -> Result<String, HarnessError> {
        let out = Command::new(binary()?)
            .arg("token")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--user", req.user, "--device", req.device])
            .args(["--role", req.role, "--ttl", req.ttl])
            .env_remove("CASESYNC_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                command: "token",
                message: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if token.split('.').count() != 3 {
            return Err(HarnessError::Command {
                command: "token",
                message: "did not print a JWT".into(),
            });
        }
        Ok(token)
    }

    /// Runs `casesync check` on the data directory; `Ok` holds its report.
    pub async fn check(&self) -> Result<String, HarnessError> {
        let out = Command::new(binary()?)
            .arg("check")
            .arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("CASESYNC_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(HarnessError::Command {
                command: "check",
                message: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }
}
