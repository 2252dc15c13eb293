//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document generated from [`super::routes`], so
//! every route appears with its method, path parameters and security; summaries come from
//! [`SUMMARIES`] where one is written.

use axum::Json as JsonOut;
use axum::http::Method;
use serde_json::{Map, Value, json};

use super::{Access, RouteSpec};

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::GET,
        "/api/v1/openapi.json",
        Access::Public,
        openapi,
    )]
}

/// One-line descriptions by `(method, path)`.
const SUMMARIES: &[(&str, &str, &str)] = &[
    ("GET", "/health", "Liveness: `{status, db, version}`."),
    (
        "GET",
        "/api/v1/ca.pem",
        "The CA certificate daemons must trust.",
    ),
    ("GET", "/api/v1/openapi.json", "This document."),
    ("GET", "/metrics", "Prometheus metrics."),
    (
        "GET",
        "/api/v1/auth/status",
        "`{configured}`: whether the first admin exists.",
    ),
    (
        "POST",
        "/api/v1/auth/setup",
        "Creates the first admin `{username, password}`; 409 once configured.",
    ),
    (
        "POST",
        "/api/v1/auth/login",
        "`{username, password}` → `{token, expires_at, role}`.",
    ),
    (
        "POST",
        "/api/v1/policies",
        "Applies `{yaml}`: a new version → `{name, version, report}`; 400 with located errors.",
    ),
    (
        "POST",
        "/api/v1/policies/validate",
        "Dry run of `{yaml}`: located errors, or `{policy, report}`.",
    ),
    (
        "GET",
        "/api/v1/policies",
        "The latest version of every policy.",
    ),
    (
        "GET",
        "/api/v1/policies/{name}/versions",
        "Every version of a policy.",
    ),
    (
        "GET",
        "/api/v1/policies/{name}/versions/{v}",
        "One version: YAML, compiled form, per-rule enforcement report.",
    ),
    (
        "GET",
        "/api/v1/policies/{name}/diff",
        "Unified YAML diff and rule-level changes between versions `from` and `to`.",
    ),
    (
        "POST",
        "/api/v1/policies/{name}/rollback",
        "`{version}` → a new version with that version's YAML.",
    ),
    ("GET", "/api/v1/policy-assignments", "Every assignment."),
    (
        "POST",
        "/api/v1/policy-assignments",
        "`{target_type: daemon|agent_type, target_id, policy, version}`; replaces the target's assignment.",
    ),
    (
        "DELETE",
        "/api/v1/policy-assignments",
        "Removes the assignment of `?target_type=&target_id=`.",
    ),
    (
        "DELETE",
        "/api/v1/policy-assignments/{id}",
        "Removes an assignment by id (`TARGET_TYPE:TARGET_ID`).",
    ),
    (
        "GET",
        "/api/v1/agents",
        "Daemons with status (online/stale/offline), tier, kernel, last_seen, drift count, events lost (`events_lost`, `gap_records`, `last_gap_at`).",
    ),
    ("GET", "/api/v1/agents/{id}", "One daemon."),
    ("DELETE", "/api/v1/agents/{id}", "Revokes a daemon."),
    (
        "GET",
        "/api/v1/agents/{id}/effective-policy",
        "`{version, base, overlays, effective_set}` of a daemon.",
    ),
    (
        "GET",
        "/api/v1/discovered-agents",
        "Discovered AI agents (`include_archived`, `agent_id`).",
    ),
    (
        "GET",
        "/api/v1/discovered-agents/{id}",
        "One discovered agent.",
    ),
    (
        "PATCH",
        "/api/v1/discovered-agents/{id}",
        "Rename (`display_name`) and/or reclassify (`agent_type`).",
    ),
    (
        "POST",
        "/api/v1/discovered-agents/{id}/merge",
        "`{into}`: archives this agent as merged into another.",
    ),
    (
        "POST",
        "/api/v1/discovered-agents/{id}/archive",
        "Archives a discovered agent.",
    ),
    (
        "GET",
        "/api/v1/events",
        "Events, newest first; filters agent_id, discovered_agent_id, agent_type, kind, verdict, drift_detected, since, until, q; `limit` ≤ 1000, `cursor` → `{events, next_cursor}`.",
    ),
    (
        "GET",
        "/api/v1/events/stream",
        "Server-sent events of newly stored events (same filters); a `dropped` event counts events a slow reader missed.",
    ),
    (
        "GET",
        "/api/v1/stats",
        "Dashboard counts: events by verdict and kind (24 h), drift by cause, agents by status, policies.",
    ),
];

fn operation(spec: &RouteSpec) -> Value {
    let method = spec.method.as_str();
    let mut op = Map::new();
    if let Some((_, _, s)) = SUMMARIES
        .iter()
        .find(|(m, p, _)| *m == method && *p == spec.path)
    {
        op.insert("summary".into(), json!(s));
    }
    let params: Vec<Value> = spec
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if [Method::POST, Method::PATCH, Method::PUT].contains(&spec.method) {
        op.insert(
            "requestBody".into(),
            json!({"content": {"application/json": {"schema": {"type": "object"}}}}),
        );
    }
    let mut responses = json!({
        "2XX": {"description": "Success"},
        "400": {"$ref": "#/components/responses/Error"},
        "404": {"$ref": "#/components/responses/Error"},
    });
    let access = match spec.access {
        Access::Public => "public",
        Access::Viewer => "viewer",
        Access::Admin => "admin",
    };
    if spec.access == Access::Public {
        op.insert("security".into(), json!([]));
    } else {
        op.insert("security".into(), json!([{"bearerAuth": []}]));
        responses["401"] = json!({"$ref": "#/components/responses/Error"});
        if spec.access == Access::Admin {
            responses["403"] = json!({"$ref": "#/components/responses/Error"});
        }
    }
    op.insert("responses".into(), responses);
    op.insert("x-tyr-access".into(), json!(access));
    Value::Object(op)
}

/// The OpenAPI document of `routes`.
pub fn document(routes: &[RouteSpec]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let entry = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method.as_str().to_ascii_lowercase()] = operation(r);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tyr control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST API of tyr-server. JSON bodies, RFC 3339 UTC timestamps, `Authorization: Bearer <jwt>` except on public routes.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
            "responses": {
                "Error": {
                    "description": "`{error: {code, message, details}}`",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"error": {"type": "object", "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "details": {},
                        }}},
                    }}},
                },
            },
        },
    })
}

async fn openapi() -> JsonOut<Value> {
    JsonOut(document(&super::routes()))
}
