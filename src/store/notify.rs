//! Change notifications: object listeners and query-results listeners.
//!
//! After every commit (local write or applied remote changeset) the committing thread hands
//! the set of objects the changeset touched to the notifier thread and returns. The notifier
//! thread merges everything that arrived since it last ran (coalescing), re-reads on its own
//! connection, and calls each listener whose object or results changed. Callbacks run on that
//! thread with no lock held, so a listener may read from, or write to, the database.
//!
//! Results changes are Realm style: `deletions` are indices in the old results, `insertions`
//! indices in the new ones; an object that moved (its sort position changed) is a deletion plus
//! an insertion; `modifications` are old indices (and `modifications_new` new indices) of
//! objects still in the results whose content changed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::{layout, query, read, to_key, Config, StoreError};
use crate::changeset::Changeset;
use crate::model::{PrimaryKey, Value};
use crate::state::{Key, Object, Schemas, TableSpec};

/// What happened to an observed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectChange {
    /// The object was erased.
    Deleted,
    /// These properties changed (names, sorted).
    Modified {
        /// Names of the changed properties.
        properties: Vec<String>,
    },
}

/// How observed query results changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultsChange {
    /// Indices, in the old results, of objects no longer there (or that moved).
    pub deletions: Vec<usize>,
    /// Indices, in the new results, of objects that are new there (or that moved).
    pub insertions: Vec<usize>,
    /// Indices, in the old results, of objects still there whose content changed.
    pub modifications: Vec<usize>,
    /// The same objects' indices in the new results.
    pub modifications_new: Vec<usize>,
    /// The new results.
    pub keys: Vec<PrimaryKey>,
}

/// Objects a changeset touched: `None` means "anything" (schema changes).
pub(crate) type Touched = Option<HashSet<(String, Key)>>;

pub(crate) fn touched(changeset: &Changeset) -> Touched {
    let mut set = HashSet::new();
    for instruction in &changeset.instructions {
        if instruction.is_schema_change() {
            return None;
        }
        if let Some((table, pk)) = instruction.object() {
            let (Some(table), Some(key)) = (changeset.string(table), Key::resolve(pk, changeset))
            else {
                return None;
            };
            set.insert((table.to_owned(), key));
        }
    }
    Some(set)
}

enum Watch {
    Object {
        class: String,
        key: Key,
        last: Option<Object>,
        callback: Box<dyn Fn(ObjectChange) + Send>,
    },
    Results {
        class: String,
        query: String,
        args: Vec<Value>,
        last: Vec<PrimaryKey>,
        callback: Box<dyn Fn(&ResultsChange) + Send>,
    },
}

#[derive(Default)]
struct Pending {
    /// Changes not yet evaluated; `None` inside means "anything".
    changes: Option<Touched>,
    shutdown: bool,
}

pub(crate) struct Notifier {
    path: PathBuf,
    config: Config,
    watches: Mutex<HashMap<u64, Arc<Mutex<Watch>>>>,
    pending: Mutex<Pending>,
    wake: Condvar,
    next_id: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Keeps a listener registered; [`cancel`](ListenerToken::cancel) or dropping it stops delivery.
pub struct ListenerToken {
    notifier: Weak<Notifier>,
    id: u64,
}

impl ListenerToken {
    /// Stops delivery (a callback already running finishes).
    pub fn cancel(&self) {
        if let Some(n) = self.notifier.upgrade() {
            n.watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
    }
}

impl Drop for ListenerToken {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn merge(into: &mut Option<Touched>, more: Touched) {
    match (into.as_mut(), more) {
        (None, more) => *into = Some(more),
        (Some(None), _) => {}
        (Some(slot), None) => *slot = None,
        (Some(Some(set)), Some(more)) => set.extend(more),
    }
}

impl Notifier {
    pub(crate) fn new(path: PathBuf, config: Config) -> Arc<Notifier> {
        Arc::new(Notifier {
            path,
            config,
            watches: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            next_id: AtomicU64::new(1),
            thread: Mutex::new(None),
        })
    }

    /// Whether any listener is registered.
    pub(crate) fn has_watches(&self) -> bool {
        !self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Called after a commit: queue the touched objects for the notifier thread.
    pub(crate) fn committed(&self, touched: Touched) {
        if self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        merge(&mut pending.changes, touched);
        self.wake.notify_one();
    }

    pub(crate) fn shutdown(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shutdown = true;
        self.wake.notify_one();
        if let Some(handle) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    fn ensure_thread(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.is_none() {
            let conn = super::open_connection(&self.path, &self.config)?;
            let weak = Arc::downgrade(self);
            *thread = Some(
                std::thread::Builder::new()
                    .name("tandem-notifier".into())
                    .spawn(move || run(weak, conn))
                    .map_err(|e| {
                        StoreError::InvalidArgument(format!(
                            "cannot start the notifier thread: {e}"
                        ))
                    })?,
            );
        }
        Ok(())
    }

    fn register(self: &Arc<Self>, watch: Watch) -> Result<ListenerToken, StoreError> {
        self.ensure_thread()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(Mutex::new(watch)));
        Ok(ListenerToken {
            notifier: Arc::downgrade(self),
            id,
        })
    }

    pub(crate) fn observe_object(
        self: &Arc<Self>,
        current: Option<Object>,
        class: &str,
        key: &PrimaryKey,
        callback: Box<dyn Fn(ObjectChange) + Send>,
    ) -> Result<ListenerToken, StoreError> {
        self.register(Watch::Object {
            class: class.to_owned(),
            key: to_key(key),
            last: current,
            callback,
        })
    }

    pub(crate) fn observe_results(
        self: &Arc<Self>,
        current: Vec<PrimaryKey>,
        class: &str,
        query: &str,
        args: &[Value],
        callback: Box<dyn Fn(&ResultsChange) + Send>,
    ) -> Result<ListenerToken, StoreError> {
        self.register(Watch::Results {
            class: class.to_owned(),
            query: query.to_owned(),
            args: args.to_vec(),
            last: current,
            callback,
        })
    }
}

/// The notifier thread: wait, take everything pending, evaluate every watch, call back.
fn run(notifier: Weak<Notifier>, conn: Connection) {
    loop {
        let (changes, watches) = {
            let Some(n) = notifier.upgrade() else { return };
            let mut pending = n.pending.lock().unwrap_or_else(|e| e.into_inner());
            while pending.changes.is_none() && !pending.shutdown {
                pending = n.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            if pending.shutdown {
                return;
            }
            let changes = pending.changes.take().unwrap_or(None);
            drop(pending);
            let watches: Vec<Arc<Mutex<Watch>>> = n
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            (changes, watches)
        };
        if conn.execute_batch("BEGIN").is_err() {
            continue;
        }
        let schemas = layout::load(&conn).map(|s| s.schemas);
        if let Ok(schemas) = schemas {
            for watch in watches {
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                evaluate(&conn, &schemas, &changes, &mut w);
            }
        }
        let _ = conn.execute_batch("COMMIT");
    }
}

fn evaluate(conn: &Connection, schemas: &Schemas, changes: &Touched, watch: &mut Watch) {
    match watch {
        Watch::Object {
            class,
            key,
            last,
            callback,
        } => {
            if let Some(set) = changes {
                // A change to a link target can make a link of this object unresolved or
                // resolved again (the target erased or re-created), which changes what it reads.
                if !set.contains(&(class.clone(), key.clone()))
                    && !set.iter().any(|(t, _)| may_link_to(schemas, class, t))
                {
                    return;
                }
            }
            let now = read_object(conn, schemas, class, key);
            let change = match (&*last, &now) {
                (Some(_), None) => Some(ObjectChange::Deleted),
                (Some(before), Some(after)) => {
                    let properties: Vec<String> = after
                        .fields
                        .iter()
                        .filter(|(name, value)| before.fields.get(*name) != Some(value))
                        .map(|(name, _)| name.clone())
                        .collect();
                    (!properties.is_empty()).then_some(ObjectChange::Modified { properties })
                }
                _ => None,
            };
            *last = now;
            if let Some(change) = change {
                callback(change);
            }
        }
        Watch::Results {
            class,
            query,
            args,
            last,
            callback,
        } => {
            let Ok(compiled) = query::compile(schemas, class, query, args) else {
                return;
            };
            let Ok(now) = read::run_query(conn, schemas, class, &compiled) else {
                return;
            };
            let changed_objects: Option<HashSet<Key>> = changes.as_ref().map(|set| {
                set.iter()
                    .filter(|(table, _)| table == class)
                    .map(|(_, k)| k.clone())
                    .collect()
            });
            let change = diff(last, &now, |k| match &changed_objects {
                Some(set) => set.contains(&to_key(k)),
                None => true,
            });
            *last = now;
            if !(change.deletions.is_empty()
                && change.insertions.is_empty()
                && change.modifications.is_empty())
            {
                callback(&change);
            }
        }
    }
}

fn read_object(conn: &Connection, schemas: &Schemas, class: &str, key: &Key) -> Option<Object> {
    if !matches!(
        schemas.get(class).map(|s| &s.spec),
        Some(TableSpec::TopLevel { .. })
    ) {
        return None;
    }
    let id = layout::row_id(conn, class, key).ok()??;
    read::read_resolved(conn, schemas, class, id).ok()
}

/// Whether objects of `class` (or the embedded objects they hold) can hold a link to an object
/// of `target`: a link column to it, or a mixed column.
fn may_link_to(schemas: &Schemas, class: &str, target: &str) -> bool {
    let mut seen = HashSet::new();
    let mut todo = vec![class];
    while let Some(c) = todo.pop() {
        if !seen.insert(c) {
            continue;
        }
        let Some(schema) = schemas.get(c) else {
            continue;
        };
        for column in schema.columns.values() {
            match column.link_target.as_deref() {
                Some(t) if t == target => return true,
                Some(t) if matches!(schemas.get(t).map(|s| &s.spec), Some(TableSpec::Embedded)) => {
                    todo.push(t)
                }
                _ if column.value_type == crate::changeset::PayloadType::Null => return true,
                _ => {}
            }
        }
    }
    false
}

/// Realm-style index changes from `old` to `new`. `modified` says whether an object that is in
/// both had its content changed.
pub(crate) fn diff(
    old: &[PrimaryKey],
    new: &[PrimaryKey],
    modified: impl Fn(&PrimaryKey) -> bool,
) -> ResultsChange {
    let old_index: HashMap<&PrimaryKey, usize> =
        old.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let new_index: HashMap<&PrimaryKey, usize> =
        new.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut change = ResultsChange {
        keys: new.to_vec(),
        ..ResultsChange::default()
    };
    for (i, k) in old.iter().enumerate() {
        if !new_index.contains_key(k) {
            change.deletions.push(i);
        }
    }
    // Objects in both, in new order, with their old index; those off the longest increasing
    // run of old indices moved.
    let kept: Vec<(usize, usize)> = new
        .iter()
        .enumerate()
        .filter_map(|(j, k)| old_index.get(k).map(|&i| (i, j)))
        .collect();
    let stay = longest_increasing(&kept.iter().map(|(i, _)| *i).collect::<Vec<_>>());
    let mut moved_new = HashSet::new();
    for (n, (i, j)) in kept.iter().enumerate() {
        if stay.contains(&n) {
            if modified(&new[*j]) {
                change.modifications.push(*i);
                change.modifications_new.push(*j);
            }
        } else {
            change.deletions.push(*i);
            moved_new.insert(*j);
        }
    }
    for (j, k) in new.iter().enumerate() {
        if !old_index.contains_key(k) || moved_new.contains(&j) {
            change.insertions.push(j);
        }
    }
    change.deletions.sort_unstable();
    change.modifications.sort_unstable();
    change
}

/// Positions (in `seq`) of one longest strictly increasing subsequence.
fn longest_increasing(seq: &[usize]) -> HashSet<usize> {
    // Patience sorting: tails[l] = index in seq of the smallest tail of a run of length l+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; seq.len()];
    for (p, &v) in seq.iter().enumerate() {
        let l = tails.partition_point(|&t| seq[t] < v);
        prev[p] = l.checked_sub(1).map(|l| tails[l]);
        if l == tails.len() {
            tails.push(p);
        } else {
            tails[l] = p;
        }
    }
    let mut out = HashSet::new();
    let mut at = tails.last().copied();
    while let Some(p) = at {
        out.insert(p);
        at = prev[p];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[i64]) -> Vec<PrimaryKey> {
        v.iter().map(|i| PrimaryKey::Int(*i)).collect()
    }

    #[test]
    fn diff_reports_realm_style_indices() {
        let c = diff(&keys(&[1, 2, 3, 4]), &keys(&[2, 5, 4, 3]), |k| {
            *k == PrimaryKey::Int(2)
        });
        // 1 is deleted, 5 inserted; of 2, 4, 3 (old 1, 3, 2) the longest run in old order is
        // 2, 3, so 4 counts as moved: deleted at old 3, inserted at new 2.
        assert_eq!(c.deletions, [0, 3]);
        assert_eq!(c.insertions, [1, 2]);
        assert_eq!(c.modifications, [1]);
        assert_eq!(c.modifications_new, [0]);
        let none = diff(&keys(&[1, 2]), &keys(&[1, 2]), |_| false);
        assert!(
            none.deletions.is_empty()
                && none.insertions.is_empty()
                && none.modifications.is_empty()
        );
    }
}
