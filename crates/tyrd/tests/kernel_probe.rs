//! `tyrd probe`: the tier report of this kernel, human and JSON (SPEC §8).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn probe(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tyrd"))
        .arg("probe")
        .args(args)
        .output()
        .expect("run tyrd probe");
    assert!(out.status.success(), "tyrd probe failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn probe_reports_a_tier_with_reasons_and_hooks() {
    let json: serde_json::Value = serde_json::from_str(&probe(&["--json"])).expect("json");
    let tier = json["tier"].as_str().expect("tier");
    assert!(["lsm", "tracepoint", "observe"].contains(&tier), "{json}");
    if tier != "lsm" {
        assert!(
            !json["reasons"].as_array().expect("reasons").is_empty(),
            "{json}"
        );
    }
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        tyr_testkit::skip("the hook checks need root and BTF");
        return;
    }
    let hooks = json["hooks"].as_array().expect("hooks");
    let hook = |name: &str| {
        hooks
            .iter()
            .find(|h| h["hook"] == name)
            .unwrap_or_else(|| panic!("hook {name} missing: {json}"))
    };
    let lsm = hook("lsm/file_open");
    assert_eq!(
        lsm["loaded"].as_bool(),
        Some(lsm["error"].is_null()),
        "{lsm}"
    );
    for name in [
        "tp_btf/sys_exit",
        "tp_btf/sched_process_exec",
        "cgroup/connect4",
    ] {
        let h = hook(name);
        if tier == "tracepoint" {
            assert_eq!(h["loaded"], true, "{h}");
            assert!(h["verified_instructions"].as_u64().unwrap_or(0) > 0, "{h}");
        }
    }
    let human = probe(&[]);
    assert!(human.starts_with(&format!("tier: {tier}\n")), "{human}");
    assert!(human.contains("tp_btf/sys_exit"), "{human}");
}
