//! Checks shared by the fuzz target (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not API: these functions allocate and panic on
//! purpose, because a panic is how a fuzzer reports a broken invariant.
//!
//! The target feeds arbitrary bytes into one [`Connection`] in chunks the
//! fuzzer chooses, as the reactor would (read, poll the request, answer it,
//! write, half-close, time out), with the default [`Limits`] or tiny ones.
//! Invariants checked (STYLE.md section 7):
//! - nothing panics on any input;
//! - the requests the connection yields are exactly those a reference
//!   framing of the whole stream with [`parse_head`] finds, and its own
//!   rejection has the reference's status, however the bytes are split
//!   (split invariance); with a moving clock they are a prefix of them;
//! - a request declared larger than the limits is never yielded: its head is
//!   answered 413 or 431 and the connection closes;
//! - memory is bounded: the bytes accepted but not yet handed out as a
//!   request never exceed `header_bytes_max + body_bytes_max` plus the read
//!   that brought them, and the connection never stalls with input pending;
//! - everything written is a sequence of well-formed HTTP/1.1 responses,
//!   one final response per request in order, nothing after
//!   `connection: close`, and the counters agree with what was written;
//! - the connection closes on its own: at once after the peer's EOF, or
//!   after at most a few deadlines when the peer goes silent;
//! - [`parse_head`] returns heads within the limits, every strict prefix of
//!   a complete head is incomplete, and an incomplete head is shorter than
//!   `header_bytes_max`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::connection::{Connection, Now};
use crate::date::http_date;
use crate::limits::Limits;
use crate::parse::{parse_head, Head, Rejection};
use crate::request::{Method, Request, RequestId};
use crate::response::{Response, CONTINUE};
use crate::stats::Stats;

/// Bytes of control before the stream; shorter inputs are ignored.
pub const CONTROL_LEN: usize = 5;

/// Heads longer than this skip the quadratic every-prefix check; the chunked
/// connection run covers long ones incrementally.
const PREFIX_CHECK_LEN_MAX: usize = 512;

/// Deadlines a silent peer may need before the connection is closed:
/// request (408), then linger; one spare.
const DEADLINE_JUMPS_MAX: usize = 3;

/// A tiny xorshift generator, so the check needs no `rand` crate.
#[derive(Clone, Copy, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from any seed (0 is mapped to a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `1..=max` (`max` at least 1).
    pub fn below_incl(&mut self, max: usize) -> usize {
        (self.next_u64() % max.max(1) as u64) as usize + 1
    }
}

/// How the application answers each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// 200 with the request body echoed.
    Echo,
    /// 204, no body.
    NoContent,
    /// 200 JSON with an extra header field.
    Json,
    /// Each of the above, or an invalid response (the server sends 500).
    Mixed,
}

/// What the control bytes choose.
#[derive(Clone, Copy, Debug)]
struct Plan {
    limits: Limits,
    /// Largest single read; `usize::MAX` for "all that fits".
    chunk_max: usize,
    /// The peer half-closes after its last byte; otherwise it goes silent.
    eof: bool,
    /// Writes take a random part of what is queued.
    partial_writes: bool,
    answer: Answer,
    /// Rounds the application holds each request before answering.
    app_delay_rounds: u32,
    /// Virtual time added every round; zero keeps the clock still until the
    /// input is exhausted.
    time_step: Duration,
}

impl Plan {
    /// control[0]: bit 0 tiny limits, bit 1 EOF, bit 2 partial writes,
    /// bits 3-4 the answer, bits 5-7 the application's delay.
    /// control[1]: read size, 1..=64 bytes or (from 0xC0) all that fits.
    /// control[2]: from 0x80, the clock moves `(c & 0x7F) * 50` ms a round.
    /// control[3], control[4]: the tiny limits.
    fn new(control: &[u8; CONTROL_LEN]) -> Plan {
        let [c0, c1, c2, c3, c4] = *control;
        let limits = if c0 & 1 == 0 {
            Limits::default()
        } else {
            Limits {
                headers_max: usize::from(c4 >> 6),
                header_bytes_max: 18 + usize::from(c3),
                body_bytes_max: usize::from(c4 & 0x3F),
                request_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                response_timeout: Duration::from_secs(2),
                linger_timeout: Duration::from_secs(1),
                ..Limits::default()
            }
        };
        assert_eq!(limits.check(), Ok(()));
        Plan {
            limits,
            chunk_max: match c1 {
                0xC0.. => usize::MAX,
                _ => usize::from(c1 & 0x3F) + 1,
            },
            eof: c0 & 2 != 0,
            partial_writes: c0 & 4 != 0,
            answer: match (c0 >> 3) & 3 {
                0 => Answer::Echo,
                1 => Answer::NoContent,
                2 => Answer::Json,
                _ => Answer::Mixed,
            },
            app_delay_rounds: u32::from(c0 >> 5),
            time_step: match c2 {
                0x80.. => Duration::from_millis(u64::from(c2 & 0x7F) * 50),
                _ => Duration::ZERO,
            },
        }
    }
}

/// The request target: [`CONTROL_LEN`] control bytes (see `Plan::new`),
/// then the bytes a client sent.
pub fn request(data: &[u8]) {
    let Some((control, stream)) = data.split_first_chunk::<CONTROL_LEN>() else {
        return;
    };
    let plan = Plan::new(control);
    let reference = frame(stream, &plan.limits);
    let seed = u64::from_le_bytes([
        control[0], control[1], control[2], control[3], control[4], 0, 0, 1,
    ]);
    Run::new(stream, plan, &reference, seed).drive();
}

/// How the reference framing of the whole stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The stream ends between requests (`partial` false) or inside one.
    Exhausted { partial: bool },
    /// A request asked to close the connection after its response.
    Closed,
    /// The server answers this itself and closes.
    Rejected(Rejection),
}

/// One request of the reference framing.
#[derive(Debug)]
struct Framed {
    start: usize,
    head_len: usize,
    head: Head,
}

impl Framed {
    fn end(&self) -> usize {
        self.start + self.head_len + self.head.content_length
    }
}

#[derive(Debug)]
struct Reference {
    requests: Vec<Framed>,
    end: End,
}

/// Frames the whole stream at once with [`parse_head`], as the connection
/// should however the bytes arrive; checks each parse on the way.
fn frame(stream: &[u8], limits: &Limits) -> Reference {
    let mut requests = Vec::new();
    let mut start = 0;
    let end = loop {
        if start == stream.len() {
            break End::Exhausted { partial: false };
        }
        let rest = &stream[start..];
        let parsed = parse_head(rest, limits);
        check_parse(rest, limits, &parsed);
        match parsed {
            Ok(None) => break End::Exhausted { partial: true },
            Err(rejection) => break End::Rejected(rejection),
            Ok(Some((head, head_len))) => {
                let framed = Framed {
                    start,
                    head_len,
                    head,
                };
                if framed.end() > stream.len() {
                    break End::Exhausted { partial: true };
                }
                start = framed.end();
                let keep_alive = framed.head.keep_alive;
                requests.push(framed);
                if !keep_alive {
                    break End::Closed;
                }
            }
        }
    };
    Reference { requests, end }
}

/// Checks one [`parse_head`] result against the limits and its input.
fn check_parse(buf: &[u8], limits: &Limits, parsed: &Result<Option<(Head, usize)>, Rejection>) {
    match parsed {
        Ok(None) => assert!(
            buf.len() < limits.header_bytes_max,
            "an incomplete head of {} bytes is not rejected",
            buf.len()
        ),
        Ok(Some((head, len))) => {
            let len = *len;
            assert!(len <= buf.len().min(limits.header_bytes_max), "head length");
            assert!(head.headers.len() <= limits.headers_max, "too many fields");
            assert!(
                head.content_length <= limits.body_bytes_max,
                "a body of {} bytes declared past the limit is accepted",
                head.content_length
            );
            let declared: Vec<&str> = head
                .headers
                .iter()
                .filter(|(name, _)| name == "content-length")
                .map(|(_, value)| value.as_str())
                .collect();
            match declared[..] {
                [] => assert_eq!(head.content_length, 0),
                [value] => assert_eq!(value.parse::<usize>().ok(), Some(head.content_length)),
                _ => panic!("several Content-Length fields accepted"),
            }
            assert!(
                head.headers
                    .iter()
                    .all(|(name, _)| name.bytes().all(|b| !b.is_ascii_uppercase())),
                "field name not lower-cased"
            );
            assert!(
                head.path.starts_with('/') || (head.path == "*" && head.method == Method::Options),
                "path {:?}",
                head.path
            );
            assert!(!head.expect_continue || head.http11, "100 to HTTP/1.0");
            // The bytes after the head do not change it.
            assert_eq!(
                parse_head(&buf[..len], limits).as_ref().ok(),
                parsed.as_ref().ok(),
                "the head parses differently without what follows"
            );
            if len <= PREFIX_CHECK_LEN_MAX {
                for k in 0..len {
                    assert_eq!(
                        parse_head(&buf[..k], limits),
                        Ok(None),
                        "strict prefix of {k} bytes is not incomplete"
                    );
                }
            }
        }
        Err(_) => {}
    }
}

const PEER: &str = "192.0.2.1:5000";

/// A request handed to the application and not answered yet.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    rounds_left: u32,
    /// `Stats::timed_out_response` when it was handed out.
    timed_out_before: u64,
}

/// One connection driven through a stream, with what it did so far.
struct Run<'a> {
    stream: &'a [u8],
    plan: Plan,
    reference: &'a Reference,
    rng: XorShift,
    conn: Connection,
    stats: Stats,
    base: Instant,
    now_ms: u64,
    /// Bytes of `stream` the connection accepted.
    fed: usize,
    eof_sent: bool,
    /// Requests yielded, with the status the application answered.
    yielded: Vec<(Method, Option<u16>)>,
    in_flight: Option<InFlight>,
    /// Application answers refused as stale (after a 503).
    stale: u64,
    /// Answers the server had to replace by 500.
    invalid: u64,
    /// The connection has queued its last response.
    closing: bool,
    out: Vec<u8>,
}

impl<'a> Run<'a> {
    fn new(stream: &'a [u8], plan: Plan, reference: &'a Reference, seed: u64) -> Run<'a> {
        let base = Instant::now();
        Run {
            stream,
            plan,
            reference,
            rng: XorShift::new(seed),
            conn: Connection::new(PEER.parse().unwrap(), plan.limits, base),
            stats: Stats::default(),
            base,
            now_ms: 0,
            fed: 0,
            eof_sent: false,
            yielded: Vec::new(),
            in_flight: None,
            stale: 0,
            invalid: 0,
            closing: false,
            out: Vec::new(),
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.base + Duration::from_millis(self.now_ms),
            date: http_date(784_111_777),
        }
    }

    /// Rounds until the connection closes; each round is one turn of the
    /// reactor's loop for this connection.
    fn drive(mut self) {
        let rounds_max = 10_000 + 400 * self.stream.len();
        let mut jumps = 0;
        for _ in 0..rounds_max {
            let mut progress = self.read();
            progress |= self.poll_request();
            progress |= self.answer();
            progress |= self.write();
            if self.plan.time_step > Duration::ZERO {
                self.now_ms += self.plan.time_step.as_millis() as u64;
                progress |= self.timeout();
            }
            if self.conn.is_closed() {
                return self.finish();
            }
            if progress {
                continue;
            }
            assert_eq!(
                self.fed,
                self.stream.len(),
                "stalled with input pending (read space {})",
                self.conn.read_space().len()
            );
            assert!(
                !self.eof_sent,
                "still open after the peer's EOF with nothing left to do"
            );
            // The peer is silent: only the clock can move things on.
            jumps += 1;
            assert!(jumps <= DEADLINE_JUMPS_MAX, "a silent peer is never closed");
            let deadline = self.conn.poll_timeout().expect("open, so a deadline");
            let due_ms = deadline.saturating_duration_since(self.base).as_millis() as u64;
            self.now_ms = self.now_ms.max(due_ms);
            self.timeout();
        }
        panic!("livelock: not closed after {rounds_max} rounds");
    }

    /// Feeds one chunk, or the EOF once the stream is exhausted.
    fn read(&mut self) -> bool {
        let capacity = self.plan.limits.read_buffer_bytes_max();
        let chunk = match self.plan.chunk_max {
            usize::MAX => usize::MAX,
            max => self.rng.below_incl(max),
        };
        let now = self.now().instant;
        let rest = &self.stream[self.fed..];
        let space = self.conn.read_space();
        assert!(space.len() <= capacity, "read space beyond the buffer cap");
        if space.is_empty() {
            return false;
        }
        if rest.is_empty() {
            if !self.plan.eof || self.eof_sent {
                return false;
            }
            self.eof_sent = true;
            self.conn.handle_eof();
            return true;
        }
        let n = space.len().min(rest.len()).min(chunk);
        space[..n].copy_from_slice(&rest[..n]);
        self.conn.handle_read(n, now);
        self.fed += n;
        self.check_memory(n);
        true
    }

    /// Bytes accepted but not yet yielded as a request: at most one head and
    /// one body, plus the read that brought them in.
    fn check_memory(&mut self, n: usize) {
        self.closing |= self.closing_by_counters();
        if self.closing {
            return;
        }
        let consumed = match self.yielded.len() {
            0 => 0,
            k => self.reference.requests[k - 1].end(),
        };
        let limits = &self.plan.limits;
        let held = self.fed - consumed;
        assert!(
            held <= limits.header_bytes_max + limits.body_bytes_max + n,
            "{held} bytes buffered after a read of {n}"
        );
    }

    /// The connection has rejected a request or timed one out: it is closing
    /// and discards what it reads.
    fn closing_by_counters(&self) -> bool {
        let s = &self.stats;
        s.rejected_malformed
            + s.rejected_headers_limit
            + s.rejected_body_limit
            + s.timed_out_request
            + s.timed_out_response
            > 0
    }

    fn poll_request(&mut self) -> bool {
        let seq = self.yielded.len() as u64;
        let id = RequestId { slot: 0, seq };
        let now = self.now();
        let Some(request) = self.conn.poll_request(id, &now, &mut self.stats) else {
            return false;
        };
        assert!(self.in_flight.is_none(), "two requests in flight");
        assert!(
            !self.closing && !self.closing_by_counters(),
            "a request yielded after the connection started closing"
        );
        self.check_request(&request, id);
        self.yielded.push((request.method, None));
        self.in_flight = Some(InFlight {
            seq,
            rounds_left: self.plan.app_delay_rounds,
            timed_out_before: self.stats.timed_out_response,
        });
        true
    }

    /// The request is the next one of the reference framing, byte for byte.
    fn check_request(&self, request: &Request, id: RequestId) {
        let k = self.yielded.len();
        let Some(framed) = self.reference.requests.get(k) else {
            panic!(
                "request {k} ({} {}) is beyond the {} of the reference framing",
                request.method,
                request.path,
                self.reference.requests.len()
            );
        };
        let head = &framed.head;
        assert_eq!(request.id, id);
        assert_eq!(request.method, head.method);
        assert_eq!(request.path, head.path);
        assert_eq!(request.query, head.query);
        assert_eq!(request.headers, head.headers);
        assert_eq!(request.peer, PEER.parse::<SocketAddr>().unwrap());
        let body_start = framed.start + framed.head_len;
        assert!(
            *request.body == self.stream[body_start..framed.end()],
            "request {k}: the body is not the bytes after its head"
        );
        assert_eq!(
            request.body.capacity(),
            request.body.len(),
            "the body Vec has spare capacity"
        );
        assert!(framed.end() <= self.fed, "a request from unread bytes");
        if !head.keep_alive {
            // The connection closes after this request's response: what it
            // reads from now on is discarded.
            assert_eq!(self.reference.end, End::Closed);
        }
    }

    /// The application answers the request in flight once its delay is over.
    fn answer(&mut self) -> bool {
        let Some(mut flight) = self.in_flight else {
            return false;
        };
        if flight.rounds_left > 0 {
            flight.rounds_left -= 1;
            self.in_flight = Some(flight);
            return true;
        }
        self.in_flight = None;
        let k = flight.seq as usize;
        let framed = &self.reference.requests[k];
        let body = &self.stream[framed.start + framed.head_len..framed.end()];
        let answer = match self.plan.answer {
            Answer::Mixed => match self.rng.next_u64() % 4 {
                0 => Answer::Echo,
                1 => Answer::NoContent,
                2 => Answer::Json,
                _ => Answer::Mixed,
            },
            other => other,
        };
        let (response, status) = match answer {
            Answer::Echo => (Response::empty(200).with_body(body.to_vec()), 200),
            Answer::NoContent => (Response::empty(204), 204),
            Answer::Json => (
                Response::json(201, r#"{"ok":true}"#).with_header("x-request", "1"),
                201,
            ),
            // A field value that would split the response: replaced by 500.
            Answer::Mixed => (
                Response::empty(200).with_header("x-bad", "a\r\nset-cookie: 1"),
                500,
            ),
        };
        let persistence_close = !framed.head.keep_alive;
        let now = self.now();
        let applied = self
            .conn
            .handle_response(flight.seq, response, &now, &mut self.stats);
        if applied {
            self.yielded[k].1 = Some(status);
            self.invalid += u64::from(status == 500);
            self.closing |= persistence_close;
        } else {
            assert!(
                self.stats.timed_out_response > flight.timed_out_before,
                "answer to request {k} refused, but it never timed out"
            );
            self.stale += 1;
        }
        true
    }

    /// Writes what is queued (all, or a random part), then half-closes when
    /// asked.
    fn write(&mut self) -> bool {
        let mut progress = false;
        loop {
            let out = self.conn.poll_transmit();
            if out.is_empty() {
                break;
            }
            let n = match self.plan.partial_writes {
                true => self.rng.below_incl(out.len()),
                false => out.len(),
            };
            self.out.extend_from_slice(&out[..n]);
            self.conn.handle_sent(n);
            progress = true;
            if self.plan.partial_writes {
                return true;
            }
        }
        if self.conn.poll_shutdown() {
            self.conn.handle_shutdown();
            assert!(!self.conn.poll_shutdown(), "shutdown asked twice");
            progress = true;
        }
        progress
    }

    /// Calls `handle_timeout` at the current time; true when it changed
    /// something visible.
    fn timeout(&mut self) -> bool {
        let before = (self.conn.poll_timeout(), self.conn.poll_transmit().len());
        let now = self.now();
        self.conn.handle_timeout(&now, &mut self.stats);
        before != (self.conn.poll_timeout(), self.conn.poll_transmit().len())
    }

    /// After the close: what was written, and against the reference.
    fn finish(mut self) {
        if let Some(flight) = self.in_flight.take() {
            // Only a response timeout closes a connection while the
            // application holds its request; the late answer is stale.
            let now = self.now();
            let late = Response::empty(200);
            assert!(!self
                .conn
                .handle_response(flight.seq, late, &now, &mut self.stats));
            assert!(self.stats.timed_out_response > flight.timed_out_before);
            self.stale += 1;
        }
        // Without a moving clock the linger deadline is reached only once
        // everything was written; with one, a slow reader may lose the tail.
        let clock_moves = self.plan.time_step > Duration::ZERO;
        let unsent = !self.conn.poll_transmit().is_empty();
        assert!(clock_moves || !unsent, "closed with unsent bytes");
        let written = check_output(&self.out, &self.yielded, clock_moves);
        let s = &self.stats;
        assert_eq!(s.requests, self.yielded.len() as u64);
        assert_eq!(s.timed_out_response, self.stale, "503s vs late answers");
        if written.truncated || unsent {
            return;
        }
        assert_eq!(s.responses_invalid, self.invalid);
        assert_eq!(s.timed_out_response, written.timeouts_unanswered);
        let by_class = [
            s.responses_1xx,
            s.responses_2xx,
            s.responses_3xx,
            s.responses_4xx,
            s.responses_5xx,
        ];
        assert_eq!(
            by_class, written.by_class,
            "counters differ from the output"
        );
        let rejections = s.rejected_malformed
            + s.rejected_headers_limit
            + s.rejected_body_limit
            + s.timed_out_request;
        assert_eq!(
            rejections,
            u64::from(written.rejection.is_some()),
            "rejection counters"
        );
        match written.rejection {
            Some(413) => assert_eq!(s.rejected_body_limit, 1),
            Some(431) => assert_eq!(s.rejected_headers_limit, 1),
            Some(408) => assert_eq!(s.timed_out_request, 1),
            _ => {}
        }
        self.compare_with_reference(written.rejection);
    }

    /// Same requests and same rejection as the reference framing; with a
    /// moving clock, a prefix of its requests and possibly a 408 instead.
    fn compare_with_reference(&self, rejection: Option<u16>) {
        let reference = self.reference;
        let expected = match reference.end {
            End::Rejected(r) => Some(r.status()),
            End::Exhausted { partial: true } if !self.plan.eof => Some(408),
            _ => None,
        };
        let yielded = self.yielded.len();
        let all = reference.requests.len();
        if self.plan.time_step == Duration::ZERO {
            assert_eq!(yielded, all, "requests yielded vs reference framing");
            assert_eq!(
                rejection, expected,
                "rejection vs reference {:?}",
                reference.end
            );
        } else {
            assert!(yielded <= all);
            let ok = rejection.is_none() || rejection == Some(408) || rejection == expected;
            assert!(
                ok,
                "rejection {rejection:?} vs reference {:?}",
                reference.end
            );
        }
    }
}

/// What the written bytes say.
#[derive(Debug, Default)]
struct Written {
    /// Responses by status class, as `Stats` counts them.
    by_class: [u64; 5],
    /// The server's own rejection (not a 503 for a request in flight).
    rejection: Option<u16>,
    /// 503s for requests whose answer never came.
    timeouts_unanswered: u64,
    /// The connection closed with the last response partly written.
    truncated: bool,
}

/// Parses everything written as HTTP/1.1 responses: one final response per
/// yielded request in order (the application's status or 503), then at most
/// one rejection; nothing after `connection: close`; whole messages only,
/// unless `truncated_ok`.
fn check_output(out: &[u8], yielded: &[(Method, Option<u16>)], truncated_ok: bool) -> Written {
    let mut written = Written::default();
    let mut pos = 0;
    let mut answered = 0;
    let mut closed = false;
    while pos < out.len() {
        assert!(!closed, "bytes after a connection: close response");
        let rest = &out[pos..];
        if rest.starts_with(CONTINUE) {
            written.by_class[0] += 1;
            pos += CONTINUE.len();
            continue;
        }
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut fields);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if truncated_ok => {
                written.truncated = true;
                return written;
            }
            Ok(httparse::Status::Partial) => panic!("output ends inside a response head"),
            Err(e) => panic!("malformed response head ({e}): {:?}", rest.escape_ascii()),
        };
        assert_eq!(response.version, Some(1), "not HTTP/1.1");
        let status = response.code.expect("complete, so a status");
        assert!((200..=599).contains(&status), "status {status}");
        let framing = response_framing(response.headers, status);
        closed = framing.close;
        let head_only = match yielded.get(answered) {
            Some(&(method, app_status)) => {
                assert!(
                    Some(status) == app_status || status == 503,
                    "request {answered} answered {app_status:?}, written {status}"
                );
                if status == 503 && app_status.is_none() {
                    written.timeouts_unanswered += 1;
                    assert!(framing.close, "503 without connection: close");
                }
                answered += 1;
                method == Method::Head
            }
            None => {
                assert!(
                    matches!(status, 400 | 408 | 411 | 413 | 431 | 501 | 505),
                    "server status {status}"
                );
                assert!(framing.close, "a rejection without connection: close");
                assert_eq!(written.rejection, None, "two rejections");
                written.rejection = Some(status);
                false
            }
        };
        let body_len = if head_only { 0 } else { framing.content_length };
        if head_len + body_len > rest.len() {
            assert!(truncated_ok, "output ends inside a response body");
            written.truncated = true;
            return written;
        }
        written.by_class[usize::from(status / 100) - 1] += 1;
        pos += head_len + body_len;
    }
    assert!(
        truncated_ok || answered == yielded.len(),
        "a request was never answered"
    );
    written
}

struct ResponseFraming {
    content_length: usize,
    close: bool,
}

/// The fields the server owns: one 29-byte `date`, one `content-length`
/// (none for 204 and 304), at most one `connection`.
fn response_framing(fields: &[httparse::Header<'_>], status: u16) -> ResponseFraming {
    let all = |name: &str| -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
            .collect()
    };
    let date = all("date");
    assert!(date.len() == 1 && date[0].len() == 29, "date field");
    let content_length = match all("content-length")[..] {
        [] => {
            assert!(matches!(status, 204 | 304), "no content-length on {status}");
            0
        }
        [value] => {
            assert!(!matches!(status, 204 | 304), "content-length on {status}");
            let text = std::str::from_utf8(value).expect("ASCII digits");
            text.parse().expect("a decimal content-length")
        }
        _ => panic!("several content-length fields"),
    };
    let close = match all("connection")[..] {
        [] => false,
        [b"close"] => true,
        [b"keep-alive"] => false,
        ref other => panic!("connection field {other:?}"),
    };
    ResponseFraming {
        content_length,
        close,
    }
}

/// The checks of the `proxy_header` fuzz target: the PROXY v2 parser and the
/// `X-Forwarded-For` rule on arbitrary bytes.
/// - nothing panics;
/// - a header is no longer than the input nor the limit, and every strict
///   prefix of it is incomplete, never absent or malformed;
/// - an incomplete input asks for more than it has;
/// - absent means the input is not a prefix of the signature;
/// - a source re-encodes to a header that parses to the same source;
/// - the forwarded client is the same for the same input, and the peer when
///   the input holds no address at all.
pub fn proxy_header(data: &[u8]) {
    use crate::forwarded::{forwarded_client, Cidr};
    use crate::limits::PROXY_HEADER_BYTES_MAX;
    use crate::proxy_header::{encode, parse, Parsed, SIGNATURE};

    let limit = PROXY_HEADER_BYTES_MAX;
    match parse(data, limit) {
        Ok(Parsed::Header { len, source }) => {
            assert!(len <= data.len() && len <= limit);
            let prefix_checks = len.min(PREFIX_CHECK_LEN_MAX);
            for n in 0..prefix_checks {
                assert!(
                    matches!(parse(&data[..n], limit), Ok(Parsed::Incomplete { needed }) if needed > n),
                    "prefix of {n} bytes"
                );
            }
            if let Some(source) = source {
                let again = parse(&encode(source, source), limit);
                assert!(
                    matches!(again, Ok(Parsed::Header { source: Some(s), .. }) if s == source),
                    "{source} does not round-trip"
                );
            }
        }
        Ok(Parsed::Incomplete { needed }) => assert!(needed > data.len()),
        Ok(Parsed::Absent) => {
            let seen = data.len().min(SIGNATURE.len());
            assert_ne!(data[..seen], SIGNATURE[..seen]);
        }
        Err(_) => assert!(data.len() >= crate::proxy_header::FIXED_BYTES),
    }

    let text = String::from_utf8_lossy(data);
    let trusted: Vec<Cidr> = ["10.0.0.0/8", "2001:db8::/32"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let peer = std::net::IpAddr::from([10, 0, 0, 1]);
    let client = forwarded_client(text.split('\n'), peer, &trusted);
    assert_eq!(client, forwarded_client(text.split('\n'), peer, &trusted));
    // Without a '.' or a ':' no element is an address: the peer it is.
    if !text.contains(['.', ':']) {
        assert_eq!(client, peer, "{client} came from nowhere");
    }
    let _ = text.parse::<Cidr>();
}
