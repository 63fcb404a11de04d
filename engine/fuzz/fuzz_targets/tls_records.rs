//! Hostile records after the handshake: raw bytes, or records sealed with the server's
//! keys around arbitrary content; no panic, no record past the lent buffer (see
//! `engine::tls::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    engine::tls::fuzz_check::records(data);
});
