//! The subscription journal: every live subscription, without any credential, in a
//! [`Store`]: an embedded redb file in the data dir ([`redb_store`], the default for one
//! box), or a PostgreSQL database that several nodes share ([`postgres`]).
//!
//! Why: a crash, `kill -9`, power loss or upgrade must not drop a user silently. On start,
//! every subscription left over from the previous run gets its reconnect push
//! (`server_restart`) and then leaves the journal, so the app registers again.
//!
//! Writes go through one writer thread that drives the store and commits in batches
//! (group commit): a burst of registrations costs one fsync per batch, not one per
//! registration. A registration is answered only after its record is durable. The
//! writer thread also carries a clustered store's other work ([`ClusterOp`]: heartbeats,
//! claims), in order with the commits, and its notices ([`ClusterEvent`]) back to the
//! owner: the owner thread never waits on the database.

pub mod cluster;
pub mod postgres;
pub mod redb_store;

pub use cluster::{ClusterEvent, ClusterOp, VerifyOutcome};

use std::collections::VecDeque;
use std::path::Path;
use std::thread::JoinHandle;

use base64::Engine as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::log_limit::{LogLimit, Verdict};
use push::{Keys, Protocol, PushTarget};
use serde::{Deserialize, Serialize};

use crate::id::SubscriptionId;

/// Most operations committed in one transaction.
pub const BATCH_MAX: usize = 1024;

pub use redb_store::{RedbStore, JOURNAL_CACHE_BYTES};

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

/// The record format this binary writes: `"v"` in every record. A field added later
/// is optional (an older binary ignores it, a newer one reads its absence as the old
/// meaning, as `tag` and `verifying` were added), so two versions can share a journal,
/// as two nodes of a cluster do during a rolling upgrade. The format goes up only for a
/// change an older binary would misread; that binary then refuses the record
/// ([`JournalError::Newer`]) instead of guessing. Records written before the field
/// existed are format 1.
pub const RECORD_FORMAT: u32 = 1;

/// A record as written: its format, then its fields.
#[derive(Serialize)]
struct Versioned<'a> {
    v: u32,
    #[serde(flatten)]
    record: &'a Record,
}

/// A record as read; `v` absent is format 1.
#[derive(Deserialize)]
struct Stored {
    #[serde(default = "first_format")]
    v: u32,
    #[serde(flatten)]
    record: Record,
}

fn first_format() -> u32 {
    1
}

/// A record's bytes in the journal (JSON, with its format).
pub fn encode_record(record: &Record) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Versioned {
        v: RECORD_FORMAT,
        record,
    })
}

/// A record from its bytes; refused if its format is newer than this binary's.
pub fn decode_record(bytes: &[u8]) -> Result<Record, JournalError> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(JournalError::corrupt)?;
    if stored.v > RECORD_FORMAT {
        return Err(JournalError::Newer { found: stored.v });
    }
    Ok(stored.record)
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
    /// A live node (its heartbeat younger than `node_lost_after_secs`) holds this
    /// `node_id` in the shared journal.
    NodeLive(String),
    /// A record in a format newer than [`RECORD_FORMAT`]: written by a newer binary in a
    /// way this one would misread, so it is refused rather than guessed at.
    Newer {
        found: u32,
    },
}

impl JournalError {
    pub(crate) fn corrupt(e: impl std::fmt::Display) -> JournalError {
        JournalError::Corrupt(e.to_string())
    }
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Open(e) => write!(f, "cannot open the journal: {e}"),
            JournalError::Read(e) => write!(f, "cannot read the journal: {e}"),
            JournalError::Corrupt(e) => write!(f, "a journal record is corrupt: {e}"),
            JournalError::Newer { found } => write!(
                f,
                "a journal record has format {found}, newer than this binary's \
                 {RECORD_FORMAT}: run the binary that wrote it (or a newer one)"
            ),
            JournalError::NodeLive(id) => write!(
                f,
                "a live node holds node_id {id:?} (its heartbeat is fresh): two nodes may \
                 not share an id; stop the other, or wait node_lost_after_secs after it died"
            ),
        }
    }
}

impl std::error::Error for JournalError {}

/// Why a store could not do what it was asked. The text names the storage fault (IO,
/// corruption, a refused connection, a database error), never a record or a password.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record to write: its id, its dedup key hash and state (columns of a shared store),
/// and its bytes (JSON, as the redb file has always held them).
#[derive(Debug)]
pub struct Insert {
    pub id: String,
    pub key_hash: String,
    pub verifying: bool,
    pub bytes: Vec<u8>,
}

/// One change of a batch the writer commits in one transaction.
#[derive(Debug)]
pub enum Change<'a> {
    Insert(&'a Insert),
    Remove(&'a str),
    /// Touch the storage as a batch of records would, and keep nothing a restart reads.
    Probe,
}

/// Where the journal's records live. The writer thread alone drives it; every method
/// may block on the storage.
pub trait Store: Send + 'static {
    /// Applies `changes` in one transaction, durably, or none of them.
    fn commit(&mut self, changes: &[Change<'_>]) -> Result<(), StoreError>;

    /// Carries out `op` (clustered stores only: the others never get one, since the core
    /// asks only when `journal` is a database).
    /// Answered with the event for the owner, or `None` when nobody waits for one.
    fn cluster(&mut self, op: ClusterOp) -> Result<Option<ClusterEvent>, StoreError> {
        let _ = op;
        Err(StoreError("this journal is not shared by a cluster".into()))
    }

    /// Notices that arrived since the last call, without waiting.
    fn poll_notices(&mut self, notices: &mut Vec<ClusterEvent>) {
        let _ = notices;
    }

    /// How often the writer polls for notices while idle; `None`: it never needs to.
    fn poll_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// The server stops cleanly: a clustered store marks this node stopped, so that a
    /// restart with the same `node_id` is not refused as a live twin.
    fn stopped(&mut self) {}
}

/// Runs once the operation it came with is durable (`true`) or failed to commit (`false`).
pub type Then = Box<dyn FnOnce(bool) + Send>;

enum Op {
    Insert(Insert, Option<Then>),
    Remove(String, Option<Then>),
    Probe(Then),
    Cluster(ClusterOp),
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

impl Journal {
    /// Opens (or creates) the redb journal at `path` and returns what the previous run
    /// left.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        let (store, leftovers) = RedbStore::open(path)?;
        Ok((Journal::start(Box::new(store), None)?, leftovers))
    }

    /// Starts the writer thread on `store`. A clustered store's answers and notices go to
    /// `events`; the writer waits when that channel is full (the owner, which reads it,
    /// never waits for the writer).
    pub fn start(
        store: Box<dyn Store>,
        events: Option<Sender<ClusterEvent>>,
    ) -> Result<Journal, JournalError> {
        let (ops, rx) = ops_channel();
        let stats = std::sync::Arc::new(JournalStats::default());
        let writer = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("journal".into())
                .spawn(move || write_loop(store, &rx, &stats, events.as_ref()))
                .map_err(|e| JournalError::Open(e.to_string()))?
        };
        Ok(Journal {
            ops: Some(ops),
            backlog: VecDeque::new(),
            writer: Some(writer),
            stats,
            full_log: LogLimit::default(),
        })
    }

    /// Records a subscription; `then` runs once it is durable. Never waits.
    pub fn insert(&mut self, record: &Record, then: Then) {
        let bytes = match encode_record(record) {
            Ok(bytes) => bytes,
            Err(_) => return then(false),
        };
        let insert = Insert {
            id: record.id.to_string(),
            key_hash: record.key_hash.clone(),
            verifying: record.verifying,
            bytes,
        };
        self.offer(Op::Insert(insert, Some(then)));
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

    /// Queues a clustered store's work, in order with the writes before it; the answer
    /// comes on the events channel. Never waits: one that finds the backlog full is
    /// dropped, and the core sees no answer (a heartbeat not renewed).
    pub fn cluster(&mut self, op: ClusterOp) {
        self.offer(Op::Cluster(op));
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
        Op::Insert(_, Some(then)) | Op::Remove(_, Some(then)) | Op::Probe(then) => then(false),
        Op::Insert(_, None) | Op::Remove(_, None) | Op::Cluster(_) | Op::Flush(_) => {}
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

/// Drives the store until the channel closes: commits batches of writes, carries out
/// cluster work in order between them, and passes notices on.
fn write_loop(
    mut store: Box<dyn Store>,
    rx: &Receiver<Op>,
    stats: &JournalStats,
    events: Option<&Sender<ClusterEvent>>,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut failure_log = LogLimit::<()>::default();
    let poll = store.poll_interval();
    loop {
        let first = match poll {
            Some(every) => match rx.recv_timeout(every) {
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            },
        };
        if let Some(first) = first {
            batch.push(first);
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut run = Vec::with_capacity(batch.len());
            for op in batch.drain(..) {
                let Op::Cluster(cluster) = op else {
                    run.push(op);
                    continue;
                };
                commit_run(&mut *store, &mut run, stats, &mut failure_log);
                let event = store.cluster(cluster).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cluster work failed");
                    failed_answer(cluster)
                });
                if let Some(event) = event {
                    send_event(events, event);
                }
            }
            commit_run(&mut *store, &mut run, stats, &mut failure_log);
        }
        let mut notices = Vec::new();
        store.poll_notices(&mut notices);
        for notice in notices {
            send_event(events, notice);
        }
    }
    store.stopped();
}

fn send_event(events: Option<&Sender<ClusterEvent>>, event: ClusterEvent) {
    if let Some(events) = events {
        let _ = events.send(event);
    }
}

/// The answer of cluster work that failed: nothing renewed, taken, read or removed.
fn failed_answer(op: ClusterOp) -> Option<ClusterEvent> {
    let event = match op {
        ClusterOp::Heartbeat { ticket } => ClusterEvent::Heartbeat { ticket, ok: false },
        ClusterOp::ClaimLost { .. } | ClusterOp::ClaimOwn => ClusterEvent::Claimed {
            records: Vec::new(),
            own: matches!(op, ClusterOp::ClaimOwn),
            ok: false,
        },
        ClusterOp::Read { ticket, .. } => ClusterEvent::Read {
            ticket,
            record: Err(()),
        },
        ClusterOp::Delete { ticket, .. } => ClusterEvent::Deleted {
            ticket,
            found: Err(()),
        },
        // The asking node times out.
        ClusterOp::Ack { .. } | ClusterOp::VerifyReply { .. } => return None,
        ClusterOp::Verify { ticket, .. } => ClusterEvent::VerifyForwarded {
            ticket,
            found: Err(()),
        },
        ClusterOp::Owned { ticket } => ClusterEvent::Owned {
            ticket,
            ids: Err(()),
        },
    };
    Some(event)
}

/// Commits `run` (writes, probes and flushes, no cluster work) in one transaction and
/// tells each waiter its outcome. An empty run commits nothing.
fn commit_run(
    store: &mut dyn Store,
    run: &mut Vec<Op>,
    stats: &JournalStats,
    failure_log: &mut LogLimit<()>,
) {
    use std::sync::atomic::Ordering;
    let changes: Vec<Change<'_>> = run
        .iter()
        .filter_map(|op| match op {
            Op::Insert(insert, _) => Some(Change::Insert(insert)),
            Op::Remove(id, _) => Some(Change::Remove(id)),
            Op::Probe(_) => Some(Change::Probe),
            Op::Cluster(_) | Op::Flush(_) => None,
        })
        .collect();
    let ok = if changes.is_empty() {
        true
    } else {
        let started = std::time::Instant::now();
        let result = store.commit(&changes);
        stats.commit_time.record(started.elapsed());
        if let Err(e) = &result {
            if let Verdict::Log { more } | Verdict::Overflow { more } =
                failure_log.check((), std::time::Instant::now())
            {
                tracing::error!(error = %e, ops = run.len(), more, "journal commit failed");
            }
        }
        let counter = if result.is_ok() {
            &stats.commits
        } else {
            &stats.commit_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.is_ok()
    };
    drop(changes);
    for op in run.drain(..) {
        match op {
            Op::Insert(_, Some(then)) | Op::Remove(_, Some(then)) | Op::Probe(then) => then(ok),
            Op::Flush(done) => {
                let _ = done.send(());
            }
            Op::Insert(_, None) | Op::Remove(_, None) | Op::Cluster(_) => {}
        }
    }
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
    fn records_carry_their_format_and_a_newer_one_is_refused_not_guessed() {
        let bytes = encode_record(&record("a")).unwrap();
        let json = String::from_utf8(bytes.clone()).unwrap();
        assert!(json.starts_with(r#"{"v":1,"#), "{json}");
        assert_eq!(decode_record(&bytes).unwrap(), record("a"));
        // Written before the format field existed: format 1.
        let old = r#"{"id":"00112233445566778899aabbccddeeff","key_hash":"00","new_mail":{"endpoint":"https://p/n","p256dh":null,"auth":null,"simplepush":false},"reconnect":{"endpoint":"https://p/r","p256dh":null,"auth":null,"simplepush":false},"created_unix":1}"#;
        assert_eq!(decode_record(old.as_bytes()).unwrap().created_unix, 1);
        // A newer binary's optional field, same format: read, the field ignored.
        let added = json.replacen(r#""v":1,"#, r#""v":1,"later_field":[1,2],"#, 1);
        assert_eq!(decode_record(added.as_bytes()).unwrap(), record("a"));
        // A newer format: refused, with the version named.
        let newer = json.replacen(r#""v":1,"#, r#""v":2,"#, 1);
        let e = decode_record(newer.as_bytes()).unwrap_err();
        assert!(matches!(e, JournalError::Newer { found: 2 }), "{e}");
        assert!(e.to_string().contains("format 2"), "{e}");
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
        assert!(matches!(last_queued, Some(Op::Insert(insert, _)) if insert.id == expected));
        journal.ops = None;
    }

    #[test]
    fn debug_shows_no_endpoint_path() {
        let text = format!("{:?}", record("x"));
        assert!(!text.contains("/new") && !text.contains("/re\""), "{text}");
    }
}
