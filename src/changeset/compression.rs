//! zlib for sync message bodies, with Realm's rules and a hard cap on inflation.
//!
//! A sender compresses a body at zlib level 1 only when it is larger than
//! [`COMPRESSION_THRESHOLD`] bytes and the compressed form is strictly smaller; the message
//! header then says "compressed" and carries both sizes. A receiver inflates into exactly the
//! declared size and no further, so a decompression bomb is an error, not an allocation.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Bodies of this many bytes or fewer are always sent uncompressed.
pub const COMPRESSION_THRESHOLD: usize = 1024;

/// Deflate cannot expand data by more than 1032:1; a declared size beyond this ratio (plus a
/// small constant for tiny streams) is a lie, refused before anything is allocated.
const MAX_DEFLATE_RATIO: usize = 1032;

/// A message body ready to send: its bytes and the header fields that describe them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// What goes on the wire: the zlib stream if `compressed`, else the body itself.
    pub data: Vec<u8>,
    /// The `is_body_compressed` header flag.
    pub compressed: bool,
    /// The `uncompressed_body_size` header field.
    pub uncompressed_size: usize,
}

impl Body {
    /// The `compressed_body_size` header field: the wire size if compressed, 0 if not.
    pub fn compressed_size(&self) -> usize {
        if self.compressed {
            self.data.len()
        } else {
            0
        }
    }
}

/// Prepares a body for sending, compressing it when that follows Realm's rule (larger than
/// 1 KiB, and strictly smaller once compressed).
///
/// ```
/// use tandem::changeset::compression::{compress_body, decompress_body};
/// let text = "hello sync ".repeat(200).into_bytes();
/// let body = compress_body(text.clone());
/// assert!(body.compressed && body.data.len() < text.len());
/// let back = decompress_body(&body.data, body.uncompressed_size, 1 << 20).unwrap();
/// assert_eq!(back, text);
/// assert!(!compress_body(b"tiny".to_vec()).compressed);
/// ```
pub fn compress_body(body: Vec<u8>) -> Body {
    let uncompressed_size = body.len();
    if uncompressed_size > COMPRESSION_THRESHOLD {
        let deflated = compress(&body);
        if deflated.len() < uncompressed_size {
            return Body {
                data: deflated,
                compressed: true,
                uncompressed_size,
            };
        }
    }
    Body {
        data: body,
        compressed: false,
        uncompressed_size,
    }
}

/// Compresses `data` into a zlib stream (header and Adler-32 included) at level 1.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::new(1), true);
    // Level 1 rarely expands; the margin covers incompressible input (stored blocks cost five
    // bytes per 64 KiB) plus the zlib header and trailer.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    loop {
        let consumed = compressor.total_in() as usize;
        let status = compressor
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
            .expect("deflate of an in-memory buffer cannot fail");
        match status {
            Status::StreamEnd => return out,
            // Out of room: grow and continue.
            Status::Ok | Status::BufError => out.reserve(out.capacity().max(64)),
        }
    }
}

/// Why a compressed body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompressionError {
    /// The declared size is above the receiver's limit.
    DeclaredSizeTooLarge {
        /// Declared uncompressed size.
        declared: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The declared size is larger than deflate can produce from this many bytes.
    ImpossibleRatio {
        /// Declared uncompressed size.
        declared: usize,
        /// Compressed bytes received.
        compressed: usize,
    },
    /// The stream inflates to more than the declared size.
    LargerThanDeclared {
        /// Declared uncompressed size.
        declared: usize,
    },
    /// The stream ends before producing the declared size.
    SmallerThanDeclared {
        /// Declared uncompressed size.
        declared: usize,
        /// Bytes the stream produced.
        actual: usize,
    },
    /// Bytes follow the end of the zlib stream.
    TrailingData {
        /// How many.
        extra: usize,
    },
    /// The stream is not valid zlib (bad header, bad block, bad checksum, or cut short).
    Corrupt(String),
}

impl fmt::Display for CompressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressionError::DeclaredSizeTooLarge { declared, limit } => write!(
                f,
                "declared uncompressed size {declared} is above the limit of {limit} bytes"
            ),
            CompressionError::ImpossibleRatio {
                declared,
                compressed,
            } => write!(
                f,
                "declared uncompressed size {declared} cannot come from {compressed} compressed \
                 bytes"
            ),
            CompressionError::LargerThanDeclared { declared } => {
                write!(
                    f,
                    "body inflates to more than its declared {declared} bytes"
                )
            }
            CompressionError::SmallerThanDeclared { declared, actual } => write!(
                f,
                "body inflates to {actual} bytes, not the declared {declared}"
            ),
            CompressionError::TrailingData { extra } => {
                write!(f, "{extra} bytes follow the end of the zlib stream")
            }
            CompressionError::Corrupt(why) => write!(f, "corrupt zlib stream: {why}"),
        }
    }
}

impl std::error::Error for CompressionError {}

/// Inflates a zlib body that declares `uncompressed_size`, refusing anything above `limit`
/// bytes and any stream that does not produce exactly the declared size.
///
/// The output buffer is the declared size, allocated only after the size is checked against
/// `limit` and against the largest output deflate can make from `data.len()` bytes.
pub fn decompress_body(
    data: &[u8],
    uncompressed_size: usize,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    if uncompressed_size > limit {
        return Err(CompressionError::DeclaredSizeTooLarge {
            declared: uncompressed_size,
            limit,
        });
    }
    let ceiling = data
        .len()
        .saturating_mul(MAX_DEFLATE_RATIO)
        .saturating_add(64);
    if uncompressed_size > ceiling {
        return Err(CompressionError::ImpossibleRatio {
            declared: uncompressed_size,
            compressed: data.len(),
        });
    }
    let mut out = vec![0u8; uncompressed_size];
    let mut inflater = Decompress::new(true);
    loop {
        let consumed = inflater.total_in() as usize;
        let produced = inflater.total_out() as usize;
        let status = if produced < uncompressed_size {
            inflater.decompress(
                &data[consumed..],
                &mut out[produced..],
                FlushDecompress::None,
            )
        } else {
            // The buffer is full: the stream must end here. Probe with one spare byte; if the
            // stream still has output, it is larger than declared.
            let mut spare = [0u8; 1];
            let status = inflater.decompress(&data[consumed..], &mut spare, FlushDecompress::None);
            if inflater.total_out() as usize > produced {
                return Err(CompressionError::LargerThanDeclared {
                    declared: uncompressed_size,
                });
            }
            status
        }
        .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
        let progressed =
            inflater.total_in() as usize > consumed || inflater.total_out() as usize > produced;
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError if progressed => continue,
            Status::Ok | Status::BufError => {
                return Err(CompressionError::Corrupt("stream is cut short".into()))
            }
        }
    }
    let actual = inflater.total_out() as usize;
    if actual != uncompressed_size {
        return Err(CompressionError::SmallerThanDeclared {
            declared: uncompressed_size,
            actual,
        });
    }
    let extra = data.len() - inflater.total_in() as usize;
    if extra != 0 {
        return Err(CompressionError::TrailingData { extra });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn threshold_is_strictly_above_one_kib() {
        assert!(!compress_body(vec![0; 1024]).compressed);
        let body = compress_body(vec![0; 1025]);
        assert!(body.compressed);
        assert_eq!(body.compressed_size(), body.data.len());
        assert_eq!(
            decompress_body(&body.data, 1025, 1025).unwrap(),
            vec![0; 1025]
        );
    }

    #[test]
    fn incompressible_bodies_go_as_they_are() {
        let noise = pseudo_random(4096);
        let body = compress_body(noise.clone());
        assert!(!body.compressed);
        assert_eq!(body.compressed_size(), 0);
        assert_eq!(body.data, noise);
    }

    #[test]
    fn bomb_is_refused_without_allocating_its_size() {
        // An attacker compresses as hard as deflate allows.
        let mut best = Compress::new(Compression::best(), true);
        let mut bomb = Vec::with_capacity(1 << 20);
        let zeros = vec![0u8; 50 << 20];
        let status = best
            .compress_vec(&zeros, &mut bomb, FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        assert!(bomb.len() < 100 << 10, "bomb is {} bytes", bomb.len());
        // Declared honestly, it is above the receiver's limit.
        assert_eq!(
            decompress_body(&bomb, 50 << 20, 16 << 20),
            Err(CompressionError::DeclaredSizeTooLarge {
                declared: 50 << 20,
                limit: 16 << 20
            })
        );
        // Declared small, inflation stops at the declared size.
        assert_eq!(
            decompress_body(&bomb, 4096, 16 << 20),
            Err(CompressionError::LargerThanDeclared { declared: 4096 })
        );
        // A huge declared size for a tiny stream is refused by the ratio check.
        assert!(matches!(
            decompress_body(&[0x78, 0x01], 1 << 30, usize::MAX),
            Err(CompressionError::ImpossibleRatio { .. })
        ));
    }

    #[test]
    fn size_mismatch_truncation_and_garbage_are_errors() {
        let text = b"abcabcabc".repeat(500);
        let z = compress(&text);
        assert_eq!(
            decompress_body(&z, text.len() + 1, usize::MAX),
            Err(CompressionError::SmallerThanDeclared {
                declared: text.len() + 1,
                actual: text.len()
            })
        );
        assert!(matches!(
            decompress_body(&z[..z.len() - 3], text.len(), usize::MAX),
            Err(CompressionError::Corrupt(_))
        ));
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"xyz");
        assert_eq!(
            decompress_body(&trailing, text.len(), usize::MAX),
            Err(CompressionError::TrailingData { extra: 3 })
        );
        assert!(matches!(
            decompress_body(b"not zlib at all", 10, usize::MAX),
            Err(CompressionError::Corrupt(_))
        ));
        let mut flipped = z;
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xFF;
        assert!(decompress_body(&flipped, text.len(), usize::MAX).is_err());
    }

    #[test]
    fn empty_body_round_trips() {
        let z = compress(b"");
        assert_eq!(decompress_body(&z, 0, 0).unwrap(), Vec::<u8>::new());
    }
}
