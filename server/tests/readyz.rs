//! `/readyz` against the real server: each reason it is not ready produced for real, and
//! the answer back to 200 once the cause goes.
//! - `at_capacity`: a server with `sessions_max = 1` holding one session of a real Dovecot;
//! - `journal_unavailable`: the data dir on a tiny tmpfs that is then filled (ENOSPC), in
//!   a private mount namespace;
//! - `draining`: shutdown with a shutdown push held up by a slow push service.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use push::testing::Sink;
use server::{App, Config};
use testkit::{Dovecot, DovecotConfig};

mod common;

use common::{eventually, http, loopback_config, Registration, Reply, TempDir};

const TOKEN: &str = "readyz-test-token";

fn readyz(addr: std::net::SocketAddr) -> Reply {
    http(addr, "GET", "/readyz", "", "")
}

/// The reason of a 503, or "ready" for a 200.
fn state(reply: &Reply) -> String {
    let body = reply.json();
    match (reply.status, &body["ready"]) {
        (200, serde_json::Value::Bool(true)) => "ready".into(),
        (503, serde_json::Value::Bool(false)) => body["reason"].as_str().unwrap_or("?").into(),
        _ => panic!("unexpected /readyz answer {}: {}", reply.status, reply.body),
    }
}

fn registration<'a>(dovecot: &Dovecot, sink: &'a Sink, device: &'a str) -> String {
    let new_mail = sink.url("/new");
    let reconnect = sink.url("/reconnect");
    Registration {
        host: "127.0.0.1",
        port: dovecot.imaps_port(),
        security: "tls",
        username: "alice",
        password: "secret-alice",
        device_id: device,
        new_mail: &new_mail,
        reconnect: &reconnect,
    }
    .body()
}

/// Starts a server with `config`, registers phone-1 (201) and sees it ready.
fn ready_with_one(config: Config, dovecot: &Dovecot, sink: &Sink) -> App {
    let app = App::start(config).unwrap();
    let addr = app.local_addr();
    let reply = common::post(addr, &registration(dovecot, sink, "phone-1"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(state(&readyz(addr)), "ready");
    app
}

fn post_with_token(addr: std::net::SocketAddr, body: &str) -> Reply {
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    http(addr, "POST", "/v1/subscriptions", body, &auth)
}

#[test]
fn at_capacity_while_full_and_ready_again_after_a_delete_with_no_token() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let mut config = loopback_config(&dir, Some(&dovecot));
    config.limits.sessions_max = 1;
    config.api_token = Some(TOKEN.into());
    let app = App::start(config).unwrap();
    let addr = app.local_addr();

    // No token needed, as for /healthz; /metrics does need one.
    assert_eq!(state(&readyz(addr)), "ready");
    assert_eq!(http(addr, "GET", "/metrics", "", "").status, 401);

    let reply = post_with_token(addr, &registration(&dovecot, &sink, "phone-1"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(state(&readyz(addr)), "at_capacity");
    // What the load balancer is told is what a registration gets.
    let refused = post_with_token(addr, &registration(&dovecot, &sink, "phone-2"));
    assert_eq!(
        (refused.status, refused.error()),
        (503, "at_capacity".into())
    );

    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let deleted = http(
        addr,
        "DELETE",
        &format!("/v1/subscriptions/{id}"),
        "",
        &auth,
    );
    assert_eq!(deleted.status, 204);
    assert_eq!(state(&readyz(addr)), "ready");
    app.shutdown();
}

#[test]
fn draining_while_the_shutdown_pushes_go_out() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    // The shutdown push takes a while: the drain lasts as long.
    sink.set_delay("/reconnect", Duration::from_secs(3));
    let dir = TempDir::new();
    let config = Config {
        shutdown_grace_secs: 5,
        ..loopback_config(&dir, Some(&dovecot))
    };
    let app = ready_with_one(config, &dovecot, &sink);
    let addr = app.local_addr();

    let stopping = std::thread::spawn(move || app.shutdown());
    assert!(
        eventually(Duration::from_secs(3), || state(&readyz(addr))
            == "draining"),
        "/readyz never said draining"
    );
    let health = http(addr, "GET", "/healthz", "", "");
    assert_eq!(health.status, 200, "the process lives while it drains");
    let refused = common::post(addr, &registration(&dovecot, &sink, "phone-2"));
    assert_eq!(
        (refused.status, refused.error()),
        (503, "shutting_down".into())
    );
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);
    stopping.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the API stops once the drain is over"
    );
}

#[test]
fn journal_unavailable_on_a_full_disk_and_ready_once_there_is_room() {
    testkit::netns::run_inside("journal_on_a_full_disk_inner", &[]);
}

#[test]
#[ignore = "runs inside private namespaces, started by journal_unavailable_on_a_full_disk_and_ready_once_there_is_room"]
fn journal_on_a_full_disk_inner() {
    if !testkit::netns::inside() {
        return;
    }
    let dir = TempDir::new();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // The mount is private to this namespace and goes with it.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let config = Config {
        data_dir: mnt.join("data"),
        ..loopback_config(&dir, Some(&dovecot))
    };
    let app = ready_with_one(config, &dovecot, &sink);
    let addr = app.local_addr();

    let filler = mnt.join("filler");
    fill(&filler);
    let reply = common::post(addr, &registration(&dovecot, &sink, "phone-2"));
    assert_eq!(reply.status, 500, "the journal write fails: {}", reply.body);
    assert_eq!(state(&readyz(addr)), "journal_unavailable");
    // Probes go on failing while the disk is full.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(state(&readyz(addr)), "journal_unavailable");
    let metrics = http(addr, "GET", "/metrics", "", "").body;
    let failed = "imap_push_journal_commits_total{outcome=\"failed\"} ";
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(failed))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {failed} in\n{metrics}"));
    assert!(
        failures >= 2,
        "the registration and a probe failed: {failures}"
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || state(&readyz(addr)) == "ready"),
        "/readyz did not turn ready once the disk had room"
    );
    let reply = common::post(addr, &registration(&dovecot, &sink, "phone-3"));
    assert_eq!(reply.status, 201, "{}", reply.body);
    app.shutdown();
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let error = loop {
        if let Err(e) = file.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(error.raw_os_error(), Some(ENOSPC), "{error}");
}

/// "No space left on device" (Linux).
const ENOSPC: i32 = 28;
