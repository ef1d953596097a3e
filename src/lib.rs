//! Tandem: an offline-first object database with real-time sync.
//!
//! This crate is the Rust core. What lives here today:
//!
//! - [`model`]: the data model an app declares (classes, properties, value types, primary keys)
//!   and its validation.
//! - [`changeset`]: the instructions every write transaction produces, with a binary encoding that
//!   is byte-compatible with Realm's sync changesets, plus the zlib helpers for message bodies.
//! - [`state`]: the in-memory reference replica and applier (and STATE snapshots).
//! - [`ot`]: operational transformation of concurrent changesets (Realm's merge rules).
//! - [`store`]: the SQLite object store: transactions, queries, listeners, client history.
//! - [`protocol`]: every sync message in realm-core's framing.
//! - `client` (feature `client`, default): the sync session (`client::SyncSession`).
//! - `server` (feature `server`): the sync server core behind `tandem-server`.
//! - `ffi` (feature `ffi`): the uniffi facade for Kotlin, Swift and Python.
#![cfg_attr(not(feature = "ffi"), forbid(unsafe_code))]
#![warn(missing_docs)]

/// Logs a warning through `tracing` (target: the calling module) when the process has a
/// `tracing` subscriber (e.g. the one `ffi::set_log_listener` installs) and the app has not
/// cleared its log listener since, and to stderr otherwise, so a warning is never dropped for
/// want of a subscriber.
macro_rules! warn_or_stderr {
    ($($arg:tt)*) => {
        if tracing::dispatcher::has_been_set()
            && !$crate::LOG_LISTENER_CLEARED.load(std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!($($arg)*);
        } else {
            eprintln!("tandem: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use warn_or_stderr;

/// Set while the app's log listener is cleared (`ffi::clear_log_listener`): the global
/// subscriber it installed stays but forwards nothing, so [`warn_or_stderr`] writes to stderr
/// again, as before any listener was set.
pub(crate) static LOG_LISTENER_CLEARED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

pub mod changeset;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "ffi")]
pub mod ffi;
pub mod model;
pub mod ot;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod sim;
pub mod state;
pub mod store;

#[cfg(feature = "ffi")]
uniffi::setup_scaffolding!("tandem");
