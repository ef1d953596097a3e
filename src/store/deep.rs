//! Which observed objects a set of committed changes reaches through links, Realm style.
//!
//! Rules (realm-core object-store `DeepChangeChecker` and `CollectionKeyPathChangeChecker`):
//!
//! - Without key paths, an object counts as modified when it was written itself, or when an
//!   object it links to (a link property, a list, set or dictionary of links, a mixed holding a
//!   link, or any of these inside its embedded objects) was created, written or erased, following
//!   links at most [`MAX_DEPTH`] levels deep counting the observed object as the first level
//!   (so three hops). Cycles end at that depth.
//! - With key paths (`"dog.name"`, `"dogs.owner.*"`; `*` means every property of that level),
//!   only the properties named along each path count, at any depth: the first segment is a
//!   property of the observed object, and every segment but the last must be a link or an
//!   embedded object. A linked object that was created counts as changed at its level.
//!   Embedded objects are part of their top-level object: a write anywhere under a top-level
//!   property counts as a write to that property, whatever the path says below it.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::Connection;

use super::{layout, read, StoreError};
use crate::state::{embedded_target, Element, Field, Key, Object, Schemas, TableSpec, Val};

/// How many levels deep changes are followed without key paths, the observed object being
/// level 1 (realm-core's `DeepChangeChecker` keeps a path of 4).
pub const MAX_DEPTH: usize = 4;

/// What one committed change did to one top-level object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectTouch {
    /// A CreateObject named it (it may have existed already).
    pub created: bool,
    /// An EraseObject named it.
    pub erased: bool,
    /// Top-level properties written (a write inside an embedded object or a collection counts
    /// as a write to the top-level property holding it).
    pub properties: BTreeSet<String>,
}

impl ObjectTouch {
    pub(crate) fn merge(&mut self, other: ObjectTouch) {
        self.created |= other.created;
        self.erased |= other.erased;
        self.properties.extend(other.properties);
    }

    fn wrote(&self, property: &str) -> bool {
        self.erased || self.properties.contains(property)
    }
}

/// The objects committed changes touched, by class, then key.
pub(crate) type Changes = HashMap<String, HashMap<Key, ObjectTouch>>;

/// Adds `more` to `into`.
pub(crate) fn merge_changes(into: &mut Changes, more: Changes) {
    for (class, objects) in more {
        let into = into.entry(class).or_default();
        for (key, touch) in objects {
            into.entry(key).or_default().merge(touch);
        }
    }
}

/// A parsed key path: property names (or `*`) from the observed class on.
pub(crate) type KeyPath = Vec<String>;

/// Parses and checks `paths` against the schema of `class`. Every segment must name a property
/// of the class reached so far (or be `*`), and every segment but the last a link or embedded
/// object property ([`StoreError::InvalidArgument`] otherwise, naming the path).
pub(crate) fn parse_key_paths(
    schemas: &Schemas,
    class: &str,
    paths: &[&str],
) -> Result<Vec<KeyPath>, StoreError> {
    let mut out = Vec::new();
    for path in paths {
        let bad = |why: String| StoreError::InvalidArgument(format!("key path {path:?}: {why}"));
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        let mut classes: BTreeSet<String> = BTreeSet::from([class.to_owned()]);
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(bad("empty segment".into()));
            }
            let last = i + 1 == segments.len();
            let mut next = BTreeSet::new();
            let mut found = false;
            for c in &classes {
                let Some(schema) = schemas.get(c) else {
                    return Err(bad(format!("no class {c}")));
                };
                for (name, column) in &schema.columns {
                    if segment != "*" && segment != name {
                        continue;
                    }
                    found = true;
                    if last {
                        continue;
                    }
                    match &column.link_target {
                        Some(target) => {
                            next.insert(target.clone());
                        }
                        None if segment != "*" => {
                            return Err(bad(format!(
                                "{c}.{name} is not a link or an embedded object, so the path \
                                 cannot go on after it"
                            )))
                        }
                        None => {}
                    }
                }
            }
            if !found {
                return Err(bad(format!(
                    "{} has no property {segment}",
                    classes.iter().cloned().collect::<Vec<_>>().join(" or ")
                )));
            }
            classes = next;
        }
        out.push(segments);
    }
    Ok(out)
}

/// The top-level objects a field links to, including through its embedded objects.
fn links_in(field: &Field, out: &mut Vec<(String, Key)>) {
    fn val(v: &Val, out: &mut Vec<(String, Key)>) {
        if let Val::Link(class, key) = v {
            out.push((class.clone(), key.clone()));
        }
    }
    fn element(e: &Element, out: &mut Vec<(String, Key)>) {
        match e {
            Element::Value(v) => val(v, out),
            Element::Embedded(o) => o.fields.values().for_each(|f| links_in(f, out)),
        }
    }
    match field {
        Field::Value(v) => val(v, out),
        Field::Embedded(Some(o)) => o.fields.values().for_each(|f| links_in(f, out)),
        Field::Embedded(None) => {}
        Field::List(items) => items.iter().for_each(|e| element(e, out)),
        Field::Set(items) => items.iter().for_each(|v| val(v, out)),
        Field::Dictionary(items) => items.values().for_each(|e| element(e, out)),
    }
}

/// The embedded objects directly held by a field.
fn embedded_in(field: &Field) -> Vec<&Object> {
    match field {
        Field::Embedded(Some(o)) => vec![o],
        Field::List(items) => items
            .iter()
            .filter_map(|e| match e {
                Element::Embedded(o) => Some(o),
                Element::Value(_) => None,
            })
            .collect(),
        Field::Dictionary(items) => items
            .values()
            .filter_map(|e| match e {
                Element::Embedded(o) => Some(o),
                Element::Value(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads a top-level object by key as stored (links to objects that do not exist included, so
/// that the checker can follow them to an erased target); `None` if it does not exist.
pub(crate) fn read_object(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    key: &Key,
) -> Result<Option<Object>, StoreError> {
    read_with(conn, schemas, class, key, read::read_object)
}

/// Reads a top-level object by key as apps see it (links to objects that do not exist hidden,
/// [`crate::state::resolved`]); `None` if it does not exist.
pub(crate) fn read_resolved(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    key: &Key,
) -> Result<Option<Object>, StoreError> {
    read_with(conn, schemas, class, key, read::read_resolved)
}

fn read_with(
    conn: &Connection,
    schemas: &Schemas,
    class: &str,
    key: &Key,
    read: fn(&Connection, &Schemas, &str, i64) -> Result<Object, StoreError>,
) -> Result<Option<Object>, StoreError> {
    if !matches!(
        schemas.get(class).map(|s| &s.spec),
        Some(TableSpec::TopLevel { .. })
    ) {
        return Ok(None);
    }
    match layout::row_id(conn, class, key)? {
        Some(id) => Ok(Some(read(conn, schemas, class, id)?)),
        None => Ok(None),
    }
}

/// Answers "did these changes reach this object?" for one evaluation round, reading linked
/// objects from the notifier's snapshot and remembering what it found.
pub(crate) struct Checker<'a> {
    conn: &'a Connection,
    schemas: &'a Schemas,
    changes: &'a Changes,
    /// Classes some changed object belongs to.
    changed_classes: HashSet<&'a str>,
    /// Per class: whether a link path from it can reach a changed class.
    reaches: HashMap<String, bool>,
    /// (class, key, level) -> whether a change is reachable from there.
    memo: HashMap<(String, Key, usize), bool>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(conn: &'a Connection, schemas: &'a Schemas, changes: &'a Changes) -> Self {
        Checker {
            conn,
            schemas,
            changes,
            changed_classes: changes.keys().map(String::as_str).collect(),
            reaches: HashMap::new(),
            memo: HashMap::new(),
        }
    }

    pub(crate) fn touch(&self, class: &str, key: &Key) -> Option<&'a ObjectTouch> {
        self.changes.get(class)?.get(key)
    }

    /// Whether following links (through embedded objects too) from `class` can reach a
    /// class with a changed object. Decided from the schema alone.
    pub(crate) fn links_can_reach_change(&mut self, class: &str) -> bool {
        if let Some(r) = self.reaches.get(class) {
            return *r;
        }
        let top_level: Vec<&String> = self
            .schemas
            .iter()
            .filter(|(_, s)| matches!(s.spec, TableSpec::TopLevel { .. }))
            .map(|(c, _)| c)
            .collect();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack: Vec<&str> = vec![class];
        let mut found = false;
        while let Some(c) = stack.pop() {
            let Some(schema) = self.schemas.get(c) else {
                continue;
            };
            for column in schema.columns.values() {
                let targets: Vec<&str> = match (&column.link_target, column.value_type) {
                    (Some(t), _) => vec![t.as_str()],
                    // A mixed value may link to any top-level class.
                    (None, crate::changeset::PayloadType::Null) => {
                        top_level.iter().map(|s| s.as_str()).collect()
                    }
                    (None, _) => Vec::new(),
                };
                for t in targets {
                    let embedded = embedded_target(self.schemas, column).is_some();
                    if !embedded && self.changed_classes.contains(t) {
                        found = true;
                    }
                    if seen.insert(t) {
                        stack.push(t);
                    }
                }
            }
            if found {
                break;
            }
        }
        self.reaches.insert(class.to_owned(), found);
        found
    }

    /// Whether a change is reachable from the object (class, key) at `level` (the observed
    /// object is level 1), without key paths.
    fn reached(&mut self, class: &str, key: &Key, level: usize) -> Result<bool, StoreError> {
        if self.touch(class, key).is_some() {
            return Ok(true);
        }
        if level >= MAX_DEPTH || !self.links_can_reach_change(class) {
            return Ok(false);
        }
        let memo_key = (class.to_owned(), key.clone(), level);
        if let Some(r) = self.memo.get(&memo_key) {
            return Ok(*r);
        }
        let mut result = false;
        if let Some(object) = read_object(self.conn, self.schemas, class, key)? {
            let mut targets = Vec::new();
            object
                .fields
                .values()
                .for_each(|f| links_in(f, &mut targets));
            for (c, k) in targets {
                if self.reached(&c, &k, level + 1)? {
                    result = true;
                    break;
                }
            }
        }
        self.memo.insert(memo_key, result);
        Ok(result)
    }

    /// The properties of an observed object (of `class`, as it is now) through whose links a
    /// change is reachable, without key paths.
    pub(crate) fn properties_reaching_change(
        &mut self,
        class: &str,
        object: &Object,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        if !self.links_can_reach_change(class) {
            return Ok(out);
        }
        for (name, field) in &object.fields {
            let mut targets = Vec::new();
            links_in(field, &mut targets);
            for (c, k) in targets {
                if self.reached(&c, &k, 2)? {
                    out.insert(name.clone());
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether the observed object (class, key) of a results listener counts as modified
    /// without key paths: written itself, or a change reachable through its links.
    pub(crate) fn object_modified(&mut self, class: &str, key: &Key) -> Result<bool, StoreError> {
        if self.touch(class, key).is_some() {
            return Ok(true);
        }
        if !self.links_can_reach_change(class) {
            return Ok(false);
        }
        let Some(object) = read_object(self.conn, self.schemas, class, key)? else {
            return Ok(false);
        };
        Ok(!self.properties_reaching_change(class, &object)?.is_empty())
    }

    /// Whether `path[at..]` finds a change below property `path[at - 1]`'s value `field` of an
    /// object of `class`.
    fn path_below(
        &mut self,
        class: &str,
        property: &str,
        field: &Field,
        path: &[String],
        at: usize,
    ) -> Result<bool, StoreError> {
        if at >= path.len() {
            return Ok(false);
        }
        // Embedded objects: their own writes already counted as writes of the top-level
        // property; only their links can lead further.
        let embedded_class = self
            .schemas
            .get(class)
            .and_then(|s| s.columns.get(property))
            .and_then(|column| embedded_target(self.schemas, column))
            .map(str::to_owned);
        if let Some(embedded_class) = embedded_class {
            for object in embedded_in(field) {
                if self.path_at(&embedded_class, object, None, path, at)? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let mut targets = Vec::new();
        links_in(field, &mut targets);
        for (c, k) in targets {
            let touch = self.touch(&c, &k);
            if touch.is_some_and(|t| t.created || t.erased) {
                return Ok(true);
            }
            if let Some(object) = read_object(self.conn, self.schemas, &c, &k)? {
                if self.path_at(&c, &object, touch, path, at)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether `path[at..]` finds a change starting at `object` (of `class`, touched as
    /// `touch`).
    fn path_at(
        &mut self,
        class: &str,
        object: &Object,
        touch: Option<&ObjectTouch>,
        path: &[String],
        at: usize,
    ) -> Result<bool, StoreError> {
        let segment = &path[at];
        for (name, field) in &object.fields {
            if segment != "*" && segment != name {
                continue;
            }
            if touch.is_some_and(|t| t.wrote(name)) {
                return Ok(true);
            }
            if self.path_below(class, name, field, path, at + 1)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The properties of an observed object (of `class`) that key paths name and through which
    /// they find a change below the object itself (writes to the object's own properties are
    /// the caller's business).
    pub(crate) fn properties_on_key_paths(
        &mut self,
        class: &str,
        object: &Object,
        paths: &[KeyPath],
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for path in paths.iter().filter(|p| p.len() > 1) {
            for (name, field) in &object.fields {
                if (path[0] == "*" || path[0] == *name)
                    && !out.contains(name)
                    && self.path_below(class, name, field, path, 1)?
                {
                    out.insert(name.clone());
                }
            }
        }
        Ok(out)
    }

    /// Whether the observed object (class, key) of a results listener counts as modified
    /// under key paths.
    pub(crate) fn object_modified_on_key_paths(
        &mut self,
        class: &str,
        key: &Key,
        paths: &[KeyPath],
    ) -> Result<bool, StoreError> {
        if let Some(touch) = self.touch(class, key) {
            let named = |p: &str| paths.iter().any(|path| path[0] == "*" || path[0] == p);
            if touch.erased || touch.properties.iter().any(|p| named(p)) {
                return Ok(true);
            }
        }
        if paths.iter().all(|p| p.len() == 1) {
            return Ok(false);
        }
        let Some(object) = read_object(self.conn, self.schemas, class, key)? else {
            return Ok(false);
        };
        Ok(!self
            .properties_on_key_paths(class, &object, paths)?
            .is_empty())
    }
}

/// Of `properties` (written on the observed object itself), those a key path names first.
pub(crate) fn named_first(properties: &[String], paths: &[KeyPath]) -> Vec<String> {
    properties
        .iter()
        .filter(|p| paths.iter().any(|path| path[0] == "*" || path[0] == **p))
        .cloned()
        .collect()
}
