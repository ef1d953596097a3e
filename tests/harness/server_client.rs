//! A client on an in-memory replica that syncs with a [`ServerFile`] through encoded protocol
//! messages (UPLOAD / DOWNLOAD bodies), with OT on its side as a real client does it.

use super::{generate, Entropy, SeededRng};
use tandem::changeset::{Changeset, ChangesetMeta};
use tandem::ot::ReciprocalHistory;
use tandem::protocol::{ClientMessage, Limits, ServerMessage, UploadEntry};
use tandem::server::ServerFile;
use tandem::state::State;

/// One client file bound to a server file.
pub struct Client {
    pub ident: u64,
    pub salt: u64,
    pub state: State,
    pub history: Vec<Changeset>,
    pub acked: u64,
    pub cursor: u64,
    pub reciprocal: ReciprocalHistory,
    pub clock: u64,
}

impl Client {
    pub fn new(server: &mut ServerFile) -> Client {
        let (ident, salt) = server.allocate_client_file().unwrap();
        Client {
            ident,
            salt,
            state: State::new(),
            history: Vec::new(),
            acked: 0,
            cursor: 0,
            reciprocal: ReciprocalHistory::new(),
            clock: 0,
        }
    }

    pub fn modify(&mut self, rng: &mut SeededRng) {
        self.clock += u64::from(rng.below(3));
        let mut cs = generate(&self.state, rng);
        if cs.is_empty() {
            return;
        }
        cs.meta = ChangesetMeta {
            version: self.history.len() as u64 + 1,
            last_integrated_remote_version: self.cursor,
            origin_timestamp: self.clock,
            origin_file_ident: self.ident,
        };
        self.state.apply(&cs).unwrap();
        self.history.push(cs);
    }

    /// Sends every unacknowledged changeset, through the wire format.
    pub fn upload(
        &mut self,
        server: &mut ServerFile,
    ) -> Result<(), tandem::protocol::ProtocolError> {
        let message = ClientMessage::Upload {
            session: 1,
            progress_client_version: self.history.len() as u64,
            progress_server_version: self.cursor,
            locked_server_version: 0,
            entries: self.history[self.acked as usize..]
                .iter()
                .map(UploadEntry::from_changeset)
                .collect(),
        };
        let ClientMessage::Upload { entries, .. } =
            ClientMessage::parse(&message.encode(), &Limits::default()).unwrap()
        else {
            unreachable!()
        };
        let done = server.integrate_upload(self.ident, &entries)?;
        self.acked = done.client_version;
        Ok(())
    }

    pub fn download(&mut self, server: &ServerFile) {
        let batch = server.download(self.ident, self.cursor, 64 << 10).unwrap();
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
            entries,
            download_server_version,
            ..
        } = ServerMessage::parse(&message.encode(), &Limits::default()).unwrap()
        else {
            unreachable!()
        };
        for entry in entries {
            let cs = entry.to_changeset().unwrap();
            let seen = entry.last_integrated_client_version;
            let concurrent: Vec<&Changeset> = self.history[seen as usize..].iter().collect();
            let mut batch = [cs];
            self.reciprocal.integrate(&mut batch, &concurrent).unwrap();
            self.reciprocal.forget_through(seen);
            self.state.apply(&batch[0]).unwrap();
        }
        self.cursor = download_server_version;
    }
}
