//! A real `tandem-server` with TLS on a loopback port, for the sync benchmarks: a throwaway
//! certificate in a temp directory, HS256 tokens, and client sessions for any server path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tandem::client::{SyncConfig, SyncSession};
use tandem::server::{start, Authenticator, RunningServer, ServerConfig, TokenSigner};
use tandem::store::Database;

/// The HS256 secret the server verifies tokens with.
pub const SECRET: &[u8] = b"benchmark secret, benchmark secret";

/// A running server, its runtime, and the directory of its files and the clients'.
pub struct Loopback {
    /// `_scratch`'s path.
    pub dir: PathBuf,
    pub runtime: tokio::runtime::Runtime,
    pub server: RunningServer,
    pub port: u16,
    /// Removes the directory when dropped: the last field, so after the runtime shuts down.
    _scratch: tempfile::TempDir,
}

/// Starts a server in a fresh temp directory named after `name` (removed when the returned
/// value is dropped).
pub fn start_server(name: &str) -> Loopback {
    let scratch = tempfile::Builder::new()
        .prefix(&format!("tandem-{name}-"))
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(start(ServerConfig {
            tls: Some((dir.join("cert.pem"), dir.join("key.pem"))),
            ..ServerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                dir.join("server"),
                Authenticator::hs256(SECRET),
            )
        }))
        .unwrap();
    let port = server.local_addr.port();
    Loopback {
        dir,
        runtime,
        server,
        port,
        _scratch: scratch,
    }
}

/// A sync session of `db` on server path `path` of the server at `port` (certificate in `dir`),
/// with a token valid for an hour.
pub fn session(dir: &Path, port: u16, db: &Arc<Database>, path: &str) -> SyncSession {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SyncSession::start(
        Arc::clone(db),
        SyncConfig {
            url: format!("wss://localhost:{port}/"),
            path: path.into(),
            token: TokenSigner::hs256(SECRET)
                .sign("bench", now + 3600, &["*"])
                .expect("HS256 signing cannot fail"),
            ca_file: Some(dir.join("cert.pem")),
            allow_insecure: false,
            ..SyncConfig::default()
        },
    )
    .unwrap()
}
