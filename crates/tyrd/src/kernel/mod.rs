//! The kernel side: BPF programs (built from `bpf/` by `build.rs`), the tier probe, the
//! policy tables, process identity and the event ring buffer.
//!
//! [`Tracepoints`] is the tracepoint tier: `sched_process_{fork,exec,exit}` keep the process
//! identity map; `sys_exit_{openat,open,openat2,creat,open_by_handle_at}` and
//! `sched_process_exec` decide from the compiled tables and kill on deny;
//! `sys_enter_{openat,open,openat2,creat}` (with `O_CREAT`/`O_TRUNC`),
//! `sys_enter_{link,linkat,rename,renameat,renameat2}` decide on the path string at entry and
//! make a denied syscall fail before killing; `sys_enter_io_uring_{setup,enter}` kill governed
//! processes (io_uring bypasses the syscall hooks);
//! `cgroup/{connect,sendmsg}{4,6}` (on the cgroup v2 root) return `EPERM` on deny. Decisions of
//! file opens are cached (`tyr_vcache`, see `bpf/tyr_maps.h`); the entry and exit of renames and
//! mount changes (`tyr_nse_*`, `tyr_nsx_*`) make cached decisions stale. Dropping it detaches
//! every program not pinned.
//!
//! [`Enforcement`] picks the tier: the LSM programs of [`lsm`] over the tracepoint tier when
//! the kernel runs them, else the tracepoint tier alone, with the reason.

pub mod allows;
pub mod events;
pub mod interps;
pub mod lsm;
pub mod maps;
mod mounts;
mod pins;
pub mod probe;
pub mod tables;
mod tracepoints;

pub use lsm::{Enforcement, LsmTier};
pub use mounts::cgroup2_root;
pub use tracepoints::Tracepoints;

use aya::programs::{BtfTracePoint, CgroupSockAddr, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};

/// Where the daemon pins its programs and maps ([`Tracepoints::load_pinned`]).
pub const PIN_DIR: &str = "/sys/fs/bpf/tyr";

/// The tracepoint-tier object.
pub static TRACEPOINT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tyr.bpf.o"));

/// Where a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// A `tp_btf` (BTF-typed raw tracepoint).
    Btf(&'static str),
    /// A classic tracepoint `category/name`.
    Tracepoint(&'static str, &'static str),
    /// A cgroup `sock_addr` hook (`connect4`, `sendmsg6`…) on the cgroup v2 root.
    Cgroup(&'static str),
}

/// Table descriptors per slot (`TYR_TABLES_PER_SLOT`).
const TABLES_PER_SLOT: u32 = (maps::MAX_LAYERS * maps::NUM_ACTIONS) as u32;

/// Every map of the tracepoint object (pinned by [`Tracepoints::load_pinned`]).
pub const MAPS: [&str; 32] = [
    "tyr_procs",
    "tyr_cgroups",
    "tyr_exes",
    "tyr_interps",
    "tyr_doomed",
    "tyr_entry_killed",
    "tyr_alarm",
    "tyr_config",
    "tyr_vcache",
    "tyr_ecache",
    "tyr_nsgen",
    "tyr_keys",
    "tyr_barrier",
    "tyr_active",
    "tyr_agent_layers",
    "tyr_tables",
    "tyr_classes",
    "tyr_next",
    "tyr_accept",
    "tyr_bin_masks",
    "tyr_cands",
    "tyr_rules",
    "tyr_ports",
    "tyr_lpm",
    "tyr_scratch",
    "tyr_exe_scratch",
    "tyr_upath",
    "tyr_counters",
    "tyr_event_scratch",
    "tyr_events",
    "tyr_allows",
    "tyr_allow_queue",
];

/// The programs of the tracepoint tier, in attach order (identity before enforcement).
pub const PROGRAMS: [(&str, Hook); 47] = [
    ("tyr_fork", Hook::Btf("sched_process_fork")),
    ("tyr_connect4", Hook::Cgroup("connect4")),
    ("tyr_connect6", Hook::Cgroup("connect6")),
    ("tyr_sendmsg4", Hook::Cgroup("sendmsg4")),
    ("tyr_sendmsg6", Hook::Cgroup("sendmsg6")),
    ("tyr_exit", Hook::Btf("sched_process_exit")),
    ("tyr_exec", Hook::Btf("sched_process_exec")),
    (
        "tyr_exit_openat",
        Hook::Tracepoint("syscalls", "sys_exit_openat"),
    ),
    (
        "tyr_exit_open",
        Hook::Tracepoint("syscalls", "sys_exit_open"),
    ),
    (
        "tyr_exit_openat2",
        Hook::Tracepoint("syscalls", "sys_exit_openat2"),
    ),
    (
        "tyr_exit_creat",
        Hook::Tracepoint("syscalls", "sys_exit_creat"),
    ),
    (
        "tyr_exit_by_handle",
        Hook::Tracepoint("syscalls", "sys_exit_open_by_handle_at"),
    ),
    (
        "tyr_exit_pidfd_getfd",
        Hook::Tracepoint("syscalls", "sys_exit_pidfd_getfd"),
    ),
    (
        "tyr_enter_openat",
        Hook::Tracepoint("syscalls", "sys_enter_openat"),
    ),
    (
        "tyr_enter_open",
        Hook::Tracepoint("syscalls", "sys_enter_open"),
    ),
    (
        "tyr_enter_openat2",
        Hook::Tracepoint("syscalls", "sys_enter_openat2"),
    ),
    (
        "tyr_enter_creat",
        Hook::Tracepoint("syscalls", "sys_enter_creat"),
    ),
    (
        "tyr_enter_link",
        Hook::Tracepoint("syscalls", "sys_enter_link"),
    ),
    (
        "tyr_enter_linkat",
        Hook::Tracepoint("syscalls", "sys_enter_linkat"),
    ),
    (
        "tyr_enter_rename",
        Hook::Tracepoint("syscalls", "sys_enter_rename"),
    ),
    (
        "tyr_enter_renameat",
        Hook::Tracepoint("syscalls", "sys_enter_renameat"),
    ),
    (
        "tyr_enter_renameat2",
        Hook::Tracepoint("syscalls", "sys_enter_renameat2"),
    ),
    (
        "tyr_enter_io_uring_setup",
        Hook::Tracepoint("syscalls", "sys_enter_io_uring_setup"),
    ),
    (
        "tyr_enter_io_uring_enter",
        Hook::Tracepoint("syscalls", "sys_enter_io_uring_enter"),
    ),
    // Renames and mount changes: the namespace generation of the verdict cache.
    (
        "tyr_nse_rename",
        Hook::Tracepoint("syscalls", "sys_enter_rename"),
    ),
    (
        "tyr_nsx_rename",
        Hook::Tracepoint("syscalls", "sys_exit_rename"),
    ),
    (
        "tyr_nse_renameat",
        Hook::Tracepoint("syscalls", "sys_enter_renameat"),
    ),
    (
        "tyr_nsx_renameat",
        Hook::Tracepoint("syscalls", "sys_exit_renameat"),
    ),
    (
        "tyr_nse_renameat2",
        Hook::Tracepoint("syscalls", "sys_enter_renameat2"),
    ),
    (
        "tyr_nsx_renameat2",
        Hook::Tracepoint("syscalls", "sys_exit_renameat2"),
    ),
    (
        "tyr_nse_mount",
        Hook::Tracepoint("syscalls", "sys_enter_mount"),
    ),
    (
        "tyr_nsx_mount",
        Hook::Tracepoint("syscalls", "sys_exit_mount"),
    ),
    (
        "tyr_nse_umount",
        Hook::Tracepoint("syscalls", "sys_enter_umount"),
    ),
    (
        "tyr_nsx_umount",
        Hook::Tracepoint("syscalls", "sys_exit_umount"),
    ),
    (
        "tyr_nse_move_mount",
        Hook::Tracepoint("syscalls", "sys_enter_move_mount"),
    ),
    (
        "tyr_nsx_move_mount",
        Hook::Tracepoint("syscalls", "sys_exit_move_mount"),
    ),
    (
        "tyr_nse_pivot_root",
        Hook::Tracepoint("syscalls", "sys_enter_pivot_root"),
    ),
    (
        "tyr_nsx_pivot_root",
        Hook::Tracepoint("syscalls", "sys_exit_pivot_root"),
    ),
    (
        "tyr_nse_fsmount",
        Hook::Tracepoint("syscalls", "sys_enter_fsmount"),
    ),
    (
        "tyr_nsx_fsmount",
        Hook::Tracepoint("syscalls", "sys_exit_fsmount"),
    ),
    (
        "tyr_nse_open_tree",
        Hook::Tracepoint("syscalls", "sys_enter_open_tree"),
    ),
    (
        "tyr_nsx_open_tree",
        Hook::Tracepoint("syscalls", "sys_exit_open_tree"),
    ),
    (
        "tyr_nse_open_tree_attr",
        Hook::Tracepoint("syscalls", "sys_enter_open_tree_attr"),
    ),
    (
        "tyr_nsx_open_tree_attr",
        Hook::Tracepoint("syscalls", "sys_exit_open_tree_attr"),
    ),
    (
        "tyr_nse_unshare",
        Hook::Tracepoint("syscalls", "sys_enter_unshare"),
    ),
    (
        "tyr_nse_clone",
        Hook::Tracepoint("syscalls", "sys_enter_clone"),
    ),
    (
        "tyr_nse_clone3",
        Hook::Tracepoint("syscalls", "sys_enter_clone3"),
    ),
];

/// Syscall tracepoints of calls some architectures lack (arm64 has only the `*at` forms,
/// whose hooks decide the same operations there), or older kernels (`open_tree_attr`, 6.15).
const LEGACY_SYSCALLS: [&str; 9] = [
    "sys_exit_open",
    "sys_exit_creat",
    "sys_enter_open",
    "sys_enter_creat",
    "sys_enter_link",
    "sys_enter_rename",
    "sys_exit_rename",
    "sys_enter_open_tree_attr",
    "sys_exit_open_tree_attr",
];

/// Whether `category/tp` is a legacy syscall's tracepoint that this kernel does not have (it
/// is then not attached; every other missing hook is an error).
pub(crate) fn absent_legacy_syscall(category: &str, tp: &str) -> bool {
    LEGACY_SYSCALLS.contains(&tp)
        && !["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .any(|root| {
                std::path::Path::new(root)
                    .join("events")
                    .join(category)
                    .join(tp)
                    .is_dir()
            })
}

/// The entry programs the LSM tier supersedes (`file_open`, `path_link`, `path_rename` refuse
/// the same operations without killing): detached when the LSM programs attach.
pub const ENTRY_PROGRAMS: [&str; 9] = [
    "tyr_enter_openat",
    "tyr_enter_open",
    "tyr_enter_openat2",
    "tyr_enter_creat",
    "tyr_enter_link",
    "tyr_enter_linkat",
    "tyr_enter_rename",
    "tyr_enter_renameat",
    "tyr_enter_renameat2",
];

/// A kernel-side failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("loading the BPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("parsing the BPF object: {0}")]
    Parse(String),
    #[error("map `{0}` of the BPF object is not listed in `MAPS`")]
    Unlisted(String),
    #[error("map `{0}` is missing from the BPF object")]
    MissingMap(&'static str),
    #[error("program `{0}` is missing from the BPF object")]
    MissingProgram(&'static str),
    #[error("tables: {0}")]
    Tables(#[from] tables::TableError),
    #[error("agent executable path longer than {max} bytes: {path}", max = maps::EXE_KEY_LEN - 1)]
    ExePath { path: String },
    #[error("mount: {0}")]
    Mount(String),
    #[error("pinning: {0}")]
    Pin(#[from] aya::pin::PinError),
    #[error("link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

/// Kernel counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub ringbuf_drops: u64,
    pub fork_full: u64,
    pub fail_closed: u64,
    /// Syscalls denied at entry whose path string could not be emptied (read-only memory):
    /// the process was killed, but the syscall may have run.
    pub uwrite_failed: u64,
    /// Suppressed allow events whose window could not be queued for the sweep: reported only
    /// if the process repeats the operation after the window.
    pub allow_unqueued: u64,
}

/// Loads the tracepoint object against `btf` without attaching anything.
pub(crate) fn load_object(btf: &Btf) -> Result<Ebpf, KernelError> {
    Ok(EbpfLoader::new().btf(Some(btf)).load(TRACEPOINT_OBJ)?)
}

/// Loads one program of [`PROGRAMS`] into the kernel (verifier).
pub(crate) fn load_program(
    ebpf: &mut Ebpf,
    name: &'static str,
    hook: Hook,
    btf: &Btf,
) -> Result<(), KernelError> {
    let prog = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?;
    match hook {
        Hook::Btf(tp) => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(prog_err(name))?;
            p.load(tp, btf).map_err(prog_err(name))
        }
        Hook::Tracepoint(..) => {
            let p: &mut TracePoint = prog.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))
        }
        Hook::Cgroup(_) => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))
        }
    }
}

#[cfg(test)]
mod legacy_tests {
    use super::absent_legacy_syscall;

    #[test]
    fn only_legacy_syscalls_missing_from_tracefs_are_skipped() {
        // Never skipped, whatever the host: the `*at` forms exist on every architecture.
        assert!(!absent_legacy_syscall("syscalls", "sys_exit_openat"));
        assert!(!absent_legacy_syscall("syscalls", "sys_enter_no_such_call"));
        // x86_64 has the legacy calls: with tracefs mounted they are attached.
        if cfg!(target_arch = "x86_64")
            && std::path::Path::new("/sys/kernel/tracing/events/syscalls").is_dir()
        {
            assert!(!absent_legacy_syscall("syscalls", "sys_enter_link"));
        }
        // A legacy name under a category that does not exist is absent.
        assert!(absent_legacy_syscall("no_such_category", "sys_enter_link"));
    }
}
