//! A reactor thread: one `mio::Poll`, a slab of sessions, a timing wheel.
//!
//! The reactor alone owns sockets, TLS, the clock and the thread. Sessions only see bytes and
//! ticks. Tokens carry the slab key and a generation, so an event for a slot that has since
//! been reused is recognised and dropped.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use zeroize::Zeroize;

use crate::connect::{attempt_state, Attempt, Dial, Dialer};
pub use crate::connect::{ConnectFilter, KeepaliveConfig, Sources};
use crate::event::{Event, SessionId};
use crate::handover::Handover;
use crate::histogram::Histogram;
use crate::pool::BufPool;
use crate::reason::EndReason;
use crate::resolve::CONNECTION_ATTEMPT_DELAY;
use crate::session::{Session, SessionConfig, SessionEvent, TX_BUF_LEN};
use crate::spec::{Security, WatchOptions, WatchSpec};
use crate::time::{Clock, Tick};
use crate::tls::{write_some, RecordPool, Tls, TlsClient, TlsError, TlsRead};
use crate::wheel::{Entry, Wheel};

mod handover;
use handover::{Exporting, EXPORT_RECHECK};

/// Token of the reactor's waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
/// Size of the reactor's read buffer.
pub const RX_BUF_LEN: usize = 64 * 1024;
/// Most socket events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Most bytes read from one socket per loop turn. A server that sends faster than we
/// parse would otherwise hold the thread and starve every other session on it; the rest
/// is read on the next turn (the socket goes to the backlog).
pub const READ_BUDGET: usize = 256 * 1024;
/// After a TLS session switches to the compact record layer, the heap its handshake used
/// (the rustls connection, the peer's chain: 5 to 9 KB) is free, and so are the record
/// and line buffers a burst of logins needed beyond the pools' bounds; but glibc keeps the
/// pages resident between the sessions that stay. This long after the first switch, dropped
/// record buffer or session ready of a burst the reactor gives free pages back
/// (`malloc_trim`): at most one
/// trim per interval per reactor, however many handshakes finish, and only when sessions
/// are compact (`tls_compact`). Without it an idle compact session costs 2.7 to 4.6 KB of
/// RSS instead of under 1 KB (density bench).
pub const HEAP_TRIM_DELAY: Duration = Duration::from_secs(1);
/// Most sessions a reactor reserves room for at start. Each reactor reserves its share
/// of `sessions_max`, up to this, in its slab of slots, its wheel's node array and its id
/// map, so that these never double and copy while sessions arrive: the slab and the node
/// array are single allocations reserved as address space, and pages never touched cost
/// no memory (a slot is ~750 bytes: 48 MiB of address space at this bound). Beyond the
/// bound they grow as vectors do. The id map's control bytes (1 per entry) are written at
/// start.
pub const PRESIZE_SESSIONS_MAX: usize = 64 * 1024;
/// How soon a reactor offers again the events it could not queue because the event queue
/// was full. The reactor never waits for the consumer: a session keeps its undelivered
/// events (they coalesce, so they take no more room however long the wait) and goes on
/// being served; this short timer, not a spin, brings the offer back.
pub const EVENT_RETRY_DELAY: Duration = Duration::from_millis(5);

/// Commands from the engine to a reactor.
pub(crate) enum Command {
    Watch {
        id: SessionId,
        spec: WatchSpec,
        options: WatchOptions,
        addrs: Vec<SocketAddr>,
    },
    Unwatch(SessionId),
    /// Hand every session over as it reaches a handover point, until `until`; then
    /// reply with them (see [`crate::handover`]).
    Export {
        until: Instant,
        reply: Sender<Vec<Handover>>,
    },
    /// Go on with handed-over sessions.
    Adopt(Vec<Handover>),
    Shutdown,
}

/// Counters a reactor shares with the engine.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sessions: AtomicUsize,
    pub stale_events: AtomicU64,
    pub loop_turns: AtomicU64,
    /// Read buffers lent to sessions with a partial response, at the end of the last turn.
    pub line_buffers_lent: AtomicUsize,
    /// TLS record buffers lent to connections with a partial record, likewise.
    pub record_buffers_lent: AtomicUsize,
    /// Free heap pages handed back after compact switches (see [`HEAP_TRIM_DELAY`]).
    pub heap_trims: AtomicU64,
    /// Sessions whose TLS switched to the compact record layer, now.
    pub tls_compact: AtomicUsize,
    /// Offers of events that found the event queue full (see [`EVENT_RETRY_DELAY`]).
    pub events_deferred: AtomicU64,
    /// Time each turn takes from the moment `poll` returns to the end of the turn (the
    /// work, not the wait): a long turn delays every other session of the reactor.
    pub turn_time: Histogram,
}

struct Slot {
    id: SessionId,
    generation: u32,
    session: Session,
    sock: TcpStream,
    /// Inline: after the handshake it is the session's only TLS memory (see `tls`).
    tls: Option<Tls>,
    /// Happy Eyeballs state until the connection is up; `sock` is the oldest attempt.
    dialer: Option<Box<Dialer>>,
    connected: bool,
    /// Plain TCP: bytes the socket did not take yet. Boxed: rarely there, and the slot
    /// is what every idle session pays for (8 bytes absent, against a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    parked: Option<Box<Vec<u8>>>,
    /// The deadline this slot is filed under in the wheel, or NEVER.
    filed: Tick,
    /// The session holds events the full event queue refused; the slot is in `deferred`.
    deferred: bool,
}

/// Budget of a slot, what every session pays for while idle: the session (at most 384
/// bytes), its TLS state (at most [`crate::tls::TLS_STATE_BYTES_MAX`]), the socket, and
/// handles (8 bytes each) to what is rarely there: the dialer, parked plaintext. A slab of
/// slots is reserved at start ([`PRESIZE_SESSIONS_MAX`]); only the slots in use are
/// touched.
pub const SLOT_BYTES_MAX: usize = 704;
/// The size of a slot in this build (the density bench prints it).
pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
const _: () = assert!(SLOT_BYTES <= SLOT_BYTES_MAX, "slot over budget");

pub(crate) struct Shared {
    pub config: Arc<SessionConfig>,
    pub keepalive: KeepaliveConfig,
    pub tls: TlsClient,
    pub events: Sender<Event>,
    pub connect_filter: Option<ConnectFilter>,
    pub counters: Arc<Counters>,
    pub live_sessions: Arc<AtomicUsize>,
    pub sources: Arc<Sources>,
}

impl Shared {
    fn dial(&self) -> Dial<'_> {
        Dial {
            filter: self.connect_filter.as_ref(),
            keepalive: &self.keepalive,
            sources: &self.sources,
        }
    }
}

pub(crate) struct Reactor {
    poll: Poll,
    commands: Receiver<Command>,
    shared: Shared,
    clock: Clock,
    slots: Slab<Slot>,
    ids: std::collections::HashMap<SessionId, usize>,
    wheel: Wheel,
    pool: BufPool,
    records: RecordPool,
    /// Where TLS records are encoded before they go to a socket.
    tls_scratch: Vec<u8>,
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    next_generation: u32,
    shutting_down: bool,
    /// Sockets whose read stopped at the budget with input possibly left: edge-triggered
    /// polling will not report them again, so they are read on the next turn.
    backlog: Vec<Token>,
    /// When free heap is next given back, or NEVER (no switch since the last trim).
    trim_due: Tick,
    /// Record buffers the pool had dropped when last looked at.
    records_dropped_seen: u64,
    /// Slots whose session holds events the full event queue refused, offered again each
    /// turn. At most one entry per slot (`Slot::deferred`).
    deferred: Vec<Token>,
    /// `Failed` events of sessions that never got a slot, refused by the full queue. Each
    /// is a session still counted live, so `sessions_max` bounds them.
    unsent: Vec<Event>,
    /// A handover under way: sessions are handed over as they reach a handover point.
    exporting: Option<Exporting>,
    /// When this turn's `poll` returned: the time stamp of the `NewMail` events the turn
    /// parses (what the server measures its push latency from).
    turn_at: Instant,
}

impl Reactor {
    /// A reactor with room for `sessions` sessions reserved (bounded by
    /// [`PRESIZE_SESSIONS_MAX`]).
    pub fn new(
        poll: Poll,
        commands: Receiver<Command>,
        shared: Shared,
        sessions: usize,
    ) -> Reactor {
        let clock = Clock::new();
        let presize = sessions.min(PRESIZE_SESSIONS_MAX);
        Reactor {
            poll,
            commands,
            shared,
            wheel: Wheel::with_capacity(clock.now(), presize),
            clock,
            slots: Slab::with_capacity(presize),
            ids: std::collections::HashMap::with_capacity(presize),
            pool: BufPool::new(),
            records: RecordPool::default(),
            tls_scratch: Vec::with_capacity(TX_BUF_LEN + 1024),
            rx: vec![0; RX_BUF_LEN].into_boxed_slice(),
            tx: vec![0; TX_BUF_LEN].into_boxed_slice(),
            next_generation: 1,
            shutting_down: false,
            backlog: Vec::new(),
            trim_due: Tick::NEVER,
            records_dropped_seen: 0,
            deferred: Vec::new(),
            unsent: Vec::new(),
            exporting: None,
            turn_at: Instant::now(),
        }
    }

    pub fn waker(&self) -> io::Result<Waker> {
        Waker::new(self.poll.registry(), WAKER_TOKEN)
    }

    /// Runs until shut down and every session has ended.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut due: Vec<Entry> = Vec::new();
        let mut more_due = false;
        loop {
            let now = self.clock.now();
            let timeout = if more_due || !self.backlog.is_empty() {
                Some(Duration::ZERO)
            } else {
                let wake = self.wheel.next_wake(now).map(|t| t.since(now));
                let trim = (self.trim_due != Tick::NEVER).then(|| self.trim_due.since(now));
                let retry = self.holds_events().then_some(EVENT_RETRY_DELAY);
                let export = self.exporting.is_some().then_some(EXPORT_RECHECK);
                wake.into_iter()
                    .chain(trim)
                    .chain(retry)
                    .chain(export)
                    .min()
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    // A broken epoll instance cannot be recovered: end every session.
                    self.end_all(EndReason::Io(e.kind()));
                    return;
                }
            }
            self.turn_at = Instant::now();
            self.shared
                .counters
                .loop_turns
                .fetch_add(1, Ordering::Relaxed);
            let now = self.clock.now();
            for event in events.iter() {
                if event.token() == WAKER_TOKEN {
                    self.drain_commands(now);
                } else {
                    self.on_socket_event(now, event.token());
                }
            }
            for token in std::mem::take(&mut self.backlog) {
                if let Some(key) = self.live_key(token) {
                    self.read(now, key);
                    self.drive(now, key);
                }
            }
            self.offer_deferred(now);
            due.clear();
            // An entry is stale once its session is gone or has filed an earlier
            // deadline since (see `on_timer`): the wheel drops it when it passes it.
            let slots = &self.slots;
            more_due = self.wheel.expire(now, &mut due, |entry| {
                let (key, generation) = split_token(Token(entry.key as usize));
                slots
                    .get(key)
                    .is_some_and(|s| s.generation == generation && s.filed == entry.deadline)
            });
            for entry in &due {
                self.on_timer(now, *entry);
            }
            self.export_ready(now);
            let dropped = self.records.dropped();
            if dropped != self.records_dropped_seen {
                self.records_dropped_seen = dropped;
                self.schedule_trim(now);
            }
            if now >= self.trim_due {
                self.trim_due = Tick::NEVER;
                trim_heap();
                self.shared
                    .counters
                    .heap_trims
                    .fetch_add(1, Ordering::Relaxed);
            }
            let counters = &self.shared.counters;
            counters
                .line_buffers_lent
                .store(self.pool.lent(), Ordering::Relaxed);
            counters
                .record_buffers_lent
                .store(self.records.lent(), Ordering::Relaxed);
            counters.turn_time.record(self.turn_at.elapsed());
            if self.shutting_down && self.slots.is_empty() && self.unsent.is_empty() {
                return;
            }
        }
    }

    fn drain_commands(&mut self, now: Tick) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Watch {
                    id,
                    spec,
                    options,
                    addrs,
                } => self.watch(now, id, (spec, options), addrs),
                Command::Unwatch(id) => {
                    if let Some(&key) = self.ids.get(&id) {
                        self.slots[key]
                            .session
                            .handle_close(now, EndReason::Unwatched);
                        self.drive(now, key);
                    }
                }
                Command::Export { until, reply } => {
                    let wait = until.saturating_duration_since(Instant::now());
                    self.exporting = Some(Exporting {
                        until: now + wait,
                        reply,
                        done: Vec::new(),
                    });
                    self.export_ready(now);
                }
                Command::Adopt(sessions) => {
                    for handover in sessions {
                        self.adopt(now, handover);
                    }
                    // The new process read an image and a journal to get here: that
                    // heap is free now, and glibc keeps it resident until a trim.
                    self.schedule_trim(now);
                }
                Command::Shutdown => {
                    self.shutting_down = true;
                    let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.slots[key]
                            .session
                            .handle_close(now, EndReason::Shutdown);
                        self.drive(now, key);
                    }
                }
            }
        }
    }

    fn watch(
        &mut self,
        now: Tick,
        id: SessionId,
        (spec, options): (WatchSpec, WatchOptions),
        addrs: Vec<SocketAddr>,
    ) {
        let security = spec.security;
        let config = self.shared.config.clone();
        let mut session = Session::with_options(now, config, spec, options, splitmix(id.0));
        if self.shutting_down {
            session.handle_close(now, EndReason::Shutdown);
            return self.emit_end(id, session);
        }
        let tls = if security == Security::Tls {
            match Tls::new(&self.shared.tls, session.host().unwrap_or_default()) {
                Ok(tls) => Some(tls),
                Err(failure) => {
                    session.handle_transport_closed(now, EndReason::Tls(failure));
                    return self.emit_end(id, session);
                }
            }
        } else {
            None
        };
        let mut dialer = Box::new(Dialer::new(addrs));
        let Some(sock) = dialer.start_next(self.shared.dial()) else {
            session.handle_transport_closed(now, dialer.failure());
            return self.emit_end(id, session);
        };
        if !dialer.pending.is_empty() {
            dialer.next_at = now + CONNECTION_ATTEMPT_DELAY;
        }
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let mut slot = Slot {
            id,
            generation,
            session,
            sock,
            tls,
            dialer: Some(dialer),
            connected: false,
            parked: None,
            filed: Tick::NEVER,
            deferred: false,
        };
        let token = token_for(key, generation);
        if let Err(e) = self.poll.registry().register(
            &mut slot.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            slot.session
                .handle_transport_closed(now, EndReason::Io(e.kind()));
            return self.emit_end(id, slot.session);
        }
        entry.insert(slot);
        self.ids.insert(id, key);
        self.shared
            .counters
            .sessions
            .fetch_add(1, Ordering::Relaxed);
        self.drive(now, key);
    }

    fn on_socket_event(&mut self, now: Tick, token: Token) {
        let Some(key) = self.live_key(token) else {
            self.shared
                .counters
                .stale_events
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !self.slots[key].connected && !self.finish_connect(now, key) {
            return self.drive(now, key);
        }
        self.flush(now, key);
        if !self.slots[key].session.is_ended() {
            self.read(now, key);
        }
        self.drive(now, key);
    }

    /// Checks the connect attempts in flight: the first one up wins and the others are
    /// closed; a failed one makes room for the next address at once (RFC 8305 section 5).
    /// Returns true once connected.
    fn finish_connect(&mut self, now: Tick, key: usize) -> bool {
        let slot = &mut self.slots[key];
        let Some(dialer) = slot.dialer.as_mut() else {
            return false;
        };
        let registry = self.poll.registry();
        let mut failed = false;
        if dialer.primary_alive {
            match attempt_state(&slot.sock) {
                Attempt::Connected => return self.connected(now, key),
                Attempt::InProgress => {}
                Attempt::Failed(kind) => {
                    let _ = registry.deregister(&mut slot.sock);
                    dialer.primary_alive = false;
                    dialer.last_error = kind;
                    failed = true;
                }
            }
        }
        let mut i = 0;
        while i < dialer.racers.len() {
            match attempt_state(&dialer.racers[i]) {
                Attempt::InProgress => i += 1,
                Attempt::Connected => {
                    let winner = dialer.racers.swap_remove(i);
                    let mut old = std::mem::replace(&mut slot.sock, winner);
                    let _ = registry.deregister(&mut old);
                    return self.connected(now, key);
                }
                Attempt::Failed(kind) => {
                    let mut sock = dialer.racers.swap_remove(i);
                    let _ = registry.deregister(&mut sock);
                    dialer.last_error = kind;
                    failed = true;
                }
            }
        }
        if !dialer.primary_alive && !dialer.racers.is_empty() {
            // The oldest racer takes the place of the failed first attempt.
            let next = dialer.racers.remove(0);
            slot.sock = next;
            dialer.primary_alive = true;
        }
        if failed {
            self.start_attempt(now, key);
        }
        false
    }

    /// The slot's socket is up: the other attempts are closed. Returns true.
    fn connected(&mut self, now: Tick, key: usize) -> bool {
        let slot = &mut self.slots[key];
        if let Some(mut dialer) = slot.dialer.take() {
            for mut racer in dialer.racers.drain(..) {
                let _ = self.poll.registry().deregister(&mut racer);
            }
        }
        slot.connected = true;
        slot.session.handle_connected(now);
        true
    }

    /// Starts a connect to the next address while the others stay in flight; ends the
    /// session when no address is left and nothing is in flight.
    fn start_attempt(&mut self, now: Tick, key: usize) {
        let slot = &mut self.slots[key];
        let Some(dialer) = slot.dialer.as_mut() else {
            return;
        };
        let token = token_for(key, slot.generation);
        while let Some(mut sock) = dialer.start_next(self.shared.dial()) {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut sock, token, interest) {
                dialer.last_error = e.kind();
                continue;
            }
            if dialer.primary_alive {
                dialer.racers.push(sock);
            } else {
                slot.sock = sock;
                dialer.primary_alive = true;
            }
            dialer.next_at = match dialer.pending.is_empty() {
                true => Tick::NEVER,
                false => now + CONNECTION_ATTEMPT_DELAY,
            };
            return;
        }
        dialer.next_at = Tick::NEVER;
        if !dialer.primary_alive && dialer.racers.is_empty() {
            let reason = dialer.failure();
            slot.session.handle_transport_closed(now, reason);
        }
    }

    /// Reads until the socket would block, feeding the session.
    fn read(&mut self, now: Tick, key: usize) {
        let slot = &mut self.slots[key];
        let session = &mut slot.session;
        let pool = &mut self.pool;
        if let Some(tls) = slot.tls.as_mut() {
            let was_compact = tls.is_compact();
            let was_ready = session.was_ready();
            let result = tls.pump(
                &mut slot.sock,
                &mut self.records,
                &mut self.tls_scratch,
                READ_BUDGET,
                |plain| {
                    session.handle_input(now, plain, pool);
                    !session.is_ended()
                },
            );
            match result {
                Ok(TlsRead::WouldBlock) => {}
                Ok(TlsRead::Budget) => self.backlog.push(token_for(key, slot.generation)),
                Ok(TlsRead::Closed) => session.handle_transport_closed(now, EndReason::Closed),
                Err(e) => session.handle_transport_closed(now, tls_reason(e)),
            }
            if tls.take_established() {
                session.handle_tls_established(now);
            }
            let switched = !was_compact && tls.is_compact();
            if switched {
                let compact = &self.shared.counters.tls_compact;
                compact.fetch_add(1, Ordering::Relaxed);
            }
            // The switch frees the handshake; reaching IDLE frees the login's buffers.
            if switched || (!was_ready && session.was_ready()) {
                self.schedule_trim(now);
            }
            return;
        }
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                return self.backlog.push(token_for(key, slot.generation));
            }
            match slot.sock.read(&mut self.rx) {
                Ok(0) => return session.handle_transport_closed(now, EndReason::Closed),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    session.handle_input(now, &self.rx[..n], pool);
                    if session.is_ended() || session.wants_tls() {
                        // After STARTTLS's OK the next bytes are TLS: leave them to rustls.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return session.handle_transport_closed(now, EndReason::Io(e.kind())),
            }
        }
    }

    /// Writes whatever is waiting: parked plaintext, or TLS records.
    fn flush(&mut self, now: Tick, key: usize) {
        let slot = &mut self.slots[key];
        let result = if let Some(tls) = slot.tls.as_mut() {
            tls.flush(&mut slot.sock).map_err(tls_reason)
        } else if let Some(mut parked) = slot.parked.take() {
            let result = write_some(&mut slot.sock, &parked).map(|n| {
                parked.drain(..n);
            });
            if parked.is_empty() {
                parked.zeroize();
                self.pool.give(*parked);
            } else {
                slot.parked = Some(parked);
            }
            result.map_err(|e| EndReason::Io(e.kind()))
        } else {
            Ok(())
        };
        if let Err(reason) = result {
            slot.session.handle_transport_closed(now, reason);
        }
    }

    /// Moves a session's outputs to the socket, the event channel and the wheel.
    fn drive(&mut self, now: Tick, key: usize) {
        loop {
            let slot = &mut self.slots[key];
            let n = slot.session.poll_transmit(&mut self.tx);
            if n == 0 {
                break;
            }
            let result = send(slot, &mut self.pool, &mut self.tls_scratch, &self.tx[..n]);
            self.tx[..n].zeroize();
            if let Err(reason) = result {
                slot.session.handle_transport_closed(now, reason);
            }
        }
        self.start_tls_if_wanted(now, key);
        let slot = &mut self.slots[key];
        while let Some(event) = slot.session.poll_event() {
            let ended = matches!(event, SessionEvent::Ended(_));
            let (id, was_ready) = (slot.id, slot.session.was_ready());
            match self
                .shared
                .events
                .try_send(engine_event(id, was_ready, event, self.turn_at))
            {
                Ok(()) | Err(TrySendError::Disconnected(_)) if ended => return self.remove(key),
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(refused)) => {
                    // The consumer is behind: the session keeps the event, and the reactor
                    // serves its other sockets meanwhile.
                    slot.session.handle_event_refused(session_event(refused));
                    self.shared
                        .counters
                        .events_deferred
                        .fetch_add(1, Ordering::Relaxed);
                    if !slot.deferred {
                        slot.deferred = true;
                        self.deferred.push(token_for(key, slot.generation));
                    }
                    break;
                }
            }
        }
        let stagger = slot.dialer.as_ref().map_or(Tick::NEVER, |d| d.next_at);
        let deadline = slot.session.poll_timeout().min(stagger);
        if deadline < slot.filed {
            slot.filed = deadline;
            self.wheel
                .insert(token_for(key, slot.generation).0 as u64, deadline);
        }
    }

    fn start_tls_if_wanted(&mut self, now: Tick, key: usize) {
        let slot = &mut self.slots[key];
        if !slot.session.wants_tls() || slot.tls.is_some() {
            return;
        }
        // The session keeps the host it was given until the mailbox is open.
        let name = slot.session.host().unwrap_or_default();
        match Tls::new(&self.shared.tls, name) {
            Ok(tls) => {
                slot.tls = Some(tls);
                // Sends the ClientHello (and takes anything already there).
                self.read(now, key);
            }
            Err(failure) => slot
                .session
                .handle_transport_closed(now, EndReason::Tls(failure)),
        }
    }

    fn on_timer(&mut self, now: Tick, entry: Entry) {
        let Some(key) = self.live_key(Token(entry.key as usize)) else {
            return;
        };
        let slot = &mut self.slots[key];
        if slot.filed != entry.deadline {
            // Superseded by an earlier filing.
            return;
        }
        slot.filed = Tick::NEVER;
        slot.session.handle_timeout(now);
        if slot.dialer.as_ref().is_some_and(|d| d.next_at <= now) && !slot.session.is_ended() {
            // Happy Eyeballs: the attempts in flight get company, not a cancellation.
            self.start_attempt(now, key);
        }
        self.drive(now, key);
    }

    fn remove(&mut self, key: usize) {
        let mut slot = self.slots.remove(key);
        let _ = self.poll.registry().deregister(&mut slot.sock);
        if let Some(mut dialer) = slot.dialer.take() {
            for mut racer in dialer.racers.drain(..) {
                let _ = self.poll.registry().deregister(&mut racer);
            }
        }
        slot.session.release(&mut self.pool);
        if let Some(tls) = slot.tls.as_mut() {
            tls.release(&mut self.records);
            if tls.is_compact() {
                let compact = &self.shared.counters.tls_compact;
                compact.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(mut parked) = slot.parked.take() {
            parked.zeroize();
            self.pool.give(*parked);
        }
        self.ids.remove(&slot.id);
        self.shared
            .counters
            .sessions
            .fetch_sub(1, Ordering::Relaxed);
        self.shared.live_sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reports the end of a session that never got a slot; kept in `unsent` while the
    /// event queue is full, and still counted live until it is queued.
    fn emit_end(&mut self, id: SessionId, mut session: Session) {
        while let Some(event) = session.poll_event() {
            if let SessionEvent::Ended(reason) = event {
                // An adopted session was ready: its end is a loss, not a failed login.
                let ended = SessionEvent::Ended(reason);
                let was_ready = session.was_ready();
                self.unsent
                    .push(engine_event(id, was_ready, ended, self.turn_at));
            }
        }
        session.release(&mut self.pool);
        self.offer_unsent();
    }

    /// Whether events wait for room in the event queue.
    fn holds_events(&self) -> bool {
        !self.deferred.is_empty() || !self.unsent.is_empty()
    }

    /// Offers again what the full event queue refused before. Stops at the first refusal:
    /// the queue is full for the others too.
    fn offer_deferred(&mut self, now: Tick) {
        self.offer_unsent();
        let tokens = std::mem::take(&mut self.deferred);
        for (i, token) in tokens.iter().enumerate() {
            let Some(key) = self.live_key(*token) else {
                continue;
            };
            self.slots[key].deferred = false;
            self.drive(now, key);
            if !self.deferred.is_empty() {
                self.deferred.extend_from_slice(&tokens[i + 1..]);
                return;
            }
        }
    }

    fn offer_unsent(&mut self) {
        while let Some(event) = self.unsent.pop() {
            match self.shared.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {
                    self.shared.live_sessions.fetch_sub(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(event)) => {
                    self.unsent.push(event);
                    self.shared
                        .counters
                        .events_deferred
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    fn end_all(&mut self, reason: EndReason) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        let now = self.clock.now();
        for key in keys {
            self.slots[key].session.handle_transport_closed(now, reason);
            self.drive(now, key);
        }
    }

    /// Gives free heap back [`HEAP_TRIM_DELAY`] from now, unless a trim is due already.
    fn schedule_trim(&mut self, now: Tick) {
        if self.trim_due == Tick::NEVER && self.shared.tls.is_compact() {
            self.trim_due = now + HEAP_TRIM_DELAY;
        }
    }

    fn live_key(&self, token: Token) -> Option<usize> {
        let (key, generation) = split_token(token);
        match self.slots.get(key) {
            Some(slot) if slot.generation == generation => Some(key),
            _ => None,
        }
    }
}

/// The engine's report of a session's event; `read_at` is when the turn that parsed it
/// began.
fn engine_event(id: SessionId, was_ready: bool, event: SessionEvent, read_at: Instant) -> Event {
    match event {
        SessionEvent::Ready(ready) => Event::Ready { id, ready },
        SessionEvent::NewMail {
            mailbox,
            exists,
            preview,
        } => Event::NewMail {
            id,
            mailbox,
            exists,
            preview,
            read_at,
        },
        SessionEvent::Ended(reason) if was_ready => Event::SessionLost { id, reason },
        SessionEvent::Ended(reason) => Event::Failed { id, reason },
    }
}

/// The session's event an engine event was made from (for handing a refused one back).
fn session_event(event: Event) -> SessionEvent {
    match event {
        Event::Ready { ready, .. } => SessionEvent::Ready(ready),
        Event::NewMail {
            mailbox,
            exists,
            preview,
            ..
        } => SessionEvent::NewMail {
            mailbox,
            exists,
            preview,
        },
        Event::SessionLost { reason, .. } | Event::Failed { reason, .. } => {
            SessionEvent::Ended(reason)
        }
    }
}

fn token_for(key: usize, generation: u32) -> Token {
    Token((key & 0xFFFF_FFFF) | ((generation as usize) << 32))
}

fn split_token(token: Token) -> (usize, u32) {
    (token.0 & 0xFFFF_FFFF, (token.0 >> 32) as u32)
}

/// Sends plaintext: through TLS, or straight to the socket with any unsent tail parked.
fn send(
    slot: &mut Slot,
    pool: &mut BufPool,
    tls_scratch: &mut Vec<u8>,
    bytes: &[u8],
) -> Result<(), EndReason> {
    if let Some(tls) = slot.tls.as_mut() {
        return tls
            .send(&mut slot.sock, tls_scratch, bytes)
            .map_err(tls_reason);
    }
    if let Some(parked) = slot.parked.as_mut() {
        parked.extend_from_slice(bytes);
        return Ok(());
    }
    let n = write_some(&mut slot.sock, bytes).map_err(|e| EndReason::Io(e.kind()))?;
    if n < bytes.len() {
        let mut parked = pool.take();
        parked.extend_from_slice(&bytes[n..]);
        slot.parked = Some(Box::new(parked));
    }
    Ok(())
}

fn tls_reason(e: TlsError) -> EndReason {
    match e {
        TlsError::Io(kind) => EndReason::Io(kind),
        TlsError::Tls(failure) => EndReason::Tls(failure),
    }
}

/// Gives free heap pages back to the system (glibc; elsewhere a no-op).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Spreads session ids into jitter seeds.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
