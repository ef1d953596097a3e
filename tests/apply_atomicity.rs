//! Atomicity of every applier on failure: a changeset that one instruction makes unappliable
//! leaves the reference state (`State::apply`), the SQLite store (`Database::apply_remote`) and
//! the server (`ServerFile::integrate_upload`, whose materialized state STATE snapshots are built
//! from) exactly as they were, whatever the failing instruction's type and position.
//!
//! Random valid changesets of several generated transactions (data and schema instructions
//! mixed) are broken in turn at every position, in two ways: a poison instruction inserted
//! there (each poison kind fails on any state), and the instruction there corrupted in place.
//! Every broken changeset must be refused by all three appliers with the same kind of error,
//! and leave each of them unchanged; after every refused upload the server's state must equal a
//! replay of its stored history.

mod harness;

use std::path::PathBuf;

use harness::{generate, Entropy, SeededRng};
use tandem::changeset::{
    Changeset, ChangesetMeta, ColumnCollection, ColumnType, FieldPath, Instruction, InternString,
    PathElement, Payload, PayloadType, PrimaryKey, PrimaryKeySpec, TableKind, Update,
};
use tandem::model::Schema;
use tandem::state::{ApplyError, State};
use tandem::store::{Config, Database, StoreError};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-atomic-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

/// Appends `from`'s instructions to `to`, re-interning their strings.
fn append(to: &mut Changeset, from: &Changeset) {
    for instruction in &from.instructions {
        let mut moved = instruction.clone();
        moved.map_strings(&mut |s| to.intern(from.string(s).unwrap_or("")));
        to.push(moved);
    }
}

/// A valid changeset of several generated transactions on `state`; now and then with a fresh
/// table added in the middle, so that failures after a schema instruction are covered too.
fn long_changeset(state: &State, rng: &mut SeededRng, serial: u32) -> Changeset {
    let mut working = state.clone();
    let mut cs = Changeset::new();
    let parts = 2 + rng.below(4);
    for part in 0..parts {
        if part == 1 && rng.chance(3) {
            let mut add = Changeset::new();
            let table = add.intern(&format!("Fresh{serial}"));
            let field = add.intern("_id");
            add.push(Instruction::AddTable(tandem::changeset::AddTable {
                table,
                kind: TableKind::TopLevel(PrimaryKeySpec {
                    field,
                    key_type: PayloadType::Int,
                    nullable: false,
                }),
            }));
            working.apply(&add).unwrap();
            append(&mut cs, &add);
        }
        let part = generate(&working, rng);
        working.apply(&part).unwrap();
        append(&mut cs, &part);
    }
    cs
}

/// Instructions that fail on any state, one per kind of refusal.
fn poisons(cs: &mut Changeset) -> Vec<Instruction> {
    let a = cs.intern("A");
    let i = cs.intern("i");
    let nope = cs.intern("NoSuchTable");
    let field = cs.intern("x");
    vec![
        // An intern string the changeset never defined.
        Instruction::EraseObject {
            table: InternString(60_000),
            object: PrimaryKey::Int(1),
        },
        // A field write to an object that does not exist (or to a table that does not).
        Instruction::Update(Update {
            path: FieldPath {
                table: a,
                object: PrimaryKey::Int(-987_654_321),
                field: i,
                path: Default::default(),
            },
            value: Payload::Int(1),
            is_default: false,
            prior_size: 0,
        }),
        // A column on a table that does not exist.
        Instruction::AddColumn(tandem::changeset::AddColumn {
            table: nope,
            field,
            column_type: ColumnType::Value(PayloadType::Int),
            nullable: false,
            collection: ColumnCollection::Single,
        }),
        // Erasing a table that does not exist.
        Instruction::EraseTable { table: nope },
    ]
}

/// `cs` with instruction `at` broken in place, when that instruction has a way to break.
fn corrupted(cs: &Changeset, at: usize) -> Option<Changeset> {
    let mut bad = cs.clone();
    match &mut bad.instructions[at] {
        Instruction::ArrayInsert(x) => x.prior_size += 1,
        Instruction::ArrayErase(x) => x.prior_size += 1,
        Instruction::ArrayMove(x) => x.prior_size += 1,
        Instruction::Update(u) => match u.path.path.last_mut() {
            Some(PathElement::Index(ix)) => *ix += 1000,
            _ => u.path.field = InternString(60_001),
        },
        Instruction::AddInteger(x) => x.path.object = PrimaryKey::Int(-987_654_321),
        Instruction::Clear(x) => x.path.field = InternString(60_001),
        Instruction::SetInsert(x) | Instruction::SetErase(x) => x.path.field = InternString(60_001),
        Instruction::CreateObject { table, .. } | Instruction::EraseObject { table, .. } => {
            *table = InternString(60_001)
        }
        Instruction::AddTable(x) => x.table = InternString(60_001),
        Instruction::AddColumn(x) => x.table = InternString(60_001),
        Instruction::EraseTable { table } | Instruction::EraseColumn { table, .. } => {
            *table = InternString(60_001)
        }
    }
    Some(bad)
}

/// Every broken form of `cs`: a poison at each position, and each instruction corrupted; with
/// a description and the position of the failing instruction.
fn broken_forms(cs: &Changeset) -> Vec<(String, usize, Changeset)> {
    let mut out = Vec::new();
    let mut base = cs.clone();
    let poison_list = poisons(&mut base);
    for at in 0..=cs.instructions.len() {
        for (kind, poison) in poison_list.iter().enumerate() {
            let mut bad = base.clone();
            bad.instructions.insert(at, poison.clone());
            out.push((format!("poison {kind} at {at}"), at, bad));
        }
    }
    for at in 0..cs.instructions.len() {
        if let Some(bad) = corrupted(cs, at) {
            out.push((format!("instruction {at} corrupted"), at, bad));
        }
    }
    out
}

fn same_kind(a: &ApplyError, b: &ApplyError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

#[test]
fn refused_changesets_leave_state_and_store_untouched() {
    let seed = std::env::var("TANDEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11u64);
    let mut checked = 0usize;
    let mut after_schema = 0usize;
    for round in 0..4u64 {
        let (_dir, path) = temp(&format!("store-{round}"));
        let db = Database::open(&path, &Schema::new(vec![]).unwrap(), Config::default()).unwrap();
        let mut state = State::new();
        let mut rng = SeededRng::new(seed.wrapping_mul(31).wrapping_add(round));
        for step in 0..40u32 {
            let cs = long_changeset(&state, &mut rng, round as u32 * 1000 + step);
            // Only every few steps is the store compared in full (it is the slow part).
            let deep = step % 4 == 0;
            let stored_before = if deep {
                Some(db.export_state().unwrap())
            } else {
                None
            };
            for (what, at, bad) in broken_forms(&cs) {
                let mut copy = state.clone();
                let refused = copy
                    .apply(&bad)
                    .expect_err(&format!("round {round} step {step}: {what} was accepted"));
                assert_eq!(
                    copy, state,
                    "round {round} step {step}: {what}: the reference state changed ({refused})\n{bad}"
                );
                if bad.instructions[..at].iter().any(|i| i.is_schema_change()) {
                    after_schema += 1;
                }
                match db.apply_remote(&bad) {
                    Err(StoreError::Rejected(e)) => assert!(
                        same_kind(&e, &refused),
                        "round {round} step {step}: {what}: store {e} / reference {refused}"
                    ),
                    other => panic!("round {round} step {step}: {what}: store {other:?}\n{bad}"),
                }
                if let Some(before) = &stored_before {
                    assert_eq!(
                        &db.export_state().unwrap(),
                        before,
                        "round {round} step {step}: {what}: the store changed\n{bad}"
                    );
                }
                checked += 1;
            }
            state.apply(&cs).unwrap();
            db.apply_remote(&cs).unwrap();
        }
        assert_eq!(db.export_state().unwrap(), state, "round {round} end");
    }
    eprintln!("{checked} refused changesets checked ({after_schema} with a schema instruction before the failure)");
    assert!(checked > 2_000, "only {checked} cases");
    assert!(
        after_schema > 100,
        "only {after_schema} cases after a schema change"
    );
}

/// The seed: before the fix the reference applier left `B["k4"].i` changed after
/// refusing a corrupted changeset.
#[test]
fn store_differential_seed_605413137_refuses_cleanly() {
    let mut rng = SeededRng::new(605_413_137);
    let mut state = State::new();
    let mut refused = 0;
    for step in 0..2_000u32 {
        let cs = long_changeset(&state, &mut rng, step);
        for (what, _, bad) in broken_forms(&cs).into_iter().step_by(7) {
            let mut copy = state.clone();
            if copy.apply(&bad).is_err() {
                assert_eq!(copy, state, "step {step}: {what}\n{bad}");
                refused += 1;
            }
        }
        state.apply(&cs).unwrap();
    }
    assert!(refused > 1_000);
}

#[cfg(feature = "server")]
mod server {
    use super::*;
    use tandem::protocol::{ErrorCode, UploadEntry};
    use tandem::server::ServerFile;

    /// Uploads of broken changesets at every position are refused with 212, change neither the
    /// server's version nor its state, and its state always equals a replay of its history.
    #[test]
    fn refused_uploads_leave_the_server_state_equal_to_its_history() {
        let (_dir, path) = temp("server");
        let mut server = ServerFile::open(&path).unwrap();
        let (ident, _) = server.allocate_client_file().unwrap();
        let mut client_state = State::new();
        let mut rng = SeededRng::new(4242);
        let mut refused = 0usize;
        for step in 0..25u32 {
            let cs = long_changeset(&client_state, &mut rng, step);
            let meta = ChangesetMeta {
                version: u64::from(step) + 1,
                last_integrated_remote_version: server.latest_version(),
                origin_timestamp: u64::from(step),
                origin_file_ident: ident,
            };
            for (what, _, mut bad) in broken_forms(&cs) {
                bad.meta = meta;
                let before = (server.latest_version(), server.state().unwrap());
                let err = server
                    .integrate_upload(ident, &[UploadEntry::from_changeset(&bad)])
                    .expect_err(&format!("step {step}: {what} was integrated"));
                assert_eq!(err.code, ErrorCode::BadChangeset, "step {step}: {what}");
                assert_eq!(
                    (server.latest_version(), server.state().unwrap()),
                    before,
                    "step {step}: {what}: the server changed"
                );
                refused += 1;
            }
            // The server's state is what its stored history replays to, and what a reopen
            // reads back from its state file.
            assert_eq!(
                server.replay().unwrap(),
                server.state().unwrap(),
                "step {step}: state != history"
            );
            assert_eq!(
                ServerFile::open(&path).unwrap().state().unwrap(),
                server.state().unwrap(),
                "step {step}: reopened state != state"
            );
            let mut good = cs.clone();
            good.meta = meta;
            server
                .integrate_upload(ident, &[UploadEntry::from_changeset(&good)])
                .unwrap();
            client_state.apply(&cs).unwrap();
            assert_eq!(server.state().unwrap(), client_state);
        }
        assert!(refused > 500, "only {refused} refused uploads");
        eprintln!("{refused} refused uploads checked");
    }
}
