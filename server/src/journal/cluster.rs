//! What a clustered store does beyond commits, and what it tells the owner: the
//! messages between the core's cluster rules ([`crate::core::cluster`]) and the SQL
//! ([`super::postgres`]), carried by the writer thread in order with the commits.

use super::Record;
use crate::id::SubscriptionId;
use crate::node::NodeName;

/// Work of a clustered store beyond commits, asked by the core and carried out on the
/// writer thread, in order with the commits queued before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterOp {
    /// Renew this node's heartbeat; answered by [`ClusterEvent::Heartbeat`].
    Heartbeat { ticket: u64 },
    /// Take over at most `max` rows of nodes whose heartbeat is older than
    /// `node_lost_after_secs`, each by exactly one node, bumping each row's owner
    /// epoch; answered by [`ClusterEvent::Claimed`].
    ClaimLost { max: usize },
    /// Take this node's own rows back after it fenced itself (bumping their epoch): their
    /// sessions were stopped without a push, so they are owed one; answered by
    /// [`ClusterEvent::Claimed`] with `own` set.
    ClaimOwn,
    /// Read `id`'s row, whoever owns it (a GET through a node that does not hold the
    /// session); answered by [`ClusterEvent::Read`].
    Read { ticket: u64, id: SubscriptionId },
    /// Remove `id`'s row, whoever owns it, and tell its owner to drop the session with
    /// no push (a DELETE through a node that does not hold it); answered by
    /// [`ClusterEvent::Deleted`].
    Delete { ticket: u64, id: SubscriptionId },
    /// Tell node `to` that its DELETE numbered `ticket` is carried out here: the session
    /// is gone, so its `204` may go (see [`ClusterEvent::DeleteAsked`]).
    Ack { to: NodeName, ticket: u64 },
    /// Forward a verification (the codes' [`crate::verification::digest_of`]) to the
    /// owner of `id`; answered by [`ClusterEvent::VerifyForwarded`].
    Verify {
        ticket: u64,
        id: SubscriptionId,
        digests: [[u8; 32]; 2],
    },
    /// Tell node `to` how its forwarded verification `ticket` ended.
    VerifyReply {
        to: NodeName,
        ticket: u64,
        outcome: VerifyOutcome,
    },
    /// List the rows this node owns (after a reconnect to the database, when
    /// notifications may have been lost); answered by [`ClusterEvent::Owned`].
    Owned { ticket: u64 },
}

/// What a clustered store tells the owner.
#[derive(Debug)]
pub enum ClusterEvent {
    /// The heartbeat numbered `ticket` was renewed (`ok`) or not.
    Heartbeat { ticket: u64, ok: bool },
    /// Rows taken over (see [`ClusterOp::ClaimLost`] and [`ClusterOp::ClaimOwn`]); `ok`
    /// false when the claim failed (nothing was taken).
    Claimed {
        records: Vec<Record>,
        own: bool,
        ok: bool,
    },
    /// Another node took subscription `id` over (its key was registered there and is
    /// ready), or it was deleted through another node: drop its session, no push.
    Dropped { id: SubscriptionId },
    /// Node `by` deleted subscription `id` (a DELETE through it) and waits, with its
    /// `ticket`, for this node, the owner, to end the session ([`ClusterOp::Ack`]).
    DeleteAsked {
        id: SubscriptionId,
        by: NodeName,
        ticket: u64,
    },
    /// The owner ended the session of this node's DELETE numbered `ticket`.
    Acked { ticket: u64 },
    /// Whether the verification `ticket` reached an owner (`Ok(false)`: no row, or this
    /// node's own).
    VerifyForwarded {
        ticket: u64,
        found: Result<bool, ()>,
    },
    /// Node `by` forwards a verification of `id`, this node's, with its `ticket`.
    VerifyAsked {
        id: SubscriptionId,
        by: NodeName,
        ticket: u64,
        digests: [[u8; 32]; 2],
    },
    /// How this node's forwarded verification `ticket` ended at the owner.
    VerifyAnswered { ticket: u64, outcome: VerifyOutcome },
    /// `ticket`'s row: `Ok(None)` when there is none, `Err(())` when the read failed.
    Read {
        ticket: u64,
        record: Result<Option<Box<Record>>, ()>,
    },
    /// `ticket`'s removal: whether there was a row (`Err(())`: it failed).
    Deleted {
        ticket: u64,
        found: Result<bool, ()>,
    },
    /// The writer connected to the database again after losing it: notifications sent
    /// meanwhile are lost, so the core reconciles ([`ClusterOp::Owned`]).
    Reconnected,
    /// The rows this node owns (`Err(())`: the listing failed).
    Owned {
        ticket: u64,
        ids: Result<Vec<SubscriptionId>, ()>,
    },
}

/// How a verification forwarded to the owner ended: verified (the active record durable),
/// or refused with the code the owner would have answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    Verified,
    Refused(crate::error_code::ErrorCode),
}

impl VerifyOutcome {
    /// Its word in a notification.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyOutcome::Verified => "verified",
            VerifyOutcome::Refused(code) => code.as_str(),
        }
    }

    pub fn parse(word: &str) -> Option<VerifyOutcome> {
        if word == "verified" {
            return Some(VerifyOutcome::Verified);
        }
        crate::error_code::ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == word)
            .map(VerifyOutcome::Refused)
    }
}
