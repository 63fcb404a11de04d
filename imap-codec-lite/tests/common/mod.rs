//! Transcript helpers shared by the integration tests.
#![allow(dead_code)]

use imap_codec_lite::fuzz_check::{frame_stream, Outcome, XorShift};
use imap_codec_lite::Limits;

/// Joins `S:` lines into the byte stream a server would send. Each line
/// gets CRLF appended; a line may itself contain CRLF (inside literals).
pub fn server(lines: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for line in lines {
        let line = line
            .strip_prefix("S: ")
            .unwrap_or_else(|| panic!("not an S: line: {line}"));
        v.extend_from_slice(line.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Splits a stream into messages, feeding it whole.
pub fn messages(stream: &[u8]) -> Vec<&[u8]> {
    let outcomes = frame_stream(stream, Limits::default(), &mut || stream.len());
    let mut start = 0;
    let mut out = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Message(len) => {
                out.push(&stream[start..start + len]);
                start += len;
            }
            Outcome::Incomplete(0) => {}
            other => panic!("stream did not frame cleanly: {other:?}"),
        }
    }
    out
}

/// Frames a stream whole, byte by byte and in seeded random chunks, and
/// asserts the three agree; returns the outcomes.
pub fn split_invariant(stream: &[u8], limits: Limits, seeds: u64) -> Vec<Outcome> {
    let whole = frame_stream(stream, limits, &mut || stream.len());
    let bytewise = frame_stream(stream, limits, &mut || 1);
    assert_eq!(whole, bytewise, "byte by byte");
    for seed in 1..=seeds {
        let mut rng = XorShift::new(seed);
        let max = 1 + (seed as usize * 7) % 200;
        let chunked = frame_stream(stream, limits, &mut || rng.below_incl(max));
        assert_eq!(whole, chunked, "chunks seed {seed}");
    }
    whole
}
