//! Transcript tests for filters and previews: when the selected mailbox grows, the session
//! ends IDLE (or waits for NOOP's answer), fetches the new messages' header fields with
//! `UID FETCH <uidnext>:* (UID BODY.PEEK[HEADER.FIELDS (...)])`, reports only what matched,
//! and idles again. Every transcript also runs with the server bytes fed one byte at a time
//! and in random chunks (split invariance).

use std::sync::Arc;

use engine::session::{MessageSummary, Phase, Preview, Session, SessionConfig, SessionEvent};
use engine::{EndReason, Filter, Secret, Security, Since, Tick, WatchOptions, WatchSpec};
use zeroize::Zeroizing;

fn spec(since: Option<Since>) -> WatchSpec {
    WatchSpec {
        host: "imap.example.org".into(),
        port: 993,
        security: Security::Tls,
        username: "alice".into(),
        secret: Secret::Password(Zeroizing::new(b"secret".to_vec())),
        mailboxes: vec!["INBOX".into()],
        since,
    }
}

fn chat_filter() -> Option<Filter> {
    Some(Filter {
        headers: vec!["Chat-Version".into()],
        senders: vec![],
    })
}

mod support;
use support::{Driver, Split, SPLITS};

/// A driver for a session with watch options (filter, preview).
fn driver(spec: WatchSpec, options: WatchOptions, split: Split) -> Driver {
    options.validate().expect("valid options");
    let cfg = Arc::new(SessionConfig::default());
    Driver::with_session(
        Session::with_options(Tick::ZERO, cfg, spec, options, 7),
        split,
    )
}

/// Logs in (capabilities `caps` after login) and opens INBOX with 3 messages and UIDNEXT 4.
/// With IDLE, leaves the session idling and checks Ready.
fn open(d: &mut Driver, caps: &str) {
    d.s(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ AUTH=PLAIN] ready\r\n");
    d.sent.clear();
    d.s(format!("A1 OK [CAPABILITY {caps}] Logged in\r\n").as_bytes());
    d.c(b"A2 EXAMINE INBOX\r\n");
    d.s(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 1700000000] ok\r\n* OK [UIDNEXT 4] next\r\n");
    d.s(b"A2 OK [READ-ONLY] Examine completed\r\n");
}

fn to_idle(d: &mut Driver) {
    open(d, "IMAP4rev1 IDLE");
    d.c(b"A3 IDLE\r\n");
    d.s(b"+ idling\r\n");
    assert!(matches!(d.take_events()[..], [SessionEvent::Ready(_)]));
    assert_eq!(d.session.phase(), Phase::Idling);
}

/// `* seq FETCH (UID uid BODY[HEADER.FIELDS (...)] {n}\r\n<block>)\r\n`
fn fetch_literal(seq: u32, uid: u32, fields: &str, block: &str) -> String {
    format!(
        "* {seq} FETCH (UID {uid} BODY[HEADER.FIELDS ({fields})] {{{}}}\r\n{block})\r\n",
        block.len()
    )
}

fn new_mail(exists: u32, preview: Option<Vec<(u32, &str, &str)>>) -> SessionEvent {
    SessionEvent::NewMail {
        mailbox: 0,
        exists,
        preview: preview.map(|messages| {
            Box::new(Preview {
                messages: messages
                    .into_iter()
                    .map(|(uid, from, subject)| MessageSummary {
                        uid,
                        from: from.into(),
                        subject: subject.into(),
                    })
                    .collect(),
            })
        }),
    }
}

const CHAT_FETCH: &str = "UID BODY.PEEK[HEADER.FIELDS (CHAT-VERSION)]<0.16384>)\r\n";

#[test]
fn a_filter_reports_only_matching_messages_and_fetches_each_uid_once() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: chat_filter(),
            preview: false,
        };
        let mut d = driver(spec(None), options, split);
        to_idle(&mut d);
        // A plain message: IDLE ends, its header field is fetched, nothing is reported.
        d.s(b"* 4 EXISTS\r\n");
        assert!(d.take_events().is_empty(), "not reported before the fetch");
        d.c(b"DONE\r\n");
        d.s(b"A3 OK Idle completed\r\n");
        d.c(format!("A4 UID FETCH 4:* ({CHAT_FETCH}").as_bytes());
        assert_eq!(d.session.phase(), Phase::Fetching);
        d.s(fetch_literal(4, 4, "CHAT-VERSION", "\r\n").as_bytes());
        d.s(b"A4 OK Fetch completed\r\n");
        assert!(d.take_events().is_empty(), "no match, no report");
        d.c(b"A5 IDLE\r\n");
        d.s(b"+ idling\r\n");
        // A chat message: fetched from UIDNEXT 5, reported.
        d.s(b"* 5 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A5 OK Idle completed\r\n");
        d.c(format!("A6 UID FETCH 5:* ({CHAT_FETCH}").as_bytes());
        let block = "Chat-Version: 1.0\r\n\r\n";
        d.s(fetch_literal(5, 5, "CHAT-VERSION", block).as_bytes());
        d.s(b"A6 OK Fetch completed\r\n");
        assert_eq!(d.take_events(), vec![new_mail(5, None)]);
        d.c(b"A7 IDLE\r\n");
        d.s(b"+ idling\r\n");
        // Two at once, one matching (the header in another case): one report. `6:*`
        // would also return the last message were it older; it is not fetched twice.
        d.s(b"* 7 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A7 OK Idle completed\r\n");
        d.c(format!("A8 UID FETCH 6:* ({CHAT_FETCH}").as_bytes());
        d.s(fetch_literal(6, 6, "CHAT-VERSION", "chat-version: 1\r\n\r\n").as_bytes());
        d.s(b"* 7 FETCH (UID 7 BODY[HEADER.FIELDS (CHAT-VERSION)] NIL)\r\n");
        d.s(b"A8 OK Fetch completed\r\n");
        assert_eq!(d.take_events(), vec![new_mail(7, None)]);
        d.c(b"A9 IDLE\r\n");
        d.s(b"+ idling\r\n");
        // An expunge and a new message: `8:*` returns only the old last message (UID 7).
        d.s(b"* 1 EXPUNGE\r\n* 7 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A9 OK Idle completed\r\n");
        d.c(format!("A10 UID FETCH 8:* ({CHAT_FETCH}").as_bytes());
        d.s(fetch_literal(6, 7, "CHAT-VERSION", "Chat-Version: 1\r\n\r\n").as_bytes());
        d.s(b"A10 OK Fetch completed\r\n");
        assert!(d.take_events().is_empty(), "a UID below the start is old");
        d.c(b"A11 IDLE\r\n");
        d.s(b"+ idling\r\n");
        assert_eq!(d.pool.lent(), 0, "an idle session holds no buffer");
    }
}

#[test]
fn a_sender_filter_matches_the_from_address_in_any_case() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: Some(Filter {
                headers: vec![],
                senders: vec!["boss@example.org".into()],
            }),
            preview: false,
        };
        let mut d = driver(spec(None), options, split);
        to_idle(&mut d);
        d.s(b"* 5 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A3 OK done\r\n");
        d.c(b"A4 UID FETCH 4:* (UID BODY.PEEK[HEADER.FIELDS (FROM)]<0.16384>)\r\n");
        d.s(fetch_literal(4, 4, "FROM", "From: x <boss@example.org.evil>\r\n\r\n").as_bytes());
        d.s(fetch_literal(
            5,
            5,
            "FROM",
            "From: The Boss\r\n <Boss@EXAMPLE.org>\r\n\r\n",
        )
        .as_bytes());
        d.s(b"A4 OK done\r\n");
        assert_eq!(d.take_events(), vec![new_mail(5, None)]);
    }
}

#[test]
fn a_preview_carries_from_subject_and_uid_in_literal_quoted_and_nil_forms() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: None,
            preview: true,
        };
        let mut d = driver(spec(None), options, split);
        to_idle(&mut d);
        d.s(b"* 6 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A3 OK done\r\n");
        d.c(b"A4 UID FETCH 4:* (UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.16384>)\r\n");
        let block = "From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.org>\r\n\
                     Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n =?UTF-8?Q?_aus_Berlin?=\r\n\r\n";
        d.s(fetch_literal(4, 4, "FROM SUBJECT", block).as_bytes());
        d.s(b"* 5 FETCH (FLAGS (\\Recent) BODY[HEADER.FIELDS (FROM SUBJECT)]<0> \"Subject: \\\"quoted\\\"\" UID 5)\r\n");
        d.s(b"* 6 FETCH (UID 6 BODY[HEADER.FIELDS (FROM SUBJECT)] NIL)\r\n");
        assert!(
            d.take_events().is_empty(),
            "reported once the fetch is answered"
        );
        d.s(b"A4 OK done\r\n");
        assert_eq!(
            d.take_events(),
            vec![new_mail(
                6,
                Some(vec![
                    (6, "", ""),
                    (5, "", "\"quoted\""),
                    (
                        4,
                        "J\u{fc}rgen <j@example.org>",
                        "Gr\u{fc}\u{df}e aus Berlin"
                    ),
                ])
            )]
        );
        d.c(b"A5 IDLE\r\n");
    }
}

#[test]
fn a_50_kb_subject_is_cut_in_the_session() {
    let options = WatchOptions {
        filter: None,
        preview: true,
    };
    let mut d = driver(spec(None), options, Split::Whole);
    to_idle(&mut d);
    d.s(b"* 4 EXISTS\r\n");
    d.s(b"A3 OK done\r\n");
    d.sent.clear();
    let subject = "\u{e9}".repeat(25_000);
    let block = format!("Subject: {subject}\r\n\r\n");
    d.s(fetch_literal(4, 4, "SUBJECT", &block).as_bytes());
    d.s(b"A4 OK done\r\n");
    let events = d.take_events();
    let [SessionEvent::NewMail {
        preview: Some(preview),
        ..
    }] = &events[..]
    else {
        panic!("{events:?}");
    };
    let cut = &preview.messages[0].subject;
    assert!(cut.len() <= engine::session::PREVIEW_FIELD_LEN_MAX);
    assert!(subject.starts_with(cut.trim_end_matches('\u{2026}')));
    assert_eq!(d.pool.lent(), 0);
}

#[test]
fn a_filter_with_a_preview_previews_only_matching_messages() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: chat_filter(),
            preview: true,
        };
        let mut d = driver(spec(None), options, split);
        to_idle(&mut d);
        d.s(b"* 5 EXISTS\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A3 OK done\r\n");
        d.c(b"A4 UID FETCH 4:* (UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT CHAT-VERSION)]<0.16384>)\r\n");
        let fields = "FROM SUBJECT CHAT-VERSION";
        let chat = "From: a@b\r\nSubject: chat\r\nChat-Version: 1.0\r\n\r\n";
        d.s(fetch_literal(4, 4, fields, chat).as_bytes());
        d.s(fetch_literal(5, 5, fields, "From: c@d\r\nSubject: plain\r\n\r\n").as_bytes());
        d.s(b"A4 OK done\r\n");
        assert_eq!(
            d.take_events(),
            vec![new_mail(5, Some(vec![(4, "a@b", "chat")]))]
        );
    }
}

#[test]
fn polling_fetches_after_the_noop_answer() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: chat_filter(),
            preview: false,
        };
        let mut d = driver(spec(None), options, split);
        open(&mut d, "IMAP4rev1");
        assert!(matches!(d.take_events()[..], [SessionEvent::Ready(_)]));
        d.c(b"");
        d.now = d.session.poll_timeout();
        d.session.handle_timeout(d.now);
        d.collect();
        d.c(b"A3 NOOP\r\n");
        d.s(b"* 4 EXISTS\r\n");
        assert!(d.take_events().is_empty());
        d.c(b"");
        d.s(b"A3 OK done\r\n");
        d.c(format!("A4 UID FETCH 4:* ({CHAT_FETCH}").as_bytes());
        d.s(fetch_literal(4, 4, "CHAT-VERSION", "Chat-Version: 1\r\n\r\n").as_bytes());
        d.s(b"A4 OK done\r\n");
        assert_eq!(d.take_events(), vec![new_mail(4, None)]);
        assert_eq!(d.session.phase(), Phase::PollWait);
        // An EXISTS between polls is fetched at once.
        d.s(b"* 5 EXISTS\r\n");
        d.c(format!("A5 UID FETCH 5:* ({CHAT_FETCH}").as_bytes());
        d.s(b"A5 OK nothing\r\n");
        assert!(d.take_events().is_empty());
        assert_eq!(d.session.phase(), Phase::PollWait);
    }
}

#[test]
fn new_mail_during_idle_setup_or_a_fetch_is_fetched_next() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: chat_filter(),
            preview: false,
        };
        let mut d = driver(spec(None), options, split);
        open(&mut d, "IMAP4rev1 IDLE");
        d.c(b"A3 IDLE\r\n");
        // Mail arrives before the `+`: IDLE ends at once.
        d.s(b"* 4 EXISTS\r\n+ idling\r\n");
        d.c(b"DONE\r\n");
        d.s(b"A3 OK done\r\n");
        d.c(format!("A4 UID FETCH 4:* ({CHAT_FETCH}").as_bytes());
        // More mail during the fetch: fetched again right after, from the new UIDNEXT.
        d.s(fetch_literal(4, 4, "CHAT-VERSION", "\r\n").as_bytes());
        d.s(b"* 5 EXISTS\r\nA4 OK done\r\n");
        d.c(format!("A5 UID FETCH 5:* ({CHAT_FETCH}").as_bytes());
        d.s(fetch_literal(5, 5, "CHAT-VERSION", "Chat-Version: 1\r\n\r\n").as_bytes());
        d.s(b"A5 OK done\r\n");
        assert!(matches!(
            &d.take_events()[..],
            [
                SessionEvent::Ready(_),
                SessionEvent::NewMail { exists: 5, .. }
            ]
        ));
        d.c(b"A6 IDLE\r\n");
    }
}

#[test]
fn a_refused_fetch_fails_open() {
    for split in SPLITS {
        let options = WatchOptions {
            filter: chat_filter(),
            preview: true,
        };
        let mut d = driver(spec(None), options, split);
        to_idle(&mut d);
        d.s(b"* 4 EXISTS\r\n");
        d.s(b"A3 OK done\r\n");
        d.sent.clear();
        d.s(b"A4 NO [SERVERBUG] try later\r\n");
        assert_eq!(d.take_events(), vec![new_mail(4, None)]);
        d.c(b"A5 IDLE\r\n");
        // UIDNEXT did not move: the next fetch starts where this one did.
        d.s(b"+ idling\r\n* 5 EXISTS\r\nA5 OK done\r\n");
        d.c(b"DONE\r\nA6 UID FETCH 4:* (UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT CHAT-VERSION)]<0.16384>)\r\n");
    }
}

#[test]
fn since_sends_what_the_app_missed_through_the_filter() {
    let since = Since {
        uidvalidity: 1_700_000_000,
        uidnext: 2,
    };
    let options = WatchOptions {
        filter: chat_filter(),
        preview: false,
    };
    let mut d = driver(spec(Some(since)), options, Split::Whole);
    open(&mut d, "IMAP4rev1 IDLE");
    d.c(b"A3 IDLE\r\n");
    d.s(b"+ idling\r\n");
    assert!(matches!(d.take_events()[..], [SessionEvent::Ready(_)]));
    d.c(b"DONE\r\n");
    d.s(b"A3 OK done\r\n");
    d.c(format!("A4 UID FETCH 2:* ({CHAT_FETCH}").as_bytes());
    d.s(fetch_literal(2, 2, "CHAT-VERSION", "\r\n").as_bytes());
    d.s(fetch_literal(3, 3, "CHAT-VERSION", "Chat-Version: 1\r\n\r\n").as_bytes());
    d.s(b"A4 OK done\r\n");
    assert_eq!(d.take_events(), vec![new_mail(3, None)]);
    // A new UIDVALIDITY: everything is new and the app must resync; no filter applies.
    let since = Since {
        uidvalidity: 1,
        uidnext: 2,
    };
    let options = WatchOptions {
        filter: chat_filter(),
        preview: false,
    };
    let mut d = driver(spec(Some(since)), options, Split::Whole);
    open(&mut d, "IMAP4rev1 IDLE");
    d.s(b"+ idling\r\n");
    assert!(matches!(
        d.take_events()[..],
        [
            SessionEvent::Ready(_),
            SessionEvent::NewMail { preview: None, .. }
        ]
    ));
}

#[test]
fn closing_during_a_fetch_logs_out_and_a_slow_fetch_times_out() {
    let options = WatchOptions {
        filter: chat_filter(),
        preview: false,
    };
    let mut d = driver(spec(None), options.clone(), Split::Whole);
    to_idle(&mut d);
    d.s(b"* 4 EXISTS\r\nA3 OK done\r\n");
    d.sent.clear();
    d.session.handle_close(d.now, EndReason::Unwatched);
    d.collect();
    d.c(b"A5 LOGOUT\r\n");
    d.s(b"* 4 FETCH (UID 4 BODY[HEADER.FIELDS (CHAT-VERSION)] NIL)\r\nA4 OK done\r\n");
    d.s(b"A5 OK bye\r\n");
    assert_eq!(
        d.take_events(),
        vec![SessionEvent::Ended(EndReason::Unwatched)]
    );

    // Each FETCH response re-arms the response deadline; silence past it ends the session.
    let mut d = driver(spec(None), options, Split::Whole);
    to_idle(&mut d);
    d.s(b"* 9 EXISTS\r\nA3 OK done\r\n");
    let cfg = SessionConfig::default();
    for uid in 4..=9 {
        d.now = d.now + cfg.response_timeout / 2;
        d.session.handle_timeout(d.now);
        d.s(
            format!("* {uid} FETCH (UID {uid} BODY[HEADER.FIELDS (CHAT-VERSION)] NIL)\r\n")
                .as_bytes(),
        );
    }
    assert_eq!(d.session.phase(), Phase::Fetching);
    d.now = d.session.poll_timeout();
    d.session.handle_timeout(d.now);
    d.collect();
    assert!(matches!(
        d.take_events()[..],
        [SessionEvent::Ended(EndReason::Timeout(
            engine::Waiting::Fetch
        ))]
    ));
}
