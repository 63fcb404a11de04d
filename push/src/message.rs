//! The JSON payloads the proxy pushes.
//!
//! ```text
//! {"type":"new_mail","subscription":ID,"mailbox":MAILBOX,"exists":N}
//! {"type":"new_mail","subscription":ID,"mailbox":MAILBOX,"exists":N,
//!  "messages":[{"uid":U,"from":FROM,"subject":SUBJECT}, ...]}
//! {"type":"reconnect","subscription":ID,"reason":REASON}
//! ```
//!
//! `messages` (a preview, newest first) is only for encrypted Web Push: the push service
//! must not be able to read it (RFC 8291). [`new_mail_with_preview`] fits it into the
//! payload limit.
//!
//! `ID` is the proxy's opaque subscription id, as a JSON string, so the
//! receiving app can tell its accounts apart. Payloads stay small: encrypted
//! Web Push allows at most [`crate::ece::PAYLOAD_LEN_MAX`] bytes, and the
//! sender reports [`crate::Outcome::TooLarge`] beyond that.

use std::borrow::Cow;

use serde::Serialize;

/// The `type` values, for receivers written in Rust (tests, tools).
pub const TYPE_NEW_MAIL: &str = "new_mail";
pub const TYPE_RECONNECT: &str = "reconnect";

#[derive(Serialize)]
struct NewMail<'a> {
    r#type: &'static str,
    subscription: &'a str,
    mailbox: &'a str,
    exists: u32,
}

/// One message of a preview: its UID in the mailbox, `From` and `Subject` as shown to the
/// user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MessagePreview<'a> {
    pub uid: u32,
    pub from: &'a str,
    pub subject: &'a str,
}

#[derive(Serialize)]
struct NewMailPreview<'a> {
    r#type: &'static str,
    subscription: &'a str,
    mailbox: &'a str,
    exists: u32,
    messages: &'a [MessagePreview<'a>],
}

/// Fields are cut no shorter than this (bytes) before the oldest message is dropped
/// instead, so a preview shows a few readable messages rather than many stubs.
pub const PREVIEW_FIELD_LEN_MIN: usize = 64;

#[derive(Serialize)]
struct Reconnect<'a> {
    r#type: &'static str,
    subscription: &'a str,
    reason: &'a str,
}

/// The mailbox now holds `exists` messages (the IMAP `EXISTS` count).
pub fn new_mail(subscription: &str, mailbox: &str, exists: u32) -> String {
    to_json(&NewMail {
        r#type: TYPE_NEW_MAIL,
        subscription,
        mailbox,
        exists,
    })
}

/// [`new_mail`] with `messages` (newest first), in at most `len_max` bytes (give
/// [`crate::ece::PAYLOAD_LEN_MAX`] for an encrypted push).
///
/// What does not fit is shortened, never the JSON broken: every `from` and `subject` is cut
/// to the longest common length that fits (on a character boundary, ending in `…`); when
/// that length would be under [`PREVIEW_FIELD_LEN_MIN`], the oldest message is dropped and
/// the fit tried again. The newest message stays however short it must be; if even that
/// cannot fit (an absurd mailbox name), the payload is plain [`new_mail`].
pub fn new_mail_with_preview(
    subscription: &str,
    mailbox: &str,
    exists: u32,
    messages: &[MessagePreview<'_>],
    len_max: usize,
) -> String {
    let render = |messages: &[MessagePreview<'_>]| {
        to_json(&NewMailPreview {
            r#type: TYPE_NEW_MAIL,
            subscription,
            mailbox,
            exists,
            messages,
        })
    };
    for count in (1..=messages.len()).rev() {
        let kept = &messages[..count];
        let whole = render(kept);
        if whole.len() <= len_max {
            return whole;
        }
        let longest = kept
            .iter()
            .map(|m| m.from.len().max(m.subject.len()))
            .max()
            .unwrap_or(0);
        let fits = |cap: usize| {
            let cut: Vec<(Cow<'_, str>, Cow<'_, str>)> = kept
                .iter()
                .map(|m| (cut_to(m.from, cap), cut_to(m.subject, cap)))
                .collect();
            let shortened: Vec<MessagePreview<'_>> = kept
                .iter()
                .zip(&cut)
                .map(|(m, (from, subject))| MessagePreview {
                    uid: m.uid,
                    from,
                    subject,
                })
                .collect();
            let json = render(&shortened);
            (json.len() <= len_max).then_some(json)
        };
        // The payload grows with `cap`: find the largest cap that fits.
        let (mut low, mut high) = (0, longest);
        let mut best = None;
        while low <= high {
            let mid = low + (high - low) / 2;
            match fits(mid) {
                Some(json) => {
                    best = Some((mid, json));
                    low = mid + 1;
                }
                None if mid == 0 => break,
                None => high = mid - 1,
            }
        }
        if let Some((cap, json)) = best {
            if cap >= PREVIEW_FIELD_LEN_MIN || count == 1 {
                return json;
            }
        }
    }
    new_mail(subscription, mailbox, exists)
}

/// `text` in at most `len_max` bytes: as is, or cut on a character boundary and ended
/// with `…`.
fn cut_to(text: &str, len_max: usize) -> Cow<'_, str> {
    const ELLIPSIS: &str = "\u{2026}";
    if text.len() <= len_max {
        return Cow::Borrowed(text);
    }
    let Some(mut keep) = len_max.checked_sub(ELLIPSIS.len()) else {
        return Cow::Borrowed("");
    };
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    Cow::Owned(format!("{}{ELLIPSIS}", &text[..keep]))
}

/// The proxy lost the IMAP session for good and the app must act (log in
/// again, re-subscribe). `reason` is a short machine-readable word chosen by
/// the caller, such as `auth_failed`.
pub fn reconnect(subscription: &str, reason: &str) -> String {
    to_json(&Reconnect {
        r#type: TYPE_RECONNECT,
        subscription,
        reason,
    })
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing structs of `&str` and integers into a String has no failure
    // path in serde_json (no maps with non-string keys, no I/O).
    serde_json::to_string(value).expect("serializing strings and integers cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_mail_shape() {
        assert_eq!(
            new_mail("sub-1", "INBOX", 42),
            r#"{"type":"new_mail","subscription":"sub-1","mailbox":"INBOX","exists":42}"#
        );
    }

    #[test]
    fn reconnect_shape() {
        assert_eq!(
            reconnect("sub-1", "auth_failed"),
            r#"{"type":"reconnect","subscription":"sub-1","reason":"auth_failed"}"#
        );
    }

    fn preview(n: u32, subject: &str) -> Vec<MessagePreview<'_>> {
        (0..n)
            .rev()
            .map(|uid| MessagePreview {
                uid,
                from: "Alice <alice@example.org>",
                subject,
            })
            .collect()
    }

    const MAX: usize = crate::ece::PAYLOAD_LEN_MAX;

    #[test]
    fn a_preview_that_fits_is_sent_whole() {
        let messages = preview(2, "Hello \"there\"");
        let json = new_mail_with_preview("s", "INBOX", 7, &messages, MAX);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "new_mail", "subscription": "s", "mailbox": "INBOX",
                "exists": 7, "messages": [
                    {"uid": 1, "from": "Alice <alice@example.org>", "subject": "Hello \"there\""},
                    {"uid": 0, "from": "Alice <alice@example.org>", "subject": "Hello \"there\""}]})
        );
    }

    #[test]
    fn a_50_kb_subject_is_cut_on_a_char_boundary_to_fit() {
        for subject in [
            "x".repeat(50_000),
            "\u{fc}".repeat(25_000),
            "\"".repeat(50_000),
        ] {
            let messages = preview(1, &subject);
            let json = new_mail_with_preview("s", "INBOX", 1, &messages, MAX);
            assert!(json.len() <= MAX, "{}", json.len());
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let cut = v["messages"][0]["subject"].as_str().unwrap();
            let kept = cut.strip_suffix('\u{2026}').expect("ends with an ellipsis");
            assert!(subject.starts_with(kept));
            assert!(
                json.len() > MAX - 16,
                "the fit uses the room: {}",
                json.len()
            );
            assert_eq!(v["messages"][0]["from"], "Alice <alice@example.org>");
        }
    }

    #[test]
    fn many_long_messages_shrink_then_the_oldest_go() {
        let subject = "y".repeat(2_000);
        let messages = preview(8, &subject);
        // Eight fit the push limit with their subjects shortened alike.
        let json = new_mail_with_preview("s", "INBOX", 8, &messages, MAX);
        assert!(json.len() <= MAX);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kept = v["messages"].as_array().unwrap();
        assert_eq!(kept.len(), 8);
        assert!(kept.iter().all(|m| m["subject"] == kept[0]["subject"]));
        // A tighter limit keeps fewer, each still readable.
        let json = new_mail_with_preview("s", "INBOX", 8, &messages, 700);
        assert!(json.len() <= 700);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kept = v["messages"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 8, "{}", kept.len());
        assert_eq!(kept[0]["uid"], 7, "the newest stays");
        for m in kept {
            assert!(m["subject"].as_str().unwrap().len() >= PREVIEW_FIELD_LEN_MIN);
        }
        // Nothing fits a tiny limit: plain new mail.
        let json = new_mail_with_preview("s", "INBOX", 8, &messages, 70);
        assert_eq!(json, new_mail("s", "INBOX", 8));
    }

    #[test]
    fn strings_are_escaped() {
        let json = new_mail("a\"b", "Gel\u{f6}scht\n", 0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["subscription"], "a\"b");
        assert_eq!(v["mailbox"], "Gel\u{f6}scht\n");
    }
}
