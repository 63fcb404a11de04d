//! Jobs and the pure rules about them: payloads, merging new mail, what to do after an
//! attempt, and a subscription's coalescing slot. No clock, no channel: `now` is an
//! argument.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Preview;
use push::message::{self, About};
use push::{Backoff, Kind, Outcome, PushTarget};

use super::PushSubscription;

/// The smallest useful payload of a kind, sent once after a 413:
/// `{"type":"new_mail","subscription":ID,"tag":TAG}` or the same with `reconnect`,
/// `subscription` and `tag` present as `about` says. The app learns what happened and
/// for which account, and fetches the rest.
pub fn minimal_payload(kind: Kind, about: About<'_>) -> String {
    #[derive(serde::Serialize)]
    struct Minimal<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscription: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<&'a str>,
    }
    let r#type = match kind {
        Kind::NewMail => message::TYPE_NEW_MAIL,
        Kind::Reconnect => message::TYPE_RECONNECT,
    };
    // Serializing two strings into a String has no failure path.
    let (subscription, tag) = about.parts();
    serde_json::to_string(&Minimal {
        r#type,
        subscription,
        tag,
    })
    .unwrap_or_default()
}

// Jobs and the pure decisions about them.

#[derive(Debug)]
pub(super) enum What {
    NewMail {
        mailbox: String,
        exists: u32,
        preview: Option<Box<Preview>>,
        event_at: Instant,
    },
    Reconnect {
        reason: String,
    },
    /// A verification code, to the endpoint `to`.
    Verify {
        to: Kind,
        code: crate::verification::Encoded,
    },
}

/// The `type` of a verification payload.
pub const TYPE_VERIFY: &str = "verify";

/// `{"type":"verify","code":CODE}`, plus `subscription` and `tag` as `about` says (the
/// id only when encrypted to the device, like every payload).
pub fn verify_payload(about: About<'_>, code: &str) -> String {
    #[derive(serde::Serialize)]
    struct Verify<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscription: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<&'a str>,
        code: &'a str,
    }
    let (subscription, tag) = about.parts();
    // Serializing strings into a String has no failure path.
    serde_json::to_string(&Verify {
        r#type: TYPE_VERIFY,
        subscription,
        tag,
        code,
    })
    .unwrap_or_default()
}

/// One push to make, through all its attempts.
#[derive(Debug)]
pub(super) struct Job {
    /// Set at each hand-off to a worker; matches `Slot::in_flight`.
    pub(super) id: u64,
    pub(super) sub: Arc<PushSubscription>,
    pub(super) what: What,
    /// Send [`minimal_payload`] (after a 413).
    pub(super) minimal: bool,
    /// Retries scheduled so far; the [`Backoff`] attempt number.
    pub(super) retries: u32,
    /// Attempts handed out so far, this one included once it is out.
    pub(super) attempts: u32,
    pub(super) first_attempt_at: Option<Instant>,
    /// New mail: the slot epoch it belongs to. A reconnect, `forget` or
    /// `Gone` moves the slot to a new epoch, making older jobs stale.
    pub(super) epoch: u64,
}

impl Job {
    pub(super) fn new(sub: Arc<PushSubscription>, what: What, epoch: u64) -> Self {
        Self {
            id: 0,
            sub,
            what,
            minimal: false,
            retries: 0,
            attempts: 0,
            first_attempt_at: None,
            epoch,
        }
    }

    /// The endpoint the job goes to (and the urgency it goes with).
    pub(super) fn kind(&self) -> Kind {
        match self.what {
            What::NewMail { .. } => Kind::NewMail,
            What::Reconnect { .. } => Kind::Reconnect,
            What::Verify { to, .. } => to,
        }
    }

    /// New mail: coalesced in its subscription's slot. Reconnect and verification
    /// pushes go alone, first in their origin's turn.
    pub(super) fn is_new_mail(&self) -> bool {
        matches!(self.what, What::NewMail { .. })
    }

    pub(super) fn target(&self) -> &PushTarget {
        self.sub.target(self.kind())
    }

    pub(super) fn payload(&self) -> String {
        // The id as the payload shows it: text only here, at the edge.
        let id = self.sub.id.to_string();
        let about = self.about(&id);
        match &self.what {
            // Shrinking would drop the code, which is the whole message.
            What::Verify { code, .. } => verify_payload(about, code.as_str()),
            _ if self.minimal => minimal_payload(self.kind(), about),
            What::NewMail {
                mailbox,
                exists,
                preview: Some(preview),
                ..
            } if self.target().keys().is_some() => {
                let messages: Vec<message::MessagePreview<'_>> = preview
                    .messages
                    .iter()
                    .map(|m| message::MessagePreview {
                        uid: m.uid,
                        from: &m.from,
                        subject: &m.subject,
                    })
                    .collect();
                message::new_mail_with_preview(
                    about,
                    mailbox,
                    *exists,
                    &messages,
                    push::ece::PAYLOAD_LEN_MAX,
                )
            }
            What::NewMail {
                mailbox, exists, ..
            } => message::new_mail(about, mailbox, *exists),
            What::Reconnect { reason } => message::reconnect(about, reason),
        }
    }

    /// Who the payload is about: the id only if it is encrypted to the device.
    pub(super) fn about<'a>(&'a self, id: &'a str) -> About<'a> {
        let encrypted = self.target().keys().is_some();
        About::new(id, self.sub.tag.as_ref(), encrypted)
    }

    pub(super) fn event_at(&self) -> Option<Instant> {
        match self.what {
            What::NewMail { event_at, .. } => Some(event_at),
            What::Reconnect { .. } | What::Verify { .. } => None,
        }
    }
}

/// Two new-mail jobs for one subscription as one: the newer one's mailbox
/// and count, the older one's first event (for latency) and retry state (so
/// a failing endpoint keeps backing off), minimal if either was. Previews of
/// the same mailbox merge, newest messages first; the payload keeps as many
/// as fit.
pub(super) fn merge_mail(older: Job, newer: Job) -> Job {
    let older_event_at = older.event_at();
    let (older_mailbox, older_preview) = match older.what {
        What::NewMail {
            ref mailbox,
            ref preview,
            ..
        } => (Some(mailbox.as_str()), preview.as_deref()),
        What::Reconnect { .. } | What::Verify { .. } => (None, None),
    };
    let what = match newer.what {
        What::NewMail {
            mailbox,
            exists,
            preview,
            event_at,
        } => {
            let event_at = older_event_at.map_or(event_at, |older| older.min(event_at));
            let preview = match (preview, older_preview) {
                (Some(newer), Some(older)) if older_mailbox == Some(mailbox.as_str()) => {
                    let mut merged = older.clone();
                    merged.merge_newer(*newer);
                    Some(Box::new(merged))
                }
                (newer, _) => newer,
            };
            What::NewMail {
                mailbox,
                exists,
                preview,
                event_at,
            }
        }
        other @ (What::Reconnect { .. } | What::Verify { .. }) => other,
    };
    Job {
        what,
        minimal: older.minimal || newer.minimal,
        retries: older.retries.max(newer.retries),
        attempts: older.attempts.max(newer.attempts),
        first_attempt_at: older.first_attempt_at.or(newer.first_attempt_at),
        ..newer
    }
}

/// What to do with a job after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    Delivered,
    Gone,
    /// Try again at once with the minimal payload.
    Shrink,
    RetryIn(Duration),
    Failed,
}

pub(super) fn decide(
    outcome: &Outcome,
    minimal: bool,
    retries: u32,
    elapsed: Duration,
    backoff: &Backoff,
    random: u32,
) -> Next {
    match outcome {
        Outcome::Delivered => Next::Delivered,
        Outcome::Gone => Next::Gone,
        Outcome::TooLarge if minimal => Next::Failed,
        Outcome::TooLarge => Next::Shrink,
        Outcome::RateLimited { .. } | Outcome::Retry { .. } => {
            match backoff.after(outcome, retries, elapsed, random) {
                Some(delay) => Next::RetryIn(delay),
                None => Next::Failed,
            }
        }
        Outcome::Rejected { .. } | Outcome::Redirect { .. } | Outcome::Unsendable(_) => {
            Next::Failed
        }
    }
}

// Per-subscription coalescing state.

/// The new-mail push waiting to go, and the earliest it may (a retry delay
/// or an origin hold; the coalescing window is the slot's).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) job: Job,
    pub(super) not_before: Instant,
}

/// One subscription's new-mail state in the scheduler.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) epoch: u64,
    /// No new-mail push before this (a delivered push + the window).
    pub(super) window_end: Instant,
    /// The id of the job with a worker, if any.
    pub(super) in_flight: Option<u64>,
    /// Listed in the scheduler's new-mail ready queue.
    pub(super) queued: bool,
    pub(super) pending: Option<Pending>,
}

impl Slot {
    pub(super) fn new(epoch: u64, now: Instant) -> Self {
        Self {
            epoch,
            window_end: now,
            in_flight: None,
            queued: false,
            pending: None,
        }
    }

    /// Adds a new-mail job. `true` if it merged into the pending push (one
    /// job fewer); otherwise it is now the pending push.
    pub(super) fn add(&mut self, job: Job, not_before: Instant) -> bool {
        match self.pending.take() {
            Some(p) => {
                let (older, newer) = by_age(p.job, job);
                self.pending = Some(Pending {
                    job: merge_mail(older, newer),
                    not_before: p.not_before.max(not_before),
                });
                true
            }
            None => {
                self.pending = Some(Pending { job, not_before });
                false
            }
        }
    }

    /// When the pending push may go; `None` if nothing is pending or a push
    /// is in flight (it must finish first, to keep pushes in order). While
    /// `flushing` (shutdown), the window no longer applies.
    pub(super) fn due(&self, flushing: bool) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        let pending = self.pending.as_ref()?;
        Some(if flushing {
            pending.not_before
        } else {
            pending.not_before.max(self.window_end)
        })
    }

    /// Nothing pending, nothing in flight, and no window to enforce: the
    /// slot can go.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.pending.is_none() && self.in_flight.is_none() && now >= self.window_end
    }
}

/// A retried job is older than anything pending (which arrived while it
/// was in flight); a fresh event is newer. Retried jobs have an attempt.
pub(super) fn by_age(a: Job, b: Job) -> (Job, Job) {
    if b.first_attempt_at.is_some() && a.first_attempt_at.is_none() {
        (b, a)
    } else {
        (a, b)
    }
}
