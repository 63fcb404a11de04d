//! Server responses from the RFCs (9051, 3501, 2177 and friends), written
//! out as `S:` transcripts, each message parsed and checked.

mod common;

use common::{messages, server, split_invariant};
use imap_codec_lite::fuzz_check;
use imap_codec_lite::{
    parse_response, AString, Capabilities, Code, Limits, ParseError, Response, Status, StatusItems,
    Untagged,
};

fn parse(msg: &[u8]) -> Response<'_> {
    parse_response(msg).unwrap_or_else(|e| panic!("{e:?} for {:?}", String::from_utf8_lossy(msg)))
}

fn untagged(msg: &[u8]) -> Untagged<'_> {
    match parse(msg) {
        Response::Untagged(u) => u,
        other => panic!("not untagged: {other:?}"),
    }
}

fn caps(raw: &str) -> Capabilities<'_> {
    Capabilities::from_raw(raw.as_bytes())
}

/// Checks every message of a transcript also survives the fuzz checks
/// (prefixes, split invariance, round trip).
fn fuzz_checks(stream: &[u8]) {
    split_invariant(stream, Limits::default(), 20);
    for msg in messages(stream) {
        fuzz_check::message(msg, Limits::default());
    }
}

/// RFC 3501 section 8 (and RFC 9051 section 8, adapted), the sample session.
#[test]
fn rfc3501_sample_session() {
    let header = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
                  From: Terry Gray <gray@cac.washington.edu>\r\n\
                  Subject: IMAP4rev1 WG mtg summary and minutes\r\n\r\n";
    let fetch_header = format!(
        "S: * 12 FETCH (BODY[HEADER] {{{}}}\r\n{header})",
        header.len()
    );
    let stream = server(&[
        "S: * OK IMAP4rev1 Service Ready",
        "S: a001 OK LOGIN completed",
        "S: * 18 EXISTS",
        r"S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)",
        "S: * 2 RECENT",
        "S: * OK [UNSEEN 17] Message 17 is the first unseen message",
        "S: * OK [UIDVALIDITY 3857529045] UIDs valid",
        "S: a002 OK [READ-WRITE] SELECT completed",
        r#"S: * 12 FETCH (FLAGS (\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) NIL NIL "<B27397-0100000@cac.washington.edu>") BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))"#,
        "S: a003 OK FETCH completed",
        &fetch_header,
        "S: a004 OK FETCH completed",
        r"S: * 12 FETCH (FLAGS (\Seen \Deleted))",
        "S: a005 OK +FLAGS completed",
        "S: * BYE IMAP4rev1 server terminating connection",
        "S: a006 OK LOGOUT completed",
    ]);
    let msgs = messages(&stream);
    assert_eq!(msgs.len(), 16);
    assert_eq!(
        parse(msgs[0]),
        Response::Untagged(Untagged::Status {
            status: Status::Ok,
            code: None,
            text: b"IMAP4rev1 Service Ready"
        })
    );
    assert_eq!(
        parse(msgs[1]),
        Response::Tagged {
            tag: b"a001",
            status: Status::Ok,
            code: None,
            text: b"LOGIN completed"
        }
    );
    assert_eq!(untagged(msgs[2]), Untagged::Exists(18));
    assert_eq!(
        untagged(msgs[3]),
        Untagged::Flags(br"\Answered \Flagged \Deleted \Seen \Draft")
    );
    assert_eq!(untagged(msgs[4]), Untagged::Recent(2));
    assert!(matches!(
        untagged(msgs[5]),
        Untagged::Status {
            code: Some(Code::Unseen(17)),
            ..
        }
    ));
    assert_eq!(
        untagged(msgs[6]),
        Untagged::Status {
            status: Status::Ok,
            code: Some(Code::UidValidity(3_857_529_045)),
            text: b"UIDs valid"
        }
    );
    assert!(matches!(
        parse(msgs[7]),
        Response::Tagged {
            tag: b"a002",
            code: Some(Code::ReadWrite),
            ..
        }
    ));
    match untagged(msgs[8]) {
        Untagged::Fetch { seq: 12, attrs } => {
            assert!(attrs.starts_with(br"FLAGS (\Seen)"));
            assert!(attrs.ends_with(b"3028 92)"));
        }
        other => panic!("{other:?}"),
    }
    match untagged(msgs[10]) {
        Untagged::Fetch { seq: 12, attrs } => {
            let want = format!("BODY[HEADER] {{{}}}\r\n{header}", header.len());
            assert_eq!(attrs, want.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        untagged(msgs[14]),
        Untagged::Status {
            status: Status::Bye,
            code: None,
            text: b"IMAP4rev1 server terminating connection"
        }
    );
    fuzz_checks(&stream);
}

/// RFC 2177 section 3, the IDLE example.
#[test]
fn rfc2177_idle() {
    let stream = server(&[
        "S: * FLAGS (Deleted Seen)",
        "S: * 3 EXISTS",
        "S: * 0 RECENT",
        "S: * OK [UIDVALIDITY 1]",
        "S: A001 OK SELECT completed",
        "S: + idling",
        "S: * 4 EXISTS",
        "S: A002 OK IDLE terminated",
        "S: + idling",
        "S: * 2 EXPUNGE",
        "S: * 3 EXISTS",
        "S: * OK Still here",
    ]);
    let msgs = messages(&stream);
    let got: Vec<_> = msgs.iter().map(|m| parse(m)).collect();
    assert_eq!(got[0], Response::Untagged(Untagged::Flags(b"Deleted Seen")));
    assert_eq!(got[1], Response::Untagged(Untagged::Exists(3)));
    assert_eq!(got[2], Response::Untagged(Untagged::Recent(0)));
    assert_eq!(
        got[3],
        Response::Untagged(Untagged::Status {
            status: Status::Ok,
            code: Some(Code::UidValidity(1)),
            text: b""
        })
    );
    assert_eq!(got[5], Response::Continuation { text: b"idling" });
    assert_eq!(got[6], Response::Untagged(Untagged::Exists(4)));
    assert!(matches!(
        got[7],
        Response::Tagged {
            tag: b"A002",
            status: Status::Ok,
            ..
        }
    ));
    assert_eq!(got[9], Response::Untagged(Untagged::Expunge(2)));
    assert_eq!(
        got[11],
        Response::Untagged(Untagged::Status {
            status: Status::Ok,
            code: None,
            text: b"Still here"
        })
    );
    fuzz_checks(&stream);
}

#[test]
fn greetings() {
    let stream = server(&[
        "S: * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.",
        "S: * PREAUTH IMAP4rev1 server logged in as Smith",
        "S: * BYE Autologout; idle for too long",
        "S: * BYE",
    ]);
    let msgs = messages(&stream);
    match untagged(msgs[0]) {
        Untagged::Status {
            status: Status::Ok,
            code: Some(Code::Capability(c)),
            text: b"Dovecot ready.",
        } => {
            assert!(c.has(b"idle") && c.has(b"AUTH=PLAIN") && c.has(b"LITERAL+"));
            assert!(!c.has(b"AUTH=") && !c.has(b"IDL"));
            assert_eq!(c.iter().count(), 8);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        untagged(msgs[1]),
        Untagged::Status {
            status: Status::PreAuth,
            code: None,
            text: b"IMAP4rev1 server logged in as Smith"
        }
    );
    assert!(matches!(
        untagged(msgs[2]),
        Untagged::Status {
            status: Status::Bye,
            ..
        }
    ));
    assert_eq!(
        untagged(msgs[3]),
        Untagged::Status {
            status: Status::Bye,
            code: None,
            text: b""
        }
    );
    fuzz_checks(&stream);
}

#[test]
fn tagged_with_codes() {
    let stream = server(&[
        "S: abcd OK [CAPABILITY IMAP4rev2 IMAP4rev1 IDLE] LOGIN completed",
        "S: a001 NO [AUTHENTICATIONFAILED] Authentication failed",
        "S: A932 OK [READ-ONLY] EXAMINE completed",
        "S: a003 BAD command unknown or arguments invalid",
        "S: A4 NO [ALERT] System shutdown in 10 minutes",
        "S: A5 OK [UIDNEXT 4392] Predicted next UID",
        "S: A6 NO [TRYCREATE] no such mailbox",
        "S: A7 NO [UNAVAILABLE] try later",
        "S: A8 NO [EXPIREDCREDENTIALS] renew",
        "S: A9 NO [PRIVACYREQUIRED] use TLS",
        "S: A10 NO [AUTHORIZATIONFAILED] no",
        "S: A11 BAD [PARSE] eh",
        "S: A12 OK [XYZZY some args here] odd",
        "S: a13 ok done",
        "S: A14 OK",
    ]);
    let msgs = messages(&stream);
    let code = |i: usize| match parse(msgs[i]) {
        Response::Tagged { code, .. } => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        code(0),
        Some(Code::Capability(caps("IMAP4rev2 IMAP4rev1 IDLE")))
    );
    assert_eq!(
        parse(msgs[1]),
        Response::Tagged {
            tag: b"a001",
            status: Status::No,
            code: Some(Code::AuthenticationFailed),
            text: b"Authentication failed"
        }
    );
    assert_eq!(code(2), Some(Code::ReadOnly));
    assert!(matches!(
        parse(msgs[3]),
        Response::Tagged {
            status: Status::Bad,
            code: None,
            ..
        }
    ));
    assert_eq!(code(4), Some(Code::Alert));
    assert_eq!(code(5), Some(Code::UidNext(4392)));
    assert_eq!(code(6), Some(Code::TryCreate));
    assert_eq!(code(7), Some(Code::Unavailable));
    assert_eq!(code(8), Some(Code::ExpiredCredentials));
    assert_eq!(code(9), Some(Code::PrivacyRequired));
    assert_eq!(code(10), Some(Code::AuthorizationFailed));
    assert_eq!(code(11), Some(Code::Parse));
    assert_eq!(
        code(12),
        Some(Code::Other {
            name: b"XYZZY",
            arg: b"some args here"
        })
    );
    assert!(matches!(
        parse(msgs[13]),
        Response::Tagged {
            tag: b"a13",
            status: Status::Ok,
            text: b"done",
            ..
        }
    ));
    assert_eq!(
        parse(msgs[14]),
        Response::Tagged {
            tag: b"A14",
            status: Status::Ok,
            code: None,
            text: b""
        }
    );
    fuzz_checks(&stream);
}

#[test]
fn untagged_codes() {
    let stream = server(&[
        r"S: * OK [PERMANENTFLAGS (\Deleted \Seen \*)] Limited",
        "S: * OK [NOTIFICATIONOVERFLOW] ...",
        "S: * NO [ALERT] disk full",
        "S: * BAD [PARSE] bad header",
        "S: * OK [HIGHESTMODSEQ 715194045007] Highest",
    ]);
    let msgs = messages(&stream);
    let code = |i: usize| match untagged(msgs[i]) {
        Untagged::Status { code, .. } => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(0), Some(Code::PermanentFlags(br"\Deleted \Seen \*")));
    assert_eq!(code(1), Some(Code::NotificationOverflow));
    assert_eq!(code(2), Some(Code::Alert));
    assert_eq!(code(3), Some(Code::Parse));
    assert_eq!(
        code(4),
        Some(Code::Other {
            name: b"HIGHESTMODSEQ",
            arg: b"715194045007"
        })
    );
    fuzz_checks(&stream);
}

#[test]
fn capability_and_enabled() {
    let stream = server(&[
        "S: * CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI LOGINDISABLED",
        "S: * capability IMAP4rev1 IDLE ",
        "S: * ENABLED CONDSTORE QRESYNC",
        "S: * ENABLED",
    ]);
    let msgs = messages(&stream);
    match untagged(msgs[0]) {
        Untagged::Capability(c) => {
            let all: Vec<_> = c.iter().collect();
            assert_eq!(
                all,
                [
                    &b"IMAP4rev2"[..],
                    b"STARTTLS",
                    b"AUTH=GSSAPI",
                    b"LOGINDISABLED"
                ]
            );
            assert!(c.has(b"logindisabled"));
        }
        other => panic!("{other:?}"),
    }
    match untagged(msgs[1]) {
        Untagged::Capability(c) => assert_eq!(c.iter().count(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        untagged(msgs[2]),
        Untagged::Enabled(caps("CONDSTORE QRESYNC"))
    );
    assert_eq!(untagged(msgs[3]), Untagged::Enabled(caps("")));
    fuzz_checks(&stream);
}

#[test]
fn status_responses() {
    let stream = server(&[
        "S: * STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)",
        "S: * STATUS {11}\r\nblurdybloop (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 7 UNSEEN 0 RECENT 2)",
        "S: * STATUS \"Sent \\\"Items\\\"\" (HIGHESTMODSEQ 715194045007 SIZE 99999999999 MESSAGES 1 )",
        "S: * STATUS {4+}\r\nföo ()",
    ]);
    let msgs = messages(&stream);
    assert_eq!(
        untagged(msgs[0]),
        Untagged::MailboxStatus {
            mailbox: AString::Atom(b"blurdybloop"),
            items: StatusItems {
                messages: Some(231),
                uidnext: Some(44292),
                ..StatusItems::default()
            }
        }
    );
    assert_eq!(
        untagged(msgs[1]),
        Untagged::MailboxStatus {
            mailbox: AString::Literal(b"blurdybloop"),
            items: StatusItems {
                messages: Some(231),
                uidnext: Some(44292),
                uidvalidity: Some(7),
                unseen: Some(0),
                recent: Some(2),
            }
        }
    );
    match untagged(msgs[2]) {
        Untagged::MailboxStatus { mailbox, items } => {
            assert!(mailbox.eq_bytes(br#"Sent "Items""#));
            assert!(!mailbox.eq_bytes(br#"Sent \"Items\""#));
            let mut buf = [0u8; 12];
            assert_eq!(mailbox.unescape_into(&mut buf), Some(12));
            assert_eq!(&buf, br#"Sent "Items""#);
            assert_eq!(mailbox.unescape_into(&mut [0u8; 11]), None);
            assert_eq!(items.messages, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        untagged(msgs[3]),
        Untagged::MailboxStatus {
            mailbox: AString::Literal("föo".as_bytes()),
            items: StatusItems::default()
        }
    );
    fuzz_checks(&stream);
}

#[test]
fn list_responses() {
    let stream = server(&[
        r#"S: * LIST (\Noselect) "/" ~/Mail/foo"#,
        r#"S: * LIST () "." #news.comp.mail.misc"#,
        r#"S: * LIST (\Marked \NoInferiors) NIL "inbox""#,
        r#"S: * LIST (\HasNoChildren) "\\" {8}"#,
        r#"S: Sent\Old ("CHILDINFO" ("SUBSCRIBED"))"#,
        r#"S: * LIST (\Noselect) "/" """#,
    ]);
    let msgs = messages(&stream);
    assert_eq!(msgs.len(), 5);
    assert_eq!(
        untagged(msgs[0]),
        Untagged::List {
            flags: br"\Noselect",
            delimiter: Some(b'/'),
            mailbox: AString::Atom(b"~/Mail/foo")
        }
    );
    assert_eq!(
        untagged(msgs[1]),
        Untagged::List {
            flags: b"",
            delimiter: Some(b'.'),
            mailbox: AString::Atom(b"#news.comp.mail.misc")
        }
    );
    assert_eq!(
        untagged(msgs[2]),
        Untagged::List {
            flags: br"\Marked \NoInferiors",
            delimiter: None,
            mailbox: AString::Quoted(b"inbox")
        }
    );
    assert_eq!(
        untagged(msgs[3]),
        Untagged::List {
            flags: br"\HasNoChildren",
            delimiter: Some(b'\\'),
            mailbox: AString::Literal(br"Sent\Old")
        }
    );
    assert_eq!(
        untagged(msgs[4]),
        Untagged::List {
            flags: br"\Noselect",
            delimiter: Some(b'/'),
            mailbox: AString::Quoted(b"")
        }
    );
    fuzz_checks(&stream);
}

#[test]
fn continuations() {
    let stream = server(&[
        "S: + idling",
        "S: + YGgGCSqGSIb3EgECAgIAb1kwV6ADAgEFoQMCAQ+iSzBJoAMCAQGiQgRAtHTEuOP2BXb9sBYFR4SJlDZxmg39IxmRBOhXRKdDA0uHTCOT9Bq3OsUTXUlk0CsFLoa8j+gvGDlgHuqzWHPSQg==",
        "S: +",
        "S: + ",
        "S: + Ready for additional command text",
        "S: + eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIG1hYyIsInNjb3BlIjoiaHR0cHM6Ly9tYWlsLmdvb2dsZS5jb20vIn0K",
    ]);
    let msgs = messages(&stream);
    assert_eq!(parse(msgs[0]), Response::Continuation { text: b"idling" });
    match parse(msgs[1]) {
        Response::Continuation { text } => {
            assert!(text.starts_with(b"YGgGCSqG") && text.ends_with(b"=="))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parse(msgs[2]), Response::Continuation { text: b"" });
    assert_eq!(parse(msgs[3]), Response::Continuation { text: b"" });
    assert!(matches!(parse(msgs[5]), Response::Continuation { .. }));
    fuzz_checks(&stream);
}

/// Responses the proxy does not need are `Other`, never errors.
#[test]
fn unknown_responses_are_other() {
    let stream = server(&[
        "S: * SEARCH 2 84 882",
        "S: * SEARCH",
        "S: * ESEARCH (TAG \"A282\") MIN 2 COUNT 3",
        r#"S: * NAMESPACE (("" "/")) NIL NIL"#,
        r#"S: * ID ("name" "Dovecot")"#,
        "S: * LSUB () \".\" #news.comp.mail.misc",
        "S: * VANISHED (EARLIER) 41,43:116",
        "S: * 5 XFOO bar",
        "S: * XLITERAL {3}\r\nabc more",
        "S: * QUOTA \"\" (STORAGE 10 512)",
    ]);
    let msgs = messages(&stream);
    assert_eq!(msgs.len(), 10);
    assert_eq!(untagged(msgs[0]), Untagged::Other(b"SEARCH 2 84 882"));
    assert_eq!(untagged(msgs[7]), Untagged::Other(b"5 XFOO bar"));
    assert_eq!(
        untagged(msgs[8]),
        Untagged::Other(b"XLITERAL {3}\r\nabc more")
    );
    for m in &msgs {
        assert!(matches!(untagged(m), Untagged::Other(_)), "{m:?}");
    }
    fuzz_checks(&stream);
}

#[test]
fn fetch_with_literals() {
    let stream = server(&[
        "S: * 1 FETCH (UID 7 BODY[] {13}\r\nhello)\r\n(x\"\r\n FLAGS (\\Seen))",
        "S: * 2 FETCH (BINARY[1] ~{3}\r\n\x00\x01) UID 8)",
        "S: * 3 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {0}\r\n)",
        "S: * 4 FETCH (ENVELOPE (\"a (b\" NIL) X {5+}\r\n))))))",
    ]);
    let msgs = messages(&stream);
    assert_eq!(msgs.len(), 4);
    assert_eq!(
        untagged(msgs[0]),
        Untagged::Fetch {
            seq: 1,
            attrs: b"UID 7 BODY[] {13}\r\nhello)\r\n(x\"\r\n FLAGS (\\Seen)"
        }
    );
    assert_eq!(
        untagged(msgs[1]),
        Untagged::Fetch {
            seq: 2,
            attrs: b"BINARY[1] ~{3}\r\n\x00\x01) UID 8"
        }
    );
    assert!(matches!(untagged(msgs[2]), Untagged::Fetch { seq: 3, .. }));
    assert!(matches!(untagged(msgs[3]), Untagged::Fetch { seq: 4, .. }));
    fuzz_checks(&stream);
}

#[test]
fn malformed_and_overflow() {
    let bad: &[(&[u8], ParseError)] = &[
        (b"* OK hi", ParseError::NotCrlfTerminated),
        (b"* OK hi\n", ParseError::NotCrlfTerminated),
        (b"", ParseError::NotCrlfTerminated),
        (b"\r\n", ParseError::Malformed { at: 0 }),
        (
            b"* 4294967296 EXISTS\r\n",
            ParseError::NumberOverflow { at: 2 },
        ),
        (
            b"* 4294967295 EXISTS\r\n",
            ParseError::Malformed { at: usize::MAX },
        ),
        (
            b"A1 OK [UIDVALIDITY 99999999999] x\r\n",
            ParseError::NumberOverflow { at: 19 },
        ),
        (
            b"A1 OK [UIDVALIDITY abc] x\r\n",
            ParseError::Malformed { at: 19 },
        ),
        (
            b"A1 OK [UIDVALIDITY 1 2] x\r\n",
            ParseError::Malformed { at: 20 },
        ),
        (b"A1 PREAUTH hi\r\n", ParseError::Malformed { at: 3 }),
        (b"A1 MAYBE hi\r\n", ParseError::Malformed { at: 3 }),
        (b"* 0 EXPUNGE\r\n", ParseError::Malformed { at: 2 }),
        (b"* 3 FETCH (UID 1\r\n", ParseError::Malformed { at: 16 }),
        (b"* 3 FETCH (UID 1))\r\n", ParseError::Malformed { at: 17 }),
        (
            b"* STATUS {5}\r\nab (MESSAGES 1)\r\n",
            ParseError::Malformed { at: 19 },
        ),
        (b"* STATUS {50}\r\nab\r\n", ParseError::Malformed { at: 10 }),
        (b"* LIST () \"\" x\r\n", ParseError::Malformed { at: 11 }),
        (b"+x\r\n", ParseError::Malformed { at: 1 }),
        (b"* OK a\rb\r\n", ParseError::Malformed { at: 6 }),
        (b"* OK a\r\nb\r\n", ParseError::Malformed { at: 6 }),
    ];
    for (msg, want) in bad {
        let got = parse_response(msg);
        if *want == (ParseError::Malformed { at: usize::MAX }) {
            assert_eq!(got, Ok(Response::Untagged(Untagged::Exists(u32::MAX))));
        } else {
            assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(msg));
        }
    }
    // `[` that never closes is text, not an error.
    assert_eq!(
        parse_response(b"* OK [ALERT oops\r\n"),
        Ok(Response::Untagged(Untagged::Status {
            status: Status::Ok,
            code: None,
            text: b"[ALERT oops"
        }))
    );
}

/// The views point into the message: nothing is copied.
#[test]
fn zero_copy() {
    let msg = b"* STATUS {3}\r\nabc (MESSAGES 1)\r\n";
    match untagged(msg) {
        Untagged::MailboxStatus { mailbox, .. } => {
            let raw = mailbox.raw();
            assert_eq!(raw.as_ptr(), msg[14..].as_ptr());
        }
        other => panic!("{other:?}"),
    }
}

/// Lines real servers send (greetings and replies seen from Gmail,
/// Outlook, Yahoo and Dovecot), so leniency is tested where it matters.
#[test]
fn real_world_servers() {
    let stream = server(&[
        "S: * OK Gimap ready for requests from 192.0.2.1 h2mb12345678",
        "S: * CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN AUTH=OAUTHBEARER AUTH=XOAUTH",
        "S: + eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
        "S: A1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
        "S: A2 OK user@example.com authenticated (Success)",
        "S: * OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADEAMwBDAEEAMAAwADMAOQA=]",
        "S: * OK [CAPABILITY IMAP4rev1 ID MOVE NAMESPACE XYMHIGHESTMODSEQ UIDPLUS LITERAL+ CHILDREN X-MSG-EXT UNSELECT OBJECTID] IMAP4rev1 imapgate-1.8.1_01.20166 imap1009.mail.ne1.yahoo.com",
        "S: * OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Ubuntu) ready.",
        "S: * ID (\"name\" \"Dovecot\")",
        "S: A3 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT NOTIFY] Logged in",
        "S: * OK [CLOSED] Previous mailbox closed.",
        "S: * OK [HIGHESTMODSEQ 9] Highest",
        "S: * BYE [UNAVAILABLE] Server shutting down",
        "S: * BYE Disconnected for inactivity.",
    ]);
    let msgs = messages(&stream);
    assert_eq!(msgs.len(), 14);
    match untagged(msgs[1]) {
        Untagged::Capability(c) => assert!(c.has(b"auth=xoauth2") && c.has(b"SASL-IR")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(msgs[3]),
        Response::Tagged {
            status: Status::No,
            code: Some(Code::AuthenticationFailed),
            ..
        }
    ));
    assert!(matches!(
        untagged(msgs[5]),
        Untagged::Status {
            status: Status::Ok,
            code: None,
            ..
        }
    ));
    match untagged(msgs[6]) {
        Untagged::Status {
            code: Some(Code::Capability(c)),
            ..
        } => assert!(c.has(b"LITERAL+")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(untagged(msgs[8]), Untagged::Other(_)));
    match parse(msgs[9]) {
        Response::Tagged {
            code: Some(Code::Capability(c)),
            ..
        } => assert!(c.has(b"NOTIFY")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        untagged(msgs[10]),
        Untagged::Status {
            code: Some(Code::Other {
                name: b"CLOSED",
                arg: b""
            }),
            ..
        }
    ));
    assert!(matches!(
        untagged(msgs[12]),
        Untagged::Status {
            status: Status::Bye,
            code: Some(Code::Unavailable),
            ..
        }
    ));
    fuzz_checks(&stream);
}
