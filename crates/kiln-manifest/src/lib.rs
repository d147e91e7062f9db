//! Parses kiln manifests (TOML, version 1), validates them strictly and resolves variables,
//! profiles and image overrides into the [`Manifest`] model, and holds kiln's table of package
//! managers ([`ManagerSpec`]). Pure: no file or network IO; the caller hands in each file's
//! path and text, and the environment to read variables from.

mod cx;
mod diagnostic;
mod load;
mod managers;
mod model;
#[cfg(test)]
mod tests;

pub use cx::suggest;
pub use diagnostic::{Diagnostic, Diagnostics, LineIndex, line_column};
pub use managers::{LockFormat, MANAGERS, ManagerSpec};
pub use model::*;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One manifest file's path (as it should appear in messages) and its text.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Inputs that are not in the files.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--profile NAME`.
    pub profile: Option<String>,
    /// `--set K=V`, highest precedence.
    pub set: BTreeMap<String, String>,
    /// The process environment (for `vars.X.env`), passed in so loading stays pure.
    pub env: BTreeMap<String, String>,
}

/// Parse, validate and resolve every source into one manifest. All problems found are
/// reported together, each naming file, line, column and key.
pub fn load(sources: &[Source], options: &LoadOptions) -> Result<Manifest, Diagnostics> {
    load::load(sources, options)
}
