//! The server file's durability and cost (issue 13, items 5 and 6; idle server files; history
//! compaction):
//!
//! - a full disk (a small tmpfs) is a transient error: the client gets 201 with `try_again`,
//!   keeps retrying with its backoff, and once space is freed its retry succeeds; every
//!   acknowledged write is there exactly once, and the disk holds what memory holds;
//! - an upload based on a server version older than the client file's last one is 209, one
//!   that would be merged against more than `--max-merge-window` changesets is 222, and
//!   neither changes anything;
//! - a server file no session uses is closed after `--file-idle-close` and reopens intact;
//! - compaction expires client files not seen since the horizon (222, the client resets and
//!   converges), a fresh client after compaction gets exactly the state, and nothing
//!   acknowledged is lost.
#![cfg(feature = "server")]

mod harness;
mod live;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::{generate, SeededRng};
use live::{create_task, eventually, has_task, World, PATH};
use tandem::changeset::ChangesetMeta;
use tandem::client::SyncState;
use tandem::model::{PrimaryKey, Value};
use tandem::protocol::{ErrorCode, UploadEntry};
use tandem::server::ServerFile;
use tandem::state::State;

/// A tmpfs mounted on a directory for the life of the value (unmounted lazily on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m") on `dir`. If that is not permitted the test fails,
    /// unless `TANDEM_SKIP_TMPFS=1`, which skips it with a loud message.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        if std::env::var("TANDEM_SKIP_TMPFS").as_deref() == Ok("1") {
            eprintln!(
                "\n!!!!! SKIPPED: cannot mount a tmpfs on {} ({why}); TANDEM_SKIP_TMPFS=1 is \
                 set, so the full-disk test did NOT run !!!!!\n",
                dir.display()
            );
            return None;
        }
        panic!(
            "cannot mount a tmpfs on {} ({why}): the full-disk test needs `mount -t tmpfs` \
             (root); set TANDEM_SKIP_TMPFS=1 to skip it",
            dir.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [256 << 10, 4 << 10, 512] {
        let zeros = vec![0u8; chunk];
        while f.write_all(&zeros).and_then(|()| f.flush()).is_ok() {}
    }
    let _ = f.sync_all();
}

/// The server file of the data directory (there is one path).
fn server_file(data: &Path) -> PathBuf {
    std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "sqlite")
                && p.file_name().is_some_and(|n| n != "app.sqlite")
        })
        .expect("a server file")
}

fn count_of(state: &State, id: i64) -> Option<i64> {
    let object = state
        .objects
        .get("Task")?
        .get(&tandem::state::Key::Int(id))?;
    match object.fields.get("count") {
        Some(tandem::state::Field::Value(tandem::state::Val::Int(n))) => Some(*n),
        _ => None,
    }
}

#[test]
fn a_full_disk_is_transient_and_the_server_recovers_by_itself() {
    let mut world = World::new("disk-full");
    world.stop_server();
    let data = world.dir.join("server");
    let _ = std::fs::remove_dir_all(&data);
    let Some(_tmpfs) = Tmpfs::mount(&data, "8m") else {
        return;
    };
    world.storage.disk_reserve = 1 << 20;
    world.start_server();
    let reserve = data.join(tandem::server::disk::RESERVE_FILE);
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);

    let db = world.open("a.sqlite");
    let (session, events) = world.sync_recording(&db);
    let mut tx = db.begin_write().unwrap();
    tx.create("Task", PrimaryKey::Int(0), &[("count", Value::Int(0))])
        .unwrap();
    tx.commit().unwrap();
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(30))))
        .unwrap();

    fill(&data.join("filler"));
    // Each write: a new task with 32 KiB of title and one increment of task 0's counter, so
    // that an increment integrated twice would show.
    let title = "x".repeat(32 << 10);
    let mut written = 0i64;
    let refused = loop {
        written += 1;
        assert!(
            written <= 200,
            "200 writes of 32 KiB fitted in a full 8 MiB tmpfs"
        );
        let mut tx = db.begin_write().unwrap();
        tx.create(
            "Task",
            PrimaryKey::Int(written),
            &[("title", Value::String(title.clone()))],
        )
        .unwrap();
        tx.add("Task", &PrimaryKey::Int(0), "count", 1).unwrap();
        tx.commit().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            if let Some(e) = live::errors(&events).into_iter().find(|e| e.code == 201) {
                break Some(e);
            }
            if db.pending_uploads(1 << 20).unwrap().is_empty() {
                break None;
            }
            assert!(Instant::now() < deadline, "no acknowledgement and no error");
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(e) = refused {
            break e;
        }
    };
    assert!(refused.will_retry, "{refused:?}");
    assert!(refused.message.contains("storage fault"), "{refused:?}");
    assert!(!matches!(session.state(), SyncState::Error(_)));
    let server = world.server.as_ref().unwrap();
    let faults = server
        .metrics()
        .storage_faults
        .get_or_create(&vec![("kind", "disk_full".to_owned())])
        .get();
    assert!(faults >= 1, "storage_faults{{kind=disk_full}} = {faults}");
    assert!(!reserve.exists(), "the reserve is released on a full disk");

    // Space comes back; the client's own retry (with backoff) gets everything in.
    std::fs::remove_file(data.join("filler")).unwrap();
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    assert!(!matches!(session.state(), SyncState::Error(_)));
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1 << 20);

    let state = server.state_of(PATH).unwrap();
    assert_eq!(
        count_of(&state, 0),
        Some(written),
        "each increment exactly once"
    );
    for id in 1..=written {
        assert!(state.objects["Task"].contains_key(&tandem::state::Key::Int(id)));
    }
    assert_eq!(state.objects["Task"].len() as i64, written + 1);
    // The disk holds what memory holds.
    let on_disk = ServerFile::open(server_file(&data)).unwrap();
    assert_eq!(on_disk.state().unwrap(), state);
    drop(session);
}

/// A client of a `ServerFile` in these tests: its own state, and changesets based on what it
/// downloaded (it downloads before it writes, so nothing it uploads is concurrent with what it
/// saw).
struct Peer {
    ident: u64,
    salt: u64,
    state: State,
    version: u64,
    cursor: u64,
}

impl Peer {
    fn new(server: &mut ServerFile) -> Peer {
        let (ident, salt) = server.allocate_client_file().unwrap();
        Peer {
            ident,
            salt,
            state: State::new(),
            version: 0,
            cursor: 0,
        }
    }

    /// A new local changeset based on `base`, applied locally.
    fn write(&mut self, rng: &mut SeededRng, base: u64) -> UploadEntry {
        let mut cs = loop {
            let cs = generate(&self.state, rng);
            if !cs.is_empty() {
                break cs;
            }
        };
        self.version += 1;
        cs.meta = ChangesetMeta {
            version: self.version,
            last_integrated_remote_version: base,
            origin_timestamp: self.version,
            origin_file_ident: self.ident,
        };
        self.state.apply(&cs).unwrap();
        UploadEntry::from_changeset(&cs)
    }

    /// Downloads and applies everything new.
    fn download(&mut self, server: &ServerFile) -> Result<(), tandem::protocol::ProtocolError> {
        loop {
            let batch = server.download(self.ident, self.cursor, 1 << 16)?;
            for entry in &batch.entries {
                self.state.apply(&entry.to_changeset().unwrap()).unwrap();
            }
            let done = batch.download_server_version == self.cursor;
            self.cursor = batch.download_server_version;
            if done || batch.download_server_version == batch.latest_server_version {
                return Ok(());
            }
        }
    }

    /// Downloads, writes one changeset and uploads it.
    fn step(&mut self, server: &mut ServerFile, rng: &mut SeededRng) {
        self.download(server).unwrap();
        let entry = self.write(rng, self.cursor);
        server.integrate_upload(self.ident, &[entry]).unwrap();
    }
}

/// A scratch directory (removed when the returned guard is dropped) and a path in it.
fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tandem-storage-{name}-"))
        .tempdir()
        .unwrap();
    let path = dir.path().join("server.sqlite");
    (dir, path)
}

#[test]
fn an_upload_base_going_backwards_is_209_and_changes_nothing() {
    let (_dir, path) = temp("backwards");
    let mut server = ServerFile::open(&path).unwrap();
    let mut rng = SeededRng::new(7);
    let mut a = Peer::new(&mut server);
    let mut b = Peer::new(&mut server);
    for _ in 0..3 {
        b.step(&mut server, &mut rng);
    }
    a.step(&mut server, &mut rng); // based on 3
    assert_eq!(server.latest_version(), 4);
    // Based on 1 after one based on 3: realm-core's upload threshold (209).
    let back = a.write(&mut rng, 1);
    let e = server.integrate_upload(a.ident, &[back]).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadServerVersion, "{e}");
    assert_eq!(server.latest_version(), 4);
    // The same within one upload: the second entry goes back.
    let mut c = Peer::new(&mut server);
    c.download(&server).unwrap();
    let first = c.write(&mut rng, 4);
    let second = c.write(&mut rng, 2);
    let e = server
        .integrate_upload(c.ident, &[first, second])
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadServerVersion, "{e}");
    assert_eq!(server.latest_version(), 4, "nothing of the refused upload");
    // Equal or later bases are fine, and the threshold survives a restart.
    drop(server);
    let mut server = ServerFile::open(&path).unwrap();
    let same = a.write(&mut rng, 3);
    assert!(server.integrate_upload(a.ident, &[same]).is_ok());
    let back = a.write(&mut rng, 2);
    assert_eq!(
        server.integrate_upload(a.ident, &[back]).unwrap_err().code,
        ErrorCode::BadServerVersion
    );
}

#[test]
fn an_upload_beyond_the_merge_window_is_222_and_changes_nothing() {
    let (_dir, path) = temp("window");
    let mut server = ServerFile::open(&path).unwrap();
    server.set_max_merge_window(3);
    let mut rng = SeededRng::new(11);
    let mut a = Peer::new(&mut server);
    let mut b = Peer::new(&mut server);
    for _ in 0..5 {
        b.step(&mut server, &mut rng);
    }
    // Based on 0: five changesets of another client to merge against, over 3.
    let far = a.write(&mut rng, 0);
    let e = server
        .integrate_upload(a.ident, std::slice::from_ref(&far))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ClientFileExpired, "{e}");
    assert!(e.message.contains("at most 3"), "{e}");
    assert_eq!(server.latest_version(), 5);
    // Based on 2: exactly three, accepted.
    let mut near = far;
    near.last_integrated_server_version = 2;
    let done = server.integrate_upload(a.ident, &[near]).unwrap();
    assert_eq!(done.versions, vec![6]);
    // Its own changesets do not count: b (up to date but for a's) merges against one.
    b.step(&mut server, &mut rng);
    assert_eq!(server.latest_version(), 7);
}

/// A client that uploads many changesets on one old base (it commits faster than its
/// acknowledgements return, or comes back from offline) is merged against the other clients'
/// changesets after that base, all of them and only them, however many of its own lie between:
/// the window counts exactly those, across uploads, and the merged history replays to the state
/// a fresh client downloads. (The server finds them in the gaps between the client's own rows,
/// once per upload: `ServerFile::others_after`.)
#[test]
fn many_changesets_on_one_old_base_merge_with_exactly_the_other_clients_changesets() {
    let (_dir, path) = temp("oldbase");
    let mut server = ServerFile::open(&path).unwrap();
    server.set_max_merge_window(3);
    let mut rng = SeededRng::new(29);
    let mut a = Peer::new(&mut server);
    let mut b = Peer::new(&mut server);
    b.step(&mut server, &mut rng);
    b.step(&mut server, &mut rng);
    // Ten on base 0 in one upload: b's two are the window.
    let ten: Vec<_> = (0..10).map(|_| a.write(&mut rng, 0)).collect();
    let done = server.integrate_upload(a.ident, &ten).unwrap();
    assert_eq!(done.versions, (3..=12).collect::<Vec<u64>>());
    // b writes again after a's ten; five more of a's on base 0: b's three, within the window.
    b.step(&mut server, &mut rng);
    assert_eq!(server.latest_version(), 13);
    let five: Vec<_> = (0..5).map(|_| a.write(&mut rng, 0)).collect();
    let done = server.integrate_upload(a.ident, &five).unwrap();
    assert_eq!(done.versions, (14..=18).collect::<Vec<u64>>());
    // One more of b's makes four after base 0: refused whole, nothing changes.
    b.step(&mut server, &mut rng);
    assert_eq!(server.latest_version(), 19);
    let before = server.state().unwrap();
    let over: Vec<_> = (0..3).map(|_| a.write(&mut rng, 0)).collect();
    let e = server.integrate_upload(a.ident, &over).unwrap_err();
    assert_eq!(e.code, ErrorCode::ClientFileExpired, "{e}");
    assert!(e.message.contains("4 changesets of other clients"), "{e}");
    assert_eq!(server.latest_version(), 19);
    assert_eq!(server.state().unwrap(), before);
    // Based on 2, the same three see b's two after it (13 and 19) and go in.
    let rebased: Vec<_> = over
        .into_iter()
        .map(|mut e| {
            e.last_integrated_server_version = 2;
            e
        })
        .collect();
    let done = server.integrate_upload(a.ident, &rebased).unwrap();
    assert_eq!(done.versions, vec![20, 21, 22]);
    assert_eq!(server.replay().unwrap(), server.state().unwrap());
    let mut fresh = Peer::new(&mut server);
    fresh.download(&server).unwrap();
    assert_eq!(fresh.state, server.state().unwrap());
}

#[test]
fn compaction_keeps_the_state_for_fresh_clients_and_expires_old_cursors() {
    let (_dir, path) = temp("compact");
    let mut server = ServerFile::open(&path).unwrap();
    let mut rng = SeededRng::new(23);
    let mut peers: Vec<Peer> = (0..3).map(|_| Peer::new(&mut server)).collect();
    for round in 0..30 {
        let i = round % 3;
        peers[i].step(&mut server, &mut rng);
    }
    let latest = server.latest_version();
    let before = server.state().unwrap();

    // Nobody is older than the horizon: nothing expires; the point is the oldest base a live
    // client file may still upload from.
    let report = server.compact(0).unwrap();
    assert_eq!(report.expired_client_files, 0);
    assert!(report.compacted_through > 2, "{report:?}");
    assert!(report.removed_changesets > 0, "{report:?}");
    assert_eq!(server.latest_version(), latest);
    assert_eq!(server.state().unwrap(), before);
    assert_eq!(server.history_len(), latest - report.compacted_through + 1);
    // A fresh client downloading from 0 gets exactly the state.
    let mut fresh = Peer::new(&mut server);
    fresh.download(&server).unwrap();
    assert_eq!(fresh.state, before);
    // A cursor inside the compacted history cannot be continued: 222 (a client file whose
    // download cursor was 2, say restored from a backup of its device).
    let stale = Peer::new(&mut server);
    let e = server
        .check_ident(stale.ident, stale.salt, Some(2))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ClientFileExpired);
    assert_eq!(
        server.download(stale.ident, 2, 1 << 16).unwrap_err().code,
        ErrorCode::ClientFileExpired
    );
    // Live clients go on: their acknowledgements and cursors are intact, and they converge.
    for p in &peers {
        server.check_ident(p.ident, p.salt, Some(p.cursor)).unwrap();
        assert_eq!(server.client_version(p.ident, p.salt).unwrap(), p.version);
    }
    for round in 0..9 {
        peers[round % 3].step(&mut server, &mut rng);
    }
    for p in peers.iter_mut() {
        p.download(&server).unwrap();
        assert_eq!(p.state, server.state().unwrap());
    }
    // The compacted file reopens to the same state, and compacts again.
    let reopened = ServerFile::open(&path).unwrap();
    assert_eq!(reopened.state().unwrap(), server.state().unwrap());
    drop(reopened);
    // Everybody last seen before the horizon: expired (222 on IDENT and UPLOAD).
    let report = server.compact(u64::MAX).unwrap();
    assert_eq!(
        report.expired_client_files, 5,
        "three peers, stale and fresh"
    );
    assert_eq!(report.compacted_through, server.latest_version());
    let p = &mut peers[0];
    assert_eq!(
        server
            .check_ident(p.ident, p.salt, Some(p.cursor))
            .unwrap_err()
            .code,
        ErrorCode::ClientFileExpired
    );
    let entry = p.write(&mut rng, p.cursor);
    assert_eq!(
        server.integrate_upload(p.ident, &[entry]).unwrap_err().code,
        ErrorCode::ClientFileExpired
    );
    let mut fresh = Peer::new(&mut server);
    fresh.download(&server).unwrap();
    assert_eq!(fresh.state, server.state().unwrap());
}

#[test]
fn an_expired_client_resets_and_converges_and_a_fresh_one_gets_the_same_state() {
    let world = World::new("expire");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    for id in 1..=3 {
        create_task(&a, id, "from a");
    }
    for id in 4..=5 {
        create_task(&b, id, "from b");
    }
    for s in [&sa, &sb] {
        world
            .block_on(s.wait_for_upload(Some(Duration::from_secs(30))))
            .unwrap();
    }
    eventually("b has a's tasks", 30, || (1..=5).all(|id| has_task(&b, id)));
    eventually("a has b's tasks", 30, || (1..=5).all(|id| has_task(&a, id)));
    // a goes away; b keeps syncing after a's last sync (whole seconds apart).
    sa.stop();
    drop(sa);
    std::thread::sleep(Duration::from_millis(1100));
    create_task(&b, 6, "from b, later");
    world
        .block_on(sb.wait_for_upload(Some(Duration::from_secs(30))))
        .unwrap();
    let horizon = live::now();
    let server = world.server.as_ref().unwrap();
    let reports = server.compact(horizon);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (path, report) = &reports[0];
    assert_eq!(path, PATH);
    let report = report.as_ref().unwrap();
    assert_eq!(report.expired_client_files, 1, "{report:?}");
    assert!(report.removed_changesets > 0, "{report:?}");
    let expected = server.state_of(PATH).unwrap();

    // a wrote offline; it comes back, gets 222, resets (recovering its write) and converges.
    create_task(&a, 7, "from a, offline");
    // Recorded from the session's first event: the 222 comes on its first connection.
    let (sa, events) = world.sync_recording(&a);
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    live::wait_for_error(&events, 10, |e| e.code == 222);
    eventually("b gets a's recovered task", 30, || has_task(&b, 7));
    eventually("a and b converge", 30, || {
        a.export_state().unwrap().objects == b.export_state().unwrap().objects
    });
    for id in 1..=7 {
        assert!(has_task(&a, id), "task {id}");
    }
    // A fresh client gets the same state as those that synced before.
    let c = world.open("c.sqlite");
    let sc = world.sync(&c);
    world
        .block_on(sc.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap();
    eventually("c converges", 30, || {
        c.export_state().unwrap().objects == b.export_state().unwrap().objects
    });
    let objects = expected.objects["Task"].len();
    assert_eq!(
        objects, 6,
        "the compacted state had every acknowledged task"
    );
}

#[test]
fn idle_server_files_are_closed_and_reopen_intact() {
    let mut world = World::new("idle-close");
    world.stop_server();
    world.storage.file_idle_close = Duration::from_secs(1);
    world.start_server();
    let db = world.open("a.sqlite");
    let session = world.sync(&db);
    create_task(&db, 1, "one");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(30))))
        .unwrap();
    let server = world.server.as_ref().unwrap();
    assert_eq!(server.metrics().server_files_open.get(), 1);
    let changesets = server.metrics().history_changesets.get();
    assert!(changesets >= 1);
    // Bound: never closed, however long.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(server.state_of(PATH).is_some());
    session.stop();
    drop(session);
    eventually("the idle file is closed", 20, || {
        server.state_of(PATH).is_none()
    });
    assert_eq!(server.metrics().server_files_open.get(), 0);
    assert_eq!(server.metrics().history_changesets.get(), 0);
    let session = world.sync(&db);
    create_task(&db, 2, "two");
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(30))))
        .unwrap();
    let state = server.state_of(PATH).unwrap();
    assert_eq!(state.objects["Task"].len(), 2);
    assert_eq!(server.metrics().server_files_open.get(), 1);
    assert!(server.metrics().history_changesets.get() > changesets);
}
