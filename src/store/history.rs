//! The client history (`_tandem_history`): one row per local changeset, numbered by client
//! version, with the server version it was based on, its origin timestamp and origin file
//! ident. Appending and reading it are shared by write transactions, sync, client reset and
//! the read side, so they live here, below all of them.

use std::time::UNIX_EPOCH;

use rusqlite::{params, Connection};

use super::layout::get;
use super::StoreError;
use crate::changeset::{Changeset, ChangesetMeta};

/// The client version the history has been trimmed through (realm-core's
/// `m_sync_history_base_version`): versions at or below it are gone, and new ones follow it.
/// A key of `_tandem_sync`.
pub(crate) const HISTORY_BASE_VERSION: &str = "history_base_version";

/// Milliseconds added to the device's clock when stamping local changesets (signed, stored as
/// its two's complement): see [`super::Database::clock_offset`]. A key of `_tandem_sync`.
pub(crate) const CLOCK_OFFSET: &str = "clock_offset_ms";

/// Milliseconds between the Unix epoch and 2015-01-01T00:00:00Z, the origin of changeset
/// timestamps.
const TIMESTAMP_EPOCH_MS: u64 = 1_420_070_400_000;

/// Now, in changeset timestamp units (ms since 2015-01-01).
pub(crate) fn changeset_timestamp() -> u64 {
    let now = crate::sim::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now.saturating_sub(TIMESTAMP_EPOCH_MS)
}

/// Now by the device's clock corrected by `offset_ms`, the stored clock offset (what the sync
/// client measured against the server's clock, `Database::clock_offset`), never below 0.
fn corrected_timestamp(offset_ms: i64) -> i64 {
    (changeset_timestamp() as i64)
        .saturating_add(offset_ms)
        .max(0)
}

/// Appends a local changeset to the history as the next client version.
pub(crate) fn append_history(
    conn: &Connection,
    changeset: Changeset,
    last_integrated_server_version: u64,
    file_ident: u64,
) -> Result<u64, StoreError> {
    append_encoded(
        conn,
        &changeset.encode(),
        last_integrated_server_version,
        file_ident,
    )
}

/// The newest client version ever given out: the newest history entry's, or, when trimming
/// removed them all, the version the history was trimmed through.
pub(crate) fn last_version(conn: &Connection) -> Result<u64, StoreError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT MAX(version) FROM _tandem_history")?
        .query_row([], |r| r.get(0))?;
    Ok(newest_version(
        last,
        get(conn, HISTORY_BASE_VERSION).unwrap_or(0),
    ))
}

/// [`last_version`] from the newest entry's version (`None`: no entry) and the trim base.
fn newest_version(last: Option<i64>, base: u64) -> u64 {
    (last.unwrap_or(0) as u64).max(base)
}

/// Appends a local changeset, already encoded as `encoded`, as the next client version.
pub(crate) fn append_encoded(
    conn: &Connection,
    encoded: &[u8],
    last_integrated_server_version: u64,
    file_ident: u64,
) -> Result<u64, StoreError> {
    let timestamp = corrected_timestamp(get(conn, CLOCK_OFFSET).unwrap_or(0) as i64);
    append_stamped(
        conn,
        encoded,
        last_integrated_server_version,
        timestamp,
        file_ident,
    )
}

/// Appends `changeset` as the next client version keeping its own origin timestamp (a changeset
/// re-recorded by a rollback keeps its place in time: OT orders concurrent list inserts and
/// field writes by it).
pub(crate) fn append_keeping_timestamp(
    conn: &Connection,
    changeset: &Changeset,
    last_integrated_server_version: u64,
    file_ident: u64,
) -> Result<u64, StoreError> {
    let timestamp = changeset.meta.origin_timestamp.min(i64::MAX as u64) as i64;
    append_stamped(
        conn,
        &changeset.encode(),
        last_integrated_server_version,
        timestamp,
        file_ident,
    )
}

/// Appends `encoded` as the next client version with origin timestamp `timestamp`.
fn append_stamped(
    conn: &Connection,
    encoded: &[u8],
    last_integrated_server_version: u64,
    timestamp: i64,
    file_ident: u64,
) -> Result<u64, StoreError> {
    let version = last_version(conn)? + 1;
    insert_entry(
        conn,
        version,
        encoded,
        last_integrated_server_version as i64,
        timestamp,
        file_ident,
    )
}

/// Writes one history row; returns `version`.
fn insert_entry(
    conn: &Connection,
    version: u64,
    encoded: &[u8],
    last_integrated_server_version: i64,
    origin_timestamp: i64,
    origin_file_ident: u64,
) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO _tandem_history (version, changeset, last_integrated_server_version, origin_timestamp, origin_file_ident)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        version as i64,
        encoded,
        last_integrated_server_version,
        origin_timestamp,
        origin_file_ident as i64,
    ])?;
    Ok(version)
}

/// What appending a local changeset reads from the file besides the changeset: the newest
/// client version (history or trim base), the download cursor's server version, the stored
/// client file ident (0: none yet) and the clock offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AppendContext {
    last_version: u64,
    server_version: i64,
    stored_ident: u64,
    clock_offset: i64,
}

/// An [`AppendContext`] kept on the writer connection between local commits, with what tells
/// whether the file may have changed since: SQLite's `PRAGMA data_version` (changes when
/// another connection, in this process or another, commits) and the connection's
/// `sqlite3_total_changes` after the commit (changes with every row this connection writes
/// later: sync, resets, trims and clock updates go through it). Reading the context costs five
/// B-tree lookups, about a quarter of a one-object commit's instructions (callgrind on
/// `TANDEM_BENCH_ONLY=single cargo bench --bench store`); checking the cache costs one pragma.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendCache {
    context: AppendContext,
    data_version: i64,
    total_changes: u64,
}

/// The writer connection's `PRAGMA data_version`.
fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?)
}

/// Reads the [`AppendContext`] from the file: one statement instead of five.
fn read_append_context(conn: &Connection) -> Result<AppendContext, StoreError> {
    let (last, base, server_version, ident, offset) = conn
        .prepare_cached(
            "SELECT (SELECT MAX(version) FROM _tandem_history),
                    (SELECT value FROM _tandem_sync WHERE key = ?1),
                    (SELECT value FROM _tandem_sync WHERE key = ?2),
                    (SELECT value FROM _tandem_sync WHERE key = ?3),
                    (SELECT value FROM _tandem_sync WHERE key = ?4)",
        )?
        .query_row(
            [
                HISTORY_BASE_VERSION,
                super::sync::DOWNLOAD_SERVER_VERSION,
                super::sync::CLIENT_FILE_IDENT,
                CLOCK_OFFSET,
            ],
            |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )?;
    Ok(AppendContext {
        last_version: newest_version(last, base.unwrap_or(0) as u64),
        server_version: server_version.unwrap_or(0),
        stored_ident: ident.unwrap_or(0) as u64,
        clock_offset: offset.unwrap_or(0),
    })
}

/// Appends a local transaction's changeset, already encoded as `encoded`, as the next client
/// version, and returns that version: [`append_encoded`] with what it needs from the file
/// (the newest version and the trim base, the download cursor's server version, the client
/// file ident, the clock offset) read by one statement instead of five, or taken from `cache`
/// when nothing can have changed them since the last local commit. `file_ident` stands in
/// while the server has not given the file its ident.
///
/// `changes_at_begin` is the connection's `total_changes()` when the transaction began (before
/// its own writes). The returned cache is kept by [`remember_append`] once the transaction has
/// committed.
pub(crate) fn append_local(
    conn: &Connection,
    encoded: &[u8],
    file_ident: u64,
    cache: Option<AppendCache>,
    changes_at_begin: u64,
) -> Result<(u64, AppendCache), StoreError> {
    let data_version = data_version(conn)?;
    let context = match cache {
        Some(c) if c.total_changes == changes_at_begin && c.data_version == data_version => {
            c.context
        }
        _ => read_append_context(conn)?,
    };
    let version = context.last_version + 1;
    let ident = match context.stored_ident {
        0 => file_ident,
        v => v,
    };
    insert_entry(
        conn,
        version,
        encoded,
        context.server_version,
        corrected_timestamp(context.clock_offset),
        ident,
    )?;
    Ok((
        version,
        AppendCache {
            context: AppendContext {
                last_version: version,
                ..context
            },
            data_version,
            total_changes: 0,
        },
    ))
}

/// Keeps `appended` (from [`append_local`]) for the next local commit, once the transaction
/// that appended it has committed on `conn`.
pub(crate) fn remember_append(
    conn: &Connection,
    cache: &mut Option<AppendCache>,
    mut appended: AppendCache,
) {
    appended.total_changes = conn.total_changes();
    *cache = Some(appended);
}

/// The whole history, oldest first.
pub(crate) fn read_history(conn: &Connection) -> Result<Vec<Changeset>, StoreError> {
    read_history_after(conn, 0)
}

/// The history entries with a version above `after`, oldest first.
pub(crate) fn read_history_after(
    conn: &Connection,
    after: u64,
) -> Result<Vec<Changeset>, StoreError> {
    read_history_until(conn, after, |_, _| true)
}

/// The local changesets after `after` in version order, read and decoded one at a time while
/// `more(changesets so far, encoded bytes so far)` says so (asked before each row after the
/// first), so that a caller wanting a bounded batch does not decode the whole history.
pub(crate) fn read_history_until(
    conn: &Connection,
    after: u64,
    mut more: impl FnMut(&[Changeset], usize) -> bool,
) -> Result<Vec<Changeset>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, changeset, last_integrated_server_version, origin_timestamp, origin_file_ident
         FROM _tandem_history WHERE version > ?1 ORDER BY version",
    )?;
    let mut rows = stmt.query([after as i64])?;
    let mut out = Vec::new();
    let mut bytes_so_far = 0;
    while let Some(row) = rows.next()? {
        if !out.is_empty() && !more(&out, bytes_so_far) {
            break;
        }
        let version: i64 = row.get(0)?;
        let bytes: Vec<u8> = row.get(1)?;
        // Beside the row before it: consecutive rows mostly name the same strings, and then
        // hold one table (`Changeset::decode_sharing`).
        let mut cs = Changeset::decode_sharing(&bytes, out.last())
            .map_err(|e| StoreError::Corrupt(format!("history version {version}: {e}")))?;
        cs.meta = ChangesetMeta {
            version: version as u64,
            last_integrated_remote_version: row.get::<_, i64>(2)? as u64,
            origin_timestamp: row.get::<_, i64>(3)? as u64,
            origin_file_ident: row.get::<_, i64>(4)? as u64,
        };
        bytes_so_far += bytes.len();
        out.push(cs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Database};
    use crate::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema};

    fn schema() -> Schema {
        Schema::new(vec![ClassSchema::top_level(
            "Task",
            "_id",
            vec![Property::new("_id", PropertyType::Int)],
        )])
        .unwrap()
    }

    fn create(db: &Database, key: i64) -> u64 {
        let mut tx = db.begin_write().unwrap();
        tx.create("Task", PrimaryKey::Int(key), &[]).unwrap();
        tx.commit().unwrap().unwrap()
    }

    /// The newest local changeset's (origin timestamp, origin file ident).
    fn newest_meta(db: &Database) -> (u64, u64) {
        let pending = db.pending_uploads(usize::MAX).unwrap();
        let meta = &pending.last().unwrap().meta;
        (meta.origin_timestamp, meta.origin_file_ident)
    }

    /// Consecutive history rows naming the same strings are read back holding one string table
    /// (a merge then maps it once); a row with other strings has its own.
    #[test]
    fn history_read_back_shares_equal_string_tables() {
        let (_scratch, dir) = test_dir("shared-tables");
        let db = Database::open(dir.join("a.sqlite"), &schema(), Config::default()).unwrap();
        for key in 1..=3 {
            create(&db, key);
        }
        let read = db.pending_uploads(usize::MAX).unwrap();
        // The schema's changeset first, then one per object.
        let tasks = &read[read.len() - 3..];
        assert!(tasks[1].shares_strings_with(&tasks[0]));
        assert!(tasks[2].shares_strings_with(&tasks[1]));
        assert!(
            !tasks[0].shares_strings_with(&read[read.len() - 4]),
            "the schema's changeset names other strings"
        );
    }

    /// The append context a local commit keeps for the next one must never outlive a change
    /// to what it caches: a commit through another connection to the same file (versions would
    /// repeat), and the clock offset and client file ident set through either connection.
    #[test]
    fn the_cached_append_context_follows_writes_from_anywhere() {
        let (_scratch, dir) = test_dir("append-cache");
        let path = dir.join("a.sqlite");
        let a = Database::open(&path, &schema(), Config::default()).unwrap();
        let b = Database::open(&path, &schema(), Config::default()).unwrap();
        let first = create(&a, 1);
        assert_eq!(create(&a, 2), first + 1);
        assert_eq!(create(&b, 3), first + 2, "b reads what a appended");
        assert_eq!(create(&a, 4), first + 3, "a sees b's commit");

        const DAY_MS: i64 = 86_400_000;
        let now = super::changeset_timestamp();
        b.set_clock_offset(DAY_MS).unwrap();
        create(&a, 5);
        let (stamped, _) = newest_meta(&a);
        assert!(
            stamped >= now + DAY_MS as u64,
            "offset set by another connection"
        );
        a.set_clock_offset(-DAY_MS).unwrap();
        create(&a, 6);
        let (stamped, _) = newest_meta(&a);
        assert!(
            stamped < now && stamped + DAY_MS as u64 >= now,
            "offset set by this connection"
        );

        assert_eq!(newest_meta(&a).1, 0, "no ident yet");
        b.set_client_file_ident(41, 1).unwrap();
        create(&a, 7);
        assert_eq!(newest_meta(&a).1, 41);
        a.set_client_file_ident(42, 1).unwrap();
        assert_eq!(create(&a, 8), first + 7);
        assert_eq!(newest_meta(&a).1, 42);
        drop((a, b));
    }

    /// A fresh directory for one test: the guard that removes it when dropped, and its path.
    fn test_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        (scratch, dir)
    }

    /// Commits a new Task and checks that its history row has what reading the file afresh
    /// gives: the next version, the download cursor's server version and the client file ident.
    fn commit_as_read_afresh(db: &Database, key: i64, after: &str) {
        let progress = db.sync_progress().unwrap();
        let expected = (
            db.last_local_version().unwrap() + 1,
            progress.download_server_version,
            progress.client_file_ident,
        );
        let version = create(db, key);
        let meta = db.history().unwrap().last().unwrap().meta;
        assert_eq!(
            (
                version,
                meta.last_integrated_remote_version,
                meta.origin_file_ident
            ),
            expected,
            "the first local commit after {after}"
        );
    }

    /// What sync, a client reset and a rollback write through the writer connection itself
    /// (no other connection commits, so `PRAGMA data_version` stays) reaches the next local
    /// commit: the download cursor's server version, a history renumbered from the snapshot
    /// (a cached newest version would leave a gap), and the new client file ident.
    #[test]
    fn the_cached_append_context_follows_sync_resets_and_rollbacks() {
        use crate::store::{DownloadCursors, ResetBase};
        let (_scratch, dir) = test_dir("append-cache-sync");
        let db = Database::open(dir.join("a.sqlite"), &schema(), Config::default()).unwrap();
        commit_as_read_afresh(&db, 1, "open");
        commit_as_read_afresh(&db, 2, "a local commit");
        let cursors = |server: u64, client: u64| DownloadCursors {
            download_server_version: server,
            download_client_version: client,
            latest_server_version: server,
            latest_server_version_salt: 1,
            upload_client_version: client,
        };
        db.integrate_download(Vec::new(), cursors(5, 0)).unwrap();
        commit_as_read_afresh(&db, 3, "a download");

        // Rolled back onto the (empty) server state at the download cursor: the changesets
        // before the transaction are re-recorded from version 1 on, the transaction is gone.
        let rolled_back = db.last_local_version().unwrap();
        let snapshot = crate::state::State::new().snapshot_changeset();
        let outcome = db
            .roll_back_to_snapshot(&snapshot, 5, 1, rolled_back)
            .unwrap();
        assert!(
            matches!(outcome, super::super::SnapshotRollback::RolledBack(_)),
            "the download cursor is at the snapshot: {outcome:?}"
        );
        assert!(db.last_local_version().unwrap() < rolled_back);
        commit_as_read_afresh(&db, 4, "a rollback");

        let base = ResetBase {
            client_file_ident: 77,
            client_file_ident_salt: 1,
            server_version: 9,
            server_version_salt: 1,
        };
        db.reset_to_snapshot(&snapshot, base, Vec::new()).unwrap();
        commit_as_read_afresh(&db, 5, "a client reset");

        // Trimmed through the newest version: the next one follows the trim base.
        let last = db.last_local_version().unwrap();
        let trimming = Config {
            recovery_window: 0,
            ..Config::default()
        };
        drop(db);
        let db = Database::open(dir.join("a.sqlite"), &schema(), trimming).unwrap();
        commit_as_read_afresh(&db, 6, "reopening");
        db.integrate_download(Vec::new(), cursors(10, last + 1))
            .unwrap();
        assert_eq!(db.trimmed_through().unwrap(), last + 1);
        commit_as_read_afresh(&db, 7, "a trim");
        drop(db);
    }

    /// What [`super::AppendCache`] relies on, checked on the SQLite Tandem is built with:
    /// `PRAGMA data_version` read inside `BEGIN IMMEDIATE` has moved for another connection's
    /// commit and not for this connection's own; `total_changes` counts an upsert that keeps
    /// the value and a `DELETE` without `WHERE` (SQLite's truncate optimization).
    #[test]
    fn sqlite_behaves_as_the_append_cache_assumes() {
        use super::super::layout::{init, put};
        let (_scratch, dir) = test_dir("append-cache-sqlite");
        let path = dir.join("a.sqlite");
        let config = Config::default();
        let a = super::super::open_connection(&path, &config).unwrap();
        init(&a).unwrap();
        let b = super::super::open_connection(&path, &config).unwrap();
        let immediate = |c: &rusqlite::Connection| c.execute_batch("BEGIN IMMEDIATE").unwrap();
        let commit = |c: &rusqlite::Connection| c.execute_batch("COMMIT").unwrap();

        immediate(&a);
        let before = super::data_version(&a).unwrap();
        put(&a, super::CLOCK_OFFSET, 1).unwrap();
        commit(&a);
        immediate(&a);
        assert_eq!(super::data_version(&a).unwrap(), before, "own commit");
        commit(&a);

        immediate(&b);
        put(&b, super::CLOCK_OFFSET, 2).unwrap();
        commit(&b);
        immediate(&a);
        let seen = super::data_version(&a).unwrap();
        assert_ne!(seen, before, "another connection's commit");

        let changes = a.total_changes();
        put(&a, super::CLOCK_OFFSET, 2).unwrap();
        assert!(a.total_changes() > changes, "an upsert keeping the value");
        super::insert_entry(&a, 1, b"", 0, 0, 0).unwrap();
        let changes = a.total_changes();
        a.execute_batch("DELETE FROM _tandem_history").unwrap();
        assert!(a.total_changes() > changes, "a DELETE without WHERE");
        commit(&a);
        immediate(&a);
        assert_eq!(super::data_version(&a).unwrap(), seen, "own commit");
        commit(&a);
        drop((a, b));
    }
}
