//! The single-box journal: an embedded redb file in the data dir.
//!
//! Why redb: pure Rust (no C toolchain in the build), one file, ACID transactions with an
//! fsync per commit, and a key-value table is all we need.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Change, JournalError, Record, Store, StoreError};

/// Memory redb may use to cache the journal's pages (redb's default is 1 GiB). The journal
/// is read once, at start, and otherwise only written, so a cache buys nothing; with the
/// default every record written stayed cached, and each subscription cost its record
/// again in the proxy's RSS (whole-proxy density bench, `proxy_density`). The file's pages
/// stay in the kernel's page cache, which the kernel may reclaim.
///
/// Why 256 KiB and not more: records are ~700 bytes of random-keyed leaves, so a cache
/// fills with one page per record written until it is full. At 2 MiB it was still filling
/// at 3,000 subscriptions, and the bench counted ~450 bytes of it per subscription between
/// 1,000 and 4,000 (a heap profile showed 1.4 MB of redb pages at 2,000). A commit
/// touches a random leaf per record either way, which no cache of a bounded size holds
/// for a large journal: a page the cache does not hold is read back from the kernel's
/// page cache.
pub const JOURNAL_CACHE_BYTES: usize = 256 * 1024;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");
/// Where a probe writes (see [`super::Journal::probe`]): apart from the records, so a
/// restart never reads it as one.
const PROBE_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
/// What a probe writes: a page's worth, so that the commit allocates and writes pages as
/// a batch of records would.
const PROBE_BYTES: usize = 4096;

/// The redb file. After a failed commit redb refuses every later one ("previous I/O
/// error") until the database is opened again, so the store drops it and opens it again
/// before the next batch: a disk that had no room, or failed for a moment, is used again
/// once it works, and the probes of `/readyz` see it.
pub struct RedbStore {
    path: PathBuf,
    db: Option<Database>,
}

impl RedbStore {
    /// Opens (or creates) the journal at `path` and returns what the previous run left.
    pub fn open(path: &Path) -> Result<(RedbStore, Vec<Record>), JournalError> {
        // The file exists, owner-only, before redb opens it.
        drop(open_private(path).map_err(|e| JournalError::Open(e.to_string()))?);
        let db = open_database(path).map_err(|e| JournalError::Open(e.to_string()))?;
        let leftovers = read_all(&db)?;
        let store = RedbStore {
            path: path.to_path_buf(),
            db: Some(db),
        };
        Ok((store, leftovers))
    }
}

impl Store for RedbStore {
    fn commit(&mut self, changes: &[Change<'_>]) -> Result<(), StoreError> {
        if self.db.is_none() {
            self.db = open_database(&self.path).ok();
        }
        let Some(db) = self.db.as_ref() else {
            return Err(StoreError("the journal could not be opened again".into()));
        };
        let result = commit(db, changes).map_err(|e| StoreError(e.to_string()));
        if result.is_err() {
            // Closed before it is opened again: redb allows one open handle per file.
            self.db = None;
        }
        result
    }
}

/// redb on `path`, its page cache bounded: at start and whenever the store opens it
/// again after a failed commit.
fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(JOURNAL_CACHE_BYTES)
        .create(path)
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
        records.push(super::decode_record(value.value())?);
    }
    Ok(records)
}

fn commit(db: &Database, changes: &[Change<'_>]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(TABLE)?;
        for change in changes {
            match change {
                Change::Insert(insert) => {
                    table.insert(insert.id.as_str(), insert.bytes.as_slice())?;
                }
                Change::Remove(id) => {
                    table.remove(*id)?;
                }
                Change::Probe => {}
            }
        }
    }
    if changes.iter().any(|c| matches!(c, Change::Probe)) {
        let mut table = txn.open_table(PROBE_TABLE)?;
        table.insert("probe", [0u8; PROBE_BYTES].as_slice())?;
    }
    txn.commit()?;
    Ok(())
}
