//! YAML → validated [`Policy`].

use crate::error::PolicyError;
use crate::model::Policy;

/// Parses and validates a policy document. On error, every problem found is returned and
/// nothing is produced.
pub fn parse(yaml: &str) -> Result<Policy, Vec<PolicyError>> {
    let _ = yaml;
    todo!("parse")
}
