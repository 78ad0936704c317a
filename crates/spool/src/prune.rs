//! Forgetting: delivered messages past their retention (with the attempt logs no message still
//! needs), and the operator's purge of `dead/`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::attempts::{log_shard, prune_logs};
use crate::{lock, Folder, Key, Spool};

impl Spool {
    /// Deletes delivered messages finished longer than `retention` ago, and attempt logs
    /// untouched as long whose messages are all gone (none queued, retrying or dead). Blocking;
    /// run it off the async workers. Returns how many messages were removed.
    pub(crate) fn prune_done(&self, retention: Duration) -> io::Result<usize> {
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let removed = prune_done(&self.inner.root, cutoff)?;
        // Logs still needed: those of every queued message (a snapshot: a message queued later
        // arrived later, so its log is younger than the cutoff) and of every dead one.
        let mut in_use: HashSet<u64> = lock(&self.inner.index)
            .keys()
            .map(|k| log_shard(&k))
            .collect();
        for entry in fs::read_dir(Folder::Dead.path(&self.inner.root))? {
            let name = entry?.file_name();
            if let Some(key) = name.to_str().and_then(|n| n.parse::<Key>().ok()) {
                in_use.insert(log_shard(&key));
            }
        }
        prune_logs(&self.inner.root, cutoff, &in_use)?;
        Ok(removed)
    }

    /// Deletes every message in `dead/`. Returns how many. (Their attempt records go with
    /// their log, at the next prune after `retention`.)
    pub(crate) fn purge_dead(&self) -> io::Result<usize> {
        purge_dead(&self.inner.root)
    }
}

fn prune_done(root: &Path, cutoff: i64) -> io::Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = 0;
    for entry in fs::read_dir(Folder::Done.path(root))? {
        let entry = entry?;
        // A rename sets ctime: it is the moment the message was finished.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.ctime() < cutoff {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn purge_dead(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(Folder::Dead.path(root))? {
        let entry = entry?;
        fs::remove_file(entry.path())?;
        removed += 1;
    }
    Ok(removed)
}
