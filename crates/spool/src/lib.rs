//! The maildir spool both daemons keep their messages in: the reason nothing acknowledged is lost.
//! It is the first backend of the storage seam (`storage::Storage`, implemented in `seam`, and
//! `storage::Records` as [`DirRecords`]).
//!
//! A message is one file, its content the HTTP request in `message/http` form, its name its key
//! and retry state (see [`name`]). The folders under the spool directory are the states
//! ([`Folder`] names them all): `tmp/` (being written), `new/` (queued), `cur/` (retrying),
//! `done/` (delivered, kept for a retention period) and `dead/` (given up on), plus `attempts/`
//! (the attempt log, `attempts`), `records/` (small records, `records`) and a `lock` file that
//! keeps a second daemon out.
//!
//! Beside this file, which holds the spool's life (open, enqueue, claim, finish, status): the
//! schedule in memory (`index`), the committer that flushes in groups (`commit`), opening and
//! rebuilding (`rebuild`), readiness (`health`), an operator's changes (`operator`), pruning
//! and purging (`prune`), and the lock-free views the CLI reads ([`offline`]).
//!
//! [`Spool::enqueue`] returns only once the file and its directory entry are durable (the
//! committer groups concurrent writers into one flush, see [`commit`]); every later state change
//! is an atomic rename, done before the call returns and flushed by the committer's next group
//! (see [`Spool::finish`]). On [`Spool::open`] the schedule is rebuilt from the directory
//! listings alone, holding a few dozen bytes per queued message.
//!
//! Webhook bodies are private: the spool's folders are `0750` and message files `0640`, set
//! explicitly rather than left to the umask.

mod attempts;
mod commit;
mod folder;
mod health;
mod index;
pub mod name;
mod operator;
mod prune;
mod rebuild;
mod records;
mod seam;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use ulid::Ulid;

use attempts::read_attempts;
use commit::{Committer, Job, Op};
pub use folder::Folder;
use health::Health;
use index::{Index, Place};
pub use name::CurName;
use rebuild::{queued_entry, rebuild, take_lock};
pub use records::DirRecords;
pub use storage::{
    excerpt, now_ms, Attempt, BadKey, ChangeError, Counts, Key, Listed, Outcome, RequeueError,
    State, Status, Unavailable, EXCERPT_BYTES,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our short critical sections leaves plain data behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The due time of a message in `new/`: the start of time, so it sorts before everything and is
/// handed out at the next claim.
pub(crate) const DUE_AT_ONCE: u64 = 0;

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
    /// The committer's queue; the committer stops when the last clone of the spool is gone.
    jobs: mpsc::Sender<Job>,
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
                jobs: tx,
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

    /// A fresh message id, time-ordered: ids made by one thread are strictly increasing even
    /// within a millisecond (a per-thread monotonic generator, so no lock is shared), which
    /// keeps listings and claims of a burst in arrival order.
    pub fn new_id() -> Ulid {
        thread_local! {
            static IDS: std::cell::RefCell<ulid::Generator> =
                std::cell::RefCell::new(ulid::Generator::new());
        }
        IDS.with(|ids| ids.borrow_mut().generate())
            // Only after 2^80 ids in one millisecond: fall back to a random one.
            .unwrap_or_else(|_| Ulid::new())
    }

    /// Stores `content` durably as message `id` with `copies` deliverable copies (1 = a single
    /// target; more = fan-out, keys `id.1`..`id.N`). Returns once the file and its entries in
    /// `new/` are durable; on error nothing was kept.
    pub(crate) async fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> Result<Vec<Key>, EnqueueError> {
        // Without fsync nothing below waits, so a caller enqueueing in a loop would never give
        // its worker back; spend from tokio's cooperative budget, which yields now and then.
        tokio::task::coop::consume_budget().await;
        let keys = Key::copies_of(id, copies);
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
        let sent = self.inner.jobs.send(Job { op, reply }).is_ok();
        // Only if the committer's thread died.
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
    pub(crate) fn claim_due(&self, now_ms: u64, max: usize) -> Vec<Claim> {
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
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        lock(&self.inner.index).next_due_ms()
    }

    /// Resolves when a message may have become due earlier than [`Spool::next_due_ms`] said.
    pub(crate) async fn changed(&self) {
        self.inner.wake.notified().await
    }

    /// The path of a claimed message's file, to read it.
    pub fn path(&self, claim: &Claim) -> PathBuf {
        self.inner.root.join(current_name(claim))
    }

    /// Reads a claimed message's file.
    pub(crate) fn read(&self, claim: &Claim) -> io::Result<Vec<u8>> {
        fs::read(self.path(claim))
    }

    /// Gives a claim back untouched (e.g. at shutdown, or when its destination is busy).
    pub(crate) fn release(&self, claim: Claim) {
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
    pub(crate) async fn finish(
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
            attempts::append(&self.inner.root, claim.key, attempt);
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
            let (reply, _) = oneshot::channel();
            let _ = self.inner.jobs.send(Job {
                op: Op::Flush,
                reply,
            });
        }
    }

    /// Returns once every state change made so far is durable (the committer has flushed the
    /// folders it touched). An operator's delete waits for it; deliveries never do.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        if !self.inner.fsync {
            return Ok(());
        }
        self.submit(Op::Flush).await.map_err(|f| f.error)
    }

    /// Where `key` stands, or `None` if the spool never had it (or it was pruned).
    pub fn locate(&self, key: Key) -> Option<Status> {
        self.locate_file(key).map(|(status, _)| status)
    }

    /// Where `key` stands and where its file is.
    pub(crate) fn locate_file(&self, key: Key) -> Option<(Status, PathBuf)> {
        let queued = lock(&self.inner.index).get(&key);
        if let Some(e) = queued {
            let (state, path) = match e.place {
                Place::New => (
                    State::Queued,
                    Folder::New.path(&self.inner.root).join(key.to_string()),
                ),
                Place::Cur => (
                    State::Retrying,
                    Folder::Cur.path(&self.inner.root).join(
                        CurName {
                            key,
                            attempts: e.attempts,
                            due_ms: e.due_ms,
                            since_ms: e.since_ms,
                        }
                        .to_string(),
                    ),
                ),
            };
            let status = Status {
                key,
                state,
                attempts: e.attempts,
                next_attempt_ms: Some(if e.due_ms == DUE_AT_ONCE {
                    now_ms()
                } else {
                    e.due_ms
                }),
            };
            return Some((status, path));
        }
        finished_status(&self.inner.root, key)
    }

    /// Where `key`'s file is, without reading its history (for a read of the file alone).
    pub(crate) fn locate_path(&self, key: Key) -> Option<PathBuf> {
        if lock(&self.inner.index).get(&key).is_some() {
            // Queued: from memory. (Finished meanwhile: found the slower way.)
            return self.locate_file(key).map(|(_, path)| path);
        }
        finished_file(&self.inner.root, key).map(|(_, path)| path)
    }

    /// The recorded attempts of `key`, oldest first.
    pub fn history(&self, key: Key) -> Vec<Attempt> {
        read_attempts(&self.inner.root, key)
    }

    /// Message counts by state, from memory (no I/O).
    pub(crate) fn counts(&self) -> Counts {
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
    pub(crate) fn sending(&self, claim: &Claim) -> Sending {
        let place = claim.place as usize;
        self.inner.sending[place].fetch_add(1, Ordering::AcqRel);
        Sending {
            inner: self.inner.clone(),
            place,
        }
    }

    /// How long the oldest message still to deliver has been waiting, if any (no I/O; a scan of
    /// the in-memory schedule).
    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        let oldest = lock(&self.inner.index).oldest_arrival_ms()?;
        Some(Duration::from_millis(now_ms().saturating_sub(oldest)))
    }

    /// `None` when the spool can store messages; otherwise why not. No I/O.
    pub(crate) fn unhealthy_reason(&self) -> Option<String> {
        if self.inner.health.failing() {
            Some(lock(&self.inner.health.reason).clone().unwrap_or_default())
        } else {
            None
        }
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

pub(crate) fn folder_of(place: Place) -> Folder {
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

fn finished_status(root: &Path, key: Key) -> Option<(Status, PathBuf)> {
    let (state, path) = finished_file(root, key)?;
    let status = Status {
        key,
        state,
        attempts: read_attempts(root, key).len() as u32,
        next_attempt_ms: None,
    };
    Some((status, path))
}

/// Where a finished message's file is, and its state, without reading its history.
fn finished_file(root: &Path, key: Key) -> Option<(State, PathBuf)> {
    [
        (Folder::Done, State::Delivered),
        (Folder::Dead, State::Dead),
    ]
    .into_iter()
    .map(|(folder, state)| (state, folder.path(root).join(key.to_string())))
    .find(|(_, path)| path.exists())
}

pub mod offline;

#[cfg(test)]
mod tests;
