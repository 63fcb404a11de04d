//! Handover in virtual time: a session exported at its handover point and adopted by a
//! "new process" (a clock that started elsewhere) goes on exactly as the original would
//! have: the same bytes for the same server bytes at the same wall-clock times. A session
//! with a command in flight is not at a handover point.

use std::sync::Arc;
use std::time::Duration;

use engine::session::{Phase, Session, SessionConfig, SessionEvent};
use engine::{HandoverPhase, Secret, Security, Tick, WatchSpec};
use zeroize::Zeroizing;

mod support;
use support::{Driver, Split, SPLITS};

/// Wall clock (Unix ms) at the old driver's Tick::ZERO.
const OLD_EPOCH_MS: u64 = 1_800_000_000_000;
/// Wall clock at the new driver's Tick::ZERO: the new process started 90 s later.
const NEW_EPOCH_MS: u64 = OLD_EPOCH_MS + 90_000;

fn spec() -> WatchSpec {
    WatchSpec {
        host: "imap.example.org".into(),
        port: 993,
        security: Security::Tls,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"secret".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

fn cfg() -> SessionConfig {
    SessionConfig {
        idle_refresh: Duration::from_secs(600),
        idle_refresh_jitter: Duration::from_secs(60),
        poll_interval: Duration::from_secs(60),
        ..SessionConfig::default()
    }
}

/// Logs in and opens INBOX; IDLE when the server offers it, else NOOP polling.
fn to_watching(d: &mut Driver, idle: bool) {
    let caps = if idle {
        "IMAP4rev1 LITERAL+ IDLE"
    } else {
        "IMAP4rev1 LITERAL+"
    };
    d.s(format!("* OK [CAPABILITY {caps}] ready\r\n").as_bytes());
    d.c(b"A1 LOGIN alice secret\r\n");
    d.s(b"A1 OK Logged in\r\n");
    d.c(b"A2 CAPABILITY\r\n");
    d.s(format!("* CAPABILITY {caps}\r\nA2 OK done\r\n").as_bytes());
    d.c(b"A3 EXAMINE INBOX\r\n");
    d.s(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 17] x\r\n* OK [UIDNEXT 4] x\r\nA3 OK done\r\n");
    if idle {
        d.c(b"A4 IDLE\r\n");
        assert!(
            d.session.export(d.now, OLD_EPOCH_MS).is_none(),
            "IDLE in flight: not a handover point"
        );
        d.s(b"+ idling\r\n");
        assert_eq!(d.session.phase(), Phase::Idling);
    } else {
        d.c(b"");
        assert_eq!(d.session.phase(), Phase::PollWait);
    }
    assert!(matches!(d.take_events()[..], [SessionEvent::Ready(_)]));
}

/// The old session and its adopted copy, fed the same bytes at the same wall times.
fn twins(idle: bool, split: Split) -> (Driver, Driver) {
    let mut old = Driver::new(spec(), cfg(), split);
    old.now = Tick::from_ms(120_000);
    to_watching(&mut old, idle);
    let state = old
        .session
        .export(old.now, OLD_EPOCH_MS + old.now.as_ms())
        .expect("at a handover point");
    let phase = if idle {
        HandoverPhase::Idling
    } else {
        HandoverPhase::PollWait
    };
    assert_eq!(state.phase, phase);
    // The new process's clock reads 30 s at the same wall time.
    let new_now = Tick::from_ms(OLD_EPOCH_MS + old.now.as_ms() - NEW_EPOCH_MS);
    let adopted = Session::adopted(
        new_now,
        Arc::new(cfg()),
        &state,
        NEW_EPOCH_MS + new_now.as_ms(),
    );
    let mut new = Driver::with_session(adopted, split);
    new.now = new_now;
    (old, new)
}

/// Both go to their next deadline; it is the same wall-clock time, and they send the same.
fn step_both(old: &mut Driver, new: &mut Driver) -> Vec<u8> {
    let limit = Tick::from_ms(u64::MAX / 2);
    let at_old = old.run_to_next_deadline(limit).as_ms() + OLD_EPOCH_MS;
    let at_new = new.run_to_next_deadline(limit).as_ms() + NEW_EPOCH_MS;
    assert_eq!(at_old, at_new, "deadlines at the same wall time");
    assert_eq!(old.sent, new.sent);
    let sent = old.sent.clone();
    old.c(&sent);
    new.c(&sent);
    sent
}

fn feed_both(old: &mut Driver, new: &mut Driver, server: &[u8]) {
    old.s(server);
    new.s(server);
    assert_eq!(
        old.sent,
        new.sent,
        "after {:?}",
        String::from_utf8_lossy(server)
    );
    assert_eq!(old.take_events(), new.take_events());
    let sent = old.sent.clone();
    old.c(&sent);
    new.c(&sent);
}

#[test]
fn an_adopted_idle_session_goes_on_as_the_original() {
    for split in SPLITS {
        let (mut old, mut new) = twins(true, split);
        feed_both(&mut old, &mut new, b"* 4 EXISTS\r\n");
        // The refresh comes at the same wall time: DONE, then IDLE under the next tag.
        assert_eq!(step_both(&mut old, &mut new), b"DONE\r\n");
        new.s(b"A4 OK Idle completed\r\n");
        new.c(b"A5 IDLE\r\n");
        new.s(b"+ idling\r\n* 5 EXISTS\r\n");
        assert_eq!(
            new.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 0,
                exists: 5,
                preview: None
            }]
        );
        assert_eq!(new.pool.lent(), 0);
    }
}

#[test]
fn an_adopted_polling_session_goes_on_as_the_original() {
    for split in SPLITS {
        let (mut old, mut new) = twins(false, split);
        assert_eq!(step_both(&mut old, &mut new), b"A4 NOOP\r\n");
        feed_both(&mut old, &mut new, b"* 4 EXISTS\r\nA4 OK done\r\n");
        assert_eq!(step_both(&mut old, &mut new), b"A5 NOOP\r\n");
    }
}

#[test]
fn a_partial_response_or_a_login_is_not_a_handover_point() {
    let mut d = Driver::new(spec(), cfg(), Split::Whole);
    to_watching(&mut d, true);
    d.s(b"* 5 EXI");
    assert!(d.session.export(d.now, OLD_EPOCH_MS).is_none(), "partial");
    d.s(b"STS\r\n");
    assert!(d.session.export(d.now, OLD_EPOCH_MS).is_some(), "complete");
    // A session logging in holds its secret: it is never handed over.
    let mut login = Session::new(Tick::ZERO, Arc::new(cfg()), spec(), 7);
    assert!(
        login.export(Tick::ZERO, OLD_EPOCH_MS).is_none(),
        "connecting"
    );
    login.handle_connected(Tick::ZERO);
    assert!(login.export(Tick::ZERO, OLD_EPOCH_MS).is_none(), "greeting");
}
