//! Kernel enforcement for `tyrd run`: probes the tier, loads the tracepoint programs
//! (adopting pinned ones), seeds agent identities (installed agent executables, one cgroup
//! per agent type for `tyr run`), compiles every pushed policy for this host and swaps it into
//! the kernel, and turns ring-buffer records into pipeline events.
//!
//! Process identity: the kernel classifies at exec (executables, cgroups) and inherits at
//! fork; the proc-connector monitor ([`procmon`]) classifies every exec in userspace too
//! (digest, command line, environment markers, credentials) and writes the identity of a
//! process the kernel did not classify into the kernel's process map, so enforcement follows
//! from then on; [`Enforcer::poll`] applies its notices to the discovered agents
//! ([`discovery`]), lineage and the quarantine overlay.
//!
//! Agent-type ids in the kernel are stable for the daemon's life: the classifier's types in
//! table order, the reserved types of `unregistered_agents`, then any other type a policy
//! names. Compiled tables are renumbered to them.

pub mod classifier;
pub mod discovery;
mod identity;
pub mod procfs;
pub mod procmon;
pub mod unregistered;
mod verdicts;

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tyr_policy::compile::{KernelTables, Limits, compile};
use tyr_policy::glob::Homes;
use tyr_policy::model::EffectiveSet;
use tyr_proto::agent::{self, CapabilityReport, DiscoveredAgentUpdate};

use crate::config::{AllowEvents, Config, TierSetting, UnregisteredAgents};
use crate::event::Event;
use crate::kernel::allows::AllowSweep;
use crate::kernel::events::{BootClock, EventReader, KernelEvent, boot_now_ns};
use crate::kernel::probe::{self, Tier};
use crate::kernel::{Enforcement, KernelError, PIN_DIR, Tracepoints, cgroup2_root};
use classifier::{Classifier, homes_from_passwd};
use discovery::Discovery;
use identity::Cached;
use procmon::Notice;
use verdicts::{Active, apply_conditions};

/// Environment variable overriding the pin directory [`PIN_DIR`]; empty: nothing is pinned
/// (programs detach when the daemon exits; tests use this).
pub const PIN_DIR_ENV: &str = "TYRD_BPF_PIN_DIR";

/// Returns the heap the allocator keeps free to the system: loading the kernel side (parsed
/// kernel BTF) and compiling a policy leave megabytes free, which glibc would otherwise keep
/// mapped for the daemon's whole life. Run after each policy load (the first follows the
/// kernel load).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
/// Directory under the cgroup v2 root holding one cgroup per agent type (`tyr run`).
pub const AGENTS_CGROUP: &str = "tyr-agents";
/// Names another directory than [`AGENTS_CGROUP`] (read by `tyr run` too). Tests give each
/// daemon its own, so one daemon's shutdown never removes another's cgroups.
pub const AGENTS_CGROUP_ENV: &str = "TYR_AGENTS_CGROUP";

/// `policy_version` of the built-in audit base.
pub const AUDIT_VERSION: &str = "builtin-audit";

/// The enforcer, shared by the event loop and the agent-plane stream.
pub type Shared = Arc<Mutex<Enforcer>>;

/// The kernel side, shared with the classification monitor (which writes the identity of
/// the processes it classifies straight into the process map).
pub(crate) type Kernel = Arc<Mutex<Enforcement>>;

/// The kernel side, even if a panic poisoned its lock.
pub(crate) fn lock_kernel(k: &Kernel) -> std::sync::MutexGuard<'_, Enforcement> {
    k.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The enforcement state of this daemon.
pub struct Enforcer {
    kernel: Option<Kernel>,
    report: CapabilityReport,
    /// Agent-type names; the one at index `i` has kernel id `i + 1`.
    agent_types: Vec<String>,
    homes: Homes,
    allow_all: bool,
    unregistered: UnregisteredAgents,
    /// The current policy last; the one before it kept for events still in flight.
    active: Vec<Active>,
    cgroups: Vec<PathBuf>,
    /// Directory name of the agent-type cgroups under the cgroup v2 root.
    agents_cgroup: String,
    clock: BootClock,
    /// The kernel counters as of the last tick.
    counters: Option<crate::kernel::Counters>,
    /// Userspace classification notices (none without the proc connector).
    notices: Option<Receiver<Notice>>,
    discovery: Discovery,
    procs: HashMap<u32, Cached>,
    /// Exited processes whose cache entries are still kept, oldest first.
    exited: VecDeque<(u32, Instant)>,
    /// Working directories of quarantined agents (writes allowed there).
    workdirs: Vec<String>,
    /// Allows suppressed in-kernel, reported when their window ends.
    allows: AllowSweep,
    /// The newest policy generation whose events were found without their tables (warned
    /// once per generation, not per event).
    unheld_warned: u64,
}

impl Enforcer {
    /// Probes and loads the kernel side (unless `use_kernel` is false or the configured tier
    /// is `observe`), seeds identities, starts userspace classification (with the kernel
    /// side) and loads the last saved policy (or the built-in audit base). Needs a tokio
    /// runtime for the event reader. Never fails for lack of kernel support: the report then
    /// says why the tier is `observe`.
    pub fn start(
        config: &Config,
        use_kernel: bool,
    ) -> Result<(Enforcer, Option<EventReader>), String> {
        let classifier = Classifier::load().map_err(|e| format!("classifier: {e}"))?;
        let pin_dir = match std::env::var_os(PIN_DIR_ENV) {
            Some(d) if d.is_empty() => None,
            Some(d) => Some(PathBuf::from(d)),
            None => Some(PathBuf::from(PIN_DIR)),
        };
        let agents_cgroup = match std::env::var(AGENTS_CGROUP_ENV) {
            Err(_) => AGENTS_CGROUP.to_owned(),
            Ok(name) => name,
        };
        Enforcer::start_with(config, use_kernel, classifier, pin_dir, &agents_cgroup)
    }

    /// [`Enforcer::start`] with the classification table `classifier`, the pin directory
    /// `pin_dir` (`None`: nothing is pinned) and the agent-type cgroups under
    /// `<cgroup v2 root>/<agents_cgroup>/`.
    pub fn start_with(
        config: &Config,
        use_kernel: bool,
        classifier: Classifier,
        pin_dir: Option<PathBuf>,
        agents_cgroup: &str,
    ) -> Result<(Enforcer, Option<EventReader>), String> {
        if agents_cgroup.is_empty() || agents_cgroup.contains('/') || agents_cgroup.starts_with('.')
        {
            return Err(format!(
                "{AGENTS_CGROUP_ENV}={agents_cgroup:?}: expected one directory name"
            ));
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_else(|e| {
            tracing::error!("/etc/passwd: {e}: `~/` patterns match no home directory");
            String::new()
        });
        let mut report = CapabilityReport {
            kernel_version: crate::enroll::kernel_version(),
            tier: agent::Tier::Observe.into(),
            hooks: Vec::new(),
            features: Vec::new(),
            downgrade_reason: String::new(),
        };
        let mut enforcer = Enforcer {
            kernel: None,
            report: report.clone(),
            agent_types: classifier
                .agent_types
                .iter()
                .map(|t| t.name.clone())
                .collect(),
            homes: Homes(homes_from_passwd(&passwd)),
            allow_all: config.events.allow == AllowEvents::All,
            unregistered: config.unregistered_agents,
            active: Vec::new(),
            cgroups: Vec::new(),
            agents_cgroup: agents_cgroup.to_owned(),
            clock: BootClock::new().map_err(|e| format!("clock: {e}"))?,
            counters: None,
            unheld_warned: 0,
            notices: None,
            discovery: Discovery::new(&config.name),
            procs: HashMap::new(),
            exited: VecDeque::new(),
            workdirs: Vec::new(),
            allows: AllowSweep::default(),
        };
        enforcer.agent_id(unregistered::agent_type(config.unregistered_agents))?;
        let mut reader = None;
        match kernel_wanted(config.tier, use_kernel) {
            Err(why) => report.downgrade_reason = why,
            Ok(want_lsm) => match load_kernel(&mut report, want_lsm, pin_dir) {
                Ok(mut kernel) => {
                    let events = kernel.tracepoints().events();
                    reader = Some(events.map_err(|e| format!("ring buffer: {e}"))?);
                    enforcer.kernel = Some(Arc::new(Mutex::new(kernel)));
                }
                Err(why) => report.downgrade_reason = why,
            },
        }
        enforcer.report = report;
        if enforcer.kernel.is_some() {
            enforcer.seed_identities(&classifier)?;
        }
        enforcer.load_saved(&config.state_dir);
        if use_kernel {
            let writer = enforcer.kernel.clone().map(|kernel| procmon::Writer {
                kernel,
                daemon: config.name.clone(),
                ids: enforcer.writable_ids(&classifier),
                unregistered: (config.unregistered_agents != UnregisteredAgents::Quarantine)
                    .then(|| unregistered::agent_type(config.unregistered_agents).to_owned()),
            });
            match procmon::start(Arc::new(classifier), writer) {
                Ok(rx) => enforcer.notices = Some(rx),
                Err(e) => tracing::warn!("proc connector: {e}; no userspace classification"),
            }
        }
        Ok((enforcer, reader))
    }

    /// The capability report for the server.
    pub fn report(&self) -> CapabilityReport {
        self.report.clone()
    }

    /// The stable kernel id of agent type `name`, numbering it when new.
    fn agent_id(&mut self, name: &str) -> Result<u8, String> {
        let i = match self.agent_types.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.agent_types.push(name.to_owned());
                self.agent_types.len() - 1
            }
        };
        u8::try_from(i + 1)
            .ok()
            .filter(|&id| id <= 63)
            .ok_or_else(|| format!("more than 63 agent types (at {name:?})"))
    }

    fn seed_identities(&mut self, classifier: &Classifier) -> Result<(), String> {
        let root = cgroup2_root()
            .map_err(|e| format!("cgroup v2: {e}"))?
            .join(&self.agents_cgroup);
        for t in &classifier.agent_types {
            let id = self.agent_id(&t.name)?;
            let dir = root.join(&t.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let cgroup_id = std::fs::metadata(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .ino();
            let exes = t.installed(&self.homes.0);
            self.with_tp(|tp| tp.set_cgroup_agent(cgroup_id, id))
                .ok_or("no kernel programs")?
                .map_err(|e| format!("cgroup map: {e}"))?;
            self.cgroups.push(dir);
            for exe in exes {
                match self.with_tp(|tp| tp.set_agent_exe(&exe, id)) {
                    Some(Ok(())) => {
                        tracing::info!(agent_type = %t.name, exe = %exe.display(), "agent executable")
                    }
                    Some(Err(e)) => tracing::warn!(agent_type = %t.name, "agent executable: {e}"),
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Kernel ids of the table's agent types and of the reserved ones (numbered at start, so
    /// fixed for the daemon's life).
    fn writable_ids(&mut self, classifier: &Classifier) -> HashMap<String, u8> {
        let names = classifier.agent_types.iter().map(|t| t.name.as_str());
        names
            .chain(classifier::RESERVED)
            .filter_map(|n| Some((n.to_owned(), self.agent_id(n).ok()?)))
            .collect()
    }

    /// Runs `f` on the tracepoint tier's maps; `None` without a kernel side.
    fn with_tp<R>(&self, f: impl FnOnce(&mut Tracepoints) -> R) -> Option<R> {
        let kernel = self.kernel.as_ref()?;
        Some(f(lock_kernel(kernel).tracepoints()))
    }

    /// Loads `state_dir/policy.json`, else (or when it no longer compiles) the audit base.
    /// A file that exists but cannot be read or parsed is logged as an error: the daemon then
    /// enforces only the audit base until the server pushes again.
    fn load_saved(&mut self, state_dir: &Path) {
        let path = state_dir.join("policy.json");
        let saved = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e.to_string())),
            Ok(text) => Some(saved_policy(&text)),
        };
        let saved = match saved {
            Some(Err(e)) => {
                tracing::error!(path = %path.display(), "saved policy unusable, enforcing the audit base until the next push: {e}");
                None
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        if let Some((version, set)) = saved {
            match self.apply(&version, set) {
                Ok(()) => return,
                Err(e) => tracing::error!(%version, "saved policy not loaded: {e}"),
            }
        }
        if let Err(e) = self.apply(AUDIT_VERSION, EffectiveSet::default()) {
            tracing::error!("the built-in audit base did not load: {e}");
        }
    }

    /// Compiles `set` (with the built-in overlay of `unregistered_agents`) for this host and
    /// swaps it into the kernel. On error the previous tables stay in force.
    pub fn apply(&mut self, version: &str, set: EffectiveSet) -> Result<(), String> {
        let full = unregistered::with_builtin(set.clone(), self.unregistered, &self.workdirs)?;
        let mut tables =
            compile(&full, &self.homes, &Limits::default()).map_err(|e| e.to_string())?;
        self.renumber(&mut tables)?;
        let generation = self.active.last().map_or(1, |a| a.generation + 1);
        let allow_all = self.allow_all;
        self.with_tp(|tp| tp.load_tables(&tables, generation, allow_all))
            .transpose()
            .map_err(|e: KernelError| format!("loading the tables: {e}"))?;
        tracing::info!(%version, generation, enforced = self.kernel.is_some(), "policy loaded");
        self.active
            .push(Active::new(generation, version, set, full, tables));
        if self.active.len() > 2 {
            self.active.remove(0);
        }
        release_free_heap();
        Ok(())
    }

    /// Rewrites the compiler's per-set agent-type ids into this daemon's stable ones.
    fn renumber(&mut self, tables: &mut KernelTables) -> Result<(), String> {
        let mut map = [0u8; 64];
        for (i, name) in tables.agent_types.iter().enumerate() {
            if let Some(slot) = map.get_mut(i + 1) {
                *slot = self.agent_id(name)?;
            }
        }
        let remap_mask = |mask: u64| {
            (1..64)
                .filter(|bit| mask & (1u64 << bit) != 0)
                .fold(0u64, |m, bit| m | 1u64 << map[bit])
        };
        for layer in &mut tables.layers {
            layer.agent_type_id = map[usize::from(layer.agent_type_id) & 63];
            for table in &mut layer.actions {
                for rule in &mut table.rules {
                    rule.agent_mask = remap_mask(rule.agent_mask);
                }
            }
        }
        tables.agent_types = self.agent_types.clone();
        Ok(())
    }

    /// The pipeline event for a kernel record: names, `policy_version` and severity from the
    /// policy it was decided with, the process's executable and command line (cached per
    /// process), its discovered agent, and the verdict of Cedar conditions (SPEC §6).
    pub fn to_event(&mut self, k: &KernelEvent) -> Option<Event> {
        self.allows.note(k);
        self.poll();
        let cached = self.cached(k.tgid, &k.comm);
        let key = Some(k.discovered_id)
            .filter(|&d| d != 0)
            .or_else(|| self.discovery.key_of(k.tgid));
        let decided_by = self
            .active
            .iter()
            .rev()
            .find(|a| a.generation == k.generation);
        // Agent type ids outlive generations (see `renumber`): the newest tables name them.
        let a = decided_by.or(self.active.last())?;
        let mut e = k.to_event(&a.tables, &self.clock);
        if decided_by.is_some() {
            e.policy_version.clone_from(&a.version);
            e.severity = a.severity(k.layer, k.rule);
        } else {
            // Decided with tables replaced twice since (pushes in quick succession): its rule
            // and version cannot be named, and no condition of another policy applies. The
            // verdict stands; the server counts drift of an unnamed version as stale.
            if k.generation > self.unheld_warned {
                self.unheld_warned = k.generation;
                tracing::warn!(
                    generation = k.generation,
                    "events of a policy generation no longer held: reported without rule or version"
                );
            }
            // `generation` (kernel metadata) stays; the layer's policy name came from the
            // newest tables and would name another policy.
            e.rule = None;
            e.metadata.remove("policy");
        }
        e.process_exe = cached.exe;
        e.cmdline = cached.cmdline;
        // The kernel carries the agent's key; the event names its id (none when unknown).
        // `agent_type` stays the one the kernel decided with.
        e.discovered_agent_id = key
            .and_then(|key| self.discovery.agent(key))
            .map(|agent| agent.id.clone());
        if let Some(t) = e.agent_type.as_deref()
            && classifier::RESERVED.contains(&t)
        {
            let mode = match self.unregistered {
                UnregisteredAgents::Audit => "audit",
                UnregisteredAgents::Quarantine => "quarantine",
                UnregisteredAgents::Deny => "deny",
            };
            e.metadata
                .insert("unregistered_agents".to_owned(), mode.to_owned());
        }
        if let Some(a) = decided_by {
            apply_conditions(a, &self.homes, &mut e);
        }
        Some(e)
    }

    /// Discovered agents created or changed (pids, last seen) since the last call.
    pub fn discovered_changes(&mut self) -> Vec<DiscoveredAgentUpdate> {
        self.poll();
        self.discovery.changes()
    }

    /// Every discovered agent with live processes (sent on each new stream).
    pub fn discovered_all(&self) -> Vec<DiscoveredAgentUpdate> {
        self.discovery.all()
    }

    /// Governs the live processes of the discovered agent `discovered_id` as `agent_type`
    /// from now on (an admin's reclassification, e.g. out of quarantine); their children
    /// inherit it at fork. Returns how many processes were moved.
    pub fn reclassify(&mut self, discovered_id: &str, agent_type: &str) -> Result<usize, String> {
        self.poll();
        let known = self.agent_types.iter().any(|t| t == agent_type);
        let type_id = self.agent_id(agent_type)?;
        if !known && let Some(current) = self.active.last() {
            // A new kernel id: the tables must know it before a process carries it.
            let (version, pushed) = (current.version.clone(), current.pushed.clone());
            self.apply(&version, pushed)?;
        }
        let pids = self
            .discovery
            .reclassify(discovered_id, agent_type, identity::unix_ns())
            .ok_or_else(|| format!("no discovered agent {discovered_id}"))?;
        let mut moved = 0;
        for pid in pids {
            let done = self.with_tp(|tp| match tp.process(pid) {
                Ok(Some(mut p)) => {
                    p.agent_type_id = type_id;
                    tp.set_process(pid, p).is_ok()
                }
                _ => false,
            });
            moved += usize::from(done == Some(true));
        }
        Ok(moved)
    }

    /// Which allow events are reported (`events.allow`, or the server's override).
    pub fn events_allow(&self) -> AllowEvents {
        if self.allow_all {
            AllowEvents::All
        } else {
            AllowEvents::Agents
        }
    }

    /// Changes `events.allow` at run time (a server `ConfigUpdate`): the kernel tables are
    /// reloaded with the new flag. On error the previous setting stays in force.
    pub fn set_events_allow(&mut self, allow: AllowEvents) -> Result<(), String> {
        let allow_all = allow == AllowEvents::All;
        if allow_all == self.allow_all {
            return Ok(());
        }
        self.allow_all = allow_all;
        let Some(current) = self.active.last() else {
            return Ok(());
        };
        let (version, pushed) = (current.version.clone(), current.pushed.clone());
        self.apply(&version, pushed)
            .inspect_err(|_| self.allow_all = !allow_all)
    }

    /// Kernel ring-buffer drops since the last call (0 without a kernel side). Also applies
    /// the queued userspace notices ([`Enforcer::poll`]): the event loop calls this on every
    /// tick.
    /// Kernel counters that rose since the last call are logged as warnings.
    pub fn ring_drops(&mut self) -> u64 {
        self.poll();
        let Some(Ok(now)) = self.with_tp(|tp| tp.counters()) else {
            return 0;
        };
        let before = self.counters.replace(now).unwrap_or(now);
        let rose = |what: &str, b: u64, n: u64| {
            if n > b {
                tracing::warn!(
                    counter = what,
                    total = n,
                    new = n - b,
                    "kernel counter rose"
                );
            }
        };
        rose("fork_full", before.fork_full, now.fork_full);
        rose("fail_closed", before.fail_closed, now.fail_closed);
        rose("uwrite_failed", before.uwrite_failed, now.uwrite_failed);
        rose("allow_unqueued", before.allow_unqueued, now.allow_unqueued);
        now.ringbuf_drops.saturating_sub(before.ringbuf_drops)
    }

    /// Kernel ring-buffer drops since the kernel side was loaded, as of the last tick.
    pub fn ring_drops_total(&self) -> u64 {
        self.counters.map_or(0, |c| c.ringbuf_drops)
    }

    /// The allows suppressed in-kernel whose window ended ([`AllowSweep`]), as pipeline
    /// events: the event loop calls this on every tick.
    pub fn swept_allows(&mut self) -> Vec<Event> {
        let Some(kernel) = self.kernel.clone() else {
            return Vec::new();
        };
        let lost = self.allows.lost;
        let swept = boot_now_ns()
            .map_err(KernelError::from)
            .and_then(|now| self.allows.sweep(lock_kernel(&kernel).tracepoints(), now));
        if self.allows.lost > lost {
            tracing::warn!(
                lost = self.allows.lost - lost,
                "suppressed allow events lost"
            );
        }
        match swept {
            Ok(swept) => swept.iter().filter_map(|k| self.to_event(k)).collect(),
            Err(e) => {
                tracing::warn!("allow sweep: {e}");
                Vec::new()
            }
        }
    }

    /// Removes the agent-type cgroups that are empty (so `tyr run` says tyrd is not running).
    pub fn shutdown(&mut self) {
        for dir in self.cgroups.drain(..) {
            let _ = std::fs::remove_dir(&dir);
        }
        if let Ok(root) = cgroup2_root() {
            let _ = std::fs::remove_dir(root.join(&self.agents_cgroup));
        }
    }
}

/// Whether to load the kernel side: `Err(reason)` for observe, else whether to try the LSM
/// programs first (`auto`, `lsm`) or run the tracepoint tier alone (`tracepoint`).
fn kernel_wanted(tier: TierSetting, use_kernel: bool) -> Result<bool, String> {
    if !use_kernel {
        return Err("events are read from a file (--events-from): observe only".into());
    }
    match tier {
        TierSetting::Observe => Err("tier: observe is configured".into()),
        TierSetting::Auto | TierSetting::Lsm => Ok(true),
        TierSetting::Tracepoint => Ok(false),
    }
}

/// Probes, fills `report` and loads the best tier allowed: the LSM programs on top of the
/// tracepoint tier when `want_lsm` and the kernel accepts them (they need pinned maps), else
/// the tracepoint tier alone, with the reason. `Err(reason)` when neither can run.
fn load_kernel(
    report: &mut CapabilityReport,
    want_lsm: bool,
    pin_dir: Option<PathBuf>,
) -> Result<Enforcement, String> {
    let found = probe::probe();
    report.hooks = found
        .hooks
        .iter()
        .map(|h| agent::Hook {
            name: h.hook.clone(),
            loaded: h.loaded,
            reason: h.error.clone().unwrap_or_default(),
        })
        .collect();
    if found.tier == Tier::Observe {
        return Err(found.reasons.join("; "));
    }
    let failed = |e: KernelError| format!("the kernel programs did not load: {e}");
    let (kernel, lsm_reason) = match (&pin_dir, want_lsm) {
        (Some(dir), true) => Enforcement::load_pinned(dir).map_err(failed)?,
        (Some(dir), false) => {
            let tp = Tracepoints::load_pinned(dir).map_err(failed)?;
            let why = "tier: tracepoint is configured".to_owned();
            (Enforcement::Tracepoint(tp), Some(why))
        }
        (None, _) => {
            let tp = Tracepoints::load().map_err(failed)?;
            let why = "the LSM programs need pinned maps (TYRD_BPF_PIN_DIR is empty)".to_owned();
            (Enforcement::Tracepoint(tp), Some(why))
        }
    };
    let tier = kernel.tier();
    tracing::info!(pinned = ?pin_dir, ?tier, reason = ?lsm_reason, "kernel enforcement loaded");
    report.tier = match tier {
        Tier::Lsm => agent::Tier::Lsm,
        _ => agent::Tier::Tracepoint,
    }
    .into();
    report.downgrade_reason = lsm_reason.unwrap_or_default();
    Ok(kernel)
}

/// The `(policy_version, effective_set)` of a saved `policy.json`.
fn saved_policy(text: &str) -> Result<(String, EffectiveSet), String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let version = doc["policy_version"]
        .as_str()
        .ok_or("no policy_version")?
        .to_owned();
    let set = serde_json::from_value(doc["effective_set"].clone())
        .map_err(|e| format!("effective_set: {e}"))?;
    Ok((version, set))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{self, Kind};
    use classifier::Class;
    use procfs::Proc;
    use tyr_policy::model::Action;

    #[test]
    fn observe_reasons() {
        assert!(kernel_wanted(TierSetting::Auto, false).is_err());
        assert!(kernel_wanted(TierSetting::Observe, true).is_err());
        assert_eq!(kernel_wanted(TierSetting::Tracepoint, true), Ok(false));
        assert_eq!(kernel_wanted(TierSetting::Lsm, true), Ok(true));
        assert_eq!(kernel_wanted(TierSetting::Auto, true), Ok(true));
    }

    /// An enforcer without a kernel side, fed notices by the test.
    fn fed(mode: &str) -> (Enforcer, std::sync::mpsc::SyncSender<Notice>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            "server: 127.0.0.1:1\nname: unit\nca_file: /ca.pem\nstate_dir: {}\n\
             unregistered_agents: {mode}\n",
            dir.path().display()
        );
        let config = Config::from_yaml(&yaml, Path::new("tyrd.yaml")).expect("config");
        let table = "agent_types: [{name: claude-code, env: [CLAUDECODE]}]\ncredentials: [OPENAI_API_KEY]\n";
        let classifier = Classifier::parse(table).expect("table");
        let (mut e, reader) =
            Enforcer::start_with(&config, false, classifier, None, AGENTS_CGROUP).expect("start");
        assert!(reader.is_none() && e.kernel.is_none());
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        e.notices = Some(rx);
        (e, tx)
    }

    #[test]
    fn events_allow_changes_at_run_time_and_keeps_the_policy() {
        let (mut e, _tx) = fed("audit");
        assert_eq!(e.events_allow(), AllowEvents::Agents);
        let version = e.active.last().map(|a| a.version.clone());
        e.set_events_allow(AllowEvents::All).expect("set");
        assert_eq!(e.events_allow(), AllowEvents::All);
        assert_eq!(e.active.last().map(|a| a.version.clone()), version);
        e.set_events_allow(AllowEvents::Agents).expect("set back");
        assert_eq!(e.events_allow(), AllowEvents::Agents);
    }

    fn exec(tgid: u32, ppid: u32, exe: &str, class: Option<Class>) -> Notice {
        let proc = Proc {
            tgid,
            ppid,
            uid: 1000,
            exe: exe.into(),
            cmdline: exe.into(),
            cwd: "/srv/work".into(),
        };
        Notice::Exec { proc, class }
    }

    fn claude_env() -> Class {
        Class::Known("claude-code".into(), classifier::Signal::Env)
    }

    #[test]
    fn classified_trees_become_discovered_agents_with_lineage() {
        let (mut e, tx) = fed("audit");
        let claude = Some(claude_env());
        for n in [
            exec(100, 1, "/opt/stand-in", claude),
            Notice::Fork {
                parent: 100,
                child: 101,
            },
            exec(101, 100, "/usr/bin/git", None),
            exec(200, 1, "/usr/bin/ls", None),
            Notice::Fork {
                parent: 200,
                child: 201,
            },
        ] {
            tx.send(n).expect("send");
        }
        let changes = e.discovered_changes();
        assert_eq!(changes.len(), 1, "{changes:?}");
        let agent = &changes[0];
        assert_eq!(agent.agent_type, "claude-code");
        assert_eq!(agent.pids, [100, 101], "the child inherits (lineage)");
        assert_eq!(
            agent.process_signature,
            "claude-code:/opt/stand-in:uid=1000"
        );
        assert_eq!(e.discovered_all().len(), 1);
        tx.send(Notice::Exit(100)).expect("send");
        tx.send(Notice::Exit(101)).expect("send");
        let changes = e.discovered_changes();
        assert!(changes[0].pids.is_empty());
        assert!(e.discovered_all().is_empty());
        // Exited processes stay in the event cache for a grace period.
        assert_eq!(e.cached(101, "git").exe, "/usr/bin/git");
        // Lost notices: processes that are gone leave their agent.
        let dead = u32::MAX - 1;
        tx.send(exec(dead, 1, "/opt/stand-in", Some(claude_env())))
            .expect("send");
        assert_eq!(e.discovered_changes()[0].pids, [dead]);
        tx.send(Notice::Lost).expect("send");
        assert!(e.discovered_changes()[0].pids.is_empty());
    }

    #[test]
    fn conditions_raise_the_recorded_verdict_after_the_fact() {
        let (mut e, _tx) = fed("audit");
        let yaml = "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: base}\nspec:\n  rules:\n\
            \x20   - {name: root-env, action: file_read, resource_pattern: /srv/**, verdict: deny, severity: critical, condition: 'context.uid == 0'}\n\
            \x20   - {name: srv, action: file_read, resource_pattern: /srv/**, verdict: alert}\n";
        let set = EffectiveSet {
            base: Some(tyr_policy::parse(yaml).expect("policy")),
            overlays: Vec::new(),
        };
        e.apply("base@1", set).expect("apply");
        let active = e.active.last().expect("active");
        assert!(active.conditional[Action::FileRead.index()]);
        assert!(!active.conditional[Action::Exec.index()]);
        let kernel_says = |uid: u32| Event {
            kind: Kind::FileRead,
            resource: "/srv/a".into(),
            verdict: event::Verdict::Alert,
            enforced: event::Enforced::None,
            severity: event::Severity::Low,
            policy_version: "base@1".into(),
            rule: Some("srv".into()),
            pid: 5,
            ppid: 1,
            uid,
            process_exe: "/bin/cat".into(),
            cmdline: String::new(),
            agent_type: None,
            discovered_agent_id: None,
            timestamp_ns: 0,
            metadata: Default::default(),
            count: 1,
        };
        let mut ev = kernel_says(0);
        apply_conditions(active, &e.homes, &mut ev);
        assert_eq!(ev.verdict, event::Verdict::Deny, "a recorded deny");
        assert_eq!(ev.enforced, event::Enforced::None, "never blocked");
        assert_eq!(ev.rule.as_deref(), Some("root-env"));
        assert_eq!(ev.severity, event::Severity::Critical);
        assert_eq!(ev.metadata["enforced_in"], "userspace");
        let mut ev = kernel_says(1000);
        apply_conditions(active, &e.homes, &mut ev);
        assert_eq!(ev, kernel_says(1000), "the condition does not hold");
    }

    /// An event of a process that executed another program since its cached entry (its
    /// exec notice not in yet: the quickstart's stand-in agent, killed right after `tyr run`
    /// executed it) never names the previous program: `/proc` is read again, and when the
    /// process is gone the executable is unknown.
    #[test]
    fn an_event_after_an_unseen_exec_does_not_name_the_previous_program() {
        let (mut e, tx) = fed("audit");
        let gone = u32::MAX - 2;
        tx.send(exec(gone, 1, "/usr/bin/tyr", None)).expect("send");
        e.poll();
        assert_eq!(e.cached(gone, "tyr").exe, "/usr/bin/tyr");
        let stale = e.cached(gone, "stand-in-agent");
        assert_eq!((stale.exe.as_str(), stale.cmdline.as_str()), ("", ""));
        // A name cut to 15 bytes and a link's name still match their executable.
        assert_eq!(e.cached(gone, "tyr").exe, "/usr/bin/tyr");
        tx.send(exec(gone, 1, "/usr/bin/python3.11", None))
            .expect("send");
        e.poll();
        assert_eq!(e.cached(gone, "python3").exe, "/usr/bin/python3.11");
        // A live process under an unexpected name is read from /proc again; once read, the
        // entry stands for the program whatever its threads are called.
        let me = std::process::id();
        tx.send(exec(me, 1, "/usr/bin/previous", None))
            .expect("send");
        e.poll();
        let real = std::fs::read_link("/proc/self/exe")
            .expect("exe")
            .display()
            .to_string();
        assert_eq!(e.cached(me, "renamed").exe, real);
        assert!(e.procs[&me].read, "not marked as read from /proc");
        assert_eq!(e.cached(me, "another-thread").exe, real);
        // A fork copies the parent's entry as a notice would: the child may exec unseen.
        let child = u32::MAX - 3;
        tx.send(Notice::Fork { parent: me, child }).expect("send");
        e.poll();
        assert!(!e.procs[&child].read, "a forked entry passes for read");
        assert_eq!(e.cached(child, "cat").exe, "", "the parent's program named");
    }

    /// An event names the rule and version of the generation that decided it; one whose
    /// generation is no longer held names neither (never another policy's rule).
    #[test]
    fn events_of_a_replaced_generation_name_no_rule() {
        let (mut e, _tx) = fed("audit");
        let policy = |name: &str| {
            let yaml = format!(
                "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {{name: base}}\nspec:\n  rules:\n\
                 \x20   - {{name: {name}, action: file_read, resource_pattern: /srv/**, verdict: deny}}\n"
            );
            EffectiveSet {
                base: Some(tyr_policy::parse(&yaml).expect("policy")),
                overlays: Vec::new(),
            }
        };
        e.apply("base@1", policy("first")).expect("apply");
        let first = e.active.last().expect("active").generation;
        let kernel = |generation| KernelEvent {
            boot_ns: 0,
            cgroup_id: 0,
            discovered_id: 0,
            generation,
            pid: 5,
            tgid: 5,
            ppid: 1,
            uid: 0,
            action: Action::FileRead,
            verdict: tyr_policy::model::Verdict::Deny,
            enforced: event::Enforced::Killed,
            layer: 0,
            rule: Some(0),
            agent_type_id: 0,
            fail_closed: false,
            at_entry: false,
            operation: None,
            target: 0,
            open_flags: 0,
            comm: "cat".into(),
            path: Some("/srv/a".into()),
            dest: None,
            count: 1,
            window: false,
        };
        let named = e.to_event(&kernel(first)).expect("event");
        assert!(
            named.metadata.contains_key("policy"),
            "{:?}",
            named.metadata
        );
        assert_eq!(
            (named.rule.as_deref(), named.policy_version.as_str()),
            (Some("first"), "base@1")
        );
        e.apply("base@2", policy("second")).expect("apply");
        e.apply("base@3", policy("third")).expect("apply");
        let gone = e.to_event(&kernel(first)).expect("event");
        assert_eq!(gone.rule, None, "named by another generation's rule");
        assert_eq!(gone.policy_version, "");
        assert_eq!(gone.metadata["generation"], first.to_string());
        assert!(!gone.metadata.contains_key("policy"), "{:?}", gone.metadata);
        assert_eq!(gone.verdict, event::Verdict::Deny);
    }

    #[test]
    fn unregistered_agents_get_the_reserved_type_of_the_mode() {
        for (mode, want, overlays) in [
            ("audit", "unregistered", 0),
            ("quarantine", "quarantine", 1),
            ("deny", "unregistered", 1),
        ] {
            let (mut e, tx) = fed(mode);
            tx.send(exec(300, 1, "/usr/bin/python3", Some(Class::Unregistered)))
                .expect("send");
            let changes = e.discovered_changes();
            assert_eq!(changes[0].agent_type, want, "{mode}");
            let active = e.active.last().expect("active");
            assert_eq!(active.set.overlays.len(), overlays, "{mode}");
            if mode == "quarantine" {
                assert_eq!(e.workdirs, ["/srv/work"]);
                assert_eq!(active.generation, 2, "recompiled for the working dir");
            }
        }
    }

    #[test]
    fn an_admin_reclassifies_a_quarantined_agent() {
        let (mut e, tx) = fed("quarantine");
        tx.send(exec(300, 1, "/usr/bin/python3", Some(Class::Unregistered)))
            .expect("send");
        let id = e.discovered_changes()[0].id.clone();
        assert!(e.reclassify("no-such-agent", "claude-code").is_err());
        // No kernel side here: the identity write is what the root tests cover.
        assert_eq!(e.reclassify(&id, "claude-code"), Ok(0));
        let changes = e.discovered_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].id.as_str(), changes[0].agent_type.as_str()),
            (id.as_str(), "claude-code")
        );
        assert_eq!(changes[0].pids, [300]);
        // A type the daemon never saw gets a kernel id and the tables are rebuilt for it.
        let generation = e.active.last().map(|a| a.generation);
        assert_eq!(e.reclassify(&id, "my-new-agent"), Ok(0));
        assert_eq!(
            e.active.last().map(|a| a.generation),
            generation.map(|g| g + 1)
        );
    }
}
