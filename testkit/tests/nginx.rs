//! The shipped `deploy/nginx-cluster.conf`, run by a real nginx on loopback in front of
//! stand-in nodes: `nginx -t` accepts it, a routing key sticks to one node and only the
//! keys of a node that goes move, a client's own `X-Forwarded-For` never reaches a node,
//! and a body past the nodes' limit is refused before it reaches one.
//!
//! The config nginx runs is derived from the shipped file, never written by hand: only the
//! lines that name the host change (`listen`, the certificate paths, the upstream's
//! `server` lines, which keep the shipped options). The shipped file is an `http`-block
//! fragment; a minimal main config around it holds what the test owns (pid file, logs,
//! temp paths, foreground).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use testkit::{client_config_for, spawn_tied_to_process, TestPki};

const NGINX_BIN: &str = "/usr/sbin/nginx";
const SHIPPED: &str = include_str!("../../deploy/nginx-cluster.conf");
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// `client_max_body_size` of the shipped file: the nodes' `limits.body_bytes_max`.
const BODY_MAX: usize = 16 * 1024;

/// The shipped fragment with `listen`, the certificate paths and the upstream's `server`
/// lines replaced; every other line byte for byte.
fn derive(shipped: &str, port: u16, cert: &Path, key: &Path, nodes: &[SocketAddr]) -> String {
    let mut out = String::new();
    let mut servers_done = false;
    let mut in_upstream = false;
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let first = trimmed.split_whitespace().next().unwrap_or("");
        if first == "upstream" {
            in_upstream = true;
        } else if in_upstream && trimmed.starts_with('}') {
            in_upstream = false;
        }
        match first {
            "listen" => out.push_str(&format!("    listen 127.0.0.1:{port} ssl;\n")),
            "ssl_certificate" => {
                out.push_str(&format!("    ssl_certificate {};\n", cert.display()))
            }
            "ssl_certificate_key" => {
                out.push_str(&format!("    ssl_certificate_key {};\n", key.display()))
            }
            "server" if in_upstream => {
                if !servers_done {
                    // `server HOST:PORT OPTIONS...;`: keep the options.
                    let options: Vec<&str> = trimmed.split_whitespace().skip(2).collect();
                    let options = options.join(" ");
                    for node in nodes {
                        out.push_str(&format!("    server {node} {options}\n"));
                    }
                    servers_done = true;
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(servers_done, "the shipped upstream has server lines");
    out
}

/// A foreground nginx (master and one worker) in its own temp dir, stopped by PID.
struct Nginx {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    ca_der: Vec<u8>,
}

impl Nginx {
    fn start(nodes: &[SocketAddr]) -> Nginx {
        let dir = std::env::temp_dir().join(format!("testkit-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki::generate().unwrap();
        std::fs::write(dir.join("cert.pem"), &pki.leaf_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &pki.leaf_key_pem).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nginx = Nginx {
            dir,
            port,
            child: None,
            ca_der: pki.ca_der,
        };
        nginx.launch(nodes);
        nginx
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn launch(&mut self, nodes: &[SocketAddr]) {
        let dir = &self.dir;
        let cluster = derive(
            SHIPPED,
            self.port,
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            nodes,
        );
        std::fs::write(dir.join("cluster.conf"), cluster).unwrap();
        let d = dir.display();
        // Workers run as root here (the test's user) so that they may use the temp dir.
        let main = format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
             proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
             uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
             include {d}/cluster.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let check = Command::new(NGINX_BIN)
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .output()
            .expect("nginx runs");
        let text = String::from_utf8_lossy(&check.stderr).into_owned();
        assert!(check.status.success(), "nginx -t:\n{text}");
        assert!(text.contains("test is successful"), "{text}");
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn_tied_to_process(cmd).unwrap());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx not listening: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// SIGTERM (nginx's fast shutdown) by PID, then waits; SIGKILL after 10 s.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops and starts again on the same port in front of `nodes`.
    fn restart(&mut self, nodes: &[SocketAddr]) {
        self.stop();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(self.addr()).is_ok() {
            assert!(Instant::now() < deadline, "old nginx still listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.launch(nodes);
    }

    /// One HTTPS request through nginx: (status, body).
    fn request(&self, key: Option<&str>, extra_headers: &str, body: &[u8]) -> (u16, String) {
        let config = client_config_for(&self.ca_der).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect(self.addr()).unwrap();
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
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

fn nginx_available() -> bool {
    Path::new(NGINX_BIN).is_file()
}

#[test]
fn the_test_config_is_the_shipped_one_with_only_host_lines_replaced() {
    let nodes: Vec<SocketAddr> = vec![
        "127.0.0.1:5001".parse().unwrap(),
        "127.0.0.1:5002".parse().unwrap(),
    ];
    let derived = derive(
        SHIPPED,
        4000,
        Path::new("/t/c.pem"),
        Path::new("/t/k.pem"),
        &nodes,
    );
    let mut derived_lines = derived.lines();
    for line in SHIPPED.lines() {
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
}

#[test]
fn nginx_routes_by_key_replaces_forwarded_for_and_refuses_big_bodies() {
    if !nginx_available() {
        panic!("{NGINX_BIN} missing: tools/test installs nginx-light");
    }
    let (a, seen_a) = stand_in_node("a");
    let (b, seen_b) = stand_in_node("b");
    let (c, seen_c) = stand_in_node("c");
    let mut nginx = Nginx::start(&[a, b, c]);
    let keys: Vec<String> = (0..60).map(|n| format!("key-{n}")).collect();
    let route = |nginx: &Nginx| -> Vec<String> {
        keys.iter()
            .map(|k| {
                let (status, body) = nginx.request(Some(k), "", b"");
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
    let (status, _) = nginx.request(Some("key-0"), "X-Forwarded-For: 203.0.113.9\r\n", b"");
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
    let (status, _) = nginx.request(Some("key-1"), "", &vec![b'x'; BODY_MAX]);
    assert_eq!(status, 200);
    let (status, _) = nginx.request(Some("key-1"), "", &vec![b'x'; BODY_MAX + 1]);
    assert_eq!(status, 413);
    let after: usize = [&seen_a, &seen_b, &seen_c]
        .iter()
        .map(|s| s.lock().unwrap().requests)
        .sum();
    assert_eq!(after, before + 1, "the refused body never reached a node");

    // Without c: c's keys move, nobody else's (consistent hashing).
    nginx.restart(&[a, b]);
    let moved = route(&nginx);
    for (was, now) in owners.iter().zip(&moved) {
        assert!(now == "a" || now == "b", "{moved:?}");
        if was != "c" {
            assert_eq!(was, now, "only c's keys move: {owners:?} -> {moved:?}");
        }
    }
    drop(nginx);
}
