//! Client commands: written into the caller's slice, never into a buffer of
//! our own.
//!
//! Read first: RFC 9051 section 6 (client commands) and section 4.3
//! (strings), RFC 7888 (LITERAL+ / LITERAL-), RFC 4959 (SASL-IR), RFC 4616
//! (PLAIN), RFC 7628 (OAUTHBEARER), Google's XOAUTH2 description, RFC 2971
//! (ID), RFC 2177 (IDLE).
//!
//! Secrets (passwords, tokens, SASL plaintext) are only ever written into
//! the caller's `out`. Base64 for SASL is produced chunk by chunk from a
//! small stack buffer that is zeroized when it goes out of scope, so the
//! plaintext is never assembled anywhere.

use core::fmt;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::response::is_atom_char;

/// How string arguments that need a literal are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiteralMode {
    /// server has LITERAL+ (or LITERAL- and literal <= 4096): use `{N+}`
    NonSync,
    /// must wait for `+` after each `{N}`
    Sync,
    /// Server has LITERAL- (RFC 7888): `{N+}` for literals up to 4096 bytes,
    /// `{N}` with a wait for larger ones.
    LiteralMinus,
}

/// Largest literal a LITERAL- server accepts in non-synchronizing form (RFC 7888 section 4).
pub const LITERAL_MINUS_MAX: usize = 4096;

/// A SASL mechanism with its credentials.
#[derive(Clone, Copy)]
pub enum Sasl<'a> {
    /// RFC 4616, with an empty authorization identity.
    Plain {
        /// Authentication identity.
        username: &'a [u8],
        /// Secret.
        password: &'a [u8],
    },
    /// Google's XOAUTH2: `"user=" u "\x01auth=Bearer " t "\x01\x01"`.
    XOAuth2 {
        /// Account.
        username: &'a [u8],
        /// OAuth 2.0 access token (secret).
        token: &'a [u8],
    },
    /// RFC 7628: gs2 header `n,a=user,` then host, port and bearer token.
    OAuthBearer {
        /// Authorization identity (escaped as a saslname); empty leaves it out.
        username: &'a [u8],
        /// Server host name; empty leaves it out.
        host: &'a [u8],
        /// Server port; 0 leaves it out.
        port: u16,
        /// OAuth 2.0 access token (secret).
        token: &'a [u8],
    },
}

impl Sasl<'_> {
    /// The mechanism name sent after `AUTHENTICATE`.
    pub fn mechanism_name(&self) -> &'static str {
        match self {
            Sasl::Plain { .. } => "PLAIN",
            Sasl::XOAuth2 { .. } => "XOAUTH2",
            Sasl::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }
}

/// Shows bytes as escaped ASCII in `Debug` output.
struct Shown<'a>(&'a [u8]);

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for Sasl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sasl::Plain { username, .. } => f
                .debug_struct("Plain")
                .field("username", &Shown(username))
                .field("password", &Redacted)
                .finish(),
            Sasl::XOAuth2 { username, .. } => f
                .debug_struct("XOAuth2")
                .field("username", &Shown(username))
                .field("token", &Redacted)
                .finish(),
            Sasl::OAuthBearer {
                username,
                host,
                port,
                ..
            } => f
                .debug_struct("OAuthBearer")
                .field("username", &Shown(username))
                .field("host", &Shown(host))
                .field("port", port)
                .field("token", &Redacted)
                .finish(),
        }
    }
}

/// A client command.
#[derive(Clone, Copy)]
pub enum Command<'a> {
    /// `CAPABILITY`
    Capability,
    /// `NOOP`
    Noop,
    /// `IDLE` (RFC 2177); end it with [`DONE`].
    Idle,
    /// `LOGOUT`
    Logout,
    /// `STARTTLS`
    StartTls,
    /// `LOGIN userid password`
    Login {
        /// User name.
        username: &'a [u8],
        /// Secret.
        password: &'a [u8],
    },
    /// `sasl_ir`: send the initial response on the command line (RFC 4959) when true; else send
    /// `AUTHENTICATE MECH` CRLF, wait for `+`, then base64 CRLF.
    Authenticate {
        /// Mechanism and credentials.
        mechanism: Sasl<'a>,
        /// Server advertised SASL-IR.
        sasl_ir: bool,
    },
    /// mailbox given as the bytes to put on the wire (caller did any modified UTF-7 conversion);
    /// the encoder picks atom / quoted / literal as needed.
    Examine {
        /// Mailbox name.
        mailbox: &'a [u8],
    },
    /// `STATUS mailbox (MESSAGES UIDNEXT UIDVALIDITY)` items chosen by flags
    Status {
        /// Mailbox name.
        mailbox: &'a [u8],
        /// At least one item MUST be requested.
        items: StatusRequest,
    },
    /// `NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (MAILBOXES (m1 m2)
    /// (MessageNew MessageExpunge))` (RFC 5465): new and expunged messages of the
    /// selected mailbox and, when `mailboxes` is not empty, of those mailboxes (reported
    /// with STATUS responses). Names as sent on the wire (modified UTF-7 applied).
    Notify {
        /// Other mailboxes to watch; may be empty.
        mailboxes: &'a [&'a [u8]],
        /// Watch every personal mailbox (`PERSONAL`) instead of naming `mailboxes`.
        personal: bool,
    },
    /// `UID FETCH <from_uid>:* (UID BODY.PEEK[HEADER.FIELDS (f1 f2 ...)]<0.octets_max>)`:
    /// the named header fields of every message whose UID is `from_uid` or higher, never
    /// the body. `BODY.PEEK` never sets `\Seen` (RFC 3501 §6.4.5), and the partial range
    /// bounds what the server sends per message, so one sender cannot make the response
    /// outgrow a reader's limits.
    ///
    /// `from_uid` MUST be above 0 and `octets_max` MUST be above 0; each field MUST be a
    /// non-empty RFC 5322 field name of IMAP atom characters (so it goes on the wire
    /// bare), and at least one field MUST be given.
    UidFetchHeaders {
        /// The first UID wanted (usually the UIDNEXT seen before).
        from_uid: u32,
        /// Header field names, such as `FROM` and `SUBJECT`.
        fields: &'a [&'a [u8]],
        /// Most octets of the header block the server sends per message.
        octets_max: u32,
    },
    /// `ID ("name" "imap-push-proxy" "version" "x")` – pairs given by caller
    /// (no pairs sends `ID NIL`; RFC 2971 limits: 30 pairs, fields up to 30
    /// bytes, values up to 1024 bytes).
    Id {
        /// Field-value pairs.
        pairs: &'a [(&'a [u8], &'a [u8])],
    },
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Capability => f.write_str("Capability"),
            Command::Noop => f.write_str("Noop"),
            Command::Idle => f.write_str("Idle"),
            Command::Logout => f.write_str("Logout"),
            Command::StartTls => f.write_str("StartTls"),
            Command::Login { username, .. } => f
                .debug_struct("Login")
                .field("username", &Shown(username))
                .field("password", &Redacted)
                .finish(),
            Command::Authenticate { mechanism, sasl_ir } => f
                .debug_struct("Authenticate")
                .field("mechanism", mechanism)
                .field("sasl_ir", sasl_ir)
                .finish(),
            Command::Examine { mailbox } => f
                .debug_struct("Examine")
                .field("mailbox", &Shown(mailbox))
                .finish(),
            Command::Status { mailbox, items } => f
                .debug_struct("Status")
                .field("mailbox", &Shown(mailbox))
                .field("items", items)
                .finish(),
            Command::Notify {
                mailboxes,
                personal,
            } => {
                if *personal {
                    return f.write_str("Notify(PERSONAL)");
                }
                let mut list = f.debug_list();
                for m in mailboxes.iter() {
                    list.entry(&Shown(m));
                }
                list.finish()
            }
            Command::UidFetchHeaders {
                from_uid,
                fields,
                octets_max,
            } => {
                write!(f, "UidFetchHeaders({from_uid}:* ")?;
                let mut list = f.debug_list();
                for field in fields.iter() {
                    list.entry(&Shown(field));
                }
                list.finish()?;
                write!(f, " <0.{octets_max}>)")
            }
            Command::Id { pairs } => {
                let mut list = f.debug_map();
                for (k, v) in pairs.iter() {
                    list.entry(&Shown(k), &Shown(v));
                }
                list.finish()
            }
        }
    }
}

/// Which items a `STATUS` command asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusRequest {
    /// `MESSAGES`
    pub messages: bool,
    /// `UIDNEXT`
    pub uidnext: bool,
    /// `UIDVALIDITY`
    pub uidvalidity: bool,
    /// `UNSEEN`
    pub unseen: bool,
}

/// Most waits one command can need (LOGIN with two synchronizing literals
/// needs two).
const MAX_WAITS: usize = 3;

/// Result of encoding: `out[..len]` is the whole command. `waits()` are byte offsets (ascending) into
/// out at which the client MUST stop and wait for a `+` continuation before sending the remainder
/// (sync literals, AUTHENTICATE without SASL-IR). Empty when the command can be sent at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Encoded {
    /// Length of the command in `out`.
    pub len: usize,
    waits: [usize; MAX_WAITS],
    n_waits: u8,
}

impl Encoded {
    /// Offsets at which the client MUST wait for a `+` continuation.
    pub fn waits(&self) -> &[usize] {
        self.waits.get(..usize::from(self.n_waits)).unwrap_or(&[])
    }

    /// The ranges of `out` to send in order: before the first wait, between
    /// waits, and after the last. The client MUST receive a `+` continuation
    /// between two ranges.
    pub fn segments(&self) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
        let starts = core::iter::once(0).chain(self.waits().iter().copied());
        let ends = self
            .waits()
            .iter()
            .copied()
            .chain(core::iter::once(self.len));
        starts.zip(ends).map(|(start, end)| start..end)
    }
}

/// Why a command could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// `out` must hold at least `needed` bytes; nothing was written.
    BufferTooSmall {
        /// Exact size of the encoded command.
        needed: usize,
    },
    /// e.g. NUL in a LOGIN string or PLAIN credential, or a tag that is not a valid tag
    Unencodable {
        /// Which argument.
        field: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small, {needed} bytes needed")
            }
            EncodeError::Unencodable { field } => write!(f, "{field} cannot be encoded"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// `DONE` CRLF, ends IDLE
pub const DONE: &[u8] = b"DONE\r\n";
/// Cancels an AUTHENTICATE exchange (RFC 9051 section 6.2.2).
pub const SASL_CANCEL: &[u8] = b"*\r\n";
/// Answer to the `+` carrying an XOAUTH2 error: an empty response, after
/// which the server sends the tagged NO.
pub const XOAUTH2_ERROR_ACK: &[u8] = b"\r\n";
/// Answer to the `+` carrying an OAUTHBEARER error: base64 of `%x01`
/// (RFC 7628 section 3.2.3).
pub const OAUTHBEARER_ERROR_ACK: &[u8] = b"AQ==\r\n";

/// Encodes `cmd` tagged `A<tag>` into `out`.
///
/// Tags are `A` followed by the decimal `tag` number (e.g. A1, A42).
///
/// ```abnf
/// command = tag SP (command-any / command-auth / command-nonauth /
///           command-select) CRLF
/// ```
///
/// On error nothing is written to `out`. On success the caller sends
/// `out[..len]`, stopping at each offset in [`Encoded::waits`] until the
/// server's `+`. `out` may hold secrets afterwards; the caller MUST zeroize it.
pub fn encode(
    tag: u32,
    cmd: &Command<'_>,
    literal: LiteralMode,
    out: &mut [u8],
) -> Result<Encoded, EncodeError> {
    let mut counter = Sink::counting(literal);
    command(&mut counter, tag, cmd)?;
    let needed = counter.len;
    if needed > out.len() {
        return Err(EncodeError::BufferTooSmall { needed });
    }
    let mut sink = Sink::writing(literal, out);
    command(&mut sink, tag, cmd)?;
    debug_assert_eq!(sink.len, needed);
    Ok(Encoded {
        len: sink.len,
        waits: sink.waits,
        n_waits: sink.n_waits,
    })
}

/// Writes the decimal tag `A<n>` into out, returns len (for matching tagged responses without allocation).
pub fn write_tag(tag: u32, out: &mut [u8; 11]) -> usize {
    let mut digits = Digits::new(u64::from(tag));
    let digits = digits.as_bytes();
    out[0] = b'A';
    for (dst, src) in out[1..].iter_mut().zip(digits) {
        *dst = *src;
    }
    digits.len() + 1
}

/// Parses a tag previously written by write_tag back to its number (None for other tags).
///
/// Only the exact form `write_tag` produces is accepted: uppercase `A`, no
/// leading zeros, no sign, no overflow.
pub fn parse_tag(tag: &[u8]) -> Option<u32> {
    let digits = tag.strip_prefix(b"A")?;
    let leading_zero = digits.len() > 1 && digits.first() == Some(&b'0');
    if digits.is_empty() || leading_zero || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

/// A number in decimal, on the stack.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn new(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Digits { buf, start }
    }

    fn as_bytes(&mut self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }
}

/// Where encoded bytes go. The encoder runs twice: once counting (to learn
/// the exact size and validate every argument before anything is written),
/// then writing into a buffer known to be large enough.
struct Sink<'o> {
    out: &'o mut [u8],
    /// False on the counting pass.
    write: bool,
    len: usize,
    literal: LiteralMode,
    waits: [usize; MAX_WAITS],
    n_waits: u8,
}

impl<'o> Sink<'o> {
    fn counting(literal: LiteralMode) -> Sink<'static> {
        Sink {
            out: &mut [],
            write: false,
            len: 0,
            literal,
            waits: [0; MAX_WAITS],
            n_waits: 0,
        }
    }

    fn writing(literal: LiteralMode, out: &'o mut [u8]) -> Self {
        Sink {
            out,
            write: true,
            len: 0,
            literal,
            waits: [0; MAX_WAITS],
            n_waits: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.write {
            let end = self.len + bytes.len();
            if let Some(dst) = self.out.get_mut(self.len..end) {
                dst.copy_from_slice(bytes);
            }
        }
        self.len += bytes.len();
    }

    fn put_number(&mut self, n: u64) {
        self.put(Digits::new(n).as_bytes());
    }

    /// The client must stop here until the server's `+`.
    fn wait(&mut self, field: &'static str) -> Result<(), EncodeError> {
        let slot = self
            .waits
            .get_mut(usize::from(self.n_waits))
            .ok_or(EncodeError::Unencodable { field })?;
        *slot = self.len;
        self.n_waits += 1;
        Ok(())
    }
}

/// ```abnf
/// command         = tag SP (command-any / command-auth / command-nonauth /
///                   command-select) CRLF
/// command-any     = "CAPABILITY" / "LOGOUT" / "NOOP" / x-command / id
/// command-nonauth = login / authenticate / "STARTTLS"
/// command-auth    = ... / examine / status / idle / notify
/// idle            = "IDLE" CRLF "DONE"                 ; RFC 2177
/// ```
fn command(s: &mut Sink<'_>, tag: u32, cmd: &Command<'_>) -> Result<(), EncodeError> {
    s.put(b"A");
    s.put_number(u64::from(tag));
    s.put(b" ");
    match *cmd {
        Command::Capability => s.put(b"CAPABILITY"),
        Command::Noop => s.put(b"NOOP"),
        Command::Idle => s.put(b"IDLE"),
        Command::Logout => s.put(b"LOGOUT"),
        Command::StartTls => s.put(b"STARTTLS"),
        Command::Login { username, password } => {
            s.put(b"LOGIN ");
            astring(s, username, "username")?;
            s.put(b" ");
            astring(s, password, "password")?;
        }
        Command::Authenticate { mechanism, sasl_ir } => authenticate(s, &mechanism, sasl_ir)?,
        Command::Examine { mailbox } => {
            s.put(b"EXAMINE ");
            astring(s, mailbox, "mailbox")?;
        }
        Command::Status { mailbox, items } => {
            s.put(b"STATUS ");
            astring(s, mailbox, "mailbox")?;
            s.put(b" ");
            status_atts(s, items)?;
        }
        Command::Notify {
            mailboxes,
            personal,
        } => notify(s, mailboxes, personal)?,
        Command::Id { pairs } => id(s, pairs)?,
        Command::UidFetchHeaders {
            from_uid,
            fields,
            octets_max,
        } => uid_fetch_headers(s, from_uid, fields, octets_max)?,
    }
    s.put(b"\r\n");
    Ok(())
}

/// ```abnf
/// status     = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"
/// status-att = "MESSAGES" / "UIDNEXT" / "UIDVALIDITY" / "UNSEEN" / ...
/// ```
fn status_atts(s: &mut Sink<'_>, items: StatusRequest) -> Result<(), EncodeError> {
    let wanted = [
        (items.messages, &b"MESSAGES"[..]),
        (items.uidnext, b"UIDNEXT"),
        (items.uidvalidity, b"UIDVALIDITY"),
        (items.unseen, b"UNSEEN"),
    ];
    let mut sep: &[u8] = b"(";
    for (_, name) in wanted.iter().filter(|(on, _)| *on) {
        s.put(sep);
        s.put(name);
        sep = b" ";
    }
    if sep == b"(" {
        return Err(EncodeError::Unencodable { field: "items" });
    }
    s.put(b")");
    Ok(())
}

/// ```abnf
/// notify           = "NOTIFY" SP (notify-set / notify-none)      ; RFC 5465
/// notify-set       = "SET" [status-indicator] SP event-groups
/// event-groups     = event-group *(SP event-group)
/// event-group      = "(" filter-mailboxes SP events ")"
/// filter-mailboxes = "selected" / ... / ("mailboxes" SP one-or-more-mailbox)
/// one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
/// events           = ( "(" event *(SP event) ")" ) / "NONE"
/// ```
///
/// RFC 5465 §5: "If MessageNew is specified, MessageExpunge MUST also be specified".
fn notify(s: &mut Sink<'_>, mailboxes: &[&[u8]], personal: bool) -> Result<(), EncodeError> {
    s.put(b"NOTIFY SET (SELECTED (MessageNew MessageExpunge))");
    if personal {
        s.put(b" (PERSONAL (MessageNew MessageExpunge))");
    } else if let Some((first, rest)) = mailboxes.split_first() {
        s.put(b" (MAILBOXES (");
        astring(s, first, "mailbox")?;
        for m in rest {
            s.put(b" ");
            astring(s, m, "mailbox")?;
        }
        s.put(b") (MessageNew MessageExpunge))");
    }
    Ok(())
}

/// ```abnf
/// uid             = "UID" SP (copy / fetch / search / store)
/// fetch           = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" /
///                   fetch-att / "(" fetch-att *(SP fetch-att) ")")
/// fetch-att       = ... / "UID" /
///                   "BODY" [".PEEK"] section ["<" number "." nz-number ">"]
/// section         = "[" [section-spec] "]"
/// section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
/// header-list     = "(" header-fld-name *(SP header-fld-name) ")"
/// header-fld-name = astring
/// seq-range       = seq-number ":" seq-number
/// ```
///
/// RFC 3501 §6.4.8: "A UID range of 559:* always includes the UID of the last message in
/// the mailbox, even if 559 is higher than any assigned UID value": the reader must drop
/// UIDs below `from_uid`.
fn uid_fetch_headers(
    s: &mut Sink<'_>,
    from_uid: u32,
    fields: &[&[u8]],
    octets_max: u32,
) -> Result<(), EncodeError> {
    if from_uid == 0 {
        return Err(EncodeError::Unencodable { field: "from_uid" });
    }
    if octets_max == 0 {
        return Err(EncodeError::Unencodable {
            field: "octets_max",
        });
    }
    // RFC 5322 §3.6.8: field-name = 1*ftext, printable ASCII except ":"; only the
    // characters that are IMAP atom characters too are taken, so no name needs quoting.
    let field_ok = |f: &&[u8]| !f.is_empty() && f.iter().all(|&b| b != b':' && is_atom_char(b));
    if fields.is_empty() || !fields.iter().all(field_ok) {
        return Err(EncodeError::Unencodable {
            field: "header field",
        });
    }
    s.put(b"UID FETCH ");
    s.put_number(u64::from(from_uid));
    s.put(b":* (UID BODY.PEEK[HEADER.FIELDS (");
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            s.put(b" ");
        }
        s.put(field);
    }
    s.put(b")]<0.");
    s.put_number(u64::from(octets_max));
    s.put(b">)");
    Ok(())
}

/// ```abnf
/// id               = "ID" SP id-params-list               ; RFC 2971
/// id-params-list   = "(" *(string SP nstring) ")" / nil
/// ```
///
/// RFC 2971: "Field strings MUST NOT be longer than 30 octets. Value
/// strings MUST NOT be longer than 1024 octets. Implementations MUST NOT
/// send more than 30 field-value pairs."
fn id(s: &mut Sink<'_>, pairs: &[(&[u8], &[u8])]) -> Result<(), EncodeError> {
    s.put(b"ID ");
    if pairs.is_empty() {
        s.put(b"NIL");
        return Ok(());
    }
    if pairs.len() > 30 {
        return Err(EncodeError::Unencodable { field: "id" });
    }
    let mut sep: &[u8] = b"(";
    for (field, value) in pairs {
        if field.len() > 30 || value.len() > 1024 {
            return Err(EncodeError::Unencodable { field: "id" });
        }
        s.put(sep);
        string(s, field, "id", false)?;
        s.put(b" ");
        string(s, value, "id", false)?;
        sep = b" ";
    }
    s.put(b")");
    Ok(())
}

/// How a string goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Atom,
    Quoted,
    Literal,
}

/// Longest string sent quoted; longer ones go as literals, which no server
/// limits in the same way.
const QUOTED_MAX: usize = 1000;

/// Picks the safest form for `bytes`: atom only for a conservative subset of
/// ATOM-CHAR, quoted for printable ASCII, literal for anything else
/// (CR, LF, other controls, 8-bit bytes, long strings). `None` for NUL,
/// which IMAP4rev1 strings cannot carry at all.
fn form(bytes: &[u8], atom_ok: bool) -> Option<Form> {
    if bytes.contains(&0) {
        return None;
    }
    let printable = |b: &u8| (0x20..0x7f).contains(b);
    let safe_atom = |b: &u8| b.is_ascii_alphanumeric() || b"._@+-/:".contains(b);
    Some(
        if bytes.len() > QUOTED_MAX || !bytes.iter().all(printable) {
            Form::Literal
        } else if atom_ok && !bytes.is_empty() && bytes.iter().all(safe_atom) {
            Form::Atom
        } else {
            Form::Quoted
        },
    )
}

/// ```abnf
/// astring = 1*ASTRING-CHAR / string
/// ```
fn astring(s: &mut Sink<'_>, bytes: &[u8], field: &'static str) -> Result<(), EncodeError> {
    string(s, bytes, field, true)
}

/// ```abnf
/// string  = quoted / literal
/// quoted  = DQUOTE *QUOTED-CHAR DQUOTE
/// QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials
/// literal = "{" number64 ["+"] "}" CRLF *CHAR8          ; RFC 7888 for "+"
/// ```
fn string(
    s: &mut Sink<'_>,
    bytes: &[u8],
    field: &'static str,
    atom_ok: bool,
) -> Result<(), EncodeError> {
    match form(bytes, atom_ok).ok_or(EncodeError::Unencodable { field })? {
        Form::Atom => s.put(bytes),
        Form::Quoted => {
            s.put(b"\"");
            // Runs without specials go in one copy; only `"` and `\` get a
            // backslash in front.
            for run in bytes.split_inclusive(|b| matches!(b, b'"' | b'\\')) {
                match run.split_last() {
                    Some((last @ (b'"' | b'\\'), head)) => {
                        s.put(head);
                        s.put(b"\\");
                        s.put(core::slice::from_ref(last));
                    }
                    _ => s.put(run),
                }
            }
            s.put(b"\"");
        }
        Form::Literal => {
            let sync = match s.literal {
                LiteralMode::Sync => true,
                LiteralMode::NonSync => false,
                LiteralMode::LiteralMinus => bytes.len() > LITERAL_MINUS_MAX,
            };
            s.put(b"{");
            s.put_number(bytes.len() as u64);
            s.put(if sync { &b"}\r\n"[..] } else { b"+}\r\n" });
            if sync {
                s.wait(field)?;
            }
            s.put(bytes);
        }
    }
    Ok(())
}

/// ```abnf
/// authenticate = "AUTHENTICATE" SP auth-type [SP initial-resp]
///                *(CRLF base64)                      ; RFC 4959
/// initial-resp = base64 / "="
/// ```
///
/// Without SASL-IR the command line ends after the mechanism, the client
/// waits for `+`, then sends the base64 response and CRLF (which `command`
/// adds).
fn authenticate(s: &mut Sink<'_>, mech: &Sasl<'_>, sasl_ir: bool) -> Result<(), EncodeError> {
    check_sasl(mech)?;
    s.put(b"AUTHENTICATE ");
    s.put(mech.mechanism_name().as_bytes());
    if sasl_ir {
        s.put(b" ");
    } else {
        s.put(b"\r\n");
        s.wait("mechanism")?;
    }
    let mut b64 = Base64Stream::new(s);
    sasl_plaintext(mech, &mut |piece| b64.feed(piece));
    b64.finish()
}

/// Rejects credentials that would change the meaning of the SASL message:
/// PLAIN separates with NUL, XOAUTH2 and OAUTHBEARER with `%x01`.
fn check_sasl(mech: &Sasl<'_>) -> Result<(), EncodeError> {
    let bad = |field: &'static str, bytes: &[u8], forbidden: &[u8]| {
        if bytes.iter().any(|b| forbidden.contains(b)) {
            Err(EncodeError::Unencodable { field })
        } else {
            Ok(())
        }
    };
    const NUL: &[u8] = &[0];
    const NUL_SOH: &[u8] = &[0, 1];
    match *mech {
        Sasl::Plain { username, password } => {
            bad("username", username, NUL)?;
            bad("password", password, NUL)
        }
        Sasl::XOAuth2 { username, token } => {
            bad("username", username, NUL_SOH)?;
            bad("token", token, NUL_SOH)
        }
        Sasl::OAuthBearer {
            username,
            host,
            token,
            ..
        } => {
            bad("username", username, NUL_SOH)?;
            bad("host", host, NUL_SOH)?;
            bad("token", token, NUL_SOH)
        }
    }
}

/// Feeds the SASL client message to `emit` piece by piece, never building it.
///
/// ```abnf
/// ; RFC 4616
/// message   = [authzid] UTF8NUL authcid UTF8NUL passwd
/// ; Google XOAUTH2
/// xoauth2   = "user=" user %x01 "auth=Bearer " token %x01 %x01
/// ; RFC 7628
/// client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep
/// gs2-header  = gs2-cbind-flag "," [ authzid ] ","   ; RFC 5801
/// authzid     = "a=" saslname
/// kvpair      = key "=" value kvsep
/// kvsep       = %x01
/// ```
fn sasl_plaintext(mech: &Sasl<'_>, emit: &mut dyn FnMut(&[u8])) {
    match *mech {
        Sasl::Plain { username, password } => {
            emit(b"\0");
            emit(username);
            emit(b"\0");
            emit(password);
        }
        Sasl::XOAuth2 { username, token } => {
            emit(b"user=");
            emit(username);
            emit(b"\x01auth=Bearer ");
            emit(token);
            emit(b"\x01\x01");
        }
        Sasl::OAuthBearer {
            username,
            host,
            port,
            token,
        } => {
            emit(b"n,");
            if !username.is_empty() {
                emit(b"a=");
                saslname(username, emit);
            }
            emit(b",\x01");
            if !host.is_empty() {
                emit(b"host=");
                emit(host);
                emit(b"\x01");
            }
            if port != 0 {
                emit(b"port=");
                emit(Digits::new(u64::from(port)).as_bytes());
                emit(b"\x01");
            }
            emit(b"auth=Bearer ");
            emit(token);
            emit(b"\x01\x01");
        }
    }
}

/// ```abnf
/// saslname = 1*(UTF8-char-safe / "=2C" / "=3D")   ; RFC 5801
/// ```
fn saslname(name: &[u8], emit: &mut dyn FnMut(&[u8])) {
    for run in name.split_inclusive(|b| matches!(b, b',' | b'=')) {
        match run.split_last() {
            Some((b',', head)) => {
                emit(head);
                emit(b"=2C");
            }
            Some((b'=', head)) => {
                emit(head);
                emit(b"=3D");
            }
            _ => emit(run),
        }
    }
}

/// Bytes per base64 chunk: a multiple of 3 so that only the last chunk pads.
const B64_CHUNK: usize = 48;

/// Base64 (RFC 4648, padded) written to a sink chunk by chunk. Both stack
/// buffers may hold secret bytes and are zeroized on drop.
struct Base64Stream<'s, 'o> {
    sink: &'s mut Sink<'o>,
    plain: Zeroizing<[u8; B64_CHUNK]>,
    n: usize,
    encoded: Zeroizing<[u8; B64_CHUNK / 3 * 4]>,
    failed: bool,
    /// Plaintext length seen on the counting pass.
    counted: usize,
}

impl<'s, 'o> Base64Stream<'s, 'o> {
    fn new(sink: &'s mut Sink<'o>) -> Self {
        Base64Stream {
            sink,
            plain: Zeroizing::new([0; B64_CHUNK]),
            n: 0,
            encoded: Zeroizing::new([0; B64_CHUNK / 3 * 4]),
            failed: false,
            counted: 0,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        // The counting pass needs only the length, so secrets are not even
        // copied then.
        if !self.sink.write {
            self.counted += bytes.len();
            return;
        }
        while !bytes.is_empty() {
            let room = &mut self.plain[self.n..];
            let take = room.len().min(bytes.len());
            let (now, later) = bytes.split_at(take);
            room[..take].copy_from_slice(now);
            self.n += take;
            bytes = later;
            if self.n == B64_CHUNK {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let plain = &self.plain[..self.n];
        match base64::engine::general_purpose::STANDARD.encode_slice(plain, &mut self.encoded[..]) {
            Ok(w) => self.sink.put(&self.encoded[..w]),
            Err(_) => self.failed = true,
        }
        self.plain.zeroize();
        self.encoded.zeroize();
        self.n = 0;
    }

    fn finish(mut self) -> Result<(), EncodeError> {
        if !self.sink.write {
            let len = base64::encoded_len(self.counted, true);
            let len = len.ok_or(EncodeError::Unencodable { field: "base64" })?;
            self.sink.len += len;
            return Ok(());
        }
        if self.n > 0 {
            self.flush();
        }
        if self.failed {
            return Err(EncodeError::Unencodable { field: "base64" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
