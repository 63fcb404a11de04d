//! The command encoder: exact bytes, hostile credentials, literal waits,
//! SASL base64, buffer sizes and redaction.

use base64::Engine as _;
use imap_codec_lite::fuzz_check::{check_command, sasl_reference, CommandParser};
use imap_codec_lite::{
    encode, parse_tag, write_tag, Command, EncodeError, Encoded, LiteralMode, Sasl, StatusRequest,
    DONE,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn enc(tag: u32, cmd: &Command<'_>, mode: LiteralMode) -> (Vec<u8>, Encoded) {
    let mut out = vec![0u8; 16 * 1024];
    let e = encode(tag, cmd, mode, &mut out).expect("encodes");
    out.truncate(e.len);
    (out, e)
}

fn bytes(tag: u32, cmd: &Command<'_>) -> String {
    let (out, e) = enc(tag, cmd, LiteralMode::NonSync);
    assert!(e.waits().is_empty());
    String::from_utf8(out).unwrap()
}

#[test]
fn simple_commands() {
    assert_eq!(bytes(1, &Command::Capability), "A1 CAPABILITY\r\n");
    assert_eq!(bytes(2, &Command::Noop), "A2 NOOP\r\n");
    assert_eq!(bytes(3, &Command::Idle), "A3 IDLE\r\n");
    assert_eq!(bytes(4, &Command::Logout), "A4 LOGOUT\r\n");
    assert_eq!(bytes(0, &Command::StartTls), "A0 STARTTLS\r\n");
    assert_eq!(bytes(u32::MAX, &Command::Noop), "A4294967295 NOOP\r\n");
    assert_eq!(DONE, b"DONE\r\n");
}

#[test]
fn login_forms() {
    let login = |u: &'static str, p: &'static str| {
        bytes(
            7,
            &Command::Login {
                username: u.as_bytes(),
                password: p.as_bytes(),
            },
        )
    };
    assert_eq!(login("alice", "s3cret"), "A7 LOGIN alice s3cret\r\n");
    assert_eq!(
        login("bob+tag@example.com", "a.b-c_d"),
        "A7 LOGIN bob+tag@example.com a.b-c_d\r\n"
    );
    assert_eq!(login("", "pass word"), "A7 LOGIN \"\" \"pass word\"\r\n");
    assert_eq!(
        login("u", r#"q"uo\te {5}"#),
        "A7 LOGIN u \"q\\\"uo\\\\te {5}\"\r\n"
    );
    assert_eq!(login("NIL", "]"), "A7 LOGIN NIL \"]\"\r\n");
    assert_eq!(
        login("u", "line\r\nA8 LOGOUT"),
        "A7 LOGIN u {15+}\r\nline\r\nA8 LOGOUT\r\n"
    );
    assert_eq!(login("u", "pässwörd"), "A7 LOGIN u {10+}\r\npässwörd\r\n");
    assert_eq!(login("u", "tab\there"), "A7 LOGIN u {8+}\r\ntab\there\r\n");
}

/// Hostile passwords: each parses back to itself, CR/LF appear only inside
/// literals, and the waits sit right after each `{N}` CRLF.
#[test]
fn hostile_credentials_round_trip() {
    let long = "x".repeat(1001);
    let huge = "y".repeat(5000);
    let passwords: [&str; 12] = [
        r#"" \ {5}"#,
        "\r\n",
        "a\rb",
        "a\nb",
        "pass word with spaces",
        "пароль",
        "{5}\r\nA2 LOGOUT",
        "\"",
        "\\",
        "",
        &long,
        &huge,
    ];
    for mode in [
        LiteralMode::Sync,
        LiteralMode::NonSync,
        LiteralMode::LiteralMinus,
    ] {
        for user in ["alice", "a b", "ü"] {
            for pass in passwords {
                let cmd = Command::Login {
                    username: user.as_bytes(),
                    password: pass.as_bytes(),
                };
                check_command(9, &cmd, mode);
                check_command(
                    9,
                    &Command::Examine {
                        mailbox: pass.as_bytes(),
                    },
                    mode,
                );
            }
        }
    }
}

#[test]
fn sync_and_nonsync_waits() {
    let cmd = Command::Login {
        username: "ü".as_bytes(),
        password: b"a\r\nb",
    };
    let (out, e) = enc(5, &cmd, LiteralMode::Sync);
    assert_eq!(out, b"A5 LOGIN {2}\r\n\xc3\xbc {4}\r\na\r\nb\r\n");
    assert_eq!(e.waits(), &[14, 22]);
    assert_eq!(&out[..14], b"A5 LOGIN {2}\r\n");
    assert_eq!(&out[..22], b"A5 LOGIN {2}\r\n\xc3\xbc {4}\r\n");
    assert_eq!(
        e.segments().collect::<Vec<_>>(),
        [0..14, 14..22, 22..out.len()]
    );

    let (out, e) = enc(5, &cmd, LiteralMode::NonSync);
    assert_eq!(out, b"A5 LOGIN {2+}\r\n\xc3\xbc {4+}\r\na\r\nb\r\n");
    assert!(e.waits().is_empty());
    let whole = 0..out.len();
    assert_eq!(e.segments().collect::<Vec<_>>(), vec![whole]);

    // LITERAL-: non-synchronizing up to 4096 bytes, synchronizing above.
    let big = vec![0x80u8; 4097];
    let cmd = Command::Login {
        username: "ü".as_bytes(),
        password: &big,
    };
    let (out, e) = enc(5, &cmd, LiteralMode::LiteralMinus);
    assert!(out.starts_with(b"A5 LOGIN {2+}\r\n\xc3\xbc {4097}\r\n"));
    assert_eq!(e.waits(), &[26]);
    let cmd = Command::Login {
        username: "ü".as_bytes(),
        password: &big[..4096],
    };
    let (_, e) = enc(5, &cmd, LiteralMode::LiteralMinus);
    assert!(e.waits().is_empty());
}

#[test]
fn examine_status_id() {
    assert_eq!(
        bytes(3, &Command::Examine { mailbox: b"INBOX" }),
        "A3 EXAMINE INBOX\r\n"
    );
    assert_eq!(
        bytes(
            3,
            &Command::Examine {
                mailbox: b"Sent Items"
            }
        ),
        "A3 EXAMINE \"Sent Items\"\r\n"
    );
    assert_eq!(
        bytes(
            3,
            &Command::Examine {
                mailbox: b"&AOQ-bc"
            }
        ),
        "A3 EXAMINE \"&AOQ-bc\"\r\n"
    );
    let all = StatusRequest {
        messages: true,
        uidnext: true,
        uidvalidity: true,
        unseen: true,
    };
    assert_eq!(
        bytes(
            4,
            &Command::Status {
                mailbox: b"INBOX",
                items: all
            }
        ),
        "A4 STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)\r\n"
    );
    let some = StatusRequest {
        uidnext: true,
        uidvalidity: true,
        ..StatusRequest::default()
    };
    assert_eq!(
        bytes(
            4,
            &Command::Status {
                mailbox: b"a",
                items: some
            }
        ),
        "A4 STATUS a (UIDNEXT UIDVALIDITY)\r\n"
    );
    let none = Command::Status {
        mailbox: b"a",
        items: StatusRequest::default(),
    };
    assert_eq!(
        encode(4, &none, LiteralMode::Sync, &mut [0; 64]),
        Err(EncodeError::Unencodable { field: "items" })
    );
    let pairs: &[(&[u8], &[u8])] = &[(b"name", b"imap-push-proxy"), (b"version", b"0.1 \"x\"")];
    assert_eq!(
        bytes(5, &Command::Id { pairs }),
        "A5 ID (\"name\" \"imap-push-proxy\" \"version\" \"0.1 \\\"x\\\"\")\r\n"
    );
    assert_eq!(bytes(5, &Command::Id { pairs: &[] }), "A5 ID NIL\r\n");
    let long_field: &[(&[u8], &[u8])] = &[(&[b'f'; 31], b"v")];
    assert_eq!(
        encode(
            5,
            &Command::Id { pairs: long_field },
            LiteralMode::Sync,
            &mut [0; 128]
        ),
        Err(EncodeError::Unencodable { field: "id" })
    );
    // Four synchronizing literals would need more waits than a command carries.
    let eight: &[(&[u8], &[u8])] = &[
        (b"a", b"\xff"),
        (b"b", b"\xff"),
        (b"c", b"\xff"),
        (b"d", b"\xff"),
    ];
    assert_eq!(
        encode(
            5,
            &Command::Id { pairs: eight },
            LiteralMode::Sync,
            &mut [0; 256]
        ),
        Err(EncodeError::Unencodable { field: "id" })
    );
    let (_, e) = enc(5, &Command::Id { pairs: eight }, LiteralMode::NonSync);
    assert!(e.waits().is_empty());
}

#[test]
fn nul_is_unencodable() {
    let cmd = Command::Login {
        username: b"a",
        password: b"x\0y",
    };
    assert_eq!(
        encode(1, &cmd, LiteralMode::NonSync, &mut [0; 64]),
        Err(EncodeError::Unencodable { field: "password" })
    );
    let plain = Command::Authenticate {
        mechanism: Sasl::Plain {
            username: b"a\0b",
            password: b"p",
        },
        sasl_ir: true,
    };
    assert_eq!(
        encode(1, &plain, LiteralMode::NonSync, &mut [0; 64]),
        Err(EncodeError::Unencodable { field: "username" })
    );
    let xoauth = Command::Authenticate {
        mechanism: Sasl::XOAuth2 {
            username: b"a",
            token: b"t\x01auth=x",
        },
        sasl_ir: true,
    };
    assert_eq!(
        encode(1, &xoauth, LiteralMode::NonSync, &mut [0; 64]),
        Err(EncodeError::Unencodable { field: "token" })
    );
}

#[test]
fn sasl_plain() {
    let mech = Sasl::Plain {
        username: b"tim",
        password: b"tanstaaftanstaaf",
    };
    // RFC 4616 section 4 example (empty authzid).
    let (out, e) = enc(
        1,
        &Command::Authenticate {
            mechanism: mech,
            sasl_ir: true,
        },
        LiteralMode::Sync,
    );
    assert_eq!(
        out,
        b"A1 AUTHENTICATE PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"
    );
    assert!(e.waits().is_empty());
    let (out, e) = enc(
        1,
        &Command::Authenticate {
            mechanism: mech,
            sasl_ir: false,
        },
        LiteralMode::Sync,
    );
    assert_eq!(
        out,
        b"A1 AUTHENTICATE PLAIN\r\nAHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"
    );
    assert_eq!(e.waits(), &[23]);
}

#[test]
fn sasl_xoauth2_and_oauthbearer() {
    let x = Sasl::XOAuth2 {
        username: b"someuser@example.com",
        token: b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
    };
    // Google's documented example.
    let (out, _) = enc(
        1,
        &Command::Authenticate {
            mechanism: x,
            sasl_ir: true,
        },
        LiteralMode::Sync,
    );
    assert_eq!(
        out,
        &b"A1 AUTHENTICATE XOAUTH2 dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==\r\n"[..]
    );
    let o = Sasl::OAuthBearer {
        username: b"user@example.com",
        host: b"server.example.com",
        port: 143,
        token: b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
    };
    // RFC 7628 section 4.1 example.
    let (out, _) = enc(
        1,
        &Command::Authenticate {
            mechanism: o,
            sasl_ir: true,
        },
        LiteralMode::Sync,
    );
    let b64 = &out[b"A1 AUTHENTICATE OAUTHBEARER ".len()..out.len() - 2];
    assert_eq!(
        B64.decode(b64).unwrap(),
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    );
    assert_eq!(
        b64,
        b"bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
    );
    // saslname escaping of `,` and `=`.
    let o = Sasl::OAuthBearer {
        username: b"a,b=c",
        host: b"",
        port: 0,
        token: b"t",
    };
    assert_eq!(
        sasl_reference(&o),
        b"n,a=a=2Cb=3Dc,\x01auth=Bearer t\x01\x01"
    );
    check_command(
        2,
        &Command::Authenticate {
            mechanism: o,
            sasl_ir: false,
        },
        LiteralMode::Sync,
    );
}

/// Base64 of every length (crossing the internal 48-byte chunks) equals the
/// base64 of the reference plaintext.
#[test]
fn sasl_base64_all_lengths() {
    let pw: Vec<u8> = (0..400u32).map(|i| (i % 250) as u8 + 1).collect();
    for n in 0..pw.len() {
        for sasl_ir in [true, false] {
            for mech in [
                Sasl::Plain {
                    username: b"u",
                    password: &pw[..n],
                },
                Sasl::XOAuth2 {
                    username: &pw[2..n.max(2)],
                    token: b"tok",
                },
                Sasl::OAuthBearer {
                    username: b"u",
                    host: b"h",
                    port: 993,
                    token: &pw[..n],
                },
            ] {
                let cmd = Command::Authenticate {
                    mechanism: mech,
                    sasl_ir,
                };
                check_command(3, &cmd, LiteralMode::Sync);
            }
        }
    }
}

#[test]
fn buffer_too_small_is_exact() {
    let cmd = Command::Login {
        username: b"alice",
        password: "pässwörd \" \\".as_bytes(),
    };
    let (full, _) = enc(12, &cmd, LiteralMode::Sync);
    let needed = full.len();
    for size in 0..needed {
        let mut out = vec![0xAAu8; size];
        assert_eq!(
            encode(12, &cmd, LiteralMode::Sync, &mut out),
            Err(EncodeError::BufferTooSmall { needed })
        );
        // Nothing was written: no partial secret is left behind.
        assert!(out.iter().all(|&b| b == 0xAA));
    }
    let mut out = vec![0u8; needed];
    assert_eq!(
        encode(12, &cmd, LiteralMode::Sync, &mut out).map(|e| e.len),
        Ok(needed)
    );
    assert_eq!(out, full);
}

#[test]
fn debug_redacts_secrets() {
    let secret = "hunter2-SECRET";
    let cmds = [
        Command::Login {
            username: b"alice",
            password: secret.as_bytes(),
        },
        Command::Authenticate {
            mechanism: Sasl::Plain {
                username: b"alice",
                password: secret.as_bytes(),
            },
            sasl_ir: true,
        },
        Command::Authenticate {
            mechanism: Sasl::XOAuth2 {
                username: b"alice",
                token: secret.as_bytes(),
            },
            sasl_ir: false,
        },
        Command::Authenticate {
            mechanism: Sasl::OAuthBearer {
                username: b"alice",
                host: b"imap.example.com",
                port: 993,
                token: secret.as_bytes(),
            },
            sasl_ir: true,
        },
    ];
    for cmd in &cmds {
        for shown in [format!("{cmd:?}"), format!("{cmd:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                !shown.contains(&format!("{:?}", secret.as_bytes())),
                "{shown}"
            );
            assert!(
                shown.contains("alice") && shown.contains("redacted"),
                "{shown}"
            );
        }
    }
    assert_eq!(
        format!("{:?}", cmds[0]),
        "Login { username: \"alice\", password: <redacted> }"
    );
}

#[test]
fn tags() {
    let mut buf = [0u8; 11];
    for n in [0u32, 1, 9, 10, 42, 99999, u32::MAX] {
        let len = write_tag(n, &mut buf);
        assert_eq!(&buf[..len], format!("A{n}").as_bytes());
        assert_eq!(parse_tag(&buf[..len]), Some(n));
    }
    for bad in [
        &b"A"[..],
        b"a1",
        b"A01",
        b"A-1",
        b"A4294967296",
        b"B1",
        b"A1 ",
        b"",
        b"*",
        b"+",
    ] {
        assert_eq!(parse_tag(bad), None, "{bad:?}");
    }
}

/// The strict test parser rejects CR/LF outside literals, so it can vouch
/// for the encoder.
#[test]
#[should_panic]
fn test_parser_rejects_injected_crlf() {
    let wire = b"A1 LOGIN u \"a\r\nb\"\r\n";
    CommandParser::new(wire, LiteralMode::Sync).expect(b"A1 LOGIN ");
    let mut p = CommandParser::new(wire, LiteralMode::Sync);
    p.expect(b"A1 LOGIN ");
    p.astring();
    p.expect(b" ");
    p.astring();
}

#[test]
fn notify_set_for_the_selected_and_other_mailboxes() {
    let mut out = [0u8; 256];
    let enc = imap_codec_lite::encode(
        7,
        &imap_codec_lite::Command::Notify {
            mailboxes: &[b"Sent", b"Entw&APw-rfe", b"with space"],
            personal: false,
        },
        imap_codec_lite::LiteralMode::NonSync,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        &out[..enc.len],
        &b"A7 NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (MAILBOXES (Sent \"Entw&APw-rfe\" \"with space\") (MessageNew MessageExpunge))\r\n"[..]
    );
    let enc = imap_codec_lite::encode(
        8,
        &imap_codec_lite::Command::Notify {
            mailboxes: &[],
            personal: false,
        },
        imap_codec_lite::LiteralMode::NonSync,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        &out[..enc.len],
        &b"A8 NOTIFY SET (SELECTED (MessageNew MessageExpunge))\r\n"[..]
    );
    let enc = imap_codec_lite::encode(
        9,
        &imap_codec_lite::Command::Notify {
            mailboxes: &[b"ignored"],
            personal: true,
        },
        imap_codec_lite::LiteralMode::NonSync,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        &out[..enc.len],
        &b"A9 NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (PERSONAL (MessageNew MessageExpunge))\r\n"[..]
    );
}
