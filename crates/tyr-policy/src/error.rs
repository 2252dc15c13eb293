//! Validation errors with source locations and hints.

use std::fmt;

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

impl fmt::Display for PolicyError {
    /// `LINE:COLUMN: message[ (rule `NAME`)][; hint]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.location.line, self.location.column, self.message
        )?;
        if let Some(rule) = &self.rule {
            write!(f, " (rule `{rule}`)")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}
