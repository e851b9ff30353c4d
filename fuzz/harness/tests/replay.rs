//! Replays the seed corpus and every kept crasher through the same code the
//! fuzz targets run, without libFuzzer (so on stable, under `cargo test`).
//! Inputs named `hostile-*`, and every crasher, must be refused.

use std::path::{Path, PathBuf};

use casesync_fuzz_harness::{
    frame_to_message, stored_bytes, sync_into_document, token, token_and_first_message, Outcome,
};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness lives in fuzz/")
        .to_path_buf()
}

/// (name, bytes, must be refused) for every seed and crasher of `target`.
fn inputs(target: &str) -> Vec<(String, Vec<u8>, bool)> {
    let mut out = Vec::new();
    let dirs = [
        (fuzz_dir().join("corpus").join(target), false),
        (
            fuzz_dir()
                .join("../sync-core/tests/fuzz-crashers")
                .join(target),
            true,
        ),
    ];
    for (dir, crashers) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let name = file_name(&path);
            if name.starts_with('.') || name.ends_with(".md") {
                continue;
            }
            let bytes = std::fs::read(&path).expect("readable input");
            let refuse = crashers || name.starts_with("hostile-");
            out.push((format!("{}/{name}", dir.display()), bytes, refuse));
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned()
}

fn check(target: &str, run: impl Fn(&[u8]) -> Outcome) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "{target} has seeds");
    for (name, bytes, refuse) in inputs {
        let outcome = run(&bytes);
        if refuse {
            assert!(
                matches!(outcome, Outcome::Refused(_)),
                "{name} must be refused, got {outcome:?}"
            );
        }
    }
}

#[test]
fn frame_to_message_seeds_and_crashers() {
    check("frame_to_message", frame_to_message);
}

#[test]
fn sync_into_document_seeds_and_crashers() {
    check("sync_into_document", sync_into_document);
}

#[test]
fn stored_bytes_seeds_and_crashers() {
    check("stored_bytes", |bytes| {
        let outcome = stored_bytes(bytes);
        if outcome.any_accepted() {
            Outcome::Accepted
        } else {
            Outcome::Refused("every loader refused".into())
        }
    });
}

#[test]
fn token_and_first_message_seeds_and_crashers() {
    // Only mode 2 (the first frame) has an accepted/refused answer; the
    // token modes must simply not panic.
    check("token_and_first_message", |bytes| {
        token_and_first_message(bytes);
        match bytes.split_first() {
            Some((mode, frame)) if mode % 5 == token::MODE_FIRST_MESSAGE => {
                token::first_message(frame)
            }
            _ => Outcome::Refused("not a first message".into()),
        }
    });
}

#[test]
fn real_traffic_is_accepted() {
    // The seeds are only useful if the harness accepts real traffic.
    for (name, bytes, _) in inputs("sync_into_document") {
        if file_name(Path::new(&name)).starts_with("real-") {
            assert_eq!(sync_into_document(&bytes), Outcome::Accepted, "{name}");
        }
    }
    for (name, bytes, _) in inputs("frame_to_message") {
        if file_name(Path::new(&name)).starts_with("frame-real-") {
            assert_eq!(frame_to_message(&bytes), Outcome::Accepted, "{name}");
        }
    }
    for (name, bytes, _) in inputs("token_and_first_message") {
        let n = file_name(Path::new(&name));
        if n.starts_with("first-golden-join-1") {
            assert_eq!(
                token::first_message(&bytes[1..]),
                Outcome::Accepted,
                "{name}"
            );
        }
    }
}
