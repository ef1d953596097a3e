//! `Database`, `WriteTransaction`, `Results` and listener handles for foreign code.
//!
//! A foreign `WriteTransaction` records its operations and performs them all in one store
//! write transaction at `commit()`: the store's transaction borrows the database, which a
//! foreign object cannot, and recording keeps the writer lock held only for the commit itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::foreign::Foreign;
use super::ops::{self, PathStep, WriteOp};
use super::types::{
    core_key, core_value, ffi_key, field_value_owned, fields, schema, CallbackError, ClassSpec,
    FieldValue, Key, ObjectChange, ObjectEntry, ObjectRow, ResultsChange, TandemError, Value,
};
use crate::store;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Told when an observed object changes. Runs on the database's notifier thread; it may read
/// and write the database.
#[uniffi::export(foreign)]
pub trait ObjectListener: Send + Sync {
    /// The object changed (or was deleted).
    fn on_change(&self, change: ObjectChange) -> Result<(), CallbackError>;
}

/// Told when observed query results change. Runs on the database's notifier thread; it may
/// read and write the database.
#[uniffi::export(foreign)]
pub trait ResultsListener: Send + Sync {
    /// The results changed.
    fn on_change(&self, change: ResultsChange) -> Result<(), CallbackError>;
}

/// Keeps a listener registered. `cancel()` (or dropping the handle) stops delivery.
#[derive(uniffi::Object)]
pub struct ListenerHandle {
    token: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl ListenerHandle {
    pub(crate) fn new(token: impl std::any::Any + Send) -> Arc<Self> {
        Arc::new(ListenerHandle {
            token: Mutex::new(Some(Box::new(token))),
        })
    }
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops delivery to the listener.
    pub fn cancel(&self) {
        lock(&self.token).take();
    }
}

/// Logs a listener's error. `None`: the listener was not called ([`super::close_callbacks`]).
pub(crate) fn report(what: &str, result: Option<Result<(), CallbackError>>) {
    if let Some(Err(e)) = result {
        crate::warn_or_stderr!("{what} threw: {e}; the other listeners still run");
    }
}

/// How hard a commit works to survive failures (`tandem::store::Durability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Durability {
    /// SQLite `synchronous=NORMAL` in WAL mode: a commit survives any crash of the app; the
    /// last commits can be lost if the machine loses power.
    Normal,
    /// `synchronous=FULL`: every commit is on stable storage before it returns (an fsync per
    /// commit).
    Full,
}

/// Options for opening a database (`tandem::store::Config`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct OpenOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Milliseconds a write transaction waits for another one to finish before failing with
    /// `Timeout`.
    #[uniffi(default = 10000)]
    pub writer_timeout_ms: u64,
    /// How many local changesets the history keeps after the server integrated them, so a
    /// client reset in Recover mode can re-apply what a server restored from a backup lost
    /// (0 keeps only what sync needs).
    #[uniffi(default = 1000)]
    pub recovery_window: u64,
    /// Whether the file is this process's alone while it is open (`tandem::store::Config::
    /// exclusive_to_process`): transactions take no file locks, so lookups and commits are
    /// faster, and any other process reading or writing the file meanwhile fails once its busy
    /// timeout passes (another Tandem with `Timeout`, other SQLite clients with "database is
    /// locked"). No effect on Windows.
    #[uniffi(default = false)]
    pub exclusive_to_process: bool,
}

impl From<OpenOptions> for store::Config {
    fn from(o: OpenOptions) -> Self {
        store::Config {
            durability: match o.durability {
                Durability::Normal => store::Durability::Normal,
                Durability::Full => store::Durability::Full,
            },
            writer_timeout: std::time::Duration::from_millis(o.writer_timeout_ms),
            recovery_window: o.recovery_window,
            exclusive_to_process: o.exclusive_to_process,
            ..store::Config::default()
        }
    }
}

/// The part of a local changeset a client reset could not recover (`Database.quarantine()`).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct QuarantinedChangeset {
    /// Its id, for `clear_quarantine`.
    pub id: u64,
    /// The local version the changeset had before the reset.
    pub original_version: u64,
    /// A one-line summary: how many instructions were not recovered and the first reason.
    pub reason: String,
    /// Each instruction not recovered, in the original order.
    pub instructions: Vec<QuarantinedInstruction>,
}

/// One instruction a client reset could not recover.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct QuarantinedInstruction {
    /// Its index in the original local changeset (from 0).
    pub index: u64,
    /// The instruction, rendered, e.g. `Update Task[1].title = "edited offline"`.
    pub instruction: String,
    /// Why the recovery rules could not recover it.
    pub reason: String,
}

/// A local database file.
#[derive(uniffi::Object)]
pub struct Database {
    pub(crate) inner: Arc<store::Database>,
}

impl Database {
    /// What `open` and `open_with_options` share.
    fn open_config(
        path: String,
        classes: Vec<ClassSpec>,
        config: store::Config,
    ) -> Result<Arc<Self>, TandemError> {
        let schema = schema(classes)?;
        let inner = store::Database::open(path, &schema, config)?;
        Ok(Arc::new(Database {
            inner: Arc::new(inner),
        }))
    }
}

#[uniffi::export]
impl Database {
    /// Opens (or creates) the database at `path` with these classes.
    #[uniffi::constructor]
    pub fn open(path: String, classes: Vec<ClassSpec>) -> Result<Arc<Self>, TandemError> {
        Self::open_config(path, classes, store::Config::default())
    }

    /// Opens (or creates) the database at `path` with these classes and options (durability,
    /// writer timeout, recovery window).
    #[uniffi::constructor]
    pub fn open_with_options(
        path: String,
        classes: Vec<ClassSpec>,
        options: OpenOptions,
    ) -> Result<Arc<Self>, TandemError> {
        Self::open_config(path, classes, options.into())
    }

    /// What client resets could not recover, oldest first (see `ClientResetMode.Recover`).
    pub fn quarantine(&self) -> Result<Vec<QuarantinedChangeset>, TandemError> {
        Ok(self
            .inner
            .quarantine()?
            .into_iter()
            .map(|q| QuarantinedChangeset {
                id: q.id,
                original_version: q.original_version,
                reason: q.reason,
                instructions: q
                    .instructions
                    .into_iter()
                    .map(|i| QuarantinedInstruction {
                        index: i.index as u64,
                        instruction: i.instruction,
                        reason: i.reason,
                    })
                    .collect(),
            })
            .collect())
    }

    /// Removes quarantine records: the one with `id`, or all of them for `None`.
    pub fn clear_quarantine(&self, id: Option<u64>) -> Result<(), TandemError> {
        Ok(self.inner.clear_quarantine(id)?)
    }

    /// Starts recording a write transaction; nothing happens until `commit()` (Python:
    /// `with db.write() as tx:`).
    pub fn write_transaction(&self) -> Arc<WriteTransaction> {
        Arc::new(WriteTransaction {
            db: Arc::clone(&self.inner),
            ops: Mutex::new(Some(Vec::new())),
        })
    }

    /// Performs `ops` in order in one write transaction and commits it, in one crossing: all
    /// or nothing. Returns the new local version, or `None` if nothing changed. An error names
    /// the failing operation (`operation 3: ...`) and keeps its kind; nothing is written then.
    /// The batch path for typed layers: build the list, cross once.
    pub fn write(&self, ops: Vec<WriteOp>) -> Result<Option<u64>, TandemError> {
        ops::write(&self.inner, ops)
    }

    /// The object of `class_name` with `key`, property by property, if it exists.
    pub fn object(
        &self,
        class_name: String,
        key: Key,
    ) -> Result<Option<HashMap<String, FieldValue>>, TandemError> {
        let key = core_key(&key)?;
        let object = self.inner.read()?.object(&class_name, &key)?;
        Ok(object.as_ref().map(fields))
    }

    /// The objects of `class_name` matching `filter` (Realm's query language, e.g.
    /// `"done == false SORT(title ASC)"`; `$0`, `$1`... are `args`).
    pub fn query(
        &self,
        class_name: String,
        filter: String,
        args: Vec<Value>,
    ) -> Result<Arc<Results>, TandemError> {
        let results = self.results_unchecked(class_name, filter, &args)?;
        // Compile now (without running it), so a bad query fails here and not in a listener.
        results.check()?;
        Ok(Arc::new(results))
    }

    /// Calls `listener` whenever the object changes, including through its links up to four
    /// levels deep (the link property is named). `key_paths` (e.g. `["dog.name"]`, `*` for
    /// every property of a level) narrows that to the paths named, at any depth; empty means
    /// no filter. An unknown property in a path is `InvalidArgument`.
    #[uniffi::method(default(key_paths = []))]
    pub fn observe_object(
        &self,
        class_name: String,
        key: Key,
        listener: Arc<dyn ObjectListener>,
        key_paths: Vec<String>,
    ) -> Result<Arc<ListenerHandle>, TandemError> {
        let key = core_key(&key)?;
        let key_paths: Vec<&str> = key_paths.iter().map(String::as_str).collect();
        let listener = Foreign::new(listener);
        let token =
            self.inner
                .observe_object_key_paths(&class_name, &key, &key_paths, move |change| {
                    let change = match change {
                        store::ObjectChange::Deleted => ObjectChange::Deleted,
                        store::ObjectChange::Modified { properties } => {
                            ObjectChange::Modified { properties }
                        }
                    };
                    report("an object listener", listener.call(|l| l.on_change(change)));
                })?;
        Ok(ListenerHandle::new(token))
    }
}

impl Database {
    /// The results of `filter` on `class_name` with `args`, not compiled yet: each read
    /// compiles the query and reports its errors. Errors: `InvalidArgument` for an argument
    /// that is not a valid value (e.g. a decimal out of range).
    pub(super) fn results_unchecked(
        &self,
        class_name: String,
        filter: String,
        args: &[Value],
    ) -> Result<Results, TandemError> {
        let args = args.iter().map(core_value).collect::<Result<Vec<_>, _>>()?;
        Ok(Results {
            db: Arc::clone(&self.inner),
            class_name,
            filter,
            args,
        })
    }
}

impl Results {
    /// Compiles the query without running it: `Ok` if it would run. Errors: those
    /// `Database.query` gives for the query itself (`ReadTransaction::check_query`).
    pub(super) fn check(&self) -> Result<(), TandemError> {
        Ok(self
            .db
            .read()?
            .check_query(&self.class_name, &self.filter, &self.args)?)
    }

    /// [`Results::rows`] from position `offset` (0-based), at most `limit` of them (`None`:
    /// all): an `offset` past the end gives none.
    pub(super) fn rows_range(
        &self,
        properties: &[String],
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<ObjectRow>, TandemError> {
        let names: Vec<&str> = properties.iter().map(String::as_str).collect();
        let mut rows = Vec::new();
        self.db.read()?.for_each_row(
            &self.class_name,
            &self.filter,
            &self.args,
            &names,
            offset,
            limit,
            |key, fields| {
                rows.push(ObjectRow {
                    key: ffi_key(&key),
                    values: fields.map(field_value_owned).collect(),
                })
            },
        )?;
        Ok(rows)
    }
}

/// A live query: re-run on demand, observable.
#[derive(uniffi::Object)]
pub struct Results {
    db: Arc<store::Database>,
    class_name: String,
    filter: String,
    args: Vec<crate::model::Value>,
}

#[uniffi::export]
impl Results {
    /// The matching objects' keys, in order.
    pub fn keys(&self) -> Result<Vec<Key>, TandemError> {
        let keys = self
            .db
            .read()?
            .query(&self.class_name, &self.filter, &self.args)?;
        Ok(keys.iter().map(ffi_key).collect())
    }

    /// How many objects match (counted by SQLite; no key crosses).
    pub fn count(&self) -> Result<u64, TandemError> {
        Ok(self
            .db
            .read()?
            .count(&self.class_name, &self.filter, &self.args)?)
    }

    /// The matching objects, in order.
    pub fn objects(&self) -> Result<Vec<HashMap<String, FieldValue>>, TandemError> {
        Ok(self.entries()?.into_iter().map(|e| e.fields).collect())
    }

    /// The matching objects with their primary keys, in order, read in one read transaction and
    /// one crossing (`objects()` plus `keys()` could disagree if a write lands in between).
    pub fn entries(&self) -> Result<Vec<ObjectEntry>, TandemError> {
        let read = self.db.read()?;
        let found = read.query_objects(&self.class_name, &self.filter, &self.args, 0, None)?;
        Ok(found
            .iter()
            .map(|(key, object)| ObjectEntry {
                key: ffi_key(key),
                fields: fields(object),
            })
            .collect())
    }

    /// The matching objects by position, in order, read in one read transaction and one
    /// crossing: for each, its primary key and the values of `properties` in the order given
    /// (no property names per object, no map: what a typed layer decoding by position wants).
    /// `properties` may name the primary key property and may repeat or leave out properties.
    /// Errors: `InvalidArgument` naming a property the class does not have.
    pub fn rows(&self, properties: Vec<String>) -> Result<Vec<ObjectRow>, TandemError> {
        self.rows_range(&properties, 0, None)
    }

    /// Calls `listener` whenever the results change (deletions, insertions, modifications as
    /// indices, Realm style). An object counts as modified when it or an object reached through
    /// its links (up to four levels deep) changed; `key_paths` (see
    /// `Database.observe_object`) narrows modifications to the paths named. Insertions and
    /// deletions are always reported.
    #[uniffi::method(default(key_paths = []))]
    pub fn observe(
        &self,
        listener: Arc<dyn ResultsListener>,
        key_paths: Vec<String>,
    ) -> Result<Arc<ListenerHandle>, TandemError> {
        Ok(self.observe_with_initial(listener, key_paths)?.handle)
    }

    /// `observe`, also returning the results the listener starts from (Realm's initial
    /// notification): `initial` has every index of them as an insertion and their keys, and
    /// the listener's first change is relative to exactly those results, however many commits
    /// land meanwhile. Reading the results before or after `observe` instead can miss or
    /// double a concurrent commit. The listener may be called (on the notifier thread) before
    /// this returns: a binding that hands `initial` to the same consumer delivers it first.
    /// Errors: `InvalidArgument` for a key path that does not exist (the query itself compiled
    /// when these results were made).
    #[uniffi::method(default(key_paths = []))]
    pub fn observe_with_initial(
        &self,
        listener: Arc<dyn ResultsListener>,
        key_paths: Vec<String>,
    ) -> Result<ResultsObservation, TandemError> {
        let key_paths: Vec<&str> = key_paths.iter().map(String::as_str).collect();
        let listener = Foreign::new(listener);
        let (token, start) = self.db.observe_query_with_initial(
            &self.class_name,
            &self.filter,
            &self.args,
            &key_paths,
            move |change| {
                let as_u64 = |v: &Vec<usize>| v.iter().map(|i| *i as u64).collect();
                let change = ResultsChange {
                    deletions: as_u64(&change.deletions),
                    insertions: as_u64(&change.insertions),
                    modifications: as_u64(&change.modifications_new),
                    keys: change.keys.iter().map(ffi_key).collect(),
                };
                report("a results listener", listener.call(|l| l.on_change(change)));
            },
        )?;
        let initial = ResultsChange {
            deletions: Vec::new(),
            insertions: (0..start.len() as u64).collect(),
            modifications: Vec::new(),
            keys: start.iter().map(ffi_key).collect(),
        };
        Ok(ResultsObservation {
            handle: ListenerHandle::new(token),
            initial,
        })
    }
}

/// What `Results.observe_with_initial` returns.
#[derive(uniffi::Record)]
pub struct ResultsObservation {
    /// Cancels the listener (`cancel()`).
    pub handle: Arc<ListenerHandle>,
    /// The results the listener starts from, as a change from no results: `insertions` is
    /// `0..keys.len()`, `deletions` and `modifications` are empty, `keys` are the primary keys
    /// in the query's order.
    pub initial: ResultsChange,
}

/// A write transaction being recorded: each method records one [`WriteOp`] (nothing crosses
/// back until `commit()`). `commit()` performs every operation in one atomic store transaction
/// (all or nothing) and returns its version; `rollback()` discards it. Values are checked at
/// `commit()`: a wrong type, a missing object or a malformed key fails the commit, naming the
/// operation (`operation 2: ...`), and nothing is written. `Database.write(ops)` does the same
/// with a list made by the caller, in one crossing.
#[derive(uniffi::Object)]
pub struct WriteTransaction {
    db: Arc<store::Database>,
    ops: Mutex<Option<Vec<WriteOp>>>,
}

fn finished() -> TandemError {
    TandemError::InvalidArgument {
        message: "this transaction was already committed or rolled back".into(),
    }
}

#[uniffi::export]
impl WriteTransaction {
    /// Records any operation (the methods below are shorthands for the common ones).
    pub fn record(&self, op: WriteOp) -> Result<(), TandemError> {
        lock(&self.ops).as_mut().ok_or_else(finished)?.push(op);
        Ok(())
    }

    /// Records several operations at once (one crossing).
    pub fn record_all(&self, ops: Vec<WriteOp>) -> Result<(), TandemError> {
        lock(&self.ops).as_mut().ok_or_else(finished)?.extend(ops);
        Ok(())
    }

    /// Creates an object (an error at commit if it exists).
    pub fn create(
        &self,
        class_name: String,
        key: Key,
        values: HashMap<String, Value>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::Create {
            class_name,
            key,
            values,
        })
    }

    /// Creates an object or writes these values to the existing one.
    pub fn upsert(
        &self,
        class_name: String,
        key: Key,
        values: HashMap<String, Value>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::Upsert {
            class_name,
            key,
            values,
        })
    }

    /// Writes one property; with a `path`, a field of an embedded object (see [`WriteOp`]).
    #[uniffi::method(default(path = []))]
    pub fn set(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::Set {
            class_name,
            key,
            property,
            value,
            path,
        })
    }

    /// Deletes an object.
    pub fn erase(&self, class_name: String, key: Key) -> Result<(), TandemError> {
        self.record(WriteOp::Erase { class_name, key })
    }

    /// Adds to an integer property (a counter: concurrent adds from several devices sum up).
    #[uniffi::method(default(path = []))]
    pub fn add(
        &self,
        class_name: String,
        key: Key,
        property: String,
        amount: i64,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::Add {
            class_name,
            key,
            property,
            amount,
            path,
        })
    }

    /// Creates the embedded object of `property` (or at `path` below it) if there is none.
    #[uniffi::method(default(path = []))]
    pub fn create_embedded(
        &self,
        class_name: String,
        key: Key,
        property: String,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::CreateEmbedded {
            class_name,
            key,
            property,
            path,
        })
    }

    /// Inserts into a list property at `index`.
    #[uniffi::method(default(path = []))]
    pub fn list_insert(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListInsert {
            class_name,
            key,
            property,
            index: index.into(),
            value,
            path,
        })
    }

    /// Inserts a new, empty embedded object into a list of embedded objects at `index`.
    #[uniffi::method(default(path = []))]
    pub fn list_insert_embedded(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListInsertEmbedded {
            class_name,
            key,
            property,
            index: index.into(),
            path,
        })
    }

    /// Replaces the element at `index` of a list property.
    #[uniffi::method(default(path = []))]
    pub fn list_set(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListSet {
            class_name,
            key,
            property,
            index: index.into(),
            value,
            path,
        })
    }

    /// Moves the element at `from` of a list property so that it ends up at `to`.
    #[uniffi::method(default(path = []))]
    pub fn list_move(
        &self,
        class_name: String,
        key: Key,
        property: String,
        from: u32,
        to: u32,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListMove {
            class_name,
            key,
            property,
            from: from.into(),
            to: to.into(),
            path,
        })
    }

    /// Removes the element at `index` of a list property.
    #[uniffi::method(default(path = []))]
    pub fn list_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListErase {
            class_name,
            key,
            property,
            index: index.into(),
            path,
        })
    }

    /// Empties a list property.
    #[uniffi::method(default(path = []))]
    pub fn list_clear(
        &self,
        class_name: String,
        key: Key,
        property: String,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::ListClear {
            class_name,
            key,
            property,
            path,
        })
    }

    /// Adds a value to a set property.
    #[uniffi::method(default(path = []))]
    pub fn set_insert(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::SetInsert {
            class_name,
            key,
            property,
            value,
            path,
        })
    }

    /// Removes a value from a set property.
    #[uniffi::method(default(path = []))]
    pub fn set_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::SetErase {
            class_name,
            key,
            property,
            value,
            path,
        })
    }

    /// Empties a set property.
    #[uniffi::method(default(path = []))]
    pub fn set_clear(
        &self,
        class_name: String,
        key: Key,
        property: String,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::SetClear {
            class_name,
            key,
            property,
            path,
        })
    }

    /// Writes one entry of a dictionary property.
    #[uniffi::method(default(path = []))]
    pub fn dict_set(
        &self,
        class_name: String,
        key: Key,
        property: String,
        entry: String,
        value: Value,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::DictSet {
            class_name,
            key,
            property,
            entry,
            value,
            path,
        })
    }

    /// Removes one entry of a dictionary property.
    #[uniffi::method(default(path = []))]
    pub fn dict_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        entry: String,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::DictErase {
            class_name,
            key,
            property,
            entry,
            path,
        })
    }

    /// Empties a dictionary property.
    #[uniffi::method(default(path = []))]
    pub fn dict_clear(
        &self,
        class_name: String,
        key: Key,
        property: String,
        path: Vec<PathStep>,
    ) -> Result<(), TandemError> {
        self.record(WriteOp::DictClear {
            class_name,
            key,
            property,
            path,
        })
    }

    /// Performs every recorded operation in one transaction. Returns the new local version,
    /// or `None` if nothing changed. On an error nothing is written.
    pub fn commit(&self) -> Result<Option<u64>, TandemError> {
        let ops = lock(&self.ops).take().ok_or_else(finished)?;
        ops::write(&self.db, ops)
    }

    /// Discards the recorded operations.
    pub fn rollback(&self) {
        lock(&self.ops).take();
    }
}
