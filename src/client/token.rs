//! What the client needs to know about its access token: when it expires. The client never
//! verifies tokens (the server does); it only reads `exp` to ask its [`super::TokenProvider`]
//! for a new one in time.

/// The `exp` claim of a JWT (seconds since the Unix epoch), if the token has a readable one.
pub(crate) fn expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url(payload)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    // `"exp":` followed by digits; enough for the tokens servers issue, and never trusted.
    let at = text.find("\"exp\"")?;
    let rest = text[at + 5..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A JWT segment: base64url without padding (RFC 7515 section 2).
fn base64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    crate::sim::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_and_refuses_garbage() {
        // {"alg":"HS256"} . {"sub":"a","exp":1700000000,"paths":["*"]}
        let token =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxNzAwMDAwMDAwLCJwYXRocyI6WyIqIl19.x";
        assert_eq!(expiry(token), Some(1_700_000_000));
        assert_eq!(expiry("no dots"), None);
        assert_eq!(expiry("a.!!!.c"), None);
        assert_eq!(expiry("a.eyJzdWIiOiJhIn0.c"), None, "no exp claim");
    }
}
