//! The YAML configuration of whimp and whomp, in one place so that both daemons, `check-config`
//! and SIGHUP reloads accept exactly the same files and report problems the same way:
//! `file:line:column: what is wrong`, every problem at once.
//!
//! Loading is two steps. Serde parses the text into raw structs that refuse unknown keys and whose
//! leaf values (durations, addresses, ranges, methods, URLs, numbers, booleans, log levels) parse
//! themselves, so a bad value is reported where it is written. Then the raw structs are validated
//! into the typed [`whimp::Config`] or [`whomp::Config`], with defaults filled in and relative
//! paths resolved against the config file's directory. The retry policy and whomp's pre-flight
//! rules come out as the domain types themselves, [`retry::Policy`] and [`netguard::Rules`],
//! judged by their own checks ([`retry::Policy::try_new`], [`netguard::Rules::validate`]); this
//! crate says where in the file each problem is. An unknown key or a YAML syntax error ends
//! the reading where it is, after the bad values found before it.

mod check;
mod common;
mod error;
mod locate;
mod value;
pub mod whimp;
pub mod whomp;

use std::path::Path;

pub use common::{Admin, Backend, Facility, Listener, Log, LogFormat, LogLevel, Queue, Spool, Tls};
pub use error::{ConfigError, Location, Problem};
pub use value::{parse_duration, Secret};

/// Reads and validates a whimp config file.
pub fn load_whimp(path: &Path) -> Result<whimp::Config, ConfigError> {
    whimp::load(path)
}

/// Validates whimp config text; `path` names the file in messages and anchors relative paths.
pub fn parse_whimp(text: &str, path: &Path) -> Result<whimp::Config, ConfigError> {
    whimp::parse(text, path)
}

/// Reads and validates a whomp config file.
pub fn load_whomp(path: &Path) -> Result<whomp::Config, ConfigError> {
    whomp::load(path)
}

/// Validates whomp config text; `path` names the file in messages and anchors relative paths.
pub fn parse_whomp(text: &str, path: &Path) -> Result<whomp::Config, ConfigError> {
    whomp::parse(text, path)
}

#[cfg(test)]
mod tests;
