//! What a subscription carries across an in-place upgrade (see [`crate::upgrade`]), and the
//! core that goes on with it in the new process.
//!
//! Only a settled subscription is carried: ready (in IDLE or polled), its 201 sent and
//! its endpoints proven. Its push targets and keys are not carried: the journal holds
//! them, durable, and the new process reads them there; the image holds what the journal
//! does not (the registry's fields and the session). So a subscription is carried only
//! when both sides agree, and one the image names but the journal does not is dropped.

use std::hash::Hash;

use engine::Since;

use super::{Core, Now};
use crate::config::Config;
use crate::delivery::PushSubscription;
use crate::fd_budget::Budget;
use crate::id::SubscriptionId;
use crate::journal::Record;
use crate::registry::{Account, Key, State, Subscription};

/// A settled subscription's registry fields, for the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    pub id: SubscriptionId,
    pub host: String,
    pub key: Key,
    pub account: Account,
    pub mailboxes: Vec<String>,
    pub since: Option<Since>,
    /// [`State::Idle`] or [`State::Polling`].
    pub state: State,
    pub idle: bool,
    pub notify: bool,
    pub last_new_mail: Option<(u64, u32)>,
    pub pushes_sent: u64,
    pub pushes_failed: u64,
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// What `session`'s subscription carries to the next process, if it is settled.
    pub fn carry(&self, session: S) -> Option<Carried> {
        let sub = self.registry.by_session(session)?;
        let settled = matches!(sub.state, State::Idle | State::Polling)
            && sub.waiting.is_none()
            && sub.verification.is_none();
        settled.then(|| Carried {
            id: sub.id,
            host: sub.host.to_string(),
            key: sub.key,
            account: sub.account,
            mailboxes: sub.mailboxes.to_vec(),
            since: sub.since,
            state: sub.state,
            idle: sub.idle,
            notify: sub.notify,
            last_new_mail: sub.last_new_mail,
            pushes_sent: sub.pushes_sent,
            pushes_failed: sub.pushes_failed,
        })
    }

    /// A core for a server that replaced the process before it in place: each journal
    /// record whose subscription came carried with its session goes on as it was (no
    /// push); every other record gets its `server_restart` push, as after a crash.
    /// Returns the core and the sessions it took: the caller MUST adopt exactly those
    /// into the engine (and drop the rest).
    pub fn resumed(
        config: Config,
        budget: Budget,
        vapid_public_key: String,
        leftovers: Vec<Record>,
        carried: Vec<(Carried, S)>,
        now: Now,
    ) -> (Core<S, R>, Vec<S>) {
        let mut by_id: std::collections::HashMap<SubscriptionId, (Carried, S)> =
            carried.into_iter().map(|(c, s)| (c.id, (c, s))).collect();
        let mut restart = Vec::new();
        let mut resumed = Vec::new();
        for record in leftovers {
            let carried = by_id.remove(&record.id);
            match (carried, subscription(&record, now)) {
                (Some((c, session)), Some(push)) if !record.verifying => {
                    resumed.push((c, session, push, record.created_unix))
                }
                _ => restart.push(record),
            }
        }
        let mut core = Core::new(config, budget, vapid_public_key, restart, now);
        let mut sessions = Vec::with_capacity(resumed.len());
        for (c, session, push, created_unix) in resumed {
            sessions.push(session);
            // Ranked before any registration this process will take.
            let arrival = core.next_arrival;
            core.next_arrival += 1;
            core.registry.insert(
                Subscription {
                    id: c.id,
                    host: c.host.into(),
                    session: Some(session),
                    key: c.key,
                    account: c.account,
                    push,
                    mailboxes: c.mailboxes.into(),
                    since: c.since,
                    state: c.state,
                    idle: c.idle,
                    notify: c.notify,
                    created_unix,
                    last_new_mail: c.last_new_mail,
                    pushes_sent: c.pushes_sent,
                    pushes_failed: c.pushes_failed,
                    waiting: None,
                    verification: None,
                },
                arrival,
            );
            // The key was live in the last process: it is live here at once.
            let _ = core.registry.promote(&c.id);
        }
        (core, sessions)
    }
}

/// The push subscription a journal record describes, if it is usable.
fn subscription(record: &Record, now: Now) -> Option<std::sync::Arc<PushSubscription>> {
    let new_mail = record.new_mail.to_target().ok()?;
    let reconnect = record.reconnect.to_target().ok()?;
    Some(PushSubscription::new_tagged(
        record.id,
        new_mail,
        reconnect,
        record.tag.clone(),
        now.unix,
    ))
}
