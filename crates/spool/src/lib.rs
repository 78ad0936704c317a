//! The maildir spool both daemons keep their messages in: the reason nothing acknowledged is lost.
//!
//! A message is one file, its content the HTTP request in `message/http` form, its name its key
//! and retry state (see [`name`]). The folders under the spool directory are the states:
//! `tmp/` (being written), `new/` (queued), `cur/` (retrying), `done/` (delivered, kept for a
//! retention period) and `dead/` (given up on), plus `attempts/` (the attempt log, see
//! [`Spool::finish`]) and a `lock` file that keeps a second daemon out.
//!
//! [`Spool::enqueue`] returns only once the file and its directory entry are durable (the
//! committer groups concurrent writers into one flush, see [`commit`]); every later state change
//! is an atomic rename, done before the call returns and flushed by the committer's next group
//! (see [`Spool::finish`]). On [`Spool::open`] the schedule is rebuilt from the directory
//! listings alone, holding a few dozen bytes per queued message.
//!
//! Webhook bodies are private: the spool's folders are `0750` and message files `0640`, set
//! explicitly rather than left to the umask.

mod commit;
mod folder;
mod index;
pub mod name;
mod records;
mod seam;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use ulid::Ulid;

use commit::{Committer, Job, Op};
pub use folder::Folder;
use index::{Entry, Index, Place};
pub use name::CurName;
pub use records::DirRecords;
pub use storage::{
    excerpt, now_ms, Attempt, BadKey, ChangeError, Counts, Key, Outcome, RequeueError, State,
    Unavailable, EXCERPT_BYTES,
};

/// How a spool is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Flush data and directory entries before answering. Off trades crash safety for speed.
    pub fsync: bool,
    /// While the spool cannot write, how often it tries a write of its own to turn ready again.
    pub probe_every: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fsync: true,
            probe_every: PROBE_EVERY,
        }
    }
}

/// How often an unready spool probes itself by default.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// The mode of the spool's folders, whatever the umask: the daemon's user and group only.
pub const DIR_MODE: u32 = 0o750;

/// The mode of message files (and at most that of the spool's other files), whatever the umask.
pub const FILE_MODE: u32 = 0o640;

/// A queued message handed to one deliverer; nobody else gets it until it is finished or released.
#[derive(Debug)]
pub struct Claim {
    pub key: Key,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the current retry budget started (arrival or re-queue), ms since the epoch.
    pub since_ms: u64,
    due_ms: u64,
    place: Place,
}

/// Where a message stands, for the status API and `spool show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub key: Key,
    pub state: State,
    pub attempts: u32,
    /// ms since the epoch; only while queued or retrying.
    pub next_attempt_ms: Option<u64>,
    pub path: PathBuf,
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process owns this spool; the daemon must not start.
    #[error("spool {dir} is locked by another process (pid {pid})")]
    Locked { dir: PathBuf, pid: String },
    /// The directory cannot be used at all.
    #[error("cannot open spool {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a message was not stored; the sender must be refused (503) and nothing was kept.
#[derive(Debug, thiserror::Error)]
#[error("failed to store {key} in {dir}: {step}: {source}")]
pub struct EnqueueError {
    pub key: String,
    pub dir: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

/// Why a state change failed. The message stays queued where it was, or (if `renamed`) is at
/// its new place but that may not survive a crash; either way it will be delivered again
/// rather than lost, and the spool reports itself unhealthy.
#[derive(Debug, thiserror::Error)]
#[error("failed to move {key} in {dir}: {step}: {source}")]
pub struct MoveError {
    pub key: Key,
    pub dir: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

impl From<MoveError> for ChangeError {
    fn from(e: MoveError) -> ChangeError {
        ChangeError::Unavailable(Unavailable::new(e))
    }
}

/// Whether the spool can currently store messages; read by `/readyz` without I/O.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Test hook: this many coming data flushes fail with EIO.
    fail_syncs: AtomicUsize,
    /// Test hook: this many coming directory flushes fail with EIO.
    fail_dir_syncs: AtomicUsize,
}

impl Health {
    fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    fn set_unhealthy(&self, reason: String) {
        tracing::error!(%reason, "spool cannot write; refusing messages until a write (or the spool's own probe) succeeds");
        *lock(&self.reason) = Some(reason);
        self.failing.store(true, Ordering::Release);
    }

    fn set_healthy(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::warn!("spool writes succeed again");
            *lock(&self.reason) = None;
        }
    }

    fn injected_failure(&self) -> io::Result<()> {
        take_one(&self.fail_syncs)
    }

    fn injected_dir_failure(&self) -> io::Result<()> {
        take_one(&self.fail_dir_syncs)
    }
}

/// Fails (EIO) if `counter` is above zero, counting it down.
fn take_one(counter: &AtomicUsize) -> io::Result<()> {
    let pending = counter.load(Ordering::Relaxed);
    if pending > 0
        && counter
            .compare_exchange(pending, pending - 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        return Err(io::Error::from_raw_os_error(5)); // EIO, as a dying disk reports it
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our short critical sections leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The due time of a message in `new/`: the start of time, so it sorts before everything and is
/// handed out at the next claim.
const DUE_AT_ONCE: u64 = 0;

/// An open, locked spool directory. Cheap to clone; all clones share one schedule.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.root)
            .finish()
    }
}

struct Inner {
    root: PathBuf,
    index: Mutex<Index>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    health: Arc<Health>,
    fsync: bool,
    /// Woken when something new becomes due (enqueue, re-queue, release).
    wake: Notify,
    /// Folders with renames not yet flushed (bits of [`Folder::bit`]), shared with the committer.
    dirty: Arc<AtomicU8>,
    /// Attempts in flight (live [`Sending`] guards), of messages in `new/` and in `cur/`.
    sending: [AtomicUsize; 2],
    _lock: File,
}

impl Spool {
    /// Opens (creating if needed) and locks the spool at `dir`, clears `tmp/`, and rebuilds the
    /// schedule from `new/` and `cur/`.
    pub fn open(dir: &Path, options: Options) -> Result<Spool, OpenError> {
        let io_err = |source| OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let lock_file = take_lock(dir)?;
        for folder in Folder::OPENED {
            fs::create_dir_all(folder.path(dir)).map_err(io_err)?;
        }
        // Exactly 0750, whatever the umask made them (or an older version left them).
        for path in [dir.to_path_buf()]
            .into_iter()
            .chain(Folder::OPENED.map(|f| f.path(dir)))
        {
            if let Err(error) = fs::set_permissions(&path, fs::Permissions::from_mode(DIR_MODE)) {
                tracing::warn!(dir = %path.display(), %error, "cannot make a spool folder 0750");
            }
        }
        // Leftovers in tmp/ were never acknowledged: clear them.
        for entry in fs::read_dir(Folder::Tmp.path(dir)).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let _ = fs::remove_file(entry.path());
        }
        let index = rebuild(dir).map_err(io_err)?;
        let health = Arc::new(Health::default());
        let dirty = Arc::new(AtomicU8::new(0));
        let committer = Committer::new(
            dir.to_path_buf(),
            options.fsync,
            health.clone(),
            dirty.clone(),
            options.probe_every,
        )
        .map_err(io_err)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(io_err)?;
        Ok(Spool {
            inner: Arc::new(Inner {
                root: dir.to_path_buf(),
                index: Mutex::new(index),
                jobs: Mutex::new(Some(tx)),
                health,
                fsync: options.fsync,
                wake: Notify::new(),
                dirty,
                sending: Default::default(),
                _lock: lock_file,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The small durable records kept in this spool (`records/`), under its lock.
    pub fn records(&self) -> DirRecords {
        DirRecords::new(&self.inner.root)
    }

    /// A fresh message id (time-ordered).
    pub fn new_id() -> Ulid {
        Ulid::new()
    }

    /// Stores `content` durably as message `id` with `copies` deliverable copies (1 = a single
    /// target; more = fan-out, keys `id.1`..`id.N`). Returns once the file and its entries in
    /// `new/` are durable; on error nothing was kept.
    pub async fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> Result<Vec<Key>, EnqueueError> {
        // Without fsync nothing below waits, so a caller enqueueing in a loop would never give
        // its worker back; spend from tokio's cooperative budget, which yields now and then.
        tokio::task::coop::consume_budget().await;
        let keys: Vec<Key> = match copies {
            0 | 1 => vec![Key::new(id, 0)],
            n => (1..=n).map(|c| Key::new(id, c)).collect(),
        };
        let root = self.inner.root.clone();
        let fail = |step, source| EnqueueError {
            key: id.to_string(),
            dir: root.clone(),
            step,
            source,
        };
        let tmp = Folder::Tmp.path(&root).join(id.to_string());
        let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        // The file is written here, on the caller's async worker, not handed to a blocking
        // thread: a create and a small write into the page cache take microseconds, less than
        // the two thread switches of a hand-off (BENCHMARKS.md, "What changed"). Only the
        // flush, which waits for the disk, goes to the committer's thread.
        let write = || -> io::Result<File> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            // The mode above is cut by the umask; set it whole (before any byte is written).
            let written = file
                .set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .and_then(|()| file.write_all(&content));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            Ok(file)
        };
        let stored = match write() {
            Err(e) => Err(("write", e)),
            Ok(file) if self.inner.fsync => self
                .submit(Op::Enqueue { file, tmp, names })
                .await
                .map_err(|f| (f.step, f.error)),
            // Without fsync there is nothing to group: publish right here.
            Ok(_) => Committer::publish(&root, &tmp, &names).map_err(|e| ("rename", e)),
        };
        // With fsync the committer keeps health (it knows when a flush of the same group
        // failed); otherwise the outcome here is all there is.
        match stored {
            Ok(()) if !self.inner.fsync => self.inner.health.set_healthy(),
            Ok(()) => {}
            Err((step, e)) => {
                if !self.inner.fsync || step == "write" {
                    let reason = format!("{step} failed in {}: {e}", self.inner.root.display());
                    self.inner.health.set_unhealthy(reason);
                }
                return Err(fail(step, e));
            }
        }
        {
            let mut index = lock(&self.inner.index);
            for key in &keys {
                index.insert(*key, queued_entry(key));
            }
        }
        self.inner.wake.notify_one();
        Ok(keys)
    }

    async fn submit(&self, op: Op) -> Result<(), commit::Failure> {
        if let (false, Op::Move { from, to }) = (self.inner.fsync, &op) {
            // Nothing to group without fsync: one rename into the page cache, done here.
            let from = self.inner.root.join(from.0.name()).join(&from.1);
            let to = self.inner.root.join(to.0.name()).join(&to.1);
            return fs::rename(from, to).map_err(|error| commit::Failure {
                error,
                step: "rename",
                renamed: false,
            });
        }
        let (reply, answer) = oneshot::channel();
        let sent = match lock(&self.inner.jobs).as_ref() {
            Some(jobs) => jobs.send(Job { op, reply }).is_ok(),
            None => false,
        };
        let gone = || commit::Failure {
            error: io::Error::other("spool is closed"),
            step: "commit",
            renamed: false,
        };
        if !sent {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Claims up to `max` messages due at `now_ms`, oldest first.
    pub fn claim_due(&self, now_ms: u64, max: usize) -> Vec<Claim> {
        lock(&self.inner.index)
            .claim_due(now_ms, max)
            .into_iter()
            .map(|(key, e)| Claim {
                key,
                attempts: e.attempts,
                since_ms: e.since_ms,
                due_ms: e.due_ms,
                place: e.place,
            })
            .collect()
    }

    /// When the next unclaimed message is due (ms since the epoch), if any is queued.
    pub fn next_due_ms(&self) -> Option<u64> {
        lock(&self.inner.index).next_due_ms()
    }

    /// Resolves when a message may have become due earlier than [`Spool::next_due_ms`] said.
    pub async fn changed(&self) {
        self.inner.wake.notified().await
    }

    /// The path of a claimed message's file, to read it.
    pub fn path(&self, claim: &Claim) -> PathBuf {
        self.inner.root.join(current_name(claim))
    }

    /// Reads a claimed message's file.
    pub fn read(&self, claim: &Claim) -> io::Result<Vec<u8>> {
        fs::read(self.path(claim))
    }

    /// Gives a claim back untouched (e.g. at shutdown, or when its destination is busy).
    pub fn release(&self, claim: Claim) {
        lock(&self.inner.index).reschedule(
            claim.key,
            claim.place,
            claim.attempts,
            claim.due_ms,
            claim.since_ms,
        );
        self.inner.wake.notify_one();
    }

    /// Records `attempt` (if any) and applies `outcome`: one rename, done before returning.
    ///
    /// The rename is made durable by the committer's next flush (it is woken for it), not
    /// waited for: a delivery's bookkeeping does not queue behind other writers' flushes. A
    /// crash of the process loses nothing (the kernel has the rename); a power loss within
    /// that flush's few milliseconds can roll the message back to where it was, and the attempt
    /// is made again — a duplicate, never a loss (see ARCHITECTURE.md, "Invariants").
    pub async fn finish(
        &self,
        claim: Claim,
        attempt: Option<&Attempt>,
        outcome: Outcome,
    ) -> Result<(), MoveError> {
        // Nothing below waits (see `enqueue`): yield now and then.
        tokio::task::coop::consume_budget().await;
        let attempts = claim.attempts + u32::from(attempt.is_some());
        let from = (folder_of(claim.place), file_name(&claim));
        let (to, next) = match outcome {
            Outcome::Retry { due_ms } => {
                let name = CurName {
                    key: claim.key,
                    attempts,
                    due_ms,
                    since_ms: claim.since_ms,
                };
                ((Folder::Cur, name.to_string()), Some(due_ms))
            }
            Outcome::Delivered => ((Folder::Done, claim.key.to_string()), None),
            Outcome::Dead => ((Folder::Dead, claim.key.to_string()), None),
        };
        // In place, as in `enqueue`: an append and a rename take microseconds. History is
        // appended without a flush of its own: the attempt count that the policy relies on
        // lives in the file name. It goes to the log shared by the messages that arrived in the
        // same second, not a file of its own: a new inode and directory entry per message
        // was a third of a delivery's file-system work (BENCHMARKS.md, "What changed").
        if let Some(attempt) = attempt {
            let mut line = serde_json::to_vec(&LogLine {
                key: claim.key,
                attempt,
            })
            .unwrap_or_default();
            line.push(b'\n');
            // One write() with O_APPEND: concurrent appenders never interleave within a line.
            let appended = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(attempt_log(&self.inner.root, &claim.key))
                .and_then(|mut f| f.write_all(&line));
            if let Err(e) = appended {
                tracing::warn!(key = %claim.key, error = %e, "could not record attempt history");
            }
        }
        let root = &self.inner.root;
        let result = if from == to {
            Ok(())
        } else {
            fs::rename(
                root.join(from.0.name()).join(&from.1),
                root.join(to.0.name()).join(&to.1),
            )
        };
        if result.is_ok() && self.inner.fsync && from.0 != to.0 {
            self.flush_later(&[from.0, to.0]);
        }
        {
            let mut index = lock(&self.inner.index);
            match (result.is_ok(), next) {
                (true, Some(due_ms)) => {
                    index.reschedule(claim.key, Place::Cur, attempts, due_ms, claim.since_ms)
                }
                (true, None) => index.remove(&claim.key),
                // Not moved: still where it was; try again after the same back-off.
                (false, _) => index.reschedule(
                    claim.key,
                    claim.place,
                    claim.attempts,
                    next.unwrap_or(claim.due_ms).max(now_ms() + 1_000),
                    claim.since_ms,
                ),
            }
        }
        self.inner.wake.notify_one();
        result.map_err(|source| MoveError {
            key: claim.key,
            dir: self.inner.root.clone(),
            step: "rename",
            source,
        })
    }

    /// Marks folders whose entries changed for the committer's next flush, and wakes it unless
    /// a flush of them is already pending.
    fn flush_later(&self, folders: &[Folder]) {
        let bits = folders.iter().fold(0, |bits, f| bits | f.bit());
        let before = self.inner.dirty.fetch_or(bits, Ordering::AcqRel);
        if before & bits != bits {
            if let Some(jobs) = lock(&self.inner.jobs).as_ref() {
                let (reply, _) = oneshot::channel();
                let _ = jobs.send(Job {
                    op: Op::Flush,
                    reply,
                });
            }
        }
    }

    /// Returns once every state change made so far is durable (the committer has flushed the
    /// folders it touched). For tests and shutdown; deliveries never wait for it.
    pub async fn sync(&self) -> io::Result<()> {
        if !self.inner.fsync {
            return Ok(());
        }
        self.submit(Op::Flush).await.map_err(|f| f.error)
    }

    /// Moves a dead message back to the queue with a fresh retry budget, due now.
    pub async fn requeue(&self, key: Key) -> Result<(), RequeueError> {
        let name = key.to_string();
        if !Folder::Dead.path(&self.inner.root).join(&name).exists() {
            return Err(RequeueError::NotDead(key));
        }
        let now = now_ms();
        let to = CurName {
            key,
            attempts: 0,
            due_ms: now,
            since_ms: now,
        };
        let moved = self
            .submit(Op::Move {
                from: (Folder::Dead, name),
                to: (Folder::Cur, to.to_string()),
            })
            .await;
        // Renamed but not flushed is still queued: schedule it, and report the failure.
        if moved.as_ref().map_or_else(|f| f.renamed, |()| true) {
            lock(&self.inner.index).insert(key, retrying_entry(&to));
            self.inner.wake.notify_one();
        }
        moved.map_err(|f| {
            RequeueError::Unavailable(Unavailable::new(MoveError {
                key,
                dir: self.inner.root.clone(),
                step: f.step,
                source: f.error,
            }))
        })
    }

    /// Has `key` attempted as soon as possible, for an operator: a dead message is re-queued
    /// ([`Spool::requeue`]); a retrying one is made due now, keeping its attempt count and
    /// retry budget; a queued one is due already. (The rename within `cur/` is flushed with the
    /// next group: lost to a power cut, the message is merely due at its old time.)
    pub async fn retry_now(&self, key: Key) -> Result<(), ChangeError> {
        if Folder::Dead
            .path(&self.inner.root)
            .join(key.to_string())
            .exists()
        {
            return self.requeue(key).await.map_err(|e| match e {
                // Gone from dead/ since we looked: deleted or re-queued by someone else.
                RequeueError::NotDead(key) => ChangeError::NotFound(key),
                RequeueError::Unavailable(e) => ChangeError::Unavailable(e),
            });
        }
        let claim = self.claim_for_operator(key)?;
        if claim.place == Place::New {
            self.release(claim);
            return Ok(());
        }
        self.finish(claim, None, Outcome::Retry { due_ms: now_ms() })
            .await?;
        Ok(())
    }

    /// Deletes one message (one copy of a fanned-out one) wherever it is, for an operator, and
    /// returns the state it was in. Refused while it is being attempted. Flushed before it
    /// returns.
    pub async fn delete(&self, key: Key) -> Result<State, ChangeError> {
        let root = self.inner.root.clone();
        let fail = |source| MoveError {
            key,
            dir: root.clone(),
            step: "unlink",
            source,
        };
        let mut removed = None;
        for (folder, state) in [
            (Folder::Dead, State::Dead),
            (Folder::Done, State::Delivered),
        ] {
            match fs::remove_file(root.join(folder.name()).join(key.to_string())) {
                Ok(()) => {
                    removed = Some((folder, state));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(e).into()),
            }
        }
        let (folder, state) = match removed {
            Some(found) => found,
            None => {
                let claim = self.claim_for_operator(key).map_err(|e| match e {
                    ChangeError::Delivered(key) => ChangeError::NotFound(key),
                    e => e,
                })?;
                if let Err(e) = fs::remove_file(self.path(&claim)) {
                    self.release(claim);
                    return Err(fail(e).into());
                }
                lock(&self.inner.index).remove(&key);
                let state = match claim.place {
                    Place::New => State::Queued,
                    Place::Cur => State::Retrying,
                };
                (folder_of(claim.place), state)
            }
        };
        if self.inner.fsync {
            self.flush_later(&[folder]);
            self.sync().await.map_err(fail)?;
        }
        Ok(state)
    }

    /// Takes a queued `key` off the schedule, as a claim, for an operator's change to it.
    fn claim_for_operator(&self, key: Key) -> Result<Claim, ChangeError> {
        let mut index = lock(&self.inner.index);
        if let Some(e) = index.claim(&key) {
            return Ok(Claim {
                key,
                attempts: e.attempts,
                since_ms: e.since_ms,
                due_ms: e.due_ms,
                place: e.place,
            });
        }
        if index.get(&key).is_some() {
            return Err(ChangeError::InFlight(key));
        }
        drop(index);
        if Folder::Done
            .path(&self.inner.root)
            .join(key.to_string())
            .exists()
        {
            return Err(ChangeError::Delivered(key));
        }
        Err(ChangeError::NotFound(key))
    }

    /// Where `key` stands and where its file is, or `None` if the spool never had it (or it
    /// was pruned).
    pub fn locate(&self, key: Key) -> Option<Status> {
        let queued = lock(&self.inner.index).get(&key);
        if let Some(e) = queued {
            let (state, path) = match e.place {
                Place::New => (State::Queued, format!("new/{key}")),
                Place::Cur => (
                    State::Retrying,
                    format!(
                        "cur/{}",
                        CurName {
                            key,
                            attempts: e.attempts,
                            due_ms: e.due_ms,
                            since_ms: e.since_ms
                        }
                    ),
                ),
            };
            return Some(Status {
                key,
                state,
                attempts: e.attempts,
                next_attempt_ms: Some(if e.due_ms == DUE_AT_ONCE {
                    now_ms()
                } else {
                    e.due_ms
                }),
                path: self.inner.root.join(path),
            });
        }
        finished_status(&self.inner.root, key)
    }

    /// The recorded attempts of `key`, oldest first.
    pub fn history(&self, key: Key) -> Vec<Attempt> {
        read_attempts(&self.inner.root, key)
    }

    /// Message counts by state, from memory (no I/O).
    pub fn counts(&self) -> Counts {
        let (queued, retrying, _claimed) = lock(&self.inner.index).counts();
        let [new, cur] = self
            .inner
            .sending
            .each_ref()
            .map(|n| n.load(Ordering::Acquire));
        // A guard is dropped before its message is finished, so each count above includes its
        // own in-flight messages; the saturation covers a guard made between the two reads.
        Counts {
            queued: queued.saturating_sub(new),
            retrying: retrying.saturating_sub(cur),
            in_flight: new + cur,
        }
    }

    /// Marks an attempt of `claim` as in flight, for [`Spool::counts`], until the guard drops.
    /// A deliverer holds it while the request is out, and drops it before [`Spool::finish`].
    pub fn sending(&self, claim: &Claim) -> Sending {
        let place = claim.place as usize;
        self.inner.sending[place].fetch_add(1, Ordering::AcqRel);
        Sending {
            inner: self.inner.clone(),
            place,
        }
    }

    /// How long the oldest message still to deliver has been waiting, if any (no I/O; a scan of
    /// the in-memory schedule).
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = lock(&self.inner.index).oldest_arrival_ms()?;
        Some(Duration::from_millis(now_ms().saturating_sub(oldest)))
    }

    /// `None` when the spool can store messages; otherwise why not. No I/O.
    pub fn unhealthy_reason(&self) -> Option<String> {
        if self.inner.health.failing() {
            Some(lock(&self.inner.health.reason).clone().unwrap_or_default())
        } else {
            None
        }
    }

    /// Deletes delivered messages finished longer than `retention` ago, and attempt logs
    /// untouched as long whose messages are all gone (none queued, retrying or dead). Blocking;
    /// run it off the async workers. Returns how many messages were removed.
    pub fn prune_done(&self, retention: Duration) -> io::Result<usize> {
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
    pub fn purge_dead(&self) -> io::Result<usize> {
        purge_dead(&self.inner.root)
    }

    /// Makes later enqueues fail at their data flush, `n` times, as a failing disk would.
    #[doc(hidden)]
    pub fn inject_sync_failures(&self, n: usize) {
        self.inner.health.fail_syncs.store(n, Ordering::SeqCst);
    }

    /// Makes the coming directory flushes fail, `n` times.
    #[doc(hidden)]
    pub fn inject_dir_sync_failures(&self, n: usize) {
        self.inner.health.fail_dir_syncs.store(n, Ordering::SeqCst);
    }
}

/// An attempt in flight, counted in [`Counts::in_flight`] while this lives.
pub struct Sending {
    inner: Arc<Inner>,
    place: usize,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.inner.sending[self.place].fetch_sub(1, Ordering::AcqRel);
    }
}

fn folder_of(place: Place) -> Folder {
    match place {
        Place::New => Folder::New,
        Place::Cur => Folder::Cur,
    }
}

fn file_name(claim: &Claim) -> String {
    match claim.place {
        Place::New => claim.key.to_string(),
        Place::Cur => CurName {
            key: claim.key,
            attempts: claim.attempts,
            due_ms: claim.due_ms,
            since_ms: claim.since_ms,
        }
        .to_string(),
    }
}

fn current_name(claim: &Claim) -> PathBuf {
    Path::new(folder_of(claim.place).name()).join(file_name(claim))
}

fn take_lock(dir: &Path) -> Result<File, OpenError> {
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
fn queued_entry(key: &Key) -> Entry {
    Entry {
        attempts: 0,
        place: Place::New,
        claimed: false,
        due_ms: DUE_AT_ONCE,
        since_ms: key.arrived_ms(),
    }
}

/// The schedule entry of a message in `cur/`, from its name.
fn retrying_entry(cur: &CurName) -> Entry {
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
fn rebuild(root: &Path) -> io::Result<Index> {
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

fn finished_status(root: &Path, key: Key) -> Option<Status> {
    for (folder, state) in [
        (Folder::Done, State::Delivered),
        (Folder::Dead, State::Dead),
    ] {
        let path = folder.path(root).join(key.to_string());
        if path.exists() {
            return Some(Status {
                key,
                state,
                attempts: read_attempts(root, key).len() as u32,
                next_attempt_ms: None,
                path,
            });
        }
    }
    None
}

/// How many leading characters of a ULID name an attempt log: its time in units of 1 024 ms
/// (each character holds 5 bits; the first 10 hold the 48-bit milliseconds, two bits unused).
const LOG_PREFIX: usize = 8;

/// The log a key's attempts are appended to: `attempts/<first 8 characters of its ULID>.jsonl`,
/// shared by the messages that arrived in the same ~1 s. Small enough to scan for one key's
/// history (about 1.5 MB at 10 000 messages per second), few enough files to cost nothing.
fn attempt_log(root: &Path, key: &Key) -> PathBuf {
    let id = key.id().to_string();
    Folder::Attempts
        .path(root)
        .join(format!("{}.jsonl", &id[..LOG_PREFIX]))
}

/// The shard of a key's log, as a number: its arrival time in units of 1 024 ms.
fn log_shard(key: &Key) -> u64 {
    key.arrived_ms() >> 10
}

/// One line of an attempt log: the key, then the attempt's fields.
#[derive(Serialize)]
struct LogLine<'a> {
    key: Key,
    #[serde(flatten)]
    attempt: &'a Attempt,
}

fn read_attempts(root: &Path, key: Key) -> Vec<Attempt> {
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

/// Deletes attempt logs last written before `cutoff` (seconds since the epoch) whose shard is
/// not `in_use`.
fn prune_logs(root: &Path, cutoff: i64, in_use: &HashSet<u64>) -> io::Result<()> {
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

fn purge_dead(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(Folder::Dead.path(root))? {
        let entry = entry?;
        fs::remove_file(entry.path())?;
        removed += 1;
    }
    Ok(removed)
}

pub mod offline;

#[cfg(test)]
mod tests;
