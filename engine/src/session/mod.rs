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

mod auth;
mod caps;
mod config;
mod events;
mod fetch;
mod handover;
mod mailboxes;
mod phase;
mod receive;
mod timer;
mod transmit;

use std::sync::Arc;
use std::time::Duration;

use imap_codec_lite::{
    parse_tag, Code, EncodeError, Framer, Response, Status, StatusItems, Untagged,
};

use self::auth::{AuthMechanism, SASL_CANCELLED};
pub use self::caps::Caps;
pub use self::config::{ConfigError, SessionConfig, IDLE_REFRESH_LIMIT};
use self::events::Outbox;
pub use self::events::{Ready, SessionEvent};
use self::fetch::FetchPlan;
pub use self::fetch::{
    MessageSummary, Preview, FETCH_FIELDS_MAX, HEADER_BLOCK_LEN_MAX, PREVIEW_FIELD_LEN_MAX,
    PREVIEW_MESSAGES_MAX,
};
pub use self::mailboxes::OtherState;
use self::mailboxes::{wire_name, Other};
use self::phase::AfterDone;
pub use self::phase::{AfterCapability, Phase, StatusPurpose};
pub use self::timer::{TimerKind, Timers};
pub use self::transmit::TX_BUF_LEN;
use self::transmit::{CommandKind, Tx, TxQueue};
use crate::pool::BufPool;
use crate::reason::{EndReason, ProtocolError, TlsFailure, Waiting};
use crate::spec::{Secret, Security, Since, WatchOptions, WatchSpec};
use crate::time::Tick;

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
    /// The framer is passing over a response with a literal the session does not want
    /// (see `literal_unwanted`): its bytes are counted down and dropped, never buffered.
    skipping: bool,
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
            skipping: false,
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

    /// The host the session was given, until its mailbox is open (`None` after): the
    /// server name for a STARTTLS handshake.
    pub fn host(&self) -> Option<&str> {
        self.setup.as_deref().map(|s| s.host.as_str())
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
                    if !self.skipping {
                        self.timers.stop(TimerKind::Partial);
                    }
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
        let mechanism = auth::choose(self.caps, oauth);
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
}
