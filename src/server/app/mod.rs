//! Realm's App Services HTTP API for one configured app (cargo feature `server`).
//!
//! What an unmodified Realm SDK (realm-core 14.x) calls before and around sync: location, login
//! with `anon-user`, `local-userpass`, `custom-token` and `api-key`, profile, access-token
//! refresh, logout, user deletion and user API keys. Routes, fields, status codes and error
//! JSON follow `realm-wire-compat.md` section 1 (realm-core `src/realm/object-store/sync/app.cpp`).
//! Users, identities, refresh sessions and API keys live in `<data_dir>/app.sqlite`.
//!
//! SKELETON: the lead's interface contract for the parallel work on issue 12; the helper that
//! owns this module replaces every `todo!()`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::auth::{Authenticator, TokenSigner};

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
}

/// Why an access token was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessTokenError {
    /// Well-formed and signed by this server, but past `exp`: the client should refresh.
    Expired,
    /// Malformed, wrongly signed, not an access token, or its user is gone.
    Invalid(String),
}

/// Why the App Services store could not be opened.
#[derive(Debug)]
pub struct AppError(pub String);

/// The App Services API of one app: its user store and its routes.
pub struct AppServices {
    config: AppConfig,
}

impl AppServices {
    /// Opens (creating if needed) `<data_dir>/app.sqlite`.
    pub fn open(config: AppConfig, data_dir: &Path) -> Result<AppServices, AppError> {
        // MINIMAL (realmsync helper, until the appapi helper's store lands): no store yet.
        let _ = data_dir;
        Ok(AppServices { config })
    }

    /// The configured app id.
    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    /// Every App Services route under `/api/client/v2.0/` (not the sync WebSocket).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        // MINIMAL (realmsync helper): no routes until the appapi helper's land.
        axum::Router::new()
    }

    /// Verifies an access token this server issued (the sync endpoint's `baas_at`).
    pub fn verify_access_token(&self, token: &str) -> Result<AppUser, AccessTokenError> {
        // MINIMAL (realmsync helper): the signature and `exp` only; the appapi helper's version
        // also checks the token type and that the user exists.
        match self.config.verifier.verify(token) {
            Ok(claims) => Ok(AppUser {
                user_id: claims.sub,
                exp: claims.exp,
            }),
            Err(e) if e.code == crate::protocol::ErrorCode::TokenExpired => {
                Err(AccessTokenError::Expired)
            }
            Err(e) => Err(AccessTokenError::Invalid(e.message)),
        }
    }
}
