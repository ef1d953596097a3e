//! The foreign facade's sync calls against a real server: `SyncSession::transact` with a list
//! of `WriteOp`s, and `open_synced` with open options.
#![cfg(all(feature = "server", feature = "ffi"))]

mod live;

use std::collections::HashMap;

use live::{token, World, PATH};
use tandem::ffi::{
    open_synced, ClassSpec, ClientResetMode, Collection, Database, Durability, FieldValue, Key,
    OpenOptions, PropertySpec, PropertyType as T, SyncOptions, TandemError, TransactOutcome, Value,
    WriteOp,
};

/// `live::schema()` as foreign code declares it.
fn classes() -> Vec<ClassSpec> {
    let prop = |name: &str, t: T, collection: Collection| PropertySpec {
        name: name.into(),
        property_type: t,
        nullable: false,
        collection,
        link_target: None,
        indexed: false,
    };
    vec![ClassSpec {
        name: "Task".into(),
        primary_key: Some("_id".into()),
        properties: vec![
            prop("_id", T::Int, Collection::Single),
            prop("title", T::String, Collection::Single),
            prop("count", T::Int, Collection::Single),
            prop("tags", T::String, Collection::List),
        ],
    }]
}

fn options(world: &World) -> SyncOptions {
    let config = world.config(token(3600));
    SyncOptions {
        url: config.url,
        path: PATH.into(),
        token: config.token,
        ca_file: config.ca_file.map(|p| p.to_string_lossy().into_owned()),
        allow_insecure: false,
        client_reset: ClientResetMode::RecoverOrDiscard,
        connect_timeout_ms: 10_000,
        handshake_timeout_ms: 10_000,
        flexible: false,
    }
}

fn create(id: i64, title: &str) -> WriteOp {
    WriteOp::Create {
        class_name: "Task".into(),
        key: Key::Int { value: id },
        values: HashMap::from([(
            "title".into(),
            Value::String {
                value: title.into(),
            },
        )]),
    }
}

#[test]
fn transact_commits_a_list_of_operations_and_returns_the_verdict() {
    let world = World::new("ffi-transact");
    let dir = tempfile::Builder::new()
        .prefix("tandem-ffi-sync-")
        .tempdir()
        .unwrap();
    let synced = world
        .block_on(open_synced(
            dir.path().join("a.sqlite").to_string_lossy().into_owned(),
            classes(),
            options(&world),
            None,
            Some(60_000),
            Some(OpenOptions {
                durability: Durability::Full,
                writer_timeout_ms: 5_000,
                recovery_window: 100,
                exclusive_to_process: false,
            }),
            None,
        ))
        .unwrap();
    let (db, session): (std::sync::Arc<Database>, _) = (synced.database, synced.session);
    let outcome = world
        .block_on(session.transact(vec![create(1, "transacted")], Some(60_000)))
        .unwrap();
    assert!(
        matches!(outcome, TransactOutcome::Accepted { server_version } if server_version > 0),
        "{outcome:?}"
    );
    let task = db
        .object("Task".into(), Key::Int { value: 1 })
        .unwrap()
        .unwrap();
    assert_eq!(
        task["title"],
        FieldValue::Single {
            value: Value::String {
                value: "transacted".into()
            }
        }
    );
    // A failing operation keeps its own variant and names its position; nothing is written.
    let err = world
        .block_on(session.transact(vec![create(2, "lost"), create(1, "again")], Some(60_000)))
        .unwrap_err();
    assert!(
        matches!(&err, TandemError::InvalidArgument { message } if message.starts_with("operation 1: ")),
        "{err:?}"
    );
    assert_eq!(
        db.object("Task".into(), Key::Int { value: 2 }).unwrap(),
        None
    );
    // The session still takes transactions after the failure.
    let outcome = world
        .block_on(session.transact(vec![create(3, "after")], Some(60_000)))
        .unwrap();
    assert!(
        matches!(outcome, TransactOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    session.stop();
}
