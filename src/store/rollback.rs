//! Rolling back a transaction under the local changesets that came after it.
//!
//! Two callers, with the same tracking of the transaction's elements:
//!
//! - [`rebase`]: a rejected [`transact`](crate::client::SyncSession::transact) is rolled back by
//!   rebasing the later local changesets onto the server's state without it
//!   ([`Database::roll_back_to_snapshot`](super::Database::roll_back_to_snapshot)): their list
//!   indices and sizes stop counting the transaction's elements, and the server merges them by
//!   OT like any upload.
//! - [`roll_back`]: a client reset that comes while a transaction waits re-applies every local
//!   changeset except the transaction's with the recovery rules ([`super::recover`]). Where
//!   recovery copies a list from the local state ("the local list wins"), that local list still
//!   holds the transaction's effects: copied verbatim, its inserted elements would survive the
//!   rollback, so they are taken out of the copy source.
//!
//! The local state is the server's state at the last download followed by the current forms
//! of the local changesets the server has not integrated: each one's reciprocal form
//! (`_tandem_reciprocal`, the changeset transformed over the server changesets integrated
//! after it) or, if no merge changed it, the original. Positions in those forms are therefore
//! positions in the local lists, one changeset after another. The transaction's own form gives
//! the positions of the elements it inserted; each later form moves them (inserts before them,
//! erases, moves) or removes them (erased, cleared, the object or its container replaced). What
//! is left are the positions of the transaction's elements in the local lists now.
//!
//! An insert is undone by removing its element. An erase, a move or a write of an element that
//! existed before the transaction (or a clear, or a replaced container) cannot be undone from
//! the local state alone, which no longer holds what was there: such lists are marked
//! unrestorable; recovery does not copy them and a rebase does not touch them (the later
//! operations on them go to the quarantine with the reason) rather than let the transaction's
//! change survive. For a rebase, the transaction's write of an older element leaves the list
//! restorable: it moves no position, and the snapshot the rebase starts from never held it.

use std::collections::BTreeMap;

use super::recover::{moved, shift_for_erase, shift_for_insert, ListId, ObjectId};
use crate::changeset::{Changeset, Instruction, PathElement};
use crate::state::{Field, Key, Object};

/// A field path below a top-level object: the field, then embedded field names and dictionary
/// keys. A list is unrestorable when its own path starts with one of these.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Prefix {
    pub object: ObjectId,
    pub path: Vec<String>,
}

impl Prefix {
    /// Whether `list` is at or below this prefix.
    pub(crate) fn covers(&self, list: &ListId) -> bool {
        if self.object != list.object {
            return false;
        }
        let full = std::iter::once(&list.field).chain(list.keys.iter());
        self.path.len() <= list.keys.len() + 1 && self.path.iter().zip(full).all(|(a, b)| a == b)
    }
}

/// What the rollback found: the transaction's elements, removed from the local objects, and
/// the paths whose lists cannot be restored.
#[derive(Debug, Default)]
pub(crate) struct Rollback {
    /// Lists at or below these paths are not copied from the local state.
    pub unrestorable: Vec<Prefix>,
    /// Elements removed from the local objects (the transaction's inserts still there).
    pub removed: usize,
}

impl Rollback {
    /// Whether copying `list` from the local state would keep some of the transaction.
    pub(crate) fn is_unrestorable(&self, list: &ListId) -> bool {
        self.unrestorable.iter().any(|p| p.covers(list))
    }
}

/// One instruction, seen as what it does to a list.
enum ListEffect {
    /// An element inserted at this position.
    Insert(u32),
    /// The element at this position erased.
    Erase(u32),
    /// The element at `.0` moved to `.1`.
    Move(u32, u32),
    /// The element at this position written (set, or changed below it).
    Write(u32),
}

/// The top-level object and field path strings of `path` up to (not including) its first list
/// index, and that index with the rest of the path's length.
fn split(cs: &Changeset, instruction: &Instruction) -> Option<(Prefix, Option<(u32, bool)>)> {
    let path = instruction.field_path()?;
    let object = (
        cs.string(path.table)?.to_owned(),
        Key::resolve(&path.object, cs)?,
    );
    let mut names = vec![cs.string(path.field)?.to_owned()];
    for (i, element) in path.path.iter().enumerate() {
        match element {
            PathElement::Key(k) => names.push(cs.string(*k)?.to_owned()),
            PathElement::Index(at) => {
                let last = i + 1 == path.path.len();
                return Some((
                    Prefix {
                        object,
                        path: names,
                    },
                    Some((*at, last)),
                ));
            }
        }
    }
    Some((
        Prefix {
            object,
            path: names,
        },
        None,
    ))
}

fn list_of(prefix: Prefix) -> ListId {
    let mut names = prefix.path.into_iter();
    ListId {
        object: prefix.object,
        field: names.next().unwrap_or_default(),
        keys: names.collect(),
    }
}

fn effect(instruction: &Instruction, at: u32, last: bool) -> ListEffect {
    match (instruction, last) {
        (Instruction::ArrayInsert(_), true) => ListEffect::Insert(at),
        (Instruction::ArrayErase(_), true) => ListEffect::Erase(at),
        (Instruction::ArrayMove(mv), true) => ListEffect::Move(at, mv.to),
        _ => ListEffect::Write(at),
    }
}

/// Marks the lists at or below `prefix` unrestorable.
fn unrestorable(prefix: Prefix, rollback: &mut Rollback) {
    if !rollback.unrestorable.contains(&prefix) {
        rollback.unrestorable.push(prefix);
    }
}

/// The positions of the elements the transaction `transaction` inserted, per list, as they
/// stand at its end, and the lists whose other elements it erased, moved or replaced
/// (unrestorable). With `writes_move_nothing`, a write of an element that existed before it
/// (an `Update` of a list element) leaves the list restorable: it moves no position, which is
/// all a rebase needs; a copy would keep the written value, so without it such a list is
/// unrestorable.
fn track_transaction(
    transaction: &Changeset,
    writes_move_nothing: bool,
) -> (BTreeMap<ListId, Vec<u32>>, Rollback) {
    let mut rollback = Rollback::default();
    let mut marks: BTreeMap<ListId, Vec<u32>> = BTreeMap::new();
    for instruction in &transaction.instructions {
        if let Instruction::EraseObject { table, object } = instruction {
            // The object's lists are gone locally; nothing of them is copied.
            if let (Some(table), Some(key)) = (
                transaction.string(*table),
                Key::resolve(object, transaction),
            ) {
                let object = (table.to_owned(), key);
                marks.retain(|list, _| list.object != object);
            }
            continue;
        }
        let Some((prefix, index)) = split(transaction, instruction) else {
            continue;
        };
        let Some((at, last)) = index else {
            // A write of a field or container (a clear, a new embedded object, a dictionary
            // entry): whatever list was at or below it held elements from before.
            marks.retain(|list, _| !prefix.covers(list));
            unrestorable(prefix, &mut rollback);
            continue;
        };
        let list = list_of(prefix.clone());
        let own = marks.entry(list).or_default();
        match effect(instruction, at, last) {
            ListEffect::Insert(at) => {
                shift_for_insert(own, at);
                own.push(at);
            }
            ListEffect::Erase(at) if own.contains(&at) => shift_for_erase(own, at),
            ListEffect::Write(at) if own.contains(&at) => {}
            ListEffect::Move(from, to) if own.contains(&from) => {
                // The other elements keep their order: removing this one undoes the move.
                for k in own.iter_mut() {
                    *k = moved(*k, from, to);
                }
            }
            ListEffect::Erase(at) => {
                shift_for_erase(own, at);
                unrestorable(prefix, &mut rollback);
            }
            ListEffect::Move(from, to) => {
                for k in own.iter_mut() {
                    *k = moved(*k, from, to);
                }
                unrestorable(prefix, &mut rollback);
            }
            ListEffect::Write(_) if writes_move_nothing && last => {}
            ListEffect::Write(_) => unrestorable(prefix, &mut rollback),
        }
    }
    marks.retain(|_, own| !own.is_empty());
    (marks, rollback)
}

/// Finds the elements the transaction `forms[0]` inserted that the local lists still hold,
/// with `forms[1..]` the later local changesets (all in their current forms, see the module
/// header), and removes them from `local` (the objects recovery may copy lists from).
pub(crate) fn roll_back(local: &mut BTreeMap<ObjectId, Object>, forms: &[Changeset]) -> Rollback {
    let Some((transaction, later)) = forms.split_first() else {
        return Rollback::default();
    };
    let (mut marks, mut rollback) = track_transaction(transaction, false);
    for cs in later {
        if marks.is_empty() {
            break;
        }
        for instruction in &cs.instructions {
            if let Instruction::EraseObject { table, object } = instruction {
                if let (Some(table), Some(key)) = (cs.string(*table), Key::resolve(object, cs)) {
                    let object = (table.to_owned(), key);
                    marks.retain(|list, _| list.object != object);
                }
                continue;
            }
            let Some((prefix, index)) = split(cs, instruction) else {
                continue;
            };
            match index {
                // A field or container written: the lists at or below it were replaced.
                None => marks.retain(|list, _| !prefix.covers(list)),
                Some((at, last)) => {
                    let list = list_of(prefix);
                    let Some(own) = marks.get_mut(&list) else {
                        continue;
                    };
                    match effect(instruction, at, last) {
                        ListEffect::Insert(at) => shift_for_insert(own, at),
                        ListEffect::Erase(at) => shift_for_erase(own, at),
                        ListEffect::Move(from, to) => {
                            for k in own.iter_mut() {
                                *k = moved(*k, from, to);
                            }
                        }
                        // A write of the transaction's element stays with the element.
                        ListEffect::Write(_) => {}
                    }
                }
            }
        }
    }
    for (list, mut own) in marks {
        own.sort_unstable();
        own.dedup();
        let removed = local
            .get_mut(&list.object)
            .and_then(|object| list_mut(object, &list.field, &list.keys))
            .and_then(|elements| {
                let fits = own.last().is_some_and(|&k| (k as usize) < elements.len());
                fits.then(|| {
                    for &k in own.iter().rev() {
                        elements.remove(k as usize);
                    }
                    own.len()
                })
            });
        match removed {
            Some(n) => rollback.removed += n,
            // The positions do not fit the local list: do not copy it rather than guess.
            None => unrestorable(
                Prefix {
                    object: list.object.clone(),
                    path: std::iter::once(list.field.clone())
                        .chain(list.keys.iter().cloned())
                        .collect(),
                },
                &mut rollback,
            ),
        }
    }
    rollback
}

/// A later local changeset rebased to leave a rolled-back transaction out.
#[derive(Debug)]
pub(crate) struct Rebased {
    /// The changeset as the state without the transaction needs it: list indices and sizes
    /// no longer count the transaction's elements, and the instructions that only acted on
    /// them are gone.
    pub changeset: Changeset,
    /// For each instruction of `changeset`, its index in the current form.
    pub origin: Vec<usize>,
    /// Instructions of the current form (by index) that cannot be rebased, with why: they
    /// changed an element the transaction inserted, or a list whose other elements it erased,
    /// moved or replaced (their positions without it are unknown).
    pub not_rebased: Vec<(usize, String)>,
}

impl Rebased {
    /// A local changeset from before the transaction: kept as it is.
    pub(crate) fn unchanged(changeset: &Changeset) -> Rebased {
        Rebased {
            changeset: changeset.clone(),
            origin: (0..changeset.len()).collect(),
            not_rebased: Vec::new(),
        }
    }
}

/// How many of the positions `own` are below `at`.
fn below(own: &[u32], at: u32) -> u32 {
    own.iter().filter(|&&k| k < at).count() as u32
}

/// Rebases the later local changesets `forms[1..]` (current forms, see the module header) onto
/// the state without the transaction `forms[0]`: the OT transform of each over the
/// transaction's inverse, for what an inverse can be built from the changesets alone.
///
/// The transaction's inserted elements are taken out of every later list index and size (an
/// erase or move of such an element is dropped: without the transaction there is nothing to
/// erase or move, which is what the user asked for). Its other effects leave positions as
/// they were (a field or element write) or make them unknown (an erase or move of an older
/// element, a replaced container): later operations on such a list are reported in
/// [`Rebased::not_rebased`], as are writes to the transaction's own elements. Instructions on
/// objects the transaction created are kept here and fail where they are applied (the object
/// does not exist without it).
pub(crate) fn rebase(forms: &[Changeset]) -> Vec<Rebased> {
    let Some((transaction, later)) = forms.split_first() else {
        return Vec::new();
    };
    let (mut marks, rollback) = track_transaction(transaction, true);
    let mut out = Vec::with_capacity(later.len());
    for cs in later {
        let mut rebased = cs.clone();
        rebased.instructions.clear();
        let mut not_rebased = Vec::new();
        let mut origin = Vec::new();
        for (index, instruction) in cs.instructions.iter().enumerate() {
            if let Instruction::EraseObject { table, object } = instruction {
                if let (Some(table), Some(key)) = (cs.string(*table), Key::resolve(object, cs)) {
                    let object = (table.to_owned(), key);
                    marks.retain(|list, _| list.object != object);
                }
                rebased.instructions.push(instruction.clone());
                origin.push(index);
                continue;
            }
            let Some((prefix, position)) = split(cs, instruction) else {
                rebased.instructions.push(instruction.clone());
                origin.push(index);
                continue;
            };
            let Some((at, last)) = position else {
                // A field or container written: the lists at or below it were replaced, and
                // the transaction's elements in them with them.
                marks.retain(|list, _| !prefix.covers(list));
                rebased.instructions.push(instruction.clone());
                origin.push(index);
                continue;
            };
            let list = list_of(prefix);
            if rollback.is_unrestorable(&list) {
                not_rebased.push((
                    index,
                    format!(
                        "the rolled-back transaction erased, moved or replaced elements of the \
                         list {}[{}].{}, so its positions without the transaction are unknown",
                        list.object.0, list.object.1, list.field
                    ),
                ));
                continue;
            }
            let own = marks.entry(list.clone()).or_default();
            let mut instruction = instruction.clone();
            let size_before = own.len() as u32;
            let keep = match effect(&instruction, at, last) {
                ListEffect::Insert(at) => {
                    set_index(&mut instruction, at - below(own, at));
                    shift_for_insert(own, at);
                    true
                }
                ListEffect::Erase(at) if own.contains(&at) => {
                    shift_for_erase(own, at);
                    false
                }
                ListEffect::Erase(at) => {
                    set_index(&mut instruction, at - below(own, at));
                    shift_for_erase(own, at);
                    true
                }
                ListEffect::Move(from, _) if own.contains(&from) => {
                    // Taking the moved element out leaves the others in their order.
                    let to = match &instruction {
                        Instruction::ArrayMove(mv) => mv.to,
                        _ => from,
                    };
                    for k in own.iter_mut() {
                        *k = moved(*k, from, to);
                    }
                    false
                }
                ListEffect::Move(from, to) => {
                    let new_from = from - below(own, from);
                    for k in own.iter_mut() {
                        *k = moved(*k, from, to);
                    }
                    let new_to = to - below(own, to);
                    set_index(&mut instruction, new_from);
                    if let Instruction::ArrayMove(mv) = &mut instruction {
                        mv.to = new_to;
                    }
                    true
                }
                ListEffect::Write(at) if own.contains(&at) => {
                    not_rebased.push((
                        index,
                        "it changes a list element the rolled-back transaction inserted".into(),
                    ));
                    continue;
                }
                ListEffect::Write(at) => {
                    set_index(&mut instruction, at - below(own, at));
                    true
                }
            };
            if keep {
                if last {
                    shrink_prior_size(&mut instruction, size_before);
                }
                rebased.instructions.push(instruction);
                origin.push(index);
            }
            if own.is_empty() {
                marks.remove(&list);
            }
        }
        out.push(Rebased {
            changeset: rebased,
            origin,
            not_rebased,
        });
    }
    out
}

/// Sets the first list index of `instruction`'s path to `at`.
fn set_index(instruction: &mut Instruction, at: u32) {
    if let Some(path) = instruction.field_path_mut() {
        if let Some(PathElement::Index(i)) = path
            .path
            .iter_mut()
            .find(|e| matches!(e, PathElement::Index(_)))
        {
            *i = at;
        }
    }
}

/// Takes the transaction's `n` elements out of the list size an instruction on the list
/// itself carries.
fn shrink_prior_size(instruction: &mut Instruction, n: u32) {
    let size = match instruction {
        Instruction::ArrayInsert(i) => &mut i.prior_size,
        Instruction::ArrayErase(e) => &mut e.prior_size,
        Instruction::ArrayMove(m) => &mut m.prior_size,
        Instruction::Update(u) if u.is_element_update() => &mut u.prior_size,
        _ => return,
    };
    *size = size.saturating_sub(n);
}

/// The elements of the list at `field` then `keys` (embedded field names and dictionary keys)
/// of `object`, if that path holds a list.
fn list_mut<'a>(
    object: &'a mut Object,
    field: &str,
    keys: &[String],
) -> Option<&'a mut Vec<crate::state::Element>> {
    let content = object.fields.get_mut(field)?;
    let Some((first, rest)) = keys.split_first() else {
        return match content {
            Field::List(elements) => Some(elements),
            _ => None,
        };
    };
    match content {
        Field::Embedded(Some(inner)) => list_mut(inner, first, rest),
        Field::Dictionary(entries) => {
            let crate::state::Element::Embedded(inner) = entries.get_mut(first)? else {
                return None;
            };
            let (next, tail) = rest.split_first()?;
            list_mut(inner, next, tail)
        }
        _ => None,
    }
}
