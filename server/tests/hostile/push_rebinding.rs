//! See hostile_clients.rs.
//!
//! DNS rebinding on the push side (issue 9, attack 2 and "every address is checked again
//! at connect time"): an endpoint name that is public at registration and local at push
//! time must get no connection. Inside a private network namespace, `push.test` first
//! names a public stand-in where a sink listens; then the private /etc/hosts turns it
//! into `::ffff:0.0.0.0` (which Linux connects to the local host, and which the old
//! destination rule judged public) and then `127.0.0.1`. A listener on 127.0.0.1 at the
//! sink's port must see no connection, while each push is tried and refused.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use push::testing::Sink;
use server::App;
use testkit::netns::{self, HostsFile};
use testkit::{simple_message, Dovecot, DovecotConfig};

use crate::common::{eventually, get, loopback_config, post, Registration, TempDir};

/// The push service's public stand-in, and the IMAP server's.
const PUSH_IP: &str = "11.0.0.1";
const IMAP_IP: &str = "11.0.0.2";

#[test]
fn an_endpoint_name_that_turns_local_gets_no_connection() {
    let addrs: Vec<IpAddr> = [PUSH_IP, IMAP_IP]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let out = netns::run_inside("push_rebinding::inner_endpoint_rebinding", &addrs);
    assert!(
        out.contains("no connection reached the local listener"),
        "{out}"
    );
}

/// Counts the connections a listener accepts, and holds them.
fn count_connections(listener: TcpListener) -> Arc<Mutex<Vec<TcpStream>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    seen
}

fn pushes_failed(addr: std::net::SocketAddr, id: &str) -> u64 {
    get(addr, id).json()["pushes"]["failed"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
#[ignore = "runs inside a private network namespace, started by the test above"]
fn inner_endpoint_rebinding() {
    if !netns::inside() {
        return;
    }
    let hosts = HostsFile::install(&format!("{PUSH_IP} push.test\n{IMAP_IP} imap.test\n"));
    let dovecot = Dovecot::start(DovecotConfig {
        extra_listen: vec![IMAP_IP.parse().unwrap()],
        extra_names: vec!["imap.test".into()],
        ..DovecotConfig::default().with_user("erin", "secret")
    })
    .unwrap();
    let sink = Sink::start_on(PUSH_IP.parse().unwrap());
    let port = sink
        .origin()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let local = count_connections(TcpListener::bind(("127.0.0.1", port)).unwrap());

    let dir = TempDir::new();
    let mut config = loopback_config(&dir, Some(&dovecot));
    config.allow_private_destinations = false;
    let app = App::start(config).unwrap();
    let addr = app.local_addr();
    let new_mail = format!("http://push.test:{port}/new");
    let reconnect = format!("http://push.test:{port}/re");
    let body = Registration {
        host: "imap.test",
        port: dovecot.imaps_port(),
        security: "tls",
        username: "erin",
        password: "secret",
        device_id: "phone",
        new_mail: &new_mail,
        reconnect: &reconnect,
    }
    .body();
    let reply = post(addr, &body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();

    // While the name is public, the push reaches the stand-in.
    dovecot.deliver("erin", &simple_message("one")).unwrap();
    assert_eq!(sink.wait_for(1, Duration::from_secs(10)).len(), 1);
    // Closing the stand-in closes the kept-alive connection: the next push must resolve
    // the name again.
    drop(sink);

    for (round, local_spelling) in ["::ffff:0.0.0.0", "127.0.0.1"].iter().enumerate() {
        hosts.set(&format!(
            "{local_spelling} push.test\n{IMAP_IP} imap.test\n"
        ));
        dovecot
            .deliver("erin", &simple_message(&format!("after rebinding {round}")))
            .unwrap();
        let refused = eventually(Duration::from_secs(15), || {
            pushes_failed(addr, &id) > round as u64
        });
        let seen = local.lock().unwrap().len();
        assert_eq!(
            seen, 0,
            "{local_spelling}: the local listener got a connection"
        );
        assert!(
            refused,
            "{local_spelling}: the push was not tried and refused"
        );
    }
    println!("no connection reached the local listener");
    drop(app);
}
