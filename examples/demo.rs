//! The Tandem demo: a real `tandem-server` (embedded SQLite, TLS 1.3, HS256 tokens) in a
//! temporary directory, two clients that go offline, make conflicting edits, come back, and
//! converge. Run: `cargo run --features server --example demo`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::client::{SyncConfig, SyncSession};
use tandem::model::{
    ClassSchema, CollectionKind, PrimaryKey, Property, PropertyType, Schema, Value,
};
use tandem::server::{start, Authenticator, ServerConfig, TokenSigner};
use tandem::state::{Element, Field, State, Val};
use tandem::store::{Config, Database};

const SECRET: &[u8] = b"demo secret, not for production";

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Task",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
            Property::new("likes", PropertyType::Int),
            Property::new("steps", PropertyType::String).collection(CollectionKind::List),
        ],
    )])
    .expect("the demo schema is valid")
}

fn show(state: &State) -> String {
    let mut out = String::new();
    for (key, task) in state.objects.get("Task").into_iter().flatten() {
        let title = match &task.fields["title"] {
            Field::Value(Val::String(s)) => s.clone(),
            _ => String::new(),
        };
        let likes = match &task.fields["likes"] {
            Field::Value(Val::Int(v)) => *v,
            _ => 0,
        };
        let steps: Vec<String> = match &task.fields["steps"] {
            Field::List(items) => items
                .iter()
                .map(|e| match e {
                    Element::Value(Val::String(s)) => s.clone(),
                    _ => "?".into(),
                })
                .collect(),
            _ => Vec::new(),
        };
        out.push_str(&format!(
            "    Task[{key}] title={title:?} likes={likes} steps={steps:?}\n"
        ));
    }
    out
}

fn wait_until_synced(dbs: &[&Arc<Database>]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let states: Vec<_> = dbs
            .iter()
            .map(|d| d.export_state().map(|s| s.objects).ok())
            .collect();
        let idle = dbs
            .iter()
            .all(|d| d.pending_uploads(1).map(|p| p.is_empty()).unwrap_or(false));
        if idle && states.windows(2).all(|w| w[0] == w[1]) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn session(dir: &Path, port: u16, db: &Arc<Database>, token: &str) -> SyncSession {
    SyncSession::start(
        Arc::clone(db),
        SyncConfig {
            url: format!("wss://localhost:{port}/"),
            path: "/demo".into(),
            token: token.into(),
            ca_file: Some(dir.join("cert.pem")),
            allow_insecure: false,
            ..SyncConfig::default()
        },
    )
    .expect("the session starts")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;

    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(start(ServerConfig {
        tls: Some((dir.join("cert.pem"), dir.join("key.pem"))),
        ..ServerConfig::new(
            "127.0.0.1:0".parse()?,
            dir.join("server"),
            Authenticator::hs256(SECRET),
        )
    }))?;
    let port = server.local_addr.port();
    println!(
        "1. tandem-server listening on wss://localhost:{port} (TLS 1.3), data in {}",
        dir.join("server").display()
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = TokenSigner::hs256(SECRET)
        .sign("demo", now + 3600, &["/demo"])
        .expect("HS256 signing cannot fail");
    let alice = Arc::new(Database::open(
        dir.join("alice.sqlite"),
        &schema(),
        Config::default(),
    )?);
    let bob = Arc::new(Database::open(
        dir.join("bob.sqlite"),
        &schema(),
        Config::default(),
    )?);
    let sa = session(&dir, port, &alice, &token);
    let sb = session(&dir, port, &bob, &token);

    let mut tx = alice.begin_write()?;
    tx.create(
        "Task",
        PrimaryKey::Int(1),
        &[("title", Value::String("Write docs".into()))],
    )?;
    tx.create(
        "Task",
        PrimaryKey::Int(2),
        &[("title", Value::String("Fix bug".into()))],
    )?;
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "steps",
        0,
        Value::String("outline".into()),
    )?;
    tx.commit()?;
    wait_until_synced(&[&alice, &bob]);
    println!(
        "2. Alice created two tasks; both devices synced:\n{}",
        show(&bob.export_state()?)
    );

    drop((sa, sb));
    println!("3. Both devices go offline and edit the same things:");
    let mut tx = alice.begin_write()?;
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("Write docs (Alice)".into()),
    )?;
    tx.add("Task", &PrimaryKey::Int(1), "likes", 2)?;
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "steps",
        1,
        Value::String("alice's step".into()),
    )?;
    tx.erase("Task", &PrimaryKey::Int(2))?;
    tx.commit()?;
    println!("   Alice: renames task 1, +2 likes, inserts a step at index 1, deletes task 2");
    std::thread::sleep(Duration::from_millis(5));
    let mut tx = bob.begin_write()?;
    tx.set(
        "Task",
        &PrimaryKey::Int(1),
        "title",
        Value::String("Write docs (Bob)".into()),
    )?;
    tx.add("Task", &PrimaryKey::Int(1), "likes", 3)?;
    tx.list_insert(
        "Task",
        &PrimaryKey::Int(1),
        "steps",
        1,
        Value::String("bob's step".into()),
    )?;
    tx.set(
        "Task",
        &PrimaryKey::Int(2),
        "title",
        Value::String("Fix bug (Bob)".into()),
    )?;
    tx.commit()?;
    println!("   Bob (a little later): renames task 1, +3 likes, inserts a step at index 1, edits task 2");
    println!(
        "   Alice sees:\n{}   Bob sees:\n{}",
        show(&alice.export_state()?),
        show(&bob.export_state()?)
    );

    println!("4. Both reconnect.");
    let _sa = session(&dir, port, &alice, &token);
    let _sb = session(&dir, port, &bob, &token);
    let synced = wait_until_synced(&[&alice, &bob]);
    let server_state = server.state_of("/demo").unwrap_or_default();
    println!("5. Converged state:");
    println!(
        "   Alice:\n{}   Bob:\n{}   Server:\n{}",
        show(&alice.export_state()?),
        show(&bob.export_state()?),
        show(&server_state)
    );
    let all_equal = synced
        && alice.export_state()?.objects == bob.export_state()?.objects
        && alice.export_state()?.objects == server_state.objects;
    // Check each merge rule on the converged state rather than asserting it in prose.
    let final_state = alice.export_state()?;
    let task1 = final_state
        .objects
        .get("Task")
        .and_then(|t| t.get(&tandem::state::Key::Int(1)));
    let field = |name: &str| task1.map(|t| t.fields[name].clone());
    let checks = [
        (
            "last writer wins (Bob's later title)",
            field("title") == Some(Field::Value(Val::String("Write docs (Bob)".into()))),
        ),
        (
            "counters add up (2 + 3)",
            field("likes") == Some(Field::Value(Val::Int(5))),
        ),
        (
            "both inserts at one index kept, older first",
            field("steps")
                == Some(Field::List(
                    ["outline", "alice's step", "bob's step"]
                        .map(|s| Element::Value(Val::String(s.into())))
                        .to_vec(),
                )),
        ),
        (
            "delete wins over a concurrent edit",
            !final_state.objects["Task"].contains_key(&tandem::state::Key::Int(2)),
        ),
    ];
    for (rule, holds) in &checks {
        println!("   {} {rule}", if *holds { "ok  " } else { "FAIL" });
    }
    let all_equal = all_equal && checks.iter().all(|(_, holds)| *holds);
    println!(
        "{}",
        if all_equal {
            "ALL REPLICAS CONVERGED"
        } else {
            "REPLICAS DID NOT CONVERGE"
        }
    );
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    if all_equal {
        Ok(())
    } else {
        Err("replicas did not converge".into())
    }
}
