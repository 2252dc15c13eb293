//! The daemon-side event (SPEC §9): what the kernel reader and enrichment produce, before
//! the spool numbers it. `event_id`, `daemon_id` and `seq` are added when it is sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One observed (and possibly enforced) operation. JSON field names and enum spellings are
/// the SPEC's (`"kind": "FILE_READ"`, `"verdict": "DENY"`, `"enforced": "blocked"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// What the process did.
    pub kind: Kind,
    /// Path, address or SNI.
    pub resource: String,
    /// The daemon's verdict.
    pub verdict: Verdict,
    /// What the kernel did about it.
    #[serde(default)]
    pub enforced: Enforced,
    /// Severity of the deciding rule.
    #[serde(default)]
    pub severity: Severity,
    /// Policy version(s) the verdict was taken with.
    #[serde(default)]
    pub policy_version: String,
    /// Name of the deciding rule; absent when a default decided.
    #[serde(default)]
    pub rule: Option<String>,
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    #[serde(default)]
    pub ppid: u32,
    /// Real user id.
    #[serde(default)]
    pub uid: u32,
    /// Absolute path of the process executable.
    #[serde(default)]
    pub process_exe: String,
    /// Command line, arguments separated by spaces.
    #[serde(default)]
    pub cmdline: String,
    /// Agent type of the process (or its governed ancestor); absent for other processes.
    #[serde(default)]
    pub agent_type: Option<String>,
    /// Id of the discovered agent the process belongs to.
    #[serde(default)]
    pub discovered_agent_id: Option<String>,
    /// Wall-clock time of the operation, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Free-form details (flags, ports, SNI mismatch…).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// How many identical events this one stands for (aggregation); at least 1.
    #[serde(default = "one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

/// Event kind (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// File opened for reading.
    FileRead,
    /// File opened for writing.
    FileWrite,
    /// Program executed.
    Exec,
    /// Outgoing connection.
    NetConnect,
    /// TLS ClientHello (the resource is the SNI).
    Tls,
}

/// The daemon's verdict (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused (or would have been, see `enforced`).
    Deny,
    /// Let through and flagged.
    Alert,
}

/// What the kernel did (SPEC §9).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforced {
    /// The syscall returned `-EPERM`.
    Blocked,
    /// The process was killed (tracepoint tier).
    Killed,
    /// Nothing was enforced.
    #[default]
    None,
}

/// Severity of the deciding rule (as in policies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Low.
    #[default]
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_uses_spec_spellings() {
        let event = Event {
            kind: Kind::NetConnect,
            resource: "10.0.0.1:443".into(),
            verdict: Verdict::Deny,
            enforced: Enforced::Blocked,
            severity: Severity::High,
            policy_version: "base@3".into(),
            rule: Some("no-egress".into()),
            pid: 42,
            ppid: 1,
            uid: 1000,
            process_exe: "/usr/bin/curl".into(),
            cmdline: "curl https://x".into(),
            agent_type: Some("claude-code".into()),
            discovered_agent_id: Some("da-1".into()),
            timestamp_ns: 1_700_000_000_000_000_000,
            metadata: BTreeMap::from([("port".into(), "443".into())]),
            count: 1,
        };
        let json = serde_json::to_string(&event).expect("serialize");
        assert!(json.contains("\"kind\":\"NET_CONNECT\""), "{json}");
        assert!(json.contains("\"verdict\":\"DENY\""), "{json}");
        assert!(json.contains("\"enforced\":\"blocked\""), "{json}");
        let back: Event = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, event);
    }
}
