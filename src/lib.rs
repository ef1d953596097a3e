//! Tandem: an offline-first object database with real-time sync.
//!
//! This crate is the Rust core. What lives here today:
//!
//! - [`model`]: the data model an app declares (classes, properties, value types, primary keys)
//!   and its validation.
//! - [`changeset`]: the instructions every write transaction produces, with a binary encoding that
//!   is byte-compatible with Realm's sync changesets, plus the zlib helpers for message bodies.
//!
//! The object store, operational transformation, the sync protocol, the client session, the
//! server and the foreign-language bindings are built on these two modules; they are not here
//! yet (see `README.md` for the honest status).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod changeset;
#[cfg(feature = "client")]
pub mod client;
pub mod model;
pub mod ot;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod store;
