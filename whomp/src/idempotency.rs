//! `Idempotency-Key`: a submitter that retries a submission (its connection broke before it read
//! our `202`) gets the first message's id instead of a second message.
//!
//! The map from key to id lives in memory, bounded to the newest [`CAPACITY`] keys, and is
//! rebuilt at start from the `Whomp-Idempotency-Key` field of the newest stored files in every
//! folder (`new/`, `cur/`, `done/`, `dead/`), so a key keeps working across restarts for as long
//! as its message is in the spool. Two submissions with the same key at the same time are
//! serialised: the second waits for the first to be stored (or refused) and then answers with
//! its id (or tries to store itself).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use ulid::Ulid;

use crate::stored::{self, meta};

/// How many keys are remembered; the oldest are forgotten first.
pub const CAPACITY: usize = 100_000;

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The key map. Cheap to share behind an [`Arc`].
#[derive(Debug)]
pub struct Keys {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Slot>,
    /// Keys with a stored message, oldest first, for eviction.
    order: VecDeque<String>,
}

#[derive(Debug)]
enum Slot {
    Stored(Ulid),
    /// A submission with this key is being stored; its outcome is announced here.
    Pending(watch::Receiver<Option<Ulid>>),
}

/// What [`Keys::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key belongs to this message already.
    Seen(Ulid),
    /// The key is new: store the message, then [`Reservation::stored`].
    New(Reservation),
}

/// The right to store the one message of a key; dropping it unstored frees the key.
#[derive(Debug)]
pub struct Reservation {
    keys: Arc<Keys>,
    key: String,
    announce: Option<watch::Sender<Option<Ulid>>>,
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
        }
    }

    /// Rebuilds the map from the newest stored files of the spool at `dir` (blocking I/O).
    pub fn load(dir: &Path, capacity: usize) -> Keys {
        let keys = Keys::new(capacity);
        let mut files: Vec<(Ulid, std::path::PathBuf)> = Vec::new();
        for folder in ["new", "cur", "done", "dead"] {
            let Ok(entries) = std::fs::read_dir(dir.join(folder)) else {
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
            let Some(head) = read_head(&path) else {
                continue;
            };
            if let Some(key) = stored::meta_field(&head, meta::IDEMPOTENCY_KEY) {
                keys.remember(key, id);
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

    /// Looks `key` up; waits while another submission with it is being stored.
    pub async fn begin(self: &Arc<Self>, key: &str) -> Begin {
        loop {
            let mut pending = {
                let mut inner = self.lock();
                match inner.map.get(key) {
                    Some(Slot::Stored(id)) => return Begin::Seen(*id),
                    Some(Slot::Pending(rx)) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inner.map.insert(key.to_owned(), Slot::Pending(rx));
                        return Begin::New(Reservation {
                            keys: self.clone(),
                            key: key.to_owned(),
                            announce: Some(tx),
                        });
                    }
                }
            };
            // The other submission either stores (its id comes) or fails (the sender is
            // dropped and the key is free again: look again).
            let outcome = pending
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|id| *id);
            if let Some(id) = outcome {
                return Begin::Seen(id);
            }
        }
    }

    fn remember(&self, key: String, id: Ulid) {
        let mut inner = self.lock();
        // A key is in `order` exactly when it is stored; a pending one is not yet.
        let previous = inner.map.insert(key.clone(), Slot::Stored(id));
        if !matches!(previous, Some(Slot::Stored(_))) {
            inner.order.push_back(key);
        }
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                if matches!(inner.map.get(&old), Some(Slot::Stored(_))) {
                    inner.map.remove(&old);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reservation {
    /// The message of this key was stored as `id`.
    pub fn stored(mut self, id: Ulid) {
        self.keys.remember(self.key.clone(), id);
        if let Some(tx) = self.announce.take() {
            let _ = tx.send(Some(id));
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
        }
    }
}

/// The first 64 KiB of a file: enough for any head whomp writes in practice.
fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(8 * 1024);
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_gets_one_message() {
        let keys = Arc::new(Keys::new(2));
        let Begin::New(first) = keys.begin("a").await else {
            panic!("a is new");
        };
        // A second submission with the same key waits for the first one.
        let waiting = tokio::spawn({
            let keys = keys.clone();
            async move { keys.begin("a").await }
        });
        let id = Ulid::new();
        first.stored(id);
        match waiting.await.unwrap() {
            Begin::Seen(seen) => assert_eq!(seen, id),
            Begin::New(_) => panic!("a was stored"),
        }
        assert!(matches!(keys.begin("a").await, Begin::Seen(s) if s == id));
    }

    #[tokio::test]
    async fn a_failed_store_frees_the_key_and_old_keys_are_forgotten() {
        let keys = Arc::new(Keys::new(2));
        let Begin::New(first) = keys.begin("a").await else {
            panic!("a is new");
        };
        drop(first);
        let Begin::New(again) = keys.begin("a").await else {
            panic!("a was freed");
        };
        again.stored(Ulid::new());
        for k in ["b", "c"] {
            let Begin::New(r) = keys.begin(k).await else {
                panic!("{k} is new");
            };
            r.stored(Ulid::new());
        }
        assert_eq!(keys.len(), 2);
        assert!(matches!(keys.begin("a").await, Begin::New(_)));
        assert!(matches!(keys.begin("c").await, Begin::Seen(_)));
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
    fn loads_keys_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["new", "cur", "done", "dead"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
        }
        let write = |folder: &str, suffix: &str, key: Option<&str>| {
            let id = Ulid::new();
            let file = stored::encode(
                &httpmsg::Message {
                    method: "POST".into(),
                    target: "https://a.example/".into(),
                    ..Default::default()
                },
                &stored::Meta {
                    id: id.to_string(),
                    received_at: String::new(),
                    signing_key: None,
                    idempotency_key: key.map(str::to_owned),
                },
            );
            std::fs::write(dir.path().join(folder).join(format!("{id}{suffix}")), file).unwrap();
            id
        };
        let a = write("new", "", Some("ka"));
        let b = write("cur", ",1,0,0", Some("kb"));
        write("done", "", None);
        let keys = Keys::load(dir.path(), 10);
        assert_eq!(keys.len(), 2);
        let keys = Arc::new(keys);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(rt.block_on(keys.begin("ka")), Begin::Seen(id) if id == a));
        assert!(matches!(rt.block_on(keys.begin("kb")), Begin::Seen(id) if id == b));
    }
}
