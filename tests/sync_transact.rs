//! TRANSACT against a real server: a transaction nothing concurrent touched is accepted with
//! its server version; one whose object another client changed concurrently is rejected,
//! rolled back locally (listeners see it disappear) while the client's other local changes
//! survive and sync; a transaction may not change the schema. Writes made while a transaction
//! waits are rebased when it is rejected: merged with other clients' changes, never copied
//! over them.
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

fn tags(db: &tandem::store::Database, id: i64) -> Vec<String> {
    let object = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()
        .unwrap();
    match object.fields.get("tags") {
        Some(Field::List(items)) => items
            .iter()
            .map(|e| match e {
                tandem::state::Element::Value(Val::String(s)) => s.clone(),
                other => panic!("not a string tag: {other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn insert_tag(db: &tandem::store::Database, at: u32, tag: &str) {
    let mut tx = db.begin_write().unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        at,
        Value::String(tag.into()),
    )
    .unwrap();
    tx.commit().unwrap();
}

/// The simulation's seed 83 on a real server: writes made while a transaction waited are
/// rebased when it is rejected. b inserts a tag a has not downloaded; a's transaction inserts a
/// tag, then a inserts another after it and rewrites the transaction's tag. The rejection
/// leaves a's later insert merged beside b's (a client reset's "the local list wins" copy
/// erased b's), and the rewrite of the transaction's tag in the quarantine, reported as an
/// event.
#[test]
fn writes_after_a_rejected_transaction_are_merged_not_copied() {
    let mut world = World::new("transact-rebase");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    let wait = Some(Duration::from_secs(60));
    {
        let sa = world.sync(&a);
        create_task(&a, 1, "original");
        insert_tag(&a, 0, "x");
        world.block_on(sa.wait_for_upload(wait)).unwrap();
        world.block_on(sb.wait_for_download(wait)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    insert_tag(&b, 0, "b");
    world.block_on(sb.wait_for_upload(wait)).unwrap();

    // a, with the server down: the transaction cannot be sent; a writes on behind it.
    world.stop_server();
    let (sa, events) = world.sync_recording(&a);
    let timed_out = world.block_on(sa.transact(
        |tx| {
            tx.list_insert(
                "Task",
                &PrimaryKey::Int(1),
                "tags",
                1,
                Value::String("t".into()),
            )
        },
        Some(Duration::from_millis(300)),
    ));
    assert!(
        matches!(timed_out, Err(SyncError::Timeout { .. })),
        "{timed_out:?}"
    );
    insert_tag(&a, 2, "l"); // [x, t] -> [x, t, l]
    let mut tx = a.begin_write().unwrap();
    tx.list_set(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        1,
        Value::String("t2".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(tags(&a, 1), ["x", "t2", "l"]);

    world.start_server();
    eventually("the rejection and its rollback", 60, || {
        a.quarantine().map(|q| !q.is_empty()).unwrap_or(false)
    });
    world.block_on(sa.wait_for_upload(wait)).unwrap();
    world.block_on(sa.wait_for_download(wait)).unwrap();
    world.block_on(sb.wait_for_download(wait)).unwrap();
    // b's tag stays, a's later tag is merged beside it, the transaction's tag is gone.
    assert_eq!(tags(&a, 1), ["b", "x", "l"]);
    assert_eq!(tags(&b, 1), ["b", "x", "l"]);
    let q = a.quarantine().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0].instructions[0].reason,
        "it changes a list element the rolled-back transaction inserted"
    );
    live::wait_for_error(&events, 30, |e| {
        e.message
            .starts_with("transaction rollback: 1 instructions of 1 later local changesets")
    });
}

/// Commits `title` on task 1 as `transact` does, and ends there: the crash that follows a
/// commit before any verdict (no session runs). Returns the transaction's local version.
fn transact_then_crash(db: &tandem::store::Database, title: &'static str) -> u64 {
    let mut tx = db.begin_write().unwrap();
    set_title(1, title)(&mut tx).unwrap();
    let version = tx.commit_transact().unwrap().unwrap();
    let pending = db.pending_transact().unwrap().unwrap();
    assert_eq!((pending.version, pending.rejected), (version, None));
    version
}

/// Syncs task 1 from `a` to `b`, then changes it on `b` (uploaded) while `a` is not syncing.
fn concurrent_change_on_b(world: &World, a: &Arc<tandem::store::Database>) -> SyncingB {
    let b = world.open("b.sqlite");
    let sa = world.sync(a);
    let sb = world.sync(&b);
    create_task(a, 1, "original");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    drop(sa);
    std::thread::sleep(Duration::from_millis(100));
    let mut tx = b.begin_write().unwrap();
    set_title(1, "from b")(&mut tx).unwrap();
    tx.commit().unwrap();
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    SyncingB {
        _db: b,
        _session: sb,
    }
}

struct SyncingB {
    _db: Arc<tandem::store::Database>,
    _session: tandem::client::SyncSession,
}

/// Client a with task 1 ("original") uploaded, its session stopped.
fn uploaded_then_offline(world: &World) -> Arc<tandem::store::Database> {
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    create_task(&a, 1, "original");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    drop(sa);
    std::thread::sleep(Duration::from_millis(100));
    a
}

/// Task 1's title on the server once `session` has uploaded everything.
fn uploaded_title(world: &World, session: &tandem::client::SyncSession) -> Field {
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    server_title(world)
}

fn server_title(world: &World) -> Field {
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    state.object("Task", &Key::Int(1)).unwrap().fields["title"].clone()
}

/// A crash after `transact` committed and before the verdict: the next session sends the
/// transaction as TRANSACT (it is rejected here, as b changed the object), never as an
/// ordinary upload, whose later timestamp would have won over b's title.
#[test]
fn a_transaction_waiting_at_a_crash_is_still_checked_after_reopening() {
    let world = World::new("transact-crash-waiting");
    let a = world.open("a.sqlite");
    let _b = concurrent_change_on_b(&world, &a);
    transact_then_crash(&a, "from a");
    drop(a);
    reopen_and_see_it_rolled_back(&world, "from b");
}

/// Reopens a and syncs it: the waiting transaction is rolled back (task 1 has `title` and the
/// record is gone), and a later write uploads while the server keeps `title`.
fn reopen_and_see_it_rolled_back(world: &World, title_after: &str) {
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    eventually("the transaction to be rolled back", 60, || {
        title(&a, 1).as_deref() == Some(title_after) && a.pending_transact().unwrap().is_none()
    });
    create_task(&a, 2, "after");
    assert_eq!(
        uploaded_title(world, &sa),
        Field::Value(Val::String(title_after.into()))
    );
}

/// A crash after the server's rejection was stored and before the rollback: the next session
/// rolls back without asking again, even where nothing conflicts (the server never integrated
/// it), and the record goes with the rollback.
#[test]
fn a_rejection_stored_before_a_crash_is_rolled_back_after_reopening() {
    let world = World::new("transact-crash-rejected");
    let a = uploaded_then_offline(&world);
    let version = transact_then_crash(&a, "from a");
    a.reject_transact(version, "Task[1] changed").unwrap();
    drop(a);
    let a = world.open("a.sqlite");
    assert_eq!(
        a.pending_transact()
            .unwrap()
            .and_then(|p| p.rejected)
            .as_deref(),
        Some("Task[1] changed")
    );
    drop(a);
    reopen_and_see_it_rolled_back(&world, "original");
}

/// A crash before the verdict of a transaction nothing conflicts with: the next session sends
/// it, the server accepts it, and its record is dropped; a second waiting transaction is
/// refused while one waits.
#[test]
fn a_transaction_waiting_at_a_crash_is_accepted_after_reopening() {
    let world = World::new("transact-crash-accepted");
    let a = uploaded_then_offline(&world);
    transact_then_crash(&a, "from a");
    let mut tx = a.begin_write().unwrap();
    set_title(1, "second")(&mut tx).unwrap();
    let err = tx.commit_transact().unwrap_err();
    assert!(err.to_string().contains("already waiting"), "{err}");
    assert_eq!(title(&a, 1).as_deref(), Some("from a"));
    drop(a);
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    eventually("the record to be dropped", 30, || {
        a.pending_transact().unwrap().is_none()
    });
    assert_eq!(
        server_title(&world),
        Field::Value(Val::String("from a".into()))
    );
    assert_eq!(title(&a, 1).as_deref(), Some("from a"));
}

/// A `transact` call dropped while its commit runs (a timeout around it, a cancelled foreign
/// call): the commit still settles the transaction, which is then sent and accepted, and the
/// later uploads are not held back for the rest of the session.
#[test]
fn a_transact_dropped_while_it_commits_holds_nothing_back() {
    let world = World::new("transact-dropped");
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    create_task(&a, 1, "original");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let slow = |tx: &mut tandem::store::WriteTransaction<'_>| {
        std::thread::sleep(Duration::from_millis(500));
        set_title(1, "slow")(tx)
    };
    let dropped = world.block_on(async {
        tokio::time::timeout(Duration::from_millis(50), sa.transact(slow, None)).await
    });
    assert!(dropped.is_err(), "the call was to be dropped mid-commit");
    eventually("the dropped transaction to be committed", 30, || {
        title(&a, 1).as_deref() == Some("slow")
    });
    create_task(&a, 2, "after");
    assert_eq!(
        uploaded_title(&world, &sa),
        Field::Value(Val::String("slow".into()))
    );
    eventually("its record to be dropped", 30, || {
        a.pending_transact().unwrap().is_none()
    });
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    assert!(state.object("Task", &Key::Int(2)).is_some());
}
