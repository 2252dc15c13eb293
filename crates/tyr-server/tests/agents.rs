//! Daemons (status, show, revoke) and discovered agents (list, rename, reclassify, merge,
//! archive) over REST, on SQLite and PostgreSQL.

mod common;
mod support;

use common::{Backend, TestServer, expect_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{audit_event, daemon};
use tyr_server::drift::Tier;
use tyr_server::fleet::Notice;
use tyr_server::ingest::{IngestError, ingest};
use tyr_server::store::StoreError;
use tyr_server::store::agents::DiscoveredUpdate;
use tyr_server::store::time::now_ms;

on_both_backends! {
    daemons_status_and_revocation => daemons_status_and_revocation;
    discovered_agents_lifecycle => discovered_agents_lifecycle;
}

async fn get_json(s: &TestServer, token: &str, path: &str) -> Value {
    let r = s.get(path).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn daemons_status_and_revocation(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (_, viewer) = s.user(&admin, "vera", "viewer").await;
    let (store, fleet) = (s.running_store(), s.running_fleet());
    let fresh = daemon(&store, "a-fresh", Tier::Lsm).await;
    let stale = daemon(&store, "b-stale", Tier::Tracepoint).await;
    let never = daemon(&store, "c-never", Tier::Observe).await;
    let now = now_ms();
    assert!(
        store
            .touch_daemon(&fresh, now - 5_000)
            .await
            .expect("touch")
    );
    assert!(
        store
            .touch_daemon(&stale, now - 120_000)
            .await
            .expect("touch")
    );

    let list = get_json(&s, &viewer, "/api/v1/agents").await;
    let rows: Vec<(String, String, String)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().expect("name").to_owned(),
                a["status"].as_str().expect("status").to_owned(),
                a["tier"].as_str().expect("tier").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a-fresh".into(), "online".into(), "lsm".into()),
            ("b-stale".into(), "stale".into(), "tracepoint".into()),
            ("c-never".into(), "offline".into(), "observe".into()),
        ]
    );
    let one = get_json(&s, &viewer, &format!("/api/v1/agents/{fresh}")).await;
    assert_eq!(one["kernel_version"], "6.8.0");
    assert_eq!(one["drift_count"], 0);
    assert!(one["last_seen"].as_str().expect("last_seen").ends_with('Z'));
    assert_eq!(one["capabilities"]["tier"], "lsm");
    assert_eq!(
        get_json(&s, &viewer, &format!("/api/v1/agents/{never}")).await["last_seen"],
        Value::Null
    );

    let mut notices = fleet.subscribe_notices();
    let r = s
        .delete(&format!("/api/v1/agents/{fresh}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        notices.try_recv().expect("revocation notice"),
        Notice::DaemonRevoked {
            daemon_id: fresh.clone()
        }
    );
    let list = get_json(&s, &viewer, "/api/v1/agents").await;
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "revoked daemons are not listed"
    );
    let all = get_json(&s, &viewer, "/api/v1/agents?include_revoked=true").await;
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    let one = get_json(&s, &viewer, &format!("/api/v1/agents/{fresh}")).await;
    assert_eq!(one["status"], "revoked");
    assert!(
        !store.touch_daemon(&fresh, now).await.expect("touch"),
        "no heartbeat after revocation"
    );
    let batch = vec![audit_event(1, "/tmp/x", 1)];
    assert!(matches!(
        ingest(&store, &fleet, &fresh, batch).await,
        Err(IngestError::Revoked(_))
    ));
    let r = s
        .delete("/api/v1/agents/nope")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .get("/api/v1/agents/nope/effective-policy")
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("eff");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = s
        .get("/api/v1/agents?include_revoked=maybe")
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("list");
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    s.stop().await;
}

fn update<'a>(id: &'a str, signature: &'a str, pids: &'a [u32], at: i64) -> DiscoveredUpdate<'a> {
    DiscoveredUpdate {
        id,
        agent_type: "claude-code",
        display_name: "Claude Code",
        process_signature: signature,
        pids,
        first_seen: at,
        last_seen: at,
    }
}

async fn discovered_agents_lifecycle(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (_, viewer) = s.user(&admin, "vera", "viewer").await;
    let store = s.running_store();
    let d = daemon(&store, "host-a", Tier::Lsm).await;
    let other = daemon(&store, "host-b", Tier::Lsm).await;
    let (a1, a2) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let t = now_ms() - 60_000;
    store
        .upsert_discovered_agent(&d, update(&a1, "sig-1", &[10, 11], t))
        .await
        .expect("upsert");
    store
        .upsert_discovered_agent(&d, update(&a2, "sig-2", &[20], t))
        .await
        .expect("upsert");
    // A refresh updates pids and last_seen only.
    let again = store
        .upsert_discovered_agent(&d, update(&a1, "sig-1", &[12], t + 1000))
        .await
        .expect("refresh");
    assert_eq!(again.pids, vec![12]);
    assert_eq!(again.last_seen, t + 1000);
    assert_eq!(again.first_seen, t);
    // Another daemon cannot take over an agent id.
    assert!(matches!(
        store
            .upsert_discovered_agent(&other, update(&a1, "sig-x", &[], t))
            .await,
        Err(StoreError::Conflict)
    ));

    let list = get_json(&s, &viewer, "/api/v1/discovered-agents").await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(list[0]["id"], a1.as_str(), "most recently seen first");
    assert_eq!(list[0]["pids"], json!([12]));
    assert_eq!(list[0]["daemon_id"], d.as_str());

    let patch = |id: &str, body: Value| {
        s.client
            .patch(s.url(&format!("/api/v1/discovered-agents/{id}")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let mut notices = s.running_fleet().subscribe_notices();
    let r = patch(
        &a1,
        json!({"display_name": "Alice's Claude", "agent_type": "claude-code-beta"}),
    )
    .await
    .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    // The owning daemon's stream is told (it sends `Reclassify`).
    match notices.try_recv() {
        Ok(tyr_server::fleet::Notice::Reclassified {
            daemon_id,
            discovered_agent_id,
            agent_type,
        }) => assert_eq!(
            (
                daemon_id.as_str(),
                discovered_agent_id.as_str(),
                agent_type.as_str()
            ),
            (d.as_str(), a1.as_str(), "claude-code-beta")
        ),
        other => panic!("expected a reclassification notice, got {other:?}"),
    }
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["display_name"], "Alice's Claude");
    assert_eq!(body["agent_type"], "claude-code-beta");
    // A later report from the daemon keeps the admin's edits.
    store
        .upsert_discovered_agent(&d, update(&a1, "sig-1", &[13], t + 2000))
        .await
        .expect("refresh");
    let shown = get_json(&s, &viewer, &format!("/api/v1/discovered-agents/{a1}")).await;
    assert_eq!(shown["display_name"], "Alice's Claude");
    assert_eq!(shown["agent_type"], "claude-code-beta");
    for (body, status) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"agent_type": "bad type"}), StatusCode::BAD_REQUEST),
        (json!({"display_name": ""}), StatusCode::BAD_REQUEST),
        (json!({"colour": "red"}), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(
            patch(&a1, body.clone()).await.expect("patch").status(),
            status,
            "{body}"
        );
    }
    assert_eq!(
        patch("nope", json!({"display_name": "x"}))
            .await
            .expect("patch")
            .status(),
        StatusCode::NOT_FOUND
    );

    let post = |path: String, body: Value| s.post(&path).bearer_auth(&admin).json(&body).send();
    let r = post(
        format!("/api/v1/discovered-agents/{a2}/merge"),
        json!({"into": a2}),
    )
    .await
    .expect("merge");
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    let r = post(
        format!("/api/v1/discovered-agents/{a2}/merge"),
        json!({"into": "nope"}),
    )
    .await
    .expect("merge");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = post(
        format!("/api/v1/discovered-agents/{a2}/merge"),
        json!({"into": a1}),
    )
    .await
    .expect("merge");
    assert_eq!(r.status(), StatusCode::OK);
    let merged: Value = r.json().await.expect("json");
    assert_eq!(merged["merged_into"], a1.as_str());
    assert_eq!(merged["archived"], true);
    let r = post(
        format!("/api/v1/discovered-agents/{a1}/merge"),
        json!({"into": a2}),
    )
    .await
    .expect("merge");
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "not into a merged agent"
    );

    let r = post(format!("/api/v1/discovered-agents/{a1}/archive"), json!({}))
        .await
        .expect("archive");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get_json(&s, &viewer, "/api/v1/discovered-agents").await,
        json!([])
    );
    let all = get_json(
        &s,
        &viewer,
        &format!("/api/v1/discovered-agents?include_archived=true&agent_id={d}"),
    )
    .await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let none = get_json(
        &s,
        &viewer,
        &format!("/api/v1/discovered-agents?include_archived=true&agent_id={other}"),
    )
    .await;
    assert_eq!(none, json!([]));
    s.stop().await;
}
