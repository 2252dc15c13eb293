//! Measured rates of the tracepoint tier's races (SECURITY.md, "Enforcement tiers and their
//! residual risks"), with Tyr's own programs and a policy that only covers a temp directory.
//!
//! Measurements, not checks: every test is ignored. As root:
//! `cargo test -p tyrd --test race_rates -- --ignored --nocapture --test-threads=1`
//! prints `RACE ...` lines. `fd_races_on_this_host` measures the sibling-thread fd race here
//! (`TYR_RACE_TRIALS`, default 10,000 per race); `races_in_a_two_cpu_guest` boots the Debian
//! 6.1 guest with 2 vCPUs (tests/vm/run.sh, `TYR_VM_SMP=2`), where BPF may write user memory,
//! and runs `guest_race_rates` there: the fd races again and the entry-time path rewrite race.
//!
//! One trial: the test forks a child, marks it as the agent, releases it; the child pins
//! itself to CPU 0, starts sibling threads pinned to CPU 1, waits until they spin, then makes
//! the denied call. Siblings `pread` straight into memory shared with the test (the fastest
//! way out of a process about to die: the kernel's copy is already the leak), or `mmap` and
//! copy there; any byte of the secret found there counts as leaked.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tyr_policy::compile::{Limits, compile};
use tyr_policy::glob::Homes;
use tyr_policy::model::{EffectiveSet, Overlay};
use tyrd::kernel::Tracepoints;
use tyrd::kernel::maps::TyrProc;
use tyrd::kernel::probe::{Tier, probe};

const AGENT: &str = "race-agent";
/// The size of the read-denied file (an RSA private key is about 3 KiB).
const SECRET_LEN: usize = 4096;
/// Trials of each measured race in the guest (TCG is slow).
const GUEST_TRIALS: u32 = 1000;
/// Trials of each control run (ungoverned, or governed without a sibling).
const CONTROL_TRIALS: u32 = 20;

/// No byte is 0, so a zeroed shared page never matches.
fn secret_content() -> Vec<u8> {
    (0..SECRET_LEN).map(|i| (i * 7 % 251) as u8 + 1).collect()
}

fn in_guest() -> bool {
    std::env::var("TYR_VM_GUEST").is_ok_and(|v| v == "1")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The race a trial runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Race {
    /// Siblings `pread` the fd number the denied open will return.
    Read,
    /// Siblings `mmap` that fd number and copy the mapping.
    Mmap,
    /// An `O_TRUNC` open of a write-denied file; siblings restore the path's first byte.
    Truncate,
    /// A hard link of the read-denied file; siblings restore both paths' first bytes.
    Link,
}

/// The page(s) a trial's child shares with the test.
#[repr(C)]
struct Shared {
    /// Siblings running.
    ready: AtomicU32,
    /// Reads or maps that returned to user space with data.
    reads: AtomicU32,
    /// CLOCK_MONOTONIC ns just before the denied call.
    called: AtomicU64,
    /// CLOCK_MONOTONIC ns when the last read or map returned to user space with data.
    last: AtomicU64,
    /// What the siblings obtained (written by the kernel or by a sibling).
    leaked: [AtomicU8; SECRET_LEN],
}

/// A `MAP_SHARED` anonymous mapping holding a [`Shared`], inherited by forked children.
struct SharedMap(*mut Shared);

impl SharedMap {
    fn new() -> SharedMap {
        // SAFETY: a fresh anonymous mapping, zeroed by the kernel; all-zero atomics are valid.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap shared");
        SharedMap(p.cast())
    }

    fn get(&self) -> &'static Shared {
        // SAFETY: the mapping lives until drop, after the last child is reaped; children
        // only use it until they exit.
        unsafe { &*self.0 }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no reference outlives the test.
        unsafe { libc::munmap(self.0.cast(), size_of::<Shared>()) };
    }
}

/// Pins the calling thread to `cpu` (best effort).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The measured tier, its temp files and the paths a trial uses.
struct Bench {
    _dir: tempfile::TempDir,
    secret: PathBuf,
    keep: PathBuf,
    copy: PathBuf,
    /// The secret's content.
    data: Vec<u8>,
    agent_id: u8,
    tp: Tracepoints,
    shared: SharedMap,
}

fn policy(root: &Path) -> String {
    let r = root.display();
    format!(
        "apiVersion: tyr.dev/v1
kind: Policy
metadata: {{name: race-overlay}}
spec:
  rules:
    - {{name: deny-secret, action: file_read, resource_pattern: \"{r}/secret/**\", verdict: deny}}
    - {{name: deny-locked, action: file_write, resource_pattern: \"{r}/locked/**\", verdict: deny}}
"
    )
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        for sub in ["secret", "locked", "work"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        let secret = root.join("secret/key");
        std::fs::write(&secret, secret_content()).expect("secret");
        let keep = root.join("locked/keep.txt");
        std::fs::write(&keep, "KEEP").expect("locked file");
        let policy = tyr_policy::parse(&policy(&root)).expect("policy parses");
        let set = EffectiveSet {
            base: None,
            overlays: vec![Overlay {
                agent_type: AGENT.into(),
                policy,
            }],
        };
        let tables = compile(&set, &Homes::default(), &Limits::default()).expect("compiles");
        let agent_id = tables
            .agent_types
            .iter()
            .position(|n| n == AGENT)
            .expect("agent type") as u8
            + 1;
        let mut tp = Tracepoints::load().expect("tracepoint programs load and attach");
        tp.load_tables(&tables, 1, false).expect("tables load");
        Bench {
            _dir: dir,
            secret,
            keep,
            copy: root.join("work/copy"),
            data: secret_content(),
            agent_id,
            tp,
            shared: SharedMap::new(),
        }
    }

    /// Runs `trials` trials; `governed` marks each child as the agent.
    fn run(&mut self, race: Race, trials: u32, governed: bool, siblings: u32) -> Tally {
        let mut tally = Tally::default();
        let start = Instant::now();
        for _ in 0..trials {
            let t = self.trial(race, governed, siblings);
            tally.trials += 1;
            tally.killed += u32::from(t.killed);
            tally.hits += u32::from(t.hit);
            tally.max_bytes = tally.max_bytes.max(t.bytes);
            tally.returned += u32::from(t.reads > 0);
            tally.reads.push(t.reads);
            tally.after.push(t.after);
        }
        tally.elapsed = start.elapsed();
        tally
    }

    fn trial(&mut self, race: Race, governed: bool, siblings: u32) -> Trial {
        let shared = self.shared.get();
        shared.ready.store(0, Ordering::SeqCst);
        shared.reads.store(0, Ordering::SeqCst);
        shared.called.store(0, Ordering::SeqCst);
        shared.last.store(0, Ordering::SeqCst);
        for b in &shared.leaked {
            b.store(0, Ordering::Relaxed);
        }
        let (first, second) = match race {
            Race::Read | Race::Mmap | Race::Link => (&self.secret, &self.copy),
            Race::Truncate => (&self.keep, &self.copy),
        };
        let first = CString::new(first.as_os_str().as_bytes()).expect("path");
        let second = CString::new(second.as_os_str().as_bytes()).expect("path");
        let mut gate = [0i32; 2];
        // SAFETY: `gate` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: the child only runs `child` (libc calls, thread spawns) and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: in the child; waits for the gate, runs the trial, never returns.
            unsafe {
                libc::close(gate[1]);
                let mut b = 0u8;
                libc::read(gate[0], (&raw mut b).cast(), 1);
                let rc = child(race, &first, &second, shared, siblings);
                libc::_exit(rc);
            }
        }
        // SAFETY: the parent's copies of the gate; `pid` is our child.
        unsafe { libc::close(gate[0]) };
        let marked = if governed {
            let proc = TyrProc {
                agent_type_id: self.agent_id,
                ..TyrProc::default()
            };
            self.tp.set_process(pid as u32, proc)
        } else {
            Ok(())
        };
        let mut status = 0;
        // SAFETY: writes one byte to our pipe, then reaps our child.
        unsafe {
            if marked.is_err() {
                libc::kill(pid, libc::SIGKILL);
            }
            libc::write(gate[1], [1u8].as_ptr().cast(), 1);
            libc::close(gate[1]);
            libc::waitpid(pid, &mut status, 0);
        }
        marked.expect("mark the child as the agent");
        let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL;
        assert!(
            killed || (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0),
            "{race:?}: the child failed with status {status:#x}"
        );
        let reads = shared.reads.load(Ordering::SeqCst);
        let last = shared.last.load(Ordering::SeqCst);
        let after = last.saturating_sub(shared.called.load(Ordering::SeqCst));
        let bytes = shared
            .leaked
            .iter()
            .zip(&self.data)
            .filter(|(l, s)| l.load(Ordering::Relaxed) == **s)
            .count();
        let hit = match race {
            Race::Read | Race::Mmap => bytes > 0,
            Race::Truncate => {
                let truncated = std::fs::metadata(&self.keep).expect("locked file").len() == 0;
                std::fs::write(&self.keep, "KEEP").expect("restore the locked file");
                truncated
            }
            Race::Link => {
                let linked = self.copy.exists();
                if linked {
                    std::fs::remove_file(&self.copy).expect("remove the link");
                }
                linked
            }
        };
        Trial {
            killed,
            hit,
            bytes,
            reads,
            after,
        }
    }
}

struct Trial {
    killed: bool,
    hit: bool,
    bytes: usize,
    reads: u32,
    /// ns from the denied call to the last sibling return with data (0: none).
    after: u64,
}

#[derive(Default)]
struct Tally {
    trials: u32,
    killed: u32,
    hits: u32,
    max_bytes: usize,
    /// Trials where a sibling's read or map returned to user space with data.
    returned: u32,
    /// Such returns per trial.
    reads: Vec<u32>,
    /// [`Trial::after`] per trial.
    after: Vec<u64>,
    elapsed: Duration,
}

impl Tally {
    fn report(&self, what: &str, siblings: u32) {
        let mut reads = self.reads.clone();
        reads.sort_unstable();
        let pct = |p: usize| reads.get(reads.len() * p / 100).copied().unwrap_or(0);
        let after = sorted_nonzero(&self.after);
        println!(
            "RACE {what}: kernel {}, {} CPUs, {siblings} sibling(s): {} trials, {} hits ({:.2} %), \
             max {} bytes leaked, {} killed; sibling calls returning data per trial: \
             >0 in {} trials, p50 {} p90 {} max {}; last such return after the call: \
             p50 {:.1} p90 {:.1} max {:.1} µs; {:.1} s",
            kernel(),
            cpus(),
            self.trials,
            self.hits,
            f64::from(self.hits) * 100.0 / f64::from(self.trials.max(1)),
            self.max_bytes,
            self.killed,
            self.returned,
            pct(50),
            pct(90),
            reads.last().copied().unwrap_or(0),
            us(&after, 50),
            us(&after, 90),
            us(&after, 100),
            self.elapsed.as_secs_f64()
        );
    }
}

fn sorted_nonzero(ns: &[u64]) -> Vec<u64> {
    let mut v: Vec<u64> = ns.iter().copied().filter(|&a| a > 0).collect();
    v.sort_unstable();
    v
}

/// Percentile `p` (100: the maximum) of sorted ns values, in µs.
fn us(sorted: &[u64], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |&a| a as f64 / 1e3)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A trial's child (after `fork`): the exit status, unless the kill lands first.
fn child(
    race: Race,
    first: &CString,
    second: &CString,
    shared: &'static Shared,
    siblings: u32,
) -> i32 {
    pin(0);
    match race {
        Race::Read | Race::Mmap => fd_child(race, first, shared, siblings),
        Race::Truncate | Race::Link => entry_child(race, first, second, shared, siblings),
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> bool {
    std::thread::Builder::new().spawn(f).is_ok()
}

fn wait_ready(shared: &Shared, siblings: u32) {
    while shared.ready.load(Ordering::Acquire) < siblings {
        std::hint::spin_loop();
    }
}

fn fd_child(race: Race, secret: &CString, shared: &'static Shared, siblings: u32) -> i32 {
    // SAFETY: opens and closes a descriptor: the next open returns the same number.
    let fd = unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        libc::close(fd);
        fd
    };
    for _ in 0..siblings {
        if !spawn(move || fd_sibling(race, fd, shared)) {
            return 3;
        }
    }
    wait_ready(shared, siblings);
    shared.called.store(now_ns(), Ordering::Release);
    // SAFETY: a NUL-terminated path.
    let got = unsafe { libc::open(secret.as_ptr(), libc::O_RDONLY) };
    if got != fd {
        return 4;
    }
    // Not killed (an ungoverned control run): let a sibling read once.
    let deadline = Instant::now() + Duration::from_secs(1);
    while shared.reads.load(Ordering::Acquire) == 0 && siblings > 0 && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    0
}

/// Reads (`pread` straight into the shared page: the kernel's copy is the leak) or maps and
/// copies the fd number the denied open will return, in a loop.
fn fd_sibling(race: Race, fd: i32, shared: &Shared) {
    pin(1);
    // AtomicU8 is an UnsafeCell: the page may be written through this pointer.
    let out = shared.leaked.as_ptr().cast::<u8>().cast_mut();
    shared.ready.fetch_add(1, Ordering::Release);
    loop {
        let n = match race {
            // SAFETY: at most SECRET_LEN bytes into the shared page.
            Race::Read => unsafe { libc::pread(fd, out.cast(), SECRET_LEN, 0) },
            // SAFETY: a private read-only mapping of SECRET_LEN bytes, copied, unmapped.
            _ => unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    SECRET_LEN,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                );
                if p == libc::MAP_FAILED {
                    -1
                } else {
                    std::ptr::copy_nonoverlapping(p.cast(), out, SECRET_LEN);
                    libc::munmap(p, SECRET_LEN);
                    SECRET_LEN as isize
                }
            },
        };
        if n > 0 {
            shared.last.store(now_ns(), Ordering::Release);
            shared.reads.fetch_add(1, Ordering::Release);
        }
    }
}

/// CLOCK_MONOTONIC in ns.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A path in memory a sibling may rewrite while the kernel reads it.
fn atomic_path(path: &CString) -> &'static [AtomicU8] {
    let bytes: Vec<AtomicU8> = path
        .as_bytes_with_nul()
        .iter()
        .map(|b| AtomicU8::new(*b))
        .collect();
    bytes.leak()
}

fn entry_child(
    race: Race,
    first: &CString,
    second: &CString,
    shared: &'static Shared,
    siblings: u32,
) -> i32 {
    let (a, b) = (atomic_path(first), atomic_path(second));
    for _ in 0..siblings {
        let ok = spawn(move || {
            pin(1);
            shared.ready.fetch_add(1, Ordering::Release);
            loop {
                a[0].store(b'/', Ordering::Relaxed);
                b[0].store(b'/', Ordering::Relaxed);
            }
        });
        if !ok {
            return 3;
        }
    }
    wait_ready(shared, siblings);
    let (a, b) = (a.as_ptr().cast::<libc::c_char>(), b.as_ptr().cast());
    // SAFETY: NUL-terminated paths (AtomicU8 has the layout of u8).
    unsafe {
        match race {
            Race::Truncate => {
                libc::open(a, libc::O_WRONLY | libc::O_TRUNC);
            }
            _ => {
                libc::linkat(libc::AT_FDCWD, a, libc::AT_FDCWD, b, 0);
            }
        }
    }
    0
}

/// Why the host measurement cannot run here.
fn host_skip() -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    if cpus() < 2 {
        return Some("one CPU: nothing runs beside the denied call".into());
    }
    let report = probe();
    (report.tier == Tier::Observe)
        .then(|| format!("no tracepoint tier: {}", report.reasons.join("; ")))
}

/// Ungoverned, siblings obtain the secret every time: the measurement can see a leak.
fn control(bench: &mut Bench, race: Race) {
    let t = bench.run(race, CONTROL_TRIALS, false, 1);
    assert_eq!(t.hits, t.trials, "{race:?}: the control run missed leaks");
    assert_eq!(t.killed, 0);
}

/// The fd races: control, then `trials` governed trials of each.
fn fd_races(bench: &mut Bench, trials: u32, siblings: u32) {
    for race in [Race::Read, Race::Mmap] {
        control(bench, race);
        let t = bench.run(race, trials, true, siblings);
        assert_eq!(t.killed, t.trials, "{race:?}: a governed child survived");
        t.report(&format!("fd-{race:?}"), siblings);
    }
}

#[test]
#[ignore = "measurement: run as root with --ignored --nocapture"]
fn fd_races_on_this_host() {
    if in_guest() {
        return;
    }
    if let Some(reason) = host_skip() {
        return tyr_testkit::skip(&reason);
    }
    let trials = std::env::var("TYR_RACE_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let siblings = std::env::var("TYR_RACE_SIBLINGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut bench = Bench::new();
    fd_races(&mut bench, trials, siblings);
}

#[test]
#[ignore = "guest only (run by races_in_a_two_cpu_guest)"]
fn guest_race_rates() {
    if !in_guest() {
        return tyr_testkit::skip("guest-only test (run by races_in_a_two_cpu_guest)");
    }
    assert!(cpus() >= 2, "the guest has one CPU");
    let mut bench = Bench::new();
    assert!(bench.tp.refuses_at_entry(), "lockdown in the guest?");
    fd_races(&mut bench, GUEST_TRIALS, 1);
    for race in [Race::Truncate, Race::Link] {
        control(&mut bench, race);
        let alone = bench.run(race, CONTROL_TRIALS, true, 0);
        assert_eq!(
            alone.hits, 0,
            "{race:?}: refused at entry without a sibling"
        );
        let t = bench.run(race, GUEST_TRIALS, true, 1);
        assert_eq!(t.killed, t.trials, "{race:?}: a governed child survived");
        println!(
            "RACE entry-{race:?}: kernel {}, {} CPUs, 1 sibling: {} trials, {} hits ({:.2} %), \
             {} killed; without a sibling: {} hits in {} trials; {:.1} s",
            kernel(),
            cpus(),
            t.trials,
            t.hits,
            f64::from(t.hits) * 100.0 / f64::from(t.trials.max(1)),
            t.killed,
            alone.hits,
            alone.trials,
            t.elapsed.as_secs_f64()
        );
    }
}

#[test]
#[ignore = "measurement: boots the 6.1 guest with 2 vCPUs"]
fn races_in_a_two_cpu_guest() {
    if in_guest() {
        return;
    }
    if !is_root() {
        return tyr_testkit::skip("not root");
    }
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vm");
    let kernel = Command::new(vm.join("fetch-kernel.sh"))
        .output()
        .expect("run fetch-kernel.sh");
    if !kernel.status.success() {
        return tyr_testkit::skip("no guest kernel (tests/vm/fetch-kernel.sh failed)");
    }
    let kernel = String::from_utf8_lossy(&kernel.stdout).trim().to_owned();
    let me = std::env::current_exe().expect("test binary");
    let out = Command::new(vm.join("run.sh"))
        .arg(&me)
        .args([
            "--",
            "--ignored",
            "--exact",
            "guest_race_rates",
            "--nocapture",
        ])
        .env("TYR_VM_KERNEL", kernel)
        .env("TYR_VM_SMP", "2")
        .env("TYR_VM_TIMEOUT", "1800")
        .output()
        .expect("run tests/vm/run.sh");
    let console = String::from_utf8_lossy(&out.stdout);
    for line in console.lines().filter(|l| l.starts_with("RACE ")) {
        println!("{line} (guest, 2 vCPUs, TCG)");
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "the guest run failed:\n{console}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
