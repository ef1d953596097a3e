//! tandem-server on PostgreSQL (`--database`, cargo feature `postgres`): several server
//! processes on one database. Clients spread over two and three processes, reconnecting to a
//! different one each round with offline edits in between, converge; a process killed with
//! SIGKILL during uploads loses nothing it acknowledged and integrates nothing twice. The
//! mirror tables (`tandem_mirror."Task"`) show device writes and carry SQL writes to devices.
//!
//! The database: `TANDEM_TEST_POSTGRES` (a URL), else the throwaway cluster
//! `tests/postgres/start.sh` starts (PostgreSQL's server binaries must be installed; `.ci/run`
//! installs them). Each test makes its own database in it.
#![cfg(all(feature = "postgres", unix))]

#[path = "postgres/cluster.rs"]
mod cluster;
mod live;
mod server_log;

use cluster::database;
use live::converge;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tandem::client::{SyncConfig, SyncSession};
use tandem::model::{PrimaryKey, Value};
use tandem::server::{start, Authenticator, RunningServer, ServerConfig};
use tandem::store::{Config, Database};

/// Runs `sql` on `url` and returns the first column of every row as i64.
fn query(runtime: &tokio::runtime::Runtime, url: &str, sql: &str) -> Vec<i64> {
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect()
    })
}

/// A small deterministic generator (xorshift64*), so a failing round replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Cluster {
    /// `_scratch`'s path.
    dir: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
    servers: Vec<RunningServer>,
    /// The scratch directory, removed on drop: the last field, so after the runtime shuts down.
    _scratch: tempfile::TempDir,
}

impl Cluster {
    /// `n` in-process servers, each with its own data directory, on one database.
    fn new(name: &str, n: usize) -> (Cluster, String) {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-pg-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .try_init();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let url = database(&runtime, name);
        let mut cluster = Cluster {
            dir,
            runtime,
            servers: Vec::new(),
            _scratch: scratch,
        };
        for _ in 0..n {
            cluster.add_server(&url);
        }
        (cluster, url)
    }

    /// Starts one more in-process server on `url`, with a data directory of its own.
    fn add_server(&mut self, url: &str) {
        let config = ServerConfig {
            tls: Some((self.dir.join("cert.pem"), self.dir.join("key.pem"))),
            database: Some(url.to_owned()),
            ..ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                self.dir.join(format!("server-{}", self.servers.len())),
                Authenticator::hs256(live::SECRET),
            )
        };
        let server = self.runtime.block_on(start(config)).unwrap();
        self.servers.push(server);
    }

    fn config(&self, server: usize) -> SyncConfig {
        SyncConfig {
            url: format!(
                "wss://localhost:{}/",
                self.servers[server].local_addr.port()
            ),
            path: live::PATH.into(),
            token: live::token(3600),
            ca_file: Some(self.dir.join("cert.pem")),
            ..SyncConfig::default()
        }
    }

    fn open(&self, name: &str) -> Arc<Database> {
        Arc::new(Database::open(self.dir.join(name), &live::schema(), Config::default()).unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.servers.drain(..) {
            s.shutdown();
        }
        // `_scratch` removes the directory once the runtime has shut down.
    }
}

/// One random transaction: set a title, add to a counter, insert into a list, create or
/// erase a task, among tasks 1 to 8.
fn random_edit(db: &Database, rng: &mut Rng, who: usize) {
    let id = PrimaryKey::Int(1 + rng.below(8) as i64);
    let exists = db.read().unwrap().object("Task", &id).unwrap().is_some();
    let mut tx = db.begin_write().unwrap();
    match (exists, rng.below(5)) {
        (false, _) => {
            tx.create(
                "Task",
                id,
                &[
                    ("title", Value::String(format!("by {who}"))),
                    ("count", Value::Int(0)),
                ],
            )
            .unwrap();
        }
        (true, 0) => tx
            .set(
                "Task",
                &id,
                "title",
                Value::String(format!("{who}-{}", rng.below(1000))),
            )
            .unwrap(),
        (true, 1) => tx
            .add("Task", &id, "count", 1 + rng.below(9) as i64)
            .unwrap(),
        (true, 2) => tx
            .list_insert("Task", &id, "tags", 0, Value::String(format!("t{who}")))
            .unwrap(),
        (true, 3) => tx.erase("Task", &id).unwrap(),
        (true, _) => tx.set("Task", &id, "count", Value::Int(100)).unwrap(),
    }
    tx.commit().unwrap();
}

/// Four clients over `n` processes, five rounds: each round every client edits offline, then
/// syncs through the next process (round-robin), and all converge.
fn spread(name: &str, n: usize, seed: u64) {
    let (cluster, url) = Cluster::new(name, n);
    let dbs: Vec<Arc<Database>> = (0..4)
        .map(|i| cluster.open(&format!("c{i}.sqlite")))
        .collect();
    let mut rng = Rng(seed);
    for round in 0..5 {
        for (i, db) in dbs.iter().enumerate() {
            for _ in 0..1 + rng.below(6) {
                random_edit(db, &mut rng, i);
            }
        }
        let sessions: Vec<SyncSession> = dbs
            .iter()
            .enumerate()
            .map(|(i, db)| {
                SyncSession::start(Arc::clone(db), cluster.config((round + i) % n)).unwrap()
            })
            .collect();
        // Online edits while the others sync, and a backend writing the mirror table.
        for (i, db) in dbs.iter().enumerate() {
            random_edit(db, &mut rng, i);
        }
        // (From the second round: the first upload of the schema creates the table.)
        for _ in 0..(1 + rng.below(3)) * u64::from(round > 0) {
            let sql = random_sql(&mut rng);
            execute(&cluster.runtime, &url, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        println!("seed {seed:#x} round {round}");
        converge_with_mirror(&cluster, &url, &dbs);
        drop(sessions);
    }
    // A fresh client through each process gets the same objects.
    for s in 0..n {
        let fresh = cluster.open(&format!("fresh{s}.sqlite"));
        let _session = SyncSession::start(Arc::clone(&fresh), cluster.config(s)).unwrap();
        println!("a fresh client through process {s}");
        converge(&[&dbs[0], &fresh]);
    }
    // Every changeset in the history once per (client file, client version).
    let twice = query(
        &cluster.runtime,
        &url,
        "SELECT count(*) FROM (SELECT origin_file_ident, client_version FROM tandem_history
         WHERE client_version > 0 GROUP BY 1, 2 HAVING count(*) > 1) d",
    );
    assert_eq!(twice, vec![0], "a changeset integrated twice");
}

/// One random backend write to tasks 1 to 8 in the mirror table: insert (unless the row
/// exists), set the title, add to the counter, append a tag, or delete.
fn random_sql(rng: &mut Rng) -> String {
    let id = 1 + rng.below(8);
    let task = r#"tandem_mirror."Task""#;
    let row = format!("_path = '/tasks' AND _id = {id}");
    match rng.below(5) {
        0 => format!(
            "INSERT INTO {task} (_path, _id, title, count) VALUES ('/tasks', {id}, 'sql-{}', 0) \
             ON CONFLICT DO NOTHING",
            rng.below(1000)
        ),
        1 => format!(
            "UPDATE {task} SET title = 'sql-{}' WHERE {row}",
            rng.below(1000)
        ),
        2 => format!("UPDATE {task} SET count = count + 10 WHERE {row}"),
        3 => format!(r#"UPDATE {task} SET tags = tags || '["sql"]'::jsonb WHERE {row}"#),
        _ => format!("DELETE FROM {task} WHERE {row}"),
    }
}

/// Tasks as (id, title, count, tags).
type Tasks = Vec<(i64, String, i64, Vec<String>)>;

/// The tasks of `db`.
fn device_tasks(db: &Database) -> Tasks {
    use tandem::state::{Element, Field, Key, Val};
    let state = db.export_state().unwrap();
    let mut out = Vec::new();
    for (key, task) in state.objects.get("Task").into_iter().flatten() {
        let Key::Int(id) = key else { continue };
        let title = match task.fields.get("title") {
            Some(Field::Value(Val::String(s))) => s.clone(),
            _ => String::new(),
        };
        let count = match task.fields.get("count") {
            Some(Field::Value(Val::Int(n))) => *n,
            _ => 0,
        };
        let tags = match task.fields.get("tags") {
            Some(Field::List(items)) => items
                .iter()
                .filter_map(|e| match e {
                    Element::Value(Val::String(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        out.push((*id, title, count, tags));
    }
    out
}

/// The tasks of the mirror table.
fn mirror_tasks(cluster: &Cluster, url: &str) -> Tasks {
    rows(
        &cluster.runtime,
        url,
        r#"SELECT _id::text, title, count::text, tags::text FROM tandem_mirror."Task"
           WHERE _path = '/tasks' ORDER BY "Task"._id"#,
    )
    .into_iter()
    .map(|r| {
        let text = |i: usize| r[i].clone().unwrap_or_default();
        (
            text(0).parse().unwrap(),
            text(1),
            text(2).parse().unwrap(),
            serde_json::from_str(&text(3)).unwrap(),
        )
    })
    .collect()
}

/// [`converge`], and then until the backend's queued writes are integrated and the mirror table
/// holds exactly the devices' tasks.
fn converge_with_mirror(cluster: &Cluster, url: &str, dbs: &[Arc<Database>]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        converge(&dbs.iter().collect::<Vec<_>>());
        let pending = query(
            &cluster.runtime,
            url,
            "SELECT count(*) FROM tandem_mirror_queue WHERE error IS NULL",
        );
        let (mirror, device) = (mirror_tasks(cluster, url), device_tasks(&dbs[0]));
        if pending == vec![0] && mirror == device {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror table does not match the devices within 60 s ({pending:?} queued):\n\
             mirror {mirror:?}\ndevice {device:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_spread_over_two_processes_converge() {
    spread("two", 2, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn clients_spread_over_three_processes_converge() {
    spread("three", 3, 0xd1b5_4a32_d192_ed03);
}

/// A `tandem-server` process on `url`, listening on a free port.
fn spawn(dir: &std::path::Path, name: &str, url: &str) -> (Child, u16) {
    std::fs::write(dir.join("secret"), live::SECRET).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["--listen", "127.0.0.1:0", "--database", url])
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .arg("--jwt-secret-file")
        .arg(dir.join("secret"))
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = server_log::listening_addr(child.stderr.take().unwrap()).port();
    (child, port)
}

#[test]
fn a_process_killed_during_uploads_loses_nothing_acknowledged() {
    let (cluster, url) = Cluster::new("kill", 0);
    let dir = cluster.dir.clone();
    let (mut first, first_port) = spawn(&dir, "p1", &url);
    let (mut second, second_port) = spawn(&dir, "p2", &url);
    let config = |port: u16| SyncConfig {
        url: format!("wss://localhost:{port}/"),
        path: live::PATH.into(),
        token: live::token(3600),
        ca_file: Some(dir.join("cert.pem")),
        ..SyncConfig::default()
    };
    let writer = cluster.open("writer.sqlite");
    let session = SyncSession::start(Arc::clone(&writer), config(first_port)).unwrap();
    // Writes in many small transactions; the first process is killed while they upload.
    for id in 0..300 {
        live::create_task(&writer, id, "entry");
        if id == 150 {
            first.kill().unwrap();
            first.wait().unwrap();
        }
        if id % 10 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(session);
    let _session = SyncSession::start(Arc::clone(&writer), config(second_port)).unwrap();
    let reader = cluster.open("reader.sqlite");
    let _reader = SyncSession::start(Arc::clone(&reader), config(second_port)).unwrap();
    converge(&[&writer, &reader]);
    let objects: usize = reader
        .export_state()
        .unwrap()
        .objects
        .values()
        .map(|c| c.len())
        .sum();
    assert_eq!(objects, 300, "every task the writer made");
    // The killed process comes back on its data directory: its working copies are rebuilt.
    let (mut again, again_port) = spawn(&dir, "p1", &url);
    let late = cluster.open("late.sqlite");
    let _late = SyncSession::start(Arc::clone(&late), config(again_port)).unwrap();
    converge(&[&writer, &late]);
    let twice = query(
        &cluster.runtime,
        &url,
        "SELECT count(*) FROM (SELECT origin_file_ident, client_version FROM tandem_history
         WHERE client_version > 0 GROUP BY 1, 2 HAVING count(*) > 1) d",
    );
    assert_eq!(twice, vec![0], "a changeset integrated twice");
    let history = query(
        &cluster.runtime,
        &url,
        "SELECT count(*) FROM tandem_history",
    );
    assert!(history[0] >= 1, "the history is in PostgreSQL");
    for p in [&mut second, &mut again] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// `POST path` with a JSON body over plain HTTP/1.1; the status code and the body.
fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[test]
fn users_registered_through_one_process_log_in_through_another() {
    use tandem::server::app::{AppConfig, Provider};
    use tandem::server::TokenSigner;
    let (cluster, url) = Cluster::new("users", 0);
    let servers: Vec<RunningServer> = (0..2)
        .map(|i| {
            let mut app = AppConfig::new("pg-app", TokenSigner::hs256(live::SECRET));
            app.providers = vec![Provider::UserPassword, Provider::ApiKey];
            let config = ServerConfig {
                allow_plain_ws: true,
                database: Some(url.clone()),
                app: Some(app),
                ..ServerConfig::new(
                    "127.0.0.1:0".parse().unwrap(),
                    cluster.dir.join(format!("app-{i}")),
                    Authenticator::hs256(live::SECRET),
                )
            };
            cluster.runtime.block_on(start(config)).unwrap()
        })
        .collect();
    let port = |i: usize| servers[i].local_addr.port();
    let userpass = "/api/client/v2.0/app/pg-app/auth/providers/local-userpass";
    let ann = r#"{"email": "ann@example.com", "password": "secret1"}"#;
    let (status, body) = post(port(0), &format!("{userpass}/register"), ann);
    assert_eq!(status, 201, "register through the first process: {body}");
    let login = r#"{"username": "ann@example.com", "password": "secret1"}"#;
    let (status, body) = post(port(1), &format!("{userpass}/login"), login);
    assert_eq!(status, 200, "log in through the second process: {body}");
    assert!(body.contains("refresh_token"), "{body}");
    let (status, _) = post(port(1), &format!("{userpass}/register"), ann);
    assert_eq!(status, 409, "the address is taken in every process");
    let wrong = r#"{"username": "ann@example.com", "password": "wrong11"}"#;
    let (status, _) = post(port(0), &format!("{userpass}/login"), wrong);
    assert_eq!(status, 401);
    let users = query(
        &cluster.runtime,
        &url,
        "SELECT count(*) FROM tandem_app_users",
    );
    assert_eq!(users, vec![1], "one user, in PostgreSQL");

    // A server API key managed in the database (`tandem-server api-key ... --database`) while
    // the processes run: it logs in through either, and is gone for both once deleted.
    use tandem::server::app::admin::{self, StoreAt};
    let at = StoreAt::Database(&url);
    let empty = database(&cluster.runtime, "no_app");
    let e = admin::list_api_keys(StoreAt::Database(&empty), None).unwrap_err();
    assert!(e.to_string().contains("no App Services data"), "{e}");
    assert!(admin::create_api_key(at, Some("another-app"), "x").is_err());
    let new = admin::create_api_key(at, None, "backend").unwrap();
    assert!(
        admin::create_api_key(at, None, "backend").is_err(),
        "names are unique"
    );
    assert_eq!(
        admin::list_api_keys(at, Some("pg-app")).unwrap(),
        vec![new.info.clone()]
    );
    let api_key = "/api/client/v2.0/app/pg-app/auth/providers/api-key/login";
    let with_key = format!(r#"{{"key": "{}"}}"#, new.key);
    for i in 0..2 {
        let (status, body) = post(port(i), api_key, &with_key);
        assert_eq!(status, 200, "the key logs in through process {i}: {body}");
    }
    assert!(admin::delete_api_key(at, None, &new.info.id).unwrap());
    assert!(admin::list_api_keys(at, None).unwrap().is_empty());
    for i in 0..2 {
        let (status, _) = post(port(i), api_key, &with_key);
        assert_eq!(status, 401, "a deleted key is refused by process {i}");
    }
    for s in servers {
        s.shutdown();
    }
}

#[test]
fn two_processes_cannot_share_a_data_directory() {
    let (cluster, url) = Cluster::new("shared_dir", 0);
    let config = || ServerConfig {
        allow_plain_ws: true,
        database: Some(url.clone()),
        ..ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            cluster.dir.join("one-dir"),
            Authenticator::hs256(live::SECRET),
        )
    };
    let first = cluster.runtime.block_on(start(config())).unwrap();
    let second = cluster.runtime.block_on(start(config()));
    let why = second
        .err()
        .expect("a second server on the same data directory")
        .0;
    assert!(
        why.contains("another tandem-server uses the data directory"),
        "{why}"
    );
    first.shutdown();
}

/// Runs `sql` on `url`; the error's text if it fails.
fn execute(runtime: &tokio::runtime::Runtime, url: &str, sql: &str) -> Result<u64, String> {
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.execute(sql, &[]).await.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        })
    })
}

/// The rows `sql` returns, every column as text (NULL as `None`).
fn rows(runtime: &tokio::runtime::Runtime, url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // Nothing while the table does not exist yet.
        let Ok(messages) = client.simple_query(sql).await else {
            return Vec::new();
        };
        messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    })
}

/// Task `id`'s title in `db`, if the task exists.
fn title(db: &Database, id: i64) -> Option<String> {
    let task = db
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()?;
    match task.fields.get("title") {
        Some(tandem::state::Field::Value(tandem::state::Val::String(s))) => Some(s.clone()),
        other => panic!("task {id} has the title {other:?}"),
    }
}

fn row_of(cluster: &Cluster, url: &str, id: i64) -> Vec<Vec<Option<String>>> {
    rows(
        &cluster.runtime,
        url,
        &format!(
            "SELECT title, count::text, tags::text FROM tandem_mirror.\"Task\" WHERE _path = '/tasks' AND _id = {id}"
        ),
    )
}

/// Asserts that no backend write waits in (or was refused from) the mirror queue.
fn assert_queue_empty(cluster: &Cluster, url: &str) {
    assert_eq!(
        query(
            &cluster.runtime,
            url,
            "SELECT count(*) FROM tandem_mirror_queue"
        ),
        vec![0]
    );
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn mirror_tables_carry_device_writes_and_sql_writes_reach_devices() {
    let (mut cluster, url) = Cluster::new("mirror", 2);
    let a = cluster.open("a.sqlite");
    let _sa = SyncSession::start(Arc::clone(&a), cluster.config(0)).unwrap();
    let mut tx = a.begin_write().unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(1),
        &[
            ("title", Value::String("from a device".into())),
            ("count", Value::Int(3)),
        ],
    )
    .unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("x".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    // A device write appears in the mirror table, typed.
    live::eventually("the device's task in the mirror table", 30, || {
        row_of(&cluster, &url, 1) == vec![vec![s("from a device"), s("3"), s("[\"x\"]")]]
    });

    // INSERT, UPDATE and DELETE made with SQL reach a device on the other process.
    let b = cluster.open("b.sqlite");
    let _sb = SyncSession::start(Arc::clone(&b), cluster.config(1)).unwrap();
    execute(
        &cluster.runtime,
        &url,
        r#"INSERT INTO tandem_mirror."Task" (_path, _id, title, count, tags) VALUES ('/tasks', 2, 'from sql', 5, '["a", "b"]')"#,
    )
    .unwrap();
    live::eventually("the SQL insert on both devices", 30, || {
        title(&a, 2).as_deref() == Some("from sql") && title(&b, 2).as_deref() == Some("from sql")
    });
    let task = b
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(2))
        .unwrap()
        .unwrap();
    assert_eq!(
        task.fields["count"],
        tandem::state::Field::Value(tandem::state::Val::Int(5))
    );
    assert_eq!(
        task.fields["tags"],
        tandem::state::Field::List(vec![
            tandem::state::Element::Value(tandem::state::Val::String("a".into())),
            tandem::state::Element::Value(tandem::state::Val::String("b".into())),
        ])
    );
    execute(
        &cluster.runtime,
        &url,
        r#"UPDATE tandem_mirror."Task" SET title = 'edited with sql' WHERE _path = '/tasks' AND _id = 1"#,
    )
    .unwrap();
    live::eventually("the SQL update on both devices", 30, || {
        title(&a, 1).as_deref() == Some("edited with sql")
            && title(&b, 1).as_deref() == Some("edited with sql")
    });
    execute(
        &cluster.runtime,
        &url,
        r#"DELETE FROM tandem_mirror."Task" WHERE _path = '/tasks' AND _id = 2"#,
    )
    .unwrap();
    live::eventually("the SQL delete on both devices", 30, || {
        !live::has_task(&a, 2) && !live::has_task(&b, 2)
    });
    converge(&[&a, &b]);
    // Nothing echoed: exactly the three SQL writes are the server's changesets, the queue is
    // empty and the mirror row keeps the SQL value and the device's other fields.
    let server_changesets = query(
        &cluster.runtime,
        &url,
        "SELECT count(*) FROM tandem_history h JOIN tandem_server_writer w
         ON h.file_id = w.file_id AND h.origin_file_ident = w.ident",
    );
    assert_eq!(server_changesets, vec![3]);
    assert_queue_empty(&cluster, &url);
    assert_eq!(
        row_of(&cluster, &url, 1),
        vec![vec![s("edited with sql"), s("3"), s("[\"x\"]")]]
    );

    // Refused at once: a changed primary key, an unknown server path.
    let e = execute(
        &cluster.runtime,
        &url,
        r#"UPDATE tandem_mirror."Task" SET _id = 9 WHERE _id = 1"#,
    )
    .unwrap_err();
    assert!(e.contains("cannot change"), "{e}");
    let e = execute(
        &cluster.runtime,
        &url,
        r#"INSERT INTO tandem_mirror."Task" (_path, _id) VALUES ('/nowhere', 1)"#,
    )
    .unwrap_err();
    assert!(e.contains("no server file has the path /nowhere"), "{e}");
    // A value devices cannot hold stays in the queue with its reason; later writes still sync.
    execute(
        &cluster.runtime,
        &url,
        r#"INSERT INTO tandem_mirror."Task" (_path, _id, tags) VALUES ('/tasks', 3, '[1]')"#,
    )
    .unwrap();
    execute(
        &cluster.runtime,
        &url,
        r#"INSERT INTO tandem_mirror."Task" (_path, _id, title) VALUES ('/tasks', 4, 'fine')"#,
    )
    .unwrap();
    live::eventually("the later insert on a device", 30, || {
        title(&a, 4).as_deref() == Some("fine")
    });
    assert!(!live::has_task(&a, 3));
    let refused = rows(
        &cluster.runtime,
        &url,
        "SELECT error FROM tandem_mirror_queue",
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    let why = refused[0][0].clone().unwrap();
    assert!(why.contains("column tags"), "{why}");
    execute(&cluster.runtime, &url, "DELETE FROM tandem_mirror_queue").unwrap();

    // Writes to one object in one transaction are taken in order: an insert then an update,
    // an insert then a delete.
    rows(
        &cluster.runtime,
        &url,
        r#"BEGIN;
        INSERT INTO tandem_mirror."Task" (_path, _id, title) VALUES ('/tasks', 5, 'inserted');
        UPDATE tandem_mirror."Task" SET title = 'then updated' WHERE _path = '/tasks' AND _id = 5;
        INSERT INTO tandem_mirror."Task" (_path, _id, title) VALUES ('/tasks', 6, 'short-lived');
        DELETE FROM tandem_mirror."Task" WHERE _path = '/tasks' AND _id = 6;
        COMMIT"#,
    );
    live::eventually("the transaction's writes on a device", 30, || {
        title(&b, 5).as_deref() == Some("then updated")
    });
    // A burst of single-row transactions: each write integrated once, none again.
    for i in 100..130 {
        execute(
            &cluster.runtime,
            &url,
            &format!(
                r#"INSERT INTO tandem_mirror."Task" (_path, _id, title) VALUES ('/tasks', {i}, 'burst')"#
            ),
        )
        .unwrap();
    }
    live::eventually("the burst on both devices", 30, || {
        (100..130).all(|i| live::has_task(&a, i) && live::has_task(&b, i))
    });
    converge(&[&a, &b]);
    assert!(!live::has_task(&a, 6));
    assert_eq!(
        row_of(&cluster, &url, 6),
        Vec::<Vec<Option<String>>>::new(),
        "the deleted row came back"
    );
    let history = || {
        query(
            &cluster.runtime,
            &url,
            "SELECT count(*) FROM tandem_history",
        )
    };
    let settled = history();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(history(), settled, "a queued write was integrated again");
    assert_queue_empty(&cluster, &url);
    // TRUNCATE is refused (it would bypass the queue).
    let e = execute(&cluster.runtime, &url, r#"TRUNCATE tandem_mirror."Task""#).unwrap_err();
    assert!(e.contains("TRUNCATE"), "{e}");

    // Rows missing (objects integrated before the mirror tables existed; here removed with the
    // trigger off) are filled from the server state by the next process to open the path.
    rows(
        &cluster.runtime,
        &url,
        r#"ALTER TABLE tandem_mirror."Task" DISABLE TRIGGER tandem_queue;
        DELETE FROM tandem_mirror."Task";
        ALTER TABLE tandem_mirror."Task" ENABLE TRIGGER tandem_queue;
        DELETE FROM tandem_mirror_filled"#,
    );
    assert!(mirror_tasks(&cluster, &url).is_empty());
    cluster.add_server(&url);
    let c = cluster.open("c.sqlite");
    let _sc = SyncSession::start(Arc::clone(&c), cluster.config(2)).unwrap();
    live::eventually("the mirror table filled again", 30, || {
        !device_tasks(&a).is_empty() && mirror_tasks(&cluster, &url) == device_tasks(&a)
    });
    assert_queue_empty(&cluster, &url);
}

#[test]
fn concurrent_sql_and_device_writes_to_one_field_resolve_by_time() {
    let (cluster, url) = Cluster::new("mirror_lww", 1);
    let a = cluster.open("a.sqlite");
    let session = SyncSession::start(Arc::clone(&a), cluster.config(0)).unwrap();
    live::create_task(&a, 1, "first");
    live::eventually("the task in the mirror table", 30, || {
        row_of(&cluster, &url, 1).first().and_then(|r| r[0].clone()) == s("first")
    });
    let set_title = |db: &Database, t: &str| {
        let mut tx = db.begin_write().unwrap();
        tx.set(
            "Task",
            &PrimaryKey::Int(1),
            "title",
            Value::String(t.into()),
        )
        .unwrap();
        tx.commit().unwrap();
    };
    let update = |t: &str| {
        execute(
            &cluster.runtime,
            &url,
            &format!(r#"UPDATE tandem_mirror."Task" SET title = '{t}' WHERE _id = 1"#),
        )
        .unwrap();
    };
    let mirrored = |t: &str| row_of(&cluster, &url, 1).first().and_then(|r| r[0].clone()) == s(t);
    // The device writes offline first, SQL later: the SQL write is later and wins, although
    // the device's write reaches the server after it.
    drop(session);
    set_title(&a, "device, earlier");
    std::thread::sleep(Duration::from_millis(50));
    // Counted before the SQL write: a server that integrates it before the count would
    // otherwise leave nothing to wait for (this failed a CI run).
    let history = |c: &Cluster| query(&c.runtime, &url, "SELECT count(*) FROM tandem_history");
    let before = history(&cluster);
    update("sql, later");
    live::eventually("the SQL write integrated", 30, || {
        history(&cluster) > before
    });
    let session = SyncSession::start(Arc::clone(&a), cluster.config(0)).unwrap();
    live::eventually("the later SQL write on the device", 30, || {
        title(&a, 1).as_deref() == Some("sql, later")
            && a.pending_uploads(1 << 20).unwrap().is_empty()
    });
    live::eventually("the mirror keeping the SQL write", 30, || {
        mirrored("sql, later")
    });
    // SQL first, the device offline later: the device's write wins, and the mirror follows.
    drop(session);
    let before = history(&cluster);
    update("sql, earlier");
    live::eventually("the SQL write integrated", 30, || {
        history(&cluster) > before
    });
    std::thread::sleep(Duration::from_millis(50));
    set_title(&a, "device, later");
    let _session = SyncSession::start(Arc::clone(&a), cluster.config(0)).unwrap();
    live::eventually("the device's later write in the mirror", 30, || {
        mirrored("device, later")
    });
    assert_eq!(title(&a, 1).as_deref(), Some("device, later"));
}

#[test]
fn every_property_type_round_trips_through_a_mirror_table() {
    use tandem::model::{
        ClassSchema, CollectionKind, Decimal128, ObjectId, Property, PropertyType as T, Schema,
        Timestamp, Uuid,
    };
    use tandem::state::{Element, Field, Val};
    let (cluster, url) = Cluster::new("mirror_types", 1);
    let schema = Schema::new(vec![
        ClassSchema::top_level(
            "Kinds",
            "_id",
            vec![
                Property::new("_id", T::ObjectId),
                Property::new("i", T::Int),
                Property::new("b", T::Bool),
                Property::new("s", T::String),
                Property::new("bin", T::Binary).nullable(),
                Property::new("ts", T::Timestamp),
                Property::new("f", T::Float),
                Property::new("d", T::Double),
                Property::new("dec", T::Decimal),
                Property::new("oid", T::ObjectId).nullable(),
                Property::new("u", T::Uuid).nullable(),
                Property::new("m", T::Mixed).nullable(),
                Property::link("other", "Kinds"),
                Property::new("dates", T::Timestamp).collection(CollectionKind::List),
                Property::new("ints", T::Int).collection(CollectionKind::Set),
                Property::new("dict", T::Double).collection(CollectionKind::Dictionary),
                Property::link("spot", "Spot"),
            ],
        ),
        ClassSchema::embedded(
            "Spot",
            vec![
                Property::new("x", T::Double),
                Property::new("when", T::Timestamp).nullable(),
            ],
        ),
    ])
    .unwrap();
    let db = Arc::new(
        Database::open(cluster.dir.join("kinds.sqlite"), &schema, Config::default()).unwrap(),
    );
    let _session = SyncSession::start(Arc::clone(&db), cluster.config(0)).unwrap();
    let k1 = PrimaryKey::ObjectId(ObjectId([1; 12]));
    let k2 = PrimaryKey::ObjectId(ObjectId([2; 12]));
    let ts = |s, n| Value::Timestamp(Timestamp::new(s, n).unwrap());
    let mut tx = db.begin_write().unwrap();
    tx.create("Kinds", k2.clone(), &[]).unwrap();
    tx.create(
        "Kinds",
        k1.clone(),
        &[
            ("i", Value::Int(-7)),
            ("b", Value::Bool(true)),
            ("s", Value::String("héllo 'q'".into())),
            ("bin", Value::Binary(vec![0, 255])),
            ("ts", ts(1_796_292_000, 123_456_789)),
            ("f", Value::Float(1.5)),
            ("d", Value::Double(2.25)),
            ("dec", Value::Decimal("1.50".parse::<Decimal128>().unwrap())),
            ("oid", Value::ObjectId(ObjectId([0xab; 12]))),
            ("u", Value::Uuid(Uuid([0x11; 16]))),
            ("m", Value::Int(5)),
            (
                "other",
                Value::Link(tandem::model::Link {
                    class: "Kinds".into(),
                    key: k2.clone(),
                }),
            ),
        ],
    )
    .unwrap();
    tx.list_insert("Kinds", &k1, "dates", 0, ts(-1, -500_000_000))
        .unwrap();
    tx.set_insert("Kinds", &k1, "ints", Value::Int(2)).unwrap();
    tx.set_insert("Kinds", &k1, "ints", Value::Int(1)).unwrap();
    tx.dict_set("Kinds", &k1, "dict", "a", Value::Double(1.5))
        .unwrap();
    tx.create_embedded("Kinds", &k1, "spot").unwrap();
    tx.set_at(
        "Kinds",
        &k1,
        "spot",
        &[tandem::store::PathStep::Name("x".into())],
        Value::Double(0.5),
    )
    .unwrap();
    tx.commit().unwrap();
    let select =
        "SET TimeZone = 'UTC'; SELECT i::text, b::text, s, bin::text, ts::text, f::text, d::text,
        dec::text, oid, u::text, m::text, other, dates::text, ints::text, dict::text, spot::text
        FROM tandem_mirror.\"Kinds\" WHERE _id = '010101010101010101010101'";
    let expected: Vec<Option<String>> = [
        Some("-7"),
        Some("true"),
        Some("héllo 'q'"),
        Some("\\x00ff"),
        Some("2026-12-03 10:00:00.123457+00"),
        Some("1.5"),
        Some("2.25"),
        Some("1.50"),
        Some("abababababababababababab"),
        Some("11111111-1111-1111-1111-111111111111"),
        Some("5"),
        Some("020202020202020202020202"),
        Some("[{\"$date\": \"1969-12-31T23:59:58.5Z\"}]"),
        Some("[1, 2]"),
        Some("{\"a\": 1.5}"),
        Some("{\"x\": 0.5, \"when\": null}"),
    ]
    .iter()
    .map(|v| v.map(str::to_owned))
    .collect();
    live::eventually("the device's object in the mirror table", 30, || {
        rows(&cluster.runtime, &url, select).first() == Some(&expected)
    });

    // Every column written with SQL reaches the device as the value of its property.
    execute(
        &cluster.runtime,
        &url,
        r#"UPDATE tandem_mirror."Kinds" SET i = 8, b = false, s = 'sql', bin = '\xabcd',
            ts = '2030-01-01T00:00:00.25Z', f = 2.5, d = -0.125, dec = 3.25,
            oid = '0c0c0c0c0c0c0c0c0c0c0c0c', u = '22222222-2222-2222-2222-222222222222',
            m = '{"$oid": "0d0d0d0d0d0d0d0d0d0d0d0d"}', other = NULL,
            dates = '["2031-01-01T00:00:00Z", {"$date": "2032-01-01T00:00:00.000000001Z"}]',
            ints = '[3]', dict = '{"b": 2, "c": {"$numberDouble": "Infinity"}}',
            spot = '{"x": 1.25, "when": {"$date": "2033-01-01T00:00:00Z"}}'
            WHERE _id = '010101010101010101010101'"#,
    )
    .unwrap();
    let read = || db.read().unwrap().object("Kinds", &k1).unwrap().unwrap();
    live::eventually("the SQL values on the device", 30, || {
        read().fields.get("s") == Some(&Field::Value(Val::String("sql".into())))
    });
    let o = read();
    let v = |name: &str| o.fields[name].clone();
    assert_eq!(v("i"), Field::Value(Val::Int(8)));
    assert_eq!(v("b"), Field::Value(Val::Bool(false)));
    assert_eq!(v("bin"), Field::Value(Val::Binary(vec![0xab, 0xcd])));
    assert_eq!(
        v("ts"),
        Field::Value(Val::Timestamp(1_893_456_000, 250_000_000))
    );
    assert_eq!(v("f"), Field::Value(Val::Float(2.5f32.to_bits())));
    assert_eq!(v("d"), Field::Value(Val::Double((-0.125f64).to_bits())));
    assert_eq!(
        v("dec"),
        Field::Value(Val::Decimal(
            "3.25".parse::<Decimal128>().unwrap().to_bits()
        ))
    );
    assert_eq!(v("oid"), Field::Value(Val::ObjectId([0x0c; 12])));
    assert_eq!(v("u"), Field::Value(Val::Uuid([0x22; 16])));
    assert_eq!(v("m"), Field::Value(Val::ObjectId([0x0d; 12])));
    assert_eq!(v("other"), Field::Value(Val::Null));
    assert_eq!(
        v("dates"),
        Field::List(vec![
            Element::Value(Val::Timestamp(1_924_992_000, 0)),
            Element::Value(Val::Timestamp(1_956_528_000, 1)),
        ])
    );
    assert_eq!(v("ints"), Field::Set(vec![Val::Int(3)]));
    let Field::Dictionary(dict) = v("dict") else {
        panic!("{:?}", v("dict"));
    };
    assert_eq!(
        dict.into_iter().collect::<Vec<_>>(),
        vec![
            ("b".to_owned(), Element::Value(Val::Double(2f64.to_bits()))),
            (
                "c".to_owned(),
                Element::Value(Val::Double(f64::INFINITY.to_bits()))
            ),
        ]
    );
    let Field::Embedded(Some(spot)) = v("spot") else {
        panic!("{:?}", v("spot"));
    };
    assert_eq!(
        spot.fields["x"],
        Field::Value(Val::Double(1.25f64.to_bits()))
    );
    assert_eq!(
        spot.fields["when"],
        Field::Value(Val::Timestamp(1_988_150_400, 0))
    );
    // The mirror row was rewritten from the merged state, without an echo.
    assert_queue_empty(&cluster, &url);
}
