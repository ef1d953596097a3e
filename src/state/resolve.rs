//! The read view of an object: what apps see when some of its links point at objects that do
//! not exist (realm-core's *unresolved links*).
//!
//! The replica keeps a link to a missing object where it was written (realm-core keeps a link
//! to a *tombstone* there), because list positions in instructions are positions in the whole
//! list: every replica must hold the same elements at the same positions for the same
//! `ArrayInsert` / `ArrayErase` / `ArrayMove` to mean the same thing. A link becomes unresolved
//! when a remote `EraseObject` erases its target (realm-core: `Table::invalidate_object`) or
//! when a remote instruction links to an object the replica does not have; it resolves again
//! when an object with that primary key is created.
//!
//! Every read that apps see hides them, exactly as realm-core's accessors do:
//!
//! | where | realm-core | here |
//! |---|---|---|
//! | single link property | `Obj::get<ObjKey>` gives null | [`Val::Null`] |
//! | single mixed property | `Obj::get<Mixed>` gives null | [`Val::Null`] |
//! | list of links | `LnkLst` skips them (its indices are *virtual*, `virtual2real`) | left out |
//! | set of links | `LnkSet` skips them | left out |
//! | list of mixed | `Lst<Mixed>::get` gives null in place (size unchanged) | [`Val::Null`] in place |
//! | dictionary (of links or mixed) | `Dictionary::get` gives null (size unchanged) | [`Val::Null`] |
//! | set of mixed | `Set<Mixed>` returns the unresolved link itself | left out (see below) |
//!
//! A set of mixed cannot show the link as null (a set holds at most one null), and Tandem has
//! no tombstone object to hand out, so it hides the element as a set of links does.
//!
//! Positions that apps give to list operations on a list of links are virtual (they count only
//! resolved links); [`virtual_to_real`] maps them to the positions instructions carry, as
//! realm-core's `LnkLst` does before it calls `Lst<ObjKey>`.

use super::Val;
use super::{embedded_target, ColumnSpec, Element, Field, Key, Object, Schemas, State, TableSpec};
use crate::changeset::{CollectionType, PayloadType};

impl State {
    /// Whether the top-level object `table[key]` exists (a link to it is resolved).
    pub fn contains(&self, table: &str, key: &Key) -> bool {
        self.object(table, key).is_some()
    }

    /// The object as apps read it: [`State::object`] with unresolved links hidden (see the
    /// module documentation of `state::resolve`). `None` if the object does not exist.
    pub fn read(&self, table: &str, key: &Key) -> Option<Object> {
        let object = self.object(table, key)?;
        Some(resolved(&self.schemas, table, object, &mut |t, k| {
            self.contains(t, k)
        }))
    }
}

/// Whether `column` is a list or set of links to top-level objects, whose unresolved elements
/// are left out of reads (and whose read positions are virtual).
pub fn is_link_collection(schemas: &Schemas, column: &ColumnSpec) -> bool {
    column.value_type == PayloadType::Link
        && embedded_target(schemas, column).is_none()
        && matches!(
            column.collection,
            CollectionType::List | CollectionType::Set
        )
}

/// `object` (of `table`) as apps read it; `exists(table, key)` says whether a link target
/// exists. Embedded objects are resolved too.
pub fn resolved(
    schemas: &Schemas,
    table: &str,
    object: &Object,
    exists: &mut dyn FnMut(&str, &Key) -> bool,
) -> Object {
    let mut out = object.clone();
    resolve_in_place(schemas, table, &mut out, exists);
    out
}

/// [`resolved`] without a copy: hides the unresolved links of `object` (of `table`) where it
/// is. Objects without links are left untouched, and cost one pass over their fields.
pub fn resolve_in_place(
    schemas: &Schemas,
    table: &str,
    object: &mut Object,
    exists: &mut dyn FnMut(&str, &Key) -> bool,
) {
    let columns = schemas.get(table).map(|s| &s.columns);
    for (name, field) in object.fields.iter_mut() {
        resolve_field(schemas, columns.and_then(|c| c.get(name)), field, exists);
    }
}

/// [`resolve_in_place`] for one field, declared by `column` (`None`: a field the schema does
/// not declare, whose links are resolved but never hidden from a collection).
pub fn resolve_field(
    schemas: &Schemas,
    column: Option<&ColumnSpec>,
    field: &mut Field,
    exists: &mut dyn FnMut(&str, &Key) -> bool,
) {
    let embedded = column.and_then(|c| embedded_target(schemas, c));
    let hide_in_collection = column.is_some_and(|c| {
        is_link_collection(schemas, c)
            || (c.value_type == PayloadType::Null && c.collection == CollectionType::Set)
    });
    match field {
        Field::Value(v) => resolve_value(v, exists),
        Field::Embedded(inner) => {
            if let Some(o) = inner {
                resolve_in_place(schemas, embedded.unwrap_or(""), o, exists);
            }
        }
        Field::List(elements) => {
            if hide_in_collection {
                elements.retain(|e| !is_unresolved_element(e, exists));
            }
            for e in elements.iter_mut() {
                resolve_element(schemas, embedded, e, exists);
            }
        }
        Field::Set(values) => {
            if hide_in_collection {
                values.retain(|v| !is_unresolved(v, exists));
            }
        }
        Field::Dictionary(entries) => {
            for e in entries.values_mut() {
                resolve_element(schemas, embedded, e, exists);
            }
        }
    }
}

/// Whether `v` is a link to an object that does not exist.
pub fn is_unresolved(v: &Val, exists: &mut dyn FnMut(&str, &Key) -> bool) -> bool {
    matches!(v, Val::Link(t, k) if !exists(t, k))
}

fn is_unresolved_element(e: &Element, exists: &mut dyn FnMut(&str, &Key) -> bool) -> bool {
    matches!(e, Element::Value(v) if is_unresolved(v, exists))
}

fn resolve_value(v: &mut Val, exists: &mut dyn FnMut(&str, &Key) -> bool) {
    if is_unresolved(v, exists) {
        *v = Val::Null;
    }
}

fn resolve_element(
    schemas: &Schemas,
    embedded: Option<&str>,
    e: &mut Element,
    exists: &mut dyn FnMut(&str, &Key) -> bool,
) {
    match e {
        Element::Value(v) => resolve_value(v, exists),
        Element::Embedded(o) => resolve_in_place(schemas, embedded.unwrap_or(""), o, exists),
    }
}

/// realm-core's `virtual2real`: the position in the whole list of the element an app calls
/// `virtual_index`, given the sorted positions of the unresolved elements. An index equal to
/// the app's list size maps to the whole list's size (appending); an insertion at an app
/// position goes after the unresolved elements just before it.
pub fn virtual_to_real(unresolved: &[usize], virtual_index: usize) -> usize {
    let mut index = virtual_index;
    for &u in unresolved {
        if u > index {
            break;
        }
        index += 1;
    }
    index
}

/// Whether `table` is a top-level table (links can only point at those).
pub(crate) fn is_top_level(schemas: &Schemas, table: &str) -> bool {
    matches!(
        schemas.get(table).map(|s| &s.spec),
        Some(TableSpec::TopLevel { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_to_real_skips_unresolved_like_realm_core() {
        // Whole list [U, A, U, U, B] (U unresolved): the app sees [A, B].
        let unresolved = [0, 2, 3];
        assert_eq!(virtual_to_real(&unresolved, 0), 1); // A
        assert_eq!(virtual_to_real(&unresolved, 1), 4); // B
        assert_eq!(virtual_to_real(&unresolved, 2), 5); // append
        assert_eq!(virtual_to_real(&[], 3), 3);
        // [A, U]: inserting at 0 goes before A, appending after U.
        assert_eq!(virtual_to_real(&[1], 0), 0);
        assert_eq!(virtual_to_real(&[1], 1), 2);
    }
}
