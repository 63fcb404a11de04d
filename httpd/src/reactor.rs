//! The event loop: the only place with mio, sockets, the clock and the
//! application's handler.
//!
//! Each turn: poll; read the clock once; accept; drive every connection that
//! had an event; apply the application's queued responses; enforce due
//! deadlines; publish the counters. Deadlines are found by scanning the
//! connections (at most `connections_max`, 1024 by default), which costs
//! microseconds per turn and keeps no timer structure to get wrong.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::admission::{Admission, Attribution, ClientKey, Decision, Refusal};
use crate::connection::{Connection, Now};
use crate::date::http_date;
use crate::error::HttpdError;
use crate::forwarded::{forwarded_client, is_trusted, Cidr};
use crate::handler::{Handler, Responder};
use crate::limits::{Limits, PROXY_HEADER_BYTES_MAX};
use crate::proxy_header::{self, Parsed};
use crate::request::{Request, RequestId};
use crate::response::{self, Framing, Persistence, Response};
use crate::stats::Stats;
use crate::tls::{SharedTls, TlsLayer};

/// Low bits of a token: the slab slot. High bits: the generation.
const SLOT_BITS: u32 = 16;
const SLOT_MASK: usize = (1 << SLOT_BITS) - 1;
/// Generations wrap within the bits left above the slot.
const GENERATION_MASK: usize = usize::MAX >> SLOT_BITS;
pub(crate) const LISTENER: Token = Token(SLOT_MASK);
pub(crate) const WAKER: Token = Token(SLOT_MASK - 1);

/// How long to wait before accepting again after `accept` failed for a
/// reason other than an empty backlog (typically out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Events taken per poll.
const EVENTS_MAX: usize = 256;

/// Tokens carry slot and generation, so an event for a closed connection
/// whose slot was reused in the same turn is recognised and dropped.
fn token(slot: usize, generation: usize) -> Token {
    Token((generation << SLOT_BITS) | slot)
}

fn untoken(token: Token) -> (usize, usize) {
    (token.0 & SLOT_MASK, token.0 >> SLOT_BITS)
}

enum Transport {
    Plain,
    Tls(Box<TlsLayer>),
}

struct Entry {
    socket: TcpStream,
    transport: Transport,
    conn: Connection,
    generation: usize,
    /// From a trusted proxy: the PROXY header read so far, until it is known
    /// whether one comes. `None` once decided (and always for other peers).
    preamble: Option<Vec<u8>>,
    /// From a trusted proxy that sent no PROXY header: each request's
    /// `X-Forwarded-For` names its client.
    forwarded: bool,
}

/// Everything the loop owns; moved onto the server thread.
pub(crate) struct Reactor<H> {
    poll: Poll,
    listener: TcpListener,
    limits: Limits,
    tls: Option<SharedTls>,
    trusted_proxies: Vec<Cidr>,
    handler: H,
    responder: Responder,
    responses: mpsc::Receiver<(RequestId, Response)>,
    stop: Arc<AtomicBool>,
    published: Arc<Mutex<Stats>>,
    entries: Slab<Entry>,
    /// Who holds the slots: the per-client and total caps.
    admission: Admission,
    stats: Stats,
    next_generation: usize,
    next_seq: u64,
    accept_paused_until: Option<Instant>,
    /// Scratch list of slots whose deadline passed.
    due: Vec<usize>,
}

/// What [`Reactor::new`] needs from [`Server::spawn`](crate::Server::spawn).
pub(crate) struct Parts<H> {
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) limits: Limits,
    pub(crate) tls: Option<SharedTls>,
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) handler: H,
    pub(crate) responder: Responder,
    pub(crate) responses: mpsc::Receiver<(RequestId, Response)>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) published: Arc<Mutex<Stats>>,
}

impl<H> Reactor<H> {
    pub(crate) fn new(parts: Parts<H>) -> Reactor<H> {
        let Parts {
            poll,
            listener,
            limits,
            tls,
            trusted_proxies,
            handler,
            responder,
            responses,
            stop,
            published,
        } = parts;
        Reactor {
            poll,
            listener,
            limits,
            tls,
            trusted_proxies,
            admission: Admission::new(limits.connections_max, limits.connections_per_client_max),
            handler,
            responder,
            responses,
            stop,
            published,
            // Grows on demand; do not reserve the whole limit up front.
            entries: Slab::with_capacity(limits.connections_max.min(64)),
            stats: Stats::default(),
            next_generation: 0,
            next_seq: 0,
            accept_paused_until: None,
            due: Vec::new(),
        }
    }
}

impl<H: Handler> Reactor<H> {
    /// Runs until [`ServerHandle::shutdown`](crate::ServerHandle::shutdown)
    /// or a poller failure. Dropping `self` on return closes every socket.
    pub(crate) fn run(mut self) -> Result<(), HttpdError> {
        let mut events = Events::with_capacity(EVENTS_MAX);
        while !self.stop.load(Ordering::Acquire) {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(HttpdError::Poll { source }),
            }
            let now = read_clock();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(&now),
                    WAKER => {}
                    token => self.handle_event(token, event, &now),
                }
            }
            self.drain_responses(&now);
            self.handle_timeouts(&now);
            self.publish();
        }
        Ok(())
    }

    /// The wait until the earliest deadline (rounded up by mio to whole
    /// milliseconds), or forever when there is none.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let deadlines = self
            .entries
            .iter()
            .filter_map(|(_, e)| e.conn.poll_timeout());
        deadlines
            .chain(self.accept_paused_until)
            .min()
            .map(|deadline| deadline.saturating_duration_since(now))
    }

    fn accept_all(&mut self, now: &Now) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // The backlog is not drained, so no new readiness edge will
                    // come: retry from the timer instead.
                    self.stats.accept_errors += 1;
                    self.accept_paused_until = Some(now.instant + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: &Now) {
        let trusted = is_trusted(&self.trusted_proxies, peer.ip());
        // A trusted proxy's connection counts for nobody until it says whose
        // it is (PROXY header or X-Forwarded-For).
        let client = (!trusted).then(|| ClientKey::of(peer.ip()));
        match self.admission.decide(client) {
            Decision::Admit => {}
            Decision::EvictThenAdmit(slot) => self.evict(slot),
            Decision::Refuse(refusal) => {
                count_refusal(&mut self.stats, refusal);
                write_refusal(&socket, self.tls.is_some(), refusal, now, &mut self.stats);
                return;
            }
        }
        let transport = match &self.tls {
            None => Transport::Plain,
            // Read at each accept: a replaced certificate serves new connections only.
            Some(shared) => match TlsLayer::new(&crate::tls::current(shared)) {
                Ok(layer) => Transport::Tls(Box::new(layer)),
                Err(_) => {
                    self.stats.tls_failures += 1;
                    return;
                }
            },
        };
        // Responses are written whole; Nagle would only delay them.
        let _ = socket.set_nodelay(true);
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & GENERATION_MASK;
        let vacant = self.entries.vacant_entry();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut socket, token(vacant.key(), generation), interest)
            .is_err()
        {
            self.stats.accept_errors += 1;
            return;
        }
        let slot = vacant.key();
        vacant.insert(Entry {
            socket,
            transport,
            conn: Connection::new(peer, self.limits, now.instant),
            generation,
            preamble: trusted.then(Vec::new),
            forwarded: false,
        });
        self.admission.handle_opened(slot, client);
        self.stats.connections_accepted += 1;
        self.stats.connections_open += 1;
        // Registration reports current readiness, so the first event comes
        // by itself.
    }

    /// Closes the idle connection in `slot` to make room for a newcomer.
    fn evict(&mut self, slot: usize) {
        self.stats.connections_evicted += 1;
        self.remove(slot);
    }

    /// Drops the connection in `slot` (closing its socket) and forgets it.
    fn remove(&mut self, slot: usize) {
        if let Some(mut entry) = self.entries.try_remove(slot) {
            let _ = self.poll.registry().deregister(&mut entry.socket);
            self.stats.connections_open -= 1;
        }
        self.admission.handle_closed(slot);
    }

    fn handle_event(&mut self, token: Token, event: &Event, now: &Now) {
        let (slot, generation) = untoken(token);
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        if entry.generation != generation {
            return; // for a closed connection whose slot was reused
        }
        if event.is_error() && !matches!(entry.socket.take_error(), Ok(None)) {
            entry.conn.handle_transport_error();
        }
        self.drive(slot, now);
    }

    /// Moves bytes and requests for one connection until nothing changes
    /// (the order of calls in [`Connection`]'s docs), then drops it if it
    /// closed.
    fn drive(&mut self, slot: usize, now: &Now) {
        if !self.drive_preamble(slot, now) {
            self.settle(slot);
            return;
        }
        let Some(entry) = self.entries.get_mut(slot) else {
            return;
        };
        let Entry {
            socket,
            transport,
            conn,
            forwarded,
            ..
        } = entry;
        // Slots to close for this connection's clients, once its borrow ends.
        let mut evict = Vec::new();
        loop {
            let mut progress = match transport {
                Transport::Plain => pump_read(socket, conn, now.instant),
                Transport::Tls(tls) => tls.pump_read(socket, conn, now.instant, &mut self.stats),
            };
            let id = RequestId {
                slot: slot as u32,
                seq: self.next_seq,
            };
            if let Some(mut request) = conn.poll_request(id, now, &mut self.stats) {
                self.next_seq += 1;
                progress = true;
                let admitted = !*forwarded
                    || attribute_forwarded(
                        &mut self.admission,
                        &self.trusted_proxies,
                        slot,
                        &mut request,
                        &mut evict,
                    );
                if admitted {
                    self.handler.handle(request, &self.responder);
                } else {
                    self.stats.connections_rejected_per_client += 1;
                    let refused = refusal_response(Refusal::ClientAtCap);
                    let _ = conn.handle_refusal(request.id.seq, refused, now, &mut self.stats);
                }
            }
            progress |= match transport {
                Transport::Plain => pump_write(socket, conn),
                Transport::Tls(tls) => tls.pump_write(socket, conn),
            };
            if !progress {
                break;
            }
        }
        for other in evict {
            self.evict(other);
        }
        self.settle(slot);
    }

    /// After a drive: drops the connection if it closed, or tells the
    /// admission table whether it is idle.
    fn settle(&mut self, slot: usize) {
        let Some(entry) = self.entries.get(slot) else {
            return;
        };
        if entry.conn.is_closed() {
            self.remove(slot);
        } else {
            let idle = entry.conn.is_idle();
            self.admission.handle_idle(slot, idle);
        }
    }

    /// For a trusted proxy's connection: reads its PROXY header, if one
    /// comes, and attributes the connection. Returns whether HTTP (or TLS)
    /// bytes may flow now; false while the header is incomplete or when the
    /// connection was closed.
    fn drive_preamble(&mut self, slot: usize, now: &Now) -> bool {
        let Some(entry) = self.entries.get_mut(slot) else {
            return false;
        };
        let Some(preamble) = &mut entry.preamble else {
            return true;
        };
        let source = match read_preamble(&mut entry.socket, preamble) {
            PreambleStep::Pending => return false,
            PreambleStep::Absent => {
                entry.preamble = None;
                entry.forwarded = true;
                return true;
            }
            PreambleStep::Header(source) => source,
            PreambleStep::Malformed => {
                self.stats.proxy_headers_malformed += 1;
                entry.conn.handle_transport_error();
                return false;
            }
            PreambleStep::Failed => {
                entry.conn.handle_transport_error();
                return false;
            }
        };
        entry.preamble = None;
        // LOCAL (or no address): the proxy's own connection, such as a health
        // check, counted for the proxy.
        let client = source.map_or(entry.conn.peer().ip().to_canonical(), |s| {
            s.ip().to_canonical()
        });
        let key = ClientKey::of(client);
        match self
            .admission
            .decide_attribution(slot, key, Attribution::Connection)
        {
            Decision::Refuse(refusal) => {
                count_refusal(&mut self.stats, refusal);
                let tls = matches!(entry.transport, Transport::Tls(_));
                write_refusal(&entry.socket, tls, refusal, now, &mut self.stats);
                entry.conn.handle_transport_error();
                false
            }
            decision => {
                entry.conn.set_client(client);
                self.admission.handle_attributed(slot, key);
                if let Decision::EvictThenAdmit(other) = decision {
                    self.evict(other);
                }
                true
            }
        }
    }

    /// Applies the application's answers; an answer for a request that is not
    /// in flight on its slot any more is stale.
    fn drain_responses(&mut self, now: &Now) {
        while let Ok((id, response)) = self.responses.try_recv() {
            let slot = id.slot as usize;
            let applied = match self.entries.get_mut(slot) {
                Some(entry) => entry
                    .conn
                    .handle_response(id.seq, response, now, &mut self.stats),
                None => false,
            };
            if applied {
                self.drive(slot, now);
            } else {
                self.stats.responses_stale += 1;
            }
        }
    }

    fn handle_timeouts(&mut self, now: &Now) {
        if self
            .accept_paused_until
            .is_some_and(|until| until <= now.instant)
        {
            self.accept_paused_until = None;
            self.accept_all(now);
        }
        let mut due = std::mem::take(&mut self.due);
        due.extend(
            self.entries
                .iter()
                .filter(|(_, e)| e.conn.poll_timeout().is_some_and(|d| d <= now.instant))
                .map(|(slot, _)| slot),
        );
        for &slot in &due {
            if let Some(entry) = self.entries.get_mut(slot) {
                entry.conn.handle_timeout(now, &mut self.stats);
                self.drive(slot, now);
            }
        }
        due.clear();
        self.due = due;
    }

    fn publish(&self) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *published = Stats {
            responses_dropped: self.responder.dropped.load(Ordering::Relaxed),
            ..self.stats
        };
    }
}

impl<H> Drop for Reactor<H> {
    /// Connections are closed by dropping their sockets; say so in the
    /// counters readers may still look at.
    fn drop(&mut self) {
        self.stats.connections_open = 0;
        if let Ok(mut published) = self.published.lock() {
            *published = self.stats;
        }
    }
}

/// Names the client of a request forwarded by a trusted proxy (its
/// `X-Forwarded-For`) and moves the connection to that client in the
/// admission table. Returns false when the client is at its cap with no idle
/// connection of its own to close; slots to close first go to `evict`.
fn attribute_forwarded(
    admission: &mut Admission,
    trusted: &[Cidr],
    slot: usize,
    request: &mut Request,
    evict: &mut Vec<usize>,
) -> bool {
    let values = request
        .headers()
        .filter(|(name, _)| *name == "x-forwarded-for")
        .map(|(_, value)| value);
    request.client = forwarded_client(values, request.peer.ip(), trusted);
    let key = ClientKey::of(request.client);
    match admission.decide_attribution(slot, key, Attribution::Request) {
        Decision::Refuse(_) => return false,
        Decision::EvictThenAdmit(other) => evict.push(other),
        Decision::Admit => {}
    }
    admission.handle_attributed(slot, key);
    true
}

fn count_refusal(stats: &mut Stats, refusal: Refusal) {
    match refusal {
        Refusal::ClientAtCap => stats.connections_rejected_per_client += 1,
        Refusal::ServerFull => stats.connections_rejected += 1,
    }
}

/// The server's answer to a connection (or request) it refuses for a cap.
fn refusal_response(refusal: Refusal) -> Response {
    let body = match refusal {
        Refusal::ClientAtCap => {
            r#"{"error":"too_many_connections","message":"this client holds too many connections"}"#
        }
        Refusal::ServerFull => {
            r#"{"error":"at_capacity","message":"this server holds too many connections"}"#
        }
    };
    Response::json(503, body).with_header("retry-after", "1")
}

/// Refuses a connection that has sent no request yet (or only a PROXY
/// header): a plain client gets a 503 (the fresh socket's send buffer is
/// empty, so one write suffices), a TLS client just a close. The caller
/// drops (closes) the socket.
fn write_refusal(
    mut socket: &TcpStream,
    tls: bool,
    refusal: Refusal,
    now: &Now,
    stats: &mut Stats,
) {
    if !tls {
        let mut out = Vec::with_capacity(256);
        let framing = Framing {
            persistence: Persistence::Close,
            head_only: false,
            date: &now.date,
        };
        response::encode(&mut out, &refusal_response(refusal), framing);
        if socket.write(&out).is_ok() {
            stats.count_response(503);
        }
    }
    let _ = socket.shutdown(Shutdown::Write);
}

/// What reading a trusted proxy's connection start gave.
enum PreambleStep {
    /// The header has begun but is not complete: wait for more bytes.
    Pending,
    /// No PROXY header: the bytes are HTTP (or TLS); none were consumed.
    Absent,
    /// A complete header was consumed, naming this source (`None`: LOCAL).
    Header(Option<SocketAddr>),
    Malformed,
    /// The socket failed or closed before the header was complete.
    Failed,
}

/// Reads a PROXY v2 header off `socket` without consuming anything else:
/// the first bytes are peeked until they decide whether a header comes, and
/// then exactly the header's length is read into `buf`.
fn read_preamble(socket: &mut TcpStream, buf: &mut Vec<u8>) -> PreambleStep {
    loop {
        let parsed = match proxy_header::parse(buf, PROXY_HEADER_BYTES_MAX) {
            Ok(parsed) => parsed,
            Err(_) => return PreambleStep::Malformed,
        };
        let needed = match parsed {
            Parsed::Header { source, .. } => return PreambleStep::Header(source),
            Parsed::Absent => return PreambleStep::Absent,
            Parsed::Incomplete { needed } => needed,
        };
        if buf.is_empty() {
            // Nothing consumed yet: peek, so bytes that are not a header stay
            // in the socket for the HTTP or TLS layer.
            let mut probe = [0u8; proxy_header::FIXED_BYTES];
            match socket.peek(&mut probe) {
                Ok(0) => return PreambleStep::Absent, // EOF: let the layer see it
                Ok(n) => match proxy_header::parse(&probe[..n], PROXY_HEADER_BYTES_MAX) {
                    Ok(Parsed::Absent) => return PreambleStep::Absent,
                    Err(_) => return PreambleStep::Malformed,
                    // A header: consume its fixed part below, once all here.
                    Ok(_) if n < proxy_header::FIXED_BYTES => return PreambleStep::Pending,
                    Ok(_) => {}
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PreambleStep::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return PreambleStep::Failed,
            }
        }
        let want = needed.max(proxy_header::FIXED_BYTES) - buf.len();
        let mut chunk = [0u8; 256];
        let take = want.min(chunk.len());
        match socket.read(&mut chunk[..take]) {
            Ok(0) => return PreambleStep::Failed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PreambleStep::Pending,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return PreambleStep::Failed,
        }
    }
}

fn read_clock() -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        instant: Instant::now(),
        date: http_date(unix_secs),
    }
}

/// Moves bytes socket → `conn` while `conn` wants them; see
/// [`TlsLayer::pump_read`] for the contract.
fn pump_read(socket: &mut TcpStream, conn: &mut Connection, now: Instant) -> bool {
    let mut progress = false;
    loop {
        let space = conn.read_space();
        if space.is_empty() {
            return progress;
        }
        match socket.read(space) {
            Ok(0) => {
                conn.handle_eof();
                return true;
            }
            Ok(n) => {
                conn.handle_read(n, now);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return progress,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                conn.handle_transport_error();
                return true;
            }
        }
    }
}

/// Moves bytes `conn` → socket, and half-closes when `conn` asks.
fn pump_write(socket: &mut TcpStream, conn: &mut Connection) -> bool {
    let mut progress = false;
    loop {
        let out = conn.poll_transmit();
        if out.is_empty() {
            if conn.poll_shutdown() {
                let _ = socket.shutdown(Shutdown::Write);
                conn.handle_shutdown();
                return true;
            }
            return progress;
        }
        match socket.write(out) {
            Ok(0) => {
                conn.handle_transport_error();
                return true;
            }
            Ok(n) => {
                conn.handle_sent(n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return progress,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                conn.handle_transport_error();
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_avoid_reserved_ones() {
        let max_slot = crate::limits::CONNECTIONS_MAX_CEILING - 1;
        for (slot, generation) in [(0, 0), (7, 12345), (max_slot, GENERATION_MASK)] {
            let t = token(slot, generation);
            assert_eq!(untoken(t), (slot, generation));
            assert_ne!(t, LISTENER);
            assert_ne!(t, WAKER);
        }
    }
}
