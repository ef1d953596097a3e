//! Token refresh against a real server: a token that expires mid-session is replaced through
//! the app's `TokenProvider` and REFRESH without losing a change; a failing provider is
//! reported and retried; an expired token without a provider stops the session with 202.
#![cfg(feature = "server")]

mod live;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::{create_task, eventually, has_task, token, World};
use tandem::client::{Event, SyncState, TokenProvider};

/// Hands out tokens valid for `seconds`, failing the first `failures` calls.
struct ShortLived {
    seconds: u64,
    failures: usize,
    calls: AtomicUsize,
}

impl TokenProvider for ShortLived {
    fn fetch_token(&self) -> Result<String, String> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.failures {
            return Err(format!("auth backend unavailable (call {call})"));
        }
        Ok(token(self.seconds))
    }
}

fn collect_events(
    session: &tandem::client::SyncSession,
) -> (Arc<Mutex<Vec<Event>>>, tandem::client::ListenerToken) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let listener = session.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    (events, listener)
}

#[test]
fn a_token_expiring_mid_session_is_refreshed_without_losing_a_change() {
    let world = World::new("refresh-mid");
    let a = world.open("a.sqlite");
    let b = world.open("b.sqlite");
    let provider = Arc::new(ShortLived {
        seconds: 3,
        failures: 0,
        calls: AtomicUsize::new(0),
    });
    let sa = world.sync_with(&a, token(3), provider.clone());
    let (events, _listener) = collect_events(&sa);
    let _sb = world.sync(&b);
    // Keep writing for longer than two token lifetimes.
    for id in 0..40 {
        create_task(&a, id, "written while tokens expire");
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually("b to receive every task", 60, || {
        (0..40).all(|id| has_task(&b, id))
    });
    assert!(
        provider.calls.load(Ordering::SeqCst) >= 2,
        "the provider was asked before each expiry"
    );
    assert_eq!(sa.state(), SyncState::Connected);
    let events = events.lock().unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Error(i) if !i.will_retry)),
        "no fatal error: {events:?}"
    );
}

#[test]
fn a_failing_provider_is_reported_and_retried() {
    let world = World::new("refresh-failing");
    let a = world.open("a.sqlite");
    let provider = Arc::new(ShortLived {
        seconds: 3600,
        failures: 2,
        calls: AtomicUsize::new(0),
    });
    // No initial token: the session must ask the provider before connecting.
    let session = world.sync_with(&a, String::new(), provider.clone());
    let (events, _listener) = collect_events(&session);
    create_task(&a, 1, "after the provider recovers");
    eventually("the session to connect", 60, || {
        session.state() == SyncState::Connected
    });
    world
        .block_on(session.wait_for_upload(Some(Duration::from_secs(60))))
        .unwrap();
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    let events = events.lock().unwrap();
    let reported: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Error(info) => Some(info.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(reported
        .iter()
        .all(|i| i.will_retry && i.message.contains("auth backend unavailable")));
}

#[test]
fn an_expired_token_without_a_provider_stops_with_202() {
    let world = World::new("refresh-none");
    let a = world.open("a.sqlite");
    let session =
        tandem::client::SyncSession::start(Arc::clone(&a), world.config(token(2))).unwrap();
    let (events, _listener) = collect_events(&session);
    eventually("connected", 30, || session.state() == SyncState::Connected);
    std::thread::sleep(Duration::from_millis(2500));
    create_task(&a, 1, "too late");
    eventually("the session to stop", 30, || {
        matches!(session.state(), SyncState::Error(_))
    });
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Error(i) if i.code == 202 && !i.will_retry)),
        "{events:?}"
    );
}
