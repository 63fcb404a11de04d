//! The engine against a real Dovecot (Debian's dovecot-imapd) on loopback.
//!
//! Dovecot batches mailbox changes for ~500 ms before it tells an IDLE client, so delivery
//! to event takes about half a second here; our own share is measured by the benches.

use std::time::{Duration, Instant};

use engine::{
    EndReason, Engine, EngineConfig, Event, Secret, Security, SessionConfig, SessionId, WatchSpec,
};
use testkit::{simple_message, Dovecot, DovecotConfig};
use zeroize::Zeroizing;

fn engine_for(dovecot: &Dovecot, session: SessionConfig) -> Engine {
    Engine::start(EngineConfig {
        reactor_threads: 2,
        session,
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn spec(dovecot: &Dovecot, security: Security, user: &str, password: &[u8]) -> WatchSpec {
    WatchSpec {
        host: "127.0.0.1".into(),
        port: match security {
            Security::Tls => dovecot.imaps_port(),
            _ => dovecot.imap_port(),
        },
        security,
        username: user.into(),
        secret: Secret::Password(Zeroizing::new(password.to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

fn start(cfg: DovecotConfig) -> Dovecot {
    Dovecot::start(cfg).expect("Dovecot starts (apt-get install -y dovecot-imapd)")
}

/// The next event for `id`, skipping others, within `timeout`.
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

fn watch_ready(engine: &Engine, spec: WatchSpec) -> SessionId {
    let id = engine.watch(spec).expect("watch accepted");
    match next_event(engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { .. }) => id,
        other => panic!("expected Ready, got {other:?}"),
    }
}

#[test]
fn tls_login_idle_and_exactly_one_new_mail_per_delivery() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let id = engine
        .watch(spec(&dovecot, Security::Tls, "alice", b"secret-alice"))
        .unwrap();
    match next_event(&engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { ready, .. }) => {
            assert!(ready.idle, "Dovecot offers IDLE");
            assert!(ready.notify, "Dovecot offers NOTIFY");
            assert_eq!(ready.exists, 0);
        }
        other => panic!("expected Ready, got {other:?}; log:\n{}", dovecot.log()),
    }
    for n in 1..=3u32 {
        let delivered = Instant::now();
        dovecot
            .deliver("alice", &simple_message(&format!("hello {n}")))
            .unwrap();
        match next_event(&engine, id, Duration::from_secs(1)) {
            Some(Event::NewMail { exists, .. }) => assert_eq!(exists, n),
            other => panic!("expected NewMail within 1 s, got {other:?}"),
        }
        eprintln!("delivery {n} to NewMail: {:?}", delivered.elapsed());
        // Exactly one: nothing more for this delivery.
        assert_eq!(next_event(&engine, id, Duration::from_millis(1200)), None);
    }
}

#[test]
fn starttls_login_reaches_idle() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let id = watch_ready(
        &engine,
        spec(&dovecot, Security::StartTls, "alice", b"secret-alice"),
    );
    dovecot
        .deliver("alice", &simple_message("over starttls"))
        .unwrap();
    assert!(matches!(
        next_event(&engine, id, Duration::from_secs(1)),
        Some(Event::NewMail { exists: 1, .. })
    ));
}

#[test]
fn wrong_password_fails_with_auth_rejected() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let id = engine
        .watch(spec(&dovecot, Security::Tls, "alice", b"not-the-password"))
        .unwrap();
    assert_eq!(
        next_event(&engine, id, Duration::from_secs(10)),
        Some(Event::Failed {
            id,
            reason: EndReason::AuthRejected
        })
    );
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused() {
    let dovecot = start(DovecotConfig::default());
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let id = engine
        .watch(spec(&dovecot, Security::Tls, "alice", b"secret-alice"))
        .unwrap();
    assert_eq!(
        next_event(&engine, id, Duration::from_secs(10)),
        Some(Event::Failed {
            id,
            reason: EndReason::Tls(engine::TlsFailure::Certificate)
        })
    );
}

#[test]
fn stopping_dovecot_loses_every_session() {
    const SESSIONS: usize = 8;
    let mut dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|i| {
            let security = if i % 2 == 0 {
                Security::Tls
            } else {
                Security::StartTls
            };
            watch_ready(&engine, spec(&dovecot, security, "alice", b"secret-alice"))
        })
        .collect();
    dovecot.stop();
    let mut lost = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lost.len() < SESSIONS && Instant::now() < deadline {
        if let Ok(Event::SessionLost { id, reason }) =
            engine.events().recv_timeout(Duration::from_millis(100))
        {
            assert!(lost.insert(id, reason).is_none(), "lost twice: {id:?}");
        }
    }
    for id in &ids {
        let reason = lost.get(id).unwrap_or_else(|| panic!("{id:?} not lost"));
        assert!(
            matches!(
                reason,
                EndReason::Bye | EndReason::Closed | EndReason::Io(_)
            ),
            "{reason:?}"
        );
    }
    assert_eq!(engine.stats().live_sessions, 0);
}

#[test]
fn a_server_without_idle_is_polled_with_noop() {
    let dovecot = start(DovecotConfig::no_idle());
    let poll = Duration::from_millis(500);
    let engine = engine_for(
        &dovecot,
        SessionConfig {
            poll_interval: poll,
            ..SessionConfig::default()
        },
    );
    let id = engine
        .watch(spec(&dovecot, Security::Tls, "alice", b"secret-alice"))
        .unwrap();
    match next_event(&engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { ready, .. }) => assert!(!ready.idle, "IDLE is hidden"),
        other => panic!("expected Ready, got {other:?}"),
    }
    for n in 1..=2u32 {
        dovecot.deliver("alice", &simple_message("polled")).unwrap();
        match next_event(&engine, id, poll * 3) {
            Some(Event::NewMail { exists, .. }) => assert_eq!(exists, n),
            other => panic!("expected NewMail by NOOP, got {other:?}"),
        }
    }
    // Still one connection: polling never logs in again.
    assert_eq!(dovecot.connection_count("alice").unwrap(), 1);
}

/// Quotes, backslash, a fake literal, spaces and UTF-8 log in; CR/LF cannot be a Dovecot
/// password ("illegal chars"), so that login must be *rejected*, not break the protocol.
/// Returns the Dovecot log.
fn awkward_passwords_log_in_or_are_rejected(cfg: DovecotConfig) -> String {
    let awkward: &[u8] = b"p\"w \\ {5} \xc3\xa9";
    let crlf: &[u8] = b"p\"w\r\nA9 LOGOUT\r\n{5}";
    let dovecot = start(cfg.with_user("bob", awkward).with_user("carol", crlf));
    let engine = engine_for(&dovecot, SessionConfig::default());
    watch_ready(&engine, spec(&dovecot, Security::Tls, "bob", awkward));
    let id = engine
        .watch(spec(&dovecot, Security::Tls, "carol", crlf))
        .unwrap();
    assert_eq!(
        next_event(&engine, id, Duration::from_secs(10)),
        Some(Event::Failed {
            id,
            reason: EndReason::AuthRejected
        })
    );
    dovecot.log()
}

#[test]
fn awkward_passwords_are_sent_safely() {
    // Dovecot offers AUTH=PLAIN with SASL-IR: the password travels in base64.
    awkward_passwords_log_in_or_are_rejected(DovecotConfig::default());
}

#[test]
fn awkward_passwords_go_through_login_literals() {
    // Without SASL-IR the engine prefers LOGIN (one round trip with LITERAL+), quoting or
    // sending literals. (Dovecot's imap_capability also sets the pre-login banner.)
    let log = awkward_passwords_log_in_or_are_rejected(
        DovecotConfig::default().hide_capability("SASL-IR"),
    );
    // The injected "A9 LOGOUT" inside the literal was never run as a command.
    assert!(!log.contains("LOGOUT"), "{log}");
}

#[test]
fn unwatch_logs_out_and_frees_the_connection() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let id = watch_ready(
        &engine,
        spec(&dovecot, Security::Tls, "alice", b"secret-alice"),
    );
    assert_eq!(dovecot.connection_count("alice").unwrap(), 1);
    engine.unwatch(id);
    assert_eq!(
        next_event(&engine, id, Duration::from_secs(5)),
        Some(Event::SessionLost {
            id,
            reason: EndReason::Unwatched
        })
    );
    dovecot
        .wait_for_connection_count("alice", 0, Duration::from_secs(5))
        .expect("Dovecot sees the session go");
    assert_eq!(engine.stats().live_sessions, 0);
}

#[test]
fn shutdown_ends_every_session_with_shutdown() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    let ids: Vec<SessionId> = (0..4)
        .map(|_| {
            watch_ready(
                &engine,
                spec(&dovecot, Security::Tls, "alice", b"secret-alice"),
            )
        })
        .collect();
    let events = engine.shutdown();
    for id in ids {
        assert!(
            events.contains(&Event::SessionLost {
                id,
                reason: EndReason::Shutdown
            }),
            "{id:?} in {events:?}"
        );
    }
}

#[test]
fn idle_sessions_hold_no_io_buffers() {
    let dovecot = start(DovecotConfig::default());
    let engine = engine_for(&dovecot, SessionConfig::default());
    for i in 0..6 {
        let security = if i % 2 == 0 {
            Security::Tls
        } else {
            Security::StartTls
        };
        watch_ready(&engine, spec(&dovecot, security, "alice", b"secret-alice"));
    }
    // Keepalives and new mail come and go; between them nothing is lent.
    dovecot.deliver("alice", &simple_message("x")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut new_mail = 0;
    while new_mail < 6 && Instant::now() < deadline {
        if let Ok(Event::NewMail { .. }) = engine.events().recv_timeout(Duration::from_millis(100))
        {
            new_mail += 1;
        }
    }
    assert_eq!(new_mail, 6);
    std::thread::sleep(Duration::from_millis(200));
    let stats = engine.stats();
    assert_eq!(stats.reactor_sessions, 6);
    assert_eq!(
        (stats.line_buffers_lent, stats.record_buffers_lent),
        (0, 0),
        "{stats:?}"
    );
}
