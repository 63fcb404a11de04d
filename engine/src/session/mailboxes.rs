//! The mailboxes a session watches besides the selected one. They are watched over the
//! same connection: with NOTIFY (RFC 5465) where the server offers it, else with STATUS
//! on the poll interval. Only sessions with more than one mailbox own this state.

use imap_codec_lite::{mutf7, AString, StatusItems};

/// A mailbox name as sent on the wire: `INBOX` in any case is `INBOX` (RFC 3501 §5.1:
/// case-insensitive), anything else modified UTF-7 (RFC 3501 §5.1.3).
pub fn wire_name(name: &str) -> Vec<u8> {
    if name.eq_ignore_ascii_case("INBOX") {
        b"INBOX".to_vec()
    } else {
        mutf7::encode(name)
    }
}

/// A watched mailbox other than the selected one, as a handover carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherState {
    /// The name as sent on the wire.
    pub wire: Vec<u8>,
    /// The UTF-8 name, when it differs.
    pub utf8: Option<Vec<u8>>,
    pub messages: u32,
    pub uidnext: u32,
    /// A first STATUS has set the baseline.
    pub known: bool,
}

/// One watched mailbox other than the selected one.
#[derive(Debug)]
pub struct Other {
    pub wire: Box<[u8]>,
    /// The UTF-8 name, kept when it differs from the wire name: Dovecot 2.3 names
    /// mailboxes in raw UTF-8 in the STATUS responses NOTIFY sends.
    utf8: Option<Box<[u8]>>,
    messages: u32,
    uidnext: u32,
    /// A first STATUS has set the baseline.
    known: bool,
}

impl Other {
    pub fn new(name: &str) -> Other {
        let wire = wire_name(name).into_boxed_slice();
        Other {
            utf8: (*wire != *name.as_bytes()).then(|| name.as_bytes().into()),
            wire,
            messages: 0,
            uidnext: 0,
            known: false,
        }
    }

    pub fn messages(&self) -> u32 {
        self.messages
    }

    /// What a handover carries of this mailbox ([`crate::handover`]).
    pub fn to_state(&self) -> OtherState {
        OtherState {
            wire: self.wire.to_vec(),
            utf8: self.utf8.as_deref().map(<[u8]>::to_vec),
            messages: self.messages,
            uidnext: self.uidnext,
            known: self.known,
        }
    }

    /// The mailbox a handover carried.
    pub fn from_state(state: &OtherState) -> Other {
        Other {
            wire: state.wire.clone().into_boxed_slice(),
            utf8: state.utf8.clone().map(Vec::into_boxed_slice),
            messages: state.messages,
            uidnext: state.uidnext,
            known: state.known,
        }
    }

    /// Whether `mailbox`, as a STATUS response names it, is this one.
    pub fn is(&self, mailbox: &AString<'_>) -> bool {
        if &*self.wire == b"INBOX" {
            let upper = mailbox.bytes().map(|b| b.to_ascii_uppercase());
            return upper.eq(b"INBOX".iter().copied());
        }
        mailbox.eq_bytes(&self.wire) || self.utf8.as_deref().is_some_and(|u| mailbox.eq_bytes(u))
    }

    /// Takes a STATUS result; true if it shows mail that arrived since the last one.
    /// The first result only sets the baseline.
    pub fn update(&mut self, items: &StatusItems) -> bool {
        let new = self.known
            && match (items.uidnext, items.messages) {
                // UIDNEXT only grows with new mail; MESSAGES also falls with expunges.
                (Some(uidnext), _) if self.uidnext != 0 => uidnext > self.uidnext,
                (_, Some(messages)) => messages > self.messages,
                _ => false,
            };
        if let Some(uidnext) = items.uidnext {
            self.uidnext = uidnext;
        }
        if let Some(messages) = items.messages {
            self.messages = messages;
        }
        self.known = true;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(messages: u32, uidnext: Option<u32>) -> StatusItems {
        StatusItems {
            messages: Some(messages),
            uidnext,
            ..StatusItems::default()
        }
    }

    #[test]
    fn new_mail_is_a_higher_uidnext_after_the_baseline() {
        let mut sent = Other::new("Sent");
        assert!(
            !sent.update(&items(5, Some(10))),
            "the first STATUS is the baseline"
        );
        assert!(
            !sent.update(&items(4, Some(10))),
            "an expunge is not new mail"
        );
        assert!(sent.update(&items(5, Some(11))));
        assert_eq!(sent.messages(), 5);
        // Without UIDNEXT (some NOTIFY STATUS responses), MESSAGES decides.
        let mut other = Other::new("x");
        assert!(!other.update(&items(1, None)));
        assert!(other.update(&items(2, None)));
    }

    #[test]
    fn names_go_on_the_wire_in_modified_utf7_and_inbox_in_any_case() {
        assert_eq!(wire_name("inbox"), b"INBOX");
        assert_eq!(wire_name("Entw\u{fc}rfe"), b"Entw&APw-rfe");
        let inbox = Other::new("Inbox");
        assert!(inbox.is(&AString::Atom(b"inbox")));
        let drafts = Other::new("Entw\u{fc}rfe");
        assert!(drafts.is(&AString::Quoted(b"Entw&APw-rfe")));
        assert!(drafts.is(&AString::Literal("Entw\u{fc}rfe".as_bytes())));
        assert!(!drafts.is(&AString::Atom(b"Entwrfe")));
    }
}
