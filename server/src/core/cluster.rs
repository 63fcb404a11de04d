//! The rules of a node in a cluster (a PostgreSQL `journal`): when to renew the
//! heartbeat, when to claim a lost node's subscriptions, when to fence this node, and
//! what each of these pushes. The SQL is the journal thread's
//! ([`crate::journal::postgres`]); here are only its inputs and outputs.
//!
//! - **Heartbeat.** Every `heartbeat_secs` the core asks for a renewal
//!   ([`ClusterOp::Heartbeat`]); the answer says whether it reached the database.
//! - **Claims.** After each renewal that came back, the core asks for the rows of lost
//!   nodes (heartbeat older than `node_lost_after_secs`, judged by the database's clock),
//!   [`CLAIM_BATCH_MAX`] at a time, again at once while a batch comes back full. Each
//!   claimed subscription gets exactly one reconnect push, `node_lost`, and leaves the
//!   journal once that push is settled (as a restart's leftovers do). One still verifying
//!   gets nothing and leaves at once.
//! - **Fencing.** A node that has not renewed its heartbeat for
//!   [`crate::node::fence_after`] (before any other node may judge it lost) stops every
//!   session WITHOUT a push: the survivors push `node_lost`, so no user gets two sessions
//!   or a push after `node_lost`. Registrations are refused and `/readyz` says
//!   `journal_unavailable` until a renewal comes back; then the node takes back the rows
//!   it still owns ([`ClusterOp::ClaimOwn`]: nobody claimed them meanwhile) and pushes
//!   `node_lost` to each, since their sessions were stopped.
//! - **Dropped.** Another node took a subscription's key over, or it was deleted through
//!   another node ([`ClusterEvent::Dropped`]): its session ends, no push.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{Core, Now, Output, PushJob};
use crate::api::ApiError;
use crate::delivery::PushSubscription;
use crate::error_code::ErrorCode;
use crate::id::SubscriptionId;
use crate::journal::{ClusterEvent, ClusterOp, Record};

/// Rows claimed in one transaction: a lost node's subscriptions are taken over in
/// batches, so that one claim holds its locks briefly and pushes a bounded burst.
pub const CLAIM_BATCH_MAX: usize = 1000;

/// Renewals asked for and not answered yet, at most: their send times are kept to know
/// from when a renewal that comes back counts. Past it the oldest is forgotten (its
/// answer then renews nothing, which can only fence earlier, never later).
pub const HEARTBEATS_IN_FLIGHT_MAX: usize = 64;

/// The reconnect push reason of a claimed subscription.
pub const NODE_LOST: &str = "node_lost";

/// A node's liveness, in the core.
#[derive(Debug)]
pub(super) struct Liveness {
    every: Duration,
    fence_after: Duration,
    /// When the last renewal that came back was sent: the database's heartbeat is no
    /// older than this.
    renewed_sent: Instant,
    /// Renewals asked for, by ticket, with when.
    in_flight: VecDeque<(u64, Instant)>,
    next_due: Instant,
    fenced: bool,
    /// A claim of lost nodes' rows is in flight, asked at this time. One unanswered for
    /// `fence_after` is taken as lost (its op may have been refused by a full journal
    /// queue), so that claims never stop for good.
    claiming: Option<Instant>,
}

impl Liveness {
    /// A node that renewed its heartbeat at `now` (the journal's open does).
    pub(super) fn new(heartbeat: Duration, lost_after: Duration, now: Instant) -> Liveness {
        Liveness {
            every: heartbeat,
            fence_after: crate::node::fence_after(heartbeat, lost_after),
            renewed_sent: now,
            in_flight: VecDeque::new(),
            next_due: now + heartbeat,
            fenced: false,
            claiming: None,
        }
    }

    /// How long a node may take to end a session another node deleted: past it, it
    /// cannot push any more (it fences itself within this for want of a heartbeat).
    pub(super) fn fence_after(&self) -> Duration {
        self.fence_after
    }

    pub(super) fn due(&self) -> Instant {
        let fence = self.renewed_sent + self.fence_after;
        if self.fenced {
            self.next_due
        } else {
            self.next_due.min(fence)
        }
    }

    pub(super) fn fenced(&self) -> bool {
        self.fenced
    }
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// Whether this node is fenced (see the module docs): it takes no registration.
    pub fn fenced(&self) -> bool {
        self.liveness.as_ref().is_some_and(Liveness::fenced)
    }

    /// A deadline may have passed: renew the heartbeat, or fence this node.
    pub(super) fn cluster_tick(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        let Some(live) = self.liveness.as_mut() else {
            return;
        };
        let fence = !live.fenced && now >= live.renewed_sent + live.fence_after;
        let renew = now >= live.next_due;
        if renew {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            if live.in_flight.len() >= HEARTBEATS_IN_FLIGHT_MAX {
                live.in_flight.pop_front();
            }
            live.in_flight.push_back((ticket, now));
            live.next_due = now + live.every;
            self.out
                .push_back(Output::Cluster(ClusterOp::Heartbeat { ticket }));
        }
        if fence {
            self.fence(now);
        }
    }

    pub(super) fn on_cluster(&mut self, event: ClusterEvent, now: Now) {
        match event {
            ClusterEvent::Heartbeat { ticket, ok } => self.on_heartbeat(ticket, ok, now.instant),
            ClusterEvent::Claimed { records, own, ok } => {
                self.on_claimed(records, own, ok, now);
            }
            ClusterEvent::Dropped { id } => self.drop_session(&id),
            ClusterEvent::DeleteAsked { id, by, ticket } => {
                // Ended before the ack leaves: the asking node's 204 then finds no
                // session and no push anywhere.
                self.drop_session(&id);
                self.out
                    .push_back(Output::Cluster(ClusterOp::Ack { to: by, ticket }));
            }
            ClusterEvent::Acked { ticket } => self.on_acked(ticket),
            ClusterEvent::VerifyForwarded { ticket, found } => {
                self.on_verify_forwarded(ticket, found);
            }
            ClusterEvent::VerifyAsked {
                id,
                by,
                ticket,
                digests,
            } => self.verify_forwarded(id, by, ticket, digests),
            ClusterEvent::VerifyAnswered { ticket, outcome } => {
                self.on_verify_answered(ticket, outcome, now.instant);
            }
            ClusterEvent::Read { ticket, record } => self.on_remote_read(ticket, record),
            ClusterEvent::Deleted { ticket, found } => {
                self.on_remote_delete(ticket, found, now.instant);
            }
            ClusterEvent::Reconnected => self.on_reconnected(),
            ClusterEvent::Owned { ticket, ids } => self.on_owned(ticket, ids),
        }
    }

    fn on_heartbeat(&mut self, ticket: u64, ok: bool, now: Instant) {
        let Some(live) = self.liveness.as_mut() else {
            return;
        };
        let mut sent = None;
        while live.in_flight.front().is_some_and(|(t, _)| *t <= ticket) {
            if let Some((t, at)) = live.in_flight.pop_front() {
                sent = (t == ticket).then_some(at);
            }
        }
        let (true, Some(sent)) = (ok, sent) else {
            return;
        };
        live.renewed_sent = live.renewed_sent.max(sent);
        if live.fenced {
            // Alive again: the rows still ours lost their sessions at the fence.
            live.fenced = false;
            self.out.push_back(Output::Cluster(ClusterOp::ClaimOwn));
        }
        self.claim_lost(now);
    }

    /// Asks for a batch of lost nodes' rows, unless one is in flight.
    fn claim_lost(&mut self, now: Instant) {
        let Some(live) = self.liveness.as_mut() else {
            return;
        };
        let in_flight = live
            .claiming
            .is_some_and(|asked| now < asked + live.fence_after);
        if in_flight || live.fenced || self.shut_down {
            return;
        }
        live.claiming = Some(now);
        self.out.push_back(Output::Cluster(ClusterOp::ClaimLost {
            max: CLAIM_BATCH_MAX,
        }));
    }

    /// Rows taken over: each gets its one `node_lost` push, and leaves the journal once
    /// that push is settled.
    fn on_claimed(&mut self, records: Vec<Record>, own: bool, ok: bool, now: Now) {
        let full = records.len() >= CLAIM_BATCH_MAX;
        self.counters.subscriptions_claimed += records.len() as u64;
        for record in records {
            self.node_lost_push(record, now);
        }
        if own {
            return;
        }
        if let Some(live) = self.liveness.as_mut() {
            live.claiming = None;
        }
        if ok && full {
            self.claim_lost(now.instant);
        }
    }

    fn node_lost_push(&mut self, record: Record, now: Now) {
        if record.verifying {
            // Its endpoints were never proven: they hear nothing.
            self.forget_record(record.id);
            return;
        }
        match (record.new_mail.to_target(), record.reconnect.to_target()) {
            (Ok(new_mail), Ok(reconnect)) => {
                let push = PushSubscription::new_tagged(
                    record.id, new_mail, reconnect, record.tag, now.unix,
                );
                self.push(PushJob::Reconnect {
                    push,
                    reason: NODE_LOST,
                });
            }
            _ => {
                super::logs::unusable_records(1);
                self.forget_record(record.id);
            }
        }
    }

    /// Another node holds `id` now, or deleted it: the session ends without a push, and
    /// the row is not ours to touch.
    pub(super) fn drop_session(&mut self, id: &SubscriptionId) {
        let Some(sub) = self.registry.remove(id) else {
            return;
        };
        self.counters.subscriptions_dropped += 1;
        self.unwatch(sub.session);
        self.push(PushJob::Forget {
            subscription: sub.id,
        });
        if let Some((waiting, _)) = sub.waiting {
            let e = ApiError::new(ErrorCode::Replaced, "replaced by a newer registration");
            self.respond(waiting, e.to_response());
        }
    }

    /// This node may be judged lost by the others: every session stops, nothing is
    /// pushed (the survivors push `node_lost`), and registrations are refused until a
    /// renewal comes back.
    fn fence(&mut self, now: Instant) {
        let Some(live) = self.liveness.as_mut() else {
            return;
        };
        live.fenced = true;
        self.counters.fences += 1;
        tracing::error!(
            sessions = self.registry.len(),
            "no heartbeat renewed in the shared journal: this node stops its sessions \
             without a push (the other nodes push node_lost)"
        );
        for id in self.registry.ids() {
            let Some(sub) = self.registry.remove(&id) else {
                continue;
            };
            self.unwatch(sub.session);
            self.push(PushJob::Forget {
                subscription: sub.id,
            });
            if let Some((waiting, _)) = sub.waiting {
                self.respond(waiting, fenced_error().to_response());
            }
        }
        self.paced.clear();
        for (_, resolving) in std::mem::take(&mut self.resolving) {
            let (request, e) = resolving.refuse(fenced_error());
            self.respond(request, e.to_response());
        }
        let _ = now;
    }
}

/// What a registration gets while this node is fenced.
pub(super) fn fenced_error() -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::new(
            ErrorCode::AtCapacity,
            "this node lost its shared journal; another node takes registrations",
        )
    }
}

/// Whether `config` asks for a cluster, and its liveness timing.
pub(super) fn liveness(config: &crate::config::Config, now: Instant) -> Option<Liveness> {
    match config.journal {
        crate::node::JournalSetting::Postgres(_) => Some(Liveness::new(
            Duration::from_secs(config.heartbeat_secs),
            Duration::from_secs(config.node_lost_after_secs),
            now,
        )),
        crate::node::JournalSetting::Redb => None,
    }
}
