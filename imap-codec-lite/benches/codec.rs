//! Micro-benchmarks of the codec's hot paths: framing and parsing what an idle session
//! receives, and encoding the login.
//!
//! `cargo bench -p imap-codec-lite` (short: `-- --warm-up-time 1 --measurement-time 2`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use imap_codec_lite::{encode, parse_response, Command, Frame, Framer, LiteralMode, Sasl};

const EXISTS: &[u8] = b"* 5 EXISTS\r\n";
const STATUS: &[u8] = b"* STATUS INBOX (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1700000000)\r\n";
const FETCH_LITERAL: &[u8] = b"* 12 FETCH (UID 4827 BODY[HEADER.FIELDS (FROM SUBJECT)] {61}\r\nFrom: Alice <alice@example.org>\r\nSubject: Lunch tomorrow?\r\n\r\n)\r\n";

/// Frames one complete message and parses it, as a session does for each response.
fn frame_and_parse(msg: &[u8]) -> usize {
    let mut framer = Framer::new();
    match framer.advance(msg) {
        Ok(Frame::Complete { len }) => match parse_response(&msg[..len]) {
            Ok(r) => {
                black_box(&r);
                len
            }
            Err(_) => 0,
        },
        _ => 0,
    }
}

fn parser(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, msg) in [
        ("idle_exists", EXISTS),
        ("status", STATUS),
        ("fetch_literal", FETCH_LITERAL),
    ] {
        assert_eq!(frame_and_parse(msg), msg.len(), "{name} must parse");
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name, |b| b.iter(|| frame_and_parse(black_box(msg))));
    }
    g.finish();
}

fn encoder(c: &mut Criterion) {
    let mut out = [0u8; 1024];
    let cmd = Command::Authenticate {
        mechanism: Sasl::Plain {
            username: b"alice@example.org",
            password: b"correct horse battery staple",
        },
        sasl_ir: true,
    };
    c.bench_function("encode/authenticate_plain", |b| {
        b.iter(|| {
            encode(
                black_box(7),
                black_box(&cmd),
                LiteralMode::NonSync,
                &mut out,
            )
            .map(|e| e.len)
            .unwrap_or(0)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    targets = parser, encoder
}
criterion_main!(benches);
