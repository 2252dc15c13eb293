//! Validation errors with source locations and hints.

use crate::model::Location;

/// One problem in a policy document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicyError {
    /// Where in the YAML (1-based line and column).
    pub location: Location,
    /// The rule concerned, when there is one.
    pub rule: Option<String>,
    pub message: String,
    /// A suggestion, e.g. "did you mean `verdict`?".
    pub hint: Option<String>,
}
