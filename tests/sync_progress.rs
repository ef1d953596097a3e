//! Progress and state events against a real server: upload and download figures add up to the
//! changeset bytes actually sent, the connection state is reported through a server restart,
//! and a listener that panics does not stop the others.
#![cfg(feature = "server")]

mod live;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::{create_task, errors, eventually, World};
use tandem::client::{Event, Progress, SyncState};

/// The progress events among `events`, in the order they were delivered.
fn progress_events(events: &live::Events) -> Vec<Progress> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(*p),
            _ => None,
        })
        .collect()
}

#[test]
fn progress_adds_up_to_the_bytes_sent() {
    let world = World::new("progress");
    let a = world.open("a.sqlite");
    // Every progress event from the session's first, so that the checks below see them all.
    let (sa, events) = world.sync_recording(&a);
    for id in 0..100 {
        create_task(&a, id, &"x".repeat(id as usize));
    }
    world
        .block_on(sa.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    let uploaded: u64 = a
        .history()
        .unwrap()
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| c.encode().len() as u64)
        .sum();
    let p = sa.progress();
    assert_eq!(
        p.upload_transferred, uploaded,
        "every local changeset byte, once"
    );
    assert_eq!(p.upload_transferable, uploaded);

    // A fresh client downloads exactly what A uploaded (nothing was concurrent with it).
    let b = world.open("b.sqlite");
    let sb = world.sync(&b);
    world
        .block_on(sb.wait_for_download(Some(Duration::from_secs(60))))
        .unwrap();
    let q = sb.progress();
    assert_eq!(q.download_transferred, uploaded);
    assert_eq!(q.download_transferable, uploaded);

    eventually("the last progress event", 10, || {
        progress_events(&events).last() == Some(&sa.progress())
    });
    let seen = progress_events(&events);
    assert!(seen
        .windows(2)
        .all(|w| w[1].upload_transferred >= w[0].upload_transferred));
    assert!(seen
        .iter()
        .all(|p| p.upload_transferred <= p.upload_transferable));
}

#[test]
fn state_events_follow_the_connection_and_a_panicking_listener_is_contained() {
    let mut world = World::new("states");
    let a = world.open("a.sqlite");
    // Every event from the session's first: the errors checked below are all of them.
    let (session, events) = world.sync_recording(&a);
    // A listener that panics, and one added after it that must still get every later event
    // (the states this test waits for all come after both are registered).
    let _bad = session.on_event(|_| panic!("a listener that throws"));
    let states = Arc::new(Mutex::new(Vec::<SyncState>::new()));
    let s = Arc::clone(&states);
    let _good = session.on_event(move |event| {
        if let Event::State(state) = event {
            s.lock().unwrap().push(state.clone());
        }
    });
    eventually("connected", 30, || session.state() == SyncState::Connected);
    world.stop_server();
    eventually("disconnected", 30, || {
        states.lock().unwrap().contains(&SyncState::Disconnected)
    });
    world.start_server();
    eventually("reconnected", 60, || {
        let s = states.lock().unwrap();
        s.iter()
            .skip_while(|x| **x != SyncState::Disconnected)
            .any(|x| *x == SyncState::Connected)
    });
    let errors = errors(&events);
    assert!(!errors.is_empty(), "the lost connection was reported");
    // The server's graceful shutdown says so (ERROR 100, try again); a dropped connection is
    // code 0. Either way the client retries.
    assert!(
        errors
            .iter()
            .all(|i| i.will_retry && (i.code == 0 || i.code == 100)),
        "{errors:?}"
    );
}
