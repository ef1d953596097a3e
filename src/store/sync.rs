//! The client side of sync, as far as the local file is concerned: identity, cursors, what to
//! upload, and integrating what the server sends.
//!
//! A session (network) drives these calls; everything here is durable the moment it returns:
//! the client file ident is stored before it is used, an acknowledgement moves the upload
//! cursor, and a DOWNLOAD is rebased over the local changesets the server has not integrated
//! (OT, with the reciprocal forms kept in `_tandem_reciprocal`), applied and its cursors stored
//! in one SQLite transaction, after which listeners are notified.

use rusqlite::{params, Connection};

use super::history::{
    last_version, read_history_after, read_history_until, CLOCK_OFFSET, HISTORY_BASE_VERSION,
};
pub(crate) use super::layout::{get, put};
use super::{apply, notify, Database, StoreError};
use crate::changeset::{Changeset, ChangesetMeta};
use crate::ot::{ErasedTables, FormKey, MergeReach, ReciprocalHistory, TransformError};
use crate::state::{checks, ApplyError, Schemas};

pub(crate) const CLIENT_FILE_IDENT: &str = "client_file_ident";
pub(crate) const CLIENT_FILE_IDENT_SALT: &str = "client_file_ident_salt";
pub(crate) const DOWNLOAD_SERVER_VERSION: &str = "download_server_version";
pub(crate) const DOWNLOAD_CLIENT_VERSION: &str = "download_client_version";
pub(crate) const LATEST_SERVER_VERSION: &str = "latest_server_version";
pub(crate) const LATEST_SERVER_VERSION_SALT: &str = "latest_server_version_salt";
pub(crate) const UPLOAD_CLIENT_VERSION: &str = "upload_client_version";
/// Set while a file whose own history went back waits for its client reset: the local version
/// the server had acknowledged, as the file recorded it before (`Database::mark_history_diverged`).
pub(crate) const DIVERGED_ACKNOWLEDGEMENT: &str = "diverged_acknowledgement";

/// Trims the history (realm-core's `trim_sync_history`): removes the local changesets at or
/// below the last client version the server had integrated when it produced the latest server
/// version this file integrated (`download_client_version`, which is also acknowledged), except
/// the newest `keep` of those. Every later server changeset was made after the server
/// integrated them, so no rebase needs them; uploads start after the acknowledged version; the
/// `keep` newest stay for client reset recovery ([`super::Config::recovery_window`]).
pub(crate) fn trim_history(conn: &Connection, keep: u64) -> Result<(), StoreError> {
    let integrated = get(conn, DOWNLOAD_CLIENT_VERSION)
        .unwrap_or(0)
        .min(get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0));
    let through = integrated.saturating_sub(keep);
    let base = get(conn, HISTORY_BASE_VERSION).unwrap_or(0);
    if through <= base {
        return Ok(());
    }
    conn.prepare_cached("DELETE FROM _tandem_history WHERE version <= ?1")?
        .execute([through.min(i64::MAX as u64) as i64])?;
    put(conn, HISTORY_BASE_VERSION, through)
}

/// Where this file stands with the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Client file ident (0 until the server assigned one).
    pub client_file_ident: u64,
    /// Its salt.
    pub client_file_ident_salt: u64,
    /// Last server version integrated here.
    pub download_server_version: u64,
    /// The server's integration of this file's versions at that server version.
    pub download_client_version: u64,
    /// Latest server version heard of.
    pub latest_server_version: u64,
    /// Its salt.
    pub latest_server_version_salt: u64,
    /// Last local version the server acknowledged.
    pub upload_client_version: u64,
}

/// The cursors a DOWNLOAD message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadCursors {
    /// Download cursor: server version after the batch.
    pub download_server_version: u64,
    /// ... and this file's last version the server had integrated at that point.
    pub download_client_version: u64,
    /// Latest server version.
    pub latest_server_version: u64,
    /// Its salt.
    pub latest_server_version_salt: u64,
    /// Upload acknowledgement.
    pub upload_client_version: u64,
}

impl Database {
    /// Where this file stands with the server.
    pub fn sync_progress(&self) -> Result<SyncProgress, StoreError> {
        let read = self.read()?;
        let conn = read.connection();
        let g = |k| get(conn, k).unwrap_or(0);
        Ok(SyncProgress {
            client_file_ident: g(CLIENT_FILE_IDENT),
            client_file_ident_salt: g(CLIENT_FILE_IDENT_SALT),
            download_server_version: g(DOWNLOAD_SERVER_VERSION),
            download_client_version: g(DOWNLOAD_CLIENT_VERSION),
            latest_server_version: g(LATEST_SERVER_VERSION),
            latest_server_version_salt: g(LATEST_SERVER_VERSION_SALT),
            upload_client_version: g(UPLOAD_CLIENT_VERSION),
        })
    }

    /// The correction added to this device's clock when stamping local changesets, in
    /// milliseconds (the server's clock minus this device's, as the sync client last measured
    /// it; 0 until measured). Persisted, so changesets committed offline use it too.
    pub fn clock_offset(&self) -> Result<i64, StoreError> {
        Ok(get(self.read()?.connection(), CLOCK_OFFSET).unwrap_or(0) as i64)
    }

    /// Sets [`Database::clock_offset`]; later local commits are stamped with the device's clock
    /// plus `offset_ms` (never below 0). Changesets already committed keep their timestamps.
    pub fn set_clock_offset(&self, offset_ms: i64) -> Result<(), StoreError> {
        self.with_writer(|conn, _| put(conn, CLOCK_OFFSET, offset_ms as u64))
    }

    /// The server path this file syncs with: recorded when a server first answered a sync
    /// session's IDENT for it ([`Database::bind_synced_path`]); `None` before. A session with
    /// another path is refused (`SyncSession::start`): the file's objects would be uploaded
    /// into that server file (another user's, say) and its own state lost in a client reset.
    pub fn synced_path(&self) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .read()?
            .connection()
            .query_row("SELECT path FROM _tandem_sync_path WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Records `path` as the server path this file syncs with ([`Database::synced_path`]).
    pub fn bind_synced_path(&self, path: &str) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            conn.execute(
                "INSERT INTO _tandem_sync_path (id, path) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET path = excluded.path",
                [path],
            )?;
            Ok(())
        })
    }

    /// Stores the client file ident the server allocated, before anything uses it. Local
    /// changesets made before it are recorded as coming from this ident from now on.
    pub fn set_client_file_ident(&self, ident: u64, salt: u64) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            put(conn, CLIENT_FILE_IDENT, ident)?;
            put(conn, CLIENT_FILE_IDENT_SALT, salt)?;
            conn.execute(
                "UPDATE _tandem_history SET origin_file_ident = ?1 WHERE origin_file_ident = 0",
                [ident as i64],
            )?;
            Ok(())
        })
    }

    /// The local changesets the server has not acknowledged, oldest first (their `meta` holds
    /// client version, last integrated server version and origin timestamp), up to about
    /// `max_bytes` of encoded changesets (at least one if there is any).
    pub fn pending_uploads(&self, max_bytes: usize) -> Result<Vec<Changeset>, StoreError> {
        let read = self.read()?;
        let acked = get(read.connection(), UPLOAD_CLIENT_VERSION).unwrap_or(0);
        // Read only as far as the batch goes: a long offline backlog is not decoded whole on
        // every upload round. Sizes are the stored (encoded) bytes.
        let mut any = false;
        let mut out = read_history_until(read.connection(), acked, |read, bytes| {
            // Called once per row after the first: the last one read is new each time.
            any |= read.last().is_some_and(|c| !c.is_empty());
            bytes < max_bytes || !any
        })?;
        out.retain(|cs| !cs.is_empty());
        Ok(out)
    }

    /// Records that this file's own history went back (the server answered 210,
    /// bad_client_version: the file was restored from an older copy of itself), with
    /// `acknowledged`, the local version the server had acknowledged as the file recorded it
    /// before. The lowest of the versions so recorded is kept and returned. The next client
    /// reset recovers every local changeset after it and clears the record; until then each
    /// sync session starts with that reset, even after a restart, as the file's record of
    /// acknowledged versions may by then count the other copy's.
    ///
    /// # Errors
    /// SQLite errors.
    #[cfg(feature = "client")]
    pub(crate) fn mark_history_diverged(&self, acknowledged: u64) -> Result<u64, StoreError> {
        self.with_writer(|conn, _| {
            let kept =
                get(conn, DIVERGED_ACKNOWLEDGEMENT).map_or(acknowledged, |v| v.min(acknowledged));
            put(conn, DIVERGED_ACKNOWLEDGEMENT, kept)?;
            Ok(kept)
        })
    }

    /// The version [`Database::mark_history_diverged`] recorded, while its reset is pending.
    ///
    /// # Errors
    /// SQLite errors.
    #[cfg(feature = "client")]
    pub(crate) fn history_diverged(&self) -> Result<Option<u64>, StoreError> {
        Ok(get(self.read()?.connection(), DIVERGED_ACKNOWLEDGEMENT))
    }

    /// The newest local version (0 if nothing was ever committed), trimmed or not.
    pub fn last_local_version(&self) -> Result<u64, StoreError> {
        last_version(self.read()?.connection())
    }

    /// The client version the history has been trimmed through (0 if nothing was trimmed):
    /// local changesets at or below it are gone (see [`super::Config::recovery_window`]).
    pub fn trimmed_through(&self) -> Result<u64, StoreError> {
        Ok(get(self.read()?.connection(), HISTORY_BASE_VERSION).unwrap_or(0))
    }

    /// Whether the server has acknowledged every non-empty local changeset up to `version`.
    pub fn uploaded_through(&self, version: u64) -> Result<bool, StoreError> {
        Ok(self
            .pending_uploads(1)?
            .first()
            .map_or(true, |cs| cs.meta.version > version))
    }

    /// The transaction waiting for the server's verdict, recorded by
    /// [`WriteTransaction::commit_transact`](super::WriteTransaction::commit_transact): its
    /// local version and, once the server rejected it, the reason. `None` when none waits (or
    /// the stored upload cursor, the server's acknowledgement
    /// ([`SyncProgress::upload_client_version`]), already covers it: it was integrated, and the
    /// record is dropped here).
    pub fn pending_transact(&self) -> Result<Option<PendingTransact>, StoreError> {
        let pending = {
            let read = self.read()?;
            let conn = read.connection();
            let row: Option<(i64, Option<String>)> = {
                use rusqlite::OptionalExtension;
                conn.query_row(
                    "SELECT version, rejected FROM _tandem_transact ORDER BY version LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
            };
            let acked = get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0);
            row.map(|(version, rejected)| (version as u64, rejected, acked))
        };
        match pending {
            Some((version, None, acked)) if version <= acked => {
                self.resolve_transact(version)?;
                Ok(None)
            }
            Some((version, rejected, _)) => Ok(Some(PendingTransact { version, rejected })),
            None => Ok(None),
        }
    }

    /// Records the server's rejection of the waiting transaction `version` (kept until the
    /// rollback, which drops the record in its own commit).
    pub fn reject_transact(&self, version: u64, reason: &str) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            conn.execute(
                "UPDATE _tandem_transact SET rejected = ?2 WHERE version = ?1",
                params![version as i64, reason],
            )?;
            Ok(())
        })
    }

    /// Drops the record of the waiting transaction `version` (the server integrated it).
    pub fn resolve_transact(&self, version: u64) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            conn.execute(
                "DELETE FROM _tandem_transact WHERE version = ?1",
                [version as i64],
            )?;
            Ok(())
        })
    }

    /// Encoded bytes of the local changesets the server has not acknowledged.
    pub fn pending_upload_bytes(&self) -> Result<u64, StoreError> {
        let read = self.read()?;
        let conn = read.connection();
        let acked = get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0);
        let bytes: Option<i64> = conn.query_row(
            "SELECT SUM(length(changeset)) FROM _tandem_history WHERE version > ?1",
            [acked as i64],
            |r| r.get(0),
        )?;
        Ok(bytes.unwrap_or(0) as u64)
    }

    /// Integrates a DOWNLOAD: every server changeset (its `meta.version` the server version,
    /// `meta.last_integrated_remote_version` this file's last version the server had integrated
    /// when it made it) is rebased over the local changesets made after that, and applied;
    /// cursors and reciprocal forms are stored; all in one transaction. Listeners are notified
    /// after the commit.
    pub fn integrate_download(
        &self,
        entries: Vec<Changeset>,
        cursors: DownloadCursors,
    ) -> Result<(), StoreError> {
        let entries = entries.into_iter().map(Incoming::Decoded).collect();
        self.integrate_download_then(entries, cursors, |_| Ok(()))
    }

    /// [`Database::integrate_download`] for changesets as they arrived (a DOWNLOAD's entries):
    /// each is decoded only when a local change could meet it, and otherwise applied as it is
    /// decoded, so that a fresh client's first download never holds a large changeset decoded.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for bytes that do not decode (nothing is applied), and
    /// those of [`Database::integrate_download`].
    #[cfg(feature = "client")]
    pub(crate) fn integrate_download_encoded(
        &self,
        entries: Vec<Incoming>,
        cursors: DownloadCursors,
    ) -> Result<(), StoreError> {
        self.integrate_download_then(entries, cursors, |_| Ok(()))
    }

    /// [`Database::integrate_download`], running `then` in the same transaction before it
    /// commits.
    pub(crate) fn integrate_download_then(
        &self,
        entries: Vec<Incoming>,
        cursors: DownloadCursors,
        then: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // What each changeset touched, for the listeners: worked out while it is applied (it is
        // not kept). A listener that starts watching during the transaction is told that
        // anything may have changed.
        let watching = self.notifier.has_watches();
        let mut touched: Vec<notify::Touched> = Vec::new();
        self.with_writer(|conn, schemas| {
            let own = get(conn, CLIENT_FILE_IDENT).unwrap_or(0);
            // Only local changesets after the oldest one an entry may be concurrent with.
            let floor = entries
                .iter()
                .map(|c| c.meta().last_integrated_remote_version)
                .min()
                .unwrap_or(u64::MAX);
            let history = if entries.is_empty() {
                Vec::new()
            } else {
                read_history_after(conn, floor)?
            };
            let mut reciprocal = ReciprocalHistory::new();
            {
                let mut stmt =
                    conn.prepare_cached("SELECT version, changeset FROM _tandem_reciprocal WHERE version > ?1")?;
                let rows = stmt
                    .query_map([floor.min(i64::MAX as u64) as i64], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for (version, bytes) in rows {
                    let mut cs = Changeset::decode(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("reciprocal changeset {version}: {e}")))?;
                    // The history is in version order: one search a row, not a scan (a scan
                    // per row was quadratic in a long offline branch).
                    if let Ok(i) = history.binary_search_by_key(&(version as u64), |c| c.meta.version) {
                        cs.meta = history[i].meta;
                    }
                    reciprocal.set(cs);
                }
            }
            let local: Vec<Changeset> = history
                .into_iter()
                .map(|mut c| {
                    if c.meta.origin_file_ident == 0 {
                        c.meta.origin_file_ident = own;
                    }
                    c
                })
                .collect();
            // Entries are taken in runs of equal `last_integrated_remote_version`: every entry
            // of a run is concurrent with the same local changesets, so the run is merged in
            // one `integrate` call, and what those local changesets reach is worked out once a
            // run. Entry by entry, both were linear in the local history for every entry: a
            // file back from a long offline period spent quadratic time on its first download
            // (4,000 local and 4,000 server changesets on different objects: 3.3 s).
            let mut merged_any = false;
            let mut entries = entries.into_iter().peekable();
            while let Some(first) = entries.peek() {
                let mut run = Run::new(first.meta().last_integrated_remote_version, &local);
                'entries: while let Some(entry) =
                    entries.next_if(|e| e.meta().last_integrated_remote_version == run.seen)
                {
                    if run.pending_instructions >= Run::MAX_PENDING_INSTRUCTIONS {
                        merged_any |= run.flush(conn, schemas, &mut reciprocal, watching, &mut touched)?;
                    }
                    let cs = match entry {
                        Incoming::Decoded(cs) => cs,
                        Incoming::Encoded { meta, bytes } => loop {
                            let meets = run
                                .local_reach(&reciprocal)
                                .is_some_and(|r| r.meets_encoded(&bytes, ErasedTables::AlwaysMeet));
                            // Behind merged entries waiting, a small entry that meets no local
                            // change joins them (merging it changes nothing, and the server's
                            // order of application stays); a larger one is applied as it is
                            // decoded once they are, so it is never held decoded.
                            if meets || (!run.pending.is_empty() && bytes.len() <= Run::JOIN_BYTES) {
                                break decode_entry(meta, &bytes, run.pending.last())?;
                            }
                            if !run.pending.is_empty() {
                                merged_any |= run.flush(conn, schemas, &mut reciprocal, watching, &mut touched)?;
                                // Asked again, with nothing waiting.
                                continue;
                            }
                            // Applied as it is decoded: no local change can meet it.
                            let mut builder = notify::TouchedBuilder::default();
                            apply::apply_stream(conn, schemas, &bytes, |strings, instruction| {
                                if watching {
                                    builder.add(strings, instruction);
                                }
                            })
                            .map_err(|e| match e {
                                apply::StreamFailure::Decode(e) => bad_changeset(meta.version, &e),
                                apply::StreamFailure::Apply(e) => e.into(),
                            })?;
                            reciprocal.forget_through(run.seen);
                            if watching {
                                touched.push(builder.finish());
                            }
                            continue 'entries;
                        },
                    };
                    run.pending_instructions += cs.len();
                    run.pending.push(cs);
                }
                merged_any |= run.flush(conn, schemas, &mut reciprocal, watching, &mut touched)?;
            }
            conn.execute(
                "DELETE FROM _tandem_reciprocal WHERE version <= ?1",
                // Later server changesets were all made after the server integrated these.
                [cursors.download_client_version as i64],
            )?;
            // The recorded forms change only by a merge: without one, the rows stand.
            for cs in reciprocal.iter().filter(|_| merged_any) {
                conn.execute(
                    "INSERT OR REPLACE INTO _tandem_reciprocal (version, changeset) VALUES (?1, ?2)",
                    params![cs.meta.version as i64, cs.encode()],
                )?;
            }
            put(conn, DOWNLOAD_SERVER_VERSION, cursors.download_server_version)?;
            put(conn, DOWNLOAD_CLIENT_VERSION, cursors.download_client_version)?;
            put(conn, LATEST_SERVER_VERSION, cursors.latest_server_version)?;
            put(conn, LATEST_SERVER_VERSION_SALT, cursors.latest_server_version_salt)?;
            let acked = get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0);
            put(conn, UPLOAD_CLIENT_VERSION, acked.max(cursors.upload_client_version))?;
            trim_history(conn, self.config.recovery_window)?;
            then(conn)
        })?;
        if watching {
            for t in touched {
                self.notifier.committed(t);
            }
        } else if self.notifier.has_watches() {
            self.notifier.committed(None);
        }
        Ok(())
    }

    /// Records that the server integrated local versions up to `client_version`.
    pub fn acknowledge_upload(&self, client_version: u64) -> Result<(), StoreError> {
        self.with_writer(|conn, _| {
            let acked = get(conn, UPLOAD_CLIENT_VERSION).unwrap_or(0);
            put(conn, UPLOAD_CLIENT_VERSION, acked.max(client_version))?;
            trim_history(conn, self.config.recovery_window)
        })
    }
}

/// Server changesets of one DOWNLOAD waiting to be merged together: consecutive entries with
/// the same `last_integrated_remote_version` (`seen`), so concurrent with the same local
/// changesets.
struct Run<'l> {
    seen: u64,
    /// The local history after the oldest `seen` of the download, in version order.
    local: &'l [Changeset],
    pending: Vec<Changeset>,
    /// The instructions of `pending`.
    pending_instructions: usize,
    /// What the local changesets concurrent with the run reach, in their recorded forms
    /// (`None` inside: there are none); built when an encoded entry first asks
    /// ([`method@Run::local_reach`]). A merge rewrites and discards instructions only on the objects
    /// the merged entries address, so a reach built before it stays a safe answer
    /// (`ReciprocalHistory::needs_merge`), except that a side erasing a table gains erasures
    /// of the columns linking to it: after a merge where either side erases a table,
    /// [`Run::flush`] drops it to be built again.
    local_reach: Option<Option<MergeReach>>,
}

impl<'l> Run<'l> {
    /// Decoded entries a run holds before it merges them (104 bytes an instruction, so about
    /// 27 MB): one DOWNLOAD (up to 16 MiB) of small instructions decodes to far more.
    /// (Eight in the unit tests, so that they merge a run in several parts.)
    const MAX_PENDING_INSTRUCTIONS: usize = if cfg!(test) { 8 } else { 1 << 18 };

    /// The encoded size up to which an entry meeting no local change joins the merged entries
    /// waiting before it, rather than having them merged first so that it can be applied as it
    /// is decoded: small entries cost less merged than a merge each, large ones are never held
    /// decoded (a fresh client's first download of a bulk insert).
    const JOIN_BYTES: usize = 64 << 10;

    fn new(seen: u64, local: &'l [Changeset]) -> Self {
        Run {
            seen,
            local,
            pending: Vec::new(),
            pending_instructions: 0,
            local_reach: None,
        }
    }

    /// The local changesets concurrent with the run: after `seen`, and not empty.
    fn concurrent(&self) -> impl Iterator<Item = &'l Changeset> {
        let seen = self.seen;
        self.local
            .iter()
            .filter(move |c| c.meta.version > seen && !c.is_empty())
    }

    /// [`Run::local_reach`](field@Run::local_reach), built if it is not.
    fn local_reach(&mut self, reciprocal: &ReciprocalHistory) -> Option<&MergeReach> {
        if self.local_reach.is_none() {
            let mut forms = self
                .concurrent()
                .map(|c| {
                    reciprocal
                        .form(FormKey::History(c.meta.version))
                        .unwrap_or(c)
                })
                .peekable();
            self.local_reach = Some(forms.peek().is_some().then(|| MergeReach::of(forms)));
        }
        self.local_reach.as_ref().and_then(Option::as_ref)
    }

    /// Merges the pending changesets with the local changesets after `seen` that they can
    /// meet (in one [`ReciprocalHistory::integrate`] call: the same result as one call per
    /// changeset, in order), then applies them in order. Returns whether a merge ran (the
    /// recorded forms changed).
    fn flush(
        &mut self,
        conn: &Connection,
        schemas: &mut Schemas,
        reciprocal: &mut ReciprocalHistory,
        watching: bool,
        touched: &mut Vec<notify::Touched>,
    ) -> Result<bool, StoreError> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        // Local changesets these cannot meet are left out: merging with them would change
        // neither (`ReciprocalHistory::needs_merge`), and a large server changeset is then not
        // imported at all (a fresh client's schema changeset against a bulk insert;
        // `docs/ot.md`).
        let reach = MergeReach::of(&self.pending);
        let concurrent: Vec<&Changeset> = self
            .concurrent()
            .filter(|c| reciprocal.needs_merge(&reach, c))
            .collect();
        // With no local change the server had not seen, there is nothing to transform.
        let merged = !concurrent.is_empty();
        if merged {
            reciprocal
                .integrate(&mut self.pending, &concurrent)
                .map_err(|e| merge_failure(schemas, &self.pending, e))?;
            let local_erases = self
                .local_reach
                .as_ref()
                .is_some_and(|r| r.as_ref().is_some_and(MergeReach::erases_table));
            if reach.erases_table() || local_erases {
                self.local_reach = None;
            }
        }
        reciprocal.forget_through(self.seen);
        for cs in self.pending.drain(..) {
            apply::apply(conn, schemas, &cs)?;
            if watching {
                touched.push(notify::touched(&cs));
            }
        }
        self.pending_instructions = 0;
        Ok(merged)
    }
}

/// An entry of a DOWNLOAD decoded, its metadata set; beside `earlier` (the entry before it in
/// its run), whose string table it shares if it names the same strings
/// (`Changeset::decode_sharing`).
fn decode_entry(
    meta: ChangesetMeta,
    bytes: &[u8],
    earlier: Option<&Changeset>,
) -> Result<Changeset, StoreError> {
    let mut cs =
        Changeset::decode_sharing(bytes, earlier).map_err(|e| bad_changeset(meta.version, &e))?;
    cs.meta = meta;
    Ok(cs)
}

/// A server changeset for [`Database::integrate_download_encoded`]: decoded, or as it arrived.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) enum Incoming {
    /// Decoded, its `meta` set.
    Decoded(Changeset),
    /// As it arrived: its metadata and encoded bytes.
    Encoded {
        /// What [`Changeset::meta`] would hold.
        meta: ChangesetMeta,
        /// The Realm-format bytes.
        bytes: Vec<u8>,
    },
}

impl Incoming {
    fn meta(&self) -> ChangesetMeta {
        match self {
            Incoming::Decoded(cs) => cs.meta,
            Incoming::Encoded { meta, .. } => *meta,
        }
    }
}

/// The error for server changesets (`batch`, merged together) that cannot be merged with the
/// local changes the server has not seen. A schema that disagrees with this database's (two
/// clients declared one property with different types) is [`ApplyError::SchemaMismatch`]
/// naming the server version, class and property, as applying it would be: no retry can
/// merge it.
fn merge_failure(schemas: &Schemas, batch: &[Changeset], e: TransformError) -> StoreError {
    match e {
        TransformError::SchemaMismatch { .. } => {
            // The first changeset of the batch whose schema instructions disagree with this
            // database's; without one, the merge's own words about the first.
            let (version, (instruction, what)) = batch
                .iter()
                .find_map(|cs| Some((cs.meta.version, checks::schema_conflict(schemas, cs)?)))
                .unwrap_or_else(|| {
                    (
                        batch.first().map_or(0, |cs| cs.meta.version),
                        (0, e.to_string()),
                    )
                });
            StoreError::Rejected(ApplyError::SchemaMismatch {
                instruction,
                reason: format!(
                    "the server's schema (server version {version}) disagrees with this \
                     database's: {what}; every client of a path must declare each class and \
                     property alike (only additions merge)"
                ),
            })
        }
        e => StoreError::InvalidArgument(format!("cannot merge server changeset: {e}")),
    }
}

/// The error for a server changeset whose bytes do not decode.
fn bad_changeset(version: u64, e: &crate::changeset::ChangesetError) -> StoreError {
    StoreError::InvalidArgument(format!(
        "server sent a bad changeset (server version {version}): {e}"
    ))
}

/// A transaction of `SyncSession::transact` waiting for the server's verdict
/// ([`Database::pending_transact`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTransact {
    /// Its local (client) version.
    pub version: u64,
    /// The server's reason, once it rejected the transaction (the rollback is still to do).
    pub rejected: Option<String>,
}

/// Records `version` as the transaction waiting for the server's verdict, in the caller's
/// SQLite transaction; [`StoreError::InvalidArgument`] if one already waits.
pub(crate) fn record_transact(conn: &Connection, version: u64) -> Result<(), StoreError> {
    let waiting: i64 = conn.query_row("SELECT COUNT(*) FROM _tandem_transact", [], |r| r.get(0))?;
    if waiting > 0 {
        return Err(StoreError::InvalidArgument(
            "a transaction is already waiting for the server's verdict".into(),
        ));
    }
    super::layout::allow_pending_transact(conn)?;
    conn.execute(
        "INSERT INTO _tandem_transact (version, rejected) VALUES (?1, NULL)",
        [version as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{DownloadCursors, Incoming};
    use crate::changeset::{Changeset, ChangesetMeta};
    use crate::model::PrimaryKey;
    use crate::store::{Config, Database, StoreError};

    use crate::store::test_support::{put_title as put, task_schema as schema};

    fn cursors(server: u64) -> DownloadCursors {
        DownloadCursors {
            download_server_version: server,
            download_client_version: 0,
            latest_server_version: server,
            latest_server_version_salt: 1,
            upload_client_version: 0,
        }
    }

    /// A `Task` file named `name` in `dir`.
    fn open_task_file(dir: &std::path::Path, name: &str) -> Database {
        Database::open(dir.join(name), &schema(), Config::default()).unwrap()
    }

    /// The changesets another file made, as a DOWNLOAD carries them: server versions 1 to n,
    /// made before the server had integrated anything of the receiving file.
    fn server_changesets(dir: &std::path::Path) -> Vec<Changeset> {
        let server = open_task_file(dir, "server.sqlite");
        for key in 0..40 {
            put(&server, key, &format!("server {key}"));
        }
        put(&server, 7, "server, later");
        let mut out = server.history().unwrap();
        as_download(&mut out, 1, |_| 0);
        out
    }

    /// `changesets` (another file's history) as a DOWNLOAD carries them: server versions from
    /// `first` on, the `i`-th made when the server had integrated this file's changesets
    /// through `seen(i)`.
    fn as_download(changesets: &mut [Changeset], first: u64, seen: impl Fn(usize) -> u64) {
        for (i, cs) in changesets.iter_mut().enumerate() {
            cs.meta = ChangesetMeta {
                version: first + i as u64,
                last_integrated_remote_version: seen(i),
                origin_timestamp: cs.meta.origin_timestamp,
                origin_file_ident: 9,
            };
        }
    }

    /// Upserts `Task[key].title = "server pair {key}"` for both keys in one transaction.
    fn put_pair(db: &Database, keys: [i64; 2]) {
        let mut w = db.begin_write().unwrap();
        for key in keys {
            let title = crate::model::Value::String(format!("server pair {key}"));
            w.upsert("Task", PrimaryKey::Int(key), &[("title", title)])
                .unwrap();
        }
        w.commit().unwrap();
    }

    /// `Task[key].title` as debug text, empty if there is no such object.
    fn title_of(db: &Database, key: i64) -> String {
        db.read()
            .unwrap()
            .object("Task", &PrimaryKey::Int(key))
            .unwrap()
            .map(|o| format!("{:?}", o.fields.get("title")))
            .unwrap_or_default()
    }

    fn encoded(changesets: &[Changeset]) -> Vec<Incoming> {
        changesets
            .iter()
            .map(|cs| Incoming::Encoded {
                meta: cs.meta,
                bytes: cs.encode(),
            })
            .collect()
    }

    /// A DOWNLOAD applied as it arrives (each changeset streamed into the store when no local
    /// change can meet it, decoded and merged when one can) leaves the file in the state the
    /// decoded path leaves it in, and a listener hears of what it changed.
    #[test]
    fn encoded_downloads_integrate_as_decoded_ones_do() {
        let dir = tempfile::TempDir::new().unwrap();
        let incoming = server_changesets(dir.path());
        let last = incoming.last().unwrap().meta.version;
        // Local changes the server has not seen: object 7 meets the server's, object 100 not.
        let open = |name: &str| {
            let db = open_task_file(dir.path(), name);
            put(&db, 100, "local only");
            put(&db, 7, "local");
            db
        };
        let decoded = open("decoded.sqlite");
        decoded
            .integrate_download(incoming.clone(), cursors(last))
            .unwrap();
        let streamed = open("streamed.sqlite");
        let (tx, rx) = std::sync::mpsc::channel();
        let _token = streamed
            .observe_query("Task", "_id >= 0", &[], move |c| {
                let _ = tx.send(c.clone());
            })
            .unwrap();
        streamed
            .integrate_download_encoded(encoded(&incoming), cursors(last))
            .unwrap();
        assert_eq!(
            streamed.export_state().unwrap(),
            decoded.export_state().unwrap()
        );
        let title = title_of;
        // The local write to object 7 is the later one and wins; the local-only object stays.
        assert!(
            title(&streamed, 7).contains("\"local\""),
            "{}",
            title(&streamed, 7)
        );
        assert!(
            title(&streamed, 100).contains("\"local only\""),
            "{}",
            title(&streamed, 100)
        );
        assert_eq!(title(&streamed, 39), title(&decoded, 39));
        // The results listener hears of the 39 objects the download created (40, less object
        // 7 which existed). Object 7 kept its local title (above): the server's merged writes
        // to it were reported as one modification on x86-64 and as none under qemu-aarch64.
        let change = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the results listener is told of the download");
        assert_eq!(change.insertions.len(), 39, "{change:?}");
        assert_eq!(change.keys.len(), 41, "{change:?}");
        assert!(change.modifications.len() <= 1, "{change:?}");

        // A fresh file with no local change takes the streamed path for every changeset.
        let fresh = open_task_file(dir.path(), "fresh.sqlite");
        fresh
            .integrate_download_encoded(encoded(&incoming), cursors(last))
            .unwrap();
        assert!(
            title(&fresh, 7).contains("\"server, later\""),
            "{}",
            title(&fresh, 7)
        );
        assert_eq!(
            fresh
                .read()
                .unwrap()
                .query("Task", "_id >= 0", &[])
                .unwrap()
                .len(),
            40
        );
    }

    /// A DOWNLOAD is merged in runs: consecutive entries with one `last_integrated_remote_version`
    /// in one merge (at most `Run::MAX_PENDING_INSTRUCTIONS` decoded at once, eight here), those
    /// no local change meets applied as they are decoded. It leaves the file as integrating
    /// each entry in a DOWNLOAD of its own does, and records the same forms: a later download
    /// merged against them ends alike too.
    #[test]
    fn a_download_merged_in_runs_ends_as_one_entry_at_a_time() {
        let dir = tempfile::TempDir::new().unwrap();
        let server = open_task_file(dir.path(), "server.sqlite");
        // Server writes before and after the local ones: each side wins some conflicts.
        for key in 0..12 {
            put(&server, key, &format!("server early {key}"));
        }
        let open = |name: &str| {
            let db = open_task_file(dir.path(), name);
            for key in (0..30).step_by(2) {
                put(&db, key, &format!("local {key}"));
            }
            db
        };
        let (whole, one_by_one) = (open("whole.sqlite"), open("one.sqlite"));
        for key in 12..40 {
            // One transaction writing an object the file may have written and one it did not,
            // then one writing the second alone (which meets no local change): applied out of
            // order, the second object would end with the first write.
            put_pair(&server, [key, 100 + key]);
            put(&server, 100 + key, &format!("server after {}", 100 + key));
        }
        let versions: Vec<u64> = whole
            .history()
            .unwrap()
            .iter()
            .map(|c| c.meta.version)
            .collect();
        assert!(versions.len() >= 15, "{versions:?}");
        let last_local = *versions.last().unwrap();
        // Runs of equal `last_integrated_remote_version`: the server had integrated none of
        // the file's changesets; then all of them (server writes with earlier clocks than
        // the file's, which must win all the same: the server made them after the file's);
        // then the file's third; then its sixth.
        let seen_for = |i: usize| match i {
            0..=6 => 0,
            7..=12 => last_local,
            13..=40 => versions[2],
            _ => versions[5],
        };
        // The schema's changeset, then 12 writes, then 28 pairs and their followers.
        let mut incoming = server.history().unwrap();
        assert_eq!(incoming.len(), 69);
        as_download(&mut incoming, 1, seen_for);
        let cursors_at = |server: u64, client: u64| DownloadCursors {
            download_server_version: server,
            download_client_version: client,
            latest_server_version: server,
            latest_server_version_salt: 1,
            upload_client_version: 0,
        };
        whole
            .integrate_download_encoded(encoded(&incoming), cursors_at(69, 0))
            .unwrap();
        for cs in &incoming {
            one_by_one
                .integrate_download_encoded(
                    encoded(std::slice::from_ref(cs)),
                    cursors_at(cs.meta.version, 0),
                )
                .unwrap();
        }
        let state = whole.export_state().unwrap();
        assert_eq!(state, one_by_one.export_state().unwrap());
        let title = |key: i64| title_of(&whole, key);
        // Concurrent writes: the later wins on either side. A server write made after the
        // server had the file's wins though its clock is earlier. Objects only one side wrote
        // keep its value, and each follower applies after its pair.
        assert!(title(4).contains("local 4"), "{}", title(4));
        assert!(title(6).contains("server early 6"), "{}", title(6));
        assert!(title(7).contains("server early 7"), "{}", title(7));
        assert!(title(14).contains("server pair 14"), "{}", title(14));
        assert!(title(13).contains("server pair 13"), "{}", title(13));
        assert!(title(28).contains("server pair 28"), "{}", title(28));
        for key in 112..140 {
            assert!(
                title(key).contains(&format!("server after {key}")),
                "{}",
                title(key)
            );
        }

        // A later download concurrent with every local changeset meets the recorded forms.
        for key in [0, 2, 4, 6] {
            put(&server, key, &format!("server last {key}"));
        }
        let mut later = server.history().unwrap().split_off(69);
        as_download(&mut later, 70, |_| 0);
        for db in [&whole, &one_by_one] {
            db.integrate_download_encoded(encoded(&later), cursors_at(73, 0))
                .unwrap();
        }
        assert_eq!(
            whole.export_state().unwrap(),
            one_by_one.export_state().unwrap()
        );
        assert!(title(2).contains("server last 2"), "{}", title(2));
    }

    /// An entry larger than `Run::JOIN_BYTES` that meets no local change is applied as it is
    /// decoded, after the merged entries waiting before it: here it writes an object one of
    /// them wrote too, so applied first it would lose to the earlier write.
    #[test]
    fn a_large_entry_behind_merged_ones_applies_after_them() {
        let dir = tempfile::TempDir::new().unwrap();
        let server = open_task_file(dir.path(), "server.sqlite");
        let db = open_task_file(dir.path(), "c.sqlite");
        put(&db, 1, "local 1");
        put_pair(&server, [1, 2]);
        let large = "x".repeat(100 << 10);
        put(&server, 2, &large);
        let mut incoming = server.history().unwrap();
        as_download(&mut incoming, 1, |_| 0);
        let entries = encoded(&incoming);
        assert!(
            matches!(&entries[2], Incoming::Encoded { bytes, .. } if bytes.len() > super::Run::JOIN_BYTES)
        );
        db.integrate_download_encoded(entries, cursors(3)).unwrap();
        let title = |key: i64| title_of(&db, key);
        assert!(
            title(2).contains(&large),
            "{}",
            title(2).chars().take(60).collect::<String>()
        );
        assert!(title(1).contains("server pair 1"), "{}", title(1));
    }

    /// Bytes that do not decode are refused with the server version named, and nothing of the
    /// download is applied: not the changesets before the bad one, not the cursors.
    #[test]
    fn a_bad_encoded_changeset_applies_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let incoming = server_changesets(dir.path());
        let db = open_task_file(dir.path(), "a.sqlite");
        let mut entries = encoded(&incoming[..3]);
        let mut truncated = incoming[3].encode();
        truncated.truncate(truncated.len() - 1);
        entries.push(Incoming::Encoded {
            meta: incoming[3].meta,
            bytes: truncated,
        });
        let before = db.export_state().unwrap();
        let err = db
            .integrate_download_encoded(entries, cursors(4))
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidArgument(m) if m.contains("bad changeset (server version 4)")),
            "{err}"
        );
        assert_eq!(db.export_state().unwrap(), before);
        assert_eq!(db.sync_progress().unwrap().download_server_version, 0);
    }

    /// A local changeset made before the file had its client file ident (stored with ident 0,
    /// then given the ident by `set_client_file_ident`) and transformed by one download keeps
    /// the file's own ident when its transformed form is read back for the next download, as
    /// the server knows it: a concurrent server changeset at the same millisecond is ordered
    /// against it by the real idents (100 here, newer than the other client's 9), so the local
    /// write stays, as it does on the server. Read back with ident 0 (the history rows left as
    /// they were), the form loses that tie on the client alone.
    #[test]
    fn a_transformed_form_read_back_keeps_the_files_own_ident() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = open_task_file(dir.path(), "client.sqlite");
        // Before the ident: both objects in one changeset, stored with ident 0.
        put_pair(&db, [1, 2]);
        let local = db.history().unwrap().pop().unwrap();
        assert_eq!(local.meta.origin_file_ident, 0);
        db.set_client_file_ident(100, 1).unwrap();

        let server = open_task_file(dir.path(), "server.sqlite");
        std::thread::sleep(std::time::Duration::from_millis(5));
        put(&server, 2, "server, newer");
        put(&server, 1, "server, same millisecond");
        let mut incoming = server.history().unwrap();
        as_download(&mut incoming, 1, |_| 0);
        let mut tie = incoming.pop().unwrap();
        let last = incoming.last().unwrap().meta.version;
        // Its schema, then its write of object 2, newer: the local form loses that
        // instruction, so a transformed form is recorded.
        db.integrate_download(incoming, cursors(last)).unwrap();
        assert!(title_of(&db, 2).contains("server, newer"));
        // Its write of object 1 has the local changeset's timestamp.
        tie.meta.origin_timestamp = local.meta.origin_timestamp;
        db.integrate_download(vec![tie], cursors(last + 1)).unwrap();
        assert!(
            title_of(&db, 1).contains("server pair 1"),
            "{}",
            title_of(&db, 1)
        );
    }
}
