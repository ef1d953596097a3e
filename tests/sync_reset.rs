//! Client reset against a real server: a server that lost the file (208) or was restored from
//! an older backup (209), with unsynced local changes on the client. Discard replaces the local
//! state; recover keeps the local changes the server never integrated, per instruction with
//! realm-core's recovery rules, and quarantines only the instructions the rules cannot recover;
//! manual stops and tells the app. Listeners see the change as ordinary notifications.
//!
//! The `rule_*` tests check each recovery rule on the store directly (`reset_to_snapshot` with
//! a snapshot of a second database standing for the server), and that the re-recorded
//! changesets, applied to the server's state, give exactly the recovered local state.
#![cfg(feature = "server")]

mod live;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::{create_task, eventually, has_task, World};
use tandem::client::{ClientResetMode, Event, SyncSession, SyncState};
use tandem::model::{PrimaryKey, Value};
use tandem::state::{Element, Field, Key, Val};
use tandem::store::{Database, WriteTransaction};

fn start(world: &World, db: &Arc<Database>, mode: ClientResetMode) -> SyncSession {
    let mut config = world.config(live::token(3600));
    config.client_reset = mode;
    SyncSession::start(Arc::clone(db), config).unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        // The server is running: a WAL or shared-memory file may be removed (its connection
        // closed, everything checkpointed into the database file) between the listing and the
        // copy; the database file then holds its content.
        match std::fs::copy(entry.path(), to.join(entry.file_name())) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("copying {}: {e}", entry.path().display()),
        }
    }
}

/// A syncs task 1 (tags `[x, y]`), the server's files are copied to `backup`, then A syncs
/// task 2.
fn synced_around_a_backup(
    world: &mut World,
    mode: ClientResetMode,
) -> (Arc<Database>, SyncSession) {
    let a = world.open("a.sqlite");
    let session = start(world, &a, mode);
    create_task(&a, 1, "synced before the backup");
    let mut tx = a.begin_write().unwrap();
    for (i, tag) in ["x", "y"].into_iter().enumerate() {
        tx.list_insert(
            "Task",
            &PrimaryKey::Int(1),
            "tags",
            i as u32,
            Value::String(tag.into()),
        )
        .unwrap();
    }
    tx.commit().unwrap();
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
fn restored_from_backup(world: &mut World, mode: ClientResetMode) -> (Arc<Database>, SyncSession) {
    let (a, session) = synced_around_a_backup(world, mode);
    world.stop_server();
    create_task(&a, 3, "never synced");
    restore_backup(world);
    world.start_server();
    (a, session)
}

/// A (synced around a backup, then disconnected) writes `offline` while the server is down; the
/// server comes back from the backup and b writes `on_server` there before A returns. Returns A,
/// B and B's session.
fn diverged_after_a_restore(
    world: &mut World,
    offline: impl FnOnce(&mut WriteTransaction<'_>),
    on_server: impl FnOnce(&mut WriteTransaction<'_>),
) -> (Arc<Database>, Arc<Database>, SyncSession) {
    let (a, session) = synced_around_a_backup(world, ClientResetMode::Recover);
    drop(session);
    world.stop_server();
    let mut tx = a.begin_write().unwrap();
    offline(&mut tx);
    tx.commit().unwrap();
    restore_backup(world);
    world.start_server();
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    let mut tx = b.begin_write().unwrap();
    on_server(&mut tx);
    tx.commit().unwrap();
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    (a, b, sb)
}

/// Copies client file `from` (and its WAL, if any) to `to`, both in the world's directory: a
/// backup of the file, taken while nothing has it open.
fn copy_client_file(world: &World, from: &str, to: &str) {
    for suffix in ["", "-wal"] {
        let source = world.dir.join(format!("{from}{suffix}"));
        if source.exists() {
            std::fs::copy(&source, world.dir.join(format!("{to}{suffix}"))).unwrap();
        }
    }
}

/// How [`a_client_file_restored_from_an_older_copy_of_itself_loses_nothing`] runs one case.
struct RestoreCase {
    name: &'static str,
    /// The original syncs tasks 2 and 3 in one upload round (1) or in two (2: the second is
    /// based on the server version that acknowledged the first).
    rounds: usize,
    /// The tasks the restored copy writes before it syncs.
    written: &'static [i64],
    /// Part of the message of the 210 that finds the divergence (one of these).
    expected: &'static [&'static str],
    /// The copy's first session is in manual mode and stops at the error.
    manual_first: bool,
    /// The copy's first session is stopped as soon as `wait_for_upload` returns: it must not
    /// return before the copy's changesets are really integrated (the server acknowledged the
    /// other copy's versions before it read the copy's UPLOAD, and the copy took them for its
    /// own; found by a new user's trial).
    stop_after_upload: bool,
    /// The server compacts its history before the copy comes back.
    compact: bool,
    /// The original had 200 changesets of 10 KB unsynced when the copy was taken (more than
    /// one upload batch): the copy resends them first.
    backlog: bool,
}

/// A client file restored from an older copy of itself (the original synced tasks 2 and 3
/// after the copy was taken) loses neither what the original synced nor what the restored copy
/// writes next, though the copy's new changesets reuse client versions the server already
/// integrated. Each case is caught by another check, named by the message of the reset it
/// starts:
/// - the original uploaded task 3 based on a later server version than the copy has: the
///   server refuses the copy's IDENT (210), also after a compaction of its history;
/// - both were based on the copy's server version, and the copy writes as many changesets:
///   the server finds a resent client version with another origin timestamp (210), also
///   behind a backlog of resends longer than one upload;
/// - the copy writes nothing: the server acknowledges a client version the copy never made,
///   which the client refuses (210).
///
/// In the manual case the copy's first session stops at the error. The file recorded the
/// divergence, so a recovering session started later resets at once and still recovers every
/// changeset of the copy.
#[test]
fn a_client_file_restored_from_an_older_copy_of_itself_loses_nothing() {
    let base = RestoreCase {
        name: "",
        rounds: 1,
        written: &[4, 5, 6],
        expected: &["resent with"],
        manual_first: false,
        stop_after_upload: false,
        compact: false,
        backlog: false,
    };
    let cases = [
        RestoreCase {
            name: "ident",
            rounds: 2,
            expected: &["older than the"],
            ..base
        },
        RestoreCase {
            name: "ident-compacted",
            rounds: 2,
            expected: &["older than the"],
            compact: true,
            ..base
        },
        RestoreCase {
            name: "resend",
            ..base
        },
        RestoreCase {
            name: "resend-backlog",
            backlog: true,
            // The IDENT check finds it first when the original's later upload batches were
            // based on the acknowledgements of its earlier ones (timing).
            expected: &["resent with", "older than the"],
            ..base
        },
        RestoreCase {
            name: "acknowledged",
            written: &[],
            expected: &["whose history ends at"],
            ..base
        },
        RestoreCase {
            name: "resend-stop-after-upload",
            // As many changesets as the original made after the copy: the server's count of
            // this client's versions covers all of the copy's.
            written: &[4, 5],
            stop_after_upload: true,
            ..base
        },
        RestoreCase {
            name: "resend-manual",
            manual_first: true,
            ..base
        },
    ];
    for case in cases {
        restore_case(&case);
    }
}

fn restore_case(case: &RestoreCase) {
    let name = case.name;
    let world = World::new(&format!("restored-client-{name}"));
    let open = |file: &str| world.open(file);
    let wait = Some(Duration::from_secs(120));
    let a = open("a.sqlite");
    let session = world.sync(&a);
    create_task(&a, 1, "before the copy");
    world.block_on(session.wait_for_upload(wait)).unwrap();
    world.block_on(session.wait_for_download(wait)).unwrap();
    drop(session);
    let backlog: Vec<i64> = match case.backlog {
        true => (100..300).collect(),
        false => Vec::new(),
    };
    let big = "x".repeat(10_000);
    for &id in &backlog {
        create_task(&a, id, &big);
    }
    drop(a);
    copy_client_file(&world, "a.sqlite", "copy.sqlite");

    let a = open("a.sqlite");
    if case.rounds == 1 {
        create_task(&a, 2, "after the copy");
        create_task(&a, 3, "after the copy");
    }
    let session = world.sync(&a);
    for id in [2, 3].into_iter().filter(|_| case.rounds == 2) {
        create_task(&a, id, "after the copy");
        world.block_on(session.wait_for_upload(wait)).unwrap();
        world.block_on(session.wait_for_download(wait)).unwrap();
    }
    world.block_on(session.wait_for_upload(wait)).unwrap();
    drop(session);
    drop(a);
    if case.compact {
        for (path, report) in world.server.as_ref().unwrap().compact(0) {
            let report = report.unwrap();
            assert!(report.compacted_through > 0, "{name}: {path}: {report:?}");
        }
    }

    let copy = open("copy.sqlite");
    for &id in case.written {
        create_task(&copy, id, "written by the restored copy");
    }
    if case.manual_first {
        let mut config = world.config(live::token(3600));
        config.client_reset = ClientResetMode::Manual;
        let (session, events) = live::start_recording(&copy, config);
        let stopped = live::wait_for_error(&events, 60, |e| e.code == 210);
        assert!(
            case.expected.iter().any(|e| stopped.message.contains(e)) && !stopped.will_retry,
            "{name}: {stopped:?}"
        );
        live::stop_and_drain(&session, &events);
    }
    let mut first = Vec::new();
    if case.stop_after_upload {
        let (session, events) = world.sync_recording(&copy);
        world.block_on(session.wait_for_upload(wait)).unwrap();
        live::stop_and_drain(&session, &events);
        first = live::errors(&events);
        // Everything the copy wrote is on the server once its upload was acknowledged.
        let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
        for &id in case.written {
            assert!(
                state.object("Task", &tandem::state::Key::Int(id)).is_some(),
                "{name}: task {id} acknowledged, not on the server; errors {first:?}"
            );
        }
    }
    let (session, events) = world.sync_recording(&copy);
    let reset = match case.stop_after_upload {
        true => first.iter().find(|e| e.code == 210).cloned().unwrap(),
        false => live::wait_for_error(&events, 120, |e| e.code == 210),
    };
    let expected = match case.manual_first {
        true => &["its client reset has not finished"][..],
        false => case.expected,
    };
    assert!(
        expected.iter().any(|e| reset.message.contains(e)) && reset.will_retry,
        "{name}: {reset:?}"
    );
    let all: Vec<i64> = (1..=3)
        .chain(case.written.iter().copied())
        .chain(backlog.iter().copied())
        .collect();
    eventually(&format!("{name}: every task on the server"), 120, || {
        let state = world.server.as_ref().unwrap().state_of(live::PATH);
        state.is_some_and(|s| {
            all.iter()
                .all(|&id| s.object("Task", &tandem::state::Key::Int(id)).is_some())
        })
    });
    world.block_on(session.wait_for_upload(wait)).unwrap();
    eventually(&format!("{name}: every task in the copy"), 60, || {
        all.iter().all(|&id| has_task(&copy, id))
    });
    assert!(copy.quarantine().unwrap().is_empty(), "{name}");
    for &id in case.written {
        assert_eq!(
            title(&copy, id),
            Some(string("written by the restored copy")),
            "{name}"
        );
    }
    // A fresh client converges with the copy; no other reset happened.
    let fresh = open("fresh.sqlite");
    let fresh_session = world.sync(&fresh);
    live::converge(&[&copy, &fresh]);
    let errors: Vec<_> = first.into_iter().chain(live::errors(&events)).collect();
    assert_eq!(
        errors.iter().filter(|e| e.code == 210).count(),
        1,
        "{name}: {errors:?}"
    );
    drop(fresh_session);
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
    // Offline on a: an edit of task 1; b deletes task 1 on the restored server.
    let (a, _b, _sb) = diverged_after_a_restore(
        &mut world,
        |tx| {
            let title = Value::String("edited offline".into());
            tx.set("Task", &PrimaryKey::Int(1), "title", title).unwrap();
        },
        |tx| tx.erase("Task", &PrimaryKey::Int(1)).unwrap(),
    );
    let session = start(&world, &a, ClientResetMode::Recover);
    eventually("the reset", 60, || has_task(&a, 2) && !has_task(&a, 1));
    let quarantined = a.quarantine().unwrap();
    assert_eq!(
        quarantined.len(),
        1,
        "the edit of the deleted task: {quarantined:?}"
    );
    let record = &quarantined[0];
    assert_eq!(record.instructions.len(), 1, "{record:?}");
    assert_eq!(record.instructions[0].index, 0);
    assert_eq!(
        record.instructions[0].instruction,
        "Update Task[1].title = \"edited offline\""
    );
    assert_eq!(
        record.instructions[0].reason,
        "Task[1] does not exist on the server (it was deleted there)"
    );
    assert_eq!(record.changeset.len(), 1);
    assert!(
        record.reason.contains("1 of 1 instructions not recovered"),
        "{}",
        record.reason
    );
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

/// Property `prop` of task `id` in `db`, if the task exists.
fn task_field(db: &Database, id: i64, prop: &str) -> Option<Field> {
    let object = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()?;
    object.fields.get(prop).cloned()
}

fn tags(db: &Database, id: i64) -> Option<Field> {
    task_field(db, id, "tags")
}

fn title(db: &Database, id: i64) -> Option<Field> {
    task_field(db, id, "title")
}

fn string_list(values: &[&str]) -> Field {
    Field::List(
        values
            .iter()
            .map(|v| Element::Value(Val::String((*v).into())))
            .collect(),
    )
}

fn string(value: &str) -> Field {
    Field::Value(Val::String(value.into()))
}

/// The reported case: `tags = [x, y]` at the backup, another client makes it `[x, y, z]` after
/// the restore; the resetting client's unsynced `{create Task 3; insert "w" at tags[2]; set
/// Task 1.title}` is recovered whole, the local list winning as a whole.
#[test]
fn recover_keeps_a_transaction_whose_list_index_went_stale() {
    let mut world = World::new("reset-stale-index");
    let (a, b, _sb) = diverged_after_a_restore(
        &mut world,
        |tx| {
            let title = Value::String("created offline".into());
            tx.create("Task", PrimaryKey::Int(3), &[("title", title)])
                .unwrap();
            let w = Value::String("w".into());
            tx.list_insert("Task", &PrimaryKey::Int(1), "tags", 2, w)
                .unwrap();
            let title = Value::String("edited offline".into());
            tx.set("Task", &PrimaryKey::Int(1), "title", title).unwrap();
        },
        |tx| {
            // The restored server has [x, y]; b makes it [x, y, z].
            let z = Value::String("z".into());
            tx.list_insert("Task", &PrimaryKey::Int(1), "tags", 2, z)
                .unwrap();
        },
    );
    assert_eq!(tags(&b, 1), Some(string_list(&["x", "y", "z"])));

    let session = start(&world, &a, ClientResetMode::Recover);
    eventually("the reset", 60, || has_task(&a, 3));
    assert_eq!(tags(&a, 1), Some(string_list(&["x", "y", "w"])));
    assert_eq!(title(&a, 1), Some(string("edited offline")));
    assert_eq!(title(&a, 3), Some(string("created offline")));
    assert!(
        has_task(&a, 2),
        "task 2 (synced after the backup) recovered"
    );
    assert!(a.quarantine().unwrap().is_empty(), "nothing quarantined");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    let task1 = state.object("Task", &Key::Int(1)).unwrap();
    assert_eq!(task1.fields["tags"], string_list(&["x", "y", "w"]));
    assert_eq!(task1.fields["title"], string("edited offline"));
    assert!(state.object("Task", &Key::Int(3)).is_some());
    // The other client converges on the same.
    eventually("b to see the recovered changes", 60, || {
        tags(&b, 1) == Some(string_list(&["x", "y", "w"])) && has_task(&b, 3)
    });
    assert_eq!(title(&b, 1), Some(string("edited offline")));
}

/// The recovery rules on the store: a database standing for the server and a local one start
/// from the same base, change apart, and the local one is reset to the other's snapshot.
mod rules {
    use std::path::PathBuf;
    use std::sync::Arc;

    use tandem::model::{
        ClassSchema, CollectionKind, Link, PrimaryKey, Property, PropertyType, Schema, Value,
    };
    use tandem::state::{Element, Field, Object, Val};
    use tandem::store::{
        Acknowledged, Config, Database, PathStep, ResetBase, ResetOutcome, ResetRecovery,
        WriteTransaction,
    };

    use super::{string, string_list};

    fn schema() -> Schema {
        Schema::new(vec![
            ClassSchema::top_level(
                "Task",
                "_id",
                vec![
                    Property::new("_id", PropertyType::Int),
                    Property::new("title", PropertyType::String),
                    Property::new("count", PropertyType::Int).nullable(),
                    Property::new("tags", PropertyType::String).collection(CollectionKind::List),
                    Property::new("labels", PropertyType::String).collection(CollectionKind::Set),
                    Property::new("props", PropertyType::String)
                        .collection(CollectionKind::Dictionary),
                    Property::link("address", "Address"),
                    Property::link("steps", "Step").collection(CollectionKind::List),
                    Property::link("owner", "Person"),
                    Property::link("watchers", "Person").collection(CollectionKind::List),
                ],
            ),
            ClassSchema::embedded(
                "Address",
                vec![Property::new("street", PropertyType::String)],
            ),
            ClassSchema::embedded("Step", vec![Property::new("name", PropertyType::String)]),
            ClassSchema::top_level(
                "Person",
                "_id",
                vec![Property::new("_id", PropertyType::Int)],
            ),
        ])
        .unwrap()
    }

    struct Case {
        /// `_scratch`'s path.
        dir: PathBuf,
        server: Arc<Database>,
        local: Arc<Database>,
        base_version: u64,
        /// The scratch directory, removed on drop (the last field: after the databases).
        _scratch: tempfile::TempDir,
    }

    fn pk(id: i64) -> PrimaryKey {
        PrimaryKey::Int(id)
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    /// Both databases get `base` as one transaction.
    fn case(name: &str, base: impl Fn(&mut WriteTransaction<'_>)) -> Case {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-reset-rules-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        let open = |file: &str| {
            Arc::new(Database::open(dir.join(file), &schema(), Config::default()).unwrap())
        };
        let (server, local) = (open("server.sqlite"), open("local.sqlite"));
        write(&server, &base);
        write(&local, &base);
        let base_version = local.latest_version().unwrap().map_or(0, |m| m.version);
        Case {
            dir,
            server,
            local,
            base_version,
            _scratch: scratch,
        }
    }

    /// One transaction.
    fn write(db: &Database, f: impl Fn(&mut WriteTransaction<'_>)) {
        let mut tx = db.begin_write().unwrap();
        f(&mut tx);
        tx.commit().unwrap();
    }

    /// Where the tests' resets put the local file.
    const RESET_BASE: ResetBase = ResetBase {
        client_file_ident: 7,
        client_file_ident_salt: 1,
        server_version: 3,
        server_version_salt: 1,
    };

    /// Resets the local database to the server's state, recovering its changes since the base,
    /// and checks that the re-recorded changesets keep the division (one per local changeset
    /// with anything recovered) and, applied to the server's state, give the local result.
    fn reset(case: &Case) -> ResetOutcome {
        reset_rolling_back(case, None)
    }

    /// [`reset`], rolling back local version `rolled_back` if given.
    fn reset_rolling_back(case: &Case, rolled_back: Option<u64>) -> ResetOutcome {
        let snapshot = case.server.export_state().unwrap().snapshot_changeset();
        let recover = case.local.local_changes_after(case.base_version).unwrap();
        let outcome = case
            .local
            .reset_to_snapshot_with(
                &snapshot,
                RESET_BASE,
                ResetRecovery {
                    changesets: recover,
                    rolled_back,
                    acknowledged: None,
                },
            )
            .unwrap();
        let uploaded = case.local.local_changes_after(0).unwrap();
        assert_eq!(uploaded.len(), outcome.recovered);
        let mut server = case.server.export_state().unwrap();
        for changeset in &uploaded {
            server.apply(changeset).unwrap();
        }
        assert_eq!(
            server.objects,
            case.local.export_state().unwrap().objects,
            "the uploaded changesets give the server the recovered state"
        );
        outcome
    }

    fn object(db: &Database, class: &str, id: i64) -> Option<Object> {
        db.read().unwrap().object(class, &pk(id)).unwrap()
    }

    fn field(db: &Database, id: i64, prop: &str) -> Field {
        super::task_field(db, id, prop).unwrap()
    }

    fn step(name: &str) -> Element {
        let mut o = Object::default();
        o.fields.insert("name".into(), string(name));
        Element::Embedded(o)
    }

    fn strings(values: &[&str]) -> Vec<Val> {
        values.iter().map(|v| Val::String((*v).into())).collect()
    }

    fn create_task(tx: &mut WriteTransaction<'_>, id: i64) {
        tx.create("Task", pk(id), &[("title", s("base"))]).unwrap();
    }

    /// Found by the simulation (seed 69, `docs/testing.md`): a server that lost its data
    /// lost the schema with it, and the local history that created the schema was gone (a
    /// previous reset rebuilt it). A reset onto a snapshot that lacks the file's tables and
    /// columns records them first, as the first local changeset, in both modes.
    #[test]
    fn a_reset_onto_a_snapshot_without_the_local_schema_adds_it_first() {
        for recover in [false, true] {
            let case = case(&format!("schema-{recover}"), |tx| create_task(tx, 1));
            let lost = tandem::state::State::new().snapshot_changeset();
            let replay = if recover {
                case.local.local_changes_after(0).unwrap()
            } else {
                Vec::new()
            };
            case.local
                .reset_to_snapshot(&lost, RESET_BASE, replay)
                .unwrap();
            let uploaded = case.local.local_changes_after(0).unwrap();
            assert!(!uploaded.is_empty(), "recover {recover}: nothing to upload");
            assert!(
                uploaded[0]
                    .instructions
                    .iter()
                    .all(|i| i.is_schema_change()),
                "recover {recover}: the first changeset is the schema"
            );
            // On the server (an empty state) the uploads give the local schema and objects.
            let mut server = tandem::state::State::new();
            for changeset in &uploaded {
                server.apply(changeset).unwrap();
            }
            let local = case.local.export_state().unwrap();
            assert_eq!(server.schemas, local.schemas, "recover {recover}");
            assert_eq!(server.objects, local.objects, "recover {recover}");
            assert_eq!(
                object(&case.local, "Task", 1).is_some(),
                recover,
                "recover {recover}: the task is recovered, or discarded"
            );
        }
    }

    #[test]
    fn rule_write_to_an_object_the_server_deleted_is_dropped_and_reported() {
        let c = case("deleted", |tx| {
            create_task(tx, 1);
            create_task(tx, 2);
        });
        write(&c.server, |tx| tx.erase("Task", &pk(1)).unwrap());
        write(&c.local, |tx| {
            tx.set("Task", &pk(1), "title", s("lost")).unwrap();
            tx.add("Task", &pk(1), "count", 1).unwrap();
            tx.set("Task", &pk(2), "title", s("kept")).unwrap();
        });
        let outcome = reset(&c);
        assert_eq!(outcome.recovered, 1);
        assert_eq!(outcome.quarantined, 1);
        assert_eq!(outcome.instructions_not_recovered, 2);
        assert!(object(&c.local, "Task", 1).is_none());
        assert_eq!(field(&c.local, 2, "title"), string("kept"));
        let q = c.local.quarantine().unwrap();
        assert_eq!(q.len(), 1);
        let indices: Vec<usize> = q[0].instructions.iter().map(|i| i.index).collect();
        assert_eq!(indices, [0, 1]);
        for i in &q[0].instructions {
            assert_eq!(
                i.reason,
                "Task[1] does not exist on the server (it was deleted there)"
            );
        }
        assert_eq!(
            q[0].instructions[1].instruction,
            "AddInteger Task[1].count += 1"
        );
        assert_eq!(q[0].changeset.len(), 2);
    }

    #[test]
    fn rule_a_stale_list_index_makes_the_local_list_win_whole() {
        // (what the server does to [x, y], what the local client does, the local list)
        type Op = fn(&mut WriteTransaction<'_>);
        let cases: [(&str, Op, Op, &[&str]); 4] = [
            (
                // Same size, other content: a set at an index that existed before.
                "set",
                |tx| tx.list_set("Task", &pk(1), "tags", 1, s("Y")).unwrap(),
                |tx| tx.list_set("Task", &pk(1), "tags", 0, s("q")).unwrap(),
                &["q", "y"],
            ),
            (
                // The server moved the elements: an erase by index would hit the wrong one.
                "erase",
                |tx| tx.list_move("Task", &pk(1), "tags", 0, 1).unwrap(),
                |tx| tx.list_erase("Task", &pk(1), "tags", 0).unwrap(),
                &["y"],
            ),
            (
                "move",
                |tx| tx.list_insert("Task", &pk(1), "tags", 0, s("a")).unwrap(),
                |tx| tx.list_move("Task", &pk(1), "tags", 1, 0).unwrap(),
                &["y", "x"],
            ),
            (
                // The size changed: an insert's index no longer names the same position.
                "insert",
                |tx| tx.list_erase("Task", &pk(1), "tags", 0).unwrap(),
                |tx| tx.list_insert("Task", &pk(1), "tags", 1, s("m")).unwrap(),
                &["x", "m", "y"],
            ),
        ];
        for (name, server, local, expected) in cases {
            let c = case(&format!("stale-{name}"), |tx| {
                create_task(tx, 1);
                tx.list_insert("Task", &pk(1), "tags", 0, s("x")).unwrap();
                tx.list_insert("Task", &pk(1), "tags", 1, s("y")).unwrap();
            });
            write(&c.server, server);
            write(&c.local, local);
            // A later local changeset is re-recorded as its own changeset.
            write(&c.local, |tx| {
                tx.set("Task", &pk(1), "title", s("later")).unwrap()
            });
            let outcome = reset(&c);
            assert_eq!(field(&c.local, 1, "tags"), string_list(expected), "{name}");
            assert_eq!(outcome.lists_copied, 1, "{name}");
            assert_eq!(
                outcome.recovered, 2,
                "{name}: the division into changesets is kept"
            );
            assert!(c.local.quarantine().unwrap().is_empty(), "{name}");
        }
    }

    /// Found by the simulation (seed 7, `docs/testing.md`): a rejected transaction is rolled
    /// back by a reset that re-applies the later local changesets; where one of them makes the
    /// local list win, the copy must not bring the transaction's elements back. Its inserts
    /// are left out of the copy wherever later changesets moved them; a list whose older
    /// elements it erased, moved or replaced is not copied at all (the later operations the
    /// copy would have covered are quarantined), since the local list no longer holds them.
    #[test]
    fn rule_a_rolled_back_transaction_leaves_nothing_in_a_copied_list() {
        type Op = fn(&mut WriteTransaction<'_>);
        // (the transaction on [x, y], the later local write, the list after the rollback,
        // whether the later write's list operation is quarantined); the server erased x.
        let cases: [(&str, Op, Op, &[&str], bool); 5] = [
            (
                "inserts",
                |tx| {
                    tx.list_insert("Task", &pk(1), "tags", 1, s("t")).unwrap();
                    tx.list_insert("Task", &pk(1), "tags", 0, s("u")).unwrap();
                },
                // [u, x, t, y] becomes [u, x, m, t, y].
                |tx| tx.list_insert("Task", &pk(1), "tags", 2, s("m")).unwrap(),
                &["x", "m", "y"],
                false,
            ),
            (
                "moved-later",
                |tx| tx.list_insert("Task", &pk(1), "tags", 2, s("t")).unwrap(),
                // [x, y, t] becomes [t, x, y, m].
                |tx| {
                    tx.list_move("Task", &pk(1), "tags", 2, 0).unwrap();
                    tx.list_insert("Task", &pk(1), "tags", 3, s("m")).unwrap();
                },
                &["x", "y", "m"],
                false,
            ),
            (
                "written-later",
                |tx| tx.list_insert("Task", &pk(1), "tags", 0, s("t")).unwrap(),
                // [t, x, y] becomes [T, x, m, y]: the write went to the transaction's element.
                |tx| {
                    tx.list_set("Task", &pk(1), "tags", 0, s("T")).unwrap();
                    tx.list_insert("Task", &pk(1), "tags", 2, s("m")).unwrap();
                },
                &["x", "m", "y"],
                false,
            ),
            (
                "erased-own",
                |tx| {
                    tx.list_insert("Task", &pk(1), "tags", 0, s("t")).unwrap();
                    tx.list_insert("Task", &pk(1), "tags", 0, s("u")).unwrap();
                    tx.list_erase("Task", &pk(1), "tags", 1).unwrap();
                },
                // [u, x, y] becomes [u, m, x, y].
                |tx| tx.list_insert("Task", &pk(1), "tags", 1, s("m")).unwrap(),
                &["m", "x", "y"],
                false,
            ),
            (
                // The transaction erased y, which the server still has: the local list cannot
                // give it back, so it is not copied; the server's list stays.
                "erased-older",
                |tx| {
                    tx.list_erase("Task", &pk(1), "tags", 1).unwrap();
                    tx.list_insert("Task", &pk(1), "tags", 0, s("t")).unwrap();
                },
                |tx| tx.list_insert("Task", &pk(1), "tags", 0, s("m")).unwrap(),
                &["y"],
                true,
            ),
        ];
        for (name, transaction, later, expected, quarantined) in cases {
            let c = case(&format!("rollback-{name}"), |tx| {
                create_task(tx, 1);
                tx.list_insert("Task", &pk(1), "tags", 0, s("x")).unwrap();
                tx.list_insert("Task", &pk(1), "tags", 1, s("y")).unwrap();
            });
            write(&c.server, |tx| {
                tx.list_erase("Task", &pk(1), "tags", 0).unwrap()
            });
            write(&c.local, transaction);
            let rolled_back = c.local.latest_version().unwrap().unwrap().version;
            write(&c.local, |tx| {
                tx.set("Task", &pk(1), "title", s("later")).unwrap();
                later(tx);
            });
            reset_rolling_back(&c, Some(rolled_back));
            assert_eq!(field(&c.local, 1, "tags"), string_list(expected), "{name}");
            assert_eq!(field(&c.local, 1, "title"), string("later"), "{name}");
            let kept = c.local.quarantine().unwrap();
            assert_eq!(!kept.is_empty(), quarantined, "{name}: {kept:?}");
            if quarantined {
                let why = format!("{kept:?}");
                assert!(why.contains("rolled-back transaction"), "{name}: {why}");
            }
        }
    }

    /// Found by the simulation (seed 63, `docs/testing.md`): a reset started the history
    /// afresh, so the local changesets the server had integrated left the recovery window, and
    /// a server that lost them later (a restore with no backup) could not get them back. Now a
    /// reset keeps them as the inherited window under their old client file ident; the next
    /// reset recovers those the server says it lacks, and only those (no add counted twice).
    #[test]
    fn rule_a_reset_keeps_the_acknowledged_window_for_a_server_that_loses_it_later() {
        let c = case("inherited", |tx| create_task(tx, 1));
        // The local file's acknowledged write, under client file ident 5; the server has it.
        c.local.set_client_file_ident(5, 9).unwrap();
        let add_five = |tx: &mut WriteTransaction<'_>| {
            tx.set("Task", &pk(1), "count", Value::Int(0)).unwrap();
            tx.add("Task", &pk(1), "count", 5).unwrap();
        };
        write(&c.local, add_five);
        write(&c.server, add_five);
        let acked = c.local.latest_version().unwrap().unwrap().version;
        c.local.acknowledge_upload(acked).unwrap();
        let has_it = c.server.export_state().unwrap().snapshot_changeset();
        let acknowledged = |through, inherited: Vec<u64>| ResetRecovery {
            acknowledged: Some(Acknowledged { through, inherited }),
            ..ResetRecovery::default()
        };
        // A reset the server had everything for: nothing to recover, the window inherited.
        c.local
            .reset_to_snapshot_with(&has_it, RESET_BASE, acknowledged(acked, vec![]))
            .unwrap();
        assert!(c.local.local_changes_after(0).unwrap().is_empty());
        assert_eq!(c.local.inherited_idents().unwrap(), vec![(5, 9)]);
        let inherited = c.local.inherited_changesets().unwrap();
        assert_eq!(
            inherited.len(),
            3,
            "the schema, the base, the add: {inherited:?}"
        );
        assert!(inherited.iter().all(|(ident, _)| *ident == 5));
        // A server that still has ident 5's changesets: nothing re-applied, the window kept.
        c.local
            .reset_to_snapshot_with(&has_it, RESET_BASE, acknowledged(0, vec![acked]))
            .unwrap();
        assert!(c.local.local_changes_after(0).unwrap().is_empty());
        assert_eq!(field(&c.local, 1, "count"), Field::Value(Val::Int(5)));
        assert_eq!(c.local.inherited_changesets().unwrap().len(), 3);
        // A server that lost everything: all three are recovered (the task and its count,
        // added once) and re-recorded for upload; the window gives them up.
        let lost = tandem::state::State::new().snapshot_changeset();
        let outcome = c
            .local
            .reset_to_snapshot_with(&lost, RESET_BASE, acknowledged(0, vec![0]))
            .unwrap();
        assert_eq!(outcome.recovered, 3, "{outcome:?}");
        assert_eq!(field(&c.local, 1, "count"), Field::Value(Val::Int(5)));
        assert!(c.local.inherited_changesets().unwrap().is_empty());
        let uploads = c.local.local_changes_after(0).unwrap();
        let mut server = tandem::state::State::new();
        for changeset in &uploads {
            server.apply(changeset).unwrap();
        }
        assert_eq!(server.objects, c.local.export_state().unwrap().objects);
    }

    #[test]
    fn rule_list_ops_on_elements_the_recovery_created_apply_by_index() {
        let c = case("by-index", |tx| {
            create_task(tx, 1);
            tx.list_insert("Task", &pk(1), "tags", 0, s("x")).unwrap();
            tx.list_insert("Task", &pk(1), "tags", 1, s("y")).unwrap();
        });
        // The server changes something else: task 1's list keeps the size the local client saw.
        write(&c.server, |tx| {
            tx.set("Task", &pk(1), "title", s("server")).unwrap()
        });
        write(&c.local, |tx| {
            create_task(tx, 5);
            tx.list_insert("Task", &pk(5), "tags", 0, s("a")).unwrap();
            tx.list_insert("Task", &pk(5), "tags", 1, s("b")).unwrap();
            // An insert into a list that still has the size the local client saw.
            tx.list_insert("Task", &pk(1), "tags", 1, s("w")).unwrap();
        });
        write(&c.local, |tx| {
            tx.list_move("Task", &pk(5), "tags", 1, 0).unwrap();
            tx.list_set("Task", &pk(5), "tags", 1, s("A")).unwrap();
            tx.list_insert("Task", &pk(5), "tags", 2, s("c")).unwrap();
            tx.list_erase("Task", &pk(5), "tags", 0).unwrap();
            // The element the recovery inserted into task 1's list is known too.
            tx.list_set("Task", &pk(1), "tags", 1, s("W")).unwrap();
        });
        let outcome = reset(&c);
        assert_eq!(outcome.lists_copied, 0, "nothing copied: all by index");
        assert_eq!(outcome.recovered, 2);
        assert_eq!(field(&c.local, 5, "tags"), string_list(&["A", "c"]));
        assert_eq!(field(&c.local, 1, "tags"), string_list(&["x", "W", "y"]));
        assert_eq!(field(&c.local, 1, "title"), string("server"));
        let history = c.local.local_changes_after(0).unwrap();
        assert!(
            history
                .iter()
                .flat_map(|cs| &cs.instructions)
                .all(|i| !matches!(i, tandem::changeset::Instruction::Clear(_))),
            "no list was copied"
        );
        assert!(c.local.quarantine().unwrap().is_empty());
    }

    #[test]
    fn rule_set_and_dictionary_ops_recover_by_value_and_key() {
        let c = case("set-dict", |tx| {
            create_task(tx, 1);
            tx.set_insert("Task", &pk(1), "labels", s("a")).unwrap();
            tx.set_insert("Task", &pk(1), "labels", s("b")).unwrap();
            tx.dict_set("Task", &pk(1), "props", "k1", s("v1")).unwrap();
            tx.dict_set("Task", &pk(1), "props", "k2", s("v2")).unwrap();
        });
        write(&c.server, |tx| {
            tx.set_insert("Task", &pk(1), "labels", s("c")).unwrap();
            tx.set_erase("Task", &pk(1), "labels", s("a")).unwrap();
            tx.dict_set("Task", &pk(1), "props", "k3", s("server"))
                .unwrap();
            tx.dict_erase("Task", &pk(1), "props", "k1").unwrap();
        });
        write(&c.local, |tx| {
            tx.set_insert("Task", &pk(1), "labels", s("d")).unwrap();
            tx.set_erase("Task", &pk(1), "labels", s("b")).unwrap();
            tx.dict_set("Task", &pk(1), "props", "k2", s("local"))
                .unwrap();
            tx.dict_erase("Task", &pk(1), "props", "k1").unwrap();
            tx.dict_set("Task", &pk(1), "props", "k4", s("local"))
                .unwrap();
        });
        let outcome = reset(&c);
        assert_eq!(outcome.instructions_not_recovered, 0);
        assert_eq!(
            field(&c.local, 1, "labels"),
            Field::Set(strings(&["c", "d"]))
        );
        let Field::Dictionary(props) = field(&c.local, 1, "props") else {
            panic!("props is a dictionary")
        };
        let props: Vec<(String, Element)> = props.into_iter().collect();
        assert_eq!(
            props,
            [
                ("k2".into(), Element::Value(Val::String("local".into()))),
                ("k3".into(), Element::Value(Val::String("server".into()))),
                ("k4".into(), Element::Value(Val::String("local".into()))),
            ]
        );
        assert!(c.local.quarantine().unwrap().is_empty());
    }

    #[test]
    fn rule_embedded_objects() {
        let c = case("embedded", |tx| {
            create_task(tx, 1);
            tx.create_embedded("Task", &pk(1), "address").unwrap();
            tx.set_at(
                "Task",
                &pk(1),
                "address",
                &[PathStep::Name("street".into())],
                s("s"),
            )
            .unwrap();
            for (i, name) in ["a", "b"].into_iter().enumerate() {
                tx.list_push_embedded("Task", &pk(1), "steps").unwrap();
                let at = [PathStep::Index(i as u32), PathStep::Name("name".into())];
                tx.set_at("Task", &pk(1), "steps", &at, s(name)).unwrap();
            }
        });
        write(&c.server, |tx| {
            // The server removes the embedded address and appends a step.
            tx.set("Task", &pk(1), "address", Value::Null).unwrap();
            tx.list_push_embedded("Task", &pk(1), "steps").unwrap();
            let at = [PathStep::Index(2), PathStep::Name("name".into())];
            tx.set_at("Task", &pk(1), "steps", &at, s("server"))
                .unwrap();
        });
        write(&c.local, |tx| {
            // Through the removed embedded object: not recoverable.
            tx.set_at(
                "Task",
                &pk(1),
                "address",
                &[PathStep::Name("street".into())],
                s("l"),
            )
            .unwrap();
            // Through an element that existed before: the local list wins whole.
            let at = [PathStep::Index(0), PathStep::Name("name".into())];
            tx.set_at("Task", &pk(1), "steps", &at, s("A")).unwrap();
            // A new task whose embedded list the recovery builds itself: by index.
            create_task(tx, 2);
            tx.list_push_embedded("Task", &pk(2), "steps").unwrap();
            let at = [PathStep::Index(0), PathStep::Name("name".into())];
            tx.set_at("Task", &pk(2), "steps", &at, s("new")).unwrap();
        });
        let outcome = reset(&c);
        assert_eq!(outcome.lists_copied, 1);
        assert_eq!(field(&c.local, 1, "address"), Field::Embedded(None));
        assert_eq!(
            field(&c.local, 1, "steps"),
            Field::List(vec![step("A"), step("b")])
        );
        assert_eq!(field(&c.local, 2, "steps"), Field::List(vec![step("new")]));
        let q = c.local.quarantine().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].instructions.len(), 1, "{:?}", q[0]);
        assert_eq!(q[0].instructions[0].index, 0);
        assert!(
            q[0].instructions[0]
                .reason
                .contains("does not apply to the server's state"),
            "{}",
            q[0].instructions[0].reason
        );
    }

    #[test]
    fn rule_add_integer_is_recovered_as_an_add() {
        let c = case("add", |tx| {
            create_task(tx, 1);
            create_task(tx, 2);
            tx.set("Task", &pk(1), "count", Value::Int(10)).unwrap();
            tx.set("Task", &pk(2), "count", Value::Int(10)).unwrap();
        });
        write(&c.server, |tx| {
            tx.add("Task", &pk(1), "count", 5).unwrap();
            tx.set("Task", &pk(2), "count", Value::Null).unwrap();
        });
        write(&c.local, |tx| {
            tx.add("Task", &pk(1), "count", 1).unwrap();
            tx.add("Task", &pk(2), "count", 1).unwrap();
        });
        let outcome = reset(&c);
        assert_eq!(field(&c.local, 1, "count"), Field::Value(Val::Int(16)));
        assert_eq!(field(&c.local, 2, "count"), Field::Value(Val::Null));
        assert_eq!(outcome.instructions_not_recovered, 1);
        let q = c.local.quarantine().unwrap();
        assert_eq!(q[0].instructions[0].index, 1);
        assert_eq!(
            q[0].instructions[0].reason,
            "Task[2].count is null on the server: there is nothing to add to"
        );
        let recovered = c.local.local_changes_after(0).unwrap();
        assert!(matches!(
            recovered[0].instructions[..],
            [tandem::changeset::Instruction::AddInteger(_)]
        ));
    }

    #[test]
    fn a_partly_recoverable_changeset_keeps_its_recoverable_instructions() {
        let c = case("partial", |tx| {
            create_task(tx, 1);
            create_task(tx, 2);
            tx.create("Person", pk(8), &[]).unwrap();
            tx.create("Person", pk(9), &[]).unwrap();
        });
        write(&c.server, |tx| {
            tx.erase("Task", &pk(1)).unwrap();
            tx.erase("Person", &pk(9)).unwrap();
        });
        let link = |id| {
            Value::Link(Link {
                class: "Person".into(),
                key: pk(id),
            })
        };
        write(&c.local, |tx| {
            create_task(tx, 3); // 0 CreateObject, 1 Update title
            tx.set("Task", &pk(1), "title", s("lost")).unwrap(); // 2
            tx.set("Task", &pk(2), "owner", link(9)).unwrap(); // 3: null instead
            tx.list_insert("Task", &pk(2), "watchers", 0, link(9))
                .unwrap(); // 4: dropped
            tx.list_insert("Task", &pk(2), "watchers", 0, link(8))
                .unwrap(); // 5
            tx.add("Task", &pk(2), "count", 2).unwrap(); // 6: count is null: dropped
            tx.set("Task", &pk(2), "title", s("kept")).unwrap(); // 7
        });
        let outcome = reset(&c);
        assert_eq!(outcome.recovered, 1);
        assert_eq!(field(&c.local, 3, "title"), string("base"));
        assert_eq!(field(&c.local, 2, "title"), string("kept"));
        assert_eq!(field(&c.local, 2, "owner"), Field::Value(Val::Null));
        assert_eq!(
            field(&c.local, 2, "watchers"),
            Field::List(vec![Element::Value(Val::Link(
                "Person".into(),
                tandem::state::Key::Int(8)
            ))])
        );
        let q = c.local.quarantine().unwrap();
        assert_eq!(q.len(), 1);
        let reported: Vec<(usize, &str)> = q[0]
            .instructions
            .iter()
            .map(|i| (i.index, i.reason.as_str()))
            .collect();
        assert_eq!(
            reported,
            [
                (
                    2,
                    "Task[1] does not exist on the server (it was deleted there)"
                ),
                (
                    3,
                    "links to Person[9], which does not exist on the server: null written instead"
                ),
                (4, "links to Person[9], which does not exist on the server"),
                (
                    6,
                    "Task[2].count is null on the server: there is nothing to add to"
                ),
            ]
        );
        assert!(
            q[0].reason.starts_with("4 of 8 instructions not recovered"),
            "{}",
            q[0].reason
        );
    }

    /// A fresh file's only local change is its schema changeset (what `open_synced` recovers):
    /// it is recovered against the server's schema alone, without loading the server's
    /// objects: a schema with a class the server lacks applies, and the objects are the
    /// server's. (A schema that clashes with the server's is refused before recovery, when the
    /// snapshot is applied to the file's tables.)
    #[test]
    fn rule_a_schema_only_change_recovers_against_the_servers_schema() {
        let base = case("schema-only", |tx| create_task(tx, 1));
        write(&base.server, |tx| create_task(tx, 2));
        let snapshot = base.server.export_state().unwrap().snapshot_changeset();
        // The objects by class, without empty classes (a local class the server lacks).
        let objects = |db: &Database| {
            let mut objects = db.export_state().unwrap().objects;
            objects.retain(|_, table| !table.is_empty());
            objects
        };
        let server_objects = objects(&base.server);
        let reset_fresh = |name: &str, schema: Schema| {
            let db = Database::open(base.dir.join(name), &schema, Config::default()).unwrap();
            let recover = db.local_changes_after(0).unwrap();
            assert!(
                !recover.is_empty(),
                "the fresh file has its schema changeset"
            );
            let outcome = db
                .reset_to_snapshot(&snapshot, RESET_BASE, recover)
                .unwrap();
            assert_eq!(objects(&db), server_objects, "{name}");
            (outcome, db)
        };
        // The same schema, plus a class the server does not have: it applies.
        let mut classes = schema().classes().to_vec();
        classes.push(ClassSchema::top_level(
            "Note",
            "_id",
            vec![Property::new("_id", PropertyType::Int)],
        ));
        let (outcome, db) = reset_fresh("fits.sqlite", Schema::new(classes).unwrap());
        assert_eq!((outcome.recovered, outcome.quarantined), (1, 0));
        assert!(db.quarantine().unwrap().is_empty());
    }
}
