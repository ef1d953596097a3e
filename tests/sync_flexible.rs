//! Flexible sync with Tandem's own client (issue 15 item 5): subscription sets kept in the
//! local file, bootstraps, objects entering and leaving a view as subscriptions change and as
//! other clients write, read and write rules per user with compensating writes, QUERY_ERROR
//! without stopping the session, and a reconnect that resumes without a new bootstrap. A real
//! `tandem-server` on loopback (plain ws), real sessions and SQLite files.
#![cfg(feature = "server")]

// For its event recording (`live::recording`); this file has its own `World`, on plain ws.
mod live;

use std::sync::Arc;
use std::time::{Duration, Instant};

use live::{errors, wait_for_error, Events};
use tandem::client::{SyncConfig, SyncError, SyncSession, TokenProvider};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::server::app::AppConfig;
use tandem::server::realm::rules::FlxRules;
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tandem::store::{Config, Database, StoreErrorKind, SubscriptionSetState};

const SECRET: &[u8] = b"flexible sync test secret, 32 b!";
const WAIT: Option<Duration> = Some(Duration::from_secs(30));

fn schema() -> Schema {
    Schema::new(vec![
        ClassSchema::top_level(
            "Task",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("title", PropertyType::String),
                Property::new("count", PropertyType::Int),
                Property::new("owner", PropertyType::String),
                Property::new("tags", PropertyType::String)
                    .collection(tandem::model::CollectionKind::List),
                Property::link("project", "Project"),
            ],
        ),
        ClassSchema::top_level(
            "Project",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("name", PropertyType::String),
            ],
        ),
    ])
    .unwrap()
}

/// A token for `/flx` with subject `user`, valid for `seconds`.
fn token_for(user: &str, seconds: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    TokenSigner::hs256(SECRET)
        .sign(user, now + seconds, &["/flx"])
        .unwrap()
}

struct World {
    runtime: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    /// The scratch directory, removed on drop: the last field, so after the runtime shuts down.
    dir: tempfile::TempDir,
}

impl World {
    /// A server with an app whose flexible sync rules are `rules` (JSON; `None`: everything).
    fn new(name: &str, rules: Option<&str>) -> World {
        World::with_batch(name, rules, None)
    }

    /// [`World::new`] with DOWNLOAD batches of at most `batch` bytes.
    fn with_batch(name: &str, rules: Option<&str>, batch: Option<usize>) -> World {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tandem-flx-{name}-"))
            .tempdir()
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut app = AppConfig::new("flx-app", TokenSigner::hs256(b"flexible sync app secret"));
        if let Some(rules) = rules {
            app.flx_rules = FlxRules::from_json(rules).unwrap();
        }
        let mut config = ServerConfig {
            allow_plain_ws: true,
            app: Some(app),
            ..ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                dir.path().join("data"),
                Authenticator::hs256(SECRET),
            )
        };
        if let Some(batch) = batch {
            config.sessions.download_batch = batch;
        }
        let server = runtime.block_on(start(config)).unwrap();
        World {
            runtime,
            server: Some(server),
            dir,
        }
    }

    fn open(&self, name: &str) -> Arc<Database> {
        self.open_with(name, &schema())
    }

    fn open_with(&self, name: &str, schema: &Schema) -> Arc<Database> {
        Arc::new(Database::open(self.dir.path().join(name), schema, Config::default()).unwrap())
    }

    /// A flexible sync configuration for `/flx` as user `user`.
    fn config(&self, user: &str) -> SyncConfig {
        let port = self.server.as_ref().unwrap().local_addr.port();
        SyncConfig {
            url: format!("ws://127.0.0.1:{port}/"),
            path: "/flx".into(),
            token: token_for(user, 3600),
            allow_insecure: true,
            flexible: true,
            ..SyncConfig::default()
        }
    }

    /// A flexible sync session on `/flx` as user `user`.
    fn sync(&self, db: &Arc<Database>, user: &str) -> SyncSession {
        SyncSession::start(Arc::clone(db), self.config(user)).unwrap()
    }

    /// [`World::sync`], recording every event of the session from its first
    /// ([`live::recording`]).
    fn sync_recording(&self, db: &Arc<Database>, user: &str) -> (SyncSession, Events) {
        live::start_recording(db, self.config(user))
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        // `dir` removes the directory once the runtime has shut down.
    }
}

fn create(db: &Database, id: i64, count: i64, owner: &str) {
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Task",
        PrimaryKey::Int(id),
        &[
            ("title", Value::String(format!("task {id}"))),
            ("count", Value::Int(count)),
            ("owner", Value::String(owner.into())),
        ],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn set_count(db: &Database, id: i64, count: i64) {
    let mut tx = db.begin_write().unwrap();
    tx.set("Task", &PrimaryKey::Int(id), "count", Value::Int(count))
        .unwrap();
    tx.commit().unwrap();
}

/// The ids of the tasks `db` holds, sorted.
fn tasks(db: &Database) -> Vec<i64> {
    let mut ids: Vec<i64> = db
        .read()
        .unwrap()
        .query("Task", "TRUEPREDICATE", &[])
        .unwrap()
        .into_iter()
        .map(|k| match k {
            PrimaryKey::Int(i) => i,
            other => panic!("unexpected key {other:?}"),
        })
        .collect();
    ids.sort();
    ids
}

/// Subscribes `db` to `(name, class, query)`s (replacing what it had) and returns the version.
fn subscribe(db: &Database, subs: &[(&str, &str, &str)]) -> u64 {
    db.update_subscriptions(|m| {
        m.clear();
        for (name, class, query) in subs {
            m.add(Some(name), class, query, &[])?;
        }
        Ok(())
    })
    .unwrap()
    .version
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A writer that sees everything: subscribed to every Task and Project.
fn writer(world: &World, user: &str) -> (Arc<Database>, SyncSession) {
    let db = world.open(&format!("{user}-writer.sqlite"));
    subscribe(
        &db,
        &[
            ("all", "Task", "TRUEPREDICATE"),
            ("projects", "Project", "TRUEPREDICATE"),
        ],
    );
    let session = world.sync(&db, user);
    (db, session)
}

#[test]
fn a_subscription_bootstraps_what_it_matches_and_follows_changes() {
    let world = World::new("follow", None);
    let (w, ws) = writer(&world, "writer");
    for id in 1..=10 {
        create(&w, id, id, "writer");
    }
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();

    // Before any sync, the reader's set is pending; the bootstrap completes it.
    let r = world.open("reader.sqlite");
    let v1 = subscribe(&r, &[("big", "Task", "count > 5")]);
    assert_eq!(v1, 1);
    assert_eq!(
        r.subscriptions().unwrap().state,
        SubscriptionSetState::Pending
    );
    assert_eq!(r.active_subscriptions().unwrap().version, 0);
    let rs = world.sync(&r, "reader");
    let done = world
        .block_on(rs.wait_for_subscriptions(None, WAIT))
        .unwrap();
    assert_eq!(
        (done.version, done.state),
        (1, SubscriptionSetState::Complete)
    );
    assert_eq!(tasks(&r), vec![6, 7, 8, 9, 10]);
    assert_eq!(r.active_subscriptions().unwrap().version, 1);

    // A narrower set: objects leave; a wider one: they enter. The older set is superseded.
    let v2 = subscribe(&r, &[("bigger", "Task", "count > 8")]);
    world
        .block_on(rs.wait_for_subscriptions(Some(v2), WAIT))
        .unwrap();
    assert_eq!(tasks(&r), vec![9, 10]);
    assert_eq!(
        r.subscription_set(v1).unwrap().unwrap().state,
        SubscriptionSetState::Superseded
    );
    let v3 = subscribe(
        &r,
        &[("bigger", "Task", "count > 8"), ("two", "Task", "_id == 2")],
    );
    world
        .block_on(rs.wait_for_subscriptions(Some(v3), WAIT))
        .unwrap();
    assert_eq!(tasks(&r), vec![2, 9, 10]);

    // Another client's writes move objects out of the view and into it.
    set_count(&w, 9, 0);
    set_count(&w, 3, 100);
    create(&w, 11, 50, "writer");
    create(&w, 12, 1, "writer");
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    world.block_on(rs.wait_for_download(WAIT)).unwrap();
    assert_eq!(tasks(&r), vec![2, 3, 10, 11]);
    let three = r
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(3))
        .unwrap()
        .expect("task 3 entered the view whole");
    assert_eq!(
        three.fields.get("title"),
        Some(&tandem::state::Field::Value(tandem::state::Val::String(
            "task 3".into()
        )))
    );

    // The reader's own writes reach the writer.
    set_count(&r, 10, 77);
    world.block_on(rs.wait_for_upload(WAIT)).unwrap();
    world.block_on(ws.wait_for_download(WAIT)).unwrap();
    assert_eq!(
        w.read().unwrap().query("Task", "count == 77", &[]).unwrap(),
        vec![PrimaryKey::Int(10)]
    );
}

/// Subscriptions with the string operators, their modifiers and a mixed comparison are
/// evaluated by the server with the same SQL functions as the client's queries.
#[test]
fn string_operator_subscriptions_bootstrap_what_they_match() {
    let world = World::new("strings", None);
    let (w, ws) = writer(&world, "writer");
    for (id, owner) in [(1, "Anna"), (2, "anne"), (3, "Bob"), (4, "Zoë"), (5, "zoe")] {
        create(&w, id, id, owner);
    }
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    let r = world.open("reader.sqlite");
    let rs = world.sync(&r, "reader");
    for (query, expected) in [
        ("owner LIKE 'A*'", vec![1]),
        ("owner LIKE[c] 'an?*'", vec![1, 2]),
        ("owner ==[cd] 'zoe'", vec![4, 5]),
        ("owner BEGINSWITH[c] 'b' OR owner ENDSWITH 'ë'", vec![3, 4]),
        ("owner CONTAINS 'nn'", vec![1, 2]),
    ] {
        let v = subscribe(&r, &[("s", "Task", query)]);
        let done = world
            .block_on(rs.wait_for_subscriptions(Some(v), WAIT))
            .unwrap();
        assert_eq!(done.state, SubscriptionSetState::Complete, "{query}");
        assert_eq!(tasks(&r), expected, "{query}");
    }
}

#[test]
fn a_reconnect_resumes_without_a_new_bootstrap() {
    let world = World::new("resume", None);
    let (w, ws) = writer(&world, "writer");
    for id in 1..=20 {
        create(&w, id, id, "writer");
    }
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    let r = world.open("reader.sqlite");
    subscribe(&r, &[("odd", "Task", "count > 10")]);
    let rs = world.sync(&r, "reader");
    world
        .block_on(rs.wait_for_subscriptions(None, WAIT))
        .unwrap();
    assert!(
        rs.progress().download_transferred > 0,
        "the bootstrap was counted"
    );
    drop(rs);

    // Nothing changed on the server: the new session downloads nothing at all.
    let rs = world.sync(&r, "reader");
    let set = world
        .block_on(rs.wait_for_subscriptions(None, WAIT))
        .unwrap();
    assert_eq!(set.state, SubscriptionSetState::Complete);
    world.block_on(rs.wait_for_download(WAIT)).unwrap();
    assert_eq!(rs.progress().download_transferred, 0, "no second bootstrap");
    assert_eq!(tasks(&r), (11..=20).collect::<Vec<_>>());

    // A change made while it was away arrives as an ordinary download.
    drop(rs);
    set_count(&w, 1, 99);
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    let rs = world.sync(&r, "reader");
    world.block_on(rs.wait_for_download(WAIT)).unwrap();
    assert!(tasks(&r).contains(&1));

    // A file reopened: its sets are read back from the file.
    drop(rs);
    let reopened = world.open("reader.sqlite");
    assert_eq!(
        reopened.active_subscriptions().unwrap().subscriptions[0].query,
        "count > 10"
    );
}

#[test]
fn an_unevaluable_query_fails_its_set_and_the_session_goes_on() {
    let world = World::new("query-error", None);
    let (w, ws) = writer(&world, "writer");
    create(&w, 1, 1, "writer");
    create(&w, 2, 2, "writer");
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();

    let r = world.open("reader.sqlite");
    subscribe(&r, &[("one", "Task", "count == 1")]);
    let (rs, events) = world.sync_recording(&r, "reader");
    world
        .block_on(rs.wait_for_subscriptions(None, WAIT))
        .unwrap();
    assert_eq!(tasks(&r), vec![1]);

    // The local compiler takes a link path; the server does not evaluate one (QUERY_ERROR 226).
    let bad = subscribe(&r, &[("linked", "Task", "project.name == 'x'")]);
    let err = world
        .block_on(rs.wait_for_subscriptions(Some(bad), WAIT))
        .unwrap_err();
    match err {
        SyncError::Subscription { version, message } => {
            assert_eq!(version, bad);
            assert!(message.contains("link"), "{message}");
        }
        other => panic!("expected a subscription error, got {other:?}"),
    }
    match r.subscription_set(bad).unwrap().unwrap().state {
        SubscriptionSetState::Error(message) => assert!(message.contains("link")),
        other => panic!("set {bad} is {other:?}"),
    }
    assert_eq!(r.active_subscriptions().unwrap().version, 1);
    assert_eq!(tasks(&r), vec![1], "the active set still holds");
    wait_for_error(&events, 30, |e| e.code == 226 && e.will_retry);

    // The session goes on: a later set completes, and steady state flows.
    let good = subscribe(&r, &[("two", "Task", "count == 2")]);
    let set = world
        .block_on(rs.wait_for_subscriptions(Some(good), WAIT))
        .unwrap();
    assert_eq!(set.state, SubscriptionSetState::Complete);
    assert_eq!(tasks(&r), vec![2]);

    // Refused locally, before anything is sent.
    let refused = r.update_subscriptions(|m| {
        m.add(None, "Task", "count > 1 SORT(count ASC)", &[])?;
        Ok(())
    });
    assert_eq!(refused.unwrap_err().kind(), StoreErrorKind::InvalidArgument);
    let refused = r.update_subscriptions(|m| {
        m.add(None, "Nope", "TRUEPREDICATE", &[])?;
        Ok(())
    });
    assert_eq!(refused.unwrap_err().kind(), StoreErrorKind::InvalidArgument);
    // More values than the server can bind beside its own four: the server's bound, here.
    let values = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("_id IN {{{}}}", list.join(","))
    };
    let refused = r.update_subscriptions(|m| {
        m.add(None, "Task", &values(32_763), &[])?;
        Ok(())
    });
    let err = refused.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::InvalidArgument);
    assert!(
        err.to_string().contains("at most 32762 are supported"),
        "{err}"
    );
    assert_eq!(
        r.subscriptions().unwrap().version,
        good,
        "nothing was committed"
    );
}

const RULES: &str = r#"{
  "default": { "read": true, "write": true },
  "classes": {
    "Task": { "read": "owner == %%user.id OR count == 0", "write": "owner == %%user.id" }
  }
}"#;

#[test]
fn rules_filter_reads_per_user_and_revert_forbidden_writes() {
    let world = World::new("rules", Some(RULES));
    let alice = world.open("alice.sqlite");
    subscribe(&alice, &[("all", "Task", "TRUEPREDICATE")]);
    let (sa, events) = world.sync_recording(&alice, "alice");
    let bob = world.open("bob.sqlite");
    subscribe(&bob, &[("all", "Task", "TRUEPREDICATE")]);
    let sb = world.sync(&bob, "bob");

    create(&alice, 1, 5, "alice");
    create(&alice, 2, 0, "alice");
    create(&bob, 3, 5, "bob");
    create(&bob, 5, 0, "bob");
    world.block_on(sa.wait_for_upload(WAIT)).unwrap();
    world.block_on(sb.wait_for_upload(WAIT)).unwrap();
    world
        .block_on(sa.wait_for_subscriptions(None, WAIT))
        .unwrap();
    world
        .block_on(sb.wait_for_subscriptions(None, WAIT))
        .unwrap();
    world.block_on(sa.wait_for_download(WAIT)).unwrap();
    world.block_on(sb.wait_for_download(WAIT)).unwrap();
    // Each sees their own tasks and the shared ones (count 0).
    assert_eq!(tasks(&alice), vec![1, 2, 5]);
    assert_eq!(tasks(&bob), vec![2, 3, 5]);

    let title = |db: &Database, id: i64| {
        db.read()
            .unwrap()
            .object("Task", &PrimaryKey::Int(id))
            .unwrap()
            .and_then(|o| o.fields.get("title").cloned())
    };
    let set_title = |db: &Database, id: i64, text: &str| {
        let mut tx = db.begin_write().unwrap();
        tx.set(
            "Task",
            &PrimaryKey::Int(id),
            "title",
            Value::String(text.into()),
        )
        .unwrap();
        tx.commit().unwrap();
    };
    // Alice creates a task owned by bob, and edits bob's shared task 5 (she may read it, not
    // write it): both are reverted on her file, with a compensating write, and never reach
    // bob. Her edit of her own task 2 stands and reaches bob.
    create(&alice, 4, 5, "bob");
    set_title(&alice, 5, "alice was here");
    set_title(&alice, 2, "alice's own edit");
    world.block_on(sa.wait_for_upload(WAIT)).unwrap();
    world.block_on(sa.wait_for_download(WAIT)).unwrap();
    eventually("the reverts on alice's file", || {
        tasks(&alice) == vec![1, 2, 5] && title(&alice, 5) == title(&bob, 5)
    });
    wait_for_error(&events, 30, |e| {
        e.code == 231 && e.will_retry && e.message.contains("rejectedUpdates")
    });
    world.block_on(sb.wait_for_download(WAIT)).unwrap();
    assert_eq!(tasks(&bob), vec![2, 3, 5]);
    assert_eq!(
        title(&bob, 5),
        Some(tandem::state::Field::Value(tandem::state::Val::String(
            "task 5".into()
        )))
    );
    assert_eq!(title(&bob, 2), title(&alice, 2));
    assert_eq!(
        title(&bob, 2),
        Some(tandem::state::Field::Value(tandem::state::Val::String(
            "alice's own edit".into()
        )))
    );

    // Bob shares task 3 (count 0): it enters alice's view.
    set_count(&bob, 3, 0);
    world.block_on(sb.wait_for_upload(WAIT)).unwrap();
    world.block_on(sa.wait_for_download(WAIT)).unwrap();
    assert_eq!(tasks(&alice), vec![1, 2, 3, 5]);
    drop((sa, sb));
}

#[test]
fn a_session_on_flx_without_flexible_is_refused_with_advice() {
    let world = World::new("not-flexible", None);
    let db = world.open("plain.sqlite");
    let (session, events) = live::start_recording(
        &db,
        SyncConfig {
            flexible: false,
            ..world.config("plain")
        },
    );
    wait_for_error(&events, 30, |e| e.message.contains("SyncConfig::flexible"));
    // A flexible session has no TRANSACT (the server could not check its writes).
    let flexible_db = world.open("flexible.sqlite");
    let flexible = world.sync(&flexible_db, "someone");
    let err = world
        .block_on(flexible.transact(|tx| tx.erase("Task", &PrimaryKey::Int(1)), None))
        .unwrap_err();
    assert!(matches!(err, SyncError::InvalidState { .. }), "{err:?}");
    // And a session that is not flexible cannot wait for subscriptions.
    let err = world
        .block_on(session.wait_for_subscriptions(None, Some(Duration::from_secs(1))))
        .unwrap_err();
    assert!(matches!(err, SyncError::InvalidState { .. }), "{err:?}");
}

#[test]
fn a_bootstrap_in_many_batches_is_not_interleaved_with_the_acknowledgements_of_uploads() {
    // 512-byte batches: a bootstrap of 1,000 tasks takes hundreds of DOWNLOADs, and the reader
    // uploads all along (a thread commits every millisecond). Any DOWNLOAD between two batches
    // would stop the reader's session with "in the middle of the bootstrap".
    let world = World::with_batch("batches", None, Some(512));
    let (w, ws) = writer(&world, "writer");
    let mut tx = w.begin_write().unwrap();
    for id in 1..=1000 {
        tx.create(
            "Task",
            PrimaryKey::Int(id),
            &[
                ("title", Value::String(format!("task {id}"))),
                ("count", Value::Int(id)),
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();

    let r = world.open("reader.sqlite");
    // Recorded from the session's first event, so that "no error" below means none at all.
    let (rs, events) = world.sync_recording(&r, "reader");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let uploader = {
        let (r, done) = (Arc::clone(&r), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut id = 10_000;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                create(&r, id, 1, "reader");
                id += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    for round in 0..6 {
        let query = if round % 2 == 0 {
            "count > 0"
        } else {
            "count > 500"
        };
        let version = subscribe(&r, &[("some", "Task", query)]);
        let set = world
            .block_on(rs.wait_for_subscriptions(Some(version), WAIT))
            .unwrap();
        assert_eq!(set.state, SubscriptionSetState::Complete);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    uploader.join().unwrap();
    world.block_on(rs.wait_for_upload(WAIT)).unwrap();
    world.block_on(rs.wait_for_download(WAIT)).unwrap();
    // The last set is `count > 500`: the reader's own tasks (count 1) left its view.
    assert_eq!(tasks(&r), (501..=1000).collect::<Vec<_>>());
    live::stop_and_drain(&rs, &events);
    let errors = errors(&events);
    assert!(errors.is_empty(), "no error: {errors:?}");
}

#[test]
fn a_set_naming_a_property_the_server_learns_from_this_client_is_sent_after_its_upload() {
    let world = World::new("new-property", None);
    let (w, ws) = writer(&world, "writer");
    create(&w, 1, 1, "writer");
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();

    // The reader's Task has `priority`, which the server learns from the reader's upload of
    // its schema; the set naming it must reach the server after that upload.
    let mut classes = schema().classes().to_vec();
    classes[0]
        .properties
        .push(Property::new("priority", PropertyType::Int).nullable());
    let schema = Schema::new(classes).unwrap();
    let r = world.open_with("reader.sqlite", &schema);
    let mut tx = r.begin_write().unwrap();
    tx.create("Task", PrimaryKey::Int(7), &[("priority", Value::Int(5))])
        .unwrap();
    tx.commit().unwrap();
    let version = subscribe(&r, &[("urgent", "Task", "priority > 2")]);
    let rs = world.sync(&r, "reader");
    let set = world
        .block_on(rs.wait_for_subscriptions(Some(version), WAIT))
        .unwrap();
    assert_eq!(set.state, SubscriptionSetState::Complete);
    assert_eq!(tasks(&r), vec![7]);
}

#[test]
fn many_sets_committed_offline_send_only_the_newest() {
    let world = World::new("offline-sets", None);
    let (w, ws) = writer(&world, "writer");
    for id in 1..=100 {
        create(&w, id, id, "writer");
    }
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    let r = world.open("reader.sqlite");
    // More than the server queues (64): a search box typed into while offline.
    let mut last = 0;
    for n in 1..=80 {
        last = subscribe(&r, &[("search", "Task", &format!("count > {n}"))]);
    }
    let (rs, events) = world.sync_recording(&r, "reader");
    let set = world
        .block_on(rs.wait_for_subscriptions(Some(last), WAIT))
        .unwrap();
    assert_eq!(set.state, SubscriptionSetState::Complete);
    assert_eq!(tasks(&r), (81..=100).collect::<Vec<_>>());
    for older in 1..last {
        assert_eq!(
            r.subscription_set(older).unwrap().unwrap().state,
            SubscriptionSetState::Superseded,
            "set {older}"
        );
    }
    let set = world
        .block_on(rs.wait_for_subscriptions(Some(1), WAIT))
        .unwrap();
    assert_eq!(set.state, SubscriptionSetState::Superseded);
    live::stop_and_drain(&rs, &events);
    let errors = errors(&events);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn a_flexible_session_cannot_be_refreshed_with_another_users_token() {
    struct Bobs;
    impl TokenProvider for Bobs {
        fn fetch_token(&self) -> Result<String, String> {
            Ok(token_for("bob", 3600))
        }
    }
    let world = World::new("refresh-user", None);
    let db = world.open("alice.sqlite");
    subscribe(&db, &[("all", "Task", "TRUEPREDICATE")]);
    let mut config = world.config("alice");
    // Alice's token expires in 3 s; the provider hands out bob's, which the server refuses
    // for alice's flexible session (her rules would be read as bob's otherwise).
    config.token = token_for("alice", 3);
    config.token_provider = Some(Arc::new(Bobs));
    let (_session, events) = live::start_recording(&db, config);
    wait_for_error(&events, 30, |e| {
        e.message.contains("the new token is for user bob")
    });
}

/// A file holding a transaction that waits for a TRANSACT verdict (only `commit_transact` used
/// directly can leave one here): a flexible sync session cannot send it, so it refuses to
/// start instead of holding every upload back.
#[test]
fn a_waiting_transaction_refuses_a_flexible_session() {
    let world = World::new("flx-transact", None);
    let db = world.open("a.sqlite");
    create(&db, 1, 0, "alice");
    let mut tx = db.begin_write().unwrap();
    tx.set("Task", &PrimaryKey::Int(1), "count", Value::Int(1))
        .unwrap();
    tx.commit_transact().unwrap().unwrap();
    let err = SyncSession::start(Arc::clone(&db), world.config("alice"))
        .err()
        .expect("a flexible session on a file with a waiting transaction");
    assert!(
        matches!(&err, SyncError::InvalidState { message } if message.contains("pending_transact")),
        "{err:?}"
    );
}

/// A write to an object outside the client's view that the server holds (here an insert into
/// its non-empty list, which the client never had) is reverted as a compensating write (231,
/// the session goes on) and the client's copy is erased; the server's object is untouched.
/// Before, the insert's `prior_size` did not fit the server's list and the whole upload was
/// refused (212): the session stopped for good. Found by the simulation's flexible sync seeds.
#[test]
fn a_write_outside_the_view_is_a_compensating_write_and_the_session_goes_on() {
    let world = World::new("outside", None);
    let (w, ws) = writer(&world, "writer");
    create(&w, 1, 1, "writer");
    let mut tx = w.begin_write().unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("a".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();

    let r = world.open("reader.sqlite");
    subscribe(&r, &[("mine", "Task", "owner == 'reader'")]);
    let (rs, events) = world.sync_recording(&r, "reader");
    world
        .block_on(rs.wait_for_subscriptions(None, WAIT))
        .unwrap();
    assert_eq!(tasks(&r), Vec::<i64>::new());
    // Task 1 is not in the reader's file: an upsert creates it there, with one tag.
    let mut tx = r.begin_write().unwrap();
    tx.upsert("Task", PrimaryKey::Int(1), &[("count", Value::Int(7))])
        .unwrap();
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "tags",
        0,
        Value::String("b".into()),
    )
    .unwrap();
    tx.commit().unwrap();
    world.block_on(rs.wait_for_upload(WAIT)).unwrap();
    eventually("the reader's copy erased", || tasks(&r).is_empty());
    // Delivered on the notifier thread: wait for it, then check it is the only one.
    wait_for_error(&events, 30, |_| true);
    let got = errors(&events);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].code, got[0].will_retry), (231, true), "{got:?}");
    assert!(
        got[0].message.contains("outside the client's view"),
        "{got:?}"
    );

    // The server's object is as the writer left it.
    create(&w, 2, 2, "writer");
    world.block_on(ws.wait_for_upload(WAIT)).unwrap();
    let task = w
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(1))
        .unwrap()
        .unwrap();
    assert_eq!(
        task.fields.get("tags"),
        Some(&tandem::state::Field::List(vec![
            tandem::state::Element::Value(tandem::state::Val::String("a".into()))
        ]))
    );
    assert_eq!(
        task.fields.get("count"),
        Some(&tandem::state::Field::Value(tandem::state::Val::Int(1)))
    );

    // The reader's session goes on: a task in its view reaches the writer.
    create(&r, 3, 3, "reader");
    world.block_on(rs.wait_for_upload(WAIT)).unwrap();
    eventually("the reader's task at the writer", || tasks(&w).contains(&3));
    assert_eq!(tasks(&r), vec![3]);
    let got = errors(&events);
    assert_eq!(got.len(), 1, "{got:?}");
}
