//! The JSON payloads the proxy pushes.
//!
//! ```text
//! {"type":"new_mail","subscription":ID,"mailbox":MAILBOX,"exists":N}
//! {"type":"reconnect","subscription":ID,"reason":REASON}
//! ```
//!
//! `ID` is the proxy's opaque subscription id, as a JSON string, so the
//! receiving app can tell its accounts apart. Payloads stay small: encrypted
//! Web Push allows at most [`crate::ece::PAYLOAD_LEN_MAX`] bytes, and the
//! sender reports [`crate::Outcome::TooLarge`] beyond that.

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

    #[test]
    fn strings_are_escaped() {
        let json = new_mail("a\"b", "Gel\u{f6}scht\n", 0);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["subscription"], "a\"b");
        assert_eq!(v["mailbox"], "Gel\u{f6}scht\n");
    }
}
