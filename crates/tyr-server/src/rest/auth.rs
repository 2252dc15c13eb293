//! `auth/status`, `auth/setup`, `auth/login` (public) and `auth/me` (viewer).

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::extract::{ConnectInfo, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::users::{UserView, check_password, check_username, hash_password};
use super::{Access, AppState, Caller, RouteSpec};
use crate::auth::{Role, verify_secret};
use crate::store::time::rfc3339;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/api/v1/auth/status", Access::Public, status),
        RouteSpec::new(Method::POST, "/api/v1/auth/setup", Access::Public, setup),
        RouteSpec::new(Method::POST, "/api/v1/auth/login", Access::Public, login),
        RouteSpec::new(Method::GET, "/api/v1/auth/me", Access::Viewer, me),
    ]
}

/// Body of `setup` and `login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    username: String,
    password: String,
}

/// Response of `login`.
#[derive(Debug, Serialize)]
pub struct LoginResponse {
    token: String,
    expires_at: String,
    role: Role,
}

async fn status(State(state): State<AppState>) -> ApiResult<JsonOut<Value>> {
    Ok(JsonOut(
        json!({"configured": state.store.is_configured().await?}),
    ))
}

async fn setup(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> ApiResult<(StatusCode, JsonOut<UserView>)> {
    check_username(&body.username)?;
    check_password(&body.password)?;
    if state.store.is_configured().await? {
        return Err(ApiError::conflict("setup has already been completed"));
    }
    let hash = hash_password(body.password).await?;
    let user = state
        .store
        .setup_first_admin(&body.username, &hash)
        .await?
        .ok_or_else(|| ApiError::conflict("setup has already been completed"))?;
    tracing::info!(username = %user.username, "first admin created");
    Ok((StatusCode::CREATED, JsonOut(UserView::from(&user))))
}

/// A PHC string to verify against when the user does not exist, so that unknown and known
/// usernames take the same time.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| crate::auth::hash_secret("tyr-dummy-password").unwrap_or_default());

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<Credentials>,
) -> ApiResult<JsonOut<LoginResponse>> {
    let user_key = format!("user:{}", body.username);
    let keys = [user_key.clone(), format!("addr:{}", peer.ip())];
    state
        .login_limiter
        .check(&keys)
        .map_err(ApiError::rate_limited)?;

    let found = state.store.user_for_login(&body.username).await?;
    let phc = found
        .as_ref()
        .map_or_else(|| DUMMY_HASH.clone(), |(_, h)| h.clone());
    let password = body.password;
    let ok = crate::auth::run_argon2(move || verify_secret(&password, &phc))
        .await
        .map_err(ApiError::internal)?;
    let user = match found {
        Some((user, _)) if ok => user,
        _ => {
            state.login_limiter.record_failure(&keys);
            tracing::info!(username = %body.username, peer = %peer.ip(), "login failed");
            return Err(ApiError::unauthenticated("invalid username or password"));
        }
    };
    state.login_limiter.clear(&user_key);
    let (token, claims) = state
        .jwt
        .issue(&user.id, user.role)
        .map_err(ApiError::internal)?;
    Ok(JsonOut(LoginResponse {
        token,
        expires_at: rfc3339(claims.exp * 1000),
        role: user.role,
    }))
}

async fn me(Extension(Caller(user)): Extension<Caller>) -> JsonOut<UserView> {
    JsonOut(UserView::from(&user))
}
