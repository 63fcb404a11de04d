//! Push delivery: every rule about a push (coalescing, backoff, the 429 and 410
//! handling, the per-origin permits) in a sans-IO [`Scheduler`] that the server's
//! [`crate::core::Core`] owns, and a [`Pool`] of sender threads that only moves bytes.
//!
//! Read first: RFC 8030 §5.4 (topics), §8.4 (`404`/`410`, `413`, `429`);
//! the `push` crate docs ([`push::Sender`], [`push::Outcome`],
//! [`push::Backoff`]).
//!
//! # What this module never does
//!
//! - **No clock, no thread, no channel, no random source in the rules.** [`Scheduler`]
//!   takes `now` (and the jitter of a retry) as arguments and hands out [`Attempt`]s to
//!   make; the [`Pool`] makes each one and hands back a [`Done`] with the outcome and
//!   when the answer came. So the rules run in virtual time in the simulation
//!   (`server/tests/simulation.rs`) and the delivery tests (`server/tests/delivery.rs`).
//! - **No silent drops.** Every accepted job ends as exactly one of:
//!   delivered, gone, failed, coalesced (merged into a newer new-mail push),
//!   dropped (new mail made stale by a reconnect, `Forget` or `Gone`), or
//!   undelivered (still queued or in flight when shutdown's grace ran out).
//!   Each end has a counter in [`DeliveryStats`]. When `queue_max` jobs are
//!   outstanding, [`Scheduler::offer`] hands the job back (the core keeps it and offers
//!   it again); nothing is discarded.
//! - **No endpoint in a log line.** Endpoint URLs are capabilities and keys are
//!   secrets: failed attempts are logged by origin (scheme://host:port) and status
//!   only, at most a line per (origin, status) a minute (`logs`). `Debug` of
//!   [`PushSubscription`] is redacted.
//! - **No redirects followed** ([`push::Sender`] never follows them).
//!
//! # Who does what
//!
//! 1. The owner thread's [`crate::core::Core`] offers [`PushJob`]s to its
//!    [`Scheduler`]: a slot per subscription (the coalescing state), per-endpoint
//!    `Retry-After` holds, the ready queues (per origin, under a per-origin cap,
//!    reconnect before new mail; see `origins`) and a timer heap. It hands out an
//!    [`Attempt`] only while a sender thread is idle, so priority holds up to the wire.
//! 2. `threads` [`Pool`] workers call [`push::Sender::send`] and hand the outcome back
//!    as a [`Done`]; the scheduler decides: done, retry later, shrink, or give up, and
//!    reports each job's end as a [`Report`], which the core reads at once.
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
//! Verification pushes go like reconnect pushes (first, never merged) but drop
//! nothing, and report only a 404 or 410.
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
//!
//! # Modules
//!
//! - `job`: jobs and the pure rules about them (payloads, merging new mail,
//!   what to do after an attempt, the coalescing slot).
//! - `origins`: the per-origin cap and turns, pure.
//! - `scheduler`: the sans-IO [`Scheduler`], which applies them.
//! - `pool`: the sender threads, which only send.
//! - `metrics`: counters, the latency histogram, Prometheus text.

mod job;
mod logs;
mod metrics;
mod origins;
mod pool;
mod scheduler;

use engine::Preview;
use push::message::Tag;
use push::{Backoff, Kind, PushTarget, Topic};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::id::SubscriptionId;

pub use job::minimal_payload;
pub use metrics::{render_histogram, DeliveryStats, LatencySummary};
pub use pool::{Pool, WORK_QUEUE_PER_THREAD};
pub use scheduler::{Attempt, Done, Scheduler, SchedulerQueues};

/// [`DeliveryConfig::permits_per_origin`] by default: half of the default 8 workers.
pub const PERMITS_PER_ORIGIN_DEFAULT: usize = 4;

/// [`DeliveryConfig::queue_max`] by default: jobs accepted and not yet ended.
pub const QUEUE_MAX_DEFAULT: usize = 100_000;

/// A push for the scheduler, as the core decides it.
#[derive(Debug)]
pub enum PushJob {
    NewMail {
        push: Arc<PushSubscription>,
        mailbox: String,
        exists: u32,
        preview: Option<Box<Preview>>,
        event_at: Instant,
    },
    /// Never coalesced or dropped: the app must log in again.
    Reconnect {
        push: Arc<PushSubscription>,
        reason: &'static str,
    },
    /// Drop the pending new mail of a deleted or replaced subscription.
    Forget { subscription: SubscriptionId },
    /// The one verification push of a new subscription to its `endpoint` (see
    /// [`crate::verification`]): never coalesced, and it leaves pending new mail alone.
    /// Only a 404 or 410 is reported ([`Report::Gone`]): whether it arrived is the app's
    /// to show, by verifying.
    Verify {
        push: Arc<PushSubscription>,
        endpoint: Kind,
        code: crate::verification::Encoded,
    },
}

impl PushJob {
    /// New mail, reconnect and verification pushes count against `queue_max` until they
    /// end; a `Forget` does not.
    fn takes_permit(&self) -> bool {
        !matches!(self, PushJob::Forget { .. })
    }
}

/// The scheduler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Sender threads; each holds at most one request open. At least 1. The scheduler
    /// hands out at most this many attempts at once.
    pub threads: usize,
    /// After a delivered new-mail push, further new mail for the same
    /// subscription waits this long and goes as one push.
    pub coalesce_window: Duration,
    /// Jobs accepted and not yet ended (queued, waiting to retry, or in flight). At
    /// this many, [`Scheduler::offer`] hands a job back. At least 1.
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
            queue_max: QUEUE_MAX_DEFAULT,
            backoff: Backoff::default(),
            retry_budget: Duration::from_secs(600),
            permits_per_origin: PERMITS_PER_ORIGIN_DEFAULT,
        }
    }
}

/// A subscription's push side, shared between the registry and the pool.
pub struct PushSubscription {
    /// The public subscription id: a capability (GET and DELETE need nothing else), so
    /// it goes only into payloads encrypted to the device ([`push::message::About::new`]).
    pub id: SubscriptionId,
    pub new_mail: PushTarget,
    pub reconnect: PushTarget,
    /// The app's own label, carried back in every payload.
    pub tag: Option<Tag>,
    /// The last SimplePush version handed out.
    simple_push_version: AtomicU64,
}

impl PushSubscription {
    /// `now_unix` seeds the SimplePush version, so a server restarted later
    /// (which builds the subscription again) still sends higher versions.
    pub fn new(
        id: SubscriptionId,
        new_mail: PushTarget,
        reconnect: PushTarget,
        now_unix: u64,
    ) -> Arc<Self> {
        Self::new_tagged(id, new_mail, reconnect, None, now_unix)
    }

    /// [`PushSubscription::new`] with the app's `tag`.
    pub fn new_tagged(
        id: SubscriptionId,
        new_mail: PushTarget,
        reconnect: PushTarget,
        tag: Option<Tag>,
        now_unix: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            new_mail,
            reconnect,
            tag,
            simple_push_version: AtomicU64::new(now_unix),
        })
    }

    /// The RFC 8030 topic of this subscription's new-mail pushes. Derived from the id
    /// for each push (one SHA-256) rather than kept: every idle subscription would hold
    /// its 32 characters, and pushes are rare.
    pub fn topic(&self) -> Topic {
        Topic::for_subscription(&self.id.to_string())
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
/// (coalesced, dropped and undelivered jobs send nothing, and a verification push
/// only `Gone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The push service answered 404 or 410: the subscription no longer
    /// exists. The server should close the IMAP session and forget it.
    Gone { subscription: SubscriptionId },
    Delivered {
        subscription: SubscriptionId,
        kind: Kind,
    },
    /// Given up: rejected, redirected, still too large, unsendable, or the
    /// retry budget ran out.
    Failed {
        subscription: SubscriptionId,
        kind: Kind,
    },
}

/// The per-origin cap in force: `permits`, but below `threads` when there are two
/// workers or more, so one origin never holds every worker.
fn origin_cap(permits: usize, threads: usize) -> usize {
    permits.min(threads.saturating_sub(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::job::{decide, merge_mail, Job, Next, Slot, What};
    use super::scheduler::Holds;
    use super::*;
    use push::message::{self, About};
    use push::Outcome;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn sub(id: &str) -> Arc<PushSubscription> {
        let target = PushTarget::web_push_unencrypted("https://push.example.net/x").unwrap();
        PushSubscription::new(crate::id::named(id), target.clone(), target, 1_000)
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
            What::Reconnect { .. } | What::Verify { .. } => panic!("not new mail"),
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
        let s1 = sub("s1");
        let clear = previewed(&s1, "INBOX", 1);
        assert_eq!(
            clear.payload(),
            message::new_mail(About::new(&s1.id.to_string(), None, false), "INBOX", 1)
        );
        let phone = push::testing::Subscriber::generate();
        let target = phone.target("https://push.example.net/x").unwrap();
        let keyed = PushSubscription::new(crate::id::named("s2"), target.clone(), target, 1_000);
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
        assert!(!job.payload().contains(&s.id.to_string()));
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
