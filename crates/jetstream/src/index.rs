//! The in-memory view of every message's state, so that the gauges, the next due time and
//! listings answer without I/O: filled from the state bucket's watch (every node's changes) and
//! from this node's own writes at once, each applied only if newer than what is known.

use std::collections::{BTreeMap, HashSet};
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
    /// Claimed on this node (given out by `claim_due`, not yet finished or released).
    pub(crate) claimed: HashSet<Key>,
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
        true
    }

    /// Forgets `key`, deleted at `revision`.
    pub(crate) fn delete(&mut self, key: Key, revision: u64) {
        if self
            .entries
            .get(&key)
            .is_none_or(|e| revision >= e.revision)
        {
            self.entries.remove(&key);
            self.deleted.insert(key, revision);
        }
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
        let due = self
            .waiting()
            .filter(|(k, _)| !self.claimed.contains(k))
            .filter_map(|(_, e)| e.due_ms)
            .min()?;
        Some(due.max(self.quiet_until_ms))
    }

    pub(crate) fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.waiting().map(|(k, _)| k.arrived_ms()).min()?;
        Some(Duration::from_millis(now_ms().saturating_sub(oldest)))
    }
}
