//! A consumer that stops reading events must not stall the reactor: with an event queue of
//! one slot, the other sessions of the same reactor still log in and reach IDLE, take new
//! mail, leave IDLE with DONE and log out when unwatched, and once the consumer reads again every event arrives, each end
//! exactly once (`Stats::events_deferred` counts the offers that found the queue full).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::{Engine, EngineConfig, Event, Secret, Security, SessionId, WatchSpec};
use zeroize::Zeroizing;

/// Sessions on the one reactor; all but one find the one-slot queue full.
const SESSIONS: usize = 6;
/// How long any wait in this test may take before it counts as stalled.
const PATIENCE: Duration = Duration::from_secs(10);

fn spec(dest: SocketAddr, n: usize) -> WatchSpec {
    WatchSpec {
        host: dest.ip().to_string(),
        port: dest.port(),
        security: Security::DangerousPlain,
        username: format!("u{n}"),
        secret: Secret::Password(Zeroizing::new(b"pw".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

/// A counter from the mock's `stats` line, such as `idling`.
fn mock_stat(mock: &mock_imapd::Handle, name: &str) -> u64 {
    let line = mock.command("stats");
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Waits, bounded by [`PATIENCE`], until `done` holds; false if it never did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_full_event_queue_stalls_no_session_and_loses_no_event() {
    let mock = mock_imapd::run(mock_imapd::Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        ..mock_imapd::Config::default()
    })
    .unwrap();
    let dest = mock.plain_addrs()[0];
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        event_queue_len: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let ids: Vec<SessionId> = (0..SESSIONS)
        .map(|n| engine.watch(spec(dest, n)).unwrap())
        .collect();

    // Nobody reads: the first Ready fills the queue, yet every session reaches IDLE.
    let all_idle = eventually(|| mock_stat(&mock, "idling") == SESSIONS as u64);
    let deferred = engine.stats().events_deferred;
    // New mail is kept in the sessions meanwhile.
    mock.command("exists all");
    let turns = engine.stats().loop_turns;
    std::thread::sleep(Duration::from_millis(200));
    let turns_later = engine.stats().loop_turns;
    // Unwatching still works: every session leaves IDLE (DONE) and logs out.
    for id in &ids {
        engine.unwatch(*id);
    }
    let served = eventually(|| mock_stat(&mock, "closed_logout") == SESSIONS as u64);
    assert!(all_idle, "sessions stalled behind a full event queue");
    assert!(served, "DONE/LOGOUT stalled behind a full event queue");
    assert!(deferred > 0, "the full queue was not counted");
    // The retry timer is short but not a spin: a few hundred turns in 200 ms at most.
    assert!(
        turns_later - turns < 1_000,
        "the reactor spins: {} turns in 200 ms",
        turns_later - turns
    );

    // The consumer reads again: every session reports Ready, new mail and its end once.
    let mut seen: HashMap<SessionId, Vec<&'static str>> = HashMap::new();
    let all_ended = eventually(|| {
        while let Ok(event) = engine.events().try_recv() {
            let kind = match event {
                Event::Ready { .. } => "ready",
                Event::NewMail { .. } => "new_mail",
                Event::SessionLost { .. } => "lost",
                Event::Failed { .. } => "failed",
            };
            seen.entry(event.id()).or_default().push(kind);
        }
        seen.values().filter(|k| k.contains(&"lost")).count() == SESSIONS
    });
    assert!(all_ended, "events lost: {seen:?}");
    for id in &ids {
        let kinds = &seen[id];
        assert_eq!(kinds.first(), Some(&"ready"), "{id:?}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"lost"), "{id:?}: {kinds:?}");
        let count = |k| kinds.iter().filter(|&&x| x == k).count();
        assert_eq!((count("ready"), count("lost")), (1, 1), "{id:?}: {kinds:?}");
        assert!(
            count("new_mail") >= 1,
            "{id:?} lost its new mail: {kinds:?}"
        );
    }
    assert_eq!(engine.stats().live_sessions, 0);
    engine.shutdown();
    mock.shutdown();
}

/// Watches past a one-slot command queue: `watch` refuses the overflow at once with
/// `AtCapacity` (never blocks), and every accepted watch still ends exactly once.
#[test]
fn a_full_command_queue_refuses_watch_without_blocking() {
    const WATCHES: usize = 2_000;
    let engine = Engine::start(EngineConfig {
        reactor_threads: 1,
        webpki_roots: false,
        command_queue_len: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    // Port 1 on loopback: refused at once, so every accepted watch ends quickly.
    let dest: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 0..WATCHES {
        match engine.watch(spec(dest, n)) {
            Ok(id) => accepted.push(id),
            Err(engine::WatchError::AtCapacity) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        refused > 0,
        "a one-slot queue took {WATCHES} watches in a burst"
    );
    let mut ends: HashMap<SessionId, usize> = HashMap::new();
    let all_ended = eventually(|| {
        while let Ok(event) = engine.events().try_recv() {
            assert!(matches!(event, Event::Failed { .. }), "{event:?}");
            *ends.entry(event.id()).or_default() += 1;
        }
        ends.len() == accepted.len()
    });
    assert!(all_ended, "{} of {} ended", ends.len(), accepted.len());
    assert!(ends.values().all(|&n| n == 1));
    assert_eq!(engine.stats().live_sessions, 0);
}
