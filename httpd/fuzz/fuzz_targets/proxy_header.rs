//! Arbitrary bytes as the start of a trusted proxy's connection (PROXY
//! protocol v2) and as `X-Forwarded-For` values: no panic, prefixes of a
//! header are incomplete, sources round-trip (see `httpd::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    httpd::fuzz_check::proxy_header(data);
});
