//! The REST API's rules: routing, the bearer token, the per-client rate, the caps a
//! registration must pass (sessions in all, devices per account, sessions per host,
//! registrations in progress), login pacing, and the registration-time lookups.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use httpd::{Method, Response};

use super::{ApiRequest, Core, Now, Output, PacedLogin};
use crate::api::{parse_registration, ApiError, Registration};
use crate::delivery::PushSubscription;
use crate::destination::{is_public, normalize_host};
use crate::error_code::ErrorCode;
use crate::id::{SubscriptionId, ID_BYTES};
use crate::registry::{State as SubState, Subscription};
use crate::resolution::{Checks, Progress, Refusal, Target};
use crate::verification::{Verification, RANDOM_BYTES};

/// Bits of a lookup token that name the [`Target`]; the rest is the resolution number.
const TARGET_BITS: u32 = 2;
const TARGET_MASK: u64 = (1 << TARGET_BITS) - 1;

/// A registration waiting for its lookups. Its secret is zeroized when it is dropped,
/// whichever way it ends.
#[derive(Debug)]
pub(super) struct Resolving<R> {
    request: R,
    registration: Registration,
    checks: Checks,
}

impl<R> Resolving<R> {
    /// Ends the registration with `e`; its secret is zeroized as it is dropped.
    pub(super) fn refuse(self, e: ApiError) -> Refused<R> {
        (self.request, e)
    }
}

/// Where a refused registration's answer goes, with why.
pub(super) type Refused<R> = (R, ApiError);

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    pub(super) fn on_request(
        &mut self,
        request: ApiRequest<R>,
        now: Now,
        random: Option<super::Random>,
    ) {
        let ApiRequest {
            id,
            method,
            path,
            client,
            authorization,
            routing_key,
            mut body,
        } = request;
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        if segments == ["healthz"] {
            return self.respond(id, Response::json(200, r#"{"status":"ok"}"#));
        }
        // Like /healthz, for load balancers that hold no token.
        if segments == ["readyz"] {
            return self.respond(id, super::readiness::response(self.readiness()));
        }
        if let Err(e) = self.authorize(authorization.as_deref().map(String::as_str)) {
            self.logs.refused(&e, now.instant);
            return self.respond(id, e.to_response());
        }
        if self.shut_down {
            let e = ApiError::new(ErrorCode::ShuttingDown, "shutting down");
            return self.respond(id, e.to_response());
        }
        let result = match (method, segments.as_slice()) {
            (Method::Get, ["metrics"]) => {
                let text = self.metrics_text();
                self.out
                    .push_back(Output::RespondMetrics { request: id, text });
                return;
            }
            (Method::Get, ["v1", "vapid-public-key"]) => Ok(Response::json(
                200,
                serde_json::json!({"public_key": self.vapid_public_key}).to_string(),
            )),
            (Method::Get, ["v1", "openapi.json"]) => Ok(Response::json(
                200,
                include_str!("../../../docs/openapi.json"),
            )),
            (Method::Post, ["v1", "subscriptions"]) => {
                let header = routing_key.as_deref();
                return self.register(id, client, header, &mut body, now, random);
            }
            (Method::Get, ["v1", "subscriptions", sub]) => {
                if let Err((id, e)) = self.get(id, sub, now.instant) {
                    self.respond(id, e.to_response());
                }
                return;
            }
            (Method::Post, ["v1", "subscriptions", sub, "verify"]) => {
                if let Err((id, e)) = self.verify(id, sub, &body, now.instant) {
                    self.respond(id, e.to_response());
                }
                return;
            }
            (Method::Delete, ["v1", "subscriptions", sub]) => {
                if let Err((id, e)) = self.delete(id, sub, now.instant) {
                    self.respond(id, e.to_response());
                }
                return;
            }
            (
                _,
                ["healthz" | "metrics"]
                | ["v1", "vapid-public-key" | "openapi.json" | "subscriptions"],
            )
            | (_, ["v1", "subscriptions", _] | ["v1", "subscriptions", _, "verify"]) => Err(
                ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed"),
            ),
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such resource")),
        };
        match result {
            Ok(response) => self.respond(id, response),
            Err(e) => {
                self.logs.refused(&e, now.instant);
                self.respond(id, e.to_response());
            }
        }
    }

    fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(token) = &self.config.api_token else {
            return Ok(());
        };
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token.matches(given) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a valid bearer token is required",
            ))
        }
    }

    /// A registration: answered now if refused, else later (201 once ready and durable).
    fn register(
        &mut self,
        id: R,
        client: IpAddr,
        routing_key: Option<&str>,
        body: &mut [u8],
        now: Now,
        random: Option<super::Random>,
    ) {
        if let Err((id, e)) = self.try_register(id, client, routing_key, body, now, random) {
            self.counters.registrations_rejected += 1;
            self.logs.refused(&e, now.instant);
            self.respond(id, e.to_response());
        }
    }

    fn try_register(
        &mut self,
        id: R,
        client: IpAddr,
        routing_key: Option<&str>,
        body: &mut [u8],
        now: Now,
        random: Option<super::Random>,
    ) -> Result<(), Refused<R>> {
        let checked = self.check_rate(client, now.instant).and_then(|()| {
            let registration = parse_registration(body, &self.config)?;
            check_routing_key(&registration, routing_key)?;
            self.check_verifiable(&registration)?;
            // What the caps refuse is refused now; they are checked again before the login.
            self.admit(
                &registration.dedup_key(),
                &registration.account_key(),
                &registration.host,
            )?;
            Ok(registration)
        });
        let registration = match checked {
            Ok(registration) => registration,
            Err(e) => return Err((id, e)),
        };
        let lookups = self.lookups_for(&registration);
        if lookups.is_empty() {
            return self.start_login(id, registration, now, random);
        }
        self.resolve(id, registration, &lookups)
    }

    /// With endpoint verification required, both endpoints must be able to carry a code:
    /// a SimplePush endpoint gets only a version number, so it could never be verified.
    fn check_verifiable(&self, registration: &Registration) -> Result<(), ApiError> {
        if !self.config.require_endpoint_verification {
            return Ok(());
        }
        let targets = [
            ("new_mail", &registration.new_mail),
            ("reconnect", &registration.reconnect),
        ];
        match targets
            .iter()
            .find(|(_, t)| t.protocol() == push::Protocol::SimplePush)
        {
            Some((field, _)) => Err(ApiError::bad_request(
                field,
                "a simplepush endpoint carries no payload, so it cannot receive the \
                 verification code this server requires",
            )),
            None => Ok(()),
        }
    }

    /// The host names of a registration to resolve and judge before its login: none when
    /// private destinations are allowed, and none for address literals (judged already).
    fn lookups_for(&self, registration: &Registration) -> Vec<(Target, String, u16)> {
        if self.config.allow_private_destinations {
            return Vec::new();
        }
        let endpoint_host = |target: &push::PushTarget| {
            normalize_host(target.host()).unwrap_or_else(|_| target.host().to_owned())
        };
        let names = [
            (Target::Imap, registration.host.clone(), registration.port),
            (Target::NewMail, endpoint_host(&registration.new_mail), 443),
            (
                Target::Reconnect,
                endpoint_host(&registration.reconnect),
                443,
            ),
        ];
        names
            .into_iter()
            .filter(|(_, host, _)| host.parse::<IpAddr>().is_err())
            .collect()
    }

    /// Asks for the lookups of a registration; [`Core::on_lookup`] carries on with the
    /// answers. At most `limits.pending_registrations_max` registrations resolve at once.
    fn resolve(
        &mut self,
        request: R,
        registration: Registration,
        lookups: &[(Target, String, u16)],
    ) -> Result<(), Refused<R>> {
        if self.resolving.len() >= self.config.limits.pending_registrations_max {
            let e = ApiError::rate_limited(5, "too many registrations in progress");
            return Err((request, e));
        }
        let targets: Vec<Target> = lookups.iter().map(|(t, _, _)| *t).collect();
        let n = self.next_resolution;
        self.next_resolution += 1;
        let checks = Checks::new(&targets);
        self.resolving.insert(
            n,
            Resolving {
                request,
                registration,
                checks,
            },
        );
        for (target, host, port) in lookups {
            self.out.push_back(Output::Lookup {
                token: n << TARGET_BITS | target.index(),
                host: host.clone(),
                port: *port,
            });
        }
        Ok(())
    }

    /// One lookup answered: the registration waits for the others, is refused, or starts
    /// its login. An answer for a registration refused already is dropped.
    pub(super) fn on_lookup(
        &mut self,
        lookup: engine::Lookup,
        now: Now,
        random: Option<super::Random>,
    ) {
        let n = lookup.token >> TARGET_BITS;
        let Some(target) = Target::from_index(lookup.token & TARGET_MASK) else {
            return;
        };
        let allow_private = self.config.allow_private_destinations;
        let allowed = |ip| allow_private || is_public(ip);
        let Some(entry) = self.resolving.get_mut(&n) else {
            return;
        };
        let result = lookup.result.as_deref().map_err(|e| *e);
        let refusal = match entry.checks.answer(target, result, allowed) {
            Progress::Waiting => return,
            Progress::Passed => None,
            Progress::Refused(r) => Some(r),
        };
        let Some(entry) = self.resolving.remove(&n) else {
            return;
        };
        let result = match refusal {
            None => self.start_login(entry.request, entry.registration, now, random),
            Some(refusal) => Err((entry.request, refusal_error(refusal))),
        };
        if let Err((request, e)) = result {
            self.counters.registrations_rejected += 1;
            self.logs.refused(&e, now.instant);
            self.respond(request, e.to_response());
        }
    }

    /// A registration whose destinations passed: admitted by the caps, paced, and its
    /// login started. Its answer comes when the session is ready or fails.
    fn start_login(
        &mut self,
        request: R,
        registration: Registration,
        now: Now,
        random: Option<super::Random>,
    ) -> Result<(), Refused<R>> {
        let key = registration.dedup_key();
        let account = registration.account_key();
        let host = registration.host.clone();
        let Some(random) = random else {
            return Err((request, ApiError::new(ErrorCode::Internal, "no randomness")));
        };
        let id = SubscriptionId::from_bytes(std::array::from_fn(|i| random[i]));
        // The codes are made now, while the random bytes are at hand; they go out once
        // the session is ready and its 201 sent.
        let verification = self.config.require_endpoint_verification.then(|| {
            let codes: [u8; RANDOM_BYTES] = std::array::from_fn(|i| random[ID_BYTES + i]);
            Box::new(Verification::new(&codes))
        });
        // A registration of a key that is live already does not end the live one here: it
        // logs in beside it and replaces it only once ready (see `crate::replacement`).
        let wait = match self
            .admit(&key, &account, &host)
            .and_then(|()| self.pace(&host, now.instant))
        {
            Ok(wait) => wait,
            Err(e) => return Err((request, e)),
        };
        let push = PushSubscription::new_tagged(
            id,
            registration.new_mail.clone(),
            registration.reconnect.clone(),
            registration.tag.clone(),
            now.unix,
        );
        let (mailboxes, since) = (registration.mailboxes.clone(), registration.since);
        let (spec, options) = watch_spec(registration);
        if wait.is_zero() {
            self.out.push_back(Output::Watch {
                subscription: id,
                spec,
                options,
            });
        } else {
            self.counters.logins_paced += 1;
            self.logs.paced(&host, wait, now.instant);
            self.paced.push(PacedLogin {
                due: now.instant + wait,
                subscription: id,
                spec,
                options,
            });
        }
        let deadline = now.instant + wait + Duration::from_secs(self.config.register_timeout_secs);
        self.registry.insert(Subscription {
            id,
            host: host.into(),
            session: None,
            key,
            account,
            push,
            mailboxes,
            since,
            state: SubState::Pending,
            idle: false,
            notify: false,
            created_unix: now.unix,
            last_new_mail: None,
            pushes_sent: 0,
            pushes_failed: 0,
            waiting: Some((request, deadline)),
            verification,
        });
        Ok(())
    }

    /// The caps a registration must pass before any login: sessions in all, devices per
    /// account, sessions per IMAP host, registrations in progress. A re-registration of a
    /// key the registry holds replaces rather than adds, so only the last cap applies to it.
    fn admit(&mut self, key: &[u8; 32], account: &[u8; 32], host: &str) -> Result<(), ApiError> {
        if self.fenced() {
            return Err(super::cluster::fenced_error());
        }
        let limits = &self.config.limits;
        if self.registry.pending() >= limits.pending_registrations_max {
            return Err(ApiError::rate_limited(
                5,
                "too many registrations in progress",
            ));
        }
        if self.registry.holds_key(key) {
            return Ok(());
        }
        if self.registry.keys() >= self.budget.sessions_capacity {
            return Err(ApiError::new(ErrorCode::AtCapacity, "this server is full"));
        }
        if !self
            .registry
            .account_admits(account, key, limits.sessions_per_account_max)
        {
            return Err(ApiError::new(
                ErrorCode::TooManySessions,
                "this account has as many sessions as it may",
            ));
        }
        if self.registry.host_count(host) >= limits.sessions_per_host_max {
            self.counters.host_cap_rejections += 1;
            return Err(ApiError::new(
                ErrorCode::AtCapacity,
                "this server holds as many sessions to that IMAP host as it may",
            ));
        }
        Ok(())
    }

    /// Takes a login turn for `host`, or says when to come back.
    fn pace(&mut self, host: &str, now: Instant) -> Result<Duration, ApiError> {
        self.pacer.reserve(host, now).map_err(|retry| {
            ApiError::rate_limited(
                retry.as_secs() + 1,
                "too many logins to this IMAP host right now",
            )
        })
    }

    fn check_rate(&mut self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        self.limiter
            .check(ip, now)
            .map_err(|wait| ApiError::rate_limited(wait.as_secs() + 1, "too many registrations"))
    }

    pub(super) fn describe(&self, id: &str) -> Result<Response, ApiError> {
        let id = SubscriptionId::parse(id).map_err(|_| not_found())?;
        let sub = self.registry.get(&id).ok_or_else(not_found)?;
        let body = serde_json::json!({
            "id": sub.id,
            "state": sub.state.as_str(),
            "mailboxes": sub.mailboxes,
            "capabilities": {"idle": sub.idle, "notify": sub.notify},
            "since": sub.since.map(|s| serde_json::json!({"uidvalidity": s.uidvalidity, "uidnext": s.uidnext})),
            "created": sub.created_unix,
            "last_new_mail": sub.last_new_mail.map(|(at, exists)| serde_json::json!({"at": at, "exists": exists})),
            "pushes": {"sent": sub.pushes_sent, "failed": sub.pushes_failed},
        });
        Ok(Response::json(200, body.to_string()))
    }

    /// `GET /v1/subscriptions/{id}`: this node's subscription, or another node's read from
    /// the shared journal.
    fn get(&mut self, request: R, id: &str, now: Instant) -> Result<(), Refused<R>> {
        let Ok(parsed) = SubscriptionId::parse(id) else {
            return Err((request, not_found()));
        };
        if self.registry.get(&parsed).is_none() {
            let until = now + super::remote::REMOTE_TIMEOUT;
            return self.ask_remote(request, parsed, super::remote::Remote::Get { until });
        }
        match self.describe(id) {
            Ok(response) => {
                self.respond(request, response);
                Ok(())
            }
            Err(e) => Err((request, e)),
        }
    }

    /// Ends a subscription: its session ended, its pending new mail dropped, and no push
    /// after this (not even a reconnect one). The 204 waits until the journal removal is
    /// durable: a crash after a 204 must not bring the subscription back with a restart
    /// push.
    fn delete(&mut self, request: R, id: &str, now: Instant) -> Result<(), Refused<R>> {
        let Ok(id) = SubscriptionId::parse(id) else {
            return Err((request, not_found()));
        };
        let Some(sub) = self.registry.remove(&id) else {
            // Perhaps another node's (a shared journal).
            let until = now + super::remote::REMOTE_TIMEOUT;
            return self.ask_remote(request, id, super::remote::Remote::Delete { until });
        };
        self.unwatch(sub.session);
        self.push(super::PushJob::Forget {
            subscription: sub.id,
        });
        if let Some((waiting, _)) = sub.waiting {
            let e = ApiError::new(ErrorCode::Deleted, "deleted before it was ready");
            self.respond(waiting, e.to_response());
        }
        let ticket = self.ticket();
        self.created.insert(
            ticket,
            super::Created {
                request: super::Waiter::Local(request),
                response: Response::empty(204),
                verify: None,
            },
        );
        self.out.push_back(Output::JournalRemove {
            id: sub.id,
            ticket: Some(ticket),
        });
        Ok(())
    }
}

/// A client that names its routing key (`Imap-Push-Key`, what the load balancer hashed
/// on) must name this registration's: else the request reached a node by another
/// account's key, and the app would hash its next request elsewhere too.
fn check_routing_key(registration: &Registration, given: Option<&str>) -> Result<(), ApiError> {
    match given.map(str::trim) {
        Some(given) if given != registration.routing_key() => Err(ApiError::new(
            ErrorCode::RoutingKeyMismatch,
            "the Imap-Push-Key header is not this account's routing key: base64url (no \
             padding) of SHA-256 over host, port and username, lowercased, joined by \\n",
        )),
        _ => Ok(()),
    }
}

/// What the engine needs of a registration; the secret moves into the spec.
fn watch_spec(registration: Registration) -> (engine::WatchSpec, engine::WatchOptions) {
    let spec = engine::WatchSpec {
        host: registration.host,
        port: registration.port,
        security: registration.security,
        username: registration.username,
        secret: registration.secret,
        mailboxes: registration.mailboxes,
        since: registration.since,
    };
    let options = engine::WatchOptions {
        filter: registration.filter,
        preview: registration.preview,
    };
    (spec, options)
}

/// How a failed lookup is answered: a name that does not resolve is the app's mistake
/// (400 for an endpoint; for an IMAP host, unreachable as before), a slow or busy
/// resolver is worth a retry.
fn unresolved(target: Target, error: Option<engine::ResolveError>) -> ApiError {
    use engine::ResolveError;
    let what = match target {
        Target::Imap => "the IMAP host",
        Target::NewMail => "the new_mail endpoint's host",
        Target::Reconnect => "the reconnect endpoint's host",
    };
    match (error, target) {
        (Some(ResolveError::Busy), _) => ApiError::new(
            ErrorCode::ResolverBusy,
            "too many host name lookups are waiting",
        ),
        (Some(ResolveError::TimedOut), Target::Imap) => ApiError::new(
            ErrorCode::ImapTimeout,
            format!("{what} did not resolve in time"),
        ),
        (Some(ResolveError::TimedOut), _) => ApiError::new(
            ErrorCode::ResolverBusy,
            format!("{what} did not resolve in time"),
        ),
        (_, Target::Imap) => ApiError::new(
            ErrorCode::ImapUnreachable,
            format!("{what} name did not resolve"),
        ),
        (_, _) => ApiError::bad_request(target.field(), format!("{what} name did not resolve")),
    }
}

fn refusal_error(refusal: Refusal<engine::ResolveError>) -> ApiError {
    match refusal {
        Refusal::Forbidden(target) => ApiError::new(
            ErrorCode::ForbiddenDestination,
            format!(
                "{} resolves to an address that is not public",
                target.field()
            ),
        ),
        Refusal::Unresolved(target, error) => unresolved(target, error),
    }
}

pub(super) fn watch_error(e: engine::WatchError) -> ApiError {
    match e {
        engine::WatchError::AtCapacity => {
            ApiError::new(ErrorCode::AtCapacity, "this server is full")
        }
        engine::WatchError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, "shutting down"),
        engine::WatchError::Spec(e) => ApiError::bad_request("imap", e.to_string()),
    }
}

pub(super) fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such subscription")
}
