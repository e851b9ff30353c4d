#![no_main]
//! See `casesync_fuzz_harness::stored_bytes`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = casesync_fuzz_harness::stored_bytes(data);
});
