//! Storage faults and the disk reserve of the data directory.
//!
//! A storage fault is any SQLite error while a server file reads or writes (`SQLITE_FULL`,
//! `SQLITE_IOERR`, ...). It is a transient error for clients: ERROR 201 `other_session_error`
//! with `try_again` 1, which a Tandem client retries with its backoff and a Realm client gets as
//! a `Transient` JSON_ERROR. The server logs it (server file, operation, free and needed bytes),
//! counts it in `tandem_storage_faults_total{kind}`, and never lets the in-memory state run
//! ahead of the disk (the server file reloads what is stored).
//!
//! The reserve is a file of `--disk-reserve` bytes in the data directory, written at start. On a
//! full-disk fault it is deleted, so that SQLite can checkpoint its WAL and finish, and writes
//! are refused (still 201, try again) until the free space is at least the reserve plus
//! [`HEADROOM`]; then the reserve is written again and writes resume, with no restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::metrics::Metrics;
use crate::protocol::{ErrorCode, ProtocolError};

/// Name of the reserve file in the data directory.
pub const RESERVE_FILE: &str = "tandem-disk-reserve";

/// Free bytes that must be left besides the reserve before writes resume after a full disk.
pub const HEADROOM: u64 = 1 << 20;

/// Default `--disk-reserve`: 32 MiB.
pub const DEFAULT_RESERVE: u64 = 32 << 20;

/// The kind label of a storage fault (`tandem_storage_faults_total{kind}`): `disk_full`
/// (`SQLITE_FULL`), `io` (`SQLITE_IOERR*`), `corrupt` (`SQLITE_CORRUPT`, `SQLITE_NOTADB`),
/// `cannot_open` (`SQLITE_CANTOPEN`), `busy` (`SQLITE_BUSY`, `SQLITE_LOCKED`), `other`.
pub fn fault_kind(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ffi::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DiskFull) => "disk_full",
        Some(C::SystemIoFailure) => "io",
        Some(C::DatabaseCorrupt) | Some(C::NotADatabase) => "corrupt",
        Some(C::CannotOpen) => "cannot_open",
        Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => "busy",
        _ => "other",
    }
}

/// The bytes available to an unprivileged writer in the file system holding `dir`
/// (`statvfs(2)`: `f_bavail * f_frsize`), if it can be read.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// The transient error a client gets for a storage fault: no server path, no SQLite text. Its
/// code (201) carries `try_again` ([`ErrorCode::try_again`]), so clients retry with backoff.
pub fn transient(kind: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::OtherSessionError,
        format!("server storage fault ({kind}); try again later"),
    )
}

/// The data directory's reserve and fault accounting, shared by every server file.
pub struct Disk {
    dir: PathBuf,
    reserve: u64,
    metrics: Arc<Metrics>,
    /// The reserve was deleted after a full disk: writes wait for space.
    released: AtomicBool,
    /// Serializes writing and deleting the reserve.
    lock: Mutex<()>,
}

impl Disk {
    /// Accounting for `dir` with a reserve of `reserve` bytes (0: none), written now. A reserve
    /// that does not fit is logged and the server starts in the waiting state (writes refused
    /// with 201 until there is room for it).
    pub fn new(dir: &Path, reserve: u64, metrics: Arc<Metrics>) -> Arc<Disk> {
        let disk = Arc::new(Disk {
            dir: dir.to_path_buf(),
            reserve,
            metrics,
            released: AtomicBool::new(false),
            lock: Mutex::new(()),
        });
        if let Err(e) = disk.write_reserve() {
            tracing::error!(
                data_dir = %dir.display(),
                reserve_bytes = reserve,
                free_bytes = free_bytes(dir),
                error = %e,
                "cannot write the disk reserve; writes wait until there is room for it"
            );
            disk.released.store(true, Ordering::SeqCst);
        }
        disk
    }

    /// The reserve file's path.
    pub fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Whether writes are waiting for free space (the reserve was released).
    pub fn waiting_for_space(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    fn write_reserve(&self) -> std::io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.reserve_path();
        if self.reserve == 0 {
            let _ = std::fs::remove_file(&path);
            return Ok(());
        }
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == self.reserve) {
            return Ok(());
        }
        // Real blocks, not a sparse file: zeros written out and synced.
        let written = (|| {
            let mut f = std::fs::File::create(&path)?;
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.reserve;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        written
    }

    /// Before a write: `Ok` unless the disk is waiting for space. While waiting, the free space
    /// is checked; at the reserve plus [`HEADROOM`] the reserve is written again and writes
    /// resume. Otherwise a transient 201 (nothing was changed).
    pub fn admit(&self, server_file: &Path, operation: &str) -> Result<(), ProtocolError> {
        if !self.released.load(Ordering::SeqCst) {
            return Ok(());
        }
        let free = free_bytes(&self.dir);
        let needed = self.reserve + HEADROOM;
        if free.is_some_and(|f| f >= needed) && self.write_reserve().is_ok() {
            if self.released.swap(false, Ordering::SeqCst) {
                tracing::info!(
                    data_dir = %self.dir.display(),
                    free_bytes = free,
                    reserve_bytes = self.reserve,
                    "disk space is back: reserve written again, writes resume"
                );
            }
            return Ok(());
        }
        tracing::warn!(
            server_file = %server_file.display(),
            operation,
            free_bytes = free,
            needed_bytes = needed,
            "write refused: the disk is full and the server waits for free space"
        );
        Err(transient("disk_full"))
    }

    /// Records a storage fault of `operation` on `server_file` that needed about `needed` bytes:
    /// logs it, counts it, and on a full disk releases the reserve. Returns the client's error.
    pub fn fault(
        &self,
        server_file: &Path,
        operation: &str,
        needed: u64,
        error: &rusqlite::Error,
    ) -> ProtocolError {
        let kind = fault_kind(error);
        self.metrics
            .storage_faults
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
        let released = kind == "disk_full" && self.release();
        tracing::error!(
            server_file = %server_file.display(),
            operation,
            kind,
            free_bytes = free_bytes(&self.dir),
            needed_bytes = needed + self.reserve + HEADROOM,
            reserve_released = released,
            error = %error,
            "storage fault"
        );
        transient(kind)
    }

    /// The metrics faults are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records a server file that could not be opened (kind `open`).
    pub fn open_failed(&self, server_file: &Path, error: &ProtocolError) {
        self.metrics
            .storage_faults
            .get_or_create(&vec![("kind", "open".to_owned())])
            .inc();
        tracing::error!(
            server_file = %server_file.display(),
            operation = "open",
            free_bytes = free_bytes(&self.dir),
            error = %error.message,
            "storage fault: cannot open a server file"
        );
    }

    /// Deletes the reserve (once) so that SQLite can checkpoint and finish. Whether it did.
    fn release(&self) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let was = self.released.swap(true, Ordering::SeqCst);
        !was && std::fs::remove_file(self.reserve_path()).is_ok()
    }
}
