//! `casesync check`: the database's integrity, then a reload of every
//! document through the guards.

use std::path::Path;

use automerge::ReadDoc;
use sync_core::guard::{self, Limits};

use crate::store::{DbKey, SqliteConfig, SqliteStorage, Storage};

/// Runs every check; `Err` names what failed. `key`: the database key, when
/// it is encrypted.
pub async fn check(data_dir: &Path, key: Option<DbKey>) -> Result<(), String> {
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || check_blocking(&data_dir, key))
        .await
        .map_err(|e| e.to_string())?
}

pub(crate) fn check_blocking(data_dir: &Path, key: Option<DbKey>) -> Result<(), String> {
    let storage = SqliteStorage::open(SqliteConfig::new(data_dir.to_owned()).with_key(key))
        .map_err(|e| format!("cannot open the database: {e}"))?;
    storage
        .integrity_check()
        .map_err(|e| format!("integrity check failed: {e}"))?;
    let limits = Limits::default();
    let docs = storage.list_documents().map_err(|e| e.to_string())?;
    let mut changes = 0usize;
    for meta in &docs {
        let loaded = storage
            .load_document(&meta.id)
            .map_err(|e| format!("document {}: {e}", meta.id))?
            .ok_or_else(|| format!("document {} is listed but has no data", meta.id))?;
        let mut doc = match &loaded.snapshot {
            Some(s) => guard::load_document(s, &limits)
                .map_err(|e| format!("document {} snapshot: {e}", meta.id))?,
            None => automerge::Automerge::new(),
        };
        let mut known = guard::KnownActors::from_doc(&doc);
        guard::load_change_log(&mut doc, &loaded.changes, &limits, &mut known)
            .map_err(|e| format!("document {} change log: {e}", meta.id))?;
        changes += loaded.changes.len();
        // Every change must have been applied, not queued for a missing
        // dependency.
        let missing = doc.get_missing_deps(&[]);
        if !missing.is_empty() {
            return Err(format!(
                "document {} lacks {} dependencies",
                meta.id,
                missing.len()
            ));
        }
    }
    println!(
        "ok: integrity check passed; {} documents and {} changes reloaded",
        docs.len(),
        changes
    );
    Ok(())
}
