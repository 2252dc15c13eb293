//! Subset construction: NFA → byte-class DFA with a dead state for early exit.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::nfa::Nfa;
use crate::glob::ByteSet;

/// "No state" (e.g. a DFA without a dead state).
pub const NO_STATE: u32 = u32::MAX;

/// A byte-level DFA in the layout of the kernel maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dfa {
    /// Byte → class id (256 entries).
    pub classes: Vec<u16>,
    /// Number of byte classes.
    pub nclasses: u32,
    /// `next[state * nclasses + class]` → state.
    pub next: Vec<u32>,
    pub start: u32,
    /// The state no input leaves and that matches nothing but catch-alls ([`NO_STATE`] when
    /// never reached).
    pub dead: u32,
}

impl Dfa {
    /// Number of states.
    pub fn states(&self) -> usize {
        self.next
            .len()
            .checked_div(self.nclasses as usize)
            .unwrap_or(0)
    }

    /// Walks `input` from the start state; `None` when the tables are inconsistent.
    pub fn walk(&self, input: &[u8]) -> Option<u32> {
        let n = self.nclasses as usize;
        let mut state = self.start;
        for &b in input {
            if state == self.dead {
                break;
            }
            let class = *self.classes.get(b as usize)? as usize;
            state = *self.next.get(state as usize * n + class)?;
        }
        Some(state)
    }
}

/// A DFA and, per state, the sorted accept tags of the NFA states it stands for.
pub(crate) struct Built {
    pub(crate) dfa: Dfa,
    pub(crate) tags: Vec<Vec<u32>>,
}

/// Partitions the bytes so that every transition set is a union of classes. Returns the
/// class of each byte and the number of classes.
fn byte_classes(sets: &[[u64; 4]]) -> (Vec<u16>, usize) {
    let mut class = vec![0u16; 256];
    let mut n = 1usize;
    for set in sets {
        let set = ByteSet(*set);
        let mut remap = vec![u16::MAX; 2 * n];
        let mut m = 0u16;
        for b in 0..=255u8 {
            let k = class[b as usize] as usize * 2 + usize::from(set.contains(b));
            if remap[k] == u16::MAX {
                remap[k] = m;
                m += 1;
            }
            class[b as usize] = remap[k];
        }
        n = m as usize;
    }
    (class, n)
}

/// The NFA's transitions in class terms: the classes each distinct byte set covers, and per
/// NFA state its transitions as (byte-set index, target).
struct ClassTrans {
    classes: Vec<u16>,
    nclasses: usize,
    covers: Vec<Vec<u16>>,
    trans: Vec<Vec<(usize, u32)>>,
}

fn class_trans(nfa: &Nfa) -> ClassTrans {
    let mut sets: Vec<[u64; 4]> = nfa.trans.iter().flatten().map(|(s, _)| s.0).collect();
    sets.sort_unstable();
    sets.dedup();
    let (classes, nclasses) = byte_classes(&sets);
    let covers = sets
        .iter()
        .map(|set| {
            let set = ByteSet(*set);
            let mut cs: Vec<u16> = (0..=255u8)
                .filter(|&b| set.contains(b))
                .map(|b| classes[b as usize])
                .collect();
            cs.sort_unstable();
            cs.dedup();
            cs
        })
        .collect();
    let trans = nfa
        .trans
        .iter()
        .map(|ts| {
            ts.iter()
                .map(|(set, t)| (sets.binary_search(&set.0).unwrap_or(0), *t))
                .collect()
        })
        .collect();
    ClassTrans {
        classes,
        nclasses,
        covers,
        trans,
    }
}

/// ε-closure of `seeds`, sorted.
fn closure(nfa: &Nfa, seeds: &mut Vec<u32>, mark: &mut [u32], stamp: u32) {
    let mut i = 0;
    for &s in seeds.iter() {
        mark[s as usize] = stamp;
    }
    while i < seeds.len() {
        let s = seeds[i] as usize;
        for &t in &nfa.eps[s] {
            if mark[t as usize] != stamp {
                mark[t as usize] = stamp;
                seeds.push(t);
            }
        }
        i += 1;
    }
    seeds.sort_unstable();
}

/// Determinises `nfa`; `Err(())` when more than `max_states` states would be needed.
pub(crate) fn determinize(nfa: &Nfa, max_states: usize) -> Result<Built, ()> {
    let ct = class_trans(nfa);
    let nclasses = ct.nclasses;
    let mut mark = vec![0u32; nfa.len()];
    let mut stamp = 1u32;
    let mut start = nfa.starts.clone();
    start.sort_unstable();
    start.dedup();
    closure(nfa, &mut start, &mut mark, stamp);

    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut dead = if start.is_empty() { 0 } else { NO_STATE };
    let mut sets: Vec<Vec<u32>> = vec![start.clone()];
    ids.insert(start, 0);
    let mut next: Vec<u32> = Vec::new();
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); nclasses];
    let mut i = 0;
    while i < sets.len() {
        for &q in &sets[i] {
            for &(set, t) in &ct.trans[q as usize] {
                for &c in &ct.covers[set] {
                    buckets[c as usize].push(t);
                }
            }
        }
        for bucket in buckets.iter_mut() {
            let mut targets = std::mem::take(bucket);
            targets.sort_unstable();
            targets.dedup();
            stamp += 1;
            closure(nfa, &mut targets, &mut mark, stamp);
            let id = match ids.get(targets.as_slice()) {
                Some(&id) => {
                    targets.clear();
                    *bucket = targets;
                    id
                }
                None => {
                    if sets.len() >= max_states {
                        return Err(());
                    }
                    let id = sets.len() as u32;
                    if targets.is_empty() {
                        dead = id;
                    }
                    ids.insert(targets.clone(), id);
                    sets.push(targets);
                    id
                }
            };
            next.push(id);
        }
        i += 1;
    }
    let tags = sets
        .iter()
        .map(|set| {
            let mut tags: Vec<u32> = if nfa.reject_empty && set.first() == Some(&0) {
                Vec::new()
            } else {
                set.iter()
                    .map(|&q| nfa.accept[q as usize])
                    .filter(|&t| t != u32::MAX)
                    .collect()
            };
            tags.sort_unstable();
            tags.dedup();
            tags
        })
        .collect();
    Ok(Built {
        dfa: Dfa {
            classes: ct.classes,
            nclasses: nclasses as u32,
            next,
            start: 0,
            dead,
        },
        tags,
    })
}
