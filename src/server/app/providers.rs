//! Login with each provider, and the `local-userpass` account routes.
//!
//! Request bodies are those realm-core sends (`realm-wire-compat.md` §1.4, §1.2 routes 7-13);
//! error codes are names realm-core's `ErrorCodes::from_string` knows in its app-error
//! category (`src/realm/error_codes.cpp`), so SDKs map them to typed exceptions.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::http::ApiError;
use super::store::{self, Account};
use super::{tokens, AppServices, Provider};

/// Shortest password (Realm's rule: 6 to 128 characters).
pub const MIN_PASSWORD: usize = 6;
/// Longest password.
pub const MAX_PASSWORD: usize = 128;
/// Longest email address (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;
/// Longest `custom-token` subject.
pub const MAX_SUBJECT: usize = 256;
/// Longest string copied from a custom token into the profile.
const MAX_PROFILE_FIELD: usize = 1024;

/// A string field of the body, or 400 naming it.
fn field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a string"))),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            format!("expected parameter {name:?} in the request body"),
        )),
    }
}

/// The lookup key of an address: trimmed and lowercased (addresses match case-insensitively).
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

fn check_email(email: &str) -> Result<(), ApiError> {
    let email = email.trim();
    let valid = email.len() <= MAX_EMAIL
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "email invalid: expected an address like name@example.com of at most {MAX_EMAIL} bytes"
        )))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "password must be between {MIN_PASSWORD} and {MAX_PASSWORD} characters"
        )))
    }
}

/// Argon2id (the crate's defaults: 19 MiB, 2 passes) with a 16-byte salt from the operating
/// system; the PHC string. Runs on a blocking thread.
async fn hash_password(password: String) -> Result<String, ApiError> {
    let salt = tokens::random_bytes::<16>()?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

async fn password_matches(password: String, phc: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&phc).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "InvalidPassword",
        "invalid username/password",
    )
}

/// `POST .../auth/providers/<provider>/login`: the login response
/// `{"user_id","access_token","refresh_token","device_id"}`.
pub async fn login(
    app: &Arc<AppServices>,
    provider: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let provider = Provider::from_name(provider)
        .filter(|p| app.config.providers.contains(p))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "AuthProviderNotFound",
                format!("authentication provider {provider:?} is not enabled on this server"),
            )
        })?;
    let now = tokens::now();
    let user_id = match provider {
        Provider::Anonymous => {
            let user_id = tokens::object_id()?;
            let identity = tokens::object_id()?;
            app.store()?.create_user(
                &user_id,
                "normal",
                &Map::new(),
                (provider, &identity),
                now,
            )?;
            user_id
        }
        Provider::UserPassword => {
            let username = field(body, "username")?;
            let password = field(body, "password")?;
            if password.len() > 4 * MAX_PASSWORD || username.len() > MAX_EMAIL + 64 {
                return Err(invalid_credentials());
            }
            let account = app
                .store()?
                .account(&email_key(username))?
                .ok_or_else(invalid_credentials)?;
            if !password_matches(password.to_owned(), account.password.clone()).await? {
                return Err(invalid_credentials());
            }
            account.user_id.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "AuthError",
                    "confirmation required: this account's email address is not confirmed yet",
                )
            })?
        }
        Provider::CustomToken => custom_token_user(app, field(body, "token")?, now)?,
        Provider::ApiKey => {
            let key = field(body, "key")?;
            let owner = app
                .store()?
                .api_key_by_hash(&tokens::secret_hash(key))?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "InvalidPassword",
                        "invalid API key",
                    )
                })?;
            if owner.disabled {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "AuthError",
                    format!("API key {} is disabled", owner.id),
                ));
            }
            owner.user_id
        }
    };
    let sid = tokens::hex(&tokens::random_bytes::<16>()?);
    let refresh_exp = now + app.config.refresh_token_lifetime.as_secs();
    app.store()?.create_session(&sid, &user_id, refresh_exp)?;
    Ok(json!({
        "user_id": user_id,
        "access_token": tokens::access_token(&app.config, &user_id, now)?,
        "refresh_token": tokens::refresh_token(&app.config, &user_id, &sid, now, refresh_exp)?,
        "device_id": tokens::object_id()?,
    }))
}

/// Verifies an external JWT with the configured key; its `sub` is the identity id. The user
/// is created on first login; string `name` and `email` claims become profile data.
fn custom_token_user(app: &AppServices, token: &str, now: u64) -> Result<String, ApiError> {
    let key =
        app.config.custom_token_key.as_ref().ok_or_else(|| {
            ApiError::internal("custom-token is enabled without a verification key")
        })?;
    let claims = key.verify_jwt_at(token, now).map_err(|e| {
        let why = match e {
            crate::server::JwtError::Expired => "token is expired".to_owned(),
            crate::server::JwtError::Invalid(why) => why,
        };
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "AuthError",
            format!("custom token: {why}"),
        )
    })?;
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthError",
                format!("custom token: sub must be a string of 1 to {MAX_SUBJECT} bytes"),
            )
        })?;
    let mut data = Map::new();
    for name in ["name", "email"] {
        if let Some(Value::String(s)) = claims.get(name) {
            if s.len() <= MAX_PROFILE_FIELD {
                data.insert(name.to_owned(), Value::String(s.clone()));
            }
        }
    }
    let mut store = app.store()?;
    match store.user_for_identity(Provider::CustomToken, sub)? {
        Some(user_id) => {
            store.set_user_data(&user_id, &data)?;
            Ok(user_id)
        }
        None => {
            let user_id = tokens::object_id()?;
            store.create_user(&user_id, "normal", &data, (Provider::CustomToken, sub), now)?;
            Ok(user_id)
        }
    }
}

/// The `local-userpass` routes other than login: `register`, `confirm`, `confirm/send`;
/// `reset...` and `.../call` answer clear errors (no email, no functions).
pub async fn userpass(app: &Arc<AppServices>, action: &str, body: &Value) -> Result<(), ApiError> {
    if !app.config.providers.contains(&Provider::UserPassword) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "AuthProviderNotFound",
            "authentication provider \"local-userpass\" is not enabled on this server",
        ));
    }
    match action {
        "register" => register(app, field(body, "email")?, field(body, "password")?).await,
        "confirm" => confirm(app, field(body, "token")?, field(body, "tokenId")?),
        "confirm/send" => resend_confirmation(app, field(body, "email")?),
        "confirm/call" | "reset/call" => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "FunctionNotFound",
            "tandem-server runs no functions (no custom confirmation or reset function)",
        )),
        "reset/send" | "reset" => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "ServiceNotFound",
            "password reset needs email, which tandem-server does not send",
        )),
        _ => Err(ApiError::not_found()),
    }
}

async fn register(app: &AppServices, email: &str, password: &str) -> Result<(), ApiError> {
    check_email(email)?;
    check_password(password)?;
    let key = email_key(email);
    if app.store()?.account(&key)?.is_some() {
        return Err(account_name_in_use());
    }
    let account = Account {
        id: tokens::object_id()?,
        email: email.trim().to_owned(),
        password: hash_password(password.to_owned()).await?,
        user_id: None,
    };
    let mut store = app.store()?;
    if app.config.auto_confirm {
        store
            .insert_account(&account, &key, None)
            .map_err(conflict_as_name_in_use)?;
        let user_id = tokens::object_id()?;
        store.confirm_account(&account, &user_id, &email_data(&account), tokens::now())?;
    } else {
        let (token, token_id) = (tokens::secret()?, tokens::object_id()?);
        store
            .insert_account(
                &account,
                &key,
                Some((&token_id, &tokens::secret_hash(&token))),
            )
            .map_err(conflict_as_name_in_use)?;
        drop(store);
        app.send_confirmation(&account.email, &token, &token_id);
    }
    Ok(())
}

fn email_data(account: &Account) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("email".into(), Value::String(account.email.clone()));
    data
}

fn account_name_in_use() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "AccountNameInUse",
        "name already in use",
    )
}

fn conflict_as_name_in_use(e: super::AppError) -> ApiError {
    if store::is_conflict(&e) {
        account_name_in_use()
    } else {
        e.into()
    }
}

fn confirm(app: &AppServices, token: &str, token_id: &str) -> Result<(), ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "UserpassTokenInvalid",
            "invalid token data",
        )
    };
    let mut store = app.store()?;
    let (account, hash) = store.account_by_token(token_id)?.ok_or_else(invalid)?;
    if hash != tokens::secret_hash(token) || account.user_id.is_some() {
        return Err(invalid());
    }
    let user_id = tokens::object_id()?;
    store.confirm_account(&account, &user_id, &email_data(&account), tokens::now())?;
    Ok(())
}

fn resend_confirmation(app: &AppServices, email: &str) -> Result<(), ApiError> {
    let store = app.store()?;
    let account = store
        .account(&email_key(email))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "UserNotFound", "user not found"))?;
    if account.user_id.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "UserAlreadyConfirmed",
            "already confirmed",
        ));
    }
    let (token, token_id) = (tokens::secret()?, tokens::object_id()?);
    store.set_account_token(&account.id, &token_id, &tokens::secret_hash(&token))?;
    drop(store);
    app.send_confirmation(&account.email, &token, &token_id);
    Ok(())
}
