//! Filters against a real Dovecot: of ten delivered messages only the three carrying
//! `Chat-Version` are reported, and fetching their header fields sets `\Seen` on none.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use engine::{
    Engine, EngineConfig, Event, Filter, Secret, Security, SessionConfig, SessionId, WatchOptions,
    WatchSpec,
};
use testkit::{simple_message, Dovecot, DovecotConfig};
use zeroize::Zeroizing;

fn next_event(engine: &Engine, id: SessionId, timeout: Duration) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match engine.events().recv_timeout(left) {
            Ok(event) if event.id() == id => return Some(event),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn chat_message(subject: &str) -> Vec<u8> {
    [
        b"Chat-Version: 1.0\r\n".as_slice(),
        &simple_message(subject),
    ]
    .concat()
}

/// A tiny IMAP client on the implicit-TLS port: sends `commands` (tagged t1, t2, ...) and
/// returns every line the server answered, until the last command's tagged answer.
fn imap_exchange(dovecot: &Dovecot, commands: &[&str]) -> Vec<String> {
    let stream = dovecot.connect_tls().expect("TLS connection to Dovecot");
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "greeting {line:?}");
    for (i, command) in commands.iter().enumerate() {
        let tag = format!("t{}", i + 1);
        let stream = reader.get_mut();
        stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .unwrap();
        stream.flush().unwrap();
        loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "connection closed"
            );
            lines.push(line.trim_end().to_owned());
            if line.starts_with(&format!("{tag} ")) {
                assert!(line.starts_with(&format!("{tag} OK")), "{command}: {line}");
                break;
            }
        }
    }
    lines
}

/// The FLAGS of every message in alice's INBOX, read without changing them (EXAMINE).
fn inbox_flags(dovecot: &Dovecot) -> Vec<String> {
    imap_exchange(
        dovecot,
        &[
            "LOGIN alice secret-alice",
            "EXAMINE INBOX",
            "FETCH 1:* (FLAGS)",
        ],
    )
    .into_iter()
    .filter(|l| l.starts_with("* ") && l.contains(" FETCH "))
    .collect()
}

#[test]
fn only_chat_messages_are_reported_and_none_gets_seen() {
    let dovecot = Dovecot::start(DovecotConfig::default())
        .expect("Dovecot starts (apt-get install -y dovecot-imapd)");
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        session: SessionConfig::default(),
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        ..EngineConfig::default()
    })
    .unwrap();
    let spec = WatchSpec {
        host: "127.0.0.1".into(),
        port: dovecot.imaps_port(),
        security: Security::Tls,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"secret-alice".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    };
    let options = WatchOptions {
        filter: Some(Filter {
            headers: vec!["Chat-Version".into()],
            senders: vec![],
        }),
        preview: false,
    };
    let id = engine.watch_with(spec, options).unwrap();
    match next_event(&engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { .. }) => {}
        other => panic!("expected Ready, got {other:?}; log:\n{}", dovecot.log()),
    }
    let chat = [1, 4, 8];
    let mut reported = 0;
    for n in 0..10u32 {
        let is_chat = chat.contains(&n);
        let message = if is_chat {
            chat_message(&format!("chat {n}"))
        } else {
            simple_message(&format!("plain {n}"))
        };
        dovecot.deliver("alice", &message).unwrap();
        // Dovecot tells an IDLE client within ~0.5 s; the fetch adds one round trip.
        let wait = Duration::from_millis(if is_chat { 3000 } else { 1500 });
        match next_event(&engine, id, wait) {
            Some(Event::NewMail {
                mailbox: 0,
                exists,
                preview: None,
                ..
            }) if is_chat => {
                assert_eq!(exists, n + 1);
                reported += 1;
            }
            None if !is_chat => {}
            other => panic!("message {n} (chat: {is_chat}): got {other:?}"),
        }
    }
    assert_eq!(reported, 3);
    assert_eq!(dovecot.message_count("alice", "INBOX").unwrap(), 10);

    let flags = inbox_flags(&dovecot);
    assert_eq!(flags.len(), 10, "{flags:?}");
    assert!(
        flags.iter().all(|l| !l.contains("\\Seen")),
        "a message got \\Seen: {flags:?}"
    );
    // The check can see \Seen: a plain (non-PEEK) fetch of message 1 sets it.
    imap_exchange(
        &dovecot,
        &[
            "LOGIN alice secret-alice",
            "SELECT INBOX",
            "FETCH 1 (BODY[TEXT])",
        ],
    );
    let flags = inbox_flags(&dovecot);
    assert_eq!(
        flags.iter().filter(|l| l.contains("\\Seen")).count(),
        1,
        "{flags:?}"
    );
    drop(engine);
}
