//! The query language: a subset of Realm's, compiled to SQL with bound parameters.
//!
//! ```text
//! query      := predicate [SORT(keypath ASC|DESC, ...)] [LIMIT(n)]
//! predicate  := and (OR and)*            -- also ||
//! and        := unary (AND unary)*       -- also &&
//! unary      := NOT unary | ( predicate ) | TRUEPREDICATE | FALSEPREDICATE | comparison
//! comparison := operand op operand | keypath IN { value, ... } | keypath BETWEEN { low, high }
//! op         := == = != <> < <= > >= BEGINSWITH ENDSWITH CONTAINS LIKE
//!               (== != and the string operators optionally [c], [d] or [cd])
//! operand    := keypath | value
//! keypath    := property | link.property | collection.@count | collection.@size
//! value      := integer | float | 'string' | "string" | true | false | nil | null | $0 $1 ...
//! ```
//!
//! `LIKE` takes Realm's wildcards: `*` for any run of characters and `?` for one. `[c]` makes a
//! string comparison case-insensitive (Unicode simple case folding), `[d]` diacritic-insensitive
//! and `[cd]` both. `== nil` matches null. Comparison and sort follow Realm's rules per type
//! (see `compare`): numbers by value across int, float, double and decimal, NaN as Realm
//! orders it, mixed values by kind then value. Everything runs in SQLite (with the functions
//! `compare` registers); no table is loaded into memory to be filtered.

use std::fmt;

use rusqlite::types::Value as Sql;

use super::apply::store_value;
use super::compare::{self, FOLD_CASE, FOLD_DIACRITICS};
use super::layout::{collection_table, kind_column, object_table, value_column};
use crate::changeset::{CollectionType, PayloadType};
use crate::model::Value;
use crate::state::{Key, Schemas, TableSpec, Val};

/// A query that does not parse or does not fit the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    /// Byte offset in the query text.
    pub position: usize,
    /// What was expected there, or what is wrong.
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query error at {}: {}", self.position, self.message)
    }
}

impl std::error::Error for QueryError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    /// A number with a fraction or exponent, and its text (a decimal property reads it exactly).
    Float(f64, String),
    Param(usize),
    Op(&'static str),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Dot,
    At(String),
    /// `[c]`, `[d]` or `[cd]`: [`compare::FOLD_CASE`] and/or [`compare::FOLD_DIACRITICS`].
    Modifier(i64),
    End,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |position: usize, message: &str| QueryError {
        position,
        message: message.to_owned(),
    };
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let tok = if let Some(op) = ["==", "!=", "<>", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|o| *o == two)
        {
            i += 2;
            Tok::Op(op)
        } else if let Some((len, flags)) = [("[c]", FOLD_CASE), ("[d]", FOLD_DIACRITICS)]
            .into_iter()
            .chain([
                ("[cd]", FOLD_CASE | FOLD_DIACRITICS),
                ("[dc]", FOLD_CASE | FOLD_DIACRITICS),
            ])
            .find(|(m, _)| text[i..].starts_with(m))
            .map(|(m, f)| (m.len(), f))
        {
            i += len;
            Tok::Modifier(flags)
        } else {
            match c {
                b'=' => {
                    i += 1;
                    Tok::Op("==")
                }
                b'<' | b'>' | b'!' => {
                    i += 1;
                    Tok::Op(match c {
                        b'<' => "<",
                        b'>' => ">",
                        _ => "!",
                    })
                }
                b'(' => {
                    i += 1;
                    Tok::LParen
                }
                b')' => {
                    i += 1;
                    Tok::RParen
                }
                b'{' => {
                    i += 1;
                    Tok::LBrace
                }
                b'}' => {
                    i += 1;
                    Tok::RBrace
                }
                b',' => {
                    i += 1;
                    Tok::Comma
                }
                b'.' if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i += 1;
                    if bytes.get(i) == Some(&b'@') {
                        let s = i + 1;
                        i = s;
                        while i < bytes.len()
                            && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                        {
                            i += 1;
                        }
                        Tok::At(text[s..i].to_owned())
                    } else {
                        Tok::Dot
                    }
                }
                b'$' => {
                    let s = i + 1;
                    i = s;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    let n = text[s..i]
                        .parse()
                        .map_err(|_| err(start, "expected a parameter number after $"))?;
                    Tok::Param(n)
                }
                b'\'' | b'"' => {
                    let quote = c;
                    let mut s = String::new();
                    i += 1;
                    loop {
                        match bytes.get(i) {
                            None => return Err(err(start, "unterminated string")),
                            Some(&b'\\') if i + 1 < bytes.len() => {
                                s.push(bytes[i + 1] as char);
                                i += 2;
                            }
                            Some(&b) if b == quote => {
                                i += 1;
                                break;
                            }
                            Some(_) => {
                                let ch = text[i..].chars().next().unwrap_or('\0');
                                s.push(ch);
                                i += ch.len_utf8();
                            }
                        }
                    }
                    Tok::Str(s)
                }
                b'-' | b'0'..=b'9' | b'.' => {
                    let s = i;
                    i += 1;
                    while i < bytes.len()
                        && (bytes[i].is_ascii_digit()
                            || bytes[i] == b'.'
                            || bytes[i] == b'e'
                            || bytes[i] == b'E'
                            || (matches!(bytes[i], b'-' | b'+')
                                && matches!(bytes[i - 1], b'e' | b'E')))
                    {
                        i += 1;
                    }
                    let t = &text[s..i];
                    if let Ok(n) = t.parse::<i64>() {
                        Tok::Int(n)
                    } else if let Ok(f) = t.parse::<f64>() {
                        Tok::Float(f, t.to_owned())
                    } else {
                        return Err(err(start, "expected a number"));
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let s = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    Tok::Ident(text[s..i].to_owned())
                }
                _ => {
                    return Err(err(
                        start,
                        &format!(
                            "unexpected character {:?}",
                            text[i..].chars().next().unwrap_or('?')
                        ),
                    ))
                }
            }
        };
        out.push((start, tok));
    }
    out.push((text.len(), Tok::End));
    Ok(out)
}

/// A compiled query: SQL selecting `_id, _pk` of matching rows, and its parameters.
pub(crate) struct Compiled {
    /// `SELECT o._id, o._pk ` and [`tail`](Self::tail): the row ids and primary keys.
    pub sql: String,
    /// From `FROM` on: the table (aliased `o`), the filter, the order and the limit, for
    /// selecting other columns of the matches.
    pub tail: String,
    pub params: Vec<Sql>,
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    schemas: &'a Schemas,
    class: &'a str,
    args: &'a [Value],
    params: Vec<Sql>,
}

/// One side of a comparison.
enum Operand {
    /// SQL expression for a property, and its element type.
    Column {
        sql: String,
        value_type: PayloadType,
        /// For a mixed property: SQL for the kind of the value it holds.
        kind: Option<String>,
    },
    /// A literal or parameter (None = null), with a number literal's text.
    Value(Option<Val>, Option<String>),
}

/// A property in a comparison: SQL for its value, its element type (Null for mixed) and SQL
/// for its value's kind code (a constant unless mixed).
struct ColumnRef {
    sql: String,
    value_type: PayloadType,
    kind: String,
}

impl ColumnRef {
    fn new(sql: String, value_type: PayloadType, kind: Option<String>) -> ColumnRef {
        ColumnRef {
            sql,
            kind: kind.unwrap_or_else(|| value_type.code().to_string()),
            value_type,
        }
    }
}

/// The type's name as Realm's schema spells it (for error messages).
fn type_name(t: PayloadType) -> &'static str {
    match t {
        PayloadType::Null => "mixed",
        PayloadType::Int => "int",
        PayloadType::Bool => "bool",
        PayloadType::String => "string",
        PayloadType::Binary => "binary",
        PayloadType::Timestamp => "timestamp",
        PayloadType::Float => "float",
        PayloadType::Double => "double",
        PayloadType::Decimal => "decimal128",
        PayloadType::Link => "link",
        PayloadType::ObjectId => "objectId",
        PayloadType::Uuid => "uuid",
        _ => "collection",
    }
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }

    fn pos(&self) -> usize {
        self.toks[self.at].0
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].1.clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, QueryError> {
        Err(QueryError {
            position: self.pos(),
            message: message.into(),
        })
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), QueryError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            self.fail(format!("expected {what}, found {:?}", self.peek()))
        }
    }

    fn predicate(&mut self) -> Result<String, QueryError> {
        let mut left = self.and()?;
        while is_kw(self.peek(), "OR") || *self.peek() == Tok::Op("||") {
            self.next();
            let right = self.and()?;
            left = format!("({left} OR {right})");
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<String, QueryError> {
        let mut left = self.unary()?;
        while is_kw(self.peek(), "AND") || *self.peek() == Tok::Op("&&") {
            self.next();
            let right = self.unary()?;
            left = format!("({left} AND {right})");
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<String, QueryError> {
        if is_kw(self.peek(), "NOT") || *self.peek() == Tok::Op("!") {
            self.next();
            return Ok(format!("(NOT {})", self.unary()?));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let inner = self.predicate()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        if is_kw(self.peek(), "TRUEPREDICATE") {
            self.next();
            return Ok("1".into());
        }
        if is_kw(self.peek(), "FALSEPREDICATE") {
            self.next();
            return Ok("0".into());
        }
        self.comparison()
    }

    fn bind(&mut self, v: Sql) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        let pos = self.pos();
        match self.next() {
            Tok::Int(n) => Ok(Operand::Value(Some(Val::Int(n)), Some(n.to_string()))),
            Tok::Float(f, text) => Ok(Operand::Value(Some(Val::Double(f.to_bits())), Some(text))),
            Tok::Str(s) => Ok(Operand::Value(Some(Val::String(s)), None)),
            Tok::Param(n) => match self.args.get(n) {
                Some(v) => Ok(Operand::Value(model_to_val(v), None)),
                None => Err(QueryError {
                    position: pos,
                    message: format!("parameter ${n} was not given ({} given)", self.args.len()),
                }),
            },
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => {
                Ok(Operand::Value(Some(Val::Bool(true)), None))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => {
                Ok(Operand::Value(Some(Val::Bool(false)), None))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("nil") || s.eq_ignore_ascii_case("null") => {
                Ok(Operand::Value(None, None))
            }
            Tok::Ident(name) => self.keypath(pos, name),
            other => Err(QueryError {
                position: pos,
                message: format!("expected a property or a value, found {other:?}"),
            }),
        }
    }

    fn keypath(&mut self, pos: usize, name: String) -> Result<Operand, QueryError> {
        let schema = &self.schemas[self.class];
        let err = |message: String| QueryError {
            position: pos,
            message,
        };
        if let TableSpec::TopLevel {
            pk_field, pk_type, ..
        } = &schema.spec
        {
            if *pk_field == name {
                return Ok(Operand::Column {
                    sql: "o._pk".into(),
                    value_type: *pk_type,
                    kind: None,
                });
            }
        }
        let column = schema
            .columns
            .get(&name)
            .ok_or_else(|| err(format!("{} has no property '{name}'", self.class)))?;
        if let Tok::At(agg) = self.peek().clone() {
            self.next();
            if !(agg.eq_ignore_ascii_case("count") || agg.eq_ignore_ascii_case("size")) {
                return Err(err(format!(
                    "unknown aggregate @{agg}; expected @count or @size"
                )));
            }
            if column.collection == CollectionType::Single {
                return Err(err(format!(
                    "@{agg} needs a list, set or dictionary; '{name}' is single"
                )));
            }
            let table = collection_table(self.class, &name, column.collection);
            // Links to objects that do not exist are not counted in a list or set of links
            // (realm-core's LnkLst / LnkSet size); a dictionary counts its entries.
            let resolved = match &column.link_target {
                Some(target) if crate::state::is_link_collection(self.schemas, column) => format!(
                    " AND EXISTS (SELECT 1 FROM {} t WHERE t._pk IS c.v)",
                    object_table(target)
                ),
                _ => String::new(),
            };
            return Ok(Operand::Column {
                sql: format!("(SELECT COUNT(*) FROM {table} c WHERE c.owner = o._id{resolved})"),
                value_type: PayloadType::Int,
                kind: None,
            });
        }
        if *self.peek() == Tok::Dot {
            self.next();
            let inner_pos = self.pos();
            let Tok::Ident(inner) = self.next() else {
                return Err(QueryError {
                    position: inner_pos,
                    message: "expected a property name after '.'".into(),
                });
            };
            let target = match (&column.link_target, column.collection) {
                (Some(t), CollectionType::Single) => t.clone(),
                _ => {
                    return Err(err(format!(
                    "'{name}' is not a single link; only one level of link traversal is supported"
                )))
                }
            };
            let target_schema = self
                .schemas
                .get(&target)
                .ok_or_else(|| err(format!("link target {target} is missing")))?;
            let (inner_sql, inner_type) = match &target_schema.spec {
                TableSpec::TopLevel {
                    pk_field, pk_type, ..
                } if *pk_field == inner => ("t._pk".to_owned(), *pk_type),
                _ => {
                    let c = target_schema
                        .columns
                        .get(&inner)
                        .ok_or_else(|| QueryError {
                            position: inner_pos,
                            message: format!("{target} has no property '{inner}'"),
                        })?;
                    if c.collection != CollectionType::Single || c.value_type == PayloadType::Null {
                        return Err(QueryError {
                            position: inner_pos,
                            message: format!("{target}.{inner} cannot be compared through a link"),
                        });
                    }
                    (format!("t.{}", value_column(&inner)), c.value_type)
                }
            };
            return Ok(Operand::Column {
                sql: format!(
                    "(SELECT {inner_sql} FROM {} t WHERE t._pk = o.{})",
                    object_table(&target),
                    value_column(&name)
                ),
                value_type: inner_type,
                kind: None,
            });
        }
        if column.collection != CollectionType::Single {
            return Err(err(format!("'{name}' is a collection; compare its @count")));
        }
        // A link to an object that does not exist reads as null (realm-core's Obj::get), so
        // `== nil`, comparisons and SORT see the target's key only when the target exists.
        let sql = match &column.link_target {
            Some(target) if column.value_type == PayloadType::Link => format!(
                "(SELECT t._pk FROM {} t WHERE t._pk = o.{})",
                object_table(target),
                value_column(&name)
            ),
            _ => format!("o.{}", value_column(&name)),
        };
        Ok(Operand::Column {
            sql,
            value_type: column.value_type,
            kind: (column.value_type == PayloadType::Null)
                .then(|| format!("o.{}", kind_column(&name))),
        })
    }

    /// Checks that `value` can be compared with a property of `value_type` and converts a
    /// literal to the property's type as Realm's parser does: a number literal read exactly
    /// as a decimal for a decimal property, and as a float for a float property.
    fn coerce(
        &self,
        value: Option<Val>,
        literal: Option<String>,
        value_type: PayloadType,
        pos: usize,
    ) -> Result<Option<Val>, QueryError> {
        let Some(v) = value else {
            return Ok(None);
        };
        let numeric = |t: PayloadType| {
            matches!(
                t,
                PayloadType::Int | PayloadType::Float | PayloadType::Double | PayloadType::Decimal
            )
        };
        let given = v.payload_type();
        let v = match (&v, value_type, literal) {
            (Val::Double(_), PayloadType::Decimal, Some(text)) => {
                Val::Decimal(compare::parse_decimal(&text).ok_or_else(|| QueryError {
                    position: pos,
                    message: format!("{text} is not a decimal128 (at most 34 digits)"),
                })?)
            }
            (Val::Double(bits), PayloadType::Float, Some(_)) => {
                Val::Float((f64::from_bits(*bits) as f32).to_bits())
            }
            _ => v,
        };
        if given == value_type
            || value_type == PayloadType::Null
            || (numeric(given) && numeric(value_type))
        {
            Ok(Some(v))
        } else {
            Err(QueryError {
                position: pos,
                message: format!(
                    "cannot compare a {} property with a {} value",
                    type_name(value_type),
                    type_name(given)
                ),
            })
        }
    }

    /// Binds a value as it is stored in a column of `value_type` (a mixed column keeps a
    /// link's class); returns the parameter and the value's kind code.
    fn bind_value(&mut self, v: &Val, value_type: PayloadType) -> (String, i64) {
        let (sql, kind) = stored_as(v, value_type);
        (self.bind(sql), kind)
    }

    /// SQL for `column op value` (op one of == != < <= > >=), with Realm's rules per type
    /// (module `compare`): IEEE for float and double properties against numbers (a NaN
    /// matches only `!=`); Realm's total order (numbers by value, NaN lowest) for decimal and
    /// mixed properties and whenever a decimal meets another number; null equal only to null,
    /// and `<=`/`>=` true for two nulls.
    fn compare_value(
        &mut self,
        column: &ColumnRef,
        op: &str,
        value: &Option<Val>,
        pos: usize,
    ) -> Result<String, QueryError> {
        let ColumnRef {
            sql: col,
            value_type,
            kind,
        } = column;
        let Some(v) = value else {
            return Ok(match op {
                "==" | "<=" | ">=" => format!("({col} IS NULL)"),
                "!=" | "<>" => format!("({col} IS NOT NULL)"),
                _ => "0".to_owned(),
            });
        };
        if *value_type == PayloadType::Link && !matches!(op, "==" | "!=" | "<>") {
            return Err(QueryError {
                position: pos,
                message: format!("{op} does not apply to links; only == and != do"),
            });
        }
        let is_nan = match v {
            Val::Float(bits) => f32::from_bits(*bits).is_nan(),
            Val::Double(bits) => f64::from_bits(*bits).is_nan(),
            _ => false,
        };
        let by_function = *value_type == PayloadType::Null
            || *value_type == PayloadType::Decimal
            || matches!(v, Val::Decimal(_));
        if by_function {
            let (p, k) = self.bind_value(v, *value_type);
            let c = format!("tandem_cmp({col}, {kind}, {p}, {k})");
            return Ok(match op {
                "==" => format!("({c} = 0)"),
                "!=" | "<>" => format!("({c} IS NOT 0)"),
                _ => format!("({c} {op} 0)"),
            });
        }
        let float_column = matches!(value_type, PayloadType::Float | PayloadType::Double);
        if is_nan {
            // A typed float/double property: IEEE, NaN equals nothing. An int property: Realm's
            // `compare_long_to_double`, every int above NaN.
            return Ok(match op {
                "!=" | "<>" => "1".to_owned(),
                ">" | ">=" if !float_column => format!("({col} IS NOT NULL)"),
                _ => "0".to_owned(),
            });
        }
        let bound = match v {
            // Int against float/double is exact in SQLite, as in Realm.
            Val::Float(bits) => Sql::Real(f64::from(f32::from_bits(*bits))),
            Val::Double(bits) => Sql::Real(f64::from_bits(*bits)),
            other => stored_as(other, *value_type).0,
        };
        let p = self.bind(bound);
        Ok(match op {
            "==" => format!("({col} IS {p})"),
            "!=" | "<>" => format!("({col} IS NOT {p})"),
            // A stored NaN is a BLOB, which SQLite orders above every number.
            cmp if float_column => format!("({col} {cmp} {p} AND typeof({col}) = 'real')"),
            cmp => format!("({col} {cmp} {p})"),
        })
    }

    /// SQL for a string operator or a `[c]`/`[d]`/`[cd]` comparison.
    fn compare_string(
        &mut self,
        column: &ColumnRef,
        op: &str,
        flags: i64,
        value: Option<Val>,
        pos: usize,
    ) -> Result<String, QueryError> {
        let modifier = match flags {
            0 => "",
            FOLD_CASE => "[c]",
            FOLD_DIACRITICS => "[d]",
            _ => "[cd]",
        };
        if !matches!(column.value_type, PayloadType::String | PayloadType::Null) {
            return Err(QueryError {
                position: pos,
                message: format!("{op}{modifier} needs a string property"),
            });
        }
        if matches!(op, "<" | "<=" | ">" | ">=") {
            return Err(QueryError {
                position: pos,
                message: format!(
                    "{modifier} applies to ==, !=, BEGINSWITH, ENDSWITH, CONTAINS and LIKE, not {op}"
                ),
            });
        }
        let Some(Val::String(s)) = value else {
            return Err(QueryError {
                position: pos,
                message: format!("{op}{modifier} needs a string value"),
            });
        };
        let col = &column.sql;
        let (c, s) = if flags != 0 {
            (
                format!("tandem_fold({col}, {flags})"),
                compare::fold(&s, flags),
            )
        } else {
            (col.clone(), s)
        };
        let glob = (op == "LIKE").then(|| {
            s.chars()
                .map(|ch| match ch {
                    '[' => "[[]".to_owned(),
                    other => other.to_string(),
                })
                .collect::<String>()
        });
        let p = self.bind(Sql::Text(glob.unwrap_or(s)));
        let matched = match op {
            "BEGINSWITH" => format!("substr({c}, 1, length({p})) = {p}"),
            "ENDSWITH" => format!("length({c}) >= length({p}) AND substr({c}, -length({p})) = {p}"),
            "CONTAINS" => format!("instr({c}, {p}) > 0"),
            "LIKE" => format!("{c} GLOB {p}"),
            _ => format!("{c} = {p}"),
        };
        // A mixed property matches only while it holds a string.
        let matched = if column.value_type == PayloadType::Null {
            format!(
                "{} = {} AND {matched}",
                column.kind,
                PayloadType::String.code()
            )
        } else {
            matched
        };
        Ok(if matches!(op, "!=" | "<>") {
            format!("(NOT coalesce({matched}, 0))")
        } else {
            format!("({matched})")
        })
    }

    /// One `column op value`, string operators and modifiers included.
    fn compare_one(
        &mut self,
        column: &ColumnRef,
        op: &str,
        flags: i64,
        value: Option<Val>,
        literal: Option<String>,
        pos: usize,
    ) -> Result<String, QueryError> {
        let string_op = matches!(op, "BEGINSWITH" | "ENDSWITH" | "CONTAINS" | "LIKE");
        if string_op || flags != 0 {
            return self.compare_string(column, op, flags, value, pos);
        }
        let value = self.coerce(value, literal, column.value_type, pos)?;
        self.compare_value(column, op, &value, pos)
    }

    fn comparison(&mut self) -> Result<String, QueryError> {
        let left = self.operand()?;
        let op_pos = self.pos();
        if is_kw(self.peek(), "IN") || is_kw(self.peek(), "BETWEEN") {
            let between = is_kw(self.peek(), "BETWEEN");
            self.next();
            let Operand::Column {
                sql,
                value_type,
                kind,
            } = left
            else {
                return self.fail("IN and BETWEEN need a property on their left");
            };
            let column = ColumnRef::new(sql, value_type, kind);
            self.expect(Tok::LBrace, "'{'")?;
            let mut items = Vec::new();
            loop {
                let pos = self.pos();
                let Operand::Value(v, literal) = self.operand()? else {
                    return self.fail("IN and BETWEEN take values, not properties");
                };
                items.push((v, literal, pos));
                match self.next() {
                    Tok::Comma => continue,
                    Tok::RBrace => break,
                    other => return self.fail(format!("expected ',' or '}}', found {other:?}")),
                }
            }
            if between {
                let [(low, low_text, low_pos), (high, high_text, high_pos)]: [_; 2] =
                    items.try_into().map_err(|_| QueryError {
                        position: op_pos,
                        message: "BETWEEN takes two values: {low, high}".into(),
                    })?;
                let low = self.compare_one(&column, ">=", 0, low, low_text, low_pos)?;
                let high = self.compare_one(&column, "<=", 0, high, high_text, high_pos)?;
                return Ok(format!("({low} AND {high})"));
            }
            let mut any = Vec::new();
            for (v, literal, pos) in items {
                any.push(self.compare_one(&column, "==", 0, v, literal, pos)?);
            }
            return Ok(if any.is_empty() {
                "0".to_owned()
            } else {
                format!("({})", any.join(" OR "))
            });
        }
        let op = match self.next() {
            Tok::Op(op) if !matches!(op, "&&" | "||" | "!") => op.to_owned(),
            Tok::Ident(w)
                if ["BEGINSWITH", "ENDSWITH", "CONTAINS", "LIKE"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                w.to_ascii_uppercase()
            }
            other => {
                return Err(QueryError {
                    position: op_pos,
                    message: format!("expected a comparison operator (==, !=, <, <=, >, >=, BEGINSWITH, ENDSWITH, CONTAINS, LIKE, IN, BETWEEN), found {other:?}"),
                })
            }
        };
        let flags = if let Tok::Modifier(flags) = *self.peek() {
            self.next();
            flags
        } else {
            0
        };
        let value_pos = self.pos();
        let right = self.operand()?;
        let (column, value, literal, swapped) = match (left, right) {
            (
                Operand::Column {
                    sql,
                    value_type,
                    kind,
                },
                Operand::Value(v, literal),
            ) => (ColumnRef::new(sql, value_type, kind), v, literal, false),
            (
                Operand::Value(v, literal),
                Operand::Column {
                    sql,
                    value_type,
                    kind,
                },
            ) => (ColumnRef::new(sql, value_type, kind), v, literal, true),
            (
                Operand::Column {
                    sql: a,
                    value_type: ta,
                    kind: ka,
                },
                Operand::Column {
                    sql: b,
                    value_type: tb,
                    kind: kb,
                },
            ) => {
                let (a, b) = (ColumnRef::new(a, ta, ka), ColumnRef::new(b, tb, kb));
                return self.compare_columns(&a, &op, &b, op_pos);
            }
            (Operand::Value(..), Operand::Value(..)) => {
                return Err(QueryError {
                    position: op_pos,
                    message: "a comparison needs a property on one side".into(),
                })
            }
        };
        let op = if swapped {
            match op.as_str() {
                "<" => ">".to_owned(),
                ">" => "<".to_owned(),
                "<=" => ">=".to_owned(),
                ">=" => "<=".to_owned(),
                other => other.to_owned(),
            }
        } else {
            op
        };
        self.compare_one(&column, &op, flags, value, literal, value_pos)
    }

    /// `a op b` for two properties: SQLite's own comparison where it equals Realm's (the same
    /// type, not float, double, decimal or mixed), `tandem_cmp` otherwise.
    fn compare_columns(
        &mut self,
        a: &ColumnRef,
        op: &str,
        b: &ColumnRef,
        pos: usize,
    ) -> Result<String, QueryError> {
        let native = a.value_type == b.value_type
            && !matches!(
                a.value_type,
                PayloadType::Float | PayloadType::Double | PayloadType::Decimal | PayloadType::Null
            );
        if !matches!(op, "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") {
            return Err(QueryError {
                position: pos,
                message: format!("{op} needs a value on one side"),
            });
        }
        let (x, y) = (&a.sql, &b.sql);
        if native {
            let op = match op {
                "==" => "IS",
                "!=" | "<>" => "IS NOT",
                other => other,
            };
            return Ok(format!("({x} {op} {y})"));
        }
        let c = format!("tandem_cmp({x}, {}, {y}, {})", a.kind, b.kind);
        let both_null = format!("({x} IS NULL AND {y} IS NULL)");
        Ok(match op {
            "==" => format!("({c} = 0 OR {both_null})"),
            "!=" | "<>" => format!("NOT ({c} = 0 OR {both_null})"),
            "<=" | ">=" => format!("({c} {op} 0 OR {both_null})"),
            _ => format!("({c} {op} 0)"),
        })
    }

    fn sort_and_limit(&mut self) -> Result<(String, String), QueryError> {
        let mut order = Vec::new();
        let mut limit = String::new();
        loop {
            if is_kw(self.peek(), "SORT") {
                self.next();
                self.expect(Tok::LParen, "'(' after SORT")?;
                loop {
                    let pos = self.pos();
                    let Tok::Ident(name) = self.next() else {
                        return Err(QueryError {
                            position: pos,
                            message: "expected a property to sort by".into(),
                        });
                    };
                    let Operand::Column {
                        sql,
                        value_type,
                        kind,
                    } = self.keypath(pos, name)?
                    else {
                        return Err(QueryError {
                            position: pos,
                            message: "expected a property to sort by".into(),
                        });
                    };
                    if value_type == PayloadType::Link {
                        return Err(QueryError {
                            position: pos,
                            message: "cannot sort by a link; sort by a property of its target"
                                .into(),
                        });
                    }
                    let column = ColumnRef::new(sql, value_type, kind);
                    let dir = if is_kw(self.peek(), "DESC") || is_kw(self.peek(), "DESCENDING") {
                        self.next();
                        "DESC"
                    } else {
                        if is_kw(self.peek(), "ASC") || is_kw(self.peek(), "ASCENDING") {
                            self.next();
                        }
                        "ASC"
                    };
                    order.push(sort_term(&column, dir));
                    match self.next() {
                        Tok::Comma => continue,
                        Tok::RParen => break,
                        other => {
                            return self
                                .fail(format!("expected ',' or ')' in SORT, found {other:?}"))
                        }
                    }
                }
            } else if is_kw(self.peek(), "LIMIT") {
                self.next();
                self.expect(Tok::LParen, "'(' after LIMIT")?;
                let pos = self.pos();
                let Tok::Int(n) = self.next() else {
                    return Err(QueryError {
                        position: pos,
                        message: "expected a number in LIMIT".into(),
                    });
                };
                if n < 0 {
                    return Err(QueryError {
                        position: pos,
                        message: "LIMIT must not be negative".into(),
                    });
                }
                self.expect(Tok::RParen, "')' after LIMIT's number")?;
                limit = format!(" LIMIT {n}");
            } else {
                break;
            }
        }
        Ok((order.join(", "), limit))
    }
}

/// `v` as a column of `value_type` stores it (a mixed column keeps a link's class), and its
/// kind code.
fn stored_as(v: &Val, value_type: PayloadType) -> (Sql, i64) {
    store_value(
        &crate::state::ColumnSpec {
            value_type,
            link_target: None,
            nullable: true,
            collection: CollectionType::Single,
            key_type: None,
        },
        v,
    )
}

/// `ORDER BY` terms for a property in Realm's sort order (module `compare`): null first,
/// then NaN, then numbers by value; for mixed, kinds by Realm's rank. Float and double use
/// SQLite's order with NaN (a BLOB) moved below the numbers; decimal and mixed sort by
/// `tandem_sort_key`; every other type's SQLite order already is Realm's.
fn sort_term(column: &ColumnRef, dir: &str) -> String {
    let ColumnRef {
        sql,
        value_type,
        kind,
    } = column;
    match value_type {
        PayloadType::Float | PayloadType::Double => format!(
            "(CASE typeof({sql}) WHEN 'null' THEN 0 WHEN 'blob' THEN 1 ELSE 2 END) {dir}, {sql} {dir}"
        ),
        PayloadType::Decimal | PayloadType::Null => {
            format!("tandem_sort_key({sql}, {kind}) {dir}")
        }
        _ => format!("{sql} {dir}"),
    }
}

fn model_to_val(v: &Value) -> Option<Val> {
    Some(match v {
        Value::Null => return None,
        Value::Int(i) => Val::Int(*i),
        Value::Bool(b) => Val::Bool(*b),
        Value::String(s) => Val::String(s.clone()),
        Value::Binary(b) => Val::Binary(b.clone()),
        Value::Timestamp(t) => Val::Timestamp(t.seconds(), t.nanoseconds()),
        Value::Float(f) => Val::Float(f.to_bits()),
        Value::Double(d) => Val::Double(d.to_bits()),
        Value::Decimal(d) => Val::Decimal(d.to_bits()),
        Value::ObjectId(id) => Val::ObjectId(id.0),
        Value::Uuid(id) => Val::Uuid(id.0),
        Value::Link(link) => Val::Link(
            link.class.clone(),
            match &link.key {
                crate::model::PrimaryKey::Null => Key::Null,
                crate::model::PrimaryKey::Int(i) => Key::Int(*i),
                crate::model::PrimaryKey::String(s) => Key::String(s.clone()),
                crate::model::PrimaryKey::ObjectId(id) => Key::ObjectId(id.0),
                crate::model::PrimaryKey::Uuid(id) => Key::Uuid(id.0),
            },
        ),
    })
}

/// Compiles `text` against `class`.
pub(crate) fn compile(
    schemas: &Schemas,
    class: &str,
    text: &str,
    args: &[Value],
) -> Result<Compiled, QueryError> {
    match schemas.get(class).map(|s| &s.spec) {
        Some(TableSpec::TopLevel { .. }) => {}
        _ => {
            return Err(QueryError {
                position: 0,
                message: format!("no top-level class {class}"),
            })
        }
    }
    let mut p = Parser {
        toks: tokenize(text)?,
        at: 0,
        schemas,
        class,
        args,
        params: Vec::new(),
    };
    let starts_with_clause =
        is_kw(p.peek(), "SORT") || is_kw(p.peek(), "LIMIT") || *p.peek() == Tok::End;
    let filter = if starts_with_clause {
        "1".to_owned()
    } else {
        p.predicate()?
    };
    let (mut order, limit) = p.sort_and_limit()?;
    // Ties keep insertion order, so results are stable. With a filter, `+o._id` stops SQLite
    // from scanning the whole table in row order just to skip a sort, so indexes on the
    // filtered columns are used.
    if !order.is_empty() {
        order.push_str(", ");
    }
    order.push_str(if filter == "1" {
        "o._id ASC"
    } else {
        "+o._id ASC"
    });
    if *p.peek() != Tok::End {
        return p.fail(format!(
            "expected AND, OR, SORT, LIMIT or the end, found {:?}",
            p.peek()
        ));
    }
    let tail = format!(
        "FROM {} o WHERE {filter} ORDER BY {order}{limit}",
        object_table(class)
    );
    Ok(Compiled {
        sql: format!("SELECT o._id, o._pk {tail}"),
        tail,
        params: p.params,
    })
}
