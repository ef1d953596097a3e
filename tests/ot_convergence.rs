//! Randomized convergence of the OT rules through in-memory peers (`tests/harness`).
//!
//! `TANDEM_SEED` picks the seed (default 1, so CI is deterministic), `TANDEM_FUZZ_ROUNDS` the
//! number of rounds (default 500). Round `r` runs from seed `TANDEM_SEED + r`; a failure prints
//! that seed and the round's full script, and reruns with `TANDEM_SEED=<it>
//! TANDEM_FUZZ_ROUNDS=1` reproduce it exactly.

mod harness;

use harness::{Entropy, SeededRng, Sim, ORDERS_OF_THREE};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs one round; on failure reruns it with the script recorded and panics with both.
fn run_round(seed: u64, clients: usize, modifications: usize) {
    let mut sim = Sim::new(clients);
    if let Err(error) = sim.random_round(&mut SeededRng::new(seed), modifications) {
        let mut replay = Sim::new(clients);
        replay.logging = true;
        let _ = replay.random_round(&mut SeededRng::new(seed), modifications);
        panic!(
            "round with seed {seed} failed (reproduce: TANDEM_SEED={seed} TANDEM_FUZZ_ROUNDS=1)\n\
             {error}\n--- script of the round\n{}",
            replay.script()
        );
    }
}

#[test]
fn randomized_rounds_converge() {
    let seed = env_u64("TANDEM_SEED", 1);
    let rounds = env_u64("TANDEM_FUZZ_ROUNDS", 500);
    println!("TANDEM_SEED={seed} TANDEM_FUZZ_ROUNDS={rounds}");
    for r in 0..rounds {
        run_round(seed.wrapping_add(r), 4, 256);
    }
}

#[test]
fn many_clients_few_modifications() {
    let seed = env_u64("TANDEM_SEED", 1);
    for r in 0..100 {
        run_round(seed.wrapping_add(1_000_000 + r), 7, 40);
    }
}

/// Realm's associativity check: the same client histories uploaded in every order give the
/// same server state, and every client converges to it.
#[test]
fn upload_order_does_not_matter() {
    let seed = env_u64("TANDEM_SEED", 1);
    for r in 0..60u64 {
        let mut rng = SeededRng::new(seed.wrapping_add(2_000_000 + r));
        // Histories made offline from a common empty start.
        let mut base = Sim::new(3);
        for _ in 0..30 {
            let c = rng.below(3) as usize;
            base.modify(c, &mut rng).unwrap();
        }
        let mut first: Option<tandem::state::State> = None;
        for order in ORDERS_OF_THREE {
            let mut sim = Sim::new(3);
            for (c, client) in sim.clients.iter_mut().enumerate() {
                client.state = base.clients[c].state.clone();
                client.history = base.clients[c].history.clone();
                client.clock = base.clients[c].clock;
            }
            for &c in &order {
                while sim
                    .upload_one(c)
                    .unwrap_or_else(|e| panic!("seed round {r}: {e}"))
                {}
            }
            sim.drain()
                .unwrap_or_else(|e| panic!("seed round {r}, order {order:?}: {e}"));
            sim.check_converged()
                .unwrap_or_else(|e| panic!("seed round {r}, order {order:?}: {e}"));
            match &first {
                None => first = Some(sim.server.state.clone()),
                Some(state) => assert_eq!(
                    &sim.server.state, state,
                    "round {r}: order {order:?} gives another server state"
                ),
            }
        }
    }
}

/// The conflict index only skips pairs that cannot conflict: merging with it gives exactly
/// what comparing every pair gives.
#[test]
fn conflict_groups_change_nothing_but_speed() {
    let seed = env_u64("TANDEM_SEED", 1);
    for r in 0..200u64 {
        let mut rng = SeededRng::new(seed.wrapping_add(3_000_000 + r));
        let mut base = Sim::new(2);
        for _ in 0..12 {
            base.modify(rng.below(2) as usize, &mut rng).unwrap();
        }
        // Make both clients share the first client's history, then diverge.
        base.drain().unwrap();
        let before = (base.clients[0].history.len(), base.clients[1].history.len());
        for _ in 0..20 {
            base.modify(rng.below(2) as usize, &mut rng).unwrap();
        }
        let a: Vec<_> = base.clients[0].history[before.0..].to_vec();
        let b: Vec<_> = base.clients[1].history[before.1..].to_vec();
        let (mut a1, mut b1) = (a.clone(), b.clone());
        let (mut a2, mut b2) = (a, b);
        let indexed = tandem::ot::transform(&mut a1, &mut b1);
        let naive = tandem::ot::transform_unindexed(&mut a2, &mut b2);
        assert_eq!(indexed.is_ok(), naive.is_ok(), "round {r}");
        let bytes =
            |v: &[tandem::changeset::Changeset]| v.iter().map(|c| c.encode()).collect::<Vec<_>>();
        assert_eq!(bytes(&a1), bytes(&a2), "round {r}: local side differs");
        assert_eq!(bytes(&b1), bytes(&b2), "round {r}: incoming side differs");
    }
}

/// `MergeReach::meets` is symmetric (the client asks it of all its local changesets at once,
/// against a server changeset it has not decoded), and `meets_encoded` answers what `meets`
/// answers, with `EraseTable` counted when asked: checked on every pair of two diverged
/// randomized histories (6,458 pairs with seed 1, 2,944 of them meeting).
#[test]
fn merge_reach_is_symmetric_and_reads_encoded_bytes() {
    use tandem::changeset::{Changeset, Instruction};
    use tandem::ot::{ErasedTables, MergeReach};
    let seed = env_u64("TANDEM_SEED", 1);
    let (mut met, mut missed) = (0usize, 0usize);
    for r in 0..100u64 {
        let mut rng = SeededRng::new(seed.wrapping_add(5_000_000 + r));
        let mut base = Sim::new(2);
        for _ in 0..12 {
            base.modify(rng.below(2) as usize, &mut rng).unwrap();
        }
        base.drain().unwrap();
        let before = (base.clients[0].history.len(), base.clients[1].history.len());
        for _ in 0..20 {
            base.modify(rng.below(2) as usize, &mut rng).unwrap();
        }
        let a: Vec<Changeset> = base.clients[0].history[before.0..].to_vec();
        let b: Vec<Changeset> = base.clients[1].history[before.1..].to_vec();
        for x in &a {
            let of_x = MergeReach::of([x]);
            for y in &b {
                let meets = of_x.meets(y);
                assert_eq!(
                    meets,
                    MergeReach::of([y]).meets(x),
                    "round {r}: not symmetric"
                );
                let bytes = y.encode();
                assert_eq!(
                    of_x.meets_encoded(&bytes, ErasedTables::ByReach),
                    meets,
                    "round {r}"
                );
                let erases = y
                    .instructions
                    .iter()
                    .any(|i| matches!(i, Instruction::EraseTable { .. }));
                assert_eq!(
                    of_x.meets_encoded(&bytes, ErasedTables::AlwaysMeet),
                    meets || erases,
                    "round {r}"
                );
                if meets {
                    met += 1;
                } else {
                    missed += 1;
                }
            }
        }
        // All of one side at once: the union of the pairwise answers.
        for y in &b {
            let any = a.iter().any(|x| MergeReach::of([x]).meets(y));
            assert_eq!(
                MergeReach::of(&a).meets_encoded(&y.encode(), ErasedTables::ByReach),
                any,
                "round {r}"
            );
        }
    }
    assert!(
        met > 0 && missed > 0,
        "both answers occur: {met} met, {missed} not"
    );
}

/// tandem-server leaves out of a merge the concurrent changesets an upload cannot meet
/// (`ReciprocalHistory::needs_merge`) and merges the rest in batches: the same randomized
/// rounds run with that path give, upload for upload, the changesets the whole-window merge
/// gives, and converge.
#[test]
fn pruned_batched_merges_equal_whole_merges() {
    let seed = env_u64("TANDEM_SEED", 1);
    let rounds = env_u64("TANDEM_FUZZ_ROUNDS", 500) / 5;
    let mut left_out = 0usize;
    for r in 0..rounds {
        let round_seed = seed.wrapping_add(4_000_000 + r);
        let mut whole = Sim::new(4);
        whole
            .random_round(&mut SeededRng::new(round_seed), 256)
            .unwrap_or_else(|e| panic!("seed {round_seed}, whole merges: {e}"));
        let history = |sim: &Sim| -> Vec<String> {
            let entries = sim.server.history.iter();
            entries.map(|e| e.changeset.to_string()).collect()
        };
        let expected = history(&whole);
        for batch in [1, 3] {
            let mut pruned = Sim::new(4);
            pruned.merge_batch = Some(batch);
            pruned
                .random_round(&mut SeededRng::new(round_seed), 256)
                .unwrap_or_else(|e| panic!("seed {round_seed}, batches of {batch}: {e}"));
            assert_eq!(
                history(&pruned),
                expected,
                "seed {round_seed}, batches of {batch}: the server integrated other changesets"
            );
            assert_eq!(pruned.server.state, whole.server.state, "seed {round_seed}");
            left_out += pruned.left_out;
        }
    }
    // The pruning must have been exercised, or the comparison proves nothing.
    assert!(left_out > 0, "no concurrent changeset was ever left out");
    println!("{left_out} concurrent changesets left out of merges");
}
