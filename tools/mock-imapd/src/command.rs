//! Client commands: framing and a small parser. Pure: bytes in, borrowed
//! views out; no allocation, no I/O, never panics on any input.
//!
//! Read first: RFC 3501 section 9 (formal syntax: `command`, `tag`,
//! `astring`, `literal`), RFC 7888 (LITERAL+, `{N+}`), RFC 2177 (IDLE),
//! RFC 4959 (SASL-IR), RFC 3501 section 7.5 (continuation requests).
//!
//! Only the commands a push proxy sends are understood; everything else is
//! [`Command::Unknown`] and answered `BAD` by the session.

/// Longest command the mock keeps: lines and literals together. A proxy
/// sends commands of a few hundred bytes; anything longer is a bug or an
/// attack, and the session answers it with `* BYE` and closes.
pub const MAX_COMMAND_LEN: usize = 16 * 1024;

/// Where one command ends in a growing buffer.
///
/// Small `Copy` state (12 bytes), so it can be parked next to a lent read
/// buffer while a command is incomplete. Positions are relative to the
/// first byte of the current command.
///
/// Call order: [`Framer::advance`] with the buffer that starts at the
/// command; on [`Frame::SyncLiteral`] the caller MUST send a continuation
/// request (`+ OK`) and call again; on [`Frame::Complete`] it drops `len`
/// bytes and goes on with a fresh framer state (the framer resets itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Framer {
    /// Bytes of the current command scanned so far.
    pos: u32,
    /// Start of the current line (after the last literal).
    line_start: u32,
    /// Literal bytes still to be passed over.
    literal_left: u32,
}

/// What [`Framer::advance`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Frame {
    /// No complete command yet; keep the bytes, append more, call again.
    Incomplete,
    /// A synchronizing literal `{N}` was just announced: the client waits
    /// for `+` before it sends the N bytes (RFC 3501 section 7.5).
    SyncLiteral,
    /// `buf[..len]` is one whole command, its final LF included.
    Complete {
        /// Length of the command.
        len: usize,
    },
    /// The command is longer than [`MAX_COMMAND_LEN`], or announces a
    /// literal that would make it so. The stream cannot be resynced.
    TooLong,
}

impl Framer {
    /// Looks for the end of the command that starts at `buf[0]`. The caller
    /// MUST pass the same prefix (bytes only appended) until `Complete`.
    pub fn advance(&mut self, buf: &[u8]) -> Frame {
        loop {
            let pos = self.pos as usize;
            if self.literal_left > 0 {
                let avail = buf.len().saturating_sub(pos);
                let take = avail.min(self.literal_left as usize);
                self.pos += take as u32;
                self.literal_left -= take as u32;
                if self.literal_left > 0 {
                    return Frame::Incomplete;
                }
                self.line_start = self.pos;
                continue;
            }
            let rest = buf.get(pos..).unwrap_or(&[]);
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                self.pos = buf.len().min(MAX_COMMAND_LEN) as u32;
                if buf.len() >= MAX_COMMAND_LEN {
                    return Frame::TooLong;
                }
                return Frame::Incomplete;
            };
            let line_end = pos + i + 1;
            if line_end > MAX_COMMAND_LEN {
                return Frame::TooLong;
            }
            let line = buf.get(self.line_start as usize..line_end).unwrap_or(&[]);
            match literal_announcement(line) {
                None => {
                    *self = Framer::default();
                    return Frame::Complete { len: line_end };
                }
                Some((len, sync)) => {
                    if line_end.saturating_add(len as usize).saturating_add(2) > MAX_COMMAND_LEN {
                        return Frame::TooLong;
                    }
                    self.pos = line_end as u32;
                    self.line_start = self.pos;
                    self.literal_left = len;
                    if sync {
                        return Frame::SyncLiteral;
                    }
                }
            }
        }
    }
}

/// `literal = "{" number ["+"] "}" CRLF` at the end of `line` (RFC 3501,
/// RFC 7888). Returns the length and whether it is synchronizing. A bare LF
/// is accepted in place of CRLF.
fn literal_announcement(line: &[u8]) -> Option<(u32, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, sync) = match line.strip_suffix(b"+") {
        Some(l) => (l, false),
        None => (line, true),
    };
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = line.get(open + 1..)?;
    Some((parse_number(digits)?, sync))
}

/// `number = 1*DIGIT` that fits in a `u32`.
pub fn parse_number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 10 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    u32::try_from(n).ok()
}

/// An `astring` as it appeared on the wire, borrowed from the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Str<'a> {
    /// An atom or the contents of a literal: the bytes are the value.
    Raw(&'a [u8]),
    /// The inside of a quoted string, escapes (`\\`, `\"`) still in place.
    Quoted(&'a [u8]),
}

impl<'a> Str<'a> {
    /// The value's bytes, escapes removed.
    pub fn bytes(self) -> impl Iterator<Item = u8> + 'a {
        let (raw, quoted) = match self {
            Str::Raw(b) => (b, false),
            Str::Quoted(b) => (b, true),
        };
        let mut escaped = false;
        raw.iter().copied().filter(move |&b| {
            if quoted && !escaped && b == b'\\' {
                escaped = true;
                return false;
            }
            escaped = false;
            true
        })
    }
}

/// `status-att` items the mock answers (RFC 3501 section 6.3.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusItems {
    /// `MESSAGES`
    pub messages: bool,
    /// `UIDNEXT`
    pub uidnext: bool,
    /// `UIDVALIDITY`
    pub uidvalidity: bool,
    /// `UNSEEN`
    pub unseen: bool,
    /// `RECENT`
    pub recent: bool,
}

/// One parsed client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `CAPABILITY`
    Capability,
    /// `NOOP` (also `CHECK`, which the mock treats alike).
    Noop,
    /// `LOGOUT`
    Logout,
    /// `ID (...)` or `ID NIL`; arguments are ignored.
    Id,
    /// `ENABLE ...`; nothing is ever enabled.
    Enable,
    /// `NOTIFY SET ...` or `NOTIFY NONE` (RFC 5465); event lists are
    /// ignored: with `SET` every new message is announced at once.
    Notify {
        /// `NOTIFY NONE` turns announcements off again.
        none: bool,
    },
    /// `STARTTLS`
    StartTls,
    /// `LOGIN userid password`
    Login {
        /// `userid = astring`
        user: Str<'a>,
    },
    /// `AUTHENTICATE mechanism [SP initial-response]` (RFC 4959).
    Authenticate {
        /// The mechanism name as sent.
        mechanism: &'a [u8],
        /// The SASL-IR initial response (base64 or `=`), if any.
        initial: Option<&'a [u8]>,
    },
    /// `SELECT mailbox` or `EXAMINE mailbox`.
    Select {
        /// `EXAMINE` opens read-only.
        read_only: bool,
    },
    /// `STATUS mailbox (items)`.
    Status {
        /// The mailbox, echoed back in the answer.
        mailbox: Str<'a>,
        /// The items asked for.
        items: StatusItems,
    },
    /// `CLOSE` or `UNSELECT`.
    Close,
    /// `IDLE` (RFC 2177).
    Idle,
    /// Any other command name, or arguments the mock cannot parse.
    Unknown,
}

/// A command with its tag. `tag` is `None` when even the tag is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// `tag = 1*<any ASTRING-CHAR except "+">`
    pub tag: Option<&'a [u8]>,
    /// What was asked.
    pub command: Command<'a>,
}

/// Parses one whole command as framed by [`Framer`] (final CRLF included).
///
/// `command = tag SP (command-any / command-auth / command-nonauth /
/// command-select) CRLF`
pub fn parse(msg: &[u8]) -> Parsed<'_> {
    let mut c = Cur { buf: msg, pos: 0 };
    let Some(tag) = c.take_while(is_tag_char) else {
        return Parsed {
            tag: None,
            command: Command::Unknown,
        };
    };
    let command = if c.sp() {
        command(&mut c).unwrap_or(Command::Unknown)
    } else {
        Command::Unknown
    };
    Parsed {
        tag: Some(tag),
        command,
    }
}

fn command<'a>(c: &mut Cur<'a>) -> Option<Command<'a>> {
    let name = c.take_while(is_atom_char)?;
    let upper = |s: &[u8]| name.eq_ignore_ascii_case(s);
    let cmd = if upper(b"CAPABILITY") {
        Command::Capability
    } else if upper(b"NOOP") || upper(b"CHECK") {
        Command::Noop
    } else if upper(b"LOGOUT") {
        Command::Logout
    } else if upper(b"STARTTLS") {
        Command::StartTls
    } else if upper(b"IDLE") {
        Command::Idle
    } else if upper(b"CLOSE") || upper(b"UNSELECT") {
        Command::Close
    } else if upper(b"ID") || upper(b"ENABLE") || upper(b"NOTIFY") {
        // Arguments are accepted unparsed: the mock never acts on them.
        let eol = if c.buf.ends_with(b"\r\n") { 2 } else { 1 };
        let args = c
            .buf
            .get(c.pos..c.buf.len().saturating_sub(eol))
            .unwrap_or(&[]);
        c.pos = c.buf.len().saturating_sub(eol);
        match name.first().map(u8::to_ascii_uppercase) {
            Some(b'I') => Command::Id,
            Some(b'E') => Command::Enable,
            _ => Command::Notify {
                none: args.eq_ignore_ascii_case(b" NONE"),
            },
        }
    } else if upper(b"LOGIN") {
        // login = "LOGIN" SP userid SP password
        if !c.sp() {
            return None;
        }
        let user = c.astring()?;
        if !c.sp() {
            return None;
        }
        c.astring()?;
        Command::Login { user }
    } else if upper(b"AUTHENTICATE") {
        // authenticate = "AUTHENTICATE" SP auth-type [SP (base64 / "=")]
        if !c.sp() {
            return None;
        }
        let mechanism = c.take_while(is_atom_char)?;
        let initial = if c.sp() {
            Some(c.take_while(is_base64_char)?)
        } else {
            None
        };
        Command::Authenticate { mechanism, initial }
    } else if upper(b"SELECT") || upper(b"EXAMINE") {
        // select = "SELECT" SP mailbox
        if !c.sp() {
            return None;
        }
        c.astring()?;
        Command::Select {
            read_only: upper(b"EXAMINE"),
        }
    } else if upper(b"STATUS") {
        // status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
        if !c.sp() {
            return None;
        }
        let mailbox = c.astring()?;
        if !c.sp() {
            return None;
        }
        let items = c.status_items()?;
        Command::Status { mailbox, items }
    } else {
        return None;
    };
    c.crlf().then_some(cmd)
}

struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn sp(&mut self) -> bool {
        self.eat(b' ')
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            return true;
        }
        false
    }

    /// One or more bytes matching `f`.
    fn take_while(&mut self, f: fn(u8) -> bool) -> Option<&'a [u8]> {
        let start = self.pos;
        while self.peek().is_some_and(f) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.buf[start..self.pos])
    }

    /// The command ends here: CRLF, or a bare LF from a sloppy client.
    fn crlf(&mut self) -> bool {
        self.eat(b'\r');
        self.eat(b'\n') && self.pos == self.buf.len()
    }

    /// `astring = 1*ASTRING-CHAR / string`, `string = quoted / literal`
    fn astring(&mut self) -> Option<Str<'a>> {
        match self.peek()? {
            b'"' => self.quoted(),
            b'{' => self.literal(),
            _ => self.take_while(is_astring_char).map(Str::Raw),
        }
    }

    /// `quoted = DQUOTE *QUOTED-CHAR DQUOTE`
    fn quoted(&mut self) -> Option<Str<'a>> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'\r' | b'\n' => return None,
                b'\\' if !escaped => escaped = true,
                b'"' if !escaped => return Some(Str::Quoted(&self.buf[start..self.pos - 1])),
                _ => escaped = false,
            }
        }
    }

    /// `literal = "{" number ["+"] "}" CRLF *CHAR8`
    fn literal(&mut self) -> Option<Str<'a>> {
        self.pos += 1;
        let digits = self.take_while(|b| b.is_ascii_digit())?;
        let len = parse_number(digits)? as usize;
        self.eat(b'+');
        if !(self.eat(b'}') && self.eat(b'\r') && self.eat(b'\n')) {
            return None;
        }
        let bytes = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(Str::Raw(bytes))
    }

    fn status_items(&mut self) -> Option<StatusItems> {
        if !self.eat(b'(') {
            return None;
        }
        let mut items = StatusItems::default();
        loop {
            let att = self.take_while(is_atom_char)?;
            let is = |s: &[u8]| att.eq_ignore_ascii_case(s);
            if is(b"MESSAGES") {
                items.messages = true;
            } else if is(b"UIDNEXT") {
                items.uidnext = true;
            } else if is(b"UIDVALIDITY") {
                items.uidvalidity = true;
            } else if is(b"UNSEEN") {
                items.unseen = true;
            } else if is(b"RECENT") {
                items.recent = true;
            }
            // Other items (SIZE, HIGHESTMODSEQ, ...) are ignored, not refused.
            if self.eat(b')') {
                return Some(items);
            }
            if !self.sp() {
                return None;
            }
        }
    }
}

/// `ATOM-CHAR = <any CHAR except atom-specials>`; `atom-specials = "(" /
/// ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials`
fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b)
}

/// `ASTRING-CHAR = ATOM-CHAR / resp-specials`
fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

/// `base64 = *(4base64-char) [base64-terminal]`, or `=` for an empty
/// initial response (RFC 4959).
fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut start = 0;
        for _ in 0..100 {
            let fr = f.advance(&input[start..]);
            out.push(fr);
            match fr {
                Frame::Complete { len } => start += len,
                Frame::SyncLiteral => {}
                _ => break,
            }
        }
        out
    }

    #[test]
    fn frames_sync_and_nonsync_literals() {
        let cmd = b"a LOGIN {5}\r\nuser1 {3+}\r\npw!\r\nb NOOP\r\n";
        assert_eq!(
            frames(cmd),
            vec![
                Frame::SyncLiteral,
                Frame::Complete { len: 30 },
                Frame::Complete { len: 8 },
                Frame::Incomplete
            ]
        );
        let p = parse(&cmd[..30]);
        assert_eq!(p.tag, Some(&b"a"[..]));
        assert_eq!(
            p.command,
            Command::Login {
                user: Str::Raw(b"user1")
            }
        );
    }

    #[test]
    fn every_prefix_is_incomplete_or_sync() {
        let cmd = b"a LOGIN {5}\r\nuser1 \"p\\\"w\"\r\n";
        for cut in 0..cmd.len() {
            let mut f = Framer::default();
            let mut fr = f.advance(&cmd[..cut]);
            if fr == Frame::SyncLiteral {
                fr = f.advance(&cmd[..cut]);
            }
            assert_eq!(fr, Frame::Incomplete, "cut at {cut}");
            // Finishing with the whole command completes it.
            let mut fr = f.advance(cmd);
            if fr == Frame::SyncLiteral {
                fr = f.advance(cmd);
            }
            assert_eq!(fr, Frame::Complete { len: cmd.len() }, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_is_too_long() {
        let mut f = Framer::default();
        assert_eq!(f.advance(b"a LOGIN {99999}\r\n"), Frame::TooLong);
        let long = vec![b'x'; MAX_COMMAND_LEN + 1];
        assert_eq!(Framer::default().advance(&long), Frame::TooLong);
    }

    #[test]
    fn parses_commands() {
        let user = |m: &[u8]| match parse(m).command {
            Command::Login { user } => user.bytes().collect::<Vec<u8>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(user(b"1 login \"a\\\\b\\\"c\" pw\r\n"), b"a\\b\"c");
        assert_eq!(user(b"1 LOGIN bob secret\r\n"), b"bob");
        assert_eq!(
            parse(b"x EXAMINE INBOX\r\n").command,
            Command::Select { read_only: true }
        );
        assert_eq!(
            parse(b"x AUTHENTICATE PLAIN AGJvYgBwdw==\r\n").command,
            Command::Authenticate {
                mechanism: b"PLAIN",
                initial: Some(b"AGJvYgBwdw==")
            }
        );
        let Command::Status { items, .. } =
            parse(b"s STATUS \"INBOX\" (MESSAGES UIDNEXT)\r\n").command
        else {
            panic!()
        };
        assert!(items.messages && items.uidnext && !items.unseen);
        assert_eq!(parse(b"x FROB\r\n").command, Command::Unknown);
        assert_eq!(parse(b"x LOGIN onlyuser\r\n").command, Command::Unknown);
        assert_eq!(parse(b"+x NOOP\r\n").tag, None);
        assert_eq!(parse(b"x ID (\"name\" \"p\")\r\n").command, Command::Id);
    }

    #[test]
    fn never_panics_on_noise() {
        let mut seed = 0x1234_5678_9abc_def0_u64;
        for _ in 0..20_000 {
            let mut buf = [0u8; 24];
            for b in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let alphabet = b"a {}+1\r\n\" LOGIN\\";
                *b = alphabet[(seed % alphabet.len() as u64) as usize];
            }
            let _ = parse(&buf);
            let _ = Framer::default().advance(&buf);
        }
    }
}
