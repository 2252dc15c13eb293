//! The `lsm` tier (SPEC §8) in the Debian 6.1 guest kernel, whose BPF LSM is active (this
//! host refuses LSM programs).
//!
//! The host test boots the guest once through tests/vm/run.sh with this very test binary and
//! `--ignored`: the `guest_*` tests (ignored on the host) then run inside it as root and must
//! all pass. Without root, QEMU or the Debian archive the host test prints `skipping:` (and
//! fails under CI). In the guest a missing precondition fails: nothing is skipped there.

mod common;
mod uring;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use tyr_policy::compile::{KernelTables, Limits, compile};
use tyr_policy::glob::Homes;
use tyr_policy::model::{Action, EffectiveSet, Overlay, Verdict};
use tyrd::event::Enforced;
use tyrd::kernel::events::{EventReader, KernelEvent, Operation};
use tyrd::kernel::lsm::LSM_PROGRAMS;
use tyrd::kernel::maps::TyrProc;
use tyrd::kernel::probe::{Tier, probe};
use tyrd::kernel::{Enforcement, Tracepoints};

const AGENT: &str = "test-agent";
const SECRET: &str = "TOP-SECRET-KEY";
/// The exit status fetch-kernel.sh/run.sh use for "the Debian archive cannot be reached".
const UNREACHABLE: i32 = 75;
/// Every guest test: the host asserts each passed.
const GUEST_TESTS: [&str; 10] = [
    "guest_bpf_lsm_is_active_and_the_probe_reports_lsm",
    "guest_agent_open_of_a_protected_file_gets_eperm_and_the_agent_survives",
    "guest_exec_of_a_denied_binary_gets_eperm",
    "guest_connect_to_a_denied_destination_gets_eperm",
    "guest_links_and_renames_of_protected_files_get_eperm",
    "guest_a_denied_truncation_gets_eperm_and_the_file_is_intact",
    "guest_io_uring_is_refused_to_agents_under_the_lsm_tier",
    "guest_a_script_run_by_a_governed_interpreter_gets_eperm",
    "guest_the_tracepoint_tier_makes_denied_syscalls_fail_at_entry",
    "guest_cached_verdicts_follow_renames_links_and_pushes",
];

fn in_guest() -> bool {
    std::env::var("TYR_VM_GUEST").is_ok_and(|v| v == "1")
}

fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vm")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The guest kernel, or why the guest cannot run here.
fn guest_kernel() -> Result<PathBuf, String> {
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return Err("not root (BPF and the kernel cache need it)".into());
    }
    for tool in ["qemu-system-x86_64", "busybox"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} not found (Debian packages qemu-system-x86 busybox-static)"
            ));
        }
    }
    let out = Command::new(vm_dir().join("fetch-kernel.sh"))
        .output()
        .map_err(|e| format!("cannot run fetch-kernel.sh: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
        Some(UNREACHABLE) => Err("the Debian archive is unreachable".into()),
        _ => panic!("fetch-kernel.sh failed: {}", text(&out)),
    }
}

#[test]
fn the_lsm_tier_enforces_in_the_guest() {
    if in_guest() {
        return;
    }
    let kernel = match guest_kernel() {
        Ok(kernel) => kernel,
        Err(reason) => return tyr_testkit::skip(&reason),
    };
    let me = std::env::current_exe().expect("test binary");
    let start = Instant::now();
    let out = Command::new(vm_dir().join("run.sh"))
        .arg(&me)
        .args(["--", "--ignored", "--test-threads=1", "guest_"])
        .env("TYR_VM_KERNEL", &kernel)
        .output()
        .expect("run tests/vm/run.sh");
    let console = text(&out);
    eprintln!("{console}boot + guest tests took {:?}", start.elapsed());
    assert_eq!(
        out.status.code(),
        Some(0),
        "the guest run failed:\n{console}"
    );
    for name in GUEST_TESTS {
        let line = format!("test {name} ... ok");
        assert!(
            console.lines().any(|l| l.trim_end() == line),
            "no `{line}` in:\n{console}"
        );
    }
    assert!(!console.contains("skipping:"), "{console}");
}

/// On a kernel that refuses LSM programs (this host) the daemon runs the tracepoint tier and
/// says why; where the probe says `lsm`, the LSM tier loads.
#[test]
fn the_tier_falls_back_to_tracepoint_with_the_reason() {
    if in_guest() {
        return;
    }
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        return tyr_testkit::skip("not root");
    }
    let report = probe();
    if report.tier == Tier::Observe {
        return tyr_testkit::skip(&format!("no tracepoint tier: {:?}", report.reasons));
    }
    let pins = PathBuf::from(format!("/sys/fs/bpf/tyr-lsm-host-{}", std::process::id()));
    let loaded = Enforcement::load_pinned(&pins);
    let links: Vec<_> = std::fs::read_dir(pins.join("links"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    std::fs::remove_dir_all(&pins).expect("remove the pins (detach)");
    let (enforcement, reason) = loaded.expect("tiers load");
    assert_eq!(enforcement.tier(), report.tier, "{reason:?}");
    let lsm_links = links
        .iter()
        .filter(|n| n.to_string_lossy().starts_with("tyr_lsm_"))
        .count();
    if report.tier == Tier::Tracepoint {
        let reason = reason.expect("a fallback reason");
        assert!(reason.contains("LSM"), "{reason}");
        if report.bpf_lsm_active == Some(true) {
            assert!(reason.contains("Operation not permitted"), "{reason}");
        }
        assert_eq!(lsm_links, 0, "LSM attachments left pinned: {links:?}");
    } else {
        assert_eq!(reason, None);
        assert_eq!(lsm_links, LSM_PROGRAMS.len(), "{links:?}");
    }
}

/// The guest tests run only in the guest (a host run with `--ignored` skips them).
fn guest_only() -> bool {
    if in_guest() {
        return true;
    }
    tyr_testkit::skip("guest-only test (run by the_lsm_tier_enforces_in_the_guest)");
    false
}

struct Fixture {
    root: PathBuf,
    pins: PathBuf,
    agent_id: u8,
    rt: tokio::runtime::Runtime,
    events: EventReader,
    enforcement: Enforcement,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // The attachments are pinned: removing the pins detaches them.
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn policy(root: &Path, port: u16) -> String {
    let r = root.display();
    format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: lsm-overlay}}
spec:
  rules:
    - {{name: deny-ssh, action: file_read, resource_pattern: \"{r}/home/.ssh/**\", verdict: deny}}
    - {{name: deny-tool, action: exec, resource_pattern: \"{r}/bin/denied-*\", verdict: deny}}
    - {{name: no-local-port, action: net_connect, cidrs: [127.0.0.0/8], ports: [{port}], verdict: deny}}
    - {{name: deny-locked, action: file_write, resource_pattern: \"{r}/locked/**\", verdict: deny}}
"
    )
}

fn tables(root: &Path, port: u16) -> KernelTables {
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&policy(root, port)).expect("test policy parses"),
        }],
    };
    compile(&set, &Homes::default(), &Limits::default()).expect("test policy compiles")
}

impl Fixture {
    /// Loads the tiers (which must be `lsm`) with the test policy; `port` is denied.
    fn new(port: u16) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        for sub in ["home/.ssh", "bin", "locked", "work"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        std::fs::write(root.join("home/.ssh/id_rsa"), SECRET).expect("secret");
        std::fs::write(root.join("locked/keep.txt"), "KEEP").expect("locked");
        std::fs::write(root.join("bin/denied-script"), "echo RAN\n").expect("script");
        let me = std::env::current_exe().expect("test binary");
        std::fs::copy(&me, root.join("bin/denied-tool")).expect("copy a binary");
        let pins = PathBuf::from(format!("/sys/fs/bpf/tyr-lsm-test-{}", std::process::id()));
        let (mut enforcement, reason) = Enforcement::load_pinned(&pins).expect("tiers load");
        assert_eq!(enforcement.tier(), Tier::Lsm, "fell back: {reason:?}");
        let t = tables(&root, port);
        let agent_id = t
            .agent_types
            .iter()
            .position(|n| n == AGENT)
            .expect("agent type") as u8
            + 1;
        enforcement
            .tracepoints()
            .load_tables(&t, 1, false)
            .expect("tables load");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let events = rt
            .block_on(async { enforcement.tracepoints().events() })
            .expect("ring buffer");
        Fixture {
            root,
            pins,
            agent_id,
            rt,
            events,
            enforcement,
            _dir: dir,
        }
    }

    fn p(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn tp(&mut self) -> &mut Tracepoints {
        self.enforcement.tracepoints()
    }

    fn mark_agent(&mut self, pid: u32) {
        let proc = TyrProc {
            agent_type_id: self.agent_id,
            discovered_id: 77,
            ..TyrProc::default()
        };
        self.tp().set_process(pid, proc).expect("seed process");
    }

    /// Runs `script` in a shell, marked as the test agent when `agent`; returns stdout.
    fn shell(&mut self, agent: bool, script: &str) -> String {
        let mut child = gated(script);
        if agent {
            self.mark_agent(child.id());
        }
        release(&mut child)
    }

    /// The first event matching `pred` within 5 s.
    fn event(&mut self, what: &str, pred: impl Fn(&KernelEvent) -> bool) -> KernelEvent {
        common::first_event(&self.rt, &mut self.events, what, pred)
    }
}

/// `sh -c "read _; SCRIPT"`: the script runs once a line is written to its stdin, so the
/// shell can be marked as an agent before it does anything.
fn gated(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read _; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

/// Releases the gate and returns stdout.
fn release(child: &mut Child) -> String {
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).expect("stdout");
    }
    child.wait().expect("wait");
    out
}

fn blocked(ev: &KernelEvent, action: Action) -> bool {
    ev.action == action && ev.verdict == Verdict::Deny && ev.enforced == Enforced::Blocked
}

#[test]
#[ignore = "guest only"]
fn guest_bpf_lsm_is_active_and_the_probe_reports_lsm() {
    if !guest_only() {
        return;
    }
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").expect("LSM list");
    assert!(lsm.trim().split(',').any(|m| m == "bpf"), "{lsm}");
    let report = probe();
    // Verified instruction counts per hook (shown with --nocapture).
    eprintln!("{}", report.human());
    assert_eq!(report.tier, Tier::Lsm, "{}", report.human());
    assert!(report.reasons.is_empty(), "{}", report.human());
    for (_, hook) in LSM_PROGRAMS {
        let hook = format!("lsm/{hook}");
        let h = report.hooks.iter().find(|h| h.hook == hook);
        eprintln!(
            "{hook}: {:?} verified instructions",
            h.and_then(|h| h.verified_instructions)
        );
        assert!(h.is_some_and(|h| h.loaded), "{hook}: {}", report.human());
    }
}

#[test]
#[ignore = "guest only"]
fn guest_agent_open_of_a_protected_file_gets_eperm_and_the_agent_survives() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let secret = fx.p("home/.ssh/id_rsa");
    // The agent shell opens the file itself (a redirection), then a child `cat` does.
    let script = format!("read x < {secret}; echo a=$? x=$x; cat {secret}; echo b=$?; echo alive");
    let out = fx.shell(true, &script);
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    assert!(
        out.contains("a=1") && out.contains("b=1") && out.contains("alive"),
        "{out:?}"
    );
    let ev = fx.event("blocked open of the secret", |e| {
        blocked(e, Action::FileRead) && e.path.as_deref() == Some(secret.as_str())
    });
    assert_eq!(ev.agent_type_id, fx.agent_id);
    assert_eq!(ev.discovered_id, 77);
    assert_eq!(ev.rule, Some(0), "rule deny-ssh decided");
    let out = fx.shell(false, &format!("cat {secret}; echo rc=$?"));
    assert!(out.contains(SECRET) && out.contains("rc=0"), "{out:?}");
}

#[test]
#[ignore = "guest only"]
fn guest_exec_of_a_denied_binary_gets_eperm() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let denied = fx.p("bin/denied-tool");
    let out = fx.shell(
        true,
        &format!("{denied} --list; echo a=$?; /bin/true; echo b=$?; echo alive"),
    );
    assert!(
        out.contains("a=126") && out.contains("b=0") && out.contains("alive"),
        "{out:?}"
    );
    let ev = fx.event("blocked exec", |e| {
        blocked(e, Action::Exec) && e.path.as_deref() == Some(denied.as_str())
    });
    assert_eq!(ev.rule, Some(1), "rule deny-tool decided");
    let out = fx.shell(false, &format!("{denied} --list >/dev/null; echo rc=$?"));
    assert!(out.contains("rc=0"), "a non-agent exec failed: {out:?}");
}

#[test]
#[ignore = "guest only"]
fn guest_connect_to_a_denied_destination_gets_eperm() {
    if !guest_only() {
        return;
    }
    let denied = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let open = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let dp = denied.local_addr().expect("addr").port();
    let op = open.local_addr().expect("addr").port();
    let mut fx = Fixture::new(dp);
    // Detach the tracepoint tier's cgroup connect hooks (their links are pinned), which would
    // return EPERM too: only lsm/socket_connect is left to block.
    for link in ["tyr_connect4", "tyr_connect6"] {
        std::fs::remove_file(fx.pins.join("links").join(link)).expect("unpin a cgroup hook");
    }
    // This test process is the agent for the connects.
    let me = std::process::id();
    fx.mark_agent(me);
    let refused = std::net::TcpStream::connect(("127.0.0.1", dp));
    let allowed = std::net::TcpStream::connect(("127.0.0.1", op));
    let short_v6 = connect_v6_without_scope_id(dp);
    fx.tp().remove_process(me).expect("forget identity");
    assert_eq!(short_v6, Some(1), "a 24-byte sockaddr_in6 went through");
    let err = refused.expect_err("the denied connect went through");
    assert_eq!(err.raw_os_error(), Some(1), "not EPERM: {err}");
    allowed.expect("the connect to an allowed port failed");
    let ev = fx.event("blocked connect", |e| blocked(e, Action::NetConnect));
    assert_eq!(ev.dest, Some(([127, 0, 0, 1], dp).into()));
    assert_eq!(ev.rule, Some(2), "rule no-local-port decided");
    std::net::TcpStream::connect(("127.0.0.1", dp)).expect("a non-agent connect failed");
}

/// Hard links and renames (`lsm/path_link`, `lsm/path_rename`): a protected source keeps its
/// only name, nothing moves into a write-protected place, and the agent survives.
#[test]
#[ignore = "guest only"]
fn guest_links_and_renames_of_protected_files_get_eperm() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let secret = fx.p("home/.ssh/id_rsa");
    let script = format!(
        "ln {secret} {w}/copy; echo a=$?; mv {secret} {w}/moved; echo b=$?; \
         echo x > {w}/x; mv {w}/x {l}/x; echo c=$?; mv {w}/x {w}/y; echo d=$?; echo alive",
        w = fx.p("work"),
        l = fx.p("locked"),
    );
    let out = fx.shell(true, &script);
    for k in ["a=1", "b=1", "c=1", "d=0", "alive"] {
        assert!(out.contains(k), "{k}: {out:?}");
    }
    assert!(!fx.root.join("work/copy").exists(), "the link was made");
    assert!(!fx.root.join("work/moved").exists(), "the secret moved");
    assert!(!fx.root.join("locked/x").exists(), "moved into locked/");
    assert_eq!(std::fs::read_to_string(&secret).expect("secret"), SECRET);
    let link = fx.event("blocked link", |e| e.operation == Some(Operation::Link));
    assert!(blocked(&link, Action::FileRead), "{link:?}");
    assert_eq!(link.path.as_deref(), Some(secret.as_str()));
    let into = fx.event("blocked rename into locked/", |e| {
        e.operation == Some(Operation::RenameTarget)
    });
    assert!(blocked(&into, Action::FileWrite), "{into:?}");
    assert_eq!(into.path, Some(fx.p("locked/x")));
}

/// An `O_TRUNC` open of a write-denied file fails in `file_open`, before the truncation.
#[test]
#[ignore = "guest only"]
fn guest_a_denied_truncation_gets_eperm_and_the_file_is_intact() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let keep = fx.p("locked/keep.txt");
    // `echo` (a regular builtin): a failed redirection does not end the shell.
    let out = fx.shell(true, &format!("echo x > {keep}; echo a=$?; echo alive"));
    assert!(out.contains("a=1") && out.contains("alive"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&keep).expect("locked file"), "KEEP");
    let ev = fx.event("blocked truncation", |e| {
        blocked(e, Action::FileWrite) && e.path.as_deref() == Some(keep.as_str())
    });
    assert_eq!(ev.rule, Some(3), "rule deny-locked decided");
}

/// Not a test: the io_uring client run by the io_uring test (see `uring`).
#[test]
fn io_uring_helper() {
    uring::helper();
}

/// No LSM hook stops io_uring opens in 6.1 (there is none for `io_uring_setup`): the
/// tracepoint programs, attached under the LSM tier too, kill a governed process at setup.
#[test]
#[ignore = "guest only"]
fn guest_io_uring_is_refused_to_agents_under_the_lsm_tier() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let secret = fx.p("home/.ssh/id_rsa");
    let mut free = uring::gated_helper(&secret).spawn().expect("helper");
    let out = release(&mut free);
    assert!(out.contains(&format!("uring: {SECRET}")), "{out:?}");
    let mut child = uring::gated_helper(&secret).spawn().expect("helper");
    fx.mark_agent(child.id());
    let out = release(&mut child);
    assert!(!out.contains(SECRET), "the secret leaked: {out:?}");
    let ev = fx.event("io_uring kill", |e| e.operation == Some(Operation::IoUring));
    assert_eq!((ev.verdict, ev.enforced), (Verdict::Deny, Enforced::Killed));
}

/// `sh script`: the governed interpreter's open of an exec-denied script is refused.
#[test]
#[ignore = "guest only"]
fn guest_a_script_run_by_a_governed_interpreter_gets_eperm() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    let script = fx.p("bin/denied-script");
    let out = fx.shell(true, &format!("sh {script}; echo a=$?; echo alive"));
    assert!(!out.contains("RAN") && out.contains("alive"), "{out:?}");
    assert!(!out.contains("a=0"), "{out:?}");
    let ev = fx.event("blocked script", |e| {
        blocked(e, Action::Exec) && e.path.as_deref() == Some(script.as_str())
    });
    assert_eq!(ev.rule, Some(1), "rule deny-tool decided");
    assert!(fx.shell(false, &format!("sh {script}")).contains("RAN"));
}

/// The tracepoint tier alone on a kernel without lockdown: a truncation, link or rename
/// denied at syscall entry never happens (the path string is emptied, then the caller is
/// killed).
#[test]
#[ignore = "guest only"]
fn guest_the_tracepoint_tier_makes_denied_syscalls_fail_at_entry() {
    if !guest_only() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().canonicalize().expect("canonical");
    for sub in ["home/.ssh", "locked", "work"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    let secret = root.join("home/.ssh/id_rsa");
    std::fs::write(&secret, SECRET).expect("secret");
    let keep = root.join("locked/keep.txt");
    std::fs::write(&keep, "KEEP").expect("locked");
    let mut tp = Tracepoints::load().expect("tracepoint tier");
    assert!(tp.refuses_at_entry(), "lockdown in the guest?");
    let t = tables(&root, 1);
    let agent_id = t
        .agent_types
        .iter()
        .position(|n| n == AGENT)
        .expect("agent") as u8
        + 1;
    tp.load_tables(&t, 1, false).expect("tables");
    let script = format!(
        "sh -c ': > {keep}'; echo a=$?; ln {s} {w}/copy; echo b=$?; mv {s} {w}/moved; echo c=$?",
        keep = keep.display(),
        s = secret.display(),
        w = root.join("work").display(),
    );
    let mut child = gated(&script);
    let proc = TyrProc {
        agent_type_id: agent_id,
        ..TyrProc::default()
    };
    tp.set_process(child.id(), proc).expect("seed");
    let out = release(&mut child);
    for k in ["a=137", "b=137", "c=137"] {
        assert!(out.contains(k), "{k}: {out:?}");
    }
    assert_eq!(std::fs::read_to_string(&keep).expect("locked"), "KEEP");
    assert_eq!(std::fs::read_to_string(&secret).expect("secret"), SECRET);
    assert!(!root.join("work/copy").exists() && !root.join("work/moved").exists());
    assert_eq!(tp.counters().expect("counters").uwrite_failed, 0);
}

/// Connects an IPv6 socket to `::ffff:127.0.0.1:port` with a 24-byte `sockaddr_in6` (no scope
/// id, which the kernel accepts); the errno of a failure, `None` on success.
fn connect_v6_without_scope_id(port: u16) -> Option<i32> {
    unsafe extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn connect(fd: i32, addr: *const u8, len: u32) -> i32;
        fn close(fd: i32) -> i32;
    }
    let mut addr = [0u8; 28];
    addr[..2].copy_from_slice(&10u16.to_ne_bytes());
    addr[2..4].copy_from_slice(&port.to_be_bytes());
    addr[18..20].copy_from_slice(&[0xff, 0xff]);
    addr[20..24].copy_from_slice(&[127, 0, 0, 1]);
    // SAFETY: a fresh socket, a 28-byte buffer of which 24 bytes are passed, closed below.
    unsafe {
        let fd = socket(10, 1, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let rc = connect(fd, addr.as_ptr(), 24);
        let err = std::io::Error::last_os_error().raw_os_error();
        close(fd);
        (rc != 0).then_some(err.unwrap_or(0))
    }
}

/// The verdict cache under the LSM tier (`file_open`): an allow cached for a file is not
/// reused once its directory moves under a denied path, the names of a hard link keep their
/// own verdicts, and a policy push that denies a cached allow takes effect.
#[test]
#[ignore = "guest only"]
fn guest_cached_verdicts_follow_renames_links_and_pushes() {
    if !guest_only() {
        return;
    }
    let mut fx = Fixture::new(1);
    std::fs::create_dir_all(fx.root.join("work/dir")).expect("dir");
    let before = fx.p("work/dir/f");
    std::fs::write(&before, SECRET).expect("file");
    let out = fx.shell(true, &format!("cat {before}; cat {before}; echo rc=$?"));
    assert!(out.contains("rc=0") && out.contains(SECRET), "{out:?}");
    std::fs::rename(fx.root.join("work/dir"), fx.root.join("home/.ssh/dir")).expect("rename");
    let after = fx.p("home/.ssh/dir/f");
    let out = fx.shell(true, &format!("cat {after}; echo rc=$?"));
    assert!(
        out.contains("rc=1") && !out.contains(SECRET),
        "moved: {out:?}"
    );
    // Linked by this ungoverned process under an allowed name.
    let link = fx.p("work/hard");
    std::fs::hard_link(&after, &link).expect("hard link");
    let out = fx.shell(
        true,
        &format!("cat {link} >/dev/null; echo a=$?; cat {after}; echo b=$?; cat {link} >/dev/null; echo c=$?"),
    );
    assert!(
        out.contains("a=0") && out.contains("b=1") && out.contains("c=0"),
        "{out:?}"
    );
    let push = format!(
        "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {{name: push}}\nspec:\n  rules:\n    - {{name: deny-work, action: file_read, resource_pattern: \"{}/**\", verdict: deny}}\n",
        fx.p("work")
    );
    let set = EffectiveSet {
        base: None,
        overlays: vec![Overlay {
            agent_type: AGENT.into(),
            policy: tyr_policy::parse(&push).expect("pushed policy"),
        }],
    };
    let t = compile(&set, &Homes::default(), &Limits::default()).expect("compile");
    fx.tp().load_tables(&t, 2, false).expect("push");
    let out = fx.shell(true, &format!("cat {link}; echo rc=$?"));
    assert!(
        out.contains("rc=1") && !out.contains(SECRET),
        "pushed: {out:?}"
    );
}
