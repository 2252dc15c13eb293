//! `POST/GET /api/v1/users`, `DELETE /api/v1/users/{id}` (admin).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::{Access, AppState, Caller, RouteSpec};
use crate::auth::{MIN_PASSWORD_LEN, Role, hash_secret};
use crate::store::time::rfc3339;
use crate::store::users::{DeleteUser, User};

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::POST, "/api/v1/users", Access::Admin, create),
        RouteSpec::new(Method::GET, "/api/v1/users", Access::Admin, list),
        RouteSpec::new(Method::DELETE, "/api/v1/users/{id}", Access::Admin, delete),
    ]
}

/// A user as returned by the API (never the hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    id: String,
    username: String,
    role: Role,
    created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            role: u.role,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Body of `POST /users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    role: Role,
}

const MAX_PASSWORD_BYTES: usize = 1024;

/// 1–64 characters of `A-Z a-z 0-9 . _ @ -`.
pub fn check_username(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "username must be 1-64 characters of letters, digits, '.', '_', '@', '-'",
        ))
    }
}

/// At least [`MIN_PASSWORD_LEN`] characters (and at most 1 KiB).
pub fn check_password(password: &str) -> ApiResult<()> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request("password too long"));
    }
    Ok(())
}

/// argon2id on the blocking pool.
pub async fn hash_password(password: String) -> ApiResult<String> {
    crate::auth::run_argon2(move || hash_secret(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn create(
    State(state): State<AppState>,
    Extension(Caller(admin)): Extension<Caller>,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, JsonOut<UserView>)> {
    check_username(&body.username)?;
    check_password(&body.password)?;
    let hash = hash_password(body.password).await?;
    let user = state
        .store
        .create_user(&body.username, &hash, body.role)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict => ApiError::conflict("username already exists"),
            other => other.into(),
        })?;
    tracing::info!(by = %admin.username, username = %user.username, role = %user.role, "user created");
    Ok((StatusCode::CREATED, JsonOut(UserView::from(&user))))
}

async fn list(State(state): State<AppState>) -> ApiResult<JsonOut<Vec<UserView>>> {
    let users = state.store.list_users().await?;
    Ok(JsonOut(users.iter().map(UserView::from).collect()))
}

async fn delete(
    State(state): State<AppState>,
    Extension(Caller(admin)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    match state.store.delete_user(&id).await? {
        DeleteUser::Deleted => {
            tracing::info!(by = %admin.username, user_id = %id, "user deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteUser::NotFound => Err(ApiError::not_found(format!("no user {id}"))),
        DeleteUser::LastAdmin => Err(ApiError::conflict("the last admin cannot be deleted")),
    }
}
