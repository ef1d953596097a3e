//! Replacing the local state with the server's: a first open from a STATE snapshot, and client
//! reset.
//!
//! [`Database::reset_to_snapshot`] does it in one SQLite transaction: every object is removed,
//! the snapshot (one changeset that recreates the server state at a server version) is applied,
//! the history, reciprocal forms and cursors start again from that version under the client
//! file ident the server gave, and the local changesets to recover are re-applied on top with
//! the recovery rules of [`super::recover`] (realm-core's, per instruction), each re-recorded
//! as a new local changeset (to be uploaded), keeping the original division into changesets.
//! Instructions the rules cannot recover are not dropped silently: they go to the quarantine
//! ([`Database::quarantine`]), one record per original changeset, naming each instruction and
//! why, until the app clears them. Listeners then see the difference as ordinary
//! notifications.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::recover::{ObjectId, RecoveredChangeset, Recovery};
use super::sync::{
    put, CLIENT_FILE_IDENT, CLIENT_FILE_IDENT_SALT, DOWNLOAD_CLIENT_VERSION,
    DOWNLOAD_SERVER_VERSION, LATEST_SERVER_VERSION, LATEST_SERVER_VERSION_SALT,
    UPLOAD_CLIENT_VERSION,
};
use super::{apply, history, layout, read, rollback, Database, StoreError};
use crate::changeset::{Changeset, ChangesetMeta};
use crate::state::{Object, Schemas, State, TableSpec};

/// Where the local file stands with the server after a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetBase {
    /// The client file ident to use from now on (a fresh one from the server).
    pub client_file_ident: u64,
    /// Its salt.
    pub client_file_ident_salt: u64,
    /// The server version the snapshot recreates.
    pub server_version: u64,
    /// The salt of the server's history.
    pub server_version_salt: u64,
}

/// What the server said, at a client reset, about the local changesets it had integrated:
/// recovery keeps those it still has out of the re-applied set, and keeps them (as the
/// *inherited window*) for a later reset whose server no longer has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// The last local version the server integrated under the file's current client file
    /// ident (its CLIENT_VERSION answer; 0 if none). The history up to it goes to the inherited
    /// window under that ident.
    pub through: u64,
    /// For each `(client file ident, salt)` of [`Database::inherited_idents`], in that order,
    /// the last version of it the server integrated (0 if it does not know the ident). An
    /// ident missing here keeps its changesets as they are.
    pub inherited: Vec<u64>,
}

/// The local changes a client reset re-applies (see [`Database::reset_to_snapshot_with`]).
#[derive(Clone, Debug, Default)]
pub struct ResetRecovery {
    /// Local changesets to recover, oldest first.
    pub changesets: Vec<Changeset>,
    /// A local version to roll back (a transaction the server rejected, see
    /// `SyncSession::transact`): it is not re-applied
    /// (even if `changesets` holds it), and where recovery copies a list from the local state,
    /// the elements it inserted are left out first, found through the current forms of the
    /// local changesets from it on (`store::rollback`). A list it erased, moved or replaced
    /// elements of is not copied at all: the operations such a copy would have covered go to
    /// the quarantine, so nothing of the transaction survives.
    pub rolled_back: Option<u64>,
    /// What the server integrated; `None` (a discard) leaves the inherited window as it is.
    pub acknowledged: Option<Acknowledged>,
}

/// The most client file idents the inherited window keeps changesets of (the newest ones):
/// each costs a CLIENT_VERSION request at the next reset.
pub const MAX_INHERITED_IDENTS: usize = 16;

/// The part of a local changeset that a client reset could not recover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Its id in the quarantine (for [`Database::clear_quarantine`]).
    pub id: u64,
    /// The local version the changeset had before the reset.
    pub original_version: u64,
    /// The instructions that were not recovered, as the app wrote them, in their original
    /// order (`changeset.instructions[i]` is `instructions[i]`).
    pub changeset: Changeset,
    /// A one-line summary: how many of the changeset's instructions were not recovered and the
    /// first reason.
    pub reason: String,
    /// Each instruction that was not recovered, with why.
    pub instructions: Vec<QuarantinedInstruction>,
}

/// One instruction a client reset could not recover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantinedInstruction {
    /// Its index in the original local changeset (0-based).
    pub index: usize,
    /// The instruction, rendered as [`Changeset::display_instruction`] does, e.g.
    /// `Update Task[1].title = "edited offline"`.
    pub instruction: String,
    /// Why the recovery rules could not recover it, e.g. `Task[1] does not exist on the server
    /// (it was deleted there)`.
    pub reason: String,
}

/// What a reset did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResetOutcome {
    /// Local changesets re-recorded on top of the server state (and queued for upload): every
    /// one with at least one recovered instruction or list copy.
    pub recovered: usize,
    /// Quarantine records written: local changesets with at least one instruction that was
    /// not recovered.
    pub quarantined: usize,
    /// Instructions that were not recovered, over all changesets.
    pub instructions_not_recovered: usize,
    /// Lists copied verbatim from the local state (the local list won as a whole).
    pub lists_copied: usize,
}

/// What [`Database::roll_back_to_snapshot`] found and did, decided inside its write
/// transaction (so a download landing in between cannot make the answer stale).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotRollback {
    /// The transaction was rolled back: the local state is the snapshot plus the rebased local
    /// changesets.
    RolledBack(ResetOutcome),
    /// Nothing changed: the download cursor is still behind the snapshot's server version.
    /// Download up to it, then call again.
    CursorBehind {
        /// The file's download cursor (server version).
        download_server_version: u64,
    },
    /// Nothing changed: the download cursor is past the snapshot's server version (the
    /// snapshot is older than what this file downloaded). Ask for a newer snapshot.
    SnapshotOlder {
        /// The file's download cursor (server version).
        download_server_version: u64,
    },
}

/// The state a snapshot recreates on top of the file's schema: what the SQLite tables hold
/// after the reset applied it.
fn fresh_state(schemas: &Schemas, snapshot: &Changeset) -> Result<State, StoreError> {
    let mut fresh = State::new();
    fresh.schemas = schemas.clone();
    for (name, schema) in schemas {
        if matches!(schema.spec, TableSpec::TopLevel { .. }) {
            fresh.objects.insert(name.clone(), Default::default());
        }
    }
    fresh.apply(snapshot).map_err(StoreError::Rejected)?;
    Ok(fresh)
}

/// The schema instructions of `snapshot` alone (its string table rebuilt for them), or `None`
/// if one names a string the snapshot does not define (the full snapshot then reports it).
/// The server's snapshot for a client reset: decoded, or as STATE carried it.
#[derive(Clone, Copy)]
// Encoded snapshots come from the sync client only.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
enum Snapshot<'a> {
    Decoded(&'a Changeset),
    Encoded(&'a [u8]),
}

impl<'a> Snapshot<'a> {
    /// [`schema_part`] of the snapshot, read from its bytes one instruction at a time if
    /// encoded.
    fn schema_part(self) -> Result<Option<Changeset>, StoreError> {
        let bytes = match self {
            Snapshot::Decoded(snapshot) => return Ok(schema_part(snapshot)),
            Snapshot::Encoded(bytes) => bytes,
        };
        let mut out = Changeset::new();
        let mut stream = Changeset::stream(bytes);
        while let Some(mut instruction) = stream.next_instruction().map_err(|e| bad_snapshot(&e))? {
            if !instruction.is_schema_change() {
                continue;
            }
            // The decoder refuses a string used before it is defined: every one is found.
            let strings = stream.strings();
            instruction.map_strings(&mut |s| out.intern(strings.string(s).unwrap_or_default()));
            out.push(instruction);
        }
        Ok(Some(out))
    }

    /// The whole snapshot, decoded.
    fn whole(self) -> Result<std::borrow::Cow<'a, Changeset>, StoreError> {
        match self {
            Snapshot::Decoded(snapshot) => Ok(std::borrow::Cow::Borrowed(snapshot)),
            Snapshot::Encoded(bytes) => Changeset::decode(bytes)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| bad_snapshot(&e)),
        }
    }
}

/// The error for a STATE snapshot whose bytes do not decode.
fn bad_snapshot(e: &crate::changeset::ChangesetError) -> StoreError {
    StoreError::InvalidArgument(format!("the server sent a bad STATE snapshot: {e}"))
}

fn schema_part(snapshot: &Changeset) -> Option<Changeset> {
    let mut out = Changeset::new();
    out.meta = snapshot.meta;
    for instruction in snapshot
        .instructions
        .iter()
        .filter(|i| i.is_schema_change())
    {
        let mut instruction = instruction.clone();
        let mut missing = false;
        instruction.map_strings(&mut |s| match snapshot.string(s) {
            Some(name) => out.intern(name),
            None => {
                missing = true;
                s
            }
        });
        if missing {
            return None;
        }
        out.push(instruction);
    }
    Some(out)
}

/// The local objects recovery may copy lists from, read before the local state is replaced.
fn read_local_objects(
    conn: &rusqlite::Connection,
    schemas: &Schemas,
    wanted: impl IntoIterator<Item = ObjectId>,
) -> Result<BTreeMap<ObjectId, Object>, StoreError> {
    let mut objects = BTreeMap::new();
    for (class, key) in wanted {
        if !schemas.contains_key(&class) {
            continue;
        }
        if let Some(row) = layout::row_id(conn, &class, &key)? {
            let object = read::read_object(conn, schemas, &class, row)?;
            objects.insert((class, key), object);
        }
    }
    Ok(objects)
}

/// The (ident, salt) pairs of the inherited window, newest first.
fn inherited_idents(conn: &rusqlite::Connection) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT ident, salt FROM _tandem_inherited GROUP BY ident, salt ORDER BY MAX(seq) DESC",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The inherited window, oldest first: (seq, ident, salt, changeset with its meta).
fn read_inherited(
    conn: &rusqlite::Connection,
) -> Result<Vec<(i64, u64, u64, Changeset)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT seq, ident, salt, version, changeset, last_integrated_server_version,
                origin_timestamp
         FROM _tandem_inherited ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)? as u64,
                r.get::<_, i64>(6)? as u64,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(seq, ident, salt, version, bytes, base, timestamp)| {
            let mut cs = Changeset::decode(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("inherited changeset {ident}/{version}: {e}"))
            })?;
            cs.meta = ChangesetMeta {
                version,
                last_integrated_remote_version: base,
                origin_timestamp: timestamp,
                origin_file_ident: ident,
            };
            Ok((seq, ident, salt, cs))
        })
        .collect()
}

/// Keeps the inherited window across a reset (before the history is cleared): takes out and
/// returns (oldest first) its changesets the server no longer has, per `acknowledged`, and adds
/// the history the server integrated under the current ident (up to `acknowledged.through`,
/// without `rolled_back`); then trims the window to `window` changesets of at most
/// [`MAX_INHERITED_IDENTS`] idents.
fn inherit(
    conn: &rusqlite::Connection,
    acknowledged: &Acknowledged,
    rolled_back: Option<u64>,
    window: u64,
) -> Result<Vec<Changeset>, StoreError> {
    let integrated: BTreeMap<(u64, u64), u64> = inherited_idents(conn)?
        .into_iter()
        .zip(acknowledged.inherited.iter().copied())
        .collect();
    let mut lost = Vec::new();
    for (seq, ident, salt, cs) in read_inherited(conn)? {
        let Some(&through) = integrated.get(&(ident, salt)) else {
            continue;
        };
        if cs.meta.version > through {
            conn.execute("DELETE FROM _tandem_inherited WHERE seq = ?1", [seq])?;
            lost.push(cs);
        }
    }
    let ident = super::sync::get(conn, CLIENT_FILE_IDENT).unwrap_or(0);
    let salt = super::sync::get(conn, CLIENT_FILE_IDENT_SALT).unwrap_or(0);
    if ident != 0 {
        for cs in history::read_history_after(conn, 0)? {
            if cs.meta.version > acknowledged.through {
                break;
            }
            if cs.is_empty() || Some(cs.meta.version) == rolled_back {
                continue;
            }
            conn.execute(
                "INSERT INTO _tandem_inherited (ident, salt, version, changeset,
                     last_integrated_server_version, origin_timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    ident as i64,
                    salt as i64,
                    cs.meta.version as i64,
                    cs.encode(),
                    cs.meta.last_integrated_remote_version as i64,
                    cs.meta.origin_timestamp as i64
                ],
            )?;
        }
    }
    conn.execute(
        "DELETE FROM _tandem_inherited WHERE seq NOT IN
             (SELECT seq FROM _tandem_inherited ORDER BY seq DESC LIMIT ?1)",
        [window.min(i64::MAX as u64) as i64],
    )?;
    conn.execute(
        "DELETE FROM _tandem_inherited WHERE ident NOT IN
             (SELECT ident FROM _tandem_inherited GROUP BY ident ORDER BY MAX(seq) DESC LIMIT ?1)",
        [MAX_INHERITED_IDENTS as i64],
    )?;
    Ok(lost)
}

/// Deletes every object row (the data tables; the schema, history and sync state stay).
fn delete_object_rows(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let data_tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE '\\_tandem\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for table in data_tables {
        conn.execute(
            &format!("DELETE FROM \"{}\"", table.replace('"', "\"\"")),
            [],
        )?;
    }
    Ok(())
}

/// The local changesets after version `after`, oldest first, each in its current form (the
/// reciprocal form where a merge changed it, else the original).
fn current_forms_after(
    conn: &rusqlite::Connection,
    after: u64,
) -> Result<Vec<Changeset>, StoreError> {
    let mut forms = history::read_history_after(conn, after)?;
    let mut stmt = conn.prepare("SELECT changeset FROM _tandem_reciprocal WHERE version = ?1")?;
    for form in &mut forms {
        let stored: Option<Vec<u8>> = stmt
            .query_row([form.meta.version as i64], |r| r.get(0))
            .optional()?;
        if let Some(bytes) = stored {
            let meta = form.meta;
            *form = Changeset::decode(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("reciprocal changeset {}: {e}", meta.version))
            })?;
            form.meta = meta;
        }
    }
    Ok(forms)
}

/// The local changesets from version `from` on, oldest first, each in its current form (see
/// [`current_forms_after`] and [`super::rollback`]); none if version `from` is not in the
/// history.
fn current_forms_from(
    conn: &rusqlite::Connection,
    from: u64,
) -> Result<Vec<Changeset>, StoreError> {
    let forms = current_forms_after(conn, from.saturating_sub(1))?;
    if forms.first().map(|c| c.meta.version) != Some(from) {
        // Not in the history (never the case for a transaction waiting for its verdict, which
        // is not acknowledged and so not trimmed): nothing to track it by.
        return Ok(Vec::new());
    }
    Ok(forms)
}

/// Writes the quarantine record of the instructions of `original` that were not recovered.
fn quarantine(
    conn: &rusqlite::Connection,
    original: &Changeset,
    not_recovered: &[(usize, String)],
) -> Result<(), StoreError> {
    let mut kept = Changeset::new();
    for s in original.strings() {
        kept.intern(s);
    }
    kept.meta = original.meta;
    kept.instructions = not_recovered
        .iter()
        .filter_map(|(i, _)| original.instructions.get(*i).cloned())
        .collect();
    let summary = match not_recovered {
        [] => return Ok(()),
        [(i, why)] => format!(
            "1 of {} instructions not recovered: #{i} {}: {why}",
            original.len(),
            original.display_instruction(&original.instructions[*i])
        ),
        [(i, why), ..] => format!(
            "{} of {} instructions not recovered; first: #{i} {}: {why}",
            not_recovered.len(),
            original.len(),
            original.display_instruction(&original.instructions[*i])
        ),
    };
    conn.execute(
        "INSERT INTO _tandem_quarantine (original_version, changeset, reason) VALUES (?1, ?2, ?3)",
        params![original.meta.version as i64, kept.encode(), summary],
    )?;
    let id = conn.last_insert_rowid();
    for (position, (index, why)) in not_recovered.iter().enumerate() {
        conn.execute(
            "INSERT INTO _tandem_quarantine_instruction
             (quarantine_id, position, original_index, instruction, reason)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                position as i64,
                *index as i64,
                original
                    .display_instruction(&original.instructions[*index])
                    .to_string(),
                why
            ],
        )?;
    }
    Ok(())
}

impl Database {
    /// The non-empty local changesets with a version above `client_version`, oldest first: the
    /// ones a server that integrated up to `client_version` never saw.
    pub fn local_changes_after(&self, client_version: u64) -> Result<Vec<Changeset>, StoreError> {
        let read = self.read()?;
        Ok(
            history::read_history_after(read.connection(), client_version)?
                .into_iter()
                .filter(|c| !c.is_empty())
                .collect(),
        )
    }

    /// Replaces the local state with `snapshot` at `base`, then recovers `recover` (local
    /// changesets, oldest first) with the rules of `store::recover`, re-recording each as a new
    /// local changeset and quarantining what the rules cannot recover; all in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] if the snapshot does not apply (nothing changes), SQLite errors.
    pub fn reset_to_snapshot(
        &self,
        snapshot: &Changeset,
        base: ResetBase,
        recover: Vec<Changeset>,
    ) -> Result<ResetOutcome, StoreError> {
        self.reset_to_snapshot_with(
            snapshot,
            base,
            ResetRecovery {
                changesets: recover,
                ..ResetRecovery::default()
            },
        )
    }

    /// The client file idents (with their salts) the inherited window holds changesets of,
    /// newest first: a client reset asks the server (CLIENT_VERSION) how far it integrated
    /// each, and passes the answers in [`Acknowledged::inherited`].
    ///
    /// # Errors
    /// SQLite errors.
    pub fn inherited_idents(&self) -> Result<Vec<(u64, u64)>, StoreError> {
        inherited_idents(self.read()?.connection())
    }

    /// The changesets of the inherited window (acknowledged local changesets from before
    /// earlier client resets), oldest first, with the client file ident they were integrated
    /// under.
    ///
    /// # Errors
    /// SQLite errors; [`StoreError::Corrupt`] for a changeset that does not decode.
    pub fn inherited_changesets(&self) -> Result<Vec<(u64, Changeset)>, StoreError> {
        let read = self.read()?;
        Ok(read_inherited(read.connection())?
            .into_iter()
            .map(|(_, ident, _, cs)| (ident, cs))
            .collect())
    }

    /// Replaces the local state with `snapshot` at `base`, then recovers `recovery` with the
    /// rules of `store::recover` (see [`Database::reset_to_snapshot`]), all in one
    /// transaction. With [`ResetRecovery::acknowledged`], the inherited window is kept
    /// (`Database::inherited_idents`): its changesets the server no longer has are recovered
    /// first, oldest first, and the local changesets the server integrated under the current
    /// ident join it, so a server that later loses them (a restore from an older backup) gets
    /// them back from this file. The window keeps at most [`Config::recovery_window`]
    /// changesets of at most [`MAX_INHERITED_IDENTS`] idents.
    ///
    /// [`Config::recovery_window`]: super::Config::recovery_window
    ///
    /// # Errors
    /// As [`Database::reset_to_snapshot`].
    pub fn reset_to_snapshot_with(
        &self,
        snapshot: &Changeset,
        base: ResetBase,
        recovery: ResetRecovery,
    ) -> Result<ResetOutcome, StoreError> {
        self.reset_to(Snapshot::Decoded(snapshot), base, recovery)
    }

    /// [`Database::reset_to_snapshot_with`] for a snapshot as STATE carried it: it is applied
    /// as it is decoded and never held decoded (issue 18: a fresh `open_synced` of 100,000
    /// objects held 33 MiB of instructions), unless recovery must read the server's objects.
    ///
    /// # Errors
    /// As [`Database::reset_to_snapshot`]; [`StoreError::InvalidArgument`] for bytes that do
    /// not decode (nothing changes).
    #[cfg(feature = "client")]
    pub(crate) fn reset_to_snapshot_encoded(
        &self,
        snapshot: &[u8],
        base: ResetBase,
        recovery: ResetRecovery,
    ) -> Result<ResetOutcome, StoreError> {
        self.reset_to(Snapshot::Encoded(snapshot), base, recovery)
    }

    fn reset_to(
        &self,
        snapshot: Snapshot<'_>,
        base: ResetBase,
        recovery: ResetRecovery,
    ) -> Result<ResetOutcome, StoreError> {
        let ResetRecovery {
            changesets: mut recover,
            rolled_back,
            acknowledged,
        } = recovery;
        if let Some(v) = rolled_back {
            recover.retain(|c| c.meta.version != v);
        }
        let window = self.config.recovery_window;
        // The snapshot's tables and columns (`None`: it names a string it does not define),
        // read once: recovery and the schema catch-up below use them.
        let schema_part = snapshot.schema_part()?;
        let outcome = self.with_writer(|conn, schemas| {
            // A transaction waiting for its verdict is decided by the reset (integrated, so in
            // the snapshot, or rolled back with it): its record goes in the same commit.
            conn.execute("DELETE FROM _tandem_transact", [])?;
            if let Some(acknowledged) = &acknowledged {
                let lost = inherit(conn, acknowledged, rolled_back, window)?;
                recover.splice(0..0, lost);
            }
            // Recovery is decided first, against the server's state as the snapshot recreates
            // it, while the local objects whose lists may be copied can still be read.
            let recovered: Vec<RecoveredChangeset> = if recover.is_empty() {
                Vec::new()
            } else {
                let mut local =
                    read_local_objects(conn, schemas, Recovery::objects_to_read(&recover))?;
                let rollback = match rolled_back {
                    Some(v) => {
                        let forms = current_forms_from(conn, v)?;
                        Some(rollback::roll_back(&mut local, &forms))
                    }
                    None => None,
                };
                // Recovering schema instructions depends on the server's schema alone (they
                // apply if they fit it): then the server's objects are not loaded into memory.
                // A fresh `open_synced` recovers just its schema changeset, and loading a large
                // snapshot whole was most of its peak memory (issue 18 goal 3).
                let schema_only = recover
                    .iter()
                    .all(|c| c.instructions.iter().all(|i| i.is_schema_change()));
                let basis = match schema_part.as_ref().filter(|_| schema_only) {
                    Some(schema) => fresh_state(schemas, schema)?,
                    None => fresh_state(schemas, &*snapshot.whole()?)?,
                };
                let mut recovery = match rollback {
                    Some(rollback) => Recovery::rolling_back(basis, local, rollback),
                    None => Recovery::new(basis, local),
                };
                recover.iter().map(|c| recovery.changeset(c)).collect()
            };
            delete_object_rows(conn)?;
            conn.execute_batch("DELETE FROM _tandem_history; DELETE FROM _tandem_reciprocal;")?;
            put(conn, CLIENT_FILE_IDENT, base.client_file_ident)?;
            put(conn, CLIENT_FILE_IDENT_SALT, base.client_file_ident_salt)?;
            put(conn, DOWNLOAD_SERVER_VERSION, base.server_version)?;
            put(conn, DOWNLOAD_CLIENT_VERSION, 0)?;
            put(conn, LATEST_SERVER_VERSION, base.server_version)?;
            put(conn, LATEST_SERVER_VERSION_SALT, base.server_version_salt)?;
            put(conn, UPLOAD_CLIENT_VERSION, 0)?;
            conn.execute(
                "DELETE FROM _tandem_sync WHERE key = ?1",
                [super::sync::DIVERGED_ACKNOWLEDGEMENT],
            )?;
            match snapshot {
                Snapshot::Decoded(snapshot) => apply::apply(conn, schemas, snapshot)?,
                Snapshot::Encoded(bytes) => apply::apply_stream(conn, schemas, bytes, |_, _| {})
                    .map_err(|e| match e {
                        apply::StreamFailure::Decode(e) => bad_snapshot(&e),
                        apply::StreamFailure::Apply(e) => e.into(),
                    })?,
            }
            // The local schema goes back to the server first, if the snapshot lacks some of it
            // (the file's tables and columns stay; the server must have them for what follows).
            let server_schemas = {
                let mut server = State::new();
                match &schema_part {
                    Some(schema) => server.apply(schema),
                    None => server.apply(&*snapshot.whole()?),
                }
                .map_err(StoreError::Rejected)?;
                server.schemas
            };
            let catch_up = super::schema::catch_up(&server_schemas, schemas);
            if !catch_up.is_empty() {
                history::append_history(
                    conn,
                    catch_up,
                    base.server_version,
                    base.client_file_ident,
                )?;
            }
            let mut outcome = ResetOutcome::default();
            for (original, recovered) in recover.iter().zip(recovered) {
                let RecoveredChangeset {
                    changeset,
                    mut not_recovered,
                    lists_copied,
                } = recovered;
                outcome.lists_copied += lists_copied;
                if !changeset.is_empty() {
                    // The rules decided against the reference applier's state, which equals this
                    // store's (store_differential); should the store still refuse, nothing of the
                    // changeset is lost: all of it goes to the quarantine.
                    match apply::apply(conn, schemas, &changeset) {
                        Ok(()) => {
                            history::append_history(
                                conn,
                                changeset,
                                base.server_version,
                                base.client_file_ident,
                            )?;
                            outcome.recovered += 1;
                        }
                        Err(apply::ApplyFailure::Rejected(why)) => {
                            not_recovered = (0..original.len())
                                .map(|i| {
                                    (
                                        i,
                                        format!("the store refused the recovered changeset: {why}"),
                                    )
                                })
                                .collect();
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                if !not_recovered.is_empty() {
                    quarantine(conn, original, &not_recovered)?;
                    outcome.quarantined += 1;
                    outcome.instructions_not_recovered += not_recovered.len();
                }
            }
            Ok(outcome)
        })?;
        // Everything may have changed: every listener re-reads and reports the difference.
        self.notify_everything();
        Ok(outcome)
    }

    /// Rolls back the rejected transaction with local version `rolled_back` by rebasing: the
    /// local state becomes `snapshot` (the server's state at `server_version`, salt
    /// `server_version_salt`) plus the local changesets the server has not integrated, in their
    /// current forms, with the transaction left out by `rollback::rebase`, each re-recorded
    /// (keeping its origin timestamp) as a new local changeset based on `server_version`, in
    /// one SQLite transaction. The client file ident and the history the server integrated
    /// stay. Unlike a client reset's recovery rules, nothing is copied: the server merges the
    /// re-recorded changesets by OT, so other clients' concurrent elements are never erased.
    ///
    /// This is exact only when the download cursor is `server_version` (the current forms are
    /// then relative to the snapshot): otherwise nothing changes, and the answer
    /// ([`SnapshotRollback::CursorBehind`] or [`SnapshotRollback::SnapshotOlder`]) says whether
    /// the caller downloads up to the snapshot first or asks for a newer one. The cursor is
    /// read inside the write transaction, so the answer holds when it is given.
    /// Instructions that cannot be rebased or no longer apply (on an object only the
    /// transaction created) go to the quarantine with the reason.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] if the snapshot does not apply (nothing changes); SQLite
    /// errors; [`StoreError::Corrupt`] for a stored changeset that does not decode.
    pub fn roll_back_to_snapshot(
        &self,
        snapshot: &Changeset,
        server_version: u64,
        server_version_salt: u64,
        rolled_back: u64,
    ) -> Result<SnapshotRollback, StoreError> {
        let outcome = self.with_writer(|conn, schemas| {
            let cursor = super::sync::get(conn, DOWNLOAD_SERVER_VERSION).unwrap_or(0);
            if cursor < server_version {
                return Ok(SnapshotRollback::CursorBehind {
                    download_server_version: cursor,
                });
            }
            if cursor > server_version {
                return Ok(SnapshotRollback::SnapshotOlder {
                    download_server_version: cursor,
                });
            }
            // The rejection recorded for the transaction is done with in this commit: a crash
            // before it resumes the rollback, one after it never repeats it.
            conn.execute(
                "DELETE FROM _tandem_transact WHERE version = ?1",
                [rolled_back.min(i64::MAX as u64) as i64],
            )?;
            let through = super::sync::get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0);
            let ident = super::sync::get(conn, CLIENT_FILE_IDENT).unwrap_or(0);
            let mut forms = current_forms_after(conn, through)?;
            forms.retain(|c| !c.is_empty() || c.meta.version == rolled_back);
            let split = forms
                .iter()
                .position(|c| c.meta.version == rolled_back)
                .unwrap_or(forms.len());
            let before = forms[..split]
                .iter()
                .map(|c| (c, rollback::Rebased::unchanged(c)));
            let after = forms[split + 1..]
                .iter()
                .zip(rollback::rebase(&forms[split..]));
            // Each instruction is tried on the snapshot's state as it grows: those that no
            // longer apply (an object only the transaction created) are quarantined alone.
            let mut fresh = fresh_state(schemas, snapshot)?;
            let mut kept = Vec::with_capacity(forms.len());
            for (form, rebased) in before.chain(after) {
                let mut not_recovered = rebased.not_rebased;
                let mut out = rebased.changeset.clone();
                out.instructions.clear();
                let mut one = out.clone();
                for (instruction, &index) in
                    rebased.changeset.instructions.iter().zip(&rebased.origin)
                {
                    one.instructions = vec![instruction.clone()];
                    match fresh.apply(&one) {
                        Ok(()) => out.instructions.push(instruction.clone()),
                        Err(e) => not_recovered.push((index, e.to_string())),
                    }
                }
                not_recovered.sort();
                kept.push((form, out, not_recovered));
            }
            delete_object_rows(conn)?;
            conn.execute(
                "DELETE FROM _tandem_history WHERE version > ?1",
                [through.min(i64::MAX as u64) as i64],
            )?;
            conn.execute(
                "DELETE FROM _tandem_reciprocal WHERE version > ?1",
                [through.min(i64::MAX as u64) as i64],
            )?;
            put(conn, LATEST_SERVER_VERSION, server_version)?;
            put(conn, LATEST_SERVER_VERSION_SALT, server_version_salt)?;
            apply::apply(conn, schemas, snapshot)?;
            let mut outcome = ResetOutcome::default();
            for (form, changeset, not_recovered) in kept {
                if !changeset.is_empty() {
                    apply::apply(conn, schemas, &changeset)?;
                    history::append_keeping_timestamp(conn, &changeset, server_version, ident)?;
                    outcome.recovered += 1;
                }
                if !not_recovered.is_empty() {
                    quarantine(conn, form, &not_recovered)?;
                    outcome.quarantined += 1;
                    outcome.instructions_not_recovered += not_recovered.len();
                }
            }
            Ok(SnapshotRollback::RolledBack(outcome))
        })?;
        if matches!(outcome, SnapshotRollback::RolledBack(_)) {
            self.notify_everything();
        }
        Ok(outcome)
    }

    /// What client resets could not recover, oldest first: per local changeset, the
    /// instructions the recovery rules left out and why. Records from files written before
    /// per-instruction records have an empty `instructions` and the whole changeset.
    pub fn quarantine(&self) -> Result<Vec<Quarantined>, StoreError> {
        let read = self.read()?;
        let conn = read.connection();
        let mut stmt = conn.prepare(
            "SELECT id, original_version, changeset, reason FROM _tandem_quarantine ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut instructions = conn.prepare(
            "SELECT original_index, instruction, reason FROM _tandem_quarantine_instruction
             WHERE quarantine_id = ?1 ORDER BY position",
        )?;
        rows.into_iter()
            .map(|(id, version, bytes, reason)| {
                let mut changeset = Changeset::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("quarantined changeset {id}: {e}")))?;
                changeset.meta.version = version as u64;
                let instructions = instructions
                    .query_map([id], |r| {
                        Ok(QuarantinedInstruction {
                            index: r.get::<_, i64>(0)? as usize,
                            instruction: r.get(1)?,
                            reason: r.get(2)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Quarantined {
                    id: id as u64,
                    original_version: version as u64,
                    changeset,
                    reason,
                    instructions,
                })
            })
            .collect()
    }

    /// Removes quarantine records: the one with `id`, or all of them for `None`.
    pub fn clear_quarantine(&self, id: Option<u64>) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            match id {
                Some(id) => {
                    conn.execute(
                        "DELETE FROM _tandem_quarantine_instruction WHERE quarantine_id = ?1",
                        [id as i64],
                    )?;
                    conn.execute("DELETE FROM _tandem_quarantine WHERE id = ?1", [id as i64])?
                }
                None => conn.execute_batch(
                    "DELETE FROM _tandem_quarantine_instruction; DELETE FROM _tandem_quarantine;",
                )
                .map(|()| 0)?,
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{ResetBase, ResetRecovery};
    use crate::store::{Config, Database, StoreError};

    use crate::store::test_support::{put_title as put, task_schema as schema};

    const BASE: ResetBase = ResetBase {
        client_file_ident: 5,
        client_file_ident_salt: 6,
        server_version: 7,
        server_version_salt: 8,
    };

    /// A client reset from the snapshot's bytes (applied as they decode) does what the reset
    /// from the decoded snapshot does: the same state, history and outcome, with recovery of
    /// local objects (which reads the whole snapshot) and of a schema alone.
    #[test]
    fn an_encoded_snapshot_resets_as_the_decoded_one_does() {
        let dir = tempfile::TempDir::new().unwrap();
        let open = |name: &str| {
            Database::open(dir.path().join(name), &schema(), Config::default()).unwrap()
        };
        let server = open("server.sqlite");
        for key in 0..30 {
            put(&server, key, &format!("server {key}"));
        }
        let snapshot = server.export_state().unwrap().snapshot_changeset();
        let bytes = snapshot.encode();
        for writes in [&[][..], &[(5, "local"), (100, "local only")][..]] {
            let (decoded, encoded) = (open("decoded.sqlite"), open("encoded.sqlite"));
            for db in [&decoded, &encoded] {
                for (key, title) in writes {
                    put(db, *key, title);
                }
            }
            let recovery = |db: &Database| ResetRecovery {
                changesets: db.local_changes_after(0).unwrap(),
                ..ResetRecovery::default()
            };
            let a = decoded
                .reset_to_snapshot_with(&snapshot, BASE, recovery(&decoded))
                .unwrap();
            let b = encoded
                .reset_to_snapshot_encoded(&bytes, BASE, recovery(&encoded))
                .unwrap();
            assert_eq!(a, b, "{writes:?}");
            assert_eq!(
                encoded.export_state().unwrap(),
                decoded.export_state().unwrap(),
                "{writes:?}"
            );
            let history = |db: &Database| -> Vec<Vec<u8>> {
                db.history().unwrap().iter().map(|c| c.encode()).collect()
            };
            assert_eq!(history(&encoded), history(&decoded), "{writes:?}");
            assert_eq!(
                encoded
                    .read()
                    .unwrap()
                    .query("Task", "_id >= 0", &[])
                    .unwrap()
                    .len(),
                30 + usize::from(!writes.is_empty()),
            );
            drop((decoded, encoded));
            for name in ["decoded.sqlite", "encoded.sqlite"] {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(dir.path().join(format!("{name}{suffix}")));
                }
            }
        }
    }

    /// Snapshot bytes that do not decode are refused before anything changes.
    #[test]
    fn a_bad_encoded_snapshot_changes_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::open(dir.path().join("a.sqlite"), &schema(), Config::default()).unwrap();
        put(&db, 1, "mine");
        let server =
            Database::open(dir.path().join("s.sqlite"), &schema(), Config::default()).unwrap();
        put(&server, 2, "theirs");
        let mut bytes = server.export_state().unwrap().snapshot_changeset().encode();
        bytes.truncate(bytes.len() - 2);
        let before = (db.export_state().unwrap(), db.sync_progress().unwrap());
        let err = db
            .reset_to_snapshot_encoded(&bytes, BASE, ResetRecovery::default())
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidArgument(m) if m.contains("bad STATE snapshot")),
            "{err}"
        );
        assert_eq!(
            (db.export_state().unwrap(), db.sync_progress().unwrap()),
            before
        );
    }
}
