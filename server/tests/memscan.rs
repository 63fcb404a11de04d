//! Credentials live only until the login command is written: after 1,000 registrations with
//! unique passwords, the server process's memory (read through /proc/PID/mem) holds none
//! of them, in the clear or as the base64 of an AUTHENTICATE PLAIN response.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::{Dovecot, DovecotConfig};

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

fn post(addr: SocketAddr, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let request = format!(
        "POST /v1/subscriptions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
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
            if let Some(at) = buf
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
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
    let dir = std::env::temp_dir().join(format!("ipp-memscan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), dovecot.ca_pem()).unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nimap_extra_ca_file = \"{}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             [limits]\nregistrations_per_minute_per_ip = 1000000\nlogins_per_second_per_host = 1000000\n",
            dir.join("data").display(),
            dir.join("ca.pem").display()
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
                    assert_eq!(post(addr, &body.to_string()), 201);
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
    let _ = std::fs::remove_dir_all(&dir);
}
