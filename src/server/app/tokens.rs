//! The server's own App Services tokens, and the random ids and secrets around them.
//!
//! Both tokens are JWTs signed with [`AppConfig::signer`](super::AppConfig) (HS256, RS256 or
//! EdDSA): three base64url segments with a non-empty signature, and integer `iat` and `exp`
//! (seconds since the Unix epoch), as realm-core's `RealmJWT` requires of both
//! (`realm-wire-compat.md` §1.10, §6(c) 8).
//!
//! - access: `{"typ":"access","sub":<user id>,"iat","exp","user_data":{}}`, default 30 minutes;
//! - refresh: `{"typ":"refresh","sub":<user id>,"iat","exp","sid":<session id>}`, default
//!   60 days. `sid` names a server-side session, so logout revokes the token.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::{AccessTokenError, AppConfig, AppError};
use crate::server::JwtError;

/// Seconds since the Unix epoch (`crate::server::unix_now`).
pub fn now() -> u64 {
    crate::server::unix_now()
}

/// `N` bytes from the operating system's random source (inside a simulation, from its seeded
/// generator, `crate::sim`, so that a seed replays exactly).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], AppError> {
    let mut out = [0u8; N];
    if let Some(first) = crate::sim::simulated_random() {
        let mut next = Some(first);
        for chunk in out.chunks_mut(8) {
            let n = next
                .take()
                .or_else(crate::sim::simulated_random)
                .unwrap_or(0);
            chunk.copy_from_slice(&n.to_le_bytes()[..chunk.len()]);
        }
        return Ok(out);
    }
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| AppError("no randomness available".into()))?;
    Ok(out)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new ObjectId as 24 hex digits: 4 bytes of big-endian seconds, then 8 random bytes
/// (BSON's layout, with the counter part random).
pub fn object_id() -> Result<String, AppError> {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&(now() as u32).to_be_bytes());
    bytes[4..].copy_from_slice(&random_bytes::<8>()?);
    Ok(hex(&bytes))
}

/// Whether `text` is an ObjectId's 24 hex digits.
pub fn is_object_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new high-entropy secret (API key, confirmation token): 32 random bytes as 64 hex digits.
pub fn secret() -> Result<String, AppError> {
    Ok(hex(&random_bytes::<32>()?))
}

/// SHA-256 of a secret, as stored.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// A signed access token for `user_id`, issued at `now`.
pub fn access_token(config: &AppConfig, user_id: &str, now: u64) -> Result<String, AppError> {
    let claims = serde_json::json!({
        "typ": "access",
        "sub": user_id,
        "iat": now,
        "exp": now + config.access_token_lifetime.as_secs(),
        "user_data": {},
    });
    config
        .signer
        .sign_claims(&claims)
        .map_err(|e| AppError(e.to_string()))
}

/// A signed refresh token for session `sid` of `user_id`, expiring at `exp`.
pub fn refresh_token(
    config: &AppConfig,
    user_id: &str,
    sid: &str,
    now: u64,
    exp: u64,
) -> Result<String, AppError> {
    let claims = serde_json::json!({
        "typ": "refresh",
        "sub": user_id,
        "iat": now,
        "exp": exp,
        "sid": sid,
    });
    config
        .signer
        .sign_claims(&claims)
        .map_err(|e| AppError(e.to_string()))
}

/// The `sub` and `exp` of a token of type `typ` this server signed, verified at `now`; for
/// refresh tokens also the `sid`.
pub struct Verified {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The refresh session id (refresh tokens only).
    pub sid: Option<String>,
}

/// Verifies signature, expiry and type of one of this server's tokens (not whether its user or
/// session still exists).
pub fn verify(
    config: &AppConfig,
    token: &str,
    typ: &str,
    now: u64,
) -> Result<Verified, AccessTokenError> {
    let claims = config
        .verifier
        .verify_jwt_at(token, now)
        .map_err(|e| match e {
            JwtError::Expired => AccessTokenError::Expired,
            JwtError::Invalid(why) => AccessTokenError::Invalid(why),
        })?;
    if claims.get("typ").and_then(|t| t.as_str()) != Some(typ) {
        return Err(AccessTokenError::Invalid(format!(
            "token type is not {typ}"
        )));
    }
    let sub = claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AccessTokenError::Invalid("token has no sub".into()))?;
    Ok(Verified {
        sub: sub.to_owned(),
        exp: claims.get("exp").and_then(|e| e.as_u64()).unwrap_or(0),
        sid: claims
            .get("sid")
            .and_then(|s| s.as_str())
            .map(str::to_owned),
    })
}
