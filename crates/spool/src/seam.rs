//! The maildir spool behind the storage seam: [`storage::Storage`] for [`Spool`], each method
//! the spool's own, so that the invariants in ARCHITECTURE.md are kept by the code that keeps
//! them today.

use std::future::Future;
use std::io::{self, Read};
use std::time::Duration;

use storage::{Claimed, Listed, Status, Storage};
use ulid::Ulid;

use crate::{
    offline, Attempt, ChangeError, Claim, Counts, Key, Outcome, RequeueError, Sending, Spool,
    State, Unavailable,
};

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

impl Storage for Spool {
    type Claim = Claim;
    type Sending = Sending;

    async fn enqueue(
        &self,
        id: Ulid,
        copies: u8,
        content: Vec<u8>,
    ) -> Result<Vec<Key>, Unavailable> {
        Spool::enqueue(self, id, copies, content)
            .await
            .map_err(Unavailable::new)
    }

    async fn claim_due(&self, now_ms: u64, max: usize) -> Vec<Claim> {
        Spool::claim_due(self, now_ms, max)
    }

    fn next_due_ms(&self) -> Option<u64> {
        Spool::next_due_ms(self)
    }

    fn changed(&self) -> impl Future<Output = ()> + Send {
        Spool::changed(self)
    }

    async fn read(&self, claim: &Claim) -> Result<Vec<u8>, Unavailable> {
        Spool::read(self, claim).map_err(|e| {
            let path = self.path(claim);
            Unavailable::new(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        })
    }

    async fn release(&self, claim: Claim) {
        Spool::release(self, claim)
    }

    fn sending(&self, claim: &Claim) -> Sending {
        Spool::sending(self, claim)
    }

    async fn finish(
        &self,
        claim: Claim,
        attempt: Option<&Attempt>,
        outcome: Outcome,
    ) -> Result<(), Unavailable> {
        Spool::finish(self, claim, attempt, outcome)
            .await
            .map_err(Unavailable::new)
    }

    async fn status(&self, key: Key) -> Result<Option<Status>, Unavailable> {
        Ok(self.locate(key))
    }

    async fn attempts(&self, key: Key) -> Result<Vec<Attempt>, Unavailable> {
        Ok(self.history(key))
    }

    async fn message(&self, key: Key, limit: usize) -> Result<Option<Vec<u8>>, Unavailable> {
        let read = |path: &std::path::Path| -> io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            std::fs::File::open(path)?
                .take(limit as u64)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        // A message may move on between its lookup and its read: look again, once.
        for _ in 0..2 {
            let Some(path) = self.locate_path(key) else {
                return Ok(None);
            };
            match read(&path) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Unavailable::new(e)),
            }
        }
        Ok(None)
    }

    async fn copies(&self, key: Key) -> Result<Vec<Key>, Unavailable> {
        offline::copies(self.dir(), key).map_err(Unavailable::new)
    }

    async fn list(&self) -> Result<Vec<Listed>, Unavailable> {
        let dir = self.dir();
        let seen = offline::snapshot(dir).map_err(Unavailable::new)?;
        Ok(offline::describe_all(dir, &seen))
    }

    fn counts(&self) -> Counts {
        Spool::counts(self)
    }

    fn oldest_age(&self) -> Option<Duration> {
        Spool::oldest_age(self)
    }

    fn requeue(&self, key: Key) -> impl Future<Output = Result<(), RequeueError>> + Send {
        Spool::requeue(self, key)
    }

    fn retry_now(&self, key: Key) -> impl Future<Output = Result<(), ChangeError>> + Send {
        Spool::retry_now(self, key)
    }

    fn delete(&self, key: Key) -> impl Future<Output = Result<State, ChangeError>> + Send {
        Spool::delete(self, key)
    }

    async fn purge_dead(&self) -> Result<usize, Unavailable> {
        let spool = self.clone();
        blocking(move || spool.purge_dead()).await
    }

    async fn prune(&self, retention: Duration) -> Result<usize, Unavailable> {
        let spool = self.clone();
        blocking(move || spool.prune_done(retention)).await
    }

    fn unhealthy_reason(&self) -> Option<String> {
        Spool::unhealthy_reason(self)
    }
}

/// Runs directory walks off the async workers.
async fn blocking(
    work: impl FnOnce() -> io::Result<usize> + Send + 'static,
) -> Result<usize, Unavailable> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Unavailable::new),
        Err(e) => Err(Unavailable::new(io::Error::other(e.to_string()))),
    }
}
