//! Feeds arbitrary bytes to both sync message parsers: they must never panic, and whatever
//! they accept must encode and parse back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::protocol::{ClientMessage, Limits, ServerMessage};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = ClientMessage::parse(data, &limits) {
        assert_eq!(ClientMessage::parse(&m.encode(), &limits).as_ref(), Ok(&m));
    }
    if let Ok(m) = ServerMessage::parse(data, &limits) {
        assert_eq!(ServerMessage::parse(&m.encode(), &limits).as_ref(), Ok(&m));
    }
});
