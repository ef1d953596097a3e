//! Notification stress: local commits from several threads and remote changesets applied with
//! `Database::apply_remote` at the same time, several results and object listeners (one of
//! them reaching its changes through a link), and listeners registered and cancelled at random
//! while it runs. Every listener still registered at the end must have seen every committed
//! change: its results, replayed from the index changes it was given, equal the query's
//! final results, and the last value it saw of every object equals the committed one.
//!
//! Seeded: `TANDEM_SEED=<n>` replays a run (the seed is printed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem::model::{ClassSchema, Link, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::store::{Config, Database, ListenerToken, ObjectChange, ResultsChange};

const OBJECTS: i64 = 24;
const LOCAL_THREADS: u64 = 3;
/// The writers run in phases; after each, every listener must catch up with the last commit
/// to every object (a lost notification is visible only when no later commit to the same
/// object follows it, so every phase end is a check).
const PHASES: usize = 10;
const COMMITS_PER_THREAD: usize = 20;
const REMOTE_APPLIES: usize = 20;

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "C",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("n", PropertyType::Int),
            Property::link("next", "C"),
        ],
    )])
    .unwrap()
}

/// A database in a scratch directory, and the guard that removes the directory.
fn open(name: &str) -> (tempfile::TempDir, Arc<Database>) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-stress-{name}-"))
        .tempdir()
        .unwrap();
    let db = Arc::new(
        Database::open(dir.path().join("db.sqlite"), &schema(), Config::default()).unwrap(),
    );
    (dir, db)
}

/// xorshift64*: enough randomness for scheduling choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn n_of(db: &Database, id: i64) -> i64 {
    let object = db
        .read()
        .unwrap()
        .object("C", &PrimaryKey::Int(id))
        .unwrap();
    match object.map(|o| o.fields["n"].clone()) {
        Some(tandem::state::Field::Value(tandem::state::Val::Int(v))) => v,
        other => panic!("C[{id}].n is {other:?}"),
    }
}

fn int(k: &PrimaryKey) -> i64 {
    match k {
        PrimaryKey::Int(v) => *v,
        other => panic!("{other:?}"),
    }
}

/// What one listener saw: the results replayed from index changes (results listeners), and
/// the last value of `n` it read for each object it was told about.
#[derive(Default)]
struct Seen {
    /// Starts as the results the listener was registered on.
    replayed: Vec<PrimaryKey>,
    values: HashMap<i64, i64>,
    calls: usize,
    bad_indices: Option<String>,
}

/// Applies a Realm-style change to `old`: must give `change.keys`.
fn replay(old: &[PrimaryKey], change: &ResultsChange) -> Vec<PrimaryKey> {
    let mut v = old.to_vec();
    for &i in change.deletions.iter().rev() {
        v.remove(i);
    }
    for &j in &change.insertions {
        v.insert(j, change.keys[j].clone());
    }
    v
}

/// A results listener, and the results it starts from (its first change is relative to
/// them, however many commits run while it registers).
fn observe_results(
    db: &Arc<Database>,
    query: &str,
    seen: Arc<Mutex<Seen>>,
) -> (ListenerToken, Vec<PrimaryKey>) {
    let inner = Arc::clone(db);
    db.observe_query_with_initial("C", query, &[], &[], move |change| {
        let mut s = seen.lock().unwrap();
        s.calls += 1;
        if replay(&s.replayed, change) != change.keys && s.bad_indices.is_none() {
            s.bad_indices = Some(format!("{change:?} applied to {:?}", s.replayed));
        }
        s.replayed = change.keys.clone();
        for &j in change.insertions.iter().chain(&change.modifications_new) {
            let id = int(&change.keys[j]);
            s.values.insert(id, n_of(&inner, id));
        }
    })
    .unwrap()
}

/// An object listener on `id` that records the `n` of `reads` (the object itself, or the one
/// it links to).
fn observe_object(
    db: &Arc<Database>,
    id: i64,
    reads: i64,
    seen: Arc<Mutex<Seen>>,
) -> ListenerToken {
    let inner = Arc::clone(db);
    db.observe_object("C", &PrimaryKey::Int(id), move |change| {
        let mut s = seen.lock().unwrap();
        s.calls += 1;
        if let ObjectChange::Modified { .. } = change {
            s.values.insert(reads, n_of(&inner, reads));
        }
    })
    .unwrap()
}

/// Waits until every kept listener has caught up with the database; panics naming the first
/// that has not after a generous deadline.
fn wait_caught_up(
    db: &Database,
    phase: usize,
    results: &[(String, Arc<Mutex<Seen>>, ListenerToken)],
    objects: &[(i64, i64, Arc<Mutex<Seen>>, ListenerToken)],
) {
    let current: HashMap<i64, i64> = (0..OBJECTS).map(|id| (id, n_of(db, id))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, seen, _token) in results {
        let query = name
            .split(" (")
            .next()
            .unwrap()
            .trim_start_matches("results ");
        let expected = db.read().unwrap().query("C", query, &[]).unwrap();
        loop {
            let s = seen.lock().unwrap();
            assert!(s.bad_indices.is_none(), "{name}: {:?}", s.bad_indices);
            let keys_ok = s.replayed == expected;
            let values_ok = expected
                .iter()
                .all(|k| s.values.get(&int(k)) == Some(&current[&int(k)]));
            if keys_ok && values_ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "phase {phase}: {name} missed a change: results {:?}, expected {:?}; \
                 saw {:?}, committed {:?}",
                s.replayed,
                expected,
                s.values,
                current
            );
            drop(s);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for (id, reads, seen, _token) in objects {
        loop {
            let s = seen.lock().unwrap();
            if s.values.get(reads) == Some(&current[reads]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "phase {phase}: object listener on C[{id}] missed a change of C[{reads}]: \
                 saw {:?}, committed {}",
                s.values.get(reads),
                current[reads]
            );
            drop(s);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn every_listener_sees_every_commit_under_concurrent_writers_remote_applies_and_cancels() {
    let seed: u64 = std::env::var("TANDEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    println!("TANDEM_SEED={seed}");
    let (_dir, db) = open("main");
    // Objects 0..OBJECTS with n = 0; 0 links to 1.
    {
        let mut w = db.begin_write().unwrap();
        for id in 0..OBJECTS {
            w.create("C", PrimaryKey::Int(id), &[("n", Value::Int(0))])
                .unwrap();
        }
        w.set(
            "C",
            &PrimaryKey::Int(0),
            "next",
            Value::Link(Link {
                class: "C".into(),
                key: PrimaryKey::Int(1),
            }),
        )
        .unwrap();
        w.commit().unwrap();
    }
    let seq = Arc::new(AtomicI64::new(1));
    // Values are unique and increasing; every fifth is negative, so objects leave and re-enter
    // `n >= 0` and move in the sorted results.
    let value = move |seq: &AtomicI64| {
        let v = seq.fetch_add(1, Ordering::SeqCst);
        if v % 5 == 0 {
            -v
        } else {
            v
        }
    };
    let zeros = || {
        (0..OBJECTS)
            .map(|id| (id, 0))
            .collect::<HashMap<i64, i64>>()
    };

    let mut results: Vec<(String, Arc<Mutex<Seen>>, ListenerToken)> = Vec::new();
    for query in ["TRUEPREDICATE", "n >= 0 SORT(n DESC)", "n >= 0 AND _id < 4"] {
        let seen = Arc::new(Mutex::new(Seen {
            values: zeros(),
            ..Seen::default()
        }));
        let (token, start) = observe_results(&db, query, Arc::clone(&seen));
        seen.lock().unwrap().replayed = start;
        results.push((format!("results {query}"), seen, token));
    }
    let mut objects = Vec::new();
    for (id, reads) in [(2, 2), (5, 5), (0, 1)] {
        let seen = Arc::new(Mutex::new(Seen {
            values: zeros(),
            ..Seen::default()
        }));
        let token = observe_object(&db, id, reads, Arc::clone(&seen));
        objects.push((id, reads, seen, token));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicUsize::new(0));
    let churn = {
        // Listeners registered and cancelled at random while the writers run.
        let (db, stop, churned) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&churned));
        std::thread::spawn(move || {
            let mut rng = Rng(seed.wrapping_mul(17) | 1);
            let mut live: Vec<ListenerToken> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if live.len() < 6 && rng.below(2) == 0 {
                    let token = if rng.below(2) == 0 {
                        db.observe_query("C", "n >= 0", &[], |_| {}).unwrap()
                    } else {
                        let id = rng.below(OBJECTS as u64) as i64;
                        db.observe_object("C", &PrimaryKey::Int(id), |_| {})
                            .unwrap()
                    };
                    live.push(token);
                } else if !live.is_empty() {
                    let token = live.swap_remove(rng.below(live.len() as u64) as usize);
                    if rng.below(2) == 0 {
                        token.cancel();
                    } else {
                        drop(token);
                    }
                    churned.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_micros(rng.below(1000)));
            }
        })
    };

    let mut transactions = 0;
    for phase in 0..PHASES {
        let mut threads = Vec::new();
        for t in 0..LOCAL_THREADS {
            let (db, seq) = (Arc::clone(&db), Arc::clone(&seq));
            let mut rng = Rng(seed
                .wrapping_add((phase as u64) << 8 | (t + 1))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                | 1);
            threads.push(std::thread::spawn(move || {
                for _ in 0..COMMITS_PER_THREAD {
                    let mut w = db.begin_write().unwrap();
                    for _ in 0..=rng.below(2) {
                        let id = rng.below(OBJECTS as u64) as i64;
                        w.set("C", &PrimaryKey::Int(id), "n", Value::Int(value(&seq)))
                            .unwrap();
                    }
                    w.commit().unwrap();
                }
            }));
        }
        {
            // Remote changesets: recorded on a scratch database, applied to the main one.
            let (db, seq) = (Arc::clone(&db), Arc::clone(&seq));
            let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(phase as u64) | 1);
            threads.push(std::thread::spawn(move || {
                let (_scratch_dir, scratch) = open(&format!("scratch-{phase}"));
                for _ in 0..REMOTE_APPLIES {
                    let id = rng.below(OBJECTS as u64) as i64;
                    let mut w = scratch.begin_write().unwrap();
                    w.upsert("C", PrimaryKey::Int(id), &[("n", Value::Int(value(&seq)))])
                        .unwrap();
                    let changeset = w.changeset().clone();
                    w.rollback();
                    db.apply_remote(&changeset).unwrap();
                }
            }));
        }
        if phase == 0 {
            // Listeners registered while the writers run, kept to the end. The values they
            // start from are read after registering (a commit in between still notifies them).
            std::thread::sleep(Duration::from_millis(5));
            for query in ["TRUEPREDICATE SORT(n ASC)", "n < 0"] {
                let seen = Arc::new(Mutex::new(Seen::default()));
                // The values every later callback updates are read while its callbacks wait:
                // read first and stored after, they could overwrite a newer value a callback
                // had just recorded (the writers keep committing meanwhile).
                let mut first = seen.lock().unwrap();
                let (token, start) = observe_results(&db, query, Arc::clone(&seen));
                first.replayed = start;
                first.values = (0..OBJECTS).map(|id| (id, n_of(&db, id))).collect();
                drop(first);
                results.push((format!("results {query} (registered mid-run)"), seen, token));
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        transactions += LOCAL_THREADS as usize * COMMITS_PER_THREAD + REMOTE_APPLIES;
        wait_caught_up(&db, phase, &results, &objects);
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    for (name, seen, _) in &results {
        println!("{name}: {} callbacks", seen.lock().unwrap().calls);
    }
    for (id, _, seen, _) in &objects {
        println!(
            "object listener on C[{id}]: {} callbacks",
            seen.lock().unwrap().calls
        );
    }
    println!(
        "{} values committed in {transactions} transactions ({REMOTE_APPLIES} remote per phase) \
         over {PHASES} phases, each checked; {} listeners churned",
        seq.load(Ordering::SeqCst) - 1,
        churned.load(Ordering::SeqCst)
    );
}
