//! Flexible sync on one server file: subscription sets evaluated over the state tables, each
//! client file's view, bootstraps, and steady-state downloads filtered to a view.
//!
//! Realm's flexible sync (`realm-wire-compat.md` section 4) sends a client only the objects
//! its subscriptions match. Here a subscription set is one query per class in realm-core's
//! serialized query language, compiled by the store's query compiler (`crate::store`) to SQL
//! over the server's state tables (`super::super::state`): nothing is loaded into memory to be
//! filtered, and a membership test is one indexed lookup.
//!
//! **Views.** What a client file holds is recorded in the state file, table `_flx_view`: one
//! row per object and stay in the view, with the download cursor and subscription version of
//! the message that brought it in (`entered_at`, `entered_version`) and of the one that took it
//! out (`left_at`, `left_version`; null while it stays), and `state_version`, the server version
//! of the copy sent. A client that reconnects reports its cursor and active subscription
//! version in IDENT; rows newer than both are rolled back ([`ServerFile::flx_resume`]), so the
//! view always matches what the client integrated, even when messages were lost.
//!
//! **Steady state** ([`ServerFile::flx_download`]): for a batch of history, every object its
//! changesets touch (the client's own changesets included: they can move objects in or out) is
//! classified by whether it was in the view and whether it matches now. Instructions on objects
//! that stay are forwarded in their changesets as they are (schema instructions always are);
//! objects that enter are sent whole (every field, collections cleared first,
//! `crate::state::snapshot`) and objects that leave get `EraseObject`, in one changeset made by
//! the server at the end of the batch. Instructions on an object in changesets at or before the
//! version of the copy sent are skipped, as that copy holds them.
//!
//! **History before copies.** A copy made by the server is not in the history the server
//! merges the client's uploads against, so it must not meet what the client has not uploaded
//! yet: a copy's list clear beats the client's own concurrent insert, its one timestamp is not
//! the timestamps of the writes it sums up, and its made-up erasure beats the client's own
//! creating the object again. The flexible sync simulation seeds (`docs/testing.md`) found all
//! three. So an object gets a copy only when its history cannot reach the client instead:
//! - an object that did not exist at the batch's start (it was *born* in the batch, and nothing
//!   touched it before) is forwarded by its history, which merges by OT as it does on the
//!   server. The state records the server version each object was born at (`_flx_born`,
//!   `ServerState::born`), from the file's first subscription set on;
//! - an object of the view erased in the batch (and not created again) leaves the view by the
//!   history that erased it, forwarded as it is; one erased after the batch stays until then.
//!
//! **Bootstraps** ([`ServerFile::flx_bootstrap`]) run when the client's cursor is at the latest
//! version: objects the new set matches and the view lacks are sent whole, objects of the view
//! it no longer matches are erased, all at the latest server version, in changesets of at most
//! [`OBJECTS_PER_CHANGESET`] objects, the first one starting with the schema. There is always
//! at least one changeset (realm-core needs one: `realm-client-spike.md` section 5).
//!
//! Not served (answered with QUERY_ERROR 226 by the session): link paths (`a.b`), `SORT`,
//! `DISTINCT` and `LIMIT`, as Realm's flexible sync refused them; and whatever the query
//! compiler refuses. Asymmetric classes never enter a view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::{sql_err, state_err, DownloadPoint, HistoryRow, Integrated, ServerFile};
use crate::changeset::{Changeset, ChangesetMeta, Instruction};
use crate::protocol::{DownloadEntry, ErrorCode, ProtocolError, UploadEntry};
use crate::server::realm::rules::{FlxRules, UserVars};
use crate::state::{Key, Object, Schemas, TableSpec};
use crate::store::tables;

/// Objects per bootstrap changeset: changesets of a few hundred KiB, which realm-core stages
/// and integrates in 1 MiB chunks.
pub const OBJECTS_PER_CHANGESET: usize = 1_000;

/// The server's own client file (for compensating writes), created in every server file.
pub(crate) const SERVER_WRITER: &str =
    "CREATE TABLE IF NOT EXISTS server_writer (ident INTEGER NOT NULL)";

/// The view and subscription tables, created in every state file.
pub(crate) const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS _flx_view (
        client INTEGER NOT NULL,
        class TEXT NOT NULL,
        pk BLOB NOT NULL,
        entered_at INTEGER NOT NULL,
        entered_version INTEGER NOT NULL,
        left_at INTEGER,
        left_version INTEGER,
        state_version INTEGER NOT NULL,
        PRIMARY KEY (client, class, pk, entered_at, entered_version)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _flx_query (
        client INTEGER NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        bootstrapped_at INTEGER NOT NULL,
        PRIMARY KEY (client, version)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _flx_born (
        class TEXT NOT NULL,
        pk BLOB NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (class, pk)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS _flx_erased (
        class TEXT NOT NULL,
        pk BLOB NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (class, pk)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS _flx_erased_by_version ON _flx_erased (version);";

/// A client's subscription set: its version and, per class, the query (realm-core's
/// serialized form, `realm-wire-compat.md` section 4.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The set's version.
    pub version: u64,
    /// Class name to query; classes absent match nothing.
    pub queries: BTreeMap<String, String>,
    /// The body as the client sent it.
    pub body: String,
}

impl Subscription {
    /// Parses a set's body: `{}` or `{"<Class>":"<query>", ...}` (section 4.2). The error is
    /// the text of a QUERY_ERROR.
    pub fn parse(version: u64, body: &str) -> Result<Subscription, String> {
        let value: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| format!("the subscription set is not JSON: {e}"))?;
        let serde_json::Value::Object(map) = value else {
            return Err("the subscription set is not a JSON object".into());
        };
        let mut queries = BTreeMap::new();
        for (class, query) in map {
            let serde_json::Value::String(query) = query else {
                return Err(format!("the query of class {class} is not a string"));
            };
            queries.insert(class, query);
        }
        Ok(Subscription {
            version,
            queries,
            body: body.to_owned(),
        })
    }

    /// The set as `user` may see it: each class's query AND its read filter (`rules`); a class
    /// the user may not read is left out. The body stays the client's.
    pub fn restricted(&self, rules: &FlxRules, user: &UserVars) -> Subscription {
        let mut queries = BTreeMap::new();
        for (class, query) in &self.queries {
            match rules.class(class).read.for_user(user) {
                None => {}
                Some(read) if read == "TRUEPREDICATE" => {
                    queries.insert(class.clone(), query.clone());
                }
                Some(read) => {
                    queries.insert(class.clone(), format!("({query}) AND ({read})"));
                }
            }
        }
        Subscription {
            version: self.version,
            queries,
            body: self.body.clone(),
        }
    }

    /// Checks that every query of the set compiles against `schemas` and is one flexible sync
    /// serves. Classes the server does not have yet pass (they match nothing until they exist).
    pub fn check(&self, schemas: &Schemas) -> Result<(), String> {
        for (class, query) in &self.queries {
            compile(schemas, class, query)?;
        }
        Ok(())
    }
}

/// One class's query compiled to the SQL filter over its table (aliased `o`), with its
/// parameters; `None` when the class has no objects to match (absent, embedded or asymmetric).
struct Filter {
    /// `FROM <table> o WHERE <filter>`.
    from_where: String,
    filter: String,
    params: Vec<rusqlite::types::Value>,
    /// Whether one object matches: `SELECT 1 FROM <table> o WHERE <its primary key is
    /// ?n> AND (<filter>)`, `?n` after `params` ([`ServerFile::flx_matches`]). Built once, so a
    /// fan-out's thousand lookups format no SQL and find it in the statement cache by the
    /// same text.
    match_sql: String,
    /// `match_sql` and [`ServerFile::flx_in_view`] in one statement (one step instead of two
    /// for each object a download touches, [`ServerFile::flx_view_and_match`]): `SELECT
    /// (<the copy's state_version in the view of client ?n+2, class ?n+3, view key ?n+4>),
    /// EXISTS (<match_sql>)`.
    view_match_sql: String,
}

fn compile(schemas: &Schemas, class: &str, query: &str) -> Result<Option<Filter>, String> {
    match schemas.get(class).map(|s| &s.spec) {
        None => return Ok(None),
        Some(TableSpec::Embedded) => {
            return Err(format!(
                "{class} is an embedded class: subscribe to its parent class"
            ))
        }
        Some(TableSpec::TopLevel { asymmetric, .. }) if *asymmetric => return Ok(None),
        Some(TableSpec::TopLevel { .. }) => {}
    }
    let compiled = tables::compile(schemas, class, query, &[])
        .map_err(|e| format!("query on {class}: {e}"))?;
    if let Some(why) = tables::Unsubscribable::of(&compiled) {
        return Err(format!("query on {class}: {why}"));
    }
    let filter = compiled.filter().to_owned();
    let n = compiled.params.len();
    let match_sql = format!(
        "SELECT 1 FROM {} o WHERE {} AND ({filter})",
        tables::object_table(class),
        tables::key_matches("o._pk", "IS", &format!("?{}", n + 1)),
    );
    let view_match_sql = format!(
        "SELECT (SELECT state_version FROM _flx_view
                 WHERE client = ?{} AND class = ?{} AND pk = ?{} AND left_at IS NULL),
                EXISTS ({match_sql})",
        n + 2,
        n + 3,
        n + 4,
    );
    Ok(Some(Filter {
        from_where: compiled.matches().to_owned(),
        filter,
        params: compiled.params,
        match_sql,
        view_match_sql,
    }))
}

/// Subscription queries compiled against one schema generation
/// ([`ServerState::schema_generation`](crate::server::state::ServerState::schema_generation)),
/// by class and query text. Every session's DOWNLOAD filters the changesets it is sent through
/// its queries; sessions share texts (the same subscription on many devices) and a session
/// downloads many times between schema changes, so each text is compiled once per schema.
/// Emptied when the generation moves (a schema change, a failed apply, a rollback) or before
/// it would pass [`FilterCache::MAX_ENTRIES`] entries or [`FilterCache::MAX_BYTES`] of text;
/// a text longer than [`FilterCache::MAX_TEXT`] is compiled each time, never kept.
#[derive(Default)]
pub(crate) struct FilterCache {
    generation: u64,
    /// Class, then query text (nested, so that a lookup needs no owned key).
    compiled: HashMap<String, HashMap<String, Option<Arc<Filter>>>>,
    entries: usize,
    /// Bytes of class names, query texts and compiled SQL kept.
    bytes: usize,
}

impl FilterCache {
    /// Compiled queries kept at most.
    const MAX_ENTRIES: usize = 4096;
    /// Bytes kept at most (see `bytes`).
    const MAX_BYTES: usize = 16 << 20;
    /// Longer query texts are not kept.
    const MAX_TEXT: usize = 64 << 10;

    fn clear(&mut self) {
        self.compiled.clear();
        self.entries = 0;
        self.bytes = 0;
    }
}

/// A session's compiled filters of its active set, by class (`ServerFile::steady_filters`):
/// resolved through the file's `FilterCache` once per set and schema generation, then kept
/// between the session's downloads. (Looked up again on every download, the texts' hashing
/// and the map built for them were 14% of a flexible download in a 1,000-session fan-out,
/// `benches/flx.rs`.) Sets whose query texts add up to more than `FilterCache::MAX_TEXT`
/// are resolved again for each download, as the cache compiles such a text each time: a
/// session keeps no more compiled SQL than the cache would. Known by the set's version: start
/// a session with `SteadyFilters::default()`, and start again whenever its active set is
/// replaced by one of the same version with other queries (a session's sets never are: each
/// has its own version).
#[derive(Default)]
pub struct SteadyFilters {
    /// The schema generation and the set version they were resolved for; `None`: none yet.
    /// (Not the queries themselves: comparing their texts on every download cost as much as
    /// the lookups this saves.)
    resolved_for: Option<(u64, u64)>,
    filters: BTreeMap<String, Option<Arc<Filter>>>,
}

/// Which session serves each flexible sync client file: the one whose IDENT came last. A
/// client that reconnects while its old connection is still open on the server (a partition
/// leaves it half-open until the idle timeout) has two sessions for one file; both would
/// build downloads from their own cursors and record them in the one view of that file, and
/// the view would then say the client holds what only the dead connection was sent (found by
/// the flexible sync simulation, `docs/testing.md`). So the older session sends nothing more.
#[derive(Default)]
pub(crate) struct Claims {
    /// Client file ident to the claim of the session serving it.
    owners: HashMap<u64, u64>,
    next: u64,
}

impl ServerFile {
    /// Makes the calling session (at IDENT of `client`) the one that serves that client file;
    /// returns its claim, for [`ServerFile::flx_serves`] and [`ServerFile::flx_release`].
    pub fn flx_claim(&mut self, client: u64) -> u64 {
        let claims = &mut self.flx_claims;
        claims.next += 1;
        claims.owners.insert(client, claims.next);
        claims.next
    }

    /// Whether the session holding `claim` still serves `client` (no later IDENT of it).
    pub fn flx_serves(&self, client: u64, claim: u64) -> bool {
        self.flx_claims.owners.get(&client) == Some(&claim)
    }

    /// Forgets `client`'s claim when the session holding it ends (if no later one replaced it).
    pub fn flx_release(&mut self, client: u64, claim: u64) {
        if self.flx_serves(client, claim) {
            self.flx_claims.owners.remove(&client);
        }
    }

    /// The compiled filter of each class of `query` (`None`: matches nothing, logged once per
    /// schema generation if the query no longer compiles), from `memo` if it was resolved for
    /// the same set version and schema generation ([`SteadyFilters`]).
    fn steady_filters<'m>(
        &mut self,
        query: &Subscription,
        client: u64,
        memo: &'m mut SteadyFilters,
    ) -> &'m BTreeMap<String, Option<Arc<Filter>>> {
        let generation = self.state.schema_generation();
        if memo.resolved_for != Some((generation, query.version)) {
            memo.filters = self.resolve_filters(query, client);
            // Kept only within the file cache's bound on a text: a longer one is compiled for
            // each download, as the cache does, not held for the session's life.
            let small =
                query.queries.values().map(String::len).sum::<usize>() <= FilterCache::MAX_TEXT;
            memo.resolved_for = small.then_some((generation, query.version));
        }
        &memo.filters
    }

    /// [`ServerFile::steady_filters`] through the file's [`FilterCache`].
    fn resolve_filters(
        &mut self,
        query: &Subscription,
        client: u64,
    ) -> BTreeMap<String, Option<Arc<Filter>>> {
        let generation = self.state.schema_generation();
        let cache = &mut self.filters;
        if cache.generation != generation {
            cache.generation = generation;
            cache.clear();
        }
        let schemas = self.state.schemas();
        let mut out = BTreeMap::new();
        for (class, text) in &query.queries {
            let known = cache
                .compiled
                .get(class.as_str())
                .and_then(|q| q.get(text.as_str()));
            let filter = match known {
                Some(filter) => filter.clone(),
                None => {
                    let filter = match compile(schemas, class, text) {
                        Ok(filter) => filter.map(Arc::new),
                        Err(why) => {
                            tracing::warn!(client, %why, "a subscription no longer compiles: it matches nothing");
                            None
                        }
                    };
                    let size = class.len()
                        + text.len()
                        + filter.as_ref().map_or(0, |f| {
                            f.from_where.len()
                                + f.filter.len()
                                + f.match_sql.len()
                                + f.view_match_sql.len()
                        });
                    if text.len() <= FilterCache::MAX_TEXT {
                        if cache.entries >= FilterCache::MAX_ENTRIES
                            || cache.bytes + size > FilterCache::MAX_BYTES
                        {
                            cache.clear();
                        }
                        cache
                            .compiled
                            .entry(class.clone())
                            .or_default()
                            .insert(text.clone(), filter.clone());
                        cache.entries += 1;
                        cache.bytes += size;
                    }
                    filter
                }
            };
            out.insert(class.clone(), filter);
        }
        out
    }
}

/// `entries` with the instructions on `outside` objects taken out of its `new` changesets
/// (decoded, each with its index in `entries`; taken out there too; `outside` holds, per index
/// in `entries`, the objects outside the view at that changeset's base), except their
/// `CreateObject`s (an upsert of an object the state holds changes nothing; kept, the
/// changeset still touches the object, so the client's next download erases the client's
/// copy, as for any object it wrote that its view lacks), and the objects that lost an
/// instruction (those to report as a compensating write).
fn strip_outside(
    entries: &[UploadEntry],
    new: &mut [(usize, Changeset)],
    outside: &BTreeMap<usize, BTreeSet<(String, Key)>>,
) -> (Vec<UploadEntry>, Vec<(String, Key)>) {
    let mut rejected: BTreeSet<(String, Key)> = BTreeSet::new();
    let mut kept = entries.to_vec();
    for (n, cs) in new.iter_mut() {
        let Some(outside) = outside.get(n) else {
            continue;
        };
        let keep: Vec<bool> = cs
            .instructions
            .iter()
            .map(|i| match super::instruction_object(cs, i) {
                Some(object) if outside.contains(&object) => {
                    let create = matches!(i, Instruction::CreateObject { .. });
                    if !create {
                        rejected.insert(object);
                    }
                    create
                }
                _ => true,
            })
            .collect();
        if keep.iter().all(|k| *k) {
            continue;
        }
        let mut flags = keep.into_iter();
        cs.instructions.retain(|_| flags.next().unwrap_or(true));
        kept[*n].changeset = cs.encode();
    }
    (kept, rejected.into_iter().collect())
}

/// A primary key as the view stores it: a type tag, then the value.
pub(crate) fn key_blob(key: &Key) -> Vec<u8> {
    match key {
        Key::Null => vec![0],
        Key::Int(v) => [&[1u8][..], &v.to_be_bytes()].concat(),
        Key::String(s) => [&[2u8][..], s.as_bytes()].concat(),
        Key::GlobalKey(hi, lo) => [&[3u8][..], &hi.to_be_bytes(), &lo.to_be_bytes()].concat(),
        Key::ObjectId(id) => [&[4u8][..], &id[..]].concat(),
        Key::Uuid(id) => [&[5u8][..], &id[..]].concat(),
    }
}

fn blob_key(blob: &[u8]) -> Option<Key> {
    let (tag, rest) = blob.split_first()?;
    Some(match tag {
        0 if rest.is_empty() => Key::Null,
        1 => Key::Int(i64::from_be_bytes(rest.try_into().ok()?)),
        2 => Key::String(String::from_utf8(rest.to_vec()).ok()?),
        3 if rest.len() == 16 => Key::GlobalKey(
            u64::from_be_bytes(rest[..8].try_into().ok()?),
            u64::from_be_bytes(rest[8..].try_into().ok()?),
        ),
        4 => Key::ObjectId(rest.try_into().ok()?),
        5 => Key::Uuid(rest.try_into().ok()?),
        _ => return None,
    })
}

/// The origin file ident of changesets the server makes for `client`: realm-core refuses 0 and
/// the client's own ident (`realm-wire-compat.md` section 6 (c) 4).
pub fn server_origin(client: u64) -> u64 {
    if client == 1 {
        2
    } else {
        1
    }
}

/// Milliseconds since 2015-01-01 (Realm's origin timestamps), to the millisecond: the
/// server's changesets (compensating writes, writes made in the mirror tables) meet devices'
/// writes by last-writer-wins on these.
pub(super) fn now_timestamp() -> u64 {
    let millis = crate::sim::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    millis.saturating_sub(1_420_070_400_000)
}

/// A bootstrap: changesets all at `version`, the latest server version.
pub struct Bootstrap {
    /// The server version every entry carries, and the download cursor after it.
    pub version: u64,
    /// The salt of `version` (`latest_server_version_salt`).
    pub salt: u64,
    /// The entries, in order.
    pub entries: Vec<DownloadEntry>,
    /// The client's last client version integrated at or before `version` (what a download
    /// from there may follow, [`DownloadBatch::point`](super::DownloadBatch::point)).
    pub client_version: u64,
}

/// Where a view change is recorded: the download cursor (`at`) and subscription version of
/// the message that carries it, and the server version of the copies it sends.
#[derive(Clone, Copy)]
struct Stamp {
    at: u64,
    version: u64,
    state_version: u64,
}

/// A compensating write: uploaded writes the rules refused, reverted by the server
/// (`realm-wire-compat.md` section 4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compensation {
    /// Each object whose writes were reverted: class, primary key and why.
    pub rejected: Vec<(String, Key, String)>,
    /// The last client version of the upload (`rejectedClientVersion`).
    pub client_version: u64,
    /// The server version of the reverting changeset (`compensatingWriteServerVersion`).
    pub server_version: u64,
}

/// Most changesets after a session's cursor for [`ServerFile::flx_download_unchanged`]: what
/// one change leaves a session that was up to date, with room for a few more. Empty ones
/// (a bootstrap's server version, an upload stripped of every write outside the view) are
/// not counted.
pub const UNCHANGED_MAX_CHANGESETS: usize = 16;
/// Most changeset bytes after a session's cursor for [`ServerFile::flx_download_unchanged`]
/// (64 KiB): a bulk changeset, whose objects each cost lookups, is left to a blocking thread.
pub const UNCHANGED_MAX_BYTES: usize = 64 << 10;

/// Whether a flexible sync download may record changes of the view
/// ([`ServerFile::flx_download_unchanged`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    Allowed,
    Refused,
}

/// Where a flexible sync download finds the client's last integrated client version at each
/// server version of its batch (`integrated_client_version`).
enum ClientVersions {
    /// Read from the history, version by version.
    Read,
    /// Followed from a known point ([`DownloadPoint`]): the version at the batch's start
    /// (`at_cursor`), then each of the client's own rows after it (server version, client
    /// version), oldest first, from the rows in memory.
    Followed {
        at_cursor: u64,
        own: Vec<(u64, u64)>,
    },
}

/// What one touched object does in a batch.
enum Fate {
    /// In the view before and after: forward instructions on it from changesets after this
    /// version (the copy the client holds).
    Stays(u64),
    /// Not in the view, matches, and born (created while it did not exist) at this version,
    /// in the batch, with nothing touching it before: forward every instruction on it.
    Born(u64),
    /// Not in the view, matches, and older than the batch: sent whole.
    Enters,
    /// In the view (copy at this version), erased in the batch, and not there now: forward
    /// instructions on it from changesets after the copy, the erasure among them.
    Gone(u64),
    Leaves,
    /// Not in the view before or after: only its erasures are forwarded.
    Out,
    /// Of an asymmetric class (upload-only): nothing is forwarded.
    Upload,
}

impl ServerFile {
    fn flx_conn(&self) -> &Connection {
        self.state.connection()
    }

    /// `client`'s last integrated client version at server version `at` (at or after the
    /// batch's start), found as `versions` says.
    fn client_version_at(
        &self,
        client: u64,
        versions: &ClientVersions,
        at: u64,
    ) -> Result<u64, ProtocolError> {
        match versions {
            ClientVersions::Read => self.integrated_client_version(client, at),
            ClientVersions::Followed { at_cursor, own } => Ok(own
                .iter()
                .take_while(|(version, _)| *version <= at)
                .fold(*at_cursor, |found, (_, client_version)| {
                    found.max(*client_version)
                })),
        }
    }

    /// Whether the object of `class` with primary key `key` exists in the state and matches
    /// `filter` (one indexed lookup: [`Filter::match_sql`]).
    fn flx_matches(&self, class: &str, filter: &Filter, key: &Key) -> Result<bool, ProtocolError> {
        debug_assert!(filter.match_sql.contains(&tables::object_table(class)));
        let mut stmt = self.flx_bind_match(&filter.match_sql, filter, key)?;
        let found = stmt.raw_query().next().map_err(sql_err)?.is_some();
        Ok(found)
    }

    /// `sql` (a statement of `filter`: [`Filter::match_sql`] or [`Filter::view_match_sql`])
    /// prepared, with the filter's parameters bound and then the object's primary key.
    fn flx_bind_match(
        &self,
        sql: &str,
        filter: &Filter,
        key: &Key,
    ) -> Result<rusqlite::CachedStatement<'_>, ProtocolError> {
        let mut stmt = self.flx_conn().prepare_cached(sql).map_err(sql_err)?;
        for (i, value) in filter.params.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, value).map_err(sql_err)?;
        }
        stmt.raw_bind_parameter(filter.params.len() + 1, tables::encode_key(key))
            .map_err(sql_err)?;
        Ok(stmt)
    }

    /// [`ServerFile::flx_in_view`] and [`ServerFile::flx_matches`] of one object, in one
    /// statement ([`Filter::view_match_sql`]).
    fn flx_view_and_match(
        &self,
        client: u64,
        class: &str,
        filter: &Filter,
        key: &Key,
    ) -> Result<(Option<u64>, bool), ProtocolError> {
        let mut stmt = self.flx_bind_match(&filter.view_match_sql, filter, key)?;
        let n = filter.params.len();
        let bound = stmt
            .raw_bind_parameter(n + 2, client as i64)
            .and_then(|()| stmt.raw_bind_parameter(n + 3, class))
            .and_then(|()| stmt.raw_bind_parameter(n + 4, key_blob(key)));
        bound.map_err(sql_err)?;
        let mut rows = stmt.raw_query();
        let row = rows
            .next()
            .map_err(sql_err)?
            .ok_or_else(|| corrupt("flx_view_and_match"))?;
        let copy = row
            .get::<_, Option<i64>>(0)
            .map_err(sql_err)?
            .map(|v| v as u64);
        let matches = row.get::<_, bool>(1).map_err(sql_err)?;
        drop(rows);
        // Every test build checks the one statement against the two it replaces.
        #[cfg(debug_assertions)]
        {
            let apart = (
                self.flx_in_view(client, class, key)?,
                self.flx_matches(class, filter, key)?,
            );
            debug_assert_eq!(
                (copy, matches),
                apart,
                "{class} {key:?} for client {client}"
            );
        }
        Ok((copy, matches))
    }

    /// The objects of the view of `client` now, by class.
    fn flx_view(&self, client: u64) -> Result<BTreeSet<(String, Key)>, ProtocolError> {
        let conn = self.flx_conn();
        let mut stmt = conn
            .prepare_cached("SELECT class, pk FROM _flx_view WHERE client = ?1 AND left_at IS NULL")
            .map_err(sql_err)?;
        let rows = stmt
            .query_map([client as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql_err)?;
        let mut view = BTreeSet::new();
        for row in rows {
            let (class, blob) = row.map_err(sql_err)?;
            let key = blob_key(&blob).ok_or_else(|| corrupt("_flx_view"))?;
            view.insert((class, key));
        }
        Ok(view)
    }

    /// The server version of the copy of an object in `client`'s view, if it is in it.
    fn flx_in_view(
        &self,
        client: u64,
        class: &str,
        key: &Key,
    ) -> Result<Option<u64>, ProtocolError> {
        self.flx_conn()
            .prepare_cached(
                "SELECT state_version FROM _flx_view
                 WHERE client = ?1 AND class = ?2 AND pk = ?3 AND left_at IS NULL",
            )
            .and_then(|mut s| {
                s.query_row(params![client as i64, class, key_blob(key)], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
            })
            .map(|v| v.map(|v| v as u64))
            .map_err(sql_err)
    }

    /// Whether an object was in `client`'s view at server version `base` as far as the record
    /// tells: its row has not left, or left after `base` (a row that entered after `base`
    /// counts too: the copy it brought meets what the client wrote in the merge,
    /// `flx_copies`).
    fn flx_in_view_at(
        &self,
        client: u64,
        class: &str,
        key: &Key,
        base: u64,
    ) -> Result<bool, ProtocolError> {
        self.flx_conn()
            .prepare_cached(
                "SELECT 1 FROM _flx_view
                 WHERE client = ?1 AND class = ?2 AND pk = ?3 AND (left_at IS NULL OR left_at > ?4)",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![client as i64, class, key_blob(key), base.min(i64::MAX as u64) as i64],
                    |_| Ok(()),
                )
                .optional()
            })
            .map(|v| v.is_some())
            .map_err(sql_err)
    }

    /// Records objects entering and leaving `client`'s view in the message `stamp` describes
    /// (`entering` with copies at `stamp.state_version`, `born` with their history up to
    /// `stamp.at`), and with `query`, that the set was bootstrapped by it: all in one
    /// transaction, so that a failure records nothing.
    fn flx_record(
        &self,
        client: u64,
        stamp: Stamp,
        entering: &[(String, Key)],
        born: &[(String, Key)],
        leaving: &[(String, Key)],
        query: Option<&Subscription>,
    ) -> Result<(), ProtocolError> {
        let Stamp {
            at,
            version,
            state_version,
        } = stamp;
        let conn = self.flx_conn();
        let tx = conn.unchecked_transaction().map_err(sql_err)?;
        {
            let mut enter = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO _flx_view
                     (client, class, pk, entered_at, entered_version, left_at, left_version, state_version)
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6)",
                )
                .map_err(sql_err)?;
            let copies = entering.iter().map(|o| (o, state_version));
            for ((class, key), state_version) in copies.chain(born.iter().map(|o| (o, at))) {
                enter
                    .execute(params![
                        client as i64,
                        class,
                        key_blob(key),
                        at as i64,
                        version as i64,
                        state_version as i64
                    ])
                    .map_err(sql_err)?;
            }
            let mut leave = tx
                .prepare_cached(
                    "UPDATE _flx_view SET left_at = ?4, left_version = ?5
                     WHERE client = ?1 AND class = ?2 AND pk = ?3 AND left_at IS NULL",
                )
                .map_err(sql_err)?;
            for (class, key) in leaving {
                leave
                    .execute(params![
                        client as i64,
                        class,
                        key_blob(key),
                        at as i64,
                        version as i64
                    ])
                    .map_err(sql_err)?;
            }
            if let Some(q) = query {
                tx.execute(
                    "INSERT OR REPLACE INTO _flx_query (client, version, body, bootstrapped_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![client as i64, q.version as i64, q.body, at as i64],
                )
                .map_err(sql_err)?;
            }
        }
        tx.commit().map_err(sql_err)
    }

    /// At IDENT: forgets what `client` did not integrate (view changes after its `cursor` or
    /// under a subscription version above its active `version`, sets bootstrapped after
    /// them), and what it acknowledged leaving. Returns whether its active set was
    /// bootstrapped here (otherwise the session bootstraps it).
    pub fn flx_resume(
        &mut self,
        client: u64,
        cursor: u64,
        version: u64,
    ) -> Result<bool, ProtocolError> {
        self.reload_if_stale()?;
        let conn = self.flx_conn();
        let (c, v) = (
            cursor.min(i64::MAX as u64) as i64,
            version.min(i64::MAX as u64) as i64,
        );
        let tx = conn.unchecked_transaction().map_err(sql_err)?;
        tx.execute(
            "DELETE FROM _flx_view WHERE client = ?1 AND (entered_at > ?2 OR entered_version > ?3)",
            params![client as i64, c, v],
        )
        .map_err(sql_err)?;
        tx.execute(
            "UPDATE _flx_view SET left_at = NULL, left_version = NULL
             WHERE client = ?1 AND (left_at > ?2 OR left_version > ?3)",
            params![client as i64, c, v],
        )
        .map_err(sql_err)?;
        tx.execute(
            "DELETE FROM _flx_view WHERE client = ?1 AND left_at IS NOT NULL",
            params![client as i64],
        )
        .map_err(sql_err)?;
        tx.execute(
            "DELETE FROM _flx_query WHERE client = ?1 AND (version > ?3 OR bootstrapped_at > ?2)",
            params![client as i64, c, v],
        )
        .map_err(sql_err)?;
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _flx_query WHERE client = ?1 AND version = ?2)",
                params![client as i64, v],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        tx.execute(
            "DELETE FROM _flx_query WHERE client = ?1 AND version < ?2",
            params![client as i64, v],
        )
        .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
        // The copies of messages it did not integrate: its uploads were not merged against
        // them in the client.
        let dropped: Vec<(i64, i64)> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "DELETE FROM flx_copies
                     WHERE client_file_ident = ?1 AND (at > ?2 OR query_version > ?3)
                     RETURNING at, seq",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map(params![client as i64, c, v], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            rows
        };
        if let Some(reciprocal) = self.reciprocal.get_mut(&client) {
            for (at, seq) in dropped {
                reciprocal.forget_extra(at as u64, seq as u32);
            }
        }
        Ok(known)
    }

    /// When a fresh `client` (download cursor `after` 0) waits for a bootstrap, holds nothing
    /// in its view and has written nothing, the history has nothing for it that the bootstrap
    /// will not carry (its objects come whole, its schema first): the batch that moves its
    /// cursor to the latest version at once, without reading that history. `None` otherwise.
    /// A fresh client then waits for its first bootstrap the time of one query, not of a walk
    /// through the whole history. A client that has downloaded before walks the history
    /// since: the objects born there reach it by their history, which merges with what it
    /// has not uploaded, where their whole copies would not (flexible seeds 154 and 572 of
    /// the simulation, `docs/testing.md`).
    pub fn flx_skip_to_latest(
        &self,
        client: u64,
        after: u64,
    ) -> Result<Option<super::DownloadBatch>, ProtocolError> {
        self.check_fresh()?;
        self.check_not_expired(client, after)?;
        if after > 0 || after >= self.latest {
            return Ok(None);
        }
        let holds: bool = self
            .flx_conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM _flx_view WHERE client = ?1 AND left_at IS NULL)",
            )
            .and_then(|mut s| s.query_row([client as i64], |r| r.get(0)))
            .map_err(sql_err)?;
        let wrote: bool = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM history WHERE origin_file_ident = ?1 AND version > ?2)",
            )
            .and_then(|mut s| {
                s.query_row(params![client as i64, after.min(i64::MAX as u64) as i64], |r| {
                    r.get(0)
                })
            })
            .map_err(sql_err)?;
        if holds || wrote {
            return Ok(None);
        }
        let at_latest = self.integrated_client_version(client, self.latest)?;
        Ok(Some(super::DownloadBatch {
            downloadable_bytes: 0,
            entries: Vec::new(),
            download_server_version: self.latest,
            download_client_version: at_latest,
            latest_server_version: self.latest,
            latest_server_version_salt: self.latest_salt,
            upload_client_version: at_latest,
        }))
    }

    /// Forgets the objects that left `client`'s view in messages at or before `integrated`, a
    /// server version the client reports having integrated (UPLOAD's progress): it can never
    /// roll back past it, so those rows are not needed any more. Keeps the view's table from
    /// growing with every object that ever left it during a long session.
    pub fn flx_acknowledged(&self, client: u64, integrated: u64) -> Result<(), ProtocolError> {
        self.flx_conn()
            .prepare_cached(
                "DELETE FROM _flx_view WHERE client = ?1 AND left_at IS NOT NULL AND left_at <= ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    client as i64,
                    integrated.min(i64::MAX as u64) as i64
                ])
            })
            .map(drop)
            .map_err(sql_err)
    }

    /// Whether `query` can be served on this file now (the QUERY_ERROR text otherwise).
    pub fn flx_check(&self, query: &Subscription) -> Result<(), String> {
        query.check(self.state.schemas())
    }

    /// The bootstrap of `query` for `client`, whose download cursor must be at the latest
    /// version, which must not be 0 (`None` then: nothing can carry it yet). Records the new
    /// view and the set. `Err(Ok(text))`: the set cannot be evaluated (QUERY_ERROR 226).
    pub fn flx_bootstrap(
        &mut self,
        client: u64,
        query: &Subscription,
    ) -> Result<Option<Bootstrap>, Result<String, ProtocolError>> {
        self.reload_if_stale().map_err(Err)?;
        // A client a compaction expired gets nothing more (222), as from `flx_download`; its
        // session would also follow the bootstrap's point without asking again.
        self.check_not_expired(client, self.latest).map_err(Err)?;
        // The state must hold the whole history (see `flx_download`).
        self.catch_up_state().map_err(Err)?;
        // Objects born from now on reach flexible sync clients by their history, not whole
        // (`flx_download`).
        self.state.track_births().map_err(|e| Err(state_err(e)))?;
        let latest = self.latest;
        if latest == 0 {
            return Ok(None);
        }
        let schemas = self.state.shared_schemas();
        let view = self.flx_view(client).map_err(Err)?;
        let mut filters = Vec::new();
        for (class, text) in &query.queries {
            if let Some(filter) = compile(&schemas, class, text).map_err(Ok)? {
                filters.push((class, filter));
            }
        }
        // One scan per class: objects the view lacks are written whole as they are read.
        let mut wanted: BTreeSet<(String, Key)> = BTreeSet::new();
        let mut entering: Vec<(String, Key)> = Vec::new();
        let conn = self.flx_conn();
        let mut changesets = crate::state::whole_objects(
            &schemas,
            true,
            OBJECTS_PER_CHANGESET,
            |emit| -> Result<(), ProtocolError> {
                for (class, filter) in &filters {
                    tables::for_each_match(
                        conn,
                        &schemas,
                        class,
                        &filter.from_where,
                        &filter.params,
                        &mut |key, object| {
                            let object_key = ((*class).clone(), key);
                            if !view.contains(&object_key) {
                                emit(class, &object_key.1, &object);
                                entering.push(object_key.clone());
                            }
                            wanted.insert(object_key);
                        },
                    )
                    .map_err(|e| state_err(e.into()))?;
                }
                Ok(())
            },
            &[],
        )
        .map_err(Err)?;
        self.flx_erase_first(client, &mut changesets).map_err(Err)?;
        let leaving: Vec<(String, Key)> = view.difference(&wanted).cloned().collect();
        if !leaving.is_empty() {
            let erasures = crate::state::whole_objects(
                &schemas,
                false,
                OBJECTS_PER_CHANGESET,
                |_| -> Result<(), ProtocolError> { Ok(()) },
                &leaving,
            )
            .map_err(Err)?;
            // The last object changeset may be empty (nothing entered).
            if changesets.last().is_some_and(|c| c.instructions.is_empty()) {
                changesets.pop();
            }
            changesets.extend(erasures);
        }
        // A bootstrap that changes the view gets a server version of its own, one past the
        // client's cursor: an upload the client made before it integrated the bootstrap's
        // copies is then based on an older version than one made after (both would be based
        // on `latest` otherwise), which is how the server tells which of its uploads to merge
        // against them (`flx_keep_copies`); and a client whose cursor is `latest` is known
        // not to have integrated it (the view's rows are stamped with the version: an UPLOAD
        // reporting cursor `latest` made `flx_acknowledged` forget objects the bootstrap took
        // out of the view before the client had them erased, flexible seed 5403 of the
        // simulation). An empty changeset of the server makes it, as realm-core's server
        // versions advance with subscription changes.
        let latest = if entering.is_empty() && leaving.is_empty() {
            latest
        } else {
            self.integrate_server_changeset(&Changeset::new(), now_timestamp())
                .map_err(Err)?
        };
        let meta = self.flx_made_meta(client, latest).map_err(Err)?;
        let salt = self.version_salt(latest).map_err(Err)?;
        let entries = made_entries(&changesets, &meta);
        // Last: a bootstrap that fails records nothing.
        let kept = if entering.is_empty() {
            Vec::new()
        } else {
            self.flx_keep_copies(client, latest - 1, query.version, meta, changesets)
                .map_err(Err)?
        };
        let stamp = Stamp {
            at: latest,
            version: query.version,
            state_version: latest,
        };
        if let Err(e) = self.flx_record(client, stamp, &entering, &[], &leaving, Some(query)) {
            self.flx_unkeep_copies(client, &kept);
            return Err(Err(e));
        }
        tracing::info!(
            client,
            query_version = query.version,
            entering = entering.len(),
            leaving = leaving.len(),
            server_version = latest,
            "flexible sync bootstrap"
        );
        Ok(Some(Bootstrap {
            version: latest,
            salt,
            entries,
            client_version: meta.last_integrated_remote_version,
        }))
    }

    /// Changesets writing the `entering` objects whole and erasing the `leaving` ones.
    fn flx_whole(
        &self,
        schemas: &Schemas,
        schema: bool,
        entering: &[(String, Key)],
        leaving: &[(String, Key)],
    ) -> Result<Vec<Changeset>, ProtocolError> {
        let conn = self.flx_conn();
        crate::state::whole_objects(
            schemas,
            schema,
            OBJECTS_PER_CHANGESET,
            |emit| {
                for (class, key) in entering {
                    let Some(id) = tables::row_id(conn, class, key).map_err(sql_err)? else {
                        continue;
                    };
                    let object = tables::read_object(conn, schemas, class, id)
                        .map_err(|e| state_err(e.into()))?;
                    emit(class, key, &object);
                }
                Ok(())
            },
            leaving,
        )
    }

    /// The origin timestamp of whole copies: the newest of the history's (now if there is
    /// none). A copy then wins over every write in the history by last-writer-wins, wherever
    /// a client's clock stood, so a client's upload merged against the copy (in the client,
    /// and in the server through `flx_copies`) comes out the same whether or not it is also
    /// merged against the history the copy stands for.
    /// Read once per load of the file (a scan of the history), then kept up to date by
    /// `store` (`max_timestamp`).
    fn latest_timestamp(&self) -> Result<u64, ProtocolError> {
        if let Some(known) = self.max_timestamp.get() {
            return Ok(known);
        }
        let ts: Option<i64> = self
            .conn
            .prepare_cached("SELECT MAX(origin_timestamp) FROM history")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(sql_err)?;
        let ts = ts.map(|t| t as u64);
        self.max_timestamp.set(ts);
        Ok(ts.unwrap_or_else(now_timestamp))
    }

    /// The metadata of the changesets the server makes for `client` in a message at server
    /// version `at` (whole copies, made-up erasures): the client file's last version
    /// integrated by then, the copies' timestamp (`latest_timestamp`), and the server's origin
    /// for that client (`server_origin`).
    fn flx_made_meta(&self, client: u64, at: u64) -> Result<ChangesetMeta, ProtocolError> {
        Ok(ChangesetMeta {
            version: at,
            last_integrated_remote_version: self.integrated_client_version(client, at)?,
            origin_timestamp: self.latest_timestamp()?,
            origin_file_ident: server_origin(client),
        })
    }

    /// Puts an erasure before the creation of each object in `copies` (whole copies for
    /// `client`) that was erased since `client`'s upload threshold (and created again): an
    /// upload of `client` made before that erasure is merged against it on the server, where
    /// deletes win over its writes to the object; the copy alone would not show the client
    /// the erasure, and those writes would win over the copy's older fields there (flexible
    /// seed 450 of the simulation, `docs/testing.md`). Erasing an object a client does not
    /// hold changes nothing there.
    /// The erasures since the threshold are read at once when they are no more than the
    /// copies' objects (a bootstrap's copies are thousands; erasures since a client's last
    /// upload few), else looked up object by object.
    fn flx_erase_first(&self, client: u64, copies: &mut [Changeset]) -> Result<(), ProtocolError> {
        let threshold = self.base_version(client)?;
        let creates = copies
            .iter()
            .flat_map(|cs| &cs.instructions)
            .filter(|i| matches!(i, Instruction::CreateObject { .. }))
            .count();
        let known = self
            .state
            .erased_after(threshold, creates)
            .map_err(sql_err)?;
        if known.as_ref().is_some_and(|erased| erased.is_empty()) {
            return Ok(());
        }
        for cs in copies.iter_mut() {
            let mut out = Vec::with_capacity(cs.instructions.len());
            for i in std::mem::take(&mut cs.instructions) {
                if let Instruction::CreateObject { table, object } = &i {
                    let name = super::instruction_object(cs, &i);
                    if let Some((class, key)) = name {
                        let erased_since = match &known {
                            Some(erased) => erased.contains(&(class, key_blob(&key))),
                            None => self
                                .state
                                .erased(&class, &key)
                                .map_err(sql_err)?
                                .is_some_and(|v| v > threshold),
                        };
                        if erased_since {
                            out.push(Instruction::EraseObject {
                                table: *table,
                                object: object.clone(),
                            });
                        }
                    }
                }
                out.push(i);
            }
            cs.instructions = out;
        }
        Ok(())
    }

    /// Loads every client's recorded copies (`flx_copies`) into its reciprocal history.
    pub(super) fn load_copies(&mut self) -> Result<(), ProtocolError> {
        // Client file ident, `at` and `seq`; the metadata; the stored form.
        type Row = ((u64, u64, u32), ChangesetMeta, Vec<u8>);
        let rows: Vec<Row> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT client_file_ident, at, seq, origin_timestamp, origin_file_ident,
                            client_version, changeset FROM flx_copies",
                )
                .map_err(sql_err)?;
            let rows = stmt
                .query_map([], |r| {
                    let at = r.get::<_, i64>(1)? as u64;
                    Ok((
                        (r.get::<_, i64>(0)? as u64, at, r.get::<_, i64>(2)? as u32),
                        ChangesetMeta {
                            version: at,
                            last_integrated_remote_version: r.get::<_, i64>(5)? as u64,
                            origin_timestamp: r.get::<_, i64>(3)? as u64,
                            origin_file_ident: r.get::<_, i64>(4)? as u64,
                        },
                        r.get(6)?,
                    ))
                })
                .map_err(sql_err)?
                .collect::<Result<_, _>>()
                .map_err(sql_err)?;
            rows
        };
        for ((client, at, seq), meta, bytes) in rows {
            let mut cs =
                Changeset::decode(&bytes).map_err(|e| corrupt(&format!("flx_copies: {e}")))?;
            cs.meta = meta;
            self.reciprocal
                .entry(client)
                .or_default()
                .set_extra(at, seq, cs);
        }
        Ok(())
    }

    /// Keeps the whole copies a message sends `client` (`made`, the changesets it carries,
    /// all with metadata `meta`: the server version `at` of the message and what the entries
    /// say), under subscription version `query_version`, as extra changesets of its
    /// reciprocal history: the client merges what it has not uploaded against them, so the
    /// server merges those uploads against them too (`integrate_upload`), and both come out
    /// the same. The client's own writes to an object entering its view are met by the copy
    /// alike on both sides (flexible seeds 124, 450 and others of the simulation,
    /// `docs/testing.md`). Copies the client has not integrated (after its cursor `after`,
    /// which is below `at`) are forgotten first, so the new ones are numbered from 0. Only
    /// their objects' instructions are kept (the erasures of objects leaving the view are
    /// made up: the server never had them, and the client's writes to those objects stay in
    /// the server's state as before). Returns the `(at, seq)` of the rows written, for
    /// [`ServerFile::flx_unkeep_copies`] if the message cannot be recorded.
    fn flx_keep_copies(
        &mut self,
        client: u64,
        after: u64,
        query_version: u64,
        meta: ChangesetMeta,
        made: Vec<Changeset>,
    ) -> Result<Vec<(u64, u32)>, ProtocolError> {
        let at = meta.version;
        let mut kept = Vec::new();
        for mut copy in made {
            // An erasure followed by the object's creation is part of its copy (see
            // `flx_erase_first`); any other erasure is one of an object leaving the view.
            let mut keep = Vec::with_capacity(copy.instructions.len());
            let mut instructions = copy.instructions.iter().peekable();
            while let Some(i) = instructions.next() {
                let copy_part = match (i, instructions.peek()) {
                    (
                        Instruction::EraseObject { table, object },
                        Some(Instruction::CreateObject {
                            table: t,
                            object: o,
                        }),
                    ) => table == t && object == o,
                    (Instruction::EraseObject { .. }, _) => false,
                    _ => true,
                };
                keep.push(copy_part);
            }
            let mut keep = keep.into_iter();
            copy.instructions.retain(|_| keep.next().unwrap_or(false));
            if copy.instructions.is_empty() {
                continue;
            }
            // Kept in memory as long as the client's reciprocal history holds it: no room
            // left over from building it.
            copy.instructions.shrink_to_fit();
            copy.meta = meta;
            kept.push(((at, kept.len() as u32), copy));
        }
        self.flx_purge_unsent();
        let tx = self.conn.unchecked_transaction().map_err(sql_err)?;
        tx.execute(
            "DELETE FROM flx_copies WHERE client_file_ident = ?1 AND at > ?2",
            params![client as i64, after.min(i64::MAX as u64) as i64],
        )
        .map_err(sql_err)?;
        for ((at, seq), cs) in &kept {
            tx.execute(
                "INSERT OR REPLACE INTO flx_copies (client_file_ident, at, seq, query_version,
                     origin_timestamp, origin_file_ident, client_version, changeset)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    client as i64,
                    *at as i64,
                    *seq as i64,
                    query_version.min(i64::MAX as u64) as i64,
                    cs.meta.origin_timestamp as i64,
                    cs.meta.origin_file_ident as i64,
                    cs.meta.last_integrated_remote_version as i64,
                    cs.encode()
                ],
            )
            .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)?;
        let keys: Vec<(u64, u32)> = kept.iter().map(|(key, _)| *key).collect();
        // Rows just written over are no longer a message not sent.
        self.flx_unsent
            .retain(|&(c, at, seq)| c != client || !keys.contains(&(at, seq)));
        let reciprocal = self.reciprocal.entry(client).or_default();
        reciprocal.forget_extras_after(after);
        for ((at, seq), cs) in kept {
            reciprocal.set_extra(at, seq, cs);
        }
        Ok(keys)
    }

    /// Undoes [`ServerFile::flx_keep_copies`] for a message that was not recorded (so not
    /// sent). Rows that cannot be deleted now (a storage fault) are remembered
    /// (`flx_unsent`): left out of the reciprocal history, also after a reload, and deleted
    /// at the next chance.
    fn flx_unkeep_copies(&mut self, client: u64, kept: &[(u64, u32)]) {
        if let Some(reciprocal) = self.reciprocal.get_mut(&client) {
            for &(at, seq) in kept {
                reciprocal.forget_extra(at, seq);
            }
        }
        for &(at, seq) in kept {
            self.flx_unsent.push((client, at, seq));
        }
        self.flx_purge_unsent();
    }

    /// Deletes the rows of `flx_unsent` (those that fail stay listed; logged).
    fn flx_purge_unsent(&mut self) {
        let conn = &self.conn;
        self.flx_unsent.retain(|&(client, at, seq)| {
            let deleted = conn.execute(
                "DELETE FROM flx_copies WHERE client_file_ident = ?1 AND at = ?2 AND seq = ?3",
                params![client as i64, at as i64, seq as i64],
            );
            if let Err(e) = &deleted {
                tracing::warn!(client, error = %e, "cannot delete the copies of a message not sent yet; tried again later");
            }
            deleted.is_err()
        });
    }

    /// The history after `after` for `client` under subscription set `query`, up to
    /// `max_bytes` of DOWNLOAD body (at least one changeset if there is any), filtered to its
    /// view: see the module documentation (`server::file::flx`). Records the view's changes.
    /// Queries that no longer compile (the schema changed under them) match nothing. `known`:
    /// what the session's previous batch found ([`DownloadBatch::point`](super::DownloadBatch::point));
    /// when it still holds (same cursor and generation, the rows since in memory), the
    /// client's expiry and integrated client versions are not read again
    /// ([`ServerFile::flx_download_unchanged`]).
    pub fn flx_download(
        &mut self,
        client: u64,
        after: u64,
        max_bytes: usize,
        query: &Subscription,
        filters: &mut SteadyFilters,
        known: Option<DownloadPoint>,
    ) -> Result<super::DownloadBatch, ProtocolError> {
        self.reload_if_stale()?;
        let versions = known
            .and_then(|known| self.client_versions(client, after, known))
            .unwrap_or(ClientVersions::Read);
        let writes = Writes::Allowed;
        self.flx_download_as(client, after, max_bytes, query, filters, writes, versions)?
            .ok_or_else(|| {
                ProtocolError::new(
                    ErrorCode::OtherSessionError,
                    "a download allowed to write made no batch",
                )
            })
    }

    /// [`ClientVersions::Followed`] from `known`, if it still holds for a download of
    /// `client` from `after` ([`ServerFile::point_holds`]: within one generation, a client
    /// file's expiry and its integrated client version at the cursor do not change) and every
    /// row after it is in memory (`super::tail`).
    fn client_versions(
        &self,
        client: u64,
        after: u64,
        known: DownloadPoint,
    ) -> Option<ClientVersions> {
        if !self.point_holds(known, after) {
            return None;
        }
        let own = self
            .tail
            .after(after, self.latest)?
            .filter(|row| row.2 as u64 == client)
            .map(|row| (row.0 as u64, row.4 as u64))
            .collect();
        Some(ClientVersions::Followed {
            at_cursor: known.client_version,
            own,
        })
    }

    /// [`ServerFile::flx_download`] when it writes nothing: the view does not change (no object
    /// enters, leaves, is born into it or erased out of it in the batch), and the file needs
    /// no reload and its state no catch-up. Then the batch is the same, and it can be built
    /// on a connection's task, without a blocking thread (a fan-out: most sessions' views
    /// are untouched by a change). Only for a few small changesets after `after`, all still in
    /// the file's memory (`UNCHANGED_MAX_CHANGESETS`, `UNCHANGED_MAX_BYTES`,
    /// `super::tail`), so the work (a few indexed lookups per object touched: is it in the
    /// view, does it match) is small, and only while `known` holds (see
    /// [`ServerFile::flx_download`]).
    /// `None` when it would write, `known` no longer holds, or on any error: the caller runs
    /// [`ServerFile::flx_download`] on a blocking thread, which decides again.
    pub fn flx_download_unchanged(
        &mut self,
        client: u64,
        after: u64,
        max_bytes: usize,
        query: &Subscription,
        filters: &mut SteadyFilters,
        known: DownloadPoint,
    ) -> Option<super::DownloadBatch> {
        if self.state.version() != self.latest {
            return None;
        }
        let versions = self.client_versions(client, after, known)?;
        // Empty changesets (the server versions of other sessions' bootstraps, one each;
        // uploads stripped of every write outside their view) cost nothing to pass.
        let few = self.tail.after(after, self.latest).is_some_and(|rows| {
            let (mut changesets, mut bytes) = (0, 0);
            for row in rows.filter(|row| !row.1.is_empty()) {
                changesets += 1;
                bytes += row.1.len();
            }
            changesets <= UNCHANGED_MAX_CHANGESETS && bytes <= UNCHANGED_MAX_BYTES
        });
        if !few {
            return None;
        }
        let writes = Writes::Refused;
        self.flx_download_as(client, after, max_bytes, query, filters, writes, versions)
            .ok()
            .flatten()
    }

    /// [`ServerFile::flx_download`]; with [`Writes::Refused`], `None` as soon as the batch
    /// would change the view. With [`ClientVersions::Followed`], the caller has checked that
    /// the client is not expired.
    #[allow(clippy::too_many_arguments)] // the two public downloads' arguments, and how
    fn flx_download_as(
        &mut self,
        client: u64,
        after: u64,
        max_bytes: usize,
        query: &Subscription,
        filters: &mut SteadyFilters,
        writes: Writes,
        versions: ClientVersions,
    ) -> Result<Option<super::DownloadBatch>, ProtocolError> {
        self.reload_if_stale()?;
        if matches!(versions, ClientVersions::Read) {
            self.check_not_expired(client, after)?;
        }
        // Which objects match is read from the state: it must hold the whole history (an
        // integration whose state commit failed, a full disk say, leaves it behind until the
        // next one; objects created there would look absent and leave the view).
        self.catch_up_state()?;
        // The rows after `after`, up to `max_bytes` of other clients' changesets (at least one
        // row).
        let rows = self.with_rows_after(after, |rows| {
            let mut out: Vec<HistoryRow> = Vec::new();
            let mut bytes = 0;
            for row in rows {
                let row = row?;
                if row.2 as u64 != client {
                    if !out.is_empty() && bytes + row.1.len() > max_bytes {
                        break;
                    }
                    bytes += row.1.len();
                }
                out.push(row);
            }
            Ok(out)
        })?;
        let cursor = rows.last().map_or(after, |r| r.0 as u64);
        let schemas = self.state.shared_schemas();
        let filters = self.steady_filters(query, client, filters);
        // Decode, and collect the objects touched.
        // Each changeset with its stored bytes and the object each instruction touches.
        let mut decoded = Vec::with_capacity(rows.len());
        // Each object touched, with the first version that touches it.
        let mut touched: BTreeMap<(String, Key), u64> = BTreeMap::new();
        // Objects the batch creates or erases: whether the last of those instructions is a
        // create.
        let mut alive_at_cursor: BTreeMap<(String, Key), bool> = BTreeMap::new();
        // Objects the client wrote itself: it may hold them even outside its view.
        let mut own: BTreeSet<(String, Key)> = BTreeSet::new();
        // An empty changeset (a bootstrap's server version, a stripped upload) touches nothing
        // and sends nothing (the client's own rows move its integrated client version through
        // `client_version_at`, not here).
        for row in rows.into_iter().filter(|row| !row.1.is_empty()) {
            let bytes = row.1.clone();
            let cs = Self::decode(row)?;
            let objects: Vec<Option<(String, Key)>> = cs
                .instructions
                .iter()
                .map(|i| super::instruction_object(&cs, i))
                .collect();
            for (i, object) in cs.instructions.iter().zip(&objects) {
                let Some(object) = object else { continue };
                if cs.meta.origin_file_ident == client {
                    own.insert(object.clone());
                }
                touched.entry(object.clone()).or_insert(cs.meta.version);
                match i {
                    Instruction::CreateObject { .. } => {
                        alive_at_cursor.insert(object.clone(), true);
                    }
                    Instruction::EraseObject { .. } => {
                        alive_at_cursor.insert(object.clone(), false);
                    }
                    _ => {}
                }
            }
            decoded.push((cs, bytes, objects));
        }
        let mut fates: BTreeMap<(String, Key), Fate> = BTreeMap::new();
        let (mut entering, mut born, mut leaving) = (Vec::new(), Vec::new(), Vec::new());
        let mut gone = Vec::new();
        for (object, first_touch) in touched {
            let (class, key) = &object;
            // Asymmetric classes are upload-only: nothing about them is ever sent.
            if matches!(
                schemas.get(class.as_str()).map(|s| &s.spec),
                Some(TableSpec::TopLevel {
                    asymmetric: true,
                    ..
                })
            ) {
                fates.insert(object, Fate::Upload);
                continue;
            }
            let in_view_and_matches = match filters.get(class.as_str()) {
                Some(Some(filter)) => self.flx_view_and_match(client, class, filter, key)?,
                _ => (self.flx_in_view(client, class, key)?, false),
            };
            let fate = match in_view_and_matches {
                (Some(copy), true) => Fate::Stays(copy),
                // Erased in the batch and not created again: the client holds it, so the
                // history that erased it reaches the client as it is (a made-up erasure would
                // meet what the client has not uploaded, say its own creating the object again,
                // where the server never had it). Erased after the batch: it stays until then.
                (Some(copy), false) if self.flx_row(class, key)?.is_none() => {
                    match alive_at_cursor.get(&object) {
                        Some(false) => Fate::Gone(copy),
                        _ => Fate::Stays(copy),
                    }
                }
                (Some(_), false) => Fate::Leaves,
                (None, true) => match self.state.born(class, key).map_err(sql_err)? {
                    // Born in the batch, and nothing touched it before: it did not exist at
                    // the batch's start, so the batch holds its whole history (up to the
                    // cursor), which merges by OT with what the client has not uploaded of
                    // the same object, where a whole copy (its lists cleared first, every
                    // field set at one timestamp) would not.
                    Some(born) if born > after && born <= cursor && first_touch == born => {
                        Fate::Born(born)
                    }
                    // Born after the batch: what the batch holds is of an earlier life, erased
                    // after it. Only its erasures go (as for an object out of the view): the
                    // client may hold that life by its own writes, and the erasure reaches it
                    // by the history, which merges with what it has not uploaded as it did on
                    // the server (the later life comes by its own history, or whole with that
                    // erasure first). A made-up erasure would meet the client's own creating
                    // the object again and erase it there only (the kind of flexible seed
                    // 6427, below).
                    Some(born) if born > cursor => Fate::Out,
                    _ => Fate::Enters,
                },
                // Written by the client but not visible to it (outside its subscriptions or
                // its read rules, or reverted by a compensating write): erased there. Not
                // when it no longer exists: then an erasure in the history took it away (the
                // client's own, or one forwarded as for an object out of the view), and a
                // made-up one would meet the client's creating it again, and erase it there
                // only (flexible seed 6427 of the simulation, docs/testing.md).
                (None, false) if own.contains(&object) && self.flx_row(class, key)?.is_some() => {
                    Fate::Leaves
                }
                (None, false) => Fate::Out,
            };
            match fate {
                Fate::Enters => entering.push(object.clone()),
                Fate::Born(_) => born.push(object.clone()),
                Fate::Gone(_) => gone.push(object.clone()),
                Fate::Leaves => leaving.push(object.clone()),
                _ => {}
            }
            fates.insert(object, fate);
        }
        let unchanged =
            entering.is_empty() && leaving.is_empty() && born.is_empty() && gone.is_empty();
        if writes == Writes::Refused && !unchanged {
            return Ok(None);
        }
        let mut entries = Vec::new();
        for (mut cs, stored, objects) in decoded {
            let meta = cs.meta;
            if meta.origin_file_ident == client {
                continue;
            }
            let before = cs.instructions.len();
            let keep: Vec<bool> = objects
                .iter()
                .zip(&cs.instructions)
                .map(|(object, i)| match object {
                    Some(object) => match fates.get(object) {
                        Some(Fate::Stays(copy) | Fate::Gone(copy)) => meta.version > *copy,
                        Some(Fate::Born(at)) => meta.version >= *at,
                        // An erasure of an object outside the view reaches the client too: it
                        // may hold the object by a write it has not uploaded yet (its own
                        // creating it), which the server merged against this erasure. Erasing
                        // an object that is not there changes nothing, here and in realm-core
                        // ("EraseObject is idempotent", `InstructionApplier`).
                        Some(Fate::Out) => matches!(i, Instruction::EraseObject { .. }),
                        _ => false,
                    },
                    // Schema instructions reach every client; a data instruction whose object
                    // does not resolve reaches none.
                    None => i.object().is_none(),
                })
                .collect();
            let mut flags = keep.into_iter();
            cs.instructions.retain(|_| flags.next().unwrap_or(false));
            if cs.instructions.is_empty() {
                continue;
            }
            let bytes = if cs.instructions.len() == before {
                // Unchanged: the stored bytes.
                stored
            } else {
                cs.encode()
            };
            entries.push(DownloadEntry {
                server_version: meta.version,
                last_integrated_client_version: self.client_version_at(
                    client,
                    &versions,
                    meta.version,
                )?,
                origin_timestamp: meta.origin_timestamp,
                // A compaction snapshot's origin is 0, which realm-core refuses.
                origin_file_ident: match meta.origin_file_ident {
                    0 => server_origin(client),
                    origin => origin,
                },
                original_changeset_size: bytes.len() as u64,
                changeset: bytes,
            });
        }
        // Changesets the server makes for this batch (whole copies, made-up erasures) and
        // their metadata.
        let mut made = (Vec::new(), None);
        if !entering.is_empty() || !leaving.is_empty() {
            let meta = self.flx_made_meta(client, cursor)?;
            let mut changesets = self.flx_whole(&schemas, false, &entering, &leaving)?;
            self.flx_erase_first(client, &mut changesets)?;
            entries.extend(made_entries(&changesets, &meta));
            made = (changesets, Some(meta));
        }
        let batch = super::DownloadBatch {
            downloadable_bytes: 0,
            entries,
            download_server_version: cursor,
            download_client_version: self.client_version_at(client, &versions, cursor)?,
            latest_server_version: self.latest,
            latest_server_version_salt: self.latest_salt,
            upload_client_version: self.client_version_at(client, &versions, self.latest)?,
        };
        // Last, and at once: a batch that fails leaves the view as it was, so the same batch
        // built again (the session retries from the same cursor) makes the same decisions.
        // Objects that leave by the history (gone) leave as the others do.
        if !unchanged {
            leaving.extend(gone);
            let kept = match made {
                (changesets, Some(meta)) if !entering.is_empty() => {
                    self.flx_keep_copies(client, after, query.version, meta, changesets)?
                }
                _ => Vec::new(),
            };
            let stamp = Stamp {
                at: cursor,
                version: query.version,
                state_version: self.latest,
            };
            if let Err(e) = self.flx_record(client, stamp, &entering, &born, &leaving, None) {
                self.flx_unkeep_copies(client, &kept);
                return Err(e);
            }
        }
        Ok(Some(batch))
    }

    /// [`ServerFile::integrate_upload`] for a flexible sync client under `rules`: every object
    /// the upload's new changesets touch in a class whose write filter is not `true` must match
    /// that filter (for `user`) before the upload (if it existed) and after it (if it still
    /// exists). The upload is integrated whole; then the writes to objects that break the
    /// rule are reverted by one changeset the server makes (objects that existed get their
    /// whole earlier copy back, objects created are erased), returned as a `Compensation`.
    pub fn flx_integrate_checked(
        &mut self,
        client: u64,
        entries: &[UploadEntry],
        rules: &FlxRules,
        user: &UserVars,
        active: &Subscription,
    ) -> Result<(Integrated, Option<Compensation>), ProtocolError> {
        self.check_fresh()?;
        self.catch_up_state()?;
        let done = self.integrated_client_version(client, self.latest)?;
        // The upload's new changesets, decoded once, each with its index in `entries` (up to
        // the first that does not decode: integrate_upload refuses it).
        let mut new: Vec<(usize, Changeset)> = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            if entry.client_version > done {
                let Ok(cs) = entry.to_changeset(client) else {
                    break;
                };
                new.push((n, cs));
            }
        }
        // Writes to objects outside the view are taken out before anything is integrated.
        let outside = self.flx_outside_view(client, &new, active)?;
        let kept;
        let (entries, outside_rejected) = if outside.is_empty() {
            (entries, Vec::new())
        } else {
            let (k, rejected) = strip_outside(entries, &mut new, &outside);
            kept = k;
            (&kept[..], rejected)
        };
        let mut touched: BTreeSet<(String, Key)> = BTreeSet::new();
        // Objects the upload creates that the state does not hold yet.
        let mut fresh: BTreeSet<(String, Key)> = BTreeSet::new();
        for (_, cs) in &new {
            for i in &cs.instructions {
                if let (Instruction::CreateObject { .. }, Some(object)) =
                    (i, super::instruction_object(cs, i))
                {
                    if self.flx_row(&object.0, &object.1)?.is_none() {
                        fresh.insert(object);
                    }
                }
            }
            if rules.restricts_writes() {
                touched.extend(super::touched_objects(cs).into_iter().filter(|(class, _)| {
                    rules.class(class).write != crate::server::realm::rules::Filter::All
                }));
            }
        }
        let (integrated, mut compensation) =
            self.integrate_checked(client, entries, rules, user, touched)?;
        if let Some(&version) = integrated.versions.last() {
            self.flx_own_creations(client, active, version, &fresh)?;
        }
        if !outside_rejected.is_empty() {
            tracing::info!(
                client,
                rejected = outside_rejected.len(),
                "writes outside the view reverted"
            );
            let rejected = outside_rejected.into_iter().map(|(class, key)| {
                (
                    class,
                    key,
                    "write to an object outside the client's view (no active subscription \
                     matches it)"
                        .to_owned(),
                )
            });
            match &mut compensation {
                Some(c) => c.rejected.extend(rejected),
                None => {
                    compensation = Some(Compensation {
                        rejected: rejected.collect(),
                        client_version: entries.iter().map(|e| e.client_version).max().unwrap_or(0),
                        server_version: integrated.versions.last().copied().unwrap_or(self.latest),
                    })
                }
            }
        }
        Ok((integrated, compensation))
    }

    /// The objects each of an upload's new changesets (client versions above `done`) writes
    /// that were outside `client`'s view when the client made it, keyed by the changeset's
    /// index in the upload: the state holds them, the view held none of them at the server
    /// version the changeset is based on (a row that left the view after that base still
    /// counts: the client wrote to its copy before it integrated the leaving), and the set the
    /// client had then (the newest it integrated the bootstrap of by that version, or the
    /// active set if the server no longer records it) does not match them (asymmetric classes,
    /// which are upload-only, and objects the state does not hold, which the upload creates,
    /// are never outside). The client never held the server's copy of such an object, so its
    /// writes were based on nothing the server knows: an insert into a list the server holds
    /// non-empty would carry a `prior_size` the list does not have and fail the whole upload
    /// (212). Realm's server answers a write outside the view with a compensating write
    /// (`realm-wire-compat.md` section 4.7); so does this one. Found by the simulation's
    /// flexible sync seeds (`docs/testing.md`).
    ///
    /// Judged at the base, not against the view and set of now: a write the client made to an
    /// object of its view before a bootstrap took the object out is integrated (the client
    /// erases the object when it integrates the bootstrap, whatever it wrote, and the server
    /// keeps the write). Taking it out instead lost it on the server while the client kept
    /// it, whenever the client came back without the bootstrap and the server's record of its
    /// view was rolled back to hold the object again (flexible seeds 9324, 7957 and 6317).
    fn flx_outside_view(
        &mut self,
        client: u64,
        new: &[(usize, Changeset)],
        active: &Subscription,
    ) -> Result<BTreeMap<usize, BTreeSet<(String, Key)>>, ProtocolError> {
        let mut outside: BTreeMap<usize, BTreeSet<(String, Key)>> = BTreeMap::new();
        if new.iter().all(|(_, cs)| cs.instructions.is_empty()) {
            return Ok(outside);
        }
        let schemas = self.state.shared_schemas();
        // The set each changeset was made under, by base (bases only grow along an upload).
        let mut sets: BTreeMap<u64, Subscription> = BTreeMap::new();
        for (_, cs) in new {
            let base = cs.meta.last_integrated_remote_version;
            if let std::collections::btree_map::Entry::Vacant(slot) = sets.entry(base) {
                slot.insert(
                    self.flx_set_at(client, base)?
                        .unwrap_or_else(|| active.clone()),
                );
            }
        }
        // Their filters, compiled (or found in the cache) once per set.
        let mut filters = BTreeMap::new();
        for (base, set) in &sets {
            filters.insert(*base, self.resolve_filters(set, client));
        }
        // Whether an object was outside the view at a base, decided once per pair (an upload's
        // changesets often touch the same objects on the same base).
        let mut decided: BTreeMap<(u64, String, Key), bool> = BTreeMap::new();
        for (n, cs) in new {
            let base = cs.meta.last_integrated_remote_version;
            for (class, key) in super::touched_objects(cs) {
                let probe = (base, class, key);
                let is_outside = match decided.get(&probe) {
                    Some(d) => *d,
                    None => {
                        let d = self.flx_outside_at(client, &schemas, &filters[&base], &probe)?;
                        decided.insert(probe.clone(), d);
                        d
                    }
                };
                if is_outside {
                    let (_, class, key) = probe;
                    outside.entry(*n).or_default().insert((class, key));
                }
            }
        }
        Ok(outside)
    }

    /// Whether the object of `probe` (a base, a class and a primary key) was outside
    /// `client`'s view at that base, `filters` being those of the set the client had then
    /// ([`flx_outside_view`](Self::flx_outside_view)).
    fn flx_outside_at(
        &self,
        client: u64,
        schemas: &Schemas,
        filters: &BTreeMap<String, Option<Arc<Filter>>>,
        probe: &(u64, String, Key),
    ) -> Result<bool, ProtocolError> {
        let (base, class, key) = probe;
        if matches!(
            schemas.get(class.as_str()).map(|s| &s.spec),
            Some(TableSpec::TopLevel {
                asymmetric: true,
                ..
            })
        ) {
            return Ok(false);
        }
        if self.flx_row(class, key)?.is_none() || self.flx_in_view_at(client, class, key, *base)? {
            return Ok(false);
        }
        match filters.get(class.as_str()) {
            Some(Some(filter)) => Ok(!self.flx_matches(class, filter, key)?),
            _ => Ok(true),
        }
    }

    /// The subscription set whose bootstrap `client` had integrated at server version
    /// `version` (the newest bootstrapped by then), if the server still records it (sets
    /// older than the active set the client reported at its last IDENT are forgotten).
    fn flx_set_at(&self, client: u64, version: u64) -> Result<Option<Subscription>, ProtocolError> {
        let row: Option<(i64, String)> = self
            .flx_conn()
            .prepare_cached(
                "SELECT version, body FROM _flx_query
                 WHERE client = ?1 AND bootstrapped_at <= ?2 ORDER BY version DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![client as i64, version.min(i64::MAX as u64) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })
            .map_err(sql_err)?;
        match row {
            None => Ok(None),
            Some((version, body)) => Subscription::parse(version as u64, &body)
                .map(Some)
                .map_err(|why| corrupt(&format!("_flx_query ({why})"))),
        }
    }

    /// Records in `client`'s view the objects its upload created fresh (`fresh`: absent from
    /// the state before it was integrated) that exist now and its active set matches: it holds
    /// each exactly as the server does (nobody else can have written an object that did not
    /// exist), so the download does not send it back whole. Their copy is the upload's last
    /// server version `version`; later changes of others reach the client as usual. A row
    /// newer than the client's cursor is rolled back at its next IDENT, as any other, and the
    /// object is then sent whole once.
    fn flx_own_creations(
        &mut self,
        client: u64,
        active: &Subscription,
        version: u64,
        fresh: &BTreeSet<(String, Key)>,
    ) -> Result<(), ProtocolError> {
        if fresh.is_empty() {
            return Ok(());
        }
        let filters = self.resolve_filters(active, client);
        let mut entering = Vec::new();
        for (class, key) in fresh {
            if let Some(Some(filter)) = filters.get(class.as_str()) {
                if self.flx_matches(class, filter, key)? {
                    entering.push((class.clone(), key.clone()));
                }
            }
        }
        let stamp = Stamp {
            at: version,
            version: active.version,
            state_version: version,
        };
        self.flx_record(client, stamp, &entering, &[], &[], None)
    }

    /// Integrates an upload whose objects `touched` (of classes whose write filter is not
    /// `true`) must pass the write rules, and reverts those that do not.
    fn integrate_checked(
        &mut self,
        client: u64,
        entries: &[UploadEntry],
        rules: &FlxRules,
        user: &UserVars,
        touched: BTreeSet<(String, Key)>,
    ) -> Result<(Integrated, Option<Compensation>), ProtocolError> {
        if touched.is_empty() {
            return Ok((self.integrate_upload(client, entries)?, None));
        }
        // Before: whether each object exists, may be written, and its copy.
        let schemas = self.state.shared_schemas();
        let mut before: BTreeMap<(String, Key), (bool, Option<Object>)> = BTreeMap::new();
        for object in &touched {
            let (class, key) = object;
            let copy = self.state_object(&schemas, class, key)?;
            let allowed = match &copy {
                None => true,
                Some(_) => self.flx_writable(&schemas, rules, user, class, key)?,
            };
            before.insert(object.clone(), (allowed, copy));
        }
        // Released first: a copy held while integrating would make the state copy its schema.
        drop(schemas);
        let integrated = self.integrate_upload(client, entries)?;
        let schemas = self.state.shared_schemas();
        let mut rejected = Vec::new();
        let (mut restore, mut erase) = (Vec::new(), Vec::new());
        for ((class, key), (allowed_before, copy)) in before {
            let exists = self.flx_row(&class, &key)?.is_some();
            let allowed_after =
                !exists || self.flx_writable(&schemas, rules, user, &class, &key)?;
            if allowed_before && allowed_after {
                continue;
            }
            let reason = format!("write not allowed by the rules of class {class}");
            match copy {
                Some(object) => restore.push((class.clone(), key.clone(), object)),
                None => erase.push((class.clone(), key.clone())),
            }
            rejected.push((class, key, reason));
        }
        if rejected.is_empty() {
            return Ok((integrated, None));
        }
        let revert = crate::state::whole_objects(
            &schemas,
            false,
            usize::MAX,
            |emit| -> Result<(), ProtocolError> {
                for (class, key, object) in &restore {
                    emit(class, key, object);
                }
                Ok(())
            },
            &erase,
        )?
        .remove(0);
        let timestamp = entries
            .iter()
            .map(|e| e.origin_timestamp)
            .max()
            .unwrap_or(0)
            .max(now_timestamp())
            + 1;
        drop(schemas);
        let server_version = self.integrate_server_changeset(&revert, timestamp)?;
        tracing::info!(
            client,
            rejected = rejected.len(),
            server_version,
            "compensating write"
        );
        Ok((
            integrated,
            Some(Compensation {
                rejected,
                client_version: entries.iter().map(|e| e.client_version).max().unwrap_or(0),
                server_version,
            }),
        ))
    }

    /// The row of the object of `class` with `key` in the state, if it exists (a class the
    /// state does not have yet has no rows, nor a table).
    fn flx_row(&self, class: &str, key: &Key) -> Result<Option<i64>, ProtocolError> {
        if !matches!(
            self.state.schemas().get(class).map(|s| &s.spec),
            Some(TableSpec::TopLevel { .. })
        ) {
            return Ok(None);
        }
        tables::row_id(self.flx_conn(), class, key).map_err(sql_err)
    }

    /// The object of `class` with `key` in the state, if it exists (none for a class that is
    /// not top-level in the state, or no longer there).
    pub(super) fn state_object(
        &self,
        schemas: &Schemas,
        class: &str,
        key: &Key,
    ) -> Result<Option<Object>, ProtocolError> {
        let conn = self.flx_conn();
        match self.flx_row(class, key)? {
            None => Ok(None),
            Some(id) => tables::read_object(conn, schemas, class, id)
                .map(Some)
                .map_err(|e| state_err(e.into())),
        }
    }

    /// Whether the existing object of `class` with `key` matches the class's write filter for
    /// `user`. A filter that does not compile allows nothing.
    fn flx_writable(
        &self,
        schemas: &Schemas,
        rules: &FlxRules,
        user: &UserVars,
        class: &str,
        key: &Key,
    ) -> Result<bool, ProtocolError> {
        let Some(query) = rules.class(class).write.for_user(user) else {
            return Ok(false);
        };
        match compile(schemas, class, &query) {
            Ok(Some(filter)) => self.flx_matches(class, &filter, key),
            Ok(None) => Ok(false),
            Err(why) => {
                tracing::warn!(class, %why, "a write rule does not compile: nothing may be written");
                Ok(false)
            }
        }
    }

    /// Integrates a changeset the server makes (a compensating write), based on the latest
    /// version, as the upload of the server's own client file (allocated once per server file;
    /// its ident is never 0 nor any client's); its server version.
    pub(super) fn integrate_server_changeset(
        &mut self,
        changeset: &Changeset,
        origin_timestamp: u64,
    ) -> Result<u64, ProtocolError> {
        let existing: Option<i64> = self
            .conn
            .query_row("SELECT ident FROM server_writer", [], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        let writer = match existing {
            Some(ident) => ident as u64,
            None => {
                let (ident, _) = self.allocate_client_file()?;
                self.conn
                    .execute(
                        "DELETE FROM client_file_pending WHERE ident = ?1",
                        [ident as i64],
                    )
                    .and_then(|_| {
                        self.conn.execute(
                            "INSERT INTO server_writer (ident) VALUES (?1)",
                            [ident as i64],
                        )
                    })
                    .map_err(sql_err)?;
                ident
            }
        };
        self.mark_seen(writer, self.latest);
        let entry = UploadEntry {
            client_version: self.integrated_client_version(writer, self.latest)? + 1,
            last_integrated_server_version: self.latest,
            origin_timestamp,
            origin_file_ident: 0,
            changeset: changeset.encode(),
        };
        let integrated = self.integrate_upload(writer, &[entry])?;
        integrated.versions.last().copied().ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::OtherSessionError,
                "the compensating write was not integrated",
            )
        })
    }
}

/// The DOWNLOAD entries carrying `made`, changesets the server made, with `meta`
/// ([`ServerFile::flx_made_meta`]).
fn made_entries(made: &[Changeset], meta: &ChangesetMeta) -> Vec<DownloadEntry> {
    made.iter()
        .map(|cs| {
            let bytes = cs.encode();
            DownloadEntry {
                server_version: meta.version,
                last_integrated_client_version: meta.last_integrated_remote_version,
                origin_timestamp: meta.origin_timestamp,
                origin_file_ident: meta.origin_file_ident,
                original_changeset_size: bytes.len() as u64,
                changeset: bytes,
            }
        })
        .collect()
}

fn corrupt(what: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OtherSessionError,
        format!("server state is corrupt: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_view_encoding() {
        for key in [
            Key::Null,
            Key::Int(-5),
            Key::Int(i64::MAX),
            Key::String(String::new()),
            Key::String("ü x".into()),
            Key::GlobalKey(1, 2),
            Key::ObjectId([7; 12]),
            Key::Uuid([9; 16]),
        ] {
            assert_eq!(blob_key(&key_blob(&key)), Some(key.clone()), "{key:?}");
        }
        assert_eq!(blob_key(&[]), None);
        assert_eq!(blob_key(&[9]), None);
        assert_eq!(blob_key(&[1, 0]), None);
    }

    /// A subscription's query compiles to its filter alone, whatever the class is called; a
    /// query reading other objects (a link followed or compared) or ordering or limiting its
    /// matches is refused with the reason.
    #[test]
    fn subscription_queries_compile_to_their_filter_or_are_refused() {
        use crate::changeset::{CollectionType, PayloadType};
        use crate::state::{ColumnSpec, TableSchema};
        let column = |value_type, link_target: Option<&str>| ColumnSpec {
            value_type,
            link_target: link_target.map(str::to_owned),
            nullable: true,
            collection: CollectionType::Single,
            key_type: None,
        };
        let table = |columns: &[(&str, ColumnSpec)]| TableSchema {
            spec: TableSpec::TopLevel {
                pk_field: "_id".into(),
                pk_type: PayloadType::Int,
                pk_nullable: false,
                asymmetric: false,
            },
            columns: columns
                .iter()
                .map(|(n, c)| ((*n).to_owned(), c.clone()))
                .collect(),
        };
        let odd = "Task o WHERE 1 ORDER BY x";
        let mut schemas = Schemas::new();
        for class in ["Task", odd] {
            schemas.insert(
                class.to_owned(),
                table(&[
                    ("done", column(PayloadType::Bool, None)),
                    ("team", column(PayloadType::Link, Some("Team"))),
                ]),
            );
        }
        schemas.insert(
            "Team".to_owned(),
            table(&[("n", column(PayloadType::Int, None))]),
        );
        // A peer's query nested past the parser's bound is refused, not recursed into (a
        // hundred thousand levels overflowed a server thread's stack).
        let deep = format!("{}done == true{}", "(".repeat(100_000), ")".repeat(100_000));
        // A set of 1,500 subscriptions on one class, as a client joins them, compiles (a chain
        // of 1,000 ORs was deeper than SQLite takes).
        let many = (0..1500)
            .map(|i| format!("(_id == {i})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        // The membership statements bind four values after the filter's: SQLite's limit less
        // four is what a subscription may compare.
        let values = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            format!("_id IN {{{}}}", list.join(","))
        };
        assert!(compile(&schemas, "Task", &values(32_762))
            .unwrap()
            .is_some());
        let refused = compile(&schemas, "Task", &values(32_763)).err().unwrap();
        assert!(refused.contains("at most 32762 are supported"), "{refused}");
        let filter = compile(&schemas, "Task", &many).unwrap().unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            r#"CREATE TABLE "t:Task" (_pk INTEGER PRIMARY KEY, "p:done", "p:team")"#,
        )
        .unwrap();
        conn.prepare(&format!("SELECT 1 {}", filter.from_where))
            .unwrap();
        conn.prepare(&filter.match_sql).unwrap();
        for class in ["Task", odd] {
            let filter = compile(&schemas, class, "done == false").unwrap().unwrap();
            assert_eq!(filter.filter, "(o.\"p:done\" IS ?1)", "{class}");
            assert_eq!(
                filter.from_where,
                format!(
                    "FROM {} o WHERE {}",
                    tables::object_table(class),
                    filter.filter
                )
            );
            for (query, says) in [
                ("team.n == 1", "link paths are not supported"),
                ("team == NULL", "link paths are not supported"),
                ("done == true SORT(done ASC)", "SORT, DISTINCT and LIMIT"),
                ("TRUEPREDICATE LIMIT(1)", "SORT, DISTINCT and LIMIT"),
                (&deep, "more than 1000 levels deep"),
            ] {
                let refused = compile(&schemas, class, query).err();
                assert!(
                    refused.as_deref().is_some_and(|e| e.contains(says)),
                    "{query} on {class}: {refused:?}"
                );
            }
        }
    }

    #[test]
    fn subscription_bodies_parse_or_say_why_not() {
        let s = Subscription::parse(3, r#"{"Task":"(done == false )","Team":"TRUEPREDICATE"}"#)
            .unwrap();
        assert_eq!(s.version, 3);
        assert_eq!(s.queries["Task"], "(done == false )");
        assert_eq!(s.queries.len(), 2);
        assert!(Subscription::parse(0, "{}").unwrap().queries.is_empty());
        assert!(Subscription::parse(1, "[1]")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(Subscription::parse(1, r#"{"Task":1}"#)
            .unwrap_err()
            .contains("not a string"));
        assert!(Subscription::parse(1, "{")
            .unwrap_err()
            .contains("not JSON"));
    }
}
