//! Helpers the store's unit tests share: a `Task` class and a one-object write.

use crate::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use crate::store::Database;

/// `Task { _id: int (primary key), title: string }`.
pub(crate) fn task_schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
        ],
    )])
    .unwrap()
}

/// Upserts `Task[key]` with `title`, in a transaction of its own.
pub(crate) fn put_title(db: &Database, key: i64, title: &str) {
    let mut w = db.begin_write().unwrap();
    w.upsert(
        "Task",
        PrimaryKey::Int(key),
        &[("title", Value::String(title.into()))],
    )
    .unwrap();
    w.commit().unwrap();
}
