//! Drives the OT peer harness (`tests/harness`) from fuzzer bytes: every byte is a choice
//! (which client, modify / upload / download, which operation, which values). A round that
//! does not converge, or where a transformed changeset does not apply, panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/harness/mod.rs"]
mod harness;

use harness::{ByteEntropy, Sim};

fuzz_target!(|data: &[u8]| {
    let mut entropy = ByteEntropy::new(data);
    let mut sim = Sim::new(3);
    if let Err(error) = sim.random_round(&mut entropy, 48) {
        let mut replay = Sim::new(3);
        replay.logging = true;
        let _ = replay.random_round(&mut ByteEntropy::new(data), 48);
        panic!("{error}\n--- script\n{}", replay.script());
    }
});
