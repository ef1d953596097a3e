//! Feeds arbitrary bytes to the changeset decoder.
//!
//! Beyond "never panics", every input the decoder accepts must re-encode to bytes that decode
//! to the same changeset, and re-encoding those gives the same bytes again (the encoding of an
//! accepted changeset is a fixed point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::changeset::Changeset;

fuzz_target!(|data: &[u8]| {
    if let Ok(changeset) = Changeset::decode(data) {
        let bytes = changeset.encode();
        let again = Changeset::decode(&bytes).expect("re-encoded changeset must decode");
        if changeset.is_empty() {
            assert!(bytes.is_empty());
        } else {
            assert_eq!(again, changeset);
        }
        assert_eq!(again.encode(), bytes);
        // Rendering must not panic either (it resolves every intern index).
        let _ = again.to_string();
    }
});
