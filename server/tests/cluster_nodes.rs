//! Two real nodes (the binary) sharing a real PostgreSQL journal, against Dovecot: a
//! key registered again on the other node is taken over there and dropped here with no
//! push, a DELETE through the other node ends the session (no push for mail after it), a
//! GET through the other node reads the row, a twin of a live node_id is refused, and
//! after `kill -9` of a node the survivor pushes `node_lost` exactly once to each of its
//! subscriptions, within 15 s, and to nobody else. (The full cluster behind HAProxy is
//! server/tests/cluster.rs.)

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use push::testing::Sink;
use testkit::{simple_message, Dovecot, DovecotConfig, Postgres};

mod common;

use common::{delete, get, http, Registration, TempDir};

const USERS: usize = 10;
/// Every wait of this test for the cluster to act.
const ACT_TIMEOUT: Duration = Duration::from_secs(15);

struct Node {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(dir: &Path, name: &str, url: &str) -> (PathBuf, SocketAddr) {
    let addr = free_addr();
    let data = dir.join(name);
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"
listen = "{addr}"
data_dir = "{}"
reactor_threads = 1
sender_threads = 2
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
shutdown_grace_secs = 1
journal = "{url}"
node_id = "{name}"
heartbeat_secs = 1
node_lost_after_secs = 5
"#,
        data.display()
    );
    std::fs::write(&path, text).unwrap();
    (path, addr)
}

impl Node {
    fn start(config: &Path, addr: SocketAddr) -> Node {
        let child = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
            .args(["serve", "--config"])
            .arg(config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "node did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node {
            child,
            addr,
            config: config.to_owned(),
        }
    }

    fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn user(n: usize) -> String {
    format!("u{n}")
}

/// Registers user `n` (device `device`) on `node`; its id.
fn register(node: &Node, imap_port: u16, sink: &Sink, n: usize, device: &str) -> String {
    let body = Registration {
        host: "127.0.0.1",
        port: imap_port,
        security: "plain",
        username: &user(n),
        password: "pw",
        device_id: device,
        new_mail: &sink.url(&format!("/new/{n}/{device}")),
        reconnect: &sink.url(&format!("/re/{n}/{device}")),
    }
    .body();
    let reply = http(node.addr, "POST", "/v1/subscriptions", &body, "");
    assert_eq!(reply.status, 201, "{}", reply.body);
    let created = reply.json();
    assert!(created["routing_key"]
        .as_str()
        .is_some_and(|k| k.len() == 43));
    created["id"].as_str().unwrap().to_owned()
}

/// Reconnect pushes per path, with their reasons.
fn reconnects(sink: &Sink) -> HashMap<String, Vec<String>> {
    let mut per_path: HashMap<String, Vec<String>> = HashMap::new();
    for r in sink.requests() {
        if r.path.starts_with("/re/") {
            let payload: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let reason = payload["reason"].as_str().unwrap_or_default().to_owned();
            per_path.entry(r.path.clone()).or_default().push(reason);
        }
    }
    per_path
}

fn new_mail_pushes(sink: &Sink, n: usize) -> usize {
    let prefix = format!("/new/{n}/");
    sink.requests()
        .iter()
        .filter(|r| r.path.starts_with(&prefix))
        .count()
}

#[test]
fn two_nodes_share_one_journal_and_a_lost_nodes_users_are_told_once() {
    let users: Vec<(String, &[u8])> = (0..USERS).map(|n| (user(n), &b"pw"[..])).collect();
    let dovecot = Dovecot::start(DovecotConfig::default().with_users(users)).unwrap();
    let pg = Postgres::start().expect("PostgreSQL (Debian package postgresql)");
    let sink = Sink::start();
    let dir = TempDir::new();
    let url = pg.url();
    let (c1, a1) = write_config(dir.path(), "n1", &url);
    let (c2, a2) = write_config(dir.path(), "n2", &url);
    let mut n1 = Node::start(&c1, a1);
    let n2 = Node::start(&c2, a2);
    let port = dovecot.imap_port();

    // u0..u5 on n1, u6..u9 on n2.
    let mut ids: Vec<String> = (0..6).map(|n| register(&n1, port, &sink, n, "d")).collect();
    ids.extend((6..USERS).map(|n| register(&n2, port, &sink, n, "d")));

    // A twin of the live n1 is refused, and says why.
    let twin = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"))
        .args(["serve", "--config"])
        .arg(&n1.config)
        .args(["--listen", &free_addr().to_string()])
        .output()
        .unwrap();
    assert_eq!(twin.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&twin.stderr);
    assert!(stderr.contains("node_id"), "{stderr}");
    assert!(!stderr.contains(pg.password()), "{stderr}");

    // u0's key registered again on n2: n2 takes it over once ready, n1 drops its
    // session with no push; one session for u0.
    let moved = register(&n2, port, &sink, 0, "d");
    dovecot
        .wait_for_connection_count(&user(0), 1, ACT_TIMEOUT)
        .unwrap();
    assert_eq!(get(n1.addr, &ids[0]).status, 404, "the old row is gone");
    assert_eq!(
        get(n1.addr, &moved).status,
        200,
        "read through n1 from the database"
    );

    // DELETE of n1's u1 through n2: 204, n1's session ends, mail after it pushes nothing.
    assert_eq!(delete(n2.addr, &ids[1]).status, 204);
    dovecot
        .wait_for_connection_count(&user(1), 0, ACT_TIMEOUT)
        .unwrap();
    dovecot
        .deliver(&user(1), &simple_message("after delete"))
        .unwrap();
    // Control: mail to u2 (still on n1) is pushed, so a push would have had time.
    dovecot
        .deliver(&user(2), &simple_message("control"))
        .unwrap();
    assert!(common::eventually(ACT_TIMEOUT, || new_mail_pushes(
        &sink, 2
    ) == 1));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(new_mail_pushes(&sink, 1), 0, "a push after the DELETE");
    assert!(reconnects(&sink).is_empty(), "{:?}", reconnects(&sink));

    // kill -9 n1: within 15 s its subscriptions (u2..u5) hear node_lost from n2, once.
    n1.kill_9();
    let killed = Instant::now();
    let lost: Vec<String> = (2..6).map(|n| format!("/re/{n}/d")).collect();
    let all_told = || {
        let seen = reconnects(&sink);
        lost.iter().all(|p| seen.contains_key(p))
    };
    assert!(
        common::eventually(ACT_TIMEOUT, all_told),
        "after {:?}: {:?}",
        killed.elapsed(),
        reconnects(&sink)
    );
    eprintln!("node_lost pushes {:?} after kill -9", killed.elapsed());
    // Anything extra would arrive now.
    std::thread::sleep(Duration::from_secs(3));
    let seen = reconnects(&sink);
    for path in &lost {
        assert_eq!(seen[path], ["node_lost"], "{path}");
    }
    assert_eq!(seen.len(), lost.len(), "nobody else was told: {seen:?}");
    let rows = pg
        .psql("SELECT owner, count(*) FROM imap_push_subscriptions GROUP BY owner")
        .unwrap();
    assert_eq!(
        rows.trim(),
        "n2|5",
        "n2's own five (u0 moved, u6..u9); the claimed left"
    );

    // n1 starts again under its id (its heartbeat is stale): it owes nobody a push.
    let before = sink.requests().len();
    let n1 = Node::start(&c1, a1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.requests().len(), before);
    drop(n1);
    drop(n2);
}
