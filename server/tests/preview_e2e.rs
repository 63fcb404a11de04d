//! Previews end to end: a registration with `"preview": true` and Web Push keys, mail
//! delivered to a real Dovecot, and the encrypted push decrypted the way the phone would,
//! to find the message's From and Subject. A 50 KB subject arrives cut, in valid JSON
//! within the push payload limit.

use std::net::SocketAddr;
use std::time::Duration;

use push::testing::{Sink, Subscriber};
use server::{App, Config};
use testkit::{message_with_body, Dovecot, DovecotConfig};

mod common;

use common::{post, TempDir};

fn config(dir: &TempDir, dovecot: &Dovecot) -> Config {
    common::loopback_config(dir, Some(dovecot))
}

/// POSTs `body` to the subscriptions endpoint; returns status and body.
fn register(addr: SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let reply = post(addr, body);
    (reply.status, reply.json())
}

fn registration(port: u16, new_mail: serde_json::Value, sink: &Sink) -> String {
    serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": port, "security": "tls",
                 "username": "alice", "password": "secret-alice"},
        "new_mail": new_mail,
        "reconnect": {"endpoint": sink.url("/reconnect")},
        "preview": true,
    })
    .to_string()
}

/// A message from `from` with `subject` (header lines folded where `subject` has spaces,
/// so a long subject stays within line limits; unfolding gives `subject` back).
fn message(from: &str, subject: &str) -> Vec<u8> {
    let mut folded = String::new();
    let mut line = 0;
    for (i, word) in subject.split(' ').enumerate() {
        if i > 0 {
            if line > 70 {
                folded.push_str("\r\n ");
                line = 0;
            } else {
                folded.push(' ');
            }
        }
        folded.push_str(word);
        line += word.len() + 1;
    }
    let plain = message_with_body(&folded, "Hello.\r\n");
    let text = String::from_utf8(plain).unwrap();
    text.replace(
        "From: Test Sender <sender@example.com>",
        &format!("From: {from}"),
    )
    .into_bytes()
}

#[test]
fn the_decrypted_push_shows_from_and_subject_and_a_50_kb_subject_is_cut() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let sink = Sink::start();
    let phone = Subscriber::generate();
    let dir = TempDir::new();
    let app = App::start(config(&dir, &dovecot)).unwrap();
    let addr = app.local_addr();

    // A preview needs keys: without them it would reach the push service in clear.
    let bare = serde_json::json!({"endpoint": sink.url("/new")});
    let (status, error) = register(addr, &registration(dovecot.imaps_port(), bare, &sink));
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["field"], "preview");

    let keyed: serde_json::Value =
        serde_json::from_str(&phone.subscription_json(&sink.url("/new"))).unwrap();
    let (status, created) = register(addr, &registration(dovecot.imaps_port(), keyed, &sink));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let from = "=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>";
    dovecot
        .deliver("alice", &message(from, "Gr\u{fc}\u{df}e aus Berlin"))
        .unwrap();
    let pushes = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].header("content-encoding"), Some("aes128gcm"));
    let plain = phone
        .decrypt(&pushes[0].body)
        .expect("the phone decrypts it");
    let payload: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({
            "type": "new_mail", "subscription": id, "mailbox": "INBOX", "exists": 1,
            "messages": [{"uid": 1, "from": "J\u{fc}rgen M\u{fc}ller <juergen@example.org>",
                          "subject": "Gr\u{fc}\u{df}e aus Berlin"}]
        })
    );
    // What the push service sees is ciphertext: neither name nor subject in clear.
    let body = String::from_utf8_lossy(&pushes[0].body);
    assert!(!body.contains("Berlin") && !body.contains("juergen"));

    // A 50 KB subject: the push stays within the limit, its JSON valid, the subject cut.
    let long: String = (0..5_200).map(|i| format!("word{:05} ", i)).collect();
    let long = long.trim_end();
    assert!(long.len() > 50_000);
    dovecot
        .deliver("alice", &message("Big <big@example.org>", long))
        .unwrap();
    let pushes = sink.wait_for(2, Duration::from_secs(10));
    assert_eq!(pushes.len(), 2);
    let plain = phone
        .decrypt(&pushes[1].body)
        .expect("the phone decrypts it");
    assert!(plain.len() <= push::ece::PAYLOAD_LEN_MAX, "{}", plain.len());
    let payload: serde_json::Value = serde_json::from_slice(&plain).expect("valid JSON");
    assert_eq!(payload["exists"], 2);
    let newest = &payload["messages"][0];
    assert_eq!(newest["uid"], 2);
    assert_eq!(newest["from"], "Big <big@example.org>");
    let subject = newest["subject"].as_str().unwrap();
    let kept = subject
        .strip_suffix('\u{2026}')
        .expect("cut, with an ellipsis");
    assert!(!kept.is_empty() && long.starts_with(kept), "{subject}");
    assert!(subject.len() < 4096);
    app.shutdown();
}
