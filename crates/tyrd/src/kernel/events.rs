//! The kernel ring buffer: typed events read through tokio's `AsyncFd`.

use std::collections::BTreeMap;
use std::io;
use std::mem::offset_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tyr_policy::compile::{KernelTables, verdict_of};
use tyr_policy::model::{Action, Verdict};

use super::maps::{
    EVENT_AT_ENTRY, EVENT_FAIL_CLOSED, EVENT_IO_URING, EVENT_LINK, EVENT_NO_PATH, EVENT_RENAME,
    EVENT_TARGET, EVENT_WINDOW, NO_RULE, OP_PROC_FILE, OP_PTRACE, OP_VM_READ, OP_VM_WRITE,
    PATH_MAX, TyrEvent,
};
use crate::event::{self, Enforced, Event, Kind};

/// One decision reported by a BPF program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    pub discovered_id: u64,
    /// Table generation the decision was taken with.
    pub generation: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id.
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub action: Action,
    pub verdict: Verdict,
    pub enforced: Enforced,
    /// Layer index into `KernelTables::layers`.
    pub layer: u32,
    /// Rule index into that layer's `rule_names`; `None` when a default decided.
    pub rule: Option<u32>,
    pub agent_type_id: u8,
    /// The walk could not complete (path too long, map full, inconsistent tables): denied.
    pub fail_closed: bool,
    /// Decided at syscall entry on the path string the process passed (see `SECURITY.md`).
    pub at_entry: bool,
    /// What the event is about when it is not a plain open, exec or connect.
    pub operation: Option<Operation>,
    /// The other process of a `ptrace` or `process_vm_*` operation (its pid), else 0.
    pub target: u32,
    /// `f_flags` of the opened file (0 for exec).
    pub open_flags: u32,
    pub comm: String,
    /// Canonical path; `None` when the kernel could not resolve it (or for `net_connect`).
    pub path: Option<String>,
    /// Destination of a `net_connect` (IPv4-mapped IPv6 is reported as IPv4).
    pub dest: Option<SocketAddr>,
    /// The decisions this event stands for: 1, plus identical allows suppressed in-kernel
    /// before it (or, for an event of the sweep, the allows suppressed in a window).
    pub count: u32,
    /// An allow event that opened a suppression window (see [`super::allows`]).
    pub window: bool,
}

/// File operations other than opens that the kernel decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The source of a hard link.
    Link,
    /// The new name of a hard link.
    LinkTarget,
    /// The source of a rename.
    Rename,
    /// The destination of a rename.
    RenameTarget,
    /// `io_uring_setup`/`io_uring_enter` by a governed process (always denied).
    IoUring,
    /// `ptrace` attach (`PTRACE_ATTACH`, `PTRACE_SEIZE`) of another process.
    Ptrace,
    /// `process_vm_readv` of another process's memory.
    ProcessVmRead,
    /// `process_vm_writev` into another process's memory.
    ProcessVmWrite,
    /// An open of another process's `/proc/PID/mem` or `/proc/PID/environ`.
    ProcFile,
}

impl Operation {
    fn from_flags(flags: u8, op: u8) -> Option<Self> {
        let target = flags & EVENT_TARGET != 0;
        match op {
            OP_PTRACE => return Some(Self::Ptrace),
            OP_VM_READ => return Some(Self::ProcessVmRead),
            OP_VM_WRITE => return Some(Self::ProcessVmWrite),
            OP_PROC_FILE => return Some(Self::ProcFile),
            _ => {}
        }
        if flags & EVENT_IO_URING != 0 {
            Some(Operation::IoUring)
        } else if flags & EVENT_LINK != 0 {
            Some(if target { Self::LinkTarget } else { Self::Link })
        } else if flags & EVENT_RENAME != 0 {
            Some(if target {
                Self::RenameTarget
            } else {
                Self::Rename
            })
        } else {
            None
        }
    }

    /// The `operation` metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Link => "link",
            Operation::LinkTarget => "link_target",
            Operation::Rename => "rename",
            Operation::RenameTarget => "rename_target",
            Operation::IoUring => "io_uring",
            Operation::Ptrace => "ptrace",
            Operation::ProcessVmRead => "process_vm_readv",
            Operation::ProcessVmWrite => "process_vm_writev",
            Operation::ProcFile => "proc_file",
        }
    }
}

/// Why a ring-buffer record was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed kernel event: {0}")]
pub struct EventError(&'static str);

fn bytes<const N: usize>(rec: &[u8], off: usize) -> Result<[u8; N], EventError> {
    rec.get(off..off + N)
        .and_then(|b| b.try_into().ok())
        .ok_or(EventError("short record"))
}

fn u64_at(rec: &[u8], off: usize) -> Result<u64, EventError> {
    bytes(rec, off).map(u64::from_ne_bytes)
}

fn u32_at(rec: &[u8], off: usize) -> Result<u32, EventError> {
    bytes(rec, off).map(u32::from_ne_bytes)
}

fn u8_at(rec: &[u8], off: usize) -> Result<u8, EventError> {
    bytes::<1>(rec, off).map(|b| b[0])
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl KernelEvent {
    /// Parses one `struct tyr_event` record (the header and `path_len` bytes of path).
    pub fn parse(rec: &[u8]) -> Result<Self, EventError> {
        if rec.len() < offset_of!(TyrEvent, path) {
            return Err(EventError("short record"));
        }
        let action = match u8_at(rec, offset_of!(TyrEvent, action))? {
            0 => Action::FileRead,
            1 => Action::FileWrite,
            2 => Action::Exec,
            3 => Action::NetConnect,
            4 => Action::TlsConnect,
            _ => return Err(EventError("unknown action")),
        };
        let enforced = match u8_at(rec, offset_of!(TyrEvent, enforced))? {
            0 => Enforced::None,
            1 => Enforced::Blocked,
            2 => Enforced::Killed,
            _ => return Err(EventError("unknown enforcement")),
        };
        let flags = u8_at(rec, offset_of!(TyrEvent, flags))?;
        let path_len = bytes::<2>(rec, offset_of!(TyrEvent, path_len)).map(u16::from_ne_bytes)?;
        let path = match flags & EVENT_NO_PATH {
            0 => {
                let start = offset_of!(TyrEvent, path);
                let len = usize::from(path_len).min(PATH_MAX);
                let raw = rec
                    .get(start..start + len)
                    .ok_or(EventError("short path"))?;
                Some(String::from_utf8_lossy(raw).into_owned())
            }
            _ => None,
        };
        let comm_at = offset_of!(TyrEvent, comm);
        let addr = bytes::<16>(rec, offset_of!(TyrEvent, addr))?;
        let port = bytes::<2>(rec, offset_of!(TyrEvent, port)).map(u16::from_ne_bytes)?;
        let dest = match (action, u8_at(rec, offset_of!(TyrEvent, family))?) {
            (Action::NetConnect, 4) => {
                let v4 = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                Some(SocketAddr::new(v4.into(), port))
            }
            (Action::NetConnect, 6) => Some(SocketAddr::new(Ipv6Addr::from(addr).into(), port)),
            _ => None,
        };
        let rule = u32_at(rec, offset_of!(TyrEvent, rule))?;
        Ok(KernelEvent {
            boot_ns: u64_at(rec, offset_of!(TyrEvent, ts_ns))?,
            cgroup_id: u64_at(rec, offset_of!(TyrEvent, cgroup_id))?,
            discovered_id: u64_at(rec, offset_of!(TyrEvent, discovered_id))?,
            generation: u64_at(rec, offset_of!(TyrEvent, generation))?,
            pid: u32_at(rec, offset_of!(TyrEvent, pid))?,
            tgid: u32_at(rec, offset_of!(TyrEvent, tgid))?,
            ppid: u32_at(rec, offset_of!(TyrEvent, ppid))?,
            uid: u32_at(rec, offset_of!(TyrEvent, uid))?,
            action,
            verdict: verdict_of(u8_at(rec, offset_of!(TyrEvent, verdict))?),
            enforced,
            layer: u32_at(rec, offset_of!(TyrEvent, layer))?,
            rule: (rule != NO_RULE).then_some(rule),
            agent_type_id: u8_at(rec, offset_of!(TyrEvent, agent_type_id))?,
            fail_closed: flags & EVENT_FAIL_CLOSED != 0,
            at_entry: flags & EVENT_AT_ENTRY != 0,
            operation: Operation::from_flags(flags, u8_at(rec, offset_of!(TyrEvent, op))?),
            target: u32_at(rec, offset_of!(TyrEvent, target))?,
            open_flags: u32_at(rec, offset_of!(TyrEvent, open_flags))?,
            comm: cstr(&bytes::<16>(rec, comm_at)?),
            path,
            dest,
            count: u32_at(rec, offset_of!(TyrEvent, count))?.max(1),
            window: flags & EVENT_WINDOW != 0,
        })
    }
}

impl KernelEvent {
    /// The daemon event (SPEC §9) for this record: names from `tables`, the wall-clock time
    /// from `clock`. `process_exe`, `cmdline`, `severity` and `policy_version` are left to
    /// enrichment; `metadata` carries `comm`, `policy` (the deciding layer), `generation`,
    /// `cgroup_id`, `open_flags`, `fail_closed`, `at_entry` and `operation` (`link`,
    /// `link_target`, `rename`, `rename_target`, `io_uring`, `ptrace`, `process_vm_readv`,
    /// `process_vm_writev`, `proc_file`). An io_uring deny is a `FILE_READ` of the resource `io_uring`: a
    /// governed process may not use the interface whose opens the kernel hooks cannot see. An
    /// access to another process is a `FILE_WRITE` (`FILE_READ` for `process_vm_readv`) of the
    /// resource `pid:N`.
    pub fn to_event(&self, tables: &KernelTables, clock: &BootClock) -> Event {
        let kind = match self.action {
            Action::FileRead => Kind::FileRead,
            Action::FileWrite => Kind::FileWrite,
            Action::Exec => Kind::Exec,
            Action::NetConnect => Kind::NetConnect,
            Action::TlsConnect => Kind::Tls,
        };
        let verdict = match self.verdict {
            Verdict::Allow => event::Verdict::Allow,
            Verdict::Alert => event::Verdict::Alert,
            Verdict::Deny => event::Verdict::Deny,
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("comm".to_owned(), self.comm.clone());
        if let Some(layer) = tables.layers.get(self.layer as usize) {
            metadata.insert("policy".to_owned(), layer.policy.clone());
        }
        metadata.insert("generation".to_owned(), self.generation.to_string());
        metadata.insert("cgroup_id".to_owned(), self.cgroup_id.to_string());
        if matches!(self.action, Action::FileRead | Action::FileWrite) {
            metadata.insert("open_flags".to_owned(), format!("{:#o}", self.open_flags));
        }
        if self.fail_closed {
            metadata.insert("fail_closed".to_owned(), "true".to_owned());
        }
        if self.at_entry {
            metadata.insert("at_entry".to_owned(), "true".to_owned());
        }
        if let Some(op) = self.operation {
            metadata.insert("operation".to_owned(), op.as_str().to_owned());
        }
        Event {
            kind,
            resource: match (&self.path, self.dest) {
                (Some(path), _) => path.clone(),
                (None, _) if self.operation == Some(Operation::IoUring) => "io_uring".to_owned(),
                (None, _) if self.target != 0 => format!("pid:{}", self.target),
                (None, Some(dest)) => dest.to_string(),
                (None, None) => String::new(),
            },
            verdict,
            enforced: self.enforced,
            severity: Default::default(),
            policy_version: String::new(),
            rule: self
                .rule
                .and_then(|r| tables.rule_name(self.layer, r))
                .map(str::to_owned),
            pid: self.tgid,
            ppid: self.ppid,
            uid: self.uid,
            process_exe: String::new(),
            cmdline: String::new(),
            agent_type: usize::from(self.agent_type_id)
                .checked_sub(1)
                .and_then(|i| tables.agent_types.get(i))
                .cloned(),
            discovered_agent_id: (self.discovered_id != 0).then(|| self.discovered_id.to_string()),
            timestamp_ns: clock.unix_ns(self.boot_ns),
            metadata,
            count: u64::from(self.count.max(1)),
        }
    }
}

/// Converts the kernel's event clock (`CLOCK_BOOTTIME`) to Unix time, with the offset taken
/// from `/proc/uptime` (10 ms resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootClock {
    offset_ns: u64,
}

impl BootClock {
    /// Measures the offset now.
    pub fn new() -> io::Result<Self> {
        let uptime = std::fs::read_to_string("/proc/uptime")?;
        let secs: f64 = uptime
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("unreadable /proc/uptime"))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(io::Error::other)?;
        let boot_ns = (secs * 1e9) as u64;
        Ok(BootClock {
            offset_ns: (now.as_nanos() as u64).saturating_sub(boot_ns),
        })
    }

    /// Unix nanoseconds of `boot_ns`.
    pub fn unix_ns(&self, boot_ns: u64) -> u64 {
        self.offset_ns.saturating_add(boot_ns)
    }
}

/// `CLOCK_BOOTTIME` now, in nanoseconds (the clock of [`KernelEvent::boot_ns`]).
pub fn boot_now_ns() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// How often [`EventReader::next`] reads the ring without a wake-up.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Reads typed events from the `tyr_events` ring buffer.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    /// Registers the ring buffer with the current tokio runtime (an error outside one).
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("the event reader needs a tokio runtime"));
        }
        // SAFETY: the ring buffer owns its map's file descriptor, which stays open and is never
        // replaced while the `RingBuf` lives, i.e. for the whole life of the `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(EventReader { fd })
    }

    /// The next event, waiting for one; malformed records are skipped and counted by the
    /// caller through the error. Allow events do not wake the reader up (see `event_send` in
    /// `bpf/tyr.bpf.c`): the ring is also read every [`POLL`].
    pub async fn next(&mut self) -> io::Result<Result<KernelEvent, EventError>> {
        loop {
            if let Some(item) = self.fd.get_mut().next() {
                return Ok(KernelEvent::parse(&item));
            }
            let Ok(guard) = tokio::time::timeout(POLL, self.fd.readable_mut()).await else {
                continue;
            };
            let mut guard = guard?;
            if let Some(item) = guard.get_inner_mut().next() {
                return Ok(KernelEvent::parse(&item));
            }
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record_and_rejects_short_ones() {
        let mut rec = vec![0u8; std::mem::size_of::<TyrEvent>()];
        rec[offset_of!(TyrEvent, tgid)..][..4].copy_from_slice(&42u32.to_ne_bytes());
        rec[offset_of!(TyrEvent, rule)..][..4].copy_from_slice(&NO_RULE.to_ne_bytes());
        rec[offset_of!(TyrEvent, action)] = 2;
        rec[offset_of!(TyrEvent, verdict)] = 2;
        rec[offset_of!(TyrEvent, enforced)] = 2;
        rec[offset_of!(TyrEvent, path_len)..][..2].copy_from_slice(&4u16.to_ne_bytes());
        rec[offset_of!(TyrEvent, path)..][..4].copy_from_slice(b"/bin");
        rec[offset_of!(TyrEvent, comm)..][..3].copy_from_slice(b"cat");
        let ev = KernelEvent::parse(&rec).expect("parse");
        assert_eq!(ev.tgid, 42);
        assert_eq!(ev.action, Action::Exec);
        assert_eq!(ev.verdict, Verdict::Deny);
        assert_eq!(ev.enforced, Enforced::Killed);
        assert_eq!(ev.rule, None);
        assert_eq!(ev.path.as_deref(), Some("/bin"));
        assert_eq!(ev.comm, "cat");
        let header = offset_of!(TyrEvent, path);
        assert_eq!(
            KernelEvent::parse(&rec[..header + 4])
                .expect("cut record")
                .path
                .as_deref(),
            Some("/bin")
        );
        assert!(
            KernelEvent::parse(&rec[..header + 3]).is_err(),
            "path cut short"
        );
        assert!(
            KernelEvent::parse(&rec[..header - 1]).is_err(),
            "header cut short"
        );
        assert_eq!((ev.operation, ev.at_entry), (None, false));
    }

    #[test]
    fn operation_flags_name_links_renames_and_io_uring() {
        let cases = [
            (EVENT_AT_ENTRY | EVENT_LINK, Some(Operation::Link)),
            (EVENT_LINK | EVENT_TARGET, Some(Operation::LinkTarget)),
            (EVENT_RENAME, Some(Operation::Rename)),
            (EVENT_RENAME | EVENT_TARGET, Some(Operation::RenameTarget)),
            (EVENT_IO_URING | EVENT_NO_PATH, Some(Operation::IoUring)),
            (EVENT_AT_ENTRY, None),
        ];
        for (flags, op) in cases {
            assert_eq!(Operation::from_flags(flags, 0), op, "{flags:#x}");
        }
        for (op, want) in [
            (OP_PTRACE, Operation::Ptrace),
            (OP_VM_READ, Operation::ProcessVmRead),
            (OP_VM_WRITE, Operation::ProcessVmWrite),
            (OP_PROC_FILE, Operation::ProcFile),
        ] {
            assert_eq!(Operation::from_flags(EVENT_NO_PATH, op), Some(want));
        }
        assert_eq!(Operation::RenameTarget.as_str(), "rename_target");
    }
}
