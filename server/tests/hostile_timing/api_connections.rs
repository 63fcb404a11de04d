//! See hostile_timing.rs. API connections per client (issue 9, attack 5): one address
//! holding thousands of idle keep-alive connections must not lock anyone else out, a full
//! server closes its oldest idle connection to serve a newcomer, and behind a trusted
//! reverse proxy the per-client cap counts real clients (PROXY protocol v2 or
//! `X-Forwarded-For`), while an untrusted peer's `X-Forwarded-For` is ignored.
//!
//! Client sockets are bound to chosen loopback addresses (all of 127.0.0.0/8 is local), so
//! that the server sees distinct client addresses.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use server::App;

use crate::common::{loopback_config, parse_reply, TempDir};

/// Idle connections the attacker opens.
const ATTACKER_CONNECTIONS: usize = 3000;
/// How long another client may wait for its answer while the attack goes on.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// Raises the soft descriptor limit to the hard one: the test holds thousands of sockets
/// and the in-process server holds its side of them.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// A TCP connection to `addr` from `local`.
pub fn connect_from(local: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(remote) = addr else {
        panic!("the test server listens on IPv4");
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket is owned by the TcpStream at once (closed on every path);
    // the sockaddr_in values outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let here = sockaddr(local, 0);
        if libc::bind(fd, (&here as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let there = sockaddr(*remote.ip(), remote.port());
        if libc::connect(fd, (&there as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

const HEALTHZ_KEEP_ALIVE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

/// Reads one response of known framing (a JSON body with Content-Length) off a
/// keep-alive connection; the status, or 0 when the server closed without one.
fn read_one_reply(s: &mut TcpStream) -> u16 {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return parse_reply(&raw).status;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return if raw.is_empty() {
                    0
                } else {
                    parse_reply(&raw).status
                }
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A keep-alive connection from `local` that made one request (answered 200) and now
/// sits idle.
fn idle_connection(local: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let mut s = connect_from(local, addr).unwrap();
    s.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_one_reply(&mut s), 200, "from {local}");
    s
}

/// True when the server closed `s` (EOF or reset) within `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

/// True when the server refuses `s`: it answers 503 and closes, or just closes.
fn refused(s: &mut TcpStream) -> bool {
    let status = read_one_reply(s);
    (status == 503 || status == 0) && closed_by_server(s, Duration::from_secs(5))
}

/// GET /healthz from `local` on a fresh connection; the status and how long it took.
fn healthz_from(local: Ipv4Addr, addr: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let mut s = connect_from(local, addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    (read_one_reply(&mut s), started.elapsed())
}

#[test]
fn thousands_of_idle_connections_from_one_address_do_not_lock_out_another() {
    let _serial = crate::serial();
    let limit = raise_nofile();
    assert!(
        limit >= 2 * ATTACKER_CONNECTIONS as u64 + 1000,
        "fd limit {limit}"
    );
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, None)).unwrap();
    let addr = app.local_addr();
    let attacker = Ipv4Addr::new(127, 0, 0, 1);

    // Each attacker connection sends one keep-alive request and then sits idle; the
    // answers are left unread, as a slow attacker would.
    let mut held = Vec::with_capacity(ATTACKER_CONNECTIONS);
    for _ in 0..ATTACKER_CONNECTIONS {
        let Ok(mut s) = connect_from(attacker, addr) else {
            continue; // a full backlog may refuse some: the attack is just as real
        };
        let _ = s.write_all(HEALTHZ_KEEP_ALIVE);
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));

    let (status, took) = healthz_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    eprintln!(
        "{} attacker connections held; the other client got {status} in {took:?}",
        held.len()
    );
    assert_eq!(status, 200, "another address is locked out");
    assert!(took < SERVED_WITHIN, "served in {took:?}");
    drop(held);
    app.shutdown();
}

#[test]
fn a_full_server_closes_its_oldest_idle_connection_for_a_newcomer() {
    let _serial = crate::serial();
    raise_nofile();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, None)).unwrap();
    let addr = app.local_addr();
    // Fill the default total (1024) with idle keep-alive connections, 32 each from 32
    // addresses, so that no per-client cap is reached; the first is the oldest.
    let total = httpd::limits::CONNECTIONS_MAX;
    let per_address = 32;
    let mut idle: Vec<TcpStream> = (0..total)
        .map(|n| {
            let from = Ipv4Addr::new(127, 0, 3, 1 + (n / per_address) as u8);
            idle_connection(from, addr)
        })
        .collect();

    let (status, took) = healthz_from(Ipv4Addr::new(127, 0, 0, 2), addr);
    eprintln!("the newcomer got {status} in {took:?}");
    assert_eq!(
        status, 200,
        "a newcomer is refused by a server full of idle connections"
    );
    assert!(took < SERVED_WITHIN, "served in {took:?}");
    assert!(
        closed_by_server(&mut idle[0], Duration::from_secs(2)),
        "the oldest idle connection was closed"
    );
    // The second oldest is still served on its connection.
    idle[1].write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_one_reply(&mut idle[1]), 200);
    drop(idle);
    app.shutdown();
}

/// Per-client cap of the proxy tests.
const PER_CLIENT: usize = 4;

/// A server that trusts 127.0.0.1 as its reverse proxy, with a small per-client cap.
fn behind_proxy(dir: &TempDir) -> App {
    let mut config = loopback_config(dir, None);
    config.trusted_proxies = vec!["127.0.0.1/32".into()];
    config.limits.api_connections_per_client_max = PER_CLIENT;
    App::start(config).unwrap()
}

const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A connection from the proxy that starts with a PROXY v2 header naming `client`.
fn proxied(client: &str, addr: SocketAddr) -> TcpStream {
    let mut s = connect_from(PROXY, addr).unwrap();
    let source: SocketAddr = format!("{client}:40000").parse().unwrap();
    s.write_all(&httpd::proxy_header::encode(source, addr))
        .unwrap();
    s
}

#[test]
fn behind_a_proxy_the_per_client_cap_counts_proxy_protocol_clients() {
    let _serial = crate::serial();
    let dir = TempDir::new();
    let app = behind_proxy(&dir);
    let addr = app.local_addr();
    // The proxy itself holds more than PER_CLIENT connections, for one real client up to
    // its cap.
    let mut held: Vec<TcpStream> = (0..PER_CLIENT)
        .map(|_| {
            let mut s = proxied("203.0.113.7", addr);
            s.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
            assert_eq!(read_one_reply(&mut s), 200);
            s
        })
        .collect();
    let mut one_more = proxied("203.0.113.7", addr);
    assert!(
        refused(&mut one_more),
        "one past the cap of the real client"
    );
    // Another real client through the same proxy is served.
    let mut other = proxied("203.0.113.8", addr);
    other.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_one_reply(&mut other), 200);
    // The first client's connections still work.
    held[0].write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_one_reply(&mut held[0]), 200);
    drop(held);
    app.shutdown();
}

/// A registration whose IMAP server accepts the TCP connection and never answers, so the
/// request stays in flight (for register_timeout_secs).
fn stalled_registration(imap_port: u16, xff: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": imap_port, "security": "tls",
                 "username": format!("u-{xff}-{}", rand_suffix()), "password": "pw"},
        "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
        "reconnect": {"endpoint": "http://127.0.0.1:9/re"},
    })
    .to_string();
    format!(
        "POST /v1/subscriptions HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {xff}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn healthz_forwarded_for(xff: &str) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.1, {xff}\r\n\r\n")
        .into_bytes()
}

#[test]
fn behind_a_proxy_the_per_client_cap_counts_forwarded_for_clients() {
    let _serial = crate::serial();
    let dir = TempDir::new();
    let app = behind_proxy(&dir);
    let addr = app.local_addr();
    // An IMAP server that completes the TCP handshake (the kernel does) and says nothing.
    let silent_imap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imap_port = silent_imap.local_addr().unwrap().port();

    // PER_CLIENT requests of one real client in flight, on as many proxy connections.
    let mut busy: Vec<TcpStream> = (0..PER_CLIENT)
        .map(|_| {
            let mut s = connect_from(PROXY, addr).unwrap();
            s.write_all(&stalled_registration(imap_port, "203.0.113.9"))
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // One more request of that client, on a fresh proxy connection: refused.
    let mut one_more = connect_from(PROXY, addr).unwrap();
    one_more
        .write_all(&healthz_forwarded_for("203.0.113.9"))
        .unwrap();
    let mut raw = Vec::new();
    one_more
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = one_more.read_to_end(&mut raw);
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.error(), "too_many_connections");
    // Another real client through the proxy is served, on a fresh connection too.
    let mut other = connect_from(PROXY, addr).unwrap();
    other
        .write_all(&healthz_forwarded_for("203.0.113.10"))
        .unwrap();
    assert_eq!(read_one_reply(&mut other), 200);
    // The proxy's connections are not capped as the proxy's own: it holds more than
    // PER_CLIENT.
    for s in &mut busy {
        assert!(!closed_by_server(s, Duration::from_millis(10)));
    }
    drop(busy);
    drop(silent_imap);
    app.shutdown();
}

#[test]
fn an_untrusted_peer_s_forwarded_for_is_ignored() {
    let _serial = crate::serial();
    let dir = TempDir::new();
    let app = behind_proxy(&dir);
    let addr = app.local_addr();
    let stranger = Ipv4Addr::new(127, 0, 0, 2);
    // Each connection claims another client; all are counted for the stranger.
    let held: Vec<TcpStream> = (0..PER_CLIENT)
        .map(|n| {
            let mut s = connect_from(stranger, addr).unwrap();
            s.write_all(&healthz_forwarded_for(&format!("203.0.113.{}", 20 + n)))
                .unwrap();
            assert_eq!(read_one_reply(&mut s), 200);
            s
        })
        .collect();
    let mut one_more = connect_from(stranger, addr).unwrap();
    assert!(
        refused(&mut one_more),
        "the stranger is at its cap, whatever it claims"
    );
    drop(held);
    app.shutdown();
}
