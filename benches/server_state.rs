//! Server memory per object: one server file integrates N uploaded objects (one changeset per
//! object: CreateObject, a 24-byte string, an int), in uploads of 100 changesets, through
//! `ServerFile::integrate_upload`. Each measurement runs in its own child process so that one
//! does not inherit the other's heap; for each it prints the resident memory (RSS, from
//! `/proc/self/statm`) before and after, its growth per object, the peak (`VmHWM`), and the
//! integration time per changeset. Then the same server file builds a STATE snapshot (the peak
//! it adds is printed). The baseline, in the same run, applies the same changesets to an
//! in-memory `tandem::state::State`, which is what a server file kept before its state moved
//! to SQLite tables. The same ServerFile measurement runs again on a flexible sync file (one
//! subscription set bootstrapped first), whose state also records the version each object is
//! born at (`_flx_born`, `src/server/file/flx.rs`): the cost of that record, side by side.
//! Last, 200 server paths are open at once, to show the memory each open path costs whatever
//! its size.
//!
//! Run: `cargo bench --features server --bench server_state` (N = 100,000), or pass N:
//! `cargo bench --features server --bench server_state -- 20000`. Linux only (reads /proc).

use std::time::Instant;

use tandem::changeset::{
    AddColumn, AddTable, Changeset, ChangesetMeta, ColumnCollection, ColumnType, FieldPath,
    Instruction, Payload, PayloadType, PrimaryKey, PrimaryKeySpec, TableKind, Update,
};
use tandem::protocol::UploadEntry;
use tandem::server::ServerFile;
use tandem::state::State;

const UPLOAD: usize = 100;

fn schema() -> Changeset {
    let mut cs = Changeset::new();
    let table = cs.intern("Item");
    let pk = cs.intern("_id");
    cs.push(Instruction::AddTable(AddTable {
        table,
        kind: TableKind::TopLevel(PrimaryKeySpec {
            field: pk,
            key_type: PayloadType::Int,
            nullable: false,
        }),
    }));
    for (name, t) in [("name", PayloadType::String), ("n", PayloadType::Int)] {
        let field = cs.intern(name);
        cs.push(Instruction::AddColumn(AddColumn {
            table,
            field,
            column_type: ColumnType::Value(t),
            nullable: false,
            collection: ColumnCollection::Single,
        }));
    }
    cs
}

/// The changeset that creates object `i`.
fn object(i: u64) -> Changeset {
    let mut cs = Changeset::new();
    let table = cs.intern("Item");
    let object = PrimaryKey::Int(i as i64);
    cs.push(Instruction::CreateObject {
        table,
        object: object.clone(),
    });
    for (name, value) in [
        (
            "name",
            Payload::String(format!("item number {i:012}").into()),
        ),
        ("n", Payload::Int(i as i64 * 7)),
    ] {
        let field = cs.intern(name);
        cs.push(Instruction::Update(Update {
            path: FieldPath {
                table,
                object: object.clone(),
                field,
                path: Default::default(),
            },
            value,
            is_default: false,
            prior_size: 0,
        }));
    }
    cs
}

/// Changeset `version` of the uploading client (1: the schema, then one per object), made
/// after it downloaded server version `base` (everything before its upload, as a client that
/// alone writes a path has).
fn changeset(version: u64, base: u64) -> Changeset {
    let mut cs = if version == 1 {
        schema()
    } else {
        object(version - 1)
    };
    cs.meta = ChangesetMeta {
        version,
        last_integrated_remote_version: base,
        origin_timestamp: version,
        origin_file_ident: 0,
    };
    cs
}

/// Resident memory in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Peak resident memory in bytes (`VmHWM`).
fn peak() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn report(what: &str, objects: u64, before: u64, after: u64, seconds: f64) {
    println!(
        "  {what:<34} {:>11} {:>11} {:>9} B/object {:>11} peak {:>8.1} us/changeset",
        mib(before),
        mib(after),
        (after.saturating_sub(before)) / objects.max(1),
        mib(peak()),
        seconds * 1e6 / (objects + 1) as f64
    );
}

/// Integrates the objects into a server file in a temporary directory.
fn server_file(objects: u64, flexible: bool) {
    let dir = tempfile::Builder::new()
        .prefix("tandem-state-bench-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("server.sqlite");
    let before = rss();
    let mut server = ServerFile::open(&path).unwrap();
    let (client, _) = server.allocate_client_file().unwrap();
    if flexible {
        // A flexible sync subscription set (empty, on the empty file): from then on the state
        // records the version each object is born at, which flexible sync downloads use.
        let set = tandem::server::Subscription::parse(1, "{}").unwrap();
        assert!(server.flx_bootstrap(client, &set).unwrap().is_none());
    }
    let start = Instant::now();
    let mut version = 1;
    while version <= objects + 1 {
        let last = (version + UPLOAD as u64 - 1).min(objects + 1);
        let base = server.latest_version();
        let entries: Vec<UploadEntry> = (version..=last)
            .map(|v| UploadEntry::from_changeset(&changeset(v, base)))
            .collect();
        server.integrate_upload(client, &entries).unwrap();
        version = last + 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(server.latest_version(), objects + 1);
    report(
        if flexible {
            "ServerFile, flexible sync file"
        } else {
            "ServerFile (state in SQLite)"
        },
        objects,
        before,
        rss(),
        seconds,
    );
    let before_snapshot = rss();
    let start = Instant::now();
    let (_, bytes) = server.snapshot(0).unwrap();
    println!(
        "  {:<34} {:>11} {:>11} snapshot of {} built in {:.2} s, peak {}",
        "  then a STATE snapshot",
        mib(before_snapshot),
        mib(rss()),
        mib(bytes.len() as u64),
        start.elapsed().as_secs_f64(),
        mib(peak())
    );
    drop(server);
}

/// Memory per open server path: `paths` server files of 100 objects each are created and
/// closed, then all opened at once and given one more upload each.
fn open_paths(paths: u64) {
    let tmp = tempfile::Builder::new()
        .prefix("tandem-state-paths-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let upload = |server: &mut ServerFile, client: u64, from: u64, to: u64| {
        let base = server.latest_version();
        let entries: Vec<UploadEntry> = (from..=to)
            .map(|v| UploadEntry::from_changeset(&changeset(v, base)))
            .collect();
        server.integrate_upload(client, &entries).unwrap();
    };
    let mut clients = Vec::new();
    for p in 0..paths {
        let mut server = ServerFile::open(dir.join(format!("{p}.sqlite"))).unwrap();
        let (client, _) = server.allocate_client_file().unwrap();
        upload(&mut server, client, 1, 101);
        clients.push(client);
    }
    let before = rss();
    let mut open = Vec::new();
    for (p, client) in clients.iter().enumerate() {
        let mut server = ServerFile::open(dir.join(format!("{p}.sqlite"))).unwrap();
        upload(&mut server, *client, 102, 102);
        open.push(server);
    }
    let after = rss();
    println!(
        "  {paths} open server paths of 100 objects: RSS {} -> {}, {:.1} KiB per open path",
        mib(before),
        mib(after),
        after.saturating_sub(before) as f64 / paths as f64 / 1024.0
    );
    drop(open);
}

/// The baseline: the same changesets applied to an in-memory `State`.
fn in_memory(objects: u64) {
    let before = rss();
    let mut state = State::new();
    let start = Instant::now();
    for version in 1..=objects + 1 {
        state.apply(&changeset(version, 0)).unwrap();
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(state.object_count() as u64, objects);
    report(
        "in-memory State (baseline)",
        objects,
        before,
        rss(),
        seconds,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let objects: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    match args
        .iter()
        .find(|a| a.starts_with("--child="))
        .map(String::as_str)
    {
        Some("--child=server") => return server_file(objects, false),
        Some("--child=server-flx") => return server_file(objects, true),
        Some("--child=state") => return in_memory(objects),
        Some("--child=paths") => return open_paths(200),
        _ => {}
    }
    println!("{objects} objects, one changeset each, uploads of {UPLOAD}:");
    println!(
        "  {:<34} {:>11} {:>11} {:>18} {:>16} {:>21}",
        "", "RSS before", "RSS after", "growth", "peak RSS", "time"
    );
    let exe = std::env::current_exe().unwrap();
    for child in [
        "--child=state",
        "--child=server",
        "--child=server-flx",
        "--child=paths",
    ] {
        let status = std::process::Command::new(&exe)
            .arg(child)
            .arg(objects.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "{child} failed");
    }
}
