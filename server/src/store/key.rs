//! Encryption at rest: the database key, and the one place that opens a
//! connection to a casesync database.
//!
//! The build links SQLCipher (rusqlite's `bundled-sqlcipher-vendored-openssl`
//! feature). Without a key SQLCipher is plain SQLite, so encryption is a
//! runtime option: an operator who gives a key gets an encrypted database
//! (its pages, the WAL's frames and every backup), one who does not keeps
//! the plain file.
//!
//! The key comes from the environment (`CASESYNC_DB_KEY`) or from a file
//! (`--db-key-file`, `CASESYNC_DB_KEY_FILE`, or `[storage] key_file` in the
//! config file), never from a flag: a command line is visible to every user
//! of the machine through `ps`. A key file must not be readable by group or
//! others. The key is a passphrase (SQLCipher derives the page key from it
//! with PBKDF2 on every connection it opens) or a raw 256-bit key written as
//! `x'` + 64 hex digits + `'` (used as is, no derivation).
//!
//! Architecture invariant: every connection to a casesync database is opened
//! by [`open_connection`], which keys it before anything else reads the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags};
use zeroize::Zeroizing;

use super::StoreError;

/// How long [`open_connection`]'s first read waits for a lock.
const PROBE_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The environment variable that may hold the key itself.
pub const KEY_ENV: &str = "CASESYNC_DB_KEY";
/// The environment variable that may name the key file.
pub const KEY_FILE_ENV: &str = "CASESYNC_DB_KEY_FILE";

/// The database key. Cheap to clone (one shared, zeroized-on-drop copy);
/// its `Debug` never shows it.
#[derive(Clone)]
pub struct DbKey(Arc<Zeroizing<String>>);

impl fmt::Debug for DbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbKey(<redacted>)")
    }
}

/// Why no key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the database key is empty")]
    Empty,
    #[error("the database key contains a NUL byte")]
    Nul,
    #[error("the database key is not UTF-8 text (write a binary key as x'<64 hex digits>')")]
    NotUtf8,
    #[error(
        "both {KEY_ENV} and a key file ({}) are given; give the database key one way",
        .0.display()
    )]
    TwoSources(PathBuf),
    #[error("cannot read the database key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database key file {path} is readable by group or others (mode {mode:04o}); \
         make it private with `chmod 600`"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

impl DbKey {
    /// A key given as text (the environment variable's value).
    pub fn new(text: Zeroizing<String>) -> Result<Self, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        if text.contains('\0') {
            return Err(KeyError::Nul);
        }
        Ok(Self(Arc::new(text)))
    }

    /// Reads a key file: private to its owner (no group or other
    /// permission bits), one trailing newline stripped, not empty.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(read_error)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(read_error)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => Zeroizing::new(text.to_owned()),
            Err(_) => return Err(KeyError::NotUtf8),
        };
        Self::new(text)
    }

    /// The key from the places an operator may put it: the environment
    /// variable's value (`env_key`, taken out of the environment at start),
    /// else the key file named by a flag or `CASESYNC_DB_KEY_FILE`
    /// (`key_file`), else the config file's `[storage] key_file`. Both of the
    /// first two at once is an error: one of them is a mistake. `None`: the
    /// database is not encrypted.
    pub fn resolve(
        env_key: Option<Zeroizing<String>>,
        key_file: Option<&Path>,
        config_key_file: Option<&Path>,
    ) -> Result<Option<Self>, KeyError> {
        match (env_key, key_file) {
            (Some(_), Some(file)) => Err(KeyError::TwoSources(file.to_owned())),
            (Some(text), None) => Self::new(text).map(Some),
            (None, Some(file)) => Self::from_file(file).map(Some),
            (None, None) => config_key_file.map(Self::from_file).transpose(),
        }
    }

    /// Takes `CASESYNC_DB_KEY` out of the environment, so that nothing this
    /// process starts inherits it. Call it before any other thread exists
    /// (first thing in `main`): changing the environment is only sound
    /// while nothing else reads it.
    pub fn take_from_env() -> Result<Option<Zeroizing<String>>, KeyError> {
        let Some(value) = std::env::var_os(KEY_ENV) else {
            return Ok(None);
        };
        std::env::remove_var(KEY_ENV);
        match value.into_string() {
            Ok(text) => Ok(Some(Zeroizing::new(text))),
            Err(mut raw) => {
                raw.clear();
                Err(KeyError::NotUtf8)
            }
        }
    }

    /// Whether this is a raw key (`x'` + 64 hex digits, or 96 with the
    /// salt, + `'`), which SQLCipher uses as is. A passphrase costs a PBKDF2
    /// derivation (256,000 rounds, about 0.1 s) on every connection opened.
    pub fn is_raw(&self) -> bool {
        let hex = self
            .0
            .strip_prefix("x'")
            .and_then(|rest| rest.strip_suffix('\''));
        hex.is_some_and(|h| matches!(h.len(), 64 | 96) && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Keys `conn` (`PRAGMA key`). The statement text is built in a buffer
    /// that is wiped when dropped; SQLite's own copy of the statement is
    /// freed when it is finalized.
    fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut sql = Zeroizing::new(String::with_capacity(self.0.len() * 2 + 16));
        sql.push_str("PRAGMA key = '");
        for c in self.0.chars() {
            if c == '\'' {
                sql.push('\'');
            }
            sql.push(c);
        }
        sql.push_str("';");
        conn.execute_batch(&sql)
    }
}

/// Opens a connection to the casesync database at `path`: keyed first when
/// there is a key, then one cheap read (`SELECT count(*) FROM
/// sqlite_master`) so that a wrong key, a missing one or a foreign file
/// fails here with an error that says so, not at some later query.
///
/// A file that cannot be read gives [`StoreError::WrongKey`] when a key was
/// given, and [`StoreError::Corrupt`] (naming the missing key as a likely
/// cause) when none was.
pub fn open_connection(
    path: &Path,
    flags: OpenFlags,
    key: Option<&DbKey>,
) -> Result<Connection, StoreError> {
    let open_error = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    if let Some(key) = key {
        key.apply(&conn).map_err(open_error)?;
    }
    // The probe below is the first read of the file: like any read it may
    // meet another connection's lock (a checkpoint, an operator's backup).
    // Callers set their own timeout afterwards.
    conn.busy_timeout(PROBE_BUSY_TIMEOUT).map_err(open_error)?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(conn),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => match key {
            Some(_) => Err(StoreError::WrongKey {
                path: path.to_owned(),
            }),
            None => Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "{e} (if the database is encrypted, give its key with {KEY_ENV} or \
                     {KEY_FILE_ENV})"
                ),
            }),
        },
        Err(e) if super::error::is_corruption_code(&e) => Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        Err(e) => Err(open_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = DbKey::new(Zeroizing::new("hunter2-secret".into())).expect("key");
        assert_eq!(format!("{key:?}"), "DbKey(<redacted>)");
    }

    #[test]
    fn raw_keys_are_told_from_passphrases() {
        let raw = format!("x'{}'", "0a".repeat(32));
        assert!(DbKey::new(Zeroizing::new(raw)).expect("key").is_raw());
        let short = format!("x'{}'", "0a".repeat(31));
        assert!(!DbKey::new(Zeroizing::new(short)).expect("key").is_raw());
        assert!(!DbKey::new(Zeroizing::new("passphrase".into()))
            .expect("key")
            .is_raw());
    }

    #[test]
    fn an_empty_key_or_one_with_nul_is_refused() {
        assert!(matches!(
            DbKey::new(Zeroizing::new(String::new())),
            Err(KeyError::Empty)
        ));
        assert!(matches!(
            DbKey::new(Zeroizing::new("a\0b".into())),
            Err(KeyError::Nul)
        ));
    }

    #[test]
    fn a_quote_in_the_key_is_escaped() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("q.db");
        let key = DbKey::new(Zeroizing::new("it's; DROP".into())).expect("key");
        let conn =
            open_connection(&path, OpenFlags::default(), Some(&key)).expect("keyed connection");
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        drop(conn);
        let again = open_connection(&path, OpenFlags::default(), Some(&key)).expect("reopen");
        let x: i64 = again
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(x, 1);
    }
}
