//! The reference evaluator: SPEC §6 semantics in plain Rust over [`Policy`] values.
//!
//! **Layers.** The base policy (the built-in audit policy, allow everything, when
//! [`EffectiveSet::base`] is `None`), then every overlay whose `agent_type` equals the
//! request's, in order. Each layer gives a verdict; the result is the strictest
//! (`deny > alert > allow`), ties going to a kernel-enforced decision, then to the earliest layer (base first). Overlays can
//! therefore only tighten, and a process with no agent type sees the base alone.
//!
//! **One policy.** Only rules of the request's action count, top to bottom. A rule *applies*
//! when its `agent_types` is empty or holds the request's agent type; its `binaries` is empty
//! or one of its globs matches the request's binary (never when the binary is unknown); and
//! its resource matches:
//! - path actions: no `resource_pattern` = catch-all, else one of its globs (`~/` expanded to
//!   the [`Homes`]) matches the path;
//! - `net_connect`: (`cidrs` empty or one holds the address) and (`domains` empty or one of
//!   the request's DNS names matches one of them) and (`ports` empty or one holds the port);
//!   IPv4-mapped IPv6 addresses are IPv4;
//! - `tls_connect`: no `sni_pattern` = catch-all, else the pattern matches the SNI.
//!
//! The first applying rule *without* a condition decides; none → `spec.default` for the action
//! (`rule: None`). Rules *with* a Cedar condition never block and never hide other rules: each
//! one placed before the deciding rule (all of them when the default decided) that applies and
//! whose condition holds raises the verdict when strictly stricter, and then becomes the
//! deciding rule with [`EnforcedIn::Userspace`]; otherwise the verdict is
//! [`EnforcedIn::Kernel`]. In `mode: monitor` every deny of the policy (rule, condition or
//! default) is an alert.
//!
//! Cost: [`Evaluator::new`] parses every glob and SNI pattern once; callers that decide many
//! requests against one effective set (the server's drift check) keep the evaluator. Cedar
//! conditions are parsed on each call that reaches them (only conditional rules pay).

use crate::condition;
use crate::glob::{self, Homes};
use crate::model::{
    Action, Decision, Defaults, EffectiveSet, EnforcedIn, Layer, Metadata, Mode, Policy, Rule,
    Spec, Verdict,
};
use crate::request::{Request, Resource};
use crate::sni::{SniPattern, domain_matches};

/// Name of the daemon's built-in overlay for `unregistered_agents: quarantine` (SPEC §7).
pub const BUILTIN_QUARANTINE: &str = "builtin-quarantine";
/// Name of the daemon's built-in overlay for `unregistered_agents: deny` (SPEC §7).
pub const BUILTIN_DENY_UNREGISTERED: &str = "builtin-deny-unregistered";

/// Whether `policy` names one of the daemon's built-in `unregistered_agents` overlays: they
/// only add restrictions, and depend on daemon-local state (working directories), so the
/// server cannot re-evaluate their decisions.
pub fn is_builtin_restriction(policy: &str) -> bool {
    policy == BUILTIN_QUARANTINE || policy == BUILTIN_DENY_UNREGISTERED
}

/// The built-in audit base policy: allow everything (activity is still recorded).
pub fn builtin_audit() -> Policy {
    Policy {
        api_version: "tyr.dev/v1".into(),
        kind: "Policy".into(),
        metadata: Metadata {
            name: "builtin-audit".into(),
            description: Some("No policy assigned: allow and record everything".into()),
            ..Metadata::default()
        },
        spec: Spec {
            mode: Mode::Enforce,
            default: Defaults::All(Verdict::Allow),
            rules: Vec::new(),
        },
    }
}

/// Decides `req` against `set`; `~/` in patterns expands to `homes`. For many requests against
/// one set, build an [`Evaluator`] once instead.
pub fn evaluate(set: &EffectiveSet, req: &Request, homes: &Homes) -> Decision {
    Evaluator::prepare(set, homes, Some(req.action)).evaluate(req)
}

/// Decides `req` against one policy: the verdict, the deciding rule (`None` for the default)
/// and where the verdict is enforced.
pub fn evaluate_policy(
    policy: &Policy,
    req: &Request,
    homes: &Homes,
) -> (Verdict, Option<String>, EnforcedIn) {
    let prepared = PreparedPolicy::new(policy, homes, Some(req.action));
    let (verdict, rule, enforced_in) = prepared.decide(req);
    (verdict, rule.map(str::to_owned), enforced_in)
}

/// An effective set with its patterns parsed, ready to decide many requests. It borrows the
/// set: build one per batch of requests.
#[derive(Clone, Debug)]
pub struct Evaluator<'a> {
    base: PreparedPolicy<'a>,
    /// Overlays with the agent type each applies to, in set order.
    overlays: Vec<(&'a str, PreparedPolicy<'a>)>,
}

/// The built-in audit policy has no rules: a prepared form needs no borrowed policy.
static BUILTIN_AUDIT: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(builtin_audit);

impl<'a> Evaluator<'a> {
    /// Prepares `set`, expanding `~/` to `homes`.
    pub fn new(set: &'a EffectiveSet, homes: &Homes) -> Evaluator<'a> {
        Evaluator::prepare(set, homes, None)
    }

    /// Prepares the rules of `only` that action (all actions when `None`).
    fn prepare(set: &'a EffectiveSet, homes: &Homes, only: Option<Action>) -> Evaluator<'a> {
        let base = set.base.as_ref().unwrap_or(&BUILTIN_AUDIT);
        let base = PreparedPolicy::new(base, homes, only);
        let overlays = set
            .overlays
            .iter()
            .map(|o| {
                let prepared = PreparedPolicy::new(&o.policy, homes, only);
                (o.agent_type.as_str(), prepared)
            })
            .collect();
        Evaluator { base, overlays }
    }

    /// Decides `req`: the strictest verdict of the base and of every overlay for the
    /// request's agent type.
    pub fn evaluate(&self, req: &Request) -> Decision {
        let (verdict, rule, enforced_in) = self.base.decide(req);
        let mut best = Decision {
            verdict,
            layer: Layer::Base,
            rule: rule.map(str::to_owned),
            enforced_in,
        };
        let overlays = self
            .overlays
            .iter()
            .filter(|(agent_type, _)| req.agent_type.as_deref() == Some(*agent_type));
        for (_, overlay) in overlays {
            let (verdict, rule, enforced_in) = overlay.decide(req);
            // Strictest wins; on a tie a kernel-enforced decision beats a userspace-only one
            // (that is what actually happened to the syscall), then the earliest layer.
            let kernel_tie = verdict == best.verdict
                && enforced_in == EnforcedIn::Kernel
                && best.enforced_in == EnforcedIn::Userspace;
            if verdict > best.verdict || kernel_tie {
                best = Decision {
                    verdict,
                    layer: Layer::Overlay(overlay.policy.metadata.name.clone()),
                    rule: rule.map(str::to_owned),
                    enforced_in,
                };
            }
        }
        best
    }
}

/// One policy with every pattern parsed.
#[derive(Clone, Debug)]
struct PreparedPolicy<'a> {
    policy: &'a Policy,
    rules: Vec<PreparedRule<'a>>,
}

/// A rule with its globs expanded and its SNI pattern parsed. An invalid pattern (never in a
/// validated policy) matches nothing.
#[derive(Clone, Debug)]
struct PreparedRule<'a> {
    rule: &'a Rule,
    resource: Option<Option<Vec<glob::Glob>>>,
    binaries: Vec<Option<Vec<glob::Glob>>>,
    sni: Option<Option<SniPattern>>,
}

impl<'a> PreparedPolicy<'a> {
    fn new(policy: &'a Policy, homes: &Homes, only: Option<Action>) -> PreparedPolicy<'a> {
        let expand = |p: &str| glob::expand(p, homes).ok();
        let rules = policy
            .spec
            .rules
            .iter()
            .filter(|rule| only.is_none_or(|a| rule.action == a))
            .map(|rule| PreparedRule {
                resource: rule.resource_pattern.as_deref().map(expand),
                binaries: rule.binaries.iter().map(|b| expand(b)).collect(),
                sni: rule
                    .sni_pattern
                    .as_deref()
                    .map(|p| SniPattern::parse(p).ok()),
                rule,
            })
            .collect();
        PreparedPolicy { policy, rules }
    }

    fn monitor(&self, v: Verdict) -> Verdict {
        match (self.policy.spec.mode, v) {
            (Mode::Monitor, Verdict::Deny) => Verdict::Alert,
            _ => v,
        }
    }

    fn decide(&self, req: &Request) -> (Verdict, Option<&'a str>, EnforcedIn) {
        let mut conditional = Vec::new();
        let mut decided: Option<&'a Rule> = None;
        for prepared in self.rules.iter().filter(|r| r.rule.action == req.action) {
            if !prepared.applies(req) {
                continue;
            }
            if prepared.rule.condition.is_some() {
                conditional.push(prepared.rule);
            } else {
                decided = Some(prepared.rule);
                break;
            }
        }
        let mut verdict = self.monitor(match decided {
            Some(rule) => rule.verdict,
            None => self.policy.spec.default.verdict_for(req.action),
        });
        let mut rule = decided;
        let mut enforced_in = EnforcedIn::Kernel;
        for cond_rule in conditional {
            let raised = self.monitor(cond_rule.verdict);
            if raised > verdict
                && cond_rule
                    .condition
                    .as_deref()
                    .is_some_and(|c| condition::holds(c, req))
            {
                verdict = raised;
                rule = Some(cond_rule);
                enforced_in = EnforcedIn::Userspace;
            }
        }
        (verdict, rule.map(|r| r.name.as_str()), enforced_in)
    }
}

/// Whether any of `globs` matches `path`; `None` (an invalid pattern) matches nothing.
fn any_matches(globs: &Option<Vec<glob::Glob>>, path: &str) -> bool {
    globs
        .as_ref()
        .is_some_and(|gs| gs.iter().any(|g| g.matches(path.as_bytes())))
}

impl PreparedRule<'_> {
    /// Whether the rule (of the request's action) applies to `req`, conditions aside.
    fn applies(&self, req: &Request) -> bool {
        let rule = self.rule;
        if !rule.agent_types.is_empty()
            && !req
                .agent_type
                .as_ref()
                .is_some_and(|t| rule.agent_types.contains(t))
        {
            return false;
        }
        if !self.binaries.is_empty()
            && !req
                .binary
                .as_deref()
                .is_some_and(|b| self.binaries.iter().any(|g| any_matches(g, b)))
        {
            return false;
        }
        self.resource_matches(req)
    }

    fn resource_matches(&self, req: &Request) -> bool {
        let rule = self.rule;
        match (req.action, &req.resource) {
            (Action::FileRead | Action::FileWrite | Action::Exec, Resource::Path(path)) => self
                .resource
                .as_ref()
                .is_none_or(|globs| any_matches(globs, path)),
            (Action::NetConnect, Resource::Addr { ip, port }) => {
                let ip = ip.to_canonical();
                (rule.cidrs.is_empty() || rule.cidrs.iter().any(|net| net.contains(&ip)))
                    && (rule.domains.is_empty()
                        || req
                            .domains
                            .iter()
                            .any(|name| rule.domains.iter().any(|d| domain_matches(d, name))))
                    && (rule.ports.is_empty() || rule.ports.iter().any(|r| r.contains(*port)))
            }
            (Action::TlsConnect, Resource::Sni(name)) => self
                .sni
                .as_ref()
                .is_none_or(|p| p.as_ref().is_some_and(|s| s.matches(name))),
            // A resource of the wrong kind for its action: only catch-all rules apply.
            _ => rule.is_catch_all() && rule.ports.is_empty(),
        }
    }
}
