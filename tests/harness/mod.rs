//! In-memory peers for convergence testing, shaped like realm-core's `test/peer.hpp` and
//! `FuzzTester`: one server and N clients, no network. Each peer has a [`State`] (the reference
//! applier) and a history; clients modify, upload one changeset, or download one changeset in
//! random interleavings, and after draining every client must equal the server.
//!
//! Randomness comes from an [`Entropy`], so the same driver runs from a seeded generator (the
//! tests) or from fuzzer bytes (`fuzz/fuzz_targets/ot_harness.rs`). Every step is logged as a
//! readable script, printed when a round fails.
#![allow(dead_code)]

#[cfg(feature = "server")]
pub mod server_client;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tandem::changeset::*;
use tandem::ot::ReciprocalHistory;
use tandem::state::{Element, Field, Key, State, TableSpec, Val};

/// A source of choices.
pub trait Entropy {
    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u32) -> u32;
    /// True with probability `percent`%.
    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
}

/// A seeded xorshift generator.
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        SeededRng((z ^ (z >> 31)) | 1)
    }
}

impl Entropy for SeededRng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 32) % u64::from(n.max(1))) as u32
    }
}

/// Choices read from fuzzer bytes; zeros once they run out.
pub struct ByteEntropy<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> ByteEntropy<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ByteEntropy { bytes, pos: 0 }
    }

    pub fn exhausted(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

impl Entropy for ByteEntropy<'_> {
    fn below(&mut self, n: u32) -> u32 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        u32::from(b) % n.max(1)
    }
}

/// A client peer.
#[derive(Clone)]
pub struct Client {
    pub ident: u64,
    pub state: State,
    /// Local changesets; version `i + 1` is `history[i]`.
    pub history: Vec<Changeset>,
    /// How many local changesets were sent to the server.
    pub uploaded: usize,
    /// The last server version integrated here.
    pub download_cursor: u64,
    pub reciprocal: ReciprocalHistory,
    pub clock: u64,
}

/// One server history entry.
#[derive(Clone)]
pub struct ServerEntry {
    pub changeset: Changeset,
    /// For each client, the last of its versions the server had integrated at this point.
    pub integrated: BTreeMap<u64, u64>,
}

/// Every order of three clients, for upload-order checks.
pub const ORDERS_OF_THREE: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// The server peer.
#[derive(Clone)]
pub struct Server {
    pub state: State,
    /// Version `i + 1` is `history[i]`.
    pub history: Vec<ServerEntry>,
    pub reciprocal: BTreeMap<u64, ReciprocalHistory>,
    pub integrated: BTreeMap<u64, u64>,
}

#[derive(Clone)]
pub struct Sim {
    pub server: Server,
    pub clients: Vec<Client>,
    /// The readable script of the round so far (only when `logging`).
    pub log: Vec<String>,
    pub logging: bool,
    /// `Some(n)`: the server merges an upload as tandem-server does, leaving out the concurrent
    /// changesets `ReciprocalHistory::needs_merge` says it cannot meet and merging the others
    /// in batches of at most `n`; `None`: with all of them at once.
    pub merge_batch: Option<usize>,
    /// How many concurrent changesets the `merge_batch` path left out of merges.
    pub left_out: usize,
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

impl Sim {
    pub fn new(clients: usize) -> Self {
        Sim {
            server: Server {
                state: State::new(),
                history: Vec::new(),
                reciprocal: BTreeMap::new(),
                integrated: BTreeMap::new(),
            },
            clients: (0..clients)
                .map(|i| Client {
                    ident: i as u64 + 2,
                    state: State::new(),
                    history: Vec::new(),
                    uploaded: 0,
                    download_cursor: 0,
                    reciprocal: ReciprocalHistory::new(),
                    clock: 0,
                })
                .collect(),
            log: Vec::new(),
            logging: false,
            merge_batch: None,
            left_out: 0,
        }
    }

    /// Gives every peer `setup`: the server integrates it as its next version (from file ident
    /// 1, a peer outside the simulation) and every client has downloaded it. Only before any
    /// client commits.
    pub fn seed(&mut self, mut setup: Changeset) -> Result<(), String> {
        let version = self.server.history.len() as u64 + 1;
        setup.meta = ChangesetMeta {
            version,
            last_integrated_remote_version: version - 1,
            origin_timestamp: 0,
            origin_file_ident: 1,
        };
        self.server
            .state
            .apply(&setup)
            .map_err(|e| format!("setup does not apply: {e}"))?;
        for client in &mut self.clients {
            client.state = self.server.state.clone();
            client.download_cursor = version;
        }
        self.server.history.push(ServerEntry {
            changeset: setup,
            integrated: self.server.integrated.clone(),
        });
        Ok(())
    }

    /// Client `c` commits `changeset` locally, made at `timestamp` on top of what it has
    /// downloaded so far.
    pub fn commit(
        &mut self,
        c: usize,
        mut changeset: Changeset,
        timestamp: u64,
    ) -> Result<(), String> {
        let client = &mut self.clients[c];
        client.clock = client.clock.max(timestamp);
        changeset.meta = ChangesetMeta {
            version: client.history.len() as u64 + 1,
            last_integrated_remote_version: client.download_cursor,
            origin_timestamp: timestamp,
            origin_file_ident: client.ident,
        };
        client.state.apply(&changeset).map_err(|e| {
            format!(
                "client {} cannot apply its own changeset: {e}\n{changeset}",
                client.ident
            )
        })?;
        if self.logging {
            self.log.push(format!(
                "client {} commits v{} (base sv{}, t={timestamp}):\n{}",
                client.ident,
                changeset.meta.version,
                client.download_cursor,
                indent(&changeset.to_string())
            ));
        }
        client.history.push(changeset);
        Ok(())
    }

    /// Client `c` makes one local transaction.
    pub fn modify(&mut self, c: usize, rng: &mut dyn Entropy) -> Result<(), String> {
        let client = &mut self.clients[c];
        client.clock += u64::from(rng.below(3));
        let mut changeset = generate(&client.state, rng);
        if changeset.is_empty() {
            return Ok(());
        }
        changeset.meta = ChangesetMeta {
            version: client.history.len() as u64 + 1,
            last_integrated_remote_version: client.download_cursor,
            origin_timestamp: client.clock,
            origin_file_ident: client.ident,
        };
        client
            .state
            .apply(&changeset)
            .map_err(|e| format!("generated changeset does not apply locally: {e}\n{changeset}"))?;
        let line = self.logging.then(|| {
            format!(
                "client {} commits v{} (base sv{}, t={}):\n{}",
                client.ident,
                changeset.meta.version,
                client.download_cursor,
                client.clock,
                indent(&changeset.to_string())
            )
        });
        client.history.push(changeset);
        self.log.extend(line);
        Ok(())
    }

    /// Client `c` uploads its next changeset and the server integrates it.
    pub fn upload_one(&mut self, c: usize) -> Result<bool, String> {
        let client = &mut self.clients[c];
        if client.uploaded >= client.history.len() {
            return Ok(false);
        }
        let original = client.history[client.uploaded].clone();
        client.uploaded += 1;
        let ident = client.ident;
        let base = original.meta.last_integrated_remote_version;
        let server = &mut self.server;
        let concurrent: Vec<&Changeset> = server.history[base as usize..]
            .iter()
            .filter(|e| e.changeset.meta.origin_file_ident != ident)
            .map(|e| &e.changeset)
            .collect();
        let mut incoming = [original.clone()];
        let reciprocal = server.reciprocal.entry(ident).or_default();
        let failed = |e: tandem::ot::TransformError| {
            format!(
                "server cannot integrate v{} of {ident}: {e}",
                original.meta.version
            )
        };
        match self.merge_batch {
            None => reciprocal
                .integrate(&mut incoming, &concurrent)
                .map_err(failed)?,
            Some(n) => {
                let reach = tandem::ot::MergeReach::of(&incoming);
                let mut pending: Vec<&Changeset> = Vec::new();
                for local in concurrent {
                    if !reciprocal.needs_merge(&reach, local) {
                        self.left_out += 1;
                        continue;
                    }
                    if pending.len() >= n {
                        reciprocal
                            .integrate(&mut incoming, &pending)
                            .map_err(failed)?;
                        pending.clear();
                    }
                    pending.push(local);
                }
                reciprocal
                    .integrate(&mut incoming, &pending)
                    .map_err(failed)?;
            }
        }
        reciprocal.forget_through(base);
        let [mut integrated] = incoming;
        server.state.apply(&integrated).map_err(|e| {
            format!(
                "server cannot apply v{} of {ident} as transformed: {e}\n{integrated}\nserver state:\n{}",
                original.meta.version, server.state
            )
        })?;
        let version = server.history.len() as u64 + 1;
        integrated.meta.version = version;
        server.integrated.insert(ident, original.meta.version);
        if self.logging {
            self.log.push(format!(
                "server integrates v{} of client {ident} as sv{version}:\n{}",
                original.meta.version,
                indent(&integrated.to_string())
            ));
        }
        server.history.push(ServerEntry {
            changeset: integrated,
            integrated: server.integrated.clone(),
        });
        Ok(true)
    }

    /// Client `c` downloads and integrates the next server version.
    pub fn download_one(&mut self, c: usize) -> Result<bool, String> {
        let client = &mut self.clients[c];
        let server = &self.server;
        if client.download_cursor as usize >= server.history.len() {
            return Ok(false);
        }
        let entry = &server.history[client.download_cursor as usize];
        client.download_cursor += 1;
        let sv = client.download_cursor;
        if entry.changeset.meta.origin_file_ident == client.ident {
            if self.logging {
                self.log
                    .push(format!("client {} skips sv{sv} (its own)", client.ident));
            }
            return Ok(true);
        }
        let seen = entry.integrated.get(&client.ident).copied().unwrap_or(0);
        let concurrent: Vec<&Changeset> = client.history[seen as usize..].iter().collect();
        let mut incoming = [entry.changeset.clone()];
        client
            .reciprocal
            .integrate(&mut incoming, &concurrent)
            .map_err(|e| format!("client {} cannot integrate sv{sv}: {e}", client.ident))?;
        client.reciprocal.forget_through(seen);
        let [transformed] = incoming;
        client.state.apply(&transformed).map_err(|e| {
            format!(
                "client {} cannot apply sv{sv} as transformed: {e}\n{transformed}\nclient state:\n{}",
                client.ident, client.state
            )
        })?;
        if self.logging {
            self.log.push(format!(
                "client {} integrates sv{sv} (it had v{seen}) as:\n{}",
                client.ident,
                indent(&transformed.to_string())
            ));
        }
        Ok(true)
    }

    /// Each client of `order` uploads all its changesets, in that order; with `eager`, every
    /// client downloads everything the server has after each upload. Then everything is
    /// drained and every client must equal the server.
    pub fn sync_in_order(&mut self, order: &[usize], eager: bool) -> Result<(), String> {
        for &c in order {
            while self.upload_one(c)? {}
            for d in 0..self.clients.len() {
                while eager && self.download_one(d)? {}
            }
        }
        self.drain()?;
        self.check_converged()
    }

    /// Uploads and downloads everything.
    pub fn drain(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            while self.upload_one(c)? {}
        }
        for c in 0..self.clients.len() {
            while self.download_one(c)? {}
        }
        Ok(())
    }

    /// Every client equals the server, in full.
    pub fn check_converged(&self) -> Result<(), String> {
        for client in &self.clients {
            if client.state != self.server.state {
                return Err(format!(
                    "client {} diverged from the server\n--- server\n{}--- client {}\n{}",
                    client.ident, self.server.state, client.ident, client.state
                ));
            }
        }
        Ok(())
    }

    /// One round: `modifications` random modifications interleaved with random uploads and
    /// downloads, then drain and compare.
    pub fn random_round(
        &mut self,
        rng: &mut dyn Entropy,
        modifications: usize,
    ) -> Result<(), String> {
        let n = self.clients.len() as u32;
        let mut done = 0;
        let mut steps = 0;
        while done < modifications && steps < modifications * 8 {
            steps += 1;
            let c = rng.below(n) as usize;
            match rng.below(3) {
                0 => {
                    self.modify(c, rng)?;
                    done += 1;
                }
                1 => {
                    self.upload_one(c)?;
                }
                _ => {
                    self.download_one(c)?;
                }
            }
        }
        self.drain()?;
        self.check_converged()
    }

    pub fn script(&self) -> String {
        let mut out = String::new();
        for line in &self.log {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Random transactions over a fixed catalog, so that concurrent schema additions agree.

struct ColumnDef {
    table: &'static str,
    name: &'static str,
    column_type: ColDef,
    nullable: bool,
    collection: ColumnCollection,
}

#[derive(Clone, Copy)]
enum ColDef {
    Plain(PayloadType),
    Mixed,
    Link(&'static str),
}

const TABLES: [&str; 3] = ["A", "B", "E"];

const COLUMNS: &[ColumnDef] = &[
    col(
        "A",
        "i",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::Single,
    ),
    col(
        "A",
        "n",
        ColDef::Plain(PayloadType::Int),
        true,
        ColumnCollection::Single,
    ),
    col(
        "A",
        "s",
        ColDef::Plain(PayloadType::String),
        false,
        ColumnCollection::Single,
    ),
    col("A", "m", ColDef::Mixed, true, ColumnCollection::Single),
    col(
        "A",
        "l",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::List,
    ),
    col(
        "A",
        "st",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::Set,
    ),
    col(
        "A",
        "d",
        ColDef::Plain(PayloadType::Int),
        true,
        ColumnCollection::Dictionary {
            key_type: PayloadType::String,
        },
    ),
    col("A", "lk", ColDef::Link("B"), true, ColumnCollection::Single),
    col("A", "ll", ColDef::Link("B"), false, ColumnCollection::List),
    col("A", "e", ColDef::Link("E"), true, ColumnCollection::Single),
    col("A", "el", ColDef::Link("E"), false, ColumnCollection::List),
    col(
        "B",
        "i",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::Single,
    ),
    col(
        "B",
        "l",
        ColDef::Plain(PayloadType::String),
        false,
        ColumnCollection::List,
    ),
    col("B", "lk", ColDef::Link("A"), true, ColumnCollection::Single),
    col(
        "E",
        "x",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::Single,
    ),
    col(
        "E",
        "y",
        ColDef::Plain(PayloadType::Int),
        false,
        ColumnCollection::List,
    ),
];

const fn col(
    table: &'static str,
    name: &'static str,
    column_type: ColDef,
    nullable: bool,
    collection: ColumnCollection,
) -> ColumnDef {
    ColumnDef {
        table,
        name,
        column_type,
        nullable,
        collection,
    }
}

const DICT_KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn add_table(cs: &mut Changeset, name: &str) -> Instruction {
    let table = cs.intern(name);
    let kind = match name {
        "E" => TableKind::Embedded,
        "A" => TableKind::TopLevel(PrimaryKeySpec {
            field: cs.intern("_id"),
            key_type: PayloadType::Int,
            nullable: false,
        }),
        _ => TableKind::TopLevel(PrimaryKeySpec {
            field: cs.intern("_id"),
            key_type: PayloadType::String,
            nullable: false,
        }),
    };
    Instruction::AddTable(AddTable { table, kind })
}

fn add_column(cs: &mut Changeset, def: &ColumnDef) -> Instruction {
    let column_type = match def.column_type {
        ColDef::Plain(t) => ColumnType::Value(t),
        ColDef::Mixed => ColumnType::Mixed,
        ColDef::Link(target) => ColumnType::Link {
            target_table: cs.intern(target),
        },
    };
    Instruction::AddColumn(AddColumn {
        table: cs.intern(def.table),
        field: cs.intern(def.name),
        column_type,
        nullable: def.nullable,
        collection: def.collection,
    })
}

fn wire_key(cs: &mut Changeset, key: &Key) -> PrimaryKey {
    match key {
        Key::Int(v) => PrimaryKey::Int(*v),
        Key::String(s) => PrimaryKey::String(cs.intern(s)),
        _ => PrimaryKey::Null,
    }
}

fn random_key(table: &str, rng: &mut dyn Entropy) -> Key {
    let k = rng.below(6);
    if table == "A" {
        Key::Int(i64::from(k))
    } else {
        Key::String(format!("k{k}"))
    }
}

fn pick<'a, T>(items: &'a [T], rng: &mut dyn Entropy) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.below(items.len() as u32) as usize])
    }
}

/// A path into `field` of object (table, key).
fn path(
    cs: &mut Changeset,
    table: &str,
    key: &Key,
    field: &str,
    steps: Vec<PathElement>,
) -> FieldPath {
    FieldPath {
        table: cs.intern(table),
        object: wire_key(cs, key),
        field: cs.intern(field),
        path: steps.into(),
    }
}

fn has_column(state: &State, table: &str, name: &str) -> bool {
    state
        .schemas
        .get(table)
        .is_some_and(|s| s.columns.contains_key(name))
}

fn link_value(cs: &mut Changeset, target: &str, rng: &mut dyn Entropy) -> Payload {
    let key = random_key(target, rng);
    Payload::Link(Link {
        target_table: cs.intern(target),
        target: wire_key(cs, &key),
    })
}

/// One random instruction valid on `state`, built into `cs`. `None` when the chosen kind of
/// operation has nothing to act on.
fn random_instruction(
    state: &State,
    cs: &mut Changeset,
    rng: &mut dyn Entropy,
) -> Option<Instruction> {
    let tables: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| state.schemas.contains_key(*t))
        .collect();
    let missing_tables: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| !state.schemas.contains_key(*t))
        .collect();
    if tables.is_empty() || rng.chance(2) {
        let name = pick(&missing_tables, rng)?;
        return Some(add_table(cs, name));
    }
    let missing_columns: Vec<&ColumnDef> = COLUMNS
        .iter()
        .filter(|d| state.schemas.contains_key(d.table) && !has_column(state, d.table, d.name))
        .filter(|d| match d.column_type {
            ColDef::Link(t) => state.schemas.contains_key(t),
            _ => true,
        })
        .collect();
    if !missing_columns.is_empty() && rng.chance(8) {
        let def = pick(&missing_columns, rng)?;
        return Some(add_column(cs, def));
    }
    let top: Vec<&str> = tables.iter().copied().filter(|t| *t != "E").collect();
    let table = *pick(&top, rng)?;
    let objects: Vec<&Key> = state.objects.get(table)?.keys().collect();
    let roll = rng.below(100);
    if objects.is_empty() || roll < 8 {
        let key = random_key(table, rng);
        return Some(Instruction::CreateObject {
            table: cs.intern(table),
            object: wire_key(cs, &key),
        });
    }
    let key = (*pick(&objects, rng)?).clone();
    if roll < 10 {
        return Some(Instruction::EraseObject {
            table: cs.intern(table),
            object: wire_key(cs, &key),
        });
    }
    let object = state.object(table, &key)?;
    let names: Vec<&String> = object.fields.keys().collect();
    let name = pick(&names, rng)?.as_str();
    let field = object.fields.get(name)?;
    let is_default = rng.chance(10);
    match (table, name, field) {
        (_, "i" | "n", Field::Value(v)) => {
            if rng.chance(40) && matches!(v, Val::Int(_) | Val::Null) {
                let amount = i64::from(rng.below(5)) - 2;
                return Some(Instruction::AddInteger(AddInteger {
                    path: path(cs, table, &key, name, vec![]),
                    value: amount,
                }));
            }
            let value = if name == "n" && rng.chance(25) {
                Payload::Null
            } else {
                Payload::Int(i64::from(rng.below(100)))
            };
            Some(update(
                path(cs, table, &key, name, vec![]),
                value,
                is_default,
            ))
        }
        (_, "s", _) => {
            let value = Payload::String(format!("s{}", rng.below(50)).into());
            Some(update(
                path(cs, table, &key, name, vec![]),
                value,
                is_default,
            ))
        }
        (_, "m", Field::Value(v)) => {
            if matches!(v, Val::Int(_)) && rng.chance(30) {
                return Some(Instruction::AddInteger(AddInteger {
                    path: path(cs, table, &key, name, vec![]),
                    value: 1,
                }));
            }
            let value = match rng.below(4) {
                0 => Payload::Null,
                1 => Payload::Int(i64::from(rng.below(10))),
                2 => Payload::String(format!("m{}", rng.below(10)).into()),
                _ => Payload::Bool(rng.chance(50)),
            };
            Some(update(
                path(cs, table, &key, name, vec![]),
                value,
                is_default,
            ))
        }
        (_, "lk", _) => {
            let target = if table == "A" { "B" } else { "A" };
            let value = if rng.chance(20) {
                Payload::Null
            } else {
                link_value(cs, target, rng)
            };
            Some(update(
                path(cs, table, &key, name, vec![]),
                value,
                is_default,
            ))
        }
        (_, "l" | "ll", Field::List(items)) => {
            let element = |cs: &mut Changeset, rng: &mut dyn Entropy| match (table, name) {
                ("A", "l") => Payload::Int(i64::from(rng.below(100))),
                ("B", "l") => Payload::String(format!("e{}", rng.below(100)).into()),
                _ => link_value(cs, "B", rng),
            };
            let list = path(cs, table, &key, name, vec![]);
            list_instruction(cs, rng, list, items.len(), element)
        }
        (_, "el", Field::List(items)) => {
            let len = items.len() as u32;
            if len > 0 && rng.chance(40) {
                // Work inside one embedded element.
                let i = rng.below(len);
                let inner = path(cs, table, &key, name, vec![PathElement::Index(i)]);
                let x = cs.intern("x");
                let y = cs.intern("y");
                let Some(Element::Embedded(e)) = items.get(i as usize) else {
                    return None;
                };
                return embedded_instruction(cs, rng, inner, e, x, y);
            }
            let list = path(cs, table, &key, name, vec![]);
            list_instruction(cs, rng, list, items.len(), |_, _| Payload::ObjectValue)
        }
        (_, "e", Field::Embedded(embedded)) => match embedded {
            Some(e) if !rng.chance(15) => {
                let inner = path(cs, table, &key, name, vec![]);
                let x = cs.intern("x");
                let y = cs.intern("y");
                embedded_instruction(cs, rng, inner, e, x, y)
            }
            Some(_) => Some(update(
                path(cs, table, &key, name, vec![]),
                Payload::Null,
                false,
            )),
            None => Some(update(
                path(cs, table, &key, name, vec![]),
                Payload::ObjectValue,
                false,
            )),
        },
        (_, "st", Field::Set(_)) => {
            let set = path(cs, table, &key, name, vec![]);
            if rng.chance(5) {
                return Some(Instruction::Clear(Clear {
                    path: set,
                    collection_type: CollectionType::Set,
                }));
            }
            let value = Payload::Int(i64::from(rng.below(6)));
            Some(if rng.chance(60) {
                Instruction::SetInsert(SetValue { path: set, value })
            } else {
                Instruction::SetErase(SetValue { path: set, value })
            })
        }
        (_, "d", Field::Dictionary(entries)) => {
            if rng.chance(5) {
                return Some(Instruction::Clear(Clear {
                    path: path(cs, table, &key, name, vec![]),
                    collection_type: CollectionType::Dictionary,
                }));
            }
            let k = DICT_KEYS[rng.below(DICT_KEYS.len() as u32) as usize];
            let value = if entries.contains_key(k) && rng.chance(35) {
                Payload::Erased
            } else if rng.chance(10) {
                Payload::Null
            } else {
                Payload::Int(i64::from(rng.below(20)))
            };
            let k = cs.intern(k);
            Some(update(
                path(cs, table, &key, name, vec![PathElement::Key(k)]),
                value,
                false,
            ))
        }
        _ => None,
    }
}

fn update(path: FieldPath, value: Payload, is_default: bool) -> Instruction {
    let element = path.last_index().is_some();
    Instruction::Update(Update {
        path,
        value,
        is_default: is_default && !element,
        prior_size: 0,
    })
}

/// An instruction on a list of `len` elements at `list` (path to the list field).
fn list_instruction(
    cs: &mut Changeset,
    rng: &mut dyn Entropy,
    list: FieldPath,
    len: usize,
    mut element: impl FnMut(&mut Changeset, &mut dyn Entropy) -> Payload,
) -> Option<Instruction> {
    let len = len as u32;
    let at = |mut p: FieldPath, i: u32| {
        p.path.push(PathElement::Index(i));
        p
    };
    let roll = rng.below(100);
    if len == 0 || roll < 40 {
        let i = rng.below(len + 1);
        let value = element(cs, rng);
        return Some(Instruction::ArrayInsert(ArrayInsert {
            path: at(list, i),
            value,
            prior_size: len,
        }));
    }
    if roll < 43 {
        return Some(Instruction::Clear(Clear {
            path: list,
            collection_type: CollectionType::List,
        }));
    }
    if roll < 65 {
        let i = rng.below(len);
        return Some(Instruction::ArrayErase(ArrayErase {
            path: at(list, i),
            prior_size: len,
        }));
    }
    if roll < 82 && len >= 2 {
        let from = rng.below(len);
        let to = rng.below(len);
        return Some(Instruction::ArrayMove(ArrayMove {
            path: at(list, from),
            to,
            prior_size: len,
        }));
    }
    let i = rng.below(len);
    let value = element(cs, rng);
    if matches!(value, Payload::ObjectValue) {
        return None;
    }
    Some(Instruction::Update(Update {
        path: at(list, i),
        value,
        is_default: false,
        prior_size: len,
    }))
}

/// An instruction inside an embedded object reached by `object_path`.
fn embedded_instruction(
    cs: &mut Changeset,
    rng: &mut dyn Entropy,
    object_path: FieldPath,
    object: &tandem::state::Object,
    x: InternString,
    y: InternString,
) -> Option<Instruction> {
    let with = |mut p: FieldPath, step: PathElement| {
        p.path.push(step);
        p
    };
    match rng.below(3) {
        0 => Some(Instruction::AddInteger(AddInteger {
            path: with(object_path, PathElement::Key(x)),
            value: 1,
        })),
        1 => Some(update(
            with(object_path, PathElement::Key(x)),
            Payload::Int(i64::from(rng.below(50))),
            false,
        )),
        _ => {
            let len = match object.fields.get("y") {
                Some(Field::List(items)) => items.len(),
                _ => return None,
            };
            let list = with(object_path, PathElement::Key(y));
            list_instruction(cs, rng, list, len, |_, rng| {
                Payload::Int(i64::from(rng.below(100)))
            })
        }
    }
}

/// A random transaction of one to three instructions, valid on `state`.
pub fn generate(state: &State, rng: &mut dyn Entropy) -> Changeset {
    let mut working = state.clone();
    let mut txn = Changeset::new();
    let count = 1 + rng.below(3);
    for _ in 0..count {
        let mut single = Changeset::new();
        let Some(instruction) = random_instruction(&working, &mut single, rng) else {
            continue;
        };
        single.push(instruction.clone());
        if working.apply(&single).is_err() {
            // The generator only aims at valid operations; skip the rare miss (for example a
            // link column whose embedded target is not known yet).
            continue;
        }
        let mut moved = instruction;
        moved.map_strings(&mut |s| txn.intern(single.string(s).unwrap_or("")));
        txn.push(moved);
    }
    txn
}

/// For tests that look at object existence.
pub fn is_top_level(state: &State, table: &str) -> bool {
    matches!(
        state.schemas.get(table).map(|s| &s.spec),
        Some(TableSpec::TopLevel { .. })
    )
}
