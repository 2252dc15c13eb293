//! End to end: the real `tyr-server` binary (TLS with its generated CA, SQLite in a temp data
//! dir) driven by the real `tyr` binary. The server is built with `cargo build -p tyr-server`
//! first; when it cannot be built the tests say so and skip.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tempfile::TempDir;

use tyr_testkit::server::ADMIN_PASSWORD;

const VIEWER_PASSWORD: &str = "viewer password 123";

/// Builds `tyr-server` next to the `tyr` binary; `None` (after saying why) when it cannot.
fn server_binary() -> Option<PathBuf> {
    let tyr = PathBuf::from(env!("CARGO_BIN_EXE_tyr"));
    let bin = tyr.parent()?.join("tyr-server");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "tyr-server", "--bin", "tyr-server"])
        .current_dir(workspace);
    // Variables cargo sets for this test; build scripts (ring's) rerun when they change,
    // which would rebuild dependencies back and forth with every `cargo test`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_BIN_NAME",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            build.env_remove(&key);
        }
    }
    let built = build.status();
    match built {
        Ok(s) if s.success() && bin.exists() => Some(bin),
        other => {
            tyr_testkit::skip(&format!("tyr-server cannot be built ({other:?})"));
            None
        }
    }
}

/// A running `tyr-server` (the test kit's, killed on drop) and the runtime that drives it.
struct Server {
    /// Stops the process when dropped.
    inner: tyr_testkit::TestServer,
    url: String,
    ca: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    /// Builds and starts the server on SQLite and waits until it is healthy.
    fn start() -> Option<Server> {
        let bin = server_binary()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let inner = runtime.block_on(tyr_testkit::TestServer::start_bin(
            bin,
            tyr_testkit::Db::Sqlite,
        ));
        Some(Server {
            url: inner.url(""),
            ca: inner.ca_file(),
            inner,
            runtime,
        })
    }

    /// Runs the one-time setup (the test kit's admin, [`ADMIN_PASSWORD`]).
    fn setup_admin(&self) {
        self.runtime.block_on(self.inner.admin());
    }
}

/// The result of one `tyr` run.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Out {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).expect("JSON on stdout")
    }

    /// Asserts failure with exit 1 and exactly one `tyr: …` line on stderr; returns it.
    fn fails(self) -> String {
        assert_eq!(self.code, 1, "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{self:?}");
        assert!(lines[0].starts_with("tyr: "), "{self:?}");
        lines[0].to_owned()
    }
}

/// One user's `tyr` with its own config directory.
struct Tyr {
    dir: TempDir,
}

impl Tyr {
    fn new() -> Tyr {
        Tyr {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tyr"));
        cmd.args(args)
            .env("TYR_CONFIG_DIR", self.config_dir())
            .env("HOME", self.dir.path())
            .env_remove("TYR_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn tyr");
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(stdin.unwrap_or_default().as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("tyr output");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None, &[])
    }

    /// `tyr --server … --ca … login` with the password on stdin.
    fn login(&self, server: &Server, username: &str, password: &str) -> Out {
        let ca = server.ca.to_str().expect("utf-8 path");
        let args = [
            "--server",
            &server.url,
            "--ca",
            ca,
            "login",
            "--username",
            username,
            "--password-stdin",
        ];
        self.run_with(&args, Some(&format!("{password}\n")), &[])
    }
}

/// Setup, login, users, enrollment tokens, roles, logout.
#[test]
fn users_tokens_roles_and_sessions() {
    let Some(server) = Server::start() else {
        return;
    };
    server.setup_admin();

    let admin = Tyr::new();
    let out = admin.login(&server, "admin", ADMIN_PASSWORD).ok();
    assert!(
        out.stdout.contains("logged in as admin (role admin)"),
        "{out:?}"
    );
    let token = admin.config_dir().join("token");
    let mode = std::fs::metadata(&token)
        .expect("token")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let config = std::fs::read_to_string(admin.config_dir().join("config.toml")).expect("config");
    assert!(config.contains(&server.url), "{config}");
    assert!(config.contains("ca.pem"), "{config}");

    // A wrong password is one clear line; the server's message and status are in it.
    let line = Tyr::new()
        .login(&server, "admin", "wrong password!!")
        .fails();
    assert_eq!(
        line,
        "tyr: login failed: invalid username or password (HTTP 401)"
    );

    // Users (the saved server and CA are used from here on).
    let out = admin
        .run_with(
            &[
                "user",
                "create",
                "--username",
                "viewer1",
                "--role",
                "viewer",
            ],
            None,
            &[("TYR_PASSWORD", VIEWER_PASSWORD)],
        )
        .ok();
    assert!(
        out.stdout
            .starts_with("created user viewer1 (viewer) with id "),
        "{out:?}"
    );
    let out = admin.run(&["user", "list"]).ok();
    let header: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["ID", "USERNAME", "ROLE", "CREATED_AT"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("viewer1") && l.contains("viewer")),
        "{out:?}"
    );
    let users = admin.run(&["-o", "json", "user", "list"]).ok().json();
    let viewer_id = users
        .as_array()
        .and_then(|u| u.iter().find(|u| u["username"] == "viewer1"))
        .and_then(|u| u["id"].as_str())
        .expect("viewer1 in the JSON list")
        .to_owned();
    let short = admin.run_with(
        &[
            "user",
            "create",
            "--username",
            "x",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        Some("short\n"),
        &[],
    );
    let line = short.fails();
    assert!(
        line.contains("at least 12 characters") && line.contains("HTTP 400"),
        "{line}"
    );

    // A viewer is refused admin routes with a clear 403 line.
    let viewer = Tyr::new();
    viewer.login(&server, "viewer1", VIEWER_PASSWORD).ok();
    assert_eq!(
        viewer.run(&["user", "list"]).fails(),
        "tyr: admin role required (HTTP 403, forbidden)"
    );
    assert_eq!(
        viewer.run(&["enrollment-token", "list"]).fails(),
        "tyr: admin role required (HTTP 403, forbidden)"
    );

    // Enrollment tokens: the plaintext once on stdout, never in the list.
    let out = admin
        .run(&[
            "enrollment-token",
            "create",
            "--label",
            "ci-hosts",
            "--max-uses",
            "2",
            "--expires-hours",
            "1",
        ])
        .ok();
    let plaintext = out.stdout.trim();
    assert!(
        plaintext.starts_with("tyr_et_") && !plaintext.contains('\n'),
        "{out:?}"
    );
    let list = admin.run(&["-o", "json", "enrollment-token", "list"]).ok();
    assert!(!list.stdout.contains(plaintext), "secret listed: {list:?}");
    let tokens = list.json();
    let t = tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["label"] == "ci-hosts"))
        .expect("token listed");
    assert_eq!(
        (t["max_uses"].as_i64(), t["uses"].as_i64()),
        (Some(2), Some(0))
    );
    assert_eq!(t["revoked"], false);
    let id = t["id"].as_str().expect("id").to_owned();
    let table = admin.run(&["enrollment-token", "list"]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains(&id) && l.contains("0/2")),
        "{table:?}"
    );
    admin.run(&["enrollment-token", "revoke", &id]).ok();
    let tokens = admin
        .run(&["-o", "json", "enrollment-token", "list"])
        .ok()
        .json();
    let t = tokens
        .as_array()
        .and_then(|t| t.iter().find(|t| t["id"] == id.as_str()))
        .expect("token still listed");
    assert_eq!(t["revoked"], true);
    let line = admin
        .run(&["enrollment-token", "revoke", "no-such-id"])
        .fails();
    assert!(line.ends_with("(HTTP 404, not_found)"), "{line}");

    // Deleting the viewer ends their session: 401 reads "not logged in".
    admin.run(&["user", "delete", &viewer_id]).ok();
    let line = viewer.run(&["enrollment-token", "list"]).fails();
    assert!(
        line.starts_with("tyr: not logged in: run `tyr login` (HTTP 401"),
        "{line}"
    );
    let users = admin.run(&["-o", "json", "user", "list"]).ok().json();
    assert!(!users.to_string().contains("viewer1"), "{users}");

    // Logout forgets the token.
    admin.run(&["logout"]).ok();
    assert!(!token.exists());
    assert_eq!(
        admin.run(&["user", "list"]).fails(),
        "tyr: not logged in: run `tyr login`"
    );

    // Usage errors exit 2.
    let out = admin.run(&["user", "create", "--username", "x", "--role", "root"]);
    assert_eq!(out.code, 2, "{out:?}");
}

const POLICY_V1: &str = "apiVersion: tyr.dev/v1
kind: Policy
metadata:
  name: e2e-base
spec:
  mode: enforce
  default: allow
  rules:
    - name: deny-ssh-keys
      action: file_read
      resource_pattern: \"~/.ssh/**\"
      verdict: deny
";

const BAD_POLICY: &str = "apiVersion: tyr.dev/v1
kind: Policy
metadata:
  name: e2e-bad
spec:
  rules:
    - name: deny-ssh-keys
      action: file_read
      resource_pattern: \"~/.ssh/**\"
      verdcit: deny
";

/// Policy apply/list/show/diff/rollback/assign and located errors on a bad apply.
#[test]
fn policies_apply_show_diff_rollback_assign() {
    let Some(server) = Server::start() else {
        return;
    };
    server.setup_admin();
    let admin = Tyr::new();
    admin.login(&server, "admin", ADMIN_PASSWORD).ok();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write policy");
        p.to_str().expect("utf-8").to_owned()
    };
    let v1 = write("v1.yaml", POLICY_V1);
    let v2 = write("v2.yaml", &POLICY_V1.replace("~/.ssh/**", "~/.aws/**"));

    let out = admin.run(&["policy", "apply", "-f", &v1]).ok();
    assert!(
        out.stdout
            .starts_with("applied policy `e2e-base` version 1"),
        "{out:?}"
    );
    assert!(out.stdout.contains("deny-ssh-keys"), "{out:?}");
    let out = admin.run(&["policy", "apply", "-f", &v2]).ok();
    assert!(
        out.stdout
            .starts_with("applied policy `e2e-base` version 2"),
        "{out:?}"
    );

    let out = admin.run(&["policy", "list"]).ok();
    assert!(
        out.stdout.lines().any(|l| l.starts_with("e2e-base")),
        "{out:?}"
    );
    let out = admin.run(&["policy", "show", "e2e-base"]).ok();
    assert!(
        out.stdout.contains("version 2") && out.stdout.contains("~/.aws/**"),
        "{out:?}"
    );
    assert!(out.stdout.contains("# enforcement per rule:"), "{out:?}");
    assert!(out.stdout.contains("kernel"), "{out:?}");
    let out = admin
        .run(&["policy", "show", "e2e-base", "--version", "1"])
        .ok();
    assert!(out.stdout.contains("~/.ssh/**"), "{out:?}");

    let out = admin.run(&["policy", "diff", "e2e-base", "1", "2"]).ok();
    assert!(
        out.stdout.contains(".ssh") && out.stdout.contains(".aws"),
        "{out:?}"
    );

    let out = admin.run(&["policy", "rollback", "e2e-base", "1"]).ok();
    assert!(out.stdout.contains("new version 3"), "{out:?}");
    let out = admin
        .run(&["policy", "show", "e2e-base", "--version", "3"])
        .ok();
    assert!(out.stdout.contains("~/.ssh/**"), "{out:?}");

    admin
        .run(&[
            "policy",
            "assign",
            "--target-type",
            "agent_type",
            "--target-id",
            "claude-code",
            "--policy",
            "e2e-base",
            "--version",
            "3",
        ])
        .ok();

    // A bad policy: exit 1, each server error as FILE:LINE:COLUMN: message.
    let bad = write("bad.yaml", BAD_POLICY);
    let out = admin.run(&["policy", "apply", "-f", &bad]);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty(), "{out:?}");
    for l in &lines {
        let rest = l.strip_prefix(&format!("{bad}:")).expect("FILE: prefix");
        let mut parts = rest.splitn(3, ':');
        let line_no = parts.next().and_then(|n| n.parse::<u32>().ok());
        let col = parts.next().and_then(|n| n.parse::<u32>().ok());
        assert!(line_no.is_some() && col.is_some(), "{l}");
    }
    // Every problem is reported: the misspelt field and, since it is not `verdict`, the
    // missing verdict of the same rule.
    let typo = format!("{bad}:10:7: unknown field `verdcit`");
    assert!(out.stderr.contains(&typo), "{out:?}");
    assert!(out.stderr.contains("did you mean `verdict`?"), "{out:?}");
    assert!(out.stderr.contains("missing field `verdict`"), "{out:?}");

    // Viewers read policies but cannot apply them.
    admin
        .run_with(
            &[
                "user",
                "create",
                "--username",
                "viewer1",
                "--role",
                "viewer",
            ],
            None,
            &[("TYR_PASSWORD", VIEWER_PASSWORD)],
        )
        .ok();
    let viewer = Tyr::new();
    viewer.login(&server, "viewer1", VIEWER_PASSWORD).ok();
    viewer.run(&["policy", "list"]).ok();
    assert_eq!(
        viewer.run(&["policy", "apply", "-f", &v1]).fails(),
        "tyr: admin role required (HTTP 403, forbidden)"
    );
}

/// Daemon, event and drift reads on a server with no daemons yet.
#[test]
fn agents_events_and_drift_on_an_empty_fleet() {
    let Some(server) = Server::start() else {
        return;
    };
    server.setup_admin();
    let admin = Tyr::new();
    admin.login(&server, "admin", ADMIN_PASSWORD).ok();
    let out = admin.run(&["agent", "list"]).ok();
    assert_eq!(out.stdout, "ID  NAME  STATUS  TIER  LAST_SEEN  DRIFT\n");
    let out = admin
        .run(&["audit", "query", "--since", "1h", "--kind", "exec"])
        .ok();
    assert_eq!(out.stdout, "");
    let out = admin.run(&["-o", "json", "audit", "query"]).ok();
    assert_eq!(out.json()["events"], json!([]));
    let out = admin.run(&["drift", "--since", "24h"]).ok();
    assert!(out.stdout.contains("0 drifted events since 24h"), "{out:?}");
    let line = admin.run(&["agent", "show", "no-such-daemon"]).fails();
    assert!(line.ends_with("(HTTP 404, not_found)"), "{line}");
}
