//! Takeover by re-registration: knowing someone's (host, port, username, device_id) must
//! not be enough to switch off their notifications. A re-registration replaces the old
//! session only once its own login has succeeded.

use std::time::Duration;

use push::testing::Sink;
use server::App;
use testkit::{simple_message, Dovecot, DovecotConfig};

use crate::common::{get, loopback_config, post, Registration, TempDir};

fn alice<'a>(dovecot: &Dovecot, password: &'a str, new_mail: &'a str) -> Registration<'a> {
    Registration {
        host: "127.0.0.1",
        port: dovecot.imaps_port(),
        security: "tls",
        username: "alice",
        password,
        device_id: "phone-1",
        new_mail,
        reconnect: new_mail,
    }
}

#[test]
fn a_wrong_password_reregistration_leaves_the_victim_untouched() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();
    let victim_url = sink.url("/victim");
    let reply = post(addr, &alice(&dovecot, "secret-alice", &victim_url).body());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let victim = reply.json()["id"].as_str().unwrap().to_owned();

    // The attacker knows the key but not the password.
    let attacker_url = sink.url("/attacker");
    let reply = post(
        addr,
        &alice(&dovecot, "wrong-password", &attacker_url).body(),
    );
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (422, "imap_auth_failed"),
        "{}",
        reply.body
    );

    // The victim's subscription is still there, idle, with its one IMAP session...
    let reply = get(addr, &victim);
    assert_eq!(reply.status, 200, "victim's GET: {}", reply.body);
    assert_eq!(reply.json()["state"], "idle", "{}", reply.body);
    dovecot
        .wait_for_connection_count("alice", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    // ...and new mail still reaches the victim, and only the victim.
    dovecot
        .deliver("alice", &simple_message("after the attack"))
        .unwrap();
    let pushes = sink.wait_for(1, Duration::from_secs(15));
    assert_eq!(pushes.len(), 1, "the victim got no push");
    assert_eq!(pushes[0].path, "/victim");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sink.requests().iter().all(|r| r.path == "/victim"),
        "a push went to the attacker or a reconnect was sent"
    );
    assert_eq!(sink.requests().len(), 1, "one push for one message");
    app.shutdown();
}

#[test]
fn concurrent_registrations_of_one_key_end_with_one_session() {
    const REGISTRATIONS: usize = 4;
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();
    let urls: Vec<String> = (0..REGISTRATIONS)
        .map(|n| sink.url(&format!("/r{n}")))
        .collect();
    let replies: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = urls
            .iter()
            .map(|url| {
                let body = alice(&dovecot, "secret-alice", url).body();
                scope.spawn(move || post(addr, &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut created = Vec::new();
    for reply in &replies {
        match reply.status {
            201 => created.push(reply.json()["id"].as_str().unwrap().to_owned()),
            409 => assert_eq!(reply.error(), "replaced", "{}", reply.body),
            _ => panic!("unexpected {}: {}", reply.status, reply.body),
        }
    }
    assert!(!created.is_empty(), "none of them registered");
    dovecot
        .wait_for_connection_count("alice", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let live: Vec<_> = created
        .iter()
        .filter(|id| get(addr, id).status == 200)
        .collect();
    assert_eq!(live.len(), 1, "exactly one subscription stays: {live:?}");
    // Replaced ones get no reconnect push.
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.requests().is_empty(), "{}", sink.requests().len());
    app.shutdown();
}
