//! `Database`, `WriteTransaction`, `Results` and listener handles for foreign code.
//!
//! A foreign `WriteTransaction` records its operations and performs them all in one store
//! write transaction at `commit()`: the store's transaction borrows the database, which a
//! foreign object cannot, and recording keeps the writer lock held only for the commit itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::types::{
    core_key, core_value, ffi_key, fields, schema, CallbackError, ClassSpec, FieldValue, Key,
    ObjectChange, ResultsChange, TandemError, Value,
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

pub(crate) fn report(what: &str, result: Result<(), CallbackError>) {
    if let Err(e) = result {
        eprintln!("tandem: a {what} threw: {e}; the other listeners still run");
    }
}

/// A local database file.
#[derive(uniffi::Object)]
pub struct Database {
    pub(crate) inner: Arc<store::Database>,
}

#[uniffi::export]
impl Database {
    /// Opens (or creates) the database at `path` with these classes.
    #[uniffi::constructor]
    pub fn open(path: String, classes: Vec<ClassSpec>) -> Result<Arc<Self>, TandemError> {
        let schema = schema(classes)?;
        let inner = store::Database::open(path, &schema, store::Config::default())?;
        Ok(Arc::new(Database {
            inner: Arc::new(inner),
        }))
    }

    /// Starts recording a write transaction; nothing happens until `commit()` (Python:
    /// `with db.write() as tx:`).
    pub fn write_transaction(&self) -> Arc<WriteTransaction> {
        Arc::new(WriteTransaction {
            db: Arc::clone(&self.inner),
            ops: Mutex::new(Some(Vec::new())),
        })
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
        let args = args.iter().map(core_value).collect::<Result<Vec<_>, _>>()?;
        // Compile now, so a bad query fails here and not in a listener.
        self.inner.read()?.query(&class_name, &filter, &args)?;
        Ok(Arc::new(Results {
            db: Arc::clone(&self.inner),
            class_name,
            filter,
            args,
        }))
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
        let token =
            self.inner
                .observe_object_key_paths(&class_name, &key, &key_paths, move |change| {
                    let change = match change {
                        store::ObjectChange::Deleted => ObjectChange::Deleted,
                        store::ObjectChange::Modified { properties } => {
                            ObjectChange::Modified { properties }
                        }
                    };
                    report("object listener", listener.on_change(change));
                })?;
        Ok(ListenerHandle::new(token))
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

    /// How many objects match.
    pub fn count(&self) -> Result<u64, TandemError> {
        Ok(self.keys()?.len() as u64)
    }

    /// The matching objects, in order.
    pub fn objects(&self) -> Result<Vec<HashMap<String, FieldValue>>, TandemError> {
        let read = self.db.read()?;
        let keys = read.query(&self.class_name, &self.filter, &self.args)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(object) = read.object(&self.class_name, &key)? {
                out.push(fields(&object));
            }
        }
        Ok(out)
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
        let key_paths: Vec<&str> = key_paths.iter().map(String::as_str).collect();
        let token = self.db.observe_query_key_paths(
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
                report("results listener", listener.on_change(change));
            },
        )?;
        Ok(ListenerHandle::new(token))
    }
}

enum Op {
    Create(
        String,
        crate::model::PrimaryKey,
        Vec<(String, crate::model::Value)>,
    ),
    Upsert(
        String,
        crate::model::PrimaryKey,
        Vec<(String, crate::model::Value)>,
    ),
    Set(
        String,
        crate::model::PrimaryKey,
        String,
        crate::model::Value,
    ),
    Erase(String, crate::model::PrimaryKey),
    Add(String, crate::model::PrimaryKey, String, i64),
    ListInsert(
        String,
        crate::model::PrimaryKey,
        String,
        u32,
        crate::model::Value,
    ),
    ListErase(String, crate::model::PrimaryKey, String, u32),
    SetInsert(
        String,
        crate::model::PrimaryKey,
        String,
        crate::model::Value,
    ),
    SetErase(
        String,
        crate::model::PrimaryKey,
        String,
        crate::model::Value,
    ),
    DictSet(
        String,
        crate::model::PrimaryKey,
        String,
        String,
        crate::model::Value,
    ),
    DictErase(String, crate::model::PrimaryKey, String, String),
}

/// A write transaction being recorded. `commit()` performs every operation in one atomic store
/// transaction (all or nothing) and returns its version; `rollback()` discards it.
#[derive(uniffi::Object)]
pub struct WriteTransaction {
    db: Arc<store::Database>,
    ops: Mutex<Option<Vec<Op>>>,
}

impl WriteTransaction {
    fn record(&self, op: Op) -> Result<(), TandemError> {
        match lock(&self.ops).as_mut() {
            Some(ops) => {
                ops.push(op);
                Ok(())
            }
            None => Err(TandemError::InvalidArgument {
                message: "this transaction was already committed or rolled back".into(),
            }),
        }
    }
}

fn values(
    values: HashMap<String, Value>,
) -> Result<Vec<(String, crate::model::Value)>, TandemError> {
    let mut out = values
        .into_iter()
        .map(|(k, v)| Ok((k, core_value(&v)?)))
        .collect::<Result<Vec<_>, TandemError>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Calls `f` with `values` as the `(&str, Value)` pairs the store takes, without copying values.
fn with_named<T>(
    values: Vec<(String, crate::model::Value)>,
    f: impl FnOnce(&[(&str, crate::model::Value)]) -> T,
) -> T {
    let (names, values): (Vec<String>, Vec<crate::model::Value>) = values.into_iter().unzip();
    let named: Vec<(&str, crate::model::Value)> =
        names.iter().map(String::as_str).zip(values).collect();
    f(&named)
}

#[uniffi::export]
impl WriteTransaction {
    /// Creates an object (an error at commit if it exists).
    pub fn create(
        &self,
        class_name: String,
        key: Key,
        values: HashMap<String, Value>,
    ) -> Result<(), TandemError> {
        self.record(Op::Create(
            class_name,
            core_key(&key)?,
            self::values(values)?,
        ))
    }

    /// Creates an object or writes these values to the existing one.
    pub fn upsert(
        &self,
        class_name: String,
        key: Key,
        values: HashMap<String, Value>,
    ) -> Result<(), TandemError> {
        self.record(Op::Upsert(
            class_name,
            core_key(&key)?,
            self::values(values)?,
        ))
    }

    /// Writes one property.
    pub fn set(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
    ) -> Result<(), TandemError> {
        self.record(Op::Set(
            class_name,
            core_key(&key)?,
            property,
            core_value(&value)?,
        ))
    }

    /// Deletes an object.
    pub fn erase(&self, class_name: String, key: Key) -> Result<(), TandemError> {
        self.record(Op::Erase(class_name, core_key(&key)?))
    }

    /// Adds to an integer property (a counter: concurrent adds from several devices sum up).
    pub fn add(
        &self,
        class_name: String,
        key: Key,
        property: String,
        amount: i64,
    ) -> Result<(), TandemError> {
        self.record(Op::Add(class_name, core_key(&key)?, property, amount))
    }

    /// Inserts into a list property at `index`.
    pub fn list_insert(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
        value: Value,
    ) -> Result<(), TandemError> {
        self.record(Op::ListInsert(
            class_name,
            core_key(&key)?,
            property,
            index,
            core_value(&value)?,
        ))
    }

    /// Removes the element at `index` of a list property.
    pub fn list_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        index: u32,
    ) -> Result<(), TandemError> {
        self.record(Op::ListErase(class_name, core_key(&key)?, property, index))
    }

    /// Adds a value to a set property.
    pub fn set_insert(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
    ) -> Result<(), TandemError> {
        self.record(Op::SetInsert(
            class_name,
            core_key(&key)?,
            property,
            core_value(&value)?,
        ))
    }

    /// Removes a value from a set property.
    pub fn set_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        value: Value,
    ) -> Result<(), TandemError> {
        self.record(Op::SetErase(
            class_name,
            core_key(&key)?,
            property,
            core_value(&value)?,
        ))
    }

    /// Writes one entry of a dictionary property.
    pub fn dict_set(
        &self,
        class_name: String,
        key: Key,
        property: String,
        entry: String,
        value: Value,
    ) -> Result<(), TandemError> {
        self.record(Op::DictSet(
            class_name,
            core_key(&key)?,
            property,
            entry,
            core_value(&value)?,
        ))
    }

    /// Removes one entry of a dictionary property.
    pub fn dict_erase(
        &self,
        class_name: String,
        key: Key,
        property: String,
        entry: String,
    ) -> Result<(), TandemError> {
        self.record(Op::DictErase(class_name, core_key(&key)?, property, entry))
    }

    /// Performs every recorded operation in one transaction. Returns the new local version,
    /// or `None` if nothing changed. On an error nothing is written.
    pub fn commit(&self) -> Result<Option<u64>, TandemError> {
        let ops = lock(&self.ops)
            .take()
            .ok_or_else(|| TandemError::InvalidArgument {
                message: "this transaction was already committed or rolled back".into(),
            })?;
        let mut tx = self.db.begin_write()?;
        for op in ops {
            match op {
                Op::Create(class, key, vals) => {
                    with_named(vals, |named| tx.create(&class, key, named))?
                }
                Op::Upsert(class, key, vals) => {
                    with_named(vals, |named| tx.upsert(&class, key, named))?
                }
                Op::Set(class, key, prop, value) => tx.set(&class, &key, &prop, value)?,
                Op::Erase(class, key) => tx.erase(&class, &key)?,
                Op::Add(class, key, prop, amount) => tx.add(&class, &key, &prop, amount)?,
                Op::ListInsert(class, key, prop, index, value) => {
                    tx.list_insert(&class, &key, &prop, index, value)?
                }
                Op::ListErase(class, key, prop, index) => {
                    tx.list_erase(&class, &key, &prop, index)?
                }
                Op::SetInsert(class, key, prop, value) => {
                    tx.set_insert(&class, &key, &prop, value)?
                }
                Op::SetErase(class, key, prop, value) => {
                    tx.set_erase(&class, &key, &prop, value)?
                }
                Op::DictSet(class, key, prop, entry, value) => {
                    tx.dict_set(&class, &key, &prop, &entry, value)?
                }
                Op::DictErase(class, key, prop, entry) => {
                    tx.dict_erase(&class, &key, &prop, &entry)?
                }
            }
        }
        Ok(tx.commit()?)
    }

    /// Discards the recorded operations.
    pub fn rollback(&self) {
        lock(&self.ops).take();
    }
}
