//! Exhaustive small-scope check of the merge rules: every combination of up to three
//! concurrent instructions on one shared field or collection, through a real server and three
//! clients (`tests/harness`), compared with each other and with an oracle.
//!
//! # The scope
//!
//! One object `A[1]` with a nullable int `n`, a mixed `m`, a list `l: [int]`, a set
//! `st: set<int>`, a dictionary `d: {string: int?}` and an embedded object `e` of class `E`,
//! which has the same five fields. Every peer starts from
//! `n = 5, m = 5, l = [100, 101, 102], st = {1, 2}, d = {a: 1, b: 2}`, in `A[1]` and in `A[1].e`.
//!
//! Each *scope* is one of those ten fields (five top-level, five under the embedded path) with
//! its instruction kinds ([`scopes`]): for fields, Update with an int, with null, with the
//! default flag, with a string (mixed only), AddInteger; for lists, insert at the front and at
//! the end, set, a move forwards and one backwards, erase of two different elements, clear; for
//! sets, insert and erase of a present and of an absent value, clear; for dictionaries, set of a
//! present and of a new key, erase, AddInteger to an entry, clear. Every scope also has the two
//! object kinds: CreateObject and EraseObject of `A[1]` at the top level, and creating (Update
//! to ObjectValue) and clearing (Update to null) `A[1].e` under the embedded path.
//!
//! # The enumeration
//!
//! Each of the three clients makes one changeset of one instruction of the scope, or nothing;
//! all three are made offline, before any sync, so they are pairwise concurrent. Client `c`
//! commits at timestamp `10 * (c + 1)` (file idents 2, 3, 4). Every ordered triple of
//! `kinds ∪ {nothing}` is run, so every single instruction, every pair and every triple of
//! kinds appears, in every order of timestamps: the clients are interchangeable apart from
//! their timestamps, so fixing the timestamp order by client and enumerating ordered triples
//! covers every assignment of timestamps to instructions.
//!
//! Schedules: every one of the 3! orders in which the three uploads reach the server, each with
//! two download schedules: *eager* (after each upload every client downloads everything the
//! server has, so clients integrate others' changesets before and after their own upload) and
//! *lazy* (all uploads, then all downloads). With concurrent changesets, when a client downloads
//! does not change what it integrates (it depends only on the server's history), so these two
//! schedules stand for every interleaving of downloads; the upload order is what decides the
//! server's history, and all of them are run.
//!
//! Cases: `6 * 2 * Σ (kinds + 1)^3` over the ten scopes, asserted against [`EXPECTED_CASES`].
//! No sampling is needed at this size; a larger scope (four clients, or two instructions per
//! client) would need sampling, which this test does not do.
//!
//! # What is checked
//!
//! After each schedule the three clients and the server are identical in full, and the
//! server's state matches this oracle, which applies docs/ot.md's rules to the instructions and
//! their timestamps alone (it shares no code with `tandem::ot`):
//!
//! - **object**: `A[1]` exists iff no EraseObject was made (erase wins over everything
//!   concurrent; CreateObject of an existing object changes nothing). `A[1].e` is null iff some
//!   client set it to null (a concurrent ObjectValue loses to any value, and a write above
//!   discards writes below it); an ObjectValue on an existing `e` changes nothing.
//! - **field** (`n`, `m`, a dictionary entry): let W be the newest non-default Update (or
//!   dictionary erase). If W exists: W's value plus the AddIntegers newer than W if W is an
//!   int; W's value (null, a string, absent) otherwise. Else, if default Updates exist: the
//!   newest one's value plus every AddInteger (adds survive a default write whatever the time)
//!   if it is an int, its value otherwise. Else: the starting value plus every AddInteger, or
//!   absent for an absent entry.
//! - **set**: empty if any Clear was made (a clear wins over concurrent element operations
//!   whatever the time); otherwise each value is present iff the newest SetInsert/SetErase of it
//!   is an insert, or, if none, iff it was present at the start.
//! - **dictionary**: empty if any Clear was made; otherwise each key follows the field rule.
//! - **list**: empty if any Clear was made; otherwise its elements as a multiset (the order is
//!   what the tie rules decide, and is checked only for convergence): each starting element
//!   that no client erased, with the value of the newest set of it, plus every inserted value.

mod harness;

use std::collections::BTreeMap;

use harness::{Sim, ORDERS_OF_THREE as ORDERS};
use tandem::changeset::*;
use tandem::state::{Element, Field, Key, Object, State, Val};

/// `6 * 2 * Σ (kinds + 1)^3` with kinds per scope n 6, m 7, l 10, st 7, d 7, twice (top level
/// and embedded): `12 * 2 * (343 + 512 + 1331 + 512 + 512)`.
const EXPECTED_CASES: usize = 77_040;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SetInt,
    SetNull,
    SetDefault,
    SetString,
    Add,
    /// CreateObject of `A[1]`, or, under the embedded path, `A[1].e = ObjectValue`.
    Create,
    /// EraseObject of `A[1]`, or, under the embedded path, `A[1].e = null`.
    Erase,
    ListInsert(u32),
    ListSet(u32),
    ListMove(u32, u32),
    ListErase(u32),
    Clear,
    SetInsert(i64),
    SetErase(i64),
    DictSet(&'static str),
    DictErase(&'static str),
    DictAdd(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Int,
    Mixed,
    List,
    Set,
    Dictionary,
}

#[derive(Clone, Debug)]
struct Scope {
    field: &'static str,
    shape: Shape,
    embedded: bool,
    kinds: Vec<Kind>,
}

fn scopes() -> Vec<Scope> {
    use Kind::*;
    let object = [Create, Erase];
    let shapes: [(&str, Shape, Vec<Kind>); 5] = [
        ("n", Shape::Int, vec![SetInt, SetNull, SetDefault, Add]),
        (
            "m",
            Shape::Mixed,
            vec![SetInt, SetNull, SetDefault, SetString, Add],
        ),
        (
            "l",
            Shape::List,
            vec![
                ListInsert(0),
                ListInsert(3),
                ListSet(1),
                ListMove(0, 2),
                ListMove(2, 0),
                ListErase(0),
                ListErase(1),
                Clear,
            ],
        ),
        (
            "st",
            Shape::Set,
            vec![SetInsert(1), SetInsert(3), SetErase(1), SetErase(3), Clear],
        ),
        (
            "d",
            Shape::Dictionary,
            vec![
                DictSet("a"),
                DictSet("c"),
                DictErase("a"),
                DictAdd("a"),
                Clear,
            ],
        ),
    ];
    let mut out = Vec::new();
    for embedded in [false, true] {
        for (field, shape, kinds) in &shapes {
            let mut kinds = kinds.clone();
            kinds.extend(object);
            out.push(Scope {
                field,
                shape: *shape,
                embedded,
                kinds,
            });
        }
    }
    out
}

/// One client's instruction, with what the oracle needs.
#[derive(Clone, Copy, Debug)]
struct Made {
    kind: Kind,
    client: usize,
    timestamp: u64,
}

impl Made {
    fn new(kind: Kind, client: usize) -> Self {
        Made {
            kind,
            client,
            timestamp: 10 * (client as u64 + 1),
        }
    }
    /// The int an Update or list set writes.
    fn value(&self) -> i64 {
        10 * (self.client as i64 + 1)
    }
    /// The int a default Update writes.
    fn default_value(&self) -> i64 {
        100 + self.client as i64
    }
    /// The string a mixed Update writes.
    fn string(&self) -> String {
        format!("s{}", self.client)
    }
    /// The AddInteger amount: distinct bits, so a sum says which adds survived.
    fn amount(&self) -> i64 {
        1 << self.client
    }
    /// The value a list insert writes.
    fn inserted(&self) -> i64 {
        1000 + self.client as i64
    }
}

// ---------------------------------------------------------------------------------------
// Changesets.

enum Step {
    I(u32),
    K(&'static str),
}

fn path(cs: &mut Changeset, scope: &Scope, steps: &[Step]) -> FieldPath {
    let table = cs.intern("A");
    let mut path = Vec::new();
    let field = if scope.embedded {
        path.push(PathElement::Key(cs.intern(scope.field)));
        cs.intern("e")
    } else {
        cs.intern(scope.field)
    };
    for s in steps {
        path.push(match s {
            Step::I(i) => PathElement::Index(*i),
            Step::K(k) => PathElement::Key(cs.intern(k)),
        });
    }
    FieldPath {
        table,
        object: PrimaryKey::Int(1),
        field,
        path: path.into(),
    }
}

fn update(path: FieldPath, value: Payload, is_default: bool, prior_size: u32) -> Instruction {
    Instruction::Update(Update {
        path,
        value,
        is_default,
        prior_size,
    })
}

fn changeset_of(scope: &Scope, made: &Made) -> Changeset {
    use Kind::*;
    let mut cs = Changeset::new();
    let size = 3;
    let instr = match made.kind {
        SetInt => update(
            path(&mut cs, scope, &[]),
            Payload::Int(made.value()),
            false,
            0,
        ),
        SetNull => update(path(&mut cs, scope, &[]), Payload::Null, false, 0),
        SetDefault => update(
            path(&mut cs, scope, &[]),
            Payload::Int(made.default_value()),
            true,
            0,
        ),
        SetString => update(
            path(&mut cs, scope, &[]),
            Payload::String(made.string().into()),
            false,
            0,
        ),
        Add => Instruction::AddInteger(AddInteger {
            path: path(&mut cs, scope, &[]),
            value: made.amount(),
        }),
        Create | Erase if scope.embedded => {
            let table = cs.intern("A");
            let field = cs.intern("e");
            let value = if made.kind == Create {
                Payload::ObjectValue
            } else {
                Payload::Null
            };
            update(
                FieldPath {
                    table,
                    object: PrimaryKey::Int(1),
                    field,
                    path: Default::default(),
                },
                value,
                false,
                0,
            )
        }
        Create => Instruction::CreateObject {
            table: cs.intern("A"),
            object: PrimaryKey::Int(1),
        },
        Erase => Instruction::EraseObject {
            table: cs.intern("A"),
            object: PrimaryKey::Int(1),
        },
        ListInsert(i) => Instruction::ArrayInsert(ArrayInsert {
            path: path(&mut cs, scope, &[Step::I(i)]),
            value: Payload::Int(made.inserted()),
            prior_size: size,
        }),
        ListSet(i) => update(
            path(&mut cs, scope, &[Step::I(i)]),
            Payload::Int(made.value()),
            false,
            size,
        ),
        ListMove(from, to) => Instruction::ArrayMove(ArrayMove {
            path: path(&mut cs, scope, &[Step::I(from)]),
            to,
            prior_size: size,
        }),
        ListErase(i) => Instruction::ArrayErase(ArrayErase {
            path: path(&mut cs, scope, &[Step::I(i)]),
            prior_size: size,
        }),
        Clear => Instruction::Clear(tandem::changeset::Clear {
            path: path(&mut cs, scope, &[]),
            collection_type: match scope.shape {
                Shape::List => CollectionType::List,
                Shape::Set => CollectionType::Set,
                _ => CollectionType::Dictionary,
            },
        }),
        SetInsert(v) => Instruction::SetInsert(SetValue {
            path: path(&mut cs, scope, &[]),
            value: Payload::Int(v),
        }),
        SetErase(v) => Instruction::SetErase(SetValue {
            path: path(&mut cs, scope, &[]),
            value: Payload::Int(v),
        }),
        DictSet(k) => update(
            path(&mut cs, scope, &[Step::K(k)]),
            Payload::Int(made.value()),
            false,
            0,
        ),
        DictErase(k) => update(
            path(&mut cs, scope, &[Step::K(k)]),
            Payload::Erased,
            false,
            0,
        ),
        DictAdd(k) => Instruction::AddInteger(AddInteger {
            path: path(&mut cs, scope, &[Step::K(k)]),
            value: made.amount(),
        }),
    };
    cs.push(instr);
    cs
}

/// Schema and starting state: A(_id int) {n int?, m mixed, l [int], st set<int>,
/// d {string: int?}, e E?}, E {the same five}; A[1] and A[1].e filled as the module says.
fn setup() -> Changeset {
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
    for table in [a, e] {
        let columns: [(&str, ColumnType, bool, ColumnCollection); 5] = [
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
        ];
        for (name, column_type, nullable, collection) in columns {
            let field = cs.intern(name);
            cs.push(Instruction::AddColumn(AddColumn {
                table,
                field,
                column_type,
                nullable,
                collection,
            }));
        }
    }
    let field = cs.intern("e");
    cs.push(Instruction::AddColumn(AddColumn {
        table: a,
        field,
        column_type: ColumnType::Link { target_table: e },
        nullable: true,
        collection: ColumnCollection::Single,
    }));
    cs.push(Instruction::CreateObject {
        table: a,
        object: PrimaryKey::Int(1),
    });
    let top = |field| Scope {
        field,
        shape: Shape::Int,
        embedded: false,
        kinds: vec![],
    };
    let e_path = path(&mut cs, &top("e"), &[]);
    cs.push(update(e_path, Payload::ObjectValue, false, 0));
    for embedded in [false, true] {
        let scope = |field| Scope {
            embedded,
            ..top(field)
        };
        for field in ["n", "m"] {
            let p = path(&mut cs, &scope(field), &[]);
            cs.push(update(p, Payload::Int(5), false, 0));
        }
        for (i, v) in [100, 101, 102].into_iter().enumerate() {
            let p = path(&mut cs, &scope("l"), &[Step::I(i as u32)]);
            cs.push(Instruction::ArrayInsert(ArrayInsert {
                path: p,
                value: Payload::Int(v),
                prior_size: i as u32,
            }));
        }
        for v in [1, 2] {
            let p = path(&mut cs, &scope("st"), &[]);
            cs.push(Instruction::SetInsert(SetValue {
                path: p,
                value: Payload::Int(v),
            }));
        }
        for (k, v) in [("a", 1), ("b", 2)] {
            let p = path(&mut cs, &scope("d"), &[Step::K(k)]);
            cs.push(update(p, Payload::Int(v), false, 0));
        }
    }
    cs
}

// ---------------------------------------------------------------------------------------
// The oracle.

/// A field's value under the oracle's rule; `None` is an absent dictionary entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Absent,
    Value(Val),
}

/// A write to a field or entry, as the oracle sees it.
enum Write {
    Value(Option<Val>, bool),
    Add(i64),
}

/// The field rule of the module doc.
fn field_rule(start: Option<Val>, writes: &[(u64, Write)]) -> Expect {
    let newest = |default: bool| {
        writes
            .iter()
            .filter_map(|(t, w)| match w {
                Write::Value(v, d) if *d == default => Some((*t, v.clone())),
                _ => None,
            })
            .max_by_key(|(t, _)| *t)
    };
    let adds_after = |after: u64| -> i64 {
        writes
            .iter()
            .filter_map(|(t, w)| match w {
                Write::Add(a) if *t > after => Some(*a),
                _ => None,
            })
            .sum()
    };
    let (value, after) = match (newest(false), newest(true)) {
        (Some((t, v)), _) => (v, t),
        (None, Some((_, v))) => (v, 0),
        (None, None) => (start, 0),
    };
    match value {
        None => Expect::Absent,
        Some(Val::Int(v)) => Expect::Value(Val::Int(v + adds_after(after))),
        Some(other) => Expect::Value(other),
    }
}

fn start_field(shape: Shape) -> Field {
    match shape {
        Shape::Int | Shape::Mixed => Field::Value(Val::Int(5)),
        Shape::List => Field::List(
            [100, 101, 102]
                .map(|v| Element::Value(Val::Int(v)))
                .to_vec(),
        ),
        Shape::Set => Field::Set(vec![Val::Int(1), Val::Int(2)]),
        Shape::Dictionary => Field::Dictionary(
            [("a", 1), ("b", 2)]
                .map(|(k, v)| (k.to_string(), Element::Value(Val::Int(v))))
                .into(),
        ),
    }
}

/// What the scope's field must hold, or `None` when the oracle says the object (or the
/// embedded object) is gone. For lists, the elements as a sorted multiset.
fn oracle(scope: &Scope, made: &[Made]) -> Option<Field> {
    use Kind::*;
    if made.iter().any(|m| m.kind == Erase) {
        return None;
    }
    let any_clear = made.iter().any(|m| m.kind == Clear);
    Some(match scope.shape {
        Shape::Int | Shape::Mixed => {
            let writes: Vec<(u64, Write)> = made
                .iter()
                .filter_map(|m| {
                    let w = match m.kind {
                        SetInt => Write::Value(Some(Val::Int(m.value())), false),
                        SetNull => Write::Value(Some(Val::Null), false),
                        SetDefault => Write::Value(Some(Val::Int(m.default_value())), true),
                        SetString => Write::Value(Some(Val::String(m.string())), false),
                        Add => Write::Add(m.amount()),
                        _ => return None,
                    };
                    Some((m.timestamp, w))
                })
                .collect();
            match field_rule(Some(Val::Int(5)), &writes) {
                Expect::Value(v) => Field::Value(v),
                Expect::Absent => unreachable!("a field is never absent"),
            }
        }
        Shape::Set => {
            let mut out = Vec::new();
            for v in [1, 2, 3] {
                let newest = made
                    .iter()
                    .filter(|m| matches!(m.kind, SetInsert(x) | SetErase(x) if x == v))
                    .max_by_key(|m| m.timestamp);
                let present = match newest {
                    Some(m) => matches!(m.kind, SetInsert(_)),
                    None => v <= 2,
                };
                if present && !any_clear {
                    out.push(Val::Int(v));
                }
            }
            Field::Set(out)
        }
        Shape::Dictionary => {
            let mut out = BTreeMap::new();
            for (key, start) in [("a", Some(1)), ("b", Some(2)), ("c", None)] {
                let writes: Vec<(u64, Write)> = made
                    .iter()
                    .filter_map(|m| {
                        let w = match m.kind {
                            DictSet(k) if k == key => {
                                Write::Value(Some(Val::Int(m.value())), false)
                            }
                            DictErase(k) if k == key => Write::Value(None, false),
                            DictAdd(k) if k == key => Write::Add(m.amount()),
                            _ => return None,
                        };
                        Some((m.timestamp, w))
                    })
                    .collect();
                if let Expect::Value(v) = field_rule(start.map(Val::Int), &writes) {
                    if !any_clear {
                        out.insert(key.to_string(), Element::Value(v));
                    }
                }
            }
            Field::Dictionary(out)
        }
        Shape::List => {
            let mut out = Vec::new();
            if !any_clear {
                for (i, start) in [100, 101, 102].into_iter().enumerate() {
                    let i = i as u32;
                    let erased = made.iter().any(|m| m.kind == ListErase(i));
                    let set = made
                        .iter()
                        .filter(|m| m.kind == ListSet(i))
                        .max_by_key(|m| m.timestamp);
                    if !erased {
                        out.push(set.map_or(start, Made::value));
                    }
                }
                out.extend(
                    made.iter()
                        .filter(|m| matches!(m.kind, ListInsert(_)))
                        .map(Made::inserted),
                );
            }
            out.sort_unstable();
            Field::List(
                out.into_iter()
                    .map(|v| Element::Value(Val::Int(v)))
                    .collect(),
            )
        }
    })
}

/// The scope's field as the state holds it (lists as a sorted multiset), or `None` if the
/// object or the embedded object is gone.
fn observed(state: &State, scope: &Scope) -> Option<Field> {
    let top: &Object = state.object("A", &Key::Int(1))?;
    let object = if scope.embedded {
        match top.fields.get("e")? {
            Field::Embedded(Some(inner)) => inner,
            _ => return None,
        }
    } else {
        top
    };
    let field = object.fields.get(scope.field)?.clone();
    Some(match field {
        Field::List(mut items) => {
            items.sort_by_key(|e| match e {
                Element::Value(Val::Int(v)) => *v,
                _ => i64::MIN,
            });
            Field::List(items)
        }
        other => other,
    })
}

// ---------------------------------------------------------------------------------------
// Running.

/// Runs one schedule from `start` (clients have committed); returns the converged server state.
fn run(start: &Sim, order: [usize; 3], eager: bool) -> Result<State, String> {
    let mut sim = start.clone();
    sim.sync_in_order(&order, eager)?;
    Ok(sim.server.state)
}

fn scope_name(scope: &Scope) -> String {
    format!("{}{}", if scope.embedded { "e." } else { "" }, scope.field)
}

/// The script of a failing case, for the report.
fn describe(scope: &Scope, made: &[Made], order: [usize; 3], eager: bool) -> String {
    let ops: Vec<String> = made
        .iter()
        .map(|m| format!("client {} at t={}: {:?}", m.client + 1, m.timestamp, m.kind))
        .collect();
    format!(
        "{} [{}], uploads by clients {:?}, {} downloads",
        scope_name(scope),
        ops.join("; "),
        order.map(|c| c + 1),
        if eager { "eager" } else { "lazy" }
    )
}

#[test]
fn every_small_scope_converges_to_the_oracle() {
    let mut seeded = Sim::new(3);
    seeded.seed(setup()).expect("setup applies");
    for scope in &scopes() {
        assert_eq!(
            observed(&seeded.server.state, scope),
            Some(start_field(scope.shape)),
            "the starting state of {}",
            scope.field
        );
    }

    let mut cases = 0usize;
    let mut failures = Vec::new();
    let mut failed = 0usize;
    let mut failed_by_scope: BTreeMap<String, usize> = BTreeMap::new();
    for scope in &scopes() {
        let choices: Vec<Option<Kind>> = std::iter::once(None)
            .chain(scope.kinds.iter().copied().map(Some))
            .collect();
        for &k0 in &choices {
            for &k1 in &choices {
                for &k2 in &choices {
                    let made: Vec<Made> = [k0, k1, k2]
                        .into_iter()
                        .enumerate()
                        .filter_map(|(c, k)| k.map(|k| Made::new(k, c)))
                        .collect();
                    let mut start = seeded.clone();
                    for m in &made {
                        start
                            .commit(m.client, changeset_of(scope, m), m.timestamp)
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    let expected = oracle(scope, &made);
                    for order in ORDERS {
                        for eager in [false, true] {
                            cases += 1;
                            let result = run(&start, order, eager).and_then(|state| {
                                let got = observed(&state, scope);
                                if got == expected {
                                    Ok(())
                                } else {
                                    Err(format!(
                                        "the oracle expects {expected:?}, every peer has {got:?}"
                                    ))
                                }
                            });
                            if let Err(e) = result {
                                failed += 1;
                                *failed_by_scope.entry(scope_name(scope)).or_insert(0) += 1;
                                if failures.len() < 12 {
                                    failures.push(format!(
                                        "{}\n  {}",
                                        describe(scope, &made, order, eager),
                                        e.lines().take(12).collect::<Vec<_>>().join("\n  ")
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("ot_exhaustive: {cases} cases, {failed} failed");
    assert!(
        failures.is_empty(),
        "{failed} of {cases} cases failed (by scope: {failed_by_scope:?}); the first ones:\n{}",
        failures.join("\n")
    );
    let by_formula: usize = scopes()
        .iter()
        .map(|s| 12 * (s.kinds.len() + 1).pow(3))
        .sum();
    assert_eq!(by_formula, EXPECTED_CASES, "the scopes changed");
    assert_eq!(cases, EXPECTED_CASES, "the enumeration shrank or grew");
}

/// The appliers' side of the AddInteger rule: a merge keeps an add that is newer than a write
/// of null, of a string (mixed) or a dictionary erase, and both appliers must then treat it as
/// a no-op. For every such triple (that write, an older-than-add integer write, the add) in
/// every upload order, the SQLite store replays the server's history and must reach the
/// reference state.
#[test]
fn the_store_applies_kept_adds_as_the_reference_does() {
    use tandem::store::{Config, Database};
    let mut seeded = Sim::new(3);
    seeded.seed(setup()).expect("setup applies");
    let tmp = tempfile::Builder::new()
        .prefix("tandem-ot-exhaustive-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let mut runs = 0;
    for scope in scopes() {
        let (write, set, add) = match scope.shape {
            Shape::Int => (Kind::SetNull, Kind::SetInt, Kind::Add),
            Shape::Mixed => (Kind::SetString, Kind::SetInt, Kind::Add),
            Shape::Dictionary => (Kind::DictErase("a"), Kind::DictSet("a"), Kind::DictAdd("a")),
            _ => continue,
        };
        let made = [Made::new(write, 0), Made::new(set, 1), Made::new(add, 2)];
        let mut start = seeded.clone();
        for m in &made {
            start
                .commit(m.client, changeset_of(&scope, m), m.timestamp)
                .unwrap();
        }
        for order in ORDERS {
            let state = run(&start, order, false).unwrap();
            let mut sim = start.clone();
            for c in order {
                sim.upload_one(c).unwrap();
            }
            let path = dir.join(format!("{runs}.sqlite"));
            let db = Database::open(
                &path,
                &tandem::model::Schema::new(vec![]).unwrap(),
                Config::default(),
            )
            .unwrap();
            for entry in &sim.server.history {
                db.apply_remote(&entry.changeset).unwrap_or_else(|e| {
                    panic!(
                        "{}: the store refused\n{}\n{e}",
                        scope_name(&scope),
                        entry.changeset
                    )
                });
            }
            assert_eq!(db.export_state().unwrap(), state, "{}", scope_name(&scope));
            assert_eq!(observed(&state, &scope), oracle(&scope, &made));
            runs += 1;
        }
    }
    assert_eq!(runs, 6 * 6, "three field kinds, twice, in six orders");
}
