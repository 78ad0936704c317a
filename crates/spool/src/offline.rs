//! Read-only views of a spool directory for the CLI (`spool list`, `spool show`).
//!
//! They take no lock and need no running daemon: they read directory listings and attempt
//! files, which a running daemon only ever changes by atomic renames and appends. A directory
//! that is not a spool yet (the daemon never ran) holds no messages: an empty listing.
//!
//! A running daemon moves messages while they are listed, so [`snapshot`] lists the folders in
//! the order messages flow through them (`new/`, `cur/`, `done/`, `dead/`, then `cur/` again for
//! re-queues out of `dead/`): a message that moves is seen at least once, and when it is seen
//! twice the later sighting, its newer state, is the one kept. Each message appears once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::attempts::{attempt_log, read_attempts, read_log};
use crate::{Attempt, CurName, Folder, Key, Listed, State};

/// The folders in the order messages move through them, `cur/` again last for re-queues.
const FLOW: [Folder; 5] = [
    Folder::New,
    Folder::Cur,
    Folder::Done,
    Folder::Dead,
    Folder::Cur,
];

/// Where [`snapshot`] saw one message: cheap facts from its file name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub key: Key,
    pub state: State,
    folder: Folder,
    name: String,
}

impl Seen {
    /// Where its file was when it was seen.
    pub fn path(&self, dir: &Path) -> PathBuf {
        self.folder.path(dir).join(&self.name)
    }
}

/// Every message of the spool at `dir`, each once, in key (arrival) order; empty when `dir` is
/// not a spool yet. Names that are not messages are skipped.
pub fn snapshot(dir: &Path) -> io::Result<Vec<Seen>> {
    snapshot_with(dir, |_| {})
}

/// [`snapshot`], calling `between` after each folder is listed (tests move files there).
pub(crate) fn snapshot_with(dir: &Path, mut between: impl FnMut(Folder)) -> io::Result<Vec<Seen>> {
    let mut seen = BTreeMap::new();
    for folder in FLOW {
        let path = folder.path(dir);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot list {}: {e}", path.display()),
                ))
            }
        };
        for entry in entries {
            let Ok(name) = entry?.file_name().into_string() else {
                continue;
            };
            if let Some(s) = sighting(folder, name) {
                seen.insert(s.key, s);
            }
        }
        between(folder);
    }
    Ok(seen.into_values().collect())
}

/// What `spool list` shows of a message seen by [`snapshot`] (reads its attempt log).
pub fn describe(dir: &Path, seen: &Seen) -> Listed {
    listed(seen, &read_attempts(dir, seen.key))
}

/// [`describe`] of every message of a [`snapshot`], each attempt log read once (a log is shared
/// by the messages of one second, which are next to each other in key order; one is held at a
/// time): the seam's `list`.
pub fn describe_all(dir: &Path, seen: &[Seen]) -> Vec<Listed> {
    let mut log: Option<(PathBuf, HashMap<Key, Vec<Attempt>>)> = None;
    seen.iter()
        .map(|s| {
            let path = attempt_log(dir, &s.key);
            if log.as_ref().is_none_or(|(p, _)| *p != path) {
                let histories = read_log(&path);
                log = Some((path, histories));
            }
            let history = log.as_ref().and_then(|(_, h)| h.get(&s.key));
            listed(s, history.map(Vec::as_slice).unwrap_or_default())
        })
        .collect()
}

fn listed(seen: &Seen, history: &[Attempt]) -> Listed {
    let (attempts, next) = match seen.folder {
        Folder::Cur => {
            CurName::parse(&seen.name).map_or((0, None), |c| (c.attempts, Some(c.due_ms)))
        }
        Folder::New => (0, Some(crate::now_ms())),
        _ => (history.len() as u32, None),
    };
    Listed {
        key: seen.key,
        state: seen.state,
        attempts,
        next_attempt_ms: next,
        last_error: history.last().and_then(Attempt::failure),
    }
}

/// Finds one message by key, wherever it is, and where its file is.
pub fn find(dir: &Path, key: Key) -> io::Result<Option<(Listed, PathBuf)>> {
    let name = key.to_string();
    let prefix = format!("{name},");
    for folder in FLOW {
        let found = if folder == Folder::Cur {
            let entries = match fs::read_dir(folder.path(dir)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find(|f| f.starts_with(&prefix))
        } else {
            folder.path(dir).join(&name).exists().then(|| name.clone())
        };
        if let Some(s) = found.and_then(|f| sighting(folder, f)) {
            return Ok(Some((describe(dir, &s), s.path(dir))));
        }
    }
    Ok(None)
}

/// The attempts recorded for `key`, oldest first.
pub fn attempts(dir: &Path, key: Key) -> Vec<Attempt> {
    read_attempts(dir, key)
}

fn sighting(folder: Folder, name: String) -> Option<Seen> {
    let state = folder.state()?;
    let key = match folder {
        Folder::Cur => CurName::parse(&name)?.key,
        _ => name.parse().ok()?,
    };
    Some(Seen {
        key,
        state,
        folder,
        name,
    })
}

/// The keys stored under `key`: itself if it is in the spool at `dir`; for a bare id that is
/// not, every copy of it that is.
pub fn copies(dir: &Path, key: Key) -> io::Result<Vec<Key>> {
    let ulid = key.id();
    let cur: HashSet<Key> = match fs::read_dir(Folder::Cur.path(dir)) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| CurName::parse(&name).map(|c| c.key))
            .filter(|k| k.id() == ulid)
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
        Err(e) => return Err(e),
    };
    let present = |k: &Key| {
        cur.contains(k)
            || [Folder::New, Folder::Done, Folder::Dead]
                .iter()
                .any(|f| f.path(dir).join(k.to_string()).exists())
    };
    if present(&key) {
        return Ok(vec![key]);
    }
    if key.copy() != 0 {
        return Ok(Vec::new());
    }
    Ok((1..=u8::MAX)
        .map(|copy| Key::new(ulid, copy))
        .filter(present)
        .collect())
}
