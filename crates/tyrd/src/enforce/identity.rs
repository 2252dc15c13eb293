//! Process identity in the enforcer: the userspace classification notices ([`super::procmon`])
//! applied to the kernel's process map and to the discovered agents, and the per-process
//! cache events are enriched from.

use std::path::Path;
use std::time::{Duration, Instant};

use super::classifier::Class;
use super::procfs::{self, Proc};
use super::procmon::Notice;
use super::{Enforcer, unregistered};
use crate::kernel::Tracepoints;
use crate::kernel::maps::TyrProc;

/// Processes whose executable and command line are cached for events.
const MAX_CACHED: usize = 65_536;
/// Working directories of quarantined agents kept writable.
const MAX_WORKDIRS: usize = 64;
/// How long a process's cache entry outlives it (its last events may still be queued).
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Executable and command line of a process, for its events.
#[derive(Debug, Clone, Default)]
pub(super) struct Cached {
    pub(super) exe: String,
    pub(super) cmdline: String,
    /// Read from `/proc` after the last exec notice (not from a notice): it names the
    /// program the process runs, whatever its threads are called.
    pub(super) read: bool,
    /// When the process exited (the entry is dropped [`EXIT_GRACE`] later).
    exited: Option<Instant>,
}

/// Whether the kernel name `comm` (the executed file's name, cut to 15 bytes) can belong to
/// `exe`. A name that cannot means the process executed something else since the entry was
/// made; a link's name (`python3` for `python3.11`) or a renamed process may also not match.
fn named_by(exe: &str, comm: &str) -> bool {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    !comm.is_empty() && base.starts_with(comm)
}

impl Enforcer {
    /// The cached executable and command line of `tgid`, whose thread's kernel name is
    /// `comm` (from its event). An entry from a notice whose executable `comm` cannot name
    /// may predate an exec whose notice has not arrived yet (a process killed right after its
    /// exec is gone before the monitor reads it): `/proc` is read then (once per notice), and
    /// when the process is gone the executable is reported unknown (empty), never the
    /// previous one's.
    pub(super) fn cached(&mut self, tgid: u32, comm: &str) -> Cached {
        let old = self.procs.get(&tgid);
        if let Some(c) = old
            && (c.read || named_by(&c.exe, comm))
        {
            return c.clone();
        }
        let exited = old.and_then(|c| c.exited);
        let c = Cached {
            exe: std::fs::read_link(format!("/proc/{tgid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            cmdline: procfs::cmdline(tgid),
            read: true,
            exited,
        };
        if c.exe.is_empty() {
            return Cached::default();
        }
        if self.procs.len() < MAX_CACHED || self.procs.contains_key(&tgid) {
            self.procs.insert(tgid, c.clone());
        }
        c
    }

    /// Applies the queued userspace notices: classification of new processes (written into
    /// the kernel's process map), discovered agents' pids, the per-process cache. Called by
    /// [`Enforcer::to_event`], [`Enforcer::ring_drops`] (every pipeline tick) and
    /// [`Enforcer::discovered_changes`].
    pub fn poll(&mut self) {
        let Some(rx) = self.notices.take() else {
            return;
        };
        let now = unix_ns();
        let instant = Instant::now();
        while let Some(&(tgid, at)) = self.exited.front()
            && instant.duration_since(at) >= EXIT_GRACE
        {
            self.exited.pop_front();
            if self.procs.get(&tgid).is_some_and(|c| c.exited == Some(at)) {
                self.procs.remove(&tgid);
            }
        }
        let mut lost = false;
        while let Ok(notice) = rx.try_recv() {
            match notice {
                Notice::Exec { proc, class } => self.on_exec(proc, class, now),
                Notice::Fork { parent, child } => self.on_fork(parent, child, now),
                Notice::Exit(tgid) => {
                    self.discovery.exit(tgid, now);
                    if let Some(c) = self.procs.get_mut(&tgid) {
                        c.exited = Some(instant);
                        self.exited.push_back((tgid, instant));
                    }
                }
                Notice::Lost => lost = true,
            }
        }
        self.notices = Some(rx);
        if lost {
            tracing::warn!("proc connector overflowed: notices lost; checking live pids");
            self.forget_dead(now);
        }
    }

    fn on_exec(&mut self, p: Proc, class: Option<Class>, now: u64) {
        if self.procs.len() < MAX_CACHED || self.procs.contains_key(&p.tgid) {
            let cached = Cached {
                exe: p.exe.clone(),
                cmdline: p.cmdline.clone(),
                read: false,
                exited: None,
            };
            self.procs.insert(p.tgid, cached);
        }
        let kernel_type = self
            .kernel_proc(p.tgid)
            .and_then(|k| {
                self.agent_types
                    .get(usize::from(k.agent_type_id).checked_sub(1)?)
            })
            .cloned();
        // Lineage: the agent of the process itself (an exec inside an agent tree) or of its
        // parent (classified after the fork, or no kernel side).
        let lineage = self
            .discovery
            .key_of(p.tgid)
            .or_else(|| self.discovery.key_of(p.ppid))
            .and_then(|k| Some((k, self.discovery.agent(k)?.agent_type.clone())));
        let (agent_type, inherited) = match (kernel_type, lineage, class) {
            (Some(t), Some((k, lt)), _) if t == lt => (t, Some(k)),
            (Some(t), _, _) => (t, None),
            (None, Some((k, lt)), _) => (lt, Some(k)),
            (None, None, Some(Class::Known(t, signal))) => {
                tracing::info!(pid = p.tgid, agent_type = %t, signal = signal.name(), exe = %p.exe, "classified in userspace");
                (t, None)
            }
            (None, None, Some(Class::Unregistered)) => {
                let t = unregistered::agent_type(self.unregistered).to_owned();
                tracing::warn!(pid = p.tgid, exe = %p.exe, mode = ?self.unregistered, "unregistered agent");
                (t, None)
            }
            (None, None, None) => return,
        };
        let key = match inherited {
            Some(k) => {
                self.discovery.join(p.tgid, k, now);
                k
            }
            None => self.discovery.root(p.tgid, &agent_type, &p.exe, p.uid, now),
        };
        // The working directory is writable before the quarantine applies.
        if agent_type == unregistered::QUARANTINE && inherited.is_none() {
            self.quarantine_workdir(&p.cwd);
        }
        self.set_identity(p.tgid, &agent_type, key);
    }

    /// Drops the processes that are gone (their exit notices may have been lost).
    fn forget_dead(&mut self, now: u64) {
        let alive = |pid: &u32| Path::new(&format!("/proc/{pid}")).exists();
        for pid in self.discovery.live_pids() {
            if !alive(&pid) {
                self.discovery.exit(pid, now);
            }
        }
        self.procs.retain(|pid, _| alive(pid));
    }

    fn on_fork(&mut self, parent: u32, child: u32, now: u64) {
        if let Some(c) = self.procs.get(&parent).cloned()
            && self.procs.len() < MAX_CACHED
        {
            self.procs.insert(
                child,
                Cached {
                    exited: None,
                    read: false,
                    ..c
                },
            );
        }
        let Some(key) = self.discovery.key_of(parent) else {
            return;
        };
        let Some(agent_type) = self.discovery.agent(key).map(|a| a.agent_type.clone()) else {
            return;
        };
        self.discovery.join(child, key, now);
        self.set_identity(child, &agent_type, key);
    }

    /// The kernel's process-map entry of `tgid`.
    fn kernel_proc(&self, tgid: u32) -> Option<TyrProc> {
        self.with_tp(|tp| tp.process(tgid).ok().flatten()).flatten()
    }

    /// Writes `tgid`'s identity into the kernel's process map: its discovered agent, and its
    /// agent type unless the kernel already classified it.
    fn set_identity(&mut self, tgid: u32, agent_type: &str, key: u64) {
        let Ok(id) = self.agent_id(agent_type) else {
            return;
        };
        self.with_tp(|tp| write_identity(tp, tgid, id, key));
    }

    /// Allows writes under a quarantined agent's working directory (see
    /// [`unregistered::workdir_allowed`]) by recompiling the built-in overlay; at most
    /// [`MAX_WORKDIRS`] are kept, and one that does not compile is dropped.
    fn quarantine_workdir(&mut self, cwd: &str) {
        let known = self.workdirs.iter().any(|d| d == cwd);
        if known
            || self.workdirs.len() >= MAX_WORKDIRS
            || !unregistered::workdir_allowed(cwd, &self.homes.0)
        {
            return;
        }
        self.workdirs.push(cwd.to_owned());
        let Some((version, pushed)) = self
            .active
            .last()
            .map(|a| (a.version.clone(), a.pushed.clone()))
        else {
            return;
        };
        if let Err(e) = self.apply(&version, pushed) {
            tracing::error!(workdir = cwd, "quarantine overlay not updated: {e}");
            self.workdirs.pop();
        }
    }
}

pub(super) fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes into the kernel's process map that `tgid` belongs to the discovered agent `key`,
/// with agent type `id` unless the kernel already gave it one.
pub(super) fn write_identity(tp: &mut Tracepoints, tgid: u32, id: u8, key: u64) {
    let current = tp.process(tgid).ok().flatten().unwrap_or_default();
    let mut next = current;
    if next.agent_type_id == 0 {
        next.agent_type_id = id;
    }
    next.discovered_id = key;
    if next == current {
        return;
    }
    if let Err(e) = tp.set_process(tgid, next) {
        tracing::warn!(pid = tgid, "process map: {e}");
        return;
    }
    // The exit hook may have run before the write: do not leave a stale entry.
    if !Path::new(&format!("/proc/{tgid}")).exists() {
        let _ = tp.remove_process(tgid);
    }
}
