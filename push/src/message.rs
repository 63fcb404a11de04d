//! The JSON payloads the proxy pushes.
//!
//! ```text
//! {"type":"new_mail","subscription":ID,"tag":TAG,"mailbox":MAILBOX,"exists":N}
//! {"type":"new_mail","subscription":ID,"tag":TAG,"mailbox":MAILBOX,"exists":N,
//!  "messages":[{"uid":U,"from":FROM,"subject":SUBJECT}, ...]}
//! {"type":"reconnect","subscription":ID,"tag":TAG,"reason":REASON}
//! ```
//!
//! `messages` (a preview, newest first) is only for encrypted Web Push: the push service
//! must not be able to read it (RFC 8291). [`new_mail_with_preview`] fits it into the
//! payload limit.
//!
//! `subscription` (the proxy's subscription id) and `tag` are each present or absent as
//! [`About`] says. The id is a capability: GET and DELETE on the proxy's API need
//! nothing else, so it goes only into payloads encrypted to the device, never into one
//! the push service can read. `tag` is the app's own opaque string from the
//! registration (at most [`Tag::LEN_MAX`] bytes), present whenever the app gave one, so
//! that it can tell its accounts apart in every push. Payloads stay small: encrypted
//! Web Push allows at most [`crate::ece::PAYLOAD_LEN_MAX`] bytes, and the
//! sender reports [`crate::Outcome::TooLarge`] beyond that.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The `type` values, for receivers written in Rust (tests, tools).
pub const TYPE_NEW_MAIL: &str = "new_mail";
pub const TYPE_RECONNECT: &str = "reconnect";

/// The app's own label for a subscription: opaque to the proxy, at most
/// [`Tag::LEN_MAX`] bytes. `Debug` does not show it (it may name a person's account).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// The longest tag, in bytes.
    pub const LEN_MAX: usize = 64;

    /// `None` past [`Tag::LEN_MAX`] bytes.
    pub fn new(tag: &str) -> Option<Tag> {
        (tag.len() <= Self::LEN_MAX).then(|| Tag(tag.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tag(<{} bytes>)", self.0.len())
    }
}

/// Which subscription a payload is about, as far as its reader may know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct About<'a> {
    subscription: Option<&'a str>,
    tag: Option<&'a str>,
}

impl<'a> About<'a> {
    /// The rule of the module docs: the subscription id only when the payload is
    /// `encrypted` to the device; the tag whenever there is one.
    pub fn new(subscription: &'a str, tag: Option<&'a Tag>, encrypted: bool) -> Self {
        Self {
            subscription: encrypted.then_some(subscription),
            tag: tag.map(Tag::as_str),
        }
    }

    /// The subscription id and the tag, each if the payload carries it.
    pub fn parts(&self) -> (Option<&'a str>, Option<&'a str>) {
        (self.subscription, self.tag)
    }
}

#[derive(Serialize)]
struct NewMail<'a> {
    r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    reason: &'a str,
}

/// The mailbox now holds `exists` messages (the IMAP `EXISTS` count).
pub fn new_mail(about: About<'_>, mailbox: &str, exists: u32) -> String {
    to_json(&NewMail {
        r#type: TYPE_NEW_MAIL,
        subscription: about.subscription,
        tag: about.tag,
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
    about: About<'_>,
    mailbox: &str,
    exists: u32,
    messages: &[MessagePreview<'_>],
    len_max: usize,
) -> String {
    let render = |messages: &[MessagePreview<'_>]| {
        to_json(&NewMailPreview {
            r#type: TYPE_NEW_MAIL,
            subscription: about.subscription,
            tag: about.tag,
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
    new_mail(about, mailbox, exists)
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
pub fn reconnect(about: About<'_>, reason: &str) -> String {
    to_json(&Reconnect {
        r#type: TYPE_RECONNECT,
        subscription: about.subscription,
        tag: about.tag,
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

    /// Encrypted, no tag: the id alone, as before tags existed.
    fn sealed(id: &str) -> About<'_> {
        About::new(id, None, true)
    }

    #[test]
    fn new_mail_shape() {
        assert_eq!(
            new_mail(sealed("sub-1"), "INBOX", 42),
            r#"{"type":"new_mail","subscription":"sub-1","mailbox":"INBOX","exists":42}"#
        );
    }

    #[test]
    fn reconnect_shape() {
        assert_eq!(
            reconnect(sealed("sub-1"), "auth_failed"),
            r#"{"type":"reconnect","subscription":"sub-1","reason":"auth_failed"}"#
        );
    }

    #[test]
    fn the_id_only_when_encrypted_the_tag_always() {
        let tag = Tag::new("work").unwrap();
        assert_eq!(
            new_mail(About::new("sub-1", Some(&tag), false), "INBOX", 1),
            r#"{"type":"new_mail","tag":"work","mailbox":"INBOX","exists":1}"#
        );
        assert_eq!(
            reconnect(About::new("sub-1", None, false), "gone"),
            r#"{"type":"reconnect","reason":"gone"}"#
        );
        assert_eq!(
            new_mail(About::new("sub-1", Some(&tag), true), "INBOX", 1),
            r#"{"type":"new_mail","subscription":"sub-1","tag":"work","mailbox":"INBOX","exists":1}"#
        );
    }

    #[test]
    fn tags_are_at_most_64_bytes_and_not_shown_by_debug() {
        assert!(Tag::new(&"\u{e9}".repeat(32)).is_some());
        assert!(Tag::new(&format!("{}x", "\u{e9}".repeat(32))).is_none());
        assert!(Tag::new("").is_some());
        let tag = Tag::new("alice@example.org").unwrap();
        assert_eq!(format!("{tag:?}"), "Tag(<17 bytes>)");
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
        let json = new_mail_with_preview(sealed("s"), "INBOX", 7, &messages, MAX);
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
            let json = new_mail_with_preview(sealed("s"), "INBOX", 1, &messages, MAX);
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
        let json = new_mail_with_preview(sealed("s"), "INBOX", 8, &messages, MAX);
        assert!(json.len() <= MAX);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kept = v["messages"].as_array().unwrap();
        assert_eq!(kept.len(), 8);
        assert!(kept.iter().all(|m| m["subject"] == kept[0]["subject"]));
        // A tighter limit keeps fewer, each still readable.
        let json = new_mail_with_preview(sealed("s"), "INBOX", 8, &messages, 700);
        assert!(json.len() <= 700);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let kept = v["messages"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 8, "{}", kept.len());
        assert_eq!(kept[0]["uid"], 7, "the newest stays");
        for m in kept {
            assert!(m["subject"].as_str().unwrap().len() >= PREVIEW_FIELD_LEN_MIN);
        }
        // Nothing fits a tiny limit: plain new mail.
        let json = new_mail_with_preview(sealed("s"), "INBOX", 8, &messages, 70);
        assert_eq!(json, new_mail(sealed("s"), "INBOX", 8));
    }

    #[test]
    fn strings_are_escaped() {
        let json = new_mail(sealed("a\"b"), "Gel\u{f6}scht\n", 0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["subscription"], "a\"b");
        assert_eq!(v["mailbox"], "Gel\u{f6}scht\n");
    }
}
