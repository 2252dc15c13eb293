//! Process notices from the kernel's proc connector (netlink `NETLINK_CONNECTOR`,
//! `CN_IDX_PROC`): every exec, fork and exit on the host, in order. A thread of its own
//! subscribes, reports the processes already running (oldest first; again whenever the
//! kernel dropped notices), then reads notices; at each exec it reads `/proc`, hashes the executable when the table has
//! digests, classifies and writes the identity of a process it classified into the kernel's
//! process map ([`Writer`]) — all outside the enforcer's lock. The enforcer drains the
//! notices ([`super::Enforcer::poll`]) for the rest: discovered agents, lineage, quarantine.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::classifier::{Class, Classifier, Facts};
use super::discovery::{id_of, signature};
use super::identity::write_identity;
use super::procfs::{self, Digests, Proc};
use super::{Kernel, lock_kernel};

/// Notices queued between the monitor thread and the enforcer.
const QUEUE: usize = 16 * 1024;
/// `CN_IDX_PROC` / `CN_VAL_PROC`.
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `PROC_CN_MCAST_LISTEN`.
const MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `sizeof(struct nlmsghdr)`, `sizeof(struct cn_msg)`.
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;
/// `NLMSG_DONE`, the type the connector expects on requests.
const NLMSG_DONE: u16 = 3;

/// One thing that happened to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A process executed a program (or was running when the monitor started).
    Exec { proc: Proc, class: Option<Class> },
    /// `child` was forked by `parent` (process ids, not threads).
    Fork { parent: u32, child: u32 },
    /// The last thread of `tgid` exited.
    Exit(u32),
    /// The kernel dropped notices (the socket buffer overflowed).
    Lost,
}

/// Most processes whose identity the monitor wrote and still follows (forks, exits).
const MAX_WRITTEN: usize = 65_536;

/// Writes the identity of the processes the monitor classifies straight into the kernel's
/// process map, so enforcement does not wait for the enforcer to drain the notices (which
/// does the bookkeeping, and the rest).
pub struct Writer {
    pub kernel: Kernel,
    /// The daemon's name (discovered-agent ids).
    pub daemon: String,
    /// Kernel ids of the agent types written here.
    pub ids: HashMap<String, u8>,
    /// The agent type given to unregistered agents here; `None` when the enforcer must
    /// prepare their policy first (quarantine).
    pub unregistered: Option<String>,
}

/// A [`Writer`] and the processes it wrote.
struct Identities {
    writer: Writer,
    written: HashSet<u32>,
}

impl Identities {
    /// Writes the identity of a process this monitor classified (when the kernel did not).
    fn exec(&mut self, proc: &Proc, class: Option<&Class>) {
        let agent_type = match class {
            Some(Class::Known(t, _)) => Some(t),
            Some(Class::Unregistered) => self.writer.unregistered.as_ref(),
            None => None,
        };
        let Some((t, &id)) = agent_type.and_then(|t| Some((t, self.writer.ids.get(t)?))) else {
            return;
        };
        let (_, key) = id_of(&self.writer.daemon, &signature(t, &proc.exe, proc.uid));
        let mut kernel = lock_kernel(&self.writer.kernel);
        let tp = kernel.tracepoints();
        let classified = tp
            .process(proc.tgid)
            .ok()
            .flatten()
            .is_some_and(|p| p.agent_type_id != 0);
        if !classified {
            write_identity(tp, proc.tgid, id, key);
            if self.written.len() < MAX_WRITTEN {
                self.written.insert(proc.tgid);
            }
        }
    }

    /// A child forked before its parent's identity was written gets the parent's.
    fn fork(&mut self, parent: u32, child: u32) {
        if !self.written.contains(&parent) {
            return;
        }
        let mut kernel = lock_kernel(&self.writer.kernel);
        let tp = kernel.tracepoints();
        let (Ok(Some(p)), Ok(c)) = (tp.process(parent), tp.process(child)) else {
            return;
        };
        if c.is_none_or(|c| c.agent_type_id == 0) {
            write_identity(tp, child, p.agent_type_id, p.discovered_id);
        }
        if self.written.len() < MAX_WRITTEN {
            self.written.insert(child);
        }
    }
}

/// Subscribes to the proc connector and starts the monitor thread; the thread ends when the
/// receiver is dropped. Needs `CAP_NET_ADMIN`.
pub fn start(classifier: Arc<Classifier>, writer: Option<Writer>) -> io::Result<Receiver<Notice>> {
    let socket = subscribe()?;
    let (tx, rx) = sync_channel(QUEUE);
    let mut ids = writer.map(|writer| Identities {
        writer,
        written: HashSet::new(),
    });
    std::thread::Builder::new()
        .name("tyrd-procmon".into())
        .spawn(move || run(&socket, &classifier, ids.as_mut(), &tx))?;
    Ok(rx)
}

/// Reports every running process, oldest first (parents before their children); false when
/// the receiver is gone.
fn scan(
    classifier: &Classifier,
    digests: &mut Digests,
    mut ids: Option<&mut Identities>,
    tx: &SyncSender<Notice>,
) -> bool {
    let mut running: Vec<(u64, u32)> = procfs::pids()
        .into_iter()
        .filter_map(|pid| Some((procfs::start_time(pid)?, pid)))
        .collect();
    running.sort_unstable();
    running
        .into_iter()
        .filter_map(|(_, pid)| exec(pid, classifier, digests, ids.as_deref_mut()))
        .all(|n| tx.send(n).is_ok())
}

fn run(
    socket: &OwnedFd,
    classifier: &Classifier,
    mut ids: Option<&mut Identities>,
    tx: &SyncSender<Notice>,
) {
    let mut digests = Digests::default();
    if !scan(classifier, &mut digests, ids.as_deref_mut(), tx) {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let got = recv(socket, &mut buf);
        let notices = match got {
            Ok(n) => parse(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => vec![Raw::Lost],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("proc connector: {e}; userspace classification stops");
                return;
            }
        };
        for raw in notices {
            let notice = match raw {
                Raw::Exec(tgid) => exec(tgid, classifier, &mut digests, ids.as_deref_mut()),
                Raw::Fork { parent, child } => {
                    if let Some(ids) = ids.as_deref_mut() {
                        ids.fork(parent, child);
                    }
                    Some(Notice::Fork { parent, child })
                }
                Raw::Exit(tgid) => {
                    if let Some(ids) = ids.as_deref_mut() {
                        ids.written.remove(&tgid);
                    }
                    Some(Notice::Exit(tgid))
                }
                Raw::Lost => Some(Notice::Lost),
            };
            if let Some(n) = notice
                && tx.send(n).is_err()
            {
                return;
            }
            // Execs may have been lost: classify every running process again.
            if raw == Raw::Lost && !scan(classifier, &mut digests, ids.as_deref_mut(), tx) {
                return;
            }
        }
    }
}

/// The exec notice of `tgid`: its facts and class (its identity written when `ids`); `None`
/// when it is gone already.
fn exec(
    tgid: u32,
    classifier: &Classifier,
    digests: &mut Digests,
    ids: Option<&mut Identities>,
) -> Option<Notice> {
    let proc = procfs::read(tgid)?;
    let facts = Facts {
        exe: proc.exe.clone(),
        sha256: classifier
            .wants_digests()
            .then(|| digests.of(tgid))
            .flatten(),
        cmdline: proc.cmdline.clone(),
        environ: procfs::environ(tgid),
    };
    let class = classifier.classify(&facts);
    if let Some(ids) = ids {
        ids.exec(&proc, class.as_ref());
    }
    Some(Notice::Exec { proc, class })
}

/// A notice as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    Exec(u32),
    Fork { parent: u32, child: u32 },
    Exit(u32),
    Lost,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Parses the netlink messages of one datagram; threads (pid ≠ tgid) are left out.
fn parse(mut b: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    while let Some(len) = u32_at(b, 0).map(|l| l as usize) {
        if len < NLMSG_HDR || len > b.len() {
            break;
        }
        let msg = &b[NLMSG_HDR..len];
        let ev = CN_MSG;
        let ours = u32_at(msg, 0) == Some(CN_IDX_PROC) && u32_at(msg, 4) == Some(CN_VAL_PROC);
        // struct proc_event: what, cpu, timestamp_ns, then the per-kind data at 16.
        let data = |i: usize| u32_at(msg, ev + 16 + 4 * i);
        let raw = match (ours, u32_at(msg, ev)) {
            (true, Some(PROC_EVENT_EXEC)) => data(1).map(Raw::Exec),
            (true, Some(PROC_EVENT_EXIT)) => match (data(0), data(1)) {
                (Some(pid), Some(tgid)) if pid == tgid => Some(Raw::Exit(tgid)),
                _ => None,
            },
            (true, Some(PROC_EVENT_FORK)) => match (data(1), data(2), data(3)) {
                (Some(parent), Some(pid), Some(child)) if pid == child => {
                    Some(Raw::Fork { parent, child })
                }
                _ => None,
            },
            _ => None,
        };
        out.extend(raw);
        b = b.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}

/// The subscription request: `nlmsghdr` + `cn_msg` + `PROC_CN_MCAST_LISTEN`.
fn listen_request() -> Vec<u8> {
    let total = NLMSG_HDR + CN_MSG + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&std::process::id().to_ne_bytes());
    for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m.extend_from_slice(&4u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&MCAST_LISTEN.to_ne_bytes());
    m
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A proc-connector socket bound to the process-events group, subscribed.
fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `sockaddr_nl` is plain integers; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = CN_IDX_PROC;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `addr` is a valid `sockaddr_nl` of `len` bytes for the whole call.
    check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
    let size: libc::c_int = 8 << 20;
    let size_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `size` is a valid `c_int` for the whole call. A failure keeps the default
    // buffer (overflows are then reported as lost notices).
    let _ = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_len,
        )
    };
    let req = listen_request();
    // SAFETY: `req` is valid for `req.len()` bytes for the whole call.
    check(unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } as i32)?;
    Ok(fd)
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, data: &[u32]) -> Vec<u8> {
        let mut payload = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            payload.extend_from_slice(&v.to_ne_bytes());
        }
        payload.extend_from_slice(&[0u8; 4]);
        payload.extend_from_slice(&what.to_ne_bytes());
        payload.extend_from_slice(&[0u8; 12]);
        for v in data {
            payload.extend_from_slice(&v.to_ne_bytes());
        }
        let len = (NLMSG_HDR + payload.len()) as u32;
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&[0u8; 12]);
        m.extend_from_slice(&payload);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    #[test]
    fn parses_exec_fork_and_exit_and_skips_threads_and_garbage() {
        let mut b = message(PROC_EVENT_EXEC, &[7, 7]);
        b.extend(message(PROC_EVENT_FORK, &[1, 1, 8, 8]));
        b.extend(message(PROC_EVENT_FORK, &[1, 1, 9, 8]));
        b.extend(message(PROC_EVENT_EXIT, &[9, 8, 0, 0, 1, 1]));
        b.extend(message(PROC_EVENT_EXIT, &[8, 8, 0, 0, 1, 1]));
        b.extend(message(0, &[]));
        b.extend_from_slice(&[0xff; 7]);
        assert_eq!(
            parse(&b),
            [
                Raw::Exec(7),
                Raw::Fork {
                    parent: 1,
                    child: 8
                },
                Raw::Exit(8)
            ]
        );
        assert!(parse(&[]).is_empty());
        assert!(parse(&message(PROC_EVENT_EXEC, &[7])[..30]).is_empty());
        assert_eq!(listen_request().len(), 40);
    }
}
