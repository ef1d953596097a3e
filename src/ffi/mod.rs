//! The foreign-language facade (cargo feature `ffi`): what Kotlin, Swift and Python see through
//! uniffi. It holds no logic of its own: it converts between uniffi records and the core types
//! and forwards to [`crate::store`] and [`crate::client`].
//!
//! - `types`: values, keys, schema records, changes, errors.
//! - `ops`: [`WriteOp`], the one list of write operations, and the function that performs one.
//! - `database`: `Database`, `WriteTransaction`, `Results`, listener handles.
//! - `log`: `set_log_listener`, routing the library's `tracing` events to the app's logger.
//! - `sync`: `SyncSession`, `open_synced`, the sync listeners and the token provider, the
//!   blocking twins of the async calls and their `CancelToken`.
//! - `subscriptions`: flexible sync subscription sets (`Database.update_subscriptions`,
//!   `SyncSession.wait_for_subscriptions`).
//! - `foreign`: every call from the library's threads into foreign code goes through one gate,
//!   which `close_callbacks` closes for good (the Python package's interpreter exit).
//! - `python_batch`: `RowCodec` and `BatchWriter`/`batch_write`, whole transactions and query results as one JSON document
//!   each (the typed Python layer's fast path).
//! - `batch_read`: `batch_count`, `batch_rows`, `batch_object`, `batch_check_query`, reads of
//!   one plain crossing through a `BatchWriter`'s database (the typed Kotlin layer's fast path).
//!
//! Every foreign trait method returns `Result<(), CallbackError>`, so an exception thrown by a
//! listener is logged and the other listeners still run; no panic crosses the boundary. Every
//! foreign object the library keeps is held in a `foreign::Foreign`, so that its calls and its
//! release stop at `close_callbacks`.

mod batch_read;
mod database;
mod foreign;
mod log;
mod ops;
mod python_batch;
mod subscriptions;
mod sync;
mod types;

pub use batch_read::{batch_check_query, batch_count, batch_object, batch_rows};
pub use database::{
    Database, Durability, ListenerHandle, ObjectListener, OpenOptions, QuarantinedChangeset,
    QuarantinedInstruction, Results, ResultsListener, ResultsObservation, WriteTransaction,
};
pub use foreign::close_callbacks;
pub use log::{clear_log_listener, set_log_listener, LogLevel, LogListener};
pub use ops::{PathStep, WriteOp};
pub use python_batch::{batch_write, BatchWriter, RowCodec};
pub use subscriptions::{Subscription, SubscriptionChange, SubscriptionSet, SubscriptionSetState};
pub use sync::{
    open_synced, open_synced_blocking, CancelToken, ClientResetMode, ErrorListener,
    ProgressListener, SyncOptions, SyncProgress, SyncSession, SyncState, SyncStateListener,
    SyncedDatabase, TokenProvider, TransactOutcome,
};
pub use types::*;
