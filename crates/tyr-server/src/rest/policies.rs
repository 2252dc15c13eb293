//! Policies (SPEC §6, §10): apply and validate YAML, list, versions, diff, rollback.

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tyr_policy::compile::{self, Limits};
use tyr_policy::glob::Homes;
use tyr_policy::{EffectiveSet, Policy, PolicyError, Rule};

use super::error::{ApiError, ApiResult};
use super::json::Json;
use super::query::Query;
use super::{Access, AppState, Caller, RouteSpec};
use crate::store::policies::{NewVersion, PolicyVersion, VersionInfo};
use crate::store::time::rfc3339;

/// Largest accepted request body on the routes that take YAML.
pub const POLICY_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    let big = DefaultBodyLimit::max(POLICY_BODY_LIMIT);
    vec![
        RouteSpec::new(
            Method::POST,
            "/api/v1/policies",
            Access::Admin,
            apply.layer(big),
        ),
        RouteSpec::new(
            Method::POST,
            "/api/v1/policies/validate",
            Access::Admin,
            validate.layer(big),
        ),
        RouteSpec::new(Method::GET, "/api/v1/policies", Access::Viewer, list),
        RouteSpec::new(
            Method::GET,
            "/api/v1/policies/{name}/versions",
            Access::Viewer,
            versions,
        ),
        RouteSpec::new(
            Method::GET,
            "/api/v1/policies/{name}/versions/{v}",
            Access::Viewer,
            version,
        ),
        RouteSpec::new(
            Method::GET,
            "/api/v1/policies/{name}/diff",
            Access::Viewer,
            diff,
        ),
        RouteSpec::new(
            Method::POST,
            "/api/v1/policies/{name}/rollback",
            Access::Admin,
            rollback,
        ),
    ]
}

/// Body of `POST /policies` and `POST /policies/validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YamlBody {
    yaml: String,
}

/// A validated policy, its enforcement report and its stored `compiled` document.
struct Checked {
    policy: Policy,
    report: Value,
    compiled: Value,
}

fn error_details(errors: &[PolicyError]) -> Value {
    errors
        .iter()
        .map(|e| {
            json!({
                "line": e.location.line,
                "column": e.location.column,
                "rule": e.rule,
                "message": e.message,
                "hint": e.hint,
            })
        })
        .collect()
}

/// Parses, validates and compiles (as a lone base policy) on the blocking pool: 400
/// `invalid_policy` with located errors, or when the kernel tables cannot be built.
async fn check(yaml: String) -> ApiResult<Checked> {
    tokio::task::spawn_blocking(move || {
        let policy = tyr_policy::parse(&yaml).map_err(|errors| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_policy",
                format!("the policy has {} error(s)", errors.len()),
            )
            .with_details(error_details(&errors))
        })?;
        let set = EffectiveSet {
            base: Some(policy.clone()),
            overlays: Vec::new(),
        };
        let tables =
            compile::compile(&set, &Homes::default(), &Limits::default()).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_policy",
                    format!("the policy cannot be compiled for the kernel: {e}"),
                )
            })?;
        let report = serde_json::to_value(compile::report(&policy)).map_err(ApiError::internal)?;
        let compiled = json!({
            "policy": serde_json::to_value(&policy).map_err(ApiError::internal)?,
            "tables": serde_json::to_value(&tables).map_err(ApiError::internal)?,
        });
        Ok(Checked {
            policy,
            report,
            compiled,
        })
    })
    .await
    .map_err(ApiError::internal)?
}

async fn apply(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Json(body): Json<YamlBody>,
) -> ApiResult<(StatusCode, JsonOut<Value>)> {
    let checked = check(body.yaml.clone()).await?;
    let name = checked.policy.metadata.name.clone();
    let version = state
        .store
        .insert_policy_version(NewVersion {
            name: &name,
            yaml: &body.yaml,
            compiled: &checked.compiled.to_string(),
            report: &checked.report.to_string(),
            created_by: Some(&user.username),
        })
        .await?;
    tracing::info!(by = %user.username, policy = %name, version, "policy applied");
    Ok((
        StatusCode::CREATED,
        JsonOut(json!({"name": name, "version": version, "report": checked.report})),
    ))
}

async fn validate(Json(body): Json<YamlBody>) -> ApiResult<JsonOut<Value>> {
    let checked = check(body.yaml).await?;
    Ok(JsonOut(json!({
        "valid": true,
        "name": checked.policy.metadata.name,
        "policy": checked.policy,
        "report": checked.report,
    })))
}

/// A version in listings.
#[derive(Debug, Serialize)]
struct VersionView {
    name: String,
    version: i64,
    created_at: String,
    created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<i64>,
}

impl VersionView {
    fn new(v: VersionInfo, with_count: bool) -> VersionView {
        VersionView {
            name: v.name,
            version: v.version,
            created_at: rfc3339(v.created_at),
            created_by: v.created_by,
            versions: with_count.then_some(v.versions),
        }
    }
}

async fn list(State(state): State<AppState>) -> ApiResult<JsonOut<Vec<VersionView>>> {
    let latest = state.store.latest_policies().await?;
    Ok(JsonOut(
        latest
            .into_iter()
            .map(|v| VersionView::new(v, true))
            .collect(),
    ))
}

async fn versions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<JsonOut<Vec<VersionView>>> {
    let all = state.store.policy_versions(&name).await?;
    if all.is_empty() {
        return Err(ApiError::not_found(format!("no policy {name}")));
    }
    Ok(JsonOut(
        all.into_iter()
            .map(|v| VersionView::new(v, false))
            .collect(),
    ))
}

fn parse_version(v: &str) -> ApiResult<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::bad_request(format!("invalid version {v:?}")))
}

async fn load(state: &AppState, name: &str, version: i64) -> ApiResult<PolicyVersion> {
    state
        .store
        .policy_version(name, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no version {version} of policy {name}")))
}

fn json_doc(text: &str) -> ApiResult<Value> {
    serde_json::from_str(text).map_err(ApiError::internal)
}

async fn version(
    State(state): State<AppState>,
    Path((name, v)): Path<(String, String)>,
) -> ApiResult<JsonOut<Value>> {
    let pv = load(&state, &name, parse_version(&v)?).await?;
    Ok(JsonOut(json!({
        "name": pv.name,
        "version": pv.version,
        "yaml": pv.yaml,
        "compiled": json_doc(&pv.compiled)?,
        "report": json_doc(&pv.report)?,
        "created_at": rfc3339(pv.created_at),
        "created_by": pv.created_by,
    })))
}

/// Query of `GET /policies/{name}/diff`.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

fn policy_of(pv: &PolicyVersion) -> ApiResult<Policy> {
    #[derive(Deserialize)]
    struct Compiled {
        policy: Policy,
    }
    serde_json::from_str::<Compiled>(&pv.compiled)
        .map(|c| c.policy)
        .map_err(ApiError::internal)
}

/// Rule-level changes between two policies; rules are compared without their location.
fn rule_changes(from: &Policy, to: &Policy) -> Value {
    let index = |p: &Policy| -> HashMap<String, Rule> {
        p.spec
            .rules
            .iter()
            .map(|r| {
                let rule = Rule {
                    location: Default::default(),
                    ..r.clone()
                };
                (r.name.clone(), rule)
            })
            .collect()
    };
    let (a, b) = (index(from), index(to));
    let names = |p: &Policy| {
        p.spec
            .rules
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    let added: Vec<_> = names(to)
        .into_iter()
        .filter(|n| !a.contains_key(n))
        .collect();
    let removed: Vec<_> = names(from)
        .into_iter()
        .filter(|n| !b.contains_key(n))
        .collect();
    let changed: Vec<_> = names(from)
        .into_iter()
        .filter(|n| b.get(n).is_some_and(|r| a.get(n) != Some(r)))
        .collect();
    let common = |p: &Policy| {
        let mut v = names(p);
        v.retain(|n| a.contains_key(n) && b.contains_key(n));
        v
    };
    json!({
        "added": added,
        "removed": removed,
        "changed": changed,
        "reordered": common(from) != common(to),
        "mode_changed": from.spec.mode != to.spec.mode,
        "default_changed": from.spec.default != to.spec.default,
    })
}

async fn diff(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<JsonOut<Value>> {
    let (Some(from), Some(to)) = (q.from, q.to) else {
        return Err(ApiError::bad_request(
            "from and to query parameters are required",
        ));
    };
    let (from, to) = (parse_version(&from)?, parse_version(&to)?);
    let a = load(&state, &name, from).await?;
    let b = load(&state, &name, to).await?;
    let unified = similar::TextDiff::from_lines(&a.yaml, &b.yaml)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name}@{from}"), &format!("{name}@{to}"))
        .to_string();
    Ok(JsonOut(json!({
        "name": name,
        "from": from,
        "to": to,
        "unified": unified,
        "rules": rule_changes(&policy_of(&a)?, &policy_of(&b)?),
    })))
}

/// Body of `POST /policies/{name}/rollback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: i64,
}

async fn rollback(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(name): Path<String>,
    Json(body): Json<RollbackBody>,
) -> ApiResult<(StatusCode, JsonOut<Value>)> {
    let old = load(&state, &name, body.version).await?;
    let version = state
        .store
        .insert_policy_version(NewVersion {
            name: &name,
            yaml: &old.yaml,
            compiled: &old.compiled,
            report: &old.report,
            created_by: Some(&user.username),
        })
        .await?;
    tracing::info!(by = %user.username, policy = %name, from = body.version, version, "policy rolled back");
    Ok((
        StatusCode::CREATED,
        JsonOut(json!({
            "name": name,
            "version": version,
            "rolled_back_to": body.version,
            "report": json_doc(&old.report)?,
        })),
    ))
}
