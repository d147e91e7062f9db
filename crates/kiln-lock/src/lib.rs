//! Lock files: what versions a package manager's lock file pins and how two of them differ;
//! kiln.lock (what kiln built from what) read and written; files replaced atomically, and their
//! directories locked while a process merges into them.

mod atomic;
mod declared;
mod diff;
mod kiln_lock;
mod packages;
mod pins;

pub use atomic::{DirLock, lock_dir, remove_stale_temps, write_atomic, write_atomic_with};
pub use declared::{declared, unlocked};
pub use diff::{Changes, diff};
pub use kiln_lock::{Base, KilnLock, Target};
pub use kiln_manifest::LockFormat;
pub use packages::{Package, packages};
pub use pins::{normalize_python_name, pins};

/// Why a lock file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The text is not valid for its format; `line` and `column` are 1-based.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The text parses but its content is not what kiln can use.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

impl LockError {
    /// A syntax error at byte offset `at` of `text`.
    pub(crate) fn at(file: &str, text: &str, at: usize, message: impl Into<String>) -> Self {
        let (line, column) = kiln_manifest::line_column(text, at);
        LockError::Syntax {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let at = e.span().map_or(0, |s| s.start);
        Self::at(file, text, at, e.message().trim_end())
    }
}
