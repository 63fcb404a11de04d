//! Transcript tests: a session against scripted server bytes, in virtual time.
//!
//! `S:` lines are fed to the session; the `C:` bytes it sends and the events it reports are
//! checked after each step. Every transcript also runs with the server bytes fed one byte at
//! a time and in random chunks, and must give the same result (split invariance).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use engine::session::{Phase, Ready, Session, SessionConfig, SessionEvent};
use engine::{
    EndReason, ProtocolError, Secret, Security, Since, Tick, TlsFailure, Waiting, WatchSpec,
};
use imap_codec_lite::{FrameError, MAX_LINE_LEN};
use zeroize::Zeroizing;

mod support;
use support::{Driver, Split, SPLITS};

/// Most steps a driver takes when running to a deadline: a livelock fails fast.
const STEPS_MAX: usize = 1_000_000;

fn spec(password: &[u8]) -> WatchSpec {
    WatchSpec {
        host: "imap.example.org".into(),
        port: 993,
        security: Security::Tls,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(password.to_vec())),
        mailboxes: vec!["INBOX".into()],
        since: None,
    }
}

const CAPS_PLAIN: &str = "IMAP4rev1 SASL-IR LITERAL+ IDLE AUTH=PLAIN";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Logs in with AUTH=PLAIN + SASL-IR and opens INBOX; leaves the session in IDLE.
fn to_idle(d: &mut Driver) {
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    let ir = b64(b"\0alice\0secret");
    d.c(format!("A1 AUTHENTICATE PLAIN {ir}\r\n").as_bytes());
    assert!(
        !d.session.holds_secret(),
        "secret kept after the login was sent"
    );
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE NOTIFY] Logged in\r\n");
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"* FLAGS (\\Answered \\Seen)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n");
    d.s(b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n* OK [UIDNEXT 4] next\r\n");
    d.s(b"A2 OK [READ-ONLY] Examine completed\r\n");
    d.c(b"A3 IDLE\r\n");
    assert!(
        d.take_events().is_empty(),
        "Ready waits for IDLE to be accepted"
    );
    d.s(b"+ idling\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ready(Ready {
            idle: true,
            notify: true,
            exists: 3,
            uidvalidity: 1_700_000_000,
            uidnext: 4
        })]
    );
    assert_eq!(d.session.phase(), Phase::Idling);
}

#[test]
fn login_examine_idle_and_new_mail() {
    for split in SPLITS {
        let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), split);
        to_idle(&mut d);
        // Keepalives, flag changes and unknown responses are no news.
        d.s(b"* OK Still here\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* XUNKNOWN {3}\r\nabc\r\n");
        assert!(d.take_events().is_empty());
        d.s(b"* 4 EXISTS\r\n");
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 0,
                exists: 4,
                preview: None
            }]
        );
        // An EXISTS that does not raise the count is not new mail.
        d.s(b"* 4 EXISTS\r\n");
        assert!(d.take_events().is_empty());
        // One expunged, then one new: 4 -> 3 -> 4 is new mail.
        d.s(b"* 2 EXPUNGE\r\n* 4 EXISTS\r\n");
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 0,
                exists: 4,
                preview: None
            }]
        );
        // Two expunged, one new: 4 -> 2 -> 3 is new mail too; 3 -> 3 is not.
        d.s(b"* 1 EXPUNGE\r\n* 1 EXPUNGE\r\n* 3 EXISTS\r\n* 3 EXISTS\r\n");
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 0,
                exists: 3,
                preview: None
            }]
        );
        d.c(b"");
        assert_eq!(d.pool.lent(), 0, "an idle session must hold no buffer");
    }
}

#[test]
fn a_partial_response_borrows_one_buffer_until_complete() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    to_idle(&mut d);
    d.s(b"* 5 EXI");
    assert_eq!(d.pool.lent(), 1);
    d.s(b"STS\r\n");
    assert_eq!(d.pool.lent(), 0);
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::NewMail {
            mailbox: 0,
            exists: 5,
            preview: None
        }]
    );
}

#[test]
fn login_with_sync_literals_waits_for_continuations() {
    // No LITERAL+, no AUTH=PLAIN: LOGIN with synchronizing literals for a password with
    // quotes, backslash, a fake literal and CRLF.
    let password = b"p\"w \\ {5}\r\nA9 LOGOUT";
    for split in SPLITS {
        let mut d = Driver::new(spec(password), SessionConfig::default(), split);
        d.s(b"* OK IMAP4rev1 ready\r\n");
        d.c(b"A1 CAPABILITY\r\n");
        d.s(b"* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK done\r\n");
        let sent = std::mem::take(&mut d.sent);
        let first = format!("A2 LOGIN alice {{{}}}\r\n", password.len());
        assert_eq!(String::from_utf8_lossy(&sent), first);
        assert!(d.session.holds_secret());
        d.s(b"+ go ahead\r\n");
        let mut rest = password.to_vec();
        rest.extend_from_slice(b"\r\n");
        assert_eq!(d.sent, rest);
        d.sent.clear();
        assert!(!d.session.holds_secret());
        for buf in d.session.buffers() {
            assert!(
                !contains(buf, password),
                "password left in a session buffer"
            );
        }
        d.s(b"A2 OK Logged in\r\n");
        d.c(b"A3 CAPABILITY\r\n");
    }
}

#[test]
fn the_secret_is_gone_from_every_session_buffer_after_login() {
    let password = b"unique-password-\xc3\xa9-42";
    let mut d = Driver::new(spec(password), SessionConfig::default(), Split::Whole);
    assert!(d.session.buffers().any(|b| contains(b, password)));
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    assert!(d.sent.starts_with(b"A1 AUTHENTICATE PLAIN "));
    assert!(!d.session.holds_secret());
    for buf in d.session.buffers() {
        assert!(!contains(buf, password));
    }
    // The driver's transmit buffer was zeroized after sending, as the reactor does.
    assert!(d.tx.iter().all(|&b| b == 0));
}

#[test]
fn wrong_password_ends_with_auth_rejected() {
    let mut d = Driver::new(spec(b"wrong"), SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.sent.clear();
    d.s(b"A1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::AuthRejected)]
    );
    assert!(d.session.is_ended());
}

#[test]
fn xoauth2_error_challenge_is_acknowledged() {
    let mut s = spec(b"");
    s.secret = Secret::OAuth2Token(Zeroizing::new(b"ya29.token".to_vec()));
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 IDLE] ready\r\n");
    let ir = b64(b"user=alice\x01auth=Bearer ya29.token\x01\x01");
    d.c(format!("A1 AUTHENTICATE XOAUTH2 {ir}\r\n").as_bytes());
    d.s(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n");
    d.c(b"\r\n");
    d.s(b"A1 NO [AUTHENTICATIONFAILED] Invalid credentials\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::AuthRejected)]
    );
}

#[test]
fn oauth_without_a_mechanism_is_auth_unavailable() {
    let mut s = spec(b"");
    s.secret = Secret::OAuth2Token(Zeroizing::new(b"tok".to_vec()));
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::AuthUnavailable)]
    );
}

#[test]
fn starttls_upgrades_before_login_and_refuses_injection() {
    let mut s = spec(b"secret");
    s.security = Security::StartTls;
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n");
    d.c(b"A1 STARTTLS\r\n");
    d.s(b"A1 OK Begin TLS negotiation now.\r\n");
    assert!(d.session.wants_tls());
    d.session.handle_tls_established(d.now);
    d.collect();
    d.c(b"A2 CAPABILITY\r\n");
    d.s(format!("* CAPABILITY {CAPS_PLAIN}\r\nA2 OK done\r\n").as_bytes());
    assert!(d.sent.starts_with(b"A3 AUTHENTICATE PLAIN "));

    // A plaintext response smuggled behind the OK must not be acted on.
    let mut s = spec(b"secret");
    s.security = Security::StartTls;
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n");
    d.sent.clear();
    d.s(b"A1 OK Begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::StartTlsInjection
        ))]
    );
}

#[test]
fn starttls_not_offered_is_refused_not_downgraded() {
    let mut s = spec(b"secret");
    s.security = Security::StartTls;
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.c(b"");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Tls(
            TlsFailure::StartTlsRefused
        ))]
    );
}

#[test]
fn idle_is_reissued_before_29_minutes_for_ten_days() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    to_idle(&mut d);
    let ten_days = Tick::ZERO + Duration::from_secs(10 * 24 * 3600);
    let mut last_idle = d.now;
    let mut refreshes = 0u32;
    let mut tag = 3u32;
    for _ in 0..STEPS_MAX {
        d.run_to_next_deadline(ten_days);
        if d.now >= ten_days {
            break;
        }
        // The refresh: DONE, answered at once, then a new IDLE.
        d.c(b"DONE\r\n");
        let gap = d.now.since(last_idle);
        assert!(gap < Duration::from_secs(29 * 60), "IDLE ran {gap:?}");
        assert!(
            gap >= cfg.idle_refresh - cfg.idle_refresh_jitter,
            "refresh too early: {gap:?}"
        );
        d.s(format!("A{tag} OK Idle completed\r\n").as_bytes());
        tag += 1;
        d.c(format!("A{tag} IDLE\r\n").as_bytes());
        d.s(b"+ idling\r\n");
        last_idle = d.now;
        refreshes += 1;
        assert!(d.take_events().is_empty());
    }
    assert!(d.now >= ten_days, "livelock: {STEPS_MAX} steps");
    // 10 days / 22..24 minutes.
    assert!((600..=655).contains(&refreshes), "{refreshes} refreshes");
}

#[test]
fn unanswered_done_ends_the_session_at_the_response_deadline() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    to_idle(&mut d);
    let refresh_at = d.run_to_next_deadline(Tick::NEVER);
    d.c(b"DONE\r\n");
    let end_at = d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(end_at.since(refresh_at), cfg.response_timeout);
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Timeout(Waiting::Done))]
    );
}

#[test]
fn servers_without_idle_are_polled_with_noop() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    d.s(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED] ready\r\n");
    // No SASL-IR: the initial response waits for a continuation.
    d.c(b"A1 AUTHENTICATE PLAIN\r\n");
    assert!(d.session.holds_secret());
    d.s(b"+ \r\n");
    d.c(format!("{}\r\n", b64(b"\0alice\0secret")).as_bytes());
    assert!(!d.session.holds_secret());
    d.s(b"A1 OK [CAPABILITY IMAP4rev1] Logged in\r\n");
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"* 0 EXISTS\r\nA2 OK [READ-ONLY] done\r\n");
    d.c(b"");
    let start = d.now;
    for (tag, poll) in (3..).zip(1..=100u64) {
        d.run_to_next_deadline(Tick::NEVER);
        assert_eq!(d.now.since(start), cfg.poll_interval * poll as u32);
        d.c(format!("A{tag} NOOP\r\n").as_bytes());
        if poll == 50 {
            d.s(b"* 1 EXISTS\r\n");
        }
        d.s(format!("A{tag} OK NOOP completed\r\n").as_bytes());
    }
    let events = d.take_events();
    assert!(matches!(
        events[0],
        SessionEvent::Ready(Ready { idle: false, .. })
    ));
    assert_eq!(
        events[1..],
        [SessionEvent::NewMail {
            mailbox: 0,
            exists: 1,
            preview: None
        }]
    );
}

/// Opens INBOX (3 messages, UIDVALIDITY 2, UIDNEXT 4) with a baseline and returns the events.
fn open_with_baseline(since: Since) -> Vec<SessionEvent> {
    let mut s = spec(b"secret");
    s.since = Some(since);
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    d.s(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 2] ok\r\n* OK [UIDNEXT 4] next\r\nA2 OK done\r\n");
    assert!(d.sent.ends_with(b"A2 EXAMINE INBOX\r\nA3 IDLE\r\n"));
    // Mail that arrives before IDLE is accepted is held back until Ready.
    d.s(b"* 4 EXISTS\r\n");
    assert!(d.take_events().is_empty());
    d.s(b"+ idling\r\n");
    d.take_events()
}

#[test]
fn baseline_decides_whether_there_is_mail_already() {
    let ready = |e: &SessionEvent| matches!(e, SessionEvent::Ready(_));
    let since = |uidvalidity, uidnext| Since {
        uidvalidity,
        uidnext,
    };
    // Same UIDVALIDITY, same UIDNEXT: only the mail that came during setup is new.
    let events = open_with_baseline(since(2, 4));
    assert!(ready(&events[0]), "{events:?}");
    assert_eq!(
        events[1..],
        [SessionEvent::NewMail {
            mailbox: 0,
            exists: 4,
            preview: None
        }]
    );
    // A higher UIDNEXT than the app saw: new mail, after Ready.
    let events = open_with_baseline(since(2, 3));
    assert!(ready(&events[0]));
    assert_eq!(
        events[1..],
        [SessionEvent::NewMail {
            mailbox: 0,
            exists: 4,
            preview: None
        }]
    );
    // Another UIDVALIDITY: the app's view is void, tell it to sync.
    let events = open_with_baseline(since(1, 4));
    assert_eq!(
        events[1..],
        [SessionEvent::NewMail {
            mailbox: 0,
            exists: 4,
            preview: None
        }]
    );
}

#[test]
fn baseline_alone_reports_new_mail_once_ready() {
    let mut s = spec(b"secret");
    s.since = Some(Since {
        uidvalidity: 2,
        uidnext: 3,
    });
    let mut d = Driver::new(s, SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    d.s(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 2] ok\r\n* OK [UIDNEXT 4] next\r\nA2 OK done\r\n");
    assert!(d.take_events().is_empty());
    d.s(b"+ idling\r\n");
    let events = d.take_events();
    assert!(matches!(events[0], SessionEvent::Ready(_)));
    assert_eq!(
        events[1..],
        [SessionEvent::NewMail {
            mailbox: 0,
            exists: 3,
            preview: None
        }]
    );
}

#[test]
fn bye_ends_the_session() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    to_idle(&mut d);
    d.s(b"* BYE Server shutting down.\r\n");
    assert_eq!(d.take_events(), vec![SessionEvent::Ended(EndReason::Bye)]);
    assert_eq!(d.session.poll_timeout(), Tick::NEVER);
}

#[test]
fn unwatch_in_idle_sends_done_and_logout() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    to_idle(&mut d);
    d.session.handle_close(d.now, EndReason::Unwatched);
    d.collect();
    d.c(b"DONE\r\nA4 LOGOUT\r\n");
    d.s(b"A3 OK Idle completed\r\n* BYE Logging out\r\n");
    assert!(d.take_events().is_empty());
    d.s(b"A4 OK Logout completed\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Unwatched)]
    );
}

#[test]
fn a_silent_logout_still_ends_with_our_reason() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    to_idle(&mut d);
    d.session.handle_close(d.now, EndReason::Shutdown);
    d.collect();
    let start = d.now;
    d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(d.now.since(start), cfg.logout_timeout);
    let events = d.take_events();
    assert_eq!(events, vec![SessionEvent::Ended(EndReason::Shutdown)]);
}

#[test]
fn connect_and_greeting_deadlines() {
    let cfg = SessionConfig::default();
    let mut s = Session::new(Tick::ZERO, Arc::new(cfg), spec(b"x"), 1);
    assert_eq!(s.poll_timeout(), Tick::ZERO + cfg.connect_timeout);
    s.handle_timeout(Tick::ZERO + cfg.connect_timeout);
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Ended(EndReason::Timeout(Waiting::Connect)))
    );

    let mut d = Driver::new(spec(b"x"), cfg, Split::Whole);
    // A spurious timeout call is a no-op.
    d.session.handle_timeout(d.now);
    assert!(d.take_events().is_empty());
    d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Timeout(Waiting::Greeting))]
    );
}

#[test]
fn preauth_greeting_skips_login() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    d.s(b"* PREAUTH [CAPABILITY IMAP4rev1 IDLE] welcome\r\n");
    assert!(!d.session.holds_secret());
    d.c(b"A1 CAPABILITY\r\n");
    d.s(b"* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK done\r\n");
    d.c(b"A2 EXAMINE INBOX\r\n");
}

#[test]
fn a_line_just_past_the_limit_ends_the_session() {
    // A line of exactly MAX_LINE_LEN bytes (CRLF included) is kept.
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    to_idle(&mut d);
    let mut line = b"* OK ".to_vec();
    line.resize(MAX_LINE_LEN - 2, b'x');
    line.extend_from_slice(b"\r\n");
    d.s(&line);
    assert!(d.take_events().is_empty());
    assert!(!d.session.is_ended());
    // One byte more is a protocol error, without waiting for the line to end.
    let mut line = b"* OK ".to_vec();
    line.resize(MAX_LINE_LEN + 1, b'x');
    d.s(&line);
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::Frame(FrameError::LineTooLong {
                limit: MAX_LINE_LEN
            })
        ))]
    );
    assert_eq!(d.pool.lent(), 0, "an ended session returns its buffer");
}

#[test]
fn a_tagged_response_to_nothing_is_a_protocol_error() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    to_idle(&mut d);
    d.s(b"A99 OK what?\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::UnexpectedTag
        ))]
    );
}

#[test]
fn idle_refused_ends_the_session() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    d.s(b"* 0 EXISTS\r\nA2 OK done\r\n");
    d.s(b"A3 NO IDLE not now\r\n");
    // Never ready: the session failed.
    assert!(!d.session.was_ready());
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::IdleRejected
        ))]
    );
}

#[test]
fn a_missing_mailbox_is_mailbox_rejected() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.s(b"A1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
    d.s(b"A2 NO [NONEXISTENT] Mailbox doesn't exist: INBOX\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::MailboxRejected)]
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_slow_drip_response_is_cut_off_at_its_deadline() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    to_idle(&mut d);
    let start = d.now;
    // One byte of a response every 10 s: the response as a whole gets 60 s.
    let drip = b"* OK still dripping";
    for byte in drip.iter() {
        d.now = d.now + Duration::from_secs(10);
        if d.session.poll_timeout() <= d.now {
            break;
        }
        d.s(&[*byte]);
    }
    d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(
        d.now.since(start),
        Duration::from_secs(10) + cfg.partial_response_timeout
    );
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Timeout(
            Waiting::ResponseEnd
        ))]
    );
    // As the reactor does with every ended session.
    d.session.release(&mut d.pool);
    assert_eq!(d.pool.lent(), 0);
}

#[test]
fn complete_responses_clear_the_partial_deadline() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec(b"secret"), cfg, Split::Whole);
    to_idle(&mut d);
    d.s(b"* OK Still");
    assert!(d.session.poll_timeout() <= d.now + cfg.partial_response_timeout);
    d.s(b" here\r\n");
    // Back to the IDLE refresh as the only deadline.
    assert!(d.session.poll_timeout() > d.now + cfg.partial_response_timeout);
}

fn spec_with(mailboxes: &[&str]) -> WatchSpec {
    let mut s = spec(b"secret");
    s.mailboxes = mailboxes.iter().map(|m| m.to_string()).collect();
    s
}

/// Logs in with the given post-login capabilities and answers EXAMINE.
fn open(d: &mut Driver, caps: &str) {
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.sent.clear();
    d.s(format!("A1 OK [CAPABILITY {caps}] Logged in\r\n").as_bytes());
}

#[test]
fn several_mailboxes_with_notify_on_one_connection() {
    for split in SPLITS {
        let mut d = Driver::new(
            spec_with(&["INBOX", "Sent", "Entw\u{fc}rfe"]),
            SessionConfig::default(),
            split,
        );
        open(&mut d, "IMAP4rev1 IDLE NOTIFY ID");
        d.c(b"A2 ID (\"name\" \"imap-push-proxy\" \"version\" \"0.1.0\")\r\n");
        d.s(b"* ID NIL\r\nA2 OK ID completed\r\n");
        d.c(b"A3 EXAMINE INBOX\r\n");
        d.s(b"* 2 EXISTS\r\nA3 OK [READ-ONLY] done\r\n");
        d.c(b"A4 STATUS Sent (MESSAGES UIDNEXT)\r\n");
        d.s(b"* STATUS Sent (MESSAGES 5 UIDNEXT 6)\r\nA4 OK done\r\n");
        d.c(b"A5 STATUS \"Entw&APw-rfe\" (MESSAGES UIDNEXT)\r\n");
        d.s(b"* STATUS \"Entw&APw-rfe\" (MESSAGES 0 UIDNEXT 1)\r\nA5 OK done\r\n");
        // A non-ASCII name: watched as PERSONAL (Dovecot 2.3 ignores such names in MAILBOXES).
        d.c(b"A6 NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew MessageExpunge))\r\n");
        d.s(b"A6 OK NOTIFY completed\r\n");
        d.c(b"A7 IDLE\r\n");
        assert!(d.take_events().is_empty(), "Ready waits for IDLE");
        d.s(b"+ idling\r\n");
        assert!(matches!(d.take_events()[..], [SessionEvent::Ready(_)]));
        // The server reports the other mailboxes with STATUS.
        // PERSONAL reports mailboxes we do not watch: ignored.
        d.s(b"* STATUS Junk (MESSAGES 9 UIDNEXT 99)\r\n");
        assert!(d.take_events().is_empty());
        // Dovecot names the folder in raw UTF-8, as a literal.
        d.s("* STATUS {9}\r\nEntw\u{fc}rfe (MESSAGES 1 UIDNEXT 2)\r\n".as_bytes());
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 2,
                exists: 1,
                preview: None
            }]
        );
        d.s(b"* STATUS Sent (MESSAGES 4 UIDNEXT 6)\r\n");
        assert!(d.take_events().is_empty(), "an expunge is not new mail");
        d.s(b"* STATUS Sent (MESSAGES 5 UIDNEXT 7)\r\n* 3 EXISTS\r\n");
        // Fed at once, lowest mailbox first; fed in pieces, in arrival order.
        let mut events = d.take_events();
        events.sort_by_key(|e| match e {
            SessionEvent::NewMail { mailbox, .. } => *mailbox,
            _ => usize::MAX,
        });
        assert_eq!(
            events,
            vec![
                SessionEvent::NewMail {
                    mailbox: 0,
                    exists: 3,
                    preview: None
                },
                SessionEvent::NewMail {
                    mailbox: 1,
                    exists: 5,
                    preview: None
                }
            ]
        );
        // No STATUS polling while NOTIFY works: the next deadline is the IDLE refresh.
        let refresh_at = d.run_to_next_deadline(Tick::NEVER);
        assert!(refresh_at.since(Tick::ZERO) > Duration::from_secs(20 * 60));
        d.c(b"DONE\r\n");
    }
}

#[test]
fn without_notify_the_other_mailboxes_are_polled_with_status_between_idles() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec_with(&["INBOX", "Sent"]), cfg, Split::Whole);
    open(&mut d, "IMAP4rev1 IDLE");
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"* 0 EXISTS\r\nA2 OK done\r\n");
    d.c(b"A3 STATUS Sent (MESSAGES UIDNEXT)\r\n");
    d.s(b"* STATUS Sent (MESSAGES 1 UIDNEXT 2)\r\nA3 OK done\r\n");
    d.c(b"A4 IDLE\r\n");
    d.s(b"+ idling\r\n");
    d.take_events();
    let mut tag = 5;
    for round in 1..=3u32 {
        let before = d.now;
        d.run_to_next_deadline(Tick::NEVER);
        assert_eq!(d.now.since(before), cfg.poll_interval);
        d.c(b"DONE\r\n");
        d.s(format!("A{} OK Idle completed\r\n", tag - 1).as_bytes());
        d.c(format!("A{tag} STATUS Sent (MESSAGES UIDNEXT)\r\n").as_bytes());
        let n = 1 + round;
        d.s(format!(
            "* STATUS Sent (MESSAGES {n} UIDNEXT {})\r\nA{tag} OK done\r\n",
            n + 1
        )
        .as_bytes());
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 1,
                exists: n,
                preview: None
            }]
        );
        d.c(format!("A{} IDLE\r\n", tag + 1).as_bytes());
        d.s(b"+ idling\r\n");
        tag += 2;
    }
}

#[test]
fn a_refused_notify_falls_back_to_status_polling() {
    let cfg = SessionConfig::default();
    let mut d = Driver::new(spec_with(&["INBOX", "Sent"]), cfg, Split::Whole);
    open(&mut d, "IMAP4rev1 IDLE NOTIFY");
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"A2 OK done\r\n");
    d.s(b"* STATUS Sent (MESSAGES 1 UIDNEXT 2)\r\nA3 OK done\r\n");
    d.sent.clear();
    d.s(b"A4 NO [NOTIFICATIONOVERFLOW] not now\r\n");
    d.c(b"A5 IDLE\r\n");
    d.s(b"+ idling\r\n");
    let before = d.now;
    d.run_to_next_deadline(Tick::NEVER);
    assert_eq!(d.now.since(before), cfg.poll_interval, "polling instead");
    d.c(b"DONE\r\n");
}

#[test]
fn notification_overflow_catches_up_and_sets_notify_again() {
    let mut d = Driver::new(
        spec_with(&["INBOX", "Sent"]),
        SessionConfig::default(),
        Split::Whole,
    );
    open(&mut d, "IMAP4rev1 IDLE NOTIFY");
    for answer in [
        &b"A2 OK done\r\n"[..],
        b"* STATUS Sent (MESSAGES 1 UIDNEXT 2)\r\nA3 OK done\r\n",
        b"A4 OK done\r\n",
        b"+ idling\r\n",
    ] {
        d.s(answer);
    }
    d.sent.clear();
    d.take_events();
    d.s(b"* OK [NOTIFICATIONOVERFLOW] too much\r\n");
    d.c(b"DONE\r\n");
    d.s(b"A5 OK Idle completed\r\n");
    d.c(b"A6 STATUS Sent (MESSAGES UIDNEXT)\r\n");
    d.s(b"* STATUS Sent (MESSAGES 9 UIDNEXT 10)\r\nA6 OK done\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::NewMail {
            mailbox: 1,
            exists: 9,
            preview: None
        }]
    );
    d.c(b"A7 NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (MAILBOXES (Sent) (MessageNew MessageExpunge))\r\n");
    d.s(b"A7 OK done\r\n");
    d.c(b"A8 IDLE\r\n");
}

#[test]
fn a_missing_extra_mailbox_fails_setup() {
    let mut d = Driver::new(
        spec_with(&["INBOX", "Nope"]),
        SessionConfig::default(),
        Split::Whole,
    );
    open(&mut d, "IMAP4rev1 IDLE");
    d.s(b"A2 OK done\r\n");
    d.s(b"A3 NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::MailboxRejected)]
    );
}

#[test]
fn answers_to_commands_not_yet_sent_are_a_protocol_error() {
    // A server guessing our next tags and answering ahead must not drive the session.
    let mut d = Driver::new(
        spec_with(&["INBOX", "Sent"]),
        SessionConfig::default(),
        Split::Whole,
    );
    open(&mut d, "IMAP4rev1 IDLE NOTIFY");
    d.s(b"A2 OK done\r\nA3 OK done\r\nA4 OK done\r\nA5 OK done\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::UnexpectedTag
        ))]
    );
}

#[test]
fn continuations_pushed_during_login_end_the_session_once() {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n").as_bytes());
    d.sent.clear();
    // One error challenge is answered with a cancel; the next `+` is pushing.
    d.s(b"+ more\r\n");
    d.c(b"*\r\n");
    d.s(b"+ more\r\n+ more\r\n+ more\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::UnexpectedContinuation
        ))]
    );
    // And several at once, before we could answer the first: ended, no panic.
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), Split::Whole);
    d.s(format!("* OK [CAPABILITY {CAPS_PLAIN}] ready\r\n+ a\r\n+ b\r\n+ c\r\n").as_bytes());
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Protocol(
            ProtocolError::UnexpectedContinuation
        ))]
    );
}

/// Feeds an untagged FETCH with a literal of `len` bytes the session never asked for, in
/// pieces, checking after each that no buffer holds it; then checks that the session goes
/// on (new mail after it is reported).
fn unwanted_literal_is_skipped(split: Split, len: usize) {
    let mut d = Driver::new(spec(b"secret"), SessionConfig::default(), split);
    to_idle(&mut d);
    d.s(format!("* 2 FETCH (FLAGS (\\Seen) BODY[] {{{len}}}\r\n").as_bytes());
    let piece = [b'x'; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len());
        d.s(&piece[..n]);
        left -= n;
        assert_eq!(
            d.pool.lent(),
            0,
            "{split:?}: the literal is kept, {left} left"
        );
    }
    d.s(b")\r\n* 4 EXISTS\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::NewMail {
            mailbox: 0,
            exists: 4,
            preview: None
        }],
        "{split:?}"
    );
    assert_eq!(d.pool.lent(), 0);
}

#[test]
fn unwanted_literals_are_counted_down_not_buffered() {
    for split in SPLITS {
        unwanted_literal_is_skipped(split, 60_000);
    }
}

#[test]
fn an_unwanted_literal_over_the_limit_is_skipped_not_fatal() {
    // 1 MB: past MAX_LITERAL_LEN and MAX_MESSAGE_LEN.
    unwanted_literal_is_skipped(Split::Whole, 1 << 20);
    unwanted_literal_is_skipped(Split::Random(99), 1 << 20);
}

/// A STATUS response may name its mailbox with a literal: that literal is wanted (not
/// skipped with the unwanted ones), and the count it brings is news.
#[test]
fn a_status_mailbox_name_as_a_literal_is_still_read() {
    for split in SPLITS {
        let mut d = Driver::new(
            spec_with(&["INBOX", "Sent"]),
            SessionConfig::default(),
            split,
        );
        open(&mut d, "IMAP4rev1 IDLE");
        d.c(b"A2 EXAMINE INBOX\r\n");
        d.s(b"* 0 EXISTS\r\nA2 OK done\r\n");
        d.c(b"A3 STATUS Sent (MESSAGES UIDNEXT)\r\n");
        d.s(b"* STATUS {4}\r\nSent (MESSAGES 1 UIDNEXT 2)\r\nA3 OK done\r\n");
        d.c(b"A4 IDLE\r\n");
        d.s(b"+ idling\r\n");
        d.take_events();
        d.run_to_next_deadline(Tick::NEVER);
        d.c(b"DONE\r\n");
        d.s(b"A4 OK Idle completed\r\n");
        d.c(b"A5 STATUS Sent (MESSAGES UIDNEXT)\r\n");
        d.s(b"* STATUS {4}\r\nSent (MESSAGES 2 UIDNEXT 3)\r\nA5 OK done\r\n");
        assert_eq!(
            d.take_events(),
            vec![SessionEvent::NewMail {
                mailbox: 1,
                exists: 2,
                preview: None
            }],
            "{split:?}"
        );
    }
}
