//! The storage seam: what the rest of the code needs from durable storage, so that a second
//! backend plugs in without the daemons, delivery, the CLI or the admin endpoints changing.
//!
//! Two traits, each a contract that [`conformance`] (feature `testing`) checks against any
//! implementation:
//! - [`Storage`], the message queue: enqueue durably, claim what is due, record each attempt's
//!   outcome, and the operator's reads and changes. The maildir spool (crate `spool`) is its
//!   first implementation; a NATS JetStream one (issue 12) is next.
//! - [`Records`], a small durable record store of JSON documents by namespace and key, for the
//!   event layer's targets, filters and subscriptions (issue 13, `whomp::events`).
//!
//! The vocabulary both sides speak lives here too: [`Key`], [`State`], [`Attempt`],
//! [`Outcome`], [`Counts`], [`Status`], and the errors, one variant per decision a caller makes:
//! [`Unavailable`] is a 503 and not ready, the others are 4xx answers to an operator.
//!
//! Methods are `async fn` in the trait (return-position `impl Future + Send`), without boxing;
//! callers are generic over `S: Storage` (delivery's loop) or hold the one backend a daemon
//! opened. Checks that cost nothing (readiness, gauges, the next due time) are plain methods:
//! a backend answers them from memory.

mod key;

#[cfg(feature = "testing")]
pub mod conformance;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use ulid::Ulid;

pub use key::{BadKey, Key};

/// The most bytes of a response kept in an attempt record.
pub const EXCERPT_BYTES: usize = 512;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The states a message can be in, as the CLI and status API name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Retrying,
    Delivered,
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Retrying => "retrying",
            State::Delivered => "delivered",
            State::Dead => "dead",
        }
    }
}

/// One delivery attempt, as recorded and read back per message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt started, ms since the Unix epoch.
    pub at_ms: u64,
    /// Where it went: `scheme://host:port` only (`delivery::origin`), never a whole URL.
    pub target: String,
    /// The response status, if a response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The network or protocol error, if no usable response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// The start of the response body, at most [`EXCERPT_BYTES`], lossily decoded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub excerpt: String,
}

impl Attempt {
    /// A short description of a failed attempt, for `last_error`.
    pub fn failure(&self) -> Option<String> {
        match (&self.error, self.status) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(s)) if !(200..300).contains(&s) => Some(format!("status {s}")),
            _ => None,
        }
    }
}

/// Cuts a response body down to an attempt excerpt.
pub fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(EXCERPT_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

/// What to do with a claimed message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Try again at `due_ms` (ms since the epoch).
    Retry { due_ms: u64 },
    /// It was delivered.
    Delivered,
    /// Give up: keep it as a dead letter.
    Dead,
}

/// Where a message stands, for the status API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub key: Key,
    pub state: State,
    pub attempts: u32,
    /// ms since the epoch; only while queued or retrying.
    pub next_attempt_ms: Option<u64>,
}

/// One message as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub state: State,
    pub attempts: u32,
    /// ms since the epoch; for queued and retrying messages.
    pub next_attempt_ms: Option<u64>,
    /// The last failed attempt's error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Counts of messages by state, for the `*_spool_messages{state}` gauges. Each message still
/// to deliver is in exactly one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Never attempted, and no attempt in flight.
    pub queued: usize,
    /// Attempted before, waiting for the next attempt.
    pub retrying: usize,
    /// An attempt is in flight right now (see [`Storage::sending`]); a claimed message that
    /// waits for a free slot at its destination is still `queued` or `retrying`.
    pub in_flight: usize,
}

/// The storage itself failed (a disk that cannot write, a cluster without quorum): answer 503
/// with `Retry-After`, and report not ready until it heals. Nothing was changed, or (for a
/// state change) the change may not survive a crash; either way nothing acknowledged is lost.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Unavailable(Box<dyn std::error::Error + Send + Sync>);

impl Unavailable {
    /// Wraps a backend's own error, which names the thing that failed.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Unavailable {
        Unavailable(Box::new(error))
    }

    /// The backend's error, to look into in its own tests.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// Why a re-queue did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The key is not a dead message (unknown, still queued, or delivered): answer 404/409.
    #[error("{0} is not a dead message")]
    NotDead(Key),
    /// Nothing changed: 503.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why an operator's retry or delete of one message did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The storage has no such message (never had it, or it was pruned or deleted): 404.
    #[error("no message {0}")]
    NotFound(Key),
    /// A retry of a message that was delivered: 409.
    #[error("{0} is delivered; there is nothing to retry")]
    Delivered(Key),
    /// It is being attempted right now: 409; the operator tries again after the attempt.
    #[error("{0} is being attempted right now; try again when the attempt is over")]
    InFlight(Key),
    /// The change did not happen, or may not survive a crash: 503.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// A claimed message, as the delivery loop and couriers see it. The rest of a claim (maildir:
/// the file's current name; JetStream: the ack handle) is the backend's business.
pub trait Claimed: Send + 'static {
    fn key(&self) -> Key;
    /// Attempts made so far.
    fn attempts(&self) -> u32;
    /// When the current retry budget started (arrival or re-queue), ms since the epoch.
    fn since_ms(&self) -> u64;
}

/// Durable storage of messages: the contract every backend keeps, checked by
/// [`conformance::storage`].
///
/// - **Durable before it returns.** [`Storage::enqueue`] returns `Ok` only once the message
///   survives a crash (and, where configured, a power loss or a node's loss); on `Err` nothing
///   was kept and the sender must be refused. Nothing is answered 2xx before that.
/// - **One deliverer per message.** A claimed message is handed to no one else until it is
///   finished ([`Storage::finish`]) or released ([`Storage::release`]). A claim not given back
///   before the process dies is claimable again after a restart (or a redelivery timeout): a
///   duplicate attempt, never a loss.
/// - **Outcomes are recorded before they return**, and survive a crash of the process; a
///   backend may make them power-loss durable a moment later (the attempt is then made again).
/// - **Never early.** [`Storage::claim_due`] hands out messages due at or before `now_ms`,
///   never one due later; a new message is due at once. A backend may hand a message out a
///   little late (the maildir schedule rounds due times up to 100 ms), never more than
///   [`Storage::next_due_ms`] says.
/// - **Reads and gauges are cheap.** [`Storage::counts`], [`Storage::next_due_ms`],
///   [`Storage::oldest_age`] and [`Storage::unhealthy_reason`] answer from memory, without I/O.
/// - **Unavailable, not wrong.** When the backend cannot write, calls fail with
///   [`Unavailable`] and [`Storage::unhealthy_reason`] says why, until it heals by itself.
pub trait Storage: Clone + Send + Sync + 'static {
    /// A message handed to one deliverer; opaque but for what [`Claimed`] tells.
    type Claim: Claimed;
    /// Counts an attempt in [`Counts::in_flight`] while it lives.
    type Sending: Send + 'static;

    /// Stores `content` durably as message `id` with `copies` deliverable copies (0 or 1 = a
    /// single target, key `id`; more = fan-out, keys `id.1`..`id.N`, each with its own retry
    /// state). Returns the keys once they are durable; on error nothing was kept.
    fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<Key>, Unavailable>> + Send;

    /// Claims up to `max` messages due at `now_ms`, the longest due first. None when none is
    /// due or the backend is unavailable (it says so through [`Storage::unhealthy_reason`]).
    fn claim_due(&self, now_ms: u64, max: usize) -> impl Future<Output = Vec<Self::Claim>> + Send;

    /// When the next unclaimed message can be claimed (ms since the epoch): at or a little
    /// after its due time. `None` when none is known. No I/O.
    fn next_due_ms(&self) -> Option<u64>;

    /// Resolves when a message may have become due earlier than [`Storage::next_due_ms`] said
    /// (an enqueue, a re-queue, a release). Cancel-safe: the delivery loop selects on it.
    fn changed(&self) -> impl Future<Output = ()> + Send;

    /// The stored bytes of a claimed message, as enqueued.
    fn read(
        &self,
        claim: &Self::Claim,
    ) -> impl Future<Output = Result<Vec<u8>, Unavailable>> + Send;

    /// Gives a claim back untouched, due when it was (at shutdown, or when its destination is
    /// busy). No attempt is counted.
    fn release(&self, claim: Self::Claim) -> impl Future<Output = ()> + Send;

    /// Marks an attempt of `claim` in flight, for [`Storage::counts`], until the guard drops.
    fn sending(&self, claim: &Self::Claim) -> Self::Sending;

    /// Records `attempt` (if any: an operator's retry-now has none) in the message's history
    /// and applies `outcome`. With an attempt the attempt count goes up by one. On error the
    /// message stays where it was and is attempted again later.
    fn finish(
        &self,
        claim: Self::Claim,
        attempt: Option<&Attempt>,
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send;

    /// Where `key` stands, or `None` if the storage never had it (or it was pruned or deleted).
    fn status(&self, key: Key) -> impl Future<Output = Result<Option<Status>, Unavailable>> + Send;

    /// The recorded attempts of `key`, oldest first; empty for an unknown key.
    fn attempts(&self, key: Key) -> impl Future<Output = Result<Vec<Attempt>, Unavailable>> + Send;

    /// The first `limit` stored bytes of `key` in any state (a status page wants the head
    /// only), or `None` if there is no such message.
    fn message(
        &self,
        key: Key,
        limit: usize,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Unavailable>> + Send;

    /// The keys stored under `key`: itself if stored; for a bare id (copy 0) that is not, every
    /// stored copy of it. Empty when there are none.
    fn copies(&self, key: Key) -> impl Future<Output = Result<Vec<Key>, Unavailable>> + Send;

    /// Every message, each once, in key (arrival) order, with its state.
    fn list(&self) -> impl Future<Output = Result<Vec<Listed>, Unavailable>> + Send;

    /// Message counts by state. No I/O.
    fn counts(&self) -> Counts;

    /// How long the oldest message still to deliver has been waiting, if any. No I/O.
    fn oldest_age(&self) -> Option<Duration>;

    /// Moves a dead message back to the queue with a fresh retry budget and no attempts
    /// counted, due now. Durable before it returns.
    fn requeue(&self, key: Key) -> impl Future<Output = Result<(), RequeueError>> + Send;

    /// Has `key` attempted as soon as possible: a dead message is re-queued
    /// ([`Storage::requeue`]); a retrying one is made due now, keeping its attempt count and
    /// retry budget; a queued one is due already.
    fn retry_now(&self, key: Key) -> impl Future<Output = Result<(), ChangeError>> + Send;

    /// Deletes one message (one copy of a fanned-out one) wherever it is and returns the state
    /// it was in. Refused while it is being attempted. Durable before it returns.
    fn delete(&self, key: Key) -> impl Future<Output = Result<State, ChangeError>> + Send;

    /// Deletes every dead message; returns how many.
    fn purge_dead(&self) -> impl Future<Output = Result<usize, Unavailable>> + Send;

    /// Forgets delivered messages finished longer than `retention` ago, with the history no
    /// message still needs; returns how many messages went.
    fn prune(&self, retention: Duration)
        -> impl Future<Output = Result<usize, Unavailable>> + Send;

    /// `None` when the storage can take messages; otherwise why not, for `/readyz` and the
    /// log. No I/O.
    fn unhealthy_reason(&self) -> Option<String>;
}

/// Why a record could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A namespace or key that is not a name: empty, longer than [`MAX_NAME`], or with
    /// characters other than `A-Z a-z 0-9 - _ .` (or starting with `.`): 400.
    #[error("{0:?} is not a record name (1 to 128 of A-Z a-z 0-9 - _ ., not starting with .)")]
    BadName(String),
    /// The storage failed: 503.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// The longest namespace or key of a record.
pub const MAX_NAME: usize = 128;

/// Checks a record's namespace or key: one spelling that is safe as a file name, a KV key and a
/// log field.
pub fn check_name(name: &str) -> Result<&str, RecordError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name)
    } else {
        Err(RecordError::BadName(name.to_owned()))
    }
}

/// A small durable store of documents (a few, small, changed rarely) by namespace and key: the
/// event layer's webhook targets, filters and subscriptions (issue 13, `whomp::events`).
/// Checked by [`conformance::records`].
///
/// - **Durable before it returns:** after `put` or `delete` returns `Ok`, a SIGKILL or power
///   loss keeps the change; a reader never sees a half-written value.
/// - Namespaces and keys are names ([`check_name`]); anything else is [`RecordError::BadName`].
/// - A namespace exists while it has records; listing an unknown one is empty.
pub trait Records: Clone + Send + Sync + 'static {
    /// Stores `value` under `namespace`/`key`, replacing what was there.
    fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;

    /// Stores `value` under `namespace`/`key` only if nothing is there, atomically: of several
    /// creates of one record at the same moment (from any node) exactly one returns `true`, and
    /// the others `false`, leaving the winner's value (an idempotency key's first id).
    fn create(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<bool, RecordError>> + Send;

    /// [`Records::create`] of a record that is needed for `ttl` only (an idempotency key's
    /// claim, an event's answer): a backend that can expire records forgets it once `ttl` (in
    /// whole seconds, at least one) has passed, and it may then be created again; one that
    /// cannot (the maildir, the default) keeps it until it is deleted, and its caller prunes.
    fn create_expiring(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, RecordError>> + Send {
        let _ = ttl;
        self.create(namespace, key, value)
    }

    /// The value under `namespace`/`key`, if any.
    fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, RecordError>> + Send;

    /// Removes `namespace`/`key`; whether it was there.
    fn delete(
        &self,
        namespace: &str,
        key: &str,
    ) -> impl Future<Output = Result<bool, RecordError>> + Send;

    /// Every record of `namespace`, by key order.
    fn list(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, RecordError>> + Send;
}
