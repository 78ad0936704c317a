//! An operator's changes to one message (the CLI and admin endpoints, whomp's retry API):
//! re-queue a dead message, retry now, delete. Unlike a delivery's outcome, a re-queue and a
//! delete are flushed before they return.

use std::fs;
use std::io;

use crate::commit::Op;
use crate::index::Place;
use crate::rebuild::retrying_entry;
use crate::{
    folder_of, lock, now_ms, ChangeError, Claim, CurName, Folder, Key, MoveError, Outcome,
    RequeueError, Spool, State, Unavailable,
};

impl Spool {
    /// Moves a dead message back to the queue with a fresh retry budget, due now.
    pub(crate) async fn requeue(&self, key: Key) -> Result<(), RequeueError> {
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
    pub(crate) async fn retry_now(&self, key: Key) -> Result<(), ChangeError> {
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
    pub(crate) async fn delete(&self, key: Key) -> Result<State, ChangeError> {
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
}
