//! WAL checkpoints off the commit path.
//!
//! SQLite's default (`wal_autocheckpoint=1000`) runs a checkpoint inside the `COMMIT` that
//! takes the write-ahead log past 1,000 pages: the committing thread copies the log's pages
//! into the database file and syncs both. Measured with `TANDEM_BENCH_ONLY=single cargo bench
//! --bench store`, that was about half the time of a one-object transaction. SQLite's
//! documentation suggests the alternative used here (<https://www.sqlite.org/wal.html>,
//! "Application-Initiated Checkpoints"): the writer connection's WAL hook records how many
//! pages the log holds; once 1,000 more pages ([`BACKGROUND_PAGES`]) have been written since
//! the last request, a `tandem-checkpoint` thread with its own connection runs a `PASSIVE`
//! checkpoint, which waits for no reader or writer.
//!
//! The log is only rewound from its start when a checkpoint has copied all of it and no
//! transaction has appended to it since, which a steady stream of commits can prevent. So once
//! the log holds [`INLINE_PAGES`] (4,000 pages, 16 MiB with 4 KiB pages), the committing thread
//! checkpoints itself before its commit returns: it first waits for a background checkpoint
//! that is running (SQLite would refuse a second one with `SQLITE_BUSY`), then copies what the
//! background thread has not, and the next write rewinds the log. The log therefore holds no
//! more than 4,000 pages plus one transaction's, against SQLite's default of 1,000 plus one
//! (in both, a reader that keeps an old snapshot open can keep a checkpoint from finishing).
//!
//! Checkpoints are not about durability: a committed transaction is in the log (and synced
//! there with `Durability::Full`) whether or not it has been copied into the database file.

use std::cell::Cell;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::hooks::Wal;
use rusqlite::Connection;

use super::{DbFile, StoreError};

/// Pages appended to the log since the last request that make the background thread
/// checkpoint (SQLite's default autocheckpoint threshold).
pub(crate) const BACKGROUND_PAGES: i64 = 1_000;

/// Pages in the log at which the committing connection checkpoints inline.
pub(crate) const INLINE_PAGES: c_int = 4_000;

thread_local! {
    /// Pages in the log after the last commit on this thread's writer connection (set by
    /// [`wal_hook`], taken by [`Checkpointer::committed`] right after `COMMIT` returns on the
    /// same thread).
    static LOG_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// SQLite's WAL hook for the writer connection: runs inside `COMMIT`, after the transaction
/// is in the log, and only records the log's size. Installing it replaces SQLite's
/// autocheckpoint.
fn wal_hook(_wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    LOG_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Installs the WAL hook on the writer connection.
pub(crate) fn install(conn: &Connection) {
    conn.wal_hook(Some(wal_hook));
}

/// The background checkpoint thread of one database, started on first need and stopped
/// (joined) by [`Checkpointer::shutdown`].
pub(crate) struct Checkpointer {
    file: DbFile,
    /// Log pages when the last checkpoint was requested (0 after an inline checkpoint).
    requested_at: AtomicI64,
    /// Held by whoever runs a checkpoint, so that the inline one waits for the background
    /// one instead of being refused.
    running: Arc<Mutex<()>>,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    requested: bool,
    shutdown: bool,
}

impl Checkpointer {
    pub(crate) fn new(file: DbFile) -> Checkpointer {
        Checkpointer {
            file,
            requested_at: AtomicI64::new(0),
            running: Arc::default(),
            state: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    /// Called on the committing thread right after the writer connection `conn` committed,
    /// while it is still the only writer: checkpoints inline once the log holds
    /// [`INLINE_PAGES`], else asks the background thread for a checkpoint once
    /// [`BACKGROUND_PAGES`] more pages are in the log. Never fails the commit (a checkpoint
    /// that fails is logged and retried by a later commit; a thread that cannot be started
    /// leaves checkpointing to the inline path).
    pub(crate) fn committed(&self, conn: &Connection) {
        let pages = i64::from(LOG_PAGES.with(|p| p.replace(0)));
        if pages == 0 {
            return;
        }
        if pages >= i64::from(INLINE_PAGES) {
            let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match checkpoint(conn) {
                Ok((log, copied)) => tracing::trace!(log, copied, "inline WAL checkpoint"),
                Err(e) => tracing::debug!(error = %e, pages, "inline WAL checkpoint failed"),
            }
            self.requested_at.store(0, Ordering::Relaxed);
            return;
        }
        let last = self.requested_at.load(Ordering::Relaxed);
        // A log smaller than at the last request was rewound since: all of it is new.
        let appended = if pages < last { pages } else { pages - last };
        if appended < BACKGROUND_PAGES {
            return;
        }
        self.requested_at.store(pages, Ordering::Relaxed);
        if let Err(e) = self.ensure_thread() {
            tracing::warn!(error = %e, "cannot start the checkpoint thread; checkpoints stay inline");
            return;
        }
        let (state, wake) = &*self.state;
        state.lock().unwrap_or_else(|e| e.into_inner()).requested = true;
        wake.notify_one();
    }

    fn ensure_thread(&self) -> Result<(), StoreError> {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if thread.is_none() {
            let conn = self.file.connect()?;
            let state = Arc::clone(&self.state);
            let running = Arc::clone(&self.running);
            *thread = Some(
                std::thread::Builder::new()
                    .name("tandem-checkpoint".into())
                    .spawn(move || run(&state, &running, &conn))
                    .map_err(|e| {
                        StoreError::InvalidArgument(format!(
                            "cannot start the checkpoint thread: {e}"
                        ))
                    })?,
            );
        }
        Ok(())
    }

    /// Stops the thread and waits for a checkpoint it is running.
    pub(crate) fn shutdown(&self) {
        let (state, wake) = &*self.state;
        state.lock().unwrap_or_else(|e| e.into_inner()).shutdown = true;
        wake.notify_one();
        if let Some(handle) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

/// A `PASSIVE` checkpoint on `conn`: (pages in the log, pages copied into the database).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    })
}

fn run(state: &(Mutex<State>, Condvar), running: &Mutex<()>, conn: &Connection) {
    let (state, wake) = state;
    loop {
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            while !s.requested && !s.shutdown {
                s = wake.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.shutdown {
                return;
            }
            s.requested = false;
        }
        let result = {
            let _running = running.lock().unwrap_or_else(|e| e.into_inner());
            checkpoint(conn)
        };
        match result {
            Ok((log, copied)) => tracing::trace!(log, copied, "background WAL checkpoint"),
            Err(e) => tracing::debug!(error = %e, "background WAL checkpoint failed"),
        }
    }
}
