//! The in-memory view of every message's state, so that the gauges, the next due time and
//! listings answer without I/O: filled from the state bucket's watch (every node's changes), from
//! the queue stream's (messages stored and not attempted yet, which have no record: queued, at
//! revision 0, below any record) and from this node's own writes at once, each applied only if
//! newer than what is known. The next due time comes from a schedule of the waiting messages not
//! claimed here, ordered by due time, so that the delivery loop, which asks at every turn, does
//! not walk a backlog of thousands each time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use storage::{now_ms, Counts, Key, Listed, State};

use crate::record::Record;

/// What the index keeps of one message: its record's summary and revision.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) revision: u64,
    pub(crate) state: State,
    pub(crate) attempts: u32,
    pub(crate) due_ms: Option<u64>,
    pub(crate) finished_ms: Option<u64>,
    pub(crate) last_error: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: BTreeMap<Key, Entry>,
    /// Revisions of deletions, so that an older put seen late does not bring a message back.
    deleted: BTreeMap<Key, u64>,
    /// Waiting messages not claimed on this node, by due time.
    due: BTreeSet<(u64, Key)>,
    /// Claimed on this node (given out by `claim_due`, not yet finished or released).
    claimed: HashSet<Key>,
    /// Being attempted on this node right now.
    pub(crate) sending: HashSet<Key>,
    /// After a claim found nothing although something looked due (another node holds it, or
    /// the server delays it), the next look is not before this; 0 = at once.
    pub(crate) quiet_until_ms: u64,
}

impl Index {
    /// Applies a record at `revision`; false if something newer was known already.
    pub(crate) fn put(&mut self, key: Key, revision: u64, record: &Record) -> bool {
        let newer = |r: u64| revision > r;
        if !self.entries.get(&key).is_none_or(|e| newer(e.revision))
            || !self.deleted.get(&key).is_none_or(|r| newer(*r))
        {
            return false;
        }
        self.unschedule(key);
        self.entries.insert(
            key,
            Entry {
                revision,
                state: record.state,
                attempts: record.attempts,
                due_ms: record.due_ms,
                finished_ms: record.finished_ms,
                last_error: record.history.last().and_then(|a| a.failure()),
            },
        );
        self.schedule(key);
        true
    }

    /// Notes `key` stored at `at_ms` and not attempted yet, unless a record or a deletion of it
    /// is known; true if it was new.
    pub(crate) fn queued(&mut self, key: Key, at_ms: u64) -> bool {
        if self.entries.contains_key(&key) || self.deleted.contains_key(&key) {
            return false;
        }
        self.entries.insert(
            key,
            Entry {
                revision: 0,
                state: State::Queued,
                attempts: 0,
                due_ms: Some(at_ms),
                finished_ms: None,
                last_error: None,
            },
        );
        self.schedule(key);
        true
    }

    /// Forgets `key`, deleted at `revision`.
    pub(crate) fn delete(&mut self, key: Key, revision: u64) {
        if self
            .entries
            .get(&key)
            .is_none_or(|e| revision >= e.revision)
        {
            self.unschedule(key);
            self.entries.remove(&key);
            self.deleted.insert(key, revision);
        }
    }

    /// Puts `key` in the schedule if it waits with a due time and is not claimed here.
    fn schedule(&mut self, key: Key) {
        if self.claimed.contains(&key) {
            return;
        }
        if let Some(e) = self.entries.get(&key) {
            if let (State::Queued | State::Retrying, Some(due)) = (e.state, e.due_ms) {
                self.due.insert((due, key));
            }
        }
    }

    /// Takes `key` out of the schedule (before its entry changes or goes).
    fn unschedule(&mut self, key: Key) {
        if let Some(due) = self.entries.get(&key).and_then(|e| e.due_ms) {
            self.due.remove(&(due, key));
        }
    }

    /// `key` is claimed on this node: not due here until released.
    pub(crate) fn claim(&mut self, key: Key) {
        self.unschedule(key);
        self.claimed.insert(key);
    }

    /// `key`'s claim here ended (finished, released or dropped).
    pub(crate) fn unclaim(&mut self, key: Key) {
        self.claimed.remove(&key);
        self.schedule(key);
    }

    pub(crate) fn is_claimed(&self, key: Key) -> bool {
        self.claimed.contains(&key)
    }

    pub(crate) fn get(&self, key: Key) -> Option<&Entry> {
        self.entries.get(&key)
    }

    /// Every stored copy of message `id`.
    pub(crate) fn copies(&self, key: Key) -> Vec<Key> {
        let (first, last) = (Key::new(key.id(), 0), Key::new(key.id(), u8::MAX));
        self.entries.range(first..=last).map(|(k, _)| *k).collect()
    }

    /// Keys in `state`.
    pub(crate) fn in_state(&self, state: State) -> Vec<(Key, Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state == state)
            .map(|(k, e)| (*k, e.clone()))
            .collect()
    }

    pub(crate) fn list(&self) -> Vec<Listed> {
        self.entries
            .iter()
            .map(|(key, e)| Listed {
                key: *key,
                state: e.state,
                attempts: e.attempts,
                next_attempt_ms: e.due_ms,
                last_error: e.last_error.clone(),
            })
            .collect()
    }

    fn waiting(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Queued | State::Retrying))
    }

    pub(crate) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for (key, e) in self.waiting() {
            if self.sending.contains(key) {
                counts.in_flight += 1;
            } else if e.state == State::Queued {
                counts.queued += 1;
            } else {
                counts.retrying += 1;
            }
        }
        counts
    }

    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        let (due, _) = self.due.first()?;
        Some((*due).max(self.quiet_until_ms))
    }

    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.waiting().map(|(k, _)| k.arrived_ms()).min()?;
        Some(Duration::from_millis(now_ms().saturating_sub(oldest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    fn record(state: State, due_ms: Option<u64>) -> Record {
        Record {
            state,
            due_ms,
            ..Record::new(0)
        }
    }

    #[test]
    fn the_schedule_follows_records_claims_and_deletions() {
        let mut index = Index::default();
        let (a, b) = (Key::new(Ulid::new(), 0), Key::new(Ulid::new(), 0));
        assert!(index.queued(a, 50));
        assert!(index.put(b, 1, &record(State::Retrying, Some(20))));
        assert_eq!(index.next_due_ms(), Some(20));
        index.claim(b);
        assert_eq!(
            index.next_due_ms(),
            Some(50),
            "a claimed message is not due here"
        );
        assert!(index.put(b, 2, &record(State::Retrying, Some(10))));
        assert_eq!(
            index.next_due_ms(),
            Some(50),
            "still claimed after its record changed"
        );
        index.unclaim(b);
        assert_eq!(index.next_due_ms(), Some(10), "due again once released");
        assert!(index.put(a, 3, &record(State::Delivered, None)));
        assert!(!index.queued(a, 5), "a record outranks the queue stream");
        index.delete(b, 4);
        assert_eq!(index.next_due_ms(), None, "nothing waits");
        assert!(!index.queued(b, 5), "a deletion outranks the queue stream");
        index.quiet_until_ms = 70;
        assert!(index.queued(Key::new(Ulid::new(), 0), 60));
        assert_eq!(index.next_due_ms(), Some(70));
    }
}
