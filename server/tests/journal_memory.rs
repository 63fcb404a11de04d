//! The journal's memory is bounded however long the churn: records written and removed
//! again and again (what a day of re-registrations does) must not grow the heap with
//! the file, and reading a journal at start must not keep the whole file. This binary
//! counts its live heap with the server's own allocator.

use std::str::FromStr;

use server::id::SubscriptionId;
use server::journal::{Journal, Record, TargetRecord, JOURNAL_CACHE_BYTES};

#[global_allocator]
static HEAP: httpd::alloc::Wiping<std::alloc::System> =
    httpd::alloc::Wiping::new(std::alloc::System);

/// The heap count is the whole binary's: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record(i: u64) -> Record {
    let target = |path: &str| TargetRecord {
        endpoint: format!("https://push.example/{path}/{i:032}"),
        p256dh: Some("B".repeat(87)),
        auth: Some("A".repeat(22)),
        simplepush: false,
    };
    Record {
        id: SubscriptionId::from_str(&format!("{i:032x}")).expect("32 hex digits"),
        key_hash: format!("{i:064x}"),
        new_mail: target("n"),
        reconnect: target("r"),
        created_unix: i,
        tag: None,
        verifying: false,
    }
}

/// Inserts `ids` and waits until every insert is durable.
fn insert_all(journal: &mut Journal, ids: impl Iterator<Item = u64>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut n = 0;
    for i in ids {
        let tx = tx.clone();
        journal.insert(
            &record(i),
            Box::new(move |ok| {
                let _ = tx.send(ok);
            }),
        );
        n += 1;
        if n % 1_000 == 0 {
            journal.flush();
        }
    }
    journal.flush();
    for _ in 0..n {
        assert!(rx.recv().expect("an answer per insert"), "durable");
    }
}

#[test]
fn churn_does_not_grow_the_heap_past_the_page_cache_bound() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("journal-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.redb");
    let (mut journal, _) = Journal::open(&path).unwrap();
    const LIVE: u64 = 5_000;
    insert_all(&mut journal, 0..LIVE);
    let start = httpd::alloc::live_bytes();

    // Replace every record several times over: ~4 x 5,000 records of ~400 bytes written
    // and removed, far more page traffic than the cache may keep.
    const ROUNDS: u64 = 4;
    for round in 1..=ROUNDS {
        for i in 0..LIVE {
            journal.remove(&record(i + (round - 1) * LIVE).id);
        }
        insert_all(&mut journal, round * LIVE..(round + 1) * LIVE);
    }
    let grown = httpd::alloc::live_bytes().saturating_sub(start);
    eprintln!("journal churn: heap {start} B -> +{grown} B");
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
    let file_traffic = ROUNDS * LIVE * 2 * 400;
    assert!(
        grown <= JOURNAL_CACHE_BYTES + 4 * 1024 * 1024,
        "the heap grew {grown} B over {file_traffic} B of churn (cache bound {JOURNAL_CACHE_BYTES} B)"
    );
}

#[test]
fn reading_a_journal_larger_than_the_cache_keeps_only_the_cache() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("journal-reopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.redb");
    const RECORDS: u64 = 40_000;
    {
        let (mut journal, _) = Journal::open(&path).unwrap();
        insert_all(&mut journal, 0..RECORDS);
    }
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let before = httpd::alloc::live_bytes();
    let (journal, leftovers) = Journal::open(&path).unwrap();
    assert_eq!(leftovers.len() as u64, RECORDS);
    drop(leftovers);
    let kept = httpd::alloc::live_bytes().saturating_sub(before);
    drop(journal);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("journal reopen: file {file} B, heap kept {kept} B");
    assert!(
        kept <= JOURNAL_CACHE_BYTES + 2 * 1024 * 1024,
        "reading a {file}-byte journal kept {kept} B (cache bound {JOURNAL_CACHE_BYTES} B)"
    );
}
