//! Long runs of edits of one list, merged stretch by stretch.
//!
//! Two branches that each made many edits of one top-level list meet every edit of the other
//! in the grid (`merge::grid`): n x m pairs, the cost of merging a long offline branch. This
//! module gives exactly the grid's result in O((s + n + m) log(s + n + m)) plus a grid per
//! stretch of the list that both branches edited.
//!
//! # Why it is exact
//!
//! Call an element of the common base list *solid* if neither branch erases it. A solid
//! element is alive in every context the grid transforms in (the base plus any prefix of
//! either branch), so an edit on one side of it and an edit on the other side never have equal
//! or crossing indices: their pair only shifts each other by one, which is what an insert or
//! an erase before an edit always does. The solid elements cut the list into *stretches*
//! (everything strictly between two consecutive solid elements, erased base elements and
//! inserts included); every pair rule is invariant under adding the same number to both
//! indices and to the prior size, and two edits discard each other only when they act on one
//! element, which lies in one stretch. So the grid's result for an edit is its stretch's own
//! grid (indices counted from the stretch's start) plus the number of elements in front of the
//! stretch in the context the edit is applied in, which a Fenwick tree over the stretches'
//! sizes gives as each side's edits are walked in order. A set of a solid element meets only
//! sets of that element and has a place of its own.
//!
//! What the grid decides between two edits of one stretch cannot be decided slot by slot
//! between base elements: an erase merges the gaps on both sides of its element, so an insert
//! can tie with an insert that, in the base's terms, lies on the other side of an element the
//! other branch erased; and no single order of all elements agrees with every context the grid
//! uses (a base `[e]`, A = insert after `e`, erase it, insert at 0, B = erase `e`, insert at 0
//! forces `e < x1 < y < x3 < e`). So each stretch runs the real grid.
//!
//! The argument and the algorithm were checked against a model of the grid on 260,600 random
//! and typing-like cases with no difference (issue 18's research); `tests` below checks this
//! implementation against the plain grid.
//!
//! # When it applies
//!
//! To the edits (`ArrayInsert`, `ArrayErase`, `Update` of an element) of one top-level list
//! of one object when nothing else in the merge touches that list or erases the object, and
//! when each side's prior sizes tell one consistent story from the same base size. Anything
//! else (a move, a clear, an edit inside an element, inconsistent sizes) leaves the list to the
//! grid, which also reports the errors.

use std::collections::HashMap;

use super::merge::{grid, Puts};
use super::rules::{write_edit, ListEdit, Op};
use super::TransformError;
use crate::changeset::{Instruction, InternString, PathElement};

/// Below this many pairs the grid is cheaper than building the stretches. Unit tests use 1 so
/// that every merge they make takes this path.
const MIN_PAIRS: usize = if cfg!(test) { 1 } else { 64 };

/// The stretches cost a few steps per element of the list's base (`s`) and per edit, whatever
/// the edits, against one rule per pair for the grid: they are taken only when the pairs are
/// at least this many times `s + n + m` (a long list with a few edits on each side stays with
/// the grid). Unit tests use 0, as for [`MIN_PAIRS`].
const PAIRS_PER_ELEMENT: usize = if cfg!(test) { 0 } else { 4 };

/// Counts with prefix sums and search by position (a Fenwick tree, 1-based inside), with a
/// finger: the slot last found or summed up to. The edits of a list mostly land next to the
/// one before (a typist's keystrokes), so [`find`](Self::find) looks a few slots around the
/// finger before it walks the tree, and [`before`](Self::before) of the finger's slot is kept.
/// For the same reason consecutive [`add`](Self::add)s mostly change one slot: they are summed
/// and reach the tree only when another slot changes or the tree is walked (walking it up on
/// every add was a tenth of a long branch's merge, callgrind on `benches/branches.rs`).
struct Fenwick {
    /// Up to date but for `pending`.
    tree: Vec<i64>,
    /// A change of one slot not yet added to `tree` (slot, delta); `counts`, `total` and the
    /// finger have it.
    pending: (usize, i64),
    counts: Vec<i64>,
    /// The sum of `counts`, kept so that [`Fenwick::find`] does not walk the tree for it.
    total: i64,
    /// The finger's slot, and the sum of the counts before it (kept up to date by `add`).
    finger: usize,
    finger_before: i64,
}

/// How many slots [`Fenwick::find`] looks at, the finger's first, before it walks the tree.
const FINGER_STEPS: usize = 8;

impl Fenwick {
    fn new(counts: Vec<i64>) -> Self {
        let n = counts.len();
        let mut tree = vec![0; n + 1];
        for (i, &c) in counts.iter().enumerate() {
            tree[i + 1] += c;
            let parent = (i + 1) + ((i + 1) & (i + 1).wrapping_neg());
            if parent <= n {
                tree[parent] += tree[i + 1];
            }
        }
        let total = counts.iter().sum();
        Fenwick {
            tree,
            pending: (0, 0),
            counts,
            total,
            finger: 0,
            finger_before: 0,
        }
    }

    fn add(&mut self, slot: usize, delta: i64) {
        self.counts[slot] += delta;
        self.total += delta;
        if slot < self.finger {
            self.finger_before += delta;
        }
        if self.pending.0 != slot {
            self.flush();
            self.pending.0 = slot;
        }
        self.pending.1 += delta;
    }

    /// Adds the pending change to the tree.
    fn flush(&mut self) {
        let (slot, delta) = std::mem::take(&mut self.pending);
        if delta == 0 {
            return;
        }
        let mut i = slot + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// The sum of the counts of the slots before `slot`. The slot becomes the finger.
    fn before(&mut self, slot: usize) -> i64 {
        if slot == self.finger {
            return self.finger_before;
        }
        self.flush();
        let mut sum = 0;
        let mut i = slot;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        self.finger = slot;
        self.finger_before = sum;
        sum
    }

    fn total(&self) -> i64 {
        self.total
    }

    /// The slot holding the item at 0-based position `p` (counts are never negative), or
    /// `None` past the end. It becomes the finger.
    fn find(&mut self, p: i64) -> Option<usize> {
        if p < 0 || p >= self.total() {
            return None;
        }
        // Near the finger: a slot holds `p` when its items start at or before it and end
        // after it (an empty slot holds nothing and is stepped over).
        let (mut slot, mut before) = (self.finger, self.finger_before);
        for _ in 0..FINGER_STEPS {
            if p < before {
                if slot == 0 {
                    break;
                }
                slot -= 1;
                before -= self.counts[slot];
            } else if p >= before + self.counts[slot] {
                if slot + 1 == self.counts.len() {
                    break;
                }
                before += self.counts[slot];
                slot += 1;
            } else {
                self.finger = slot;
                self.finger_before = before;
                return Some(slot);
            }
        }
        self.flush();
        let n = self.counts.len();
        let mut at = 0;
        let mut rest = p;
        let mut step = n.next_power_of_two();
        while step > 0 {
            if at + step <= n && self.tree[at + step] <= rest {
                at += step;
                rest -= self.tree[at];
            }
            step /= 2;
        }
        // The counts before `at` sum to what the walk took off `p`.
        self.finger = at;
        self.finger_before = p - rest;
        Some(at)
    }
}

/// The list an instruction edits element-wise at the top level of its object (its field), if
/// it is an insert, an erase or a set of one element.
fn simple_list(instr: &Instruction) -> Option<InternString> {
    match instr {
        Instruction::ArrayInsert(_) | Instruction::ArrayErase(_) | Instruction::Update(_) => {
            let path = instr.field_path()?;
            matches!(path.path.as_slice(), [PathElement::Index(_)]).then_some(path.field)
        }
        _ => None,
    }
}

/// Merges, stretch by stretch, the edits of every list of this bucket (one object's
/// instructions: `left_idx` into `left`, `right_idx` into `right`, each in sequence order) that
/// qualifies (module documentation), and returns the instructions left for the grid, in order.
pub(super) fn merge_lists(
    left: &mut [Op],
    right: &mut [Op],
    left_idx: &[usize],
    right_idx: &[usize],
    puts: &mut Puts,
) -> Result<(Vec<usize>, Vec<usize>), TransformError> {
    let everything = || Ok((left_idx.to_vec(), right_idx.to_vec()));
    if left_idx.len().saturating_mul(right_idx.len()) < MIN_PAIRS {
        return everything();
    }
    // Lists that something other than an element edit touches, on either side.
    // An object has few properties: both are searched in order, not hashed.
    let mut blocked = Vec::new();
    // Each list's element edits, as positions in `left_idx` and `right_idx`.
    let mut lists: Vec<(InternString, Vec<usize>, Vec<usize>)> = Vec::new();
    for (side, ops, idx) in [(0, &*left, left_idx), (1, &*right, right_idx)] {
        let mut last = usize::MAX;
        for (k, &i) in idx.iter().enumerate() {
            let instr = &ops[i].instr;
            if matches!(instr, Instruction::EraseObject { .. }) {
                return everything();
            }
            match simple_list(instr) {
                Some(field) => {
                    if lists.get(last).map_or(true, |l| l.0 != field) {
                        last = match lists.iter().position(|l| l.0 == field) {
                            Some(at) => at,
                            None => {
                                lists.push((field, Vec::new(), Vec::new()));
                                lists.len() - 1
                            }
                        };
                    }
                    if side == 0 {
                        lists[last].1.push(k);
                    } else {
                        lists[last].2.push(k);
                    }
                }
                None => {
                    if let Some(path) = instr.field_path() {
                        if !blocked.contains(&path.field) {
                            blocked.push(path.field);
                        }
                    }
                }
            }
        }
    }
    // Which positions of this bucket a list merge took.
    let mut done_left = vec![false; left_idx.len()];
    let mut done_right = vec![false; right_idx.len()];
    for (field, a, b) in &lists {
        if blocked.contains(field) || a.len().saturating_mul(b.len()) < MIN_PAIRS {
            continue;
        }
        let a_ops: Vec<usize> = a.iter().map(|&k| left_idx[k]).collect();
        let b_ops: Vec<usize> = b.iter().map(|&k| right_idx[k]).collect();
        if merge_list(left, right, &a_ops, &b_ops, puts)? {
            a.iter().for_each(|&k| done_left[k] = true);
            b.iter().for_each(|&k| done_right[k] = true);
        }
    }
    let rest = |idx: &[usize], done: &[bool]| {
        idx.iter()
            .zip(done)
            .filter(|(_, &done)| !done)
            .map(|(&i, _)| i)
            .collect()
    };
    Ok((rest(left_idx, &done_left), rest(right_idx, &done_right)))
}

/// One list edit as [`insert_erase_grid`] holds it: 32 bytes instead of an [`Op`]'s instruction.
#[derive(Clone, Copy)]
struct Edit {
    edit: ListEdit,
    prior: u32,
    /// Its op's [`Op::clock`].
    clock: u64,
    alive: bool,
}

/// [`grid`] for a stretch whose edits are all inserts and erases on both sides: the same rows
/// and columns, and per pair what `rules::list_pair` decides for two such edits of one list
/// (an erase of the same element on both sides discards both; an insert meeting an insert at
/// the same index goes first if its changeset is older; every other pair shifts an index;
/// each survivor's prior size moves by the other's size change, through `rules::shift_size`; unequal prior sizes are `PriorSizeMismatch`), on compact copies
/// instead of whole instructions: a conflict-heavy stretch (two branches typing at one place)
/// costs a rule per pair either way, and this rule is a few instructions. The results are
/// written back into `left` and `right`, marked touched as `grid` marks them. `Ok(false)`,
/// with nothing changed, if an edit is something else (a set): the caller runs `grid`.
fn insert_erase_grid(left: &mut [Op], right: &mut [Op]) -> Result<bool, TransformError> {
    let compact = |ops: &[Op]| -> Option<Vec<Edit>> {
        ops.iter()
            .map(|op| match ListEdit::of(&op.instr)? {
                (edit @ (ListEdit::Insert(_) | ListEdit::Erase(_)), prior) if op.alive() => {
                    Some(Edit {
                        edit,
                        prior,
                        clock: op.clock(),
                        alive: true,
                    })
                }
                _ => None,
            })
            .collect()
    };
    let (Some(mut a), Some(mut b)) = (compact(left), compact(right)) else {
        return Ok(false);
    };
    let mut live: Vec<usize> = (0..b.len()).collect();
    for x in &mut a {
        let mut dead = 0;
        for &ri in &live {
            if !x.alive {
                break;
            }
            let y = &mut b[ri];
            if y.alive {
                insert_erase_pair(x, y)?;
            }
            if !y.alive {
                dead += 1;
            }
        }
        if dead * 2 > live.len() {
            live.retain(|&ri| b[ri].alive);
        }
        if live.is_empty() {
            break;
        }
    }
    for (ops, edits) in [(left, a), (right, b)] {
        for (op, e) in ops.iter_mut().zip(edits) {
            // A discarded edit keeps what the pairs before its discard made of it, as in
            // `grid` (nothing reads it there either).
            op.touch();
            write_edit(&mut op.instr, e.edit, e.prior);
            if !e.alive {
                op.discard();
            }
        }
    }
    Ok(true)
}

/// One pair of [`insert_erase_grid`]: `rules::list_pair` for two inserts or erases.
#[inline(always)]
fn insert_erase_pair(a: &mut Edit, b: &mut Edit) -> Result<(), TransformError> {
    use ListEdit::{Erase, Insert};
    if a.prior != b.prior {
        return Err(TransformError::PriorSizeMismatch {
            left: a.prior,
            right: b.prior,
        });
    }
    let size = a.prior;
    let (na, nb) = match (a.edit, b.edit) {
        (Insert(i), Insert(j)) => {
            if i < j || (i == j && a.clock < b.clock) {
                (Insert(i), Insert(j + 1))
            } else {
                (Insert(i + 1), Insert(j))
            }
        }
        (Insert(i), Erase(j)) => {
            if i <= j {
                (Insert(i), Erase(j + 1))
            } else {
                (Insert(i - 1), Erase(j))
            }
        }
        (Erase(i), Insert(j)) => {
            if j <= i {
                (Erase(i + 1), Insert(j))
            } else {
                (Erase(i), Insert(j - 1))
            }
        }
        (Erase(i), Erase(j)) => match i.cmp(&j) {
            std::cmp::Ordering::Equal => {
                a.alive = false;
                b.alive = false;
                return Ok(());
            }
            std::cmp::Ordering::Less => (Erase(i), Erase(j - 1)),
            std::cmp::Ordering::Greater => (Erase(i - 1), Erase(j)),
        },
        _ => unreachable!("insert_erase_grid holds inserts and erases only"),
    };
    a.prior = super::rules::shift_size(size, b.edit.delta());
    b.prior = super::rules::shift_size(size, a.edit.delta());
    a.edit = na;
    b.edit = nb;
    Ok(())
}

/// One side's edits of the list: the edit and its prior size.
fn edits(ops: &[Op], idx: &[usize]) -> Vec<(ListEdit, u32)> {
    idx.iter()
        .map(|&i| ListEdit::of(&ops[i].instr).expect("an element edit"))
        .collect()
}

/// The list's size before the first edit, if every edit's prior size is the size the edits
/// before it leave and every index is within the list.
fn base_size(edits: &[(ListEdit, u32)]) -> Option<u32> {
    let first = edits.first()?.1;
    let mut size = first;
    for &(edit, prior) in edits {
        if prior != size {
            return None;
        }
        let fits = match edit {
            ListEdit::Insert(i) => i <= size,
            ListEdit::Erase(i) | ListEdit::Set(i) => i < size,
            ListEdit::Move(..) => false,
        };
        if !fits {
            return None;
        }
        size = u32::try_from(i64::from(size) + edit.delta()).ok()?;
    }
    Some(first)
}

/// Which base elements (of `base` elements) these edits erase, replayed with the inserted
/// elements counted per gap between base elements: slot `2g` holds the inserts alive in front
/// of base element `g`, slot `2g + 1` the element itself.
fn erased_base(edits: &[(ListEdit, u32)], base: usize) -> Vec<bool> {
    let mut slots = Fenwick::new((0..2 * base + 1).map(|s| (s % 2) as i64).collect());
    let mut erased = vec![false; base];
    for &(edit, _) in edits {
        match edit {
            ListEdit::Insert(p) => {
                let slot = match slots.find(i64::from(p)) {
                    None => 2 * base,
                    Some(s) => s - s % 2,
                };
                slots.add(slot, 1);
            }
            ListEdit::Erase(p) => {
                let slot = slots.find(i64::from(p)).expect("checked by base_size");
                if slot % 2 == 1 {
                    erased[slot / 2] = true;
                }
                slots.add(slot, -1);
            }
            ListEdit::Set(_) | ListEdit::Move(..) => {}
        }
    }
    erased
}

/// Where an edit lands: its slot (`2k` stretch `k`, `2k + 1` solid element `k`), its index
/// counted from the slot's start, and the slot's size before it.
#[derive(Clone, Copy)]
struct Place {
    slot: usize,
    local: u32,
    prior: u32,
}

/// Each edit's place, replaying one side from the stretches' base sizes (`sizes`, one per
/// stretch, with a solid element between consecutive stretches). `None` if an edit erases a
/// solid element (it cannot: such an element is not solid).
fn places(edits: &[(ListEdit, u32)], sizes: &[i64]) -> Option<Vec<Place>> {
    let mut slots = Fenwick::new(slot_counts(sizes));
    let end = slots.counts.len() - 1;
    let mut out = Vec::with_capacity(edits.len());
    for &(edit, _) in edits {
        let (slot, local) = match edit {
            ListEdit::Insert(p) => match slots.find(i64::from(p)) {
                None => (end, slots.counts[end]),
                // In front of solid element k: the end of stretch k.
                Some(s) if s % 2 == 1 => (s - 1, slots.counts[s - 1]),
                Some(s) => (s, i64::from(p) - slots.before(s)),
            },
            ListEdit::Erase(p) => match slots.find(i64::from(p))? {
                s if s % 2 == 1 => return None,
                s => (s, i64::from(p) - slots.before(s)),
            },
            ListEdit::Set(p) => match slots.find(i64::from(p))? {
                s if s % 2 == 1 => (s, 0),
                s => (s, i64::from(p) - slots.before(s)),
            },
            ListEdit::Move(..) => return None,
        };
        out.push(Place {
            slot,
            local: u32::try_from(local).ok()?,
            prior: u32::try_from(slots.counts[slot]).ok()?,
        });
        slots.add(slot, edit.delta());
    }
    Some(out)
}

/// The slots' counts for stretch sizes `sizes`: stretch, solid element, stretch, ...
fn slot_counts(sizes: &[i64]) -> Vec<i64> {
    let mut counts = Vec::with_capacity(2 * sizes.len());
    for (k, &size) in sizes.iter().enumerate() {
        if k > 0 {
            counts.push(1);
        }
        counts.push(size);
    }
    counts
}

/// `edit` with its index replaced by `index`.
fn at(edit: ListEdit, index: u32) -> ListEdit {
    match edit {
        ListEdit::Insert(_) => ListEdit::Insert(index),
        ListEdit::Erase(_) => ListEdit::Erase(index),
        ListEdit::Set(_) => ListEdit::Set(index),
        moved @ ListEdit::Move(..) => moved,
    }
}

/// Merges one list's edits (`a` into `left`, `b` into `right`) stretch by stretch. Returns
/// false, changing nothing, if the edits do not qualify (module documentation).
fn merge_list(
    left: &mut [Op],
    right: &mut [Op],
    a: &[usize],
    b: &[usize],
    puts: &mut Puts,
) -> Result<bool, TransformError> {
    let (ea, eb) = (edits(left, a), edits(right, b));
    let (Some(base), Some(base_b)) = (base_size(&ea), base_size(&eb)) else {
        return Ok(false);
    };
    let base = base as usize;
    if base != base_b as usize
        || a.len().saturating_mul(b.len())
            < PAIRS_PER_ELEMENT.saturating_mul(base + a.len() + b.len())
    {
        return Ok(false);
    }
    let (erased_a, erased_b) = (erased_base(&ea, base), erased_base(&eb, base));
    // The stretches' base sizes: non-solid base elements between solid ones.
    let mut sizes = vec![0i64];
    for g in 0..base {
        if erased_a[g] || erased_b[g] {
            *sizes.last_mut().expect("one stretch at least") += 1;
        } else {
            sizes.push(0);
        }
    }
    let (Some(pa), Some(pb)) = (places(&ea, &sizes), places(&eb, &sizes)) else {
        return Ok(false);
    };

    // Each slot both sides edit runs the grid on its own, in local indices. Only those slots
    // get an entry: marking B's slots first spares hashing every edit and a list per slot
    // (`perf`, `benches/branches.rs`: a tenth of the list merge where no slot is shared).
    let mut edited_by_b = vec![false; 2 * sizes.len()];
    for p in &pb {
        edited_by_b[p.slot] = true;
    }
    let mut by_slot: HashMap<usize, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (k, p) in pa.iter().enumerate() {
        if edited_by_b[p.slot] {
            by_slot.entry(p.slot).or_default().0.push(k);
        }
    }
    if !by_slot.is_empty() {
        for (k, p) in pb.iter().enumerate() {
            if let Some(entry) = by_slot.get_mut(&p.slot) {
                entry.1.push(k);
            }
        }
    }
    // Each edit's local index after its slot's grid (unchanged where only one side edits).
    let mut local_a: Vec<u32> = pa.iter().map(|p| p.local).collect();
    let mut local_b: Vec<u32> = pb.iter().map(|p| p.local).collect();
    for (ka, kb) in by_slot.values() {
        if kb.is_empty() {
            continue;
        }
        let local_ops =
            |ops: &[Op], idx: &[usize], e: &[(ListEdit, u32)], p: &[Place], ks: &[usize]| {
                ks.iter()
                    .map(|&k| {
                        let mut op = ops[idx[k]].clone();
                        write_edit(&mut op.instr, at(e[k].0, p[k].local), p[k].prior);
                        op
                    })
                    .collect::<Vec<Op>>()
            };
        let mut la = local_ops(left, a, &ea, &pa, ka);
        let mut lb = local_ops(right, b, &eb, &pb, kb);
        if !insert_erase_grid(&mut la, &mut lb)? {
            let all_a: Vec<usize> = (0..la.len()).collect();
            let all_b: Vec<usize> = (0..lb.len()).collect();
            // Element edits of one list: no rule puts anything before them, but what one
            // would is filed against the ops the copies came from.
            let mut local = Puts::default();
            grid(&mut la, &mut lb, &all_a, &all_b, &mut local)?;
            puts.add_mapped(local, |k| a[ka[k]], |k| b[kb[k]]);
        }
        for (ops, idx, local, ks, merged) in [
            (&mut *left, a, &mut local_a, ka, la),
            (&mut *right, b, &mut local_b, kb, lb),
        ] {
            // `grid` marked each of them touched.
            for (&k, op) in ks.iter().zip(merged) {
                if let Some((edit, _)) = ListEdit::of(&op.instr) {
                    local[k] = match edit {
                        ListEdit::Insert(i) | ListEdit::Erase(i) | ListEdit::Set(i) => i,
                        ListEdit::Move(from, _) => from,
                    };
                }
                ops[idx[k]] = op;
            }
        }
    }

    // Back to whole-list indices: each side's edits in order, after all of the other side's.
    let after = |e: &[(ListEdit, u32)], p: &[Place]| {
        let mut counts = slot_counts(&sizes);
        for (&(edit, _), place) in e.iter().zip(p) {
            counts[place.slot] += edit.delta();
        }
        counts
    };
    let counts_after_b = after(&eb, &pb);
    let counts_after_a = after(&ea, &pa);
    for (ops, idx, e, p, local, counts) in [
        (&mut *left, a, &ea, &pa, &local_a, counts_after_b),
        (&mut *right, b, &eb, &pb, &local_b, counts_after_a),
    ] {
        let mut slots = Fenwick::new(counts);
        for k in 0..idx.len() {
            let op = &mut ops[idx[k]];
            if !op.alive() {
                continue;
            }
            let place = p[k];
            let offset = if place.slot % 2 == 1 { 0 } else { local[k] };
            let index = slots.before(place.slot) + i64::from(offset);
            // Clamped as the grid's own size arithmetic is (`rules::shift_size`).
            let fit = |n: i64| n.clamp(0, i64::from(u32::MAX)) as u32;
            let edit = at(e[k].0, fit(index));
            let prior = fit(slots.total());
            if ListEdit::of(&op.instr) != Some((edit, prior)) {
                write_edit(&mut op.instr, edit, prior);
                op.touch();
            }
            // An index or prior size other than the imported one is a change for certain.
            if (edit, prior) != e[k] {
                op.mark_changed();
            }
            slots.add(place.slot, e[k].0.delta());
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::merge::merge_with;
    use crate::changeset::{
        ArrayErase, ArrayInsert, ArrayMove, Changeset, ChangesetMeta, Clear, FieldPath,
        Instruction, Payload, PrimaryKey, Update,
    };

    /// How one generated step edits the list (or, rarely, something the fast path must leave
    /// to the grid).
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Insert,
        Erase,
        Set,
        /// A set of another property of the object (does not block the list).
        Other,
        /// A move or a clear of the list (blocks the fast path for it), or, one time in
        /// three, a clear of another list (which does not).
        Blocker,
    }

    fn path(cs: &mut Changeset, field: &str, index: Option<u32>) -> FieldPath {
        FieldPath {
            table: cs.intern("Doc"),
            object: PrimaryKey::Int(1),
            field: cs.intern(field),
            path: index
                .map(crate::changeset::PathElement::Index)
                .into_iter()
                .collect(),
        }
    }

    /// One side's changesets from `steps` (`(kind, position seed, value)`), `per` steps per
    /// changeset, starting from a list of `base` elements, editing only a window of it (not the
    /// first `keep.0` elements, not the last `keep.1`), with clocks from `clock` and the file
    /// ident `peer`. `typing` keeps a cursor that moves by small steps, as a person types.
    fn side(
        base: u32,
        keep: (u32, u32),
        steps: &[(Step, u32, i64)],
        per: usize,
        clock: &[u64],
        peer: u64,
        typing: bool,
    ) -> Vec<Changeset> {
        let mut out: Vec<Changeset> = Vec::new();
        let mut size = base;
        let mut cursor = keep.0;
        for (n, &(step, seed, value)) in steps.iter().enumerate() {
            if n % per.max(1) == 0 {
                let k = out.len();
                let mut cs = Changeset::new();
                cs.meta = ChangesetMeta {
                    version: k as u64 + 1,
                    last_integrated_remote_version: 0,
                    origin_timestamp: clock.get(k).copied().unwrap_or(1_000 + k as u64),
                    origin_file_ident: peer,
                };
                out.push(cs);
            }
            let cs = out.last_mut().expect("pushed above");
            // An index among `limit` places from the window's start.
            let mut at = |limit: u32| {
                if limit == 0 {
                    return keep.0;
                }
                if typing {
                    let moved = i64::from(cursor) + i64::from(seed % 5) - 2;
                    let lo = i64::from(keep.0);
                    cursor = moved.clamp(lo, lo + i64::from(limit) - 1) as u32;
                    cursor
                } else {
                    keep.0 + seed % limit
                }
            };
            let window = size - keep.0 - keep.1;
            let instr = match step {
                Step::Insert => {
                    let i = at(window + 1);
                    let instr = Instruction::ArrayInsert(ArrayInsert {
                        path: path(cs, "text", Some(i)),
                        value: Payload::Int(value),
                        prior_size: size,
                    });
                    size += 1;
                    cursor = i + 1;
                    instr
                }
                Step::Erase | Step::Set if window == 0 => continue,
                Step::Erase => {
                    let i = at(window);
                    size -= 1;
                    Instruction::ArrayErase(ArrayErase {
                        path: path(cs, "text", Some(i)),
                        prior_size: size + 1,
                    })
                }
                Step::Set => Instruction::Update(Update {
                    path: path(cs, "text", Some(at(window))),
                    value: Payload::Int(value),
                    is_default: false,
                    prior_size: size,
                }),
                Step::Other => Instruction::Update(Update {
                    path: path(cs, "title", None),
                    value: Payload::Int(value),
                    is_default: false,
                    prior_size: 0,
                }),
                // One time in three on another list: `text` then still takes the stretches.
                Step::Blocker if seed % 3 == 0 => Instruction::Clear(Clear {
                    path: path(cs, "notes", None),
                    collection_type: crate::changeset::CollectionType::List,
                }),
                Step::Blocker if size >= 2 && seed % 2 == 0 => Instruction::ArrayMove(ArrayMove {
                    path: path(cs, "text", Some(seed % size)),
                    to: (seed / 7) % size,
                    prior_size: size,
                }),
                Step::Blocker => {
                    size = 0;
                    Instruction::Clear(Clear {
                        path: path(cs, "text", None),
                        collection_type: crate::changeset::CollectionType::List,
                    })
                }
            };
            cs.push(instr);
        }
        out
    }

    /// The merge with the stretches (`merge_with(.., true)`, which in unit tests takes them for
    /// every list) and the plain grid of every pair (`merge_with(.., false)`) give the same
    /// changesets on both sides, or the same error.
    fn same_as_grid(left: Vec<Changeset>, right: Vec<Changeset>) -> Result<(), TestCaseError> {
        let (mut l1, mut r1) = (left.clone(), right.clone());
        let (mut l2, mut r2) = (left.clone(), right.clone());
        let fast = merge_with(&mut l1, &mut r1, true);
        let plain = merge_with(&mut l2, &mut r2, false);
        if fast.is_err() {
            // An error changes nothing (`ot::transform` and `integrate` rely on it).
            prop_assert_eq!(&l1, &left);
            prop_assert_eq!(&r1, &right);
        }
        prop_assert_eq!(fast, plain);
        prop_assert_eq!(l1, l2);
        prop_assert_eq!(r1, r2);
        Ok(())
    }

    fn step() -> impl Strategy<Value = (Step, u32, i64)> {
        (
            prop_oneof![
                10 => Just(Step::Insert),
                6 => Just(Step::Erase),
                2 => Just(Step::Set),
                1 => Just(Step::Other),
            ],
            any::<u32>(),
            0i64..4,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

        /// Random and typing-like edits from a small base, one or several per changeset, with
        /// clocks that interleave, tie across sides only by peer, and run backwards.
        #[test]
        fn list_edits_merge_as_the_grid_merges_them(
            base in 0u32..7,
            a in prop::collection::vec(step(), 0..14),
            b in prop::collection::vec(step(), 0..14),
            per_a in 1usize..3,
            per_b in 1usize..3,
            clock_a in prop::collection::vec(0u64..20, 14),
            clock_b in prop::collection::vec(0u64..20, 14),
            typing in any::<bool>(),
        ) {
            let left = side(base, (0, 0), &a, per_a, &clock_a, 1, typing);
            let right = side(base, (0, 0), &b, per_b, &clock_b, 2, typing);
            same_as_grid(left, right)?;
        }

        /// The tree with its finger answers as sums over the counts do, whatever the order of
        /// finds, sums and changes (empty slots included; changes before, at and after the
        /// finger).
        #[test]
        fn fenwick_with_a_finger_agrees_with_plain_sums(
            counts in prop::collection::vec(0i64..4, 1..40),
            steps in prop::collection::vec((0u8..3, any::<u32>(), 0i64..3), 0..80),
        ) {
            let mut model = counts.clone();
            let mut tree = super::Fenwick::new(counts);
            for (what, at, delta) in steps {
                let total: i64 = model.iter().sum();
                match what {
                    0 => {
                        // Positions from before the start to past the end.
                        let p = i64::from(at % (total as u32 + 3)) - 1;
                        let expected = (0..model.len()).find(|&s| {
                            let before: i64 = model[..s].iter().sum();
                            before <= p && p < before + model[s]
                        });
                        prop_assert_eq!(tree.find(p), expected);
                    }
                    1 => {
                        let slot = at as usize % model.len();
                        prop_assert_eq!(tree.before(slot), model[..slot].iter().sum::<i64>());
                    }
                    _ => {
                        // Down by at most what the slot holds, so that no count is negative.
                        let slot = at as usize % model.len();
                        let delta = if at % 2 == 0 { delta } else { -delta.min(model[slot]) };
                        model[slot] += delta;
                        tree.add(slot, delta);
                    }
                }
                prop_assert_eq!(tree.total(), model.iter().sum::<i64>());
            }
        }

        /// A move or a clear of the list, or an inconsistent prior size, leaves the list to the
        /// grid: the results (or the error) are the grid's. A clear of another list leaves
        /// this one to the stretches, which then meet the wrong prior size themselves.
        #[test]
        fn what_the_stretches_cannot_take_is_left_to_the_grid(
            base in 0u32..5,
            a in prop::collection::vec(step(), 1..8),
            b in prop::collection::vec(step(), 1..8),
            blocker_at in 0usize..8,
            blocker_seed in any::<u32>(),
            skew in 0u32..2,
        ) {
            let mut a = a;
            let at = blocker_at.min(a.len());
            a.insert(at, (Step::Blocker, blocker_seed, 0));
            let clock: Vec<u64> = (0..10).collect();
            let left = side(base, (0, 0), &a, 1, &clock, 1, false);
            // `skew` 1: the other side believes the list had one more element.
            let right = side(base + skew, (0, 0), &b, 1, &clock, 2, false);
            same_as_grid(left, right)?;
        }
    }

    /// Long branches on disjoint parts of a list (typing in front of a marker on one side,
    /// editing after it on the other, as benches/branches.rs' `halves`) and on the same part,
    /// with more edits than the random cases make.
    #[test]
    fn long_branches_merge_as_the_grid_merges_them() {
        let steps = |seed: u32, n: usize| -> Vec<(Step, u32, i64)> {
            let mut x = seed;
            (0..n)
                .map(|k| {
                    // A fixed linear congruential sequence: the test is the same every run.
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let step = if (x >> 16) % 4 == 0 {
                        Step::Erase
                    } else {
                        Step::Insert
                    };
                    (step, x >> 8, k as i64)
                })
                .collect()
        };
        let clock_a: Vec<u64> = (0..600).map(|k| 2 * k).collect();
        let clock_b: Vec<u64> = (0..600).map(|k| 2 * k + 1).collect();
        for (base, seed) in [(0, 1), (40, 2), (300, 3)] {
            for typing in [false, true] {
                let left = side(base, (0, 0), &steps(seed, 600), 1, &clock_a, 1, typing);
                let right = side(base, (0, 0), &steps(seed + 10, 600), 1, &clock_b, 2, typing);
                same_as_grid(left, right).unwrap();
            }
        }
        // `halves`: A types in front of the base's first element (a marker), B edits after it.
        for (base, seed) in [(1, 4), (200, 5)] {
            for typing in [false, true] {
                let left = side(base, (0, base), &steps(seed, 600), 1, &clock_a, 1, typing);
                let right = side(base, (1, 0), &steps(seed + 10, 600), 1, &clock_b, 2, typing);
                same_as_grid(left, right).unwrap();
            }
        }
    }
}
