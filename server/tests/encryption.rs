//! Encryption at rest (issue 8, item 7): with a database key, a string a
//! relative writes into a case is in none of the data directory's files
//! (database, WAL, shared memory, anything else) nor in a backup; without
//! one (the control) it is, so the scan can fail. A wrong key, a missing
//! key and a key for a plain database fail with an error that says so; the
//! right key reads the case back, through `casesync check`, `backup` and
//! `restore` too. A key file that group or others can read is refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use casesync_server::app::AppState;
use casesync_server::store::DbKey;
use casesync_server::Config;
use support::{EngineDevice, TestServer};
use sync_core::ids::DocumentId;
use sync_core::model::{DisappearanceField, Edit, Field};
use zeroize::Zeroizing;

/// What Olena writes; it must never reach the disk in the clear.
const CANARY: &str = "Kharkiv-canary-7f3a";
const KEY: &str = "correct horse battery staple, but longer";

fn key(text: &str) -> DbKey {
    DbKey::new(Zeroizing::new(text.to_owned())).expect("a valid key")
}

/// `casesync ARGS` with no key, data directory or config inherited from
/// the test's environment; `env` adds variables.
fn casesync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_casesync"));
    command
        .args(args)
        .env_remove("CASESYNC_DATA_DIR")
        .env_remove("CASESYNC_CONFIG")
        .env_remove("CASESYNC_DB_KEY")
        .env_remove("CASESYNC_DB_KEY_FILE");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run casesync")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The files among `files` whose raw bytes hold `needle`.
fn holding(files: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).expect("read a data file");
            bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        })
        .cloned()
        .collect()
}

/// What a scenario leaves behind for the checks.
struct Written {
    server: TestServer,
    case: DocumentId,
    backup_dir: tempfile::TempDir,
    backup: PathBuf,
    /// Every file of the data directory and the backup, scanned while the
    /// server ran (WAL and shared memory present) and after it stopped.
    files_running: Vec<PathBuf>,
    holding_running: Vec<PathBuf>,
    holding_stopped: Vec<PathBuf>,
}

/// Olena writes the canary into her case through the real sync path and
/// waits until the server acknowledges it as durably stored; the operator
/// takes a backup with `casesync backup` while the server runs; the files
/// are scanned, then again after a clean shutdown.
async fn write_canary(db_key: Option<&str>) -> Written {
    let server = TestServer::start_with(|config| config.db_key = db_key.map(key)).await;
    let olena = server.token("olena", "phone");
    let case = server.new_case(&olena).await;
    let mut phone = EngineDevice::connect(&server, "olena", "phone").await;
    phone.find(case).await;
    phone.edit(
        case,
        &Edit::SpliceText {
            field: Field::Disappearance(DisappearanceField::Circumstances),
            pos: 0,
            delete: 0,
            insert: format!("Last seen near {CANARY} on the 14th."),
        },
    );
    phone.wait_acknowledged(case).await;

    let backup_dir = tempfile::tempdir().expect("tmp");
    let backup = backup_dir.path().join("casesync-backup.db");
    let data_dir = server.data_dir();
    let (backup_arg, data_arg) = (utf8(&backup).to_owned(), utf8(&data_dir).to_owned());
    let key_env = db_key.map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = key_env
            .iter()
            .map(|k| ("CASESYNC_DB_KEY", k.as_str()))
            .collect();
        casesync(&["backup", &backup_arg, "--data-dir", &data_arg], &env)
    })
    .await
    .expect("backup task");
    assert!(out.status.success(), "casesync backup: {}", stderr(&out));

    let mut files_running = files_under(&data_dir);
    files_running.push(backup.clone());
    for expected in ["casesync.db", "casesync.db-wal", "casesync.db-shm"] {
        assert!(
            files_running.iter().any(|f| f.ends_with(expected)),
            "{expected} exists while the server runs: {files_running:?}"
        );
    }
    let holding_running = holding(&files_running, CANARY);
    drop(phone);
    let mut server = server;
    server.shutdown().await;
    let mut files_stopped = files_under(&data_dir);
    files_stopped.push(backup.clone());
    let holding_stopped = holding(&files_stopped, CANARY);
    Written {
        server,
        case,
        backup_dir,
        backup,
        files_running,
        holding_running,
        holding_stopped,
    }
}

/// The error `AppState::open` gives on `data_dir` with `db_key`.
async fn start_error(data_dir: &Path, db_key: Option<&str>) -> String {
    let mut config = Config::new(([127, 0, 0, 1], 0).into(), data_dir.to_owned());
    config.db_key = db_key.map(key);
    match AppState::open(config).await {
        Ok(_) => panic!("the server started on {data_dir:?} with key given: {db_key:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_canary_is_on_disk_in_the_clear() {
    // The control: the scan below finds the string when nothing encrypts
    // it, so its absence in the encrypted run means something.
    let written = write_canary(None).await;
    assert!(
        !written.holding_running.is_empty(),
        "the plain database, WAL or backup holds the canary: scanned {:?}",
        written.files_running
    );
    assert!(
        written.holding_running.contains(&written.backup),
        "the plain backup holds the canary: {:?}",
        written.holding_running
    );
    assert!(!written.holding_stopped.is_empty());

    // A key for a plain database is refused, and says why.
    let error = start_error(&written.server.data_dir(), Some(KEY)).await;
    assert!(
        error.contains("the database key is wrong, or the database is not encrypted"),
        "{error}"
    );
    drop(written.backup_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_no_file_holds_the_canary_and_only_the_key_opens_it() {
    let written = write_canary(Some(KEY)).await;
    assert!(
        written.files_running.len() >= 4,
        "database, WAL, shared memory and backup at least: {:?}",
        written.files_running
    );
    assert!(
        written.holding_running.is_empty(),
        "the canary is on disk in the clear while serving: {:?}",
        written.holding_running
    );
    assert!(
        written.holding_stopped.is_empty(),
        "the canary is on disk in the clear after shutdown: {:?}",
        written.holding_stopped
    );
    let data_dir = written.server.data_dir();

    // A wrong key and a missing key fail at start-up with an error that
    // names the likely cause, not a panic.
    let error = start_error(&data_dir, Some("not the key")).await;
    assert!(
        error.contains("the database key is wrong, or the database is not encrypted"),
        "{error}"
    );
    let error = start_error(&data_dir, None).await;
    assert!(
        error.contains("if the database is encrypted, give its key with CASESYNC_DB_KEY"),
        "{error}"
    );
    // The same through the binary, with the key in the environment.
    let data_arg = utf8(&data_dir).to_owned();
    let out = casesync(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &data_arg],
        &[("CASESYNC_DB_KEY", "not the key")],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the database key is wrong"),
        "{}",
        stderr(&out)
    );
    let out = casesync(&["check", "--data-dir", &data_arg], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("give its key with CASESYNC_DB_KEY"),
        "{}",
        stderr(&out)
    );

    // The right key, from a private key file (one trailing newline is not
    // part of the key): `casesync check` passes.
    let key_dir = tempfile::tempdir().expect("tmp");
    let key_file = key_dir.path().join("db.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key_arg = utf8(&key_file).to_owned();
    let out = casesync(
        &["check", "--data-dir", &data_arg, "--db-key-file", &key_arg],
        &[],
    );
    assert!(out.status.success(), "casesync check: {}", stderr(&out));

    // The backup restores only with the key, and checks out.
    let restored = tempfile::tempdir().expect("tmp");
    let restored_arg = utf8(restored.path()).to_owned();
    let backup_arg = utf8(&written.backup).to_owned();
    let out = casesync(
        &["restore", &backup_arg, "--data-dir", &restored_arg],
        &[("CASESYNC_DB_KEY", "not the key")],
    );
    assert!(!out.status.success(), "a wrong key restores nothing");
    assert!(
        stderr(&out).contains("the database key is wrong"),
        "{}",
        stderr(&out)
    );
    assert!(!restored.path().join("casesync.db").exists());
    let out = casesync(
        &["restore", &backup_arg, "--data-dir", &restored_arg],
        &[("CASESYNC_DB_KEY_FILE", &key_arg)],
    );
    assert!(out.status.success(), "casesync restore: {}", stderr(&out));
    let out = casesync(
        &["check", "--data-dir", &restored_arg],
        &[("CASESYNC_DB_KEY", KEY)],
    );
    assert!(
        out.status.success(),
        "casesync check of the restore: {}",
        stderr(&out)
    );
    assert!(
        holding(&files_under(restored.path()), CANARY).is_empty(),
        "the restored database is encrypted too"
    );
    let out = casesync(
        &["audit", "verify", "--data-dir", &restored_arg],
        &[("CASESYNC_DB_KEY", KEY)],
    );
    assert!(out.status.success(), "audit verify: {}", stderr(&out));

    // The right key serves the case back, canary and all.
    let olena = written.server.token("olena", "phone");
    let again = TestServer::start_with(|config| {
        config.data_dir = data_dir.clone();
        config.db_key = Some(key(KEY));
    })
    .await;
    let view = again.get_case(&olena, &written.case.to_url()).await;
    let circumstances = view["case"]["disappearance"]["circumstances"]
        .as_str()
        .unwrap_or_default();
    assert!(circumstances.contains(CANARY), "{view}");
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let key_file = dir.path().join("db.key");
    std::fs::write(&key_file, KEY).expect("write key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = DbKey::from_file(&key_file).expect_err("a 0644 key file is refused");
    assert!(
        error.to_string().contains("readable by group or others"),
        "{error}"
    );
    let out = casesync(
        &[
            "check",
            "--data-dir",
            utf8(&dir.path().join("data")),
            "--db-key-file",
            utf8(&key_file),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("readable by group or others (mode 0644)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created before the key is accepted"
    );

    // An empty key (a lone newline) is refused too, and so are both an
    // environment key and a key file at once.
    std::fs::write(&key_file, "\n").expect("write key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let error = DbKey::from_file(&key_file).expect_err("an empty key is refused");
    assert!(error.to_string().contains("empty"), "{error}");
    let out = casesync(
        &[
            "check",
            "--data-dir",
            utf8(&dir.path().join("data")),
            "--db-key-file",
            utf8(&key_file),
        ],
        &[("CASESYNC_DB_KEY", KEY)],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("one way"), "{}", stderr(&out));
}
