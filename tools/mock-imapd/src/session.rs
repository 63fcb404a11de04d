//! One IMAP session's protocol state. Pure: no socket, no clock, no
//! allocation of its own (answers go into the caller's `out`).
//!
//! Read first: RFC 3501 sections 3 (states), 6 (commands) and 7
//! (responses), RFC 2177 (IDLE), RFC 4616 (PLAIN), RFC 5465 (NOTIFY).
//!
//! Call order, per complete command framed by [`crate::command::Framer`]:
//! [`Session::handle_command`], then act on the returned [`Effects`] (send
//! `out`, then close or start TLS). A message delivered by the control
//! channel is [`Session::handle_exists`]; the caller then calls
//! [`Session::poll_announce`] unless it holds the session (stalled), and
//! again when it lets it go.

use std::io::Write as _;

use base64::Engine as _;

use crate::command::{self, Command, Str};

/// What every session of one server may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Advertise and accept IDLE.
    pub idle: bool,
    /// Advertise and accept NOTIFY.
    pub notify: bool,
}

/// A misbehaviour a login name asks for (the control channel's `quirk`),
/// given to the session when it logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quirk {
    /// Correct IMAP throughout.
    #[default]
    None,
    /// The first IDLE is accepted; every later one is answered `NO`.
    IdleNo,
    /// Every IDLE is answered `NO`.
    FirstIdleNo,
    /// DONE is never answered (the session reads on).
    SilentDone,
    /// The login is answered with `+ more` lines, endlessly (the reactor
    /// streams them; see [`crate::stream`]).
    AuthContinuations,
}

impl Quirk {
    /// Every quirk, in the control channel's order.
    pub const ALL: [Quirk; 5] = [
        Quirk::None,
        Quirk::IdleNo,
        Quirk::FirstIdleNo,
        Quirk::SilentDone,
        Quirk::AuthContinuations,
    ];

    /// The control channel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Quirk::None => "none",
            Quirk::IdleNo => "idle-no",
            Quirk::FirstIdleNo => "first-idle-no",
            Quirk::SilentDone => "silent-done",
            Quirk::AuthContinuations => "auth-continuations",
        }
    }
}

/// Longest tag kept for a command that answers later (IDLE, AUTHENTICATE
/// with a continuation). Proxies use short tags; a longer one is refused.
pub const TAG_MAX: usize = 22;

/// RFC 3501 section 3 states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Before LOGIN / AUTHENTICATE.
    NotAuthenticated,
    /// Logged in, no mailbox.
    Authenticated,
    /// A mailbox is open (SELECT or EXAMINE).
    Selected,
    /// LOGOUT answered; the connection is closing.
    Logout,
}

/// What the next client line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A tagged command.
    Command,
    /// Only `DONE` ends IDLE (RFC 2177).
    Idling,
    /// The base64 answer to a `+` continuation of AUTHENTICATE PLAIN.
    SaslContinuation,
}

/// The protocol state of one session. Fixed size, no heap.
#[derive(Clone, Debug)]
pub struct Session {
    tag: [u8; TAG_MAX],
    tag_len: u8,
    state: State,
    mode: Mode,
    /// STARTTLS is advertised and accepted (plain listener, TLS available).
    starttls_offered: bool,
    /// NOTIFY SET is in force: new messages are announced at once.
    notify_set: bool,
    /// Messages in the (single, shared-by-all-names) mailbox.
    exists: u32,
    /// The count the client was last told in the selected mailbox.
    announced: u32,
    /// FNV-1a of the login name, 0 before login.
    user_hash: u64,
    quirk: Quirk,
    /// An IDLE was accepted (for [`Quirk::IdleNo`]).
    idled: bool,
}

// Budget: 48 bytes. The slab slot around it must stay well under 256 bytes
// so that 19,000 idle sessions cost a few MiB besides their sockets.
const _: () = assert!(std::mem::size_of::<Session>() <= 48);

/// What the caller MUST do after a `handle_*` call, once `out` is sent.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Close the connection after `out` is flushed (LOGOUT).
    pub close: bool,
    /// Send `out` in plaintext, drop any pipelined input, then start TLS.
    pub start_tls: bool,
    /// The session just logged in; [`Session::user_hash`] is now set.
    pub logged_in: bool,
    /// An IDLE was accepted (`+ idling` is in `out`).
    pub idle_started: bool,
    /// `* N EXISTS` lines in `out` that announce delivered messages.
    pub announced: u32,
}

impl Effects {
    /// Adds the effects of a later command handled in the same batch.
    pub fn merge(&mut self, other: Effects) {
        self.close |= other.close;
        self.start_tls |= other.start_tls;
        self.logged_in |= other.logged_in;
        self.idle_started |= other.idle_started;
        self.announced += other.announced;
    }
}

/// FNV-1a 64 of a login name: how the control channel finds a session by
/// user without the session storing the name.
pub fn user_hash(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // 0 means "not logged in".
    h.max(1)
}

impl Session {
    /// A new session whose mailbox holds `messages` messages.
    pub fn new(messages: u32, starttls_offered: bool) -> Self {
        Session {
            tag: [0; TAG_MAX],
            tag_len: 0,
            state: State::NotAuthenticated,
            mode: Mode::Command,
            starttls_offered,
            notify_set: false,
            exists: messages,
            announced: messages,
            user_hash: 0,
            quirk: Quirk::None,
            idled: false,
        }
    }

    /// Gives the session the misbehaviour its login name asks for; the caller
    /// MUST call it right after a login, before the next command.
    pub fn set_quirk(&mut self, quirk: Quirk) {
        self.quirk = quirk;
    }

    /// RFC 3501 state.
    pub fn state(&self) -> State {
        self.state
    }

    /// IDLE is in progress.
    pub fn is_idling(&self) -> bool {
        self.mode == Mode::Idling
    }

    /// FNV-1a of the login name ([`user_hash`]), 0 before login.
    pub fn user_hash(&self) -> u64 {
        self.user_hash
    }

    /// Messages in the mailbox.
    pub fn exists(&self) -> u32 {
        self.exists
    }

    /// The greeting (RFC 3501 section 7.1.1, with a CAPABILITY code).
    pub fn poll_greeting(&self, policy: Policy, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* OK [");
        self.write_capability(policy, out);
        out.extend_from_slice(b"] mock ready\r\n");
    }

    /// TLS now runs under the session (STARTTLS or implicit TLS).
    pub fn handle_tls_started(&mut self) {
        self.starttls_offered = false;
    }

    /// One message was delivered to this session's mailbox.
    pub fn handle_exists(&mut self) {
        self.exists = self.exists.saturating_add(1);
    }

    /// Writes `* N EXISTS` when there is news and the client may hear it
    /// unasked: during IDLE, or after NOTIFY SET, with a mailbox selected.
    pub fn poll_announce(&mut self, out: &mut Vec<u8>) -> Effects {
        if self.mode == Mode::Idling || (self.notify_set && self.mode == Mode::Command) {
            return self.announce(out);
        }
        Effects::default()
    }

    fn announce(&mut self, out: &mut Vec<u8>) -> Effects {
        if self.state != State::Selected || self.exists <= self.announced {
            return Effects::default();
        }
        let _ = write!(out, "* {} EXISTS\r\n", self.exists);
        self.announced = self.exists;
        Effects {
            announced: 1,
            ..Effects::default()
        }
    }

    /// One whole client line or command, as framed by
    /// [`crate::command::Framer`]. Never panics on any input.
    pub fn handle_command(&mut self, msg: &[u8], policy: Policy, out: &mut Vec<u8>) -> Effects {
        match self.mode {
            Mode::Idling => {
                if trim_eol(msg).eq_ignore_ascii_case(b"DONE") {
                    self.mode = Mode::Command;
                    if self.quirk != Quirk::SilentDone {
                        self.tagged(out, "OK Idle completed");
                    }
                } else {
                    // RFC 2177: the client MUST only send DONE during IDLE.
                    out.extend_from_slice(b"* BAD Expected DONE\r\n");
                }
                Effects::default()
            }
            Mode::SaslContinuation => {
                self.mode = Mode::Command;
                let line = trim_eol(msg);
                if line == b"*" {
                    self.tagged(out, "BAD Authentication cancelled");
                    return Effects::default();
                }
                self.sasl_plain(line, policy, out)
            }
            Mode::Command => {
                let parsed = command::parse(msg);
                let Some(tag) = parsed.tag else {
                    out.extend_from_slice(b"* BAD Malformed command\r\n");
                    return Effects::default();
                };
                self.dispatch(tag, parsed.command, policy, out)
            }
        }
    }

    fn dispatch(
        &mut self,
        tag: &[u8],
        cmd: Command<'_>,
        policy: Policy,
        out: &mut Vec<u8>,
    ) -> Effects {
        let authed = matches!(self.state, State::Authenticated | State::Selected);
        let not_authed = self.state == State::NotAuthenticated;
        match cmd {
            Command::Capability => {
                out.extend_from_slice(b"* ");
                self.write_capability(policy, out);
                out.extend_from_slice(b"\r\n");
                reply(out, tag, "OK CAPABILITY completed");
            }
            Command::Noop => {
                let e = self.announce(out);
                reply(out, tag, "OK NOOP completed");
                return e;
            }
            Command::Logout => {
                self.state = State::Logout;
                out.extend_from_slice(b"* BYE Logging out\r\n");
                reply(out, tag, "OK LOGOUT completed");
                return Effects {
                    close: true,
                    ..Effects::default()
                };
            }
            Command::Id => {
                out.extend_from_slice(b"* ID (\"name\" \"mock-imapd\")\r\n");
                reply(out, tag, "OK ID completed");
            }
            Command::StartTls if not_authed && self.starttls_offered => {
                self.starttls_offered = false;
                reply(out, tag, "OK Begin TLS negotiation now");
                return Effects {
                    start_tls: true,
                    ..Effects::default()
                };
            }
            Command::Login { user } if not_authed => {
                return self.login(tag, user.bytes(), policy, out)
            }
            Command::Authenticate { mechanism, initial } if not_authed => {
                return self.authenticate(tag, mechanism, initial, policy, out)
            }
            Command::Login { .. } | Command::Authenticate { .. } => {
                reply(out, tag, "BAD Already authenticated");
            }
            Command::Enable if authed => {
                out.extend_from_slice(b"* ENABLED\r\n");
                reply(out, tag, "OK ENABLE completed");
            }
            Command::Notify { none } if authed && policy.notify => {
                self.notify_set = !none;
                reply(out, tag, "OK NOTIFY completed");
            }
            Command::Select { read_only } if authed => self.select(tag, read_only, out),
            Command::Status { mailbox, items } if authed => self.status(tag, mailbox, items, out),
            Command::Close if self.state == State::Selected => {
                self.state = State::Authenticated;
                reply(out, tag, "OK CLOSE completed");
            }
            Command::Idle if authed && policy.idle => return self.idle(tag, out),
            Command::Unknown | Command::Notify { .. } | Command::Idle => {
                reply(out, tag, "BAD Unknown command or bad arguments");
            }
            _ => reply(out, tag, "BAD Command not valid in this state"),
        }
        Effects::default()
    }

    fn login(
        &mut self,
        tag: &[u8],
        user: impl Iterator<Item = u8>,
        policy: Policy,
        out: &mut Vec<u8>,
    ) -> Effects {
        self.state = State::Authenticated;
        self.user_hash = user_hash(user);
        out.extend_from_slice(tag);
        out.extend_from_slice(b" OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE");
        self.write_push_caps(policy, out);
        out.extend_from_slice(b"] Logged in\r\n");
        Effects {
            logged_in: true,
            ..Effects::default()
        }
    }

    fn authenticate(
        &mut self,
        tag: &[u8],
        mechanism: &[u8],
        initial: Option<&[u8]>,
        policy: Policy,
        out: &mut Vec<u8>,
    ) -> Effects {
        if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
            reply(out, tag, "NO Unsupported mechanism");
            return Effects::default();
        }
        if !self.keep_tag(tag) {
            reply(out, tag, "BAD Tag too long for mock-imapd");
            return Effects::default();
        }
        match initial {
            Some(ir) => self.sasl_plain(ir, policy, out),
            None => {
                self.mode = Mode::SaslContinuation;
                out.extend_from_slice(b"+ \r\n");
                Effects::default()
            }
        }
    }

    /// `message = [authzid] UTF8NUL authcid UTF8NUL passwd` (RFC 4616),
    /// base64 encoded; `=` is an empty response (RFC 4959).
    fn sasl_plain(&mut self, b64: &[u8], policy: Policy, out: &mut Vec<u8>) -> Effects {
        let mut buf = [0u8; 1024];
        let decoded = match b64 {
            b"=" => Ok(0),
            _ => base64::engine::general_purpose::STANDARD.decode_slice(b64, &mut buf),
        };
        let msg = match decoded {
            Ok(n) => &buf[..n],
            Err(_) => {
                self.tagged(out, "BAD Invalid base64");
                return Effects::default();
            }
        };
        let mut parts = msg.split(|&b| b == 0);
        let (Some(_authzid), Some(authcid), Some(_passwd), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.tagged(out, "NO [AUTHENTICATIONFAILED] Malformed PLAIN message");
            return Effects::default();
        };
        let mut tag = [0u8; TAG_MAX];
        let len = usize::from(self.tag_len);
        tag[..len].copy_from_slice(&self.tag[..len]);
        self.login(&tag[..len], authcid.iter().copied(), policy, out)
    }

    fn select(&mut self, tag: &[u8], read_only: bool, out: &mut Vec<u8>) {
        self.state = State::Selected;
        self.announced = self.exists;
        let n = self.exists;
        out.extend_from_slice(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
        let _ = write!(out, "* {n} EXISTS\r\n* 0 RECENT\r\n");
        out.extend_from_slice(b"* OK [UIDVALIDITY 1] UIDs valid\r\n");
        let _ = write!(
            out,
            "* OK [UIDNEXT {}] Predicted next UID\r\n",
            u64::from(n) + 1
        );
        let text = if read_only {
            "OK [READ-ONLY] EXAMINE completed"
        } else {
            "OK [READ-WRITE] SELECT completed"
        };
        reply(out, tag, text);
    }

    fn status(
        &mut self,
        tag: &[u8],
        mailbox: Str<'_>,
        items: command::StatusItems,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"* STATUS ");
        write_mailbox(mailbox, out);
        out.extend_from_slice(b" (");
        let n = self.exists;
        let mut sep = "";
        let mut item = |out: &mut Vec<u8>, on: bool, name: &str, value: u64| {
            if on {
                let _ = write!(out, "{sep}{name} {value}");
                sep = " ";
            }
        };
        item(out, items.messages, "MESSAGES", u64::from(n));
        item(out, items.recent, "RECENT", 0);
        item(out, items.uidnext, "UIDNEXT", u64::from(n) + 1);
        item(out, items.uidvalidity, "UIDVALIDITY", 1);
        item(out, items.unseen, "UNSEEN", 0);
        out.extend_from_slice(b")\r\n");
        reply(out, tag, "OK STATUS completed");
    }

    fn idle(&mut self, tag: &[u8], out: &mut Vec<u8>) -> Effects {
        if !self.keep_tag(tag) {
            reply(out, tag, "BAD Tag too long for mock-imapd");
            return Effects::default();
        }
        let refused = match self.quirk {
            Quirk::FirstIdleNo => true,
            Quirk::IdleNo => self.idled,
            _ => false,
        };
        if refused {
            reply(out, tag, "NO IDLE refused (quirk)");
            return Effects::default();
        }
        self.idled = true;
        self.mode = Mode::Idling;
        out.extend_from_slice(b"+ idling\r\n");
        // Like Dovecot, news that arrived before IDLE is told at once.
        let mut e = self.announce(out);
        e.idle_started = true;
        e
    }

    fn keep_tag(&mut self, tag: &[u8]) -> bool {
        let Some(dst) = self.tag.get_mut(..tag.len()) else {
            return false;
        };
        dst.copy_from_slice(tag);
        self.tag_len = tag.len() as u8;
        true
    }

    /// A tagged answer to the command whose tag was kept (IDLE, SASL).
    fn tagged(&self, out: &mut Vec<u8>, text: &str) {
        let len = usize::from(self.tag_len);
        reply(out, &self.tag[..len], text);
    }

    fn write_capability(&self, policy: Policy, out: &mut Vec<u8>) {
        out.extend_from_slice(b"CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE");
        self.write_push_caps(policy, out);
        if self.state == State::NotAuthenticated {
            out.extend_from_slice(b" AUTH=PLAIN");
            if self.starttls_offered {
                out.extend_from_slice(b" STARTTLS");
            }
        }
    }

    fn write_push_caps(&self, policy: Policy, out: &mut Vec<u8>) {
        if policy.idle {
            out.extend_from_slice(b" IDLE");
        }
        if policy.notify {
            out.extend_from_slice(b" NOTIFY");
        }
    }
}

fn reply(out: &mut Vec<u8>, tag: &[u8], text: &str) {
    out.extend_from_slice(tag);
    out.push(b' ');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn trim_eol(msg: &[u8]) -> &[u8] {
    let msg = msg.strip_suffix(b"\n").unwrap_or(msg);
    msg.strip_suffix(b"\r").unwrap_or(msg)
}

/// Echoes a mailbox name: atoms and quoted strings as they came, literal
/// contents as a quoted string when safe, else as a literal.
fn write_mailbox(mailbox: Str<'_>, out: &mut Vec<u8>) {
    match mailbox {
        Str::Quoted(q) => {
            out.push(b'"');
            out.extend_from_slice(q);
            out.push(b'"');
        }
        Str::Raw(r)
            if r.iter()
                .all(|&b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\') =>
        {
            out.push(b'"');
            out.extend_from_slice(r);
            out.push(b'"');
        }
        Str::Raw(r) => {
            let _ = write!(out, "{{{}}}\r\n", r.len());
            out.extend_from_slice(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        idle: true,
        notify: true,
    };

    /// Feeds `C:` lines and returns everything the session wrote.
    fn run(s: &mut Session, lines: &[&str]) -> String {
        let mut out = Vec::new();
        for l in lines {
            let _ = s.handle_command(l.as_bytes(), POLICY, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quirks_refuse_idle_and_keep_done_silent() {
        let mut s = Session::new(0, false);
        let _ = run(&mut s, &["a LOGIN u p\r\n", "b EXAMINE INBOX\r\n"]);
        s.set_quirk(Quirk::IdleNo);
        assert_eq!(run(&mut s, &["c IDLE\r\n"]), "+ idling\r\n");
        assert_eq!(run(&mut s, &["DONE\r\n"]), "c OK Idle completed\r\n");
        assert_eq!(
            run(&mut s, &["d IDLE\r\n"]),
            "d NO IDLE refused (quirk)\r\n"
        );
        s.set_quirk(Quirk::SilentDone);
        assert_eq!(run(&mut s, &["e IDLE\r\n"]), "+ idling\r\n");
        assert_eq!(run(&mut s, &["DONE\r\n"]), "");
        assert_eq!(run(&mut s, &["f NOOP\r\n"]), "f OK NOOP completed\r\n");
        let mut first = Session::new(0, false);
        let _ = run(&mut first, &["a LOGIN u p\r\n", "b EXAMINE INBOX\r\n"]);
        first.set_quirk(Quirk::FirstIdleNo);
        assert_eq!(
            run(&mut first, &["c IDLE\r\n"]),
            "c NO IDLE refused (quirk)\r\n"
        );
    }

    #[test]
    fn login_examine_idle_done() {
        let mut s = Session::new(3, false);
        let got = run(
            &mut s,
            &[
                "a LOGIN {4}\r\nuser pw\r\n",
                "b EXAMINE INBOX\r\n",
                "c IDLE\r\n",
            ],
        );
        assert!(got.starts_with(
            "a OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE IDLE NOTIFY] Logged in\r\n"
        ));
        assert!(got.contains("* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n"));
        assert!(got.contains(
            "* OK [UIDNEXT 4] Predicted next UID\r\nb OK [READ-ONLY] EXAMINE completed\r\n"
        ));
        assert!(got.ends_with("+ idling\r\n"));
        assert_eq!(s.user_hash(), user_hash(b"user".iter().copied()));
        s.handle_exists();
        let mut out = Vec::new();
        assert_eq!(s.poll_announce(&mut out).announced, 1);
        assert_eq!(out, b"* 4 EXISTS\r\n");
        assert_eq!(
            run(&mut s, &["NOOP\r\n", "done\r\n"]),
            "* BAD Expected DONE\r\nc OK Idle completed\r\n"
        );
    }

    #[test]
    fn noop_flushes_pending_exists() {
        let mut s = Session::new(0, false);
        let _ = run(&mut s, &["a LOGIN u p\r\n", "b SELECT INBOX\r\n"]);
        s.handle_exists();
        let mut out = Vec::new();
        assert_eq!(
            s.poll_announce(&mut out).announced,
            0,
            "not idling: wait for NOOP"
        );
        let mut out = Vec::new();
        let e = s.handle_command(b"n NOOP\r\n", POLICY, &mut out);
        assert_eq!(e.announced, 1);
        assert_eq!(out, b"* 1 EXISTS\r\nn OK NOOP completed\r\n");
    }

    #[test]
    fn authenticate_plain_with_ir_and_continuation() {
        let mut s = Session::new(0, false);
        let got = run(&mut s, &["a AUTHENTICATE PLAIN AGJvYgBwdw==\r\n"]);
        assert!(got.starts_with("a OK [CAPABILITY"), "{got}");
        assert_eq!(s.user_hash(), user_hash(b"bob".iter().copied()));
        let mut s = Session::new(0, false);
        let got = run(&mut s, &["xy AUTHENTICATE PLAIN\r\n", "AGJvYgBwdw==\r\n"]);
        assert!(got.starts_with("+ \r\nxy OK [CAPABILITY"), "{got}");
        let mut s = Session::new(0, false);
        let got = run(&mut s, &["x AUTHENTICATE PLAIN\r\n", "*\r\n"]);
        assert_eq!(got, "+ \r\nx BAD Authentication cancelled\r\n");
    }

    #[test]
    fn starttls_status_logout_and_unknown() {
        let mut s = Session::new(7, true);
        let mut out = Vec::new();
        s.poll_greeting(POLICY, &mut out);
        assert_eq!(
            out,
            &b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NOTIFY AUTH=PLAIN STARTTLS] mock ready\r\n"[..]
        );
        let mut out = Vec::new();
        assert!(
            s.handle_command(b"t STARTTLS\r\n", POLICY, &mut out)
                .start_tls
        );
        let got = run(
            &mut s,
            &[
                "t2 STARTTLS\r\n",
                "l LOGIN u p\r\n",
                "s STATUS INBOX (UIDNEXT MESSAGES)\r\n",
                "z FROB\r\n",
            ],
        );
        assert!(got.starts_with("t2 BAD"));
        assert!(
            got.contains("* STATUS \"INBOX\" (MESSAGES 7 UIDNEXT 8)\r\ns OK STATUS completed\r\n")
        );
        assert!(got.ends_with("z BAD Unknown command or bad arguments\r\n"));
        let mut out = Vec::new();
        assert!(s.handle_command(b"o LOGOUT\r\n", POLICY, &mut out).close);
    }

    #[test]
    fn no_idle_policy_refuses_idle() {
        let mut s = Session::new(0, false);
        let mut out = Vec::new();
        let policy = Policy {
            idle: false,
            notify: false,
        };
        s.poll_greeting(policy, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("IDLE"));
        for l in [
            "a LOGIN u p\r\n",
            "b IDLE\r\n",
            "c NOTIFY SET (selected MessageNew)\r\n",
        ] {
            let _ = s.handle_command(l.as_bytes(), policy, &mut out);
        }
        let got = String::from_utf8(out).unwrap();
        assert!(
            got.contains("b BAD Unknown") && got.contains("c BAD Unknown"),
            "{got}"
        );
    }

    #[test]
    fn never_panics_on_noise() {
        let mut seed = 0x0123_4567_89ab_cdef_u64;
        let alphabet = b"a {}+1\r\n\" LOGIN IDLE DONE EXAMINE AUTHENTICATE PLAIN = STATUS (*)";
        let mut s = Session::new(0, true);
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let mut buf = [0u8; 32];
            for b in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = alphabet[(seed % alphabet.len() as u64) as usize];
            }
            let _ = s.handle_command(&buf, POLICY, &mut out);
            s.handle_exists();
            let _ = s.poll_announce(&mut out);
            out.clear();
        }
    }

    #[test]
    fn notify_set_announces_without_idle() {
        let mut s = Session::new(0, false);
        let _ = run(
            &mut s,
            &[
                "a LOGIN u p\r\n",
                "b EXAMINE INBOX\r\n",
                "c NOTIFY SET (selected MessageNew)\r\n",
            ],
        );
        s.handle_exists();
        let mut out = Vec::new();
        assert_eq!(s.poll_announce(&mut out).announced, 1);
        let _ = run(&mut s, &["d NOTIFY NONE\r\n"]);
        s.handle_exists();
        let mut out = Vec::new();
        assert_eq!(s.poll_announce(&mut out).announced, 0);
    }
}
