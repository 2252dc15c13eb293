//! The tracepoint tier on this kernel: real programs, real processes (SPEC §8).
//!
//! Needs root and a kernel that loads the tracepoint programs; otherwise every test prints
//! `skipping: <reason>` and returns. Everything lives under a fresh temporary directory; the
//! policy is an overlay for a test agent type, so no other process on the host is affected.
//! Programs are detached when the fixture drops (also on failure).

mod common;
mod uring;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use tyr_policy::compile::{KernelRequest, KernelResource, KernelTables, Limits, compile, emulate};
use tyr_policy::glob::Homes;
use tyr_policy::model::{Action, EffectiveSet, Overlay, Verdict};
use tyrd::event::{Enforced, Kind};
use tyrd::kernel::Tracepoints;
use tyrd::kernel::allows::AllowSweep;
use tyrd::kernel::events::{BootClock, EventReader, KernelEvent, Operation, boot_now_ns};
use tyrd::kernel::maps::TyrProc;
use tyrd::kernel::probe::{Tier, probe};

/// One set of programs at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const AGENT: &str = "test-agent";
const SECRET: &str = "TOP-SECRET-KEY";

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    agent_id: u8,
    rt: tokio::runtime::Runtime,
    events: EventReader,
    // Dropped last: detaches the programs.
    tp: Tracepoints,
}

/// Why the kernel tests cannot run here (probed once).
fn skip_reason() -> Option<String> {
    static REASON: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    REASON.get_or_init(probe_skip).clone()
}

fn probe_skip() -> Option<String> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Some("not root".into());
    }
    let report = probe();
    if report.tier == Tier::Observe {
        return Some(format!("no tracepoint tier: {}", report.reasons.join("; ")));
    }
    None
}

fn policy(root: &Path) -> String {
    let r = root.display();
    format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: test-overlay}}
spec:
  rules:
    - name: deny-ssh
      action: file_read
      resource_pattern: \"{r}/home/.ssh/**\"
      verdict: deny
    - name: deny-tool
      action: exec
      resource_pattern: \"{r}/bin/denied-*\"
      verdict: deny
    - name: alert-notes
      action: file_write
      resource_pattern: \"{r}/notes/**\"
      verdict: alert
    - name: deny-locked
      action: file_write
      resource_pattern: \"{r}/locked/**\"
      verdict: deny
"
    )
}

fn tables(root: &Path) -> KernelTables {
    let policy = tyr_policy::parse(&policy(root)).expect("test policy parses");
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy,
        }],
    };
    compile(&set, &Homes::default(), &Limits::default()).expect("test policy compiles")
}

fn setup() -> Option<(std::sync::MutexGuard<'static, ()>, Fixture)> {
    setup_with(None)
}

fn setup_with(procs: Option<u32>) -> Option<(std::sync::MutexGuard<'static, ()>, Fixture)> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reason) = skip_reason() {
        tyr_testkit::skip(&reason);
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical temp dir");
    for sub in ["home/.ssh", "work", "bin", "notes", "locked"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("home/.ssh/id_rsa"), SECRET).expect("secret");
    std::fs::write(root.join("home/public.txt"), "public").expect("public");
    std::fs::write(root.join("locked/keep.txt"), "KEEP").expect("locked");
    std::fs::write(root.join("bin/denied-script"), "echo RAN\n").expect("script");
    std::fs::write(root.join("bin/fine-script"), "echo FINE\n").expect("script");
    symlink(root.join("home/.ssh/id_rsa"), root.join("work/link")).expect("symlink");
    std::fs::copy("/bin/true", root.join("bin/denied-true")).expect("copy true");
    std::fs::copy("/bin/true", root.join("bin/fine-true")).expect("copy true");
    std::fs::copy("/bin/sh", root.join("bin/agent-sh")).expect("copy sh");

    let t = tables(&root);
    let agent_id = t
        .agent_types
        .iter()
        .position(|n| n == AGENT)
        .expect("agent type") as u8
        + 1;
    let mut tp =
        Tracepoints::load_with_capacity(procs).expect("tracepoint programs load and attach");
    tp.load_tables(&t, 1, false).expect("tables load");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let events = rt.block_on(async { tp.events() }).expect("ring buffer");
    Some((
        guard,
        Fixture {
            dir,
            root,
            agent_id,
            rt,
            events,
            tp,
        },
    ))
}

/// `sh -c "read _; SCRIPT"`: the script runs once a line is written to its stdin, so the
/// shell can be marked as an agent before it does anything.
fn gated(script: &str) -> Child {
    gated_in("/bin/sh", script)
}

/// [`gated`] with another shell.
fn gated_in(shell: &str, script: &str) -> Child {
    Command::new(shell)
        .arg("-c")
        .arg(format!("read _; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

/// Releases the gate and returns stdout.
fn release(child: Child) -> String {
    release_status(child).0
}

/// Releases the gate and returns stdout and the exit status.
fn release_status(mut child: Child) -> (String, std::process::ExitStatus) {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    let out = child.wait_with_output().expect("wait");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status,
    )
}

impl Fixture {
    fn p(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn mark_agent(&mut self, pid: u32) {
        let proc = TyrProc {
            agent_type_id: self.agent_id,
            discovered_id: 77,
            ..TyrProc::default()
        };
        self.tp.set_process(pid, proc).expect("seed process");
    }

    /// Runs `script` in a shell marked as the test agent; returns stdout.
    fn as_agent(&mut self, script: &str) -> String {
        let child = gated(script);
        self.mark_agent(child.id());
        release(child)
    }

    /// The first event matching `pred` within 5 s.
    fn event(&mut self, what: &str, pred: impl Fn(&KernelEvent) -> bool) -> KernelEvent {
        common::first_event(&self.rt, &mut self.events, what, pred)
    }
}

fn killed_deny(ev: &KernelEvent, action: Action, path: &str) -> bool {
    ev.action == action
        && ev.verdict == Verdict::Deny
        && ev.enforced == Enforced::Killed
        && ev.path.as_deref() == Some(path)
}

#[test]
fn agent_reading_a_denied_file_is_killed_and_reported() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let out = fx.as_agent(&format!(
        "cat {secret}; echo rc=$?; cat {}",
        fx.p("home/public.txt")
    ));
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    assert!(
        out.contains("rc=137"),
        "cat was not killed by SIGKILL: {out:?}"
    );
    assert!(out.contains("public"), "an allowed read failed: {out:?}");
    let ev = fx.event("deny of the secret", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert_eq!(ev.comm, "cat");
    assert_eq!(ev.agent_type_id, fx.agent_id);
    assert_eq!(ev.discovered_id, 77);
    assert_eq!(ev.layer, 1, "the overlay decided");
    assert_eq!(ev.rule, Some(0), "rule deny-ssh decided");
    assert!(!ev.fail_closed);
    assert_eq!(fx.tp.counters().expect("counters").ringbuf_drops, 0);
    let clock = BootClock::new().expect("clock");
    let event = ev.to_event(&tables(&fx.root), &clock);
    assert_eq!(event.kind, Kind::FileRead);
    assert_eq!(event.verdict, tyrd::event::Verdict::Deny);
    assert_eq!(event.rule.as_deref(), Some("deny-ssh"));
    assert_eq!(event.agent_type.as_deref(), Some(AGENT));
    assert_eq!(event.resource, secret);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    assert!(
        now.abs_diff(event.timestamp_ns) < 60_000_000_000,
        "timestamp off"
    );
}

#[test]
fn the_same_read_by_a_non_agent_succeeds() {
    let Some((_g, fx)) = setup() else { return };
    let child = gated(&format!("cat {}; echo rc=$?", fx.p("home/.ssh/id_rsa")));
    let out = release(child);
    assert!(out.contains(SECRET) && out.contains("rc=0"), "{out:?}");
}

#[test]
/// `e`: listing the protected directory itself (`dir/**` matches `dir`).
fn symlink_dotdot_and_relative_paths_are_resolved() {
    let Some((_g, mut fx)) = setup() else { return };
    let script = format!(
        "cd {work}; cat link; echo a=$?; cat ../home/.ssh/id_rsa; echo b=$?; \
         cd ../home; cat .ssh/id_rsa; echo c=$?; cat {work}/../home/./.ssh//id_rsa; echo d=$?; \
         ls .ssh; echo e=$?",
        work = fx.p("work")
    );
    let out = fx.as_agent(&script);
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    for k in ["a", "b", "c", "d", "e"] {
        assert!(
            out.contains(&format!("{k}=137")),
            "{k}: not killed: {out:?}"
        );
    }
    let secret = fx.p("home/.ssh/id_rsa");
    fx.event("deny via a symlink", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
}

#[test]
fn exec_of_a_denied_binary_is_killed_before_it_runs() {
    let Some((_g, mut fx)) = setup() else { return };
    let denied = fx.p("bin/denied-true");
    let out = fx.as_agent(&format!(
        "{denied}; echo a=$?; {}; echo b=$?",
        fx.p("bin/fine-true")
    ));
    assert!(out.contains("a=137"), "denied exec not killed: {out:?}");
    assert!(out.contains("b=0"), "allowed exec failed: {out:?}");
    let ev = fx.event("deny of the exec", |e| {
        killed_deny(e, Action::Exec, &denied)
    });
    assert_eq!(ev.rule, Some(1), "rule deny-tool decided");
}

#[test]
fn descendants_inherit_the_identity_and_entries_are_removed_at_exit() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    // Double fork into a new session: the grandchild is reparented and still governed.
    let script = format!("( setsid sh -c 'cat {secret}; echo rc=$?' & ); wait");
    let child = gated(&script);
    let pid = child.id();
    fx.mark_agent(pid);
    let out = release(child);
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    assert!(out.contains("rc=137"), "grandchild not killed: {out:?}");
    let ev = fx.event("deny in a grandchild", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert_ne!(ev.tgid, pid);
    assert_eq!(ev.agent_type_id, fx.agent_id);
    assert_eq!(
        fx.tp.process(pid).expect("lookup"),
        None,
        "exit removes the entry"
    );
}

#[test]
fn allow_and_alert_events_of_agents_are_reported() {
    let Some((_g, mut fx)) = setup() else { return };
    let note = fx.p("notes/n.txt");
    let public = fx.p("home/public.txt");
    let out = fx.as_agent(&format!(
        "echo hi > {note}; echo w=$?; cat {public} >/dev/null; echo r=$?"
    ));
    assert!(out.contains("w=0") && out.contains("r=0"), "{out:?}");
    let alert = fx.event("alert on the write", |e| {
        e.action == Action::FileWrite && e.path.as_deref() == Some(note.as_str())
    });
    assert_eq!(
        (alert.verdict, alert.enforced),
        (Verdict::Alert, Enforced::None)
    );
    assert_eq!(alert.rule, Some(2));
    let allow = fx.event("allow of the read", |e| {
        e.action == Action::FileRead && e.path.as_deref() == Some(public.as_str())
    });
    assert_eq!((allow.verdict, allow.rule), (Verdict::Allow, None));
}

#[test]
fn agent_executables_are_classified_at_exec() {
    let Some((_g, mut fx)) = setup() else { return };
    let agent_sh = fx.root.join("bin/agent-sh");
    let id = fx.agent_id;
    fx.tp.set_agent_exe(&agent_sh, id).expect("agent exe");
    let secret = fx.p("home/.ssh/id_rsa");
    let out = Command::new(&agent_sh)
        .arg("-c")
        .arg(format!("cat {secret}; echo rc=$?"))
        .output()
        .expect("run agent-sh");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("rc=137") && !out.contains(SECRET), "{out:?}");
    let _ = &fx.dir;
}

#[test]
fn a_child_that_cannot_be_recorded_is_killed_not_ungoverned() {
    // Room for the agent shell only: its child cannot be recorded at fork.
    let Some((_g, mut fx)) = setup_with(Some(1)) else {
        return;
    };
    let out = fx.as_agent(&format!("cat {}; echo rc=$?", fx.p("home/public.txt")));
    assert!(
        out.contains("rc=137"),
        "unrecorded child was not killed: {out:?}"
    );
    let ev = fx.event("fail-closed kill", |e| {
        e.fail_closed && e.enforced == Enforced::Killed
    });
    assert_eq!(ev.verdict, Verdict::Deny);
    let counters = fx.tp.counters().expect("counters");
    assert!(counters.fork_full >= 1);
    assert!(
        counters.fail_closed >= 1,
        "the fail-closed kill was not counted"
    );
}

/// A cgroup v2 directory for the test, removed on drop (and the hierarchy unmounted when the
/// test mounted it).
struct Cgroup {
    dir: PathBuf,
    mounted: Option<PathBuf>,
}

impl Cgroup {
    fn new(tmp: &Path) -> Cgroup {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let existing = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            (post.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
        });
        let (root, mounted) = match existing {
            Some(root) => (root, None),
            None => {
                let root = tmp.join("cgroup2");
                std::fs::create_dir_all(&root).expect("mkdir cgroup2");
                let ok = Command::new("mount")
                    .args(["-t", "cgroup2", "none"])
                    .arg(&root)
                    .status()
                    .expect("mount")
                    .success();
                assert!(ok, "mount -t cgroup2 failed");
                (root.clone(), Some(root))
            }
        };
        let dir = root.join(format!("tyr-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir cgroup");
        Cgroup { dir, mounted }
    }

    fn id(&self) -> u64 {
        std::fs::metadata(&self.dir).expect("cgroup").ino()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(root) = &self.mounted {
            let _ = Command::new("umount").arg(root).status();
        }
    }
}

#[test]
fn processes_launched_in_an_agent_cgroup_are_governed() {
    let Some((_g, mut fx)) = setup() else { return };
    let cg = Cgroup::new(&fx.root);
    let id = fx.agent_id;
    fx.tp.set_cgroup_agent(cg.id(), id).expect("cgroup agent");
    let secret = fx.p("home/.ssh/id_rsa");
    // Join the cgroup, then exec: the exec is classified by the cgroup (like `tyr run`).
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/sh -c 'cat {secret}; echo rc=$?'",
        cg.dir.display()
    );
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("rc=137") && !out.contains(SECRET), "{out:?}");
    let ev = fx.event("deny in the cgroup", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert_eq!(ev.cgroup_id, cg.id());
}

#[test]
fn paths_too_long_for_the_kernel_fail_closed() {
    let Some((_g, mut fx)) = setup() else { return };
    // 17 components of 250 bytes: the canonical path exceeds 4 KiB. No absolute path argument
    // may be that long, so the tree is built and entered with relative steps from the test
    // process's working directory (restored on drop; tests are serialised). No rule matches
    // the file: only the failed walk can deny it.
    struct Cwd(PathBuf);
    impl Drop for Cwd {
        fn drop(&mut self) {
            let _ = std::env::set_current_dir(&self.0);
        }
    }
    let cwd = Cwd(std::env::current_dir().expect("cwd"));
    std::env::set_current_dir(fx.root.join("work")).expect("cd");
    let name = "n".repeat(250);
    for _ in 0..17 {
        std::fs::create_dir(&name).expect("mkdir deep");
        std::env::set_current_dir(&name).expect("cd deep");
    }
    std::fs::write("f", "deep").expect("deep file");
    let child = gated("cat f; echo rc=$?");
    drop(cwd);
    fx.mark_agent(child.id());
    let out = release(child);
    assert!(out.contains("rc=137"), "over-long path not killed: {out:?}");
    let ev = fx.event("fail-closed deny", |e| {
        e.fail_closed && e.action == Action::FileRead
    });
    assert_eq!((ev.verdict, ev.path), (Verdict::Deny, None));
    assert!(fx.tp.counters().expect("counters").fail_closed >= 1);
}

/// Kernel verdicts equal the emulator's (`tyr_policy::compile::emulate`) for the same tables,
/// over globs with `*`, `**`, `?`, classes, first-match order, binary filters and two layers.
#[test]
fn kernel_verdicts_match_the_emulator() {
    let Some((_g, mut fx)) = setup() else { return };
    let r = fx.root.display().to_string();
    let overlay = format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: diff-overlay}}
spec:
  rules:
    - {{name: keys, action: file_read, resource_pattern: \"{r}/d/*.key\", verdict: deny}}
    - {{name: secrets, action: file_read, resource_pattern: \"{r}/d/**/secret?\", verdict: alert}}
    - {{name: class, action: file_read, resource_pattern: \"{r}/d/[a-c]*/x\", verdict: deny}}
    - {{name: head-only, action: file_read, resource_pattern: \"{r}/d/**\", verdict: deny, binaries: [\"/usr/bin/head\"]}}
    - {{name: b-tree, action: file_read, resource_pattern: \"{r}/d/b/**\", verdict: deny}}
"
    );
    let base = format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: diff-base}}
spec:
  rules:
    - {{name: base-alert, action: file_read, resource_pattern: \"{r}/d/base/**\", verdict: alert}}
"
    );
    let set = EffectiveSet {
        base: Some(tyr_policy::parse(&base).expect("base")),
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&overlay).expect("overlay"),
        }],
    };
    let tables = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp.load_tables(&tables, 2, false).expect("tables");
    let agent = tables
        .agent_types
        .iter()
        .position(|n| n == AGENT)
        .expect("agent") as u8
        + 1;
    fx.agent_id = agent;

    let files = [
        "d/a.key",
        "d/x/secret1",
        "d/secret2",
        "d/apple/x",
        "d/zz/x",
        "d/b/c/d",
        "d/b.key",
        "d/base/f",
        "d/base/secret3",
        "d/plain",
        "other",
    ];
    let mut script = String::new();
    for f in files {
        let p = fx.root.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, "x").expect("write");
        script.push_str(&format!("cat {} >/dev/null; echo {f}=$?; ", p.display()));
    }
    let out = fx.as_agent(&script);
    let cat = std::fs::canonicalize("/bin/cat").expect("cat");
    let binary_mask = tables
        .binaries
        .walk(cat.as_os_str().as_encoded_bytes())
        .and_then(|s| tables.binary_masks.get(s as usize).copied())
        .unwrap_or(0);
    for f in files {
        let path = fx.p(f);
        let want = emulate(
            &tables,
            &KernelRequest {
                action: Action::FileRead,
                agent_type_id: agent,
                binary_mask,
                domain_mask: 0,
                resource: KernelResource::Path(path.clone().into_bytes()),
            },
        );
        let ev = fx.event(&path, |e| {
            e.comm == "cat" && e.action == Action::FileRead && e.path.as_deref() == Some(&path)
        });
        assert_eq!(
            (ev.verdict, ev.layer, ev.rule, ev.fail_closed),
            (want.verdict, want.layer, want.rule, want.fail_closed),
            "{f}"
        );
        let rc = if want.verdict == Verdict::Deny {
            137
        } else {
            0
        };
        assert!(
            out.contains(&format!("{f}={rc}")),
            "{f}: want rc {rc}: {out:?}"
        );
    }
}

/// Reloading switches between the two table slots; each reload takes effect whole.
#[test]
fn reloaded_tables_take_effect() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let script = format!("cat {secret} >/dev/null; echo rc=$?");
    let allow_all = compile(
        &EffectiveSet {
            base: None,
            overlays: Vec::new(),
        },
        &Homes::default(),
        &Limits::default(),
    )
    .expect("audit tables");
    let deny = tables(&fx.root);
    // Slot 1 was filled by setup; now 0 (audit), 1 (deny again), 0 (audit again).
    for (generation, t, rc) in [(2, &allow_all, 0), (3, &deny, 137), (4, &allow_all, 0)] {
        fx.tp.load_tables(t, generation, false).expect("reload");
        let out = fx.as_agent(&script);
        assert!(
            out.contains(&format!("rc={rc}")),
            "generation {generation}: {out:?}"
        );
    }
}

/// A bpffs directory of pins, removed on drop (which detaches the pinned programs).
struct Pins(PathBuf);

impl Pins {
    /// `/sys/fs/bpf/tyr-test-TAG-PID`, this test's own pin directory.
    fn new(tag: &str) -> Self {
        Pins(PathBuf::from(format!(
            "/sys/fs/bpf/tyr-test-{tag}-{}",
            std::process::id()
        )))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pinned programs and maps outlive the daemon that loaded them; a restarted daemon adopts
/// the maps (identities survive) and replaces the programs.
#[test]
fn a_restarted_daemon_adopts_the_pinned_state() {
    let Some((_g, fx)) = setup() else { return };
    let Fixture {
        dir,
        root,
        agent_id,
        tp,
        ..
    } = fx;
    drop(tp);
    let pins = Pins::new("restart");
    let mut first = Tracepoints::load_pinned(&pins.0).expect("first daemon");
    first.load_tables(&tables(&root), 1, false).expect("tables");
    let secret = root.join("home/.ssh/id_rsa");
    let child = gated(&format!("cat {}; echo rc=$?", secret.display()));
    let proc = TyrProc {
        agent_type_id: agent_id,
        discovered_id: 9,
        ..TyrProc::default()
    };
    first.set_process(child.id(), proc).expect("seed");
    drop(first);
    // Between daemons: still enforced (the gate is released under the second daemon, but the
    // identity was recorded by the first).
    let mut second = Tracepoints::load_pinned(&pins.0).expect("second daemon");
    // The shell's exec may land after the seed and add its interpreter flag.
    let kept = second.process(child.id()).expect("lookup").expect("kept");
    assert_eq!((kept.agent_type_id, kept.discovered_id), (agent_id, 9));
    let out = release(child);
    assert!(out.contains("rc=137") && !out.contains(SECRET), "{out:?}");
    drop(second);
    drop(pins);
    drop(dir);
}

/// Pins a hash map of key and value sizes `key`/`value` at `path` (as another build might
/// have left one), with the raw bpf(2) calls.
fn pin_foreign_map(path: &Path, key: u32, value: u32) {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let create = Create {
        map_type: 1,
        key_size: key,
        value_size: value,
        max_entries: 16,
    };
    // SAFETY: bpf(BPF_MAP_CREATE) and bpf(BPF_OBJ_PIN) with attributes that outlive the calls.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &create as *const Create,
            size_of::<Create>(),
        )
    };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let pin = Pin {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, &pin as *const Pin, size_of::<Pin>()) };
    assert_eq!(rc, 0, "pin: {}", std::io::Error::last_os_error());
    unsafe { libc::close(fd as i32) };
}

/// A pinned map another tyrd build left with another layout is replaced, so the daemon
/// still enforces (it used to fall back to observe); compatible maps keep their state.
#[test]
fn a_pinned_map_of_another_layout_is_replaced() {
    let Some((_g, fx)) = setup() else { return };
    let Fixture {
        root, agent_id, tp, ..
    } = fx;
    drop(tp);
    let pins = Pins::new("layout");
    let mut first = Tracepoints::load_pinned(&pins.0).expect("first daemon");
    let proc = TyrProc {
        agent_type_id: agent_id,
        discovered_id: 9,
        ..TyrProc::default()
    };
    let holder = gated("true");
    first.set_process(holder.id(), proc).expect("seed");
    drop(first);
    let allows = pins.0.join("maps/tyr_allows");
    std::fs::remove_file(&allows).expect("unpin tyr_allows");
    pin_foreign_map(&allows, 8, 8);
    let mut second = Tracepoints::load_pinned(&pins.0).expect("loads over a foreign map");
    let info = aya::maps::MapInfo::from_pin(&allows).expect("tyr_allows pinned again");
    assert_ne!(
        (info.key_size(), info.value_size()),
        (8, 8),
        "still the foreign map"
    );
    let kept = second
        .process(holder.id())
        .expect("lookup")
        .expect("identity kept");
    assert_eq!(kept.discovered_id, 9);
    second
        .load_tables(&tables(&root), 1, false)
        .expect("tables");
    let secret = root.join("home/.ssh/id_rsa");
    let child = gated(&format!("cat {}; echo rc=$?", secret.display()));
    second.set_process(child.id(), proc).expect("seed");
    let out = release(child);
    assert!(
        out.contains("rc=137") && !out.contains(SECRET),
        "not enforced: {out:?}"
    );
    release(holder);
    drop(second);
    drop(pins);
}

/// A link an earlier build pinned under a name this build does not use (its per-call
/// syscall programs) is detached by the next daemon: only this build's programs stay pinned.
#[test]
fn links_of_an_earlier_build_are_detached() {
    let Some((_g, fx)) = setup() else { return };
    drop(fx);
    let pins = Pins::new("stale");
    let first = Tracepoints::load_pinned(&pins.0).expect("first daemon");
    drop(first);
    let links = pins.0.join("links");
    // A real link under an old program's name: the first daemon's fork hook, renamed.
    std::fs::rename(links.join("tyr_fork"), links.join("tyr_enter_openat")).expect("rename");
    let second = Tracepoints::load_pinned(&pins.0).expect("second daemon");
    let mut names: Vec<String> = std::fs::read_dir(&links)
        .expect("links")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = tyrd::kernel::PROGRAMS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    want.sort();
    assert_eq!(names, want, "stale or missing links");
    drop(second);
    drop(pins);
}

/// Fork churn under an agent: every child is governed while it lives and removed when it
/// exits, so the identity map ends empty.
#[test]
fn process_churn_leaves_no_identity_behind() {
    let Some((_g, mut fx)) = setup() else { return };
    let script = format!(
        "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done; \
         {}; echo rc=$?",
        fx.p("bin/denied-true")
    );
    let out = fx.as_agent(&script);
    assert!(
        out.contains("rc=137"),
        "the 501st child was not governed: {out:?}"
    );
    let left = fx.tp.processes().expect("processes");
    assert!(left.is_empty(), "identities left behind: {left:?}");
}

/// `net_connect` on the tracepoint tier: `cgroup/connect4/6` return `EPERM` (no kill).
#[test]
fn agent_connections_to_denied_destinations_get_eperm() {
    let Some((_g, mut fx)) = setup() else { return };
    let denied = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let (dp, op) = (
        denied.local_addr().expect("addr").port(),
        open.local_addr().expect("addr").port(),
    );
    let overlay = format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: net-overlay}}
spec:
  rules:
    - {{name: no-local-port, action: net_connect, cidrs: [127.0.0.0/8], ports: [{dp}], verdict: deny}}
    - {{name: local-alert, action: net_connect, cidrs: [127.0.0.0/8], verdict: alert}}
"
    );
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&overlay).expect("overlay"),
        }],
    };
    let t = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp.load_tables(&t, 5, false).expect("tables");
    // bash's /dev/tcp connects; ::ffff:127.0.0.1 is IPv4-mapped IPv6 (decided as IPv4).
    let mut script = format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{dp}) 2>/dev/null; echo a=$?; \
         (exec 3<>/dev/tcp/127.0.0.1/{op}) 2>/dev/null; echo b=$?; "
    );
    let v6 = std::path::Path::new("/proc/net/if_inet6").exists();
    if v6 {
        script.push_str(&format!(
            "(exec 3<>/dev/tcp/::ffff:127.0.0.1/{dp}) 2>/dev/null; echo c=$?; "
        ));
    }
    let child = gated_in("/bin/bash", &script);
    fx.mark_agent(child.id());
    let out = release(child);
    assert!(out.contains("a=1"), "denied connect went through: {out:?}");
    assert!(out.contains("b=0"), "allowed connect failed: {out:?}");
    if v6 {
        assert!(
            out.contains("c=1"),
            "IPv4-mapped connect went through: {out:?}"
        );
    }
    let ev = fx.event("blocked connect", |e| {
        e.action == Action::NetConnect && e.verdict == Verdict::Deny
    });
    assert_eq!(ev.enforced, Enforced::Blocked);
    assert_eq!(ev.dest, Some(([127, 0, 0, 1], dp).into()));
    assert_eq!(ev.rule, Some(0));
    let alert = fx.event("alert on the other port", |e| {
        e.action == Action::NetConnect && e.dest == Some(([127, 0, 0, 1], op).into())
    });
    assert_eq!((alert.verdict, alert.rule), (Verdict::Alert, Some(1)));
    // The same connects from a non-agent are not decided by the overlay.
    let out = release(gated_in("/bin/bash", &script));
    assert!(
        out.contains("a=0") && out.contains("b=0"),
        "non-agent: {out:?}"
    );
}

/// Destination verdicts equal the emulator's: CIDR first-match, port ranges, catch-alls,
/// IPv6 and IPv4-mapped IPv6 (all on loopback, so connects fail fast when allowed).
#[test]
fn kernel_net_verdicts_match_the_emulator() {
    let Some((_g, mut fx)) = setup() else { return };
    let overlay = "apiVersion: tyr.dev/v1
kind: Policy
metadata: {name: net-diff}
spec:
  rules:
    - {name: r0, action: net_connect, cidrs: [127.1.0.0/16], ports: [\"8000-8100\"], verdict: deny}
    - {name: r1, action: net_connect, cidrs: [127.2.0.0/16], verdict: alert}
    - {name: r2, action: net_connect, cidrs: [127.2.3.4/32], verdict: deny}
    - {name: r3, action: net_connect, cidrs: [\"::1/128\"], verdict: allow}
    - {name: r4, action: net_connect, ports: [443], verdict: deny}
";
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(overlay).expect("overlay"),
        }],
    };
    let tables = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp.load_tables(&tables, 6, false).expect("tables");
    let v6 = Path::new("/proc/net/if_inet6").exists();
    // (host as bash writes it, expected destination in the event)
    let mut cases: Vec<(&str, std::net::SocketAddr)> = vec![
        ("127.1.0.1/8050", "127.1.0.1:8050".parse().expect("addr")),
        ("127.1.0.1/9000", "127.1.0.1:9000".parse().expect("addr")),
        ("127.2.3.4/80", "127.2.3.4:80".parse().expect("addr")),
        ("127.3.0.1/443", "127.3.0.1:443".parse().expect("addr")),
        ("127.3.0.1/80", "127.3.0.1:80".parse().expect("addr")),
    ];
    if v6 {
        cases.push(("::1/443", "[::1]:443".parse().expect("addr")));
        cases.push((
            "::ffff:127.1.0.1/8060",
            "127.1.0.1:8060".parse().expect("addr"),
        ));
    }
    let script: String = cases
        .iter()
        .map(|(host, _)| format!("(exec 3<>/dev/tcp/{host}) 2>/dev/null; "))
        .collect();
    let child = gated_in("/bin/bash", &script);
    let agent = fx.agent_id;
    fx.mark_agent(child.id());
    release(child);
    for (host, dest) in cases {
        let (family, addr) = match dest.ip() {
            std::net::IpAddr::V4(v4) => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&v4.octets());
                (4, a)
            }
            std::net::IpAddr::V6(v6) => (6, v6.octets()),
        };
        let want = emulate(
            &tables,
            &KernelRequest {
                action: Action::NetConnect,
                agent_type_id: agent,
                binary_mask: 0,
                domain_mask: 0,
                resource: KernelResource::Addr {
                    family,
                    addr,
                    port: dest.port(),
                },
            },
        );
        let ev = fx.event(host, |e| {
            e.action == Action::NetConnect && e.dest == Some(dest)
        });
        assert_eq!(
            (ev.verdict, ev.layer, ev.rule, ev.fail_closed),
            (want.verdict, want.layer, want.rule, want.fail_closed),
            "{host}"
        );
        let enforced = match want.verdict {
            Verdict::Deny => Enforced::Blocked,
            _ => Enforced::None,
        };
        assert_eq!(ev.enforced, enforced, "{host}");
    }
}

/// Unconnected UDP (`sendmsg4`): the datagram to a denied destination gets `EPERM`. The test
/// process itself is marked as the agent for the duration (and unmarked by a guard).
#[test]
fn agent_datagrams_to_denied_destinations_get_eperm() {
    let Some((_g, mut fx)) = setup() else { return };
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
    let port = sink.local_addr().expect("addr").port();
    let overlay = format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: udp}}
spec:
  rules:
    - {{name: no-udp, action: net_connect, cidrs: [127.0.0.0/8], ports: [{port}], verdict: deny}}
"
    );
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&overlay).expect("overlay"),
        }],
    };
    let t = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp.load_tables(&t, 7, false).expect("tables");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
    let target = sink.local_addr().expect("addr");
    assert!(sender.send_to(b"x", target).is_ok(), "not yet an agent");

    struct Unmark<'a>(&'a mut Tracepoints);
    impl Drop for Unmark<'_> {
        fn drop(&mut self) {
            let _ = self.0.remove_process(std::process::id());
        }
    }
    fx.mark_agent(std::process::id());
    let guard = Unmark(&mut fx.tp);
    let err = sender
        .send_to(b"x", target)
        .expect_err("datagram went through");
    drop(guard);
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    let ev = fx.event("blocked datagram", |e| {
        e.action == Action::NetConnect && e.dest == Some(target)
    });
    assert_eq!(
        (ev.verdict, ev.enforced),
        (Verdict::Deny, Enforced::Blocked)
    );
    assert!(sender.send_to(b"x", target).is_ok(), "unmarked again");
}

/// `open_by_handle_at` names no path at all; the returned fd's file is still canonical.
/// The helper is compiled with the C compiler the build already needs (skipped without it).
#[test]
fn opens_by_file_handle_are_decided_too() {
    let Some((_g, mut fx)) = setup() else { return };
    let src = fx.root.join("work/byhandle.c");
    let bin = fx.root.join("bin/byhandle");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
    int mount_id;
    h->handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(AT_FDCWD, argv[1], h, &mount_id, 0)) { perror("name"); return 2; }
    int dir = open(argv[2], O_RDONLY | O_DIRECTORY);
    getchar();
    int fd = open_by_handle_at(dir, h, O_RDONLY);
    if (fd < 0) { perror("open_by_handle_at"); return 3; }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) fwrite(buf, 1, n, stdout);
    return 0;
}
"#,
    )
    .expect("helper source");
    let clang = std::env::var("TYR_CLANG").unwrap_or_else(|_| "clang".into());
    let built = Command::new(&clang).arg("-o").arg(&bin).arg(&src).status();
    if !built.is_ok_and(|s| s.success()) {
        tyr_testkit::skip(&format!("cannot compile the helper with {clang}"));
        return;
    }
    let secret = fx.p("home/.ssh/id_rsa");
    let child = Command::new(&bin)
        .arg(&secret)
        .arg(fx.p("home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("helper");
    fx.mark_agent(child.id());
    let mut child = child;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"\n")
        .expect("release");
    let out = child.wait_with_output().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "not killed: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
    fx.event("deny by handle", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
}

/// The base layer governs every process, classified or not (SPEC §6 "Layers").
#[test]
fn the_base_policy_holds_for_unclassified_processes() {
    let Some((_g, mut fx)) = setup() else { return };
    let key = fx.p("home/base.key");
    std::fs::write(&key, SECRET).expect("key");
    let base = format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: strict-base}}
spec:
  rules:
    - {{name: base-key, action: file_read, resource_pattern: \"{key}\", verdict: deny}}
"
    );
    let set = EffectiveSet {
        base: Some(tyr_policy::parse(&base).expect("base")),
        overlays: Vec::new(),
    };
    let t = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp.load_tables(&t, 8, false).expect("tables");
    let out = release(gated(&format!("cat {key}; echo rc=$?")));
    assert!(out.contains("rc=137") && !out.contains(SECRET), "{out:?}");
    let ev = fx.event("base deny", |e| killed_deny(e, Action::FileRead, &key));
    assert_eq!((ev.layer, ev.rule, ev.agent_type_id), (0, Some(0), 0));
}

/// Events the ring buffer cannot take are counted, not lost silently (nobody reads here).
#[test]
fn ring_buffer_overflow_is_counted() {
    let Some((_g, mut fx)) = setup() else { return };
    let file = fx.p("notes/n.txt");
    // 40k alert events of ~150 bytes do not fit the 4 MiB ring (alerts, unlike repeated
    // allows, are never suppressed).
    let out = fx.as_agent(&format!(
        "i=0; while [ $i -lt 40000 ]; do : > {file}; i=$((i+1)); done; echo done"
    ));
    assert!(out.contains("done"), "{out:?}");
    let drops = fx.tp.counters().expect("counters").ringbuf_drops;
    assert!(drops > 0, "no drop counted");
}

/// Not a test: the io_uring client run by the io_uring tests (see `uring`).
#[test]
fn io_uring_helper() {
    uring::helper();
}

/// io_uring opens pass no syscall tracepoint: a governed process is killed at
/// `io_uring_setup`; other processes keep io_uring (and could read the file through it).
#[test]
fn io_uring_is_refused_to_agents_and_left_to_others() {
    let Some((_g, mut fx)) = setup() else { return };
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() != "0")
    {
        return tyr_testkit::skip("io_uring is disabled on this kernel");
    }
    let secret = fx.p("home/.ssh/id_rsa");
    let free = uring::gated_helper(&secret).spawn().expect("helper");
    let out = release(free);
    assert!(
        out.contains(&format!("uring: {SECRET}")),
        "io_uring did not work for a non-agent: {out:?}"
    );
    let child = uring::gated_helper(&secret).spawn().expect("helper");
    fx.mark_agent(child.id());
    let (out, status) = release_status(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed: {out:?}");
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("io_uring deny", |e| e.operation == Some(Operation::IoUring));
    assert_eq!(
        (ev.verdict, ev.enforced, ev.agent_type_id),
        (Verdict::Deny, Enforced::Killed, fx.agent_id)
    );
    let event = ev.to_event(&tables(&fx.root), &BootClock::new().expect("clock"));
    assert_eq!(event.resource, "io_uring");
    assert_eq!(
        event.metadata.get("operation").map(String::as_str),
        Some("io_uring")
    );
}

/// `O_TRUNC`/`O_CREAT` opens are decided at syscall entry on the path string (resolved
/// against the cwd, `.` and `..` removed): the caller is killed, and where the kernel lets
/// BPF write user memory the truncation never happens.
#[test]
fn a_denied_truncation_is_decided_at_entry() {
    let Some((_g, mut fx)) = setup() else { return };
    let keep = fx.p("locked/keep.txt");
    let out = fx.as_agent(&format!(
        "sh -c ': > {keep}'; echo a=$?; cd {work}; sh -c ': > ../locked/./keep.txt'; echo b=$?; \
         echo note > ../notes/n.txt; echo c=$?",
        work = fx.p("work")
    ));
    for k in ["a=137", "b=137", "c=0"] {
        assert!(out.contains(k), "{k}: {out:?}");
    }
    let ev = fx.event("deny at entry", |e| {
        killed_deny(e, Action::FileWrite, &keep) && e.at_entry
    });
    assert_eq!(ev.rule, Some(3), "rule deny-locked decided");
    assert_eq!(ev.comm, "sh");
    let content = std::fs::read_to_string(&keep).expect("locked file");
    let counters = fx.tp.counters().expect("counters");
    if fx.tp.refuses_at_entry() {
        assert_eq!(content, "KEEP", "the denied truncation happened");
        assert_eq!(counters.uwrite_failed, 0);
    } else {
        // Kernel lockdown: BPF may not write user memory; the truncation is counted.
        assert!(counters.uwrite_failed >= 2, "{counters:?}");
    }
}

/// Hard links and renames of protected files (and renames into write-protected places) are
/// decided at syscall entry: the caller is killed and, where user writes are allowed, the
/// file keeps its only name.
#[test]
fn links_and_renames_of_protected_files_are_decided_at_entry() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let public = fx.p("home/public.txt");
    let out = fx.as_agent(&format!(
        "ln {secret} {copy}; echo a=$?; mv {public} {work}/pub2; echo b=$?; \
         mv {work}/pub2 {locked}/new; echo c=$?; mv {secret} {work}/moved; echo d=$?",
        copy = fx.p("work/copy"),
        work = fx.p("work"),
        locked = fx.p("locked"),
    ));
    for k in ["a=137", "b=0", "c=137", "d=137"] {
        assert!(out.contains(k), "{k}: {out:?}");
    }
    let link = fx.event("link deny", |e| e.operation == Some(Operation::Link));
    assert!(
        killed_deny(&link, Action::FileRead, &secret) && link.at_entry,
        "{link:?}"
    );
    let target = fx.p("locked/new");
    let into = fx.event("rename into a locked dir", |e| {
        e.operation == Some(Operation::RenameTarget)
    });
    assert!(killed_deny(&into, Action::FileWrite, &target), "{into:?}");
    let moved = fx.event("rename deny", |e| e.operation == Some(Operation::Rename));
    assert!(killed_deny(&moved, Action::FileRead, &secret), "{moved:?}");
    if fx.tp.refuses_at_entry() {
        assert!(!fx.root.join("work/copy").exists(), "the link was made");
        assert!(!fx.root.join("locked/new").exists(), "the rename was made");
        assert!(!fx.root.join("work/moved").exists(), "the rename was made");
        assert_eq!(std::fs::read_to_string(&secret).expect("secret"), SECRET);
    } else {
        assert!(fx.tp.counters().expect("counters").uwrite_failed >= 3);
    }
}

/// An exec-denied script run as `sh script`, or a denied binary run by the loader, is
/// decided as an exec when the governed interpreter opens it.
#[test]
fn exec_rules_hold_for_files_run_by_an_interpreter() {
    let Some((_g, mut fx)) = setup() else { return };
    let script = fx.p("bin/denied-script");
    let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
    let by_loader = if loader.exists() {
        format!("{} {}", loader.display(), fx.p("bin/denied-true"))
    } else {
        "sh -c 'kill -9 $$'".to_owned()
    };
    let out = fx.as_agent(&format!(
        "sh {script}; echo a=$?; {by_loader}; echo b=$?; cat {script} >/dev/null; echo c=$?; \
         sh {fine}; echo d=$?",
        fine = fx.p("bin/fine-script")
    ));
    for k in ["a=137", "b=137", "c=0", "d=0", "FINE"] {
        assert!(out.contains(k), "{k}: {out:?}");
    }
    assert!(!out.contains("RAN"), "the denied script ran: {out:?}");
    let ev = fx.event("exec deny of the script", |e| {
        killed_deny(e, Action::Exec, &script)
    });
    assert_eq!(ev.rule, Some(1), "rule deny-tool decided");
    let out = release(gated(&format!("sh {script}")));
    assert!(out.contains("RAN"), "a non-agent could not run it: {out:?}");
}

/// Tables of one overlay for the test agent with `rules` (YAML flow mappings, one a line).
fn overlay_tables(rules: &[String]) -> KernelTables {
    let body: String = rules.iter().map(|r| format!("    - {r}\n")).collect();
    let yaml = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {{name: cache-test}}\nspec:\n  rules:\n{body}"
    );
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&yaml).expect("cache test policy"),
        }],
    };
    compile(&set, &Homes::default(), &Limits::default()).expect("compile")
}

/// A cached allow is not reused once a policy push denies the file, nor the deny once the
/// next push allows it again.
#[test]
fn cached_verdicts_follow_policy_pushes() {
    let Some((_g, mut fx)) = setup() else { return };
    let file = fx.p("work/plain.txt");
    std::fs::write(&file, "plain").expect("file");
    let read = format!("cat {file} >/dev/null; echo rc=$?; cat {file} >/dev/null; echo rc=$?");
    let deny_work = overlay_tables(&[format!(
        "{{name: deny-work, action: file_read, resource_pattern: \"{}/**\", verdict: deny}}",
        fx.p("work")
    )]);
    let allow = overlay_tables(&[format!(
        "{{name: other, action: file_read, resource_pattern: \"{}\", verdict: deny}}",
        fx.p("nothing-here")
    )]);
    // A reader with a second thread is decided at syscall entry too (and cached there).
    let threaded = |fx: &mut Fixture| {
        let child = gated_fd_helper(&format!("read {file}"), &fx.p("work"));
        fx.mark_agent(child.id());
        release_status(child)
    };
    assert!(fx.as_agent(&read).contains("rc=0\nrc=0"), "allowed first");
    assert!(
        threaded(&mut fx).0.contains("helper: plain"),
        "allowed first"
    );
    for (generation, t, rc) in [
        (20, &deny_work, 137),
        (21, &allow, 0),
        (22, &deny_work, 137),
    ] {
        fx.tp.load_tables(t, generation, false).expect("push");
        let out = fx.as_agent(&read);
        assert!(
            out.starts_with(&format!("rc={rc}")),
            "generation {generation}: {out:?}"
        );
        let (out, status) = threaded(&mut fx);
        use std::os::unix::process::ExitStatusExt;
        if rc == 137 {
            assert_eq!(status.signal(), Some(9), "generation {generation}: {out:?}");
        } else {
            assert!(
                out.contains("helper: plain"),
                "generation {generation}: {out:?}"
            );
        }
    }
    // The allows cached at syscall entry are not reused either: each deny kills at entry.
    for generation in [20, 22] {
        fx.event("deny at entry after the push", |e| {
            killed_deny(e, Action::FileRead, &file) && e.generation == generation && e.at_entry
        });
    }
}

/// An agent shell that opens the path named by each line it reads (`read < PATH`, in the
/// shell itself: one process) and prints `ok CONTENT`.
struct Reader {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Reader {
    fn start(fx: &mut Fixture) -> Self {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"while read -r p; do if read -r x < "$p"; then echo "ok $x"; else echo fail; fi; done"#)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the reader");
        fx.mark_agent(child.id());
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Reader { child, out }
    }

    /// The reader's answer for `path` (empty when it died).
    fn read(&mut self, path: &str) -> String {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{path}").expect("write a path");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).expect("read an answer");
        line.trim().to_owned()
    }

    fn killed(mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        drop(self.child.stdin.take());
        self.child.wait().expect("wait").signal() == Some(9)
    }
}

/// A repeated allow within its window is counted without a decision only while nothing it was
/// decided under changed: after a policy push, or a rename that moves the file under a denied
/// path (its dentry identity unchanged), the same process's next open is decided again.
#[test]
fn a_repeated_allow_is_decided_again_after_a_push_or_a_rename() {
    let Some((_g, mut fx)) = setup() else { return };
    std::fs::create_dir_all(fx.root.join("work/dir")).expect("dir");
    let file = fx.p("work/dir/f");
    std::fs::write(&file, "plain\n").expect("file");
    let deny_work = overlay_tables(&[format!(
        "{{name: deny-work, action: file_read, resource_pattern: \"{}/**\", verdict: deny}}",
        fx.p("work")
    )]);
    let mut reader = Reader::start(&mut fx);
    assert_eq!(reader.read(&file), "ok plain");
    assert_eq!(reader.read(&file), "ok plain", "the repeat");
    fx.tp.load_tables(&deny_work, 30, false).expect("push");
    assert_eq!(reader.read(&file), "", "read after the push");
    assert!(reader.killed(), "not killed after the push");
    fx.event("deny after the push", |e| {
        killed_deny(e, Action::FileRead, &file) && e.generation == 30
    });

    fx.tp
        .load_tables(&tables(&fx.root), 31, false)
        .expect("push the fixture's tables");
    let mut reader = Reader::start(&mut fx);
    assert_eq!(reader.read(&file), "ok plain");
    assert_eq!(reader.read(&file), "ok plain", "the repeat");
    std::fs::rename(fx.root.join("work/dir"), fx.root.join("home/.ssh/dir")).expect("rename");
    let moved = fx.p("home/.ssh/dir/f");
    assert_eq!(reader.read(&moved), "", "read after the rename");
    assert!(reader.killed(), "not killed after the rename");
    fx.event("deny under the new name", |e| {
        killed_deny(e, Action::FileRead, &moved)
    });
}

/// A file whose directory is renamed under a denied path is denied there, although its own
/// dentry (parent, name, inode) is unchanged since its allow was cached.
#[test]
fn a_cached_allow_is_not_reused_after_its_directory_moves_under_a_denied_path() {
    let Some((_g, mut fx)) = setup() else { return };
    std::fs::create_dir_all(fx.root.join("work/dir")).expect("dir");
    let before = fx.p("work/dir/f");
    std::fs::write(&before, SECRET).expect("file");
    let out = fx.as_agent(&format!("cat {before}; cat {before}; echo rc=$?"));
    assert!(out.contains("rc=0"), "allowed at first: {out:?}");
    // By this (ungoverned) test process: any process's rename makes cached decisions stale.
    std::fs::rename(fx.root.join("work/dir"), fx.root.join("home/.ssh/dir")).expect("rename");
    let after = fx.p("home/.ssh/dir/f");
    let out = fx.as_agent(&format!("cat {after}; echo rc=$?"));
    assert!(out.contains("rc=137") && !out.contains(SECRET), "{out:?}");
    fx.event("deny under the new name", |e| {
        killed_deny(e, Action::FileRead, &after)
    });
}

/// A hard link gives a denied file an allowed name: each name keeps the verdict of its own
/// path, whichever was decided (and cached) first.
#[test]
fn hard_links_keep_the_verdict_of_their_own_path() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let link = fx.p("work/hard");
    // Made by this ungoverned process (an agent's link of the secret is denied).
    std::fs::hard_link(&secret, &link).expect("hard link");
    for round in 0..2 {
        let out = fx.as_agent(&format!("cat {link}; echo rc=$?"));
        assert!(
            out.contains("rc=0") && out.contains(SECRET),
            "{round}: {out:?}"
        );
        let out = fx.as_agent(&format!("cat {secret}; echo rc=$?"));
        assert!(
            out.contains("rc=137") && !out.contains(SECRET),
            "{round}: {out:?}"
        );
    }
    let out = fx.as_agent(&format!("cat {secret}; cat {link}; echo rc=$?"));
    assert!(
        out.contains("rc=0") && out.contains(SECRET),
        "link after deny: {out:?}"
    );
}

/// The first event `sweep` reports that matches `pred`, once its window has ended (within 5 s).
fn swept_event(
    fx: &mut Fixture,
    sweep: &mut AllowSweep,
    pred: &impl Fn(&KernelEvent) -> bool,
) -> KernelEvent {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = boot_now_ns().expect("boot clock");
        let swept = sweep.sweep(&mut fx.tp, now).expect("sweep");
        if let Some(ev) = swept.into_iter().find(|e| pred(e)) {
            return ev;
        }
        assert!(std::time::Instant::now() < deadline, "no aggregated event");
        // Polling for the end of the window (a time contract, not a synchronisation).
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// An agent's repeated allow of one file is reported once per window, the repeats counted:
/// by the next event of the same (process, path, action) after the window, or by the sweep
/// when no such event comes.
#[test]
fn repeated_allows_are_counted_not_repeated() {
    let Some((_g, mut fx)) = setup() else { return };
    let file = fx.p("home/public.txt");
    let same = |e: &KernelEvent| e.action == Action::FileRead && e.path.as_deref() == Some(&file);
    // `read < FILE` opens it in the shell itself: one process, one key.
    let out = fx.as_agent(&format!(
        "for i in 1 2 3; do read x < {file}; done; sleep 1.2; read x < {file}; \
         i=0; while [ $i -lt 50 ]; do read x < {file}; i=$((i+1)); done; echo done"
    ));
    assert!(out.contains("done"), "{out:?}");
    let first = fx.event("the first window's event", same);
    assert_eq!(
        (first.count, first.window, first.verdict),
        (1, true, Verdict::Allow)
    );
    let second = fx.event("the second window's event", |e| {
        same(e) && e.tgid == first.tgid
    });
    assert_eq!(
        (second.count, second.window),
        (3, true),
        "1 + the 2 suppressed"
    );
    // The 50 repeats of the second window: no event of the kernel, one of the sweep.
    let mut sweep = AllowSweep::default();
    sweep.note(&second);
    let swept = swept_event(&mut fx, &mut sweep, &same);
    assert_eq!(
        (swept.count, swept.window, swept.tgid),
        (50, false, first.tgid)
    );
    assert_eq!(sweep.lost, 0);
    let now = boot_now_ns().expect("boot clock");
    assert!(
        sweep.sweep(&mut fx.tp, now).expect("sweep").is_empty(),
        "swept twice"
    );
}

/// An agent's repeated connects to one destination are reported once per window like its
/// opens: the first as the window's event, the rest counted and reported by the sweep; another
/// destination has its own window.
#[test]
fn repeated_connect_allows_are_counted_not_repeated() {
    let Some((_g, mut fx)) = setup() else { return };
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let (pa, pb) = (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    );
    let to = |port: u16| {
        move |e: &KernelEvent| {
            e.action == Action::NetConnect && e.dest == Some(([127, 0, 0, 1], port).into())
        }
    };
    // bash's /dev/tcp connects from the shell itself: one process, one key per destination.
    let child = gated_in(
        "/bin/bash",
        &format!(
            "for i in $(seq 20); do exec 3<>/dev/tcp/127.0.0.1/{pa} || exit 1; exec 3>&-; \
             done; exec 3<>/dev/tcp/127.0.0.1/{pb}; echo done"
        ),
    );
    fx.mark_agent(child.id());
    let out = release(child);
    assert!(out.contains("done"), "{out:?}");
    let first = fx.event("the window's event", to(pa));
    assert_eq!(
        (first.count, first.window, first.verdict),
        (1, true, Verdict::Allow)
    );
    let other = fx.event("the other destination's event", to(pb));
    assert_eq!((other.count, other.window), (1, true));
    let mut sweep = AllowSweep::default();
    sweep.note(&first);
    let swept = swept_event(&mut fx, &mut sweep, &to(pa));
    assert_eq!((swept.count, swept.window), (19, false), "{swept:?}");
    assert_eq!(sweep.lost, 0);
}

/// The environment variable that turns the `fd_helper` test into a helper (its command).
const FD_HELPER_ENV: &str = "TYR_FD_HELPER";

/// Not a test: run by the tests below in a child (the test binary re-executes itself with
/// `FD_HELPER_ENV` set) with a second thread alive: `read PATH` reads PATH; `getfd PID FD`
/// copies fd FD of process PID with `pidfd_getfd` and reads the copy; `read32 PATH` (in a
/// single-threaded child) and `create32 PATH` open PATH with a 32-bit syscall (`int $0x80`),
/// for reading and for writing with `O_CREAT`. Prints `helper: ` and what it read, or
/// `helper-error: ` and why.
#[test]
fn fd_helper() {
    let Ok(cmd) = std::env::var(FD_HELPER_ENV) else {
        return;
    };
    let words: Vec<&str> = cmd.split(' ').collect();
    let _parked = std::thread::spawn(std::thread::park);
    let read = match words.as_slice() {
        ["read", path] => std::fs::read_to_string(path),
        #[cfg(target_arch = "x86_64")]
        ["read32", path] => in_child(|| open32(path, libc::O_RDONLY).and_then(read_fd)),
        #[cfg(target_arch = "x86_64")]
        ["create32", path] => open32(path, libc::O_WRONLY | libc::O_CREAT).map(|_| String::new()),
        ["seize", pid] => seize(pid.parse().expect("pid")),
        ["seize-child"] => seize_child(),
        ["vmread", pid] => vm_read(pid.parse().expect("pid"), 0x1000),
        ["vmread-self"] => vm_read(std::process::id() as i32, SECRET.as_ptr() as usize),
        ["clonefiles", path] => clonefiles_read(path),
        ["getfd", pid, fd] => getfd_read(pid.parse().expect("pid"), fd.parse().expect("fd")),
        _ => panic!("bad helper command {cmd:?}"),
    };
    match read {
        Ok(content) => println!("helper: {content}"),
        Err(e) => println!("helper-error: {e}"),
    }
}

/// Starts a process sharing this one's file table (`clone(CLONE_FILES)`, not a thread), then
/// reads `path`; the sharer waits for stdin to close.
fn clonefiles_read(path: &str) -> std::io::Result<String> {
    // SAFETY: a raw clone without a new stack or CLONE_VM behaves as fork (a copy of this
    // process); the child only blocks in read(2), then exits.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_FILES | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        let mut byte = 0u8;
        unsafe {
            libc::read(0, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    std::fs::read_to_string(path)
}

/// Copies fd `fd` of process `pid` into this process and reads it.
fn getfd_read(pid: i32, fd: i32) -> std::io::Result<String> {
    // SAFETY: raw syscalls with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    read_fd(copy as i32)
}

/// Runs `read` in a forked child, a process of one thread, which prints the result; returns
/// how the child ended.
#[cfg(target_arch = "x86_64")]
fn in_child(read: impl FnOnce() -> std::io::Result<String>) -> std::io::Result<String> {
    use std::io::Write;
    // SAFETY: the child only runs `read` (no locks held by the parked thread) and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        match read() {
            Ok(content) => println!("helper: {content}"),
            Err(e) => println!("helper-error: {e}"),
        }
        let _ = std::io::stdout().flush();
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(std::io::Error::last_os_error());
    }
    Ok(match libc::WIFSIGNALED(status) {
        true => format!("child killed by signal {}", libc::WTERMSIG(status)),
        false => "child exited".into(),
    })
}

/// `ptrace(PTRACE_SEIZE, pid)`; the tracee is released when this process exits.
fn seize(pid: i32) -> std::io::Result<String> {
    // SAFETY: PTRACE_SEIZE takes integer arguments and changes nothing in this process.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    match r {
        0 => Ok("seized".into()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Forks a child (same identity) that waits, seizes it, then kills it.
fn seize_child() -> std::io::Result<String> {
    // SAFETY: the child only pauses until it is killed.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        loop {
            // SAFETY: pause(2) waits for the kill.
            unsafe { libc::pause() };
        }
    }
    let out = seize(child);
    // SAFETY: ends and reaps the child forked above.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    out
}

/// Reads 8 bytes at `addr` of process `pid` with `process_vm_readv`.
fn vm_read(pid: i32, addr: usize) -> std::io::Result<String> {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec points at `buf`; the remote one is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!("read {n} bytes: {}", String::from_utf8_lossy(&buf)))
}

/// Reads all of `fd` (which it closes).
fn read_fd(fd: i32) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    // SAFETY: the caller hands over an open fd it owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut content = String::new();
    file.read_to_string(&mut content)?;
    Ok(content)
}

/// `open(path, flags, 0600)` through the ia32 syscall table (`int $0x80`, call 5), which
/// any x86_64 process may use; the path is copied below 4 GiB, where 32-bit pointers reach.
#[cfg(target_arch = "x86_64")]
fn open32(path: &str, flags: i32) -> std::io::Result<i32> {
    const IA32_OPEN: i64 = 5;
    assert!(path.len() < 4096, "path too long");
    // SAFETY: a fresh private page (never freed: the helper exits soon) holds the string.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the page is 4096 writable bytes; the copy and its NUL fit.
    unsafe {
        std::ptr::copy_nonoverlapping(path.as_ptr(), page.cast::<u8>(), path.len());
        *page.cast::<u8>().add(path.len()) = 0;
    }
    let ret: i64;
    // SAFETY: the ia32 open reads the string and returns an fd or -errno; rbx (reserved by
    // LLVM) is swapped in and out around the call; r8-r11 are not preserved by int $0x80.
    unsafe {
        std::arch::asm!(
            "xchg rbx, {path}",
            "int 0x80",
            "xchg rbx, {path}",
            path = inout(reg) page as u64 => _,
            inlateout("rax") IA32_OPEN => ret,
            in("rcx") flags as u64,
            in("rdx") 0o600u64,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    if ret < 0 {
        return Err(std::io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as i32)
}

/// `sh -c "read _; exec THIS-TEST-BINARY fd_helper"` running `command` in `dir`: gated like
/// the other kernel tests, so the shell can be marked as an agent first.
fn gated_fd_helper(command: &str, dir: &str) -> Child {
    let me = std::env::current_exe().expect("test binary");
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "read _; exec {} --exact fd_helper --nocapture --test-threads=1",
            me.display()
        ))
        .current_dir(dir)
        .env(FD_HELPER_ENV, command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the fd helper")
}

/// A governed read open of a denied file, by a process with a second thread, is decided at
/// syscall entry too, on the path string (here relative to the cwd): the kill is sent before
/// the open returns an fd the other thread could use, and the exit decision of the same open
/// is not reported again. A single-threaded process with its own file table cannot use the
/// fd before the exit decision's kill lands: its open is left to that decision alone.
#[test]
fn a_threaded_read_of_a_denied_file_is_killed_at_entry() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let public = fx.p("home/public.txt");
    let child = gated_fd_helper("read .ssh/id_rsa", &fx.p("home"));
    fx.mark_agent(child.id());
    let (out, status) = release_status(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed: {out:?}");
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("deny of the secret", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert!(ev.at_entry, "decided at exit only: {ev:?}");
    assert_eq!((ev.rule, ev.fail_closed), (Some(0), false), "{ev:?}");
    // The single-threaded cat: killed by the exit decision; the next cat runs after it is
    // gone, and nothing reported the helper's open twice.
    let out = fx.as_agent(&format!(
        "cd {}; cat .ssh/id_rsa; echo rc=$?; cat {public}",
        fx.p("home")
    ));
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    assert!(out.contains("rc=137") && out.contains("public"), "{out:?}");
    let again = std::cell::Cell::new(0);
    let by_cat = fx.event("deny of the secret by cat", |e| {
        let deny = killed_deny(e, Action::FileRead, &secret);
        again.set(again.get() + usize::from(deny && e.comm != "cat"));
        deny && e.comm == "cat"
    });
    assert!(
        !by_cat.at_entry,
        "a single-threaded open was decided at entry: {by_cat:?}"
    );
    fx.event("allow of the public file", |e| {
        e.verdict == Verdict::Allow && e.path.as_deref() == Some(public.as_str())
    });
    assert_eq!(
        again.get(),
        0,
        "the helper's exit decision was reported too"
    );
}

/// A 32-bit syscall (`int $0x80`, open through the ia32 table) is decided like a native one:
/// the per-call `syscalls/` tracepoints never fire for those, so before the raw syscall
/// hooks a governed process read any file this way. A read open is decided at exit on the
/// file, an `O_CREAT` open at entry on the path string; an ungoverned process is untouched.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_open_of_a_denied_file_is_decided() {
    use std::os::unix::process::ExitStatusExt;
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let home = fx.p("home");
    let out = release(gated_fd_helper(&format!("read32 {secret}"), &home));
    if out.contains("helper-error: ") && out.contains("os error 38") {
        tyr_testkit::skip("this kernel has no ia32 syscalls (IA32_EMULATION off)");
        return;
    }
    assert!(
        out.contains(&format!("helper: {SECRET}")),
        "the 32-bit open did not work for a non-agent: {out:?}"
    );
    let child = gated_fd_helper(&format!("read32 {secret}"), &home);
    fx.mark_agent(child.id());
    let out = release(child);
    assert!(
        out.contains("helper: child killed by signal 9"),
        "not killed: {out:?}"
    );
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("deny of the 32-bit read", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert!(
        !ev.at_entry,
        "a single-threaded read was decided at entry: {ev:?}"
    );
    let created = fx.p("locked/new_file");
    let child = gated_fd_helper(&format!("create32 {created}"), &home);
    fx.mark_agent(child.id());
    let (out, status) = release_status(child);
    assert_eq!(status.signal(), Some(9), "not killed: {out:?}");
    let ev = fx.event("deny of the 32-bit create", |e| {
        killed_deny(e, Action::FileWrite, &created)
    });
    assert!(
        ev.at_entry,
        "an O_CREAT open was not decided at entry: {ev:?}"
    );
    if fx.tp.refuses_at_entry() {
        assert!(
            !std::path::Path::new(&created).exists(),
            "the file was created"
        );
    }
}

/// A governed process may not attach to (`ptrace`), read the memory of (`process_vm_readv`,
/// `/proc/PID/mem`) or read the environment of (`/proc/PID/environ`) a process without its
/// identity, which it could make do anything (read `~/.ssh` for it) or whose secrets it
/// would read: killed before the call acts (or before it uses the fd), the target untouched,
/// a deny reported with the target's pid. Its own child (same identity), memory and
/// environment stay open to it; ungoverned processes are not restricted.
#[test]
fn a_governed_process_may_not_ptrace_or_read_another_identity() {
    use std::os::unix::process::ExitStatusExt;
    use tyrd::kernel::events::Operation;
    let Some((_g, mut fx)) = setup() else { return };
    let home = fx.p("home");
    let mut sleeper = Reaped(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep"),
    );
    let target = sleeper.0.id();
    let out = release(gated_fd_helper(&format!("seize {target}"), &home));
    assert!(
        out.contains("helper: seized"),
        "an ungoverned attach failed: {out:?}"
    );
    for (command, op) in [
        (format!("seize {target}"), Operation::Ptrace),
        (format!("vmread {target}"), Operation::ProcessVmRead),
        (format!("read /proc/{target}/environ"), Operation::ProcFile),
        (
            format!("read /proc/{target}/task/{target}/mem"),
            Operation::ProcFile,
        ),
    ] {
        let child = gated_fd_helper(&command, &home);
        fx.mark_agent(child.id());
        let (out, status) = release_status(child);
        assert_eq!(status.signal(), Some(9), "{command}: not killed: {out:?}");
        let ev = fx.event(&command, |e| e.operation == Some(op) && e.target == target);
        assert_eq!(
            (ev.verdict, ev.enforced, ev.agent_type_id),
            (Verdict::Deny, Enforced::Killed, fx.agent_id),
            "{ev:?}"
        );
        let status = std::fs::read_to_string(format!("/proc/{target}/status")).expect("status");
        assert!(
            status.lines().any(|l| l == "TracerPid:\t0"),
            "the target is traced: {status}"
        );
    }
    assert!(
        sleeper.0.try_wait().expect("wait").is_none(),
        "the target died"
    );
    for command in ["seize-child", "vmread-self", "read /proc/self/environ"] {
        let child = gated_fd_helper(command, &home);
        fx.mark_agent(child.id());
        let (out, status) = release_status(child);
        assert!(status.success(), "{command}: {status:?} {out:?}");
        assert!(
            out.contains("helper: seized")
                || out.contains("helper: read 8 bytes")
                || out.contains(&format!("{FD_HELPER_ENV}=")),
            "{command}: {out:?}"
        );
    }
}

/// A child killed and reaped when dropped (a failing test leaves none behind).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A governed process whose file table another process shares (`clone(CLONE_FILES)`) is
/// refused at entry, not only killed: the sharer would outlive the kill with the fd. Where
/// BPF may write user memory the open fails; here that write is refused and counted.
#[test]
fn a_denied_open_in_a_shared_file_table_is_refused_at_entry() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let before = fx.tp.counters().expect("counters").uwrite_failed;
    let child = gated_fd_helper(&format!("clonefiles {secret}"), &fx.p("home"));
    fx.mark_agent(child.id());
    let (out, status) = release_status(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed: {out:?}");
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("deny of the secret", |e| {
        killed_deny(e, Action::FileRead, &secret) && e.at_entry
    });
    assert_eq!(ev.rule, Some(0), "{ev:?}");
    let after = fx.tp.counters().expect("counters").uwrite_failed;
    if fx.tp.refuses_at_entry() {
        assert_eq!(after, before, "the string was emptied");
    } else {
        assert!(
            after > before,
            "the string was not to be emptied: {before} -> {after}"
        );
    }
}

/// `pidfd_getfd` copies an fd another process opened: a governed caller's copy of a file it
/// may not read is decided as its own open (killed), while an ungoverned caller gets it.
#[test]
fn a_governed_copy_of_a_denied_fd_is_killed() {
    let Some((_g, mut fx)) = setup() else { return };
    let secret = fx.p("home/.ssh/id_rsa");
    let mut holder = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec 3<{secret}; echo ready; read _"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().expect("stdout")),
        &mut ready,
    )
    .expect("holder ready");
    assert_eq!(ready.trim(), "ready");
    let command = format!("getfd {} 3", holder.id());
    let home = fx.p("home");
    let out = release(gated_fd_helper(&command, &home));
    assert!(
        out.contains(&format!("helper: {SECRET}")),
        "pidfd_getfd did not work for a non-agent: {out:?}"
    );
    let child = gated_fd_helper(&command, &home);
    fx.mark_agent(child.id());
    let (out, status) = release_status(child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "not killed: {out:?}");
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("deny of the copied fd", |e| {
        killed_deny(e, Action::FileRead, &secret)
    });
    assert_eq!(
        (ev.agent_type_id, ev.rule),
        (fx.agent_id, Some(0)),
        "{ev:?}"
    );
    holder
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"done\n")
        .expect("release the holder");
    holder.wait().expect("holder");
}
