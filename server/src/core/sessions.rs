//! What the engine says of sessions: started, ready (replace-after-ready), failed, new
//! mail, lost; and the deadlines of logins waiting for their turn or for readiness.

use std::hash::Hash;
use std::time::{Duration, Instant};

use super::logs::Phase;
use super::requests::watch_error;
use super::{Core, Created, Now, Output, PushJob, SessionEvent};
use crate::api::ApiError;
use crate::error_code::ErrorCode;
use crate::id::SubscriptionId;
use crate::journal::{Record, TargetRecord};
use crate::registry::{State as SubState, Subscription};
use crate::replacement::Promotion;

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// The engine named the session of `subscription`, or refused it.
    pub(super) fn on_watched(
        &mut self,
        subscription: SubscriptionId,
        result: Result<S, engine::WatchError>,
    ) {
        match result {
            Ok(session) => {
                if self.registry.get(&subscription).is_some() {
                    self.registry.set_session(&subscription, session);
                } else {
                    // Deleted between the watch and its answer: end the session at once.
                    self.out.push_back(Output::Unwatch(session));
                }
            }
            Err(e) => {
                let sub = self.registry.remove(&subscription);
                if let Some((waiting, _)) = sub.and_then(|s| s.waiting) {
                    self.respond(waiting, watch_error(e).to_response());
                }
            }
        }
    }

    pub(super) fn on_session(&mut self, event: SessionEvent<S>, now: Now) {
        match event {
            SessionEvent::Ready { session, ready } => self.on_ready(session, &ready, now),
            SessionEvent::Failed { session, reason } => {
                if matches!(
                    reason,
                    engine::EndReason::AuthRejected | engine::EndReason::AuthUnavailable
                ) {
                    self.counters.logins_auth_failed += 1;
                } else {
                    self.counters.logins_failed += 1;
                }
                let sub = self.registry.remove_by_session(session);
                let host = sub.as_ref().map(|s| &*s.host);
                self.logs
                    .session_ended(Phase::Login, &reason, host, now.instant);
                if let Some((waiting, _)) = sub.and_then(|s| s.waiting) {
                    self.respond(waiting, ApiError::from_end_reason(reason).to_response());
                }
            }
            SessionEvent::NewMail {
                session,
                mailbox,
                exists,
                preview,
                read_at,
            } => {
                let Some(sub) = self.registry.by_session_mut(session) else {
                    return;
                };
                sub.last_new_mail = Some((now.unix, exists));
                let name = sub.mailboxes.get(mailbox).cloned().unwrap_or_default();
                let push = sub.push.clone();
                let job = PushJob::NewMail {
                    push,
                    mailbox: name,
                    exists,
                    preview,
                    event_at: read_at,
                };
                // Until its endpoints are proven, new mail waits, as one push.
                match sub.verification.as_mut() {
                    Some(verification) => verification.remember(job),
                    None => self.push(job),
                }
            }
            SessionEvent::Lost { session, reason } => {
                self.counters.sessions_lost += 1;
                // Deleted and replaced subscriptions are gone from the registry already:
                // they get no reconnect push. Nor does one still verifying: its
                // endpoints are not proven, and its journal record goes.
                let sub = self.registry.remove_by_session(session);
                let host = sub.as_ref().map(|s| &*s.host);
                self.logs
                    .session_ended(Phase::Ready, &reason, host, now.instant);
                if let Some(sub) = sub {
                    if sub.verification.is_some() {
                        self.forget_record(sub.id);
                        return;
                    }
                    self.push(PushJob::Reconnect {
                        push: sub.push,
                        reason: reason.code(),
                    });
                }
            }
        }
    }

    /// A session is ready: its subscription takes its key over (ending the one it
    /// replaces) or gives way to a newer one; then its registration gets its 201 once the
    /// record is durable. A subscription that must verify its endpoints takes nothing
    /// over yet: it starts verifying (see `verify`), and the live one keeps working.
    fn on_ready(&mut self, session: S, ready: &engine::Ready, now: Now) {
        self.counters.logins_ok += 1;
        let Some(sub) = self.registry.by_session_mut(session) else {
            return;
        };
        let (id, verifying) = (sub.id, sub.verification.is_some());
        if !verifying && !self.promote(&id) {
            return;
        }
        let waiting = self.registry.take_waiting(session);
        let Some(sub) = self.registry.by_id_mut(&id) else {
            return;
        };
        sub.state = match (verifying, ready.idle) {
            (true, _) => SubState::Verifying,
            (false, true) => SubState::Idle,
            (false, false) => SubState::Polling,
        };
        sub.idle = ready.idle;
        sub.notify = ready.notify;
        let Some(waiting) = waiting else {
            return;
        };
        let (record, response) = created(sub, ready);
        if verifying {
            let timeout = Duration::from_secs(self.config.verification_timeout_secs);
            self.registry.start_verifying(&id, now.instant + timeout);
        }
        let ticket = self.ticket();
        self.created.insert(
            ticket,
            Created {
                request: super::Waiter::Local(waiting),
                response,
                verify: verifying.then_some(id),
            },
        );
        self.journal_insert(ticket, record);
    }

    /// Subscription `id` takes its key over, ending the one it replaces; or, if a newer
    /// registration of the key holds it already, it is ended (`false`).
    pub(super) fn promote(&mut self, id: &SubscriptionId) -> bool {
        match self.registry.promote(id) {
            Promotion::Promoted { replaced } => {
                // The replaced app registered again: it gets no reconnect push (its
                // session's loss finds nothing in the registry).
                if let Some(old) = replaced.and_then(|old| self.registry.remove(&old)) {
                    self.forget_record(old.id);
                    self.unwatch(old.session);
                    self.push(PushJob::Forget {
                        subscription: old.id,
                    });
                }
                true
            }
            // `Unknown` would be a registry out of step with its key table: ending the
            // session is the safe way out, since only one session per key may stay.
            Promotion::Superseded | Promotion::Unknown => {
                if let Some(sub) = self.registry.remove(id) {
                    self.unwatch(sub.session);
                    if let Some((waiting, _)) = sub.waiting {
                        let e =
                            ApiError::new(ErrorCode::Replaced, "replaced by a newer registration");
                        self.respond(waiting, e.to_response());
                    }
                }
                false
            }
        }
    }

    /// Starts the paced logins whose turn has come, unless deleted or replaced meanwhile.
    pub(super) fn start_paced_logins(&mut self, now: Instant) {
        if !self.paced.iter().any(|p| p.due <= now) {
            return;
        }
        let (due, later) = std::mem::take(&mut self.paced)
            .into_iter()
            .partition::<Vec<_>, _>(|p| p.due <= now);
        self.paced = later;
        for login in due {
            let waiting = self
                .registry
                .get(&login.subscription)
                .is_some_and(|sub| sub.session.is_none());
            if !waiting {
                continue; // `login.spec` and its secret are dropped (zeroized) here.
            }
            self.out.push_back(Output::Watch {
                subscription: login.subscription,
                spec: login.spec,
                options: login.options,
            });
        }
    }

    /// Registrations not ready by their deadline are refused and their logins ended.
    pub(super) fn expire_registrations(&mut self, now: Instant) {
        for id in self.registry.overdue(now) {
            if let Some(sub) = self.registry.remove(&id) {
                self.unwatch(sub.session);
                if let Some((waiting, _)) = sub.waiting {
                    let e = ApiError::new(
                        ErrorCode::ImapTimeout,
                        "the IMAP session did not become ready in time",
                    );
                    self.respond(waiting, e.to_response());
                }
            }
        }
    }
}

/// The journal record of a ready subscription and the 201 its app gets once it is durable.
fn created<S, R>(sub: &Subscription<S, R>, ready: &engine::Ready) -> (Record, httpd::Response) {
    let body = serde_json::json!({
        "id": sub.id,
        "state": sub.state.as_str(),
        "capabilities": {"idle": ready.idle, "notify": ready.notify},
        "mailboxes": sub.mailboxes,
        "routing_key": crate::api::routing_key(&sub.account),
    });
    let location = format!("/v1/subscriptions/{}", sub.id);
    let response = httpd::Response::json(201, body.to_string()).with_header("location", location);
    (record(sub), response)
}

/// The journal record of a subscription, verifying or not.
pub(super) fn record<S, R>(sub: &Subscription<S, R>) -> Record {
    Record {
        id: sub.id,
        key_hash: sub.key.iter().map(|b| format!("{b:02x}")).collect(),
        new_mail: TargetRecord::from_target(&sub.push.new_mail),
        reconnect: TargetRecord::from_target(&sub.push.reconnect),
        created_unix: sub.created_unix,
        tag: sub.push.tag.clone(),
        verifying: sub.verification.is_some(),
    }
}
