//! `GET /metrics` (Prometheus text) and the middleware counting every REST request.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiResult;
use super::stats::agents_by_status;
use super::{Access, AppState, RouteSpec};

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::GET,
        "/metrics",
        Access::Public,
        metrics,
    )]
}

async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let agents = agents_by_status(&state).await?;
    let agents: Vec<(&str, u64)> = agents.into_iter().collect();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.fleet.metrics.render(&agents),
    ))
}

/// Counts the request by method, route template (`unmatched` for none) and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let resp = next.run(req).await;
    state
        .fleet
        .metrics
        .http_request(&method, &route, resp.status().as_u16());
    resp
}
