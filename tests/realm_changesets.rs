//! Data written by realm-core clients, read by Tandem clients, and the reverse.
//!
//! - The two changesets a real realm-core 14.12 client uploaded (the spike's 49-byte schema and
//!   104-byte object changesets, `realm-client-spike.md` section 3) decode byte for byte into
//!   the instructions realm-core's encoder wrote; a Tandem app declaring the same `Task` class
//!   declares exactly the same table and columns; uploaded through a `ServerFile`, a Tandem
//!   database reads the object with identical values.
//! - Every property type (`examples/realm_peer/peer.rs`: every scalar type required and
//!   nullable, in lists, sets and dictionaries with required and nullable elements; mixed
//!   holding each type; links; embedded objects single, in lists and in dictionaries): a
//!   realm-core-shaped upload is read by a Tandem database with identical values, and a Tandem
//!   write produces the instructions realm-core emits for the same `copyToRealm`, which a
//!   realm-core-shaped replica (its own schema first, then OT against it) reads identically.
//! - Additive schema from a realm-core client (a new class, a new property) reaches Tandem
//!   databases that do not declare it, and one that declares it later reads its values.
//!
//! "realm-core-shaped" means built instruction by instruction as realm-core's
//! `SyncReplication` (`src/realm/sync/instruction_replication.cpp`, v14.14) emits them: the
//! class name without `class_`, the primary key field named in AddTable, an empty intern string
//! as the link target of every non-link AddColumn, `Update` with `is_default = false` for every
//! property write, `ArrayInsert` with `prior_size`, `SetInsert`, dictionary entries as `Update`
//! with the key as the last path element, embedded objects created with the `ObjectValue`
//! payload and addressed through their top-level owner.
#![cfg(feature = "server")]

#[path = "../examples/realm_peer/peer.rs"]
mod peer;
mod wire;

use std::path::PathBuf;

use serde_json::{json, Value as Json};
use tandem::changeset::{
    AddColumn, AddTable, ArrayInsert, Changeset, ChangesetMeta, ColumnCollection, ColumnType,
    FieldPath, Instruction, Link, PathElement, Payload, PayloadType, PrimaryKey as WireKey,
    PrimaryKeySpec, SetValue, TableKind, Update,
};
use tandem::model::{
    CollectionKind, Decimal128, ObjectId, PrimaryKey, PropertyType, Schema, Timestamp, Uuid, Value,
};
use tandem::ot::ReciprocalHistory;
use tandem::protocol::UploadEntry;
use tandem::server::ServerFile;
use tandem::state::{Field, Key, State, Val};
use tandem::store::{Config, Database, PathStep};

const SCHEMA_HEX: &str = "3f00045461736b3f01035f6964000000010a003f02057469746c653f03000600020300003f0404646f6e65060004020000";
const OBJECT_HEX: &str = "3f00045461736b02000a514be25efebe5b3fb32b2ecc3f01057469746c6504000a514be25efebe5b3fb32b2ecc0100031b68656c6c6f2066726f6d207265616c6d2d636f72652031342e3132003f0204646f6e6504000a514be25efebe5b3fb32b2ecc0200020000";
const TASK_ID: [u8; 12] = [
    0x51, 0x4b, 0xe2, 0x5e, 0xfe, 0xbe, 0x5b, 0x3f, 0xb3, 0x2b, 0x2e, 0xcc,
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A scratch directory: the guard that removes it when dropped, and its path.
fn dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-realm-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn task_schema() -> Schema {
    use tandem::model::{ClassSchema, Property};
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::ObjectId),
            Property::new("title", PropertyType::String),
            Property::new("done", PropertyType::Bool),
        ],
    )])
    .unwrap()
}

/// A realm-core client file as the server sees it: its uploads are raw changeset bytes, its
/// downloads are integrated against its own history with Realm's OT, as realm-core's client
/// does, into a reference replica.
struct RealmClient {
    ident: u64,
    state: State,
    history: Vec<Changeset>,
    acked: usize,
    cursor: u64,
    reciprocal: ReciprocalHistory,
}

impl RealmClient {
    fn new(server: &mut ServerFile) -> RealmClient {
        let (ident, _salt) = server.allocate_client_file().unwrap();
        RealmClient {
            ident,
            state: State::new(),
            history: Vec::new(),
            acked: 0,
            cursor: 0,
            reciprocal: ReciprocalHistory::new(),
        }
    }

    /// Commits a changeset given as the bytes realm-core encoded (applied locally first).
    fn commit_bytes(&mut self, bytes: &[u8]) {
        let mut cs = Changeset::decode(bytes).unwrap();
        cs.meta = ChangesetMeta {
            version: self.history.len() as u64 + 1,
            last_integrated_remote_version: self.cursor,
            origin_timestamp: 375_958_639_338 + self.history.len() as u64,
            origin_file_ident: 0,
        };
        self.state.apply(&cs).unwrap();
        self.history.push(cs);
    }

    fn commit(&mut self, cs: &Changeset) {
        self.commit_bytes(&cs.encode());
    }

    fn upload(&mut self, server: &mut ServerFile) {
        let entries: Vec<UploadEntry> = self.history[self.acked..]
            .iter()
            .map(UploadEntry::from_changeset)
            .collect();
        let done = server.integrate_upload(self.ident, &entries).unwrap();
        self.acked = done.client_version as usize;
    }

    fn download(&mut self, server: &ServerFile) {
        let batch = server.download(self.ident, self.cursor, 16 << 20).unwrap();
        for entry in batch.entries {
            let cs = entry.to_changeset().unwrap();
            let seen = entry.last_integrated_client_version;
            let concurrent: Vec<&Changeset> = self.history[seen as usize..].iter().collect();
            let mut one = [cs];
            self.reciprocal.integrate(&mut one, &concurrent).unwrap();
            self.reciprocal.forget_through(seen);
            self.state.apply(&one[0]).unwrap();
        }
        self.cursor = batch.download_server_version;
    }
}

// ---- the spike's fixtures ----

/// The 49-byte schema changeset as realm-core's replication encoder wrote it: each intern
/// string defined just before its first use, and `""` for the link target of non-link columns.
fn spike_schema() -> Changeset {
    let mut cs = Changeset::new();
    let task = cs.intern("Task");
    let id = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table: task,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::ObjectId,
            nullable: false,
        }),
    }));
    let title = cs.intern("title");
    cs.intern("");
    cs.push(Instruction::AddColumn(AddColumn {
        table: task,
        field: title,
        column_type: ColumnType::Value(PayloadType::String),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    let done = cs.intern("done");
    cs.push(Instruction::AddColumn(AddColumn {
        table: task,
        field: done,
        column_type: ColumnType::Value(PayloadType::Bool),
        nullable: false,
        collection: ColumnCollection::Single,
    }));
    cs
}

fn spike_object() -> Changeset {
    let mut cs = Changeset::new();
    let task = cs.intern("Task");
    let object = WireKey::ObjectId(ObjectId(TASK_ID));
    cs.push(Instruction::CreateObject {
        table: task,
        object: object.clone(),
    });
    for (name, value) in [
        (
            "title",
            Payload::String("hello from realm-core 14.12".into()),
        ),
        ("done", Payload::Bool(false)),
    ] {
        let field = cs.intern(name);
        cs.push(Instruction::Update(Update {
            path: FieldPath {
                table: task,
                object: object.clone(),
                field,
                path: Default::default(),
            },
            value,
            is_default: false,
            prior_size: 0,
        }));
    }
    cs
}

#[test]
fn spike_changesets_decode_byte_exactly() {
    for (hex, expected, len) in [
        (SCHEMA_HEX, spike_schema(), 49),
        (OBJECT_HEX, spike_object(), 104),
    ] {
        let bytes = unhex(hex);
        assert_eq!(bytes.len(), len);
        let decoded = Changeset::decode(&bytes).unwrap();
        assert_eq!(decoded, expected, "{hex}");
        // Tandem's encoder writes the intern table up front (as realm-core's `encode_single`
        // does), so its bytes differ from the replication encoder's interleaved ones only in
        // where the definitions sit: same length, same instructions.
        let ours = decoded.encode();
        assert_eq!(ours.len(), len);
        assert_eq!(Changeset::decode(&ours).unwrap(), decoded);
    }
    assert_eq!(
        Changeset::decode(&unhex(SCHEMA_HEX)).unwrap().to_string(),
        spike_schema().to_string()
    );
}

/// The AddTable / AddColumn lines of a changeset, sorted: what a schema declares, independent
/// of instruction order and intern-table layout.
fn schema_lines(cs: &Changeset) -> Vec<String> {
    let mut lines: Vec<String> = cs
        .instructions
        .iter()
        .filter(|i| i.is_schema_change())
        .map(|i| cs.display_instruction(i).to_string())
        .collect();
    lines.sort();
    lines
}

#[test]
fn tandem_task_schema_is_realm_cores() {
    let (_dir, d) = dir("task-schema");
    let db = Database::open(d.join("a.sqlite"), &task_schema(), Config::default()).unwrap();
    let history = db.history().unwrap();
    let ours = &history[0];
    // Same instructions in the same order; realm-core's extra `""` intern string is unused.
    assert_eq!(ours.to_string(), spike_schema().to_string());
    // The intern tables differ only by realm-core's unused "".
    let spike = spike_schema();
    let theirs: Vec<&str> = spike
        .strings()
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(ours.strings(), theirs);
}

#[test]
fn spike_upload_is_read_by_a_tandem_client_and_back() {
    let (_dir, d) = dir("spike");
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let mut realm = RealmClient::new(&mut server);
    realm.commit_bytes(&unhex(SCHEMA_HEX));
    realm.commit_bytes(&unhex(OBJECT_HEX));
    realm.upload(&mut server);

    let db = Database::open(d.join("tandem.sqlite"), &task_schema(), Config::default()).unwrap();
    wire::download(&db, &mut server);
    let id = PrimaryKey::ObjectId(ObjectId(TASK_ID));
    let task = db.read().unwrap().object("Task", &id).unwrap().unwrap();
    assert_eq!(
        task.fields["title"],
        Field::Value(Val::String("hello from realm-core 14.12".into()))
    );
    assert_eq!(task.fields["done"], Field::Value(Val::Bool(false)));

    // The Tandem client's own schema changeset and a write go up without conflict...
    let mut tx = db.begin_write().unwrap();
    tx.set("Task", &id, "done", Value::Bool(true)).unwrap();
    tx.create(
        "Task",
        PrimaryKey::ObjectId(ObjectId([7; 12])),
        &[("title", Value::String("from tandem".into()))],
    )
    .unwrap();
    tx.commit().unwrap();
    wire::upload(&db, &mut server);
    // ...and the realm-core replica reads them.
    realm.download(&server);
    let key = Key::ObjectId(TASK_ID);
    let seen = realm.state.read("Task", &key).unwrap();
    assert_eq!(seen.fields["done"], Field::Value(Val::Bool(true)));
    let new = realm.state.read("Task", &Key::ObjectId([7; 12])).unwrap();
    assert_eq!(
        new.fields["title"],
        Field::Value(Val::String("from tandem".into()))
    );
    assert_eq!(new.fields["done"], Field::Value(Val::Bool(false)));
    assert_eq!(
        realm.state.objects,
        db.export_state().unwrap().objects,
        "both replicas converge"
    );
}

// ---- every property type ----

/// The AddTable / AddColumn instructions realm-core's replication emits for `schema`.
fn realm_core_schema(schema: &Schema) -> Changeset {
    let mut cs = Changeset::new();
    for class in schema.classes() {
        let table = cs.intern(&class.name);
        let kind = match class.primary_key_property() {
            Some(pk) => TableKind::TopLevel(PrimaryKeySpec {
                field: cs.intern(&pk.name),
                key_type: payload_type(pk.property_type),
                nullable: pk.nullable,
            }),
            None => TableKind::Embedded,
        };
        cs.push(Instruction::AddTable(AddTable { table, kind }));
    }
    for class in schema.classes() {
        let table = cs.intern(&class.name);
        for p in &class.properties {
            if class.primary_key.as_deref() == Some(p.name.as_str()) {
                continue;
            }
            let field = cs.intern(&p.name);
            let column_type = match (p.property_type, &p.link_target) {
                (PropertyType::Link, Some(t)) => ColumnType::Link {
                    target_table: cs.intern(t),
                },
                (PropertyType::Mixed, _) => {
                    cs.intern("");
                    ColumnType::Mixed
                }
                (t, _) => {
                    cs.intern("");
                    ColumnType::Value(payload_type(t))
                }
            };
            let collection = match p.collection {
                CollectionKind::Single => ColumnCollection::Single,
                CollectionKind::List => ColumnCollection::List,
                CollectionKind::Set => ColumnCollection::Set,
                CollectionKind::Dictionary => ColumnCollection::Dictionary {
                    key_type: PayloadType::String,
                },
            };
            cs.push(Instruction::AddColumn(AddColumn {
                table,
                field,
                column_type,
                nullable: p.nullable,
                collection,
            }));
        }
    }
    cs
}

/// realm-core's `get_payload_type` (mixed is Null).
fn payload_type(t: PropertyType) -> PayloadType {
    match t {
        PropertyType::Int => PayloadType::Int,
        PropertyType::Bool => PayloadType::Bool,
        PropertyType::String => PayloadType::String,
        PropertyType::Binary => PayloadType::Binary,
        PropertyType::Timestamp => PayloadType::Timestamp,
        PropertyType::Float => PayloadType::Float,
        PropertyType::Double => PayloadType::Double,
        PropertyType::Decimal => PayloadType::Decimal,
        PropertyType::ObjectId => PayloadType::ObjectId,
        PropertyType::Uuid => PayloadType::Uuid,
        PropertyType::Link => PayloadType::Link,
        PropertyType::Mixed => PayloadType::Null,
    }
}

/// The instructions realm-core's `SyncReplication` emits for each step of a `copyToRealm`.
#[derive(Default)]
struct RealmCoreWriter {
    cs: Changeset,
}

impl RealmCoreWriter {
    fn key(&mut self, key: &PrimaryKey) -> WireKey {
        match key {
            PrimaryKey::Null => WireKey::Null,
            PrimaryKey::Int(v) => WireKey::Int(*v),
            PrimaryKey::String(s) => WireKey::String(self.cs.intern(s)),
            PrimaryKey::ObjectId(id) => WireKey::ObjectId(*id),
            PrimaryKey::Uuid(id) => WireKey::Uuid(*id),
        }
    }

    fn payload(&mut self, v: Value) -> Payload {
        match v {
            Value::Null => Payload::Null,
            Value::Int(v) => Payload::Int(v),
            Value::Bool(v) => Payload::Bool(v),
            Value::String(v) => Payload::String(v.into()),
            Value::Binary(v) => Payload::Binary(v),
            Value::Timestamp(v) => Payload::Timestamp(v),
            Value::Float(v) => Payload::Float(v),
            Value::Double(v) => Payload::Double(v),
            Value::Decimal(v) => Payload::Decimal(v),
            Value::ObjectId(v) => Payload::ObjectId(v),
            Value::Uuid(v) => Payload::Uuid(v),
            Value::Link(l) => Payload::Link(Link {
                target_table: self.cs.intern(&l.class),
                target: self.key(&l.key),
            }),
        }
    }

    /// `populate_path_instr`: table, object, field, then the path below it.
    fn path(&mut self, class: &str, key: &PrimaryKey, prop: &str, steps: &[PathStep]) -> FieldPath {
        let table = self.cs.intern(class);
        let object = self.key(key);
        let field = self.cs.intern(prop);
        let path = steps
            .iter()
            .map(|s| match s {
                PathStep::Index(i) => PathElement::Index(*i),
                PathStep::Name(n) => PathElement::Key(self.cs.intern(n)),
            })
            .collect();
        FieldPath {
            table,
            object,
            field,
            path,
        }
    }

    fn update(&mut self, path: FieldPath, value: Payload) {
        self.cs.push(Instruction::Update(Update {
            path,
            value,
            is_default: false,
            prior_size: 0,
        }));
    }
}

impl peer::Writer for RealmCoreWriter {
    type Error = peer::PeerError;

    fn create(&mut self, class: &str, key: &PrimaryKey) -> Result<(), Self::Error> {
        let table = self.cs.intern(class);
        let object = self.key(key);
        self.cs.push(Instruction::CreateObject { table, object });
        Ok(())
    }

    fn set(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
        value: Value,
    ) -> Result<(), Self::Error> {
        let path = self.path(class, key, prop, steps);
        let value = self.payload(value);
        self.update(path, value);
        Ok(())
    }

    fn embed(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
    ) -> Result<(), Self::Error> {
        let path = self.path(class, key, prop, steps);
        self.update(path, Payload::ObjectValue);
        Ok(())
    }

    fn list_push(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        len: u32,
        value: Value,
    ) -> Result<(), Self::Error> {
        let path = self.path(class, key, prop, &[PathStep::Index(len)]);
        let value = self.payload(value);
        self.cs.push(Instruction::ArrayInsert(ArrayInsert {
            path,
            value,
            prior_size: len,
        }));
        Ok(())
    }

    fn list_push_embedded(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        len: u32,
    ) -> Result<(), Self::Error> {
        let path = self.path(class, key, prop, &[PathStep::Index(len)]);
        self.cs.push(Instruction::ArrayInsert(ArrayInsert {
            path,
            value: Payload::ObjectValue,
            prior_size: len,
        }));
        Ok(())
    }

    fn set_insert(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        value: Value,
    ) -> Result<(), Self::Error> {
        let path = self.path(class, key, prop, &[]);
        let value = self.payload(value);
        self.cs
            .push(Instruction::SetInsert(SetValue { path, value }));
        Ok(())
    }
}

/// Three distinct non-null values of each scalar type, in canonical JSON (bool has two).
fn samples(t: PropertyType) -> Vec<Json> {
    let tag = |tag: &str, v: &str| json!({ tag: v });
    let hexes = |tag: &str, bits: &[String]| bits.iter().map(|b| tag_owned(tag, b)).collect();
    match t {
        PropertyType::Int => ["-9223372036854775808", "-1", "42"]
            .map(|v| tag("int", v))
            .to_vec(),
        PropertyType::Bool => vec![json!({"bool": false}), json!({"bool": true})],
        PropertyType::String => ["", "héllo \"wörld\"\\\n\t\u{1}🦀", "plain"]
            .map(|v| tag("string", v))
            .to_vec(),
        PropertyType::Binary => [
            peer::base64_encode(&[]),
            peer::base64_encode(&[0, 1, 2, 255]),
            peer::base64_encode(&[0xfe; 5]),
        ]
        .iter()
        .map(|b| tag("binary", b))
        .collect(),
        PropertyType::Timestamp => [
            Timestamp::new(-1, -5).unwrap(),
            Timestamp::new(0, 0).unwrap(),
            Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
        ]
        .iter()
        .map(|t| tag("date", &peer::timestamp_text(t.seconds(), t.nanoseconds())))
        .collect(),
        PropertyType::Float => hexes(
            "float",
            &[1.5f32, -0.0, f32::NAN, f32::MAX]
                .map(|f| format!("{:08x}", f.to_bits()))
                .into_iter()
                .collect::<Vec<_>>(),
        ),
        PropertyType::Double => hexes(
            "double",
            &[0.1f64, f64::NEG_INFINITY, f64::MIN_POSITIVE]
                .map(|f| format!("{:016x}", f.to_bits()))
                .into_iter()
                .collect::<Vec<_>>(),
        ),
        PropertyType::Decimal => hexes(
            "decimal",
            &[
                Decimal128::from_parts(12345, -2, false).unwrap(),
                Decimal128::from_parts(1, 0, true).unwrap(),
                Decimal128::from_parts((1u128 << 113) - 1, 6111, false).unwrap(),
            ]
            .map(|d| format!("{:032x}", d.to_bits()))
            .into_iter()
            .collect::<Vec<_>>(),
        ),
        PropertyType::ObjectId => [
            "000000000000000000000000",
            "64f0c0ffee0000000000beef",
            "ffffffffffffffffffffffff",
        ]
        .map(|v| tag("objectId", v))
        .to_vec(),
        PropertyType::Uuid => [
            "00000000-0000-0000-0000-000000000000",
            "123e4567-e89b-12d3-a456-426614174000",
            "ffffffff-ffff-4fff-bfff-ffffffffffff",
        ]
        .map(|v| tag("uuid", v))
        .to_vec(),
        PropertyType::Link | PropertyType::Mixed => unreachable!("not a scalar"),
    }
}

fn tag_owned(tag: &str, v: &str) -> Json {
    json!({ tag: v })
}

/// Sorted as the canonical form sorts a set.
fn as_set(mut items: Vec<Json>) -> Json {
    items.sort_by_key(peer::json_text);
    items.dedup();
    Json::Array(items)
}

fn link(id: &str) -> Json {
    json!({"link": {"class": peer::LINK_TARGET, "key": {"objectId": id}}})
}

const TARGET_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const TARGET_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

fn embedded(n: i64, mixed: Json, target: Option<&str>) -> Json {
    json!({"embedded": {
        "string": {"string": format!("embedded {n}")},
        "int": {"int": n.to_string()},
        "mixed": mixed,
        "link": target.map_or(Json::Null, link),
    }})
}

/// An `AllTypes` object with every property set; `variant` rotates which sample goes where,
/// so that several objects differ in every property.
fn all_types(id: &str, variant: usize) -> Json {
    let mut o = serde_json::Map::new();
    o.insert("_id".into(), json!({ "objectId": id }));
    let mut mixed_all = vec![Json::Null];
    for (name, t) in peer::SCALARS {
        let s = samples(t);
        let pick = |i: usize| s[(i + variant) % s.len()].clone();
        mixed_all.extend(s.iter().cloned());
        o.insert(name.into(), pick(0));
        o.insert(
            format!("{name}_opt"),
            if variant % 2 == 0 {
                Json::Null
            } else {
                pick(1)
            },
        );
        o.insert(format!("{name}_list"), json!([pick(0), pick(1), pick(0)]));
        // Sets avoid NaN, -0.0 and 0.0 side by side: realm-core compares floats by value there.
        let set_items: Vec<Json> = s.iter().filter(|v| !is_float_special(v)).cloned().collect();
        o.insert(format!("{name}_set"), as_set(set_items.clone()));
        o.insert(
            format!("{name}_dict"),
            json!({"a": pick(0), "b c": pick(1), "ü": pick(2)}),
        );
        o.insert(format!("{name}_opt_list"), json!([pick(1), null, pick(2)]));
        let mut opt_set = set_items;
        opt_set.push(Json::Null);
        o.insert(format!("{name}_opt_set"), as_set(opt_set));
        o.insert(format!("{name}_opt_dict"), json!({"n": null, "z": pick(2)}));
    }
    mixed_all.push(link(TARGET_A));
    let pick = |i: usize| mixed_all[(i + variant) % mixed_all.len()].clone();
    o.insert("mixed".into(), pick(3));
    o.insert("mixed_list".into(), Json::Array(mixed_all.clone()));
    // Mixed sets: one value per kind, since realm-core compares numbers across kinds by value.
    let one_per_kind: Vec<Json> =
        mixed_all
            .iter()
            .filter(|v| !is_float_special(v))
            .fold(Vec::<Json>::new(), |mut acc, v| {
                let kind = |j: &Json| j.as_object().and_then(|m| m.keys().next().cloned());
                if !acc.iter().any(|a| kind(a) == kind(v)) {
                    acc.push(v.clone());
                }
                acc
            });
    o.insert("mixed_set".into(), as_set(one_per_kind));
    let dict: serde_json::Map<String, Json> = mixed_all
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("k{i:02}"), v.clone()))
        .collect();
    o.insert("mixed_dict".into(), Json::Object(dict));
    o.insert("link".into(), link(TARGET_B));
    o.insert(
        "link_list".into(),
        json!([link(TARGET_A), link(TARGET_B), link(TARGET_A)]),
    );
    o.insert(
        "link_set".into(),
        as_set(vec![link(TARGET_A), link(TARGET_B)]),
    );
    o.insert("link_dict".into(), json!({"a": link(TARGET_A), "n": null}));
    o.insert(
        "embedded".into(),
        embedded(1, json!({"double": "3ff8000000000000"}), Some(TARGET_A)),
    );
    o.insert(
        "embedded_list".into(),
        json!([
            embedded(2, Json::Null, None),
            embedded(3, link(TARGET_B), Some(TARGET_B))
        ]),
    );
    o.insert(
        "embedded_dict".into(),
        json!({"e": embedded(4, json!({"string": "x"}), None), "n": null}),
    );
    Json::Object(o)
}

/// NaN and signed zeros: kept out of sets (see `docs/changeset-format.md`).
fn is_float_special(v: &Json) -> bool {
    let float = v["float"]
        .as_str()
        .map(|h| f32::from_bits(u32::from_str_radix(h, 16).unwrap()));
    let double = v["double"]
        .as_str()
        .map(|h| f64::from_bits(u64::from_str_radix(h, 16).unwrap()));
    float.is_some_and(|f| f.is_nan() || f == 0.0) || double.is_some_and(|f| f.is_nan() || f == 0.0)
}

fn targets() -> Vec<(&'static str, Json)> {
    [TARGET_A, TARGET_B]
        .iter()
        .map(|id| {
            (
                peer::LINK_TARGET,
                json!({"_id": {"objectId": id}, "name": {"string": format!("target {id}")}}),
            )
        })
        .collect()
}

const IDS: [&str; 3] = [
    "64f0c0ffee0000000000beef",
    "000000000000000000000001",
    "ffffffffffffffffffffff00",
];

fn objects() -> Vec<(&'static str, Json)> {
    let mut all = targets();
    for (variant, id) in IDS.iter().enumerate() {
        all.push((peer::ALL_TYPES, all_types(id, variant)));
    }
    all
}

fn oid(hex: &str) -> [u8; 12] {
    unhex(hex).try_into().unwrap()
}

/// Asserts two canonical texts are equal, naming the properties that differ.
fn assert_same(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let a: Json = serde_json::from_str(actual).unwrap();
    let e: Json = serde_json::from_str(expected).unwrap();
    let mut diffs = Vec::new();
    for (k, ev) in e.as_object().unwrap() {
        let av = &a[k];
        if av != ev {
            diffs.push(format!(
                "{k}: got {}, expected {}",
                peer::json_text(av),
                peer::json_text(ev)
            ));
        }
    }
    panic!("{what} differs:\n{}", diffs.join("\n"));
}

/// The expected canonical text of `AllTypes[id]`.
fn expected(id: &str) -> String {
    let variant = IDS.iter().position(|i| *i == id).unwrap();
    let mut o = all_types(id, variant);
    // realm-core keeps a required float's or double's +0.0 when -0.0 is set over it (the
    // written value compares equal: BasicArray<T>::set), so both replicas read +0.0 there.
    for (name, zero) in [("float", "80000000"), ("double", "8000000000000000")] {
        if o[name][name] == zero {
            o[name] = json!({ name: "0".repeat(zero.len()) });
        }
    }
    peer::json_text(&o)
}

/// A server file to which a realm-core client uploaded the peer schema, then `objects` written
/// as `copyToRealm` writes them; first the guard of its scratch directory, and the directory.
fn realm_world(
    name: &str,
    objects: Vec<(&str, Json)>,
) -> (tempfile::TempDir, PathBuf, Schema, ServerFile, RealmClient) {
    let (tmp, d) = dir(name);
    let schema = peer::schema();
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let mut realm = RealmClient::new(&mut server);
    realm.commit(&realm_core_schema(&schema));
    let mut w = RealmCoreWriter::default();
    for (class, object) in objects {
        peer::write_object(&mut w, &schema, class, &object).unwrap();
    }
    realm.commit(&w.cs);
    realm.upload(&mut server);
    (tmp, d, schema, server, realm)
}

#[test]
fn realm_core_writes_of_every_type_read_identically_by_tandem() {
    let (_dir, d, schema, mut server, mut realm) = realm_world("realm-to-tandem", objects());

    let db = Database::open(d.join("tandem.sqlite"), &schema, Config::default()).unwrap();
    wire::download(&db, &mut server);
    wire::upload(&db, &mut server);
    let read = db.read().unwrap();
    for id in IDS {
        let key = PrimaryKey::ObjectId(ObjectId(oid(id)));
        let object = read.object(peer::ALL_TYPES, &key).unwrap().unwrap();
        let text = peer::object_json(
            &schema,
            peer::ALL_TYPES,
            Some(&Key::ObjectId(oid(id))),
            &object,
        );
        assert_same(
            &text,
            &expected(id),
            &format!("AllTypes[{id}] as Tandem reads it"),
        );
        // The realm-core replica reads the same.
        let theirs = realm
            .state
            .read(peer::ALL_TYPES, &Key::ObjectId(oid(id)))
            .unwrap();
        let theirs = peer::object_json(
            &schema,
            peer::ALL_TYPES,
            Some(&Key::ObjectId(oid(id))),
            &theirs,
        );
        assert_same(
            &theirs,
            &text,
            &format!("AllTypes[{id}] in the realm-core replica"),
        );
    }
    // The Tandem file's schema changeset integrated as a no-op; the server state is unchanged.
    realm.download(&server);
    assert_eq!(realm.state.objects, db.export_state().unwrap().objects);
    assert_eq!(server.state().unwrap().objects, realm.state.objects);
}

#[test]
fn tandem_writes_of_every_type_are_realm_cores_instructions() {
    let (_dir, d) = dir("tandem-to-realm");
    let schema = peer::schema();
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    // The realm-core app opened its realm first: its schema is on the server.
    let mut realm = RealmClient::new(&mut server);
    let realm_schema = realm_core_schema(&schema);
    realm.commit(&realm_schema);
    realm.upload(&mut server);

    let db = Database::open(d.join("tandem.sqlite"), &schema, Config::default()).unwrap();
    // Tandem declares the schema with exactly realm-core's tables and columns.
    assert_eq!(
        schema_lines(&db.history().unwrap()[0]),
        schema_lines(&realm_schema)
    );
    let mut tx = db.begin_write().unwrap();
    let mut w = RealmCoreWriter::default();
    for (class, object) in objects() {
        peer::write_object(&mut tx, &schema, class, &object).unwrap();
        peer::write_object(&mut w, &schema, class, &object).unwrap();
    }
    // Instruction for instruction, what realm-core emits for the same writes.
    let ours: Vec<String> = tx
        .changeset()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect();
    let theirs: Vec<String> = w.cs.to_string().lines().map(str::to_owned).collect();
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "instruction {i}");
    }
    assert_eq!(tx.changeset().instructions.len(), w.cs.instructions.len());
    tx.commit().unwrap();
    wire::download(&db, &mut server);
    wire::upload(&db, &mut server);

    realm.download(&server);
    for id in IDS {
        let key = Key::ObjectId(oid(id));
        let theirs = realm.state.read(peer::ALL_TYPES, &key).unwrap();
        assert_same(
            &peer::object_json(&schema, peer::ALL_TYPES, Some(&key), &theirs),
            &expected(id),
            &format!("AllTypes[{id}] as the realm-core replica reads it"),
        );
    }
    assert_eq!(realm.state.objects, db.export_state().unwrap().objects);
}

#[test]
fn canonical_json_round_trips_through_parse() {
    for (_, object) in objects() {
        let text = peer::json_text(&object);
        let back: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(peer::json_text(&back), text);
    }
    assert_eq!(peer::timestamp_text(-1, -5), "-1.000000005");
    assert_eq!(peer::timestamp_text(0, -5), "-0.000000005");
    assert_eq!(peer::timestamp_text(5, 0), "5.000000000");
    for (bytes, text) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg=="),
    ] {
        assert_eq!(peer::base64_encode(bytes), text);
        assert_eq!(peer::base64_decode(text).unwrap(), bytes);
    }
    assert!(peer::base64_decode("Zg=").is_err());
    assert!(peer::base64_decode("Z===").is_err());
    let mut s = String::new();
    peer::push_string(&mut s, "a\"\\\n\u{1f}é/");
    assert_eq!(s, "\"a\\\"\\\\\\u000a\\u001fé/\"");
    assert!(peer::parse_value(&json!({"date": "1.5"})).is_err());
    assert!(peer::parse_value(&json!({"float": "3fc0000"})).is_err());
    assert!(peer::parse_value(&json!({"uuid": "123e4567e89b12d3a456426614174000"})).is_err());
    assert_eq!(
        peer::parse_value(&json!({"date": "-0.000000005"})).unwrap(),
        Value::Timestamp(Timestamp::new(0, -5).unwrap())
    );
    assert_eq!(
        peer::parse_value(&json!({"uuid": "123e4567-e89b-12d3-a456-426614174000"})).unwrap(),
        Value::Uuid(Uuid([
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00
        ]))
    );
}

#[test]
fn additive_schema_from_realm_core_reaches_tandem_clients() {
    use tandem::model::{ClassSchema, Property};
    let (_dir, d) = dir("additive");
    let mut server = ServerFile::open(d.join("server.sqlite")).unwrap();
    let mut realm = RealmClient::new(&mut server);
    realm.commit_bytes(&unhex(SCHEMA_HEX));
    realm.commit_bytes(&unhex(OBJECT_HEX));
    realm.upload(&mut server);
    let db = Database::open(d.join("tandem.sqlite"), &task_schema(), Config::default()).unwrap();
    wire::download(&db, &mut server);
    wire::upload(&db, &mut server);

    // The realm-core app's next version adds a property and a class (ADDITIVE_DISCOVERED).
    let mut cs = Changeset::new();
    let task = cs.intern("Task");
    let priority = cs.intern("priority");
    cs.intern("");
    cs.push(Instruction::AddColumn(AddColumn {
        table: task,
        field: priority,
        column_type: ColumnType::Value(PayloadType::Int),
        nullable: true,
        collection: ColumnCollection::Single,
    }));
    let note = cs.intern("Note");
    let id = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table: note,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::String,
            nullable: false,
        }),
    }));
    let object = WireKey::ObjectId(ObjectId(TASK_ID));
    cs.push(Instruction::Update(Update {
        path: FieldPath {
            table: task,
            object,
            field: priority,
            path: Default::default(),
        },
        value: Payload::Int(3),
        is_default: false,
        prior_size: 0,
    }));
    let n1 = cs.intern("n1");
    cs.push(Instruction::CreateObject {
        table: note,
        object: WireKey::String(n1),
    });
    realm.commit(&cs);
    realm.upload(&mut server);

    // A Tandem client that does not declare them syncs on and keeps them.
    wire::download(&db, &mut server);
    let state = db.export_state().unwrap();
    assert!(state.schemas["Task"].columns.contains_key("priority"));
    assert!(state.objects["Note"].contains_key(&Key::String("n1".into())));
    let mut tx = db.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::ObjectId(ObjectId(TASK_ID)),
        "title",
        Value::String("edited by tandem".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    wire::upload(&db, &mut server);
    realm.download(&server);
    assert_eq!(realm.state.objects, db.export_state().unwrap().objects);
    drop(db);

    // The Tandem app's next version declares them too and reads the realm-core values.
    let wider = Schema::new(vec![
        ClassSchema::top_level(
            "Task",
            "_id",
            vec![
                Property::new("_id", PropertyType::ObjectId),
                Property::new("title", PropertyType::String),
                Property::new("done", PropertyType::Bool),
                Property::new("priority", PropertyType::Int).nullable(),
            ],
        ),
        ClassSchema::top_level(
            "Note",
            "_id",
            vec![Property::new("_id", PropertyType::String)],
        ),
    ])
    .unwrap();
    let db = Database::open(d.join("tandem.sqlite"), &wider, Config::default()).unwrap();
    let task = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::ObjectId(ObjectId(TASK_ID)))
        .unwrap()
        .unwrap();
    assert_eq!(task.fields["priority"], Field::Value(Val::Int(3)));
    // Declaring what the file already has adds nothing to the history.
    assert!(db.pending_uploads(1 << 20).unwrap().is_empty());
}

#[test]
fn collections_in_mixed_are_refused_without_loss() {
    let (_dir, _d, _schema, mut server, realm) = realm_world("mixed-collections", targets());
    let before = server.state().unwrap();
    // realm-core 14 (protocol 13) writes `RealmAny.create(realmListOf(...))` as an Update with
    // the List payload: Tandem's mixed holds no collections, so the upload is refused whole.
    let mut cs = Changeset::new();
    let mut w = RealmCoreWriter::default();
    let key = PrimaryKey::ObjectId(ObjectId([9; 12]));
    peer::Writer::create(&mut w, peer::ALL_TYPES, &key).unwrap();
    let path = w.path(peer::ALL_TYPES, &key, "mixed", &[]);
    w.update(path, Payload::List);
    std::mem::swap(&mut cs, &mut w.cs);
    let entry = UploadEntry {
        client_version: 10,
        last_integrated_server_version: 0,
        origin_timestamp: 1,
        origin_file_ident: 0,
        changeset: cs.encode(),
    };
    assert!(server.integrate_upload(realm.ident, &[entry]).is_err());
    assert_eq!(server.state().unwrap(), before);
}
