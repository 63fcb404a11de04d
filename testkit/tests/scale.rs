//! Many concurrent sessions: the limits the config raises really are raised.

mod common;

use std::time::{Duration, Instant};

use common::{connect_plain, Imap};
use testkit::{simple_message, Dovecot, DovecotConfig};

/// No limit warnings ("process_limit reached", "client_limit reached") or
/// errors in Dovecot's log. The static "fd limit (ulimit -n) is lower than
/// required under max. load" warning is tolerated: the harness raises the
/// soft limit, but cannot raise a low hard limit without CAP_SYS_RESOURCE.
fn assert_clean_log(dc: &Dovecot) {
    let log = dc.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": Warning:") || l.contains(": Error:") || l.contains(": Fatal:"))
        .filter(|l| !l.contains("fd limit (ulimit -n) is lower than required"))
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// More IDLE sessions than the default fs.inotify.max_user_instances (128):
/// without the raised limit some would only hear of new mail after Dovecot's
/// 30 s polling fallback.
#[test]
fn hundreds_of_idle_sessions_all_get_the_push() {
    const N: usize = 300;
    let dc = Dovecot::start(DovecotConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut sessions: Vec<Imap<_>> = (0..N)
        .map(|i| {
            let mut imap = connect_plain(dc.imap_port());
            imap.greeting();
            let ok = imap.login_literal(b"alice", b"secret-alice");
            assert!(ok.starts_with("t1 OK"), "session {i}: {ok:?}");
            imap.command_ok("SELECT INBOX");
            imap.send(b"i IDLE\r\n");
            let cont = imap.read_line();
            assert!(cont.starts_with("+ "), "session {i}: {cont:?}");
            imap
        })
        .collect();
    dc.wait_for_connection_count("alice", N, Duration::from_secs(10))
        .unwrap();

    let t0 = Instant::now();
    dc.deliver("alice", &simple_message("to everyone")).unwrap();
    for (i, imap) in sessions.iter_mut().enumerate() {
        let line = imap.read_line();
        assert_eq!(line, "* 1 EXISTS\r\n", "session {i}");
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "push to all took {elapsed:?}"
    );
    for imap in &mut sessions {
        imap.send(b"DONE\r\n");
        imap.read_until_tagged("i");
    }
    assert_clean_log(&dc);
}

/// More TLS sessions than Dovecot's default login process limit (100, one
/// process per TLS connection in the default high-security mode).
#[test]
fn more_than_a_hundred_tls_sessions() {
    const N: usize = 150;
    let dc = Dovecot::start(DovecotConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let sessions: Vec<_> = (0..N)
        .map(|i| {
            let mut imap = Imap::new(dc.connect_tls().unwrap_or_else(|e| panic!("{i}: {e}")));
            imap.greeting();
            let ok = imap.login_plain("alice", b"secret-alice");
            assert!(ok.starts_with("t1 OK"), "session {i}: {ok:?}");
            imap
        })
        .collect();
    dc.wait_for_connection_count("alice", N, Duration::from_secs(10))
        .unwrap();
    drop(sessions);
    dc.wait_for_connection_count("alice", 0, Duration::from_secs(10))
        .unwrap();
    assert_clean_log(&dc);
}

/// Past ~1000 sessions Dovecot's default client limits (stats, anvil, login)
/// stall new logins. Heavy (1200 imap processes): run explicitly with
/// `cargo test -p testkit --test scale -- --ignored`.
#[test]
#[ignore]
fn twelve_hundred_idle_sessions() {
    const N: usize = 1200;
    let dc = Dovecot::start(DovecotConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let mut sessions: Vec<Imap<_>> = (0..N)
        .map(|i| {
            let mut imap = connect_plain(dc.imap_port());
            imap.greeting();
            let ok = imap.login_plain("alice", b"secret-alice");
            assert!(ok.starts_with("t1 OK"), "session {i}: {ok:?}");
            imap.command_ok("SELECT INBOX");
            imap.send(b"i IDLE\r\n");
            let cont = imap.read_line();
            assert!(cont.starts_with("+ "), "session {i}: {cont:?}");
            imap
        })
        .collect();
    eprintln!("{N} sessions in {:?}", t0.elapsed());
    dc.wait_for_connection_count("alice", N, Duration::from_secs(30))
        .unwrap();
    let t0 = Instant::now();
    dc.deliver("alice", &simple_message("to everyone")).unwrap();
    for (i, imap) in sessions.iter_mut().enumerate() {
        assert_eq!(imap.read_line(), "* 1 EXISTS\r\n", "session {i}");
    }
    let elapsed = t0.elapsed();
    eprintln!("push to {N} sessions took {elapsed:?}");
    // Each imap process wakes up and re-reads the index on its own: with
    // 1200 processes on 2 cores this took ~8 s (not a polling fallback).
    assert!(
        elapsed < Duration::from_secs(30),
        "push to all took {elapsed:?}"
    );
    assert_clean_log(&dc);
}
