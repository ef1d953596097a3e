//! Merging two sequences of changesets: conflict groups, then the pairwise rules in grid
//! order inside each group.
//!
//! Both sides' instructions are first re-interned into one shared string table so that names
//! compare as integers. Instructions are grouped by the object they act on; groups are joined
//! through link payloads and, for erased tables or columns and for link columns, through the
//! schema instructions that reach them. Schema instructions therefore meet everything they can
//! conflict with, and pairs in different groups are never compared.
//!
//! Inside a group without schema instructions, two instructions on different objects never
//! conflict (Tandem's links are primary-key references that no rule rewrites), so the grid runs
//! per object. That keeps a merge of changesets touching different objects linear in their size.
//! Within one object, the edits of one list are merged stretch by stretch (`segments`), which
//! keeps two long branches editing different parts of a list near linear too.

use std::collections::{BTreeSet, HashMap};

use super::rules::{self, merge_pair, Op, Prepend, CLOCK_LIMIT};
use super::segments;
use super::{Discriminant, TransformError};
use crate::changeset::{Changeset, Instruction, InternString, Payload, PrimaryKey};

/// The shared string table of one merge.
#[derive(Default)]
struct Strings {
    list: Vec<String>,
    index: HashMap<String, InternString>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> InternString {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = InternString(self.list.len() as u32);
        self.list.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// One side of a merge, flattened.
struct Side {
    /// Every changeset's ops in turn (as many as it has instructions).
    ops: Vec<Op>,
    /// Each changeset's string table, as an index into `tables`.
    table_of: Vec<u32>,
    /// Each distinct string table (consecutive equal ones once): the shared index of each of
    /// its strings, by local index.
    tables: Vec<Vec<InternString>>,
}

/// What one pass over a side's changesets finds before they are imported.
#[derive(Default)]
struct Extent {
    /// How many changesets.
    count: usize,
    /// How many instructions in all.
    total: usize,
    /// The largest origin timestamp.
    timestamp: u64,
    /// The distinct origin file idents.
    idents: BTreeSet<u64>,
}

impl Extent {
    fn of<'c>(changesets: impl Iterator<Item = &'c Changeset>) -> Self {
        let mut extent = Extent::default();
        let mut last = None;
        for cs in changesets {
            extent.count += 1;
            extent.total += cs.len();
            extent.timestamp = extent.timestamp.max(cs.meta.origin_timestamp);
            // A run of one file's changesets costs one look-up.
            if last != Some(cs.meta.origin_file_ident) {
                last = Some(cs.meta.origin_file_ident);
                extent.idents.insert(cs.meta.origin_file_ident);
            }
        }
        extent
    }
}

/// Bits of a packed clock below the timestamp, for the file ident's place ([`Clocks::Packed`]).
const PACKED_IDENT_BITS: u32 = 20;

/// The clocks of one merge: each changeset's [`Discriminant`] (timestamp, then file ident) as
/// a number below [`CLOCK_LIMIT`] that orders as the discriminants do, so that an op holds it
/// in 61 bits beside its flags.
enum Clocks {
    /// Every timestamp is below 2^(61 - `bits`) and there are fewer than 2^`bits` distinct file
    /// idents (`idents`, sorted): the timestamp above the ident's place among them. Servers
    /// allocate idents at random up to 2^63 (`server::file`), so the place is packed, not the
    /// ident. With 20 bits: timestamps until 2084 (milliseconds since 2015), a million files.
    Packed { idents: Vec<u64>, bits: u32 },
    /// Otherwise: each discriminant's place among the merge's distinct ones, sorted.
    Ranked(Vec<Discriminant>),
}

impl Clocks {
    /// The clocks of a merge of `left` and `right` (`extents`, theirs).
    fn new(left: &[&Changeset], right: &[Changeset], extents: &[Extent]) -> Self {
        Self::packing(left, right, extents, PACKED_IDENT_BITS)
    }

    /// [`new`](Self::new) with `bits` for the file ident's place in a packed clock.
    fn packing(left: &[&Changeset], right: &[Changeset], extents: &[Extent], bits: u32) -> Self {
        let idents: BTreeSet<u64> = extents.iter().flat_map(|e| &e.idents).copied().collect();
        let timestamp = extents.iter().map(|e| e.timestamp).max().unwrap_or(0);
        if idents.len() < 1 << bits && timestamp < CLOCK_LIMIT >> bits {
            let idents = idents.into_iter().collect();
            return Clocks::Packed { idents, bits };
        }
        let left = left.iter().map(|cs| Discriminant::of(cs));
        let mut all: Vec<Discriminant> = left.chain(right.iter().map(Discriminant::of)).collect();
        all.sort_unstable();
        all.dedup();
        Clocks::Ranked(all)
    }

    /// The clock of `cs`, one of the merge's changesets.
    fn of(&self, cs: &Changeset) -> u64 {
        let disc = Discriminant::of(cs);
        match self {
            Clocks::Packed { idents, bits } => {
                let place = idents.binary_search(&disc.file_ident);
                disc.timestamp << bits | place.expect("every file ident of the merge") as u64
            }
            Clocks::Ranked(all) => {
                let place = all.binary_search(&disc);
                place.expect("every changeset of the merge is ranked") as u64
            }
        }
    }
}

fn import<'c>(
    strings: &mut Strings,
    changesets: impl Iterator<Item = &'c Changeset>,
    extent: &Extent,
    clocks: &Clocks,
) -> Result<Side, TransformError> {
    let mut side = Side {
        ops: Vec::with_capacity(extent.total),
        table_of: Vec::with_capacity(extent.count),
        tables: Vec::new(),
    };
    // Each changeset's table mapped into the shared one; consecutive changesets mostly have
    // equal tables (a typist's keystrokes name one class, object and list), which are mapped
    // once, so that an instruction's strings are not hashed one by one.
    let mut mapped: Option<&Changeset> = None;
    for cs in changesets {
        if !mapped.is_some_and(|m| m.shares_strings_with(cs) || m.strings() == cs.strings()) {
            side.tables.push(
                cs.strings()
                    .iter()
                    .map(|name| strings.intern(name))
                    .collect(),
            );
            mapped = Some(cs);
        }
        side.table_of.push(side.tables.len() as u32 - 1);
        let map = side.tables.last().expect("pushed for the first changeset");
        let clock = clocks.of(cs);
        for instruction in &cs.instructions {
            let mut undefined = None;
            let mut instr = instruction.clone();
            instr.map_strings(&mut |s| match map.get(s.0 as usize) {
                Some(&shared) => shared,
                None => {
                    undefined = Some(s.0);
                    s
                }
            });
            if let Some(index) = undefined {
                return Err(TransformError::UndefinedString { index });
            }
            rules::check_indices(&instr)?;
            side.ops.push(Op::new(instr, clock));
        }
    }
    Ok(side)
}

/// What the rules put before ops of either side during one merge ([`Prepend`]): each with the
/// index of its op in [`Side::ops`], in the order the rules put them.
#[derive(Default)]
pub(super) struct Puts {
    /// Before left ops.
    pub left: Vec<(usize, Instruction)>,
    /// Before right ops.
    pub right: Vec<(usize, Instruction)>,
    /// What `merge_pair` pushed for the pair being merged.
    pub pushed: Vec<Prepend>,
    /// The link columns dropped because their target table is erased concurrently: whether
    /// the `AddColumn` is a right op, its index, and the column (shared table and field).
    dropped: Vec<(bool, usize, InternString, InternString)>,
}

impl Puts {
    /// Files what `merge_pair` pushed for the pair of left op `li` and right op `ri`.
    pub(super) fn file(&mut self, li: usize, ri: usize) {
        for prepend in self.pushed.drain(..) {
            // The `EraseColumn` of a link column the pair's other op added.
            let (list, at, instr, adder_is_right, adder) = match prepend {
                Prepend::BeforeA(instr) => (&mut self.left, li, instr, true, ri),
                Prepend::BeforeB(instr) => (&mut self.right, ri, instr, false, li),
            };
            if let Instruction::EraseColumn { table, field } = instr {
                self.dropped.push((adder_is_right, adder, table, field));
            }
            list.push((at, instr));
        }
    }

    /// Discards every op after a dropped link column's `AddColumn` on its side that writes to
    /// that column (docs/ot.md, schema rules): the erasing side never has the column, and the
    /// adding side erases it with the prepended `EraseColumn`. The writes may be in later
    /// changesets than the `AddColumn` (a new app version adds the property, then writes it),
    /// and need not link into the erased table (null, a `Clear`), so they are found by column,
    /// not through the conflict groups.
    fn drop_writes_to_dropped_columns(&self, left: &mut [Op], right: &mut [Op]) {
        for &(adder_is_right, adder, table, field) in &self.dropped {
            let ops = if adder_is_right {
                &mut *right
            } else {
                &mut *left
            };
            for op in ops.iter_mut().skip(adder + 1) {
                if op
                    .instr
                    .field_path()
                    .is_some_and(|p| p.table == table && p.field == field)
                {
                    op.discard();
                }
            }
        }
    }

    /// Adds `other`'s, filed for a grid run on copies: a copy's index `k` is op `left_at(k)`
    /// or `right_at(k)` here.
    pub(super) fn add_mapped(
        &mut self,
        other: Puts,
        left_at: impl Fn(usize) -> usize,
        right_at: impl Fn(usize) -> usize,
    ) {
        let left = other.left.into_iter();
        self.left.extend(left.map(|(k, instr)| (left_at(k), instr)));
        let right = other.right.into_iter();
        self.right
            .extend(right.map(|(k, instr)| (right_at(k), instr)));
        let dropped = other.dropped.into_iter();
        self.dropped
            .extend(dropped.map(|(on_right, k, table, field)| {
                let at = if on_right { right_at(k) } else { left_at(k) };
                (on_right, at, table, field)
            }));
    }
}

/// What the rules put before one side's ops ([`Puts`]), sorted by op, the last op's first: the
/// exports pop each as they reach its op.
struct PrependCursor(Vec<(usize, Instruction)>);

impl PrependCursor {
    fn new(mut put: Vec<(usize, Instruction)>) -> Self {
        // Stable, so that an op's own keep the order they were put in; then reversed.
        put.sort_by_key(|(index, _)| *index);
        put.reverse();
        PrependCursor(put)
    }

    /// How many are left for ops before `end`.
    fn count_before(&self, end: usize) -> usize {
        self.0.iter().rev().take_while(|(i, _)| *i < end).count()
    }

    /// The next one for op `index`, if any is left.
    fn next_for(&mut self, index: usize) -> Option<Instruction> {
        if self.0.last().is_some_and(|(i, _)| *i == index) {
            self.0.pop().map(|(_, instr)| instr)
        } else {
            None
        }
    }
}

/// The merged form of each changeset of `side` (in order, `changesets` the ones it was imported
/// from; `prepended`, what the rules put before its ops): `None` for a changeset every op of
/// which is alive and as imported, with nothing put before it. The side is consumed: its
/// instructions move into the merged forms instead of being copied.
fn export(
    strings: &Strings,
    mut side: Side,
    changesets: &[&Changeset],
    prepended: Vec<(usize, Instruction)>,
) -> Vec<Option<Changeset>> {
    // Sized once: a merged history of 500,000 changesets grown by doubling spent a quarter of
    // this function moving it (`perf`, `benches/branches.rs`).
    let mut out = Vec::with_capacity(changesets.len());
    let mut local = LocalStrings::new(strings);
    let mut rest = &mut side.ops[..];
    let mut prepended = PrependCursor::new(prepended);
    let mut start = 0;
    // The table of the first changeset of the current run of equal tables (one index, see
    // `import`), held by an empty changeset, and that index: every merged form of the run
    // that keeps its changeset's strings shares it.
    // Taking each changeset's own table instead put a cache miss on every form (the reference
    // count of a table not read since the import: two thirds of this function's time on a
    // long branch, `perf`, `benches/branches.rs`).
    let mut shared: Option<(u32, Changeset)> = None;
    for (cs, &table) in changesets.iter().zip(&side.table_of) {
        let ops = next_ops(&mut rest, cs);
        let put = prepended.count_before(start + ops.len());
        out.push(match local.form(&side.tables, table, ops, cs, put) {
            Form::Unchanged => None,
            // The merged form shares a string table equal to `cs`'s instead of building one of
            // its own.
            Form::SameStrings => {
                let mut merged = match &shared {
                    Some((index, with)) if *index == table => with.with_strings_of(),
                    _ => {
                        let with = cs.with_strings_of();
                        let merged = with.with_strings_of();
                        shared = Some((table, with));
                        merged
                    }
                };
                merged.meta = cs.meta;
                merged.instructions = ops.iter_mut().map(|op| local.map(take(op))).collect();
                Some(merged)
            }
            Form::Rebuilt => Some(rebuilt(strings, ops, cs, &mut prepended, start, put)),
        });
        start += cs.len();
    }
    out
}

/// [`export`] in place: each changeset with a merged form is replaced as soon as it is made,
/// so the old and new forms of a side are never all held at once. A changeset whose ops all
/// survive, with nothing prepended, keeps its string table and gets its instructions rewritten
/// (the usual case: indices and prior sizes moved), which saves building a new table.
fn export_in_place(
    strings: &Strings,
    mut side: Side,
    changesets: &mut [Changeset],
    prepended: Vec<(usize, Instruction)>,
) {
    let mut local = LocalStrings::new(strings);
    let mut rest = &mut side.ops[..];
    let mut prepended = PrependCursor::new(prepended);
    let mut start = 0;
    for (cs, &table) in changesets.iter_mut().zip(&side.table_of) {
        let ops = next_ops(&mut rest, cs);
        let len = ops.len();
        let put = prepended.count_before(start + len);
        match local.form(&side.tables, table, ops, cs, put) {
            Form::Unchanged => {}
            // Each instruction is replaced where it is: no new list.
            Form::SameStrings => {
                for (slot, op) in cs.instructions.iter_mut().zip(ops) {
                    *slot = local.map(take(op));
                }
            }
            Form::Rebuilt => *cs = rebuilt(strings, ops, cs, &mut prepended, start, put),
        }
        start += len;
    }
}

/// The ops of `cs`, taken from the front of `rest` (a side's ops, read where they lie rather
/// than moved into a buffer first).
fn next_ops<'a>(rest: &mut &'a mut [Op], cs: &Changeset) -> &'a mut [Op] {
    let (ops, tail) = std::mem::take(rest).split_at_mut(cs.len());
    *rest = tail;
    ops
}

/// What an export makes of one changeset from its merged ops ([`LocalStrings::form`]).
enum Form {
    /// Every op is alive, with nothing prepended, and as imported: the changeset stays.
    Unchanged,
    /// Every op survives with nothing prepended, and names only strings of the changeset's
    /// own table (the usual case: indices and prior sizes moved): its instructions are
    /// replaced, its table kept.
    SameStrings,
    /// Anything else: made again with a table of its own ([`rebuilt`]).
    Rebuilt,
}

/// Takes `op`'s instruction out, leaving one that owns no heap memory in its place (the op is
/// not read again: the exports take each op's instruction once, then drop the side).
fn take(op: &mut Op) -> Instruction {
    std::mem::replace(
        &mut op.instr,
        Instruction::EraseTable {
            table: InternString(u32::MAX),
        },
    )
}

/// For one changeset at a time, the index in its own table of each shared string.
struct LocalStrings {
    /// By shared index: the local one, for the strings of the table loaded last.
    of: Vec<Option<InternString>>,
    /// The shared indices set in `of`, to clear for another table.
    used: Vec<u32>,
    /// The table loaded last ([`Side::tables`]).
    loaded: Option<u32>,
}

impl LocalStrings {
    fn new(strings: &Strings) -> Self {
        LocalStrings {
            of: vec![None; strings.list.len()],
            used: Vec::new(),
            loaded: None,
        }
    }

    /// What an export makes of `cs` (string table `table` of `tables`) from its merged `ops`,
    /// before which the rules put `put` instructions.
    fn form(
        &mut self,
        tables: &[Vec<InternString>],
        table: u32,
        ops: &mut [Op],
        cs: &Changeset,
        put: usize,
    ) -> Form {
        if put > 0 {
            Form::Rebuilt
        } else if unchanged(&tables[table as usize], ops, cs) {
            Form::Unchanged
        } else if ops.iter().all(|op| op.alive()) && self.find(tables, table, ops) {
            Form::SameStrings
        } else {
            Form::Rebuilt
        }
    }

    /// `instr` with its shared strings replaced by the local ones [`find`](Self::find) found.
    fn map(&self, mut instr: Instruction) -> Instruction {
        instr.map_strings(&mut |s| self.of[s.0 as usize].expect("found by `find`"));
        instr
    }

    /// Loads table `table` of `tables` (the import's mapping of a changeset's own table,
    /// reversed) unless it is the one loaded last, then answers whether every shared string
    /// `ops` use is in it. Consecutive changesets mostly share a table, so neither a string
    /// comparison nor a search per string is needed (searching a changeset's table for each
    /// string an instruction names was 14% of a long branch's merge, `benches/branches.rs`).
    fn find(&mut self, tables: &[Vec<InternString>], table: u32, ops: &mut [Op]) -> bool {
        if self.loaded != Some(table) {
            for s in self.used.drain(..) {
                self.of[s as usize] = None;
            }
            for (local, &shared) in tables[table as usize].iter().enumerate() {
                self.of[shared.0 as usize] = Some(InternString(local as u32));
                self.used.push(shared.0);
            }
            self.loaded = Some(table);
        }
        let mut missing = false;
        for op in ops {
            // Read only: every string is given back as it is.
            op.instr.map_strings(&mut |s| {
                missing |= self.of[s.0 as usize].is_none();
                s
            });
        }
        !missing
    }
}

/// Whether every op is alive and as imported from `cs` (whose table the import mapped into the
/// shared one as `map`).
fn unchanged(map: &[InternString], ops: &[Op], cs: &Changeset) -> bool {
    // An op a rule may have changed is compared with the instruction as imported, made again
    // (strings in the shared table) one at a time rather than kept beside every op.
    ops.iter().zip(&cs.instructions).all(|(op, source)| {
        op.alive()
            && !op.changed()
            && (!op.touched() || {
                let mut imported = source.clone();
                // The import refused a changeset naming a string its table lacks.
                imported.map_strings(&mut |s| map[s.0 as usize]);
                op.instr == imported
            })
    })
}

/// `cs` (its metadata) made again from its merged ops, which it takes: what the rules put
/// before each op (`put` of them, taken from `prepended`; the first op is op `start` of its
/// side), then the op if it is alive, with a string table of their own.
fn rebuilt(
    strings: &Strings,
    ops: &mut [Op],
    cs: &Changeset,
    prepended: &mut PrependCursor,
    start: usize,
    put: usize,
) -> Changeset {
    let mut out = Changeset::new();
    out.meta = cs.meta;
    // Exactly as many as it will hold: a merged history of one-instruction changesets would
    // otherwise hold room for four in each.
    out.instructions = Vec::with_capacity(put + ops.iter().filter(|op| op.alive()).count());
    for (index, op) in (start..).zip(ops) {
        let kept = op.alive().then(|| take(op));
        let before = std::iter::from_fn(|| prepended.next_for(index));
        for mut instr in before.chain(kept) {
            instr.map_strings(&mut |s| out.intern(&strings.list[s.0 as usize]));
            out.push(instr);
        }
    }
    out
}

/// Replaces each changeset that has a merged form by it.
fn write_back(changesets: &mut [Changeset], merged: Vec<Option<Changeset>>) {
    for (cs, out) in changesets.iter_mut().zip(merged) {
        if let Some(out) = out {
            *cs = out;
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum GroupKey {
    Object(InternString, PrimaryKey),
    Table(InternString),
}

fn key_of(instr: &Instruction) -> GroupKey {
    match instr {
        Instruction::AddTable(a) => GroupKey::Table(a.table),
        Instruction::EraseTable { table } => GroupKey::Table(*table),
        Instruction::AddColumn(a) => GroupKey::Table(a.table),
        Instruction::EraseColumn { table, .. } => GroupKey::Table(*table),
        other => match other.object() {
            Some((table, pk)) => GroupKey::Object(table, pk.clone()),
            None => GroupKey::Table(InternString(u32::MAX)),
        },
    }
}

/// Union-find over group keys.
#[derive(Default)]
struct Groups {
    ids: HashMap<GroupKey, usize>,
    parent: Vec<usize>,
}

impl Groups {
    fn id(&mut self, key: GroupKey) -> usize {
        let next = self.parent.len();
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.parent.push(next);
        }
        id
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra] = rb;
        }
    }
}

/// Transforms `left` (applied here) and `right` (incoming) against each other. On error both
/// are unchanged: the results are written back only after every pair has merged.
pub(super) fn merge(left: &mut [Changeset], right: &mut [Changeset]) -> Result<(), TransformError> {
    merge_with(left, right, true)
}

/// `indexed == false` compares every pair in one grid: the same rules without conflict groups,
/// kept as the benchmark's baseline for what the index saves.
pub(super) fn merge_with(
    left: &mut [Changeset],
    right: &mut [Changeset],
    indexed: bool,
) -> Result<(), TransformError> {
    let refs: Vec<&Changeset> = left.iter().collect();
    let merged = merge_refs_with(&refs, right, indexed)?;
    write_back(left, merged);
    Ok(())
}

/// [`merge`] with the left side borrowed: returns the merged form of each left changeset, or
/// `None` where merging left it as it is (so that a caller keeping a copy of each need not
/// copy the unchanged ones). On error `right` is unchanged.
pub(super) fn merge_refs(
    left: &[&Changeset],
    right: &mut [Changeset],
) -> Result<Vec<Option<Changeset>>, TransformError> {
    merge_refs_with(left, right, true)
}

fn merge_refs_with(
    left: &[&Changeset],
    right: &mut [Changeset],
    indexed: bool,
) -> Result<Vec<Option<Changeset>>, TransformError> {
    merge_unnamed(left, right, indexed).map_err(|e| match e {
        // The rules compare names as the merge's shared indices; the names and both
        // definitions are found again in the changesets, which an error leaves as they were.
        TransformError::SchemaMismatch { what } => TransformError::SchemaMismatch {
            what: name_schema_mismatch(left, right).unwrap_or(what),
        },
        other => other,
    })
}

/// The first `AddTable` or `AddColumn` of `right` that defines a table or column of `left`
/// differently, with the table (and column) named and both definitions as the changesets'
/// `Display` renders them: `AddColumn X.v: String here, AddColumn X.v: Int incoming`. One pass
/// over each side's instructions.
fn name_schema_mismatch(left: &[&Changeset], right: &[Changeset]) -> Option<String> {
    /// What an `AddTable` or `AddColumn` defines, by name: the table, and the column if any.
    fn defines(cs: &Changeset, instr: &Instruction) -> Option<(String, Option<String>)> {
        let name = |s| cs.string(s).map(str::to_owned);
        match instr {
            Instruction::AddTable(add) => Some((name(add.table)?, None)),
            Instruction::AddColumn(add) => Some((name(add.table)?, Some(name(add.field)?))),
            _ => None,
        }
    }
    let mut here: HashMap<(String, Option<String>), String> = HashMap::new();
    for cs in left {
        for instr in &cs.instructions {
            if let Some(key) = defines(cs, instr) {
                here.entry(key)
                    .or_insert_with(|| cs.display_instruction(instr).to_string());
            }
        }
    }
    right.iter().find_map(|cs| {
        cs.instructions.iter().find_map(|instr| {
            let mine = here.get(&defines(cs, instr)?)?;
            let theirs = cs.display_instruction(instr).to_string();
            (*mine != theirs).then(|| format!("{mine} here, {theirs} incoming"))
        })
    })
}

fn merge_unnamed(
    left: &[&Changeset],
    right: &mut [Changeset],
    indexed: bool,
) -> Result<Vec<Option<Changeset>>, TransformError> {
    if left.iter().all(|c| c.is_empty()) || right.iter().all(Changeset::is_empty) {
        return Ok(vec![None; left.len()]);
    }
    let mut strings = Strings::default();
    let extents = [Extent::of(left.iter().copied()), Extent::of(right.iter())];
    let clocks = Clocks::new(left, right, &extents);
    let mut l = import(&mut strings, left.iter().copied(), &extents[0], &clocks)?;
    let mut r = import(&mut strings, right.iter(), &extents[1], &clocks)?;
    if !indexed {
        let all_left: Vec<usize> = (0..l.ops.len()).collect();
        let all_right: Vec<usize> = (0..r.ops.len()).collect();
        let mut puts = Puts::default();
        grid(&mut l.ops, &mut r.ops, &all_left, &all_right, &mut puts)?;
        return Ok(finish(&strings, l, r, puts, left, right));
    }

    // Group keys, joined through links and through schema instructions. One pass over each
    // side's ops (136 bytes each then: at a million ops every further pass was about 15 ms of
    // memory traffic, `benches/branches.rs`); the buckets are then made from what it kept.
    let mut groups = Groups::default();
    let mut found = Found::default();
    let l_ids = join_all(&mut groups, &l.ops, &mut found);
    let r_ids = join_all(&mut groups, &r.ops, &mut found);
    if !found.erased_tables.is_empty() {
        let keys: Vec<GroupKey> = groups.ids.keys().cloned().collect();
        for key in keys {
            if let GroupKey::Object(table, _) = &key {
                if found.erased_tables.contains(table) {
                    let (a, b) = (groups.id(key.clone()), groups.id(GroupKey::Table(*table)));
                    groups.union(a, b);
                }
            }
        }
    }
    let schema_groups: std::collections::HashSet<usize> =
        found.schema_ids.iter().map(|&id| groups.find(id)).collect();

    // Buckets: a whole group where schema instructions are involved, else one object.
    #[derive(Default)]
    struct Bucket {
        left: Vec<usize>,
        right: Vec<usize>,
    }
    // (in a schema group, that group's root; else the id of the op's own key)
    type BucketKey = (bool, usize);
    let mut index: HashMap<BucketKey, usize> = HashMap::new();
    let mut buckets: Vec<(BucketKey, Bucket)> = Vec::new();
    let bucket_of = |groups: &mut Groups, id: usize| {
        let root = groups.find(id);
        if schema_groups.contains(&root) {
            (true, root)
        } else {
            // The id of the op's own key: one object.
            (false, id)
        }
    };
    // Consecutive instructions mostly act on one object: the last bucket is tried first.
    let mut last: Option<usize> = None;
    for (i, &id) in l_ids.iter().enumerate() {
        let k = bucket_of(&mut groups, id);
        let b = match last.filter(|&b| buckets[b].0 == k) {
            Some(b) => b,
            None => *index.entry(k).or_insert_with(|| {
                buckets.push((k, Bucket::default()));
                buckets.len() - 1
            }),
        };
        buckets[b].1.left.push(i);
        last = Some(b);
    }
    last = None;
    for (i, &id) in r_ids.iter().enumerate() {
        let k = bucket_of(&mut groups, id);
        let b = match last.filter(|&b| buckets[b].0 == k) {
            Some(b) => Some(b),
            None => index.get(&k).copied(),
        };
        if let Some(b) = b {
            buckets[b].1.right.push(i);
        }
        last = b;
    }
    let mut puts = Puts::default();
    let (lo, ro) = (&mut l.ops, &mut r.ops);
    for (key, bucket) in &buckets {
        if bucket.right.is_empty() {
            continue;
        }
        if key.0 {
            grid(lo, ro, &bucket.left, &bucket.right, &mut puts)?;
        } else {
            // One object: long runs of edits of one list are merged stretch by stretch.
            let (left_rest, right_rest) =
                segments::merge_lists(lo, ro, &bucket.left, &bucket.right, &mut puts)?;
            grid(lo, ro, &left_rest, &right_rest, &mut puts)?;
        }
    }

    Ok(finish(&strings, l, r, puts, left, right))
}

/// What every merge does once its pairs are merged: drops the writes to link columns dropped
/// with an erased table ([`Puts::drop_writes_to_dropped_columns`]), writes the right side's
/// merged forms into `right`, and returns the left side's.
fn finish(
    strings: &Strings,
    mut l: Side,
    mut r: Side,
    puts: Puts,
    left: &[&Changeset],
    right: &mut [Changeset],
) -> Vec<Option<Changeset>> {
    puts.drop_writes_to_dropped_columns(&mut l.ops, &mut r.ops);
    export_in_place(strings, r, right, puts.right);
    export(strings, l, left, puts.left)
}

/// What [`join_all`] finds besides each op's group: the tables erased (by `EraseTable` or
/// `EraseColumn`) and the group ids of schema instructions, on both sides.
#[derive(Default)]
struct Found {
    erased_tables: Vec<InternString>,
    schema_ids: Vec<usize>,
}

/// [`join`] for each op in turn: the id of each op's own [`key_of`] (equal keys, equal ids, on
/// both sides), joined with the groups it reaches. An op with the same key as the one before
/// it and nothing to join through (no link payload, not a link column) gets the same id
/// without a lookup. Schema instructions and erased tables go into `found`.
fn join_all(groups: &mut Groups, ops: &[Op], found: &mut Found) -> Vec<usize> {
    let mut ids = Vec::with_capacity(ops.len());
    let mut last: Option<(GroupKey, usize)> = None;
    for op in ops {
        if let Instruction::EraseTable { table } | Instruction::EraseColumn { table, .. } = op.instr
        {
            found.erased_tables.push(table);
        }
        let plain = !matches!(op.instr.payload(), Some(Payload::Link(_)))
            && !matches!(op.instr, Instruction::AddColumn(_));
        let key = key_of(&op.instr);
        let id = match &last {
            Some((last_key, id)) if plain && *last_key == key => *id,
            _ => {
                let id = join(groups, key.clone(), &op.instr);
                last = plain.then_some((key, id));
                id
            }
        };
        if op.instr.is_schema_change() {
            found.schema_ids.push(id);
        }
        ids.push(id);
    }
    ids
}

/// The group id of an instruction (`key`, its [`key_of`]), joined with the groups its links and
/// link columns reach.
fn join(groups: &mut Groups, key: GroupKey, instr: &Instruction) -> usize {
    let id = groups.id(key);
    if let Some(Payload::Link(link)) = instr.payload() {
        let target = groups.id(GroupKey::Object(link.target_table, link.target.clone()));
        groups.union(id, target);
    }
    if let Instruction::AddColumn(add) = instr {
        if let crate::changeset::ColumnType::Link { target_table } = add.column_type {
            let target = groups.id(GroupKey::Table(target_table));
            groups.union(id, target);
        }
    }
    id
}

/// Every left op against the right ops, in sequence order on both sides; what the rules put
/// before ops goes into `puts`.
pub(super) fn grid(
    left: &mut [Op],
    right: &mut [Op],
    left_idx: &[usize],
    right_idx: &[usize],
    puts: &mut Puts,
) -> Result<(), TransformError> {
    // Every op here may be changed (marked once, not per pair: the scan stays read-only).
    for &li in left_idx {
        left[li].touch();
    }
    for &ri in right_idx {
        right[ri].touch();
    }
    let mut live: Vec<usize> = right_idx.to_vec();
    for &li in left_idx {
        let mut dead = 0;
        for &ri in &live {
            if !left[li].alive() {
                break;
            }
            if right[ri].alive() {
                merge_pair(&mut left[li], &mut right[ri], &mut puts.pushed)?;
                if !puts.pushed.is_empty() {
                    puts.file(li, ri);
                }
            }
            if !right[ri].alive() {
                dead += 1;
            }
        }
        if dead * 2 > live.len() {
            live.retain(|&ri| right[ri].alive());
        }
        if live.is_empty() {
            break;
        }
    }
    Ok(())
}

/// A primary key with its string (if any) as an id of [`MergeReach`]'s name table.
#[derive(PartialEq, Eq, Hash)]
enum ReachPk {
    String(u32),
    /// Every other kind holds no interned string.
    Plain(PrimaryKey),
}

/// A [`GroupKey`] with its names as ids of [`MergeReach`]'s name table.
#[derive(PartialEq, Eq, Hash)]
enum ReachKey {
    Object(u32, ReachPk),
    Table(u32),
    /// `key_of`'s catch-all for an instruction that addresses neither.
    Unaddressed,
}

/// What a set of changesets can meet in a `merge`: the keys of every group their
/// instructions belong to or join (`join`: their own, a link payload's target, a link
/// column's target table), the tables those keys name, and the tables they erase (which join
/// every object of the table to its group). Built once from one side, it answers
/// [`meets`](Self::meets) for any number of changesets of the other side, each in time linear
/// in its size, so that a merge with a changeset it cannot meet (which is the identity for
/// both) can be left out without importing anything: a fresh client's schema changeset need
/// not meet a history of bulk inserts.
pub struct MergeReach {
    /// Table names and string keys, by id.
    names: HashMap<String, u32>,
    keys: std::collections::HashSet<ReachKey>,
    tables: std::collections::HashSet<u32>,
    erased: std::collections::HashSet<u32>,
    /// A changeset of the set names a string it does not define: it meets everything, so that
    /// the merge reports the error.
    undefined: bool,
    /// A changeset of the set erases a table (the one rule that adds instructions, see
    /// [`ReciprocalHistory::needs_merge`](super::ReciprocalHistory::needs_merge)).
    erases_table: bool,
}

impl MergeReach {
    /// The reach of `changesets` together.
    pub fn of<'a>(changesets: impl IntoIterator<Item = &'a Changeset>) -> Self {
        let mut reach = MergeReach {
            names: HashMap::new(),
            keys: Default::default(),
            tables: Default::default(),
            erased: Default::default(),
            undefined: false,
            erases_table: false,
        };
        for cs in changesets {
            for instr in &cs.instructions {
                reach.erases_table |= matches!(instr, Instruction::EraseTable { .. });
                let id = |s: InternString, reach: &mut MergeReach| match cs.string(s) {
                    Some(name) => {
                        let next = reach.names.len() as u32;
                        Some(*reach.names.entry(name.to_owned()).or_insert(next))
                    }
                    None => {
                        reach.undefined = true;
                        None
                    }
                };
                let keys = reach_keys(instr, &mut |s| id(s, &mut reach));
                let Some(keys) = keys else {
                    continue;
                };
                reach.tables.extend(keys.iter().filter_map(key_table));
                reach.keys.extend(keys);
                if let Some(t) = erased_table(instr) {
                    if let Some(t) = id(t, &mut reach) {
                        reach.erased.insert(t);
                    }
                }
            }
        }
        reach
    }

    /// Whether the set erases a table.
    pub fn erases_table(&self) -> bool {
        self.erases_table
    }

    /// Whether merging the set with `other` could change either: false only when no
    /// instruction of `other` can meet one of the set in a conflict group (no shared object or
    /// table key, none joined through a link, a link column or an erased table). An undefined
    /// string on either side answers `true`, so that the merge reports it.
    pub fn meets(&self, other: &Changeset) -> bool {
        if other.is_empty() || (self.keys.is_empty() && !self.undefined) {
            return false;
        }
        if self.undefined {
            return true;
        }
        other
            .instructions
            .iter()
            .any(|instr| self.meets_instruction(other, instr))
    }

    /// [`meets`](Self::meets) for a changeset still encoded, decoded one instruction at a time
    /// ([`Changeset::stream`]) and only until the answer is known: a large changeset that
    /// cannot meet the set is never held decoded. With [`ErasedTables::AlwaysMeet`], an
    /// `EraseTable` in `bytes` answers `true` as well (what
    /// [`ReciprocalHistory::needs_merge`](super::ReciprocalHistory::needs_merge) asks of an
    /// incoming changeset that erases a table). Bytes that do not decode answer `true`, so
    /// that the caller decodes them and reports the error.
    pub fn meets_encoded(&self, bytes: &[u8], erased_tables: ErasedTables) -> bool {
        let erase_table_meets = erased_tables == ErasedTables::AlwaysMeet;
        if bytes.is_empty() {
            return false;
        }
        let nothing_to_meet = self.keys.is_empty() && !self.undefined;
        if self.undefined || (nothing_to_meet && !erase_table_meets) {
            return self.undefined;
        }
        let mut stream = Changeset::stream(bytes);
        loop {
            match stream.next_instruction() {
                Ok(Some(instr)) => {
                    if erase_table_meets && matches!(instr, Instruction::EraseTable { .. }) {
                        return true;
                    }
                    if !nothing_to_meet && self.meets_instruction(stream.strings(), &instr) {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Whether `instr` (its strings in `strings`) can meet the set: the per-instruction test of
    /// [`meets`](Self::meets).
    fn meets_instruction(&self, strings: &Changeset, instr: &Instruction) -> bool {
        // A name the set never uses cannot be part of a key of the set: it gets an id no key,
        // table or erased table of the set has.
        let mut id = |s: InternString| {
            let name = strings.string(s)?;
            Some(self.names.get(name).copied().unwrap_or(u32::MAX))
        };
        let Some(keys) = reach_keys(instr, &mut id) else {
            return true;
        };
        for key in &keys {
            if self.keys.contains(key) || key_table(key).is_some_and(|t| self.erased.contains(&t)) {
                return true;
            }
        }
        if let Some(t) = erased_table(instr) {
            match id(t) {
                Some(t) if !self.tables.contains(&t) => {}
                _ => return true,
            }
        }
        false
    }
}

/// What [`MergeReach::meets_encoded`] makes of an `EraseTable` instruction in the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasedTables {
    /// Like any instruction: it meets the set when the set touches the table
    /// ([`MergeReach::meets`]'s rule).
    ByReach,
    /// It always meets the set, whatever the set touches.
    AlwaysMeet,
}

/// The keys [`join`] unions for `instr` (its own, a link payload's target, a link column's
/// target table), names mapped by `id`, or `None` if `id` finds a name undefined.
fn reach_keys(
    instr: &Instruction,
    id: &mut impl FnMut(InternString) -> Option<u32>,
) -> Option<Vec<ReachKey>> {
    fn pk(p: &PrimaryKey, id: &mut impl FnMut(InternString) -> Option<u32>) -> Option<ReachPk> {
        match p {
            PrimaryKey::String(s) => id(*s).map(ReachPk::String),
            other => Some(ReachPk::Plain(other.clone())),
        }
    }
    let mut keys = Vec::with_capacity(2);
    keys.push(match key_of(instr) {
        GroupKey::Table(InternString(u32::MAX)) => ReachKey::Unaddressed,
        GroupKey::Table(t) => ReachKey::Table(id(t)?),
        GroupKey::Object(t, p) => ReachKey::Object(id(t)?, pk(&p, id)?),
    });
    if let Some(Payload::Link(link)) = instr.payload() {
        keys.push(ReachKey::Object(
            id(link.target_table)?,
            pk(&link.target, id)?,
        ));
    }
    if let Instruction::AddColumn(add) = instr {
        if let crate::changeset::ColumnType::Link { target_table } = add.column_type {
            keys.push(ReachKey::Table(id(target_table)?));
        }
    }
    Some(keys)
}

fn key_table(key: &ReachKey) -> Option<u32> {
    match key {
        ReachKey::Object(t, _) | ReachKey::Table(t) => Some(*t),
        ReachKey::Unaddressed => None,
    }
}

fn erased_table(instr: &Instruction) -> Option<InternString> {
    match instr {
        Instruction::EraseTable { table } | Instruction::EraseColumn { table, .. } => Some(*table),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::MergeReach;
    use crate::changeset::{
        AddColumn, Changeset, ColumnCollection, ColumnType, FieldPath, Instruction, Link, Payload,
        PayloadType, PrimaryKey, Update,
    };

    /// Whether merging `a` with `b` could change either, asked both ways (the answer must not
    /// depend on which side the reach was built from).
    fn may_interact(a: &Changeset, b: &Changeset) -> bool {
        let forward = MergeReach::of(std::slice::from_ref(a)).meets(b);
        assert_eq!(forward, MergeReach::of(std::slice::from_ref(b)).meets(a));
        forward
    }

    /// One changeset of `ops`, each `(kind, table, pk, field_or_target)`.
    fn cs(ops: &[(&str, &str, i64, &str)]) -> Changeset {
        let mut c = Changeset::new();
        for &(kind, table, pk, extra) in ops {
            let t = c.intern(table);
            let instr = match kind {
                "create" => Instruction::CreateObject {
                    table: t,
                    object: PrimaryKey::Int(pk),
                },
                "set" | "link" => {
                    let field = c.intern("f");
                    let value = if kind == "link" {
                        Payload::Link(Link {
                            target_table: c.intern(extra),
                            target: PrimaryKey::Int(pk + 1000),
                        })
                    } else {
                        Payload::Int(pk)
                    };
                    Instruction::Update(Update {
                        path: FieldPath {
                            table: t,
                            object: PrimaryKey::Int(pk),
                            field,
                            path: Default::default(),
                        },
                        value,
                        is_default: false,
                        prior_size: 0,
                    })
                }
                "add_column" | "add_link_column" => Instruction::AddColumn(AddColumn {
                    table: t,
                    field: c.intern(extra),
                    column_type: if kind == "add_link_column" {
                        ColumnType::Link {
                            target_table: c.intern("Target"),
                        }
                    } else {
                        ColumnType::Value(PayloadType::Int)
                    },
                    nullable: false,
                    collection: ColumnCollection::Single,
                }),
                "erase_table" => Instruction::EraseTable { table: t },
                "erase_column" => Instruction::EraseColumn {
                    table: t,
                    field: c.intern(extra),
                },
                other => panic!("{other}"),
            };
            c.push(instr);
        }
        c
    }

    #[test]
    fn schema_additions_do_not_meet_objects_of_their_table() {
        let schema = cs(&[("add_column", "Task", 0, "title")]);
        let bulk = cs(&[("create", "Task", 1, ""), ("set", "Task", 1, "")]);
        assert!(!may_interact(&schema, &bulk));
        assert!(!may_interact(&bulk, &schema));
        // The same addition on both sides meets (the merge checks they agree).
        let other_schema = cs(&[("add_column", "Task", 0, "done"), ("create", "Task", 1, "")]);
        assert!(may_interact(&schema, &other_schema));
    }

    #[test]
    fn objects_meet_by_key_and_through_links() {
        let a = cs(&[("set", "Task", 1, "")]);
        assert!(may_interact(&a, &cs(&[("create", "Task", 1, "")])));
        assert!(!may_interact(&a, &cs(&[("create", "Task", 2, "")])));
        assert!(!may_interact(&a, &cs(&[("create", "Other", 1, "")])));
        // b links Other/1 to Task/1001; a touches Task/1001.
        let b = cs(&[("link", "Other", 1, "Task")]);
        assert!(may_interact(&cs(&[("set", "Task", 1001, "")]), &b));
        assert!(!may_interact(&cs(&[("set", "Task", 1002, "")]), &b));
        // A link column reaches its target table's schema instructions.
        let link_column = cs(&[("add_link_column", "Other", 0, "to")]);
        assert!(may_interact(
            &link_column,
            &cs(&[("add_column", "Target", 0, "x")])
        ));
        assert!(!may_interact(
            &link_column,
            &cs(&[("create", "Target", 5, "")])
        ));
    }

    #[test]
    fn erasures_meet_everything_in_their_table() {
        let objects = cs(&[("set", "Task", 1, ""), ("create", "Task", 2, "")]);
        for eraser in [
            cs(&[("erase_table", "Task", 0, "")]),
            cs(&[("erase_column", "Task", 0, "f")]),
        ] {
            assert!(may_interact(&eraser, &objects));
            assert!(may_interact(&objects, &eraser));
            assert!(!may_interact(&eraser, &cs(&[("set", "Other", 1, "")])));
        }
        // The larger side's erasure is found too.
        let big_eraser = cs(&[
            ("create", "Other", 1, ""),
            ("create", "Other", 2, ""),
            ("erase_column", "Task", 0, "f"),
        ]);
        assert!(may_interact(&cs(&[("set", "Task", 9, "")]), &big_eraser));
    }

    #[test]
    fn empty_changesets_meet_nothing() {
        assert!(!may_interact(
            &Changeset::new(),
            &cs(&[("set", "Task", 1, "")])
        ));
    }

    /// One changeset setting `A[1].n` to `value`, made at `timestamp` by file `ident`.
    fn set_at(value: i64, timestamp: u64, ident: u64) -> Changeset {
        let mut c = cs(&[("set", "A", 1, "")]);
        if let Instruction::Update(update) = &mut c.instructions[0] {
            update.value = Payload::Int(value);
        }
        c.meta.origin_timestamp = timestamp;
        c.meta.origin_file_ident = ident;
        c
    }

    proptest::proptest! {
        /// Packed (fewer than 2^`bits` distinct file idents and every timestamp below
        /// 2^(61 - `bits`)) or ranked, clocks order as the discriminants do, equal ones equal,
        /// all below `CLOCK_LIMIT`. Small `bits` so that both forms occur.
        #[test]
        fn clocks_order_as_the_discriminants_do(
            keys in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        4 => 0u64..6,
                        1 => proptest::sample::select(vec![
                            (1 << 58) - 1, 1 << 58, 1 << 59, 1 << 60, u64::MAX - 1, u64::MAX,
                        ]),
                    ],
                    // Six idents, small and as large as servers allocate, so that a merge
                    // has more or fewer than 2^`bits`.
                    proptest::sample::select(vec![1, 2, 3, 1 << 40, (1 << 62) + 7, u64::MAX]),
                ),
                1..40,
            ),
            split in 0usize..40,
            bits in 1u32..4,
        ) {
            use super::{Clocks, Extent, CLOCK_LIMIT};
            use crate::ot::Discriminant;
            use proptest::prelude::*;
            use std::collections::BTreeSet;
            let all: Vec<Changeset> = keys.iter().map(|&(t, f)| set_at(0, t, f)).collect();
            let (left, right) = all.split_at(split.min(all.len()));
            let left: Vec<&Changeset> = left.iter().collect();
            let extents = [Extent::of(left.iter().copied()), Extent::of(right.iter())];
            let clocks = Clocks::packing(&left, right, &extents, bits);
            let idents: BTreeSet<u64> = keys.iter().map(|&(_, f)| f).collect();
            let fits = idents.len() < 1 << bits
                && keys.iter().all(|&(t, _)| t < CLOCK_LIMIT >> bits);
            prop_assert_eq!(matches!(clocks, Clocks::Packed { .. }), fits);
            for x in &all {
                prop_assert!(clocks.of(x) < CLOCK_LIMIT);
                for y in &all {
                    prop_assert_eq!(
                        clocks.of(x).cmp(&clocks.of(y)),
                        Discriminant::of(x).cmp(&Discriminant::of(y))
                    );
                }
            }
        }
    }

    /// Last writer wins by the same keys whatever their size: sets of one field by files with
    /// idents as servers allocate them (random, up to 2^63: packed by their place) or at
    /// timestamps past 2^41 (ranked) merge as the same sets with small keys do.
    #[test]
    fn large_keys_merge_as_small_ones() {
        use super::{Clocks, Extent};
        let random = [0x5a3c_91e2_07d4_b6f1, 0x6e0f_2b7d_9c41_83a5];
        for (small, large, packed) in [
            (
                [(100, 5), (100, 7)],
                [(100, random[0]), (100, random[1])],
                true,
            ),
            (
                [(100, 7), (100, 5)],
                [(100, random[1]), (100, random[0])],
                true,
            ),
            (
                [(100, 5), (101, 5)],
                [(u64::MAX - 1, 5), (u64::MAX, 5)],
                false,
            ),
            (
                [(101, 5), (100, 5)],
                [(u64::MAX, 5), (u64::MAX - 1, 5)],
                false,
            ),
        ] {
            let pair = |keys: [(u64, u64); 2]| {
                (
                    [set_at(1, keys[0].0, keys[0].1)],
                    [set_at(2, keys[1].0, keys[1].1)],
                )
            };
            let (left, right) = pair(large);
            let extents = [Extent::of(left.iter()), Extent::of(right.iter())];
            let clocks = Clocks::new(&[&left[0]], &right, &extents);
            assert_eq!(matches!(clocks, Clocks::Packed { .. }), packed, "{large:?}");
            let merged = |keys| {
                let (mut left, mut right) = pair(keys);
                super::merge(&mut left, &mut right).unwrap();
                (left[0].instructions.clone(), right[0].instructions.clone())
            };
            let (narrow, wide) = (merged(small), merged(large));
            assert_eq!(narrow, wide, "{small:?} against {large:?}");
            // One of the two sets is discarded on its way to the other side.
            assert_eq!(narrow.0.len() + narrow.1.len(), 1, "{small:?}");
        }
    }
}
