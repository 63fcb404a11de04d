//! See hostile_clients.rs. Attack 2 and 3 on the IMAP side: every embedding and spelling of
//! a local address as IMAP host is refused with 403 before any connect(), so the API is no
//! port scanner and no way into the local host; and a name that turns local after the
//! registration (DNS rebinding) gets no connection either.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use server::{App, Config};
use testkit::netns::{self, HostsFile};
use testkit::{Dovecot, DovecotConfig};

use crate::common::{eventually, post, Registration, TempDir};

/// A server that refuses private destinations (the default), with plain IMAP allowed so
/// that a connection, if one were made, would need nothing but TCP.
fn strict_config(dir: &TempDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        reactor_threads: 1,
        sender_threads: 1,
        allow_private_destinations: false,
        allow_plain_imap: true,
        shutdown_grace_secs: 1,
        ..Config::default()
    }
}

/// Listeners on 127.0.0.1 and ::1 with one port: every local spelling of an address lands
/// on one of them (Linux connects 0.0.0.0 and :: to the local host).
struct LocalListeners {
    port: u16,
    v4: TcpListener,
    v6: TcpListener,
}

impl LocalListeners {
    fn bind() -> LocalListeners {
        for _ in 0..50 {
            let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = v4.local_addr().unwrap().port();
            if let Ok(v6) = TcpListener::bind(("::1", port)) {
                v4.set_nonblocking(true).unwrap();
                v6.set_nonblocking(true).unwrap();
                return LocalListeners { port, v4, v6 };
            }
        }
        panic!("no port free on both 127.0.0.1 and ::1");
    }

    /// Listeners on a given port (one that was just freed).
    fn bind_port(port: u16) -> LocalListeners {
        let v4 = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let v6 = TcpListener::bind(("::1", port)).unwrap();
        v4.set_nonblocking(true).unwrap();
        v6.set_nonblocking(true).unwrap();
        LocalListeners { port, v4, v6 }
    }

    /// The peers that connected since the last call.
    fn accepted(&self) -> Vec<SocketAddr> {
        let mut peers = Vec::new();
        for listener in [&self.v4, &self.v6] {
            while let Ok((_, peer)) = listener.accept() {
                peers.push(peer);
            }
        }
        peers
    }
}

fn registration(host: &str, port: u16) -> String {
    Registration {
        host,
        port,
        security: "plain",
        username: "alice",
        password: "secret-alice",
        device_id: "laptop",
        new_mail: "https://push.example/n",
        reconnect: "https://push.example/r",
    }
    .body()
}

/// Registers `host` as IMAP host; it must get 403 forbidden_destination and the local
/// listeners must see no connection. Returns what went wrong instead.
fn refused_without_connection(app: &App, listeners: &LocalListeners, host: &str) -> Option<String> {
    let reply = post(app.local_addr(), &registration(host, listeners.port));
    // Give a connect that the engine might have started time to arrive.
    std::thread::sleep(Duration::from_millis(100));
    let peers = listeners.accepted();
    let answer = (reply.status, reply.error());
    if peers.is_empty() && answer == (403, "forbidden_destination".to_owned()) {
        return None;
    }
    Some(format!(
        "{host}: {answer:?}, the local listener saw {peers:?}"
    ))
}

/// Every host of `hosts` must be refused without a connection; lists those that were not.
fn assert_all_refused_without_connection(app: &App, listeners: &LocalListeners, hosts: &[&str]) {
    let failures: Vec<String> = hosts
        .iter()
        .filter_map(|host| refused_without_connection(app, listeners, host))
        .collect();
    assert!(
        failures.is_empty(),
        "not refused cleanly:\n{}",
        failures.join("\n")
    );
}

/// Every spelling and embedding of a local address that a client might send.
const LOCAL_SPELLINGS: &[&str] = &[
    "127.0.0.1",
    "127.0.0.1.",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "0",
    "0.0.0.0",
    "0.0.0.0.",
    "localhost",
    "localhost.",
    "LOCALHOST",
    "::1",
    "[::1]",
    "::",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "::ffff:0.0.0.0",
    "::ffff:0.0.0.1",
    "::127.0.0.1",
    "::7f00:1",
    "64:ff9b::7f00:1",
    "64:ff9b::",
    "64:ff9b:1::7f00:1",
    "2002:7f00:1::",
    "2002:7f00:1::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "fe80::1",
    "fc00::1",
];

#[test]
fn every_local_spelling_as_imap_host_is_refused_before_any_connect() {
    let dir = TempDir::new();
    let app = App::start(strict_config(&dir)).unwrap();
    let listeners = LocalListeners::bind();
    assert_all_refused_without_connection(&app, &listeners, LOCAL_SPELLINGS);
    app.shutdown();
}

/// The stand-in for a public IMAP server inside the namespace.
const STAND_IN: &str = "11.0.0.1";

#[test]
fn a_name_resolving_to_loopback_is_refused_before_any_connect() {
    netns::run_inside(
        "destinations::inner_name_resolving_to_loopback",
        &[STAND_IN.parse().unwrap()],
    );
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_name_resolving_to_loopback() {
    if !netns::inside() {
        return;
    }
    // The endpoints' host resolves to a public stand-in: registration resolves and judges
    // it too, and only the IMAP host may be the reason for the refusal.
    let _hosts = HostsFile::install(&format!(
        "127.0.0.1 local.test\n::1 local6.test\n127.0.0.1 both.test\n::1 both.test\n\
         {STAND_IN} push.example\n"
    ));
    let dir = TempDir::new();
    let app = App::start(strict_config(&dir)).unwrap();
    let listeners = LocalListeners::bind();
    let hosts = ["local.test", "LOCAL.test.", "local6.test", "both.test"];
    assert_all_refused_without_connection(&app, &listeners, &hosts);
    app.shutdown();
}

#[test]
fn a_name_that_turns_local_after_registration_gets_no_connection() {
    netns::run_inside(
        "destinations::inner_rebinding",
        &[STAND_IN.parse().unwrap()],
    );
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_rebinding() {
    if !netns::inside() {
        return;
    }
    let stand_in: IpAddr = STAND_IN.parse().unwrap();
    let hosts = HostsFile::install(&format!("{STAND_IN} imap.test push.example\n"));
    let mut dovecot = Dovecot::start(DovecotConfig {
        extra_listen: vec![stand_in],
        extra_names: vec!["imap.test".into()],
        ..DovecotConfig::default()
    })
    .unwrap();
    let port = dovecot.imap_port();
    let dir = TempDir::new();
    let app = App::start(strict_config(&dir)).unwrap();
    let reply = post(app.local_addr(), &registration("imap.test", port));
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    // The server loses the session; the app will register again (after its reconnect
    // push). Meanwhile the name turns local, where a service listens on the same port.
    dovecot.stop();
    let listeners = LocalListeners::bind_port(port);
    hosts.set(&format!(
        "127.0.0.1 imap.test\n::1 imap.test\n{STAND_IN} push.example\n"
    ));
    assert!(eventually(Duration::from_secs(10), || {
        crate::common::get(app.local_addr(), &id).status == 404
    }));
    assert_all_refused_without_connection(&app, &listeners, &["imap.test"]);
    app.shutdown();
}
