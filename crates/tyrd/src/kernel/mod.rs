//! The kernel side: BPF programs (built from `bpf/` by `build.rs`), the tier probe, the
//! policy tables, process identity and the event ring buffer.
//!
//! [`Tracepoints`] is the tracepoint tier: `sched_process_{fork,exec,exit}` keep the process
//! identity map; `sched_process_exec` decides execs; the raw syscall tracepoints
//! (`tp_btf/sys_enter`, `tp_btf/sys_exit`, every syscall, native and 32-bit) decide opens on
//! the file opened at exit, and at entry decide `O_CREAT`/`O_TRUNC` opens, links and renames
//! on the path string (a denied syscall is made to fail before the kill), kill governed
//! processes at io_uring calls (io_uring bypasses the syscall hooks) and when they attach to,
//! or reach the memory or environment of, a process of another identity (`ptrace`,
//! `process_vm_*`, `/proc/PID/mem|environ`), and count renames and mount changes (stale
//! cached decisions); `cgroup/{connect,sendmsg}{4,6}` (on the cgroup v2 root) return `EPERM`
//! on deny. Decisions of file opens are cached (`tyr_vcache`, see `bpf/tyr_maps.h`); an
//! agent's repeated allows (opens, execs, connects) are reported once per window
//! ([`allows`]). Dropping it detaches every program not pinned.
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

use aya::programs::{BtfTracePoint, CgroupSockAddr};
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
/// `tyr_sys_enter`/`tyr_sys_exit` run for every syscall (native and 32-bit) and decide the
/// calls that open, link or rename files, use io_uring or change mounts.
pub const PROGRAMS: [(&str, Hook); 9] = [
    ("tyr_fork", Hook::Btf("sched_process_fork")),
    ("tyr_connect4", Hook::Cgroup("connect4")),
    ("tyr_connect6", Hook::Cgroup("connect6")),
    ("tyr_sendmsg4", Hook::Cgroup("sendmsg4")),
    ("tyr_sendmsg6", Hook::Cgroup("sendmsg6")),
    ("tyr_exit", Hook::Btf("sched_process_exit")),
    ("tyr_exec", Hook::Btf("sched_process_exec")),
    ("tyr_sys_exit", Hook::Btf("sys_exit")),
    ("tyr_sys_enter", Hook::Btf("sys_enter")),
];

/// Maps of the tracepoint object that are never pinned: each load has its own.
/// `.rodata` holds load-time constants; `tyr_lsm_on` says whether this load's LSM programs
/// refuse opens, links and renames (a new daemon starts at 0 until its own LSM programs
/// attach).
const UNPINNED_MAPS: [&str; 2] = [".rodata", "tyr_lsm_on"];

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
        Hook::Cgroup(_) => {
            let p: &mut CgroupSockAddr = prog.try_into().map_err(prog_err(name))?;
            p.load().map_err(prog_err(name))
        }
    }
}
