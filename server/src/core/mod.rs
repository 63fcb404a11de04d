//! The server's state and every rule about it, in one sans-IO owner.
//!
//! `Core` never touches a socket, a channel, a thread, a clock or a random source: `now`
//! and fresh random bytes come in with each input, and everything it wants done comes out
//! as an [`Output`] to poll. One thread owns it (see [`crate::app`]); the simulation
//! (`server/tests/simulation.rs`) owns it in virtual time.
//!
//! The rules, each in the file named:
//! - dedup and replace-after-ready, capacity, pacing and per-client limits:
//!   [`requests`] (calling [`crate::replacement`], [`crate::accounts`], [`crate::pacer`],
//!   [`crate::ratelimit`] through [`crate::registry`]);
//! - readiness, failure and loss of sessions, the registration deadline: `sessions`;
//! - journal-before-201, push reports, the restart and shutdown pushes: `pushes`;
//! - endpoint verification (the verify route, activation, the verification deadline):
//!   `verify`, calling [`crate::verification`].
//!
//! Coalescing, backoff and the 429 and 410 handling of each push still live in
//! [`crate::delivery`], which turns [`PushJob`]s into requests and answers with
//! [`Report`]s.
//!
//! # How to drive it
//!
//! The owner MUST, in this order, repeatedly:
//! 1. call [`Core::handle`] with the next input (or [`Input::Tick`] once
//!    [`Core::poll_timeout`] has passed);
//! 2. call [`Core::poll_output`] until it returns `None`, carrying each output out;
//!    a [`Output::Watch`] MUST be answered with [`Input::Watched`] before any other input,
//!    since the engine names the session.
//!
//! Handles are the owner's: `S` names an engine session, `R` a waiting API request.

pub mod cluster;
pub mod held;
mod logs;
mod metrics;
mod pushes;
pub mod readiness;
pub mod remote;
pub mod requests;
mod sessions;
mod verify;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use engine::{EndReason, Preview, WatchError, WatchOptions, WatchSpec};
use httpd::{Method, Response};
use zeroize::Zeroizing;

use crate::config::Config;
pub use crate::delivery::PushJob;
use crate::delivery::Report;
use crate::fd_budget::Budget;
use crate::id::SubscriptionId;
use crate::journal::{ClusterEvent, ClusterOp, Record};
use crate::pacer::Pacer;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;

use held::Held;
pub use metrics::Counters;
use requests::Resolving;

/// Fresh random bytes the owner passes with each input ([`Core::handle`]): a new
/// subscription's id (16 bytes), then its two verification codes
/// ([`crate::verification::RANDOM_BYTES`]).
pub const RANDOM_LEN: usize = crate::id::ID_BYTES + crate::verification::RANDOM_BYTES;

/// [`RANDOM_LEN`] random bytes.
pub type Random = [u8; RANDOM_LEN];

/// An API request as the owner forwards it: no socket, only what the rules read.
#[derive(Debug)]
pub struct ApiRequest<R> {
    /// The owner's handle for the answer.
    pub id: R,
    pub method: Method,
    pub path: String,
    /// The client (after the trusted-proxy rule): registrations per client are limited.
    pub client: IpAddr,
    /// The `Authorization` header, zeroized on drop.
    pub authorization: Option<Zeroizing<String>>,
    /// The `Imap-Push-Key` header: the routing key the client computed (a registration
    /// whose own key differs is refused, `routing_key_mismatch`).
    pub routing_key: Option<String>,
    /// Zeroized on drop (and by the parser once read).
    pub body: Zeroizing<Vec<u8>>,
}

/// What the engine says of a session.
#[derive(Debug)]
pub enum SessionEvent<S> {
    Ready {
        session: S,
        ready: engine::Ready,
    },
    /// Ended before it was ready.
    Failed {
        session: S,
        reason: EndReason,
    },
    NewMail {
        session: S,
        mailbox: usize,
        exists: u32,
        preview: Option<Box<Preview>>,
        /// When the engine read the change ([`engine::Event::NewMail`]'s `read_at`): the
        /// push's latency counts from here.
        read_at: Instant,
    },
    /// Ended after it was ready (or unwatched).
    Lost {
        session: S,
        reason: EndReason,
    },
}

/// Every input of the core.
#[derive(Debug)]
pub enum Input<S, R> {
    Request(ApiRequest<R>),
    /// The engine's answer to [`Output::Watch`] of `subscription`.
    Watched {
        subscription: SubscriptionId,
        result: Result<S, WatchError>,
    },
    Session(SessionEvent<S>),
    /// A resolver answer to [`Output::Lookup`] (or the owner's refusal to start it).
    Lookup(engine::Lookup),
    /// The journal write [`Output::JournalInsert`] numbered `ticket` is durable (`ok`) or
    /// failed.
    JournalDurable {
        ticket: u64,
        ok: bool,
    },
    /// What became of a push job.
    PushSettled(Report),
    /// The push pool's queue was full: it handed [`Output::Push`]'s job back. The core
    /// keeps it (and every later push behind it) and offers it again after
    /// [`held::REOFFER_AFTER`]. Answer at once, before polling on.
    PushRefused(PushJob),
    /// The shared journal's answer to [`Output::Cluster`], or its notice (see
    /// [`cluster`]).
    Cluster(ClusterEvent),
    /// A deadline ([`Core::poll_timeout`]) may have passed.
    Tick,
    /// The server stops: every ready subscription gets its `shutdown` push.
    Shutdown,
}

/// Every output of the core.
#[derive(Debug)]
pub enum Output<S, R> {
    Respond {
        request: R,
        response: Response,
    },
    /// `GET /metrics`: the core's part; the owner appends the engine's and the push
    /// pool's counters and answers.
    RespondMetrics {
        request: R,
        text: String,
    },
    /// Start a session; answer with [`Input::Watched`] at once.
    Watch {
        subscription: SubscriptionId,
        spec: WatchSpec,
        options: WatchOptions,
    },
    Unwatch(S),
    /// Resolve `host`; the answer carries `token`.
    Lookup {
        token: u64,
        host: String,
        port: u16,
    },
    /// Write `record` durably, then answer [`Input::JournalDurable`] with `ticket`.
    JournalInsert {
        ticket: u64,
        record: Record,
    },
    /// Remove `id`'s record; with a `ticket`, answer [`Input::JournalDurable`] once the
    /// removal is durable.
    JournalRemove {
        id: SubscriptionId,
        ticket: Option<u64>,
    },
    /// The journal failed: write something that touches the disk as a record would
    /// (nothing a restart reads back), then answer [`Input::JournalDurable`] with `ticket`.
    /// See [`readiness`].
    JournalProbe {
        ticket: u64,
    },
    Push(PushJob),
    /// Work for the shared journal (heartbeat, claims), carried out in order with the
    /// journal writes before it; answered with [`Input::Cluster`].
    Cluster(ClusterOp),
}

/// The clock, read by the owner.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub instant: Instant,
    /// Seconds since 1970, for what the API shows and the journal keeps.
    pub unix: u64,
}

/// A login waiting for its turn at its IMAP host.
#[derive(Debug)]
struct PacedLogin {
    due: Instant,
    subscription: SubscriptionId,
    spec: WatchSpec,
    options: WatchOptions,
}

/// A 201 (or a DELETE's 204, or a verify's 200) waiting for its journal write to be
/// durable.
#[derive(Debug)]
struct Created<R> {
    request: Waiter<R>,
    response: Response,
    /// A verifying subscription's 201: its verification pushes go once it is sent.
    verify: Option<SubscriptionId>,
}

/// Who waits for an answer: a request of this node's API, or another node that forwarded
/// a verification to this one, the owner (see [`remote`]).
#[derive(Debug)]
enum Waiter<R> {
    Local(R),
    Forwarded {
        by: crate::node::NodeName,
        ticket: u64,
    },
}

/// The owner of the server's state. See the module docs for the call order.
#[derive(Debug)]
pub struct Core<S, R> {
    config: Config,
    budget: Budget,
    vapid_public_key: String,
    registry: Registry<S, R>,
    limiter: RateLimiter,
    pacer: Pacer,
    /// Logins waiting for their turn; at most `limits.pending_registrations_max`, since
    /// each is a registration still waiting.
    paced: Vec<PacedLogin>,
    /// Registrations waiting for their host names, by resolution number.
    resolving: HashMap<u64, Resolving<R>>,
    next_resolution: u64,
    /// 201s and 204s waiting for their journal write, by ticket.
    created: HashMap<u64, Created<R>>,
    next_ticket: u64,
    counters: Counters,
    /// Pushes the pool handed back, in order, bounded by [`held::HELD_NEW_MAIL_MAX`].
    held: Held,
    out: VecDeque<Output<S, R>>,
    shut_down: bool,
    /// The limiters of the lines that repeat per session or registration.
    logs: logs::CoreLogs,
    /// The journal's health, for `/readyz`.
    journal: readiness::JournalHealth,
    /// With a shared journal: this node's heartbeat and fencing (see [`cluster`]).
    liveness: Option<cluster::Liveness>,
    /// GETs and DELETEs of other nodes' subscriptions waiting for the database, by
    /// ticket; at most [`remote::REMOTE_PENDING_MAX`].
    remote: HashMap<u64, (R, remote::Remote)>,
    /// The reconcile in flight after a reconnect to the database (see [`remote`]).
    reconcile: Option<remote::Reconcile>,
}

impl<S: Copy + Eq + Hash + std::fmt::Debug, R: std::fmt::Debug> Core<S, R> {
    /// A core for a server with `budget`, after a restart that left `leftovers` in the
    /// journal: each gets its `server_restart` push (polled at once).
    pub fn new(
        config: Config,
        budget: Budget,
        vapid_public_key: String,
        leftovers: Vec<Record>,
        now: Now,
    ) -> Core<S, R> {
        let limits = &config.limits;
        let liveness = cluster::liveness(&config, now.instant);
        let mut core = Core {
            liveness,
            remote: HashMap::new(),
            reconcile: None,
            limiter: RateLimiter::new(limits.registrations_per_minute_per_ip),
            pacer: Pacer::new(
                limits.logins_per_second_per_host,
                Duration::from_secs(limits.login_queue_secs),
            ),
            config,
            budget,
            vapid_public_key,
            registry: Registry::default(),
            paced: Vec::new(),
            resolving: HashMap::new(),
            next_resolution: 0,
            created: HashMap::new(),
            next_ticket: 0,
            counters: Counters::default(),
            held: Held::default(),
            out: VecDeque::new(),
            shut_down: false,
            logs: logs::CoreLogs::default(),
            journal: readiness::JournalHealth::default(),
        };
        core.restart_pushes(leftovers, now);
        core
    }

    /// Handles one input. `random` is [`RANDOM_LEN`] fresh random bytes, used if the
    /// input creates a subscription (its id and verification codes); `None` if the random
    /// source failed.
    pub fn handle(&mut self, input: Input<S, R>, now: Now, random: Option<Random>) {
        match input {
            Input::Request(request) => self.on_request(request, now, random),
            Input::Watched {
                subscription,
                result,
            } => self.on_watched(subscription, result),
            Input::Session(event) => self.on_session(event, now),
            Input::Lookup(lookup) => self.on_lookup(lookup, now, random),
            Input::JournalDurable { ticket, ok } => {
                self.journal_settled(ticket, ok, now.instant);
                self.on_durable(ticket, ok, now.instant);
            }
            Input::PushSettled(report) => self.on_report(report),
            Input::PushRefused(job) => self.on_push_refused(job, now.instant),
            Input::Cluster(event) => self.on_cluster(event, now),
            Input::Tick => {
                self.start_paced_logins(now.instant);
                self.expire_registrations(now.instant);
                self.expire_verifications(now.instant);
                self.reoffer_held(now.instant);
                self.probe_journal(now.instant);
                self.cluster_tick(now.instant);
                self.expire_remote(now.instant);
            }
            Input::Shutdown => self.shutdown_pushes(),
        }
    }

    /// The next thing to do, in the order the core decided it.
    pub fn poll_output(&mut self) -> Option<Output<S, R>> {
        self.out.pop_front()
    }

    /// When [`Input::Tick`] is next due: the earliest paced login, registration or
    /// verification deadline, offer of held pushes, journal probe, heartbeat or fence.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let paced = self.paced.iter().map(|p| p.due).min();
        let deadlines = [
            paced,
            self.registry.next_deadline(),
            self.held.due(),
            self.journal.due(),
            self.liveness.as_ref().map(cluster::Liveness::due),
            self.remote_due(),
        ];
        deadlines.into_iter().flatten().min()
    }

    /// Pushes held because the pool's queue was full (see [`Input::PushRefused`]).
    pub fn held_pushes(&self) -> usize {
        self.held.len()
    }

    /// Whether a reconnect push of `subscription` is held (what a checker asks when the
    /// process dies: a held push is lost like one queued in the pool).
    pub fn holds_reconnect(&self, subscription: &SubscriptionId) -> bool {
        self.held.holds_reconnect(subscription)
    }

    /// The counters for /metrics and for tests.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The session of every subscription, by id: what a checker walks.
    pub fn sessions(&self) -> impl Iterator<Item = (SubscriptionId, S)> + '_ {
        self.registry.sessions()
    }

    /// The live subscription of each key and its candidates, in all.
    pub fn subscriptions(&self) -> usize {
        self.registry.len()
    }

    /// Sizes of the core's tables, each against its bound (checked by the simulation).
    pub fn queues(&self) -> Queues {
        Queues {
            pending: self.registry.pending(),
            paced: self.paced.len(),
            resolving: self.resolving.len(),
            created: self.created.len(),
            held_new_mail: self.held.new_mail(),
            keys: self.registry.keys(),
            pending_max: self.config.limits.pending_registrations_max,
            keys_max: self.budget.sessions_capacity,
        }
    }

    fn respond(&mut self, request: R, response: Response) {
        self.out.push_back(Output::Respond { request, response });
    }

    fn unwatch(&mut self, session: Option<S>) {
        if let Some(session) = session {
            self.out.push_back(Output::Unwatch(session));
        }
    }

    /// Queues a push, behind the held ones if there are any: pushes reach the pool in
    /// the order the core decided them.
    fn push(&mut self, job: PushJob) {
        if self.held.is_empty() {
            self.out.push_back(Output::Push(job));
        } else {
            self.held.hold(job);
        }
    }

    /// The pool handed `job` back: it is held, and so is every push still waiting to be
    /// polled, so that none overtakes it.
    fn on_push_refused(&mut self, job: PushJob, now: Instant) {
        self.held.refused(job, now);
        let waiting = std::mem::take(&mut self.out);
        for output in waiting {
            match output {
                Output::Push(job) => self.held.hold(job),
                other => self.out.push_back(other),
            }
        }
    }

    /// Offers the held pushes again once their pause has passed.
    fn reoffer_held(&mut self, now: Instant) {
        if let Some(jobs) = self.held.release(now) {
            self.out.extend(jobs.into_iter().map(Output::Push));
        }
    }

    /// A journal removal nobody waits for.
    fn forget_record(&mut self, id: SubscriptionId) {
        self.out
            .push_back(Output::JournalRemove { id, ticket: None });
    }

    /// The number of the next journal write whose outcome the core waits for.
    fn ticket(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        ticket
    }
}

/// The core's tables against their bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queues {
    /// Registrations waiting for their session.
    pub pending: usize,
    pub paced: usize,
    pub resolving: usize,
    pub created: usize,
    /// New-mail pushes held while the pool's queue is full.
    pub held_new_mail: usize,
    /// Keys live or logging in.
    pub keys: usize,
    pub pending_max: usize,
    pub keys_max: usize,
}

impl Queues {
    /// The first table over its bound, if any.
    pub fn over_bound(&self) -> Option<&'static str> {
        // Waiting registrations are capped when admitted; a 201 waiting for the journal
        // was a waiting registration a moment ago.
        let checks = [
            ("pending registrations", self.pending, self.pending_max),
            ("paced logins", self.paced, self.pending_max),
            ("resolving registrations", self.resolving, self.pending_max),
            ("201s waiting for the journal", self.created, self.keys_max),
            ("held new mail", self.held_new_mail, held::HELD_NEW_MAIL_MAX),
            ("keys", self.keys, self.keys_max),
        ];
        checks
            .iter()
            .find(|(_, n, max)| n > max)
            .map(|(name, _, _)| *name)
    }
}
