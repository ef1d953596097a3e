//! A small todo app on Tandem: add, complete, list, and watch live updates from other devices.
//!
//! ```sh
//! cargo run --example todo -- --db alice.sqlite --url wss://localhost:7800/ \
//!     --token "$(tandem-server --jwt-secret-file secret --issue-token /todos)" --ca cert.pem add "buy milk"
//! cargo run --example todo -- ... list | done <id> | watch
//! ```

use std::sync::Arc;
use std::time::Duration;

use tandem::client::{SyncConfig, SyncSession};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::state::{Field, Val};
use tandem::store::{Config, Database};

fn schema() -> Schema {
    Schema::new(vec![ClassSchema::top_level(
        "Todo",
        "_id",
        vec![
            Property::new("_id", PropertyType::Int),
            Property::new("title", PropertyType::String),
            Property::new("done", PropertyType::Bool),
        ],
    )])
    .expect("a valid schema")
}

fn show(db: &Database) -> Result<(), Box<dyn std::error::Error>> {
    let read = db.read()?;
    for key in read.query("Todo", "TRUEPREDICATE SORT(_id ASC)", &[])? {
        let Some(todo) = read.object("Todo", &key)? else {
            continue;
        };
        let done = matches!(todo.fields.get("done"), Some(Field::Value(Val::Bool(true))));
        let title = match todo.fields.get("title") {
            Some(Field::Value(Val::String(s))) => s.as_str(),
            _ => "",
        };
        println!("[{}] {key}: {title}", if done { "x" } else { " " });
    }
    Ok(())
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: todo --db FILE --url wss://... --token JWT [--ca CERT] add TITLE | done ID | list | watch";
    let (Some(path), Some(url), Some(token)) = (
        flag(&args, "--db"),
        flag(&args, "--url"),
        flag(&args, "--token"),
    ) else {
        return Err(usage.into());
    };
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    let command = positional.first().map(|s| s.as_str()).unwrap_or("list");
    let db = Arc::new(Database::open(path, &schema(), Config::default())?);
    let session = SyncSession::start(
        Arc::clone(&db),
        SyncConfig {
            url,
            path: "/todos".into(),
            token,
            ca_file: flag(&args, "--ca").map(Into::into),
            ..SyncConfig::default()
        },
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(session.wait_for_download(Some(Duration::from_secs(30))))?;
    match command {
        "add" => {
            let title = positional.get(1).ok_or(usage)?;
            let id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let mut tx = db.begin_write()?;
            tx.create(
                "Todo",
                PrimaryKey::Int(id),
                &[("title", Value::String(title.to_string()))],
            )?;
            tx.commit()?;
        }
        "done" => {
            let id: i64 = positional.get(1).ok_or(usage)?.parse()?;
            let mut tx = db.begin_write()?;
            tx.set("Todo", &PrimaryKey::Int(id), "done", Value::Bool(true))?;
            tx.commit()?;
        }
        "watch" => {
            show(&db)?;
            let watcher = Arc::clone(&db);
            let _token = db.observe_query("Todo", "TRUEPREDICATE", &[], move |change| {
                println!(
                    "-- changed: {} new, {} gone, {} modified",
                    change.insertions.len(),
                    change.deletions.len(),
                    change.modifications.len()
                );
                let _ = show(&watcher);
            })?;
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "list" => {}
        _ => return Err(usage.into()),
    }
    runtime.block_on(session.wait_for_upload(Some(Duration::from_secs(30))))?;
    show(&db)
}
