//! The Tyr policy language (SPEC §6): parse and validate YAML, evaluate requests (the reference
//! semantics), and compile effective sets into the tables the kernel programs walk.
//!
//! This crate is the one home of verdict semantics: the daemon, the server (drift) and the CLI
//! all call it. It does no I/O.

pub mod compile;
pub mod condition;
pub mod error;
pub mod eval;
pub mod glob;
pub mod model;
pub mod parse;
pub mod request;
pub mod sni;

pub use error::PolicyError;
pub use eval::{Evaluator, evaluate};
pub use model::*;
pub use parse::parse;
pub use request::{Request, Resource};
