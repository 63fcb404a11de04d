//! The push rules (`server::delivery::Scheduler`).
//!
//! Timing rules (coalescing, backoff, `Retry-After`, per-origin permits, the queue bound,
//! shutdown) run in virtual time against a scripted push service
//! (`common::pushes::Virtual`): no sleep, and every instant is exact. What needs real
//! requests (encryption, headers, status codes, payload sizes, SimplePush versions)
//! runs with the real sender threads against a fake push service on loopback
//! (`push::testing::Sink`, decrypting bodies with `push::testing::Subscriber`).

mod common;

use common::pushes::{new_mail, Live, Virtual};
use push::testing::{Recorded, Sink, Subscriber};
use push::{message, Backoff, Kind, Outcome, PushTarget, Sender, SenderConfig};
use serde_json::Value;
use server::delivery::{minimal_payload, DeliveryConfig, PushJob, PushSubscription, Report};
use server::id::SubscriptionId;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MS: fn(u64) -> Duration = Duration::from_millis;
const WAIT: Duration = Duration::from_secs(5);

fn config() -> DeliveryConfig {
    DeliveryConfig {
        threads: 4,
        coalesce_window: MS(1_000),
        queue_max: 1_000,
        backoff: Backoff {
            base: MS(10),
            cap: MS(100),
            give_up_after: Duration::from_secs(5),
        },
        retry_budget: Duration::from_secs(5),
        permits_per_origin: 4,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A test's subscription id made of a short name (its bytes, zero-padded).
fn id(name: &str) -> SubscriptionId {
    let mut bytes = [0u8; 16];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    SubscriptionId::from_bytes(bytes)
}

/// The id of `name` as payloads show it.
fn hex(name: &str) -> String {
    id(name).to_string()
}

/// Every loopback subscription is encrypted to its browser: payloads name the id.
fn sealed(id: &str) -> message::About<'_> {
    message::About::new(id, None, true)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn paths(requests: &[Recorded]) -> Vec<&str> {
    requests.iter().map(|r| r.path.as_str()).collect()
}

/// A subscription of the virtual service: new mail to `{path}`, reconnect pushes to
/// `{path}/reconnect` (clear payloads, so the id is not in them).
fn virtual_sub(name: &str, path: &str) -> Arc<PushSubscription> {
    virtual_sub_at(name, "push.example.net", path)
}

fn virtual_sub_at(name: &str, host: &str, path: &str) -> Arc<PushSubscription> {
    let url = |p: &str| PushTarget::web_push_unencrypted(&format!("https://{host}{p}")).unwrap();
    let reconnect = url(&format!("{path}/reconnect"));
    PushSubscription::new(id(name), url(path), reconnect, 1_000)
}

fn reconnect(sub: &Arc<PushSubscription>, reason: &'static str) -> PushJob {
    PushJob::Reconnect {
        push: Arc::clone(sub),
        reason,
    }
}

fn server_error() -> Outcome {
    Outcome::Retry { status: Some(500) }
}

fn delivered(name: &str, kind: Kind) -> Report {
    Report::Delivered {
        subscription: id(name),
        kind,
    }
}

// ---- loopback: real requests ----

/// A sink, the rules with real senders to it, and one browser whose keys every
/// subscription uses.
struct Harness {
    sink: Sink,
    live: Live,
    browser: Subscriber,
}

impl Harness {
    fn start(config: DeliveryConfig) -> Self {
        let sink = Sink::start();
        let sender = Sender::new(SenderConfig {
            use_env_proxy: false,
            timeout_ms: 5_000,
            ..SenderConfig::default()
        });
        Self {
            sink,
            live: Live::start(config, sender),
            browser: Subscriber::generate(),
        }
    }

    /// New mail goes to `{path}`, reconnect pushes to `{path}/reconnect`.
    fn subscription(&self, name: &str, path: &str) -> Arc<PushSubscription> {
        let new_mail = self.browser.target(&self.sink.url(path)).unwrap();
        let reconnect_url = self.sink.url(&format!("{path}/reconnect"));
        let reconnect = self.browser.target(&reconnect_url).unwrap();
        PushSubscription::new(id(name), new_mail, reconnect, unix_now())
    }

    fn json(&self, request: &Recorded) -> Value {
        let plain = self.browser.decrypt(&request.body).expect("decrypts");
        serde_json::from_slice(&plain).expect("JSON payload")
    }

    fn report(&mut self) -> Report {
        self.live.report(WAIT).expect("a report in time")
    }

    fn no_more_reports(&mut self) {
        assert_eq!(self.live.report(MS(100)), None);
    }

    /// Runs the rules until the sink has `n` requests (at most `WAIT`).
    fn requests(&mut self, n: usize) -> Vec<Recorded> {
        let until = Instant::now() + WAIT;
        while self.sink.requests().len() < n && Instant::now() < until {
            self.live.run_for(MS(5));
        }
        self.sink.requests()
    }
}

#[test]
fn new_mail_is_delivered_encrypted_and_timed() {
    let mut h = Harness::start(config());
    let sub = h.subscription("sub-1", "/a");
    let event_at = Instant::now();
    h.live.new_mail(&sub, 3, event_at);

    let requests = h.requests(1);
    assert_eq!(paths(&requests), ["/a"]);
    let r = &requests[0];
    assert_eq!(
        h.json(r),
        json(&message::new_mail(sealed(&hex("sub-1")), "INBOX", 3))
    );
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("topic"), Some(sub.topic().as_str()));
    assert_eq!(r.header("urgency"), Some("high"));
    assert_eq!(h.report(), delivered("sub-1", Kind::NewMail));
    let stats = h.live.stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.queue_depth),
        (1, 0, 0)
    );
    assert_eq!(stats.latency.count, 1);
    assert!(stats.latency.p50_us > 0 && stats.latency.max_us < 1_000_000);
    assert_eq!(
        stats.exists_to_push.count(),
        1,
        "the first attempt's send is timed"
    );
    eprintln!(
        "event-to-push latency, one push on loopback: {} µs (arrival at sink {} µs)",
        stats.latency.max_us,
        (r.at - event_at).as_micros()
    );
}

#[test]
fn gone_endpoints_are_reported_and_not_retried() {
    let mut h = Harness::start(config());
    h.sink.set_status("/410", 410);
    h.sink.set_status("/404", 404);
    let a = h.subscription("a", "/410");
    let b = h.subscription("b", "/404");
    h.live.new_mail(&a, 1, Instant::now());
    h.live.new_mail(&b, 1, Instant::now());

    let mut gone = vec![h.report(), h.report()];
    gone.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        gone,
        [
            Report::Gone {
                subscription: id("a")
            },
            Report::Gone {
                subscription: id("b")
            }
        ]
    );
    h.no_more_reports();
    assert_eq!(h.sink.requests().len(), 2, "no retry");
    let stats = h.live.stats();
    assert_eq!((stats.gone, stats.failed, stats.retried), (2, 0, 0));
}

#[test]
fn too_large_is_retried_once_with_the_minimal_payload() {
    let mut h = Harness::start(config());
    h.sink.set_script("/big", &[413]);
    let sub = h.subscription("big", "/big");
    h.live.new_mail(&sub, 4, Instant::now());
    let requests = h.requests(2);
    assert_eq!(h.json(&requests[0])["exists"], 4);
    assert_eq!(
        h.json(&requests[1]),
        json(&minimal_payload(Kind::NewMail, sealed(&hex("big"))))
    );
    assert!(matches!(h.report(), Report::Delivered { .. }));

    // Still too large: give up after the one shrunk attempt.
    h.sink.set_status("/huge/reconnect", 413);
    let huge = h.subscription("huge", "/huge");
    h.live.reconnect(&huge, "auth_failed");
    assert_eq!(
        h.report(),
        Report::Failed {
            subscription: id("huge"),
            kind: Kind::Reconnect
        }
    );
    let huge_requests: Vec<_> = h
        .sink
        .requests()
        .into_iter()
        .filter(|r| r.path == "/huge/reconnect")
        .collect();
    assert_eq!(huge_requests.len(), 2);
    assert_eq!(
        h.json(&huge_requests[1]),
        json(&minimal_payload(Kind::Reconnect, sealed(&hex("huge"))))
    );
    let stats = h.live.stats();
    assert_eq!((stats.too_large, stats.delivered, stats.failed), (3, 1, 1));
}

#[test]
fn redirects_are_not_followed() {
    let mut h = Harness::start(config());
    h.sink.set_status("/moved", 301);
    let sub = h.subscription("moved", "/moved");
    h.live.new_mail(&sub, 1, Instant::now());
    assert_eq!(
        h.report(),
        Report::Failed {
            subscription: id("moved"),
            kind: Kind::NewMail
        }
    );
    h.no_more_reports();
    assert_eq!(paths(&h.sink.requests()), ["/moved"]);
    let stats = h.live.stats();
    assert_eq!((stats.redirect, stats.failed, stats.retried), (1, 1, 0));
}

#[test]
fn simple_push_versions_strictly_increase() {
    let mut h = Harness::start(DeliveryConfig {
        coalesce_window: MS(30),
        ..config()
    });
    let created = unix_now();
    let target = PushTarget::simple_push(&h.sink.url("/sp")).unwrap();
    let sub = PushSubscription::new(id("sp"), target.clone(), target, created);
    for i in 0..3 {
        h.live.new_mail(&sub, i, Instant::now());
        assert_eq!(h.requests(i as usize + 1).len(), i as usize + 1);
        // Past the window, so that each goes alone.
        h.live.run_for(MS(50));
    }
    let versions: Vec<u64> = h
        .sink
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.method, "PUT");
            let body = std::str::from_utf8(&r.body).unwrap();
            body.strip_prefix("version=").unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(versions.len(), 3);
    assert!(versions[0] > created, "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[test]
fn many_subscriptions_throughput() {
    const N: usize = 1_000;
    let mut h = Harness::start(DeliveryConfig {
        threads: 8,
        ..config()
    });
    let subs: Vec<_> = (0..N)
        .map(|i| h.subscription(&format!("t{i}"), &format!("/t/{i}")))
        .collect();
    let start = Instant::now();
    for sub in &subs {
        h.live.new_mail(sub, 1, Instant::now());
    }
    let mut reports = 0;
    while reports < N {
        match h.live.report(Duration::from_secs(60)) {
            Some(Report::Delivered { .. }) => reports += 1,
            other => panic!("{other:?} after {reports} reports"),
        }
    }
    let took = start.elapsed();
    assert_eq!(h.sink.requests().len(), N);
    let stats = h.live.stats();
    assert_eq!(stats.delivered, N as u64);
    eprintln!(
        "{N} encrypted pushes, 8 threads: {:.0} pushes/s; latency p50 {} µs p99 {} µs max {} µs; {} connections",
        N as f64 / took.as_secs_f64(),
        stats.latency.p50_us,
        stats.latency.p99_us,
        stats.latency.max_us,
        h.sink.connections()
    );
}

/// A verification push goes alone to its endpoint, with no topic (it must not replace
/// new mail at the push service, nor be replaced), carries its code, and is reported
/// only when the endpoint is gone: a delivered one reported as `Reconnect` would read as
/// a settled reconnect push and drop the journal record.
#[test]
fn a_verification_push_carries_its_code_and_reports_only_gone() {
    use server::verification::Code;
    let mut h = Harness::start(config());
    let sub = h.subscription("verify", "/v");
    let code = Code::from_random([7; 16]).encode();
    for endpoint in [Kind::NewMail, Kind::Reconnect] {
        h.live.take(PushJob::Verify {
            push: Arc::clone(&sub),
            endpoint,
            code: code.clone(),
        });
    }
    let pushes = h.requests(2);
    assert_eq!(pushes.len(), 2);
    let mut paths: Vec<&str> = pushes.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/v", "/v/reconnect"]);
    for push in &pushes {
        assert_eq!(push.header("topic"), None, "no topic");
        assert_eq!(
            h.json(push),
            serde_json::json!({"type": "verify", "subscription": hex("verify"), "code": code.as_str()})
        );
    }
    h.no_more_reports();
    assert!(!format!("{code:?}").contains(code.as_str()), "redacted");

    h.sink.set_status("/gone", 410);
    let gone = h.subscription("gone", "/gone");
    h.live.take(PushJob::Verify {
        push: gone,
        endpoint: Kind::NewMail,
        code,
    });
    assert_eq!(
        h.report(),
        Report::Gone {
            subscription: id("gone")
        }
    );
    h.no_more_reports();
}

// ---- virtual time: the timing rules ----

#[test]
fn a_burst_becomes_two_pushes() {
    let mut v = Virtual::new(config());
    let sub = virtual_sub("burst", "/burst");
    for exists in 1..=20 {
        v.take(new_mail(&sub, exists, v.now));
        v.advance(Duration::from_micros(2_500));
    }
    v.settle();
    let sent = v.sent_to("/burst");
    assert_eq!(sent.len(), 2, "exactly two pushes");
    let (first, second) = (&sent[0], &sent[1]);
    assert_eq!(first.at, v.start, "the first at once");
    // The first was answered after 1 ms; the window runs from the answer.
    assert_eq!(
        second.at - first.at,
        MS(1_001),
        "the second when the window ends"
    );
    assert_eq!(first.payload["exists"], 1);
    assert_eq!(second.payload["exists"], 20);
    let stats = v.stats();
    assert_eq!((stats.delivered, stats.coalesced), (2, 18));
    // The merged push counts from its oldest event (2.5 ms after the start): answered
    // at 1,002 ms, 999.5 ms later; the first 1 ms after its event.
    assert_eq!(stats.latency.sum_us, 1_000 + 999_500, "{:?}", stats.latency);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let mut v = Virtual::new(config());
    v.script("/flaky", &[server_error(), server_error()]);
    let sub = virtual_sub("flaky", "/flaky");
    v.take(new_mail(&sub, 9, v.now));
    v.settle();
    let sent = v.sent_to("/flaky");
    let outcomes: Vec<Outcome> = sent.iter().map(|s| s.outcome).collect();
    assert_eq!(
        outcomes,
        [server_error(), server_error(), Outcome::Delivered]
    );
    for s in &sent {
        assert_eq!(s.payload["exists"], 9);
    }
    // Backoff base 10 ms: the first retry waits 5–10 ms, the second 10–20 (after the
    // 1 ms answer).
    let gap = |i: usize| sent[i].at - sent[i - 1].at - MS(1);
    assert!((MS(5)..=MS(10)).contains(&gap(1)), "{:?}", gap(1));
    assert!((MS(10)..=MS(20)).contains(&gap(2)), "{:?}", gap(2));
    assert_eq!(
        v.reports.pop_front(),
        Some(delivered("flaky", Kind::NewMail))
    );
    let stats = v.stats();
    assert_eq!((stats.retried, stats.delivered, stats.failed), (2, 1, 0));
}

#[test]
fn server_errors_give_up_after_the_budget() {
    let mut v = Virtual::new(DeliveryConfig {
        retry_budget: MS(150),
        ..config()
    });
    v.answer("/down", Outcome::Retry { status: Some(503) });
    let sub = virtual_sub("down", "/down");
    v.take(new_mail(&sub, 1, v.now));
    v.settle();
    assert_eq!(
        v.reports.pop_front(),
        Some(Report::Failed {
            subscription: id("down"),
            kind: Kind::NewMail
        })
    );
    let attempts = v.sent.len();
    assert!((2..=10).contains(&attempts), "{attempts}");
    let last = v.sent.last().unwrap().at - v.start;
    assert!(last <= MS(150), "no retry starts past the budget: {last:?}");
    let stats = v.stats();
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.retried, attempts as u64 - 1);
}

/// A 429 holds the endpoint that answered it for its `Retry-After`, and nothing else:
/// another endpoint of the same push service goes at once. (Until issue 9 a 429 held the
/// whole origin, so one endpoint could pause every user of a shared push service; the
/// UnifiedPush server rules treat 429 per endpoint.)
#[test]
fn rate_limit_holds_only_that_endpoint() {
    let mut v = Virtual::new(config());
    let retry_after = Duration::from_secs(1);
    v.script("/limited", &[Outcome::RateLimited { retry_after }]);
    let limited = virtual_sub("limited", "/limited");
    let other = virtual_sub("other", "/other");
    let third = virtual_sub("third", "/third");
    v.take(new_mail(&limited, 1, v.now));
    v.advance(MS(50));
    // More work for the same origin, and for the limited subscription's other endpoint
    // (its reconnect one), after the 429.
    v.take(new_mail(&other, 1, v.now));
    v.take(reconnect(&third, "auth_failed"));
    let asked = v.now;
    v.settle();
    let mut unheld: Vec<_> = v.sent[1..3].iter().map(|s| s.path.as_str()).collect();
    unheld.sort_unstable();
    assert_eq!(unheld, ["/other", "/third/reconnect"]);
    assert!(v.sent[1..3].iter().all(|s| s.at == asked), "not held");
    // The limited endpoint itself waits out its Retry-After, from the 429's answer.
    assert_eq!(v.sent.len(), 4, "{:?}", v.paths());
    assert_eq!(v.sent[3].path, "/limited");
    assert_eq!(v.sent[3].at - v.start, MS(1) + retry_after);
    assert_eq!(v.sent[3].outcome, Outcome::Delivered);
    assert_eq!(v.reports.len(), 3);
    let stats = v.stats();
    assert_eq!((stats.rate_limited, stats.delivered), (1, 3));
}

/// A 429 on a reconnect push holds its endpoint too, and the push goes when the hold
/// ends; new mail waiting behind the hold keeps merging meanwhile.
#[test]
fn a_held_endpoint_keeps_merging_new_mail_until_the_hold_ends() {
    let mut v = Virtual::new(config());
    // Within the retry budget (5 s), so the push is retried, not given up.
    let retry_after = Duration::from_secs(3);
    v.script("/held", &[Outcome::RateLimited { retry_after }]);
    let sub = virtual_sub("held", "/held");
    v.take(new_mail(&sub, 1, v.now));
    for exists in 2..=5 {
        v.advance(MS(500));
        v.take(new_mail(&sub, exists, v.now));
    }
    v.settle();
    let sent = v.sent_to("/held");
    assert_eq!(sent.len(), 2, "{:?}", v.paths());
    assert_eq!(sent[1].at - sent[0].at, MS(1) + retry_after);
    assert_eq!(sent[1].payload["exists"], 5, "the newest count");
    assert_eq!(v.stats().coalesced, 4, "merged into the retried push");
}

/// No origin gets more than `permits_per_origin` requests at once; the jobs past it wait
/// without a sender, which another origin's push then gets at once.
#[test]
fn one_origin_gets_at_most_its_permits() {
    let mut v = Virtual::new(DeliveryConfig {
        threads: 4,
        permits_per_origin: 2,
        ..config()
    });
    v.delay("/slow", MS(400));
    for i in 0..6 {
        let sub = virtual_sub(&format!("slow{i}"), "/slow");
        v.take(new_mail(&sub, 1, v.now));
    }
    v.advance(MS(100));
    let fast = virtual_sub_at("fast", "other.example.net", "/fast");
    let asked = v.now;
    v.take(new_mail(&fast, 1, asked));
    assert_eq!(
        v.sent_to("/fast")[0].at,
        asked,
        "the other origin waits for nothing"
    );
    v.settle();
    let slow = v.sent_to("/slow");
    assert_eq!(slow.len(), 6);
    // Two at a time: the next pair goes when the previous one is answered.
    for (pair, requests) in slow.chunks(2).enumerate() {
        assert_eq!(requests[0].at, requests[1].at, "a pair goes together");
        assert_eq!(requests[0].at - v.start, MS(400) * pair as u32);
    }
    assert_eq!(v.open_max["/slow"], 2, "never more than two at once");
}

#[test]
fn reconnect_goes_out_and_drops_pending_new_mail() {
    let mut v = Virtual::new(config());
    let sub = virtual_sub("rc", "/rc");
    v.take(new_mail(&sub, 1, v.now));
    v.advance(MS(10));
    // Within the window: this one waits, coalesced.
    v.take(new_mail(&sub, 2, v.now));
    let asked = v.now;
    v.take(reconnect(&sub, "auth_failed"));
    v.settle();
    assert_eq!(
        v.paths(),
        ["/rc", "/rc/reconnect"],
        "the pending mail never goes"
    );
    assert_eq!(v.sent[1].at, asked, "not held by the window");
    assert_eq!(v.sent[1].kind, Kind::Reconnect);
    assert_eq!(
        v.sent[1].payload,
        json(&message::reconnect(
            message::About::new(&hex("rc"), None, false),
            "auth_failed"
        ))
    );
    let stats = v.stats();
    assert_eq!(
        (stats.delivered, stats.dropped, stats.queue_depth),
        (2, 1, 0)
    );
}

#[test]
fn forget_drops_pending_new_mail() {
    let mut v = Virtual::new(DeliveryConfig {
        coalesce_window: MS(300),
        ..config()
    });
    let sub = virtual_sub("gone-user", "/f");
    v.take(new_mail(&sub, 1, v.now));
    v.advance(MS(10));
    v.take(new_mail(&sub, 2, v.now));
    v.take(PushJob::Forget {
        subscription: id("gone-user"),
    });
    v.settle();
    assert_eq!(v.sent.len(), 1);
    let stats = v.stats();
    assert_eq!((stats.dropped, stats.queue_depth), (1, 0));
}

/// A new-mail attempt in flight when its subscription is forgotten is not retried: the
/// 5xx answer finds a stale slot.
#[test]
fn a_forgotten_subscription_is_not_retried() {
    let mut v = Virtual::new(config());
    v.answer("/f", server_error());
    v.delay("/f", MS(50));
    let sub = virtual_sub("f", "/f");
    v.take(new_mail(&sub, 1, v.now));
    v.advance(MS(10));
    v.take(PushJob::Forget {
        subscription: id("f"),
    });
    v.settle();
    assert_eq!(v.sent.len(), 1, "no retry after forget");
    let stats = v.stats();
    assert_eq!((stats.dropped, stats.queue_depth), (1, 0));
    assert!(v.reports.is_empty());
}

/// One offer past `queue_max` is handed back, whole, and counted; offered again once a
/// job has ended, it goes out.
#[test]
fn an_offer_one_past_the_queue_bound_is_handed_back() {
    let mut v = Virtual::new(DeliveryConfig {
        queue_max: 2,
        ..config()
    });
    v.delay("/slow/reconnect", MS(500));
    let subs: Vec<_> = (0..3)
        .map(|i| virtual_sub(&format!("offer{i}"), "/slow"))
        .collect();
    v.take(reconnect(&subs[0], "auth_failed"));
    v.take(reconnect(&subs[1], "auth_failed"));
    let back = v
        .offer(reconnect(&subs[2], "auth_failed"))
        .expect_err("one past the bound");
    assert!(matches!(&back, PushJob::Reconnect { push, .. } if push.id == id("offer2")));
    let stats = v.stats();
    assert_eq!(
        (stats.offers_refused, stats.queue_depth),
        (1, 2),
        "{stats:?}"
    );
    assert!(stats
        .prometheus()
        .contains("imap_push_delivery_offers_refused_total 1"));
    // A Forget takes no room.
    assert!(v
        .offer(PushJob::Forget {
            subscription: id("x")
        })
        .is_ok());
    v.advance(MS(500));
    assert_eq!(v.reports.len(), 2);
    assert!(v.offer(back).is_ok(), "room again");
    v.settle();
    assert_eq!(v.sent.len(), 3);
    assert_eq!(v.stats().delivered, 3);
}

/// With the queue full, a caller that keeps what is handed back and offers it again
/// loses nothing, and the queue never holds more than its bound.
#[test]
fn a_full_queue_loses_nothing_offered_again() {
    let mut v = Virtual::new(DeliveryConfig {
        queue_max: 2,
        ..config()
    });
    v.delay("/slow", MS(300));
    let mut waiting: Vec<PushJob> = (0..6)
        .map(|i| new_mail(&virtual_sub(&format!("bp{i}"), "/slow"), 1, v.now))
        .collect();
    let mut refused = 0;
    while !waiting.is_empty() {
        let job = waiting.remove(0);
        if let Err(job) = v.offer(job) {
            refused += 1;
            waiting.insert(0, job);
            v.advance(MS(10));
        }
        assert!(v.stats().queue_depth <= 2);
    }
    v.settle();
    assert_eq!(v.sent.len(), 6);
    assert_eq!(v.reports.len(), 6);
    let stats = v.stats();
    assert_eq!((stats.delivered, stats.offers_refused), (6, refused));
    assert!(refused >= 2, "{refused}");
}

#[test]
fn shutdown_flushes_reconnects_first() {
    let mut v = Virtual::new(DeliveryConfig {
        threads: 1,
        ..config()
    });
    v.delay("/s0", MS(100));
    for i in 0..3 {
        let sub = virtual_sub(&format!("s{i}"), &format!("/s{i}"));
        v.take(new_mail(&sub, 1, v.now));
    }
    // Other subscriptions: a reconnect would drop its own pending new mail.
    for i in 0..3 {
        let sub = virtual_sub(&format!("r{i}"), &format!("/r{i}"));
        v.take(reconnect(&sub, "shutdown"));
    }
    let stats = v.shutdown(Duration::from_secs(5));
    assert_eq!((stats.delivered, stats.undelivered), (6, 0));
    assert_eq!(
        v.paths(),
        [
            "/s0",
            "/r0/reconnect",
            "/r1/reconnect",
            "/r2/reconnect",
            "/s1",
            "/s2"
        ],
        "the first was in flight; reconnects jump the queue"
    );
    assert_eq!(v.elapsed(), MS(105), "one sender: 100 ms, then 1 ms each");
}

#[test]
fn shutdown_sends_coalesced_mail_without_waiting_the_window() {
    let mut v = Virtual::new(DeliveryConfig {
        coalesce_window: Duration::from_secs(30),
        ..config()
    });
    let sub = virtual_sub("w", "/w");
    v.take(new_mail(&sub, 1, v.now));
    v.advance(MS(10));
    v.take(new_mail(&sub, 2, v.now));
    let stats = v.shutdown(Duration::from_secs(5));
    assert_eq!((stats.delivered, stats.undelivered), (2, 0));
    assert_eq!(v.sent[1].at - v.start, MS(10), "at once");
    assert_eq!(v.sent[1].payload["exists"], 2);
}

#[test]
fn shutdown_counts_what_the_grace_did_not_cover() {
    let mut v = Virtual::new(DeliveryConfig {
        threads: 1,
        ..config()
    });
    v.delay("/late/reconnect", MS(400));
    let sub = virtual_sub("late", "/late");
    for _ in 0..4 {
        v.take(reconnect(&sub, "shutdown"));
    }
    let stats = v.shutdown(MS(500));
    assert_eq!(v.elapsed(), MS(500), "bounded by the grace");
    // One answered at 400 ms, one in flight at 500 ms, two never sent.
    assert_eq!((stats.delivered, stats.undelivered), (1, 3), "{stats:?}");
}
