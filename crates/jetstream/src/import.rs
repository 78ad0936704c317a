//! Moving a maildir node's messages into the cluster (`spool import`, docs/cluster.md): one
//! message at a time, keeping its key (so ids clients hold stay valid), its state and its
//! attempts; its retry budget (`max_age`) starts again at the import. The caller deletes the maildir copy only after [`JetStream::import`] returned, so a
//! crash or an unreachable cluster mid-way leaves each message in one place or both, never
//! neither; a run again skips what the cluster already has.

use bytes::Bytes;
use storage::{now_ms, Attempt, Key, State, Unavailable};

use crate::record::Record;
use crate::{JetStream, Loaded};

/// What [`JetStream::import`] did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Stored in the cluster with its state: queued (due at once) or dead.
    Stored,
    /// The cluster knew this key already (an earlier run got this far): its record kept, its
    /// message published again (the same key: it replaces what is there).
    Known,
}

/// A message as the maildir kept it, to store in the cluster.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub key: Key,
    /// Queued, retrying or dead; a delivered message is history and is not imported.
    pub state: State,
    /// Attempts since arrival or the last re-queue.
    pub attempts: u32,
    /// Every attempt recorded for it, oldest first.
    pub history: Vec<Attempt>,
}

impl JetStream {
    /// Stores `message` with `content` under its own key: its state record (unless the cluster
    /// has one, or a deletion marker, already), then the stream message (the queue, or the dead
    /// letters). The record goes first so that a claim between the two finds the imported
    /// attempts, not a fresh message; the publish is made whatever the record said, so that a
    /// run cut off between the two is finished by the next (a second publish of a key replaces
    /// the first, and a message whose record says delivered or deleted is dropped when claimed).
    /// A queued or retrying message is due at once on whichever node claims it.
    pub async fn import(
        &self,
        message: Incoming,
        content: Vec<u8>,
    ) -> Result<Imported, Unavailable> {
        let inner = &self.inner;
        let key = message.key;
        let now = now_ms();
        let dead = message.state == State::Dead;
        let mut imported = match inner.load(key).await? {
            Loaded::Record(..) | Loaded::Deleted => Imported::Known,
            Loaded::Missing => Imported::Stored,
        };
        if imported == Imported::Stored {
            let record = Record {
                state: message.state,
                attempts: message.attempts,
                // A fresh retry budget (`max_age`): the move is not the message's fault.
                since_ms: now,
                due_ms: (!dead).then_some(now),
                finished_ms: dead.then_some(now),
                history: message.history,
            };
            if inner.save(key, 0, &record).await?.is_err() {
                imported = Imported::Known; // another writer was first
            }
        }
        let body = Bytes::from(content);
        let subject = inner.subject(if dead { "dead" } else { "queue" }, key);
        inner.publish(subject, body, Some(&key.to_string())).await?;
        inner.wake();
        Ok(imported)
    }
}
