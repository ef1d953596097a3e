//! `tandem-server`'s configuration: command-line flags, environment variables and a TOML file,
//! merged into a [`ServerConfig`] (or a request to issue a token, or to print help).
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

use super::auth::{Authenticator, KeyError, TokenSigner};
use super::net::ServerConfig;
use super::realm::permissions::{RuleError, SyncPermissions};
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

Each option is a flag, an environment variable [in brackets] or a key in the TOML file given
with --config (file keys are the flag names with '_' for '-', e.g. data_dir = \"/srv/tandem\").
A flag wins over the environment, which wins over the file.

OPTIONS:
    --config <FILE>            TOML configuration file [TANDEM_CONFIG]
    --listen <ADDR>            address and port to listen on [TANDEM_LISTEN]
                               (default 0.0.0.0:7800)
    --data-dir <DIR>           where the server files live, one SQLite file per server
                               path [TANDEM_DATA_DIR] (default ./tandem-data)
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
    --max-body <BYTES>         largest message body accepted, compressed or inflated
                               [TANDEM_MAX_BODY] (default 16777216)
    --sync-permissions <RULES> who may sync which Realm partition, comma-separated:
                               all-authenticated (every user, every partition; the
                               default, for development), user-id (the string partition
                               equal to the user's id), shared:<p1>|<p2> (these string
                               partitions, every user) [TANDEM_SYNC_PERMISSIONS]
    -h, --help                 print this help

TOKENS:
    --issue-token <PATHS>      print an access token for these comma-separated server paths
                               (\"*\" for all) and exit; signs with --jwt-secret-file or
                               --jwt-private-key
    --jwt-private-key <FILE>   PEM private key (RSA or Ed25519) for --issue-token
    --token-hours <HOURS>      validity of --issue-token (default 24)
    --token-subject <NAME>     the token's `sub` claim (default tandem-server)

Clients connect to wss://<host>:<port>/ and send the token in the Authorization header
(Bearer) or in BIND. Tokens are JWTs with `exp` (required) and `paths` claims; see
docs/protocol.md.";

/// What the command line asks for.
// Built once per process; boxing the configuration would only complicate its users.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Print [`HELP`].
    Help,
    /// Run the server.
    Serve(ServerConfig),
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
    ("tls_cert", false),
    ("tls_key", false),
    ("insecure_ws", true),
    ("jwt_secret_file", false),
    ("jwt_public_key", false),
    ("idle_timeout", false),
    ("max_body", false),
    ("sync_permissions", false),
    ("issue_token", false),
    ("jwt_private_key", false),
    ("token_hours", false),
    ("token_subject", false),
];

/// Settings that only make sense on the command line (not in the file).
const COMMAND_ONLY: &[&str] = &[
    "config",
    "issue_token",
    "jwt_private_key",
    "token_hours",
    "token_subject",
];

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
    let mut raw = Raw(BTreeMap::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
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
    if let Some((paths, _)) = raw.get("issue_token") {
        return issue_token(&raw, paths);
    }
    serve(&raw).map(Command::Serve)
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

fn secret(raw: &Raw) -> Result<Vec<u8>, ConfigError> {
    let path = raw.path("jwt_secret_file").unwrap_or_default();
    let bytes = read_capped(&path).map_err(|e| raw.bad("jwt_secret_file", e))?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        return Err(raw.bad(
            "jwt_secret_file",
            format!("the secret must be at least {MIN_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret)
}

/// `--sync-permissions`: the Realm endpoint's partition rules (default `all-authenticated`).
fn sync_permissions(raw: &Raw) -> Result<SyncPermissions, ConfigError> {
    match raw.get("sync_permissions") {
        None => Ok(SyncPermissions::default()),
        Some((v, _)) => v
            .parse()
            .map_err(|e: RuleError| raw.bad("sync_permissions", e.0)),
    }
}

fn serve(raw: &Raw) -> Result<ServerConfig, ConfigError> {
    // Checked here; it goes into the AppConfig built for --app-id.
    let _rules = sync_permissions(raw)?;
    let auth = match (raw.path("jwt_secret_file"), raw.path("jwt_public_key")) {
        (Some(_), None) => Authenticator::hs256(&secret(raw)?),
        (None, Some(key)) => {
            let pem = read_capped(&key).map_err(|e| raw.bad("jwt_public_key", e))?;
            Authenticator::from_public_key_pem(&pem)
                .map_err(|KeyError(e)| raw.bad("jwt_public_key", e))?
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::Missing(
                "give one of --jwt-secret-file and --jwt-public-key, not both".into(),
            ))
        }
        (None, None) => {
            return Err(ConfigError::Missing(
                "tokens need a key: give --jwt-secret-file (HS256) or --jwt-public-key \
                 (RS256 or EdDSA)"
                    .into(),
            ))
        }
    };
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
    Ok(ServerConfig {
        listen,
        data_dir: raw.path("data_dir").unwrap_or_else(|| "tandem-data".into()),
        tls,
        allow_plain_ws: insecure,
        auth,
        idle_timeout: Duration::from_secs(idle),
        limits: Limits {
            max_body: max_body as usize,
            ..defaults
        },
        app: None,
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

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("tandem-config-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
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
        expect(
            &[
                "--insecure-ws",
                "--jwt-secret-file",
                &secret,
                "--sync-permissions",
                "owner",
            ],
            &no_env,
            "unknown sync permission rule \"owner\"",
        );
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
}
