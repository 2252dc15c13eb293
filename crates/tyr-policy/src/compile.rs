//! Effective set → kernel tables, the per-rule enforcement report, and the table emulator.
//!
//! The tables are what the BPF programs walk: per layer (base, then overlays tagged with their
//! agent-type id) and per action, a rule array, a default verdict and a resource matcher (a
//! byte-class DFA for paths and SNI, LPM entries for addresses). Every matcher yields the
//! ordered *candidates* — rules whose resource matches — and the walker takes the first whose
//! process filters (binary mask, agent type, domains, ports) pass. Rules with a Cedar
//! `condition` are not in the tables: they are evaluated in userspace after the fact.

mod dfa;
mod emulate;
mod net;
mod nfa;
mod report;
mod tables;

use std::collections::HashMap;

use crate::glob::{self, Glob, Homes};
use crate::model::{Action, EffectiveSet, Mode, Policy, Rule, Verdict};
use crate::sni::{SniPart, SniPattern};
use nfa::Nfa;

pub use dfa::{Dfa, NO_STATE};
pub use emulate::{
    KernelDecision, KernelRequest, KernelResource, MAX_CANDIDATES, MAX_LAYERS, MAX_PATH_LEN,
    MAX_SNI_LEN, domain_mask, emulate, kernel_request,
};
pub use report::{RuleReport, report};
pub use tables::{
    ActionTable, KernelTables, LayerTables, LpmEntry, Matcher, RuleMeta, VERDICT_ALERT,
    VERDICT_ALLOW, VERDICT_DENY, verdict_code, verdict_of,
};

/// Size limits of the compiled tables (what the kernel maps are sized for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// States of one DFA (per layer and action, and the binaries DFA).
    pub max_dfa_states: usize,
    /// Kernel-enforced rules of one (layer, action).
    pub max_rules_per_table: usize,
    /// Candidate rules of one DFA state or LPM entry (at most [`MAX_CANDIDATES`]).
    pub max_candidates: usize,
    /// Distinct binary globs (at most 64: one bit each in a `u64` mask).
    pub max_binary_globs: usize,
    /// Distinct agent types (at most 63: ids 1..=63).
    pub max_agent_types: usize,
    /// Distinct `domains` patterns (at most 64: one bit each).
    pub max_domains: usize,
    /// Overlays (at most `MAX_LAYERS - 1`).
    pub max_overlays: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_dfa_states: 65_536,
            max_rules_per_table: 4_096,
            max_candidates: MAX_CANDIDATES,
            max_binary_globs: 64,
            max_agent_types: 63,
            max_domains: 64,
            max_overlays: MAX_LAYERS - 1,
        }
    }
}

/// Why an effective set cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{layer}: {table} needs more than {limit} DFA states; simplify the patterns (leading `**/` patterns multiply states)"
    )]
    TooManyStates {
        layer: String,
        table: String,
        limit: usize,
    },
    #[error("{layer}: {action} has {count} kernel-enforced rules, more than the limit of {limit}")]
    TooManyRules {
        layer: String,
        action: Action,
        count: usize,
        limit: usize,
    },
    #[error(
        "{layer}: {action}: one resource is matched by {count} candidate rules (up to rule `{rule}`), more than the limit of {limit}"
    )]
    TooManyCandidates {
        layer: String,
        action: Action,
        rule: String,
        count: usize,
        limit: usize,
    },
    #[error("{count} distinct {what} in the effective set, more than the limit of {limit}")]
    TooMany {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{layer}: rule `{rule}`: invalid pattern `{pattern}`: {message}")]
    InvalidPattern {
        layer: String,
        rule: String,
        pattern: String,
        message: String,
    },
}

/// Compiles `set` for a host whose home directories are `homes`.
pub fn compile(
    set: &EffectiveSet,
    homes: &Homes,
    limits: &Limits,
) -> Result<KernelTables, CompileError> {
    let audit = crate::eval::builtin_audit();
    let mut layers: Vec<(String, &Policy, u8)> = Vec::new();
    let base = set.base.as_ref().unwrap_or(&audit);
    layers.push(("base".into(), base, 0));
    let max_overlays = limits.max_overlays.min(MAX_LAYERS - 1);
    if set.overlays.len() > max_overlays {
        return Err(CompileError::TooMany {
            what: "overlays",
            count: set.overlays.len(),
            limit: max_overlays,
        });
    }

    let mut agent_types = Interner::default();
    for o in &set.overlays {
        agent_types.intern(&o.agent_type);
    }
    let mut binary_globs = Interner::default();
    let mut domains = Interner::default();
    // Conditional rules are not in the tables, so their filters take no ids or bits.
    let kernel_rules = std::iter::once(base)
        .chain(set.overlays.iter().map(|o| &o.policy))
        .flat_map(|p| p.spec.rules.iter())
        .filter(|r| r.condition.is_none());
    for rule in kernel_rules {
        rule.agent_types.iter().for_each(|t| agent_types.intern(t));
        rule.binaries.iter().for_each(|b| binary_globs.intern(b));
        rule.domains.iter().for_each(|d| domains.intern(d));
    }
    agent_types.check("agent types", limits.max_agent_types.min(63))?;
    binary_globs.check("binary globs", limits.max_binary_globs.min(64))?;
    domains.check("domain patterns", limits.max_domains.min(64))?;

    for o in &set.overlays {
        let label = format!("overlay `{}`", o.policy.metadata.name);
        layers.push((label, &o.policy, agent_types.id(&o.agent_type)));
    }

    let ctx = Ctx {
        homes,
        limits,
        agent_types: &agent_types,
        binary_globs: &binary_globs,
        domains: &domains,
    };
    let (binaries, binary_masks) = ctx.binaries_dfa()?;
    let layers = layers
        .into_iter()
        .map(|(label, policy, agent_type_id)| ctx.layer(&label, policy, agent_type_id))
        .collect::<Result<_, _>>()?;
    Ok(KernelTables {
        agent_types: agent_types.names,
        binary_globs: binary_globs.names,
        binaries,
        binary_masks,
        domains: domains.names,
        layers,
    })
}

/// Names numbered in order of first appearance.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

impl Interner {
    fn intern(&mut self, name: &str) {
        if !self.ids.contains_key(name) {
            self.ids.insert(name.to_owned(), self.names.len());
            self.names.push(name.to_owned());
        }
    }

    fn index(&self, name: &str) -> usize {
        self.ids.get(name).copied().unwrap_or(0)
    }

    /// Agent-type id (index + 1).
    fn id(&self, name: &str) -> u8 {
        (self.index(name) + 1) as u8
    }

    fn mask(&self, names: &[String], bit: impl Fn(usize) -> usize) -> u64 {
        names.iter().fold(0, |m, n| m | 1u64 << bit(self.index(n)))
    }

    fn check(&self, what: &'static str, limit: usize) -> Result<(), CompileError> {
        if self.names.len() > limit {
            return Err(CompileError::TooMany {
                what,
                count: self.names.len(),
                limit,
            });
        }
        Ok(())
    }
}

struct Ctx<'a> {
    homes: &'a Homes,
    limits: &'a Limits,
    agent_types: &'a Interner,
    binary_globs: &'a Interner,
    domains: &'a Interner,
}

/// The verdict a policy in `mode` records for `v`.
fn moded(mode: Mode, v: Verdict) -> u8 {
    match (mode, v) {
        (Mode::Monitor, Verdict::Deny) => VERDICT_ALERT,
        _ => verdict_code(v),
    }
}

impl Ctx<'_> {
    fn states_error(&self, layer: &str, table: String) -> CompileError {
        CompileError::TooManyStates {
            layer: layer.to_owned(),
            table,
            limit: self.limits.max_dfa_states,
        }
    }

    /// The binaries DFA and, per state, the mask of binary globs matched there.
    fn binaries_dfa(&self) -> Result<(Dfa, Vec<u64>), CompileError> {
        let mut nfa = Nfa::for_paths();
        let mut all = 0u64;
        for (i, pattern) in self.binary_globs.names.iter().enumerate() {
            let globs =
                glob::expand(pattern, self.homes).map_err(|e| CompileError::InvalidPattern {
                    layer: "effective set".into(),
                    rule: "binaries".into(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
            for g in globs {
                match g {
                    Glob::All => all |= 1 << i,
                    Glob::Absolute(segments) => nfa.add_glob(&segments, i as u32),
                }
            }
        }
        let built = dfa::determinize(&nfa, self.limits.max_dfa_states)
            .map_err(|()| self.states_error("effective set", "the binaries table".into()))?;
        let masks = built
            .tags
            .iter()
            .map(|tags| tags.iter().fold(all, |m, &t| m | 1 << t))
            .collect();
        Ok((built.dfa, masks))
    }

    fn layer(
        &self,
        label: &str,
        policy: &Policy,
        agent_type_id: u8,
    ) -> Result<LayerTables, CompileError> {
        let actions = Action::ALL
            .into_iter()
            .map(|action| self.action_table(label, policy, action))
            .collect::<Result<_, _>>()?;
        Ok(LayerTables {
            policy: policy.metadata.name.clone(),
            agent_type_id,
            rule_names: policy.spec.rules.iter().map(|r| r.name.clone()).collect(),
            actions,
        })
    }

    fn action_table(
        &self,
        label: &str,
        policy: &Policy,
        action: Action,
    ) -> Result<ActionTable, CompileError> {
        let mode = policy.spec.mode;
        let mut table = ActionTable {
            default: moded(mode, policy.spec.default.verdict_for(action)),
            ..ActionTable::default()
        };
        let rules: Vec<(usize, &Rule)> = policy
            .spec
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.action == action && r.condition.is_none())
            .collect();
        if rules.len() > self.limits.max_rules_per_table {
            return Err(CompileError::TooManyRules {
                layer: label.to_owned(),
                action,
                count: rules.len(),
                limit: self.limits.max_rules_per_table,
            });
        }
        if rules.is_empty() {
            return Ok(table);
        }
        let net = action == Action::NetConnect;
        for &(index, rule) in &rules {
            // Ports and domains only mean something for addresses.
            let (ports, domains): (&[_], &[_]) = match net {
                true => (&rule.ports, &rule.domains),
                false => (&[], &[]),
            };
            let port_off = table.ports.len() as u32;
            table.ports.extend(ports.iter().map(|r| [r.start, r.end]));
            table.rules.push(RuleMeta {
                rule: index as u32,
                verdict: moded(mode, rule.verdict),
                binary_req: self.binary_globs.mask(&rule.binaries, |i| i),
                agent_mask: self.agent_types.mask(&rule.agent_types, |i| i + 1),
                domain_req: self.domains.mask(domains, |i| i),
                port_off,
                port_len: ports.len() as u32,
            });
        }
        let mut cands = Candidates {
            table: &mut table,
            names: &rules,
            label,
            action,
            limit: self.limits.max_candidates.min(MAX_CANDIDATES),
            seen: HashMap::new(),
        };
        let any: Vec<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.is_catch_all() && r.ports.is_empty())
            .map(|(pos, _)| pos as u32)
            .collect();
        let (any_off, any_len) = cands.slice(&any)?;
        let matcher = match action {
            Action::NetConnect => Matcher::Lpm(net::lpm(&rules, &mut cands)?),
            Action::TlsConnect => self.sni_matcher(label, &rules, &mut cands)?,
            _ => self.path_matcher(label, &rules, &mut cands)?,
        };
        table.any_off = any_off;
        table.any_len = any_len;
        table.matcher = matcher;
        Ok(table)
    }

    fn path_matcher(
        &self,
        label: &str,
        rules: &[(usize, &Rule)],
        cands: &mut Candidates,
    ) -> Result<Matcher, CompileError> {
        let mut nfa = Nfa::for_paths();
        let mut catch_all = Vec::new();
        for (pos, (_, rule)) in rules.iter().enumerate() {
            let Some(pattern) = &rule.resource_pattern else {
                catch_all.push(pos as u32);
                continue;
            };
            let globs =
                glob::expand(pattern, self.homes).map_err(|e| CompileError::InvalidPattern {
                    layer: label.to_owned(),
                    rule: rule.name.clone(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
            for g in globs {
                match g {
                    Glob::All => catch_all.push(pos as u32),
                    Glob::Absolute(segments) => nfa.add_glob(&segments, pos as u32),
                }
            }
        }
        self.dfa_matcher(label, nfa, &catch_all, cands)
    }

    fn sni_matcher(
        &self,
        label: &str,
        rules: &[(usize, &Rule)],
        cands: &mut Candidates,
    ) -> Result<Matcher, CompileError> {
        let mut nfa = Nfa::for_names();
        let mut catch_all = Vec::new();
        let every = glob::ByteSet([u64::MAX; 4]);
        for (pos, (_, rule)) in rules.iter().enumerate() {
            let Some(pattern) = &rule.sni_pattern else {
                catch_all.push(pos as u32);
                continue;
            };
            let parsed =
                SniPattern::parse(pattern).map_err(|message| CompileError::InvalidPattern {
                    layer: label.to_owned(),
                    rule: rule.name.clone(),
                    pattern: pattern.clone(),
                    message,
                })?;
            for alt in &parsed.alternatives {
                let parts = alt.iter().map(|p| match p {
                    SniPart::Byte(b) => Some(b.to_ascii_lowercase()),
                    SniPart::Star => None,
                });
                nfa.add_name(parts, every, pos as u32);
            }
        }
        self.dfa_matcher(label, nfa, &catch_all, cands)
    }

    fn dfa_matcher(
        &self,
        label: &str,
        nfa: Nfa,
        catch_all: &[u32],
        cands: &mut Candidates,
    ) -> Result<Matcher, CompileError> {
        let built = dfa::determinize(&nfa, self.limits.max_dfa_states)
            .map_err(|()| self.states_error(label, format!("the {} table", cands.action)))?;
        let mut accept_off = Vec::with_capacity(built.tags.len());
        let mut accept_len = Vec::with_capacity(built.tags.len());
        for tags in &built.tags {
            let (off, len) = cands.slice(&merge(tags, catch_all))?;
            accept_off.push(off);
            accept_len.push(len);
        }
        Ok(Matcher::Dfa {
            dfa: built.dfa,
            accept_off,
            accept_len,
        })
    }
}

/// Merges two sorted lists of rule positions.
fn merge(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = a.iter().chain(b).copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Builds the flat candidate array of one table, sharing equal lists.
struct Candidates<'a> {
    table: &'a mut ActionTable,
    names: &'a [(usize, &'a Rule)],
    label: &'a str,
    action: Action,
    limit: usize,
    seen: HashMap<Vec<u32>, (u32, u16)>,
}

impl Candidates<'_> {
    /// Stores `list` (sorted rule positions) cut after its first unfiltered rule (later ones
    /// can never be reached) and returns its slice.
    fn slice(&mut self, list: &[u32]) -> Result<(u32, u16), CompileError> {
        let rules = &self.table.rules;
        let end = list
            .iter()
            .position(|&p| rules[p as usize].unfiltered())
            .map_or(list.len(), |i| i + 1);
        let list = &list[..end];
        if list.len() > self.limit {
            let pos = list[self.limit] as usize;
            return Err(CompileError::TooManyCandidates {
                layer: self.label.to_owned(),
                action: self.action,
                rule: self.names[pos].1.name.clone(),
                count: list.len(),
                limit: self.limit,
            });
        }
        if let Some(&s) = self.seen.get(list) {
            return Ok(s);
        }
        let s = (self.table.cands.len() as u32, list.len() as u16);
        self.table.cands.extend_from_slice(list);
        self.seen.insert(list.to_vec(), s);
        Ok(s)
    }
}
