//! The server file's materialized state in SQLite tables (`tandem::server::state`): it equals
//! what the stored history replays to after random uploads from several clients, survives a
//! crash between the history's commit and its own (a stale `state_version` marker), a state
//! file ahead of its history or made for another history, and a changeset that does not apply
//! changes neither the history nor the state.
#![cfg(feature = "server")]

mod harness;

use std::path::{Path, PathBuf};

use harness::server_client::Client;
use harness::{Entropy, SeededRng};
use tandem::changeset::{
    AddTable, Changeset, ChangesetMeta, Instruction, PayloadType, PrimaryKey, PrimaryKeySpec,
    TableKind,
};
use tandem::protocol::{ErrorCode, UploadEntry};
use tandem::server::state::{state_path, ServerState};
use tandem::server::ServerFile;
use tandem::state::State;

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-state-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("server.sqlite");
    (dir, path)
}

/// The state file's committed `state_version` (the server file must be closed).
fn committed_version(path: &Path, salt: u64) -> u64 {
    ServerState::open(state_path(path), salt).unwrap().version()
}

/// Copies an SQLite file with its WAL (absent files are skipped; `to`'s stale ones removed).
fn copy_db(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let (f, t) = (with_suffix(from, suffix), with_suffix(to, suffix));
        let _ = std::fs::remove_file(&t);
        if f.exists() {
            std::fs::copy(&f, &t).unwrap();
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Every check of the state against the history: the tables equal the replay of the stored
/// history, and the STATE snapshot built from them, one object at a time, has the bytes of the
/// in-memory snapshot of that state and recreates it.
fn assert_consistent(server: &mut ServerFile, context: &str) {
    let state = server.state().unwrap();
    assert_eq!(
        state,
        server.replay().unwrap(),
        "{context}: state != history"
    );
    let (_, bytes) = server.snapshot(0).unwrap();
    assert_eq!(
        *bytes,
        tandem::state::snapshot(&state).encode(),
        "{context}: snapshot bytes"
    );
    let mut bootstrapped = State::new();
    bootstrapped
        .apply(&Changeset::decode(&bytes).unwrap())
        .unwrap();
    assert_eq!(
        bootstrapped.objects, state.objects,
        "{context}: snapshot != state"
    );
}

#[test]
fn the_state_is_what_the_history_replays_to_after_random_uploads() {
    let mut checks = 0;
    for round in 0..4u64 {
        let (_dir, path) = temp(&format!("random-{round}"));
        let mut server = ServerFile::open(&path).unwrap();
        let mut clients: Vec<Client> = (0..3).map(|_| Client::new(&mut server)).collect();
        let mut rng = SeededRng::new(round + 700);
        for step in 0..240 {
            let c = rng.below(3) as usize;
            match rng.below(4) {
                0 | 1 => clients[c].modify(&mut rng),
                2 => clients[c].upload(&mut server).unwrap(),
                _ => clients[c].download(&server),
            }
            if step % 40 == 39 {
                assert_consistent(&mut server, &format!("round {round} step {step}"));
                checks += 1;
            }
            if step % 80 == 79 {
                // A reopen reads the tables back without replaying anything.
                let before = server.state().unwrap();
                let salt = server.salt();
                let latest = server.latest_version();
                drop(server);
                assert_eq!(committed_version(&path, salt), latest);
                server = ServerFile::open(&path).unwrap();
                assert_eq!(server.state().unwrap(), before, "round {round}: reopen");
            }
        }
        for _ in 0..2 {
            for c in clients.iter_mut() {
                c.upload(&mut server).unwrap();
            }
            for c in clients.iter_mut() {
                c.download(&server);
            }
        }
        let state = server.state().unwrap();
        assert!(state.object_count() > 0, "round {round}: nothing written");
        for c in &clients {
            assert_eq!(c.state, state, "round {round}: client {}", c.ident);
        }
        assert_consistent(&mut server, &format!("round {round} end"));
        checks += 1;
    }
    assert_eq!(checks, 4 * 7);
}

/// Uploads `n` random changesets of one client and returns the server's state afterwards.
fn write(server: &mut ServerFile, client: &mut Client, rng: &mut SeededRng, n: usize) -> State {
    let goal = client.history.len() + n;
    for _ in 0..50 * n {
        if client.history.len() == goal {
            break;
        }
        client.modify(rng);
    }
    assert_eq!(
        client.history.len(),
        goal,
        "the generator made too few changesets"
    );
    client.upload(server).unwrap();
    server.state().unwrap()
}

#[test]
fn a_stale_state_file_is_caught_up_from_the_history() {
    let (_dir, path) = temp("stale");
    let saved = path.with_file_name("saved-state");
    let saved_history = path.with_file_name("saved-history");
    let mut rng = SeededRng::new(31);
    let mut server = ServerFile::open(&path).unwrap();
    let salt = server.salt();
    let mut client = Client::new(&mut server);
    write(&mut server, &mut client, &mut rng, 30);
    let early = server.latest_version();
    drop(server);
    copy_db(&state_path(&path), &saved);
    copy_db(&path, &saved_history);

    let mut server = ServerFile::open(&path).unwrap();
    let late_state = write(&mut server, &mut client, &mut rng, 30);
    let late = server.latest_version();
    assert!(
        late > early,
        "the second batch integrated nothing: {early} {late} {} {}",
        client.history.len(),
        client.acked
    );
    drop(server);

    // A crash after the history's commit and before the state's: the state file holds the
    // tables and marker of `early`, the history goes to `late`.
    copy_db(&saved, &state_path(&path));
    assert_eq!(committed_version(&path, salt), early);
    let mut server = ServerFile::open(&path).unwrap();
    assert_eq!(server.latest_version(), late);
    assert_eq!(server.state().unwrap(), late_state, "not caught up");
    assert_consistent(&mut server, "after catch-up");
    // ... and the caught-up state is committed, and keeps taking uploads.
    let later_state = write(&mut server, &mut client, &mut rng, 10);
    let later = server.latest_version();
    drop(server);
    assert_eq!(committed_version(&path, salt), later);
    let mut server = ServerFile::open(&path).unwrap();
    assert_eq!(server.state().unwrap(), later_state);
    assert_consistent(&mut server, "after more uploads");
    drop(server);
    let late_file_state = path.with_file_name("late-state");
    copy_db(&state_path(&path), &late_file_state);

    // A state file ahead of its history (an older copy of the history put back under the same
    // salt): rebuilt from the history.
    copy_db(&saved_history, &path);
    copy_db(&late_file_state, &state_path(&path));
    assert_eq!(committed_version(&path, salt), later);
    let mut server = ServerFile::open(&path).unwrap();
    assert_eq!(server.latest_version(), early);
    assert_consistent(&mut server, "after a state ahead of the history");
    drop(server);
    assert_eq!(committed_version(&path, salt), early);

    // A state file of another history (the server file was deleted and made again): ignored.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(&path, suffix));
    }
    let mut server = ServerFile::open(&path).unwrap();
    assert_ne!(server.salt(), salt);
    assert_eq!(server.latest_version(), 0);
    assert_eq!(server.state().unwrap(), State::new());
    assert_consistent(&mut server, "after a new history");
}

fn add_table(name: &str, key_type: PayloadType) -> Changeset {
    let mut cs = Changeset::new();
    let table = cs.intern(name);
    let field = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field,
            key_type,
            nullable: false,
        }),
    }));
    cs
}

fn create(name: &str, key: i64) -> Changeset {
    let mut cs = Changeset::new();
    let table = cs.intern(name);
    cs.push(Instruction::CreateObject {
        table,
        object: PrimaryKey::Int(key),
    });
    cs
}

fn entry(cs: &Changeset, client_version: u64, base: u64) -> UploadEntry {
    let mut cs = cs.clone();
    cs.meta = ChangesetMeta {
        version: client_version,
        last_integrated_remote_version: base,
        origin_timestamp: client_version,
        origin_file_ident: 0,
    };
    UploadEntry::from_changeset(&cs)
}

#[test]
fn a_changeset_that_does_not_apply_changes_neither_history_nor_state() {
    let (_dir, path) = temp("refused");
    let mut server = ServerFile::open(&path).unwrap();
    let salt = server.salt();
    let (a, _) = server.allocate_client_file().unwrap();
    let (b, _) = server.allocate_client_file().unwrap();
    server
        .integrate_upload(
            a,
            &[
                entry(&add_table("Item", PayloadType::Int), 1, 0),
                entry(&create("Item", 1), 2, 0),
            ],
        )
        .unwrap();
    let before = (server.latest_version(), server.state().unwrap());

    // Each refused upload, alone and after a good changeset of the same upload (which is kept):
    // the code, and what is left.
    let refused: [(&str, Changeset, ErrorCode); 4] = [
        (
            "object of a table nobody created",
            create("Nope", 1),
            ErrorCode::BadChangeset,
        ),
        (
            "a table whose name differs from an existing one only in ASCII case",
            add_table("ITEM", PayloadType::Int),
            ErrorCode::InvalidSchemaChange,
        ),
        (
            "the table again with another primary key type",
            add_table("Item", PayloadType::String),
            ErrorCode::InvalidSchemaChange,
        ),
        (
            "an object, then the table again with another key type",
            {
                let mut cs = add_table("Item", PayloadType::String);
                let table = cs.intern("Item");
                let add = cs.instructions.pop().unwrap();
                cs.push(Instruction::CreateObject {
                    table,
                    object: PrimaryKey::Int(7),
                });
                cs.push(add);
                cs
            },
            ErrorCode::InvalidSchemaChange,
        ),
    ];
    let mut next = 1;
    for (what, bad, code) in &refused {
        let base = server.latest_version();
        let err = server
            .integrate_upload(b, &[entry(bad, next, base)])
            .unwrap_err();
        assert_eq!(err.code, *code, "{what}: {err:?}");
        assert_eq!(
            (server.latest_version(), server.state().unwrap()),
            before,
            "{what}: alone"
        );
        assert_consistent(&mut server, what);
    }
    let mut kept = before.1.clone();
    for (i, (what, bad, code)) in refused.iter().enumerate() {
        let good = create("Item", 100 + i as i64);
        let base = server.latest_version();
        let err = server
            .integrate_upload(b, &[entry(&good, next, base), entry(bad, next + 1, base)])
            .unwrap_err();
        assert_eq!(err.code, *code, "{what}: {err:?}");
        kept.apply(&good).unwrap();
        next += 1;
        assert_eq!(server.latest_version(), base + 1, "{what}: good one kept");
        assert_eq!(server.state().unwrap(), kept, "{what}: after a good one");
        assert_consistent(&mut server, what);
    }
    let latest = server.latest_version();
    drop(server);
    // Nothing refused is left pending in the state file.
    assert_eq!(committed_version(&path, salt), latest);
    let mut server = ServerFile::open(&path).unwrap();
    assert_eq!(server.state().unwrap(), kept);
    assert_consistent(&mut server, "reopened");
}

/// The schema generation (what flexible sync's compiled-query cache is keyed on) moves when
/// the schema may have changed, and only then: a schema changeset, a failing changeset, a
/// rollback, a reopen; data changesets leave it, so a fan-out compiles each query once.
#[test]
fn the_schema_generation_moves_exactly_when_the_schema_may_change() {
    let (_dir, path) = temp("generation");
    let mut state = ServerState::open(state_path(&path), 7).unwrap();
    let opened = state.schema_generation();
    state
        .apply(&add_table("Item", PayloadType::Int), 1)
        .unwrap();
    let after_schema = state.schema_generation();
    assert_ne!(after_schema, opened);
    assert!(state.schemas().contains_key("Item"));
    let shared = state.shared_schemas();
    state.apply(&create("Item", 1), 2).unwrap();
    state.apply(&create("Item", 2), 3).unwrap();
    assert_eq!(state.schema_generation(), after_schema, "data changesets");
    // A changeset that does not apply (an object of a class that does not exist).
    assert!(state.apply(&create("Nope", 1), 4).is_err());
    let after_error = state.schema_generation();
    assert_ne!(after_error, after_schema);
    state.commit().unwrap();
    assert_eq!(state.schema_generation(), after_error, "a commit");
    // A schema change leaves a copy taken before it as it was.
    state
        .apply(&add_table("Other", PayloadType::String), 4)
        .unwrap();
    assert!(state.schemas().contains_key("Other"));
    assert!(!shared.contains_key("Other"));
    let before_rollback = state.schema_generation();
    state.rollback();
    assert_ne!(state.schema_generation(), before_rollback);
    assert!(!state.schemas().contains_key("Other"));
    drop(state);
    let reopened = ServerState::open(state_path(&path), 7).unwrap();
    assert_ne!(reopened.schema_generation(), before_rollback);
    assert!(reopened.schemas().contains_key("Item"));
}

/// A state file that is not a database is started again from the history; one that cannot be
/// opened now (here another connection holds its write lock; on a server, a full disk or an
/// I/O error) is an error and is left as it is: its flexible sync records (views,
/// subscription sets) are not derived from the history, and discarding them sent every client
/// all of its objects again as whole copies (flexible seed 1558 of the simulation).
#[test]
fn a_state_file_is_started_again_only_when_it_is_not_a_database() {
    let (_dir, path) = temp("unreadable");
    let mut rng = SeededRng::new(5);
    let mut server = ServerFile::open(&path).unwrap();
    let mut client = Client::new(&mut server);
    let state = write(&mut server, &mut client, &mut rng, 10);
    drop(server);
    let state_file = state_path(&path);

    // Locked: refused, and the record a flexible sync session made is still there after.
    let holder = rusqlite::Connection::open(&state_file).unwrap();
    holder
        .execute(
            "INSERT INTO _flx_query (client, version, body, bootstrapped_at) VALUES (7, 1, '{}', 1)",
            [],
        )
        .unwrap();
    // Out of WAL mode, an exclusive lock keeps every other connection from reading.
    holder
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; UPDATE _flx_query SET body = body")
        .unwrap();
    let refused = ServerFile::open(&path)
        .err()
        .expect("opened a state file another connection holds locked");
    assert!(!refused.message.is_empty());
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let server = ServerFile::open(&path).unwrap();
    drop(server);
    let kept: i64 = rusqlite::Connection::open(&state_file)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM _flx_query WHERE client = 7",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 1, "the state file was discarded");

    // Not a database: started again from the history.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(&state_file, suffix));
    }
    std::fs::write(&state_file, b"not a database, not even close to one").unwrap();
    let server = ServerFile::open(&path).unwrap();
    assert_eq!(
        server.state().unwrap(),
        state,
        "not rebuilt from the history"
    );
}
