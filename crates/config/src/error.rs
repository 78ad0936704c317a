//! The one error of loading a config: the file's name and every problem found in it, each with
//! the line and column an operator should look at, shown as `file:line:column: what is wrong`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in the config file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where to look; `None` when the problem is the file as a whole (it cannot be read, it holds
    /// several documents).
    pub location: Option<Location>,
    /// What is wrong, lowercase, without a final period.
    pub message: String,
}

/// A config that cannot be used. There is one decision for a caller to make, whatever the
/// problems are: refuse to start (exit 64) or, on reload, keep running the old config; so this is
/// a struct rather than an enum. `Display` gives one `file:line:column: what is wrong` line per
/// problem, in file order.
#[derive(Debug, thiserror::Error)]
#[error("{}", Rendered(.path, .problems))]
pub struct ConfigError {
    /// The config file as the caller named it.
    pub path: PathBuf,
    /// Every problem found; never empty. Every bad value and every failed check is reported; a
    /// problem with the structure (YAML syntax, an unknown or missing key, a list where a
    /// mapping belongs) ends the reading, after the bad values found before it.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// The problems of the file at `path`, put in file order (those without a place last) with
    /// control characters escaped; also for problems found beyond this crate, such as a
    /// certificate that does not load.
    pub fn new(path: &Path, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|problem| (problem.location.is_none(), problem.location));
        for problem in &mut problems {
            problem.message = escape_controls(&problem.message);
        }
        ConfigError {
            path: path.to_owned(),
            problems,
        }
    }
}

/// `message` with every control character escaped (`\n`, `\u{1b}`): messages quote keys and
/// values from the file, and a line break in one would split a problem over two lines, or let a
/// config file forge a `file:line:column:` line of its own in a log.
fn escape_controls(message: &str) -> String {
    if !message.contains(char::is_control) {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Formats the problems of a [`ConfigError`], one per line.
struct Rendered<'a>(&'a PathBuf, &'a Vec<Problem>);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:", self.0.display())?;
            if let Some(Location { line, column }) = problem.location {
                write!(f, "{line}:{column}:")?;
            }
            write!(f, " {}", problem.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain `é`"), "plain `é`");
        assert_eq!(
            escape_controls("a\n\r\tb\u{1b}[2J\u{85}"),
            "a\\n\\r\\tb\\u{1b}[2J\\u{85}"
        );
    }
}
