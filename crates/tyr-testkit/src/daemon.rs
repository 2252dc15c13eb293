//! A real `tyrd` process with a generated `tyrd.yaml` in a temporary directory.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use crate::bin;
use crate::server::TestServer;

/// A running (or stopped) `tyrd`; killed when dropped.
#[derive(Debug)]
pub struct TestDaemon {
    /// Holds `tyrd.yaml`, `state/` and `tyrd.log`.
    pub dir: TempDir,
    bin: PathBuf,
    events_from: Option<PathBuf>,
    child: Option<Child>,
}

impl TestDaemon {
    /// Writes a `tyrd.yaml` for `server` (bootstrap token, heartbeat every second) and
    /// starts `tyrd run`, reading events from `events_from` when given.
    pub fn start(server: &TestServer, events_from: Option<&Path>) -> TestDaemon {
        Self::start_bin(bin("tyrd", "TYRD_BIN"), server, events_from)
    }

    /// [`TestDaemon::start`] with the binary `bin` (e.g. `env!("CARGO_BIN_EXE_tyrd")`).
    pub fn start_bin(
        bin: impl Into<PathBuf>,
        server: &TestServer,
        events_from: Option<&Path>,
    ) -> TestDaemon {
        let d = TestDaemon::configure(bin, server, "test-host", Some(&server.bootstrap_token));
        let mut d = d;
        d.events_from = events_from.map(Path::to_owned);
        d.spawn();
        d
    }

    /// Writes the configuration only (nothing runs): for `tyrd enroll` or a custom start.
    pub fn configure(
        bin: impl Into<PathBuf>,
        server: &TestServer,
        name: &str,
        token: Option<&str>,
    ) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = token
            .map(|t| format!("enrollment_token: \"{t}\"\n"))
            .unwrap_or_default();
        let yaml = format!(
            "server: \"{}\"\nname: \"{name}\"\nca_file: \"{}\"\n{token}state_dir: \"{}\"\nheartbeat_interval_s: 1\nlog_level: info\n",
            server.grpc_addr(),
            server.ca_file().display(),
            dir.path().join("state").display(),
        );
        std::fs::write(dir.path().join("tyrd.yaml"), yaml).expect("tyrd.yaml");
        TestDaemon {
            dir,
            bin: bin.into(),
            events_from: None,
            child: None,
        }
    }

    /// Path of `tyrd.yaml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("tyrd.yaml")
    }

    /// `state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The daemon's log (stderr), appended across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tyrd.log")).unwrap_or_default()
    }

    /// A `tyrd` command on this configuration, logging to `tyrd.log`.
    pub fn command(&self, args: &[&str]) -> Command {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tyrd.log"))
            .expect("tyrd log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("NO_COLOR", "1")
            // A test daemon never pins into the host's /sys/fs/bpf/tyr: its programs go away
            // with it, and a production daemon's pinned enforcement is never touched.
            .env("TYRD_BPF_PIN_DIR", "")
            // Its own agent-type cgroups: another daemon's shutdown never removes them.
            .env("TYR_AGENTS_CGROUP", self.agents_cgroup())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(log);
        cmd
    }

    /// The directory under the cgroup v2 root holding this daemon's agent-type cgroups (unique
    /// per test daemon); pass it to `tyr run` as `TYR_AGENTS_CGROUP`.
    pub fn agents_cgroup(&self) -> String {
        let unique = self.dir.path().file_name().unwrap_or_default();
        format!("tyr-test-{}", unique.to_string_lossy())
    }

    fn spawn(&mut self) {
        let mut args = vec!["run".to_owned()];
        if let Some(f) = &self.events_from {
            args.push("--events-from".to_owned());
            args.push(f.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tyrd");
        self.child = Some(child);
    }

    /// The agent id once enrolled.
    pub fn agent_id(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir().join("agent_id"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The `policy_version` of the last policy the daemon received.
    pub fn policy_version(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.state_dir().join("policy.json")).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
        doc["policy_version"].as_str().map(str::to_owned)
    }

    /// `(last_seq, acked_seq)` of the spool, from `tyrd status`.
    pub fn spool_state(&self) -> (u64, u64) {
        let out = self
            .command(&["status"])
            .stdout(Stdio::piped())
            .output()
            .expect("tyrd status");
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("last_seq:"), field("acked_seq:"))
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `tyrd run` again on the same configuration and state, reading `events_from`.
    pub fn restart(&mut self, events_from: Option<&Path>) {
        self.kill();
        self.events_from = events_from.map(Path::to_owned);
        self.spawn();
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
