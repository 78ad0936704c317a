//! The committer: one thread that makes spool changes durable in groups.
//!
//! Callers write a message's bytes to `tmp/` in parallel, then hand the committer a job. The
//! committer takes every job waiting, and for the whole group: flushes the file data (one
//! `fdatasync` for a lone file, one `syncfs` for several), renames the files into place, fsyncs
//! each directory it touched once, and only then answers every job. So N requests that arrive
//! together cost two flushes, not 2N, and none is answered before its own file and directory
//! entry are durable. A failed flush fails every job it covered: nothing is retried and trusted.
//!
//! State changes after a delivery attempt do not wait here: the spool renames in place and sets
//! the folders' bits in `dirty` (sending an [`Op::Flush`] to wake this thread if no flush of them
//! was pending), and every group fsyncs the dirty folders with its own.
//!
//! While the spool cannot write, the committer also probes it every `probe_every` (write, flush
//! and remove a small file in `tmp/`) and marks it ready again when that works: behind a load
//! balancer that follows `/readyz`, no message would ever come to show that the disk has healed.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::health::Health;
use crate::{Folder, FILE_MODE};

/// One change to make durable.
pub(crate) enum Op {
    /// A complete file in `tmp/` (still open, for `fdatasync`) that gets the names `names` in
    /// `new/`: one name is a rename, several are hard links to one inode (fan-out copies).
    Enqueue {
        file: File,
        tmp: PathBuf,
        names: Vec<String>,
    },
    /// A rename between folders.
    Move {
        from: (Folder, String),
        to: (Folder, String),
    },
    /// Nothing of its own: flush the folders marked dirty (and answer once they are).
    Flush,
}

/// What went wrong with one job, and whether its rename had already happened.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: io::Error,
    pub(crate) step: &'static str,
    /// For a move: the file is at its new name even though that may not be durable.
    pub(crate) renamed: bool,
}

pub(crate) type Reply = Result<(), Failure>;

pub(crate) struct Job {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Reply>,
}

pub(crate) struct Committer {
    pub(crate) root: PathBuf,
    pub(crate) fsync: bool,
    pub(crate) health: Arc<Health>,
    /// Folders renamed in outside the committer, to fsync with the next group.
    dirty: Arc<AtomicU8>,
    /// Open folder handles for fsync, by `Folder as usize`.
    dirs: Vec<File>,
    /// How often to probe a spool that cannot write.
    probe_every: Duration,
}

/// The probe's file in `tmp/`; not a message id, so never taken for a message.
const PROBE_NAME: &str = ".probe";

/// What the probe writes: one page, so that a full file system refuses it.
const PROBE_BYTES: usize = 4096;

/// Most jobs in one group; bounds the latency of the first job in a burst.
const MAX_GROUP: usize = 4096;

impl Committer {
    pub(crate) fn new(
        root: PathBuf,
        fsync: bool,
        health: Arc<Health>,
        dirty: Arc<AtomicU8>,
        probe_every: Duration,
    ) -> io::Result<Committer> {
        let dirs = Folder::MESSAGES
            .iter()
            .map(|f| File::open(root.join(f.name())))
            .collect::<io::Result<Vec<File>>>()?;
        Ok(Committer {
            root,
            fsync,
            health,
            dirty,
            dirs,
            probe_every,
        })
    }

    /// Runs until every sender is gone. Between groups, probes the spool while it cannot write:
    /// first `probe_every` after the committer sees it failing, then every `probe_every` until a
    /// probe succeeds, whether or not jobs keep coming.
    pub(crate) fn run(self, jobs: mpsc::Receiver<Job>) {
        let mut probe_at: Option<Instant> = None;
        loop {
            let wait = probe_at.map_or(self.probe_every, |at| {
                at.saturating_duration_since(Instant::now())
            });
            match jobs.recv_timeout(wait) {
                Ok(first) => {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match jobs.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    self.commit(group);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            probe_at = match probe_at {
                _ if !self.health.failing() => None,
                None => Some(now + self.probe_every),
                Some(at) if at <= now => {
                    self.probe();
                    Some(now + self.probe_every)
                }
                later => later,
            };
        }
    }

    /// Writes, flushes and removes a small file in `tmp/`: a write like a message's. If all of
    /// it works the spool is ready again; the failure that made it unready is not retried.
    fn probe(&self) {
        let path = self.path(Folder::Tmp, PROBE_NAME);
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&path)?;
            file.write_all(&[0; PROBE_BYTES])?;
            if self.fsync {
                sync_data(&file, &self.health)?;
            }
            fs::remove_file(&path)?;
            if self.fsync {
                sync_dir(self.dir(Folder::Tmp), &self.health)?;
            }
            Ok(())
        };
        match write() {
            Ok(()) => self.health.set_healthy(),
            Err(error) => {
                let _ = fs::remove_file(&path);
                tracing::debug!(%error, "spool probe failed; still refusing messages");
            }
        }
    }

    fn path(&self, folder: Folder, name: &str) -> PathBuf {
        self.root.join(folder.name()).join(name)
    }

    fn dir(&self, folder: Folder) -> &File {
        &self.dirs[folder as usize]
    }

    fn commit(&self, group: Vec<Job>) {
        let mut pending: Vec<(Job, Option<Failure>)> =
            group.into_iter().map(|job| (job, None)).collect();
        let enqueues = pending
            .iter()
            .filter(|(job, _)| matches!(job.op, Op::Enqueue { .. }))
            .count();

        // 1. File data. A failed flush covers every file in the group.
        if self.fsync && enqueues > 0 {
            let flushed = if enqueues == 1 {
                pending
                    .iter()
                    .find_map(|(job, _)| match &job.op {
                        Op::Enqueue { file, .. } => Some(sync_data(file, &self.health)),
                        Op::Move { .. } | Op::Flush => None,
                    })
                    .unwrap_or(Ok(()))
            } else {
                sync_filesystem(self.dir(Folder::Tmp), &self.health)
            };
            if let Err(error) = flushed {
                for (job, failed) in &mut pending {
                    if let Op::Enqueue { tmp, .. } = &job.op {
                        let _ = fs::remove_file(tmp);
                        *failed = Some(Failure {
                            error: copy_error(&error),
                            step: "fsync file data",
                            renamed: false,
                        });
                    }
                }
            }
        }

        // 2. Names.
        let mut touched = BTreeSet::new();
        for (job, failed) in &mut pending {
            if failed.is_some() {
                continue;
            }
            let result = match &job.op {
                Op::Enqueue { tmp, names, .. } => {
                    touched.insert(Folder::New);
                    Committer::publish(&self.root, tmp, names)
                }
                Op::Move { from, to } => {
                    touched.insert(from.0);
                    touched.insert(to.0);
                    fs::rename(self.path(from.0, &from.1), self.path(to.0, &to.1))
                }
                Op::Flush => Ok(()),
            };
            if let Err(error) = result {
                *failed = Some(Failure {
                    error,
                    step: "rename",
                    renamed: false,
                });
            }
        }

        // 3. Directory entries: this group's, and those renamed since the last group. A rename
        // that set its bit before this swap has completed, so the fsync below covers it; one
        // that sets it after finds the bit clear and wakes us for another group.
        let mut lazy_failed = false;
        if self.fsync {
            let lazy = self.dirty.swap(0, Ordering::AcqRel);
            touched.extend(Folder::MESSAGES.into_iter().filter(|f| lazy & f.bit() != 0));
            for folder in touched {
                if let Err(error) = sync_dir(self.dir(folder), &self.health) {
                    if lazy & folder.bit() != 0 {
                        // Renames already reported done: they stay, but may not survive a
                        // power loss; say so and turn unready until a write succeeds.
                        lazy_failed = true;
                        self.health.set_unhealthy(format!(
                            "fsync {} failed in {}: {error}",
                            folder.name(),
                            self.root.display()
                        ));
                    }
                    for (job, failed) in &mut pending {
                        if failed.is_some() {
                            continue;
                        }
                        let covers = match &job.op {
                            Op::Enqueue { names, .. } => {
                                // Never leave an unacknowledged message where a reader takes it.
                                if folder == Folder::New {
                                    for name in names {
                                        let _ = fs::remove_file(self.path(Folder::New, name));
                                    }
                                }
                                folder == Folder::New
                            }
                            Op::Move { from, to } => from.0 == folder || to.0 == folder,
                            Op::Flush => lazy & folder.bit() != 0,
                        };
                        if covers {
                            let renamed = matches!(job.op, Op::Move { .. } | Op::Flush);
                            *failed = Some(Failure {
                                error: copy_error(&error),
                                step: "fsync directory",
                                renamed,
                            });
                        }
                    }
                }
            }
        }

        // 4. Health follows the last group that wrote new messages; it is set before anyone
        // is answered, so a caller that saw its write succeed also sees the spool ready.
        let failure = pending.iter().find_map(|(_, failed)| failed.as_ref());
        let enqueued = pending
            .iter()
            .any(|(job, failed)| failed.is_none() && matches!(job.op, Op::Enqueue { .. }));
        match failure {
            Some(failure) => self.health.set_unhealthy(format!(
                "{} failed in {}: {}",
                failure.step,
                self.root.display(),
                failure.error
            )),
            // (Not while this very group failed to flush renames made outside it.)
            None if enqueued && !lazy_failed => self.health.set_healthy(),
            None => {}
        }

        // 5. Answers.
        for (job, failed) in pending {
            let _ = job.reply.send(failed.map_or(Ok(()), Err));
        }
    }

    /// Gives a durable tmp file its names in `new/`, undoing partial work on failure.
    pub(crate) fn publish(root: &Path, tmp: &Path, names: &[String]) -> io::Result<()> {
        let path = |name: &str| root.join(Folder::New.name()).join(name);
        let result = match names {
            [one] => fs::rename(tmp, path(one)),
            many => {
                let mut done = Vec::new();
                let mut result = Ok(());
                for name in many {
                    let target = path(name);
                    match fs::hard_link(tmp, &target) {
                        Ok(()) => done.push(target),
                        Err(e) => {
                            for path in &done {
                                let _ = fs::remove_file(path);
                            }
                            result = Err(e);
                            break;
                        }
                    }
                }
                let _ = fs::remove_file(tmp);
                result
            }
        };
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result
    }
}

fn copy_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

fn sync_data(file: &File, health: &Health) -> io::Result<()> {
    health.injected_failure()?;
    rustix::fs::fdatasync(file).map_err(io::Error::from)
}

fn sync_filesystem(dir: &File, health: &Health) -> io::Result<()> {
    health.injected_failure()?;
    rustix::fs::syncfs(dir).map_err(io::Error::from)
}

fn sync_dir(dir: &File, health: &Health) -> io::Result<()> {
    health.injected_dir_failure()?;
    rustix::fs::fsync(dir).map_err(io::Error::from)
}
