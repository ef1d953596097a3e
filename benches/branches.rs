//! Long offline branches (issue 18): a real character-by-character editing trace replayed as
//! list edits on two branches that diverge from one base, then merged with
//! [`ReciprocalHistory::integrate`] as in `benches/merge.rs`.
//!
//! # The trace
//!
//! The automerge-paper trace (Martin Kleppmann's keystrokes while writing the LaTeX source of
//! "A Conflict-Free Replicated JSON Datatype": 182,315 single-character inserts and 77,463
//! single-character deletes, one patch per transaction, final text 104,852 characters). It is
//! read from `$TANDEM_TRACE` if set, else from `benches/data/automerge-paper.json.gz` (the
//! editing-traces JSON format: `{startContent, endContent, txns: [{patches: [[pos, del,
//! "ins"]]}]}`, positions in Unicode scalar values). Source: `automerge/automerge-perf`, as
//! copied into `josephg/editing-traces` (`sequential_traces/automerge-paper.json.gz`);
//! licence CC BY 4.0 (see `benches/data/README.md`). If the file is missing, or
//! `TANDEM_TRACE=synthetic`, a seeded synthetic trace of the same shape is used instead (same
//! counts of inserts and deletes, one edit per transaction, typing at a cursor that mostly
//! moves locally); the output says which one ran.
//!
//! Each patch becomes one event per character (a delete of `k` characters is `k` erases at the
//! same position, an insert of a string is one insert per character). Sizes beyond the trace
//! (259,778 events) replay it again: repeat `r` is appended after the text the earlier repeats
//! left (its positions are offset by their final length), as the Eg-walker paper lengthens its
//! traces by repetition. The list element is the character's code point as an `Int` (Realm has
//! no text type; a list of one-character strings would only add a string clone per copy).
//!
//! # The model
//!
//! One object `Doc[1]` with a list-of-int property `text`. For N total events, each branch gets
//! N/2 of them, and each branch's events are its own changesets: one changeset per trace
//! transaction (for automerge-paper, one keystroke per changeset; `TANDEM_BRANCHES_BATCH=k`
//! puts k events in each instead). Every `ArrayInsert` / `ArrayErase` carries the list's true
//! size before it as `prior_size`. Each changeset carries today's time on the OT clock and its
//! branch's file ident, spread over 1 to 2^63 - 1 as a server allocates them. Each branch's
//! changesets are then held as a peer holds them after reading them back (a client's history
//! rows and a DOWNLOAD's entries, the server's history rows and an UPLOAD's entries): encoded,
//! and decoded each beside the one before it ([`Changeset::decode_sharing`], as
//! `store::history`, `store::sync` and `server::file` decode them), so that a run of
//! changesets naming the same strings holds one string table. Two scenarios:
//!
//! - `halves` (the headline): the trace's first half and second half written concurrently.
//!   The base list is `[SEP] ++ doc(N/2)`, where `doc(k)` is the text after k events. Branch A
//!   replays events `0..N/2` in front of `SEP` (from an empty section); branch B replays events
//!   `N/2..N` after `SEP` (from the `doc(N/2)` it starts from). Both are real, valid edit
//!   sequences on the same base and every trace event is used once. Every edit of A shifts
//!   every edit of B, so every pair of the two branches is on one list. Expected result:
//!   `doc(N/2) ++ [SEP] ++ doc(N)`.
//! - `same-edits` (conflict-heavy): from an empty list, both branches replay events `0..N/2`
//!   (two replicas typing the same keys offline): every insert meets a twin at the same index
//!   (ordered by the changesets' clocks) and every erase meets a twin erase of the same index.
//!   There is no closed-form result; both merge directions must agree.
//!
//! The measured merge: the peer holding branch A integrates all of branch B's changesets in
//! one [`ReciprocalHistory::integrate`] call (as a client integrates one DOWNLOAD after a long
//! offline period). It prints the time (best of 3 below 10 s, else one run: on 2026-12-06 a
//! process's first merge of a million events now and then took 1.2 to 5.6 s instead of 0.7 s,
//! in the binaries before and after a change alike; the cause was not found), the peak heap
//! the merge allocated (a counting allocator), and the growth exponent between consecutive N
//! (time ~ N^k). A size whose time, extrapolated from the last two with an exponent of at
//! least the last measured one, exceeds `TANDEM_BRANCHES_BUDGET_S` seconds (default 180) is
//! skipped and its predicted time printed instead.
//!
//! For N up to `TANDEM_BRANCHES_VERIFY_MAX` (default 10,000) it checks correctness: base plus
//! A plus transformed B, and base plus B plus transformed A, applied to a
//! [`tandem::state::State`], give the same list (and, for `halves`, the expected one).
//!
//! # The baseline
//!
//! Beside each figure: Eg-walker's published merge time for trace S1, which is automerge-paper
//! repeated 3 times (779,334 events), and for trace A2 (the Git `Makefile` history: 698k
//! events on long-running branches), scaled linearly to N events. Source: Gentle & Kleppmann,
//! "Collaborative Text Editing with Eg-walker: Better, Faster, Smaller", EuroSys 2025
//! (arXiv:2409.14252), Figure "chart-remote" ("The CPU time taken by each algorithm to merge all
//! events in each trace"), whose numbers are `results/timings.json` in
//! github.com/josephg/egwalker-paper: `dt_merge_norm` S1 = 1.766 ms, A2 = 23.47 ms (mean;
//! diamond-types on a Ryzen 7950x pinned to one core); with the critical-version
//! optimisation off (`dt_ff_off`), S1 = 9.81 ms. S1 is sequential (no concurrency); A2 is the
//! long-branch trace. The same file gives the paper's OT (TTF) at 2.35 ms for S1 and 3,664 s
//! for A2.
//!
//! Run: `cargo bench --bench branches` (add `-- --quick` to stop at N = 10,000;
//! `TANDEM_BRANCHES_SCENARIO=halves` or `same-edits` runs one scenario;
//! `TANDEM_BRANCHES_SIZES=100000,1000000` runs those sizes only).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tandem::changeset::*;
use tandem::ot::ReciprocalHistory;
use tandem::state::{Element, Field, Key, State, Val};

#[path = "common/counting.rs"]
mod counting;
use counting::{Counting, LIVE, PEAK};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Eg-walker's published figures (see the module documentation).
const EGW_S1_EVENTS: f64 = 779_334.0;
const EGW_S1_MS: f64 = 1.766;
const EGW_A2_EVENTS: f64 = 698_000.0;
const EGW_A2_MS: f64 = 23.47;

/// The separator element between the two sections of `halves`.
const SEP: i64 = -1;

/// One character edit.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Insert { pos: u32, ch: u32 },
    Delete { pos: u32 },
}

struct Trace {
    /// What was loaded, for the output.
    source: String,
    edits: Vec<Edit>,
    /// Whether edit `i` starts a trace transaction.
    txn_start: Vec<bool>,
    /// Length of the text after one replay.
    final_len: u32,
}

impl Trace {
    /// Event `i` of the trace repeated without end: (starts a transaction, edit).
    fn event(&self, i: usize) -> (bool, Edit) {
        let n = self.edits.len();
        let offset = (i / n) as u32 * self.final_len;
        let start = self.txn_start[i % n] || i % n == 0;
        let edit = match self.edits[i % n] {
            Edit::Insert { pos, ch } => Edit::Insert {
                pos: pos + offset,
                ch,
            },
            Edit::Delete { pos } => Edit::Delete { pos: pos + offset },
        };
        (start, edit)
    }

    /// The text after the first `k` events.
    fn doc(&self, k: usize) -> Vec<u32> {
        let mut doc = GapBuffer::default();
        for i in 0..k {
            doc.apply(self.event(i).1);
        }
        doc.into_vec()
    }

    /// The text's length after the first `k` events.
    fn len_after(&self, k: usize) -> u32 {
        let n = self.edits.len();
        let mut len = (k / n) as u32 * self.final_len;
        for e in &self.edits[..k % n] {
            match e {
                Edit::Insert { .. } => len += 1,
                Edit::Delete { .. } => len -= 1,
            }
        }
        len
    }
}

/// A gap buffer: replaying a trace whose edits are mostly local costs little per edit.
#[derive(Default)]
struct GapBuffer {
    buf: Vec<u32>,
    gap: usize,
    gap_end: usize,
}

impl GapBuffer {
    fn len(&self) -> usize {
        self.buf.len() - (self.gap_end - self.gap)
    }

    fn move_gap(&mut self, pos: usize) {
        if pos < self.gap {
            let k = self.gap - pos;
            self.buf.copy_within(pos..self.gap, self.gap_end - k);
            self.gap = pos;
            self.gap_end -= k;
        } else if pos > self.gap {
            let k = pos - self.gap;
            self.buf
                .copy_within(self.gap_end..self.gap_end + k, self.gap);
            self.gap = pos;
            self.gap_end += k;
        }
    }

    fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Insert { pos, ch } => {
                if self.gap == self.gap_end {
                    let len = self.len();
                    let grow = len.max(64);
                    let tail = self.buf.len() - self.gap_end;
                    self.buf.resize(self.buf.len() + grow, 0);
                    let new_end = self.buf.len() - tail;
                    self.buf
                        .copy_within(self.gap_end..self.gap_end + tail, new_end);
                    self.gap_end = new_end;
                }
                assert!(pos as usize <= self.len(), "insert beyond the text");
                self.move_gap(pos as usize);
                self.buf[self.gap] = ch;
                self.gap += 1;
            }
            Edit::Delete { pos } => {
                assert!((pos as usize) < self.len(), "delete beyond the text");
                self.move_gap(pos as usize);
                self.gap_end += 1;
            }
        }
    }

    fn into_vec(mut self) -> Vec<u32> {
        let end = self.gap_end;
        self.buf.drain(self.gap..end);
        self.buf
    }
}

fn load_trace() -> Trace {
    let path = std::env::var_os("TANDEM_TRACE").map(PathBuf::from);
    if path.as_deref() == Some(std::path::Path::new("synthetic")) {
        return synthetic("TANDEM_TRACE=synthetic");
    }
    let path = path.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/data/automerge-paper.json.gz")
    });
    match read_trace(&path) {
        Ok(trace) => trace,
        Err(e) => synthetic(&format!("{} not usable: {e}", path.display())),
    }
}

fn read_trace(path: &std::path::Path) -> Result<Trace, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut json)
        .map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let bad = |what: &str| format!("not an editing trace: {what}");
    if value["startContent"].as_str() != Some("") {
        return Err(bad("startContent is not empty"));
    }
    let end: Vec<u32> = value["endContent"]
        .as_str()
        .ok_or_else(|| bad("no endContent"))?
        .chars()
        .map(u32::from)
        .collect();
    let mut edits = Vec::new();
    let mut txn_start = Vec::new();
    for txn in value["txns"].as_array().ok_or_else(|| bad("no txns"))? {
        let mut first = true;
        for patch in txn["patches"].as_array().ok_or_else(|| bad("no patches"))? {
            let pos = patch[0].as_u64().ok_or_else(|| bad("position"))? as u32;
            let del = patch[1].as_u64().ok_or_else(|| bad("delete count"))?;
            let ins = patch[2].as_str().ok_or_else(|| bad("inserted text"))?;
            let edits_here =
                (0..del)
                    .map(|_| Edit::Delete { pos })
                    .chain(ins.chars().enumerate().map(|(k, c)| Edit::Insert {
                        pos: pos + k as u32,
                        ch: u32::from(c),
                    }));
            for edit in edits_here {
                edits.push(edit);
                txn_start.push(std::mem::take(&mut first));
            }
        }
    }
    let mut trace = Trace {
        source: format!("{} ({} events)", path.display(), edits.len()),
        edits,
        txn_start,
        final_len: end.len() as u32,
    };
    if trace.edits.is_empty() {
        return Err(bad("no edits"));
    }
    let replayed = trace.doc(trace.edits.len());
    if replayed != end {
        return Err(bad("replaying the patches does not give endContent"));
    }
    trace.final_len = replayed.len() as u32;
    Ok(trace)
}

/// A seeded trace of automerge-paper's shape: 182,315 inserts and 77,463 deletes, one per
/// transaction, typed at a cursor that jumps to a random place once in 50 edits.
fn synthetic(why: &str) -> Trace {
    let (inserts, deletes) = (182_315usize, 77_463usize);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut ins_left, mut del_left) = (inserts, deletes);
    let (mut len, mut cursor) = (0u32, 0u32);
    let mut edits = Vec::with_capacity(inserts + deletes);
    while ins_left + del_left > 0 {
        if next() % 50 == 0 && len > 0 {
            cursor = (next() % u64::from(len + 1)) as u32;
        }
        let delete = del_left > 0
            && cursor > 0
            && (ins_left == 0 || next() % ((ins_left + del_left) as u64) < del_left as u64);
        if delete {
            cursor -= 1;
            edits.push(Edit::Delete { pos: cursor });
            len -= 1;
            del_left -= 1;
        } else if ins_left > 0 {
            edits.push(Edit::Insert {
                pos: cursor,
                ch: u32::from(b'a') + (next() % 26) as u32,
            });
            cursor += 1;
            len += 1;
            ins_left -= 1;
        } else {
            // Only deletes left and the cursor is at the start: move it to the end.
            cursor = len;
        }
    }
    Trace {
        source: format!(
            "SYNTHETIC trace of automerge-paper's shape, seeded ({why}; {} events)",
            edits.len()
        ),
        txn_start: vec![true; edits.len()],
        edits,
        final_len: len,
    }
}

fn list_path(cs: &mut Changeset, index: u32) -> FieldPath {
    FieldPath {
        table: cs.intern("Doc"),
        object: PrimaryKey::Int(1),
        field: cs.intern("text"),
        path: vec![PathElement::Index(index)].into(),
    }
}

fn push_edit(cs: &mut Changeset, edit: Edit, index_offset: u32, prior_size: u32) {
    let instruction = match edit {
        Edit::Insert { pos, ch } => Instruction::ArrayInsert(ArrayInsert {
            path: list_path(cs, index_offset + pos),
            value: Payload::Int(i64::from(ch)),
            prior_size,
        }),
        Edit::Delete { pos } => Instruction::ArrayErase(ArrayErase {
            path: list_path(cs, index_offset + pos),
            prior_size,
        }),
    };
    cs.push(instruction);
}

/// The schema, the object, and its initial list.
fn base_changeset(list: &[i64]) -> Changeset {
    let mut cs = Changeset::new();
    let table = cs.intern("Doc");
    let id = cs.intern("_id");
    let text = cs.intern("text");
    cs.push(Instruction::AddTable(AddTable {
        table,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: id,
            key_type: PayloadType::Int,
            nullable: false,
        }),
    }));
    cs.push(Instruction::AddColumn(AddColumn {
        table,
        field: text,
        column_type: ColumnType::Value(PayloadType::Int),
        nullable: false,
        collection: ColumnCollection::List,
    }));
    cs.push(Instruction::CreateObject {
        table,
        object: PrimaryKey::Int(1),
    });
    for (i, &v) in list.iter().enumerate() {
        let path = list_path(&mut cs, i as u32);
        cs.push(Instruction::ArrayInsert(ArrayInsert {
            path,
            value: Payload::Int(v),
            prior_size: i as u32,
        }));
    }
    cs
}

/// 2026-12-07 on the OT clock (milliseconds since 2015-01-01): the branches' changesets carry
/// timestamps of today, as a client's do.
const CLOCK_START: u64 = 376_531_200_000;

/// The client file ident of `peer`, spread over 1 to 2^63 - 1 as a server's random allocation
/// spreads them (`server::file`), not a small number.
fn file_ident(peer: u64) -> u64 {
    (peer.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1).max(1)
}

/// One branch's changesets: `events` replayed on a section of the list that starts at
/// `index_offset` and holds `section_len` elements, with `outside` elements elsewhere in it.
fn branch(
    trace: &Trace,
    events: std::ops::Range<usize>,
    index_offset: u32,
    mut section_len: u32,
    outside: u32,
    peer: u64,
    batch: usize,
) -> Vec<Changeset> {
    let mut out: Vec<Changeset> = Vec::new();
    let mut in_current = 0;
    for i in events {
        let (txn_start, edit) = trace.event(i);
        let new = match batch {
            0 => txn_start || out.is_empty(),
            k => in_current == k || out.is_empty(),
        };
        if new {
            let k = out.len() as u64;
            let mut cs = Changeset::new();
            // Interleaved clocks: both branches typed at the same pace.
            cs.meta = ChangesetMeta {
                version: k + 1,
                last_integrated_remote_version: 0,
                origin_timestamp: CLOCK_START + 2 * k + peer,
                origin_file_ident: file_ident(peer),
            };
            out.push(cs);
            in_current = 0;
        }
        let cs = out.last_mut().expect("a changeset");
        push_edit(cs, edit, index_offset, section_len + outside);
        in_current += 1;
        match edit {
            Edit::Insert { .. } => section_len += 1,
            Edit::Delete { .. } => section_len -= 1,
        }
    }
    read_back(out)
}

/// `changesets` as a peer holds them after reading them back (its history's rows, a DOWNLOAD's
/// or an UPLOAD's entries): each encoded, then decoded beside the one before it as
/// `store::history`, `store::sync` and `server::file` decode them
/// ([`Changeset::decode_sharing`]: a run of equal string tables is one table), metadata kept.
fn read_back(changesets: Vec<Changeset>) -> Vec<Changeset> {
    let mut out: Vec<Changeset> = Vec::with_capacity(changesets.len());
    for cs in changesets {
        let bytes = cs.encode();
        let mut again =
            Changeset::decode_sharing(&bytes, out.last()).expect("a changeset it encoded decodes");
        again.meta = cs.meta;
        out.push(again);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Halves,
    SameEdits,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Halves => "halves",
            Scenario::SameEdits => "same-edits",
        }
    }
}

struct Setup {
    /// The common base list (small N only: it is applied for verification).
    base: Option<Vec<i64>>,
    a: Vec<Changeset>,
    b: Vec<Changeset>,
    /// The list both merges must reach, where it is known.
    expected: Option<Vec<i64>>,
}

fn setup(trace: &Trace, scenario: Scenario, n: usize, batch: usize, verify: bool) -> Setup {
    let half = n / 2;
    let to_i64 = |v: Vec<u32>| v.into_iter().map(i64::from).collect::<Vec<i64>>();
    match scenario {
        Scenario::Halves => {
            let b_start = trace.len_after(half);
            let a = branch(trace, 0..half, 0, 0, 1 + b_start, 2, batch);
            let b = branch(trace, half..n, 1, b_start, 1, 3, batch);
            let (base, expected) = if verify {
                let mid = to_i64(trace.doc(half));
                let mut base = vec![SEP];
                base.extend(&mid);
                let mut expected = mid;
                expected.push(SEP);
                expected.extend(to_i64(trace.doc(n)));
                (Some(base), Some(expected))
            } else {
                (None, None)
            };
            Setup {
                base,
                a,
                b,
                expected,
            }
        }
        Scenario::SameEdits => Setup {
            base: verify.then(Vec::new),
            a: branch(trace, 0..half, 0, 0, 0, 2, batch),
            b: branch(trace, 0..half, 0, 0, 0, 3, batch),
            expected: None,
        },
    }
}

/// The `text` list of a state.
fn text_of(state: &State) -> Vec<i64> {
    let object = state.object("Doc", &Key::Int(1)).expect("Doc[1]");
    match object.fields.get("text") {
        Some(Field::List(elements)) => elements
            .iter()
            .map(|e| match e {
                Element::Value(Val::Int(v)) => *v,
                other => panic!("not an int element: {other:?}"),
            })
            .collect(),
        other => panic!("text is not a list: {other:?}"),
    }
}

/// Base, then `local`, then `incoming` transformed against `local` by a fresh history.
fn merged_state(base: &Changeset, local: &[Changeset], incoming: &[Changeset]) -> Vec<i64> {
    let mut state = State::new();
    state.apply(base).expect("base applies");
    for cs in local {
        state.apply(cs).expect("local changeset applies");
    }
    let mut batch = incoming.to_vec();
    let concurrent: Vec<&Changeset> = local.iter().collect();
    ReciprocalHistory::new()
        .integrate(&mut batch, &concurrent)
        .expect("merge");
    for cs in &batch {
        state
            .apply(cs)
            .expect("transformed incoming changeset applies");
    }
    text_of(&state)
}

fn verify(s: &Setup) {
    let base = base_changeset(s.base.as_deref().expect("base kept for verification"));
    let at_a = merged_state(&base, &s.a, &s.b);
    let at_b = merged_state(&base, &s.b, &s.a);
    assert!(
        at_a == at_b,
        "the two merge directions differ (lengths {} and {})",
        at_a.len(),
        at_b.len()
    );
    if let Some(expected) = &s.expected {
        assert!(
            at_a == *expected,
            "the merge is not the expected list (length {} instead of {})",
            at_a.len(),
            expected.len()
        );
    }
}

struct Measure {
    seconds: f64,
    peak_bytes: usize,
}

/// The peer holding A integrates all of B's changesets; best of `runs`.
fn measure(local: &[Changeset], incoming: &[Changeset], runs: usize) -> Measure {
    let mut best = f64::INFINITY;
    let mut peak = 0;
    for _ in 0..runs {
        let mut history = ReciprocalHistory::new();
        let concurrent: Vec<&Changeset> = local.iter().collect();
        let mut batch = incoming.to_vec();
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        history.integrate(&mut batch, &concurrent).expect("merge");
        let elapsed = start.elapsed().as_secs_f64();
        peak = peak.max(PEAK.load(Ordering::Relaxed) - base);
        best = best.min(elapsed);
        std::hint::black_box((&batch, &history));
    }
    Measure {
        seconds: best,
        peak_bytes: peak,
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let listed: Option<Vec<usize>> = std::env::var("TANDEM_BRANCHES_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let sizes: &[usize] = match &listed {
        Some(sizes) => sizes,
        None if quick => &[1_000, 10_000],
        None => &[1_000, 10_000, 100_000, 1_000_000],
    };
    let batch = env_usize("TANDEM_BRANCHES_BATCH", 0);
    let budget = env_usize("TANDEM_BRANCHES_BUDGET_S", 180) as f64;
    let verify_max = env_usize("TANDEM_BRANCHES_VERIFY_MAX", 10_000);
    let scenarios: Vec<Scenario> = match std::env::var("TANDEM_BRANCHES_SCENARIO").as_deref() {
        Ok("halves") => vec![Scenario::Halves],
        Ok("same-edits") => vec![Scenario::SameEdits],
        _ => vec![Scenario::Halves, Scenario::SameEdits],
    };

    let trace = load_trace();
    println!("Long offline branches: trace {}", trace.source);
    println!(
        "changesets: {}; verified both merge directions up to N = {verify_max}",
        match batch {
            0 => "one per trace transaction".to_string(),
            k => format!("{k} events each"),
        }
    );
    println!(
        "baseline: Eg-walker (diamond-types, Ryzen 7950x) S1 = automerge-paper x3 merged in \
         {EGW_S1_MS} ms, A2 (long branches) in {EGW_A2_MS} ms; scaled linearly to N events"
    );
    println!(
        "{:<11} {:>9} {:>8} {:>8} {:>11} {:>10} {:>9} {:>10} {:>10} {:>10}",
        "scenario",
        "N",
        "cs/side",
        "verified",
        "merge ms",
        "peak MiB",
        "growth k",
        "egw S1 ms",
        "egw A2 ms",
        "x A2"
    );
    for scenario in scenarios {
        let mut previous: Option<(usize, f64)> = None;
        let mut exponent: Option<f64> = None;
        let mut points = Vec::new();
        for &n in sizes {
            let egw_s1 = EGW_S1_MS * n as f64 / EGW_S1_EVENTS;
            let egw_a2 = EGW_A2_MS * n as f64 / EGW_A2_EVENTS;
            if let Some((pn, pt)) = previous {
                let k = exponent.unwrap_or(1.0).max(1.0);
                let predicted = pt * (n as f64 / pn as f64).powf(k);
                if predicted > budget {
                    println!(
                        "{:<11} {:>9} skipped: predicted {:.0} s (N^{k:.2} from N = {pn}) > \
                         budget {budget} s (TANDEM_BRANCHES_BUDGET_S); egw S1 {egw_s1:.2} ms, \
                         A2 {egw_a2:.2} ms",
                        scenario.name(),
                        n,
                        predicted
                    );
                    continue;
                }
            }
            let check = n <= verify_max;
            let s = setup(&trace, scenario, n, batch, check);
            if check {
                verify(&s);
            }
            let m = measure(&s.a, &s.b, 1);
            let m = if m.seconds < 10.0 {
                let again = measure(&s.a, &s.b, 2);
                Measure {
                    seconds: m.seconds.min(again.seconds),
                    peak_bytes: m.peak_bytes.max(again.peak_bytes),
                }
            } else {
                m
            };
            let growth =
                previous.map(|(pn, pt)| (m.seconds / pt).ln() / (n as f64 / pn as f64).ln());
            println!(
                "{:<11} {:>9} {:>8} {:>8} {:>11.1} {:>10.1} {:>9} {:>10.2} {:>10.2} {:>10.0}",
                scenario.name(),
                n,
                s.b.len(),
                if check { "yes" } else { "-" },
                m.seconds * 1e3,
                m.peak_bytes as f64 / (1024.0 * 1024.0),
                growth.map_or_else(|| "-".to_string(), |k| format!("{k:.2}")),
                egw_s1,
                egw_a2,
                m.seconds * 1e3 / egw_a2,
            );
            if growth.is_some() {
                exponent = growth;
            }
            previous = Some((n, m.seconds));
            points.push((n as f64, m.seconds));
        }
        if points.len() >= 2 {
            // Least-squares slope of log(time) over log(N).
            let m = points.len() as f64;
            let (sx, sy) = points
                .iter()
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x.ln(), b + y.ln()));
            let (sxx, sxy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
                (a + x.ln() * x.ln(), b + x.ln() * y.ln())
            });
            let slope = (m * sxy - sx * sy) / (m * sxx - sx * sx);
            let (first, last) = (points[0].0, points[points.len() - 1].0);
            println!(
                "{:<11} fitted growth exponent from N = {first} to {last}: {slope:.2}",
                scenario.name()
            );
        }
    }
}
