//! The cluster backend of the storage seam (issue 12): [`storage::Storage`] and
//! [`storage::Records`] over NATS JetStream, so that several nodes share one replicated queue and
//! any of them delivers what another accepted.
//!
//! Layout, under a name prefix `P` (`queue.stream`) so two deployments can share a cluster:
//! - stream `P_queue`, one message per deliverable copy on subject `P.queue.<key>` (a fan-out
//!   to N targets is N messages `<id>.1`..`<id>.N`, each with its own retry state, like the
//!   maildir's copies), at most one per subject: re-publishing a key replaces it. Published with
//!   `Nats-Msg-Id: <key>`, so a publish retried after a timeout is stored once. Nothing is
//!   acknowledged to a sender before the stream acked the publish (with `replicas`, a quorum).
//! - durable pull consumer `deliver` on it, shared by every node: explicit ack, `ack_wait`,
//!   unlimited deliveries. A claim is a delivery; a retry is a NAK with the delay the retry
//!   policy chose (the server redelivers then, to any node). A claim is kept with a progress ack
//!   every half `ack_wait` while it lives; a node that dies mid-attempt sends none, loses its
//!   claim after `ack_wait`, and another node gets the message: a duplicate, never a loss.
//! - stream `P_dead` (`P.dead.<key>`): dead letters, re-queued from there by any node.
//! - KV bucket `P_state`: each message's state and attempts ([`record::Record`]), the truth the
//!   status API, listings and claims go by, written at a message's first outcome (or operator
//!   change), not when it is stored: the publish is the one replicated write before a 2xx. A
//!   message in `P_queue` with no record (and no deletion marker) is queued, as of its publish
//!   time. Every node watches the bucket, and the queue stream's headers, to answer the gauges
//!   and the next due time from memory ([`index`]).
//! - KV bucket `P_records`: [`storage::Records`], keyed `namespace/key`.
//!
//! Bodies: the stream's max message size is [`Options::max_message_bytes`]; the servers'
//! `max_payload` must be at least that (checked on connect), e.g. `max_payload: 16MB` for the
//! 10 MiB default body limit. When the cluster cannot answer (no connection, no quorum, a
//! publish error or timeout), calls fail with [`storage::Unavailable`] and
//! [`JetStream::unhealthy_reason`] says why until a probe, once a second, succeeds again.

mod import;
mod index;
mod record;
mod records;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, push, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{self as js, Context};
use async_nats::{header, HeaderMap, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use storage::{
    now_ms, Attempt, ChangeError, Claimed, Counts, Key, Listed, Outcome, RequeueError, State,
    Status, Storage, Unavailable,
};
use tokio::sync::Notify;
use ulid::Ulid;

pub use import::{Imported, Incoming};
use index::Index;
use record::Record;
pub use records::JetRecords;

/// The most messages one `claim_due` takes from the consumer.
const MAX_BATCH: usize = 256;
/// How often the health probe asks the cluster.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// After a claim found nothing due, how long the next due time stays at least this far ahead.
const QUIET: Duration = Duration::from_millis(500);

/// How to reach the cluster and what to create on it.
#[derive(Debug, Clone)]
pub struct Options {
    /// `nats://host:port` (or `tls://`) of some or all servers.
    pub servers: Vec<String>,
    /// Replicas of every stream and bucket: 3 for a 3-server cluster, 1 for one server.
    pub replicas: usize,
    /// Prefix of every stream, subject and bucket name (`A-Z a-z 0-9 - _`).
    pub prefix: String,
    pub auth: Auth,
    /// A PEM file of CAs to verify the servers by; TLS is required when set.
    pub ca_file: Option<PathBuf>,
    /// How long a claim may go without an outcome before the server redelivers it elsewhere;
    /// longer than the longest attempt.
    pub ack_wait: Duration,
    /// The stream's max message size: the largest message the daemon stores, head included.
    pub max_message_bytes: usize,
    /// How long a publish or any other request may take before it is unavailable.
    pub timeout: Duration,
}

/// How the client proves who it is, as the servers' `authorization` block expects.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.write_str(match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::UserPassword { .. } => "user/password",
        })
    }
}

/// A NATS operation that failed, naming what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("nats {what}: {detail}")]
pub struct NatsError {
    what: String,
    detail: String,
}

fn failed(what: impl Into<String>, detail: impl std::fmt::Display) -> NatsError {
    NatsError {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// The JetStream storage: cheap to clone, one connection shared by every clone.
#[derive(Clone)]
pub struct JetStream {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: Context,
    prefix: String,
    queue: stream::Stream,
    dead: stream::Stream,
    consumer: PullConsumer,
    state: kv::Store,
    /// The bucket's stream, read through its leader: a replica that lags (a restarted server
    /// catching up) would answer "no record" for a message already delivered.
    state_stream: stream::Stream,
    index: Mutex<Index>,
    changed: Notify,
    unhealthy: Mutex<Option<String>>,
    /// The consumer's ack wait: a claim is kept alive with a progress ack every half of it.
    ack_wait: Duration,
    /// How long any request may take ([`Options::timeout`]).
    timeout: Duration,
}

/// Connects to the servers named in `options`.
pub async fn connect(options: &Options) -> Result<async_nats::Client, NatsError> {
    let servers = options
        .servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| failed(format!("server {s}"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut connect = async_nats::ConnectOptions::new()
        .connection_timeout(options.timeout)
        .request_timeout(Some(options.timeout))
        .max_reconnects(None);
    connect = match &options.auth {
        Auth::None => connect,
        Auth::Token(token) => connect.token(token.clone()),
        Auth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.clone())
        }
    };
    if let Some(ca) = &options.ca_file {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    connect
        .connect(servers)
        .await
        .map_err(|e| failed(format!("connect to {}", options.servers.join(", ")), e))
}

fn context(client: async_nats::Client, options: &Options) -> Context {
    let mut js = js::new(client);
    js.set_timeout(options.timeout);
    js
}

/// A KV bucket `P_<name>` with the options' replicas, created or updated.
async fn bucket(js: &Context, options: &Options, name: &str) -> Result<kv::Store, NatsError> {
    let bucket = format!("{}_{name}", options.prefix);
    js.create_or_update_key_value(kv::Config {
        bucket: bucket.clone(),
        history: 1,
        num_replicas: options.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| failed(format!("bucket {bucket}"), e))
}

/// How long start-up keeps trying the set-up requests (streams, consumer, buckets).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Creates (or updates) the streams, the shared consumer and the state bucket: every step
/// idempotent, so a failed set-up can simply run again.
async fn set_up(
    client: &async_nats::Client,
    options: &Options,
) -> Result<
    (
        Context,
        stream::Stream,
        stream::Stream,
        PullConsumer,
        kv::Store,
    ),
    NatsError,
> {
    let js = context(client.clone(), options);
    let p = &options.prefix;
    let max_message_size = i32::try_from(options.max_message_bytes).unwrap_or(i32::MAX);
    let mut streams = Vec::new();
    for (name, subject) in [("queue", "queue"), ("dead", "dead")] {
        let name = format!("{p}_{name}");
        js.create_or_update_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{p}.{subject}.>")],
            max_messages_per_subject: 1,
            max_message_size,
            num_replicas: options.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(format!("stream {name}"), e))?;
        let handle = js
            .get_stream(&name)
            .await
            .map_err(|e| failed(format!("stream {name}"), e))?;
        streams.push(handle);
    }
    let dead = streams.pop().expect("two streams");
    let queue = streams.pop().expect("two streams");
    let consumer = queue
        .create_consumer(pull::Config {
            durable_name: Some("deliver".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: 100_000,
            filter_subject: format!("{p}.queue.>"),
            ..Default::default()
        })
        .await
        .map_err(|e| failed(format!("consumer deliver of {p}_queue"), e))?;
    let state = bucket(&js, options, "state").await?;
    Ok((js, queue, dead, consumer, state))
}

impl JetStream {
    /// Connects, creates (or updates) the streams, the consumer and the state bucket, and
    /// starts watching the bucket and probing the cluster's health.
    pub async fn open(options: &Options) -> Result<JetStream, NatsError> {
        let client = connect(options).await?;
        let max_payload = client.server_info().max_payload;
        if max_payload < options.max_message_bytes {
            return Err(failed(
                "max_payload",
                format!(
                    "the server takes messages up to {max_payload} bytes, the queue needs {}; \
                     set max_payload in the server config",
                    options.max_message_bytes
                ),
            ));
        }
        let (js, queue, dead, consumer, state) = patiently(|| set_up(&client, options)).await?;
        let p = &options.prefix;
        let state_stream = js
            .get_stream(format!("KV_{p}_state"))
            .await
            .map_err(|e| failed(format!("bucket {p}_state"), e))?;
        let inner = Arc::new(Inner {
            client,
            js,
            prefix: p.clone(),
            queue,
            dead,
            consumer,
            state: state.clone(),
            state_stream,
            index: Mutex::new(Index::default()),
            changed: Notify::new(),
            unhealthy: Mutex::new(None),
            ack_wait: options.ack_wait,
            timeout: options.timeout,
        });
        // The index is complete before the first answer: read the bucket once, then follow.
        let mut watch = state
            .watch_with_history(">")
            .await
            .map_err(|e| failed(format!("watch {p}_state"), e))?;
        let pending = state
            .status()
            .await
            .map_err(|e| failed(format!("bucket {p}_state"), e))?
            .values();
        if pending > 0 {
            // Up to the newest entry; the follower picks up whatever a timeout leaves.
            while let Ok(Some(Ok(entry))) =
                tokio::time::timeout(options.timeout, watch.next()).await
            {
                let current = entry.seen_current || entry.delta == 0;
                inner.apply(entry);
                if current {
                    break;
                }
            }
        }
        // Then the messages stored but not attempted yet, which have no record.
        let (mut arrivals, current) = watch_queue(&inner.client, &inner.queue, p).await?;
        if !current {
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(options.timeout, arrivals.next()).await
            {
                let caught_up = message.info().is_ok_and(|i| i.pending == 0);
                inner.arrived(&message);
                if caught_up {
                    break;
                }
            }
        }
        tokio::spawn(follow(
            Arc::downgrade(&inner),
            "the state bucket",
            watch,
            |inner, entry| inner.apply(entry),
            |inner| async move { inner.state.watch_with_history(">").await.ok() },
        ));
        tokio::spawn(follow(
            Arc::downgrade(&inner),
            "the queue stream",
            arrivals,
            |inner, message| inner.arrived(&message),
            |inner| async move {
                let watched = watch_queue(&inner.client, &inner.queue, &inner.prefix).await;
                watched.ok().map(|(arrivals, _)| arrivals)
            },
        ));
        tokio::spawn(probe(Arc::downgrade(&inner)));
        Ok(JetStream { inner })
    }

    /// The records store in the same cluster (bucket `P_records`).
    pub async fn records(&self, options: &Options) -> Result<JetRecords, NatsError> {
        patiently(|| JetRecords::open(&self.inner.js, options)).await
    }
}

/// Runs an idempotent set-up step until it succeeds or [`SETUP_PATIENCE`] has passed: a cluster
/// electing a leader (a server just restarted, or nodes started together racing to create the
/// same streams) can time the first requests out, and start-up should not fail for that.
async fn patiently<T, F>(mut step: impl FnMut() -> F) -> Result<T, NatsError>
where
    F: std::future::Future<Output = Result<T, NatsError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "jetstream set-up failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Follows a watch into the index with `apply`, waking the delivery loop when it told something
/// new: the state bucket (other nodes' changes) and the queue stream's headers (a message any
/// node stores reaches the index as queued although its state record is written only at its
/// first outcome). A watch that fails (a missed heartbeat when a leader is lost) or ends (a lost
/// connection) is started over with `restart`, once a second until it succeeds, from the
/// current values (what it sees again is known); a watch left broken would leave the index, and
/// so the delivery loop's next due time, stale for good. Ends when the backend is dropped.
async fn follow<S, T, E, F>(
    inner: Weak<Inner>,
    what: &'static str,
    mut watch: S,
    apply: fn(&Inner, T) -> bool,
    restart: fn(Arc<Inner>) -> F,
) where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
    F: std::future::Future<Output = Option<S>>,
{
    loop {
        loop {
            let item = watch.next().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match item {
                Some(Ok(item)) => {
                    if apply(&inner, item) {
                        inner.changed.notify_one();
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("nats watch of {what}: {e}; watching it again");
                    break;
                }
                None => break,
            }
        }
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let Some(strong) = inner.upgrade() else {
                return;
            };
            if let Some(w) = restart(strong).await {
                watch = w;
                break;
            }
        }
    }
}

/// A headers-only ordered consumer over every message in `P_queue`, and whether it has nothing
/// to catch up on.
async fn watch_queue(
    client: &async_nats::Client,
    queue: &stream::Stream,
    prefix: &str,
) -> Result<(push::Ordered, bool), NatsError> {
    let what = || format!("watch {prefix}_queue");
    let consumer = queue
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{prefix}.queue.>"),
            headers_only: true,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(what(), e))?;
    let current = consumer.cached_info().num_pending == 0;
    let messages = consumer.messages().await.map_err(|e| failed(what(), e))?;
    Ok((messages, current))
}

/// Probes the cluster once a second: ready again on its own once the stream answers.
async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let reason = if inner.client.connection_state() != async_nats::connection::State::Connected
        {
            Some("nats: not connected to any server".to_owned())
        } else {
            match inner.queue.get_info().await {
                Ok(_) => None,
                Err(e) => Some(format!("nats stream {}_queue: {e}", inner.prefix)),
            }
        };
        *lock(&inner.unhealthy) = reason;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A CAS update lost to another writer (an operator's change, another node's outcome).
struct Conflict;

/// What the state bucket holds of a key.
enum Loaded {
    /// Its record, at this revision.
    Record(u64, Record),
    /// A deletion marker: deleted (or pruned); a message left in the queue is a leftover.
    Deleted,
    /// Nothing: not stored, or stored and not attempted yet (the queue stream says which).
    Missing,
}

fn ms(t: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Something is due now: ends a quiet spell after an empty claim and wakes the delivery
    /// loop.
    fn wake(&self) {
        self.index().quiet_until_ms = 0;
        self.changed.notify_one();
    }

    /// Marks the backend unavailable (until the probe succeeds) and says why.
    fn fail(&self, what: impl Into<String>, detail: impl std::fmt::Display) -> Unavailable {
        let e = failed(what, detail);
        *lock(&self.unhealthy) = Some(e.to_string());
        Unavailable::new(e)
    }

    /// Applies a watched entry to the index; true if it told something new.
    fn apply(&self, entry: kv::Entry) -> bool {
        let Ok(key) = entry.key.parse::<Key>() else {
            return false;
        };
        match entry.operation {
            Operation::Put => match serde_json::from_slice::<Record>(&entry.value) {
                Ok(record) => self.index().put(key, entry.revision, &record),
                Err(_) => false,
            },
            Operation::Delete | Operation::Purge => {
                self.index().delete(key, entry.revision);
                true
            }
        }
    }

    /// Applies a message of the queue stream (its headers) to the index: queued as of its
    /// publish, unless a record or a deletion is known; true if it told something new.
    fn arrived(&self, message: &js::Message) -> bool {
        let (Some(key), Ok(info)) = (self.queued_key(&message.subject), message.info()) else {
            return false;
        };
        self.index().queued(key, ms(info.published))
    }

    fn subject(&self, stream: &str, key: Key) -> String {
        format!("{}.{stream}.{key}", self.prefix)
    }

    /// The key of a subject of the queue stream.
    fn queued_key(&self, subject: &str) -> Option<Key> {
        subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".queue.")?
            .parse()
            .ok()
    }

    /// What the state bucket holds of `key`, as its stream's leader says.
    async fn load(&self, key: Key) -> Result<Loaded, Unavailable> {
        let subject = format!("$KV.{}_state.{key}", self.prefix);
        let m = match self
            .state_stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(Loaded::Missing)
            }
            Err(e) => return Err(self.fail(format!("state of {key}"), e)),
        };
        // A deletion or purge is a marker with the operation in a header.
        if m.headers.get("KV-Operation").is_some() {
            return Ok(Loaded::Deleted);
        }
        let record = serde_json::from_slice(&m.payload)
            .map_err(|e| self.fail(format!("state of {key}"), e))?;
        Ok(Loaded::Record(m.sequence, record))
    }

    /// The state of `key` and its revision: its record, or, for a message stored but not
    /// attempted yet, queued as of `published` (ms), or as of its publish read from the queue
    /// stream, at revision 0. None if unknown or deleted.
    async fn current(
        &self,
        key: Key,
        published: Option<u64>,
    ) -> Result<Option<(u64, Record)>, Unavailable> {
        match self.load(key).await? {
            Loaded::Record(revision, record) => Ok(Some((revision, record))),
            Loaded::Deleted => Ok(None),
            Loaded::Missing => {
                if let Some(at) = published {
                    return Ok(Some((0, Record::new(at))));
                }
                let subject = self.subject("queue", key);
                match self.queue.get_last_raw_message_by_subject(&subject).await {
                    Ok(m) => Ok(Some((0, Record::new(ms(m.time))))),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(self.fail(format!("read {subject}"), e)),
                }
            }
        }
    }

    /// Writes `record` over revision `revision` (0: the first record of a key that has none,
    /// not even a deletion marker).
    async fn save(
        &self,
        key: Key,
        revision: u64,
        record: &Record,
    ) -> Result<Result<(), Conflict>, Unavailable> {
        let value = Bytes::from(serde_json::to_vec(record).expect("a record serializes"));
        // Revision 0 expects no entry at all, so a message deleted meanwhile (a marker) is
        // never brought back by an outcome that comes late.
        let written = match self.state.update(key.to_string(), value, revision).await {
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(Err(Conflict)),
            other => other.map_err(|e| self.fail(format!("state of {key}"), e)),
        }?;
        self.index().put(key, written, record);
        Ok(Ok(()))
    }

    /// Loads `key` ([`Inner::current`], `published` as there), lets `change` decide (false:
    /// leave it), writes it back; again on a conflict. Returns the record as it was before the
    /// change, or None if unknown.
    async fn change<E: From<Unavailable>>(
        &self,
        key: Key,
        published: Option<u64>,
        mut read: Option<(u64, Record)>,
        mut change: impl FnMut(&mut Record) -> Result<bool, E>,
    ) -> Result<Option<Record>, E> {
        for _ in 0..5 {
            // What the caller read already is tried first (a claim's state: most outcomes are
            // written without a read); on a conflict it is read again.
            let current = match read.take() {
                Some(read) => Some(read),
                None => self.current(key, published).await?,
            };
            let Some((revision, record)) = current else {
                return Ok(None);
            };
            let before = record.clone();
            let mut after = record;
            if !change(&mut after)? {
                return Ok(Some(before));
            }
            if self.save(key, revision, &after).await?.is_ok() {
                return Ok(Some(before));
            }
        }
        Err(self
            .fail(
                format!("state of {key}"),
                "changed by others five times in a row",
            )
            .into())
    }

    /// Publishes `payload` to `subject` and waits for the stream's ack.
    async fn publish(
        &self,
        subject: String,
        payload: Bytes,
        msg_id: Option<&str>,
    ) -> Result<(), Unavailable> {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(header::NATS_MESSAGE_ID, id);
        }
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| self.fail(format!("publish to {subject}"), e))?;
        ack.await
            .map_err(|e| self.fail(format!("publish to {subject}"), e))?;
        Ok(())
    }

    /// The stored bytes on `subject` of `stream`, if any.
    async fn body(
        &self,
        stream: &stream::Stream,
        subject: String,
    ) -> Result<Option<Bytes>, Unavailable> {
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some(m.payload)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(self.fail(format!("read {subject}"), e)),
        }
    }

    /// Removes what `subject` holds in `stream`.
    async fn purge(&self, stream: &stream::Stream, subject: String) -> Result<(), Unavailable> {
        stream
            .purge()
            .filter(subject.clone())
            .await
            .map(|_| ())
            .map_err(|e| self.fail(format!("purge {subject}"), e))
    }

    /// Puts the stored body of `key` back on the queue, due now (a re-queue or retry now).
    async fn republish(&self, key: Key, body: Bytes) -> Result<(), Unavailable> {
        self.publish(self.subject("queue", key), body, None).await?;
        self.changed.notify_one();
        Ok(())
    }

    fn busy(&self, key: Key) -> bool {
        self.index().is_claimed(key)
    }
}

/// A message handed to this node: the consumer's delivery (the ack handle) and its state.
pub struct Claim {
    key: Key,
    attempts: u32,
    since_ms: u64,
    /// The state as the claim read it, and its revision: the outcome is written over it.
    read: (u64, Record),
    message: js::Message,
    _held: Held,
}

/// Keeps a key in the index's claimed set while a claim lives, however it ends, and keeps the
/// claim this node's: a progress ack every half `ack_wait` tells the server the attempt is still
/// going, so an attempt longer than `ack_wait` (a slow backend, a wait for a per-host slot) is
/// not handed to another node meanwhile. A node that dies sends none, and loses the claim.
struct Held {
    inner: Arc<Inner>,
    key: Key,
    progress: tokio::task::AbortHandle,
}

impl Held {
    fn new(inner: &Arc<Inner>, key: Key, message: &js::Message) -> Held {
        inner.index().claim(key);
        let every = inner.ack_wait / 2;
        let message = message.clone();
        let progress = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!("nats progress ack of {key}: {e}");
                }
            }
        })
        .abort_handle();
        Held {
            inner: inner.clone(),
            key,
            progress,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.progress.abort();
        self.inner.index().unclaim(self.key);
    }
}

impl Claimed for Claim {
    fn key(&self) -> Key {
        self.key
    }
    fn attempts(&self) -> u32 {
        self.attempts
    }
    fn since_ms(&self) -> u64 {
        self.since_ms
    }
}

/// Counts a claim in flight while it lives.
pub struct Sending {
    inner: Arc<Inner>,
    key: Key,
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.inner.index().sending.remove(&self.key);
    }
}

impl JetStream {
    /// Looks at one delivery from the consumer: a claim if its message is due by `now`, else
    /// it goes back (delayed until due) or away (finished, deleted).
    async fn consider(&self, message: js::Message, now: u64) -> Option<Claim> {
        let inner = &self.inner;
        let Some(key) = inner.queued_key(&message.subject) else {
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        };
        if inner.busy(key) {
            // Redelivered to us while our own claim is still going: that one finishes it.
            return None;
        }
        // No record yet: stored and never attempted, queued since its publish and due at once.
        // The bucket is read even for a first delivery, which has no record yet: while it
        // cannot be read, an outcome could not be written either, and an attempt whose outcome
        // is lost is made again (a duplicate), so nothing is attempted then.
        let published = message.info().map_or(now, |i| ms(i.published)).min(now);
        let record = match inner.current(key, Some(published)).await {
            Ok(r) => r,
            Err(_) => {
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return None;
            }
        };
        let Some((revision, record)) = record else {
            // Deleted: what is left of it in the queue goes.
            let _ = message.ack_with(AckKind::Term).await;
            let _ = inner.purge(&inner.queue, inner.subject("queue", key)).await;
            return None;
        };
        match record.state {
            State::Delivered | State::Dead => {
                let _ = message.ack().await;
                None
            }
            State::Queued | State::Retrying => match record.due_ms {
                Some(due) if due > now => {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                    let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
                    None
                }
                _ => Some(Claim {
                    key,
                    attempts: record.attempts,
                    since_ms: record.since_ms,
                    read: (revision, record),
                    _held: Held::new(inner, key, &message),
                    message,
                }),
            },
        }
    }

    async fn delete_now(&self, key: Key) -> Result<(), Unavailable> {
        let inner = &self.inner;
        inner
            .state
            .purge(key.to_string())
            .await
            .map_err(|e| inner.fail(format!("state of {key}"), e))?;
        inner.index().delete(key, u64::MAX);
        inner
            .purge(&inner.queue, inner.subject("queue", key))
            .await?;
        inner.purge(&inner.dead, inner.subject("dead", key)).await
    }
}

impl Storage for JetStream {
    type Claim = Claim;
    type Sending = Sending;

    async fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> Result<Vec<Key>, Unavailable> {
        let inner = &self.inner;
        let keys = Key::copies_of(id, copies);
        let body = Bytes::from(content);
        // One replicated write per copy, the copies side by side: the publish is the enqueue.
        // The state record is written at the first outcome; until then the message reads as
        // queued (`Inner::current`), and every node learns of it from the queue stream.
        let names: Vec<String> = keys.iter().map(Key::to_string).collect();
        futures_util::future::try_join_all(keys.iter().zip(&names).map(|(key, name)| {
            inner.publish(inner.subject("queue", *key), body.clone(), Some(name))
        }))
        .await?;
        let now = now_ms();
        let mut index = inner.index();
        for key in &keys {
            index.queued(*key, now);
        }
        drop(index);
        inner.wake();
        Ok(keys)
    }

    async fn claim_due(&self, now_ms: u64, max: usize) -> Vec<Claim> {
        let inner = &self.inner;
        if max == 0 {
            return Vec::new();
        }
        // A fetch's answer may never come (the consumer's leader lost with the request in
        // flight); the client would wait for it for ever, and this node would deliver no more.
        // So each step (the request, every next message) may take `timeout`: a batch still
        // arriving is taken whole, however long it takes.
        let fetch = inner
            .consumer
            .fetch()
            .max_messages(max.min(MAX_BATCH))
            .messages();
        let mut batch = match tokio::time::timeout(inner.timeout, fetch).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                inner.fail("fetch from consumer deliver", e);
                return Vec::new();
            }
            Err(_) => {
                inner.fail("fetch from consumer deliver", "no answer in time");
                return Vec::new();
            }
        };
        let mut messages = Vec::new();
        loop {
            match tokio::time::timeout(inner.timeout, batch.next()).await {
                Ok(Some(Ok(message))) => messages.push(message),
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    inner.fail("fetch from consumer deliver", "no answer in time");
                    break;
                }
            }
        }
        // Side by side: the delivery loop waits for this, and each look may be a request.
        let considered = messages.into_iter().map(|m| self.consider(m, now_ms));
        let mut claims: Vec<Claim> = futures_util::future::join_all(considered)
            .await
            .into_iter()
            .flatten()
            .collect();
        claims.sort_by_key(|c| inner.index().get(c.key).and_then(|e| e.due_ms));
        if claims.is_empty() {
            inner.index().quiet_until_ms = storage::now_ms() + QUIET.as_millis() as u64;
        }
        claims
    }

    fn next_due_ms(&self) -> Option<u64> {
        self.inner.index().next_due_ms()
    }

    async fn changed(&self) {
        self.inner.changed.notified().await
    }

    async fn read(&self, claim: &Claim) -> Result<Vec<u8>, Unavailable> {
        Ok(claim.message.payload.to_vec())
    }

    async fn release(&self, claim: Claim) {
        // Confirmed, so that the next fetch (here or on any node) finds it due again.
        if let Err(e) = claim.message.double_ack_with(AckKind::Nak(None)).await {
            tracing::warn!("nats release of {}: {e}", claim.key);
        }
        drop(claim);
        self.inner.wake();
    }

    fn sending(&self, claim: &Claim) -> Sending {
        self.inner.index().sending.insert(claim.key);
        Sending {
            inner: self.inner.clone(),
            key: claim.key,
        }
    }

    async fn finish(
        &self,
        claim: Claim,
        attempt: Option<&Attempt>,
        outcome: Outcome,
    ) -> Result<(), Unavailable> {
        let inner = &self.inner;
        let key = claim.key;
        if outcome == Outcome::Dead {
            // The dead letter first: a crash after it leaves a dead copy and a queued one,
            // attempted again (a duplicate), never neither.
            inner
                .publish(
                    inner.subject("dead", key),
                    claim.message.payload.clone(),
                    None,
                )
                .await?;
        }
        let now = now_ms();
        let known = inner
            .change(
                key,
                Some(claim.since_ms),
                Some(claim.read.clone()),
                |r: &mut Record| -> Result<bool, Unavailable> {
                    if let Some(a) = attempt {
                        r.attempts += 1;
                        r.history.push(a.clone());
                    }
                    match outcome {
                        Outcome::Retry { due_ms } => {
                            r.state = State::Retrying;
                            r.due_ms = Some(due_ms);
                        }
                        Outcome::Delivered | Outcome::Dead => {
                            r.state = if outcome == Outcome::Dead {
                                State::Dead
                            } else {
                                State::Delivered
                            };
                            r.due_ms = None;
                            r.finished_ms = Some(now);
                        }
                    }
                    Ok(true)
                },
            )
            .await?;
        // Not confirmed: the state is recorded, so a lost ack or NAK only means the server
        // redelivers after `ack_wait`, and the state then says what to do.
        let acked = match outcome {
            _ if known.is_none() => claim.message.ack().await, // deleted meanwhile
            Outcome::Retry { due_ms } => {
                let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
                claim.message.ack_with(AckKind::Nak(Some(wait))).await
            }
            Outcome::Delivered => claim.message.ack().await,
            Outcome::Dead => {
                let _ = claim.message.ack().await;
                inner
                    .purge(&inner.queue, inner.subject("queue", key))
                    .await?;
                Ok(())
            }
        };
        // The state is recorded; a lost ack only means the server redelivers, and the state
        // then says what to do.
        if let Err(e) = acked {
            tracing::warn!("nats ack of {key}: {e}");
        }
        Ok(())
    }

    async fn status(&self, key: Key) -> Result<Option<Status>, Unavailable> {
        Ok(self.inner.current(key, None).await?.map(|(_, r)| Status {
            key,
            state: r.state,
            attempts: r.attempts,
            next_attempt_ms: r.due_ms,
        }))
    }

    async fn attempts(&self, key: Key) -> Result<Vec<Attempt>, Unavailable> {
        Ok(self
            .inner
            .current(key, None)
            .await?
            .map(|(_, r)| r.history)
            .unwrap_or_default())
    }

    async fn message(&self, key: Key, limit: usize) -> Result<Option<Vec<u8>>, Unavailable> {
        let inner = &self.inner;
        let Some((_, record)) = inner.current(key, None).await? else {
            return Ok(None);
        };
        let (stream, name) = match record.state {
            State::Dead => (&inner.dead, "dead"),
            _ => (&inner.queue, "queue"),
        };
        Ok(inner
            .body(stream, inner.subject(name, key))
            .await?
            .map(|b| b[..b.len().min(limit)].to_vec()))
    }

    async fn copies(&self, key: Key) -> Result<Vec<Key>, Unavailable> {
        if self.inner.current(key, None).await?.is_some() {
            return Ok(vec![key]);
        }
        if key.copy() != 0 {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for copy in self.inner.index().copies(key) {
            found.push(copy);
        }
        Ok(found)
    }

    async fn list(&self) -> Result<Vec<Listed>, Unavailable> {
        Ok(self.inner.index().list())
    }

    fn counts(&self) -> Counts {
        self.inner.index().counts()
    }

    fn oldest_age(&self) -> Option<Duration> {
        self.inner.index().oldest_age()
    }

    async fn requeue(&self, key: Key) -> Result<(), RequeueError> {
        let inner = &self.inner;
        let Some((_, record)) = inner.current(key, None).await? else {
            return Err(RequeueError::NotDead(key));
        };
        if record.state != State::Dead {
            return Err(RequeueError::NotDead(key));
        }
        let Some(body) = inner.body(&inner.dead, inner.subject("dead", key)).await? else {
            return Err(inner
                .fail(format!("dead letter {key}"), "its body is missing")
                .into());
        };
        // The state first: a crash before the publish leaves a retrying message without a
        // queued copy, which retry now (or a second re-queue of the dead letter) repairs.
        let now = now_ms();
        let changed = inner
            .change(key, None, None, |r: &mut Record| {
                if r.state != State::Dead {
                    return Err(RequeueError::NotDead(key));
                }
                r.state = State::Retrying;
                r.attempts = 0;
                r.since_ms = now;
                r.due_ms = Some(now);
                r.finished_ms = None;
                Ok(true)
            })
            .await?;
        if changed.is_none() {
            return Err(RequeueError::NotDead(key));
        }
        inner.republish(key, body).await?;
        inner.purge(&inner.dead, inner.subject("dead", key)).await?;
        Ok(())
    }

    async fn retry_now(&self, key: Key) -> Result<(), ChangeError> {
        let inner = &self.inner;
        if inner.busy(key) {
            return Err(ChangeError::InFlight(key));
        }
        let Some((_, record)) = inner.current(key, None).await? else {
            return Err(ChangeError::NotFound(key));
        };
        match record.state {
            State::Delivered => Err(ChangeError::Delivered(key)),
            State::Queued => Ok(()),
            State::Dead => self.requeue(key).await.map_err(|e| match e {
                RequeueError::NotDead(k) => ChangeError::InFlight(k),
                RequeueError::Unavailable(u) => ChangeError::Unavailable(u),
            }),
            State::Retrying => {
                let Some(body) = inner
                    .body(&inner.queue, inner.subject("queue", key))
                    .await?
                else {
                    return Err(inner
                        .fail(format!("message {key}"), "its body is missing")
                        .into());
                };
                let now = now_ms();
                inner
                    .change(
                        key,
                        None,
                        None,
                        |r: &mut Record| -> Result<bool, ChangeError> {
                            r.due_ms = Some(now);
                            Ok(r.state == State::Retrying)
                        },
                    )
                    .await?;
                // Replaces the delayed copy the consumer holds: due now, to any node.
                inner.republish(key, body).await?;
                Ok(())
            }
        }
    }

    async fn delete(&self, key: Key) -> Result<State, ChangeError> {
        if self.inner.busy(key) {
            return Err(ChangeError::InFlight(key));
        }
        let Some((_, record)) = self.inner.current(key, None).await? else {
            return Err(ChangeError::NotFound(key));
        };
        self.delete_now(key).await?;
        Ok(record.state)
    }

    async fn purge_dead(&self) -> Result<usize, Unavailable> {
        let dead = self.inner.index().in_state(State::Dead);
        for (key, _) in &dead {
            self.delete_now(*key).await?;
        }
        Ok(dead.len())
    }

    async fn prune(&self, retention: Duration) -> Result<usize, Unavailable> {
        let before = now_ms().saturating_sub(retention.as_millis() as u64);
        let old: Vec<Key> = self
            .inner
            .index()
            .in_state(State::Delivered)
            .into_iter()
            .filter(|(_, e)| e.finished_ms.is_some_and(|f| f < before))
            .map(|(k, _)| k)
            .collect();
        for key in &old {
            self.delete_now(*key).await?;
        }
        Ok(old.len())
    }

    fn unhealthy_reason(&self) -> Option<String> {
        lock(&self.inner.unhealthy).clone()
    }
}

#[cfg(test)]
mod tests;
