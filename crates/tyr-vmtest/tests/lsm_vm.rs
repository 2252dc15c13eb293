//! Runs the BPF LSM self-test in the Debian 6.1 guest kernel through tests/vm/run.sh.
//!
//! Needs root, `qemu-system-x86_64` and `busybox` (Debian `qemu-system-x86 busybox-static`)
//! and, once, the Debian archive for the kernel (cached in `TYR_VM_CACHE`); without them the
//! tests print `skipping: <reason>` and return — except under CI, where they fail.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

/// The exit status fetch-kernel.sh/run.sh use for "the Debian archive cannot be reached".
const UNREACHABLE: i32 = 75;
const SELFTEST: &str = env!("CARGO_BIN_EXE_tyr-vm-selftest");

fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vm")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// The guest kernel, or why the VM tests cannot run here.
fn kernel() -> &'static Result<PathBuf, String> {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KERNEL.get_or_init(|| {
        // /proc/self belongs to the effective uid.
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
        let start = Instant::now();
        let out = run(&mut Command::new(vm_dir().join("fetch-kernel.sh")));
        match out.status.code() {
            Some(0) => {}
            Some(UNREACHABLE) => return Err("the Debian archive is unreachable".into()),
            _ => panic!("fetch-kernel.sh failed: {}", text(&out)),
        }
        eprintln!("guest kernel ready in {:?}", start.elapsed());
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Boots the guest with the self-test binary in `guest` mode; the console and the exit status.
fn boot(kernel: &Path, lsm: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(vm_dir().join("run.sh"));
    cmd.args([SELFTEST, "--", "guest"])
        .env("TYR_VM_KERNEL", kernel);
    if let Some(lsm) = lsm {
        cmd.env("TYR_VM_LSM", lsm);
    }
    let start = Instant::now();
    let out = run(&mut cmd);
    let console = text(&out);
    eprintln!("{console}boot + test took {:?}", start.elapsed());
    (out.status.code(), console)
}

#[test]
fn lsm_program_is_enforced_in_the_guest_and_refused_on_the_host() {
    let kernel = match kernel() {
        Ok(kernel) => kernel,
        Err(reason) => return tyr_testkit::skip(reason),
    };
    let host = run(Command::new(SELFTEST).arg("host-refused"));
    assert!(host.status.success(), "host check: {}", text(&host));

    let (status, console) = boot(kernel, None);
    assert_eq!(status, Some(0), "the VM run failed:\n{console}");
    for line in [
        "PASS: opening /tmp/secret fails with EPERM",
        "PASS: opening /tmp/ok succeeds",
        "PASS: opening /tmp/secret succeeds after detach",
        "TYR-VM-RESULT: PASS",
    ] {
        assert!(
            console.lines().any(|l| l == line),
            "no `{line}` in:\n{console}"
        );
    }
}

#[test]
fn a_guest_without_the_bpf_lsm_fails_the_run() {
    let kernel = match kernel() {
        Ok(kernel) => kernel,
        Err(reason) => return tyr_testkit::skip(reason),
    };
    let (status, console) = boot(kernel, Some("lockdown,capability,landlock,yama"));
    assert_eq!(status, Some(1), "the VM run did not fail:\n{console}");
    assert!(
        console.contains("TYR-VM-RESULT: FAIL bpf is not an active LSM in the guest"),
        "{console}"
    );
    assert!(!console.contains("TYR-VM-RESULT: PASS"), "{console}");
}
