//! Access tokens: JWTs signed with HS256, verified with `ring`.
//!
//! A token names its holder (`sub`), expires (`exp`, seconds since the Unix epoch, required) and
//! lists the server paths the holder may sync (`paths`, an array of strings; `"*"` allows every
//! path). Malformed, oversized and wrongly signed tokens are refused with 203, expired ones with
//! 202, and a path the token does not list with 206.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

use crate::protocol::{ErrorCode, ProtocolError};

/// Longest token accepted (the BIND limit).
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The holder.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Server paths the holder may sync; `"*"` means all.
    pub paths: Vec<String>,
}

impl Claims {
    /// Whether the token allows syncing `path`.
    pub fn allows(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == "*" || p == path)
    }
}

/// Verifies (and, for tests and tools, issues) HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct Authenticator {
    key: hmac::Key,
}

fn bad(why: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadAuthentication, why)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding (at most 4 of them).
    (bits < 6 && acc == 0).then_some(out)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// An authenticator for tokens signed with this HS256 secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Authenticator {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Issues a token (for tests and an admin tool).
    pub fn issue(&self, sub: &str, exp: u64, paths: &[&str]) -> String {
        let header = b64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({ "sub": sub, "exp": exp, "paths": paths });
        let payload = b64url_encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", b64url_encode(tag.as_ref()))
    }

    /// Verifies a token now.
    pub fn verify(&self, token: &str) -> Result<Claims, ProtocolError> {
        self.verify_at(token, now())
    }

    /// Verifies a token at time `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, ProtocolError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(bad(format!("token longer than {MAX_TOKEN_LEN} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("a token has three dot-separated parts"));
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let header_json =
            b64url_decode(header).ok_or_else(|| bad("token header is not base64url"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header_json).map_err(|_| bad("token header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(bad("token algorithm must be HS256"));
        }
        let signature =
            b64url_decode(signature).ok_or_else(|| bad("token signature is not base64url"))?;
        hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| bad("token signature does not verify"))?;
        let claims_json =
            b64url_decode(payload).ok_or_else(|| bad("token claims are not base64url"))?;
        let claims: serde_json::Value =
            serde_json::from_slice(&claims_json).map_err(|_| bad("token claims are not JSON"))?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad("token has no numeric exp"))?;
        if exp <= now {
            return Err(ProtocolError::new(
                ErrorCode::TokenExpired,
                "access token expired",
            ));
        }
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let paths = claims
            .get("paths")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Claims { sub, exp, paths })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(b64url_decode(&b64url_encode(&bytes)), Some(bytes));
        }
        assert_eq!(b64url_encode(b"hi?"), "aGk_");
        assert_eq!(b64url_decode("a"), None, "one character cannot be a byte");
        assert_eq!(
            b64url_decode("a+b/"),
            None,
            "standard alphabet is not base64url"
        );
    }

    #[test]
    fn tokens_verify_expire_and_are_tamper_evident() {
        let auth = Authenticator::hs256(b"secret");
        let token = auth.issue("ann", 2_000, &["/a", "/b"]);
        let claims = auth.verify_at(&token, 1_000).unwrap();
        assert_eq!(claims.sub, "ann");
        assert!(claims.allows("/a") && !claims.allows("/c"));
        assert_eq!(
            auth.verify_at(&token, 2_000).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        let other = Authenticator::hs256(b"other");
        assert_eq!(
            other.verify_at(&token, 1_000).unwrap_err().code,
            ErrorCode::BadAuthentication
        );
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert_eq!(
            auth.verify_at(&tampered, 1_000).unwrap_err().code,
            ErrorCode::BadAuthentication
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(3000)] {
            assert_eq!(
                auth.verify_at(garbage, 1).unwrap_err().code,
                ErrorCode::BadAuthentication
            );
        }
        let none = format!(
            "{}.{}.",
            b64url_encode(br#"{"alg":"none"}"#),
            b64url_encode(b"{}")
        );
        assert_eq!(
            auth.verify_at(&none, 1).unwrap_err().code,
            ErrorCode::BadAuthentication
        );
    }
}
