//! Writes the seed corpus: `fuzz/corpus/<target>/<name>`, one file per seed.
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml -p
//! casesync-fuzz-harness --bin make-seeds`. It replaces the directories'
//! contents, so the corpus is exactly what `seeds.rs` describes.

use std::path::{Path, PathBuf};

use casesync_fuzz_harness::seeds::{self, Seed};

fn write(root: &Path, target: &str, seeds: Vec<Seed>) -> std::io::Result<()> {
    let dir = root.join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut total = 0;
    for (name, bytes) in &seeds {
        assert!(
            !name.contains('/') && !name.is_empty(),
            "seed names are plain file names: {name}"
        );
        total += bytes.len();
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("{target}: {} seeds, {total} bytes", seeds.len());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let fuzz_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness lives in fuzz/")
        .to_path_buf();
    let golden = fuzz_dir.join("../sync-core/tests/golden");
    let root = fuzz_dir.join("corpus");
    write(&root, "frame_to_message", seeds::frame_seeds(&golden))?;
    write(&root, "sync_into_document", seeds::sync_seeds(&golden))?;
    write(&root, "stored_bytes", seeds::stored_seeds())?;
    write(
        &root,
        "token_and_first_message",
        seeds::token_seeds(&golden),
    )?;
    Ok(())
}
