//! `#[repr(C)]` mirrors of `bpf/tyr_maps.h`. Every struct has explicit padding fields, so it
//! has no uninitialised bytes, and a size assertion matching the `_Static_assert` in C.

use std::mem::{offset_of, size_of};

/// Paths of this many bytes or more fail closed in-kernel.
pub const PATH_MAX: usize = 4096;
/// Most layers (base + overlays) the kernel walks.
pub const MAX_LAYERS: usize = 64;
/// Actions per layer in the tables map (`layer * NUM_ACTIONS + action`).
pub const NUM_ACTIONS: usize = 5;
/// Longest agent executable path the agent-executables map can hold.
pub const EXE_KEY_LEN: usize = 256;

/// `TyrConfig::flags`: allow events for every process, not only agents.
pub const CONFIG_ALLOW_EVENTS_ALL: u32 = 1;

/// `TyrEvent::flags`: the walk could not complete and was denied.
pub const EVENT_FAIL_CLOSED: u8 = 1;
/// `TyrEvent::flags`: the event carries no path.
pub const EVENT_NO_PATH: u8 = 2;
/// `TyrEvent::flags`: decided at syscall entry on the path string (before the kernel acted).
pub const EVENT_AT_ENTRY: u8 = 4;
/// `TyrEvent::flags`: a hard link.
pub const EVENT_LINK: u8 = 8;
/// `TyrEvent::flags`: a rename.
pub const EVENT_RENAME: u8 = 16;
/// `TyrEvent::flags`: `io_uring_setup`/`io_uring_enter` by a governed process.
pub const EVENT_IO_URING: u8 = 32;
/// `TyrEvent::flags`: the new name of a link or rename (else its source).
pub const EVENT_TARGET: u8 = 64;
/// `TyrEvent::flags`: an allow event that opens a suppression window (`tyr_allows`).
pub const EVENT_WINDOW: u8 = 128;
/// `tyr_event.op`: ptrace attach of, or memory read or write into, process `target`.
pub const OP_PTRACE: u8 = 1;
pub const OP_VM_READ: u8 = 2;
pub const OP_VM_WRITE: u8 = 3;
/// `tyr_event.op`: an open of `/proc/PID/mem` or `/proc/PID/environ` of process `target`.
pub const OP_PROC_FILE: u8 = 4;

/// `TyrProc::flags`: the executable is an interpreter or loader (its read opens are also
/// decided as exec).
pub const PROC_INTERP: u8 = 1;

/// Indices of the per-CPU counters map.
pub const COUNTER_RINGBUF_DROPS: u32 = 0;
pub const COUNTER_FORK_FULL: u32 = 1;
pub const COUNTER_FAIL_CLOSED: u32 = 2;
pub const COUNTER_UWRITE_FAILED: u32 = 3;
pub const COUNTER_ALLOW_UNQUEUED: u32 = 4;

/// `rule` value of an event decided by a default.
pub const NO_RULE: u32 = u32::MAX;

/// tgid → identity (`struct tyr_proc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrProc {
    pub discovered_id: u64,
    pub binary_mask: u64,
    pub agent_type_id: u8,
    pub flags: u8,
    pub _pad0: u16,
    pub _pad1: u32,
}

/// One byte-class DFA's offsets into the shared arrays (`struct tyr_dfa`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrDfa {
    pub class_off: u32,
    pub next_off: u32,
    pub accept_off: u32,
    pub nclasses: u32,
    pub start: u32,
    pub dead: u32,
    pub nstates: u32,
    pub _pad: u32,
}

/// One (layer, action) table (`struct tyr_table`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrTable {
    pub dfa: TyrDfa,
    pub rule_off: u32,
    pub nrules: u32,
    pub cand_off: u32,
    pub any_off: u32,
    pub any_len: u16,
    pub deflt: u8,
    pub has_dfa: u8,
    pub ncands: u32,
}

/// Candidates of one DFA state (`struct tyr_accept`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrAccept {
    pub off: u32,
    pub len: u16,
    pub _pad: u16,
}

/// One kernel-enforced rule (`struct tyr_rule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrRule {
    pub binary_req: u64,
    pub agent_mask: u64,
    pub domain_req: u64,
    pub rule: u32,
    pub port_off: u32,
    pub port_len: u32,
    pub verdict: u8,
    pub _pad: [u8; 3],
}

/// Inclusive port range of a `net_connect` rule (`struct tyr_port_range`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrPortRange {
    pub start: u16,
    pub end: u16,
}

/// The data of a destination LPM key (`struct tyr_lpm_key` after its `prefixlen`): the
/// prefix length counts [`LPM_KEY_BITS`] bits of `slot`, `layer` and `family` first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrLpmData {
    pub slot: u8,
    pub layer: u8,
    pub family: u8,
    pub addr: [u8; 16],
    pub _pad: u8,
}

/// Bits of an LPM key before the address.
pub const LPM_KEY_BITS: u32 = 24;

/// Candidates of one destination prefix (`struct tyr_lpm_val`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrLpmVal {
    pub off: u32,
    pub len: u16,
    pub _pad: u16,
}

/// The single configuration entry (`struct tyr_config`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TyrConfig {
    pub nlayers: u32,
    pub flags: u32,
    pub generation: u64,
    pub binaries: TyrDfa,
    pub has_binaries: u8,
    /// Bit `a`: the base layer's table for action `a` has no rules and allows by default.
    pub base_quiet: u8,
    pub _pad: u16,
    /// Different for every table load, never 0 (verdict-cache entries of another are stale).
    pub epoch: u32,
    pub layer_agent: [u8; MAX_LAYERS],
}

impl Default for TyrConfig {
    fn default() -> Self {
        TyrConfig {
            nlayers: 0,
            flags: 0,
            generation: 0,
            binaries: TyrDfa::default(),
            has_binaries: 0,
            base_quiet: 0,
            _pad: 0,
            epoch: 0,
            layer_agent: [0; MAX_LAYERS],
        }
    }
}

/// Agent-executables key: the NUL-padded path (`struct tyr_exe_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TyrExeKey {
    pub path: [u8; EXE_KEY_LEN],
}

/// Ring-buffer record (`struct tyr_event`); parsed field by field in `events`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TyrEvent {
    pub ts_ns: u64,
    pub cgroup_id: u64,
    pub discovered_id: u64,
    pub generation: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub rule: u32,
    pub layer: u32,
    pub open_flags: u32,
    pub path_len: u16,
    pub action: u8,
    pub verdict: u8,
    pub enforced: u8,
    pub agent_type_id: u8,
    pub flags: u8,
    pub op: u8,
    pub target: u32,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub _pad2: [u8; 5],
    pub comm: [u8; 16],
    pub count: u32,
    pub _pad3: u32,
    pub path: [u8; PATH_MAX],
}

/// Key of an allow-suppression window (`struct tyr_akey`): the path identity, the process
/// and its identity, the table epoch and the mode of the open (or exec).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TyrAkey {
    pub mnt: u64,
    pub dentry: u64,
    pub parent: u64,
    pub name_hash_len: u64,
    pub inode: u64,
    pub binary_mask: u64,
    pub tgid: u32,
    pub epoch: u32,
    pub agent: u8,
    pub mode: u8,
    pub interp: u8,
    pub _pad: [u8; 5],
}

/// An allow-suppression window (`struct tyr_aval`): when its event was sent (`ts_ns`) and
/// the allows suppressed since.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TyrAval {
    pub last_ns: u64,
    pub pending: u64,
    /// A jiffies count before which the window is surely open (the kernel's quick check).
    pub open_until_jiffies: u64,
    /// The namespace generation the allow was decided under.
    pub nsgen: u64,
}

const _: () = assert!(size_of::<TyrProc>() == 24);
const _: () = assert!(size_of::<TyrDfa>() == 32);
const _: () = assert!(size_of::<TyrTable>() == 56);
const _: () = assert!(size_of::<TyrAccept>() == 8);
const _: () = assert!(size_of::<TyrRule>() == 40);
const _: () = assert!(size_of::<TyrConfig>() == 120);
const _: () = assert!(size_of::<TyrExeKey>() == 256);
const _: () = assert!(size_of::<TyrPortRange>() == 4);
const _: () = assert!(size_of::<TyrLpmData>() + 4 == 24);
const _: () = assert!(size_of::<TyrLpmVal>() == 8);
const _: () = assert!(size_of::<TyrEvent>() == 4216);
const _: () = assert!(offset_of!(TyrEvent, path) == 120);
const _: () = assert!(size_of::<TyrAkey>() == 64);
const _: () = assert!(size_of::<TyrAval>() == 32);

// SAFETY (all impls below): `aya::Pod` requires a `Copy` type that is valid for any bit
// pattern and has no uninitialised bytes. Each struct is `#[repr(C)]`, made only of integers
// and integer arrays, with explicit padding fields so no implicit padding exists (checked by
// the size assertions above, equal to the C `_Static_assert`s).
unsafe impl aya::Pod for TyrProc {}
unsafe impl aya::Pod for TyrTable {}
unsafe impl aya::Pod for TyrAccept {}
unsafe impl aya::Pod for TyrRule {}
unsafe impl aya::Pod for TyrConfig {}
unsafe impl aya::Pod for TyrExeKey {}
unsafe impl aya::Pod for TyrPortRange {}
unsafe impl aya::Pod for TyrLpmData {}
unsafe impl aya::Pod for TyrLpmVal {}
unsafe impl aya::Pod for TyrAkey {}
unsafe impl aya::Pod for TyrAval {}
