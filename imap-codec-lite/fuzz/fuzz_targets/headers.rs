//! Arbitrary bytes as FETCH attributes, a header block and field values: no panic, bounded
//! and clean display text (see `imap_codec_lite::fuzz_check::headers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imap_codec_lite::fuzz_check::headers(data);
});
