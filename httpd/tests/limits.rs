//! Each limit probed at its value and just past it.

mod common;

use std::time::{Duration, Instant};

use common::{get, post, respond_ok, NoReply, TestServer};
use httpd::limits::{BODY_BYTES_MAX, HEADERS_MAX, HEADER_BYTES_MAX};
use httpd::{Limits, RESPONSES_QUEUED_PER_CONNECTION};

#[test]
fn body_at_limit_is_served_and_one_byte_more_gets_413() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let body = vec![b'p'; BODY_BYTES_MAX];
    let reply = client.exchange(&post("/echo", &body));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), BODY_BYTES_MAX);

    // The whole oversized body is sent: lingering close lets the client
    // finish writing and still read the 413 instead of a reset.
    let reply = client.exchange(&post("/echo", &vec![b'p'; BODY_BYTES_MAX + 1]));
    assert_eq!(reply.status, 413);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.body.starts_with(br#"{"error":"too_large""#));
    assert!(reply.closes());
    client.expect_closed();
    let stats = server.wait_stats("a 413", |s| s.rejected_body_limit == 1);
    assert_eq!(stats.requests, 1);
}

#[test]
fn body_limit_is_checked_before_100_continue() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        BODY_BYTES_MAX + 1
    );
    assert_eq!(client.exchange(head.as_bytes()).status, 413);
    client.expect_closed();
}

/// A request with `count` header fields (Host included).
fn request_with_fields(count: usize) -> Vec<u8> {
    let mut request = b"GET /echo HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 1..count {
        request.extend(format!("X-F{i}: v\r\n").bytes());
    }
    request.extend(b"\r\n");
    request
}

#[test]
fn header_count_at_limit_is_served_and_one_more_gets_431() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    assert_eq!(
        client.exchange(&request_with_fields(HEADERS_MAX)).status,
        200
    );
    let reply = client.exchange(&request_with_fields(HEADERS_MAX + 1));
    assert_eq!(reply.status, 431);
    client.expect_closed();
    server.wait_stats("a 431", |s| s.rejected_headers_limit == 1);
}

/// A request whose head is exactly `len` bytes.
fn request_of_head_bytes(len: usize) -> Vec<u8> {
    let mut request = b"GET /echo HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    let pad = len - request.len() - 4;
    request.extend(vec![b'a'; pad]);
    request.extend(b"\r\n\r\n");
    assert_eq!(request.len(), len);
    request
}

#[test]
fn header_bytes_at_limit_are_served_and_one_more_gets_431() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    assert_eq!(
        client
            .exchange(&request_of_head_bytes(HEADER_BYTES_MAX))
            .status,
        200
    );
    let reply = client.exchange(&request_of_head_bytes(HEADER_BYTES_MAX + 1));
    assert_eq!(reply.status, 431);
    client.expect_closed();
}

#[test]
fn slow_client_gets_408_then_close() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    // A first request in time, so the clock of the second starts at its first byte.
    assert_eq!(client.exchange(&get("/echo")).status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let start = Instant::now();
    client.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf");
    let reply = client.reply();
    assert_eq!(reply.status, 408);
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "{:?}",
        start.elapsed()
    );
    client.expect_closed();
    server.wait_stats("a 408", |s| s.timed_out_request == 1);
}

#[test]
fn silent_connection_is_closed_without_a_word() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    client.expect_closed();
    server.wait_stats("an idle close", |s| {
        s.timed_out_idle == 1 && s.timed_out_request == 0
    });
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    assert_eq!(client.exchange(&get("/echo")).status, 200);
    let start = Instant::now();
    client.expect_closed();
    assert!(start.elapsed() >= Duration::from_millis(150));
    server.wait_stats("an idle close", |s| {
        s.timed_out_idle == 1 && s.connections_open == 0
    });
}

#[test]
fn connections_past_the_limit_get_503_when_none_is_idle() {
    let limits = Limits {
        connections_max: 2,
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    // Both connections have a request in flight: neither is idle.
    let mut first = server.connect();
    let mut second = server.connect();
    first.send(&get("/hold"));
    let held_first = server.held_request();
    second.send(&get("/hold"));
    let held_second = server.held_request();

    let mut third = server.connect();
    let reply = third.try_reply(false);
    assert!(
        matches!(&reply, Ok(r) if r.status == 503) || reply.as_ref().err() == Some(&NoReply::Reset),
        "{reply:?}"
    );
    third.expect_closed();
    server.wait_stats("a rejected connection", |s| s.connections_rejected == 1);

    respond_ok(&server.responder(), held_first.id);
    respond_ok(&server.responder(), held_second.id);
    assert_eq!(first.reply().status, 200);
    assert_eq!(second.reply().status, 200);
    drop(first);
    server.wait_stats("a free slot", |s| s.connections_open == 1);
    assert_eq!(server.connect().exchange(&get("/echo")).status, 200);
    assert_eq!(second.exchange(&get("/echo")).status, 200);
}

#[test]
fn at_the_limit_the_longest_idle_connection_is_closed_for_a_newcomer() {
    let limits = Limits {
        connections_max: 3,
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    // Idle in the order 1, 0, 2; then 2 gets a request in flight.
    for n in [1, 0, 2] {
        assert_eq!(clients[n].exchange(&get("/echo")).status, 200);
    }
    clients[2].send(&get("/hold"));
    let held = server.held_request();

    let mut newcomer = server.connect();
    assert_eq!(newcomer.exchange(&get("/echo")).status, 200);
    clients[1].expect_closed();
    server.wait_stats("an eviction", |s| s.connections_evicted == 1);
    // Next in line is 0, not 2 (busy), and not the newcomer (idle since later).
    let mut another = server.connect();
    assert_eq!(another.exchange(&get("/echo")).status, 200);
    clients[0].expect_closed();
    respond_ok(&server.responder(), held.id);
    assert_eq!(clients[2].reply().status, 200);
    assert_eq!(newcomer.exchange(&get("/echo")).status, 200);
}

#[test]
fn one_connection_past_the_per_client_limit_gets_503() {
    let limits = Limits {
        connections_per_client_max: 2,
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.exchange(&get("/echo")).status, 200);
    assert_eq!(second.exchange(&get("/echo")).status, 200);
    let mut third = server.connect();
    let reply = third.try_reply(false).expect("a 503");
    assert_eq!(reply.status, 503);
    assert!(String::from_utf8_lossy(&reply.body).contains("too_many_connections"));
    third.expect_closed();
    server.wait_stats("a refusal", |s| s.connections_rejected_per_client == 1);
    assert_eq!(server.handle.stats().connections_evicted, 0);
    drop(first);
    server.wait_stats("a free slot", |s| s.connections_open == 1);
    assert_eq!(server.connect().exchange(&get("/echo")).status, 200);
}

#[test]
fn unanswered_request_gets_503_and_late_answer_is_stale() {
    let limits = Limits {
        response_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = TestServer::start(limits);
    let mut client = server.connect();
    client.send(&get("/hold"));
    let held = server.held_request();
    let reply = client.reply();
    assert_eq!(reply.status, 503);
    client.expect_closed();

    respond_ok(&server.responder(), held.id);
    let stats = server.wait_stats("a stale response", |s| s.responses_stale == 1);
    assert_eq!(stats.timed_out_response, 1);
}

#[test]
fn answers_past_the_queue_bound_are_dropped_and_counted_never_waited_on() {
    let connections_max = 2;
    let bound = connections_max * RESPONSES_QUEUED_PER_CONNECTION;
    let server = TestServer::start(Limits {
        connections_max,
        ..Limits::default()
    });
    let mut client = server.connect();

    // At the bound: every answer is queued; the first is served, the rest stale.
    let reply = client.exchange(&get(&format!("/repeat?n={bound}")));
    assert_eq!(reply.status, 200);
    let stats = server.wait_stats("the stale repeats", |s| {
        s.responses_stale == bound as u64 - 1
    });
    assert_eq!(stats.responses_dropped, 0);

    // One past it: the handler (on the server thread, so nothing is drained) is
    // not blocked; the extra answer is dropped and counted, the first still served.
    let reply = client.exchange(&get(&format!("/repeat?n={}", bound + 1)));
    assert_eq!(reply.status, 200);
    let stats = server.wait_stats("one dropped answer", |s| s.responses_dropped == 1);
    assert_eq!(stats.responses_stale, 2 * (bound as u64 - 1));
}
