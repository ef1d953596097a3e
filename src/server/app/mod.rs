//! Realm's App Services HTTP API for one configured app (cargo feature `server`).
//!
//! What an unmodified Realm SDK (realm-core 14.x) calls before and around sync: location, login
//! with `anon-user`, `local-userpass`, `custom-token` and `api-key`, profile, access-token
//! refresh, logout, user deletion and user API keys. Routes, fields, status codes and error
//! JSON follow `realm-wire-compat.md` section 1 (realm-core `src/realm/object-store/sync/app.cpp`).
//! Users, identities, refresh sessions and API keys live in `<data_dir>/app.sqlite`.
//!
//! - [`store`]: the SQLite file;
//! - [`tokens`]: the access and refresh JWTs this server signs;
//! - `providers`: the login providers and `local-userpass` registration;
//! - `http`: the axum routes and the error JSON.
//!
//! Not implemented: functions (`functions/call`), MongoDB data access, sending email (so
//! password reset), OAuth and custom-function providers, account linking. See
//! `docs/app-services.md`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::auth::{Authenticator, TokenSigner};

mod http;
mod providers;
pub mod store;
pub mod tokens;

pub use store::ApiKeyInfo;

/// Longest accepted request body (`413` beyond it).
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// The App Services auth providers Tandem implements (the names are the URL segment of
/// `/auth/providers/<name>/login` and the profile's `provider_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `anon-user`.
    Anonymous,
    /// `local-userpass` (email and password).
    UserPassword,
    /// `custom-token` (an external JWT).
    CustomToken,
    /// `api-key`.
    ApiKey,
}

impl Provider {
    /// Every provider, in the order `--help` lists them.
    pub const ALL: [Provider; 4] = [
        Provider::Anonymous,
        Provider::UserPassword,
        Provider::CustomToken,
        Provider::ApiKey,
    ];

    /// The provider's name in URLs, profiles and `--auth-providers`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Anonymous => "anon-user",
            Provider::UserPassword => "local-userpass",
            Provider::CustomToken => "custom-token",
            Provider::ApiKey => "api-key",
        }
    }

    /// The provider with this name.
    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How the App Services API runs (from `--app-id` and the related settings).
#[derive(Clone)]
pub struct AppConfig {
    /// The app id in every route (`/api/client/v2.0/app/<app_id>/...`); URL-path-safe.
    pub app_id: String,
    /// Enabled login providers.
    pub providers: Vec<Provider>,
    /// Signs the access and refresh tokens this server issues.
    pub signer: Arc<TokenSigner>,
    /// Verifies the tokens this server issued (the signer's key).
    pub verifier: Authenticator,
    /// Lifetime of access tokens (default 30 minutes).
    pub access_token_lifetime: Duration,
    /// Lifetime of refresh tokens (default 60 days).
    pub refresh_token_lifetime: Duration,
    /// New `local-userpass` users are confirmed at registration (default true).
    pub auto_confirm: bool,
    /// Verifies `custom-token` logins (the external issuer's key), if that provider is enabled.
    pub custom_token_key: Option<Authenticator>,
    /// The public base URL (`https://sync.example.com`) the location route answers; `None`
    /// derives it from the request's `Host` and whether the listener uses TLS.
    pub public_url: Option<String>,
    /// Who may sync which partition on the Realm sync endpoint (`--sync-permissions`; default
    /// `all-authenticated`).
    pub sync_permissions: super::realm::permissions::SyncPermissions,
    /// Flexible sync's read and write filters per class (`--flx-rules`; default: everything
    /// readable and writable).
    pub flx_rules: super::realm::rules::FlxRules,
}

impl AppConfig {
    /// A configuration with the defaults `tandem-server` uses: `anon-user` only, tokens
    /// signed (and verified) with `signer`, 30-minute access and 60-day refresh tokens,
    /// automatic confirmation, no custom-token key, the URL taken from each request.
    pub fn new(app_id: &str, signer: TokenSigner) -> AppConfig {
        AppConfig {
            app_id: app_id.to_owned(),
            providers: vec![Provider::Anonymous],
            verifier: signer.authenticator(),
            signer: Arc::new(signer),
            access_token_lifetime: Duration::from_secs(DEFAULT_ACCESS_TOKEN_LIFETIME),
            refresh_token_lifetime: Duration::from_secs(DEFAULT_REFRESH_TOKEN_LIFETIME),
            auto_confirm: true,
            custom_token_key: None,
            public_url: None,
            sync_permissions: Default::default(),
            flx_rules: Default::default(),
        }
    }
}

/// Default access-token lifetime in seconds (30 minutes, as BaaS).
pub const DEFAULT_ACCESS_TOKEN_LIFETIME: u64 = 30 * 60;

/// Default refresh-token lifetime in seconds (60 days).
pub const DEFAULT_REFRESH_TOKEN_LIFETIME: u64 = 60 * 24 * 3600;

/// Whether `app_id` can go into a URL path unescaped (realm-core inserts it as is):
/// 1 to 128 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn is_valid_app_id(app_id: &str) -> bool {
    (1..=128).contains(&app_id.len())
        && app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && app_id != "."
        && app_id != ".."
}

/// Whether the request arrived over TLS; the listener inserts it into every request's
/// extensions so the location route can answer `https`/`wss` or `http`/`ws`.
#[derive(Clone, Copy, Debug)]
pub struct RequestTls(pub bool);

/// A user whose access token verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppUser {
    /// The user id (the token's `sub`, the login response's `user_id`).
    pub user_id: String,
    /// Expiry of the access token, seconds since the Unix epoch.
    pub exp: u64,
    /// The user's profile data (`name` and `email` of custom-token users), which flexible
    /// sync rules read as `%%user.data.<field>`.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Why an access token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Well-formed and signed by this server, but past `exp`: the client should refresh.
    Expired,
    /// Malformed, wrongly signed, not an access token, or its user is gone.
    Invalid(String),
    /// The user store could not be read (with `--database`, PostgreSQL could not be reached):
    /// nothing is known about the token's user; try again later.
    Unavailable(String),
}

impl std::fmt::Display for AccessTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessTokenError::Expired => f.write_str("access token expired"),
            AccessTokenError::Invalid(why) => write!(f, "invalid access token: {why}"),
            AccessTokenError::Unavailable(why) => write!(f, "the user store is unavailable: {why}"),
        }
    }
}

/// Why the App Services store could not be opened or used.
#[derive(Debug)]
pub struct AppError(pub String);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

/// Receives `local-userpass` confirmation tokens with manual confirmation: the address, the
/// `token` and the `tokenId` the user must send to `.../local-userpass/confirm`.
pub type ConfirmationSink = Box<dyn Fn(&str, &str, &str) + Send + Sync>;

/// The App Services API of one app: its user store and its routes.
pub struct AppServices {
    config: AppConfig,
    /// The store; `None` while it cannot be opened for a storage fault (a full disk, an I/O
    /// error at start): every use tries to open it again, and fails as unavailable until then.
    store: Mutex<Option<store::Store>>,
    /// The data directory of a store that is opened again after a storage fault
    /// (`<data_dir>/app.sqlite`); `None` for a PostgreSQL working copy, which opens at start
    /// or not at all.
    reopen_from: Option<std::path::PathBuf>,
    confirmations: Mutex<ConfirmationSink>,
}

impl AppServices {
    /// Opens (creating if needed) `<data_dir>/app.sqlite`. Fails if the file was created for
    /// another app id or by a newer server. A storage fault (a full disk, an I/O error) does
    /// not fail it: until a later use opens the store, the Realm sync route answers 503 (which
    /// realm-core retries with back-off) and the App Services API an internal error (500),
    /// while Tandem's own clients sync on (found by the simulation: a server restarted on a
    /// full disk did not start at all).
    pub fn open(config: AppConfig, data_dir: &Path) -> Result<AppServices, AppError> {
        if !is_valid_app_id(&config.app_id) {
            return Err(AppError(format!(
                "app id {:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ -",
                config.app_id
            )));
        }
        let store = match store::Store::open_or_fault(data_dir, Some(&config.app_id)) {
            Ok(store) => Some(store),
            Err(store::OpenFault::Storage(e)) => {
                tracing::error!(error = %e.0, "the App Services store cannot be opened; its routes fail until it can");
                None
            }
            Err(store::OpenFault::Config(e)) => return Err(e),
        };
        Ok(AppServices::with_store(
            config,
            store,
            Some(data_dir.to_path_buf()),
        ))
    }

    /// [`AppServices::open`] with the store kept in PostgreSQL (`--database`); its working
    /// copy is in `cache_dir`.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_replica(
        config: AppConfig,
        cache_dir: &Path,
        pg: &std::sync::Arc<super::postgres::Postgres>,
    ) -> Result<AppServices, AppError> {
        if !is_valid_app_id(&config.app_id) {
            return Err(AppError(format!(
                "app id {:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ -",
                config.app_id
            )));
        }
        let store = store::Store::open_replica(cache_dir, pg, Some(&config.app_id))?;
        Ok(AppServices::with_store(config, Some(store), None))
    }

    fn with_store(
        config: AppConfig,
        store: Option<store::Store>,
        reopen_from: Option<std::path::PathBuf>,
    ) -> AppServices {
        AppServices {
            config,
            store: Mutex::new(store),
            reopen_from,
            confirmations: Mutex::new(Box::new(|email, token, token_id| {
                // tandem-server sends no email: the operator passes these on. This one-time
                // confirmation pair is the only credential the log ever carries, by design
                // (`--confirm-users manual`, docs/app-services.md).
                tracing::warn!(
                    email,
                    token,
                    token_id,
                    "a user awaits confirmation: pass the token pair on"
                );
            })),
        }
    }

    /// Replaces where confirmation tokens go (by default, a warning in the server's log for the
    /// operator to pass on, since tandem-server sends no email).
    pub fn set_confirmation_sink(&self, sink: ConfirmationSink) {
        *self.confirmations.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    }

    fn send_confirmation(&self, email: &str, token: &str, token_id: &str) {
        (self.confirmations.lock().unwrap_or_else(|e| e.into_inner()))(email, token, token_id);
    }

    /// The configured app id.
    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    /// The configuration.
    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// Every App Services route under `/api/client/v2.0/` (not the sync WebSocket). Unknown
    /// paths and methods get JSON errors (404, 405); see `docs/app-services.md`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Verifies an access token this server issued (the sync endpoint's `baas_at`).
    pub fn verify_access_token(&self, token: &str) -> Result<AppUser, AccessTokenError> {
        self.verify_access_token_at(token, tokens::now())
    }

    /// [`verify_access_token`](Self::verify_access_token) at time `now` (seconds since the
    /// Unix epoch): the signature, `typ` `access`, `exp` after `now`, and the user still
    /// exists.
    pub fn verify_access_token_at(
        &self,
        token: &str,
        now: u64,
    ) -> Result<AppUser, AccessTokenError> {
        let verified = tokens::verify(&self.config, token, "access", now)?;
        match self.store().and_then(|s| s.user_data(&verified.sub)) {
            Ok(Some(data)) => Ok(AppUser {
                user_id: verified.sub,
                exp: verified.exp,
                data,
            }),
            Ok(None) => Err(AccessTokenError::Invalid(
                "the user no longer exists".into(),
            )),
            Err(e) => Err(AccessTokenError::Unavailable(e.0)),
        }
    }

    /// The store, locked for this thread and, with `--database`, brought up to PostgreSQL
    /// under its lock there until the guard is dropped. Error: the database could not be
    /// reached (logged; nothing is decided on a copy that may be behind).
    fn store(&self) -> Result<StoreGuard<'_>, AppError> {
        let mut guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // Not opened at start for a storage fault: try again.
            let opened = match &self.reopen_from {
                Some(dir) => store::Store::open(dir, Some(&self.config.app_id)),
                None => Err(AppError("no App Services store".into())),
            };
            match opened {
                Ok(store) => {
                    tracing::info!("the App Services store is open again");
                    *guard = Some(store);
                }
                Err(e) => {
                    return Err(AppError(format!(
                        "the App Services store is unavailable: {}",
                        e.0
                    )))
                }
            }
        }
        if let Err(e) = guard.as_mut().expect("opened above").acquire() {
            tracing::error!(error = %e.0, "bringing the App Services store up to the database failed");
            return Err(e);
        }
        Ok(StoreGuard(guard))
    }
}

/// A locked store ([`AppServices::store`], which made sure it is open); dropping it releases
/// the database lock.
struct StoreGuard<'a>(MutexGuard<'a, Option<store::Store>>);

impl std::ops::Deref for StoreGuard<'_> {
    type Target = store::Store;
    fn deref(&self) -> &store::Store {
        self.0.as_ref().expect("AppServices::store opened it")
    }
}

impl std::ops::DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut store::Store {
        self.0.as_mut().expect("AppServices::store opened it")
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.0.as_mut() {
            store.release();
        }
    }
}

/// A server API key just created: its listing and the key itself (shown once, stored only
/// as a SHA-256 hash).
#[derive(Clone, Debug)]
pub struct NewApiKey {
    /// Id, name and state.
    pub info: ApiKeyInfo,
    /// The secret to log in with (`api-key` provider), 64 hex digits.
    pub key: String,
}

/// Longest API key name.
pub const MAX_API_KEY_NAME: usize = 128;

/// Checks an API key name: 1 to [`MAX_API_KEY_NAME`] bytes, no control characters.
pub fn check_api_key_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_API_KEY_NAME {
        return Err(format!(
            "an API key name has 1 to {MAX_API_KEY_NAME} bytes, not only spaces"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("an API key name has no control characters".into());
    }
    Ok(())
}

/// The admin side of server API keys (`tandem-server api-key ...`): works on
/// `<data_dir>/app.sqlite` directly, or on the App Services store in PostgreSQL
/// (`--database`), without the signing keys.
pub mod admin {
    use super::*;

    /// Where the App Services store of an admin command is.
    #[derive(Clone, Copy, Debug)]
    pub enum StoreAt<'a> {
        /// `app.sqlite` in this data directory (embedded storage).
        DataDir(&'a Path),
        /// The database of `tandem-server --database` (a `postgres://` URL or libpq key-value
        /// string): the command may run beside the server processes, under the store's lock.
        Database(&'a str),
    }

    impl<'a> From<&'a Path> for StoreAt<'a> {
        fn from(dir: &'a Path) -> Self {
            StoreAt::DataDir(dir)
        }
    }

    impl<'a> From<&'a std::path::PathBuf> for StoreAt<'a> {
        fn from(dir: &'a std::path::PathBuf) -> Self {
            StoreAt::DataDir(dir)
        }
    }

    /// A store opened for one command. With a database: its working copy in a temporary
    /// directory and the store's lock, held until this is dropped.
    struct Opened {
        store: store::Store,
        /// The working copy's temporary directory (the store's replica keeps the database
        /// connection).
        #[cfg(feature = "postgres")]
        cache: Option<std::path::PathBuf>,
    }

    impl std::ops::Deref for Opened {
        type Target = store::Store;
        fn deref(&self) -> &store::Store {
            &self.store
        }
    }

    impl std::ops::DerefMut for Opened {
        fn deref_mut(&mut self) -> &mut store::Store {
            &mut self.store
        }
    }

    impl Drop for Opened {
        fn drop(&mut self) {
            self.store.release();
            #[cfg(feature = "postgres")]
            if let Some(cache) = &self.cache {
                let _ = std::fs::remove_dir_all(cache);
            }
        }
    }

    /// Opens the store: an existing one only, unless `create` and an app id to record in it
    /// are given (a typo in `--data-dir` or `--database` is an error, not a new empty app).
    fn open_at(at: StoreAt<'_>, app_id: Option<&str>, create: bool) -> Result<Opened, AppError> {
        let may_create = create && app_id.is_some();
        match at {
            StoreAt::DataDir(data_dir) => {
                let file = data_dir.join(store::FILE_NAME);
                if !may_create && !file.exists() {
                    return Err(AppError(format!(
                        "no App Services database at {}: start tandem-server with --app-id and \
                         this --data-dir first, or create the first key with `api-key create \
                         --app-id <ID>`",
                        file.display()
                    )));
                }
                Ok(Opened {
                    store: store::Store::open(data_dir, app_id)?,
                    #[cfg(feature = "postgres")]
                    cache: None,
                })
            }
            #[cfg(feature = "postgres")]
            StoreAt::Database(url) => {
                use crate::server::postgres::Postgres;
                let failed = |e: crate::server::postgres::PostgresError| AppError(format!("{e}"));
                let files = crate::server::ServerFile::mirrored_tables().map_err(failed)?;
                let app = store::Store::mirrored_tables().map_err(failed)?;
                let pg = Postgres::connect(url, &[&files, &app]).map_err(failed)?;
                let cache = std::env::temp_dir().join(format!(
                    "tandem-api-key-{}-{}",
                    std::process::id(),
                    tokens::object_id()?
                ));
                // A working copy that failed to open (an app id other than the one recorded,
                // say) goes too, as one that fails to acquire does.
                let mut store = match store::Store::open_replica(&cache, &pg, app_id) {
                    Ok(store) => store,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&cache);
                        return Err(e);
                    }
                };
                let opened = match store.acquire() {
                    Ok(()) => Opened {
                        store,
                        cache: Some(cache),
                    },
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&cache);
                        return Err(e);
                    }
                };
                if !may_create && opened.app_id()?.is_none() {
                    return Err(AppError(
                        "no App Services data in this database: start tandem-server with \
                         --app-id and this --database first, or create the first key with \
                         `api-key create --app-id <ID>`"
                            .into(),
                    ));
                }
                Ok(opened)
            }
            #[cfg(not(feature = "postgres"))]
            StoreAt::Database(_) => Err(AppError(
                "--database needs a tandem-server built with the cargo feature `postgres`".into(),
            )),
        }
    }

    /// Creates a server API key named `name`; a user of type `server` with an `api-key`
    /// identity logs in with it.
    pub fn create_api_key<'a>(
        at: impl Into<StoreAt<'a>>,
        app_id: Option<&str>,
        name: &str,
    ) -> Result<NewApiKey, AppError> {
        check_api_key_name(name).map_err(AppError)?;
        let mut store = open_at(at.into(), app_id, true)?;
        let (id, user_id, key) = (
            tokens::object_id()?,
            tokens::object_id()?,
            tokens::secret()?,
        );
        store
            .create_server_api_key(
                &user_id,
                &id,
                name,
                &tokens::secret_hash(&key),
                tokens::now(),
            )
            .map_err(|e| {
                if store::is_conflict(&e) {
                    AppError(format!("a server API key named {name:?} exists already"))
                } else {
                    e
                }
            })?;
        Ok(NewApiKey {
            info: ApiKeyInfo {
                id,
                name: name.to_owned(),
                disabled: false,
            },
            key,
        })
    }

    /// Every server API key, oldest first.
    pub fn list_api_keys<'a>(
        at: impl Into<StoreAt<'a>>,
        app_id: Option<&str>,
    ) -> Result<Vec<ApiKeyInfo>, AppError> {
        open_at(at.into(), app_id, false)?.api_keys(None)
    }

    /// Deletes a server API key and its user (with the user's sessions). Returns whether it
    /// existed.
    pub fn delete_api_key<'a>(
        at: impl Into<StoreAt<'a>>,
        app_id: Option<&str>,
        id: &str,
    ) -> Result<bool, AppError> {
        open_at(at.into(), app_id, false)?.delete_api_key(None, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_that_cannot_be_opened_at_start_is_opened_by_a_later_use() {
        let tmp = tempfile::Builder::new()
            .prefix("tandem-app-open-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let config = |app: &str| {
            AppConfig::new(app, TokenSigner::hs256(b"app open test secret, 32 bytes!!"))
        };
        // A directory where the file goes: SQLite cannot open it (as on a failing disk).
        let file = dir.join(store::FILE_NAME);
        std::fs::create_dir_all(&file).unwrap();
        let app = AppServices::open(config("app"), dir).expect("starts without its store");
        let err = app.store().err().expect("the store is unavailable");
        assert!(err.0.contains("unavailable"), "{}", err.0);
        assert!(matches!(
            app.verify_access_token("not even a token"),
            Err(AccessTokenError::Invalid(_))
        ));
        std::fs::remove_dir(&file).unwrap();
        assert_eq!(app.store().expect("opened now").user_count().unwrap(), 0);
        drop(app);
        // A file of another app is still refused at start.
        assert!(AppServices::open(config("other"), dir).is_err());
    }
}
