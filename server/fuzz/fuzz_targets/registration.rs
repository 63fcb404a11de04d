//! Arbitrary `POST /v1/subscriptions` bodies through `parse_registration`
//! under the default and an open configuration: no panic, 400/403 errors,
//! the body zeroized, and the secret never echoed nor able to change the
//! outcome (see `fuzz/fuzz_check.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../fuzz_check.rs"]
mod fuzz_check;

fuzz_target!(|data: &[u8]| {
    fuzz_check::registration(data);
});
