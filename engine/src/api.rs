//! The embedding API: start an engine, watch and unwatch accounts, read events.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Poll, Waker};

pub use crate::event::{Event, SessionId};
use crate::handover::Handover;
pub use crate::reactor::ConnectFilter;
use crate::reactor::{Command, Counters, KeepaliveConfig, Reactor, Shared};
use crate::reason::{EndReason, Waiting};
use crate::resolve::{literal, Lookup, ResolveError, Resolver, ResolverConfig};
use crate::session::{ConfigError, SessionConfig};
use crate::spec::{SpecError, WatchOptions, WatchSpec};
use crate::tls::{client_config_with_suites, TlsClient, TlsSetupError};

/// Default bound of the event channel. When it is full, reactors and the dispatcher keep
/// their events (coalesced in the sessions) and offer them again shortly
/// (`reactor::EVENT_RETRY_DELAY`, counted in [`Stats::events_deferred`]); they never wait
/// for the consumer and never drop an event.
pub const EVENT_QUEUE_LEN: usize = 64 * 1024;
/// Default bound of each command queue: the one from [`Engine::watch`] and
/// [`Engine::unwatch`] to the dispatcher, and the one from the dispatcher to each reactor.
/// When the dispatcher's is full, `watch` refuses with [`WatchError::AtCapacity`] (the
/// caller may retry; it never blocks) and `unwatch` waits for room, which comes within a
/// dispatcher turn: the dispatcher waits only for a reactor's queue, and reactors take
/// their whole queue every turn and never wait themselves.
pub const COMMAND_QUEUE_LEN: usize = 4096;
/// Bound of the queue of DNS answers from the resolver pool to the dispatcher. A resolver
/// thread waits for room; the dispatcher takes answers every turn and never waits long.
pub const LOOKUP_ANSWERS_LEN: usize = 1024;
/// Default most sessions one engine holds.
pub const SESSIONS_MAX: usize = 1_000_000;
/// How long `shutdown` waits for LOGOUTs to complete.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How to run an engine.
#[derive(Clone)]
pub struct EngineConfig {
    /// Reactor threads; 0 means one per core.
    pub reactor_threads: usize,
    pub session: SessionConfig,
    pub keepalive: KeepaliveConfig,
    /// Trust the Mozilla root certificates (webpki-roots).
    pub webpki_roots: bool,
    /// Extra trusted roots, PEM.
    pub extra_ca_file: Option<PathBuf>,
    /// Extra trusted roots, DER (for embedders and tests).
    pub extra_roots_der: Vec<Vec<u8>>,
    /// The TLS cipher suites offered, and so the protocol versions; empty: every suite of
    /// rustls's ring provider (TLS 1.3 and 1.2, AES-GCM and ChaCha20-Poly1305).
    pub tls_cipher_suites: Vec<rustls::SupportedCipherSuite>,
    pub event_queue_len: usize,
    /// Bound of each command queue ([`COMMAND_QUEUE_LEN`]).
    pub command_queue_len: usize,
    pub sessions_max: usize,
    pub connect_filter: Option<ConnectFilter>,
    /// Local addresses to connect from, in turn; a source whose ports toward a
    /// destination are exhausted moves on to the next. Empty: the system chooses.
    pub bind_addresses: Vec<IpAddr>,
    /// The pool that resolves IMAP host names ([`Engine::resolver`]).
    pub resolver: ResolverConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            reactor_threads: 0,
            session: SessionConfig::default(),
            keepalive: KeepaliveConfig::default(),
            webpki_roots: true,
            extra_ca_file: None,
            extra_roots_der: Vec::new(),
            tls_cipher_suites: Vec::new(),
            event_queue_len: EVENT_QUEUE_LEN,
            command_queue_len: COMMAND_QUEUE_LEN,
            sessions_max: SESSIONS_MAX,
            connect_filter: None,
            bind_addresses: Vec::new(),
            resolver: ResolverConfig::default(),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("reactor_threads", &self.reactor_threads)
            .field("session", &self.session)
            .field("sessions_max", &self.sessions_max)
            .field("connect_filter", &self.connect_filter.is_some())
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// What [`Engine::export`] handed over.
#[derive(Debug, Default)]
pub struct Exported {
    /// The sessions handed over, each with its open socket.
    pub sessions: Vec<Handover>,
    /// Sessions that stayed with the engine: no handover point in time, or not on the
    /// compact TLS layer. They go on being served.
    pub left: usize,
}

/// How much longer than the handover bound [`Engine::export`] waits for a reactor's reply
/// (a reactor turn at most, in practice).
const EXPORT_REPLY_SLACK: Duration = Duration::from_secs(2);

/// Why an engine did not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Tls(TlsSetupError),
    Io(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid session config: {e}"),
            StartError::Tls(e) => write!(f, "TLS setup: {e}"),
            StartError::Io(e) => write!(f, "could not start a reactor: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Why `watch` refused a spec at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchError {
    Spec(SpecError),
    /// The engine holds `sessions_max` sessions already, or its command queue is full
    /// ([`COMMAND_QUEUE_LEN`]): a burst of watches faster than the dispatcher takes them.
    AtCapacity,
    /// The engine is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchError::Spec(e) => write!(f, "invalid watch spec: {e}"),
            WatchError::AtCapacity => f.write_str("the engine is at capacity"),
            WatchError::ShuttingDown => f.write_str("the engine is shutting down"),
        }
    }
}

impl std::error::Error for WatchError {}

/// Gauges and counters of a running engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions watched or being set up (including those waiting for DNS).
    pub live_sessions: usize,
    /// Sessions holding a reactor slot.
    pub reactor_sessions: usize,
    /// Socket events for slots that no longer exist (dropped).
    pub stale_events: u64,
    pub loop_turns: u64,
    /// Read buffers lent to sessions with a partial response (0 when all are idle).
    pub line_buffers_lent: usize,
    /// TLS record buffers lent to connections with a partial record (0 when all are idle).
    pub record_buffers_lent: usize,
    /// TLS sessions running on the compact record layer (rustls dropped after the
    /// handshake; see `SessionConfig::tls_compact`).
    pub tls_compact_sessions: usize,
    /// Times free heap was given back after compact switches (`reactor::HEAP_TRIM_DELAY`).
    pub heap_trims: u64,
    /// Times a reactor found the event queue full and kept a session's events for a later
    /// turn (`reactor::EVENT_RETRY_DELAY`) instead of waiting for the consumer.
    pub events_deferred: u64,
    /// How long reactor turns take (the work after `poll` returns), all reactors merged.
    pub turn_time: crate::histogram::HistogramSnapshot,
}

struct ReactorHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

enum Dispatch {
    Watch(SessionId, WatchSpec, WatchOptions),
    Unwatch(SessionId),
}

/// A running engine. Dropping it shuts it down (see [`Engine::shutdown`]).
pub struct Engine {
    reactors: Arc<Vec<ReactorHandle>>,
    resolver: Resolver,
    dispatch: Option<Sender<Dispatch>>,
    dispatcher: Option<JoinHandle<()>>,
    events: Receiver<Event>,
    next_id: AtomicU64,
    live_sessions: Arc<AtomicUsize>,
    sessions_max: usize,
}

impl Engine {
    /// Starts the reactor threads, the resolver pool and the dispatcher that hands
    /// resolved sessions to the reactors.
    pub fn start(config: EngineConfig) -> Result<Engine, StartError> {
        config.session.validate().map_err(StartError::Config)?;
        let tls = client_config_with_suites(
            config.webpki_roots,
            config.extra_ca_file.as_deref(),
            &config.extra_roots_der,
            &config.tls_cipher_suites,
        )
        .map_err(StartError::Tls)?;
        let tls = TlsClient::new(tls, config.session.tls_compact);
        let threads = match config.reactor_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (event_tx, events) = crossbeam_channel::bounded(config.event_queue_len.max(1));
        let live_sessions = Arc::new(AtomicUsize::new(0));
        let sources = Arc::new(crate::reactor::Sources::new(config.bind_addresses.clone()));
        let mut reactors = Vec::with_capacity(threads);
        for index in 0..threads {
            let poll = Poll::new().map_err(StartError::Io)?;
            let (commands, command_rx) =
                crossbeam_channel::bounded(config.command_queue_len.max(1));
            let counters = Arc::new(Counters::default());
            let shared = Shared {
                config: Arc::new(config.session),
                keepalive: config.keepalive,
                tls: tls.clone(),
                events: event_tx.clone(),
                connect_filter: config.connect_filter.clone(),
                counters: counters.clone(),
                live_sessions: live_sessions.clone(),
                sources: sources.clone(),
            };
            // Each reactor's share of the sessions, rounded up.
            let share = config.sessions_max.div_ceil(threads);
            let reactor = Reactor::new(poll, command_rx, shared, share);
            let waker = Arc::new(reactor.waker().map_err(StartError::Io)?);
            let thread = std::thread::Builder::new()
                .name(format!("imap-reactor-{index}"))
                .spawn(move || reactor.run())
                .map_err(StartError::Io)?;
            reactors.push(ReactorHandle {
                commands,
                waker,
                counters,
                thread: Some(thread),
            });
        }
        let reactors = Arc::new(reactors);
        let resolver = Resolver::start(config.resolver).map_err(StartError::Io)?;
        let (dispatch, dispatch_rx) = crossbeam_channel::bounded(config.command_queue_len.max(1));
        let dispatcher = {
            let dispatcher = Dispatcher {
                reactors: reactors.clone(),
                resolver: resolver.clone(),
                filter: config.connect_filter.clone(),
                events: event_tx,
                live: live_sessions.clone(),
                resolving: HashMap::new(),
                unsent: Vec::new(),
            };
            std::thread::Builder::new()
                .name("imap-dispatch".into())
                .spawn(move || dispatcher.run(&dispatch_rx))
                .map_err(StartError::Io)?
        };
        Ok(Engine {
            reactors,
            resolver,
            dispatch: Some(dispatch),
            dispatcher: Some(dispatcher),
            events,
            next_id: AtomicU64::new(1),
            live_sessions,
            sessions_max: config.sessions_max,
        })
    }

    /// Starts watching an account. Returns at once; `Ready` or `Failed` for the returned id
    /// follows on [`Engine::events`]. The credentials move into the engine and are wiped as
    /// soon as the login command has been written.
    pub fn watch(&self, spec: WatchSpec) -> Result<SessionId, WatchError> {
        self.watch_with(spec, WatchOptions::default())
    }

    /// [`Engine::watch`] with a filter or a preview ([`WatchOptions`]).
    pub fn watch_with(
        &self,
        spec: WatchSpec,
        options: WatchOptions,
    ) -> Result<SessionId, WatchError> {
        spec.validate().map_err(WatchError::Spec)?;
        options.validate().map_err(WatchError::Spec)?;
        let dispatch = self.dispatch.as_ref().ok_or(WatchError::ShuttingDown)?;
        let live = self.live_sessions.fetch_add(1, Ordering::Relaxed);
        if live >= self.sessions_max {
            self.live_sessions.fetch_sub(1, Ordering::Relaxed);
            return Err(WatchError::AtCapacity);
        }
        let id = SessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        match dispatch.try_send(Dispatch::Watch(id, spec, options)) {
            Ok(()) => Ok(id),
            // The spec (and its secret) is dropped here, zeroized.
            Err(e) => {
                self.live_sessions.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => Err(WatchError::AtCapacity),
                    TrySendError::Disconnected(_) => Err(WatchError::ShuttingDown),
                }
            }
        }
    }

    /// Ends a session: DONE, LOGOUT, close. Its `SessionLost { reason: Unwatched }` (or
    /// `Failed`) follows. Unknown or ended ids are ignored. Waits for room when the command
    /// queue is full ([`COMMAND_QUEUE_LEN`]), which is never long.
    pub fn unwatch(&self, id: SessionId) {
        if let Some(dispatch) = &self.dispatch {
            let _ = dispatch.send(Dispatch::Unwatch(id));
        }
    }

    /// Hands over every session that is at a handover point now or reaches one within
    /// `bound` ([`crate::handover::HANDOVER_WAIT`]): each leaves its reactor with its socket
    /// open and comes back as a [`Handover`]. The caller SHOULD have stopped calling
    /// `watch` (a session still logging in is never handed over). Sessions handed over
    /// may be given back with [`Engine::adopt`], to this engine or another.
    pub fn export(&self, bound: Duration) -> Exported {
        let until = Instant::now() + bound;
        let (reply, replies) = crossbeam_channel::bounded(self.reactors.len());
        for r in self.reactors.iter() {
            let command = Command::Export {
                until,
                reply: reply.clone(),
            };
            if r.commands.send(command).is_ok() {
                let _ = r.waker.wake();
            }
        }
        drop(reply);
        let mut sessions = Vec::new();
        let give_up = until + EXPORT_REPLY_SLACK;
        for _ in 0..self.reactors.len() {
            let wait = give_up.saturating_duration_since(Instant::now());
            match replies.recv_timeout(wait) {
                Ok(done) => sessions.extend(done),
                Err(_) => break,
            }
        }
        let live = self.live_sessions.load(Ordering::Relaxed);
        Exported {
            sessions,
            left: live,
        }
    }

    /// Goes on with sessions handed over by [`Engine::export`] (of this process or an
    /// earlier one): each keeps its [`SessionId`], and later `watch`es get fresh ones.
    /// A session that cannot be registered ends at once with `SessionLost`. Adopted
    /// sessions count against `sessions_max` like watched ones, and may exceed it: they
    /// were live already.
    pub fn adopt(&self, sessions: Vec<Handover>) {
        let highest = sessions.iter().map(|h| h.id.0).max().unwrap_or(0);
        self.next_id.fetch_max(highest + 1, Ordering::Relaxed);
        self.live_sessions
            .fetch_add(sessions.len(), Ordering::Relaxed);
        let n = self.reactors.len() as u64;
        let mut per_reactor: Vec<Vec<Handover>> = (0..n).map(|_| Vec::new()).collect();
        for handover in sessions {
            per_reactor[(handover.id.0 % n) as usize].push(handover);
        }
        for (r, batch) in self.reactors.iter().zip(per_reactor) {
            if batch.is_empty() {
                continue;
            }
            // Reactors take their whole queue every turn: this waits a turn at most.
            if r.commands.send(Command::Adopt(batch)).is_ok() {
                let _ = r.waker.wake();
            }
        }
    }

    /// The pool the engine resolves IMAP host names with, for callers that want to
    /// resolve (and judge) a name themselves with the same bounds.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The event stream. Read it steadily: while it is full, events wait in the sessions
    /// (coalesced) and come late; nothing waits for the reader and nothing is dropped.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            live_sessions: self.live_sessions.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for r in self.reactors.iter() {
            stats.reactor_sessions += r.counters.sessions.load(Ordering::Relaxed);
            stats.stale_events += r.counters.stale_events.load(Ordering::Relaxed);
            stats.loop_turns += r.counters.loop_turns.load(Ordering::Relaxed);
            stats.line_buffers_lent += r.counters.line_buffers_lent.load(Ordering::Relaxed);
            stats.record_buffers_lent += r.counters.record_buffers_lent.load(Ordering::Relaxed);
            stats.tls_compact_sessions += r.counters.tls_compact.load(Ordering::Relaxed);
            stats.heap_trims += r.counters.heap_trims.load(Ordering::Relaxed);
            stats.events_deferred += r.counters.events_deferred.load(Ordering::Relaxed);
            stats.turn_time.merge(&r.counters.turn_time.snapshot());
        }
        stats
    }

    /// Logs every session out (each ends with [`EndReason::Shutdown`]) and stops the
    /// threads, waiting at most [`SHUTDOWN_GRACE`]. Returns the events produced meanwhile
    /// that no other reader took, so the caller can still act on every session's end.
    pub fn shutdown(mut self) -> Vec<Event> {
        self.stop()
    }

    fn stop(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        // Closing the dispatch channel lets the dispatcher finish what is queued; it never
        // waits for a lookup, only (like the reactors) for room in the event queue.
        self.dispatch = None;
        if let Some(dispatcher) = self.dispatcher.take() {
            while !dispatcher.is_finished() {
                if let Ok(event) = self.events.recv_timeout(Duration::from_millis(5)) {
                    events.push(event);
                }
            }
            let _ = dispatcher.join();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        for r in self.reactors.iter() {
            let _ = r.commands.send(Command::Shutdown);
            let _ = r.waker.wake();
        }
        // The dispatcher, the Arc's other owner, has exited: the handles are ours alone.
        if let Some(reactors) = Arc::get_mut(&mut self.reactors) {
            for r in reactors.iter_mut() {
                let Some(thread) = r.thread.take() else {
                    continue;
                };
                // Keep taking events so a reactor never waits on a full queue.
                while !thread.is_finished() && Instant::now() < deadline {
                    match self.events.recv_timeout(Duration::from_millis(5)) {
                        Ok(event) => events.push(event),
                        Err(_) => continue,
                    }
                }
                if thread.is_finished() {
                    let _ = thread.join();
                }
            }
        }
        events.extend(self.events.try_iter());
        events
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.dispatch.is_some() {
            self.stop();
        }
    }
}

/// Hands watches to the resolver pool and resolved ones to their reactor. Never blocks
/// on a lookup, so an unwatch (or shutdown) is never queued behind one.
struct Dispatcher {
    reactors: Arc<Vec<ReactorHandle>>,
    resolver: Resolver,
    filter: Option<ConnectFilter>,
    events: Sender<Event>,
    live: Arc<AtomicUsize>,
    /// Watches whose host name is being resolved. An unwatch removes the entry, and the
    /// late answer then finds nothing.
    resolving: HashMap<SessionId, (WatchSpec, WatchOptions)>,
    /// `Failed` events the full event queue refused. Each is a session still counted live
    /// until it is queued, so `sessions_max` bounds them.
    unsent: Vec<Event>,
}

impl Dispatcher {
    fn run(mut self, commands: &Receiver<Dispatch>) {
        let (lookups_tx, lookups) = crossbeam_channel::bounded(LOOKUP_ANSWERS_LEN);
        loop {
            self.offer_unsent();
            // Never waits for the consumer: refused events are offered again shortly.
            let retry = match self.unsent.is_empty() {
                true => crossbeam_channel::never(),
                false => crossbeam_channel::after(crate::reactor::EVENT_RETRY_DELAY),
            };
            crossbeam_channel::select! {
                recv(retry) -> _ => {}
                recv(commands) -> command => match command {
                    Ok(Dispatch::Watch(id, spec, options)) => {
                        self.watch(id, spec, options, &lookups_tx);
                    }
                    Ok(Dispatch::Unwatch(id)) => self.unwatch(id),
                    Err(_) => break,
                },
                recv(lookups) -> lookup => {
                    if let Ok(lookup) = lookup {
                        self.on_lookup(lookup);
                    }
                }
            }
        }
        // Shutting down: watches still resolving end now, without waiting for the lookup.
        let ids: Vec<SessionId> = self.resolving.keys().copied().collect();
        for id in ids {
            self.resolving.remove(&id);
            self.fail(id, EndReason::Shutdown);
        }
        // `Engine::stop` reads the events until this thread has finished.
        for event in self.unsent.drain(..) {
            let _ = self.events.send(event);
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn watch(
        &mut self,
        id: SessionId,
        spec: WatchSpec,
        options: WatchOptions,
        lookups: &Sender<Lookup>,
    ) {
        if let Some(addr) = literal(&spec.host, spec.port) {
            return self.resolved(id, spec, options, vec![addr]);
        }
        match self.resolver.lookup(&spec.host, spec.port, id.0, lookups) {
            Ok(()) => {
                self.resolving.insert(id, (spec, options));
            }
            // `spec` (and its secret) is dropped here, zeroized.
            Err(e) => self.fail(id, resolve_reason(e)),
        }
    }

    fn unwatch(&mut self, id: SessionId) {
        if self.resolving.remove(&id).is_some() {
            return self.fail(id, EndReason::Unwatched);
        }
        let reactor = self.pick(id);
        let _ = reactor.commands.send(Command::Unwatch(id));
        let _ = reactor.waker.wake();
    }

    fn on_lookup(&mut self, lookup: Lookup) {
        let id = SessionId(lookup.token);
        // Absent: unwatched while it resolved.
        let Some((spec, options)) = self.resolving.remove(&id) else {
            return;
        };
        match lookup.result {
            Ok(addrs) => self.resolved(id, spec, options, addrs),
            Err(e) => self.fail(id, resolve_reason(e)),
        }
    }

    /// Keeps the addresses the filter allows (each is judged again right before its
    /// connect) and hands the session to its reactor.
    fn resolved(
        &mut self,
        id: SessionId,
        spec: WatchSpec,
        options: WatchOptions,
        addrs: Vec<SocketAddr>,
    ) {
        let allowed: Vec<SocketAddr> = match &self.filter {
            Some(filter) => addrs.into_iter().filter(|a| filter(a.ip())).collect(),
            None => addrs,
        };
        if allowed.is_empty() {
            return self.fail(id, EndReason::Forbidden);
        }
        let reactor = self.pick(id);
        let _ = reactor.commands.send(Command::Watch {
            id,
            spec,
            options,
            addrs: allowed,
        });
        let _ = reactor.waker.wake();
    }

    fn fail(&mut self, id: SessionId, reason: EndReason) {
        self.unsent.push(Event::Failed { id, reason });
        self.offer_unsent();
    }

    /// Queues the refused `Failed` events while there is room.
    fn offer_unsent(&mut self) {
        while let Some(event) = self.unsent.pop() {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {
                    self.live.fetch_sub(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(event)) => return self.unsent.push(event),
            }
        }
    }

    fn pick(&self, id: SessionId) -> &ReactorHandle {
        &self.reactors[(id.0 % self.reactors.len() as u64) as usize]
    }
}

fn resolve_reason(e: ResolveError) -> EndReason {
    match e {
        ResolveError::NotFound => EndReason::Resolve,
        ResolveError::TimedOut => EndReason::Timeout(Waiting::Resolve),
        ResolveError::Busy => EndReason::ResolverBusy,
    }
}
