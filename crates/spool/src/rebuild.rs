//! Opening a spool: the lock that keeps a second daemon out, and the schedule rebuilt from the
//! directory listings of `new/` and `cur/` alone, without opening a message file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::index::{Entry, Index, Place};
use crate::{CurName, Folder, Key, OpenError, DUE_AT_ONCE, FILE_MODE};

/// Takes the spool's `lock` file (`flock`, not waiting) and writes our pid in it; a refusal
/// names the pid that holds it.
pub(crate) fn take_lock(dir: &Path) -> Result<File, OpenError> {
    let path = dir.join("lock");
    let io_err = |source| OpenError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_err)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(OpenError::Locked {
                dir: dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.into()
                },
            });
        }
        Err(e) => return Err(io_err(e.into())),
    }
    file.set_len(0).map_err(io_err)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes())
        .map_err(io_err)?;
    Ok(file)
}

/// The schedule entry of a message in `new/`: never attempted, due at once.
pub(crate) fn queued_entry(key: &Key) -> Entry {
    Entry {
        attempts: 0,
        place: Place::New,
        claimed: false,
        due_ms: DUE_AT_ONCE,
        since_ms: key.arrived_ms(),
    }
}

/// The schedule entry of a message in `cur/`, from its name.
pub(crate) fn retrying_entry(cur: &CurName) -> Entry {
    Entry {
        attempts: cur.attempts,
        place: Place::Cur,
        claimed: false,
        due_ms: cur.due_ms,
        since_ms: cur.since_ms,
    }
}

/// Builds the schedule from the names in `new/` and `cur/`. Unknown names are skipped with a
/// warning (an operator may have dropped a file in by hand).
pub(crate) fn rebuild(root: &Path) -> io::Result<Index> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(Folder::New.path(root))? {
        let entry = entry?;
        let name = entry.file_name();
        match name.to_str().and_then(|n| n.parse::<Key>().ok()) {
            Some(key) => entries.push((key, queued_entry(&key))),
            None => {
                tracing::warn!(file = ?entry.path(), "ignoring a file whose name is not a message id")
            }
        }
    }
    for entry in fs::read_dir(Folder::Cur.path(root))? {
        let entry = entry?;
        let name = entry.file_name();
        match name.to_str().and_then(CurName::parse) {
            Some(cur) => entries.push((cur.key, retrying_entry(&cur))),
            None => {
                tracing::warn!(file = ?entry.path(), "ignoring a file whose name is not a retry state")
            }
        }
    }
    // `new/` was listed first, so of a key in both folders the `new/` file is the one kept.
    let (index, ignored) = Index::from_unsorted(entries);
    for key in ignored {
        tracing::warn!(%key, "ignoring a second file for a queued message");
    }
    Ok(index)
}
