//! The shipped `deploy/nginx-cluster.conf`, run by a real nginx on loopback in front of
//! stand-in nodes: `nginx -t` accepts it, a routing key sticks to one node and only the
//! keys of a node that goes move, a client's own `X-Forwarded-For` never reaches a node,
//! and a body past the nodes' limit is refused before it reaches one.
//! The harness and how the config is derived: `testkit/src/nginx.rs`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::ServerName;
use testkit::{client_config_for, derive_nginx_config, Nginx, SHIPPED_NGINX_CONF};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// `client_max_body_size` of the shipped file: the nodes' `limits.body_bytes_max`.
const BODY_MAX: usize = 16 * 1024;

/// One HTTPS request through `nginx`: (status, body).
fn request(nginx: &Nginx, key: Option<&str>, extra_headers: &str, body: &[u8]) -> (u16, String) {
    let config = client_config_for(&nginx.pki().ca_der).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(nginx.addr()).unwrap();
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let header = key.map_or(String::new(), |k| format!("Imap-Push-Key: {k}\r\n"));
    let method = if body.is_empty() { "GET" } else { "POST" };
    let head = format!(
        "{method} /v1/subscriptions HTTP/1.1\r\nHost: push.example.org\r\n\
         Connection: close\r\nContent-Length: {}\r\n{header}{extra_headers}\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    // nginx may answer 413 before it has read the body; a write error then is fine.
    let _ = tls.write_all(body);
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// What a stand-in node saw: the `X-Forwarded-For` values and the body lengths.
#[derive(Clone, Debug, Default)]
struct Seen {
    forwarded_for: Vec<String>,
    requests: usize,
}

/// A stand-in node: answers every request `200 <name>` and records what it saw.
fn stand_in_node(name: &'static str) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || serve(stream, name, &log));
        }
    });
    (addr, seen)
}

/// Serves the requests of one (keep-alive) connection from nginx.
fn serve(mut stream: TcpStream, name: &str, log: &Mutex<Seen>) {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let header = |wanted: &str| -> Vec<String> {
            head.lines()
                .filter_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(wanted)
                        .then(|| v.trim().to_string())
                })
                .collect()
        };
        let length: usize = header("content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        {
            let mut seen = log.lock().unwrap();
            seen.requests += 1;
            seen.forwarded_for.extend(header("x-forwarded-for"));
        }
        buf.drain(..end + 4 + length);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn the_test_config_is_the_shipped_one_with_only_host_lines_replaced() {
    let nodes: Vec<SocketAddr> = vec![
        "127.0.0.1:5001".parse().unwrap(),
        "127.0.0.1:5002".parse().unwrap(),
    ];
    let derived = derive_nginx_config(
        SHIPPED_NGINX_CONF,
        4000,
        Path::new("/t/c.pem"),
        Path::new("/t/k.pem"),
        &nodes,
    )
    .unwrap();
    let mut derived_lines = derived.lines();
    for line in SHIPPED_NGINX_CONF.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let replaced = ["listen", "ssl_certificate", "ssl_certificate_key"].contains(&first)
            || (first == "server" && line.contains(":8080"));
        if replaced {
            continue;
        }
        assert!(
            derived_lines.any(|d| d == line),
            "shipped line missing or out of order: {line:?}\n{derived}"
        );
    }
    let servers: Vec<&str> = derived
        .lines()
        .filter(|l| l.trim_start().starts_with("server ") && l.contains("127.0.0.1:500"))
        .collect();
    assert_eq!(
        servers,
        [
            "    server 127.0.0.1:5001 max_fails=3 fail_timeout=10s;",
            "    server 127.0.0.1:5002 max_fails=3 fail_timeout=10s;"
        ]
    );
    for kept in [
        "hash $http_imap_push_key consistent;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "client_max_body_size 16k;",
    ] {
        assert!(derived.contains(kept), "{kept} kept:\n{derived}");
    }

    let (cert, key) = (Path::new("/c"), Path::new("/k"));
    let no_listen = "upstream u {\n    server 10.0.0.1:1;\n}\n";
    assert!(derive_nginx_config(no_listen, 1, cert, key, &nodes).is_err());
    let no_upstream = "server {\n    listen 443 ssl;\n}\n";
    assert!(derive_nginx_config(no_upstream, 1, cert, key, &nodes).is_err());
}

#[test]
fn nginx_routes_by_key_replaces_forwarded_for_and_refuses_big_bodies() {
    let (a, seen_a) = stand_in_node("a");
    let (b, seen_b) = stand_in_node("b");
    let (c, seen_c) = stand_in_node("c");
    let mut nginx =
        Nginx::start(&[a, b, c]).expect("nginx starts (tools/test installs nginx-light)");
    let keys: Vec<String> = (0..60).map(|n| format!("key-{n}")).collect();
    let route = |nginx: &Nginx| -> Vec<String> {
        keys.iter()
            .map(|k| {
                let (status, body) = request(nginx, Some(k), "", b"");
                assert_eq!(status, 200, "{body}");
                body
            })
            .collect()
    };

    let owners = route(&nginx);
    for name in ["a", "b", "c"] {
        assert!(
            owners.iter().any(|o| o == name),
            "{name} gets keys: {owners:?}"
        );
    }
    // Sticky: the same key, the same node, every time.
    assert_eq!(route(&nginx), owners);

    // A client's own X-Forwarded-For is replaced by the address nginx saw, never appended.
    let (status, _) = request(
        &nginx,
        Some("key-0"),
        "X-Forwarded-For: 203.0.113.9\r\n",
        b"",
    );
    assert_eq!(status, 200);
    let forwarded: Vec<String> = [&seen_a, &seen_b, &seen_c]
        .iter()
        .flat_map(|s| s.lock().unwrap().forwarded_for.clone())
        .collect();
    assert!(!forwarded.is_empty());
    assert!(
        forwarded.iter().all(|f| f == "127.0.0.1"),
        "X-Forwarded-For at the nodes: {forwarded:?}"
    );

    // A body at the nodes' limit passes; one byte past it is refused by nginx.
    let before: usize = [&seen_a, &seen_b, &seen_c]
        .iter()
        .map(|s| s.lock().unwrap().requests)
        .sum();
    let (status, _) = request(&nginx, Some("key-1"), "", &vec![b'x'; BODY_MAX]);
    assert_eq!(status, 200);
    let (status, _) = request(&nginx, Some("key-1"), "", &vec![b'x'; BODY_MAX + 1]);
    assert_eq!(status, 413);
    let after: usize = [&seen_a, &seen_b, &seen_c]
        .iter()
        .map(|s| s.lock().unwrap().requests)
        .sum();
    assert_eq!(after, before + 1, "the refused body never reached a node");

    // Without c: c's keys move, nobody else's (consistent hashing).
    nginx.restart(&[a, b]).unwrap();
    let moved = route(&nginx);
    for (was, now) in owners.iter().zip(&moved) {
        assert!(now == "a" || now == "b", "{moved:?}");
        if was != "c" {
            assert_eq!(was, now, "only c's keys move: {owners:?} -> {moved:?}");
        }
    }
    drop(nginx);
}
