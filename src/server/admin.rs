//! `tandem-server admin ...`: inspecting and maintaining the server files of a data directory
//! (see [`AdminCommand`] and docs/operations.md, "Admin commands").
//!
//! Each server path has one SQLite file in the data directory, named by the SHA-256 of the path
//! (`session::file_name`; servers before issue 13 used the hex of the path's bytes, still
//! opened when present). A file names its server path in its `meta` table (key `server_path`,
//! a text value); a legacy file without that row is named by its decoded file name. The App
//! Services store (`app.sqlite`) is not a server file; `backup --all` and `restore` carry it
//! too.
//!
//! The read commands (`files`, `clients`, `history`) only read, through SQLite, and are safe
//! while the server runs (WAL mode: they see the last committed version). `state` opens the
//! server file as the server does. `backup` copies through SQLite's online backup API in one
//! read transaction: a consistent snapshot, safe while the server writes. `restore` replaces
//! files and must run while the server is stopped. `compact` runs
//! [`ServerFile::compact`](super::ServerFile) once and must run while the server is stopped too
//! (a running server keeps its open files' positions in memory; it compacts by itself with
//! `--history-horizon`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Map, Value as Json};

use super::config::AdminCommand;
use super::file::{random_u64, ServerFile};
use super::session::{file_path, legacy_file_name};
use crate::changeset::{Changeset, CollectionType};
use crate::model::{Decimal128, ObjectId, Uuid};
use crate::state::{Element, Field, Key, Object, State, TableSpec, Val};

/// The App Services store's file name in the data directory.
const APP_STORE: &str = "app.sqlite";

/// The `meta` key of a server file's server path (a text value; `ServerFile::record_server_path`).
pub const PATH_META_KEY: &str = "server_path";

/// How long SQLite waits for a lock held by the running server before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin command failed (the message names the file or path concerned).
#[derive(Debug, PartialEq, Eq)]
pub struct AdminError(pub String);

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AdminError {}

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> AdminError {
    AdminError(format!("{what}: {e}"))
}

/// Runs `command` on the server files in `data_dir`, writing its output to `out`.
pub fn run(data_dir: &Path, command: &AdminCommand, out: &mut dyn Write) -> Result<(), AdminError> {
    let written = |e: std::io::Error| failed("writing the output", e);
    match command {
        AdminCommand::Files => files(data_dir, out),
        AdminCommand::Clients { path } => clients(data_dir, path, out),
        AdminCommand::History { path, from, to } => history(data_dir, path, *from, *to, out),
        AdminCommand::State { path } => {
            let file = existing(data_dir, path)?;
            let server = ServerFile::open(&file).map_err(|e| failed(file.display(), e.message))?;
            let state = server
                .state()
                .map_err(|e| failed(file.display(), e.message))?;
            let text = serde_json::to_string_pretty(&state_json(&state))
                .map_err(|e| failed("encoding the state", e))?;
            writeln!(out, "{text}").map_err(written)
        }
        AdminCommand::Backup { path, dest } => backup(data_dir, path.as_deref(), dest, out),
        AdminCommand::Restore { files } => restore(data_dir, files, out),
        AdminCommand::Compact { path, horizon } => compact(data_dir, path, *horizon, out),
    }
}

/// Opens an existing SQLite file without creating it; waits for the server's locks.
fn open(file: &Path) -> Result<Connection, AdminError> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(file.display(), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| failed(file.display(), e))?;
    Ok(conn)
}

/// Whether `conn` is a server file (it has a history table).
fn is_server_file(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'",
        [],
        |_| Ok(()),
    )
    .optional()
    .ok()
    .flatten()
    .is_some()
}

/// The server path of the server file `name` open as `conn`: its `meta` row, else the legacy
/// hex file name decoded (only if it encodes back to `name`). `None` if neither names one.
fn server_path(conn: &Connection, name: &str) -> Option<String> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1 AND typeof(value) = 'text'",
            [PATH_META_KEY],
            |r| r.get(0),
        )
        .optional()
        .ok()
        .flatten();
    stored.or_else(|| {
        let hex = name.strip_suffix(".sqlite")?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let path = String::from_utf8(bytes).ok()?;
        (legacy_file_name(&path) == name).then_some(path)
    })
}

/// The server file of `path`, which must exist.
fn existing(data_dir: &Path, path: &str) -> Result<PathBuf, AdminError> {
    let file = file_path(data_dir, path);
    if !file.is_file() {
        return Err(AdminError(format!(
            "no server file for {path:?} in {}",
            data_dir.display()
        )));
    }
    Ok(file)
}

/// Every server file in `data_dir` and its server path, ordered by path (files whose path
/// cannot be told come last, as `?<file name>`).
fn server_files(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, AdminError> {
    let entries = std::fs::read_dir(data_dir).map_err(|e| failed(data_dir.display(), e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| failed(data_dir.display(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sqlite") || name == APP_STORE || !entry.path().is_file() {
            continue;
        }
        let conn = open(&entry.path())?;
        if !is_server_file(&conn) {
            continue;
        }
        let path = server_path(&conn, &name).unwrap_or_else(|| format!("?{name}"));
        found.push((path, entry.path()));
    }
    found.sort();
    Ok(found)
}

fn count(conn: &Connection, file: &Path, sql: &str) -> Result<u64, AdminError> {
    conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .map(|n| n.unwrap_or(0) as u64)
        .map_err(|e| failed(file.display(), e))
}

/// `files`: a header, then one tab-separated line per server file.
fn files(data_dir: &Path, out: &mut dyn Write) -> Result<(), AdminError> {
    let mut lines =
        vec!["PATH\tLATEST_VERSION\tHISTORY_CHANGESETS\tHISTORY_BYTES\tCLIENT_FILES".to_owned()];
    for (path, file) in server_files(data_dir)? {
        let conn = open(&file)?;
        let latest = count(&conn, &file, "SELECT MAX(version) FROM history")?;
        let changesets = count(&conn, &file, "SELECT COUNT(*) FROM history")?;
        let bytes = count(&conn, &file, "SELECT SUM(length(changeset)) FROM history")?;
        let clients = count(&conn, &file, "SELECT COUNT(*) FROM client_file")?;
        lines.push(format!(
            "{path}\t{latest}\t{changesets}\t{bytes}\t{clients}"
        ));
    }
    write_lines(out, &lines)
}

fn write_lines(out: &mut dyn Write, lines: &[String]) -> Result<(), AdminError> {
    for line in lines {
        writeln!(out, "{line}").map_err(|e| failed("writing the output", e))?;
    }
    Ok(())
}

/// `clients <PATH>`: a header, then one line per client file: its ident, the last client
/// version the server integrated from it (0: none) and when it last synced (Unix seconds, as
/// stored by the server; `-` if the server file does not record it).
fn clients(data_dir: &Path, path: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    let file = existing(data_dir, path)?;
    let conn = open(&file)?;
    let has_last_seen = conn
        .prepare("SELECT last_seen FROM client_sync LIMIT 0")
        .is_ok();
    let last_seen = if has_last_seen {
        "(SELECT CAST(last_seen AS TEXT) FROM client_sync s WHERE s.ident = c.ident)"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT c.ident,
                (SELECT MAX(client_version) FROM history WHERE origin_file_ident = c.ident),
                {last_seen}
         FROM client_file c ORDER BY c.ident"
    );
    let mut stmt = conn.prepare(&sql).map_err(|e| failed(file.display(), e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(file.display(), e))?;
    let mut lines = vec!["IDENT\tLAST_INTEGRATED_CLIENT_VERSION\tLAST_SEEN".to_owned()];
    for (ident, version, seen) in rows {
        lines.push(format!(
            "{}\t{}\t{}",
            ident as u64,
            version.unwrap_or(0) as u64,
            seen.as_deref().unwrap_or("-")
        ));
    }
    write_lines(out, &lines)
}

/// `history <PATH>`: per changeset a header line (`version`, `origin_file_ident`,
/// `client_version`, `origin_timestamp`, `bytes`), then its instructions, one per line,
/// indented by four spaces (the changeset's `Display`, this project's
/// `realm-print-changeset`).
fn history(
    data_dir: &Path,
    path: &str,
    from: Option<u64>,
    to: Option<u64>,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let file = existing(data_dir, path)?;
    let conn = open(&file)?;
    let mut stmt = conn
        .prepare(
            "SELECT version, changeset, origin_file_ident, origin_timestamp, client_version
             FROM history WHERE version >= ?1 AND version <= ?2 ORDER BY version",
        )
        .map_err(|e| failed(file.display(), e))?;
    let from = from.unwrap_or(0).min(i64::MAX as u64) as i64;
    let to = to.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64;
    let mut rows = stmt
        .query([from, to])
        .map_err(|e| failed(file.display(), e))?;
    let written = |e: std::io::Error| failed("writing the output", e);
    while let Some(row) = rows.next().map_err(|e| failed(file.display(), e))? {
        let read = |i| row.get::<_, i64>(i).map(|v| v as u64);
        let (version, origin, timestamp, client_version) =
            (|| Ok::<_, rusqlite::Error>((read(0)?, read(2)?, read(3)?, read(4)?)))()
                .map_err(|e| failed(file.display(), e))?;
        let bytes: Vec<u8> = row.get(1).map_err(|e| failed(file.display(), e))?;
        writeln!(
            out,
            "version {version} origin_file_ident {origin} client_version {client_version} \
             origin_timestamp {timestamp} bytes {}",
            bytes.len()
        )
        .map_err(written)?;
        let changeset = Changeset::decode(&bytes)
            .map_err(|e| failed(format!("{path:?} version {version}"), e))?;
        for instruction in &changeset.instructions {
            writeln!(out, "    {}", changeset.display_instruction(instruction)).map_err(written)?;
        }
    }
    Ok(())
}

/// A state as JSON: `{"schema": {table: ...}, "objects": {table: [{"key": k, "fields": {...}}]}}`
/// with every map in key order (the state's own order), so equal states print equal text.
/// JSON-native values are themselves; others are one-key objects: `{"binary": base64}`,
/// `{"timestamp": [seconds, nanoseconds]}`, `{"float": x}`, `{"double": x}` (non-finite as the
/// strings `NaN`, `inf`, `-inf`), `{"decimal128": text}`, `{"objectId": hex}`, `{"uuid": text}`,
/// `{"globalKey": [hi, lo]}`, `{"link": {"table": t, "key": k}}`; collections are
/// `[...]` (list), `{"set": [...]}`, `{"dictionary": {...}}`, embedded objects
/// `{"embedded": {fields}}`.
pub fn state_json(state: &State) -> Json {
    let mut schema = Map::new();
    for (table, spec) in &state.schemas {
        let mut columns = Map::new();
        for (name, column) in &spec.columns {
            let mut c = Map::new();
            c.insert("type".into(), json!(format!("{:?}", column.value_type)));
            c.insert("nullable".into(), json!(column.nullable));
            let collection = match column.collection {
                CollectionType::Single => "single",
                CollectionType::List => "list",
                CollectionType::Set => "set",
                CollectionType::Dictionary => "dictionary",
            };
            c.insert("collection".into(), json!(collection));
            if let Some(target) = &column.link_target {
                c.insert("link_target".into(), json!(target));
            }
            if let Some(key_type) = column.key_type {
                c.insert("key_type".into(), json!(format!("{key_type:?}")));
            }
            columns.insert(name.clone(), Json::Object(c));
        }
        let mut t = Map::new();
        match &spec.spec {
            TableSpec::Embedded => {
                t.insert("embedded".into(), json!(true));
            }
            TableSpec::TopLevel {
                pk_field,
                pk_type,
                pk_nullable,
                asymmetric,
            } => {
                t.insert("embedded".into(), json!(false));
                t.insert(
                    "primary_key".into(),
                    json!({"name": pk_field, "type": format!("{pk_type:?}"), "nullable": pk_nullable}),
                );
                t.insert("asymmetric".into(), json!(asymmetric));
            }
        }
        t.insert("columns".into(), Json::Object(columns));
        schema.insert(table.clone(), Json::Object(t));
    }
    let mut objects = Map::new();
    for (table, rows) in &state.objects {
        let list = rows
            .iter()
            .map(|(key, object)| json!({"key": key_json(key), "fields": fields_json(object)}))
            .collect();
        objects.insert(table.clone(), Json::Array(list));
    }
    json!({"schema": schema, "objects": objects})
}

fn key_json(key: &Key) -> Json {
    match key {
        Key::Null => Json::Null,
        Key::Int(v) => json!(v),
        Key::String(s) => json!(s),
        Key::GlobalKey(hi, lo) => json!({"globalKey": [hi, lo]}),
        Key::ObjectId(id) => json!({"objectId": ObjectId(*id).to_string()}),
        Key::Uuid(id) => json!({"uuid": Uuid(*id).to_string()}),
    }
}

fn float_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else if x.is_nan() {
        json!("NaN")
    } else if x > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn val_json(val: &Val) -> Json {
    use base64::Engine as _;
    match val {
        Val::Null => Json::Null,
        Val::Int(v) => json!(v),
        Val::Bool(v) => json!(v),
        Val::String(s) => json!(s),
        Val::Binary(b) => json!({"binary": base64::engine::general_purpose::STANDARD.encode(b)}),
        Val::Timestamp(s, n) => json!({"timestamp": [s, n]}),
        Val::Float(bits) => json!({"float": float_json(f64::from(f32::from_bits(*bits)))}),
        Val::Double(bits) => json!({"double": float_json(f64::from_bits(*bits))}),
        Val::Decimal(bits) => json!({"decimal128": Decimal128::from_bits(*bits).to_string()}),
        Val::ObjectId(id) => json!({"objectId": ObjectId(*id).to_string()}),
        Val::Uuid(id) => json!({"uuid": Uuid(*id).to_string()}),
        Val::Link(table, key) => json!({"link": {"table": table, "key": key_json(key)}}),
    }
}

fn element_json(element: &Element) -> Json {
    match element {
        Element::Value(v) => val_json(v),
        Element::Embedded(o) => json!({"embedded": fields_json(o)}),
    }
}

fn fields_json(object: &Object) -> Json {
    let mut fields = Map::new();
    for (name, field) in &object.fields {
        let value = match field {
            Field::Value(v) => val_json(v),
            Field::Embedded(None) => Json::Null,
            Field::Embedded(Some(o)) => json!({"embedded": fields_json(o)}),
            Field::List(items) => Json::Array(items.iter().map(element_json).collect()),
            Field::Set(items) => json!({"set": items.iter().map(val_json).collect::<Vec<_>>()}),
            Field::Dictionary(entries) => {
                let map: Map<String, Json> = entries
                    .iter()
                    .map(|(k, e)| (k.clone(), element_json(e)))
                    .collect();
                json!({ "dictionary": map })
            }
        };
        fields.insert(name.clone(), value);
    }
    Json::Object(fields)
}

/// Copies the SQLite database `from` into the new file `to` through the backup API, in one
/// step (one read transaction on `from`: a consistent snapshot that the server's writers do
/// not restart), retrying while `from` is locked. `to` must not exist.
fn copy_database(from: &Connection, to: &Path) -> Result<Connection, AdminError> {
    let mut dst = Connection::open(to).map_err(|e| failed(to.display(), e))?;
    {
        let backup = Backup::new(from, &mut dst).map_err(|e| failed(to.display(), e))?;
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match backup.step(-1).map_err(|e| failed(to.display(), e))? {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    return Err(AdminError(format!(
                        "{}: the source stayed locked",
                        to.display()
                    )))
                }
            }
        }
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| failed(to.display(), e))?;
    if check != "ok" {
        return Err(AdminError(format!(
            "{}: integrity check: {check}",
            to.display()
        )));
    }
    Ok(dst)
}

/// Removes `file` and its `-wal` and `-shm` companions, if present.
fn remove_database(file: &Path) -> Result<(), AdminError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(PathBuf::from(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(file.display(), e)),
        }
    }
    Ok(())
}

/// Copies `file` into `dest` under the same name: first as `<name>.partial`, renamed when
/// complete, so a file in `dest` with the real name is always a whole backup.
fn backup_file(file: &Path, dest: &Path) -> Result<PathBuf, AdminError> {
    let name = file
        .file_name()
        .ok_or_else(|| AdminError(format!("{}: not a file", file.display())))?;
    let target = dest.join(name);
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    remove_database(&partial)?;
    let source = open(file)?;
    let copy = copy_database(&source, &partial)?;
    // A self-contained file: no -wal beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(|e| failed(partial.display(), e))?;
    drop(copy);
    remove_database(&target)?;
    std::fs::rename(&partial, &target).map_err(|e| failed(target.display(), e))?;
    Ok(target)
}

/// `backup <PATH>|--all <DEST>`: one line per copy, `<path>\t<backup file>`.
fn backup(
    data_dir: &Path,
    path: Option<&str>,
    dest: &Path,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let sources = match path {
        Some(path) => vec![(path.to_owned(), existing(data_dir, path)?)],
        None => {
            let mut all = server_files(data_dir)?;
            let app = data_dir.join(APP_STORE);
            if app.is_file() {
                all.push(("(App Services store)".to_owned(), app));
            }
            all
        }
    };
    std::fs::create_dir_all(dest).map_err(|e| failed(dest.display(), e))?;
    let mut lines = Vec::new();
    for (path, file) in sources {
        let copy = backup_file(&file, dest)?;
        tracing::info!(path, backup = %copy.display(), "backed up");
        lines.push(format!("{path}\t{}", copy.display()));
    }
    write_lines(out, &lines)
}

/// `restore <FILE>...`: each backup replaces the server file of its path (or `app.sqlite`) in
/// `data_dir`. A restored server file gets a new history salt, so every client that synced
/// with the history that was replaced is told to reset (209 or 211, docs/protocol.md) rather
/// than continue from versions the restored history does not have or has with other contents.
fn restore(data_dir: &Path, files: &[PathBuf], out: &mut dyn Write) -> Result<(), AdminError> {
    std::fs::create_dir_all(data_dir).map_err(|e| failed(data_dir.display(), e))?;
    let mut lines = Vec::new();
    for backup in files {
        let name = backup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| AdminError(format!("{}: not a file", backup.display())))?;
        let source = open(backup)?;
        let (label, target) = if name == APP_STORE && !is_server_file(&source) {
            ("(App Services store)".to_owned(), data_dir.join(APP_STORE))
        } else {
            if !is_server_file(&source) {
                return Err(AdminError(format!(
                    "{}: not a backup of a server file",
                    backup.display()
                )));
            }
            let path = server_path(&source, &name).ok_or_else(|| {
                AdminError(format!(
                    "{}: the backup does not name its server path",
                    backup.display()
                ))
            })?;
            let target = file_path(data_dir, &path);
            (path, target)
        };
        let mut restoring = target.as_os_str().to_owned();
        restoring.push(".restoring");
        let restoring = PathBuf::from(restoring);
        remove_database(&restoring)?;
        let copy = copy_database(&source, &restoring)?;
        if label != "(App Services store)" {
            let salt = random_u64().map_err(|e| failed(backup.display(), e.message))? >> 1;
            copy.execute(
                "INSERT INTO meta (key, value) VALUES ('salt', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [salt as i64],
            )
            .and_then(|_| {
                // A legacy backup restored under the hashed name still names its path.
                copy.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    [PATH_META_KEY, label.as_str()],
                )
            })
            .map_err(|e| failed(restoring.display(), e))?;
        }
        copy.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| failed(restoring.display(), e))?;
        drop(copy);
        // The replaced file's WAL must not be replayed onto the restored one.
        remove_database(&target)?;
        std::fs::rename(&restoring, &target).map_err(|e| failed(target.display(), e))?;
        tracing::info!(path = label, backup = %backup.display(), "restored");
        lines.push(format!("{label}\t{}", target.display()));
    }
    write_lines(out, &lines)
}

/// `compact <PATH> --horizon <SECONDS>`.
fn compact(
    data_dir: &Path,
    path: &str,
    horizon: Duration,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let file = existing(data_dir, path)?;
    let now = super::unix_now();
    let mut server = ServerFile::open(&file).map_err(|e| failed(file.display(), e.message))?;
    let report = server
        .compact(now.saturating_sub(horizon.as_secs()))
        .map_err(|e| failed(file.display(), e.message))?;
    tracing::info!(path, ?report, "compacted");
    write_lines(
        out,
        &[
            format!("expired_client_files\t{}", report.expired_client_files),
            format!("compacted_through\t{}", report.compacted_through),
            format!("removed_changesets\t{}", report.removed_changesets),
            format!("history_bytes_before\t{}", report.history_bytes_before),
            format!("history_bytes_after\t{}", report.history_bytes_after),
        ],
    )
}
