//! A live sync world for end-to-end tests: an in-process `tandem-server` with TLS on an
//! ephemeral loopback port (throwaway certificate, HS256 tokens), and client databases on temp
//! files with sync sessions. Shared by the `sync_*` test files.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem::client::{ErrorInfo, Event, SyncConfig, SyncSession, TokenProvider};
use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::protocol::Limits;
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tandem::store::{Config, Database};

/// The HS256 secret every world's server uses.
pub const SECRET: &[u8] = b"live sync test secret, 32 bytes!";

/// The server path the worlds sync.
pub const PATH: &str = "/tasks";

/// Tasks with a title, a counter and a list of tags.
pub fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
            Property::new("count", PropertyType::Int),
            Property::new("tags", PropertyType::String).collection(CollectionKind::List),
        ],
    )])
    .unwrap()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `PATH` valid for `seconds`.
pub fn token(seconds: u64) -> String {
    TokenSigner::hs256(SECRET)
        .sign("live", now() + seconds, &[PATH])
        .unwrap()
}

/// A server and a directory for client files.
pub struct World {
    /// The world's scratch directory (`_scratch`'s path).
    pub dir: PathBuf,
    pub runtime: tokio::runtime::Runtime,
    pub server: Option<RunningServer>,
    /// The server's message size limits (applied at the next [`World::start_server`]).
    pub limits: Limits,
    pub addr: std::net::SocketAddr,
    /// The server's storage settings (applied at the next [`World::start_server`]).
    pub storage: tandem::server::StorageConfig,
    /// Removes the directory when the world is dropped; the last field, so that it goes after
    /// the server is stopped and the runtime is shut down.
    _scratch: tempfile::TempDir,
}

impl World {
    /// A fresh world named `name` (a new scratch directory, removed when the world is dropped).
    pub fn new(name: &str) -> World {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-live-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let mut world = World {
            dir,
            runtime: tokio::runtime::Runtime::new().unwrap(),
            server: None,
            limits: Limits::default(),
            addr: "127.0.0.1:0".parse().unwrap(),
            storage: Default::default(),
            _scratch: scratch,
        };
        world.start_server();
        world
    }

    /// (Re)starts the server on the same port and data directory.
    pub fn start_server(&mut self) {
        let config = ServerConfig {
            tls: Some((self.dir.join("cert.pem"), self.dir.join("key.pem"))),
            limits: self.limits,
            storage: self.storage.clone(),
            ..ServerConfig::new(
                self.addr,
                self.dir.join("server"),
                Authenticator::hs256(SECRET),
            )
        };
        let server = self.runtime.block_on(start(config)).unwrap();
        self.addr = server.local_addr;
        self.server = Some(server);
    }

    /// Stops the server (connections end).
    pub fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Opens (or reopens) a client database.
    pub fn open(&self, name: &str) -> Arc<Database> {
        Arc::new(Database::open(self.dir.join(name), &schema(), Config::default()).unwrap())
    }

    /// A sync configuration for this world's server with `token`.
    pub fn config(&self, token: String) -> SyncConfig {
        SyncConfig {
            url: format!("wss://localhost:{}/", self.addr.port()),
            path: PATH.into(),
            token,
            ca_file: Some(self.dir.join("cert.pem")),
            ..SyncConfig::default()
        }
    }

    /// Starts syncing `db` with a token valid for an hour.
    pub fn sync(&self, db: &Arc<Database>) -> SyncSession {
        SyncSession::start(Arc::clone(db), self.config(token(3600))).unwrap()
    }

    /// [`World::sync`], recording every event of the session from its first ([`recording`]).
    pub fn sync_recording(&self, db: &Arc<Database>) -> (SyncSession, Events) {
        start_recording(db, self.config(token(3600)))
    }

    /// Starts syncing `db` with `token` and `provider`, recording every event of the session
    /// from its first ([`recording`]).
    pub fn sync_recording_with(
        &self,
        db: &Arc<Database>,
        token: String,
        provider: Arc<dyn TokenProvider>,
    ) -> (SyncSession, Events) {
        let mut config = self.config(token);
        config.token_provider = Some(provider);
        start_recording(db, config)
    }

    /// Runs an async wait on this world's runtime (the waits themselves run on the library's).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_server();
        // `_scratch` removes the directory once the runtime has shut down.
    }
}

/// The events of one session, in the order they were delivered (see [`recording`]).
pub type Events = Arc<Mutex<Vec<Event>>>;

/// Makes the session started with `config` record every one of its events, from its very
/// first: the listener goes in [`SyncConfig::on_event`], registered before the session's
/// connection task starts. One added with `SyncSession::on_event` once `start` has returned
/// can miss what came first (an early error, the first state changes), which would make an
/// exact count flaky and a check that nothing went wrong pass without seeing everything.
pub fn recording(config: &mut SyncConfig) -> Events {
    let events = Events::default();
    let sink = Arc::clone(&events);
    config.on_event = Some(Arc::new(move |event: &Event| {
        sink.lock().unwrap().push(event.clone())
    }));
    events
}

/// Starts syncing `db` with `config`, recording every event of the session ([`recording`]).
pub fn start_recording(db: &Arc<Database>, mut config: SyncConfig) -> (SyncSession, Events) {
    let events = recording(&mut config);
    (SyncSession::start(Arc::clone(db), config).unwrap(), events)
}

/// Stops `session` and waits until the session has let go of its recording listener
/// ([`recording`]), which it does once that listener was handed the session's last event: every
/// event of the session is in `events` then. For checks that nothing went wrong.
pub fn stop_and_drain(session: &SyncSession, events: &Events) {
    session.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(events) > 1 {
        assert!(Instant::now() < deadline, "the session kept its listener");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The error events among `events`, in the order they were delivered.
pub fn errors(events: &Events) -> Vec<ErrorInfo> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|event| match event {
            Event::Error(info) => Some(info.clone()),
            _ => None,
        })
        .collect()
}

/// Waits up to `seconds` for an error event in `events` that `wanted` accepts and returns it;
/// fails listing every event delivered so far if none comes. (Events reach the listeners on the
/// session's notifier thread, a little after the state changes that come with them.)
pub fn wait_for_error(
    events: &Events,
    seconds: u64,
    wanted: impl Fn(&ErrorInfo) -> bool,
) -> ErrorInfo {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(found) = errors(events).into_iter().find(|info| wanted(info)) {
            return found;
        }
        if Instant::now() >= deadline {
            let seen = events.lock().unwrap().clone();
            panic!("no such error event within {seconds} s; the events: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates task `id` with `title` in one transaction.
pub fn create_task(db: &Database, id: i64, title: &str) {
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(id),
        &[("title", Value::String(title.into()))],
    )
    .unwrap();
    tx.commit().unwrap();
}

/// Whether task `id` exists in `db`.
pub fn has_task(db: &Database, id: i64) -> bool {
    db.read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()
        .is_some()
}

/// Waits (bounded, generously) until every database has nothing to upload and all hold the
/// same objects.
pub fn converge(dbs: &[&Arc<Database>]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states: Vec<_> = dbs
            .iter()
            .map(|d| d.export_state().unwrap().objects)
            .collect();
        let idle = dbs
            .iter()
            .all(|d| d.pending_uploads(1 << 20).unwrap().is_empty());
        if idle && states.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence within 60 s:\n{states:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 10 ms for up to `seconds`.
pub fn eventually(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP proxy in front of the world's server that cuts its first connection once the server
/// has sent `cut_after` bytes through it; later connections pass untouched. Returns its port
/// and a counter of connections accepted.
pub fn cutting_proxy(
    world: &World,
    cut_after: usize,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server_port = world.addr.port();
    let listener = world
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    world.runtime.spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await
            else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let upstream = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            tokio::spawn(async move {
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 << 10];
                while let Ok(n) = server_read.read(&mut buf).await {
                    if n == 0 || (first && sent + n > cut_after) {
                        break;
                    }
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                upstream.abort();
                // Dropping both halves closes the connection.
            });
        }
    });
    (port, connections)
}
