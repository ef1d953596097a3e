//! A server file's materialized state, in indexed SQLite tables instead of memory.
//!
//! The state of a server path is what its history replays to. [`ServerFile`](super::ServerFile)
//! applies every changeset it integrates to this state first, so a changeset that does not apply
//! is refused before it reaches anyone; it also serves STATE snapshots and the dictionary-key
//! check from it. Keeping the state in memory cost about 900 bytes per object for every open
//! server file; here it lives in a sibling SQLite file, `<server file>-state`
//! ([`state_path`]), with the client store's layout and applier (`crate::store`: one table per
//! class keyed by its primary key, which is the rowid for a required `int` key and a unique
//! index otherwise, one per collection property), so the same
//! changesets succeed and fail with the same errors as in [`crate::state::State`]
//! (`tests/store_differential.rs`). Only the schemas stay in memory.
//!
//! Durability and recovery: the history (in the server file, `synchronous=FULL`) is the truth;
//! the state file is derived from it and written with `synchronous=NORMAL`. Changesets are
//! applied in an open transaction ([`ServerState::apply`]) that the server file commits
//! ([`ServerState::commit`]) only after the history holding them is committed, together with
//! `state_version`, the last server version the tables contain. A crash between the two
//! commits (or a lost state commit) leaves the state behind the history: at open, the server
//! file replays only the history after `state_version`. A state file that belongs to another
//! history (another salt: a restored backup, a deleted and recreated server file) or is ahead of
//! it is discarded and rebuilt from the whole history. Its format version is the client
//! store's (`docs/store.md`): an older tandem-server refuses a state file of a newer format
//! (`FormatTooNew`); the file is derived, so removing it makes that server rebuild it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use crate::changeset::{Changeset, Instruction};
use crate::state::{ApplyError, Schemas, State};
use crate::store::tables;
use crate::store::StoreError;

/// Objects by class and primary-key blob ([`ServerState::erased_after`]).
pub(crate) type ErasedObjects = std::collections::HashSet<(String, Vec<u8>)>;

/// The suffix of the state file beside a server file (`<hex>.sqlite-state`, like SQLite's own
/// `-wal` and `-shm`, so that a listing of `*.sqlite` server files does not include it).
pub const STATE_FILE_SUFFIX: &str = "-state";

/// The path of the state file of the server file at `server_file`.
pub fn state_path(server_file: &Path) -> PathBuf {
    let mut name = server_file.as_os_str().to_owned();
    name.push(STATE_FILE_SUFFIX);
    PathBuf::from(name)
}

/// Why a state operation failed.
#[derive(Debug)]
pub enum StateError {
    /// The changeset does not apply (Realm's rules, [`crate::state`]): the state is unchanged.
    Rejected(ApplyError),
    /// SQLite failed (I/O, disk full, ...). A failed [`ServerState::apply`] leaves the state as
    /// it was before that changeset; a failed [`ServerState::commit`] rolls back to the last
    /// committed version.
    Storage(rusqlite::Error),
    /// The state file's contents do not make sense.
    Corrupt(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Rejected(e) => write!(f, "{e}"),
            StateError::Storage(e) => write!(f, "state storage failed: {e}"),
            StateError::Corrupt(why) => write!(f, "the state file is inconsistent: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Storage(e)
    }
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Sqlite(e) => StateError::Storage(e),
            StoreError::Rejected(e) => StateError::Rejected(e),
            other => StateError::Corrupt(other.to_string()),
        }
    }
}

impl From<tables::ApplyFailure> for StateError {
    fn from(e: tables::ApplyFailure) -> Self {
        match e {
            tables::ApplyFailure::Rejected(e) => StateError::Rejected(e),
            tables::ApplyFailure::Sql(e) => StateError::Storage(e),
        }
    }
}

/// The materialized state of one server file, in its state file.
pub struct ServerState {
    path: PathBuf,
    conn: Connection,
    /// The schema as the tables hold it, including changesets applied but not committed.
    /// Shared so that a reader holds it without copying (see [`ServerState::shared_schemas`]).
    schemas: Arc<Schemas>,
    /// Changes whenever `schemas` may have: see [`ServerState::schema_generation`].
    generation: u64,
    /// The last server version applied (committed or not).
    version: u64,
    /// Whether a transaction with applied, uncommitted changesets is open.
    pending: bool,
    /// Whether [`ServerState::apply`] records when objects are born (`_flx_born`): from the
    /// first flexible sync subscription on the file on ([`ServerState::track_births`]).
    births: bool,
}

/// A top-level object a changeset creates or erases (see `ServerState::created_objects`).
struct Created {
    class: String,
    key: crate::state::Key,
    /// It existed before the changeset.
    existed: bool,
    /// It exists after the changeset.
    exists: bool,
    /// The changeset erases it (whether or not it creates it again, or had created it).
    erased: bool,
}

/// A process-wide counter, so that generations of different states (a state reopened after
/// a reset) never repeat.
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether SQLite says the file is not a database, or a corrupt one.
fn not_a_database(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Reads a `_tandem_server_state` value.
fn marker(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT value FROM _tandem_server_state WHERE key = ?1",
        [key],
        |r| r.get(0),
    )
    .optional()
}

fn set_marker(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO _tandem_server_state (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rusqlite::params![key, value as i64],
    )
    .map(drop)
}

impl ServerState {
    /// Opens (or creates) the state file at `path` for the history with `salt`. A file made for
    /// another salt is discarded and started empty (version 0).
    pub fn open(path: impl AsRef<Path>, salt: u64) -> Result<ServerState, StateError> {
        let path = path.as_ref().to_path_buf();
        // A file that is not a database, or was made for another history, is started again:
        // its tables are derived from the history. Its flexible sync records (the views of
        // client files, their subscription sets, births and erasures) are not, so a file
        // that cannot be opened now (a full disk, an I/O error) is an error, not discarded:
        // the views were lost with a full disk once, and every client got all of its objects
        // again as whole copies, whose cleared lists beat what it had not uploaded yet
        // (flexible seed 1558 of the simulation, docs/testing.md).
        let existing = match Self::connect(&path).map(|conn| {
            let salt_of = marker(&conn, "salt");
            (conn, salt_of)
        }) {
            Ok((conn, Ok(Some(s)))) if s == salt as i64 => Some(conn),
            Ok((_, Ok(_))) => None,
            Ok((_, Err(e))) if not_a_database(&e) => None,
            Err(StateError::Storage(e)) if not_a_database(&e) => None,
            Ok((_, Err(e))) => return Err(e.into()),
            Err(e) => return Err(e),
        };
        let conn = match existing {
            Some(conn) => conn,
            None => {
                Self::remove_files(&path)?;
                let conn = Self::connect(&path)?;
                set_marker(&conn, "salt", salt)?;
                set_marker(&conn, "state_version", 0)?;
                conn
            }
        };
        tables::init(&conn)?;
        conn.execute_batch(super::file::flx::TABLES)?;
        let schemas = tables::load(&conn)?.schemas;
        let version = marker(&conn, "state_version")?.unwrap_or(0) as u64;
        let births = marker(&conn, "births")? == Some(1)
            || conn.query_row("SELECT EXISTS (SELECT 1 FROM _flx_query)", [], |r| r.get(0))?;
        Ok(ServerState {
            path,
            conn,
            schemas: Arc::new(schemas),
            generation: next_generation(),
            version,
            pending: false,
            births,
        })
    }

    fn connect(path: &Path) -> Result<Connection, StateError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Derived data: a commit lost with power is replayed from the history at open.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The SQL functions compiled queries call (flexible sync evaluates subscriptions here).
        crate::store::tables::register_functions(&conn)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _tandem_server_state
                 (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        Ok(conn)
    }

    fn remove_files(path: &Path) -> Result<(), StateError> {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::remove_file(PathBuf::from(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StateError::Corrupt(format!(
                        "cannot remove the stale state file: {e}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Discards everything (the state is ahead of its history, or unusable) and starts empty
    /// at version 0 for the history with `salt`.
    pub fn reset(&mut self, salt: u64) -> Result<(), StateError> {
        self.rollback();
        let path = self.path.clone();
        // Close this connection before the files go.
        self.conn = Connection::open_in_memory()?;
        Self::remove_files(&path)?;
        *self = ServerState::open(path, salt)?;
        Ok(())
    }

    /// The last server version applied to the tables (committed or not).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The schema of the state, with every applied changeset.
    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// The schema, shared: cloning the `Arc` copies nothing, and the next change to the
    /// schema leaves this copy as it is.
    pub fn shared_schemas(&self) -> Arc<Schemas> {
        Arc::clone(&self.schemas)
    }

    /// A number that differs from every earlier one (of any state in this process) once the
    /// schema may have changed: it moves when a changeset with schema instructions
    /// ([`Instruction::is_schema_change`](crate::changeset::Instruction::is_schema_change)) or
    /// a failing one is applied, on a rollback and on reopening, so what a caller derived from
    /// [`ServerState::schemas`] under one generation may be reused while it is the same.
    pub fn schema_generation(&self) -> u64 {
        self.generation
    }

    /// Applies the changeset of server version `version` atomically, in the open transaction
    /// (begun if needed): on [`StateError::Rejected`] (the changeset breaks Realm's rules:
    /// `BadChangeset`, or `SchemaMismatch` for a conflicting AddTable / AddColumn) or
    /// [`StateError::Storage`], the tables and schemas are as before this changeset, and the
    /// changesets applied before it stay pending.
    pub fn apply(&mut self, changeset: &Changeset, version: u64) -> Result<(), StateError> {
        if !self.pending {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            self.pending = true;
        }
        // Only schema instructions change the schema; a failed apply may have restored it.
        let changes_schema = changeset.instructions.iter().any(|i| i.is_schema_change());
        if changes_schema {
            self.generation = next_generation();
        }
        // With births recorded, they go in a savepoint with the changeset: both are applied
        // or neither.
        let births = self.births;
        if births {
            self.conn.execute_batch("SAVEPOINT tandem_births")?;
        }
        let recorded = match births {
            true => self
                .created_objects(changeset)
                .and_then(|created| Ok(self.record_births(&created, version)?)),
            false => Ok(()),
        };
        let applied = recorded.and_then(|()| {
            tables::apply(&self.conn, Arc::make_mut(&mut self.schemas), changeset)
                .map_err(StateError::from)
        });
        match &applied {
            Err(_) => {
                if births {
                    let _ = self
                        .conn
                        .execute_batch("ROLLBACK TO tandem_births; RELEASE tandem_births");
                }
                if !changes_schema {
                    self.generation = next_generation();
                }
            }
            Ok(()) if births => self.conn.execute_batch("RELEASE tandem_births")?,
            Ok(()) => {}
        }
        applied?;
        self.version = version;
        Ok(())
    }

    /// From now on, [`ServerState::apply`] records the server version at which each object's
    /// current incarnation came into existence ([`ServerState::born`]). Flexible sync turns
    /// it on with a file's first subscription set: objects born before it are older than
    /// every flexible sync client's download cursor.
    pub(crate) fn track_births(&mut self) -> Result<(), StateError> {
        if !self.births {
            set_marker(&self.conn, "births", 1)?;
            self.births = true;
        }
        Ok(())
    }

    /// The server version from which the object `key` of `class` has existed without a
    /// break between changesets: the changeset that created it while it did not exist (one
    /// that erases and creates it again does not count), if that was recorded
    /// ([`ServerState::track_births`]). `None` for an object born before tracking began, or
    /// one that does not exist.
    pub(crate) fn born(
        &self,
        class: &str,
        key: &crate::state::Key,
    ) -> rusqlite::Result<Option<u64>> {
        self.object_version(
            "SELECT version FROM _flx_born WHERE class = ?1 AND pk = ?2",
            class,
            key,
        )
    }

    /// The server version `key` of `class` was last erased at, if that was recorded (as
    /// births are, [`ServerState::track_births`]; rows at or below the compaction point are
    /// dropped, `ServerState::forget_erasures_through`).
    pub(crate) fn erased(
        &self,
        class: &str,
        key: &crate::state::Key,
    ) -> rusqlite::Result<Option<u64>> {
        self.object_version(
            "SELECT version FROM _flx_erased WHERE class = ?1 AND pk = ?2",
            class,
            key,
        )
    }

    /// The objects erased after server version `after` (class and key blob, as
    /// [`ServerState::erased`] records them), if there are at most `limit` of them (`None`
    /// otherwise: the caller looks them up one by one). An index on the version keeps this a
    /// walk of those rows only.
    pub(crate) fn erased_after(
        &self,
        after: u64,
        limit: usize,
    ) -> rusqlite::Result<Option<ErasedObjects>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT class, pk FROM _flx_erased WHERE version > ?1 LIMIT ?2")?;
        let rows = stmt.query_map(
            rusqlite::params![
                after.min(i64::MAX as u64) as i64,
                limit.saturating_add(1).min(i64::MAX as usize) as i64
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let erased = rows.collect::<rusqlite::Result<std::collections::HashSet<_>>>()?;
        Ok((erased.len() <= limit).then_some(erased))
    }

    /// The version `sql` (a query of one version by class and key blob) finds for an object.
    fn object_version(
        &self,
        sql: &str,
        class: &str,
        key: &crate::state::Key,
    ) -> rusqlite::Result<Option<u64>> {
        self.conn
            .prepare_cached(sql)?
            .query_row(
                rusqlite::params![class, super::file::flx::key_blob(key)],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(|v| v as u64))
    }

    /// Forgets the erasures recorded at or below `version`: no client's upload can be based
    /// on an older version (the compaction point).
    pub(crate) fn forget_erasures_through(&self, version: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("DELETE FROM _flx_erased WHERE version <= ?1")?
            .execute([version.min(i64::MAX as u64) as i64])
            .map(drop)
    }

    /// The top-level objects `changeset` creates or erases, each with whether it existed
    /// before the changeset and whether it exists after it (its last `CreateObject` comes
    /// after its last `EraseObject`: a create of an object that exists changes nothing, and no
    /// other instruction applies to an object that does not).
    fn created_objects(&self, changeset: &Changeset) -> Result<Vec<Created>, StateError> {
        let mut out: Vec<Created> = Vec::new();
        // Where each object is in `out` (a bulk changeset creates thousands).
        let mut seen: std::collections::BTreeMap<(String, crate::state::Key), usize> =
            std::collections::BTreeMap::new();
        for i in &changeset.instructions {
            let create = match i {
                Instruction::CreateObject { .. } => true,
                Instruction::EraseObject { .. } => false,
                _ => continue,
            };
            let Some((class, key)) = super::file::instruction_object(changeset, i) else {
                continue;
            };
            let object = (class, key);
            if let Some(&n) = seen.get(&object) {
                out[n].exists = create;
                out[n].erased |= !create;
                continue;
            }
            seen.insert(object.clone(), out.len());
            let (class, key) = object;
            // A class the changeset adds has no table yet: nothing of it existed.
            let existed = self.schemas.get(class.as_str()).is_some()
                && tables::row_id(&self.conn, &class, &key)?.is_some();
            out.push(Created {
                class,
                key,
                existed,
                exists: create,
                erased: !create,
            });
        }
        Ok(out)
    }

    /// Records the objects of `created` born at `version` (they exist after it and did not
    /// before), forgets those that no longer exist, and records those it erases
    /// (`_flx_erased`, [`ServerState::erased`]).
    fn record_births(&self, created: &[Created], version: u64) -> rusqlite::Result<()> {
        for c in created {
            let blob = super::file::flx::key_blob(&c.key);
            if c.exists && !c.existed {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO _flx_born (class, pk, version) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![c.class, blob, version as i64])?;
            } else if !c.exists {
                self.conn
                    .prepare_cached("DELETE FROM _flx_born WHERE class = ?1 AND pk = ?2")?
                    .execute(rusqlite::params![c.class, blob])?;
            }
            // An erasure wins over every concurrent write to the object, even one the same
            // changeset made, or one that creates it again (`ServerState::erased`).
            if c.erased {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO _flx_erased (class, pk, version) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![c.class, blob, version as i64])?;
            }
        }
        Ok(())
    }

    /// Commits the changesets applied since the last commit with `state_version` = the last
    /// one's server version. Call it only after the history holding them is committed. On
    /// failure everything since the last commit is rolled back ([`ServerState::version`]
    /// tells where the state is).
    pub fn commit(&mut self) -> Result<(), StateError> {
        if !self.pending {
            return Ok(());
        }
        let committed = set_marker(&self.conn, "state_version", self.version)
            .and_then(|()| self.conn.execute_batch("COMMIT"));
        match committed {
            Ok(()) => {
                self.pending = false;
                Ok(())
            }
            Err(e) => {
                self.rollback();
                Err(e.into())
            }
        }
    }

    /// Forgets the changesets applied since the last commit.
    pub fn rollback(&mut self) {
        if !self.pending {
            return;
        }
        let _ = self.conn.execute_batch("ROLLBACK");
        self.pending = false;
        // Where the file is now; if it cannot be read, the next open finds out.
        if let Ok(Some(v)) = marker(&self.conn, "state_version") {
            self.version = v as u64;
        }
        if let Ok(loaded) = tables::load(&self.conn) {
            self.schemas = Arc::new(loaded.schemas);
        }
        self.generation = next_generation();
    }

    /// The state file's connection, for flexible sync's queries and views
    /// (`super::file::flx`), which read and write it between integrations.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The whole state as an in-memory [`State`] (for tests, inspection and snapshots): it
    /// holds every object, so its size grows with the objects.
    pub fn export(&self) -> Result<State, StateError> {
        Ok(tables::export(&self.conn, &self.schemas)?)
    }

    /// The STATE snapshot changeset of the current state, encoded: the bytes of
    /// [`crate::state::snapshot`] of [`ServerState::export`], built reading one object at a
    /// time and encoding each instruction as it is written (the bytes grow with the objects,
    /// about 40 per object of two properties; no decoded instruction is kept).
    pub fn snapshot_changeset(&self) -> Result<Vec<u8>, StateError> {
        crate::state::snapshot_streamed(&self.schemas, |emit| {
            tables::for_each_object(&self.conn, &self.schemas, &mut |class, key, object| {
                emit(class, &key, &object)
            })
        })
        .map_err(StateError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changeset::{AddTable, PayloadType, PrimaryKey, PrimaryKeySpec, TableKind};
    use crate::state::Key;

    /// [`ServerState::erased_after`] finds what [`ServerState::erased`] finds object by object
    /// (the last erasure of each object, after the version asked), and gives up past its limit
    /// (`flx_erase_first` then looks the objects up one by one).
    #[test]
    fn erasures_after_a_version_are_the_ones_found_object_by_object() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ServerState::open(dir.path().join("s.sqlite-state"), 1).unwrap();
        state.track_births().unwrap();
        let mut schema = Changeset::new();
        let (t, id) = (schema.intern("T"), schema.intern("_id"));
        schema.push(Instruction::AddTable(AddTable {
            table: t,
            kind: TableKind::TopLevel(PrimaryKeySpec {
                field: id,
                key_type: PayloadType::Int,
                nullable: false,
            }),
        }));
        state.apply(&schema, 1).unwrap();
        // Version v + 1 creates object v; every third one is erased again at v + 2, and objects
        // 0 and 3 once more later (their last erasure counts).
        let one = |create: &[i64], erase: &[i64]| {
            let mut cs = Changeset::new();
            let t = cs.intern("T");
            for &k in create {
                cs.push(Instruction::CreateObject {
                    table: t,
                    object: PrimaryKey::Int(k),
                });
            }
            for &k in erase {
                cs.push(Instruction::EraseObject {
                    table: t,
                    object: PrimaryKey::Int(k),
                });
            }
            cs
        };
        let mut version = 1;
        for k in 0..30 {
            version += 1;
            let erase: Vec<i64> = (k >= 1 && (k - 1) % 3 == 0)
                .then_some(k - 1)
                .into_iter()
                .collect();
            state.apply(&one(&[k], &erase), version).unwrap();
        }
        version += 1;
        state.apply(&one(&[0, 3], &[0, 3]), version).unwrap();
        state.commit().unwrap();
        for after in [0, 5, 6, 17, version - 1, version] {
            let expected: ErasedObjects = (0..30)
                .filter(|&k| {
                    state
                        .erased("T", &Key::Int(k))
                        .unwrap()
                        .is_some_and(|v| v > after)
                })
                .map(|k| {
                    (
                        "T".to_owned(),
                        crate::server::file::flx::key_blob(&Key::Int(k)),
                    )
                })
                .collect();
            let found = state.erased_after(after, expected.len()).unwrap();
            assert_eq!(found, Some(expected.clone()), "after {after}");
            assert_eq!(
                state.erased_after(after, 100).unwrap(),
                Some(expected.clone())
            );
            if !expected.is_empty() {
                assert_eq!(
                    state.erased_after(after, expected.len() - 1).unwrap(),
                    None,
                    "after {after}: more than the limit"
                );
            }
        }
        assert!(state.erased_after(0, 100).unwrap().unwrap().len() >= 10);
    }
}
