//! Client reset against a real server: a server that lost the file (208) or was restored from
//! an older backup (209), with unsynced local changes on the client. Discard replaces the local
//! state; recover keeps the local changes the server never integrated and quarantines what no
//! longer applies; manual stops and tells the app. Listeners see the change as ordinary
//! notifications.
#![cfg(feature = "server")]

mod live;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::{create_task, eventually, has_task, World};
use tandem::client::{ClientResetMode, Event, SyncSession, SyncState};
use tandem::model::{PrimaryKey, Value};

fn start(world: &World, db: &Arc<tandem::store::Database>, mode: ClientResetMode) -> SyncSession {
    let mut config = world.config(live::token(3600));
    config.client_reset = mode;
    SyncSession::start(Arc::clone(db), config).unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A syncs task 1, the server's files are copied to `backup`, then A syncs task 2.
fn synced_around_a_backup(
    world: &mut World,
    mode: ClientResetMode,
) -> (Arc<tandem::store::Database>, SyncSession) {
    let a = world.open("a.sqlite");
    let session = start(world, &a, mode);
    create_task(&a, 1, "synced before the backup");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world.stop_server();
    copy_dir(&world.dir.join("server"), &world.dir.join("backup"));
    world.start_server();
    create_task(&a, 2, "synced after the backup");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world
        .block_on(session.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    (a, session)
}

/// Replaces the server's files with the backup (the server must be stopped).
fn restore_backup(world: &World) {
    std::fs::remove_dir_all(world.dir.join("server")).unwrap();
    copy_dir(&world.dir.join("backup"), &world.dir.join("server"));
}

/// A syncs tasks 1 and 2 (the backup is taken between them), then writes 3 offline; the server
/// comes back from the backup.
fn restored_from_backup(
    world: &mut World,
    mode: ClientResetMode,
) -> (Arc<tandem::store::Database>, SyncSession) {
    let (a, session) = synced_around_a_backup(world, mode);
    world.stop_server();
    create_task(&a, 3, "never synced");
    restore_backup(world);
    world.start_server();
    (a, session)
}

#[test]
fn recover_keeps_unsynced_changes_after_a_restore_from_backup() {
    let mut world = World::new("reset-recover");
    let (a, session) = restored_from_backup(&mut world, ClientResetMode::Recover);
    eventually("the server to have every task again", 60, || {
        let state = world.server.as_ref().unwrap().state_of(live::PATH);
        state.is_some_and(|s| {
            (1..=3).all(|id| s.object("Task", &tandem::state::Key::Int(id)).is_some())
        })
    });
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    assert!((1..=3).all(|id| has_task(&a, id)));
    assert!(a.quarantine().unwrap().is_empty());
    // A second client sees the recovered tasks.
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    assert!((1..=3).all(|id| has_task(&b, id)));
}

#[test]
fn discard_replaces_local_state_and_listeners_see_it() {
    let mut world = World::new("reset-discard");
    let a = world.open("a.sqlite");
    let session = start(&world, &a, ClientResetMode::DiscardLocal);
    create_task(&a, 1, "on the lost server");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world.stop_server();
    create_task(&a, 2, "offline");
    // The server loses its data entirely; another client writes to the new one first.
    std::fs::remove_dir_all(world.dir.join("server")).unwrap();
    world.start_server();
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    create_task(&b, 10, "on the new server");
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();

    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&changes);
    let _listener = a
        .observe_query("Task", "TRUEPREDICATE", &[], move |change| {
            sink.lock().unwrap().push(change.clone());
        })
        .unwrap();
    eventually("a to be reset to the new server's state", 60, || {
        has_task(&a, 10) && !has_task(&a, 1) && !has_task(&a, 2)
    });
    eventually("the listener to see it", 30, || {
        changes
            .lock()
            .unwrap()
            .iter()
            .any(|c| !c.deletions.is_empty() && !c.insertions.is_empty())
    });
    // The reset commits before the session sends IDENT and reports Connected.
    eventually("the session to be connected again", 30, || {
        session.state() == SyncState::Connected
    });
}

#[test]
fn recover_quarantines_what_no_longer_applies() {
    let mut world = World::new("reset-quarantine");
    let (a, session) = synced_around_a_backup(&mut world, ClientResetMode::Recover);
    drop(session);
    world.stop_server();
    // Offline on a: an edit of task 1.
    let mut tx = a.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("edited offline".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    // The server comes back from the backup, and b deletes task 1 there before a returns.
    restore_backup(&world);
    world.start_server();
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    let mut tx = b.begin_write().unwrap();
    tx.erase("Task", &PrimaryKey::Int(1)).unwrap();
    tx.commit().unwrap();
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();

    let session = start(&world, &a, ClientResetMode::Recover);
    eventually("the reset", 60, || has_task(&a, 2) && !has_task(&a, 1));
    let quarantined = a.quarantine().unwrap();
    assert_eq!(
        quarantined.len(),
        1,
        "the edit of the deleted task: {quarantined:?}"
    );
    assert!(!quarantined[0].reason.is_empty());
    a.clear_quarantine(None).unwrap();
    assert!(a.quarantine().unwrap().is_empty());
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    assert!(
        state.object("Task", &tandem::state::Key::Int(2)).is_some(),
        "task 2 recovered"
    );
    assert!(state.object("Task", &tandem::state::Key::Int(1)).is_none());
}

#[test]
fn manual_mode_stops_and_tells_the_app() {
    let mut world = World::new("reset-manual");
    let (_a, session) = restored_from_backup(&mut world, ClientResetMode::Manual);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let _listener = session.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    eventually("the session to stop", 60, || {
        matches!(session.state(), SyncState::Error(_))
    });
    let SyncState::Error(message) = session.state() else {
        unreachable!()
    };
    assert!(message.contains("client reset required"), "{message}");
    eventually("the error event", 10, || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Error(i) if i.code == 209 && !i.will_retry))
    });
}
