//! The App Services routes (axum) and their JSON.
//!
//! Every response body is JSON with `Content-Type: application/json` exactly: realm-core only
//! parses an error body (`{"error","error_code"}`) under that exact value
//! (`AppUtils::check_for_errors`, `realm-wire-compat.md` §1.8). Success bodies never carry a
//! top-level `error` or `error_code`; nothing answers 3xx; 401 means the presented credential
//! or token is invalid (the client refreshes or logs out on it, §1.9), never a server fault.
//! Bodies are capped at [`MAX_REQUEST_BODY`] (413).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Value};

use super::{
    check_api_key_name, providers, tokens, AppError, AppServices, RequestTls, MAX_REQUEST_BODY,
};

type App = State<Arc<AppServices>>;

/// An App Services error: HTTP status, realm-core error code name and message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(super) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            message,
        )
    }

    pub(super) fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ServiceNotFound",
            "no such App Services route on tandem-server",
        )
    }

    fn invalid_session(why: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidSession",
            format!("invalid session: {why}"),
        )
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        ApiError::internal(e.0)
    }
}

/// A JSON body with `Content-Type: application/json` (exactly, no parameters).
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &json!({ "error": self.message, "error_code": self.code }),
        )
    }
}

type Answer = Result<Response, ApiError>;

fn ok(status: StatusCode, body: Value) -> Answer {
    Ok(json_response(status, &body))
}

fn no_content() -> Answer {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The routes; see the module header.
pub fn router(app: Arc<AppServices>) -> Router {
    Router::new()
        .route("/api/client/v2.0/app/{app_id}/location", get(location))
        .route(
            "/api/client/v2.0/app/{app_id}/auth/providers/{provider}/{action}",
            post(provider_route),
        )
        .route(
            "/api/client/v2.0/app/{app_id}/auth/providers/{provider}/{action}/{sub}",
            post(provider_sub_route),
        )
        .route(
            "/api/client/v2.0/app/{app_id}/functions/call",
            get(functions).post(functions),
        )
        .route("/api/client/v2.0/auth/profile", get(profile))
        .route(
            "/api/client/v2.0/auth/session",
            post(refresh).delete(logout),
        )
        .route(
            "/api/client/v2.0/auth/delete",
            axum::routing::delete(delete_user),
        )
        .route(
            "/api/client/v2.0/auth/api_keys",
            get(list_api_keys).post(create_api_key),
        )
        .route(
            "/api/client/v2.0/auth/api_keys/{id}",
            get(fetch_api_key).delete(delete_api_key),
        )
        .route(
            "/api/client/v2.0/auth/api_keys/{id}/{action}",
            put(enable_api_key),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(app)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ServiceNotFound",
        format!(
            "no App Services route {method} {} on tandem-server",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "BadRequest",
        format!("{} does not accept {method}", uri.path()),
    )
}

fn path<T>(params: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    params
        .map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("malformed path: {e}")))
}

fn check_app(app: &AppServices, app_id: &str) -> Result<(), ApiError> {
    if app_id == app.app_id() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "InvalidParameter",
            format!("cannot find app using Client App ID {app_id:?}"),
        ))
    }
}

/// The body as JSON: an empty body is `{}`; anything else must be a JSON object.
fn body_json(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        let status = e.status();
        ApiError::new(status, "BadRequest", e.body_text())
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// `GET /app/<id>/location`: where every later request and the sync socket go (§1.3).
async fn location(
    State(app): App,
    params: Result<Path<String>, PathRejection>,
    request: Request,
) -> Answer {
    check_app(&app, &path(params)?)?;
    let (hostname, ws_hostname) = match &app.config.public_url {
        Some(url) => (url.clone(), websocket_url(url)),
        None => {
            let tls = request
                .extensions()
                .get::<RequestTls>()
                .is_some_and(|t| t.0);
            let host = request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri().authority().map(|a| a.as_str()))
                .filter(|h| is_host(h))
                .ok_or_else(|| ApiError::bad_request("the request has no usable Host header"))?;
            let (http, ws) = if tls {
                ("https", "wss")
            } else {
                ("http", "ws")
            };
            (format!("{http}://{host}"), format!("{ws}://{host}"))
        }
    };
    ok(
        StatusCode::OK,
        json!({
            "deployment_model": "GLOBAL",
            "location": "US-VA",
            "hostname": hostname,
            "ws_hostname": ws_hostname,
        }),
    )
}

/// `http://h` → `ws://h`, `https://h` → `wss://h`.
pub fn websocket_url(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", url.strip_prefix("http://").unwrap_or(url)),
    }
}

/// A Host header value: a name or address with an optional port, nothing else.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

async fn provider_route(
    State(app): App,
    params: Result<Path<(String, String, String)>, PathRejection>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (app_id, provider, action) = path(params)?;
    check_app(&app, &app_id)?;
    let body = body_json(body)?;
    if action == "login" {
        if uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "link=true"))
        {
            return Err(ApiError::bad_request(
                "linking identities to a user is not supported by tandem-server",
            ));
        }
        return ok(
            StatusCode::OK,
            providers::login(&app, &provider, &body).await?,
        );
    }
    userpass(&app, &provider, &action, &body).await
}

async fn provider_sub_route(
    State(app): App,
    params: Result<Path<(String, String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (app_id, provider, action, sub) = path(params)?;
    check_app(&app, &app_id)?;
    let body = body_json(body)?;
    userpass(&app, &provider, &format!("{action}/{sub}"), &body).await
}

async fn userpass(app: &Arc<AppServices>, provider: &str, action: &str, body: &Value) -> Answer {
    if provider != "local-userpass" {
        return Err(ApiError::not_found());
    }
    providers::userpass(app, action, body).await?;
    let status = if action == "register" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    ok(status, json!({}))
}

async fn functions(State(app): App, params: Result<Path<String>, PathRejection>) -> Answer {
    check_app(&app, &path(params)?)?;
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "FunctionNotFound",
        "tandem-server runs no functions",
    ))
}

/// The bearer token of the request.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "MissingAuthReq",
                "expected Authorization header with JWT (Bearer schema)",
            )
        })
}

/// The user of a valid access token (401 `InvalidSession` otherwise, so the client refreshes).
fn access_user(app: &AppServices, headers: &HeaderMap) -> Result<String, ApiError> {
    app.verify_access_token(bearer(headers)?)
        .map(|user| user.user_id)
        .map_err(|e| match e {
            super::AccessTokenError::Unavailable(why) => ApiError::internal(why),
            e => ApiError::invalid_session(e),
        })
}

/// The user and session of a valid refresh token whose session is still open.
fn refresh_session(app: &AppServices, headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let now = tokens::now();
    let verified = tokens::verify(&app.config, bearer(headers)?, "refresh", now)
        .map_err(ApiError::invalid_session)?;
    let sid = verified
        .sid
        .ok_or_else(|| ApiError::invalid_session("refresh token without a session"))?;
    match app.store()?.session(&sid)? {
        Some((user, expires)) if user == verified.sub && expires > now => Ok((user, sid)),
        _ => Err(ApiError::invalid_session(
            "the session was ended or has expired",
        )),
    }
}

/// `GET /auth/profile` (§1.5).
async fn profile(State(app): App, headers: HeaderMap) -> Answer {
    let user_id = access_user(&app, &headers)?;
    let profile = app
        .store()?
        .profile(&user_id)?
        .ok_or_else(|| ApiError::invalid_session("the user no longer exists"))?;
    let identities: Vec<Value> = profile
        .identities
        .iter()
        .map(|(provider, id)| json!({ "id": id, "provider_type": provider }))
        .collect();
    ok(
        StatusCode::OK,
        json!({
            "user_id": user_id,
            "identities": identities,
            "data": profile.data,
            "type": profile.kind,
        }),
    )
}

/// `POST /auth/session`: a new access token for a refresh token (§1.6). 401 `InvalidSession`
/// only when the refresh token is invalid, expired or its session ended.
async fn refresh(State(app): App, headers: HeaderMap) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let token = tokens::access_token(&app.config, &user_id, tokens::now())?;
    ok(StatusCode::CREATED, json!({ "access_token": token }))
}

/// `DELETE /auth/session`: ends the refresh token's session. A validly signed refresh token
/// whose session already ended still gets 204 (logging out twice is not an error). An
/// anonymous user without sessions left is deleted (the client has forgotten it).
async fn logout(State(app): App, headers: HeaderMap) -> Answer {
    // Checked as of time 0, so an expired refresh token still ends its session.
    let verified = tokens::verify(&app.config, bearer(&headers)?, "refresh", 0)
        .map_err(ApiError::invalid_session)?;
    let store = app.store()?;
    if let Some(sid) = verified.sid {
        store.delete_session(&sid, tokens::now())?;
    }
    store.delete_if_abandoned_anonymous(&verified.sub)?;
    no_content()
}

/// `DELETE /auth/delete`: removes the user with its identities, sessions and API keys.
async fn delete_user(State(app): App, headers: HeaderMap) -> Answer {
    let user_id = access_user(&app, &headers)?;
    app.store()?.delete_user(&user_id)?;
    no_content()
}

fn api_key_json(key: &super::ApiKeyInfo) -> Value {
    json!({ "_id": key.id, "name": key.name, "disabled": key.disabled })
}

fn api_key_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "APIKeyNotFound",
        format!("API key {id:?} not found"),
    )
}

/// `POST /auth/api_keys` `{"name"}` → 201 `{"_id","name","disabled","key"}`.
async fn create_api_key(
    State(app): App,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let body = body_json(body)?;
    let name = match body.get("name") {
        Some(Value::String(name)) => name.as_str(),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MissingParameter",
                "expected a string parameter \"name\"",
            ))
        }
    };
    check_api_key_name(name)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameter", why))?;
    let (id, key) = (tokens::object_id()?, tokens::secret()?);
    app.store()?
        .insert_api_key(
            &id,
            &user_id,
            false,
            name,
            &tokens::secret_hash(&key),
            tokens::now(),
        )
        .map_err(|e| {
            if super::store::is_conflict(&e) {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "APIKeyAlreadyExists",
                    format!("an API key named {name:?} exists already"),
                )
            } else {
                e.into()
            }
        })?;
    ok(
        StatusCode::CREATED,
        json!({ "_id": id, "name": name, "disabled": false, "key": key }),
    )
}

/// `GET /auth/api_keys` → the user's keys, without the secrets.
async fn list_api_keys(State(app): App, headers: HeaderMap) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let keys = app.store()?.api_keys(Some(&user_id))?;
    ok(
        StatusCode::OK,
        Value::Array(keys.iter().map(api_key_json).collect()),
    )
}

async fn fetch_api_key(
    State(app): App,
    headers: HeaderMap,
    params: Result<Path<String>, PathRejection>,
) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let id = path(params)?;
    let keys = app.store()?.api_keys(Some(&user_id))?;
    let key = keys
        .iter()
        .find(|k| k.id == id)
        .ok_or_else(|| api_key_not_found(&id))?;
    ok(StatusCode::OK, api_key_json(key))
}

async fn delete_api_key(
    State(app): App,
    headers: HeaderMap,
    params: Result<Path<String>, PathRejection>,
) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let id = path(params)?;
    if !app.store()?.delete_api_key(Some(&user_id), &id)? {
        return Err(api_key_not_found(&id));
    }
    no_content()
}

/// `PUT /auth/api_keys/<id>/enable` and `.../disable`.
async fn enable_api_key(
    State(app): App,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Answer {
    let (user_id, _) = refresh_session(&app, &headers)?;
    let (id, action) = path(params)?;
    let disabled = match action.as_str() {
        "enable" => false,
        "disable" => true,
        _ => return Err(ApiError::not_found()),
    };
    if !app.store()?.set_api_key_disabled(&user_id, &id, disabled)? {
        return Err(api_key_not_found(&id));
    }
    no_content()
}
