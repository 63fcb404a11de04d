//! Sessions that cannot be handed over end as after a crash: with `tls_compact = false`
//! every session stays on rustls, whose state cannot leave the process; SIGUSR2 still
//! upgrades in the same PID, adopts nothing, and every app gets exactly one
//! `server_restart` push from the journal. Dovecot sees the old connections close.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{Dovecot, DovecotConfig};

mod common;

use common::{eventually, post, Registration, TempDir};

const SUBSCRIPTIONS: usize = 5;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn rustls_sessions_are_not_handed_over_and_each_app_hears_server_restart_once() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    std::fs::write(dir.path().join("ca.pem"), dovecot.ca_pem()).unwrap();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\nimap_extra_ca_file = \"{}\"\n\
             allow_private_destinations = true\nallow_http_endpoints = true\n\
             tls_compact = false\n",
            dir.path().join("data").display(),
            dir.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in 0..SUBSCRIPTIONS {
        let body = Registration {
            host: "127.0.0.1",
            port: dovecot.imaps_port(),
            security: "tls",
            username: "alice",
            password: "secret-alice",
            device_id: &format!("device-{n}"),
            new_mail: &sink.url(&format!("/new/{n}")),
            reconnect: &sink.url(&format!("/re/{n}")),
        }
        .body();
        assert_eq!(post(addr, &body).status, 201);
    }
    let pid = server.0.id();
    // SAFETY: a signal to the child we started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(15), || text()
            .contains("upgrade: resumed the sessions handed over")),
        "{}",
        text()
    );
    assert!(text().contains("sessions_adopted=0"), "{}", text());
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the process lives on"
    );
    let arrived = eventually(Duration::from_secs(15), || {
        sink.requests().len() >= SUBSCRIPTIONS
    });
    assert!(arrived, "server_restart pushes missing");
    std::thread::sleep(Duration::from_millis(1200));
    let mut paths: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| {
            let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(payload["reason"], "server_restart", "{payload}");
            r.path.clone()
        })
        .collect();
    paths.sort();
    let expected: Vec<String> = (0..SUBSCRIPTIONS).map(|n| format!("/re/{n}")).collect();
    assert_eq!(paths, expected, "exactly one server_restart each");
    dovecot
        .wait_for_connection_count("alice", 0, Duration::from_secs(10))
        .unwrap();
}
