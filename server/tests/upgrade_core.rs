//! The core after an in-place upgrade, in virtual time: a subscription whose record the
//! journal holds and whose session came carried goes on (no push; its new mail and its
//! loss are handled as before the upgrade); every other record gets its `server_restart`
//! push (a verifying one is dropped silently), and a carried session without a record is
//! not taken.

use std::time::Instant;

use engine::Since;
use server::config::Config;
use server::core::{Carried, Core, Input, Now, Output, SessionEvent};
use server::fd_budget::Budget;
use server::id::SubscriptionId;
use server::journal::{Record, TargetRecord};
use server::registry::State;

type TestCore = Core<u64, u64>;

fn budget() -> Budget {
    Budget {
        nofile: 1024,
        api_connections: 64,
        sessions_capacity: 30,
        engine_sessions_max: 40,
    }
}

fn record(n: u8, verifying: bool) -> Record {
    let target = |path: &str| TargetRecord {
        endpoint: format!("https://push.example.net/{path}/{n}"),
        p256dh: None,
        auth: None,
        simplepush: false,
    };
    Record {
        id: SubscriptionId::from_bytes([n; 16]),
        key_hash: "00".repeat(32),
        new_mail: target("new"),
        reconnect: target("re"),
        created_unix: 1_700_000_000,
        tag: None,
        verifying,
    }
}

fn carried(n: u8) -> Carried {
    Carried {
        id: SubscriptionId::from_bytes([n; 16]),
        host: "imap.example.org".into(),
        key: [n; 32],
        account: [n; 32],
        mailboxes: vec!["INBOX".into()],
        since: Some(Since {
            uidvalidity: 1,
            uidnext: 5,
        }),
        state: State::Idle,
        idle: true,
        notify: false,
        last_new_mail: Some((1_700_000_100, 4)),
        pushes_sent: 3,
        pushes_failed: 0,
    }
}

/// The push requests among the outputs: endpoint and reason (reconnect) or mailbox (new
/// mail, from the payload the core wrote).
fn pushes(out: &[Output<u64, u64>]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(a) => Some(match a.reconnect_reason() {
                Some(reason) => format!("{} {reason}", a.endpoint()),
                None => {
                    let payload: serde_json::Value =
                        serde_json::from_str(&a.payload()).expect("a JSON payload");
                    let mailbox = payload["mailbox"].as_str().unwrap_or("?").to_owned();
                    format!("{} {mailbox}", a.endpoint())
                }
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn carried_sessions_go_on_and_every_other_record_gets_server_restart() {
    let now = Now {
        instant: Instant::now(),
        unix: 1_800_000_000,
    };
    let config = Config {
        allow_private_destinations: true,
        ..Config::default()
    };
    // 1 carried with its record; 2 a record only; 3 carried but its record is verifying;
    // 4 carried without a record.
    let leftovers = vec![record(1, false), record(2, false), record(3, true)];
    let sessions = vec![(carried(1), 11), (carried(3), 13), (carried(4), 14)];
    let (mut core, taken): (TestCore, Vec<u64>) =
        Core::resumed(config, budget(), "key".into(), leftovers, sessions, now);
    assert_eq!(taken, [11]);
    assert_eq!(core.subscriptions(), 1);
    let out: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
    assert_eq!(
        pushes(&out),
        ["https://push.example.net/re/2 server_restart"],
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::JournalRemove { id, .. }
            if *id == SubscriptionId::from_bytes([3; 16]))),
        "the verifying record goes: {out:?}"
    );
    // What the next upgrade carries is what this one brought.
    assert_eq!(core.carry(11), Some(carried(1)));

    core.handle(
        Input::Session(SessionEvent::NewMail {
            session: 11,
            mailbox: 0,
            exists: 5,
            preview: None,
            read_at: now.instant,
        }),
        now,
        None,
    );
    let out: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
    assert_eq!(pushes(&out), ["https://push.example.net/new/1 INBOX"]);
    core.handle(
        Input::Session(SessionEvent::Lost {
            session: 11,
            reason: engine::EndReason::Bye,
        }),
        now,
        None,
    );
    let out: Vec<_> = std::iter::from_fn(|| core.poll_output()).collect();
    assert_eq!(pushes(&out), ["https://push.example.net/re/1 bye"]);
    assert_eq!(core.subscriptions(), 0);
}
