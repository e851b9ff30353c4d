#![no_main]
//! See `casesync_fuzz_harness::sync_into_document`.

use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| {
    let _ = casesync_fuzz_harness::sync_into_document(data);
});

// Mutate as usual, then (three times in four) repair the automerge chunk
// checksums, so that mutations get past automerge's checksum test. See
// `casesync_fuzz_harness::fixup`.
fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let size = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    if !seed.is_multiple_of(4) {
        casesync_fuzz_harness::fixup::sync_message(&mut data[..size]);
    }
    size
});
