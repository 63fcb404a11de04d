//! Replays the checked-in fuzz corpus through the same checks the fuzz
//! target runs, so CI needs no fuzzer.

use std::fs;
use std::path::PathBuf;

#[path = "../fuzz/fuzz_check.rs"]
mod fuzz_check;

fn replay(dir: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails the check", path.display());
        n += 1;
    }
    n
}

#[test]
fn registration_corpus() {
    assert!(replay("fuzz/corpus/registration", fuzz_check::registration) > 10);
}

/// Inputs that once failed the check, kept with a note in the check's docs.
#[test]
fn registration_found() {
    assert!(replay("fuzz/artifacts-found", fuzz_check::registration) > 0);
}

/// The secret swap keeps the JSON valid and the secret's length, and
/// changes every character of it.
#[test]
fn swapped_secrets_keep_shape() {
    let body = r#"{"imap": {"host": "h", "username": "u", "password": "a\"\\\u00e9\ud83d\ude00~ é😀"}, "x": [1, {"imap": 2}]}"#;
    let body = body.as_bytes();
    let swapped = fuzz_check::swap_secrets(body).expect("a secret to swap");
    let before: serde_json::Value = serde_json::from_slice(body).unwrap();
    let after: serde_json::Value = serde_json::from_slice(&swapped).unwrap();
    let (a, b) = (
        before["imap"]["password"].as_str().unwrap(),
        after["imap"]["password"].as_str().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    assert_eq!(a.chars().count(), b.chars().count());
    assert!(
        a.chars().zip(b.chars()).all(|(x, y)| x != y),
        "{a:?} vs {b:?}"
    );
    assert_eq!(before["imap"]["host"], after["imap"]["host"]);
    assert_eq!(before["x"], after["x"]);
    assert_eq!(
        fuzz_check::swap_secrets(br#"{"imap": {"password": 5}}"#),
        None
    );
    // The array form serde also accepts: imap first, the password fifth.
    let swapped = fuzz_check::swap_secrets(br#"[["h", 1, null, "u", "pw", null]]"#);
    assert_eq!(
        swapped.as_deref(),
        Some(&br#"[["h", 1, null, "u", "qx", null]]"#[..])
    );
}
