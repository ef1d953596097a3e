//! Mirror tables: every synced class as a typed PostgreSQL table, written both ways (cargo
//! feature `postgres`; issue 16, part 3; the schema is documented in `docs/scaling.md`).
//!
//! Atlas Device Sync kept "the synced Atlas cluster which mirrors the server realm"
//! (`realm-sync.md`); with `--database`, tandem-server keeps PostgreSQL tables instead:
//!
//! - **Device to table.** Each top-level, non-asymmetric class `C` of any server file has the
//!   table `tandem_mirror."C"`: `_path` (the server path), the primary key property, and one
//!   column per property (types in [`column_type`]; collections, embedded objects and mixed
//!   values as `jsonb` in the form of [`to_json`]). Whenever a server file integrates
//!   changesets, the rows of every object they touch are rewritten from the server's state
//!   (or deleted) in the same PostgreSQL transaction as the history that holds them
//!   ([`object_statement`], pushed by `Replica`).
//! - **Table to device.** A row trigger on every mirror table queues each INSERT, UPDATE and
//!   DELETE a backend makes (`tandem_mirror_queue`, the row before and after as `to_jsonb`)
//!   and notifies `tandem_mirror`. A server process turns queued writes into one changeset
//!   made by the server ([`decode_entry`]; INSERT writes every column, UPDATE the columns that
//!   changed, DELETE erases) and integrates it with Realm's merge rules; the queue entries are
//!   deleted in the transaction that commits the changeset. The server's own mirror writes set
//!   `tandem.mirror_writer` for their transaction, which the trigger skips: nothing echoes.
//!
//! A queued write that cannot be turned into a changeset (a class the server path's schema does
//! not have, a value of the wrong form, an update of an object devices deleted) stays in the
//! queue with its reason in `error` and is not retried.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value as Json};

use crate::changeset::{CollectionType, PayloadType};
use crate::model::Decimal128;
use crate::state::{ColumnSpec, Element, Field, Key, Object, Schemas, TableSchema, TableSpec, Val};

/// Makes the rest of the transaction the server's own: the queue trigger skips its writes to
/// the mirror tables (no echo). Transaction-local.
pub const AS_SERVER: &str = "SELECT set_config('tandem.mirror_writer', 'on', true)";

/// The PostgreSQL schema that holds the mirror tables.
pub const SCHEMA: &str = "tandem_mirror";

/// The notification channel of queued backend writes; payload: the server path.
pub const QUEUE_CHANNEL: &str = "tandem_mirror";

/// The column that names a row's server path in every mirror table.
pub const PATH_COLUMN: &str = "_path";

/// Queued writes one round of [`ServerFile::mirror_integrate`](super::ServerFile) takes.
pub const QUEUE_BATCH: i64 = 500;

/// The advisory lock (two-key space, distinct from the files' one-key locks) serializing
/// mirror DDL across processes.
pub const DDL_LOCK: (i32, i32) = (0x7464_6d6d, 1); // "tdmm"

/// What every process creates at start (under the schema lock): the mirror schema, the queue
/// and the trigger function every mirror table calls with its primary key column's name.
///
/// The function runs with `TimeZone` UTC, `bytea_output` hex and `extra_float_digits` 3, so that
/// `to_jsonb` writes timestamps, binaries and floats in one exact form whatever the backend's
/// session settings.
pub const DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS tandem_mirror;
CREATE TABLE IF NOT EXISTS tandem_mirror_queue (
    id bigserial PRIMARY KEY,
    file_id bigint NOT NULL REFERENCES tandem_file (id) ON DELETE CASCADE,
    class text NOT NULL,
    op text NOT NULL,
    old jsonb,
    new jsonb,
    queued_at timestamptz NOT NULL DEFAULT now(),
    error text
);
CREATE TABLE IF NOT EXISTS tandem_mirror_filled (
    file_id bigint PRIMARY KEY REFERENCES tandem_file (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tandem_mirror_queue_pending ON tandem_mirror_queue (file_id, id)
    WHERE error IS NULL;
CREATE OR REPLACE FUNCTION tandem_mirror_queue_write() RETURNS trigger LANGUAGE plpgsql
    SET TimeZone = 'UTC' SET bytea_output = 'hex' SET extra_float_digits = 3 AS $tandem$
DECLARE
    fid bigint;
    p text;
BEGIN
    IF current_setting('tandem.mirror_writer', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD._path IS DISTINCT FROM NEW._path
            OR to_jsonb(OLD) -> TG_ARGV[0] IS DISTINCT FROM to_jsonb(NEW) -> TG_ARGV[0]) THEN
        RAISE EXCEPTION 'tandem: the _path and the primary key (%) of a synced object cannot change; delete the row and insert another', TG_ARGV[0];
    END IF;
    IF TG_OP = 'DELETE' THEN p := OLD._path; ELSE p := NEW._path; END IF;
    SELECT id INTO fid FROM tandem_file WHERE path = p AND path <> 'app-services';
    IF fid IS NULL THEN
        RAISE EXCEPTION 'tandem: no server file has the path %', p;
    END IF;
    INSERT INTO tandem_mirror_queue (file_id, class, op, old, new) VALUES (fid, TG_TABLE_NAME, TG_OP,
        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    PERFORM pg_notify('tandem_mirror', p);
    RETURN NULL;
END
$tandem$;
CREATE OR REPLACE FUNCTION tandem_mirror_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $tandem$
BEGIN
    RAISE EXCEPTION 'tandem: TRUNCATE of a mirror table is not synced; DELETE the rows instead';
END
$tandem$;
"#;

/// A PostgreSQL column type of the mirror tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `int` properties and `int` primary keys.
    Bigint,
    /// `bool`.
    Boolean,
    /// `string`, and `objectId` as 24 lowercase hex digits.
    Text,
    /// `data`.
    Bytea,
    /// `date` (microseconds: PostgreSQL rounds Realm's nanoseconds).
    Timestamptz,
    /// `float`.
    Real,
    /// `double`.
    Double,
    /// `decimal128`.
    Numeric,
    /// `uuid`.
    Uuid,
    /// Lists, sets, dictionaries, embedded objects and `mixed`.
    Jsonb,
}

impl PgType {
    /// The type as DDL names it.
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Bigint => "bigint",
            PgType::Boolean => "boolean",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Timestamptz => "timestamptz",
            PgType::Real => "real",
            PgType::Double => "double precision",
            PgType::Numeric => "numeric",
            PgType::Uuid => "uuid",
            PgType::Jsonb => "jsonb",
        }
    }

    /// The type as PostgreSQL's `format_type` reports it (to compare with an existing column).
    pub fn formatted(self) -> &'static str {
        match self {
            PgType::Timestamptz => "timestamp with time zone",
            t => t.sql(),
        }
    }

    fn of_scalar(t: PayloadType) -> PgType {
        match t {
            PayloadType::Int => PgType::Bigint,
            PayloadType::Bool => PgType::Boolean,
            PayloadType::String | PayloadType::ObjectId => PgType::Text,
            PayloadType::Binary => PgType::Bytea,
            PayloadType::Timestamp => PgType::Timestamptz,
            PayloadType::Float => PgType::Real,
            PayloadType::Double => PgType::Double,
            PayloadType::Decimal => PgType::Numeric,
            PayloadType::Uuid => PgType::Uuid,
            _ => PgType::Jsonb,
        }
    }
}

/// A quoted SQL identifier (`"` doubled).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The mirror table of `class`, schema-qualified and quoted.
pub fn table(class: &str) -> String {
    format!("{SCHEMA}.{}", ident(class))
}

/// The primary key property, its type and nullability of a class that has a mirror table
/// (top-level and not asymmetric); `None` for any other.
pub fn mirrored(schema: &TableSchema) -> Option<(&str, PayloadType, bool)> {
    match &schema.spec {
        TableSpec::TopLevel {
            pk_field,
            pk_type,
            pk_nullable,
            asymmetric: false,
        } => Some((pk_field.as_str(), *pk_type, *pk_nullable)),
        _ => None,
    }
}

fn embedded_target<'s>(schemas: &'s Schemas, column: &ColumnSpec) -> Option<&'s TableSchema> {
    let t = column.link_target.as_deref()?;
    schemas
        .get(t)
        .filter(|s| matches!(s.spec, TableSpec::Embedded))
}

/// The primary key type of a link's target class (`int` when the class is unknown).
fn target_key_type(schemas: &Schemas, target: &str) -> PayloadType {
    match schemas.get(target).map(|s| &s.spec) {
        Some(TableSpec::TopLevel { pk_type, .. }) => *pk_type,
        _ => PayloadType::Int,
    }
}

/// The mirror column type of a property: a single value by its type (a link by its target's
/// primary key type), anything else `jsonb`.
pub fn column_type(schemas: &Schemas, column: &ColumnSpec) -> PgType {
    if column.collection != CollectionType::Single || embedded_target(schemas, column).is_some() {
        return PgType::Jsonb;
    }
    match &column.link_target {
        Some(t) => PgType::of_scalar(target_key_type(schemas, t)),
        None => PgType::of_scalar(column.value_type),
    }
}

/// The columns a mirror table of `class` needs besides `_path`: (name, type, DDL suffix), the
/// primary key first. `None` for a class without a mirror table.
///
/// No property column is `NOT NULL` (one class may be declared required on one path and
/// optional on another, sharing the table): a required property's column has Realm's default
/// as its default, a collection's `[]` or `{}`. Names PostgreSQL would truncate (over
/// [`MAX_NAME`] bytes) are left out: a class so named has no table, a property no column.
pub fn wanted_columns(schemas: &Schemas, class: &str) -> Option<Vec<(String, PgType, String)>> {
    let schema = schemas.get(class)?;
    let (pk, pk_type, _) = mirrored(schema)?;
    if class.len() > MAX_NAME || pk.len() > MAX_NAME {
        return None;
    }
    let mut out = vec![(pk.to_owned(), PgType::of_scalar(pk_type), String::new())];
    for (name, column) in &schema.columns {
        if name == PATH_COLUMN || name == pk || name.len() > MAX_NAME {
            continue;
        }
        let ty = column_type(schemas, column);
        let suffix = match (column.collection, &column.link_target, column.nullable) {
            (CollectionType::List | CollectionType::Set, _, _) => " DEFAULT '[]'".into(),
            (CollectionType::Dictionary, _, _) => " DEFAULT '{}'".into(),
            (_, Some(_), _) | (_, None, true) => String::new(),
            (_, None, false) if column.value_type == PayloadType::Null => String::new(),
            (_, None, false) => match scalar_text(&Val::default_for(column.value_type)) {
                Some(text) => format!(" DEFAULT '{}'::{}", text.replace('\'', "''"), ty.sql()),
                None => String::new(),
            },
        };
        out.push((name.clone(), ty, suffix));
    }
    Some(out)
}

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`), in bytes.
pub const MAX_NAME: usize = 63;

/// A mirror table as the database has it: its columns and their types (`format_type`), and
/// the primary key column of its `(_path, <key>)` unique constraint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// Column name to type.
    pub columns: HashMap<String, String>,
    /// The key column besides `_path` (`None`: no such constraint, nothing is written).
    pub key: Option<String>,
}

/// The catalog query reading a mirror table's [`TableInfo`]: `$1` the table (class) name; rows
/// (column, type, whether it is the key).
pub const TABLE_INFO: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
            AND i.indnatts = 2 AND a.attnum = i.indkey[1]
            AND (SELECT attname FROM pg_attribute WHERE attrelid = c.oid AND attnum = i.indkey[0]) = '_path')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'tandem_mirror' AND c.relname = $1 AND a.attnum > 0 AND NOT a.attisdropped";

/// The DDL that makes the mirror table of `class` hold what `schemas` declares, given the
/// table as it is (`None`: it does not exist): the table with its key `(_path, <primary key>)`
/// (`UNIQUE NULLS NOT DISTINCT`, a nullable key's null is one key), its row trigger and its
/// TRUNCATE guard; or the columns it lacks. Empty when nothing is missing, or when the table's
/// key is another property (the class has another primary key on another path: this path's
/// objects are not mirrored, and nothing is changed). `None` for a class without a table.
pub fn table_ddl(schemas: &Schemas, class: &str, have: Option<&TableInfo>) -> Option<String> {
    let columns = wanted_columns(schemas, class)?;
    let t = table(class);
    let (pk, pk_ty, _) = &columns[0];
    let mut ddl = String::new();
    match have {
        Some(info) if info.key.as_deref() != Some(pk.as_str()) => return Some(ddl),
        Some(info) => {
            for (name, ty, suffix) in &columns[1..] {
                if !info.columns.contains_key(name) {
                    ddl.push_str(&format!(
                        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {}{suffix};\n",
                        ident(name),
                        ty.sql()
                    ));
                }
            }
        }
        None => {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {t} ({PATH_COLUMN} text NOT NULL, {} {}, \
                 UNIQUE NULLS NOT DISTINCT ({PATH_COLUMN}, {}){});\n",
                ident(pk),
                pk_ty.sql(),
                ident(pk),
                columns[1..]
                    .iter()
                    .map(|(name, ty, suffix)| format!(", {} {}{suffix}", ident(name), ty.sql()))
                    .collect::<String>()
            ));
            ddl.push_str(&format!(
                "CREATE OR REPLACE TRIGGER tandem_queue AFTER INSERT OR UPDATE OR DELETE ON {t} \
                 FOR EACH ROW EXECUTE FUNCTION tandem_mirror_queue_write('{}');\n\
                 CREATE OR REPLACE TRIGGER tandem_no_truncate BEFORE TRUNCATE ON {t} \
                 FOR EACH STATEMENT EXECUTE FUNCTION tandem_mirror_refuse_truncate();\n",
                pk.replace('\'', "''")
            ));
        }
    }
    Some(ddl)
}

/// A statement of the server's push: SQL and its text parameters (each cast in the SQL).
pub type Statement = (String, Vec<Option<String>>);

/// The statement that makes the mirror row of the object `key` of `class` on `path` equal to
/// `object` (an upsert), or deletes it (`None`). `existing` is the table's columns and their
/// PostgreSQL types as they are: a property whose column is missing or of another type (a
/// class declared differently on another path) is left out. `None` when the class has no
/// mirror table or its primary key column does not fit.
pub fn object_statement(
    schemas: &Schemas,
    path: &str,
    class: &str,
    key: &Key,
    object: Option<&Object>,
    table_info: &TableInfo,
) -> Option<Statement> {
    let schema = schemas.get(class)?;
    let (pk, pk_type, _) = mirrored(schema)?;
    let pk_pg = PgType::of_scalar(pk_type);
    let existing = &table_info.columns;
    if table_info.key.as_deref() != Some(pk)
        || existing.get(pk).map(String::as_str) != Some(pk_pg.formatted())
    {
        return None;
    }
    let key_text = key.to_val().and_then(|v| scalar_text(&v));
    let t = table(class);
    let Some(object) = object else {
        return Some((
            format!(
                "DELETE FROM {t} WHERE {PATH_COLUMN} = $1 AND {} IS NOT DISTINCT FROM $2::text::{}",
                ident(pk),
                pk_pg.sql()
            ),
            vec![Some(path.to_owned()), key_text],
        ));
    };
    let mut names = vec![PATH_COLUMN.to_owned(), ident(pk)];
    let mut marks = vec!["$1".to_owned(), format!("$2::text::{}", pk_pg.sql())];
    let mut params = vec![Some(path.to_owned()), key_text];
    for (name, column) in &schema.columns {
        if name == PATH_COLUMN || name == pk {
            continue;
        }
        let ty = column_type(schemas, column);
        if existing.get(name).map(String::as_str) != Some(ty.formatted()) {
            continue;
        }
        let default;
        let content = match object.fields.get(name) {
            Some(f) => f,
            None => {
                default = crate::state::default_field(schemas, column);
                &default
            }
        };
        let text = match (ty, content) {
            (PgType::Jsonb, f) => field_json(schemas, column, f).map(|j| j.to_string()),
            (_, Field::Value(v)) => scalar_text(v),
            _ => None,
        };
        // PostgreSQL's text and jsonb cannot hold U+0000: such a value is NULL in the table.
        let text = text.filter(|t| !t.contains('\0') && !t.contains("\\u0000"));
        params.push(text);
        names.push(ident(name));
        marks.push(format!("${}::text::{}", params.len(), ty.sql()));
    }
    let conflict = format!("{PATH_COLUMN}, {}", ident(pk));
    let update = if names.len() > 2 {
        format!(
            "DO UPDATE SET {}",
            names[2..]
                .iter()
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        "DO NOTHING".to_owned()
    };
    Some((
        format!(
            "INSERT INTO {t} ({}) VALUES ({}) ON CONFLICT ({conflict}) {update}",
            names.join(", "),
            marks.join(", ")
        ),
        params,
    ))
}

/// The statement that deletes every mirror row of `class` on `path` (the class was erased
/// from the path's schema).
pub fn erase_class_statement(path: &str, class: &str) -> Statement {
    (
        format!("DELETE FROM {} WHERE {PATH_COLUMN} = $1", table(class)),
        vec![Some(path.to_owned())],
    )
}

const DECIMAL_NAN: u128 = 0x7c00 << 112;
const DECIMAL_INFINITY: u128 = 0x7800 << 112;
const DECIMAL_SIGN: u128 = 1 << 127;

/// A decimal128 as PostgreSQL's `numeric` reads it (`NaN`, `Infinity` and `-Infinity` for the
/// special values).
fn decimal_text(bits: u128) -> String {
    let special = (bits >> 122) & 0x1f;
    let negative = bits & DECIMAL_SIGN != 0;
    match (special, negative) {
        (0x1f, _) => "NaN".into(),
        (0x1e, false) => "Infinity".into(),
        (0x1e, true) => "-Infinity".into(),
        _ => Decimal128::from_bits(bits).to_string(),
    }
}

fn decimal_parse(text: &str) -> Result<u128, String> {
    match text {
        "NaN" => Ok(DECIMAL_NAN),
        "Infinity" => Ok(DECIMAL_INFINITY),
        "-Infinity" => Ok(DECIMAL_INFINITY | DECIMAL_SIGN),
        _ => text
            .parse::<Decimal128>()
            .map(Decimal128::to_bits)
            .map_err(|e| format!("{e}")),
    }
}

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        format!("{v}")
    }
}

fn float_parse(j: &Json) -> Result<f64, String> {
    match j {
        Json::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse::<f64>()
                .map_err(|_| format!("{other:?} is not a number")),
        },
        other => Err(format!("{other} is not a number")),
    }
}

/// A timestamp in RFC 3339 with up to nine fractional digits, UTC.
///
/// `None` outside the years 1 to 9999 (PostgreSQL's `timestamptz` starts in 4713 BC, RFC 3339
/// at year 0).
fn timestamp_text(seconds: i64, nanos: i32) -> Option<String> {
    if !(-62_135_596_800..253_402_300_800).contains(&seconds) {
        return None;
    }
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(seconds) * 1_000_000_000 + i128::from(nanos),
    )
    .ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// An RFC 3339 timestamp as Realm's (seconds, nanoseconds), both of one sign.
fn timestamp_parse(text: &str) -> Result<Val, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
    let n = t.unix_timestamp_nanos();
    let seconds = i64::try_from(n / 1_000_000_000).map_err(|_| "timestamp out of range")?;
    Ok(Val::Timestamp(seconds, (n % 1_000_000_000) as i32))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An object id from its 24 lowercase hex digits (the one form the mirror tables use, so that
/// one object never has two rows).
fn oid_parse(text: &str) -> Result<[u8; 12], String> {
    if text.len() != 24 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "{text:?} is not an object id (24 lowercase hex digits)"
        ));
    }
    unhex::<12>(text)
}

fn unhex<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 2 * N {
        return Err(format!("{text:?} is not {N} bytes of hex"));
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| format!("{text:?} is not hex"))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(out)
}

fn unhex_vec(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("{text:?} is not hex"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{text:?} is not hex"))
        })
        .collect()
}

/// A single value as the text PostgreSQL reads into its mirror column (`None`: SQL NULL).
pub fn scalar_text(v: &Val) -> Option<String> {
    Some(match v {
        Val::Null => return None,
        Val::Int(i) => i.to_string(),
        Val::Bool(b) => b.to_string(),
        Val::String(s) => s.clone(),
        Val::Binary(b) => format!("\\x{}", hex(b)),
        Val::Timestamp(s, n) => timestamp_text(*s, *n)?,
        Val::Float(bits) => float_text(f64::from(f32::from_bits(*bits))),
        Val::Double(bits) => float_text(f64::from_bits(*bits)),
        Val::Decimal(bits) => decimal_text(*bits),
        Val::ObjectId(id) => hex(id),
        Val::Uuid(id) => crate::model::Uuid(*id).to_string(),
        Val::Link(_, key) => return key.to_val().and_then(|v| scalar_text(&v)),
    })
}

/// The JSON form of a value inside a `jsonb` column (a collection element, a mixed value or a
/// property of an embedded object). `int`, `bool`, `string` and `double` are JSON's own (a
/// double always with a fraction or exponent, non-finite ones tagged); the others are tagged
/// objects after MongoDB Extended JSON: `{"$binary": base64}`, `{"$date": RFC 3339}`,
/// `{"$numberFloat": text}`, `{"$numberDouble": text}`, `{"$numberDecimal": text}`,
/// `{"$oid": hex}`, `{"$uuid": text}`. A link is its target's primary key in the key's form;
/// in a mixed value `{"$link": {"class": name, "key": key}}`.
pub fn to_json(v: &Val, mixed: bool) -> Json {
    match v {
        Val::Null => Json::Null,
        Val::Int(i) => json!(i),
        Val::Bool(b) => json!(b),
        Val::String(s) => json!(s),
        Val::Binary(b) => json!({ "$binary": base64::engine::general_purpose::STANDARD.encode(b) }),
        Val::Timestamp(s, n) => match timestamp_text(*s, *n) {
            Some(t) => json!({ "$date": t }),
            None => Json::Null,
        },
        Val::Float(bits) => {
            let f = f32::from_bits(*bits);
            json!({ "$numberFloat": float_text(f64::from(f)) })
        }
        Val::Double(bits) => {
            let d = f64::from_bits(*bits);
            match serde_json::Number::from_f64(d) {
                // In a mixed value a whole double is tagged: jsonb would print it as an int.
                Some(n) if !mixed || d.fract() != 0.0 => Json::Number(n),
                _ => json!({ "$numberDouble": float_text(d) }),
            }
        }
        Val::Decimal(bits) => json!({ "$numberDecimal": decimal_text(*bits) }),
        Val::ObjectId(id) => json!({ "$oid": hex(id) }),
        Val::Uuid(id) => json!({ "$uuid": crate::model::Uuid(*id).to_string() }),
        Val::Link(class, key) => {
            let k = key.to_val().map_or(Json::Null, |v| to_json(&v, false));
            if mixed {
                json!({ "$link": { "class": class, "key": k } })
            } else {
                k
            }
        }
    }
}

fn object_json(schemas: &Schemas, class: &str, object: &Object) -> Json {
    let mut out = Map::new();
    if let Some(schema) = schemas.get(class) {
        for (name, column) in &schema.columns {
            let default;
            let content = match object.fields.get(name) {
                Some(f) => f,
                None => {
                    default = crate::state::default_field(schemas, column);
                    &default
                }
            };
            let j = field_json(schemas, column, content).unwrap_or(Json::Null);
            out.insert(name.clone(), j);
        }
    }
    Json::Object(out)
}

fn element_json(schemas: &Schemas, column: &ColumnSpec, e: &Element) -> Json {
    match e {
        Element::Value(v) => to_json(v, column.value_type == PayloadType::Null),
        Element::Embedded(o) => {
            object_json(schemas, column.link_target.as_deref().unwrap_or(""), o)
        }
    }
}

/// A property's content as the JSON of its `jsonb` column (`None`: SQL NULL).
fn field_json(schemas: &Schemas, column: &ColumnSpec, f: &Field) -> Option<Json> {
    Some(match f {
        Field::Value(Val::Null) | Field::Embedded(None) => return None,
        Field::Value(v) => to_json(v, column.value_type == PayloadType::Null),
        Field::Embedded(Some(o)) => {
            object_json(schemas, column.link_target.as_deref().unwrap_or(""), o)
        }
        Field::List(items) => Json::Array(
            items
                .iter()
                .map(|e| element_json(schemas, column, e))
                .collect(),
        ),
        Field::Set(items) => Json::Array(
            items
                .iter()
                .map(|v| to_json(v, column.value_type == PayloadType::Null))
                .collect(),
        ),
        Field::Dictionary(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, e)| (k.clone(), element_json(schemas, column, e)))
                .collect(),
        ),
    })
}

fn tagged<'j>(j: &'j Json, tag: &str) -> Option<&'j Json> {
    match j {
        Json::Object(m) if m.len() == 1 => m.get(tag),
        _ => None,
    }
}

fn as_text<'j>(j: &'j Json, what: &str) -> Result<&'j str, String> {
    j.as_str().ok_or_else(|| format!("{j} is not {what}"))
}

/// A primary key from its JSON form (a mirror column's or a link's).
fn key_from_json(j: &Json, t: PayloadType) -> Result<Key, String> {
    if j.is_null() {
        return Ok(Key::Null);
    }
    match t {
        PayloadType::Int => j
            .as_i64()
            .map(Key::Int)
            .ok_or_else(|| format!("{j} is not an int key")),
        PayloadType::String => Ok(Key::String(as_text(j, "a string key")?.to_owned())),
        PayloadType::ObjectId => {
            let text = as_text(tagged(j, "$oid").unwrap_or(j), "an object id")?;
            oid_parse(text).map(Key::ObjectId)
        }
        PayloadType::Uuid => {
            let text = as_text(tagged(j, "$uuid").unwrap_or(j), "a UUID")?;
            unhex::<16>(text).map(Key::Uuid)
        }
        other => Err(format!("{other:?} is not a primary key type")),
    }
}

/// A value from the JSON form of [`to_json`] (or the plain form a typed position allows: a
/// number for `float`, `double` and `decimal128`, a string for `date`, `objectId` and `uuid`,
/// base64 for `data`). `t` is the expected type (`Null`: mixed); `link` the target class of a
/// link position.
pub fn from_json(
    schemas: &Schemas,
    j: &Json,
    t: PayloadType,
    link: Option<&str>,
) -> Result<Val, String> {
    if j.is_null() {
        return Ok(Val::Null);
    }
    if let Some(target) = link {
        let key = key_from_json(j, target_key_type(schemas, target))?;
        return Ok(Val::Link(target.to_owned(), key));
    }
    let tag = match j {
        Json::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    };
    let t = match (t, tag, j) {
        (PayloadType::Null, Some("$binary"), _) => PayloadType::Binary,
        (PayloadType::Null, Some("$date"), _) => PayloadType::Timestamp,
        (PayloadType::Null, Some("$numberFloat"), _) => PayloadType::Float,
        (PayloadType::Null, Some("$numberDouble"), _) => PayloadType::Double,
        (PayloadType::Null, Some("$numberDecimal"), _) => PayloadType::Decimal,
        (PayloadType::Null, Some("$oid"), _) => PayloadType::ObjectId,
        (PayloadType::Null, Some("$uuid"), _) => PayloadType::Uuid,
        (PayloadType::Null, Some("$link"), _) => {
            let inner = &j["$link"];
            let class = as_text(&inner["class"], "a class name")?;
            let key = key_from_json(&inner["key"], target_key_type(schemas, class))?;
            return Ok(Val::Link(class.to_owned(), key));
        }
        (PayloadType::Null, _, Json::Bool(_)) => PayloadType::Bool,
        (PayloadType::Null, _, Json::String(_)) => PayloadType::String,
        (PayloadType::Null, _, Json::Number(n)) if n.is_i64() => PayloadType::Int,
        (PayloadType::Null, _, Json::Number(_)) => PayloadType::Double,
        (PayloadType::Null, _, other) => {
            return Err(format!("{other} is not a value a mixed property can hold"))
        }
        (t, _, _) => t,
    };
    Ok(match t {
        PayloadType::Int => Val::Int(
            tagged(j, "$numberLong")
                .and_then(|s| s.as_str()?.parse().ok())
                .or_else(|| j.as_i64())
                .ok_or_else(|| format!("{j} is not an int"))?,
        ),
        PayloadType::Bool => Val::Bool(j.as_bool().ok_or_else(|| format!("{j} is not a bool"))?),
        PayloadType::String => Val::String(as_text(j, "a string")?.to_owned()),
        PayloadType::Binary => Val::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(as_text(tagged(j, "$binary").unwrap_or(j), "base64")?)
                .map_err(|e| format!("{j} is not base64: {e}"))?,
        ),
        PayloadType::Timestamp => {
            timestamp_parse(as_text(tagged(j, "$date").unwrap_or(j), "a timestamp")?)?
        }
        PayloadType::Float => {
            Val::Float((float_parse(tagged(j, "$numberFloat").unwrap_or(j))? as f32).to_bits())
        }
        PayloadType::Double => {
            Val::Double(float_parse(tagged(j, "$numberDouble").unwrap_or(j))?.to_bits())
        }
        PayloadType::Decimal => {
            let inner = tagged(j, "$numberDecimal").unwrap_or(j);
            let text = match inner {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                other => return Err(format!("{other} is not a decimal")),
            };
            Val::Decimal(decimal_parse(&text)?)
        }
        PayloadType::ObjectId => Val::ObjectId(oid_parse(as_text(
            tagged(j, "$oid").unwrap_or(j),
            "an object id",
        )?)?),
        PayloadType::Uuid => Val::Uuid(unhex::<16>(as_text(
            tagged(j, "$uuid").unwrap_or(j),
            "a UUID",
        )?)?),
        other => return Err(format!("{other:?} is not a value type")),
    })
}

fn object_from_json(schemas: &Schemas, class: &str, j: &Json) -> Result<Object, String> {
    let Json::Object(m) = j else {
        return Err(format!("{j} is not an embedded object of {class}"));
    };
    let schema = schemas
        .get(class)
        .ok_or_else(|| format!("no class {class}"))?;
    let mut fields = BTreeMap::new();
    for (name, value) in m {
        let column = schema
            .columns
            .get(name)
            .ok_or_else(|| format!("{class} has no property {name}"))?;
        fields.insert(name.clone(), field_from_json(schemas, column, value)?);
    }
    Ok(Object { fields })
}

fn element_from_json(schemas: &Schemas, column: &ColumnSpec, j: &Json) -> Result<Element, String> {
    match embedded_target(schemas, column) {
        Some(_) => Ok(Element::Embedded(object_from_json(
            schemas,
            column.link_target.as_deref().unwrap_or(""),
            j,
        )?)),
        None => Ok(Element::Value(from_json(
            schemas,
            j,
            column.value_type,
            column.link_target.as_deref(),
        )?)),
    }
}

/// A property's content from the JSON of its `jsonb` column or of an embedded object.
fn field_from_json(schemas: &Schemas, column: &ColumnSpec, j: &Json) -> Result<Field, String> {
    fn list(j: &Json) -> Result<&Vec<Json>, String> {
        match j {
            Json::Array(items) => Ok(items),
            Json::Null => Err("null is not a collection (use [] or {})".to_owned()),
            other => Err(format!("{other} is not a JSON array")),
        }
    }
    Ok(match column.collection {
        CollectionType::List => Field::List(
            list(j)?
                .iter()
                .map(|e| element_from_json(schemas, column, e))
                .collect::<Result<_, _>>()?,
        ),
        CollectionType::Set => {
            let mut items = list(j)?
                .iter()
                .map(|e| from_json(schemas, e, column.value_type, column.link_target.as_deref()))
                .collect::<Result<Vec<_>, _>>()?;
            items.dedup();
            Field::Set(items)
        }
        CollectionType::Dictionary => match j {
            Json::Object(m) => Field::Dictionary(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), element_from_json(schemas, column, v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => return Err(format!("{other} is not a JSON object")),
        },
        CollectionType::Single => match embedded_target(schemas, column) {
            Some(_) if j.is_null() => Field::Embedded(None),
            Some(_) => Field::Embedded(Some(object_from_json(
                schemas,
                column.link_target.as_deref().unwrap_or(""),
                j,
            )?)),
            None => Field::Value(from_json(
                schemas,
                j,
                column.value_type,
                column.link_target.as_deref(),
            )?),
        },
    })
}

/// A top-level property from its mirror column as `to_jsonb` printed it (`raw`: the JSON text).
fn column_from_raw(
    schemas: &Schemas,
    column: &ColumnSpec,
    raw: &RawValue,
) -> Result<Field, String> {
    let ty = column_type(schemas, column);
    let j: Json = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    if ty == PgType::Jsonb {
        return field_from_json(schemas, column, &j);
    }
    if j.is_null() {
        return Ok(Field::Value(Val::Null));
    }
    if let Some(target) = &column.link_target {
        let t = target_key_type(schemas, target);
        let key = key_from_json(&j, t)?;
        return Ok(Field::Value(Val::Link(target.clone(), key)));
    }
    Ok(Field::Value(match column.value_type {
        PayloadType::Binary => {
            let text = as_text(&j, "binary")?;
            Val::Binary(unhex_vec(
                text.strip_prefix("\\x").ok_or("binary is not hex")?,
            )?)
        }
        // `to_jsonb` prints a numeric as a JSON number: its text is the exact value.
        PayloadType::Decimal => match &j {
            Json::String(s) => Val::Decimal(decimal_parse(s)?),
            _ => Val::Decimal(decimal_parse(raw.get().trim())?),
        },
        t => from_json(schemas, &j, t, None)?,
    }))
}

/// One queued backend write (a row of `tandem_mirror_queue`).
#[derive(Clone, Debug)]
pub struct QueueEntry {
    /// Its id (the queue's order).
    pub id: i64,
    /// The mirror table's name: the class.
    pub class: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub op: String,
    /// The row before (`UPDATE`, `DELETE`), as `to_jsonb` text.
    pub old: Option<String>,
    /// The row after (`INSERT`, `UPDATE`).
    pub new: Option<String>,
}

/// What a queued write asks of the server file.
#[derive(Debug, PartialEq)]
pub enum SqlWrite {
    /// Create the object if new (`create`) and write these properties.
    Put {
        /// The class.
        class: String,
        /// The primary key.
        key: Key,
        /// The properties written (collections are replaced whole).
        fields: Object,
        /// An INSERT: the object is created (equal primary keys are one object).
        create: bool,
    },
    /// Erase the object.
    Erase {
        /// The class.
        class: String,
        /// The primary key.
        key: Key,
    },
}

type RawRow = BTreeMap<String, Box<RawValue>>;

/// Turns a queued write into what it asks of the server file whose schema is `schemas`: an
/// INSERT every column of the row, an UPDATE the columns whose values changed (none: `None`),
/// a DELETE erasure. The error says why the write cannot be synced.
pub fn decode_entry(schemas: &Schemas, e: &QueueEntry) -> Result<Option<SqlWrite>, String> {
    let schema = schemas.get(&e.class).ok_or_else(|| {
        format!(
            "the server path's schema has no class {}: only classes devices have synced there can be written",
            e.class
        )
    })?;
    let (pk, pk_type, _) =
        mirrored(schema).ok_or_else(|| format!("class {} is not mirrored", e.class))?;
    let parse = |text: &Option<String>| -> Result<RawRow, String> {
        let text = text.as_deref().ok_or("the queue entry has no row")?;
        serde_json::from_str(text).map_err(|e| format!("the queued row does not parse: {e}"))
    };
    let key_of = |row: &RawRow| -> Result<Key, String> {
        let raw = row.get(pk).ok_or("the row has no primary key column")?;
        let j: Json = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        key_from_json(&j, pk_type)
    };
    match e.op.as_str() {
        "DELETE" => {
            let old = parse(&e.old)?;
            Ok(Some(SqlWrite::Erase {
                class: e.class.clone(),
                key: key_of(&old)?,
            }))
        }
        "INSERT" | "UPDATE" => {
            let new = parse(&e.new)?;
            let old = if e.op == "UPDATE" {
                Some(parse(&e.old)?)
            } else {
                None
            };
            let mut fields = BTreeMap::new();
            for (name, raw) in &new {
                if name == PATH_COLUMN || name == pk {
                    continue;
                }
                let Some(column) = schema.columns.get(name) else {
                    continue; // a column of another path's schema
                };
                // Compared as printed: to_jsonb prints equal values alike, and numbers keep
                // every digit (a numeric is not rounded through a double).
                if let Some(old) = &old {
                    if old.get(name).map(|r| r.get()) == Some(raw.get()) {
                        continue;
                    }
                }
                let field = column_from_raw(schemas, column, raw)
                    .map_err(|why| format!("column {name}: {why}"))?;
                fields.insert(name.clone(), field);
            }
            if old.is_some() && fields.is_empty() {
                return Ok(None);
            }
            Ok(Some(SqlWrite::Put {
                class: e.class.clone(),
                key: key_of(&new)?,
                fields: Object { fields },
                create: old.is_none(),
            }))
        }
        other => Err(format!("unknown operation {other}")),
    }
}

/// Starts the thread that integrates queued backend writes, one server path at a time, for
/// the server `shared`; returns what [`Postgres::listen`](super::postgres::Postgres::listen)
/// calls with each path to look at. A path whose round fails (the database unreachable) is
/// tried again a second later. The thread ends when the server is dropped.
pub(super) fn start_worker(
    shared: &std::sync::Arc<super::shared::Shared>,
) -> super::postgres::Wake {
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;
    let pending: Arc<(Mutex<std::collections::BTreeSet<String>>, Condvar)> = Arc::default();
    let weak = Arc::downgrade(shared);
    let queue = Arc::clone(&pending);
    let spawned = std::thread::Builder::new()
        .name("tandem-mirror".into())
        .spawn(move || loop {
            let path = {
                let (set, cv) = &*queue;
                let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(p) = set.pop_first() {
                        break p;
                    }
                    let (s, _) = cv
                        .wait_timeout(set, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner());
                    set = s;
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
            };
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let again = match integrate_path(&shared, &path) {
                Ok(more) => more,
                Err(e) => {
                    tracing::warn!(server_path = %path, error = %e.message, "integrating writes made in the mirror tables failed; retrying in 1 s");
                    drop(shared);
                    std::thread::sleep(Duration::from_secs(1));
                    true
                }
            };
            if again {
                let (set, cv) = &*queue;
                set.lock().unwrap_or_else(|e| e.into_inner()).insert(path);
                cv.notify_one();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the mirror thread: writes made in the mirror tables are not synced");
    }
    Arc::new(move |path: Option<&str>| {
        if let Some(p) = path {
            let (set, cv) = &*pending;
            set.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.to_owned());
            cv.notify_one();
        }
    })
}

/// One round of [`ServerFile::mirror_integrate`](super::ServerFile) on `path`; wakes the
/// path's sessions if it integrated anything. Whether more is queued.
fn integrate_path(
    shared: &super::shared::Shared,
    path: &str,
) -> Result<bool, crate::protocol::ProtocolError> {
    let file = super::session::open_file(shared, path)?;
    let round = {
        let mut guard = super::session::lock(&file)?;
        guard.mirror_integrate()?
    };
    if round.integrated > 0 {
        shared.changed(path);
    }
    Ok(round.more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TableSchema;

    fn schemas() -> Schemas {
        let col =
            |t: PayloadType, nullable: bool, c: CollectionType, link: Option<&str>| ColumnSpec {
                value_type: t,
                link_target: link.map(str::to_owned),
                nullable,
                collection: c,
                key_type: (c == CollectionType::Dictionary).then_some(PayloadType::String),
            };
        use CollectionType::{List, Single};
        let single = |t: PayloadType, nullable: bool| col(t, nullable, Single, None);
        let task: BTreeMap<String, ColumnSpec> = [
            ("title", single(PayloadType::String, false)),
            ("done", single(PayloadType::Bool, false)),
            ("due", single(PayloadType::Timestamp, true)),
            ("price", single(PayloadType::Decimal, false)),
            ("blob", single(PayloadType::Binary, true)),
            ("any", single(PayloadType::Null, true)),
            ("tags", col(PayloadType::String, false, List, None)),
            ("owner", col(PayloadType::Link, true, Single, Some("User"))),
            ("spot", col(PayloadType::Link, true, Single, Some("Place"))),
        ]
        .into_iter()
        .map(|(name, spec)| (name.to_owned(), spec))
        .collect();
        let place: BTreeMap<String, ColumnSpec> =
            [("x".to_owned(), single(PayloadType::Double, false))].into();
        let mut s = Schemas::new();
        s.insert(
            "Task".into(),
            TableSchema {
                spec: TableSpec::TopLevel {
                    pk_field: "_id".into(),
                    pk_type: PayloadType::ObjectId,
                    pk_nullable: false,
                    asymmetric: false,
                },
                columns: task,
            },
        );
        s.insert(
            "User".into(),
            TableSchema {
                spec: TableSpec::TopLevel {
                    pk_field: "_id".into(),
                    pk_type: PayloadType::Uuid,
                    pk_nullable: false,
                    asymmetric: false,
                },
                columns: BTreeMap::new(),
            },
        );
        s.insert(
            "Place".into(),
            TableSchema {
                spec: TableSpec::Embedded,
                columns: place,
            },
        );
        s
    }

    #[test]
    fn column_types_follow_the_property_types() {
        let s = schemas();
        let cols = wanted_columns(&s, "Task").unwrap();
        let by_name: HashMap<_, _> = cols
            .iter()
            .map(|(n, t, sfx)| (n.as_str(), (*t, sfx.as_str())))
            .collect();
        assert_eq!(by_name["_id"], (PgType::Text, ""));
        assert_eq!(by_name["title"], (PgType::Text, " DEFAULT ''::text"));
        assert_eq!(
            by_name["done"],
            (PgType::Boolean, " DEFAULT 'false'::boolean")
        );
        assert_eq!(by_name["due"], (PgType::Timestamptz, ""));
        assert_eq!(by_name["price"].0, PgType::Numeric);
        assert_eq!(by_name["tags"], (PgType::Jsonb, " DEFAULT '[]'"));
        assert_eq!(by_name["owner"], (PgType::Uuid, ""));
        assert_eq!(by_name["spot"], (PgType::Jsonb, ""));
        assert_eq!(by_name["any"], (PgType::Jsonb, ""));
        assert!(
            wanted_columns(&s, "Place").is_none(),
            "embedded classes have no table"
        );
        let ddl = table_ddl(&s, "Task", None).unwrap();
        assert!(
            ddl.contains("UNIQUE NULLS NOT DISTINCT (_path, \"_id\")"),
            "{ddl}"
        );
        assert!(ddl.contains("tandem_mirror_queue_write('_id')"), "{ddl}");
        assert!(ddl.contains("BEFORE TRUNCATE"), "{ddl}");
        // An existing table gets only the columns it lacks, and one keyed by another property
        // is left alone.
        let mut have = info(&s, "Task");
        have.columns.remove("title");
        let ddl = table_ddl(&s, "Task", Some(&have)).unwrap();
        assert_eq!(
            ddl,
            "ALTER TABLE tandem_mirror.\"Task\" ADD COLUMN IF NOT EXISTS \"title\" text DEFAULT ''::text;\n"
        );
        have.key = Some("id".into());
        assert_eq!(table_ddl(&s, "Task", Some(&have)).unwrap(), "");
        // Names PostgreSQL would truncate have no table or column.
        let mut long = s.clone();
        let task = long.remove("Task").unwrap();
        long.insert("T".repeat(64), task);
        assert!(wanted_columns(&long, &"T".repeat(64)).is_none());
    }

    /// The table `wanted_columns` describes, as the catalog would report it.
    fn info(s: &Schemas, class: &str) -> TableInfo {
        let cols = wanted_columns(s, class).unwrap();
        TableInfo {
            key: Some(cols[0].0.clone()),
            columns: cols
                .into_iter()
                .map(|(n, t, _)| (n, t.formatted().to_owned()))
                .collect(),
        }
    }

    #[test]
    fn values_round_trip_through_their_json_form() {
        let s = schemas();
        let values = [
            (Val::Int(-7), PayloadType::Int),
            (Val::Bool(true), PayloadType::Bool),
            (Val::String("é \"q\"".into()), PayloadType::String),
            (Val::Binary(vec![0, 1, 255]), PayloadType::Binary),
            (
                Val::Timestamp(1_700_000_000, 123_456_789),
                PayloadType::Timestamp,
            ),
            (Val::Timestamp(-1, -5), PayloadType::Timestamp),
            (Val::Float(1.1f32.to_bits()), PayloadType::Float),
            (Val::Double(2.0f64.to_bits()), PayloadType::Double),
            (Val::Double(f64::NAN.to_bits()), PayloadType::Double),
            (
                Val::Decimal("123.45".parse::<Decimal128>().unwrap().to_bits()),
                PayloadType::Decimal,
            ),
            (Val::Decimal(DECIMAL_NAN), PayloadType::Decimal),
            (Val::ObjectId([7; 12]), PayloadType::ObjectId),
            (Val::Uuid([9; 16]), PayloadType::Uuid),
        ];
        for (v, t) in values {
            for mixed in [false, true] {
                let j = to_json(&v, mixed);
                let back = from_json(&s, &j, if mixed { PayloadType::Null } else { t }, None)
                    .unwrap_or_else(|e| panic!("{v:?} as {j}: {e}"));
                assert_eq!(back, v, "{j}");
            }
        }
        let link = Val::Link("User".into(), Key::Uuid([3; 16]));
        let j = to_json(&link, true);
        assert_eq!(from_json(&s, &j, PayloadType::Null, None).unwrap(), link);
        let j = to_json(&link, false);
        assert_eq!(
            from_json(&s, &j, PayloadType::Link, Some("User")).unwrap(),
            link
        );
        // Plain forms a backend may write in typed positions.
        assert_eq!(
            from_json(&s, &json!(2), PayloadType::Double, None).unwrap(),
            Val::Double(2.0f64.to_bits())
        );
        assert_eq!(
            from_json(
                &s,
                &json!("2026-12-03T10:00:00Z"),
                PayloadType::Timestamp,
                None
            )
            .unwrap(),
            Val::Timestamp(1_796_292_000, 0)
        );
        assert!(from_json(&s, &json!([1]), PayloadType::Null, None).is_err());
        // One form per object id, so that one object never has two rows.
        assert!(from_json(
            &s,
            &json!("ABABABABABABABABABABABAB"),
            PayloadType::ObjectId,
            None
        )
        .is_err());
        // A whole double in a mixed value stays a double (jsonb prints 1e16 as an integer).
        let big = Val::Double(1e16f64.to_bits());
        assert_eq!(
            from_json(&s, &to_json(&big, true), PayloadType::Null, None).unwrap(),
            big
        );
        // Dates PostgreSQL or RFC 3339 cannot hold are null, not an error.
        assert_eq!(
            to_json(&Val::Timestamp(-70_000_000_000, 0), false),
            Json::Null
        );
        assert!(from_json(&s, &json!("x"), PayloadType::Int, None).is_err());
    }

    #[test]
    fn queued_rows_become_writes_of_what_changed() {
        let s = schemas();
        let id = "0102030405060708090a0b0c";
        let insert = QueueEntry {
            id: 1,
            class: "Task".into(),
            op: "INSERT".into(),
            old: None,
            new: Some(format!(
                r#"{{"_path": "/p", "_id": "{id}", "title": "a", "done": false, "due": "2026-12-03T10:00:00.5+00:00", "price": 1.50, "blob": "\\x00ff", "any": null, "tags": ["x", "y"], "owner": null, "spot": {{"x": 1.5}}, "extra": 1}}"#
            )),
        };
        let Some(SqlWrite::Put {
            class,
            key,
            fields,
            create,
        }) = decode_entry(&s, &insert).unwrap()
        else {
            panic!("not a put");
        };
        assert_eq!((class.as_str(), create), ("Task", true));
        assert_eq!(key, Key::ObjectId(unhex::<12>(id).unwrap()));
        assert_eq!(
            fields.fields["price"],
            Field::Value(Val::Decimal(
                "1.50".parse::<Decimal128>().unwrap().to_bits()
            ))
        );
        assert_eq!(
            fields.fields["due"],
            Field::Value(Val::Timestamp(1_796_292_000, 500_000_000))
        );
        assert_eq!(
            fields.fields["blob"],
            Field::Value(Val::Binary(vec![0, 255]))
        );
        assert_eq!(
            fields.fields["tags"],
            Field::List(vec![
                Element::Value(Val::String("x".into())),
                Element::Value(Val::String("y".into()))
            ])
        );
        assert!(
            matches!(&fields.fields["spot"], Field::Embedded(Some(o)) if o.fields["x"] == Field::Value(Val::Double(1.5f64.to_bits())))
        );
        assert!(!fields.fields.contains_key("extra"));
        let update = QueueEntry {
            op: "UPDATE".into(),
            old: insert.new.clone(),
            new: Some(
                insert
                    .new
                    .clone()
                    .unwrap()
                    .replace(r#""title": "a""#, r#""title": "b""#),
            ),
            ..insert.clone()
        };
        let Some(SqlWrite::Put { fields, create, .. }) = decode_entry(&s, &update).unwrap() else {
            panic!("not a put");
        };
        assert!(!create);
        assert_eq!(fields.fields.keys().collect::<Vec<_>>(), ["title"]);
        let same = QueueEntry {
            new: insert.new.clone(),
            ..update.clone()
        };
        assert_eq!(decode_entry(&s, &same).unwrap(), None);
        let delete = QueueEntry {
            op: "DELETE".into(),
            old: insert.new.clone(),
            new: None,
            ..insert.clone()
        };
        assert!(matches!(
            decode_entry(&s, &delete).unwrap(),
            Some(SqlWrite::Erase { .. })
        ));
        let bad = QueueEntry {
            new: Some(
                insert
                    .new
                    .clone()
                    .unwrap()
                    .replace(r#""done": false"#, r#""done": 3"#),
            ),
            ..insert.clone()
        };
        assert!(decode_entry(&s, &bad).unwrap_err().contains("column done"));
        let unknown = QueueEntry {
            class: "Nope".into(),
            ..insert
        };
        assert!(decode_entry(&s, &unknown)
            .unwrap_err()
            .contains("no class Nope"));
    }

    #[test]
    fn device_objects_become_upserts_of_typed_columns() {
        let s = schemas();
        let mut existing = info(&s, "Task");
        // A column another path declared otherwise.
        existing.columns.insert("blob".into(), "text".into());
        let mut fields = BTreeMap::new();
        fields.insert("title".to_owned(), Field::Value(Val::String("t".into())));
        let object = Object { fields };
        let key = Key::ObjectId([1; 12]);
        let (sql, params) =
            object_statement(&s, "/p", "Task", &key, Some(&object), &existing).unwrap();
        assert!(
            sql.starts_with("INSERT INTO tandem_mirror.\"Task\" (_path, \"_id\""),
            "{sql}"
        );
        assert!(!sql.contains("\"blob\""), "{sql}");
        assert!(
            sql.contains("ON CONFLICT (_path, \"_id\") DO UPDATE SET"),
            "{sql}"
        );
        assert_eq!(params[0].as_deref(), Some("/p"));
        assert_eq!(params[1].as_deref(), Some("010101010101010101010101"));
        assert!(params.contains(&Some("t".to_owned())));
        assert!(params.contains(&Some("[]".to_owned())), "the empty list");
        // PostgreSQL cannot store U+0000: NULL instead of a push that fails.
        let mut fields = BTreeMap::new();
        fields.insert("title".to_owned(), Field::Value(Val::String("a\0b".into())));
        let nul = Object { fields };
        let (_, params) = object_statement(&s, "/p", "Task", &key, Some(&nul), &existing).unwrap();
        assert!(
            !params.iter().flatten().any(|p| p.contains('\0')),
            "{params:?}"
        );
        // A table keyed by another property gets nothing.
        let other = TableInfo {
            key: Some("id".into()),
            ..existing.clone()
        };
        assert!(object_statement(&s, "/p", "Task", &key, Some(&nul), &other).is_none());
        let (sql, _) = object_statement(&s, "/p", "Task", &key, None, &existing).unwrap();
        assert!(
            sql.starts_with("DELETE FROM tandem_mirror.\"Task\""),
            "{sql}"
        );
    }
}
