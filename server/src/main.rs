//! `casesync`: a thin CLI over the `casesync_server` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use casesync_server::app;
use casesync_server::auth::{mint_token, DevKeys, Role};
use casesync_server::config::{Config, FileConfig};
use casesync_server::store::{DbKey, SqliteConfig, SqliteStorage, Storage};
use clap::{Parser, Subcommand, ValueEnum};
use sync_core::ids::{DeviceId, UserId};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "casesync",
    version,
    about = "Offline-first sync server for case documents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the database key comes from, for every command that opens the
/// database. The key itself is never a flag (a command line is visible to
/// every user through `ps`): it is the `CASESYNC_DB_KEY` environment
/// variable, or a file.
#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// A file holding the database key (encryption at rest), readable by
    /// its owner only. Alternatively, put the key in CASESYNC_DB_KEY.
    #[arg(long, env = "CASESYNC_DB_KEY_FILE")]
    db_key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key from the environment or a key file (`config_key_file`: the
    /// config file's `[storage] key_file`, used when neither is given).
    fn resolve(
        &self,
        env_key: Option<Zeroizing<String>>,
        config_key_file: Option<&std::path::Path>,
    ) -> Result<Option<DbKey>, String> {
        DbKey::resolve(env_key, self.db_key_file.as_deref(), config_key_file)
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "CASESYNC_LISTEN")]
        listen: Option<SocketAddr>,
        /// Where the database and keys live.
        #[arg(long, env = "CASESYNC_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A TOML config file (`listen`, `data_dir`, `idle_unload_secs`,
        /// `max_frame_bytes`). Flags and environment override it.
        #[arg(long, env = "CASESYNC_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds a document with no sessions stays in memory.
        #[arg(long, env = "CASESYNC_IDLE_UNLOAD_SECS")]
        idle_unload_secs: Option<u64>,
        /// The built field app, served at /app/ (default: client-wasm/dist
        /// when it exists).
        #[arg(long, env = "CASESYNC_APP_DIR")]
        app_dir: Option<PathBuf>,
        /// The coordinators' console, served at /admin/ (default: admin/
        /// when it exists).
        #[arg(long, env = "CASESYNC_ADMIN_DIR")]
        admin_dir: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print a development token signed with the data directory's key.
    Token {
        #[arg(long, env = "CASESYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The server's config file: its `[auth]` section decides whether
        /// the development key is trusted, and with which issuer and
        /// audience.
        #[arg(long, env = "CASESYNC_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "dev")]
        device: String,
        #[arg(long, value_enum, default_value_t = CliRole::Relative)]
        role: CliRole,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Write an online backup of the database to FILE (safe while serving).
    /// An encrypted database's backup is encrypted with the same key.
    Backup {
        file: PathBuf,
        #[arg(long, env = "CASESYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Restore a backup into an empty data directory (checked first).
    Restore {
        file: PathBuf,
        #[arg(long, env = "CASESYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Check the database's integrity and reload every case.
    Check {
        #[arg(long, env = "CASESYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// The audit log of security events.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain. Exits 0 if it is intact, 1 if a row
    /// was edited, deleted or moved (naming the first such row), 2 on any
    /// other error.
    Verify {
        #[arg(long, env = "CASESYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliRole {
    Relative,
    Coordinator,
    Admin,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("bad duration unit in {s:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// mimalloc, not glibc's malloc: glibc kept the memory freed after each
/// connection's handshake and first sync (token checks, sync messages,
/// buffers) as fragments it does not return, about two thirds of an idle
/// connection's RSS (BENCHMARKS.md, idle fleet).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First, while this is the only thread: the key leaves the environment.
    let env_key = match DbKey::take_from_env() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("casesync: {}: {e}", casesync_server::store::KEY_ENV);
            return ExitCode::FAILURE;
        }
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("CASESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // At trace level tungstenite logs every WebSocket frame and message it
    // receives, whole: case contents, and whatever a client puts in a
    // frame. Whatever CASESYNC_LOG asks for, it logs at most at info (a
    // directive sets a level, it does not cap one: "tungstenite=debug"
    // turned its debug records on under the default "info", a line per
    // close frame).
    // automerge 0.12 attaches its whole change history, as debug text, to
    // an info-level record each time it loads changes: case contents in
    // the log, and a cost that grows with the square of the history when a
    // case is loaded change by change (a 20,000-change case never finished
    // loading). It logs warnings only.
    for cap in [
        "tungstenite=info",
        "tokio_tungstenite=info",
        "automerge=warn",
    ] {
        if let Ok(directive) = cap.parse() {
            filter = filter.add_directive(directive);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // `audit` has exit codes of its own, and needs no runtime.
    let command = match cli.command {
        Command::Audit { command } => return audit(command, env_key),
        other => other,
    };
    let result = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(command, env_key)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("casesync: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, env_key: Option<Zeroizing<String>>) -> Result<(), String> {
    match command {
        Command::Serve {
            listen,
            data_dir,
            config,
            idle_unload_secs,
            app_dir,
            admin_dir,
            key,
        } => {
            let file = match config {
                Some(path) => FileConfig::load(&path).map_err(|e| e.to_string())?,
                None => FileConfig::default(),
            };
            let listen = listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let data_dir = data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data"));
            let mut config = Config::new(listen, data_dir.clone());
            if let Some(s) = idle_unload_secs.or(file.idle_unload_secs) {
                config.idle_unload = Duration::from_secs(s);
            }
            if let Some(m) = file.max_frame_bytes {
                config.limits.max_frame_bytes = m;
            }
            for (value, field) in [
                (
                    file.rate_conn_messages_per_sec,
                    &mut config.rate.conn_messages_per_sec,
                ),
                (
                    file.rate_conn_bytes_per_sec,
                    &mut config.rate.conn_bytes_per_sec,
                ),
                (
                    file.rate_user_messages_per_sec,
                    &mut config.rate.user_messages_per_sec,
                ),
                (
                    file.rate_user_bytes_per_sec,
                    &mut config.rate.user_bytes_per_sec,
                ),
            ] {
                if let Some(v) = value {
                    *field = v;
                }
            }
            if let Some(dir) = app_dir {
                config.app_dir = Some(dir);
            }
            if let Some(dir) = admin_dir {
                config.admin_dir = Some(dir);
            }
            config.auth = file.auth;
            let config_key_file = file.storage.and_then(|s| s.key_file);
            config.db_key = key.resolve(env_key, config_key_file.as_deref())?;
            let encrypted = config.db_key.is_some();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let serving_app = config.app_dir.is_some();
            let serving_admin = config.admin_dir.is_some();
            let state = app::AppState::open(config)
                .await
                .map_err(|e| e.to_string())?;
            println!("casesync listening on http://{addr}");
            println!(
                "  data directory: {}{}",
                data_dir.display(),
                if encrypted { " (encrypted)" } else { "" }
            );
            match serving_app {
                true => println!("  field app:      http://{addr}/app/"),
                false => {
                    println!("  field app:      http://{addr}/app/ (not built: run scripts/run.sh)")
                }
            }
            match serving_admin {
                true => println!("  admin console:  http://{addr}/admin/"),
                false => println!(
                    "  admin console:  not found (run from the repository, or --admin-dir)"
                ),
            }
            println!(
                "  get a token:    casesync token --data-dir {} --user NAME",
                data_dir.display()
            );
            app::serve(listener, state, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Token {
            data_dir,
            config,
            user,
            device,
            role,
            ttl,
        } => {
            let mut keys = DevKeys::load_or_create(&data_dir).map_err(|e| e.to_string())?;
            let file = match config {
                Some(path) => FileConfig::load(&path).map_err(|e| e.to_string())?,
                None => FileConfig::default(),
            };
            if let Some(auth) = &file.auth {
                if !auth.trusts_dev_key() {
                    return Err(
                        "this server's [auth] section does not trust the development \
                        key; get tokens from the configured identity provider"
                            .into(),
                    );
                }
                keys = keys.with_issuer_audience(&auth.issuer, &auth.audience);
            }
            let user = UserId::new(user).map_err(|e| format!("--user: {e}"))?;
            let device = DeviceId::new(device).map_err(|e| format!("--device: {e}"))?;
            let role = match role {
                CliRole::Relative => Role::Relative,
                CliRole::Coordinator => Role::Coordinator,
                CliRole::Admin => Role::Admin,
            };
            let token = mint_token(
                &keys,
                &user,
                &device,
                role,
                ttl,
                casesync_server::auth::unix_now(),
            )
            .map_err(|e| e.to_string())?;
            println!("{token}");
            Ok(())
        }
        Command::Backup {
            file,
            data_dir,
            key,
        } => tokio::task::spawn_blocking(move || {
            let key = key.resolve(env_key, None)?;
            let storage = SqliteStorage::open(SqliteConfig::new(data_dir).with_key(key))
                .map_err(|e| e.to_string())?;
            storage.backup_to(&file).map_err(|e| e.to_string())?;
            println!("backup written to {}", file.display());
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?,
        Command::Check { data_dir, key } => {
            let key = key.resolve(env_key, None)?;
            casesync_server::check::check(&data_dir, key).await
        }
        Command::Restore {
            file,
            data_dir,
            key,
        } => {
            let key = key.resolve(env_key, None)?;
            casesync_server::restore::restore(&file, &data_dir, key).await
        }
        // Dispatched in `main`, for its exit codes.
        Command::Audit { .. } => Err("internal error: `audit` is dispatched in main".into()),
    }
}

/// `casesync audit verify`: 0 intact, 1 broken (the first broken row on
/// stderr), 2 could not check.
fn audit(command: AuditCommand, env_key: Option<Zeroizing<String>>) -> ExitCode {
    match command {
        AuditCommand::Verify { data_dir, key } => {
            let key = match key.resolve(env_key, None) {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("casesync: audit verify: {e}");
                    return ExitCode::from(2);
                }
            };
            let db_path = casesync_server::audit::db_path(&data_dir);
            match casesync_server::audit::verify(&db_path, key.as_ref()) {
                Ok(report) => match report.broken {
                    None => {
                        println!("audit log intact: {} rows", report.rows);
                        if let Some(head) = report.head {
                            // Kept elsewhere, it shows later whether rows
                            // were dropped from the end.
                            println!("head hash: {head}");
                        }
                        ExitCode::SUCCESS
                    }
                    Some(broken) => {
                        eprintln!("audit log broken at row {}: {}", broken.seq, broken.reason);
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("casesync: audit verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: closing connections and flushing");
}
