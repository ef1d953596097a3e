//! Changeset codec benchmark: encode and decode one realistic 100,000-instruction changeset in
//! Realm's format, zlib level 1 on the encoded bytes, and the same instructions through
//! serde_json as a baseline, all in the same run.
//!
//! Run it with:
//!
//! ```text
//! cargo bench --features serde --bench changeset
//! ```
//!
//! What it does:
//!
//! 1. Builds one changeset of exactly [`INSTRUCTIONS`] instructions from a fixed-seed xorshift
//!    generator (the same bytes on every run and machine): a few `AddTable`/`AddColumn` for five
//!    tables, then mostly `Update` of scalar fields and `CreateObject` (int and string primary
//!    keys), with `AddInteger` counters, list `ArrayInsert`/`ArrayErase`/element `Update`,
//!    `SetInsert`, dictionary `Update`s (a few of them erasures), link payloads and two
//!    `EraseObject`s.
//! 2. Checks that every codec round-trips it: `decode(encode(cs)) == cs`, serde_json back to an
//!    equal changeset, and zlib back to the same bytes. The figures are for correct code.
//! 3. Prints a summary table measured in this process (median of [`RUNS`] timed runs after one
//!    warm-up; each tandem codec's runs alternate with serde_json's): bytes, MiB/s and million instructions/s for each codec, the zlib level-1 ratio,
//!    the serde_json size against the Realm-format size, and the speed of each tandem codec
//!    against serde_json's (serde_json's median time over tandem's).
//! 4. Runs the criterion groups `encode/{tandem,serde_json}`, `decode/{tandem,serde_json}` and
//!    `zlib/{compress_level1,decompress}`. Throughput is in bytes of each format's own
//!    serialized form (Realm bytes for tandem, JSON bytes for serde_json, and the uncompressed
//!    Realm bytes for both zlib directions).
//!
//! With `CHANGESET_PROFILE=decode` (or `encode`) set, the binary only runs that codec in a loop
//! for about ten seconds, for a profiler:
//!
//! ```text
//! CHANGESET_PROFILE=decode perf record -g target/release/deps/changeset-<hash> --bench
//! ```
//!
//! The serde_json baseline serializes `(strings, instructions)` and decodes back into a
//! `Changeset` (re-interning the string table), so both decoders produce the same value.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tandem::changeset::compression::{compress, decompress_body};
use tandem::changeset::{
    AddColumn, AddInteger, AddTable, ArrayErase, ArrayInsert, Changeset, ColumnCollection,
    ColumnType, FieldPath, Instruction, InternString, Link, PathElement, Payload, PayloadType,
    PrimaryKey, PrimaryKeySpec, SetValue, TableKind, Update,
};
use tandem::model::Timestamp;

/// Instructions in the benchmarked changeset.
const INSTRUCTIONS: usize = 100_000;

/// Timed runs per figure in the summary table (the median is reported). Each tandem codec's
/// runs alternate with serde_json's, so that both see the same machine.
const RUNS: usize = 21;

/// Seed of the generator; any nonzero constant.
const SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// Xorshift64: deterministic, dependency-free, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index into `weights`, chosen with probability proportional to its weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut roll = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if roll < w {
                return i;
            }
            roll -= w;
        }
        unreachable!("roll is below the sum of the weights")
    }
}

/// What a column holds, and so which instructions touch it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Email,
    Double,
    Bool,
    Time,
    /// Single link to the table at this index.
    Link(usize),
    /// Integer changed with `AddInteger`.
    Counter,
    /// List of strings.
    TextList,
    /// List of links to the table at this index.
    LinkList(usize),
    /// Set of strings.
    TextSet,
    /// Set of links to the table at this index.
    LinkSet(usize),
    /// Dictionary of mixed values keyed by string.
    Dict,
}

impl Kind {
    fn is_scalar(self) -> bool {
        matches!(
            self,
            Kind::Int
                | Kind::Text
                | Kind::Email
                | Kind::Double
                | Kind::Bool
                | Kind::Time
                | Kind::Link(_)
        )
    }

    fn is_list(self) -> bool {
        matches!(self, Kind::TextList | Kind::LinkList(_))
    }

    fn is_set(self) -> bool {
        matches!(self, Kind::TextSet | Kind::LinkSet(_))
    }

    fn column(self, tables: &[TableState]) -> (ColumnType, bool, ColumnCollection) {
        let value = |t| ColumnType::Value(t);
        let link = |t: usize| ColumnType::Link {
            target_table: tables[t].name,
        };
        match self {
            Kind::Int | Kind::Counter => (value(PayloadType::Int), false, ColumnCollection::Single),
            Kind::Text => (value(PayloadType::String), false, ColumnCollection::Single),
            Kind::Email => (value(PayloadType::String), true, ColumnCollection::Single),
            Kind::Double => (value(PayloadType::Double), false, ColumnCollection::Single),
            Kind::Bool => (value(PayloadType::Bool), false, ColumnCollection::Single),
            Kind::Time => (
                value(PayloadType::Timestamp),
                true,
                ColumnCollection::Single,
            ),
            Kind::Link(t) => (link(t), true, ColumnCollection::Single),
            Kind::TextList => (value(PayloadType::String), false, ColumnCollection::List),
            Kind::LinkList(t) => (link(t), false, ColumnCollection::List),
            Kind::TextSet => (value(PayloadType::String), false, ColumnCollection::Set),
            Kind::LinkSet(t) => (link(t), false, ColumnCollection::Set),
            Kind::Dict => (
                ColumnType::Mixed,
                true,
                ColumnCollection::Dictionary {
                    key_type: PayloadType::String,
                },
            ),
        }
    }
}

struct TableDef {
    name: &'static str,
    string_pk: bool,
    /// Relative share of the objects created in this table.
    weight: u64,
    fields: &'static [(&'static str, Kind)],
}

const PERSON: usize = 0;
const DOG: usize = 1;
const TASK: usize = 2;
const PROJECT: usize = 3;
const MESSAGE: usize = 4;

const TABLES: [TableDef; 5] = [
    TableDef {
        name: "Person",
        string_pk: false,
        weight: 20,
        fields: &[
            ("name", Kind::Text),
            ("email", Kind::Email),
            ("age", Kind::Int),
            ("score", Kind::Double),
            ("active", Kind::Bool),
            ("createdAt", Kind::Time),
            ("dog", Kind::Link(DOG)),
            ("visits", Kind::Counter),
            ("tags", Kind::TextList),
            ("friends", Kind::LinkSet(PERSON)),
            ("settings", Kind::Dict),
        ],
    },
    TableDef {
        name: "Dog",
        string_pk: true,
        weight: 8,
        fields: &[
            ("name", Kind::Text),
            ("breed", Kind::Text),
            ("age", Kind::Int),
            ("weight", Kind::Double),
            ("owner", Kind::Link(PERSON)),
        ],
    },
    TableDef {
        name: "Task",
        string_pk: false,
        weight: 35,
        fields: &[
            ("title", Kind::Text),
            ("done", Kind::Bool),
            ("priority", Kind::Int),
            ("dueDate", Kind::Time),
            ("owner", Kind::Link(PERSON)),
            ("project", Kind::Link(PROJECT)),
            ("labels", Kind::TextSet),
        ],
    },
    TableDef {
        name: "Project",
        string_pk: true,
        weight: 4,
        fields: &[
            ("title", Kind::Text),
            ("createdAt", Kind::Time),
            ("score", Kind::Double),
            ("members", Kind::LinkList(PERSON)),
            ("settings", Kind::Dict),
        ],
    },
    TableDef {
        name: "Message",
        string_pk: false,
        weight: 33,
        fields: &[
            ("body", Kind::Text),
            ("createdAt", Kind::Time),
            ("author", Kind::Link(PERSON)),
            ("likes", Kind::Counter),
            ("done", Kind::Bool),
        ],
    },
];

const WORDS: [&str; 48] = [
    "buy", "milk", "call", "mom", "fix", "the", "sync", "bug", "meeting", "at", "noon", "review",
    "pull", "request", "ship", "release", "notes", "for", "team", "lunch", "with", "alex", "draft",
    "plan", "update", "docs", "book", "flight", "to", "berlin", "walk", "dog", "pay", "rent",
    "gym", "tonight", "read", "chapter", "new", "design", "check", "email", "and", "reply",
    "order", "pizza", "clean", "kitchen",
];

const DOG_NAMES: [&str; 12] = [
    "Rex", "Bella", "Max", "Luna", "Charlie", "Daisy", "Milo", "Coco", "Buddy", "Rosie", "Otto",
    "Nala",
];

const BREEDS: [&str; 8] = [
    "Labrador",
    "Beagle",
    "Poodle",
    "Dachshund",
    "Border Collie",
    "Pug",
    "Boxer",
    "Whippet",
];

const DICT_KEYS: [&str; 8] = [
    "theme", "lang", "tz", "notify", "layout", "sort", "filter", "color",
];

const DICT_TEXT: [&str; 10] = [
    "dark",
    "light",
    "en",
    "de",
    "UTC",
    "Europe/Berlin",
    "grid",
    "list",
    "newest",
    "blue",
];

/// An object the generator knows about, with the current size of each of its lists (indexed
/// like the table's fields; zero for fields that are not lists).
struct Object {
    pk: PrimaryKey,
    list_sizes: Vec<u32>,
}

struct TableState {
    name: InternString,
    string_pk: bool,
    fields: Vec<(InternString, Kind)>,
    objects: Vec<Object>,
    next_id: u64,
}

struct Generator {
    rng: Rng,
    cs: Changeset,
    tables: Vec<TableState>,
    dict_keys: Vec<InternString>,
}

impl Generator {
    fn text(&mut self) -> String {
        let len = self.rng.between(5, 40) as usize;
        let mut s = String::with_capacity(len + 8);
        while s.len() < len {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(self.rng.pick(&WORDS));
        }
        s.truncate(len);
        s
    }

    fn text_for(&mut self, field: &str) -> String {
        match field {
            "name" if self.rng.percent(50) => self.rng.pick(&DOG_NAMES).to_string(),
            "breed" => self.rng.pick(&BREEDS).to_string(),
            _ => self.text(),
        }
    }

    fn timestamp(&mut self) -> Timestamp {
        let seconds = 1_700_000_000 + self.rng.below(40_000_000) as i64;
        let nanos = (self.rng.below(1000) * 1_000_000) as i32;
        Timestamp::new(seconds, nanos).expect("valid timestamp")
    }

    fn int(&mut self, field: &str) -> i64 {
        match field {
            "age" => self.rng.below(100) as i64,
            "priority" => self.rng.below(5) as i64,
            _ if self.rng.percent(80) => self.rng.below(1000) as i64,
            _ => self.rng.below(1_000_000_000) as i64 - 500_000_000,
        }
    }

    /// A link to a random existing object of table `t`, or null if it has none.
    fn link(&mut self, t: usize) -> Payload {
        match self.random_object(t) {
            Some(i) => Payload::Link(Link {
                target_table: self.tables[t].name,
                target: self.tables[t].objects[i].pk.clone(),
            }),
            None => Payload::Null,
        }
    }

    fn scalar(&mut self, field: &str, kind: Kind) -> Payload {
        match kind {
            Kind::Int | Kind::Counter => Payload::Int(self.int(field)),
            Kind::Text => Payload::String(self.text_for(field).into()),
            Kind::Email => {
                let user = self.rng.pick(&WORDS);
                let n = self.rng.below(1000);
                Payload::String(format!("{user}.{n}@example.com").into())
            }
            // Two or three decimals, as an app would store a score or a weight.
            Kind::Double if self.rng.percent(50) => {
                Payload::Double(self.rng.below(1_000_000) as f64 / 100.0)
            }
            Kind::Double => Payload::Double(self.rng.below(100_000) as f64 / 1000.0),
            Kind::Bool => Payload::Bool(self.rng.percent(50)),
            Kind::Time => Payload::Timestamp(self.timestamp()),
            Kind::Link(t) => self.link(t),
            _ => unreachable!("not a scalar field"),
        }
    }

    /// A random object of table `t`, favouring recently created ones as an app does.
    fn random_object(&mut self, t: usize) -> Option<usize> {
        let n = self.tables[t].objects.len() as u64;
        if n == 0 {
            return None;
        }
        Some(if self.rng.percent(50) {
            (n - 1 - self.rng.below(n.min(50))) as usize
        } else {
            self.rng.below(n) as usize
        })
    }

    fn path(&self, t: usize, object: usize, field: usize, path: Vec<PathElement>) -> FieldPath {
        let table = &self.tables[t];
        FieldPath {
            table: table.name,
            object: table.objects[object].pk.clone(),
            field: table.fields[field].0,
            path: path.into(),
        }
    }

    /// A random field of table `t` whose kind passes `filter`.
    fn random_field(&mut self, t: usize, filter: fn(Kind) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.tables[t].fields.len())
            .filter(|&f| filter(self.tables[t].fields[f].1))
            .collect();
        if candidates.is_empty() {
            None
        } else {
            Some(self.rng.pick(&candidates))
        }
    }

    fn field_name(&self, t: usize, field: usize) -> &'static str {
        TABLES[t].fields[field].0
    }

    fn schema(&mut self) {
        let pk_field = self.cs.intern("_id");
        for t in 0..self.tables.len() {
            let key_type = if self.tables[t].string_pk {
                PayloadType::String
            } else {
                PayloadType::Int
            };
            self.cs.push(Instruction::AddTable(AddTable {
                table: self.tables[t].name,
                kind: TableKind::TopLevel(PrimaryKeySpec {
                    field: pk_field,
                    key_type,
                    nullable: false,
                }),
            }));
        }
        for t in 0..self.tables.len() {
            for &(field, kind) in &self.tables[t].fields {
                let (column_type, nullable, collection) = kind.column(&self.tables);
                self.cs.push(Instruction::AddColumn(AddColumn {
                    table: self.tables[t].name,
                    field,
                    column_type,
                    nullable,
                    collection,
                }));
            }
        }
    }

    /// `CreateObject`, then a write to most of its scalar fields, as an app's `add` does.
    fn create(&mut self, t: usize) {
        let table = &mut self.tables[t];
        let id = table.next_id;
        table.next_id += 1;
        let pk = if table.string_pk {
            let key = format!("{}-{id:06}", TABLES[t].name.to_lowercase());
            PrimaryKey::String(self.cs.intern(&key))
        } else {
            PrimaryKey::Int(id as i64 + 1)
        };
        self.cs.push(Instruction::CreateObject {
            table: table.name,
            object: pk.clone(),
        });
        let list_sizes = vec![0; table.fields.len()];
        table.objects.push(Object { pk, list_sizes });
        let object = table.objects.len() - 1;
        for field in 0..self.tables[t].fields.len() {
            let kind = self.tables[t].fields[field].1;
            if kind.is_scalar() && self.rng.percent(70) {
                self.update_field(t, object, field);
            }
        }
    }

    fn update_field(&mut self, t: usize, object: usize, field: usize) {
        let kind = self.tables[t].fields[field].1;
        let value = self.scalar(self.field_name(t, field), kind);
        self.cs.push(Instruction::Update(Update {
            path: self.path(t, object, field, Vec::new()),
            value,
            is_default: false,
            prior_size: 0,
        }));
    }

    fn list_element(&mut self, t: usize, field: usize) -> Payload {
        match self.tables[t].fields[field].1 {
            Kind::TextList | Kind::TextSet => Payload::String((*self.rng.pick(&WORDS)).into()),
            Kind::LinkList(target) | Kind::LinkSet(target) => self.link(target),
            _ => unreachable!("not a collection field"),
        }
    }

    /// One user action: one instruction, or several for a new object.
    fn step(&mut self) {
        let weights: Vec<u64> = TABLES.iter().map(|d| d.weight).collect();
        let t = self.rng.weighted(&weights);
        let Some(object) = self.random_object(t) else {
            return self.create(t);
        };
        // create, update, add integer, list insert, list erase, list element update,
        // set insert, dictionary update
        match self.rng.weighted(&[7, 62, 5, 8, 2, 3, 4, 5]) {
            0 => self.create(t),
            2 => match self.random_field(t, |k| k == Kind::Counter) {
                Some(field) => {
                    let value = if self.rng.percent(90) { 1 } else { -1 };
                    self.cs.push(Instruction::AddInteger(AddInteger {
                        path: self.path(t, object, field, Vec::new()),
                        value,
                    }));
                }
                None => self.update(t, object),
            },
            op @ 3..=5 => match self.random_field(t, Kind::is_list) {
                Some(field) => self.list_op(op, t, object, field),
                None => self.update(t, object),
            },
            6 => match self.random_field(t, Kind::is_set) {
                Some(field) => {
                    let value = self.list_element(t, field);
                    self.cs.push(Instruction::SetInsert(SetValue {
                        path: self.path(t, object, field, Vec::new()),
                        value,
                    }));
                }
                None => self.update(t, object),
            },
            7 => match self.random_field(t, |k| k == Kind::Dict) {
                Some(field) => {
                    let key = self.rng.pick(&self.dict_keys);
                    let value = match self.rng.below(10) {
                        0 => Payload::Erased,
                        1..=3 => Payload::Int(self.rng.below(100) as i64),
                        4 => Payload::Bool(self.rng.percent(50)),
                        _ => Payload::String((*self.rng.pick(&DICT_TEXT)).into()),
                    };
                    self.cs.push(Instruction::Update(Update {
                        path: self.path(t, object, field, vec![PathElement::Key(key)]),
                        value,
                        is_default: false,
                        prior_size: 0,
                    }));
                }
                None => self.update(t, object),
            },
            _ => self.update(t, object),
        }
    }

    fn update(&mut self, t: usize, object: usize) {
        let field = self
            .random_field(t, Kind::is_scalar)
            .expect("every table has a scalar field");
        self.update_field(t, object, field);
    }

    /// 3: insert (mostly appends), 4: erase, 5: element update.
    fn list_op(&mut self, op: usize, t: usize, object: usize, field: usize) {
        let size = self.tables[t].objects[object].list_sizes[field];
        if op == 3 || size == 0 {
            let index = if self.rng.percent(70) {
                size
            } else {
                self.rng.below(u64::from(size) + 1) as u32
            };
            let value = self.list_element(t, field);
            self.cs.push(Instruction::ArrayInsert(ArrayInsert {
                path: self.path(t, object, field, vec![PathElement::Index(index)]),
                value,
                prior_size: size,
            }));
            self.tables[t].objects[object].list_sizes[field] = size + 1;
        } else {
            let index = self.rng.below(u64::from(size)) as u32;
            let path = self.path(t, object, field, vec![PathElement::Index(index)]);
            if op == 4 {
                self.cs.push(Instruction::ArrayErase(ArrayErase {
                    path,
                    prior_size: size,
                }));
                self.tables[t].objects[object].list_sizes[field] = size - 1;
            } else {
                let value = self.list_element(t, field);
                self.cs.push(Instruction::Update(Update {
                    path,
                    value,
                    is_default: false,
                    prior_size: size,
                }));
            }
        }
    }

    fn erase_object(&mut self, t: usize) {
        if let Some(object) = self.random_object(t) {
            let gone = self.tables[t].objects.swap_remove(object);
            self.cs.push(Instruction::EraseObject {
                table: self.tables[t].name,
                object: gone.pk,
            });
        }
    }
}

/// The benchmarked changeset: exactly [`INSTRUCTIONS`] instructions, the same on every run.
fn build_changeset() -> Changeset {
    let mut cs = Changeset::new();
    let tables = TABLES
        .iter()
        .map(|def| TableState {
            name: cs.intern(def.name),
            string_pk: def.string_pk,
            fields: def
                .fields
                .iter()
                .map(|&(name, kind)| (cs.intern(name), kind))
                .collect(),
            objects: Vec::new(),
            next_id: 0,
        })
        .collect();
    let dict_keys = DICT_KEYS.iter().map(|k| cs.intern(k)).collect();
    let mut g = Generator {
        rng: Rng(SEED),
        cs,
        tables,
        dict_keys,
    };
    g.schema();
    let erase_marks = [INSTRUCTIONS * 2 / 5, INSTRUCTIONS * 4 / 5];
    let mut erased = 0;
    while g.cs.len() < INSTRUCTIONS {
        if erased < erase_marks.len() && g.cs.len() >= erase_marks[erased] {
            g.erase_object([TASK, MESSAGE][erased]);
            erased += 1;
        } else {
            g.step();
        }
    }
    // A new object's writes may run past the end; the changeset stays valid without them.
    g.cs.instructions.truncate(INSTRUCTIONS);
    g.cs
}

fn json_encode(cs: &Changeset) -> Vec<u8> {
    serde_json::to_vec(&(cs.strings(), &cs.instructions)).expect("serde_json serializes")
}

fn json_decode(bytes: &[u8]) -> Changeset {
    let (strings, instructions): (Vec<String>, Vec<Instruction>) =
        serde_json::from_slice(bytes).expect("serde_json deserializes");
    let mut cs = Changeset::new();
    for s in &strings {
        cs.intern(s);
    }
    cs.instructions = instructions;
    cs
}

/// Everything the benchmarks work on, built and checked once.
struct Fixture {
    cs: Changeset,
    realm: Vec<u8>,
    json: Vec<u8>,
    zlib: Vec<u8>,
}

fn fixture() -> Fixture {
    let cs = build_changeset();
    assert_eq!(cs.len(), INSTRUCTIONS);
    let realm = cs.encode();
    assert!(
        Changeset::decode(&realm).expect("decodes") == cs,
        "decode(encode(cs)) != cs"
    );
    let json = json_encode(&cs);
    assert!(json_decode(&json) == cs, "serde_json round trip differs");
    let zlib = compress(&realm);
    assert_eq!(
        decompress_body(&zlib, realm.len(), realm.len()).expect("inflates"),
        realm,
        "zlib round trip differs"
    );
    Fixture {
        cs,
        realm,
        json,
        zlib,
    }
}

/// Median wall time of [`RUNS`] calls of `f`, after one untimed warm-up call.
fn median_seconds<T>(mut f: impl FnMut() -> T) -> f64 {
    black_box(f());
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

/// Median wall times of [`RUNS`] calls each of `a` and `b`, called alternately, after one untimed
/// warm-up call of each.
fn median_seconds_alternated<T, U>(
    mut a: impl FnMut() -> T,
    mut b: impl FnMut() -> U,
) -> (f64, f64) {
    black_box(a());
    black_box(b());
    let mut times_a = Vec::with_capacity(RUNS);
    let mut times_b = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        black_box(a());
        times_a.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        black_box(b());
        times_b.push(start.elapsed().as_secs_f64());
    }
    times_a.sort_by(f64::total_cmp);
    times_b.sort_by(f64::total_cmp);
    (times_a[RUNS / 2], times_b[RUNS / 2])
}

fn instruction_mix(cs: &Changeset) -> String {
    const NAMES: [&str; 14] = [
        "AddTable",
        "EraseTable",
        "CreateObject",
        "EraseObject",
        "Update",
        "AddInteger",
        "AddColumn",
        "EraseColumn",
        "ArrayInsert",
        "ArrayMove",
        "ArrayErase",
        "Clear",
        "SetInsert",
        "SetErase",
    ];
    let mut counts = [0usize; 14];
    let mut element_updates = 0;
    let mut dictionary_updates = 0;
    for instruction in &cs.instructions {
        counts[instruction.opcode() as usize] += 1;
        if let Instruction::Update(u) = instruction {
            match u.path.path.last() {
                Some(PathElement::Index(_)) => element_updates += 1,
                Some(PathElement::Key(_)) => dictionary_updates += 1,
                None => {}
            }
        }
    }
    let mut parts: Vec<String> = NAMES
        .iter()
        .zip(counts)
        .filter(|&(_, n)| n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    parts.push(format!(
        "(Update: {element_updates} list element, {dictionary_updates} dictionary)"
    ));
    parts.join(", ")
}

fn print_summary(f: &Fixture) {
    let n = f.cs.len() as f64;
    let realm_len = f.realm.len();
    let (tandem_encode, json_encode_seconds) = median_seconds_alternated(
        || black_box(&f.cs).encode(),
        || json_encode(black_box(&f.cs)),
    );
    let (tandem_decode, json_decode_seconds) = median_seconds_alternated(
        || Changeset::decode(black_box(&f.realm)).unwrap(),
        || json_decode(black_box(&f.json)),
    );
    let rows: [(&str, usize, usize, f64); 6] = [
        ("tandem encode", realm_len, realm_len, tandem_encode),
        ("tandem decode", realm_len, realm_len, tandem_decode),
        (
            "serde_json encode",
            f.json.len(),
            f.json.len(),
            json_encode_seconds,
        ),
        (
            "serde_json decode",
            f.json.len(),
            f.json.len(),
            json_decode_seconds,
        ),
        (
            "zlib compress (level 1)",
            realm_len,
            realm_len,
            median_seconds(|| compress(black_box(&f.realm))),
        ),
        (
            "zlib decompress",
            f.zlib.len(),
            realm_len,
            median_seconds(|| decompress_body(black_box(&f.zlib), realm_len, realm_len).unwrap()),
        ),
    ];

    println!();
    println!(
        "Changeset codec summary: {} instructions, {} interned strings, median of {RUNS} runs",
        f.cs.len(),
        f.cs.string_count()
    );
    println!("Mix: {}", instruction_mix(&f.cs));
    println!();
    println!(
        "{:<24} {:>12} {:>10} {:>10} {:>11}",
        "operation", "bytes", "median ms", "MiB/s", "M instr/s"
    );
    println!("{}", "-".repeat(71));
    // (name, bytes shown, bytes the MiB/s figure is over, seconds)
    for (name, format_len, throughput_len, seconds) in rows {
        println!(
            "{:<24} {:>12} {:>10.3} {:>10.1} {:>11.2}",
            name,
            format_len,
            seconds * 1e3,
            throughput_len as f64 / seconds / (1024.0 * 1024.0),
            n / seconds / 1e6,
        );
    }
    println!("{}", "-".repeat(71));
    println!(
        "bytes: Realm-format size for tandem and zlib compress input, JSON size for serde_json,"
    );
    println!("compressed size for zlib decompress input; MiB/s for zlib is over the Realm bytes.");
    println!();
    println!(
        "zlib level 1: {} -> {} bytes, ratio {:.2}:1 (Realm size / compressed size)",
        realm_len,
        f.zlib.len(),
        realm_len as f64 / f.zlib.len() as f64
    );
    println!(
        "serde_json: {} bytes, {:.2}x the Realm-format size of {} bytes",
        f.json.len(),
        f.json.len() as f64 / realm_len as f64,
        realm_len
    );
    println!(
        "Realm format: {:.1} bytes/instruction; serde_json: {:.1} bytes/instruction",
        realm_len as f64 / n,
        f.json.len() as f64 / n
    );
    // rows: 0 tandem encode, 1 tandem decode, 2 serde_json encode, 3 serde_json decode
    println!(
        "tandem vs serde_json (serde_json median time / tandem median time): encode {:.2}x, \
         decode {:.2}x",
        rows[2].3 / rows[0].3,
        rows[3].3 / rows[1].3
    );
    println!();
}

fn run_criterion(c: &mut Criterion, f: &Fixture) {
    let realm_len = f.realm.len();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(realm_len as u64));
    group.bench_function("tandem", |b| b.iter(|| black_box(&f.cs).encode()));
    group.throughput(Throughput::Bytes(f.json.len() as u64));
    group.bench_function("serde_json", |b| b.iter(|| json_encode(black_box(&f.cs))));
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(realm_len as u64));
    group.bench_function("tandem", |b| {
        b.iter(|| Changeset::decode(black_box(&f.realm)).unwrap())
    });
    group.throughput(Throughput::Bytes(f.json.len() as u64));
    group.bench_function("serde_json", |b| b.iter(|| json_decode(black_box(&f.json))));
    group.finish();

    let mut group = c.benchmark_group("zlib");
    group.throughput(Throughput::Bytes(realm_len as u64));
    group.bench_function("compress_level1", |b| {
        b.iter(|| compress(black_box(&f.realm)))
    });
    group.bench_function("decompress", |b| {
        b.iter(|| decompress_body(black_box(&f.zlib), realm_len, realm_len).unwrap())
    });
    group.finish();
}

/// Calls the codec named by `what` (`encode` or `decode`) in a loop for about ten seconds, so
/// that a profiler sees nothing else.
fn profile(f: &Fixture, what: &str) {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(10) {
        match what {
            "encode" => drop(black_box(black_box(&f.cs).encode())),
            "decode" => drop(black_box(Changeset::decode(black_box(&f.realm)).unwrap())),
            other => panic!("CHANGESET_PROFILE={other}: expected encode or decode"),
        }
        calls += 1;
    }
    println!(
        "{what}: {calls} calls in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let fixture = fixture();
    // CHANGESET_PROFILE=decode (or encode) runs only that codec, for `perf record`.
    if let Ok(what) = std::env::var("CHANGESET_PROFILE") {
        return profile(&fixture, &what);
    }
    print_summary(&fixture);
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    run_criterion(&mut criterion, &fixture);
    criterion.final_summary();
}
