//! Policy assignments (SPEC §6): a version bound to a daemon (base) or an agent type
//! (overlay); a new assignment to the same target replaces the previous one.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::query::Query;
use super::{Access, AppState, Caller, RouteSpec};
use crate::store::policies::Assignment;
use crate::store::time::rfc3339;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    const PATH: &str = "/api/v1/policy-assignments";
    vec![
        RouteSpec::new(Method::GET, PATH, Access::Viewer, list),
        RouteSpec::new(Method::POST, PATH, Access::Admin, assign),
        RouteSpec::new(Method::DELETE, PATH, Access::Admin, delete_by_target),
        RouteSpec::new(
            Method::DELETE,
            "/api/v1/policy-assignments/{id}",
            Access::Admin,
            delete_by_id,
        ),
    ]
}

/// What an assignment binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    /// The base policy of one daemon.
    Daemon,
    /// An overlay for every process of one agent type.
    AgentType,
}

impl TargetType {
    fn as_str(self) -> &'static str {
        match self {
            TargetType::Daemon => "daemon",
            TargetType::AgentType => "agent_type",
        }
    }

    fn parse(s: &str) -> ApiResult<TargetType> {
        match s {
            "daemon" => Ok(TargetType::Daemon),
            "agent_type" => Ok(TargetType::AgentType),
            _ => Err(ApiError::bad_request(
                "target_type must be `daemon` or `agent_type`",
            )),
        }
    }
}

/// An assignment as the API returns it; `id` is `TARGET_TYPE:TARGET_ID`.
#[derive(Debug, Serialize)]
pub struct AssignmentView {
    id: String,
    target_type: String,
    target_id: String,
    policy: String,
    version: i64,
    created_at: String,
    created_by: Option<String>,
}

impl From<Assignment> for AssignmentView {
    fn from(a: Assignment) -> AssignmentView {
        AssignmentView {
            id: format!("{}:{}", a.target_type, a.target_id),
            target_type: a.target_type,
            target_id: a.target_id,
            policy: a.policy,
            version: a.version,
            created_at: rfc3339(a.created_at),
            created_by: a.created_by,
        }
    }
}

/// Body of `POST /policy-assignments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAssignment {
    target_type: TargetType,
    target_id: String,
    policy: String,
    version: i64,
}

/// Agent types: 1–64 characters of `a-z A-Z 0-9 . _ -`.
fn check_agent_type(t: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&t.len())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "agent type must be 1-64 characters of letters, digits, '.', '_', '-'",
        ))
    }
}

async fn list(State(state): State<AppState>) -> ApiResult<JsonOut<Vec<AssignmentView>>> {
    let all = state.store.list_assignments().await?;
    Ok(JsonOut(all.into_iter().map(AssignmentView::from).collect()))
}

async fn assign(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Json(body): Json<NewAssignment>,
) -> ApiResult<(StatusCode, JsonOut<AssignmentView>)> {
    match body.target_type {
        TargetType::Daemon => match state.store.daemon(&body.target_id).await? {
            Some(d) if !d.revoked => {}
            _ => {
                return Err(ApiError::not_found(format!("no daemon {}", body.target_id)));
            }
        },
        TargetType::AgentType => check_agent_type(&body.target_id)?,
    }
    if state
        .store
        .policy_version(&body.policy, body.version)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!(
            "no version {} of policy {}",
            body.version, body.policy
        )));
    }
    let target_type = body.target_type.as_str();
    let a = state
        .store
        .assign_policy(
            target_type,
            &body.target_id,
            &body.policy,
            body.version,
            Some(&user.username),
        )
        .await?;
    state.fleet.assignment_changed(target_type, &body.target_id);
    tracing::info!(by = %user.username, target_type, target_id = %body.target_id,
        policy = %body.policy, version = body.version, "policy assigned");
    Ok((StatusCode::CREATED, JsonOut(AssignmentView::from(a))))
}

/// Query of `DELETE /policy-assignments`.
#[derive(Debug, Deserialize)]
pub struct TargetQuery {
    target_type: Option<String>,
    target_id: Option<String>,
}

async fn unassign(
    state: &AppState,
    user: &str,
    target_type: TargetType,
    target_id: &str,
) -> ApiResult<StatusCode> {
    let tt = target_type.as_str();
    if !state.store.delete_assignment(tt, target_id).await? {
        return Err(ApiError::not_found(format!(
            "no assignment for {tt} {target_id}"
        )));
    }
    state.fleet.assignment_changed(tt, target_id);
    tracing::info!(by = %user, target_type = tt, target_id, "policy unassigned");
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_by_target(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Query(q): Query<TargetQuery>,
) -> ApiResult<StatusCode> {
    let (Some(tt), Some(id)) = (q.target_type, q.target_id) else {
        return Err(ApiError::bad_request(
            "target_type and target_id query parameters are required",
        ));
    };
    unassign(&state, &user.username, TargetType::parse(&tt)?, &id).await
}

async fn delete_by_id(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (tt, target) = id.split_once(':').ok_or_else(|| {
        ApiError::not_found(format!(
            "no assignment {id} (ids are TARGET_TYPE:TARGET_ID)"
        ))
    })?;
    unassign(&state, &user.username, TargetType::parse(tt)?, target).await
}
