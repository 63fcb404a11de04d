//! Replays the checked-in corpus of the `tls_records` fuzz target through the same checks,
//! so CI needs no fuzzer.

use std::fs;
use std::path::PathBuf;

use engine::tls::fuzz_check;

#[test]
fn tls_records_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tls_records");
    let mut n = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| fuzz_check::records(&data));
        assert!(
            result.is_ok(),
            "{} fails the tls_records check",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 10, "the corpus holds {n} inputs");
}
