//! Unit tests of the CLI's building blocks: config/token files, durations, rendering, SSE.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tyr_cli::commands::agents::agent_table;
use tyr_cli::commands::events::{Message, SseMessage, SseParser, classify, summarise};
use tyr_cli::commands::policies::{error_lines, latest_version, report_lines};
use tyr_cli::config::{Config, Store};
use tyr_cli::duration::{parse_duration, resolve_time};
use tyr_cli::output::{Table, event_line};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn token_is_written_0600_in_a_0700_directory_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nested").join("tyr");
    let store = Store::at(&dir);
    assert_eq!(store.load_token().expect("load"), None);
    store.save_token("abc.def.ghi").expect("save");
    assert_eq!(mode(&store.token_path()), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        store.load_token().expect("load").as_deref(),
        Some("abc.def.ghi")
    );
    store.save_token("second").expect("overwrite");
    assert_eq!(store.load_token().expect("load").as_deref(), Some("second"));
    assert!(store.remove_token().expect("remove"));
    assert!(!store.remove_token().expect("remove again"));
    assert_eq!(store.load_token().expect("load"), None);
}

#[test]
fn token_overwrite_tightens_a_loose_file_and_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::at(tmp.path());
    std::fs::write(store.token_path(), "old").expect("write");
    std::fs::set_permissions(store.token_path(), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    store.save_token("new").expect("save");
    assert_eq!(mode(&store.token_path()), 0o600);
    assert_eq!(mode(tmp.path()), 0o700);
}

#[test]
fn config_round_trips_and_defaults_to_empty() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::at(tmp.path().join("tyr"));
    assert_eq!(store.load_config().expect("load"), Config::default());
    let c = Config {
        server: Some("https://localhost:7701".into()),
        ca: Some("/etc/tyr/ca.pem".into()),
    };
    store.save_config(&c).expect("save");
    assert_eq!(store.load_config().expect("load"), c);
    let text = std::fs::read_to_string(store.config_path()).expect("read");
    assert!(
        text.contains("server = \"https://localhost:7701\""),
        "{text}"
    );
}

#[test]
fn broken_config_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::at(tmp.path());
    std::fs::write(store.config_path(), "servr = 1\n").expect("write");
    let err = store.load_config().expect_err("unknown key").to_string();
    assert!(
        err.contains("config.toml") && err.contains("servr"),
        "{err}"
    );
}

#[test]
fn durations_parse_with_units_and_combinations() {
    assert_eq!(parse_duration("90s").expect("s").whole_seconds(), 90);
    assert_eq!(parse_duration("15m").expect("m").whole_seconds(), 900);
    assert_eq!(parse_duration("24h").expect("h").whole_seconds(), 86_400);
    assert_eq!(parse_duration("7d").expect("d").whole_seconds(), 604_800);
    assert_eq!(parse_duration("2w").expect("w").whole_seconds(), 1_209_600);
    assert_eq!(parse_duration("1h30m").expect("hm").whole_seconds(), 5_400);
    for bad in ["", "h", "24", "24x", "-1h", "1.5h", "99999999999999999999h"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn since_resolves_durations_and_rfc3339_to_utc() {
    let now = OffsetDateTime::parse("2026-03-02T12:00:00Z", &Rfc3339).expect("now");
    assert_eq!(
        resolve_time("24h", now).expect("24h"),
        "2026-03-01T12:00:00Z"
    );
    assert_eq!(
        resolve_time("2026-01-01T01:00:00+01:00", now).expect("rfc3339"),
        "2026-01-01T00:00:00Z"
    );
    let err = resolve_time("yesterday", now).expect_err("bad");
    assert!(err.contains("yesterday"), "{err}");
}

#[test]
fn tables_align_columns_without_trailing_spaces() {
    let mut t = Table::new(&["ID", "NAME", "STATUS"]);
    t.row(vec!["1".into(), "laptop-anna".into(), "online".into()]);
    t.row(vec!["1234".into(), "b".into()]);
    assert_eq!(
        t.render(),
        "ID    NAME         STATUS\n1     laptop-anna  online\n1234  b\n"
    );
    assert_eq!(Table::new(&["A", "B"]).render(), "A  B\n");
}

#[test]
fn table_cells_escape_control_characters() {
    let mut t = Table::new(&["X"]);
    t.row(vec!["evil\u{1b}[31m\nname".into()]);
    let out = t.render();
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert_eq!(out.lines().count(), 2, "{out:?}");
}

#[test]
fn agent_list_has_the_spec_columns() {
    let agents = [
        json!({"id": "d1", "name": "host-a", "status": "online", "tier": "lsm",
        "last_seen": "2026-01-01T00:00:00Z", "drift_count": 3}),
    ];
    let out = agent_table(&agents).render();
    let mut lines = out.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["ID", "NAME", "STATUS", "TIER", "LAST_SEEN", "DRIFT"])
    );
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec![
            "d1",
            "host-a",
            "online",
            "lsm",
            "2026-01-01T00:00:00Z",
            "3"
        ])
    );
}

#[test]
fn event_lines_follow_the_spec_format() {
    let e = json!({"timestamp_ns": 1_767_225_600_000_000_000_i64, "verdict": "DENY",
        "kind": "FILE_READ", "resource": "/home/a/.ssh/id_rsa", "pid": 42,
        "process_exe": "/usr/bin/cat", "agent_type": "claude-code"});
    assert_eq!(
        event_line(&e),
        "2026-01-01T00:00:00Z DENY FILE_READ /home/a/.ssh/id_rsa pid=42 /usr/bin/cat claude-code"
    );
    let unclassified = json!({"timestamp_ns": 0, "verdict": "ALLOW", "kind": "EXEC",
        "resource": "/bin/ls", "pid": 1, "process_exe": "/bin/sh", "agent_type": null});
    assert_eq!(
        event_line(&unclassified),
        "1970-01-01T00:00:00Z ALLOW EXEC /bin/ls pid=1 /bin/sh"
    );
}

#[test]
fn sse_parser_joins_data_lines_and_skips_comments() {
    let mut p = SseParser::default();
    let mut got = Vec::new();
    for line in [
        ": keep-alive",
        "event: dropped",
        "data: 7",
        "",
        "data: {\"a\":",
        "data: 1}\r",
        "\r",
        "",
    ] {
        got.extend(p.feed(line));
    }
    assert_eq!(
        got,
        vec![
            SseMessage {
                event: "dropped".into(),
                data: "7".into()
            },
            SseMessage {
                event: String::new(),
                data: "{\"a\":\n1}".into()
            },
        ]
    );
}

#[test]
fn stream_messages_are_events_or_drop_notices() {
    let msg = |event: &str, data: &str| SseMessage {
        event: event.into(),
        data: data.into(),
    };
    assert_eq!(classify(&msg("dropped", "12")), Some(Message::Dropped(12)));
    assert_eq!(
        classify(&msg("dropped", "{\"dropped\": 3}")),
        Some(Message::Dropped(3))
    );
    assert_eq!(
        classify(&msg("", "{\"kind\": \"EXEC\"}")),
        Some(Message::Event(json!({"kind": "EXEC"})))
    );
    assert_eq!(classify(&msg("ping", "{}")), None);
    assert_eq!(classify(&msg("", "not json")), None);
}

#[test]
fn server_policy_errors_render_as_file_line_column() {
    let details = json!({"errors": [
        {"location": {"line": 7, "column": 9}, "rule": "deny-ssh",
         "message": "unknown field `verdcit`", "hint": "did you mean `verdict`?"},
        {"location": {"line": 2, "column": 1}, "rule": null, "message": "bad", "hint": null},
        {"message": "too many rules"}
    ]});
    assert_eq!(
        error_lines("p.yaml", &details),
        vec![
            "p.yaml:7:9: unknown field `verdcit` (rule `deny-ssh`); did you mean `verdict`?",
            "p.yaml:2:1: bad",
            "p.yaml: too many rules",
        ]
    );
    assert_eq!(
        error_lines("p.yaml", &json!([{"line": 3, "column": 4, "message": "x"}])),
        vec!["p.yaml:3:4: x"]
    );
    assert!(error_lines("p.yaml", &serde_json::Value::Null).is_empty());
}

#[test]
fn policy_versions_and_reports_render() {
    assert_eq!(
        latest_version(&json!([{"version": 1}, {"version": 3}, {"version": 2}])),
        Some(3)
    );
    assert_eq!(latest_version(&json!({"versions": []})), None);
    let v = json!({"report": [{"rule": "deny-ssh", "action": "file_read",
        "enforced_in": "kernel", "reason": "path DFA"}]});
    let out = report_lines(&v);
    assert!(out.starts_with("  deny-ssh "), "{out}");
    assert!(
        out.trim_end().ends_with("file_read    kernel: path DFA"),
        "{out}"
    );
}

#[test]
fn drift_is_counted_per_daemon_and_cause() {
    let ev =
        |d: &str, c: &str, ns: i64| json!({"daemon_id": d, "drift_cause": c, "timestamp_ns": ns});
    let rows = summarise(&[
        ev("a", "stale_policy", 1_000_000_000),
        ev("b", "mismatch", 0),
        ev("a", "stale_policy", 3_000_000_000),
        ev("a", "tier_limit", 0),
    ]);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        (
            rows[0].daemon_id.as_str(),
            rows[0].cause.as_str(),
            rows[0].count
        ),
        ("a", "stale_policy", 2)
    );
    assert_eq!(rows[0].last, "1970-01-01T00:00:03Z");
    assert!(rows[1..].iter().all(|r| r.count == 1));
}
