//! The push pool against a fake push service on loopback
//! (`push::testing::Sink`), decrypting bodies with `push::testing::Subscriber`.
//!
//! Every wait is bounded; timings are loose enough for a loaded machine but
//! tight enough to tell "at once" from "after the window".

use crossbeam_channel::Receiver;
use push::testing::{Recorded, Sink, Subscriber};
use push::{message, Backoff, Kind, PushTarget, Sender, SenderConfig};
use serde_json::Value;
use server::delivery::{
    minimal_payload, Delivery, DeliveryConfig, PushJob, PushSubscription, Report,
};
use server::id::SubscriptionId;
use std::sync::Arc;
use std::thread;
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

/// A sink, a pool sending to it, and one browser whose keys every
/// subscription uses.
struct Harness {
    sink: Sink,
    delivery: Delivery,
    reports: Receiver<Report>,
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
        let (tx, reports) = crossbeam_channel::unbounded();
        let delivery = Delivery::start(config, Arc::new(sender), tx);
        Self {
            sink,
            delivery,
            reports,
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

    fn report(&self) -> Report {
        self.reports.recv_timeout(WAIT).expect("a report in time")
    }

    fn no_more_reports(&self) {
        assert_eq!(self.reports.recv_timeout(MS(100)).ok(), None);
    }
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

/// Every harness subscription is encrypted to its browser: payloads name the id.
fn sealed(id: &str) -> message::About<'_> {
    message::About::new(id, None, true)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn paths(requests: &[Recorded]) -> Vec<&str> {
    requests.iter().map(|r| r.path.as_str()).collect()
}

#[test]
fn new_mail_is_delivered_encrypted_and_timed() {
    let h = Harness::start(config());
    let sub = h.subscription("sub-1", "/a");
    let event_at = Instant::now();
    h.delivery.new_mail(&sub, "INBOX", 3, event_at);

    let requests = h.sink.wait_for(1, WAIT);
    assert_eq!(paths(&requests), ["/a"]);
    let r = &requests[0];
    assert_eq!(
        h.json(r),
        json(&message::new_mail(sealed(&hex("sub-1")), "INBOX", 3))
    );
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("topic"), Some(sub.topic().as_str()));
    assert_eq!(r.header("urgency"), Some("high"));
    assert_eq!(
        h.report(),
        Report::Delivered {
            subscription: id("sub-1"),
            kind: Kind::NewMail
        }
    );
    let stats = h.delivery.stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.queue_depth),
        (1, 0, 0)
    );
    assert_eq!(stats.latency.count, 1);
    assert!(stats.latency.p50_us > 0 && stats.latency.max_us < 1_000_000);
    eprintln!(
        "event-to-push latency, one push on loopback: {} µs (arrival at sink {} µs)",
        stats.latency.max_us,
        (r.at - event_at).as_micros()
    );
}

#[test]
fn a_burst_becomes_two_pushes() {
    let h = Harness::start(config());
    let sub = h.subscription("burst", "/burst");
    let start = Instant::now();
    for exists in 1..=20 {
        h.delivery.new_mail(&sub, "INBOX", exists, Instant::now());
        thread::sleep(Duration::from_micros(2_500));
    }
    assert!(start.elapsed() < MS(500));

    let requests = h.sink.wait_for(2, WAIT);
    thread::sleep(MS(300));
    let requests_later = h.sink.requests();
    assert_eq!(requests_later.len(), 2, "exactly two pushes");
    let (first, second) = (&requests[0], &requests[1]);
    assert!(
        first.at - start < MS(200),
        "first at once: {:?}",
        first.at - start
    );
    let gap = second.at - first.at;
    assert!(
        gap >= MS(950) && gap < MS(1_600),
        "second after the window: {gap:?}"
    );
    assert_eq!(h.json(first)["exists"], 1);
    assert_eq!(h.json(second)["exists"], 20);
    let stats = h.delivery.stats();
    assert_eq!((stats.delivered, stats.coalesced), (2, 18));
    // The merged push counts from its oldest event (~ the window).
    assert!(stats.latency.max_us >= 900_000, "{:?}", stats.latency);
}

#[test]
fn gone_endpoints_are_reported_and_not_retried() {
    let h = Harness::start(config());
    h.sink.set_status("/410", 410);
    h.sink.set_status("/404", 404);
    let a = h.subscription("a", "/410");
    let b = h.subscription("b", "/404");
    h.delivery.new_mail(&a, "INBOX", 1, Instant::now());
    h.delivery.new_mail(&b, "INBOX", 1, Instant::now());

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
    let stats = h.delivery.stats();
    assert_eq!((stats.gone, stats.failed, stats.retried), (2, 0, 0));
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let h = Harness::start(config());
    h.sink.set_script("/flaky", &[500, 500]);
    let sub = h.subscription("flaky", "/flaky");
    h.delivery.new_mail(&sub, "INBOX", 9, Instant::now());

    let requests = h.sink.wait_for(3, WAIT);
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 201]);
    for r in &requests {
        assert_eq!(h.json(r)["exists"], 9);
    }
    // Backoff base 10 ms: the first retry waits 5–10 ms, the second 10–20.
    assert!(requests[1].at - requests[0].at >= MS(5));
    assert!(requests[2].at - requests[1].at >= MS(10));
    assert!(matches!(h.report(), Report::Delivered { .. }));
    let stats = h.delivery.stats();
    assert_eq!((stats.retried, stats.delivered, stats.failed), (2, 1, 0));
}

#[test]
fn server_errors_give_up_after_the_budget() {
    let h = Harness::start(DeliveryConfig {
        retry_budget: MS(150),
        ..config()
    });
    h.sink.set_status("/down", 503);
    let sub = h.subscription("down", "/down");
    h.delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    assert!(matches!(h.report(), Report::Failed { .. }));
    let attempts = h.sink.requests().len();
    assert!((2..=10).contains(&attempts), "{attempts}");
    let stats = h.delivery.stats();
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.retried, attempts as u64 - 1);
}

/// A 429 holds the endpoint that answered it for its `Retry-After`, and nothing else:
/// another endpoint of the same push service goes at once. (Until issue 9 a 429 held the
/// whole origin, so one endpoint could pause every user of a shared push service; the
/// UnifiedPush server rules treat 429 per endpoint.)
#[test]
fn rate_limit_holds_only_that_endpoint() {
    let h = Harness::start(config());
    h.sink.set_script("/limited", &[429]);
    h.sink.set_retry_after("/limited", 1);
    let limited = h.subscription("limited", "/limited");
    let other = h.subscription("other", "/other");
    let third = h.subscription("third", "/third");
    h.delivery.new_mail(&limited, "INBOX", 1, Instant::now());
    let first = h.sink.wait_for(1, WAIT)[0].clone();
    assert_eq!(first.status, 429);
    // Give the pool a moment to read the 429, then offer more work for the same origin
    // and for the limited subscription's other endpoint (its reconnect one).
    thread::sleep(MS(50));
    h.delivery.new_mail(&other, "INBOX", 1, Instant::now());
    h.delivery.reconnect(&third, "auth_failed");

    let requests = h.sink.wait_for(3, WAIT);
    let mut unheld = paths(&requests[1..3]);
    unheld.sort_unstable();
    assert_eq!(unheld, ["/other", "/third/reconnect"]);
    for r in &requests[1..3] {
        let after = r.at - first.at;
        assert!(after < MS(500), "{} held {after:?} after the 429", r.path);
        assert_eq!(r.status, 201);
    }
    // The limited endpoint itself waits out its Retry-After.
    let requests = h.sink.wait_for(4, WAIT);
    assert_eq!(requests.len(), 4, "{:?}", paths(&requests));
    assert_eq!(requests[3].path, "/limited");
    let after = requests[3].at - first.at;
    assert!(after >= MS(950), "retried {after:?} after the 429");
    assert_eq!(requests[3].status, 201);
    for _ in 0..3 {
        assert!(matches!(h.report(), Report::Delivered { .. }));
    }
    let stats = h.delivery.stats();
    assert_eq!((stats.rate_limited, stats.delivered), (1, 3));
}

/// No origin gets more than `permits_per_origin` requests at once; the jobs past it wait
/// without a worker, which another origin's push then gets at once.
#[test]
fn one_origin_gets_at_most_its_permits() {
    let h = Harness::start(DeliveryConfig {
        threads: 4,
        permits_per_origin: 2,
        ..config()
    });
    let other_sink = Sink::start();
    h.sink.set_delay("/slow", MS(400));
    let slow: Vec<_> = (0..6)
        .map(|i| h.subscription(&format!("slow{i}"), "/slow"))
        .collect();
    for sub in &slow {
        h.delivery.new_mail(sub, "INBOX", 1, Instant::now());
    }
    thread::sleep(MS(100));
    let target = h.browser.target(&other_sink.url("/fast")).unwrap();
    let fast = PushSubscription::new(id("fast"), target.clone(), target, unix_now());
    let asked = Instant::now();
    h.delivery.new_mail(&fast, "INBOX", 1, asked);
    let arrived = other_sink.wait_for(1, WAIT)[0].at - asked;
    assert!(arrived < MS(200), "the other origin waited {arrived:?}");

    let requests = h.sink.wait_for(6, WAIT);
    assert_eq!(requests.len(), 6);
    // Two at a time: the third arrives only when the first two have been answered.
    for pair in 0..3 {
        let (a, b) = (&requests[2 * pair], &requests[2 * pair + 1]);
        assert!(b.at - a.at < MS(200), "a pair goes together");
        if pair > 0 {
            let gap = a.at - requests[2 * pair - 1].at;
            assert!(gap >= MS(350), "pair {pair} waited for a permit: {gap:?}");
        }
    }
    assert_eq!(h.sink.connections(), 2, "never more than two at once");
}

#[test]
fn too_large_is_retried_once_with_the_minimal_payload() {
    let h = Harness::start(config());
    h.sink.set_script("/big", &[413]);
    let sub = h.subscription("big", "/big");
    h.delivery.new_mail(&sub, "INBOX", 4, Instant::now());
    let requests = h.sink.wait_for(2, WAIT);
    assert_eq!(h.json(&requests[0])["exists"], 4);
    assert_eq!(
        h.json(&requests[1]),
        json(&minimal_payload(Kind::NewMail, sealed(&hex("big"))))
    );
    assert!(matches!(h.report(), Report::Delivered { .. }));

    // Still too large: give up after the one shrunk attempt.
    h.sink.set_status("/huge/reconnect", 413);
    let huge = h.subscription("huge", "/huge");
    h.delivery.reconnect(&huge, "auth_failed");
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
    let stats = h.delivery.stats();
    assert_eq!((stats.too_large, stats.delivered, stats.failed), (3, 1, 1));
}

#[test]
fn redirects_are_not_followed() {
    let h = Harness::start(config());
    h.sink.set_status("/moved", 301);
    let sub = h.subscription("moved", "/moved");
    h.delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    assert_eq!(
        h.report(),
        Report::Failed {
            subscription: id("moved"),
            kind: Kind::NewMail
        }
    );
    thread::sleep(MS(100));
    assert_eq!(paths(&h.sink.requests()), ["/moved"]);
    let stats = h.delivery.stats();
    assert_eq!((stats.redirect, stats.failed, stats.retried), (1, 1, 0));
}

#[test]
fn simple_push_versions_strictly_increase() {
    let h = Harness::start(DeliveryConfig {
        coalesce_window: MS(30),
        ..config()
    });
    let created = unix_now();
    let target = PushTarget::simple_push(&h.sink.url("/sp")).unwrap();
    let sub = PushSubscription::new(id("sp"), target.clone(), target, created);
    for i in 0..3 {
        h.delivery.new_mail(&sub, "INBOX", i, Instant::now());
        assert_eq!(h.sink.wait_for(i as usize + 1, WAIT).len(), i as usize + 1);
        thread::sleep(MS(50));
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
fn reconnect_goes_out_and_drops_pending_new_mail() {
    let h = Harness::start(config());
    let sub = h.subscription("rc", "/rc");
    h.delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    h.sink.wait_for(1, WAIT);
    // Within the window: this one waits, coalesced.
    h.delivery.new_mail(&sub, "INBOX", 2, Instant::now());
    let asked = Instant::now();
    h.delivery.reconnect(&sub, "auth_failed");

    let requests = h.sink.wait_for(2, WAIT);
    assert_eq!(paths(&requests), ["/rc", "/rc/reconnect"]);
    assert!(requests[1].at - asked < MS(500), "not held by the window");
    assert_eq!(
        h.json(&requests[1]),
        json(&message::reconnect(sealed(&hex("rc")), "auth_failed"))
    );
    assert_eq!(requests[1].header("topic"), None);
    // Past the window: the pending new mail never goes.
    thread::sleep(MS(1_300));
    assert_eq!(h.sink.requests().len(), 2);
    let stats = h.delivery.stats();
    assert_eq!(
        (stats.delivered, stats.dropped, stats.queue_depth),
        (2, 1, 0)
    );
}

#[test]
fn forget_drops_pending_new_mail() {
    let h = Harness::start(DeliveryConfig {
        coalesce_window: MS(300),
        ..config()
    });
    let sub = h.subscription("gone-user", "/f");
    h.delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    h.sink.wait_for(1, WAIT);
    h.delivery.new_mail(&sub, "INBOX", 2, Instant::now());
    h.delivery.forget(id("gone-user"));
    thread::sleep(MS(500));
    assert_eq!(h.sink.requests().len(), 1);
    let stats = h.delivery.stats();
    assert_eq!((stats.dropped, stats.queue_depth), (1, 0));
}

/// The owner's way in: one offer past `queue_max` is handed back at once, whole, and
/// counted; offered again once a job has ended, it goes out.
#[test]
fn an_offer_one_past_the_queue_bound_is_handed_back_at_once() {
    let h = Harness::start(DeliveryConfig {
        queue_max: 2,
        ..config()
    });
    h.sink.set_delay("/slow", MS(500));
    let subs: Vec<_> = (0..3)
        .map(|i| h.subscription(&format!("offer{i}"), "/slow"))
        .collect();
    let reconnect = |i: usize| PushJob::Reconnect {
        push: Arc::clone(&subs[i]),
        reason: "auth_failed",
    };
    assert!(h.delivery.offer(reconnect(0)).is_ok());
    assert!(h.delivery.offer(reconnect(1)).is_ok());
    let start = Instant::now();
    let back = h
        .delivery
        .offer(reconnect(2))
        .expect_err("one past the bound");
    assert!(
        start.elapsed() < MS(100),
        "not waited for: {:?}",
        start.elapsed()
    );
    assert!(matches!(&back, PushJob::Reconnect { push, .. } if push.id == id("offer2")));
    let stats = h.delivery.stats();
    assert_eq!(
        (stats.offers_refused, stats.queue_depth),
        (1, 2),
        "{stats:?}"
    );
    assert!(stats
        .prometheus()
        .contains("imap_push_delivery_offers_refused_total 1"));
    assert!(matches!(h.report(), Report::Delivered { .. }));
    assert!(h.delivery.offer(back).is_ok(), "room again");
    assert!(matches!(h.report(), Report::Delivered { .. }));
    assert!(matches!(h.report(), Report::Delivered { .. }));
    assert_eq!(h.sink.wait_for(3, WAIT).len(), 3);
}

#[test]
fn a_full_queue_blocks_callers_but_loses_nothing() {
    let h = Harness::start(DeliveryConfig {
        queue_max: 2,
        ..config()
    });
    h.sink.set_delay("/slow", MS(300));
    let subs: Vec<_> = (0..6)
        .map(|i| h.subscription(&format!("bp{i}"), "/slow"))
        .collect();
    let mut waits = Vec::new();
    for sub in &subs {
        let start = Instant::now();
        h.delivery.new_mail(sub, "INBOX", 1, Instant::now());
        waits.push(start.elapsed());
        assert!(h.delivery.stats().queue_depth <= 2);
    }
    assert!(waits[..2].iter().all(|w| *w < MS(100)), "{waits:?}");
    assert!(waits[2] >= MS(200), "third call blocked: {waits:?}");
    let requests = h.sink.wait_for(6, WAIT);
    assert_eq!(requests.len(), 6);
    for _ in 0..6 {
        assert!(matches!(h.report(), Report::Delivered { .. }));
    }
    let stats = h.delivery.stats();
    assert!(stats.backpressure_waits >= 2, "{stats:?}");
    assert_eq!(stats.delivered, 6);
}

#[test]
fn shutdown_flushes_reconnects_first() {
    let h = Harness::start(DeliveryConfig {
        threads: 1,
        ..config()
    });
    h.sink.set_delay("/s0", MS(100));
    let subs: Vec<_> = (0..3)
        .map(|i| h.subscription(&format!("s{i}"), &format!("/s{i}")))
        .collect();
    for sub in &subs {
        h.delivery.new_mail(sub, "INBOX", 1, Instant::now());
    }
    // Other subscriptions: a reconnect would drop its own pending new mail.
    for i in 0..3 {
        let sub = h.subscription(&format!("r{i}"), &format!("/r{i}"));
        h.delivery.reconnect(&sub, "shutdown");
    }
    let Harness { sink, delivery, .. } = h;
    let start = Instant::now();
    let stats = delivery.shutdown(Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!((stats.delivered, stats.undelivered), (6, 0));
    assert_eq!(
        paths(&sink.requests()),
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
}

#[test]
fn shutdown_sends_coalesced_mail_without_waiting_the_window() {
    let h = Harness::start(DeliveryConfig {
        coalesce_window: Duration::from_secs(30),
        ..config()
    });
    let sub = h.subscription("w", "/w");
    h.delivery.new_mail(&sub, "INBOX", 1, Instant::now());
    h.sink.wait_for(1, WAIT);
    h.delivery.new_mail(&sub, "INBOX", 2, Instant::now());
    let Harness {
        sink,
        delivery,
        browser,
        ..
    } = h;
    let start = Instant::now();
    let stats = delivery.shutdown(Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!((stats.delivered, stats.undelivered), (2, 0));
    let last = sink.requests().pop().unwrap();
    let body: Value = serde_json::from_slice(&browser.decrypt(&last.body).unwrap()).unwrap();
    assert_eq!(body["exists"], 2);
}

#[test]
fn shutdown_counts_what_the_grace_did_not_cover() {
    let h = Harness::start(DeliveryConfig {
        threads: 1,
        ..config()
    });
    h.sink.set_delay("/late/reconnect", MS(400));
    let sub = h.subscription("late", "/late");
    for _ in 0..4 {
        h.delivery.reconnect(&sub, "shutdown");
    }
    let Harness { delivery, .. } = h;
    let start = Instant::now();
    let stats = delivery.shutdown(MS(500));
    let took = start.elapsed();
    assert!(took < MS(900), "bounded by the grace: {took:?}");
    assert_eq!(stats.delivered + stats.undelivered, 4, "{stats:?}");
    assert!(stats.undelivered >= 2, "{stats:?}");
}

#[test]
fn many_subscriptions_throughput() {
    const N: usize = 1_000;
    let h = Harness::start(DeliveryConfig {
        threads: 8,
        ..config()
    });
    let subs: Vec<_> = (0..N)
        .map(|i| h.subscription(&format!("t{i}"), &format!("/t/{i}")))
        .collect();
    let start = Instant::now();
    for sub in &subs {
        h.delivery.new_mail(sub, "INBOX", 1, Instant::now());
    }
    let requests = h.sink.wait_for(N, Duration::from_secs(60));
    let took = start.elapsed();
    assert_eq!(requests.len(), N);
    for _ in 0..N {
        assert!(matches!(h.report(), Report::Delivered { .. }));
    }
    let stats = h.delivery.stats();
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
    let h = Harness::start(config());
    let sub = h.subscription("verify", "/v");
    let code = Code::from_random([7; 16]).encode();
    for endpoint in [Kind::NewMail, Kind::Reconnect] {
        let job = PushJob::Verify {
            push: Arc::clone(&sub),
            endpoint,
            code: code.clone(),
        };
        assert!(h.delivery.offer(job).is_ok());
    }
    let pushes = h.sink.wait_for(2, WAIT);
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
    let job = PushJob::Verify {
        push: gone,
        endpoint: Kind::NewMail,
        code,
    };
    assert!(h.delivery.offer(job).is_ok());
    assert_eq!(
        h.report(),
        Report::Gone {
            subscription: id("gone")
        }
    );
    h.no_more_reports();
}
