//! Differential test: random changesets applied by the SQLite store and by the in-memory
//! reference applier give identical states (every class, object, property and collection), and
//! the changesets one refuses the other refuses too, leaving its state unchanged.

mod harness;

use std::path::PathBuf;

use harness::{generate, Entropy, SeededRng};
use tandem::changeset::{Instruction, PathElement};
use tandem::model::Schema;
use tandem::state::State;
use tandem::store::{Config, Database, StoreError};

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-test-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

/// A changeset broken in one of the ways appliers must refuse.
fn corrupt(
    cs: &tandem::changeset::Changeset,
    rng: &mut SeededRng,
) -> Option<tandem::changeset::Changeset> {
    let mut bad = cs.clone();
    let i = rng.below(bad.instructions.len() as u32) as usize;
    match &mut bad.instructions[i] {
        Instruction::ArrayInsert(a) => a.prior_size += 1,
        Instruction::ArrayErase(e) => e.prior_size += 1,
        Instruction::ArrayMove(m) => m.to += 1000,
        Instruction::Update(u) => {
            if let Some(PathElement::Index(ix)) = u.path.path.last_mut() {
                *ix += 1000;
            } else {
                u.path.object = tandem::changeset::PrimaryKey::Int(-999);
            }
        }
        Instruction::AddInteger(a) => a.path.object = tandem::changeset::PrimaryKey::Int(-999),
        _ => return None,
    }
    Some(bad)
}

/// The changeset with its first link value's key swapped for one of a type no generated class
/// has (an object id) or for the null key (no generated class has a nullable key): both
/// appliers must refuse it, as realm-core does, instead of storing a link that can never
/// resolve (the store's object then read as corrupt).
fn mistyped_link(
    cs: &tandem::changeset::Changeset,
    rng: &mut SeededRng,
) -> Option<tandem::changeset::Changeset> {
    use tandem::changeset::{Payload, PrimaryKey};
    use tandem::model::ObjectId;
    let mut bad = cs.clone();
    let key = if rng.chance(50) {
        PrimaryKey::Null
    } else {
        PrimaryKey::ObjectId(ObjectId([7; 12]))
    };
    let link = bad.instructions.iter_mut().find_map(|i| match i {
        Instruction::Update(u) => Some(&mut u.value),
        Instruction::ArrayInsert(a) => Some(&mut a.value),
        Instruction::SetInsert(s) => Some(&mut s.value),
        _ => None,
    });
    match link {
        Some(Payload::Link(link)) => link.target = key,
        _ => return None,
    }
    Some(bad)
}

#[test]
fn store_matches_reference_applier() {
    let seed = std::env::var("TANDEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7u64);
    // Objects whose read view hides an unresolved link, over all rounds.
    let mut hidden = 0;
    // Changesets with a mistyped link key, refused by both appliers, over all rounds.
    let mut mistyped_refused = 0;
    for round in 0..6u64 {
        let (_dir, path) = temp_db(&format!("diff-{round}"));
        let db = Database::open(&path, &Schema::new(vec![]).unwrap(), Config::default()).unwrap();
        let mut oracle = State::new();
        let mut rng = SeededRng::new(seed.wrapping_add(round));
        let mut rejected = 0;
        for step in 0..300 {
            let cs = generate(&oracle, &mut rng);
            if cs.is_empty() {
                continue;
            }
            oracle
                .apply(&cs)
                .unwrap_or_else(|e| panic!("oracle refused a generated changeset: {e}"));
            db.apply_remote(&cs)
                .unwrap_or_else(|e| panic!("round {round} step {step}: store refused\n{cs}\n{e}"));
            if rng.chance(20) {
                let mistyped = rng.chance(50);
                let bad = if mistyped {
                    mistyped_link(&cs, &mut rng)
                } else {
                    corrupt(&cs, &mut rng)
                };
                if let Some(bad) = bad {
                    let mut copy = oracle.clone();
                    let oracle_result = copy.apply(&bad);
                    let store_result = db.apply_remote(&bad);
                    match (&oracle_result, &store_result) {
                        (Ok(()), Ok(())) => oracle = copy,
                        (Err(a), Err(StoreError::Rejected(b))) => {
                            assert_eq!(copy, oracle, "a refused changeset left changes behind");
                            assert_eq!(
                                std::mem::discriminant(a),
                                std::mem::discriminant(b),
                                "different refusals: {a} / {b}"
                            );
                            rejected += 1;
                            mistyped_refused += usize::from(mistyped);
                        }
                        _ => panic!(
                            "round {round} step {step}: oracle {oracle_result:?}, store {store_result:?}\n{bad}"
                        ),
                    }
                }
            }
            if step % 25 == 0 {
                let stored = db.export_state().unwrap();
                assert_eq!(
                    stored, oracle,
                    "round {round} step {step}\n--- store\n{stored}\n--- oracle\n{oracle}"
                );
            }
        }
        let stored = db.export_state().unwrap();
        assert_eq!(
            stored, oracle,
            "round {round} end\n--- store\n{stored}\n--- oracle\n{oracle}"
        );
        assert!(oracle.object_count() > 0);
        assert!(rejected > 0, "round {round} refused nothing");
        hidden += same_read_view(&db, &oracle);
        drop(db);
        // Reopening gives the same state.
        let db = Database::open(&path, &Schema::new(vec![]).unwrap(), Config::default()).unwrap();
        assert_eq!(db.export_state().unwrap(), oracle, "after reopening");
    }
    println!("objects with unresolved links hidden from reads: {hidden}");
    println!("changesets with a mistyped link refused: {mistyped_refused}");
    assert!(mistyped_refused > 0, "no round mistyped a link");
    assert!(hidden > 0, "no round made an unresolved link");
}

/// Every object reads the same from the store as the reference state's read view
/// ([`State::read`]: unresolved links hidden); returns how many objects hide one.
fn same_read_view(db: &Database, oracle: &State) -> usize {
    use tandem::model::{ObjectId, PrimaryKey, Uuid};
    use tandem::state::Key;
    let read = db.read().unwrap();
    let mut hidden = 0;
    for (class, objects) in &oracle.objects {
        for (key, raw) in objects {
            let pk = match key {
                Key::Null => PrimaryKey::Null,
                Key::Int(i) => PrimaryKey::Int(*i),
                Key::String(s) => PrimaryKey::String(s.clone()),
                Key::ObjectId(id) => PrimaryKey::ObjectId(ObjectId(*id)),
                Key::Uuid(id) => PrimaryKey::Uuid(Uuid(*id)),
                Key::GlobalKey(..) => continue,
            };
            let expected = oracle.read(class, key);
            assert_eq!(
                read.object(class, &pk).unwrap(),
                expected,
                "read view of {class}[{key}]"
            );
            hidden += usize::from(expected.as_ref() != Some(raw));
        }
        // One scan over the matches reads what one lookup per key does, in the query's order,
        // and a window of it is the same slice.
        if !matches!(
            oracle.schemas.get(class).map(|s| &s.spec),
            Some(tandem::state::TableSpec::TopLevel { .. })
        ) {
            continue;
        }
        let keys = read.query(class, "TRUEPREDICATE", &[]).unwrap();
        let scanned = read
            .query_objects(class, "TRUEPREDICATE", &[], 0, None)
            .unwrap();
        let one_by_one: Vec<_> = keys
            .iter()
            .map(|k| (k.clone(), read.object(class, k).unwrap().unwrap()))
            .collect();
        assert_eq!(scanned, one_by_one, "query_objects of {class}");
        let window = read
            .query_objects(class, "TRUEPREDICATE", &[], 1, Some(2))
            .unwrap();
        let end = one_by_one.len().min(3);
        assert_eq!(window, one_by_one[1.min(end)..end], "window of {class}");
        // By position: every property in schema order, then the primary key and the first
        // property again, equal the objects' fields.
        let mut names: Vec<&str> = oracle.schemas[class]
            .columns
            .keys()
            .map(String::as_str)
            .collect();
        let tandem::state::TableSpec::TopLevel { pk_field, .. } = &oracle.schemas[class].spec
        else {
            unreachable!()
        };
        let first = names.first().copied();
        names.push(pk_field);
        names.extend(first);
        let rows = read
            .query_rows(class, "TRUEPREDICATE", &[], &names, 0, None)
            .unwrap();
        assert_eq!(rows.len(), one_by_one.len(), "rows of {class}");
        for ((key, fields), (expected_key, object)) in rows.iter().zip(&one_by_one) {
            assert_eq!(key, expected_key);
            for (name, field) in names.iter().zip(fields) {
                if *name == pk_field.as_str() {
                    continue;
                }
                assert_eq!(Some(field), object.fields.get(*name), "{class}.{name}");
            }
        }
    }
    hidden
}
