//! Access tokens: JWTs verified with `ring`, signed with HS256 (a shared secret), RS256 (RSA
//! PKCS#1 v1.5 with SHA-256) or EdDSA (Ed25519).
//!
//! A token names its holder (`sub`), expires (`exp`, seconds since the Unix epoch, required) and
//! lists the server paths the holder may sync (`paths`, an array of strings; `"*"` allows every
//! path). The server is configured with exactly one key, and a token's `alg` header must name
//! that key's algorithm (so an RS256 public key can never be used as an HS256 secret).
//! Malformed, oversized and wrongly signed tokens are refused with 203, expired ones with 202,
//! and a path the token does not list with 206. Key files that cannot be used are a [`KeyError`].

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{self, KeyPair};
use ring::{hmac, rand};

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

/// A key file or secret that cannot be used: what is wrong and what would work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// The JWT algorithms Tandem accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys of 2048 to 8192 bits).
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// The name in a JWT header.
    pub fn jwt_name(self) -> &'static str {
        match self {
            Algorithm::Hs256 => "HS256",
            Algorithm::Rs256 => "RS256",
            Algorithm::EdDsa => "EdDSA",
        }
    }
}

#[derive(Clone)]
enum VerifyKey {
    Hs256(hmac::Key),
    /// RSAPublicKey (PKCS#1) DER.
    Rs256(Vec<u8>),
    /// The 32 raw public key bytes.
    EdDsa(Vec<u8>),
}

/// Verifies access tokens with one configured key.
#[derive(Clone)]
pub struct Authenticator {
    key: VerifyKey,
}

fn bad(why: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadAuthentication, why)
}
/// JWT segments: base64url without padding (RFC 7515 section 2); padding, the standard
/// alphabet and non-zero trailing bits are refused.
fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// One DER element: its tag and contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Splits a SubjectPublicKeyInfo into its algorithm OID and key bits.
fn parse_spki(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, spki, []) = der_element(der)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der_element(spki)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    let (0x03, bits, []) = der_element(rest)? else {
        return None;
    };
    // The first byte of a BIT STRING counts unused bits; keys use whole bytes.
    let (0, key) = bits.split_first()? else {
        return None;
    };
    Some((oid, key))
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with this shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Authenticator {
            key: VerifyKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        }
    }

    /// An authenticator for RS256 or EdDSA tokens, from the issuer's public key in PEM
    /// (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo, as `openssl pkey -pubout` writes;
    /// or `-----BEGIN RSA PUBLIC KEY-----`, PKCS#1). The key's type picks the algorithm.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let unusable = |why: &str| KeyError(format!("public key: {why}"));
        let (label, der) = pem_decode(pem).ok_or_else(|| unusable("not a PEM file"))?;
        let key = match label.as_str() {
            "RSA PUBLIC KEY" => VerifyKey::Rs256(der),
            "PUBLIC KEY" => match parse_spki(&der) {
                Some((OID_RSA_ENCRYPTION, key)) => VerifyKey::Rs256(key.to_vec()),
                Some((OID_ED25519, key)) if key.len() == 32 => VerifyKey::EdDsa(key.to_vec()),
                Some(_) => return Err(unusable("only RSA and Ed25519 keys are supported")),
                None => return Err(unusable("malformed SubjectPublicKeyInfo")),
            },
            other => {
                return Err(unusable(&format!(
                    "expected a PUBLIC KEY or RSA PUBLIC KEY section, found {other}"
                )))
            }
        };
        if let VerifyKey::Rs256(der) = &key {
            // Reject keys ring would refuse at every verification (too small, malformed).
            let (0x30, fields, []) =
                der_element(der).ok_or_else(|| unusable("malformed RSA key"))?
            else {
                return Err(unusable("malformed RSA key"));
            };
            let (0x02, modulus, _) =
                der_element(fields).ok_or_else(|| unusable("malformed RSA key"))?
            else {
                return Err(unusable("malformed RSA key"));
            };
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) {
                return Err(unusable("RSA keys must have 2048 to 8192 bits"));
            }
        }
        Ok(Authenticator { key })
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            VerifyKey::Hs256(_) => Algorithm::Hs256,
            VerifyKey::Rs256(_) => Algorithm::Rs256,
            VerifyKey::EdDsa(_) => Algorithm::EdDsa,
        }
    }

    fn check_signature(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            VerifyKey::Hs256(key) => hmac::verify(key, signing_input, signature).is_ok(),
            VerifyKey::Rs256(der) => {
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
                    .verify(signing_input, signature)
                    .is_ok()
            }
            VerifyKey::EdDsa(raw) => signature::UnparsedPublicKey::new(&signature::ED25519, raw)
                .verify(signing_input, signature)
                .is_ok(),
        }
    }

    /// Verifies a token now.
    pub fn verify(&self, token: &str) -> Result<Claims, ProtocolError> {
        self.verify_at(token, super::unix_now())
    }

    /// Verifies a token at time `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, ProtocolError> {
        let claims = self.verify_jwt_at(token, now).map_err(|e| match e {
            JwtError::Expired => {
                ProtocolError::new(ErrorCode::TokenExpired, "access token expired")
            }
            JwtError::Invalid(why) => bad(why),
        })?;
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
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

    /// Verifies a JWT's shape, `alg`, signature and `exp` (a required whole number of seconds
    /// since the Unix epoch, which must be after `now`) and returns its claims object, whatever
    /// else it holds (no Tandem `paths` needed). Used for the App Services tokens and for
    /// `custom-token` logins.
    pub fn verify_jwt_at(
        &self,
        token: &str,
        now: u64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
        let invalid = |why: &str| JwtError::Invalid(why.to_owned());
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Invalid(format!(
                "token longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("a token has three dot-separated parts"));
        };
        let signing_input = &token[..header.len() + 1 + payload.len()];
        let header_json =
            b64url_decode(header).ok_or_else(|| invalid("token header is not base64url"))?;
        let header: serde_json::Value = serde_json::from_slice(&header_json)
            .map_err(|_| invalid("token header is not JSON"))?;
        let expected = self.algorithm().jwt_name();
        if header.get("alg").and_then(|a| a.as_str()) != Some(expected) {
            return Err(JwtError::Invalid(format!(
                "token algorithm must be {expected} (the server's configured key)"
            )));
        }
        let signature =
            b64url_decode(signature).ok_or_else(|| invalid("token signature is not base64url"))?;
        if !self.check_signature(signing_input.as_bytes(), &signature) {
            return Err(invalid("token signature does not verify"));
        }
        let claims_json =
            b64url_decode(payload).ok_or_else(|| invalid("token claims are not base64url"))?;
        let serde_json::Value::Object(claims) = serde_json::from_slice(&claims_json)
            .map_err(|_| invalid("token claims are not JSON"))?
        else {
            return Err(invalid("token claims are not a JSON object"));
        };
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| invalid("token has no numeric exp"))?;
        if exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

/// Why [`Authenticator::verify_jwt_at`] refused a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Correctly signed, but `exp` has passed.
    Expired,
    /// Malformed, wrongly signed, of another algorithm, or without a numeric `exp`.
    Invalid(String),
}

enum SigningKey {
    Hs256(hmac::Key),
    Rs256(signature::RsaKeyPair),
    EdDsa(signature::Ed25519KeyPair),
}

/// Issues access tokens: for tests, the demo and `tandem-server --issue-token`. Production
/// deployments usually issue tokens from their own identity service with the private key.
pub struct TokenSigner {
    key: SigningKey,
}

impl TokenSigner {
    /// Signs HS256 tokens with this shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        TokenSigner {
            key: SigningKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret)),
        }
    }

    /// Signs with a private key in PEM: RSA (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)
    /// signs RS256, Ed25519 (PKCS#8) signs EdDSA.
    pub fn from_private_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        let unusable = |why: String| KeyError(format!("private key: {why}"));
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| unusable(format!("not a PEM private key ({e})")))?;
        let key = match der {
            PrivateKeyDer::Pkcs1(der) => signature::RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map(SigningKey::Rs256)
                .map_err(|e| unusable(format!("RSA key rejected: {e}")))?,
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) = signature::RsaKeyPair::from_pkcs8(der) {
                    SigningKey::Rs256(pair)
                } else {
                    signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                        .map(SigningKey::EdDsa)
                        .map_err(|_| unusable("only RSA and Ed25519 keys are supported".into()))?
                }
            }
            _ => return Err(unusable("only RSA and Ed25519 keys are supported".into())),
        };
        Ok(TokenSigner { key })
    }

    /// A fresh Ed25519 key pair (for tests): the signer and its public key in PEM.
    pub fn generate_ed25519() -> Result<(Self, String), KeyError> {
        let rng = rand::SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyError("no randomness to generate a key".into()))?;
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| KeyError(format!("generated key rejected: {e}")))?;
        // SubjectPublicKeyInfo for Ed25519: a fixed 12-byte prefix, then the 32 key bytes.
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let pem = pem_encode("PUBLIC KEY", &spki);
        Ok((
            TokenSigner {
                key: SigningKey::EdDsa(pair),
            },
            pem,
        ))
    }

    /// The algorithm this signer's tokens carry.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            SigningKey::Hs256(_) => Algorithm::Hs256,
            SigningKey::Rs256(_) => Algorithm::Rs256,
            SigningKey::EdDsa(_) => Algorithm::EdDsa,
        }
    }

    /// A token for `sub`, valid until `exp` (seconds since the Unix epoch), for `paths`.
    pub fn sign(&self, sub: &str, exp: u64, paths: &[&str]) -> Result<String, KeyError> {
        self.sign_claims(&serde_json::json!({ "sub": sub, "exp": exp, "paths": paths }))
    }

    /// A token carrying `claims` (any JSON object) with this signer's `alg` in the header:
    /// three base64url segments, the last the non-empty signature.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> Result<String, KeyError> {
        let header = serde_json::json!({ "alg": self.algorithm().jwt_name(), "typ": "JWT" });
        let signing_input = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        );
        let signature = match &self.key {
            SigningKey::Hs256(key) => hmac::sign(key, signing_input.as_bytes()).as_ref().to_vec(),
            SigningKey::Rs256(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rand::SystemRandom::new(),
                    signing_input.as_bytes(),
                    &mut out,
                )
                .map_err(|_| KeyError("RSA signing failed".into()))?;
                out
            }
            SigningKey::EdDsa(pair) => pair.sign(signing_input.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{signing_input}.{}", b64url_encode(&signature)))
    }

    /// The [`Authenticator`] that verifies this signer's tokens: the same HS256 secret, or the
    /// public half of the RSA or Ed25519 key pair.
    pub fn authenticator(&self) -> Authenticator {
        let key = match &self.key {
            SigningKey::Hs256(key) => VerifyKey::Hs256(key.clone()),
            SigningKey::Rs256(pair) => VerifyKey::Rs256(pair.public().as_ref().to_vec()),
            SigningKey::EdDsa(pair) => VerifyKey::EdDsa(pair.public_key().as_ref().to_vec()),
        };
        Authenticator { key }
    }
}

/// PEM text for one DER section (RFC 7468: standard padded base64, 64-character lines).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The first PEM section of `text`: its label and decoded bytes (whitespace in the body is
/// skipped). `None` for anything else, an empty body included.
fn pem_decode(text: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(text).ok()?;
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----")?;
    let end_marker = format!("-----END {label}-----");
    let (body, _) = rest.split_once(&end_marker)?;
    let body: Vec<u8> = body.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(body).ok()?;
    (!der.is_empty()).then(|| (label.to_owned(), der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa-public.pem");
    const RSA_PUBLIC_PKCS1: &[u8] = include_bytes!("../../tests/keys/rsa-public-pkcs1.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519-private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519-public.pem");

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

    fn assert_refused(auth: &Authenticator, token: &str, code: ErrorCode) {
        assert_eq!(
            auth.verify_at(token, 1_000).unwrap_err().code,
            code,
            "{token}"
        );
    }

    #[test]
    fn hs256_tokens_verify_expire_and_are_tamper_evident() {
        let auth = Authenticator::hs256(b"secret");
        let token = TokenSigner::hs256(b"secret")
            .sign("ann", 2_000, &["/a", "/b"])
            .unwrap();
        let claims = auth.verify_at(&token, 1_000).unwrap();
        assert_eq!(claims.sub, "ann");
        assert!(claims.allows("/a") && !claims.allows("/c"));
        assert_eq!(
            auth.verify_at(&token, 2_000).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        assert_refused(
            &Authenticator::hs256(b"other"),
            &token,
            ErrorCode::BadAuthentication,
        );
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert_refused(&auth, &tampered, ErrorCode::BadAuthentication);
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(3000)] {
            assert_refused(&auth, garbage, ErrorCode::BadAuthentication);
        }
        let none = format!(
            "{}.{}.",
            b64url_encode(br#"{"alg":"none"}"#),
            b64url_encode(b"{}")
        );
        assert_refused(&auth, &none, ErrorCode::BadAuthentication);
    }

    #[test]
    fn rs256_tokens_verify_with_either_public_key_form() {
        let signer = TokenSigner::from_private_key_pem(RSA_PRIVATE).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::Rs256);
        let token = signer.sign("bob", 2_000, &["/x"]).unwrap();
        for public in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
            let auth = Authenticator::from_public_key_pem(public).unwrap();
            assert_eq!(auth.algorithm(), Algorithm::Rs256);
            let claims = auth.verify_at(&token, 1_000).unwrap();
            assert_eq!((claims.sub.as_str(), claims.exp), ("bob", 2_000));
            assert!(claims.allows("/x") && !claims.allows("/y"));
            assert_eq!(
                auth.verify_at(&token, 3_000).unwrap_err().code,
                ErrorCode::TokenExpired
            );
        }
        // A token whose signature bytes were flipped does not verify.
        let auth = Authenticator::from_public_key_pem(RSA_PUBLIC).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = b64url_decode(sig).unwrap();
        sig[10] ^= 1;
        assert_refused(
            &auth,
            &format!("{input}.{}", b64url_encode(&sig)),
            ErrorCode::BadAuthentication,
        );
    }

    #[test]
    fn eddsa_tokens_verify_from_files_and_generated_keys() {
        let signer = TokenSigner::from_private_key_pem(ED_PRIVATE).unwrap();
        assert_eq!(signer.algorithm(), Algorithm::EdDsa);
        let auth = Authenticator::from_public_key_pem(ED_PUBLIC).unwrap();
        let token = signer.sign("cy", 2_000, &["*"]).unwrap();
        assert!(auth.verify_at(&token, 1_000).unwrap().allows("/anything"));

        let (generated, pem) = TokenSigner::generate_ed25519().unwrap();
        let generated_auth = Authenticator::from_public_key_pem(pem.as_bytes()).unwrap();
        let token2 = generated.sign("dee", 2_000, &["/p"]).unwrap();
        assert_eq!(generated_auth.verify_at(&token2, 1_000).unwrap().sub, "dee");
        // Another key's token is refused.
        assert_refused(&generated_auth, &token, ErrorCode::BadAuthentication);
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // An HS256 token whose "secret" is the RSA public key file must not pass an RS256 server.
        let rs = Authenticator::from_public_key_pem(RSA_PUBLIC).unwrap();
        let forged = TokenSigner::hs256(RSA_PUBLIC)
            .sign("eve", 2_000, &["*"])
            .unwrap();
        assert_refused(&rs, &forged, ErrorCode::BadAuthentication);
        // An EdDSA token does not pass an RS256 server, nor an RS256 token an HS256 one.
        let ed = TokenSigner::from_private_key_pem(ED_PRIVATE).unwrap();
        assert_refused(
            &rs,
            &ed.sign("eve", 2_000, &["*"]).unwrap(),
            ErrorCode::BadAuthentication,
        );
        let rsa = TokenSigner::from_private_key_pem(RSA_PRIVATE).unwrap();
        assert_refused(
            &Authenticator::hs256(b"secret"),
            &rsa.sign("eve", 2_000, &["*"]).unwrap(),
            ErrorCode::BadAuthentication,
        );
    }

    #[test]
    fn unusable_key_files_are_key_errors() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "not a PEM file"),
            (b"-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n", "not a PEM file"),
            (b"not pem at all", "not a PEM file"),
            (RSA_PRIVATE, "expected a PUBLIC KEY or RSA PUBLIC KEY section, found PRIVATE KEY"),
            (
                b"-----BEGIN PUBLIC KEY-----\nMAMCAQA=\n-----END PUBLIC KEY-----\n",
                "malformed SubjectPublicKeyInfo",
            ),
            (
                // SPKI of a P-256 key: a real key of an unsupported type.
                b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENyEOWiXZVd6gn8K6DXY2aZTjkhfL\npy+1l0qpnw9tidk96y6XP81SjF/DaJglSdV7mirgINSKEjET3bzB1GBxqQ==\n-----END PUBLIC KEY-----\n",
                "only RSA and Ed25519",
            ),
        ];
        for (pem, expected) in cases {
            let err = Authenticator::from_public_key_pem(pem).err().unwrap();
            assert!(err.0.contains(expected), "{err} should say {expected}");
        }
        let err = TokenSigner::from_private_key_pem(RSA_PUBLIC).err().unwrap();
        assert!(err.0.contains("private key"), "{err}");
    }

    #[test]
    fn der_reader_refuses_truncation_and_overlong_lengths() {
        assert_eq!(der_element(&[]), None);
        assert_eq!(der_element(&[0x30]), None);
        assert_eq!(der_element(&[0x30, 0x05, 0x01]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
        assert_eq!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(
            der_element(&[0x02, 0x01, 0x07, 0xff]),
            Some((0x02, &[7u8][..], &[0xffu8][..]))
        );
    }

    #[test]
    fn derived_authenticators_verify_their_signers_tokens() {
        let signers = [
            TokenSigner::hs256(b"0123456789abcdef"),
            TokenSigner::from_private_key_pem(RSA_PRIVATE).unwrap(),
            TokenSigner::from_private_key_pem(ED_PRIVATE).unwrap(),
        ];
        for signer in &signers {
            let auth = signer.authenticator();
            assert_eq!(auth.algorithm(), signer.algorithm());
            let token = signer
                .sign_claims(&serde_json::json!({"sub": "u", "exp": 2_000, "typ": "access"}))
                .unwrap();
            let claims = auth.verify_jwt_at(&token, 1_000).unwrap();
            assert_eq!(claims["typ"], "access");
            assert_eq!(auth.verify_jwt_at(&token, 2_000), Err(JwtError::Expired));
            // Without `paths` the Tandem check grants nothing, but the signature holds.
            assert!(auth.verify_at(&token, 1_000).unwrap().paths.is_empty());
        }
        // The derived RSA key is the one in the public key file.
        let file = Authenticator::from_public_key_pem(RSA_PUBLIC).unwrap();
        let token = signers[1]
            .sign_claims(&serde_json::json!({"exp": 2_000}))
            .unwrap();
        assert!(file.verify_jwt_at(&token, 1_000).is_ok());
        let no_exp = signers[0]
            .sign_claims(&serde_json::json!({"sub": "u"}))
            .unwrap();
        assert!(matches!(
            signers[0].authenticator().verify_jwt_at(&no_exp, 1_000),
            Err(JwtError::Invalid(_))
        ));
        let not_object = signers[0].sign_claims(&serde_json::json!([1])).unwrap();
        assert!(matches!(
            signers[0].authenticator().verify_jwt_at(&not_object, 1_000),
            Err(JwtError::Invalid(_))
        ));
    }
}
