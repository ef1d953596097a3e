//! The real `tandem-server` binary, killed with SIGKILL while a client uploads: everything it
//! acknowledged is in its files when it comes back, the client resumes, and nothing is lost or
//! integrated twice. Also: the binary's configuration file and RS256 tokens end to end.
#![cfg(all(feature = "server", unix))]

mod server_log;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::client::{SyncConfig, SyncSession, SyncState};
use tandem::model::{ClassSchema, PrimaryKey, Property, PropertyType, Schema, Value};
use tandem::server::{ServerFile, TokenSigner};
use tandem::state::{Field, Key, Val};
use tandem::store::{Config, Database};

const SECRET: &str = "server process test secret";
const PATH: &str = "/ledger";

fn schema() -> Schema {
    Schema::new(vec![
        ClassSchema::top_level(
            "Entry",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("note", PropertyType::String),
            ],
        ),
        ClassSchema::top_level(
            "Tally",
            "_id",
            vec![
                Property::new("_id", PropertyType::Int),
                Property::new("count", PropertyType::Int),
            ],
        ),
    ])
    .unwrap()
}

struct Fixture {
    /// `_scratch`'s path.
    dir: PathBuf,
    /// The scratch directory, removed when the fixture is dropped.
    _scratch: tempfile::TempDir,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-process-{name}-"))
            .tempdir()
            .unwrap();
        let dir = scratch.path().to_path_buf();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("secret"), SECRET).unwrap();
        Fixture {
            dir,
            _scratch: scratch,
        }
    }

    /// Starts the binary with `args` added to the TLS and data-directory flags and returns it
    /// with the port it listens on.
    fn spawn(&self, listen: &str, args: &[&str]) -> (Child, u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--tls-cert")
            .arg(self.dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(self.dir.join("key.pem"))
            .args(args)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let port = server_log::listening_addr(child.stderr.take().unwrap()).port();
        (child, port)
    }

    fn open(&self, name: &str) -> Arc<Database> {
        Arc::new(Database::open(self.dir.join(name), &schema(), Config::default()).unwrap())
    }

    fn sync(&self, db: &Arc<Database>, port: u16, token: String) -> SyncSession {
        SyncSession::start(
            Arc::clone(db),
            SyncConfig {
                url: format!("wss://localhost:{port}/"),
                path: PATH.into(),
                token,
                ca_file: Some(self.dir.join("cert.pem")),
                allow_insecure: false,
                ..SyncConfig::default()
            },
        )
        .unwrap()
    }

    /// The server file of `PATH`, as the server names it (hex of the path's bytes).
    fn server_file(&self) -> PathBuf {
        self.dir
            .join("data")
            .join(tandem::server::server_file_name(PATH))
    }
}

fn hs256_token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    TokenSigner::hs256(SECRET.as_bytes())
        .sign("process-test", exp, &[PATH])
        .unwrap()
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One transaction: create entry `i` and add 1 to the shared tally. Returns its version.
fn write_entry(db: &Database, i: i64) -> u64 {
    let mut tx = db.begin_write().unwrap();
    tx.create(
        "Entry",
        PrimaryKey::Int(i),
        &[("note", Value::String(format!("entry {i}")))],
    )
    .unwrap();
    tx.add("Tally", &PrimaryKey::Int(0), "count", 1).unwrap();
    tx.commit().unwrap().expect("a version")
}

fn tally(state: &tandem::state::State) -> i64 {
    match state
        .object("Tally", &Key::Int(0))
        .map(|o| &o.fields["count"])
    {
        Some(Field::Value(Val::Int(n))) => *n,
        other => panic!("no tally: {other:?}"),
    }
}

fn entry_count(state: &tandem::state::State) -> usize {
    state.objects.get("Entry").map_or(0, |t| t.len())
}

#[test]
fn sigkill_mid_upload_loses_nothing_acknowledged_and_duplicates_nothing() {
    const ENTRIES: i64 = 400;
    let fixture = Fixture::new("sigkill");
    let secret = fixture.dir.join("secret").display().to_string();
    let (mut server, port) = fixture.spawn("127.0.0.1:0", &["--jwt-secret-file", &secret]);

    let a = fixture.open("a.sqlite");
    let mut tx = a.begin_write().unwrap();
    tx.create("Tally", PrimaryKey::Int(0), &[]).unwrap();
    tx.commit().unwrap();
    let session = fixture.sync(&a, port, hs256_token());

    // Write while syncing until the server has acknowledged some; then a burst, killed while
    // it is in flight; then more while the server is down.
    let mut versions = Vec::new();
    for i in 1..=100 {
        versions.push((i, write_entry(&a, i)));
        std::thread::sleep(Duration::from_millis(2));
    }
    let half = versions[49].1;
    wait_until("the first uploads to be acknowledged", 60, || {
        a.sync_progress().unwrap().upload_client_version >= half
    });
    for i in 101..=200 {
        versions.push((i, write_entry(&a, i)));
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for i in 201..=ENTRIES {
        versions.push((i, write_entry(&a, i)));
    }

    // With the server dead, compare what the client saw acknowledged with the server's files.
    let acked = a.sync_progress().unwrap().upload_client_version;
    let on_disk = ServerFile::open(fixture.server_file()).unwrap();
    let server_state = on_disk.state().unwrap();
    drop(on_disk);
    let acked_entries: Vec<i64> = versions
        .iter()
        .filter(|(_, v)| *v <= acked)
        .map(|(i, _)| *i)
        .collect();
    assert!(!acked_entries.is_empty());
    eprintln!(
        "killed after entry 200; {} entries acknowledged; the server's files hold {}",
        acked_entries.len(),
        entry_count(&server_state)
    );
    for i in &acked_entries {
        assert!(
            server_state.object("Entry", &Key::Int(*i)).is_some(),
            "entry {i} was acknowledged (upload cursor {acked}) but the killed server lost it"
        );
    }
    assert!(
        tally(&server_state) >= acked_entries.len() as i64,
        "the server's tally lost acknowledged increments"
    );

    // Restart on the same port: the client resumes by itself and the rest arrives once.
    let (mut server, _) = fixture.spawn(
        &format!("127.0.0.1:{port}"),
        &["--jwt-secret-file", &secret],
    );
    let b = fixture.open("b.sqlite");
    let _session_b = fixture.sync(&b, port, hs256_token());
    wait_until("both clients to hold every entry", 120, || {
        let sa = a.export_state().unwrap();
        let sb = b.export_state().unwrap();
        a.pending_uploads(1).unwrap().is_empty()
            && entry_count(&sb) == ENTRIES as usize
            && sa.objects == sb.objects
    });
    assert_eq!(session.state(), SyncState::Connected);
    assert_eq!(
        tally(&b.export_state().unwrap()),
        ENTRIES,
        "every increment counted exactly once"
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let final_state = ServerFile::open(fixture.server_file())
        .unwrap()
        .state()
        .unwrap();
    assert_eq!(entry_count(&final_state), ENTRIES as usize);
    assert_eq!(tally(&final_state), ENTRIES);
}

#[test]
fn config_file_and_rs256_tokens_work_end_to_end() {
    let fixture = Fixture::new("rs256");
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let config = fixture.dir.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "jwt_public_key = \"{}\"\nidle_timeout = 120\n",
            keys.join("rsa-public.pem").display()
        ),
    )
    .unwrap();
    let (mut server, port) =
        fixture.spawn("127.0.0.1:0", &["--config", &config.display().to_string()]);
    let pem = std::fs::read(keys.join("rsa-private.pem")).unwrap();
    let signer = TokenSigner::from_private_key_pem(&pem).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let a = fixture.open("a.sqlite");
    let b = fixture.open("b.sqlite");
    let _sa = fixture.sync(&a, port, signer.sign("a", exp, &[PATH]).unwrap());
    let _sb = fixture.sync(&b, port, signer.sign("b", exp, &["*"]).unwrap());
    let mut tx = a.begin_write().unwrap();
    tx.create("Tally", PrimaryKey::Int(0), &[("count", Value::Int(7))])
        .unwrap();
    tx.commit().unwrap();
    wait_until("b to receive a's write", 60, || {
        b.export_state()
            .unwrap()
            .object("Tally", &Key::Int(0))
            .is_some()
    });
    assert_eq!(tally(&b.export_state().unwrap()), 7);

    // An HS256 token (even one keyed with the public key's bytes) is refused by this server.
    let c = fixture.open("c.sqlite");
    let forged = TokenSigner::hs256(&std::fs::read(keys.join("rsa-public.pem")).unwrap())
        .sign("eve", exp, &["*"])
        .unwrap();
    let sc = fixture.sync(&c, port, forged);
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(sc.state(), SyncState::Connected);
    assert!(c
        .export_state()
        .unwrap()
        .object("Tally", &Key::Int(0))
        .is_none());
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_bad_config_file_stops_the_binary_with_a_clear_message() {
    let fixture = Fixture::new("badconfig");
    let config = fixture.dir.join("tandem.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ntls_sert = \"typo.pem\"\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .arg("--config")
        .arg(&config)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown key \"tls_sert\""),
        "stderr: {stderr}"
    );
}

#[test]
fn without_a_ca_file_the_system_roots_refuse_a_self_signed_server() {
    let fixture = Fixture::new("roots");
    let secret = fixture.dir.join("secret").display().to_string();
    let (mut server, port) = fixture.spawn("127.0.0.1:0", &["--jwt-secret-file", &secret]);
    let a = fixture.open("a.sqlite");
    let session = SyncSession::start(
        Arc::clone(&a),
        SyncConfig {
            url: format!("wss://localhost:{port}/"),
            path: PATH.into(),
            token: hs256_token(),
            ca_file: None,
            allow_insecure: false,
            ..SyncConfig::default()
        },
    )
    .expect("this machine has system roots");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(session.state(), SyncState::Connected);
    assert_eq!(
        a.sync_progress().unwrap().client_file_ident,
        0,
        "never bound"
    );
    // The same server with its CA configured is fine.
    let trusted = fixture.sync(&a, port, hs256_token());
    wait_until("the trusted session to bind", 60, || {
        a.sync_progress().unwrap().client_file_ident != 0
    });
    drop((session, trusted));
    server.kill().unwrap();
    server.wait().unwrap();
}
