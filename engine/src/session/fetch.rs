//! Filters and previews: which header fields of new messages a session fetches, and what
//! it makes of the answer. Only sessions whose spec asks for a filter or a preview own
//! this state; the messages of one round are kept only while the `UID FETCH` runs.

use crate::spec::{Filter, FILTER_HEADERS_MAX};
use imap_codec_lite::headers::{decode_for_display, for_each_address, for_each_field, parse_fetch};

/// Most messages a preview holds (the newest ones).
pub const PREVIEW_MESSAGES_MAX: usize = 8;
/// Longest `from` or `subject` in a preview, in bytes of UTF-8. Longer ones are cut on a
/// character boundary and end with `…`.
pub const PREVIEW_FIELD_LEN_MAX: usize = 1024;
/// Most octets of header the server is asked to send per message (a partial fetch,
/// `<0.N>`): a message with a huge header costs the session no more than this.
pub const HEADER_BLOCK_LEN_MAX: u32 = 16 * 1024;
/// Most field names in one `UID FETCH`: `FROM`, `SUBJECT` and the filter's headers.
pub const FETCH_FIELDS_MAX: usize = 2 + FILTER_HEADERS_MAX;

/// `From`, `Subject` and UID of one new message, decoded for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageSummary {
    pub uid: u32,
    /// The `From` field as written (display name and address), RFC 2047 decoded; empty if
    /// absent.
    pub from: String,
    /// The `Subject` field, RFC 2047 decoded; empty if absent.
    pub subject: String,
}

/// The newest new messages of the selected mailbox that a `NewMail` reports, newest first,
/// at most [`PREVIEW_MESSAGES_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    pub messages: Vec<MessageSummary>,
}

impl Preview {
    /// Adds the messages of a later round in front, keeping the newest.
    pub fn merge_newer(&mut self, newer: Preview) {
        let mut messages = newer.messages;
        messages.append(&mut self.messages);
        messages.truncate(PREVIEW_MESSAGES_MAX);
        self.messages = messages;
    }
}

/// What a finished round decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Report `NewMail`.
    pub report: bool,
    pub preview: Option<Box<Preview>>,
    /// The UIDNEXT to fetch from next time, if the round learnt one.
    pub uidnext: Option<u32>,
}

/// A session's filter and preview settings, and the round in progress.
#[derive(Debug)]
pub struct FetchPlan {
    /// Upper-case names for `HEADER.FIELDS`.
    fields: Box<[Box<[u8]>]>,
    /// Upper-case filter header names; with `senders`, empty means no filter.
    headers: Box<[Box<[u8]>]>,
    /// Lower-case filter addresses.
    senders: Box<[Box<[u8]>]>,
    filtering: bool,
    preview: bool,
    round: Option<Round>,
}

/// One `UID FETCH` in progress.
#[derive(Debug)]
struct Round {
    from_uid: u32,
    /// Highest UID seen at or above `from_uid`; 0 for none.
    uid_max: u32,
    matched: u32,
    /// Summaries of matching messages, oldest first, at most [`PREVIEW_MESSAGES_MAX`].
    kept: Vec<MessageSummary>,
    /// Reused for unfolded field values.
    scratch: Vec<u8>,
}

impl FetchPlan {
    /// The plan for a spec, or `None` when it asks for neither a filter nor a preview. The
    /// filter MUST have been validated ([`Filter::validate`]).
    pub fn new(filter: Option<&Filter>, preview: bool) -> Option<FetchPlan> {
        if filter.is_none() && !preview {
            return None;
        }
        let upper = |s: &String| s.to_ascii_uppercase().into_bytes().into_boxed_slice();
        let lower = |s: &String| s.to_ascii_lowercase().into_bytes().into_boxed_slice();
        let headers: Box<[Box<[u8]>]> = filter.map_or(Box::default(), |f| {
            f.headers
                .iter()
                .take(FILTER_HEADERS_MAX)
                .map(upper)
                .collect()
        });
        let senders: Box<[Box<[u8]>]> =
            filter.map_or(Box::default(), |f| f.senders.iter().map(lower).collect());
        let mut fields: Vec<Box<[u8]>> = Vec::with_capacity(FETCH_FIELDS_MAX);
        if preview || !senders.is_empty() {
            fields.push(b"FROM"[..].into());
        }
        if preview {
            fields.push(b"SUBJECT"[..].into());
        }
        for h in headers.iter() {
            if !fields.contains(h) {
                fields.push(h.clone());
            }
        }
        Some(FetchPlan {
            fields: fields.into_boxed_slice(),
            headers,
            senders,
            filtering: filter.is_some(),
            preview,
            round: None,
        })
    }

    /// The field names to fetch, in order; at most [`FETCH_FIELDS_MAX`].
    pub fn fields(&self) -> impl Iterator<Item = &[u8]> {
        self.fields.iter().map(|f| &f[..])
    }

    /// A round starts: messages with a UID from `from_uid` on are new.
    pub fn begin(&mut self, from_uid: u32) {
        self.round = Some(Round {
            from_uid: from_uid.max(1),
            uid_max: 0,
            matched: 0,
            kept: Vec::new(),
            scratch: Vec::new(),
        });
    }

    #[cfg(test)]
    fn in_round(&self) -> bool {
        self.round.is_some()
    }

    /// The round's first UID (for the command).
    pub fn first_uid(&self) -> u32 {
        self.round.as_ref().map_or(1, |r| r.from_uid)
    }

    /// One FETCH response's attributes, during a round. Responses without a header block
    /// (flag updates) and UIDs below the round's start (`n:*` always includes the last
    /// message) are ignored.
    pub fn on_fetch(&mut self, attrs: &[u8]) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let fetched = parse_fetch(attrs);
        let (Some(uid), Some(block)) = (fetched.uid, fetched.block) else {
            return;
        };
        if uid < round.from_uid {
            return;
        }
        round.uid_max = round.uid_max.max(uid);
        let mut header_present = false;
        let mut sender_known = false;
        let mut from = String::new();
        let mut subject = String::new();
        let (mut have_from, mut have_subject) = (false, false);
        let mut scratch = std::mem::take(&mut round.scratch);
        for_each_field(&block, &mut scratch, |name, value| {
            if self.headers.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                header_present = true;
            }
            if name.eq_ignore_ascii_case(b"FROM") && !have_from {
                have_from = true;
                for_each_address(value, |a| {
                    sender_known |= self.senders.iter().any(|s| a.eq_ignore_ascii_case(s));
                });
                if self.preview {
                    decode_for_display(value, PREVIEW_FIELD_LEN_MAX, &mut from);
                }
            }
            if name.eq_ignore_ascii_case(b"SUBJECT") && !have_subject && self.preview {
                have_subject = true;
                decode_for_display(value, PREVIEW_FIELD_LEN_MAX, &mut subject);
            }
        });
        round.scratch = scratch;
        if self.filtering && !header_present && !sender_known {
            return;
        }
        round.matched = round.matched.saturating_add(1);
        if self.preview {
            if round.kept.len() == PREVIEW_MESSAGES_MAX {
                round.kept.remove(0);
            }
            round.kept.push(MessageSummary { uid, from, subject });
        }
    }

    /// The round ended with the tagged answer; `ok` if it was `OK`. A failed round reports
    /// new mail without a preview: a filter fails open rather than lose mail.
    pub fn finish(&mut self, ok: bool) -> Verdict {
        let Some(round) = self.round.take() else {
            return Verdict::default();
        };
        if !ok {
            return Verdict {
                report: true,
                ..Verdict::default()
            };
        }
        let uidnext = (round.uid_max != 0).then(|| round.uid_max.saturating_add(1));
        let report = round.matched > 0;
        let preview = (self.preview && report && !round.kept.is_empty()).then(|| {
            let mut messages = round.kept;
            messages.reverse();
            Box::new(Preview { messages })
        });
        Verdict {
            report,
            preview,
            uidnext,
        }
    }

    /// Drops a round cut short (the session is ending).
    pub fn abandon(&mut self) {
        self.round = None;
    }

    /// The filter and preview setting this plan was made from, when no fetch is under
    /// way (a handover carries them; [`FetchPlan::new`] makes the same plan again).
    pub fn to_options(&self) -> Option<crate::spec::WatchOptions> {
        if self.round.is_some() {
            return None;
        }
        let text = |names: &[Box<[u8]>]| -> Vec<String> {
            names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect()
        };
        let filter = self.filtering.then(|| Filter {
            headers: text(&self.headers),
            senders: text(&self.senders),
        });
        Some(crate::spec::WatchOptions {
            filter,
            preview: self.preview,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_filter() -> Filter {
        Filter {
            headers: vec!["Chat-Version".into()],
            senders: vec!["Boss@Example.org".into()],
        }
    }

    fn fetch(uid: u32, block: &str) -> Vec<u8> {
        format!(
            "UID {uid} BODY[HEADER.FIELDS (FROM SUBJECT CHAT-VERSION)] {{{}}}\r\n{block}",
            block.len()
        )
        .into_bytes()
    }

    #[test]
    fn fields_asked_for_follow_the_settings() {
        let names = |p: &FetchPlan| p.fields().map(|f| f.to_vec()).collect::<Vec<_>>();
        assert!(FetchPlan::new(None, false).is_none());
        let p = FetchPlan::new(None, true).unwrap();
        assert_eq!(names(&p), vec![b"FROM".to_vec(), b"SUBJECT".to_vec()]);
        let headers_only = Filter {
            headers: vec!["Chat-Version".into(), "chat-version".into()],
            senders: vec![],
        };
        let p = FetchPlan::new(Some(&headers_only), false).unwrap();
        assert_eq!(names(&p), vec![b"CHAT-VERSION".to_vec()]);
        let p = FetchPlan::new(Some(&chat_filter()), false).unwrap();
        assert_eq!(names(&p), vec![b"FROM".to_vec(), b"CHAT-VERSION".to_vec()]);
    }

    #[test]
    fn a_filter_counts_header_or_sender_matches_only() {
        let mut p = FetchPlan::new(Some(&chat_filter()), true).unwrap();
        p.begin(10);
        // The last message again, below the start: `n:*` returns it.
        p.on_fetch(&fetch(9, "Chat-Version: 1.0\r\n\r\n"));
        p.on_fetch(&fetch(10, "From: x@y\r\nSubject: plain\r\n\r\n"));
        p.on_fetch(&fetch(
            11,
            "From: A <a@b>\r\nSubject: chat\r\nChat-Version: 1.0\r\n\r\n",
        ));
        p.on_fetch(&fetch(
            12,
            "From: The Boss <boss@EXAMPLE.org>\r\nSubject: =?UTF-8?Q?=C3=BC?=\r\n\r\n",
        ));
        p.on_fetch(b"UID 13 FLAGS (\\Seen)");
        let v = p.finish(true);
        assert!(v.report);
        assert_eq!(v.uidnext, Some(13));
        let preview = v.preview.unwrap();
        let got: Vec<(u32, &str, &str)> = preview
            .messages
            .iter()
            .map(|m| (m.uid, m.from.as_str(), m.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (12, "The Boss <boss@EXAMPLE.org>", "\u{fc}"),
                (11, "A <a@b>", "chat")
            ]
        );
        assert!(!p.in_round());
        // No match: nothing to report, but UIDNEXT still moves on.
        p.begin(13);
        p.on_fetch(&fetch(13, "From: x@y\r\n\r\n"));
        assert_eq!(
            p.finish(true),
            Verdict {
                report: false,
                preview: None,
                uidnext: Some(14)
            }
        );
        // Nothing new at all (only the old last message).
        p.begin(14);
        p.on_fetch(&fetch(13, "Chat-Version: 1\r\n\r\n"));
        assert_eq!(p.finish(true), Verdict::default());
    }

    #[test]
    fn a_failed_round_fails_open_and_previews_keep_the_newest() {
        let mut p = FetchPlan::new(Some(&chat_filter()), false).unwrap();
        p.begin(1);
        p.on_fetch(&fetch(1, "From: x@y\r\n\r\n"));
        assert_eq!(
            p.finish(false),
            Verdict {
                report: true,
                preview: None,
                uidnext: None
            }
        );
        let mut p = FetchPlan::new(None, true).unwrap();
        p.begin(1);
        for uid in 1..=20 {
            p.on_fetch(&fetch(uid, &format!("Subject: {uid}\r\n\r\n")));
        }
        let v = p.finish(true);
        let uids: Vec<u32> = v.preview.unwrap().messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, (13..=20).rev().collect::<Vec<_>>());
        let mut older = Preview {
            messages: vec![MessageSummary {
                uid: 1,
                from: String::new(),
                subject: String::new(),
            }],
        };
        older.merge_newer(Preview {
            messages: vec![MessageSummary {
                uid: 2,
                from: String::new(),
                subject: String::new(),
            }],
        });
        assert_eq!(
            older.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            [2, 1]
        );
    }
}
