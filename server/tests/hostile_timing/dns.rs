//! See hostile_timing.rs. Attack 8 (DNS in one thread) and the connect path: a name
//! server that never answers delays no DELETE, no other registration and no shutdown, and
//! the stuck registration gets its typed error once the resolver's timeout passes; a name
//! whose first address is dead registers through its second; `localhost` reaches a server
//! on `::1` only. Each test re-runs itself in private network and mount namespaces
//! (testkit::netns) and holds `crate::serial()` for its whole run.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use engine::resolve::RESOLVE_TIMEOUT;
use server::{App, Config};
use socket2::{Domain, Socket, Type};
use testkit::netns::{self, HostsFile, MountedFile};
use testkit::{Dovecot, DovecotConfig};

use crate::common::{delete, post, Registration, Reply, TempDir};

/// Stand-ins for public hosts inside the namespace.
const STAND_INS: [&str; 2] = ["11.0.0.1", "11.0.0.2"];

fn stand_ins() -> Vec<IpAddr> {
    STAND_INS.iter().map(|a| a.parse().unwrap()).collect()
}

fn config(dir: &TempDir, allow_private: bool) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        reactor_threads: 1,
        sender_threads: 1,
        allow_private_destinations: allow_private,
        allow_plain_imap: true,
        allow_http_endpoints: true,
        shutdown_grace_secs: 1,
        ..Config::default()
    }
}

/// A plain-IMAP registration of Dovecot's default user. The endpoints are address
/// literals, so that no push ever needs the name server.
fn registration(host: &str, port: u16, device_id: &str) -> String {
    Registration {
        host,
        port,
        security: "plain",
        username: "alice",
        password: "secret-alice",
        device_id,
        new_mail: "http://11.0.0.1:9/n",
        reconnect: "http://11.0.0.1:9/r",
    }
    .body()
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

fn created_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_resolver_that_never_answers_delays_no_delete_and_no_shutdown() {
    let _serial = crate::serial();
    netns::run_inside("dns::inner_stuck_resolver", &stand_ins()[..1]);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_stuck_resolver() {
    let _serial = crate::serial();
    if !netns::inside() {
        return;
    }
    let _hosts = HostsFile::install(&format!("{} imap.test\n", STAND_INS[0]));
    let dovecot = Dovecot::start(DovecotConfig {
        extra_listen: vec![stand_ins()[0]],
        extra_names: vec!["imap.test".into()],
        ..DovecotConfig::default()
    })
    .unwrap();
    let port = dovecot.imap_port();
    // A name server we hold and never answer; glibc waits 30 s for it, far past the
    // resolver's own timeout. (Installed after Dovecot's start, which looks names up.)
    let _silent = UdpSocket::bind("127.0.0.1:53").unwrap();
    let _resolv = MountedFile::install(
        "/etc/resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:30 attempts:1\n",
    );
    let dir = TempDir::new();
    let app = App::start(config(&dir, false)).unwrap();
    let api = app.local_addr();
    let first = created_id(&post(api, &registration("imap.test", port, "first")));
    dovecot
        .wait_for_connection_count("alice", 1, Duration::from_secs(10))
        .unwrap();

    // A registration whose name needs the silent name server.
    let stuck =
        std::thread::spawn(move || timed(|| post(api, &registration("stuck.test", port, "stuck"))));
    std::thread::sleep(Duration::from_millis(300));

    // Meanwhile a DELETE ends its session at once, and another registration goes through.
    let (reply, took) = timed(|| delete(api, &first));
    assert_eq!(reply.status, 204);
    assert!(took < Duration::from_secs(1), "DELETE took {took:?}");
    // Dovecot's session table lags the close a little: a second for us, one for it.
    let (gone, took) =
        timed(|| dovecot.wait_for_connection_count("alice", 0, Duration::from_secs(2)));
    assert!(
        gone.is_ok(),
        "the deleted session still runs after {took:?}: {gone:?}"
    );
    let (reply, took) = timed(|| post(api, &registration("imap.test", port, "second")));
    created_id(&reply);
    assert!(
        took < Duration::from_secs(2),
        "second registration took {took:?}"
    );

    // The stuck registration gets its typed error once the resolver's timeout passes.
    let (reply, took) = stuck.join().unwrap();
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (504, "imap_timeout"),
        "{}",
        reply.body
    );
    // Registration resolves the IMAP host itself now (before the engine would).
    assert!(
        reply.body.contains("did not resolve in time"),
        "{}",
        reply.body
    );
    assert!(took >= RESOLVE_TIMEOUT, "answered after {took:?}");
    assert!(
        took < RESOLVE_TIMEOUT + Duration::from_secs(2),
        "answered after {took:?}"
    );

    // Shutdown does not wait for a lookup either (the registration still waiting for
    // one is answered 503 or its connection closed; either way, not kept).
    let body = registration("stuck2.test", port, "again");
    let again = std::thread::spawn(move || post_raw(api, &body));
    std::thread::sleep(Duration::from_millis(300));
    let ((), took) = timed(|| app.shutdown());
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    let answer = again.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
}

/// A POST whose answer may be no answer at all (a server shutting down).
fn post_raw(api: SocketAddr, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let request = format!(
        "POST /v1/subscriptions HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// A listener that never completes a handshake: its accept queue is full, so Linux drops
/// further SYNs and a client's connect hangs (a dead host, not a refusing one).
fn tarpit(addr: SocketAddr) -> (Socket, TcpStream) {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(0).unwrap();
    // Backlog 0 still queues one connection: take that place.
    let filler = TcpStream::connect(addr).unwrap();
    (socket, filler)
}

#[test]
fn a_name_with_a_dead_first_address_registers_through_the_second() {
    let _serial = crate::serial();
    netns::run_inside("dns::inner_dead_then_live", &stand_ins());
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_dead_then_live() {
    let _serial = crate::serial();
    if !netns::inside() {
        return;
    }
    let _hosts = HostsFile::install(&format!(
        "{} imap.test\n{} imap.test\n",
        STAND_INS[0], STAND_INS[1]
    ));
    // Whatever order the resolver gives, the first address is the dead one.
    let order: Vec<IpAddr> = ("imap.test", 1)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(order.len(), 2, "{order:?}");
    let dovecot = Dovecot::start(DovecotConfig {
        extra_listen: vec![order[1]],
        extra_names: vec!["imap.test".into()],
        ..DovecotConfig::default()
    })
    .unwrap();
    let port = dovecot.imap_port();
    let _dead = tarpit(SocketAddr::new(order[0], port));
    let dir = TempDir::new();
    let app = App::start(config(&dir, false)).unwrap();
    let (reply, took) = timed(|| post(app.local_addr(), &registration("imap.test", port, "d")));
    created_id(&reply);
    // Well before the 15 s connect timeout that ended it when one address was tried at
    // a time.
    assert!(took < Duration::from_secs(3), "registered after {took:?}");
    app.shutdown();
}

#[test]
fn localhost_registers_with_a_server_on_ipv6_loopback_only() {
    let _serial = crate::serial();
    netns::run_inside("dns::inner_localhost_v6_only", &[]);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_localhost_v6_only() {
    let _serial = crate::serial();
    if !netns::inside() {
        return;
    }
    // A hosts file as Debian ships it, IPv4 first.
    let _hosts = HostsFile::install("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    let mock = mock_imapd::run(mock_imapd::Config {
        listen: vec!["[::1]:0".parse().unwrap()],
        ..mock_imapd::Config::default()
    })
    .unwrap();
    let port = mock.plain_addrs()[0].port();
    let dir = TempDir::new();
    let app = App::start(config(&dir, true)).unwrap();
    let reply = post(app.local_addr(), &registration("localhost", port, "v6"));
    created_id(&reply);
    app.shutdown();
}
