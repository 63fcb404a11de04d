//! Two registrations of one key in flight at once: the later request wins, whichever
//! login is ready first. The server's `Core` driven directly in virtual time, with the
//! host name lookups answered out of order.
//!
//! Before the rank was taken when the request arrived, the core ranked registrations by
//! when their logins began: the earlier POST, whose lookups ended later, began later and
//! replaced the later POST (the simulation's model, by POST order, disagreed; seed 517
//! with `SIM_POOL_FULL_PERCENT=2` on the old simulation).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use httpd::Method;
use server::config::Config;
use server::core::{ApiRequest, Core, Input, Now, Output, SessionEvent};
use server::fd_budget::Budget;
use server::id::SubscriptionId;
use zeroize::Zeroizing;

type TestCore = Core<u64, u64>;

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
    ms: u64,
    next_random: u8,
}

impl Driver {
    fn new() -> Driver {
        let base = Instant::now();
        let now = Now {
            instant: base,
            unix: 1_800_000_000,
        };
        // Host names are resolved and judged before the login (the default).
        let core = Core::new(Config::default(), budget(), "key".into(), Vec::new(), now);
        Driver {
            core,
            base,
            ms: 0,
            next_random: 1,
        }
    }

    fn input(&mut self, input: Input<u64, u64>) -> Vec<Output<u64, u64>> {
        self.next_random += 1;
        let random = [self.next_random; server::core::RANDOM_LEN];
        let now = Now {
            instant: self.base + Duration::from_millis(self.ms),
            unix: 1_800_000_000 + self.ms / 1000,
        };
        self.core.handle(input, now, Some(random));
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    /// A registration of the one key; returns its lookup tokens.
    fn post(&mut self, request: u64) -> Vec<u64> {
        let body = serde_json::json!({
            "imap": {"host": "imap.example.com", "port": 993, "security": "tls",
                     "username": "u", "password": "p"},
            "device_id": "phone",
            "new_mail": {"endpoint": "https://push.example.com/new"},
            "reconnect": {"endpoint": "https://push.example.com/re"},
        });
        let out = self.input(Input::Request(ApiRequest {
            id: request,
            method: Method::Post,
            path: "/v1/subscriptions".into(),
            client: IpAddr::V4(Ipv4Addr::new(11, 0, 1, 1)),
            authorization: None::<Zeroizing<String>>,
            routing_key: None,
            body: Zeroizing::new(body.to_string().into_bytes()),
        }));
        let tokens: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Lookup { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        assert!(!tokens.is_empty(), "lookups first: {out:?}");
        tokens
    }

    /// Answers a registration's lookups (public addresses); its login starts as `session`.
    fn resolve(&mut self, tokens: &[u64], session: u64) -> SubscriptionId {
        let mut watched = None;
        for &token in tokens {
            let answer = engine::Lookup {
                token,
                result: Ok(vec![SocketAddr::from(([11, 0, 0, 1], 993))]),
            };
            for output in self.input(Input::Lookup(answer)) {
                if let Output::Watch { subscription, .. } = output {
                    watched = Some(subscription);
                }
            }
        }
        let subscription = watched.expect("the login starts once every name is judged");
        self.input(Input::Watched {
            subscription,
            result: Ok(session),
        });
        subscription
    }

    fn ready(&mut self, session: u64) -> Vec<Output<u64, u64>> {
        let ready = engine::Ready {
            idle: true,
            notify: false,
            exists: 0,
            uidvalidity: 1,
            uidnext: 1,
        };
        self.input(Input::Session(SessionEvent::Ready { session, ready }))
    }

    /// Makes a journal write durable; returns the response it releases.
    fn durable(&mut self, out: &[Output<u64, u64>]) -> Vec<Output<u64, u64>> {
        let ticket = out
            .iter()
            .find_map(|o| match o {
                Output::JournalInsert { ticket, .. } => Some(*ticket),
                _ => None,
            })
            .expect("a journal write");
        self.input(Input::JournalDurable { ticket, ok: true })
    }
}

fn status(out: &[Output<u64, u64>], request: u64) -> Option<u16> {
    out.iter().find_map(|o| match o {
        Output::Respond {
            request: r,
            response,
        } if *r == request => Some(response.status),
        _ => None,
    })
}

#[test]
fn the_later_post_wins_when_the_earlier_one_resolves_last() {
    for later_ready_first in [true, false] {
        let mut d = Driver::new();
        let earlier = d.post(1);
        d.ms += 10;
        let later = d.post(2);
        // The later POST's lookups end first, so its login begins first.
        let later_id = d.resolve(&later, 20);
        d.ms += 500;
        let earlier_id = d.resolve(&earlier, 10);
        assert_ne!(earlier_id, later_id);

        let (first, second) = if later_ready_first {
            (20, 10)
        } else {
            (10, 20)
        };
        let mut all = d.ready(first);
        let created = d.durable(&all);
        all.extend(created);
        let out = d.ready(second);
        if !later_ready_first {
            // The later one replaces the earlier one once ready; its 201 waits for its
            // journal write.
            all.extend(d.durable(&out));
        }
        all.extend(out);
        assert_eq!(
            status(&all, 2),
            Some(201),
            "the later POST is created: {all:?}"
        );
        assert!(
            all.iter().any(|o| matches!(o, Output::Unwatch(10))),
            "the earlier POST's session ends: {all:?}"
        );
        assert!(
            !all.iter().any(|o| matches!(o, Output::Unwatch(20))),
            "the later POST's session stays: {all:?}"
        );
        let live: Vec<_> = d.core.sessions().collect();
        assert_eq!(
            live,
            [(later_id, 20)],
            "one session for the key, the later POST's"
        );
        assert!(
            !all.iter().any(|o| matches!(o, Output::Send(_))),
            "no reconnect push: its app registered again"
        );
    }
}
