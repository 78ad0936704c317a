//! whomp's event layer (issue 13): producers post events by type, whomp knows who listens.
//!
//! Webhook targets (where to), filters (which event types) and subscriptions (a target bound to
//! a filter) are few and change rarely; they are kept as records through the storage seam
//! ([`storage::Records`]: in the maildir backend, one file each under `records/`, written to a
//! temporary file, flushed and renamed) and all of them in memory ([`index::Index`]), so that
//! matching an event never reads the disk. An event fans out to one ordinary whomp message per
//! matching active subscription, enqueued through the same spool as raw submissions, so
//! pre-flight, retry, status and dead letters are the ones whomp already has; the courier signs
//! each with its target's current secrets ([`Events::keys_of`]).
//!
//! - [`model`]: the documents and the checks of what callers send;
//! - [`index`]: the documents in memory, and matching;
//! - [`store`]: changes, durable before they are applied in memory;
//! - [`api`]: the REST API under `/v1/webhooks/`;
//! - [`fanout`]: `POST /v1/events`, its de-duplication by event id;
//! - [`control`]: pausing, resuming and recovering a target's deliveries;
//! - [`listing`]: `GET /v1/messages`, deliveries and raw messages by target, state, host, time;
//! - [`notify`]: failures that bubble up (`delivery.dead`, `target.failing`, `.disabled`,
//!   `.recovered`).

pub mod api;
pub mod control;
pub mod fanout;
pub mod index;
pub mod listing;
pub mod model;
pub mod notify;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use daemon::queue::{Records, Storage};
use serde_json::Value;

use index::Index;

/// The record namespaces of the event layer.
pub mod ns {
    pub const TARGETS: &str = "targets";
    pub const FILTERS: &str = "filters";
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    /// The answer given to each event posted with an id, for de-duplication.
    pub const EVENTS: &str = "events";
    /// Event ids being fanned out right now, claimed by one node (cluster backend only).
    pub const CLAIMS: &str = "event-claims";
}

/// The event layer of one whomp: its records, their index, and the events seen.
#[derive(Debug)]
pub struct Events {
    records: Records,
    storage: Storage,
    /// Whether other nodes share the records (`queue.backend: jetstream`): the index is then
    /// read again before an event is matched, and event ids are looked up in the records.
    shared: bool,
    /// The largest event payload (`limits.max_body_bytes`).
    max_body_bytes: u64,
    index: RwLock<Index>,
    /// Held while a change is written and applied, so the index and the records agree and a
    /// subscription never binds a target being deleted.
    writing: tokio::sync::Mutex<()>,
    /// Event ids answered within `retention`: when (ms since the epoch) and the answer.
    seen: Mutex<HashMap<String, (u64, Value)>>,
    /// Event ids being fanned out by this node right now; a second post of one waits for the
    /// first one's answer ([`fanout`]).
    pending: Mutex<HashSet<String>>,
    retention: Duration,
    /// Deliveries held because their target is paused, by target id: resuming makes them due.
    held: Mutex<HashMap<String, HashSet<spool::Key>>>,
    /// Where failures are told, and after how long (`events` of the config).
    settings: config::whomp::Events,
    /// Messages being attempted, what their outcome needs ([`notify`]).
    watched: Mutex<HashMap<spool::Key, notify::Watched>>,
}

/// Why the event layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the {namespace} records: {error}")]
    Read {
        namespace: &'static str,
        error: storage::RecordError,
    },
    #[error("record {namespace}/{key} is not a valid document: {error}")]
    Invalid {
        namespace: &'static str,
        key: String,
        error: serde_json::Error,
    },
}

impl Events {
    /// Reads every record of the event layer into memory; event answers older than
    /// `retention` are forgotten (and their records removed). `settings` say where failures
    /// are told (they take effect at the next start).
    pub async fn load(
        storage: &Storage,
        records: Records,
        max_body_bytes: u64,
        retention: Duration,
        settings: config::whomp::Events,
    ) -> Result<Events, LoadError> {
        let index = read_index(&records).await?;
        let seen = fanout::load_seen(&records, retention).await?;
        Ok(Events {
            records,
            storage: storage.clone(),
            shared: storage.shared(),
            max_body_bytes,
            index: RwLock::new(index),
            writing: tokio::sync::Mutex::new(()),
            seen: Mutex::new(seen),
            pending: Mutex::new(HashSet::new()),
            retention,
            held: Mutex::new(HashMap::new()),
            settings,
            watched: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the index again from the shared records, so that what other nodes changed is
    /// seen (a no-op on a node of its own, whose index is always current).
    pub(crate) async fn refresh(&self) -> Result<(), LoadError> {
        if !self.shared {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let index = read_index(&self.records).await?;
        *self.write() = index;
        Ok(())
    }

    /// The signing keys of target `id`, from memory; `None` if there is no such target (it was
    /// deleted after the delivery was queued).
    pub fn keys_of(&self, id: &str) -> Option<Vec<Vec<u8>>> {
        self.read().targets.get(id).map(model::Target::keys)
    }

    /// [`Events::keys_of`], after reading the index again if target `id` is not in it and the
    /// records are shared (another node made it); an error if they cannot be read now.
    pub async fn keys_of_current(&self, id: &str) -> Result<Option<Vec<Vec<u8>>>, LoadError> {
        if let Some(keys) = self.keys_of(id) {
            return Ok(Some(keys));
        }
        self.refresh().await?;
        Ok(self.keys_of(id))
    }

    /// Whether other nodes share the records (the cluster backend).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// How many targets, filters and subscriptions there are, for the start-up line.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let index = self.read();
        (
            index.targets.len(),
            index.filters.len(),
            index.subscriptions.len(),
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every target, filter and subscription in `records`.
async fn read_index(records: &Records) -> Result<Index, LoadError> {
    Ok(Index {
        targets: store::read_all(records, ns::TARGETS).await?,
        filters: store::read_all(records, ns::FILTERS).await?,
        subscriptions: store::read_all(records, ns::SUBSCRIPTIONS).await?,
    })
}
