//! The Tandem side of the mixed-client scenario: a Tandem client that writes and reads objects
//! of every Realm property type on a server path that realm-core clients sync through
//! partition-based sync. The realm-core compatibility suite (`tests/realm-compat`) runs it.
//!
//! ```sh
//! cargo run --example realm_peer -- --db peer.sqlite --url ws://127.0.0.1:7800/ --allow-insecure \
//!     --path '/"p1"' --token "$(tandem-server --jwt-secret-file secret --issue-token '/"p1"')" \
//!     write objects.json
//! cargo run --example realm_peer -- ... read 64f0c0ffee0000000000beef
//! ```
//!
//! Flags: `--db FILE` (the local database), `--url ws[s]://HOST:PORT/`, `--path PATH` (the
//! server path; partition `"p1"` is `/"p1"`: a slash, then the partition's canonical Extended
//! JSON), `--token JWT` (a Tandem access token for that path, as `tandem-server --issue-token`
//! makes), `--ca CERT` (PEM to trust for `wss://`), `--allow-insecure` (accept `ws://`),
//! `--timeout SECONDS` (each wait; default 60), `--subscribe CLASS:QUERY` (repeatable: sync
//! as a flexible sync client, path `/flx`, with these subscriptions, replacing the file's
//! previous ones; each command first waits until the set is complete).
//!
//! Commands:
//! - `write FILE`: FILE holds a JSON array of `["Class", {object}]` pairs in the canonical JSON
//!   below (create `LinkTarget`s before the `AllTypes` that links to them); all are written in
//!   one transaction, in realm-kotlin's `copyToRealm` order, then the program waits until the
//!   server has acknowledged the upload. Prints nothing.
//! - `read ID`: waits until everything the server had at the call is downloaded, then prints
//!   the `AllTypes` object whose `_id` is the object id `ID` (24 hex digits) as canonical JSON
//!   and a newline. Exit status 2 if there is no such object.
//!
//! The schema and the canonical JSON are specified in `peer.rs` (in this directory): the
//! Kotlin side declares the same schema and prints objects the same way, so the two outputs
//! compare as text.

mod peer;

use std::sync::Arc;
use std::time::Duration;

use tandem::client::{SyncConfig, SyncSession};
use tandem::model::{ObjectId, PrimaryKey};
use tandem::state::Key;
use tandem::store::{Config, Database};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const USAGE: &str = "usage: realm_peer --db FILE --url ws[s]://HOST:PORT/ --path PATH --token JWT \
                     [--ca CERT] [--allow-insecure] [--timeout SECONDS] \
                     [--subscribe CLASS:QUERY]... (write FILE | read ID)";

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("realm_peer: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<i32, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(db_path), Some(url), Some(path), Some(token)) = (
        flag(&args, "--db"),
        flag(&args, "--url"),
        flag(&args, "--path"),
        flag(&args, "--token"),
    ) else {
        return Err(USAGE.into());
    };
    let timeout = Some(Duration::from_secs(
        flag(&args, "--timeout").map_or(Ok(60), |s| s.parse())?,
    ));
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--")
                && (*i == 0 || !args[i - 1].starts_with("--") || args[i - 1] == "--allow-insecure")
        })
        .map(|(_, a)| a)
        .collect();
    let (Some(command), Some(operand)) = (positional.first(), positional.get(1)) else {
        return Err(USAGE.into());
    };

    let schema = peer::schema();
    let db = Arc::new(Database::open(&db_path, &schema, Config::default())?);
    let subscriptions: Vec<(&str, &str)> = args
        .windows(2)
        .filter(|w| w[0] == "--subscribe")
        .map(|w| {
            w[1].split_once(':')
                .ok_or_else(|| format!("--subscribe takes CLASS:QUERY, not {:?}", w[1]))
        })
        .collect::<Result<_, _>>()?;
    let flexible = !subscriptions.is_empty();
    if flexible {
        db.update_subscriptions(|m| {
            m.clear();
            for (class, query) in &subscriptions {
                m.add(None, class, query, &[])?;
            }
            Ok(())
        })?;
    }
    let session = SyncSession::start(
        Arc::clone(&db),
        SyncConfig {
            url,
            path,
            token,
            ca_file: flag(&args, "--ca").map(Into::into),
            allow_insecure: args.iter().any(|a| a == "--allow-insecure"),
            flexible,
            ..SyncConfig::default()
        },
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    if flexible {
        runtime.block_on(session.wait_for_subscriptions(None, timeout))?;
    }
    let code = match command.as_str() {
        "write" => {
            let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(operand)?)?;
            let pairs = doc
                .as_array()
                .ok_or("the write file must hold a JSON array of [class, object] pairs")?;
            let mut tx = db.begin_write()?;
            for pair in pairs {
                let (Some(class), Some(object)) = (pair[0].as_str(), pair.get(1)) else {
                    return Err(format!("not a [class, object] pair: {pair}").into());
                };
                peer::write_object(&mut tx, &schema, class, object)?;
            }
            tx.commit()?;
            runtime.block_on(session.wait_for_upload(timeout))?;
            0
        }
        "read" => {
            let id = peer::parse_key(&serde_json::json!({ "objectId": operand }))?;
            runtime.block_on(session.wait_for_download(timeout))?;
            let read = db.read()?;
            match read.object(peer::ALL_TYPES, &id)? {
                Some(object) => {
                    let PrimaryKey::ObjectId(ObjectId(bytes)) = id else {
                        unreachable!("parsed as an object id")
                    };
                    let key = Key::ObjectId(bytes);
                    println!(
                        "{}",
                        peer::object_json(&schema, peer::ALL_TYPES, Some(&key), &object)
                    );
                    0
                }
                None => {
                    eprintln!("realm_peer: no {}[{operand}]", peer::ALL_TYPES);
                    2
                }
            }
        }
        _ => return Err(USAGE.into()),
    };
    session.stop();
    Ok(code)
}
