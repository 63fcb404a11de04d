//! Previews end to end: a registration with `"preview": true` and Web Push keys, mail
//! delivered to a real Dovecot, and the encrypted push decrypted the way the phone would,
//! to find the message's From and Subject. A 50 KB subject arrives cut, in valid JSON
//! within the push payload limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use imap_push_proxy::{App, Config};
use push::testing::{Sink, Subscriber};
use testkit::{message_with_body, Dovecot, DovecotConfig};

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ipp-preview-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(dir: &TempDir, dovecot: &Dovecot) -> Config {
    let ca = dir.0.join("ca.pem");
    std::fs::write(&ca, dovecot.ca_pem()).unwrap();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.0.join("data"),
        reactor_threads: 1,
        sender_threads: 2,
        allow_private_destinations: true,
        allow_http_endpoints: true,
        imap_extra_ca_file: Some(ca),
        shutdown_grace_secs: 1,
        ..Config::default()
    }
}

/// POSTs `body` to the subscriptions endpoint; returns status and body.
fn register(addr: SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let request = format!(
        "POST /v1/subscriptions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap())
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
