//! One database syncing with a [`ServerFile`] in the same process, every message going through
//! the wire format (encoded and parsed again): upload, download and the ident handshake. Shared
//! by the `sync_*` test files that need deterministic interleavings without a network.
#![allow(dead_code)]

use tandem::changeset::Changeset;
use tandem::protocol::{ClientMessage, Limits, ServerMessage, UploadEntry};
use tandem::server::ServerFile;
use tandem::store::{Database, DownloadCursors};

/// Allocates (or checks) `db`'s client file ident with `server`; returns it.
pub fn connect(db: &Database, server: &mut ServerFile) -> u64 {
    let p = db.sync_progress().unwrap();
    if p.client_file_ident != 0 {
        server
            .check_ident(
                p.client_file_ident,
                p.client_file_ident_salt,
                Some(p.download_server_version),
            )
            .unwrap();
        return p.client_file_ident;
    }
    let (ident, salt) = server.allocate_client_file().unwrap();
    db.set_client_file_ident(ident, salt).unwrap();
    ident
}

/// Uploads everything `db` has not uploaded yet, and acknowledges it.
pub fn upload(db: &Database, server: &mut ServerFile) {
    let ident = connect(db, server);
    let pending = db.pending_uploads(128 << 10).unwrap();
    let message = ClientMessage::Upload {
        session: 1,
        progress_client_version: 0,
        progress_server_version: 0,
        locked_server_version: 0,
        entries: pending.iter().map(UploadEntry::from_changeset).collect(),
    };
    let ClientMessage::Upload { entries, .. } =
        ClientMessage::parse(&message.encode(), &Limits::default()).unwrap()
    else {
        unreachable!()
    };
    let done = server.integrate_upload(ident, &entries).unwrap();
    db.acknowledge_upload(done.client_version).unwrap();
}

/// Downloads and integrates everything `server` has that `db` has not seen.
pub fn download(db: &Database, server: &mut ServerFile) {
    let ident = connect(db, server);
    let from = db.sync_progress().unwrap().download_server_version;
    let batch = server.download(ident, from, 1 << 20).unwrap();
    let message = ServerMessage::Download {
        session: 1,
        download_server_version: batch.download_server_version,
        download_client_version: batch.download_client_version,
        latest_server_version: batch.latest_server_version,
        latest_server_version_salt: batch.latest_server_version_salt,
        upload_client_version: batch.upload_client_version,
        upload_server_version: 0,
        downloadable_bytes: 0,
        entries: batch.entries,
        flx: None,
    };
    let ServerMessage::Download {
        download_server_version,
        download_client_version,
        latest_server_version,
        latest_server_version_salt,
        upload_client_version,
        entries,
        ..
    } = ServerMessage::parse(&message.encode(), &Limits::default()).unwrap()
    else {
        unreachable!()
    };
    let changesets: Vec<Changeset> = entries.iter().map(|e| e.to_changeset().unwrap()).collect();
    db.integrate_download(
        changesets,
        DownloadCursors {
            download_server_version,
            download_client_version,
            latest_server_version,
            latest_server_version_salt,
            upload_client_version,
        },
    )
    .unwrap();
}
