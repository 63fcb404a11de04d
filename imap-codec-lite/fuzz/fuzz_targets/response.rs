//! Arbitrary bytes from a server: the framer in chunks, every complete
//! message parsed; no panic, strict prefixes incomplete, split invariance,
//! and decode-encode-decode stability (see `imap_codec_lite::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imap_codec_lite::fuzz_check::response(data);
});
