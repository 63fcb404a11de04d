//! Several mailboxes on one connection against Dovecot: with NOTIFY (RFC 5465), and with
//! NOTIFY hidden so the STATUS polling path runs.

use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, Event, Secret, Security, SessionConfig, SessionId, WatchSpec};
use testkit::{simple_message, Dovecot, DovecotConfig};
use zeroize::Zeroizing;

const MAILBOXES: [&str; 3] = ["INBOX", "Sent", "Entw\u{fc}rfe"];

fn watch(dovecot: &Dovecot, session: SessionConfig) -> (Engine, SessionId) {
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        session,
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(WatchSpec {
            host: "127.0.0.1".into(),
            port: dovecot.imaps_port(),
            security: Security::Tls,
            username: "alice".into(),
            secret: Secret::Password(Zeroizing::new(b"secret-alice".to_vec())),
            mailboxes: MAILBOXES.iter().map(|m| m.to_string()).collect(),
            since: None,
        })
        .unwrap();
    match engine.events().recv_timeout(Duration::from_secs(10)) {
        Ok(Event::Ready { .. }) => {}
        other => panic!("expected Ready, got {other:?}\n{}", dovecot.log()),
    }
    (engine, id)
}

fn start_dovecot(cfg: DovecotConfig) -> Dovecot {
    let dovecot = Dovecot::start(cfg).unwrap();
    dovecot.create_mailbox("alice", "Sent").unwrap();
    dovecot.create_mailbox("alice", MAILBOXES[2]).unwrap();
    dovecot
}

/// Delivers one message to each mailbox in turn; each must give exactly one NewMail with
/// that mailbox's index within `within`.
fn each_mailbox_reports_its_own_mail(dovecot: &Dovecot, engine: &Engine, within: Duration) {
    for (index, name) in MAILBOXES.iter().enumerate() {
        dovecot
            .deliver_to("alice", name, &simple_message(&format!("to {name}")))
            .unwrap();
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(Event::NewMail {
                mailbox, exists, ..
            }) = engine.events().recv_timeout(Duration::from_millis(50))
            {
                got.push((mailbox, exists));
            }
            if !got.is_empty() && Instant::now() + Duration::from_millis(600) > deadline {
                break;
            }
        }
        assert_eq!(got, vec![(index, 1)], "delivery to {name}");
    }
    // One TCP connection for all three, as Dovecot sees it.
    assert_eq!(dovecot.connection_count("alice").unwrap(), 1);
}

#[test]
fn three_mailboxes_over_one_connection_with_notify() {
    let dovecot = start_dovecot(DovecotConfig::default());
    let (engine, _) = watch(&dovecot, SessionConfig::default());
    each_mailbox_reports_its_own_mail(&dovecot, &engine, Duration::from_secs(3));
}

#[test]
fn three_mailboxes_over_one_connection_with_status_polling() {
    let dovecot = start_dovecot(DovecotConfig::no_notify());
    let poll = Duration::from_millis(700);
    let (engine, _) = watch(
        &dovecot,
        SessionConfig {
            poll_interval: poll,
            ..SessionConfig::default()
        },
    );
    each_mailbox_reports_its_own_mail(&dovecot, &engine, poll * 4);
}

#[test]
fn a_missing_mailbox_fails_the_watch() {
    let dovecot = Dovecot::start(DovecotConfig::default()).unwrap();
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(WatchSpec {
            host: "127.0.0.1".into(),
            port: dovecot.imaps_port(),
            security: Security::Tls,
            username: "alice".into(),
            secret: Secret::Password(Zeroizing::new(b"secret-alice".to_vec())),
            mailboxes: vec!["INBOX".into(), "Nonexistent".into()],
            since: None,
        })
        .unwrap();
    assert_eq!(
        engine.events().recv_timeout(Duration::from_secs(10)).ok(),
        Some(Event::Failed {
            id,
            reason: engine::EndReason::MailboxRejected
        })
    );
}
