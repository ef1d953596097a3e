//! A server file's side of the PostgreSQL mirror tables (`super::super::mirror`): the rows of
//! the objects each integration touches, staged into the PostgreSQL transaction of its history,
//! and the backend writes queued in the mirror tables, integrated as the server's changesets.

use std::collections::{BTreeSet, HashMap};

use super::{instruction_object, pg_err, state_err, ServerFile};
use crate::changeset::{Changeset, Instruction};
use crate::protocol::{ErrorCode, ProtocolError};
use crate::server::mirror::{self, QueueEntry, SqlWrite, Statement};
use crate::state::{Key, Object, Schemas};
use crate::store::tables;

/// What one [`ServerFile::mirror_integrate`] round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MirrorRound {
    /// Queued writes integrated into the history.
    pub integrated: usize,
    /// Queued writes refused (their `error` set) or that changed nothing.
    pub settled: usize,
    /// The queue may hold more: call again.
    pub more: bool,
}

/// Statements per round trip of [`ServerFile::mirror_backfill`].
pub const BACKFILL_BATCH: usize = 1_000;

const DELETE_QUEUED: &str = "DELETE FROM tandem_mirror_queue WHERE id = ANY($1::text::bigint[])";
const REFUSE_QUEUED: &str = "UPDATE tandem_mirror_queue SET error = $2 WHERE id = $1::text::bigint";

fn id_array(ids: impl Iterator<Item = i64>) -> String {
    format!(
        "{{{}}}",
        ids.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    )
}

impl ServerFile {
    /// Stages, into the PostgreSQL transaction that will hold `appended` (already applied to
    /// the state), the mirror rows of every object they touch: rewritten from the state, or
    /// deleted, after the statements [`ServerFile::mirror_write`] left for this integration (the
    /// queue entries it integrates). Creates mirror tables and columns first where the schema
    /// grew. Called right before the history's SQLite transaction, whose commit pushes them.
    pub(super) fn stage_mirror(&mut self, appended: &[Changeset]) -> Result<(), ProtocolError> {
        let extra = std::mem::take(&mut self.mirror_extra);
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let schemas = self.state.schemas();
        let mut classes = BTreeSet::new();
        let mut objects = BTreeSet::new();
        let mut erased = Vec::new();
        for cs in appended {
            for i in &cs.instructions {
                let name = |t| cs.string(t).map(str::to_owned);
                match i {
                    Instruction::AddTable(t) => classes.extend(name(t.table)),
                    Instruction::AddColumn(c) => classes.extend(name(c.table)),
                    Instruction::EraseTable { table } => erased.extend(name(*table)),
                    _ => {
                        if let Some((class, key)) = instruction_object(cs, i) {
                            classes.insert(class.clone());
                            objects.insert((class, key));
                        }
                    }
                }
            }
        }
        let pg = replica.postgres();
        pg.ensure_mirror(schemas, &classes).map_err(pg_err)?;
        let mut statements: Vec<Statement> = extra;
        for class in erased {
            if !pg.mirror_table(&class).columns.is_empty() {
                statements.push(mirror::erase_class_statement(replica.name(), &class));
            }
        }
        let mut columns = std::collections::HashMap::new();
        for (class, key) in objects {
            let existing = columns
                .entry(class.clone())
                .or_insert_with(|| pg.mirror_table(&class));
            let object = self.state_object(schemas, &class, &key)?;
            if let Some(s) = mirror::object_statement(
                schemas,
                replica.name(),
                &class,
                &key,
                object.as_ref(),
                existing,
            ) {
                statements.push(s);
            }
        }
        replica.stage(statements);
        Ok(())
    }

    /// Writes the mirror rows of every object of this file, once per database: for a file whose
    /// objects were integrated before it had mirror tables (an older tandem-server), or whose
    /// rows a backend removed with the trigger disabled (`DELETE FROM tandem_mirror_filled`
    /// asks for it again). Recorded in `tandem_mirror_filled` in the held transaction, with the
    /// rows, in batches of [`BACKFILL_BATCH`] statements. Needs the file's lock; checked once
    /// per process (the [`Replica`](crate::server::postgres::Replica) remembers it).
    pub(crate) fn mirror_backfill(&mut self) -> Result<(), ProtocolError> {
        let Some(replica) = self.replica.clone() else {
            return Ok(());
        };
        if replica.mirror_filled() {
            return Ok(());
        }
        if replica.mirror_filled_in_database().map_err(pg_err)? {
            replica.set_mirror_filled();
            return Ok(());
        }
        self.catch_up_state()?;
        let schemas = self.state.schemas().clone();
        let classes: BTreeSet<String> = schemas
            .iter()
            .filter(|(_, s)| mirror::mirrored(s).is_some())
            .map(|(c, _)| c.clone())
            .collect();
        let pg = replica.postgres();
        pg.ensure_mirror(&schemas, &classes).map_err(pg_err)?;
        let tables: HashMap<String, mirror::TableInfo> = classes
            .iter()
            .map(|c| (c.clone(), pg.mirror_table(c)))
            .collect();
        let path = replica.name().to_owned();
        // The backfill's row writes are the server's: the trigger must not queue them (the
        // setting lasts for the held transaction).
        replica
            .execute_held(vec![(mirror::AS_SERVER.to_owned(), Vec::new())])
            .map_err(pg_err)?;
        let mut batch: Vec<Statement> = Vec::new();
        let mut failed = Ok(());
        let mut rows = 0u64;
        tables::for_each_object(
            self.state.connection(),
            &schemas,
            &mut |class, key, object| {
                let Some(info) = tables.get(class) else {
                    return;
                };
                if failed.is_err() {
                    return;
                }
                if let Some(s) =
                    mirror::object_statement(&schemas, &path, class, &key, Some(&object), info)
                {
                    batch.push(s);
                    rows += 1;
                }
                if batch.len() >= BACKFILL_BATCH {
                    failed = replica.execute_held(std::mem::take(&mut batch));
                }
            },
        )
        .map_err(|e| state_err(e.into()))?;
        failed.map_err(pg_err)?;
        batch.push((
            "INSERT INTO tandem_mirror_filled (file_id) SELECT id FROM tandem_file WHERE path = $1 \
             ON CONFLICT DO NOTHING"
                .to_owned(),
            vec![Some(path.clone())],
        ));
        replica.execute_held(batch).map_err(pg_err)?;
        replica.set_mirror_filled();
        if rows > 0 {
            tracing::info!(server_path = %path, rows, "mirror tables filled from the server state");
        }
        Ok(())
    }

    /// Integrates the backend writes queued in the mirror tables for this file (at most
    /// [`mirror::QUEUE_BATCH`]), oldest first, as one changeset made by the server at the
    /// current time; the queue entries are deleted in the transaction that commits it. A write
    /// that cannot be synced gets its reason in the queue's `error` column and is skipped; if
    /// the batch's changeset is refused, each write is tried alone. Needs the file's lock
    /// (`session::lock`). Errors: storage (201).
    pub fn mirror_integrate(&mut self) -> Result<MirrorRound, ProtocolError> {
        let Some(replica) = self.replica.clone() else {
            return Ok(MirrorRound::default());
        };
        self.ready_to_write("mirror_integrate")?;
        self.catch_up_state()?;
        let entries = replica.mirror_queue(mirror::QUEUE_BATCH).map_err(pg_err)?;
        let mut round = MirrorRound {
            more: entries.len() as i64 == mirror::QUEUE_BATCH,
            ..MirrorRound::default()
        };
        if entries.is_empty() {
            return Ok(round);
        }
        let schemas = self.state.schemas().clone();
        let mut writes: Vec<(i64, SqlWrite)> = Vec::new();
        let mut noop = Vec::new();
        let mut refused: Vec<(i64, String)> = Vec::new();
        // Whether each object written by this batch exists after the writes before it.
        let mut batch: HashMap<(String, Key), bool> = HashMap::new();
        for e in &entries {
            match self.mirror_decode(&schemas, e, &mut batch) {
                Ok(Some(w)) => writes.push((e.id, w)),
                Ok(None) => noop.push(e.id),
                Err(why) => refused.push((e.id, why)),
            }
        }
        let mut settle: Vec<Statement> = refused
            .iter()
            .map(|(id, why)| {
                (
                    REFUSE_QUEUED.to_owned(),
                    vec![Some(id.to_string()), Some(why.clone())],
                )
            })
            .collect();
        if !noop.is_empty() {
            settle.push((
                DELETE_QUEUED.to_owned(),
                vec![Some(id_array(noop.iter().copied()))],
            ));
        }
        for (id, why) in &refused {
            tracing::warn!(server_path = replica.name(), queue_id = id, %why, "a write to a mirror table cannot be synced");
        }
        round.settled = settle.len();
        if !settle.is_empty() {
            replica.execute_held(settle).map_err(pg_err)?;
        }
        if writes.is_empty() {
            return Ok(round);
        }
        match self.mirror_write(&schemas, &writes) {
            Ok(()) => round.integrated = writes.len(),
            Err(e) if refusal(&e) => {
                for w in &writes {
                    match self.mirror_write(&schemas, std::slice::from_ref(w)) {
                        Ok(()) => round.integrated += 1,
                        Err(e) if refusal(&e) => {
                            tracing::warn!(server_path = replica.name(), queue_id = w.0, error = %e.message, "a write to a mirror table was refused");
                            replica
                                .execute_held(vec![(
                                    REFUSE_QUEUED.to_owned(),
                                    vec![Some(w.0.to_string()), Some(e.message.clone())],
                                )])
                                .map_err(pg_err)?;
                            round.settled += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        Ok(round)
    }

    /// [`mirror::decode_entry`], and Realm's rules against the state as the batch's earlier
    /// writes leave it (`batch`: per object they wrote, whether it then exists): an update of
    /// an object that does not exist (devices deleted it: deletes win) is refused; a deletion of
    /// one that does not exist changes nothing.
    fn mirror_decode(
        &self,
        schemas: &Schemas,
        e: &QueueEntry,
        batch: &mut HashMap<(String, Key), bool>,
    ) -> Result<Option<SqlWrite>, String> {
        let write = mirror::decode_entry(schemas, e)?;
        let exists = |class: &str, key: &Key| match batch.get(&(class.to_owned(), key.clone())) {
            Some(known) => Ok(*known),
            None => self
                .state_object(schemas, class, key)
                .map(|o| o.is_some())
                .map_err(|e| e.message),
        };
        let verdict = match &write {
            Some(SqlWrite::Put {
                class,
                key,
                create: false,
                ..
            }) if !exists(class, key)? => Err(
                "the object was deleted before this update reached the server (deletes win)"
                    .to_owned(),
            ),
            Some(SqlWrite::Erase { class, key }) if !exists(class, key)? => Ok(None),
            _ => Ok(write),
        };
        match &verdict {
            Ok(Some(SqlWrite::Put { class, key, .. })) => {
                batch.insert((class.clone(), key.clone()), true);
            }
            Ok(Some(SqlWrite::Erase { class, key })) => {
                batch.insert((class.clone(), key.clone()), false);
            }
            _ => {}
        }
        verdict
    }

    /// Integrates `writes` as one changeset of the server, the queue entries' deletion staged
    /// into its transaction.
    fn mirror_write(
        &mut self,
        schemas: &Schemas,
        writes: &[(i64, SqlWrite)],
    ) -> Result<(), ProtocolError> {
        let Some(replica) = self.replica.clone() else {
            return Ok(());
        };
        let list: Vec<(&str, &Key, Option<&Object>, bool)> = writes
            .iter()
            .map(|(_, w)| match w {
                SqlWrite::Put {
                    class,
                    key,
                    fields,
                    create,
                } => (class.as_str(), key, Some(fields), *create),
                SqlWrite::Erase { class, key } => (class.as_str(), key, None, false),
            })
            .collect();
        let cs = crate::state::given_fields(schemas, &list);
        // Staged by stage_mirror right before the history's transaction (not now: the server
        // writer's bookkeeping commits first, and the deletion must go with the changeset).
        self.mirror_extra = vec![(
            DELETE_QUEUED.to_owned(),
            vec![Some(id_array(writes.iter().map(|(id, _)| *id)))],
        )];
        let r = self.integrate_server_changeset(&cs, super::flx::now_timestamp());
        self.mirror_extra.clear();
        if r.is_err() {
            replica.unstage();
        }
        r.map(|_| ())
    }
}

/// Whether an integration error refuses the changeset (rather than failing storage).
fn refusal(e: &ProtocolError) -> bool {
    matches!(
        e.code,
        ErrorCode::BadChangeset | ErrorCode::InvalidSchemaChange | ErrorCode::LimitsExceeded
    )
}
