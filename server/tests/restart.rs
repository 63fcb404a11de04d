//! Nothing silently lost: the server holding 2,000 subscriptions is killed with SIGKILL and
//! restarted, then stopped with SIGTERM: every reconnect endpoint gets exactly one push each
//! time (`server_restart`, then `shutdown`), and nothing more.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{Dovecot, DovecotConfig};

mod common;

use common::{post, Registration, TempDir};

const SUBSCRIPTIONS: usize = 2000;
const CLIENT_THREADS: usize = 8;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(config: &Path, addr: SocketAddr) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr }
    }

    fn signal(&mut self, signal: i32) {
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Registers SUBSCRIPTIONS accounts (one device each) from several client threads.
fn register_all(addr: SocketAddr, imap_port: u16, sink: &Sink) {
    let bodies: Vec<String> = (0..SUBSCRIPTIONS)
        .map(|n| {
            Registration {
                host: "127.0.0.1",
                port: imap_port,
                security: "plain",
                username: "alice",
                password: "secret-alice",
                device_id: &format!("device-{n}"),
                new_mail: &sink.url(&format!("/new/{n}")),
                reconnect: &sink.url(&format!("/re/{n}")),
            }
            .body()
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in bodies.chunks(SUBSCRIPTIONS / CLIENT_THREADS) {
            scope.spawn(move || {
                for body in chunk {
                    assert_eq!(post(addr, body).status, 201);
                }
            });
        }
    });
    eprintln!("{SUBSCRIPTIONS} registrations in {:?}", started.elapsed());
}

/// Waits until every reconnect endpoint has had a push with `reason`, then a little
/// longer, and checks there is exactly one each.
fn expect_one_reconnect_each(sink: &Sink, reason: &str, since: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = || {
        sink.requests()[since..]
            .iter()
            .filter(|r| r.path.starts_with("/re/"))
            .count()
    };
    while count() < SUBSCRIPTIONS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Anything extra would arrive now.
    std::thread::sleep(Duration::from_millis(1500));
    let mut per_path: HashMap<String, usize> = HashMap::new();
    for r in sink.requests()[since..].iter() {
        let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if r.path.starts_with("/re/") {
            assert_eq!(payload["reason"], reason, "{payload}");
            *per_path.entry(r.path.clone()).or_default() += 1;
        } else {
            panic!("unexpected push to {}: {payload}", r.path);
        }
    }
    assert_eq!(per_path.len(), SUBSCRIPTIONS, "endpoints reached");
    let doubles: Vec<_> = per_path.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubles.is_empty(), "more than one push: {doubles:?}");
}

fn write_config(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
listen = "{addr}"
data_dir = "{}"
reactor_threads = 2
sender_threads = 8
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
[limits]
registrations_per_minute_per_ip = 1000000
# This test is about restarts, not about pacing logins.
logins_per_second_per_host = 1000000
# ...nor about the cap of devices per account (every subscription is alice's).
sessions_per_account_max = 1000000
"#,
        dir.join("data").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kill_9_and_sigterm_each_reach_every_app_exactly_once() {
    let dovecot =
        Dovecot::start(DovecotConfig::default().max_connections(2 * SUBSCRIPTIONS as u32)).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(dir.path(), addr);

    // 1. kill -9 while holding SUBSCRIPTIONS sessions.
    let mut server = Server::start(&config, addr);
    register_all(server.addr, dovecot.imap_port(), &sink);
    assert!(sink.requests().is_empty());
    server.signal(libc::SIGKILL);
    server.wait(Duration::from_secs(10));

    // After the restart every app hears `server_restart`, once.
    let mut server = Server::start(&config, addr);
    expect_one_reconnect_each(&sink, "server_restart", 0);

    // 2. SIGTERM: every app hears `shutdown`, once, and the exit is clean.
    let before = sink.requests().len();
    register_all(server.addr, dovecot.imap_port(), &sink);
    server.signal(libc::SIGTERM);
    let status = server.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    expect_one_reconnect_each(&sink, "shutdown", before);

    // 3. Those pushes were settled: a new start owes nobody anything.
    let before = sink.requests().len();
    let mut server = Server::start(&config, addr);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.requests().len(), before, "pushes after a clean stop");
    server.signal(libc::SIGTERM);
    assert!(server.wait(Duration::from_secs(30)).success());
}
