//! In-place upgrade against Dovecot with 2,000 TLS sessions (issue 15).
//!
//! One run: SIGUSR2: the PID stays, `/healthz` answers from the new process within 2 s, no app gets
//! a reconnect push, Dovecot logs no new login and `doveadm who` counts the same
//! connections, new mail to 20 users gives exactly 20 pushes, and the new process's memory
//! holds no password; a second upgrade works the same. Then, with the test hook that makes
//! the image unreadable (another format version), the new process starts as after a crash: every app gets exactly one
//! `server_restart` push, and the old connections are closed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{post, Registration, TempDir};

const SUBSCRIPTIONS: usize = 2000;
const CLIENT_THREADS: usize = 8;
const MAIL_USERS: usize = 20;
/// Every password starts with this; nothing else the server sees contains it.
const MARKER: &str = "upgscan-";

struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(config: &Path, addr: SocketAddr, log: PathBuf, env: &[(&str, &str)]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr, log }
    }

    fn signal(&mut self, signal: i32) {
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /healthz` status, or `None` when nothing answers.
fn healthz(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_whitespace().nth(1)?.parse().ok()
}

struct Setup {
    dovecot: Dovecot,
    sink: Sink,
    dir: TempDir,
    config: PathBuf,
    addr: SocketAddr,
    passwords: Vec<String>,
}

fn setup() -> Setup {
    let passwords: Vec<String> = (0..SUBSCRIPTIONS)
        .map(|n| {
            format!(
                "{MARKER}{n:04}-{:016x}",
                0x9e37_79b9_u64.wrapping_mul(n as u64 + 7)
            )
        })
        .collect();
    let users = passwords
        .iter()
        .enumerate()
        .map(|(n, pw)| (format!("user{n}"), pw.clone()));
    let dovecot = Dovecot::start(
        DovecotConfig::default()
            .with_users(users)
            .max_connections(2 * SUBSCRIPTIONS as u32),
    )
    .unwrap();
    let sink = Sink::start();
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
            r#"
listen = "{addr}"
data_dir = "{}"
imap_extra_ca_file = "{}"
reactor_threads = 2
sender_threads = 8
allow_private_destinations = true
allow_http_endpoints = true
[limits]
registrations_per_minute_per_ip = 1000000
logins_per_second_per_host = 1000000
"#,
            dir.path().join("data").display(),
            dir.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    Setup {
        dovecot,
        sink,
        dir,
        config,
        addr,
        passwords,
    }
}

/// Registers every user over TLS from several client threads.
fn register_all(s: &Setup) {
    let imaps = s.dovecot.imaps_port();
    let bodies: Vec<String> = (0..SUBSCRIPTIONS)
        .map(|n| {
            Registration {
                host: "127.0.0.1",
                port: imaps,
                security: "tls",
                username: &format!("user{n}"),
                password: &s.passwords[n],
                device_id: "phone",
                new_mail: &s.sink.url(&format!("/new/{n}")),
                reconnect: &s.sink.url(&format!("/re/{n}")),
            }
            .body()
        })
        .collect();
    let started = Instant::now();
    let addr = s.addr;
    std::thread::scope(|scope| {
        for chunk in bodies.chunks(SUBSCRIPTIONS / CLIENT_THREADS) {
            scope.spawn(move || {
                for body in chunk {
                    assert_eq!(post(addr, body).status, 201);
                }
            });
        }
    });
    eprintln!(
        "{SUBSCRIPTIONS} TLS registrations in {:?}",
        started.elapsed()
    );
}

fn dovecot_logins(dovecot: &Dovecot) -> usize {
    dovecot.log().matches("Login: user=<").count()
}

fn imap_connections(dovecot: &Dovecot) -> usize {
    dovecot
        .who()
        .unwrap()
        .iter()
        .filter(|(_, proto)| proto == "imap")
        .count()
}

/// Sends SIGUSR2 and waits until the new process serves; returns how long that took.
fn upgrade(server: &mut Server) -> Duration {
    let signalled = Instant::now();
    server.signal(libc::SIGUSR2);
    let deadline = signalled + Duration::from_secs(30);
    loop {
        let resumed = server
            .log()
            .contains("upgrade: resumed the sessions handed over");
        if resumed && healthz(server.addr) == Some(200) {
            return signalled.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no new process:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigusr2_hands_2000_tls_sessions_over_and_an_unreadable_image_restarts_them() {
    let s = setup();
    let log = s.dir.path().join("server.log");
    let hook = s.dir.path().join("image-version");
    let env = [(
        "IMAP_PUSH_PROXY_TEST_IMAGE_VERSION_FILE",
        hook.to_str().unwrap(),
    )];
    let mut server = Server::start(&s.config, s.addr, log, &env);
    register_all(&s);
    let pid = server.child.id();
    let logins = dovecot_logins(&s.dovecot);
    assert_eq!(logins, SUBSCRIPTIONS, "one login per subscription");
    let connections = imap_connections(&s.dovecot);
    assert_eq!(connections, SUBSCRIPTIONS);

    let took = upgrade(&mut server);
    eprintln!("SIGUSR2 to /healthz from the new process: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}\n{}", server.log());
    assert!(server.alive(), "the process lives on");
    assert_eq!(server.child.id(), pid, "same PID");
    let log = server.log();
    assert!(
        log.contains(&format!("sessions_adopted={SUBSCRIPTIONS}")),
        "every session adopted:\n{log}"
    );

    // New mail to 20 users: exactly 20 pushes, each to its own app.
    for n in 0..MAIL_USERS {
        s.dovecot
            .deliver(&format!("user{n}"), &simple_message("after the upgrade"))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.sink.requests().len() < MAIL_USERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Anything extra (a reconnect push, a second new-mail push) would arrive now.
    std::thread::sleep(Duration::from_millis(1500));
    let mut per_path: HashMap<String, usize> = HashMap::new();
    for r in s.sink.requests() {
        *per_path.entry(r.path.clone()).or_default() += 1;
    }
    let expected: HashMap<String, usize> =
        (0..MAIL_USERS).map(|n| (format!("/new/{n}"), 1)).collect();
    assert_eq!(per_path, expected, "pushes after the upgrade");

    // Dovecot saw no new login, and holds the same connections.
    assert_eq!(dovecot_logins(&s.dovecot), logins, "no new login");
    assert_eq!(imap_connections(&s.dovecot), connections);

    // The new process never held a password.
    let needles = vec![MARKER.as_bytes().to_vec()];
    let scan_started = Instant::now();
    let (scanned, hits) = scan(pid, &needles);
    eprintln!(
        "scanned {} MiB of the new process in {:?}",
        scanned >> 20,
        scan_started.elapsed()
    );
    assert!(scanned > 1 << 20, "the scan read the process memory");
    assert!(
        hits.is_empty(),
        "{} passwords found: {:?}",
        hits.len(),
        &hits[..hits.len().min(5)]
    );
    // Control: the scan finds what is there (an endpoint path of the sink).
    let control = s.sink.url(&format!("/re/{}", SUBSCRIPTIONS - 1));
    let (_, found) = scan(pid, &[control.into_bytes()]);
    assert!(!found.is_empty(), "control string found");

    // A second upgrade works the same (the image's variable is not inherited twice).
    let took = upgrade_again(&mut server);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(server.child.id(), pid);
    assert_eq!(dovecot_logins(&s.dovecot), logins, "no new login");
    assert!(s
        .sink
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/new/")));
}

/// Like [`upgrade`], for a later upgrade: waits for the second "resumed" line.
fn upgrade_again(server: &mut Server) -> Duration {
    let before = server
        .log()
        .matches("upgrade: resumed the sessions handed over")
        .count();
    let signalled = Instant::now();
    server.signal(libc::SIGUSR2);
    loop {
        let resumed = server
            .log()
            .matches("upgrade: resumed the sessions handed over")
            .count();
        if resumed > before && healthz(server.addr) == Some(200) {
            return signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
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

/// Where any needle occurs in the process's memory; returns (bytes scanned, hits).
fn scan(pid: u32, needles: &[Vec<u8>]) -> (u64, Vec<String>) {
    let mut mem = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut scanned = 0;
    let mut hits = Vec::new();
    for (start, end) in readable_regions(pid) {
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += buf.len() as u64;
        for needle in needles {
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
