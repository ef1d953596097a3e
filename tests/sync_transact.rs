//! TRANSACT against a real server: a transaction nothing concurrent touched is accepted with
//! its server version; one whose object another client changed concurrently is rejected,
//! rolled back locally (listeners see it disappear) while the client's other local changes
//! survive and sync; a transaction may not change the schema.
#![cfg(feature = "server")]

mod live;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::{create_task, eventually, has_task, World};
use tandem::client::{SyncError, TransactOutcome};
use tandem::model::{PrimaryKey, Value};
use tandem::state::{Field, Key, Val};

fn title(db: &tandem::store::Database, id: i64) -> Option<String> {
    let object = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()?;
    match object.fields.get("title") {
        Some(Field::Value(Val::String(s))) => Some(s.clone()),
        _ => None,
    }
}

fn set_title(
    id: i64,
    title: &'static str,
) -> impl for<'a> FnOnce(
    &mut tandem::store::WriteTransaction<'a>,
) -> Result<(), tandem::store::StoreError>
       + Send
       + 'static {
    move |tx| {
        tx.set(
            "Task",
            &PrimaryKey::Int(id),
            "title",
            Value::String(title.into()),
        )
    }
}

#[test]
fn an_unconflicted_transaction_is_accepted() {
    let world = World::new("transact-accept");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    create_task(&a, 1, "before");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let outcome = world
        .block_on(sa.transact(set_title(1, "transacted"), Some(Duration::from_secs(60))))
        .unwrap();
    let TransactOutcome::Accepted { server_version } = outcome else {
        panic!("rejected: {outcome:?}");
    };
    assert!(server_version > 0);
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    assert_eq!(
        state.object("Task", &Key::Int(1)).unwrap().fields["title"],
        Field::Value(Val::String("transacted".into()))
    );
    eventually("b to see it", 60, || {
        title(&b, 1).as_deref() == Some("transacted")
    });
    // Uploads resume after the verdict.
    create_task(&a, 2, "after");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    drop(sb);
}

#[test]
fn a_concurrently_changed_object_rejects_and_rolls_back() {
    let world = World::new("transact-reject");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    create_task(&a, 1, "original");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    drop(sa); // a goes offline and does not hear of b's change
    std::thread::sleep(Duration::from_millis(100));
    let mut tx = b.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("from b".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();

    // a: an ordinary change, then a transaction on the object b changed.
    create_task(&a, 2, "kept");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _listener = a
        .observe_object("Task", &PrimaryKey::Int(1), move |change| {
            sink.lock().unwrap().push(format!("{change:?}"));
        })
        .unwrap();
    let sa = world.sync(&a);
    let outcome = world
        .block_on(sa.transact(set_title(1, "from a"), Some(Duration::from_secs(60))))
        .unwrap();
    let TransactOutcome::Rejected { reason } = outcome else {
        panic!("accepted: {outcome:?}");
    };
    assert!(reason.contains("Task[1]"), "{reason}");
    // Rolled back: a holds b's title, never "from a"; its ordinary change survived and syncs.
    assert_eq!(title(&a, 1).as_deref(), Some("from b"));
    assert!(has_task(&a, 2));
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    assert!(state.object("Task", &Key::Int(2)).is_some());
    assert_eq!(
        state.object("Task", &Key::Int(1)).unwrap().fields["title"],
        Field::Value(Val::String("from b".into()))
    );
    eventually("the listener to see the write and its rollback", 30, || {
        seen.lock().unwrap().len() >= 2
    });
}

#[test]
fn one_transaction_at_a_time_and_not_empty() {
    let world = World::new("transact-rules");
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    create_task(&a, 1, "x");
    let err = world
        .block_on(sa.transact(|_| Ok(()), Some(Duration::from_secs(10))))
        .unwrap_err();
    assert!(matches!(err, SyncError::InvalidState { .. }), "{err:?}");
    let outcome = world
        .block_on(sa.transact(set_title(1, "y"), Some(Duration::from_secs(60))))
        .unwrap();
    assert!(
        matches!(outcome, TransactOutcome::Accepted { .. }),
        "{outcome:?}"
    );
}
