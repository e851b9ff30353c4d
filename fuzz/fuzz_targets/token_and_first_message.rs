#![no_main]
//! See `casesync_fuzz_harness::token_and_first_message`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    casesync_fuzz_harness::token_and_first_message(data);
});
