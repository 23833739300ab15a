//! Configuration errors that name the file, the line and column, and a fix.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: PathBuf,
    /// 1-based line of the offending value (0 when the file could not be read).
    pub line: usize,
    /// 1-based column of the offending value.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is more to say than the message.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The error on one line, its hint after a `; hint:`: for logs, where a line is a record.
    pub fn one_line(&self) -> String {
        self.to_string().replace("\n  hint: ", "; hint: ")
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors against one source text, turning byte spans into lines and columns.
#[derive(Debug)]
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    source: &'a str,
    pub(crate) errors: Vec<ConfigError>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a Path, source: &'a str) -> Self {
        Diagnostics {
            file,
            source,
            errors: Vec::new(),
        }
    }

    /// Records an error at `span` (a byte range of the source; `None` for the file as a whole).
    pub(crate) fn error(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = match span {
            Some(span) => line_column(self.source, span.start),
            None => (1, 1),
        };
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn file(&self) -> &Path {
        self.file
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        line_column(self.source, offset).0
    }
}

/// The 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = "a = 1\nbé = 2\n";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 6), (2, 1));
        assert_eq!(line_column(source, source.find('=').unwrap_or(0)), (1, 3));
        // The column counts characters: `é` is two bytes.
        assert_eq!(line_column(source, 10), (2, 4));
    }

    #[test]
    fn an_error_shows_where_and_how_to_fix_on_two_lines_or_one() {
        let error = ConfigError {
            file: PathBuf::from("floodwall.toml"),
            line: 3,
            column: 9,
            message: "unknown algorithm \"leaky\"".into(),
            hint: Some("use gcra or sliding_window".into()),
        };
        let shown = "floodwall.toml:3:9: unknown algorithm \"leaky\"";
        assert_eq!(
            error.to_string(),
            format!("{shown}\n  hint: use gcra or sliding_window")
        );
        assert_eq!(
            error.one_line(),
            format!("{shown}; hint: use gcra or sliding_window")
        );
        let unread = ConfigError {
            line: 0,
            hint: None,
            ..error.clone()
        };
        assert_eq!(
            unread.one_line(),
            "floodwall.toml: unknown algorithm \"leaky\""
        );
        let both = ConfigErrors(vec![unread.clone(), unread]);
        assert_eq!(
            both.to_string(),
            "floodwall.toml: unknown algorithm \"leaky\"\nfloodwall.toml: unknown algorithm \"leaky\""
        );
    }
}
