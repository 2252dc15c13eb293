//! Enforcement end to end (SPEC §7, §8, §9): the real `tyr-server`, a real enrolled `tyrd`
//! on the tracepoint tier and the real `tyr run`. An overlay for `claude-code` denies reading
//! `<tempdir>/home/.ssh/**`; a renamed shell launched with `tyr run --agent-type claude-code`
//! is killed reading it and the DENY event reaches the server; the same read outside
//! `tyr run` succeeds.
//!
//! Needs root, a kernel with the tracepoint tier, and the `tyr-server` and `tyr` binaries
//! built (`cargo build -p tyr-server -p tyr-cli`). Nothing is pinned (`TYRD_BPF_PIN_DIR=""`):
//! the programs detach when the daemon stops at the end.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tyr_testkit::{Db, TestDaemon, TestServer, wait_for};
use tyrd::kernel::probe::{Tier, probe};

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "TOP-SECRET-KEY";

/// `tyrd run`, stopped with SIGTERM (so it removes its cgroups) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn skip_reason() -> Option<String> {
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if euid != 0 {
        return Some("not root".into());
    }
    let report = probe();
    (report.tier == Tier::Observe)
        .then(|| format!("no tracepoint tier: {}", report.reasons.join("; ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tyr_run_agent_is_killed_reading_a_denied_file_and_the_deny_is_reported() {
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return;
    }
    let tyr = tyr_testkit::bin("tyr", "TYR_BIN");
    let server = TestServer::start(Db::Sqlite).await;
    let admin = server.admin().await;
    let d = TestDaemon::configure(
        env!("CARGO_BIN_EXE_tyrd"),
        &server,
        "enforcing",
        Some(&server.bootstrap_token),
    );
    let mut yaml = std::fs::read_to_string(d.config_path()).expect("tyrd.yaml");
    yaml.push_str("tier: tracepoint\n");
    std::fs::write(d.config_path(), yaml).expect("tyrd.yaml");
    let _daemon = Running(
        d.command(&["run"])
            .env("TYRD_BPF_PIN_DIR", "")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tyrd"),
    );
    wait_for("enrollment and the first policy", WAIT, || {
        let v = d.policy_version();
        async move { v }
    })
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical tempdir");
    std::fs::create_dir_all(root.join("home/.ssh")).expect("mkdir");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    let key = root.join("home/.ssh/id_rsa");
    std::fs::write(&key, SECRET).expect("secret");
    let shell = root.join("bin/innocent-tool");
    std::fs::copy("/bin/sh", &shell).expect("copy sh");

    let policy = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata:\n  name: e2e-ssh\nspec:\n  rules:\n    - name: deny-ssh\n      action: file_read\n      resource_pattern: \"{}/home/.ssh/**\"\n      verdict: deny\n      severity: critical\n",
        root.display()
    );
    let (status, body) = admin
        .post("/api/v1/policies", &json!({"yaml": policy}))
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let version = body["version"].as_i64().expect("version");
    let (status, body) = admin
        .post(
            "/api/v1/policy-assignments",
            &json!({"target_type": "agent_type", "target_id": "claude-code", "policy": "e2e-ssh", "version": version}),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let want = format!("e2e-ssh@{version}");
    wait_for("the overlay applied by the daemon", WAIT, || {
        let applied = d.policy_version().unwrap_or_default().contains(&want);
        async move { applied.then_some(()) }
    })
    .await;

    let read = format!("cat {}", key.display());
    let governed = Command::new(&tyr)
        .args(["run", "--agent-type", "claude-code", "--"])
        .env("TYR_AGENTS_CGROUP", d.agents_cgroup())
        .arg(&shell)
        .args(["-c", &read])
        .output()
        .expect("tyr run");
    let killed = governed.status.signal() == Some(9) || governed.status.code() == Some(137);
    assert!(
        killed,
        "status {:?}, stderr {}\n{}",
        governed.status,
        String::from_utf8_lossy(&governed.stderr),
        d.log()
    );
    assert!(!String::from_utf8_lossy(&governed.stdout).contains(SECRET));

    let free = Command::new(&shell)
        .args(["-c", &read])
        .output()
        .expect("sh");
    assert!(free.status.success(), "{:?}", free.status);
    assert_eq!(String::from_utf8_lossy(&free.stdout), SECRET);

    let resource = key.display().to_string();
    let event: Value = wait_for("the DENY event on the server", WAIT, || {
        let admin = &admin;
        let resource = resource.clone();
        async move {
            let (_, page) = admin.get("/api/v1/events?limit=1000&verdict=deny").await;
            page["events"].as_array()?.iter().find_map(|e| {
                (e["resource"] == resource.as_str() && e["enforced"] == "killed").then(|| e.clone())
            })
        }
    })
    .await;
    assert_eq!(event["agent_type"], "claude-code", "{event}");
    assert_eq!(event["rule"], "deny-ssh", "{event}");
    assert_eq!(event["severity"], "critical", "{event}");
    assert!(
        event["policy_version"]
            .as_str()
            .is_some_and(|v| v.contains("e2e-ssh@")),
        "{event}"
    );
}
