//! Checks shared by the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not API: these functions allocate and panic on
//! purpose, because a panic is how a fuzzer reports a broken invariant.
//!
//! Invariants checked (STYLE.md section 7):
//! - nothing panics on any input;
//! - framing is split invariant: whole buffer, byte by byte and random
//!   chunks give the same boundaries and the same error;
//! - every strict prefix of a complete message is `Incomplete`;
//! - decode, then encode (a canonical test-only serializer), then decode
//!   again gives the same response;
//! - an encoded command parses back to the credentials it was given, with
//!   no CR or LF outside literals and the waits exactly after each
//!   synchronizing literal announcement.

use crate::{
    encode, parse_response, AString, Code, Command, EncodeError, Frame, FrameError, Framer, Limits,
    LiteralMode, Response, Sasl, Skip, Status, StatusRequest, Untagged, LITERAL_MINUS_MAX,
};

/// What framing a whole stream produced, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete message of this length.
    Message(usize),
    /// The stream ended inside a message (or at a boundary) after this many bytes of it.
    Incomplete(usize),
    /// The framer gave up.
    Error(FrameError),
    /// After an error, a message of this length (counted from its start) was skipped.
    Skipped(usize),
}

/// A tiny xorshift generator, so tests need no `rand` crate.
#[derive(Clone, Copy, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (0 is mapped to a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `1..=max` (`max` at least 1).
    pub fn below_incl(&mut self, max: usize) -> usize {
        (self.next_u64() % max.max(1) as u64) as usize + 1
    }
}

/// Feeds `stream` to a framer, growing the visible buffer by `chunk()` bytes
/// each time the framer wants more, as a reader appending to a buffer would.
pub fn frame_stream(
    stream: &[u8],
    limits: Limits,
    chunk: &mut dyn FnMut() -> usize,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut framer = Framer::with_limits(limits);
    let mut start = 0;
    let mut avail = 0;
    loop {
        match framer.advance(&stream[start..avail]) {
            Ok(Frame::Complete { len }) => {
                assert!(len > 0 && start + len <= avail, "Complete beyond buffer");
                assert_eq!(framer.scanned(), 0, "framer not reset after Complete");
                outcomes.push(Outcome::Message(len));
                start += len;
            }
            Ok(Frame::Incomplete) => {
                assert!(framer.scanned() <= avail - start);
                if avail == stream.len() {
                    outcomes.push(Outcome::Incomplete(avail - start));
                    return outcomes;
                }
                avail = (avail + chunk().max(1)).min(stream.len());
            }
            Err(e) => {
                outcomes.push(Outcome::Error(e));
                return outcomes;
            }
        }
    }
}

/// Like [`frame_stream`], but on each error the message is skipped with
/// [`Framer::skip`], dropping bytes as a reader with a small buffer would.
pub fn frame_stream_skipping(
    stream: &[u8],
    limits: Limits,
    chunk: &mut dyn FnMut() -> usize,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut framer = Framer::with_limits(limits);
    let mut msg_start = 0;
    let mut start = 0;
    let mut avail = 0;
    let mut skipping = false;
    loop {
        let buf = &stream[start..avail];
        let need_more = if skipping {
            match framer.skip(buf) {
                Skip::Done { len } => {
                    assert!(len > 0 && len <= buf.len(), "Done beyond buffer");
                    start += len;
                    outcomes.push(Outcome::Skipped(start - msg_start));
                    msg_start = start;
                    skipping = false;
                    false
                }
                Skip::Incomplete { discard } => {
                    assert_eq!(discard, buf.len(), "skip left bytes unscanned");
                    start += discard;
                    true
                }
            }
        } else {
            match framer.advance(buf) {
                Ok(Frame::Complete { len }) => {
                    outcomes.push(Outcome::Message(len));
                    start += len;
                    msg_start = start;
                    false
                }
                Ok(Frame::Incomplete) => true,
                Err(e) => {
                    assert_eq!(framer.advance(buf), Err(e), "error not repeated");
                    outcomes.push(Outcome::Error(e));
                    skipping = true;
                    false
                }
            }
        };
        if need_more {
            if avail == stream.len() {
                outcomes.push(Outcome::Incomplete(avail - msg_start));
                return outcomes;
            }
            avail = (avail + chunk().max(1)).min(stream.len());
        }
    }
}

/// No limits at all: the reference framing for skipping.
pub const NO_LIMITS: Limits = Limits {
    line: usize::MAX,
    literal: usize::MAX,
    message: usize::MAX,
};

/// Message lengths, whether kept or skipped.
pub fn boundaries(outcomes: &[Outcome]) -> Vec<usize> {
    outcomes
        .iter()
        .filter_map(|o| match *o {
            Outcome::Message(n) | Outcome::Skipped(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Small limits so short fuzz inputs reach every limit branch.
pub const SMALL_LIMITS: Limits = Limits {
    line: 64,
    literal: 100,
    message: 300,
};

/// The response target: the first byte seeds the chunking, the rest is the
/// byte stream a server sent.
pub fn response(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for limits in [Limits::default(), SMALL_LIMITS] {
        let whole = frame_stream(stream, limits, &mut || stream.len());
        let bytewise = frame_stream(stream, limits, &mut || 1);
        assert_eq!(whole, bytewise, "byte-by-byte framing differs");
        let mut rng = XorShift::new(u64::from(seed) + 1);
        let max_chunk = usize::from(seed % 32) + 1;
        let chunked = frame_stream(stream, limits, &mut || rng.below_incl(max_chunk));
        assert_eq!(whole, chunked, "chunked framing differs");

        // Skipping oversized messages finds the same boundaries as framing
        // without limits, however the bytes arrive.
        let reference = frame_stream(stream, NO_LIMITS, &mut || stream.len());
        let skipped_whole = frame_stream_skipping(stream, limits, &mut || stream.len());
        let skipped_bytewise = frame_stream_skipping(stream, limits, &mut || 1);
        let skipped_chunked =
            frame_stream_skipping(stream, limits, &mut || rng.below_incl(max_chunk));
        assert_eq!(
            skipped_whole, skipped_bytewise,
            "skipping byte by byte differs"
        );
        assert_eq!(skipped_whole, skipped_chunked, "skipping in chunks differs");
        assert_eq!(
            boundaries(&skipped_whole),
            boundaries(&reference),
            "skip misframes"
        );

        let mut start = 0;
        for outcome in &whole {
            if let Outcome::Message(len) = *outcome {
                let msg = &stream[start..start + len];
                message(msg, limits);
                start += len;
            }
        }
    }
}

/// Checks one complete message: prefixes, parsing, and the round trip.
pub fn message(msg: &[u8], limits: Limits) {
    assert_eq!(
        Framer::with_limits(limits).advance(msg),
        Ok(Frame::Complete { len: msg.len() })
    );
    // Fresh framers on every strict prefix: quadratic, so only for short
    // messages; byte-by-byte framing above covers long ones incrementally.
    if msg.len() <= 2048 {
        for k in 0..msg.len() {
            assert_eq!(
                Framer::with_limits(limits).advance(&msg[..k]),
                Ok(Frame::Incomplete),
                "strict prefix of {k} bytes not Incomplete"
            );
        }
    }
    if let Ok(parsed) = parse_response(msg) {
        let mut again = Vec::new();
        serialize(&parsed, &mut again);
        assert_eq!(
            parse_response(&again),
            Ok(parsed),
            "decode-encode-decode differs; re-encoded as {:?}",
            again.escape_ascii().to_string()
        );
    }
}

/// A canonical test-only serializer for responses (the crate itself never
/// sends responses).
pub fn serialize(r: &Response<'_>, out: &mut Vec<u8>) {
    match *r {
        Response::Continuation { text } => {
            out.push(b'+');
            if !text.is_empty() {
                out.push(b' ');
                out.extend_from_slice(text);
            }
        }
        Response::Tagged {
            tag,
            status,
            code,
            text,
        } => {
            out.extend_from_slice(tag);
            status_tail(status, code, text, out);
        }
        Response::Untagged(u) => {
            out.push(b'*');
            untagged(&u, out);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn status_tail(status: Status, code: Option<Code<'_>>, text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(match status {
        Status::Ok => b" OK",
        Status::No => b" NO",
        Status::Bad => b" BAD",
        Status::PreAuth => b" PREAUTH",
        Status::Bye => b" BYE",
    });
    if let Some(code) = code {
        out.extend_from_slice(b" [");
        code_bytes(&code, out);
        out.push(b']');
    }
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text);
    }
}

fn code_bytes(code: &Code<'_>, out: &mut Vec<u8>) {
    let mut put = |name: &[u8], arg: &[u8]| {
        out.extend_from_slice(name);
        if !arg.is_empty() {
            out.push(b' ');
            out.extend_from_slice(arg);
        }
    };
    let num = |n: u32| n.to_string().into_bytes();
    match *code {
        Code::Alert => put(b"ALERT", b""),
        Code::Capability(c) => put(b"CAPABILITY", c.raw()),
        Code::UidValidity(n) => put(b"UIDVALIDITY", &num(n)),
        Code::UidNext(n) => put(b"UIDNEXT", &num(n)),
        Code::Unseen(n) => put(b"UNSEEN", &num(n)),
        Code::ReadOnly => put(b"READ-ONLY", b""),
        Code::ReadWrite => put(b"READ-WRITE", b""),
        Code::TryCreate => put(b"TRYCREATE", b""),
        Code::Parse => put(b"PARSE", b""),
        Code::PermanentFlags(f) => put(b"PERMANENTFLAGS", &[b"(", f, b")"].concat()),
        Code::NotificationOverflow => put(b"NOTIFICATIONOVERFLOW", b""),
        Code::AuthenticationFailed => put(b"AUTHENTICATIONFAILED", b""),
        Code::AuthorizationFailed => put(b"AUTHORIZATIONFAILED", b""),
        Code::Unavailable => put(b"UNAVAILABLE", b""),
        Code::ExpiredCredentials => put(b"EXPIREDCREDENTIALS", b""),
        Code::PrivacyRequired => put(b"PRIVACYREQUIRED", b""),
        Code::Other { name, arg } => put(name, arg),
    }
}

fn untagged(u: &Untagged<'_>, out: &mut Vec<u8>) {
    let mut put = |parts: &[&[u8]]| parts.iter().for_each(|p| out.extend_from_slice(p));
    match *u {
        Untagged::Status { status, code, text } => status_tail(status, code, text, out),
        Untagged::Capability(c) if c.raw().is_empty() => put(&[b" CAPABILITY"]),
        Untagged::Capability(c) => put(&[b" CAPABILITY ", c.raw()]),
        Untagged::Enabled(c) if c.raw().is_empty() => put(&[b" ENABLED"]),
        Untagged::Enabled(c) => put(&[b" ENABLED ", c.raw()]),
        Untagged::Exists(n) => put(&[b" ", n.to_string().as_bytes(), b" EXISTS"]),
        Untagged::Expunge(n) => put(&[b" ", n.to_string().as_bytes(), b" EXPUNGE"]),
        Untagged::Recent(n) => put(&[b" ", n.to_string().as_bytes(), b" RECENT"]),
        Untagged::Fetch { seq, attrs } => {
            put(&[b" ", seq.to_string().as_bytes(), b" FETCH (", attrs, b")"])
        }
        Untagged::MailboxStatus { mailbox, items } => {
            put(&[b" STATUS "]);
            astring_bytes(&mailbox, out);
            let mut sep = " (";
            let all = [
                ("MESSAGES", items.messages),
                ("UIDNEXT", items.uidnext),
                ("UIDVALIDITY", items.uidvalidity),
                ("UNSEEN", items.unseen),
                ("RECENT", items.recent),
            ];
            for (name, value) in all {
                if let Some(n) = value {
                    out.extend_from_slice(format!("{sep}{name} {n}").as_bytes());
                    sep = " ";
                }
            }
            if sep == " (" {
                out.extend_from_slice(b" (");
            }
            out.push(b')');
        }
        Untagged::List {
            flags,
            delimiter,
            mailbox,
        } => {
            put(&[b" LIST (", flags, b") "]);
            match delimiter {
                None => out.extend_from_slice(b"NIL"),
                Some(d @ (b'"' | b'\\')) => out.extend_from_slice(&[b'"', b'\\', d, b'"']),
                Some(d) => out.extend_from_slice(&[b'"', d, b'"']),
            }
            out.push(b' ');
            astring_bytes(&mailbox, out);
        }
        Untagged::Flags(f) => put(&[b" FLAGS (", f, b")"]),
        Untagged::Other(raw) => put(&[b" ", raw]),
    }
}

fn astring_bytes(a: &AString<'_>, out: &mut Vec<u8>) {
    match *a {
        AString::Atom(b) => out.extend_from_slice(b),
        AString::Quoted(b) => {
            out.push(b'"');
            out.extend_from_slice(b);
            out.push(b'"');
        }
        AString::Literal(b) => {
            out.extend_from_slice(format!("{{{}}}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// Splits fuzz input into up to `N` fields, each prefixed by a length byte.
fn fields<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut out = [&[][..]; N];
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = data;
            break;
        }
        let Some((&len, rest)) = data.split_first() else {
            break;
        };
        let len = usize::from(len).min(rest.len());
        let (field, rest) = rest.split_at(len);
        *slot = field;
        data = rest;
    }
    out
}

/// The command target: the first byte picks the command and literal mode,
/// the rest are length-prefixed credentials.
pub fn command(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let literal = match sel & 3 {
        0 => LiteralMode::Sync,
        1 => LiteralMode::NonSync,
        _ => LiteralMode::LiteralMinus,
    };
    let [a, b, c, d] = fields::<4>(rest);
    let port = u16::from_le_bytes([c.first().copied().unwrap_or(0), sel]);
    let sasl_ir = sel & 4 != 0;
    let cmd = match (sel >> 3) % 6 {
        0 => Command::Login {
            username: a,
            password: b,
        },
        1 => Command::Examine { mailbox: a },
        2 => Command::Authenticate {
            mechanism: Sasl::Plain {
                username: a,
                password: b,
            },
            sasl_ir,
        },
        3 => Command::Authenticate {
            mechanism: Sasl::XOAuth2 {
                username: a,
                token: b,
            },
            sasl_ir,
        },
        4 => Command::Authenticate {
            mechanism: Sasl::OAuthBearer {
                username: a,
                host: d,
                port,
                token: b,
            },
            sasl_ir,
        },
        _ => Command::Status {
            mailbox: a,
            items: StatusRequest {
                messages: true,
                uidvalidity: sel & 4 != 0,
                ..StatusRequest::default()
            },
        },
    };
    check_command(u32::from(sel) * 1000 + 7, &cmd, literal);
}

/// Encodes `cmd` and checks the bytes parse back to it.
pub fn check_command(tag: u32, cmd: &Command<'_>, literal: LiteralMode) {
    let needed = match encode(tag, cmd, literal, &mut []) {
        Err(EncodeError::BufferTooSmall { needed }) => needed,
        Err(EncodeError::Unencodable { field }) => {
            assert!(unencodable_is_right(cmd), "{field} wrongly refused");
            return;
        }
        Ok(e) => panic!("a command fit in an empty buffer: {e:?}"),
    };
    let mut out = vec![0u8; needed + 3];
    assert_eq!(
        encode(tag, cmd, literal, &mut out[..needed - 1]),
        Err(EncodeError::BufferTooSmall { needed })
    );
    let enc = encode(tag, cmd, literal, &mut out).expect("encodes with room");
    assert_eq!(enc.len, needed, "needed is not exact");
    let wire = &out[..enc.len];
    let mut p = CommandParser::new(wire, literal);
    p.expect(format!("A{tag} ").as_bytes());
    match *cmd {
        Command::Login { username, password } => {
            p.expect(b"LOGIN ");
            assert_eq!(p.astring(), username);
            p.expect(b" ");
            assert_eq!(p.astring(), password);
        }
        Command::Examine { mailbox } => {
            p.expect(b"EXAMINE ");
            assert_eq!(p.astring(), mailbox);
        }
        Command::Status { mailbox, .. } => {
            p.expect(b"STATUS ");
            assert_eq!(p.astring(), mailbox);
            p.expect(b" (");
            p.pos += wire[p.pos..].iter().position(|&b| b == b')').expect(")") + 1;
        }
        Command::Authenticate { mechanism, sasl_ir } => {
            p.expect(b"AUTHENTICATE ");
            p.expect(mechanism.mechanism_name().as_bytes());
            if sasl_ir {
                p.expect(b" ");
            } else {
                p.expect(b"\r\n");
                p.waits.push(p.pos);
            }
            let b64 = p.take_while(|b| b != b'\r');
            let plain = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .expect("valid base64");
            assert_eq!(plain, sasl_reference(&mechanism));
        }
        _ => unreachable!("the fuzz target builds no other command"),
    }
    p.expect(b"\r\n");
    assert_eq!(p.pos, wire.len(), "bytes after the final CRLF");
    assert_eq!(enc.waits(), &p.waits[..], "waits differ from sync literals");
}

/// True when the command really holds a byte that cannot be encoded.
fn unencodable_is_right(cmd: &Command<'_>) -> bool {
    let has = |s: &[u8], bad: &[u8]| s.iter().any(|b| bad.contains(b));
    match *cmd {
        Command::Login { username, password } => has(username, &[0]) || has(password, &[0]),
        Command::Examine { mailbox } | Command::Status { mailbox, .. } => has(mailbox, &[0]),
        Command::Authenticate { mechanism, .. } => match mechanism {
            Sasl::Plain { username, password } => has(username, &[0]) || has(password, &[0]),
            Sasl::XOAuth2 { username, token } => has(username, &[0, 1]) || has(token, &[0, 1]),
            Sasl::OAuthBearer {
                username,
                host,
                token,
                ..
            } => has(username, &[0, 1]) || has(host, &[0, 1]) || has(token, &[0, 1]),
        },
        _ => false,
    }
}

/// The SASL client message, built the obvious way (allocating) to compare
/// against the streaming encoder.
pub fn sasl_reference(mech: &Sasl<'_>) -> Vec<u8> {
    match *mech {
        Sasl::Plain { username, password } => [b"\0", username, b"\0", password].concat(),
        Sasl::XOAuth2 { username, token } => {
            [b"user=", username, b"\x01auth=Bearer ", token, b"\x01\x01"].concat()
        }
        Sasl::OAuthBearer {
            username,
            host,
            port,
            token,
        } => {
            let mut v = b"n,".to_vec();
            if !username.is_empty() {
                v.extend_from_slice(b"a=");
                for &b in username {
                    match b {
                        b',' => v.extend_from_slice(b"=2C"),
                        b'=' => v.extend_from_slice(b"=3D"),
                        _ => v.push(b),
                    }
                }
            }
            v.extend_from_slice(b",\x01");
            if !host.is_empty() {
                v.extend_from_slice(&[b"host=", host, b"\x01"].concat());
            }
            if port != 0 {
                v.extend_from_slice(format!("port={port}\x01").as_bytes());
            }
            v.extend_from_slice(&[b"auth=Bearer ", token, b"\x01\x01"].concat());
            v
        }
    }
}

/// A strict test-only reader of encoded commands: CR and LF are accepted
/// only inside literals, after a literal announcement and at the very end.
pub struct CommandParser<'a> {
    wire: &'a [u8],
    /// Read position.
    pub pos: usize,
    literal: LiteralMode,
    /// Offsets just after each synchronizing literal announcement.
    pub waits: Vec<usize>,
}

impl<'a> CommandParser<'a> {
    /// Reads `wire`, which was encoded with `literal`.
    pub fn new(wire: &'a [u8], literal: LiteralMode) -> Self {
        CommandParser {
            wire,
            pos: 0,
            literal,
            waits: Vec::new(),
        }
    }

    /// Consumes exactly `s`.
    pub fn expect(&mut self, s: &[u8]) {
        let got = self.wire.get(self.pos..self.pos + s.len());
        assert_eq!(
            got.map(|g| g.escape_ascii().to_string()),
            Some(s.escape_ascii().to_string()),
            "at {} of {:?}",
            self.pos,
            self.wire.escape_ascii().to_string()
        );
        self.pos += s.len();
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = &self.wire[self.pos..];
        let n = rest.iter().take_while(|&&b| f(b)).count();
        self.pos += n;
        &rest[..n]
    }

    /// Reads an astring and returns its unescaped bytes.
    pub fn astring(&mut self) -> Vec<u8> {
        match self.wire.get(self.pos) {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => {
                let atom = self.take_while(crate::response::is_astring_char);
                assert!(!atom.is_empty(), "empty atom at {}", self.pos);
                atom.to_vec()
            }
        }
    }

    fn quoted(&mut self) -> Vec<u8> {
        self.expect(b"\"");
        let mut v = Vec::new();
        loop {
            let b = *self.wire.get(self.pos).expect("unterminated quoted");
            self.pos += 1;
            assert!((0x20..0x7f).contains(&b), "byte {b:#x} in quoted");
            match b {
                b'"' => return v,
                b'\\' => {
                    let e = *self.wire.get(self.pos).expect("dangling backslash");
                    assert!(e == b'"' || e == b'\\', "bad escape");
                    self.pos += 1;
                    v.push(e);
                }
                _ => v.push(b),
            }
        }
    }

    fn literal(&mut self) -> Vec<u8> {
        self.expect(b"{");
        let digits = self.take_while(|b| b.is_ascii_digit());
        let len: usize = std::str::from_utf8(digits).unwrap().parse().unwrap();
        let sync = self.wire.get(self.pos) != Some(&b'+');
        if !sync {
            self.pos += 1;
        }
        let want_sync = match self.literal {
            LiteralMode::Sync => true,
            LiteralMode::NonSync => false,
            LiteralMode::LiteralMinus => len > LITERAL_MINUS_MAX,
        };
        assert_eq!(sync, want_sync, "wrong literal form");
        self.expect(b"}\r\n");
        if sync {
            self.waits.push(self.pos);
        }
        let data = self.wire[self.pos..self.pos + len].to_vec();
        self.pos += len;
        data
    }
}

/// Display limits the header check tries, around the ellipsis's 3 bytes and beyond.
const DISPLAY_LENS: [usize; 6] = [0, 1, 3, 4, 40, 400];

/// Arbitrary bytes as FETCH attributes, as a header block and as field values (see
/// [`crate::headers`]): no panic, values cut at `FIELD_RAW_LEN_MAX` and unfolded, and
/// display text within its limit, free of control characters and doubled spaces, and
/// the same for a prefix of the limit's text as for a longer limit cut there.
pub fn headers(data: &[u8]) {
    use crate::headers::{
        decode_for_display, for_each_address, for_each_field, parse_fetch, FIELD_RAW_LEN_MAX,
    };
    let fetched = parse_fetch(data);
    let block = fetched.block.as_deref().unwrap_or(data);
    let mut scratch = Vec::new();
    let mut values = Vec::new();
    for_each_field(block, &mut scratch, |name, value| {
        assert!(
            !name.is_empty() && !name.contains(&b':'),
            "field name {name:?}"
        );
        assert!(
            value.len() <= FIELD_RAW_LEN_MAX,
            "value of {} bytes",
            value.len()
        );
        assert!(!value.contains(&b'\n'), "a value kept a line break");
        values.push(value.to_vec());
    });
    values.push(data.to_vec());
    for value in &values {
        // With angle brackets, each address is what lies between `<` and the next `>`.
        let angled = value.contains(&b'<');
        for_each_address(value, |address| {
            assert!(address.len() <= value.len());
            assert!(!(angled && address.contains(&b'>')), "address {address:?}");
        });
        for len_max in DISPLAY_LENS {
            let mut out = String::from("x");
            decode_for_display(value, len_max, &mut out);
            let shown = &out[1..];
            assert!(
                shown.len() <= len_max,
                "{} bytes shown for {len_max}",
                shown.len()
            );
            assert!(!shown.chars().any(char::is_control), "control in {shown:?}");
            assert!(!shown.contains("  "), "doubled space in {shown:?}");
        }
    }
}
