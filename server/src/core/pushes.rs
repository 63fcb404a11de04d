//! Journal-before-201, what push reports change, and the pushes of a restart and of a
//! shutdown: every subscription an app was told of hears from us when its session ends.

use std::hash::Hash;

use super::{Core, Now, PushJob};
use crate::api::ApiError;
use crate::delivery::{PushSubscription, Report};
use crate::error_code::ErrorCode;
use crate::id::SubscriptionId;
use crate::journal::{Record, VerifyOutcome};

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// A journal write ended: its registration gets the 201, or a 500 if the record is
    /// not durable (a crash after a 201 must still reach the app with a restart push).
    /// A verifying subscription's verification pushes go after its 201; one whose record
    /// failed is dropped, since its app will never verify it.
    pub(super) fn on_durable(&mut self, ticket: u64, ok: bool, now: std::time::Instant) {
        let Some(created) = self.created.remove(&ticket) else {
            return;
        };
        if !ok {
            self.logs.journal_failed(now);
        }
        match created.request {
            super::Waiter::Local(request) => {
                let response = if ok {
                    created.response
                } else {
                    ApiError::new(ErrorCode::Internal, "the journal write failed").to_response()
                };
                self.respond(request, response);
            }
            super::Waiter::Forwarded { by, ticket } => {
                let outcome = if ok {
                    VerifyOutcome::Verified
                } else {
                    VerifyOutcome::Refused(ErrorCode::Internal)
                };
                self.reply_verify(by, ticket, outcome);
            }
        }
        match created.verify {
            Some(id) if ok => self.verification_pushes(&id),
            Some(id) => self.drop_unverified(&id),
            None => {}
        }
    }

    pub(super) fn on_report(&mut self, report: Report) {
        if let Some(id) = settled_reconnect(&report) {
            // Delivered or given up: the subscription may leave the journal.
            self.forget_record(id);
        }
        match report {
            Report::Gone { subscription } => {
                self.forget_record(subscription);
                if let Some(sub) = self.registry.remove(&subscription) {
                    self.unwatch(sub.session);
                }
            }
            Report::Delivered { subscription, .. } => {
                if let Some(sub) = self.registry.by_id_mut(&subscription) {
                    sub.pushes_sent += 1;
                }
            }
            Report::Failed { subscription, .. } => {
                if let Some(sub) = self.registry.by_id_mut(&subscription) {
                    sub.pushes_failed += 1;
                }
            }
        }
    }

    /// Every subscription the previous run left gets its reconnect push (`server_restart`);
    /// it leaves the journal once that push is settled.
    pub(super) fn restart_pushes(&mut self, leftovers: Vec<Record>, now: Now) {
        let mut unusable = 0;
        for record in leftovers {
            // Never verified: its endpoints are not proven, so they hear nothing.
            if record.verifying {
                self.forget_record(record.id);
                continue;
            }
            match (record.new_mail.to_target(), record.reconnect.to_target()) {
                (Ok(new_mail), Ok(reconnect)) => {
                    let push = PushSubscription::new_tagged(
                        record.id, new_mail, reconnect, record.tag, now.unix,
                    );
                    self.push(PushJob::Reconnect {
                        push,
                        reason: "server_restart",
                    });
                }
                // A record we cannot use can never be pushed: drop it rather than retry
                // forever.
                _ => {
                    unusable += 1;
                    self.forget_record(record.id);
                }
            }
        }
        super::logs::unusable_records(unusable);
    }

    /// The server stops: every subscription leaves, and each that got its 201 gets its
    /// reconnect push (`shutdown`). Those still waiting were never told of and are not
    /// journalled. Those still verifying get nothing; their records stay, for the next
    /// start to drop by their state, as after a crash. Inputs after this one change nothing but push reports.
    pub(super) fn shutdown_pushes(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        // Held pushes are older than the shutdown pushes: they go first, due or not.
        let held = self.held.take_all();
        self.out.extend(held.into_iter().map(super::Output::Push));
        for id in self.registry.ids() {
            let Some(sub) = self.registry.remove(&id) else {
                continue;
            };
            if sub.waiting.is_none() && sub.verification.is_none() {
                self.push(PushJob::Reconnect {
                    push: sub.push,
                    reason: "shutdown",
                });
            }
        }
        self.paced.clear();
        self.resolving.clear();
        for (_, (request, _)) in std::mem::take(&mut self.remote) {
            let e = ApiError::new(ErrorCode::ShuttingDown, "shutting down");
            self.respond(request, e.to_response());
        }
    }
}

/// The subscription whose reconnect push has been settled (delivered or given up): it
/// may leave the journal.
fn settled_reconnect(report: &Report) -> Option<SubscriptionId> {
    match report {
        Report::Delivered {
            subscription,
            kind: push::Kind::Reconnect,
        }
        | Report::Failed {
            subscription,
            kind: push::Kind::Reconnect,
        } => Some(*subscription),
        _ => None,
    }
}
