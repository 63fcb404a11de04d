//! Credentials live only until the login command is written: after 1,000 registrations with
//! unique passwords, the server process's memory (read through /proc/PID/mem) holds none
//! of them, in the clear or as the base64 of an AUTHENTICATE PLAIN response.
//!
//! Refusals wipe too: registrations refused with 400, 401, 404, 405, 413 and 429, and
//! bodies cut off by a reset, leave none of their passwords (nor the wrong bearer tokens)
//! behind.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::{Dovecot, DovecotConfig};

mod common;

use common::{post, TempDir};

const ACCOUNTS: usize = 1000;
const CLIENT_THREADS: usize = 8;
/// Every password starts with this; nothing else the server sees contains it.
const MARKER: &str = "pwscan-";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every readable mapping of `pid`, as (start, end).
fn readable_regions(pid: u32) -> Vec<(u64, u64)> {
    let maps = BufReader::new(File::open(format!("/proc/{pid}/maps")).unwrap());
    maps.lines()
        .map_while(Result::ok)
        .filter(|line| {
            let perms = line.split_whitespace().nth(1).unwrap_or("");
            perms.starts_with('r') && !line.ends_with("[vvar]") && !line.ends_with("[vsyscall]")
        })
        .filter_map(|line| {
            let range = line.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

/// Counts where any needle occurs in the process's memory; returns (bytes scanned, hits).
fn scan(pid: u32, needles: &[Vec<u8>]) -> (u64, Vec<String>) {
    let mut mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0;
    let mut hits = Vec::new();
    for (start, end) in readable_regions(pid) {
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue; // Unreadable mappings (guard pages) hold nothing of ours.
        }
        scanned += buf.len() as u64;
        for needle in needles {
            // Every occurrence, so a failure says how much was left behind.
            for (at, _) in buf
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle.as_slice())
            {
                hits.push(format!(
                    "{:?} at {:#x}",
                    String::from_utf8_lossy(needle),
                    start + at as u64
                ));
            }
        }
    }
    (scanned, hits)
}

#[test]
fn no_password_is_left_in_the_server_process_after_1000_registrations() {
    let passwords: Vec<String> = (0..ACCOUNTS)
        .map(|n| {
            format!(
                "{MARKER}{n:04}-{:016x}",
                0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n as u64 + 1)
            )
        })
        .collect();
    let users: Vec<(String, String)> = passwords
        .iter()
        .enumerate()
        .map(|(n, pw)| (format!("user{n}"), pw.clone()))
        .collect();
    let dovecot = Dovecot::start(
        DovecotConfig::default()
            .with_users(users.clone())
            .max_connections(2 * ACCOUNTS as u32),
    )
    .unwrap();
    let dir = TempDir::new();
    std::fs::write(dir.path().join("ca.pem"), dovecot.ca_pem()).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nimap_extra_ca_file = \"{}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             [limits]\nregistrations_per_minute_per_ip = 1000000\nlogins_per_second_per_host = 1000000\n",
            dir.path().join("data").display(),
            dir.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let imaps = dovecot.imaps_port();
    std::thread::scope(|scope| {
        for chunk in users.chunks(ACCOUNTS / CLIENT_THREADS) {
            scope.spawn(move || {
                for (user, password) in chunk {
                    let body = serde_json::json!({
                        "imap": {"host": "127.0.0.1", "port": imaps, "security": "tls",
                                 "username": user, "password": password},
                        "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
                        "reconnect": {"endpoint": "http://127.0.0.1:9/re"},
                    });
                    assert_eq!(post(addr, &body.to_string()).status, 201);
                }
            });
        }
    });
    eprintln!("{ACCOUNTS} TLS registrations in {:?}", started.elapsed());

    // Every password contains MARKER. Every AUTHENTICATE PLAIN response is the base64 of
    // "\0userN\0password", which always starts with "AHVzZXI" ("\0us" is "AHVz", and
    // "er" plus a digit is "ZXI" and one more character).
    let prefix = base64::engine::general_purpose::STANDARD.encode("\0user0");
    assert!(prefix.starts_with("AHVzZXI"));
    let needles: Vec<Vec<u8>> = vec![MARKER.as_bytes().to_vec(), b"AHVzZXI".to_vec()];
    let (scanned, hits) = scan(server.0.id(), &needles);
    eprintln!("scanned {} MiB of the server's memory", scanned >> 20);
    assert!(scanned > 1 << 20, "the scan read the process memory");
    assert!(
        hits.is_empty(),
        "{} secrets found: {:?}",
        hits.len(),
        &hits[..hits.len().min(10)]
    );

    // The scan can find what is there: the server's own VAPID public key is in memory.
    let reply = {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /v1/vapid-public-key HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    let key = reply
        .split("\"public_key\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let (_, found) = scan(server.0.id(), &[key.as_bytes().to_vec()]);
    assert!(!found.is_empty(), "control: a known string must be found");
    drop(server);
}

/// Every refused password starts with this.
const REFUSED_MARKER: &str = "pwrefused-";
/// Every wrong bearer token starts with this.
const TOKEN_MARKER: &str = "tokscan-";
/// The right bearer token of the refusals test.
const API_TOKEN: &str = "memscan-api-token-0123456789";
/// Requests per kind of refusal.
const REFUSALS: usize = 100;

/// A TCP connection to `addr` from `local` (any of 127.0.0.0/8 is ours on loopback), so
/// that the server's per-address rate limit sees distinct clients.
fn connect_from(local: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(remote) = addr else {
        panic!("the test server listens on IPv4");
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
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

/// Sends one request from `local` and returns the status (0 when the server closed
/// without one). Write errors are ignored: a server refusing a large body may close
/// before it is all sent.
fn request_from(local: std::net::Ipv4Addr, addr: SocketAddr, raw: &[u8]) -> u16 {
    let mut s = connect_from(local, addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(raw);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn request_bytes(method: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A registration body carrying `password`.
fn registration(password: &str, security: &str) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": 993, "security": security,
                 "username": "someone", "password": password},
        "new_mail": {"endpoint": "http://127.0.0.1:9/new"},
        "reconnect": {"endpoint": "http://127.0.0.1:9/re"},
    })
    .to_string()
}

/// Starts the release-built server with `config` (TOML) and waits until it listens.
fn start_server(config: &std::path::Path, addr: SocketAddr) -> Server {
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[test]
fn no_password_is_left_after_refused_registrations() {
    use std::net::Ipv4Addr;
    let dir = TempDir::new();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    // One registration per address per minute: the second from an address is a 429.
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\napi_token = \"{API_TOKEN}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             [limits]\nregistrations_per_minute_per_ip = 1\nbody_bytes_max = 4096\n",
            dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let server = start_server(&config, addr);
    let password = |kind: &str, n: usize| format!("{REFUSED_MARKER}{kind}-{n:04}-{:08x}", n * 7919);
    let mut seen: std::collections::BTreeMap<(&str, u16), usize> = Default::default();
    let mut count = |kind, status| *seen.entry((kind, status)).or_default() += 1;
    let lo = Ipv4Addr::LOCALHOST;

    for n in 0..REFUSALS {
        // 401: a wrong bearer token (unique too: it must not stay either).
        let token = format!("{TOKEN_MARKER}{n:04}-wrong-token");
        let body = registration(&password("401", n), "tls");
        count(
            "401",
            request_from(
                lo,
                addr,
                &request_bytes("POST", "/v1/subscriptions", &token, &body),
            ),
        );
        // 400: each from an address of its own, so no rate limit is reached; half
        // fail validation, half are cut-off JSON.
        let from = Ipv4Addr::new(127, 0, 1 + (n / 200) as u8, 1 + (n % 200) as u8);
        let mut body = registration(&password("400", n), "bogus");
        if n % 2 == 1 {
            body.truncate(body.find("new_mail").unwrap());
        }
        count(
            "400",
            request_from(
                from,
                addr,
                &request_bytes("POST", "/v1/subscriptions", API_TOKEN, &body),
            ),
        );
        // 413: the declared length is past body_bytes_max.
        let body = format!(
            "{}{}",
            registration(&password("413", n), "tls"),
            " ".repeat(5000)
        );
        count(
            "413",
            request_from(
                lo,
                addr,
                &request_bytes("POST", "/v1/subscriptions", API_TOKEN, &body),
            ),
        );
        // 404 and 405: a body nobody asked for.
        let body = registration(&password("404", n), "tls");
        count(
            "404",
            request_from(
                lo,
                addr,
                &request_bytes("POST", "/v1/nowhere", API_TOKEN, &body),
            ),
        );
        let body = registration(&password("405", n), "tls");
        count(
            "405",
            request_from(
                lo,
                addr,
                &request_bytes("PUT", "/v1/subscriptions", API_TOKEN, &body),
            ),
        );
        // A body cut off by the client going away.
        let mut raw = request_bytes(
            "POST",
            "/v1/subscriptions",
            API_TOKEN,
            &registration(&password("cut", n), "tls"),
        );
        raw.truncate(raw.len() - 20);
        let mut s = connect_from(lo, addr).unwrap();
        s.write_all(&raw).unwrap();
        drop(s);
    }
    // 429: 127.0.0.2 spends its one registration on a body without a password, then
    // every further one is refused for the rate.
    let from = Ipv4Addr::new(127, 0, 0, 2);
    let first = request_from(
        from,
        addr,
        &request_bytes("POST", "/v1/subscriptions", API_TOKEN, "{}"),
    );
    assert_eq!(first, 400, "the rate token is spent on a bad body");
    for n in 0..REFUSALS {
        let body = registration(&password("429", n), "tls");
        count(
            "429",
            request_from(
                from,
                addr,
                &request_bytes("POST", "/v1/subscriptions", API_TOKEN, &body),
            ),
        );
    }
    eprintln!("refusals seen (kind, status): count = {seen:?}");
    assert_each_refused(&seen, &["401", "400", "413", "404", "405", "429"], REFUSALS);
    // The cut-off connections must be gone before the scan.
    std::thread::sleep(Duration::from_millis(500));
    assert_no_refused_secret_left(server.0.id());
    drop(server);
}

/// Requests per kind of refusal over TLS (each is a curl process).
const TLS_REFUSALS: usize = 30;

/// One HTTPS request through curl from `local`; the status (0: none).
fn curl_from(
    local: std::net::Ipv4Addr,
    url: &str,
    ca: &std::path::Path,
    method: &str,
    token: &str,
    body: &str,
) -> u16 {
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(["--interface", &local.to_string(), "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs");
    let _ = child.stdin.take().unwrap().write_all(body.as_bytes());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn no_password_is_left_after_refused_registrations_over_tls() {
    use std::net::Ipv4Addr;
    let dir = TempDir::new();
    let pki = testkit::TestPki::generate().unwrap();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.leaf_key_pem).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\napi_token = \"{API_TOKEN}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             [tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [limits]\nregistrations_per_minute_per_ip = 1\nbody_bytes_max = 4096\n",
            dir.path().join("data").display(),
            cert.display(),
            key.display(),
        ),
    )
    .unwrap();
    let server = start_server(&config, addr);
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", addr.port());
    let password =
        |kind: &str, n: usize| format!("{REFUSED_MARKER}tls{kind}-{n:04}-{:08x}", n * 7919);
    let mut seen: std::collections::BTreeMap<(&str, u16), usize> = Default::default();
    let lo = Ipv4Addr::LOCALHOST;
    let subscriptions = url("/v1/subscriptions");
    for n in 0..TLS_REFUSALS {
        let token = format!("{TOKEN_MARKER}tls{n:04}-wrong-token");
        let body = registration(&password("401", n), "tls");
        *seen
            .entry((
                "401",
                curl_from(lo, &subscriptions, &ca, "POST", &token, &body),
            ))
            .or_default() += 1;
        let from = Ipv4Addr::new(127, 0, 2, 1 + n as u8);
        let mut body = registration(&password("400", n), "bogus");
        if n % 2 == 1 {
            body.truncate(body.find("new_mail").unwrap());
        }
        *seen
            .entry((
                "400",
                curl_from(from, &subscriptions, &ca, "POST", API_TOKEN, &body),
            ))
            .or_default() += 1;
        let body = format!(
            "{}{}",
            registration(&password("413", n), "tls"),
            " ".repeat(5000)
        );
        *seen
            .entry((
                "413",
                curl_from(lo, &subscriptions, &ca, "POST", API_TOKEN, &body),
            ))
            .or_default() += 1;
        let body = registration(&password("404", n), "tls");
        *seen
            .entry((
                "404",
                curl_from(lo, &url("/v1/nowhere"), &ca, "POST", API_TOKEN, &body),
            ))
            .or_default() += 1;
    }
    let from = Ipv4Addr::new(127, 0, 0, 3);
    assert_eq!(
        curl_from(from, &subscriptions, &ca, "POST", API_TOKEN, "{}"),
        400
    );
    for n in 0..TLS_REFUSALS {
        let body = registration(&password("429", n), "tls");
        *seen
            .entry((
                "429",
                curl_from(from, &subscriptions, &ca, "POST", API_TOKEN, &body),
            ))
            .or_default() += 1;
    }
    eprintln!("TLS refusals seen (kind, status): count = {seen:?}");
    assert_each_refused(&seen, &["401", "400", "413", "404", "429"], TLS_REFUSALS);
    std::thread::sleep(Duration::from_millis(500));
    assert_no_refused_secret_left(server.0.id());
    drop(server);
}

/// Every kind of refusal in `kinds` was answered with its own status (the kind names it)
/// exactly `n` times.
fn assert_each_refused(
    seen: &std::collections::BTreeMap<(&str, u16), usize>,
    kinds: &[&str],
    n: usize,
) {
    for kind in kinds {
        let status: u16 = kind.parse().expect("a kind is its status");
        assert_eq!(seen.get(&(*kind, status)), Some(&n), "{kind}: {seen:?}");
    }
}

/// Scans the server's memory: no refused password and no wrong token is left, and the
/// control (the right token, which the server holds from its config) is found.
fn assert_no_refused_secret_left(pid: u32) {
    let needles = vec![
        REFUSED_MARKER.as_bytes().to_vec(),
        TOKEN_MARKER.as_bytes().to_vec(),
    ];
    let (scanned, hits) = scan(pid, &needles);
    eprintln!("scanned {} MiB of the server's memory", scanned >> 20);
    assert!(scanned > 1 << 20, "the scan read the process memory");
    assert!(
        hits.is_empty(),
        "{} secrets found: {:?}",
        hits.len(),
        &hits[..hits.len().min(10)]
    );
    let (_, found) = scan(pid, &[API_TOKEN.as_bytes().to_vec()]);
    assert!(!found.is_empty(), "control: a known string must be found");
}
