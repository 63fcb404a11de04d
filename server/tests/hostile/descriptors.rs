//! Descriptor exhaustion: under a lowered RLIMIT_NOFILE, registrations past the printed
//! session capacity get 503 at_capacity, and nothing else breaks: /healthz, GET, DELETE,
//! /metrics and the pushes of the sessions already held keep working.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{simple_message, Dovecot, DovecotConfig};

use crate::common::{delete, get, http, post, Registration, TempDir};

/// The lowered descriptor limit, soft and hard.
const NOFILE: u64 = 300;

struct Server {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Server {
    /// Starts the binary under `NOFILE` descriptors; returns once it listens.
    fn start(config: &Path, addr: SocketAddr) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: NOFILE as libc::rlim_t,
                    rlim_max: NOFILE as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "server did not listen");
            assert!(child.try_wait().unwrap().is_none(), "server exited");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, stderr }
    }

    /// The session capacity the server printed at start, if it did.
    fn printed_capacity(&self) -> Option<usize> {
        self.stderr.try_iter().find_map(|line| {
            // The start line: `... sessions_capacity=N ...` (text log format).
            let rest = line.split("sessions_capacity=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, addr: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
listen = "{addr}"
data_dir = "{}"
reactor_threads = 1
sender_threads = 2
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
[limits]
registrations_per_minute_per_ip = 1000000
logins_per_second_per_host = 1000000
sessions_per_account_max = 1000000
"#,
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn registrations_past_the_descriptor_capacity_get_503_and_nothing_else_breaks() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start(&write_config(dir.path(), addr), addr);
    let urls: Vec<String> = (0..NOFILE)
        .map(|n| sink.url(&format!("/new/{n}")))
        .collect();
    let devices: Vec<String> = (0..NOFILE).map(|n| format!("device-{n}")).collect();
    let body = |n: usize| {
        Registration {
            host: "127.0.0.1",
            port: dovecot.imap_port(),
            security: "plain",
            username: "alice",
            password: "secret-alice",
            device_id: &devices[n],
            new_mail: &urls[n],
            reconnect: &urls[n],
        }
        .body()
    };

    // Register until the first refusal: it must be at_capacity, nothing worse.
    let mut ids = Vec::new();
    let mut refusal = None;
    for n in 0..NOFILE as usize {
        let reply = post(addr, &body(n));
        if reply.status != 201 {
            refusal = Some(reply);
            break;
        }
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    let refusal = refusal.expect("a limit of 300 descriptors took 300 sessions");
    assert_eq!(
        (refusal.status, refusal.error().as_str()),
        (503, "at_capacity"),
        "after {} sessions: {}",
        ids.len(),
        refusal.body
    );
    let capacity = server
        .printed_capacity()
        .expect("capacity printed at start");
    assert_eq!(
        ids.len(),
        capacity,
        "the refusals start at the printed capacity"
    );
    for n in capacity + 1..capacity + 3 {
        assert_eq!(post(addr, &body(n)).status, 503);
    }

    // The API still answers.
    assert_eq!(http(addr, "GET", "/healthz", "", "").status, 200);
    assert_eq!(get(addr, &ids[0]).status, 200);
    let metrics = http(addr, "GET", "/metrics", "", "").body;
    assert!(
        metrics.contains(&format!("imap_push_sessions_capacity {capacity}\n"))
            && metrics.contains(&format!("imap_push_descriptors_limit {NOFILE}\n")),
        "{metrics}"
    );
    // Every session held still pushes.
    dovecot
        .deliver("alice", &simple_message("at capacity"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reached = || {
        let paths: HashSet<String> = sink.requests().into_iter().map(|r| r.path).collect();
        paths.len()
    };
    while reached() < capacity && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reached(), capacity, "sessions whose push did not arrive");
    // A DELETE frees a place for a new registration.
    assert_eq!(delete(addr, &ids[0]).status, 204);
    dovecot
        .wait_for_connection_count("alice", capacity - 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let reply = post(addr, &body(capacity + 5));
    assert_eq!(reply.status, 201, "{}", reply.body);
}
