//! Replays one input through one target's harness, outside libFuzzer:
//! `cargo run --manifest-path fuzz/Cargo.toml -p casesync-fuzz-harness --example replay_one -- TARGET FILE`.
fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: replay_one TARGET FILE");
        std::process::exit(2);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    casesync_fuzz_harness::panic_policy();
    match target.as_str() {
        "frame_to_message" => println!("{:?}", casesync_fuzz_harness::frame_to_message(&bytes)),
        "sync_into_document" => println!("{:?}", casesync_fuzz_harness::sync_into_document(&bytes)),
        "stored_bytes" => println!("{:?}", casesync_fuzz_harness::stored_bytes(&bytes)),
        other => {
            eprintln!("unknown target {other}");
            std::process::exit(2);
        }
    }
}
