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
        Driver::with_config(config(journal))
    }

    fn with_config(config: Config) -> Driver {
        let base = Instant::now();
        let now = Now {
            instant: base,
            unix: 1_800_000_000,
        };
        let core = Core::new(config, budget(), "key".into(), Vec::new(), now);
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
        self.request_keyed(id, method, path, body, None)
    }

    fn request_keyed(
        &mut self,
        id: u64,
        method: Method,
        path: &str,
        body: &str,
        routing_key: Option<&str>,
    ) -> Out {
        self.input(Input::Request(ApiRequest {
            id,
            method,
            path: path.into(),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            authorization: None::<Zeroizing<String>>,
            routing_key: routing_key.map(str::to_owned),
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
    // This node holds it no more: a GET asks the database, where the new owner's row is.
    let out = d.request(3, Method::Get, &format!("/v1/subscriptions/{id}"), "");
    assert!(
        matches!(out.as_slice(), [Output::Cluster(ClusterOp::Read { id: asked, .. })] if *asked == sub),
        "{out:?}"
    );
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

/// The routing key a client computes: base64url (no padding) of SHA-256 over
/// "host\nport\nusername", lowercased. Written out here, not taken from the server.
fn client_routing_key(host: &str, port: u16, username: &str) -> String {
    use base64::Engine as _;
    let text = format!("{host}\n{port}\n{username}").to_lowercase();
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_ref())
}

#[test]
fn the_201_names_the_routing_key_and_a_wrong_imap_push_key_is_refused() {
    for journal in [JournalSetting::Redb, shared()] {
        let mut d = Driver::new(journal);
        let body = |user: &str| {
            serde_json::json!({
                "imap": {"host": "127.0.0.1", "port": 993, "username": user, "password": "p"},
                "new_mail": {"endpoint": "https://push.example.net/new"},
                "reconnect": {"endpoint": "https://push.example.net/re"},
            })
            .to_string()
        };
        // Another account's key: refused before any login.
        let wrong = client_routing_key("127.0.0.1", 993, "bob");
        let out = d.request_keyed(
            5,
            Method::Post,
            "/v1/subscriptions",
            &body("Alice"),
            Some(&wrong),
        );
        let Some(Output::Respond { response, .. }) = out.first() else {
            panic!("{out:?}");
        };
        assert_eq!(response.status, 400);
        let answer: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer["error"], "routing_key_mismatch");
        // The right one (the username's case does not matter): the login starts.
        let right = client_routing_key("127.0.0.1", 993, "alice");
        let out = d.request_keyed(
            6,
            Method::Post,
            "/v1/subscriptions",
            &body("Alice"),
            Some(&right),
        );
        assert!(matches!(out.first(), Some(Output::Watch { .. })), "{out:?}");
    }
}

#[test]
fn the_201_body_carries_the_routing_key_with_either_journal() {
    for journal in [JournalSetting::Redb, shared()] {
        let mut d = Driver::new(journal);
        let body = serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": 993, "username": "carol", "password": "p"},
            "new_mail": {"endpoint": "https://push.example.net/new"},
            "reconnect": {"endpoint": "https://push.example.net/re"},
        });
        let out = d.request(7, Method::Post, "/v1/subscriptions", &body.to_string());
        let Some(Output::Watch { subscription, .. }) = out.into_iter().next() else {
            panic!("no watch");
        };
        d.input(Input::Watched {
            subscription,
            result: Ok(1),
        });
        let ready = engine::Ready {
            idle: true,
            notify: false,
            exists: 0,
            uidvalidity: 1,
            uidnext: 1,
        };
        let out = d.input(Input::Session(SessionEvent::Ready { session: 1, ready }));
        let Some(Output::JournalInsert { ticket, .. }) = out.into_iter().next() else {
            panic!("no journal write");
        };
        let out = d.input(Input::JournalDurable { ticket, ok: true });
        let Some(Output::Respond { response, .. }) = out.first() else {
            panic!("{out:?}");
        };
        assert_eq!(response.status, 201);
        let created: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            created["routing_key"],
            client_routing_key("127.0.0.1", 993, "carol")
        );
    }
}

fn respond_status(out: &Out) -> Option<(u16, serde_json::Value)> {
    out.iter().find_map(|o| match o {
        Output::Respond { response, .. } => Some((
            response.status,
            serde_json::from_slice(&response.body).unwrap_or(serde_json::Value::Null),
        )),
        _ => None,
    })
}

#[test]
fn get_and_delete_of_another_nodes_subscription_ask_the_database() {
    let mut d = Driver::new(shared());
    let other = record(4, false);
    let path = format!("/v1/subscriptions/{}", other.id);
    // GET: read from the database; the answer shows the journalled fields.
    let out = d.request(10, Method::Get, &path, "");
    let [Output::Cluster(ClusterOp::Read { ticket, id })] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(*id, other.id);
    let out = d.input(Input::Cluster(ClusterEvent::Read {
        ticket: *ticket,
        record: Ok(Some(Box::new(other.clone()))),
    }));
    let (status, body) = respond_status(&out).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["id"], other.id.to_string());
    assert_eq!(body["state"], "idle");
    // No such row: 404.
    let out = d.request(11, Method::Get, &path, "");
    let [Output::Cluster(ClusterOp::Read { ticket, .. })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let out = d.input(Input::Cluster(ClusterEvent::Read {
        ticket: *ticket,
        record: Ok(None),
    }));
    assert_eq!(respond_status(&out).unwrap().0, 404);
    // DELETE: removed in the database (the owner is told there); 204 once committed.
    let out = d.request(12, Method::Delete, &path, "");
    let [Output::Cluster(ClusterOp::Delete { ticket, id })] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(*id, other.id);
    let ticket = *ticket;
    let out = d.input(Input::Cluster(ClusterEvent::Deleted {
        ticket,
        found: Ok(true),
    }));
    assert!(
        respond_status(&out).is_none(),
        "the owner's word is awaited"
    );
    let out = d.input(Input::Cluster(ClusterEvent::Acked { ticket }));
    assert_eq!(respond_status(&out).unwrap().0, 204);
    // An owner that never answers: the 204 goes when it must have fenced itself, not
    // before.
    let out = d.request(15, Method::Delete, &path, "");
    let [Output::Cluster(ClusterOp::Delete { ticket, .. })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let (ticket, asked_at) = (*ticket, d.ms);
    let out = d.input(Input::Cluster(ClusterEvent::Deleted {
        ticket,
        found: Ok(true),
    }));
    assert!(respond_status(&out).is_none());
    assert!(respond_status(&d.tick_at(asked_at + FENCE_MS - 1)).is_none());
    let out = d.tick_at(asked_at + FENCE_MS);
    assert_eq!(respond_status(&out).unwrap().0, 204);
    let out = d.request(13, Method::Delete, &path, "");
    let [Output::Cluster(ClusterOp::Delete { ticket, .. })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let out = d.input(Input::Cluster(ClusterEvent::Deleted {
        ticket: *ticket,
        found: Err(()),
    }));
    assert_eq!(respond_status(&out).unwrap().0, 503, "the database failed");
    // A single box never asks: 404 at once.
    let mut single = Driver::new(JournalSetting::Redb);
    let out = single.request(14, Method::Delete, &path, "");
    assert_eq!(respond_status(&out).unwrap().0, 404);
}

#[test]
fn after_a_reconnect_sessions_whose_rows_are_gone_end_without_a_push() {
    let mut d = Driver::new(shared());
    let (kept, _) = d.register("alice");
    let (gone, gone_session) = d.register("bob");
    let out = d.input(Input::Cluster(ClusterEvent::Reconnected));
    let [Output::Cluster(ClusterOp::Owned { ticket })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let ticket = *ticket;
    // A registration that becomes ready meanwhile is written after the listing was
    // asked for: the listing does not judge it.
    let (late, _) = d.register("carol");
    let ids = vec![SubscriptionId::parse(&kept).unwrap()];
    let out = d.input(Input::Cluster(ClusterEvent::Owned {
        ticket,
        ids: Ok(ids),
    }));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Unwatch(s) if *s == gone_session)),
        "{out:?}"
    );
    assert!(reconnects(&out).is_empty());
    assert_eq!(d.core.subscriptions(), 2, "alice's and carol's stay");
    let path = |id: &str| format!("/v1/subscriptions/{id}");
    for id in [&kept, &late] {
        let out = d.request(20, Method::Get, &path(id), "");
        assert_eq!(respond_status(&out).unwrap().0, 200);
    }
    assert_eq!(d.core.counters().subscriptions_dropped, 1);
    let _ = gone;
}

#[test]
fn a_delete_through_another_node_ends_the_session_here_and_answers_that_node() {
    let mut d = Driver::new(shared());
    let (id, session) = d.register("alice");
    let by = server::node::NodeName::new("n2").unwrap();
    let sub = SubscriptionId::parse(&id).unwrap();
    let out = d.input(Input::Cluster(ClusterEvent::DeleteAsked {
        id: sub,
        by,
        ticket: 77,
    }));
    let unwatch = out
        .iter()
        .position(|o| matches!(o, Output::Unwatch(s) if *s == session))
        .expect("the session ends");
    let ack = out
        .iter()
        .position(|o| matches!(o, Output::Cluster(ClusterOp::Ack { to, ticket: 77 }) if *to == by))
        .expect("n2 is answered");
    assert!(unwatch < ack, "ended before the answer: {out:?}");
    assert!(reconnects(&out).is_empty());
    // An id this node does not hold (gone already) is answered too, so n2 need not wait.
    let out = d.input(Input::Cluster(ClusterEvent::DeleteAsked {
        id: sub,
        by,
        ticket: 78,
    }));
    assert_eq!(cluster_ops(&out), [ClusterOp::Ack { to: by, ticket: 78 }]);
}

#[test]
fn work_the_journal_never_answers_neither_hangs_a_request_nor_stops_the_claims() {
    use server::core::remote::REMOTE_TIMEOUT;
    let mut d = Driver::new(shared());
    // A GET whose read never comes back: 503 at REMOTE_TIMEOUT, not before.
    let path = format!("/v1/subscriptions/{}", record(4, false).id);
    let out = d.request(30, Method::Get, &path, "");
    assert!(matches!(
        out.as_slice(),
        [Output::Cluster(ClusterOp::Read { .. })]
    ));
    let timeout_ms = REMOTE_TIMEOUT.as_millis() as u64;
    let mut claims = 0;
    let mut answered = None;
    // Heartbeats come back every second; the first claim is never answered.
    for ms in (1_000..=timeout_ms).step_by(1_000) {
        let out = d.tick_at(ms);
        if let Some(ticket) = heartbeat_ticket(&out) {
            let out = d.input(Input::Cluster(ClusterEvent::Heartbeat { ticket, ok: true }));
            claims += cluster_ops(&out)
                .iter()
                .filter(|op| matches!(op, ClusterOp::ClaimLost { .. }))
                .count();
        }
        if let Some((status, _)) = respond_status(&out) {
            answered = Some((ms, status));
        }
    }
    assert_eq!(answered, Some((timeout_ms, 503)));
    // Asked at 1 s, taken as lost at 1 s + fence_after (4 s): asked again then, and
    // again each fence_after while unanswered.
    assert_eq!(claims as u64, 1 + (timeout_ms - 1_000) / FENCE_MS);
}

/// Registers a subscription that must verify its endpoints: its id, session and the two
/// codes its verification pushes carry (new mail, reconnect).
fn register_verifying(d: &mut Driver) -> (SubscriptionId, u64, [String; 2]) {
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": 993, "username": "vera", "password": "p"},
        "new_mail": {"endpoint": "https://push.example.net/new"},
        "reconnect": {"endpoint": "https://push.example.net/re"},
    });
    let out = d.request(40, Method::Post, "/v1/subscriptions", &body.to_string());
    let Some(Output::Watch { subscription, .. }) = out.into_iter().next() else {
        panic!("no watch");
    };
    let session = 900;
    d.input(Input::Watched {
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
    let out = d.input(Input::Session(SessionEvent::Ready { session, ready }));
    let Some(Output::JournalInsert { ticket, .. }) = out.into_iter().next() else {
        panic!("no journal write");
    };
    let out = d.input(Input::JournalDurable { ticket, ok: true });
    let codes: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Push(PushJob::Verify { code, .. }) => Some(code.as_str().to_owned()),
            _ => None,
        })
        .collect();
    let [new_mail, reconnect] = <[String; 2]>::try_from(codes).expect("two codes");
    (subscription, session, [new_mail, reconnect])
}

#[test]
fn a_verification_through_another_node_goes_to_the_owner_as_digests_and_back() {
    use server::journal::VerifyOutcome;
    use server::verification::digest_of;
    let verifying = Config {
        require_endpoint_verification: true,
        ..config(shared())
    };
    let mut owner = Driver::with_config(verifying.clone());
    let mut other = Driver::with_config(verifying);
    let (id, _, [new_mail, reconnect]) = register_verifying(&mut owner);
    let path = format!("/v1/subscriptions/{id}/verify");
    let body = serde_json::json!({"new_mail": new_mail, "reconnect": reconnect}).to_string();

    // Through the other node: only the digests leave it.
    let out = other.request(41, Method::Post, &path, &body);
    let [Output::Cluster(ClusterOp::Verify {
        ticket,
        id: asked,
        digests,
    })] = out.as_slice()
    else {
        panic!("{out:?}");
    };
    let (ticket, digests) = (*ticket, *digests);
    assert_eq!(*asked, id);
    assert_eq!(digests, [digest_of(&new_mail), digest_of(&reconnect)]);
    let out = other.input(Input::Cluster(ClusterEvent::VerifyForwarded {
        ticket,
        found: Ok(true),
    }));
    assert!(out.is_empty(), "waits for the owner: {out:?}");

    // The owner: a wrong pair is refused and counted; the right one activates, and the
    // outcome goes back once the active record is durable.
    let by = server::node::NodeName::new("n2").unwrap();
    let out = owner.input(Input::Cluster(ClusterEvent::VerifyAsked {
        id,
        by,
        ticket: 1,
        digests: [digest_of("wrong"), digests[1]],
    }));
    assert!(matches!(
        out.as_slice(),
        [Output::Cluster(ClusterOp::VerifyReply {
            ticket: 1,
            outcome: VerifyOutcome::Refused(server::error_code::ErrorCode::VerificationFailed),
            ..
        })]
    ));
    let out = owner.input(Input::Cluster(ClusterEvent::VerifyAsked {
        id,
        by,
        ticket,
        digests,
    }));
    let Some(Output::JournalInsert {
        ticket: write,
        record,
    }) = out
        .into_iter()
        .find(|o| matches!(o, Output::JournalInsert { .. }))
    else {
        panic!("no journal write");
    };
    assert!(!record.verifying);
    let out = owner.input(Input::JournalDurable {
        ticket: write,
        ok: true,
    });
    assert_eq!(
        cluster_ops(&out),
        [ClusterOp::VerifyReply {
            to: by,
            ticket,
            outcome: VerifyOutcome::Verified
        }]
    );
    assert!(
        respond_status(&out).is_none(),
        "no local answer on the owner"
    );

    // Back on the other node: verified, so the row is read and shown.
    let out = other.input(Input::Cluster(ClusterEvent::VerifyAnswered {
        ticket,
        outcome: VerifyOutcome::Verified,
    }));
    let [Output::Cluster(ClusterOp::Read { ticket: read, .. })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let mut row = record.clone();
    row.verifying = false;
    let out = other.input(Input::Cluster(ClusterEvent::Read {
        ticket: *read,
        record: Ok(Some(Box::new(row))),
    }));
    let (status, shown) = respond_status(&out).unwrap();
    assert_eq!(status, 200);
    assert_eq!(shown["state"], "idle");
    // A refusal keeps its code.
    let out = other.request(42, Method::Post, &path, &body);
    let [Output::Cluster(ClusterOp::Verify { ticket, .. })] = out.as_slice() else {
        panic!("{out:?}");
    };
    let out = other.input(Input::Cluster(ClusterEvent::VerifyAnswered {
        ticket: *ticket,
        outcome: VerifyOutcome::Refused(server::error_code::ErrorCode::VerificationFailed),
    }));
    let (status, answer) = respond_status(&out).unwrap();
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("verification_failed"))
    );
}
