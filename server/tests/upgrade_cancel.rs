//! An upgrade that cannot happen keeps every session: the server runs from a copy of its
//! binary; SIGUSR2 with that file not executable cancels before anything stops; with a
//! file that is executable but no program (execve fails with ENOEXEC) every session is
//! adopted back; with the real binary renamed over the path again (as a package upgrade
//! does) the upgrade goes through. Mail reaches every app after each step, no app gets a
//! reconnect push, and Dovecot sees no second login. Last, an upgrade to a binary that
//! fails to start loses nobody: the next start of the real binary sends every app exactly
//! one `server_restart` push, from the journal.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{simple_message, Dovecot, DovecotConfig};

mod common;

use common::{eventually, post, Registration, TempDir};

const SUBSCRIPTIONS: usize = 5;

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn lines_with(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    fn usr2(&self) {
        // SAFETY: a signal to the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR2) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts `content` at `path` by renaming a new file over it, as a package manager does.
fn replace(path: &Path, content: &[u8], mode: u32) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One mail to alice: every app gets exactly one new-mail push, and nothing else comes.
fn mail_reaches_every_app(dovecot: &Dovecot, sink: &Sink, step: &str) {
    let since = sink.requests().len();
    dovecot.deliver("alice", &simple_message(step)).unwrap();
    let arrived = eventually(Duration::from_secs(15), || {
        sink.requests().len() >= since + SUBSCRIPTIONS
    });
    assert!(arrived, "{step}: pushes missing");
    std::thread::sleep(Duration::from_millis(1200));
    let mut paths: Vec<String> = sink.requests()[since..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    paths.sort();
    let expected: Vec<String> = (0..SUBSCRIPTIONS).map(|n| format!("/new/{n}")).collect();
    assert_eq!(paths, expected, "{step}");
}

#[test]
fn a_cancelled_or_failed_upgrade_keeps_every_session_and_a_later_one_succeeds() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let bin = dir.path().join("imap-push-proxy");
    let real = std::fs::read(env!("CARGO_BIN_EXE_imap-push-proxy")).unwrap();
    replace(&bin, &real, 0o755);
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nallow_private_destinations = true\n\
             allow_http_endpoints = true\nallow_plain_imap = true\ncoalesce_window_ms = 100\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let mut server = Server {
        child: Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in 0..SUBSCRIPTIONS {
        let body = Registration {
            host: "127.0.0.1",
            port: dovecot.imap_port(),
            security: "plain",
            username: "alice",
            password: "secret-alice",
            device_id: &format!("device-{n}"),
            new_mail: &sink.url(&format!("/new/{n}")),
            reconnect: &sink.url(&format!("/re/{n}")),
        }
        .body();
        assert_eq!(post(addr, &body).status, 201);
    }
    let logins = dovecot.log().matches("Login: user=<alice>").count();
    assert_eq!(logins, SUBSCRIPTIONS);

    // 1. Not executable: cancelled before anything stops.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    server.usr2();
    assert!(eventually(Duration::from_secs(10), || server
        .lines_with("upgrade cancelled")
        == 1));
    assert!(
        server.log().contains("is not an executable file"),
        "{}",
        server.log()
    );
    mail_reaches_every_app(&dovecot, &sink, "after a cancelled upgrade");

    // 2. Executable, but no program: execve fails, every session is adopted back.
    replace(&bin, b"this is not a program\n", 0o755);
    server.usr2();
    assert!(eventually(Duration::from_secs(10), || server
        .lines_with("upgrade cancelled")
        == 2));
    assert!(server.log().contains("exec:"), "{}", server.log());
    mail_reaches_every_app(&dovecot, &sink, "after a failed exec");

    // 3. The real binary renamed over the path: the upgrade goes through.
    replace(&bin, &real, 0o755);
    server.usr2();
    assert!(eventually(Duration::from_secs(10), || server
        .lines_with("upgrade: resumed the sessions handed over")
        == 1));
    assert!(
        server
            .log()
            .contains(&format!("sessions_adopted={SUBSCRIPTIONS}")),
        "{}",
        server.log()
    );
    mail_reaches_every_app(&dovecot, &sink, "after the upgrade");
    assert!(
        sink.requests().iter().all(|r| r.path.starts_with("/new/")),
        "no reconnect push"
    );
    assert_eq!(
        dovecot.log().matches("Login: user=<alice>").count(),
        logins,
        "no new login"
    );

    // 4. A new binary that fails to start: the process ends...
    replace(&bin, b"#!/bin/sh\nexit 3\n", 0o755);
    server.usr2();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the failed binary did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3));
    // ...and the next start that succeeds owes every app its `server_restart` push.
    let since = sink.requests().len();
    let log = dir.path().join("server-2.log");
    let _restarted = Server {
        child: Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
        log,
    };
    let arrived = eventually(Duration::from_secs(20), || {
        sink.requests().len() >= since + SUBSCRIPTIONS
    });
    assert!(arrived, "server_restart pushes missing");
    std::thread::sleep(Duration::from_millis(1200));
    let mut restarts: Vec<String> = sink.requests()[since..]
        .iter()
        .map(|r| {
            let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(payload["reason"], "server_restart", "{payload}");
            r.path.clone()
        })
        .collect();
    restarts.sort();
    let expected: Vec<String> = (0..SUBSCRIPTIONS).map(|n| format!("/re/{n}")).collect();
    assert_eq!(restarts, expected, "exactly one server_restart each");
}
