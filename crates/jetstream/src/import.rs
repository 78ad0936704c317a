//! Moving a maildir node's messages into the cluster (`spool import`, docs/cluster.md): one
//! message at a time, keeping its key (so ids clients hold stay valid), its state and its
//! attempts; its retry budget (`max_age`) starts again at the import. The caller deletes the maildir copy only after [`JetStream::import`] returned, so a
//! crash or an unreachable cluster mid-way leaves each message in one place or both, never
//! neither; a run again skips what the cluster already has.

use bytes::Bytes;
use storage::{now_ms, Attempt, Key, State, Unavailable};

use crate::record::Record;
use crate::JetStream;

/// What [`JetStream::import`] did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Stored in the cluster with its state: queued (due at once) or dead.
    Stored,
    /// The cluster knows this key already (an earlier run got this far): nothing written.
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
    /// Stores `message` with `content` under its own key: the stream message first (the queue,
    /// or the dead letters), then its state record, as [`storage::Storage::enqueue`] does. A
    /// queued or retrying message is due at once on whichever node claims it.
    pub async fn import(
        &self,
        message: Incoming,
        content: Vec<u8>,
    ) -> Result<Imported, Unavailable> {
        let inner = &self.inner;
        let key = message.key;
        if inner.load(key).await?.is_some() {
            return Ok(Imported::Known);
        }
        let now = now_ms();
        let dead = message.state == State::Dead;
        let body = Bytes::from(content);
        let name = key.to_string();
        if dead {
            inner
                .publish(inner.subject("dead", key), body, Some(&name))
                .await?;
        } else {
            inner
                .publish(inner.subject("queue", key), body, Some(&name))
                .await?;
        }
        let record = Record {
            state: if dead { State::Dead } else { message.state },
            attempts: message.attempts,
            // A fresh retry budget (`max_age`): the move is not the message's fault.
            since_ms: now,
            due_ms: (!dead).then_some(now),
            finished_ms: dead.then_some(now),
            history: message.history,
        };
        let _ = inner.save(key, 0, &record).await?;
        inner.index().quiet_until_ms = 0;
        inner.changed.notify_one();
        Ok(Imported::Stored)
    }
}
