//! The [`Sink`](super::Sink)'s loop: one thread, one `mio::Poll`, every
//! connection non-blocking. Delayed answers are deadlines the poll timeout waits
//! for; a waker ends the loop at once.

use super::http1::{self, Answer, Framed, Request, BODY_BYTES_MAX, HEAD_BYTES_MAX};
use super::sink::{DecryptKey, Recorded, Shared, SinkConfig, STATS_PATH};
use crate::ece;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read as _, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

pub(super) struct Server {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    connections_max: usize,
    decrypt: Decryptor,
    record: Option<Box<dyn Write + Send>>,
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    /// Response bytes the socket did not take yet.
    output: Vec<u8>,
    /// An answer waiting for its delay; later requests wait behind it.
    held: Option<(Instant, Vec<u8>, bool)>,
    closing: bool,
    /// When the last read returned, on both clocks: the arrival of a request it
    /// completed.
    read_at: (Instant, u64),
}

impl Server {
    pub(super) fn bind(
        config: SinkConfig,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Server> {
        let mut listener = TcpListener::bind(config.listen)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listener,
            waker,
            shared,
            stop,
            conns: HashMap::new(),
            next_token: 0,
            connections_max: config.connections_max,
            decrypt: Decryptor::new(config.decrypt_keys, config.decrypt_every),
            record: config.record,
        })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(super) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Serves until the stop flag is set; an error if polling or the record fails.
    pub(super) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(key) => self.on_event(key, event.is_readable(), event.is_writable()),
                }
            }
            self.release_due(Instant::now());
            if let Some(out) = self.record.as_mut() {
                out.flush()?;
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.held.as_ref().map(|h| h.0))
            .min()
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock, or EMFILE and friends: try again on the next readiness.
                Err(_) => return,
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        if self.conns.len() >= self.connections_max {
            self.shared.count_connection(true);
            return;
        }
        let _ = stream.set_nodelay(true);
        let token = self.next_token;
        self.next_token = (self.next_token + 1) % WAKER.0;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(token), interest)
            .is_err()
        {
            return;
        }
        self.shared.count_connection(false);
        let conn = Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            held: None,
            closing: false,
            read_at: (Instant::now(), unix_ns()),
        };
        self.conns.insert(token, conn);
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        let keep = (!writable || flush(&mut conn))
            && (!readable || read_all(&mut conn))
            && self.advance(&mut conn);
        self.keep_or_close(key, conn, keep);
    }

    /// Answers held requests whose delay is over, then what waited behind them.
    fn release_due(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.held.as_ref().is_some_and(|h| h.0 <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            let Some(mut conn) = self.conns.remove(&key) else {
                continue;
            };
            if let Some((_, response, close)) = conn.held.take() {
                conn.output.extend_from_slice(&response);
                conn.closing |= close;
            }
            let keep = self.advance(&mut conn);
            self.keep_or_close(key, conn, keep);
        }
    }

    fn keep_or_close(&mut self, key: usize, mut conn: Conn, keep: bool) {
        if keep && !(conn.closing && conn.output.is_empty() && conn.held.is_none()) {
            self.conns.insert(key, conn);
        } else {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Answers every complete request in the input unless an answer is held;
    /// `false` when the connection should go.
    fn advance(&mut self, conn: &mut Conn) -> bool {
        let mut used = 0;
        while conn.held.is_none() && !conn.closing {
            match http1::frame(&conn.input[used..]) {
                Framed::Request(request, len) => {
                    used += len;
                    self.answer(conn, request);
                }
                Framed::Incomplete => break,
                Framed::Malformed => return false,
            }
        }
        conn.input.drain(..used);
        flush(conn)
    }

    fn answer(&mut self, conn: &mut Conn, request: Request) {
        let close = request.wants_close();
        if request.method == "GET" && request.path == STATS_PATH {
            let body = self.shared.stats().json();
            conn.output.extend_from_slice(&http1::json_response(&body));
            conn.closing |= close;
            return;
        }
        let encrypted = request.is_encrypted();
        let decrypted = if encrypted {
            self.decrypt.judge(&request)
        } else {
            None
        };
        let (at, at_unix_ns) = conn.read_at;
        let path = self.record.is_some().then(|| request.path.clone());
        let recorded = Recorded {
            method: request.method,
            path: request.path,
            headers: request.headers,
            body: request.body,
            at,
            at_unix_ns,
            status: 0,
            decrypted,
        };
        let decision = self.shared.record(recorded, encrypted);
        if let (Some(out), Some(path)) = (self.record.as_mut(), path) {
            // A failed write shows again at the flush that ends this turn.
            let _ = write_record(out, &path, at_unix_ns, decrypted, decision.status);
        }
        let response = http1::response(&Answer {
            status: decision.status,
            retry_after: decision.retry_after,
            close,
        });
        if decision.delay.is_zero() {
            conn.output.extend_from_slice(&response);
            conn.closing |= close;
        } else {
            conn.held = Some((at + decision.delay, response, close));
        }
    }
}

/// One line of the record: `PATH ARRIVAL_UNIX_NS`, then ` ok` or ` undecryptable` when
/// the body was decrypted, then ` status=N` when the answer was not a 2xx.
fn write_record(
    out: &mut dyn Write,
    path: &str,
    at_unix_ns: u64,
    decrypted: Option<bool>,
    status: u16,
) -> std::io::Result<()> {
    write!(out, "{path} {at_unix_ns}")?;
    match decrypted {
        Some(true) => write!(out, " ok")?,
        Some(false) => write!(out, " undecryptable")?,
        None => {}
    }
    if !(200..300).contains(&status) {
        write!(out, " status={status}")?;
    }
    writeln!(out)
}

/// Reads what the socket has; `false` on end of stream, an error, or more input
/// than one request may hold.
fn read_all(conn: &mut Conn) -> bool {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                conn.input.extend_from_slice(&chunk[..n]);
                conn.read_at = (Instant::now(), unix_ns());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if conn.input.len() > HEAD_BYTES_MAX + BODY_BYTES_MAX {
            return false;
        }
    }
}

/// Writes the parked output; `false` on a broken connection.
fn flush(conn: &mut Conn) -> bool {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return false,
            Ok(n) => {
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Decrypts a sampled share of the encrypted bodies with the keys of the longest
/// matching path prefix.
struct Decryptor {
    /// Longest prefix first, so the first match is the best one.
    keys: Vec<DecryptKey>,
    every: u64,
    /// Encrypted requests to let pass before the next decryption.
    skip: u64,
}

impl Decryptor {
    fn new(mut keys: Vec<DecryptKey>, every: u64) -> Decryptor {
        keys.sort_by_key(|k| std::cmp::Reverse(k.prefix.len()));
        Decryptor {
            keys,
            every: every.max(1),
            skip: 0,
        }
    }

    /// `Some(decrypted?)` when this encrypted request is picked for decryption.
    fn judge(&mut self, request: &Request) -> Option<bool> {
        if self.keys.is_empty() {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        self.skip = self.every - 1;
        let ok = self
            .keys
            .iter()
            .find(|k| request.path.starts_with(&k.prefix))
            .is_some_and(|k| ece::decrypt(&request.body, &k.private_key, &k.auth).is_ok());
        Some(ok)
    }
}
