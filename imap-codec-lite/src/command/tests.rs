//! Unit tests of the encoder's private helpers: string forms, digits, and UID FETCH of
//! header fields.

use super::*;

#[test]
fn string_forms() {
    assert_eq!(form(b"alice", true), Some(Form::Atom));
    assert_eq!(form(b"alice", false), Some(Form::Quoted));
    assert_eq!(form(b"", true), Some(Form::Quoted));
    for quoted in [
        &b"a b"[..],
        b"a\"b",
        b"a\\b",
        b"a]b",
        b"a{5}",
        b"a%b",
        b"a*b",
        b"(x)",
    ] {
        assert_eq!(form(quoted, true), Some(Form::Quoted), "{quoted:?}");
    }
    for literal in [&b"a\rb"[..], b"a\nb", b"\x7f", b"\x01", b"\xc3\xbc", b"\t"] {
        assert_eq!(form(literal, true), Some(Form::Literal), "{literal:?}");
    }
    assert_eq!(form(&[b'a'; QUOTED_MAX], true), Some(Form::Atom));
    assert_eq!(form(&[b' '; QUOTED_MAX], true), Some(Form::Quoted));
    assert_eq!(form(&[b'a'; QUOTED_MAX + 1], true), Some(Form::Literal));
    assert_eq!(form(b"a\0b", true), None);
}

fn fetch(from_uid: u32, fields: &[&[u8]], octets_max: u32) -> Result<String, EncodeError> {
    let cmd = Command::UidFetchHeaders {
        from_uid,
        fields,
        octets_max,
    };
    let mut out = [0u8; 256];
    let e = encode(7, &cmd, LiteralMode::Sync, &mut out)?;
    assert!(e.waits().is_empty(), "no literal, no wait");
    Ok(String::from_utf8_lossy(&out[..e.len]).into_owned())
}

#[test]
fn uid_fetch_headers_bytes() {
    assert_eq!(
        fetch(4, &[b"FROM", b"SUBJECT", b"Chat-Version"], 16384).unwrap(),
        "A7 UID FETCH 4:* (UID BODY.PEEK[HEADER.FIELDS (FROM SUBJECT Chat-Version)]<0.16384>)\r\n"
    );
    assert_eq!(
        fetch(u32::MAX, &[b"X"], 1).unwrap(),
        "A7 UID FETCH 4294967295:* (UID BODY.PEEK[HEADER.FIELDS (X)]<0.1>)\r\n"
    );
}

#[test]
fn uid_fetch_headers_refuses_what_would_need_quoting_or_mean_something_else() {
    let refused = |field| Err(EncodeError::Unencodable { field });
    assert_eq!(fetch(0, &[b"FROM"], 10), refused("from_uid"));
    assert_eq!(fetch(1, &[b"FROM"], 0), refused("octets_max"));
    assert_eq!(fetch(1, &[], 10), refused("header field"));
    for bad in [
        &b""[..],
        b"Chat:Version",
        b"X Y",
        b"X)",
        b"X]",
        b"X\"Y",
        b"X{3}",
        b"X\r\n",
        b"X\0",
        b"\xc3\xbc",
        b"X*",
        b"X%",
    ] {
        assert_eq!(
            fetch(1, &[b"FROM", bad], 10),
            refused("header field"),
            "{bad:?}"
        );
    }
}

#[test]
fn uid_fetch_headers_reports_the_exact_size() {
    let cmd = Command::UidFetchHeaders {
        from_uid: 12,
        fields: &[b"FROM"],
        octets_max: 100,
    };
    let needed = match encode(1, &cmd, LiteralMode::NonSync, &mut []) {
        Err(EncodeError::BufferTooSmall { needed }) => needed,
        other => panic!("{other:?}"),
    };
    let mut out = vec![0u8; needed];
    assert_eq!(
        encode(1, &cmd, LiteralMode::NonSync, &mut out).unwrap().len,
        needed
    );
    assert_eq!(
        format!("{cmd:?}"),
        "UidFetchHeaders(12:* [\"FROM\"] <0.100>)"
    );
}

#[test]
fn digits() {
    assert_eq!(Digits::new(0).as_bytes(), b"0");
    assert_eq!(Digits::new(u64::MAX).as_bytes(), b"18446744073709551615");
}
