//! Realm's sign-bit variable-length integers.
//!
//! Non-final bytes carry 7 value bits (`0x80 | bits`), least significant group first. The final
//! byte carries 6 value bits and a sign flag `0x40`. A negative `v` is written as the magnitude
//! `-(v + 1)` with the sign flag set. Unsigned values use the same scheme with the flag clear.
//! This is not LEB128 and not zigzag.
//!
//! ```text
//! 0 -> 00    63 -> 3F    64 -> C0 00    128 -> 80 01    300 -> AC 02
//! -1 -> 40   -64 -> 7F   -65 -> C0 40
//! ```
//!
//! The decoder accepts only the shortest encoding of each value, so every accepted byte string
//! re-encodes to itself.

/// Most bytes a 64-bit value can take (9 groups of 7 bits, then 6 bits).
pub const MAX_VARINT64_LEN: usize = 10;
/// Most bytes a decimal128 coefficient (at most 113 bits) can take.
pub const MAX_VARINT113_LEN: usize = 17;

/// Most bytes any 128-bit value can take (18 groups of 7 bits, then 6 bits).
pub const MAX_VARINT128_LEN: usize = 19;

/// Writes an unsigned `value` of up to 128 bits (decimal128 coefficients) at the start of
/// `buf`; returns the number of bytes written (1 to [`MAX_VARINT128_LEN`]; at most
/// [`MAX_VARINT113_LEN`] for a coefficient of 113 bits).
///
/// # Panics
/// If `buf` is shorter than the encoding ([`MAX_VARINT128_LEN`] bytes are always enough).
#[inline]
pub fn put_u128(buf: &mut [u8], mut value: u128) -> usize {
    let mut n = 0;
    while value >> 6 != 0 {
        buf[n] = 0x80 | (value & 0x7F) as u8;
        value >>= 7;
        n += 1;
    }
    buf[n] = value as u8;
    n + 1
}

/// Writes `magnitude` (up to 64 bits) with the sign flag set or not at the start of `buf`;
/// returns the number of bytes written (1 to [`MAX_VARINT64_LEN`]).
///
/// # Panics
/// If `buf` is shorter than the encoding ([`MAX_VARINT64_LEN`] bytes are always enough).
#[inline(always)]
pub fn put_magnitude64(buf: &mut [u8], mut magnitude: u64, negative: bool) -> usize {
    let sign = if negative { 0x40 } else { 0 };
    // 64 bits: 6 in the last byte, 7 in each of at most 9 before it.
    let mut n = 0;
    while magnitude >> 6 != 0 {
        buf[n] = 0x80 | (magnitude & 0x7F) as u8;
        magnitude >>= 7;
        n += 1;
    }
    buf[n] = sign | magnitude as u8;
    n + 1
}

/// The magnitude and sign flag the scheme writes for a signed integer: `-(v + 1)` with the
/// flag for a negative `v`, `v` without it otherwise.
#[inline(always)]
pub fn signed_magnitude(value: i64) -> (u64, bool) {
    if value < 0 {
        // -(v + 1) never overflows: for i64::MIN it is i64::MAX.
        ((-(value + 1)) as u64, true)
    } else {
        (value as u64, false)
    }
}

/// [`put_magnitude64`] for a signed integer ([`signed_magnitude`]). Returns the number of bytes
/// written.
///
/// # Panics
/// As [`put_magnitude64`].
#[inline(always)]
pub fn put_i64(buf: &mut [u8], value: i64) -> usize {
    let (magnitude, negative) = signed_magnitude(value);
    put_magnitude64(buf, magnitude, negative)
}

/// Appends `magnitude` (up to 64 bits) with the sign flag set or not, gathered on the stack
/// and appended at once.
#[inline]
fn write_magnitude64(out: &mut Vec<u8>, magnitude: u64, negative: bool) {
    let mut bytes = [0u8; MAX_VARINT64_LEN];
    let n = put_magnitude64(&mut bytes, magnitude, negative);
    out.extend_from_slice(&bytes[..n]);
}

/// Appends a signed integer ([`signed_magnitude`]).
#[inline]
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    let (magnitude, negative) = signed_magnitude(value);
    write_magnitude64(out, magnitude, negative);
}

/// Appends an unsigned integer.
#[inline]
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    write_magnitude64(out, value, false);
}

/// Appends an unsigned integer of up to 128 bits (decimal128 coefficients): [`put_u128`].
pub fn write_u128(out: &mut Vec<u8>, value: u128) {
    let mut bytes = [0u8; MAX_VARINT128_LEN];
    let n = put_u128(&mut bytes, value);
    out.extend_from_slice(&bytes[..n]);
}

/// Number of bytes the scheme takes for `magnitude` (sign flag aside).
fn encoded_len(mut magnitude: u128) -> usize {
    let mut len = 1;
    while magnitude >> 6 != 0 {
        magnitude >>= 7;
        len += 1;
    }
    len
}

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended before the final byte.
    Truncated,
    /// More continuation bytes than the target type can use.
    TooLong,
    /// The value does not fit the target type (or is negative for an unsigned one).
    OutOfRange,
    /// A longer encoding than the value needs.
    NonCanonical,
}

/// A decoded varint before range checks: its magnitude, sign and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawVarint {
    /// Magnitude as written (for negatives, `-(v + 1)`).
    pub magnitude: u128,
    /// Sign flag of the final byte.
    pub negative: bool,
    /// Bytes consumed.
    pub len: usize,
}

/// Reads one varint of at most `max_len` bytes from the start of `input`.
pub fn read_raw(input: &[u8], max_len: usize) -> Result<RawVarint, VarintError> {
    let mut magnitude: u128 = 0;
    for (i, &byte) in input.iter().enumerate() {
        if i >= max_len {
            return Err(VarintError::TooLong);
        }
        let shift = 7 * i as u32;
        if byte & 0x80 == 0 {
            magnitude |= u128::from(byte & 0x3F) << shift;
            let len = i + 1;
            if encoded_len(magnitude) != len {
                return Err(VarintError::NonCanonical);
            }
            return Ok(RawVarint {
                magnitude,
                negative: byte & 0x40 != 0,
                len,
            });
        }
        magnitude |= u128::from(byte & 0x7F) << shift;
    }
    if input.len() >= max_len {
        Err(VarintError::TooLong)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Reads one varint of at most [`MAX_VARINT64_LEN`] bytes whose magnitude fits in 64 bits:
/// returns the magnitude, the sign flag and the bytes consumed. A canonical varint with a larger
/// magnitude is `OutOfRange`.
///
/// Same result as [`read_raw`] with `MAX_VARINT64_LEN` followed by a 64-bit range check, without
/// 128-bit arithmetic.
#[inline]
pub fn read_raw64(input: &[u8]) -> Result<(u64, bool, usize), VarintError> {
    match input.first() {
        // One byte: six value bits and the sign, always canonical.
        Some(&byte) if byte & 0x80 == 0 => Ok((u64::from(byte & 0x3F), byte & 0x40 != 0, 1)),
        _ => read_raw64_long(input),
    }
}

/// [`read_raw64`] for a varint of two bytes or more (or none).
fn read_raw64_long(input: &[u8]) -> Result<(u64, bool, usize), VarintError> {
    let mut magnitude: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(MAX_VARINT64_LEN) {
        let shift = 7 * i as u32;
        if byte & 0x80 == 0 {
            let bits = u64::from(byte & 0x3F);
            // Shortest form: the value needs more bits than the previous bytes could carry, so
            // either the final byte has value bits or the top bit of the previous group is set.
            if bits == 0 && i > 0 && input[i - 1] & 0x40 == 0 {
                return Err(VarintError::NonCanonical);
            }
            // The tenth byte sits at bit 63: only its lowest value bit fits in 64 bits.
            if i == MAX_VARINT64_LEN - 1 && bits > 1 {
                return Err(VarintError::OutOfRange);
            }
            magnitude |= bits << shift;
            return Ok((magnitude, byte & 0x40 != 0, i + 1));
        }
        if i == MAX_VARINT64_LEN - 1 {
            // A tenth byte that is not final.
            return Err(VarintError::TooLong);
        }
        // i <= 8 here, so the group ends at bit 62 at most.
        magnitude |= u64::from(byte & 0x7F) << shift;
    }
    // Fewer than MAX_VARINT64_LEN bytes, all continuation bytes.
    Err(VarintError::Truncated)
}

/// Reads a signed 64-bit integer; returns it and the bytes consumed.
#[inline]
pub fn read_i64(input: &[u8]) -> Result<(i64, usize), VarintError> {
    let (magnitude, negative, len) = read_raw64(input)?;
    let magnitude = i64::try_from(magnitude).map_err(|_| VarintError::OutOfRange)?;
    // For negatives the magnitude is -(v + 1), so v = -magnitude - 1, which cannot overflow.
    let value = if negative { -magnitude - 1 } else { magnitude };
    Ok((value, len))
}

/// Reads an unsigned integer no larger than `max`; returns it and the bytes consumed.
#[inline]
pub fn read_unsigned(input: &[u8], max: u64) -> Result<(u64, usize), VarintError> {
    let (magnitude, negative, len) = read_raw64(input)?;
    if negative || magnitude > max {
        return Err(VarintError::OutOfRange);
    }
    Ok((magnitude, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_i64(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        write_i64(&mut out, v);
        out
    }

    #[test]
    fn reference_examples() {
        let cases: [(i64, &[u8]); 8] = [
            (0, &[0x00]),
            (63, &[0x3F]),
            (64, &[0xC0, 0x00]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (-1, &[0x40]),
            (-64, &[0x7F]),
            (-65, &[0xC0, 0x40]),
        ];
        for (value, bytes) in cases {
            assert_eq!(enc_i64(value), bytes, "encoding {value}");
            assert_eq!(
                read_i64(bytes),
                Ok((value, bytes.len())),
                "decoding {value}"
            );
        }
    }

    #[test]
    fn extremes_take_ten_bytes_and_round_trip() {
        for v in [i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1] {
            let bytes = enc_i64(v);
            assert_eq!(bytes.len(), MAX_VARINT64_LEN);
            assert_eq!(read_i64(&bytes), Ok((v, bytes.len())));
        }
        let mut out = Vec::new();
        write_u64(&mut out, u64::MAX);
        assert_eq!(out.len(), MAX_VARINT64_LEN);
        assert_eq!(read_unsigned(&out, u64::MAX), Ok((u64::MAX, 10)));
        assert_eq!(read_i64(&out), Err(VarintError::OutOfRange));
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(read_i64(&[]), Err(VarintError::Truncated));
        assert_eq!(read_i64(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(read_i64(&[0x80; 11]), Err(VarintError::TooLong));
        assert_eq!(read_i64(&[0x80; 10]), Err(VarintError::TooLong));
        assert_eq!(read_i64(&[0x80, 0x00]), Err(VarintError::NonCanonical));
        assert_eq!(read_i64(&[0x80, 0x40]), Err(VarintError::NonCanonical));
        assert_eq!(
            read_unsigned(&[0x40], u64::MAX),
            Err(VarintError::OutOfRange)
        );
        assert_eq!(
            read_unsigned(&[0xC0, 0x00], 63),
            Err(VarintError::OutOfRange)
        );
        // 2^64 does not fit in 64 bits.
        let mut out = Vec::new();
        write_u128(&mut out, 1u128 << 64);
        assert_eq!(read_unsigned(&out, u64::MAX), Err(VarintError::OutOfRange));
    }

    /// The scheme written out byte by byte: the reference the writers are checked against.
    fn write_magnitude(out: &mut Vec<u8>, mut magnitude: u128, negative: bool) {
        while magnitude >> 6 != 0 {
            out.push(0x80 | (magnitude & 0x7F) as u8);
            magnitude >>= 7;
        }
        let sign = if negative { 0x40 } else { 0 };
        out.push(sign | magnitude as u8);
    }

    /// The 128-bit writer against the reference at every power of two, its neighbours and the
    /// extremes: a 113-bit coefficient takes at most `MAX_VARINT113_LEN` bytes, any value at
    /// most `MAX_VARINT128_LEN`.
    #[test]
    fn put_u128_matches_write_magnitude() {
        let mut values = vec![0u128, 1, u128::MAX, u128::MAX - 1];
        for bit in 0..128 {
            let p = 1u128 << bit;
            values.extend([p - 1, p, p + 1, p.wrapping_mul(3)]);
        }
        for v in values {
            let mut general = Vec::new();
            write_magnitude(&mut general, v, false);
            let mut buf = [0u8; MAX_VARINT128_LEN];
            let n = put_u128(&mut buf, v);
            assert_eq!(&buf[..n], &general[..], "{v}");
            let mut appended = Vec::new();
            write_u128(&mut appended, v);
            assert_eq!(appended, general, "{v}");
            if v < 1u128 << 113 {
                assert!(n <= MAX_VARINT113_LEN, "{v}: {n} bytes");
            }
        }
        assert_eq!(
            put_u128(&mut [0u8; MAX_VARINT128_LEN], u128::MAX),
            MAX_VARINT128_LEN
        );
    }

    /// The 64-bit writer against the general one, at every power of two, its neighbours and
    /// the extremes, both signs.
    #[test]
    fn write_magnitude64_matches_write_magnitude() {
        let mut values = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for bit in 0..64 {
            let p = 1u64 << bit;
            values.extend([p - 1, p, p + 1, p.wrapping_mul(3)]);
        }
        for v in values {
            for negative in [false, true] {
                let (mut fast, mut general) = (Vec::new(), Vec::new());
                write_magnitude64(&mut fast, v, negative);
                write_magnitude(&mut general, u128::from(v), negative);
                assert_eq!(fast, general, "{v} negative {negative}");
            }
        }
        for v in [
            i64::MIN,
            i64::MIN + 1,
            -65,
            -64,
            -63,
            -1,
            0,
            63,
            64,
            i64::MAX,
        ] {
            let mut general = Vec::new();
            if v < 0 {
                write_magnitude(&mut general, (-(v + 1)) as u128, true);
            } else {
                write_magnitude(&mut general, v as u128, false);
            }
            assert_eq!(enc_i64(v), general, "{v}");
        }
    }

    /// `read_raw64` agrees with `read_raw` plus a 64-bit range check: on every short input built
    /// from bytes that matter (continuation, sign and zero bits), on every encoded length, and on
    /// the ten- and eleven-byte forms.
    #[test]
    fn read_raw64_matches_read_raw() {
        let alphabet = [
            0x00, 0x01, 0x3F, 0x40, 0x41, 0x7F, 0x80, 0x81, 0xBF, 0xC0, 0xFF,
        ];
        let reference = |input: &[u8]| {
            read_raw(input, MAX_VARINT64_LEN).and_then(|raw| {
                u64::try_from(raw.magnitude)
                    .map(|m| (m, raw.negative, raw.len))
                    .map_err(|_| VarintError::OutOfRange)
            })
        };
        // Bare, and followed by padding bytes.
        let pads: [&[u8]; 4] = [&[], &[0x00; 8], &[0x80; 8], &[0xC0; 8]];
        let mut input = Vec::new();
        for len in 0..=4 {
            let mut digits = vec![0usize; len];
            loop {
                for pad in pads {
                    input.clear();
                    input.extend(digits.iter().map(|&d| alphabet[d]));
                    input.extend_from_slice(pad);
                    assert_eq!(read_raw64(&input), reference(&input), "{input:02X?}");
                }
                let Some(i) = digits.iter().rposition(|&d| d + 1 < alphabet.len()) else {
                    break;
                };
                digits[i] += 1;
                digits[i + 1..].fill(0);
            }
        }
        // Every encoded length, with and without padding: values around each power of two.
        for bits in 0..64 {
            for value in [(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1] {
                for negative in [false, true] {
                    let mut encoded = Vec::new();
                    write_magnitude(&mut encoded, u128::from(value), negative);
                    for pad in [&[][..], &[0x00; 9], &[0xFF; 9]] {
                        let mut input = encoded.clone();
                        input.extend_from_slice(pad);
                        assert_eq!(read_raw64(&input), Ok((value, negative, encoded.len())));
                        // The final byte made a continuation byte, then a final byte of zero
                        // value bits: one byte longer, often non-canonical.
                        let mut longer = encoded.clone();
                        let last = longer.len() - 1;
                        longer[last] |= 0x80;
                        longer.push(if negative { 0x40 } else { 0x00 });
                        longer.extend_from_slice(pad);
                        assert_eq!(read_raw64(&longer), reference(&longer), "{longer:02X?}");
                    }
                }
            }
        }
        // Long forms: nine continuation bytes, then each possible tenth and eleventh byte.
        for prefix in [0x80u8, 0xFF, 0xC0] {
            for last in 0..=255u8 {
                let mut input = vec![prefix; 9];
                input.push(last);
                assert_eq!(read_raw64(&input), reference(&input), "{input:02X?}");
                input.push(0x00);
                assert_eq!(read_raw64(&input), reference(&input), "{input:02X?}");
                input.truncate(9);
                assert_eq!(read_raw64(&input), reference(&input), "{input:02X?}");
            }
        }
    }

    #[test]
    fn every_two_byte_input_reads_as_read_raw_reads_it() {
        for first in 0..=255u8 {
            for last in 0..=255u8 {
                let input = [first, last];
                let reference = read_raw(&input, MAX_VARINT64_LEN)
                    .map(|raw| (raw.magnitude as u64, raw.negative, raw.len));
                assert_eq!(read_raw64(&input), reference, "{input:02X?}");
            }
        }
    }

    #[test]
    fn exhaustive_small_range_round_trips() {
        for v in -70_000i64..70_000 {
            let bytes = enc_i64(v);
            assert_eq!(read_i64(&bytes), Ok((v, bytes.len())));
        }
    }
}
