//! The reactor: one mio poll per worker thread, edge-triggered, reading
//! until `WouldBlock`. It alone owns sockets, TLS, the clock and threads;
//! the IMAP conversation is [`crate::session::Session`].
//!
//! Each worker has its own listening sockets (SO_REUSEPORT on the same
//! addresses, so the kernel spreads connections), its own slab of sessions
//! and its own control inbox (a channel plus a mio `Waker`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read as _, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::{ServerConfig, ServerConnection};
use slab::Slab;

use crate::command::{Frame, Framer};
use crate::session::{Effects, Policy, Quirk, Session, State};
use crate::stream::{Stream, StreamReport, StreamSpec};

mod orders;
mod stats;
mod streaming;
mod users;

pub(crate) use stats::Stats;
pub(crate) use users::Tally;

/// Token of the worker's waker. Session tokens carry a generation >= 1 in
/// their high 32 bits, listener tokens are small numbers, so none collide.
const WAKER: Token = Token(u32::MAX as usize);
const _: () = assert!(
    usize::BITS == 64,
    "tokens pack slot and generation in 64 bits"
);

/// Read scratch, lent to whichever session is being read.
const SCRATCH_LEN: usize = 64 * 1024;
/// Lent buffers kept for reuse; more are freed.
const POOL_MAX: usize = 1024;
/// A returned buffer larger than this is freed rather than kept.
const POOL_BUF_MAX: usize = 32 * 1024;
/// Timestamps kept between two `timestamps` dumps (16 bytes each).
const TIMESTAMPS_MAX: usize = 8 * 1024 * 1024;

/// What every worker shares.
pub(crate) struct Shared {
    pub policy: Policy,
    pub initial_messages: u32,
    pub max_sessions: usize,
    pub greeting_delay: Duration,
    /// Server config for implicit TLS and STARTTLS, if any.
    pub tls: Option<Arc<ServerConfig>>,
    /// Next session index, in accept order across workers.
    pub next_index: AtomicU64,
    /// Sessions open across workers.
    pub live: AtomicUsize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Plain,
    Tls,
}

/// Which sessions a control order is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    All,
    /// An index in accept order if `index` matches one, else every session
    /// logged in under the name whose hash is `user`.
    Named {
        index: Option<u64>,
        user: u64,
    },
    /// This many distinct random sessions with a mailbox selected.
    Random(usize),
}

/// A control order for one worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Order {
    Count,
    Exists(Target),
    Bye(Target),
    StillHere(Target),
    Stall(Target, bool),
    Garbage(Target, usize),
    HugeLine(Target, usize),
    Stream(Target, StreamSpec),
    Close(Target),
    /// Give sessions of the login name whose hash this is the quirk from their
    /// next login on.
    Quirk(u64, Quirk),
    /// The tally of the login name whose hash this is.
    User(u64),
    Timestamps,
    Reports,
    Stats,
    Shutdown,
}

/// A worker's answer to one [`Order`].
#[derive(Debug)]
pub(crate) enum Answer {
    Count { sessions: usize, selected: usize },
    Affected(usize),
    Timestamps(Vec<(u64, u64)>),
    Stats(Stats),
    Reports(Vec<StreamReport>),
    User(Tally),
}

pub(crate) struct Request {
    pub order: Order,
    pub reply: Sender<Answer>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The client closed the connection (FIN, or TLS close_notify).
    PeerClosed,
    /// The client sent LOGOUT.
    Logout,
    /// The control channel sent BYE.
    Bye,
    /// The control channel asked for a reset (SO_LINGER 0).
    Reset,
    /// The client sent a command over [`crate::command::MAX_COMMAND_LEN`].
    TooLong,
    /// rustls refused the peer's records.
    Tls,
    /// The socket failed.
    Io(io::ErrorKind),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed => f.write_str("closed by peer"),
            End::Logout => f.write_str("LOGOUT"),
            End::Bye => f.write_str("BYE from control"),
            End::Reset => f.write_str("reset from control"),
            End::TooLong => f.write_str("command too long"),
            End::Tls => f.write_str("TLS error"),
            End::Io(kind) => write!(f, "socket error: {kind}"),
        }
    }
}

/// A partial command: a lent buffer and where framing stopped.
struct Pending {
    buf: Vec<u8>,
    framer: Framer,
}

/// One connection. Fixed-size; heap only while TLS runs, a command is
/// partial (`pending`) or output is unsent (`tail`).
struct Slot {
    stream: TcpStream,
    tls: Option<Box<ServerConnection>>,
    pending: Option<Box<Pending>>,
    /// Unsent plaintext output (plain sessions; rustls keeps its own).
    tail: Option<Vec<u8>>,
    index: u64,
    session: Session,
    gen: u32,
    /// EXISTS lines written to the socket layer but not yet flushed.
    unflushed_exists: u16,
    greeted: bool,
    stalled: bool,
    /// Readable while held: read when let go (edge-triggered).
    read_ready: bool,
    /// Close once output is flushed.
    closing: Option<End>,
    /// A streamed fault is being written; input waits until it ends.
    streaming: bool,
}

// Budget: 128 bytes, so 19,000 idle plain sessions cost under 3 MiB of slab.
const _: () = assert!(std::mem::size_of::<Slot>() <= 128);

impl Slot {
    /// Input is not processed: stalled, greeting not yet sent, or closing.
    fn held(&self) -> bool {
        self.stalled || !self.greeted || self.closing.is_some() || self.streaming
    }
}

/// How a batch of input ended.
enum Fed {
    More,
    /// STARTTLS was accepted: go on reading, through TLS now.
    Switched,
    /// The session is closing; read no more.
    Closing,
}

#[derive(Default)]
struct Pool {
    // Slots hold `Option<Box<Pending>>` (8 bytes, not 40), so the pool
    // keeps the boxes and lends them without moving their contents.
    #[allow(clippy::vec_box)]
    pendings: Vec<Box<Pending>>,
    tails: Vec<Vec<u8>>,
    lent: u64,
}

impl Pool {
    fn pending(&mut self) -> Box<Pending> {
        self.lent += 1;
        self.pendings.pop().unwrap_or_else(|| {
            Box::new(Pending {
                buf: Vec::with_capacity(1024),
                framer: Framer::default(),
            })
        })
    }

    fn put_pending(&mut self, mut p: Box<Pending>) {
        self.lent -= 1;
        if self.pendings.len() < POOL_MAX && p.buf.capacity() <= POOL_BUF_MAX {
            p.buf.clear();
            p.framer = Framer::default();
            self.pendings.push(p);
        }
    }

    fn tail(&mut self) -> Vec<u8> {
        self.lent += 1;
        self.tails.pop().unwrap_or_default()
    }

    fn put_tail(&mut self, mut t: Vec<u8>) {
        self.lent -= 1;
        if self.tails.len() < POOL_MAX && t.capacity() <= POOL_BUF_MAX {
            t.clear();
            self.tails.push(t);
        }
    }
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    poll: Poll,
    listeners: Vec<(TcpListener, ListenerKind)>,
    slots: Slab<Slot>,
    next_gen: u32,
    scratch: Vec<u8>,
    out: Vec<u8>,
    pool: Pool,
    by_index: HashMap<u64, usize>,
    by_user: BTreeSet<(u64, usize)>,
    greetings: VecDeque<(Instant, usize, u32)>,
    /// Streamed faults in progress, by slot key (few at a time).
    streams: HashMap<usize, Box<Stream>>,
    /// How streams ended, oldest first, at most `streaming::REPORTS_MAX`.
    reports: VecDeque<StreamReport>,
    /// Quirks by login name hash (few: the fault tests set them).
    quirks: HashMap<u64, Quirk>,
    /// What happened to the sessions of a login name with a quirk or a stream,
    /// or any name once asked about; bounded by `users::TALLIES_MAX`.
    tallies: HashMap<u64, Tally>,
    timestamps: Vec<(u64, u64)>,
    stats: Stats,
    rx: Receiver<Request>,
    rng: u64,
}

/// Creates a worker's poll and waker; the worker runs on its own thread.
pub(crate) fn worker(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<(std::net::TcpListener, ListenerKind)>,
    rx: Receiver<Request>,
) -> io::Result<(Worker, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let mut mio_listeners = Vec::with_capacity(listeners.len());
    for (i, (l, kind)) in listeners.into_iter().enumerate() {
        l.set_nonblocking(true)?;
        let mut l = TcpListener::from_std(l);
        poll.registry()
            .register(&mut l, Token(i), Interest::READABLE)?;
        mio_listeners.push((l, kind));
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let w = Worker {
        shared,
        poll,
        listeners: mio_listeners,
        slots: Slab::new(),
        next_gen: 0,
        scratch: vec![0; SCRATCH_LEN],
        out: Vec::with_capacity(4096),
        pool: Pool::default(),
        by_index: HashMap::new(),
        by_user: BTreeSet::new(),
        greetings: VecDeque::new(),
        streams: HashMap::new(),
        reports: VecDeque::new(),
        quirks: HashMap::new(),
        tallies: HashMap::new(),
        timestamps: Vec::new(),
        stats: Stats::default(),
        rx,
        rng: (seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
    };
    Ok((w, waker))
}

fn token(key: usize, gen: u32) -> Token {
    Token((u64::from(gen) << 32 | key as u64) as usize)
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Worker {
    /// Runs until a [`Order::Shutdown`] or a poll failure.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .greetings
                .front()
                .map(|(t, ..)| *t)
                .into_iter()
                .chain(self.stream_wake_at())
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("mock-imapd: poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    if self.handle_orders() {
                        return;
                    }
                    continue;
                }
                if t.0 < self.listeners.len() {
                    self.accept(t.0);
                    continue;
                }
                let (key, gen) = (t.0 & 0xffff_ffff, (t.0 >> 32) as u32);
                if self.slots.get(key).map(|s| s.gen) != Some(gen) {
                    // The slot is gone or reused: a late event, dropped.
                    self.stats.stale_events += 1;
                    continue;
                }
                if ev.is_writable() {
                    self.on_writable(key);
                }
                let still = self.slots.get(key).is_some_and(|s| s.gen == gen);
                if still && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                    self.on_readable(key);
                }
            }
            self.fire_greetings(Instant::now());
            self.fire_streams(Instant::now());
        }
    }

    fn accept(&mut self, i: usize) {
        loop {
            let Some((listener, kind)) = self.listeners.get(i) else {
                return;
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream, kind),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // EMFILE and friends: the connection stays queued until
                    // the next one arrives and wakes us again.
                    self.stats.accept_errors += 1;
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, kind: ListenerKind) {
        if self.shared.live.load(Ordering::Relaxed) >= self.shared.max_sessions
            || self.slots.vacant_key() >= u32::MAX as usize
        {
            self.stats.refused += 1;
            if kind == ListenerKind::Plain {
                let _ = stream.write(b"* BYE [UNAVAILABLE] Too many sessions\r\n");
            }
            return;
        }
        let tls = match (kind, &self.shared.tls) {
            (ListenerKind::Tls, Some(config)) => match ServerConnection::new(config.clone()) {
                Ok(mut c) => {
                    c.set_buffer_limit(None);
                    Some(Box::new(c))
                }
                Err(_) => {
                    self.stats.tls_errors += 1;
                    return;
                }
            },
            _ => None,
        };
        let _ = stream.set_nodelay(true);
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let gen = self.next_gen;
        let key = self.slots.vacant_key();
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                token(key, gen),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.stats.accept_errors += 1;
            return;
        }
        let starttls = kind == ListenerKind::Plain && self.shared.tls.is_some();
        let mut session = Session::new(self.shared.initial_messages, starttls);
        if tls.is_some() {
            session.handle_tls_started();
        }
        let index = self.shared.next_index.fetch_add(1, Ordering::Relaxed);
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted += 1;
        self.slots.insert(Slot {
            stream,
            tls,
            pending: None,
            tail: None,
            index,
            session,
            gen,
            unflushed_exists: 0,
            greeted: false,
            stalled: false,
            read_ready: false,
            closing: None,
            streaming: false,
        });
        self.by_index.insert(index, key);
        if self.shared.greeting_delay.is_zero() {
            self.greet(key);
        } else {
            self.greetings
                .push_back((Instant::now() + self.shared.greeting_delay, key, gen));
        }
    }

    fn fire_greetings(&mut self, now: Instant) {
        while let Some(&(due, key, gen)) = self.greetings.front() {
            if due > now {
                return;
            }
            self.greetings.pop_front();
            if self.slots.get(key).is_some_and(|s| s.gen == gen) {
                self.greet(key);
            }
        }
    }

    fn greet(&mut self, key: usize) {
        let policy = self.shared.policy;
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        slot.greeted = true;
        slot.session.poll_greeting(policy, &mut self.out);
        let read_ready = slot.read_ready;
        self.send_or_close(key);
        if read_ready && self.slots.contains(key) {
            self.on_readable(key);
        }
    }

    fn on_writable(&mut self, key: usize) {
        if let Err(end) = self.flush(key) {
            self.close(key, end);
        } else if self.slots.get(key).is_some_and(|s| s.streaming) {
            self.drive_stream(key);
        }
    }

    fn on_readable(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.held() {
            slot.read_ready = true;
            return;
        }
        slot.read_ready = false;
        let result = loop {
            let is_tls = self.slots.get(key).is_some_and(|s| s.tls.is_some());
            let r = if is_tls {
                self.read_tls(key)
            } else {
                self.read_plain(key)
            };
            match r {
                Ok(Fed::Switched) => continue,
                Ok(_) => break self.flush(key),
                Err(end) => break Err(end),
            }
        };
        if let Err(end) = result {
            self.close(key, end);
        }
    }

    fn read_plain(&mut self, key: usize) -> Result<Fed, End> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            let Some(slot) = self.slots.get_mut(key) else {
                break Ok(Fed::Closing);
            };
            match (&slot.stream).read(&mut scratch) {
                Ok(0) => break Err(End::PeerClosed),
                Ok(n) => {
                    self.stats.bytes_in += n as u64;
                    match self.feed(key, &scratch[..n]) {
                        Ok(Fed::More) => {}
                        other => break other,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(Fed::More),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(End::Io(e.kind())),
            }
        };
        self.scratch = scratch;
        result
    }

    fn read_tls(&mut self, key: usize) -> Result<Fed, End> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.read_tls_with(key, &mut scratch);
        self.scratch = scratch;
        result
    }

    fn read_tls_with(&mut self, key: usize, scratch: &mut [u8]) -> Result<Fed, End> {
        loop {
            let Some(slot) = self.slots.get_mut(key) else {
                return Ok(Fed::Closing);
            };
            let Some(tls) = slot.tls.as_mut() else {
                return Ok(Fed::Closing);
            };
            match tls.read_tls(&mut slot.stream) {
                Ok(0) => return Err(End::PeerClosed),
                Ok(n) => self.stats.bytes_in += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fed::More),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Io(e.kind())),
            }
            let was_handshaking = tls.is_handshaking();
            if tls.process_new_packets().is_err() {
                // Send the alert rustls queued, then give up.
                let _ = tls.write_tls(&mut slot.stream);
                self.stats.tls_errors += 1;
                return Err(End::Tls);
            }
            if was_handshaking && !tls.is_handshaking() {
                self.stats.handshakes += 1;
                if tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    self.stats.resumed += 1;
                }
            }
            loop {
                let Some(tls) = self.slots.get_mut(key).and_then(|s| s.tls.as_mut()) else {
                    return Ok(Fed::Closing);
                };
                match tls.reader().read(scratch) {
                    Ok(0) => return Err(End::PeerClosed),
                    Ok(n) => match self.feed(key, &scratch[..n])? {
                        Fed::More => {}
                        other => return Ok(other),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(End::Tls),
                }
            }
        }
    }

    /// Frames and answers the commands in `data`, after any partial
    /// command kept from before, and sends the answers.
    fn feed(&mut self, key: usize, data: &[u8]) -> Result<Fed, End> {
        let policy = self.shared.policy;
        let Some(slot) = self.slots.get_mut(key) else {
            return Ok(Fed::Closing);
        };
        let mut out = std::mem::take(&mut self.out);
        let rules = Rules {
            policy,
            quirks: &self.quirks,
        };
        let mut effects = Effects::default();
        let mut commands = 0;
        let stop = match slot.pending.take() {
            Some(mut p) => {
                p.buf.extend_from_slice(data);
                let (used, stop) = process(
                    &mut slot.session,
                    &mut p.framer,
                    &p.buf,
                    rules,
                    &mut out,
                    &mut effects,
                    &mut commands,
                );
                p.buf.drain(..used);
                if p.buf.is_empty() || !matches!(stop, Stop::NeedMore) {
                    self.pool.put_pending(p);
                } else {
                    slot.pending = Some(p);
                }
                stop
            }
            None => {
                let mut framer = Framer::default();
                let (used, stop) = process(
                    &mut slot.session,
                    &mut framer,
                    data,
                    rules,
                    &mut out,
                    &mut effects,
                    &mut commands,
                );
                let rest = data.get(used..).unwrap_or(&[]);
                if matches!(stop, Stop::NeedMore) && !rest.is_empty() {
                    let mut p = self.pool.pending();
                    p.buf.extend_from_slice(rest);
                    p.framer = framer;
                    slot.pending = Some(p);
                }
                stop
            }
        };
        self.out = out;
        self.stats.commands += commands;
        slot.unflushed_exists = slot
            .unflushed_exists
            .saturating_add(effects.announced as u16);
        if effects.logged_in {
            self.by_user.insert((slot.session.user_hash(), key));
        }
        let user = slot.session.user_hash();
        self.tally_effects(user, effects);
        match stop {
            Stop::NeedMore => {
                self.send(key)?;
                if effects.announced > 0 {
                    // Stamp EXISTS lines (NOOP, IDLE) right after their write.
                    self.flush(key)?;
                }
                Ok(Fed::More)
            }
            Stop::Close => {
                self.send_then_close(key, End::Logout)?;
                Ok(Fed::Closing)
            }
            Stop::TooLong => {
                self.out.extend_from_slice(b"* BYE Command too long\r\n");
                self.send_then_close(key, End::TooLong)?;
                Ok(Fed::Closing)
            }
            Stop::StartTls => self.start_tls(key),
            Stop::AuthContinuations => {
                self.send(key)?;
                self.start_auth_continuations(key);
                Ok(Fed::Closing)
            }
        }
    }

    /// Sends the STARTTLS OK in plaintext, then puts rustls under the
    /// session. Pipelined plaintext after STARTTLS is dropped (RFC 3501
    /// section 6.2.1: it could be an injection).
    fn start_tls(&mut self, key: usize) -> Result<Fed, End> {
        self.send(key)?;
        let Some(config) = self.shared.tls.clone() else {
            return Err(End::Tls);
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return Ok(Fed::Closing);
        };
        if slot.tail.is_some() {
            // The OK did not leave at once; TLS records must not follow it
            // out of order, and a proxy never fills the socket here.
            return Err(End::Io(io::ErrorKind::WouldBlock));
        }
        let mut conn = ServerConnection::new(config).map_err(|_| End::Tls)?;
        conn.set_buffer_limit(None);
        slot.tls = Some(Box::new(conn));
        slot.session.handle_tls_started();
        if let Some(p) = slot.pending.take() {
            self.pool.put_pending(p);
        }
        Ok(Fed::Switched)
    }

    /// Sends `self.out`, then marks the session closing: a TLS session
    /// queues close_notify after it, and [`Worker::flush`] ends the session
    /// once everything has left.
    fn send_then_close(&mut self, key: usize, end: End) -> Result<(), End> {
        self.send(key)?;
        if let Some(slot) = self.slots.get_mut(key) {
            slot.closing = Some(end);
            if let Some(tls) = slot.tls.as_mut() {
                tls.send_close_notify();
            }
        }
        Ok(())
    }

    fn send_or_close(&mut self, key: usize) {
        if let Err(end) = self.send(key).and_then(|()| self.flush(key)) {
            self.close(key, end);
        }
    }

    /// Hands `self.out` to the socket (plain: written at once, only an
    /// unsent tail is parked) or to rustls.
    fn send(&mut self, key: usize) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(slot) = self.slots.get_mut(key) else {
            self.out.clear();
            return Ok(());
        };
        let result = if let Some(tls) = slot.tls.as_mut() {
            tls.writer().write_all(&self.out).map_err(|_| End::Tls)
        } else if let Some(tail) = slot.tail.as_mut() {
            tail.extend_from_slice(&self.out);
            Ok(())
        } else {
            match write_all_nonblocking(&slot.stream, &self.out) {
                Ok(n) => {
                    self.stats.bytes_out += n as u64;
                    if n < self.out.len() {
                        let mut tail = self.pool.tail();
                        tail.extend_from_slice(&self.out[n..]);
                        slot.tail = Some(tail);
                    }
                    Ok(())
                }
                Err(e) => Err(End::Io(e.kind())),
            }
        };
        self.out.clear();
        result
    }

    /// Writes what is parked (plain tail, or rustls records). When nothing
    /// is left: stamps flushed EXISTS lines, and ends a closing session.
    fn flush(&mut self, key: usize) -> Result<(), End> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Ok(());
        };
        let flushed = if let Some(tls) = slot.tls.as_mut() {
            loop {
                if !tls.wants_write() {
                    break true;
                }
                match tls.write_tls(&mut slot.stream) {
                    Ok(n) => self.stats.bytes_out += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(End::Io(e.kind())),
                }
            }
        } else if let Some(tail) = slot.tail.as_mut() {
            let n = write_all_nonblocking(&slot.stream, tail).map_err(|e| End::Io(e.kind()))?;
            self.stats.bytes_out += n as u64;
            tail.drain(..n);
            if tail.is_empty() {
                if let Some(t) = slot.tail.take() {
                    self.pool.put_tail(t);
                }
                true
            } else {
                false
            }
        } else {
            true
        };
        if !flushed {
            return Ok(());
        }
        if slot.unflushed_exists > 0 {
            // Taken right after the write syscall that sent the line.
            let ns = now_unix_ns();
            for _ in 0..slot.unflushed_exists {
                if self.timestamps.len() < TIMESTAMPS_MAX {
                    self.timestamps.push((slot.index, ns));
                } else {
                    self.stats.timestamps_dropped += 1;
                }
            }
            self.stats.exists_sent += u64::from(slot.unflushed_exists);
            slot.unflushed_exists = 0;
        }
        match slot.closing {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    fn close(&mut self, key: usize, end: End) {
        if !self.slots.contains(key) {
            return;
        }
        if self.streams.contains_key(&key) {
            let kind = match end {
                End::Io(kind) => kind,
                _ => io::ErrorKind::ConnectionAborted,
            };
            self.end_stream(key, Some(kind));
        }
        let mut slot = self.slots.remove(key);
        let _ = self.poll.registry().deregister(&mut slot.stream);
        if end == End::Reset {
            // SO_LINGER 0: close() sends RST instead of FIN.
            let _ = socket2::SockRef::from(&slot.stream).set_linger(Some(Duration::ZERO));
        }
        if let Some(p) = slot.pending.take() {
            self.pool.put_pending(p);
        }
        if let Some(t) = slot.tail.take() {
            self.pool.put_tail(t);
        }
        self.by_index.remove(&slot.index);
        let user = slot.session.user_hash();
        if user != 0 {
            self.by_user.remove(&(user, key));
            self.tally_end(user, end);
        }
        self.shared.live.fetch_sub(1, Ordering::Relaxed);
        let counter = match end {
            End::PeerClosed => &mut self.stats.closed_peer,
            // A client that closes with unread input resets the connection.
            End::Io(io::ErrorKind::ConnectionReset) => &mut self.stats.closed_reset,
            End::Logout => &mut self.stats.closed_logout,
            End::Bye | End::Reset => &mut self.stats.closed_control,
            End::TooLong | End::Tls | End::Io(_) => &mut self.stats.closed_error,
        };
        *counter += 1;
    }
}

/// Writes as much as the socket takes without blocking.
fn write_all_nonblocking(mut stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    NeedMore,
    Close,
    StartTls,
    TooLong,
    /// The login just handled asks for [`Quirk::AuthContinuations`]; its
    /// answer was taken back out of `out`.
    AuthContinuations,
}

/// What every session of a worker answers by: the server's policy and the
/// quirks by login name.
#[derive(Clone, Copy)]
struct Rules<'a> {
    policy: Policy,
    quirks: &'a HashMap<u64, Quirk>,
}

/// Frames and answers whole commands in `buf`. Returns the bytes used
/// (whole commands only) and why it stopped.
fn process(
    session: &mut Session,
    framer: &mut Framer,
    buf: &[u8],
    rules: Rules<'_>,
    out: &mut Vec<u8>,
    effects: &mut Effects,
    commands: &mut u64,
) -> (usize, Stop) {
    let Rules { policy, quirks } = rules;
    let mut used = 0;
    loop {
        let rest = buf.get(used..).unwrap_or(&[]);
        match framer.advance(rest) {
            Frame::Incomplete => return (used, Stop::NeedMore),
            Frame::TooLong => return (used, Stop::TooLong),
            Frame::SyncLiteral => out.extend_from_slice(b"+ OK\r\n"),
            Frame::Complete { len } => {
                let msg = rest.get(..len).unwrap_or(&[]);
                used += len;
                *commands += 1;
                let before = out.len();
                let e = session.handle_command(msg, policy, out);
                effects.merge(e);
                if e.logged_in {
                    let quirk = quirks.get(&session.user_hash()).copied();
                    let quirk = quirk.unwrap_or_default();
                    session.set_quirk(quirk);
                    if quirk == Quirk::AuthContinuations {
                        out.truncate(before);
                        return (used, Stop::AuthContinuations);
                    }
                }
                if e.close {
                    return (used, Stop::Close);
                }
                if e.start_tls {
                    return (used, Stop::StartTls);
                }
            }
        }
    }
}
