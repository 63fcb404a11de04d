//! HTTP/1.1 behaviour over loopback: keep-alive, pipelining, asynchronous
//! answers, framing refusals.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{get, post, TestServer};
use httpd::{Limits, Method};

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    for i in 0..5 {
        let body = format!("request {i}");
        let reply = client.exchange(&post("/echo", body.as_bytes()));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, body.as_bytes());
        assert_eq!(reply.header("x-method"), Some("POST"));
        assert!(!reply.closes());
        assert!(reply.header("date").is_some_and(|d| d.ends_with(" GMT")));
    }
    let stats = server.wait_stats("5 responses", |s| s.responses_2xx == 5);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.requests, 5);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    // The first one is slow, so order cannot come from timing.
    let mut batch = get("/async?ms=100");
    batch.extend(post("/echo", b"two"));
    batch.extend(get("/echo?three"));
    batch.extend(post("/async", b"four"));
    client.send(&batch);

    let first = client.reply();
    assert_eq!(
        (first.status, first.header("x-query")),
        (200, Some("ms=100"))
    );
    assert_eq!(client.reply().body, b"two");
    assert_eq!(client.reply().header("x-query"), Some("three"));
    assert_eq!(client.reply().body, b"four");
}

#[test]
fn asynchronous_response_from_another_thread() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let start = Instant::now();
    let reply = client.exchange(&post("/async?ms=200", b"later"));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"later"[..]));

    // The loop was not blocked meanwhile: another connection is served while
    // a request is held.
    let mut holder = server.connect();
    holder.send(&get("/hold"));
    let held = server.held_request();
    assert_eq!(server.connect().exchange(&get("/echo")).status, 200);
    let responder = server.responder();
    thread::spawn(move || responder.respond(held.id, httpd::Response::text(202, "done")));
    let reply = holder.reply();
    assert_eq!((reply.status, reply.body.as_slice()), (202, &b"done"[..]));
}

#[test]
fn request_fields_reach_the_handler() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(
        b"PUT /hold?a=1 HTTP/1.1\r\nHost: h\r\nX-Token:  abc \r\nContent-Length: 3\r\n\r\nxyz",
    );
    let request = server.held_request();
    assert_eq!(request.method, Method::Put);
    assert_eq!(
        (request.path.as_str(), request.query.as_deref()),
        ("/hold", Some("a=1"))
    );
    assert_eq!(request.header("x-token"), Some("abc"));
    assert_eq!(request.header("HOST"), Some("h"));
    assert_eq!(*request.body, b"xyz");
    assert_eq!(request.peer, client.stream.local_addr().unwrap());
    let debug = format!("{request:?}");
    assert!(
        !debug.contains("xyz") && !debug.contains("abc"),
        "redacted: {debug}"
    );
}

#[test]
fn byte_by_byte_request_feeding() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    for request in [post("/echo?x", b"drip-fed body"), get("/echo")] {
        for byte in &request {
            client.send(std::slice::from_ref(byte));
            thread::sleep(Duration::from_micros(300));
        }
        let reply = client.reply();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, &request[request.len() - reply.body.len()..]);
    }
}

#[test]
fn connection_close_is_honoured() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let reply = client.exchange(b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(reply.closes());
    client.expect_closed();
}

#[test]
fn http10_closes_unless_keep_alive() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let reply = client.exchange(b"GET /echo HTTP/1.0\r\n\r\n");
    assert_eq!(reply.status, 200);
    assert!(reply.closes());
    client.expect_closed();

    let mut client = server.connect();
    for _ in 0..2 {
        let reply = client.exchange(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(reply.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn garbage_gets_400_and_close() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let reply = client.exchange(b"\x16\x03\x01\x02\x00 hello\r\n\r\n");
    assert_eq!(reply.status, 400);
    assert!(reply.closes());
    client.expect_closed();
    // The server lingers until the client closes too.
    drop(client);
    server.wait_stats("a malformed request", |s| {
        s.rejected_malformed == 1 && s.connections_open == 0
    });
}

#[test]
fn chunked_requests_get_411_and_close() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let reply =
        client.exchange(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    assert_eq!(reply.status, 411);
    client.expect_closed();
}

#[test]
fn unknown_method_gets_501_and_old_version_505() {
    let server = TestServer::start(Limits::default());
    assert_eq!(
        server
            .connect()
            .exchange(b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n")
            .status,
        501
    );
    assert_eq!(
        server
            .connect()
            .exchange(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
            .status,
        505
    );
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    let interim = client.reply();
    assert_eq!(interim.status, 100);
    let reply = client.exchange(b"body");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"body"[..]));

    // A client that sends the body without waiting gets no 100.
    let reply = client.exchange(
        b"POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn head_gets_fields_without_body() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(b"HEAD /nowhere HTTP/1.1\r\nHost: h\r\n\r\n");
    let reply = client.reply_to_head();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-length"), Some("21"));
    // The connection is still in step: no stray body bytes before this.
    assert_eq!(client.exchange(&get("/echo")).status, 200);
}

#[test]
fn invalid_application_response_becomes_500() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let reply = client.exchange(&get("/invalid"));
    assert_eq!(reply.status, 500);
    assert!(reply.header("b").is_none());
    server.wait_stats("an invalid response", |s| s.responses_invalid == 1);
}

#[test]
fn requests_sent_before_a_half_close_are_answered() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    let mut batch = get("/async?ms=50");
    batch.extend(post("/echo", b"last"));
    client.send(&batch);
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let first = client.reply();
    assert_eq!(first.status, 200);
    assert!(!first.closes());
    let last = client.reply();
    assert_eq!(last.body, b"last");
    assert!(last.closes(), "the last response says so");
    client.expect_closed();
}
