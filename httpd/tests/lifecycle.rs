//! Responders outliving connections and servers; startup errors; shutdown.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{get, respond_ok, TestServer};
use httpd::{Config, HttpdError, Limits, Response, Server, TlsFiles};

#[test]
fn stale_responder_after_client_disconnect_does_not_panic() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(&get("/hold"));
    let held = server.held_request();
    drop(client);

    // The server notices the disconnect when it writes the answer (it reads
    // nothing while a request is in flight); either way the connection goes.
    let responder = server.responder();
    respond_ok(&responder, held.id);
    server.wait_stats("the connection closed", |s| s.connections_open == 0);

    // Answering again, now for a connection that is gone, is stale.
    respond_ok(&responder, held.id);
    server.wait_stats("a stale response", |s| s.responses_stale == 1);

    // The slot is reused by a new connection; the old id does not match it.
    let mut client = server.connect();
    client.send(&get("/hold"));
    let fresh = server.held_request();
    assert_ne!(fresh.id, held.id);
    respond_ok(&responder, held.id);
    server.wait_stats("a second stale response", |s| s.responses_stale == 2);
    responder.respond(fresh.id, Response::text(200, "fresh"));
    assert_eq!(client.reply().body, b"fresh");
}

#[test]
fn double_answer_is_stale() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(&get("/hold"));
    let held = server.held_request();
    let responder = server.responder();
    respond_ok(&responder, held.id);
    respond_ok(&responder, held.id);
    assert_eq!(client.reply().body, b"late");
    server.wait_stats("a stale response", |s| s.responses_stale == 1);
    assert_eq!(client.exchange(&get("/echo")).status, 200);
}

#[test]
fn responder_after_shutdown_is_harmless() {
    let server = TestServer::start(Limits::default());
    let mut client = server.connect();
    client.send(&get("/hold"));
    let held = server.held_request();
    let responder = server.responder();
    let TestServer {
        handle,
        held: _held,
    } = server;
    handle.shutdown().expect("clean shutdown");
    client.expect_closed();
    respond_ok(&responder, held.id);
}

#[test]
fn dropping_the_handle_stops_the_server() {
    let server = TestServer::start(Limits::default());
    let addr = server.addr();
    let mut client = server.connect();
    assert_eq!(client.exchange(&get("/echo")).status, 200);
    drop(server);
    client.expect_closed();
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn startup_errors_are_typed() {
    let limits = Limits {
        connections_max: 0,
        ..Limits::default()
    };
    let err = Server::bind(
        any_port(),
        Config {
            limits,
            ..Config::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, HttpdError::InvalidLimits { .. }), "{err}");

    let taken = Server::bind(any_port(), Config::default()).unwrap();
    let err = Server::bind(taken.local_addr(), Config::default()).unwrap_err();
    assert!(
        matches!(err, HttpdError::Bind { addr, .. } if addr == taken.local_addr()),
        "{err}"
    );

    let tls = TlsFiles {
        cert_file: PathBuf::from("/nonexistent/cert.pem"),
        key_file: PathBuf::from("/nonexistent/key.pem"),
    };
    let err = Server::bind(
        any_port(),
        Config {
            tls: Some(tls),
            ..Config::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, HttpdError::TlsCertificates { path, .. } if path.ends_with("cert.pem")),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/cert.pem"));
}
