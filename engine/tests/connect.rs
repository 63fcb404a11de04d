//! Every resolved address is tried (RFC 8305, Happy Eyeballs): a dead first address does
//! not keep the session from the live second one, and `localhost` reaches a server that
//! listens on `::1` only. Each test re-runs itself inside private network and mount
//! namespaces (testkit::netns), with stand-in addresses on `lo` and a private hosts file.

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use engine::resolve::CONNECTION_ATTEMPT_DELAY;
use engine::{Engine, EngineConfig, Event, Secret, Security, WatchSpec};
use socket2::{Domain, Socket, Type};
use testkit::netns::{self, HostsFile};
use zeroize::Zeroizing;

fn spec(host: &str, port: u16) -> WatchSpec {
    WatchSpec {
        host: host.into(),
        port,
        security: Security::DangerousPlain,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

fn engine() -> Engine {
    Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn mock_on(addr: SocketAddr) -> mock_imapd::Handle {
    mock_imapd::run(mock_imapd::Config {
        listen: vec![addr],
        ..mock_imapd::Config::default()
    })
    .unwrap()
}

/// A listener that never completes a handshake: its accept queue is full, so Linux drops
/// further SYNs and the client's connect hangs (a dead host, not a refusing one). The
/// returned values keep it so.
fn tarpit(addr: SocketAddr) -> (Socket, TcpStream) {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(0).unwrap();
    // Backlog 0 still queues one connection: take that place.
    let filler = TcpStream::connect(addr).unwrap();
    (socket, filler)
}

fn resolve(name: &str) -> Vec<IpAddr> {
    (name, 1)
        .to_socket_addrs()
        .unwrap()
        .map(|a| a.ip())
        .collect()
}

/// The session's first event, and how long it took.
fn first_event(engine: &Engine) -> (Event, Duration) {
    let started = Instant::now();
    let event = engine
        .events()
        .recv_timeout(Duration::from_secs(30))
        .expect("an event");
    (event, started.elapsed())
}

const STAND_INS: [&str; 2] = ["11.0.0.1", "11.0.0.2"];

#[test]
fn a_dead_first_address_gives_way_to_a_live_second_one() {
    let addrs: Vec<IpAddr> = STAND_INS.iter().map(|a| a.parse().unwrap()).collect();
    netns::run_inside("inner_dead_then_live", &addrs);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_dead_then_live() {
    if !netns::inside() {
        return;
    }
    let _hosts = HostsFile::install(&format!(
        "{} imap.test\n{} imap.test\n",
        STAND_INS[0], STAND_INS[1]
    ));
    // Whatever order the resolver gives, the first address is the dead one.
    let order = resolve("imap.test");
    assert_eq!(order.len(), 2, "{order:?}");
    let mock = mock_on(SocketAddr::new(order[1], 0));
    let port = mock.plain_addrs()[0].port();
    let _dead = tarpit(SocketAddr::new(order[0], port));
    let engine = engine();
    let id = engine.watch(spec("imap.test", port)).unwrap();
    let (event, took) = first_event(&engine);
    assert!(
        matches!(event, Event::Ready { id: ready, .. } if ready == id),
        "{event:?} after {took:?}"
    );
    // The second attempt starts once the first has had its head start (RFC 8305's
    // Connection Attempt Delay), well before the 15 s connect timeout that ended the
    // session when only one address was tried at a time.
    assert!(took >= CONNECTION_ATTEMPT_DELAY, "ready after {took:?}");
    assert!(took < Duration::from_secs(3), "ready after {took:?}");
    println!("ready after {took:?}");
}

#[test]
fn localhost_reaches_a_server_on_ipv6_loopback_only() {
    netns::run_inside("inner_localhost_v6_only", &[]);
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_localhost_v6_only() {
    if !netns::inside() {
        return;
    }
    // A hosts file as Debian ships it, IPv4 first.
    let _hosts = HostsFile::install("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    let order = resolve("localhost");
    assert!(
        order.contains(&"::1".parse::<IpAddr>().unwrap()),
        "{order:?}"
    );
    let mock = mock_on("[::1]:0".parse().unwrap());
    let port = mock.plain_addrs()[0].port();
    let engine = engine();
    let id = engine.watch(spec("localhost", port)).unwrap();
    let (event, took) = first_event(&engine);
    assert!(
        matches!(event, Event::Ready { id: ready, .. } if ready == id),
        "{event:?} after {took:?} (addresses {order:?})"
    );
    println!("ready after {took:?} (addresses {order:?})");
}
