//! `Idempotency-Key`: a submitter that retries a submission (its connection broke before it read
//! our `202`) gets the first message's id instead of a second message.
//!
//! A key belongs to one caller (the bearer token it came with, as a digest: [`caller`]) and to
//! one message (its [`Fingerprint`]): another caller's identical key is simply another key, and
//! the same caller reusing a key for a different message is refused (`422`, as the IETF
//! idempotency-key draft and Stripe do) rather than answered with an id of something else.
//!
//! The map lives in memory, bounded to the newest [`CAPACITY`] keys, and is rebuilt at start
//! from the `Whomp-Idempotency-*` fields of the newest stored files in every folder (`new/`,
//! `cur/`, `done/`, `dead/`), each head read whole, so a key keeps working across restarts for as
//! long as its message is in the spool. Two submissions with the same key at the same time are
//! serialised: the second waits for the first to be stored (or refused) and then answers with
//! its id (or tries to store itself).
//!
//! With the cluster backend (`queue.backend: jetstream`) the nodes share their keys: a new key
//! is also claimed in the shared records ([`Keys::shared`]) with an atomic create of
//! `idempotency/<digest of caller and key>` holding the id the message will be stored as and its
//! fingerprint, before the message is stored; a node that loses the create (another node took
//! the key, now or before) answers with the winner's id. A claim whose message could not be
//! stored is removed, so that a retry can store it. A claim expires after `spool.retention`
//! (the records' own TTL), as a node of its own forgets a key once its delivered message is
//! pruned; the key may then be used again for a new message.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use daemon::queue::Records;
use sha2::{Digest, Sha256};
use storage::Records as _;
use tokio::sync::watch;
use ulid::Ulid;

use crate::stored;

/// How many keys are remembered; the oldest are forgotten first.
pub const CAPACITY: usize = 100_000;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// A digest of what a submission asks to send: method, target, signing key, the header fields
/// that go out (see [`crate::courier::sent_fields`]; names in lower case, in order) and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(message: &httpmsg::Message, signing_key: Option<&str>) -> Fingerprint {
        let mut hash = Sha256::new();
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        part(message.method.as_bytes());
        part(message.target.as_bytes());
        part(signing_key.unwrap_or_default().as_bytes());
        for (name, value) in crate::courier::sent_fields(&message.headers) {
            part(name.to_ascii_lowercase().as_bytes());
            part(value);
        }
        part(&message.body);
        Fingerprint(hash.finalize().into())
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        let mut out = [0u8; 32];
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

/// Whose keys a submission's are: the first 16 bytes of a SHA-256 of its bearer token, in hex
/// (a token is never stored); empty when whomp takes no tokens.
pub fn caller(token: Option<&[u8]>) -> String {
    match token {
        None => String::new(),
        Some(token) => {
            let digest = Sha256::new()
                .chain_update(b"whomp idempotency caller\0")
                .chain_update(token)
                .finalize();
            Fingerprint(digest.into()).to_hex()[..32].to_owned()
        }
    }
}

/// The record namespace of the keys shared by the nodes of a cluster.
pub const NAMESPACE: &str = "idempotency";

/// The key map. Cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Keys {
    inner: Mutex<Inner>,
    capacity: usize,
    /// The records every node shares, where new keys are claimed (cluster backend only), and
    /// how long a claim is kept there (`spool.retention`, as a delivered message is).
    shared: Option<(Records, Duration)>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By `caller key` (a caller is hex, a key has no spaces).
    map: HashMap<String, Slot>,
    /// Keys with a stored message, oldest first, for eviction.
    order: VecDeque<String>,
}

#[derive(Debug)]
enum Slot {
    /// `None`: stored before fingerprints were kept; any message matches.
    Stored(Ulid, Option<Fingerprint>),
    /// A submission with this key is being stored; its outcome is announced here.
    Pending(watch::Receiver<Option<(Ulid, Fingerprint)>>),
}

/// What [`Keys::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key belongs to this message already.
    Seen(Ulid),
    /// The key belongs to a different message of the same caller: `422`.
    Reused,
    /// The key is new: store the message as [`Reservation::id`], then [`Reservation::stored`].
    New(Reservation),
    /// The shared records could not be reached: `503`.
    Unavailable(String),
}

/// The right to store the one message of a key; dropping it unstored frees the key.
#[derive(Debug)]
pub struct Reservation {
    keys: Arc<Keys>,
    key: String,
    /// The id to store the message as (the one claimed in the shared records, if any).
    id: Ulid,
    /// Whether the key was claimed in the shared records (removed again if not stored).
    claimed: bool,
    fingerprint: Fingerprint,
    announce: Option<watch::Sender<Option<(Ulid, Fingerprint)>>>,
}

/// Why a key is refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    #[error("Idempotency-Key is empty")]
    Empty,
    #[error("Idempotency-Key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("Idempotency-Key must be visible ASCII (no spaces or control characters)")]
    Characters,
}

/// Checks a submitted key.
pub fn check(value: &[u8]) -> Result<String, BadKey> {
    if value.is_empty() {
        return Err(BadKey::Empty);
    }
    if value.len() > MAX_KEY_BYTES {
        return Err(BadKey::TooLong);
    }
    if !value.iter().all(u8::is_ascii_graphic) {
        return Err(BadKey::Characters);
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

impl Keys {
    pub fn new(capacity: usize) -> Keys {
        Keys {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            shared: None,
        }
    }

    /// An empty map whose new keys are claimed in `records`, which every node shares, for
    /// `retention`.
    pub fn shared(capacity: usize, records: Records, retention: Duration) -> Keys {
        Keys {
            shared: Some((records, retention)),
            ..Keys::new(capacity)
        }
    }

    /// Rebuilds the map from the newest stored files of the spool at `dir` (blocking I/O).
    pub fn load(dir: &Path, capacity: usize) -> Keys {
        let keys = Keys::new(capacity);
        let mut files: Vec<(Ulid, std::path::PathBuf)> = Vec::new();
        for folder in spool::Folder::STORED {
            let Ok(entries) = std::fs::read_dir(folder.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let key = name.split(',').next().unwrap_or_default();
                if let Ok(key) = key.parse::<spool::Key>() {
                    files.push((key.id(), entry.path()));
                }
            }
        }
        files.sort();
        let skip = files.len().saturating_sub(keys.capacity);
        for (id, path) in files.into_iter().skip(skip) {
            let Ok(head) = stored::read_head(&path) else {
                continue;
            };
            if let Some(i) = stored::idempotency_of(&head) {
                keys.remember(scoped(&i.caller, &i.key), id, i.fingerprint);
            }
        }
        keys
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks `caller`'s `key` up for a message with `fingerprint`; waits while another
    /// submission with it is being stored.
    pub async fn begin(
        self: &Arc<Self>,
        caller: &str,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Begin {
        let key = scoped(caller, key);
        let judge = |id: Ulid, first: Option<Fingerprint>| {
            if first.is_none_or(|f| f == fingerprint) {
                Begin::Seen(id)
            } else {
                Begin::Reused
            }
        };
        loop {
            // Another submission's outcome to wait for, or the right to store this one.
            let looked = {
                let mut inner = self.lock();
                if matches!(inner.map.get(&key), Some(Slot::Stored(id, _)) if self.expired(*id)) {
                    inner.map.remove(&key);
                }
                match inner.map.get(&key) {
                    Some(Slot::Stored(id, first)) => return judge(*id, *first),
                    Some(Slot::Pending(rx)) => Ok(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inner.map.insert(key.clone(), Slot::Pending(rx));
                        Err(tx)
                    }
                }
            };
            let mut pending = match looked {
                Ok(pending) => pending,
                Err(announce) => {
                    let reservation = Reservation {
                        keys: self.clone(),
                        key,
                        id: spool::Spool::new_id(),
                        claimed: false,
                        fingerprint,
                        announce: Some(announce),
                    };
                    return self.claim(reservation, judge).await;
                }
            };
            // The other submission either stores (its id comes) or fails (the sender is
            // dropped and the key is free again: look again).
            let outcome = pending
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|stored| *stored);
            if let Some((id, first)) = outcome {
                return judge(id, Some(first));
            }
        }
    }

    /// Claims a new key in the shared records, if any: the reservation if this node won it,
    /// else the winner's answer (the reservation is dropped, freeing the local slot).
    async fn claim(
        &self,
        mut reservation: Reservation,
        judge: impl Fn(Ulid, Option<Fingerprint>) -> Begin,
    ) -> Begin {
        let Some((records, retention)) = &self.shared else {
            return Begin::New(reservation);
        };
        let name = record_name(&reservation.key);
        let value = format!("{} {}", reservation.id, reservation.fingerprint.to_hex());
        let unavailable = |e: storage::RecordError| {
            Begin::Unavailable(format!("cannot claim an idempotency key: {e}"))
        };
        let created = records
            .create_expiring(NAMESPACE, &name, value.into_bytes(), *retention)
            .await;
        match created {
            Ok(true) => {
                reservation.claimed = true;
                return Begin::New(reservation);
            }
            Ok(false) => {}
            Err(e) => return unavailable(e),
        }
        let first = match records.get(NAMESPACE, &name).await {
            Ok(Some(value)) => parse_claim(&value),
            // Freed (its message could not be stored) between the create and the get.
            Ok(None) => None,
            Err(e) => return unavailable(e),
        };
        match first {
            Some((id, fingerprint)) => {
                self.remember(reservation.key.clone(), id, Some(fingerprint));
                judge(id, Some(fingerprint))
            }
            None => Begin::Unavailable(format!("idempotency key {name} is being freed; retry")),
        }
    }

    /// Whether a shared key first stored as `id` is past its retention (its claim expires in
    /// the records; the copy in memory goes with it). A node of its own keeps its keys.
    fn expired(&self, id: Ulid) -> bool {
        self.shared.as_ref().is_some_and(|(_, retention)| {
            spool::now_ms().saturating_sub(id.timestamp_ms()) > retention.as_millis() as u64
        })
    }

    fn remember(&self, key: String, id: Ulid, fingerprint: Option<Fingerprint>) {
        let mut inner = self.lock();
        // A key is in `order` exactly when it is stored; a pending one is not yet.
        let previous = inner.map.insert(key.clone(), Slot::Stored(id, fingerprint));
        if !matches!(previous, Some(Slot::Stored(..))) {
            inner.order.push_back(key);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                if matches!(inner.map.get(&old), Some(Slot::Stored(..))) {
                    inner.map.remove(&old);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn scoped(caller: &str, key: &str) -> String {
    format!("{caller} {key}")
}

/// The shared record of a scoped key: a digest, as a key may hold any visible ASCII.
fn record_name(scoped: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"whomp idempotency key\0")
        .chain_update(scoped.as_bytes())
        .finalize();
    Fingerprint(digest.into()).to_hex()
}

/// A shared claim's value: `<id> <fingerprint in hex>`.
fn parse_claim(value: &[u8]) -> Option<(Ulid, Fingerprint)> {
    let (id, fingerprint) = std::str::from_utf8(value).ok()?.split_once(' ')?;
    Some((id.parse().ok()?, Fingerprint::from_hex(fingerprint)?))
}

impl Reservation {
    /// The id to store the message as.
    pub fn id(&self) -> Ulid {
        self.id
    }

    /// The message of this key was stored as `id`.
    pub fn stored(mut self, id: Ulid) {
        self.keys
            .remember(self.key.clone(), id, Some(self.fingerprint));
        if let Some(tx) = self.announce.take() {
            let _ = tx.send(Some((id, self.fingerprint)));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.announce.is_some() {
            // Not stored: free the key so that a retry can store it.
            let mut inner = self.keys.lock();
            if matches!(inner.map.get(&self.key), Some(Slot::Pending(_))) {
                inner.map.remove(&self.key);
            }
            if let (true, Some((records, _))) = (self.claimed, self.keys.shared.clone()) {
                let name = record_name(&self.key);
                tokio::spawn(async move {
                    if let Err(e) = records.delete(NAMESPACE, &name).await {
                        tracing::warn!(key = name, error = %e, "cannot free an idempotency key");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Fingerprint = Fingerprint([1; 32]);
    const B: Fingerprint = Fingerprint([2; 32]);

    #[tokio::test]
    async fn a_key_gets_one_message() {
        let keys = Arc::new(Keys::new(2));
        let Begin::New(first) = keys.begin("", "a", A).await else {
            panic!("a is new");
        };
        // A second submission with the same key waits for the first one.
        let waiting = tokio::spawn({
            let keys = keys.clone();
            async move { keys.begin("", "a", A).await }
        });
        let id = Ulid::new();
        first.stored(id);
        match waiting.await.unwrap() {
            Begin::Seen(seen) => assert_eq!(seen, id),
            other => panic!("a was stored: {other:?}"),
        }
        assert!(matches!(keys.begin("", "a", A).await, Begin::Seen(s) if s == id));
    }

    #[tokio::test]
    async fn a_key_reused_for_another_message_is_refused_and_keys_belong_to_their_caller() {
        let keys = Arc::new(Keys::new(10));
        let Begin::New(first) = keys.begin("c1", "a", A).await else {
            panic!("a is new");
        };
        let waiting = tokio::spawn({
            let keys = keys.clone();
            async move { keys.begin("c1", "a", B).await }
        });
        first.stored(Ulid::new());
        assert!(matches!(waiting.await.unwrap(), Begin::Reused));
        assert!(matches!(keys.begin("c1", "a", B).await, Begin::Reused));
        assert!(
            matches!(keys.begin("c2", "a", B).await, Begin::New(_)),
            "another caller's key is another key"
        );
        assert_ne!(caller(Some(b"t0ken-a")), caller(Some(b"t0ken-b")));
        assert_eq!(caller(Some(b"t0ken-a")).len(), 32);
        assert_eq!(caller(None), "");
    }

    #[tokio::test]
    async fn a_failed_store_frees_the_key_and_old_keys_are_forgotten() {
        let keys = Arc::new(Keys::new(2));
        let Begin::New(first) = keys.begin("", "a", A).await else {
            panic!("a is new");
        };
        drop(first);
        let Begin::New(again) = keys.begin("", "a", A).await else {
            panic!("a was freed");
        };
        again.stored(Ulid::new());
        for k in ["b", "c"] {
            let Begin::New(r) = keys.begin("", k, A).await else {
                panic!("{k} is new");
            };
            r.stored(Ulid::new());
        }
        assert_eq!(keys.len(), 2);
        assert!(matches!(keys.begin("", "a", A).await, Begin::New(_)));
        assert!(matches!(keys.begin("", "c", A).await, Begin::Seen(_)));
    }

    #[test]
    fn checks_keys() {
        assert_eq!(check(b"order-17"), Ok("order-17".into()));
        assert_eq!(check(b""), Err(BadKey::Empty));
        assert_eq!(check(&[b'a'; 256]), Err(BadKey::TooLong));
        assert_eq!(check(b"a b"), Err(BadKey::Characters));
        assert_eq!(
            check(b"a\x01").unwrap_err().to_string(),
            "Idempotency-Key must be visible ASCII (no spaces or control characters)"
        );
    }

    #[test]
    fn fingerprints_cover_what_is_sent() {
        let message = |target: &str, fields: &[(&str, &str)], body: &str| httpmsg::Message {
            method: "POST".into(),
            target: target.into(),
            headers: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        let base = Fingerprint::of(&message("https://a.example/", &[("X-Tag", "1")], "x"), None);
        for (other, what) in [
            (
                message("https://a.example/b", &[("X-Tag", "1")], "x"),
                "url",
            ),
            (
                message("https://a.example/", &[("X-Tag", "2")], "x"),
                "header",
            ),
            (
                message("https://a.example/", &[("X-Tag", "1")], "y"),
                "body",
            ),
        ] {
            assert_ne!(Fingerprint::of(&other, None), base, "{what}");
        }
        assert_ne!(
            Fingerprint::of(
                &message("https://a.example/", &[("X-Tag", "1")], "x"),
                Some("k")
            ),
            base,
            "signing key"
        );
        // Framing and hop-by-hop fields are not what is sent; names are case-insensitive.
        let same = message(
            "https://a.example/",
            &[
                ("x-tag", "1"),
                ("Content-Length", "1"),
                ("Connection", "close"),
            ],
            "x",
        );
        assert_eq!(Fingerprint::of(&same, None), base);
        assert_eq!(Fingerprint::from_hex(&base.to_hex()), Some(base));
        assert_eq!(Fingerprint::from_hex("zz"), None);
    }

    #[test]
    fn loads_keys_from_the_spool_whatever_the_size_of_the_head() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["new", "cur", "done", "dead"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
        }
        let write = |folder: &str, suffix: &str, key: Option<&str>, big: usize| {
            let id = Ulid::new();
            let file = stored::encode(
                &httpmsg::Message {
                    method: "POST".into(),
                    target: "https://a.example/".into(),
                    headers: vec![("X-Big".into(), vec![b'b'; big])],
                    ..Default::default()
                },
                &stored::Meta {
                    id: id.to_string(),
                    received_at: String::new(),
                    signing_key: None,
                    idempotency: key.map(|k| stored::Idempotency {
                        key: k.to_owned(),
                        caller: "c".into(),
                        fingerprint: Some(A),
                    }),
                    ..Default::default()
                },
            );
            std::fs::write(dir.path().join(folder).join(format!("{id}{suffix}")), file).unwrap();
            id
        };
        let a = write("new", "", Some("ka"), 10);
        let b = write("cur", ",1,0,0", Some("kb"), 64 * 1024 - 40);
        write("done", "", None, 10);
        let keys = Keys::load(dir.path(), 10);
        assert_eq!(keys.len(), 2);
        let keys = Arc::new(keys);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(rt.block_on(keys.begin("c", "ka", A)), Begin::Seen(id) if id == a));
        assert!(matches!(rt.block_on(keys.begin("c", "kb", A)), Begin::Seen(id) if id == b));
        assert!(matches!(
            rt.block_on(keys.begin("c", "kb", B)),
            Begin::Reused
        ));
    }
}
