//! `tandem-server`'s configuration: command-line flags, environment variables and a TOML file,
//! merged into a [`ServerConfig`] (or a request to issue a token, to manage server API keys
//! with `tandem-server api-key ...`, to inspect or maintain server files with
//! `tandem-server admin ...`, or to print help).
//!
//! Every setting has one name in three spellings: the flag `--data-dir`, the environment
//! variable `TANDEM_DATA_DIR` and the file key `data_dir`. A flag wins over the environment,
//! which wins over the file, which wins over the default. Anything unknown (a flag, a file key)
//! and anything malformed is a [`ConfigError`] that names the setting and where it came from;
//! nothing is silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::admission::ConnectionLimits;
use super::app::{
    AppConfig, Provider, DEFAULT_ACCESS_TOKEN_LIFETIME, DEFAULT_REFRESH_TOKEN_LIFETIME,
};
use super::auth::{Authenticator, KeyError, TokenSigner};
use super::ops::{LogFormat, LogLevel, Observability};
use super::realm::permissions::{RuleError, SyncPermissions};
use super::shared::{ServerConfig, SessionLimits};
use crate::protocol::Limits;

/// Largest configuration or key file read.
const MAX_FILE: u64 = 1 << 20;

/// Shortest HS256 secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// The `--help` text.
pub const HELP: &str = "\
tandem-server: the Tandem sync server

USAGE:
    tandem-server [OPTIONS]
    tandem-server admin <COMMAND> ...    (see ADMIN below)

Each option is a flag, an environment variable [in brackets] or a key in the TOML file given
with --config (file keys are the flag names with '_' for '-', e.g. data_dir = \"/srv/tandem\").
A flag wins over the environment, which wins over the file.

OPTIONS:
    --config <FILE>            TOML configuration file [TANDEM_CONFIG]
    --listen <ADDR>            address and port to listen on [TANDEM_LISTEN]
                               (default 0.0.0.0:7800)
    --data-dir <DIR>           where the server files live, one SQLite file per server
                               path [TANDEM_DATA_DIR] (default ./tandem-data)
    --database <URL>           keep the server files in PostgreSQL (postgres://user@host/db)
                               instead of the data directory, so that several server
                               processes can share them (docs/scaling.md; needs the cargo
                               feature postgres) [TANDEM_DATABASE] (default: embedded SQLite)
    --tls-cert <FILE>          TLS certificate chain, PEM [TANDEM_TLS_CERT]
    --tls-key <FILE>           TLS private key, PEM [TANDEM_TLS_KEY]
    --insecure-ws              serve plain ws:// without TLS; for local development only
                               [TANDEM_INSECURE_WS=true] (file: insecure_ws = true)
    --jwt-secret-file <FILE>   file holding the HS256 secret (at least 16 bytes) that signs
                               access tokens [TANDEM_JWT_SECRET_FILE]
    --jwt-public-key <FILE>    the token issuer's public key, PEM: RSA for RS256 tokens,
                               Ed25519 for EdDSA tokens [TANDEM_JWT_PUBLIC_KEY]
                               (give exactly one of --jwt-secret-file and --jwt-public-key)
    --idle-timeout <SECONDS>   end connections that send nothing (not even PING) for this
                               long [TANDEM_IDLE_TIMEOUT] (default 600)
    --max-body <BYTES>         largest message body accepted, compressed or inflated; also
                               the WebSocket frame and message limit (plus a 512-byte
                               header line) [TANDEM_MAX_BODY] (default 16777216)
    --max-connections <N>      most connections open at once; more are closed at accept
                               [TANDEM_MAX_CONNECTIONS] (default 20000)
    --max-unauthenticated <N>  most connections open at once without an authenticated
                               session (from accept to a verified token or the first
                               authenticated BIND) [TANDEM_MAX_UNAUTHENTICATED]
                               (default 2000)
    --max-sessions-per-connection <N>
                               most sessions bound at once on one connection; a BIND beyond
                               gets error 224 [TANDEM_MAX_SESSIONS_PER_CONNECTION]
                               (default 256)
    --handshake-timeout <SECONDS>
                               deadline from TCP accept to TLS done and the first HTTP
                               request read (the WebSocket upgrade) [TANDEM_HANDSHAKE_TIMEOUT]
                               (default 10)
    --max-ident-allocations-per-connection <N>
                               most client file idents one connection may have allocated;
                               beyond: error 104 [TANDEM_MAX_IDENT_ALLOCATIONS_PER_CONNECTION]
                               (default 16)
    --client-file-expiry <SECONDS>
                               delete client file idents allocated but never used by an
                               IDENT after this long [TANDEM_CLIENT_FILE_EXPIRY]
                               (default 604800, 7 days)
    --max-clock-skew <SECONDS> refuse uploaded changesets stamped further ahead of the
                               server's clock (error 101, try again) [TANDEM_MAX_CLOCK_SKEW]
                               (default 300)
    --disk-reserve <BYTES>     reserve file kept in the data directory and deleted on a full
                               disk so the server can recover [TANDEM_DISK_RESERVE]
                               (default 33554432; 0: none)
    --max-merge-window <N>     most changesets of other clients one uploaded changeset is
                               merged against; a client further behind gets 222 and resets
                               [TANDEM_MAX_MERGE_WINDOW] (default 10000)
    --file-idle-close <SECONDS>
                               close a server file no session has used for this long
                               [TANDEM_FILE_IDLE_CLOSE] (default 60)
    --history-horizon <DAYS>   expire client files not seen for this many days and compact
                               the history no live client needs, hourly
                               [TANDEM_HISTORY_HORIZON] (default: never)
    --bind-timeout <SECONDS>   close a connection that has bound no authenticated session
                               this long after its upgrade [TANDEM_BIND_TIMEOUT] (default 30)
    --send-timeout <SECONDS>   close a connection that does not take one message (at most
                               one download batch) within this time [TANDEM_SEND_TIMEOUT]
                               (default 60)
    --conn-bytes-per-second <BYTES>
                               bytes of messages one connection may send per second; more
                               are read later, never dropped (0: unlimited)
                               [TANDEM_CONN_BYTES_PER_SECOND] (default 67108864)
    --conn-messages-per-second <N>
                               the same for messages [TANDEM_CONN_MESSAGES_PER_SECOND]
                               (default 2000)
    --user-bytes-per-second <BYTES>
                               bytes all connections of one user (token subject) may send
                               per second [TANDEM_USER_BYTES_PER_SECOND] (default 134217728)
    --user-messages-per-second <N>
                               the same for messages [TANDEM_USER_MESSAGES_PER_SECOND]
                               (default 10000)
    --download-batch <BYTES>   largest DOWNLOAD body built at a time per connection, 1024 to
                               16777216 [TANDEM_DOWNLOAD_BATCH] (default 16777216)
    --log-format <text|json>   log lines on stderr: human-readable text or one JSON object
                               per line [TANDEM_LOG_FORMAT] (default text)
    --log-level <LEVEL>        error, warn, info, debug or trace [TANDEM_LOG_LEVEL]
                               (default info)
    --metrics-listen <ADDR>    serve /metrics (Prometheus, OpenMetrics text), /healthz and
                               /readyz over plain HTTP on this address, e.g.
                               127.0.0.1:9090 [TANDEM_METRICS_LISTEN] (default: off)
    -h, --help                 print this help

APP SERVICES (Realm SDK apps; see docs/app-services.md):
    --app-id <ID>              serve Realm's App Services API and sync endpoint for this app
                               id (1-128 of A-Z a-z 0-9 . _ -) [TANDEM_APP_ID]
    --auth-providers <LIST>    comma-separated login providers: anon-user, local-userpass,
                               custom-token, api-key [TANDEM_AUTH_PROVIDERS]
                               (default anon-user)
    --jwt-private-key <FILE>   PEM private key (RSA: RS256, Ed25519: EdDSA) that signs the
                               app's access and refresh tokens [TANDEM_JWT_PRIVATE_KEY];
                               without it --jwt-secret-file signs them (HS256). Its public
                               half also verifies Tandem tokens when neither
                               --jwt-secret-file nor --jwt-public-key is given
    --access-token-lifetime <SECONDS>
                               [TANDEM_ACCESS_TOKEN_LIFETIME] (default 1800)
    --refresh-token-lifetime <SECONDS>
                               [TANDEM_REFRESH_TOKEN_LIFETIME] (default 5184000, 60 days)
    --confirm-users <auto|manual>
                               local-userpass accounts are confirmed at registration (auto),
                               or with the token pair the server prints to its log (manual)
                               [TANDEM_CONFIRM_USERS] (default auto)
    --custom-token-secret-file <FILE>
                               HS256 secret (at least 16 bytes) of the issuer of custom-token
                               JWTs [TANDEM_CUSTOM_TOKEN_SECRET_FILE]
    --custom-token-public-key <FILE>
                               or that issuer's public key, PEM: RSA (RS256) or Ed25519
                               (EdDSA) [TANDEM_CUSTOM_TOKEN_PUBLIC_KEY]
    --public-url <URL>         the base URL clients use (https://sync.example.com), answered
                               by the location route; default: the request's Host header
                               [TANDEM_PUBLIC_URL]
    --sync-permissions <RULES> who may sync which Realm partition, comma-separated:
                               all-authenticated (every user, every partition; the
                               default, for development), user-id (the string partition
                               equal to the user's id), shared:<p1>|<p2> (these string
                               partitions, every user) [TANDEM_SYNC_PERMISSIONS]
    --flx-rules <FILE>         flexible sync permissions: per class, read and write filters
                               over the objects and the user, JSON (docs/flexible-sync.md)
                               [TANDEM_FLX_RULES] (default: all readable and writable)

ADMIN:
    tandem-server api-key create --name <NAME> [--data-dir <DIR>] [--app-id <ID>]
                               create a server API key (api-key provider) and print it once
    tandem-server api-key list [--data-dir <DIR>] [--app-id <ID>]
    tandem-server api-key delete <ID> [--data-dir <DIR>] [--app-id <ID>]
                               each also takes --config <FILE> (and TANDEM_DATA_DIR,
                               TANDEM_APP_ID), and --database <URL> [TANDEM_DATABASE]
                               for the App Services store in PostgreSQL instead of the
                               data directory (safe beside running servers); list and
                               delete need an existing store, create makes one only
                               with --app-id

    tandem-server admin <COMMAND> [--data-dir <DIR>] [--config <FILE>]
                               inspect and maintain server files (see docs/operations.md):
      files                    every server path: latest version, history, client files
      clients <PATH>           the path's client files: ident, last integrated client
                               version, last seen
      history <PATH> [--from <V>] [--to <V>]
                               the changesets, one instruction per line
      state <PATH>             the path's state as JSON
      backup <PATH>|--all <DEST-DIR>
                               online copy (SQLite backup API); safe while the server runs
      restore <BACKUP-FILE>... copy backups into the data directory; stop the server first.
                               Restored files get a new history salt: their clients reset
      compact <PATH> --horizon <SECONDS>
                               compact history older than this; client files not seen
                               since then expire (222)

TOKENS:
    --issue-token <PATHS>      print an access token for these comma-separated server paths
                               (\"*\" for all) and exit; signs with --jwt-secret-file or
                               --jwt-private-key
    --jwt-private-key <FILE>   PEM private key (RSA or Ed25519) for --issue-token (above)
    --token-hours <HOURS>      validity of --issue-token (default 24, at least 1)
    --token-subject <NAME>     the token's `sub` claim (default tandem-server)

Clients connect to wss://<host>:<port>/ and send the token in the Authorization header
(Bearer) or in BIND. Tokens are JWTs with `exp` (required) and `paths` claims; see
docs/protocol.md.";

/// What the command line asks for.
// `Serve` is large (the whole configuration); the value is built once per process.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Print [`HELP`].
    Help,
    /// Run the server.
    Serve(ServerConfig),
    /// Manage server API keys in `<data_dir>/app.sqlite` and exit.
    ApiKey {
        /// The data directory holding `app.sqlite`.
        data_dir: PathBuf,
        /// The app id, checked against the one the file was created for, if given.
        app_id: Option<String>,
        /// With `--database`: the App Services store is in this PostgreSQL database instead
        /// (`data_dir` is not used).
        database: Option<String>,
        /// What to do.
        action: ApiKeyAction,
    },
    /// Inspect or maintain the server files in `data_dir` and exit ([`super::admin`]).
    Admin {
        /// The data directory.
        data_dir: PathBuf,
        /// What to do.
        command: AdminCommand,
    },
    /// Print a token and exit.
    IssueToken {
        /// Signs the token.
        signer: TokenSigner,
        /// The `sub` claim.
        subject: String,
        /// Server paths the token allows.
        paths: Vec<String>,
        /// Validity from now.
        valid_for: Duration,
    },
}

/// `tandem-server api-key <action>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiKeyAction {
    /// `create --name <NAME>`: print a new key once.
    Create {
        /// The key's name (unique among server keys).
        name: String,
    },
    /// `list`: id, name and state of every server key.
    List,
    /// `delete <ID>`: remove a key and the user it logs in as.
    Delete {
        /// The key's id (24 hex digits).
        id: String,
    },
}

/// `tandem-server admin <command>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// `files`: every server file with its path, latest version, history size and number of
    /// client files.
    Files,
    /// `clients <PATH>`: the client files of a server path.
    Clients {
        /// The server path.
        path: String,
    },
    /// `history <PATH> [--from V] [--to V]`: the changesets with versions in `from..=to`.
    History {
        /// The server path.
        path: String,
        /// First version printed (default 1).
        from: Option<u64>,
        /// Last version printed (default the latest).
        to: Option<u64>,
    },
    /// `state <PATH>`: the state after the latest version, as JSON.
    State {
        /// The server path.
        path: String,
    },
    /// `backup <PATH>|--all <DEST-DIR>`: online copies into `dest`.
    Backup {
        /// The server path; `None` (`--all`): every server file and the App Services store.
        path: Option<String>,
        /// The directory receiving the copies (created if missing).
        dest: PathBuf,
    },
    /// `restore <BACKUP-FILE>...`: offline; copies each backup into the data directory.
    Restore {
        /// The backup files.
        files: Vec<PathBuf>,
    },
    /// `compact <PATH> --horizon <SECONDS>`: compacts the history older than `horizon`.
    Compact {
        /// The server path.
        path: String,
        /// Age of the oldest history kept as changesets; client files not seen for longer
        /// expire.
        horizon: Duration,
    },
}

/// Where a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The TOML file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::Env => f.write_str("environment"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag the server does not know.
    UnknownFlag(String),
    /// A flag that takes a value came last.
    MissingValue(String),
    /// A required setting is absent, or settings conflict.
    Missing(String),
    /// A setting's value is malformed.
    BadValue {
        /// The setting (file-key spelling).
        setting: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong and what would work.
        message: String,
    },
    /// The TOML file cannot be read or parsed, or has unknown keys.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnknownFlag(flag) => write!(f, "unknown option {flag}"),
            ConfigError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            ConfigError::Missing(what) => f.write_str(what),
            ConfigError::BadValue {
                setting,
                origin,
                message,
            } => write!(f, "{setting} ({origin}): {message}"),
            ConfigError::File { path, message } => write!(f, "{}: {message}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every setting, by file-key name: whether it is a boolean switch.
const SETTINGS: &[(&str, bool)] = &[
    ("config", false),
    ("listen", false),
    ("data_dir", false),
    ("database", false),
    ("tls_cert", false),
    ("tls_key", false),
    ("insecure_ws", true),
    ("jwt_secret_file", false),
    ("jwt_public_key", false),
    ("idle_timeout", false),
    ("max_body", false),
    ("max_connections", false),
    ("max_unauthenticated", false),
    ("max_sessions_per_connection", false),
    ("handshake_timeout", false),
    ("max_ident_allocations_per_connection", false),
    ("client_file_expiry", false),
    ("max_clock_skew", false),
    ("disk_reserve", false),
    ("max_merge_window", false),
    ("file_idle_close", false),
    ("history_horizon", false),
    ("bind_timeout", false),
    ("send_timeout", false),
    ("conn_bytes_per_second", false),
    ("conn_messages_per_second", false),
    ("user_bytes_per_second", false),
    ("user_messages_per_second", false),
    ("download_batch", false),
    ("issue_token", false),
    ("jwt_private_key", false),
    ("token_hours", false),
    ("token_subject", false),
    ("app_id", false),
    ("auth_providers", false),
    ("access_token_lifetime", false),
    ("refresh_token_lifetime", false),
    ("confirm_users", false),
    ("custom_token_secret_file", false),
    ("custom_token_public_key", false),
    ("public_url", false),
    ("sync_permissions", false),
    ("flx_rules", false),
    ("log_format", false),
    ("log_level", false),
    ("metrics_listen", false),
];

/// Settings that configure the App Services API and need `app_id`.
const APP_SETTINGS: &[&str] = &[
    "auth_providers",
    "access_token_lifetime",
    "refresh_token_lifetime",
    "confirm_users",
    "custom_token_secret_file",
    "custom_token_public_key",
    "public_url",
    "sync_permissions",
    "flx_rules",
];

/// Settings that only make sense on the command line (not in the file).
const COMMAND_ONLY: &[&str] = &["config", "issue_token", "token_hours", "token_subject"];

/// The raw value of each setting and its origin.
struct Raw(BTreeMap<&'static str, (String, Origin)>);

impl Raw {
    fn get(&self, key: &str) -> Option<&(String, Origin)> {
        self.0.get(key)
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            setting: key.to_owned(),
            origin: self
                .get(key)
                .map(|(_, o)| o.clone())
                .unwrap_or(Origin::Default),
            message: message.into(),
        }
    }

    fn number(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some((v, _)) => v
                .parse()
                .map_err(|_| self.bad(key, format!("expected a whole number, got {v:?}"))),
        }
    }

    fn switch(&self, key: &str) -> Result<bool, ConfigError> {
        match self.get(key).map(|(v, _)| v.as_str()) {
            None => Ok(false),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(self.bad(key, format!("expected true or false, got {v:?}"))),
        }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(|(v, _)| PathBuf::from(v))
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    Ok(bytes)
}

/// Reads the TOML file into `raw` (without overriding what flags or environment set).
fn merge_file(raw: &mut Raw, path: &Path) -> Result<(), ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let bytes = read_capped(path).map_err(file_error)?;
    let text = String::from_utf8(bytes).map_err(|_| file_error("not UTF-8".into()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    for (key, value) in table {
        let Some(&(name, is_switch)) = SETTINGS
            .iter()
            .find(|(name, _)| *name == key && !COMMAND_ONLY.contains(name))
        else {
            return Err(file_error(format!(
                "unknown key {key:?} (run tandem-server --help for the settings)"
            )));
        };
        let text = match (&value, is_switch) {
            (toml::Value::Boolean(b), true) => b.to_string(),
            (toml::Value::Integer(n), false) if *n >= 0 => n.to_string(),
            (toml::Value::String(s), false) => s.clone(),
            _ => {
                let expected = if is_switch {
                    "true or false"
                } else {
                    "a string or a non-negative number"
                };
                return Err(file_error(format!(
                    "{key} should be {expected}, not a {}",
                    value.type_str()
                )));
            }
        };
        raw.0
            .entry(name)
            .or_insert((text, Origin::File(path.to_owned())));
    }
    Ok(())
}

/// Parses the command line (`args` without the program name) and the environment (`env`
/// looks a variable up), reading the TOML file if one is named.
pub fn parse(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    if args.first().map(String::as_str) == Some("api-key") {
        return api_key(&args[1..], env);
    }
    if args.first().map(String::as_str) == Some("admin") {
        return admin(&args[1..], env);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let raw = collect(args, env)?;
    if let Some((paths, _)) = raw.get("issue_token") {
        return issue_token(&raw, paths);
    }
    serve(&raw).map(Command::Serve)
}

/// Flags, then the environment, then the TOML file, into one [`Raw`].
fn collect(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Raw, ConfigError> {
    let mut raw = Raw(BTreeMap::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let key = flag
            .strip_prefix("--")
            .map(|k| k.replace('-', "_"))
            .unwrap_or_default();
        let Some(&(name, is_switch)) = SETTINGS.iter().find(|(name, _)| *name == key) else {
            return Err(ConfigError::UnknownFlag(arg.clone()));
        };
        let value = match (inline, is_switch) {
            (Some(v), _) => v,
            (None, true) => "true".to_owned(),
            (None, false) => args
                .next()
                .cloned()
                .ok_or_else(|| ConfigError::MissingValue(flag.to_owned()))?,
        };
        raw.0.insert(name, (value, Origin::Flag));
    }
    for &(name, _) in SETTINGS {
        if let Some(value) = env(&format!("TANDEM_{}", name.to_ascii_uppercase())) {
            raw.0.entry(name).or_insert((value, Origin::Env));
        }
    }
    if let Some(config) = raw.path("config") {
        merge_file(&mut raw, &config)?;
    }
    Ok(raw)
}

/// `api-key create --name <NAME> | list | delete <ID>`, with `--data-dir`, `--app-id` and
/// `--config` (and their environment and file spellings).
fn api_key(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, ConfigError> {
    let usage = || {
        ConfigError::Missing(
            "usage: tandem-server api-key create --name <NAME> | list | delete <ID> \
             [--data-dir <DIR>] [--app-id <ID>]"
                .into(),
        )
    };
    let (action, rest) = args.split_first().ok_or_else(usage)?;
    let mut flags = Vec::new();
    let mut name = None;
    let mut positional = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        if arg == "--name" {
            let value = rest
                .next()
                .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?;
            name = Some(value.as_str());
        } else if let Some(value) = arg.strip_prefix("--name=") {
            name = Some(value);
        } else if arg.starts_with("--") {
            let takes_value = !arg.contains('=');
            flags.push(arg.clone());
            if takes_value {
                flags.push(
                    rest.next()
                        .cloned()
                        .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?,
                );
            }
        } else {
            positional.push(arg.as_str());
        }
    }
    let raw = collect(&flags, env)?;
    if let Some((key, _)) = raw.0.iter().find(|(key, (_, origin))| {
        *origin == Origin::Flag && !["config", "data_dir", "app_id", "database"].contains(key)
    }) {
        return Err(raw.bad(
            key,
            "api-key takes only --name, --data-dir, --app-id, --database and --config",
        ));
    }
    let action = match (action.as_str(), name, positional.as_slice()) {
        ("create", Some(name), []) => {
            crate::server::app::check_api_key_name(name).map_err(|e| ConfigError::BadValue {
                setting: "name".into(),
                origin: Origin::Flag,
                message: e,
            })?;
            ApiKeyAction::Create {
                name: name.to_owned(),
            }
        }
        ("list", None, []) => ApiKeyAction::List,
        ("delete", None, [id]) => ApiKeyAction::Delete {
            id: (*id).to_owned(),
        },
        _ => return Err(usage()),
    };
    Ok(Command::ApiKey {
        data_dir: data_dir(&raw),
        app_id: app_id(&raw)?,
        database: raw.get("database").map(|(v, _)| v.clone()),
        action,
    })
}

/// `admin <COMMAND> [ARGS]`, with `--data-dir` and `--config` (and their environment and file
/// spellings).
fn admin(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, ConfigError> {
    let usage = || {
        ConfigError::Missing(
            "usage: tandem-server admin files | clients <PATH> | history <PATH> [--from <V>] \
             [--to <V>] | state <PATH> | backup <PATH>|--all <DEST-DIR> | restore \
             <BACKUP-FILE>... | compact <PATH> --horizon <SECONDS>, each with [--data-dir <DIR>]"
                .into(),
        )
    };
    let (name, rest) = args.split_first().ok_or_else(usage)?;
    // The command's own options; everything else starting with `--` is a setting.
    let own: &[&str] = match name.as_str() {
        "history" => &["from", "to"],
        "backup" => &["all"],
        "compact" => &["horizon"],
        _ => &[],
    };
    let mut options: BTreeMap<&str, String> = BTreeMap::new();
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            positional.push(arg.as_str());
            continue;
        };
        let (key, inline) = match flag.split_once('=') {
            Some((key, value)) => (key, Some(value.to_owned())),
            None => (flag, None),
        };
        if let Some(&option) = own.iter().find(|o| **o == key) {
            let value = match (option, inline) {
                ("all", None) => String::new(),
                ("all", Some(_)) => return Err(usage()),
                (_, Some(value)) => value,
                (_, None) => rest
                    .next()
                    .cloned()
                    .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?,
            };
            options.insert(option, value);
            continue;
        }
        flags.push(arg.clone());
        if inline.is_none() {
            flags.push(
                rest.next()
                    .cloned()
                    .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?,
            );
        }
    }
    let raw = collect(&flags, env)?;
    if let Some((key, _)) = raw
        .0
        .iter()
        .find(|(key, (_, origin))| *origin == Origin::Flag && !["config", "data_dir"].contains(key))
    {
        return Err(raw.bad(
            key,
            "admin takes only its command's options, --data-dir and --config",
        ));
    }
    let number = |option: &str| -> Result<Option<u64>, ConfigError> {
        options
            .get(option)
            .map(|v| {
                v.parse().map_err(|_| ConfigError::BadValue {
                    setting: option.to_owned(),
                    origin: Origin::Flag,
                    message: format!("expected a whole number, got {v:?}"),
                })
            })
            .transpose()
    };
    let command =
        match (name.as_str(), positional.as_slice()) {
            ("files", []) => AdminCommand::Files,
            ("clients", [path]) => AdminCommand::Clients {
                path: (*path).to_owned(),
            },
            ("history", [path]) => AdminCommand::History {
                path: (*path).to_owned(),
                from: number("from")?,
                to: number("to")?,
            },
            ("state", [path]) => AdminCommand::State {
                path: (*path).to_owned(),
            },
            ("backup", [dest]) if options.contains_key("all") => AdminCommand::Backup {
                path: None,
                dest: PathBuf::from(dest),
            },
            ("backup", [path, dest]) if !options.contains_key("all") => AdminCommand::Backup {
                path: Some((*path).to_owned()),
                dest: PathBuf::from(dest),
            },
            ("restore", files) if !files.is_empty() => AdminCommand::Restore {
                files: files.iter().map(PathBuf::from).collect(),
            },
            ("compact", [path]) => AdminCommand::Compact {
                path: (*path).to_owned(),
                horizon: Duration::from_secs(number("horizon")?.ok_or_else(|| {
                    ConfigError::Missing("compact needs --horizon <SECONDS>".into())
                })?),
            },
            _ => return Err(usage()),
        };
    Ok(Command::Admin {
        data_dir: data_dir(&raw),
        command,
    })
}

fn data_dir(raw: &Raw) -> PathBuf {
    raw.path("data_dir").unwrap_or_else(|| "tandem-data".into())
}

fn app_id(raw: &Raw) -> Result<Option<String>, ConfigError> {
    match raw.get("app_id") {
        None => Ok(None),
        Some((id, _)) if crate::server::app::is_valid_app_id(id) => Ok(Some(id.clone())),
        Some((id, _)) => Err(raw.bad(
            "app_id",
            format!("{id:?}: use 1 to 128 characters of A-Z a-z 0-9 . _ - (it goes into URLs)"),
        )),
    }
}

fn issue_token(raw: &Raw, paths: &str) -> Result<Command, ConfigError> {
    let signer = match (raw.path("jwt_private_key"), raw.path("jwt_secret_file")) {
        (Some(key), None) => {
            let pem = read_capped(&key).map_err(|e| raw.bad("jwt_private_key", e))?;
            TokenSigner::from_private_key_pem(&pem)
                .map_err(|KeyError(e)| raw.bad("jwt_private_key", e))?
        }
        (None, Some(_)) => TokenSigner::hs256(&secret(raw)?),
        _ => {
            return Err(ConfigError::Missing(
                "--issue-token signs with exactly one of --jwt-secret-file and \
                 --jwt-private-key"
                    .into(),
            ))
        }
    };
    let hours = raw.number("token_hours", 24)?;
    if hours == 0 {
        // The token would be expired when printed.
        return Err(raw.bad("token_hours", "must be at least 1"));
    }
    let paths: Vec<String> = paths
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if paths.is_empty() {
        return Err(raw.bad("issue_token", "name at least one server path, or \"*\""));
    }
    Ok(Command::IssueToken {
        signer,
        subject: raw
            .get("token_subject")
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| "tandem-server".into()),
        paths,
        valid_for: Duration::from_secs(hours.saturating_mul(3600)),
    })
}

/// The secret in the file named by setting `key` (at least [`MIN_SECRET_LEN`] bytes, outer
/// whitespace trimmed).
fn secret_file(raw: &Raw, key: &str) -> Result<Vec<u8>, ConfigError> {
    let path = raw.path(key).unwrap_or_default();
    let bytes = read_capped(&path).map_err(|e| raw.bad(key, e))?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        return Err(raw.bad(
            key,
            format!("the secret must be at least {MIN_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret)
}

fn secret(raw: &Raw) -> Result<Vec<u8>, ConfigError> {
    secret_file(raw, "jwt_secret_file")
}

/// The public key in the PEM file named by setting `key`.
fn public_key(raw: &Raw, key: &str) -> Result<Option<Authenticator>, ConfigError> {
    let Some(path) = raw.path(key) else {
        return Ok(None);
    };
    let pem = read_capped(&path).map_err(|e| raw.bad(key, e))?;
    Authenticator::from_public_key_pem(&pem)
        .map(Some)
        .map_err(|KeyError(e)| raw.bad(key, e))
}

/// The Tandem token verifier and the signer of the App Services tokens (if a signing key is
/// given): see `--help` for which key does what.
fn keys(raw: &Raw) -> Result<(Authenticator, Option<TokenSigner>), ConfigError> {
    let secret = raw
        .get("jwt_secret_file")
        .map(|_| secret(raw))
        .transpose()?;
    let public = public_key(raw, "jwt_public_key")?;
    let private = match raw.path("jwt_private_key") {
        None => None,
        Some(path) => {
            let pem = read_capped(&path).map_err(|e| raw.bad("jwt_private_key", e))?;
            Some(
                TokenSigner::from_private_key_pem(&pem)
                    .map_err(|KeyError(e)| raw.bad("jwt_private_key", e))?,
            )
        }
    };
    let signer = match (&secret, private) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Missing(
                "give one of --jwt-secret-file and --jwt-private-key, not both".into(),
            ))
        }
        (Some(secret), None) => Some(TokenSigner::hs256(secret)),
        (None, private) => private,
    };
    let auth = match (secret, public, &signer) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::Missing(
                "give one of --jwt-secret-file and --jwt-public-key, not both".into(),
            ))
        }
        (Some(secret), None, _) => Authenticator::hs256(&secret),
        (None, Some(public), _) => public,
        (None, None, Some(signer)) => signer.authenticator(),
        (None, None, None) => {
            return Err(ConfigError::Missing(
                "tokens need a key: give --jwt-secret-file (HS256), --jwt-public-key \
                 (RS256 or EdDSA) or --jwt-private-key"
                    .into(),
            ))
        }
    };
    Ok((auth, signer))
}

/// Seconds in `key`, from 1 to ten years.
fn lifetime(raw: &Raw, key: &str, default: u64) -> Result<Duration, ConfigError> {
    let seconds = raw.number(key, default)?;
    if !(1..=10 * 365 * 24 * 3600).contains(&seconds) {
        return Err(raw.bad(key, "must be between 1 second and 10 years"));
    }
    Ok(Duration::from_secs(seconds))
}

/// `--public-url`: `http` or `https`, a host and optional port, no path, query or fragment
/// (realm-core appends its own paths to it, `realm-wire-compat.md` §1.3).
fn public_url(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let Some((url, _)) = raw.get("public_url") else {
        return Ok(None);
    };
    let trimmed = url.trim_end_matches('/');
    let host = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match host {
        Some(host)
            if !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                }) =>
        {
            Ok(Some(trimmed.to_owned()))
        }
        _ => Err(raw.bad(
            "public_url",
            format!("{url:?}: expected http(s)://host[:port] without a path"),
        )),
    }
}

/// The App Services settings, if `app_id` is set.
fn app(raw: &Raw, signer: Option<TokenSigner>) -> Result<Option<AppConfig>, ConfigError> {
    let Some(app_id) = app_id(raw)? else {
        if let Some(key) = APP_SETTINGS.iter().find(|k| raw.get(k).is_some()) {
            return Err(raw.bad(key, "needs --app-id (the App Services API is off)"));
        }
        return Ok(None);
    };
    let signer = signer.ok_or_else(|| {
        ConfigError::Missing(
            "--app-id needs --jwt-secret-file or --jwt-private-key to sign its tokens".into(),
        )
    })?;
    let mut config = AppConfig::new(&app_id, signer);
    if let Some((list, _)) = raw.get("auth_providers") {
        let mut providers = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let provider = Provider::from_name(name).ok_or_else(|| {
                let known: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
                raw.bad(
                    "auth_providers",
                    format!("unknown provider {name:?}; known: {}", known.join(", ")),
                )
            })?;
            if !providers.contains(&provider) {
                providers.push(provider);
            }
        }
        if providers.is_empty() {
            return Err(raw.bad("auth_providers", "name at least one provider"));
        }
        config.providers = providers;
    }
    config.access_token_lifetime =
        lifetime(raw, "access_token_lifetime", DEFAULT_ACCESS_TOKEN_LIFETIME)?;
    config.refresh_token_lifetime = lifetime(
        raw,
        "refresh_token_lifetime",
        DEFAULT_REFRESH_TOKEN_LIFETIME,
    )?;
    config.auto_confirm = match raw.get("confirm_users").map(|(v, _)| v.as_str()) {
        None | Some("auto") => true,
        Some("manual") => false,
        Some(other) => {
            return Err(raw.bad(
                "confirm_users",
                format!("expected auto or manual, got {other:?}"),
            ))
        }
    };
    let custom_secret = raw.get("custom_token_secret_file").is_some();
    let custom_public = public_key(raw, "custom_token_public_key")?;
    config.custom_token_key =
        match (custom_secret, custom_public) {
            (true, Some(_)) => return Err(ConfigError::Missing(
                "give one of --custom-token-secret-file and --custom-token-public-key, not both"
                    .into(),
            )),
            (true, None) => Some(Authenticator::hs256(&secret_file(
                raw,
                "custom_token_secret_file",
            )?)),
            (false, public) => public,
        };
    let custom_enabled = config.providers.contains(&Provider::CustomToken);
    if custom_enabled && config.custom_token_key.is_none() {
        return Err(ConfigError::Missing(
            "custom-token needs --custom-token-secret-file or --custom-token-public-key".into(),
        ));
    }
    if !custom_enabled && config.custom_token_key.is_some() {
        let key = if custom_secret {
            "custom_token_secret_file"
        } else {
            "custom_token_public_key"
        };
        return Err(raw.bad(key, "needs custom-token in --auth-providers"));
    }
    config.public_url = public_url(raw)?;
    config.sync_permissions = match raw.get("sync_permissions") {
        None => SyncPermissions::default(),
        Some((rules, _)) => rules
            .parse()
            .map_err(|RuleError(e)| raw.bad("sync_permissions", e))?,
    };
    config.flx_rules = match raw.get("flx_rules") {
        None => Default::default(),
        Some((path, _)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| raw.bad("flx_rules", format!("cannot read {path}: {e}")))?;
            super::realm::rules::FlxRules::from_json(&text)
                .map_err(|e| raw.bad("flx_rules", format!("{path}: {e}")))?
        }
    };
    Ok(Some(config))
}

/// `--disk-reserve`, `--max-merge-window`, `--file-idle-close`, `--history-horizon`.
fn storage(raw: &Raw) -> Result<super::file::StorageConfig, ConfigError> {
    let defaults = super::file::StorageConfig::default();
    let disk_reserve = raw.number("disk_reserve", defaults.disk_reserve)?;
    if disk_reserve > 1 << 40 {
        return Err(raw.bad("disk_reserve", "must be at most 1099511627776 bytes"));
    }
    let max_merge_window = raw.number("max_merge_window", defaults.max_merge_window)?;
    if max_merge_window == 0 {
        return Err(raw.bad("max_merge_window", "must be at least 1 changeset"));
    }
    let idle = raw.number("file_idle_close", defaults.file_idle_close.as_secs())?;
    if idle == 0 {
        return Err(raw.bad("file_idle_close", "must be at least 1 second"));
    }
    let horizon = match raw.get("history_horizon") {
        None => None,
        Some(_) => {
            let days = raw.number("history_horizon", 0)?;
            if !(1..=36500).contains(&days) {
                return Err(raw.bad("history_horizon", "must be between 1 and 36500 days"));
            }
            Some(Duration::from_secs(days * 86_400))
        }
    };
    Ok(super::file::StorageConfig {
        disk_reserve,
        max_merge_window,
        file_idle_close: Duration::from_secs(idle),
        history_horizon: horizon,
    })
}

fn serve(raw: &Raw) -> Result<ServerConfig, ConfigError> {
    let (auth, signer) = keys(raw)?;
    let app = app(raw, signer)?;
    let listen: SocketAddr = match raw.get("listen") {
        None => SocketAddr::from(([0, 0, 0, 0], 7800)),
        Some((v, _)) => v.parse().map_err(|_| {
            raw.bad(
                "listen",
                format!("expected an address like 0.0.0.0:7800, got {v:?}"),
            )
        })?,
    };
    let insecure = raw.switch("insecure_ws")?;
    let tls = match (raw.path("tls_cert"), raw.path("tls_key")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) if insecure => None,
        _ => {
            return Err(ConfigError::Missing(
                "give --tls-cert and --tls-key (or --insecure-ws for local development)".into(),
            ))
        }
    };
    let idle = raw.number("idle_timeout", 600)?;
    if idle == 0 {
        return Err(raw.bad("idle_timeout", "must be at least 1 second"));
    }
    let defaults = Limits::default();
    let max_body = raw.number("max_body", defaults.max_body as u64)?;
    if !(1024..=(1 << 30)).contains(&max_body) {
        return Err(raw.bad("max_body", "must be between 1024 and 1073741824 bytes"));
    }
    let storage = storage(raw)?;
    let sessions = session_limits(raw)?;
    Ok(ServerConfig {
        storage,
        listen,
        data_dir: data_dir(raw),
        database: raw.get("database").map(|(v, _)| v.clone()),
        tls,
        allow_plain_ws: insecure,
        auth,
        idle_timeout: Duration::from_secs(idle),
        limits: Limits {
            max_body: max_body as usize,
            ..defaults
        },
        connection_limits: connection_limits(raw)?,
        app,
        sessions,
        observability: observability(raw)?,
    })
}

/// The session loop's deadlines and rate limits (`--bind-timeout`, `--send-timeout`, the
/// per-connection and per-user rates; 0 is unlimited for a rate, refused for a timeout).
fn session_limits(raw: &Raw) -> Result<SessionLimits, ConfigError> {
    let defaults = SessionLimits::default();
    let download_batch = raw.number("download_batch", defaults.download_batch as u64)?;
    if !(1024..=defaults.download_batch as u64).contains(&download_batch) {
        return Err(raw.bad(
            "download_batch",
            format!("must be between 1024 and {} bytes", defaults.download_batch),
        ));
    }
    let download_batch = download_batch as usize;
    let seconds = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        match raw.number(key, default.as_secs())? {
            0 => Err(raw.bad(key, "must be at least 1 second")),
            n => Ok(Duration::from_secs(n)),
        }
    };
    Ok(SessionLimits {
        bind_timeout: seconds("bind_timeout", defaults.bind_timeout)?,
        send_timeout: seconds("send_timeout", defaults.send_timeout)?,
        connection_bytes_per_second: raw.number(
            "conn_bytes_per_second",
            defaults.connection_bytes_per_second,
        )?,
        connection_messages_per_second: raw.number(
            "conn_messages_per_second",
            defaults.connection_messages_per_second,
        )?,
        user_bytes_per_second: raw
            .number("user_bytes_per_second", defaults.user_bytes_per_second)?,
        user_messages_per_second: raw.number(
            "user_messages_per_second",
            defaults.user_messages_per_second,
        )?,
        download_batch,
    })
}

/// `--log-format`, `--log-level` and `--metrics-listen`.
fn observability(raw: &Raw) -> Result<Observability, ConfigError> {
    let log_format = match raw.get("log_format").map(|(v, _)| v.as_str()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(v) => return Err(raw.bad("log_format", format!("expected text or json, got {v:?}"))),
    };
    let log_level = match raw.get("log_level") {
        None => LogLevel::Info,
        Some((v, _)) => LogLevel::from_name(v).ok_or_else(|| {
            raw.bad(
                "log_level",
                format!("expected error, warn, info, debug or trace, got {v:?}"),
            )
        })?,
    };
    let metrics_listen = match raw.get("metrics_listen") {
        None => None,
        Some((v, _)) => Some(v.parse().map_err(|_| {
            raw.bad(
                "metrics_listen",
                format!("expected an address like 127.0.0.1:9090, got {v:?}"),
            )
        })?),
    };
    Ok(Observability {
        metrics_listen,
        log_format,
        log_level,
    })
}

/// The connection, session and client-file caps, the handshake deadline and the clock skew.
fn connection_limits(raw: &Raw) -> Result<ConnectionLimits, ConfigError> {
    let d = ConnectionLimits::default();
    let at_least_one = |key: &str, default: u64| -> Result<u64, ConfigError> {
        match raw.number(key, default)? {
            0 => Err(raw.bad(key, "must be at least 1")),
            n => Ok(n),
        }
    };
    let count = |key: &str, default: usize| -> Result<usize, ConfigError> {
        at_least_one(key, default as u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    let seconds = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        at_least_one(key, default.as_secs()).map(Duration::from_secs)
    };
    let allocations = at_least_one(
        "max_ident_allocations_per_connection",
        u64::from(d.max_ident_allocations_per_connection),
    )?;
    Ok(ConnectionLimits {
        max_connections: count("max_connections", d.max_connections)?,
        max_unauthenticated: count("max_unauthenticated", d.max_unauthenticated)?,
        max_sessions_per_connection: count(
            "max_sessions_per_connection",
            d.max_sessions_per_connection,
        )?,
        handshake_timeout: seconds("handshake_timeout", d.handshake_timeout)?,
        max_ident_allocations_per_connection: u32::try_from(allocations).unwrap_or(u32::MAX),
        client_file_expiry: seconds("client_file_expiry", d.client_file_expiry)?,
        max_clock_skew: seconds("max_clock_skew", d.max_clock_skew)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// A scratch directory for configuration files, removed on drop.
    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = tempfile::Builder::new()
                .prefix(&format!("tandem-config-{name}-"))
                .tempdir()
                .unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    fn serve_config(result: Result<Command, ConfigError>) -> ServerConfig {
        match result {
            Ok(Command::Serve(config)) => config,
            Ok(_) => panic!("expected a server configuration"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let dir = Dir::new("precedence");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let file = dir.write(
            "tandem.toml",
            &format!(
                "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\nidle_timeout = 30\n\
                 insecure_ws = true\njwt_secret_file = \"{secret}\"\nmax_body = 4096\n"
            ),
        );
        let env = |name: &str| match name {
            "TANDEM_CONFIG" => Some(file.clone()),
            "TANDEM_DATA_DIR" => Some("/from/env".to_owned()),
            "TANDEM_IDLE_TIMEOUT" => Some("45".to_owned()),
            _ => None,
        };
        let config = serve_config(parse(&args(&["--idle-timeout=90"]), env));
        assert_eq!(config.listen, "127.0.0.1:1111".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.idle_timeout, Duration::from_secs(90));
        assert!(config.allow_plain_ws && config.tls.is_none());
        assert_eq!(config.limits.max_body, 4096);

        let config = serve_config(parse(
            &args(&["--insecure-ws", "--jwt-secret-file", &secret]),
            no_env,
        ));
        assert_eq!(config.listen, "0.0.0.0:7800".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("tandem-data"));
        assert_eq!(config.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.sessions, SessionLimits::default());
    }

    #[test]
    fn session_limits_from_flags_environment_and_file() {
        let dir = Dir::new("sessions");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let file = dir.write(
            "tandem.toml",
            "bind_timeout = 7\nuser_messages_per_second = 0\ndownload_batch = 65536\n",
        );
        let env = |name: &str| match name {
            "TANDEM_CONFIG" => Some(file.clone()),
            "TANDEM_SEND_TIMEOUT" => Some("9".to_owned()),
            _ => None,
        };
        let config = serve_config(parse(
            &args(&[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--conn-messages-per-second=5",
            ]),
            env,
        ));
        let s = config.sessions;
        assert_eq!(s.bind_timeout, Duration::from_secs(7));
        assert_eq!(s.send_timeout, Duration::from_secs(9));
        assert_eq!(s.connection_messages_per_second, 5);
        assert_eq!(s.user_messages_per_second, 0, "0: unlimited");
        assert_eq!(s.download_batch, 65536);
        assert_eq!(
            s.user_bytes_per_second,
            SessionLimits::default().user_bytes_per_second
        );
        let zero = parse(
            &args(&[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--bind-timeout=0",
            ]),
            |_| None,
        );
        assert!(
            matches!(&zero, Err(e) if e.to_string().contains("bind_timeout") && e.to_string().contains("at least 1 second")),
            "{}",
            zero.err().map(|e| e.to_string()).unwrap_or_default()
        );
    }

    #[test]
    fn connection_limits_from_flags_environment_and_file() {
        let dir = Dir::new("connection-limits");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let file = dir.write(
            "tandem.toml",
            &format!(
                "insecure_ws = true\njwt_secret_file = \"{secret}\"\nmax_connections = 50\n\
                 max_clock_skew = 60\nclient_file_expiry = 3600\n"
            ),
        );
        let env = |name: &str| match name {
            "TANDEM_CONFIG" => Some(file.clone()),
            "TANDEM_MAX_UNAUTHENTICATED" => Some("7".to_owned()),
            "TANDEM_MAX_CONNECTIONS" => Some("60".to_owned()),
            _ => None,
        };
        let config = serve_config(parse(
            &args(&[
                "--max-connections=70",
                "--max-sessions-per-connection",
                "3",
                "--handshake-timeout=2",
                "--max-ident-allocations-per-connection=4",
            ]),
            env,
        ));
        assert_eq!(
            config.connection_limits,
            ConnectionLimits {
                max_connections: 70,
                max_unauthenticated: 7,
                max_sessions_per_connection: 3,
                handshake_timeout: Duration::from_secs(2),
                max_ident_allocations_per_connection: 4,
                client_file_expiry: Duration::from_secs(3600),
                max_clock_skew: Duration::from_secs(60),
            }
        );
        let defaults = serve_config(parse(
            &args(&["--insecure-ws", "--jwt-secret-file", &secret]),
            no_env,
        ));
        assert_eq!(defaults.connection_limits, ConnectionLimits::default());
        for flag in [
            "--max-connections=0",
            "--max-unauthenticated=0",
            "--max-sessions-per-connection=0",
            "--handshake-timeout=0",
            "--max-ident-allocations-per-connection=0",
            "--client-file-expiry=0",
            "--max-clock-skew=0",
        ] {
            let Err(e) = parse(
                &args(&["--insecure-ws", "--jwt-secret-file", &secret, flag]),
                no_env,
            ) else {
                panic!("{flag} was accepted");
            };
            assert!(e.to_string().ends_with("must be at least 1"), "{flag}: {e}");
        }
        let Err(e) = parse(
            &args(&[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--max-clock-skew=soon",
            ]),
            no_env,
        ) else {
            panic!("a bad number was accepted");
        };
        assert_eq!(
            e.to_string(),
            "max_clock_skew (command line): expected a whole number, got \"soon\""
        );
    }

    #[test]
    fn storage_settings() {
        let dir = Dir::new("storage");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let base = ["--insecure-ws", "--jwt-secret-file", &secret];
        let config = serve_config(parse(&args(&base), no_env));
        assert_eq!(config.storage, crate::server::StorageConfig::default());
        assert_eq!(config.storage.disk_reserve, 32 << 20);
        assert_eq!(config.storage.max_merge_window, 10_000);
        assert_eq!(config.storage.file_idle_close, Duration::from_secs(60));
        assert_eq!(config.storage.history_horizon, None);
        let file = dir.write("t.toml", "disk_reserve = 1048576\nhistory_horizon = 30\n");
        let env = |name: &str| match name {
            "TANDEM_CONFIG" => Some(file.clone()),
            "TANDEM_MAX_MERGE_WINDOW" => Some("500".to_owned()),
            _ => None,
        };
        let mut list = base.to_vec();
        list.push("--file-idle-close=5");
        let config = serve_config(parse(&args(&list), env));
        assert_eq!(config.storage.disk_reserve, 1 << 20);
        assert_eq!(config.storage.max_merge_window, 500);
        assert_eq!(config.storage.file_idle_close, Duration::from_secs(5));
        assert_eq!(
            config.storage.history_horizon,
            Some(Duration::from_secs(30 * 86_400))
        );
        for (flag, why) in [
            (
                "--max-merge-window=0",
                "max_merge_window (command line): must be at least 1 changeset",
            ),
            (
                "--file-idle-close=0",
                "file_idle_close (command line): must be at least 1 second",
            ),
            (
                "--history-horizon=0",
                "history_horizon (command line): must be between 1 and 36500 days",
            ),
            (
                "--disk-reserve=lots",
                "disk_reserve (command line): expected a whole number, got \"lots\"",
            ),
        ] {
            let mut list = base.to_vec();
            list.push(flag);
            match parse(&args(&list), no_env) {
                Err(e) => assert_eq!(e.to_string(), why),
                Ok(_) => panic!("{flag} was accepted"),
            }
        }
    }

    #[test]
    fn public_keys_choose_the_algorithm() {
        let root = env!("CARGO_MANIFEST_DIR");
        for (file, algorithm) in [
            ("rsa-public.pem", super::super::Algorithm::Rs256),
            ("ed25519-public.pem", super::super::Algorithm::EdDsa),
        ] {
            let key = format!("{root}/tests/keys/{file}");
            let config = serve_config(parse(
                &args(&["--insecure-ws", "--jwt-public-key", &key]),
                no_env,
            ));
            assert_eq!(config.auth.algorithm(), algorithm);
        }
    }

    #[test]
    fn issue_token_signs_with_the_private_key() {
        let key = format!(
            "{}/tests/keys/ed25519-private.pem",
            env!("CARGO_MANIFEST_DIR")
        );
        let command = parse(
            &args(&[
                "--issue-token",
                "/a, /b",
                "--jwt-private-key",
                &key,
                "--token-hours",
                "2",
            ]),
            no_env,
        )
        .unwrap();
        let Command::IssueToken {
            signer,
            paths,
            valid_for,
            subject,
        } = command
        else {
            panic!("expected IssueToken");
        };
        assert_eq!(signer.algorithm(), super::super::Algorithm::EdDsa);
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(valid_for, Duration::from_secs(7200));
        assert_eq!(subject, "tandem-server");
        // A token valid for no time would be expired when printed.
        let zero = parse(
            &args(&[
                "--issue-token",
                "/a",
                "--jwt-private-key",
                &key,
                "--token-hours",
                "0",
            ]),
            no_env,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            zero.contains("token_hours") && zero.contains("at least 1"),
            "{zero}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let dir = Dir::new("mistakes");
        let secret = dir.write("secret", "0123456789abcdef0123");
        let short = dir.write("short", "abc");
        let expect = |list: &[&str], env: &dyn Fn(&str) -> Option<String>, needle: &str| {
            let err = parse(&args(list), env).err().expect("an error");
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        };
        expect(&["--bogus"], &no_env, "unknown option --bogus");
        expect(&["--listen"], &no_env, "--listen needs a value");
        expect(&["--insecure-ws"], &no_env, "tokens need a key");
        expect(
            &["--jwt-secret-file", &secret],
            &no_env,
            "--tls-cert and --tls-key",
        );
        expect(
            &["--insecure-ws", "--jwt-secret-file", &short],
            &no_env,
            "at least 16 bytes",
        );
        expect(
            &[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--listen",
                "nowhere",
            ],
            &no_env,
            "listen (command line): expected an address",
        );
        expect(
            &["--insecure-ws", "--jwt-secret-file", &secret],
            &|n: &str| (n == "TANDEM_IDLE_TIMEOUT").then(|| "soon".to_owned()),
            "idle_timeout (environment): expected a whole number",
        );
        expect(
            &["--insecure-ws=maybe", "--jwt-secret-file", &secret],
            &no_env,
            "expected true or false",
        );
        expect(
            &["--insecure-ws", "--jwt-secret-file", "/no/such/file"],
            &no_env,
            "jwt_secret_file (command line)",
        );
        let files = [
            ("unknown.toml", "listne = \"x\"\n", "unknown key \"listne\""),
            ("syntax.toml", "listen = \n", "TOML parse error"),
            (
                "type.toml",
                "idle_timeout = \"ten\"\n",
                "expected a whole number",
            ),
            (
                "bool.toml",
                "insecure_ws = \"yes\"\n",
                "insecure_ws should be true or false",
            ),
            (
                "negative.toml",
                "idle_timeout = -5\n",
                "a string or a non-negative number",
            ),
            (
                "command.toml",
                "issue_token = \"*\"\n",
                "unknown key \"issue_token\"",
            ),
        ];
        for (name, text, needle) in files {
            let file = dir.write(name, text);
            let env = |n: &str| (n == "TANDEM_JWT_SECRET_FILE").then(|| secret.clone());
            expect(&["--insecure-ws", "--config", &file], &env, needle);
        }
        expect(&["--config", "/no/such.toml"], &no_env, "/no/such.toml");
    }

    fn key_file(name: &str) -> String {
        format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn app_config(list: &[&str], env: &dyn Fn(&str) -> Option<String>) -> AppConfig {
        serve_config(parse(&args(list), env))
            .app
            .expect("the App Services API is on")
    }

    #[test]
    fn app_settings_fill_the_app_config() {
        let dir = Dir::new("app");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let config = app_config(
            &[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--app-id",
                "my-app.v1_x",
                "--auth-providers",
                " anon-user, local-userpass,api-key,anon-user",
                "--access-token-lifetime",
                "10",
                "--refresh-token-lifetime=3600",
                "--confirm-users",
                "manual",
                "--public-url",
                "https://sync.example.com:8443/",
            ],
            &no_env,
        );
        assert_eq!(config.app_id, "my-app.v1_x");
        assert_eq!(
            config.providers,
            [
                Provider::Anonymous,
                Provider::UserPassword,
                Provider::ApiKey
            ]
        );
        assert_eq!(config.access_token_lifetime, Duration::from_secs(10));
        assert_eq!(config.refresh_token_lifetime, Duration::from_secs(3600));
        assert!(!config.auto_confirm);
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://sync.example.com:8443")
        );
        assert!(config.custom_token_key.is_none());
        // The app signs with the HS256 secret and verifies its own tokens.
        let token = config
            .signer
            .sign_claims(&serde_json::json!({"exp": 4_000_000_000u64}))
            .unwrap();
        assert!(config.verifier.verify_jwt_at(&token, 1).is_ok());

        // Defaults, and the environment and file spellings.
        let file = dir.write(
            "app.toml",
            &format!(
                "app_id = \"from-file\"\njwt_secret_file = \"{secret}\"\ninsecure_ws = true\n"
            ),
        );
        let config = app_config(&["--config", &file], &no_env);
        assert_eq!(config.app_id, "from-file");
        assert_eq!(config.providers, [Provider::Anonymous]);
        assert_eq!(config.access_token_lifetime, Duration::from_secs(1800));
        assert_eq!(
            config.refresh_token_lifetime,
            Duration::from_secs(5_184_000)
        );
        assert!(config.auto_confirm && config.public_url.is_none());
        let env = |name: &str| match name {
            "TANDEM_APP_ID" => Some("from-env".to_owned()),
            "TANDEM_AUTH_PROVIDERS" => Some("local-userpass".to_owned()),
            "TANDEM_CONFIRM_USERS" => Some("auto".to_owned()),
            _ => None,
        };
        let config = app_config(&["--config", &file], &env);
        assert_eq!(config.app_id, "from-env");
        assert_eq!(config.providers, [Provider::UserPassword]);
        // Without --app-id the API is off.
        let plain = serve_config(parse(
            &args(&["--insecure-ws", "--jwt-secret-file", &secret]),
            no_env,
        ));
        assert!(plain.app.is_none());
    }

    #[test]
    fn a_private_key_signs_app_tokens_and_its_public_half_verifies() {
        for (file, algorithm) in [
            ("ed25519-private.pem", super::super::Algorithm::EdDsa),
            ("rsa-private.pem", super::super::Algorithm::Rs256),
        ] {
            let config = serve_config(parse(
                &args(&[
                    "--insecure-ws",
                    "--app-id",
                    "a",
                    "--jwt-private-key",
                    &key_file(file),
                ]),
                no_env,
            ));
            let app = config.app.unwrap();
            assert_eq!(app.signer.algorithm(), algorithm);
            assert_eq!(config.auth.algorithm(), algorithm);
            let token = app.signer.sign("u", 4_000_000_000, &["*"]).unwrap();
            assert!(app.verifier.verify_at(&token, 1).is_ok());
            assert!(config.auth.verify_at(&token, 1).is_ok(), "Tandem side too");
        }
        // With --jwt-public-key too, Tandem tokens use that key and the app its private key.
        let config = serve_config(parse(
            &args(&[
                "--insecure-ws",
                "--app-id",
                "a",
                "--jwt-private-key",
                &key_file("ed25519-private.pem"),
                "--jwt-public-key",
                &key_file("rsa-public.pem"),
            ]),
            no_env,
        ));
        assert_eq!(config.auth.algorithm(), super::super::Algorithm::Rs256);
        assert_eq!(
            config.app.unwrap().signer.algorithm(),
            super::super::Algorithm::EdDsa
        );
    }

    #[test]
    fn custom_token_keys() {
        let dir = Dir::new("custom");
        let secret = dir.write("secret", "0123456789abcdef0123");
        let issuer = dir.write("issuer", "issuer secret of 24 bytes");
        let base = [
            "--insecure-ws",
            "--jwt-secret-file",
            &secret,
            "--app-id",
            "a",
        ];
        let with = |extra: &[&str]| {
            let mut list = base.to_vec();
            list.extend_from_slice(extra);
            app_config(&list, &no_env)
        };
        let app = with(&[
            "--auth-providers",
            "custom-token",
            "--custom-token-secret-file",
            &issuer,
        ]);
        let key = app.custom_token_key.unwrap();
        assert_eq!(key.algorithm(), super::super::Algorithm::Hs256);
        let token = TokenSigner::hs256(b"issuer secret of 24 bytes")
            .sign("ext", 4_000_000_000, &[])
            .unwrap();
        assert!(key.verify_jwt_at(&token, 1).is_ok());
        let rsa_public = key_file("rsa-public.pem");
        let app = with(&[
            "--auth-providers",
            "custom-token,anon-user",
            "--custom-token-public-key",
            &rsa_public,
        ]);
        assert_eq!(
            app.custom_token_key.unwrap().algorithm(),
            super::super::Algorithm::Rs256
        );
    }

    #[test]
    fn app_mistakes_are_named() {
        let dir = Dir::new("app-mistakes");
        let secret = dir.write("secret", "0123456789abcdef0123");
        let short = dir.write("short", "abc");
        let expect = |extra: &[&str], needle: &str| {
            let mut list = vec!["--insecure-ws", "--jwt-secret-file", &secret];
            list.extend_from_slice(extra);
            let err = parse(&args(&list), no_env).err().expect("an error");
            assert!(
                err.to_string().contains(needle),
                "{extra:?}: {err} should mention {needle}"
            );
        };
        expect(&["--app-id", "a/b"], "app_id (command line)");
        expect(&["--app-id", ""], "app_id (command line)");
        expect(&["--app-id", ".."], "app_id (command line)");
        expect(
            &[
                "--app-id",
                "a",
                "--auth-providers",
                "anon-user,oauth2-google",
            ],
            "auth_providers (command line): unknown provider \"oauth2-google\"",
        );
        expect(
            &["--app-id", "a", "--auth-providers", " , "],
            "auth_providers (command line): name at least one",
        );
        expect(
            &["--app-id", "a", "--access-token-lifetime", "0"],
            "access_token_lifetime (command line): must be between",
        );
        expect(
            &["--app-id", "a", "--refresh-token-lifetime", "soon"],
            "refresh_token_lifetime (command line): expected a whole number",
        );
        expect(
            &["--app-id", "a", "--confirm-users", "sometimes"],
            "confirm_users (command line): expected auto or manual",
        );
        for url in [
            "ftp://h",
            "https://h/path",
            "https://",
            "sync.example.com",
            "https://h?x=1",
        ] {
            expect(
                &["--app-id", "a", "--public-url", url],
                "public_url (command line)",
            );
        }
        expect(
            &["--app-id", "a", "--auth-providers", "custom-token"],
            "custom-token needs --custom-token-secret-file",
        );
        expect(
            &["--app-id", "a", "--custom-token-secret-file", &secret],
            "custom_token_secret_file (command line): needs custom-token",
        );
        let public = key_file("rsa-public.pem");
        expect(
            &[
                "--app-id",
                "a",
                "--auth-providers",
                "custom-token",
                "--custom-token-secret-file",
                &secret,
                "--custom-token-public-key",
                &public,
            ],
            "not both",
        );
        expect(
            &[
                "--app-id",
                "a",
                "--auth-providers",
                "custom-token",
                "--custom-token-secret-file",
                &short,
            ],
            "custom_token_secret_file (command line): the secret must be at least 16 bytes",
        );
        expect(
            &["--auth-providers", "anon-user"],
            "auth_providers (command line): needs --app-id",
        );
        expect(
            &["--public-url", "https://h"],
            "public_url (command line): needs --app-id",
        );
        expect(
            &["--jwt-private-key", &key_file("ed25519-private.pem")],
            "--jwt-secret-file and --jwt-private-key, not both",
        );
        expect(
            &["--jwt-private-key", &public],
            "jwt_private_key (command line): private key",
        );
        // An app with only a public key cannot sign its tokens.
        let err = parse(
            &args(&[
                "--insecure-ws",
                "--jwt-public-key",
                &public,
                "--app-id",
                "a",
            ]),
            no_env,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--app-id needs"), "{err}");
        let file = dir.write("bad.toml", "auth_providers = 5\n");
        let err = parse(
            &args(&[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--config",
                &file,
                "--app-id",
                "a",
            ]),
            no_env,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("auth_providers (")
                && err.to_string().contains("unknown provider \"5\""),
            "{err}"
        );
    }

    #[test]
    fn api_key_commands() {
        let parsed = |list: &[&str]| parse(&args(list), no_env);
        let Ok(Command::ApiKey {
            data_dir,
            app_id,
            action,
            ..
        }) = parsed(&[
            "api-key",
            "create",
            "--name",
            "backend",
            "--data-dir",
            "/srv/t",
            "--app-id",
            "a",
        ])
        else {
            panic!("expected ApiKey");
        };
        assert_eq!(data_dir, PathBuf::from("/srv/t"));
        assert_eq!(app_id.as_deref(), Some("a"));
        assert_eq!(
            action,
            ApiKeyAction::Create {
                name: "backend".into()
            }
        );
        let Ok(Command::ApiKey {
            data_dir,
            app_id,
            database,
            action,
        }) = parse(&args(&["api-key", "list"]), |n: &str| {
            (n == "TANDEM_DATA_DIR").then(|| "/from/env".to_owned())
        })
        else {
            panic!("expected ApiKey");
        };
        assert_eq!(
            (data_dir, app_id, database, action),
            (PathBuf::from("/from/env"), None, None, ApiKeyAction::List)
        );
        // The store in PostgreSQL instead of the data directory.
        let Ok(Command::ApiKey { database, .. }) = parse(
            &args(&["api-key", "list", "--database", "postgres://db/tandem"]),
            |_: &str| None,
        ) else {
            panic!("expected ApiKey");
        };
        assert_eq!(database.as_deref(), Some("postgres://db/tandem"));
        let Ok(Command::ApiKey { action, .. }) =
            parsed(&["api-key", "delete", "0123456789abcdef01234567"])
        else {
            panic!("expected ApiKey");
        };
        assert_eq!(
            action,
            ApiKeyAction::Delete {
                id: "0123456789abcdef01234567".into()
            }
        );
        for (list, needle) in [
            (&["api-key"][..], "usage: tandem-server api-key"),
            (&["api-key", "create"], "usage"),
            (&["api-key", "delete"], "usage"),
            (&["api-key", "delete", "id", "--name=x"], "usage"),
            (&["api-key", "rotate"], "usage"),
            (&["api-key", "list", "extra"], "usage"),
            (&["api-key", "create", "--name", ""], "name (command line)"),
            (&["api-key", "create", "--name"], "--name needs a value"),
            (
                &["api-key", "list", "--listen", "1.2.3.4:5"],
                "api-key takes only",
            ),
            (
                &["api-key", "list", "--bogus", "1"],
                "unknown option --bogus",
            ),
            (
                &["api-key", "list", "--app-id", "a b"],
                "app_id (command line)",
            ),
        ] {
            let err = parsed(list).err().expect("an error");
            assert!(err.to_string().contains(needle), "{list:?}: {err}");
        }
    }

    #[test]
    fn flexible_sync_rules_are_read_from_their_file() {
        let dir = Dir::new("flx-rules");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let good = dir.write(
            "rules.json",
            r#"{"classes":{"Task":{"read":true,"write":"owner == %%user.id"}}}"#,
        );
        let bad = dir.write("bad.json", r#"{"classes":{"Task":{"read":1}}}"#);
        let with = |file: &str| {
            parse(
                &args(&[
                    "--insecure-ws",
                    "--jwt-secret-file",
                    &secret,
                    "--app-id",
                    "a",
                    "--flx-rules",
                    file,
                ]),
                no_env,
            )
        };
        let rules = serve_config(with(&good)).app.unwrap().flx_rules;
        assert!(rules.restricts_writes());
        assert_eq!(
            rules.class("Task").write,
            crate::server::realm::rules::Filter::Query("owner == %%user.id".into())
        );
        let err = with(&bad).err().expect("a bad rules file is an error");
        assert!(err.to_string().contains("classes.Task.read"), "{err}");
        let err = with("/nonexistent/rules.json")
            .err()
            .expect("a missing file");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn sync_permissions_are_parsed_and_need_an_app() {
        let dir = Dir::new("permissions");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let base = [
            "--insecure-ws",
            "--jwt-secret-file",
            &secret,
            "--app-id",
            "a",
        ];
        let with = |rules: &str| {
            let mut list = base.to_vec();
            list.extend(["--sync-permissions", rules]);
            parse(&args(&list), no_env)
        };
        let rules = serve_config(with("user-id,shared:team|public"))
            .app
            .unwrap()
            .sync_permissions;
        assert_eq!(rules, "user-id,shared:team|public".parse().unwrap());
        assert_eq!(
            app_config(&base, &no_env).sync_permissions,
            SyncPermissions::default()
        );
        let err = with("owner").err().expect("an unknown rule is an error");
        assert!(
            err.to_string().contains("unknown sync permission rule"),
            "{err}"
        );
        let err = parse(
            &args(&[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--sync-permissions",
                "user-id",
            ]),
            no_env,
        )
        .err()
        .expect("needs --app-id");
        assert!(err.to_string().contains("needs --app-id"), "{err}");
    }

    #[test]
    fn log_and_metrics_settings() {
        let dir = Dir::new("observability");
        let secret = dir.write("secret", "0123456789abcdef0123\n");
        let base = ["--insecure-ws", "--jwt-secret-file", &secret];
        let with = |extra: &[&str], env: &dyn Fn(&str) -> Option<String>| {
            let mut list = base.to_vec();
            list.extend_from_slice(extra);
            parse(&args(&list), env)
        };
        // Defaults: text at info, no metrics listener.
        let config = serve_config(with(&[], &no_env));
        assert_eq!(config.observability, Observability::default());
        assert_eq!(
            (
                config.observability.log_format,
                config.observability.log_level
            ),
            (LogFormat::Text, LogLevel::Info)
        );
        assert!(config.observability.metrics_listen.is_none());
        // Flags.
        let config = serve_config(with(
            &[
                "--log-format",
                "json",
                "--log-level=debug",
                "--metrics-listen",
                "127.0.0.1:9090",
            ],
            &no_env,
        ));
        assert_eq!(
            config.observability,
            Observability {
                metrics_listen: Some("127.0.0.1:9090".parse().unwrap()),
                log_format: LogFormat::Json,
                log_level: LogLevel::Debug,
            }
        );
        // Each level by name.
        for (name, level) in [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ] {
            let config = serve_config(with(&["--log-level", name], &no_env));
            assert_eq!(config.observability.log_level, level, "{name}");
        }
        // Environment and file spellings; a flag beats both.
        let file = dir.write(
            "o.toml",
            "log_format = \"json\"\nlog_level = \"warn\"\nmetrics_listen = \"[::1]:9100\"\n",
        );
        let config = serve_config(with(&["--config", &file], &no_env));
        assert_eq!(config.observability.log_format, LogFormat::Json);
        assert_eq!(config.observability.log_level, LogLevel::Warn);
        assert_eq!(
            config.observability.metrics_listen,
            Some("[::1]:9100".parse().unwrap())
        );
        let env = |name: &str| match name {
            "TANDEM_LOG_LEVEL" => Some("error".to_owned()),
            "TANDEM_METRICS_LISTEN" => Some("127.0.0.1:1".to_owned()),
            _ => None,
        };
        let config = serve_config(with(&["--config", &file, "--log-format", "text"], &env));
        assert_eq!(config.observability.log_format, LogFormat::Text);
        assert_eq!(config.observability.log_level, LogLevel::Error);
        assert_eq!(
            config.observability.metrics_listen,
            Some("127.0.0.1:1".parse().unwrap())
        );
        // Mistakes are named.
        for (extra, needle) in [
            (
                &["--log-format", "xml"][..],
                "log_format (command line): expected text or json",
            ),
            (
                &["--log-level", "INFO"],
                "log_level (command line): expected error, warn",
            ),
            (&["--log-level", "verbose"], "log_level (command line)"),
            (
                &["--metrics-listen", "9090"],
                "metrics_listen (command line): expected an address",
            ),
            (&["--metrics-listen"], "--metrics-listen needs a value"),
        ] {
            let err = with(extra, &no_env).err().expect("an error");
            assert!(err.to_string().contains(needle), "{extra:?}: {err}");
        }
    }

    #[test]
    fn admin_commands() {
        let admin = |list: &[&str]| {
            let mut all = vec!["admin"];
            all.extend_from_slice(list);
            match parse(&args(&all), |n: &str| {
                (n == "TANDEM_DATA_DIR").then(|| "/from/env".to_owned())
            }) {
                Ok(Command::Admin { data_dir, command }) => Ok((data_dir, command)),
                Ok(_) => panic!("expected Admin"),
                Err(e) => Err(e.to_string()),
            }
        };
        let ok = |list: &[&str]| admin(list).unwrap_or_else(|e| panic!("{list:?}: {e}"));
        assert_eq!(
            ok(&["files", "--data-dir", "/srv/t"]),
            (PathBuf::from("/srv/t"), AdminCommand::Files)
        );
        assert_eq!(ok(&["files"]).0, PathBuf::from("/from/env"));
        assert_eq!(
            ok(&["clients", "/a b"]).1,
            AdminCommand::Clients {
                path: "/a b".into()
            }
        );
        assert_eq!(
            ok(&["history", "/p", "--from", "3", "--to=9"]).1,
            AdminCommand::History {
                path: "/p".into(),
                from: Some(3),
                to: Some(9)
            }
        );
        assert_eq!(
            ok(&["history", "/p"]).1,
            AdminCommand::History {
                path: "/p".into(),
                from: None,
                to: None
            }
        );
        assert_eq!(
            ok(&["state", "/p", "--data-dir=/d"]),
            (
                PathBuf::from("/d"),
                AdminCommand::State { path: "/p".into() }
            )
        );
        assert_eq!(
            ok(&["backup", "/p", "/backups"]).1,
            AdminCommand::Backup {
                path: Some("/p".into()),
                dest: "/backups".into()
            }
        );
        assert_eq!(
            ok(&["backup", "--all", "/backups"]).1,
            AdminCommand::Backup {
                path: None,
                dest: "/backups".into()
            }
        );
        assert_eq!(
            ok(&["restore", "/b/1.sqlite", "/b/2.sqlite"]).1,
            AdminCommand::Restore {
                files: vec!["/b/1.sqlite".into(), "/b/2.sqlite".into()]
            }
        );
        assert_eq!(
            ok(&["compact", "/p", "--horizon", "86400"]).1,
            AdminCommand::Compact {
                path: "/p".into(),
                horizon: Duration::from_secs(86_400)
            }
        );
        for (list, needle) in [
            (&[][..], "usage: tandem-server admin"),
            (&["frobnicate"], "usage"),
            (&["files", "extra"], "usage"),
            (&["clients"], "usage"),
            (
                &["history", "/p", "--from", "x"],
                "from (command line): expected a whole number",
            ),
            (&["history", "/p", "--from"], "--from needs a value"),
            (
                &["history", "/p", "--horizon", "1"],
                "unknown option --horizon",
            ),
            (&["backup", "/p"], "usage"),
            (&["backup", "--all", "/p", "/d"], "usage"),
            (&["backup", "--all=yes", "/d"], "usage"),
            (&["restore"], "usage"),
            (&["compact", "/p"], "compact needs --horizon"),
            (
                &["compact", "/p", "--horizon", "-1"],
                "horizon (command line)",
            ),
            (&["files", "--listen", "1.2.3.4:5"], "admin takes only"),
            (&["files", "--data-dir"], "--data-dir needs a value"),
        ] {
            let err = admin(list).expect_err("an error");
            assert!(err.contains(needle), "{list:?}: {err}");
        }
    }
}
