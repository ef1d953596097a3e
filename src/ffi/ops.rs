//! The one list of write operations foreign code can ask for ([`WriteOp`]), and the one
//! function that performs an operation in a store write transaction ([`apply`]).
//!
//! Every write path goes through them: a recording `WriteTransaction` stores `WriteOp`s and
//! applies them at `commit()`, `Database.write(ops)` applies a whole list in one crossing
//! and one store transaction (the batch path: a foreign call costs microseconds, so a
//! transaction of 100,000 operations should cross once, not 100,000 times), and the row
//! codec's JSON write batches (`ffi::python_batch`) are decoded into `WriteOp`s and applied
//! here too.

use std::collections::HashMap;

use super::types::{core_key, into_core_value, Key, TandemError, Value};
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
    /// Creates one object per row: the batch form of `Create` for many objects of one class
    /// written with the same properties (a typed layer's `add` of many models), without a map
    /// and property names per object. Row `i` is the object with key `keys[i]` and the values
    /// `values[i * properties.len()..(i + 1) * properties.len()]`, one per name in
    /// `properties` (the primary key is not among them). Each row is performed exactly as the
    /// `Create` with those values would be, in row order.
    ///
    /// Errors: `values.len()` not `keys.len() * properties.len()`, or a name repeated in
    /// `properties`, is `InvalidArgument` (nothing is written); a row fails as its `Create`
    /// would, named `row i`.
    CreateRows {
        /// The class.
        class_name: String,
        /// The properties each row gives a value of, in the order of its values.
        properties: Vec<String>,
        /// The new objects' primary keys, one per row.
        keys: Vec<Key>,
        /// The rows' values, row after row (`keys.len() * properties.len()` of them).
        values: Vec<Value>,
    },
    /// `CreateRows` with `Upsert` instead of `Create` for each row: an object that exists gets
    /// the row's values (the same instructions as its `Upsert`), a new one is created. The
    /// batch form of `Upsert` (Kotlin's typed `add` of many objects). Errors: as
    /// `CreateRows`'s, with `Upsert`'s for a row.
    UpsertRows {
        /// The class.
        class_name: String,
        /// The properties each row gives a value of, in the order of its values.
        properties: Vec<String>,
        /// The objects' primary keys, one per row.
        keys: Vec<Key>,
        /// The rows' values, row after row (`keys.len() * properties.len()` of them).
        values: Vec<Value>,
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
        .map(|(k, v)| Ok((k, into_core_value(v)?)))
        .collect::<Result<Vec<_>, TandemError>>()?;
    values.sort_by(|a, b| a.0.cmp(&b.0));
    // Split names from values so the values move into the store without a copy.
    let (names, values): (Vec<String>, Vec<crate::model::Value>) = values.into_iter().unzip();
    let named: Vec<(&str, crate::model::Value)> =
        names.iter().map(String::as_str).zip(values).collect();
    Ok(f(&named)?)
}

/// `WriteOp::CreateRows` (`UpsertRows` with `upsert`): each row as the `Create` (`Upsert`) of
/// its values, whose names are taken in sorted order as `with_values` takes a `Create`'s (so
/// both record the same instructions).
fn write_rows(
    tx: &mut store::WriteTransaction<'_>,
    class_name: &str,
    properties: &[String],
    keys: Vec<Key>,
    values: Vec<Value>,
    upsert: bool,
) -> Result<(), TandemError> {
    let width = properties.len();
    if keys.len().checked_mul(width) != Some(values.len()) {
        return Err(TandemError::InvalidArgument {
            message: format!(
                "rows of {class_name}: {} values for {} rows of {width} properties",
                values.len(),
                keys.len()
            ),
        });
    }
    // The positions of the properties in name order.
    let mut order: Vec<usize> = (0..width).collect();
    order.sort_by(|&a, &b| properties[a].cmp(&properties[b]));
    if let Some(w) = order
        .windows(2)
        .find(|w| properties[w[0]] == properties[w[1]])
    {
        return Err(TandemError::InvalidArgument {
            message: format!(
                "rows of {class_name}: property {} given twice",
                properties[w[0]]
            ),
        });
    }
    let names: Vec<&str> = order.iter().map(|&j| properties[j].as_str()).collect();
    // Converted first, so the store sees how many rows come (and sizes the changeset once).
    let mut values = values.into_iter();
    let mut row: Vec<Option<crate::model::Value>> = Vec::with_capacity(width);
    let mut rows = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate() {
        let in_row = |e: TandemError| e.context(&format!("row {i}"));
        let key = core_key(&key).map_err(in_row)?;
        row.clear();
        for v in values.by_ref().take(width) {
            row.push(Some(into_core_value(v).map_err(in_row)?));
        }
        let named: Vec<crate::model::Value> = order
            .iter()
            .map(|&j| row[j].take().expect("each position is taken once"))
            .collect();
        rows.push((key, named));
    }
    let written = if upsert {
        tx.upsert_rows(class_name, &names, rows)
    } else {
        tx.create_rows(class_name, &names, rows)
    };
    written.map_err(|e| TandemError::from(e.error).context(&format!("row {}", e.row)))
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
        WriteOp::CreateRows {
            class_name,
            properties,
            keys,
            values,
        } => write_rows(tx, &class_name, &properties, keys, values, false)?,
        WriteOp::UpsertRows {
            class_name,
            properties,
            keys,
            values,
        } => write_rows(tx, &class_name, &properties, keys, values, true)?,
        WriteOp::Set {
            class_name,
            key,
            property,
            value,
            path,
        } => {
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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
            let (key, value) = (core_key(&key)?, into_core_value(value)?);
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

#[cfg(test)]
mod tests {
    use super::super::types::{ClassSpec, PropertySpec, PropertyType};
    use super::super::Database;
    use super::*;

    /// A database in a fresh scratch directory, and the guard that removes the directory.
    fn db(name: &str) -> (std::sync::Arc<Database>, tempfile::TempDir) {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tandem-ops-{name}-"))
            .tempdir()
            .unwrap();
        let prop = |name: &str, t, nullable| PropertySpec {
            nullable,
            ..PropertySpec::single(name, t)
        };
        let classes = vec![ClassSpec {
            name: "Task".into(),
            primary_key: Some("_id".into()),
            properties: vec![
                prop("_id", PropertyType::Int, false),
                prop("title", PropertyType::String, false),
                prop("done", PropertyType::Bool, false),
                prop("note", PropertyType::String, true),
            ],
        }];
        let path = dir.path().join("db.sqlite").to_string_lossy().into_owned();
        (Database::open(path, classes).unwrap(), dir)
    }

    fn row(i: i64) -> [(String, Value); 3] {
        [
            (
                "title".into(),
                Value::String {
                    value: format!("t{i}"),
                },
            ),
            ("done".into(), Value::Bool { value: i % 2 == 0 }),
            (
                "note".into(),
                if i == 1 {
                    Value::Null
                } else {
                    Value::String { value: "n".into() }
                },
            ),
        ]
    }

    fn rows(keys: std::ops::Range<i64>) -> WriteOp {
        WriteOp::CreateRows {
            class_name: "Task".into(),
            // Not in name order: the values follow this order.
            properties: vec!["title".into(), "note".into(), "done".into()],
            keys: keys.clone().map(|value| Key::Int { value }).collect(),
            values: keys
                .flat_map(|i| {
                    let [title, done, note] = row(i);
                    [title.1, note.1, done.1]
                })
                .collect(),
        }
    }

    #[test]
    fn create_rows_records_what_its_creates_would() {
        let (a, _da) = db("a.sqlite");
        let (b, _db) = db("b.sqlite");
        write(&a.inner, [rows(0..3)]).unwrap();
        write(
            &b.inner,
            (0..3).map(|i| WriteOp::Create {
                class_name: "Task".into(),
                key: Key::Int { value: i },
                values: HashMap::from(row(i)),
            }),
        )
        .unwrap();
        // Each history: the schema's changeset (made at open), then the write's.
        let (ha, hb) = (a.inner.history().unwrap(), b.inner.history().unwrap());
        assert_eq!((ha.len(), hb.len()), (2, 2));
        assert_eq!(
            ha[1].instructions.len(),
            3 * 4,
            "a create and three updates per row"
        );
        assert_eq!(ha[1].instructions, hb[1].instructions);
        for i in 0..3 {
            let key = Key::Int { value: i };
            let read = |d: &Database| d.object("Task".into(), key.clone()).unwrap().unwrap();
            assert_eq!(read(&a), read(&b));
        }
    }

    #[test]
    fn create_rows_refuses_a_ragged_or_repeated_shape_and_names_the_failing_row() {
        let (a, _d) = db("a.sqlite");
        let before = a.inner.history().unwrap().len();
        let WriteOp::CreateRows {
            class_name,
            properties,
            keys,
            mut values,
        } = rows(0..3)
        else {
            unreachable!()
        };
        values.pop();
        let ragged = WriteOp::CreateRows {
            class_name: class_name.clone(),
            properties: properties.clone(),
            keys: keys.clone(),
            values: values.clone(),
        };
        let err = write(&a.inner, [ragged]).unwrap_err().to_string();
        assert!(err.contains("8 values for 3 rows of 3 properties"), "{err}");
        let repeated = WriteOp::CreateRows {
            class_name: class_name.clone(),
            properties: vec!["title".into(), "title".into()],
            keys: vec![Key::Int { value: 9 }],
            values: vec![Value::Null, Value::Null],
        };
        let err = write(&a.inner, [repeated]).unwrap_err().to_string();
        assert!(err.contains("property title given twice"), "{err}");
        // Row 1 repeats row 0's key: the whole batch is refused, nothing is written.
        let duplicate = WriteOp::CreateRows {
            class_name,
            properties: vec!["title".into()],
            keys: vec![Key::Int { value: 5 }, Key::Int { value: 5 }],
            values: vec![
                Value::String { value: "x".into() },
                Value::String { value: "y".into() },
            ],
        };
        let err = write(&a.inner, [rows(10..12), duplicate]).unwrap_err();
        assert!(
            err.to_string()
                .contains(": operation 1: row 1: Task[5] already exists"),
            "{err}"
        );
        assert_eq!(a.inner.history().unwrap().len(), before);
        assert_eq!(
            a.object("Task".into(), Key::Int { value: 10 }).unwrap(),
            None
        );
    }
}
