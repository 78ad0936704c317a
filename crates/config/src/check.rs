//! The parse-then-validate driver shared by both daemons: strict serde parsing of the raw
//! structs, then a [`Checker`] that turns them into the typed config while collecting every
//! problem with its location, so that an operator fixes a file in one round.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Location, Problem};
use crate::locate::{locate, Ptr};
use crate::value::{self, DurationValue};

/// Reads `path` and hands the text to `parse`; reading is all it adds.
pub(crate) fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(err) => Err(ConfigError::new(
            path,
            vec![Problem {
                location: None,
                message: format!("cannot read: {err}"),
            }],
        )),
    }
}

/// Parses `text` into the raw structs `R`, then lets `build` turn them into the typed config.
/// Every bad leaf value is reported, each at its place; a problem with the structure (a syntax
/// error, an unknown or missing key, a list where a mapping belongs) stops the reading there.
pub(crate) fn parse<R: DeserializeOwned, T>(
    text: &str,
    path: &Path,
    build: impl FnOnce(R, &mut Checker<'_>) -> T,
) -> Result<T, ConfigError> {
    let (raw, bad_leaves) = value::collecting(None, || serde_yaml_ng::from_str::<R>(text));
    // Read again once per bad leaf, stopping at it, for the location serde_yaml_ng gives it.
    let mut problems: Vec<Problem> = bad_leaves
        .into_iter()
        .enumerate()
        .map(|(n, message)| {
            match value::collecting(Some(n), || serde_yaml_ng::from_str::<R>(text)).0 {
                Err(err) => syntax_problem(text, &err),
                Ok(_) => Problem {
                    location: None,
                    message,
                },
            }
        })
        .collect();
    let raw = match raw {
        Ok(raw) => raw,
        Err(err) => {
            problems.push(syntax_problem(text, &err));
            return Err(ConfigError::new(path, problems));
        }
    };
    let mut checker = Checker {
        text,
        dir: config_dir(path),
        problems,
    };
    let config = build(raw, &mut checker);
    if checker.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::new(path, checker.problems))
    }
}

/// Collects problems while the typed config is built, and knows where the file is.
pub(crate) struct Checker<'a> {
    text: &'a str,
    dir: PathBuf,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// Records a problem at the node `at` (or the nearest enclosing node written in the file).
    pub(crate) fn problem(&mut self, at: &Ptr, message: impl fmt::Display) {
        let location = self.location(at);
        self.problems.push(Problem {
            location,
            message: message.to_string(),
        });
    }

    /// Where `at` is written, to mention another place in a message.
    pub(crate) fn location(&self, at: &Ptr) -> Option<Location> {
        locate(self.text, at)
    }

    /// `path` as written in the config, made relative to the config file's directory.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        self.dir.join(path)
    }

    /// Resolves a file the daemon will read (certificate, key, CA bundle) and reports it now if it
    /// cannot be read, rather than at the first connection.
    pub(crate) fn readable_file(&mut self, at: &Ptr, what: &str, path: &Path) -> PathBuf {
        let resolved = self.resolve(path);
        match std::fs::metadata(&resolved) {
            Ok(meta) if meta.is_dir() => self.problem(
                at,
                format_args!("{what} {} is a directory, not a file", resolved.display()),
            ),
            Ok(_) => {}
            Err(err) => self.problem(
                at,
                format_args!("{what} {} cannot be read: {err}", resolved.display()),
            ),
        }
        resolved
    }

    /// Resolves a directory the daemon will create if missing (the spool), and reports it now if
    /// it, or the nearest part of its path that exists, is not a directory.
    pub(crate) fn usable_dir(&mut self, at: &Ptr, what: &str, path: &Path) -> PathBuf {
        let resolved = self.resolve(path);
        let existing = resolved
            .ancestors()
            .find(|p| std::fs::symlink_metadata(p).is_ok());
        match existing {
            Some(p) if p.is_dir() => {}
            Some(p) if p == resolved => self.problem(
                at,
                format_args!("{what} {} exists and is not a directory", p.display()),
            ),
            Some(p) => self.problem(
                at,
                format_args!(
                    "{what} {} cannot be created: {} is not a directory",
                    resolved.display(),
                    p.display()
                ),
            ),
            None => {}
        }
        resolved
    }

    /// A duration that must not be zero (timeouts, intervals).
    pub(crate) fn nonzero_duration(
        &mut self,
        at: &Ptr,
        name: &str,
        value: Option<DurationValue>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value.map_or(Some(default), |v| v.0) else {
            return default;
        };
        if value.is_zero() {
            self.problem(at, format_args!("{name} must be greater than zero"));
        }
        value
    }
}

/// The directory relative paths are resolved against, absolute so that it does not depend on the
/// daemon's working directory later.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

/// Turns a serde_yaml_ng error into a problem: its location, and its message without the
/// `path: ` prefix and ` at line L column C` suffix that the location replaces.
fn syntax_problem(text: &str, err: &serde_yaml_ng::Error) -> Problem {
    let mut message = err.to_string();
    let mut location = err.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    if let Some(Location { line, column }) = location {
        let suffix = format!(" at line {line} column {column}");
        if let Some(start) = message.find(&suffix) {
            message.replace_range(start..start + suffix.len(), "");
        }
    }
    let mut serde_path = ".".to_owned();
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.is_empty() && !head.contains(char::is_whitespace) {
            (serde_path, message) = (head.to_owned(), rest.to_owned());
        }
    }
    // A repeated struct field is reported at its mapping; point at the repeat instead.
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let ptr = Ptr::from_serde_path(&serde_path)
            .key(field)
            .at_key_occurrence(1);
        location = locate(text, &ptr).or(location);
    }
    Problem {
        location,
        message: unquoted(&message),
    }
}

/// serde quotes a string written where another type belongs (`invalid type: string "..."`); it
/// may be a URL with a password or a token written in the wrong place, and config errors end up
/// in logs, so the string is left out (the location says where it is).
fn unquoted(message: &str) -> String {
    let expected = message
        .strip_prefix("invalid type: string \"")
        .and_then(|rest| rest.rfind("\", expected ").map(|end| &rest[end + 1..]));
    match expected {
        Some(expected) => format!("invalid type: string{expected}"),
        None => message.to_owned(),
    }
}
