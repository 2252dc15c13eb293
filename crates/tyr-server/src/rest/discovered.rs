//! Discovered AI agents (SPEC §7): list, show; admins rename, reclassify, merge, archive.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::query::Query;
use super::{Access, AppState, Caller, RouteSpec};
use crate::store::agents::{DiscoveredAgent, MergeOutcome};
use crate::store::time::rfc3339;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(
            Method::GET,
            "/api/v1/discovered-agents",
            Access::Viewer,
            list,
        ),
        RouteSpec::new(
            Method::GET,
            "/api/v1/discovered-agents/{id}",
            Access::Viewer,
            show,
        ),
        RouteSpec::new(
            Method::PATCH,
            "/api/v1/discovered-agents/{id}",
            Access::Admin,
            edit,
        ),
        RouteSpec::new(
            Method::POST,
            "/api/v1/discovered-agents/{id}/merge",
            Access::Admin,
            merge,
        ),
        RouteSpec::new(
            Method::POST,
            "/api/v1/discovered-agents/{id}/archive",
            Access::Admin,
            archive,
        ),
    ]
}

/// A discovered agent as the API returns it.
#[derive(Debug, Serialize)]
pub struct DiscoveredView {
    id: String,
    daemon_id: String,
    agent_type: String,
    display_name: String,
    process_signature: String,
    pids: Vec<u32>,
    first_seen: String,
    last_seen: String,
    archived: bool,
    merged_into: Option<String>,
}

impl From<DiscoveredAgent> for DiscoveredView {
    fn from(a: DiscoveredAgent) -> DiscoveredView {
        DiscoveredView {
            id: a.id,
            daemon_id: a.daemon_id,
            agent_type: a.agent_type,
            display_name: a.display_name,
            process_signature: a.process_signature,
            pids: a.pids,
            first_seen: rfc3339(a.first_seen),
            last_seen: rfc3339(a.last_seen),
            archived: a.archived,
            merged_into: a.merged_into,
        }
    }
}

/// Query of `GET /discovered-agents`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_archived: bool,
    agent_id: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<JsonOut<Vec<DiscoveredView>>> {
    let all = state
        .store
        .list_discovered_agents(q.include_archived, q.agent_id.as_deref())
        .await?;
    Ok(JsonOut(all.into_iter().map(DiscoveredView::from).collect()))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no discovered agent {id}"))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<DiscoveredView>> {
    let a = state
        .store
        .discovered_agent(&id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(JsonOut(a.into()))
}

/// Body of `PATCH /discovered-agents/{id}`: rename and/or reclassify.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    display_name: Option<String>,
    agent_type: Option<String>,
}

fn check_text(what: &str, v: &str, max: usize) -> ApiResult<()> {
    if v.trim().is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1-{max} printable characters"
        )));
    }
    Ok(())
}

async fn edit(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<Edit>,
) -> ApiResult<JsonOut<DiscoveredView>> {
    if body.display_name.is_none() && body.agent_type.is_none() {
        return Err(ApiError::bad_request("give display_name and/or agent_type"));
    }
    if let Some(n) = &body.display_name {
        check_text("display_name", n, 256)?;
    }
    if let Some(t) = &body.agent_type {
        let ok = (1..=64).contains(&t.len())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(ApiError::bad_request(
                "agent_type must be 1-64 characters of letters, digits, '.', '_', '-'",
            ));
        }
    }
    let a = state
        .store
        .edit_discovered_agent(
            &id,
            body.display_name.as_deref(),
            body.agent_type.as_deref(),
        )
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(by = %user.username, discovered_agent_id = %id, "discovered agent edited");
    if let Some(t) = &body.agent_type {
        state.fleet.reclassified(&a.daemon_id, &a.id, t);
    }
    Ok(JsonOut(a.into()))
}

/// Body of `POST /discovered-agents/{id}/merge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    into: String,
}

async fn merge(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
    Json(body): Json<Merge>,
) -> ApiResult<JsonOut<DiscoveredView>> {
    match state.store.merge_discovered_agent(&id, &body.into).await? {
        MergeOutcome::Merged => {}
        MergeOutcome::NotFound => {
            return Err(ApiError::not_found(format!(
                "no discovered agent {id} or {}",
                body.into
            )));
        }
        MergeOutcome::Invalid => {
            return Err(ApiError::bad_request(
                "cannot merge an agent into itself or into a merged agent",
            ));
        }
    }
    tracing::info!(by = %user.username, discovered_agent_id = %id, into = %body.into, "discovered agent merged");
    show(State(state), Path(id)).await
}

async fn archive(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<DiscoveredView>> {
    if !state.store.archive_discovered_agent(&id).await? {
        return Err(not_found(&id));
    }
    tracing::info!(by = %user.username, discovered_agent_id = %id, "discovered agent archived");
    show(State(state), Path(id)).await
}
