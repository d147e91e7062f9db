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

/// Where the lines of a text start, to turn byte offsets into the one-based line and column
/// (in characters) every kiln error shows. Build it once per text when many places in it are
/// named; [`line_column`] for one.
#[derive(Debug, Clone)]
pub struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> LineIndex<'t> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// The line and column of byte `offset` (past the end: the end; inside a character: that
    /// character).
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |t| t.chars().count())
            + 1;
        (line, column)
    }
}

/// The line and column of byte `offset` of `text`, as [`LineIndex::line_column`].
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_column(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_one_based_lines_and_char_columns() {
        let text = "a = 1\nbé = \"x\"\n";
        let at = text.find("\"x\"").unwrap();
        assert_eq!(line_column(text, at), (2, 6));
        assert_eq!(line_column(text, 0), (1, 1));
        // The newline ends its line; the next byte starts the next one.
        assert_eq!(line_column(text, 5), (1, 6));
        assert_eq!(line_column(text, 6), (2, 1));
        // Inside `é`: that character. Past the end: the end.
        let inside = text.find('é').unwrap() + 1;
        assert_eq!(line_column(text, inside), (2, 2));
        assert_eq!(line_column(text, 1000), (3, 1));
        assert_eq!(line_column("", 3), (1, 1));
    }
}
