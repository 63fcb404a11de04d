//! Message framing: where one server message ends in a byte stream.
//!
//! Read first: RFC 9051 section 2.2 ("Commands and Responses") and section 4.3
//! ("String"), which define how a line that ends in a literal announcement
//! `{N}` CRLF is followed by exactly N octets and then by the rest of the
//! message. RFC 7888 adds the `{N+}` form (clients send it; we accept it from
//! servers too, which costs nothing). `~{N}` (RFC 3516 literal8) ends in `{N}`
//! and therefore needs no special case.
//!
//! A line whose human-readable text happens to end in `{N}` is taken as a
//! literal announcement too: the framer cannot tell them apart without
//! parsing, and imap-codec's fragmentizer makes the same choice. Servers
//! avoid sending such text.
//!
//! The framer never looks at the meaning of a line, so it can find boundaries
//! of responses that [`crate::parse_response`] does not understand; those
//! still have to be skipped cleanly.

/// Longest line (bytes up to and including CRLF) the framer keeps.
pub const MAX_LINE_LEN: usize = 8 * 1024;
/// Largest literal kept.
pub const MAX_LITERAL_LEN: usize = 64 * 1024;
/// Largest whole message (all its lines and literals) kept.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;

/// Limits a [`Framer`] enforces. `Default` gives [`MAX_LINE_LEN`],
/// [`MAX_LITERAL_LEN`] and [`MAX_MESSAGE_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest line, counted up to and including its LF.
    pub line: usize,
    /// Largest announced literal.
    pub literal: usize,
    /// Largest message: every line and literal of it.
    pub message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: MAX_LINE_LEN,
            literal: MAX_LITERAL_LEN,
            message: MAX_MESSAGE_LEN,
        }
    }
}

/// Finds message boundaries in a byte stream: a message is a line ending in CRLF; if the line
/// ends with a literal announcement `{N}` or `{N+}` (just before CRLF) then N bytes of literal follow
/// and the message continues with another line, and so on.
///
/// Small `Copy` state (no buffers): remembers how far it has scanned so repeated calls on a growing
/// buffer are O(new bytes).
///
/// A line ends at its first LF. A bare LF (no CR before it) also ends the
/// message, so a broken peer is noticed at once: [`crate::parse_response`]
/// then reports [`crate::ParseError::NotCrlfTerminated`]. A literal is only
/// announced by `{N}` directly followed by CRLF.
///
/// Call order: [`Framer::advance`] until it returns `Complete` (drop those
/// bytes, go on) or an error. After an error the caller either closes the
/// connection, or poisons the message: it calls [`Framer::skip`] until that
/// returns [`Skip::Done`], dropping bytes as told, and then goes back to
/// `advance`. Skipping counts literals down and never stores them, so an
/// oversized message costs no memory and the stream is never resynced in the
/// middle of a message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Framer {
    limits: Limits,
    /// Bytes of the current message scanned so far (relative to the
    /// caller's buffer).
    pos: usize,
    /// Offset of the current line within the caller's buffer.
    line_start: usize,
    /// Literal bytes still to be passed over.
    literal_left: u64,
    /// The error `advance` reported; it is repeated until `skip` finishes.
    failed: Option<FrameError>,
    /// `skip` is under way; `tail` is valid.
    skipping: bool,
    /// How the current line has ended so far (skipping only).
    tail: Tail,
}

/// What [`Framer::advance`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Frame {
    /// No complete message in `buf` yet. Caller keeps the bytes, appends more, calls again with the
    /// grown buffer (same prefix).
    Incomplete,
    /// `buf[..len]` is exactly one complete message (ends with CRLF). The framer has reset itself;
    /// the caller drops those bytes and calls again on the rest.
    ///
    /// (From a broken peer the message may end in a bare LF instead; see [`Framer`].)
    Complete {
        /// Length of the message, its final LF included.
        len: usize,
    },
}

/// What [`Framer::skip`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Skip {
    /// The poisoned message goes on. The caller MUST drop `buf[..discard]`
    /// (all of it was passed over; `discard` may be 0) and call `skip` again
    /// with the remaining bytes plus new ones.
    Incomplete {
        /// Bytes to drop now.
        discard: usize,
    },
    /// The poisoned message ended with `buf[..len]`. The caller MUST drop
    /// those bytes; the framer has reset itself and the caller goes back to
    /// [`Framer::advance`] on the rest.
    Done {
        /// Bytes to drop: the end of the skipped message.
        len: usize,
    },
}

/// A limit was exceeded. The caller MUST either close the connection or
/// skip the rest of the message with [`Framer::skip`]; the stream cannot be
/// resynced in any other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A line passed the line limit without an LF.
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// An announced literal is larger than the literal limit.
    LiteralTooLarge {
        /// The announced length, saturated at `u64::MAX`.
        len: u64,
        /// The limit in force.
        limit: usize,
    },
    /// The whole message is (or is announced to become) longer than the message limit.
    MessageTooLong {
        /// The limit in force.
        limit: usize,
    },
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::LineTooLong { limit } => write!(f, "line longer than {limit} bytes"),
            FrameError::LiteralTooLarge { len, limit } => {
                write!(f, "literal of {len} bytes announced, limit is {limit}")
            }
            FrameError::MessageTooLong { limit } => write!(f, "message longer than {limit} bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Framer {
    /// A framer with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer with explicit limits (tests use small ones).
    pub fn with_limits(limits: Limits) -> Self {
        Framer {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of the current message already scanned (for the caller's own accounting).
    pub fn scanned(&self) -> usize {
        self.pos
    }

    /// Looks for the end of the message that starts at `buf[0]`.
    ///
    /// The caller MUST call this with a buffer whose prefix is unchanged since the last call
    /// (bytes only appended) until it returns Complete or an error. Errors are returned as soon
    /// as a limit is exceeded (the framer does not wait for more bytes). After an error the
    /// stream cannot be resynced: the caller closes the connection, or skips the message with
    /// [`Framer::skip`]. Until then every call repeats the error.
    ///
    /// A buffer shorter than what was already scanned breaks that duty; the
    /// framer then answers `Incomplete` rather than panicking.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.advance_inner(buf);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn advance_inner(&mut self, buf: &[u8]) -> Result<Frame, FrameError> {
        loop {
            if self.literal_left > 0 {
                self.pass_literal(buf);
                if self.literal_left > 0 {
                    return Ok(Frame::Incomplete);
                }
            }
            match self.scan_line(buf)? {
                None => return Ok(Frame::Incomplete),
                Some(line_end) => {
                    let line = buf.get(self.line_start..line_end).unwrap_or(&[]);
                    self.pos = line_end;
                    match literal_announcement(line) {
                        None => {
                            *self = Framer::with_limits(self.limits);
                            return Ok(Frame::Complete { len: line_end });
                        }
                        Some(len) => self.start_literal(len)?,
                    }
                }
            }
        }
    }

    /// Passes over as much of the pending literal as `buf` holds.
    fn pass_literal(&mut self, buf: &[u8]) {
        let avail = buf.len().saturating_sub(self.pos);
        let take = usize::try_from(self.literal_left).map_or(avail, |left| left.min(avail));
        self.pos += take;
        self.literal_left -= take as u64;
        if self.literal_left == 0 {
            self.line_start = self.pos;
        }
    }

    /// Scans the current line for its LF. Returns the offset just past the LF,
    /// or `None` when `buf` ends first.
    fn scan_line(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let line_room = (self.line_start.saturating_add(self.limits.line)).saturating_sub(self.pos);
        let message_room = self.limits.message.saturating_sub(self.pos);
        let room = line_room.min(message_room);
        let rest = buf.get(self.pos..).unwrap_or(&[]);
        let window = &rest[..rest.len().min(room)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            return Ok(Some(self.pos + i + 1));
        }
        self.pos += window.len();
        // The line needs at least one more byte (its LF), so reaching a limit
        // without an LF already means the limit will be passed.
        if self.pos - self.line_start >= self.limits.line {
            return Err(FrameError::LineTooLong {
                limit: self.limits.line,
            });
        }
        if self.pos >= self.limits.message {
            return Err(FrameError::MessageTooLong {
                limit: self.limits.message,
            });
        }
        Ok(None)
    }

    /// Checks an announced literal against the limits and starts passing
    /// over it. On error the literal is still recorded, so that `skip` can
    /// count it down.
    fn start_literal(&mut self, len: u64) -> Result<(), FrameError> {
        self.literal_left = len;
        self.line_start = self.pos;
        if len > self.limits.literal as u64 {
            return Err(FrameError::LiteralTooLarge {
                len,
                limit: self.limits.literal,
            });
        }
        // The literal is followed by at least one more line, at least its LF.
        if (self.pos as u64).saturating_add(len).saturating_add(1) > self.limits.message as u64 {
            return Err(FrameError::MessageTooLong {
                limit: self.limits.message,
            });
        }
        Ok(())
    }

    /// Passes over the rest of the current message without keeping it: the
    /// poisoning of an oversized message after [`Framer::advance`] returned an
    /// error. It may also be called without an error, to drop the current
    /// message on purpose.
    ///
    /// The first call MUST get the same buffer as the last `advance` (same
    /// prefix, more bytes allowed). Afterwards the caller MUST drop what each
    /// [`Skip`] says before the next call. No limits apply while skipping;
    /// the caller's own timeouts bound a message that never ends.
    pub fn skip(&mut self, buf: &[u8]) -> Skip {
        if !self.skipping {
            self.skipping = true;
            self.tail = Tail::Other;
            if self.literal_left == 0 {
                let end = self.pos.min(buf.len());
                let scanned = buf.get(self.line_start.min(end)..end).unwrap_or(&[]);
                for &b in scanned {
                    self.tail = self.tail.step(b);
                }
            }
        }
        loop {
            if self.literal_left > 0 {
                self.pass_literal(buf);
                if self.literal_left > 0 {
                    break;
                }
                self.tail = Tail::Other;
            }
            let Some(b) = buf.get(self.pos).copied() else {
                break;
            };
            self.pos += 1;
            if b != b'\n' {
                self.tail = self.tail.step(b);
                continue;
            }
            match self.tail {
                Tail::Cr(len) => {
                    self.literal_left = len;
                    self.tail = Tail::Other;
                }
                _ => {
                    let len = self.pos;
                    *self = Framer::with_limits(self.limits);
                    return Skip::Done { len };
                }
            }
        }
        let discard = self.pos.min(buf.len());
        self.pos = 0;
        self.line_start = 0;
        Skip::Incomplete { discard }
    }
}

/// How a line ends so far, byte by byte, for [`Framer::skip`], which cannot
/// look back at bytes the caller already dropped. It accepts exactly what
/// [`literal_announcement`] accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Tail {
    /// Nothing that could become an announcement.
    #[default]
    Other,
    /// `{`
    Open,
    /// `{` digits
    Digits(u64),
    /// `{` digits `+`
    Plus(u64),
    /// `{` digits [`+`] `}`
    Close(u64),
    /// `{` digits [`+`] `}` CR: an LF now announces a literal.
    Cr(u64),
}

impl Tail {
    /// The state after one more byte of the line (never LF).
    fn step(self, b: u8) -> Tail {
        match (self, b) {
            (_, b'{') => Tail::Open,
            (Tail::Open, b'0'..=b'9') => Tail::Digits(u64::from(b - b'0')),
            (Tail::Digits(n), b'0'..=b'9') => {
                Tail::Digits(n.saturating_mul(10).saturating_add(u64::from(b - b'0')))
            }
            (Tail::Digits(n), b'+') => Tail::Plus(n),
            (Tail::Digits(n) | Tail::Plus(n), b'}') => Tail::Close(n),
            (Tail::Close(n), b'\r') => Tail::Cr(n),
            _ => Tail::Other,
        }
    }
}

/// Returns N when `line` ends with a literal announcement.
///
/// ```abnf
/// literal  = "{" number64 ["+"] "}" CRLF *CHAR8   ; RFC 9051, RFC 7888
/// literal8 = "~{" number64 "}" CRLF *OCTET        ; RFC 3516, ends the same way
/// ```
///
/// The number saturates at `u64::MAX` so that an absurd announcement is
/// reported as too large rather than as something else.
pub(crate) fn literal_announcement(line: &[u8]) -> Option<u64> {
    let body = line.strip_suffix(b"}\r\n")?;
    let body = body.strip_suffix(b"+").unwrap_or(body);
    let digits_len = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits_len == 0 {
        return None;
    }
    let (head, digits) = body.split_at(body.len() - digits_len);
    if head.last() != Some(&b'{') {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_forms() {
        assert_eq!(literal_announcement(b"* 1 FETCH (BODY[] {5}\r\n"), Some(5));
        assert_eq!(literal_announcement(b"A1 LOGIN {12+}\r\n"), Some(12));
        assert_eq!(literal_announcement(b"~{0}\r\n"), Some(0));
        assert_eq!(literal_announcement(b"{}\r\n"), None);
        assert_eq!(literal_announcement(b"x 5}\r\n"), None);
        assert_eq!(literal_announcement(b"{5}\n"), None);
        assert_eq!(literal_announcement(b"{5++}\r\n"), None);
        assert_eq!(
            literal_announcement(b"{99999999999999999999999}\r\n"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn one_line() {
        let mut f = Framer::new();
        assert_eq!(f.advance(b"* OK"), Ok(Frame::Incomplete));
        assert_eq!(f.scanned(), 4);
        assert_eq!(f.advance(b"* OK\r"), Ok(Frame::Incomplete));
        assert_eq!(f.advance(b"* OK\r\n* "), Ok(Frame::Complete { len: 6 }));
        assert_eq!(f.scanned(), 0);
    }

    #[test]
    fn literal_then_line() {
        let msg = b"* 1 FETCH (BODY[] {3}\r\n\r\n}) UID 4)\r\n";
        let mut f = Framer::new();
        assert_eq!(f.advance(msg), Ok(Frame::Complete { len: msg.len() }));
    }

    /// The byte-by-byte `Tail` used while skipping agrees with the
    /// look-back `literal_announcement` used while framing, on every line
    /// over a small alphabet.
    #[test]
    fn tail_agrees_with_announcement() {
        const ALPHABET: &[u8] = b"{}+09\rx";
        for len in 0..=7u32 {
            for mut code in 0..(ALPHABET.len() as u32).pow(len) {
                let mut line = Vec::new();
                for _ in 0..len {
                    line.push(ALPHABET[(code % ALPHABET.len() as u32) as usize]);
                    code /= ALPHABET.len() as u32;
                }
                let tail = line.iter().fold(Tail::Other, |t, &b| t.step(b));
                line.push(b'\n');
                let by_tail = match tail {
                    Tail::Cr(n) => Some(n),
                    _ => None,
                };
                assert_eq!(by_tail, literal_announcement(&line), "{line:?}");
            }
        }
    }

    #[test]
    fn shrunk_buffer_does_not_panic() {
        let mut f = Framer::new();
        assert_eq!(f.advance(b"* OK hello"), Ok(Frame::Incomplete));
        assert_eq!(f.advance(b"* O"), Ok(Frame::Incomplete));
    }
}
