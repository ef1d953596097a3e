//! End to end over the network: a real server with TLS on an ephemeral loopback port, real
//! tokens, three client databases with sync sessions. Offline conflicting edits converge; the
//! server is killed and restarted mid-sync; a client is closed and reopened; nothing is lost
//! or duplicated.
#![cfg(feature = "server")]

mod live;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use live::{converge, World};
use tandem::client::{SyncConfig, SyncSession, SyncState};
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
}
