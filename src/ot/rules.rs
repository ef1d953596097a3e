//! The pairwise merge rules: what two concurrent instructions become so that either order of
//! application gives the same state.
//!
//! [`merge_pair`] takes one instruction from each side. Each is already applied on its own
//! side; afterwards each must be applicable *after* the other one. A rule may rewrite an
//! instruction (indices, payload, prior size), discard it, or, in one schema case, prepend an
//! instruction on one side. Rules are symmetric: swapping the arguments swaps the results.
//!
//! The rules follow realm-sync.md section 3.2. List index rules are derived from the final
//! list both orders must reach, which makes every list rule convergent by construction.

use std::cmp::Ordering;

use super::TransformError;
use crate::changeset::{
    ColumnType, FieldPath, Instruction, InternString, PathElement, Payload, Update,
};

/// One instruction taking part in a merge, with its changeset's ordering key and its state in
/// the merge, in 112 bytes (the instruction's 104 and 8 more): a merge of a million events
/// writes a million ops on import, and the time that takes follows the bytes (8 bytes an op
/// less, 2% off the merge of a million events; 16 more, 6% to 9% on; `benches/branches.rs`).
#[derive(Clone, Debug)]
pub(super) struct Op {
    /// The instruction (strings in the merge's shared table).
    pub instr: Instruction,
    /// The clock of the changeset it came from (a [`Discriminant`](super::Discriminant) as a
    /// number below [`CLOCK_LIMIT`] that orders as it does; see `merge::Clocks`) above three
    /// flags: [`ALIVE`], [`TOUCHED`] and [`CHANGED`].
    bits: u64,
}

/// Every op's clock is below this: 61 bits, the 3 below them are flags.
pub(super) const CLOCK_LIMIT: u64 = 1 << 61;
/// Set until a rule discards the op.
const ALIVE: u64 = 1;
/// Set once anything may have changed the op: set before every rule that gets it mutably, so
/// that an op never touched is known to be as imported without comparing it.
const TOUCHED: u64 = 2;
/// Set once the op is known to differ from the instruction as imported (so that it need not be
/// compared either).
const CHANGED: u64 = 4;

// The size the comment on `Op` gives (64-bit targets, where `Instruction` is 104 bytes).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Op>() == 112);

impl Op {
    /// An alive, untouched op of a changeset whose clock is `clock` (below [`CLOCK_LIMIT`]).
    pub fn new(instr: Instruction, clock: u64) -> Self {
        debug_assert!(clock < CLOCK_LIMIT);
        Op {
            instr,
            bits: clock << 3 | ALIVE,
        }
    }

    /// Its changeset's clock: a larger one is newer.
    pub fn clock(&self) -> u64 {
        self.bits >> 3
    }

    /// False once a rule discarded it.
    pub fn alive(&self) -> bool {
        self.bits & ALIVE != 0
    }

    /// Whether anything may have changed it ([`TOUCHED`]).
    pub fn touched(&self) -> bool {
        self.bits & TOUCHED != 0
    }

    /// Whether it is known to differ from the instruction as imported ([`CHANGED`]).
    pub fn changed(&self) -> bool {
        self.bits & CHANGED != 0
    }

    /// Marks it discarded.
    pub fn discard(&mut self) {
        self.bits &= !ALIVE;
    }

    /// Marks it as possibly changed from here on.
    pub fn touch(&mut self) {
        self.bits |= TOUCHED;
    }

    /// Marks it as known to differ from the instruction as imported.
    pub fn mark_changed(&mut self) {
        self.bits |= CHANGED;
    }
}

/// An instruction a rule puts on one side of a pair right before that side's op: only an
/// `EraseTable` meeting a concurrent column that links to its table gets one (an
/// `EraseColumn` of that column). Kept beside the ops rather than in each (every op of a
/// merge would carry the field for that one case).
#[derive(Debug)]
pub(super) enum Prepend {
    /// Before the pair's first op, `a`.
    BeforeA(Instruction),
    /// Before its second, `b`.
    BeforeB(Instruction),
}

/// Merges one pair, pushing to `prepended` what a rule puts before either op ([`Prepend`]).
/// Either may end up discarded (`alive()` false). Inlined into the grid's
/// loop, its one caller, where it runs once per pair (`benches/branches.rs` measured 17% more
/// per pair when the compiler stopped inlining it there).
#[inline(always)]
pub(super) fn merge_pair(
    a: &mut Op,
    b: &mut Op,
    prepended: &mut Vec<Prepend>,
) -> Result<(), TransformError> {
    if a.instr.is_schema_change() || b.instr.is_schema_change() {
        return schema_pair(a, b, prepended);
    }
    let (Some((ta, ka)), Some((tb, kb))) = (a.instr.object(), b.instr.object()) else {
        return Ok(());
    };
    if ta != tb || ka != kb {
        // Different objects never conflict: links are key references that no rule rewrites.
        return Ok(());
    }
    let a_path = a.instr.field_path().is_some();
    let b_path = b.instr.field_path().is_some();
    match (a_path, b_path) {
        (false, false) => object_pair(a, b),
        // EraseObject wins over everything on the object; CreateObject conflicts with nothing.
        (false, true) => {
            if matches!(a.instr, Instruction::EraseObject { .. }) {
                b.discard();
            }
            Ok(())
        }
        (true, false) => {
            if matches!(b.instr, Instruction::EraseObject { .. }) {
                a.discard();
            }
            Ok(())
        }
        (true, true) => path_pair(a, b),
    }
}

/// CreateObject / EraseObject against each other, on the same object.
fn object_pair(a: &mut Op, b: &mut Op) -> Result<(), TransformError> {
    use Instruction::{CreateObject, EraseObject};
    match (&a.instr, &b.instr) {
        // The newer erase survives, so that a later erase-then-create sequence is preserved.
        (EraseObject { .. }, EraseObject { .. }) => discard_older(a, b),
        // Deletes win over a concurrent create.
        (EraseObject { .. }, CreateObject { .. }) => b.discard(),
        (CreateObject { .. }, EraseObject { .. }) => a.discard(),
        // Equal primary keys are one object: both creates stand (creation is idempotent).
        _ => {}
    }
    Ok(())
}

fn discard_older(a: &mut Op, b: &mut Op) {
    if a.clock() < b.clock() {
        a.discard();
    } else {
        b.discard();
    }
}

/// Checks what the list rules' index arithmetic (in `u32`) relies on: a list edit's indices
/// within its prior size (an insert's at most the size, in a list that can still grow; any
/// other's below it), and no path step at index `u32::MAX`. The appliers refuse such
/// instructions too (`state::apply`, `check_size`); the merge meets them first.
pub(super) fn check_indices(instr: &Instruction) -> Result<(), TransformError> {
    use ListEdit::*;
    if let Some((edit, size)) = ListEdit::of(instr) {
        let (index, fits) = match edit {
            Insert(i) => (i, i <= size && size < u32::MAX),
            Erase(i) | Set(i) => (i, i < size),
            Move(from, to) => (from.max(to), from < size && to < size),
        };
        if !fits {
            return Err(TransformError::ListIndexOutOfRange {
                index,
                prior_size: Some(size),
            });
        }
    }
    let deepest = instr.field_path().map_or(&[][..], |p| p.path.as_slice());
    if deepest.contains(&PathElement::Index(u32::MAX)) {
        return Err(TransformError::ListIndexOutOfRange {
            index: u32::MAX,
            prior_size: None,
        });
    }
    Ok(())
}

/// What a list-element instruction does, in index terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListEdit {
    Insert(u32),
    Erase(u32),
    Move(u32, u32),
    Set(u32),
}

impl ListEdit {
    /// The edit an `ArrayInsert`, `ArrayErase`, `ArrayMove` or list-element `Update` makes, with
    /// its prior size; `None` for any other instruction.
    pub(super) fn of(instr: &Instruction) -> Option<(ListEdit, u32)> {
        Some(match instr {
            Instruction::ArrayInsert(i) => (ListEdit::Insert(i.path.last_index()?), i.prior_size),
            Instruction::ArrayErase(e) => (ListEdit::Erase(e.path.last_index()?), e.prior_size),
            Instruction::ArrayMove(m) => (ListEdit::Move(m.path.last_index()?, m.to), m.prior_size),
            Instruction::Update(u) => (ListEdit::Set(u.path.last_index()?), u.prior_size),
            _ => return None,
        })
    }

    /// How the list size changes.
    pub(super) fn delta(self) -> i64 {
        match self {
            ListEdit::Insert(_) => 1,
            ListEdit::Erase(_) => -1,
            ListEdit::Move(..) | ListEdit::Set(_) => 0,
        }
    }

    /// Where the element at `k` sits after this edit; `None` if the edit removed it.
    /// (For `Set`, nothing moves.)
    fn map_index(self, k: u32) -> Option<u32> {
        match self {
            ListEdit::Insert(i) => Some(if k >= i { k + 1 } else { k }),
            ListEdit::Erase(i) => match k.cmp(&i) {
                Ordering::Less => Some(k),
                Ordering::Equal => None,
                Ordering::Greater => Some(k - 1),
            },
            ListEdit::Move(from, to) => Some(if k == from {
                to
            } else {
                let without = if k > from { k - 1 } else { k };
                if without >= to {
                    without + 1
                } else {
                    without
                }
            }),
            ListEdit::Set(_) => Some(k),
        }
    }
}

/// Writes an edit's index, destination and prior size back into its instruction.
pub(super) fn write_edit(instr: &mut Instruction, edit: ListEdit, prior_size: u32) {
    fn set_last(path: &mut FieldPath, index: u32) {
        if let Some(PathElement::Index(i)) = path.path.last_mut() {
            *i = index;
        }
    }
    match (instr, edit) {
        (Instruction::ArrayInsert(i), ListEdit::Insert(at)) => {
            set_last(&mut i.path, at);
            i.prior_size = prior_size;
        }
        (Instruction::ArrayErase(e), ListEdit::Erase(at)) => {
            set_last(&mut e.path, at);
            e.prior_size = prior_size;
        }
        (Instruction::ArrayMove(m), ListEdit::Move(from, to)) => {
            set_last(&mut m.path, from);
            m.to = to;
            m.prior_size = prior_size;
        }
        (Instruction::Update(u), ListEdit::Set(at)) => {
            set_last(&mut u.path, at);
            u.prior_size = prior_size;
        }
        _ => {}
    }
}

/// A list's prior size `size` moved by another edit's size change `delta`, clamped to `u32`.
#[inline]
pub(super) fn shift_size(size: u32, delta: i64) -> u32 {
    (i64::from(size) + delta).clamp(0, i64::from(u32::MAX)) as u32
}

/// Two path instructions on the same object.
#[inline(always)]
fn path_pair(a: &mut Op, b: &mut Op) -> Result<(), TransformError> {
    let (pa, pb) = match (a.instr.field_path(), b.instr.field_path()) {
        (Some(pa), Some(pb)) => (pa, pb),
        _ => return Ok(()),
    };
    if pa.field != pb.field {
        return Ok(());
    }
    // Two edits of one top-level list, the most common pair (a long offline branch of list
    // edits meets every edit of the other branch): what the general steps below decide for
    // it, without copying the paths (nothing can reach into an element of a list both edit at
    // its own depth).
    if pa.path.len() == 1 && pb.path.len() == 1 {
        if let (Some((xa, sa)), Some((xb, sb))) = (ListEdit::of(&a.instr), ListEdit::of(&b.instr)) {
            if sa != sb {
                return Err(TransformError::PriorSizeMismatch {
                    left: sa,
                    right: sb,
                });
            }
            return list_pair(a, xa, b, xb, sa);
        }
    }
    let (ea, eb) = (pa.path.clone(), pb.path.clone());

    // A list edit on a container that the other instruction reaches into: an element's
    // content (deeper path), or an element itself through a non-edit (AddInteger, Clear).
    if let Some(depth) = list_container_depth(&a.instr) {
        if reaches_into(&eb, depth, &ea, &b.instr) {
            return nested_under_list_edit(a, b, depth);
        }
    }
    if let Some(depth) = list_container_depth(&b.instr) {
        if reaches_into(&ea, depth, &eb, &a.instr) {
            return nested_under_list_edit(b, a, depth);
        }
    }

    // Two list-element instructions on the same list.
    if let (Some((xa, sa)), Some((xb, sb))) = (ListEdit::of(&a.instr), ListEdit::of(&b.instr)) {
        let n = ea.len();
        if n == eb.len() && ea[..n - 1] == eb[..n - 1] {
            if sa != sb {
                return Err(TransformError::PriorSizeMismatch {
                    left: sa,
                    right: sb,
                });
            }
            return list_pair(a, xa, b, xb, sa);
        }
    }

    // One path strictly inside the other.
    if ea.len() < eb.len() && eb.starts_with(&ea) {
        nested_rule(a, b, &eb[ea.len()]);
        return Ok(());
    }
    if eb.len() < ea.len() && ea.starts_with(&eb) {
        nested_rule(b, a, &ea[eb.len()]);
        return Ok(());
    }
    if ea != eb {
        return Ok(());
    }
    same_path(a, b)
}

/// Whether `path` (of `instr`) goes through an element of the list at `list_path[..depth]`,
/// other than as a list edit of that same list (those meet in [`list_pair`]).
fn reaches_into(
    path: &[PathElement],
    depth: usize,
    list_path: &[PathElement],
    instr: &Instruction,
) -> bool {
    path.len() > depth
        && path[..depth] == list_path[..depth]
        && !(path.len() == depth + 1 && ListEdit::of(instr).is_some())
}

/// For ArrayInsert/ArrayMove/ArrayErase: the length of the container's path (the index sits
/// right after it).
fn list_container_depth(instr: &Instruction) -> Option<usize> {
    match instr {
        Instruction::ArrayInsert(_) | Instruction::ArrayMove(_) | Instruction::ArrayErase(_) => {
            instr.field_path().map(|p| p.path.len() - 1)
        }
        _ => None,
    }
}

/// `outer` edits a list that `inner` reaches through, at `depth`: follow the element.
fn nested_under_list_edit(
    outer: &mut Op,
    inner: &mut Op,
    depth: usize,
) -> Result<(), TransformError> {
    let Some((edit, _)) = ListEdit::of(&outer.instr) else {
        return Ok(());
    };
    let Some(path) = inner.instr.field_path_mut() else {
        return Ok(());
    };
    if let PathElement::Index(j) = path.path[depth] {
        match edit.map_index(j) {
            Some(k) => path.path[depth] = PathElement::Index(k),
            // The element the inner instruction works in was erased.
            None => inner.discard(),
        }
    }
    Ok(())
}

/// `outer`'s path is a strict prefix of `inner`'s; `next` is the inner's step below it.
fn nested_rule(outer: &mut Op, inner: &mut Op, next: &PathElement) {
    match &outer.instr {
        // Setting a value higher up overwrites any modification below it, whatever the time,
        // except creating an embedded object (idempotent) or a collection of the matching kind.
        Instruction::Update(u) => {
            let keeps_inner = matches!(
                (&u.value, next),
                (Payload::ObjectValue, _)
                    | (Payload::List, PathElement::Index(_))
                    | (Payload::Dictionary, PathElement::Key(_))
            );
            if !keeps_inner {
                inner.discard();
            }
        }
        // Clear wins over every concurrent operation inside the container.
        Instruction::Clear(_) | Instruction::AddInteger(_) => inner.discard(),
        _ => {}
    }
}

/// Two list-element instructions on the same list, both made on a list of `size` elements.
fn list_pair(
    a: &mut Op,
    xa: ListEdit,
    b: &mut Op,
    xb: ListEdit,
    size: u32,
) -> Result<(), TransformError> {
    use ListEdit::*;
    // Each side's result is applied after the other side's original edit.
    let size_a = shift_size(size, xb.delta());
    let size_b = shift_size(size, xa.delta());
    let a_first = a.clock() < b.clock();
    let (na, nb): (Option<ListEdit>, Option<ListEdit>) = match (xa, xb) {
        (Insert(i), Insert(j)) => {
            // Same index: the older insert comes first.
            if i < j || (i == j && a_first) {
                (Some(Insert(i)), Some(Insert(j + 1)))
            } else {
                (Some(Insert(i + 1)), Some(Insert(j)))
            }
        }
        (Insert(i), Erase(j)) => insert_vs_erase(i, j),
        (Erase(i), Insert(j)) => {
            let (b2, a2) = insert_vs_erase(j, i);
            (a2, b2)
        }
        (Insert(i), Set(j)) => (Some(Insert(i)), Some(Set(if j >= i { j + 1 } else { j }))),
        (Set(i), Insert(j)) => (Some(Set(if i >= j { i + 1 } else { i })), Some(Insert(j))),
        (Erase(i), Erase(j)) => match i.cmp(&j) {
            // Both erased the same element: it is gone on both sides.
            Ordering::Equal => (None, None),
            Ordering::Less => (Some(Erase(i)), Some(Erase(j - 1))),
            Ordering::Greater => (Some(Erase(i - 1)), Some(Erase(j))),
        },
        // Erase beats a concurrent set of the same element.
        (Erase(i), Set(j)) => (Some(Erase(i)), Erase(i).map_index(j).map(Set)),
        (Set(i), Erase(j)) => (Erase(j).map_index(i).map(Set), Some(Erase(j))),
        (Set(i), Set(j)) => {
            if i == j {
                return update_vs_update(a, b, true);
            }
            (Some(Set(i)), Some(Set(j)))
        }
        (Move(f, t), other) => {
            let (m, o) = move_vs(f, t, other, a_first);
            (m, o)
        }
        (other, Move(f, t)) => {
            let (m, o) = move_vs(f, t, other, !a_first);
            (o, m)
        }
    };
    match na {
        Some(edit) => write_edit(&mut a.instr, edit, size_a),
        None => a.discard(),
    }
    match nb {
        Some(edit) => write_edit(&mut b.instr, edit, size_b),
        None => b.discard(),
    }
    Ok(())
}

/// Insert at `i` against erase at `j` (same base list). Returns (insert', erase').
fn insert_vs_erase(i: u32, j: u32) -> (Option<ListEdit>, Option<ListEdit>) {
    if i <= j {
        (Some(ListEdit::Insert(i)), Some(ListEdit::Erase(j + 1)))
    } else {
        (Some(ListEdit::Insert(i - 1)), Some(ListEdit::Erase(j)))
    }
}

/// A move `from -> to` against another edit on the same base list. `move_first` breaks ties
/// between two elements landing in the same gap (the older one goes first). Returns
/// (move', other').
fn move_vs(
    from: u32,
    to: u32,
    other: ListEdit,
    move_first: bool,
) -> (Option<ListEdit>, Option<ListEdit>) {
    use ListEdit::*;
    let mv = Move(from, to);
    // Gap of the moved element in the list without it.
    let gx = to;
    let finish = |from2: u32, final_x: u32| -> Option<ListEdit> {
        (from2 != final_x).then_some(Move(from2, final_x))
    };
    match other {
        Set(j) => (Some(mv), mv.map_index(j).map(Set)),
        Erase(j) if j == from => {
            // Erase wins: the move is dropped and the erase follows the element.
            (None, Some(Erase(to)))
        }
        Erase(j) => {
            let erased_after_move = mv.map_index(j).unwrap_or(j);
            let final_x = if erased_after_move < to { to - 1 } else { to };
            let from2 = if j < from { from - 1 } else { from };
            (finish(from2, final_x), Some(Erase(erased_after_move)))
        }
        Insert(j) => {
            // Gap of the new element in the list without the moved one.
            let gz = if from < j { j - 1 } else { j };
            let (final_x, final_z) = if gx < gz || (gx == gz && move_first) {
                (gx, gz + 1)
            } else {
                (gx + 1, gz)
            };
            let from2 = if j <= from { from + 1 } else { from };
            (finish(from2, final_x), Some(Insert(final_z)))
        }
        Move(f2, t2) if f2 == from => {
            // The same element moved twice: the newer move wins, from where the older left it.
            if move_first {
                (None, finish(to, t2))
            } else {
                (finish(t2, to), None)
            }
        }
        Move(f2, t2) => {
            // Both elements leave; place both into the list without either.
            let py = if from < f2 { f2 - 1 } else { f2 }; // y in (base - x)
            let px = if f2 < from { from - 1 } else { from }; // x in (base - y)
            let gx = if py < to { to - 1 } else { to };
            let gy = if px < t2 { t2 - 1 } else { t2 };
            let (final_x, final_y) = if gx < gy || (gx == gy && move_first) {
                (gx, gy + 1)
            } else {
                (gx + 1, gy)
            };
            // Where each element is after the other side's move alone.
            let x_after_y = Move(f2, t2).map_index(from).unwrap_or(from);
            let y_after_x = mv.map_index(f2).unwrap_or(f2);
            (finish(x_after_y, final_x), finish(y_after_x, final_y))
        }
    }
}

/// Two non-list instructions on exactly the same path.
fn same_path(a: &mut Op, b: &mut Op) -> Result<(), TransformError> {
    use Instruction::*;
    match (&a.instr, &b.instr) {
        (Update(_), Update(_)) => update_vs_update(a, b, false),
        (AddInteger(_), Update(_)) => {
            add_integer_vs_update(a, b);
            Ok(())
        }
        (Update(_), AddInteger(_)) => {
            add_integer_vs_update(b, a);
            Ok(())
        }
        // Counters commute.
        (AddInteger(_), AddInteger(_)) => Ok(()),
        (Clear(_), Clear(_)) => {
            discard_older(a, b);
            Ok(())
        }
        (Clear(_), Update(u)) => {
            clear_vs_update(a, b, u.value.clone());
            Ok(())
        }
        (Update(u), Clear(_)) => {
            clear_vs_update(b, a, u.value.clone());
            Ok(())
        }
        (Clear(_), AddInteger(_)) | (Clear(_), SetInsert(_)) | (Clear(_), SetErase(_)) => {
            b.discard();
            Ok(())
        }
        (AddInteger(_), Clear(_)) | (SetInsert(_), Clear(_)) | (SetErase(_), Clear(_)) => {
            a.discard();
            Ok(())
        }
        (SetInsert(x), SetInsert(y))
        | (SetInsert(x), SetErase(y))
        | (SetErase(x), SetInsert(y))
        | (SetErase(x), SetErase(y)) => {
            // Same element: the latest operation wins. Different elements do not conflict.
            if x.value == y.value {
                discard_older(a, b);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn payload_of(op: &Op) -> Option<&Update> {
    match &op.instr {
        Instruction::Update(u) => Some(u),
        _ => None,
    }
}

/// Last writer wins, with the exceptions of realm-sync.md 3.2.
fn update_vs_update(a: &mut Op, b: &mut Op, elements: bool) -> Result<(), TransformError> {
    let (Some(ua), Some(ub)) = (payload_of(a), payload_of(b)) else {
        return Ok(());
    };
    if elements && ua.prior_size != ub.prior_size {
        return Err(TransformError::PriorSizeMismatch {
            left: ua.prior_size,
            right: ub.prior_size,
        });
    }
    use Payload::{Dictionary, List, ObjectValue, Set};
    match (&ua.value, &ub.value) {
        // Idempotent creations: both stand.
        (ObjectValue, ObjectValue) | (List, List) | (Dictionary, Dictionary) | (Set, Set) => {
            return Ok(())
        }
        // Creating an embedded object loses to any other value.
        (ObjectValue, _) => {
            a.discard();
            return Ok(());
        }
        (_, ObjectValue) => {
            b.discard();
            return Ok(());
        }
        _ => {}
    }
    match (ua.is_default, ub.is_default) {
        // A default value loses to a real write, whatever the time.
        (true, false) => a.discard(),
        (false, true) => b.discard(),
        _ => discard_older(a, b),
    }
    Ok(())
}

/// AddInteger against a Set of the same field.
fn add_integer_vs_update(add: &mut Op, set: &mut Op) {
    let amount = match &add.instr {
        Instruction::AddInteger(a) => a.value,
        _ => return,
    };
    let add_is_newer = add.clock() > set.clock();
    let Instruction::Update(update) = &mut set.instr else {
        return;
    };
    if add_is_newer || update.is_default {
        // Applied after the add on the other side, an integer set carries the add with it.
        // Against null, a non-integer (mixed) or an erased dictionary entry the add stays on
        // both sides and applies as a no-op here: it must stay in the histories, because an
        // integer set that is older than the add but newer than this one may arrive later and
        // must then get the add (realm-core keeps it against null, discards it against a
        // non-integer; see docs/ot.md).
        if let Payload::Int(v) = &mut update.value {
            *v = v.wrapping_add(amount);
        }
    } else {
        add.discard();
    }
}

/// Clear of a collection held in a mixed field against a Set of that field.
fn clear_vs_update(clear: &mut Op, set: &mut Op, value: Payload) {
    let kind = match &clear.instr {
        Instruction::Clear(c) => c.collection_type,
        _ => return,
    };
    use crate::changeset::CollectionType;
    let same_kind = matches!(
        (kind, &value),
        (CollectionType::List, Payload::List)
            | (CollectionType::Dictionary, Payload::Dictionary)
            | (CollectionType::Set, Payload::Set)
    );
    if !same_kind {
        discard_older(clear, set);
    }
}

/// Pairs where at least one instruction changes the schema.
fn schema_pair(a: &mut Op, b: &mut Op, prepended: &mut Vec<Prepend>) -> Result<(), TransformError> {
    use Instruction::*;
    match (&a.instr, &b.instr) {
        (AddTable(x), AddTable(y)) if x.table == y.table => {
            if x.kind != y.kind {
                return Err(TransformError::SchemaMismatch {
                    what: "AddTable of one table with different definitions".into(),
                });
            }
            // Already applied on both sides.
            a.discard();
            b.discard();
        }
        (AddColumn(x), AddColumn(y)) if x.table == y.table && x.field == y.field => {
            if x != y {
                return Err(TransformError::SchemaMismatch {
                    what: "AddColumn of one column with different definitions".into(),
                });
            }
            a.discard();
            b.discard();
        }
        (EraseTable { table: x }, EraseTable { table: y }) if x == y => {
            a.discard();
            b.discard();
        }
        (
            EraseColumn {
                table: t1,
                field: f1,
            },
            EraseColumn {
                table: t2,
                field: f2,
            },
        ) if t1 == t2 && f1 == f2 => {
            a.discard();
            b.discard();
        }
        (EraseTable { table }, _) => {
            let table = *table;
            prepended.extend(erase_table_vs(table, b).map(Prepend::BeforeA));
        }
        (_, EraseTable { table }) => {
            let table = *table;
            prepended.extend(erase_table_vs(table, a).map(Prepend::BeforeB));
        }
        (EraseColumn { table, field }, _) => {
            let (table, field) = (*table, *field);
            erase_column_vs(table, field, b);
        }
        (_, EraseColumn { table, field }) => {
            let (table, field) = (*table, *field);
            erase_column_vs(table, field, a);
        }
        _ => {}
    }
    Ok(())
}

/// An op erased `table`; `other` is concurrent. Returns what goes before the erasing op on its
/// side.
fn erase_table_vs(table: InternString, other: &mut Op) -> Option<Instruction> {
    match &other.instr {
        Instruction::AddColumn(add) if add.table != table => {
            if add.column_type
                == (ColumnType::Link {
                    target_table: table,
                })
            {
                // A column linking to the erased table: drop it on both sides.
                let erase = Instruction::EraseColumn {
                    table: add.table,
                    field: add.field,
                };
                other.discard();
                return Some(erase);
            }
        }
        Instruction::AddTable(add) if add.table == table => other.discard(),
        Instruction::AddColumn(add) if add.table == table => other.discard(),
        Instruction::EraseColumn { table: t, .. } if *t == table => other.discard(),
        instr => {
            if instr.object().is_some_and(|(t, _)| t == table) {
                other.discard();
            }
        }
    }
    None
}

/// Something erased `table.field`; `other` is concurrent.
fn erase_column_vs(table: InternString, field: InternString, other: &mut Op) {
    match &other.instr {
        Instruction::AddColumn(add) if add.table == table && add.field == field => other.discard(),
        instr => {
            if let Some(p) = instr.field_path() {
                if p.table == table && p.field == field {
                    other.discard();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Op, CLOCK_LIMIT};
    use crate::changeset::{Instruction, InternString};

    /// Each flag of an op is set and read on its own, and none of them moves its clock, at
    /// the clock's smallest, largest and other values.
    #[test]
    fn an_ops_flags_leave_its_clock_alone() {
        for clock in [0, 1, 0b1010_1010, CLOCK_LIMIT / 2 + 1, CLOCK_LIMIT - 1] {
            let mut op = Op::new(
                Instruction::EraseTable {
                    table: InternString(0),
                },
                clock,
            );
            let flags = |op: &Op| (op.clock(), op.alive(), op.touched(), op.changed());
            assert_eq!(flags(&op), (clock, true, false, false));
            op.touch();
            assert_eq!(flags(&op), (clock, true, true, false));
            op.mark_changed();
            assert_eq!(flags(&op), (clock, true, true, true));
            op.discard();
            assert_eq!(flags(&op), (clock, false, true, true));
            let mut fresh = Op::new(op.instr.clone(), clock);
            fresh.discard();
            assert_eq!(flags(&fresh), (clock, false, false, false));
            fresh.mark_changed();
            assert_eq!(flags(&fresh), (clock, false, false, true));
        }
    }
}
