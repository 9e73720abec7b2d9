//! Errors. Parse errors ([`ParseError`]: the YAML could not become a
//! [`crate::Template`]) and validation errors ([`ValidationError`]: it did,
//! but a value is wrong) are distinct types; both carry the file, line and
//! column, and their `Display` is the human output:
//!
//! ```text
//! berth.yaml:3:9: error: size "4GB" has an ambiguous unit "GB": use a binary unit ...
//!   |
//! 3 | memory: 4GB
//!   |         ^
//! ```

use std::fmt;
use std::path::PathBuf;

/// Where a value sits: a file (or `template:NAME`), 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The path as given, or `template:NAME` for a shipped template.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The text of `line`, for the excerpt.
    pub source_line: String,
}

impl Pos {
    pub(crate) fn new(file: &str, text: &str, line: usize, column: usize) -> Self {
        let source_line = text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        Self {
            file: file.to_owned(),
            line,
            column,
            source_line,
        }
    }

    fn render(&self, f: &mut fmt::Formatter<'_>, message: &str) -> fmt::Result {
        writeln!(
            f,
            "{}:{}:{}: error: {message}",
            self.file, self.line, self.column
        )?;
        let gutter = " ".repeat(self.line.to_string().len());
        writeln!(f, "{gutter} |")?;
        writeln!(f, "{} | {}", self.line, self.source_line)?;
        // Columns count characters; keep tabs so the caret lines up.
        let pad: String = self
            .source_line
            .chars()
            .take(self.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{gutter} | {pad}^")
    }
}

/// The YAML did not deserialize: syntax, unknown field, wrong type,
/// duplicate key, bad size, port out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pos.render(f, &self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed value that is not acceptable (missing mount location, empty
/// port range, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pos.render(f, &self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Every validation error found in one pass (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    pub fn first(&self) -> &ValidationError {
        &self.0[0]
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Everything that can go wrong loading a template. `Display` is the
/// human output; print it with `{err}` (the located variants carry their
/// excerpt) or `{err:#}` through anyhow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read template {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write template {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(ParseError),
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("{pos_message}")]
    Base {
        /// Rendered position + message, e.g. base not found or a cycle.
        pos_message: String,
        pos: Pos,
    },
    #[error("unknown template {name:?}; shipped templates: {known}")]
    UnknownBuiltin { name: String, known: String },
    #[error("{path} already exists; not overwriting it")]
    Exists { path: PathBuf },
}

impl Error {
    /// The position the error points at, if it has one.
    pub fn pos(&self) -> Option<&Pos> {
        match self {
            Error::Parse(e) => Some(&e.pos),
            Error::Invalid(e) => Some(&e.first().pos),
            Error::Base { pos, .. } => Some(pos),
            _ => None,
        }
    }

    pub(crate) fn base(pos: Pos, message: String) -> Self {
        let pos_message = ValidationError {
            pos: pos.clone(),
            message,
        }
        .to_string();
        Error::Base { pos_message, pos }
    }
}

/// What the CLI prints: the error's `Display` is the report.
pub type Report = Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;
