//! Feeds arbitrary bytes and declared sizes to the capped zlib inflater.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::changeset::compression::decompress_body;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // The first three bytes pick a declared size up to 16 MiB; the rest is the stream.
    let declared = (usize::from(data[0]) << 16) | (usize::from(data[1]) << 8) | usize::from(data[2]);
    if let Ok(out) = decompress_body(&data[3..], declared, 1 << 24) {
        assert_eq!(out.len(), declared);
    }
});
