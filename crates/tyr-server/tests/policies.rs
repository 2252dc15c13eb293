//! Policies over REST: apply and versioning, located validation errors, rollback, diff,
//! concurrent applies, assignments and effective policy, on SQLite and PostgreSQL.

mod common;
mod support;

use common::{Backend, TestServer, expect_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{apply, assign, daemon, policy};
use tyr_server::drift::Tier;

on_both_backends! {
    apply_versions_and_show => apply_versions_and_show;
    invalid_policy_is_located_and_not_stored => invalid_policy_is_located_and_not_stored;
    validate_is_a_dry_run => validate_is_a_dry_run;
    rollback_and_diff => rollback_and_diff;
    concurrent_applies_get_distinct_versions => concurrent_applies_get_distinct_versions;
    assignments_replace_and_effective_policy => assignments_replace_and_effective_policy;
}

async fn get_json(s: &TestServer, token: &str, path: &str) -> Value {
    let r = s.get(path).bearer_auth(token).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.expect("json")
}

async fn apply_versions_and_show(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let (_, viewer) = s.user(&admin, "vera", "viewer").await;
    let v1 = apply(&s, &admin, &policy("laptops", "deny")).await;
    assert_eq!(v1["name"], "laptops");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["report"][0]["rule"], "secrets");
    assert_eq!(v1["report"][0]["enforced_in"], "kernel");
    let v2 = apply(&s, &admin, &policy("laptops", "alert")).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(
        apply(&s, &admin, &policy("servers", "deny")).await["version"],
        1
    );

    let list = get_json(&s, &viewer, "/api/v1/policies").await;
    let summary: Vec<(String, i64, i64)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["version"].as_i64().expect("version"),
                p["versions"].as_i64().expect("versions"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("laptops".into(), 2, 2), ("servers".into(), 1, 1)]
    );
    let versions = get_json(&s, &viewer, "/api/v1/policies/laptops/versions").await;
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
    assert_eq!(versions[0]["created_by"], "admin");

    let shown = get_json(&s, &viewer, "/api/v1/policies/laptops/versions/1").await;
    assert_eq!(shown["yaml"], policy("laptops", "deny"));
    assert_eq!(shown["compiled"]["policy"]["metadata"]["name"], "laptops");
    assert_eq!(
        shown["compiled"]["policy"]["spec"]["rules"][0]["verdict"],
        "deny"
    );
    assert!(
        shown["compiled"]["tables"].is_object(),
        "kernel tables stored"
    );
    assert_eq!(shown["report"][0]["enforced_in"], "kernel");
    assert!(shown["created_at"].as_str().expect("time").ends_with('Z'));

    for (path, status) in [
        ("/api/v1/policies/laptops/versions/3", StatusCode::NOT_FOUND),
        ("/api/v1/policies/nope/versions", StatusCode::NOT_FOUND),
        (
            "/api/v1/policies/laptops/versions/x",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = s.get(path).bearer_auth(&viewer).send().await.expect("get");
        assert_eq!(r.status(), status, "{path}");
    }
    s.stop().await;
}

async fn invalid_policy_is_located_and_not_stored(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let bad = policy("broken", "deny").replace("verdict: deny", "verdcit: deny");
    let r = s
        .post("/api/v1/policies")
        .bearer_auth(&admin)
        .json(&json!({ "yaml": bad }))
        .send()
        .await
        .expect("apply");
    let body = expect_error(r, StatusCode::BAD_REQUEST, "invalid_policy").await;
    let details = body["error"]["details"].as_array().expect("details");
    let typo = details
        .iter()
        .find(|d| d["message"].as_str().is_some_and(|m| m.contains("verdcit")))
        .unwrap_or_else(|| panic!("no error about the typo: {body}"));
    assert_eq!(typo["line"], 12, "{typo}");
    assert_eq!(typo["column"], 7, "{typo}");
    assert_eq!(typo["rule"], "secrets");
    assert!(
        typo["hint"].as_str().is_some_and(|h| h.contains("verdict")),
        "{typo}"
    );
    let r = s
        .get("/api/v1/policies/broken/versions")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("versions");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing stored");
    assert_eq!(get_json(&s, &admin, "/api/v1/policies").await, json!([]));

    // Not YAML at all, and a body that is not the expected JSON.
    let r = s
        .post("/api/v1/policies")
        .bearer_auth(&admin)
        .json(&json!({ "yaml": "{{{{" }))
        .send()
        .await
        .expect("apply");
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_policy").await;
    let r = s
        .post("/api/v1/policies")
        .bearer_auth(&admin)
        .json(&json!({ "yml": "x" }))
        .send()
        .await
        .expect("apply");
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
    s.stop().await;
}

async fn validate_is_a_dry_run(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let r = s
        .post("/api/v1/policies/validate")
        .bearer_auth(&admin)
        .json(&json!({ "yaml": policy("dry", "deny") }))
        .send()
        .await
        .expect("validate");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["valid"], true);
    assert_eq!(body["policy"]["metadata"]["name"], "dry");
    assert_eq!(body["report"][0]["rule"], "secrets");
    assert_eq!(get_json(&s, &admin, "/api/v1/policies").await, json!([]));

    // A body beyond the default 1 MiB limit reaches the parser on this route, which answers
    // with its own document-size error (tyr-policy accepts up to 1 MiB of YAML).
    let mut big = policy("big", "deny");
    for i in 0..9000 {
        big.push_str(&format!(
            "    - name: rule-{i:05}-with-a-long-name-to-make-the-document-larger\n      action: exec\n      resource_pattern: \"/opt/tool-{i}/bin/*\"\n      verdict: deny\n"
        ));
    }
    assert!(
        big.len() > 1024 * 1024 && big.len() < 4 * 1024 * 1024,
        "{}",
        big.len()
    );
    let r = s
        .post("/api/v1/policies/validate")
        .bearer_auth(&admin)
        .json(&json!({ "yaml": big }))
        .send()
        .await
        .expect("validate big");
    let body = expect_error(r, StatusCode::BAD_REQUEST, "invalid_policy").await;
    assert!(
        body["error"]["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 MiB")),
        "{body}"
    );
    // Beyond 4 MiB the body itself is refused.
    let huge = "x".repeat(5 * 1024 * 1024);
    let sent = s
        .post("/api/v1/policies/validate")
        .bearer_auth(&admin)
        .json(&json!({ "yaml": huge }))
        .send()
        .await;
    common::expect_too_large(sent).await;
    s.stop().await;
}

async fn rollback_and_diff(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let first = policy("laptops", "deny");
    apply(&s, &admin, &first).await;
    let second = format!(
        "{}    - name: no-curl\n      action: exec\n      resource_pattern: /usr/bin/curl\n      verdict: deny\n",
        policy("laptops", "alert")
    );
    apply(&s, &admin, &second).await;

    let diff = get_json(&s, &admin, "/api/v1/policies/laptops/diff?from=1&to=2").await;
    let unified = diff["unified"].as_str().expect("unified");
    assert!(unified.contains("--- laptops@1"), "{unified}");
    assert!(unified.contains("+++ laptops@2"), "{unified}");
    assert!(unified.contains("+      verdict: alert"), "{unified}");
    assert!(unified.contains("+    - name: no-curl"), "{unified}");
    assert_eq!(diff["rules"]["added"], json!(["no-curl"]));
    assert_eq!(diff["rules"]["removed"], json!([]));
    assert_eq!(diff["rules"]["changed"], json!(["secrets"]));
    for q in ["from=1", "from=1&to=9", "from=a&to=2"] {
        let r = s
            .get(&format!("/api/v1/policies/laptops/diff?{q}"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("diff");
        assert!(r.status().is_client_error(), "{q}: {}", r.status());
        let body: Value = r.json().await.expect("error json");
        assert!(body["error"]["code"].is_string(), "{q}");
    }

    let r = s
        .post("/api/v1/policies/laptops/rollback")
        .bearer_auth(&admin)
        .json(&json!({"version": 1}))
        .send()
        .await
        .expect("rollback");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["version"], 3);
    let v3 = get_json(&s, &admin, "/api/v1/policies/laptops/versions/3").await;
    assert_eq!(v3["yaml"], first);
    let same = get_json(&s, &admin, "/api/v1/policies/laptops/diff?from=1&to=3").await;
    assert_eq!(same["rules"]["changed"], json!([]));
    assert!(!same["unified"].as_str().expect("unified").contains("\n-"));
    let r = s
        .post("/api/v1/policies/laptops/rollback")
        .bearer_auth(&admin)
        .json(&json!({"version": 7}))
        .send()
        .await
        .expect("rollback");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

async fn concurrent_applies_get_distinct_versions(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let n = 8;
    let mut tasks = Vec::new();
    for i in 0..n {
        let client = s.client.clone();
        let url = s.url("/api/v1/policies");
        let token = admin.clone();
        let yaml = policy("race", if i % 2 == 0 { "deny" } else { "alert" });
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "yaml": yaml }))
                .send()
                .await
                .expect("apply");
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.expect("json")["version"]
                .as_i64()
                .expect("version")
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.expect("task"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=n).collect::<Vec<_>>());
    s.stop().await;
}

async fn assignments_replace_and_effective_policy(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.setup_admin().await;
    let store = s.running_store();
    let fleet = s.running_fleet();
    let d = daemon(&store, "laptop-1", Tier::Lsm).await;
    apply(&s, &admin, &policy("laptops", "deny")).await;
    apply(&s, &admin, &policy("laptops", "alert")).await;
    apply(&s, &admin, &policy("cc", "deny")).await;
    apply(&s, &admin, &policy("cur", "deny")).await;

    let eff = get_json(&s, &admin, &format!("/api/v1/agents/{d}/effective-policy")).await;
    assert_eq!(eff["version"], "builtin-audit");
    assert_eq!(eff["base"], Value::Null);

    let mut notices = fleet.subscribe_notices();
    assign(&s, &admin, "daemon", &d, "laptops", 1).await;
    let notice = notices.try_recv().expect("assignment notice");
    assert_eq!(
        notice,
        tyr_server::fleet::Notice::AssignmentChanged {
            target_type: "daemon".into(),
            target_id: d.clone()
        }
    );
    assign(&s, &admin, "daemon", &d, "laptops", 2).await;
    assign(&s, &admin, "agent_type", "cursor", "cur", 1).await;
    assign(&s, &admin, "agent_type", "claude-code", "cc", 1).await;
    let list = get_json(&s, &admin, "/api/v1/policy-assignments").await;
    let list = list.as_array().expect("array");
    assert_eq!(
        list.len(),
        3,
        "a new assignment replaced the daemon's: {list:?}"
    );
    let base = list
        .iter()
        .find(|a| a["target_type"] == "daemon")
        .expect("base");
    assert_eq!(base["version"], 2);
    assert_eq!(base["id"], format!("daemon:{d}"));

    let eff = get_json(&s, &admin, &format!("/api/v1/agents/{d}/effective-policy")).await;
    assert_eq!(
        eff["version"],
        "base=laptops@2;claude-code=cc@1;cursor=cur@1"
    );
    assert_eq!(eff["base"], json!({"policy": "laptops", "version": 2}));
    assert_eq!(eff["overlays"][0]["agent_type"], "claude-code");
    assert_eq!(eff["overlays"][1]["agent_type"], "cursor");
    assert_eq!(
        eff["effective_set"]["base"]["spec"]["rules"][0]["verdict"],
        "alert"
    );
    assert_eq!(
        eff["effective_set"]["overlays"][0]["agent_type"],
        "claude-code"
    );

    // Unknown version, unknown daemon, bad target type: refused, nothing changes.
    for (body, status) in [
        (
            json!({"target_type": "daemon", "target_id": d, "policy": "laptops", "version": 9}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"target_type": "daemon", "target_id": "nope", "policy": "laptops", "version": 1}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"target_type": "host", "target_id": d, "policy": "laptops", "version": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"target_type": "agent_type", "target_id": "a;b", "policy": "cc", "version": 1}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = s
            .post("/api/v1/policy-assignments")
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .expect("assign");
        assert_eq!(r.status(), status, "{body}");
    }

    let r = s
        .delete("/api/v1/policy-assignments/agent_type:cursor")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .delete(&format!(
            "/api/v1/policy-assignments?target_type=daemon&target_id={d}"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .delete("/api/v1/policy-assignments/agent_type:cursor")
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete again");
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let eff = get_json(&s, &admin, &format!("/api/v1/agents/{d}/effective-policy")).await;
    assert_eq!(eff["version"], "builtin-audit;claude-code=cc@1");
    s.stop().await;
}
