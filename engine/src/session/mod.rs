//! One IMAP connection's state machine, sans-IO: bytes and time in; bytes, deadlines and
//! events out.
//!
//! RFCs to read first: RFC 3501 / RFC 9051 (IMAP), RFC 2177 (IDLE), RFC 2595 and RFC 9051
//! §6.2.1 (STARTTLS), RFC 4959 (SASL-IR), RFC 4616 (PLAIN), RFC 7628 (OAUTHBEARER).
//!
//! # Driving a session
//!
//! The caller (the reactor, or a test driver) owns the socket, TLS and the clock. It MUST:
//! 1. call [`Session::handle_connected`] once the TCP connection is up (for implicit TLS the
//!    handshake then runs below the session; its time counts against the greeting deadline);
//! 2. feed every plaintext byte received, in order, to [`Session::handle_input`];
//! 3. after every `handle_*` call, drain [`Session::poll_transmit`] until it returns 0 and send
//!    the bytes in order, drain [`Session::poll_event`] until `None`, and re-arm its timer with
//!    [`Session::poll_timeout`];
//! 4. call [`Session::handle_timeout`] once `poll_timeout` has passed (a spurious call is a
//!    no-op);
//! 5. when [`Session::wants_tls`] turns true (after STARTTLS was accepted), run the TLS
//!    handshake and then call [`Session::handle_tls_established`];
//! 6. report a closed or failed transport with [`Session::handle_transport_closed`];
//! 7. zeroize the bytes `poll_transmit` wrote once they are sent: they may hold credentials.
//!
//! Once `poll_event` has yielded [`SessionEvent::Ended`] the session is finished: give its
//! buffers back with [`Session::release`] and drop it.

mod caps;
mod fetch;
mod headers;
mod mailboxes;
mod timer;

use std::sync::Arc;
use std::time::Duration;

use imap_codec_lite::{
    encode, parse_response, parse_tag, Code, Command, EncodeError, Encoded, Frame, Framer,
    LiteralMode, Response, Sasl, Status, StatusItems, StatusRequest, Untagged, DONE,
    OAUTHBEARER_ERROR_ACK, SASL_CANCEL, XOAUTH2_ERROR_ACK,
};

pub use self::caps::Caps;
use self::fetch::FetchPlan;
pub use self::fetch::{
    MessageSummary, Preview, FETCH_FIELDS_MAX, HEADER_BLOCK_LEN_MAX, PREVIEW_FIELD_LEN_MAX,
    PREVIEW_MESSAGES_MAX,
};
use self::mailboxes::{wire_name, Other};
pub use self::timer::{TimerKind, Timers};
use crate::pool::BufPool;
use crate::reason::{EndReason, ProtocolError, TlsFailure, Waiting};
use crate::spec::{Secret, Security, Since, WatchOptions, WatchSpec, MAILBOXES_MAX};
use crate::time::Tick;

/// What ID (RFC 2971) says about us, to servers that ask.
const ID_PAIRS: &[(&[u8], &[u8])] = &[
    (b"name", b"imap-push-proxy"),
    (b"version", env!("CARGO_PKG_VERSION").as_bytes()),
];

/// Size of the buffer a caller should lend [`Session::poll_transmit`]. Every command fits it:
/// credentials are bounded by `spec::CREDENTIAL_LEN_MAX` and base64 grows them by 4/3.
pub const TX_BUF_LEN: usize = 16 * 1024;

/// RFC 2177: clients must re-issue IDLE at least every 29 minutes or the server may log
/// them off. The refresh interval must stay below this.
pub const IDLE_REFRESH_LIMIT: Duration = Duration::from_secs(29 * 60);

/// How one session runs: its timing (every duration is a named, documented limit) and
/// its TLS record layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long IDLE runs before DONE and IDLE again. Must be below [`IDLE_REFRESH_LIMIT`].
    pub idle_refresh: Duration,
    /// Up to this much is taken off `idle_refresh`, per session, so refreshes of sessions
    /// started together spread out.
    pub idle_refresh_jitter: Duration,
    /// NOOP interval for servers without IDLE.
    pub poll_interval: Duration,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Deadline for the greeting, CAPABILITY, STARTTLS, the TLS handshake, EXAMINE, the `+`
    /// after IDLE, the answer to DONE and NOOP.
    pub response_timeout: Duration,
    /// Deadline for the answer to LOGIN or AUTHENTICATE (servers delay failed logins).
    pub login_timeout: Duration,
    /// How long a LOGOUT may take before the connection is simply closed.
    pub logout_timeout: Duration,
    /// How long a response that has started arriving may take to complete. Bounds what a
    /// slow-drip server can hold: a lent buffer, for this long at most.
    pub partial_response_timeout: Duration,
    /// After the TLS handshake, keep only the record keys and run our own record layer
    /// (see `engine::tls`): under 1 KB of user space per idle TLS session. `false` keeps
    /// rustls for the whole session (about 6 to 8 KB).
    pub tls_compact: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_refresh: Duration::from_secs(24 * 60),
            idle_refresh_jitter: Duration::from_secs(2 * 60),
            poll_interval: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            response_timeout: Duration::from_secs(30),
            login_timeout: Duration::from_secs(60),
            logout_timeout: Duration::from_secs(5),
            partial_response_timeout: Duration::from_secs(60),
            tls_compact: true,
        }
    }
}

/// Why a [`SessionConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `idle_refresh` is not below [`IDLE_REFRESH_LIMIT`], or is zero.
    IdleRefresh,
    /// `idle_refresh_jitter` is not below `idle_refresh`.
    IdleRefreshJitter,
    /// A timeout or interval is zero.
    ZeroDuration,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigError::IdleRefresh => "idle refresh must be above zero and below 29 minutes",
            ConfigError::IdleRefreshJitter => "idle refresh jitter must be below the refresh",
            ConfigError::ZeroDuration => "timeouts and intervals must be above zero",
        })
    }
}

impl std::error::Error for ConfigError {}

impl SessionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_refresh.is_zero() || self.idle_refresh >= IDLE_REFRESH_LIMIT {
            return Err(ConfigError::IdleRefresh);
        }
        if self.idle_refresh_jitter >= self.idle_refresh {
            return Err(ConfigError::IdleRefreshJitter);
        }
        let all = [
            self.poll_interval,
            self.connect_timeout,
            self.response_timeout,
            self.login_timeout,
            self.logout_timeout,
            self.partial_response_timeout,
        ];
        if all.iter().any(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration);
        }
        Ok(())
    }
}

/// What a session reports. Past-tense facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The mailbox is open and watched (IDLE accepted, or NOOP polling started).
    Ready(Ready),
    /// The message count of watched mailbox `mailbox` (0 is the selected one, then the
    /// others in the order given) rose to `exists`. With a filter, only when a new message
    /// of the selected mailbox matched it. `preview` is set only for the selected mailbox
    /// of a session that asked for previews, and holds the newest matching messages.
    NewMail {
        mailbox: usize,
        exists: u32,
        preview: Option<Box<Preview>>,
    },
    /// The session is over. Always the last event.
    Ended(EndReason),
}

/// What is known once a session is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The server offers IDLE (else the session polls with NOOP).
    pub idle: bool,
    /// The server offers NOTIFY (RFC 5465).
    pub notify: bool,
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
}

/// Where the conversation stands. Names follow RFC 3501's states where one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the transport.
    Connecting,
    /// Waiting for the server greeting.
    Greeting,
    /// CAPABILITY sent; `then` says what follows.
    Capability {
        then: AfterCapability,
    },
    /// STARTTLS sent.
    StartTls,
    /// STARTTLS accepted; the caller runs the TLS handshake.
    TlsHandshake,
    /// LOGIN or AUTHENTICATE sent.
    Authenticating,
    /// ID sent (RFC 2971), when the server offers it.
    Id,
    /// EXAMINE sent.
    Examining,
    /// STATUS sent for the other mailbox `index`.
    Status {
        index: u8,
        purpose: StatusPurpose,
    },
    /// NOTIFY SET sent.
    Notify,
    /// IDLE sent, waiting for `+`.
    IdleStarting,
    /// In IDLE.
    Idling,
    /// DONE sent, waiting for IDLE's tagged OK.
    IdleDone,
    /// NOOP sent.
    Noop,
    /// `UID FETCH` of new messages' header fields sent (filter or preview).
    Fetching,
    /// Waiting for the next NOOP.
    PollWait,
    /// LOGOUT sent.
    LoggingOut,
    Ended,
}

/// Why a round of STATUS commands runs, which says what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusPurpose {
    /// Baselines at setup; a missing mailbox fails the session.
    Setup,
    /// Polling a server without NOTIFY.
    Poll,
    /// Catching up after NOTIFICATIONOVERFLOW, before NOTIFY SET again.
    Resync,
}

/// What follows the tagged OK that answers DONE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterDone {
    Idle,
    StatusPoll,
    Resync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCapability {
    /// Not authenticated yet: STARTTLS or log in.
    Login,
    /// Authenticated: EXAMINE.
    Examine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CommandKind {
    Capability,
    StartTls,
    Auth,
    Id,
    Examine,
    Status(u8),
    Notify,
    Idle,
    Noop,
    Fetch,
    Logout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tx {
    /// A tagged command, from the given part on (parts are split at sync-literal waits).
    Command {
        kind: CommandKind,
        tag: u32,
        part: u8,
    },
    Done,
    /// Answers a SASL error challenge so the server sends its tagged NO.
    SaslCancel,
}

/// `auth_next_part` once the SASL exchange has been cancelled.
const SASL_CANCELLED: u8 = u8::MAX;

/// Most items queued for transmission at once (DONE followed by LOGOUT).
const TX_QUEUE_LEN: usize = 2;

#[derive(Clone, Copy, Debug, Default)]
struct TxQueue {
    items: [Option<Tx>; TX_QUEUE_LEN],
}

impl TxQueue {
    /// Queues `tx`; false if the queue is full, which only a peer that makes us answer
    /// faster than we send can cause.
    #[must_use]
    fn push(&mut self, tx: Tx) -> bool {
        match self.items.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => {
                *slot = Some(tx);
                true
            }
            None => false,
        }
    }

    fn front(&self) -> Option<Tx> {
        self.items[0]
    }

    /// The command with `tag` is still waiting to be sent.
    fn holds_command(&self, tag: u32) -> bool {
        self.items
            .iter()
            .any(|tx| matches!(tx, Some(Tx::Command { tag: t, part: 0, .. }) if *t == tag))
    }

    fn pop(&mut self) {
        self.items.rotate_left(1);
        self.items[TX_QUEUE_LEN - 1] = None;
    }

    fn clear(&mut self) {
        self.items = [None; TX_QUEUE_LEN];
    }

    /// Drops queued commands that are not sent yet, keeping a queued DONE.
    fn clear_commands(&mut self) {
        let done = self.items.contains(&Some(Tx::Done));
        self.clear();
        if done {
            self.items[0] = Some(Tx::Done);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthMechanism {
    Login,
    Plain,
    XOAuth2,
    OAuthBearer,
}

/// What a session needs only until the mailbox is open. Dropped (and its secret zeroized)
/// as soon as it is no longer needed.
#[derive(Debug)]
struct Setup {
    host: String,
    port: u16,
    username: String,
    /// `None` once the last byte of the login command has been handed out.
    secret: Option<Secret>,
    /// The selected mailbox, as sent on the wire.
    mailbox: Vec<u8>,
}

#[derive(Debug, Default)]
struct Outbox {
    ready: Option<Ready>,
    /// Bit `i`: watched mailbox `i` has new mail to report.
    new_mail: u32,
    /// Goes with bit 0's report. Allocated only when a fetch found messages to preview.
    preview: Option<Box<Preview>>,
    ended: Option<EndReason>,
}

/// One IMAP session. See the module docs for the order in which to call its methods.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    security: Security,
    tls_active: bool,
    caps: Caps,
    /// `caps` reflects the current authentication state.
    caps_fresh: bool,
    auth: AuthMechanism,
    /// Parts of the login command (more than one with sync literals or without SASL-IR).
    auth_parts: u8,
    /// Next part of the login command to send when `+` arrives.
    auth_next_part: u8,
    /// Tag of the command in flight, 0 if none.
    tag: u32,
    next_tag: u32,
    waiting: Waiting,
    exists: u32,
    uidvalidity: u32,
    uidnext: u32,
    since: Option<Since>,
    /// EXAMINE completed: EXISTS changes are news from now on.
    examined: bool,
    /// `Ready` is withheld until the server accepts the first IDLE.
    held_ready: Option<Ready>,
    was_ready: bool,
    /// The reason to report once a LOGOUT we started completes.
    logout_reason: EndReason,
    refresh_jitter_ms: u64,
    /// The other watched mailboxes; `None` for the common single-mailbox session.
    others: Option<Box<[Other]>>,
    /// NOTIFY SET was accepted: the server reports the other mailboxes by itself.
    notify_active: bool,
    /// Filter and preview settings; `None` for the common session that reports every
    /// new message at once.
    plan: Option<Box<FetchPlan>>,
    /// The selected mailbox grew and the new messages' header fields are to be fetched
    /// once nothing else is in flight.
    fetch_wanted: bool,
    after_done: AfterDone,
    timers: Timers,
    cfg: Arc<SessionConfig>,
    tx: TxQueue,
    events: Outbox,
    framer: Framer,
    setup: Option<Box<Setup>>,
    /// A partial response, in a buffer lent by the caller's pool.
    pending: Option<Vec<u8>>,
}

/// The session is kept small: a million of them must fit beside their sockets and TLS
/// state (a kernel socket is ~4 KB, a rustls connection 5 to 9 KB, so 384 bytes is under 4%
/// of the total; the framer's copy of its limits is the largest part left to trim). It holds no `String` or `Vec` while idle (`setup` and `pending` are
/// `None`), and shares its configuration.
const SESSION_SIZE_MAX: usize = 384;
const _: () = assert!(
    std::mem::size_of::<Session>() <= SESSION_SIZE_MAX,
    "session state over budget"
);

impl Session {
    /// A session for `spec`, waiting for its transport. `seed` spreads its IDLE refreshes.
    pub fn new(now: Tick, cfg: Arc<SessionConfig>, spec: WatchSpec, seed: u64) -> Session {
        Session::with_options(now, cfg, spec, WatchOptions::default(), seed)
    }

    /// [`Session::new`] with a filter or preview. `options` MUST have been validated
    /// ([`WatchOptions::validate`]).
    pub fn with_options(
        now: Tick,
        cfg: Arc<SessionConfig>,
        spec: WatchSpec,
        options: WatchOptions,
        seed: u64,
    ) -> Session {
        let jitter_ms = cfg.idle_refresh_jitter.as_millis() as u64;
        let mut timers = Timers::default();
        timers.set(TimerKind::Connect, now + cfg.connect_timeout);
        Session {
            phase: Phase::Connecting,
            security: spec.security,
            tls_active: spec.security == Security::Tls,
            caps: Caps::default(),
            caps_fresh: false,
            auth: AuthMechanism::Login,
            auth_parts: 1,
            auth_next_part: 0,
            tag: 0,
            next_tag: 1,
            waiting: Waiting::Connect,
            exists: 0,
            uidvalidity: 0,
            uidnext: 0,
            since: spec.since,
            examined: false,
            held_ready: None,
            was_ready: false,
            logout_reason: EndReason::Unwatched,
            refresh_jitter_ms: if jitter_ms == 0 { 0 } else { seed % jitter_ms },
            others: match spec.mailboxes.get(1..) {
                Some(rest) if !rest.is_empty() => {
                    Some(rest.iter().map(|name| Other::new(name)).collect())
                }
                _ => None,
            },
            notify_active: false,
            plan: FetchPlan::new(options.filter.as_ref(), options.preview).map(Box::new),
            fetch_wanted: false,
            after_done: AfterDone::Idle,
            timers,
            cfg,
            tx: TxQueue::default(),
            events: Outbox::default(),
            framer: Framer::new(),
            setup: Some(Box::new(Setup {
                host: spec.host,
                port: spec.port,
                username: spec.username,
                secret: Some(spec.secret),
                mailbox: spec
                    .mailboxes
                    .first()
                    .map_or_else(|| b"INBOX".to_vec(), |m| wire_name(m)),
            })),
            pending: None,
        }
    }

    // ---- getters ----

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The session reached [`SessionEvent::Ready`] at some point.
    pub fn was_ready(&self) -> bool {
        self.was_ready
    }

    pub fn capabilities(&self) -> Caps {
        self.caps
    }

    /// The message count as last reported by the server.
    pub fn exists(&self) -> u32 {
        self.exists
    }

    /// STARTTLS was accepted: the caller MUST now run the TLS handshake.
    pub fn wants_tls(&self) -> bool {
        self.phase == Phase::TlsHandshake && !self.tls_active
    }

    /// The session still holds the secret (it has not yet handed out the whole login).
    pub fn holds_secret(&self) -> bool {
        self.setup.as_ref().is_some_and(|s| s.secret.is_some())
    }

    /// Every buffer the session owns, for tests that check what it still holds.
    pub fn buffers(&self) -> impl Iterator<Item = &[u8]> {
        let setup = self.setup.as_deref();
        let secret = setup.and_then(|s| s.secret.as_ref()).map(Secret::bytes);
        [
            self.pending.as_deref(),
            secret,
            setup.map(|s| s.username.as_bytes()),
            setup.map(|s| &s.mailbox[..]),
            setup.map(|s| s.host.as_bytes()),
        ]
        .into_iter()
        .flatten()
    }

    // ---- inputs ----

    /// The TCP connection is up.
    pub fn handle_connected(&mut self, now: Tick) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.timers.stop(TimerKind::Connect);
        self.phase = Phase::Greeting;
        self.expect(now, Waiting::Greeting);
    }

    /// The TLS handshake after STARTTLS completed.
    pub fn handle_tls_established(&mut self, now: Tick) {
        if self.phase != Phase::TlsHandshake {
            return;
        }
        self.tls_active = true;
        // RFC 3501 §6.2.1: capabilities learnt before STARTTLS must be discarded.
        self.caps = Caps::default();
        self.caps_fresh = false;
        self.send(
            now,
            CommandKind::Capability,
            Phase::Capability {
                then: AfterCapability::Login,
            },
        );
    }

    /// Plaintext bytes from the server, in order. Complete responses are acted on at once;
    /// a partial one is kept in a buffer borrowed from `pool` until it completes.
    pub fn handle_input(&mut self, now: Tick, input: &[u8], pool: &mut BufPool) {
        if self.phase == Phase::Ended || input.is_empty() {
            return;
        }
        if matches!(self.phase, Phase::TlsHandshake | Phase::Connecting) {
            // Nothing may arrive between STARTTLS's OK and the handshake (CVE-2021-33515 et al.).
            return self.end(EndReason::Protocol(ProtocolError::StartTlsInjection));
        }
        match self.pending.take() {
            None => {
                let used = self.consume(now, input);
                if used < input.len() && self.phase != Phase::Ended {
                    let mut buf = pool.take();
                    buf.extend_from_slice(&input[used..]);
                    self.pending = Some(buf);
                    self.timers
                        .set(TimerKind::Partial, now + self.cfg.partial_response_timeout);
                }
            }
            Some(mut buf) => {
                buf.extend_from_slice(input);
                let used = self.consume(now, &buf);
                buf.drain(..used);
                if buf.is_empty() || self.phase == Phase::Ended {
                    pool.give(buf);
                    self.timers.stop(TimerKind::Partial);
                } else {
                    if used > 0 {
                        // A new response started: it gets its own deadline.
                        self.timers
                            .set(TimerKind::Partial, now + self.cfg.partial_response_timeout);
                    }
                    self.pending = Some(buf);
                }
            }
        }
    }

    /// Acts on every deadline at or before `now`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Tick) {
        for kind in TimerKind::ALL {
            if self.phase == Phase::Ended {
                return;
            }
            if !self.timers.expire(kind, now) {
                continue;
            }
            match kind {
                TimerKind::Connect => self.end(EndReason::Timeout(Waiting::Connect)),
                TimerKind::Response if self.phase == Phase::LoggingOut => {
                    self.end(self.logout_reason)
                }
                TimerKind::Response => self.end(EndReason::Timeout(self.waiting)),
                TimerKind::IdleRefresh if self.phase == Phase::Idling => {
                    self.done(now, AfterDone::Idle)
                }
                TimerKind::Poll if self.phase == Phase::Idling => {
                    self.done(now, AfterDone::StatusPoll)
                }
                TimerKind::Poll if self.phase == Phase::PollWait => {
                    self.send(now, CommandKind::Noop, Phase::Noop);
                }
                TimerKind::Partial => self.end(EndReason::Timeout(Waiting::ResponseEnd)),
                TimerKind::IdleRefresh | TimerKind::Poll => {}
            }
        }
    }

    /// The transport closed or failed. `reason` says how (EOF is [`EndReason::Closed`]).
    pub fn handle_transport_closed(&mut self, _now: Tick, reason: EndReason) {
        match self.phase {
            Phase::Ended => {}
            Phase::LoggingOut => self.end(self.logout_reason),
            _ => self.end(reason),
        }
    }

    /// Ends the session on our side: LOGOUT when logged in, else at once. `reason` is
    /// [`EndReason::Unwatched`] or [`EndReason::Shutdown`].
    pub fn handle_close(&mut self, now: Tick, reason: EndReason) {
        match self.phase {
            Phase::Ended | Phase::LoggingOut => {}
            Phase::Idling | Phase::IdleStarting => {
                self.tx.clear();
                self.queue(Tx::Done);
                self.logout(now, reason);
            }
            Phase::IdleDone
            | Phase::Noop
            | Phase::Fetching
            | Phase::PollWait
            | Phase::Examining
            | Phase::Status { .. }
            | Phase::Notify
            | Phase::Id => self.logout(now, reason),
            _ => self.end(reason),
        }
    }

    // ---- outputs ----

    /// Writes the next bytes to send into `out` and returns how many. Returns 0 when there
    /// is nothing (more) to send. `out` SHOULD be [`TX_BUF_LEN`] long; the caller MUST
    /// zeroize what was written once it is sent.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> usize {
        let mut written = 0;
        while let Some(tx) = self.tx.front() {
            match self.write_tx(tx, &mut out[written..]) {
                Ok(n) => {
                    written += n;
                    self.tx.pop();
                    self.after_transmit(tx);
                }
                Err(EncodeError::BufferTooSmall { .. }) if written > 0 => break,
                Err(_) => {
                    self.end(EndReason::Protocol(ProtocolError::CommandTooLarge));
                    break;
                }
            }
        }
        written
    }

    /// The next event, oldest first. [`SessionEvent::Ended`] is always last.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        if self.held_ready.is_some() {
            // Nothing but the end is reported before Ready.
            return self.events.ended.take().map(SessionEvent::Ended);
        }
        if let Some(ready) = self.events.ready.take() {
            return Some(SessionEvent::Ready(ready));
        }
        if self.events.new_mail != 0 {
            let mailbox = self.events.new_mail.trailing_zeros() as usize;
            self.events.new_mail &= !(1 << mailbox);
            let (exists, preview) = match mailbox {
                0 => (self.exists, self.events.preview.take()),
                i => (
                    self.others
                        .as_deref()
                        .and_then(|o| o.get(i - 1))
                        .map_or(0, Other::messages),
                    None,
                ),
            };
            return Some(SessionEvent::NewMail {
                mailbox,
                exists,
                preview,
            });
        }
        self.events.ended.take().map(SessionEvent::Ended)
    }

    /// The caller could not deliver `event`, the last one [`Session::poll_event`] yielded
    /// (its queue was full): the session takes it back, and `poll_event` yields it again,
    /// first, merged with anything newer of its kind (new mail coalesces per mailbox and
    /// reports the count of the later poll). So a caller MUST NOT wait for room to report.
    pub fn handle_event_refused(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Ready(ready) => self.events.ready = Some(ready),
            SessionEvent::NewMail {
                mailbox, preview, ..
            } => {
                self.events.new_mail |= 1 << mailbox;
                if preview.is_some() {
                    self.events.preview = preview;
                }
            }
            SessionEvent::Ended(reason) => self.events.ended = Some(reason),
        }
    }

    /// The earliest deadline, or [`Tick::NEVER`].
    pub fn poll_timeout(&self) -> Tick {
        self.timers.earliest()
    }

    /// Gives any lent buffer back. Call before dropping an ended session.
    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(buf) = self.pending.take() {
            pool.give(buf);
        }
    }

    // ---- internals: receiving ----

    /// Frames and handles every complete response at the start of `bytes`; returns how many
    /// bytes were used.
    fn consume(&mut self, now: Tick, bytes: &[u8]) -> usize {
        let mut at = 0;
        while self.phase != Phase::Ended {
            match self.framer.advance(&bytes[at..]) {
                Ok(Frame::Complete { len }) => {
                    let message = &bytes[at..at + len];
                    at += len;
                    match parse_response(message) {
                        Ok(response) => self.on_response(now, response),
                        Err(e) => self.end(EndReason::Protocol(ProtocolError::Parse(e))),
                    }
                    if self.phase == Phase::TlsHandshake && at < bytes.len() {
                        self.end(EndReason::Protocol(ProtocolError::StartTlsInjection));
                    }
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => self.end(EndReason::Protocol(ProtocolError::Frame(e))),
            }
        }
        at
    }

    fn on_response(&mut self, now: Tick, response: Response<'_>) {
        match response {
            Response::Untagged(untagged) => self.on_untagged(now, untagged),
            Response::Continuation { .. } => self.on_continuation(now),
            Response::Tagged {
                tag, status, code, ..
            } => {
                let tag = parse_tag(tag);
                if self.phase == Phase::LoggingOut && tag != Some(self.tag) {
                    // Answers to commands ended by our LOGOUT (IDLE, NOOP).
                    return;
                }
                // An answer to a command we have not sent yet is a guess, not an answer.
                if self.tag == 0 || tag != Some(self.tag) || self.tx.holds_command(self.tag) {
                    return self.end(EndReason::Protocol(ProtocolError::UnexpectedTag));
                }
                self.tag = 0;
                self.timers.stop(TimerKind::Response);
                if let Some(Code::Capability(list)) = code {
                    self.caps = Caps::from_list(&list);
                    self.caps_fresh = true;
                }
                self.on_tagged(now, status);
            }
        }
    }

    fn on_untagged(&mut self, now: Tick, untagged: Untagged<'_>) {
        match untagged {
            // A BYE during our own LOGOUT is expected; the tagged OK or the close ends it.
            Untagged::Status {
                status: Status::Bye,
                ..
            } if self.phase != Phase::LoggingOut => self.end(EndReason::Bye),
            Untagged::Status {
                status: Status::Bye,
                ..
            } => {}
            Untagged::Status { status, code, .. } if self.phase == Phase::Greeting => {
                self.on_greeting(now, status, code)
            }
            // RFC 5465 §5.8: the server stopped notifying; catch up and set NOTIFY again.
            Untagged::Status {
                code: Some(Code::NotificationOverflow),
                ..
            } if self.notify_active => {
                self.notify_active = false;
                if self.phase == Phase::Idling {
                    self.done(now, AfterDone::Resync);
                } else {
                    self.after_done = AfterDone::Resync;
                }
            }
            Untagged::Status {
                code: Some(code), ..
            } => self.on_code(code),
            Untagged::Capability(list) => {
                self.caps = Caps::from_list(&list);
                self.caps_fresh = true;
            }
            Untagged::Exists(n) => self.on_exists(now, n),
            Untagged::Fetch { attrs, .. } if self.phase == Phase::Fetching => {
                // The answer is arriving: a round over many new messages may take longer
                // than one response deadline, but each response must come within it.
                self.timers
                    .set(TimerKind::Response, now + self.cfg.response_timeout);
                if let Some(plan) = self.plan.as_mut() {
                    plan.on_fetch(attrs);
                }
            }
            Untagged::MailboxStatus { mailbox, items } => self.on_status(&mailbox, &items),
            Untagged::Expunge(_) => self.exists = self.exists.saturating_sub(1),
            // Keepalives (`* OK Still here`), RECENT, FLAGS, FETCH and anything unknown are
            // not news to us.
            _ => {}
        }
    }

    fn on_code(&mut self, code: Code<'_>) {
        match code {
            Code::UidValidity(v) => self.uidvalidity = v,
            // After EXAMINE, UIDNEXT moves only with what a fetch has seen: a later code
            // must not skip messages not fetched yet.
            Code::UidNext(n) if !self.examined => self.uidnext = n,
            Code::Capability(list) => {
                self.caps = Caps::from_list(&list);
                self.caps_fresh = true;
            }
            _ => {}
        }
    }

    fn on_greeting(&mut self, now: Tick, status: Status, code: Option<Code<'_>>) {
        self.timers.stop(TimerKind::Response);
        if let Some(code) = code {
            self.on_code(code);
        }
        match status {
            Status::Ok if self.caps_fresh => self.after_capability(now),
            Status::Ok => self.send(
                now,
                CommandKind::Capability,
                Phase::Capability {
                    then: AfterCapability::Login,
                },
            ),
            Status::PreAuth if self.security == Security::StartTls && !self.tls_active => {
                // STARTTLS is only allowed before authentication: refuse to go on in clear.
                self.end(EndReason::Tls(TlsFailure::StartTlsRefused))
            }
            Status::PreAuth => {
                self.wipe_secret();
                self.caps_fresh = false;
                self.send(
                    now,
                    CommandKind::Capability,
                    Phase::Capability {
                        then: AfterCapability::Examine,
                    },
                );
            }
            _ => self.end(EndReason::Protocol(ProtocolError::BadGreeting)),
        }
    }

    fn on_exists(&mut self, now: Tick, n: u32) {
        let rose = self.examined && n > self.exists;
        self.exists = n;
        if !rose {
            return;
        }
        if self.plan.is_none() {
            self.events.new_mail |= 1;
            return;
        }
        // Filter or preview: the new messages' header fields decide, fetched once nothing
        // else is in flight (a command in flight picks this up when it completes).
        self.fetch_wanted = true;
        match self.phase {
            Phase::Idling => self.done(now, self.after_done),
            Phase::PollWait => self.start_fetch(now),
            _ => {}
        }
    }

    /// A STATUS response, asked for or sent by NOTIFY.
    fn on_status(&mut self, mailbox: &imap_codec_lite::AString<'_>, items: &StatusItems) {
        let Some(others) = self.others.as_deref_mut() else {
            return;
        };
        if let Some(i) = others.iter().position(|o| o.is(mailbox)) {
            if others[i].update(items) {
                self.events.new_mail |= 1 << (i + 1);
            }
        }
    }

    fn on_continuation(&mut self, now: Tick) {
        match self.phase {
            Phase::IdleStarting => {
                if let Some(ready) = self.held_ready.take() {
                    self.release_ready(ready);
                }
                self.phase = Phase::Idling;
                self.timers.stop(TimerKind::Response);
                if self.after_done == AfterDone::Resync {
                    // An overflow came while IDLE was being set up: catch up at once.
                    return self.done(now, AfterDone::Resync);
                }
                if self.fetch_wanted {
                    // New mail came while IDLE was being set up: fetch it at once.
                    return self.done(now, AfterDone::Idle);
                }
                let refresh = self
                    .cfg
                    .idle_refresh
                    .saturating_sub(Duration::from_millis(self.refresh_jitter_ms));
                self.timers.set(TimerKind::IdleRefresh, now + refresh);
                if self.others.is_some() && !self.notify_active {
                    // No NOTIFY: the other mailboxes are polled with STATUS.
                    self.timers
                        .set(TimerKind::Poll, now + self.cfg.poll_interval);
                }
            }
            // A `+` before we sent what the last one asked for, or after our cancel: the
            // server is not waiting for us, it is pushing.
            Phase::Authenticating
                if self.tx.front().is_some() || self.auth_next_part == SASL_CANCELLED =>
            {
                self.end(EndReason::Protocol(ProtocolError::UnexpectedContinuation))
            }
            Phase::Authenticating if self.auth_next_part < self.auth_parts => {
                self.queue(Tx::Command {
                    kind: CommandKind::Auth,
                    tag: self.tag,
                    part: self.auth_next_part,
                });
            }
            // A SASL challenge after our whole response carries an error (XOAUTH2,
            // OAUTHBEARER): cancel once, and the server answers NO or BAD.
            Phase::Authenticating => {
                self.auth_next_part = SASL_CANCELLED;
                self.queue(Tx::SaslCancel);
            }
            // The `+` for an IDLE that our LOGOUT overtook.
            Phase::LoggingOut => {}
            _ => self.end(EndReason::Protocol(ProtocolError::UnexpectedContinuation)),
        }
    }

    fn on_tagged(&mut self, now: Tick, status: Status) {
        let ok = status == Status::Ok;
        match self.phase {
            Phase::Capability { then } if ok => match then {
                AfterCapability::Login => self.after_capability(now),
                AfterCapability::Examine => self.after_login(now),
            },
            // ID is a courtesy: whatever the answer, go on.
            Phase::Id => self.send(now, CommandKind::Examine, Phase::Examining),
            Phase::Status { index, purpose } if ok => self.after_status(now, index, purpose),
            Phase::Status { .. } => self.end(EndReason::MailboxRejected),
            Phase::Notify => {
                self.notify_active = ok;
                if self.fetch_wanted {
                    self.start_fetch(now);
                } else {
                    self.send(now, CommandKind::Idle, Phase::IdleStarting);
                }
            }
            Phase::StartTls if ok => {
                self.phase = Phase::TlsHandshake;
                self.expect(now, Waiting::TlsHandshake);
            }
            Phase::StartTls => self.end(EndReason::Tls(TlsFailure::StartTlsRefused)),
            Phase::Authenticating if ok => {
                self.wipe_secret();
                if self.caps_fresh {
                    self.after_login(now);
                } else {
                    self.send(
                        now,
                        CommandKind::Capability,
                        Phase::Capability {
                            then: AfterCapability::Examine,
                        },
                    );
                }
            }
            Phase::Authenticating => self.end(EndReason::AuthRejected),
            Phase::Examining if ok => self.on_examined(now),
            Phase::Examining => self.end(EndReason::MailboxRejected),
            // The server ended IDLE by itself, or answered our DONE: idle again.
            Phase::IdleStarting | Phase::Idling | Phase::IdleDone if ok => {
                self.timers.stop(TimerKind::IdleRefresh);
                self.timers.stop(TimerKind::Poll);
                if self.fetch_wanted {
                    // `after_done` stays pending until the fetch is answered.
                    return self.start_fetch(now);
                }
                self.after_idle(now);
            }
            Phase::IdleStarting | Phase::Idling | Phase::IdleDone => {
                self.end(EndReason::Protocol(ProtocolError::IdleRejected))
            }
            Phase::Noop if ok && self.fetch_wanted => self.start_fetch(now),
            Phase::Noop if ok && self.others.is_some() => {
                self.status_round(now, StatusPurpose::Poll)
            }
            Phase::Noop if ok => self.wait_poll(now),
            // NO or BAD to the fetch: report without a preview (a filter fails open).
            Phase::Fetching => self.on_fetched(now, ok),
            Phase::LoggingOut => self.end(self.logout_reason),
            _ => self.end(EndReason::Protocol(ProtocolError::CommandBad)),
        }
    }

    fn on_examined(&mut self, now: Tick) {
        self.setup = None;
        self.examined = true;
        if self.others.is_some() {
            self.status_round(now, StatusPurpose::Setup);
        } else {
            self.finish_setup(now);
        }
    }

    /// The mailboxes are open: report Ready (held until IDLE is accepted) and start
    /// watching.
    fn finish_setup(&mut self, now: Tick) {
        let idle = self.caps.has(Caps::IDLE);
        let ready = Ready {
            idle,
            notify: self.caps.has(Caps::NOTIFY),
            exists: self.exists,
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
        };
        if idle {
            self.held_ready = Some(ready);
        } else {
            self.release_ready(ready);
        }
        self.resume(now);
    }

    /// Nothing is in flight: fetch new messages' header fields if wanted, else go on
    /// watching (IDLE, or wait for the next NOOP).
    fn resume(&mut self, now: Tick) {
        if self.fetch_wanted {
            self.start_fetch(now);
        } else if self.caps.has(Caps::IDLE) {
            self.resume_idle(now);
        } else {
            self.wait_poll(now);
        }
    }

    /// IDLE ended: do what it was ended for.
    fn after_idle(&mut self, now: Tick) {
        let next = std::mem::replace(&mut self.after_done, AfterDone::Idle);
        match next {
            AfterDone::Idle => self.send(now, CommandKind::Idle, Phase::IdleStarting),
            AfterDone::StatusPoll => self.status_round(now, StatusPurpose::Poll),
            AfterDone::Resync => self.status_round(now, StatusPurpose::Resync),
        }
    }

    /// `UID FETCH` from the UIDNEXT known so far.
    fn start_fetch(&mut self, now: Tick) {
        self.fetch_wanted = false;
        let from_uid = self.uidnext.max(1);
        if let Some(plan) = self.plan.as_mut() {
            plan.begin(from_uid);
        }
        self.send(now, CommandKind::Fetch, Phase::Fetching);
    }

    /// The fetch was answered: report what matched, then go on as before it.
    fn on_fetched(&mut self, now: Tick, ok: bool) {
        let verdict = self
            .plan
            .as_mut()
            .map(|plan| plan.finish(ok))
            .unwrap_or_default();
        if let Some(uidnext) = verdict.uidnext {
            self.uidnext = self.uidnext.max(uidnext);
        }
        if verdict.report {
            self.events.new_mail |= 1;
            match (self.events.preview.as_mut(), verdict.preview) {
                (Some(older), Some(newer)) => older.merge_newer(*newer),
                (None, newer) => self.events.preview = newer,
                (Some(_), None) => {}
            }
        }
        if self.fetch_wanted {
            self.start_fetch(now);
        } else if self.caps.has(Caps::IDLE) {
            self.after_idle(now);
        } else if self.others.is_some() {
            self.status_round(now, StatusPurpose::Poll);
        } else {
            self.wait_poll(now);
        }
    }

    /// IDLE again, with NOTIFY SET first when it is wanted and not in force.
    fn resume_idle(&mut self, now: Tick) {
        if self.others.is_some() && self.caps.has(Caps::NOTIFY) && !self.notify_active {
            self.send(now, CommandKind::Notify, Phase::Notify);
        } else {
            self.send(now, CommandKind::Idle, Phase::IdleStarting);
        }
    }

    /// STATUS for every other mailbox, one after the other.
    fn status_round(&mut self, now: Tick, purpose: StatusPurpose) {
        self.send(
            now,
            CommandKind::Status(0),
            Phase::Status { index: 0, purpose },
        );
    }

    fn after_status(&mut self, now: Tick, index: u8, purpose: StatusPurpose) {
        let count = self.others.as_deref().map_or(0, <[Other]>::len);
        let next = index + 1;
        if usize::from(next) < count {
            return self.send(
                now,
                CommandKind::Status(next),
                Phase::Status {
                    index: next,
                    purpose,
                },
            );
        }
        match purpose {
            StatusPurpose::Setup => self.finish_setup(now),
            StatusPurpose::Poll | StatusPurpose::Resync => self.resume(now),
        }
    }

    /// Ends IDLE; `then` says what follows the answer.
    fn done(&mut self, now: Tick, then: AfterDone) {
        self.queue(Tx::Done);
        self.phase = Phase::IdleDone;
        self.after_done = then;
        self.expect(now, Waiting::Done);
    }

    /// Logged in, capabilities known: name ourselves if asked, then open the mailbox.
    fn after_login(&mut self, now: Tick) {
        if self.caps.has(Caps::ID) {
            self.send(now, CommandKind::Id, Phase::Id);
        } else {
            self.send(now, CommandKind::Examine, Phase::Examining);
        }
    }

    fn release_ready(&mut self, ready: Ready) {
        self.was_ready = true;
        self.events.ready = Some(ready);
        let Some(since) = self.since else {
            return;
        };
        let same_uids = since.uidvalidity == ready.uidvalidity;
        if same_uids && ready.uidnext <= since.uidnext {
            return;
        }
        if same_uids && self.plan.is_some() {
            // The messages the app has not seen yet go through the filter and preview.
            self.uidnext = since.uidnext.max(1);
            self.fetch_wanted = true;
        } else {
            // A new UIDVALIDITY: every message is new, and the app must resync anyway.
            self.events.new_mail |= 1;
        }
    }

    // ---- internals: deciding what to send ----

    /// Capabilities are known and we are not authenticated: upgrade to TLS or log in.
    fn after_capability(&mut self, now: Tick) {
        if self.security == Security::StartTls && !self.tls_active {
            if self.caps.has(Caps::STARTTLS) {
                self.send(now, CommandKind::StartTls, Phase::StartTls);
            } else {
                self.end(EndReason::Tls(TlsFailure::StartTlsRefused));
            }
            return;
        }
        let oauth = matches!(
            self.setup.as_ref().and_then(|s| s.secret.as_ref()),
            Some(Secret::OAuth2Token(_))
        );
        let mechanism = if oauth {
            if self.caps.has(Caps::AUTH_OAUTHBEARER) {
                Some(AuthMechanism::OAuthBearer)
            } else if self.caps.has(Caps::AUTH_XOAUTH2) {
                Some(AuthMechanism::XOAuth2)
            } else {
                None
            }
        } else if self.caps.has(Caps::AUTH_PLAIN) && self.caps.has(Caps::SASL_IR) {
            // One round trip, and base64 sidesteps every quoting question.
            Some(AuthMechanism::Plain)
        } else if !self.caps.has(Caps::LOGINDISABLED) {
            // One round trip with LITERAL+, where PLAIN without SASL-IR takes two.
            Some(AuthMechanism::Login)
        } else if self.caps.has(Caps::AUTH_PLAIN) {
            Some(AuthMechanism::Plain)
        } else {
            None
        };
        let Some(mechanism) = mechanism else {
            return self.end(EndReason::AuthUnavailable);
        };
        self.auth = mechanism;
        self.auth_parts = 1;
        self.auth_next_part = 1;
        self.caps_fresh = false;
        self.send(now, CommandKind::Auth, Phase::Authenticating);
    }

    fn send(&mut self, now: Tick, kind: CommandKind, phase: Phase) {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        self.tag = tag;
        self.phase = phase;
        self.queue(Tx::Command { kind, tag, part: 0 });
        let waiting = match kind {
            CommandKind::Capability => Waiting::Capability,
            CommandKind::StartTls => Waiting::StartTls,
            CommandKind::Auth => Waiting::Authentication,
            CommandKind::Id => Waiting::Id,
            CommandKind::Examine => Waiting::Examine,
            CommandKind::Status(_) => Waiting::Status,
            CommandKind::Notify => Waiting::Notify,
            CommandKind::Idle => Waiting::IdleAccepted,
            CommandKind::Noop => Waiting::Noop,
            CommandKind::Fetch => Waiting::Fetch,
            CommandKind::Logout => Waiting::Logout,
        };
        self.expect(now, waiting);
    }

    /// Queues bytes to send. The queue holds a command and a DONE; more can only be asked
    /// for by a server answering faster than we send, which ends the session.
    fn queue(&mut self, tx: Tx) {
        if !self.tx.push(tx) {
            self.end(EndReason::Protocol(ProtocolError::UnexpectedTag));
        }
    }

    fn expect(&mut self, now: Tick, waiting: Waiting) {
        self.waiting = waiting;
        let timeout = match waiting {
            Waiting::Authentication => self.cfg.login_timeout,
            Waiting::Logout => self.cfg.logout_timeout,
            _ => self.cfg.response_timeout,
        };
        self.timers.set(TimerKind::Response, now + timeout);
    }

    fn wait_poll(&mut self, now: Tick) {
        self.phase = Phase::PollWait;
        self.timers
            .set(TimerKind::Poll, now + self.cfg.poll_interval);
    }

    fn logout(&mut self, now: Tick, reason: EndReason) {
        self.logout_reason = reason;
        self.timers.stop(TimerKind::IdleRefresh);
        self.timers.stop(TimerKind::Poll);
        self.tx.clear_commands();
        self.send(now, CommandKind::Logout, Phase::LoggingOut);
    }

    fn end(&mut self, reason: EndReason) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.timers.stop_all();
        self.tx.clear();
        self.setup = None;
        if let Some(plan) = self.plan.as_mut() {
            plan.abandon();
        }
        self.events.ended = Some(reason);
    }

    fn wipe_secret(&mut self) {
        if let Some(setup) = self.setup.as_mut() {
            // `Secret` holds `Zeroizing` buffers: dropping it overwrites them.
            setup.secret = None;
        }
    }

    // ---- internals: encoding ----

    fn write_tx(&mut self, tx: Tx, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (kind, tag, part) = match tx {
            Tx::Done => return copy_into(DONE, out),
            Tx::SaslCancel => {
                // Each mechanism's way to acknowledge an error challenge (RFC 7628 §3.2.3,
                // Google's XOAUTH2); a generic cancel (RFC 3501 §6.2.2) otherwise.
                let ack = match self.auth {
                    AuthMechanism::XOAuth2 => XOAUTH2_ERROR_ACK,
                    AuthMechanism::OAuthBearer => OAUTHBEARER_ERROR_ACK,
                    AuthMechanism::Login | AuthMechanism::Plain => SASL_CANCEL,
                };
                return copy_into(ack, out);
            }
            Tx::Command { kind, tag, part } => (kind, tag, part),
        };
        let encoded = self.encode_command(kind, tag, out)?;
        if kind != CommandKind::Auth {
            return Ok(encoded.len);
        }
        // Split the login at its sync points: part `p` runs from wait `p-1` to wait `p`.
        let waits = encoded.waits();
        self.auth_parts = waits.len() as u8 + 1;
        let start = if part == 0 {
            0
        } else {
            waits[usize::from(part) - 1]
        };
        let end = waits.get(usize::from(part)).copied().unwrap_or(encoded.len);
        out.copy_within(start..end, 0);
        // Whatever was encoded beyond this part must not linger in the caller's buffer.
        out[end - start..encoded.len].fill(0);
        Ok(end - start)
    }

    fn encode_command(
        &self,
        kind: CommandKind,
        tag: u32,
        out: &mut [u8],
    ) -> Result<Encoded, EncodeError> {
        let setup = self.setup.as_deref();
        let command = match kind {
            CommandKind::Capability => Command::Capability,
            CommandKind::StartTls => Command::StartTls,
            CommandKind::Idle => Command::Idle,
            CommandKind::Noop => Command::Noop,
            CommandKind::Logout => Command::Logout,
            CommandKind::Examine => Command::Examine {
                mailbox: setup.map_or(&b"INBOX"[..], |s| &s.mailbox[..]),
            },
            CommandKind::Id => Command::Id { pairs: ID_PAIRS },
            CommandKind::Status(i) => Command::Status {
                mailbox: self
                    .others
                    .as_deref()
                    .and_then(|o| o.get(usize::from(i)))
                    .map_or(&b"INBOX"[..], |o| &o.wire[..]),
                items: StatusRequest {
                    messages: true,
                    uidnext: true,
                    ..StatusRequest::default()
                },
            },
            CommandKind::Fetch => {
                let plan = self.plan.as_deref().ok_or(EncodeError::Unencodable {
                    field: "header fields",
                })?;
                let mut names: [&[u8]; FETCH_FIELDS_MAX] = [&[]; FETCH_FIELDS_MAX];
                let mut count = 0;
                for (slot, field) in names.iter_mut().zip(plan.fields()) {
                    *slot = field;
                    count += 1;
                }
                return encode(
                    tag,
                    &Command::UidFetchHeaders {
                        from_uid: plan.first_uid(),
                        fields: &names[..count],
                        octets_max: HEADER_BLOCK_LEN_MAX,
                    },
                    self.literal_mode(),
                    out,
                );
            }
            CommandKind::Notify => {
                let mut names: [&[u8]; MAILBOXES_MAX] = [&[]; MAILBOXES_MAX];
                let others = self.others.as_deref().unwrap_or(&[]);
                for (slot, other) in names.iter_mut().zip(others) {
                    *slot = &other.wire;
                }
                let count = others.len().min(MAILBOXES_MAX);
                // Dovecot 2.3 never reports a mailbox that NOTIFY names in modified UTF-7
                // (tests/mailboxes.rs shows it), so such a set is watched as PERSONAL and
                // the STATUS responses are matched to our mailboxes by name.
                let personal = others.iter().any(|o| o.wire.contains(&b'&'));
                return encode(
                    tag,
                    &Command::Notify {
                        mailboxes: &names[..count],
                        personal,
                    },
                    self.literal_mode(),
                    out,
                );
            }
            CommandKind::Auth => {
                let setup = setup.ok_or(EncodeError::Unencodable {
                    field: "credentials",
                })?;
                let secret = setup
                    .secret
                    .as_ref()
                    .ok_or(EncodeError::Unencodable {
                        field: "credentials",
                    })?
                    .bytes();
                let username = setup.username.as_bytes();
                let sasl_ir = self.caps.has(Caps::SASL_IR);
                match self.auth {
                    AuthMechanism::Login => Command::Login {
                        username,
                        password: secret,
                    },
                    AuthMechanism::Plain => Command::Authenticate {
                        mechanism: Sasl::Plain {
                            username,
                            password: secret,
                        },
                        sasl_ir,
                    },
                    AuthMechanism::XOAuth2 => Command::Authenticate {
                        mechanism: Sasl::XOAuth2 {
                            username,
                            token: secret,
                        },
                        sasl_ir,
                    },
                    AuthMechanism::OAuthBearer => Command::Authenticate {
                        mechanism: Sasl::OAuthBearer {
                            username,
                            host: setup.host.as_bytes(),
                            port: setup.port,
                            token: secret,
                        },
                        sasl_ir,
                    },
                }
            }
        };
        encode(tag, &command, self.literal_mode(), out)
    }

    fn literal_mode(&self) -> LiteralMode {
        if self.caps.has(Caps::LITERAL_PLUS) {
            LiteralMode::NonSync
        } else if self.caps.has(Caps::LITERAL_MINUS) {
            // RFC 7888: non-synchronizing up to 4096 bytes, synchronizing above.
            LiteralMode::LiteralMinus
        } else {
            LiteralMode::Sync
        }
    }

    fn after_transmit(&mut self, tx: Tx) {
        let Tx::Command { kind, part, .. } = tx else {
            return;
        };
        match kind {
            CommandKind::Auth => {
                self.auth_next_part = part + 1;
                if self.auth_next_part >= self.auth_parts {
                    // The whole login has been handed out: nothing needs the secret any more.
                    self.wipe_secret();
                }
            }
            CommandKind::Examine => self.setup = None,
            _ => {}
        }
    }
}

fn copy_into(bytes: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let dst = out
        .get_mut(..bytes.len())
        .ok_or(EncodeError::BufferTooSmall {
            needed: bytes.len(),
        })?;
    dst.copy_from_slice(bytes);
    Ok(bytes.len())
}
