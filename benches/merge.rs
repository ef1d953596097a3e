//! OT merge benchmark, in the shape of realm-core's `bench_transform.cpp`.
//!
//! Two peers each make changesets on the same base; then one peer integrates all of the other's
//! with [`ReciprocalHistory::integrate`] (one batch, as a client integrates a DOWNLOAD). For each
//! scenario and N it prints the time of that merge, the peak heap it allocated (a counting
//! allocator), and, for N up to 4,000, the same merge without conflict groups (every pair of
//! instructions compared) as the baseline measured in the same run. The last column is the
//! growth exponent between consecutive N (time ~ N^k).
//!
//! Scenarios:
//! - `transactions`: N transactions per peer, each creating one object with a 500-character
//!   string; every 4th transaction erases the first object (shared by both peers).
//! - `instructions`: one transaction of N instructions per peer over the same N objects, 75%
//!   string updates and 25% object erasures (every object conflicts).
//! - `links`: one transaction per peer creating N objects that all link to one object, which
//!   the other peer erases.
//! - `string-keys`: one transaction per peer inserting at the front of a list in each of N
//!   objects keyed by strings: every instruction of both sides is kept and changed (one side's
//!   index shifted, both sides' prior sizes), and each side's string table holds N keys (the
//!   incoming side's merged form is written back into its own table).
//!
//! Run: `cargo bench --bench merge` (add `-- --quick` to stop at N = 4,000).

use std::sync::atomic::Ordering;
use std::time::Instant;

use tandem::changeset::*;
use tandem::ot::{transform_unindexed, ReciprocalHistory};

#[path = "common/counting.rs"]
mod counting;
use counting::{Counting, LIVE, PEAK};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn text(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..500)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// `timestamp` counts from 2026-12-07 on the OT clock (milliseconds since 2015-01-01), and
/// `peer`'s file ident is spread over 1 to 2^63 - 1 as a server's random allocation spreads
/// them (`server::file`), as real changesets carry them.
fn meta(cs: &mut Changeset, version: u64, timestamp: u64, peer: u64) {
    cs.meta = ChangesetMeta {
        version,
        last_integrated_remote_version: 0,
        origin_timestamp: 376_531_200_000 + timestamp,
        origin_file_ident: (peer.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1).max(1),
    };
}

fn update(cs: &mut Changeset, pk: i64, field: &str, value: Payload) {
    let path = FieldPath {
        table: cs.intern("Obj"),
        object: PrimaryKey::Int(pk),
        field: cs.intern(field),
        path: Default::default(),
    };
    cs.push(Instruction::Update(Update {
        path,
        value,
        is_default: false,
        prior_size: 0,
    }));
}

fn create(cs: &mut Changeset, pk: i64) {
    let table = cs.intern("Obj");
    cs.push(Instruction::CreateObject {
        table,
        object: PrimaryKey::Int(pk),
    });
}

fn erase(cs: &mut Changeset, pk: i64) {
    let table = cs.intern("Obj");
    cs.push(Instruction::EraseObject {
        table,
        object: PrimaryKey::Int(pk),
    });
}

/// N transactions of one peer.
fn transactions(n: usize, peer: u64) -> Vec<Changeset> {
    (0..n)
        .map(|i| {
            let mut cs = Changeset::new();
            if i % 4 == 3 {
                erase(&mut cs, 0);
            } else {
                let pk = if i == 0 {
                    0
                } else {
                    (peer * 1_000_000 + i as u64) as i64
                };
                create(&mut cs, pk);
                update(
                    &mut cs,
                    pk,
                    "text",
                    Payload::String(text(peer * 31 + i as u64).into()),
                );
            }
            // Interleaved clocks: both peers write at the same pace.
            meta(&mut cs, i as u64 + 1, 2 * i as u64 + peer, peer);
            cs
        })
        .collect()
}

/// One transaction of N instructions of one peer.
fn instructions(n: usize, peer: u64) -> Vec<Changeset> {
    let mut cs = Changeset::new();
    for i in 0..n {
        if i % 4 == 3 {
            erase(&mut cs, i as i64);
        } else {
            update(
                &mut cs,
                i as i64,
                "text",
                Payload::String(format!("p{peer} v{i}").into()),
            );
        }
    }
    meta(&mut cs, 1, 10 + peer, peer);
    vec![cs]
}

/// One transaction creating N objects linking to object 0; peer 3 also erases object 0.
fn links(n: usize, peer: u64) -> Vec<Changeset> {
    let mut cs = Changeset::new();
    if peer == 3 {
        erase(&mut cs, 0);
    }
    for i in 0..n {
        let pk = (peer * 1_000_000 + i as u64) as i64;
        create(&mut cs, pk);
        let target_table = cs.intern("Obj");
        update(
            &mut cs,
            pk,
            "link",
            Payload::Link(Link {
                target_table,
                target: PrimaryKey::Int(0),
            }),
        );
    }
    meta(&mut cs, 1, 10 + peer, peer);
    vec![cs]
}

/// One transaction inserting at index 0 of the list of each of N string-keyed objects.
fn string_keys(n: usize, peer: u64) -> Vec<Changeset> {
    let mut cs = Changeset::new();
    for i in 0..n {
        let table = cs.intern("Obj");
        let object = PrimaryKey::String(cs.intern(&format!("object-{i}")));
        let field = cs.intern("items");
        cs.push(Instruction::ArrayInsert(ArrayInsert {
            path: FieldPath {
                table,
                object,
                field,
                path: vec![PathElement::Index(0)].into(),
            },
            value: Payload::Int(peer as i64),
            prior_size: 0,
        }));
    }
    meta(&mut cs, 1, 10 + peer, peer);
    vec![cs]
}

struct Measure {
    seconds: f64,
    peak_bytes: usize,
}

/// Peer 3 integrates peer 2's changesets against its own. Best of `runs`.
fn measure(local: &[Changeset], incoming: &[Changeset], runs: usize, indexed: bool) -> Measure {
    let mut best = f64::INFINITY;
    let mut peak = 0;
    for _ in 0..runs {
        let mut history = ReciprocalHistory::new();
        let concurrent: Vec<&Changeset> = local.iter().collect();
        let mut batch = incoming.to_vec();
        let mut local_copy = local.to_vec();
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        if indexed {
            history.integrate(&mut batch, &concurrent).expect("merge");
        } else {
            transform_unindexed(&mut local_copy, &mut batch).expect("merge");
        }
        let elapsed = start.elapsed().as_secs_f64();
        peak = peak.max(PEAK.load(Ordering::Relaxed) - base);
        best = best.min(elapsed);
        std::hint::black_box((&batch, &history, &local_copy));
    }
    Measure {
        seconds: best,
        peak_bytes: peak,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes: &[usize] = if quick {
        &[100, 1_000, 4_000]
    } else {
        &[100, 1_000, 4_000, 16_000]
    };
    type Scenario = (&'static str, fn(usize, u64) -> Vec<Changeset>);
    let scenarios: [Scenario; 4] = [
        ("transactions", transactions),
        ("instructions", instructions),
        ("links", links),
        ("string-keys", string_keys),
    ];
    println!("OT merge: peer 3 integrates peer 2's changesets (best of 3 runs; naive = no conflict groups)");
    println!(
        "{:<13} {:>7} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "scenario", "N", "merge ms", "peak MiB", "naive ms", "speedup", "growth k"
    );
    for (name, make) in scenarios {
        let mut previous: Option<(usize, f64)> = None;
        let mut points = Vec::new();
        for &n in sizes {
            let incoming = make(n, 2);
            let local = make(n, 3);
            let runs = 3;
            let indexed = measure(&local, &incoming, runs, true);
            let naive = (n <= 4_000).then(|| measure(&local, &incoming, 1, false));
            let growth = previous
                .map(|(pn, pt)| {
                    format!(
                        "{:.2}",
                        (indexed.seconds / pt).ln() / (n as f64 / pn as f64).ln()
                    )
                })
                .unwrap_or_else(|| "-".into());
            let (naive_ms, speedup) = match &naive {
                Some(m) => (
                    format!("{:.1}", m.seconds * 1e3),
                    format!("{:.1}x", m.seconds / indexed.seconds),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:<13} {:>7} {:>12.1} {:>12.1} {:>12} {:>9} {:>9}",
                name,
                n,
                indexed.seconds * 1e3,
                indexed.peak_bytes as f64 / (1024.0 * 1024.0),
                naive_ms,
                speedup,
                growth
            );
            previous = Some((n, indexed.seconds));
            points.push((n as f64, indexed.seconds));
        }
        // Least-squares slope of log(time) over log(N).
        let m = points.len() as f64;
        let (sx, sy): (f64, f64) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x.ln(), b + y.ln()));
        let (sxx, sxy): (f64, f64) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
            (a + x.ln() * x.ln(), b + x.ln() * y.ln())
        });
        let slope = (m * sxy - sx * sy) / (m * sxx - sx * sx);
        println!("{name:<13} fitted growth exponent over all N: {slope:.2}");
    }
}
