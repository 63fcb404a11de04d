//! The compact TLS record layer against Dovecot (OpenSSL): login, IDLE and delivery at TLS
//! 1.3 and TLS 1.2, with each AEAD in turn. Dovecot 2.3 has no maximum protocol setting, so
//! the client side is restricted (the suites offered, and so the versions). Every case runs
//! on both paths: compact (the default) and rustls for the whole session.

use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, Event, Secret, Security, SessionConfig, SessionId, WatchSpec};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::SupportedCipherSuite;
use testkit::{simple_message, Dovecot, DovecotConfig};
use zeroize::Zeroizing;

fn cases() -> Vec<(&'static str, Vec<SupportedCipherSuite>)> {
    vec![
        ("TLS 1.3 AES-128-GCM", vec![cs::TLS13_AES_128_GCM_SHA256]),
        ("TLS 1.3 AES-256-GCM", vec![cs::TLS13_AES_256_GCM_SHA384]),
        (
            "TLS 1.3 ChaCha20-Poly1305",
            vec![cs::TLS13_CHACHA20_POLY1305_SHA256],
        ),
        (
            "TLS 1.2 AES-128-GCM",
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
        ),
        (
            "TLS 1.2 AES-256-GCM",
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
        ),
        (
            "TLS 1.2 ChaCha20-Poly1305",
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
        ),
    ]
}

fn spec(dovecot: &Dovecot, security: Security) -> WatchSpec {
    WatchSpec {
        host: "127.0.0.1".into(),
        port: match security {
            Security::Tls => dovecot.imaps_port(),
            _ => dovecot.imap_port(),
        },
        security,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"secret-alice".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

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

/// Login, IDLE, two deliveries, each seen as NewMail; the session is on the path asked for.
fn login_idle_deliver(
    dovecot: &Dovecot,
    name: &str,
    suites: Vec<SupportedCipherSuite>,
    compact: bool,
    security: Security,
) {
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        session: SessionConfig {
            tls_compact: compact,
            ..SessionConfig::default()
        },
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        tls_cipher_suites: suites,
        ..EngineConfig::default()
    })
    .expect("engine starts");
    let id = engine.watch(spec(dovecot, security)).unwrap();
    let exists = match next_event(&engine, id, Duration::from_secs(10)) {
        Some(Event::Ready { ready, .. }) => ready.exists,
        other => panic!(
            "{name} compact={compact}: expected Ready, got {other:?}; log:\n{}",
            dovecot.log()
        ),
    };
    assert_eq!(
        engine.stats().tls_compact_sessions,
        usize::from(compact),
        "{name}: the session runs on the path asked for"
    );
    for n in 1..=2u32 {
        dovecot
            .deliver("alice", &simple_message(&format!("{name} {n}")))
            .unwrap();
        match next_event(&engine, id, Duration::from_secs(3)) {
            Some(Event::NewMail { exists: e, .. }) => assert_eq!(e, exists + n, "{name}"),
            other => panic!("{name} compact={compact}: expected NewMail, got {other:?}"),
        }
    }
    engine.unwatch(id);
    match next_event(&engine, id, Duration::from_secs(5)) {
        Some(Event::SessionLost { .. }) => {}
        other => panic!("{name}: expected SessionLost after unwatch, got {other:?}"),
    }
    // The slot is freed just after the event is sent.
    let deadline = Instant::now() + Duration::from_secs(2);
    while engine.stats().tls_compact_sessions != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        engine.stats().tls_compact_sessions,
        0,
        "{name}: gauge back to 0"
    );
}

#[test]
fn every_suite_and_version_on_both_paths() {
    let dovecot = Dovecot::start(DovecotConfig::default()).expect("Dovecot starts");
    for (name, suites) in cases() {
        for compact in [true, false] {
            login_idle_deliver(&dovecot, name, suites.clone(), compact, Security::Tls);
        }
    }
}

#[test]
fn starttls_switches_too() {
    let dovecot = Dovecot::start(DovecotConfig::default()).expect("Dovecot starts");
    for (name, suites) in cases().into_iter().step_by(3) {
        login_idle_deliver(&dovecot, name, suites, true, Security::StartTls);
    }
}

/// A burst of compact switches gives free heap back once, not once per session; rustls
/// sessions never trigger it.
#[test]
fn a_burst_of_switches_trims_the_heap_once() {
    const SESSIONS: usize = 12;
    let dovecot = Dovecot::start(DovecotConfig::default()).expect("Dovecot starts");
    for compact in [true, false] {
        let engine = Engine::start(EngineConfig {
            reactor_threads: 1,
            session: SessionConfig {
                tls_compact: compact,
                ..SessionConfig::default()
            },
            webpki_roots: false,
            extra_roots_der: vec![dovecot.ca_der().to_vec()],
            ..EngineConfig::default()
        })
        .unwrap();
        let started = Instant::now();
        for _ in 0..SESSIONS {
            engine.watch(spec(&dovecot, Security::Tls)).unwrap();
        }
        let mut ready = 0;
        while ready < SESSIONS {
            match engine.events().recv_timeout(Duration::from_secs(10)) {
                Ok(Event::Ready { .. }) => ready += 1,
                other => panic!("expected Ready, got {other:?}"),
            }
        }
        let burst = started.elapsed();
        // Past the delay, with margin; nothing switches meanwhile.
        std::thread::sleep(engine::reactor::HEAP_TRIM_DELAY * 2);
        let trims = engine.stats().heap_trims;
        if compact {
            assert_eq!(engine.stats().tls_compact_sessions, SESSIONS);
            let most = burst.as_millis() / engine::reactor::HEAP_TRIM_DELAY.as_millis() + 1;
            assert!(
                (1..=most as u64).contains(&trims),
                "{trims} trims for {SESSIONS} switches in {burst:?}"
            );
        } else {
            assert_eq!(trims, 0, "rustls sessions do not trim");
        }
    }
}
