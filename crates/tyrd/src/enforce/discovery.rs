//! Discovered agents (SPEC §7): each classified process tree, grouped by process signature
//! (`agent_type`, executable, uid), under an id stable across daemon restarts (a UUID
//! derived from the daemon's name and the signature), with its live pids.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};
use tyr_proto::agent::DiscoveredAgentUpdate;

/// Discovered agents kept (live or not) before those without pids are forgotten.
const MAX_AGENTS: usize = 4096;

/// One discovered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// UUID (text form).
    pub id: String,
    pub agent_type: String,
    pub display_name: String,
    pub signature: String,
    pub pids: BTreeSet<u32>,
    /// Unix ns.
    pub first_seen: u64,
    pub last_seen: u64,
}

impl Agent {
    fn update(&self) -> DiscoveredAgentUpdate {
        DiscoveredAgentUpdate {
            id: self.id.clone(),
            agent_type: self.agent_type.clone(),
            display_name: self.display_name.clone(),
            process_signature: self.signature.clone(),
            pids: self.pids.iter().copied().collect(),
            first_seen_ns: self.first_seen,
            last_seen_ns: self.last_seen,
        }
    }
}

/// The discovered agents of this daemon, keyed by a 64-bit key (the first 8 bytes of the id,
/// never 0) that the kernel's process map carries as `discovered_id`.
#[derive(Debug, Default)]
pub struct Discovery {
    daemon: String,
    agents: HashMap<u64, Agent>,
    /// Live process → its agent's key.
    pids: HashMap<u32, u64>,
    changed: BTreeSet<u64>,
}

/// The stable id and kernel key of `signature` on `daemon`: SHA-256 over both, as a UUID
/// (version 8, RFC 9562 custom).
pub fn id_of(daemon: &str, signature: &str) -> (String, u64) {
    let mut h = Sha256::new();
    h.update(daemon.as_bytes());
    h.update([0]);
    h.update(signature.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let uuid = uuid::Builder::from_custom_bytes(bytes).into_uuid();
    let raw = uuid.as_bytes();
    let key = u64::from_be_bytes([
        raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
    ]);
    (uuid.to_string(), key.max(1))
}

/// The process signature of an agent tree rooted at an `exe` run by `uid` as `agent_type`.
pub fn signature(agent_type: &str, exe: &str, uid: u32) -> String {
    format!("{agent_type}:{exe}:uid={uid}")
}

impl Discovery {
    /// An empty table for the daemon named `daemon`.
    pub fn new(daemon: &str) -> Discovery {
        Discovery {
            daemon: daemon.to_owned(),
            ..Discovery::default()
        }
    }

    /// The key of the agent `tgid` belongs to.
    pub fn key_of(&self, tgid: u32) -> Option<u64> {
        self.pids.get(&tgid).copied()
    }

    /// The agent of key `key`.
    pub fn agent(&self, key: u64) -> Option<&Agent> {
        self.agents.get(&key)
    }

    /// Makes `tgid` a root of the agent of signature (`agent_type`, `exe`, `uid`), creating
    /// it when new; returns its key.
    pub fn root(&mut self, tgid: u32, agent_type: &str, exe: &str, uid: u32, now: u64) -> u64 {
        let signature = signature(agent_type, exe, uid);
        let (id, key) = id_of(&self.daemon, &signature);
        if !self.agents.contains_key(&key) {
            self.evict();
            let name = exe
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or(exe);
            self.agents.insert(
                key,
                Agent {
                    id,
                    agent_type: agent_type.to_owned(),
                    display_name: format!("{name} ({agent_type}, uid {uid})"),
                    signature,
                    pids: BTreeSet::new(),
                    first_seen: now,
                    last_seen: now,
                },
            );
        }
        self.join(tgid, key, now);
        key
    }

    /// Adds `tgid` to the agent `key` (leaving any other); false when there is no such agent.
    pub fn join(&mut self, tgid: u32, key: u64, now: u64) -> bool {
        if !self.agents.contains_key(&key) {
            return false;
        }
        if let Some(old) = self.pids.insert(tgid, key)
            && old != key
        {
            self.leave(old, tgid, now);
        }
        if let Some(a) = self.agents.get_mut(&key)
            && a.pids.insert(tgid)
        {
            a.last_seen = now;
            self.changed.insert(key);
        }
        true
    }

    /// Gives the agent `id` the type `agent_type` (an admin's reclassification); its live
    /// pids, or `None` when there is no such agent.
    pub fn reclassify(&mut self, id: &str, agent_type: &str, now: u64) -> Option<Vec<u32>> {
        let (&key, a) = self.agents.iter_mut().find(|(_, a)| a.id == id)?;
        if a.agent_type != agent_type {
            a.agent_type = agent_type.to_owned();
            a.last_seen = now;
            self.changed.insert(key);
        }
        Some(a.pids.iter().copied().collect())
    }

    /// `tgid` exited.
    pub fn exit(&mut self, tgid: u32, now: u64) {
        if let Some(key) = self.pids.remove(&tgid) {
            self.leave(key, tgid, now);
        }
    }

    fn leave(&mut self, key: u64, tgid: u32, now: u64) {
        if let Some(a) = self.agents.get_mut(&key)
            && a.pids.remove(&tgid)
        {
            a.last_seen = now;
            self.changed.insert(key);
        }
    }

    /// Every process of every agent.
    pub fn live_pids(&self) -> Vec<u32> {
        self.pids.keys().copied().collect()
    }

    /// Forgets agents without live pids when the table is full.
    fn evict(&mut self) {
        if self.agents.len() >= MAX_AGENTS {
            self.agents.retain(|_, a| !a.pids.is_empty());
        }
    }

    /// Agents created or changed since the last call.
    pub fn changes(&mut self) -> Vec<DiscoveredAgentUpdate> {
        let keys = std::mem::take(&mut self.changed);
        keys.iter()
            .filter_map(|k| self.agents.get(k))
            .map(Agent::update)
            .collect()
    }

    /// Every agent with live pids.
    pub fn all(&self) -> Vec<DiscoveredAgentUpdate> {
        let mut out: Vec<_> = self
            .agents
            .values()
            .filter(|a| !a.pids.is_empty())
            .map(Agent::update)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_per_daemon_and_signature() {
        let (a, ka) = id_of("host-1", "claude-code:/usr/bin/claude:uid=1000");
        let (b, kb) = id_of("host-1", "claude-code:/usr/bin/claude:uid=1000");
        let (c, _) = id_of("host-2", "claude-code:/usr/bin/claude:uid=1000");
        let (d, _) = id_of("host-1", "claude-code:/usr/bin/claude:uid=1001");
        assert_eq!((a.as_str(), ka), (b.as_str(), kb));
        assert_ne!(a, c);
        assert_ne!(a, d);
        let parsed = uuid::Uuid::parse_str(&a).expect("uuid");
        assert_eq!(parsed.get_version_num(), 8);
        assert_ne!(ka, 0);
    }

    #[test]
    fn pids_appear_and_disappear_with_updates() {
        let mut d = Discovery::new("h");
        let k = d.root(10, "claude-code", "/usr/bin/claude", 1000, 1);
        assert!(d.join(11, k, 2));
        let again = d.root(20, "claude-code", "/usr/bin/claude", 1000, 3);
        assert_eq!(again, k, "same signature, same agent");
        let changes = d.changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].pids, [10, 11, 20]);
        assert_eq!(changes[0].agent_type, "claude-code");
        assert_eq!(changes[0].display_name, "claude (claude-code, uid 1000)");
        assert_eq!((changes[0].first_seen_ns, changes[0].last_seen_ns), (1, 3));
        assert!(d.changes().is_empty(), "nothing new");
        d.exit(11, 4);
        d.exit(99, 4);
        let changes = d.changes();
        assert_eq!(changes[0].pids, [10, 20]);
        assert_eq!(changes[0].last_seen_ns, 4);
        d.exit(10, 5);
        d.exit(20, 5);
        assert_eq!(d.changes()[0].pids, Vec::<u32>::new());
        assert!(d.all().is_empty(), "no live pids");
        assert!(!d.join(1, 12345, 6), "unknown agent");
    }

    #[test]
    fn a_process_moves_to_the_agent_it_joins() {
        let mut d = Discovery::new("h");
        let a = d.root(10, "cursor", "/opt/cursor", 0, 1);
        let b = d.root(10, "claude-code", "/usr/bin/claude", 0, 2);
        assert_ne!(a, b);
        assert_eq!(d.key_of(10), Some(b));
        assert!(d.agent(a).expect("a").pids.is_empty());
        assert_eq!(d.all().len(), 1);
    }
}
