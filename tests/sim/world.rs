//! Runs one [`Plan`] on turmoil: the real tandem-server and real `SyncSession`s over real
//! SQLite files, on simulated hosts, network and time; injects the plan's faults; heals
//! everything; waits for quiescence; checks the invariants.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, UNIX_EPOCH};

use tandem::client::{Event, SyncConfig, SyncError, SyncSession, TokenProvider};
use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::server::{Authenticator, ServerConfig, ServerFile, TokenSigner};
use tandem::state::{Element, Field, Object, Val};
use tandem::store::{Config, Database};

use super::plan::{Fault, Op, Plan, Step};

const PATH: &str = "/sim";
const SECRET: &[u8] = b"simulation secret, 32 bytes long";
const PORT: u16 = 9443;
/// The simulated clock starts at 2026-01-01T00:00:00Z.
const EPOCH_SECS: u64 = 1_767_225_600;
/// Simulated time allowed for convergence once every fault has healed: long enough for a
/// client to notice a silently dead connection (PONG missing for 120 s) and reconnect.
const HEAL_LIMIT: Duration = Duration::from_secs(400);
/// How often (simulated) quiescence is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What a passing run leaves: a digest of everything observable (two runs of one plan must
/// agree on it) and the trace.
pub struct Outcome {
    pub digest: u64,
    pub trace: Vec<String>,
    /// Simulated milliseconds the run took.
    pub simulated_ms: u64,
}

/// A failed run: why, and the trace up to it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub trace: Vec<String>,
}

fn schema() -> Schema {
    Schema::new(vec![
        ClassSchema::top_level(
            "Task",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("title", PropertyType::String),
                Property::new("count", PropertyType::Int),
                Property::new("tags", PropertyType::String).collection(CollectionKind::List),
                Property::new("labels", PropertyType::String).collection(CollectionKind::Set),
                Property::new("attrs", PropertyType::Int).collection(CollectionKind::Dictionary),
                Property::link("next", "Task").nullable(),
            ],
        ),
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
    ])
    .expect("the simulation's schema is valid")
}

/// One client: its script's progress and what it observed. Lives outside the simulated host,
/// so it survives the host's crashes (as the test's knowledge, not the client's).
struct Client {
    index: usize,
    path: PathBuf,
    skew_ms: i64,
    token_secs: u64,
    steps: Vec<Step>,
    /// The next step to run (after a crash the host resumes here).
    next: Cell<usize>,
    /// Journal names of the committed writes and their journal additions.
    committed: RefCell<Vec<(String, i64)>>,
    /// The open database while the host runs.
    db: RefCell<Weak<Database>>,
    /// Rule breaks seen on other threads (listeners, events).
    broken: Arc<Mutex<Vec<String>>>,
    /// Error events seen.
    errors: Arc<Mutex<u64>>,
    /// What the running host's Journal listener last read, if it has been called (a new slot
    /// per start of the host: a listener of a crashed run may still be finishing a call).
    journal_view: RefCell<Arc<Mutex<Option<Option<Object>>>>>,
    /// The run's trace (shared with the main loop).
    trace: Rc<RefCell<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type HostResult = Result<(), Box<dyn std::error::Error>>;

async fn run_client(client: Rc<Client>) -> HostResult {
    let db = Arc::new(Database::open(&client.path, &schema(), Config::default())?);
    *client.db.borrow_mut() = Arc::downgrade(&db);
    let provider = Tokens(client.token_secs);
    let token = provider.fetch_token()?;
    let session = SyncSession::start(
        Arc::clone(&db),
        SyncConfig {
            url: format!("ws://server:{PORT}/"),
            path: PATH.into(),
            token,
            allow_insecure: true,
            token_provider: Some(Arc::new(provider)),
            ..SyncConfig::default()
        },
    )?;
    let (broken, errors) = (Arc::clone(&client.broken), Arc::clone(&client.errors));
    let name = client.index;
    let _events = session.on_event(move |event| {
        if let Event::Error(info) = event {
            *lock(&errors) += 1;
            if !info.will_retry {
                lock(&broken).push(format!(
                    "c{name}: the session stopped on error {}: {}",
                    info.code, info.message
                ));
            }
        }
    });
    let view = Arc::new(Mutex::new(None));
    *client.journal_view.borrow_mut() = Arc::clone(&view);
    let weak = Arc::downgrade(&db);
    let broken = Arc::clone(&client.broken);
    let _journal = db.observe_query("Journal", "TRUEPREDICATE", &[], move |_| {
        let Some(db) = weak.upgrade() else { return };
        match db
            .read()
            .and_then(|r| r.object("Journal", &PrimaryKey::Int(0)))
        {
            Ok(object) => *lock(&view) = Some(object),
            Err(e) => lock(&broken).push(format!("c{name}: the listener cannot read: {e}")),
        }
    })?;
    // The view as of registration (nothing commits in between: this host's code does not
    // yield here); every later change must reach the listener.
    let registered = db
        .read()
        .and_then(|r| r.object("Journal", &PrimaryKey::Int(0)))?;
    lock(&client.journal_view.borrow()).get_or_insert(registered);
    tandem::sim::with_clock_skew(client.skew_ms, async {
        while let Some(step) = client.steps.get(client.next.get()) {
            match step {
                Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
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
                    let name = format!("c{}s{}", client.index, client.next.get());
                    write(&db, ops, &name, *journal_at, *journal_add)
                        .map_err(|e| format!("c{}: write {name} failed: {e}", client.index))?;
                    let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
                    client
                        .trace
                        .borrow_mut()
                        .push(format!("{at} ms: c{} committed {name}", client.index));
                    client.committed.borrow_mut().push((name, *journal_add));
                }
            }
            client.next.set(client.next.get() + 1);
        }
        Ok::<(), String>(())
    })
    .await?;
    std::future::pending::<()>().await;
    drop(session);
    Ok(())
}

/// Signs tokens that live `.0` seconds from the simulated now (the session asks for a new one
/// before expiry and when the server says it has expired).
struct Tokens(u64);

impl TokenProvider for Tokens {
    fn fetch_token(&self) -> Result<String, String> {
        let now = turmoil::since_epoch()
            .ok_or("tokens are signed inside the simulation")?
            .as_secs();
        TokenSigner::hs256(SECRET)
            .sign("sim", now + self.0, &[PATH])
            .map_err(|e| format!("{e:?}"))
    }
}

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

/// One write step as one transaction. Positions come from reading first: nothing else writes
/// between (the sync task runs on this same simulated thread and this code does not yield).
fn write(
    db: &Database,
    ops: &[Op],
    name: &str,
    journal_at: u32,
    journal_add: i64,
) -> Result<(), String> {
    let err = |e: tandem::store::StoreError| e.to_string();
    // Positions and existence as of the start; the ops below keep them up to date.
    let mut lens: BTreeMap<i64, u32> = BTreeMap::new();
    let mut present: BTreeMap<i64, bool> = BTreeMap::new();
    for op in ops {
        let id = match op {
            Op::SetTitle { id, .. }
            | Op::Add { id, .. }
            | Op::SetCount { id, .. }
            | Op::Erase { id }
            | Op::TagInsert { id, .. }
            | Op::TagErase { id, .. }
            | Op::LabelInsert { id, .. }
            | Op::LabelErase { id, .. }
            | Op::AttrSet { id, .. }
            | Op::AttrErase { id, .. }
            | Op::Link { id, .. } => *id,
        };
        let targets = match op {
            Op::Link { to: Some(to), .. } => vec![id, *to],
            _ => vec![id],
        };
        for id in targets {
            let key = PrimaryKey::Int(id);
            if let std::collections::btree_map::Entry::Vacant(v) = present.entry(id) {
                // One read gives both whether the task exists and its tag count.
                let task = read_object(db, "Task", &key)?;
                v.insert(task.is_some());
                lens.insert(id, list_len(&task, "tags"));
            }
        }
    }
    // Makes sure task `id` exists in the transaction.
    let ensure = |tx: &mut tandem::store::WriteTransaction<'_>,
                  present: &mut BTreeMap<i64, bool>,
                  lens: &mut BTreeMap<i64, u32>,
                  id: i64|
     -> Result<(), String> {
        if !present[&id] {
            tx.upsert("Task", PrimaryKey::Int(id), &[]).map_err(err)?;
            present.insert(id, true);
            lens.insert(id, 0);
        }
        Ok(())
    };
    let journal_len = list_len(&read_object(db, "Journal", &PrimaryKey::Int(0))?, "lines");
    let mut tx = db.begin_write().map_err(err)?;
    for op in ops {
        match op {
            Op::SetTitle { id, title } => {
                tx.upsert(
                    "Task",
                    PrimaryKey::Int(*id),
                    &[("title", Value::String(title.clone()))],
                )
                .map_err(err)?;
                if !present[id] {
                    present.insert(*id, true);
                    lens.insert(*id, 0);
                }
            }
            Op::Add { id, amount } => {
                if !present[id] {
                    tx.upsert("Task", PrimaryKey::Int(*id), &[]).map_err(err)?;
                    present.insert(*id, true);
                    lens.insert(*id, 0);
                }
                tx.add("Task", &PrimaryKey::Int(*id), "count", *amount)
                    .map_err(err)?;
            }
            Op::SetCount { id, value } => {
                tx.upsert(
                    "Task",
                    PrimaryKey::Int(*id),
                    &[("count", Value::Int(*value))],
                )
                .map_err(err)?;
                if !present[id] {
                    present.insert(*id, true);
                    lens.insert(*id, 0);
                }
            }
            Op::Erase { id } => {
                if present[id] {
                    tx.erase("Task", &PrimaryKey::Int(*id)).map_err(err)?;
                    present.insert(*id, false);
                    lens.insert(*id, 0);
                }
            }
            Op::TagInsert { id, at, tag } => {
                if !present[id] {
                    tx.upsert("Task", PrimaryKey::Int(*id), &[]).map_err(err)?;
                    present.insert(*id, true);
                    lens.insert(*id, 0);
                }
                let len = lens[id];
                tx.list_insert(
                    "Task",
                    &PrimaryKey::Int(*id),
                    "tags",
                    at % (len + 1),
                    Value::String(tag.clone()),
                )
                .map_err(err)?;
                lens.insert(*id, len + 1);
            }
            Op::TagErase { id, at } => {
                let len = lens[id];
                if present[id] && len > 0 {
                    tx.list_erase("Task", &PrimaryKey::Int(*id), "tags", at % len)
                        .map_err(err)?;
                    lens.insert(*id, len - 1);
                }
            }
            Op::LabelInsert { id, label } => {
                ensure(&mut tx, &mut present, &mut lens, *id)?;
                tx.set_insert(
                    "Task",
                    &PrimaryKey::Int(*id),
                    "labels",
                    Value::String(label.clone()),
                )
                .map_err(err)?;
            }
            Op::LabelErase { id, label } => {
                ensure(&mut tx, &mut present, &mut lens, *id)?;
                tx.set_erase(
                    "Task",
                    &PrimaryKey::Int(*id),
                    "labels",
                    Value::String(label.clone()),
                )
                .map_err(err)?;
            }
            Op::AttrSet { id, key, value } => {
                ensure(&mut tx, &mut present, &mut lens, *id)?;
                tx.dict_set(
                    "Task",
                    &PrimaryKey::Int(*id),
                    "attrs",
                    key,
                    Value::Int(*value),
                )
                .map_err(err)?;
            }
            Op::AttrErase { id, key } => {
                ensure(&mut tx, &mut present, &mut lens, *id)?;
                tx.dict_erase("Task", &PrimaryKey::Int(*id), "attrs", key)
                    .map_err(err)?;
            }
            Op::Link { id, to } => {
                ensure(&mut tx, &mut present, &mut lens, *id)?;
                let value = match to {
                    Some(to) => {
                        ensure(&mut tx, &mut present, &mut lens, *to)?;
                        Value::Link(tandem::model::Link {
                            class: "Task".into(),
                            key: PrimaryKey::Int(*to),
                        })
                    }
                    None => Value::Null,
                };
                tx.set("Task", &PrimaryKey::Int(*id), "next", value)
                    .map_err(err)?;
            }
        }
    }
    let journal = PrimaryKey::Int(0);
    tx.upsert("Journal", journal.clone(), &[]).map_err(err)?;
    tx.list_insert(
        "Journal",
        &journal,
        "lines",
        journal_at % (journal_len + 1),
        Value::String(name.into()),
    )
    .map_err(err)?;
    tx.add("Journal", &journal, "total", journal_add)
        .map_err(err)?;
    tx.create(
        "Entry",
        PrimaryKey::String(name.into()),
        &[("client", Value::Int(0))],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(())
}

async fn run_server(dir: PathBuf) -> HostResult {
    let config = ServerConfig {
        allow_plain_ws: true,
        ..ServerConfig::new(
            std::net::SocketAddr::from(([0, 0, 0, 0], PORT)),
            dir,
            Authenticator::hs256(SECRET),
        )
    };
    let server = tandem::server::start(config)
        .await
        .map_err(|e| format!("the server did not start: {e:?}"))?;
    std::future::pending::<()>().await;
    drop(server);
    Ok(())
}

/// Something the main loop undoes later.
enum Heal {
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
    let result = run_in(plan, &dir, &trace);
    let trace = trace.take();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((digest, simulated_ms)) => Ok(Outcome {
            digest,
            trace,
            simulated_ms,
        }),
        Err(message) => Err(Failure { message, trace }),
    }
}

fn run_in(plan: &Plan, dir: &Path, trace: &Rc<RefCell<Vec<String>>>) -> Result<(u64, u64), String> {
    tandem::sim::seed_random(plan.seed);
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
    sim.host("server", move || run_server(server_dir.clone()));
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
                steps: p.steps.clone(),
                next: Cell::new(0),
                committed: RefCell::new(Vec::new()),
                db: RefCell::new(Weak::new()),
                broken: Arc::new(Mutex::new(Vec::new())),
                errors: Arc::new(Mutex::new(0)),
                journal_view: RefCell::new(Arc::new(Mutex::new(None))),
                trace: Rc::clone(trace),
            })
        })
        .collect();
    for client in &clients {
        let c = Rc::clone(client);
        sim.host(client_host(client.index), move || run_client(Rc::clone(&c)));
    }

    let now_ms = |sim: &turmoil::Sim| sim.elapsed().as_millis() as u64;
    let mut faults = plan.faults.iter().peekable();
    let mut heals: Vec<(u64, Heal)> = Vec::new();
    let mut server_down = false;
    let mut down: Vec<bool> = vec![false; clients.len()];
    let step = |sim: &mut turmoil::Sim| -> Result<(), String> {
        sim.step()
            .map(|_| ())
            .map_err(|e| format!("the simulation failed: {e}"))
    };

    // The workload, with faults starting on time and healing on time.
    loop {
        let now = now_ms(&sim);
        while let Some((at, fault)) = faults.peek() {
            if *at > now {
                break;
            }
            faults.next();
            log(format!("{now} ms: {fault:?}"));
            match *fault {
                Fault::Partition { client, for_ms } => {
                    sim.partition("server", client_host(client));
                    heals.push((now + for_ms, Heal::Repair(client)));
                }
                Fault::Stall { client, for_ms } => {
                    sim.hold("server", client_host(client));
                    heals.push((now + for_ms, Heal::Release(client)));
                }
                Fault::CrashServer { down_ms } if !server_down => {
                    sim.crash("server");
                    server_down = true;
                    heals.push((now + down_ms, Heal::StartServer));
                }
                Fault::CrashClient { client, down_ms } if !down[client] => {
                    sim.crash(client_host(client));
                    down[client] = true;
                    heals.push((now + down_ms, Heal::StartClient(client)));
                }
                _ => log(format!("{now} ms: (already down)")),
            }
        }
        heal_due(
            &mut sim,
            &mut heals,
            Some(now),
            &mut server_down,
            &mut down,
            &log,
        );
        let scripts_done = clients.iter().all(|c| c.next.get() >= c.steps.len());
        if scripts_done && faults.peek().is_none() && heals.is_empty() {
            break;
        }
        step(&mut sim)?;
        check_broken(&clients)?;
    }
    let healed_at = now_ms(&sim);
    log(format!("{healed_at} ms: workload done, every fault healed"));

    // Quiescence: every replica has uploaded everything and all agree.
    let mut next_check = healed_at;
    loop {
        let now = now_ms(&sim);
        if now >= next_check {
            next_check = now + CHECK_EVERY.as_millis() as u64;
            if quiescent(&clients)? {
                break;
            }
            if now - healed_at > HEAL_LIMIT.as_millis() as u64 {
                return Err(format!(
                    "no quiescence within {} s of healing: {}",
                    HEAL_LIMIT.as_secs(),
                    describe(&clients)
                ));
            }
        }
        step(&mut sim)?;
        check_broken(&clients)?;
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

    // Stop everything; compare with the server's file.
    for client in &clients {
        sim.crash(client_host(client.index));
    }
    sim.crash("server");
    check_broken(&clients)?;
    drop(sim);
    let server_file = dir
        .join("server")
        .join(tandem::server::server_file_name(PATH));
    let server = ServerFile::open(&server_file).map_err(|e| format!("server file: {e}"))?;
    let server_state = server.state().map_err(|e| format!("server state: {e}"))?;
    for client in &clients {
        let db = Database::open(&client.path, &schema(), Config::default())
            .map_err(|e| format!("c{}: reopen: {e}", client.index))?;
        let state = db.export_state().map_err(|e| e.to_string())?;
        if state.objects != server_state.objects {
            return Err(format!(
                "c{} differs from the server:\nclient {:#?}\nserver {:#?}",
                client.index, state.objects, server_state.objects
            ));
        }
    }
    check_journal(&clients, &server_state)?;
    let errors: u64 = clients.iter().map(|c| *lock(&c.errors)).sum();
    log(format!(
        "{quiet_at} ms: converged ({} writes, {errors} error events, server history {})",
        clients
            .iter()
            .map(|c| c.committed.borrow().len())
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
    Ok((digest, quiet_at))
}

fn heal_due(
    sim: &mut turmoil::Sim,
    heals: &mut Vec<(u64, Heal)>,
    now: Option<u64>,
    server_down: &mut bool,
    down: &mut [bool],
    log: &impl Fn(String),
) {
    let mut i = 0;
    while i < heals.len() {
        if now.is_some_and(|now| heals[i].0 > now) {
            i += 1;
            continue;
        }
        let (at, heal) = heals.remove(i);
        match heal {
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
                *server_down = false;
                log(format!("{at} ms: server restarted"));
            }
            Heal::StartClient(c) => {
                sim.bounce(client_host(c));
                down[c] = false;
                log(format!("{at} ms: c{c} reopened its file"));
            }
        }
    }
}

fn check_broken(clients: &[Rc<Client>]) -> Result<(), String> {
    for client in clients {
        if let Some(first) = lock(&client.broken).first() {
            return Err(first.clone());
        }
    }
    Ok(())
}

/// Nothing left to upload anywhere and every replica equal.
fn quiescent(clients: &[Rc<Client>]) -> Result<bool, String> {
    let mut first = None;
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
        let objects = db.export_state().map_err(|e| e.to_string())?.objects;
        match &first {
            None => first = Some(objects),
            Some(f) if *f != objects => return Ok(false),
            Some(_) => {}
        }
    }
    Ok(true)
}

fn describe(clients: &[Rc<Client>]) -> String {
    clients
        .iter()
        .map(|c| match c.db.borrow().upgrade() {
            None => format!("c{}: not running", c.index),
            Some(db) => format!(
                "c{}: {} to upload, progress {:?}",
                c.index,
                db.pending_uploads(1 << 20).map(|p| p.len()).unwrap_or(0),
                db.sync_progress().ok()
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every committed write is in the server's state exactly once: its `Entry` object, its name
/// once in `Journal[0].lines` (and nothing else there), its addition in `Journal[0].total`.
fn check_journal(clients: &[Rc<Client>], state: &tandem::state::State) -> Result<(), String> {
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0i64;
    for client in clients {
        for (name, add) in client.committed.borrow().iter() {
            *expected.entry(name.clone()).or_default() += 1;
            total += add;
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
            match o.fields.get("lines") {
                Some(Field::List(items)) => items.clone(),
                _ => Vec::new(),
            },
            match o.fields.get("total") {
                Some(Field::Value(Val::Int(n))) => *n,
                _ => 0,
            },
        ),
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in &lines {
        match line {
            Element::Value(Val::String(s)) => *seen.entry(s.clone()).or_default() += 1,
            other => return Err(format!("a Journal line is not a name: {other:?}")),
        }
    }
    if seen != expected {
        let missing: Vec<_> = expected.keys().filter(|k| !seen.contains_key(*k)).collect();
        let extra: Vec<_> = seen
            .iter()
            .filter(|(k, n)| expected.get(*k) != Some(n))
            .collect();
        return Err(format!(
            "the Journal's lines are not the committed writes once each: missing {missing:?}, \
             wrong counts {extra:?}"
        ));
    }
    if stored_total != total {
        return Err(format!(
            "Journal total {stored_total}, the committed additions sum to {total}"
        ));
    }
    for name in expected.keys() {
        let found = state
            .objects
            .get("Entry")
            .is_some_and(|objects| objects.contains_key(&tandem::state::Key::String(name.clone())));
        if !found {
            return Err(format!("the Entry of committed write {name} is missing"));
        }
    }
    Ok(())
}
