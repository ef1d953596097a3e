//! MARK-based waits against a real server: `wait_for_upload` and `wait_for_download` complete
//! exactly when what they promise is true, time out cleanly while the server is away, work from
//! an executor that is not tokio, and end with `Stopped` when the session does.
#![cfg(feature = "server")]

mod live;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use live::{create_task, has_task, World};
use tandem::client::SyncError;
use tandem::model::PrimaryKey;
use tandem::state::Key;

/// Polls a future on this thread with a waker that unparks it: no tokio anywhere.
fn block_on_plain<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn wait_for_upload_means_the_server_has_it() {
    let world = World::new("mark-upload");
    let a = world.open("a.sqlite");
    let session = world.sync(&a);
    for id in 0..50 {
        create_task(&a, id, "uploaded");
    }
    block_on_plain(session.wait_for_upload(Some(Duration::from_secs(60)))).unwrap();
    // No polling: the wait's completion is the guarantee.
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    for id in 0..50 {
        assert!(state.object("Task", &Key::Int(id)).is_some(), "task {id}");
    }
    // Nothing new: completes at once.
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(5))))
        .unwrap();
}

#[test]
fn wait_for_download_means_it_is_integrated_locally() {
    let world = World::new("mark-download");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let sa = world.sync(&a);
    let sb = world.sync(&b);
    for id in 0..30 {
        create_task(&a, id, "from a");
    }
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    for id in 0..30 {
        assert!(
            has_task(&b, id),
            "task {id} integrated when the wait completed"
        );
    }
}

#[test]
fn waits_time_out_while_the_server_is_away_and_complete_after() {
    let mut world = World::new("mark-timeout");
    let a = world.open("a.sqlite");
    let session = world.sync(&a);
    world
        .block_on(session.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    world.stop_server();
    create_task(&a, 1, "offline");
    let err = world
        .block_on(session.wait_for_upload(Some(Duration::from_millis(300))))
        .unwrap_err();
    assert!(matches!(err, SyncError::Timeout { .. }), "{err:?}");
    let err = world
        .block_on(session.wait_for_download(Some(Duration::from_millis(300))))
        .unwrap_err();
    assert!(matches!(err, SyncError::Timeout { .. }), "{err:?}");
    world.start_server();
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    world
        .block_on(session.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    let state = world.server.as_ref().unwrap().state_of(live::PATH).unwrap();
    assert!(state.object("Task", &Key::Int(1)).is_some());
    assert!(a
        .read()
        .unwrap()
        .object("Task", &PrimaryKey::Int(1))
        .unwrap()
        .is_some());
}

#[test]
fn waits_on_a_stopped_session_say_so() {
    let mut world = World::new("mark-stopped");
    world.stop_server();
    let a = world.open("a.sqlite");
    let session = world.sync(&a);
    create_task(&a, 1, "never uploaded");
    session.stop();
    let err = world
        .block_on(session.wait_for_download(Some(Duration::from_secs(30))))
        .unwrap_err();
    assert!(matches!(err, SyncError::Stopped { .. }), "{err:?}");
    let err = world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(30))))
        .unwrap_err();
    assert!(matches!(err, SyncError::Stopped { .. }), "{err:?}");
}
