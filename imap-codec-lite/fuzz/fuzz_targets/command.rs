//! Arbitrary credentials: LOGIN, EXAMINE, STATUS and AUTHENTICATE encode
//! into commands that parse back to them with no CR or LF outside literals
//! (see `imap_codec_lite::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imap_codec_lite::fuzz_check::command(data);
});
