//! Endpoint verification's deadline and restart rule in virtual time: the server's `Core`
//! driven directly (as server/tests/simulation.rs does), so that "just before" and "at"
//! the deadline are exact instants, and no test sleeps for a timer.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use httpd::Method;
use server::config::Config;
use server::core::{ApiRequest, Attempt, Core, Input, Now, Output, SessionEvent};
use server::fd_budget::Budget;
use server::journal::{Record, TargetRecord};
use zeroize::Zeroizing;

type TestCore = Core<u64, u64>;

const SESSION: u64 = 7;
const TIMEOUT_SECS: u64 = 600;

fn config() -> Config {
    Config {
        require_endpoint_verification: true,
        verification_timeout_secs: TIMEOUT_SECS,
        allow_private_destinations: true,
        allow_http_endpoints: true,
        ..Config::default()
    }
}

fn budget() -> Budget {
    Budget {
        nofile: 1024,
        api_connections: 64,
        sessions_capacity: 30,
        engine_sessions_max: 40,
    }
}

struct Driver {
    core: TestCore,
    base: Instant,
    /// Virtual milliseconds since `base`.
    ms: u64,
    next_random: u8,
}

impl Driver {
    fn new(leftovers: Vec<Record>) -> (Driver, Vec<Output<u64, u64>>) {
        let base = Instant::now();
        let now = Now {
            instant: base,
            unix: 1_800_000_000,
        };
        let core = Core::new(config(), budget(), "key".into(), leftovers, now);
        let mut driver = Driver {
            core,
            base,
            ms: 0,
            next_random: 1,
        };
        let outputs = driver.outputs();
        (driver, outputs)
    }

    fn now(&self) -> Now {
        Now {
            instant: self.base + Duration::from_millis(self.ms),
            unix: 1_800_000_000 + self.ms / 1000,
        }
    }

    fn outputs(&mut self) -> Vec<Output<u64, u64>> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    fn input(&mut self, input: Input<u64, u64>) -> Vec<Output<u64, u64>> {
        self.next_random += 1;
        let random = [self.next_random; server::core::RANDOM_LEN];
        let now = self.now();
        self.core.handle(input, now, Some(random));
        self.outputs()
    }

    fn request(
        &mut self,
        id: u64,
        method: Method,
        path: &str,
        body: &str,
    ) -> Vec<Output<u64, u64>> {
        self.input(Input::Request(ApiRequest {
            id,
            method,
            path: path.into(),
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            authorization: None::<Zeroizing<String>>,
            routing_key: None,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }))
    }

    /// Registers one subscription up to its 201 (state `verifying`): returns its id and
    /// the outputs after the 201.
    fn register(&mut self) -> (String, Vec<Output<u64, u64>>) {
        let body = serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": 993, "security": "tls",
                     "username": "u", "password": "p"},
            "device_id": "d",
            "new_mail": {"endpoint": "https://push.example.net/new"},
            "reconnect": {"endpoint": "https://push.example.net/re"},
        });
        let out = self.request(1, Method::Post, "/v1/subscriptions", &body.to_string());
        let Some(Output::Watch { subscription, .. }) = out.into_iter().next() else {
            panic!("no watch");
        };
        assert!(self
            .input(Input::Watched {
                subscription,
                result: Ok(SESSION),
            })
            .is_empty());
        let ready = engine::Ready {
            idle: true,
            notify: false,
            exists: 0,
            uidvalidity: 1,
            uidnext: 1,
        };
        let out = self.input(Input::Session(SessionEvent::Ready {
            session: SESSION,
            ready,
        }));
        let Some(Output::JournalInsert { ticket, record }) = out.into_iter().next() else {
            panic!("no journal write");
        };
        assert!(record.verifying, "journalled as verifying");
        let out = self.input(Input::JournalDurable { ticket, ok: true });
        let Some(Output::Respond { response, .. }) = out.first() else {
            panic!("no 201: {out:?}");
        };
        assert_eq!(response.status, 201);
        (subscription.to_string(), out)
    }
}

/// The push requests among the outputs.
fn pushes(out: &[Output<u64, u64>]) -> Vec<&Attempt> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(attempt) => Some(attempt),
            _ => None,
        })
        .collect()
}

#[test]
fn an_unverified_subscription_expires_at_its_deadline_not_before_and_pushes_nothing() {
    let (mut d, _) = Driver::new(Vec::new());
    let (id, out) = d.register();
    let verify = pushes(&out);
    assert_eq!(verify.len(), 2, "{out:?}");
    assert!(verify.iter().all(|a| a.is_verification()));
    let registered_at = d.now().instant;
    let deadline = registered_at + Duration::from_secs(TIMEOUT_SECS);
    assert_eq!(d.core.poll_timeout(), Some(deadline));

    let mail = d.input(Input::Session(SessionEvent::NewMail {
        session: SESSION,
        mailbox: 0,
        exists: 1,
        preview: None,
        read_at: d.now().instant,
    }));
    assert!(pushes(&mail).is_empty(), "no new-mail push while verifying");

    d.ms = TIMEOUT_SECS * 1000 - 1;
    let before = d.input(Input::Tick);
    assert!(before.is_empty(), "1 ms before the deadline: {before:?}");
    let get = d.request(2, Method::Get, &format!("/v1/subscriptions/{id}"), "");
    assert!(matches!(&get[..], [Output::Respond { response, .. }] if response.status == 200));

    d.ms = TIMEOUT_SECS * 1000;
    let at = d.input(Input::Tick);
    assert!(
        at.iter().any(|o| matches!(o, Output::Unwatch(SESSION))),
        "the session logs out: {at:?}"
    );
    assert!(at.iter().any(|o| matches!(o, Output::JournalRemove { .. })));
    let pushed = pushes(&at);
    assert!(pushed.is_empty(), "nothing pushed: {pushed:?}");
    // The engine's word that the session ended finds nothing to push to.
    let lost = d.input(Input::Session(SessionEvent::Lost {
        session: SESSION,
        reason: engine::EndReason::Closed,
    }));
    assert!(pushes(&lost).is_empty(), "{lost:?}");
    let get = d.request(3, Method::Get, &format!("/v1/subscriptions/{id}"), "");
    assert!(matches!(&get[..], [Output::Respond { response, .. }] if response.status == 404));
    assert_eq!(d.core.poll_timeout(), None);
}

#[test]
fn a_restart_drops_a_verifying_record_without_a_push_and_pushes_an_active_one() {
    let target = |path: &str| TargetRecord {
        endpoint: format!("https://push.example.net{path}"),
        p256dh: None,
        auth: None,
        simplepush: false,
    };
    let record = |id: &str, verifying: bool| Record {
        id: id.parse().unwrap(),
        key_hash: "00".repeat(32),
        new_mail: target("/new"),
        reconnect: target("/re"),
        created_unix: 1,
        tag: None,
        verifying,
    };
    let verifying = "0123456789abcdef0123456789abcdef";
    let active = "fedcba9876543210fedcba9876543210";
    let (_, out) = Driver::new(vec![record(verifying, true), record(active, false)]);
    let pushed: Vec<String> = pushes(&out)
        .iter()
        .map(|a| match a.reconnect_reason() {
            Some(reason) => format!("{} {reason}", a.subscription()),
            None => panic!("{a:?}"),
        })
        .collect();
    assert_eq!(pushed, [format!("{active} server_restart")]);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::JournalRemove { id, .. } if id.to_string() == verifying)),
        "the verifying record goes: {out:?}"
    );
}

#[test]
fn a_session_that_ends_before_activation_sends_nothing() {
    let (mut d, _) = Driver::new(Vec::new());
    let (id, _) = d.register();
    let mail = d.input(Input::Session(SessionEvent::NewMail {
        session: SESSION,
        mailbox: 0,
        exists: 1,
        preview: None,
        read_at: d.now().instant,
    }));
    assert!(pushes(&mail).is_empty());
    let lost = d.input(Input::Session(SessionEvent::Lost {
        session: SESSION,
        reason: engine::EndReason::Closed,
    }));
    assert!(pushes(&lost).is_empty(), "no reconnect push: {lost:?}");
    assert!(
        lost.iter()
            .any(|o| matches!(o, Output::JournalRemove { .. })),
        "its record goes: {lost:?}"
    );
    let get = d.request(2, Method::Get, &format!("/v1/subscriptions/{id}"), "");
    assert!(matches!(&get[..], [Output::Respond { response, .. }] if response.status == 404));
    assert_eq!(d.core.poll_timeout(), None, "no deadline left behind");
}

#[test]
fn a_verifying_subscription_whose_record_failed_is_dropped_without_a_push() {
    let (mut d, _) = Driver::new(Vec::new());
    let body = serde_json::json!({
        "imap": {"host": "127.0.0.1", "port": 993, "security": "tls",
                 "username": "u", "password": "p"},
        "device_id": "d",
        "new_mail": {"endpoint": "https://push.example.net/new"},
        "reconnect": {"endpoint": "https://push.example.net/re"},
    });
    let out = d.request(1, Method::Post, "/v1/subscriptions", &body.to_string());
    let Some(Output::Watch { subscription, .. }) = out.into_iter().next() else {
        panic!("no watch");
    };
    d.input(Input::Watched {
        subscription,
        result: Ok(SESSION),
    });
    let ready = engine::Ready {
        idle: true,
        notify: false,
        exists: 0,
        uidvalidity: 1,
        uidnext: 1,
    };
    let out = d.input(Input::Session(SessionEvent::Ready {
        session: SESSION,
        ready,
    }));
    let Some(Output::JournalInsert { ticket, .. }) = out.into_iter().next() else {
        panic!("no journal write");
    };
    let out = d.input(Input::JournalDurable { ticket, ok: false });
    assert!(
        matches!(out.first(), Some(Output::Respond { response, .. }) if response.status == 500),
        "{out:?}"
    );
    assert!(
        out.iter().any(|o| matches!(o, Output::Unwatch(SESSION))),
        "{out:?}"
    );
    assert!(
        pushes(&out).is_empty(),
        "no verification push for a registration answered 500: {out:?}"
    );
}

#[test]
fn a_simplepush_endpoint_is_refused_since_it_cannot_carry_a_code() {
    let (mut d, _) = Driver::new(Vec::new());
    for field in ["new_mail", "reconnect"] {
        let mut body = serde_json::json!({
            "imap": {"host": "127.0.0.1", "port": 993, "security": "tls",
                     "username": "u", "password": "p"},
            "device_id": "d",
            "new_mail": {"endpoint": "https://push.example.net/new"},
            "reconnect": {"endpoint": "https://push.example.net/re"},
        });
        body[field]["protocol"] = "simplepush".into();
        let out = d.request(1, Method::Post, "/v1/subscriptions", &body.to_string());
        let [Output::Respond { response, .. }] = &out[..] else {
            panic!("{field}: {out:?}");
        };
        assert_eq!(response.status, 400, "{field}");
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["field"], field);
    }
}
