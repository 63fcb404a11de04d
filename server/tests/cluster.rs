//! Several nodes behind HAProxy with one PostgreSQL journal (issue 13, "How it is shown"):
//!
//! 1. Dovecot, PostgreSQL (initdb as `postgres`), HAProxy (the shipped config) and 3 nodes
//!    (the real binary, `journal` = the database, `heartbeat_secs = 1`,
//!    `node_lost_after_secs = 5`) on loopback.
//! 2. 300 registrations through HAProxy: Dovecot's `who` shows one session per user.
//! 3. 100 re-registrations: still one per key; HAProxy restarted with 2 nodes, 100 more
//!    (half of them keys the third node holds): one per key, no reconnect push to the
//!    replaced sessions.
//! 4. `kill -9` of the third node: within 15 s each of its subscriptions gets exactly one
//!    `node_lost` push from a survivor, none twice, none for another node's.
//! 5. DELETE through HAProxy for ids of every live node, landing on the owner and on the
//!    other node: 204, the session ends, and mail delivered after it gets no push.
//!
//! Which node holds a session is read from Dovecot, not from the nodes: each node sends its
//! IMAP connections from its own loopback address (`imap_bind_addresses`), and `doveadm who`
//! lists each session's client address. Each user is one account with one device, so one
//! session per user is one session per key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use push::testing::{Recorded, Sink};
use testkit::{simple_message, Dovecot, DovecotConfig, Haproxy, Postgres};

mod common;

use common::{http, Registration, Reply, TempDir};

const USERS: usize = 300;
const REREGISTRATIONS: usize = 100;
const CLIENT_THREADS: usize = 8;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const HEARTBEAT_SECS: u64 = 1;
const NODE_LOST_AFTER_SECS: u64 = 5;
/// The issue's bound: every subscription of a killed node is told within this.
const NODE_LOST_WITHIN: Duration = Duration::from_secs(15);
/// How long a node may take to answer /readyz after its start.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions settle on the Dovecot side (login, replacement, logout) within this.
const SESSIONS_SETTLE: Duration = Duration::from_secs(15);
/// A push that should not come would have come within this (a NOTIFY is polled every
/// 100 ms, a heartbeat is 1 s).
const QUIET: Duration = Duration::from_millis(2500);
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn user(n: usize) -> String {
    format!("user{n:03}")
}

fn password(user: &str) -> String {
    format!("pw-{user}")
}

/// The routing key of an account, as a client computes it (issue 13): base64url without
/// padding of SHA-256 over the lowercased host, the port and the username, joined by `\n`.
fn routing_key(host: &str, port: u16, username: &str) -> String {
    let input = format!("{}\n{port}\n{username}", host.to_lowercase());
    B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        input.as_bytes(),
    ))
}

/// One node: the real binary with its own config and data dir.
struct Node {
    name: &'static str,
    /// The source address of its IMAP connections: how Dovecot tells the nodes apart.
    imap_source: IpAddr,
    api: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Node {
    fn start(index: usize, journal: &str) -> Node {
        let name = NODES[index];
        let dir = TempDir::new();
        let octet = u8::try_from(11 + index).unwrap();
        let imap_source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet));
        let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "{api}"
data_dir = "{data}"
reactor_threads = 1
sender_threads = 2
allow_private_destinations = true
allow_http_endpoints = true
allow_plain_imap = true
imap_bind_addresses = ["{imap_source}"]
trusted_proxies = ["127.0.0.1/32"]
shutdown_grace_secs = 1
journal = "{journal}"
node_id = "{name}"
heartbeat_secs = {HEARTBEAT_SECS}
node_lost_after_secs = {NODE_LOST_AFTER_SECS}
[limits]
registrations_per_minute_per_ip = 1000000
logins_per_second_per_host = 1000
"#,
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imap-push-proxy"));
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = testkit::spawn_tied_to_process(cmd).unwrap_or_else(|e| panic!("{e}"));
        let mut node = Node {
            name,
            imap_source,
            api,
            child: Some(child),
            log,
            _dir: dir,
        };
        node.wait_ready();
        node
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "step 1: node {} exited with {status}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if TcpStream::connect(self.api).is_ok()
                && http(self.api, "GET", "/readyz", "", "").status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "step 1: node {} not ready within {NODE_START_TIMEOUT:?}:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`, by PID, and reap it.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a signal to our own unreaped child, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in kill9.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Everything of one run. Fields drop in order: the nodes first (SIGTERM, while the
/// database, Dovecot and the sink they talk to are still there).
struct Cluster {
    nodes: Vec<Node>,
    haproxy: Haproxy,
    _postgres: Postgres,
    dovecot: Dovecot,
    sink: Sink,
    /// Per user: the generation of its newest registration and that registration's id.
    current: HashMap<String, (u32, String)>,
}

impl Cluster {
    fn key(&self, user: &str) -> String {
        routing_key("127.0.0.1", self.dovecot.imap_port(), user)
    }

    fn servers(&self, names: &[&'static str]) -> Vec<(&'static str, SocketAddr)> {
        self.nodes
            .iter()
            .filter(|n| names.contains(&n.name))
            .map(|n| (n.name, n.api))
            .collect()
    }

    /// Registers `users` through HAProxy (each with its routing key in `Imap-Push-Key`) as
    /// generation `generation`: endpoints `/new/USER/gN` and `/re/USER/gN`.
    fn register(&mut self, step: u32, users: &[String], generation: u32) {
        let proxy = self.haproxy.addr();
        let port = self.dovecot.imap_port();
        let jobs: Vec<(String, String, String)> = users
            .iter()
            .map(|u| {
                let body = Registration {
                    host: "127.0.0.1",
                    port,
                    security: "plain",
                    username: u,
                    password: &password(u),
                    device_id: "phone",
                    new_mail: &self.sink.url(&format!("/new/{u}/g{generation}")),
                    reconnect: &self.sink.url(&format!("/re/{u}/g{generation}")),
                }
                .body();
                (u.clone(), self.key(u), body)
            })
            .collect();
        let started = Instant::now();
        let replies: Vec<(String, String, Reply)> = std::thread::scope(|scope| {
            let workers: Vec<_> = jobs
                .chunks(jobs.len().div_ceil(CLIENT_THREADS))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(u, key, body)| {
                                let header = format!("Imap-Push-Key: {key}\r\n");
                                let reply = http(proxy, "POST", "/v1/subscriptions", body, &header);
                                (u.clone(), key.clone(), reply)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        for (u, key, reply) in replies {
            assert_eq!(reply.status, 201, "step {step}: {u}: {}", reply.body);
            let body = reply.json();
            assert_eq!(
                body["routing_key"].as_str(),
                Some(key.as_str()),
                "step {step}: the 201 names the account's routing key: {body}"
            );
            let id = body["id"].as_str().unwrap().to_owned();
            self.current.insert(u, (generation, id));
        }
        eprintln!(
            "step {step}: {} registrations through HAProxy in {:?}",
            users.len(),
            started.elapsed()
        );
    }

    /// Waits until every user has exactly one IMAP session and nobody has more; returns
    /// which node holds each (by the session's client address).
    fn one_session_per_user(&self, step: u32) -> BTreeMap<String, &'static str> {
        let deadline = Instant::now() + SESSIONS_SETTLE;
        loop {
            let sessions = self.dovecot.sessions().unwrap();
            let mut per_user: BTreeMap<String, Vec<Option<IpAddr>>> = BTreeMap::new();
            for s in sessions.into_iter().filter(|s| s.protocol == "imap") {
                per_user.entry(s.user).or_default().push(s.ip);
            }
            let missing: Vec<String> = self
                .current
                .keys()
                .filter(|u| !per_user.contains_key(*u))
                .cloned()
                .collect();
            let doubles: Vec<(&String, &Vec<Option<IpAddr>>)> =
                per_user.iter().filter(|(_, ips)| ips.len() != 1).collect();
            let strangers: Vec<&String> = per_user
                .keys()
                .filter(|u| !self.current.contains_key(*u))
                .collect();
            if missing.is_empty() && doubles.is_empty() && strangers.is_empty() {
                return per_user
                    .into_iter()
                    .map(|(u, ips)| {
                        let node = self
                            .nodes
                            .iter()
                            .find(|n| ips[0] == Some(n.imap_source))
                            .unwrap_or_else(|| panic!("step {step}: {u} from {ips:?}"));
                        (u, node.name)
                    })
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "step {step}: not one session per user after {SESSIONS_SETTLE:?}: \
                 {} without a session (e.g. {:?}), {} with several (e.g. {:?}), {} unknown",
                missing.len(),
                missing.first(),
                doubles.len(),
                doubles.first(),
                strangers.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn pushes_since(&self, mark: usize) -> Vec<Recorded> {
        self.sink.requests().split_off(mark)
    }
}

fn describe(pushes: &[Recorded]) -> Vec<String> {
    pushes
        .iter()
        .map(|p| format!("{} {}", p.path, String::from_utf8_lossy(&p.body)))
        .collect()
}

fn count_by_node(owners: &BTreeMap<String, &'static str>) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for node in owners.values() {
        *counts.entry(*node).or_default() += 1;
    }
    counts
}

#[test]
fn three_nodes_behind_haproxy_share_one_postgres_journal() {
    let started = Instant::now();
    // Step 1: everything on loopback.
    let users: Vec<String> = (0..USERS).map(user).collect();
    let mut dovecot_config = DovecotConfig {
        users: Vec::new(),
        ..DovecotConfig::default()
    };
    for u in &users {
        dovecot_config = dovecot_config.with_user(u.as_str(), password(u));
    }
    let dovecot = Dovecot::start(dovecot_config).unwrap_or_else(|e| panic!("step 1: {e}"));
    let postgres = Postgres::start().unwrap_or_else(|e| panic!("step 1: {e}"));
    let sink = Sink::start();
    let nodes: Vec<Node> = (0..NODES.len())
        .map(|i| Node::start(i, &postgres.url()))
        .collect();
    let all: Vec<(&'static str, SocketAddr)> = nodes.iter().map(|n| (n.name, n.api)).collect();
    let haproxy = Haproxy::start(&all).unwrap_or_else(|e| panic!("step 1: {e}"));
    let mut cluster = Cluster {
        nodes,
        haproxy,
        _postgres: postgres,
        dovecot,
        sink,
        current: HashMap::new(),
    };
    eprintln!("step 1: ok in {:?}", started.elapsed());

    // Step 2: 300 registrations, one session per user.
    cluster.register(2, &users, 0);
    let owners = cluster.one_session_per_user(2);
    let counts = count_by_node(&owners);
    assert_eq!(
        counts.len(),
        NODES.len(),
        "step 2: every node holds keys: {counts:?}"
    );
    assert!(cluster.sink.requests().is_empty(), "step 2: no push yet");
    eprintln!("step 2: ok, sessions per node {counts:?}");

    step3(&mut cluster, &users, &owners);
    step4(&mut cluster);
    step5(&mut cluster);
    eprintln!("all steps ok in {:?}", started.elapsed());
}

/// Re-registrations: through all 3 nodes, then through 2 with keys of the third among them.
fn step3(cluster: &mut Cluster, users: &[String], owners: &BTreeMap<String, &'static str>) {
    let first: Vec<String> = users[..REREGISTRATIONS].to_vec();
    cluster.register(3, &first, 1);
    let after = cluster.one_session_per_user(3);
    for u in &first {
        assert_eq!(
            after[u], owners[u],
            "step 3: the same key lands on the same node"
        );
    }
    std::thread::sleep(QUIET);
    let pushes = cluster.sink.requests();
    assert!(pushes.is_empty(), "step 3: {:?}", describe(&pushes));
    eprintln!("step 3: {REREGISTRATIONS} re-registrations through 3 nodes ok");

    let two = cluster.servers(&["n1", "n2"]);
    cluster
        .haproxy
        .restart(&two)
        .unwrap_or_else(|e| panic!("step 3: {e}"));
    // Half of n3's keys move (the rest stay for step 4), the others come from n1 and n2.
    let on_n3: Vec<String> = users
        .iter()
        .filter(|u| after[*u] == "n3")
        .cloned()
        .collect();
    let moving: Vec<String> = on_n3[..on_n3.len() / 2].to_vec();
    let mut second = moving.clone();
    second.extend(
        users
            .iter()
            .rev()
            .filter(|u| after[*u] != "n3")
            .take(REREGISTRATIONS - moving.len())
            .cloned(),
    );
    cluster.register(3, &second, 2);
    let now = cluster.one_session_per_user(3);
    for u in users {
        if moving.contains(u) {
            assert_ne!(
                now[u], "n3",
                "step 3: {u} moved to a node HAProxy routes to"
            );
        } else {
            assert_eq!(now[u], after[u], "step 3: {u} stays where it was");
        }
    }
    std::thread::sleep(QUIET);
    let pushes = cluster.sink.requests();
    assert!(
        pushes.is_empty(),
        "step 3: no reconnect push to replaced sessions: {:?}",
        describe(&pushes)
    );
    eprintln!(
        "step 3: {REREGISTRATIONS} re-registrations through 2 nodes ok ({} taken over from n3), \
         sessions per node {:?}",
        moving.len(),
        count_by_node(&now)
    );
}

/// `kill -9` n3: each of its subscriptions gets exactly one `node_lost`, nobody else a push.
fn step4(cluster: &mut Cluster) {
    let owners = cluster.one_session_per_user(4);
    let lost: HashSet<String> = owners
        .iter()
        .filter(|(_, n)| **n == "n3")
        .map(|(u, _)| u.clone())
        .collect();
    assert!(!lost.is_empty(), "step 4: n3 still holds keys");
    let expected: HashSet<String> = lost
        .iter()
        .map(|u| format!("/re/{u}/g{}", cluster.current[u].0))
        .collect();
    let mark = cluster.sink.requests().len();
    let killed = Instant::now();
    cluster.nodes[2].kill9();
    let arrived = |c: &Cluster| -> HashSet<String> {
        c.pushes_since(mark)
            .into_iter()
            .map(|p| p.path)
            .filter(|p| expected.contains(p))
            .collect()
    };
    while arrived(cluster).len() < expected.len() && killed.elapsed() < NODE_LOST_WITHIN {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed.elapsed();
    let got = arrived(cluster);
    let late: Vec<&String> = expected.difference(&got).collect();
    assert!(
        late.is_empty(),
        "step 4: {} of {} subscriptions of n3 got no node_lost within {NODE_LOST_WITHIN:?} \
         (e.g. {:?}); pushes: {:?}",
        late.len(),
        expected.len(),
        late.first(),
        describe(&cluster.pushes_since(mark))
    );
    std::thread::sleep(QUIET);
    let mut per_path: BTreeMap<String, usize> = BTreeMap::new();
    for p in cluster.pushes_since(mark) {
        let payload: serde_json::Value = serde_json::from_slice(&p.body).unwrap();
        assert!(
            expected.contains(&p.path),
            "step 4: a push for a subscription n3 did not hold: {} {payload}",
            p.path
        );
        assert_eq!(payload["type"], "reconnect", "step 4: {payload}");
        assert_eq!(payload["reason"], "node_lost", "step 4: {payload}");
        *per_path.entry(p.path).or_default() += 1;
    }
    let doubles: Vec<_> = per_path.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubles.is_empty(),
        "step 4: more than one push: {doubles:?}"
    );
    // The lost subscriptions are forgotten, on every node.
    let proxy = cluster.haproxy.addr();
    for u in &lost {
        let (_, id) = cluster.current.remove(u).unwrap();
        let path = format!("/v1/subscriptions/{id}");
        let forgotten = common::eventually(Duration::from_secs(5), || {
            http(proxy, "GET", &path, "", "").status == 404
        });
        assert!(
            forgotten,
            "step 4: {u}'s subscription is forgotten after node_lost"
        );
    }
    eprintln!(
        "step 4: {} node_lost pushes, the last {took:?} after kill -9",
        expected.len()
    );
}

/// DELETE through HAProxy for ids of both live nodes, arriving at the owner, at the other
/// node, and round-robin; then mail gets no push to them (and does to the others).
fn step5(cluster: &mut Cluster) {
    let owners = cluster.one_session_per_user(5);
    let proxy = cluster.haproxy.addr();
    let held_by = |node: &str| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(u, _)| u.clone())
            .collect()
    };
    let (on_n1, on_n2) = (held_by("n1"), held_by("n2"));
    assert!(on_n1.len() >= 4 && on_n2.len() >= 4, "step 5: {owners:?}");
    // (user to delete, the key whose node HAProxy sends the DELETE to, if any, and what
    // that means)
    let plan: Vec<(String, Option<String>, &str)> = vec![
        (
            on_n1[0].clone(),
            Some(cluster.key(&on_n1[0])),
            "at its owner n1",
        ),
        (
            on_n1[1].clone(),
            Some(cluster.key(&on_n2[3])),
            "at n2, owner n1",
        ),
        (on_n1[2].clone(), None, "round-robin, owner n1"),
        (
            on_n2[0].clone(),
            Some(cluster.key(&on_n2[0])),
            "at its owner n2",
        ),
        (
            on_n2[1].clone(),
            Some(cluster.key(&on_n1[3])),
            "at n1, owner n2",
        ),
        (on_n2[2].clone(), None, "round-robin, owner n2"),
    ];
    let live: Vec<(&'static str, SocketAddr)> = cluster.servers(&["n1", "n2"]);
    let mark = cluster.sink.requests().len();
    for (u, key, route) in &plan {
        let id = cluster.current[u].1.clone();
        let header = key
            .as_ref()
            .map_or(String::new(), |k| format!("Imap-Push-Key: {k}\r\n"));
        let path = format!("/v1/subscriptions/{id}");
        let reply = http(proxy, "DELETE", &path, "", &header);
        assert_eq!(reply.status, 204, "step 5: DELETE {route}: {}", reply.body);
        // Mail right after the 204: the owner must not push it, wherever the DELETE landed.
        cluster
            .dovecot
            .deliver(u, &simple_message("after delete"))
            .unwrap_or_else(|e| panic!("step 5: {e}"));
        // After the 204 no node knows the id any more, the owner included.
        for (name, api) in &live {
            let reply = http(*api, "GET", &path, "", "");
            assert_eq!(
                reply.status, 404,
                "step 5: GET on {name} right after a DELETE {route}: {}",
                reply.body
            );
        }
        cluster.current.remove(u);
    }
    // The sessions of the deleted ids end, wherever they were.
    let left = cluster.one_session_per_user(5);
    for (u, _, _) in &plan {
        assert!(!left.contains_key(u), "step 5: {u}'s session ended");
    }

    let controls = [on_n1[3].clone(), on_n2[3].clone()];
    for u in plan.iter().map(|(u, _, _)| u).chain(&controls) {
        cluster
            .dovecot
            .deliver(u, &simple_message("later"))
            .unwrap_or_else(|e| panic!("step 5: {e}"));
    }
    let control_paths: HashSet<String> = controls
        .iter()
        .map(|u| format!("/new/{u}/g{}", cluster.current[u].0))
        .collect();
    let seen = common::eventually(Duration::from_secs(10), || {
        let paths: HashSet<String> = cluster
            .pushes_since(mark)
            .into_iter()
            .map(|p| p.path)
            .collect();
        control_paths.is_subset(&paths)
    });
    assert!(
        seen,
        "step 5: the live subscriptions on both nodes get their mail push"
    );
    std::thread::sleep(QUIET);
    let pushes = cluster.pushes_since(mark);
    let stray: Vec<&Recorded> = pushes
        .iter()
        .filter(|p| !control_paths.contains(&p.path))
        .collect();
    assert!(
        stray.is_empty(),
        "step 5: a push after DELETE: {:?}",
        describe(&pushes)
    );
    eprintln!("step 5: 6 DELETEs (at the owner, at the other node, round-robin; on each node) ok");
}
