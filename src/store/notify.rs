//! Change notifications: object listeners and query-results listeners.
//!
//! After every commit (local write or applied remote changeset) the committing thread hands
//! the objects the changeset touched (and which of their properties) to the notifier thread
//! of every handle this process has open on the file (`Peers`), and returns. Commits by
//! other processes are not heard (docs/store.md, "Notifications"). The notifier thread adds
//! everything that arrived since it last ran to each listener's own pending changes
//! (coalescing), re-reads on its own connection, and calls each
//! listener whose object or results changed. Callbacks run on that thread with no lock other
//! than their own listener's held, so a listener may read from, or write to, the database.
//!
//! Nothing is dropped: a listener's pending changes are cleared only after it was evaluated
//! against a snapshot that contains them. When the snapshot, the schema, the query or a read
//! fails (SQLite busy or I/O errors), the changes stay pending, the failure is reported on
//! stderr once per run of failures, and the notifier retries with a growing delay (10 ms to
//! 1 s) until it succeeds or the listener is cancelled. A listener is registered before its
//! first snapshot is read, so no commit falls between the two.
//!
//! Changes reached through links count (see [`super::deep`] for the rules, which are
//! realm-core's): an observed object is modified when an object it links to, up to four levels
//! deep, changed; key paths narrow that to the properties they name.
//!
//! Results changes are Realm style: `deletions` are indices in the old results, `insertions`
//! indices in the new ones; an object that moved (its sort position changed) is a deletion plus
//! an insertion; `modifications` are old indices (and `modifications_new` new indices) of
//! objects still in the results whose content changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::deep::{self, Changes, Checker, KeyPath};
use super::{layout, query, read, to_key, DbFile, StoreError};
use crate::changeset::{Changeset, Instruction};
use crate::model::{PrimaryKey, Value};
use crate::state::{Key, Object};

/// What happened to an observed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectChange {
    /// The object was erased.
    Deleted,
    /// These properties changed (names, sorted). A link property is named when an object
    /// reached through it changed.
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

/// Objects a changeset touched: `None` means "anything" (schema changes, resets).
pub(crate) type Touched = Option<Changes>;

pub(crate) fn touched(changeset: &Changeset) -> Touched {
    let mut builder = TouchedBuilder::default();
    for instruction in &changeset.instructions {
        builder.add(changeset, instruction);
    }
    builder.finish()
}

/// [`touched`] one instruction at a time, for a changeset applied as it is decoded.
pub(crate) struct TouchedBuilder {
    /// `None` once an instruction touched "anything".
    changes: Touched,
}

impl Default for TouchedBuilder {
    fn default() -> Self {
        TouchedBuilder {
            changes: Some(Changes::new()),
        }
    }
}

impl TouchedBuilder {
    /// Adds what `instruction` (its strings in `strings`) touches.
    pub(crate) fn add(&mut self, strings: &Changeset, instruction: &Instruction) {
        let Some(changes) = self.changes.as_mut() else {
            return;
        };
        if instruction.is_schema_change() {
            self.changes = None;
            return;
        }
        let Some((table, pk)) = instruction.object() else {
            return;
        };
        let (Some(table), Some(key)) = (strings.string(table), Key::resolve(pk, strings)) else {
            self.changes = None;
            return;
        };
        let touch = changes
            .entry(table.to_owned())
            .or_default()
            .entry(key)
            .or_default();
        match instruction {
            Instruction::CreateObject { .. } => touch.created = true,
            Instruction::EraseObject { .. } => touch.erased = true,
            other => match other.field_path().and_then(|p| strings.string(p.field)) {
                Some(field) => {
                    touch.properties.insert(field.to_owned());
                }
                None => self.changes = None,
            },
        }
    }

    /// What the instructions added touched.
    pub(crate) fn finish(self) -> Touched {
        self.changes
    }
}

/// Adds `more` to the changes in `into` (`None` there: nothing yet).
fn merge(into: &mut Option<Touched>, more: Touched) {
    match (into.as_mut(), more) {
        (None, more) => *into = Some(more),
        (Some(None), _) => {}
        (Some(slot), None) => *slot = None,
        (Some(Some(set)), Some(more)) => deep::merge_changes(set, more),
    }
}

enum Kind {
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

struct Watch {
    kind: Kind,
    /// Empty: every property, and changes reached through links up to the default depth.
    key_paths: Vec<KeyPath>,
    /// Changes committed since this listener was last evaluated successfully.
    pending: Option<Touched>,
    /// Whether the last evaluation failed (reported once per run of failures).
    failing: bool,
}

#[derive(Default)]
struct Pending {
    /// Changes not yet handed to the listeners; `None` inside means "anything".
    changes: Option<Touched>,
    /// Changes queued before a listener registered, each with that listener's id: they are
    /// handed only to listeners with smaller ids. A listener reads where it starts from after
    /// registering, and a commit is queued after its SQLite commit, so those changes are
    /// already in its start: handing them to it too would report objects as modified that
    /// did not change since (found as a flaky Kotlin test, `resultsChangesAsAFlow`).
    earlier: Vec<(Touched, u64)>,
    shutdown: bool,
}

/// Where a file's notifiers meet: the file's identity (device and inode) where the platform has
/// one, else its path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    Identity(u64, u64),
    Path(std::path::PathBuf),
}

/// The notifiers of every [`super::Database`] this process has open on one file: a commit
/// through any of them reaches the listeners of all (Realm notifies every instance of a file).
struct Peers {
    key: FileKey,
    /// Whether the file is open [`super::Config::exclusive_to_process`] here: every handle of
    /// a process opens a file the same way ([`open_mode_conflict`]).
    exclusive: bool,
    notifiers: Mutex<Vec<Weak<Notifier>>>,
    /// While a sync session holds the file in this process ([`Notifier::hold_for_sync`]):
    /// whether it is stopping.
    #[cfg(feature = "client")]
    sync: Mutex<Option<SyncStopping>>,
    /// Notified when a sync session lets go of the file.
    #[cfg(feature = "client")]
    sync_released: Condvar,
}

/// Whether the sync session holding a file is stopping.
#[cfg(feature = "client")]
pub(crate) type SyncStopping = Box<dyn Fn() -> bool + Send + Sync>;

/// A sync session's hold on its file in this process ([`Notifier::hold_for_sync`]), let go of
/// when dropped. Kept with the file's other handles' shared state rather than in a registry of
/// its own, so that it goes with the file's last handle.
#[cfg(feature = "client")]
pub(crate) struct SyncHold(Arc<Peers>);

#[cfg(feature = "client")]
impl Drop for SyncHold {
    fn drop(&mut self) {
        *self.0.sync.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.0.sync_released.notify_all();
    }
}

impl Drop for Peers {
    /// The file's last handle closed: its entry leaves the registry, and the registry itself
    /// goes when it is empty, so a process that closed every database holds nothing of them
    /// (the simulation counts every byte a client process leaves allocated).
    fn drop(&mut self) {
        let mut all = PEERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = all.as_mut() {
            if map.get(&self.key).is_some_and(|p| p.strong_count() == 0) {
                map.remove(&self.key);
            }
            if map.is_empty() {
                *all = None;
            }
        }
    }
}

impl Peers {
    /// Joins `notifier` to the file's notifiers.
    fn add(&self, notifier: Weak<Notifier>) {
        let mut notifiers = self.notifiers.lock().unwrap_or_else(|e| e.into_inner());
        notifiers.retain(|n| n.strong_count() > 0);
        notifiers.push(notifier);
    }

    /// The live notifiers of the file.
    fn live(&self) -> Vec<Arc<Notifier>> {
        self.notifiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// Every file's [`Peers`] in this process.
static PEERS: Mutex<Option<HashMap<FileKey, Weak<Peers>>>> = Mutex::new(None);

/// The registry key of the file at `path` (its identity, `identity` when known).
fn file_key(path: &std::path::Path, identity: Option<(u64, u64)>) -> FileKey {
    match identity {
        Some((dev, ino)) => FileKey::Identity(dev, ino),
        None => FileKey::Path(path.to_path_buf()),
    }
}

/// The mode (`exclusive_to_process` in effect or not) a handle of this process already has the
/// file at `path` open in, when it is not `exclusive`. One mode per file and process: a file
/// open shared cannot become exclusive (SQLite's connections share what the first one set up,
/// the `-shm` file and its locks, so the exclusive flag would be silently ignored; found by a
/// new user's trial), and a file open exclusively would make a shared open exclusive too.
pub(crate) fn open_mode_conflict(path: &std::path::Path, exclusive: bool) -> Option<bool> {
    let key = file_key(path, super::file_identity(path));
    let all = PEERS.lock().unwrap_or_else(|e| e.into_inner());
    let peers = all.as_ref()?.get(&key)?.upgrade()?;
    (peers.exclusive != exclusive).then_some(peers.exclusive)
}

/// The [`StoreError::InvalidArgument`] of an open of
/// `path` with the other mode than `open_as`, the one the file is open in here.
pub(crate) fn mode_conflict_error(path: &std::path::Path, open_as: bool) -> super::StoreError {
    super::StoreError::InvalidArgument(format!(
        "{} is already open in this process with exclusive_to_process = {open_as}; open every \
         database on a file the same way while any is open",
        path.display()
    ))
}

/// The peers of `file`, found or made; an error if they have the file open in the other mode
/// (an open of the other mode that raced past [`open_mode_conflict`]).
fn join_peers(file: &DbFile) -> Result<Arc<Peers>, super::StoreError> {
    let key = file_key(&file.path, file.identity);
    let exclusive = file.config.exclusive_in_effect();
    let mut all = PEERS.lock().unwrap_or_else(|e| e.into_inner());
    let all = all.get_or_insert_with(HashMap::new);
    all.retain(|_, peers| peers.strong_count() > 0);
    match all.get(&key).and_then(Weak::upgrade) {
        Some(peers) if peers.exclusive != exclusive => {
            Err(mode_conflict_error(&file.path, peers.exclusive))
        }
        Some(peers) => Ok(peers),
        None => {
            let peers = Arc::new(Peers {
                key: key.clone(),
                exclusive,
                notifiers: Mutex::new(Vec::new()),
                #[cfg(feature = "client")]
                sync: Mutex::new(None),
                #[cfg(feature = "client")]
                sync_released: Condvar::new(),
            });
            all.insert(key, Arc::downgrade(&peers));
            Ok(peers)
        }
    }
}

/// Why [`Notifier::hold_for_sync`] could not hold the file: another session holds it.
#[cfg(feature = "client")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncHeld {
    /// It is running.
    Running,
    /// It is stopping, and did not let go within the wait.
    Stopping,
}

#[cfg(feature = "client")]
impl Notifier {
    /// Holds the file for one sync session in this process, through any handle on it;
    /// `stopping` says whether that session is stopping. A session that holds it already and
    /// is running: [`SyncHeld::Running`]; one that is stopping is waited for, up to `wait`.
    pub(crate) fn hold_for_sync(
        &self,
        stopping: SyncStopping,
        wait: Duration,
    ) -> Result<SyncHold, SyncHeld> {
        let peers = &self.peers;
        let deadline = std::time::Instant::now() + wait;
        let mut held = peers.sync.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let other_stopping = match held.as_ref() {
                None => {
                    *held = Some(stopping);
                    return Ok(SyncHold(Arc::clone(peers)));
                }
                Some(other) => other(),
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !other_stopping {
                return Err(SyncHeld::Running);
            }
            if left.is_zero() {
                return Err(SyncHeld::Stopping);
            }
            held = peers
                .sync_released
                .wait_timeout(held, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

pub(crate) struct Notifier {
    file: DbFile,
    /// This file's notifiers in this process, this one included.
    peers: Arc<Peers>,
    watches: Mutex<BTreeMap<u64, Arc<Mutex<Watch>>>>,
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

/// What a new listener starts from, read after it is registered.
pub(crate) enum Initial {
    Object(Option<Object>),
    Results(Vec<PrimaryKey>),
}

impl Notifier {
    /// The notifier of a database on `file`, joined to the file's other notifiers in this
    /// process. Errors: `InvalidArgument` when they have the file open in the other
    /// `exclusive_to_process` mode.
    pub(crate) fn new(file: DbFile) -> Result<Arc<Notifier>, super::StoreError> {
        let peers = join_peers(&file)?;
        Ok(Arc::new_cyclic(|me| {
            peers.add(me.clone());
            Notifier {
                peers,
                file,
                watches: Mutex::new(BTreeMap::new()),
                pending: Mutex::new(Pending::default()),
                wake: Condvar::new(),
                next_id: AtomicU64::new(1),
                thread: Mutex::new(None),
            }
        }))
    }

    /// The database file, for opening further connections.
    pub(crate) fn file(&self) -> &DbFile {
        &self.file
    }

    /// Whether this notifier has a listener registered.
    fn own_watches(&self) -> bool {
        !self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Whether any listener is registered on this file in this process, through any handle:
    /// whether a commit has anyone to tell.
    pub(crate) fn has_watches(&self) -> bool {
        self.own_watches() || self.peers.live().iter().any(|n| n.own_watches())
    }

    /// Called after a commit through this handle: queue the touched objects for the notifier
    /// threads of every handle on the file that has listeners.
    pub(crate) fn committed(&self, touched: Touched) {
        let peers = self.peers.live();
        let mut watching = peers.iter().filter(|n| n.own_watches()).peekable();
        while let Some(notifier) = watching.next() {
            let mut pending = notifier.pending.lock().unwrap_or_else(|e| e.into_inner());
            match watching.peek() {
                Some(_) => merge(&mut pending.changes, touched.clone()),
                None => {
                    merge(&mut pending.changes, touched);
                    notifier.wake.notify_one();
                    return;
                }
            }
            notifier.wake.notify_one();
        }
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
            let conn = self.file.connect()?;
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

    /// Registers a listener, then reads where it starts from with `initial` (so every commit
    /// after that read reaches it). The notifier does not evaluate it before `initial` returns.
    fn register(
        self: &Arc<Self>,
        kind: Kind,
        key_paths: Vec<KeyPath>,
        initial: impl FnOnce() -> Result<Initial, StoreError>,
    ) -> Result<ListenerToken, StoreError> {
        self.ensure_thread()?;
        let watch = Arc::new(Mutex::new(Watch {
            kind,
            key_paths,
            pending: None,
            failing: false,
        }));
        let mut guard = watch.lock().unwrap_or_else(|e| e.into_inner());
        // Under the queue's lock, as the notifier thread takes changes: what is queued now is
        // set aside for the listeners registered before this one.
        let id = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if let Some(changes) = pending.changes.take() {
                pending.earlier.push((changes, id));
            }
            self.watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Arc::clone(&watch));
            id
        };
        let token = ListenerToken {
            notifier: Arc::downgrade(self),
            id,
        };
        match (initial()?, &mut guard.kind) {
            (Initial::Object(now), Kind::Object { last, .. }) => *last = now,
            (Initial::Results(now), Kind::Results { last, .. }) => *last = now,
            _ => unreachable!("the initial read matches the listener kind"),
        }
        Ok(token)
    }

    pub(crate) fn observe_object(
        self: &Arc<Self>,
        class: &str,
        key: &PrimaryKey,
        key_paths: Vec<KeyPath>,
        callback: Box<dyn Fn(ObjectChange) + Send>,
        initial: impl FnOnce() -> Result<Option<Object>, StoreError>,
    ) -> Result<ListenerToken, StoreError> {
        let kind = Kind::Object {
            class: class.to_owned(),
            key: to_key(key),
            last: None,
            callback,
        };
        self.register(kind, key_paths, || initial().map(Initial::Object))
    }

    pub(crate) fn observe_results(
        self: &Arc<Self>,
        class: &str,
        query: &str,
        args: &[Value],
        key_paths: Vec<KeyPath>,
        callback: Box<dyn Fn(&ResultsChange) + Send>,
        initial: impl FnOnce() -> Result<Vec<PrimaryKey>, StoreError>,
    ) -> Result<ListenerToken, StoreError> {
        let kind = Kind::Results {
            class: class.to_owned(),
            query: query.to_owned(),
            args: args.to_vec(),
            last: Vec::new(),
            callback,
        };
        self.register(kind, key_paths, || initial().map(Initial::Results))
    }
}

/// First delay before re-evaluating listeners whose evaluation failed; doubles up to the max.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// The notifier thread: wait, hand everything pending to every listener, evaluate those with
/// pending changes, call back; retry the ones that failed after a delay.
fn run(notifier: Weak<Notifier>, conn: Connection) {
    let mut retry: Option<Duration> = None;
    let schemas = layout::SchemaCache::default();
    loop {
        let watches = {
            let Some(n) = notifier.upgrade() else { return };
            let mut pending = n.pending.lock().unwrap_or_else(|e| e.into_inner());
            while pending.changes.is_none() && pending.earlier.is_empty() && !pending.shutdown {
                match retry {
                    None => pending = n.wake.wait(pending).unwrap_or_else(|e| e.into_inner()),
                    Some(delay) => {
                        let (p, timeout) = n
                            .wake
                            .wait_timeout(pending, delay)
                            .unwrap_or_else(|e| e.into_inner());
                        pending = p;
                        if timeout.timed_out() {
                            break;
                        }
                    }
                }
            }
            if pending.shutdown {
                return;
            }
            let changes = pending.changes.take();
            let earlier = std::mem::take(&mut pending.earlier);
            // Registered listeners, the new changes added to each one's own pending changes
            // while the queue is still locked, so a listener registered later never misses
            // changes committed after its first read (and, through `earlier`, is not handed
            // those committed before it).
            let watches: Vec<(u64, Arc<Mutex<Watch>>)> = n
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(id, w)| (*id, Arc::clone(w)))
                .collect();
            drop(pending);
            for (id, watch) in &watches {
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                for (touched, registered) in &earlier {
                    if id < registered {
                        merge(&mut w.pending, touched.clone());
                    }
                }
                if let Some(changes) = &changes {
                    merge(&mut w.pending, changes.clone());
                }
            }
            watches.into_iter().map(|(_, w)| w).collect::<Vec<_>>()
        };
        let ok = evaluate_all(&conn, &schemas, &watches);
        retry = if ok {
            None
        } else {
            Some(retry.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX)))
        };
    }
}

/// Evaluates every listener with pending changes in one read transaction. `false` if some
/// evaluation failed (its changes are kept for the retry).
fn evaluate_all(
    conn: &Connection,
    schemas: &layout::SchemaCache,
    watches: &[Arc<Mutex<Watch>>],
) -> bool {
    let snapshot = conn
        .prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .map_err(StoreError::from)
        .and_then(|_| schemas.get(conn));
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            for watch in watches {
                let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
                if w.pending.is_some() {
                    report_failure(&mut w, &e);
                }
            }
            return false;
        }
    };
    let mut ok = true;
    for watch in watches {
        let mut w = watch.lock().unwrap_or_else(|e| e.into_inner());
        let Some(changes) = w.pending.take() else {
            continue;
        };
        match evaluate(conn, &snapshot, &changes, &mut w) {
            Ok(()) => w.failing = false,
            Err(e) => {
                // Keep the changes: merge back under whatever is pending now.
                let mut kept = Some(changes);
                if let Some(newer) = w.pending.take() {
                    merge(&mut kept, newer);
                }
                w.pending = kept;
                report_failure(&mut w, &e);
                ok = false;
            }
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        // The snapshot could not be released: start from a clean connection state next time.
        let _ = conn.execute_batch("ROLLBACK");
        crate::warn_or_stderr!("the notifier could not end its read transaction: {e}");
    }
    ok
}

fn report_failure(watch: &mut Watch, e: &StoreError) {
    if !watch.failing {
        watch.failing = true;
        let what = match &watch.kind {
            Kind::Object { class, key, .. } => format!("object listener on {class} {key:?}"),
            Kind::Results { class, query, .. } => format!("results listener on {class} {query:?}"),
        };
        crate::warn_or_stderr!(
            "evaluating the {what} failed: {e}; its changes are kept and retried"
        );
    }
}

fn evaluate(
    conn: &Connection,
    snapshot: &layout::Snapshot,
    changes: &Touched,
    watch: &mut Watch,
) -> Result<(), StoreError> {
    let schemas = &*snapshot.schemas;
    let no_changes = Changes::new();
    let mut checker = Checker::new(conn, schemas, changes.as_ref().unwrap_or(&no_changes));
    let key_paths = &watch.key_paths;
    match &mut watch.kind {
        Kind::Object {
            class,
            key,
            last,
            callback,
        } => {
            if changes.is_some()
                && checker.touch(class, key).is_none()
                && !checker.links_can_reach_change(class)
            {
                return Ok(());
            }
            // What the app sees: links to objects that do not exist are hidden, so a link whose
            // target was erased or re-created reads as a change of that property.
            let now = deep::read_resolved(conn, schemas, class, key)?;
            let change = match (&*last, &now) {
                (Some(_), None) => Some(ObjectChange::Deleted),
                (Some(before), Some(after)) => {
                    let written: Vec<String> = after
                        .fields
                        .iter()
                        .filter(|(name, value)| before.fields.get(*name) != Some(value))
                        .map(|(name, _)| name.clone())
                        .collect();
                    let mut properties: std::collections::BTreeSet<String> = if key_paths.is_empty()
                    {
                        written.into_iter().collect()
                    } else {
                        deep::named_first(&written, key_paths).into_iter().collect()
                    };
                    if changes.is_some() {
                        properties.extend(if key_paths.is_empty() {
                            checker.properties_reaching_change(class, after)?
                        } else {
                            checker.properties_on_key_paths(class, after, key_paths)?
                        });
                    }
                    (!properties.is_empty()).then(|| ObjectChange::Modified {
                        properties: properties.into_iter().collect(),
                    })
                }
                _ => None,
            };
            *last = now;
            if let Some(change) = change {
                callback(change);
            }
        }
        Kind::Results {
            class,
            query,
            args,
            last,
            callback,
        } => {
            let compiled = query::compile_with(schemas, &snapshot.indexes, class, query, args)?;
            let now = read::run_query(conn, schemas, class, &compiled)?;
            // Which objects in both the old and the new results count as modified.
            let modified: HashSet<&PrimaryKey> = match changes {
                None => now.iter().collect(),
                Some(_) => {
                    let before: HashSet<&PrimaryKey> = last.iter().collect();
                    let mut modified = HashSet::new();
                    for k in now.iter().filter(|k| before.contains(k)) {
                        let key = to_key(k);
                        let hit = if key_paths.is_empty() {
                            checker.object_modified(class, &key)?
                        } else {
                            checker.object_modified_on_key_paths(class, &key, key_paths)?
                        };
                        if hit {
                            modified.insert(k);
                        }
                    }
                    modified
                }
            };
            let change = diff(last, &now, |k| modified.contains(k));
            *last = now;
            if !(change.deletions.is_empty()
                && change.insertions.is_empty()
                && change.modifications.is_empty())
            {
                callback(&change);
            }
        }
    }
    Ok(())
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
