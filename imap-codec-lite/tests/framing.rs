//! Framing: split invariance, strict prefixes, and what happens at and just
//! past each limit.

mod common;

use common::{server, split_invariant};
use imap_codec_lite::fuzz_check::{self, Outcome};
use imap_codec_lite::{
    Frame, FrameError, Framer, Limits, MAX_LINE_LEN, MAX_LITERAL_LEN, MAX_MESSAGE_LEN,
};

/// A transcript mixing every framing case: plain lines, `{N}`, `{N+}`,
/// `~{N}`, `{0}`, several literals in one message, literals holding CRLF
/// and braces, and a bare LF.
fn mixed_transcript() -> Vec<u8> {
    server(&[
        "S: * OK [CAPABILITY IMAP4rev1 IDLE] ready",
        "S: A1 OK done",
        "S: * 1 FETCH (BODY[] {5}\r\n{3}\r\n UID 1)",
        "S: * 2 FETCH (BODY[1] {2+}\r\nab BODY[2] ~{4}\r\n\r\n\r\n BODY[3] {0}\r\n)",
        "S: * STATUS {3}\r\n}\r\n (MESSAGES 1)",
        "S: + idling",
        "S: * 4 EXISTS",
        "S: * OK text ending in a brace }",
        "S: * OK text ending in {x}",
    ])
}

#[test]
fn split_invariance_of_transcripts() {
    let stream = mixed_transcript();
    let outcomes = split_invariant(&stream, Limits::default(), 200);
    let lens: Vec<usize> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Message(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(lens.len(), 9);
    assert_eq!(outcomes.last(), Some(&Outcome::Incomplete(0)));
    // Each boundary really is the end of one S: entry.
    assert_eq!(lens[2], "* 1 FETCH (BODY[] {5}\r\n{3}\r\n UID 1)\r\n".len());
    // The same holds with small limits, where the framer has to give up.
    let small = split_invariant(&stream, fuzz_check::SMALL_LIMITS, 200);
    assert!(matches!(
        small.last(),
        Some(Outcome::Error(_)) | Some(Outcome::Incomplete(0))
    ));
}

#[test]
fn strict_prefixes_are_incomplete() {
    let stream = mixed_transcript();
    let mut start = 0;
    for o in split_invariant(&stream, Limits::default(), 1) {
        if let Outcome::Message(len) = o {
            let msg = &stream[start..start + len];
            for k in 0..len {
                assert_eq!(
                    Framer::new().advance(&msg[..k]),
                    Ok(Frame::Incomplete),
                    "{k}"
                );
            }
            start += len;
        }
    }
}

#[test]
fn bare_lf_ends_the_message() {
    let mut f = Framer::new();
    assert_eq!(f.advance(b"* OK hi\n* OK"), Ok(Frame::Complete { len: 8 }));
    // `{5}` before a bare LF announces nothing.
    assert_eq!(
        Framer::new().advance(b"* X {5}\nabc"),
        Ok(Frame::Complete { len: 8 })
    );
}

#[test]
fn repeated_calls_only_scan_new_bytes() {
    let msg = b"* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n";
    let mut f = Framer::new();
    for k in 1..msg.len() {
        assert_eq!(f.advance(&msg[..k]), Ok(Frame::Incomplete));
        assert_eq!(f.scanned(), k);
    }
    assert_eq!(f.advance(msg), Ok(Frame::Complete { len: msg.len() }));
    assert_eq!(f.scanned(), 0);
}

/// A line of `len` bytes, its CRLF included.
fn line(len: usize) -> Vec<u8> {
    let mut v = b"* OK ".to_vec();
    v.resize(len - 2, b'x');
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn line_limit() {
    // One below and exactly at the limit: complete.
    for len in [MAX_LINE_LEN - 1, MAX_LINE_LEN] {
        let l = line(len);
        assert_eq!(Framer::new().advance(&l), Ok(Frame::Complete { len }));
    }
    // One past: an error, reported as soon as MAX_LINE_LEN bytes hold no LF,
    // without waiting for the rest of the line.
    let l = line(MAX_LINE_LEN + 1);
    let err = Err(FrameError::LineTooLong {
        limit: MAX_LINE_LEN,
    });
    assert_eq!(Framer::new().advance(&l), err);
    assert_eq!(Framer::new().advance(&l[..MAX_LINE_LEN]), err);
    assert_eq!(
        Framer::new().advance(&l[..MAX_LINE_LEN - 1]),
        Ok(Frame::Incomplete)
    );
    // The same byte by byte.
    let mut f = Framer::new();
    for k in 1..MAX_LINE_LEN {
        assert_eq!(f.advance(&l[..k]), Ok(Frame::Incomplete));
    }
    assert_eq!(f.advance(&l[..MAX_LINE_LEN]), err);
    // The limit is per line: a line after a literal starts counting afresh.
    let mut msg = b"* 1 FETCH (BODY[] {3}\r\nabc".to_vec();
    msg.extend_from_slice(&line(MAX_LINE_LEN)[2..]);
    assert_eq!(
        Framer::new().advance(&msg),
        Ok(Frame::Complete { len: msg.len() })
    );
}

/// `* 1 FETCH (BODY[] {n}` CRLF, n bytes, `)` CRLF.
fn with_literal(n: usize) -> Vec<u8> {
    let mut v = format!("* 1 FETCH (BODY[] {{{n}}}\r\n").into_bytes();
    v.resize(v.len() + n, b'y');
    v.extend_from_slice(b")\r\n");
    v
}

#[test]
fn literal_limit() {
    let ok = with_literal(MAX_LITERAL_LEN);
    assert_eq!(
        Framer::new().advance(&ok),
        Ok(Frame::Complete { len: ok.len() })
    );
    // One past: refused at the announcement, before any literal byte.
    let big = with_literal(MAX_LITERAL_LEN + 1);
    let announce = big.iter().position(|&b| b == b'\n').unwrap() + 1;
    let err = Err(FrameError::LiteralTooLarge {
        len: MAX_LITERAL_LEN as u64 + 1,
        limit: MAX_LITERAL_LEN,
    });
    assert_eq!(Framer::new().advance(&big[..announce]), err);
    assert_eq!(
        Framer::new().advance(&big[..announce - 1]),
        Ok(Frame::Incomplete)
    );
    // Absurd announcements saturate.
    assert_eq!(
        Framer::new().advance(b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n"),
        Err(FrameError::LiteralTooLarge {
            len: u64::MAX,
            limit: MAX_LITERAL_LEN
        })
    );
}

/// A message of exactly `total` bytes made of two literals (each within the
/// literal limit).
fn message_of(total: usize) -> Vec<u8> {
    let head = |n: usize| format!("* 1 FETCH (BODY[1] {{{n}}}\r\n").into_bytes();
    let mid = |n: usize| format!(" BODY[2] {{{n}}}\r\n").into_bytes();
    let first = MAX_LITERAL_LEN;
    // Digits of the second length depend on it; try the few candidates.
    for digits in 1..=6 {
        let fixed = head(first).len() + first + mid(0).len() - 1 + digits + 3;
        let Some(second) = total.checked_sub(fixed) else {
            continue;
        };
        if second.to_string().len() != digits {
            continue;
        }
        let mut v = head(first);
        v.resize(v.len() + first, b'a');
        v.extend_from_slice(&mid(second));
        v.resize(v.len() + second, b'b');
        v.extend_from_slice(b")\r\n");
        assert_eq!(v.len(), total);
        return v;
    }
    unreachable!("no layout for {total}");
}

#[test]
fn message_limit() {
    for total in [MAX_MESSAGE_LEN - 1, MAX_MESSAGE_LEN] {
        let m = message_of(total);
        assert_eq!(
            Framer::new().advance(&m),
            Ok(Frame::Complete { len: total })
        );
    }
    let err = Err(FrameError::MessageTooLong {
        limit: MAX_MESSAGE_LEN,
    });
    // One past, the excess in the last line: an error once MAX_MESSAGE_LEN
    // bytes hold no final LF.
    let m = message_of(MAX_MESSAGE_LEN + 1);
    assert_eq!(Framer::new().advance(&m), err);
    assert_eq!(Framer::new().advance(&m[..MAX_MESSAGE_LEN]), err);
    assert_eq!(
        Framer::new().advance(&m[..MAX_MESSAGE_LEN - 1]),
        Ok(Frame::Incomplete)
    );
    // A literal announcement that cannot fit is refused at once.
    let mut m = message_of(MAX_MESSAGE_LEN);
    let second = m.windows(2).rposition(|w| w == b"\r\n").unwrap();
    let announce = m[..second].windows(2).rposition(|w| w == b"\r\n").unwrap();
    let head_end = m[..announce].windows(2).rposition(|w| w == b"\r\n");
    assert!(head_end.is_some());
    // Grow the second literal by the few bytes that keep its digit count.
    let line_start = m[..announce].iter().rposition(|&b| b == b' ').unwrap();
    let old: usize = std::str::from_utf8(&m[line_start + 2..announce - 1])
        .unwrap()
        .parse()
        .unwrap();
    let grown = format!(" {{{}}}", old + 5);
    m.splice(line_start..announce, grown.bytes());
    assert_eq!(
        Framer::new().advance(&m[..line_start + grown.len() + 2]),
        err
    );
}

#[test]
fn errors_are_split_invariant() {
    let mut stream = mixed_transcript();
    stream.extend_from_slice(&line(MAX_LINE_LEN + 10));
    let out = split_invariant(&stream, Limits::default(), 5);
    assert_eq!(
        out.last(),
        Some(&Outcome::Error(FrameError::LineTooLong {
            limit: MAX_LINE_LEN
        }))
    );
}

#[test]
fn explicit_limits() {
    let limits = Limits {
        line: 10,
        literal: 4,
        message: 30,
    };
    let mut f = Framer::with_limits(limits);
    assert_eq!(f.limits(), limits);
    assert_eq!(f.advance(b"* OK 67\r\n"), Ok(Frame::Complete { len: 9 }));
    assert_eq!(f.advance(b"* OK 678\r\n"), Ok(Frame::Complete { len: 10 }));
    assert_eq!(
        f.advance(b"* OK 6789\r\n"),
        Err(FrameError::LineTooLong { limit: 10 })
    );
    assert_eq!(
        Framer::with_limits(limits).advance(b"* {5}\r\n"),
        Err(FrameError::LiteralTooLarge { len: 5, limit: 4 })
    );
    assert_eq!(
        Framer::with_limits(limits).advance(b"* {4}\r\nabcd{4}\r\nabcd{4}\r\nabcdx"),
        Err(FrameError::MessageTooLong { limit: 30 })
    );
    assert_eq!(Limits::default().message, MAX_MESSAGE_LEN);
}

/// Poisoning (STYLE.md section 2): after an error the message can be
/// skipped to its end without keeping it, and framing goes on after it.
#[test]
fn oversized_messages_are_skipped_not_resynced() {
    use imap_codec_lite::fuzz_check::{boundaries, frame_stream_skipping, NO_LIMITS};
    use imap_codec_lite::Skip;
    let limits = Limits {
        line: 32,
        literal: 16,
        message: 64,
    };
    // A too-long line whose literal announcement straddles the point where
    // the limit was hit, a too-large literal that itself holds a fake
    // announcement and CRLFs, a message too long, then a normal message.
    let mut stream = Vec::new();
    stream.extend_from_slice(b"* 1 FETCH (BODY[] xxxxxxxxxxxxx {12");
    stream.extend_from_slice(b"}\r\n{99}\r\n\r\n* OK)\r\n");
    stream.extend_from_slice(b"* 2 FETCH (BODY[] {37}\r\n");
    stream.extend_from_slice(&[b'z'; 30]);
    stream.extend_from_slice(b"{7}\r\n\r\n)\r\n");
    stream.extend_from_slice(
        b"* 33 FETCH ({10}\r\n0123456789 {10}\r\n0123456789 {10}\r\n0123456789)\r\n",
    );
    stream.extend_from_slice(b"* 4 EXISTS\r\n");
    let reference = boundaries(&frame_stream(&stream, NO_LIMITS));
    assert_eq!(reference.len(), 4);
    let skipped = split_invariant_skipping(&stream, limits);
    assert_eq!(boundaries(&skipped), reference);
    assert_eq!(
        skipped
            .iter()
            .filter(|o| matches!(o, Outcome::Error(_)))
            .count(),
        3
    );
    assert_eq!(skipped[skipped.len() - 2], Outcome::Message(12));

    // Skipping on purpose, with no error, from the middle of a literal.
    let msg = b"* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n* 2 EXISTS\r\n";
    let mut f = Framer::new();
    assert_eq!(f.advance(&msg[..30]), Ok(Frame::Incomplete));
    assert_eq!(f.skip(&msg[..30]), Skip::Incomplete { discard: 30 });
    assert_eq!(f.skip(&msg[30..]), Skip::Done { len: 7 });
    assert_eq!(f.advance(&msg[37..]), Ok(Frame::Complete { len: 12 }));

    fn frame_stream(s: &[u8], l: Limits) -> Vec<Outcome> {
        imap_codec_lite::fuzz_check::frame_stream(s, l, &mut || s.len())
    }
    fn split_invariant_skipping(s: &[u8], l: Limits) -> Vec<Outcome> {
        let whole = frame_stream_skipping(s, l, &mut || s.len());
        assert_eq!(whole, frame_stream_skipping(s, l, &mut || 1));
        for seed in 1..50 {
            let mut rng = imap_codec_lite::fuzz_check::XorShift::new(seed);
            assert_eq!(
                whole,
                frame_stream_skipping(s, l, &mut || rng.below_incl(20))
            );
        }
        whole
    }
}

/// After an error, `advance` repeats it until the message is skipped.
#[test]
fn errors_are_sticky() {
    let limits = Limits {
        line: 8,
        literal: 8,
        message: 64,
    };
    let mut f = Framer::with_limits(limits);
    let err = Err(FrameError::LineTooLong { limit: 8 });
    assert_eq!(f.advance(b"* OK 12345"), err);
    assert_eq!(f.advance(b"* OK 12345\r\n"), err);
    assert_eq!(f.advance(b""), err);
}
