//! Daemons ("agents" in the API): list with status, show, revoke, effective policy.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json as JsonOut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::{Access, AppState, Caller, RouteSpec};
use crate::fleet::Effective;
use crate::store::agents::Daemon;
use crate::store::time::{now_ms, rfc3339};

/// The daemon heartbeat interval the status thresholds assume (SPEC §12 default).
pub const HEARTBEAT_INTERVAL_MS: i64 = 30_000;
/// A daemon is `online` while its last heartbeat is younger than this many intervals…
const ONLINE_INTERVALS: i64 = 3;
/// …`stale` until this many, then `offline`.
const STALE_INTERVALS: i64 = 10;

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/api/v1/agents", Access::Viewer, list),
        RouteSpec::new(Method::GET, "/api/v1/agents/{id}", Access::Viewer, show),
        RouteSpec::new(Method::DELETE, "/api/v1/agents/{id}", Access::Admin, revoke),
        RouteSpec::new(
            Method::GET,
            "/api/v1/agents/{id}/effective-policy",
            Access::Viewer,
            effective_policy,
        ),
    ]
}

/// `online` (heartbeat within 3 intervals), `stale` (within 10), `offline` (older or never),
/// `revoked`.
pub fn status(d: &Daemon, now: i64) -> &'static str {
    if d.revoked {
        return "revoked";
    }
    match d.last_seen.map(|t| now - t) {
        Some(age) if age < ONLINE_INTERVALS * HEARTBEAT_INTERVAL_MS => "online",
        Some(age) if age < STALE_INTERVALS * HEARTBEAT_INTERVAL_MS => "stale",
        _ => "offline",
    }
}

/// A daemon as the API returns it.
#[derive(Debug, Serialize)]
pub struct DaemonView {
    id: String,
    name: String,
    hostname: String,
    status: &'static str,
    tier: Option<String>,
    kernel_version: String,
    arch: String,
    last_seen: Option<String>,
    drift_count: i64,
    /// Events the daemon reported lost (spool full, kernel ring buffer).
    events_lost: i64,
    /// Gap records received.
    gap_records: i64,
    last_gap_at: Option<String>,
    capabilities: Value,
    cert_not_after: String,
    revoked: bool,
    revoked_at: Option<String>,
    created_at: String,
}

impl DaemonView {
    fn new(d: Daemon, now: i64) -> DaemonView {
        DaemonView {
            status: status(&d, now),
            capabilities: d
                .capabilities
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null),
            last_seen: d.last_seen.map(rfc3339),
            last_gap_at: d.last_gap_at.map(rfc3339),
            cert_not_after: rfc3339(d.cert_not_after),
            revoked_at: d.revoked_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
            id: d.id,
            name: d.name,
            hostname: d.hostname,
            tier: d.tier,
            kernel_version: d.kernel_version,
            arch: d.arch,
            drift_count: d.drift_count,
            events_lost: d.events_lost,
            gap_records: d.gap_records,
            revoked: d.revoked,
        }
    }
}

/// Query of `GET /agents`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_revoked: bool,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<JsonOut<Vec<DaemonView>>> {
    let now = now_ms();
    let all = state.store.list_daemons(q.include_revoked).await?;
    Ok(JsonOut(
        all.into_iter().map(|d| DaemonView::new(d, now)).collect(),
    ))
}

async fn daemon(state: &AppState, id: &str) -> ApiResult<Daemon> {
    state
        .store
        .daemon(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no agent {id}")))
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<DaemonView>> {
    Ok(JsonOut(DaemonView::new(
        daemon(&state, &id).await?,
        now_ms(),
    )))
}

/// Revokes the daemon: it is refused at its next connection or heartbeat and may re-enroll
/// with a fresh token. Its events and drift history stay.
async fn revoke(
    State(state): State<AppState>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.store.revoke_daemon(&id).await? {
        return Err(ApiError::not_found(format!("no agent {id}")));
    }
    state.fleet.daemon_revoked(&id);
    tracing::info!(by = %user.username, agent_id = %id, "agent revoked");
    Ok(StatusCode::NO_CONTENT)
}

async fn effective_policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<JsonOut<Effective>> {
    let d = daemon(&state, &id).await?;
    let e = state.fleet.effective(&state.store, &d.id).await?;
    Ok(JsonOut(Effective::clone(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(last_seen: Option<i64>, revoked: bool) -> Daemon {
        Daemon {
            id: "d".into(),
            name: "n".into(),
            hostname: "h".into(),
            kernel_version: "k".into(),
            arch: "x86_64".into(),
            tier: None,
            capabilities: None,
            enrollment_token_id: None,
            cert_serial: "s".into(),
            cert_fingerprint: "f".into(),
            cert_not_after: 0,
            last_seen,
            revoked,
            revoked_at: None,
            drift_count: 0,
            events_lost: 0,
            gap_records: 0,
            last_gap_at: None,
            created_at: 0,
        }
    }

    #[test]
    fn status_thresholds() {
        let now = 1_000_000_000;
        let at = |age_s: i64| status(&daemon(Some(now - age_s * 1000), false), now);
        assert_eq!(at(0), "online");
        assert_eq!(at(89), "online");
        assert_eq!(at(90), "stale");
        assert_eq!(at(299), "stale");
        assert_eq!(at(300), "offline");
        assert_eq!(status(&daemon(None, false), now), "offline");
        assert_eq!(status(&daemon(Some(now), true), now), "revoked");
    }
}
