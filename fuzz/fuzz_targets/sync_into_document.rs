#![no_main]
//! See `casesync_fuzz_harness::sync_into_document`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = casesync_fuzz_harness::sync_into_document(data);
});
