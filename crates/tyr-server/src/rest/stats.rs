//! `GET /stats`: counts for the dashboard.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json as JsonOut;
use axum::extract::State;
use axum::http::Method;
use serde_json::{Value, json};

use super::agents::status;
use super::error::ApiResult;
use super::{Access, AppState, RouteSpec};
use crate::metrics::{DbOp, KINDS, VERDICTS};
use crate::store::time::{now_ms, rfc3339};

/// The window of the event counts.
const WINDOW_HOURS: i64 = 24;
const CAUSES: [&str; 3] = ["stale_policy", "tier_limit", "mismatch"];
/// Statuses of non-revoked daemons.
pub const STATUSES: [&str; 3] = ["online", "stale", "offline"];

/// Routes of this module.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::GET,
        "/api/v1/stats",
        Access::Viewer,
        stats,
    )]
}

/// `keys` with zero counts, then the counted ones.
fn counts(keys: &[&str], counted: &[(String, i64)]) -> BTreeMap<String, i64> {
    let mut m: BTreeMap<String, i64> = keys.iter().map(|k| ((*k).to_owned(), 0)).collect();
    for (k, n) in counted {
        *m.entry(k.clone()).or_default() += n;
    }
    m
}

/// Non-revoked daemons by status.
pub async fn agents_by_status(state: &AppState) -> ApiResult<BTreeMap<&'static str, u64>> {
    let now = now_ms();
    let mut m: BTreeMap<&'static str, u64> = STATUSES.iter().map(|s| (*s, 0)).collect();
    for d in state.store.list_daemons(false).await? {
        *m.entry(status(&d, now)).or_default() += 1;
    }
    Ok(m)
}

async fn stats(State(state): State<AppState>) -> ApiResult<JsonOut<Value>> {
    let now = now_ms();
    let since = now - WINDOW_HOURS * 3_600_000;
    let started = Instant::now();
    let ev = state.store.event_counts(since).await?;
    let agents = agents_by_status(&state).await?;
    let policies = state.store.latest_policies().await?.len();
    let discovered = state.store.list_discovered_agents(false, None).await?.len();
    state
        .fleet
        .metrics
        .observe_db(DbOp::Stats, started.elapsed());
    let by_verdict = counts(&VERDICTS, &ev.by_verdict);
    let drift = counts(&CAUSES, &ev.drift_by_cause);
    Ok(JsonOut(json!({
        "window_hours": WINDOW_HOURS,
        "since": rfc3339(since),
        "events": {
            "total": by_verdict.values().sum::<i64>(),
            "by_verdict": by_verdict,
            "by_kind": counts(&KINDS, &ev.by_kind),
        },
        "drift": {
            "total": drift.values().sum::<i64>(),
            "by_cause": drift,
        },
        "agents": {
            "total": agents.values().sum::<u64>(),
            "by_status": agents,
        },
        "discovered_agents": discovered,
        "policies": policies,
    })))
}
