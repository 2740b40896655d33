//! What went wrong, where: every problem names file, line and key so `portier check` output
//! can be acted on without reading the parser.

use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Dotted path such as `service[1].backend[0].address`; empty only when a syntax error
    /// sits where no key can be told.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file, self.line, self.key, self.message
            )
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is part of the message, not a source: a chain printer (anyhow's `{:#}`)
    // would otherwise print it twice.
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    /// Every problem found, in file order, not just the first.
    #[error("{}", ProblemLines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found; empty for an I/O error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid(problems) => problems,
        }
    }
}

struct ProblemLines<'a>(&'a [Problem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
