//! What the enforcer labels kernel events with: the loaded policies (severity per rule,
//! precomputed) and Cedar conditions evaluated after the fact (SPEC §6).

use tyr_policy::compile::KernelTables;
use tyr_policy::glob::Homes;
use tyr_policy::model::{Action, EffectiveSet, EnforcedIn, Layer, Policy, Severity};
use tyr_policy::request::{Context, Request};

use crate::event::{self, Event, Kind};

/// One loaded policy: its tables and what events decided with them are labelled with.
pub(super) struct Active {
    pub(super) generation: u64,
    pub(super) version: String,
    /// The pushed set, as pushed (re-applied when the built-in overlay changes).
    pub(super) pushed: EffectiveSet,
    /// The compiled set: the pushed one plus the built-in overlay of `unregistered_agents`.
    pub(super) set: EffectiveSet,
    pub(super) tables: KernelTables,
    /// Severity of each rule, per layer, by the kernel's rule index.
    pub(super) severities: Vec<Vec<event::Severity>>,
    /// Per action (`Action::index`): whether a rule of any layer has a Cedar condition.
    pub(super) conditional: [bool; 5],
}

impl Active {
    pub(super) fn new(
        generation: u64,
        version: &str,
        pushed: EffectiveSet,
        set: EffectiveSet,
        tables: KernelTables,
    ) -> Active {
        let severities = tables
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let policy = layer_policy(&set, i);
                layer
                    .rule_names
                    .iter()
                    .map(|name| rule_severity(policy, name))
                    .collect()
            })
            .collect();
        let mut conditional = [false; 5];
        let policies = set
            .base
            .iter()
            .chain(set.overlays.iter().map(|o| &o.policy));
        for rule in policies.flat_map(|p| &p.spec.rules) {
            if rule.condition.is_some() {
                conditional[rule.action.index()] = true;
            }
        }
        Active {
            generation,
            version: version.to_owned(),
            pushed,
            set,
            tables,
            severities,
            conditional,
        }
    }

    pub(super) fn severity(&self, layer: u32, rule: Option<u32>) -> event::Severity {
        let found = rule.and_then(|r| self.severities.get(layer as usize)?.get(r as usize));
        found.copied().unwrap_or_default()
    }
}

/// The policy of layer `i` of `set` (0 = the base, the built-in audit base when unset).
pub(super) fn layer_policy(set: &EffectiveSet, i: usize) -> Option<&Policy> {
    match i {
        0 => Some(set.base.as_ref().unwrap_or(&BUILTIN_AUDIT)),
        n => set.overlays.get(n - 1).map(|o| &o.policy),
    }
}

static BUILTIN_AUDIT: std::sync::LazyLock<Policy> =
    std::sync::LazyLock::new(tyr_policy::eval::builtin_audit);

fn rule_severity(policy: Option<&Policy>, name: &str) -> event::Severity {
    let rule = policy.and_then(|p| p.spec.rules.iter().find(|r| r.name == name));
    match rule.map(|r| r.severity) {
        Some(Severity::Critical) => event::Severity::Critical,
        Some(Severity::High) => event::Severity::High,
        Some(Severity::Medium) => event::Severity::Medium,
        _ => event::Severity::Low,
    }
}

fn rank(v: event::Verdict) -> u8 {
    match v {
        event::Verdict::Allow => 0,
        event::Verdict::Alert => 1,
        event::Verdict::Deny => 2,
    }
}

/// Cedar conditions after the fact (SPEC §6): when the effective set has a conditional rule
/// for the event's action, `tyr_policy` re-decides the request with the event's context; a
/// userspace decision stricter than the kernel's becomes the recorded verdict (an `alert`, or
/// a recorded `deny` that blocked nothing) with its rule, marked `enforced_in: userspace`.
pub(super) fn apply_conditions(a: &Active, homes: &Homes, e: &mut Event) {
    let action = match e.kind {
        Kind::FileRead => Action::FileRead,
        Kind::FileWrite => Action::FileWrite,
        Kind::Exec => Action::Exec,
        Kind::NetConnect => Action::NetConnect,
        Kind::Tls => Action::TlsConnect,
    };
    if !a.conditional[action.index()] {
        return;
    }
    let Ok(mut req) = Request::new(action, &e.resource) else {
        return;
    };
    req.binary = Some(e.process_exe.clone()).filter(|b| !b.is_empty());
    req.agent_type = e.agent_type.clone();
    req.context = Context {
        uid: Some(e.uid),
        pid: Some(e.pid),
    };
    let d = tyr_policy::eval::evaluate(&a.set, &req, homes);
    let verdict = match d.verdict {
        tyr_policy::model::Verdict::Allow => event::Verdict::Allow,
        tyr_policy::model::Verdict::Alert => event::Verdict::Alert,
        tyr_policy::model::Verdict::Deny => event::Verdict::Deny,
    };
    if d.enforced_in != EnforcedIn::Userspace || rank(verdict) <= rank(e.verdict) {
        return;
    }
    let policy = match &d.layer {
        Layer::Base => layer_policy(&a.set, 0),
        Layer::Overlay(name) => a
            .set
            .overlays
            .iter()
            .map(|o| &o.policy)
            .find(|p| p.metadata.name == *name),
    };
    e.verdict = verdict;
    e.severity = d
        .rule
        .as_deref()
        .map_or(event::Severity::Low, |r| rule_severity(policy, r));
    e.rule = d.rule;
    e.metadata.insert("policy".to_owned(), d.layer.to_string());
    e.metadata
        .insert("enforced_in".to_owned(), "userspace".to_owned());
}
