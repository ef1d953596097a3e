//! Delivery of session events (state, progress, errors) to the app's listeners.
//!
//! The socket task never calls app code: it queues an [`Event`] and one notifier thread per
//! session calls the listeners, in order, without holding any lock. A listener that panics is
//! reported on stderr and the others still run.
//!
//! A session that stopped for good says so once, with an [`Event::Error`] whose `will_retry`
//! is false and an [`Event::State`] of [`SyncState::Error`]. A listener registered after those
//! were delivered is handed them at once (on the notifier thread, before any later event), so
//! it learns why the session stopped instead of waiting for events that never come. Which
//! listeners an event reaches is decided under the registry's lock, as is registration, so a
//! listener gets each of them exactly once.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use super::{ErrorInfo, Progress, SyncState};

/// Something the session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection state changed.
    State(SyncState),
    /// Transfer progress changed.
    Progress(Progress),
    /// An error happened; [`ErrorInfo::will_retry`] says whether the session goes on by itself.
    Error(ErrorInfo),
}

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Default)]
struct Registry {
    next: u64,
    listeners: BTreeMap<u64, Callback>,
    /// The events that said the session stopped for good, once handed to the listeners
    /// registered then: later listeners get them on registration.
    terminal: Vec<Event>,
    /// Those events, for listeners registered after they were handed out, not yet delivered:
    /// the notifier delivers them before anything it takes from the queue after the
    /// registration, so they keep their order ahead of any later event.
    replays: BTreeMap<u64, Vec<Event>>,
}

/// What the notifier thread is woken for: an event for every listener, the replays of
/// newly registered ones, or a listener to let go of once everything before is delivered.
enum Envelope {
    All(Event),
    Replays,
    Release(u64),
}

/// Whether `event` says the session stopped for good.
fn is_terminal(event: &Event) -> bool {
    matches!(
        event,
        Event::State(SyncState::Error(_))
            | Event::Error(ErrorInfo {
                will_retry: false,
                ..
            })
    )
}

/// The listeners of one session and the queue to its notifier thread.
pub(crate) struct Listeners {
    registry: Arc<Mutex<Registry>>,
    queue: Mutex<mpsc::Sender<Envelope>>,
}

/// Keeps a listener registered; dropping it (or [`ListenerToken::cancel`]) stops delivery.
pub struct ListenerToken {
    registry: Weak<Mutex<Registry>>,
    id: u64,
}

impl ListenerToken {
    /// Stops delivery to this listener. Events already being delivered may still arrive.
    pub fn cancel(&self) {
        if let Some(registry) = self.registry.upgrade() {
            lock(&registry).listeners.remove(&self.id);
        }
    }
}

impl Drop for ListenerToken {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Listeners {
    /// Starts the notifier thread. When the `Listeners` is dropped, the thread delivers what
    /// is still queued and ends (holding the registry until then, so that no event emitted
    /// before the drop is lost).
    pub(crate) fn start() -> Listeners {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (queue, events) = mpsc::channel::<Envelope>();
        let notifier = Arc::clone(&registry);
        let spawned = std::thread::Builder::new()
            .name("tandem-notifier".into())
            .spawn(move || {
                let registry = notifier;
                while let Ok(envelope) = events.recv() {
                    let event = match envelope {
                        Envelope::Release(id) => {
                            // Dropped outside the lock: it may be foreign code's object.
                            let released = lock(&registry).listeners.remove(&id);
                            drop(released);
                            continue;
                        }
                        Envelope::All(event) => Some(event),
                        Envelope::Replays => None,
                    };
                    let (replays, delivery) = {
                        let mut registry = lock(&registry);
                        let replays: Vec<(Callback, Vec<Event>)> =
                            std::mem::take(&mut registry.replays)
                                .into_iter()
                                .filter_map(|(id, events)| {
                                    Some((registry.listeners.get(&id)?.clone(), events))
                                })
                                .collect();
                        let delivery = event.map(|event| {
                            // Listeners registered from here on get it on registration.
                            if is_terminal(&event) {
                                registry.terminal.push(event.clone());
                            }
                            let callbacks: Vec<Callback> =
                                registry.listeners.values().cloned().collect();
                            (event, callbacks)
                        });
                        (replays, delivery)
                    };
                    let replayed = replays
                        .iter()
                        .flat_map(|(callback, events)| events.iter().map(move |e| (callback, e)));
                    let delivered = delivery.iter().flat_map(|(event, callbacks)| {
                        callbacks.iter().map(move |callback| (callback, event))
                    });
                    for (callback, event) in replayed.chain(delivered) {
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                callback(event)
                            }));
                        if outcome.is_err() {
                            crate::warn_or_stderr!(
                                "a sync listener panicked; the others still run"
                            );
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            crate::warn_or_stderr!(
                "cannot start the notifier thread ({e}); listeners will not run"
            );
        }
        Listeners {
            registry,
            queue: Mutex::new(queue),
        }
    }

    /// Registers `callback` for every later event, and hands it the events that said the
    /// session stopped for good if they were delivered already (see the module's docs).
    pub(crate) fn add(&self, callback: Callback) -> ListenerToken {
        let mut registry = lock(&self.registry);
        registry.next += 1;
        let id = registry.next;
        registry.listeners.insert(id, callback);
        // Decided while the registry is locked: no event can be decided in between.
        if !registry.terminal.is_empty() {
            let events = registry.terminal.clone();
            registry.replays.insert(id, events);
            let _ = lock(&self.queue).send(Envelope::Replays);
        }
        drop(registry);
        ListenerToken {
            registry: Arc::downgrade(&self.registry),
            id,
        }
    }

    /// Queues an event for the notifier thread.
    pub(crate) fn emit(&self, event: Event) {
        let _ = lock(&self.queue).send(Envelope::All(event));
    }

    /// Unregisters the listener of `token` once every event queued before this call has been
    /// delivered to it, and drops it then (what it holds, its session say, is let go).
    pub(crate) fn release(&self, mut token: ListenerToken) {
        let id = token.id;
        // Disarmed: its drop must not remove the listener ahead of the queue.
        token.registry = Weak::new();
        if lock(&self.queue).send(Envelope::Release(id)).is_err() {
            let released = lock(&self.registry).listeners.remove(&id);
            drop(released);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};
    use std::time::Duration;

    use super::*;

    fn listen(listeners: &Listeners) -> (ListenerToken, Receiver<Event>) {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let token = listeners.add(Arc::new(move |e: &Event| {
            let _ = lock(&tx).send(e.clone());
        }));
        (token, rx)
    }

    fn stopped() -> [Event; 2] {
        [
            Event::Error(ErrorInfo {
                code: 206,
                message: "refused".into(),
                will_retry: false,
            }),
            Event::State(SyncState::Error("refused".into())),
        ]
    }

    /// The next `n` events (waiting up to 5 s for each), then any that follow within 20 ms.
    fn received(rx: &Receiver<Event>, n: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while out.len() < n {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(e) => out.push(e),
                Err(_) => return out,
            }
        }
        while let Ok(e) = rx.recv_timeout(Duration::from_millis(20)) {
            out.push(e);
        }
        out
    }

    #[test]
    fn a_listener_registered_after_the_session_stopped_is_told_why_once() {
        let listeners = Listeners::start();
        let (_early, early_rx) = listen(&listeners);
        let retrying = Event::Error(ErrorInfo {
            code: 0,
            message: "network".into(),
            will_retry: true,
        });
        listeners.emit(retrying.clone());
        listeners.emit(Event::Progress(Progress::default()));
        for e in stopped() {
            listeners.emit(e);
        }
        let mut expected = vec![retrying, Event::Progress(Progress::default())];
        expected.extend(stopped());
        assert_eq!(received(&early_rx, 4), expected);
        // Only the events that said the session stopped, in their order, and only once.
        let (_late, late_rx) = listen(&listeners);
        assert_eq!(received(&late_rx, 2), stopped());
        // The early listener is not told twice.
        assert!(received(&early_rx, 0).is_empty());
    }

    fn error(n: u64) -> Event {
        Event::Error(ErrorInfo {
            code: n,
            message: format!("error {n}"),
            will_retry: true,
        })
    }

    #[test]
    fn events_queued_when_the_session_lets_go_of_its_listeners_are_still_delivered() {
        let listeners = Listeners::start();
        let (_token, rx) = listen(&listeners);
        for n in 0..200 {
            listeners.emit(error(n));
        }
        drop(listeners);
        assert_eq!(received(&rx, 200), (0..200).map(error).collect::<Vec<_>>());
    }

    #[test]
    fn a_released_listener_gets_everything_before_the_release_and_is_then_dropped() {
        let listeners = Listeners::start();
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let held = Arc::new(());
        let holds = Arc::clone(&held);
        let token = listeners.add(Arc::new(move |e: &Event| {
            let _ = &holds;
            let _ = lock(&tx).send(e.clone());
        }));
        for n in 0..50 {
            listeners.emit(error(n));
        }
        listeners.release(token);
        listeners.emit(error(50));
        assert_eq!(received(&rx, 50), (0..50).map(error).collect::<Vec<_>>());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&held) > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the listener was kept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn registration_racing_the_final_events_gets_each_exactly_once() {
        for round in 0..100 {
            let listeners = Arc::new(Listeners::start());
            let racer = {
                let listeners = Arc::clone(&listeners);
                std::thread::spawn(move || {
                    for e in stopped() {
                        listeners.emit(e);
                    }
                })
            };
            let (_token, rx) = listen(&listeners);
            racer.join().unwrap();
            assert_eq!(received(&rx, 2), stopped(), "round {round}");
        }
    }
}
