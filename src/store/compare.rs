//! Realm's comparison and sort semantics for query values, and the SQLite functions that
//! bring them into SQL.
//!
//! Rules (realm-core `Mixed::compare` in `src/realm/mixed.cpp`, `Decimal128::compare` in
//! `src/realm/decimal128.cpp`):
//! - Numbers (int, float, double, decimal128) compare by value across types. Int against
//!   float/double is exact; float against double widens the float; anything against a decimal
//!   is first converted to a decimal, a double rounded to 15 significant digits and a float to 7
//!   (`Decimal128(double, RoundTo)`), so `0.1` (double) equals `1E-1` (decimal).
//! - A NaN is below every other number and equal only to a NaN with the same bits; NaNs order
//!   by their raw bits (unsigned).
//! - Strings compare as UTF-8 bytes (code point order), binaries as bytes, timestamps by
//!   seconds then nanoseconds, object ids and UUIDs as bytes.
//! - Values of different kinds (a string and a number, say) are not comparable: no comparison
//!   between them holds. Two links are equal or not comparable (Realm orders them by internal
//!   keys, which mean nothing to an app). Sorting still needs an order, so it ranks kinds as Realm does: null,
//!   bool, numbers, string, binary, timestamp, object id, UUID, link.
//!
//! Registered on every connection ([`register`]):
//! - `tandem_cmp(a, kind_a, b, kind_b)`: -1, 0 or 1, or NULL when the two are not comparable
//!   (either is null, or their kinds differ and are not both numeric).
//! - `tandem_sort_key(v, kind)`: a BLOB whose byte order is the sort order above (NULL for
//!   null), for `ORDER BY`.
//! - `tandem_fold(text, flags)`: the text with simple Unicode case folding (flag 1) and/or
//!   diacritics removed (flag 2), for the `[c]`, `[d]` and `[cd]` string modifiers.
//! - `tandem_like(text, pattern)`: Realm's `LIKE` ([`like`]): 1 or 0, NULL for a null text.

use std::cmp::Ordering;

use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::apply::read_mixed_link;
use super::codec;
use crate::changeset::PayloadType;
use crate::state::Val;

/// `[c]`: fold case.
pub(crate) const FOLD_CASE: i64 = 1;
/// `[d]`: remove diacritics.
pub(crate) const FOLD_DIACRITICS: i64 = 2;

/// Registers `tandem_cmp`, `tandem_sort_key`, `tandem_fold` and `tandem_like` on `conn`.
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("tandem_cmp", 4, flags, |ctx| {
        let a = stored(ctx.get_raw(0), ctx.get::<Option<i64>>(1)?);
        let b = stored(ctx.get_raw(2), ctx.get::<Option<i64>>(3)?);
        Ok(match (a, b) {
            (Some(a), Some(b)) => compare(&a, &b).map(|o| o as i64),
            _ => None,
        })
    })?;
    conn.create_scalar_function("tandem_sort_key", 2, flags, |ctx| {
        Ok(stored(ctx.get_raw(0), ctx.get::<Option<i64>>(1)?).and_then(|v| sort_key(&v)))
    })?;
    conn.create_scalar_function("tandem_fold", 2, flags, |ctx| {
        let flags: i64 = ctx.get(1)?;
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => std::str::from_utf8(t).ok().map(|s| fold(s, flags)),
            _ => None,
        })
    })?;
    conn.create_scalar_function("tandem_like", 2, flags, |ctx| {
        // Bytes as stored: `like` reads UTF-8 without checking it again for every row.
        let text = |i| match ctx.get_raw(i) {
            ValueRef::Text(t) => Some(t),
            _ => None,
        };
        Ok(match (text(0), text(1)) {
            (Some(s), Some(pattern)) => Some(like(s, pattern)),
            _ => None,
        })
    })?;
    Ok(())
}

/// Whether the UTF-8 `text` matches `pat` as Realm's `LIKE` reads it (realm-core's `matchlike`): `*`
/// matches any run of characters, `?` exactly one character, every other character itself, with
/// no escape, over the whole string (NUL characters included). Like realm-core it works on the
/// UTF-8 bytes and backtracks to the last `*`, and at the end of the text it accepts only an
/// ended pattern or a pattern with exactly one `*` left: `"a" LIKE "a**"` does not match there
/// (though `"ab" LIKE "a**"` does), and neither does it here. No allocation unless the pattern
/// has a `*`.
pub(crate) fn like(text: &[u8], pat: &[u8]) -> bool {
    // For each `*` met: where its run ends in the text, and the pattern after it.
    let mut stars: Vec<(usize, usize)> = Vec::new();
    let (mut t, mut p) = (0, 0);
    loop {
        if t == text.len() {
            if p == pat.len() || (p + 1 == pat.len() && pat[p] == b'*') {
                return true;
            }
        } else if p < pat.len() {
            match pat[p] {
                b'*' => {
                    stars.push((t, p + 1));
                    p += 1;
                    continue;
                }
                b'?' => {
                    // One character: its lead byte and its continuation bytes.
                    t += 1;
                    while t < text.len() && text[t] & 0xc0 == 0x80 {
                        t += 1;
                    }
                    p += 1;
                    continue;
                }
                c if c == text[t] => {
                    t += 1;
                    p += 1;
                    continue;
                }
                _ => {}
            }
        }
        // No match from here: the last `*` takes one more byte, unless the text has ended, in
        // which case that `*` is given up for the one before it.
        if t == text.len() {
            stars.pop();
        }
        let Some(last) = stars.last_mut() else {
            return false;
        };
        last.0 += 1;
        (t, p) = *last;
    }
}

/// A stored value (as [`codec::encode`] or a mixed column writes it) and its kind code.
fn stored(raw: ValueRef<'_>, kind: Option<i64>) -> Option<Val> {
    let kind = PayloadType::from_code(kind?)?;
    match (kind, raw) {
        (_, ValueRef::Null) => Some(Val::Null),
        (PayloadType::Link, ValueRef::Blob(b)) => read_mixed_link(b),
        _ => codec::decode(raw, kind, None),
    }
}

/// Folds `s` for a case- and/or diacritic-insensitive comparison (`flags`: [`FOLD_CASE`],
/// [`FOLD_DIACRITICS`]). Case folding is Unicode simple case folding (one character to one,
/// `CaseFolding.txt` status C and S), so `?` in LIKE still matches one character; removing
/// diacritics decomposes (NFD) and drops combining marks, so `ü` becomes `u`.
pub(crate) fn fold(s: &str, flags: i64) -> String {
    let case = |c: char| {
        if flags & FOLD_CASE != 0 {
            unicode_case_mapping::case_folded(c)
                .and_then(|u| char::from_u32(u.get()))
                .unwrap_or(c)
        } else {
            c
        }
    };
    if flags & FOLD_DIACRITICS != 0 {
        use unicode_normalization::char::is_combining_mark;
        use unicode_normalization::UnicodeNormalization;
        s.nfd()
            .filter(|c| !is_combining_mark(*c))
            .map(case)
            .collect()
    } else {
        s.chars().map(case).collect()
    }
}

/// A number as Realm compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Num {
    /// A NaN, with the bits it is ordered by (a float's as the double it widens to).
    NaN(u128),
    /// Negative (true) or positive infinity.
    Inf(bool),
    /// Zero (of either sign).
    Zero,
    /// `(-1)^negative * 0.d1 d2 ... dn * 10^point`, with `d1` and `dn` non-zero.
    Finite {
        negative: bool,
        digits: Vec<u8>,
        point: i64,
    },
}

impl Num {
    /// `(-1)^negative * coefficient * 10^exponent`, `coefficient` in ASCII digits.
    fn from_digits(negative: bool, coefficient: &[u8], exponent: i64) -> Num {
        let digits: Vec<u8> = coefficient.iter().map(|b| b - b'0').collect();
        let Some(first) = digits.iter().position(|d| *d != 0) else {
            return Num::Zero;
        };
        let last = digits.iter().rposition(|d| *d != 0).unwrap_or(first);
        Num::Finite {
            negative,
            point: (digits.len() - first) as i64 + exponent,
            digits: digits[first..=last].to_vec(),
        }
    }

    fn from_int(i: i64) -> Num {
        Num::from_digits(i < 0, i.unsigned_abs().to_string().as_bytes(), 0)
    }

    /// A decimal128 from its BID bits. Non-canonical coefficients (above 10^34 - 1, or in the
    /// large-coefficient form) are zero, as IEEE 754-2008 says.
    fn from_decimal(bits: u128) -> Num {
        let negative = bits >> 127 == 1;
        match (bits >> 122) & 0x1F {
            0x1F => return Num::NaN(bits),
            0x1E => return Num::Inf(negative),
            _ => {}
        }
        if (bits >> 125) & 0b11 == 0b11 {
            return Num::Zero;
        }
        let (coefficient, exponent, negative) = crate::model::Decimal128::from_bits(bits).parts();
        if coefficient >= 10u128.pow(34) {
            return Num::Zero;
        }
        Num::from_digits(
            negative,
            coefficient.to_string().as_bytes(),
            i64::from(exponent),
        )
    }

    /// The exact value of a double.
    fn from_f64(d: f64) -> Num {
        if d.is_nan() {
            return Num::NaN(u128::from(d.to_bits()));
        }
        if d.is_infinite() {
            return Num::Inf(d < 0.0);
        }
        // A double has at most 767 significant decimal digits, so this is exact.
        Num::from_scientific(&format!("{:.767e}", d))
    }

    /// What realm-core's `Decimal128(double, RoundTo)` makes of `d`: the double rounded to 34
    /// significant digits (`binary64_to_bid128`), then to `digits` (15 for a double, 7 for a
    /// float), both to nearest with ties to even.
    fn realm_decimal_from_f64(d: f64, digits: usize) -> Num {
        if d.is_nan() {
            // binary64_to_bid128 makes a NaN a quiet decimal NaN (its sign kept).
            return Num::NaN((0x7c << 120) | (u128::from(d.is_sign_negative()) << 127));
        }
        if d.is_infinite() {
            return Num::from_f64(d);
        }
        Num::from_scientific(&format!("{:.767e}", d))
            .rounded(34)
            .rounded(digits)
    }

    /// Parses Rust's `{:e}` form (`-d.ddddde-N`).
    fn from_scientific(s: &str) -> Num {
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exponent) = s.split_once('e').unwrap_or((s, "0"));
        let exponent: i64 = exponent.parse().unwrap_or(0);
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut coefficient = whole.as_bytes().to_vec();
        coefficient.extend_from_slice(fraction.as_bytes());
        Num::from_digits(negative, &coefficient, exponent - fraction.len() as i64)
    }

    /// Rounded to `n` significant digits, to nearest, ties to even.
    fn rounded(self, n: usize) -> Num {
        let Num::Finite {
            negative,
            mut digits,
            mut point,
        } = self
        else {
            return self;
        };
        if digits.len() <= n {
            return Num::Finite {
                negative,
                digits,
                point,
            };
        }
        let rest = digits.split_off(n);
        let up = match rest[0].cmp(&5) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal if rest[1..].iter().any(|d| *d != 0) => true,
            Ordering::Equal => digits.last().is_some_and(|d| d % 2 == 1),
        };
        if up {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, 1);
                    point += 1;
                    break;
                }
                i -= 1;
                if digits[i] == 9 {
                    digits[i] = 0;
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
        let coefficient: Vec<u8> = digits.iter().map(|d| d + b'0').collect();
        Num::from_digits(negative, &coefficient, point - coefficient.len() as i64)
    }

    /// Realm's order: NaN first (by bits), then by value.
    fn cmp(&self, other: &Num) -> Ordering {
        self.key().cmp(&other.key())
    }

    /// Bytes whose order is [`Num::cmp`]'s.
    fn key(&self) -> Vec<u8> {
        match self {
            Num::NaN(bits) => {
                let mut k = vec![0];
                k.extend_from_slice(&bits.to_be_bytes());
                k
            }
            Num::Inf(true) => vec![1],
            Num::Finite { negative: true, .. } => {
                let mut k = vec![2];
                k.extend(self.magnitude_key().iter().map(|b| !b));
                k
            }
            Num::Zero => vec![3],
            Num::Finite { .. } => {
                let mut k = vec![4];
                k.extend(self.magnitude_key());
                k
            }
            Num::Inf(false) => vec![5],
        }
    }

    /// For a finite non-zero number: the position of the decimal point (sign bit flipped, so
    /// bytes order it), then the digits (each plus one) and a 0 terminator, so a shorter digit
    /// run (a prefix) orders first.
    fn magnitude_key(&self) -> Vec<u8> {
        let Num::Finite { digits, point, .. } = self else {
            return Vec::new();
        };
        let point = i32::try_from(*point).unwrap_or(if *point < 0 { i32::MIN } else { i32::MAX });
        let mut k = ((point as u32) ^ (1 << 31)).to_be_bytes().to_vec();
        k.extend(digits.iter().map(|d| d + 1));
        k.push(0);
        k
    }
}

fn is_numeric(v: &Val) -> bool {
    matches!(
        v,
        Val::Int(_) | Val::Float(_) | Val::Double(_) | Val::Decimal(_)
    )
}

/// Realm's `compare_float`: IEEE order for numbers, NaN below every number, NaNs by bits.
fn compare_doubles(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (true, true) => a.to_bits().cmp(&b.to_bits()),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

/// Realm's `compare_long_to_double`: exact.
fn compare_int_double(i: i64, d: f64) -> Ordering {
    if d.is_nan() {
        return Ordering::Greater;
    }
    const PRECISE: i64 = 1 << 53;
    if (-PRECISE..=PRECISE).contains(&i) {
        return compare_doubles(i as f64, d);
    }
    const BOUND: f64 = 9_223_372_036_854_775_808.0; // 2^63
    if d >= BOUND {
        return Ordering::Less;
    }
    if d < -BOUND {
        return Ordering::Greater;
    }
    // |i| > 2^53 here: a double with a fraction is smaller than that in magnitude, so
    // truncating it cannot make it equal to i or change the order.
    i.cmp(&(d as i64))
}

/// The decimal Realm converts a number to when it meets a decimal.
fn as_decimal(v: &Val) -> Num {
    match v {
        Val::Int(i) => Num::from_int(*i),
        Val::Float(bits) => Num::realm_decimal_from_f64(f64::from(f32::from_bits(*bits)), 7),
        Val::Double(bits) => Num::realm_decimal_from_f64(f64::from_bits(*bits), 15),
        Val::Decimal(bits) => Num::from_decimal(*bits),
        _ => Num::Zero,
    }
}

fn as_double(v: &Val) -> f64 {
    match v {
        Val::Float(bits) => f64::from(f32::from_bits(*bits)),
        Val::Double(bits) => f64::from_bits(*bits),
        _ => 0.0,
    }
}

/// Realm's `Mixed::compare` for two comparable values; `None` when they are not comparable
/// (either is null, or their kinds differ and are not both numeric).
pub(crate) fn compare(a: &Val, b: &Val) -> Option<Ordering> {
    use Val::*;
    Some(match (a, b) {
        (Null, _) | (_, Null) => return None,
        (Bool(x), Bool(y)) => x.cmp(y),
        (String(x), String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Binary(x), Binary(y)) => x.cmp(y),
        (Timestamp(s1, n1), Timestamp(s2, n2)) => (s1, n1).cmp(&(s2, n2)),
        (ObjectId(x), ObjectId(y)) => x.cmp(y),
        (Uuid(x), Uuid(y)) => x.cmp(y),
        // Realm orders links by internal table and object keys, which mean nothing to an
        // app: two links are equal or not comparable.
        (Link(..), Link(..)) if a == b => Ordering::Equal,
        (Int(x), Int(y)) => x.cmp(y),
        (Decimal(_), _) | (_, Decimal(_)) if is_numeric(a) && is_numeric(b) => {
            as_decimal(a).cmp(&as_decimal(b))
        }
        (Float(x), Float(y)) => {
            let (x, y) = (f32::from_bits(*x), f32::from_bits(*y));
            match (x.is_nan(), y.is_nan()) {
                (true, true) => x.to_bits().cmp(&y.to_bits()),
                _ => compare_doubles(f64::from(x), f64::from(y)),
            }
        }
        (Int(i), Float(_) | Double(_)) => compare_int_double(*i, as_double(b)),
        (Float(_) | Double(_), Int(i)) => compare_int_double(*i, as_double(a)).reverse(),
        (Float(_) | Double(_), Float(_) | Double(_)) => compare_doubles(as_double(a), as_double(b)),
        _ => return None,
    })
}

/// Realm's `sorting_rank` of a value's kind.
fn rank(v: &Val) -> u8 {
    match v {
        Val::Null => 0,
        Val::Bool(_) => 1,
        Val::Int(_) | Val::Float(_) | Val::Double(_) | Val::Decimal(_) => 2,
        Val::String(_) => 3,
        Val::Binary(_) => 4,
        Val::Timestamp(..) => 5,
        Val::ObjectId(_) => 6,
        Val::Uuid(_) => 7,
        Val::Link(..) => 8,
    }
}

/// Bytes whose order is the sort order: kinds by Realm's rank, then values within a kind;
/// numbers by exact value (so an int and a double of the same value tie). `None` for null,
/// which SQLite sorts first.
pub(crate) fn sort_key(v: &Val) -> Option<Vec<u8>> {
    let mut key = vec![rank(v)];
    match v {
        Val::Null => return None,
        Val::Bool(b) => key.push(u8::from(*b)),
        Val::Int(i) => key.extend(Num::from_int(*i).key()),
        Val::Float(_) | Val::Double(_) => key.extend(Num::from_f64(as_double(v)).key()),
        Val::Decimal(bits) => key.extend(Num::from_decimal(*bits).key()),
        Val::String(s) => key.extend_from_slice(s.as_bytes()),
        Val::Binary(b) => key.extend_from_slice(b),
        Val::Timestamp(s, n) => key.extend(codec::timestamp_bytes(*s, *n)),
        Val::ObjectId(id) => key.extend_from_slice(id),
        Val::Uuid(id) => key.extend_from_slice(id),
        Val::Link(class, k) => {
            key.extend_from_slice(class.as_bytes());
            key.push(0);
            key.extend(sort_key(&k.to_val().unwrap_or(Val::Null)).unwrap_or_default());
        }
    }
    Some(key)
}

/// Parses a decimal literal (`-12.5`, `10E-1`, `2.5e3`) exactly into decimal128 bits, or
/// `None` if it is not one or needs more than 34 digits.
pub(crate) fn parse_decimal(text: &str) -> Option<u128> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], body[at + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 34 {
        return None;
    }
    let coefficient: u128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().ok()?
    };
    let exponent = i32::try_from(exponent - fraction.len() as i64).ok()?;
    crate::model::Decimal128::from_parts(coefficient, exponent, negative)
        .ok()
        .map(|d| d.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Val {
        Val::Decimal(parse_decimal(text).unwrap())
    }

    /// Realm's `LIKE` by its definition, recursively (exponential, for short strings only).
    fn like_by_definition(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|skip| like_by_definition(&s[skip..], rest)),
            Some((&c, rest)) => s.split_first().is_some_and(|(&first, tail)| {
                (c == '?' || c == first) && like_by_definition(tail, rest)
            }),
        }
    }

    /// `like` agrees with the definition on every string and pattern of up to 5 and 4
    /// characters over `a`, `é`, NUL, `*` and `?` (as text: a literal `*` in the text matches
    /// only a `*` or `?` in the pattern) where the pattern has no `**`, and with realm-core's
    /// `matchlike` on the cases written out (its end-of-text rule among them).
    #[test]
    fn like_matches_realms_wildcards() {
        let alphabet = ['a', 'é', '\0', '*', '?'];
        let all = |n: usize| -> Vec<Vec<char>> {
            let mut out = vec![Vec::new()];
            for len in 1..=n {
                let mut word = vec![0usize; len];
                loop {
                    out.push(word.iter().map(|&i| alphabet[i]).collect());
                    let mut i = 0;
                    while i < len && word[i] == alphabet.len() - 1 {
                        word[i] = 0;
                        i += 1;
                    }
                    if i == len {
                        break;
                    }
                    word[i] += 1;
                }
            }
            out
        };
        let (texts, patterns) = (all(5), all(4));
        for t in &texts {
            let text: String = t.iter().collect();
            // realm-core's end-of-text rule differs from the definition for `**` (below).
            for p in patterns
                .iter()
                .filter(|p| !p.windows(2).any(|w| w == ['*', '*']))
            {
                let pattern: String = p.iter().collect();
                assert_eq!(
                    like(text.as_bytes(), pattern.as_bytes()),
                    like_by_definition(t, p),
                    "{text:?} LIKE {pattern:?}"
                );
            }
        }
        assert!(like(b"ab\0cd", b"*cd"));
        assert!(like(b"ab\0cd", b"ab?cd"));
        assert!(like("Zürich".as_bytes(), b"Z?rich"));
        assert!(like(b"", b"*"));
        assert!(!like(b"", b"?"));
        assert!(like(b"a[b]", b"a[b]"));
        assert!(!like(b"abc", b"*b"));
        // realm-core's end of text: an ended pattern or exactly one `*` left.
        assert!(!like(b"", b"**"));
        assert!(!like(b"a", b"a**"));
        assert!(!like("é".as_bytes(), b"?**"));
        assert!(like(b"ab", b"a**"));
        assert!(like(b"a", b"a*"));
        assert!(like(b"", b"*"));
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(compare(&dec("1E0"), &dec("10E-1")), Some(Ordering::Equal));
        assert_eq!(compare(&dec("25"), &dec("2E1")), Some(Ordering::Greater));
        assert_eq!(compare(&dec("-3"), &dec("5E-1")), Some(Ordering::Less));
        assert_eq!(compare(&dec("-3"), &dec("-25")), Some(Ordering::Greater));
        assert_eq!(compare(&dec("0"), &dec("-0E5")), Some(Ordering::Equal));
        assert_eq!(compare(&dec("10"), &Val::Int(10)), Some(Ordering::Equal));
        assert_eq!(
            compare(&dec("0.1"), &Val::Double(0.1f64.to_bits())),
            Some(Ordering::Equal),
            "a double meets a decimal rounded to 15 digits"
        );
        assert_eq!(
            compare(&Val::Int(0), &Val::Double(0.1f64.to_bits())),
            Some(Ordering::Less)
        );
        let nan = Val::Decimal(0x7c00_0000_0000_0000_0000_0000_0000_0000);
        assert_eq!(compare(&nan, &dec("-1E6000")), Some(Ordering::Less));
        assert_eq!(compare(&nan, &nan), Some(Ordering::Equal));
        assert_eq!(compare(&dec("1"), &Val::String("1".into())), None);
    }

    #[test]
    fn realm_rounding_of_doubles() {
        let r = |d: f64, n| Num::realm_decimal_from_f64(d, n);
        assert_eq!(r(0.1, 15), Num::from_scientific("1e-1"));
        assert_eq!(
            r(1.0 / 3.0, 15),
            Num::from_scientific("3.33333333333333e-1")
        );
        assert_eq!(r(2.0 / 3.0, 7), Num::from_scientific("6.666667e-1"));
        assert_eq!(
            r(1234567890123455.0, 15),
            Num::from_scientific("1.23456789012346e15")
        );
        assert_eq!(
            r(1234567890123445.0, 15),
            Num::from_scientific("1.23456789012344e15")
        );
        // The double nearest 1e23 is 99999999999999991611392.
        assert_eq!(r(1e23, 15), Num::from_scientific("1e23"));
    }

    #[test]
    fn sort_keys_follow_compare_within_a_kind() {
        let values = [
            Val::Double(f64::NAN.to_bits()),
            Val::Double(f64::NEG_INFINITY.to_bits()),
            dec("-25"),
            Val::Int(-3),
            dec("-5E-1"),
            Val::Double(0.0f64.to_bits()),
            dec("1E-1"),
            Val::Float(0.5f32.to_bits()),
            Val::Int(1),
            dec("12E-1"),
            Val::Int(i64::MAX),
            Val::Double(1e300f64.to_bits()),
            Val::Double(f64::INFINITY.to_bits()),
        ];
        for pair in values.windows(2) {
            assert!(sort_key(&pair[0]) < sort_key(&pair[1]), "{pair:?}");
            assert_eq!(
                compare(&pair[0], &pair[1]),
                Some(Ordering::Less),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn folding() {
        assert_eq!(fold("ZÜRICH", FOLD_CASE), "zürich");
        assert_eq!(fold("Éjszakai", FOLD_CASE), "éjszakai");
        assert_eq!(fold("Zürich", FOLD_DIACRITICS), "Zurich");
        assert_eq!(fold("ZÜRICH", FOLD_CASE | FOLD_DIACRITICS), "zurich");
        assert_eq!(fold("ΣΊΣΥΦΟΣ", FOLD_CASE), "σίσυφοσ");
        assert_eq!(
            fold("ẞ", FOLD_CASE),
            "ß",
            "simple folding keeps one character"
        );
    }
}
