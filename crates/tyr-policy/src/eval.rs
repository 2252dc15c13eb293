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
//! Cost: globs and SNI patterns are parsed on every call, and Cedar conditions on every call
//! that reaches them; a compiled form can replace this if the evaluator shows up in profiles.

use crate::condition;
use crate::glob::{self, Homes};
use crate::model::{
    Action, Decision, Defaults, EffectiveSet, EnforcedIn, Layer, Metadata, Mode, Policy, Rule,
    Spec, Verdict,
};
use crate::request::{Request, Resource};
use crate::sni::{SniPattern, domain_matches};

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

/// Decides `req` against `set`; `~/` in patterns expands to `homes`.
pub fn evaluate(set: &EffectiveSet, req: &Request, homes: &Homes) -> Decision {
    let audit;
    let base = match &set.base {
        Some(p) => p,
        None => {
            audit = builtin_audit();
            &audit
        }
    };
    let (verdict, rule, enforced_in) = evaluate_policy(base, req, homes);
    let mut best = Decision {
        verdict,
        layer: Layer::Base,
        rule,
        enforced_in,
    };
    let overlays = set
        .overlays
        .iter()
        .filter(|o| req.agent_type.as_deref() == Some(o.agent_type.as_str()));
    for overlay in overlays {
        let (verdict, rule, enforced_in) = evaluate_policy(&overlay.policy, req, homes);
        // Strictest wins; on a tie a kernel-enforced decision beats a userspace-only one
        // (that is what actually happened to the syscall), then the earliest layer.
        let kernel_tie = verdict == best.verdict
            && enforced_in == EnforcedIn::Kernel
            && best.enforced_in == EnforcedIn::Userspace;
        if verdict > best.verdict || kernel_tie {
            best = Decision {
                verdict,
                layer: Layer::Overlay(overlay.policy.metadata.name.clone()),
                rule,
                enforced_in,
            };
        }
    }
    best
}

/// Decides `req` against one policy: the verdict, the deciding rule (`None` for the default)
/// and where the verdict is enforced.
pub fn evaluate_policy(
    policy: &Policy,
    req: &Request,
    homes: &Homes,
) -> (Verdict, Option<String>, EnforcedIn) {
    let monitor = |v: Verdict| match (policy.spec.mode, v) {
        (Mode::Monitor, Verdict::Deny) => Verdict::Alert,
        _ => v,
    };
    let mut conditional = Vec::new();
    let mut decided: Option<&Rule> = None;
    for rule in policy.spec.rules.iter().filter(|r| r.action == req.action) {
        if !applies(rule, req, homes) {
            continue;
        }
        if rule.condition.is_some() {
            conditional.push(rule);
        } else {
            decided = Some(rule);
            break;
        }
    }
    let mut verdict = monitor(match decided {
        Some(rule) => rule.verdict,
        None => policy.spec.default.verdict_for(req.action),
    });
    let mut rule = decided;
    let mut enforced_in = EnforcedIn::Kernel;
    for cond_rule in conditional {
        let raised = monitor(cond_rule.verdict);
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
    (verdict, rule.map(|r| r.name.clone()), enforced_in)
}

/// Whether `rule` (of the request's action) applies to `req`, conditions aside.
fn applies(rule: &Rule, req: &Request, homes: &Homes) -> bool {
    if !rule.agent_types.is_empty()
        && !req
            .agent_type
            .as_ref()
            .is_some_and(|t| rule.agent_types.contains(t))
    {
        return false;
    }
    if !rule.binaries.is_empty()
        && !req.binary.as_deref().is_some_and(|b| {
            rule.binaries
                .iter()
                .any(|pattern| glob_matches(pattern, b, homes))
        })
    {
        return false;
    }
    resource_matches(rule, req, homes)
}

fn resource_matches(rule: &Rule, req: &Request, homes: &Homes) -> bool {
    match (req.action, &req.resource) {
        (Action::FileRead | Action::FileWrite | Action::Exec, Resource::Path(path)) => rule
            .resource_pattern
            .as_deref()
            .is_none_or(|p| glob_matches(p, path, homes)),
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
        (Action::TlsConnect, Resource::Sni(name)) => rule
            .sni_pattern
            .as_deref()
            .is_none_or(|p| SniPattern::parse(p).is_ok_and(|s| s.matches(name))),
        // A resource of the wrong kind for its action: only catch-all rules apply.
        _ => rule.is_catch_all() && rule.ports.is_empty(),
    }
}

/// Whether the glob `pattern` (with `~/` expanded to `homes`) matches `path`; an invalid
/// pattern matches nothing.
fn glob_matches(pattern: &str, path: &str, homes: &Homes) -> bool {
    glob::expand(pattern, homes).is_ok_and(|globs| globs.iter().any(|g| g.matches(path.as_bytes())))
}
