//! End to end over the network: a real server with TLS on an ephemeral loopback port, real
//! tokens, three client databases with sync sessions. Offline conflicting edits converge; the
//! server is killed and restarted mid-sync; a client is closed and reopened; nothing is lost
//! or duplicated.
#![cfg(feature = "server")]

mod live;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use live::{converge, World, PATH, SECRET};
use tandem::client::{SyncConfig, SyncError, SyncSession, SyncState};
use tandem::model::{PrimaryKey, Value};
use tandem::server::TokenSigner;
use tandem::state::{Field, Val};
use tandem::store::Database;

fn path_exists(p: &Path) -> bool {
    p.exists()
}

fn task(db: &Database, id: i64) -> Option<tandem::state::Object> {
    db.read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(id))
        .unwrap()
}

/// The message of the `InvalidState` that refuses to start a session on `db` with `config`;
/// panics if the session starts or fails otherwise.
fn refused(db: Arc<Database>, config: SyncConfig) -> String {
    match SyncSession::start(db, config) {
        Err(SyncError::InvalidState { message }) => message,
        Err(e) => panic!("expected InvalidState, got {e:?}"),
        Ok(_) => panic!("the session started"),
    }
}

#[test]
fn three_clients_converge_through_restarts() {
    let mut world = World::new("three");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let c = world.open("c.sqlite");
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    let sc = world.sync(&c);

    let mut tx = a.begin_write().unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(1),
        &[
            ("title", Value::String("one".into())),
            ("count", Value::Int(0)),
        ],
    )
    .unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(2),
        &[("title", Value::String("two".into()))],
    )
    .unwrap();
    tx.commit().unwrap();
    converge(&[&a, &b, &c]);
    assert_eq!(sa.state(), SyncState::Connected);

    // Offline conflicting edits.
    drop((sa, sb, sc));
    std::thread::sleep(Duration::from_millis(50));
    let edit = |db: &Database, title: &str, add: i64, tag: &str| {
        let mut tx = db.begin_write().unwrap();
        tx.set(
            "Task",
            &PrimaryKey::Int(1),
            "title",
            Value::String(title.into()),
        )
        .unwrap();
        tx.add("Task", &PrimaryKey::Int(1), "count", add).unwrap();
        tx.list_insert(
            "Task",
            &PrimaryKey::Int(1),
            "tags",
            0,
            Value::String(tag.into()),
        )
        .unwrap();
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(3));
    };
    edit(&a, "from a", 1, "a");
    edit(&b, "from b", 10, "b");
    edit(&c, "from c", 100, "c");
    let mut tx = a.begin_write().unwrap();
    tx.erase("Task", &PrimaryKey::Int(2)).unwrap();
    tx.commit().unwrap();
    let mut tx = b.begin_write().unwrap();
    tx.set(
        "Task",
        &PrimaryKey::Int(2),
        "title",
        Value::String("edited".into()),
    )
    .unwrap();
    tx.commit().unwrap();

    // Reconnect; kill the server while they sync; restart it; close and reopen client C.
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    let sc = world.sync(&c);
    world.stop_server();
    world.start_server();
    drop(sc);
    drop(c);
    let c = world.open("c.sqlite");
    let _sc = world.sync(&c);
    converge(&[&a, &b, &c]);

    let t1 = task(&a, 1).unwrap();
    assert_eq!(
        t1.fields["title"],
        Field::Value(Val::String("from c".into())),
        "last writer wins"
    );
    assert_eq!(
        t1.fields["count"],
        Field::Value(Val::Int(111)),
        "counters add up"
    );
    assert!(matches!(&t1.fields["tags"], Field::List(items) if items.len() == 3));
    assert!(
        task(&b, 2).is_none(),
        "delete wins over the concurrent update"
    );
    assert!(path_exists(&world.dir.join("server")));
    drop((sa, sb));
    world.stop_server();
}

#[test]
fn a_refused_token_never_connects() {
    let world = World::new("badtoken");
    let db = world.open("x.sqlite");
    let session = SyncSession::start(
        Arc::clone(&db),
        SyncConfig {
            url: format!("wss://localhost:{}/", world.addr.port()),
            path: "/tasks".into(),
            token: TokenSigner::hs256(b"wrong secret, wrong secret")
                .sign("x", u64::MAX / 4, &["*"])
                .expect("HS256 signing cannot fail"),
            ca_file: Some(world.dir.join("cert.pem")),
            allow_insecure: false,
            ..SyncConfig::default()
        },
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The handshake is refused (401): the session keeps retrying with backoff and never
    // reaches Connected.
    while Instant::now() < deadline && session.state() == SyncState::Connecting {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_ne!(session.state(), SyncState::Connected);
    drop(session);

    // The error says why, as the server's answer does (a new user's trial).
    let mut config = world.config(
        TokenSigner::hs256(b"wrong secret, wrong secret")
            .sign("x", u64::MAX / 4, &["*"])
            .expect("HS256 signing cannot fail"),
    );
    let events = live::recording(&mut config);
    let _session = SyncSession::start(world.open("y.sqlite"), config).unwrap();
    let error = live::wait_for_error(&events, 30, |e| e.code == 203);
    assert!(
        error.message.contains("401") && error.message.contains("token signature does not verify"),
        "{}",
        error.message
    );
}

/// A file that synced with one server path is refused a session with another: its objects
/// would be uploaded into that path (another user's), and the server, which does not know the
/// file there, would reset it to that path's state. Nothing reaches the other path.
#[test]
fn a_file_syncs_with_one_server_path() {
    let world = World::new("one-path");
    let wait = Some(Duration::from_secs(30));
    let db = world.open("x.sqlite");
    assert_eq!(db.synced_path().unwrap(), None);
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(1),
        &[("title", Value::String("mine".into()))],
    )
    .unwrap();
    tx.commit().unwrap();
    let session = world.sync(&db);
    world.block_on(session.wait_for_upload(wait)).unwrap();
    drop(session);
    assert_eq!(db.synced_path().unwrap().as_deref(), Some(PATH));

    let any_path = TokenSigner::hs256(SECRET)
        .sign("live", live::now() + 3600, &["*"])
        .unwrap();
    let mut other = world.config(any_path);
    other.path = "/other".into();
    let message = refused(Arc::clone(&db), other.clone());
    assert!(
        message.contains("\"/tasks\"") && message.contains("\"/other\""),
        "{message}"
    );
    // A fresh file on the other path finds nothing of this file's there.
    let fresh = world.open("fresh.sqlite");
    let fresh_session = SyncSession::start(Arc::clone(&fresh), other).unwrap();
    world
        .block_on(fresh_session.wait_for_download(wait))
        .unwrap();
    assert!(task(&fresh, 1).is_none());
    assert_eq!(fresh.synced_path().unwrap().as_deref(), Some("/other"));
    // The file's own path still syncs.
    let again = world.sync(&db);
    world.block_on(again.wait_for_download(wait)).unwrap();
    assert!(task(&db, 1).is_some());
}

/// One sync session per file in a process: a second one, through the same `Database` or
/// another handle on the file, is refused while the first runs (both would integrate every
/// download, counting a counter's increments twice); once the first is stopped, the next one
/// starts (waiting for the first to finish the message in hand).
#[test]
fn one_sync_session_per_file() {
    let world = World::new("one-session");
    let db = world.open("x.sqlite");
    let first = world.sync(&db);
    for handle in [Arc::clone(&db), world.open("x.sqlite")] {
        let message = refused(handle, world.config(live::token(3600)));
        assert!(message.contains("already running"), "{message}");
    }
    first.stop();
    let second = world.sync(&db);
    world
        .block_on(second.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap();
    drop(first);
    drop(second);
    // Dropping a session lets go of the file too.
    let third = world.sync(&world.open("x.sqlite"));
    world
        .block_on(third.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap();
}

/// The other process of [`one_sync_session_per_file_across_processes`]: with
/// `TANDEM_TEST_SYNC_CHILD` set to a client file's path, this test starts a sync session on it
/// (to a port where nothing listens: it keeps retrying), prints [`CHILD_HOLDS`], and keeps it until its
/// standard input closes. Without the variable it does nothing.
const CHILD_HOLDS: &str = "sync child holds the file";

#[test]
fn sync_child_process() {
    let Some(path) = std::env::var_os("TANDEM_TEST_SYNC_CHILD") else {
        return;
    };
    let db =
        Arc::new(Database::open(&path, &live::schema(), tandem::store::Config::default()).unwrap());
    let config = SyncConfig {
        url: "ws://127.0.0.1:9/".into(),
        path: PATH.into(),
        token: live::token(3600),
        allow_insecure: true,
        ..SyncConfig::default()
    };
    let session = SyncSession::start(db, config).unwrap();
    // On a line of its own: the test harness prints the test's name before it.
    println!("\n{CHILD_HOLDS}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
    drop(session);
}

/// A command that runs this test binary again, the way cargo ran it: through the target's
/// runner when one is set (`CARGO_TARGET_<TRIPLE>_RUNNER`: qemu-user in the aarch64 stage of
/// `.ci/run`, where the emulated binary cannot exec another foreign binary by itself).
fn this_test_binary() -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::vars()
        .find(|(key, _)| key.starts_with("CARGO_TARGET_") && key.ends_with("_RUNNER"))
        .map(|(_, runner)| runner);
    match runner {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut command = std::process::Command::new(words.next().unwrap());
            command.args(words).arg(exe);
            command
        }
        None => std::process::Command::new(exe),
    }
}

/// A session of another process on the file is refused too (it holds the lock file beside the
/// file), through a symlink to the file as well, and the file can be synced here once that
/// process ended.
#[test]
fn one_sync_session_per_file_across_processes() {
    use std::io::BufRead;
    let world = World::new("one-session-processes");
    let db = world.open("x.sqlite");
    let mut child = this_test_binary()
        .args([
            "--exact",
            "sync_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TANDEM_TEST_SYNC_CHILD", world.dir.join("x.sqlite"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != CHILD_HOLDS {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the child ended first"
        );
    }
    // Through the file's own path, and through a symlink to it (the lock is named after the
    // canonical path).
    std::os::unix::fs::symlink(world.dir.join("x.sqlite"), world.dir.join("link.sqlite")).unwrap();
    for handle in [Arc::clone(&db), world.open("link.sqlite")] {
        let message = refused(handle, world.config(live::token(3600)));
        assert!(message.contains("another process"), "{message}");
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let session = world.sync(&db);
    world
        .block_on(session.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap();
}

/// A session stopped while its TLS handshake hangs (a server that accepts the connection and
/// never answers) ends at the stop, not at the handshake's timeout: the file's next session
/// starts instead of finding the file still claimed.
#[test]
fn a_session_stopped_mid_handshake_lets_the_next_one_start() {
    let world = World::new("mid-handshake");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db = world.open("x.sqlite");
    let mut config = world.config(live::token(3600));
    config.url = format!("wss://localhost:{}/", silent.local_addr().unwrap().port());
    config.timeouts.handshake = Duration::from_secs(120);
    let hanging = SyncSession::start(Arc::clone(&db), config).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(hanging.state(), SyncState::Connecting);
    hanging.stop();
    let next = world.sync(&db);
    world
        .block_on(next.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap();
    drop(silent);
}
