//! Snapshots of random states: the converged server state of a randomized peer round
//! (`tests/harness`), written as one changeset by `tandem::state::snapshot`, encoded and
//! decoded, recreates exactly that state when applied to an empty reference `State`, and to an
//! empty SQLite store; and the same state always gives the same bytes.
//!
//! A second test builds random states directly over a wide schema (every value type as a
//! single value, nullable value, list, set and dictionary; links in every collection; mixed
//! values holding every type and links; embedded objects nested in embedded objects, lists and
//! dictionaries), because the peer harness writes only a few value types.
//!
//! `TANDEM_SEED` picks the first seed (default 1), `TANDEM_SNAPSHOT_ROUNDS` the number of
//! rounds (default 300).

mod harness;

use std::path::PathBuf;

use harness::{Entropy, SeededRng, Sim};
use tandem::changeset::{Changeset, Instruction};
use tandem::changeset::{CollectionType, PayloadType};
use tandem::model::{Decimal128, Schema};
use tandem::state::{
    snapshot, ColumnSpec, Element, Field, Key, Object, State, TableSchema, TableSpec, Val,
};
use tandem::store::{Config, Database};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-snapshot-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("db.sqlite");
    (dir, path)
}

/// What kinds of content the states held, so the test can check it saw every kind.
#[derive(Default, Debug)]
struct Seen {
    objects: usize,
    values: usize,
    lists: usize,
    sets: usize,
    dictionaries: usize,
    embedded: usize,
    embedded_in_lists: usize,
}

fn count(seen: &mut Seen, fields: &std::collections::BTreeMap<String, Field>) {
    for field in fields.values() {
        match field {
            Field::Value(_) => seen.values += 1,
            Field::Embedded(None) => {}
            Field::Embedded(Some(inner)) => {
                seen.embedded += 1;
                count(seen, &inner.fields);
            }
            Field::List(items) if !items.is_empty() => {
                seen.lists += 1;
                for item in items {
                    if let Element::Embedded(inner) = item {
                        seen.embedded_in_lists += 1;
                        count(seen, &inner.fields);
                    }
                }
            }
            Field::Set(items) if !items.is_empty() => seen.sets += 1,
            Field::Dictionary(entries) if !entries.is_empty() => seen.dictionaries += 1,
            _ => {}
        }
    }
}

#[test]
fn snapshot_of_random_server_states_recreates_them() {
    let seed = env_u64("TANDEM_SEED", 1);
    let rounds = env_u64("TANDEM_SNAPSHOT_ROUNDS", 300);
    println!("TANDEM_SEED={seed} TANDEM_SNAPSHOT_ROUNDS={rounds}");
    let mut seen = Seen::default();
    let mut in_store = 0;
    for r in 0..rounds {
        let round_seed = seed.wrapping_add(r);
        let mut sim = Sim::new(3);
        let modifications = 20 + (r % 7) as usize * 30;
        sim.random_round(&mut SeededRng::new(round_seed), modifications)
            .unwrap_or_else(|e| panic!("seed {round_seed}: the round itself failed: {e}"));
        let state = &sim.server.state;
        seen.objects += state.object_count();
        for objects in state.objects.values() {
            for object in objects.values() {
                count(&mut seen, &object.fields);
            }
        }

        let cs = snapshot(state);
        assert!(
            !cs.instructions
                .iter()
                .any(|i| matches!(i, Instruction::AddInteger(_))),
            "seed {round_seed}: counters are written with Update"
        );
        let bytes = cs.encode();
        let decoded = Changeset::decode(&bytes)
            .unwrap_or_else(|e| panic!("seed {round_seed}: the snapshot does not decode: {e}"));
        assert_eq!(decoded, cs, "seed {round_seed}: decode(encode(snapshot))");

        let mut copy = State::new();
        copy.apply(&decoded).unwrap_or_else(|e| {
            panic!("seed {round_seed}: the snapshot does not apply: {e}\n{cs}\n--- state\n{state}")
        });
        assert_eq!(
            &copy, state,
            "seed {round_seed}: the snapshot recreates another state\n--- snapshot\n{cs}"
        );
        assert_eq!(
            snapshot(&copy).encode(),
            bytes,
            "seed {round_seed}: equal states give different snapshot bytes"
        );
        assert_eq!(
            snapshot(state).encode(),
            bytes,
            "seed {round_seed}: not deterministic"
        );
        // Every client converged to the same state, so it has the same snapshot.
        for client in &sim.clients {
            assert_eq!(snapshot(&client.state).encode(), bytes, "seed {round_seed}");
        }

        // The SQLite store, for every tenth round (it is the slow part).
        if r % 10 == 0 {
            let (_dir, path) = temp_db(&format!("round-{r}"));
            let db =
                Database::open(&path, &Schema::new(vec![]).unwrap(), Config::default()).unwrap();
            db.apply_remote(&decoded).unwrap_or_else(|e| {
                panic!("seed {round_seed}: the store refuses the snapshot: {e}\n{cs}")
            });
            let stored = db.export_state().unwrap();
            assert_eq!(
                &stored, state,
                "seed {round_seed}: the store recreates another state\n--- snapshot\n{cs}"
            );
            drop(db);
            in_store += 1;
        }
    }
    println!("{rounds} rounds ({in_store} also through the store): {seen:?}");
    if rounds >= 100 {
        assert!(seen.objects > 0 && seen.values > 0 && seen.lists > 0);
        assert!(seen.sets > 0 && seen.dictionaries > 0);
        assert!(seen.embedded > 0 && seen.embedded_in_lists > 0);
    }
}

/// Snapshot, encode, decode and apply to an empty reference state; panics unless it gives
/// `state` back. Returns the decoded snapshot.
fn check_round_trip(state: &State, what: &str) -> Changeset {
    let cs = snapshot(state);
    let bytes = cs.encode();
    let decoded = Changeset::decode(&bytes)
        .unwrap_or_else(|e| panic!("{what}: the snapshot does not decode: {e}"));
    assert_eq!(decoded, cs, "{what}: decode(encode(snapshot))");
    let mut copy = State::new();
    copy.apply(&decoded).unwrap_or_else(|e| {
        panic!("{what}: the snapshot does not apply: {e}\n{cs}\n--- state\n{state}")
    });
    assert_eq!(&copy, state, "{what}\n--- snapshot\n{cs}");
    assert_eq!(snapshot(&copy).encode(), bytes, "{what}: not deterministic");
    decoded
}

const VALUE_TYPES: [PayloadType; 11] = [
    PayloadType::Null, // mixed
    PayloadType::Int,
    PayloadType::Bool,
    PayloadType::String,
    PayloadType::Binary,
    PayloadType::Timestamp,
    PayloadType::Float,
    PayloadType::Double,
    PayloadType::Decimal,
    PayloadType::ObjectId,
    PayloadType::Uuid,
];

fn spec(
    value_type: PayloadType,
    link_target: Option<&str>,
    nullable: bool,
    collection: CollectionType,
) -> ColumnSpec {
    ColumnSpec {
        value_type,
        link_target: link_target.map(str::to_owned),
        nullable,
        collection,
        key_type: (collection == CollectionType::Dictionary).then_some(PayloadType::String),
    }
}

/// Tables `T` (string keys), `U` (nullable int keys), embedded `E` (which nests itself).
fn wide_schema() -> State {
    use CollectionType::{Dictionary, List, Set, Single};
    let mut t = Vec::new();
    for ty in VALUE_TYPES {
        let n = format!("{ty:?}");
        t.push((n.clone(), spec(ty, None, false, Single)));
        t.push((format!("{n}?"), spec(ty, None, true, Single)));
        t.push((format!("{n}[]"), spec(ty, None, false, List)));
        t.push((format!("{n}?[]"), spec(ty, None, true, List)));
        t.push((format!("{n}{{}}"), spec(ty, None, false, Set)));
        t.push((format!("{n}<>"), spec(ty, None, true, Dictionary)));
    }
    let link = PayloadType::Link;
    t.push(("lk".into(), spec(link, Some("U"), true, Single)));
    t.push(("ll".into(), spec(link, Some("U"), false, List)));
    t.push(("ls".into(), spec(link, Some("U"), false, Set)));
    t.push(("ld".into(), spec(link, Some("U"), true, Dictionary)));
    t.push(("e".into(), spec(link, Some("E"), true, Single)));
    t.push(("el".into(), spec(link, Some("E"), false, List)));
    t.push(("ed".into(), spec(link, Some("E"), false, Dictionary)));
    let e = vec![
        ("x".to_owned(), spec(PayloadType::Int, None, false, Single)),
        ("m".to_owned(), spec(PayloadType::Null, None, true, Single)),
        ("l".to_owned(), spec(PayloadType::String, None, false, List)),
        ("s".to_owned(), spec(PayloadType::Double, None, false, Set)),
        ("lk".to_owned(), spec(link, Some("T"), true, Single)),
        ("n".to_owned(), spec(link, Some("E"), true, Single)),
        ("nl".to_owned(), spec(link, Some("E"), false, List)),
    ];
    let u = vec![("back".to_owned(), spec(link, Some("T"), false, List))];
    let mut state = State::new();
    let pk = |pk_type, pk_nullable| TableSpec::TopLevel {
        pk_field: "_id".into(),
        pk_type,
        pk_nullable,
        asymmetric: false,
    };
    for (name, spec, columns) in [
        ("T", pk(PayloadType::String, false), t),
        ("U", pk(PayloadType::Int, true), u),
        ("E", TableSpec::Embedded, e),
    ] {
        state.schemas.insert(
            name.into(),
            TableSchema {
                spec,
                columns: columns.into_iter().collect(),
            },
        );
        if name != "E" {
            state.objects.insert(name.into(), Default::default());
        }
    }
    state
}

fn random_key(table: &str, rng: &mut SeededRng) -> Key {
    match table {
        "T" => Key::String(format!("t{}", rng.below(8))),
        _ if rng.chance(15) => Key::Null,
        _ => Key::Int(i64::from(rng.below(8)) - 2),
    }
}

/// `store_safe` leaves out what the SQLite store does not keep as the reference applier does
/// (links to the null key, null in a set): those rounds also go through the store.
fn random_link(rng: &mut SeededRng, target: &str, store_safe: bool) -> Val {
    loop {
        let key = random_key(target, rng);
        if !(store_safe && key == Key::Null) {
            return Val::Link(target.into(), key);
        }
    }
}

fn random_scalar(rng: &mut SeededRng, ty: PayloadType, store_safe: bool) -> Val {
    let small = i64::from(rng.below(2000)) - 1000;
    match ty {
        PayloadType::Int => Val::Int(if rng.chance(10) { i64::MIN } else { small }),
        PayloadType::Bool => Val::Bool(rng.chance(50)),
        PayloadType::String => Val::String(match rng.below(4) {
            0 => String::new(),
            1 => "ünïcødé ✓".into(),
            _ => format!("s{small}"),
        }),
        PayloadType::Binary => Val::Binary((0..rng.below(5)).map(|i| i as u8 * 61).collect()),
        PayloadType::Timestamp => {
            let nanos = rng.below(1_000_000_000) as i32;
            Val::Timestamp(
                small,
                if small < 0 {
                    -nanos
                } else if small > 0 {
                    nanos
                } else {
                    0
                },
            )
        }
        PayloadType::Float => Val::Float(match rng.below(4) {
            0 => f32::NAN.to_bits(),
            1 => (-0.0f32).to_bits(),
            _ => (small as f32 / 8.0).to_bits(),
        }),
        PayloadType::Double => Val::Double(match rng.below(4) {
            0 => f64::INFINITY.to_bits(),
            1 => (-0.0f64).to_bits(),
            _ => (small as f64 / 3.0).to_bits(),
        }),
        PayloadType::Decimal => Val::Decimal(
            Decimal128::from_parts(
                u128::from(rng.below(1_000_000)),
                rng.below(40) as i32 - 20,
                rng.chance(50),
            )
            .unwrap()
            .to_bits(),
        ),
        PayloadType::ObjectId => Val::ObjectId([rng.below(256) as u8; 12]),
        PayloadType::Uuid => Val::Uuid([rng.below(256) as u8; 16]),
        // Mixed: any of the above, null, or a link to either top-level table.
        _ => match rng.below(13) {
            0 if !store_safe => Val::Null,
            0 | 1 => random_link(rng, "T", store_safe),
            2 => random_link(rng, "U", store_safe),
            i => random_scalar(rng, VALUE_TYPES[(i - 2) as usize], store_safe),
        },
    }
}

/// A value for one element of `column` (never embedded).
fn random_val(rng: &mut SeededRng, column: &ColumnSpec, store_safe: bool) -> Val {
    if column.nullable && rng.chance(15) {
        return Val::Null;
    }
    match column.link_target.as_deref() {
        Some(target) => random_link(rng, target, store_safe),
        None => random_scalar(rng, column.value_type, store_safe),
    }
}

fn random_object(
    state: &State,
    table: &str,
    rng: &mut SeededRng,
    depth: u32,
    store_safe: bool,
) -> Object {
    let mut object = state.new_object(table);
    let schema = &state.schemas[table];
    for (name, column) in &schema.columns {
        if rng.chance(30) {
            continue; // keep the default
        }
        let embedded = column.link_target.as_deref() == Some("E");
        if embedded && depth >= 3 {
            continue;
        }
        let element = |rng: &mut SeededRng| {
            if embedded {
                Element::Embedded(random_object(state, "E", rng, depth + 1, store_safe))
            } else {
                Element::Value(random_val(rng, column, store_safe))
            }
        };
        let len = rng.below(4);
        let field = match column.collection {
            CollectionType::Single if embedded => Field::Embedded(
                rng.chance(80)
                    .then(|| random_object(state, "E", rng, depth + 1, store_safe)),
            ),
            CollectionType::Single => Field::Value(random_val(rng, column, store_safe)),
            CollectionType::List => Field::List((0..len).map(|_| element(rng)).collect()),
            CollectionType::Set => {
                let mut items: Vec<Val> = (0..len)
                    .map(|_| random_val(rng, column, store_safe))
                    .collect();
                items.sort();
                items.dedup();
                Field::Set(items)
            }
            CollectionType::Dictionary => Field::Dictionary(
                (0..len)
                    .map(|_| (format!("k{}", rng.below(5)), element(rng)))
                    .collect(),
            ),
        };
        object.fields.insert(name.clone(), field);
    }
    object
}

#[test]
fn snapshot_of_random_wide_states_recreates_them() {
    let seed = env_u64("TANDEM_SEED", 1);
    let rounds = env_u64("TANDEM_SNAPSHOT_ROUNDS", 300);
    for r in 0..rounds {
        let round_seed = seed.wrapping_add(1_000_000 + r);
        let mut rng = SeededRng::new(round_seed);
        let mut state = wide_schema();
        let store_safe = r % 20 == 0;
        for _ in 0..rng.below(6) {
            for table in ["T", "U"] {
                let key = random_key(table, &mut rng);
                let object = random_object(&state, table, &mut rng, 0, store_safe);
                state.objects.get_mut(table).unwrap().insert(key, object);
            }
        }
        let decoded = check_round_trip(&state, &format!("seed {round_seed}"));
        if store_safe {
            let (_dir, path) = temp_db(&format!("wide-{r}"));
            let db =
                Database::open(&path, &Schema::new(vec![]).unwrap(), Config::default()).unwrap();
            db.apply_remote(&decoded).unwrap_or_else(|e| {
                panic!("seed {round_seed}: the store refuses the snapshot: {e}")
            });
            assert_eq!(
                db.export_state().unwrap(),
                state,
                "seed {round_seed}: store"
            );
            drop(db);
        }
    }
}
