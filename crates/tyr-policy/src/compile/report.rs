//! Per rule: where its verdict is enforced, and how.

use serde::{Deserialize, Serialize};

use crate::model::{Action, EnforcedIn, Policy, Rule};

/// Where one rule is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleReport {
    pub rule: String,
    pub action: Action,
    pub enforced_in: EnforcedIn,
    /// How, e.g. `kernel: path DFA` or `userspace only: …`.
    pub reason: String,
}

/// The enforcement report of every rule of `policy`, in document order.
pub fn report(policy: &Policy) -> Vec<RuleReport> {
    policy.spec.rules.iter().map(rule_report).collect()
}

fn rule_report(rule: &Rule) -> RuleReport {
    let (enforced_in, mut reason) = if rule.condition.is_some() {
        (
            EnforcedIn::Userspace,
            "userspace only: Cedar condition is evaluated after the fact (recorded, never blocked)"
                .to_owned(),
        )
    } else {
        (EnforcedIn::Kernel, kernel_reason(rule))
    };
    if enforced_in == EnforcedIn::Kernel {
        if !rule.binaries.is_empty() {
            reason.push_str(" + binary mask");
        }
        if !rule.agent_types.is_empty() {
            reason.push_str(" + agent-type mask");
        }
    }
    RuleReport {
        rule: rule.name.clone(),
        action: rule.action,
        enforced_in,
        reason,
    }
}

fn kernel_reason(rule: &Rule) -> String {
    let what = match rule.action {
        Action::FileRead | Action::FileWrite | Action::Exec => match rule.resource_pattern {
            Some(_) => "path DFA",
            None => "catch-all (every path)",
        },
        Action::NetConnect => {
            let mut parts = Vec::new();
            if !rule.cidrs.is_empty() {
                parts.push("LPM");
            }
            if !rule.domains.is_empty() {
                parts.push("learned-domain mask");
            }
            if !rule.ports.is_empty() {
                parts.push("ports");
            }
            if parts.is_empty() {
                parts.push("catch-all (every destination)");
            }
            return format!("kernel: {}", parts.join(" + "));
        }
        Action::TlsConnect => match rule.sni_pattern {
            Some(_) => "SNI DFA",
            None => "catch-all (every SNI)",
        },
    };
    format!("kernel: {what}")
}
