//! A node's cluster rules in virtual time: the server's `Core` driven directly (as
//! server/tests/simulation.rs does), with a shared journal configured, so that "just
//! before" and "at" the fence are exact instants and no test sleeps. The SQL side of the
//! same rules runs against a real PostgreSQL in server/tests/journal_postgres.rs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use httpd::Method;
use server::config::Config;
use server::core::cluster::{CLAIM_BATCH_MAX, NODE_LOST};
use server::core::readiness::NotReady;
use server::core::{ApiRequest, Core, Input, Now, Output, PushJob, SessionEvent};
use server::delivery::Report;
use server::fd_budget::Budget;
use server::id::SubscriptionId;
use server::journal::{ClusterEvent, ClusterOp, Record, TargetRecord};
use server::node::JournalSetting;
use zeroize::Zeroizing;

type TestCore = Core<u64, u64>;
type Out = Vec<Output<u64, u64>>;

const HEARTBEAT_SECS: u64 = 1;
const LOST_AFTER_SECS: u64 = 5;
/// `server::node::fence_after(1 s, 5 s)`.
const FENCE_MS: u64 = 3_000;

fn config(journal: JournalSetting) -> Config {
    Config {
        journal,
        node_id: Some("n1".into()),
        heartbeat_secs: HEARTBEAT_SECS,
        node_lost_after_secs: LOST_AFTER_SECS,
        allow_private_destinations: true,
        allow_http_endpoints: true,
        ..Config::default()
    }
}

fn shared() -> JournalSetting {
    JournalSetting::try_from("postgres://app:pw@127.0.0.1:1/push".to_owned()).unwrap()
}

fn budget() -> Budget {
    Budget {
        nofile: 1024,
        api_connections: 64,
        sessions_capacity: 30,
        engine_sessions_max: 40,
    }
}

fn record(i: u8, verifying: bool) -> Record {
    let target = |path: &str| TargetRecord {
        endpoint: format!("https://push.example.net/{path}/{i}"),
        p256dh: None,
        auth: None,
        simplepush: false,
    };
    Record {
        id: SubscriptionId::from_bytes([i; 16]),
        key_hash: format!("{i:064x}"),
        new_mail: target("n"),
        reconnect: target("r"),
        created_unix: 1,
        tag: None,
        verifying,
    }
}

struct Driver {
    core: TestCore,
    base: Instant,
    ms: u64,
    next_random: u8,
    next_session: u64,
}

impl Driver {
    fn new(journal: JournalSetting) -> Driver {
        let base = Instant::now();
        let now = Now {
            instant: base,
            unix: 1_800_000_000,
        };
        let core = Core::new(config(journal), budget(), "key".into(), Vec::new(), now);
        let mut driver = Driver {
            core,
            base,
            ms: 0,
            next_random: 1,
            next_session: 100,
        };
        assert!(driver.outputs().is_empty());
        driver
    }

    fn now(&self) -> Now {
        Now {
            instant: self.base + Duration::from_millis(self.ms),
            unix: 1_800_000_000 + self.ms / 1000,
        }
    }

    fn outputs(&mut self) -> Out {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    fn input(&mut self, input: Input<u64, u64>) -> Out {
        self.next_random += 1;
        let random = [self.next_random; server::core::RANDOM_LEN];
        let now = self.now();
        self.core.handle(input, now, Some(random));
        self.outputs()
    }

    /// Moves the clock to `ms` and ticks there.
    fn tick_at(&mut self, ms: u64) -> Out {
        assert!(ms >= self.ms);
        self.ms = ms;
        self.input(Input::Tick)
    }

    fn request(&mut self, id: u64, method: Method, path: &str, body: &str) -> Out {
        self.input(Input::Request(ApiRequest {
            id,
            method,
            path: path.into(),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            authorization: None::<Zeroizing<String>>,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }))
    }

    /// Registers one subscription up to its 201: its id and session.
    fn register(&mut self, user: &str) -> (String, u64) {
        let body = serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": 993, "security": "tls",
                     "username": user, "password": "p"},
            "new_mail": {"endpoint": "https://push.example.net/new"},
            "reconnect": {"endpoint": "https://push.example.net/re"},
        });
        let out = self.request(1, Method::Post, "/v1/subscriptions", &body.to_string());
        let Some(Output::Watch { subscription, .. }) = out.into_iter().next() else {
            panic!("no watch");
        };
        let session = self.next_session;
        self.next_session += 1;
        self.input(Input::Watched {
            subscription,
            result: Ok(session),
        });
        let ready = engine::Ready {
            idle: true,
            notify: false,
            exists: 0,
            uidvalidity: 1,
            uidnext: 1,
        };
        let out = self.input(Input::Session(SessionEvent::Ready { session, ready }));
        let Some(Output::JournalInsert { ticket, .. }) = out.into_iter().next() else {
            panic!("no journal write");
        };
        let out = self.input(Input::JournalDurable { ticket, ok: true });
        let Some(Output::Respond { response, .. }) = out.first() else {
            panic!("no 201: {out:?}");
        };
        assert_eq!(response.status, 201);
        (subscription.to_string(), session)
    }
}

fn heartbeat_ticket(out: &Out) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::Cluster(ClusterOp::Heartbeat { ticket }) => Some(*ticket),
        _ => None,
    })
}

fn cluster_ops(out: &Out) -> Vec<ClusterOp> {
    out.iter()
        .filter_map(|o| match o {
            Output::Cluster(op) => Some(*op),
            _ => None,
        })
        .collect()
}

/// The reconnect pushes in `out`: subscription and reason.
fn reconnects(out: &Out) -> Vec<(SubscriptionId, &'static str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Push(PushJob::Reconnect { push, reason }) => Some((push.id, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_heartbeat_is_asked_every_interval_and_each_renewal_claims_lost_nodes() {
    let mut d = Driver::new(shared());
    assert_eq!(
        d.core.poll_timeout(),
        Some(d.base + Duration::from_secs(HEARTBEAT_SECS))
    );
    assert!(cluster_ops(&d.tick_at(999)).is_empty(), "not due yet");
    let out = d.tick_at(1_000);
    let ticket = heartbeat_ticket(&out).expect("a heartbeat at 1 s");
    let out = d.input(Input::Cluster(ClusterEvent::Heartbeat { ticket, ok: true }));
    assert_eq!(
        cluster_ops(&out),
        [ClusterOp::ClaimLost {
            max: CLAIM_BATCH_MAX
        }]
    );
    // Three rows of a lost node, one still verifying: two node_lost pushes, one each,
    // and the verifying one leaves the journal with nothing pushed.
    let records = vec![record(1, false), record(2, false), record(3, true)];
    let out = d.input(Input::Cluster(ClusterEvent::Claimed {
        records,
        own: false,
        ok: true,
    }));
    assert_eq!(
        reconnects(&out),
        [
            (record(1, false).id, NODE_LOST),
            (record(2, false).id, NODE_LOST)
        ]
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::JournalRemove { id, .. } if *id == record(3, true).id)));
    assert!(cluster_ops(&out).is_empty(), "a short batch: nothing left");
    // Each leaves the journal once its push is settled.
    let out = d.input(Input::PushSettled(Report::Delivered {
        subscription: record(1, false).id,
        kind: push::Kind::Reconnect,
    }));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::JournalRemove { id, .. } if *id == record(1, false).id)));
    // The next renewal claims again; a full batch claims again at once.
    let ticket = heartbeat_ticket(&d.tick_at(2_000)).expect("a heartbeat at 2 s");
    let out = d.input(Input::Cluster(ClusterEvent::Heartbeat { ticket, ok: true }));
    assert_eq!(cluster_ops(&out).len(), 1);
    let full: Vec<Record> = (0..CLAIM_BATCH_MAX)
        .map(|i| record((i % 250) as u8, false))
        .collect();
    let out = d.input(Input::Cluster(ClusterEvent::Claimed {
        records: full,
        own: false,
        ok: true,
    }));
    assert_eq!(reconnects(&out).len(), CLAIM_BATCH_MAX);
    assert_eq!(
        cluster_ops(&out),
        [ClusterOp::ClaimLost {
            max: CLAIM_BATCH_MAX
        }]
    );
    assert_eq!(
        d.core.counters().subscriptions_claimed,
        3 + CLAIM_BATCH_MAX as u64
    );
}

#[test]
fn a_node_that_cannot_renew_fences_without_a_push_and_takes_its_rows_back_once_renewed() {
    let mut d = Driver::new(shared());
    let (id, session) = d.register("alice");
    // Heartbeats go out and never come back.
    let mut unanswered = Vec::new();
    for ms in [1_000, 2_000] {
        unanswered.extend(heartbeat_ticket(&d.tick_at(ms)));
    }
    assert_eq!(unanswered.len(), 2);
    let out = d.tick_at(FENCE_MS - 1);
    assert!(out.is_empty(), "not fenced a moment before: {out:?}");
    assert_eq!(d.core.readiness(), Ok(()));
    let out = d.tick_at(FENCE_MS);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Unwatch(s) if *s == session)),
        "the session stops: {out:?}"
    );
    assert!(reconnects(&out).is_empty(), "and nothing is pushed");
    assert!(d.core.fenced());
    assert_eq!(d.core.readiness(), Err(NotReady::JournalUnavailable));
    assert_eq!(d.core.subscriptions(), 0);
    // Its session's end, when the engine reports it, pushes nothing either.
    let out = d.input(Input::Session(SessionEvent::Lost {
        session,
        reason: engine::EndReason::Unwatched,
    }));
    assert!(reconnects(&out).is_empty(), "{out:?}");
    // A registration meanwhile is refused at once.
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "username": "bob", "password": "p"},
        "new_mail": {"endpoint": "https://push.example.net/new"},
        "reconnect": {"endpoint": "https://push.example.net/re"},
    });
    let out = d.request(2, Method::Post, "/v1/subscriptions", &body.to_string());
    let Some(Output::Respond { response, .. }) = out.first() else {
        panic!("{out:?}");
    };
    assert_eq!(response.status, 503);
    // A late answer to a renewal sent before the fence (at 2 s) counts from when it was
    // sent: the node is alive again.
    let out = d.input(Input::Cluster(ClusterEvent::Heartbeat {
        ticket: unanswered[1],
        ok: true,
    }));
    assert_eq!(
        cluster_ops(&out),
        [
            ClusterOp::ClaimOwn,
            ClusterOp::ClaimLost {
                max: CLAIM_BATCH_MAX
            }
        ]
    );
    assert!(!d.core.fenced());
    assert_eq!(d.core.readiness(), Ok(()));
    assert!(
        heartbeat_ticket(&d.tick_at(4_000)).is_some(),
        "heartbeats go on"
    );
    // Nobody claimed alice's row meanwhile: this node pushes node_lost to it, once.
    let mut row = record(9, false);
    row.id = SubscriptionId::parse(&id).unwrap();
    let out = d.input(Input::Cluster(ClusterEvent::Claimed {
        records: vec![row],
        own: true,
        ok: true,
    }));
    assert_eq!(
        reconnects(&out),
        [(SubscriptionId::parse(&id).unwrap(), NODE_LOST)]
    );
}

#[test]
fn a_failed_renewal_does_not_count_and_an_old_answer_does_not_move_the_fence_later() {
    let mut d = Driver::new(shared());
    let first = heartbeat_ticket(&d.tick_at(1_000)).unwrap();
    let second = heartbeat_ticket(&d.tick_at(2_000)).unwrap();
    // The later renewal comes back first; then the older one. The fence counts from the
    // later one's send time (2 s), whatever the order.
    d.input(Input::Cluster(ClusterEvent::Heartbeat {
        ticket: second,
        ok: true,
    }));
    d.input(Input::Cluster(ClusterEvent::Heartbeat {
        ticket: first,
        ok: true,
    }));
    let third = heartbeat_ticket(&d.tick_at(3_000)).unwrap();
    d.input(Input::Cluster(ClusterEvent::Heartbeat {
        ticket: third,
        ok: false,
    }));
    d.tick_at(4_000);
    assert!(!d.core.fenced(), "2 s + 3 s is not yet");
    d.tick_at(2_000 + FENCE_MS);
    assert!(d.core.fenced(), "a failed renewal renews nothing");
}

#[test]
fn a_subscription_another_node_took_over_ends_without_a_push() {
    let mut d = Driver::new(shared());
    let (id, session) = d.register("alice");
    let (_, other) = d.register("bob");
    let sub = SubscriptionId::parse(&id).unwrap();
    let out = d.input(Input::Cluster(ClusterEvent::Dropped { id: sub }));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Unwatch(s) if *s == session)));
    assert!(reconnects(&out).is_empty());
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::JournalRemove { .. })),
        "the row is the other node's now"
    );
    let out = d.input(Input::Session(SessionEvent::Lost {
        session,
        reason: engine::EndReason::Unwatched,
    }));
    assert!(reconnects(&out).is_empty());
    let out = d.request(3, Method::Get, &format!("/v1/subscriptions/{id}"), "");
    let Some(Output::Respond { response, .. }) = out.first() else {
        panic!("{out:?}");
    };
    assert_eq!(response.status, 404);
    assert_eq!(d.core.subscriptions(), 1, "bob's stays");
    let _ = other;
}

#[test]
fn a_single_box_never_asks_for_cluster_work() {
    let mut d = Driver::new(JournalSetting::Redb);
    d.register("alice");
    for s in 1..=120 {
        let out = d.tick_at(s * 1_000);
        assert!(cluster_ops(&out).is_empty());
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(!d.core.fenced());
    assert_eq!(d.core.subscriptions(), 1);
}
