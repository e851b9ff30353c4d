//! `casesync restore FILE --data-dir DIR`: puts an online backup (from
//! `casesync backup`) in place as a fresh data directory's database.
//!
//! It refuses a directory that already has a database (a restore never
//! overwrites), checks the backup before using it (a SQLite file of
//! casesync's, intact, every document reloadable), copies it under a
//! temporary name, fsyncs, and renames it into place. The development key
//! and any `[auth]` keys are not in the database: restore them from where
//! they are kept, or devices must sign in again. A backup of an encrypted
//! database is encrypted with the same key, which restore takes the way
//! `serve` does; the restored file is the backup's bytes, still encrypted.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::store::{DbKey, DB_FILE_NAME};

/// Restores `backup` into `data_dir`; `key` opens it when it is encrypted.
pub async fn restore(backup: &Path, data_dir: &Path, key: Option<DbKey>) -> Result<(), String> {
    let (backup, data_dir) = (backup.to_owned(), data_dir.to_owned());
    tokio::task::spawn_blocking(move || restore_blocking(&backup, &data_dir, key))
        .await
        .map_err(|e| e.to_string())?
}

fn restore_blocking(backup: &Path, data_dir: &Path, key: Option<DbKey>) -> Result<(), String> {
    let target = data_dir.join(DB_FILE_NAME);
    if target.exists() {
        return Err(format!(
            "{} already has a database; restore into an empty data directory",
            data_dir.display()
        ));
    }
    let bytes = std::fs::read(backup).map_err(|e| format!("{}: {e}", backup.display()))?;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;

    // Check a private copy first, in a scratch directory beside the target,
    // so a bad backup never becomes the live database.
    let scratch = tempfile::Builder::new()
        .prefix(".restore-check-")
        .tempdir_in(data_dir)
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    write_synced(&scratch.path().join(DB_FILE_NAME), &bytes)?;
    crate::check::check_blocking(scratch.path(), key)
        .map_err(|e| format!("the backup does not check out: {e}"))?;
    drop(scratch);

    let partial = data_dir.join(format!("{DB_FILE_NAME}.restoring"));
    write_synced(&partial, &bytes)?;
    std::fs::rename(&partial, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", data_dir.display()))?;
    println!("restored {} into {}", backup.display(), target.display());
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}
