//! Modified UTF-7 mailbox names (RFC 3501 §5.1.3).
//!
//! > Modified UTF-7 ... the character "&" is used to shift to modified BASE64 and "-" to
//! > shift back to US-ASCII. ... Printable US-ASCII characters, except for "&", represent
//! > themselves; "&" is represented by the two-octet sequence "&-". All other characters
//! > (octet values 0x00-0x1f and 0x7f-0xff) are represented in modified BASE64, with a
//! > further modification from RFC 2045 that "," is used instead of "/".
//!
//! Used when a mailbox is named: names are encoded once, when a session is set up.

use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, engine::DecodePaddingMode, Engine as _};

const MUTF7: GeneralPurpose = GeneralPurpose::new(
    &alphabet::IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Encodes a UTF-8 mailbox name as modified UTF-7.
pub fn encode(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.extend_from_slice(b"&-");
            } else {
                out.push(c as u8);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn flush(pending: &mut Vec<u16>, out: &mut Vec<u8>) {
    if pending.is_empty() {
        return;
    }
    let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push(b'&');
    out.extend_from_slice(MUTF7.encode(bytes).as_bytes());
    out.push(b'-');
    pending.clear();
}

/// Decodes a modified UTF-7 name; `None` if it is not valid modified UTF-7.
pub fn decode(name: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'&' {
            if !(0x20..0x7f).contains(&b) {
                return None;
            }
            out.push(char::from(b));
            rest = tail;
            continue;
        }
        let end = tail.iter().position(|&c| c == b'-')?;
        if end == 0 {
            out.push('&');
        } else {
            let bytes = MUTF7.decode(&tail[..end]).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        rest = &tail[end + 1..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3501_examples_and_round_trips() {
        // RFC 3501 §5.1.3: "~peter/mail/台北/日本語".
        assert_eq!(
            encode("~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}"),
            b"~peter/mail/&U,BTFw-/&ZeVnLIqe-".to_vec()
        );
        assert_eq!(encode("Sent"), b"Sent".to_vec());
        assert_eq!(encode("Tom & Jerry"), b"Tom &- Jerry".to_vec());
        assert_eq!(encode("Entw\u{fc}rfe"), b"Entw&APw-rfe".to_vec());
        for name in [
            "INBOX",
            "Entw\u{fc}rfe",
            "a&b",
            "\u{1f600} emoji",
            "日本語.Sub",
            "",
        ] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name), "{name}");
        }
        assert_eq!(decode(b"&Jjo-"), Some("\u{263a}".into()));
        assert_eq!(decode(b"bad\xff"), None);
        assert_eq!(decode(b"&unterminated"), None);
    }
}
