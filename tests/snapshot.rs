//! The STATE snapshot: for random states built by the OT peer harness (every kind of field:
//! scalars, mixed, links, lists, sets, dictionaries, embedded objects and lists of them,
//! counters, added columns), the snapshot changeset survives encode/decode byte for byte and,
//! applied to an empty state, recreates the state exactly. It is also deterministic.

mod harness;

use std::collections::BTreeSet;

use harness::{SeededRng, Sim};
use tandem::changeset::{Changeset, Instruction, Payload};
use tandem::state::{snapshot, State};

#[test]
fn snapshots_recreate_random_states() {
    let rounds: u64 = std::env::var("TANDEM_SNAPSHOT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut objects = 0;
    let mut kinds = BTreeSet::new();
    for seed in 1..=rounds {
        let mut sim = Sim::new(3);
        sim.random_round(&mut SeededRng::new(seed), 64)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let original = &sim.server.state;
        let changeset = snapshot(original);
        let bytes = changeset.encode();
        assert_eq!(
            bytes,
            snapshot(original).encode(),
            "seed {seed}: deterministic"
        );
        let decoded = Changeset::decode(&bytes).unwrap();
        assert_eq!(decoded.encode(), bytes, "seed {seed}: a codec fixed point");
        let mut rebuilt = State::new();
        rebuilt
            .apply(&decoded)
            .unwrap_or_else(|e| panic!("seed {seed}: snapshot does not apply: {e}\n{changeset}"));
        assert_eq!(&rebuilt, original, "seed {seed}:\n{changeset}");
        objects += original.object_count();
        for instruction in &changeset.instructions {
            kinds.insert(match instruction {
                Instruction::Update(u) if u.value == Payload::ObjectValue => "embedded object",
                Instruction::Update(u) if !u.path.path.is_empty() => "nested or dictionary update",
                Instruction::Update(_) => "field update",
                Instruction::ArrayInsert(_) => "list element",
                Instruction::SetInsert(_) => "set element",
                Instruction::AddColumn(_) => "column",
                Instruction::AddTable(_) => "table",
                Instruction::CreateObject { .. } => "object",
                _ => "other",
            });
        }
    }
    let expected: BTreeSet<_> = [
        "embedded object",
        "nested or dictionary update",
        "field update",
        "list element",
        "set element",
        "column",
        "table",
        "object",
    ]
    .into_iter()
    .collect();
    assert_eq!(
        kinds, expected,
        "the random states exercised every kind of content"
    );
    assert!(
        objects > rounds as usize,
        "the rounds produced objects to check ({objects})"
    );
}

#[test]
fn an_empty_state_is_an_empty_snapshot() {
    let changeset = snapshot(&State::new());
    assert!(changeset.is_empty());
    let mut rebuilt = State::new();
    rebuilt.apply(&changeset).unwrap();
    assert_eq!(rebuilt, State::new());
}
