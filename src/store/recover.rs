//! Client reset recovery: the local changesets the server never integrated, re-applied one
//! instruction at a time on top of the server's state, with realm-core's recovery rules
//! (`src/realm/sync/noinst/client_reset_recovery.cpp`; `realm-sync.md` section 6).
//!
//! Per instruction, against the server's state plus what recovery has re-applied so far:
//! - `AddTable`, `AddColumn` and `CreateObject` apply: objects created locally are recovered.
//! - `EraseObject` applies; erasing an object the server already erased does nothing.
//! - `EraseTable` and `EraseColumn` are not recovered (realm-core refuses destructive schema
//!   changes during recovery).
//! - A path instruction on an object the server deleted is not recovered, nor one whose path
//!   no longer exists there (an embedded object the server removed).
//! - Field writes (`Update`), dictionary writes and erases (by key) and set inserts and erases
//!   (by value) apply. `AddInteger` applies as an add when the field holds an integer, and is
//!   not recovered when the server's value is null.
//! - A value linking to an object that does not exist on the server (realm-core's
//!   `check_links_exist`): an `Update` writes null instead where the field takes null; a list
//!   or set insert is not recovered, and a list copy leaves such links out.
//! - Lists. An operation is recovered by index only where the index means the same element on
//!   both sides: an element the recovery itself inserted, or an insert into a list that still
//!   has the size the local client saw (its `prior_size`). Any other list operation (a stale
//!   insert; a set, move or erase of an element that existed before the local changes; a path
//!   through such an element) marks the list to be copied verbatim, as realm-core does: at the
//!   end of the changeset the server's list is cleared and the local list written in full, and
//!   later operations on that list are covered by the copy. The local list wins as a whole
//!   ("last recovering client wins for that list"). A `Clear` of the list starts tracking again
//!   from the empty list.
//!
//! realm-core recovers an insert by index even when the list's size changed (clamping the index
//! to the size). Tandem copies the list instead: with another client's elements in between, the
//! index no longer names the position the user chose, and a stale index is exactly how a whole
//! transaction used to be refused (`[x, y]` became `[x, y, z]` on the server while the local
//! client inserted at 2).
//!
//! What is not recovered is reported per instruction with the reason (the client reset puts it
//! in the quarantine); list operations covered by a copy are recovered, not reported.

use std::collections::{BTreeMap, BTreeSet};

use super::rollback::Rollback;
use crate::changeset::{
    Changeset, Clear, CollectionType, FieldPath, Instruction, PathElement, Payload,
};
use crate::state::{write_list, ApplyError, ColumnSpec, Element, Field, Key, Object, State, Val};

/// A top-level object, by table name and key.
pub(crate) type ObjectId = (String, Key);

/// A list, by where it is: its top-level object, the field, and the keys below it (embedded
/// field names and dictionary keys). Never a list index: an operation through a list element
/// is an operation on the outer list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ListId {
    pub object: ObjectId,
    pub field: String,
    pub keys: Vec<String>,
}

/// What recovery knows about one list.
enum Tracker {
    /// Operations apply by index; `known` holds the positions of the elements the recovery
    /// inserted (the only positions known to mean the same element on both sides).
    Tracking { known: Vec<u32> },
    /// The list is copied verbatim from the local state: at the end of the current changeset
    /// while `pending` holds the copy to make, and already copied when it is `None`.
    Copy { pending: Option<PendingCopy> },
}

struct PendingCopy {
    /// The list's path, in the current changeset's strings.
    at: FieldPath,
    /// The instructions of the current changeset the copy stands for.
    covers: Vec<usize>,
}

/// What recovery made of one local changeset.
pub(crate) struct RecoveredChangeset {
    /// The instructions to re-record: the recovered ones (list indices as applied) and the list
    /// copies, in the original's string table (plus the strings the copies added).
    pub changeset: Changeset,
    /// The instructions of the original that were not recovered, by index, with the reason.
    pub not_recovered: Vec<(usize, String)>,
    /// Lists copied verbatim from the local state.
    pub lists_copied: usize,
}

/// The recovery of a sequence of local changesets onto the server's state.
pub(crate) struct Recovery {
    /// The server's state plus everything recovered so far.
    fresh: State,
    /// The local objects whose lists may be copied, as they were before the reset.
    local: BTreeMap<ObjectId, Object>,
    lists: BTreeMap<ListId, Tracker>,
    /// What a rolled-back transaction left that no copy may keep (empty without one).
    rollback: Rollback,
}

/// One changeset's recovery in progress.
struct Pass {
    /// The original's strings (and the copies'); holds at most the instructions being tried.
    work: Changeset,
    out: Vec<Instruction>,
    not_recovered: Vec<(usize, String)>,
    lists_copied: usize,
}

/// What to do with a list operation.
enum Decision {
    Apply,
    Copy,
}

fn resolve_object(cs: &Changeset, path: &FieldPath) -> Option<ObjectId> {
    Some((
        cs.string(path.table)?.to_owned(),
        Key::resolve(&path.object, cs)?,
    ))
}

/// The field `field` of `object` (of `table`), then down `keys` (embedded field names and
/// dictionary keys), with its column; `None` where the path does not exist.
fn locate<'a>(
    state: &'a State,
    table: &str,
    object: &'a Object,
    field: &'a str,
    keys: &'a [String],
) -> Option<(&'a Field, &'a ColumnSpec)> {
    let mut table = state.schemas.get(table)?;
    let (mut object, mut name, mut rest) = (object, field, keys);
    loop {
        let column = table.columns.get(name)?;
        let content = object.fields.get(name)?;
        let Some((first, tail)) = rest.split_first() else {
            return Some((content, column));
        };
        table = state.schemas.get(column.link_target.as_deref()?)?;
        match content {
            Field::Embedded(Some(inner)) => (object, name, rest) = (inner, first.as_str(), tail),
            Field::Dictionary(entries) => {
                let Element::Embedded(inner) = entries.get(first)? else {
                    return None;
                };
                let (next, tail) = tail.split_first()?;
                (object, name, rest) = (inner, next.as_str(), tail);
            }
            _ => return None,
        }
    }
}

/// Moves the known positions of a list for an insert at `at` (+1 from `at` on).
pub(crate) fn shift_for_insert(known: &mut [u32], at: u32) {
    for k in known.iter_mut().filter(|k| **k >= at) {
        *k += 1;
    }
}

/// Moves the known positions of a list for an erase at `at`: the position erased is no longer
/// known, those after it move down by one.
pub(crate) fn shift_for_erase(known: &mut Vec<u32>, at: u32) {
    known.retain(|k| *k != at);
    for k in known.iter_mut().filter(|k| **k > at) {
        *k -= 1;
    }
}

/// Where position `k` goes when the element at `from` moves to `to`.
pub(crate) fn moved(k: u32, from: u32, to: u32) -> u32 {
    if k == from {
        to
    } else if from < to && k > from && k <= to {
        k - 1
    } else if to < from && k >= to && k < from {
        k + 1
    } else {
        k
    }
}

impl Recovery {
    /// Recovery onto `fresh` (the server's state, with the local schema), copying lists from
    /// `local` (the objects [`Recovery::objects_to_read`] names, as they are locally).
    pub(crate) fn new(fresh: State, local: BTreeMap<ObjectId, Object>) -> Self {
        Recovery {
            fresh,
            local,
            lists: BTreeMap::new(),
            rollback: Rollback::default(),
        }
    }

    /// Recovery that also rolls back a transaction: `local` has had the transaction's inserts
    /// removed already, and the lists `rollback` marks unrestorable are never copied.
    pub(crate) fn rolling_back(
        fresh: State,
        local: BTreeMap<ObjectId, Object>,
        rollback: Rollback,
    ) -> Self {
        Recovery {
            rollback,
            ..Recovery::new(fresh, local)
        }
    }

    /// The top-level objects whose lists recovery may have to copy: those a list operation of
    /// `changesets` addresses. Read them from the local state before it is replaced.
    pub(crate) fn objects_to_read(changesets: &[Changeset]) -> BTreeSet<ObjectId> {
        changesets
            .iter()
            .flat_map(|cs| {
                cs.instructions.iter().filter_map(move |i| {
                    let path = i.field_path()?;
                    path.path
                        .iter()
                        .any(|e| matches!(e, PathElement::Index(_)))
                        .then(|| resolve_object(cs, path))?
                })
            })
            .collect()
    }

    /// Recovers one local changeset (call in the original order).
    pub(crate) fn changeset(&mut self, original: &Changeset) -> RecoveredChangeset {
        let mut work = Changeset::new();
        for s in original.strings() {
            work.intern(s);
        }
        let mut pass = Pass {
            work,
            out: Vec::new(),
            not_recovered: Vec::new(),
            lists_copied: 0,
        };
        for (index, instruction) in original.instructions.iter().enumerate() {
            self.instruction(&mut pass, index, instruction);
        }
        self.copy_lists(&mut pass);
        let mut changeset = pass.work;
        changeset.instructions = pass.out;
        changeset.meta = original.meta;
        RecoveredChangeset {
            changeset,
            not_recovered: pass.not_recovered,
            lists_copied: pass.lists_copied,
        }
    }

    /// Applies `instructions` to the fresh state (atomically); on success they are recovered.
    fn apply(&mut self, pass: &mut Pass, instructions: Vec<Instruction>) -> Result<(), String> {
        pass.work.instructions = instructions;
        let result = self.fresh.apply(&pass.work);
        let tried = std::mem::take(&mut pass.work.instructions);
        match result {
            Ok(()) => {
                pass.out.extend(tried);
                Ok(())
            }
            Err(
                ApplyError::BadChangeset { reason, .. } | ApplyError::SchemaMismatch { reason, .. },
            ) => Err(reason),
        }
    }

    fn instruction(&mut self, pass: &mut Pass, index: usize, instruction: &Instruction) {
        match instruction {
            Instruction::EraseTable { .. } | Instruction::EraseColumn { .. } => {
                pass.not_recovered.push((
                    index,
                    "destructive schema changes are not recovered by a client reset".into(),
                ));
            }
            Instruction::AddTable(_)
            | Instruction::AddColumn(_)
            | Instruction::CreateObject { .. } => {
                if let Err(why) = self.apply(pass, vec![instruction.clone()]) {
                    pass.not_recovered
                        .push((index, format!("does not fit the server's schema: {why}")));
                }
            }
            Instruction::EraseObject { table, object } => {
                let target = pass
                    .work
                    .string(*table)
                    .map(str::to_owned)
                    .zip(Key::resolve(object, &pass.work));
                if let Some((table, key)) = &target {
                    if self.fresh.object(table, key).is_none() {
                        return; // Already gone on the server.
                    }
                    self.lists
                        .retain(|id, _| id.object.0 != *table || id.object.1 != *key);
                }
                if let Err(why) = self.apply(pass, vec![instruction.clone()]) {
                    pass.not_recovered.push((index, why));
                }
            }
            _ => self.path_instruction(pass, index, instruction),
        }
    }

    fn path_instruction(&mut self, pass: &mut Pass, index: usize, instruction: &Instruction) {
        let Some(path) = instruction.field_path() else {
            return;
        };
        let Some((table, key)) = resolve_object(&pass.work, path) else {
            pass.not_recovered
                .push((index, "names a string the changeset does not define".into()));
            return;
        };
        if self.fresh.object(&table, &key).is_none() {
            pass.not_recovered.push((
                index,
                format!("{table}[{key}] does not exist on the server (it was deleted there)"),
            ));
            return;
        }
        let first_index = path
            .path
            .iter()
            .position(|e| matches!(e, PathElement::Index(_)));
        let mut instruction = instruction.clone();
        let mut nulled = None;
        if let Some(target) = self.missing_link_target(&pass.work, &instruction) {
            match &mut instruction {
                // A list element's write is left to the list rules (it may be covered by a copy).
                Instruction::Update(update) if first_index.is_none() => {
                    update.value = Payload::Null;
                    nulled = Some(target);
                }
                Instruction::Update(_) => {}
                _ => {
                    pass.not_recovered.push((
                        index,
                        format!("links to {target}, which does not exist on the server"),
                    ));
                    return;
                }
            }
        }
        let field = pass.work.string(path.field).unwrap_or_default().to_owned();
        let recovered = match first_index {
            None => self.plain(pass, instruction, (table, key), field),
            Some(at) => {
                let keys: Option<Vec<String>> = path.path[..at]
                    .iter()
                    .map(|e| match e {
                        PathElement::Key(k) => pass.work.string(*k).map(str::to_owned),
                        PathElement::Index(_) => None,
                    })
                    .collect();
                let Some(keys) = keys else {
                    pass.not_recovered
                        .push((index, "names a string the changeset does not define".into()));
                    return;
                };
                let list = ListId {
                    object: (table, key),
                    field,
                    keys,
                };
                self.list_operation(pass, index, instruction, list, at);
                Ok(())
            }
        };
        match (recovered, nulled) {
            (Err(why), _) => pass.not_recovered.push((index, why)),
            (Ok(()), Some(target)) => pass.not_recovered.push((
                index,
                format!(
                    "links to {target}, which does not exist on the server: null written instead"
                ),
            )),
            (Ok(()), None) => {}
        }
    }

    /// The object a link the instruction writes points to, if it does not exist in the fresh
    /// state (for writes and inserts; erasing such a link from a set does no harm).
    fn missing_link_target(&self, cs: &Changeset, instruction: &Instruction) -> Option<String> {
        let (Instruction::Update(crate::changeset::Update { value, .. })
        | Instruction::ArrayInsert(crate::changeset::ArrayInsert { value, .. })
        | Instruction::SetInsert(crate::changeset::SetValue { value, .. })) = instruction
        else {
            return None;
        };
        let Payload::Link(link) = value else {
            return None;
        };
        let table = cs.string(link.target_table)?;
        let key = Key::resolve(&link.target, cs)?;
        self.fresh
            .object(table, &key)
            .is_none()
            .then(|| format!("{table}[{key}]"))
    }

    /// A path instruction whose path has no list index.
    fn plain(
        &mut self,
        pass: &mut Pass,
        instruction: Instruction,
        object: ObjectId,
        field: String,
    ) -> Result<(), String> {
        let keys: Vec<String> = instruction
            .field_path()
            .map(|p| p.path.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match e {
                PathElement::Key(k) => pass.work.string(*k).map(str::to_owned),
                PathElement::Index(_) => None,
            })
            .collect();
        let clears_list = matches!(
            &instruction,
            Instruction::Clear(c) if c.collection_type == CollectionType::List
        );
        if let Instruction::AddInteger(_) = &instruction {
            let current = self.fresh.object(&object.0, &object.1).and_then(|o| {
                locate(&self.fresh, &object.0, o, &field, &keys).map(|(f, _)| f.clone())
            });
            if let Some(Field::Value(Val::Null)) = current {
                return Err(format!(
                    "{}[{}].{field} is null on the server: there is nothing to add to",
                    object.0, object.1
                ));
            }
        }
        self.apply(pass, vec![instruction])
            .map_err(|why| format!("does not apply to the server's state: {why}"))?;
        if clears_list {
            // Everything after a clear is on elements the recovery inserts itself.
            let list = ListId {
                object,
                field,
                keys,
            };
            self.lists
                .insert(list, Tracker::Tracking { known: Vec::new() });
        }
        Ok(())
    }

    /// A path instruction whose path has a list index at `at` (the first one).
    fn list_operation(
        &mut self,
        pass: &mut Pass,
        index: usize,
        instruction: Instruction,
        list: ListId,
        at: usize,
    ) {
        let path = instruction
            .field_path()
            .expect("a path instruction")
            .clone();
        let PathElement::Index(position) = path.path[at] else {
            unreachable!("`at` is the position of an index")
        };
        let last = at + 1 == path.path.len();
        let size = self.fresh_list_len(&list);
        let tracker = self
            .lists
            .entry(list.clone())
            .or_insert(Tracker::Tracking { known: Vec::new() });
        let decision = match tracker {
            Tracker::Copy { pending: None } => return, // Copied already: covered by the copy.
            Tracker::Copy { pending: Some(_) } => Decision::Copy,
            Tracker::Tracking { known } => match &instruction {
                _ if !last => {
                    // Through an element into an embedded object.
                    if known.contains(&position) {
                        Decision::Apply
                    } else {
                        Decision::Copy
                    }
                }
                Instruction::ArrayInsert(insert) => {
                    if size == Some(insert.prior_size as usize) {
                        Decision::Apply
                    } else {
                        Decision::Copy
                    }
                }
                Instruction::ArrayMove(mv) => {
                    if known.contains(&position) && known.contains(&mv.to) {
                        Decision::Apply
                    } else {
                        Decision::Copy
                    }
                }
                _ => {
                    if known.contains(&position) {
                        Decision::Apply
                    } else {
                        Decision::Copy
                    }
                }
            },
        };
        if let Decision::Apply = decision {
            let effect = match (&instruction, last) {
                (Instruction::ArrayInsert(_), true) => Some(Effect::Insert),
                (Instruction::ArrayErase(_), true) => Some(Effect::Erase),
                (Instruction::ArrayMove(mv), true) => Some(Effect::Move(mv.to)),
                _ => None,
            };
            if self.apply(pass, vec![instruction]).is_ok() {
                if let Some(Tracker::Tracking { known }) = self.lists.get_mut(&list) {
                    match effect {
                        Some(Effect::Insert) => {
                            shift_for_insert(known, position);
                            known.push(position);
                        }
                        Some(Effect::Erase) => shift_for_erase(known, position),
                        Some(Effect::Move(to)) => {
                            for k in known.iter_mut() {
                                *k = moved(*k, position, to);
                            }
                        }
                        None => {}
                    }
                }
                return;
            }
            // It did not apply by index after all: the local list wins.
        }
        let tracker = self
            .lists
            .entry(list)
            .or_insert(Tracker::Tracking { known: Vec::new() });
        match tracker {
            Tracker::Copy {
                pending: Some(copy),
            } => copy.covers.push(index),
            Tracker::Copy { pending: None } => {}
            Tracker::Tracking { .. } => {
                let mut at_list = path;
                at_list.path.truncate(at);
                *tracker = Tracker::Copy {
                    pending: Some(PendingCopy {
                        at: at_list,
                        covers: vec![index],
                    }),
                };
            }
        }
    }

    fn fresh_list_len(&self, list: &ListId) -> Option<usize> {
        let object = self.fresh.object(&list.object.0, &list.object.1)?;
        match locate(&self.fresh, &list.object.0, object, &list.field, &list.keys)? {
            (Field::List(elements), _) => Some(elements.len()),
            _ => None,
        }
    }

    /// Makes the copies the current changeset's operations asked for.
    fn copy_lists(&mut self, pass: &mut Pass) {
        let pending: Vec<(ListId, PendingCopy)> = self
            .lists
            .iter_mut()
            .filter_map(|(list, tracker)| match tracker {
                Tracker::Copy { pending } => pending.take().map(|p| (list.clone(), p)),
                Tracker::Tracking { .. } => None,
            })
            .collect();
        for (list, copy) in pending {
            match self.copy_list(pass, &list, copy.at) {
                Ok(()) => pass.lists_copied += 1,
                Err(why) => {
                    // Later operations on the list are judged afresh.
                    self.lists.remove(&list);
                    for index in copy.covers {
                        pass.not_recovered.push((
                            index,
                            format!(
                                "the list {}[{}].{} could not be copied from the local state: {why}",
                                list.object.0, list.object.1, list.field
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Replaces the fresh list at `at` by the local one: `Clear`, then every element.
    fn copy_list(&mut self, pass: &mut Pass, list: &ListId, at: FieldPath) -> Result<(), String> {
        let (table, key) = &list.object;
        if self.rollback.is_unrestorable(list) {
            return Err(
                "the rolled-back transaction erased, moved or replaced elements of it, \
                 which the local list no longer holds"
                    .into(),
            );
        }
        let local = self
            .local
            .get(&list.object)
            .ok_or_else(|| format!("{table}[{key}] no longer exists locally"))?;
        let (elements, column) = match locate(&self.fresh, table, local, &list.field, &list.keys) {
            // Links to objects the server does not have are left out, as realm-core's
            // list copy leaves them out (their inserts are reported as not recovered).
            Some((Field::List(elements), column)) => (
                elements
                    .iter()
                    .filter(|e| match e {
                        Element::Value(Val::Link(t, k)) => self.fresh.object(t, k).is_some(),
                        _ => true,
                    })
                    .cloned()
                    .collect::<Vec<_>>(),
                column.clone(),
            ),
            _ => return Err("the local object has no such list".into()),
        };
        pass.work.instructions = vec![Instruction::Clear(Clear {
            path: at.clone(),
            collection_type: CollectionType::List,
        })];
        write_list(&self.fresh, &mut pass.work, &column, at, &elements);
        let instructions = std::mem::take(&mut pass.work.instructions);
        self.apply(pass, instructions)
    }
}

/// How a recovered list operation moves the known positions.
enum Effect {
    Insert,
    Erase,
    Move(u32),
}
