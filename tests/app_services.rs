//! The App Services HTTP API driven in-process through `AppServices::router()`: every route and
//! error path, with the checks realm-core applies (`realm-wire-compat.md` §1): exact
//! `Content-Type: application/json`, the keys it requires, JWT shape and claims, no `error` key
//! in success bodies, 401 only for invalid credentials.
#![cfg(feature = "server")]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use tandem::server::app::{admin, AccessTokenError, AppConfig, AppServices, Provider, RequestTls};
use tandem::server::{Authenticator, TokenSigner};
use tower::ServiceExt;

const APP: &str = "tandem-test-abcde";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

/// A scratch directory removed on drop, or none ([`Dir::none`]: a harness on another's).
struct Dir(Option<tempfile::TempDir>);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tandem-app-{name}-"))
            .tempdir()
            .unwrap();
        Dir(Some(dir))
    }

    fn none() -> Dir {
        Dir(None)
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("a scratch directory").path()
    }
}

fn config() -> AppConfig {
    let mut config = AppConfig::new(APP, TokenSigner::hs256(b"app services test secret"));
    config.providers = Provider::ALL.to_vec();
    config.custom_token_key = Some(Authenticator::hs256(b"custom issuer secret 0123"));
    config
}

struct Harness {
    app: Arc<AppServices>,
    _dir: Dir,
}

/// A response: status, the Content-Type value, and the body (JSON, or Null when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body["error_code"].as_str().unwrap_or_default()
    }

    fn expect_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.error_code()),
            (status, code),
            "{:?}",
            self.body
        );
    }
}

impl Harness {
    fn new(name: &str, config: AppConfig) -> Harness {
        let dir = Dir::new(name);
        let app = Arc::new(AppServices::open(config, dir.path()).unwrap());
        Harness { app, _dir: dir }
    }

    async fn request(&self, request: Request<Body>) -> Reply {
        let response = self.app.router().oneshot(request).await.unwrap();
        let status = response.status();
        assert!(!status.is_redirection(), "never 3xx");
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            // realm-core parses error JSON only under this exact value (§1.8).
            assert_eq!(content_type.as_deref(), Some("application/json"));
            serde_json::from_slice(&bytes).unwrap()
        };
        if status.is_success() {
            if let Value::Object(map) = &body {
                assert!(
                    !map.contains_key("error") && !map.contains_key("error_code"),
                    "success bodies carry no error keys: {body}"
                );
            }
        } else {
            assert!(body["error"].is_string(), "{status}: {body}");
            assert!(body["error_code"].is_string(), "{status}: {body}");
        }
        Reply { status, body }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sync.example.com:7800");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json;charset=utf-8");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.request(request.body(body).unwrap()).await
    }

    async fn login(&self, provider: &str, body: Value) -> Reply {
        let path = format!("/api/client/v2.0/app/{APP}/auth/providers/{provider}/login");
        self.call("POST", &path, None, Some(body)).await
    }

    async fn userpass(&self, action: &str, body: Value) -> Reply {
        let path = format!("/api/client/v2.0/app/{APP}/auth/providers/local-userpass/{action}");
        self.call("POST", &path, None, Some(body)).await
    }

    /// Logs in and checks the response and both tokens as realm-core does.
    async fn logged_in(&self, provider: &str, body: Value) -> Login {
        let reply = self.login(provider, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        for key in ["user_id", "access_token", "refresh_token", "device_id"] {
            assert!(
                reply.body[key].is_string(),
                "login lacks {key}: {}",
                reply.body
            );
        }
        let login = Login {
            user_id: reply.body["user_id"].as_str().unwrap().to_owned(),
            access: reply.body["access_token"].as_str().unwrap().to_owned(),
            refresh: reply.body["refresh_token"].as_str().unwrap().to_owned(),
        };
        let access = claims(&login.access);
        assert_eq!(access["typ"], "access");
        assert_eq!(access["sub"], login.user_id.as_str());
        assert!(access["user_data"].is_object());
        let refresh = claims(&login.refresh);
        assert_eq!(refresh["typ"], "refresh");
        assert!(refresh["sid"].is_string());
        login
    }

    /// POST /auth/session: a new access token for this refresh token.
    async fn refresh(&self, refresh: &str) -> Reply {
        self.call("POST", "/api/client/v2.0/auth/session", Some(refresh), None)
            .await
    }

    /// DELETE /auth/session: log this refresh token's session out.
    async fn logout(&self, refresh: &str) -> Reply {
        self.call(
            "DELETE",
            "/api/client/v2.0/auth/session",
            Some(refresh),
            None,
        )
        .await
    }

    async fn profile(&self, access: &str) -> Reply {
        self.call("GET", "/api/client/v2.0/auth/profile", Some(access), None)
            .await
    }
}

struct Login {
    user_id: String,
    access: String,
    refresh: String,
}

/// A JWT's claims, after checking the shape realm-core's `RealmJWT` needs (§1.10): three
/// segments, non-empty signature, integer `exp` and `iat`, `user_data` an object if present.
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    assert!(!parts[0].is_empty() && !parts[2].is_empty(), "{token}");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert!(claims["exp"].is_i64() && claims["iat"].is_i64(), "{claims}");
    if let Some(user_data) = claims.get("user_data") {
        assert!(user_data.is_object(), "{claims}");
    }
    claims
}

fn location_path(app: &str) -> String {
    format!("/api/client/v2.0/app/{app}/location")
}

#[tokio::test]
async fn location_answers_the_request_origin_or_the_public_url() {
    let h = Harness::new("location", config());
    let reply = h.call("GET", &location_path(APP), None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"deployment_model": "GLOBAL", "location": "US-VA",
               "hostname": "http://sync.example.com:7800",
               "ws_hostname": "ws://sync.example.com:7800"})
    );
    let mut request = Request::get(location_path(APP))
        .header("host", "secure.example.com")
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(RequestTls(true));
    let reply = h.request(request).await;
    assert_eq!(reply.body["hostname"], "https://secure.example.com");
    assert_eq!(reply.body["ws_hostname"], "wss://secure.example.com");

    let reply = h.call("GET", &location_path("other-app"), None, None).await;
    reply.expect_error(StatusCode::NOT_FOUND, "InvalidParameter");
    let no_host = Request::get(location_path(APP))
        .body(Body::empty())
        .unwrap();
    h.request(no_host)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "BadRequest");

    let mut public = config();
    public.public_url = Some("https://realm.example.org".into());
    let h = Harness::new("location-public", public);
    let reply = h.call("GET", &location_path(APP), None, None).await;
    assert_eq!(reply.body["hostname"], "https://realm.example.org");
    assert_eq!(reply.body["ws_hostname"], "wss://realm.example.org");
}

#[tokio::test]
async fn anonymous_login_profile_refresh_logout() {
    let h = Harness::new("anon", config());
    let body = json!({"provider": "anon-user", "options": {"device": {"appId": APP}}});
    let first = h.logged_in("anon-user", body.clone()).await;
    let second = h.logged_in("anon-user", body).await;
    assert_ne!(first.user_id, second.user_id, "a new user every time");
    assert_eq!(
        h.app.verify_access_token(&first.access).unwrap().user_id,
        first.user_id
    );

    let profile = h.profile(&first.access).await;
    assert_eq!(profile.status, StatusCode::OK);
    let identities = profile.body["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["provider_type"], "anon-user");
    assert!(identities[0]["id"].is_string());
    assert_eq!(profile.body["data"], json!({}));

    // A refresh token gets a new access token; an access token is not a refresh token.
    let refreshed = h.refresh(&first.refresh).await;
    assert_eq!(refreshed.status, StatusCode::CREATED);
    let access = refreshed.body["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["sub"], first.user_id.as_str());
    assert!(h.app.verify_access_token(access).is_ok());
    h.refresh(&first.access)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
    assert!(matches!(
        h.app.verify_access_token(&first.refresh),
        Err(AccessTokenError::Invalid(_))
    ));

    // Logout ends the session: the refresh token stops working; logging out again is fine.
    let out = h.logout(&first.refresh).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    h.refresh(&first.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
    let again = h.logout(&first.refresh).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    // The anonymous user had no other session: it is gone with its access token.
    assert!(matches!(
        h.app.verify_access_token(&first.access),
        Err(AccessTokenError::Invalid(_))
    ));
    // The other user's session is untouched.
    let other = h.refresh(&second.refresh).await;
    assert_eq!(other.status, StatusCode::CREATED);

    for bad in ["", "garbage", "a.b.c"] {
        h.refresh(bad).await.expect_error(
            StatusCode::UNAUTHORIZED,
            if bad.is_empty() {
                "MissingAuthReq"
            } else {
                "InvalidSession"
            },
        );
    }
    h.call("GET", "/api/client/v2.0/auth/profile", None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "MissingAuthReq");
}

#[tokio::test]
async fn expired_and_foreign_access_tokens_are_refused() {
    let mut short = config();
    short.access_token_lifetime = Duration::ZERO;
    let h = Harness::new("expired", short);
    let login = h
        .logged_in("anon-user", json!({"provider": "anon-user"}))
        .await;
    assert_eq!(
        h.app.verify_access_token(&login.access),
        Err(AccessTokenError::Expired)
    );
    // Profile answers 401 so the client refreshes and retries (§1.9).
    h.profile(&login.access)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
    // Still valid a second before expiry.
    let exp = claims(&login.access)["exp"].as_u64().unwrap();
    assert!(h.app.verify_access_token_at(&login.access, exp - 1).is_ok());

    // A token signed with another key is invalid, not expired.
    let foreign = TokenSigner::hs256(b"some other secret value")
        .sign_claims(
            &json!({"typ": "access", "sub": login.user_id, "iat": 1, "exp": 4_000_000_000u64}),
        )
        .unwrap();
    assert!(matches!(
        h.app.verify_access_token(&foreign),
        Err(AccessTokenError::Invalid(_))
    ));
}

#[tokio::test]
async fn deleting_a_user_invalidates_its_tokens() {
    let h = Harness::new("delete", config());
    let login = h
        .logged_in("anon-user", json!({"provider": "anon-user"}))
        .await;
    let deleted = h
        .call(
            "DELETE",
            "/api/client/v2.0/auth/delete",
            Some(&login.access),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(matches!(
        h.app.verify_access_token(&login.access),
        Err(AccessTokenError::Invalid(_))
    ));
    h.profile(&login.access)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
    h.refresh(&login.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
}

#[tokio::test]
async fn email_password_registration_and_login() {
    let h = Harness::new("userpass", config());
    let reply = h
        .userpass(
            "register",
            json!({"email": " Ann@Example.com ", "password": "secret1"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    h.userpass(
        "register",
        json!({"email": "ann@example.COM", "password": "another1"}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "AccountNameInUse");
    h.userpass(
        "register",
        json!({"email": "bob@example.com", "password": "short"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    let long = "x".repeat(129);
    h.userpass(
        "register",
        json!({"email": "bob@example.com", "password": long}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    h.userpass(
        "register",
        json!({"email": "not an address", "password": "secret1"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    h.userpass("register", json!({"email": "bob@example.com"}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MissingParameter");

    let login = |user: &str, password: &str| json!({"provider": "local-userpass", "username": user, "password": password});
    h.login("local-userpass", login("ann@example.com", "wrong12"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidPassword");
    h.login("local-userpass", login("nobody@example.com", "secret1"))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidPassword");
    let ann = h
        .logged_in("local-userpass", login("ANN@example.com", "secret1"))
        .await;
    let again = h
        .logged_in("local-userpass", login("ann@example.com", "secret1"))
        .await;
    assert_eq!(ann.user_id, again.user_id);
    // Logging one session out leaves the user and its other session alone.
    let out = h.logout(&ann.refresh).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    h.refresh(&ann.refresh)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");
    let other = h.refresh(&again.refresh).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert!(h.app.verify_access_token(&ann.access).is_ok());
    let profile = h.profile(&ann.access).await;
    assert_eq!(
        profile.body["identities"][0]["provider_type"],
        "local-userpass"
    );
    assert_eq!(profile.body["data"], json!({"email": "Ann@Example.com"}));

    h.userpass("confirm/send", json!({"email": "ann@example.com"}))
        .await
        .expect_error(StatusCode::CONFLICT, "UserAlreadyConfirmed");
    h.userpass("confirm/send", json!({"email": "zed@example.com"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "UserNotFound");
    h.userpass("reset/send", json!({"email": "ann@example.com"}))
        .await
        .expect_error(StatusCode::NOT_IMPLEMENTED, "ServiceNotFound");
    h.userpass(
        "reset",
        json!({"password": "newpass1", "token": "t", "tokenId": "i"}),
    )
    .await
    .expect_error(StatusCode::NOT_IMPLEMENTED, "ServiceNotFound");
    h.userpass(
        "reset/call",
        json!({"email": "ann@example.com", "password": "x", "arguments": []}),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "FunctionNotFound");
}

#[tokio::test]
async fn manual_confirmation_with_token_and_token_id() {
    let mut manual = config();
    manual.auto_confirm = false;
    let h = Harness::new("confirm", manual);
    let sent: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let sink = sent.clone();
    h.app
        .set_confirmation_sink(Box::new(move |email, token, id| {
            sink.lock()
                .unwrap()
                .push((email.into(), token.into(), id.into()));
        }));
    let reply = h
        .userpass(
            "register",
            json!({"email": "cy@example.com", "password": "secret1"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let login =
        json!({"provider": "local-userpass", "username": "cy@example.com", "password": "secret1"});
    h.login("local-userpass", login.clone())
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "AuthError");

    // Resending replaces the token: the first one no longer confirms.
    let reply = h
        .userpass("confirm/send", json!({"email": "cy@example.com"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|(email, ..)| email == "cy@example.com"));
    let (_, old_token, old_id) = &sent[0];
    let (_, token, id) = &sent[1];
    h.userpass("confirm", json!({"token": old_token, "tokenId": old_id}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "UserpassTokenInvalid");
    h.userpass("confirm", json!({"token": old_token, "tokenId": id}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "UserpassTokenInvalid");
    let reply = h
        .userpass("confirm", json!({"token": token, "tokenId": id}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    h.userpass("confirm", json!({"token": token, "tokenId": id}))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "UserpassTokenInvalid");
    h.logged_in("local-userpass", login).await;
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

#[tokio::test]
async fn custom_token_login_with_each_algorithm() {
    let (generated, generated_public) = TokenSigner::generate_ed25519().unwrap();
    let cases = [
        (
            "hs256",
            TokenSigner::hs256(b"custom issuer secret 0123"),
            Authenticator::hs256(b"custom issuer secret 0123"),
        ),
        (
            "rs256",
            TokenSigner::from_private_key_pem(&pem("rsa-private.pem")).unwrap(),
            Authenticator::from_public_key_pem(&pem("rsa-public.pem")).unwrap(),
        ),
        (
            "eddsa",
            TokenSigner::from_private_key_pem(&pem("ed25519-private.pem")).unwrap(),
            Authenticator::from_public_key_pem(&pem("ed25519-public.pem")).unwrap(),
        ),
    ];
    for (name, issuer, key) in cases {
        let mut config = config();
        config.custom_token_key = Some(key);
        let h = Harness::new(&format!("custom-{name}"), config);
        let exp = 4_000_000_000u64;
        let token = issuer
            .sign_claims(&json!({"sub": "ext-42", "exp": exp, "name": "Dee", "email": "dee@example.com", "age": 7}))
            .unwrap();
        let first = h
            .logged_in(
                "custom-token",
                json!({"provider": "custom-token", "token": token}),
            )
            .await;
        let again = h
            .logged_in(
                "custom-token",
                json!({"provider": "custom-token", "token": token}),
            )
            .await;
        assert_eq!(
            first.user_id, again.user_id,
            "{name}: the sub is the identity"
        );
        let profile = h.profile(&first.access).await;
        assert_eq!(
            profile.body["identities"],
            json!([{"id": "ext-42", "provider_type": "custom-token"}])
        );
        assert_eq!(
            profile.body["data"],
            json!({"name": "Dee", "email": "dee@example.com"})
        );

        // Another key's signature, an expired token, a token without sub: 401 AuthError.
        let wrong = generated
            .sign_claims(&json!({"sub": "ext-42", "exp": exp}))
            .unwrap();
        let expired = issuer
            .sign_claims(&json!({"sub": "ext-42", "exp": 1}))
            .unwrap();
        let no_sub = issuer.sign_claims(&json!({"exp": exp})).unwrap();
        for bad in [wrong, expired, no_sub, "not.a.jwt".to_owned()] {
            h.login(
                "custom-token",
                json!({"provider": "custom-token", "token": bad}),
            )
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "AuthError");
        }
    }
    // Ed25519 from a generated key works the same way.
    let mut config = config();
    config.custom_token_key =
        Some(Authenticator::from_public_key_pem(generated_public.as_bytes()).unwrap());
    let h = Harness::new("custom-generated", config);
    let token = generated
        .sign_claims(&json!({"sub": "g", "exp": 4_000_000_000u64}))
        .unwrap();
    h.logged_in(
        "custom-token",
        json!({"provider": "custom-token", "token": token}),
    )
    .await;
}

#[tokio::test]
async fn disabled_providers_are_not_found() {
    let h = Harness::new(
        "providers",
        AppConfig::new(APP, TokenSigner::hs256(b"0123456789abcdef")),
    );
    for provider in ["local-userpass", "custom-token", "api-key", "oauth2-google"] {
        h.login(provider, json!({"provider": provider}))
            .await
            .expect_error(StatusCode::NOT_FOUND, "AuthProviderNotFound");
    }
    h.userpass("register", json!({"email": "a@b.c", "password": "secret1"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "AuthProviderNotFound");
    h.logged_in("anon-user", json!({"provider": "anon-user"}))
        .await;
}

#[tokio::test]
async fn user_api_keys_create_list_disable_login_delete() {
    let h = Harness::new("api-keys", config());
    let owner = h
        .logged_in("anon-user", json!({"provider": "anon-user"}))
        .await;
    let keys = "/api/client/v2.0/auth/api_keys";
    let created = h
        .call(
            "POST",
            keys,
            Some(&owner.refresh),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.body["_id"].as_str().unwrap().to_owned();
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(created.body["name"], "ci");
    assert_eq!(created.body["disabled"], false);
    let key = created.body["key"].as_str().unwrap().to_owned();

    h.call(
        "POST",
        keys,
        Some(&owner.refresh),
        Some(json!({"name": "ci"})),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "APIKeyAlreadyExists");
    h.call(
        "POST",
        keys,
        Some(&owner.refresh),
        Some(json!({"name": ""})),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "InvalidParameter");
    h.call("POST", keys, Some(&owner.refresh), Some(json!({})))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "MissingParameter");
    // These routes take the refresh token (§1.2); an access token is an invalid session.
    h.call("GET", keys, Some(&owner.access), None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidSession");

    let list = h.call("GET", keys, Some(&owner.refresh), None).await;
    assert_eq!(
        list.body,
        json!([{"_id": id, "name": "ci", "disabled": false}])
    );
    let one = h
        .call("GET", &format!("{keys}/{id}"), Some(&owner.refresh), None)
        .await;
    assert_eq!(
        one.body,
        json!({"_id": id, "name": "ci", "disabled": false})
    );

    // Logging in with the key gives the owner.
    let by_key = h
        .logged_in("api-key", json!({"provider": "api-key", "key": key}))
        .await;
    assert_eq!(by_key.user_id, owner.user_id);
    h.login(
        "api-key",
        json!({"provider": "api-key", "key": "0".repeat(64)}),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, "InvalidPassword");

    let disable = h
        .call(
            "PUT",
            &format!("{keys}/{id}/disable"),
            Some(&owner.refresh),
            None,
        )
        .await;
    assert_eq!(disable.status, StatusCode::NO_CONTENT);
    let one = h
        .call("GET", &format!("{keys}/{id}"), Some(&owner.refresh), None)
        .await;
    assert_eq!(one.body["disabled"], true);
    h.login("api-key", json!({"provider": "api-key", "key": key}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "AuthError");
    let enable = h
        .call(
            "PUT",
            &format!("{keys}/{id}/enable"),
            Some(&owner.refresh),
            None,
        )
        .await;
    assert_eq!(enable.status, StatusCode::NO_CONTENT);
    h.logged_in("api-key", json!({"provider": "api-key", "key": key}))
        .await;

    // Another user sees none of them and cannot touch them.
    let other = h
        .logged_in("anon-user", json!({"provider": "anon-user"}))
        .await;
    let list = h.call("GET", keys, Some(&other.refresh), None).await;
    assert_eq!(list.body, json!([]));
    h.call(
        "DELETE",
        &format!("{keys}/{id}"),
        Some(&other.refresh),
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "APIKeyNotFound");

    let deleted = h
        .call(
            "DELETE",
            &format!("{keys}/{id}"),
            Some(&owner.refresh),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    h.call("GET", &format!("{keys}/{id}"), Some(&owner.refresh), None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "APIKeyNotFound");
    h.login("api-key", json!({"provider": "api-key", "key": key}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidPassword");
    h.call(
        "PUT",
        &format!("{keys}/{id}/enable"),
        Some(&owner.refresh),
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "APIKeyNotFound");
}

#[tokio::test]
async fn server_api_keys_from_the_admin_command() {
    let h = Harness::new("server-keys", config());
    let dir = h._dir.path().to_path_buf();
    // An admin command never creates a database by accident: list and delete need an existing
    // one, and create makes one only with the app id to record in it.
    let fresh = Dir::new("server-keys-fresh");
    let missing = fresh.path().join("typo");
    assert!(admin::list_api_keys(&missing, Some(APP)).is_err());
    assert!(admin::delete_api_key(&missing, None, "0").is_err());
    assert!(admin::create_api_key(&missing, None, "x").is_err());
    assert!(!missing.join("app.sqlite").exists());
    let new = admin::create_api_key(&dir, Some(APP), "backend").unwrap();
    assert!(
        admin::create_api_key(&dir, Some(APP), "backend").is_err(),
        "names are unique"
    );
    assert!(
        admin::create_api_key(&dir, Some("another-app"), "x").is_err(),
        "app id checked"
    );
    assert_eq!(
        admin::list_api_keys(&dir, None).unwrap(),
        vec![new.info.clone()]
    );

    let login = h
        .logged_in("api-key", json!({"provider": "api-key", "key": new.key}))
        .await;
    let profile = h.profile(&login.access).await;
    assert_eq!(
        profile.body["identities"],
        json!([{"id": new.info.id, "provider_type": "api-key"}])
    );
    assert_eq!(profile.body["type"], "server");
    // A user's key list does not show server keys.
    let list = h
        .call(
            "GET",
            "/api/client/v2.0/auth/api_keys",
            Some(&login.refresh),
            None,
        )
        .await;
    assert_eq!(list.body, json!([]));

    assert!(admin::delete_api_key(&dir, None, &new.info.id).unwrap());
    assert!(!admin::delete_api_key(&dir, None, &new.info.id).unwrap());
    assert!(admin::list_api_keys(&dir, None).unwrap().is_empty());
    h.login("api-key", json!({"provider": "api-key", "key": new.key}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "InvalidPassword");
    assert!(
        h.app.verify_access_token(&login.access).is_err(),
        "its user is gone"
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_json_errors() {
    let h = Harness::new("bounds", config());
    let login = format!("/api/client/v2.0/app/{APP}/auth/providers/anon-user/login");
    let raw = |body: Vec<u8>| {
        Request::post(login.as_str())
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let big = h.request(raw(vec![b' '; 100 * 1024])).await;
    big.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "BadRequest");
    for body in [&b"{not json"[..], b"[1,2]", b"\"text\"", &[0xff, 0xfe]] {
        h.request(raw(body.to_vec()))
            .await
            .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    }
    h.login(
        "local-userpass",
        json!({"username": 5, "password": "secret1"}),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    h.call("GET", "/api/client/v2.0/nothing/here", None, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "ServiceNotFound");
    h.call("GET", &login, None, None)
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest");
    h.call(
        "POST",
        &format!("/api/client/v2.0/app/{APP}/functions/call"),
        None,
        Some(json!({"name": "f", "arguments": []})),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "FunctionNotFound");
    h.call(
        "POST",
        &format!("/api/client/v2.0/app/{APP}/auth/providers/anon-user/login?link=true"),
        None,
        Some(json!({})),
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST, "BadRequest");
    h.call(
        "POST",
        "/api/client/v2.0/app/wrong-app/auth/providers/anon-user/login",
        None,
        Some(json!({})),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "InvalidParameter");
}

#[tokio::test]
async fn users_sessions_and_accounts_survive_reopening() {
    let dir = Dir::new("reopen");
    let (access, refresh) = {
        let app = Arc::new(AppServices::open(config(), dir.path()).unwrap());
        let h = Harness {
            app,
            _dir: Dir::none(),
        };
        h.userpass(
            "register",
            json!({"email": "dee@example.com", "password": "secret1"}),
        )
        .await;
        let login = h
            .logged_in(
                "local-userpass",
                json!({"username": "dee@example.com", "password": "secret1"}),
            )
            .await;
        (login.access, login.refresh)
    };
    let app = Arc::new(AppServices::open(config(), dir.path()).unwrap());
    assert!(app.verify_access_token(&access).is_ok());
    let h = Harness {
        app,
        _dir: Dir::none(),
    };
    let reply = h.refresh(&refresh).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    h.logged_in(
        "local-userpass",
        json!({"username": "dee@example.com", "password": "secret1"}),
    )
    .await;
    // The file belongs to its app id.
    let mut other = config();
    other.app_id = "another-app".into();
    let err = AppServices::open(other, dir.path()).err().unwrap();
    assert!(err.0.contains("belongs to app"), "{err}");
    let mut bad = config();
    bad.app_id = "has/slash".into();
    assert!(AppServices::open(bad, dir.path()).is_err());
}

#[tokio::test]
async fn api_key_admin_command_creates_lists_and_deletes() {
    let dir = Dir::new("admin-cli");
    let run = |list: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem-server"))
            .args(["api-key"])
            .args(list)
            .arg("--data-dir")
            .arg(dir.path())
            .env_remove("TANDEM_CONFIG")
            .output()
            .unwrap()
    };
    let created = run(&["create", "--name", "backend", "--app-id", APP]);
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    let listed = run(&["list"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    let fields: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(fields[1..], ["enabled", "backend"], "{listed}");
    let id = fields[0].to_owned();
    assert!(!listed.contains(&key), "the key is shown only once");

    // The server logs in with it.
    let h = Harness {
        app: Arc::new(AppServices::open(config(), dir.path()).unwrap()),
        _dir: Dir::none(),
    };
    let login = h
        .logged_in("api-key", json!({"provider": "api-key", "key": key}))
        .await;
    assert_eq!(
        h.profile(&login.access).await.body["identities"][0]["provider_type"],
        "api-key"
    );

    let wrong_app = run(&["list", "--app-id", "another-app"]);
    assert!(!wrong_app.status.success());
    let deleted = run(&["delete", &id]);
    assert!(deleted.status.success(), "{deleted:?}");
    assert!(run(&["list"]).stdout.is_empty());
    let again = run(&["delete", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no server API key"));
}

#[tokio::test]
async fn the_listener_can_add_the_sync_route() {
    let h = Harness::new("sync-route", config());
    let router = h.app.router().route(
        "/api/client/v2.0/app/{app_id}/realm-sync",
        axum::routing::get(|| async { "sync" }),
    );
    let get = |path: String| {
        Request::get(path)
            .header("host", "h")
            .body(Body::empty())
            .unwrap()
    };
    let sync = router
        .clone()
        .oneshot(get(format!("/api/client/v2.0/app/{APP}/realm-sync")))
        .await
        .unwrap();
    assert_eq!(sync.status(), StatusCode::OK);
    let location = router.oneshot(get(location_path(APP))).await.unwrap();
    assert_eq!(location.status(), StatusCode::OK);
}
