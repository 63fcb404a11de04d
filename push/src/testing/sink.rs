//! [`Sink`]: the one push-service stand-in, for unit tests, the server's tests and
//! the `push-sink` benchmark binary.
//!
//! # What it never does
//!
//! - **No TLS, no chunked bodies, no HTTP/2.** Requests are framed by
//!   `Content-Length` only; a request it cannot frame closes its connection.
//! - **No thread per connection.** One mio loop (`serve.rs`) serves every
//!   keep-alive connection, and a delayed answer is a deadline on that loop, not
//!   a sleep; decryption runs on the loop too, so a benchmark sees its cost.
//! - **No unbounded memory.** Heads over 64 KiB, bodies over 1 MiB and connections
//!   past [`SinkConfig::connections_max`] are refused. Requests are kept in memory only when
//!   [`SinkConfig::keep_requests`] says so (tests); a benchmark writes one line per
//!   request to [`SinkConfig::record`] instead.

use super::serve::Server;
use crate::ece;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Connections served at once by default ([`SinkConfig::connections_max`]): a
/// benchmark's sender pool keeps far fewer open.
pub const CONNECTIONS_MAX: usize = 4096;

/// `GET` this path for the counters as JSON ([`SinkStats::json`]); it is not
/// recorded.
pub const STATS_PATH: &str = "/_sink/stats";

/// How a [`Sink`] starts. [`SinkConfig::default`] is what tests want: loopback,
/// `201 Created`, every request kept in memory.
pub struct SinkConfig {
    /// Where to listen; port 0 picks a free one ([`Sink::addr`] tells which).
    pub listen: SocketAddr,
    /// The status of paths without [`Sink::set_status`] or a script.
    pub status: u16,
    /// Keep every request for [`Sink::requests`] and [`Sink::wait_for`].
    pub keep_requests: bool,
    /// Receives one line per request, `PATH ARRIVAL_UNIX_NS`, plus ` ok` or
    /// ` undecryptable` when it was decrypted, plus ` status=N` when the answer
    /// was not a 2xx; flushed after every turn of the loop, so another process
    /// can follow a file.
    pub record: Option<Box<dyn Write + Send>>,
    /// Keys to decrypt `aes128gcm` bodies with, chosen by the longest path prefix.
    pub decrypt_keys: Vec<DecryptKey>,
    /// Decrypt the 1st, (N+1)th, (2N+1)th... encrypted request (at least 1).
    pub decrypt_every: u64,
    /// Connections served at once; more are accepted, counted in
    /// [`SinkStats::refused`] and closed.
    pub connections_max: usize,
    /// Answer this many of every 1,000 requests (drawn at random, from `fail_seed`)
    /// with `fail_status` instead of the path's status: a push service that fails
    /// now and then. Paths with a status or a script of their own are not touched.
    pub fail_per_mille: u16,
    pub fail_status: u16,
    pub fail_seed: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            status: 201,
            keep_requests: true,
            record: None,
            decrypt_keys: Vec::new(),
            decrypt_every: 1,
            connections_max: CONNECTIONS_MAX,
            fail_per_mille: 0,
            fail_status: 500,
            fail_seed: 1,
        }
    }
}

/// A user agent's private key and auth secret, for requests whose path starts
/// with `prefix`.
pub struct DecryptKey {
    pub prefix: String,
    pub private_key: Zeroizing<[u8; 32]>,
    pub auth: [u8; ece::AUTH_SECRET_LEN],
}

impl fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// One request as the [`Sink`] received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the read that completed the request returned, before any
    /// [`Sink::set_delay`].
    pub at: Instant,
    /// The same moment on `CLOCK_REALTIME`, nanoseconds since the Unix epoch (the
    /// clock other processes of a benchmark stamp with).
    pub at_unix_ns: u64,
    /// The status the sink answered (or will answer, during a delay).
    pub status: u16,
    /// `Some(decrypted?)` when this request was picked for decryption.
    pub decrypted: Option<bool>,
}

impl Recorded {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http1::find_header(&self.headers, name)
    }
}

/// The sink's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Connections accepted and served.
    pub connections: u64,
    /// Requests answered ([`STATS_PATH`] excluded).
    pub requests: u64,
    /// Body bytes of those requests.
    pub bytes: u64,
    pub encrypted: u64,
    pub decrypted: u64,
    pub undecryptable: u64,
    /// Connections closed at once because [`SinkConfig::connections_max`] were open.
    pub refused: u64,
    /// Arrival of the first and the last request, Unix nanoseconds.
    pub first_ns: u64,
    pub last_ns: u64,
}

impl SinkStats {
    /// The counters as one JSON object, as [`STATS_PATH`] answers them.
    pub fn json(&self) -> String {
        format!(
            "{{\"connections\":{},\"requests\":{},\"bytes\":{},\"encrypted\":{},\"decrypted\":{},\"undecryptable\":{},\"refused\":{},\"first_ns\":{},\"last_ns\":{}}}",
            self.connections,
            self.requests,
            self.bytes,
            self.encrypted,
            self.decrypted,
            self.undecryptable,
            self.refused,
            self.first_ns,
            self.last_ns
        )
    }
}

/// A fake push service: an HTTP/1.1 server that records every request and
/// answers per path.
///
/// - Answers [`SinkConfig::status`] (`201 Created`) unless told otherwise:
///   [`Sink::set_status`] for a path, or [`Sink::set_script`] for a sequence of
///   one-off answers (say, `500, 500`, then the path's status).
/// - 3xx answers carry `Location: /moved`, so a client that followed redirects
///   would show up as a request to `/moved`.
/// - Keeps connections alive (HTTP/1.1 default) and answers pipelined requests in
///   order; a delayed answer holds back the later ones of its connection only.
/// - Stops on drop or [`Sink::stop`] at once, delays in progress included: the
///   listener and every connection close and the loop thread is joined.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Sink {
    /// A sink on `127.0.0.1` with [`SinkConfig::default`]. Panics if it cannot
    /// bind (tests only).
    pub fn start() -> Self {
        Sink::start_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// A sink listening on `ip` (a port of its own choice): a stand-in public address in
    /// a test's private network namespace, say. Panics if it cannot bind (tests only).
    pub fn start_on(ip: IpAddr) -> Self {
        let config = SinkConfig {
            listen: SocketAddr::new(ip, 0),
            ..SinkConfig::default()
        };
        Sink::with_config(config).expect("start the sink on a local address")
    }

    /// A sink as `config` says; fails if the address cannot be bound.
    pub fn with_config(config: SinkConfig) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default_status: config.status,
                keep_requests: config.keep_requests,
                fail_per_mille: config.fail_per_mille.min(1000),
                fail_status: config.fail_status,
                // xorshift never leaves zero.
                fail_rng: config.fail_seed.max(1),
                ..State::default()
            }),
            arrived: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server::bind(config, Arc::clone(&shared), Arc::clone(&stop))?;
        let addr = server.local_addr()?;
        let waker = server.waker();
        let thread = thread::Builder::new()
            .name("push-sink".into())
            .spawn(move || server.run())?;
        Ok(Sink {
            addr,
            shared,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://IP:PORT`, the origin every [`Sink::url`] shares.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far, in arrival order (none unless
    /// [`SinkConfig::keep_requests`]).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Waits until at least `count` requests have arrived or `timeout` has
    /// passed, and returns all recorded so far (possibly fewer than `count`).
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.requests.len() < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.requests.clone()
    }

    /// Connections accepted so far (to observe keep-alive).
    pub fn connections(&self) -> usize {
        let stats = self.stats();
        (stats.connections + stats.refused) as usize
    }

    /// The counters so far.
    pub fn stats(&self) -> SinkStats {
        self.shared.lock().stats
    }

    /// Answer `status` to requests for `path` from now on.
    pub fn set_status(&self, path: &str, status: u16) {
        self.shared.route(path, |r| r.status = Some(status));
    }

    /// Answer the next requests for `path` with `statuses`, one each, then
    /// fall back to the path's status.
    pub fn set_script(&self, path: &str, statuses: &[u16]) {
        self.shared
            .route(path, |r| r.script = statuses.iter().copied().collect());
    }

    /// Add `Retry-After: secs` to every answer for `path`.
    pub fn set_retry_after(&self, path: &str, secs: u64) {
        self.shared
            .route(path, |r| r.retry_after = Some(secs.to_string()));
    }

    /// Add `Retry-After: http_date` (an IMF-fixdate) to every answer for `path`.
    pub fn set_retry_after_date(&self, path: &str, http_date: &str) {
        self.shared
            .route(path, |r| r.retry_after = Some(http_date.to_owned()));
    }

    /// Wait `delay` before answering requests for `path` (the request is
    /// recorded on arrival, before the delay).
    pub fn set_delay(&self, path: &str, delay: Duration) {
        self.shared.route(path, |r| r.delay = delay);
    }

    /// Stops the sink and returns its counters; an error if the loop failed (a
    /// record write, say).
    pub fn stop(mut self) -> io::Result<SinkStats> {
        self.halt()?;
        Ok(self.stats())
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // A failed wake leaves the loop to see the flag on its next event; the
        // join below still ends once it does.
        let _ = self.waker.wake();
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sink's loop panicked")))
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// What the test thread and the loop thread share.
pub(super) struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    routes: HashMap<String, Route>,
    default_status: u16,
    keep_requests: bool,
    stats: SinkStats,
    /// Random failures: per mille, status, and the xorshift state that draws them.
    fail_per_mille: u16,
    fail_status: u16,
    fail_rng: u64,
}

#[derive(Default)]
struct Route {
    status: Option<u16>,
    script: VecDeque<u16>,
    retry_after: Option<String>,
    delay: Duration,
}

/// The answer picked for one request, and how long to hold it back.
pub(super) struct Decision {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
}

impl State {
    /// `Some(fail_status)` for `fail_per_mille` of the calls, at random.
    fn draw_failure(&mut self) -> Option<u16> {
        if self.fail_per_mille == 0 {
            return None;
        }
        // xorshift64: a test stand-in's dice, not a secret.
        let mut x = self.fail_rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.fail_rng = x;
        (x % 1000 < u64::from(self.fail_per_mille)).then_some(self.fail_status)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route(&self, path: &str, change: impl FnOnce(&mut Route)) {
        change(self.lock().routes.entry(path.to_owned()).or_default());
    }

    /// Picks the answer, counts and records the request, under one lock so
    /// scripts are consumed in arrival order.
    pub(super) fn record(&self, mut request: Recorded, encrypted: bool) -> Decision {
        let mut state = self.lock();
        let default_status = state.default_status;
        let decision = match state.routes.get_mut(&request.path) {
            Some(route) => Decision {
                status: route
                    .script
                    .pop_front()
                    .or(route.status)
                    .unwrap_or(default_status),
                retry_after: route.retry_after.clone(),
                delay: route.delay,
            },
            None => Decision {
                status: state.draw_failure().unwrap_or(default_status),
                retry_after: None,
                delay: Duration::ZERO,
            },
        };
        request.status = decision.status;
        count(&mut state.stats, &request, encrypted);
        if state.keep_requests {
            state.requests.push(request);
            drop(state);
            self.arrived.notify_all();
        }
        decision
    }

    pub(super) fn count_connection(&self, refused: bool) {
        let stats = &mut self.lock().stats;
        if refused {
            stats.refused += 1;
        } else {
            stats.connections += 1;
        }
    }

    pub(super) fn stats(&self) -> SinkStats {
        self.lock().stats
    }
}

fn count(stats: &mut SinkStats, request: &Recorded, encrypted: bool) {
    stats.requests += 1;
    stats.bytes += request.body.len() as u64;
    if stats.first_ns == 0 {
        stats.first_ns = request.at_unix_ns;
    }
    stats.last_ns = request.at_unix_ns;
    stats.encrypted += u64::from(encrypted);
    match request.decrypted {
        Some(true) => stats.decrypted += 1,
        Some(false) => stats.undecryptable += 1,
        None => {}
    }
}
