//! The sync client never raises SIGPIPE in its host process. Rust programs ignore SIGPIPE, but
//! a Swift app or a C program does not: a `writev` to a connection the server had just reset
//! killed the Swift test process (found by the Swift binding's suite). This test binary puts
//! SIGPIPE back to its default action (terminate), then stops the server while sessions are
//! uploading over TLS, so that the client's next writes meet a reset connection; a SIGPIPE
//! would kill the binary and fail the test.
#![cfg(feature = "server")]

mod live;

use std::time::Duration;

use live::World;

/// Commits 10 transactions of 500 tasks with 2 KiB titles: about 10 MiB to upload, so that
/// the session is writing when the server goes away.
fn a_large_upload(db: &tandem::store::Database) {
    let title = "t".repeat(2048);
    for t in 0..10 {
        let mut tx = db.begin_write().unwrap();
        for i in 0..500 {
            tx.create(
                "Task",
                tandem::model::PrimaryKey::Int(t * 500 + i),
                &[("title", tandem::model::Value::String(title.clone()))],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

#[test]
fn sessions_writing_to_a_server_that_goes_away_raise_no_sigpipe() {
    // SAFETY: setting a signal's disposition to its default is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    for round in 0..12u64 {
        let mut world = World::new(&format!("sigpipe-{round}"));
        let db = world.open("a.sqlite");
        a_large_upload(&db);
        let session = world.sync(&db);
        std::thread::sleep(Duration::from_millis(20 + round % 4 * 10));
        // The server drops its sockets with unread upload data in them (a reset): the
        // session's next writes fail with EPIPE.
        world.stop_server();
        std::thread::sleep(Duration::from_millis(30));
        session.stop();
    }
}
