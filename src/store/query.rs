//! The query language: a subset of Realm's, compiled to SQL with bound parameters.
//!
//! ```text
//! query      := predicate [SORT(keypath ASC|DESC, ...)] [LIMIT(n)]
//! predicate  := and (OR and)*            -- also ||
//! and        := unary (AND unary)*       -- also &&
//! unary      := NOT unary | ( predicate ) | TRUEPREDICATE | FALSEPREDICATE | comparison
//! comparison := operand op operand | keypath IN { value, ... }
//! op         := == = != <> < <= > >= BEGINSWITH ENDSWITH CONTAINS LIKE, each optionally [c]
//! operand    := keypath | value
//! keypath    := property | link.property | collection.@count | collection.@size
//! value      := integer | float | 'string' | "string" | true | false | nil | null | $0 $1 ...
//! ```
//!
//! `LIKE` takes Realm's wildcards: `*` for any run of characters and `?` for one. `[c]` makes a
//! string comparison case-insensitive (ASCII). `== nil` matches null. Everything runs in SQLite;
//! no table is loaded into memory to be filtered.

use std::fmt;

use rusqlite::types::Value as Sql;

use super::apply::store_value;
use super::layout::{collection_table, object_table, value_column};
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
    Float(f64),
    Param(usize),
    Op(&'static str),
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Dot,
    At(String),
    CaseFlag,
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
        } else if text[i..].starts_with("[c]") {
            i += 3;
            Tok::CaseFlag
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
                            || bytes[i] == b'E')
                    {
                        i += 1;
                    }
                    let t = &text[s..i];
                    if let Ok(n) = t.parse::<i64>() {
                        Tok::Int(n)
                    } else if let Ok(f) = t.parse::<f64>() {
                        Tok::Float(f)
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
    pub sql: String,
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
    },
    /// A literal or parameter (None = null).
    Value(Option<Val>),
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
            Tok::Int(n) => Ok(Operand::Value(Some(Val::Int(n)))),
            Tok::Float(f) => Ok(Operand::Value(Some(Val::Double(f.to_bits())))),
            Tok::Str(s) => Ok(Operand::Value(Some(Val::String(s)))),
            Tok::Param(n) => match self.args.get(n) {
                Some(v) => Ok(Operand::Value(model_to_val(v))),
                None => Err(QueryError {
                    position: pos,
                    message: format!("parameter ${n} was not given ({} given)", self.args.len()),
                }),
            },
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => {
                Ok(Operand::Value(Some(Val::Bool(true))))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => {
                Ok(Operand::Value(Some(Val::Bool(false))))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("nil") || s.eq_ignore_ascii_case("null") => {
                Ok(Operand::Value(None))
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
            });
        }
        if column.collection != CollectionType::Single {
            return Err(err(format!("'{name}' is a collection; compare its @count")));
        }
        if column.value_type == PayloadType::Null {
            return Err(err(format!(
                "'{name}' is mixed; mixed properties cannot be queried yet"
            )));
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
        })
    }

    /// Binds a value for comparison with a column of `value_type`.
    fn value_sql(&mut self, value: &Option<Val>, value_type: PayloadType) -> String {
        match value {
            None => "NULL".into(),
            Some(v) => {
                let v = match (v, value_type) {
                    // Numbers compare across int / float / double.
                    (Val::Int(i), PayloadType::Double | PayloadType::Float) => {
                        Val::Double((*i as f64).to_bits())
                    }
                    (other, _) => other.clone(),
                };
                let (sql, _) = store_value(
                    &crate::state::ColumnSpec {
                        value_type,
                        link_target: None,
                        nullable: true,
                        collection: CollectionType::Single,
                        key_type: None,
                    },
                    &v,
                );
                self.bind(sql)
            }
        }
    }

    fn comparison(&mut self) -> Result<String, QueryError> {
        let left = self.operand()?;
        let op_pos = self.pos();
        if is_kw(self.peek(), "IN") {
            self.next();
            let Operand::Column {
                sql, value_type, ..
            } = left
            else {
                return self.fail("IN needs a property on its left");
            };
            self.expect(Tok::LBrace, "'{'")?;
            let mut items = Vec::new();
            loop {
                let Operand::Value(v) = self.operand()? else {
                    return self.fail("IN takes values, not properties");
                };
                items.push(self.value_sql(&v, value_type));
                match self.next() {
                    Tok::Comma => continue,
                    Tok::RBrace => break,
                    other => return self.fail(format!("expected ',' or '}}', found {other:?}")),
                }
            }
            return Ok(format!("({sql} IN ({}))", items.join(", ")));
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
                    message: format!("expected a comparison operator (==, !=, <, <=, >, >=, BEGINSWITH, ENDSWITH, CONTAINS, LIKE, IN), found {other:?}"),
                })
            }
        };
        let case_insensitive = if *self.peek() == Tok::CaseFlag {
            self.next();
            true
        } else {
            false
        };
        let right = self.operand()?;
        let (column, value, swapped) = match (left, right) {
            (
                Operand::Column {
                    sql, value_type, ..
                },
                Operand::Value(v),
            ) => ((sql, value_type), v, false),
            (
                Operand::Value(v),
                Operand::Column {
                    sql, value_type, ..
                },
            ) => ((sql, value_type), v, true),
            (Operand::Column { sql: a, .. }, Operand::Column { sql: b, .. }) => {
                let op = match op.as_str() {
                    "==" => "IS",
                    "!=" | "<>" => "IS NOT",
                    "<" | "<=" | ">" | ">=" => op.as_str(),
                    _ => {
                        return Err(QueryError {
                            position: op_pos,
                            message: format!("{op} needs a value on one side"),
                        })
                    }
                };
                return Ok(format!("({a} {op} {b})"));
            }
            (Operand::Value(_), Operand::Value(_)) => {
                return Err(QueryError {
                    position: op_pos,
                    message: "a comparison needs a property on one side".into(),
                })
            }
        };
        let (col, value_type) = column;
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
        let string_op = matches!(op.as_str(), "BEGINSWITH" | "ENDSWITH" | "CONTAINS" | "LIKE");
        if string_op || case_insensitive {
            if value_type != PayloadType::String {
                return Err(QueryError {
                    position: op_pos,
                    message: format!(
                        "{op}{} needs a string property",
                        if case_insensitive { "[c]" } else { "" }
                    ),
                });
            }
            let Some(Val::String(s)) = value else {
                return Err(QueryError {
                    position: op_pos,
                    message: format!("{op} needs a string value"),
                });
            };
            let (c, s) = if case_insensitive {
                (format!("lower({col})"), s.to_ascii_lowercase())
            } else {
                (col.clone(), s)
            };
            let p = self.bind(Sql::Text(s.clone()));
            return Ok(match op.as_str() {
                "BEGINSWITH" => format!("(substr({c}, 1, length({p})) = {p})"),
                "ENDSWITH" => {
                    format!("(length({c}) >= length({p}) AND substr({c}, -length({p})) = {p})")
                }
                "CONTAINS" => format!("(instr({c}, {p}) > 0)"),
                "LIKE" => {
                    self.params.pop();
                    let glob: String = s
                        .chars()
                        .map(|ch| match ch {
                            '*' => "*".to_owned(),
                            '?' => "?".to_owned(),
                            '[' => "[[]".to_owned(),
                            other => other.to_string(),
                        })
                        .collect();
                    let p = self.bind(Sql::Text(glob));
                    format!("({c} GLOB {p})")
                }
                "==" => format!("({c} = {p})"),
                "!=" | "<>" => format!("({c} IS NOT {p})"),
                "<" | "<=" | ">" | ">=" => format!("({c} {op} {p})"),
                _ => unreachable!("operators are listed above"),
            });
        }
        let v = self.value_sql(&value, value_type);
        Ok(match op.as_str() {
            "==" => format!("({col} IS {v})"),
            "!=" | "<>" => format!("({col} IS NOT {v})"),
            _ if value.is_none() => "0".to_owned(),
            cmp => format!("({col} {cmp} {v})"),
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
                    let Operand::Column { sql, .. } = self.keypath(pos, name)? else {
                        return Err(QueryError {
                            position: pos,
                            message: "expected a property to sort by".into(),
                        });
                    };
                    let dir = if is_kw(self.peek(), "DESC") || is_kw(self.peek(), "DESCENDING") {
                        self.next();
                        "DESC"
                    } else {
                        if is_kw(self.peek(), "ASC") || is_kw(self.peek(), "ASCENDING") {
                            self.next();
                        }
                        "ASC"
                    };
                    order.push(format!("{sql} {dir}"));
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
    Ok(Compiled {
        sql: format!(
            "SELECT o._id, o._pk FROM {} o WHERE {filter} ORDER BY {order}{limit}",
            object_table(class)
        ),
        params: p.params,
    })
}
