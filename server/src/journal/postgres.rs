//! The shared journal: one PostgreSQL database for every node of a cluster.
//!
//! Each row is what the redb record holds (JSON, never a credential) plus the columns the
//! cluster needs: the dedup key hash (unique among active rows, across the cluster), the
//! owner node and the owner epoch (bumped by every claim). A `nodes` table holds each
//! node's heartbeat, written with the database's clock, so that every node judges
//! liveness against one clock.
//!
//! Why the `postgres` crate: it is the synchronous face of `tokio-postgres`, the
//! maintained pure-Rust client (no libpq, no C toolchain). This project runs no async
//! runtime: the writer thread blocks on the database as it blocked on fsync, and the
//! crate's small private runtime stays inside this thread. Its notification API
//! (`LISTEN`) is polled without waiting, between commits.
//!
//! Not encrypted: the client connects without TLS (`NoTls`), so the database belongs on
//! loopback or a private network; a URL asking for TLS (`sslmode=require`) fails at start.
//!
//! Single winners, in SQL:
//! - a claim locks the lost node's row (`FOR UPDATE SKIP LOCKED`) and checks its heartbeat
//!   under that lock, then moves the rows (`FOR UPDATE SKIP LOCKED`): two survivors never
//!   take one row, and a node that restarts (which renews its heartbeat under the same
//!   lock) never finds its rows taken and pushed twice;
//! - a registration that becomes ready takes its key over in the transaction that writes
//!   its row: the row of the same key goes, and its owner, if another node, is told
//!   (`pg_notify`) to drop the session without a push.

use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::{Change, ClusterEvent, ClusterOp, JournalError, Record, Store, StoreError};
use crate::id::SubscriptionId;

/// How long a connection attempt may take: the writer thread is blocked meanwhile.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the database may leave data sent unacknowledged before the connection is
/// given up (`TCP_USER_TIMEOUT`): a database host that vanished fails the next statement
/// within this, instead of after the kernel's retransmissions (minutes).
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle writer looks for notifications: the delay of a takeover's notice.
pub const NOTICE_POLL: Duration = Duration::from_millis(100);

/// How often an idle writer whose connection was lost tries to connect again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// How long the writer lets the client read the socket for notifications on each turn.
const NOTICE_READ: Duration = Duration::from_millis(1);

/// The schema, created at every start and idempotent. Nodes serialize on an advisory
/// lock, since concurrent `CREATE ... IF NOT EXISTS` of one table may fail.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7467986347);
CREATE TABLE IF NOT EXISTS imap_push_nodes (
    node_id text PRIMARY KEY,
    heartbeat timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS imap_push_subscriptions (
    id text PRIMARY KEY,
    key_hash text NOT NULL,
    verifying boolean NOT NULL DEFAULT false,
    owner text NOT NULL,
    epoch bigint NOT NULL DEFAULT 0,
    record bytea NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS imap_push_subscriptions_key
    ON imap_push_subscriptions (key_hash) WHERE NOT verifying;
CREATE INDEX IF NOT EXISTS imap_push_subscriptions_owner
    ON imap_push_subscriptions (owner);
";

/// Transaction-scoped locks on key hashes (`$1`, sorted): see [`PgStore`]'s commit.
const LOCK_KEYS: &str = "
SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest($1::text[]) AS k";

/// An active row of the same key, of another subscription, leaves; its owner, if another
/// node, hears of it. `$1` key hash, `$2` the new row's id, `$3` this node.
const TAKE_KEY: &str = "
WITH gone AS (
    DELETE FROM imap_push_subscriptions
    WHERE key_hash = $1 AND id <> $2 AND NOT verifying
    RETURNING id, owner
)
SELECT pg_notify('imap_push_' || owner, id) FROM gone WHERE owner <> $3";

const INSERT: &str = "
INSERT INTO imap_push_subscriptions (id, key_hash, verifying, owner, epoch, record)
VALUES ($1, $2, $3, $4, 0, $5)
ON CONFLICT (id) DO UPDATE
SET key_hash = EXCLUDED.key_hash, verifying = EXCLUDED.verifying,
    owner = EXCLUDED.owner, record = EXCLUDED.record";

/// A removal; the owner, if another node (a DELETE through a node that does not hold the
/// session), hears of it. `$1` id, `$2` this node.
const REMOVE: &str = "
WITH gone AS (
    DELETE FROM imap_push_subscriptions WHERE id = $1 RETURNING id, owner
)
SELECT pg_notify('imap_push_' || owner, id) FROM gone WHERE owner <> $2";

/// A DELETE through any node: whether there was a row; its owner, if another node, hears
/// of it, with who asks and the ticket to answer (`id node ticket`). `$1` id, `$2` this
/// node, `$3` the ticket.
const DELETE: &str = "
WITH gone AS (
    DELETE FROM imap_push_subscriptions WHERE id = $1 RETURNING id, owner
), told AS (
    SELECT pg_notify('imap_push_' || owner, id || ' ' || $2 || ' ' || $3)
    FROM gone WHERE owner <> $2
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM told)";

/// A verification forwarded to the owner of `$1` (not this node, `$2`): `verify ID NODE
/// TICKET DIGEST DIGEST`, the digests in hex. How many owners were told (0 or 1).
const FORWARD_VERIFY: &str = "
SELECT count(pg_notify('imap_push_' || owner, 'verify ' || id || ' ' || $2 || ' ' || $3))
FROM imap_push_subscriptions WHERE id = $1 AND owner <> $2";

const HEARTBEAT: &str = "UPDATE imap_push_nodes SET heartbeat = now() WHERE node_id = $1";

/// Lost nodes, locked: `$1` this node, `$2` node_lost_after_secs. Only while this node's
/// own heartbeat is fresh: a node that may itself be lost claims nothing.
const LOST_NODES: &str = "
SELECT node_id FROM imap_push_nodes
WHERE node_id <> $1 AND heartbeat < now() - make_interval(secs => $2)
  AND EXISTS (SELECT 1 FROM imap_push_nodes
              WHERE node_id = $1 AND heartbeat >= now() - make_interval(secs => $2))
FOR UPDATE SKIP LOCKED";

/// `$1` this node, `$2` the lost nodes, `$3` most rows.
const CLAIM: &str = "
UPDATE imap_push_subscriptions SET owner = $1, epoch = epoch + 1
WHERE id IN (SELECT id FROM imap_push_subscriptions WHERE owner = ANY($2)
             LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING record";

/// This node's own rows, taken back (epoch bumped): at start and after a fence.
const CLAIM_OWN: &str = "
UPDATE imap_push_subscriptions SET epoch = epoch + 1 WHERE owner = $1 RETURNING record";

const LOCK_SELF: &str = "
SELECT heartbeat >= now() - make_interval(secs => $2) FROM imap_push_nodes
WHERE node_id = $1 FOR UPDATE";

/// The statements of one connection, prepared once.
struct Prepared {
    lock_keys: Statement,
    take_key: Statement,
    insert: Statement,
    remove: Statement,
    heartbeat: Statement,
}

struct Connection {
    client: Client,
    prepared: Prepared,
}

/// A node's handle on the shared database.
pub struct PgStore {
    config: postgres::Config,
    node_id: String,
    node_lost_after_secs: f64,
    connection: Option<Connection>,
    /// Connections made so far: every one after the first is a reconnect, after which
    /// the owner reconciles ([`ClusterEvent::Reconnected`]).
    connects: u64,
    /// A reconnect not told to the owner yet.
    reconnected: bool,
    /// When an idle writer last tried to connect again.
    last_attempt: Option<std::time::Instant>,
}

/// What a node needs to open the shared journal.
pub struct PgOptions<'a> {
    /// The `postgres://` URL. Its password is never logged: errors name only the fault.
    pub url: &'a str,
    pub node_id: &'a str,
    pub node_lost_after_secs: u64,
    /// This process took over from the one before it in place (an upgrade, see
    /// [`crate::upgrade`]): the live heartbeat under `node_id` is its own predecessor's,
    /// in the same PID, so it does not refuse to start.
    pub resuming: bool,
}

impl PgStore {
    /// Connects, creates the schema, registers this node and takes its own rows back:
    /// what a previous run of this `node_id` left (each gets its `server_restart` push).
    /// Refused while a live node (a heartbeat younger than `node_lost_after_secs`) holds
    /// the same `node_id`.
    pub fn open(options: &PgOptions<'_>) -> Result<(PgStore, Vec<Record>), JournalError> {
        let mut config: postgres::Config = options.url.parse().map_err(|_| {
            JournalError::Open("the journal URL is not a valid PostgreSQL URL".into())
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
        config.application_name("imap-push-proxy");
        let mut store = PgStore {
            config,
            node_id: options.node_id.to_owned(),
            node_lost_after_secs: options.node_lost_after_secs as f64,
            connection: None,
            connects: 0,
            reconnected: false,
            last_attempt: None,
        };
        let open = |e: StoreError| JournalError::Open(e.0);
        store.connect().map_err(open)?;
        let leftovers = store.register(options.resuming).map_err(|e| match e {
            Registered::Live => JournalError::NodeLive(store.node_id.clone()),
            Registered::Failed(e) => JournalError::Open(e.0),
        })?;
        Ok((store, leftovers))
    }

    /// The live connection, made (schema, statements, `LISTEN`) if there is none.
    fn connect(&mut self) -> Result<&mut Connection, StoreError> {
        if self.connection.is_none() {
            let mut client = self.config.connect(NoTls).map_err(db_error)?;
            client
                .batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;"))
                .map_err(db_error)?;
            client
                .batch_execute(&format!("LISTEN \"imap_push_{}\"", self.node_id))
                .map_err(db_error)?;
            let prepared = Prepared {
                lock_keys: client.prepare(LOCK_KEYS).map_err(db_error)?,
                take_key: client.prepare(TAKE_KEY).map_err(db_error)?,
                insert: client.prepare(INSERT).map_err(db_error)?,
                remove: client.prepare(REMOVE).map_err(db_error)?,
                heartbeat: client.prepare(HEARTBEAT).map_err(db_error)?,
            };
            self.connection = Some(Connection { client, prepared });
            self.connects += 1;
            self.reconnected = self.connects > 1;
        }
        self.connection
            .as_mut()
            .ok_or_else(|| StoreError("no connection".into()))
    }

    /// Runs `work` on the connection; a failure drops the connection, so that the next
    /// call connects again.
    fn with<T>(
        &mut self,
        work: impl FnOnce(&mut Connection, &str, f64) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let (node_id, lost) = (self.node_id.clone(), self.node_lost_after_secs);
        let connection = self.connect()?;
        let result = work(connection, &node_id, lost).map_err(db_error);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// This node's row: refused while live, else renewed; then its own rows taken back.
    fn register(&mut self, resuming: bool) -> Result<Vec<Record>, Registered> {
        let (node_id, lost) = (self.node_id.clone(), self.node_lost_after_secs);
        let connection = self.connect().map_err(Registered::Failed)?;
        let client = &mut connection.client;
        let failed = |e: postgres::Error| Registered::Failed(db_error(e));
        let mut txn = client.transaction().map_err(failed)?;
        txn.execute(
            "INSERT INTO imap_push_nodes (node_id, heartbeat) VALUES ($1, to_timestamp(0))
             ON CONFLICT (node_id) DO NOTHING",
            &[&node_id],
        )
        .map_err(failed)?;
        let live: bool = txn
            .query_one(LOCK_SELF, &[&node_id, &lost])
            .map_err(failed)?
            .get(0);
        if live && !resuming {
            return Err(Registered::Live);
        }
        txn.execute(HEARTBEAT, &[&node_id]).map_err(failed)?;
        let rows = txn.query(CLAIM_OWN, &[&node_id]).map_err(failed)?;
        txn.commit().map_err(failed)?;
        records(&rows).map_err(|e| Registered::Failed(StoreError(e.to_string())))
    }
}

enum Registered {
    Live,
    Failed(StoreError),
}

impl Store for PgStore {
    fn commit(&mut self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        self.with(|connection, node_id, _| {
            let Connection { client, prepared } = connection;
            let mut txn = client.transaction()?;
            // The keys this batch takes over, locked first and in one order: two nodes
            // whose batches hold one key wait for each other here, never deadlock, and
            // the second then sees (and takes over) the first's row instead of failing
            // its whole batch on the unique index.
            let mut keys: Vec<&str> = changes
                .iter()
                .filter_map(|change| match change {
                    Change::Insert(insert) if !insert.verifying => Some(insert.key_hash.as_str()),
                    _ => None,
                })
                .collect();
            keys.sort_unstable();
            keys.dedup();
            if !keys.is_empty() {
                txn.query(&prepared.lock_keys, &[&keys])?;
            }
            for change in changes {
                match change {
                    Change::Insert(insert) => {
                        if !insert.verifying {
                            txn.query(
                                &prepared.take_key,
                                &[&insert.key_hash, &insert.id, &node_id],
                            )?;
                        }
                        txn.execute(
                            &prepared.insert,
                            &[
                                &insert.id,
                                &insert.key_hash,
                                &insert.verifying,
                                &node_id,
                                &insert.bytes,
                            ],
                        )?;
                    }
                    Change::Remove(id) => {
                        txn.query(&prepared.remove, &[id, &node_id])?;
                    }
                    // A write that keeps nothing a restart reads: the heartbeat.
                    Change::Probe => {
                        txn.execute(&prepared.heartbeat, &[&node_id])?;
                    }
                }
            }
            txn.commit()
        })
    }

    fn cluster(&mut self, op: ClusterOp) -> Result<Option<ClusterEvent>, StoreError> {
        let event = match op {
            ClusterOp::Heartbeat { ticket } => {
                let renewed = self.with(|connection, node_id, _| {
                    let Connection { client, prepared } = connection;
                    client.execute(&prepared.heartbeat, &[&node_id])
                })?;
                ClusterEvent::Heartbeat {
                    ticket,
                    ok: renewed == 1,
                }
            }
            ClusterOp::ClaimLost { max } => {
                let max = i64::try_from(max).unwrap_or(i64::MAX);
                let rows = self.with(|connection, node_id, lost| {
                    let mut txn = connection.client.transaction()?;
                    let nodes: Vec<String> = txn
                        .query(LOST_NODES, &[&node_id, &lost])?
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                    if nodes.is_empty() {
                        return Ok(Vec::new());
                    }
                    let rows = txn.query(CLAIM, &[&node_id, &nodes, &max])?;
                    txn.commit()?;
                    Ok(rows)
                })?;
                claimed(&rows, false)?
            }
            ClusterOp::ClaimOwn => {
                let rows = self.with(|connection, node_id, lost| {
                    let mut txn = connection.client.transaction()?;
                    txn.query(LOCK_SELF, &[&node_id, &lost])?;
                    let rows = txn.query(CLAIM_OWN, &[&node_id])?;
                    txn.commit()?;
                    Ok(rows)
                })?;
                claimed(&rows, true)?
            }
            ClusterOp::Read { ticket, id } => {
                let id = id.to_string();
                let row = self.with(|connection, _, _| {
                    connection.client.query_opt(
                        "SELECT record FROM imap_push_subscriptions WHERE id = $1",
                        &[&id],
                    )
                })?;
                let record = match row {
                    Some(row) => Some(Box::new(
                        records(&[row])
                            .map_err(|e| StoreError(e.to_string()))?
                            .remove(0),
                    )),
                    None => None,
                };
                ClusterEvent::Read {
                    ticket,
                    record: Ok(record),
                }
            }
            ClusterOp::Delete { ticket, id } => {
                let id = id.to_string();
                let asked = ticket.to_string();
                let row = self.with(|connection, node_id, _| {
                    connection
                        .client
                        .query_one(DELETE, &[&id, &node_id, &asked])
                })?;
                let gone: i64 = row.get(0);
                ClusterEvent::Deleted {
                    ticket,
                    found: Ok(gone > 0),
                }
            }
            ClusterOp::Ack { to, ticket } => {
                let channel = format!("imap_push_{}", to.as_str());
                let payload = format!("ack {ticket}");
                self.with(|connection, _, _| {
                    connection
                        .client
                        .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                })?;
                // Nobody here waits for an answer: the asking node times out if it is lost.
                return Ok(None);
            }
            ClusterOp::Verify {
                ticket,
                id,
                digests,
            } => {
                let id = id.to_string();
                let tail = format!("{ticket} {} {}", hex(&digests[0]), hex(&digests[1]));
                let row = self.with(|connection, node_id, _| {
                    connection
                        .client
                        .query_one(FORWARD_VERIFY, &[&id, &node_id, &tail])
                })?;
                let told: i64 = row.get(0);
                ClusterEvent::VerifyForwarded {
                    ticket,
                    found: Ok(told > 0),
                }
            }
            ClusterOp::VerifyReply {
                to,
                ticket,
                outcome,
            } => {
                let channel = format!("imap_push_{}", to.as_str());
                let payload = format!("verified {ticket} {}", outcome.as_str());
                self.with(|connection, _, _| {
                    connection
                        .client
                        .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                })?;
                return Ok(None);
            }
            ClusterOp::Owned { ticket } => {
                let rows = self.with(|connection, node_id, _| {
                    connection.client.query(
                        "SELECT id FROM imap_push_subscriptions WHERE owner = $1",
                        &[&node_id],
                    )
                })?;
                let ids = rows
                    .iter()
                    .filter_map(|row| SubscriptionId::parse(row.get::<_, &str>(0)).ok())
                    .collect();
                ClusterEvent::Owned {
                    ticket,
                    ids: Ok(ids),
                }
            }
        };
        Ok(Some(event))
    }

    fn poll_notices(&mut self, notices: &mut Vec<ClusterEvent>) {
        let due = self
            .last_attempt
            .is_none_or(|at| at.elapsed() >= RECONNECT_INTERVAL);
        if self.connection.is_none() && due {
            // Lost: connect again (an idle node must notice the database come back, and
            // reconcile, even with nothing to write), once a second at most.
            self.last_attempt = Some(std::time::Instant::now());
            let _ = self.connect();
        }
        if std::mem::take(&mut self.reconnected) {
            notices.push(ClusterEvent::Reconnected);
        }
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let broken = {
            let mut pending = connection.client.notifications();
            // Not `iter()`: it never lets the client's runtime read the socket, so a
            // notification that arrived while idle stays unseen. A wait this short does.
            let mut iter = pending.timeout_iter(NOTICE_READ);
            loop {
                match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                    Ok(Some(notice)) => notices.extend(notice_event(notice.payload())),
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            }
        };
        if broken {
            self.connection = None;
        }
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(NOTICE_POLL)
    }

    fn stopped(&mut self) {
        // Stopped, not live: a restart with this node_id starts at once, and the
        // survivors may take what this run still owed a push.
        let _ = self.with(|connection, node_id, _| {
            connection.client.execute(
                "UPDATE imap_push_nodes SET heartbeat = to_timestamp(0) WHERE node_id = $1",
                &[&node_id],
            )
        });
    }
}

/// What a notification says: `ID` (taken over, or removed by another node), `ID NODE
/// TICKET` (deleted through NODE, which waits for `ack TICKET`), or `ack TICKET`.
fn notice_event(payload: &str) -> Option<ClusterEvent> {
    if let Some(rest) = payload.strip_prefix("verify ") {
        let mut words = rest.split(' ');
        let (id, by, ticket) = (words.next()?, words.next()?, words.next()?);
        let (a, b) = (words.next()?, words.next()?);
        return Some(ClusterEvent::VerifyAsked {
            id: SubscriptionId::parse(id).ok()?,
            by: crate::node::NodeName::new(by)?,
            ticket: ticket.parse().ok()?,
            digests: [unhex(a)?, unhex(b)?],
        });
    }
    if let Some(rest) = payload.strip_prefix("verified ") {
        let (ticket, outcome) = rest.split_once(' ')?;
        return Some(ClusterEvent::VerifyAnswered {
            ticket: ticket.parse().ok()?,
            outcome: super::VerifyOutcome::parse(outcome)?,
        });
    }
    let mut words = payload.split(' ');
    match (words.next()?, words.next(), words.next(), words.next()) {
        ("ack", Some(ticket), None, None) => Some(ClusterEvent::Acked {
            ticket: ticket.parse().ok()?,
        }),
        (id, None, None, None) => Some(ClusterEvent::Dropped {
            id: SubscriptionId::parse(id).ok()?,
        }),
        (id, Some(by), Some(ticket), None) => Some(ClusterEvent::DeleteAsked {
            id: SubscriptionId::parse(id).ok()?,
            by: crate::node::NodeName::new(by)?,
            ticket: ticket.parse().ok()?,
        }),
        _ => None,
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

fn claimed(rows: &[postgres::Row], own: bool) -> Result<ClusterEvent, StoreError> {
    let records = records(rows).map_err(|e| StoreError(e.to_string()))?;
    Ok(ClusterEvent::Claimed {
        records,
        own,
        ok: true,
    })
}

fn records(rows: &[postgres::Row]) -> Result<Vec<Record>, JournalError> {
    rows.iter()
        .map(|row| {
            let bytes: &[u8] = row.get(0);
            super::decode_record(bytes)
        })
        .collect()
}

/// A database error as logged: its kind and the server's message, which name no
/// password (PostgreSQL never echoes one), and never the URL.
fn db_error(e: postgres::Error) -> StoreError {
    StoreError(e.to_string())
}
