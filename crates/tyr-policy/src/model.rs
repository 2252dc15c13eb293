//! The typed, validated policy document (SPEC §6). Produced by [`crate::parse`]; every other
//! module reads these types and nothing else.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a process tries to do.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Open a file for reading.
    #[default]
    FileRead,
    /// Open a file with write, append, create or truncate.
    FileWrite,
    /// Execute a program; the resource is the absolute path of the executed file.
    Exec,
    /// Connect to an address (TCP connect, UDP sendmsg).
    NetConnect,
    /// Start a TLS session; the resource is the ClientHello SNI.
    TlsConnect,
}

impl Action {
    /// Every action, in table order.
    pub const ALL: [Action; 5] = [
        Action::FileRead,
        Action::FileWrite,
        Action::Exec,
        Action::NetConnect,
        Action::TlsConnect,
    ];

    /// The name used in YAML, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::FileRead => "file_read",
            Action::FileWrite => "file_write",
            Action::Exec => "exec",
            Action::NetConnect => "net_connect",
            Action::TlsConnect => "tls_connect",
        }
    }

    /// Parses the YAML/CLI name.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Index of this action in per-action arrays (0..5).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the resource of this action is a file-system path.
    pub fn is_path(self) -> bool {
        matches!(self, Action::FileRead | Action::FileWrite | Action::Exec)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict, ordered by strictness: `Allow < Alert < Deny`, so `max` is "strictest".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it happen.
    #[default]
    Allow,
    /// Let it happen and record an alert.
    Alert,
    /// Refuse it (or, in monitor mode and for conditions, record a deny).
    Deny,
}

impl Verdict {
    /// The name used in YAML, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Alert => "alert",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Severity of a rule: metadata only, never changes a verdict.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

/// `enforce` blocks denies; `monitor` records every deny as an alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

/// `spec.default`: one verdict for every action, or a map per action (an action left out of
/// the map defaults to `allow`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Defaults {
    All(Verdict),
    PerAction(BTreeMap<Action, Verdict>),
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults::All(Verdict::Allow)
    }
}

impl Defaults {
    /// The verdict when no rule of `action` matches.
    pub fn verdict_for(&self, action: Action) -> Verdict {
        match self {
            Defaults::All(v) => *v,
            Defaults::PerAction(m) => m.get(&action).copied().unwrap_or(Verdict::Allow),
        }
    }
}

/// A 1-based line and column in the source YAML.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub line: u32,
    pub column: u32,
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// A whole policy document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Always `tyr.dev/v1`.
    pub api_version: String,
    /// Always `Policy`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

/// `metadata` of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `spec` of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub mode: Mode,
    pub default: Defaults,
    /// Rules in document order, with `cidr_allow`/`cidr_deny` already expanded.
    pub rules: Vec<Rule>,
}

/// One validated rule. Resource fields that do not apply to `action` are empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique in the policy. A `cidr_allow`/`cidr_deny` rule `N` expands to `N/allow`, `N/deny`.
    pub name: String,
    pub action: Action,
    /// Path glob (`file_read`, `file_write`, `exec`), exactly as written (`~/` unexpanded).
    /// `None` with no other resource field: the rule matches every resource of its action.
    pub resource_pattern: Option<String>,
    /// `net_connect`: destination networks (a `resource_pattern` on `net_connect` is one CIDR
    /// and lands here). IPv4-mapped IPv6 networks are stored as IPv4.
    pub cidrs: Vec<IpNet>,
    /// `net_connect`: destination ports; empty = any port.
    pub ports: Vec<PortRange>,
    /// `net_connect`: the destination must have been learned from a DNS answer for one of these
    /// names (`*.x.y` = any name below `x.y`). Lower-cased.
    pub domains: Vec<String>,
    /// `tls_connect`: pattern over the ClientHello SNI (`*` wildcard, `|` alternation).
    pub sni_pattern: Option<String>,
    pub verdict: Verdict,
    pub severity: Severity,
    /// Only when the calling binary matches one of these globs; empty = any binary.
    pub binaries: Vec<String>,
    /// Only for these classified agent types; empty = any process.
    pub agent_types: Vec<String>,
    /// Cedar condition, evaluated in userspace after the fact (never blocks).
    pub condition: Option<String>,
    /// Where the rule starts in the source YAML.
    #[serde(default)]
    pub location: Location,
}

impl Rule {
    /// Whether the rule names no resource at all, i.e. matches every resource of its action.
    pub fn is_catch_all(&self) -> bool {
        self.resource_pattern.is_none()
            && self.cidrs.is_empty()
            && self.domains.is_empty()
            && self.sni_pattern.is_none()
    }
}

/// The policies that govern one daemon: its base (or the built-in audit policy when `None`)
/// and the overlays, each bound to the agent type it applies to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EffectiveSet {
    pub base: Option<Policy>,
    pub overlays: Vec<Overlay>,
}

/// An overlay policy assigned to an agent type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overlay {
    pub agent_type: String,
    pub policy: Policy,
}

/// Which layer of an [`EffectiveSet`] decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Base,
    /// An overlay, named by its policy.
    Overlay(String),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Base => f.write_str("base"),
            Layer::Overlay(name) => write!(f, "overlay:{name}"),
        }
    }
}

impl Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a verdict is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcedIn {
    /// Decided by the kernel tables, before the syscall completes.
    Kernel,
    /// Decided after the fact in the daemon (Cedar conditions): recorded, never blocked.
    Userspace,
}

/// The outcome of evaluating one request against an effective set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub layer: Layer,
    /// The deciding rule; `None` when a default decided.
    pub rule: Option<String>,
    pub enforced_in: EnforcedIn,
}
