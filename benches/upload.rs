//! Server-side cost of one UPLOAD against a long history (issue 13, item 6): a `ServerFile`
//! holds N changesets of one client; another client uploads one small changeset based on
//! server version 0 (merged against all N), and one based on N - 10 (merged against 10, what an
//! up-to-date client costs). Each is timed with the merge window unbounded (the behaviour
//! before `--max-merge-window`) and with the default bound of 10,000, where an upload based
//! further back is refused with 222 before any merging. Every upload is integrated into its
//! own copy of the server file, so each row starts from the same history.
//!
//! The last column is a client back from an offline period: one UPLOAD of 1,000 changesets
//! (a Set each, of the objects the other client sets), all based on server version 0, merged
//! against the N changesets of the other client (window unbounded).
//!
//! Run: `cargo bench --features server --bench upload` (N = 1,000, 5,000 and 15,000), or pass
//! sizes: `cargo bench --features server --bench upload -- 2000 20000`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tandem::changeset::*;
use tandem::protocol::UploadEntry;
use tandem::server::{ServerFile, DEFAULT_MAX_MERGE_WINDOW};

/// A Set of object `pk`'s field `n` to `value`.
fn set(cs: &mut Changeset, pk: i64, value: i64) {
    let path = FieldPath {
        table: cs.intern("Item"),
        object: PrimaryKey::Int(pk),
        field: cs.intern("n"),
        path: Default::default(),
    };
    cs.push(Instruction::Update(Update {
        path,
        value: Payload::Int(value),
        is_default: false,
        prior_size: 0,
    }));
}

/// `n` changesets of `client`: the schema and 100 objects first, then a Set of one of the 100
/// objects each, uploaded 1,000 per UPLOAD, each based on the one before (no merging).
fn history(server: &mut ServerFile, client: u64, n: u64) {
    let mut entries = Vec::new();
    for v in 1..=n {
        let mut cs = Changeset::new();
        if v == 1 {
            let table = cs.intern("Item");
            let pk = cs.intern("_id");
            let field = cs.intern("n");
            cs.push(Instruction::AddTable(AddTable {
                table,
                kind: TableKind::TopLevel(PrimaryKeySpec {
                    field: pk,
                    key_type: PayloadType::Int,
                    nullable: false,
                }),
            }));
            cs.push(Instruction::AddColumn(AddColumn {
                table,
                field,
                column_type: ColumnType::Value(PayloadType::Int),
                nullable: false,
                collection: ColumnCollection::Single,
            }));
            for pk in 0..100 {
                cs.push(Instruction::CreateObject {
                    table,
                    object: PrimaryKey::Int(pk),
                });
            }
        }
        set(&mut cs, (v % 100) as i64, v as i64);
        cs.meta = ChangesetMeta {
            version: v,
            last_integrated_remote_version: v - 1,
            origin_timestamp: v,
            origin_file_ident: client,
        };
        entries.push(UploadEntry::from_changeset(&cs));
        if entries.len() == 1000 || v == n {
            server.integrate_upload(client, &entries).unwrap();
            entries.clear();
        }
    }
}

/// One Set on object 7, based on `base`.
fn one_set(client: u64, base: u64) -> UploadEntry {
    offline_set(client, base, 1, 7)
}

/// The `version`-th changeset of `client`, based on `base`: a Set on object `pk`.
fn offline_set(client: u64, base: u64, version: u64, pk: i64) -> UploadEntry {
    let mut cs = Changeset::new();
    set(&mut cs, pk, -(version as i64));
    cs.meta = ChangesetMeta {
        version,
        last_integrated_remote_version: base,
        origin_timestamp: version,
        origin_file_ident: client,
    };
    UploadEntry::from_changeset(&cs)
}

fn copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).unwrap();
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 5_000, 15_000]
    } else {
        sizes
    };
    let tmp = tempfile::Builder::new()
        .prefix("tandem-upload-")
        .tempdir()
        .unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    println!("one UPLOAD of one Set against N changesets of another client (ms, one run each):");
    println!(
        "  {:>7} {:>22} {:>22} {:>22} {:>22}",
        "N", "base 0, unbounded", "base 0, window 10000", "base N-10", "1,000 on base 0"
    );
    for n in sizes {
        let template = dir.join(format!("template-{n}.sqlite"));
        let uploader = {
            let mut server = ServerFile::open(&template).unwrap();
            let (writer, _) = server.allocate_client_file().unwrap();
            let (uploader, _) = server.allocate_client_file().unwrap();
            history(&mut server, writer, n);
            // Checkpoint the WAL so the copies below are complete.
            drop(server);
            uploader
        };
        let run_entries = |name: &str, window: u64, entries: &[UploadEntry]| -> String {
            let path = dir.join(format!("{name}-{n}.sqlite"));
            copy(&template, &path);
            let mut server = ServerFile::open(&path).unwrap();
            server.set_max_merge_window(window);
            let started = Instant::now();
            let result = server.integrate_upload(uploader, entries);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match result {
                Ok(_) => format!("{ms:.1}"),
                Err(e) => format!("{ms:.1} ({})", e.code.code()),
            }
        };
        let run = |name: &str, window: u64, base: u64| {
            run_entries(name, window, &[one_set(uploader, base)])
        };
        let unbounded = run("unbounded", u64::MAX, 0);
        let bounded = run("bounded", DEFAULT_MAX_MERGE_WINDOW, 0);
        let recent = run("recent", DEFAULT_MAX_MERGE_WINDOW, n.saturating_sub(10));
        let backlog: Vec<UploadEntry> = (1..=1_000)
            .map(|v| offline_set(uploader, 0, v, (v % 100) as i64))
            .collect();
        let offline = run_entries("offline", u64::MAX, &backlog);
        println!("  {n:>7} {unbounded:>22} {bounded:>22} {recent:>22} {offline:>22}");
    }
}
