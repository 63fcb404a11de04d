//! The running server: the REST API on httpd, the IMAP engine, the push pool, and the core
//! thread that joins them.
//!
//! Threads: httpd's reactor calls [`State::handle`] (never blocks: `Engine::watch` only
//! queues); the core thread reads engine events and delivery reports, answers waiting
//! registrations, and feeds the push pool.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender};
use engine::{Engine, EngineConfig, Event, SessionId, WatchError, WatchOptions, WatchSpec};
use httpd::{Method, Request, Responder, Response};
use ring::rand::SecureRandom;

use crate::api::{parse_registration, ApiError, Registration};
use crate::config::Config;
use crate::delivery::{Delivery, DeliveryConfig, PushSubscription, Report};
use crate::destination::{is_public, normalize_host};
use crate::error_code::ErrorCode;
use crate::fd_budget::{self, Budget, Demand, TooFewDescriptors};
use crate::journal::{Journal, JournalError, Record, TargetRecord};
use crate::pacer::Pacer;
use crate::ratelimit::RateLimiter;
use crate::registry::{Registry, State as SubState, Subscription};
use crate::replacement::Promotion;
use crate::resolution::{Checks, Progress, Refusal, Target};

/// How often the core thread checks registration deadlines.
const CORE_TICK: Duration = Duration::from_millis(50);

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

/// Process-wide counters for /metrics.
#[derive(Debug, Default)]
struct Counters {
    logins_ok: AtomicU64,
    logins_auth_failed: AtomicU64,
    logins_failed: AtomicU64,
    registrations_rejected: AtomicU64,
    logins_paced: AtomicU64,
    host_cap_rejections: AtomicU64,
    sessions_lost: AtomicU64,
}

pub(crate) struct State {
    config: Config,
    /// How the descriptors are handed out; `sessions_capacity` caps registrations.
    budget: Budget,
    engine: Engine,
    delivery: Delivery,
    registry: Mutex<Registry>,
    limiter: Mutex<RateLimiter>,
    pacer: Mutex<Pacer>,
    /// Logins waiting for their turn, with the spec (and secret) they will use.
    paced: Mutex<Vec<PacedLogin>>,
    /// Registrations waiting for their host names to resolve, by resolution number.
    resolving: Mutex<HashMap<u64, Resolving>>,
    next_resolution: AtomicU64,
    /// Where the resolver answers; the core thread reads `lookups`.
    lookup_tx: Sender<engine::Lookup>,
    lookups: Receiver<engine::Lookup>,
    counters: Counters,
    vapid_public_key: String,
    responder: OnceLock<Responder>,
    rng: ring::rand::SystemRandom,
    journal: Journal,
    reports: Receiver<Report>,
}

/// A running server.
pub struct App {
    state: Option<Arc<State>>,
    httpd: Option<httpd::ServerHandle>,
    core: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl App {
    pub fn start(config: Config) -> Result<App, StartError> {
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
        let (report_tx, reports) = crossbeam_channel::unbounded();
        let delivery = Delivery::start(
            DeliveryConfig {
                threads: config.sender_threads,
                coalesce_window: Duration::from_millis(config.coalesce_window_ms),
                permits_per_origin: config.limits.push_permits_per_origin,
                ..DeliveryConfig::default()
            },
            Arc::new(sender),
            report_tx,
        );
        let (journal, leftovers) =
            Journal::open(&config.data_dir.join("journal.redb")).map_err(StartError::Journal)?;
        restart_pushes(&delivery, &journal, &leftovers);
        let engine = Engine::start(EngineConfig {
            sessions_max: budget.engine_sessions_max,
            ..engine_config(&config)
        })
        .map_err(StartError::Engine)?;
        let trusted_proxies = config.trusted_proxies().map_err(StartError::Config)?;
        let server = httpd::Server::bind(
            config.listen,
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
        // Unbounded: the resolver's own queue bounds the lookups out, and a resolver
        // thread must never wait for room to answer.
        let (lookup_tx, lookups) = crossbeam_channel::unbounded();
        let state = Arc::new(State {
            limiter: Mutex::new(RateLimiter::new(
                config.limits.registrations_per_minute_per_ip,
            )),
            pacer: Mutex::new(Pacer::new(
                config.limits.logins_per_second_per_host,
                Duration::from_secs(config.limits.login_queue_secs),
            )),
            paced: Mutex::new(Vec::new()),
            resolving: Mutex::new(HashMap::new()),
            next_resolution: AtomicU64::new(0),
            lookup_tx,
            lookups,
            config,
            budget,
            engine,
            delivery,
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
            vapid_public_key,
            responder: OnceLock::new(),
            rng: ring::rand::SystemRandom::new(),
            journal,
            reports,
        });
        let handler_state = state.clone();
        let httpd = server
            .spawn(move |request: Request, responder: &Responder| {
                handler_state.handle(request, responder)
            })
            .map_err(StartError::Httpd)?;
        let _ = state.responder.set(httpd.responder());
        let stop = Arc::new(AtomicBool::new(false));
        let core = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("core".into())
                .spawn(move || state.core_loop(&stop))
                .map_err(StartError::Thread)?
        };
        Ok(App {
            state: Some(state),
            httpd: Some(httpd),
            core: Some(core),
            stop,
            addr,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The descriptor budget the server runs with (see [`crate::fd_budget`]).
    pub fn budget(&self) -> Option<Budget> {
        self.state.as_ref().map(|s| s.budget)
    }

    /// Stops accepting requests, logs every IMAP session out, sends each subscription its
    /// reconnect push (`shutdown`), and flushes the push queue within a bounded time.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(httpd) = self.httpd.take() {
            // An error here means the httpd thread panicked; shutdown goes on regardless.
            let _ = httpd.shutdown();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(core) = self.core.take() {
            let _ = core.join();
        }
        let Some(state) = self.state.take() else {
            return;
        };
        // Every session still registered ends with `shutdown`; tell its app.
        let subscriptions: Vec<Subscription> = {
            let mut registry = state.registry();
            let ids = registry.ids();
            ids.iter().filter_map(|id| registry.remove(id)).collect()
        };
        // Those still waiting for their session never got a 201 and are not journalled.
        for sub in subscriptions.iter().filter(|s| s.waiting.is_none()) {
            state.delivery.reconnect(&sub.push, "shutdown");
        }
        // httpd and the core thread, the other owners, have stopped.
        let Some(state) = Arc::into_inner(state) else {
            return;
        };
        let _ = state.engine.shutdown();
        let grace = Duration::from_secs(state.config.shutdown_grace_secs);
        let State {
            delivery,
            journal,
            reports,
            ..
        } = state;
        let _ = delivery.shutdown(grace);
        // Delivered reconnect pushes leave the journal; undelivered ones stay and get
        // `server_restart` on the next start, so nobody is dropped silently.
        for report in reports.try_iter() {
            if let Some(id) = settled_reconnect(&report) {
                journal.remove(id);
            }
        }
        journal.flush();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.core.is_some() {
            self.stop_all();
        }
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

impl State {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock must not take the whole server down with it.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn respond(&self, request: httpd::RequestId, response: Response) {
        if let Some(responder) = self.responder.get() {
            responder.respond(request, response);
        }
    }

    // ---- the httpd side ----

    fn handle(&self, mut request: Request, responder: &Responder) {
        let id = request.id;
        match self.route(&mut request) {
            Ok(Some(response)) => responder.respond(id, response),
            Ok(None) => {} // answered later by the core thread
            Err(e) => responder.respond(id, e.to_response()),
        }
    }

    fn route(&self, request: &mut Request) -> Result<Option<Response>, ApiError> {
        let path = request.path.clone();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        if segments == ["healthz"] {
            return Ok(Some(Response::json(200, r#"{"status":"ok"}"#)));
        }
        self.authorize(request)?;
        match (request.method, segments.as_slice()) {
            (Method::Get, ["metrics"]) => Ok(Some(
                Response::text(200, self.metrics())
                    .with_header("content-type", "text/plain; version=0.0.4"),
            )),
            (Method::Get, ["v1", "vapid-public-key"]) => Ok(Some(Response::json(
                200,
                serde_json::json!({"public_key": self.vapid_public_key}).to_string(),
            ))),
            (Method::Get, ["v1", "openapi.json"]) => Ok(Some(Response::json(
                200,
                include_str!("../../docs/openapi.json"),
            ))),
            (Method::Post, ["v1", "subscriptions"]) => self.register(request).map(|()| None),
            (Method::Get, ["v1", "subscriptions", id]) => self.describe(id).map(Some),
            (Method::Delete, ["v1", "subscriptions", id]) => self.delete(id).map(Some),
            (_, ["healthz" | "metrics"] | ["v1", "vapid-public-key" | "subscriptions"])
            | (_, ["v1", "subscriptions", _]) => Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed",
            )),
            _ => Err(ApiError::new(ErrorCode::NotFound, "no such resource")),
        }
    }

    fn authorize(&self, request: &Request) -> Result<(), ApiError> {
        let Some(token) = &self.config.api_token else {
            return Ok(());
        };
        let given = request
            .header("authorization")
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

    fn register(&self, request: &mut Request) -> Result<(), ApiError> {
        let result = self.try_register(request);
        if result.is_err() {
            self.counters
                .registrations_rejected
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn try_register(&self, request: &mut Request) -> Result<(), ApiError> {
        self.check_rate(request.client)?;
        let registration = parse_registration(&mut request.body, &self.config)?;
        // What the caps refuse is refused now; they are checked again before the login.
        self.admit(
            &self.registry(),
            &registration.dedup_key(),
            &registration.account_key(),
            &registration.host,
        )?;
        let lookups = self.lookups_for(&registration);
        if lookups.is_empty() {
            return self.start_login(request.id, registration);
        }
        self.resolve(request.id, registration, &lookups)
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

    /// Starts the lookups of a registration; the core thread carries on with the answers
    /// (`on_lookup`). Never blocks: a full resolver queue is `503 resolver_busy` now.
    fn resolve(
        &self,
        request: httpd::RequestId,
        registration: Registration,
        lookups: &[(Target, String, u16)],
    ) -> Result<(), ApiError> {
        let targets: Vec<Target> = lookups.iter().map(|(t, _, _)| *t).collect();
        let n = self.next_resolution.fetch_add(1, Ordering::Relaxed);
        {
            let mut resolving = self.resolving();
            if resolving.len() >= self.config.limits.pending_registrations_max {
                return Err(ApiError::rate_limited(
                    5,
                    "too many registrations in progress",
                ));
            }
            let checks = Checks::new(&targets);
            resolving.insert(
                n,
                Resolving {
                    request,
                    registration,
                    checks,
                },
            );
        }
        for (target, host, port) in lookups {
            let token = n << TARGET_BITS | target.index();
            let sent = self
                .engine
                .resolver()
                .lookup(host, *port, token, &self.lookup_tx);
            if let Err(e) = sent {
                // Answers to the lookups already started find no entry and are dropped.
                self.resolving().remove(&n);
                return Err(unresolved(*target, Some(e)));
            }
        }
        Ok(())
    }

    /// A registration whose destinations passed: admitted by the caps, paced, and its
    /// login started. Its answer comes when the session is ready or fails.
    fn start_login(
        &self,
        request: httpd::RequestId,
        registration: Registration,
    ) -> Result<(), ApiError> {
        let key = registration.dedup_key();
        let account = registration.account_key();
        let host = registration.host.clone();
        let id = self.new_id()?;
        let now_unix = unix_now();
        let push = PushSubscription::new_tagged(
            id.clone(),
            registration.new_mail.clone(),
            registration.reconnect.clone(),
            registration.tag.clone(),
            now_unix,
        );
        let mut registry = self.registry();
        // A registration of a key that is live already does not end the live one here: it
        // logs in beside it and replaces it only once ready (see `crate::replacement`).
        self.admit(&registry, &key, &account, &host)?;
        let wait = self.pace(&host)?;
        let (mailboxes, since) = (registration.mailboxes.clone(), registration.since);
        let (spec, options) = watch_spec(registration);
        let session = if wait.is_zero() {
            Some(self.engine.watch_with(spec, options).map_err(watch_error)?)
        } else {
            self.counters.logins_paced.fetch_add(1, Ordering::Relaxed);
            self.paced().push(PacedLogin {
                due: Instant::now() + wait,
                subscription: id.clone(),
                spec,
                options,
            });
            None
        };
        let deadline =
            Instant::now() + wait + Duration::from_secs(self.config.register_timeout_secs);
        registry.insert(Subscription {
            id,
            host,
            session,
            key,
            account,
            push,
            mailboxes,
            since,
            state: SubState::Pending,
            idle: false,
            notify: false,
            created_unix: now_unix,
            last_new_mail: None,
            pushes_sent: 0,
            pushes_failed: 0,
            waiting: Some((request, deadline)),
        });
        Ok(())
    }

    fn resolving(&self) -> MutexGuard<'_, HashMap<u64, Resolving>> {
        self.resolving.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One lookup answered: the registration waits for the others, is refused, or starts
    /// its login.
    fn on_lookup(&self, lookup: engine::Lookup) {
        let n = lookup.token >> TARGET_BITS;
        let Some(target) = Target::from_index(lookup.token & TARGET_MASK) else {
            return;
        };
        let allowed = |ip| self.config.allow_private_destinations || is_public(ip);
        let done = {
            let mut resolving = self.resolving();
            let Some(entry) = resolving.get_mut(&n) else {
                return; // refused already; this answer is of no use.
            };
            let result = lookup.result.as_deref().map_err(|e| *e);
            match entry.checks.answer(target, result, allowed) {
                Progress::Waiting => return,
                Progress::Passed => resolving.remove(&n).map(|e| (e, None)),
                Progress::Refused(r) => resolving.remove(&n).map(|e| (e, Some(r))),
            }
        };
        let Some((entry, refusal)) = done else {
            return;
        };
        let result = match refusal {
            None => self.start_login(entry.request, entry.registration),
            Some(refusal) => Err(refusal_error(refusal)),
        };
        if let Err(e) = result {
            self.counters
                .registrations_rejected
                .fetch_add(1, Ordering::Relaxed);
            self.respond(entry.request, e.to_response());
        }
    }

    /// The caps a registration must pass before any login: sessions in all, devices per
    /// account, sessions per IMAP host, registrations in progress. A re-registration of a
    /// key the registry holds replaces rather than adds, so only the last cap applies to it.
    fn admit(
        &self,
        registry: &Registry,
        key: &[u8; 32],
        account: &[u8; 32],
        host: &str,
    ) -> Result<(), ApiError> {
        let limits = &self.config.limits;
        if registry.pending() >= limits.pending_registrations_max {
            return Err(ApiError::rate_limited(
                5,
                "too many registrations in progress",
            ));
        }
        if registry.holds_key(key) {
            return Ok(());
        }
        if registry.keys() >= self.budget.sessions_capacity {
            return Err(ApiError::new(ErrorCode::AtCapacity, "this server is full"));
        }
        if !registry.account_admits(account, key, limits.sessions_per_account_max) {
            return Err(ApiError::new(
                ErrorCode::TooManySessions,
                "this account has as many sessions as it may",
            ));
        }
        if registry.host_count(host) >= limits.sessions_per_host_max {
            self.counters
                .host_cap_rejections
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                ErrorCode::AtCapacity,
                "this server holds as many sessions to that IMAP host as it may",
            ));
        }
        Ok(())
    }

    /// Takes a login turn for `host`, or says when to come back.
    fn pace(&self, host: &str) -> Result<Duration, ApiError> {
        let mut pacer = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
        pacer.reserve(host, Instant::now()).map_err(|retry| {
            ApiError::rate_limited(
                retry.as_secs() + 1,
                "too many logins to this IMAP host right now",
            )
        })
    }

    fn paced(&self) -> MutexGuard<'_, Vec<PacedLogin>> {
        self.paced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the paced logins whose turn has come, unless deleted or replaced meanwhile.
    fn start_paced_logins(&self, now: Instant) {
        let due: Vec<PacedLogin> = {
            let mut paced = self.paced();
            if !paced.iter().any(|p| p.due <= now) {
                return;
            }
            let (due, later) = std::mem::take(&mut *paced)
                .into_iter()
                .partition(|p| p.due <= now);
            *paced = later;
            due
        };
        for login in due {
            let mut registry = self.registry();
            let waiting = registry
                .by_id_mut(&login.subscription)
                .is_some_and(|sub| sub.session.is_none());
            if !waiting {
                continue; // `login.spec` and its secret are dropped (zeroized) here.
            }
            match self.engine.watch_with(login.spec, login.options) {
                Ok(session) => registry.set_session(&login.subscription, session),
                Err(e) => {
                    let sub = registry.remove(&login.subscription);
                    if let Some((waiting, _)) = sub.and_then(|s| s.waiting) {
                        self.respond(waiting, watch_error(e).to_response());
                    }
                }
            }
        }
    }

    fn unwatch(&self, sub: &Subscription) {
        if let Some(session) = sub.session {
            self.engine.unwatch(session);
        }
    }

    fn check_rate(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        limiter
            .check(ip, Instant::now())
            .map_err(|wait| ApiError::rate_limited(wait.as_secs() + 1, "too many registrations"))
    }

    fn new_id(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "no randomness"))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn describe(&self, id: &str) -> Result<Response, ApiError> {
        let registry = self.registry();
        let sub = registry.get(id).ok_or_else(not_found)?;
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

    fn delete(&self, id: &str) -> Result<Response, ApiError> {
        let sub = self.registry().remove(id).ok_or_else(not_found)?;
        self.journal.remove(&sub.id);
        self.unwatch(&sub);
        self.delivery.forget(&sub.id);
        if let Some((waiting, _)) = sub.waiting {
            let e = ApiError::new(ErrorCode::Deleted, "deleted before it was ready");
            self.respond(waiting, e.to_response());
        }
        Ok(Response::empty(204))
    }

    // ---- the core thread ----

    fn core_loop(&self, stop: &AtomicBool) {
        let events = self.engine.events().clone();
        let reports = self.reports.clone();
        let lookups = self.lookups.clone();
        while !stop.load(Ordering::Relaxed) {
            select! {
                recv(events) -> event => if let Ok(event) = event { self.on_event(event) },
                recv(reports) -> report => if let Ok(report) = report { self.on_report(report) },
                recv(lookups) -> lookup => if let Ok(lookup) = lookup { self.on_lookup(lookup) },
                default(CORE_TICK) => {}
            }
            self.start_paced_logins(Instant::now());
            self.expire_registrations(Instant::now());
        }
    }

    fn on_event(&self, event: Event) {
        match event {
            Event::Ready { id, ready } => self.on_ready(id, ready),
            Event::Failed { id, reason } => {
                let counter = match reason {
                    engine::EndReason::AuthRejected | engine::EndReason::AuthUnavailable => {
                        &self.counters.logins_auth_failed
                    }
                    _ => &self.counters.logins_failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let sub = self.registry().remove_by_session(id);
                if let Some((waiting, _)) = sub.and_then(|s| s.waiting) {
                    self.respond(waiting, ApiError::from_end_reason(reason).to_response());
                }
            }
            Event::NewMail {
                id,
                mailbox,
                exists,
                preview,
            } => {
                let at = Instant::now();
                let target = {
                    let mut registry = self.registry();
                    registry.by_session_mut(id).map(|sub| {
                        sub.last_new_mail = Some((unix_now(), exists));
                        let name = sub.mailboxes.get(mailbox).cloned().unwrap_or_default();
                        (sub.push.clone(), name)
                    })
                };
                if let Some((push, name)) = target {
                    self.delivery
                        .new_mail_with_preview(&push, &name, exists, preview, at);
                }
            }
            Event::SessionLost { id, reason } => {
                self.counters.sessions_lost.fetch_add(1, Ordering::Relaxed);
                // Deleted and replaced subscriptions are gone from the registry already:
                // they get no reconnect push.
                let sub = self.registry().remove_by_session(id);
                if let Some(sub) = sub {
                    self.delivery.reconnect(&sub.push, reason.code());
                }
            }
        }
    }

    /// A session is ready: its subscription takes its key over (ending the one it
    /// replaces) or gives way to a newer one; then its registration gets its 201 once the
    /// record is durable.
    fn on_ready(&self, session: SessionId, ready: engine::Ready) {
        self.counters.logins_ok.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.registry();
        let Some(id) = registry.by_session_mut(session).map(|s| s.id.clone()) else {
            return;
        };
        match registry.promote(&id) {
            Promotion::Promoted { replaced } => {
                // The replaced app registered again: it gets no reconnect push (its
                // SessionLost finds nothing in the registry).
                if let Some(old) = replaced.and_then(|old| registry.remove(&old)) {
                    self.journal.remove(&old.id);
                    self.unwatch(&old);
                    self.delivery.forget(&old.id);
                }
            }
            // `Unknown` would be a registry out of step with its key table: ending the
            // session is the safe way out, since only one session per key may stay.
            Promotion::Superseded | Promotion::Unknown => {
                if let Some(sub) = registry.remove(&id) {
                    self.unwatch(&sub);
                    if let Some((waiting, _)) = sub.waiting {
                        let e =
                            ApiError::new(ErrorCode::Replaced, "replaced by a newer registration");
                        self.respond(waiting, e.to_response());
                    }
                }
                return;
            }
        }
        let waiting = registry.take_waiting(session);
        let Some(sub) = registry.by_id_mut(&id) else {
            return;
        };
        sub.state = if ready.idle {
            SubState::Idle
        } else {
            SubState::Polling
        };
        sub.idle = ready.idle;
        sub.notify = ready.notify;
        if let Some(waiting) = waiting {
            self.answer_created(sub, &ready, waiting);
        }
    }

    /// Journals `sub` and answers its registration 201 once the record is durable: a crash
    /// after a 201 must still reach this app with a restart push.
    fn answer_created(&self, sub: &Subscription, ready: &engine::Ready, waiting: httpd::RequestId) {
        let body = serde_json::json!({
            "id": sub.id,
            "state": sub.state.as_str(),
            "capabilities": {"idle": ready.idle, "notify": ready.notify},
            "mailboxes": sub.mailboxes,
        });
        let location = format!("/v1/subscriptions/{}", sub.id);
        let created = Response::json(201, body.to_string()).with_header("location", location);
        let responder = self.responder.get().cloned();
        self.journal.insert(
            &record_of(sub),
            Box::new(move |durable| {
                let response = if durable {
                    created
                } else {
                    ApiError::new(ErrorCode::Internal, "the journal write failed").to_response()
                };
                if let Some(responder) = responder {
                    responder.respond(waiting, response);
                }
            }),
        );
    }

    fn on_report(&self, report: Report) {
        if let Some(id) = settled_reconnect(&report) {
            self.journal.remove(id);
        }
        match report {
            Report::Gone { subscription } => {
                self.journal.remove(&subscription);
                let sub = self.registry().remove(&subscription);
                if let Some(sub) = sub {
                    self.unwatch(&sub);
                }
            }
            Report::Delivered { subscription, .. } => {
                if let Some(sub) = self.registry().by_id_mut(&subscription) {
                    sub.pushes_sent += 1;
                }
            }
            Report::Failed { subscription, .. } => {
                if let Some(sub) = self.registry().by_id_mut(&subscription) {
                    sub.pushes_failed += 1;
                }
            }
        }
    }

    fn expire_registrations(&self, now: Instant) {
        let mut registry = self.registry();
        for id in registry.overdue(now) {
            if let Some(sub) = registry.remove(&id) {
                self.unwatch(&sub);
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

    fn metrics(&self) -> String {
        use std::fmt::Write;
        let (pending, idle, polling) = {
            let r = self.registry();
            (
                r.count(SubState::Pending),
                r.count(SubState::Idle),
                r.count(SubState::Polling),
            )
        };
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let engine = self.engine.stats();
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE imap_push_sessions gauge");
        for (state, n) in [("pending", pending), ("idle", idle), ("polling", polling)] {
            let _ = writeln!(out, "imap_push_sessions{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(out, "# TYPE imap_push_logins_total counter");
        for (outcome, n) in [
            ("ok", load(&c.logins_ok)),
            ("auth_failed", load(&c.logins_auth_failed)),
            ("failed", load(&c.logins_failed)),
        ] {
            let _ = writeln!(out, "imap_push_logins_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(out, "# TYPE imap_push_registrations_rejected_total counter");
        let _ = writeln!(
            out,
            "imap_push_registrations_rejected_total {}",
            load(&c.registrations_rejected)
        );
        let _ = writeln!(out, "# TYPE imap_push_host_cap_rejections_total counter");
        let _ = writeln!(
            out,
            "imap_push_host_cap_rejections_total {}",
            load(&c.host_cap_rejections)
        );
        let _ = writeln!(out, "# TYPE imap_push_logins_paced_total counter");
        let _ = writeln!(
            out,
            "imap_push_logins_paced_total {}",
            load(&c.logins_paced)
        );
        let _ = writeln!(out, "# TYPE imap_push_sessions_lost_total counter");
        let _ = writeln!(
            out,
            "imap_push_sessions_lost_total {}",
            load(&c.sessions_lost)
        );
        let _ = writeln!(out, "# TYPE imap_push_descriptors_limit gauge");
        let _ = writeln!(out, "imap_push_descriptors_limit {}", self.budget.nofile);
        let _ = writeln!(out, "# TYPE imap_push_sessions_capacity gauge");
        let _ = writeln!(
            out,
            "imap_push_sessions_capacity {}",
            self.budget.sessions_capacity
        );
        let _ = writeln!(out, "# TYPE imap_push_reactor_loop_turns_total counter");
        let _ = writeln!(
            out,
            "imap_push_reactor_loop_turns_total {}",
            engine.loop_turns
        );
        let _ = writeln!(out, "# TYPE imap_push_reactor_stale_events_total counter");
        let _ = writeln!(
            out,
            "imap_push_reactor_stale_events_total {}",
            engine.stale_events
        );
        out.push_str(&self.delivery.stats().prometheus());
        out
    }
}

/// The subscription whose reconnect push has been settled (delivered or given up): it
/// may leave the journal.
fn settled_reconnect(report: &Report) -> Option<&str> {
    match report {
        Report::Delivered {
            subscription,
            kind: push::Kind::Reconnect,
        }
        | Report::Failed {
            subscription,
            kind: push::Kind::Reconnect,
        } => Some(subscription),
        _ => None,
    }
}

fn record_of(sub: &Subscription) -> Record {
    Record {
        id: sub.id.clone(),
        key_hash: sub.key.iter().map(|b| format!("{b:02x}")).collect(),
        new_mail: TargetRecord::from_target(&sub.push.new_mail),
        reconnect: TargetRecord::from_target(&sub.push.reconnect),
        created_unix: sub.created_unix,
        tag: sub.push.tag.clone(),
    }
}

/// Every subscription the previous run left gets its reconnect push (`server_restart`);
/// it leaves the journal once that push is settled.
fn restart_pushes(delivery: &Delivery, journal: &Journal, leftovers: &[Record]) {
    let now = unix_now();
    for record in leftovers {
        match (record.new_mail.to_target(), record.reconnect.to_target()) {
            (Ok(new_mail), Ok(reconnect)) => {
                let sub = PushSubscription::new_tagged(
                    record.id.clone(),
                    new_mail,
                    reconnect,
                    record.tag.clone(),
                    now,
                );
                delivery.reconnect(&sub, "server_restart");
            }
            // A record we cannot use can never be pushed: drop it rather than retry forever.
            _ => journal.remove(&record.id),
        }
    }
}

/// What the engine needs of a registration; the secret moves into the spec.
fn watch_spec(registration: Registration) -> (WatchSpec, WatchOptions) {
    let spec = WatchSpec {
        host: registration.host,
        port: registration.port,
        security: registration.security,
        username: registration.username,
        secret: registration.secret,
        mailboxes: registration.mailboxes,
        since: registration.since,
    };
    let options = WatchOptions {
        filter: registration.filter,
        preview: registration.preview,
    };
    (spec, options)
}

/// Bits of a lookup token that name the [`Target`]; the rest is the resolution number.
const TARGET_BITS: u32 = 2;
const TARGET_MASK: u64 = (1 << TARGET_BITS) - 1;

/// A registration waiting for its lookups. Its secret is zeroized when it is dropped,
/// whichever way it ends.
struct Resolving {
    request: httpd::RequestId,
    registration: Registration,
    checks: Checks,
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

/// A login waiting for its turn at its IMAP host.
struct PacedLogin {
    due: Instant,
    subscription: String,
    spec: WatchSpec,
    options: WatchOptions,
}

fn watch_error(e: WatchError) -> ApiError {
    match e {
        WatchError::AtCapacity => ApiError::new(ErrorCode::AtCapacity, "this server is full"),
        WatchError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, "shutting down"),
        WatchError::Spec(e) => ApiError::bad_request("imap", e.to_string()),
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such subscription")
}
