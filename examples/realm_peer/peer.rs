//! The mixed-client peer's schema, its canonical JSON and the write order it follows: shared by
//! `examples/realm_peer` (the program the realm-core compatibility suite runs) and
//! `tests/realm_changesets.rs` (which checks the same writes against realm-core's instruction
//! shapes).
//!
//! # Schema
//!
//! Three classes (the Kotlin side declares exactly these, in this order):
//!
//! - `LinkTarget` (top-level): `_id` objectId primary key (not nullable), `name` string.
//! - `AllTypesEmbedded` (embedded): `string` string, `int` int, `mixed` mixed, `link` link to
//!   `LinkTarget` (nullable).
//! - `AllTypes` (top-level): `_id` objectId primary key (not nullable), then for each scalar type
//!   `T` of [`SCALARS`], in that order, the eight properties `T` (required), `T_opt` (nullable),
//!   `T_list`, `T_set`, `T_dict` (required elements) and `T_opt_list`, `T_opt_set`, `T_opt_dict`
//!   (nullable elements); then `mixed`, `mixed_list`, `mixed_set`, `mixed_dict` (mixed, always
//!   nullable); `link` (nullable link to `LinkTarget`), `link_list`, `link_set` (links, not
//!   nullable), `link_dict` (nullable values); `embedded` (nullable link to
//!   `AllTypesEmbedded`), `embedded_list`, `embedded_dict` (nullable values): 92 properties
//!   with `_id`.
//!
//! # Canonical JSON
//!
//! One line, no whitespace outside strings. An object is `{"_id": KEY, "<property>": VALUE, ...}`
//! with every property of its class (embedded objects: without `_id`), keys in ascending
//! byte order of their UTF-8 (code point order). Strings are written with `"` and `\` escaped
//! as `\"` and `\\`, U+0000 to U+001F as `\u00xx` (lowercase hex), every other character as
//! itself (UTF-8). Values:
//!
//! | value | form |
//! |---|---|
//! | null (also a link to an object that does not exist, and no embedded object) | `null` |
//! | int | `{"int":"-5"}` (decimal in a string) |
//! | bool | `{"bool":true}` |
//! | string | `{"string":"..."}` |
//! | binary | `{"binary":"<base64, standard alphabet, padded>"}` |
//! | timestamp | `{"date":"<seconds>.<9-digit nanoseconds>"}`, one leading `-` when before 1970 (`-1.000000005` is -1 s -5 ns) |
//! | float | `{"float":"<8 lowercase hex digits of the IEEE-754 bits>"}` |
//! | double | `{"double":"<16 lowercase hex digits of the IEEE-754 bits>"}` |
//! | decimal128 | `{"decimal":"<32 lowercase hex digits of the BID bits, high 64 bits first>"}` |
//! | object id | `{"objectId":"<24 lowercase hex digits>"}` |
//! | UUID | `{"uuid":"<8-4-4-4-12 lowercase hex>"}` |
//! | link | `{"link":{"class":"<class>","key":KEY}}` |
//! | embedded object | `{"embedded":{...its properties...}}` |
//! | list | `[VALUE,...]` in list order |
//! | set | `[VALUE,...]` sorted by the canonical text of each element (byte order) |
//! | dictionary | `{"<key>":VALUE,...}` keys in byte order |
//!
//! `KEY` is the primary key in the same tagged form (`{"objectId":"..."}` here). A mixed value
//! uses the form of the type it holds. Floats as bits keep NaN payloads and `-0.0` exact on
//! both sides.
//!
//! # Write order
//!
//! [`write_object`] writes an object as realm-kotlin's `copyToRealm` does: create it by primary
//! key, then each property in declaration order (lists element by element, sets in the given
//! order, dictionaries in key order, embedded objects created then filled field by field). Each
//! step is a [`Writer`] call, so the test can check every step against the instruction
//! realm-core emits for it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value as Json;
use tandem::model::{
    ClassSchema, CollectionKind, Decimal128, Link, ObjectId, PrimaryKey, Property, PropertyType,
    Schema, Timestamp, Uuid, Value,
};
use tandem::state::{Element, Field, Key, Object, Val};
use tandem::store::PathStep;

/// The top-level class holding every property type.
pub const ALL_TYPES: &str = "AllTypes";
/// The embedded class.
pub const EMBEDDED: &str = "AllTypesEmbedded";
/// The link target class.
pub const LINK_TARGET: &str = "LinkTarget";

/// The scalar types, with the property-name prefix each gets in `AllTypes`.
pub const SCALARS: [(&str, PropertyType); 10] = [
    ("int", PropertyType::Int),
    ("bool", PropertyType::Bool),
    ("string", PropertyType::String),
    ("binary", PropertyType::Binary),
    ("date", PropertyType::Timestamp),
    ("float", PropertyType::Float),
    ("double", PropertyType::Double),
    ("decimal", PropertyType::Decimal),
    ("objectId", PropertyType::ObjectId),
    ("uuid", PropertyType::Uuid),
];

/// The peer's schema (see the module header).
pub fn schema() -> Schema {
    use CollectionKind::{Dictionary, List, Set};
    let mut all = vec![Property::new("_id", PropertyType::ObjectId)];
    for (name, t) in SCALARS {
        all.push(Property::new(name, t));
        all.push(Property::new(format!("{name}_opt"), t).nullable());
        for (suffix, kind) in [("list", List), ("set", Set), ("dict", Dictionary)] {
            all.push(Property::new(format!("{name}_{suffix}"), t).collection(kind));
        }
        for (suffix, kind) in [("list", List), ("set", Set), ("dict", Dictionary)] {
            let p = Property::new(format!("{name}_opt_{suffix}"), t).nullable();
            all.push(p.collection(kind));
        }
    }
    all.push(Property::new("mixed", PropertyType::Mixed));
    for (suffix, kind) in [("list", List), ("set", Set), ("dict", Dictionary)] {
        all.push(Property::new(format!("mixed_{suffix}"), PropertyType::Mixed).collection(kind));
    }
    all.push(Property::link("link", LINK_TARGET));
    for (suffix, kind) in [("list", List), ("set", Set), ("dict", Dictionary)] {
        all.push(Property::link(format!("link_{suffix}"), LINK_TARGET).collection(kind));
    }
    all.push(Property::link("embedded", EMBEDDED));
    for (suffix, kind) in [("list", List), ("dict", Dictionary)] {
        all.push(Property::link(format!("embedded_{suffix}"), EMBEDDED).collection(kind));
    }
    Schema::new(vec![
        ClassSchema::top_level(
            LINK_TARGET,
            "_id",
            vec![
                Property::new("_id", PropertyType::ObjectId),
                Property::new("name", PropertyType::String),
            ],
        ),
        ClassSchema::embedded(
            EMBEDDED,
            vec![
                Property::new("string", PropertyType::String),
                Property::new("int", PropertyType::Int),
                Property::new("mixed", PropertyType::Mixed),
                Property::link("link", LINK_TARGET),
            ],
        ),
        ClassSchema::top_level(ALL_TYPES, "_id", all),
    ])
    .expect("the peer schema is valid")
}

/// A malformed input document, or an object the schema cannot hold.
#[derive(Debug)]
pub struct PeerError(pub String);

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PeerError> {
    Err(PeerError(msg.into()))
}

// ---- canonical JSON output ----

/// Appends `s` as a JSON string with the escaping rule of the module header.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn tagged(tag: &str, body: &str) -> String {
    let mut out = String::from("{");
    push_string(&mut out, tag);
    out.push(':');
    out.push_str(body);
    out.push('}');
    out
}

fn tagged_str(tag: &str, s: &str) -> String {
    let mut body = String::new();
    push_string(&mut body, s);
    tagged(tag, &body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `seconds.nanoseconds` (9 digits), one leading `-` before 1970.
pub fn timestamp_text(seconds: i64, nanoseconds: i32) -> String {
    let negative = seconds < 0 || nanoseconds < 0;
    format!(
        "{}{}.{:09}",
        if negative { "-" } else { "" },
        seconds.unsigned_abs(),
        nanoseconds.unsigned_abs()
    )
}

/// The canonical form of a primary key.
pub fn key_json(key: &Key) -> String {
    match key {
        Key::Null => "null".into(),
        Key::Int(v) => tagged_str("int", &v.to_string()),
        Key::String(s) => tagged_str("string", s),
        Key::ObjectId(id) => tagged_str("objectId", &hex(id)),
        Key::Uuid(id) => tagged_str("uuid", &Uuid(*id).to_string()),
        Key::GlobalKey(hi, lo) => tagged_str("globalKey", &format!("{hi:016x}{lo:016x}")),
    }
}

/// The canonical form of a scalar or link.
pub fn val_json(v: &Val) -> String {
    match v {
        Val::Null => "null".into(),
        Val::Int(i) => tagged_str("int", &i.to_string()),
        Val::Bool(b) => tagged("bool", if *b { "true" } else { "false" }),
        Val::String(s) => tagged_str("string", s),
        Val::Binary(b) => tagged_str("binary", &base64_encode(b)),
        Val::Timestamp(s, n) => tagged_str("date", &timestamp_text(*s, *n)),
        Val::Float(bits) => tagged_str("float", &format!("{bits:08x}")),
        Val::Double(bits) => tagged_str("double", &format!("{bits:016x}")),
        Val::Decimal(bits) => tagged_str("decimal", &format!("{bits:032x}")),
        Val::ObjectId(id) => tagged_str("objectId", &hex(id)),
        Val::Uuid(id) => tagged_str("uuid", &Uuid(*id).to_string()),
        Val::Link(class, key) => {
            let mut body = String::from("{\"class\":");
            push_string(&mut body, class);
            body.push_str(",\"key\":");
            body.push_str(&key_json(key));
            body.push('}');
            tagged("link", &body)
        }
    }
}

fn element_json(schema: &Schema, e: &Element) -> String {
    match e {
        Element::Value(v) => val_json(v),
        Element::Embedded(o) => tagged("embedded", &object_json(schema, EMBEDDED, None, o)),
    }
}

fn field_json(schema: &Schema, field: Option<&Field>) -> String {
    match field {
        None | Some(Field::Embedded(None)) => "null".into(),
        Some(Field::Value(v)) => val_json(v),
        Some(Field::Embedded(Some(o))) => {
            tagged("embedded", &object_json(schema, EMBEDDED, None, o))
        }
        Some(Field::List(items)) => {
            let parts: Vec<String> = items.iter().map(|e| element_json(schema, e)).collect();
            format!("[{}]", parts.join(","))
        }
        Some(Field::Set(items)) => {
            let mut parts: Vec<String> = items.iter().map(val_json).collect();
            parts.sort();
            format!("[{}]", parts.join(","))
        }
        Some(Field::Dictionary(map)) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, e)| {
                    let mut s = String::new();
                    push_string(&mut s, k);
                    s.push(':');
                    s.push_str(&element_json(schema, e));
                    s
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

/// The canonical JSON of an object of `class` as Tandem reads it (`ReadTransaction::object` or
/// `State::read`); `key` is `None` for an embedded object. Properties the object has but the
/// peer's schema does not declare are left out; declared ones it lacks are `null`.
pub fn object_json(schema: &Schema, class: &str, key: Option<&Key>, object: &Object) -> String {
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    if let Some(key) = key {
        fields.insert("_id", key_json(key));
    }
    if let Some(class) = schema.class(class) {
        for p in &class.properties {
            if class.primary_key.as_deref() == Some(p.name.as_str()) {
                continue;
            }
            fields.insert(&p.name, field_json(schema, object.fields.get(&p.name)));
        }
    }
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, v)| {
            let mut s = String::new();
            push_string(&mut s, name);
            s.push(':');
            s.push_str(v);
            s
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

// ---- canonical JSON input ----

fn one_tag(j: &Json) -> Result<(&str, &Json), PeerError> {
    match j.as_object() {
        Some(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            Ok((k.as_str(), v))
        }
        _ => err(format!(
            "expected a tagged value like {{\"int\":\"5\"}}, got {j}"
        )),
    }
}

fn text(j: &Json) -> Result<&str, PeerError> {
    j.as_str()
        .map_or_else(|| err(format!("expected a string, got {j}")), Ok)
}

fn unhex<const N: usize>(s: &str) -> Result<[u8; N], PeerError> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N || !s.is_ascii() {
        return err(format!("expected {} hex digits, got {s:?}", 2 * N));
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| PeerError(format!("bad hex {s:?}")))?;
    }
    Ok(out)
}

fn parse_uuid(s: &str) -> Result<Uuid, PeerError> {
    let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
    if dashes != [8, 13, 18, 23] {
        return err(format!("expected a UUID as 8-4-4-4-12 hex, got {s:?}"));
    }
    Ok(Uuid(unhex::<16>(&s.replace('-', ""))?))
}

fn parse_timestamp(s: &str) -> Result<Timestamp, PeerError> {
    let bad = || PeerError(format!("expected a date as seconds.nnnnnnnnn, got {s:?}"));
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, nanos) = body.split_once('.').ok_or_else(bad)?;
    if nanos.len() != 9 || secs.is_empty() {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: i32 = nanos.parse().map_err(|_| bad())?;
    let (secs, nanos) = if negative {
        (-secs, -nanos)
    } else {
        (secs, nanos)
    };
    Timestamp::new(secs, nanos).map_err(|e| PeerError(e.to_string()))
}

/// A primary key from its canonical form.
pub fn parse_key(j: &Json) -> Result<PrimaryKey, PeerError> {
    if j.is_null() {
        return Ok(PrimaryKey::Null);
    }
    let (tag, body) = one_tag(j)?;
    let s = text(body)?;
    Ok(match tag {
        "int" => PrimaryKey::Int(s.parse().map_err(|_| PeerError(format!("bad int {s:?}")))?),
        "string" => PrimaryKey::String(s.to_owned()),
        "objectId" => PrimaryKey::ObjectId(ObjectId(unhex::<12>(s)?)),
        "uuid" => PrimaryKey::Uuid(parse_uuid(s)?),
        _ => return err(format!("{tag} cannot be a primary key")),
    })
}

/// A scalar or link from its canonical form.
pub fn parse_value(j: &Json) -> Result<Value, PeerError> {
    if j.is_null() {
        return Ok(Value::Null);
    }
    let (tag, body) = one_tag(j)?;
    Ok(match tag {
        "bool" => Value::Bool(
            body.as_bool()
                .ok_or_else(|| PeerError(format!("expected true or false, got {body}")))?,
        ),
        "link" => {
            let class = text(&body["class"])?.to_owned();
            Value::Link(Link {
                class,
                key: parse_key(&body["key"])?,
            })
        }
        tag => {
            let s = text(body)?;
            match tag {
                "int" => Value::Int(s.parse().map_err(|_| PeerError(format!("bad int {s:?}")))?),
                "string" => Value::String(s.to_owned()),
                "binary" => Value::Binary(base64_decode(s)?),
                "date" => Value::Timestamp(parse_timestamp(s)?),
                "float" => Value::Float(f32::from_bits(u32::from_be_bytes(unhex::<4>(s)?))),
                "double" => Value::Double(f64::from_bits(u64::from_be_bytes(unhex::<8>(s)?))),
                "decimal" => {
                    Value::Decimal(Decimal128::from_bits(u128::from_be_bytes(unhex::<16>(s)?)))
                }
                "objectId" => Value::ObjectId(ObjectId(unhex::<12>(s)?)),
                "uuid" => Value::Uuid(parse_uuid(s)?),
                _ => return err(format!("unknown value tag {tag:?}")),
            }
        }
    })
}

// ---- writing ----

/// The steps of a realm-kotlin `copyToRealm`, one call each. `WriteTransaction` implements it
/// (the peer); the test implements it with the instructions realm-core emits for each step.
pub trait Writer {
    /// The error of a step.
    type Error: From<PeerError>;
    /// Creates the object `class[key]`.
    fn create(&mut self, class: &str, key: &PrimaryKey) -> Result<(), Self::Error>;
    /// Sets a single value (`steps` empty), a field of an embedded object or a dictionary entry.
    fn set(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
        value: Value,
    ) -> Result<(), Self::Error>;
    /// Creates the embedded object at `prop` + `steps` (a single property or dictionary entry).
    fn embed(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
    ) -> Result<(), Self::Error>;
    /// Appends `value` to a list that holds `len` elements.
    fn list_push(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        len: u32,
        value: Value,
    ) -> Result<(), Self::Error>;
    /// Appends a new embedded object to a list that holds `len` elements.
    fn list_push_embedded(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        len: u32,
    ) -> Result<(), Self::Error>;
    /// Adds `value` to a set.
    fn set_insert(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        value: Value,
    ) -> Result<(), Self::Error>;
}

impl Writer for tandem::store::WriteTransaction<'_> {
    type Error = Box<dyn std::error::Error>;

    fn create(&mut self, class: &str, key: &PrimaryKey) -> Result<(), Self::Error> {
        Ok(tandem::store::WriteTransaction::create(
            self,
            class,
            key.clone(),
            &[],
        )?)
    }

    fn set(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
        value: Value,
    ) -> Result<(), Self::Error> {
        if steps.is_empty() {
            Ok(tandem::store::WriteTransaction::set(
                self, class, key, prop, value,
            )?)
        } else {
            Ok(self.set_at(class, key, prop, steps, value)?)
        }
    }

    fn embed(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        steps: &[PathStep],
    ) -> Result<(), Self::Error> {
        Ok(self.create_embedded_at(class, key, prop, steps)?)
    }

    fn list_push(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        len: u32,
        value: Value,
    ) -> Result<(), Self::Error> {
        Ok(self.list_insert(class, key, prop, len, value)?)
    }

    fn list_push_embedded(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        _len: u32,
    ) -> Result<(), Self::Error> {
        Ok(tandem::store::WriteTransaction::list_push_embedded(
            self, class, key, prop,
        )?)
    }

    fn set_insert(
        &mut self,
        class: &str,
        key: &PrimaryKey,
        prop: &str,
        value: Value,
    ) -> Result<(), Self::Error> {
        Ok(tandem::store::WriteTransaction::set_insert(
            self, class, key, prop, value,
        )?)
    }
}

/// Fills the embedded object at `prop` + `steps` from its canonical JSON (its fields).
fn write_embedded<W: Writer>(
    w: &mut W,
    schema: &Schema,
    class: &str,
    key: &PrimaryKey,
    prop: &str,
    steps: &[PathStep],
    fields: &Json,
) -> Result<(), W::Error> {
    let embedded = schema.class(EMBEDDED).expect("declared");
    for p in &embedded.properties {
        let mut path = steps.to_vec();
        path.push(PathStep::Name(p.name.clone()));
        w.set(class, key, prop, &path, parse_value(&fields[&p.name])?)?;
    }
    Ok(())
}

fn embedded_body(j: &Json) -> Result<&Json, PeerError> {
    match one_tag(j)? {
        ("embedded", body) if body.is_object() => Ok(body),
        _ => err(format!("expected {{\"embedded\":{{...}}}}, got {j}")),
    }
}

fn array(j: &Json) -> Result<&Vec<Json>, PeerError> {
    j.as_array()
        .map_or_else(|| err(format!("expected an array, got {j}")), Ok)
}

/// Writes one object of `class` from its canonical JSON, in realm-kotlin's `copyToRealm`
/// order (module header). Properties missing from the JSON are left as they are; an embedded
/// property or dictionary value given as `null` is not written (no object is created).
pub fn write_object<W: Writer>(
    w: &mut W,
    schema: &Schema,
    class: &str,
    json: &Json,
) -> Result<PrimaryKey, W::Error> {
    let Some(class_schema) = schema.class(class) else {
        return Err(PeerError(format!("no class {class} in the peer schema")).into());
    };
    let key = parse_key(&json["_id"])?;
    w.create(class, &key)?;
    for p in &class_schema.properties {
        if class_schema.primary_key.as_deref() == Some(p.name.as_str()) {
            continue;
        }
        let Some(j) = json.get(&p.name) else {
            continue;
        };
        let embedded = p.link_target.as_deref() == Some(EMBEDDED);
        let name = p.name.as_str();
        match (p.collection, embedded) {
            (CollectionKind::Single, false) => w.set(class, &key, name, &[], parse_value(j)?)?,
            (CollectionKind::Single, true) => {
                if !j.is_null() {
                    w.embed(class, &key, name, &[])?;
                    write_embedded(w, schema, class, &key, name, &[], embedded_body(j)?)?;
                }
            }
            (CollectionKind::List, false) => {
                for (i, e) in array(j)?.iter().enumerate() {
                    w.list_push(class, &key, name, i as u32, parse_value(e)?)?;
                }
            }
            (CollectionKind::List, true) => {
                for (i, e) in array(j)?.iter().enumerate() {
                    w.list_push_embedded(class, &key, name, i as u32)?;
                    let steps = [PathStep::Index(i as u32)];
                    write_embedded(w, schema, class, &key, name, &steps, embedded_body(e)?)?;
                }
            }
            (CollectionKind::Set, _) => {
                for e in array(j)? {
                    w.set_insert(class, &key, name, parse_value(e)?)?;
                }
            }
            (CollectionKind::Dictionary, _) => {
                let Some(map) = j.as_object() else {
                    return Err(PeerError(format!("{name}: expected an object, got {j}")).into());
                };
                let entries: BTreeMap<&String, &Json> = map.iter().collect();
                for (k, e) in entries {
                    let steps = [PathStep::Name(k.clone())];
                    if embedded && !e.is_null() {
                        w.embed(class, &key, name, &steps)?;
                        write_embedded(w, schema, class, &key, name, &steps, embedded_body(e)?)?;
                    } else {
                        w.set(class, &key, name, &steps, parse_value(e)?)?;
                    }
                }
            }
        }
    }
    Ok(key)
}

// ---- base64 (RFC 4648 standard alphabet, padded; the rust-base64 crate) ----

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64; anything else (missing or extra padding, other alphabets,
/// non-zero trailing bits) is an error.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, PeerError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| PeerError(format!("not padded standard base64: {s:?} ({e})")))
}

/// Any JSON value as canonical text: object keys in byte order, no whitespace, strings escaped
/// as in the module header. Arrays keep their order (sort a set's elements before).
pub fn json_text(j: &Json) -> String {
    let mut out = String::new();
    write_json(&mut out, j);
    out
}

fn write_json(out: &mut String, j: &Json) {
    match j {
        Json::Null | Json::Bool(_) | Json::Number(_) => out.push_str(&j.to_string()),
        Json::String(s) => push_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let sorted: BTreeMap<&String, &Json> = map.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, k);
                out.push(':');
                write_json(out, v);
            }
            out.push('}');
        }
    }
}
