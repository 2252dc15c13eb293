//! Userspace classification end to end (SPEC §6, §7, §9), as root on the tracepoint tier,
//! with the enforcer in this process and real processes:
//! - a copy of `sh` at an unknown path with `CLAUDECODE=1` is classified as `claude-code` by
//!   userspace, becomes a discovered agent, and is then governed by the `claude-code`
//!   overlay (killed reading a denied file); a conditional rule turns one of its allowed
//!   reads into a userspace `ALERT`;
//! - a process of no known type with an LLM credential in its environment under each
//!   `unregistered_agents` mode: `audit` (allowed, flagged), `quarantine` (built-in strict
//!   overlay), `deny` (every governed syscall denied).
//!
//! Only processes carrying this test's markers are affected: the classification table is the
//! test's own (the credential is a variable named for this run) and every policy denies only
//! paths under the test's temporary directory. Nothing is pinned.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tyr_policy::model::{EffectiveSet, Overlay};
use tyr_proto::agent::DiscoveredAgentUpdate;
use tyrd::config::Config;
use tyrd::enforce::Enforcer;
use tyrd::enforce::classifier::Classifier;
use tyrd::event::{Enforced, Event, Kind, Verdict};
use tyrd::kernel::events::EventReader;
use tyrd::kernel::probe::{Tier, probe};

/// One enforcer (set of programs) at a time.
static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(30);

fn skip_reason() -> Option<String> {
    let euid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if euid != 0 {
        return Some("not root".into());
    }
    let report = probe();
    (report.tier == Tier::Observe)
        .then(|| format!("no tracepoint tier: {}", report.reasons.join("; ")))
}

/// The credential variable of this run (nothing else on the host carries it).
fn credential() -> String {
    format!("TYR_TEST_LLM_KEY_{}", std::process::id())
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    rt: tokio::runtime::Runtime,
    reader: EventReader,
    // Dropped after the reader: detaches the programs.
    enforcer: Enforcer,
    updates: Vec<DiscoveredAgentUpdate>,
}

impl Fixture {
    fn start(mode: &str) -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("tyrd=debug")
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical");
        for d in ["bin", "secret", "cond", "proj", "state"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for f in ["secret/key", "cond/a", "cond/b", "proj/.env", "proj/data"] {
            std::fs::write(root.join(f), "x\n").expect("write");
        }
        std::fs::copy("/bin/sh", root.join("bin/stand-in")).expect("copy sh");
        std::fs::copy("/bin/true", root.join("bin/curl")).expect("copy true");
        let yaml = format!(
            "server: 127.0.0.1:1\nname: classify-e2e\nca_file: /nonexistent\nstate_dir: {}\n\
             tier: tracepoint\nunregistered_agents: {mode}\n",
            root.join("state").display()
        );
        let config = Config::from_yaml(&yaml, Path::new("tyrd.yaml")).expect("config");
        let table = format!(
            "agent_types:\n  - {{name: claude-code, env: [CLAUDECODE]}}\ncredentials: [{}]\n",
            credential()
        );
        let classifier = Classifier::parse(&table).expect("table");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (enforcer, reader) = rt.block_on(async {
            // Its own agent-type cgroups: no other test's daemon removes or shares them.
            let cgroups = format!(
                "tyr-test-{}",
                root.file_name().unwrap_or_default().display()
            );
            Enforcer::start_with(&config, true, classifier, None, &cgroups).expect("enforcer")
        });
        let reader = reader
            .unwrap_or_else(|| panic!("no kernel side: {}", enforcer.report().downgrade_reason));
        Fixture {
            _dir: dir,
            root,
            rt,
            reader,
            enforcer,
            updates: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    /// A copy of `sh` running `script` after a line on its stdin, with `env` set.
    fn stand_in(&self, env: (&str, &str), script: &str) -> (Child, ChildStdin) {
        let mut child = Command::new(self.root.join("bin/stand-in"))
            .args(["-c", &format!("read go; {script}")])
            .env(env.0, env.1)
            .current_dir(self.root.join("proj"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stand-in");
        let stdin = child.stdin.take().expect("stdin");
        (child, stdin)
    }

    /// Waits until `pid` belongs to a discovered agent; returns that agent.
    fn discovered(&mut self, pid: u32) -> DiscoveredAgentUpdate {
        let deadline = Instant::now() + WAIT;
        loop {
            self.updates.extend(self.enforcer.discovered_changes());
            if let Some(u) = self.updates.iter().rev().find(|u| u.pids.contains(&pid)) {
                return u.clone();
            }
            assert!(Instant::now() < deadline, "pid {pid} never discovered");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first event matching `pred`, converted by the enforcer.
    fn event(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.reader.next()).await });
            let k = match next {
                Ok(Ok(Ok(k))) => k,
                Ok(Ok(Err(_))) => continue,
                Ok(Err(e)) => panic!("ring buffer: {e}"),
                Err(_) => panic!("no event within {WAIT:?}: {what}"),
            };
            if let Some(e) = self.enforcer.to_event(&k)
                && pred(&e)
            {
                return e;
            }
        }
    }

    fn apply_overlay(&mut self, agent_type: &str, yaml: &str) {
        let policy = tyr_policy::parse(yaml).expect("policy");
        let set = EffectiveSet {
            base: None,
            overlays: vec![Overlay {
                agent_type: agent_type.into(),
                policy,
            }],
        };
        self.enforcer.apply("test@1", set).expect("apply");
    }
}

fn go(stdin: &mut ChildStdin) {
    stdin.write_all(b"go\n").expect("go");
}

/// `go`, to a stand-in that may already have been killed (its stdin then has no reader).
fn go_if_alive(stdin: &mut ChildStdin) {
    match stdin.write_all(b"go\n") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.expect("go"),
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the stand-in did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn killed(status: std::process::ExitStatus) -> bool {
    status.signal() == Some(9)
}

#[test]
fn an_env_marked_process_is_classified_in_userspace_then_governed() {
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fx = Fixture::start("audit");
    let overlay = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {{name: claude-e2e}}\nspec:\n  rules:\n\
         \x20   - {{name: cond-root, action: file_read, resource_pattern: \"{c}/a\", verdict: alert, severity: high, condition: \"context.uid == 0\"}}\n\
         \x20   - {{name: cond-other, action: file_read, resource_pattern: \"{c}/b\", verdict: deny, condition: \"context.uid == 4242\"}}\n\
         \x20   - {{name: deny-secret, action: file_read, resource_pattern: \"{s}/**\", verdict: deny, severity: critical}}\n",
        c = fx.path("cond"),
        s = fx.path("secret"),
    );
    fx.apply_overlay("claude-code", &overlay);
    let script = format!(
        "read x < {}; read x < {}; read x < {}; echo survived",
        fx.path("cond/a"),
        fx.path("cond/b"),
        fx.path("secret/key")
    );
    let (mut child, mut stdin) = fx.stand_in(("CLAUDECODE", "1"), &script);
    let pid = child.id();
    let agent = fx.discovered(pid);
    assert_eq!(agent.agent_type, "claude-code");
    assert!(
        agent.process_signature.contains("/bin/stand-in"),
        "{agent:?}"
    );
    assert!(
        fx.enforcer
            .discovered_all()
            .iter()
            .any(|a| a.id == agent.id)
    );
    go(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(killed(status), "not killed: {status:?}");

    let a = fx.path("cond/a");
    let alert = fx.event("the conditional alert", |e| e.resource == a);
    assert_eq!(alert.verdict, Verdict::Alert, "{alert:?}");
    assert_eq!(alert.rule.as_deref(), Some("cond-root"));
    assert_eq!(alert.enforced, Enforced::None);
    assert_eq!(alert.severity, tyrd::event::Severity::High);
    assert_eq!(
        alert.metadata.get("enforced_in").map(String::as_str),
        Some("userspace")
    );
    assert_eq!(
        alert.discovered_agent_id.as_deref(),
        Some(agent.id.as_str())
    );
    let b = fx.path("cond/b");
    let plain = fx.event("the read whose condition fails", |e| e.resource == b);
    assert_eq!(plain.verdict, Verdict::Allow, "{plain:?}");
    let key = fx.path("secret/key");
    let deny = fx.event("the denied read", |e| e.resource == key);
    assert_eq!(
        (deny.verdict, deny.enforced),
        (Verdict::Deny, Enforced::Killed)
    );
    assert_eq!(deny.kind, Kind::FileRead);
    assert_eq!(deny.agent_type.as_deref(), Some("claude-code"));
    assert_eq!(deny.discovered_agent_id.as_deref(), Some(agent.id.as_str()));
    assert_eq!(deny.pid, pid);
    assert!(deny.process_exe.ends_with("/bin/stand-in"), "{deny:?}");

    // The agent's pid disappears once it is gone.
    let deadline = Instant::now() + WAIT;
    loop {
        fx.updates.extend(fx.enforcer.discovered_changes());
        let last = fx.updates.iter().rev().find(|u| u.id == agent.id);
        if last.is_some_and(|u| !u.pids.contains(&pid)) {
            break;
        }
        assert!(Instant::now() < deadline, "pid {pid} never left its agent");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unregistered_agent_under_audit_is_allowed_and_flagged() {
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fx = Fixture::start("audit");
    let script = format!("read x < {}; echo survived", fx.path("proj/data"));
    let (mut child, mut stdin) = fx.stand_in((&credential(), "sk-test"), &script);
    let agent = fx.discovered(child.id());
    assert_eq!(agent.agent_type, "unregistered");
    go(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status:?}");
    let data = fx.path("proj/data");
    let e = fx.event("the flagged read", |e| e.resource == data);
    assert_eq!(e.verdict, Verdict::Allow);
    assert_eq!(e.agent_type.as_deref(), Some("unregistered"));
    assert_eq!(
        e.metadata.get("unregistered_agents").map(String::as_str),
        Some("audit")
    );
}

#[test]
fn unregistered_agent_under_quarantine_gets_the_builtin_overlay() {
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fx = Fixture::start("quarantine");
    // Its working directory is writable; `.env` files are secrets; curl is a network tool.
    let script = format!(
        "echo ok > {w}; {curl}; echo survived",
        w = fx.path("proj/out"),
        curl = fx.path("bin/curl"),
    );
    let (mut child, mut stdin) = fx.stand_in((&credential(), "sk-test"), &script);
    let agent = fx.discovered(child.id());
    assert_eq!(agent.agent_type, "quarantine");
    go(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(status.success(), "the shell itself survives: {status:?}");
    let curl = fx.path("bin/curl");
    let e = fx.event("the denied exec", |e| e.resource == curl);
    assert_eq!((e.verdict, e.enforced), (Verdict::Deny, Enforced::Killed));
    assert_eq!(e.rule.as_deref(), Some("no-curl"));
    assert_eq!(e.agent_type.as_deref(), Some("quarantine"));
    assert_eq!(
        std::fs::read_to_string(fx.path("proj/out")).ok().as_deref(),
        Some("ok\n")
    );

    let script = format!("read x < {}; echo survived", fx.path("proj/.env"));
    let (mut child, mut stdin) = fx.stand_in((&credential(), "sk-test"), &script);
    fx.discovered(child.id());
    go(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(killed(status), "reading a secret: {status:?}");
}

#[test]
fn unregistered_agent_under_deny_has_its_governed_syscalls_denied() {
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fx = Fixture::start("deny");
    let script = format!("read x < {}; echo survived", fx.path("proj/data"));
    let (mut child, mut stdin) = fx.stand_in((&credential(), "sk-test"), &script);
    let pid = child.id();
    let agent = fx.discovered(pid);
    assert_eq!(agent.agent_type, "unregistered");
    go_if_alive(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(killed(status), "{status:?}");
    // Every read is denied, the loader's too: the identity the monitor writes right after
    // the exec can land before the stand-in's loader has opened libc, so the first denied
    // read is that open or the script's.
    let e = fx.event("the denied read", |e| {
        e.pid == pid && e.kind == Kind::FileRead
    });
    assert_eq!((e.verdict, e.enforced), (Verdict::Deny, Enforced::Killed));
    assert_eq!(
        e.metadata.get("unregistered_agents").map(String::as_str),
        Some("deny")
    );
    // The monitor writes the identity itself: no call into the enforcer is needed.
    let spin = format!("while :; do read x < {}; done", fx.path("proj/data"));
    let (mut child, mut stdin) = fx.stand_in((&credential(), "sk-test"), &spin);
    go_if_alive(&mut stdin);
    let status = wait_exit(&mut child);
    assert!(killed(status), "{status:?}");
    // A process without the credential is not affected.
    let (mut plain, mut stdin) = fx.stand_in(("TYR_TEST_UNRELATED", "1"), &script);
    go(&mut stdin);
    assert!(wait_exit(&mut plain).success());
}
