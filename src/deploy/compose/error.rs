//! The one error type of the compose model: where (the key path and the YAML line) and what.

use std::fmt;

/// Why a compose file cannot be deployed, as a `failed` status says it: the key path
/// (`services.db.build`), the YAML line where it is (0: no line, e.g. a missing `services`) and
/// what to do. It never carries a value from the deploy's `env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeError {
    /// Dotted key path, `[n]` for a list item; empty for the file as a whole.
    pub path: String,
    /// 1-based line in the compose file; 0 when there is none.
    pub line: usize,
    pub message: String,
}

impl ComposeError {
    pub fn new(path: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        ComposeError {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, 0) => write!(f, "{}", self.message),
            (true, line) => write!(f, "line {line}: {}", self.message),
            (false, 0) => write!(f, "{}: {}", self.path, self.message),
            (false, line) => write!(f, "{} (line {line}): {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ComposeError {}

pub type Result<T> = std::result::Result<T, ComposeError>;
