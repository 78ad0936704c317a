//! The attempt log: every attempt's record, appended to a log shared by the messages that
//! arrived in the same second, read back per message, and pruned with the messages it served.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Attempt, Folder, Key, FILE_MODE};

/// How many leading characters of a ULID name an attempt log: its time in units of 1 024 ms
/// (each character holds 5 bits; the first 10 hold the 48-bit milliseconds, two bits unused).
const LOG_PREFIX: usize = 8;

/// The log a key's attempts are appended to: `attempts/<first 8 characters of its ULID>.jsonl`,
/// shared by the messages that arrived in the same ~1 s. Small enough to scan for one key's
/// history (about 1.5 MB at 10 000 messages per second), few enough files to cost nothing.
pub(crate) fn attempt_log(root: &Path, key: &Key) -> PathBuf {
    let id = key.id().to_string();
    Folder::Attempts
        .path(root)
        .join(format!("{}.jsonl", &id[..LOG_PREFIX]))
}

/// The shard of a key's log, as a number: its arrival time in units of 1 024 ms.
pub(crate) fn log_shard(key: &Key) -> u64 {
    key.arrived_ms() >> 10
}

/// One line of an attempt log: the key, then the attempt's fields.
#[derive(Serialize)]
struct LogLine<'a> {
    key: Key,
    #[serde(flatten)]
    attempt: &'a Attempt,
}

pub(crate) fn read_attempts(root: &Path, key: Key) -> Vec<Attempt> {
    let Ok(file) = File::open(attempt_log(root, &key)) else {
        return Vec::new();
    };
    // Lines start with the key, as `LogLine` writes them: compare before parsing.
    let tag = format!("{{\"key\":\"{key}\",");
    io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|line| line.starts_with(&tag))
        // A line cut by a crash mid-append is skipped, not fatal.
        // (An `Attempt` ignores the `key` field.)
        .filter_map(|line| serde_json::from_str::<Attempt>(&line).ok())
        .collect()
}

/// Every history in the log at `path` (one shard), by key: for listing all of a shard's
/// messages with one read of it rather than one per message.
pub(crate) fn read_log(path: &Path) -> HashMap<Key, Vec<Attempt>> {
    let mut all: HashMap<Key, Vec<Attempt>> = HashMap::new();
    let Ok(file) = File::open(path) else {
        return all;
    };
    for line in io::BufReader::new(file).lines().map_while(Result::ok) {
        // `{"key":"<key>",...`, as `LogLine` writes it; a line cut by a crash is skipped.
        let key = line
            .strip_prefix("{\"key\":\"")
            .and_then(|rest| rest.split_once('"'))
            .and_then(|(key, _)| key.parse::<Key>().ok());
        if let (Some(key), Ok(attempt)) = (key, serde_json::from_str::<Attempt>(&line)) {
            all.entry(key).or_default().push(attempt);
        }
    }
    all
}

/// Deletes attempt logs last written before `cutoff` (seconds since the epoch) whose shard is
/// not `in_use`.
pub(crate) fn prune_logs(root: &Path, cutoff: i64, in_use: &HashSet<u64>) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in fs::read_dir(Folder::Attempts.path(root))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(prefix) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        // The shard back from the name: pad the prefix to a whole ULID of that time.
        let Ok(first) = format!("{prefix}{}", "0".repeat(26 - LOG_PREFIX)).parse::<Key>() else {
            continue;
        };
        if in_use.contains(&log_shard(&first)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.mtime() < cutoff {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Appends `attempt` to the log of `key`, without a flush of its own: the attempt count that
/// the policy relies on lives in the file name. A failure is logged, not fatal.
pub(crate) fn append(root: &Path, key: Key, attempt: &Attempt) {
    let mut line = serde_json::to_vec(&LogLine { key, attempt }).unwrap_or_default();
    line.push(b'\n');
    // One write() with O_APPEND: concurrent appenders never interleave within a line.
    let appended = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(attempt_log(root, &key))
        .and_then(|mut f| f.write_all(&line));
    if let Err(e) = appended {
        tracing::warn!(%key, error = %e, "could not record attempt history");
    }
}
