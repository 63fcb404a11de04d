//! Handing live sessions from one engine to another against Dovecot, in one process: the
//! sessions are exported at their handover point, encoded and decoded, the first engine
//! is dropped, and a second engine adopts them. Dovecot sees no new login and no new
//! connection; new mail is still reported, an IDLE refresh after the handover is answered
//! under the tags and record sequence numbers the first engine would have used, and a
//! LOGOUT at the end completes (a wrong tag or sequence number would end the session with
//! a protocol or TLS error instead).

use std::time::{Duration, Instant};

use engine::handover::{Reader, HANDOVER_WAIT};
use engine::{
    EndReason, Engine, EngineConfig, Event, Filter, Handover, Secret, Security, SessionConfig,
    SessionId, WatchOptions, WatchSpec,
};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::SupportedCipherSuite;
use testkit::{simple_message, Dovecot, DovecotConfig};
use zeroize::Zeroizing;

fn engine(dovecot: &Dovecot, suites: Vec<SupportedCipherSuite>, session: SessionConfig) -> Engine {
    Engine::start(EngineConfig {
        reactor_threads: 2,
        session,
        webpki_roots: false,
        extra_roots_der: vec![dovecot.ca_der().to_vec()],
        tls_cipher_suites: suites,
        ..EngineConfig::default()
    })
    .expect("engine starts")
}

fn spec(dovecot: &Dovecot, security: Security, user: &str) -> WatchSpec {
    WatchSpec {
        host: "127.0.0.1".into(),
        port: match security {
            Security::Tls => dovecot.imaps_port(),
            _ => dovecot.imap_port(),
        },
        security,
        username: user.into(),
        secret: Secret::Password(Zeroizing::new(format!("secret-{user}").into_bytes())),
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

fn logins(dovecot: &Dovecot, user: &str) -> usize {
    let needle = format!("Login: user=<{user}>");
    dovecot.log().matches(&needle).count()
}

/// Encodes and decodes every handover, as the image between two processes does.
fn through_the_wire(sessions: Vec<Handover>) -> Vec<Handover> {
    let mut bytes = Zeroizing::new(Vec::new());
    for s in &sessions {
        s.encode(&mut bytes);
    }
    // The descriptors now belong to the decoded values.
    for s in sessions {
        std::mem::forget(s);
    }
    let mut reader = Reader::new(&bytes);
    let mut decoded = Vec::new();
    while !reader.is_empty() {
        decoded.push(Handover::decode(&mut reader).expect("decodes"));
    }
    decoded
}

/// Two users' sessions handed over; mail, an IDLE refresh, mail again, then LOGOUT.
fn hand_over(
    name: &str,
    suites: Vec<SupportedCipherSuite>,
    security: Security,
    cfg: DovecotConfig,
) {
    let users = ["alice", "bob"];
    let cfg = cfg.with_user("bob", "secret-bob");
    let dovecot = Dovecot::start(cfg).expect("Dovecot starts");
    let session = SessionConfig {
        idle_refresh: Duration::from_secs(3),
        idle_refresh_jitter: Duration::ZERO,
        poll_interval: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let first = engine(&dovecot, suites.clone(), session);
    let mut ids = Vec::new();
    for user in users {
        let id = first.watch(spec(&dovecot, security, user)).unwrap();
        match next_event(&first, id, Duration::from_secs(10)) {
            Some(Event::Ready { .. }) => ids.push(id),
            other => panic!("{name}: expected Ready, got {other:?}"),
        }
    }
    let logins_before: Vec<usize> = users.iter().map(|u| logins(&dovecot, u)).collect();
    assert_eq!(logins_before, [1, 1], "{name}: {}", dovecot.log());

    let exported = first.export(HANDOVER_WAIT);
    assert_eq!(exported.sessions.len(), 2, "{name}: both handed over");
    assert_eq!(exported.left, 0);
    for h in &exported.sessions {
        assert!(ids.contains(&h.id));
        let tls = h.tls.as_ref().map(|t| t.seqs());
        match security {
            Security::DangerousPlain => assert!(tls.is_none()),
            // Records were sent and received under these keys.
            _ => assert!(tls.is_some_and(|(tx, rx)| tx > 0 && rx > 0), "{name}"),
        }
    }
    let sessions = through_the_wire(exported.sessions);
    drop(first);

    let second = engine(&dovecot, suites, session);
    second.adopt(sessions);
    assert_eq!(second.stats().live_sessions, 2);
    for (n, (user, id)) in users.iter().zip(&ids).enumerate() {
        dovecot
            .deliver(user, &simple_message(&format!("{name} {n}")))
            .unwrap();
        match next_event(&second, *id, Duration::from_secs(5)) {
            Some(Event::NewMail { exists, .. }) => assert_eq!(exists, 1, "{name}"),
            other => panic!("{name}: expected NewMail after adoption, got {other:?}"),
        }
    }
    // Past the IDLE refresh (or several NOOPs): the conversation goes on under the
    // carried tags and sequence numbers.
    std::thread::sleep(Duration::from_secs(4));
    dovecot
        .deliver("alice", &simple_message(&format!("{name} again")))
        .unwrap();
    match next_event(&second, ids[0], Duration::from_secs(5)) {
        Some(Event::NewMail { exists, .. }) => assert_eq!(exists, 2, "{name}"),
        other => panic!("{name}: expected NewMail after the refresh, got {other:?}"),
    }
    for user in users {
        dovecot
            .wait_for_connection_count(user, 1, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let logins_after: Vec<usize> = users.iter().map(|u| logins(&dovecot, u)).collect();
    assert_eq!(logins_after, logins_before, "{name}: no new login");
    for id in &ids {
        second.unwatch(*id);
        match next_event(&second, *id, Duration::from_secs(5)) {
            Some(Event::SessionLost {
                reason: EndReason::Unwatched,
                ..
            }) => {}
            other => panic!("{name}: expected a clean LOGOUT, got {other:?}"),
        }
    }
}

#[test]
fn tls13_sessions_survive_a_handover() {
    hand_over(
        "TLS 1.3",
        vec![cs::TLS13_AES_128_GCM_SHA256],
        Security::Tls,
        DovecotConfig::default(),
    );
}

#[test]
fn tls12_sessions_survive_a_handover() {
    hand_over(
        "TLS 1.2",
        vec![
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        Security::Tls,
        DovecotConfig::default(),
    );
}

#[test]
fn polling_sessions_survive_a_handover() {
    hand_over(
        "NOOP polling over STARTTLS",
        vec![cs::TLS13_CHACHA20_POLY1305_SHA256],
        Security::StartTls,
        DovecotConfig::no_idle(),
    );
}

/// On the rustls path nothing is handed over: the session stays, served on.
#[test]
fn a_rustls_session_stays_with_its_engine() {
    let dovecot = Dovecot::start(DovecotConfig::default()).expect("Dovecot starts");
    let session = SessionConfig {
        tls_compact: false,
        ..SessionConfig::default()
    };
    let first = engine(&dovecot, Vec::new(), session);
    let id = first.watch(spec(&dovecot, Security::Tls, "alice")).unwrap();
    assert!(matches!(
        next_event(&first, id, Duration::from_secs(10)),
        Some(Event::Ready { .. })
    ));
    let started = Instant::now();
    let exported = first.export(Duration::from_millis(200));
    assert!(exported.sessions.is_empty());
    assert_eq!(exported.left, 1);
    assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");
    dovecot
        .deliver("alice", &simple_message("still here"))
        .unwrap();
    assert!(matches!(
        next_event(&first, id, Duration::from_secs(5)),
        Some(Event::NewMail { .. })
    ));
}

/// A session watching a second mailbox: after the handover, mail to that mailbox is
/// reported for it (with NOTIFY, or by STATUS polling where the server has none), and the
/// selected mailbox still works.
fn two_mailboxes(name: &str, cfg: DovecotConfig) {
    let dovecot = Dovecot::start(cfg).expect("Dovecot starts");
    dovecot.create_mailbox("alice", "Archive").unwrap();
    let session = SessionConfig {
        poll_interval: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let suites = vec![cs::TLS13_AES_256_GCM_SHA384];
    let first = engine(&dovecot, suites.clone(), session);
    let mut spec = spec(&dovecot, Security::Tls, "alice");
    spec.mailboxes = vec!["INBOX".into(), "Archive".into()];
    let id = first.watch(spec).unwrap();
    match next_event(&first, id, Duration::from_secs(10)) {
        Some(Event::Ready { .. }) => {}
        other => panic!("{name}: expected Ready, got {other:?}"),
    }
    // Past a first STATUS round where there is no NOTIFY.
    std::thread::sleep(Duration::from_millis(1500));
    let exported = first.export(HANDOVER_WAIT);
    assert_eq!(exported.sessions.len(), 1, "{name}: handed over");
    assert_eq!(exported.sessions[0].session.others.len(), 1);
    let sessions = through_the_wire(exported.sessions);
    drop(first);
    let second = engine(&dovecot, suites, session);
    second.adopt(sessions);
    dovecot
        .deliver_to("alice", "Archive", &simple_message(name))
        .unwrap();
    match next_event(&second, id, Duration::from_secs(5)) {
        Some(Event::NewMail {
            mailbox: 1,
            exists: 1,
            ..
        }) => {}
        other => panic!("{name}: expected NewMail for Archive, got {other:?}"),
    }
    dovecot.deliver("alice", &simple_message(name)).unwrap();
    match next_event(&second, id, Duration::from_secs(5)) {
        Some(Event::NewMail { mailbox: 0, .. }) => {}
        other => panic!("{name}: expected NewMail for INBOX, got {other:?}"),
    }
    assert_eq!(logins(&dovecot, "alice"), 1, "{name}: no new login");
}

#[test]
fn a_session_watching_two_mailboxes_survives_a_handover() {
    two_mailboxes("NOTIFY", DovecotConfig::default());
    two_mailboxes("STATUS polling", DovecotConfig::no_notify());
}

/// A session with a filter and previews: after the handover, only matching mail is
/// reported, with its preview.
#[test]
fn a_session_with_a_filter_and_previews_survives_a_handover() {
    let dovecot = Dovecot::start(DovecotConfig::default()).expect("Dovecot starts");
    let suites = vec![cs::TLS13_AES_128_GCM_SHA256];
    let session = SessionConfig::default();
    let first = engine(&dovecot, suites.clone(), session);
    let options = WatchOptions {
        filter: Some(Filter {
            headers: vec!["Chat-Version".into()],
            senders: Vec::new(),
        }),
        preview: true,
    };
    let id = first
        .watch_with(spec(&dovecot, Security::Tls, "alice"), options.clone())
        .unwrap();
    assert!(matches!(
        next_event(&first, id, Duration::from_secs(10)),
        Some(Event::Ready { .. })
    ));
    let exported = first.export(HANDOVER_WAIT);
    assert_eq!(exported.sessions.len(), 1);
    // Carried as the session keeps it: header names upper-cased (compared without case).
    let carried = &exported.sessions[0].session.options;
    assert!(carried.preview);
    let filter = carried.filter.as_ref().expect("the filter is carried");
    assert_eq!(filter.headers, ["CHAT-VERSION"]);
    let sessions = through_the_wire(exported.sessions);
    drop(first);
    let second = engine(&dovecot, suites, session);
    second.adopt(sessions);
    dovecot
        .deliver("alice", &simple_message("no chat header"))
        .unwrap();
    let chat = [b"Chat-Version: 1.0\r\n".as_slice(), &simple_message("chat")].concat();
    dovecot.deliver("alice", &chat).unwrap();
    match next_event(&second, id, Duration::from_secs(5)) {
        Some(Event::NewMail {
            exists: 2,
            preview: Some(preview),
            ..
        }) => {
            let subjects: Vec<_> = preview.messages.iter().map(|m| m.subject.clone()).collect();
            assert_eq!(subjects, ["chat"], "only the matching message");
        }
        other => panic!("expected a filtered NewMail with a preview, got {other:?}"),
    }
    assert_eq!(logins(&dovecot, "alice"), 1, "no new login");
}
