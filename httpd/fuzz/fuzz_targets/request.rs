//! Arbitrary bytes from a client, split where the fuzzer says, through one
//! connection's state machine with default and tiny limits: no panic, the
//! same requests as a reference framing, 413/431 for what is declared too
//! large, bounded buffering, well-formed responses only (see
//! `httpd::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    httpd::fuzz_check::request(data);
});
