//! The shipped `deploy/haproxy.cfg`: valid as shipped, and what the tests run
//! is derived from it (balancing, checks, PROXY header kept), not a second copy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::{derive_haproxy_config, Haproxy, TestPki, HAPROXY_BIN, SHIPPED_HAPROXY_CFG};

/// The PROXY protocol v2 signature (HAProxy `send-proxy-v2`).
const PROXY_V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate file the shipped frontend names (`bind ... crt PATH`).
fn shipped_certificate_path() -> PathBuf {
    SHIPPED_HAPROXY_CFG
        .lines()
        .filter(|l| l.trim_start().starts_with("bind "))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "crt")?;
            words.next().map(PathBuf::from)
        })
        .expect("the shipped frontend terminates TLS with a crt file")
}

/// `haproxy -c` on the shipped file itself. Its certificate path does not exist
/// on a test box, so the check runs in a private mount namespace where a temp
/// dir holding a generated certificate is bind-mounted over the nearest
/// existing ancestor of that path; nothing on the machine changes.
#[test]
fn the_shipped_config_is_valid_as_shipped() {
    let cert = shipped_certificate_path();
    let mut anchor: &Path = cert.parent().unwrap();
    while !anchor.is_dir() {
        anchor = anchor.parent().unwrap();
    }
    let stand_in = std::env::temp_dir().join(format!("haproxy-cert-{}", std::process::id()));
    let inside = stand_in.join(cert.strip_prefix(anchor).unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    let pki = TestPki::generate().unwrap();
    std::fs::write(&inside, format!("{}{}", pki.leaf_pem, pki.leaf_key_pem)).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let out = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg(r#"mount --make-rprivate / && mount --bind "$0" "$1" && exec "$2" -c -f "$3""#)
        .arg(&stand_in)
        .arg(anchor)
        .arg(HAPROXY_BIN)
        .arg(&shipped)
        .output()
        .expect("unshare runs (util-linux; needs root)");
    let _ = std::fs::remove_dir_all(&stand_in);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "haproxy -c {shipped:?}:\n{text}");
    assert!(text.contains("Configuration file is valid"), "{text}");
}

#[test]
fn the_test_config_is_the_shipped_one_with_only_host_lines_replaced() {
    let listen: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let servers = [
        ("a", "127.0.0.1:5001".parse().unwrap()),
        ("b", "127.0.0.1:5002".parse().unwrap()),
    ];
    let derived = derive_haproxy_config(SHIPPED_HAPROXY_CFG, listen, &servers).unwrap();
    let shipped_server = SHIPPED_HAPROXY_CFG
        .lines()
        .find(|l| l.trim_start().starts_with("server "))
        .unwrap();
    let options: Vec<&str> = shipped_server.split_whitespace().skip(3).collect();
    assert!(options.contains(&"send-proxy-v2") && options.contains(&"check"));
    let expected_servers: Vec<String> = servers
        .iter()
        .map(|(n, a)| format!("    server {n} {a} {}", options.join(" ")))
        .collect();

    // Every shipped line is in the derived file, in order, except the replaced ones.
    let mut derived_lines = derived.lines();
    for line in SHIPPED_HAPROXY_CFG.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let replaced = first == "bind"
            || first == "server"
            || (line.starts_with(' ')
                && testkit::HOST_ONLY_GLOBAL_KEYWORDS.contains(&first)
                && first != "log");
        if replaced {
            continue;
        }
        if first == "log" && !line.contains("global") {
            continue; // `log /dev/log` of `global`; `log global` of `defaults` is kept
        }
        assert!(
            derived_lines.any(|d| d == line),
            "shipped line missing or out of order: {line:?}\n{derived}"
        );
    }
    let derived_servers: Vec<&str> = derived
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .collect();
    assert_eq!(derived_servers, expected_servers);
    let binds: Vec<&str> = derived
        .lines()
        .filter(|l| l.trim_start().starts_with("bind "))
        .collect();
    assert_eq!(binds, ["    bind 127.0.0.1:4000"]);
    for kept in [
        "balance hdr(Imap-Push-Key)",
        "hash-type consistent",
        "http-check send meth GET uri /readyz",
    ] {
        assert!(derived.contains(kept), "{kept} kept:\n{derived}");
    }
    let settings: Vec<&str> = derived
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    for dropped in ["daemon", "chroot", "user haproxy", "/dev/log"] {
        assert!(
            !settings.iter().any(|l| l.contains(dropped)),
            "{dropped} dropped:\n{derived}"
        );
    }

    assert!(derive_haproxy_config("frontend f\n    bind :80\n", listen, &servers).is_err());
    assert!(
        derive_haproxy_config("backend b\n    server x 1.2.3.4:1\n", listen, &servers).is_err()
    );
}

/// What a stand-in node saw on one connection.
#[derive(Clone, Debug)]
struct Seen {
    proxy_header: bool,
    path: String,
    key: Option<String>,
}

/// A stand-in node: answers every request `200 <name>` and records it.
fn stand_in_node(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || serve_one(stream, name, &log));
        }
    });
    (addr, seen)
}

fn serve_one(mut stream: TcpStream, name: &str, log: &Mutex<Vec<Seen>>) {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.starts_with(PROXY_V2_SIGNATURE) {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(PROXY_V2_SIGNATURE) && buf.len() >= 16 {
            let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            if buf.len() < len {
                continue;
            }
            buf.drain(..len);
            log.lock().unwrap().push(Seen {
                proxy_header: true,
                path: String::new(),
                key: None,
            });
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let key = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("imap-push-key")
            .then(|| v.trim().to_string())
    });
    {
        let mut log = log.lock().unwrap();
        let proxied = log
            .last()
            .is_some_and(|s| s.proxy_header && s.path.is_empty());
        if proxied {
            log.pop();
        }
        log.push(Seen {
            proxy_header: proxied,
            path,
            key,
        });
    }
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
        name.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// One request through HAProxy: which stand-in answered.
fn request(proxy: SocketAddr, key: Option<&str>) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    let header = key.map_or(String::new(), |k| format!("Imap-Push-Key: {k}\r\n"));
    write!(
        s,
        "GET /v1/subscriptions/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{header}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.rsplit("\r\n\r\n").next().unwrap().to_string()
}

/// Waits until every key of `keys` reaches a stand-in named in `allowed` (the
/// health checks mark servers up after start).
fn wait_until_routed(proxy: SocketAddr, keys: &[String], allowed: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let owners: Vec<String> = keys.iter().map(|k| request(proxy, Some(k))).collect();
        if owners.iter().all(|o| allowed.contains(&o.as_str())) {
            return owners;
        }
        assert!(Instant::now() < deadline, "routing: {owners:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_key_sticks_to_one_node_and_only_its_keys_move_when_a_node_goes() {
    let (a, seen_a) = stand_in_node("a");
    let (b, seen_b) = stand_in_node("b");
    let (c, _) = stand_in_node("c");
    let mut proxy = Haproxy::start(&[("a", a), ("b", b), ("c", c)]).unwrap();
    let keys: Vec<String> = (0..60).map(|n| format!("key-{n}")).collect();

    let owners = wait_until_routed(proxy.addr(), &keys, &["a", "b", "c"]);
    for name in ["a", "b", "c"] {
        assert!(
            owners.iter().any(|o| o == name),
            "{name} gets keys: {owners:?}"
        );
    }
    // Sticky: the same key, the same node, every time.
    assert_eq!(
        keys.iter()
            .map(|k| request(proxy.addr(), Some(k)))
            .collect::<Vec<_>>(),
        owners
    );
    // Every proxied request came with the client's PROXY v2 header and the key;
    // the health checks asked for /readyz.
    let seen: Vec<Seen> = seen_a.lock().unwrap().clone();
    let requests: Vec<&Seen> = seen.iter().filter(|s| s.path != "/readyz").collect();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|s| s.proxy_header && s.key.is_some()),
        "{requests:?}"
    );
    assert!(
        seen.iter().any(|s| s.path == "/readyz"),
        "health checks on /readyz"
    );

    // Without c: c's keys move, nobody else's (consistent hashing).
    proxy.restart(&[("a", a), ("b", b)]).unwrap();
    let after = wait_until_routed(proxy.addr(), &keys, &["a", "b"]);
    for (before, now) in owners.iter().zip(&after) {
        if before != "c" {
            assert_eq!(before, now, "only c's keys move: {owners:?} -> {after:?}");
        }
    }
    // No header: round-robin over the live nodes.
    let spread: Vec<String> = (0..10).map(|_| request(proxy.addr(), None)).collect();
    assert!(
        spread.iter().any(|s| s == "a") && spread.iter().any(|s| s == "b"),
        "{spread:?}"
    );
    drop(seen_b);

    let pid = proxy.pid();
    let dir = proxy.dir().to_path_buf();
    drop(proxy);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        }
    );
    assert!(!dir.exists());
}
