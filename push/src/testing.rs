//! Test doubles for push delivery (this crate's tests, and other crates'
//! with the `testing` feature):
//!
//! - [`Subscriber`] stands in for a browser's push subscription: it makes a
//!   key pair and decrypts bodies.
//! - [`Sink`] stands in for a push service: a tiny HTTP/1.1 server on
//!   loopback that records every request and answers a status chosen per
//!   path.
//!
//! Never use them in production: [`Subscriber`] holds a private key in plain
//! memory and panics if the system RNG fails; [`Sink`] panics if it cannot
//! bind loopback.

use crate::b64;
use crate::ece::{self, EceError};
use crate::endpoint::{Keys, PushTarget, TargetError};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A user agent's key pair and auth secret.
pub struct Subscriber {
    private_key: Zeroizing<[u8; 32]>,
    p256dh: [u8; ece::PUBLIC_KEY_LEN],
    auth: [u8; ece::AUTH_SECRET_LEN],
}

impl Subscriber {
    /// Draws a fresh key pair and auth secret from the system RNG.
    pub fn generate() -> Self {
        let rng = SystemRandom::new();
        let mut auth = [0u8; ece::AUTH_SECRET_LEN];
        rng.fill(&mut auth).expect("system RNG");
        // A random 32-byte string is a valid scalar unless it is zero or at
        // least the group order, which happens with probability ~2^-32.
        loop {
            let mut scalar = Zeroizing::new([0u8; 32]);
            rng.fill(&mut scalar[..]).expect("system RNG");
            if let Ok(secret) = p256::SecretKey::from_slice(&scalar[..]) {
                let point = secret.public_key().to_encoded_point(false);
                let p256dh = point
                    .as_bytes()
                    .try_into()
                    .expect("uncompressed point is 65 bytes");
                return Self {
                    private_key: scalar,
                    p256dh,
                    auth,
                };
            }
        }
    }

    pub fn p256dh(&self) -> &[u8; ece::PUBLIC_KEY_LEN] {
        &self.p256dh
    }

    pub fn auth(&self) -> &[u8; ece::AUTH_SECRET_LEN] {
        &self.auth
    }

    /// `keys.p256dh` as a browser's `toJSON()` gives it.
    pub fn p256dh_b64url(&self) -> String {
        b64::encode(&self.p256dh)
    }

    /// `keys.auth` as a browser's `toJSON()` gives it.
    pub fn auth_b64url(&self) -> String {
        b64::encode(&self.auth)
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.p256dh, self.auth).expect("p256 produced an on-curve point")
    }

    /// A Web Push target at `endpoint` with this subscriber's keys.
    pub fn target(&self, endpoint: &str) -> Result<PushTarget, TargetError> {
        PushTarget::web_push(endpoint, &self.p256dh_b64url(), &self.auth_b64url())
    }

    /// The `PushSubscription.toJSON()` a browser would hand the app.
    pub fn subscription_json(&self, endpoint: &str) -> String {
        serde_json::json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh_b64url(), "auth": self.auth_b64url() },
        })
        .to_string()
    }

    /// Decrypts an `aes128gcm` body the way the browser would.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, EceError> {
        ece::decrypt(body, &self.private_key, &self.auth)
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscriber(<redacted>)")
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
    /// When the whole request (head and body) had arrived, before any
    /// [`Sink::set_delay`].
    pub at: Instant,
    /// The status the sink answered (or will answer, during a delay).
    pub status: u16,
}

impl Recorded {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A fake push service: an HTTP/1.1 server on `127.0.0.1:0` that records
/// every request and answers per path.
///
/// - Answers `201 Created` unless told otherwise: [`Sink::set_status`] for a
///   path, or [`Sink::set_script`] for a sequence of one-off answers (say,
///   `500, 500`, then the path's status).
/// - 3xx answers carry `Location: /moved`, so a client that followed
///   redirects would show up as a request to `/moved`.
/// - Keeps connections alive (HTTP/1.1 default) and reads bodies by
///   `Content-Length` only; no chunked bodies, no TLS.
/// - Stops on drop within about [`Sink::POLL`] plus any delay in progress:
///   the listener closes and every connection thread is joined.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<SinkShared>,
    accept: Option<JoinHandle<()>>,
}

struct SinkShared {
    stop: AtomicBool,
    state: Mutex<SinkState>,
    arrived: Condvar,
    connections: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicUsize,
}

#[derive(Default)]
struct SinkState {
    requests: Vec<Recorded>,
    routes: HashMap<String, Route>,
}

#[derive(Default)]
struct Route {
    status: Option<u16>,
    script: VecDeque<u16>,
    retry_after_s: Option<u64>,
    delay: Duration,
}

/// How the sink answers one request.
struct Answer {
    status: u16,
    retry_after_s: Option<u64>,
    delay: Duration,
}

/// Bounds on what the sink buffers per request; push requests are a few KiB.
const SINK_HEAD_BYTES_MAX: usize = 64 * 1024;
const SINK_BODY_BYTES_MAX: usize = 1024 * 1024;

impl Sink {
    /// How often idle connection threads and delays look at the stop flag.
    pub const POLL: Duration = Duration::from_millis(20);

    pub fn start() -> Self {
        Sink::start_on("127.0.0.1".parse().expect("an address"))
    }

    /// A sink listening on `ip` (a port of its own choice): a stand-in public address in
    /// a test's private network namespace, say.
    pub fn start_on(ip: std::net::IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind the sink's address");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(SinkShared {
            stop: AtomicBool::new(false),
            state: Mutex::new(SinkState::default()),
            arrived: Condvar::new(),
            connections: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("push-sink-accept".into())
            .spawn(move || sink_accept(&listener, &accept_shared))
            .expect("spawn sink thread");
        Self {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT`, the origin every [`Sink::url`] shares.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far, in arrival order.
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
        self.shared.accepted.load(Ordering::SeqCst)
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
        self.shared.route(path, |r| r.retry_after_s = Some(secs));
    }

    /// Wait `delay` before answering requests for `path` (the request is
    /// recorded on arrival, before the delay).
    pub fn set_delay(&self, path: &str, delay: Duration) {
        self.shared.route(path, |r| r.delay = delay);
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // The accept thread blocks in accept(); one connection wakes it to
        // see the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for connection in connections {
            let _ = connection.join();
        }
    }
}

impl SinkShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route(&self, path: &str, change: impl FnOnce(&mut Route)) {
        change(self.lock().routes.entry(path.to_owned()).or_default());
    }

    /// Picks the answer and records the request, under one lock so scripts
    /// are consumed in arrival order.
    fn record(&self, mut request: Recorded) -> Answer {
        let mut state = self.lock();
        let route = state.routes.entry(request.path.clone()).or_default();
        let answer = Answer {
            status: route.script.pop_front().or(route.status).unwrap_or(201),
            retry_after_s: route.retry_after_s,
            delay: route.delay,
        };
        request.status = answer.status;
        state.requests.push(request);
        drop(state);
        self.arrived.notify_all();
        answer
    }
}

fn sink_accept(listener: &TcpListener, shared: &Arc<SinkShared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("push-sink-conn".into())
            .spawn(move || sink_serve(stream, &conn_shared));
        if let Ok(handle) = spawned {
            let mut connections = shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            connections.retain(|c| !c.is_finished());
            connections.push(handle);
        }
    }
}

fn sink_serve(mut stream: TcpStream, shared: &SinkShared) {
    // A short read timeout lets an idle keep-alive connection notice the
    // stop flag, so dropping the sink stays bounded.
    if stream.set_read_timeout(Some(Sink::POLL)).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some(request) = sink_read_request(&mut stream, &mut buf, &shared.stop) {
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let answer = shared.record(request);
        if !sink_sleep(answer.delay, &shared.stop) {
            return;
        }
        let response = sink_response(&answer);
        if stream.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads one request; `None` on end of stream, error, oversize or stop.
/// Bytes past the request stay in `buf` for the next one (pipelining).
fn sink_read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    stop: &AtomicBool,
) -> Option<Recorded> {
    let head_len = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > SINK_HEAD_BYTES_MAX {
            return None;
        }
        sink_read_more(stream, buf, stop)?;
    };
    let head = std::str::from_utf8(&buf[..head_len]).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let body_len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Some(0), |(_, v)| v.parse::<usize>().ok())?;
    if body_len > SINK_BODY_BYTES_MAX {
        return None;
    }
    while buf.len() < head_len + body_len {
        sink_read_more(stream, buf, stop)?;
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    buf.drain(..head_len + body_len);
    Some(Recorded {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
        status: 0,
    })
}

fn sink_read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, stop: &AtomicBool) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Sleeps `delay` in [`Sink::POLL`] steps; `false` if told to stop.
fn sink_sleep(delay: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + delay;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(Sink::POLL));
    }
}

fn sink_response(answer: &Answer) -> String {
    let reason = match answer.status {
        200 => "OK",
        201 => "Created",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Length: 0\r\n",
        answer.status
    );
    if let Some(secs) = answer.retry_after_s {
        response.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    if (300..400).contains(&answer.status) {
        response.push_str("Location: /moved\r\n");
    }
    response.push_str("\r\n");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_json_parses_back() {
        let s = Subscriber::generate();
        let json = s.subscription_json("https://push.example.net/x");
        let target = PushTarget::from_subscription_json(&json).unwrap();
        assert_eq!(target.keys(), Some(&s.keys()));
        assert_eq!(s.target("https://push.example.net/x").unwrap(), target);
    }

    fn sender() -> crate::Sender {
        crate::Sender::new(crate::SenderConfig {
            use_env_proxy: false,
            timeout_ms: 5_000,
            ..crate::SenderConfig::default()
        })
    }

    fn notification(payload: &[u8]) -> crate::Notification<'_> {
        crate::Notification {
            kind: crate::Kind::NewMail,
            payload_json: payload,
            topic: None,
            simple_push_version: 7,
        }
    }

    #[test]
    fn sink_records_and_answers_per_path() {
        use crate::Outcome;
        let sink = Sink::start();
        let sender = sender();
        let subscriber = Subscriber::generate();
        let ok = subscriber.target(&sink.url("/ok")).unwrap();
        assert_eq!(
            sender.send(&ok, &notification(b"{}"), 0),
            Outcome::Delivered
        );

        sink.set_script("/flaky", &[500, 429]);
        sink.set_retry_after("/flaky", 3);
        let flaky = subscriber.target(&sink.url("/flaky")).unwrap();
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::Retry { status: Some(500) }
        );
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(
            sender.send(&flaky, &notification(b"{}"), 0),
            Outcome::Delivered
        );

        sink.set_status("/moved-away", 301);
        let moved = PushTarget::simple_push(&sink.url("/moved-away")).unwrap();
        assert_eq!(
            sender.send(&moved, &notification(b""), 0),
            Outcome::Redirect { status: 301 }
        );

        let requests = sink.wait_for(5, Duration::from_secs(5));
        let seen: Vec<_> = requests
            .iter()
            .map(|r| (r.path.as_str(), r.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("/ok", 201),
                ("/flaky", 500),
                ("/flaky", 429),
                ("/flaky", 201),
                ("/moved-away", 301)
            ]
        );
        let body = subscriber.decrypt(&requests[0].body).unwrap();
        assert_eq!(body, b"{}");
        assert_eq!(requests[4].method, "PUT");
        assert_eq!(requests[4].body, b"version=7");
        assert!(requests.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(sink.connections(), 1, "keep-alive reuses one connection");
    }

    #[test]
    fn sink_delays_and_stops_promptly() {
        let sink = Sink::start();
        sink.set_delay("/slow", Duration::from_millis(150));
        let sender = sender();
        let target = PushTarget::web_push_unencrypted(&sink.url("/slow")).unwrap();
        let start = Instant::now();
        assert_eq!(
            sender.send(&target, &notification(b"{}"), 0),
            crate::Outcome::Delivered
        );
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(sink.wait_for(2, Duration::from_millis(50)).len() == 1);
        // The sender keeps its connection open; drop must still be quick.
        let start = Instant::now();
        drop(sink);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
