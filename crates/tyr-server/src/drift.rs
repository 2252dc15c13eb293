//! Drift (SPEC §9): the server re-evaluates every event a daemon reports with its own copy of
//! that daemon's effective policy and records whether, and why, the verdicts differ.
//!
//! Also the one definition of an effective set's version string ([`effective_version`]): the
//! server sends it in `PolicyPush.policy_version`, the daemon stamps it on every event, and
//! drift compares the two.

use serde::{Deserialize, Serialize};
use tyr_policy::{Evaluator, Request, Verdict};

/// A daemon's enforcement tier (SPEC §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Lsm,
    Tracepoint,
    Observe,
}

impl Tier {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Lsm => "lsm",
            Tier::Tracepoint => "tracepoint",
            Tier::Observe => "observe",
        }
    }

    /// Parses [`Tier::as_str`] names.
    pub fn from_name(name: &str) -> Option<Tier> {
        [Tier::Lsm, Tier::Tracepoint, Tier::Observe]
            .into_iter()
            .find(|t| t.as_str() == name)
    }

    /// Whether a deny can be enforced on this tier: per SPEC §8, `lsm` blocks and `tracepoint`
    /// blocks or kills for every action; `observe` enforces nothing.
    pub fn can_block(self) -> bool {
        !matches!(self, Tier::Observe)
    }
}

/// What the daemon's tier did to the syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforced {
    None,
    Blocked,
    Killed,
}

impl Enforced {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforced::None => "none",
            Enforced::Blocked => "blocked",
            Enforced::Killed => "killed",
        }
    }

    /// Parses [`Enforced::as_str`] names.
    pub fn from_name(name: &str) -> Option<Enforced> {
        [Enforced::None, Enforced::Blocked, Enforced::Killed]
            .into_iter()
            .find(|e| e.as_str() == name)
    }
}

/// What a daemon reported about one event, independent of how it arrived (wire or store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFacts {
    /// The request the daemon decided (e.g. from `tyr_proto::convert::to_request`).
    pub request: Request,
    pub verdict: Verdict,
    pub enforced: Enforced,
    /// The effective-set version the daemon decided with.
    pub policy_version: String,
    /// The daemon decided with one of its built-in `unregistered_agents` restrictions
    /// (`metadata.policy`, [`tyr_policy::eval::is_builtin_restriction`]).
    pub builtin_restriction: bool,
}

/// Why the daemon's verdict differs from the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftCause {
    /// The daemon decided with another version than the server's current one.
    StalePolicy,
    /// Same version, and the server says deny where the daemon's tier cannot block.
    TierLimit,
    /// Same version, different verdict, no tier excuse: tampering or a bug.
    Mismatch,
}

impl DriftCause {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftCause::StalePolicy => "stale_policy",
            DriftCause::TierLimit => "tier_limit",
            DriftCause::Mismatch => "mismatch",
        }
    }
}

/// The server's side of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriftOutcome {
    pub server_verdict: Verdict,
    pub drift_detected: bool,
    /// `Some` exactly when `drift_detected`.
    pub cause: Option<DriftCause>,
}

/// Re-evaluates `event` with `current`, the prepared effective set of version
/// `current_version` (build one [`Evaluator`] per batch), for a daemon on `tier`.
///
/// `drift_detected = server_verdict != event.verdict`, except that a verdict *stricter* than
/// the server's from a daemon's built-in restriction is not drift (the server cannot
/// reproduce those: they depend on daemon-local working directories; a looser one still is).
/// The cause, first that holds:
/// `stale_policy` when the event's version is not `current_version`; `tier_limit` when the
/// server says deny, the event was not enforced and `tier` cannot block; else `mismatch`.
pub fn assess(
    current: &Evaluator,
    current_version: &str,
    tier: Tier,
    event: &EventFacts,
) -> DriftOutcome {
    let server_verdict = current.evaluate(&event.request).verdict;
    let restricted = event.builtin_restriction && event.verdict > server_verdict;
    let drift_detected = server_verdict != event.verdict && !restricted;
    let cause = drift_detected.then(|| {
        if event.policy_version != current_version {
            DriftCause::StalePolicy
        } else if server_verdict == Verdict::Deny
            && event.enforced == Enforced::None
            && !tier.can_block()
        {
            DriftCause::TierLimit
        } else {
            DriftCause::Mismatch
        }
    });
    DriftOutcome {
        server_verdict,
        drift_detected,
        cause,
    }
}

/// The version id of an effective set: `base=POLICY@N` (or `builtin-audit` with no base),
/// then `;AGENT_TYPE=POLICY@N` per overlay sorted by agent type, policy and version, so the
/// same assignments always give the same id, whatever order they are listed in. Policy names
/// and agent types never contain `;`, `=` or `@` (the parser refuses them), so the id is
/// unambiguous.
pub fn effective_version(base: Option<(&str, u32)>, overlays: &[(&str, &str, u32)]) -> String {
    let mut id = match base {
        Some((policy, version)) => format!("base={policy}@{version}"),
        None => "builtin-audit".to_string(),
    };
    let mut sorted = overlays.to_vec();
    sorted.sort_unstable();
    for (agent_type, policy, version) in sorted {
        id.push_str(&format!(";{agent_type}={policy}@{version}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use tyr_policy::glob::Homes;
    use tyr_policy::{Action, EffectiveSet, Overlay, Policy};

    use super::*;

    const V: &str = "base=laptops@3";

    fn policy(yaml: &str) -> Policy {
        tyr_policy::parse(yaml).expect("test policy parses")
    }

    /// File reads of `/v/allow`, `/v/alert`, `/v/deny` get that verdict on the server.
    fn current() -> EffectiveSet {
        EffectiveSet {
            base: Some(policy(
                "apiVersion: tyr.dev/v1
kind: Policy
metadata: {name: laptops}
spec:
  rules:
    - {name: a, action: file_read, resource_pattern: /v/alert, verdict: alert}
    - {name: d, action: file_read, resource_pattern: /v/deny, verdict: deny}
",
            )),
            overlays: vec![Overlay {
                agent_type: "claude-code".into(),
                policy: policy(
                    "apiVersion: tyr.dev/v1
kind: Policy
metadata: {name: ov}
spec:
  rules:
    - {name: ssh, action: file_read, resource_pattern: /v/allow, verdict: deny}
",
                ),
            }],
        }
    }

    fn facts(server: Verdict, daemon: Verdict, enforced: Enforced, version: &str) -> EventFacts {
        let path = format!("/v/{}", server.as_str());
        EventFacts {
            request: Request::new(Action::FileRead, &path).expect("valid path"),
            verdict: daemon,
            enforced,
            policy_version: version.to_string(),
            builtin_restriction: false,
        }
    }

    fn run(tier: Tier, event: &EventFacts) -> DriftOutcome {
        let set = current();
        assess(&Evaluator::new(&set, &Homes::default()), V, tier, event)
    }

    const VERDICTS: [Verdict; 3] = [Verdict::Allow, Verdict::Alert, Verdict::Deny];

    #[test]
    fn a_builtin_restriction_excuses_only_stricter_verdicts() {
        for server in VERDICTS {
            for daemon in VERDICTS {
                let mut event = facts(server, daemon, Enforced::Blocked, V);
                event.builtin_restriction = true;
                let out = run(Tier::Lsm, &event);
                assert_eq!(out.server_verdict, server);
                assert_eq!(out.drift_detected, daemon < server, "{daemon} vs {server}");
            }
        }
    }

    #[test]
    fn every_verdict_pair_on_the_current_version() {
        for server in VERDICTS {
            for daemon in VERDICTS {
                let out = run(Tier::Lsm, &facts(server, daemon, Enforced::None, V));
                assert_eq!(out.server_verdict, server, "{daemon} vs {server}");
                assert_eq!(out.drift_detected, server != daemon, "{daemon} vs {server}");
                let cause = (server != daemon).then_some(DriftCause::Mismatch);
                assert_eq!(out.cause, cause, "{daemon} vs {server}");
            }
        }
    }

    #[test]
    fn every_verdict_pair_on_a_stale_version() {
        for tier in [Tier::Lsm, Tier::Tracepoint, Tier::Observe] {
            for server in VERDICTS {
                for daemon in VERDICTS {
                    let out = run(
                        tier,
                        &facts(server, daemon, Enforced::None, "base=laptops@2"),
                    );
                    assert_eq!(out.drift_detected, server != daemon);
                    let cause = (server != daemon).then_some(DriftCause::StalePolicy);
                    assert_eq!(out.cause, cause, "{tier:?}: {daemon} vs {server}");
                }
            }
        }
    }

    #[test]
    fn unenforced_deny_on_observe_is_a_tier_limit() {
        for daemon in [Verdict::Allow, Verdict::Alert] {
            let out = run(
                Tier::Observe,
                &facts(Verdict::Deny, daemon, Enforced::None, V),
            );
            assert_eq!(out.cause, Some(DriftCause::TierLimit));
        }
    }

    #[test]
    fn the_tier_excuses_only_an_unenforced_server_deny() {
        let cases = [
            // A tier that can block has no excuse.
            (Tier::Lsm, Verdict::Deny, Verdict::Allow, Enforced::None),
            (
                Tier::Tracepoint,
                Verdict::Deny,
                Verdict::Alert,
                Enforced::None,
            ),
            // Observe cannot explain a daemon verdict stricter than the server's…
            (Tier::Observe, Verdict::Allow, Verdict::Deny, Enforced::None),
            (
                Tier::Observe,
                Verdict::Alert,
                Verdict::Allow,
                Enforced::None,
            ),
            // …nor an enforcement that did happen.
            (
                Tier::Observe,
                Verdict::Deny,
                Verdict::Allow,
                Enforced::Blocked,
            ),
        ];
        for (tier, server, daemon, enforced) in cases {
            let out = run(tier, &facts(server, daemon, enforced, V));
            assert_eq!(
                out.cause,
                Some(DriftCause::Mismatch),
                "{tier:?} {server} {daemon}"
            );
        }
    }

    #[test]
    fn overlays_apply_to_the_request_agent_type() {
        let mut event = facts(Verdict::Allow, Verdict::Allow, Enforced::None, V);
        assert!(!run(Tier::Lsm, &event).drift_detected);
        event.request = event.request.with_agent_type("claude-code");
        let out = run(Tier::Lsm, &event);
        assert_eq!(out.server_verdict, Verdict::Deny);
        assert_eq!(out.cause, Some(DriftCause::Mismatch));
    }

    #[test]
    fn no_base_is_the_builtin_audit_policy() {
        let set = EffectiveSet::default();
        let out = assess(
            &Evaluator::new(&set, &Homes::default()),
            "builtin-audit",
            Tier::Lsm,
            &facts(
                Verdict::Deny,
                Verdict::Deny,
                Enforced::Blocked,
                "builtin-audit",
            ),
        );
        assert_eq!(out.server_verdict, Verdict::Allow);
        assert_eq!(out.cause, Some(DriftCause::Mismatch));
    }

    #[test]
    fn effective_version_is_deterministic() {
        assert_eq!(effective_version(None, &[]), "builtin-audit");
        assert_eq!(
            effective_version(Some(("laptops", 3)), &[]),
            "base=laptops@3"
        );
        let a = [("cursor", "cur", 1), ("claude-code", "ov", 2)];
        let b = [("claude-code", "ov", 2), ("cursor", "cur", 1)];
        let expected = "base=laptops@3;claude-code=ov@2;cursor=cur@1";
        assert_eq!(effective_version(Some(("laptops", 3)), &a), expected);
        assert_eq!(effective_version(Some(("laptops", 3)), &b), expected);
        assert_eq!(
            effective_version(None, &b),
            "builtin-audit;claude-code=ov@2;cursor=cur@1"
        );
        assert_ne!(
            effective_version(Some(("laptops", 3)), &[("cursor", "cur", 2)]),
            effective_version(Some(("laptops", 3)), &[("cursor", "cur", 1)]),
        );
    }

    #[test]
    fn names_round_trip() {
        for t in [Tier::Lsm, Tier::Tracepoint, Tier::Observe] {
            assert_eq!(Tier::from_name(t.as_str()), Some(t));
        }
        for e in [Enforced::None, Enforced::Blocked, Enforced::Killed] {
            assert_eq!(Enforced::from_name(e.as_str()), Some(e));
        }
        assert_eq!(Tier::from_name("auto"), None);
        for c in [
            DriftCause::StalePolicy,
            DriftCause::TierLimit,
            DriftCause::Mismatch,
        ] {
            let json = serde_json::to_string(&c).expect("serialises");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(
                serde_json::from_str::<DriftCause>(&json).expect("parses"),
                c
            );
        }
    }
}
