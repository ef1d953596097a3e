//! `tandem-server`: the self-hostable sync server.
//!
//! Every option is a flag or an environment variable (the flag wins). Run `tandem-server --help`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tandem::protocol::Limits;
use tandem::server::{start, Authenticator, ServerConfig};

const HELP: &str = "\
tandem-server: the Tandem sync server

USAGE:
    tandem-server [OPTIONS]

OPTIONS (each also readable from the environment variable in brackets):
    --listen <ADDR>            address and port to listen on [TANDEM_LISTEN]
                               (default 0.0.0.0:7800)
    --data-dir <DIR>           where the server files live, one SQLite file per server
                               path [TANDEM_DATA_DIR] (default ./tandem-data)
    --tls-cert <FILE>          TLS certificate chain, PEM [TANDEM_TLS_CERT]
    --tls-key <FILE>           TLS private key, PEM [TANDEM_TLS_KEY]
    --insecure-ws              serve plain ws:// without TLS; for local development only
                               [TANDEM_INSECURE_WS=1]
    --jwt-secret-file <FILE>   file holding the HS256 secret that signs access tokens
                               [TANDEM_JWT_SECRET_FILE]
    --idle-timeout <SECONDS>   close connections that send nothing (not even PING) for
                               this long [TANDEM_IDLE_TIMEOUT] (default 600)
    --issue-token <PATHS>      print an access token for these comma-separated server
                               paths (\"*\" for all), valid for --token-hours, and exit
    --token-hours <HOURS>      validity of --issue-token (default 24)
    -h, --help                 print this help

Clients connect to wss://<host>:<port>/ and send the token in the Authorization header
(Bearer) or in BIND. Tokens are HS256 JWTs with `exp` and `paths` claims.";

fn value(args: &[String], flag: &str, env: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok())
}

fn fail(message: &str) -> ! {
    eprintln!("tandem-server: {message}\nRun tandem-server --help for the options.");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(std::io::stdout(), "{HELP}");
        return;
    }
    let secret_file = value(&args, "--jwt-secret-file", "TANDEM_JWT_SECRET_FILE")
        .unwrap_or_else(|| fail("--jwt-secret-file is required"));
    let secret = std::fs::read(&secret_file)
        .unwrap_or_else(|e| fail(&format!("reading {secret_file}: {e}")));
    let secret: Vec<u8> = secret.trim_ascii().to_vec();
    if secret.len() < 16 {
        fail("the JWT secret must be at least 16 bytes");
    }
    let auth = Authenticator::hs256(&secret);
    if let Some(paths) = value(&args, "--issue-token", "TANDEM_ISSUE_TOKEN") {
        let hours: u64 = value(&args, "--token-hours", "TANDEM_TOKEN_HOURS")
            .map(|h| {
                h.parse()
                    .unwrap_or_else(|_| fail("--token-hours takes a number"))
            })
            .unwrap_or(24);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let paths: Vec<&str> = paths.split(',').map(str::trim).collect();
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            auth.issue("tandem-server", now + hours * 3600, &paths)
        );
        return;
    }
    let listen = value(&args, "--listen", "TANDEM_LISTEN")
        .unwrap_or_else(|| "0.0.0.0:7800".into())
        .parse()
        .unwrap_or_else(|_| fail("--listen takes an address like 0.0.0.0:7800"));
    let data_dir = PathBuf::from(
        value(&args, "--data-dir", "TANDEM_DATA_DIR").unwrap_or_else(|| "tandem-data".into()),
    );
    let insecure = args.iter().any(|a| a == "--insecure-ws")
        || std::env::var("TANDEM_INSECURE_WS").is_ok_and(|v| v == "1");
    let tls = match (
        value(&args, "--tls-cert", "TANDEM_TLS_CERT"),
        value(&args, "--tls-key", "TANDEM_TLS_KEY"),
    ) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) if insecure => None,
        _ => fail("give --tls-cert and --tls-key (or --insecure-ws for local development)"),
    };
    let idle: u64 = value(&args, "--idle-timeout", "TANDEM_IDLE_TIMEOUT")
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| fail("--idle-timeout takes seconds"))
        })
        .unwrap_or(600);
    let config = ServerConfig {
        listen,
        data_dir,
        tls,
        allow_plain_ws: insecure,
        auth,
        idle_timeout: Duration::from_secs(idle),
        limits: Limits::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async move {
        let server = start(config).await.unwrap_or_else(|e| fail(&e.to_string()));
        eprintln!("tandem-server listening on {}", server.local_addr);
        std::future::pending::<()>().await;
    });
}
