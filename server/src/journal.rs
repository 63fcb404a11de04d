//! The subscription journal: every live subscription, without any credential, in an
//! embedded database (redb) in the data dir.
//!
//! Why: a crash, `kill -9`, power loss or upgrade must not drop a user silently. On start,
//! every subscription left over from the previous run gets its reconnect push
//! (`server_restart`) and then leaves the journal, so the app registers again.
//!
//! Why redb: pure Rust (no C toolchain in the build), one file, ACID transactions with an
//! fsync per commit, and a key-value table is all we need.
//!
//! Writes go through one writer thread that commits in batches (group commit): a burst of
//! registrations costs one fsync per batch, not one per registration. A registration is
//! answered only after its record is durable.

use std::collections::VecDeque;
use std::path::Path;
use std::thread::JoinHandle;

use base64::Engine as _;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::log_limit::{LogLimit, Verdict};
use push::{Keys, Protocol, PushTarget};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::id::SubscriptionId;

/// Most operations committed in one transaction.
pub const BATCH_MAX: usize = 1024;

/// Memory redb may use to cache the journal's pages (redb's default is 1 GiB). The journal
/// is read once, at start, and otherwise only written, so a cache buys nothing; with the
/// default every record written stayed cached, and each subscription cost its record
/// again in the proxy's RSS (whole-proxy density bench, `proxy_density`). The file's pages
/// stay in the kernel's page cache, which the kernel may reclaim.
///
/// Why 256 KiB and not more: records are ~700 bytes of random-keyed leaves, so a cache
/// fills with one page per record written until it is full. At 2 MiB it was still filling
/// at 3,000 subscriptions, and the bench counted ~450 bytes of it per subscription between
/// 1,000 and 4,000 (estimated; a heap profile showed 1.4 MB of redb pages at 2,000). A commit
/// touches a random leaf per record either way, which no cache of a bounded size holds
/// for a large journal: a page the cache does not hold is read back from the kernel's
/// page cache.
pub const JOURNAL_CACHE_BYTES: usize = 256 * 1024;

/// Operations waiting for the writer thread: four batches. The owner thread, the only
/// one that writes, never waits here, since the writer may itself be waiting for the
/// owner to read its outcomes; an operation that finds the queue full goes to the
/// owner's backlog and is offered again on the owner's next turn.
pub const OPS_QUEUE_MAX: usize = 4 * BATCH_MAX;

/// Operations in the owner's backlog at most, behind a full [`OPS_QUEUE_MAX`]: the
/// disk has stalled for many batches. One more write is failed at once: a registration
/// gets `500` (as when a commit fails) and a removal nobody waits for is dropped and
/// counted in [`JournalStats::removals_dropped`] (its subscription gets one more
/// `server_restart` push after the next restart, never fewer pushes).
pub const BACKLOG_MAX: usize = 64 * BATCH_MAX;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");
/// Where a probe writes (see [`Journal::probe`]): apart from the records, so a restart
/// never reads it as one.
const PROBE_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
/// What a probe writes: a page's worth, so that the commit allocates and writes pages as
/// a batch of records would.
const PROBE_BYTES: usize = 4096;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One journalled subscription. Holds no credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Kept as its 32 hex digits, as older binaries wrote and read it.
    pub id: SubscriptionId,
    /// Hex SHA-256 of the dedup key (host, port, username, device_id).
    pub key_hash: String,
    pub new_mail: TargetRecord,
    pub reconnect: TargetRecord,
    pub created_unix: u64,
    /// The app's tag, so the restart push carries it too. Absent in records written
    /// before tags existed, which still read (as no tag). `Debug` shows only its length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<push::message::Tag>,
    /// The subscription had not verified its endpoints yet ([`crate::verification`]):
    /// after a restart it gets no push and is dropped. Absent (false) in records written
    /// before verification existed, and in records of active subscriptions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verifying: bool,
}

/// A push target as stored. The keys are the subscription's public key and auth secret,
/// needed to encrypt the restart push.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub endpoint: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub simplepush: bool,
}

impl std::fmt::Debug for TargetRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRecord")
            .field("endpoint", &push::redacted_url(&self.endpoint))
            .field("keys", &self.p256dh.is_some())
            .finish()
    }
}

impl TargetRecord {
    pub fn from_target(target: &PushTarget) -> TargetRecord {
        TargetRecord {
            endpoint: target.endpoint().to_owned(),
            p256dh: target.keys().map(|k| B64.encode(k.p256dh())),
            auth: target.keys().map(|k| B64.encode(k.auth())),
            simplepush: target.protocol() == Protocol::SimplePush,
        }
    }

    pub fn to_target(&self) -> Result<PushTarget, JournalError> {
        let keys = match (&self.p256dh, &self.auth) {
            (Some(p), Some(a)) => Some(Keys::from_b64url(p, a).map_err(JournalError::corrupt)?),
            _ => None,
        };
        let protocol = if self.simplepush {
            Protocol::SimplePush
        } else {
            Protocol::WebPush
        };
        PushTarget::new(&self.endpoint, keys, protocol).map_err(JournalError::corrupt)
    }
}

/// What went wrong with the journal.
#[derive(Debug)]
pub enum JournalError {
    Open(String),
    Read(String),
    Corrupt(String),
}

impl JournalError {
    fn corrupt(e: impl std::fmt::Display) -> JournalError {
        JournalError::Corrupt(e.to_string())
    }
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Open(e) => write!(f, "cannot open the journal: {e}"),
            JournalError::Read(e) => write!(f, "cannot read the journal: {e}"),
            JournalError::Corrupt(e) => write!(f, "a journal record is corrupt: {e}"),
        }
    }
}

impl std::error::Error for JournalError {}

/// Runs once the operation it came with is durable (`true`) or failed to commit (`false`).
pub type Then = Box<dyn FnOnce(bool) + Send>;

enum Op {
    Insert(String, Vec<u8>, Option<Then>),
    Remove(String, Option<Then>),
    Probe(Then),
    Flush(Sender<()>),
}

/// Counters of the writer.
#[derive(Debug, Default)]
pub struct JournalStats {
    pub commits: std::sync::atomic::AtomicU64,
    pub commit_failures: std::sync::atomic::AtomicU64,
    /// Removals dropped at [`BACKLOG_MAX`].
    pub removals_dropped: std::sync::atomic::AtomicU64,
    /// How long each group commit takes, from the write transaction's start to the end
    /// of its fsync, failed ones included.
    pub commit_time: engine::histogram::Histogram,
}

/// The owner's handle on the writer thread.
pub struct Journal {
    ops: Option<Sender<Op>>,
    /// Operations that found the queue full, oldest first; offered before any new one
    /// so that a removal never overtakes the insert it removes.
    backlog: VecDeque<Op>,
    writer: Option<JoinHandle<()>>,
    pub stats: std::sync::Arc<JournalStats>,
    /// One line a minute at most while the backlog is full.
    full_log: LogLimit<()>,
}

/// The bounded queue of operations for the writer.
fn ops_channel() -> (Sender<Op>, Receiver<Op>) {
    crossbeam_channel::bounded(OPS_QUEUE_MAX)
}

/// redb on `path`, its page cache bounded: at start and whenever the writer opens it
/// again after a failed commit.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(JOURNAL_CACHE_BYTES)
        .create(path)
}

impl Journal {
    /// Opens (or creates) the journal at `path` and returns what the previous run left.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        // The file exists, owner-only, before redb opens it.
        drop(open_private(path).map_err(|e| JournalError::Open(e.to_string()))?);
        let db = open_database(path).map_err(|e| JournalError::Open(e.to_string()))?;
        let leftovers = read_all(&db)?;
        let (ops, rx) = ops_channel();
        let stats = std::sync::Arc::new(JournalStats::default());
        let writer = {
            let (stats, path) = (stats.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || write_loop(&path, db, &rx, &stats))
                .map_err(|e| JournalError::Open(e.to_string()))?
        };
        Ok((
            Journal {
                ops: Some(ops),
                backlog: VecDeque::new(),
                writer: Some(writer),
                stats,
                full_log: LogLimit::default(),
            },
            leftovers,
        ))
    }

    /// Records a subscription; `then` runs once it is durable. Never waits.
    pub fn insert(&mut self, record: &Record, then: Then) {
        let bytes = match serde_json::to_vec(record) {
            Ok(bytes) => bytes,
            Err(_) => return then(false),
        };
        self.offer(Op::Insert(record.id.to_string(), bytes, Some(then)));
    }

    /// Removes `id`'s record. Never waits.
    pub fn remove(&mut self, id: &SubscriptionId) {
        self.offer(Op::Remove(id.to_string(), None));
    }

    /// Removes `id`'s record and calls `then(durable)` once the removal is committed (or
    /// failed): a DELETE is answered only when no restart can bring the record back.
    /// Never waits.
    pub fn remove_then(&mut self, id: &SubscriptionId, then: Then) {
        self.offer(Op::Remove(id.to_string(), Some(then)));
    }

    /// Writes a probe that touches the disk as a batch of records would, and calls
    /// `then(durable)`: how a failed journal shows that it works again. Never waits.
    pub fn probe(&mut self, then: Then) {
        self.offer(Op::Probe(then));
    }

    /// Whether operations wait in the backlog: the owner calls
    /// [`Journal::offer_backlog`] again soon.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Offers the backlog to the writer, oldest first, until the queue is full.
    pub fn offer_backlog(&mut self) {
        let Some(ops) = &self.ops else {
            return;
        };
        while let Some(op) = self.backlog.pop_front() {
            match ops.try_send(op) {
                Ok(()) => {}
                Err(TrySendError::Full(op)) => {
                    self.backlog.push_front(op);
                    return;
                }
                Err(TrySendError::Disconnected(op)) => return fail(op),
            }
        }
    }

    /// Blocks until everything queued before is committed. Only for shutdown, once
    /// nobody waits for the outcomes any more: it waits for the writer.
    pub fn flush(&mut self) {
        let Some(ops) = &self.ops else {
            return;
        };
        for op in self.backlog.drain(..) {
            if let Err(e) = ops.send(op) {
                fail(e.into_inner());
            }
        }
        let (done, wait) = crossbeam_channel::bounded(1);
        if ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Queues `op` behind the backlog, or fails it at once at [`BACKLOG_MAX`].
    fn offer(&mut self, op: Op) {
        self.offer_backlog();
        let Some(ops) = &self.ops else {
            return fail(op);
        };
        if !self.backlog.is_empty() {
            return self.keep(op);
        }
        match ops.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(op)) => self.keep(op),
            Err(TrySendError::Disconnected(op)) => fail(op),
        }
    }

    fn keep(&mut self, op: Op) {
        if self.backlog.len() < BACKLOG_MAX {
            return self.backlog.push_back(op);
        }
        if let Op::Remove(_, None) = op {
            let dropped = &self.stats.removals_dropped;
            dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Verdict::Log { more } | Verdict::Overflow { more } =
            self.full_log.check((), std::time::Instant::now())
        {
            tracing::error!(
                backlog = BACKLOG_MAX,
                more,
                "journal backlog full: the writer is stalled; write refused"
            );
        }
        fail(op);
    }
}

/// Tells whoever waits for `op` that it was not written.
fn fail(op: Op) {
    match op {
        Op::Insert(_, _, Some(then)) | Op::Remove(_, Some(then)) | Op::Probe(then) => then(false),
        Op::Insert(_, _, None) | Op::Remove(_, None) | Op::Flush(_) => {}
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The backlog goes in first (the writer drains the queue meanwhile); closing the
        // channel then lets the writer commit what is queued and stop.
        if let Some(ops) = &self.ops {
            for op in self.backlog.drain(..) {
                if let Err(e) = ops.send(op) {
                    fail(e.into_inner());
                }
            }
        }
        self.ops = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Opens the journal file, creating it owner-only (0600) from the first instant: push
/// keys and endpoints are in there, and a file created with the umask's mode and
/// restricted afterwards could be opened by anyone in between. A file left by an older
/// version with a wider mode is restricted too.
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

fn read_all(db: &Database) -> Result<Vec<Record>, JournalError> {
    let read_error = |e: &dyn std::fmt::Display| JournalError::Read(e.to_string());
    let txn = db.begin_read().map_err(|e| read_error(&e))?;
    let table = match txn.open_table(TABLE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_error(&e)),
    };
    let mut records = Vec::new();
    for entry in table.iter().map_err(|e| read_error(&e))? {
        let (_, value) = entry.map_err(|e| read_error(&e))?;
        records.push(serde_json::from_slice(value.value()).map_err(JournalError::corrupt)?);
    }
    Ok(records)
}

/// Commits batches until the channel closes. After a failed commit redb refuses every
/// later one ("previous I/O error") until the database is opened again, so the writer
/// drops it and opens it again before the next batch: a disk that had no room, or
/// failed for a moment, is used again once it works, and the probes of `/readyz` see it.
fn write_loop(path: &Path, db: Database, rx: &Receiver<Op>, stats: &JournalStats) {
    use std::sync::atomic::Ordering;
    let mut db = Some(db);
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut failure_log = LogLimit::<()>::default();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if db.is_none() {
            db = open_database(path).ok();
        }
        let started = std::time::Instant::now();
        let result = match db.as_ref() {
            Some(db) => commit(db, &batch).map_err(|e| e.to_string()),
            None => Err("the journal could not be opened again".to_owned()),
        };
        stats.commit_time.record(started.elapsed());
        if let Err(e) = &result {
            // redb's error names the storage fault (IO, corruption), never a record.
            if let Verdict::Log { more } | Verdict::Overflow { more } =
                failure_log.check((), std::time::Instant::now())
            {
                tracing::error!(error = %e, ops = batch.len(), more, "journal commit failed");
            }
        }
        let ok = result.is_ok();
        let counter = if ok {
            &stats.commits
        } else {
            // Closed before it is opened again: redb allows one open handle per file.
            db = None;
            &stats.commit_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        for op in batch.drain(..) {
            match op {
                Op::Insert(_, _, Some(then)) | Op::Remove(_, Some(then)) | Op::Probe(then) => {
                    then(ok)
                }
                Op::Flush(done) => {
                    let _ = done.send(());
                }
                Op::Insert(_, _, None) | Op::Remove(_, None) => {}
            }
        }
    }
}

fn commit(db: &Database, batch: &[Op]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(TABLE)?;
        for op in batch {
            match op {
                Op::Insert(id, bytes, _) => {
                    table.insert(id.as_str(), bytes.as_slice())?;
                }
                Op::Remove(id, _) => {
                    table.remove(id.as_str())?;
                }
                Op::Probe(_) | Op::Flush(_) => {}
            }
        }
    }
    if batch.iter().any(|op| matches!(op, Op::Probe(_))) {
        let mut table = txn.open_table(PROBE_TABLE)?;
        table.insert("probe", [0u8; PROBE_BYTES].as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record {
            id: crate::id::named(id),
            key_hash: "00".repeat(32),
            new_mail: TargetRecord {
                endpoint: "https://push.example/new".into(),
                p256dh: None,
                auth: None,
                simplepush: false,
            },
            reconnect: TargetRecord {
                endpoint: "https://push.example/re".into(),
                p256dh: None,
                auth: None,
                simplepush: true,
            },
            created_unix: 1,
            tag: None,
            verifying: false,
        }
    }

    #[test]
    fn a_record_without_a_tag_still_reads_and_a_tag_round_trips() {
        let old = r#"{"id":"00112233445566778899aabbccddeeff","key_hash":"00","new_mail":{"endpoint":"https://p/n","p256dh":null,"auth":null,"simplepush":false},"reconnect":{"endpoint":"https://p/r","p256dh":null,"auth":null,"simplepush":false},"created_unix":1}"#;
        let read: Record = serde_json::from_str(old).unwrap();
        assert_eq!(read.tag, None);
        assert_eq!(read.id.to_string(), "00112233445566778899aabbccddeeff");
        let tagged = Record {
            tag: push::message::Tag::new("work"),
            ..record("b")
        };
        let json = serde_json::to_string(&tagged).unwrap();
        assert!(json.contains(r#""tag":"work""#), "{json}");
        let id = format!(r#""id":"{}""#, tagged.id);
        assert!(
            json.contains(&id),
            "the id stays its hex string on disk: {json}"
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), tagged);
        assert!(!format!("{tagged:?}").contains("work"), "never logged");
    }

    #[test]
    fn a_record_written_before_verification_reads_as_active_and_the_state_round_trips() {
        // A record as the previous version wrote it, tag included.
        let old = r#"{"id":"00112233445566778899aabbccddeeff","key_hash":"00","new_mail":{"endpoint":"https://p/n","p256dh":null,"auth":null,"simplepush":false},"reconnect":{"endpoint":"https://p/r","p256dh":null,"auth":null,"simplepush":false},"created_unix":1,"tag":"work"}"#;
        let read: Record = serde_json::from_str(old).unwrap();
        assert!(!read.verifying, "an old record is an active subscription");
        let active = serde_json::to_string(&record("a")).unwrap();
        assert!(
            !active.contains("verifying"),
            "active records stay as before: {active}"
        );
        let verifying = Record {
            verifying: true,
            ..record("b")
        };
        let json = serde_json::to_string(&verifying).unwrap();
        assert!(json.contains(r#""verifying":true"#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), verifying);
    }

    #[test]
    fn records_survive_a_reopen_and_removals_stick() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.redb");
        let _ = std::fs::remove_file(&path);
        {
            let (mut journal, leftovers) = Journal::open(&path).unwrap();
            assert!(leftovers.is_empty());
            let (tx, rx) = crossbeam_channel::bounded(100);
            for i in 0..100 {
                let tx = tx.clone();
                journal.insert(
                    &record(&format!("id{i}")),
                    Box::new(move |ok| tx.send(ok).unwrap()),
                );
            }
            for _ in 0..100 {
                assert!(rx.recv().unwrap(), "durable");
            }
            journal.remove(&crate::id::named("id7"));
            journal.flush();
            // Fewer commits than records: batching works.
            let commits = journal
                .stats
                .commits
                .load(std::sync::atomic::Ordering::Relaxed);
            assert!(commits < 100, "{commits} commits");
        }
        let (_journal, leftovers) = Journal::open(&path).unwrap();
        assert_eq!(leftovers.len(), 99);
        assert!(!leftovers.iter().any(|r| r.id == crate::id::named("id7")));
        assert_eq!(
            leftovers[0].reconnect.to_target().unwrap().protocol(),
            Protocol::SimplePush
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The cache is bounded ([`JOURNAL_CACHE_BYTES`]), the journal is not: records worth
    /// more than the cache, written in batches past it, all read back after a reopen.
    #[test]
    fn records_past_the_cache_size_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("journal-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.redb");
        let _ = std::fs::remove_file(&path);
        let long = format!("https://push.example/{}", "x".repeat(2_000));
        let big = |i: usize| {
            let mut r = record(&format!("big{i}"));
            r.new_mail.endpoint = format!("{long}/{i}");
            r
        };
        let count = 2 * JOURNAL_CACHE_BYTES / 2_000 + 1;
        {
            let (mut journal, _) = Journal::open(&path).unwrap();
            let (tx, rx) = crossbeam_channel::bounded(count);
            for i in 0..count {
                let tx = tx.clone();
                journal.insert(&big(i), Box::new(move |ok| tx.send(ok).unwrap()));
                // The owner offers its backlog again on each turn; so does this loop.
                journal.offer_backlog();
            }
            for _ in 0..count {
                assert!(rx.recv().unwrap(), "durable");
            }
        }
        let (_journal, leftovers) = Journal::open(&path).unwrap();
        assert_eq!(leftovers.len(), count);
        let total: usize = leftovers.iter().map(|r| r.new_mail.endpoint.len()).sum();
        assert!(total > JOURNAL_CACHE_BYTES, "{total} bytes");
        assert!(leftovers.contains(&big(count - 1)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A journal whose writer never reads: its queue and backlog fill up.
    fn stalled() -> (Journal, Receiver<Op>) {
        let (ops, rx) = ops_channel();
        let journal = Journal {
            ops: Some(ops),
            backlog: VecDeque::new(),
            writer: None,
            stats: std::sync::Arc::default(),
            full_log: LogLimit::default(),
        };
        (journal, rx)
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_owner_and_one_past_the_backlog_fails_at_once() {
        let (mut journal, rx) = stalled();
        let (tx, outcomes) = crossbeam_channel::bounded(1);
        for i in 0..OPS_QUEUE_MAX + BACKLOG_MAX {
            let tx = tx.clone();
            journal.insert(
                &record(&format!("id{i}")),
                Box::new(move |ok| tx.send(ok).unwrap()),
            );
        }
        assert!(outcomes.try_recv().is_err(), "every write kept");
        assert_eq!(
            (rx.len(), journal.backlog.len()),
            (OPS_QUEUE_MAX, BACKLOG_MAX)
        );
        let tx2 = tx.clone();
        journal.insert(
            &record("one-more"),
            Box::new(move |ok| tx2.send(ok).unwrap()),
        );
        assert_eq!(
            outcomes.try_recv(),
            Ok(false),
            "failed at once, not waited for"
        );
        journal.remove(&crate::id::named("x"));
        let dropped = journal
            .stats
            .removals_dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(dropped, 1);
        // The writer takes one batch: as much of the backlog moves up, in order.
        for _ in 0..BATCH_MAX {
            rx.try_recv().unwrap();
        }
        journal.offer_backlog();
        assert_eq!(journal.backlog.len(), BACKLOG_MAX - BATCH_MAX);
        let last_queued = rx.try_iter().last();
        let expected = crate::id::named(&format!("id{}", OPS_QUEUE_MAX + BATCH_MAX - 1));
        let expected = expected.to_string();
        assert!(matches!(last_queued, Some(Op::Insert(id, _, _)) if id == expected));
        journal.ops = None;
    }

    #[test]
    fn debug_shows_no_endpoint_path() {
        let text = format!("{:?}", record("x"));
        assert!(!text.contains("/new") && !text.contains("/re\""), "{text}");
    }
}
