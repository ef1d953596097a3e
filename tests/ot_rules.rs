//! One test per merge rule (realm-sync.md section 3.2). Each states two concurrent changesets
//! A and B made on the same base, applies them in both orders (A then B', B then A'), checks
//! that both replicas are equal, and checks the converged result. Every scenario is also run
//! from the other peer's point of view, which must produce the same state.

mod harness;

use harness::{Sim, ORDERS_OF_THREE};
use tandem::changeset::*;
use tandem::ot::{transform, TransformError};
use tandem::state::{Element, Field, Key, State, Val};

/// Builds changesets with readable calls.
struct B {
    cs: Changeset,
}

impl B {
    fn new(timestamp: u64, file_ident: u64) -> Self {
        let mut cs = Changeset::new();
        cs.meta.origin_timestamp = timestamp;
        cs.meta.origin_file_ident = file_ident;
        B { cs }
    }

    fn path(&mut self, id: i64, field: &str, steps: &[Step]) -> FieldPath {
        let table = self.cs.intern("A");
        let field = self.cs.intern(field);
        let path = steps
            .iter()
            .map(|s| match s {
                Step::I(i) => PathElement::Index(*i),
                Step::K(k) => PathElement::Key(self.cs.intern(k)),
            })
            .collect();
        FieldPath {
            table,
            object: PrimaryKey::Int(id),
            field,
            path,
        }
    }

    fn create(mut self, id: i64) -> Self {
        let table = self.cs.intern("A");
        self.cs.push(Instruction::CreateObject {
            table,
            object: PrimaryKey::Int(id),
        });
        self
    }

    fn erase(mut self, id: i64) -> Self {
        let table = self.cs.intern("A");
        self.cs.push(Instruction::EraseObject {
            table,
            object: PrimaryKey::Int(id),
        });
        self
    }

    fn set(self, id: i64, field: &str, value: Payload) -> Self {
        self.set_at(id, field, &[], value, false, 0)
    }

    fn set_default(self, id: i64, field: &str, value: Payload) -> Self {
        self.set_at(id, field, &[], value, true, 0)
    }

    fn set_at(
        mut self,
        id: i64,
        field: &str,
        steps: &[Step],
        value: Payload,
        is_default: bool,
        prior_size: u32,
    ) -> Self {
        let path = self.path(id, field, steps);
        self.cs.push(Instruction::Update(Update {
            path,
            value,
            is_default,
            prior_size,
        }));
        self
    }

    fn add(self, id: i64, field: &str, value: i64) -> Self {
        self.add_at(id, field, &[], value)
    }

    fn add_at(mut self, id: i64, field: &str, steps: &[Step], value: i64) -> Self {
        let path = self.path(id, field, steps);
        self.cs
            .push(Instruction::AddInteger(AddInteger { path, value }));
        self
    }

    fn insert(mut self, id: i64, field: &str, index: u32, value: Payload, prior_size: u32) -> Self {
        let path = self.path(id, field, &[Step::I(index)]);
        self.cs.push(Instruction::ArrayInsert(ArrayInsert {
            path,
            value,
            prior_size,
        }));
        self
    }

    fn mv(mut self, id: i64, field: &str, from: u32, to: u32, prior_size: u32) -> Self {
        let path = self.path(id, field, &[Step::I(from)]);
        self.cs.push(Instruction::ArrayMove(ArrayMove {
            path,
            to,
            prior_size,
        }));
        self
    }

    fn remove(mut self, id: i64, field: &str, index: u32, prior_size: u32) -> Self {
        let path = self.path(id, field, &[Step::I(index)]);
        self.cs
            .push(Instruction::ArrayErase(ArrayErase { path, prior_size }));
        self
    }

    fn clear(mut self, id: i64, field: &str, collection_type: CollectionType) -> Self {
        let path = self.path(id, field, &[]);
        self.cs.push(Instruction::Clear(Clear {
            path,
            collection_type,
        }));
        self
    }

    fn set_insert(mut self, id: i64, value: i64) -> Self {
        let path = self.path(id, "st", &[]);
        self.cs.push(Instruction::SetInsert(SetValue {
            path,
            value: Payload::Int(value),
        }));
        self
    }

    fn set_erase(mut self, id: i64, value: i64) -> Self {
        let path = self.path(id, "st", &[]);
        self.cs.push(Instruction::SetErase(SetValue {
            path,
            value: Payload::Int(value),
        }));
        self
    }

    fn link(mut self, id: i64, target: i64) -> Self {
        let table = self.cs.intern("A");
        let value = Payload::Link(Link {
            target_table: table,
            target: PrimaryKey::Int(target),
        });
        self.set(id, "lk", value)
    }

    fn raw(mut self, instruction: impl FnOnce(&mut Changeset) -> Instruction) -> Self {
        let i = instruction(&mut self.cs);
        self.cs.push(i);
        self
    }

    fn done(self) -> Changeset {
        self.cs
    }
}

enum Step {
    I(u32),
    K(&'static str),
}

fn int(v: i64) -> Payload {
    Payload::Int(v)
}

/// Schema: A(_id int) with i int, n int?, m mixed, l [int], st set<int>, d {string: int?},
/// lk link A, e embedded E, el [E]; E(x int).
fn schema() -> Changeset {
    let mut cs = Changeset::new();
    let a = cs.intern("A");
    let e = cs.intern("E");
    let id = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table: a,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::Int,
            nullable: false,
        }),
    }));
    cs.push(Instruction::AddTable(AddTable {
        table: e,
        kind: TableKind::Embedded,
    }));
    let x = cs.intern("x");
    cs.push(Instruction::AddColumn(AddColumn {
        table: e,
        field: x,
        column_type: ColumnType::Value(PayloadType::Int),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    let columns: [(&str, ColumnType, bool, ColumnCollection); 9] = [
        (
            "i",
            ColumnType::Value(PayloadType::Int),
            false,
            ColumnCollection::Single,
        ),
        (
            "n",
            ColumnType::Value(PayloadType::Int),
            true,
            ColumnCollection::Single,
        ),
        ("m", ColumnType::Mixed, true, ColumnCollection::Single),
        (
            "l",
            ColumnType::Value(PayloadType::Int),
            false,
            ColumnCollection::List,
        ),
        (
            "st",
            ColumnType::Value(PayloadType::Int),
            false,
            ColumnCollection::Set,
        ),
        (
            "d",
            ColumnType::Value(PayloadType::Int),
            true,
            ColumnCollection::Dictionary {
                key_type: PayloadType::String,
            },
        ),
        (
            "lk",
            ColumnType::Link { target_table: a },
            true,
            ColumnCollection::Single,
        ),
        (
            "e",
            ColumnType::Link { target_table: e },
            true,
            ColumnCollection::Single,
        ),
        (
            "el",
            ColumnType::Link { target_table: e },
            false,
            ColumnCollection::List,
        ),
    ];
    for (name, column_type, nullable, collection) in columns {
        let field = cs.intern(name);
        cs.push(Instruction::AddColumn(AddColumn {
            table: a,
            field,
            column_type,
            nullable,
            collection,
        }));
    }
    cs
}

fn base(setup: Changeset) -> State {
    let mut state = State::new();
    state.apply(&schema()).unwrap();
    state.apply(&setup).unwrap();
    state
}

/// Applies A and B in both orders, from both peers' points of view; returns the one state
/// they all reach.
fn converge(setup: Changeset, a: Changeset, b: Changeset) -> State {
    let start = base(setup);
    // Peer holding A receives B.
    let (mut a1, mut b1) = ([a.clone()], [b.clone()]);
    transform(&mut a1, &mut b1).expect("transform (A local)");
    // Peer holding B receives A.
    let (mut b2, mut a2) = ([b.clone()], [a.clone()]);
    transform(&mut b2, &mut a2).expect("transform (B local)");

    let run = |first: &Changeset, second: &Changeset| {
        let mut s = start.clone();
        s.apply(first).unwrap_or_else(|e| panic!("{e}\n{first}"));
        s.apply(second).unwrap_or_else(|e| panic!("{e}\n{second}"));
        s
    };
    let at_a = run(&a, &b1[0]);
    let at_b = run(&b, &a1[0]);
    assert_eq!(
        at_a, at_b,
        "A then B' differs from B then A'\nB' = {}A' = {}",
        b1[0], a1[0]
    );
    assert_eq!(run(&b, &a2[0]), at_a, "the other peer's view disagrees");
    assert_eq!(run(&a, &b2[0]), at_a, "the other peer's view disagrees");
    at_a
}

/// Three clients start from `setup`; client `c` commits `made[c]` (unless empty) offline, at
/// the changeset's timestamp (the harness gives client `c` file ident `c + 2`). Then they
/// sync: every order of uploads, each with downloads after every upload and with downloads
/// only at the end. Every replica and the server must agree in every schedule, and every
/// schedule must reach the same state, which is returned.
fn converge3(setup: Changeset, made: [Changeset; 3]) -> State {
    let mut start = Sim::new(3);
    start.seed(schema()).unwrap();
    start.seed(setup).unwrap();
    for (c, cs) in made.into_iter().enumerate() {
        if !cs.is_empty() {
            let t = cs.meta.origin_timestamp;
            start.commit(c, cs, t).unwrap();
        }
    }
    let mut result: Option<State> = None;
    for order in ORDERS_OF_THREE {
        for eager in [false, true] {
            let mut sim = start.clone();
            let schedule = format!("uploads {order:?}, eager downloads: {eager}");
            sim.sync_in_order(&order, eager)
                .unwrap_or_else(|e| panic!("{schedule}: {e}"));
            match &result {
                None => result = Some(sim.server.state),
                Some(first) => assert_eq!(
                    &sim.server.state, first,
                    "{schedule} reaches another state than uploads [0, 1, 2]"
                ),
            }
        }
    }
    result.unwrap()
}

fn field(state: &State, id: i64, name: &str) -> Field {
    state
        .object("A", &Key::Int(id))
        .unwrap_or_else(|| panic!("A[{id}] does not exist\n{state}"))
        .fields[name]
        .clone()
}

fn value(state: &State, id: i64, name: &str) -> Val {
    match field(state, id, name) {
        Field::Value(v) => v,
        other => panic!("A[{id}].{name} is {other:?}"),
    }
}

fn list(state: &State, id: i64, name: &str) -> Vec<i64> {
    match field(state, id, name) {
        Field::List(items) => items
            .into_iter()
            .map(|e| match e {
                Element::Value(Val::Int(v)) => v,
                other => panic!("not an int: {other:?}"),
            })
            .collect(),
        other => panic!("A[{id}].{name} is {other:?}"),
    }
}

fn exists(state: &State, id: i64) -> bool {
    state.object("A", &Key::Int(id)).is_some()
}

/// A[1] with l = [10, 11, 12].
fn with_list() -> Changeset {
    let mut b = B::new(0, 1).create(1);
    for (i, v) in [10, 11, 12].into_iter().enumerate() {
        b = b.insert(1, "l", i as u32, int(v), i as u32);
    }
    b.done()
}

// --- objects ---------------------------------------------------------------------------

#[test]
fn create_vs_create_same_primary_key_is_one_object() {
    // A creates A[1] and sets i=1; B creates A[1] and sets n=2. One object has both.
    let a = B::new(10, 2).create(1).set(1, "i", int(1)).done();
    let b = B::new(11, 3).create(1).set(1, "n", int(2)).done();
    let s = converge(B::new(0, 1).done(), a, b);
    assert_eq!(s.object_count(), 1);
    assert_eq!(value(&s, 1, "i"), Val::Int(1));
    assert_eq!(value(&s, 1, "n"), Val::Int(2));
}

#[test]
fn erase_object_wins_over_a_newer_update() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2).erase(1).done();
    let b = B::new(20, 3).set(1, "i", int(5)).done();
    assert!(!exists(&converge(setup, a, b), 1));
}

#[test]
fn erase_object_wins_over_an_older_update() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(20, 2).erase(1).done();
    let b = B::new(10, 3).set(1, "i", int(5)).add(1, "i", 1).done();
    assert!(!exists(&converge(setup, a, b), 1));
}

#[test]
fn erase_object_wins_over_a_concurrent_create() {
    // B re-creates and writes the object A erases (B's writes are newer): deletes win.
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2).erase(1).done();
    let b = B::new(20, 3).create(1).set(1, "i", int(3)).done();
    assert!(!exists(&converge(setup, a, b), 1));
}

#[test]
fn create_erase_create_preserves_the_object() {
    // realm-core Transform_CreateEraseCreateSequencePreservesObject: B erases and re-creates,
    // A's concurrent erase is older, so B's newer erase survives and the re-creation stands.
    let setup = B::new(0, 1).create(1).set(1, "i", int(7)).done();
    let a = B::new(10, 2).erase(1).done();
    let b = B::new(20, 3).erase(1).create(1).set(1, "n", int(4)).done();
    let s = converge(setup, a, b);
    assert!(exists(&s, 1));
    assert_eq!(value(&s, 1, "n"), Val::Int(4));
    assert_eq!(
        value(&s, 1, "i"),
        Val::Int(0),
        "the re-created object starts fresh"
    );
}

#[test]
fn erase_vs_erase_of_one_object_erases_it_once() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2).erase(1).done();
    let b = B::new(10, 3).erase(1).done();
    assert!(!exists(&converge(setup, a, b), 1));
}

#[test]
fn dangling_links_converge_and_resolve_when_the_target_returns() {
    // A erases A[2]; B links A[1].lk to A[2]. Both keep the link (it reads as null while A[2]
    // is missing); re-creating A[2] later resolves it on every replica.
    let setup = B::new(0, 1).create(1).create(2).done();
    let a = B::new(10, 2).erase(2).done();
    let b = B::new(20, 3).link(1, 2).done();
    let mut s = converge(setup, a, b);
    assert!(!exists(&s, 2));
    assert_eq!(value(&s, 1, "lk"), Val::Link("A".into(), Key::Int(2)));
    s.apply(&B::new(30, 2).create(2).done()).unwrap();
    assert!(exists(&s, 2));
}

// --- fields ------------------------------------------------------------------------------

#[test]
fn last_writer_wins_per_field() {
    let setup = B::new(0, 1).create(1).done();
    for (ta, tb, expected) in [(10, 20, 2), (20, 10, 1)] {
        let a = B::new(ta, 2).set(1, "i", int(1)).done();
        let b = B::new(tb, 3).set(1, "i", int(2)).done();
        assert_eq!(
            value(&converge(setup.clone(), a, b), 1, "i"),
            Val::Int(expected)
        );
    }
}

#[test]
fn equal_timestamps_are_ordered_by_file_ident() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 5).set(1, "i", int(1)).done();
    let b = B::new(10, 3).set(1, "i", int(2)).done();
    assert_eq!(
        value(&converge(setup, a, b), 1, "i"),
        Val::Int(1),
        "file 5 is newer than 3"
    );
}

#[test]
fn default_write_loses_to_a_real_write_even_when_newer() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2).set(1, "i", int(1)).done();
    let b = B::new(99, 3).set_default(1, "i", int(2)).done();
    assert_eq!(value(&converge(setup, a, b), 1, "i"), Val::Int(1));
}

#[test]
fn creating_an_embedded_object_loses_to_clearing_it() {
    // A creates A[1].e (ObjectValue, newer); B sets it to null: null wins.
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(20, 2).set(1, "e", Payload::ObjectValue).done();
    let b = B::new(10, 3).set(1, "e", Payload::Null).done();
    assert_eq!(field(&converge(setup, a, b), 1, "e"), Field::Embedded(None));
}

#[test]
fn both_creating_an_embedded_object_keep_both_writes_inside() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2)
        .set(1, "e", Payload::ObjectValue)
        .set_at(1, "e", &[Step::K("x")], int(1), false, 0)
        .done();
    let b = B::new(20, 3).set(1, "e", Payload::ObjectValue).done();
    let s = converge(setup, a, b);
    match field(&s, 1, "e") {
        Field::Embedded(Some(o)) => assert_eq!(o.fields["x"], Field::Value(Val::Int(1))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn setting_a_value_higher_up_discards_concurrent_writes_below() {
    // A clears the embedded object (older); B writes inside it (newer): A's write wins anyway.
    let setup = B::new(0, 1)
        .create(1)
        .set(1, "e", Payload::ObjectValue)
        .done();
    let a = B::new(10, 2).set(1, "e", Payload::Null).done();
    let b = B::new(20, 3)
        .set_at(1, "e", &[Step::K("x")], int(9), false, 0)
        .done();
    assert_eq!(field(&converge(setup, a, b), 1, "e"), Field::Embedded(None));
}

// --- counters ----------------------------------------------------------------------------

#[test]
fn counters_add_up() {
    let setup = B::new(0, 1).create(1).set(1, "i", int(10)).done();
    let a = B::new(10, 2).add(1, "i", 5).add(1, "i", 1).done();
    let b = B::new(10, 3).add(1, "i", -3).done();
    assert_eq!(value(&converge(setup, a, b), 1, "i"), Val::Int(13));
}

#[test]
fn add_integer_newer_than_set_is_folded_into_it() {
    let setup = B::new(0, 1).create(1).set(1, "i", int(1)).done();
    let a = B::new(10, 2).set(1, "i", int(100)).done();
    let b = B::new(20, 3).add(1, "i", 5).done();
    assert_eq!(value(&converge(setup, a, b), 1, "i"), Val::Int(105));
}

#[test]
fn add_integer_older_than_set_is_dropped() {
    let setup = B::new(0, 1).create(1).set(1, "i", int(1)).done();
    let a = B::new(20, 2).set(1, "i", int(100)).done();
    let b = B::new(10, 3).add(1, "i", 5).done();
    assert_eq!(value(&converge(setup, a, b), 1, "i"), Val::Int(100));
}

#[test]
fn add_integer_is_folded_into_an_older_default_set_too() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(20, 2).set_default(1, "i", int(100)).done();
    let b = B::new(10, 3).add(1, "i", 5).done();
    assert_eq!(value(&converge(setup, a, b), 1, "i"), Val::Int(105));
}

#[test]
fn add_integer_after_a_set_to_null_does_nothing() {
    let setup = B::new(0, 1).create(1).set(1, "n", int(1)).done();
    let a = B::new(10, 2).set(1, "n", Payload::Null).done();
    let b = B::new(20, 3).add(1, "n", 5).done();
    assert_eq!(value(&converge(setup, a, b), 1, "n"), Val::Null);
}

#[test]
fn add_integer_against_a_newer_non_integer_in_a_mixed_field_is_dropped() {
    let setup = B::new(0, 1).create(1).set(1, "m", int(1)).done();
    let a = B::new(10, 2)
        .set(1, "m", Payload::String("x".into()))
        .done();
    let b = B::new(20, 3).add(1, "m", 5).done();
    assert_eq!(
        value(&converge(setup, a, b), 1, "m"),
        Val::String("x".into())
    );
}

#[test]
fn issue_11_an_older_set_arriving_after_null_and_add_gets_the_add() {
    // Issue 11, item 1: A[1].n = 0 on clients 1, 2, 3. Client 1 sets null (t=10); client 3,
    // offline, sets 10 (t=20); client 2 adds 1 (t=30). Clients 1 and 2 sync, in both orders,
    // and both read null; then everyone syncs and reads 11 (client 3's set is the newest set,
    // and the add is newer than it).
    let setup = || B::new(0, 1).create(1).set(1, "n", int(0)).done();
    let null = || B::new(10, 0).set(1, "n", Payload::Null).done();
    let add = || B::new(30, 0).add(1, "n", 1).done();
    let ten = || B::new(20, 0).set(1, "n", int(10)).done();
    let n = |state: &State| value(state, 1, "n");
    for first in [0, 1] {
        let mut sim = Sim::new(3);
        sim.seed(schema()).unwrap();
        sim.seed(setup()).unwrap();
        sim.commit(0, null(), 10).unwrap();
        sim.commit(2, ten(), 20).unwrap();
        sim.commit(1, add(), 30).unwrap();
        for c in [first, 1 - first] {
            sim.upload_one(c).unwrap();
        }
        for c in [0, 1] {
            while sim.download_one(c).unwrap() {}
            assert_eq!(n(&sim.clients[c].state), Val::Null, "client {}", c + 1);
        }
        sim.drain().unwrap();
        sim.check_converged().unwrap();
        assert_eq!(
            n(&sim.server.state),
            Val::Int(11),
            "client {} first",
            first + 1
        );
    }
    // And in every other schedule.
    let s = converge3(setup(), [null(), add(), ten()]);
    assert_eq!(n(&s), Val::Int(11));
}

#[test]
fn an_older_integer_arriving_after_a_string_and_an_add_gets_the_add() {
    // The same kind in a mixed field: the add (newer than the string) is kept as a no-op on
    // the string, so that the integer written between them still gets it.
    let setup = B::new(0, 1).create(1).set(1, "m", int(0)).done();
    let string = B::new(10, 0)
        .set(1, "m", Payload::String("s".into()))
        .done();
    let add = B::new(30, 0).add(1, "m", 1).done();
    let ten = B::new(20, 0).set(1, "m", int(10)).done();
    assert_eq!(
        value(&converge3(setup, [string, add, ten]), 1, "m"),
        Val::Int(11)
    );
}

#[test]
fn an_older_dictionary_write_arriving_after_an_erase_and_an_add_gets_the_add() {
    // The same kind for a dictionary entry: a concurrent erase is a write of "no value".
    let k = || [Step::K("k")];
    let setup = B::new(0, 1)
        .create(1)
        .set_at(1, "d", &k(), int(0), false, 0)
        .done();
    let erase = B::new(10, 0)
        .set_at(1, "d", &k(), Payload::Erased, false, 0)
        .done();
    let add = B::new(30, 0).add_at(1, "d", &k(), 1).done();
    let ten = B::new(20, 0).set_at(1, "d", &k(), int(10), false, 0).done();
    match field(&converge3(setup, [erase, add, ten]), 1, "d") {
        Field::Dictionary(d) => assert_eq!(d.get("k"), Some(&Element::Value(Val::Int(11)))),
        other => panic!("{other:?}"),
    }
}

// --- lists -------------------------------------------------------------------------------

#[test]
fn list_inserts_at_one_index_are_ordered_oldest_first() {
    for (ta, tb, expected) in [(10, 20, [10, 1, 2, 11, 12]), (20, 10, [10, 2, 1, 11, 12])] {
        let a = B::new(ta, 2).insert(1, "l", 1, int(1), 3).done();
        let b = B::new(tb, 3).insert(1, "l", 1, int(2), 3).done();
        assert_eq!(list(&converge(with_list(), a, b), 1, "l"), expected);
    }
}

#[test]
fn list_insert_shifts_a_concurrent_erase_and_set() {
    let a = B::new(10, 2).insert(1, "l", 0, int(1), 3).done();
    let b = B::new(20, 3)
        .remove(1, "l", 2, 3)
        .set_at(1, "l", &[Step::I(0)], int(99), false, 2)
        .done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [1, 99, 11]);
}

#[test]
fn erase_beats_a_newer_set_of_the_same_element() {
    let a = B::new(10, 2).remove(1, "l", 1, 3).done();
    let b = B::new(20, 3)
        .set_at(1, "l", &[Step::I(1)], int(99), false, 3)
        .done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [10, 12]);
}

#[test]
fn concurrent_erases_of_one_element_erase_it_once() {
    let a = B::new(10, 2).remove(1, "l", 1, 3).done();
    let b = B::new(20, 3)
        .remove(1, "l", 1, 3)
        .remove(1, "l", 0, 2)
        .done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [12]);
}

#[test]
fn concurrent_sets_of_one_element_last_writer_wins() {
    let a = B::new(10, 2)
        .set_at(1, "l", &[Step::I(2)], int(1), false, 3)
        .done();
    let b = B::new(20, 3)
        .set_at(1, "l", &[Step::I(2)], int(2), false, 3)
        .done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [10, 11, 2]);
}

#[test]
fn newer_move_of_the_same_element_wins() {
    let a = B::new(10, 2).mv(1, "l", 0, 1, 3).done();
    let b = B::new(20, 3).mv(1, "l", 0, 2, 3).done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [11, 12, 10]);
    let a = B::new(30, 2).mv(1, "l", 0, 1, 3).done();
    let b = B::new(20, 3).mv(1, "l", 0, 2, 3).done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [11, 10, 12]);
}

#[test]
fn moves_of_different_elements_both_apply() {
    let a = B::new(10, 2).mv(1, "l", 0, 2, 3).done();
    let b = B::new(20, 3).mv(1, "l", 2, 0, 3).done();
    // A: [11, 12, 10]; B: [12, 10, 11]; both moves stand.
    let s = list(&converge(with_list(), a, b), 1, "l");
    let mut sorted = s.clone();
    sorted.sort();
    assert_eq!(sorted, [10, 11, 12]);
    assert_eq!(s, [12, 11, 10]);
}

#[test]
fn erase_wins_over_a_move_of_the_same_element() {
    let a = B::new(10, 2).remove(1, "l", 0, 3).done();
    let b = B::new(20, 3).mv(1, "l", 0, 2, 3).done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [11, 12]);
}

#[test]
fn set_follows_a_moved_element() {
    let a = B::new(10, 2).mv(1, "l", 0, 2, 3).done();
    let b = B::new(20, 3)
        .set_at(1, "l", &[Step::I(0)], int(99), false, 3)
        .done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [11, 12, 99]);
}

#[test]
fn insert_and_move_to_one_position_are_ordered_by_time() {
    // A moves 12 to the front (older); B inserts 1 at the front (newer): the move goes first.
    let a = B::new(10, 2).mv(1, "l", 2, 0, 3).done();
    let b = B::new(20, 3).insert(1, "l", 0, int(1), 3).done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [12, 1, 10, 11]);
    let a = B::new(30, 2).mv(1, "l", 2, 0, 3).done();
    let b = B::new(20, 3).insert(1, "l", 0, int(1), 3).done();
    assert_eq!(list(&converge(with_list(), a, b), 1, "l"), [1, 12, 10, 11]);
}

#[test]
fn clear_beats_concurrent_element_operations_regardless_of_time() {
    let a = B::new(10, 2).clear(1, "l", CollectionType::List).done();
    let b = B::new(20, 3)
        .insert(1, "l", 3, int(1), 3)
        .mv(1, "l", 0, 1, 4)
        .remove(1, "l", 0, 4)
        .set_at(1, "l", &[Step::I(0)], int(5), false, 3)
        .done();
    assert_eq!(
        list(&converge(with_list(), a, b), 1, "l"),
        Vec::<i64>::new()
    );
}

#[test]
fn clear_vs_clear_keeps_the_newer_clear_and_its_inserts() {
    // realm-core Transform_ArrayClearVsArrayClear_TimestampBased.
    for (ta, tb, expected) in [(10, 20, [2]), (20, 10, [1])] {
        let a = B::new(ta, 2)
            .clear(1, "l", CollectionType::List)
            .insert(1, "l", 0, int(1), 0)
            .done();
        let b = B::new(tb, 3)
            .clear(1, "l", CollectionType::List)
            .insert(1, "l", 0, int(2), 0)
            .done();
        assert_eq!(list(&converge(with_list(), a, b), 1, "l"), expected);
    }
}

#[test]
fn list_edits_follow_into_embedded_elements() {
    // A[1].el = [E{x:0}, E{x:0}]; A inserts a new first element; B writes x of element 1.
    let setup = B::new(0, 1)
        .create(1)
        .insert(1, "el", 0, Payload::ObjectValue, 0)
        .insert(1, "el", 1, Payload::ObjectValue, 1)
        .done();
    let a = B::new(10, 2)
        .insert(1, "el", 0, Payload::ObjectValue, 2)
        .done();
    let b = B::new(20, 3)
        .set_at(1, "el", &[Step::I(1), Step::K("x")], int(7), false, 0)
        .done();
    let s = converge(setup.clone(), a, b);
    let xs: Vec<Field> = match field(&s, 1, "el") {
        Field::List(items) => items
            .into_iter()
            .map(|e| match e {
                Element::Embedded(o) => o.fields["x"].clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(xs, [0, 0, 7].map(|v| Field::Value(Val::Int(v))));
    // Erasing that element instead drops the write inside it.
    let a = B::new(10, 2).remove(1, "el", 1, 2).done();
    let b = B::new(20, 3)
        .set_at(1, "el", &[Step::I(1), Step::K("x")], int(7), false, 0)
        .done();
    let s = converge(setup, a, b);
    assert!(matches!(field(&s, 1, "el"), Field::List(items) if items.len() == 1));
}

#[test]
fn unequal_prior_sizes_are_a_transform_error() {
    let mut a = [B::new(10, 2).insert(1, "l", 0, int(1), 3).done()];
    let mut b = [B::new(20, 3).insert(1, "l", 0, int(2), 4).done()];
    let before = (a.clone(), b.clone());
    assert_eq!(
        transform(&mut a, &mut b),
        Err(TransformError::PriorSizeMismatch { left: 3, right: 4 })
    );
    assert_eq!((a, b), before, "a failed transform changes nothing");
}

// --- sets and dictionaries ------------------------------------------------------------------

#[test]
fn set_insert_vs_set_insert_of_one_value_is_one_element() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2).set_insert(1, 5).set_insert(1, 6).done();
    let b = B::new(20, 3).set_insert(1, 5).done();
    assert_eq!(
        field(&converge(setup, a, b), 1, "st"),
        Field::Set(vec![Val::Int(5), Val::Int(6)])
    );
}

#[test]
fn set_erase_vs_set_insert_the_latest_wins() {
    let setup = B::new(0, 1).create(1).set_insert(1, 5).done();
    for (ta, tb, expected) in [(10, 20, vec![Val::Int(5)]), (20, 10, vec![])] {
        let a = B::new(ta, 2).set_erase(1, 5).done();
        let b = B::new(tb, 3).set_erase(1, 5).set_insert(1, 5).done();
        assert_eq!(
            field(&converge(setup.clone(), a, b), 1, "st"),
            Field::Set(expected)
        );
    }
}

#[test]
fn set_insert_vs_clear_clear_wins() {
    // realm-core Transform_SetInsert_Clear: the clear wins even against a newer insert.
    let setup = B::new(0, 1).create(1).set_insert(1, 1).done();
    let a = B::new(10, 2).clear(1, "st", CollectionType::Set).done();
    let b = B::new(20, 3).set_insert(1, 2).set_erase(1, 1).done();
    assert_eq!(field(&converge(setup, a, b), 1, "st"), Field::Set(vec![]));
}

#[test]
fn dictionary_writes_of_one_key_last_writer_wins_erase_included() {
    let setup = B::new(0, 1)
        .create(1)
        .set_at(1, "d", &[Step::K("k")], int(1), false, 0)
        .done();
    let a = B::new(10, 2)
        .set_at(1, "d", &[Step::K("k")], Payload::Erased, false, 0)
        .done();
    let b = B::new(20, 3)
        .set_at(1, "d", &[Step::K("k")], int(2), false, 0)
        .set_at(1, "d", &[Step::K("j")], int(3), false, 0)
        .done();
    let s = converge(setup.clone(), a.clone(), b);
    match field(&s, 1, "d") {
        Field::Dictionary(d) => {
            assert_eq!(d.get("k"), Some(&Element::Value(Val::Int(2))));
            assert_eq!(d.get("j"), Some(&Element::Value(Val::Int(3))));
        }
        other => panic!("{other:?}"),
    }
    let b = B::new(5, 3)
        .set_at(1, "d", &[Step::K("k")], int(2), false, 0)
        .done();
    match field(&converge(setup, a, b), 1, "d") {
        Field::Dictionary(d) => assert!(d.is_empty(), "the newer erase wins"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dictionary_clear_beats_concurrent_writes() {
    let setup = B::new(0, 1)
        .create(1)
        .set_at(1, "d", &[Step::K("k")], int(1), false, 0)
        .done();
    let a = B::new(10, 2)
        .clear(1, "d", CollectionType::Dictionary)
        .done();
    let b = B::new(20, 3)
        .set_at(1, "d", &[Step::K("x")], int(2), false, 0)
        .done();
    assert_eq!(
        field(&converge(setup, a, b), 1, "d"),
        Field::Dictionary(Default::default())
    );
}

// --- schema --------------------------------------------------------------------------------

fn add_column(
    table: &'static str,
    name: &'static str,
    t: PayloadType,
) -> impl FnOnce(&mut Changeset) -> Instruction {
    move |cs| {
        Instruction::AddColumn(AddColumn {
            table: cs.intern(table),
            field: cs.intern(name),
            column_type: ColumnType::Value(t),
            nullable: true,
            collection: ColumnCollection::Single,
        })
    }
}

#[test]
fn identical_concurrent_schema_additions_merge() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2)
        .raw(add_column("A", "z", PayloadType::String))
        .set(1, "z", Payload::String("a".into()))
        .done();
    let b = B::new(20, 3)
        .raw(add_column("A", "z", PayloadType::String))
        .set(1, "z", Payload::String("b".into()))
        .done();
    assert_eq!(
        value(&converge(setup, a, b), 1, "z"),
        Val::String("b".into())
    );
}

#[test]
fn conflicting_schema_additions_are_a_transform_error() {
    let mut a = [B::new(10, 2)
        .raw(add_column("A", "z", PayloadType::String))
        .done()];
    let mut b = [B::new(20, 3)
        .raw(add_column("A", "z", PayloadType::Int))
        .done()];
    let err = transform(&mut a, &mut b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "schema mismatch: AddColumn A.z: String? here, AddColumn A.z: Int? incoming"
    );
}

/// Two definitions of one table are a schema mismatch naming the table and both definitions.
#[test]
fn conflicting_table_definitions_name_the_table() {
    let table = |key_type| {
        move |cs: &mut Changeset| {
            Instruction::AddTable(AddTable {
                table: cs.intern("Other"),
                kind: TableKind::TopLevel(PrimaryKeySpec {
                    field: cs.intern("_id"),
                    key_type,
                    nullable: false,
                }),
            })
        }
    };
    let mut a = [B::new(10, 2).raw(table(PayloadType::Int)).done()];
    let mut b = [B::new(20, 3).raw(table(PayloadType::String)).done()];
    let err = transform(&mut a, &mut b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "schema mismatch: AddTable Other (top-level, pk _id: Int) here, AddTable Other \
         (top-level, pk _id: String) incoming"
    );
}

#[test]
fn erase_column_discards_concurrent_writes_to_it() {
    let setup = B::new(0, 1).create(1).done();
    let a = B::new(10, 2)
        .raw(|cs| Instruction::EraseColumn {
            table: cs.intern("A"),
            field: cs.intern("n"),
        })
        .done();
    let b = B::new(20, 3).set(1, "n", int(3)).done();
    let s = converge(setup, a, b);
    assert!(!s
        .object("A", &Key::Int(1))
        .unwrap()
        .fields
        .contains_key("n"));
}

/// Each schema instruction of `cs` with its table and field names spelled out (another
/// instruction in its `Debug` form).
fn spelled(cs: &Changeset) -> Vec<String> {
    let name = |s: InternString| cs.string(s).unwrap_or("?").to_owned();
    cs.instructions
        .iter()
        .map(|i| match i {
            Instruction::EraseTable { table } => format!("EraseTable {}", name(*table)),
            Instruction::EraseColumn { table, field } => {
                format!("EraseColumn {}.{}", name(*table), name(*field))
            }
            Instruction::AddColumn(add) => {
                format!("AddColumn {}.{}", name(add.table), name(add.field))
            }
            Instruction::ArrayInsert(insert) => format!(
                "ArrayInsert {}.{}{:?} of {}",
                name(insert.path.table),
                name(insert.path.field),
                insert.path.path.as_slice(),
                insert.prior_size
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

/// An `AddColumn` of `A.name`, a link to `target`.
fn link_column(
    name: &'static str,
    target: &'static str,
) -> impl FnOnce(&mut Changeset) -> Instruction {
    move |cs| {
        Instruction::AddColumn(AddColumn {
            table: cs.intern("A"),
            field: cs.intern(name),
            column_type: ColumnType::Link {
                target_table: cs.intern(target),
            },
            nullable: true,
            collection: ColumnCollection::Single,
        })
    }
}

/// docs/ot.md, schema rules: an `AddColumn` linking to a table erased concurrently is dropped,
/// and the erasing side gets an `EraseColumn` of it prepended to its `EraseTable`, so both
/// replicas end without the column. Both peers' points of view, two link columns (their
/// `EraseColumn`s in the order of the columns), and other instructions around them, so that
/// the prepended instructions must land right before their own op.
#[test]
fn a_link_column_to_a_concurrently_erased_table_is_dropped_on_both_sides() {
    let link_to_t = |name| link_column(name, "T");
    let eraser = || {
        B::new(10, 2)
            .raw(add_column("A", "x", PayloadType::Int))
            .raw(|cs| Instruction::EraseTable {
                table: cs.intern("T"),
            })
            .raw(add_column("A", "y", PayloadType::Int))
            .done()
    };
    let adder = || {
        B::new(20, 3)
            .raw(link_to_t("t"))
            .raw(add_column("A", "w", PayloadType::Int))
            .raw(link_to_t("u"))
            .done()
    };
    let erased = vec![
        "AddColumn A.x".to_owned(),
        "EraseColumn A.t".to_owned(),
        "EraseColumn A.u".to_owned(),
        "EraseTable T".to_owned(),
        "AddColumn A.y".to_owned(),
    ];
    let added = vec!["AddColumn A.w".to_owned()];

    // The peer holding the erase receives the link column, and the other way round.
    let (mut local, mut incoming) = ([eraser()], [adder()]);
    transform(&mut local, &mut incoming).unwrap();
    assert_eq!(spelled(&local[0]), erased);
    assert_eq!(spelled(&incoming[0]), added);
    let (mut local, mut incoming) = ([adder()], [eraser()]);
    transform(&mut local, &mut incoming).unwrap();
    assert_eq!(spelled(&local[0]), added);
    assert_eq!(spelled(&incoming[0]), erased);
}

/// The prepended `EraseColumn`s land before their own `EraseTable`s when those are not in the
/// first changeset of a side: after a changeset the merge leaves as it is and one whose
/// instruction it only shifts, in two changesets of their own, from both peers' points of view.
#[test]
fn prepended_erasures_land_in_their_own_changesets_further_along_a_side() {
    let erase = |table: &'static str| {
        move |cs: &mut Changeset| Instruction::EraseTable {
            table: cs.intern(table),
        }
    };
    let eraser = || {
        vec![
            B::new(10, 2)
                .raw(add_column("A", "x", PayloadType::Int))
                .done(),
            B::new(11, 2).insert(1, "l", 1, int(7), 2).done(),
            B::new(12, 2).raw(erase("T")).done(),
            B::new(13, 2).raw(erase("U")).done(),
        ]
    };
    let adder = || {
        vec![
            B::new(20, 3).raw(link_column("t", "T")).done(),
            B::new(21, 3).insert(1, "l", 0, int(8), 2).done(),
            B::new(22, 3).raw(link_column("u", "U")).done(),
        ]
    };
    let erased: Vec<Vec<&str>> = vec![
        vec!["AddColumn A.x"],
        vec!["ArrayInsert A.l[Index(2)] of 3"],
        vec!["EraseColumn A.t", "EraseTable T"],
        vec!["EraseColumn A.u", "EraseTable U"],
    ];
    let added: Vec<Vec<&str>> = vec![vec![], vec!["ArrayInsert A.l[Index(0)] of 3"], vec![]];
    let spell_all = |all: &[Changeset]| -> Vec<Vec<String>> { all.iter().map(spelled).collect() };
    let (mut local, mut incoming) = (eraser(), adder());
    transform(&mut local, &mut incoming).unwrap();
    assert_eq!(spell_all(&local), erased);
    assert_eq!(spell_all(&incoming), added);
    let (mut local, mut incoming) = (adder(), eraser());
    transform(&mut local, &mut incoming).unwrap();
    assert_eq!(spell_all(&local), added);
    assert_eq!(spell_all(&incoming), erased);
}

/// A list instruction whose index is out of range for the list it states (or a path step at
/// `u32::MAX`) is a `ListIndexOutOfRange` from either side, never a panic or an index that
/// wraps, and both sides are left as they were; the boundaries just inside are merged. The
/// inputs that once overflowed: an insert at `u32::MAX` into an empty list, and two inserts
/// into a list of `u32::MAX` elements.
#[test]
fn list_indices_out_of_range_are_refused_not_wrapped() {
    let max = u32::MAX;
    let fine = || B::new(10, 2).insert(1, "l", 0, int(1), 0).done();
    let refused = [
        (
            B::new(20, 3).insert(1, "l", max, int(2), 0).done(),
            max,
            Some(0),
        ),
        (
            B::new(20, 3).insert(1, "l", max, int(2), max).done(),
            max,
            Some(max),
        ),
        (
            B::new(20, 3).insert(1, "l", 3, int(2), 2).done(),
            3,
            Some(2),
        ),
        (B::new(20, 3).remove(1, "l", 2, 2).done(), 2, Some(2)),
        (
            B::new(20, 3)
                .set_at(1, "l", &[Step::I(2)], int(2), false, 2)
                .done(),
            2,
            Some(2),
        ),
        (B::new(20, 3).mv(1, "l", 0, 2, 2).done(), 2, Some(2)),
        (B::new(20, 3).mv(1, "l", 5, 0, 2).done(), 5, Some(2)),
        (
            B::new(20, 3).add_at(1, "l", &[Step::I(max)], 1).done(),
            max,
            None,
        ),
    ];
    for (bad, index, prior_size) in refused {
        let expected = TransformError::ListIndexOutOfRange { index, prior_size };
        for bad_is_local in [false, true] {
            let (mut local, mut incoming) = if bad_is_local {
                ([bad.clone()], [fine()])
            } else {
                ([fine()], [bad.clone()])
            };
            let (before_local, before_incoming) = (local.clone(), incoming.clone());
            assert_eq!(
                transform(&mut local, &mut incoming),
                Err(expected.clone()),
                "{bad}"
            );
            assert_eq!((local, incoming), (before_local, before_incoming));
        }
    }
    // Just inside: an append, and the last element erased, set and moved.
    for ok in [
        B::new(20, 3).insert(1, "l", 2, int(2), 2).done(),
        B::new(20, 3).remove(1, "l", 1, 2).done(),
        B::new(20, 3)
            .set_at(1, "l", &[Step::I(1)], int(2), false, 2)
            .done(),
        B::new(20, 3).mv(1, "l", 1, 0, 2).done(),
    ] {
        let other = B::new(10, 2).insert(1, "l", 0, int(1), 2).done();
        transform(&mut [other], &mut [ok.clone()]).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

/// Writes to a link column that a concurrent `EraseTable` of its target drops are dropped with
/// it, in the changesets after its `AddColumn` too (a new app version adds the property, then
/// writes it) and whatever they write (a link, null): the erasing side never has the column,
/// and the adding side erases it with the prepended `EraseColumn`. A write to another column
/// stays. Both peers' points of view. Before, such a write survived and its side's merged form
/// failed to apply on the other ("no column A.t"; found by a new user's trial).
#[test]
fn writes_to_a_dropped_link_column_are_dropped_with_it() {
    let to_t = |cs: &mut Changeset| {
        Payload::Link(Link {
            target_table: cs.intern("T"),
            target: PrimaryKey::Int(1),
        })
    };
    let eraser = || {
        vec![B::new(10, 2)
            .raw(|cs| Instruction::EraseTable {
                table: cs.intern("T"),
            })
            .done()]
    };
    let adder = || {
        let mut link = B::new(21, 3);
        let value = to_t(&mut link.cs);
        vec![
            B::new(20, 3).raw(link_column("t", "T")).done(),
            link.set(1, "t", value).done(),
            B::new(22, 3).set(1, "t", Payload::Null).done(),
            B::new(23, 3).set(1, "n", int(3)).done(),
        ]
    };
    let erased: Vec<Vec<&str>> = vec![vec!["EraseColumn A.t", "EraseTable T"]];
    let check_added = |added: &[Changeset]| {
        let lines: Vec<Vec<String>> = added.iter().map(spelled).collect();
        assert_eq!(
            lines[..3],
            [vec![], vec![], vec![]] as [Vec<String>; 3],
            "{lines:?}"
        );
        assert_eq!(lines[3].len(), 1, "{lines:?}");
        assert!(lines[3][0].contains("Update"), "{lines:?}");
    };
    let (mut local, mut incoming) = (eraser(), adder());
    transform(&mut local, &mut incoming).unwrap();
    assert_eq!(local.iter().map(spelled).collect::<Vec<_>>(), erased);
    check_added(&incoming);
    let (mut local, mut incoming) = (adder(), eraser());
    transform(&mut local, &mut incoming).unwrap();
    check_added(&local);
    assert_eq!(incoming.iter().map(spelled).collect::<Vec<_>>(), erased);
}
