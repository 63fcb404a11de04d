//! Replays the checked-in fuzz corpus through the same checks the fuzz
//! targets run, so CI needs no fuzzer.

use std::fs;
use std::path::PathBuf;

use imap_codec_lite::fuzz_check;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(
            result.is_ok(),
            "{} fails the {target} check",
            path.display()
        );
        n += 1;
    }
    n
}

#[test]
fn response_corpus() {
    assert!(replay("response", fuzz_check::response) > 10);
}

#[test]
fn command_corpus() {
    assert!(replay("command", fuzz_check::command) > 5);
}

#[test]
fn headers_corpus() {
    assert!(replay("headers", fuzz_check::headers) > 10);
}
