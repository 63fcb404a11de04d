//! The running server's IO edge: the REST API on httpd, the IMAP engine, the push pool,
//! the journal, and the owner thread that runs [`Core`] between them.
//!
//! The other threads only move bytes and talk to the owner over bounded channels:
//! httpd forwards each request (a full queue is `503` at once, from the httpd thread);
//! the engine's reactors send session events; resolver threads send lookup answers; the
//! journal thread says when a write is durable; the push senders make the requests the
//! core's scheduler decides and say how each went. No lock guards server state: the
//! owner alone holds it.
//!
//! ```text
//! registration:  httpd ──request──▶ owner: Core ──Watch──▶ engine reactor (login)
//!                reactor ──Ready──▶ owner: Core ──JournalInsert──▶ journal thread (fsync)
//!                journal ──durable──▶ owner: Core ──201──▶ httpd
//! new mail:      reactor ──NewMail──▶ owner: Core (coalesce, permits) ──Send──▶ sender
//!                sender (HTTP) ──Done──▶ owner: Core (retry, 429 hold, 410 ends it)
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use engine::{Engine, EngineConfig, Event};
use httpd::{Request, Responder};
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use crate::api::ApiError;
use crate::config::Config;
use crate::core::readiness::{self, NotReady};
use crate::core::{ApiRequest, Core, Done, Input, Now, Output, SessionEvent};
use crate::delivery::{Attempt, Pool};
use crate::destination::is_public;
use crate::error_code::ErrorCode;
use crate::fd_budget::{self, Budget, Demand, TooFewDescriptors};
use crate::journal::postgres::{PgOptions, PgStore};
use crate::journal::{ClusterEvent, Journal, JournalError, Record};
use crate::node::JournalSetting;

mod handover;

/// API requests waiting for the owner. One more is answered `503` by the httpd thread at
/// once: a burst beyond this is more than the owner can answer in good time anyway, and
/// the httpd reactor must never wait.
pub const REQUESTS_QUEUE_MAX: usize = 1024;

/// Resolver answers waiting for the owner. At most `pending_registrations_max` (default
/// 64) registrations resolve at once, three names each, so the queue fills only when the
/// owner is stalled; a resolver thread then waits, which no other thread waits for.
pub const LOOKUPS_QUEUE_MAX: usize = 1024;

/// Journal outcomes waiting for the owner. The journal thread waits when it is full; the
/// owner never waits for the journal thread while it runs (its op queue takes every op),
/// so the two cannot wait for each other.
pub const DURABLE_QUEUE_MAX: usize = 1024;

/// Answers and notices of a shared journal waiting for the owner. The journal thread
/// waits when it is full; the owner never waits for the journal thread (as for
/// [`DURABLE_QUEUE_MAX`]).
pub const CLUSTER_QUEUE_MAX: usize = 1024;

/// The header a client names its account's routing key in, for load balancers to hash
/// on (see [`crate::api::Registration::routing_key`]).
pub const ROUTING_KEY_HEADER: &str = "imap-push-key";

/// How soon the owner offers the journal's backlog again when the journal's queue was
/// full (see [`crate::journal::BACKLOG_MAX`]).
const JOURNAL_REOFFER: Duration = Duration::from_millis(10);

/// How long the owner sleeps with no deadline and no input: it wakes for nothing but a
/// check that costs nothing.
const IDLE_WAKE: Duration = Duration::from_secs(60);

type ServerCore = Core<engine::SessionId, httpd::RequestId>;
type Forwarded = ApiRequest<httpd::RequestId>;
/// A journal write's ticket and whether it is durable.
type Durable = (u64, bool);

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    DataDir(std::io::Error),
    Vapid(push::VapidError),
    Journal(JournalError),
    Engine(engine::StartError),
    /// RLIMIT_NOFILE could not be read.
    Rlimit(std::io::Error),
    /// The descriptor limit leaves no room for sessions.
    Descriptors(TooFewDescriptors),
    Httpd(httpd::HttpdError),
    Thread(std::io::Error),
    Config(crate::config::ConfigError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::DataDir(e) => write!(f, "data dir: {e}"),
            StartError::Vapid(e) => write!(f, "VAPID key: {e}"),
            StartError::Journal(e) => write!(f, "journal: {e}"),
            StartError::Engine(e) => write!(f, "IMAP engine: {e}"),
            StartError::Rlimit(e) => write!(f, "RLIMIT_NOFILE: {e}"),
            StartError::Descriptors(e) => write!(f, "{e}"),
            StartError::Httpd(e) => write!(f, "HTTP server: {e}"),
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Thread(e) => write!(f, "thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The bounded channel the httpd thread forwards requests on.
pub fn request_channel<R>() -> (Sender<ApiRequest<R>>, Receiver<ApiRequest<R>>) {
    crossbeam_channel::bounded(REQUESTS_QUEUE_MAX)
}

/// The bounded channel resolver threads answer on.
fn lookup_channel() -> (Sender<engine::Lookup>, Receiver<engine::Lookup>) {
    crossbeam_channel::bounded(LOOKUPS_QUEUE_MAX)
}

/// The bounded channel a shared journal answers and notifies on.
fn cluster_channel() -> (Sender<ClusterEvent>, Receiver<ClusterEvent>) {
    crossbeam_channel::bounded(CLUSTER_QUEUE_MAX)
}

/// The bounded channel the journal thread says on which writes are durable.
fn durable_channel() -> (Sender<Durable>, Receiver<Durable>) {
    crossbeam_channel::bounded(DURABLE_QUEUE_MAX)
}

/// What the httpd thread does with a request: hand it to the owner, or, when the owner's
/// queue is full or gone, answer `503` at once.
pub fn forward(requests: &Sender<Forwarded>, request: Request, responder: &Responder) {
    let id = request.id;
    let forwarded = ApiRequest {
        id,
        method: request.method,
        client: request.client,
        authorization: request
            .header("authorization")
            .map(|v| Zeroizing::new(v.to_owned())),
        routing_key: request.header(ROUTING_KEY_HEADER).map(str::to_owned),
        path: request.path.clone(),
        body: request.body.clone(),
    };
    drop(request);
    if let Err(e) = requests.try_send(forwarded) {
        let reason = match e {
            TrySendError::Full(_) => "the server is busy; try again",
            TrySendError::Disconnected(_) => "shutting down",
        };
        responder.respond(id, busy(reason).to_response());
    }
}

/// What the httpd thread answers once shutdown has begun and the owner no longer reads
/// requests: `/readyz` says `draining` (so load balancers move on while the shutdown
/// pushes go out), `/healthz` that the process lives, anything else `503 shutting_down`.
fn answer_draining(request: Request, responder: &Responder) {
    let response = match request.path.trim_end_matches('/') {
        "/readyz" => readiness::response(Err(NotReady::Draining)),
        "/healthz" => httpd::Response::json(200, r#"{"status":"ok"}"#),
        _ => ApiError::new(ErrorCode::ShuttingDown, "shutting down").to_response(),
    };
    responder.respond(request.id, response);
}

fn busy(reason: &str) -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::new(ErrorCode::AtCapacity, reason)
    }
}

/// What the owner thread is told to stop for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: every subscription gets its `shutdown` push.
    Shutdown,
    /// An in-place upgrade: the owner hands its state back as it is.
    Handover,
}

/// A running server.
pub struct App {
    httpd: Option<httpd::ServerHandle>,
    owner: Option<JoinHandle<(Owner, Inlets)>>,
    stop: Sender<Stop>,
    addr: SocketAddr,
    budget: Budget,
    /// Journal records the previous run left (each gets its `server_restart` push).
    recovered: usize,
    /// Set when shutdown begins: from then on the httpd thread answers every request
    /// itself ([`answer_draining`]) until the shutdown pushes are out.
    draining: Arc<AtomicBool>,
}

/// The owner thread's state: the core and the handles of the threads that move bytes.
struct Owner {
    core: ServerCore,
    engine: Engine,
    /// The push senders: they make the requests the core's scheduler decides.
    pool: Pool,
    journal: Journal,
    responder: Responder,
    lookup_tx: Sender<engine::Lookup>,
    durable_tx: Sender<Durable>,
    rng: ring::rand::SystemRandom,
    /// Subscriptions when the stop came, for the shutdown summary.
    subscriptions_at_stop: usize,
}

/// The channels the owner reads.
struct Inlets {
    stop: Receiver<Stop>,
    requests: Receiver<Forwarded>,
    events: Receiver<Event>,
    pushes: Receiver<Done>,
    lookups: Receiver<engine::Lookup>,
    durable: Receiver<Durable>,
    /// A shared journal's answers and notices (never anything with redb).
    cluster: Receiver<ClusterEvent>,
}

impl App {
    pub fn start(config: Config) -> Result<App, StartError> {
        App::start_resumed(config, None)
    }

    /// Starts the server; with the `image` an upgrade handed over, it goes on with the
    /// sessions and the API listener of the process it replaced (see [`crate::upgrade`]).
    pub fn start_resumed(
        config: Config,
        image: Option<crate::image::Image>,
    ) -> Result<App, StartError> {
        create_private_dir(&config.data_dir).map_err(StartError::DataDir)?;
        let vapid = push::VapidKey::load_or_generate(&config.data_dir.join("vapid.pk8"))
            .map_err(StartError::Vapid)?;
        let vapid_public_key = vapid.public_key_b64url().to_owned();
        let sender_config = push::SenderConfig::default();
        let limits = httpd_limits(&config);
        let budget = descriptor_budget(&config, &sender_config, &limits)?;
        let limits = httpd::Limits {
            connections_max: budget.api_connections,
            ..limits
        };
        let mut sender =
            push::Sender::new(sender_config).with_vapid(vapid, config.vapid_subject.clone());
        if !config.allow_private_destinations {
            // Push endpoints are resolved once and only public addresses are connected to.
            sender = sender.with_address_filter(Arc::new(is_public));
        }
        let pool =
            Pool::start(config.sender_threads, Arc::new(sender)).map_err(StartError::Thread)?;
        let (cluster_tx, cluster) = cluster_channel();
        let (journal, leftovers) =
            open_journal(&config, cluster_tx, image.is_some()).map_err(StartError::Journal)?;
        // With redb nothing ever comes, and the sender is gone: a closed channel would be
        // ready for every select.
        let cluster = match config.journal {
            JournalSetting::Redb => crossbeam_channel::never(),
            JournalSetting::Postgres(_) => cluster,
        };
        let engine = Engine::start(EngineConfig {
            sessions_max: budget.engine_sessions_max,
            ..engine_config(&config)
        })
        .map_err(StartError::Engine)?;
        let trusted_proxies = config.trusted_proxies().map_err(StartError::Config)?;
        let (listener, image) = handover::split(image);
        let server = handover::listen(
            &config,
            listener,
            httpd::Config {
                limits,
                tls: config.tls.as_ref().map(|t| httpd::TlsFiles {
                    cert_file: t.cert_file.clone(),
                    key_file: t.key_file.clone(),
                }),
                trusted_proxies,
            },
        )
        .map_err(StartError::Httpd)?;
        let addr = server.local_addr();
        let (requests_tx, requests) = request_channel();
        let draining = Arc::new(AtomicBool::new(false));
        let draining_seen = Arc::clone(&draining);
        let httpd = server
            .spawn(move |request: Request, responder: &Responder| {
                if draining_seen.load(Ordering::Relaxed) {
                    return answer_draining(request, responder);
                }
                forward(&requests_tx, request, responder);
            })
            .map_err(StartError::Httpd)?;
        let (lookup_tx, lookups) = lookup_channel();
        let (durable_tx, durable) = durable_channel();
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let inlets = Inlets {
            stop: stop_rx,
            requests,
            events: engine.events().clone(),
            pushes: pool.done().clone(),
            lookups,
            durable,
            cluster,
        };
        let (core, recovered) =
            handover::core(config, budget, vapid_public_key, leftovers, image, &engine);
        let mut owner = Owner {
            core,
            engine,
            pool,
            journal,
            responder: httpd.responder(),
            lookup_tx,
            durable_tx,
            rng: ring::rand::SystemRandom::new(),
            subscriptions_at_stop: 0,
        };
        // The restart pushes, queued by `Core::new`, go out before anything else.
        owner.carry_out();
        let owner = std::thread::Builder::new()
            .name("owner".into())
            .spawn(move || owner.run(inlets))
            .map_err(StartError::Thread)?;
        Ok(App {
            httpd: Some(httpd),
            owner: Some(owner),
            stop,
            addr,
            budget,
            recovered,
            draining,
        })
    }

    /// How many journal records the previous run left (each gets a `server_restart` push).
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    /// Serves new API connections with `cert` (SIGHUP); `false` when the API serves
    /// plain HTTP. Open connections keep theirs.
    pub fn replace_tls(&self, cert: httpd::TlsCert) -> bool {
        self.httpd.as_ref().is_some_and(|h| h.replace_tls(cert))
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The descriptor budget the server runs with (see [`crate::fd_budget`]).
    pub fn budget(&self) -> Option<Budget> {
        Some(self.budget)
    }

    /// Stops accepting requests, logs every IMAP session out, sends each subscription its
    /// reconnect push (`shutdown`), and flushes the push queue within a bounded time.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    /// The API stays up until the shutdown pushes are out, answering `/readyz` with
    /// `draining` and everything else with `503 shutting_down`, so that a load balancer
    /// sees the drain rather than a refused connection.
    fn stop_all(&mut self) {
        self.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.try_send(Stop::Shutdown);
        if let Some(owner) = self.owner.take() {
            // The owner has queued every `shutdown` push and returns its state.
            if let Ok((owner, inlets)) = owner.join() {
                owner.finish(&inlets.pushes);
            }
        }
        if let Some(httpd) = self.httpd.take() {
            // An error here means the httpd thread panicked; shutdown goes on regardless.
            let _ = httpd.shutdown();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.owner.is_some() {
            self.stop_all();
        }
    }
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: unix_now(),
    }
}

impl Owner {
    /// The owner's loop: one input at a time into the core, its outputs carried out, until
    /// the stop message; then the `shutdown` pushes are queued.
    fn run(mut self, inlets: Inlets) -> (Owner, Inlets) {
        loop {
            self.journal.offer_backlog();
            let mut wait = self
                .core
                .poll_timeout()
                .map_or(IDLE_WAKE, |at| at.saturating_duration_since(Instant::now()));
            if self.journal.has_backlog() {
                wait = wait.min(JOURNAL_REOFFER);
            }
            let input = select! {
                recv(inlets.stop) -> stop => match stop {
                    Ok(Stop::Handover) => return (self, inlets),
                    _ => break,
                },
                recv(inlets.requests) -> r => r.ok().map(Input::Request),
                recv(inlets.events) -> e => e.ok().map(|e| Input::Session(session_event(e))),
                recv(inlets.pushes) -> d => d.ok().map(Input::PushDone),
                recv(inlets.lookups) -> l => l.ok().map(Input::Lookup),
                recv(inlets.durable) -> d => d.ok().map(|(ticket, ok)| Input::JournalDurable { ticket, ok }),
                recv(inlets.cluster) -> c => c.ok().map(Input::Cluster),
                default(wait) => Some(Input::Tick),
            };
            if let Some(input) = input {
                self.handle(input);
            }
            if self
                .core
                .poll_timeout()
                .is_some_and(|at| at <= Instant::now())
            {
                self.handle(Input::Tick);
            }
        }
        self.subscriptions_at_stop = self.core.subscriptions();
        self.handle(Input::Shutdown);
        // Requests that came before the drain began are answered, not left hanging until
        // the API stops: the core refuses them now (see `Core::readiness`).
        for request in inlets.requests.try_iter().take(REQUESTS_QUEUE_MAX) {
            self.handle(Input::Request(request));
        }
        (self, inlets)
    }

    fn handle(&mut self, input: Input<engine::SessionId, httpd::RequestId>) {
        // A new subscription uses the random bytes (its id and verification codes), a
        // push retry its jitter.
        let mut random = match &input {
            Input::Request(_) | Input::Lookup(_) | Input::PushDone(_) => {
                let mut bytes = [0u8; crate::core::RANDOM_LEN];
                self.rng.fill(&mut bytes).ok().map(|()| bytes)
            }
            _ => None,
        };
        self.core.handle(input, now(), random);
        // The bytes may hold a subscription's verification codes: wiped once used.
        if let Some(bytes) = random.as_mut() {
            zeroize::Zeroize::zeroize(bytes);
        }
        self.carry_out();
    }

    /// Carries every output of the core out; an engine answer goes back in at once.
    fn carry_out(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Respond { request, response } => self.responder.respond(request, response),
                Output::RespondMetrics { request, text } => {
                    let text = self.metrics(text);
                    let response = httpd::Response::text(200, text)
                        .with_header("content-type", "text/plain; version=0.0.4");
                    self.responder.respond(request, response);
                }
                Output::Watch {
                    subscription,
                    spec,
                    options,
                } => {
                    let result = self.engine.watch_with(spec, options);
                    let input = Input::Watched {
                        subscription,
                        result,
                    };
                    self.core.handle(input, now(), None);
                }
                Output::Unwatch(session) => self.engine.unwatch(session),
                Output::Lookup { token, host, port } => {
                    let resolver = self.engine.resolver();
                    if let Err(e) = resolver.lookup(&host, port, token, &self.lookup_tx) {
                        // Refused at once (a full resolver queue): the same answer as a
                        // failed lookup.
                        let lookup = engine::Lookup {
                            token,
                            result: Err(e),
                        };
                        self.core.handle(Input::Lookup(lookup), now(), None);
                    }
                }
                Output::JournalInsert { ticket, record } => {
                    let durable = self.durable_tx.clone();
                    self.journal.insert(
                        &record,
                        Box::new(move |ok| {
                            let _ = durable.send((ticket, ok));
                        }),
                    );
                }
                Output::JournalRemove { id, ticket: None } => self.journal.remove(&id),
                Output::JournalRemove {
                    id,
                    ticket: Some(ticket),
                } => {
                    let durable = self.durable_tx.clone();
                    self.journal.remove_then(
                        &id,
                        Box::new(move |ok| {
                            let _ = durable.send((ticket, ok));
                        }),
                    );
                }
                Output::JournalProbe { ticket } => {
                    let durable = self.durable_tx.clone();
                    self.journal.probe(Box::new(move |ok| {
                        let _ = durable.send((ticket, ok));
                    }));
                }
                Output::Send(attempt) => self.send(attempt),
                Output::Cluster(op) => self.journal.cluster(op),
            }
        }
    }

    /// Hands an attempt to an idle sender. The core hands out no more attempts than
    /// there are senders, so one is idle; if the pool has stopped after all, the attempt
    /// comes back as a network error, which the scheduler retries as it would any.
    fn send(&mut self, attempt: Attempt) {
        if let Err(attempt) = self.pool.send(attempt) {
            let now = now();
            let done = Done {
                attempt,
                outcome: push::Outcome::Retry { status: None },
                left_at: None,
                answered_at: now.instant,
            };
            self.core.handle(Input::PushDone(done), now, None);
        }
    }

    /// After the owner's loop: the core's scheduler sends what it can within the
    /// shutdown grace (reconnect pushes first, pending new mail without waiting out its
    /// window), then the engine logs out; the the reconnect pushes it settles leave the
    /// journal. Undelivered ones (and pushes the core still holds) stay and get
    /// `server_restart` on the next start, so nobody is dropped silently.
    fn finish(mut self, pushes: &Receiver<Done>) {
        loop {
            let now = now().instant;
            if self.core.pushes_finished(now) {
                break;
            }
            let wake = self
                .core
                .poll_timeout()
                .map_or(IDLE_WAKE, |at| at.saturating_duration_since(now));
            if let Ok(done) = pushes.recv_timeout(wake) {
                self.handle(Input::PushDone(done));
            }
            if self
                .core
                .poll_timeout()
                .is_some_and(|at| at <= Instant::now())
            {
                self.handle(Input::Tick);
            }
            self.journal.offer_backlog();
        }
        self.core.abandon_pushes();
        let subscriptions_at_stop = self.subscriptions_at_stop;
        let Owner {
            core,
            engine,
            pool,
            mut journal,
            durable_tx,
            ..
        } = self;
        let _ = engine.shutdown();
        pool.stop(Instant::now());
        drop(durable_tx);
        journal.flush();
        log_summary(subscriptions_at_stop, &core, &journal);
    }

    fn metrics(&self, mut text: String) -> String {
        use std::fmt::Write;
        let engine = self.engine.stats();
        for (name, n) in [
            ("imap_push_reactor_loop_turns_total", engine.loop_turns),
            ("imap_push_reactor_stale_events_total", engine.stale_events),
            // Events a reactor offered while the event queue was full and kept for its next
            // turn: the owner thread is not keeping up.
            (
                "imap_push_reactor_events_deferred_total",
                engine.events_deferred,
            ),
        ] {
            let _ = writeln!(text, "# TYPE {name} counter");
            let _ = writeln!(text, "{name} {n}");
        }
        crate::delivery::render_histogram(
            &mut text,
            "imap_push_reactor_turn_seconds",
            "Work of one engine reactor turn, from poll's return to the turn's end (all reactors).",
            &engine.turn_time,
        );
        // The live heap, when the binary's allocator counts it (the server's does, see
        // main.rs): the soak bench watches it for leaks.
        let heap = "imap_push_heap_live_bytes";
        let _ = writeln!(text, "# TYPE {heap} gauge");
        let _ = writeln!(text, "{heap} {}", httpd::alloc::live_bytes());
        self.journal_metrics(&mut text);
        text
    }

    fn journal_metrics(&self, text: &mut String) {
        use std::fmt::Write;
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &self.journal.stats;
        let _ = writeln!(
            text,
            "# HELP imap_push_journal_commits_total Group commits of the journal by outcome.\n\
             # TYPE imap_push_journal_commits_total counter\n\
             imap_push_journal_commits_total{{outcome=\"ok\"}} {}\n\
             imap_push_journal_commits_total{{outcome=\"failed\"}} {}\n\
             # HELP imap_push_journal_removals_dropped_total Removals dropped behind a stalled disk.\n\
             # TYPE imap_push_journal_removals_dropped_total counter\n\
             imap_push_journal_removals_dropped_total {}",
            stats.commits.load(Relaxed),
            stats.commit_failures.load(Relaxed),
            stats.removals_dropped.load(Relaxed),
        );
        crate::delivery::render_histogram(
            text,
            "imap_push_journal_commit_seconds",
            "Time of each journal group commit, write transaction and fsync.",
            &stats.commit_time.snapshot(),
        );
    }
}

/// The journal `config` names, and what the previous run left in it: the redb file in the
/// data dir, or this node's rows in the shared database.
fn open_journal(
    config: &Config,
    cluster: Sender<ClusterEvent>,
    resuming: bool,
) -> Result<(Journal, Vec<Record>), JournalError> {
    let url = match &config.journal {
        JournalSetting::Redb => return Journal::open(&config.data_dir.join("journal.redb")),
        JournalSetting::Postgres(url) => url,
    };
    let node_id = config.node_id.as_deref().unwrap_or_default();
    let options = PgOptions {
        url: url.dangerous_expose(),
        node_id,
        node_lost_after_secs: config.node_lost_after_secs,
        resuming,
    };
    let (store, leftovers) = PgStore::open(&options)?;
    tracing::info!(
        journal = %url.redacted(),
        node_id,
        leftovers = leftovers.len(),
        "shared journal opened"
    );
    Ok((Journal::start(Box::new(store), Some(cluster))?, leftovers))
}

/// The shutdown summary: one line of counts for the whole run.
fn log_summary(subscriptions: usize, core: &ServerCore, journal: &Journal) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = core.counters();
    let c = core.push_stats();
    tracing::info!(
        subscriptions,
        logins_ok = counters.logins_ok,
        logins_failed = counters.logins_failed + counters.logins_auth_failed,
        registrations_refused = counters.registrations_rejected,
        sessions_lost = counters.sessions_lost,
        pushes_delivered = c.delivered,
        pushes_failed = c.failed,
        pushes_gone = c.gone,
        pushes_undelivered = c.undelivered,
        journal_commits = journal.stats.commits.load(Relaxed),
        journal_commit_failures = journal.stats.commit_failures.load(Relaxed),
        "stopped: run summary"
    );
}

/// The engine's event in the core's words.
fn session_event(event: Event) -> SessionEvent<engine::SessionId> {
    match event {
        Event::Ready { id, ready } => SessionEvent::Ready { session: id, ready },
        Event::Failed { id, reason } => SessionEvent::Failed {
            session: id,
            reason,
        },
        Event::NewMail {
            id,
            mailbox,
            exists,
            preview,
            read_at,
        } => SessionEvent::NewMail {
            session: id,
            mailbox,
            exists,
            preview,
            read_at,
        },
        Event::SessionLost { id, reason } => SessionEvent::Lost {
            session: id,
            reason,
        },
    }
}

/// Creates the data dir owner-only (0700): it holds the VAPID private key and the journal
/// (endpoints and push keys). An existing dir with a wider mode is restricted too.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn httpd_limits(config: &Config) -> httpd::Limits {
    httpd::Limits {
        body_bytes_max: config.limits.body_bytes_max,
        headers_max: config.limits.headers_max,
        header_bytes_max: config.limits.header_bytes_max,
        connections_max: config.limits.api_connections_max,
        connections_per_client_max: config.limits.api_connections_per_client_max,
        ..httpd::Limits::default()
    }
}

/// Hands the soft RLIMIT_NOFILE out to the API, the pushes and the sessions.
fn descriptor_budget(
    config: &Config,
    sender: &push::SenderConfig,
    api: &httpd::Limits,
) -> Result<Budget, StartError> {
    let (nofile, _) = fd_budget::nofile_limit().map_err(StartError::Rlimit)?;
    let demand = Demand {
        api_connections: api.connections_max,
        // A socket per sender thread at work, plus the idle keep-alive pool.
        push_connections: config
            .sender_threads
            .saturating_add(sender.idle_connections_max),
        sessions_max: config.limits.sessions_max,
    };
    fd_budget::plan(nofile, demand).map_err(StartError::Descriptors)
}

fn engine_config(config: &Config) -> EngineConfig {
    let filter: Option<engine::ConnectFilter> = if config.allow_private_destinations {
        None
    } else {
        Some(Arc::new(is_public))
    };
    EngineConfig {
        reactor_threads: config.reactor_threads,
        session: config.session(),
        extra_ca_file: config.imap_extra_ca_file.clone(),
        sessions_max: config.limits.sessions_max,
        connect_filter: filter,
        bind_addresses: config.imap_bind_addresses.clone(),
        resolver: config.resolver(),
        ..EngineConfig::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a channel to `max` and shows that one more is refused at once, not waited for.
    fn holds_exactly<T>(tx: &Sender<T>, max: usize, item: impl Fn() -> T) {
        for i in 0..max {
            assert!(tx.try_send(item()).is_ok(), "item {i} of {max} refused");
        }
        assert!(matches!(tx.try_send(item()), Err(TrySendError::Full(_))));
    }

    #[test]
    fn the_request_queue_refuses_one_past_its_bound() {
        let (tx, _rx) = request_channel();
        let request = || ApiRequest {
            id: (),
            method: httpd::Method::Get,
            path: "/healthz".into(),
            client: std::net::Ipv4Addr::LOCALHOST.into(),
            authorization: None,
            routing_key: None,
            body: Zeroizing::new(Vec::new()),
        };
        holds_exactly(&tx, REQUESTS_QUEUE_MAX, request);
    }

    #[test]
    fn the_lookup_and_durable_queues_refuse_one_past_their_bounds() {
        let (tx, _rx) = lookup_channel();
        let lookup = || engine::Lookup {
            token: 0,
            result: Ok(Vec::new()),
        };
        holds_exactly(&tx, LOOKUPS_QUEUE_MAX, lookup);
        let (tx, _rx) = durable_channel();
        holds_exactly(&tx, DURABLE_QUEUE_MAX, || (0, true));
        let (tx, _rx) = cluster_channel();
        holds_exactly(&tx, CLUSTER_QUEUE_MAX, || ClusterEvent::Acked { ticket: 0 });
    }

    #[test]
    fn a_full_queue_is_a_503_with_retry_after() {
        let response = busy("the server is busy; try again").to_response();
        assert_eq!(response.status, 503);
        assert!(response
            .headers
            .iter()
            .any(|(n, v)| n == "retry-after" && v == "1"));
    }
}
