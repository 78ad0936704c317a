//! Read-only views of a spool directory for the CLI (`spool list`, `spool show`).
//!
//! They take no lock and need no running daemon: they read directory listings and attempt
//! files, which a running daemon only ever changes by atomic renames and appends. A message
//! that moves while it is being listed may be missed or seen twice in that one listing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::{read_attempts, Attempt, CurName, Key, State};

/// One message as `spool list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub state: State,
    pub attempts: u32,
    /// ms since the epoch; for queued and retrying messages.
    pub next_attempt_ms: Option<u64>,
    /// The last failed attempt's error, if the last attempt failed.
    pub last_error: Option<String>,
    pub path: PathBuf,
}

/// Calls `each` for every message in the spool at `dir`: queued, retrying, dead, then delivered.
/// Stops at the first error `each` returns.
pub fn list(dir: &Path, mut each: impl FnMut(Listed) -> io::Result<()>) -> io::Result<()> {
    for folder in ["new", "cur", "dead", "done"] {
        let path = dir.join(folder);
        let mut names: Vec<String> = match fs::read_dir(&path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot list {}: {e}", path.display()),
                ))
            }
        };
        names.sort_unstable();
        for name in names {
            if let Some(listed) = describe(dir, folder, &name) {
                each(listed)?;
            }
        }
    }
    Ok(())
}

/// Finds one message by key, wherever it is.
pub fn find(dir: &Path, key: Key) -> io::Result<Option<Listed>> {
    let name = key.to_string();
    for folder in ["new", "done", "dead"] {
        if dir.join(folder).join(&name).exists() {
            return Ok(describe(dir, folder, &name));
        }
    }
    let prefix = format!("{name},");
    for entry in fs::read_dir(dir.join("cur"))? {
        let file = entry?.file_name();
        if let Some(file) = file.to_str().filter(|f| f.starts_with(&prefix)) {
            return Ok(describe(dir, "cur", file));
        }
    }
    Ok(None)
}

/// The attempts recorded for `key`, oldest first.
pub fn attempts(dir: &Path, key: Key) -> Vec<Attempt> {
    read_attempts(dir, key)
}

fn describe(dir: &Path, folder: &str, name: &str) -> Option<Listed> {
    let path = dir.join(folder).join(name);
    let (key, state, attempts, next) = match folder {
        "cur" => {
            let cur = CurName::parse(name)?;
            (
                cur.key,
                State::Retrying,
                Some(cur.attempts),
                Some(cur.due_ms),
            )
        }
        "new" => (name.parse().ok()?, State::Queued, Some(0), Some(cur_time())),
        "dead" => (name.parse().ok()?, State::Dead, None, None),
        _ => (name.parse().ok()?, State::Delivered, None, None),
    };
    let history = read_attempts(dir, key);
    let last_error = history.last().and_then(Attempt::failure);
    Some(Listed {
        key,
        state,
        attempts: attempts.unwrap_or(history.len() as u32),
        next_attempt_ms: next,
        last_error,
        path,
    })
}

fn cur_time() -> u64 {
    crate::now_ms()
}
