//! Delivery of session events (state, progress, errors) to the app's listeners.
//!
//! The socket task never calls app code: it queues an [`Event`] and one notifier thread per
//! session calls the listeners, in order, without holding any lock. A listener that panics is
//! reported on stderr and the others still run.

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
}

/// The listeners of one session and the queue to its notifier thread.
pub(crate) struct Listeners {
    registry: Arc<Mutex<Registry>>,
    queue: Mutex<mpsc::Sender<Event>>,
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
    /// Starts the notifier thread; it ends when the `Listeners` is dropped.
    pub(crate) fn start() -> Listeners {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let (queue, events) = mpsc::channel::<Event>();
        let weak = Arc::downgrade(&registry);
        let spawned = std::thread::Builder::new()
            .name("tandem-notifier".into())
            .spawn(move || {
                while let Ok(event) = events.recv() {
                    let Some(registry) = weak.upgrade() else {
                        return;
                    };
                    let callbacks: Vec<Callback> =
                        lock(&registry).listeners.values().cloned().collect();
                    drop(registry);
                    for callback in callbacks {
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                callback(&event)
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

    /// Registers `callback` for every later event.
    pub(crate) fn add(&self, callback: Callback) -> ListenerToken {
        let mut registry = lock(&self.registry);
        registry.next += 1;
        let id = registry.next;
        registry.listeners.insert(id, callback);
        ListenerToken {
            registry: Arc::downgrade(&self.registry),
            id,
        }
    }

    /// Queues an event for the notifier thread.
    pub(crate) fn emit(&self, event: Event) {
        let _ = lock(&self.queue).send(event);
    }
}
