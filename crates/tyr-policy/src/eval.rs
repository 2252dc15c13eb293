//! The reference evaluator: SPEC §6 semantics in plain Rust over [`Policy`] values.

use crate::glob::Homes;
use crate::model::{Decision, EffectiveSet};
use crate::request::Request;

/// Decides `req` against `set`; `~/` in patterns expands to `homes`.
pub fn evaluate(set: &EffectiveSet, req: &Request, homes: &Homes) -> Decision {
    let _ = (set, req, homes);
    todo!("evaluate")
}
