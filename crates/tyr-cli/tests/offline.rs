//! The offline commands (`tyr policy validate`, `tyr policy eval`) run as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn tyr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tyr"))
}

fn example(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    root.join(name).display().to_string()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("tyr runs")
}

#[test]
fn eval_json_names_verdict_layer_rule_and_enforcement() {
    let out = run(tyr().args([
        "-o",
        "json",
        "policy",
        "eval",
        "-f",
        &example("strict-base.yaml"),
        "--overlay",
        &example("claude-code.yaml"),
        "--agent-type",
        "claude-code",
        "--action",
        "exec",
        "--resource",
        "/usr/bin/curl",
    ]));
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["verdict"], "deny");
    assert_eq!(v["layer"], "overlay:claude-code");
    assert_eq!(v["rule"], "deny-exec-curl");
    assert_eq!(v["enforced_in"], "kernel");
}

#[test]
fn eval_reports_null_rule_when_a_default_decides() {
    let out = run(tyr().args([
        "-o",
        "json",
        "policy",
        "eval",
        "-f",
        &example("strict-base.yaml"),
        "--action",
        "file_read",
        "--resource",
        "/home/alice/src/main.rs",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["verdict"], "allow");
    assert!(v["rule"].is_null());
}

#[test]
fn validate_prints_file_line_column_errors_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  rules:\n    - name: a\n      action: file_read\n      verdict: deny\n      verdcit: deny\n",
    )
    .expect("write");
    let out = run(tyr().args(["policy", "validate", "-f"]).arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:9:7: unknown field `verdcit`", file.display());
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert!(
        stderr.contains("did you mean `verdict`?"),
        "stderr: {stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = run(tyr().args([
        "policy",
        "eval",
        "-f",
        &example("audit.yaml"),
        "--action",
        "bogus",
        "--resource",
        "/x",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(tyr().args([
        "policy",
        "eval",
        "-f",
        &example("audit.yaml"),
        "--action",
        "file_read",
        "--resource",
        "relative/path",
    ]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_closed_stdout_is_not_a_panic() {
    // The read end is closed before tyr starts, so its first write gets EPIPE.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = tyr()
        .args(["policy", "validate", "-f", &example("strict-base.yaml")])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("tyr runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(out.status.code(), Some(0));
}
