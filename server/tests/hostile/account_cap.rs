//! One mailbox under many device ids: `limits.sessions_per_account_max` (default 10)
//! refuses the next device with 409 too_many_sessions before any login, so the provider
//! never sees more connections for one account than it allows.

use std::time::Duration;

use server::config::SESSIONS_PER_ACCOUNT_MAX_DEFAULT;
use server::App;
use testkit::{Dovecot, DovecotConfig};

use crate::common::{loopback_config, post, Registration, TempDir};

fn device<'a>(dovecot: &Dovecot, username: &'a str, device_id: &'a str) -> Registration<'a> {
    Registration {
        host: "127.0.0.1",
        port: dovecot.imaps_port(),
        security: "tls",
        username,
        password: "secret-alice",
        device_id,
        new_mail: "http://127.0.0.1:9/new",
        reconnect: "http://127.0.0.1:9/re",
    }
}

/// Logins Dovecot has seen, successful or not.
fn logins(dovecot: &Dovecot) -> usize {
    dovecot.log().matches("imap-login: ").count()
}

#[test]
fn the_device_past_the_account_cap_gets_409_without_a_login() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();
    let cap = SESSIONS_PER_ACCOUNT_MAX_DEFAULT;
    assert_eq!(cap, 10, "the documented default");
    let ids: Vec<String> = (0..cap).map(|n| format!("device-{n}")).collect();
    for id in &ids {
        let reply = post(addr, &device(&dovecot, "alice", id).body());
        assert_eq!(reply.status, 201, "{id}: {}", reply.body);
    }
    dovecot
        .wait_for_connection_count("alice", cap, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let before = logins(&dovecot);
    assert!(before >= cap, "the log shows logins: {before}");

    // One device more, also spelt with another case of the user name: refused at once.
    for username in ["alice", "ALICE"] {
        let reply = post(addr, &device(&dovecot, username, "device-extra").body());
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (409, "too_many_sessions"),
            "{username}: {}",
            reply.body
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        logins(&dovecot),
        before,
        "a login was attempted past the cap"
    );
    assert_eq!(dovecot.connection_count("alice").unwrap(), cap);

    // A device the account holds registers again at the cap: it replaces.
    let reply = post(addr, &device(&dovecot, "alice", &ids[3]).body());
    assert_eq!(
        reply.status, 201,
        "re-registration at the cap: {}",
        reply.body
    );
    dovecot
        .wait_for_connection_count("alice", cap, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    app.shutdown();
}
