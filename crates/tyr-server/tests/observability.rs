//! `GET /stats`, `GET /metrics` and `GET /api/v1/openapi.json`, on SQLite and PostgreSQL.

mod common;
mod support;

use common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use support::{apply, assign, daemon, event, policy};
use tyr_proto::events::{Enforced, Verdict};
use tyr_server::drift::Tier;
use tyr_server::ingest::ingest;
use tyr_server::rest::{Access, routes};
use tyr_server::store::time::now_ms;

on_both_backends! {
    stats_and_metrics_count_events => stats_and_metrics_count_events;
    openapi_lists_every_route => openapi_lists_every_route;
}

async fn stats_and_metrics_count_events(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    daemon(&store, "host-b", Tier::Lsm).await;
    assert!(store.touch_daemon(&d, now_ms()).await.expect("touch"));
    apply(&s, &admin, &policy("laptops", "deny")).await;
    apply(&s, &admin, &policy("servers", "deny")).await;
    assign(&s, &admin, "daemon", &d, "laptops", 1).await;
    let t = u64::try_from(now_ms()).expect("time");
    let old = t - 2 * 86_400_000;
    let v = "base=laptops@1";
    let batch = vec![
        event(1, "/secret/a", Verdict::Deny, Enforced::Blocked, v, t),
        event(2, "/secret/b", Verdict::Allow, Enforced::None, v, t),
        event(3, "/tmp/a", Verdict::Allow, Enforced::None, v, t),
        event(4, "/tmp/b", Verdict::Alert, Enforced::None, v, t),
        // Outside the 24 h window.
        event(5, "/tmp/old", Verdict::Allow, Enforced::None, v, old),
    ];
    ingest(&store, &fleet, &d, batch).await.expect("ingest");

    let r = s
        .get("/api/v1/stats")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stats");
    assert_eq!(r.status(), StatusCode::OK);
    let stats: Value = r.json().await.expect("json");
    assert_eq!(stats["events"]["total"], 4, "{stats}");
    assert_eq!(stats["events"]["by_verdict"]["ALLOW"], 2);
    assert_eq!(stats["events"]["by_verdict"]["DENY"], 1);
    assert_eq!(stats["events"]["by_verdict"]["ALERT"], 1);
    assert_eq!(stats["events"]["by_kind"]["FILE_READ"], 4);
    assert_eq!(stats["events"]["by_kind"]["EXEC"], 0);
    assert_eq!(
        stats["drift"]["by_cause"]["mismatch"], 2,
        "/secret/b and /tmp/b"
    );
    assert_eq!(stats["drift"]["by_cause"]["stale_policy"], 0);
    assert_eq!(stats["agents"]["by_status"]["online"], 1);
    assert_eq!(stats["agents"]["by_status"]["offline"], 1);
    assert_eq!(stats["agents"]["total"], 2);
    assert_eq!(stats["policies"], 2);

    let r = s.get("/metrics").send().await.expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    for line in [
        "tyr_events_ingested_total{kind=\"FILE_READ\",verdict=\"ALLOW\"} 3",
        "tyr_events_ingested_total{kind=\"FILE_READ\",verdict=\"DENY\"} 1",
        "tyr_drift_events_total{cause=\"mismatch\"} 2",
        "tyr_agents{status=\"online\"} 1",
        "tyr_agents{status=\"offline\"} 1",
        "tyr_http_requests_total{method=\"GET\",route=\"/api/v1/stats\",status=\"200\"} 1",
        "tyr_http_requests_total{method=\"POST\",route=\"/api/v1/policies\",status=\"201\"} 2",
        "# TYPE tyr_policy_push_duration_seconds histogram",
        "tyr_db_query_duration_seconds_count{op=\"insert_events\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    s.stop().await;
}

async fn openapi_lists_every_route(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let r = s.get("/api/v1/openapi.json").send().await.expect("openapi");
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let table = routes();
    assert!(table.len() >= 30, "{} routes", table.len());
    for route in &table {
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} missing", route.method, route.path);
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(
            secured,
            route.access != Access::Public,
            "{} {}",
            route.method,
            route.path
        );
        assert_eq!(
            op["responses"].get("403").is_some(),
            route.access == Access::Admin,
            "{} {}",
            route.method,
            route.path
        );
        let params = route.path.matches('{').count();
        assert_eq!(
            op["parameters"].as_array().map_or(0, Vec::len),
            params,
            "{} {}",
            route.method,
            route.path
        );
    }
    let ops: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(ops, table.len(), "no operation without a route");
    s.stop().await;
}
