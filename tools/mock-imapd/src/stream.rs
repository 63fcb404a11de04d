//! Streamed faults: a hostile byte stream offered to one session as fast as
//! its client reads it (or one byte every `every`, for a drip), bounded in
//! bytes and in time, and reported when it ends.
//!
//! The bytes are made here from their offset, never buffered whole: a 100 MB
//! giant line costs the mock one 64 KiB pattern, not 100 MB of tail. The
//! reactor owns the socket and the clock; this module says what to write next
//! and keeps the tally.

use std::io;
use std::time::{Duration, Instant};

/// A stream's pattern is repeated from this many bytes.
const PATTERN_LEN: usize = 64 * 1024;
/// A stream that makes no progress this long (the client stopped reading) ends
/// with [`io::ErrorKind::TimedOut`], as a blocking write with this timeout would.
pub const STALL_LIMIT: Duration = Duration::from_secs(2);

/// What a stream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `x` bytes without CRLF.
    GiantLine,
    /// `* 1 FETCH (BODY[] {N}` CRLF, then zero bytes of a literal that never ends.
    GiantLiteral,
    /// `+ more` CRLF, over and over.
    Continuations,
    /// Pseudo-random bytes with a CRLF every 61.
    Garbage,
    /// Valid responses a client must read and ignore: 64 `* OK still here` lines
    /// and a FETCH with a 60,000-byte literal, over and over.
    Flood,
    /// `* OK `, then one `x` every [`StreamSpec::every`]: a line that never ends.
    Drip,
}

impl StreamKind {
    /// The control channel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::GiantLine => "giant-line",
            StreamKind::GiantLiteral => "giant-literal",
            StreamKind::Continuations => "continuations",
            StreamKind::Garbage => "garbage",
            StreamKind::Flood => "flood",
            StreamKind::Drip => "drip",
        }
    }

    /// The kind a control-channel name stands for.
    pub fn from_name(name: &str) -> Option<StreamKind> {
        [
            StreamKind::GiantLine,
            StreamKind::GiantLiteral,
            StreamKind::Continuations,
            StreamKind::Garbage,
            StreamKind::Flood,
            StreamKind::Drip,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One stream as ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// What to send.
    pub kind: StreamKind,
    /// Bytes offered in all, the head included.
    pub total: u64,
    /// The stream ends when this has passed, whatever is left.
    pub limit: Duration,
    /// A drip's pause between bytes; zero for the others.
    pub every: Duration,
}

/// How one stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// The session's index (accept order).
    pub index: u64,
    /// The session's login name hash ([`crate::session::user_hash`]).
    pub user: u64,
    /// What was sent.
    pub kind: StreamKind,
    /// Bytes ordered ([`StreamSpec::total`]).
    pub offered: u64,
    /// Bytes the kernel accepted.
    pub accepted: u64,
    /// Why it ended early: a write error, a stall, or the session closing.
    pub error: Option<io::ErrorKind>,
    /// From the start to the end of the stream.
    pub took: Duration,
}

impl StreamReport {
    /// `INDEX USER_HEX KIND OFFERED ACCEPTED ERROR|- TOOK_MS`, one control line.
    pub fn line(&self) -> String {
        let error = self.error.map_or("-".to_owned(), |e| format!("{e:?}"));
        format!(
            "{} {:016x} {} {} {} {error} {}",
            self.index,
            self.user,
            self.kind.name(),
            self.offered,
            self.accepted,
            self.took.as_millis()
        )
    }
}

/// A stream in progress.
pub(crate) struct Stream {
    spec: StreamSpec,
    head: Vec<u8>,
    pattern: Vec<u8>,
    sent: u64,
    started: Instant,
    progressed: Instant,
    /// A drip's next byte is due then.
    next_drip: Instant,
    /// Close the session when the stream ends.
    then_close: bool,
}

/// What the reactor should do with a stream now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    /// Write these bytes (or as many as the socket takes).
    Write(&'a [u8]),
    /// Nothing is due before this instant.
    WaitUntil(Instant),
    /// The stream is over; the error, if it ended early.
    Done(Option<io::ErrorKind>),
}

impl Stream {
    pub(crate) fn new(spec: StreamSpec, now: Instant) -> Stream {
        let (head, pattern) = match spec.kind {
            StreamKind::GiantLine => (Vec::new(), vec![b'x'; PATTERN_LEN]),
            StreamKind::GiantLiteral => (
                format!("* 1 FETCH (BODY[] {{{}}}\r\n", spec.total).into_bytes(),
                vec![0; PATTERN_LEN],
            ),
            StreamKind::Continuations => (Vec::new(), b"+ more\r\n".repeat(PATTERN_LEN / 8)),
            StreamKind::Garbage => (Vec::new(), garbage(PATTERN_LEN)),
            StreamKind::Flood => (Vec::new(), flood_chunk()),
            StreamKind::Drip => (b"* OK ".to_vec(), vec![b'x']),
        };
        Stream {
            spec,
            head,
            pattern,
            sent: 0,
            started: now,
            progressed: now,
            next_drip: now,
            then_close: false,
        }
    }

    /// The session is to be closed when this stream ends.
    pub(crate) fn then_close(mut self) -> Stream {
        self.then_close = true;
        self
    }

    pub(crate) fn closes_after(&self) -> bool {
        self.then_close
    }

    /// What to do at `now` while the socket has room.
    pub fn step(&self, now: Instant) -> Step<'_> {
        if self.sent >= self.spec.total || now >= self.started + self.spec.limit {
            return Step::Done(None);
        }
        if now >= self.stalled_at() {
            return Step::Done(Some(io::ErrorKind::TimedOut));
        }
        let left = usize::try_from(self.spec.total - self.sent).unwrap_or(usize::MAX);
        let at = usize::try_from(self.sent).unwrap_or(usize::MAX);
        if let Some(head) = self.head.get(at..).filter(|h| !h.is_empty()) {
            return Step::Write(&head[..head.len().min(left)]);
        }
        if self.spec.kind == StreamKind::Drip && now < self.next_drip {
            return Step::WaitUntil(self.next_drip);
        }
        let offset = (at - self.head.len()) % self.pattern.len();
        let chunk = &self.pattern[offset..];
        Step::Write(&chunk[..chunk.len().min(left)])
    }

    /// The socket took `n` bytes at `now`.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        self.sent += n as u64;
        self.progressed = now;
        if self.spec.kind == StreamKind::Drip && self.sent as usize > self.head.len() {
            self.next_drip = now + self.spec.every;
        }
    }

    /// When the reactor must look again although the socket says nothing: the
    /// next drip, the time limit, or the stall limit.
    pub fn wake_at(&self) -> Instant {
        let end = (self.started + self.spec.limit).min(self.stalled_at());
        if self.spec.kind == StreamKind::Drip && self.sent as usize >= self.head.len() {
            end.min(self.next_drip)
        } else {
            end
        }
    }

    /// A write due since then and still not taken by [`STALL_LIMIT`] later is a
    /// stall; a drip's pause does not count.
    fn stalled_at(&self) -> Instant {
        let due = if self.spec.kind == StreamKind::Drip {
            self.progressed.max(self.next_drip)
        } else {
            self.progressed
        };
        due + STALL_LIMIT
    }

    pub fn report(
        &self,
        index: u64,
        user: u64,
        error: Option<io::ErrorKind>,
        now: Instant,
    ) -> StreamReport {
        StreamReport {
            index,
            user,
            kind: self.spec.kind,
            offered: self.spec.total,
            accepted: self.sent,
            error,
            took: now.saturating_duration_since(self.started),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), CRLF every 61 bytes.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if out.len() % 63 == 61 {
            out.extend_from_slice(b"\r\n");
            continue;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.push((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8);
    }
    out.truncate(len);
    out
}

/// Valid responses a client must read and ignore: keepalives and a FETCH with a
/// 60 KB literal (under a client's 64 KiB literal limit).
fn flood_chunk() -> Vec<u8> {
    let mut chunk = Vec::new();
    for _ in 0..64 {
        chunk.extend_from_slice(b"* OK still here\r\n");
    }
    chunk.extend_from_slice(b"* 1 FETCH (FLAGS (\\Seen) BODY[] {60000}\r\n");
    chunk.extend_from_slice(&[b'y'; 60_000]);
    chunk.extend_from_slice(b")\r\n");
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: StreamKind, total: u64) -> StreamSpec {
        StreamSpec {
            kind,
            total,
            limit: Duration::from_secs(10),
            every: Duration::from_millis(500),
        }
    }

    /// Drains a stream as a socket that takes `take` bytes a call would.
    fn drain(stream: &mut Stream, now: Instant, take: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Step::Write(bytes) = stream.step(now) {
            let n = bytes.len().min(take);
            out.extend_from_slice(&bytes[..n]);
            stream.wrote(n, now);
        }
        out
    }

    #[test]
    fn a_giant_literal_announces_the_total_and_stops_there() {
        let now = Instant::now();
        let mut stream = Stream::new(spec(StreamKind::GiantLiteral, 200_000), now);
        let out = drain(&mut stream, now, 7_000);
        assert_eq!(out.len(), 200_000);
        assert!(out.starts_with(b"* 1 FETCH (BODY[] {200000}\r\n"));
        assert!(out[30..].iter().all(|&b| b == 0));
        assert_eq!(stream.step(now), Step::Done(None));
        let report = stream.report(3, 9, None, now);
        assert_eq!((report.offered, report.accepted), (200_000, 200_000));
        assert_eq!(
            report.line(),
            "3 0000000000000009 giant-literal 200000 200000 - 0"
        );
    }

    #[test]
    fn patterns_repeat_across_chunks() {
        let now = Instant::now();
        let total = 3 * PATTERN_LEN as u64 + 5;
        let mut stream = Stream::new(spec(StreamKind::Continuations, total), now);
        let out = drain(&mut stream, now, 10_000);
        assert_eq!(out.len() as u64, total);
        assert!(out
            .chunks(8)
            .take(3 * PATTERN_LEN / 8)
            .all(|c| c == b"+ more\r\n"));
        let mut flood = Stream::new(spec(StreamKind::Flood, 300_000), now);
        let out = drain(&mut flood, now, usize::MAX);
        let chunk = flood_chunk();
        assert_eq!(&out[..chunk.len()], &chunk[..]);
        assert_eq!(&out[chunk.len()..2 * chunk.len()], &chunk[..]);
        let garbage = garbage(PATTERN_LEN);
        assert!(garbage.windows(2).filter(|w| w == b"\r\n").count() >= PATTERN_LEN / 63);
    }

    #[test]
    fn a_drip_waits_between_bytes_and_ends_at_its_limit() {
        let start = Instant::now();
        let mut stream = Stream::new(spec(StreamKind::Drip, 8), start);
        assert_eq!(drain(&mut stream, start, usize::MAX), b"* OK x");
        let next = start + Duration::from_millis(500);
        assert_eq!(stream.step(start), Step::WaitUntil(next));
        assert_eq!(stream.wake_at(), next);
        assert_eq!(drain(&mut stream, next, usize::MAX), b"x");
        let late = start + Duration::from_secs(10);
        assert_eq!(stream.step(late), Step::Done(None));
    }

    #[test]
    fn a_client_that_stops_reading_ends_the_stream_as_a_stall() {
        let start = Instant::now();
        let mut stream = Stream::new(spec(StreamKind::GiantLine, 1 << 30), start);
        stream.wrote(1000, start);
        assert!(matches!(
            stream.step(start + STALL_LIMIT / 2),
            Step::Write(_)
        ));
        assert_eq!(stream.wake_at(), start + STALL_LIMIT);
        assert_eq!(
            stream.step(start + STALL_LIMIT),
            Step::Done(Some(io::ErrorKind::TimedOut))
        );
    }
}
