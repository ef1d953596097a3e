//! Every call from the library's own threads into foreign code, and the switch that ends them
//! for good: [`close_callbacks`].
//!
//! Listeners, the log listener and token providers are called on threads the library owns (the
//! notifier threads, the sync runtime's workers, whichever thread logs). So is a foreign
//! object's release, when the library drops the last reference to it on such a thread. Some
//! foreign runtimes cannot take such a call once they start shutting down: Python 3.11 ends a
//! foreign thread that asks for the GIL during interpreter finalization with `pthread_exit`,
//! whose forced unwinding through the library's `extern "C"` frames aborts the process
//! ("FATAL: exception not rethrown"). The Python package therefore calls [`close_callbacks`]
//! from an `atexit` hook, which runs before finalization: from then on no library thread enters
//! foreign code, and the calls already inside it are waited for.
//!
//! Each foreign object is held in a [`Foreign`]: its calls go through the gate (skipped once it
//! is closed), and so does its release (leaked once it is closed: the process is ending).

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Gate {
    closed: bool,
    /// Calls into foreign code in progress, on all threads.
    active: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    closed: false,
    active: 0,
});
static LEFT: Condvar = Condvar::new();

thread_local! {
    /// Calls into foreign code in progress on this thread (a listener that calls the library,
    /// which calls another listener, nests).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

fn gate() -> MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// One call into foreign code in progress; leaving it (drop) lets [`close_callbacks`] go on.
struct Inside(());

impl Inside {
    /// Enters the gate, or `None` once it is closed.
    fn enter() -> Option<Inside> {
        let mut gate = gate();
        if gate.closed {
            return None;
        }
        gate.active += 1;
        // (`try_with`: a thread may log while its thread-locals are being destroyed)
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
        Some(Inside(()))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
        let mut gate = gate();
        gate.active -= 1;
        drop(gate);
        LEFT.notify_all();
    }
}

/// A foreign object (a uniffi foreign trait implementation) held by the library: calls and the
/// release go through the gate.
pub(crate) struct Foreign<T: ?Sized>(ManuallyDrop<Arc<T>>);

impl<T: ?Sized> Foreign<T> {
    pub(crate) fn new(inner: Arc<T>) -> Self {
        Foreign(ManuallyDrop::new(inner))
    }

    /// Calls `f` on the foreign object, or returns `None` without calling it once
    /// [`close_callbacks`] ran.
    pub(crate) fn call<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let _inside = Inside::enter()?;
        Some(f(&self.0))
    }
}

impl<T: ?Sized> Drop for Foreign<T> {
    fn drop(&mut self) {
        // Releasing the last reference calls the foreign runtime (uniffi's free callback).
        // Once the gate is closed the foreign runtime is going away: the reference (and
        // whatever it holds) is leaked.
        if let Some(_inside) = Inside::enter() {
            // SAFETY: `self.0` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.0) }
        }
    }
}

/// Ends every later call from the library's threads into the app's code, for the rest of the
/// process: listeners, the log listener and token providers are no longer called (a token
/// provider's fetch fails, log events are dropped, warnings and errors go to stderr), and
/// foreign objects the library lets go are no longer released. Then waits up to `timeout_ms`
/// for the calls already in progress to return; `false` means some had not (they are left to
/// finish on their own). Calls the current thread is making are not waited for.
///
/// For a language runtime that cannot take calls from other threads once it starts shutting
/// down: the Python package calls it from `atexit`, before interpreter finalization. Do not call
/// it in an app that goes on running.
#[uniffi::export]
pub fn close_callbacks(timeout_ms: u64) -> bool {
    let own = DEPTH.try_with(Cell::get).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut gate = gate();
    gate.closed = true;
    while gate.active > own {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        gate = LEFT
            .wait_timeout(gate, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}
