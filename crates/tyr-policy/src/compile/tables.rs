//! The compiled form: flat arrays of plain integers, the contents of the kernel maps.

use serde::{Deserialize, Serialize};

use super::dfa::Dfa;
use crate::model::{Action, Layer, Verdict};

/// Verdict codes stored in the tables (ordered by strictness).
pub const VERDICT_ALLOW: u8 = 0;
pub const VERDICT_ALERT: u8 = 1;
pub const VERDICT_DENY: u8 = 2;

/// The table code of `v`.
pub fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::Allow => VERDICT_ALLOW,
        Verdict::Alert => VERDICT_ALERT,
        Verdict::Deny => VERDICT_DENY,
    }
}

/// The verdict of a table code; unknown codes fail closed.
pub fn verdict_of(code: u8) -> Verdict {
    match code {
        VERDICT_ALLOW => Verdict::Allow,
        VERDICT_ALERT => Verdict::Alert,
        _ => Verdict::Deny,
    }
}

/// Everything the kernel programs need to decide for one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelTables {
    /// Agent-type names; the name at index `i` has id `i + 1` (0 = not an agent).
    pub agent_types: Vec<String>,
    /// Distinct binary globs as written; the glob at index `i` is bit `i` of a binary mask.
    pub binary_globs: Vec<String>,
    /// Binary DFA (paths of executables); `binary_masks[state]` = globs matched there.
    pub binaries: Dfa,
    pub binary_masks: Vec<u64>,
    /// Distinct `domains` patterns; the pattern at index `i` is bit `i` of a domain mask.
    pub domains: Vec<String>,
    /// Layer 0 is the base, then the overlays in effective-set order.
    pub layers: Vec<LayerTables>,
}

/// The tables of one policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerTables {
    /// Policy name (`audit` for the built-in base).
    pub policy: String,
    /// 0 for the base, else the agent-type id the overlay applies to.
    pub agent_type_id: u8,
    /// Rule names in document order; [`RuleMeta::rule`] indexes this.
    pub rule_names: Vec<String>,
    /// One table per action, indexed by [`Action::index`].
    pub actions: Vec<ActionTable>,
}

/// The rules of one (layer, action).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionTable {
    /// Verdict code when no rule applies (monitor mode already applied).
    pub default: u8,
    /// Kernel-enforced rules of this action in policy order; empty = quick reject.
    pub rules: Vec<RuleMeta>,
    /// Port ranges `[start, end]`, sliced by [`RuleMeta::port_off`]/`port_len`.
    pub ports: Vec<[u16; 2]>,
    /// Candidate lists: indices into `rules`, in order, sliced per state or LPM entry.
    pub cands: Vec<u32>,
    /// Candidates for a resource of the wrong kind for the action: catch-alls without ports.
    pub any_off: u32,
    pub any_len: u16,
    pub matcher: Matcher,
}

/// How the resource selects candidates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    /// No rules: the walk is skipped.
    #[default]
    None,
    /// Paths and SNI: a DFA whose state `s` has candidates
    /// `cands[accept_off[s]..accept_off[s] + accept_len[s]]`.
    Dfa {
        dfa: Dfa,
        accept_off: Vec<u32>,
        accept_len: Vec<u16>,
    },
    /// Addresses: longest-prefix-match entries (a `/0` entry exists for both families).
    Lpm(Vec<LpmEntry>),
}

/// One LPM trie entry: a prefix and the candidates of addresses whose longest hit it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LpmEntry {
    /// 4 or 6.
    pub family: u8,
    pub prefix_len: u8,
    /// Network address; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
    pub cand_off: u32,
    pub cand_len: u16,
}

/// One kernel-enforced rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Index into [`LayerTables::rule_names`].
    pub rule: u32,
    /// Verdict code after monitor mode.
    pub verdict: u8,
    /// OR of the bits of its binary globs; 0 = any process.
    pub binary_req: u64,
    /// Bit `id` per agent type; 0 = any process.
    pub agent_mask: u64,
    /// OR of the bits of its domain patterns; 0 = no domain condition.
    pub domain_req: u64,
    pub port_off: u32,
    /// 0 = any port.
    pub port_len: u32,
}

impl RuleMeta {
    /// Whether the rule applies to every request its resource matches.
    pub(crate) fn unfiltered(&self) -> bool {
        self.binary_req == 0 && self.agent_mask == 0 && self.domain_req == 0 && self.port_len == 0
    }
}

impl KernelTables {
    /// The decision layer of layer index `layer`.
    pub fn layer(&self, layer: u32) -> Layer {
        match self.layers.get(layer as usize) {
            Some(l) if layer > 0 => Layer::Overlay(l.policy.clone()),
            _ => Layer::Base,
        }
    }

    /// The name of rule `rule` of layer `layer`.
    pub fn rule_name(&self, layer: u32, rule: u32) -> Option<&str> {
        let l = self.layers.get(layer as usize)?;
        l.rule_names.get(rule as usize).map(String::as_str)
    }

    /// DFA state counts per (layer, action) with a DFA, for diagnostics.
    pub fn dfa_states(&self) -> Vec<(u32, Action, usize)> {
        let mut out = Vec::new();
        for (li, layer) in self.layers.iter().enumerate() {
            for (action, table) in Action::ALL.iter().zip(&layer.actions) {
                if let Matcher::Dfa { dfa, .. } = &table.matcher {
                    out.push((li as u32, *action, dfa.states()));
                }
            }
        }
        out
    }
}
