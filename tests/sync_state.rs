//! STATE_REQUEST / STATE and `open_synced` against a real server: an empty file downloads the
//! server state as one snapshot in segments and is up to date when `open_synced` returns; a
//! download cut halfway resumes by offset (every snapshot byte received exactly once); then
//! normal sync goes on in both directions.
#![cfg(feature = "server")]

mod live;

use std::sync::atomic::Ordering;
use std::time::Duration;

use live::{create_task, cutting_proxy, eventually, has_task, token, World, PATH};
use tandem::client::open_synced;
use tandem::server::STATE_SEGMENT;
use tandem::store::Config;

/// Titles that do not compress much, so the snapshot spans several segments on the wire too.
fn noisy_title(i: i64) -> String {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..40)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:02x}", x as u8)
        })
        .collect()
}

fn populate(world: &World, count: i64) -> usize {
    let a = world.open("a.sqlite");
    let session = world.sync(&a);
    let mut tx = a.begin_write().unwrap();
    for i in 0..count {
        tx.create(
            "Task",
            tandem::model::PrimaryKey::Int(i),
            &[("title", tandem::model::Value::String(noisy_title(i)))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(120))))
        .unwrap();
    let state = world.server.as_ref().unwrap().state_of(PATH).unwrap();
    tandem::state::snapshot(&state).encode().len()
}

#[test]
fn open_synced_downloads_the_state_and_keeps_syncing() {
    let world = World::new("state-open");
    let snapshot_size = populate(&world, 30_000);
    assert!(
        snapshot_size > 2 * STATE_SEGMENT,
        "several segments: {snapshot_size}"
    );

    let (b, session) = world
        .block_on(open_synced(
            world.dir.join("b.sqlite"),
            live::schema(),
            Config::default(),
            world.config(token(3600)),
            Some(Duration::from_secs(120)),
        ))
        .unwrap();
    // Up to date the moment it returns: no polling.
    assert_eq!(
        b.read()
            .unwrap()
            .query("Task", "TRUEPREDICATE", &[])
            .unwrap()
            .len(),
        30_000
    );
    let p = session.progress();
    assert_eq!(
        p.download_transferred, snapshot_size as u64,
        "the snapshot, once"
    );
    assert_eq!(p.download_transferable, p.download_transferred);

    // Normal sync from there, both ways.
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    create_task(&b, 100_000, "from b");
    create_task(&a, 100_001, "from a");
    eventually("both ways", 60, || {
        has_task(&a, 100_000) && has_task(&b, 100_001)
    });
    drop((sa, session));
}

#[test]
fn a_state_download_cut_halfway_resumes_by_offset() {
    let world = World::new("state-resume");
    let snapshot_size = populate(&world, 30_000);
    // Cut the first connection after about half of the snapshot went through.
    let (port, connections) = cutting_proxy(&world, snapshot_size / 3);
    let mut config = world.config(token(3600));
    config.url = format!("wss://localhost:{port}/");
    let (b, session) = world
        .block_on(open_synced(
            world.dir.join("b.sqlite"),
            live::schema(),
            Config::default(),
            config,
            Some(Duration::from_secs(120)),
        ))
        .unwrap();
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "the first connection was cut"
    );
    assert_eq!(
        b.read()
            .unwrap()
            .query("Task", "TRUEPREDICATE", &[])
            .unwrap()
            .len(),
        30_000
    );
    let p = session.progress();
    assert_eq!(
        p.download_transferred, snapshot_size as u64,
        "resumed at the offset: no snapshot byte received twice"
    );
}

#[test]
fn open_synced_on_a_file_that_synced_before_waits_for_the_news() {
    let world = World::new("state-reopen");
    populate(&world, 10);
    let (b, session) = world
        .block_on(open_synced(
            world.dir.join("b.sqlite"),
            live::schema(),
            Config::default(),
            world.config(token(3600)),
            Some(Duration::from_secs(60)),
        ))
        .unwrap();
    drop(session);
    drop(b);
    let a = world.open("a.sqlite");
    let sa = world.sync(&a);
    create_task(&a, 500, "while b was closed");
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let (b, _session) = world
        .block_on(open_synced(
            world.dir.join("b.sqlite"),
            live::schema(),
            Config::default(),
            world.config(token(3600)),
            Some(Duration::from_secs(60)),
        ))
        .unwrap();
    assert!(has_task(&b, 500));
}
