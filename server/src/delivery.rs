//! Push delivery: a pool of sender threads that turns engine events into
//! pushes.
//!
//! Read first: RFC 8030 §5.4 (topics), §8.4 (`404`/`410`, `413`, `429`);
//! the `push` crate docs ([`push::Sender`], [`push::Outcome`],
//! [`push::Backoff`]).
//!
//! # What this module never does
//!
//! - **No async runtime.** std threads and crossbeam channels only.
//! - **No silent drops.** Every accepted job ends as exactly one of:
//!   delivered, gone, failed, coalesced (merged into a newer new-mail push),
//!   dropped (new mail made stale by a reconnect, `forget` or `Gone`), or
//!   undelivered (still queued or in flight when shutdown's grace ran out).
//!   Each end has a counter in [`DeliveryStats`]. When the queue is full,
//!   callers block; nothing is discarded.
//! - **No logging.** Endpoint URLs are capabilities and keys are secrets;
//!   nothing here prints. `Debug` of [`PushSubscription`] is redacted.
//! - **No redirects followed** ([`push::Sender`] never follows them).
//!
//! # Threads
//!
//! 1. Callers (the engine-event thread) call [`Delivery::new_mail`],
//!    [`Delivery::reconnect`] and [`Delivery::forget`]. The first two take a
//!    queue permit first and block while `queue_max` jobs are outstanding.
//! 2. One scheduler thread owns all state: a slot per subscription (the
//!    coalescing state), per-endpoint `Retry-After` holds, the ready queues
//!    (per origin, under a per-origin cap, reconnect before new mail; see
//!    [`origins`]) and a timer heap. It hands a job to a worker only when a
//!    worker is idle, so priority holds up to the wire.
//! 3. `threads` workers call [`push::Sender::send`] and hand the outcome
//!    back to the scheduler, which decides: done, retry later, shrink, or
//!    give up.
//!
//! # Rules
//!
//! | Outcome                  | Action                                                  |
//! |--------------------------|---------------------------------------------------------|
//! | 2xx                      | done, [`Report::Delivered`]                             |
//! | 404, 410                 | [`Report::Gone`]; pending new mail for it is dropped    |
//! | 413 (or payload too big) | once more with [`minimal_payload`], then failed         |
//! | 429                      | hold that endpoint for `Retry-After`; retry             |
//! | 5xx, network error       | retry with [`push::Backoff`] within the retry budget    |
//! | 3xx                      | failed (counted as `redirect` too), never followed      |
//! | other 4xx, unsendable    | failed                                                  |
//!
//! New mail for one subscription coalesces: the first push goes at once;
//! events within `coalesce_window` after a delivered push merge into one
//! pending push (newest `mailbox` and `exists`, and the newest messages of the
//! merged previews of that mailbox) sent when the window ends. A
//! subscription has at most one new-mail push in flight and one pending.
//! Reconnect pushes are never merged or dropped, and they drop the
//! subscription's pending new mail (the IMAP session it described is gone).
//!
//! # Isolation
//!
//! One slow or hostile push service must not delay another's pushes. No origin
//! (scheme, host, port of the endpoint) has more than
//! [`DeliveryConfig::permits_per_origin`] requests in flight, and never every
//! worker: the jobs past its cap wait in its queue without a worker, and the
//! origins take turns. With the push crate's short connect and response
//! timeouts, a tarpit holds its few workers for seconds at most per attempt,
//! while the other workers serve everyone else at once. A 429 holds only the
//! endpoint that answered it (the UnifiedPush server rules treat 429 per
//! endpoint): one endpoint cannot pause every user of a shared push service.

mod origins;

use crossbeam_channel::{never, select, Receiver, Sender};
use engine::Preview;
use hdrhistogram::Histogram;
use push::message::{self, About, Tag};
use push::{Backoff, Kind, Notification, Outcome, Protocol, PushTarget, Topic};
use ring::rand::{SecureRandom as _, SystemRandom};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use origins::{Class, OriginQueues};

/// [`DeliveryConfig::permits_per_origin`] by default: half of the default 8 workers.
pub const PERMITS_PER_ORIGIN_DEFAULT: usize = 4;

/// Pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Sender threads; each holds at most one request open. At least 1.
    pub threads: usize,
    /// After a delivered new-mail push, further new mail for the same
    /// subscription waits this long and goes as one push.
    pub coalesce_window: Duration,
    /// Jobs accepted and not yet finished (queued, waiting to retry, or in
    /// flight). At this many, [`Delivery::new_mail`] and
    /// [`Delivery::reconnect`] block. At least 1.
    pub queue_max: usize,
    pub backoff: Backoff,
    /// No retry starts later than this after a job's first attempt. The
    /// effective budget is the smaller of this and `backoff.give_up_after`.
    pub retry_budget: Duration,
    /// Requests in flight to one origin at most. The cap in force is the smaller of
    /// this and `threads - 1` (at least 1), so that with two workers or more one
    /// origin never holds them all.
    pub permits_per_origin: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            threads: 8,
            coalesce_window: Duration::from_secs(1),
            queue_max: 100_000,
            backoff: Backoff::default(),
            retry_budget: Duration::from_secs(600),
            permits_per_origin: PERMITS_PER_ORIGIN_DEFAULT,
        }
    }
}

/// A subscription's push side, shared between the registry and the pool.
pub struct PushSubscription {
    /// The public subscription id: a capability (GET and DELETE need nothing else), so
    /// it goes only into payloads encrypted to the device ([`About::new`]).
    pub id: String,
    pub new_mail: PushTarget,
    pub reconnect: PushTarget,
    /// The app's own label, carried back in every payload.
    pub tag: Option<Tag>,
    topic: Topic,
    /// The last SimplePush version handed out.
    simple_push_version: AtomicU64,
}

impl PushSubscription {
    /// `now_unix` seeds the SimplePush version, so a server restarted later
    /// (which builds the subscription again) still sends higher versions.
    pub fn new(
        id: String,
        new_mail: PushTarget,
        reconnect: PushTarget,
        now_unix: u64,
    ) -> Arc<Self> {
        Self::new_tagged(id, new_mail, reconnect, None, now_unix)
    }

    /// [`PushSubscription::new`] with the app's `tag`.
    pub fn new_tagged(
        id: String,
        new_mail: PushTarget,
        reconnect: PushTarget,
        tag: Option<Tag>,
        now_unix: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            topic: Topic::for_subscription(&id),
            id,
            new_mail,
            reconnect,
            tag,
            simple_push_version: AtomicU64::new(now_unix),
        })
    }

    /// The RFC 8030 topic of this subscription's new-mail pushes.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next SimplePush version: `max(previous + 1, now_unix)`. Strictly
    /// increasing; following the clock as well keeps versions increasing
    /// across a restart as long as fewer than one push a second was sent
    /// on average.
    pub fn next_simple_push_version(&self, now_unix: u64) -> u64 {
        let next = |v: u64| v.saturating_add(1).max(now_unix);
        let previous = self
            .simple_push_version
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(next(v)))
            .unwrap_or_else(|v| v);
        next(previous)
    }

    fn target(&self, kind: Kind) -> &PushTarget {
        match kind {
            Kind::NewMail => &self.new_mail,
            Kind::Reconnect => &self.reconnect,
        }
    }
}

impl fmt::Debug for PushSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSubscription")
            .field("id", &self.id)
            .field("new_mail", &self.new_mail)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

/// What became of a push job, for the registry. Sent once per finished job
/// (coalesced, dropped and undelivered jobs send nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The push service answered 404 or 410: the subscription no longer
    /// exists. The server should close the IMAP session and forget it.
    Gone {
        subscription: String,
    },
    Delivered {
        subscription: String,
        kind: Kind,
    },
    /// Given up: rejected, redirected, still too large, unsendable, or the
    /// retry budget ran out.
    Failed {
        subscription: String,
        kind: Kind,
    },
}

/// Event-to-push latency quantiles, microseconds, for delivered new-mail
/// pushes. A coalesced push counts from its oldest event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// A snapshot of the pool's counters.
///
/// Per attempt: `delivered`, `gone`, `too_large`, `rate_limited`, `retried`
/// (5xx or network error, tried again) and `redirect`. Per job that ended
/// without delivery: `failed`, `coalesced`, `dropped`, `undelivered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub gone: u64,
    pub too_large: u64,
    pub rate_limited: u64,
    pub retried: u64,
    pub redirect: u64,
    pub failed: u64,
    /// New-mail jobs merged into a newer pending push.
    pub coalesced: u64,
    /// Pending new mail dropped by a reconnect, `forget` or `Gone`.
    pub dropped: u64,
    /// Jobs still queued or in flight when shutdown's grace ran out, or
    /// offered after the pool stopped.
    pub undelivered: u64,
    /// Calls that blocked because `queue_max` jobs were outstanding.
    pub backpressure_waits: u64,
    /// Jobs accepted and not yet finished (gauge).
    pub queue_depth: u64,
    pub latency: LatencySummary,
}

impl DeliveryStats {
    /// [`DeliveryStats::render_prometheus`] into a new string.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        self.render_prometheus(&mut out);
        out
    }

    /// Appends the Prometheus text exposition (format 0.0.4). Counters are
    /// `imap_push_delivery_*_total`; the latency is a *summary* (quantiles
    /// 0.5, 0.9, 0.99, 0.999 plus `_sum` and `_count`, in seconds) because
    /// the HDR histogram already holds exact quantiles and buckets would
    /// have to be chosen up front.
    pub fn render_prometheus(&self, out: &mut String) {
        let outcomes = [
            ("delivered", self.delivered),
            ("gone", self.gone),
            ("too_large", self.too_large),
            ("rate_limited", self.rate_limited),
            ("retried", self.retried),
            ("redirect", self.redirect),
        ];
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_attempts_total Push requests by outcome.\n\
             # TYPE imap_push_delivery_attempts_total counter"
        );
        for (outcome, value) in outcomes {
            let _ = writeln!(
                out,
                "imap_push_delivery_attempts_total{{outcome=\"{outcome}\"}} {value}"
            );
        }
        let ends = [
            ("failed", self.failed),
            ("coalesced", self.coalesced),
            ("dropped", self.dropped),
            ("undelivered", self.undelivered),
        ];
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_jobs_unsent_total Jobs that ended without their own delivery.\n\
             # TYPE imap_push_delivery_jobs_unsent_total counter"
        );
        for (end, value) in ends {
            let _ = writeln!(
                out,
                "imap_push_delivery_jobs_unsent_total{{end=\"{end}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP imap_push_delivery_backpressure_waits_total Calls that blocked on a full queue.\n\
             # TYPE imap_push_delivery_backpressure_waits_total counter\n\
             imap_push_delivery_backpressure_waits_total {}\n\
             # HELP imap_push_delivery_queue_depth Jobs accepted and not yet finished.\n\
             # TYPE imap_push_delivery_queue_depth gauge\n\
             imap_push_delivery_queue_depth {}",
            self.backpressure_waits, self.queue_depth
        );
        self.render_latency(out);
    }

    fn render_latency(&self, out: &mut String) {
        const NAME: &str = "imap_push_delivery_latency_seconds";
        let l = &self.latency;
        let _ = writeln!(
            out,
            "# HELP {NAME} Engine event to 2xx from the push service, new mail only.\n\
             # TYPE {NAME} summary"
        );
        for (q, us) in [
            ("0.5", l.p50_us),
            ("0.9", l.p90_us),
            ("0.99", l.p99_us),
            ("0.999", l.p999_us),
        ] {
            let _ = writeln!(out, "{NAME}{{quantile=\"{q}\"}} {}", seconds(us));
        }
        let _ = writeln!(out, "{NAME}_sum {}", seconds(l.sum_us));
        let _ = writeln!(out, "{NAME}_count {}", l.count);
    }
}

fn seconds(us: u64) -> f64 {
    // Exact for any latency below 2^53 µs (285 years).
    us as f64 / 1e6
}

/// The smallest useful payload of a kind, sent once after a 413:
/// `{"type":"new_mail","subscription":ID,"tag":TAG}` or the same with `reconnect`,
/// `subscription` and `tag` present as `about` says. The app learns what happened and
/// for which account, and fetches the rest.
pub fn minimal_payload(kind: Kind, about: About<'_>) -> String {
    #[derive(serde::Serialize)]
    struct Minimal<'a> {
        r#type: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscription: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tag: Option<&'a str>,
    }
    let r#type = match kind {
        Kind::NewMail => message::TYPE_NEW_MAIL,
        Kind::Reconnect => message::TYPE_RECONNECT,
    };
    // Serializing two strings into a String has no failure path.
    let (subscription, tag) = about.parts();
    serde_json::to_string(&Minimal {
        r#type,
        subscription,
        tag,
    })
    .unwrap_or_default()
}

/// The push pool. See the module docs.
///
/// `Send + Sync`: share it by reference or `Arc`. Dropping it is
/// [`Delivery::shutdown`] with no grace.
pub struct Delivery {
    commands: Sender<Command>,
    permits: Arc<Permits>,
    metrics: Arc<Metrics>,
    scheduler: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("workers", &self.workers.len())
            .field("queue_depth", &self.permits.used())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Starts the scheduler and `config.threads` workers.
    ///
    /// `reports` MUST be drained by a thread that never calls
    /// [`Delivery::new_mail`] or [`Delivery::reconnect`], or be unbounded:
    /// the scheduler blocks on a full report channel, and a caller blocked
    /// on a full queue would then wait forever.
    ///
    /// # Panics
    ///
    /// If the OS refuses to start a thread.
    pub fn start(
        config: DeliveryConfig,
        sender: Arc<push::Sender>,
        reports: Sender<Report>,
    ) -> Delivery {
        let threads = config.threads.max(1);
        let permits = Arc::new(Permits::new(config.queue_max.max(1)));
        let metrics = Arc::new(Metrics::new());
        let (command_tx, command_rx) = crossbeam_channel::unbounded();
        // Never more jobs in this channel than idle workers, so it never
        // blocks the scheduler.
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Job>(threads);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let workers = (0..threads)
            .map(|i| {
                let (sender, work, done) = (Arc::clone(&sender), work_rx.clone(), done_tx.clone());
                thread::Builder::new()
                    .name(format!("push-worker-{i}"))
                    .spawn(move || run_worker(&sender, &work, &done))
                    .expect("spawn push worker")
            })
            .collect();
        let scheduler = Scheduler::new(&config, threads, work_tx, reports, &permits, &metrics);
        let close = CloseOnExit(Arc::clone(&permits));
        let scheduler = thread::Builder::new()
            .name("push-scheduler".into())
            .spawn(move || {
                let _close = close;
                scheduler.run(command_rx, done_rx);
            })
            .expect("spawn push scheduler");
        Delivery {
            commands: command_tx,
            permits,
            metrics,
            scheduler: Some(scheduler),
            workers,
        }
    }

    /// Queues a new-mail push (coalesced per subscription). `event_at` is
    /// when the engine saw the change; latency is measured from it. Blocks
    /// while the queue is full.
    pub fn new_mail(
        &self,
        sub: &Arc<PushSubscription>,
        mailbox: &str,
        exists: u32,
        event_at: Instant,
    ) {
        self.new_mail_with_preview(sub, mailbox, exists, None, event_at);
    }

    /// [`Delivery::new_mail`] with the engine's preview of the newest messages. The
    /// preview goes into the payload only for an encrypted Web Push target (never to a
    /// push service that could read it), fitted to the payload limit.
    pub fn new_mail_with_preview(
        &self,
        sub: &Arc<PushSubscription>,
        mailbox: &str,
        exists: u32,
        preview: Option<Box<Preview>>,
        event_at: Instant,
    ) {
        self.enqueue(Command::NewMail {
            sub: Arc::clone(sub),
            mailbox: mailbox.to_owned(),
            exists,
            preview,
            event_at,
        });
    }

    /// Queues a reconnect push (never coalesced or dropped) and drops the
    /// subscription's pending new mail. Blocks while the queue is full.
    pub fn reconnect(&self, sub: &Arc<PushSubscription>, reason: &str) {
        self.enqueue(Command::Reconnect {
            sub: Arc::clone(sub),
            reason: reason.to_owned(),
        });
    }

    /// Drops pending new mail (and any new-mail retry) for a deleted
    /// subscription. Queued reconnect pushes still go out. Never blocks.
    pub fn forget(&self, subscription: &str) {
        let _ = self.commands.send(Command::Forget {
            subscription: subscription.to_owned(),
        });
    }

    pub fn stats(&self) -> DeliveryStats {
        self.metrics.snapshot(self.permits.used())
    }

    /// Stops accepting jobs, sends what is queued (reconnect pushes first,
    /// pending new mail without waiting out its window, retries whose delay
    /// ends in time) until everything is done or `grace` has passed, then
    /// stops. Jobs left, including requests still in flight, count as
    /// `undelivered`. Returns within about `grace`: workers still blocked
    /// in a request are left to end on their own.
    pub fn shutdown(mut self, grace: Duration) -> DeliveryStats {
        self.stop(grace);
        self.stats()
    }

    fn enqueue(&self, command: Command) {
        match self.permits.acquire() {
            Ok(waited) => {
                if waited {
                    self.metrics.add(|c| &c.backpressure_waits, 1);
                }
                if self.commands.send(command).is_err() {
                    self.permits.release(1);
                    self.metrics.add(|c| &c.undelivered, 1);
                }
            }
            Err(Closed) => self.metrics.add(|c| &c.undelivered, 1),
        }
    }

    fn stop(&mut self, grace: Duration) {
        let Some(scheduler) = self.scheduler.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        let _ = self.commands.send(Command::Shutdown { deadline });
        let _ = scheduler.join();
        // The scheduler has closed the work channel: idle workers end at
        // once, busy ones when their request ends. Wait for those only
        // until the deadline (and briefly, for the idle ones).
        let until = deadline.max(Instant::now() + WORKER_EXIT_WAIT);
        let workers = std::mem::take(&mut self.workers);
        while Instant::now() < until && !workers.iter().all(JoinHandle::is_finished) {
            thread::sleep(Duration::from_millis(1));
        }
        for worker in workers.into_iter().filter(JoinHandle::is_finished) {
            let _ = worker.join();
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// The per-origin cap in force: `permits`, but below `threads` when there are two
/// workers or more, so one origin never holds every worker.
fn origin_cap(permits: usize, threads: usize) -> usize {
    permits.min(threads.saturating_sub(1)).max(1)
}

/// How long shutdown waits for idle workers to notice the closed channel.
const WORKER_EXIT_WAIT: Duration = Duration::from_millis(100);
/// Latencies above a day are recorded as a day.
const LATENCY_US_MAX: u64 = 86_400_000_000;
/// Timers fired per scheduler turn, so a flood of expirations cannot starve
/// commands and completions.
const TIMERS_PER_TURN_MAX: usize = 4096;
/// The scheduler wakes at least this often even with nothing to do.
const IDLE_WAKE: Duration = Duration::from_secs(60);

enum Command {
    NewMail {
        sub: Arc<PushSubscription>,
        mailbox: String,
        exists: u32,
        preview: Option<Box<Preview>>,
        event_at: Instant,
    },
    Reconnect {
        sub: Arc<PushSubscription>,
        reason: String,
    },
    Forget {
        subscription: String,
    },
    Shutdown {
        deadline: Instant,
    },
}

// ---------------------------------------------------------------------------
// Jobs and the pure decisions about them.

enum What {
    NewMail {
        mailbox: String,
        exists: u32,
        preview: Option<Box<Preview>>,
        event_at: Instant,
    },
    Reconnect {
        reason: String,
    },
}

/// One push to make, through all its attempts.
struct Job {
    /// Set at each hand-off to a worker; matches `Slot::in_flight`.
    id: u64,
    sub: Arc<PushSubscription>,
    what: What,
    /// Send [`minimal_payload`] (after a 413).
    minimal: bool,
    /// Retries scheduled so far; the [`Backoff`] attempt number.
    retries: u32,
    first_attempt_at: Option<Instant>,
    /// New mail: the slot epoch it belongs to. A reconnect, `forget` or
    /// `Gone` moves the slot to a new epoch, making older jobs stale.
    epoch: u64,
}

impl Job {
    fn new(sub: Arc<PushSubscription>, what: What, epoch: u64) -> Self {
        Self {
            id: 0,
            sub,
            what,
            minimal: false,
            retries: 0,
            first_attempt_at: None,
            epoch,
        }
    }

    fn kind(&self) -> Kind {
        match self.what {
            What::NewMail { .. } => Kind::NewMail,
            What::Reconnect { .. } => Kind::Reconnect,
        }
    }

    fn target(&self) -> &PushTarget {
        self.sub.target(self.kind())
    }

    fn payload(&self) -> String {
        match &self.what {
            _ if self.minimal => minimal_payload(self.kind(), self.about()),
            What::NewMail {
                mailbox,
                exists,
                preview: Some(preview),
                ..
            } if self.target().keys().is_some() => {
                let messages: Vec<message::MessagePreview<'_>> = preview
                    .messages
                    .iter()
                    .map(|m| message::MessagePreview {
                        uid: m.uid,
                        from: &m.from,
                        subject: &m.subject,
                    })
                    .collect();
                message::new_mail_with_preview(
                    self.about(),
                    mailbox,
                    *exists,
                    &messages,
                    push::ece::PAYLOAD_LEN_MAX,
                )
            }
            What::NewMail {
                mailbox, exists, ..
            } => message::new_mail(self.about(), mailbox, *exists),
            What::Reconnect { reason } => message::reconnect(self.about(), reason),
        }
    }

    /// Who the payload is about: the id only if it is encrypted to the device.
    fn about(&self) -> About<'_> {
        let encrypted = self.target().keys().is_some();
        About::new(&self.sub.id, self.sub.tag.as_ref(), encrypted)
    }

    fn event_at(&self) -> Option<Instant> {
        match self.what {
            What::NewMail { event_at, .. } => Some(event_at),
            What::Reconnect { .. } => None,
        }
    }
}

/// Two new-mail jobs for one subscription as one: the newer one's mailbox
/// and count, the older one's first event (for latency) and retry state (so
/// a failing endpoint keeps backing off), minimal if either was. Previews of
/// the same mailbox merge, newest messages first; the payload keeps as many
/// as fit.
fn merge_mail(older: Job, newer: Job) -> Job {
    let event_at = match (older.event_at(), newer.event_at()) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or_else(Instant::now),
    };
    let (older_mailbox, older_preview) = match older.what {
        What::NewMail {
            ref mailbox,
            ref preview,
            ..
        } => (Some(mailbox.as_str()), preview.as_deref()),
        What::Reconnect { .. } => (None, None),
    };
    let what = match newer.what {
        What::NewMail {
            mailbox,
            exists,
            preview,
            ..
        } => {
            let preview = match (preview, older_preview) {
                (Some(newer), Some(older)) if older_mailbox == Some(mailbox.as_str()) => {
                    let mut merged = older.clone();
                    merged.merge_newer(*newer);
                    Some(Box::new(merged))
                }
                (newer, _) => newer,
            };
            What::NewMail {
                mailbox,
                exists,
                preview,
                event_at,
            }
        }
        reconnect @ What::Reconnect { .. } => reconnect,
    };
    Job {
        what,
        minimal: older.minimal || newer.minimal,
        retries: older.retries.max(newer.retries),
        first_attempt_at: older.first_attempt_at.or(newer.first_attempt_at),
        ..newer
    }
}

/// What to do with a job after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Delivered,
    Gone,
    /// Try again at once with the minimal payload.
    Shrink,
    RetryIn(Duration),
    Failed,
}

fn decide(
    outcome: &Outcome,
    minimal: bool,
    retries: u32,
    elapsed: Duration,
    backoff: &Backoff,
    random: u32,
) -> Next {
    match outcome {
        Outcome::Delivered => Next::Delivered,
        Outcome::Gone => Next::Gone,
        Outcome::TooLarge if minimal => Next::Failed,
        Outcome::TooLarge => Next::Shrink,
        Outcome::RateLimited { .. } | Outcome::Retry { .. } => {
            match backoff.after(outcome, retries, elapsed, random) {
                Some(delay) => Next::RetryIn(delay),
                None => Next::Failed,
            }
        }
        Outcome::Rejected { .. } | Outcome::Redirect { .. } | Outcome::Unsendable(_) => {
            Next::Failed
        }
    }
}

// ---------------------------------------------------------------------------
// Per-subscription coalescing state.

/// The new-mail push waiting to go, and the earliest it may (a retry delay
/// or an origin hold; the coalescing window is the slot's).
struct Pending {
    job: Job,
    not_before: Instant,
}

/// One subscription's new-mail state in the scheduler.
struct Slot {
    epoch: u64,
    /// No new-mail push before this (a delivered push + the window).
    window_end: Instant,
    /// The id of the job with a worker, if any.
    in_flight: Option<u64>,
    /// Listed in the scheduler's new-mail ready queue.
    queued: bool,
    pending: Option<Pending>,
}

impl Slot {
    fn new(epoch: u64, now: Instant) -> Self {
        Self {
            epoch,
            window_end: now,
            in_flight: None,
            queued: false,
            pending: None,
        }
    }

    /// Adds a new-mail job. `true` if it merged into the pending push (one
    /// job fewer); otherwise it is now the pending push.
    fn add(&mut self, job: Job, not_before: Instant) -> bool {
        match self.pending.take() {
            Some(p) => {
                let (older, newer) = by_age(p.job, job);
                self.pending = Some(Pending {
                    job: merge_mail(older, newer),
                    not_before: p.not_before.max(not_before),
                });
                true
            }
            None => {
                self.pending = Some(Pending { job, not_before });
                false
            }
        }
    }

    /// When the pending push may go; `None` if nothing is pending or a push
    /// is in flight (it must finish first, to keep pushes in order). While
    /// `flushing` (shutdown), the window no longer applies.
    fn due(&self, flushing: bool) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        let pending = self.pending.as_ref()?;
        Some(if flushing {
            pending.not_before
        } else {
            pending.not_before.max(self.window_end)
        })
    }

    /// Nothing pending, nothing in flight, and no window to enforce: the
    /// slot can go.
    fn is_idle(&self, now: Instant) -> bool {
        self.pending.is_none() && self.in_flight.is_none() && now >= self.window_end
    }
}

/// A retried job is older than anything pending (which arrived while it
/// was in flight); a fresh event is newer. Retried jobs have an attempt.
fn by_age(a: Job, b: Job) -> (Job, Job) {
    if b.first_attempt_at.is_some() && a.first_attempt_at.is_none() {
        (b, a)
    } else {
        (a, b)
    }
}

// ---------------------------------------------------------------------------
// Shared counters and the queue bound.

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    gone: AtomicU64,
    too_large: AtomicU64,
    rate_limited: AtomicU64,
    retried: AtomicU64,
    redirect: AtomicU64,
    failed: AtomicU64,
    coalesced: AtomicU64,
    dropped: AtomicU64,
    undelivered: AtomicU64,
    backpressure_waits: AtomicU64,
}

struct Latency {
    histogram: Histogram<u64>,
    sum_us: u64,
}

struct Metrics {
    counters: Counters,
    latency: Mutex<Latency>,
}

impl Metrics {
    fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
            .expect("constant histogram bounds are valid");
        Self {
            counters: Counters::default(),
            latency: Mutex::new(Latency {
                histogram,
                sum_us: 0,
            }),
        }
    }

    fn add(&self, counter: impl Fn(&Counters) -> &AtomicU64, n: u64) {
        counter(&self.counters).fetch_add(n, Ordering::Relaxed);
    }

    fn record_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut l = lock(&self.latency);
        l.histogram.saturating_record(us.max(1));
        l.sum_us = l.sum_us.saturating_add(us);
    }

    fn snapshot(&self, queue_depth: usize) -> DeliveryStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let latency = {
            let l = lock(&self.latency);
            let h = &l.histogram;
            LatencySummary {
                count: h.len(),
                sum_us: l.sum_us,
                p50_us: h.value_at_quantile(0.5),
                p90_us: h.value_at_quantile(0.9),
                p99_us: h.value_at_quantile(0.99),
                p999_us: h.value_at_quantile(0.999),
                max_us: h.max(),
            }
        };
        DeliveryStats {
            delivered: get(&c.delivered),
            gone: get(&c.gone),
            too_large: get(&c.too_large),
            rate_limited: get(&c.rate_limited),
            retried: get(&c.retried),
            redirect: get(&c.redirect),
            failed: get(&c.failed),
            coalesced: get(&c.coalesced),
            dropped: get(&c.dropped),
            undelivered: get(&c.undelivered),
            backpressure_waits: get(&c.backpressure_waits),
            queue_depth: queue_depth as u64,
            latency,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere; keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pool has stopped; the job was not accepted.
struct Closed;

/// A counting semaphore over outstanding jobs: callers take a permit before
/// sending a job, the scheduler returns it when the job ends (or merges).
struct Permits {
    state: Mutex<PermitState>,
    freed: Condvar,
    max: usize,
}

struct PermitState {
    used: usize,
    closed: bool,
}

impl Permits {
    fn new(max: usize) -> Self {
        Self {
            state: Mutex::new(PermitState {
                used: 0,
                closed: false,
            }),
            freed: Condvar::new(),
            max,
        }
    }

    /// Takes a permit, blocking while none is free. `Ok(true)` if it had to
    /// wait.
    fn acquire(&self) -> Result<bool, Closed> {
        let mut state = lock(&self.state);
        let mut waited = false;
        while state.used >= self.max && !state.closed {
            waited = true;
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return Err(Closed);
        }
        state.used += 1;
        Ok(waited)
    }

    fn release(&self, n: usize) {
        let mut state = lock(&self.state);
        debug_assert!(state.used >= n, "released more permits than taken");
        state.used = state.used.saturating_sub(n);
        drop(state);
        self.freed.notify_all();
    }

    fn used(&self) -> usize {
        lock(&self.state).used
    }

    /// Wakes blocked callers for good; they see [`Closed`].
    fn close(&self) {
        lock(&self.state).closed = true;
        self.freed.notify_all();
    }
}

/// Closes the permits when the scheduler thread ends, even by panic, so no
/// caller blocks forever.
struct CloseOnExit(Arc<Permits>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

// ---------------------------------------------------------------------------
// Workers.

/// A finished attempt, back from a worker.
struct Done {
    job: Job,
    outcome: Outcome,
    answered_at: Instant,
}

fn run_worker(sender: &push::Sender, work: &Receiver<Job>, done: &Sender<Done>) {
    while let Ok(job) = work.recv() {
        let outcome = send_one(sender, &job, unix_now());
        let answered_at = Instant::now();
        let finished = Done {
            job,
            outcome,
            answered_at,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

fn send_one(sender: &push::Sender, job: &Job, now_unix: u64) -> Outcome {
    let target = job.target();
    let payload = job.payload();
    let topic = match job.kind() {
        Kind::NewMail => Some(job.sub.topic()),
        // A reconnect must not replace, or be replaced by, pending new mail
        // at the push service.
        Kind::Reconnect => None,
    };
    let simple_push_version = match target.protocol() {
        Protocol::SimplePush => job.sub.next_simple_push_version(now_unix),
        Protocol::WebPush => 0,
    };
    let notification = Notification {
        kind: job.kind(),
        payload_json: payload.as_bytes(),
        topic,
        simple_push_version,
    };
    sender.send(target, &notification, now_unix)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// The scheduler.

enum TimerWhat {
    /// Look at a slot again: its pending push may be due, or it may be idle.
    Slot(String),
    /// A reconnect job whose retry delay or origin hold ends.
    Reconnect(Job),
}

struct Timer {
    at: Instant,
    seq: u64,
    what: TimerWhat,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Per-endpoint `Retry-After`: no request to the endpoint before the instant.
#[derive(Default)]
struct Holds {
    until: HashMap<String, Instant>,
    /// Entries after the last pruning; the map is pruned when it doubles, so pruning
    /// costs O(1) per hold on average however many endpoints are held.
    pruned_len: usize,
}

impl Holds {
    fn until(&mut self, endpoint: &str, now: Instant) -> Option<Instant> {
        match self.until.get(endpoint) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                self.until.remove(endpoint);
                None
            }
            None => None,
        }
    }

    fn hold(&mut self, endpoint: &str, until: Instant, now: Instant) {
        if self.until.len() >= 2 * self.pruned_len.max(8) {
            self.until.retain(|_, u| *u > now);
            self.pruned_len = self.until.len();
        }
        let entry = self.until.entry(endpoint.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
    }
}

/// Work waiting for a worker, in its origin's queue.
enum Ready {
    Reconnect(Job),
    /// The subscription whose pending new mail is due.
    NewMail(String),
}

struct Scheduler {
    window: Duration,
    backoff: Backoff,
    slots: HashMap<String, Slot>,
    holds: Holds,
    ready: OriginQueues<Ready>,
    timers: BinaryHeap<Reverse<Timer>>,
    idle_workers: usize,
    /// Feeds job ids, slot epochs and timer sequence numbers.
    next_seq: u64,
    /// Set by shutdown: leave once everything is done or at this instant.
    deadline: Option<Instant>,
    work: Sender<Job>,
    reports: Sender<Report>,
    permits: Arc<Permits>,
    metrics: Arc<Metrics>,
    rng: SystemRandom,
}

impl Scheduler {
    fn new(
        config: &DeliveryConfig,
        threads: usize,
        work: Sender<Job>,
        reports: Sender<Report>,
        permits: &Arc<Permits>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Self {
            window: config.coalesce_window,
            backoff: Backoff {
                give_up_after: config.backoff.give_up_after.min(config.retry_budget),
                ..config.backoff
            },
            slots: HashMap::new(),
            holds: Holds::default(),
            ready: OriginQueues::new(origin_cap(config.permits_per_origin, threads)),
            timers: BinaryHeap::new(),
            idle_workers: threads,
            next_seq: 1,
            deadline: None,
            work,
            reports,
            permits: Arc::clone(permits),
            metrics: Arc::clone(metrics),
            rng: SystemRandom::new(),
        }
    }

    fn run(mut self, commands: Receiver<Command>, done: Receiver<Done>) {
        let (mut commands, mut done) = (commands, done);
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            if self.finished(now) {
                break;
            }
            self.dispatch(now);
            let timeout = self.next_wake(now);
            select! {
                recv(commands) -> command => match command {
                    Ok(command) => self.handle_command(command, Instant::now()),
                    // The Delivery is gone (it always sends Shutdown first).
                    Err(_) => {
                        commands = never();
                        self.begin_shutdown(now, now);
                    }
                },
                recv(done) -> finished => match finished {
                    Ok(finished) => self.handle_done(finished, Instant::now()),
                    Err(_) => done = never(),
                },
                default(timeout) => {}
            }
        }
        let left = self.permits.used();
        self.metrics.add(|c| &c.undelivered, left as u64);
        self.permits.release(left);
    }

    fn finished(&self, now: Instant) -> bool {
        self.deadline
            .is_some_and(|deadline| now >= deadline || self.permits.used() == 0)
    }

    fn next_wake(&self, now: Instant) -> Duration {
        let timer = self.timers.peek().map(|Reverse(t)| t.at);
        let wake = match (timer, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wake.map_or(IDLE_WAKE, |at| at.saturating_duration_since(now))
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn push_timer(&mut self, at: Instant, what: TimerWhat) {
        let seq = self.seq();
        self.timers.push(Reverse(Timer { at, seq, what }));
    }

    fn handle_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::NewMail {
                sub,
                mailbox,
                exists,
                preview,
                event_at,
            } => {
                let what = What::NewMail {
                    mailbox,
                    exists,
                    preview,
                    event_at,
                };
                self.handle_new_mail(sub, what, now);
            }
            Command::Reconnect { sub, reason } => {
                self.drop_pending(&sub.id, false);
                let job = Job::new(sub, What::Reconnect { reason }, 0);
                self.queue_reconnect(job, false);
            }
            Command::Forget { subscription } => self.drop_pending(&subscription, true),
            Command::Shutdown { deadline } => self.begin_shutdown(deadline, now),
        }
    }

    fn handle_new_mail(&mut self, sub: Arc<PushSubscription>, what: What, now: Instant) {
        let id = sub.id.clone();
        let epoch = self.seq();
        let slot = self
            .slots
            .entry(id.clone())
            .or_insert_with(|| Slot::new(epoch, now));
        let job = Job::new(sub, what, slot.epoch);
        if slot.add(job, now) {
            self.metrics.add(|c| &c.coalesced, 1);
            self.permits.release(1);
        } else {
            self.poll_slot(&id, now);
        }
    }

    /// Drops the subscription's pending new mail and makes in-flight new
    /// mail stale (so it is not retried). `forget` also drops the slot.
    fn drop_pending(&mut self, subscription: &str, forget: bool) {
        let epoch = self.seq();
        let pending = if forget {
            self.slots.remove(subscription).and_then(|s| s.pending)
        } else {
            self.slots.get_mut(subscription).and_then(|slot| {
                slot.epoch = epoch;
                slot.pending.take()
            })
        };
        if pending.is_some() {
            self.metrics.add(|c| &c.dropped, 1);
            self.permits.release(1);
        }
    }

    fn begin_shutdown(&mut self, deadline: Instant, now: Instant) {
        self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        let ids: Vec<String> = self.slots.keys().cloned().collect();
        for id in ids {
            self.poll_slot(&id, now);
        }
    }

    /// Looks at a slot: queue its pending push if due, set a timer if due
    /// later, or remove the slot once idle. A spurious call is a no-op.
    fn poll_slot(&mut self, id: &str, now: Instant) {
        let flushing = self.deadline.is_some();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        match slot.due(flushing) {
            Some(due) if due <= now => {
                if let (false, Some(pending)) = (slot.queued, &slot.pending) {
                    slot.queued = true;
                    let origin = pending.job.target().origin().to_owned();
                    let ready = Ready::NewMail(id.to_owned());
                    self.ready.push_back(&origin, Class::NewMail, ready);
                }
            }
            Some(due) => self.push_timer(due, TimerWhat::Slot(id.to_owned())),
            // The in-flight push's completion polls the slot again.
            None if slot.in_flight.is_some() => {}
            None if slot.is_idle(now) => {
                self.slots.remove(id);
            }
            None => {
                let at = slot.window_end;
                self.push_timer(at, TimerWhat::Slot(id.to_owned()));
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        for _ in 0..TIMERS_PER_TURN_MAX {
            match self.timers.peek() {
                Some(Reverse(t)) if t.at <= now => {}
                _ => return,
            }
            let Some(Reverse(timer)) = self.timers.pop() else {
                return;
            };
            match timer.what {
                TimerWhat::Slot(id) => self.poll_slot(&id, now),
                TimerWhat::Reconnect(job) => self.queue_reconnect(job, false),
            }
        }
    }

    /// Hands ready jobs to idle workers: reconnect pushes first, origins in turn,
    /// none past its origin's cap.
    fn dispatch(&mut self, now: Instant) {
        while self.idle_workers > 0 {
            let Some((origin, ready)) = self.ready.pop() else {
                return;
            };
            let job = match ready {
                Ready::Reconnect(job) => self.unheld(job, now),
                Ready::NewMail(id) => self.next_new_mail(&id, now),
            };
            let Some(mut job) = job else {
                // Nothing to send after all: the permit goes back at once.
                self.ready.release(&origin);
                continue;
            };
            job.first_attempt_at.get_or_insert(now);
            // Cannot block: fewer jobs are in the channel than idle workers.
            if self.work.send(job).is_err() {
                self.ready.release(&origin);
                return;
            }
            self.idle_workers -= 1;
        }
    }

    fn queue_reconnect(&mut self, job: Job, front: bool) {
        let origin = job.target().origin().to_owned();
        let ready = Ready::Reconnect(job);
        if front {
            self.ready.push_front(&origin, Class::Reconnect, ready);
        } else {
            self.ready.push_back(&origin, Class::Reconnect, ready);
        }
    }

    /// The reconnect job, unless its endpoint is held: then it waits on a timer.
    fn unheld(&mut self, job: Job, now: Instant) -> Option<Job> {
        match self.holds.until(job.target().endpoint(), now) {
            Some(until) => {
                self.push_timer(until, TimerWhat::Reconnect(job));
                None
            }
            None => Some(job),
        }
    }

    /// The subscription's pending new mail if it is due and its endpoint not held.
    fn next_new_mail(&mut self, id: &str, now: Instant) -> Option<Job> {
        let flushing = self.deadline.is_some();
        let job_id = self.seq();
        let slot = self.slots.get_mut(id)?;
        slot.queued = false;
        let ready = slot.due(flushing).is_some_and(|due| due <= now);
        let Some(pending) = slot.pending.as_mut().filter(|_| ready) else {
            self.poll_slot(id, now);
            return None;
        };
        if let Some(until) = self.holds.until(pending.job.target().endpoint(), now) {
            // Stay pending (newer mail keeps merging) until the hold ends.
            pending.not_before = until;
            self.poll_slot(id, now);
            return None;
        }
        let mut job = slot.pending.take()?.job;
        job.id = job_id;
        slot.in_flight = Some(job_id);
        Some(job)
    }

    fn handle_done(&mut self, done: Done, now: Instant) {
        self.idle_workers += 1;
        let Done {
            mut job,
            outcome,
            answered_at,
        } = done;
        self.ready.release(job.target().origin());
        self.count_attempt(&outcome);
        if let Outcome::RateLimited { retry_after } = outcome {
            self.holds
                .hold(job.target().endpoint(), answered_at + retry_after, now);
        }
        // New mail: the slot is looked at again once the job is settled.
        let sub = (job.kind() == Kind::NewMail).then(|| Arc::clone(&job.sub));
        if sub.is_some() {
            self.release_slot(&job, &outcome, answered_at);
        }
        let elapsed = now.saturating_duration_since(job.first_attempt_at.unwrap_or(now));
        let random = self.random();
        match decide(
            &outcome,
            job.minimal,
            job.retries,
            elapsed,
            &self.backoff,
            random,
        ) {
            Next::Delivered => self.delivered(&job, answered_at),
            Next::Gone => self.gone(&job),
            Next::Shrink => {
                job.minimal = true;
                self.requeue(job, now, now);
            }
            Next::RetryIn(delay) => {
                if matches!(outcome, Outcome::Retry { .. }) {
                    self.metrics.add(|c| &c.retried, 1);
                }
                job.retries += 1;
                self.requeue(job, now + delay, now);
            }
            Next::Failed => self.failed(&job),
        }
        if let Some(sub) = sub {
            self.poll_slot(&sub.id, now);
        }
    }

    /// The slot's in-flight push is back; a delivered one starts the
    /// coalescing window.
    fn release_slot(&mut self, job: &Job, outcome: &Outcome, answered_at: Instant) {
        let Some(slot) = self.slots.get_mut(&job.sub.id) else {
            return;
        };
        if slot.in_flight != Some(job.id) {
            return;
        }
        slot.in_flight = None;
        if *outcome == Outcome::Delivered {
            slot.window_end = answered_at + self.window;
        }
    }

    /// Per-attempt counters. `retried` is counted where the retry is
    /// decided, `failed` where a job ends.
    fn count_attempt(&self, outcome: &Outcome) {
        let c = &self.metrics.counters;
        let counter = match outcome {
            Outcome::Delivered => &c.delivered,
            Outcome::Gone => &c.gone,
            Outcome::TooLarge => &c.too_large,
            Outcome::RateLimited { .. } => &c.rate_limited,
            Outcome::Redirect { .. } => &c.redirect,
            Outcome::Retry { .. } | Outcome::Rejected { .. } | Outcome::Unsendable(_) => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts a job back to be tried at `not_before`. New mail goes back into
    /// its slot, merging with mail that arrived meanwhile, unless it went
    /// stale (reconnect, forget, gone).
    fn requeue(&mut self, job: Job, not_before: Instant, now: Instant) {
        match job.kind() {
            Kind::Reconnect if not_before <= now => self.queue_reconnect(job, true),
            Kind::Reconnect => self.push_timer(not_before, TimerWhat::Reconnect(job)),
            Kind::NewMail => self.requeue_mail(job, not_before),
        }
    }

    fn requeue_mail(&mut self, job: Job, not_before: Instant) {
        let slot = self
            .slots
            .get_mut(&job.sub.id)
            .filter(|slot| slot.epoch == job.epoch);
        let Some(slot) = slot else {
            self.metrics.add(|c| &c.dropped, 1);
            self.permits.release(1);
            return;
        };
        if slot.add(job, not_before) {
            self.metrics.add(|c| &c.coalesced, 1);
            self.permits.release(1);
        }
    }

    fn delivered(&mut self, job: &Job, answered_at: Instant) {
        if let Some(event_at) = job.event_at() {
            self.metrics
                .record_latency(answered_at.saturating_duration_since(event_at));
        }
        self.finish(Report::Delivered {
            subscription: job.sub.id.clone(),
            kind: job.kind(),
        });
    }

    fn gone(&mut self, job: &Job) {
        // Pending new mail would meet the same 404/410.
        self.drop_pending(&job.sub.id, false);
        self.finish(Report::Gone {
            subscription: job.sub.id.clone(),
        });
    }

    fn failed(&mut self, job: &Job) {
        self.metrics.add(|c| &c.failed, 1);
        self.finish(Report::Failed {
            subscription: job.sub.id.clone(),
            kind: job.kind(),
        });
    }

    fn finish(&mut self, report: Report) {
        self.permits.release(1);
        // A receiver that is gone no longer wants reports.
        let _ = self.reports.send(report);
    }

    fn random(&self) -> u32 {
        let mut bytes = [0u8; 4];
        match self.rng.fill(&mut bytes) {
            Ok(()) => u32::from_ne_bytes(bytes),
            // Mid-range jitter; only the spread between retries suffers.
            Err(_) => u32::MAX / 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn sub(id: &str) -> Arc<PushSubscription> {
        let target = PushTarget::web_push_unencrypted("https://push.example.net/x").unwrap();
        PushSubscription::new(id.to_owned(), target.clone(), target, 1_000)
    }

    fn mail(sub: &Arc<PushSubscription>, exists: u32, event_at: Instant) -> Job {
        let what = What::NewMail {
            mailbox: format!("box{exists}"),
            exists,
            preview: None,
            event_at,
        };
        Job::new(Arc::clone(sub), what, 1)
    }

    fn exists(job: &Job) -> (u32, Instant) {
        match &job.what {
            What::NewMail {
                exists, event_at, ..
            } => (*exists, *event_at),
            What::Reconnect { .. } => panic!("not new mail"),
        }
    }

    #[test]
    fn simple_push_versions_increase_and_follow_the_clock() {
        let s = sub("a");
        assert_eq!(s.next_simple_push_version(0), 1_001);
        assert_eq!(s.next_simple_push_version(0), 1_002);
        assert_eq!(s.next_simple_push_version(5_000), 5_000, "clock jumped");
        assert_eq!(s.next_simple_push_version(5_000), 5_001);
        assert_eq!(s.next_simple_push_version(4_000), 5_002, "clock went back");
    }

    fn previewed(sub: &Arc<PushSubscription>, mailbox: &str, uid: u32) -> Job {
        let preview = Preview {
            messages: vec![engine::MessageSummary {
                uid,
                from: "Alice <alice@example.org>".into(),
                subject: format!("message {uid}"),
            }],
        };
        let what = What::NewMail {
            mailbox: mailbox.into(),
            exists: uid,
            preview: Some(Box::new(preview)),
            event_at: Instant::now(),
        };
        Job::new(Arc::clone(sub), what, 1)
    }

    #[test]
    fn previews_go_only_encrypted_and_merge_newest_first() {
        // Never in clear: a target without keys gets the plain payload.
        let clear = previewed(&sub("s1"), "INBOX", 1);
        assert_eq!(
            clear.payload(),
            message::new_mail(About::new("s1", None, false), "INBOX", 1)
        );
        let phone = push::testing::Subscriber::generate();
        let target = phone.target("https://push.example.net/x").unwrap();
        let keyed = PushSubscription::new("s2".into(), target.clone(), target, 1_000);
        let uids = |job: &Job| -> Vec<u64> {
            let v: serde_json::Value = serde_json::from_str(&job.payload()).unwrap();
            v["messages"]
                .as_array()
                .map(|m| m.iter().map(|m| m["uid"].as_u64().unwrap()).collect())
                .unwrap_or_default()
        };
        let merged = merge_mail(previewed(&keyed, "INBOX", 1), previewed(&keyed, "INBOX", 2));
        assert_eq!(uids(&merged), [2, 1]);
        // Another mailbox's preview does not carry over.
        let merged = merge_mail(previewed(&keyed, "Sent", 1), previewed(&keyed, "INBOX", 2));
        assert_eq!(uids(&merged), [2]);
        let merged = merge_mail(
            previewed(&keyed, "INBOX", 1),
            mail(&keyed, 3, Instant::now()),
        );
        assert_eq!(uids(&merged), Vec::<u64>::new());
    }

    #[test]
    fn minimal_payloads() {
        assert_eq!(
            minimal_payload(Kind::NewMail, About::new("s1", None, true)),
            r#"{"type":"new_mail","subscription":"s1"}"#
        );
        let tag = Tag::new("t").unwrap();
        let v: serde_json::Value = serde_json::from_str(&minimal_payload(
            Kind::Reconnect,
            About::new("a\"b", Some(&tag), true),
        ))
        .unwrap();
        assert_eq!(v["type"], "reconnect");
        assert_eq!(v["subscription"], "a\"b");
        assert_eq!(v["tag"], "t");
        // The test subscriptions are keyless: no id in clear.
        let s = sub("s1");
        let mut job = mail(&s, 7, Instant::now());
        assert!(job.payload().contains("\"exists\":7"));
        assert!(!job.payload().contains("s1"));
        job.minimal = true;
        assert_eq!(job.payload(), r#"{"type":"new_mail"}"#);
    }

    #[test]
    fn decisions() {
        let b = Backoff {
            base: MS(100),
            cap: MS(1_000),
            give_up_after: MS(10_000),
        };
        let d = |outcome: Outcome, minimal: bool, elapsed: u64| {
            decide(&outcome, minimal, 0, MS(elapsed), &b, 0)
        };
        assert_eq!(d(Outcome::Delivered, false, 0), Next::Delivered);
        assert_eq!(d(Outcome::Gone, false, 0), Next::Gone);
        assert_eq!(d(Outcome::TooLarge, false, 0), Next::Shrink);
        assert_eq!(d(Outcome::TooLarge, true, 0), Next::Failed, "shrunk once");
        let server_error = Outcome::Retry { status: Some(503) };
        assert_eq!(d(server_error, false, 0), Next::RetryIn(MS(50)));
        assert_eq!(d(server_error, false, 9_990), Next::Failed, "budget");
        let limited = Outcome::RateLimited {
            retry_after: MS(3_000),
        };
        assert_eq!(d(limited, false, 0), Next::RetryIn(MS(3_000)));
        assert_eq!(d(limited, false, 8_000), Next::Failed, "budget");
        assert_eq!(d(Outcome::Redirect { status: 301 }, false, 0), Next::Failed);
        assert_eq!(d(Outcome::Rejected { status: 400 }, false, 0), Next::Failed);
    }

    #[test]
    fn first_mail_goes_at_once_then_the_window_coalesces() {
        let s = sub("a");
        let t0 = Instant::now();
        let mut slot = Slot::new(1, t0);
        assert!(!slot.add(mail(&s, 1, t0), t0));
        assert_eq!(slot.due(false), Some(t0), "first mail: at once");

        // Sent and delivered: the window starts.
        slot.pending = None;
        slot.window_end = t0 + MS(1_000);
        assert!(!slot.add(mail(&s, 2, t0 + MS(10)), t0 + MS(10)));
        assert!(slot.add(mail(&s, 3, t0 + MS(20)), t0 + MS(20)), "merged");
        assert_eq!(slot.due(false), Some(t0 + MS(1_000)));
        assert_eq!(slot.due(true), Some(t0 + MS(20)), "shutdown flushes");
        let pending = &slot.pending.as_ref().unwrap().job;
        assert_eq!(
            exists(pending),
            (3, t0 + MS(10)),
            "newest count, oldest event"
        );

        slot.in_flight = Some(9);
        assert_eq!(slot.due(false), None, "one in flight at a time");
        slot.in_flight = None;
        slot.pending = None;
        assert!(!slot.is_idle(t0 + MS(999)));
        assert!(slot.is_idle(t0 + MS(1_000)));
    }

    #[test]
    fn a_retry_merges_under_newer_mail_and_keeps_its_backoff() {
        let s = sub("a");
        let t0 = Instant::now();
        let mut slot = Slot::new(1, t0);
        assert!(!slot.add(mail(&s, 5, t0 + MS(50)), t0 + MS(50)));
        let mut retry = mail(&s, 4, t0);
        retry.retries = 3;
        retry.first_attempt_at = Some(t0);
        retry.minimal = true;
        assert!(slot.add(retry, t0 + MS(400)));
        let pending = slot.pending.as_ref().unwrap();
        assert_eq!(exists(&pending.job), (5, t0));
        assert_eq!(pending.job.retries, 3);
        assert_eq!(pending.job.first_attempt_at, Some(t0));
        assert!(pending.job.minimal);
        assert_eq!(pending.not_before, t0 + MS(400));
    }

    #[test]
    fn holds_expire_and_only_grow() {
        let t0 = Instant::now();
        let mut holds = Holds::default();
        holds.hold("https://a/1", t0 + MS(100), t0);
        holds.hold("https://a/1", t0 + MS(50), t0);
        assert_eq!(holds.until("https://a/1", t0), Some(t0 + MS(100)));
        assert_eq!(holds.until("https://a/2", t0), None, "per endpoint");
        assert_eq!(holds.until("https://a/1", t0 + MS(100)), None);
        assert!(holds.until.is_empty());
        // Expired holds are pruned as the map grows.
        for i in 0..1_000 {
            holds.hold(&format!("https://a/{i}"), t0 + MS(1), t0 + MS(i));
        }
        assert!(holds.until.len() < 20, "{}", holds.until.len());
    }

    #[test]
    fn one_origin_never_holds_every_worker() {
        assert_eq!(origin_cap(4, 8), 4);
        assert_eq!(origin_cap(8, 8), 7, "one worker stays for the others");
        assert_eq!(origin_cap(4, 2), 1);
        assert_eq!(origin_cap(4, 1), 1, "one worker: nothing to share");
        assert_eq!(origin_cap(0, 8), 1);
    }

    #[test]
    fn prometheus_text() {
        let stats = DeliveryStats {
            delivered: 3,
            redirect: 1,
            queue_depth: 2,
            latency: LatencySummary {
                count: 3,
                sum_us: 4_500,
                p50_us: 1_500,
                ..LatencySummary::default()
            },
            ..DeliveryStats::default()
        };
        let text = stats.prometheus();
        for line in [
            "imap_push_delivery_attempts_total{outcome=\"delivered\"} 3",
            "imap_push_delivery_attempts_total{outcome=\"redirect\"} 1",
            "imap_push_delivery_jobs_unsent_total{end=\"failed\"} 0",
            "imap_push_delivery_queue_depth 2",
            "# TYPE imap_push_delivery_latency_seconds summary",
            "imap_push_delivery_latency_seconds{quantile=\"0.5\"} 0.0015",
            "imap_push_delivery_latency_seconds_sum 0.0045",
            "imap_push_delivery_latency_seconds_count 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn debug_hides_the_endpoint() {
        let s = sub("a");
        let debug = format!("{s:?}");
        assert!(debug.contains("https://push.example.net/…"), "{debug}");
        assert!(!debug.contains("/x"), "{debug}");
    }
}
