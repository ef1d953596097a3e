//! Values an object can hold, and the identity types behind them.
//!
//! These are the owned, app-facing forms. The changeset module has its own wire forms
//! (interned strings, global keys) and converts to and from these.

use std::fmt;

/// A point in time: seconds since the Unix epoch plus a nanosecond part.
///
/// As in Realm, the nanosecond part carries the same sign as the seconds (or is zero) and its
/// magnitude is below one second, so every instant has exactly one representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    seconds: i64,
    nanoseconds: i32,
}

impl Timestamp {
    /// Builds a timestamp, refusing a nanosecond part of one second or more, or one whose sign
    /// disagrees with the seconds.
    ///
    /// ```
    /// use tandem::model::Timestamp;
    /// let t = Timestamp::new(1_700_000_000, 250_000_000).unwrap();
    /// assert_eq!(t.seconds(), 1_700_000_000);
    /// assert!(Timestamp::new(1, -5).is_err());
    /// ```
    pub fn new(seconds: i64, nanoseconds: i32) -> Result<Self, ValueError> {
        let in_range = nanoseconds.unsigned_abs() < 1_000_000_000;
        let signs_disagree = (seconds > 0 && nanoseconds < 0) || (seconds < 0 && nanoseconds > 0);
        if in_range && !signs_disagree {
            Ok(Timestamp {
                seconds,
                nanoseconds,
            })
        } else {
            Err(ValueError::InvalidTimestamp {
                seconds,
                nanoseconds: i64::from(nanoseconds),
            })
        }
    }

    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub fn seconds(self) -> i64 {
        self.seconds
    }

    /// The sub-second part in nanoseconds, with the sign of [`Timestamp::seconds`].
    pub fn nanoseconds(self) -> i32 {
        self.nanoseconds
    }
}

/// A 12-byte MongoDB-style object id, kept as its raw bytes.
///
/// Aligned to 4 bytes (its size stays 12): in an enum beside a one-byte tag it then starts at
/// offset 4 rather than 1, and the decoder's copies of primary keys and values need no loads
/// across bytes just written in parts (`benches/changeset.rs`, `docs/performance.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(align(4))]
pub struct ObjectId(pub [u8; 12]);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A 16-byte UUID in its canonical (big-endian, RFC 4122) byte order.
///
/// Aligned to 4 bytes (its size stays 16), for the reason given at [`ObjectId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(align(4))]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An IEEE 754-2008 decimal128 number in the binary integer decimal (BID) layout Realm uses.
///
/// The 128 bits are one sign bit, a 14-bit biased exponent and a 113-bit coefficient; special
/// values (NaN, infinities) live in the same bits and survive every conversion unchanged.
///
/// Kept as two 64-bit words (low word first) rather than a `u128`: a `u128` field would align
/// every payload, value and changeset instruction that can hold a decimal to 16 bytes, which
/// made each instruction 16 bytes larger.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal128 {
    words: [u64; 2],
}

impl fmt::Debug for Decimal128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decimal128")
            .field("bits", &self.to_bits())
            .finish()
    }
}

impl Decimal128 {
    /// Bias added to the exponent before it is stored in the 14 exponent bits.
    pub const EXPONENT_BIAS: i32 = 6176;
    /// Largest exponent of a number: 6111 (IEEE 754-2008, 3.5.2), whose biased field 12287 is
    /// the largest not starting with the bits `11`, which mark the other encoding, NaN and the
    /// infinities. Text beyond it is refused ([`FromStr`](std::str::FromStr)): stored, its bits
    /// would be another number to every reader, realm-core's included.
    pub const MAX_EXPONENT: i32 = 12287 - Self::EXPONENT_BIAS;
    /// Largest exponent field [`Decimal128::from_parts`] carries: beyond
    /// [`MAX_EXPONENT`](Self::MAX_EXPONENT) are the bits of NaN and the infinities, which a
    /// changeset carries as parts like any other decimal.
    const MAX_FIELD_EXPONENT: i32 = 0x3FFF - Self::EXPONENT_BIAS;
    /// Smallest exponent, after removing the bias.
    pub const MIN_EXPONENT: i32 = -Self::EXPONENT_BIAS;
    /// The coefficient occupies the low 113 bits.
    pub const COEFFICIENT_BITS: u32 = 113;

    const COEFFICIENT_MASK: u128 = (1u128 << Self::COEFFICIENT_BITS) - 1;

    /// Wraps raw BID bits (low word in the low 64 bits).
    pub fn from_bits(bits: u128) -> Self {
        Decimal128 {
            words: [bits as u64, (bits >> 64) as u64],
        }
    }

    /// The raw BID bits.
    pub fn to_bits(self) -> u128 {
        u128::from(self.words[0]) | (u128::from(self.words[1]) << 64)
    }

    /// Builds `(-1)^negative * coefficient * 10^exponent` from its parts, as Realm's changeset
    /// encoding transmits them.
    ///
    /// ```
    /// use tandem::model::Decimal128;
    /// let d = Decimal128::from_parts(12345, -2, false).unwrap(); // 123.45
    /// assert_eq!(d.parts(), (12345, -2, false));
    /// assert_eq!(d.to_string(), "12345E-2");
    /// ```
    pub fn from_parts(
        coefficient: u128,
        exponent: i32,
        negative: bool,
    ) -> Result<Self, ValueError> {
        if coefficient > Self::COEFFICIENT_MASK {
            return Err(ValueError::DecimalCoefficientTooLarge);
        }
        if !(Self::MIN_EXPONENT..=Self::MAX_FIELD_EXPONENT).contains(&exponent) {
            return Err(ValueError::DecimalExponentFieldOutOfRange { exponent });
        }
        let biased = (exponent + Self::EXPONENT_BIAS) as u128;
        let sign = u128::from(negative) << 127;
        Ok(Decimal128::from_bits(
            sign | (biased << Self::COEFFICIENT_BITS) | coefficient,
        ))
    }

    /// The `(coefficient, exponent, negative)` triple; the inverse of [`Decimal128::from_parts`].
    pub fn parts(self) -> (u128, i32, bool) {
        let bits = self.to_bits();
        let coefficient = bits & Self::COEFFICIENT_MASK;
        let biased = ((bits >> Self::COEFFICIENT_BITS) & 0x3FFF) as i32;
        let negative = bits >> 127 == 1;
        (coefficient, biased - Self::EXPONENT_BIAS, negative)
    }
}

impl fmt::Display for Decimal128 {
    /// Scientific form `[-]coefficientEexponent`, exact and unambiguous.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (coefficient, exponent, negative) = self.parts();
        let sign = if negative { "-" } else { "" };
        write!(f, "{sign}{coefficient}E{exponent}")
    }
}

impl std::str::FromStr for Decimal128 {
    type Err = ValueError;

    /// Parses `[-|+]digits[.digits][(e|E)[+|-]digits]` exactly, with no rounding: the
    /// inverse of `Display` (`12345E-2`) and the plain forms other languages print (`123.45`,
    /// `-0.5`, `1e3`). Fails with [`ValueError::InvalidDecimal`] on anything else, or when the
    /// value needs more than 113 coefficient bits or an exponent outside
    /// `MIN_EXPONENT..=MAX_EXPONENT` (-6176..=6111). An exponent beyond the range is brought
    /// into it exactly where the coefficient allows (`1e6112` is `10E6111`, `10e-6177` is
    /// `1E-6176`), as IEEE 754-2008 clamps; never by rounding.
    ///
    /// ```
    /// use tandem::model::Decimal128;
    /// let d: Decimal128 = "123.45".parse().unwrap();
    /// assert_eq!(d.parts(), (12345, -2, false));
    /// assert!("1.2.3".parse::<Decimal128>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ValueError::InvalidDecimal {
            text: text.chars().take(64).collect(),
        };
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (
                &rest[..i],
                rest[i + 1..].parse::<i32>().map_err(|_| invalid())?,
            ),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        // Leading zeros carry no digits; what is left must fit 113 bits (34 decimal digits).
        let digits: String = [int, frac].concat();
        let significant = digits.trim_start_matches('0');
        let coefficient = if significant.is_empty() {
            0
        } else {
            significant
                .parse::<u128>()
                .map_err(|_| ValueError::DecimalCoefficientTooLarge)?
        };
        let frac_len = i32::try_from(frac.len()).map_err(|_| invalid())?;
        let mut exponent = exponent.checked_sub(frac_len).ok_or_else(invalid)?;
        let mut coefficient = coefficient;
        // Into the range exactly: a larger coefficient for a smaller exponent, or fewer trailing
        // zeros for a larger one (zero is zero at any exponent).
        while exponent > Self::MAX_EXPONENT && coefficient != 0 {
            match coefficient.checked_mul(10) {
                Some(c) if c <= Self::COEFFICIENT_MASK => {
                    coefficient = c;
                    exponent -= 1;
                }
                _ => break,
            }
        }
        while exponent < Self::MIN_EXPONENT && coefficient % 10 == 0 {
            coefficient /= 10;
            exponent += 1;
        }
        if coefficient == 0 {
            exponent = exponent.clamp(Self::MIN_EXPONENT, Self::MAX_EXPONENT);
        }
        if !(Self::MIN_EXPONENT..=Self::MAX_EXPONENT).contains(&exponent) {
            return Err(ValueError::DecimalExponentOutOfRange { exponent });
        }
        Decimal128::from_parts(coefficient, exponent, negative)
    }
}

/// A primary key value: what makes an object the same object on every device.
///
/// Tandem supports the primary key types Realm Device Sync supported: integers, strings, object
/// ids and UUIDs, each optionally nullable (a nullable key admits one object whose key is null).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrimaryKey {
    /// The null key of a class whose primary key is nullable.
    Null,
    /// A 64-bit signed integer key.
    Int(i64),
    /// A UTF-8 string key.
    String(String),
    /// An object id key.
    ObjectId(ObjectId),
    /// A UUID key.
    Uuid(Uuid),
}

impl fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrimaryKey::Null => f.write_str("null"),
            PrimaryKey::Int(v) => write!(f, "{v}"),
            PrimaryKey::String(s) => write!(f, "{s:?}"),
            PrimaryKey::ObjectId(id) => write!(f, "ObjectId({id})"),
            PrimaryKey::Uuid(id) => write!(f, "UUID({id})"),
        }
    }
}

/// A reference to an object of a top-level class: its class name and primary key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    /// Name of the target class.
    pub class: String,
    /// Primary key of the target object.
    pub key: PrimaryKey,
}

/// One value of a property, or one element of a list, set or dictionary.
///
/// A property of type mixed holds any of these. Floating-point values compare by bit pattern,
/// so `NaN == NaN` holds here: replicas are compared value by value, and a value must equal
/// itself for two identical replicas to compare equal.
#[derive(Clone, Debug)]
pub enum Value {
    /// No value (a nullable property that is not set).
    Null,
    /// A 64-bit signed integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// Arbitrary bytes.
    Binary(Vec<u8>),
    /// A point in time.
    Timestamp(Timestamp),
    /// A 32-bit float.
    Float(f32),
    /// A 64-bit float.
    Double(f64),
    /// A decimal128 number.
    Decimal(Decimal128),
    /// A 12-byte object id.
    ObjectId(ObjectId),
    /// A UUID.
    Uuid(Uuid),
    /// A link to an object of a top-level class.
    Link(Link),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Int(a), Int(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (ObjectId(a), ObjectId(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            (Link(a), Link(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// A value that cannot be built: the message says which rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// The nanosecond part is one second or more, or its sign disagrees with the seconds.
    InvalidTimestamp {
        /// The seconds given.
        seconds: i64,
        /// The nanoseconds given.
        nanoseconds: i64,
    },
    /// A decimal128 coefficient needs more than 113 bits.
    DecimalCoefficientTooLarge,
    /// A number's decimal128 exponent is outside -6176..=6111 ([`Decimal128::MAX_EXPONENT`]).
    DecimalExponentOutOfRange {
        /// The exponent given.
        exponent: i32,
    },
    /// A decimal128's parts ([`Decimal128::from_parts`], as a changeset carries them) have an
    /// exponent its 14-bit field cannot hold: outside -6176..=10207.
    DecimalExponentFieldOutOfRange {
        /// The exponent given.
        exponent: i32,
    },
    /// Text that is not a decimal number (`[-|+]digits[.digits][e[-|+]digits]`).
    InvalidDecimal {
        /// The text given (its first 64 characters).
        text: String,
    },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::InvalidTimestamp {
                seconds,
                nanoseconds,
            } => write!(
                f,
                "invalid timestamp {seconds} s {nanoseconds} ns: nanoseconds must be below one \
                 second in magnitude and share the sign of the seconds"
            ),
            ValueError::DecimalCoefficientTooLarge => {
                f.write_str("decimal128 coefficient does not fit in 113 bits")
            }
            ValueError::DecimalExponentOutOfRange { exponent } => write!(
                f,
                "decimal128 exponent {exponent} is outside {}..={}",
                Decimal128::MIN_EXPONENT,
                Decimal128::MAX_EXPONENT
            ),
            ValueError::DecimalExponentFieldOutOfRange { exponent } => write!(
                f,
                "decimal128 exponent {exponent} is outside {}..={}",
                Decimal128::MIN_EXPONENT,
                Decimal128::MAX_FIELD_EXPONENT
            ),
            ValueError::InvalidDecimal { text } => write!(
                f,
                "{text:?} is not a decimal number ([-]digits[.digits][e[-]digits])"
            ),
        }
    }
}

impl std::error::Error for ValueError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_parses_exactly_and_round_trips() {
        let cases = [
            ("123.45", (12345, -2, false)),
            ("12345E-2", (12345, -2, false)),
            ("-0.5", (5, -1, true)),
            ("+1e3", (1, 3, false)),
            ("1.23E+5", (123, 3, false)),
            ("0", (0, 0, false)),
            ("-0", (0, 0, true)),
            (".5", (5, -1, false)),
            ("7.", (7, 0, false)),
            ("000000000000000000000000000000000000000042", (42, 0, false)),
        ];
        for (text, parts) in cases {
            let d: Decimal128 = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d.parts(), parts, "{text}");
            assert_eq!(d.to_string().parse::<Decimal128>().unwrap(), d, "{text}");
        }
        for bad in [
            "", "-", ".", "1.2.3", "1e", "e5", "abc", "1_000", " 1", "1e+-2", "NaN",
        ] {
            assert!(
                matches!(
                    bad.parse::<Decimal128>(),
                    Err(ValueError::InvalidDecimal { .. })
                ),
                "{bad:?}"
            );
        }
        // 35 significant digits need more than 113 bits; an exponent can leave the range.
        assert_eq!(
            "99999999999999999999999999999999999".parse::<Decimal128>(),
            Err(ValueError::DecimalCoefficientTooLarge)
        );
        assert!(matches!(
            "1e20000".parse::<Decimal128>(),
            Err(ValueError::DecimalExponentOutOfRange { .. })
        ));
    }

    /// Text beyond decimal128's exponents is refused, never stored as bits that read back as
    /// another number (exponents 6112..=10207 fit the 14-bit field but start with `11`); an
    /// exponent just outside is brought in exactly where the coefficient allows.
    #[test]
    fn decimal_text_stays_within_ieee_exponents() {
        let parts = |t: &str| t.parse::<Decimal128>().map(|d| d.parts());
        for bad in [
            "1e7000",
            "-1e7000",
            "1e6146",
            "1.5e10207",
            "1e-6177",
            "15e-6178",
        ] {
            assert!(
                matches!(
                    parts(bad),
                    Err(ValueError::DecimalExponentOutOfRange { .. })
                ),
                "{bad}: {:?}",
                parts(bad)
            );
        }
        assert_eq!(parts("1e6111"), Ok((1, 6111, false)));
        assert_eq!(parts("1e6112"), Ok((10, 6111, false)));
        assert_eq!(parts("-12e6120"), Ok((12_000_000_000, 6111, true)));
        assert_eq!(parts("10e-6177"), Ok((1, -6176, false)));
        assert_eq!(parts("0e9999"), Ok((0, 6111, false)));
        assert_eq!(parts("0e-9999"), Ok((0, -6176, false)));
        // Every accepted number's biased exponent is below 12288: its top bits are not `11`.
        for text in ["1e6111", "1e6112", "9e6144", "1e-6176"] {
            if let Ok(d) = text.parse::<Decimal128>() {
                assert!((d.to_bits() >> 113) & 0x3FFF < 12288, "{text}");
            }
        }
    }

    #[test]
    fn timestamp_rejects_mixed_signs_and_overflowing_nanoseconds() {
        assert!(Timestamp::new(0, -1).is_ok());
        assert!(Timestamp::new(-1, -999_999_999).is_ok());
        assert!(Timestamp::new(-1, 1).is_err());
        assert!(Timestamp::new(1, 1_000_000_000).is_err());
    }

    #[test]
    fn decimal_parts_round_trip_and_nan_bits_survive() {
        let d = Decimal128::from_parts(1, 0, true).unwrap();
        assert_eq!(d.parts(), (1, 0, true));
        assert_eq!(d.to_string(), "-1E0");
        let nan = Decimal128::from_bits(0x7c00_0000_0000_0000_0000_0000_0000_00aa);
        let (c, e, n) = nan.parts();
        assert_eq!(Decimal128::from_parts(c, e, n).unwrap(), nan);
        assert!(Decimal128::from_parts(1 << 113, 0, false).is_err());
        assert!(Decimal128::from_parts(0, 10208, false).is_err());
    }

    #[test]
    fn floats_compare_by_bits() {
        assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
        assert_ne!(Value::Double(0.0), Value::Double(-0.0));
        assert_ne!(Value::Int(1), Value::Double(1.0));
    }

    #[test]
    fn display_forms() {
        let u = Uuid([
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ]);
        assert_eq!(u.to_string(), "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(ObjectId([0xab; 12]).to_string(), "ab".repeat(12));
        assert_eq!(PrimaryKey::String("x".into()).to_string(), "\"x\"");
    }
}
