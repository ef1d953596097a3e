//! Runs one [`Plan`] on turmoil: the real tandem-server and real `SyncSession`s over real
//! SQLite files, on simulated hosts, network and time; injects the plan's faults; heals
//! everything; waits for quiescence; checks the invariants.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, UNIX_EPOCH};

use tandem::client::{
    Event, SyncConfig, SyncError, SyncSession, SyncState, TokenProvider, TransactOutcome,
};
use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::protocol::ErrorCode;
use tandem::server::app::AppConfig;
use tandem::server::{Authenticator, ServerConfig, ServerFile, TokenSigner};
use tandem::state::{Element, Field, Key, Object, Val};
use tandem::store::{
    Config, Database, PathStep, StoreError, SubscriptionSetState, WriteTransaction,
};

use super::memory::HostTags;
use super::plan::{Fault, Op, Plan, SchemaAt, Step, TaskQuery};
use super::realm::Observer;

/// The server path of partition-based plans.
const PATH: &str = "/sim";
/// The server path of flexible sync plans (the server's flexible sync file).
const FLX_PATH: &str = "/flx";
const SECRET: &[u8] = b"simulation secret, 32 bytes long";
/// The server's port (also the realm-core-style observer's, `realm.rs`).
pub const PORT: u16 = 9443;
/// The simulated clock starts at 2026-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_767_225_600;
/// Simulated time allowed for convergence once every fault has healed: long enough for a
/// client to notice a silently dead connection (PONG missing for 120 s) and reconnect.
const HEAL_LIMIT: Duration = Duration::from_secs(400);
/// How often (simulated) quiescence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long (simulated) the client scripts may take once every fault has healed: a script
/// step waits at most 30 s (`WaitUpload`) or pauses under 5 s, and a transaction waits for its
/// verdict, which a healthy system gives within seconds. Past this, the seed fails instead of
/// running on (a mutation check found a run that never ended: a stuck download cursor kept
/// a transaction from ever being sent).
const WORKLOAD_LIMIT: Duration = Duration::from_secs(1_200);

/// What a passing run leaves: a digest of everything observable (two runs of one plan must
/// agree on it) and the trace.
pub struct Outcome {
    pub digest: u64,
    pub trace: Vec<String>,
    /// Simulated milliseconds the run took.
    pub simulated_ms: u64,
    /// The running server's heap bytes once everything is at rest, and their peak since it
    /// last started (`memory.rs`).
    pub server_heap: (i64, i64),
}

/// A failed run: why, and the trace up to it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub trace: Vec<String>,
}

/// The app's schema: v1, or v2 (a later app version that adds `Task.note` and the embedded
/// object `Task.meta` of class `Meta`).
fn schema(v2: bool) -> Schema {
    let mut task = vec![
        Property::new("_id", PropertyType::Int),
        Property::new("title", PropertyType::String),
        Property::new("count", PropertyType::Int),
        Property::new("tags", PropertyType::String).collection(CollectionKind::List),
        Property::new("labels", PropertyType::String).collection(CollectionKind::Set),
        Property::new("attrs", PropertyType::Int).collection(CollectionKind::Dictionary),
        Property::link("next", "Task").nullable(),
    ];
    let mut extra = Vec::new();
    if v2 {
        task.push(Property::new("note", PropertyType::String).nullable());
        task.push(Property::link("meta", "Meta"));
        extra.push(ClassSchema::embedded(
            "Meta",
            vec![
                Property::new("rating", PropertyType::Int),
                Property::new("memo", PropertyType::String).nullable(),
            ],
        ));
    }
    let mut classes = vec![
        ClassSchema::top_level("Task", "_id", task),
        ClassSchema::top_level(
            "Journal",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("lines", PropertyType::String).collection(CollectionKind::List),
                Property::new("total", PropertyType::Int),
            ],
        ),
        ClassSchema::top_level(
            "Entry",
            "_id",
            vec![
                Property::new("_id", PropertyType::String),
                Property::new("client", PropertyType::Int),
            ],
        ),
    ];
    classes.extend(extra);
    Schema::new(classes).expect("the simulation's schema is valid")
}

/// What the test knows about every write, shared by all clients and their listener threads.
#[derive(Default)]
struct Book {
    /// Every journal name a client wrote or was about to write (registered before its commit,
    /// so a listener can never see a name that is not here).
    attempted: BTreeSet<String>,
    /// The names written through `transact` (a rejection rolls them back).
    transacted: BTreeSet<String>,
    /// The server was restored from an older copy: client resets may since have replaced a
    /// list as a whole (realm-core's recovery rule), so journal lines may have been dropped.
    restored: bool,
}

/// The names in a Journal object's `lines`.
fn lines_of(journal: &Option<Object>) -> Vec<String> {
    match journal.as_ref().and_then(|o| o.fields.get("lines")) {
        Some(Field::List(items)) => items
            .iter()
            .map(|e| match e {
                Element::Value(Val::String(s)) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One client: its script's progress and what it observed. Lives outside the simulated host,
/// so it survives the host's crashes (as the test's knowledge, not the client's).
struct Client {
    index: usize,
    path: PathBuf,
    skew_ms: i64,
    token_secs: u64,
    schema_at: SchemaAt,
    /// Whether the client is a flexible sync client of `/flx` (else partition-based, `/sim`).
    flexible: bool,
    /// The server path it syncs (`/sim`, `/flx`, or `/"sim"` beside a realm-core-style
    /// observer).
    server_path: &'static str,
    /// Flexible sync: the `Task` query of the newest subscription set committed in the file
    /// (its first set subscribes to the plan's query); the server must end up sending exactly
    /// the tasks it matches.
    query: RefCell<TaskQuery>,
    /// Whether the running (or last) host opened the file with schema v2.
    v2: Cell<bool>,
    /// How many times the host has started.
    starts: Cell<u32>,
    steps: Vec<Step>,
    /// The next step to run (after a crash the host resumes here).
    next: Cell<usize>,
    /// Journal names of the committed writes and their journal additions.
    committed: RefCell<Vec<(String, i64)>>,
    /// `transact` writes with no verdict (timeout, crash) and their journal additions: each may
    /// end present or absent, but all or nothing.
    in_doubt: RefCell<BTreeMap<String, i64>>,
    /// `transact` writes the server rejected: they must be gone everywhere.
    rejected: RefCell<BTreeSet<String>>,
    /// Shared knowledge of every write.
    book: Arc<Mutex<Book>>,
    /// The session's last state, and whether a `will_retry` error has not yet been followed
    /// by a reconnect (`SyncState::Connected`).
    session_state: Arc<Mutex<(SyncState, bool)>>,
    /// The open database while the host runs.
    db: RefCell<Weak<Database>>,
    /// Rule breaks seen on other threads (listeners, events).
    broken: Arc<Mutex<Vec<String>>>,
    /// What the running host's Journal listener last read, if it has been called (a new slot
    /// per start of the host: a listener of a crashed run may still be finishing a call).
    journal_view: RefCell<Arc<Mutex<Option<Option<Object>>>>>,
    /// The run's trace (shared with the main loop).
    trace: Rc<RefCell<Vec<String>>>,
    /// Every client's error events in the order they were delivered (on notifier threads, so
    /// not part of the deterministic trace; printed with a failure).
    events: Arc<Mutex<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type HostResult = Result<(), Box<dyn std::error::Error>>;

async fn run_client(client: Rc<Client>) -> HostResult {
    client.starts.set(client.starts.get() + 1);
    let upgrade = match client.schema_at {
        SchemaAt::Start => true,
        SchemaAt::Reopen => client.starts.get() > 1,
        SchemaAt::Never => false,
    };
    client.v2.set(client.v2.get() || upgrade);
    let db = Arc::new(Database::open(
        &client.path,
        &schema(client.v2.get()),
        Config::default(),
    )?);
    *client.db.borrow_mut() = Arc::downgrade(&db);
    let path = client.server_path;
    if client.flexible && db.subscriptions()?.version == 0 {
        // A new file (or one whose first open crashed before this): its first set.
        let query = client.query.borrow().clone();
        subscribe(&db, &query)?;
        client.log(format!(
            "c{} subscribed to Task {}",
            client.index,
            query.rql()
        ));
    }
    let provider = Tokens(client.token_secs, path);
    let token = provider.fetch_token()?;
    let session = SyncSession::start(
        Arc::clone(&db),
        SyncConfig {
            url: format!("ws://server:{PORT}/"),
            path: path.into(),
            token,
            allow_insecure: true,
            token_provider: Some(Arc::new(provider)),
            flexible: client.flexible,
            ..SyncConfig::default()
        },
    )?;
    let (broken, state, events) = (
        Arc::clone(&client.broken),
        Arc::clone(&client.session_state),
        Arc::clone(&client.events),
    );
    *lock(&state) = (SyncState::Disconnected, false);
    let name = client.index;
    // The listeners' notes are the test's: charged to no host (`tandem::sim::untagged`).
    let _events = session.on_event(move |event| {
        tandem::sim::untagged(|| match event {
            Event::Error(info) => {
                lock(&events).push(format!(
                    "c{name}: error {} (will_retry {}): {}",
                    info.code, info.will_retry, info.message
                ));
                if info.message.is_empty() {
                    lock(&broken).push(format!(
                        "c{name}: an error event without a message: {info:?}"
                    ));
                }
                if info.code != 0 && ErrorCode::from_code(info.code).is_none() {
                    lock(&broken).push(format!(
                        "c{name}: an error event with an unknown code: {info:?}"
                    ));
                }
                if info.will_retry {
                    // A compensating write (231) is a warning on a session that goes on connected
                    // (Realm's `"action":"Warning"`); any other error that will be retried ends the
                    // connection, and a reconnect must follow.
                    if info.code != ErrorCode::CompensatingWrite as u64 {
                        lock(&state).1 = true;
                    }
                } else {
                    lock(&broken).push(format!(
                        "c{name}: the session stopped on error {}: {}",
                        info.code, info.message
                    ));
                }
            }
            Event::State(s) => {
                let mut state = lock(&state);
                if *s == SyncState::Connected {
                    state.1 = false;
                }
                state.0 = s.clone();
            }
            Event::Progress(_) => {}
        })
    });
    let view = tandem::sim::untagged(|| Arc::new(Mutex::new(None)));
    *client.journal_view.borrow_mut() = Arc::clone(&view);
    let weak = Arc::downgrade(&db);
    let broken = Arc::clone(&client.broken);
    let book = Arc::clone(&client.book);
    let _journal = db.observe_query("Journal", "TRUEPREDICATE", &[], move |_| {
        tandem::sim::untagged(|| {
            let Some(db) = weak.upgrade() else { return };
            match db
                .read()
                .and_then(|r| r.object("Journal", &PrimaryKey::Int(0)))
            {
                Ok(object) => {
                    let lines = lines_of(&object);
                    let book = lock(&book);
                    // Never told of a write that did not happen.
                    for line in &lines {
                        if !book.attempted.contains(line) {
                            lock(&broken).push(format!(
                                "c{name}: the listener was shown journal line {line}, which no \
                             client wrote"
                            ));
                        }
                    }
                    let mut view = lock(&view);
                    // Lines are only ever inserted: one may disappear only by a rejected (or
                    // in-doubt) transaction's rollback, or by a reset after a restore.
                    if let Some(previous) = view.as_ref() {
                        if !book.restored {
                            for line in lines_of(previous) {
                                if !lines.contains(&line) && !book.transacted.contains(&line) {
                                    lock(&broken).push(format!(
                                        "c{name}: journal line {line} disappeared from the \
                                     listener's view"
                                    ));
                                }
                            }
                        }
                    }
                    *view = Some(object);
                }
                Err(e) => lock(&broken).push(format!("c{name}: the listener cannot read: {e}")),
            }
        })
    })?;
    // The view as of registration (nothing commits in between: this host's code does not
    // yield here); every later change must reach the listener.
    let registered = db
        .read()
        .and_then(|r| r.object("Journal", &PrimaryKey::Int(0)))?;
    tandem::sim::untagged(|| {
        lock(&client.journal_view.borrow()).get_or_insert(registered.clone());
    });
    tandem::sim::with_clock_skew(client.skew_ms, async {
        if client.flexible && client.next.get() == 0 {
            // As Realm's documentation has apps do: the first subscriptions' objects are
            // there before the app writes (a write made before then to an object the server
            // already holds meets that object's whole copy: docs/flexible-sync.md, "Not
            // done").
            session
                .wait_for_subscriptions(None, None)
                .await
                .map_err(|e| format!("c{}: the first subscriptions: {e}", client.index))?;
            client.log(format!("c{} has its first subscriptions", client.index));
        }
        while let Some(step) = client.steps.get(client.next.get()) {
            let name = format!("c{}s{}", client.index, client.next.get());
            // A step is not run twice: after a crash the host goes on with the next one (a
            // transaction interrupted while waiting for its verdict stays in doubt).
            client.next.set(client.next.get() + 1);
            match step {
                Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                Step::Subscribe { query, wait } => {
                    if !client.flexible {
                        return Err(format!("c{}: a subscription step in a partition-based plan", client.index));
                    }
                    let set = subscribe(&db, query)
                        .map_err(|e| format!("c{}: subscribe: {e}", client.index))?;
                    tandem::sim::untagged(|| *client.query.borrow_mut() = query.clone());
                    client.log(format!(
                        "c{} subscribed to Task {} (set {})",
                        client.index,
                        query.rql(),
                        set
                    ));
                    if *wait {
                        match session
                            .wait_for_subscriptions(Some(set), Some(Duration::from_secs(30)))
                            .await
                        {
                            Ok(s) => client.log(format!(
                                "c{} set {set}: {:?}",
                                client.index, s.state
                            )),
                            Err(SyncError::Timeout { .. }) => {}
                            Err(e) => {
                                return Err(format!(
                                    "c{}: wait_for_subscriptions({set}): {e}",
                                    client.index
                                ))
                            }
                        }
                    }
                }
                Step::WaitUpload => {
                    match session.wait_for_upload(Some(Duration::from_secs(30))).await {
                        Ok(()) => {
                            let pending = db.pending_uploads(1 << 20).map_err(|e| e.to_string())?;
                            if !pending.is_empty() {
                                return Err(format!(
                                    "c{}: wait_for_upload returned with {} changesets unacknowledged",
                                    client.index,
                                    pending.len()
                                ));
                            }
                        }
                        Err(SyncError::Timeout { .. }) => {}
                        Err(e) => return Err(format!("c{}: wait_for_upload: {e}", client.index)),
                    }
                }
                Step::Write {
                    ops,
                    journal_at,
                    journal_add,
                } => {
                    tandem::sim::untagged(|| lock(&client.book).attempted.insert(name.clone()));
                    let ops = &client.writable(&db, ops)?;
                    let prepared = prepare(&db, ops)?;
                    let mut tx = db
                        .begin_write()
                        .map_err(|e| format!("c{}: write {name}: {e}", client.index))?;
                    apply(
                        &mut tx,
                        ops,
                        prepared,
                        client.v2.get(),
                        &name,
                        *journal_at,
                        *journal_add,
                    )
                    .and_then(|()| tx.commit())
                    .map_err(|e| format!("c{}: write {name} failed: {e}", client.index))?;
                    client.log(format!("c{} committed {name}", client.index));
                    client.note_committed(&name, *journal_add);
                }
                Step::Transact {
                    ops,
                    journal_at,
                    journal_add,
                    wait_s,
                } => {
                    tandem::sim::untagged(|| {
                        let mut book = lock(&client.book);
                        book.attempted.insert(name.clone());
                        book.transacted.insert(name.clone());
                        // In doubt until the verdict (a crash while waiting leaves it so).
                        client
                            .in_doubt
                            .borrow_mut()
                            .insert(name.clone(), *journal_add);
                    });
                    let prepared = prepare(&db, ops)?;
                    let (ops, v2, n) = (ops.clone(), client.v2.get(), name.clone());
                    let (at, add) = (*journal_at, *journal_add);
                    let verdict = session
                        .transact(
                            move |tx| apply(tx, &ops, prepared, v2, &n, at, add),
                            wait_s.map(Duration::from_secs),
                        )
                        .await;
                    match verdict {
                        Ok(TransactOutcome::Accepted { server_version }) => {
                            client.in_doubt.borrow_mut().remove(&name);
                            client.log(format!(
                                "c{} transacted {name}: accepted as server version {server_version}",
                                client.index
                            ));
                            client.note_committed(&name, *journal_add);
                        }
                        Ok(TransactOutcome::Rejected { reason }) => {
                            client.in_doubt.borrow_mut().remove(&name);
                            client.log(format!(
                                "c{} transacted {name}: rejected ({reason})",
                                client.index
                            ));
                            let here = read_object(&db, "Entry", &PrimaryKey::String(name.clone()))?;
                            if here.is_some() {
                                return Err(format!(
                                    "c{}: transaction {name} was rejected but is still here",
                                    client.index
                                ));
                            }
                            tandem::sim::untagged(|| client.rejected.borrow_mut().insert(name.clone()));
                        }
                        Ok(TransactOutcome::InDoubt { reason }) => {
                            // Stays in doubt: rolled back here, possibly integrated before
                            // the server lost it.
                            client.log(format!(
                                "c{} transacted {name}: in doubt ({reason})",
                                client.index
                            ));
                            let here = read_object(&db, "Entry", &PrimaryKey::String(name.clone()))?;
                            if here.is_some() {
                                return Err(format!(
                                    "c{}: transaction {name} is in doubt but was not rolled back",
                                    client.index
                                ));
                            }
                        }
                        Err(e) => client.log(format!(
                            "c{} transacted {name}: no verdict ({e}), in doubt",
                            client.index
                        )),
                    }
                }
            }
        }
        Ok::<(), String>(())
    })
    .await?;
    std::future::pending::<()>().await;
    drop(session);
    Ok(())
}

impl Client {
    /// The ops of a write this client makes: all of them, or for a flexible sync client the
    /// ops on tasks its active subscription set (the newest complete one: what the file
    /// holds) matches, links to such tasks included.
    fn writable(&self, db: &Database, ops: &[Op]) -> Result<Vec<Op>, String> {
        let query = match self.flexible {
            false => TaskQuery::All,
            true => {
                let active = db.active_subscriptions().map_err(|e| e.to_string())?;
                match active.find("task") {
                    Some(sub) => TaskQuery::from_rql(&sub.query)
                        .ok_or_else(|| format!("an unexpected Task query {:?}", sub.query))?,
                    None => TaskQuery::IdBelow(i64::MIN),
                }
            }
        };
        Ok(ops
            .iter()
            .filter(|op| {
                !self.flexible
                    || (query.matches_id(op.id())
                        && match op {
                            Op::Link { to: Some(to), .. } => query.matches_id(*to),
                            _ => true,
                        })
            })
            .cloned()
            .collect())
    }

    /// Records a committed write (its journal name and addition) for the final checks.
    fn note_committed(&self, name: &str, journal_add: i64) {
        tandem::sim::untagged(|| {
            self.committed
                .borrow_mut()
                .push((name.to_owned(), journal_add))
        });
    }

    /// Adds a line to the trace, stamped with the simulated time.
    fn log(&self, line: String) {
        let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        // Made inside the client's host, kept by the test: charged to no host.
        tandem::sim::untagged(|| self.trace.borrow_mut().push(format!("{at} ms: {line}")));
    }
}

/// Signs tokens that live `.0` seconds from the simulated now (the session asks for a new one
/// before expiry and when the server says it has expired).
struct Tokens(u64, &'static str);

impl TokenProvider for Tokens {
    fn fetch_token(&self) -> Result<String, String> {
        let now = turmoil::since_epoch()
            .ok_or("tokens are signed inside the simulation")?
            .as_secs();
        TokenSigner::hs256(SECRET)
            .sign("sim", now + self.0, &[self.1])
            .map_err(|e| format!("{e:?}"))
    }
}

/// The server path a plan's clients sync: the flexible sync file, or the partition-based one
/// (the partition `"sim"` beside a realm-core-style observer, which binds it by that value).
fn server_path(plan: &Plan) -> &'static str {
    match (plan.flexible, plan.realm) {
        (true, _) => FLX_PATH,
        (false, true) => super::realm::PATH,
        (false, false) => PATH,
    }
}

/// Replaces the subscriptions of `db` with all of `Journal` and `Entry` and `query` of `Task`;
/// returns the new set's version.
fn subscribe(db: &Database, query: &TaskQuery) -> Result<u64, StoreError> {
    let rql = query.rql();
    db.update_subscriptions(|m| {
        m.clear();
        m.add(Some("journal"), "Journal", "TRUEPREDICATE", &[])?;
        m.add(Some("entry"), "Entry", "TRUEPREDICATE", &[])?;
        m.add(Some("task"), "Task", &rql, &[])?;
        Ok(())
    })
    .map(|set| set.version)
}

/// The objects `client` must hold given the server's: all of them for a partition-based
/// client; for a flexible sync one, every `Journal` and `Entry` and the tasks its query
/// matches (the simulation's own evaluation, [`TaskQuery::matches_id`]: the oracle).
fn expected_objects(client: &Client, server: &Objects) -> Objects {
    let mut objects = server.clone();
    if client.flexible {
        let query = client.query.borrow();
        if let Some(tasks) = objects.get_mut("Task") {
            tasks.retain(|key, _| matches!(key, Key::Int(id) if query.matches_id(*id)));
        }
    }
    objects
}

/// A replica's top-level objects by class and key.
type Objects = BTreeMap<String, BTreeMap<Key, Object>>;

/// The object `class[id]` as this replica has it now.
fn read_object(db: &Database, class: &str, id: &PrimaryKey) -> Result<Option<Object>, String> {
    db.read()
        .and_then(|r| r.object(class, id))
        .map_err(|e| e.to_string())
}

/// The length of list `prop` of `object` (0 for no object).
fn list_len(object: &Option<Object>, prop: &str) -> u32 {
    match object.as_ref().and_then(|o| o.fields.get(prop)) {
        Some(Field::List(items)) => items.len() as u32,
        _ => 0,
    }
}

/// What a write step reads before its transaction: whether each task it touches exists, its
/// tag count, and the Journal's line count. Nothing else writes between this read and the
/// transaction (the sync task runs on this same simulated thread and the write does not
/// yield; `transact` runs its closure inline in a simulation).
struct Prepared {
    present: BTreeMap<i64, bool>,
    lens: BTreeMap<i64, u32>,
    journal_len: u32,
}

fn prepare(db: &Database, ops: &[Op]) -> Result<Prepared, String> {
    let mut present = BTreeMap::new();
    let mut lens = BTreeMap::new();
    for op in ops {
        let targets = match op {
            Op::Link { id, to: Some(to) } => vec![*id, *to],
            _ => vec![op.id()],
        };
        for id in targets {
            if let std::collections::btree_map::Entry::Vacant(v) = present.entry(id) {
                // One read gives both whether the task exists and its tag count.
                let task = read_object(db, "Task", &PrimaryKey::Int(id))?;
                v.insert(task.is_some());
                lens.insert(id, list_len(&task, "tags"));
            }
        }
    }
    let journal_len = list_len(&read_object(db, "Journal", &PrimaryKey::Int(0))?, "lines");
    Ok(Prepared {
        present,
        lens,
        journal_len,
    })
}

/// One write: the ops (those that need schema v2 skipped when `v2` is false), then the journal
/// entry: an `Entry` named `name`, `name` inserted into `Journal[0].lines` at `journal_at %
/// (len + 1)`, `journal_add` added to `Journal[0].total`.
fn apply(
    tx: &mut WriteTransaction<'_>,
    ops: &[Op],
    prepared: Prepared,
    v2: bool,
    name: &str,
    journal_at: u32,
    journal_add: i64,
) -> Result<(), StoreError> {
    let Prepared {
        mut present,
        mut lens,
        journal_len,
    } = prepared;
    // Makes sure task `id` exists in the transaction.
    fn ensure(
        tx: &mut WriteTransaction<'_>,
        present: &mut BTreeMap<i64, bool>,
        lens: &mut BTreeMap<i64, u32>,
        id: i64,
    ) -> Result<(), StoreError> {
        if !present[&id] {
            tx.upsert("Task", PrimaryKey::Int(id), &[])?;
            present.insert(id, true);
            lens.insert(id, 0);
        }
        Ok(())
    }
    for op in ops {
        if op.needs_v2() && !v2 {
            continue;
        }
        let key = PrimaryKey::Int(op.id());
        match op {
            Op::SetTitle { id, title } => {
                // An upsert (CreateObject, then the field) even when the task exists here.
                tx.upsert("Task", key, &[("title", Value::String(title.clone()))])?;
                present.insert(*id, true);
                lens.entry(*id).or_insert(0);
            }
            Op::Add { id, amount } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.add("Task", &key, "count", *amount)?;
            }
            Op::SetCount { id, value } => {
                tx.upsert("Task", key, &[("count", Value::Int(*value))])?;
                present.insert(*id, true);
                lens.entry(*id).or_insert(0);
            }
            Op::Erase { id } => {
                if present[id] {
                    tx.erase("Task", &key)?;
                    present.insert(*id, false);
                    lens.insert(*id, 0);
                }
            }
            Op::TagInsert { id, at, tag } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                let len = lens[id];
                tx.list_insert(
                    "Task",
                    &key,
                    "tags",
                    at % (len + 1),
                    Value::String(tag.clone()),
                )?;
                lens.insert(*id, len + 1);
            }
            Op::TagErase { id, at } => {
                let len = lens[id];
                if present[id] && len > 0 {
                    tx.list_erase("Task", &key, "tags", at % len)?;
                    lens.insert(*id, len - 1);
                }
            }
            Op::LabelInsert { id, label } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.set_insert("Task", &key, "labels", Value::String(label.clone()))?;
            }
            Op::LabelErase { id, label } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.set_erase("Task", &key, "labels", Value::String(label.clone()))?;
            }
            Op::AttrSet { id, key: k, value } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.dict_set("Task", &key, "attrs", k, Value::Int(*value))?;
            }
            Op::AttrErase { id, key: k } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.dict_erase("Task", &key, "attrs", k)?;
            }
            Op::Link { id, to } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                let value = match to {
                    Some(to) => {
                        ensure(tx, &mut present, &mut lens, *to)?;
                        Value::Link(tandem::model::Link {
                            class: "Task".into(),
                            key: PrimaryKey::Int(*to),
                        })
                    }
                    None => Value::Null,
                };
                tx.set("Task", &key, "next", value)?;
            }
            Op::SetNote { id, note } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.set("Task", &key, "note", Value::String(note.clone()))?;
            }
            Op::SetRating { id, rating } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.create_embedded("Task", &key, "meta")?;
                tx.set_at(
                    "Task",
                    &key,
                    "meta",
                    &[PathStep::Name("rating".into())],
                    Value::Int(*rating),
                )?;
            }
            Op::ClearMeta { id } => {
                ensure(tx, &mut present, &mut lens, *id)?;
                tx.set("Task", &key, "meta", Value::Null)?;
            }
        }
    }
    let journal = PrimaryKey::Int(0);
    tx.upsert("Journal", journal.clone(), &[])?;
    tx.list_insert(
        "Journal",
        &journal,
        "lines",
        journal_at % (journal_len + 1),
        Value::String(name.into()),
    )?;
    tx.add("Journal", &journal, "total", journal_add)?;
    tx.create(
        "Entry",
        PrimaryKey::String(name.into()),
        &[("client", Value::Int(0))],
    )?;
    Ok(())
}

/// The server's gauges, published by its host every 100 simulated milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gauges {
    /// WebSocket connections being served.
    connections: usize,
    /// Connections that have not yet bound an authenticated session.
    unauthenticated: i64,
    /// Sessions bound.
    sessions: i64,
    /// Server files open.
    files: i64,
}

/// Most heap bytes the server may keep once the run is at rest (every fault healed, every
/// replica equal, one connection and session per client): 117 to 174 KiB over seeds 0..200
/// (`SIM_MEMORY=1`, stop 42), so what a run leaks past about 80 KiB (buffers of closed
/// connections, messages or changesets kept after use) fails the seed.
const SERVER_HEAP_AT_REST: i64 = 256 << 10;
/// What the server may keep at rest for a realm-core-style observer on top of that: its
/// connection, session and client file, and beside flexible sync clients the copies of its
/// whole view, which a client that never uploads keeps on the server (docs/flexible-sync.md,
/// "Copies kept per client file"). Flexible seeds 0..200 kept 176 to 250 KiB with the
/// observer against 122 to 177 KiB without (`SIM_MEMORY=1`, stop 45); seed 863 kept 262 KiB.
const OBSERVER_SERVER_HEAP: i64 = 128 << 10;
/// Most heap bytes the server may hold at any time of a run since it last started: 119 KiB
/// to 1.1 MiB over seeds 0..200 (integrations, downloads and STATE snapshots being built).
const SERVER_HEAP_PEAK: i64 = 8 << 20;
/// Most heap bytes a client's process (its session and database handle, and the test's own
/// notes it makes there) may keep at rest: 159 to 180 KiB in seeds 0..200 (`SIM_MEMORY=1`,
/// stop 42). Once the simulation is gone its processes must leave nothing (`CLIENT_HEAP_LEAK`):
/// the test's notes made inside the client's host are charged to no host.
const CLIENT_HEAP_AT_REST: i64 = 512 << 10;
/// Most heap bytes a client's process may hold at any time since it last started: 166 to
/// 555 KiB in seeds 0..200.
const CLIENT_HEAP_PEAK: i64 = 8 << 20;
/// Most heap bytes the server's processes may leave allocated once the simulation is gone:
/// none (0 in every seed of 0..200 at stop 42; a forgotten copy of each UPLOAD's entries
/// left 6.8 to 11.6 KiB in each of the first six seeds).
const SERVER_HEAP_LEAK: i64 = 0;
/// What all of a client's processes may leave allocated once the simulation is gone: nothing
/// (stop 45; `SIM_LEAKS=1` prints where what is left was allocated).
const CLIENT_HEAP_LEAK: i64 = 0;

/// The server's idle timeout in the simulation: a connection whose client vanished (crashed
/// without a close) is ended after this long.
const SERVER_IDLE: Duration = Duration::from_secs(180);

/// The running server, for the main loop to read its state (empty while it is down).
type ServerSlot = Rc<RefCell<std::rc::Weak<tandem::server::RunningServer>>>;

async fn run_server(
    dir: PathBuf,
    gauges: Rc<Cell<Gauges>>,
    slot: ServerSlot,
    realm: bool,
) -> HostResult {
    let mut config = ServerConfig {
        allow_plain_ws: true,
        idle_timeout: SERVER_IDLE,
        // Beside a realm-core-style observer: the App Services API and Realm's sync route
        // (anonymous login, every partition open to every user).
        app: realm.then(|| {
            AppConfig::new(
                super::realm::APP,
                TokenSigner::hs256(b"simulation app secret, 32 bytes"),
            )
        }),
        ..ServerConfig::new(
            std::net::SocketAddr::from(([0, 0, 0, 0], PORT)),
            dir,
            Authenticator::hs256(SECRET),
        )
    };
    // The data directory is a 32 MiB tmpfs: a 1 MiB reserve.
    config.storage.disk_reserve = 1 << 20;
    let server = Rc::new(
        tandem::server::start(config)
            .await
            .map_err(|e| format!("the server did not start: {e:?}"))?,
    );
    *slot.borrow_mut() = Rc::downgrade(&server);
    loop {
        let m = server.metrics();
        gauges.set(Gauges {
            connections: server.connections(),
            unauthenticated: m.connections_unauthenticated.get(),
            sessions: m.sessions_open.get(),
            files: m.server_files_open.get(),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tmpfs mounted on a directory for the life of the value (unmounted lazily on drop): the
/// server's data directory, so that a full disk is a real one (`ENOSPC`, `SQLITE_FULL`).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "32m") on `dir`. If that is not permitted the run fails,
    /// unless `TANDEM_SKIP_TMPFS=1`, which runs without one and skips the full-disk faults.
    fn mount(dir: &Path, size: &str) -> Result<Option<Tmpfs>, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Ok(Some(Tmpfs(dir.to_path_buf()))),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if std::env::var("TANDEM_SKIP_TMPFS").as_deref() == Ok("1") {
            return Ok(None);
        }
        Err(format!(
            "cannot mount a tmpfs on {} ({why}): the full-disk faults need `mount -t tmpfs` \
             (root); TANDEM_SKIP_TMPFS=1 runs without them",
            dir.display()
        ))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The file that fills the server's tmpfs while its disk is full.
const BALLAST: &str = "ballast";

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    for chunk in [256 << 10, 4 << 10, 512, 1] {
        let zeros = vec![0u8; chunk];
        while f.write_all(&zeros).and_then(|()| f.flush()).is_ok() {}
    }
}

/// Copies the files of `from` (recursively) into `to`, leaving out the ballast and SQLite's
/// shared-memory index (`-shm`, rebuilt from the WAL on open).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text == BALLAST || text.ends_with("-shm") {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// Removes everything in `dir` but the ballast.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == BALLAST {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Something the main loop undoes later.
enum Heal {
    /// The ballast is deleted: the server's disk has room again.
    FreeDisk,
    Repair(usize),
    Release(usize),
    StartServer,
    StartClient(usize),
}

fn client_host(c: usize) -> String {
    format!("c{c}")
}

/// Runs `plan` in a fresh directory under `root`.
pub fn run(plan: &Plan, root: &Path) -> Result<Outcome, Failure> {
    let dir = root.join(format!("seed-{}", plan.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the simulation's directory");
    let trace = Rc::new(RefCell::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    // The WebSocket handshake's key comes from `rand`'s thread-local generator, made the first
    // time a thread asks and kept as long as the thread lives: made here, outside every host,
    // it is charged to none (a host that made it would seem to leak it, `CLIENT_HEAP_LEAK`).
    let _ = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let result = Tmpfs::mount(&dir.join("server"), "32m")
        .and_then(|tmpfs| run_in(plan, &dir, tmpfs.is_some(), &trace, &events));
    let mut trace = trace.take();
    if result.is_err() {
        trace.push("-- the sessions' error events, in delivery order:".into());
        trace.extend(lock(&events).drain(..));
    }
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((digest, simulated_ms, server_heap)) => Ok(Outcome {
            digest,
            trace,
            simulated_ms,
            server_heap,
        }),
        Err(message) => Err(Failure { message, trace }),
    }
}

/// The faults' state while a run goes on.
struct Faults {
    server_down: bool,
    down: Vec<bool>,
    disk_full: bool,
    /// The server's data directory (a tmpfs, if `tmpfs`).
    server_dir: PathBuf,
    tmpfs: bool,
    /// Where `Fault::Backup` copies the server's data directory.
    backup_dir: PathBuf,
    backed_up: bool,
}

fn run_in(
    plan: &Plan,
    dir: &Path,
    tmpfs: bool,
    trace: &Rc<RefCell<Vec<String>>>,
    events: &Arc<Mutex<Vec<String>>>,
) -> Result<(u64, u64, (i64, i64)), String> {
    tandem::sim::seed_random(plan.seed);
    let path = server_path(plan);
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(Duration::from_secs(3_600))
        .tick_duration(Duration::from_millis(10))
        .min_message_latency(Duration::from_millis(plan.latency_ms.0))
        .max_message_latency(Duration::from_millis(plan.latency_ms.1))
        .build();
    let log = |line: String| trace.borrow_mut().push(line);

    let server_dir = dir.join("server");
    let gauges = Rc::new(Cell::new(Gauges::default()));
    let slot: ServerSlot = Rc::new(RefCell::new(std::rc::Weak::new()));
    // The server's heap tags (a new one at every start).
    let server_tags = HostTags::default();
    {
        let (server_dir, gauges, slot) = (server_dir.clone(), Rc::clone(&gauges), Rc::clone(&slot));
        let tags = server_tags.clone();
        let realm = plan.realm;
        sim.host("server", move || {
            tandem::sim::with_host_tag(
                tags.start(),
                run_server(
                    server_dir.clone(),
                    Rc::clone(&gauges),
                    Rc::clone(&slot),
                    realm,
                ),
            )
        });
    }
    let book = Arc::new(Mutex::new(Book::default()));
    let clients: Vec<Rc<Client>> = plan
        .clients
        .iter()
        .enumerate()
        .map(|(index, p)| {
            Rc::new(Client {
                index,
                path: dir.join(format!("c{index}.sqlite")),
                skew_ms: p.skew_ms,
                token_secs: p.token_secs,
                schema_at: p.schema,
                flexible: plan.flexible,
                server_path: path,
                query: RefCell::new(p.query.clone()),
                v2: Cell::new(false),
                starts: Cell::new(0),
                steps: p.steps.clone(),
                next: Cell::new(0),
                committed: RefCell::new(Vec::new()),
                in_doubt: RefCell::new(BTreeMap::new()),
                rejected: RefCell::new(BTreeSet::new()),
                book: Arc::clone(&book),
                session_state: Arc::new(Mutex::new((SyncState::Disconnected, false))),
                db: RefCell::new(Weak::new()),
                broken: Arc::new(Mutex::new(Vec::new())),
                journal_view: RefCell::new(Arc::new(Mutex::new(None))),
                trace: Rc::clone(trace),
                events: Arc::clone(events),
            })
        })
        .collect();
    // Each client's heap tags (a new one at every start of its process).
    let client_tags: Vec<HostTags> = clients.iter().map(|_| HostTags::default()).collect();
    for client in &clients {
        let c = Rc::clone(client);
        let tags = client_tags[client.index].clone();
        sim.host(client_host(client.index), move || {
            tandem::sim::with_host_tag(tags.start(), run_client(Rc::clone(&c)))
        });
    }

    // A realm-core-style partition session beside the clients (`realm.rs`), and every heap tag
    // of its host.
    let observer: Option<Rc<Observer>> = plan
        .realm
        .then(|| Rc::new(Observer::new(Rc::clone(trace), plan.flexible)));
    let observer_tags = HostTags::default();
    if let Some(o) = &observer {
        let (o, tags) = (Rc::clone(o), observer_tags.clone());
        sim.host("realm", move || {
            tandem::sim::with_host_tag(tags.start(), super::realm::run(Rc::clone(&o)))
        });
    }
    let check_observer = || -> Result<(), String> {
        match observer
            .as_ref()
            .and_then(|o| o.broken.borrow().first().cloned())
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    };
    let describe_observer = || {
        observer
            .as_ref()
            .map(|o| format!("\n{}", o.describe()))
            .unwrap_or_default()
    };

    let now_ms = |sim: &turmoil::Sim| sim.elapsed().as_millis() as u64;
    let mut pending = plan.faults.iter().peekable();
    let mut heals: Vec<(u64, Heal)> = Vec::new();
    let mut f = Faults {
        server_down: false,
        down: vec![false; clients.len()],
        disk_full: false,
        server_dir: server_dir.clone(),
        tmpfs,
        backup_dir: dir.join("backup"),
        backed_up: false,
    };
    let step = |sim: &mut turmoil::Sim| -> Result<(), String> {
        sim.step()
            .map(|_| ())
            .map_err(|e| format!("the simulation failed: {e}"))
    };

    // The workload, with faults starting on time and healing on time.
    let mut all_healed_at: Option<u64> = None;
    loop {
        let now = now_ms(&sim);
        while let Some((at, fault)) = pending.peek() {
            if *at > now {
                break;
            }
            pending.next();
            log(format!("{now} ms: {fault:?}"));
            start_fault(&mut sim, fault, now, &mut f, &mut heals, &book, &log)?;
        }
        heal_due(&mut sim, &mut heals, Some(now), &mut f, &log)?;
        let scripts_done = clients.iter().all(|c| c.next.get() >= c.steps.len());
        if pending.peek().is_none() && heals.is_empty() {
            if scripts_done {
                break;
            }
            let since = *all_healed_at.get_or_insert(now);
            if now - since > WORKLOAD_LIMIT.as_millis() as u64 {
                return Err(format!(
                    "the client scripts did not finish within {} s of the last fault healing: {}",
                    WORKLOAD_LIMIT.as_secs(),
                    describe(&clients, &slot, path)
                ));
            }
        }
        step(&mut sim)?;
        check_broken(&clients)?;
        check_observer()?;
    }
    let healed_at = now_ms(&sim);
    log(format!("{healed_at} ms: workload done, every fault healed"));

    // Quiescence: every replica has uploaded everything and all agree.
    let mut next_check = healed_at;
    loop {
        let now = now_ms(&sim);
        if now >= next_check {
            next_check = now + CHECK_EVERY.as_millis() as u64;
            if quiescent(&clients, &slot, path)? && observer_caught_up(&observer, &slot, path) {
                break;
            }
            if now - healed_at > HEAL_LIMIT.as_millis() as u64 {
                return Err(format!(
                    "no quiescence within {} s of healing: {}{}",
                    HEAL_LIMIT.as_secs(),
                    describe(&clients, &slot, path),
                    describe_observer()
                ));
            }
        }
        step(&mut sim)?;
        check_broken(&clients)?;
        check_observer()?;
    }
    let quiet_at = now_ms(&sim);
    log(format!("{quiet_at} ms: quiescent"));

    // Every listener's last view is the final Journal (its notifier thread may still be
    // delivering: give it real time).
    for client in &clients {
        let db = client
            .db
            .borrow()
            .upgrade()
            .ok_or("a client is not running")?;
        let expected = db
            .read()
            .and_then(|r| r.object("Journal", &PrimaryKey::Int(0)))
            .map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = lock(&client.journal_view.borrow()).clone();
            if seen.as_ref() == Some(&expected) || (expected.is_none() && seen.is_none()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "c{}: the Journal listener's last view is {seen:?}, the Journal is {expected:?}",
                    client.index
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    // Connections and sessions return to their bound: one connection and one session per
    // client, none unauthenticated, one server file open; every client connected, and every
    // error it reported as `will_retry` followed by a reconnect. (A crashed client's
    // connection may wait for the server's idle timeout.)
    let peers = clients.len() + usize::from(observer.is_some());
    let bound = Gauges {
        connections: peers,
        unauthenticated: 0,
        sessions: peers as i64,
        files: 1,
    };
    let limit = now_ms(&sim) + (SERVER_IDLE + Duration::from_secs(360)).as_millis() as u64;
    loop {
        let settled = clients.iter().all(|c| {
            let state = lock(&c.session_state);
            state.0 == SyncState::Connected && !state.1
        }) && observer.as_ref().map_or(true, |o| o.connected.get());
        if settled && gauges.get() == bound {
            break;
        }
        if now_ms(&sim) > limit {
            return Err(format!(
                "connections did not return to their bound: the server has {:?} (bound \
                 {bound:?}); the sessions: {:?}",
                gauges.get(),
                clients
                    .iter()
                    .map(|c| lock(&c.session_state).clone())
                    .collect::<Vec<_>>()
            ));
        }
        step(&mut sim)?;
        check_broken(&clients)?;
        check_observer()?;
    }
    log(format!(
        "{} ms: connections at their bound {bound:?}",
        now_ms(&sim)
    ));
    // The server's heap at rest: what it keeps for its connections, sessions and open file,
    // not what the run passed through it.
    let server_heap = server_tags.current();
    // The observer's process is held to a client's bounds (shown as the last client).
    let mut peer_tags = client_tags.clone();
    if observer.is_some() {
        peer_tags.push(observer_tags);
    }
    let clients_heap: Vec<(i64, i64)> = peer_tags.iter().map(HostTags::current).collect();
    for (c, (live, peak)) in clients_heap.iter().enumerate() {
        if *live > CLIENT_HEAP_AT_REST || *peak > CLIENT_HEAP_PEAK {
            return Err(format!(
                "c{c} keeps {} KiB of heap at rest (bound {} KiB), peak {} KiB (bound {} KiB)",
                live >> 10,
                CLIENT_HEAP_AT_REST >> 10,
                peak >> 10,
                CLIENT_HEAP_PEAK >> 10
            ));
        }
    }
    let at_rest_bound = SERVER_HEAP_AT_REST
        + if observer.is_some() {
            OBSERVER_SERVER_HEAP
        } else {
            0
        };
    if server_heap.0 > at_rest_bound || server_heap.1 > SERVER_HEAP_PEAK {
        return Err(format!(
            "the server keeps {} KiB of heap at rest (bound {} KiB), peak {} KiB (bound {} KiB)",
            server_heap.0 >> 10,
            at_rest_bound >> 10,
            server_heap.1 >> 10,
            SERVER_HEAP_PEAK >> 10
        ));
    }

    // Stop everything; compare with the server's file.
    for client in &clients {
        sim.crash(client_host(client.index));
    }
    sim.crash("server");
    check_broken(&clients)?;
    drop(sim);
    // (The slot's weak reference keeps the last server's allocation; so do the clients' weak
    // references to their databases and the listeners' views.)
    *slot.borrow_mut() = std::rc::Weak::new();
    for client in &clients {
        *client.db.borrow_mut() = Weak::new();
        *client.journal_view.borrow_mut() = Arc::new(Mutex::new(None));
    }
    if let Some(o) = &observer {
        o.forget();
    }
    // Everything every server process allocated is freed once the simulation is gone: what is
    // left was leaked (forgotten, or kept alive by a reference cycle).
    let leaked = server_tags.left();
    if leaked > SERVER_HEAP_LEAK {
        return Err(format!(
            "the server processes left {leaked} bytes of heap allocated after the simulation \
             ended (bound {SERVER_HEAP_LEAK})"
        ));
    }
    // The same for every client process: what the library allocated for a client (its
    // database, session, connection and listeners) is freed once its host is gone. The test's
    // own notes made inside a client's code are not charged to it (`tandem::sim::untagged`).
    // A session's event thread and a database's notifier thread end on their own once their
    // owner is dropped: give them real time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (c, tags) in peer_tags.iter().enumerate() {
        loop {
            let leaked = tags.left();
            if leaked <= CLIENT_HEAP_LEAK {
                break;
            }
            if std::time::Instant::now() > deadline {
                tags.dump();
                return Err(format!(
                    "c{c}'s processes left {leaked} bytes of heap allocated after the \
                     simulation ended (bound {CLIENT_HEAP_LEAK})"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let server_file = server_dir.join(tandem::server::server_file_name(path));
    let server = ServerFile::open(&server_file).map_err(|e| format!("server file: {e}"))?;
    let server_state = server.state().map_err(|e| format!("server state: {e}"))?;
    for client in &clients {
        let db = Database::open(&client.path, &schema(client.v2.get()), Config::default())
            .map_err(|e| format!("c{}: reopen: {e}", client.index))?;
        let state = db.export_state().map_err(|e| e.to_string())?;
        let expected = expected_objects(client, &server_state.objects);
        if state.objects != expected {
            return Err(format!(
                "c{} differs from the server{}:\nclient {:#?}\nserver {:#?}",
                client.index,
                if client.flexible {
                    format!(" (subscribed to Task {})", client.query.borrow().rql())
                } else {
                    String::new()
                },
                state.objects,
                expected
            ));
        }
    }
    check_journal(&clients, &server_state, lock(&book).restored)?;
    // (The error events' count is not traced: they are delivered on notifier threads.)
    log(format!(
        "{quiet_at} ms: converged ({} writes, {} in doubt, {} rejected, server history {})",
        clients
            .iter()
            .map(|c| c.committed.borrow().len())
            .sum::<usize>(),
        clients
            .iter()
            .map(|c| c.in_doubt.borrow().len())
            .sum::<usize>(),
        clients
            .iter()
            .map(|c| c.rejected.borrow().len())
            .sum::<usize>(),
        server.history_len()
    ));
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", server_state.objects).hash(&mut h);
        trace.borrow().hash(&mut h);
        h.finish()
    };
    if std::env::var_os("SIM_MEMORY").is_some() {
        eprintln!(
            "seed {}: the server's processes left {leaked} bytes; the clients' heap at rest and \
             peak (KiB): {:?}",
            plan.seed,
            clients_heap
                .iter()
                .map(|(live, peak)| (live >> 10, peak >> 10))
                .collect::<Vec<_>>()
        );
    }
    Ok((digest, quiet_at, server_heap))
}

/// Starts `fault` at `now` (`now` in simulated ms), scheduling what heals it.
fn start_fault(
    sim: &mut turmoil::Sim,
    fault: &Fault,
    now: u64,
    f: &mut Faults,
    heals: &mut Vec<(u64, Heal)>,
    book: &Mutex<Book>,
    log: &impl Fn(String),
) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    match *fault {
        Fault::Partition { client, for_ms } => {
            sim.partition("server", client_host(client));
            heals.push((now + for_ms, Heal::Repair(client)));
        }
        Fault::Stall { client, for_ms } => {
            sim.hold("server", client_host(client));
            heals.push((now + for_ms, Heal::Release(client)));
        }
        Fault::CrashServer { down_ms } if !f.server_down => {
            sim.crash("server");
            f.server_down = true;
            heals.push((now + down_ms, Heal::StartServer));
        }
        Fault::CrashClient { client, down_ms } if !f.down[client] => {
            sim.crash(client_host(client));
            f.down[client] = true;
            heals.push((now + down_ms, Heal::StartClient(client)));
        }
        Fault::DiskFull { for_ms } if f.tmpfs && !f.disk_full => {
            fill(&f.server_dir.join(BALLAST));
            f.disk_full = true;
            heals.push((now + for_ms, Heal::FreeDisk));
        }
        Fault::DiskFull { .. } if !f.tmpfs => log(format!("{now} ms: (no tmpfs: skipped)")),
        Fault::Backup => {
            let _ = std::fs::remove_dir_all(&f.backup_dir);
            copy_dir(&f.server_dir, &f.backup_dir).map_err(|e| io("backup", e))?;
            f.backed_up = true;
        }
        Fault::RestoreServer { down_ms } => {
            if !f.server_down {
                sim.crash("server");
                f.server_down = true;
                heals.push((now + down_ms, Heal::StartServer));
            }
            // The restore needs room: a full disk is emptied for it and filled again.
            let ballast = f.server_dir.join(BALLAST);
            if f.disk_full {
                std::fs::remove_file(&ballast).map_err(|e| io("ballast", e))?;
            }
            empty_dir(&f.server_dir).map_err(|e| io("restore", e))?;
            if f.backed_up {
                copy_dir(&f.backup_dir, &f.server_dir).map_err(|e| io("restore", e))?;
            }
            if f.disk_full {
                fill(&ballast);
            }
            lock(book).restored = true;
            log(format!(
                "{now} ms: server data {}",
                if f.backed_up {
                    "restored from the backup"
                } else {
                    "lost (no backup)"
                }
            ));
        }
        _ => log(format!("{now} ms: (already so)")),
    }
    Ok(())
}

fn heal_due(
    sim: &mut turmoil::Sim,
    heals: &mut Vec<(u64, Heal)>,
    now: Option<u64>,
    f: &mut Faults,
    log: &impl Fn(String),
) -> Result<(), String> {
    let mut i = 0;
    while i < heals.len() {
        if now.is_some_and(|now| heals[i].0 > now) {
            i += 1;
            continue;
        }
        let (at, heal) = heals.remove(i);
        match heal {
            Heal::FreeDisk => {
                std::fs::remove_file(f.server_dir.join(BALLAST))
                    .map_err(|e| format!("ballast: {e}"))?;
                f.disk_full = false;
                log(format!("{at} ms: server disk has room again"));
            }
            Heal::Repair(c) => {
                sim.repair("server", client_host(c));
                log(format!("{at} ms: repaired c{c}"));
            }
            Heal::Release(c) => {
                sim.release("server", client_host(c));
                log(format!("{at} ms: released c{c}"));
            }
            Heal::StartServer => {
                sim.bounce("server");
                f.server_down = false;
                log(format!("{at} ms: server restarted"));
            }
            Heal::StartClient(c) => {
                sim.bounce(client_host(c));
                f.down[c] = false;
                log(format!("{at} ms: c{c} reopened its file"));
            }
        }
    }
    Ok(())
}

fn check_broken(clients: &[Rc<Client>]) -> Result<(), String> {
    for client in clients {
        if let Some(first) = lock(&client.broken).first() {
            return Err(first.clone());
        }
    }
    Ok(())
}

/// The realm-core-style observer (if there is one) holds the running server's state of `path`
/// with its download cursor at the latest version.
fn observer_caught_up(observer: &Option<Rc<Observer>>, server: &ServerSlot, path: &str) -> bool {
    let Some(o) = observer else {
        return true;
    };
    let Some(server) = server.borrow().upgrade() else {
        return false;
    };
    server
        .state_of(path)
        .is_some_and(|state| o.caught_up(&state))
}

/// Nothing left to upload anywhere, every flexible sync client's newest subscription set
/// complete, and every replica holding what it must of the running server's state (all of
/// it, or what its subscriptions match).
fn quiescent(clients: &[Rc<Client>], server: &ServerSlot, path: &str) -> Result<bool, String> {
    let Some(server) = server.borrow().upgrade() else {
        return Ok(false);
    };
    let Some(state) = server.state_of(path) else {
        return Ok(false);
    };
    for client in clients {
        let Some(db) = client.db.borrow().upgrade() else {
            return Ok(false);
        };
        if !db
            .pending_uploads(1 << 20)
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            return Ok(false);
        }
        if client.flexible
            && db.subscriptions().map_err(|e| e.to_string())?.state
                != SubscriptionSetState::Complete
        {
            return Ok(false);
        }
        let objects = db.export_state().map_err(|e| e.to_string())?.objects;
        if objects != expected_objects(client, &state.objects) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn describe(clients: &[Rc<Client>], server: &ServerSlot, path: &str) -> String {
    let server_state = server.borrow().upgrade().and_then(|s| s.state_of(path));
    let mut out = vec![match &server_state {
        None => "the server is down or has no state".to_owned(),
        Some(s) => format!("the server's objects: {:?}", s.objects),
    }];
    out.extend(clients.iter().map(|c| match c.db.borrow().upgrade() {
        None => format!("c{}: not running", c.index),
        Some(db) => {
            let objects = db.export_state().map(|s| s.objects).ok();
            let expected = server_state
                .as_ref()
                .map(|s| expected_objects(c, &s.objects));
            format!(
                "c{}: {} to upload, progress {:?},{} {}",
                c.index,
                db.pending_uploads(1 << 20).map(|p| p.len()).unwrap_or(0),
                db.sync_progress().ok(),
                if c.flexible {
                    format!(
                        " subscriptions {:?} (Task {}),",
                        db.subscriptions().map(|s| (s.version, s.state)).ok(),
                        c.query.borrow().rql()
                    )
                } else {
                    String::new()
                },
                if objects.is_some() && objects == expected {
                    "holding what it must of the server's".to_owned()
                } else {
                    format!("objects {objects:?}")
                }
            )
        }
    }));
    out.join("\n")
}

/// Every committed write is in the server's state exactly once: its `Entry` object, its name
/// once in `Journal[0].lines` (and nothing else there), its addition in `Journal[0].total`.
/// A transaction in doubt is there completely or not at all; a rejected one is not there.
/// After a restore from an older copy, client resets may have replaced the lines as a whole
/// (the last recovering client's list wins): then each line is a written name at most once,
/// and the Entries and the total must still be exact.
fn check_journal(
    clients: &[Rc<Client>],
    state: &tandem::state::State,
    restored: bool,
) -> Result<(), String> {
    let entry_exists = |name: &str| {
        state
            .objects
            .get("Entry")
            .is_some_and(|objects| objects.contains_key(&tandem::state::Key::String(name.into())))
    };
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0i64;
    let mut written = BTreeSet::new();
    for client in clients {
        for (name, add) in client.committed.borrow().iter() {
            *expected.entry(name.clone()).or_default() += 1;
            total += add;
            written.insert(name.clone());
        }
        for (name, add) in client.in_doubt.borrow().iter() {
            written.insert(name.clone());
            if entry_exists(name) {
                *expected.entry(name.clone()).or_default() += 1;
                total += add;
            }
        }
        for name in client.rejected.borrow().iter() {
            if entry_exists(name) {
                return Err(format!("rejected transaction {name} is on the server"));
            }
        }
    }
    let journal = state
        .objects
        .get("Journal")
        .and_then(|objects| objects.get(&tandem::state::Key::Int(0)));
    let (lines, stored_total) = match journal {
        None if expected.is_empty() => return Ok(()),
        None => return Err("the server has no Journal but writes were committed".into()),
        Some(o) => (
            lines_of(&Some(o.clone())),
            match o.fields.get("total") {
                Some(Field::Value(Val::Int(n))) => *n,
                _ => 0,
            },
        ),
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in lines {
        *seen.entry(line).or_default() += 1;
    }
    let wrong: Vec<_> = if restored {
        seen.iter()
            .filter(|(k, n)| **n > 1 || !written.contains(*k))
            .collect()
    } else {
        seen.iter()
            .filter(|(k, n)| expected.get(*k) != Some(n))
            .collect()
    };
    let missing: Vec<_> = if restored {
        Vec::new()
    } else {
        expected.keys().filter(|k| !seen.contains_key(*k)).collect()
    };
    if !wrong.is_empty() || !missing.is_empty() {
        return Err(format!(
            "the Journal's lines are not the committed writes once each (restored: {restored}): \
             missing {missing:?}, wrong counts {wrong:?}"
        ));
    }
    if stored_total != total {
        return Err(format!(
            "Journal total {stored_total}, the committed additions sum to {total}"
        ));
    }
    for name in expected.keys() {
        if !entry_exists(name) {
            return Err(format!("the Entry of committed write {name} is missing"));
        }
    }
    Ok(())
}
