//! The storage a daemon runs on, chosen by the config's `queue.backend`: the node's own maildir
//! spool, or the NATS JetStream cluster several nodes share (issue 12, docs/cluster.md). One
//! enum that implements [`storage::Storage`] by handing each call to the backend it holds, so
//! the kit, the accept paths, delivery and the admin endpoints stay written once, without a
//! type parameter, and a daemon that needs the maildir itself can ask for it
//! ([`Storage::maildir`]).

use std::time::Duration;

use storage::{
    Attempt, ChangeError, Claimed, Counts, Key, Listed, Outcome, RequeueError, State, Status,
    Unavailable,
};
use ulid::Ulid;

use crate::start::StartError;

/// The durable storage of a running daemon.
#[derive(Clone)]
pub enum Storage {
    Maildir(spool::Spool),
    JetStream(jetstream::JetStream),
}

/// A claim of either backend (JetStream's, which holds the delivered message, boxed).
pub enum Claim {
    Maildir(spool::Claim),
    JetStream(Box<jetstream::Claim>),
}

/// An attempt in flight in either backend.
pub enum Sending {
    Maildir(spool::Sending),
    JetStream(jetstream::Sending),
    /// A claim the backend did not make (see [`foreign`]).
    Nothing,
}

impl Claimed for Claim {
    fn key(&self) -> Key {
        match self {
            Claim::Maildir(c) => c.key(),
            Claim::JetStream(c) => c.key(),
        }
    }
    fn attempts(&self) -> u32 {
        match self {
            Claim::Maildir(c) => c.attempts(),
            Claim::JetStream(c) => c.attempts(),
        }
    }
    fn since_ms(&self) -> u64 {
        match self {
            Claim::Maildir(c) => c.since_ms(),
            Claim::JetStream(c) => c.since_ms(),
        }
    }
}

/// The JetStream options of a `queue:` section; a message holds its body and up to 1 MiB of
/// head and metadata.
pub fn jetstream_options(queue: &config::Queue, max_body_bytes: u64) -> jetstream::Options {
    let auth = match (&queue.token, &queue.user, &queue.password) {
        (Some(token), _, _) => jetstream::Auth::Token(token.expose().clone()),
        (None, Some(user), Some(password)) => jetstream::Auth::UserPassword {
            user: user.clone(),
            password: password.expose().clone(),
        },
        _ => jetstream::Auth::None,
    };
    jetstream::Options {
        servers: queue.servers.clone(),
        replicas: queue.replicas,
        prefix: queue.stream.clone(),
        auth,
        ca_file: queue.ca_file.clone(),
        ack_wait: queue.ack_wait,
        max_message_bytes: usize::try_from(max_body_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20),
        timeout: queue.timeout,
    }
}

impl Storage {
    /// Opens the backend `queue` names: the maildir at `spool` (locked), or the cluster.
    pub async fn open(
        spool: &config::Spool,
        queue: &config::Queue,
        max_body_bytes: u64,
    ) -> Result<Storage, StartError> {
        match queue.backend {
            config::Backend::Maildir => spool::Spool::open(
                &spool.dir,
                spool::Options {
                    fsync: spool.fsync,
                    ..spool::Options::default()
                },
            )
            .map(Storage::Maildir)
            .map_err(|e| match e {
                spool::OpenError::Locked { .. } => StartError::Locked(e),
                e => StartError::Spool(e),
            }),
            config::Backend::Jetstream => {
                jetstream::JetStream::open(&jetstream_options(queue, max_body_bytes))
                    .await
                    .map(Storage::JetStream)
                    .map_err(StartError::Queue)
            }
        }
    }

    /// The maildir spool, if that is the backend.
    pub fn maildir(&self) -> Option<&spool::Spool> {
        match self {
            Storage::Maildir(s) => Some(s),
            Storage::JetStream(_) => None,
        }
    }
}

/// Calls `$call` on whichever backend `$self` holds.
macro_rules! each {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Storage::Maildir($s) => $call,
            Storage::JetStream($s) => $call,
        }
    };
}

/// A claim given to the backend that did not make it: never happens, as one daemon holds one
/// backend; answered without a panic.
fn foreign(key: Key) -> Unavailable {
    Unavailable::new(std::io::Error::other(format!(
        "claim of {key} made by another backend"
    )))
}

impl storage::Storage for Storage {
    type Claim = Claim;
    type Sending = Sending;

    async fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> Result<Vec<Key>, Unavailable> {
        each!(self, s => s.enqueue(id, copies, content).await)
    }

    async fn claim_due(&self, now_ms: u64, max: usize) -> Vec<Claim> {
        match self {
            Storage::Maildir(s) => s
                .claim_due(now_ms, max)
                .await
                .into_iter()
                .map(Claim::Maildir)
                .collect(),
            Storage::JetStream(s) => s
                .claim_due(now_ms, max)
                .await
                .into_iter()
                .map(|c| Claim::JetStream(Box::new(c)))
                .collect(),
        }
    }

    fn next_due_ms(&self) -> Option<u64> {
        each!(self, s => s.next_due_ms())
    }

    async fn changed(&self) {
        each!(self, s => s.changed().await)
    }

    async fn read(&self, claim: &Claim) -> Result<Vec<u8>, Unavailable> {
        match (self, claim) {
            (Storage::Maildir(s), Claim::Maildir(c)) => s.read(c).await,
            (Storage::JetStream(s), Claim::JetStream(c)) => s.read(c).await,
            (_, c) => Err(foreign(c.key())),
        }
    }

    async fn release(&self, claim: Claim) {
        match (self, claim) {
            (Storage::Maildir(s), Claim::Maildir(c)) => s.release(c).await,
            (Storage::JetStream(s), Claim::JetStream(c)) => s.release(*c).await,
            _ => {}
        }
    }

    fn sending(&self, claim: &Claim) -> Sending {
        match (self, claim) {
            (Storage::JetStream(s), Claim::JetStream(c)) => Sending::JetStream(s.sending(c)),
            (Storage::Maildir(s), Claim::Maildir(c)) => Sending::Maildir(s.sending(c)),
            // A foreign claim is refused by `finish`; count it nowhere.
            _ => Sending::Nothing,
        }
    }

    async fn finish(
        &self,
        claim: Claim,
        attempt: Option<&Attempt>,
        outcome: Outcome,
    ) -> Result<(), Unavailable> {
        match (self, claim) {
            (Storage::Maildir(s), Claim::Maildir(c)) => s.finish(c, attempt, outcome).await,
            (Storage::JetStream(s), Claim::JetStream(c)) => s.finish(*c, attempt, outcome).await,
            (_, c) => Err(foreign(c.key())),
        }
    }

    async fn status(&self, key: Key) -> Result<Option<Status>, Unavailable> {
        each!(self, s => s.status(key).await)
    }

    async fn attempts(&self, key: Key) -> Result<Vec<Attempt>, Unavailable> {
        each!(self, s => s.attempts(key).await)
    }

    async fn message(&self, key: Key, limit: usize) -> Result<Option<Vec<u8>>, Unavailable> {
        each!(self, s => s.message(key, limit).await)
    }

    async fn copies(&self, key: Key) -> Result<Vec<Key>, Unavailable> {
        each!(self, s => s.copies(key).await)
    }

    async fn list(&self) -> Result<Vec<Listed>, Unavailable> {
        each!(self, s => s.list().await)
    }

    fn counts(&self) -> Counts {
        each!(self, s => s.counts())
    }

    fn oldest_age(&self) -> Option<Duration> {
        each!(self, s => s.oldest_age())
    }

    async fn requeue(&self, key: Key) -> Result<(), RequeueError> {
        each!(self, s => s.requeue(key).await)
    }

    async fn retry_now(&self, key: Key) -> Result<(), ChangeError> {
        each!(self, s => s.retry_now(key).await)
    }

    async fn delete(&self, key: Key) -> Result<State, ChangeError> {
        each!(self, s => s.delete(key).await)
    }

    async fn purge_dead(&self) -> Result<usize, Unavailable> {
        each!(self, s => s.purge_dead().await)
    }

    async fn prune(&self, retention: Duration) -> Result<usize, Unavailable> {
        each!(self, s => s.prune(retention).await)
    }

    fn unhealthy_reason(&self) -> Option<String> {
        each!(self, s => s.unhealthy_reason())
    }
}

/// The records of either backend ([`storage::Records`]): the spool's `records/` folder, or the
/// cluster's records bucket, which every node shares (whomp's event layer and idempotency keys).
/// The bucket's handle is boxed (clippy large_enum_variant: 1288 against 24 bytes).
#[derive(Clone)]
pub enum Records {
    Maildir(spool::DirRecords),
    JetStream(Box<jetstream::JetRecords>),
}

impl Storage {
    /// The records beside this storage; `queue` and `max_body_bytes` as given to [`Storage::open`].
    pub async fn records(
        &self,
        queue: &config::Queue,
        max_body_bytes: u64,
    ) -> Result<Records, StartError> {
        match self {
            Storage::Maildir(s) => Ok(Records::Maildir(s.records())),
            Storage::JetStream(s) => s
                .records(&jetstream_options(queue, max_body_bytes))
                .await
                .map(|r| Records::JetStream(Box::new(r)))
                .map_err(StartError::Queue),
        }
    }

    /// Whether the nodes share this storage (and so their records): JetStream.
    pub fn shared(&self) -> bool {
        matches!(self, Storage::JetStream(_))
    }
}

/// Calls `$call` on whichever records `$self` holds.
macro_rules! each_records {
    ($self:expr, $r:ident => $call:expr) => {
        match $self {
            Records::Maildir($r) => $call,
            Records::JetStream($r) => $call,
        }
    };
}

impl storage::Records for Records {
    async fn put(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), storage::RecordError> {
        each_records!(self, r => r.put(namespace, key, value).await)
    }

    async fn create(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<bool, storage::RecordError> {
        each_records!(self, r => r.create(namespace, key, value).await)
    }

    async fn create_expiring(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, storage::RecordError> {
        each_records!(self, r => r.create_expiring(namespace, key, value, ttl).await)
    }

    async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, storage::RecordError> {
        each_records!(self, r => r.get(namespace, key).await)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<bool, storage::RecordError> {
        each_records!(self, r => r.delete(namespace, key).await)
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, storage::RecordError> {
        each_records!(self, r => r.list(namespace).await)
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Maildir(s) => f.debug_tuple("Maildir").field(&s.dir()).finish(),
            Storage::JetStream(_) => f.write_str("JetStream"),
        }
    }
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Records::Maildir(r) => f.debug_tuple("Maildir").field(r).finish(),
            Records::JetStream(_) => f.write_str("JetStream"),
        }
    }
}
