//! The shared journal against a real PostgreSQL (testkit starts one on loopback): records
//! survive a restart of the node that wrote them, a second live node with the same id is
//! refused, a lost node's rows are claimed each by exactly one survivor, a registration
//! of a key another node holds takes it over and that node hears of it, and the
//! password never shows in an error.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use server::id::SubscriptionId;
use server::journal::postgres::{PgOptions, PgStore};
use server::journal::{ClusterEvent, ClusterOp, Journal, JournalError, Record, TargetRecord};
use testkit::Postgres;

/// Long enough that no heartbeat goes stale by itself during a test.
const LOST_AFTER_SECS: u64 = 30;
/// Every wait for an answer of the writer thread.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

fn record(i: u64, key: u64) -> Record {
    let target = |path: &str| TargetRecord {
        endpoint: format!("https://push.example/{path}/{i}"),
        p256dh: None,
        auth: None,
        simplepush: false,
    };
    Record {
        id: SubscriptionId::from_str(&format!("{i:032x}")).expect("32 hex digits"),
        key_hash: format!("{key:064x}"),
        new_mail: target("n"),
        reconnect: target("r"),
        created_unix: i,
        tag: None,
        verifying: false,
    }
}

/// A node: its journal and the channel of its cluster answers and notices.
struct Node {
    journal: Journal,
    events: Receiver<ClusterEvent>,
}

fn open(pg: &Postgres, node_id: &str) -> Result<(Node, Vec<Record>), JournalError> {
    let url = pg.url();
    let options = PgOptions {
        url: &url,
        node_id,
        node_lost_after_secs: LOST_AFTER_SECS,
    };
    let (store, leftovers) = PgStore::open(&options)?;
    let (tx, events) = crossbeam_channel::bounded(1024);
    let journal = Journal::start(Box::new(store), Some(tx))?;
    Ok((Node { journal, events }, leftovers))
}

impl Node {
    fn insert_all(&mut self, records: &[Record]) {
        let (tx, rx) = crossbeam_channel::unbounded();
        for record in records {
            let tx = tx.clone();
            self.journal.insert(
                record,
                Box::new(move |ok| {
                    let _ = tx.send(ok);
                }),
            );
        }
        for _ in records {
            assert_eq!(rx.recv_timeout(ANSWER_TIMEOUT), Ok(true), "durable");
        }
    }

    /// The next answer or notice, within [`ANSWER_TIMEOUT`].
    fn next_event(&self) -> ClusterEvent {
        self.events
            .recv_timeout(ANSWER_TIMEOUT)
            .expect("an answer from the writer thread")
    }

    fn claim_lost(&mut self, max: usize) -> Vec<Record> {
        self.journal.cluster(ClusterOp::ClaimLost { max });
        match self.next_event() {
            ClusterEvent::Claimed {
                records,
                own: false,
                ok: true,
            } => records,
            other => panic!("expected a claim, got {other:?}"),
        }
    }
}

fn start_postgres() -> Postgres {
    Postgres::start().expect("PostgreSQL for the test (Debian package postgresql)")
}

/// Makes `node`'s heartbeat as old as a dead node's.
fn age_heartbeat(pg: &Postgres, node: &str) {
    pg.psql(&format!(
        "UPDATE imap_push_nodes SET heartbeat = now() - interval '1 hour' WHERE node_id = '{node}'"
    ))
    .expect("psql");
}

fn ids(records: &[Record]) -> HashSet<SubscriptionId> {
    records.iter().map(|r| r.id).collect()
}

#[test]
fn records_survive_a_restart_and_a_live_twin_is_refused() {
    let pg = start_postgres();
    let (mut n1, leftovers) = open(&pg, "n1").unwrap();
    assert!(leftovers.is_empty());
    let records: Vec<Record> = (0..50).map(|i| record(i, i)).collect();
    n1.insert_all(&records);
    n1.journal.remove(&records[7].id);
    n1.journal.flush();

    // n1 is live: a second process with its id is refused, and says why.
    let e = open(&pg, "n1").err().expect("refused");
    assert!(matches!(e, JournalError::NodeLive(_)), "{e}");
    assert!(e.to_string().contains("node_id"), "{e}");

    // A clean stop marks n1 stopped: the same id starts at once and gets its rows back.
    drop(n1);
    let (_n1, leftovers) = open(&pg, "n1").unwrap();
    assert_eq!(leftovers.len(), 49);
    assert!(!ids(&leftovers).contains(&records[7].id));
    let epochs = pg
        .psql("SELECT DISTINCT epoch FROM imap_push_subscriptions")
        .unwrap();
    assert_eq!(epochs.trim(), "1", "taking rows back bumps the owner epoch");
    let owners = pg
        .psql("SELECT DISTINCT owner FROM imap_push_subscriptions")
        .unwrap();
    assert_eq!(owners.trim(), "n1");
}

#[test]
fn a_lost_nodes_rows_are_claimed_each_by_exactly_one_survivor() {
    let pg = start_postgres();
    let (mut lost, _) = open(&pg, "lost").unwrap();
    let records: Vec<Record> = (0..300).map(|i| record(i, i)).collect();
    lost.insert_all(&records);
    let (mut n2, _) = open(&pg, "n2").unwrap();
    let (mut n3, _) = open(&pg, "n3").unwrap();
    // Nothing is claimed while every heartbeat is fresh.
    assert!(n2.claim_lost(1000).is_empty());
    // `lost` dies without a word (its writer stops, its row stays fresh) and its
    // heartbeat ages past node_lost_after_secs.
    std::mem::forget(lost.journal);
    age_heartbeat(&pg, "lost");

    // Both survivors claim at once, in batches smaller than the rows.
    let started = Instant::now();
    let (mut got2, mut got3) = (Vec::new(), Vec::new());
    while got2.len() + got3.len() < records.len() && started.elapsed() < ANSWER_TIMEOUT {
        n2.journal.cluster(ClusterOp::ClaimLost { max: 40 });
        n3.journal.cluster(ClusterOp::ClaimLost { max: 40 });
        for (node, got) in [(&n2, &mut got2), (&n3, &mut got3)] {
            match node.next_event() {
                ClusterEvent::Claimed { records, ok, .. } => {
                    assert!(ok);
                    got.extend(records);
                }
                other => panic!("expected a claim, got {other:?}"),
            }
        }
    }
    let (ids2, ids3) = (ids(&got2), ids(&got3));
    assert_eq!(ids2.len(), got2.len(), "n2 got no row twice");
    assert_eq!(ids3.len(), got3.len(), "n3 got no row twice");
    assert!(ids2.is_disjoint(&ids3), "no row claimed by both");
    assert_eq!(
        ids2.union(&ids3).copied().collect::<HashSet<_>>(),
        ids(&records)
    );
    assert!(n2.claim_lost(1000).is_empty(), "nothing left to claim");
    let left = pg
        .psql("SELECT count(*) FROM imap_push_subscriptions WHERE owner = 'lost' OR epoch <> 1")
        .unwrap();
    assert_eq!(
        left.trim(),
        "0",
        "every row moved once, its epoch bumped once"
    );
}

#[test]
fn a_node_that_may_be_lost_itself_claims_nothing() {
    let pg = start_postgres();
    let (mut lost, _) = open(&pg, "lost").unwrap();
    lost.insert_all(&[record(1, 1)]);
    let (mut n2, _) = open(&pg, "n2").unwrap();
    std::mem::forget(lost.journal);
    age_heartbeat(&pg, "lost");
    age_heartbeat(&pg, "n2");
    assert!(n2.claim_lost(10).is_empty(), "n2's own heartbeat is stale");
    n2.journal.cluster(ClusterOp::Heartbeat { ticket: 9 });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::Heartbeat {
            ticket: 9,
            ok: true
        }
    ));
    assert_eq!(n2.claim_lost(10).len(), 1, "renewed, it claims");
}

#[test]
fn a_key_registered_on_another_node_is_taken_over_and_its_owner_told() {
    let pg = start_postgres();
    let (mut n1, _) = open(&pg, "n1").unwrap();
    let (mut n2, _) = open(&pg, "n2").unwrap();
    n1.insert_all(&[record(1, 42), record(2, 43)]);
    // The same key (42) becomes ready on n2 as a new subscription.
    n2.insert_all(&[record(3, 42)]);
    match n1.next_event() {
        ClusterEvent::Dropped { id } => assert_eq!(id, record(1, 42).id),
        other => panic!("expected n1 to hear of the takeover, got {other:?}"),
    }
    let rows = pg
        .psql("SELECT id, owner FROM imap_push_subscriptions ORDER BY id")
        .unwrap();
    let expected = format!("{}|n1\n{}|n2\n", record(2, 43).id, record(3, 42).id);
    assert_eq!(rows, expected, "one row per key");
    // A DELETE through n2 of n1's subscription: the row goes and n1 hears of it.
    let (tx, rx) = crossbeam_channel::bounded(1);
    n2.journal.remove_then(
        &record(2, 43).id,
        Box::new(move |ok| {
            let _ = tx.send(ok);
        }),
    );
    assert_eq!(rx.recv_timeout(ANSWER_TIMEOUT), Ok(true));
    match n1.next_event() {
        ClusterEvent::Dropped { id } => assert_eq!(id, record(2, 43).id),
        other => panic!("expected n1 to hear of the DELETE, got {other:?}"),
    }
}

#[test]
fn the_password_never_shows_in_an_error() {
    let pg = start_postgres();
    let wrong = pg.url().replace(pg.password(), "w7rongpass3k");
    for url in [wrong.as_str(), "postgres://u:s3cretpw@127.0.0.1:1/db"] {
        let options = PgOptions {
            url,
            node_id: "n1",
            node_lost_after_secs: LOST_AFTER_SECS,
        };
        let e = PgStore::open(&options).err().expect("refused").to_string();
        assert!(
            !e.contains("w7rongpass3k") && !e.contains("s3cretpw"),
            "{e}"
        );
        assert!(!e.contains(pg.password()), "{e}");
    }
}

#[test]
fn any_node_reads_and_deletes_a_row_and_the_owner_is_told() {
    let pg = start_postgres();
    let (mut n1, _) = open(&pg, "n1").unwrap();
    let (mut n2, _) = open(&pg, "n2").unwrap();
    n1.insert_all(&[record(1, 1)]);
    let id = record(1, 1).id;
    n2.journal.cluster(ClusterOp::Read { ticket: 3, id });
    match n2.next_event() {
        ClusterEvent::Read {
            ticket: 3,
            record: Ok(Some(read)),
        } => assert_eq!(*read, record(1, 1)),
        other => panic!("expected the row, got {other:?}"),
    }
    n2.journal.cluster(ClusterOp::Delete { ticket: 4, id });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::Deleted {
            ticket: 4,
            found: Ok(true)
        }
    ));
    // n1, the owner, hears who deleted it and the ticket to answer; its answer reaches
    // n2.
    match n1.next_event() {
        ClusterEvent::DeleteAsked {
            id: dropped,
            by,
            ticket: 4,
        } => {
            assert_eq!(dropped, id);
            assert_eq!(by.as_str(), "n2");
            n1.journal.cluster(ClusterOp::Ack { to: by, ticket: 4 });
        }
        other => panic!("expected n1 to hear of the DELETE, got {other:?}"),
    }
    assert!(matches!(n2.next_event(), ClusterEvent::Acked { ticket: 4 }));
    n2.journal.cluster(ClusterOp::Delete { ticket: 5, id });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::Deleted {
            ticket: 5,
            found: Ok(false)
        }
    ));
    n2.journal.cluster(ClusterOp::Read { ticket: 6, id });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::Read {
            ticket: 6,
            record: Ok(None)
        }
    ));
}

#[test]
fn a_node_cut_from_the_database_reconnects_and_lists_its_rows() {
    let pg = start_postgres();
    let (mut n1, _) = open(&pg, "n1").unwrap();
    n1.insert_all(&[record(1, 1), record(2, 2)]);
    // The database ends n1's connection, as a failover or a restart of it would.
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'imap-push-proxy'",
    )
    .unwrap();
    let started = Instant::now();
    let event = n1.next_event();
    assert!(
        matches!(event, ClusterEvent::Reconnected),
        "expected a reconnect, got {event:?}"
    );
    assert!(started.elapsed() < ANSWER_TIMEOUT);
    n1.journal.cluster(ClusterOp::Owned { ticket: 8 });
    match n1.next_event() {
        ClusterEvent::Owned {
            ticket: 8,
            ids: Ok(listed),
        } => {
            let listed: HashSet<SubscriptionId> = listed.into_iter().collect();
            assert_eq!(listed, ids(&[record(1, 1), record(2, 2)]));
        }
        other => panic!("expected the listing, got {other:?}"),
    }
}

/// The same keys become ready on two nodes at once: every write commits (a unique
/// violation would fail a whole batch, unrelated registrations with it), one row per
/// key stays, and each losing node hears of each key it lost.
#[test]
fn one_key_ready_on_two_nodes_at_once_leaves_one_row_and_fails_no_batch() {
    const KEYS: u64 = 200;
    let pg = start_postgres();
    let (mut n1, _) = open(&pg, "n1").unwrap();
    let (mut n2, _) = open(&pg, "n2").unwrap();
    let first: Vec<Record> = (0..KEYS).map(|k| record(k, k)).collect();
    let second: Vec<Record> = (0..KEYS).map(|k| record(1_000 + k, k)).collect();
    std::thread::scope(|scope| {
        scope.spawn(|| n1.insert_all(&first));
        scope.spawn(|| n2.insert_all(&second));
    });
    let rows = pg
        .psql("SELECT count(*), count(DISTINCT key_hash) FROM imap_push_subscriptions")
        .unwrap();
    assert_eq!(rows.trim(), format!("{KEYS}|{KEYS}"));
    let owners = pg
        .psql("SELECT owner, count(*) FROM imap_push_subscriptions GROUP BY owner ORDER BY owner")
        .unwrap();
    let held = |node: &str| -> u64 {
        owners
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{node}|")))
            .map_or(0, |n| n.parse().unwrap())
    };
    // Each node lost the keys the other holds, and heard of each.
    for (node, other) in [(&n1, "n2"), (&n2, "n1")] {
        let mut dropped = 0;
        while dropped < held(other) {
            match node.next_event() {
                ClusterEvent::Dropped { .. } => dropped += 1,
                other => panic!("expected a drop, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_verification_reaches_the_owner_and_its_outcome_comes_back() {
    use server::journal::VerifyOutcome;
    let pg = start_postgres();
    let (mut n1, _) = open(&pg, "n1").unwrap();
    let (mut n2, _) = open(&pg, "n2").unwrap();
    n1.insert_all(&[record(1, 1)]);
    let id = record(1, 1).id;
    let digests = [[7u8; 32], [9u8; 32]];
    n2.journal.cluster(ClusterOp::Verify {
        ticket: 5,
        id,
        digests,
    });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::VerifyForwarded {
            ticket: 5,
            found: Ok(true)
        }
    ));
    let by = match n1.next_event() {
        ClusterEvent::VerifyAsked {
            id: asked,
            by,
            ticket: 5,
            digests: got,
        } => {
            assert_eq!((asked, got), (id, digests));
            by
        }
        other => panic!("expected the forwarded verification, got {other:?}"),
    };
    n1.journal.cluster(ClusterOp::VerifyReply {
        to: by,
        ticket: 5,
        outcome: VerifyOutcome::Verified,
    });
    assert!(matches!(
        n2.next_event(),
        ClusterEvent::VerifyAnswered {
            ticket: 5,
            outcome: VerifyOutcome::Verified
        }
    ));
    // n1's own row asked through n1, or no row: nobody is told.
    n1.journal.cluster(ClusterOp::Verify {
        ticket: 6,
        id,
        digests,
    });
    assert!(matches!(
        n1.next_event(),
        ClusterEvent::VerifyForwarded {
            ticket: 6,
            found: Ok(false)
        }
    ));
}
