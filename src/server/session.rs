//! One connection's sessions on the server: what each client message does to the server files
//! and which messages answer it, one function per message. Runs on blocking threads (the server
//! files are SQLite with `synchronous=FULL`); the network side lives in `net`, and what both
//! share in `shared`.
//!
//! Delivery is cursor-based: each session sends from its own download cursor in the stored
//! history, one DOWNLOAD batch (or STATE segment) at a time through [`Connection::outbound`], so
//! a session that lags costs latency, never data, and a connection holds at most one batch.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::admission::{self, Admitted};
use super::app::AppUser;
use super::auth::Claims;
use super::file::flx::{Compensation, SteadyFilters, Subscription};
use super::file::{DownloadBatch, DownloadPoint, ServerFile};
use super::realm;
use super::realm::rules::{FlxRules, UserVars};
use super::shared::Shared;

/// Largest STATE segment.
pub const STATE_SEGMENT: usize = 1 << 20;
use crate::protocol::{
    BatchState, ClientMessage, ErrorCode, FlxDownload, FlxQuery, ProtocolError, ServerMessage,
};

/// Who is on the other end of a connection, from its WebSocket handshake.
pub(super) enum Peer {
    /// Tandem's own dialect (`com.tandem.sync#N`): the handshake's bearer token, if any (BIND
    /// may carry its own).
    Tandem {
        handshake: Option<Result<Claims, ProtocolError>>,
    },
    /// A Realm client (`com.mongodb.realm-sync#N` on the App Services sync route): the user of
    /// its `baas_at` token. The connection is closed with 4001 when that token expires.
    Realm {
        user: AppUser,
        /// Sessions that were sent a session error: their UNBIND gets no UNBOUND.
        errored: HashSet<u64>,
        /// Flexible sync (`com.mongodb.realm-query-sync#14`): sessions bind
        /// [`realm::FLX_SERVER_PATH`] and get what their subscriptions match.
        flexible: bool,
    },
}

/// One connection's peer and bound sessions.
pub(super) struct Connection {
    pub(super) peer: Peer,
    pub(super) sessions: BTreeMap<u64, Session>,
    /// The user of the first session bound (the token's `sub`, a Realm user id): whose rate
    /// limits the connection spends.
    pub(super) user: Option<String>,
    /// The session [`Connection::next_behind`] chose last (round robin).
    last_served: u64,
    /// The connection's admission slot: session and ident caps, authentication.
    pub(super) admitted: Arc<Admitted>,
}

impl Connection {
    /// A connection with no session yet.
    pub(super) fn new(peer: Peer, admitted: Arc<Admitted>) -> Connection {
        Connection {
            peer,
            sessions: BTreeMap::new(),
            user: None,
            last_served: 0,
            admitted,
        }
    }

    /// Ends session `id`; whether it existed.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        let existed = self.sessions.remove(&id);
        if let Some(s) = &existed {
            tracing::info!(session = id, path = %s.path, user = self.user.as_deref().unwrap_or(""), "session unbound");
        }
        existed.is_some()
    }

    /// Whether a session has something to send now ([`Session::ready`]).
    pub(super) fn sending(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.sessions.values().any(|s| s.ready(now))
    }

    /// The earliest time a session waits for to try a failed download again.
    pub(super) fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.sessions
            .values()
            .filter(|s| s.behind)
            .filter_map(|s| s.retry_at)
            .min()
    }

    /// Marks every session bound to one of `paths` as having history to download.
    pub(super) fn changed(&mut self, paths: &BTreeSet<String>) {
        for s in self.sessions.values_mut() {
            if paths.contains(&s.path) {
                s.behind = true;
            }
        }
    }

    /// The sessions on `paths` that wait for the latest server version (a MARK, a subscription
    /// set to bootstrap) are behind: the latest version advanced past an empty server
    /// changeset ([`super::shared::Shared::advanced`]), which the others fetch with their next
    /// download.
    pub(super) fn advanced(&mut self, paths: &BTreeSet<String>) {
        for s in self.sessions.values_mut() {
            if paths.contains(&s.path) && s.waits_for_latest() {
                s.behind = true;
            }
        }
    }

    /// The next session that may have something to send, round robin by session id, with the
    /// FIFO its path's work waits in.
    pub(super) fn next_behind(&mut self) -> Option<(u64, Arc<tokio::sync::Mutex<()>>)> {
        let now = tokio::time::Instant::now();
        let behind = || self.sessions.iter().filter(|(_, s)| s.ready(now));
        let last = self.last_served;
        let (id, s) = behind()
            .filter(|(id, _)| **id > last)
            .min_by_key(|(id, _)| **id)
            .or_else(|| behind().min_by_key(|(id, _)| **id))?;
        let next = (*id, Arc::clone(&s.turn));
        self.last_served = next.0;
        Some(next)
    }

    /// The next message session `id` has to send (one DOWNLOAD batch, STATE segment or MARK),
    /// or `None` when it is up to date (it is then no longer behind).
    pub(super) fn outbound(&mut self, id: u64) -> Option<ServerMessage> {
        self.sessions.get_mut(&id)?.outbound(id)
    }

    /// [`Connection::outbound`] when it needs no blocking work, so that it can run on the
    /// connection's own task ([`Session::outbound_in_memory`]).
    pub(super) fn outbound_in_memory(&mut self, id: u64) -> InMemory {
        match self.sessions.get_mut(&id) {
            Some(session) => session.outbound_in_memory(id),
            None => InMemory::Blocking,
        }
    }

    /// The paths whose latest server version a bootstrap of these sessions advanced since the
    /// last call: the caller wakes their sessions ([`Shared::changed`]).
    pub(super) fn take_advanced(&mut self) -> Vec<String> {
        let mut paths = Vec::new();
        for s in self.sessions.values_mut() {
            if std::mem::take(&mut s.advanced) {
                paths.push(s.path.clone());
            }
        }
        paths
    }
}

/// A STATE snapshot being sent one segment at a time.
struct StateStream {
    version: u64,
    salt: u64,
    bytes: Arc<Vec<u8>>,
    /// Offset of the next segment.
    next: u64,
}

/// Most subscription sets a flexible sync session may have waiting for their bootstrap: each
/// costs a query over the server's state, so a client cannot queue unbounded work. realm-core
/// sends a new set per subscription change and waits for none, a few at a time.
pub const MAX_PENDING_QUERIES: usize = 64;
/// How long a session waits before building a download or bootstrap that failed again.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest subscription set body (IDENT, QUERY): realm-core's are a few hundred bytes.
pub const MAX_QUERY_BODY: usize = 1 << 20;

/// A flexible sync session's subscription sets (`realm-wire-compat.md` section 4.4).
struct Flexible {
    /// The set steady-state downloads are filtered by: the last one bootstrapped, or the one
    /// IDENT named.
    active: Subscription,
    /// Sets to bootstrap, oldest first (IDENT's when this server has not bootstrapped it, then
    /// each QUERY's).
    pending: VecDeque<Subscription>,
    /// The highest set version the client sent.
    newest: u64,
    /// Bootstrap messages built and not yet sent (the last one has `LastInBatch`).
    bootstrap: VecDeque<ServerMessage>,
    /// `active`'s compiled filters, kept between downloads.
    filters: SteadyFilters,
}

/// One bound session on a connection.
pub(super) struct Session {
    pub(super) path: String,
    /// When the session's access token expires (seconds since the Unix epoch); REFRESH moves it.
    /// Realm sessions never expire here: their connection is closed at the token's expiry.
    expires: u64,
    file: Arc<Mutex<ServerFile>>,
    /// The FIFO of blocking work on the path ([`Shared::turn`]).
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    /// Set by IDENT.
    client_file_ident: Option<u64>,
    /// Last server version sent to (or known by) the client.
    cursor: u64,
    /// A Realm client's session: DOWNLOAD's `upload_server_version` is then the server version
    /// its uploads were based on (`progress_server_version`, never above the download cursor),
    /// as realm-core checks (`Session::check_received_sync_progress`).
    realm: bool,
    /// The highest `progress_server_version` the client reported in an UPLOAD.
    upload_server_version: u64,
    /// A Tandem client's session: the highest client version this session may acknowledge in
    /// DOWNLOAD's `upload_client_version`: its IDENT's `download_client_version`, then the last
    /// entry of each UPLOAD (or TRANSACT) it integrated or checked as a resend
    /// (`ServerFile::integrate_upload`). A restored copy of a client file resends versions the
    /// server integrated from the other copy: acknowledging those before its UPLOAD is read
    /// would make the copy take them for its own and never send them, so the 210 its UPLOAD
    /// gets would never come (found by a new user's trial). `None` for a Realm client, which
    /// checks that this progress never goes back (`Session::check_received_sync_progress`).
    verified_upload: Option<u64>,
    /// MARKs not yet answered: request ident and the latest server version when it arrived,
    /// which the download cursor must reach first.
    marks: VecDeque<(u64, u64)>,
    /// The STATE snapshot being sent.
    state: Option<StateStream>,
    /// Whether the session may have something to send.
    pub(super) behind: bool,
    /// Largest DOWNLOAD body it builds at a time ([`super::SessionLimits::download_batch`]).
    batch: usize,
    /// Flexible sync sessions: their subscriptions (set by IDENT).
    flexible: Option<Flexible>,
    /// Whether the session is a flexible sync one (IDENT must carry a query).
    is_flexible: bool,
    /// Flexible sync: the user the rules are evaluated for.
    user_vars: UserVars,
    /// Flexible sync: the read and write rules.
    rules: Arc<FlxRules>,
    /// When a failed download or bootstrap is tried again ([`Session::try_again`]).
    retry_at: Option<tokio::time::Instant>,
    /// A bootstrap of this session gave the file a new server version (an empty changeset of
    /// the server, `ServerFile::flx_bootstrap`): the path's other sessions must be woken, or
    /// a session waiting for its cursor to reach the latest version (to bootstrap its own
    /// set) would wait for the path's next change ([`Connection::take_advanced`]).
    advanced: bool,
    /// Flexible sync: this session's claim on its client file (`ServerFile::flx_claim`, at
    /// IDENT); a later session's IDENT of the same file takes it over, and this one then
    /// sends nothing more.
    claim: Option<u64>,
    /// What the last DOWNLOAD batch found, from which the next one can be assembled in
    /// memory ([`Session::outbound_in_memory`]).
    known: Option<DownloadPoint>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let (Some(ident), Some(claim)) = (self.client_file_ident, self.claim) {
            // Never waits for a long integration on the async thread dropping the session:
            // a claim left behind is replaced by the file's next IDENT, or goes with the file.
            if let Ok(mut file) = self.file.try_lock() {
                file.flx_release(ident, claim);
            }
        }
    }
}

/// DOWNLOAD's `upload_client_version` for `integrated`, the last client version the server
/// integrated from the client file: at most `verified`, what the session checked
/// ([`Session::verified_upload`]; `None`: no bound, a Realm client).
fn acknowledgement(verified: Option<u64>, integrated: u64) -> u64 {
    verified.map_or(integrated, |verified| integrated.min(verified))
}

impl Session {
    /// Records that the UPLOAD (or TRANSACT) whose last entry is `last` was integrated, its
    /// resends checked ([`Session::verified_upload`]).
    fn verified(&mut self, last: Option<&crate::protocol::UploadEntry>) {
        if let (Some(verified), Some(last)) = (self.verified_upload.as_mut(), last) {
            *verified = (*verified).max(last.client_version);
        }
    }

    /// Whether the session waits for its download cursor to reach the file's latest version:
    /// a MARK to answer, or a subscription set whose bootstrap waits for it.
    fn waits_for_latest(&self) -> bool {
        !self.marks.is_empty()
            || self
                .flexible
                .as_ref()
                .is_some_and(|f| !f.pending.is_empty() || !f.bootstrap.is_empty())
    }

    /// Whether the session's token has expired (it gets no downloads until REFRESH).
    pub(super) fn expired(&self) -> bool {
        self.expires <= super::unix_now()
    }

    /// The client file ident, or 109 for a message (`what`) sent before IDENT.
    fn ident(&self, what: &str) -> Result<u64, Failure> {
        self.client_file_ident.ok_or_else(|| {
            (
                ProtocolError::new(ErrorCode::BadMessageOrder, format!("{what} before IDENT")),
                0,
            )
        })
    }

    /// The next message to send: a STATE segment while a snapshot is being sent, else one
    /// DOWNLOAD batch from the cursor, else a MARK whose version the cursor reached.
    fn outbound(&mut self, id: u64) -> Option<ServerMessage> {
        self.retry_at = None;
        let message = self
            .state_segment(id)
            .or_else(|| self.bootstrap(id))
            .or_else(|| self.download(id, false))
            .or_else(|| self.mark(id));
        self.behind = message.is_some() || self.retry_at.is_some();
        message
    }

    /// [`Session::outbound`] on the connection's task, while the file is not locked by other
    /// work: for a partition-based session past its STATE snapshot whose last DOWNLOAD batch
    /// left it where the server file's newest rows, kept in memory, take over
    /// ([`ServerFile::download_in_memory`]: no I/O); for a flexible sync session with no set
    /// to bootstrap, a few changesets behind, whose view the batch leaves as it is
    /// ([`ServerFile::flx_download_unchanged`]: a few indexed reads, no write). This is what
    /// a session sends after a change on its path: it needs no blocking thread and no turn in
    /// the path's FIFO (issue 18, goal 5: fan-out). [`InMemory::Busy`] when the file is
    /// locked, [`InMemory::Blocking`] when it cannot answer: [`Session::outbound`] does then.
    fn outbound_in_memory(&mut self, id: u64) -> InMemory {
        let (Some(ident), Some(known)) = (self.client_file_ident, self.known) else {
            return InMemory::Blocking;
        };
        if self.state.is_some() || self.expired() {
            return InMemory::Blocking;
        }
        // Sets to bootstrap, and their messages, go through `outbound`.
        if let Some(f) = &self.flexible {
            if !f.pending.is_empty() || !f.bootstrap.is_empty() {
                return InMemory::Blocking;
            }
        }
        let mut file = match self.file.try_lock() {
            Ok(file) => file,
            Err(std::sync::TryLockError::WouldBlock) => return InMemory::Busy,
            Err(std::sync::TryLockError::Poisoned(_)) => return InMemory::Blocking,
        };
        let batch = match &mut self.flexible {
            None => file.download_in_memory(ident, self.cursor, self.batch, known),
            Some(f) => match self.claim {
                Some(claim) if file.flx_serves(ident, claim) => {
                    let (query, filters) = (&f.active, &mut f.filters);
                    file.flx_download_unchanged(
                        ident,
                        self.cursor,
                        self.batch,
                        query,
                        filters,
                        known,
                    )
                }
                _ => None,
            },
        };
        drop(file);
        let Some(batch) = batch else {
            return InMemory::Blocking;
        };
        self.known = Some(batch.point(known.generation));
        self.retry_at = None;
        let message = self
            .download_message(id, batch, false)
            .or_else(|| self.mark(id));
        self.behind = message.is_some();
        InMemory::Built(message)
    }

    /// A download or bootstrap that failed on a storage fault (201: a full disk, a lost lock)
    /// is built again after [`RETRY_AFTER`], not only when the path changes next: a path that
    /// stays quiet would otherwise leave the session behind for good (found by the flexible
    /// sync simulation, `docs/testing.md`).
    fn try_again(&mut self) -> Option<ServerMessage> {
        self.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
        self.behind = true;
        None
    }

    /// Whether the session has something to send now (behind, and not waiting to try a failed
    /// download again).
    pub(super) fn ready(&self, now: tokio::time::Instant) -> bool {
        self.behind && self.retry_at.map_or(true, |at| at <= now)
    }

    fn state_segment(&mut self, id: u64) -> Option<ServerMessage> {
        let stream = self.state.as_mut()?;
        let total = stream.bytes.len() as u64;
        let begin = stream.next;
        let end = (begin + STATE_SEGMENT as u64).min(total);
        stream.next = end;
        let segment = ServerMessage::State {
            session: id,
            server_version: stream.version,
            server_version_salt: stream.salt,
            begin_offset: begin,
            end_offset: end,
            total_size: total,
            segment: stream.bytes[begin as usize..end as usize].to_vec(),
        };
        if end >= total {
            self.state = None;
        }
        Some(segment)
    }

    /// The next bootstrap message of a flexible sync session: one already built, or the first
    /// of a new bootstrap of its oldest pending set once its cursor is at the latest version
    /// (so that nothing between them is skipped); a set that cannot be evaluated any more gets
    /// QUERY_ERROR.
    fn bootstrap(&mut self, id: u64) -> Option<ServerMessage> {
        let ident = self.client_file_ident?;
        // A bootstrap is a read of current data: none while the token is expired.
        if self.expired() {
            return None;
        }
        let flexible = self.flexible.as_mut()?;
        if let Some(message) = flexible.bootstrap.pop_front() {
            return Some(message);
        }
        let query = flexible.pending.front()?.clone();
        let mut file = lock_read(&self.file);
        if self.cursor != file.latest_version() || !file.flx_serves(ident, self.claim?) {
            return None;
        }
        let latest = file.latest_version();
        let built = file.flx_bootstrap(ident, &query);
        if file.latest_version() > latest {
            self.advanced = true;
        }
        let generation = file.generation();
        drop(file);
        let flexible = self.flexible.as_mut()?;
        let built = match built {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(Ok(why)) => {
                flexible.pending.pop_front();
                return Some(ServerMessage::QueryError {
                    code: u64::from(ErrorCode::BadQuery.code()),
                    session: id,
                    query_version: query.version,
                    message: why,
                });
            }
            Err(Err(e)) if e.code == ErrorCode::OtherSessionError => {
                tracing::warn!(session = id, error = %e, "flexible sync bootstrap failed; trying again");
                return self.try_again();
            }
            Err(Err(e)) => {
                tracing::warn!(session = id, error = %e, "flexible sync bootstrap failed");
                return None;
            }
        };
        flexible.pending.pop_front();
        // Split into messages of at most `batch` bytes of body (at least one entry each).
        let mut batches: Vec<Vec<crate::protocol::DownloadEntry>> = vec![Vec::new()];
        let mut bytes = 0;
        for entry in built.entries {
            let last = batches.last_mut().expect("one batch");
            if !last.is_empty() && bytes + entry.encoded_len() > self.batch {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += entry.encoded_len();
            batches.last_mut().expect("one batch").push(entry);
        }
        let client_version = batches
            .iter()
            .flatten()
            .map(|e| e.last_integrated_client_version)
            .max()
            .unwrap_or(0);
        let count = batches.len();
        let upload_server_version = self.upload_server_version.min(built.version);
        for (i, entries) in batches.into_iter().enumerate() {
            let last = i + 1 == count;
            flexible.bootstrap.push_back(ServerMessage::Download {
                session: id,
                download_server_version: built.version,
                download_client_version: client_version,
                latest_server_version: built.version,
                latest_server_version_salt: built.salt,
                upload_client_version: acknowledgement(self.verified_upload, client_version),
                upload_server_version,
                downloadable_bytes: 0,
                flx: Some(FlxDownload {
                    query_version: query.version,
                    batch_state: if last {
                        BatchState::LastInBatch
                    } else {
                        BatchState::MoreToCome
                    },
                    progress_estimate: (i + 1) as f64 / count as f64,
                }),
                entries,
            });
        }
        self.cursor = built.version;
        self.known = Some(DownloadPoint {
            cursor: built.version,
            client_version: built.client_version,
            generation,
        });
        flexible.active = query;
        flexible.filters = SteadyFilters::default();
        flexible.bootstrap.pop_front()
    }

    fn mark(&mut self, id: u64) -> Option<ServerMessage> {
        let &(request_ident, version) = self.marks.front()?;
        // Before IDENT there is nothing to download first.
        if self.client_file_ident.is_some() && self.cursor < version {
            return None;
        }
        // Flexible sync: a set is Complete at the MARK after its last bootstrap message
        // (`realm-wire-compat.md` section 4.4), so a MARK waits for pending bootstraps, except
        // while the history is empty (nothing can carry one yet).
        if let Some(f) = &self.flexible {
            let waiting = !f.bootstrap.is_empty()
                || (!f.pending.is_empty() && lock_read(&self.file).latest_version() > 0);
            if waiting {
                return None;
            }
        }
        self.marks.pop_front();
        Some(ServerMessage::Mark {
            session: id,
            request_ident,
        })
    }

    /// One DOWNLOAD batch (at most `batch` bytes of body) from the cursor, which it
    /// advances; `force`: one even if empty, as an upload acknowledgement. Nothing before IDENT
    /// or while the token is expired.
    fn download(&mut self, id: u64, force: bool) -> Option<ServerMessage> {
        let ident = self.client_file_ident?;
        if self.expired() {
            return None;
        }
        // A bootstrap's messages go out together: the client integrates them as one, and a
        // DOWNLOAD between them (an upload's acknowledgement) would reach it first.
        if self
            .flexible
            .as_ref()
            .is_some_and(|f| !f.bootstrap.is_empty())
        {
            self.behind = true;
            return None;
        }
        let mut file = lock_read(&self.file);
        let batch = match &mut self.flexible {
            Some(f) => {
                // Replaced by a later session of the same client file: nothing more.
                if !file.flx_serves(ident, self.claim?) {
                    return None;
                }
                // A session waiting for its first bootstrap with nothing in its view skips
                // the history (the bootstrap carries everything).
                let skip = match f.pending.is_empty() {
                    true => Ok(None),
                    false => file.flx_skip_to_latest(ident, self.cursor),
                };
                skip.and_then(|skip| match skip {
                    Some(batch) => Ok(batch),
                    None => {
                        let (query, filters) = (&f.active, &mut f.filters);
                        file.flx_download(
                            ident,
                            self.cursor,
                            self.batch,
                            query,
                            filters,
                            self.known,
                        )
                    }
                })
            }
            None => file.download(ident, self.cursor, self.batch),
        };
        if let Ok(batch) = &batch {
            self.known = Some(batch.point(file.generation()));
        }
        drop(file);
        let batch = match batch {
            Ok(batch) => batch,
            // A storage fault (201) passes: build it again shortly.
            Err(e) if e.code == ErrorCode::OtherSessionError => {
                tracing::warn!(session = id, error = %e, "download failed; trying again");
                return self.try_again();
            }
            Err(e) => {
                tracing::warn!(session = id, error = %e, "download failed");
                return None;
            }
        };
        self.download_message(id, batch, force)
    }

    /// The DOWNLOAD of `batch` from the cursor, which it advances; `None` if the batch does
    /// not advance it, unless `force`.
    fn download_message(
        &mut self,
        id: u64,
        batch: DownloadBatch,
        force: bool,
    ) -> Option<ServerMessage> {
        let progressed = batch.download_server_version > self.cursor;
        if !(progressed || force) {
            return None;
        }
        self.cursor = batch.download_server_version;
        // More may follow.
        self.behind = true;
        let upload_server_version = if self.realm {
            self.upload_server_version
                .min(batch.download_server_version)
        } else {
            batch.latest_server_version
        };
        Some(ServerMessage::Download {
            session: id,
            download_server_version: batch.download_server_version,
            download_client_version: batch.download_client_version,
            latest_server_version: batch.latest_server_version,
            latest_server_version_salt: batch.latest_server_version_salt,
            upload_client_version: acknowledgement(
                self.verified_upload,
                batch.upload_client_version,
            ),
            upload_server_version,
            downloadable_bytes: batch.downloadable_bytes,
            flx: self.flexible.as_ref().map(|f| FlxDownload {
                query_version: f.active.version,
                batch_state: BatchState::SteadyState,
                progress_estimate: if batch.latest_server_version == 0 {
                    1.0
                } else {
                    batch.download_server_version as f64 / batch.latest_server_version as f64
                },
            }),
            entries: batch.entries,
        })
    }
}

/// What [`Session::outbound_in_memory`] did.
pub(super) enum InMemory {
    /// Built the session's next message (`None`: nothing to send, it is up to date).
    Built(Option<ServerMessage>),
    /// The server file was locked by other work: the caller may try again shortly, as the
    /// in-memory work that holds it most often (another session's) takes microseconds.
    Busy,
    /// It needs blocking work: [`Session::outbound`] on a blocking thread.
    Blocking,
}

fn no_session(id: u64) -> Failure {
    (
        ProtocolError::new(ErrorCode::BadSessionIdent, format!("no session {id}")),
        0,
    )
}

/// The session `id`, if it exists and its token has not expired (202 then: the client refreshes
/// its token with REFRESH or reconnects with a new one).
fn bound(sessions: &mut BTreeMap<u64, Session>, id: u64) -> Result<&mut Session, Failure> {
    let session = sessions.get_mut(&id).ok_or_else(|| no_session(id))?;
    if session.expired() {
        return Err((
            ProtocolError::new(
                ErrorCode::TokenExpired,
                "the access token expired; send REFRESH with a new one",
            ),
            id,
        ));
    }
    Ok(session)
}

/// The server file behind `file`, locked for this thread and, with `--database`, brought up to
/// PostgreSQL under the file's lock there, held until the guard is dropped
/// ([`ServerFile::acquire`]). If that fails, the error is logged and the caller gets 201
/// (try again): nothing is decided on a copy that may be behind.
pub(super) fn lock(file: &Mutex<ServerFile>) -> Result<FileGuard<'_>, ProtocolError> {
    let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = guard.acquire() {
        tracing::error!(code = e.code.code(), error = %e.message, "bringing a server file up to the database failed");
        return Err(ProtocolError::new(e.code, "server storage failed"));
    }
    Ok(FileGuard(guard))
}

/// [`lock`] for reading: with `--database`, the file's lock in PostgreSQL is taken only to
/// catch a working copy up that is behind what this process has heard of, and not kept
/// ([`ServerFile::refresh`]). Only for downloads, which a woken session repeats when more
/// arrives: a copy may lag a change another process made until its notification arrives, so
/// nothing that checks a client's position (IDENT, MARK) may use it. A failure is logged and
/// the copy answers as it was (a copy that could not be reread is stale and answers 201).
pub(super) fn lock_read(file: &Mutex<ServerFile>) -> FileGuard<'_> {
    let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = guard.refresh() {
        tracing::error!(code = e.code.code(), error = %e.message, "bringing a server file up to the database failed");
    }
    FileGuard(guard)
}

/// A locked server file ([`lock`]); dropping it releases the file's database lock.
pub(super) struct FileGuard<'a>(std::sync::MutexGuard<'a, ServerFile>);

impl std::ops::Deref for FileGuard<'_> {
    type Target = ServerFile;
    fn deref(&self) -> &ServerFile {
        &self.0
    }
}

impl std::ops::DerefMut for FileGuard<'_> {
    fn deref_mut(&mut self) -> &mut ServerFile {
        &mut self.0
    }
}

impl Drop for FileGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

pub(super) fn error(code: ErrorCode, message: &str, session: u64) -> ServerMessage {
    ServerMessage::Error {
        code: u64::from(code.code()),
        message: message.to_owned(),
        try_again: code.try_again(),
        session,
    }
}

/// A server path as a file name: the SHA-256 of its bytes in hex and `.sqlite` (71 bytes for
/// any path up to the protocol's 1,024 bytes; no path can escape the data directory). Files of
/// servers before issue 13 (hex of the path's bytes) are still opened under their old name.
pub fn file_name(path: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.sqlite")
}

/// The file name servers before issue 13 used: the hex of the path's bytes (too long for paths
/// over 123 bytes). An existing file under this name is still opened.
pub(super) fn legacy_file_name(path: &str) -> String {
    let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.sqlite")
}

/// The path of a server path's file in `data_dir`: the legacy hex name if such a file exists
/// (servers before issue 13), else [`file_name`].
pub(super) fn file_path(data_dir: &std::path::Path, path: &str) -> std::path::PathBuf {
    let legacy = legacy_file_name(path);
    // 255 bytes is the longest file name of common file systems; longer legacy names never
    // existed.
    if legacy.len() <= 255 {
        let legacy = data_dir.join(legacy);
        if legacy.exists() {
            return legacy;
        }
    }
    data_dir.join(file_name(path))
}

/// The open server file of `path`, opened (or created) on first use. A storage failure is
/// logged in full and reported to the client without server-side file names: "server storage
/// failed" with the error's code.
pub(super) fn open_file(
    shared: &Shared,
    path: &str,
) -> Result<Arc<Mutex<ServerFile>>, ProtocolError> {
    let mut files = shared.files.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = files.get(path) {
        return Ok(Arc::clone(f));
    }
    #[cfg(feature = "postgres")]
    let (file_path, opened) = match &shared.postgres {
        Some(pg) => {
            let file_path = shared
                .config
                .data_dir
                .join(super::postgres::CACHE_DIR)
                .join(file_name(path));
            let opened = ServerFile::open_replica(
                &file_path,
                pg,
                path,
                Arc::clone(&shared.disk),
                &shared.config.storage,
            );
            (file_path, opened)
        }
        None => open_local(shared, path),
    };
    #[cfg(not(feature = "postgres"))]
    let (file_path, opened) = open_local(shared, path);
    let opened = opened.map(|mut file| {
        file.set_client_file_expiry(shared.config.connection_limits.client_file_expiry);
        file
    });
    let file = opened.map_err(|e| {
        tracing::error!(
            server_path = path,
            file = %file_path.display(),
            code = e.code.code(),
            error = %e.message,
            "opening a server file failed"
        );
        ProtocolError::new(e.code, "server storage failed")
    })?;
    shared.metrics.server_files_open.inc();
    shared
        .metrics
        .history_changesets
        .inc_by(file.history_len() as i64);
    let file = Arc::new(Mutex::new(file));
    files.insert(path.to_owned(), Arc::clone(&file));
    Ok(file)
}

/// Opens (or creates) the server file of `path` in the data directory.
fn open_local(
    shared: &Shared,
    path: &str,
) -> (std::path::PathBuf, Result<ServerFile, ProtocolError>) {
    let file_path = file_path(&shared.config.data_dir, path);
    let opened =
        ServerFile::open_with(&file_path, Arc::clone(&shared.disk), &shared.config.storage)
            .and_then(|file| {
                file.record_server_path(path)?;
                Ok(file)
            });
    (file_path, opened)
}

/// The server path a server file of the data directory holds: the `server_path` its meta table
/// records ([`ServerFile::record_server_path`]), or, for a file named by servers before issue 13
/// that was never opened since, the path its hex name spells. `None` for anything else (the
/// App Services store, WAL files).
fn server_path_of(file: &std::path::Path) -> Option<String> {
    let name = file.file_name()?.to_str()?.strip_suffix(".sqlite")?;
    if let Some(path) = ServerFile::stored_server_path(file) {
        return Some(path);
    }
    if name.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok().filter(|p| p.starts_with('/'))
}

/// How often idle server files are looked for and the history compacted (when configured).
const COMPACTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Starts the task that closes server files no session has used for
/// [`super::file::StorageConfig::file_idle_close`] and, with a history horizon, compacts every
/// server file of the data directory once an hour (the first time an hour after start).
pub(super) fn start_sweeper(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let idle_close = shared.config.storage.file_idle_close;
    let tick = (idle_close / 2).clamp(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(30),
    );
    crate::sim::spawn_task(async move {
        let mut idle_since: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
        let mut last_compaction = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let Some(shared) = weak.upgrade() else { return };
            if *shared.stop.borrow() {
                return;
            }
            let closed = close_idle(&shared, &mut idle_since, idle_close);
            let compact = shared.config.storage.history_horizon.is_some()
                && last_compaction.elapsed() >= COMPACTION_INTERVAL;
            if closed.is_empty() && !compact {
                continue;
            }
            let worker = Arc::clone(&shared);
            let _ = crate::sim::blocking(move || {
                // Closing runs SQLite's last checkpoint: off the runtime's workers.
                drop(closed);
                if let Some(horizon) = worker.config.storage.history_horizon.filter(|_| compact) {
                    for (path, result) in compact_all(&worker, super::unix_now().saturating_sub(horizon.as_secs())) {
                        match result {
                            Ok(report) => tracing::info!(path, ?report, "history compacted"),
                            Err(e) => tracing::error!(path, error = %e.message, "history compaction failed"),
                        }
                    }
                }
            })
            .await;
            if compact {
                last_compaction = tokio::time::Instant::now();
            }
        }
    });
}

/// Removes from the open files those only the map has held for `idle_close`; returns them
/// (dropping one closes it).
fn close_idle(
    shared: &Shared,
    idle_since: &mut BTreeMap<String, tokio::time::Instant>,
    idle_close: std::time::Duration,
) -> Vec<Arc<Mutex<ServerFile>>> {
    let mut files = shared.files.lock().unwrap_or_else(|e| e.into_inner());
    let now = tokio::time::Instant::now();
    idle_since.retain(|path, _| files.get(path).is_some_and(|f| Arc::strong_count(f) == 1));
    let mut closed = Vec::new();
    let paths: Vec<String> = files.keys().cloned().collect();
    for path in paths {
        let idle = files.get(&path).is_some_and(|f| Arc::strong_count(f) == 1);
        if !idle {
            continue;
        }
        let since = *idle_since.entry(path.clone()).or_insert(now);
        if now.duration_since(since) >= idle_close {
            if let Some(file) = files.remove(&path) {
                idle_since.remove(&path);
                shared.metrics.server_files_open.dec();
                // Memory only: no database round trip on this async thread.
                let rows = file.lock().unwrap_or_else(|e| e.into_inner()).history_len();
                shared.metrics.history_changesets.dec_by(rows as i64);
                tracing::debug!(path, "server file closed after idling");
                closed.push(file);
            }
        }
    }
    closed
}

/// Compacts every server file of the data directory ([`ServerFile::compact`] with
/// `horizon_unix_secs`): each server path and what its compaction did.
pub(super) fn compact_all(
    shared: &Shared,
    horizon_unix_secs: u64,
) -> Vec<(String, Result<super::file::CompactionReport, ProtocolError>)> {
    let Ok(dir) = std::fs::read_dir(&shared.config.data_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(path) = server_path_of(&entry.path()) else {
            continue;
        };
        let result = open_file(shared, &path).and_then(|f| {
            let mut file = lock(&f)?;
            let before = file.history_len();
            let report = file.compact(horizon_unix_secs)?;
            let after = file.history_len();
            shared
                .metrics
                .history_changesets
                .dec_by(before.saturating_sub(after) as i64);
            Ok(report)
        });
        out.push((path, result));
    }
    out
}

/// Tandem-only messages are unknown messages (102) in the Realm dialect.
fn tandem_only(name: &str) -> Replies {
    Err((
        ProtocolError::new(
            ErrorCode::UnknownMessage,
            format!("{name} is not part of the Realm sync protocol"),
        ),
        0,
    ))
}

/// Where a BIND goes.
struct Target {
    /// The server path.
    path: String,
    /// When its authorization ends (seconds since the Unix epoch).
    expires: u64,
    /// Whether it is a Realm session.
    realm: bool,
    /// Whether it is a flexible sync session.
    flexible: bool,
    /// Who (the token's `sub`, the Realm user id).
    user: String,
}

/// Where a BIND goes, and who asks. Tandem: the path as sent, authorized by the BIND's or the handshake's token. Realm:
/// the partition's server path ([`realm::partition`]), if the permission rules allow the user.
fn bind_target(
    shared: &Shared,
    peer: &Peer,
    path: String,
    token: &str,
) -> Result<Target, ProtocolError> {
    match peer {
        Peer::Realm {
            user,
            flexible: true,
            ..
        } => {
            // The BIND body is JSON (`{"schemaVersion":n,"sessionReason":0|1}`,
            // `realm-wire-compat.md` section 4.1): checked, not matched byte for byte.
            let body: serde_json::Value = serde_json::from_str(&path).map_err(|e| {
                ProtocolError::new(
                    ErrorCode::IllegalRealmPath,
                    format!("a flexible sync BIND carries a JSON object: {e}"),
                )
            })?;
            if !body.is_object() {
                return Err(ProtocolError::new(
                    ErrorCode::IllegalRealmPath,
                    "a flexible sync BIND carries a JSON object",
                ));
            }
            Ok(Target {
                path: realm::FLX_SERVER_PATH.to_owned(),
                expires: u64::MAX,
                realm: true,
                flexible: true,
                user: user.user_id.clone(),
            })
        }
        Peer::Realm { user, .. } => {
            let partition = realm::partition::partition(&path)?;
            if !shared.permissions.allows(&user.user_id, &partition) {
                return Err(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!("user {} may not sync partition {path}", user.user_id),
                ));
            }
            Ok(Target {
                path: partition.server_path,
                expires: u64::MAX,
                realm: true,
                flexible: false,
                user: user.user_id.clone(),
            })
        }
        Peer::Tandem { handshake } => {
            if !path.starts_with('/') || path.contains('\0') {
                return Err(ProtocolError::new(
                    ErrorCode::IllegalRealmPath,
                    format!("illegal server path {path:?}"),
                ));
            }
            let claims = if token.is_empty() {
                match handshake {
                    Some(Ok(c)) => c.clone(),
                    _ => {
                        return Err(ProtocolError::new(
                            ErrorCode::BadAuthentication,
                            "no access token",
                        ))
                    }
                }
            } else {
                shared.config.auth.verify(token)?
            };
            if !claims.allows(&path) {
                return Err(ProtocolError::new(
                    ErrorCode::PermissionDenied,
                    format!("the token does not allow {path}"),
                ));
            }
            Ok(Target {
                // A Tandem session on the flexible sync file is a flexible sync session too:
                // the subscriptions and the rules decide what it gets.
                flexible: path == realm::FLX_SERVER_PATH,
                path,
                expires: claims.exp,
                realm: false,
                user: claims.sub,
            })
        }
    }
}

/// Checks a Realm client's claim about the latest server version it has seen: a server
/// restored from an older backup does not have it (209), or has it with another salt (211).
/// Both reset the client (`realm-sync.md` section 8; realm-core's server uses the same codes).
fn check_latest(
    file: &ServerFile,
    latest_server_version: u64,
    latest_server_version_salt: u64,
) -> Result<(), ProtocolError> {
    if latest_server_version > file.latest_version() {
        return Err(ProtocolError::new(
            ErrorCode::BadServerVersion,
            format!(
                "the client has seen server version {latest_server_version}, this server only has \
                 {}: it was restored from an older backup",
                file.latest_version()
            ),
        ));
    }
    if latest_server_version > 0
        && latest_server_version_salt != file.version_salt(latest_server_version)?
    {
        return Err(ProtocolError::new(
            ErrorCode::DivergingHistories,
            "the client's server version salt is not this server's: the history was replaced",
        ));
    }
    Ok(())
}

/// Handles one message of a connection: what it does to the server files and the replies, or
/// the error to report and the session it ends (0: the connection). Replies hold at most one
/// DOWNLOAD batch or STATE segment per message; the rest follows through [`Connection::outbound`].
pub(super) fn handle(
    shared: &Shared,
    connection: &mut Connection,
    bytes: &[u8],
) -> Result<Vec<ServerMessage>, (ProtocolError, u64)> {
    if before_parsing(connection, bytes)? == Verdict::Ignore {
        return Ok(Vec::new());
    }
    let message = ClientMessage::parse(bytes, &shared.config.limits).map_err(|e| (e, 0))?;
    let is_realm = matches!(connection.peer, Peer::Realm { .. });
    // Changesets stamped too far ahead of the server's clock would win every conflict.
    let skew = match &message {
        ClientMessage::Upload { entries, .. } => connection
            .admitted
            .check_clock_skew(admission::timestamps(entries), admission::now_ms()),
        ClientMessage::Transact {
            origin_timestamp, ..
        } => connection
            .admitted
            .check_clock_skew([*origin_timestamp], admission::now_ms()),
        _ => Ok(()),
    };
    skew.map_err(|e| (e, 0))?;
    match message {
        ClientMessage::Bind {
            session,
            path,
            token,
            need_client_file_ident,
            ..
        } => on_bind(
            shared,
            connection,
            session,
            path,
            &token,
            need_client_file_ident,
        ),
        ClientMessage::Ident {
            session,
            client_file_ident,
            client_file_ident_salt,
            download_server_version,
            download_client_version,
            latest_server_version,
            latest_server_version_salt,
            query,
        } => on_ident(
            bound(&mut connection.sessions, session)?,
            session,
            Ident {
                ident: client_file_ident,
                salt: client_file_ident_salt,
                download_server_version,
                download_client_version,
                latest_server_version,
                latest_server_version_salt,
                query,
            },
        ),
        ClientMessage::Query { session, query } => {
            on_query(bound(&mut connection.sessions, session)?, session, query)
        }
        ClientMessage::Upload {
            session,
            progress_server_version,
            entries,
            ..
        } => on_upload(
            shared,
            bound(&mut connection.sessions, session)?,
            session,
            progress_server_version,
            &entries,
        ),
        ClientMessage::Mark {
            session,
            request_ident,
        } => on_mark(
            bound(&mut connection.sessions, session)?,
            session,
            request_ident,
        ),
        ClientMessage::Refresh { .. } if is_realm => tandem_only("REFRESH"),
        ClientMessage::StateRequest { .. } if is_realm => tandem_only("STATE_REQUEST"),
        ClientMessage::ClientVersionRequest { .. } if is_realm => {
            tandem_only("CLIENT_VERSION_REQUEST")
        }
        ClientMessage::Transact { .. } if is_realm => tandem_only("TRANSACT"),
        ClientMessage::Refresh { session, token } => {
            on_refresh(shared, &mut connection.sessions, session, &token)
        }
        ClientMessage::ClientVersionRequest {
            session,
            client_file_ident,
            client_file_ident_salt,
        } => on_client_version_request(
            bound(&mut connection.sessions, session)?,
            session,
            client_file_ident,
            client_file_ident_salt,
        ),
        ClientMessage::StateRequest {
            session,
            server_version,
            offset,
        } => on_state_request(
            bound(&mut connection.sessions, session)?,
            session,
            server_version,
            offset,
        ),
        ClientMessage::Transact {
            session,
            request_ident,
            client_version,
            last_integrated_server_version,
            origin_timestamp,
            changeset,
        } => on_transact(
            shared,
            bound(&mut connection.sessions, session)?,
            session,
            request_ident,
            crate::protocol::UploadEntry {
                client_version,
                last_integrated_server_version,
                origin_timestamp,
                origin_file_ident: 0,
                changeset,
            },
        ),
        ClientMessage::Unbind { session } => Ok(on_unbind(connection, session)),
        ClientMessage::Ping { timestamp, .. } => Ok(vec![ServerMessage::Pong { timestamp }]),
        ClientMessage::JsonError { session, code, .. } => {
            Ok(on_json_error(connection, session, code))
        }
    }
}

/// What to do with a message after its header line was read.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Parse,
    /// A Realm session that was sent a session error: realm-core's server ignores its messages
    /// until UNBIND (the client may have sent IDENT, MARK and UPLOAD right behind its BIND).
    Ignore,
}

/// Checks a message's session from its header line alone, before its body is parsed: a body
/// that may be compressed (UPLOAD, TRANSACT) is inflated only for a bound session whose token
/// is valid and which sent IDENT (issue 13 item 8: no inflation before authentication).
fn before_parsing(connection: &mut Connection, bytes: &[u8]) -> Result<Verdict, Failure> {
    let Some((name, id)) = ClientMessage::peek_session(bytes) else {
        return Ok(Verdict::Parse);
    };
    if let Peer::Realm { errored, .. } = &connection.peer {
        if !matches!(name, "bind" | "unbind") && errored.contains(&id) {
            return Ok(Verdict::Ignore);
        }
    }
    if ClientMessage::has_compressed_body(name) {
        let s = bound(&mut connection.sessions, id)?;
        if s.client_file_ident.is_none() {
            return Err((
                ProtocolError::new(
                    ErrorCode::BadMessageOrder,
                    format!("{} before IDENT", name.to_uppercase()),
                ),
                0,
            ));
        }
    }
    Ok(Verdict::Parse)
}

/// A message's error and the session it ends (0: the connection).
type Failure = (ProtocolError, u64);

/// Replies to one message, or its failure.
type Replies = Result<Vec<ServerMessage>, Failure>;

fn on_bind(
    shared: &Shared,
    connection: &mut Connection,
    session: u64,
    path: String,
    token: &str,
    need_client_file_ident: bool,
) -> Replies {
    let Connection {
        peer,
        sessions,
        user,
        admitted,
        ..
    } = connection;
    if session == 0 || sessions.contains_key(&session) {
        return Err((
            ProtocolError::new(
                ErrorCode::ReuseOfSessionIdent,
                format!("session {session} is in use"),
            ),
            0,
        ));
    }
    if let Peer::Realm { errored, .. } = peer {
        errored.remove(&session);
    }
    admitted
        .check_session_cap(sessions.len())
        .map_err(|e| (e, session))?;
    let target = bind_target(shared, peer, path, token).map_err(|e| (e, session))?;
    admitted.authenticated();
    let file = open_file(shared, &target.path).map_err(|e| (e, session))?;
    let mut replies = Vec::new();
    if need_client_file_ident {
        admitted.allocate_ident().map_err(|e| (e, 0))?;
        let (ident, salt) = lock(&file)
            .and_then(|mut f| f.allocate_client_file())
            .map_err(|e| (e, session))?;
        replies.push(ServerMessage::Ident {
            session,
            client_file_ident: ident,
            client_file_ident_salt: salt,
        });
    }
    let user_vars = match peer {
        Peer::Realm { user, .. } => UserVars {
            id: user.user_id.clone(),
            data: user.data.clone(),
        },
        // `%%user.id` is the token's subject; Tandem tokens carry no custom user data.
        Peer::Tandem { .. } => UserVars {
            id: target.user.clone(),
            ..UserVars::default()
        },
    };
    tracing::info!(session, path = %target.path, user = %target.user, "session bound");
    shared.metrics.sessions_bound.inc();
    user.get_or_insert(target.user);
    sessions.insert(
        session,
        Session {
            turn: shared.turn(&target.path),
            path: target.path,
            expires: target.expires,
            file,
            client_file_ident: None,
            cursor: 0,
            realm: target.realm,
            upload_server_version: 0,
            verified_upload: None,
            marks: VecDeque::new(),
            state: None,
            behind: false,
            batch: shared.config.sessions.download_batch,
            flexible: None,
            is_flexible: target.flexible,
            user_vars,
            rules: Arc::clone(&shared.flx_rules),
            retry_at: None,
            advanced: false,
            claim: None,
            known: None,
        },
    );
    Ok(replies)
}

/// An IDENT's fields.
struct Ident {
    ident: u64,
    salt: u64,
    download_server_version: u64,
    download_client_version: u64,
    latest_server_version: u64,
    latest_server_version_salt: u64,
    /// Flexible sync: the active subscription set.
    query: Option<FlxQuery>,
}

fn on_ident(s: &mut Session, session: u64, m: Ident) -> Replies {
    if s.client_file_ident.is_some() {
        return Err((
            ProtocolError::new(ErrorCode::BadMessageOrder, "IDENT sent twice"),
            0,
        ));
    }
    {
        let mut file = lock(&s.file).map_err(|e| (e, session))?;
        file.reload_if_stale().map_err(|e| (e, session))?;
        file.check_ident(m.ident, m.salt, Some(m.download_server_version))
            .and_then(|()| {
                file.check_cursor(
                    m.ident,
                    m.download_server_version,
                    m.download_client_version,
                )
            })
            .and_then(|()| {
                check_latest(&file, m.latest_server_version, m.latest_server_version_salt)
            })
            .map_err(|e| (e, session))?;
    }
    if s.is_flexible {
        let Some(query) = m.query else {
            return Err((
                ProtocolError::new(
                    ErrorCode::BadSyntax,
                    "a flexible sync IDENT carries the active subscription set (a Tandem client on /flx sets SyncConfig::flexible)",
                ),
                0,
            ));
        };
        if query.body.len() > MAX_QUERY_BODY {
            return Err((
                ProtocolError::new(
                    ErrorCode::BadQuery,
                    format!("a subscription set is at most {MAX_QUERY_BODY} bytes"),
                ),
                session,
            ));
        }
        let active = Subscription::parse(query.version, &query.body)
            .map_err(|why| {
                (
                    ProtocolError::new(ErrorCode::BadQuery, format!("IDENT: {why}")),
                    session,
                )
            })?
            .restricted(&s.rules, &s.user_vars);
        let (known, claim) = lock(&s.file)
            .and_then(|mut f| {
                let known = f.flx_resume(m.ident, m.download_server_version, query.version)?;
                Ok((known, f.flx_claim(m.ident)))
            })
            .map_err(|e| (e, session))?;
        s.claim = Some(claim);
        let mut pending = VecDeque::new();
        if !known {
            pending.push_back(active.clone());
        }
        s.flexible = Some(Flexible {
            newest: active.version,
            active,
            pending,
            bootstrap: VecDeque::new(),
            filters: SteadyFilters::default(),
        });
    } else if m.query.is_some() {
        return Err((
            ProtocolError::new(
                ErrorCode::BadSyntax,
                "IDENT carries a subscription set outside flexible sync",
            ),
            0,
        ));
    }
    s.client_file_ident = Some(m.ident);
    s.cursor = m.download_server_version;
    if !s.realm {
        s.verified_upload = Some(m.download_client_version);
    }
    Ok(s.download(session, true).into_iter().collect())
}

/// A new subscription set: bootstrapped once everything before it was downloaded, or refused
/// with QUERY_ERROR 226 when the server cannot evaluate it (the session goes on with its
/// active set).
fn on_query(s: &mut Session, session: u64, query: FlxQuery) -> Replies {
    s.ident("QUERY")?;
    let Some(flexible) = s.flexible.as_mut() else {
        return Err((
            ProtocolError::new(
                ErrorCode::BadMessageOrder,
                "QUERY in a partition-based sync session",
            ),
            session,
        ));
    };
    if query.version <= flexible.newest {
        return Err((
            ProtocolError::new(
                ErrorCode::BadQuery,
                format!(
                    "subscription set version {} is not above the last one sent ({})",
                    query.version, flexible.newest
                ),
            ),
            session,
        ));
    }
    if flexible.pending.len() >= MAX_PENDING_QUERIES || query.body.len() > MAX_QUERY_BODY {
        // The set goes to state Error; the session and its active set go on.
        flexible.newest = query.version;
        return Ok(vec![ServerMessage::QueryError {
            code: u64::from(ErrorCode::BadQuery.code()),
            session,
            query_version: query.version,
            message: format!(
                "at most {MAX_PENDING_QUERIES} subscription sets may wait for their bootstrap, \
                 each at most {MAX_QUERY_BODY} bytes"
            ),
        }]);
    }
    flexible.newest = query.version;
    // A storage failure is the session's (201, try again), not the query's.
    let file = lock(&s.file).map_err(|e| (e, session))?;
    let checked = Subscription::parse(query.version, &query.body)
        .map(|sub| sub.restricted(&s.rules, &s.user_vars))
        .and_then(|sub| file.flx_check(&sub).map(|()| sub));
    drop(file);
    match checked {
        Ok(sub) => {
            flexible_mut(s).pending.push_back(sub);
            Ok(s.outbound(session).into_iter().collect())
        }
        Err(why) => {
            tracing::info!(session, query_version = query.version, %why, "subscription set refused");
            Ok(vec![ServerMessage::QueryError {
                code: u64::from(ErrorCode::BadQuery.code()),
                session,
                query_version: query.version,
                message: why,
            }])
        }
    }
}

fn flexible_mut(s: &mut Session) -> &mut Flexible {
    s.flexible.as_mut().expect("a flexible sync session")
}

/// Integrates `entries` from session `session` of `s`, timing it; wakes the path's other
/// connections when something new was integrated.
fn integrate(
    shared: &Shared,
    s: &Session,
    session: u64,
    ident: u64,
    entries: &[crate::protocol::UploadEntry],
    file: &mut ServerFile,
) -> Result<Option<Compensation>, Failure> {
    let started = std::time::Instant::now();
    let integrated = match &s.flexible {
        Some(f) => file.flx_integrate_checked(ident, entries, &s.rules, &s.user_vars, &f.active),
        None => file.integrate_upload(ident, entries).map(|i| (i, None)),
    }
    .map_err(|e| (e, session));
    let took = started.elapsed();
    shared
        .metrics
        .integration_seconds
        .observe(took.as_secs_f64());
    if took > std::time::Duration::from_secs(1) {
        tracing::warn!(path = %s.path, session, entries = entries.len(), seconds = took.as_secs_f64(), "slow integration");
    }
    let (integrated, compensation) = integrated?;
    if !integrated.versions.is_empty() || compensation.is_some() {
        shared
            .metrics
            .changesets_integrated
            .inc_by(integrated.versions.len() as u64);
        shared.changed(&s.path);
    }
    Ok(compensation)
}

fn on_upload(
    shared: &Shared,
    s: &mut Session,
    session: u64,
    progress_server_version: u64,
    entries: &[crate::protocol::UploadEntry],
) -> Replies {
    shared.metrics.uploads.inc();
    s.upload_server_version = s.upload_server_version.max(progress_server_version);
    let ident = s.ident("UPLOAD")?;
    if s.flexible.is_some() {
        lock(&s.file)
            .and_then(|f| f.flx_acknowledged(ident, progress_server_version))
            .map_err(|e| (e, session))?;
    }
    let mut file = lock(&s.file).map_err(|e| (e, session))?;
    let compensation = integrate(shared, s, session, ident, entries, &mut file)?;
    drop(file);
    s.verified(entries.last());
    // A compensating write is reported first; the DOWNLOAD carrying its revert follows, and
    // realm-core surfaces the error once it integrates that (section 4.7).
    let mut replies: Vec<ServerMessage> = compensation
        .map(|c| realm::compensating_write(&c, session))
        .into_iter()
        .collect();
    replies.extend(s.download(session, true));
    Ok(replies)
}

fn on_mark(s: &mut Session, session: u64, request_ident: u64) -> Replies {
    // Answered once everything before it was downloaded: the latest version now.
    // Under the database lock: the latest version of every process, not only of this copy.
    let version = lock(&s.file).map_err(|e| (e, session))?.latest_version();
    s.marks.push_back((request_ident, version));
    Ok(s.outbound(session).into_iter().collect())
}

fn on_refresh(
    shared: &Shared,
    sessions: &mut BTreeMap<u64, Session>,
    session: u64,
    token: &str,
) -> Replies {
    // An expired session may refresh: look it up without the expiry check.
    let s = sessions
        .get_mut(&session)
        .ok_or_else(|| no_session(session))?;
    let claims = shared.config.auth.verify(token).map_err(|e| (e, session))?;
    // A flexible sync session reads as its token's user (`%%user.id`): another user's token
    // may not extend it.
    if s.is_flexible && claims.sub != s.user_vars.id {
        return Err((
            ProtocolError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "the new token is for user {}, the session is {}'s",
                    claims.sub, s.user_vars.id
                ),
            ),
            session,
        ));
    }
    if !claims.allows(&s.path) {
        return Err((
            ProtocolError::new(
                ErrorCode::PermissionDenied,
                format!("the new token does not allow {}", s.path),
            ),
            session,
        ));
    }
    s.expires = claims.exp;
    // Whatever was withheld while the token was expired.
    Ok(s.outbound(session).into_iter().collect())
}

fn on_client_version_request(s: &mut Session, session: u64, ident: u64, salt: u64) -> Replies {
    // A file this server does not know (or knows under another salt) had nothing integrated
    // here: 0, so a recovering client re-applies all its changes.
    let client_version = lock(&s.file)
        .and_then(|f| f.client_version(ident, salt))
        .or_else(|e| match e.code {
            ErrorCode::BadClientFileIdent => Ok(0),
            _ => Err(e),
        })
        .map_err(|e| (e, session))?;
    Ok(vec![ServerMessage::ClientVersion {
        session,
        client_version,
    }])
}

/// Refuses `what` on a flexible sync session: a STATE snapshot would hold objects outside its
/// subscriptions and rules, and TRANSACT has no compensating-write check.
fn not_flexible(s: &Session, session: u64, what: &str) -> Result<(), Failure> {
    match s.is_flexible {
        true => Err((
            ProtocolError::new(
                ErrorCode::BadMessageOrder,
                format!("{what} is not available on a flexible sync session"),
            ),
            session,
        )),
        false => Ok(()),
    }
}

fn on_state_request(s: &mut Session, session: u64, server_version: u64, offset: u64) -> Replies {
    not_flexible(s, session, "STATE_REQUEST")?;
    let (salt, (version, bytes)) = {
        let mut file = lock(&s.file).map_err(|e| (e, session))?;
        let (version, bytes) = file.snapshot(server_version).map_err(|e| (e, session))?;
        let salt = file.version_salt(version).map_err(|e| (e, session))?;
        (salt, (version, bytes))
    };
    let total = bytes.len() as u64;
    // Resume only the snapshot asked for; anything else starts over at offset 0.
    let next = match version == server_version {
        true => offset.min(total),
        false => 0,
    };
    s.state = Some(StateStream {
        version,
        salt,
        bytes,
        next,
    });
    Ok(s.outbound(session).into_iter().collect())
}

fn on_transact(
    shared: &Shared,
    s: &mut Session,
    session: u64,
    request_ident: u64,
    entry: crate::protocol::UploadEntry,
) -> Replies {
    not_flexible(s, session, "TRANSACT")?;
    shared.metrics.uploads.inc();
    let ident = s.ident("TRANSACT")?;
    let (verdict, server_version) = {
        let mut file = lock(&s.file).map_err(|e| (e, session))?;
        let conflict = file
            .transact_conflict(
                ident,
                &entry.changeset,
                entry.last_integrated_server_version,
            )
            .map_err(|e| (e, session))?;
        match conflict {
            Some(reason) => (Err(reason), file.latest_version()),
            None => {
                integrate(
                    shared,
                    s,
                    session,
                    ident,
                    std::slice::from_ref(&entry),
                    &mut file,
                )?;
                (Ok(()), file.latest_version())
            }
        }
    };
    let accepted = verdict.is_ok();
    let mut replies = vec![ServerMessage::TransactResult {
        session,
        request_ident,
        accepted,
        server_version,
        reason: verdict.err().unwrap_or_default(),
    }];
    if accepted {
        // The acknowledgement, as for an UPLOAD.
        s.verified(Some(&entry));
        replies.extend(s.download(session, true));
    }
    Ok(replies)
}

fn on_unbind(connection: &mut Connection, session: u64) -> Vec<ServerMessage> {
    let existed = connection.remove(session);
    match &mut connection.peer {
        Peer::Tandem { .. } => vec![ServerMessage::Unbound { session }],
        // UNBOUND only for a session that is live and had no error: realm-core treats any
        // other UNBOUND as a protocol violation.
        Peer::Realm { errored, .. } => {
            let had_error = errored.remove(&session);
            match existed && !had_error {
                true => vec![ServerMessage::Unbound { session }],
                false => Vec::new(),
            }
        }
    }
}

fn on_json_error(connection: &mut Connection, session: u64, code: u64) -> Vec<ServerMessage> {
    let existed = connection.remove(session);
    match &mut connection.peer {
        Peer::Tandem { .. } => vec![ServerMessage::Unbound { session }],
        // The client stopped the session without UNBIND: UNBOUND would be a protocol
        // violation. A session JSON_ERROR resets its file; it then sends UNBIND.
        Peer::Realm { errored, .. } => {
            if !existed {
                return Vec::new();
            }
            errored.insert(session);
            vec![realm::answer_client_error(code, session)]
        }
    }
}
