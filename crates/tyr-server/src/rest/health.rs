//! `GET /health` and `GET /api/v1/ca.pem`.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{Access, AppState, RouteSpec};

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/health", Access::Public, health),
        RouteSpec::new(Method::GET, "/api/v1/ca.pem", Access::Public, ca_pem),
    ]
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db_ok = state.store.ping().await.is_ok();
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if db_ok { "ok" } else { "degraded" },
            "db": if db_ok { "ok" } else { "unreachable" },
            "version": env!("CARGO_PKG_VERSION"),
        })),
    )
}

async fn ca_pem(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_pem.to_string(),
    )
}
