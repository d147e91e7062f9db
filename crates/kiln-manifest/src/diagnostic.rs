//! Errors that point at a place in a manifest.

use std::fmt;

use crate::Location;

/// One problem in a manifest: where, which key, what is wrong, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    /// Dotted key path, e.g. `target.web.from`.
    pub key: String,
    /// What is wrong, e.g. "unknown key `fron`".
    pub message: String,
    /// What was expected, e.g. "one of `from`, `run`, `copy`".
    pub expected: Option<String>,
    /// A suggestion, e.g. "did you mean `from`?".
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.location, self.message)?;
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.key, self.message)?;
        }
        if let Some(expected) = &self.expected {
            write!(f, "\n  expected: {expected}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one load, in file then line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
