//! Kernel enforcement for `tyrd run`: probes the tier, loads the tracepoint programs
//! (adopting pinned ones), seeds agent identities (installed agent executables, one cgroup
//! per agent type for `tyr run`), compiles every pushed policy for this host and swaps it into
//! the kernel, and turns ring-buffer records into pipeline events.
//!
//! Agent-type ids in the kernel are stable for the daemon's life: the classifier's types in
//! table order, then any other type a policy names. Compiled tables are renumbered to them.

pub mod classifier;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tyr_policy::compile::{KernelTables, Limits, compile};
use tyr_policy::glob::Homes;
use tyr_policy::model::{EffectiveSet, Severity};
use tyr_proto::agent::{self, CapabilityReport};

use crate::config::{Config, TierSetting};
use crate::event::{self, Event};
use crate::kernel::events::{BootClock, EventReader, KernelEvent};
use crate::kernel::probe::{self, Tier};
use crate::kernel::{Enforcement, KernelError, PIN_DIR, Tracepoints, cgroup2_root};
use classifier::{Classifier, homes_from_passwd};

/// Environment variable overriding the pin directory [`PIN_DIR`]; empty: nothing is pinned
/// (programs detach when the daemon exits; tests use this).
pub const PIN_DIR_ENV: &str = "TYRD_BPF_PIN_DIR";
/// Directory under the cgroup v2 root holding one cgroup per agent type (`tyr run`).
pub const AGENTS_CGROUP: &str = "tyr-agents";
/// `policy_version` of the built-in audit base.
pub const AUDIT_VERSION: &str = "builtin-audit";

/// The enforcer, shared by the event loop and the agent-plane stream.
pub type Shared = Arc<Mutex<Enforcer>>;

/// One loaded policy: its tables and what events decided with them are labelled with.
struct Active {
    generation: u64,
    version: String,
    set: EffectiveSet,
    tables: KernelTables,
}

/// The enforcement state of this daemon.
pub struct Enforcer {
    kernel: Option<Enforcement>,
    report: CapabilityReport,
    /// Agent-type names; the one at index `i` has kernel id `i + 1`.
    agent_types: Vec<String>,
    homes: Vec<String>,
    allow_all: bool,
    /// The current policy last; the one before it kept for events still in flight.
    active: Vec<Active>,
    cgroups: Vec<PathBuf>,
    clock: BootClock,
    ring_drops: Option<u64>,
}

impl Enforcer {
    /// Probes and loads the kernel side (unless `use_kernel` is false or the configured tier
    /// is `observe`), seeds identities and loads the last saved policy (or the built-in audit
    /// base). Needs a tokio runtime for the event reader. Never fails for lack of kernel
    /// support: the report then says why the tier is `observe`.
    pub fn start(
        config: &Config,
        use_kernel: bool,
    ) -> Result<(Enforcer, Option<EventReader>), String> {
        let classifier = Classifier::load().map_err(|e| format!("classifier: {e}"))?;
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
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
            homes: homes_from_passwd(&passwd),
            allow_all: config.events.allow == crate::config::AllowEvents::All,
            active: Vec::new(),
            cgroups: Vec::new(),
            clock: BootClock::new().map_err(|e| format!("clock: {e}"))?,
            ring_drops: None,
        };
        let mut reader = None;
        match kernel_wanted(config.tier, use_kernel) {
            Err(why) => report.downgrade_reason = why,
            Ok(want_lsm) => match load_kernel(&mut report, want_lsm) {
                Ok(mut kernel) => {
                    let events = kernel.tracepoints().events();
                    reader = Some(events.map_err(|e| format!("ring buffer: {e}"))?);
                    enforcer.kernel = Some(kernel);
                }
                Err(why) => report.downgrade_reason = why,
            },
        }
        enforcer.report = report;
        if enforcer.kernel.is_some() {
            enforcer.seed_identities(&classifier)?;
        }
        enforcer.load_saved(&config.state_dir);
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
        let root = cgroup2_root().map_err(|e| format!("cgroup v2: {e}"))?;
        for t in &classifier.agent_types {
            let id = self.agent_id(&t.name)?;
            let dir = root.join(AGENTS_CGROUP).join(&t.name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let cgroup_id = std::fs::metadata(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .ino();
            let exes = t.installed(&self.homes);
            let tp = self
                .kernel
                .as_mut()
                .map(Enforcement::tracepoints)
                .ok_or("no kernel programs")?;
            tp.set_cgroup_agent(cgroup_id, id)
                .map_err(|e| format!("cgroup map: {e}"))?;
            self.cgroups.push(dir);
            for exe in exes {
                match tp.set_agent_exe(&exe, id) {
                    Ok(()) => {
                        tracing::info!(agent_type = %t.name, exe = %exe.display(), "agent executable")
                    }
                    Err(e) => tracing::warn!(agent_type = %t.name, "agent executable: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Loads `state_dir/policy.json`, else (or when it no longer compiles) the audit base.
    fn load_saved(&mut self, state_dir: &Path) {
        let saved = std::fs::read_to_string(state_dir.join("policy.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|doc| {
                let version = doc["policy_version"].as_str()?.to_owned();
                let set = serde_json::from_value(doc["effective_set"].clone()).ok()?;
                Some((version, set))
            });
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

    /// Compiles `set` for this host and swaps it into the kernel. On error the previous
    /// tables stay in force.
    pub fn apply(&mut self, version: &str, set: EffectiveSet) -> Result<(), String> {
        let homes = Homes(self.homes.clone());
        let mut tables = compile(&set, &homes, &Limits::default()).map_err(|e| e.to_string())?;
        self.renumber(&mut tables)?;
        let generation = self.active.last().map_or(1, |a| a.generation + 1);
        if let Some(tp) = self.kernel.as_mut().map(Enforcement::tracepoints) {
            let allow_all = self.allow_all;
            tp.load_tables(&tables, generation, allow_all)
                .map_err(|e: KernelError| format!("loading the tables: {e}"))?;
        }
        tracing::info!(%version, generation, enforced = self.kernel.is_some(), "policy loaded");
        self.active.push(Active {
            generation,
            version: version.to_owned(),
            set,
            tables,
        });
        if self.active.len() > 2 {
            self.active.remove(0);
        }
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
    /// policy it was decided with.
    pub fn to_event(&self, k: &KernelEvent) -> Option<Event> {
        let a = self
            .active
            .iter()
            .rev()
            .find(|a| a.generation == k.generation)
            .or(self.active.last())?;
        let mut e = k.to_event(&a.tables, &self.clock);
        e.policy_version = a.version.clone();
        e.severity = severity(a, k.layer, e.rule.as_deref());
        e.process_exe = std::fs::read_link(format!("/proc/{}/exe", k.tgid))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Some(e)
    }

    /// Kernel ring-buffer drops since the last call (0 without a kernel side).
    pub fn ring_drops(&mut self) -> u64 {
        let Some(tp) = self.kernel.as_mut().map(Enforcement::tracepoints) else {
            return 0;
        };
        let Ok(now) = tp.counters().map(|c| c.ringbuf_drops) else {
            return 0;
        };
        let before = self.ring_drops.replace(now).unwrap_or(now);
        now.saturating_sub(before)
    }

    /// Removes the agent-type cgroups that are empty (so `tyr run` says tyrd is not running).
    pub fn shutdown(&mut self) {
        for dir in self.cgroups.drain(..) {
            let _ = std::fs::remove_dir(&dir);
        }
        if let Some(parent) = cgroup2_root().ok().map(|r| r.join(AGENTS_CGROUP)) {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Severity of the deciding rule of layer `layer`.
fn severity(a: &Active, layer: u32, rule: Option<&str>) -> event::Severity {
    let audit;
    let policy = match layer {
        0 => match &a.set.base {
            Some(p) => p,
            None => {
                audit = tyr_policy::eval::builtin_audit();
                &audit
            }
        },
        n => match a.set.overlays.get(n as usize - 1) {
            Some(o) => &o.policy,
            None => return event::Severity::Low,
        },
    };
    let found = rule.and_then(|name| policy.spec.rules.iter().find(|r| r.name == name));
    match found.map(|r| r.severity) {
        Some(Severity::Critical) => event::Severity::Critical,
        Some(Severity::High) => event::Severity::High,
        Some(Severity::Medium) => event::Severity::Medium,
        _ => event::Severity::Low,
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
fn load_kernel(report: &mut CapabilityReport, want_lsm: bool) -> Result<Enforcement, String> {
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
    let pin_dir = match std::env::var_os(PIN_DIR_ENV) {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => Some(PathBuf::from(PIN_DIR)),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_reasons() {
        assert!(kernel_wanted(TierSetting::Auto, false).is_err());
        assert!(kernel_wanted(TierSetting::Observe, true).is_err());
        assert_eq!(kernel_wanted(TierSetting::Tracepoint, true), Ok(false));
        assert_eq!(kernel_wanted(TierSetting::Lsm, true), Ok(true));
        assert_eq!(kernel_wanted(TierSetting::Auto, true), Ok(true));
    }
}
