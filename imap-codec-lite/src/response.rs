//! Server responses: one complete message in, borrowed views out.
//!
//! Read first: RFC 9051 section 7 (server responses) and section 9 (formal
//! syntax), RFC 3501 section 9 (the IMAP4rev1 grammar most servers still
//! speak), RFC 2177 (IDLE continuation), RFC 5530 and RFC 5465 (response
//! codes). ABNF below is quoted from those documents; where this parser is
//! more lenient than the grammar the doc comment says so.
//!
//! Policy: responses the proxy acts on (status responses, EXISTS, EXPUNGE,
//! CAPABILITY, STATUS, LIST, response codes it knows) are checked strictly,
//! because a wrong number there would be acted upon. Anything else becomes
//! [`Untagged::Other`] or [`Code::Other`] and is never an error, because
//! servers add extensions faster than clients learn them.

use core::fmt;

/// Why a message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The byte at offset `at` does not fit the grammar.
    Malformed {
        /// Offset into the message.
        at: usize,
    },
    /// The number starting at offset `at` does not fit its type.
    NumberOverflow {
        /// Offset into the message.
        at: usize,
    },
    /// The message does not end with CRLF (a bare LF from a broken server,
    /// or a caller that did not use the framer).
    NotCrlfTerminated,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed { at } => write!(f, "malformed response at byte {at}"),
            ParseError::NumberOverflow { at } => write!(f, "number too large at byte {at}"),
            ParseError::NotCrlfTerminated => f.write_str("response not terminated by CRLF"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The condition of a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `OK`
    Ok,
    /// `NO`
    No,
    /// `BAD`
    Bad,
    /// `PREAUTH` (untagged greeting only)
    PreAuth,
    /// `BYE` (untagged only)
    Bye,
}

/// One server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// `+ text` (text may be base64 SASL data or human text; `+` followed directly by CRLF gives empty text)
    Continuation {
        /// Everything after `+ ` up to CRLF, response codes included.
        text: &'a [u8],
    },
    /// `tag OK|NO|BAD [code] text`
    Tagged {
        /// The tag as sent; see [`crate::parse_tag`].
        tag: &'a [u8],
        /// Only `Ok`, `No` or `Bad`.
        status: Status,
        /// The response code, if any.
        code: Option<Code<'a>>,
        /// Human-readable text (may be empty).
        text: &'a [u8],
    },
    /// A `*` response.
    Untagged(Untagged<'a>),
}

/// An untagged (`*`) response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Untagged<'a> {
    /// `* OK|NO|BAD|PREAUTH|BYE [code] text` (greetings, keepalives like `* OK Still here`, BYE)
    Status {
        /// Condition.
        status: Status,
        /// The response code, if any.
        code: Option<Code<'a>>,
        /// Human-readable text (may be empty).
        text: &'a [u8],
    },
    /// `* CAPABILITY ...`
    Capability(Capabilities<'a>),
    /// `* ENABLED ...` (RFC 5161)
    Enabled(Capabilities<'a>),
    /// `* n EXISTS`
    Exists(u32),
    /// `* n EXPUNGE`
    Expunge(u32),
    /// `* n RECENT`
    Recent(u32),
    /// `* n FETCH (...)` attributes kept raw (may contain literals)
    Fetch {
        /// Message sequence number.
        seq: u32,
        /// The bytes between the outer parentheses.
        attrs: &'a [u8],
    },
    /// `* STATUS mailbox (MESSAGES n UIDNEXT n ...)`
    MailboxStatus {
        /// The mailbox as sent.
        mailbox: AString<'a>,
        /// The items this crate knows; others are skipped.
        items: StatusItems,
    },
    /// `* LIST (flags) delim mailbox` ; delimiter None for NIL
    List {
        /// The bytes between the parentheses, e.g. `\HasNoChildren \Sent`.
        flags: &'a [u8],
        /// Hierarchy delimiter, unescaped.
        delimiter: Option<u8>,
        /// The mailbox as sent (extended data after it is ignored).
        mailbox: AString<'a>,
    },
    /// `* FLAGS (...)`: the bytes between the parentheses.
    Flags(&'a [u8]),
    /// `* SEARCH ...` / `* ESEARCH ...` etc and anything not understood: skipped by callers, never an error.
    /// Holds the message without its leading `* ` and its final CRLF.
    Other(&'a [u8]),
}

/// A response code: the `[...]` at the start of a status response's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code<'a> {
    /// `ALERT`
    Alert,
    /// `CAPABILITY ...`
    Capability(Capabilities<'a>),
    /// `UIDVALIDITY n`
    UidValidity(u32),
    /// `UIDNEXT n`
    UidNext(u32),
    /// `UNSEEN n`
    Unseen(u32),
    /// `READ-ONLY`
    ReadOnly,
    /// `READ-WRITE`
    ReadWrite,
    /// `TRYCREATE`
    TryCreate,
    /// `PARSE`
    Parse,
    /// `PERMANENTFLAGS (...)`: the bytes between the parentheses.
    PermanentFlags(&'a [u8]),
    /// `NOTIFICATIONOVERFLOW` (RFC 5465)
    NotificationOverflow,
    /// `AUTHENTICATIONFAILED` (RFC 5530)
    AuthenticationFailed,
    /// `AUTHORIZATIONFAILED` (RFC 5530)
    AuthorizationFailed,
    /// `UNAVAILABLE` (RFC 5530)
    Unavailable,
    /// `EXPIREDCREDENTIALS` (RFC 5530)
    ExpiredCredentials,
    /// `PRIVACYREQUIRED` (RFC 5530)
    PrivacyRequired,
    /// Any other code, or a known no-argument code that came with an argument.
    Other {
        /// The code's atom as sent.
        name: &'a [u8],
        /// Everything after `name SP` up to `]` (empty without argument).
        arg: &'a [u8],
    },
}

/// Space-separated capability atoms kept raw.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Capabilities<'a> {
    raw: &'a [u8],
}

impl<'a> Capabilities<'a> {
    /// Wraps raw space-separated atoms (no validation: the parser validated them).
    pub fn from_raw(raw: &'a [u8]) -> Self {
        Capabilities { raw }
    }

    /// The raw bytes, as sent.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Each capability atom, in order (repeated or trailing spaces are skipped).
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        self.raw.split(|&b| b == b' ').filter(|a| !a.is_empty())
    }

    /// ASCII case-insensitive match of a whole atom, e.g. has(b"IDLE"), has(b"AUTH=PLAIN")
    pub fn has(&self, name: &[u8]) -> bool {
        self.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

impl fmt::Debug for Capabilities<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({})", self.raw.escape_ascii())
    }
}

/// The items of a `STATUS` response this crate knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusItems {
    /// `MESSAGES`
    pub messages: Option<u32>,
    /// `UIDNEXT`
    pub uidnext: Option<u32>,
    /// `UIDVALIDITY`
    pub uidvalidity: Option<u32>,
    /// `UNSEEN`
    pub unseen: Option<u32>,
    /// `RECENT`
    pub recent: Option<u32>,
}

/// An `astring` as sent by the server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AString<'a> {
    /// `1*ASTRING-CHAR`
    Atom(&'a [u8]),
    /// raw contents between the quotes, escapes still in
    Quoted(&'a [u8]),
    /// The literal's octets.
    Literal(&'a [u8]),
}

impl<'a> AString<'a> {
    /// The bytes as they appear on the wire (quoted strings still escaped).
    pub fn raw(&self) -> &'a [u8] {
        match *self {
            AString::Atom(b) | AString::Quoted(b) | AString::Literal(b) => b,
        }
    }

    /// The unescaped bytes, one at a time.
    pub fn bytes(&self) -> impl Iterator<Item = u8> + 'a {
        let (raw, quoted) = match *self {
            AString::Quoted(b) => (b, true),
            AString::Atom(b) | AString::Literal(b) => (b, false),
        };
        let mut escaped = false;
        raw.iter().filter_map(move |&b| {
            if quoted && !escaped && b == b'\\' {
                escaped = true;
                return None;
            }
            escaped = false;
            Some(b)
        })
    }

    /// Unescaped bytes equal `other` (exact, byte-wise).
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        self.bytes().eq(other.iter().copied())
    }

    /// Writes the unescaped bytes into `out`, returns length, or None if `out` is too small.
    pub fn unescape_into(&self, out: &mut [u8]) -> Option<usize> {
        let mut n = 0;
        for b in self.bytes() {
            *out.get_mut(n)? = b;
            n += 1;
        }
        Some(n)
    }
}

impl fmt::Debug for AString<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            AString::Atom(_) => "Atom",
            AString::Quoted(_) => "Quoted",
            AString::Literal(_) => "Literal",
        };
        write!(f, "{kind}(\"{}\")", self.raw().escape_ascii())
    }
}

type Result<T> = core::result::Result<T, ParseError>;

/// Parses exactly one complete message as returned by the Framer (must end in CRLF).
///
/// ```abnf
/// response      = *(continue-req / response-data) response-done
///                 ; this function parses one of the three
/// response-data = "*" SP (resp-cond-state / resp-cond-bye /
///                 mailbox-data / message-data / capability-data /
///                 enable-data) CRLF
/// response-done = response-tagged / response-fatal
/// ```
///
/// Never panics on any input.
pub fn parse_response(msg: &[u8]) -> Result<Response<'_>> {
    if !msg.ends_with(b"\r\n") {
        return Err(ParseError::NotCrlfTerminated);
    }
    let mut c = Cur { buf: msg, pos: 0 };
    let response = match msg.first() {
        Some(b'+') => continue_req(&mut c)?,
        Some(b'*') => Response::Untagged(response_data(&mut c)?),
        _ => response_tagged(&mut c)?,
    };
    c.end()?;
    Ok(response)
}

/// ```abnf
/// continue-req = "+" [SP (resp-text / base64)] CRLF   ; RFC 9051
/// ```
///
/// Lenient: `+ ` followed by CRLF is accepted as empty text too (RFC 3501
/// requires text, some servers send none).
fn continue_req<'a>(c: &mut Cur<'a>) -> Result<Response<'a>> {
    c.expect(b'+')?;
    if c.at_end() {
        return Ok(Response::Continuation { text: &[] });
    }
    c.expect(b' ')?;
    Ok(Response::Continuation { text: c.text() })
}

/// ```abnf
/// response-tagged = tag SP resp-cond-state CRLF
/// resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
/// tag             = 1*<any ASTRING-CHAR except "+">
/// ```
fn response_tagged<'a>(c: &mut Cur<'a>) -> Result<Response<'a>> {
    let tag = c.take_while1(|b| is_astring_char(b) && b != b'+')?;
    c.expect(b' ')?;
    let at = c.pos;
    let status = match status_keyword(c.atom()?) {
        Some(s @ (Status::Ok | Status::No | Status::Bad)) => s,
        _ => return Err(ParseError::Malformed { at }),
    };
    let (code, text) = resp_text_after_keyword(c)?;
    Ok(Response::Tagged {
        tag,
        status,
        code,
        text,
    })
}

/// ```abnf
/// response-data = "*" SP (resp-cond-state / resp-cond-bye /
///                 mailbox-data / message-data / capability-data /
///                 enable-data) CRLF
/// resp-cond-auth  = ("OK" / "PREAUTH") SP resp-text
/// resp-cond-bye   = "BYE" SP resp-text
/// mailbox-data    = "FLAGS" SP flag-list / "LIST" SP mailbox-list /
///                   "STATUS" SP mailbox SP "(" [status-att-list] ")" /
///                   number SP "EXISTS" / number SP "RECENT" / ...
/// enable-data     = "ENABLED" *(SP capability)      ; RFC 5161
/// ```
fn response_data<'a>(c: &mut Cur<'a>) -> Result<Untagged<'a>> {
    c.expect(b'*')?;
    c.expect(b' ')?;
    let start = c.pos;
    if c.peek().is_some_and(|b| b.is_ascii_digit()) {
        return message_data(c, start);
    }
    let word = c.atom()?;
    if let Some(status) = status_keyword(word) {
        let (code, text) = resp_text_after_keyword(c)?;
        return Ok(Untagged::Status { status, code, text });
    }
    if word.eq_ignore_ascii_case(b"CAPABILITY") {
        Ok(Untagged::Capability(capability_list(c, b'\r')?))
    } else if word.eq_ignore_ascii_case(b"ENABLED") {
        Ok(Untagged::Enabled(capability_list(c, b'\r')?))
    } else if word.eq_ignore_ascii_case(b"FLAGS") {
        c.expect(b' ')?;
        Ok(Untagged::Flags(flag_list(c)?))
    } else if word.eq_ignore_ascii_case(b"LIST") {
        c.expect(b' ')?;
        mailbox_list(c)
    } else if word.eq_ignore_ascii_case(b"STATUS") {
        c.expect(b' ')?;
        mailbox_status(c)
    } else {
        Ok(other(c, start))
    }
}

/// ```abnf
/// message-data = nz-number SP ("EXPUNGE" / ("FETCH" SP msg-att))
/// mailbox-data =/ number SP "EXISTS" / number SP "RECENT"
/// ```
///
/// Lenient: a number followed by an unknown keyword (e.g. RFC 5162's
/// `VANISHED` does not start with one, but vendors' extensions might) is
/// [`Untagged::Other`].
fn message_data<'a>(c: &mut Cur<'a>, start: usize) -> Result<Untagged<'a>> {
    let n_at = c.pos;
    let n = c.number()?;
    c.expect(b' ')?;
    let word = c.atom()?;
    if word.eq_ignore_ascii_case(b"EXISTS") {
        Ok(Untagged::Exists(n))
    } else if word.eq_ignore_ascii_case(b"RECENT") {
        Ok(Untagged::Recent(n))
    } else if word.eq_ignore_ascii_case(b"EXPUNGE") {
        nonzero(n, n_at)?;
        Ok(Untagged::Expunge(n))
    } else if word.eq_ignore_ascii_case(b"FETCH") {
        nonzero(n, n_at)?;
        c.expect(b' ')?;
        Ok(Untagged::Fetch {
            seq: n,
            attrs: paren_list_raw(c)?,
        })
    } else {
        Ok(other(c, start))
    }
}

/// Everything from `start` up to the final CRLF, for responses this crate
/// does not interpret.
fn other<'a>(c: &mut Cur<'a>, start: usize) -> Untagged<'a> {
    let end = c.buf.len().saturating_sub(2);
    c.pos = end;
    Untagged::Other(c.buf.get(start..end).unwrap_or(&[]))
}

fn nonzero(n: u32, at: usize) -> Result<()> {
    if n == 0 {
        return Err(ParseError::Malformed { at });
    }
    Ok(())
}

/// Maps a status keyword, ASCII case-insensitively.
///
/// ```abnf
/// resp-cond-state = ("OK" / "NO" / "BAD") SP resp-text
/// resp-cond-auth  = ("OK" / "PREAUTH") SP resp-text
/// resp-cond-bye   = "BYE" SP resp-text
/// ```
fn status_keyword(word: &[u8]) -> Option<Status> {
    const WORDS: [(&[u8], Status); 5] = [
        (b"OK", Status::Ok),
        (b"NO", Status::No),
        (b"BAD", Status::Bad),
        (b"PREAUTH", Status::PreAuth),
        (b"BYE", Status::Bye),
    ];
    WORDS
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map(|&(_, s)| s)
}

/// The `SP resp-text` after a status keyword.
///
/// ```abnf
/// resp-text = ["[" resp-text-code "]" SP] [text]   ; RFC 9051
/// text      = 1*(TEXT-CHAR / UTF8-2 / UTF8-3 / UTF8-4)
/// ```
///
/// Lenient: a missing `SP resp-text` (`A1 OK` CRLF) and a missing SP after
/// `]` are accepted. When `[` starts text that does not close with `]` on
/// the line, there is no code and the `[` is part of the text.
fn resp_text_after_keyword<'a>(c: &mut Cur<'a>) -> Result<(Option<Code<'a>>, &'a [u8])> {
    if c.at_end() {
        return Ok((None, &[]));
    }
    c.expect(b' ')?;
    let mut code = None;
    if c.peek() == Some(b'[') {
        let save = c.pos;
        c.pos += 1;
        match resp_text_code(c)? {
            Some(parsed) => {
                code = Some(parsed);
                if c.peek() == Some(b' ') {
                    c.pos += 1;
                }
            }
            None => c.pos = save,
        }
    }
    Ok((code, c.text()))
}

/// ```abnf
/// resp-text-code = "ALERT" / "BADCHARSET" [SP "(" charset *(SP charset) ")" ] /
///                  capability-data / "PARSE" /
///                  "PERMANENTFLAGS" SP "(" [flag-perm *(SP flag-perm)] ")" /
///                  "READ-ONLY" / "READ-WRITE" / "TRYCREATE" /
///                  "UIDNEXT" SP nz-number / "UIDVALIDITY" SP nz-number /
///                  "UNSEEN" SP nz-number /
///                  "NOTIFICATIONOVERFLOW" /                      ; RFC 5465
///                  "AUTHENTICATIONFAILED" / "AUTHORIZATIONFAILED" /
///                  "UNAVAILABLE" / "EXPIREDCREDENTIALS" /
///                  "PRIVACYREQUIRED" /                           ; RFC 5530
///                  atom [SP 1*<any TEXT-CHAR except "]">]
/// ```
///
/// Called after `[`; consumes up to and including `]`. Returns `None` (and
/// the caller rewinds) when the generic shape `atom [SP arg] "]"` is not
/// there. A known code whose argument is wrong is an error, because the
/// caller would act on it. Lenient: numbers may be 0 (checking that is the
/// caller's business).
fn resp_text_code<'a>(c: &mut Cur<'a>) -> Result<Option<Code<'a>>> {
    let Ok(name) = c.atom() else {
        return Ok(None);
    };
    let arg_at = c.pos + 1;
    let arg = if c.peek() == Some(b' ') {
        c.pos += 1;
        c.take_while(|b| b != b']' && b != b'\r' && b != b'\n')
    } else {
        &[]
    };
    if c.peek() != Some(b']') {
        return Ok(None);
    }
    c.pos += 1;
    code_from_parts(name, arg, arg_at).map(Some)
}

/// Gives meaning to a code's name and raw argument (see [`resp_text_code`]).
fn code_from_parts<'a>(name: &'a [u8], arg: &'a [u8], arg_at: usize) -> Result<Code<'a>> {
    const BARE: [(&[u8], Code<'static>); 11] = [
        (b"ALERT", Code::Alert),
        (b"READ-ONLY", Code::ReadOnly),
        (b"READ-WRITE", Code::ReadWrite),
        (b"TRYCREATE", Code::TryCreate),
        (b"PARSE", Code::Parse),
        (b"NOTIFICATIONOVERFLOW", Code::NotificationOverflow),
        (b"AUTHENTICATIONFAILED", Code::AuthenticationFailed),
        (b"AUTHORIZATIONFAILED", Code::AuthorizationFailed),
        (b"UNAVAILABLE", Code::Unavailable),
        (b"EXPIREDCREDENTIALS", Code::ExpiredCredentials),
        (b"PRIVACYREQUIRED", Code::PrivacyRequired),
    ];
    let is = |w: &[u8]| name.eq_ignore_ascii_case(w);
    if arg.is_empty() {
        if let Some((_, code)) = BARE.iter().find(|(w, _)| is(w)) {
            return Ok(*code);
        }
    }
    let number = || {
        let mut sub = Cur { buf: arg, pos: 0 };
        let n = sub.number().map_err(|e| shift(e, arg_at))?;
        if !sub.rest().is_empty() {
            return Err(ParseError::Malformed {
                at: arg_at + sub.pos,
            });
        }
        Ok(n)
    };
    if is(b"UIDVALIDITY") {
        Ok(Code::UidValidity(number()?))
    } else if is(b"UIDNEXT") {
        Ok(Code::UidNext(number()?))
    } else if is(b"UNSEEN") {
        Ok(Code::Unseen(number()?))
    } else if is(b"CAPABILITY") {
        check_capabilities(arg, arg_at)?;
        Ok(Code::Capability(Capabilities::from_raw(arg)))
    } else if is(b"PERMANENTFLAGS") {
        let mut sub = Cur { buf: arg, pos: 0 };
        let flags = flag_list(&mut sub).map_err(|e| shift(e, arg_at))?;
        if !sub.rest().is_empty() {
            return Err(ParseError::Malformed {
                at: arg_at + sub.pos,
            });
        }
        Ok(Code::PermanentFlags(flags))
    } else {
        Ok(Code::Other { name, arg })
    }
}

/// Moves an error found in a sub-slice to its offset in the message.
fn shift(e: ParseError, by: usize) -> ParseError {
    match e {
        ParseError::Malformed { at } => ParseError::Malformed { at: at + by },
        ParseError::NumberOverflow { at } => ParseError::NumberOverflow { at: at + by },
        ParseError::NotCrlfTerminated => e,
    }
}

/// The capability atoms after `CAPABILITY`, up to `end` (CR on a line of
/// its own).
///
/// ```abnf
/// capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev2"
///                   *(SP capability)
/// capability      = ("AUTH=" auth-type) / atom
/// ```
///
/// Lenient: the list may be empty and IMAP4rev1/IMAP4rev2 need not appear
/// (the caller decides what it needs); any non-control byte is accepted
/// inside an atom.
fn capability_list<'a>(c: &mut Cur<'a>, end: u8) -> Result<Capabilities<'a>> {
    if c.peek() == Some(end) {
        return Ok(Capabilities::from_raw(&[]));
    }
    c.expect(b' ')?;
    let at = c.pos;
    let raw = c.take_while(|b| b != end && b != b'\r' && b != b'\n');
    check_capabilities(raw, at)?;
    Ok(Capabilities::from_raw(raw))
}

fn check_capabilities(raw: &[u8], at: usize) -> Result<()> {
    match raw.iter().position(|&b| is_ctl(b)) {
        Some(i) => Err(ParseError::Malformed { at: at + i }),
        None => Ok(()),
    }
}

/// Returns the bytes between the parentheses.
///
/// ```abnf
/// flag-list = "(" [flag *(SP flag)] ")"
/// flag      = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" /
///             flag-keyword / flag-extension
/// flag-perm = flag / "\*"
/// ```
///
/// Lenient: the contents are only checked to hold no control characters,
/// quotes or parentheses.
fn flag_list<'a>(c: &mut Cur<'a>) -> Result<&'a [u8]> {
    c.expect(b'(')?;
    let inner = c.take_while(|b| !is_ctl(b) && !matches!(b, b'(' | b')' | b'"'));
    c.expect(b')')?;
    Ok(inner)
}

/// ```abnf
/// mailbox-list = "(" [mbx-list-flags] ")" SP
///                (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
///                [SP mbox-list-extended]
/// mailbox      = "INBOX" / astring
/// ```
///
/// Lenient: the extended data is not checked.
fn mailbox_list<'a>(c: &mut Cur<'a>) -> Result<Untagged<'a>> {
    let flags = flag_list(c)?;
    c.expect(b' ')?;
    let delimiter = delimiter(c)?;
    c.expect(b' ')?;
    let mailbox = astring(c)?;
    if c.peek() == Some(b' ') {
        let end = c.buf.len().saturating_sub(2);
        c.pos = end;
    }
    Ok(Untagged::List {
        flags,
        delimiter,
        mailbox,
    })
}

/// ```abnf
/// DQUOTE QUOTED-CHAR DQUOTE / nil
/// QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials
/// nil         = "NIL"
/// ```
fn delimiter(c: &mut Cur<'_>) -> Result<Option<u8>> {
    if c.peek() != Some(b'"') {
        let at = c.pos;
        let word = c.atom()?;
        if word.eq_ignore_ascii_case(b"NIL") {
            return Ok(None);
        }
        return Err(ParseError::Malformed { at });
    }
    c.pos += 1;
    let at = c.pos;
    let ch = match c.next() {
        Some(b'\\') => c.next().filter(|b| matches!(b, b'"' | b'\\')),
        Some(b) if b != b'"' && b != b'\r' && b != b'\n' => Some(b),
        _ => None,
    };
    let ch = ch.ok_or(ParseError::Malformed { at })?;
    c.expect(b'"')?;
    Ok(Some(ch))
}

/// ```abnf
/// mailbox-data    =/ "STATUS" SP mailbox SP "(" [status-att-list] ")"
/// status-att-list = status-att-val *(SP status-att-val)
/// status-att-val  = ("MESSAGES" SP number) / ("UIDNEXT" SP nz-number) /
///                   ("UIDVALIDITY" SP nz-number) / ("UNSEEN" SP number) /
///                   ("DELETED" SP number) / ("SIZE" SP number64) /
///                   ("RECENT" SP number)       ; RFC 3501
/// ```
///
/// Lenient: unknown items are skipped whatever their value (as long as it is
/// one token), and a space before `)` or before CRLF is accepted (some
/// servers send one).
fn mailbox_status<'a>(c: &mut Cur<'a>) -> Result<Untagged<'a>> {
    let mailbox = astring(c)?;
    c.expect(b' ')?;
    c.expect(b'(')?;
    let mut items = StatusItems::default();
    loop {
        match c.peek() {
            Some(b')') => break,
            Some(b' ') => c.pos += 1,
            _ => status_att_val(c, &mut items)?,
        }
    }
    c.expect(b')')?;
    if c.peek() == Some(b' ') {
        c.pos += 1;
    }
    Ok(Untagged::MailboxStatus { mailbox, items })
}

/// One `status-att-val` (see [`mailbox_status`]).
fn status_att_val(c: &mut Cur<'_>, items: &mut StatusItems) -> Result<()> {
    let name = c.atom()?;
    c.expect(b' ')?;
    let slot = [
        (&b"MESSAGES"[..], &mut items.messages),
        (b"UIDNEXT", &mut items.uidnext),
        (b"UIDVALIDITY", &mut items.uidvalidity),
        (b"UNSEEN", &mut items.unseen),
        (b"RECENT", &mut items.recent),
    ]
    .into_iter()
    .find(|(w, _)| w.eq_ignore_ascii_case(name));
    match slot {
        Some((_, slot)) => *slot = Some(c.number()?),
        None => {
            c.take_while1(|b| !is_ctl(b) && !matches!(b, b' ' | b'(' | b')'))?;
        }
    }
    Ok(())
}

/// ```abnf
/// astring = 1*ASTRING-CHAR / string
/// string  = quoted / literal
/// ```
fn astring<'a>(c: &mut Cur<'a>) -> Result<AString<'a>> {
    match c.peek() {
        Some(b'"') => quoted(c).map(AString::Quoted),
        Some(b'{') => literal(c).map(AString::Literal),
        _ => c.take_while1(is_astring_char).map(AString::Atom),
    }
}

/// Returns the raw bytes between the quotes.
///
/// ```abnf
/// quoted         = DQUOTE *QUOTED-CHAR DQUOTE
/// QUOTED-CHAR    = <any TEXT-CHAR except quoted-specials> /
///                  "\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4
/// quoted-specials = DQUOTE / "\"
/// ```
///
/// Lenient: any 8-bit byte is accepted (the UTF-8 shape is not checked).
fn quoted<'a>(c: &mut Cur<'a>) -> Result<&'a [u8]> {
    c.expect(b'"')?;
    let start = c.pos;
    loop {
        let at = c.pos;
        match c.next() {
            Some(b'"') => break,
            Some(b'\\') => match c.next() {
                Some(b'"' | b'\\') => {}
                _ => return Err(ParseError::Malformed { at }),
            },
            Some(b) if b != b'\r' && b != b'\n' && b != 0 => {}
            _ => return Err(ParseError::Malformed { at }),
        }
    }
    Ok(c.buf.get(start..c.pos - 1).unwrap_or(&[]))
}

/// Returns the literal's octets.
///
/// ```abnf
/// literal = "{" number64 ["+"] "}" CRLF *CHAR8   ; RFC 9051, RFC 7888
/// ```
///
/// Lenient: the `+` form is accepted from the server too, and the octets
/// are not checked (NUL included).
fn literal<'a>(c: &mut Cur<'a>) -> Result<&'a [u8]> {
    c.expect(b'{')?;
    let len_at = c.pos;
    let len = c.number()? as usize;
    if c.peek() == Some(b'+') {
        c.pos += 1;
    }
    c.expect(b'}')?;
    c.expect(b'\r')?;
    c.expect(b'\n')?;
    let start = c.pos;
    let data = c
        .buf
        .get(start..start.saturating_add(len))
        .ok_or(ParseError::Malformed { at: len_at })?;
    c.pos += len;
    Ok(data)
}

/// Returns the bytes between the outer parentheses of a list that may nest
/// and hold quoted strings and literals.
///
/// ```abnf
/// msg-att = "(" (msg-att-dynamic / msg-att-static)
///           *(SP (msg-att-dynamic / msg-att-static)) ")"
/// ```
///
/// Lenient: only the nesting, the quoting and the literals are checked, not
/// the attributes themselves. A `{` that does not start a literal
/// announcement is taken as an ordinary byte. Iterative, so deep nesting
/// cannot exhaust the stack.
fn paren_list_raw<'a>(c: &mut Cur<'a>) -> Result<&'a [u8]> {
    c.expect(b'(')?;
    let start = c.pos;
    let mut depth = 1usize;
    loop {
        let at = c.pos;
        match c.peek() {
            Some(b'(') => {
                depth += 1;
                c.pos += 1;
            }
            Some(b')') => {
                depth -= 1;
                c.pos += 1;
                if depth == 0 {
                    break;
                }
            }
            Some(b'"') => {
                quoted(c)?;
            }
            Some(b'{') => {
                let save = c.pos;
                if literal(c).is_err() {
                    c.pos = save + 1;
                }
            }
            Some(b) if b != b'\r' && b != b'\n' => c.pos += 1,
            _ => return Err(ParseError::Malformed { at }),
        }
    }
    Ok(c.buf.get(start..c.pos - 1).unwrap_or(&[]))
}

/// ATOM-CHAR = <any CHAR except atom-specials>
///
/// atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
///                 quoted-specials / resp-specials
pub(crate) fn is_atom_char(b: u8) -> bool {
    b.is_ascii()
        && !is_ctl(b)
        && !matches!(
            b,
            b'(' | b')' | b'{' | b' ' | b'%' | b'*' | b'"' | b'\\' | b']'
        )
}

/// ASTRING-CHAR = ATOM-CHAR / resp-specials
pub(crate) fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// CTL = %x00-1F / %x7F
fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// A read position in one message. Every method checks bounds, so no input
/// can make it panic.
struct Cur<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn malformed(&self) -> ParseError {
        ParseError::Malformed { at: self.pos }
    }

    fn expect(&mut self, want: u8) -> Result<()> {
        if self.peek() != Some(want) {
            return Err(self.malformed());
        }
        self.pos += 1;
        Ok(())
    }

    /// True at the final CRLF of the message.
    fn at_end(&self) -> bool {
        self.pos + 2 == self.buf.len()
    }

    /// The final CRLF must follow, and nothing after it.
    fn end(&self) -> Result<()> {
        if self.at_end() && self.rest() == b"\r\n" {
            return Ok(());
        }
        Err(self.malformed())
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = self.rest();
        let n = rest.iter().take_while(|&&b| f(b)).count();
        self.pos += n;
        &rest[..n]
    }

    fn take_while1(&mut self, f: impl Fn(u8) -> bool) -> Result<&'a [u8]> {
        let got = self.take_while(f);
        if got.is_empty() {
            return Err(self.malformed());
        }
        Ok(got)
    }

    /// `atom = 1*ATOM-CHAR`
    fn atom(&mut self) -> Result<&'a [u8]> {
        self.take_while1(is_atom_char)
    }

    /// `text = 1*TEXT-CHAR`, leniently any bytes up to CR (may be empty).
    fn text(&mut self) -> &'a [u8] {
        self.take_while(|b| b != b'\r' && b != b'\n')
    }

    /// `number = 1*DIGIT` ; unsigned 32-bit integer
    fn number(&mut self) -> Result<u32> {
        let at = self.pos;
        let digits = self.take_while1(|b| b.is_ascii_digit())?;
        digits
            .iter()
            .try_fold(0u32, |n, &d| {
                n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
            })
            .ok_or(ParseError::NumberOverflow { at })
    }
}
