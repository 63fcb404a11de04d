//! Tests of the harness against the real Dovecot installed on the machine.
//! They fail (not skip) when Dovecot is missing.

mod common;

use std::time::Duration;

use common::{capabilities_in, connect_plain, Imap};
use testkit::{simple_message, Dovecot, DovecotConfig, HarnessError, DOVECOT_DEFAULT_CAPABILITIES};

/// Every byte class that breaks naive IMAP quoting and that Dovecot accepts:
/// quote, backslash, a literal marker, space, UTF-8, a non-UTF-8 byte, DEL.
const NASTY_PASSWORD: &[u8] = b"p\"w \\ {5}\x7fx\xc3\xa9\xff!";
/// CR/LF: transmissible as a literal, but Dovecot refuses it at login.
const CRLF_PASSWORD: &[u8] = b"line1\r\nline2";

fn start(cfg: DovecotConfig) -> Dovecot {
    match Dovecot::start(cfg) {
        Ok(dc) => dc,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn login_with_literal_password_examine_deliver_noop() {
    let dc = start(DovecotConfig::default().with_users([("bob", NASTY_PASSWORD)]));
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    let ok = imap.login_literal(b"bob", NASTY_PASSWORD);
    assert!(
        ok.starts_with("t1 OK"),
        "login failed: {ok:?}\n{}",
        dc.log()
    );

    let lines = imap.command_ok("EXAMINE INBOX");
    assert!(lines.iter().any(|l| l == "* 0 EXISTS\r\n"), "{lines:?}");

    dc.deliver("bob", &simple_message("first")).unwrap();
    assert_eq!(dc.message_count("bob", "INBOX").unwrap(), 1);

    // NOOP until the new message shows up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = imap.command_ok("NOOP");
        if lines.iter().any(|l| l == "* 1 EXISTS\r\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no EXISTS after NOOP");
        std::thread::sleep(Duration::from_millis(100));
    }
    imap.command_ok("LOGOUT");
}

#[test]
fn crlf_password_reaches_dovecot_which_refuses_it() {
    assert!(testkit::dovecot_accepts_password(NASTY_PASSWORD));
    assert!(!testkit::dovecot_accepts_password(CRLF_PASSWORD));
    let dc = start(DovecotConfig::default().with_user("crlf", CRLF_PASSWORD));
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    let resp = imap.login_literal(b"crlf", CRLF_PASSWORD);
    assert!(resp.starts_with("t1 NO"), "{resp:?}");
    // The literal arrived intact: Dovecot's auth saw the CR/LF and refused by
    // policy rather than the session breaking on a protocol error.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !dc.log().contains("password having illegal chars") {
        assert!(std::time::Instant::now() < deadline, "{}", dc.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The session is still usable and, with the auth penalty disabled, the
    // next login is immediate.
    let t0 = std::time::Instant::now();
    let resp = imap.login_literal(b"alice", b"secret-alice");
    assert!(resp.starts_with("t2 OK"), "{resp:?}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[test]
fn idle_sees_delivery_quickly() {
    let dc = start(DovecotConfig::default());
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    assert!(imap
        .login_literal(b"alice", b"secret-alice")
        .starts_with("t1 OK"));
    imap.command_ok("SELECT INBOX");
    imap.send(b"i IDLE\r\n");
    let cont = imap.read_line();
    assert!(cont.starts_with("+ "), "{cont:?}");
    let t0 = std::time::Instant::now();
    dc.deliver("alice", &simple_message("pushed")).unwrap();
    imap.wait_for_line(Duration::from_secs(10), |l| l == "* 1 EXISTS\r\n");
    let elapsed = t0.elapsed();
    // Dovecot batches ~0.5 s; 30 s would mean the inotify fallback kicked in.
    assert!(elapsed < Duration::from_secs(5), "IDLE took {elapsed:?}");
    imap.send(b"DONE\r\n");
    imap.read_until_tagged("i");
}

#[test]
fn wrong_password_is_rejected() {
    let dc = start(DovecotConfig::default());
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    let resp = imap.login_literal(b"alice", b"wrong");
    assert!(resp.starts_with("t1 NO"), "{resp:?}");
    let resp = imap.login_literal(b"nobody", b"secret-alice");
    assert!(resp.starts_with("t2 NO"), "{resp:?}");
    let resp = imap.login_plain("alice", b"secret-alice");
    assert!(resp.starts_with("t3 OK"), "{resp:?}");
}

fn post_login_capabilities(dc: &Dovecot) -> Vec<String> {
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    let ok = imap.login_literal(b"alice", b"secret-alice");
    assert!(ok.starts_with("t1 OK"), "{ok:?}");
    let lines = imap.command_ok("CAPABILITY");
    let caps = capabilities_in(&lines[0]);
    // The list in the LOGIN response and CAPABILITY agree.
    assert_eq!(capabilities_in(&ok), caps);
    caps
}

#[test]
fn default_capabilities_match_the_builtin_list() {
    // If this fails, the installed Dovecot advertises a different default
    // list and DOVECOT_DEFAULT_CAPABILITIES must be updated.
    let dc = start(DovecotConfig::default());
    assert_eq!(post_login_capabilities(&dc), DOVECOT_DEFAULT_CAPABILITIES);
}

#[test]
fn no_idle_variant_hides_idle_only() {
    let dc = start(DovecotConfig::no_idle());
    let caps = post_login_capabilities(&dc);
    assert!(!caps.iter().any(|c| c == "IDLE"), "{caps:?}");
    let expected: Vec<&str> = DOVECOT_DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| *c != "IDLE")
        .collect();
    assert_eq!(caps, expected);
}

#[test]
fn no_notify_variant_and_generic_hiding() {
    let dc = start(DovecotConfig::no_notify());
    let caps = post_login_capabilities(&dc);
    assert!(!caps.iter().any(|c| c == "NOTIFY"), "{caps:?}");
    assert!(caps.iter().any(|c| c == "IDLE"), "{caps:?}");
    drop(dc);

    let dc = start(DovecotConfig::default().hide_capabilities(&["idle", "NOTIFY", "CONDSTORE"]));
    let caps = post_login_capabilities(&dc);
    for hidden in ["IDLE", "NOTIFY", "CONDSTORE"] {
        assert!(!caps.iter().any(|c| c == hidden), "{hidden} in {caps:?}");
    }
    assert!(caps.iter().any(|c| c == "QRESYNC"), "{caps:?}");
}

#[test]
fn unknown_capability_to_hide_is_a_config_error() {
    let err = Dovecot::start(DovecotConfig::default().hide_capability("XNOPE")).unwrap_err();
    assert!(matches!(err, HarnessError::InvalidConfig(_)), "{err}");
    let err = Dovecot::start(DovecotConfig::default().with_user("a:b", "x")).unwrap_err();
    assert!(matches!(err, HarnessError::InvalidConfig(_)), "{err}");
    let err = Dovecot::start(DovecotConfig::default().with_user("nul", "a\0b")).unwrap_err();
    assert!(matches!(err, HarnessError::InvalidConfig(_)), "{err}");
}

#[test]
fn connection_count_tracks_sessions() {
    let dc = start(DovecotConfig::default().with_user("carol", "pw-carol"));
    assert_eq!(dc.connection_count("alice").unwrap(), 0);
    let mut sessions: Vec<Imap<_>> = (0..3)
        .map(|_| {
            let mut imap = connect_plain(dc.imap_port());
            imap.greeting();
            assert!(imap
                .login_literal(b"alice", b"secret-alice")
                .starts_with("t1 OK"));
            imap
        })
        .collect();
    let mut carol = connect_plain(dc.imap_port());
    carol.greeting();
    assert!(carol
        .login_literal(b"carol", b"pw-carol")
        .starts_with("t1 OK"));
    // A connection that has not logged in does not count.
    let mut anon = connect_plain(dc.imap_port());
    anon.greeting();

    dc.wait_for_connection_count("alice", 3, Duration::from_secs(5))
        .unwrap();
    dc.wait_for_connection_count("carol", 1, Duration::from_secs(5))
        .unwrap();
    // The listing with addresses agrees, and names the client's address.
    let listed = dc.sessions().unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(listed.iter().all(|s| s.protocol == "imap"
        && s.pid.is_some()
        && s.ip == Some(std::net::Ipv4Addr::LOCALHOST.into())));
    sessions.truncate(1);
    dc.wait_for_connection_count("alice", 1, Duration::from_secs(5))
        .unwrap();
    sessions[0].command_ok("LOGOUT");
    dc.wait_for_connection_count("alice", 0, Duration::from_secs(5))
        .unwrap();
    assert_eq!(dc.connection_count("carol").unwrap(), 1);
}

#[test]
fn more_than_ten_sessions_per_user() {
    // mail_max_userip_connections defaults to 10 in Dovecot.
    let dc = start(DovecotConfig::default());
    let sessions: Vec<Imap<_>> = (0..15)
        .map(|i| {
            let mut imap = connect_plain(dc.imap_port());
            imap.greeting();
            let ok = imap.login_literal(b"alice", b"secret-alice");
            assert!(ok.starts_with("t1 OK"), "session {i}: {ok:?}");
            imap
        })
        .collect();
    dc.wait_for_connection_count("alice", 15, Duration::from_secs(5))
        .unwrap();
    drop(sessions);
}

#[test]
fn mailboxes_and_delivery_errors() {
    let dc = start(DovecotConfig::default());
    dc.create_mailbox("alice", "Archive").unwrap();
    dc.create_mailbox("alice", "Späße.Unter").unwrap();
    dc.deliver_to("alice", "Archive", &simple_message("a1"))
        .unwrap();
    dc.deliver_to("alice", "Archive", &simple_message("a2"))
        .unwrap();
    dc.deliver_to("alice", "Späße.Unter", &simple_message("u"))
        .unwrap();
    assert_eq!(dc.message_count("alice", "Archive").unwrap(), 2);
    assert_eq!(dc.message_count("alice", "INBOX").unwrap(), 0);
    assert_eq!(dc.message_count("alice", "Späße.Unter").unwrap(), 1);

    let err = dc
        .deliver_to("alice", "Missing", &simple_message("x"))
        .unwrap_err();
    assert!(matches!(err, HarnessError::Command { .. }), "{err}");
    let err = dc.deliver("nobody", &simple_message("x")).unwrap_err();
    assert!(matches!(err, HarnessError::Command { .. }), "{err}");
    let err = dc.create_mailbox("alice", "Archive").unwrap_err();
    assert!(matches!(err, HarnessError::Command { .. }), "{err}");

    // The client sees the folders.
    let mut imap = connect_plain(dc.imap_port());
    imap.greeting();
    assert!(imap
        .login_literal(b"alice", b"secret-alice")
        .starts_with("t1 OK"));
    let lines = imap.command_ok("STATUS Archive (MESSAGES)");
    assert!(lines[0].contains("MESSAGES 2"), "{lines:?}");
}
