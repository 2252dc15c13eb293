//! Helpers shared by the policy, event and agent tests: policies, daemons and events.
#![allow(dead_code)] // each test binary uses a different subset

use reqwest::StatusCode;
use serde_json::{Value, json};
use tyr_proto::events::{Enforced, Event, Kind, Verdict};
use tyr_server::drift::Tier;
use tyr_server::store::Store;
use tyr_server::store::agents::NewDaemon;

use crate::common::TestServer;

/// A policy named `name` whose file reads of `/secret/**` get `verdict`.
pub fn policy(name: &str, verdict: &str) -> String {
    format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata:
  name: {name}
spec:
  mode: enforce
  default: allow
  rules:
    - name: secrets
      action: file_read
      resource_pattern: \"/secret/**\"
      verdict: {verdict}
"
    )
}

/// Applies `yaml` as `token`; asserts 201 and returns the body.
pub async fn apply(s: &TestServer, token: &str, yaml: &str) -> Value {
    let r = s
        .post("/api/v1/policies")
        .bearer_auth(token)
        .json(&json!({ "yaml": yaml }))
        .send()
        .await
        .expect("apply");
    assert_eq!(r.status(), StatusCode::CREATED, "apply");
    r.json().await.expect("json")
}

/// Assigns `policy@version` to a target as `token`; asserts 201.
pub async fn assign(
    s: &TestServer,
    token: &str,
    target_type: &str,
    target_id: &str,
    policy: &str,
    version: i64,
) {
    let r = s
        .post("/api/v1/policy-assignments")
        .bearer_auth(token)
        .json(&json!({"target_type": target_type, "target_id": target_id, "policy": policy, "version": version}))
        .send()
        .await
        .expect("assign");
    assert_eq!(r.status(), StatusCode::CREATED, "assign");
}

/// Registers a daemon directly in the store, with `tier` reported; returns its id.
pub async fn daemon(store: &Store, name: &str, tier: Tier) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    store
        .create_daemon(NewDaemon {
            id: &id,
            name,
            hostname: name,
            kernel_version: "6.8.0",
            arch: "x86_64",
            enrollment_token_id: None,
            cert_serial: "01",
            cert_fingerprint: "ff",
            cert_not_after: i64::MAX,
        })
        .await
        .expect("create daemon");
    let caps = json!({"tier": tier.as_str()});
    assert!(
        store
            .set_daemon_capabilities(&id, tier, "6.8.0", &caps)
            .await
            .expect("capabilities")
    );
    id
}

/// An allowed, unenforced [`event`] under the built-in audit policy.
pub fn audit_event(seq: u64, resource: &str, ts_ms: u64) -> Event {
    event(
        seq,
        resource,
        Verdict::Allow,
        Enforced::None,
        "builtin-audit",
        ts_ms,
    )
}

/// A file-read event of `resource` with the daemon's `verdict`, decided under
/// `policy_version`, at `ts_ms`.
pub fn event(
    seq: u64,
    resource: &str,
    verdict: Verdict,
    enforced: Enforced,
    policy_version: &str,
    ts_ms: u64,
) -> Event {
    let mut e = Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        seq,
        resource: resource.to_owned(),
        policy_version: policy_version.to_owned(),
        pid: 42,
        ppid: 1,
        uid: 1000,
        process_exe: "/usr/bin/cat".to_owned(),
        cmdline: format!("cat {resource}"),
        timestamp_ns: ts_ms * 1_000_000,
        ..Event::default()
    };
    e.set_kind(Kind::FileRead);
    e.set_verdict(verdict);
    e.set_enforced(enforced);
    e
}
