//! `tyr_policy::compile::KernelTables` → the contents of the BPF table maps.
//!
//! Every DFA and every (layer, action) table is concatenated into shared arrays; descriptors
//! hold the offsets. Destination prefixes go into one LPM trie keyed by (slot, layer,
//! family, address). `tls_connect` is not decided in-kernel yet: its tables keep their
//! default only.

use tyr_policy::compile::{ActionTable, Dfa, KernelTables, Matcher};
use tyr_policy::model::Action;

use super::maps::{
    CONFIG_ALLOW_EVENTS_ALL, LPM_KEY_BITS, MAX_LAYERS, NUM_ACTIONS, TyrAccept, TyrConfig, TyrDfa,
    TyrLpmData, TyrLpmVal, TyrPortRange, TyrRule, TyrTable,
};

/// Why tables cannot be written to the kernel maps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{count} layers, the kernel walks at most {MAX_LAYERS}")]
    TooManyLayers { count: usize },
    #[error("layer {layer} has {count} action tables, expected {NUM_ACTIONS}")]
    Actions { layer: usize, count: usize },
    #[error("a DFA has {0} byte-class entries, expected 256")]
    Classes(usize),
    #[error("the compiled tables need {need} entries in map `{map}`, which holds {capacity}")]
    Capacity {
        map: &'static str,
        need: usize,
        capacity: u32,
    },
}

/// Where one table slot starts in each shared array (the tables are double-buffered, see
/// `bpf/tyr_maps.h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bases {
    /// The slot itself (part of every LPM key).
    pub slot: u8,
    pub classes: u32,
    pub next: u32,
    pub accept: u32,
    pub bin_masks: u32,
    pub cands: u32,
    pub rules: u32,
    pub ports: u32,
}

/// One LPM trie entry: total prefix length (with [`LPM_KEY_BITS`]), key data, value.
pub type LpmRow = (u32, TyrLpmData, TyrLpmVal);

/// The flattened tables of one slot: the arrays are written at their `bases`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flat {
    pub bases: Bases,
    pub config: TyrConfig,
    /// Index `layer * NUM_ACTIONS + action`.
    pub tables: Vec<TyrTable>,
    pub classes: Vec<u16>,
    pub next: Vec<u32>,
    pub accept: Vec<TyrAccept>,
    pub bin_masks: Vec<u64>,
    pub cands: Vec<u32>,
    pub rules: Vec<TyrRule>,
    pub ports: Vec<TyrPortRange>,
    pub lpm: Vec<LpmRow>,
}

/// Flattens `t`; `generation` is reported in every event; `allow_events_all` makes the
/// kernel report allow events for every process (`events.allow: all`).
pub fn flatten(
    t: &KernelTables,
    generation: u64,
    allow_events_all: bool,
    bases: Bases,
) -> Result<Flat, TableError> {
    if t.layers.len() > MAX_LAYERS {
        return Err(TableError::TooManyLayers {
            count: t.layers.len(),
        });
    }
    let mut f = Flat {
        bases,
        ..Flat::default()
    };
    f.config.nlayers = t.layers.len() as u32;
    f.config.generation = generation;
    if allow_events_all {
        f.config.flags |= CONFIG_ALLOW_EVENTS_ALL;
    }
    if !t.binary_globs.is_empty() {
        f.config.binaries = f.dfa(&t.binaries)?;
        f.config.binaries.accept_off = f.bases.bin_masks.saturating_add(u32(f.bin_masks.len()));
        f.bin_masks.extend_from_slice(&t.binary_masks);
        f.config.has_binaries = 1;
    }
    for (li, layer) in t.layers.iter().enumerate() {
        f.config.layer_agent[li] = layer.agent_type_id;
        if layer.actions.len() != NUM_ACTIONS {
            return Err(TableError::Actions {
                layer: li,
                count: layer.actions.len(),
            });
        }
        for (action, table) in Action::ALL.iter().zip(&layer.actions) {
            let row = match action.is_path() || *action == Action::NetConnect {
                true => f.table(table, li as u8)?,
                false => TyrTable {
                    deflt: table.default,
                    ..TyrTable::default()
                },
            };
            if li == 0 && row.nrules == 0 && row.deflt == 0 {
                f.config.base_quiet |= 1 << action.index();
            }
            f.tables.push(row);
        }
    }
    Ok(f)
}

fn u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Flat {
    fn dfa(&mut self, dfa: &Dfa) -> Result<TyrDfa, TableError> {
        if dfa.classes.len() != 256 {
            return Err(TableError::Classes(dfa.classes.len()));
        }
        let d = TyrDfa {
            class_off: self.bases.classes.saturating_add(u32(self.classes.len())),
            next_off: self.bases.next.saturating_add(u32(self.next.len())),
            accept_off: 0,
            nclasses: dfa.nclasses,
            start: dfa.start,
            dead: dfa.dead,
            nstates: u32(dfa.states()),
            _pad: 0,
        };
        self.classes.extend_from_slice(&dfa.classes);
        self.next.extend_from_slice(&dfa.next);
        Ok(d)
    }

    fn table(&mut self, t: &ActionTable, layer: u8) -> Result<TyrTable, TableError> {
        let port_base = self.bases.ports.saturating_add(u32(self.ports.len()));
        let mut row = TyrTable {
            rule_off: self.bases.rules.saturating_add(u32(self.rules.len())),
            nrules: u32(t.rules.len()),
            cand_off: self.bases.cands.saturating_add(u32(self.cands.len())),
            ncands: u32(t.cands.len()),
            any_off: t.any_off,
            any_len: t.any_len,
            deflt: t.default,
            ..TyrTable::default()
        };
        self.rules.extend(t.rules.iter().map(|r| TyrRule {
            binary_req: r.binary_req,
            agent_mask: r.agent_mask,
            domain_req: r.domain_req,
            rule: r.rule,
            port_off: port_base.saturating_add(r.port_off),
            port_len: r.port_len,
            verdict: r.verdict,
            _pad: [0; 3],
        }));
        self.ports.extend(
            t.ports
                .iter()
                .map(|&[start, end]| TyrPortRange { start, end }),
        );
        self.cands.extend_from_slice(&t.cands);
        if let Matcher::Lpm(entries) = &t.matcher {
            let slot = self.bases.slot;
            self.lpm.extend(entries.iter().map(|e| {
                let data = TyrLpmData {
                    slot,
                    layer,
                    family: e.family,
                    addr: e.addr,
                    _pad: 0,
                };
                let val = TyrLpmVal {
                    off: e.cand_off,
                    len: e.cand_len,
                    _pad: 0,
                };
                (LPM_KEY_BITS + u32::from(e.prefix_len), data, val)
            }));
        }
        if let Matcher::Dfa {
            dfa,
            accept_off,
            accept_len,
        } = &t.matcher
        {
            row.dfa = self.dfa(dfa)?;
            row.dfa.accept_off = self.bases.accept.saturating_add(u32(self.accept.len()));
            row.has_dfa = 1;
            self.accept.extend(
                accept_off
                    .iter()
                    .zip(accept_len)
                    .map(|(&off, &len)| TyrAccept { off, len, _pad: 0 }),
            );
        }
        Ok(row)
    }

    /// Checks every array against the entries one slot has in its map.
    pub fn check(&self, capacity: impl Fn(&'static str) -> u32) -> Result<(), TableError> {
        let sizes = [
            ("tyr_tables", self.tables.len()),
            ("tyr_classes", self.classes.len()),
            ("tyr_next", self.next.len()),
            ("tyr_accept", self.accept.len()),
            ("tyr_bin_masks", self.bin_masks.len()),
            ("tyr_cands", self.cands.len()),
            ("tyr_rules", self.rules.len()),
            ("tyr_ports", self.ports.len()),
            ("tyr_lpm", self.lpm.len()),
        ];
        for (map, need) in sizes {
            let capacity = capacity(map);
            if need > capacity as usize {
                return Err(TableError::Capacity {
                    map,
                    need,
                    capacity,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tyr_policy::compile::{Limits, compile};
    use tyr_policy::glob::Homes;
    use tyr_policy::model::EffectiveSet;

    fn tables(yaml: &str) -> KernelTables {
        let policy = tyr_policy::parse(yaml).expect("policy");
        let set = EffectiveSet {
            base: Some(policy),
            overlays: Vec::new(),
        };
        compile(&set, &Homes::default(), &Limits::default()).expect("compile")
    }

    #[test]
    fn offsets_point_into_the_shared_arrays() {
        let t = tables(
            "apiVersion: tyr.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n    - {name: a, action: file_read, resource_pattern: /a/**, verdict: deny}\n    - {name: b, action: exec, resource_pattern: /b, verdict: alert}\n",
        );
        let bases = Bases {
            classes: 1000,
            rules: 10,
            ..Bases::default()
        };
        let f = flatten(&t, 7, false, bases).expect("flatten");
        assert_eq!(f.config.nlayers, 1);
        assert_eq!(f.config.generation, 7);
        assert_eq!(f.tables.len(), NUM_ACTIONS);
        let read = f.tables[Action::FileRead.index()];
        let exec = f.tables[Action::Exec.index()];
        assert_eq!((read.has_dfa, read.nrules), (1, 1));
        assert_eq!((exec.has_dfa, exec.nrules), (1, 1));
        assert_eq!((read.rule_off, exec.rule_off), (10, 11));
        assert_eq!(exec.dfa.class_off, 1256);
        assert_eq!(exec.dfa.next_off, read.dfa.nstates * read.dfa.nclasses);
        assert_eq!(f.rules[1].verdict, tyr_policy::compile::VERDICT_ALERT);
        assert_eq!(f.tables[Action::FileWrite.index()].nrules, 0);
        // Only the base tables without rules that allow are quiet (the fast path).
        let quiet = |a: Action| f.config.base_quiet & (1 << a.index()) != 0;
        assert!(!quiet(Action::FileRead) && !quiet(Action::Exec));
        assert!(quiet(Action::FileWrite) && quiet(Action::NetConnect));
        let small = |_: &str| 1;
        assert!(matches!(
            f.check(small),
            Err(TableError::Capacity {
                map: "tyr_tables",
                ..
            })
        ));
    }
}
