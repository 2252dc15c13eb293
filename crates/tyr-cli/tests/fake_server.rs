//! The `tyr` binary against a scripted plain-HTTP server: the event stream, pagination, drift,
//! agent lists and server-side policy errors, whose routes the real server may not have yet.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tempfile::TempDir;

/// One scripted response: status and body (`text/event-stream` when `sse`).
struct Reply {
    status: u16,
    body: String,
    sse: bool,
}

fn ok(v: Value) -> Reply {
    Reply {
        status: 200,
        body: v.to_string(),
        sse: false,
    }
}

/// Serves `replies` in order, one per connection, recording each request's line and headers.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start(replies: Vec<Reply>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for reply in replies {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; length];
                std::io::Read::read_exact(&mut reader, &mut body).expect("body");
                head.push_str(&String::from_utf8_lossy(&body));
                log.lock().expect("lock").push(head);
                let kind = if reply.sse {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nContent-Type: {kind}\r\nConnection: close\r\n\r\n{}",
                    reply.status, reply.body
                );
            }
        });
        Fake { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A config dir saying the fake is the server, with a token.
fn logged_in(fake: &Fake) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.toml"),
        format!("server = \"{}\"\n", fake.url),
    )
    .expect("config");
    std::fs::write(dir.path().join("token"), "test.jwt.token\n").expect("token");
    dir
}

fn tyr(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tyr"))
        .args(args)
        .env("TYR_CONFIG_DIR", config)
        .stdin(Stdio::null())
        .output()
        .expect("run tyr")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn event(pid: u32, verdict: &str) -> Value {
    json!({"event_id": format!("e{pid}"), "daemon_id": "d1", "timestamp_ns": 1_767_225_600_000_000_000_i64,
        "verdict": verdict, "kind": "FILE_READ", "resource": "/home/a/.ssh/id_rsa", "pid": pid,
        "process_exe": "/usr/bin/cat", "agent_type": "claude-code",
        "drift_detected": true, "drift_cause": "stale_policy"})
}

#[test]
fn audit_tail_prints_events_and_drop_notices_until_the_stream_ends() {
    let body = format!(
        ": hello\n\ndata: {}\n\nevent: dropped\ndata: 5\n\ndata: {}\n\n",
        event(10, "DENY"),
        event(11, "ALLOW")
    );
    let fake = Fake::start(vec![Reply {
        status: 200,
        body,
        sse: true,
    }]);
    let cfg = logged_in(&fake);
    let out = tyr(
        cfg.path(),
        &[
            "audit",
            "tail",
            "--kind",
            "file_read",
            "--since",
            "1h",
            "--verdict",
            "deny",
        ],
    );
    assert_eq!(
        stdout(&out),
        "2026-01-01T00:00:00Z DENY FILE_READ /home/a/.ssh/id_rsa pid=10 /usr/bin/cat claude-code\n\
         2026-01-01T00:00:00Z ALLOW FILE_READ /home/a/.ssh/id_rsa pid=11 /usr/bin/cat claude-code\n"
    );
    let err = stderr(&out);
    assert!(err.contains("tyr: 5 events dropped"), "{err}");
    assert!(
        err.ends_with("tyr: the server closed the event stream\n"),
        "{err}"
    );
    assert_eq!(out.status.code(), Some(1));
    let req = &fake.requests()[0];
    assert!(req.starts_with("GET /api/v1/events/stream?"), "{req}");
    assert!(
        req.contains("kind=FILE_READ") && req.contains("verdict=DENY"),
        "{req}"
    );
    assert!(req.contains("since=20"), "{req}");
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer test.jwt.token"),
        "{req}"
    );
}

#[test]
fn audit_query_follows_cursors_up_to_the_limit() {
    let fake = Fake::start(vec![
        ok(json!({"events": [event(1, "DENY"), event(2, "DENY")], "next_cursor": "c2"})),
        ok(json!({"events": [event(3, "ALERT")], "next_cursor": "c3"})),
    ]);
    let cfg = logged_in(&fake);
    let out = tyr(cfg.path(), &["audit", "query", "--limit", "3", "--drift"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[2].contains(" ALERT ") && lines[2].contains("pid=3"),
        "{lines:?}"
    );
    assert_eq!(stderr(&out), "more events: --cursor c3\n");
    let reqs = fake.requests();
    assert!(
        reqs[0].starts_with("GET /api/v1/events?drift_detected=true&limit=3 "),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[1].starts_with("GET /api/v1/events?drift_detected=true&limit=1&cursor=c2 "),
        "{}",
        reqs[1]
    );
}

#[test]
fn drift_is_summarised_per_daemon_and_cause() {
    let mut other = event(3, "ALLOW");
    other["drift_cause"] = json!("tier_limit");
    let fake = Fake::start(vec![
        ok(json!({"events": [event(1, "DENY"), event(2, "DENY"), other], "next_cursor": null})),
        ok(json!([{"id": "d1", "name": "laptop-anna"}])),
    ]);
    let cfg = logged_in(&fake);
    let out = tyr(cfg.path(), &["drift", "--since", "2h"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["DAEMON", "NAME", "CAUSE", "COUNT", "LAST"]);
    assert_eq!(rows[1][..4], ["d1", "laptop-anna", "stale_policy", "2"]);
    assert_eq!(rows[2][..4], ["d1", "laptop-anna", "tier_limit", "1"]);
    assert!(text.contains("3 drifted events since 2h"), "{text}");
    assert!(fake.requests()[0].contains("drift_detected=true"));
}

#[test]
fn agent_list_prints_the_spec_columns() {
    let fake = Fake::start(vec![ok(json!([{"id": "d1", "name": "laptop-anna",
        "status": "online", "tier": "lsm", "last_seen": "2026-01-01T00:00:00Z", "drift_count": 4}]))]);
    let cfg = logged_in(&fake);
    let out = tyr(cfg.path(), &["agent", "list"]);
    assert_eq!(
        stdout(&out),
        "ID  NAME         STATUS  TIER  LAST_SEEN             DRIFT\n\
         d1  laptop-anna  online  lsm   2026-01-01T00:00:00Z  4\n"
    );
}

#[test]
fn policy_apply_prints_server_errors_located_in_the_file() {
    let details = json!({"errors": [{"location": {"line": 10, "column": 7}, "rule": "deny-ssh",
        "message": "unknown field `verdcit`", "hint": "did you mean `verdict`?"}]});
    let fake = Fake::start(vec![Reply {
        status: 400,
        body: json!({"error": {"code": "invalid_policy", "message": "invalid policy",
            "details": details}})
        .to_string(),
        sse: false,
    }]);
    let cfg = logged_in(&fake);
    let file = cfg.path().join("p.yaml");
    std::fs::write(&file, "apiVersion: tyr.dev/v1\n").expect("write");
    let f = file.to_str().expect("utf-8");
    let out = tyr(cfg.path(), &["policy", "apply", "-f", f]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("{f}:10:7: unknown field `verdcit` (rule `deny-ssh`); did you mean `verdict`?\n")
    );
    let req = &fake.requests()[0];
    assert!(req.starts_with("POST /api/v1/policies "), "{req}");
    assert!(
        req.contains(r#"{"yaml":"apiVersion: tyr.dev/v1\n"}"#),
        "{req}"
    );
}

#[test]
fn path_segments_are_percent_encoded() {
    let fake = Fake::start(vec![ok(json!({"yaml": "x: 1\n", "report": []}))]);
    let cfg = logged_in(&fake);
    let out = tyr(cfg.path(), &["policy", "show", "a/b c", "--version", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let req = &fake.requests()[0];
    assert!(
        req.starts_with("GET /api/v1/policies/a%2Fb%20c/versions/2 "),
        "{req}"
    );
}

#[test]
fn an_unreachable_server_is_one_line_and_exit_1() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = tempfile::tempdir().expect("tempdir");
    std::fs::write(cfg.path().join("token"), "t").expect("token");
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(
        cfg.path().join("config.toml"),
        format!("server = \"{url}\"\n"),
    )
    .expect("cfg");
    let out = tyr(cfg.path(), &["agent", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("tyr: cannot reach {url}/api/v1/agents: ")),
        "{err}"
    );
}
