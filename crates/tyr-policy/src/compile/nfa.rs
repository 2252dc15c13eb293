//! A byte-level NFA built from path globs and SNI patterns; input to the subset construction.

use crate::glob::{ByteSet, Part, Segment};

/// No accept tag.
const NONE: u32 = u32::MAX;

/// Every byte except `/`.
pub(crate) fn non_slash() -> ByteSet {
    let mut s = ByteSet([u64::MAX; 4]);
    s.0[0] &= !(1u64 << b'/');
    s
}

fn single(b: u8) -> ByteSet {
    let mut s = ByteSet::default();
    s.insert(b);
    s
}

/// States with byte-set transitions, ε-moves and at most one accept tag each.
#[derive(Default)]
pub(crate) struct Nfa {
    pub(crate) trans: Vec<Vec<(ByteSet, u32)>>,
    pub(crate) eps: Vec<Vec<u32>>,
    pub(crate) accept: Vec<u32>,
    pub(crate) starts: Vec<u32>,
    /// State 0 is a marker present only before any input: the empty input matches no
    /// absolute glob (a path starts with `/`).
    pub(crate) reject_empty: bool,
}

impl Nfa {
    /// An NFA for absolute path globs (the empty input never matches).
    pub(crate) fn for_paths() -> Nfa {
        let mut nfa = Nfa {
            reject_empty: true,
            ..Nfa::default()
        };
        let marker = nfa.state();
        nfa.starts.push(marker);
        nfa
    }

    /// An NFA for SNI patterns.
    pub(crate) fn for_names() -> Nfa {
        Nfa::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.accept.len()
    }

    fn state(&mut self) -> u32 {
        self.trans.push(Vec::new());
        self.eps.push(Vec::new());
        self.accept.push(NONE);
        (self.accept.len() - 1) as u32
    }

    fn edge(&mut self, from: u32, set: ByteSet, to: u32) {
        self.trans[from as usize].push((set, to));
    }

    /// Adds an absolute glob (`Glob::All` must be handled by the caller as a catch-all).
    ///
    /// The input is read as tokens `/part`; a state `b_i` sits on a token boundary after
    /// segment `i`. `**` loops over whole tokens and may be skipped; a part segment consumes
    /// exactly one token.
    pub(crate) fn add_glob(&mut self, segments: &[Segment], tag: u32) {
        let ns = non_slash();
        let mut b = self.state();
        self.starts.push(b);
        for seg in segments {
            let nb = self.state();
            match seg {
                Segment::GlobStar => {
                    self.eps[b as usize].push(nb);
                    let g = self.state();
                    self.edge(b, single(b'/'), g);
                    self.edge(g, ns, g);
                    self.eps[g as usize].push(b);
                }
                Segment::Parts(parts) => {
                    let mut cur = self.state();
                    self.edge(b, single(b'/'), cur);
                    for part in parts {
                        let set = match part {
                            Part::Star => {
                                self.edge(cur, ns, cur);
                                continue;
                            }
                            Part::Byte(x) => single(*x),
                            Part::AnyByte => ns,
                            Part::Class(c) => ByteSet([c.0[0] & ns.0[0], c.0[1], c.0[2], c.0[3]]),
                        };
                        let n = self.state();
                        self.edge(cur, set, n);
                        cur = n;
                    }
                    self.eps[cur as usize].push(nb);
                }
            }
            b = nb;
        }
        self.accept[b as usize] = tag;
    }

    /// Adds one alternative of a name pattern: literal bytes and `*` (any run of `star`).
    pub(crate) fn add_name(
        &mut self,
        parts: impl IntoIterator<Item = Option<u8>>,
        star: ByteSet,
        tag: u32,
    ) {
        let mut cur = self.state();
        self.starts.push(cur);
        for part in parts {
            match part {
                None => self.edge(cur, star, cur),
                Some(b) => {
                    let n = self.state();
                    self.edge(cur, single(b), n);
                    cur = n;
                }
            }
        }
        self.accept[cur as usize] = tag;
    }
}
