//! A simulation's plan, drawn from one seed: each client's script of writes and pauses, its
//! clock skew, the network's latency, and the faults with the simulated time they start at.
//! A plan is plain data, so a failing one can be shrunk (`shrink`) and printed.

use std::fmt;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Draws a plan's numbers (rand's small generator, seeded by the plan's seed); the simulation
/// itself runs on turmoil's seeded generator and the library's (`tandem::sim::seed_random`).
pub struct Draw(SmallRng);

impl Draw {
    pub fn new(seed: u64) -> Draw {
        Draw(SmallRng::seed_from_u64(seed))
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }

    /// `true` with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One change inside a write transaction, on the contended `Task` objects (ids `0..TASKS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Upsert the task and set its title (last writer wins).
    SetTitle { id: i64, title: String },
    /// Upsert the task and add to its counter (adds sum).
    Add { id: i64, amount: i64 },
    /// Upsert the task and set its counter (a set against a concurrent add: the add applies
    /// on top of the newer set).
    SetCount { id: i64, value: i64 },
    /// Erase the task if this replica has it (deletes win).
    Erase { id: i64 },
    /// Upsert the task and insert a tag at position `at % (len + 1)`.
    TagInsert { id: i64, at: u32, tag: String },
    /// Erase the tag at `at % len` if the task has any.
    TagErase { id: i64, at: u32 },
    /// Upsert the task and add a label to its set.
    LabelInsert { id: i64, label: String },
    /// Upsert the task and remove a label from its set (nothing if absent).
    LabelErase { id: i64, label: String },
    /// Upsert the task and set a dictionary entry.
    AttrSet { id: i64, key: String, value: i64 },
    /// Upsert the task and remove a dictionary entry (nothing if absent).
    AttrErase { id: i64, key: String },
    /// Upsert the task and point its `next` link at task `to` (upserted too), or at nothing.
    Link { id: i64, to: Option<i64> },
    /// Schema v2 only (skipped by a client still on v1): upsert the task and set its `note`.
    SetNote { id: i64, note: String },
    /// Schema v2 only: upsert the task, create its embedded `meta` object if it has none, and
    /// set `meta.rating`.
    SetRating { id: i64, rating: i64 },
    /// Schema v2 only: upsert the task and remove its embedded `meta` object.
    ClearMeta { id: i64 },
}

impl Op {
    /// The task the op writes.
    pub fn id(&self) -> i64 {
        match self {
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
            | Op::Link { id, .. }
            | Op::SetNote { id, .. }
            | Op::SetRating { id, .. }
            | Op::ClearMeta { id } => *id,
        }
    }

    /// Whether the op needs schema v2 (`Task.note`, the embedded `Task.meta`).
    pub fn needs_v2(&self) -> bool {
        matches!(
            self,
            Op::SetNote { .. } | Op::SetRating { .. } | Op::ClearMeta { .. }
        )
    }
}

/// What a client does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// One write transaction: its ops, then the journal entry every write makes (an `Entry`
    /// object named by the write, that name inserted into `Journal[0].lines` at position
    /// `journal_at % (len + 1)`, `journal_add` added to `Journal[0].total`).
    Write {
        ops: Vec<Op>,
        journal_at: u32,
        journal_add: i64,
    },
    /// The same write through `SyncSession::transact` (the server integrates it only if no
    /// other client's changeset it has not downloaded touches the same objects): accepted, it
    /// counts as committed; rejected, it must be gone everywhere; no verdict (a timeout after
    /// `wait_s` seconds, a crash), it is in doubt and may end either way, but all or nothing.
    /// Drawn plans wait as long as it takes (`None`); with [`Shape::rollbacks`], one in four
    /// gives up and the script writes on while the verdict is pending, so a rejection rolls
    /// back a transaction with later local writes on top.
    Transact {
        ops: Vec<Op>,
        journal_at: u32,
        journal_add: i64,
        wait_s: Option<u64>,
    },
    /// Wait this many simulated milliseconds.
    Pause(u64),
    /// `SyncSession::wait_for_upload` with a 30 s timeout: when it says done, nothing this
    /// client committed may be unacknowledged.
    WaitUpload,
    /// Flexible sync plans only: replace the client's `Task` subscription with `query` (a new
    /// subscription set; `Journal` and `Entry` stay subscribed whole) and, if `wait`, wait up
    /// to 30 s for its bootstrap (`SyncSession::wait_for_subscriptions`).
    Subscribe { query: TaskQuery, wait: bool },
}

/// What a flexible sync client subscribes to of `Task` (realm-core's query language; the
/// simulation also evaluates it itself, as the oracle of what each replica must hold).
///
/// Only queries by primary key: a client writes only tasks its active subscription set
/// matches (the ops on others are skipped), because a write to an object outside the view that the
/// server holds with a non-empty list is refused whole (212: the client's list index was
/// based on a list it never had), which stops the session. Found by the first flexible
/// sync seeds with queries on `count` and `title` (docs/testing.md, "Faults found");
/// not fixed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskQuery {
    /// Every task.
    All,
    /// Tasks whose `_id` is below this: tasks enter and leave the view as the client changes
    /// its subscription.
    IdBelow(i64),
}

impl TaskQuery {
    /// The query as the client subscribes it.
    pub fn rql(&self) -> String {
        match self {
            TaskQuery::All => "TRUEPREDICATE".into(),
            TaskQuery::IdBelow(n) => format!("_id < {n}"),
        }
    }

    /// The query [`TaskQuery::rql`] wrote, read back (`None` for any other text).
    pub fn from_rql(rql: &str) -> Option<TaskQuery> {
        match rql {
            "TRUEPREDICATE" => Some(TaskQuery::All),
            _ => rql
                .strip_prefix("_id < ")?
                .parse()
                .ok()
                .map(TaskQuery::IdBelow),
        }
    }

    /// Whether the query matches task `id`.
    pub fn matches_id(&self, id: i64) -> bool {
        match self {
            TaskQuery::All => true,
            TaskQuery::IdBelow(n) => id < *n,
        }
    }

    fn draw(d: &mut Draw) -> TaskQuery {
        match d.below(3) {
            0 => TaskQuery::All,
            _ => TaskQuery::IdBelow(1 + d.below(TASKS as u64 - 1) as i64),
        }
    }
}

/// A fault, starting at a simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The link between client `client` and the server drops every message for `for_ms`.
    Partition { client: usize, for_ms: u64 },
    /// The link holds every message for `for_ms`, then delivers them (a stall).
    Stall { client: usize, for_ms: u64 },
    /// The server process dies (tasks dropped, files kept) and restarts `down_ms` later.
    CrashServer { down_ms: u64 },
    /// Client `client`'s process dies (committed data kept, memory lost) and reopens its file
    /// `down_ms` later (with schema v2 if its plan says so).
    CrashClient { client: usize, down_ms: u64 },
    /// The server's file system is full for `for_ms` (a ballast file fills the tmpfs the
    /// server's data directory is on; then it is deleted).
    DiskFull { for_ms: u64 },
    /// The server's data directory is copied (between simulation steps, so every SQLite
    /// transaction is complete): the backup a later `RestoreServer` goes back to.
    Backup,
    /// The server dies, its data directory is replaced by the latest backup (an empty one if
    /// none was taken: the server lost everything), and it restarts `down_ms` later. Clients
    /// ahead of the restored server reset (`ClientResetMode::RecoverOrDiscard`).
    RestoreServer { down_ms: u64 },
}

/// When a client moves to schema v2 (`Task.note` and the embedded `Task.meta` added: a schema
/// addition made by the app's next version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaAt {
    /// v2 from its first open.
    Start,
    /// v1 first, v2 from its first reopen after a crash.
    Reopen,
    /// v1 always.
    Never,
}

/// One client's part of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPlan {
    /// Milliseconds this client's clock is ahead (negative: behind).
    pub skew_ms: i64,
    /// Lifetime of each access token the client is given, in seconds (its token provider
    /// signs a new one whenever the session asks).
    pub token_secs: u64,
    /// When the client's app moves to schema v2.
    pub schema: SchemaAt,
    /// Flexible sync plans: the `Task` query the client subscribes to when its file is new.
    pub query: TaskQuery,
    pub steps: Vec<Step>,
}

/// Everything one seed decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub seed: u64,
    /// The simulated network's message latency bounds, in milliseconds.
    pub latency_ms: (u64, u64),
    pub clients: Vec<ClientPlan>,
    /// Faults and the simulated millisecond they start at, in time order.
    pub faults: Vec<(u64, Fault)>,
    /// Whether every client is a flexible sync client of the server's `/flx` file (subscribed
    /// to all of `Journal` and `Entry` and to its `Task` query) instead of a partition-based
    /// one of `/sim`.
    pub flexible: bool,
    /// Whether a realm-core-style partition session watches the clients' file
    /// ([`Shape::realm`]).
    pub realm: bool,
}

/// Contended task ids.
pub const TASKS: i64 = 5;

/// How a plan is drawn.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub clients: usize,
    pub steps: usize,
    pub faults: usize,
    /// Whether plans roll transactions back over later local changesets: one drawn
    /// transaction in four gives up waiting for its verdict (the script writes on while it is
    /// pending, so a rejection rolls it back under those writes). On by default.
    pub rollbacks: bool,
    /// Whether a plan with a restore keeps its transactions (on by default; off, such a plan
    /// makes them ordinary writes, the shape some regression tests were found in).
    pub transactions_with_restores: bool,
    /// Flexible sync plans (off by default): the same draws as a partition-based plan, then
    /// each client's `Task` query and subscription changes (one pause in three becomes a
    /// [`Step::Subscribe`]). What flexible sync sessions do not do becomes what they do:
    /// transactions are ordinary writes (no TRANSACT on a flexible session) and restores are
    /// server crashes (no client reset for flexible sessions: `docs/flexible-sync.md`).
    pub flexible: bool,
    /// Plans with a realm-core-style session beside the clients (off by default): the same
    /// draws, the server also serves the App Services API and Realm's sync route, and a
    /// read-only peer (`realm.rs`) logs in and must end with the server's state. Beside
    /// partition-based clients it binds their file as the partition `"sim"` (server path
    /// `/"sim"`); beside flexible sync clients it is a flexible sync session of `/flx`
    /// subscribed to every object.
    pub realm: bool,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            clients: 3,
            steps: 24,
            faults: 6,
            rollbacks: true,
            transactions_with_restores: true,
            flexible: false,
            realm: false,
        }
    }
}

impl Plan {
    /// The plan seed `seed` draws.
    pub fn draw(seed: u64, shape: Shape) -> Plan {
        let mut d = Draw::new(seed);
        let min = 1 + d.below(5);
        let latency_ms = (min, min + d.below(60));
        let clients: Vec<ClientPlan> = (0..shape.clients)
            .map(|c| {
                let skew_ms = match d.below(4) {
                    0 => -(d.below(120_000) as i64),
                    1 => d.below(120_000) as i64,
                    _ => 0,
                };
                let token_secs = if d.chance(50) {
                    30 + d.below(120)
                } else {
                    86_400
                };
                let schema = match d.below(3) {
                    0 => SchemaAt::Start,
                    1 => SchemaAt::Reopen,
                    _ => SchemaAt::Never,
                };
                let steps = (0..shape.steps)
                    .map(|s| {
                        if d.chance(8) {
                            Step::WaitUpload
                        } else if d.chance(35) {
                            Step::Pause(d.below(5_000))
                        } else {
                            let ops = (0..d.below(4))
                                .map(|o| draw_op(&mut d, c, s, o as usize))
                                .collect();
                            let (journal_at, journal_add) =
                                (d.below(1 << 16) as u32, d.below(100) as i64 - 20);
                            if d.chance(12) {
                                // One in four gives up after 1 to 16 s and writes on, the
                                // verdict still pending. Taken from bits of `journal_at` (the
                                // list position uses it modulo the list's length) so that
                                // the plans drawn before keep every other draw.
                                let gives_up = shape.rollbacks && (journal_at >> 12) % 4 == 0;
                                Step::Transact {
                                    ops,
                                    journal_at,
                                    journal_add,
                                    wait_s: gives_up.then(|| 1 + u64::from(journal_at >> 8) % 16),
                                }
                            } else {
                                Step::Write {
                                    ops,
                                    journal_at,
                                    journal_add,
                                }
                            }
                        }
                    })
                    .collect();
                ClientPlan {
                    skew_ms,
                    token_secs,
                    schema,
                    query: TaskQuery::All,
                    steps,
                }
            })
            .collect();
        let mut faults: Vec<(u64, Fault)> = (0..shape.faults)
            .map(|_| {
                let at = d.below(25_000);
                let client = d.below(shape.clients as u64) as usize;
                let fault = match d.below(9) {
                    4 => Fault::DiskFull {
                        for_ms: 100 + d.below(8_000),
                    },
                    5 => Fault::Backup,
                    6 => Fault::RestoreServer {
                        down_ms: d.below(3_000),
                    },
                    0 => Fault::Partition {
                        client,
                        for_ms: 100 + d.below(10_000),
                    },
                    1 => Fault::Stall {
                        client,
                        for_ms: 100 + d.below(5_000),
                    },
                    2 | 8 => Fault::CrashServer {
                        down_ms: d.below(5_000),
                    },
                    _ => Fault::CrashClient {
                        client,
                        down_ms: d.below(5_000),
                    },
                };
                (at, fault)
            })
            .collect();
        faults.sort_by_key(|(at, _)| *at);
        // `Shape::transactions_with_restores` off: a plan with a restore makes its transactions
        // ordinary writes.
        let mut clients = clients;
        if !shape.transactions_with_restores
            && faults
                .iter()
                .any(|(_, f)| matches!(f, Fault::RestoreServer { .. }))
        {
            for client in &mut clients {
                for step in &mut client.steps {
                    if let Step::Transact {
                        ops,
                        journal_at,
                        journal_add,
                        ..
                    } = step
                    {
                        *step = Step::Write {
                            ops: std::mem::take(ops),
                            journal_at: *journal_at,
                            journal_add: *journal_add,
                        };
                    }
                }
            }
        }
        if shape.flexible {
            // Drawn after everything else, so a flexible plan's other draws are those of the
            // partition-based plan of the same seed.
            for client in &mut clients {
                client.query = TaskQuery::draw(&mut d);
                for step in &mut client.steps {
                    match step {
                        Step::Transact {
                            ops,
                            journal_at,
                            journal_add,
                            ..
                        } => {
                            *step = Step::Write {
                                ops: std::mem::take(ops),
                                journal_at: *journal_at,
                                journal_add: *journal_add,
                            }
                        }
                        Step::Pause(_) if d.chance(33) => {
                            *step = Step::Subscribe {
                                query: TaskQuery::draw(&mut d),
                                wait: d.chance(50),
                            }
                        }
                        _ => {}
                    }
                }
            }
            for (_, fault) in &mut faults {
                if let Fault::RestoreServer { down_ms } = fault {
                    *fault = Fault::CrashServer { down_ms: *down_ms };
                }
            }
        }
        Plan {
            seed,
            latency_ms,
            clients,
            faults,
            flexible: shape.flexible,
            realm: shape.realm,
        }
    }

    /// Smaller plans that may fail the same way: each fault removed, then each client's
    /// steps halved (the first or the second half), then each single step removed.
    pub fn smaller(&self) -> Vec<Plan> {
        let mut out = Vec::new();
        for i in 0..self.faults.len() {
            let mut p = self.clone();
            p.faults.remove(i);
            out.push(p);
        }
        for c in 0..self.clients.len() {
            let n = self.clients[c].steps.len();
            if n >= 2 {
                for half in [0..n / 2, n / 2..n] {
                    let mut p = self.clone();
                    p.clients[c].steps.drain(half);
                    out.push(p);
                }
            }
            for s in 0..n {
                let mut p = self.clone();
                p.clients[c].steps.remove(s);
                out.push(p);
            }
        }
        for c in 0..self.clients.len() {
            if self.clients[c].skew_ms != 0 {
                let mut p = self.clone();
                p.clients[c].skew_ms = 0;
                out.push(p);
            }
            if self.clients[c].schema != SchemaAt::Never {
                let mut p = self.clone();
                p.clients[c].schema = SchemaAt::Never;
                out.push(p);
            }
        }
        out
    }
}

fn draw_op(d: &mut Draw, client: usize, step: usize, n: usize) -> Op {
    let id = d.below(TASKS as u64) as i64;
    match d.below(21) {
        18 => Op::SetNote {
            id,
            note: format!("n{client}s{step}o{n}"),
        },
        19 => Op::SetRating {
            id,
            rating: d.below(10) as i64,
        },
        20 => Op::ClearMeta { id },
        16 | 17 => Op::SetCount {
            id,
            value: d.below(1_000) as i64,
        },
        10 => Op::LabelInsert {
            id,
            label: format!("l{}", d.below(4)),
        },
        11 => Op::LabelErase {
            id,
            label: format!("l{}", d.below(4)),
        },
        12 => Op::AttrSet {
            id,
            key: format!("k{}", d.below(3)),
            value: d.below(100) as i64,
        },
        13 => Op::AttrErase {
            id,
            key: format!("k{}", d.below(3)),
        },
        14 | 15 => Op::Link {
            id,
            to: d.chance(80).then(|| d.below(TASKS as u64) as i64),
        },
        0..=2 => Op::SetTitle {
            id,
            title: format!("c{client}s{step}o{n}"),
        },
        3 | 4 => Op::Add {
            id,
            amount: d.below(21) as i64 - 10,
        },
        5 => Op::Erase { id },
        6..=8 => Op::TagInsert {
            id,
            at: d.below(1 << 16) as u32,
            tag: format!("c{client}s{step}o{n}"),
        },
        _ => Op::TagErase {
            id,
            at: d.below(1 << 16) as u32,
        },
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} (latency {}..{} ms{})",
            self.seed,
            self.latency_ms.0,
            self.latency_ms.1,
            match (self.flexible, self.realm) {
                (true, true) => ", flexible sync, a realm-core-style observer",
                (true, false) => ", flexible sync",
                (false, true) => ", a realm-core-style observer",
                (false, false) => "",
            }
        )?;
        for (at, fault) in &self.faults {
            writeln!(f, "  at {at} ms: {fault:?}")?;
        }
        for (c, client) in self.clients.iter().enumerate() {
            writeln!(
                f,
                "  client c{c} (clock skew {} ms, tokens for {} s, schema v2: {:?}{}):",
                client.skew_ms,
                client.token_secs,
                client.schema,
                if self.flexible {
                    format!(", subscribed to Task {}", client.query.rql())
                } else {
                    String::new()
                }
            )?;
            for (s, step) in client.steps.iter().enumerate() {
                writeln!(f, "    {s}: {step:?}")?;
            }
        }
        Ok(())
    }
}
