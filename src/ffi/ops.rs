//! The one list of write operations foreign code can ask for ([`WriteOp`]), and the one
//! function that performs an operation in a store write transaction ([`apply`]).
//!
//! Every write path goes through them: a recording `WriteTransaction` stores `WriteOp`s and
//! applies them at `commit()`, and `Database.write(ops)` applies a whole list in one crossing
//! and one store transaction (the batch path: a foreign call costs microseconds, so a
//! transaction of 100,000 operations should cross once, not 100,000 times).

use std::collections::HashMap;

use super::types::{core_key, core_value, Key, TandemError, Value};
use crate::store;

/// One step of a path from a property down to a property of an embedded object
/// (`tandem::store::PathStep`): a list position, or a name (an embedded object's field, or a
/// dictionary key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, uniffi::Enum)]
pub enum PathStep {
    /// A position in a list of embedded objects.
    Index {
        /// The position, from 0.
        index: u64,
    },
    /// A field of an embedded object, or a key of a dictionary of embedded objects.
    Name {
        /// The field or key.
        name: String,
    },
}

/// One write operation. `property` names a property of the object `class_name[key]`;
/// `path` (empty by default) continues from it down to a property of an embedded object, so
/// collections inside embedded objects are written like the object's own:
///
/// - `property = "address", path = [Name("tags")]`: the list/set/dictionary `tags` of the
///   embedded object in `address`;
/// - `property = "addresses", path = [Index(0), Name("tags")]`: of the first embedded object of
///   the list `addresses`; `property = "byName", path = [Name("home"), Name("tags")]`: of the
///   dictionary entry `home`;
/// - `Set { property = "address", path = [Name("street")] }`: one field of the embedded object.
///
/// List positions are app positions (links to deleted objects are skipped, as in realm-core's
/// `LnkLst`), from 0; a position beyond `u32` is `InvalidArgument`. Each operation is one Realm
/// instruction (two or more for `Create`, `Upsert` and `Erase`), so it syncs as Realm's would.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum WriteOp {
    /// Creates an object with these property values (an error if it exists).
    Create {
        /// The class.
        class_name: String,
        /// The new object's primary key.
        key: Key,
        /// Property values; missing ones take their defaults.
        values: HashMap<String, Value>,
    },
    /// Creates the object, or writes these values to the existing one.
    Upsert {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// Property values to write.
        values: HashMap<String, Value>,
    },
    /// Writes one single-valued property (`Update`); with a `path`, a field of an embedded
    /// object (null there removes an embedded object).
    Set {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The property.
        property: String,
        /// The new value.
        value: Value,
        /// Steps below `property` (its last step names the field).
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Deletes an object (links to it are removed, its embedded objects go with it).
    Erase {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
    },
    /// Adds to an integer (`AddInteger`: concurrent adds from several devices sum up).
    Add {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The integer property.
        property: String,
        /// What to add (may be negative).
        amount: i64,
        /// Steps below `property` to an embedded object's field.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Creates the embedded object of a single embedded-object property (or, with a path, of
    /// a dictionary entry or an embedded object's field) if there is none.
    CreateEmbedded {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The embedded-object (or dictionary) property.
        property: String,
        /// Steps below `property`; its last step is a name (a dictionary key or a field).
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Inserts `value` into a list at `index` (0 to its length): `ArrayInsert`.
    ListInsert {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// Where to insert.
        index: u64,
        /// The value.
        value: Value,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Inserts a new, empty embedded object into a list of embedded objects at `index`.
    ListInsertEmbedded {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// Where to insert (0 to its length).
        index: u64,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Replaces the element at `index` (`Update` on the list index).
    ListSet {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// The element's position.
        index: u64,
        /// The new value.
        value: Value,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Moves the element at `from` so that it ends up at `to` (`ArrayMove`).
    ListMove {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// The element's position now.
        from: u64,
        /// Its position afterwards.
        to: u64,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Removes the element at `index` (`ArrayErase`).
    ListErase {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// The element's position.
        index: u64,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Empties a list (`Clear`).
    ListClear {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The list property.
        property: String,
        /// Steps below `property` to a list inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Adds `value` to a set (nothing happens if it is there): `SetInsert`.
    SetInsert {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The set property.
        property: String,
        /// The value.
        value: Value,
        /// Steps below `property` to a set inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Removes `value` from a set (nothing happens if it is not there): `SetErase`.
    SetErase {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The set property.
        property: String,
        /// The value.
        value: Value,
        /// Steps below `property` to a set inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Empties a set (`Clear`).
    SetClear {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The set property.
        property: String,
        /// Steps below `property` to a set inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Writes the dictionary entry `entry` (`Update` at the key).
    DictSet {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The dictionary property.
        property: String,
        /// The entry's key (realm-core refuses keys with `.` or starting with `$`).
        entry: String,
        /// The value.
        value: Value,
        /// Steps below `property` to a dictionary inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Removes the dictionary entry `entry` (nothing happens if it is not there).
    DictErase {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The dictionary property.
        property: String,
        /// The entry's key.
        entry: String,
        /// Steps below `property` to a dictionary inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
    /// Empties a dictionary (`Clear`).
    DictClear {
        /// The class.
        class_name: String,
        /// The object's primary key.
        key: Key,
        /// The dictionary property.
        property: String,
        /// Steps below `property` to a dictionary inside an embedded object.
        #[uniffi(default = [])]
        path: Vec<PathStep>,
    },
}

/// A foreign list position as the store's.
fn position(index: u64) -> Result<u32, TandemError> {
    u32::try_from(index).map_err(|_| TandemError::InvalidArgument {
        message: format!(
            "list position {index} is beyond the largest list ({})",
            u32::MAX
        ),
    })
}

/// Foreign path steps as the store's.
pub(crate) fn core_steps(path: Vec<PathStep>) -> Result<Vec<store::PathStep>, TandemError> {
    path.into_iter()
        .map(|step| match step {
            PathStep::Index { index } => position(index).map(store::PathStep::Index),
            PathStep::Name { name } => Ok(store::PathStep::Name(name)),
        })
        .collect()
}

/// A property and the steps below it, owned (a [`store::PropertyPath`] borrows them).
struct At {
    property: String,
    steps: Vec<store::PathStep>,
}

impl At {
    fn new(property: String, path: Vec<PathStep>) -> Result<Self, TandemError> {
        Ok(At {
            property,
            steps: core_steps(path)?,
        })
    }

    fn path(&self) -> store::PropertyPath<'_> {
        store::PropertyPath {
            property: &self.property,
            steps: &self.steps,
        }
    }
}

/// Property values as the `(&str, Value)` pairs the store takes, sorted by name (so the
/// instructions do not depend on the foreign map's order).
fn with_values<T>(
    values: HashMap<String, Value>,
    f: impl FnOnce(&[(&str, crate::model::Value)]) -> Result<T, store::StoreError>,
) -> Result<T, TandemError> {
    let mut values = values
        .into_iter()
        .map(|(k, v)| Ok((k, core_value(&v)?)))
        .collect::<Result<Vec<_>, TandemError>>()?;
    values.sort_by(|a, b| a.0.cmp(&b.0));
    // Split names from values so the values move into the store without a copy.
    let (names, values): (Vec<String>, Vec<crate::model::Value>) = values.into_iter().unzip();
    let named: Vec<(&str, crate::model::Value)> =
        names.iter().map(String::as_str).zip(values).collect();
    Ok(f(&named)?)
}

/// Performs one operation in `tx`. On an error `tx` may hold earlier operations: the caller
/// drops it (rolling everything back), so a transaction is all or nothing.
pub(crate) fn apply(tx: &mut store::WriteTransaction<'_>, op: WriteOp) -> Result<(), TandemError> {
    match op {
        WriteOp::Create {
            class_name,
            key,
            values,
        } => {
            let key = core_key(&key)?;
            with_values(values, |named| tx.create(&class_name, key, named))?;
        }
        WriteOp::Upsert {
            class_name,
            key,
            values,
        } => {
            let key = core_key(&key)?;
            with_values(values, |named| tx.upsert(&class_name, key, named))?;
        }
        WriteOp::Set {
            class_name,
            key,
            property,
            value,
            path,
        } => {
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            if path.is_empty() {
                tx.set(&class_name, &key, &property, value)?
            } else {
                tx.set_at(&class_name, &key, &property, &core_steps(path)?, value)?
            }
        }
        WriteOp::Erase { class_name, key } => tx.erase(&class_name, &core_key(&key)?)?,
        WriteOp::Add {
            class_name,
            key,
            property,
            amount,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.add(&class_name, &core_key(&key)?, at.path(), amount)?
        }
        WriteOp::CreateEmbedded {
            class_name,
            key,
            property,
            path,
        } => tx.create_embedded_at(&class_name, &core_key(&key)?, &property, &core_steps(path)?)?,
        WriteOp::ListInsert {
            class_name,
            key,
            property,
            index,
            value,
            path,
        } => {
            let at = At::new(property, path)?;
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            tx.list_insert(&class_name, &key, at.path(), position(index)?, value)?
        }
        WriteOp::ListInsertEmbedded {
            class_name,
            key,
            property,
            index,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.list_insert_embedded(&class_name, &core_key(&key)?, at.path(), position(index)?)?
        }
        WriteOp::ListSet {
            class_name,
            key,
            property,
            index,
            value,
            path,
        } => {
            let at = At::new(property, path)?;
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            tx.list_set(&class_name, &key, at.path(), position(index)?, value)?
        }
        WriteOp::ListMove {
            class_name,
            key,
            property,
            from,
            to,
            path,
        } => {
            let at = At::new(property, path)?;
            let key = core_key(&key)?;
            tx.list_move(&class_name, &key, at.path(), position(from)?, position(to)?)?
        }
        WriteOp::ListErase {
            class_name,
            key,
            property,
            index,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.list_erase(&class_name, &core_key(&key)?, at.path(), position(index)?)?
        }
        WriteOp::ListClear {
            class_name,
            key,
            property,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.list_clear(&class_name, &core_key(&key)?, at.path())?
        }
        WriteOp::SetInsert {
            class_name,
            key,
            property,
            value,
            path,
        } => {
            let at = At::new(property, path)?;
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            tx.set_insert(&class_name, &key, at.path(), value)?
        }
        WriteOp::SetErase {
            class_name,
            key,
            property,
            value,
            path,
        } => {
            let at = At::new(property, path)?;
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            tx.set_erase(&class_name, &key, at.path(), value)?
        }
        WriteOp::SetClear {
            class_name,
            key,
            property,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.set_clear(&class_name, &core_key(&key)?, at.path())?
        }
        WriteOp::DictSet {
            class_name,
            key,
            property,
            entry,
            value,
            path,
        } => {
            let at = At::new(property, path)?;
            let (key, value) = (core_key(&key)?, core_value(&value)?);
            tx.dict_set(&class_name, &key, at.path(), &entry, value)?
        }
        WriteOp::DictErase {
            class_name,
            key,
            property,
            entry,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.dict_erase(&class_name, &core_key(&key)?, at.path(), &entry)?
        }
        WriteOp::DictClear {
            class_name,
            key,
            property,
            path,
        } => {
            let at = At::new(property, path)?;
            tx.dict_clear(&class_name, &core_key(&key)?, at.path())?
        }
    }
    Ok(())
}

/// Performs `ops` in order in one store write transaction and commits it: all or nothing.
/// Returns the new local version, or `None` if nothing changed. An error names the failing
/// operation's position (`operation 3: ...`) and keeps its variant.
pub(crate) fn write(
    db: &store::Database,
    ops: impl IntoIterator<Item = WriteOp>,
) -> Result<Option<u64>, TandemError> {
    let mut tx = db.begin_write()?;
    for (i, op) in ops.into_iter().enumerate() {
        apply(&mut tx, op).map_err(|e| e.context(&format!("operation {i}")))?;
    }
    Ok(tx.commit()?)
}
