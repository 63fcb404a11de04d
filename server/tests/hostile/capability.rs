//! See hostile_clients.rs.
//!
//! A capability in clear (issue 9, attack 10): the subscription id is all that GET and
//! DELETE need, so it must never travel readable by the push service. A keyless push
//! carries the app's own `tag` instead; a push encrypted to the device may keep the id.

use std::time::Duration;

use push::testing::{Sink, Subscriber};
use server::App;
use testkit::{simple_message, Dovecot, DovecotConfig};

use crate::common::{loopback_config, post, Registration, TempDir};

/// The largest tag the API takes, in bytes.
const TAG_LEN_MAX: usize = 64;

fn registration_json(
    dovecot: &Dovecot,
    user: &str,
    new_mail: serde_json::Value,
    reconnect: &str,
    tag: Option<&str>,
) -> String {
    let mut body = Registration {
        host: "127.0.0.1",
        port: dovecot.imaps_port(),
        security: "tls",
        username: user,
        password: "secret",
        device_id: "phone",
        new_mail: "",
        reconnect,
    }
    .json();
    body["new_mail"] = new_mail;
    if let Some(tag) = tag {
        body["tag"] = tag.into();
    }
    body.to_string()
}

#[test]
fn a_keyless_push_carries_the_tag_and_never_the_id() {
    let dovecot = Dovecot::start(
        DovecotConfig::default()
            .with_user("dora", "secret")
            .with_user("bob", "secret"),
    )
    .unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();

    // Dora's app has no keys: its pushes are readable by the push service.
    let tag = "account-7 \u{1f4e7}";
    let clear = serde_json::json!({"endpoint": sink.url("/dora/new")});
    let body = registration_json(&dovecot, "dora", clear, &sink.url("/dora/re"), Some(tag));
    let reply = post(addr, &body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let dora = reply.json()["id"].as_str().unwrap().to_owned();
    // Bob's is encrypted to the device.
    let keyed: serde_json::Value =
        serde_json::from_str(&phone.subscription_json(&sink.url("/bob/new"))).unwrap();
    let body = registration_json(&dovecot, "bob", keyed, &sink.url("/bob/re"), Some("b"));
    let reply = post(addr, &body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    let bob = reply.json()["id"].as_str().unwrap().to_owned();

    dovecot.deliver("dora", &simple_message("hi")).unwrap();
    dovecot.deliver("bob", &simple_message("hi")).unwrap();
    let pushes = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(pushes.len(), 2, "two pushes");
    let to_dora = pushes.iter().find(|p| p.path == "/dora/new").unwrap();
    let to_bob = pushes.iter().find(|p| p.path == "/bob/new").unwrap();

    let seen = String::from_utf8_lossy(&to_dora.body);
    assert!(!seen.contains(&dora), "the id in clear: {seen}");
    let payload: serde_json::Value = serde_json::from_slice(&to_dora.body).unwrap();
    assert_eq!(payload["type"], "new_mail");
    assert_eq!(payload["tag"], tag);
    assert_eq!(payload.get("subscription"), None, "{payload}");
    for (name, value) in to_dora.headers.iter() {
        assert!(!value.contains(&dora), "the id in header {name}");
    }

    let plain = phone.decrypt(&to_bob.body).expect("the phone decrypts it");
    let payload: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(payload["subscription"], bob.as_str(), "{payload}");
    assert_eq!(payload["tag"], "b");
    drop(app);
}

#[test]
fn a_tag_past_64_bytes_is_refused() {
    let dovecot = Dovecot::start(DovecotConfig::default().with_user("carol", "secret")).unwrap();
    let sink = Sink::start();
    let dir = TempDir::new();
    let app = App::start(loopback_config(&dir, Some(&dovecot))).unwrap();
    let addr = app.local_addr();
    let endpoint = serde_json::json!({"endpoint": sink.url("/carol/new")});
    // 64 bytes of a 2-byte character plus one: 65 bytes, 33 characters.
    let long = format!("{}x", "\u{e9}".repeat(TAG_LEN_MAX / 2));
    assert_eq!(long.len(), TAG_LEN_MAX + 1);
    let reconnect = sink.url("/carol/re");
    let body = registration_json(&dovecot, "carol", endpoint.clone(), &reconnect, Some(&long));
    let reply = post(addr, &body);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error(), "bad_request");
    assert_eq!(reply.json()["field"], "tag", "{}", reply.body);
    // Exactly 64 bytes is fine.
    let fits = "t".repeat(TAG_LEN_MAX);
    let body = registration_json(&dovecot, "carol", endpoint, &reconnect, Some(&fits));
    let reply = post(addr, &body);
    assert_eq!(reply.status, 201, "{}", reply.body);
    drop(app);
}

#[test]
fn the_restart_push_carries_the_tag_and_never_the_id() {
    use server::journal::{Journal, Record, TargetRecord};
    let sink = Sink::start();
    let dir = TempDir::new();
    let config = loopback_config(&dir, None);
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let target = |path: &str| TargetRecord {
        endpoint: sink.url(path),
        p256dh: None,
        auth: None,
        simplepush: false,
    };
    let id = "0123456789abcdef0123456789abcdef";
    {
        // What a previous run left: one keyless, tagged subscription.
        let (mut journal, _) = Journal::open(&config.data_dir.join("journal.redb")).unwrap();
        let record = Record {
            id: id.parse().unwrap(),
            key_hash: "00".repeat(32),
            new_mail: target("/new"),
            reconnect: target("/re"),
            created_unix: 1,
            tag: push::message::Tag::new("work"),
            verifying: false,
        };
        journal.insert(&record, Box::new(|_| {}));
        journal.flush();
    }
    let app = App::start(config).unwrap();
    let pushes = sink.wait_for(1, Duration::from_secs(10));
    let push = pushes.first().expect("the restart push");
    assert_eq!(push.path, "/re");
    assert!(!String::from_utf8_lossy(&push.body).contains(id));
    let payload: serde_json::Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"type": "reconnect", "tag": "work", "reason": "server_restart"})
    );
    drop(app);
}
