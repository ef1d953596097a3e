//! The query language: a subset of Realm's, compiled to SQL with bound parameters.
//!
//! ```text
//! query      := [predicate] [SORT(keypath ASC|DESC, ...)] [LIMIT(n)]
//! predicate  := and (OR and)*            -- also ||
//! and        := unary (AND unary)*       -- also &&
//! unary      := NOT unary | ! unary | ( predicate ) | TRUEPREDICATE | FALSEPREDICATE | comparison
//! comparison := operand op operand
//!             | keypath IN [modifier] list | keypath == [modifier] [ANY] list
//!             | keypath BETWEEN { value, value }
//! list       := { } | { value, ... }
//! op         := == = != <> < <= =< > >= => BEGINSWITH ENDSWITH CONTAINS LIKE
//!               (== != and the string operators optionally followed by a modifier)
//! modifier   := [c] | [d] | [cd]
//! operand    := keypath | value
//! keypath    := property | link.property | collection.@count | collection.@size
//! property   := name; realm-core's escapes \  \t \r \n stand for a space, tab, CR, LF
//! value      := integer | float | nan | inf | 'string' | "string" | B64"base64"
//!             | true | false | nil | null | T<seconds>:<nanoseconds>
//!             | oid(<24 hex digits>) | uuid(<8-4-4-4-12 hex digits>)
//!             | binary("string") | binary(B64"base64") | $0 $1 ...
//! ```
//!
//! Keywords (AND, OR, NOT, IN, BETWEEN, the string operators, SORT, ASC, DESC, LIMIT,
//! TRUEPREDICATE, FALSEPREDICATE, NULL, ...) are case-insensitive. `SORT`, `DISTINCT` and
//! `LIMIT` open a clause only when `(` follows them; otherwise they name a property, as in
//! realm-core's grammar (`sort == 5 SORT(sort ASC)`).
//!
//! Besides the text people write, this parses what realm-core 14 sends as a flexible-sync
//! subscription: `Query::get_description()`, e.g. `TRUEPREDICATE`, `(a == 1 or b == NULL)`,
//! `!(done == false )`, `name ==[c] B64"IkEi"` (the base64 of a string with a quote, a
//! backslash, a control or a non-ASCII character), `at >= T200:0`, `id == oid(…)`,
//! `k == uuid(…)`, `x == -nan`, `price == +12345678901234567890123E-5` (a decimal),
//! `tag IN {"a", "b"}`, `mixed == {1, "a"}`, `n between {1, 5}`, `... SORT(a ASC) LIMIT(5)`.
//! A number literal of any form is read as a decimal exactly for a decimal property.
//!
//! Refused with a [`QueryError`] naming the construct: `DISTINCT(…)`, backlinks
//! (`@links.Class.property`, `@links.@count`), `@min` `@max` `@sum` `@avg` `@type` `@keys`
//! `@values`, `ANY`/`ALL`/`NONE`/`SOME` before a key path, `ALL {…}` and `NONE {…}`,
//! `SUBQUERY(…)`, link-target literals `obj("class", key)`, `O<key>` and `L<table>:<key>`,
//! arithmetic (`+ - * /`), indexing (`list[0]`), `TEXT`, `GEOWITHIN`, key paths of more than
//! one link, realm-core's date form `YYYY-MM-DD@HH:MM:SS` (only `T<s>:<ns>` is read), a second
//! `SORT(…)` or `LIMIT(…)` or a `SORT(…)` after a `LIMIT(…)`, and queries past the bounds:
//! `NOT` and parentheses nested more than [`MAX_NESTING`] levels, a filter deeper than
//! [`MAX_SQL_DEPTH`] in SQL, more than [`MAX_PARAMS`] bound values.
//!
//! `LIKE` takes Realm's wildcards: `*` for any run of characters and `?` for one. `[c]` makes a
//! string comparison case-insensitive (Unicode simple case folding), `[d]` diacritic-insensitive
//! and `[cd]` both. `== nil` matches null. Comparison and sort follow Realm's rules per type
//! (see `compare`): numbers by value across int, float, double and decimal, NaN as Realm
//! orders it, mixed values by kind then value. Everything runs in SQLite (with the functions
//! `compare` registers); no table is loaded into memory to be filtered.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rusqlite::types::Value as Sql;

use super::apply::store_value;
use super::compare::{self, FOLD_CASE, FOLD_DIACRITICS};
use super::layout::{
    collection_table, kind_column, link_matches, object_table, value_column, Indexes, Snapshot,
};
use crate::changeset::{CollectionType, PayloadType};
use crate::model::{Timestamp, Value};
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
    /// `B64"…"`: the decoded bytes (a string literal when they are UTF-8, or the content of
    /// `binary(B64"…")`).
    B64(Vec<u8>),
    Int(i64),
    /// A number with a fraction or exponent, or a signed `nan` / `inf`, and its text (a decimal
    /// property reads it exactly).
    Float(f64, String),
    /// `T<seconds>:<nanoseconds>`, already checked by [`Timestamp::new`].
    Timestamp(i64, i32),
    /// `oid(<24 hex digits>)`.
    ObjectId([u8; 12]),
    /// `uuid(<8-4-4-4-12 hex digits>)`.
    Uuid([u8; 16]),
    Param(usize),
    Op(&'static str),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Dot,
    At(String),
    /// `[c]`, `[d]` or `[cd]`: [`compare::FOLD_CASE`] and/or [`compare::FOLD_DIACRITICS`].
    Modifier(i64),
    End,
}

/// Whether `b` continues a property name: realm-core's `id_char` (`[a-zA-Z_\-$0-9]`) and the
/// bytes of non-ASCII UTF-8 characters.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$') || b >= 0x80
}

/// The end of `[+-]?[0-9]+` starting at `at`, if there is one.
fn signed_digits(bytes: &[u8], at: usize) -> Option<usize> {
    let mut j = at;
    if matches!(bytes.get(j), Some(b'+' | b'-')) {
        j += 1;
    }
    let digits = j;
    while bytes.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    (j > digits).then_some(j)
}

/// Whether `bytes` start with realm-core's readable date form, `YYYY-MM-DD@HH:` or
/// `YYYY-MM-DDTHH:`.
fn is_date_literal(bytes: &[u8]) -> bool {
    let digits = |at: usize| {
        let mut j = at;
        while bytes.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        (j > at).then_some(j)
    };
    (|| {
        let mut j = digits(0)?;
        for _ in 0..2 {
            (bytes.get(j) == Some(&b'-')).then_some(())?;
            j = digits(j + 1)?;
        }
        matches!(bytes.get(j), Some(b'@' | b'T')).then_some(())?;
        j = digits(j + 1)?;
        (bytes.get(j) == Some(&b':')).then_some(())
    })()
    .is_some()
}

/// `hex` (exactly `2 * N` hexadecimal digits) as bytes.
fn hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).ok()?;
    }
    Some(out)
}

/// The double realm-core's parser gives `nan`, `inf` and `infinity` (any case, optionally
/// signed; a NaN is always the positive quiet NaN, as in core's `ConstantNode`).
fn special_double(word: &str) -> Option<f64> {
    let (negative, body) = match word.as_bytes().first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    if body.eq_ignore_ascii_case("nan") {
        Some(f64::from_bits(0x7ff8_0000_0000_0000))
    } else if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        })
    } else {
        None
    }
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
        let rest = &text[i..];
        let two = text.get(i..i + 2).unwrap_or("");
        // The end of the name characters from `from` (for `nan`, `inf` after a sign).
        let word_end = |from: usize| {
            let mut j = from;
            while j < bytes.len() && is_name_byte(bytes[j]) {
                j += 1;
            }
            j
        };
        let tok = if let Some((len, op)) = [
            ("==", "=="),
            ("!=", "!="),
            ("<>", "<>"),
            ("<=", "<="),
            (">=", ">="),
            ("=<", "<="),
            ("=>", ">="),
            ("&&", "&&"),
            ("||", "||"),
        ]
        .into_iter()
        .find(|(o, _)| *o == two)
        .map(|(o, op)| (o.len(), op))
        {
            i += len;
            Tok::Op(op)
        } else if let Some((len, flags)) = [("[c]", FOLD_CASE), ("[d]", FOLD_DIACRITICS)]
            .into_iter()
            .chain([
                ("[cd]", FOLD_CASE | FOLD_DIACRITICS),
                ("[dc]", FOLD_CASE | FOLD_DIACRITICS),
            ])
            .find(|(m, _)| rest.starts_with(m))
            .map(|(m, f)| (m.len(), f))
        {
            i += len;
            Tok::Modifier(flags)
        } else if rest.starts_with("B64\"") {
            // realm-core's form of a string with quotes, backslashes, control characters or
            // non-ASCII: standard base64 (with padding) of its UTF-8 bytes.
            let body = i + 4;
            let Some(len) = text[body..].find('"') else {
                return Err(err(start, "unterminated B64\"…\" string"));
            };
            i = body + len + 1;
            let decoded = STANDARD
                .decode(&text[body..body + len])
                .map_err(|e| err(start, &format!("invalid base64 in B64\"…\" string: {e}")))?;
            Tok::B64(decoded)
        } else if rest.starts_with("oid(") {
            let id = text
                .get(i + 4..i + 28)
                .filter(|_| bytes.get(i + 28) == Some(&b')'))
                .and_then(hex_bytes::<12>)
                .ok_or_else(|| err(start, "oid(…) takes an ObjectId: 24 hexadecimal digits"))?;
            i += 29;
            Tok::ObjectId(id)
        } else if rest.starts_with("uuid(") {
            let id = text
                .get(i + 5..i + 41)
                .filter(|_| bytes.get(i + 41) == Some(&b')'))
                .filter(|s| {
                    s.char_indices()
                        .all(|(k, ch)| matches!(k, 8 | 13 | 18 | 23) == (ch == '-'))
                })
                .and_then(|s| hex_bytes::<16>(&s.replace('-', "")))
                .ok_or_else(|| {
                    err(
                        start,
                        "uuid(…) takes a UUID in its canonical form: 8-4-4-4-12 hexadecimal digits",
                    )
                })?;
            i += 42;
            Tok::Uuid(id)
        } else if let Some((colon, end)) = (c == b'T')
            .then(|| signed_digits(bytes, i + 1))
            .flatten()
            .filter(|&colon| bytes.get(colon) == Some(&b':'))
            .and_then(|colon| Some((colon, signed_digits(bytes, colon + 1)?)))
        {
            let literal = &text[i..end];
            let seconds = text[i + 1..colon].parse::<i64>().ok();
            let nanoseconds = text[colon + 1..end].parse::<i32>().ok();
            let (Some(seconds), Some(nanoseconds)) = (seconds, nanoseconds) else {
                return Err(err(start, &format!("timestamp {literal} is out of range")));
            };
            if Timestamp::new(seconds, nanoseconds).is_err() {
                return Err(err(
                    start,
                    &format!(
                        "invalid timestamp {literal}: the nanoseconds must be below one second \
                         and have the sign of the seconds"
                    ),
                ));
            }
            i = end;
            Tok::Timestamp(seconds, nanoseconds)
        } else if c == b'L'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)
            && signed_digits(bytes, i + 1).is_some_and(|colon| bytes.get(colon) == Some(&b':'))
        {
            return Err(err(
                start,
                "typed link literals (L<table>:<object>) are not supported; compare a link \
                 with an argument ($0)",
            ));
        } else if matches!(c, b'+' | b'-') && special_double(&text[i..word_end(i + 1)]).is_some() {
            let end = word_end(i + 1);
            let literal = &text[i..end];
            i = end;
            Tok::Float(
                special_double(literal).unwrap_or(f64::NAN),
                literal.to_owned(),
            )
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
                // Arithmetic: tokens only so that the parser can say it is not supported.
                b'+' | b'*' | b'/'
                    if !(c == b'+'
                        && bytes
                            .get(i + 1)
                            .is_some_and(|b| b.is_ascii_digit() || *b == b'.')) =>
                {
                    i += 1;
                    Tok::Op(match c {
                        b'+' => "+",
                        b'*' => "*",
                        _ => "/",
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
                b'[' => {
                    i += 1;
                    Tok::LBracket
                }
                b']' => {
                    i += 1;
                    Tok::RBracket
                }
                b',' => {
                    i += 1;
                    Tok::Comma
                }
                b'@' => {
                    let s = i + 1;
                    i = s;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    Tok::At(text[s..i].to_owned())
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
                // `$x`: a SUBQUERY variable in realm-core; a name here, so that SUBQUERY is
                // refused by name.
                b'$' if bytes
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') =>
                {
                    let s = i;
                    i += 1;
                    while i < bytes.len() && is_name_byte(bytes[i]) {
                        i += 1;
                    }
                    Tok::Ident(text[s..i].to_owned())
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
                                let ch = text[i + 1..].chars().next().unwrap_or('\\');
                                s.push(ch);
                                i += 1 + ch.len_utf8();
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
                b'+' | b'-' | b'0'..=b'9' | b'.' => {
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
                    if is_date_literal(&bytes[s..]) {
                        return Err(err(
                            start,
                            "date literals (YYYY-MM-DD@HH:MM:SS) are not supported; write a \
                             timestamp as T<seconds>:<nanoseconds>",
                        ));
                    }
                    if let Ok(n) = t.parse::<i64>() {
                        Tok::Int(n)
                    } else if let Some(f) = t
                        .parse::<f64>()
                        .ok()
                        .filter(|_| t.bytes().any(|b| b.is_ascii_digit()))
                    {
                        Tok::Float(f, t.to_owned())
                    } else {
                        return Err(err(start, "expected a number"));
                    }
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                    // A property name (or a keyword). realm-core escapes a space, tab, CR or LF
                    // in a name as `\ `, `\t`, `\r`, `\n` (`SerialisationState::get_column_name`).
                    let mut name = String::new();
                    let mut from = i;
                    while i < bytes.len() {
                        if is_name_byte(bytes[i]) {
                            i += 1;
                        } else if bytes[i] == b'\\'
                            && matches!(bytes.get(i + 1), Some(b' ' | b't' | b'r' | b'n'))
                        {
                            name.push_str(&text[from..i]);
                            name.push(match bytes[i + 1] {
                                b't' => '\t',
                                b'r' => '\r',
                                b'n' => '\n',
                                _ => ' ',
                            });
                            i += 2;
                            from = i;
                        } else {
                            break;
                        }
                    }
                    name.push_str(&text[from..i]);
                    Tok::Ident(name)
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

/// A compiled query: SQL selecting `rowid, _pk` of matching rows, and its parameters.
pub(crate) struct Compiled {
    /// `SELECT o.rowid, o._pk ` and [`tail`](Self::tail): the row ids and primary keys.
    pub sql: String,
    /// From `FROM` on: the table (aliased `o`), the filter, the order and the limit, for
    /// selecting other columns of the matches.
    pub tail: String,
    pub params: Vec<Sql>,
    /// Where [`tail`](Self::tail)'s parts end, and which clauses the text gave.
    shape: Shape,
}

/// The parts of a [`Compiled::tail`], recorded when it is written (never read back from the
/// SQL text, where a quoted name could hold any words).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    /// Length in bytes of the tail's `FROM … WHERE …` part (the matches, unordered).
    matches: usize,
    /// Where the filter starts in it (after `WHERE `).
    filter: usize,
    /// Length in bytes of the `ORDER BY` terms that follow it (after `" ORDER BY "`).
    order: usize,
    /// The text had a `SORT(…)`.
    sorted: bool,
    /// The text had a `LIMIT(…)`.
    limited: bool,
    /// The filter reads another object table ([`Compiled::reads_other_objects`]).
    reads_other_objects: bool,
}

/// Where one of [`Compiled::params`] comes from: fixed by the text (a literal), or made from
/// an argument `$N` by a [`Conversion`].
#[derive(Clone, Debug, PartialEq)]
enum Param {
    Fixed(Sql),
    Arg(usize, Conversion),
}

/// How a bound parameter is made from a value (an argument `$N` or a literal).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Conversion {
    /// As stored in a column of this type ([`stored_as`]).
    StoredAs(PayloadType),
    /// For a comparison with a column of this type: a float or double as SQLite's REAL (an
    /// int against a float or double compares exactly in SQLite, as in Realm), anything else
    /// as stored.
    Compare(PayloadType),
    /// A string folded by `flags` (module `compare`; none for 0), as a BLOB of its UTF-8 bytes
    /// when `bytes` (for the byte-wise affix and part comparisons). Applied to anything but a
    /// string it gives NULL, which matches nothing; the compiler only binds strings this way.
    Text { flags: i64, bytes: bool },
}

impl Conversion {
    fn apply(self, v: &Val) -> Sql {
        match (self, v) {
            (Conversion::StoredAs(t), v) => stored_as(v, t).0,
            (Conversion::Compare(_), Val::Float(bits)) => {
                Sql::Real(f64::from(f32::from_bits(*bits)))
            }
            (Conversion::Compare(_), Val::Double(bits)) => Sql::Real(f64::from_bits(*bits)),
            (Conversion::Compare(t), v) => stored_as(v, t).0,
            (Conversion::Text { flags, bytes }, Val::String(s)) => {
                let s = if flags != 0 {
                    compare::fold(s, flags)
                } else {
                    s.clone()
                };
                match bytes {
                    true => Sql::Blob(s.into_bytes()),
                    false => Sql::Text(s),
                }
            }
            (Conversion::Text { .. }, _) => Sql::Null,
        }
    }
}

impl Compiled {
    /// The separator between [`matches`](Self::matches) and the `ORDER BY` clause in the tail.
    const ORDER_BY: &'static str = " ORDER BY ";

    /// Whether the query keeps only its first matches (`LIMIT`).
    pub(crate) fn limits(&self) -> bool {
        self.shape.limited
    }

    /// Whether the query sorts or limits (anything but the default order by row id): what a
    /// flexible sync subscription cannot carry, since the server decides membership only.
    /// (`DISTINCT` is refused by the compiler.)
    pub(crate) fn orders_or_limits(&self) -> bool {
        self.shape.sorted || self.shape.limited
    }

    /// The tail's `FROM <table> o WHERE <filter>`: every match, in no particular order.
    pub(crate) fn matches(&self) -> &str {
        &self.tail[..self.shape.matches]
    }

    /// The filter: an SQL condition on the queried table's row `o`.
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // read by the server's subscriptions
    pub(crate) fn filter(&self) -> &str {
        &self.tail[self.shape.filter..self.shape.matches]
    }

    /// Whether the filter reads objects of another table (or other objects of its own): a
    /// link followed (`link.name == $0`), a link compared (it matches only while its target
    /// exists) or a list of links counted (`@count` leaves out links to missing objects).
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // read by the server's subscriptions
    pub(crate) fn reads_other_objects(&self) -> bool {
        self.shape.reads_other_objects
    }

    /// The tail's `ORDER BY` terms: the `SORT` terms, then the row-order tie-break.
    #[cfg(test)]
    fn order(&self) -> &str {
        let from = self.shape.matches + Self::ORDER_BY.len();
        &self.tail[from..from + self.shape.order]
    }
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    at: usize,
    schemas: &'a Schemas,
    class: &'a str,
    args: &'a [Value],
    params: Vec<Sql>,
    /// For each of `params`: where it comes from ([`CompiledCache`] binds other arguments
    /// by them).
    sources: Vec<Param>,
    /// The columns of the queried table (`o`) the filter or a `SORT` reads (SQL names,
    /// unquoted: `_pk`, `p:<prop>`, `k:<prop>`): where a search index could serve the query.
    columns: Vec<String>,
    /// Whether the filter reads another object table: a link followed, or a link's target
    /// checked to exist (a change to another object can change whether an object matches).
    reads_other_objects: bool,
    /// Levels of `NOT` and parentheses open where the parser is ([`MAX_NESTING`]).
    depth: usize,
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
    /// A literal or parameter (None = null), with a number literal's text and, for a
    /// parameter `$N`, `N`.
    Value(Option<Val>, Option<String>, Option<usize>),
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

use crate::state::type_name;

/// A modifier as the query spells it (`""` for none).
fn modifier_text(flags: i64) -> &'static str {
    match flags {
        0 => "",
        FOLD_CASE => "[c]",
        FOLD_DIACRITICS => "[d]",
        _ => "[cd]",
    }
}

/// Most levels of `NOT` and parentheses a query may nest (realm-swift nests one level per
/// `&&` or `||` of a typed query: `((a || b) || c)`). A text that may nest more than
/// [`SHALLOW`] levels is parsed on a thread with a stack of [`DEEP_STACK`] bytes, so that a
/// peer's query cannot exhaust the stack of the thread compiling it.
pub(crate) const MAX_NESTING: usize = 1000;

/// Texts with at most this many `(`, `NOT` and `!` are parsed on the calling thread.
const SHALLOW: usize = 64;

/// Stack of the thread that parses a deeper text: a debug build takes about 3 KiB of stack
/// per level (measured by a thread of 2 MiB overflowing at 1,000 levels), a release build
/// less; only the pages touched are used.
const DEEP_STACK: usize = 32 << 20;

/// Most values a compiled query may bind: SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`
/// (<https://www.sqlite.org/limits.html>, item 9), past which it refuses the statement.
pub(crate) const MAX_PARAMS: usize = 32_766;

/// Most values a flexible sync subscription's query may bind: the server's membership
/// statements bind four of their own beside them (`server::file::flx`), and a Tandem client
/// refuses what the server would.
pub(crate) const MAX_SUBSCRIPTION_PARAMS: usize = MAX_PARAMS - 4;

/// Why a compiled query cannot be a flexible sync subscription that a Tandem server serves
/// ([`Unsubscribable::of`]): the one rule the server checks before it serves a set
/// (`server::file::flx`, QUERY_ERROR 226) and a Tandem client checks before it commits one
/// (`MutableSubscriptionSet::add`), where it refuses everything but a link path (which, as
/// for realm-core's client, only the server refuses: the server decides what it serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unsubscribable {
    /// `SORT`, `DISTINCT` or `LIMIT`: the server decides membership only (BaaS refused them
    /// too).
    Ordering,
    /// A filter that reads another object (a link path, a link compared, `@count` of links):
    /// a change to that object would move this one into or out of the view, which the server
    /// does not follow.
    LinkPath,
    /// More than [`MAX_SUBSCRIPTION_PARAMS`] values to bind (this many).
    TooManyValues(usize),
}

impl Unsubscribable {
    /// What `compiled` breaks of the rule, if anything (in the order above).
    pub(crate) fn of(compiled: &Compiled) -> Option<Self> {
        if compiled.orders_or_limits() {
            Some(Self::Ordering)
        } else if compiled.reads_other_objects() {
            Some(Self::LinkPath)
        } else {
            let n = compiled.params.len();
            (n > MAX_SUBSCRIPTION_PARAMS).then_some(Self::TooManyValues(n))
        }
    }
}

impl fmt::Display for Unsubscribable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ordering => f.write_str(
                "SORT, DISTINCT and LIMIT are not supported in subscriptions (the server \
                 decides membership only); sort the local results instead",
            ),
            Self::LinkPath => f.write_str(
                "link paths are not supported in subscriptions (a link followed, compared or \
                 counted: a change to the linked object would change the match); subscribe to \
                 the linked class instead",
            ),
            Self::TooManyValues(n) => write!(
                f,
                "the query compares {n} values; at most {MAX_SUBSCRIPTION_PARAMS} are \
                 supported in a subscription (the server binds four of its own beside them)"
            ),
        }
    }
}

/// Deepest SQL expression a filter may compile to (levels of `AND`/`OR`/`NOT`, counted by
/// [`Node::render`]): SQLite refuses an expression more than 1,000 levels deep
/// (<https://www.sqlite.org/limits.html>, `SQLITE_MAX_EXPR_DEPTH`), and a comparison and the
/// statement around the filter take some of those levels.
pub(crate) const MAX_SQL_DEPTH: usize = 800;

/// A parsed filter: a comparison (its SQL and depth), or terms joined by one operator.
enum Node {
    Leaf(String, usize),
    Chain(&'static str, Vec<Node>),
}

impl Node {
    fn leaf(sql: &str) -> Node {
        Node::Leaf(sql.to_owned(), 1)
    }

    /// `terms` joined by `op` (`AND` or `OR`), a term that is itself a chain of `op` (a group
    /// in parentheses) spliced in: the operators are associative in SQL's three-valued logic,
    /// and realm-swift writes `a || b || c` as `((a || b) || c)`.
    fn chain(op: &'static str, terms: Vec<Node>) -> Node {
        if terms.len() == 1 {
            return terms.into_iter().next().expect("one term");
        }
        let mut flat = Vec::with_capacity(terms.len());
        for term in terms {
            match term {
                Node::Chain(o, inner) if o == op => flat.extend(inner),
                other => flat.push(other),
            }
        }
        Node::Chain(op, flat)
    }

    /// The SQL and its depth. A chain is a balanced tree of parenthesized pairs, in order:
    /// 1,000 terms joined left to right are 1,000 levels deep, balanced 10.
    fn render(self) -> (String, usize) {
        match self {
            Node::Leaf(sql, depth) => (sql, depth),
            Node::Chain(op, terms) => {
                let rendered: Vec<(String, usize)> = terms.into_iter().map(Node::render).collect();
                balanced(op, &rendered)
            }
        }
    }
}

fn balanced(op: &str, terms: &[(String, usize)]) -> (String, usize) {
    match terms {
        [] => unreachable!("a chain has a first term"),
        [(sql, depth)] => (sql.clone(), *depth),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            let ((l, ld), (r, rd)) = (balanced(op, left), balanced(op, right));
            (format!("({l} {op} {r})"), ld.max(rd) + 1)
        }
    }
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].1
    }

    /// Whether the next tokens open clause `kw` (`SORT`, `DISTINCT`, `LIMIT`): the word, then
    /// `(`. The word alone is a property's name: realm-core's grammar takes these words as
    /// identifiers wherever a property may stand (`sort == 5 SORT(sort ASC)`).
    fn at_clause(&self, kw: &str) -> bool {
        is_kw(self.peek(), kw) && self.toks.get(self.at + 1).map(|t| &t.1) == Some(&Tok::LParen)
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

    fn predicate(&mut self) -> Result<Node, QueryError> {
        let mut terms = vec![self.and()?];
        while is_kw(self.peek(), "OR") || *self.peek() == Tok::Op("||") {
            self.next();
            terms.push(self.and()?);
        }
        Ok(Node::chain("OR", terms))
    }

    fn and(&mut self) -> Result<Node, QueryError> {
        let mut terms = vec![self.unary()?];
        while is_kw(self.peek(), "AND") || *self.peek() == Tok::Op("&&") {
            self.next();
            terms.push(self.unary()?);
        }
        Ok(Node::chain("AND", terms))
    }

    /// Enters one more level of `NOT` or parentheses; refuses the query past [`MAX_NESTING`]
    /// (the parser recurses once per level: a peer's query must not exhaust a thread's stack).
    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return self.fail(format!(
                "the query nests NOT and parentheses more than {MAX_NESTING} levels deep"
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Node, QueryError> {
        if is_kw(self.peek(), "NOT") || *self.peek() == Tok::Op("!") {
            self.nest()?;
            self.next();
            let (inner, depth) = self.unary()?.render();
            self.depth -= 1;
            // A comparison that cannot hold (a null operand, values of kinds that do not
            // compare) is NULL in SQL and false in Realm, whose NOT makes it true.
            return Ok(Node::Leaf(format!("(NOT coalesce({inner}, 0))"), depth + 2));
        }
        if *self.peek() == Tok::LParen {
            self.nest()?;
            self.next();
            let inner = self.predicate()?;
            self.depth -= 1;
            // realm-core's flexible sync serializes a subscription's ordering inside its
            // parentheses: `(owner == "a" SORT(title ASC))`.
            for clause in ["SORT", "DISTINCT", "LIMIT"] {
                if self.at_clause(clause) {
                    return self.fail(format!(
                        "{clause}(…) inside parentheses: SORT, DISTINCT and LIMIT may only end \
                         the whole query (flexible sync subscriptions take none of them)"
                    ));
                }
            }
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        if is_kw(self.peek(), "TRUEPREDICATE") {
            self.next();
            return Ok(Node::leaf("1"));
        }
        if is_kw(self.peek(), "FALSEPREDICATE") {
            self.next();
            return Ok(Node::leaf("0"));
        }
        self.comparison().map(|sql| Node::Leaf(sql, 1))
    }

    /// Binds `v` converted by `conversion`; `arg` is the argument `v` is (`$N`'s `N`), if any,
    /// so that a compiled query can be used again with other arguments ([`CompiledCache`]).
    fn bind_from(&mut self, v: &Val, conversion: Conversion, arg: Option<usize>) -> String {
        self.bind_converted(conversion.apply(v), conversion, arg)
    }

    /// [`bind_from`](Self::bind_from) of `sql`, which is already `conversion` applied to the
    /// value.
    fn bind_converted(&mut self, sql: Sql, conversion: Conversion, arg: Option<usize>) -> String {
        self.sources.push(match arg {
            Some(n) => Param::Arg(n, conversion),
            None => Param::Fixed(sql.clone()),
        });
        self.params.push(sql);
        format!("?{}", self.params.len())
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        let pos = self.pos();
        match self.next() {
            Tok::Int(n) => Ok(Operand::Value(Some(Val::Int(n)), Some(n.to_string()), None)),
            Tok::Float(f, text) => Ok(Operand::Value(
                Some(Val::Double(f.to_bits())),
                Some(text),
                None,
            )),
            Tok::Str(s) => Ok(Operand::Value(Some(Val::String(s)), None, None)),
            Tok::Param(n) => match self.args.get(n) {
                Some(v) => Ok(Operand::Value(model_to_val(v), None, Some(n))),
                None => Err(QueryError {
                    position: pos,
                    message: format!("parameter ${n} was not given ({} given)", self.args.len()),
                }),
            },
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => {
                Ok(Operand::Value(Some(Val::Bool(true)), None, None))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => {
                Ok(Operand::Value(Some(Val::Bool(false)), None, None))
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("nil") || s.eq_ignore_ascii_case("null") => {
                Ok(Operand::Value(None, None, None))
            }
            Tok::B64(bytes) => match String::from_utf8(bytes) {
                Ok(s) => Ok(Operand::Value(Some(Val::String(s)), None, None)),
                Err(_) => Err(QueryError {
                    position: pos,
                    message: "B64\"…\" string is not UTF-8 (binary content needs binary(B64\"…\"))"
                        .into(),
                }),
            },
            Tok::Timestamp(seconds, nanoseconds) => Ok(Operand::Value(
                Some(Val::Timestamp(seconds, nanoseconds)),
                None,
                None,
            )),
            Tok::ObjectId(id) => Ok(Operand::Value(Some(Val::ObjectId(id)), None, None)),
            Tok::Uuid(id) => Ok(Operand::Value(Some(Val::Uuid(id)), None, None)),
            Tok::Ident(s)
                if (s.eq_ignore_ascii_case("binary") || s.eq_ignore_ascii_case("bin"))
                    && *self.peek() == Tok::LParen =>
            {
                self.next();
                let content_pos = self.pos();
                let content = match self.next() {
                    Tok::Str(s) => s.into_bytes(),
                    Tok::B64(bytes) => bytes,
                    other => {
                        return Err(QueryError {
                            position: content_pos,
                            message: format!(
                                "binary(…) takes a string, \"…\" or B64\"…\", found {other:?}"
                            ),
                        })
                    }
                };
                self.expect(Tok::RParen, "')' after binary(…)'s string")?;
                Ok(Operand::Value(Some(Val::Binary(content)), None, None))
            }
            Tok::Ident(name) if !self.has_property(&name) => self.unsupported_word(pos, name),
            Tok::Ident(name) => self.keypath(pos, name),
            Tok::At(name) => Err(QueryError {
                position: pos,
                message: if name.eq_ignore_ascii_case("links") {
                    "backlinks (@links.Class.property) are not supported".to_owned()
                } else {
                    format!("@{name} is not supported at the start of a key path")
                },
            }),
            Tok::LBrace => Err(QueryError {
                position: pos,
                message: "a list {…} is only supported on the right of IN, == or BETWEEN".into(),
            }),
            Tok::Op(op @ ("+" | "*" | "/")) => Err(QueryError {
                position: pos,
                message: format!("arithmetic ({op}) is not supported"),
            }),
            other => Err(QueryError {
                position: pos,
                message: format!("expected a property or a value, found {other:?}"),
            }),
        }
    }

    /// Whether the class has a property (or primary key) called `name`.
    fn has_property(&self, name: &str) -> bool {
        let schema = &self.schemas[self.class];
        matches!(&schema.spec, TableSpec::TopLevel { pk_field, .. } if pk_field == name)
            || schema.columns.contains_key(name)
    }

    /// A word in operand position that is not a property of the class: `nan` / `inf` (a double,
    /// as in realm-core), a construct of realm-core's language this subset refuses by name, or
    /// an unknown property.
    fn unsupported_word(&mut self, pos: usize, name: String) -> Result<Operand, QueryError> {
        if let Some(d) = special_double(&name) {
            return Ok(Operand::Value(
                Some(Val::Double(d.to_bits())),
                Some(name),
                None,
            ));
        }
        let err = |message: String| {
            Err(QueryError {
                position: pos,
                message,
            })
        };
        let upper = name.to_ascii_uppercase();
        let next = self.peek().clone();
        match upper.as_str() {
            "ANY" | "ALL" | "NONE" | "SOME"
                if matches!(
                    next,
                    Tok::Ident(_) | Tok::At(_) | Tok::LBrace | Tok::Param(_)
                ) =>
            {
                err(format!(
                    "{upper} (a comparison over a list) is not supported; compare a list's @count"
                ))
            }
            "SUBQUERY" if next == Tok::LParen => err("SUBQUERY(…) is not supported".into()),
            "OBJ" if next == Tok::LParen => err(
                "link target literals obj(\"class\", key) are not supported; compare a link with \
                 an argument ($0)"
                    .into(),
            ),
            "GEOBOX" | "GEOPOLYGON" | "GEOCIRCLE" if next == Tok::LParen => {
                err(format!("{upper}(…) (geospatial queries) is not supported"))
            }
            _ if name.len() > 1
                && name.starts_with('O')
                && name[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                err(format!(
                    "object key literals ({name}) are not supported; compare a link with an \
                     argument ($0)"
                ))
            }
            _ => err(format!("{} has no property '{name}'", self.class)),
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
                self.columns.push("_pk".to_owned());
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
        if *self.peek() == Tok::LBracket {
            return Err(err(format!(
                "indexing a property ({name}[…]) is not supported"
            )));
        }
        if let Tok::At(agg) = self.peek().clone() {
            self.next();
            if !(agg.eq_ignore_ascii_case("count") || agg.eq_ignore_ascii_case("size")) {
                return Err(err(match agg.to_ascii_lowercase().as_str() {
                    "min" | "max" | "sum" | "avg" => {
                        format!("the aggregate @{agg} is not supported; only @count and @size are")
                    }
                    "links" => "backlinks (@links.Class.property) are not supported".to_owned(),
                    "type" | "keys" | "values" => {
                        format!("@{agg} is not supported; only @count and @size are")
                    }
                    _ => format!("unknown aggregate @{agg}; expected @count or @size"),
                }));
            }
            if column.collection == CollectionType::Single {
                return Err(err(format!(
                    "@{agg} needs a list, set or dictionary; '{name}' is single"
                )));
            }
            let table = collection_table(self.class, &name, column.collection);
            // Links to objects that do not exist are not counted in a list or set of links
            // (realm-core's LnkLst / LnkSet size); a dictionary counts its entries. Only an
            // element of the link kind is a link (a null element of a set is an empty BLOB, as
            // a link to the null key is).
            let resolved = match &column.link_target {
                Some(target) if crate::state::is_link_collection(self.schemas, column) => {
                    self.reads_other_objects = true;
                    format!(
                        " AND (c.k IS NOT {} OR EXISTS (SELECT 1 FROM {} t WHERE {}))",
                        PayloadType::Link.code(),
                        object_table(target),
                        link_matches("t._pk", "c.v")
                    )
                }
                _ => String::new(),
            };
            return Ok(Operand::Column {
                sql: format!("(SELECT COUNT(*) FROM {table} c WHERE c.owner = o.rowid{resolved})"),
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
            if matches!(self.peek(), Tok::Dot | Tok::At(_) | Tok::LBracket) {
                return self.fail(format!(
                    "{name}.{inner} is as deep as a key path goes here; only one level of link \
                     traversal is supported"
                ));
            }
            self.columns.push(format!("p:{name}"));
            self.reads_other_objects = true;
            return Ok(Operand::Column {
                sql: format!(
                    "(SELECT {inner_sql} FROM {} t WHERE {})",
                    object_table(&target),
                    target_matches(target_schema, &format!("o.{}", value_column(&name)))
                ),
                value_type: inner_type,
                kind: None,
            });
        }
        if column.collection != CollectionType::Single {
            return Err(err(format!("'{name}' is a collection; compare its @count")));
        }
        // A link to an object that does not exist reads as null (realm-core's Obj::get), so
        // `== nil` and `== $0` see the stored link only when its target exists. The stored link,
        // not the target's key: a link to the object whose key is null is an empty BLOB
        // (`codec`), not null.
        self.columns.push(format!("p:{name}"));
        if column.value_type == PayloadType::Null {
            self.columns.push(format!("k:{name}"));
        }
        let sql = match &column.link_target {
            Some(target) if column.value_type == PayloadType::Link => {
                let link = format!("o.{}", value_column(&name));
                self.reads_other_objects = true;
                let matches = match self.schemas.get(target) {
                    Some(target_schema) => target_matches(target_schema, &link),
                    None => link_matches("t._pk", &link),
                };
                format!(
                    "(SELECT {link} FROM {} t WHERE {matches})",
                    object_table(target),
                )
            }
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
                Val::Decimal(decimal_literal(&text).ok_or_else(|| QueryError {
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
    fn bind_value(
        &mut self,
        v: &Val,
        value_type: PayloadType,
        arg: Option<usize>,
    ) -> (String, i64) {
        let (sql, kind) = stored_as(v, value_type);
        (
            self.bind_converted(sql, Conversion::StoredAs(value_type), arg),
            kind,
        )
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
        arg: Option<usize>,
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
            let (p, k) = self.bind_value(v, *value_type, arg);
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
        let p = self.bind_from(v, Conversion::Compare(*value_type), arg);
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
        arg: Option<usize>,
        pos: usize,
    ) -> Result<String, QueryError> {
        let modifier = modifier_text(flags);
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
        let Some(v @ Val::String(_)) = value else {
            return Err(QueryError {
                position: pos,
                message: format!("{op}{modifier} needs a string value"),
            });
        };
        let col = &column.sql;
        let c = if flags != 0 {
            format!("tandem_fold({col}, {flags})")
        } else {
            col.clone()
        };
        let bytes = matches!(op, "BEGINSWITH" | "ENDSWITH" | "CONTAINS");
        let p = self.bind_from(&v, Conversion::Text { flags, bytes }, arg);
        // As bytes: SQLite's text functions stop at a NUL character, which a Realm string may
        // hold. A prefix, suffix or part of a UTF-8 string's bytes that is itself UTF-8 (the
        // bound string) is a prefix, suffix or part of its characters.
        // An empty needle matches every string; otherwise the affix is compared (SQLite's
        // `substr` of an empty BLOB is NULL, hence the `coalesce`). The column is read once.
        let (cb, pb) = (format!("CAST({c} AS BLOB)"), &p);
        let affix = |start: &str| {
            format!(
                "CASE WHEN length({pb}) = 0 THEN length({cb}) >= 0 ELSE \
                 coalesce(substr({cb}, {start}), x'') = {pb} END"
            )
        };
        let matched = match op {
            "BEGINSWITH" => affix(&format!("1, length({pb})")),
            "ENDSWITH" => affix(&format!("-length({pb})")),
            "CONTAINS" => format!("instr({cb}, {pb}) > 0"),
            "LIKE" => format!("tandem_like({c}, {p})"),
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
        (value, literal, arg): (Option<Val>, Option<String>, Option<usize>),
        pos: usize,
    ) -> Result<String, QueryError> {
        let string_op = matches!(op, "BEGINSWITH" | "ENDSWITH" | "CONTAINS" | "LIKE");
        if string_op || flags != 0 {
            return self.compare_string(column, op, flags, value, arg, pos);
        }
        let value = self.coerce(value, literal, column.value_type, pos)?;
        self.compare_value(column, op, &value, arg, pos)
    }

    fn comparison(&mut self) -> Result<String, QueryError> {
        let left = self.operand()?;
        let op_pos = self.pos();
        let op = match self.next() {
            Tok::Op(op) if matches!(op, "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") => {
                op.to_owned()
            }
            Tok::Ident(w)
                if ["BEGINSWITH", "ENDSWITH", "CONTAINS", "LIKE", "IN", "BETWEEN"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                w.to_ascii_uppercase()
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("TEXT") => {
                return Err(QueryError {
                    position: op_pos,
                    message: "TEXT (full-text search) is not supported".into(),
                })
            }
            Tok::Ident(w) if w.eq_ignore_ascii_case("GEOWITHIN") => {
                return Err(QueryError {
                    position: op_pos,
                    message: "GEOWITHIN (geospatial queries) is not supported".into(),
                })
            }
            Tok::Op(op @ ("+" | "*" | "/")) => {
                return Err(QueryError {
                    position: op_pos,
                    message: format!("arithmetic ({op}) is not supported"),
                })
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
        // `ANY {…}` is realm-core's explicit form of `{…}` (any element matches); ALL and NONE
        // are not supported.
        if let Tok::Ident(w) = self.peek() {
            let w = w.to_ascii_uppercase();
            if matches!(w.as_str(), "ANY" | "SOME" | "ALL" | "NONE")
                && self.toks.get(self.at + 1).map(|t| &t.1) == Some(&Tok::LBrace)
            {
                if matches!(w.as_str(), "ALL" | "NONE") {
                    return self.fail(format!("{w} {{…}} is not supported; use IN {{…}}"));
                }
                self.next();
            }
        }
        if matches!(op.as_str(), "IN" | "BETWEEN") || *self.peek() == Tok::LBrace {
            return self.list_comparison(left, &op, flags, op_pos);
        }
        let value_pos = self.pos();
        let right = self.operand()?;
        let (column, value, swapped) = match (left, right) {
            (
                Operand::Column {
                    sql,
                    value_type,
                    kind,
                },
                Operand::Value(v, literal, arg),
            ) => (
                ColumnRef::new(sql, value_type, kind),
                (v, literal, arg),
                false,
            ),
            (
                Operand::Value(v, literal, arg),
                Operand::Column {
                    sql,
                    value_type,
                    kind,
                },
            ) => (
                ColumnRef::new(sql, value_type, kind),
                (v, literal, arg),
                true,
            ),
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
        self.compare_one(&column, &op, flags, value, value_pos)
    }

    /// `property IN {…}` (also realm-core's `property == {…}` and `== ANY {…}`, for a mixed
    /// property or a link path), with `[c]`/`[d]`; and `property BETWEEN {low, high}`.
    fn list_comparison(
        &mut self,
        left: Operand,
        op: &str,
        flags: i64,
        op_pos: usize,
    ) -> Result<String, QueryError> {
        let between = op == "BETWEEN";
        if !matches!(op, "IN" | "==" | "BETWEEN") {
            return Err(QueryError {
                position: op_pos,
                message: format!("{op} does not take a list {{…}}; only IN, == and BETWEEN do"),
            });
        }
        if between && flags != 0 {
            return Err(QueryError {
                position: op_pos,
                message: format!("{} does not apply to BETWEEN", modifier_text(flags)),
            });
        }
        if *self.peek() != Tok::LBrace {
            return self.fail(format!(
                "expected '{{' after {op}: it takes a list of values {{…}} (a list property on \
                 its right is not supported), found {:?}",
                self.peek()
            ));
        }
        self.next();
        let Operand::Column {
            sql,
            value_type,
            kind,
        } = left
        else {
            return Err(QueryError {
                position: op_pos,
                message: "IN and BETWEEN need a property on their left".into(),
            });
        };
        let column = ColumnRef::new(sql, value_type, kind);
        let mut items = Vec::new();
        if *self.peek() == Tok::RBrace {
            self.next();
        } else {
            loop {
                let pos = self.pos();
                let Operand::Value(v, literal, arg) = self.operand()? else {
                    return Err(QueryError {
                        position: pos,
                        message: "IN and BETWEEN take values, not properties".into(),
                    });
                };
                items.push(((v, literal, arg), pos));
                match self.next() {
                    Tok::Comma => continue,
                    Tok::RBrace => break,
                    other => return self.fail(format!("expected ',' or '}}', found {other:?}")),
                }
            }
        }
        if between {
            let [(low, low_pos), (high, high_pos)]: [_; 2] =
                items.try_into().map_err(|_| QueryError {
                    position: op_pos,
                    message: "BETWEEN takes two values: {low, high}".into(),
                })?;
            let low = self.compare_one(&column, ">=", 0, low, low_pos)?;
            let high = self.compare_one(&column, "<=", 0, high, high_pos)?;
            return Ok(format!("({low} AND {high})"));
        }
        // A string property with `[c]`/`[d]`: folded once per row, not once per value.
        if flags != 0 && column.value_type == PayloadType::String && !items.is_empty() {
            let mut params = Vec::with_capacity(items.len());
            for ((value, _, arg), pos) in items {
                let Some(v @ Val::String(_)) = value else {
                    return Err(QueryError {
                        position: pos,
                        message: format!("=={} needs a string value", modifier_text(flags)),
                    });
                };
                let text = Conversion::Text {
                    flags,
                    bytes: false,
                };
                params.push(self.bind_from(&v, text, arg));
            }
            return Ok(format!(
                "(tandem_fold({}, {flags}) IN ({}))",
                column.sql,
                params.join(", ")
            ));
        }
        let mut any = Vec::new();
        for (value, pos) in items {
            any.push((self.compare_one(&column, "==", flags, value, pos)?, 1));
        }
        Ok(if any.is_empty() {
            "0".to_owned()
        } else {
            balanced("OR", &any).0
        })
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
        let (mut sorted, mut limited) = (false, false);
        loop {
            if self.at_clause("DISTINCT") {
                return self.fail(
                    "DISTINCT(…) is not supported; only SORT(…) and LIMIT(…) may follow the \
                     predicate",
                );
            }
            // Realm applies these clauses in the order written (a SORT after a LIMIT sorts
            // only the matches kept); Tandem applies one SORT, then one LIMIT, and refuses any
            // other sequence rather than answer it differently.
            if self.at_clause("SORT") && limited {
                return self.fail(
                    "SORT(…) after LIMIT(…) is not supported; write SORT(…) first: \
                     `... SORT(a ASC) LIMIT(10)`",
                );
            }
            if self.at_clause("SORT") && sorted {
                return self.fail(
                    "a second SORT(…) is not supported; list every property in one: \
                     `SORT(a ASC, b DESC)`",
                );
            }
            if self.at_clause("LIMIT") && limited {
                return self.fail("a second LIMIT(…) is not supported; write one");
            }
            if self.at_clause("SORT") {
                sorted = true;
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
            } else if self.at_clause("LIMIT") {
                limited = true;
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

/// A number literal read exactly as a decimal128, as realm-core's `Decimal128(text)` reads it
/// for a decimal property: also with a `+` sign (core prints a coefficient of more than 64
/// bits as `+<digits>E<exponent>`), and `nan` / `inf` (core's `NaN`, `Inf`).
fn decimal_literal(text: &str) -> Option<u128> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let sign = u128::from(negative) << 127;
    if body.eq_ignore_ascii_case("nan") {
        Some(sign | 0x7c00_0000_0000_0000_u128 << 64)
    } else if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        Some(sign | 0x7800_0000_0000_0000_u128 << 64)
    } else if body.starts_with(['+', '-']) {
        None
    } else {
        compare::parse_decimal(body).map(|bits| bits | sign)
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

/// Compiles `text` against `class`, for a file whose search indexes are not known (so any of
/// them may serve the filter: [`compile_with`]).
pub(crate) fn compile(
    schemas: &Schemas,
    class: &str,
    text: &str,
    args: &[Value],
) -> Result<Compiled, QueryError> {
    compile_traced(schemas, None, class, text, args).map(|(compiled, _)| compiled)
}

/// [`compile`] for a file with these search indexes: a query whose filter and `SORT` read no
/// column leading one lets SQLite read the table in row order, which is the results' order,
/// instead of sorting every match (`+o.rowid`, which keeps an index in use where one serves
/// the filter). The results are the same either way; only the plan differs.
pub(crate) fn compile_with(
    schemas: &Schemas,
    indexes: &Indexes,
    class: &str,
    text: &str,
    args: &[Value],
) -> Result<Compiled, QueryError> {
    compile_traced(schemas, Some(indexes), class, text, args).map(|(compiled, _)| compiled)
}

/// [`compile_with`] (`indexes` unknown: [`compile`]), and where each parameter comes from.
fn compile_traced(
    schemas: &Schemas,
    indexes: Option<&Indexes>,
    class: &str,
    text: &str,
    args: &[Value],
) -> Result<(Compiled, Vec<Param>), QueryError> {
    match schemas.get(class).map(|s| &s.spec) {
        Some(TableSpec::TopLevel { .. }) => {}
        _ => {
            return Err(QueryError {
                position: 0,
                message: format!("no top-level class {class}"),
            })
        }
    }
    let toks = tokenize(text)?;
    let nesting = toks
        .iter()
        .filter(|(_, t)| *t == Tok::LParen || *t == Tok::Op("!") || is_kw(t, "NOT"))
        .count();
    if nesting <= SHALLOW {
        return compile_tokens(schemas, indexes, class, toks, args);
    }
    std::thread::scope(|scope| {
        let parse = std::thread::Builder::new()
            .name("tandem-query".into())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, || {
                compile_tokens(schemas, indexes, class, toks, args)
            })
            .map_err(|e| QueryError {
                position: 0,
                message: format!("cannot start a thread to parse a deeply nested query: {e}"),
            })?;
        parse
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`compile_traced`] of the tokens of a text.
fn compile_tokens(
    schemas: &Schemas,
    indexes: Option<&Indexes>,
    class: &str,
    toks: Vec<(usize, Tok)>,
    args: &[Value],
) -> Result<(Compiled, Vec<Param>), QueryError> {
    let mut p = Parser {
        toks,
        at: 0,
        schemas,
        class,
        args,
        params: Vec::new(),
        sources: Vec::new(),
        columns: Vec::new(),
        reads_other_objects: false,
        depth: 0,
    };
    let starts_with_clause = p.at_clause("SORT")
        || p.at_clause("LIMIT")
        || p.at_clause("DISTINCT")
        || *p.peek() == Tok::End;
    let filter = if starts_with_clause {
        "1".to_owned()
    } else {
        let (filter, depth) = p.predicate()?.render();
        if depth > MAX_SQL_DEPTH {
            return Err(QueryError {
                position: 0,
                message: format!(
                    "the query's NOT, AND and OR nest {depth} levels deep; at most \
                     {MAX_SQL_DEPTH} are supported (SQLite's limit on an expression's depth)"
                ),
            });
        }
        filter
    };
    // The filter's own; a SORT's key path may follow a link too.
    let reads_other_objects = p.reads_other_objects;
    let (mut order, limit) = p.sort_and_limit()?;
    let sorted = !order.is_empty();
    // Ties keep row order (key order for a required int key, insertion order otherwise), so
    // results are stable. Where a search index may serve the filter, `+o.rowid` stops SQLite
    // from scanning the whole table in row order just to skip a sort, so that the index is
    // used. Where none can, the table is read whole anyway, and in row order it needs no sort
    // of the matches (a range matching 20,000 of 100,000 objects took 6.4 against 4.2 ms
    // counted, measured with SQLite 3.40).
    if !order.is_empty() {
        order.push_str(", ");
    }
    let table = format!("t:{class}");
    let served = |ix: &Indexes| p.columns.iter().any(|c| c == "_pk" || ix.leads(&table, c));
    order.push_str(if filter == "1" || indexes.is_some_and(|ix| !served(ix)) {
        "o.rowid ASC"
    } else {
        "+o.rowid ASC"
    });
    if *p.peek() != Tok::End {
        return p.fail(format!(
            "expected AND, OR, SORT, LIMIT or the end, found {:?}",
            p.peek()
        ));
    }
    if p.params.len() > MAX_PARAMS {
        return Err(QueryError {
            position: 0,
            message: format!(
                "the query compares {} values; at most {MAX_PARAMS} are supported (SQLite's \
                 limit on bound values)",
                p.params.len()
            ),
        });
    }
    let from = format!("FROM {} o WHERE ", object_table(class));
    let matches = format!("{from}{filter}");
    let shape = Shape {
        matches: matches.len(),
        filter: from.len(),
        reads_other_objects,
        order: order.len(),
        sorted,
        limited: !limit.is_empty(),
    };
    let tail = format!("{matches}{}{order}{limit}", Compiled::ORDER_BY);
    Ok((
        Compiled {
            sql: format!("SELECT o.rowid, o._pk {tail}"),
            tail,
            params: p.params,
            shape,
        },
        p.sources,
    ))
}

/// What in an argument can change the SQL a query compiles to: its kind (null is one) and,
/// for a float or a double, whether it is NaN. Two argument lists with the same signatures
/// compile a text to the same SQL with parameters made the same way (each parameter's source).
fn signature(v: &Value) -> u8 {
    let (kind, nan) = match v {
        Value::Null => (0, false),
        Value::Int(_) => (1, false),
        Value::Bool(_) => (2, false),
        Value::String(_) => (3, false),
        Value::Binary(_) => (4, false),
        Value::Timestamp(_) => (5, false),
        Value::Float(f) => (6, f.is_nan()),
        Value::Double(d) => (7, d.is_nan()),
        Value::Decimal(_) => (8, false),
        Value::ObjectId(_) => (9, false),
        Value::Uuid(_) => (10, false),
        Value::Link(_) => (11, false),
    };
    kind << 1 | u8::from(nan)
}

/// A query compiled once and bound again for other arguments of the same kinds. It keeps no
/// argument's value: only the parameters the text fixes, and where the others come from.
struct Kept {
    class: String,
    text: String,
    signatures: Vec<u8>,
    sql: String,
    tail: String,
    shape: Shape,
    params: Vec<Param>,
}

/// The queries a database compiled, for the schema they were compiled against: an app runs
/// the same query texts again and again with other arguments (a primary-key lookup's
/// `_id == $0`), and compiling the text was about a quarter of such a lookup (issue 18, goal
/// 2). A compilation is known by class, text and the arguments' [`signature`]s. At most
/// [`MAX_QUERIES`](Self::MAX_QUERIES) compilations are kept, of texts of at most
/// [`MAX_TEXT`](Self::MAX_TEXT) bytes with at most [`MAX_ARGS`](Self::MAX_ARGS) arguments
/// (anything larger is compiled every time); all are forgotten when it is full or when a read
/// transaction brings another schema. Debug builds compile every query afresh too and panic
/// if the two disagree.
#[derive(Default)]
pub(crate) struct CompiledCache(std::sync::Mutex<CacheState>);

#[derive(Default)]
struct CacheState {
    /// The schema the kept queries were compiled against (held, so that its address is not
    /// reused while it is compared).
    schemas: Option<std::sync::Arc<Schemas>>,
    kept: std::collections::HashMap<u64, std::sync::Arc<Kept>>,
    /// Compilations bound from the cache (for tests).
    hits: u64,
}

impl CacheState {
    /// Whether the kept compilations were made against `schemas` (the same `Arc`).
    fn is_for(&self, schemas: &std::sync::Arc<Schemas>) -> bool {
        self.schemas
            .as_ref()
            .is_some_and(|kept| std::sync::Arc::ptr_eq(kept, schemas))
    }
}

impl CompiledCache {
    /// Most compilations kept (one per class, text and kinds of arguments).
    pub(crate) const MAX_QUERIES: usize = 64;
    /// Longest query text kept, in bytes.
    pub(crate) const MAX_TEXT: usize = 1024;
    /// Most arguments of a kept query.
    pub(crate) const MAX_ARGS: usize = 64;

    /// [`compile`], from the kept compilation of `text` when there is one for these
    /// arguments' kinds.
    pub(crate) fn compile(
        &self,
        snapshot: &Snapshot,
        class: &str,
        text: &str,
        args: &[Value],
    ) -> Result<Compiled, QueryError> {
        let (schemas, indexes) = (&snapshot.schemas, &*snapshot.indexes);
        if text.len() > Self::MAX_TEXT || args.len() > Self::MAX_ARGS {
            return compile_with(schemas, indexes, class, text, args);
        }
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            class.hash(&mut h);
            text.hash(&mut h);
            for a in args {
                signature(a).hash(&mut h);
            }
            h.finish()
        };
        let kept = {
            let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if !state.is_for(schemas) {
                state.kept.clear();
                state.schemas = Some(std::sync::Arc::clone(schemas));
            }
            let kept = state
                .kept
                .get(&hash)
                .filter(|kept| kept.is(class, text, args))
                .cloned();
            if kept.is_some() {
                state.hits += 1;
            }
            kept
        };
        // Bound outside the lock: folding or copying a large argument holds no other reader.
        if let Some(kept) = kept {
            if let Some(compiled) = kept.bind(args) {
                #[cfg(debug_assertions)]
                match compile_traced(schemas, Some(indexes), class, text, args) {
                    Ok((fresh, sources)) => assert_eq!(
                        (
                            &fresh.sql,
                            &fresh.tail,
                            &fresh.shape,
                            &fresh.params,
                            &sources
                        ),
                        (
                            &compiled.sql,
                            &compiled.tail,
                            &compiled.shape,
                            &compiled.params,
                            &kept.params
                        ),
                        "a kept compilation of {text:?} on {class} disagrees with a fresh one"
                    ),
                    Err(e) => {
                        panic!("{text:?} on {class} was bound from the cache but fails afresh: {e}")
                    }
                }
                return Ok(compiled);
            }
        }
        let (compiled, sources) = compile_traced(schemas, Some(indexes), class, text, args)?;
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_for(schemas) {
            if state.kept.len() >= Self::MAX_QUERIES {
                state.kept.clear();
            }
            state.kept.insert(
                hash,
                std::sync::Arc::new(Kept {
                    class: class.to_owned(),
                    text: text.to_owned(),
                    signatures: args.iter().map(signature).collect(),
                    sql: compiled.sql.clone(),
                    tail: compiled.tail.clone(),
                    shape: compiled.shape,
                    params: sources,
                }),
            );
        }
        Ok(compiled)
    }
}

impl Kept {
    /// Whether this is the compilation of `text` on `class` for arguments of these kinds.
    fn is(&self, class: &str, text: &str, args: &[Value]) -> bool {
        self.class == class
            && self.text == text
            && self.signatures.len() == args.len()
            && self
                .signatures
                .iter()
                .zip(args)
                .all(|(s, a)| *s == signature(a))
    }

    /// This compilation with `args` bound (arguments of the kinds it was compiled for:
    /// [`is`](Self::is)); `None` if one it needs is missing or null, which those kinds rule out.
    fn bind(&self, args: &[Value]) -> Option<Compiled> {
        let mut params = Vec::with_capacity(self.params.len());
        for param in &self.params {
            params.push(match param {
                Param::Fixed(sql) => sql.clone(),
                Param::Arg(n, conversion) => conversion.apply(&model_to_val(args.get(*n)?)?),
            });
        }
        Some(Compiled {
            sql: self.sql.clone(),
            tail: self.tail.clone(),
            params,
            shape: self.shape,
        })
    }
}

/// `text` with every `$N` replaced by argument `N` written as a literal of the serialized
/// query language (the form realm-core sends in a flexible sync subscription): a string as
/// `B64"…"`, bytes as `binary(B64"…")`, a timestamp as `T<s>:<ns>`, `oid(…)`, `uuid(…)`, a
/// decimal by its digits, doubles in Rust's shortest round-trip form (`+nan`, `+inf`, `-inf`:
/// signed, so never read as a property of that name), `NULL`. A query sent to a server has no
/// separate arguments.
///
/// Errors: a `$N` without argument `N`, a link argument (the serialized language has no
/// portable link literal), a decimal NaN or infinity (no decimal literal for them), or text
/// that does not tokenize.
pub(crate) fn inline_arguments(text: &str, args: &[Value]) -> Result<String, QueryError> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, tok) in tokenize(text)? {
        let Tok::Param(n) = tok else { continue };
        let digits = text[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let Some(value) = args.get(n) else {
            return Err(QueryError {
                position: at,
                message: format!("${n} has no argument ({} given)", args.len()),
            });
        };
        out.push_str(&text[copied..at]);
        out.push_str(&literal(value).ok_or_else(|| QueryError {
            position: at,
            message: format!(
                "${n} is a link or a decimal NaN or infinity, which a serialized query cannot carry"
            ),
        })?);
        copied = at + 1 + digits;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// `value` as a literal of the serialized query language; `None` for a link and for a decimal
/// that is NaN, infinite or not canonical (a decimal literal is digits).
fn literal(value: &Value) -> Option<String> {
    let double = |d: f64| {
        // Signed, so that a property called `nan` or `inf` is never read instead.
        if d.is_nan() {
            "+nan".to_owned()
        } else if d.is_infinite() {
            if d > 0.0 { "+inf" } else { "-inf" }.to_owned()
        } else {
            // `{:?}` always has a fraction or exponent, so it reads back as a double.
            format!("{d:?}")
        }
    };
    Some(match value {
        Value::Null => "NULL".to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => format!("B64\"{}\"", STANDARD.encode(s)),
        Value::Binary(b) => format!("binary(B64\"{}\")", STANDARD.encode(b)),
        Value::Timestamp(t) => format!("T{}:{}", t.seconds(), t.nanoseconds()),
        Value::Float(f) => double(f64::from(*f)),
        Value::Double(d) => double(*d),
        // BID: the two bits after the sign both set mark NaN, infinity or the large-coefficient
        // form (never canonical).
        Value::Decimal(d) if (d.to_bits() >> 125) & 0b11 == 0b11 => return None,
        Value::Decimal(d) => d.to_string(),
        Value::ObjectId(id) => format!("oid({id})"),
        Value::Uuid(id) => format!("uuid({id})"),
        Value::Link(_) => return None,
    })
}

/// The SQL condition that row `t` of a link's target is the one `link` (a stored link column)
/// names: by primary key for a top-level target (`layout::link_matches`), by rowid for an
/// embedded one, whose owner's column holds the child's rowid (`docs/store.md`, "Layout").
fn target_matches(target: &crate::state::TableSchema, link: &str) -> String {
    match target.spec {
        TableSpec::Embedded => format!("t.rowid = {link}"),
        TableSpec::TopLevel { .. } => link_matches("t._pk", link),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::{ColumnSpec, TableSchema};

    /// Class `T` (int primary key `_id`) with a property of every kind the tests need, and `L`,
    /// the target of `T.link`.
    pub(super) fn schemas() -> Schemas {
        let column = |value_type, collection| ColumnSpec {
            value_type,
            link_target: None,
            nullable: true,
            collection,
            key_type: None,
        };
        let single = |value_type| column(value_type, CollectionType::Single);
        let top_level = |columns| TableSchema {
            spec: TableSpec::TopLevel {
                pk_field: "_id".into(),
                pk_type: PayloadType::Int,
                pk_nullable: false,
                asymmetric: false,
            },
            columns,
        };
        let mut t = BTreeMap::new();
        for (name, value_type) in [
            ("int", PayloadType::Int),
            ("bool", PayloadType::Bool),
            ("string", PayloadType::String),
            ("binary", PayloadType::Binary),
            ("timestamp", PayloadType::Timestamp),
            ("float", PayloadType::Float),
            ("double", PayloadType::Double),
            ("decimal", PayloadType::Decimal),
            ("oid", PayloadType::ObjectId),
            ("uuid", PayloadType::Uuid),
            ("mixed", PayloadType::Null),
            ("my field", PayloadType::String),
            ("with-dash", PayloadType::Int),
            ("Zähler", PayloadType::Int),
        ] {
            t.insert(name.to_owned(), single(value_type));
        }
        t.insert(
            "tags".into(),
            column(PayloadType::String, CollectionType::List),
        );
        t.insert(
            "link".into(),
            ColumnSpec {
                link_target: Some("L".into()),
                ..single(PayloadType::Link)
            },
        );
        let mut l = BTreeMap::new();
        l.insert("x".to_owned(), single(PayloadType::Int));
        Schemas::from([
            ("T".to_owned(), top_level(t)),
            ("L".to_owned(), top_level(l)),
        ])
    }

    fn compiled(text: &str) -> Compiled {
        compile(&schemas(), "T", text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn params(text: &str) -> Vec<Sql> {
        compiled(text).params
    }

    /// Asserts that `a` and `b` compile to the same SQL with the same parameters.
    fn same(a: &str, b: &str) {
        let (x, y) = (compiled(a), compiled(b));
        assert_eq!((&x.sql, &x.params), (&y.sql, &y.params), "{a}  vs  {b}");
    }

    /// The error `text` is refused with.
    fn refused(text: &str) -> QueryError {
        match compile(&schemas(), "T", text, &[]) {
            Ok(c) => panic!("{text} compiled to {}", c.sql),
            Err(e) => e,
        }
    }

    /// Asserts that `text` is refused with a message containing `says`.
    fn refused_saying(text: &str, says: &str) {
        let e = refused(text);
        assert!(e.message.contains(says), "{text}: {e} (wanted {says:?})");
    }

    #[test]
    fn inlined_arguments_are_one_literal_token_each() {
        use crate::model::{Decimal128, ObjectId, Uuid};
        let cases: Vec<(Value, &str)> = vec![
            (Value::Int(i64::MIN), "-9223372036854775808"),
            (Value::String("a'b\"c $0".into()), "B64\"YSdiImMgJDA=\""),
            (Value::Binary(vec![0, 255]), "binary(B64\"AP8=\")"),
            (Value::Double(f64::NAN), "+nan"),
            (Value::Double(f64::NEG_INFINITY), "-inf"),
            (Value::Float(0.5), "0.5"),
            (Value::Double(-0.0), "-0.0"),
            (Value::Timestamp(Timestamp::new(-1, -5).unwrap()), "T-1:-5"),
            (Value::Decimal("-1.25".parse().unwrap()), "-125E-2"),
            (
                Value::ObjectId(ObjectId([0xab; 12])),
                "oid(abababababababababababab)",
            ),
            (
                Value::Uuid(Uuid([1; 16])),
                "uuid(01010101-0101-0101-0101-010101010101)",
            ),
            (Value::Null, "NULL"),
            (Value::Bool(true), "true"),
        ];
        for (value, literal) in cases {
            let text = inline_arguments("x == $0", std::slice::from_ref(&value)).unwrap();
            assert_eq!(text, format!("x == {literal}"), "{value:?}");
            let toks = tokenize(&text).unwrap();
            if literal.starts_with("binary(") || literal == "NULL" || literal == "true" {
                // `binary ( B64"…" )` is read by the parser as one literal; `NULL` and `true`
                // are keywords, read before any property name.
                continue;
            }
            // `x`, `==`, the literal, end: never a name in the literal's place.
            assert_eq!(toks.len(), 4, "{value:?}: {toks:?}");
            assert!(
                !matches!(toks[2].1, Tok::Ident(_) | Tok::Param(_)),
                "{value:?}: {toks:?}"
            );
        }
        // `$0` inside a string literal is text, not a parameter.
        assert_eq!(inline_arguments("x == '$0'", &[]).unwrap(), "x == '$0'");
        let nan = Decimal128::from_bits(0x7C00_0000_0000_0000_u128 << 64);
        assert!(inline_arguments("x == $0", &[Value::Decimal(nan)]).is_err());
        assert!(inline_arguments("x == $1", &[Value::Int(1)]).is_err());
    }

    fn toks(text: &str) -> Vec<Tok> {
        tokenize(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| *t != Tok::End)
            .collect()
    }

    fn bound(v: Val, value_type: PayloadType) -> Sql {
        stored_as(&v, value_type).0
    }

    const OID: &str = "0123456789abcdefABCDEF01";
    const OID_BYTES: [u8; 12] = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xab, 0xcd, 0xef, 0x01,
    ];
    const UUID: &str = "3b241101-e2bb-4255-8caf-4136c566a962";
    const UUID_BYTES: [u8; 16] = [
        0x3b, 0x24, 0x11, 0x01, 0xe2, 0xbb, 0x42, 0x55, 0x8c, 0xaf, 0x41, 0x36, 0xc5, 0x66, 0xa9,
        0x62,
    ];

    #[test]
    fn tokenizes_realm_core_literals() {
        // `"A"` with its quotes, the form realm-core serializes a string with quotes in.
        assert_eq!(toks(r#"B64"IkEi""#), [Tok::B64(b"\"A\"".to_vec())]);
        assert_eq!(toks(r#"B64"""#), [Tok::B64(Vec::new())]);
        assert_eq!(toks("T200:0"), [Tok::Timestamp(200, 0)]);
        assert_eq!(toks("T-1:-500000000"), [Tok::Timestamp(-1, -500_000_000)]);
        assert_eq!(toks(&format!("oid({OID})")), [Tok::ObjectId(OID_BYTES)]);
        assert_eq!(
            toks(&format!("uuid({})", UUID.to_ascii_uppercase())),
            [Tok::Uuid(UUID_BYTES)]
        );
        assert_eq!(toks("+5 -7"), [Tok::Int(5), Tok::Int(-7)]);
        match &toks("3.0000000000000001e-05 +1E+3 -nan +inf -Infinity")[..] {
            [Tok::Float(a, _), Tok::Float(b, bt), Tok::Float(n, _), Tok::Float(i, _), Tok::Float(m, _)] =>
            {
                assert_eq!(
                    *a, 3e-5,
                    "max_digits10 prints 3e-5 as 3.0000000000000001e-05"
                );
                assert_eq!((*b, bt.as_str()), (1000.0, "+1E+3"));
                assert!(n.is_nan());
                assert_eq!((*i, *m), (f64::INFINITY, f64::NEG_INFINITY));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(toks("=< =>"), [Tok::Op("<="), Tok::Op(">=")]);
        // Property names as realm-core serializes them: escaped whitespace, `-`, non-ASCII.
        assert_eq!(
            toks(r"my\ field with-dash Zähler a\tb"),
            [
                Tok::Ident("my field".into()),
                Tok::Ident("with-dash".into()),
                Tok::Ident("Zähler".into()),
                Tok::Ident("a\tb".into()),
            ]
        );
        assert_eq!(
            toks("@links.L.x"),
            [
                Tok::At("links".into()),
                Tok::Dot,
                Tok::Ident("L".into()),
                Tok::Dot,
                Tok::Ident("x".into())
            ]
        );
        // A name that merely starts like a literal stays a name.
        assert_eq!(
            toks("T200 L1 oid uuid B64"),
            ["T200", "L1", "oid", "uuid", "B64"].map(|s| Tok::Ident(s.into()))
        );
        // An escaped character in a quoted string may be non-ASCII.
        assert_eq!(toks(r"'a\ü'"), [Tok::Str("aü".into())]);
    }

    #[test]
    fn malformed_literals_are_refused_by_name() {
        let says = |text: &str, what: &str| match tokenize(text) {
            Err(e) => assert!(e.message.contains(what), "{text}: {e}"),
            Ok(t) => panic!("{text}: {t:?}"),
        };
        says(r#"B64"!!""#, "invalid base64");
        says(r#"B64"IkEi"#, "unterminated B64");
        says("oid(0123)", "oid(…) takes an ObjectId");
        says(&format!("oid({OID}"), "oid(…) takes an ObjectId");
        says(
            "uuid(3b241101e2bb42558caf4136c566a962)",
            "uuid(…) takes a UUID",
        );
        says("T1:-5", "invalid timestamp T1:-5");
        says("T0:1000000000", "invalid timestamp");
        says("T99999999999999999999:0", "out of range");
        says("L1:2", "typed link literals");
        says("2020-01-01@12:00:00", "date literals");
        says("2020-01-01T12:00:00", "date literals");
    }

    #[test]
    fn realm_core_literals_bind_as_their_types() {
        assert_eq!(
            params(r#"string == B64"c2F5ICJoaSI=""#),
            [Sql::Text("say \"hi\"".into())]
        );
        assert_eq!(
            params(r#"string BEGINSWITH B64"YmFja1xzbGFzaA==""#),
            [Sql::Blob(b"back\\slash".to_vec())]
        );
        assert_eq!(
            params("timestamp > T-1:-500000000"),
            [bound(
                Val::Timestamp(-1, -500_000_000),
                PayloadType::Timestamp
            )]
        );
        assert_eq!(
            params(&format!("oid == oid({OID})")),
            [bound(Val::ObjectId(OID_BYTES), PayloadType::ObjectId)]
        );
        assert_eq!(
            params(&format!("uuid != uuid({UUID})")),
            [bound(Val::Uuid(UUID_BYTES), PayloadType::Uuid)]
        );
        assert_eq!(
            params(r#"binary == binary(B64"AP8=")"#),
            [bound(Val::Binary(vec![0, 0xff]), PayloadType::Binary)]
        );
        assert_eq!(
            params(r#"binary == bin("ab")"#),
            [bound(Val::Binary(b"ab".to_vec()), PayloadType::Binary)]
        );
        // max_digits10 float, read back as the float it was printed from.
        assert_eq!(
            params("float == 0.100000001"),
            [Sql::Real(f64::from(0.1f32))]
        );
        assert_eq!(
            params("double >= 3.0000000000000001e-05"),
            [Sql::Real(3e-05)]
        );
        assert_eq!(params("double > -inf"), [Sql::Real(f64::NEG_INFINITY)]);
        // Decimals exactly, including core's `+<digits>E<exp>` and NaN / Inf forms.
        let dec = |text: &str| {
            bound(
                Val::Decimal(compare::parse_decimal(text).unwrap()),
                PayloadType::Decimal,
            )
        };
        assert_eq!(
            params("decimal == +12345678901234567890123E-5"),
            [dec("12345678901234567890123E-5")]
        );
        assert_eq!(params("decimal < -1.5E-3"), [dec("-15E-4")]);
        assert_eq!(
            params("decimal == NaN"),
            [bound(
                Val::Decimal(0x7c00_0000_0000_0000_u128 << 64),
                PayloadType::Decimal
            )]
        );
        assert_eq!(
            params("decimal < -Inf"),
            [bound(
                Val::Decimal(0xf800_0000_0000_0000_u128 << 64),
                PayloadType::Decimal
            )]
        );
        assert_eq!(
            params("int == -9223372036854775808"),
            [Sql::Integer(i64::MIN)]
        );
        // The escaped and non-ASCII property names resolve.
        assert_eq!(params(r#"my\ field == "x""#), [Sql::Text("x".into())]);
        assert_eq!(params("with-dash == 2"), [Sql::Integer(2)]);
        assert_eq!(params("Zähler == 3"), [Sql::Integer(3)]);
    }

    #[test]
    fn realm_core_syntax_means_what_the_long_forms_mean() {
        same("int == 1 and bool == true", "int == 1 AND bool == true");
        same("int == 1 and bool == true", "int == 1 && bool == true");
        same("(int == 1 or int == 2)", "int == 1 OR int == 2");
        same("(int == 1 or int == 2)", "int == 1 || int == 2");
        same("!(int == 1)", "NOT (int == 1)");
        same("!(int == 1)", "not int == 1");
        same("(bool == false )", "bool == false");
        same("int == NULL", "int == nil");
        same("int != NULL", "int != null");
        same("int =< 4", "int <= 4");
        same("int => 4", "int >= 4");
        same("int between {1, 5}", "int BETWEEN {1, 5}");
        same("int in {1, 5}", "int IN {1, 5}");
        same("string ==[c] \"a\"", "string ==[c] 'a'");
        same("string CONTAINS[c] \"a\"", "string contains[c] 'a'");
        same(r#"string == B64"IkEi""#, r#"string == '"A"'"#);
        same("double == -nan", "double == nan");
        same("truepredicate", "TRUEPREDICATE");
        // realm-core's IN on a mixed property or through a link is `== {…}`, or `== ANY {…}`.
        same(r#"mixed == {1, "a"}"#, r#"mixed IN {1, "a"}"#);
        same(r#"mixed == ANY {1, "a"}"#, r#"mixed IN {1, "a"}"#);
        same("link.x == {1, 2}", "link.x IN {1, 2}");
        // A list with `[c]` on a string property folds the property once (`tests/store.rs`
        // checks it matches what the comparisons joined by OR match).
        same(r#"string IN[c] {"a", "b"}"#, r#"string ==[c] {"a", "b"}"#);
        assert!(compiled(r#"string IN[c] {"a", "b"}"#)
            .sql
            .contains(r#"(tandem_fold(o."p:string", 1) IN (?1, ?2))"#));
        same("int IN {}", "FALSEPREDICATE");
        same("TRUEPREDICATE SORT(link.x DESC)", "SORT(link.x DESC)");
        same(
            "TRUEPREDICATE SORT(int ASC, string DESC) LIMIT(5)",
            "SORT(int ASC, string DESC) LIMIT(5)",
        );
        // A property whose name is a word realm-core reads as a number stays a property.
        let mut s = schemas();
        let int = s["T"].columns["int"].clone();
        s.get_mut("T").unwrap().columns.insert("inf".into(), int);
        let c = compile(&s, "T", "inf == 1", &[]).unwrap();
        assert!(c.sql.contains(&value_column("inf")), "{}", c.sql);
        assert_eq!(c.params, [Sql::Integer(1)]);
    }

    #[test]
    fn unsupported_realm_constructs_are_refused_by_name() {
        refused_saying(
            "TRUEPREDICATE DISTINCT(int)",
            "DISTINCT(…) is not supported",
        );
        refused_saying("DISTINCT(int)", "DISTINCT(…) is not supported");
        refused_saying(
            "TRUEPREDICATE SORT(int ASC) DISTINCT(string)",
            "DISTINCT(…) is not supported",
        );
        refused_saying("@links.L.x.@count > 0", "backlinks (@links");
        refused_saying("@links.@count > 0", "backlinks (@links");
        refused_saying("link.@links.@count > 0", "backlinks (@links");
        refused_saying(r#"link == obj("class_L", 5)"#, "link target literals obj(");
        refused_saying("link == O5", "object key literals (O5)");
        refused_saying("link == L1:5", "typed link literals");
        refused_saying(
            "ANY tags == 'a'",
            "ANY (a comparison over a list) is not supported",
        );
        refused_saying("ALL tags == 'a'", "ALL (a comparison over a list)");
        refused_saying("NONE tags == 'a'", "NONE (a comparison over a list)");
        refused_saying("SOME tags == 'a'", "SOME (a comparison over a list)");
        refused_saying("int == ALL {1, 2}", "ALL {…} is not supported");
        refused_saying("int == NONE {1, 2}", "NONE {…} is not supported");
        refused_saying(
            "SUBQUERY(tags, $x, $x == 'a').@count > 0",
            "SUBQUERY(…) is not supported",
        );
        for agg in ["@min", "@max", "@sum", "@avg"] {
            refused_saying(
                &format!("tags.{agg} > 1"),
                &format!("the aggregate {agg} is not supported"),
            );
        }
        refused_saying("mixed.@type == 'int'", "@type is not supported");
        refused_saying("tags.@values == 'a'", "@values is not supported");
        refused_saying("int + 1 > 2", "arithmetic (+)");
        refused_saying("(int * 2) > 2", "arithmetic (*)");
        refused_saying("tags[0] == 'a'", "indexing a property (tags[…])");
        refused_saying("string TEXT 'a'", "TEXT (full-text search)");
        refused_saying("link.x.y == 1", "only one level of link traversal");
        refused_saying("int != {1, 2}", "!= does not take a list");
        refused_saying("int < {1, 2}", "< does not take a list");
        refused_saying("int BETWEEN[c] {1, 2}", "[c] does not apply to BETWEEN");
        refused_saying("int IN tags", "expected '{' after IN");
        refused_saying("{1, 2} == int", "a list {…} is only supported on the right");
        refused_saying(r#"string == B64"//4=""#, "is not UTF-8");
        refused_saying("binary == binary(5)", "binary(…) takes a string");
        refused_saying("decimal == 1E99999", "1E99999 is not a decimal128");
        // The position points at the construct.
        assert_eq!(refused("int == 1 and @links.L.x == 1").position, 13);
        assert_eq!(refused("TRUEPREDICATE DISTINCT(int)").position, 14);
    }

    /// The parts of a compiled tail and its clauses are what the compiler wrote, however the
    /// class and its properties are named (a name may hold SQL's words, and the parts are never
    /// found again in the text).
    #[test]
    fn a_compiled_tail_knows_its_parts() {
        let mut schemas = schemas();
        let odd = "x o WHERE y ORDER BY z LIMIT 1";
        let t = schemas.get_mut("T").unwrap();
        let string = t.columns["string"].clone();
        t.columns.insert(odd.to_owned(), string);
        let t = t.clone();
        schemas.insert(odd.to_owned(), t);
        let name = odd.replace(' ', "\\ ");
        for class in ["T", odd] {
            for (text, sorted, limited, reads_other_objects) in [
                ("int == 1".to_owned(), false, false, false),
                ("TRUEPREDICATE".to_owned(), false, false, false),
                ("SORT(int DESC)".to_owned(), true, false, false),
                ("int > 1 LIMIT(3)".to_owned(), false, true, false),
                (
                    format!("{name} == 'a' SORT({name} ASC) LIMIT(2)"),
                    true,
                    true,
                    false,
                ),
                (format!("{name} != 'a'"), false, false, false),
                ("link.x == 1".to_owned(), false, false, true),
                ("link == NULL SORT(int ASC)".to_owned(), true, false, true),
                ("tags.@count > 1".to_owned(), false, false, false),
            ] {
                let c = compile(&schemas, class, &text, &[])
                    .unwrap_or_else(|e| panic!("{text} on {class}: {e}"));
                let what = format!("{text} on {class}");
                assert_eq!(
                    (c.shape.sorted, c.limits(), c.reads_other_objects()),
                    (sorted, limited, reads_other_objects),
                    "{what}"
                );
                assert_eq!(c.orders_or_limits(), sorted || limited, "{what}");
                assert_eq!(
                    c.matches(),
                    format!("FROM {} o WHERE {}", object_table(class), c.filter()),
                    "{what}"
                );
                let limit = c.tail.rsplit_once(" LIMIT ").map(|(_, n)| n);
                let rebuilt = match (limited, limit) {
                    (true, Some(n)) => format!("{} ORDER BY {} LIMIT {n}", c.matches(), c.order()),
                    _ => format!("{} ORDER BY {}", c.matches(), c.order()),
                };
                assert_eq!(c.tail, rebuilt, "{what}");
                assert!(c.order().ends_with("o.rowid ASC"), "{what}");
                assert_eq!(c.sql, format!("SELECT o.rowid, o._pk {}", c.tail), "{what}");
            }
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use std::sync::Arc;

    use super::tests::schemas;
    use super::*;

    /// Where a search index may serve the filter the results are sorted by row id as an
    /// expression (`+o.rowid`, so that SQLite keeps the index); where none can, or where the
    /// indexes are not known, by row id itself (read in row order, nothing to sort).
    #[test]
    fn row_order_is_left_to_the_table_where_no_index_serves_the_filter() {
        let schemas = schemas();
        let indexes = Indexes::of(&[("t:T", "p:int"), ("t:T", "k:mixed"), ("t:T", "p:link")]);
        // The row-id term of the order (after any SORT's terms).
        let by_row = |text: &str, indexes: Option<&Indexes>| {
            let (compiled, _) = compile_traced(&schemas, indexes, "T", text, &[]).unwrap();
            compiled.order().rsplit(", ").next().unwrap().to_owned()
        };
        for (text, served) in [
            ("int > 1", true),
            ("string == 'x' AND int == 2", true),
            ("string == 'x' OR int == 2", true),
            ("_id == 3", true),
            ("mixed == 1", true),
            // Through a link: the stored link is read.
            ("link.x == 1", true),
            ("link == nil", true),
            ("string == 'x'", false),
            ("double >= 1.5", false),
            ("tags.@count > 1", false),
            // A sort reads the column too.
            ("string == 'x' SORT(int ASC)", true),
            ("int == 1 SORT(string ASC)", true),
            ("double == 1.5 SORT(string ASC)", false),
        ] {
            let expected = if served {
                "+o.rowid ASC"
            } else {
                "o.rowid ASC"
            };
            assert_eq!(by_row(text, Some(&indexes)), expected, "{text}");
            // Indexes unknown: any filter may be served by one.
            assert_eq!(by_row(text, None), "+o.rowid ASC", "{text}");
        }
        // No filter: row order always.
        for indexes in [Some(&indexes), None] {
            assert_eq!(by_row("TRUEPREDICATE", indexes), "o.rowid ASC");
        }
    }

    /// `schemas` as a read snapshot of a file without search indexes.
    fn snapshot(schemas: Schemas) -> Snapshot {
        Snapshot {
            schemas: Arc::new(schemas),
            indexes: Arc::new(Indexes::default()),
        }
    }
    use crate::model::{Decimal128, Link, ObjectId, PrimaryKey, Uuid};

    /// Every kind of argument, each as two values of the same signature (so the second is
    /// bound from the first's compilation): NaNs, infinities, negative zeros, empty strings and
    /// blobs, strings that `[c]` folds and `LIKE` escapes, links to another class and to the
    /// null key included.
    fn arguments() -> Vec<(Value, Value)> {
        let link = |class: &str, key| {
            Value::Link(Link {
                class: class.into(),
                key,
            })
        };
        let decimal = |n| Value::Decimal(Decimal128::from_parts(n, 0, false).unwrap());
        let decimal_nan = Value::Decimal(Decimal128::from_bits(0x7C00 << 112));
        vec![
            (Value::Null, Value::Null),
            (Value::Int(7), Value::Int(-3)),
            (Value::Bool(true), Value::Bool(false)),
            (
                Value::String("Ab[c]*".into()),
                Value::String("Straße".into()),
            ),
            (Value::String(String::new()), Value::String("?x".into())),
            (Value::Binary(vec![0, 1, 2]), Value::Binary(Vec::new())),
            (
                Value::Timestamp(Timestamp::new(5, 6).unwrap()),
                Value::Timestamp(Timestamp::new(-1, -5).unwrap()),
            ),
            (Value::Float(1.5), Value::Float(f32::INFINITY)),
            (Value::Float(-0.0), Value::Float(f32::MIN)),
            (Value::Float(f32::NAN), Value::Float(-f32::NAN)),
            (Value::Double(-2.25), Value::Double(f64::NEG_INFINITY)),
            (Value::Double(-0.0), Value::Double(1e300)),
            (Value::Double(f64::NAN), Value::Double(-f64::NAN)),
            (decimal(12), decimal(0)),
            (decimal_nan.clone(), decimal(5)),
            (decimal(7), decimal_nan),
            (
                Value::ObjectId(ObjectId([3; 12])),
                Value::ObjectId(ObjectId([0; 12])),
            ),
            (Value::Uuid(Uuid([4; 16])), Value::Uuid(Uuid([0; 16]))),
            (link("L", PrimaryKey::Int(9)), link("L", PrimaryKey::Null)),
            (
                link("T", PrimaryKey::String("k".into())),
                link("L", PrimaryKey::Int(-1)),
            ),
        ]
    }

    /// Texts in which an argument meets every kind of property and operator.
    const TEXTS: &[&str] = &[
        "_id == $0",
        "int > $0 AND int != $1",
        "string ==[c] $0",
        "string LIKE $0",
        "string BEGINSWITH[cd] $0 OR string CONTAINS $1",
        "double >= $0",
        "float < $0",
        "decimal == $0",
        "mixed == $0",
        "mixed != $1 SORT(int DESC) LIMIT(3)",
        "int IN {$0, 3, $1}",
        "mixed IN {$1, 'x', $0}",
        "double BETWEEN {$0, $1}",
        "timestamp <= $0",
        "binary == $0",
        "oid == $0 OR uuid == $1",
        "link == $0",
        "$0 < int",
        "$1 == $0",
    ];

    fn hits(cache: &CompiledCache) -> u64 {
        cache.0.lock().unwrap().hits
    }

    /// Every text with every pair of argument kinds, compiled through the cache with one pair
    /// of values and then bound from it with another pair of the same kinds: the second is a
    /// hit, and both are what a fresh compilation gives (the same SQL and parameters, or the
    /// same error).
    #[test]
    fn a_kept_compilation_binds_what_a_fresh_one_would() {
        let schemas = snapshot(schemas());
        let args = arguments();
        let (mut bound, mut refused) = (0, 0);
        for text in TEXTS {
            for (a1, a2) in &args {
                for (b1, b2) in &args {
                    let cache = CompiledCache::default();
                    let pairs = [[a1.clone(), b1.clone()], [a2.clone(), b2.clone()]];
                    for (round, pair) in pairs.into_iter().enumerate() {
                        let before = hits(&cache);
                        let fresh =
                            compile_with(&schemas.schemas, &schemas.indexes, "T", text, &pair);
                        let kept = cache.compile(&schemas, "T", text, &pair);
                        match (fresh, kept) {
                            (Ok(fresh), Ok(kept)) => {
                                assert_eq!(
                                    (&fresh.sql, &fresh.tail, &fresh.params),
                                    (&kept.sql, &kept.tail, &kept.params),
                                    "{text} with {pair:?}"
                                );
                                if round == 1 {
                                    assert_eq!(hits(&cache), before + 1, "{text} with {pair:?}");
                                    bound += 1;
                                }
                            }
                            (Err(fresh), Err(kept)) => {
                                assert_eq!(fresh, kept, "{text} with {pair:?}");
                                assert_eq!(hits(&cache), before, "{text} with {pair:?}");
                                refused += 1;
                            }
                            (fresh, kept) => panic!(
                                "{text} with {pair:?}: {:?} against {:?}",
                                fresh.map(|c| c.sql),
                                kept.map(|c| c.sql)
                            ),
                        }
                    }
                }
            }
        }
        assert!(
            bound > 1000 && refused > 1000,
            "{bound} bound, {refused} refused"
        );
    }

    /// Every text with every pair of arguments, one after the other through one cache: a
    /// compilation kept for some arguments is never bound for arguments it does not fit (a
    /// signature that told too little, a NaN taken for a number say, would give other SQL).
    #[test]
    fn arguments_of_other_kinds_are_never_bound_to_a_kept_compilation() {
        let schemas = snapshot(schemas());
        let args: Vec<Value> = arguments().into_iter().flat_map(|(a, b)| [a, b]).collect();
        let cache = CompiledCache::default();
        for text in TEXTS {
            for a in &args {
                for b in &args {
                    let pair = [a.clone(), b.clone()];
                    let fresh = compile_with(&schemas.schemas, &schemas.indexes, "T", text, &pair)
                        .map(|c| (c.sql, c.params));
                    let kept = cache
                        .compile(&schemas, "T", text, &pair)
                        .map(|c| (c.sql, c.params));
                    assert_eq!(fresh, kept, "{text} with {pair:?}");
                }
            }
        }
        assert!(hits(&cache) > 1000, "{} hits", hits(&cache));
    }

    /// What a kept compilation binds for an argument: the conversions, pinned.
    #[test]
    fn kept_compilations_bind_arguments_as_their_columns_store_them() {
        let schemas = snapshot(schemas());
        let cache = CompiledCache::default();
        let bind = |text: &str, first: Value, second: Value| {
            cache.compile(&schemas, "T", text, &[first]).unwrap();
            let before = hits(&cache);
            let params = cache
                .compile(&schemas, "T", text, &[second])
                .unwrap()
                .params;
            assert_eq!(hits(&cache), before + 1, "{text}");
            params
        };
        let text = |s: &str| Value::String(s.into());
        assert_eq!(
            bind("string LIKE $0", text("a"), text("[x]*")),
            vec![Sql::Text("[x]*".into())]
        );
        assert_eq!(
            bind("string ==[c] $0", text("a"), text("STRASSE")),
            vec![Sql::Text(compare::fold("STRASSE", FOLD_CASE))]
        );
        assert_eq!(
            bind("double > $0", Value::Float(2.0), Value::Float(1.5)),
            vec![Sql::Real(1.5)]
        );
        assert_eq!(
            bind("int == $0", Value::Int(1), Value::Int(-8)),
            vec![Sql::Integer(-8)]
        );
        let oid = ObjectId([7; 12]);
        assert_eq!(
            bind(
                "oid == $0",
                Value::ObjectId(ObjectId([1; 12])),
                Value::ObjectId(oid)
            ),
            vec![stored_as(&Val::ObjectId(oid.0), PayloadType::ObjectId).0]
        );
    }

    /// A query compiled with one value is kept and bound with the next: the cache holds one
    /// entry per text and kind of arguments, not per value.
    #[test]
    fn one_compilation_is_kept_per_text_and_kinds_of_arguments() {
        let schemas = snapshot(schemas());
        let cache = CompiledCache::default();
        let kept = |cache: &CompiledCache| cache.0.lock().unwrap().kept.len();
        for id in 0..10 {
            let c = cache
                .compile(&schemas, "T", "_id == $0", &[Value::Int(id)])
                .unwrap();
            assert_eq!(c.params, vec![Sql::Integer(id)]);
        }
        assert_eq!(kept(&cache), 1);
        // Null compiles to `IS NULL`, without a parameter: another entry.
        let c = cache
            .compile(&schemas, "T", "int == $0", &[Value::Null])
            .unwrap();
        assert!(
            c.params.is_empty() && c.sql.contains("IS NULL"),
            "{}",
            c.sql
        );
        let c = cache
            .compile(&schemas, "T", "int == $0", &[Value::Int(1)])
            .unwrap();
        assert_eq!(c.params, vec![Sql::Integer(1)]);
        assert_eq!(kept(&cache), 3);
        // A NaN compiles to a constant: another entry again.
        let nan = cache
            .compile(&schemas, "T", "double == $0", &[Value::Double(f64::NAN)])
            .unwrap();
        let one = cache
            .compile(&schemas, "T", "double == $0", &[Value::Double(1.0)])
            .unwrap();
        assert!(nan.params.is_empty() && one.params == vec![Sql::Real(1.0)]);
        assert_eq!(kept(&cache), 5);
    }

    /// The cache forgets everything when the schema is another one, when it is full, and never
    /// keeps a text over its limit.
    #[test]
    fn the_cache_is_bounded_and_follows_the_schema() {
        let cache = CompiledCache::default();
        let kept = |cache: &CompiledCache| cache.0.lock().unwrap().kept.len();
        let first = snapshot(schemas());
        for n in 0..CompiledCache::MAX_QUERIES {
            cache
                .compile(&first, "T", &format!("int == {n}"), &[])
                .unwrap();
        }
        assert_eq!(kept(&cache), CompiledCache::MAX_QUERIES);
        cache.compile(&first, "T", "int == -1", &[]).unwrap();
        assert_eq!(kept(&cache), 1, "full: forgotten, then the new one kept");

        // The same schema loaded again (after a change to the file's schema) is another one.
        let second = snapshot(schemas());
        cache.compile(&second, "T", "int == 1", &[]).unwrap();
        assert_eq!(kept(&cache), 1);
        assert!(Arc::ptr_eq(
            cache.0.lock().unwrap().schemas.as_ref().unwrap(),
            &second.schemas
        ));

        let long = format!(
            "int == 1{}",
            " OR int == 2".repeat(CompiledCache::MAX_TEXT / 10)
        );
        assert!(long.len() > CompiledCache::MAX_TEXT);
        cache.compile(&second, "T", &long, &[]).unwrap();
        assert_eq!(
            kept(&cache),
            1,
            "a text over the limit is compiled, not kept"
        );
    }
}
