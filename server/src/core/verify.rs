//! Endpoint verification, when `require_endpoint_verification` is on (RFC 8620 §7.2;
//! the rules of the codes are in [`crate::verification`]): the verification pushes after
//! the 201, `POST /v1/subscriptions/{id}/verify`, activation, and the deadline.
//!
//! What a verifying subscription never gets: a new-mail push (new mail waits as one push,
//! sent at activation), a reconnect push when its session ends, a `shutdown` or
//! `server_restart` push. Until it is verified it takes no key over, so a live
//! subscription it would replace keeps working (see [`crate::replacement`]).

use std::hash::Hash;
use std::time::Instant;

use push::Kind;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::requests::{not_found, Refused};
use super::sessions::record;
use super::{Core, Created, PushJob, Waiter};
use crate::api::ApiError;
use crate::error_code::ErrorCode;
use crate::id::SubscriptionId;
use crate::journal::{ClusterOp, VerifyOutcome};
use crate::registry::State as SubState;
use crate::verification::{digest_of, Check};

/// The body of `POST /v1/subscriptions/{id}/verify`; the codes are wiped when dropped.
#[derive(Deserialize)]
struct Codes {
    new_mail: Zeroizing<String>,
    reconnect: Zeroizing<String>,
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// The 201 of a verifying subscription is sent: one verification push per endpoint.
    pub(super) fn verification_pushes(&mut self, id: &SubscriptionId) {
        let Some(sub) = self.registry.get(id) else {
            return;
        };
        let Some(verification) = &sub.verification else {
            return;
        };
        let jobs = [
            (Kind::NewMail, verification.new_mail_code().encode()),
            (Kind::Reconnect, verification.reconnect_code().encode()),
        ]
        .map(|(endpoint, code)| PushJob::Verify {
            push: sub.push.clone(),
            endpoint,
            code,
        });
        for job in jobs {
            self.push(job);
        }
    }

    /// `POST /v1/subscriptions/{id}/verify`: answered now if refused, else with the
    /// subscription (as `GET` shows it) once its active state is durable. An id this node
    /// does not hold goes to its owner when the journal is shared (see [`super::remote`]).
    pub(super) fn verify(
        &mut self,
        request: R,
        id: &str,
        body: &[u8],
        now: Instant,
    ) -> Result<(), Refused<R>> {
        let Ok(id) = SubscriptionId::parse(id) else {
            return Err((request, not_found()));
        };
        // One still logging in has no 201 yet, so nobody may know of it.
        let held = self.registry.get(&id).is_some_and(|s| s.waiting.is_none());
        if !held && (self.registry.get(&id).is_some() || self.liveness.is_none()) {
            return Err((request, not_found()));
        }
        let codes: Codes = match serde_json::from_slice(body) {
            Ok(codes) => codes,
            Err(_) => {
                let e = ApiError::bad_request(
                    "body",
                    "expected {\"new_mail\": CODE, \"reconnect\": CODE}",
                );
                return Err((request, e));
            }
        };
        let digests = [digest_of(&codes.new_mail), digest_of(&codes.reconnect)];
        drop(codes);
        if !held {
            return self.forward_verify(request, id, digests, now);
        }
        match self.judge_codes(&id, &digests) {
            Ok(()) => match self.activate(Waiter::Local(request), &id) {
                Ok(()) => Ok(()),
                Err((Waiter::Local(request), e)) => Err((request, e)),
                // `activate` gives back the waiter it was given: never this one.
                Err((Waiter::Forwarded { by, ticket }, e)) => {
                    self.reply_verify(by, ticket, VerifyOutcome::Refused(e.code));
                    Ok(())
                }
            },
            Err(e) => Err((request, e)),
        }
    }

    /// Another node forwarded a verification of `id`, this node's: judged as if it came
    /// here, and the outcome goes back to that node.
    pub(super) fn verify_forwarded(
        &mut self,
        id: SubscriptionId,
        by: crate::node::NodeName,
        ticket: u64,
        digests: [[u8; 32]; 2],
    ) {
        let held = self.registry.get(&id).is_some_and(|s| s.waiting.is_none());
        let result = if held {
            self.judge_codes(&id, &digests).and_then(|()| {
                match self.activate(Waiter::Forwarded { by, ticket }, &id) {
                    Ok(()) => Ok(()),
                    Err((_, e)) => Err(e),
                }
            })
        } else {
            Err(not_found())
        };
        if let Err(e) = result {
            self.reply_verify(by, ticket, VerifyOutcome::Refused(e.code));
        }
    }

    /// Tells node `to` how its forwarded verification `ticket` ended.
    pub(super) fn reply_verify(
        &mut self,
        to: crate::node::NodeName,
        ticket: u64,
        outcome: VerifyOutcome,
    ) {
        self.out
            .push_back(super::Output::Cluster(ClusterOp::VerifyReply {
                to,
                ticket,
                outcome,
            }));
    }

    /// The codes (as their digests) of `id`, which this node holds: `Ok` when both are
    /// right; wrong ones count, and the last one allowed drops the subscription.
    fn judge_codes(
        &mut self,
        id: &SubscriptionId,
        digests: &[[u8; 32]; 2],
    ) -> Result<(), ApiError> {
        let Some(sub) = self.registry.by_id_mut(id) else {
            return Err(not_found());
        };
        let Some(verification) = sub.verification.as_mut() else {
            return Err(failed(
                "this subscription is active already; a code is good once",
            ));
        };
        match verification.check_digests(&digests[0], &digests[1]) {
            Check::Verified => Ok(()),
            Check::Wrong { left } => Err(failed(&format!(
                "wrong verification codes; {left} more tries"
            ))),
            Check::Exhausted => {
                self.drop_unverified(id);
                Err(failed(
                    "wrong verification codes too many times: the subscription is dropped",
                ))
            }
        }
    }

    /// Subscription `id` proved its endpoints: it takes its key over (ending the one it
    /// replaces), its active state is journalled before the 200, and the new mail that
    /// waited goes out as one push.
    fn activate(
        &mut self,
        request: Waiter<R>,
        id: &SubscriptionId,
    ) -> Result<(), (Waiter<R>, ApiError)> {
        self.registry.stop_verifying(id);
        let verification = self
            .registry
            .by_id_mut(id)
            .and_then(|s| s.verification.take());
        if !self.promote(id) {
            // A newer registration of the key was verified first.
            self.forget_record(*id);
            self.push(PushJob::Forget { subscription: *id });
            let e = ApiError::new(ErrorCode::Replaced, "replaced by a newer registration");
            return Err((request, e));
        }
        let Some(sub) = self.registry.by_id_mut(id) else {
            return Err((request, not_found()));
        };
        sub.state = if sub.idle {
            SubState::Idle
        } else {
            SubState::Polling
        };
        let record = record(sub);
        let response = match self.describe(&id.to_string()) {
            Ok(response) => response,
            Err(e) => return Err((request, e)),
        };
        let ticket = self.ticket();
        let created = Created {
            request,
            response,
            verify: None,
        };
        self.created.insert(ticket, created);
        self.journal_insert(ticket, record);
        if let Some(mail) = verification.and_then(|mut v| v.take_mail()) {
            self.push(mail);
        }
        Ok(())
    }

    /// Ends a subscription that never verified: its session logs out, its record goes,
    /// and nothing is pushed.
    pub(super) fn drop_unverified(&mut self, id: &SubscriptionId) {
        let Some(sub) = self.registry.remove(id) else {
            return;
        };
        self.unwatch(sub.session);
        self.forget_record(sub.id);
        // Drops its verification pushes if they are still held.
        self.push(PushJob::Forget {
            subscription: sub.id,
        });
    }

    /// Subscriptions not verified by their deadline are dropped.
    pub(super) fn expire_verifications(&mut self, now: Instant) {
        for id in self.registry.overdue_verifications(now) {
            self.drop_unverified(&id);
        }
    }
}

fn failed(message: &str) -> ApiError {
    ApiError::new(ErrorCode::VerificationFailed, message)
}
