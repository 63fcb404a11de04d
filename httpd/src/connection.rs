//! One HTTP/1.1 connection as a state machine over plaintext bytes.
//!
//! Read first: RFC 9112, section 9 (connection management), and RFC 9110,
//! section 10.1.1 (Expect).
//!
//! No sockets, no TLS, no clock: the reactor passes `now` into every method
//! that needs time, moves bytes between the socket (or the TLS layer) and
//! the buffers here, and hands out the requests this type yields.
//!
//! # Order of calls
//!
//! After creating a [`Connection`], and after any socket readiness, response
//! or timeout, the reactor MUST repeat, until a round makes no progress:
//!
//! 1. read into [`Connection::read_space`] (while it is not empty) and report
//!    with [`Connection::handle_read`], or [`Connection::handle_eof`];
//! 2. take [`Connection::poll_request`] and hand it to the application;
//! 3. write [`Connection::poll_transmit`] and report with
//!    [`Connection::handle_sent`];
//! 4. when [`Connection::poll_shutdown`] says so, half-close the socket and
//!    report with [`Connection::handle_shutdown`].
//!
//! Then it arms a timer for [`Connection::poll_timeout`] and calls
//! [`Connection::handle_timeout`] when it fires (a spurious call is a no-op),
//! and it drops the connection once [`Connection::is_closed`].
//!
//! # Phases
//!
//! `ReadingHead` → `ReadingBody` → `Responding` → `ReadingHead` (keep-alive)
//! or `Closing` → `Closed`. Nothing is read while `Responding`, nor in
//! `ReadingHead` until the previous response has been written: one request
//! at a time ([`REQUESTS_IN_FLIGHT_MAX`](crate::limits::REQUESTS_IN_FLIGHT_MAX)).
//! A side effect is that a client that goes away while its request is with
//! the application is noticed only when its response is written.

use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use zeroize::Zeroize;

use crate::buffer::ReadBuf;
use crate::date::HTTP_DATE_LEN;
use crate::limits::Limits;
use crate::parse::{parse_head, Head, Rejection};
use crate::request::{Method, Request, RequestId};
use crate::response::{self, Framing, Persistence, Response};
use crate::stats::Stats;

/// A reading of the clock, taken once per reactor turn.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub(crate) instant: Instant,
    /// The `Date` header value for responses queued now.
    pub(crate) date: [u8; HTTP_DATE_LEN],
}

/// A write buffer whose allocation is kept below this once drained, so an
/// idle connection does not pin the memory of its largest response.
const SEND_RETAINED_BYTES_MAX: usize = 16 * 1024;

/// Input discarded while closing before the connection is dropped without
/// further courtesy. Lingering exists so a client still sending a refused
/// body reads our 413 rather than a reset; it must not let a client that
/// sends faster than we read hold the loop.
const DISCARD_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug)]
enum Phase {
    /// Waiting for a request head (or for the last response to be written).
    ReadingHead,
    /// The head is parsed (and its bytes zeroized); waiting for the body.
    ReadingBody(Box<Head>),
    /// The request is with the application.
    Responding(Pending),
    /// The last response is queued: flush it, half-close, discard input
    /// until the peer closes or the linger deadline passes.
    Closing,
    Closed,
}

/// What answering the request in flight needs to know.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    head_only: bool,
    persistence: Persistence,
}

/// Which limit the single deadline enforces; implied by the phase, kept
/// explicit so a timeout knows what it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Idle,
    Request,
    Response,
    Linger,
}

/// One connection's HTTP state; see the module docs for the call order.
#[derive(Debug)]
pub(crate) struct Connection {
    peer: SocketAddr,
    /// Who the requests are from: the peer's address unless a trusted proxy
    /// said otherwise (see [`Connection::set_client`]).
    client: IpAddr,
    limits: Limits,
    recv: ReadBuf,
    send: Vec<u8>,
    /// Bytes at the front of `send` already written.
    sent: usize,
    phase: Phase,
    timer: Timer,
    deadline: Instant,
    shut_write: bool,
    peer_eof: bool,
    /// Input dropped while `Closing`, capped by [`DISCARD_BYTES_MAX`].
    discarded_bytes: usize,
}

impl Connection {
    /// A connection just accepted at `now`. Its first request must be
    /// complete within `request_timeout` of now, which also bounds a TLS
    /// handshake and a client that connects and says nothing.
    pub(crate) fn new(peer: SocketAddr, limits: Limits, now: Instant) -> Connection {
        Connection {
            peer,
            client: peer.ip().to_canonical(),
            limits,
            recv: ReadBuf::new(limits.read_buffer_bytes_max()),
            send: Vec::new(),
            sent: 0,
            phase: Phase::ReadingHead,
            timer: Timer::Request,
            deadline: now + limits.request_timeout,
            shut_write: false,
            peer_eof: false,
            discarded_bytes: 0,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Idle: waiting for a request with no byte of one received, nothing in
    /// flight and nothing left to send. Closing such a connection loses
    /// nothing but the connection (RFC 9112, section 9.8: a client "SHOULD
    /// be able to retry" on a keep-alive connection closed while idle).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::ReadingHead)
            && self.recv.is_empty()
            && !self.send_pending()
            && !self.peer_eof
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client the next requests are from, as a trusted proxy told.
    pub(crate) fn set_client(&mut self, client: IpAddr) {
        self.client = client.to_canonical();
    }

    fn send_pending(&self) -> bool {
        self.sent < self.send.len()
    }

    /// Where the next read from the peer goes. Empty when the connection does
    /// not want input now (see "Phases"); the reactor MUST then stop reading
    /// and try again after the next change.
    pub(crate) fn read_space(&mut self) -> &mut [u8] {
        let wanted = !self.peer_eof
            && match self.phase {
                Phase::ReadingHead => !self.send_pending(),
                Phase::ReadingBody(_) | Phase::Closing => true,
                Phase::Responding(_) | Phase::Closed => false,
            };
        if wanted {
            self.recv.spare_mut()
        } else {
            &mut []
        }
    }

    /// `n` bytes were read into [`Connection::read_space`].
    pub(crate) fn handle_read(&mut self, n: usize, now: Instant) {
        self.recv.commit(n);
        match self.phase {
            // The first byte of a request starts its clock.
            Phase::ReadingHead if self.timer == Timer::Idle && n > 0 => {
                self.set_timer(Timer::Request, now + self.limits.request_timeout);
            }
            Phase::Closing => {
                self.recv.clear();
                self.discarded_bytes += n;
                if self.discarded_bytes > DISCARD_BYTES_MAX {
                    self.phase = Phase::Closed;
                }
            }
            _ => {}
        }
    }

    /// The peer will send no more. Complete requests already buffered are
    /// still answered (a client may half-close after sending them); an
    /// incomplete one is dropped by [`Connection::poll_request`], which then
    /// closes once the queued responses are flushed.
    pub(crate) fn handle_eof(&mut self) {
        self.peer_eof = true;
        if matches!(self.phase, Phase::Closing) {
            self.recv.clear();
            if !self.send_pending() {
                self.phase = Phase::Closed;
            }
        }
    }

    /// The socket or TLS layer failed: nothing more can be exchanged.
    pub(crate) fn handle_transport_error(&mut self) {
        self.recv.clear();
        self.phase = Phase::Closed;
    }

    /// The next complete request, if one is ready, named `id`. A malformed or
    /// oversized one is answered here instead and the connection closes.
    #[must_use]
    pub(crate) fn poll_request(
        &mut self,
        id: RequestId,
        now: &Now,
        stats: &mut Stats,
    ) -> Option<Request> {
        loop {
            match &self.phase {
                Phase::ReadingHead => {
                    if self.send_pending() {
                        return None; // one response at a time
                    }
                    let parsed = match self.recv.is_empty() {
                        true => Ok(None),
                        false => parse_head(self.recv.filled(), &self.limits),
                    };
                    match parsed {
                        Ok(None) => {
                            self.close_if_eof(now.instant);
                            return None;
                        }
                        Ok(Some((head, len))) => self.start_body(head, len, stats),
                        Err(rejection) => {
                            self.reject(rejection, now, stats);
                            return None;
                        }
                    }
                }
                Phase::ReadingBody(head) if self.recv.len() >= head.content_length => {
                    return Some(self.dispatch(id, now.instant, stats));
                }
                Phase::ReadingBody(_) => {
                    self.close_if_eof(now.instant);
                    return None;
                }
                _ => return None,
            }
        }
    }

    /// After the peer's EOF, a request that is still incomplete never will
    /// be: drop it, flush what is queued, and close.
    fn close_if_eof(&mut self, now: Instant) {
        if !self.peer_eof {
            return;
        }
        if self.send_pending() {
            self.enter_closing(now);
        } else {
            self.recv.clear();
            self.phase = Phase::Closed;
        }
    }

    /// Drops the parsed head's bytes and waits for its body, inviting it with
    /// 100 Continue if the client asked and the body is not here yet.
    fn start_body(&mut self, head: Head, head_len: usize, stats: &mut Stats) {
        self.recv.consume(head_len);
        if head.expect_continue && head.content_length > self.recv.len() {
            self.send.extend_from_slice(response::CONTINUE);
            stats.count_response(100);
        }
        self.phase = Phase::ReadingBody(Box::new(head));
    }

    /// Moves the body out and the request to the application.
    fn dispatch(&mut self, id: RequestId, now: Instant, stats: &mut Stats) -> Request {
        let Phase::ReadingBody(head) = mem::replace(&mut self.phase, Phase::Closed) else {
            unreachable!("dispatch is called in ReadingBody only");
        };
        let Head {
            method,
            path,
            query,
            headers,
            content_length,
            http11,
            keep_alive,
            ..
        } = *head;
        let body = self.recv.take_front(content_length);
        // A peer that half-closed after its last request is told this is the
        // last response.
        let last = self.peer_eof && self.recv.is_empty();
        let persistence = match (keep_alive && !last, http11) {
            (false, _) => Persistence::Close,
            (true, true) => Persistence::KeepAliveDefault,
            (true, false) => Persistence::KeepAliveExplicit,
        };
        self.phase = Phase::Responding(Pending {
            seq: id.seq,
            head_only: method == Method::Head,
            persistence,
        });
        self.set_timer(Timer::Response, now + self.limits.response_timeout);
        stats.requests += 1;
        Request {
            id,
            method,
            path,
            query,
            body,
            peer: self.peer,
            client: self.client,
            headers,
        }
    }

    /// The application's answer to request `seq`. Returns false, changing
    /// nothing, when that request is not the one in flight (stale).
    #[must_use]
    pub(crate) fn handle_response(
        &mut self,
        seq: u64,
        response: Response,
        now: &Now,
        stats: &mut Stats,
    ) -> bool {
        self.answer(seq, response, false, now, stats)
    }

    /// Answers request `seq` on the server's behalf (the application never
    /// saw it) and closes the connection after the response.
    #[must_use]
    pub(crate) fn handle_refusal(
        &mut self,
        seq: u64,
        response: Response,
        now: &Now,
        stats: &mut Stats,
    ) -> bool {
        self.answer(seq, response, true, now, stats)
    }

    fn answer(
        &mut self,
        seq: u64,
        response: Response,
        close: bool,
        now: &Now,
        stats: &mut Stats,
    ) -> bool {
        let mut pending = match &self.phase {
            Phase::Responding(pending) if pending.seq == seq => *pending,
            _ => return false,
        };
        if close {
            pending.persistence = Persistence::Close;
        }
        let response = match response::validate(&response) {
            Ok(()) => response,
            Err(_) => {
                stats.responses_invalid += 1;
                Response::empty(500)
            }
        };
        self.queue(
            &response,
            pending.persistence,
            pending.head_only,
            now,
            stats,
        );
        if pending.persistence == Persistence::Close {
            self.enter_closing(now.instant);
        } else {
            self.phase = Phase::ReadingHead;
            if self.recv.is_empty() {
                self.set_timer(Timer::Idle, now.instant + self.limits.idle_timeout);
            } else {
                // A pipelined request is already waiting: its clock starts now.
                self.set_timer(Timer::Request, now.instant + self.limits.request_timeout);
            }
        }
        true
    }

    /// Answers the request being read (or in flight) with the server's own
    /// error, and closes.
    fn reject(&mut self, rejection: Rejection, now: &Now, stats: &mut Stats) {
        match rejection {
            Rejection::HeadersTooLarge => stats.rejected_headers_limit += 1,
            Rejection::PayloadTooLarge => stats.rejected_body_limit += 1,
            Rejection::RequestTimeout => stats.timed_out_request += 1,
            Rejection::BadRequest
            | Rejection::LengthRequired
            | Rejection::NotImplemented
            | Rejection::VersionNotSupported => stats.rejected_malformed += 1,
        }
        let response = Response::json(rejection.status(), rejection.json_body());
        self.queue(&response, Persistence::Close, false, now, stats);
        self.enter_closing(now.instant);
    }

    fn queue(
        &mut self,
        response: &Response,
        persistence: Persistence,
        head_only: bool,
        now: &Now,
        stats: &mut Stats,
    ) {
        let framing = Framing {
            persistence,
            head_only,
            date: &now.date,
        };
        response::encode(&mut self.send, response, framing);
        stats.count_response(response.status);
    }

    fn enter_closing(&mut self, now: Instant) {
        self.recv.clear();
        self.phase = Phase::Closing;
        self.set_timer(Timer::Linger, now + self.limits.linger_timeout);
    }

    fn set_timer(&mut self, timer: Timer, deadline: Instant) {
        self.timer = timer;
        self.deadline = deadline;
    }

    /// Bytes to write to the peer (or into the TLS layer).
    pub(crate) fn poll_transmit(&self) -> &[u8] {
        &self.send[self.sent..]
    }

    /// `n` bytes of [`Connection::poll_transmit`] were written.
    pub(crate) fn handle_sent(&mut self, n: usize) {
        assert!(
            n <= self.send.len() - self.sent,
            "sent more than was queued"
        );
        self.sent += n;
        if self.sent < self.send.len() {
            return;
        }
        self.sent = 0;
        // Responses may carry tokens too; wipe them once written (this also
        // wipes the spare capacity and empties the Vec).
        self.send.zeroize();
        if self.send.capacity() > SEND_RETAINED_BYTES_MAX {
            self.send = Vec::new();
        }
        if matches!(self.phase, Phase::Closing) && self.peer_eof {
            self.phase = Phase::Closed;
        }
    }

    /// True when the reactor should half-close the socket (after a TLS
    /// close_notify): the last response is fully written.
    pub(crate) fn poll_shutdown(&self) -> bool {
        matches!(self.phase, Phase::Closing)
            && !self.send_pending()
            && !self.shut_write
            && !self.peer_eof
    }

    /// The socket was half-closed for writing.
    pub(crate) fn handle_shutdown(&mut self) {
        self.shut_write = true;
    }

    /// When [`Connection::handle_timeout`] should next be called.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_closed()).then_some(self.deadline)
    }

    /// Enforces the deadline of the current phase; a no-op before it.
    pub(crate) fn handle_timeout(&mut self, now: &Now, stats: &mut Stats) {
        if self.is_closed() || now.instant < self.deadline {
            return;
        }
        match self.timer {
            Timer::Request
                if !self.recv.is_empty() || matches!(self.phase, Phase::ReadingBody(_)) =>
            {
                self.reject(Rejection::RequestTimeout, now, stats);
            }
            // Nothing of a request arrived: close without a word.
            Timer::Request | Timer::Idle => {
                stats.timed_out_idle += 1;
                self.recv.clear();
                self.phase = Phase::Closed;
            }
            Timer::Response => {
                stats.timed_out_response += 1;
                self.queue(&Response::empty(503), Persistence::Close, false, now, stats);
                self.enter_closing(now.instant);
            }
            Timer::Linger => {
                self.recv.clear();
                self.phase = Phase::Closed;
            }
        }
    }
}

impl Drop for Connection {
    /// An unsent response is wiped too; the read buffer wipes itself.
    fn drop(&mut self) {
        self.send.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::date::http_date;

    fn at(base: Instant, ms: u64) -> Now {
        Now {
            instant: base + Duration::from_millis(ms),
            date: http_date(784_111_777),
        }
    }

    fn new_conn(base: Instant) -> Connection {
        Connection::new("192.0.2.1:5000".parse().unwrap(), Limits::default(), base)
    }

    /// Feeds up to `bytes.len()` bytes, as far as the connection wants them;
    /// returns how many it took.
    fn feed(conn: &mut Connection, bytes: &[u8], now: Instant) -> usize {
        let space = conn.read_space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        conn.handle_read(n, now);
        n
    }

    fn drain(conn: &mut Connection) -> Vec<u8> {
        let out = conn.poll_transmit().to_vec();
        conn.handle_sent(out.len());
        out
    }

    fn id(seq: u64) -> RequestId {
        RequestId { slot: 0, seq }
    }

    /// (method, path, body) of each request a transcript yielded.
    type Seen = Vec<(Method, String, Vec<u8>)>;

    /// Runs `input` through a connection in chunks of `chunk` bytes, answering
    /// every request with its body; returns (method, path, body) per request
    /// and everything written.
    fn run_transcript(input: &[u8], chunk: usize) -> (Seen, Vec<u8>) {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        let (mut seen, mut out, mut fed, mut seq) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..10_000 {
            let end = (fed + chunk).min(input.len());
            fed += feed(&mut conn, &input[fed..end], now.instant);
            out.extend(drain(&mut conn));
            match conn.poll_request(id(seq), &now, &mut stats) {
                Some(request) => {
                    let response = Response::empty(200).with_body(request.body.to_vec());
                    assert!(conn.handle_response(seq, response, &now, &mut stats));
                    seen.push((request.method, request.path.clone(), request.body.to_vec()));
                    seq += 1;
                }
                None if fed == input.len() => return (seen, out),
                None => {}
            }
        }
        panic!("transcript did not finish");
    }

    #[test]
    fn split_invariance() {
        let input: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
            GET /b?q HTTP/1.1\r\nHost: h\r\n\r\n\r\n\
            PUT /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz\
            HEAD /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        let whole = run_transcript(input, input.len());
        assert_eq!(whole.0.len(), 4);
        assert_eq!(
            whole.0[0],
            (Method::Post, "/a".to_owned(), b"hello".to_vec())
        );
        assert_eq!(whole.0[3].0, Method::Head);
        for chunk in [1, 2, 3, 7, 64] {
            let split = run_transcript(input, chunk);
            assert_eq!(split.0, whole.0, "chunks of {chunk}");
            // Only a 100 Continue may differ: it is sent when the body is late.
            let without_continue = |out: &[u8]| {
                String::from_utf8_lossy(out).replace("HTTP/1.1 100 Continue\r\n\r\n", "")
            };
            assert_eq!(
                without_continue(&split.1),
                without_continue(&whole.1),
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn nothing_is_read_while_a_request_is_in_flight_or_its_response_unsent() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", now.instant);
        let request = conn.poll_request(id(0), &now, &mut stats).unwrap();
        assert!(conn.read_space().is_empty());
        assert!(
            !conn.handle_response(1, Response::empty(200), &now, &mut stats),
            "stale seq"
        );
        assert!(conn.handle_response(request.id.seq, Response::empty(200), &now, &mut stats));
        assert!(conn.read_space().is_empty(), "response not yet written");
        drain(&mut conn);
        assert!(!conn.read_space().is_empty());
        assert!(
            !conn.handle_response(0, Response::empty(200), &now, &mut stats),
            "already answered"
        );
    }

    #[test]
    fn silent_connection_times_out_without_a_response() {
        let base = Instant::now();
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        assert_eq!(
            conn.poll_timeout(),
            Some(base + Limits::default().request_timeout)
        );
        conn.handle_timeout(&at(base, 1), &mut stats); // spurious: a no-op
        assert!(!conn.is_closed());
        conn.handle_timeout(&at(base, 10_000), &mut stats);
        assert!(conn.is_closed() && conn.poll_transmit().is_empty());
        assert_eq!(stats.timed_out_idle, 1);
    }

    #[test]
    fn partial_request_gets_408_then_lingers_until_eof() {
        let base = Instant::now();
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HTTP/1.1\r\nHo", base);
        assert!(conn.poll_request(id(0), &at(base, 0), &mut stats).is_none());
        conn.handle_timeout(&at(base, 10_000), &mut stats);
        assert!(drain(&mut conn).starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
        assert!(conn.poll_shutdown());
        conn.handle_shutdown();
        assert!(!conn.poll_shutdown());
        // Input is discarded while lingering.
        assert_eq!(feed(&mut conn, b"st: h\r\n\r\n", base), 9);
        assert!(conn
            .poll_request(id(0), &at(base, 10_001), &mut stats)
            .is_none());
        assert_eq!(
            conn.poll_timeout(),
            Some(base + Duration::from_millis(10_000) + Limits::default().linger_timeout)
        );
        conn.handle_eof();
        assert!(conn.is_closed());
        assert_eq!(stats.timed_out_request, 1);
    }

    #[test]
    fn lingering_discards_a_bounded_amount() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HTTP/9.9\r\n\r\n", base);
        assert!(conn.poll_request(id(0), &now, &mut stats).is_none());
        assert!(drain(&mut conn).starts_with(b"HTTP/1.1 505 "));
        let noise = vec![0u8; 64 * 1024];
        let mut total = 0;
        while !conn.is_closed() {
            total += feed(&mut conn, &noise, base);
            assert!(total <= DISCARD_BYTES_MAX + noise.len());
        }
    }

    #[test]
    fn response_timeout_answers_503_and_idle_follows_a_response() {
        let base = Instant::now();
        let mut stats = Stats::default();
        let limits = Limits::default();
        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", base);
        conn.poll_request(id(0), &at(base, 5), &mut stats).unwrap();
        assert_eq!(
            conn.poll_timeout(),
            Some(base + Duration::from_millis(5) + limits.response_timeout)
        );

        let mut answered = new_conn(base);
        feed(&mut answered, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", base);
        answered
            .poll_request(id(1), &at(base, 5), &mut stats)
            .unwrap();
        assert!(answered.handle_response(1, Response::empty(204), &at(base, 7), &mut stats));
        assert_eq!(
            answered.poll_timeout(),
            Some(base + Duration::from_millis(7) + limits.idle_timeout)
        );

        conn.handle_timeout(
            &at(base, 5 + limits.response_timeout.as_millis() as u64),
            &mut stats,
        );
        assert!(drain(&mut conn).starts_with(b"HTTP/1.1 503 "));
        assert!(!conn.handle_response(0, Response::empty(200), &at(base, 999_999), &mut stats));
        assert_eq!(stats.timed_out_response, 1);
    }

    #[test]
    fn expect_continue_only_when_the_body_is_missing() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(
            &mut conn,
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            base,
        );
        assert!(conn.poll_request(id(0), &now, &mut stats).is_none());
        assert_eq!(drain(&mut conn), response::CONTINUE);
        feed(&mut conn, b"ok", base);
        assert_eq!(
            *conn.poll_request(id(0), &now, &mut stats).unwrap().body,
            b"ok"
        );
        assert_eq!(stats.responses_1xx, 1);
    }

    #[test]
    fn eof_mid_request_closes_and_eof_with_queued_response_flushes_first() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HT", base);
        conn.handle_eof();
        assert!(conn.read_space().is_empty());
        assert!(conn.poll_request(id(0), &now, &mut stats).is_none());
        assert!(conn.is_closed() && conn.poll_transmit().is_empty());

        let mut conn = new_conn(base);
        feed(&mut conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", base);
        conn.poll_request(id(0), &now, &mut stats).unwrap();
        assert!(conn.handle_response(0, Response::empty(200), &now, &mut stats));
        conn.handle_eof();
        assert!(conn.poll_request(id(1), &now, &mut stats).is_none());
        assert!(!conn.is_closed() && !conn.poll_shutdown());
        drain(&mut conn);
        assert!(conn.poll_request(id(1), &now, &mut stats).is_none());
        assert!(conn.is_closed());
    }

    #[test]
    fn requests_before_a_half_close_are_all_answered() {
        let base = Instant::now();
        let now = at(base, 0);
        let mut stats = Stats::default();
        let mut conn = new_conn(base);
        feed(
            &mut conn,
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3",
            base,
        );
        conn.handle_eof();
        let first = conn.poll_request(id(0), &now, &mut stats).unwrap();
        assert!(conn.handle_response(first.id.seq, Response::empty(200), &now, &mut stats));
        assert!(!drain(&mut conn)
            .windows(17)
            .any(|w| w == b"connection: close"));
        let second = conn.poll_request(id(1), &now, &mut stats).unwrap();
        assert_eq!(second.path, "/2");
        assert!(conn.handle_response(second.id.seq, Response::empty(200), &now, &mut stats));
        assert!(drain(&mut conn).starts_with(b"HTTP/1.1 200 OK"));
        // "/3" never completes.
        assert!(conn.poll_request(id(2), &now, &mut stats).is_none());
        assert!(conn.is_closed());
    }
}
