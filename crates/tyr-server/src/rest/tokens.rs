//! `POST/GET /api/v1/enrollment-tokens`, `DELETE /api/v1/enrollment-tokens/{id}` (admin).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::{Access, AppState, Caller, RouteSpec};
use crate::store::time::{now_ms, rfc3339};
use crate::store::tokens::{EnrollmentToken, NewToken};

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(
            Method::POST,
            "/api/v1/enrollment-tokens",
            Access::Admin,
            create,
        ),
        RouteSpec::new(
            Method::GET,
            "/api/v1/enrollment-tokens",
            Access::Admin,
            list,
        ),
        RouteSpec::new(
            Method::DELETE,
            "/api/v1/enrollment-tokens/{id}",
            Access::Admin,
            revoke,
        ),
    ]
}

/// Largest `max_uses`.
pub const MAX_USES_LIMIT: i64 = 100_000;
/// Longest lifetime: one year.
pub const MAX_EXPIRES_HOURS: i64 = 24 * 366;

/// Body of `POST`: every field optional (`max_uses` 1, `expires_hours` 24).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    #[serde(default)]
    label: String,
    #[serde(default = "one")]
    max_uses: i64,
    #[serde(default = "day")]
    expires_hours: i64,
}

fn one() -> i64 {
    1
}

fn day() -> i64 {
    24
}

/// A token record as returned by the API (never the secret, except `token` once at creation).
#[derive(Debug, Serialize)]
pub struct TokenView {
    id: String,
    prefix: String,
    label: String,
    max_uses: i64,
    uses: i64,
    expires_at: String,
    revoked: bool,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn new(t: &EnrollmentToken, token: Option<String>) -> TokenView {
        TokenView {
            id: t.id.clone(),
            prefix: t.prefix.clone(),
            label: t.label.clone(),
            max_uses: t.max_uses,
            uses: t.uses,
            expires_at: rfc3339(t.expires_at),
            revoked: t.revoked,
            created_at: rfc3339(t.created_at),
            token,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(Caller(admin)): Extension<Caller>,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, JsonOut<TokenView>)> {
    if body.label.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "label must be at most 200 characters",
        ));
    }
    if !(1..=MAX_USES_LIMIT).contains(&body.max_uses) {
        return Err(ApiError::bad_request(format!(
            "max_uses must be between 1 and {MAX_USES_LIMIT}"
        )));
    }
    if !(1..=MAX_EXPIRES_HOURS).contains(&body.expires_hours) {
        return Err(ApiError::bad_request(format!(
            "expires_hours must be between 1 and {MAX_EXPIRES_HOURS}"
        )));
    }
    let (record, plaintext) = state
        .store
        .create_enrollment_token(NewToken {
            label: &body.label,
            max_uses: body.max_uses,
            expires_at: now_ms() + body.expires_hours * 3_600_000,
            created_by: Some(&admin.id),
        })
        .await?;
    tracing::info!(by = %admin.username, token_id = %record.id, "enrollment token created");
    Ok((
        StatusCode::CREATED,
        JsonOut(TokenView::new(&record, Some(plaintext))),
    ))
}

async fn list(State(state): State<AppState>) -> ApiResult<JsonOut<Vec<TokenView>>> {
    let tokens = state.store.list_enrollment_tokens().await?;
    Ok(JsonOut(
        tokens.iter().map(|t| TokenView::new(t, None)).collect(),
    ))
}

async fn revoke(
    State(state): State<AppState>,
    Extension(Caller(admin)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.revoke_enrollment_token(&id).await? {
        tracing::info!(by = %admin.username, token_id = %id, "enrollment token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no enrollment token {id}")))
    }
}
