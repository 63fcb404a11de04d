//! Subscriptions held by other nodes (a shared journal): GET and DELETE through any node,
//! and the reconcile after a reconnect to the database.
//!
//! - **GET** of an id this node does not hold reads its row ([`ClusterOp::Read`]). The row
//!   keeps what the journal keeps: the answer shows its id, whether it is still verifying,
//!   and its creation time; the owner's live fields (mailboxes, capabilities, since, last
//!   new mail, push counts) are empty there.
//! - **DELETE** of an id this node does not hold removes its row ([`ClusterOp::Delete`]);
//!   the database tells the owner (`NOTIFY`), which ends the session with no push and
//!   says so ([`ClusterOp::Ack`]). The `204` waits for that, so that no push and no GET
//!   showing the subscription come after it; an owner that does not answer within
//!   [`crate::node::fence_after`] can push no more (it has fenced itself), and the `204`
//!   goes then. `404` when there was no row.
//! - **Verify** of an id this node does not hold goes to its owner as the SHA-256 of each
//!   code ([`ClusterOp::Verify`]; no code passes through the database); the owner judges
//!   them as its own (wrong pairs count), activates, and answers once the active record is
//!   durable ([`ClusterOp::VerifyReply`]); this node then shows the row as a GET here would.
//! - **Reconcile.** Notifications sent while a node was disconnected from the database
//!   are lost, so the owner column is the truth: after every reconnect
//!   ([`ClusterEvent::Reconnected`]) the node lists its rows ([`ClusterOp::Owned`]) and
//!   drops, without a push, every active session whose row it no longer owns. Rows
//!   written after the listing was asked for are not judged by it.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

use httpd::Response;

use super::requests::{not_found, Refused};
use super::{Core, Output};
use crate::api::ApiError;
use crate::error_code::ErrorCode;
use crate::id::SubscriptionId;
use crate::journal::{ClusterOp, Record};

/// Requests waiting for the database at once (GET and DELETE of other nodes'
/// subscriptions); one more is answered `503` at once.
pub const REMOTE_PENDING_MAX: usize = 1024;

/// How long a GET or DELETE waits for the database: past it, `503` (its work may have
/// been refused by a full journal queue, or the database hangs).
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request waiting for the database asked.
#[derive(Debug, Clone, Copy)]
pub(super) enum Remote {
    /// Waiting for the database until then.
    Get {
        until: Instant,
    },
    Delete {
        until: Instant,
    },
    /// The row is gone; the owner's word that the session ended is awaited until then.
    DeleteAcked {
        until: Instant,
    },
    /// A verification of `id` forwarded to its owner, whose outcome is awaited.
    Verify {
        until: Instant,
        id: SubscriptionId,
    },
}

impl Remote {
    fn until(self) -> Instant {
        match self {
            Remote::Get { until }
            | Remote::Delete { until }
            | Remote::DeleteAcked { until }
            | Remote::Verify { until, .. } => until,
        }
    }
}

/// A reconcile in flight: its ticket, and the subscriptions journalled since it was asked
/// for (the listing may not show them).
#[derive(Debug)]
pub(super) struct Reconcile {
    ticket: u64,
    written_since: HashSet<SubscriptionId>,
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// GET or DELETE of `id`, which this node does not hold: asked of the database when
    /// the journal is shared, else `404`.
    pub(super) fn ask_remote(
        &mut self,
        request: R,
        id: SubscriptionId,
        kind: Remote,
    ) -> Result<(), Refused<R>> {
        if self.liveness.is_none() {
            return Err((request, not_found()));
        }
        if self.remote.len() >= REMOTE_PENDING_MAX {
            let e = ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    ErrorCode::AtCapacity,
                    "too many requests wait for the database",
                )
            };
            return Err((request, e));
        }
        let ticket = self.ticket();
        self.remote.insert(ticket, (request, kind));
        let op = match kind {
            // A verification is forwarded by `forward_verify`, never asked here.
            Remote::Get { .. } | Remote::Verify { .. } => ClusterOp::Read { ticket, id },
            Remote::Delete { .. } | Remote::DeleteAcked { .. } => ClusterOp::Delete { ticket, id },
        };
        self.out.push_back(Output::Cluster(op));
        Ok(())
    }

    /// The database's answer to a GET of another node's subscription.
    pub(super) fn on_remote_read(&mut self, ticket: u64, record: Result<Option<Box<Record>>, ()>) {
        let Some((request, _)) = self.remote.remove(&ticket) else {
            return;
        };
        let response = match record {
            Ok(Some(record)) => remote_body(&record),
            Ok(None) => not_found().to_response(),
            Err(()) => unavailable().to_response(),
        };
        self.respond(request, response);
    }

    /// The database's answer to a DELETE of another node's subscription: the row is gone,
    /// and the owner's word is awaited (see the module docs).
    pub(super) fn on_remote_delete(&mut self, ticket: u64, found: Result<bool, ()>, now: Instant) {
        let Some((request, _)) = self.remote.remove(&ticket) else {
            return;
        };
        let response = match found {
            Ok(true) => {
                let wait = self
                    .liveness
                    .as_ref()
                    .map_or(Duration::ZERO, |l| l.fence_after());
                let until = now + wait;
                self.remote
                    .insert(ticket, (request, Remote::DeleteAcked { until }));
                return;
            }
            Ok(false) => not_found().to_response(),
            Err(()) => unavailable().to_response(),
        };
        self.respond(request, response);
    }

    /// The owner ended the session of this node's DELETE `ticket`: its `204`.
    pub(super) fn on_acked(&mut self, ticket: u64) {
        if !matches!(
            self.remote.get(&ticket),
            Some((_, Remote::DeleteAcked { .. }))
        ) {
            return;
        }
        if let Some((request, _)) = self.remote.remove(&ticket) {
            self.respond(request, Response::empty(204));
        }
    }

    /// Requests past their deadline: a DELETE whose owner did not answer gets its `204`
    /// (the owner can push no more), one the database did not answer `503`.
    pub(super) fn expire_remote(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, (_, kind))| kind.until() <= now)
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in due {
            let Some((request, kind)) = self.remote.remove(&ticket) else {
                continue;
            };
            let response = match kind {
                Remote::DeleteAcked { .. } => Response::empty(204),
                Remote::Get { .. } | Remote::Delete { .. } | Remote::Verify { .. } => {
                    unavailable().to_response()
                }
            };
            self.respond(request, response);
        }
    }

    /// The earliest deadline of a request waiting for the database or an owner.
    pub(super) fn remote_due(&self) -> Option<Instant> {
        self.remote.values().map(|(_, kind)| kind.until()).min()
    }

    /// `POST .../verify` of an id this node does not hold: the codes' digests go to the
    /// owner, whose outcome is the answer (a `200` with the subscription as a GET through
    /// this node shows it).
    pub(super) fn forward_verify(
        &mut self,
        request: R,
        id: SubscriptionId,
        digests: [[u8; 32]; 2],
        now: Instant,
    ) -> Result<(), Refused<R>> {
        if self.remote.len() >= REMOTE_PENDING_MAX {
            return Err((request, unavailable()));
        }
        let ticket = self.ticket();
        let until = now + REMOTE_TIMEOUT;
        self.remote
            .insert(ticket, (request, Remote::Verify { until, id }));
        self.out.push_back(Output::Cluster(ClusterOp::Verify {
            ticket,
            id,
            digests,
        }));
        Ok(())
    }

    /// Whether a forwarded verification reached an owner.
    pub(super) fn on_verify_forwarded(&mut self, ticket: u64, found: Result<bool, ()>) {
        let response = match found {
            Ok(true) => return,
            Ok(false) => not_found().to_response(),
            Err(()) => unavailable().to_response(),
        };
        if let Some((request, _)) = self.remote.remove(&ticket) {
            self.respond(request, response);
        }
    }

    /// The owner's outcome of a forwarded verification: on success the subscription is
    /// read (its active row is durable by now) and shown.
    pub(super) fn on_verify_answered(
        &mut self,
        ticket: u64,
        outcome: crate::journal::VerifyOutcome,
        now: Instant,
    ) {
        let Some((request, Remote::Verify { id, .. })) = self.remote.remove(&ticket) else {
            return;
        };
        match outcome {
            crate::journal::VerifyOutcome::Verified => {
                let until = now + REMOTE_TIMEOUT;
                if let Err((request, e)) = self.ask_remote(request, id, Remote::Get { until }) {
                    self.respond(request, e.to_response());
                }
            }
            crate::journal::VerifyOutcome::Refused(code) => {
                let e = ApiError::new(code, refusal_message(code));
                self.respond(request, e.to_response());
            }
        }
    }

    /// The writer reached the database again: list this node's rows.
    pub(super) fn on_reconnected(&mut self) {
        if self.liveness.is_none() || self.shut_down {
            return;
        }
        let ticket = self.ticket();
        self.reconcile = Some(Reconcile {
            ticket,
            written_since: HashSet::new(),
        });
        self.out
            .push_back(Output::Cluster(ClusterOp::Owned { ticket }));
    }

    /// Queues a journal write of `record`, noting it for a reconcile in flight.
    pub(super) fn journal_insert(&mut self, ticket: u64, record: Record) {
        if let Some(reconcile) = self.reconcile.as_mut() {
            reconcile.written_since.insert(record.id);
        }
        self.out.push_back(Output::JournalInsert { ticket, record });
    }

    /// This node's rows, listed: every journalled session whose row is gone or another
    /// node's ends, with no push.
    pub(super) fn on_owned(&mut self, ticket: u64, ids: Result<Vec<SubscriptionId>, ()>) {
        if self.reconcile.as_ref().is_none_or(|r| r.ticket != ticket) {
            return;
        }
        let Some(reconcile) = self.reconcile.take() else {
            return;
        };
        let Ok(ids) = ids else {
            // Asked again at the next reconnect; the writer reconnects on failure.
            return;
        };
        let owned: HashSet<SubscriptionId> = ids.into_iter().collect();
        // Only subscriptions whose row was written: those still logging in have none.
        let stale: Vec<SubscriptionId> = self
            .registry
            .ids()
            .into_iter()
            .filter(|id| {
                !owned.contains(id)
                    && !reconcile.written_since.contains(id)
                    && self.registry.get(id).is_some_and(|s| s.waiting.is_none())
            })
            .collect();
        for id in stale {
            self.drop_session(&id);
        }
    }
}

/// What GET shows of another node's subscription: the journalled fields.
fn remote_body(record: &Record) -> Response {
    let state = if record.verifying {
        "verifying"
    } else {
        "idle"
    };
    let body = serde_json::json!({
        "id": record.id,
        "state": state,
        "mailboxes": [],
        "capabilities": {"idle": false, "notify": false},
        "since": null,
        "created": record.created_unix,
        "last_new_mail": null,
        "pushes": {"sent": 0, "failed": 0},
    });
    Response::json(200, body.to_string())
}

/// The message of a verification the owner refused.
fn refusal_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::VerificationFailed => {
            "wrong verification codes, or the subscription is active already"
        }
        ErrorCode::NotFound => "no such subscription",
        ErrorCode::Replaced => "replaced by a newer registration",
        _ => "the owner of this subscription could not verify it",
    }
}

fn unavailable() -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::new(ErrorCode::AtCapacity, "the shared journal did not answer")
    }
}
