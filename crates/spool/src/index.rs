//! The in-memory schedule of queued messages: which keys exist in `new/` and `cur/`, their retry
//! state, and when each is due. It holds no bodies and no paths, only a few dozen bytes per
//! message: about 87 bytes each at 100k messages (`cargo bench -p spool`). The map's table
//! doubles past 7/8 full, so at exactly 1M messages whimp's RSS is 123 MiB (BENCHMARKS.md);
//! a denser layout is future work.
//!
//! Due times are kept in 100 ms buckets rounded *up*, so a message is never handed out before
//! it is due and at most one bucket late; a bucket is a plain `Vec` of keys, which keeps the
//! per-message cost at the key's 17 bytes.

use std::collections::{BTreeMap, HashMap};

use crate::name::Key;

/// Width of a due-time bucket in milliseconds.
const BUCKET_MS: u64 = 100;

/// Where a queued message's file lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// `new/<key>`: never attempted.
    New,
    /// `cur/<key>,<attempts>,<due>,<since>`.
    Cur,
}

/// The scheduling state of one queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) attempts: u32,
    pub(crate) place: Place,
    pub(crate) claimed: bool,
    pub(crate) due_ms: u64,
    pub(crate) since_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: HashMap<Key, Entry>,
    buckets: BTreeMap<u64, Vec<Key>>,
    claimed: usize,
    retrying: usize,
}

fn bucket_of(due_ms: u64) -> u64 {
    due_ms.div_ceil(BUCKET_MS)
}

impl Index {
    /// Adds an unclaimed message; a key already present is left as it is and `false` returned.
    pub(crate) fn insert(&mut self, key: Key, entry: Entry) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        let entry = Entry {
            claimed: false,
            ..entry
        };
        if entry.place == Place::Cur {
            self.retrying += 1;
        }
        self.entries.insert(key, entry);
        self.buckets
            .entry(bucket_of(entry.due_ms))
            .or_default()
            .push(key);
        true
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Hands out up to `max` unclaimed messages due at or before `now_ms`, oldest bucket first.
    pub(crate) fn claim_due(&mut self, now_ms: u64, max: usize) -> Vec<(Key, Entry)> {
        let mut out = Vec::new();
        // A bucket `b` holds due times in ((b-1)*100, b*100]: it is due once now >= b*100.
        let last_due_bucket = now_ms / BUCKET_MS;
        while out.len() < max {
            let Some(mut first) = self.buckets.first_entry() else {
                break;
            };
            if *first.key() > last_due_bucket {
                break;
            }
            let keys = first.get_mut();
            let take = (max - out.len()).min(keys.len());
            let rest = keys.len() - take;
            for key in keys.drain(rest..) {
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.claimed = true;
                    self.claimed += 1;
                    out.push((key, *entry));
                }
            }
            if keys.is_empty() {
                first.remove();
            }
        }
        out
    }

    /// The earliest due time of an unclaimed message, in ms since the epoch.
    pub(crate) fn next_due_ms(&self) -> Option<u64> {
        self.buckets.keys().next().map(|b| b * BUCKET_MS)
    }

    /// Puts a claimed message back on the schedule with new state.
    pub(crate) fn reschedule(
        &mut self,
        key: Key,
        place: Place,
        attempts: u32,
        due_ms: u64,
        since_ms: u64,
    ) {
        if let Some(entry) = self.entries.get_mut(&key) {
            if entry.claimed {
                self.claimed -= 1;
            }
            if entry.place == Place::Cur {
                self.retrying -= 1;
            }
            if place == Place::Cur {
                self.retrying += 1;
            }
            *entry = Entry {
                attempts,
                place,
                claimed: false,
                due_ms,
                since_ms,
            };
            self.buckets.entry(bucket_of(due_ms)).or_default().push(key);
        }
    }

    /// Forgets a claimed message (delivered or dead-lettered).
    pub(crate) fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.entries.remove(key) {
            if entry.claimed {
                self.claimed -= 1;
            } else {
                // Unclaimed entries are in a bucket; callers only remove claimed ones, but stay
                // consistent if that ever changes.
                if let Some(keys) = self.buckets.get_mut(&bucket_of(entry.due_ms)) {
                    keys.retain(|k| k != key);
                }
            }
            if entry.place == Place::Cur {
                self.retrying -= 1;
            }
        }
    }

    /// The arrival time (ms since the epoch) of the oldest message still to deliver. A scan of
    /// the schedule: a few milliseconds per million messages, done once per metrics scrape.
    pub(crate) fn oldest_arrival_ms(&self) -> Option<u64> {
        self.entries.keys().map(Key::arrived_ms).min()
    }

    /// (queued never attempted, retrying, claimed right now) counts.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.entries.len() - self.retrying,
            self.retrying,
            self.claimed,
        )
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    fn key(n: u64) -> Key {
        Key::new(Ulid::from_parts(n, 0), 0)
    }

    fn entry(due_ms: u64) -> Entry {
        Entry {
            attempts: 0,
            place: Place::New,
            claimed: false,
            due_ms,
            since_ms: 0,
        }
    }

    #[test]
    fn never_early_and_in_due_order() {
        let mut index = Index::default();
        index.insert(key(1), entry(1_050));
        index.insert(key(2), entry(1_000));
        index.insert(key(3), entry(2_000));
        assert!(index.claim_due(999, 10).is_empty());
        let got: Vec<Key> = index
            .claim_due(1_000, 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![key(2)], "1050 is not due at 1000");
        let got: Vec<Key> = index
            .claim_due(1_100, 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![key(1)]);
        assert_eq!(index.next_due_ms(), Some(2_000));
        assert_eq!(index.counts(), (3, 0, 2));
    }

    #[test]
    fn claims_respect_max_and_claimed_are_not_handed_out_twice() {
        let mut index = Index::default();
        for n in 0..10 {
            index.insert(key(n), entry(0));
        }
        assert_eq!(index.claim_due(0, 4).len(), 4);
        assert_eq!(index.claim_due(0, 100).len(), 6);
        assert!(index.claim_due(u64::MAX / 2, 100).is_empty());
        assert_eq!(index.next_due_ms(), None);
    }

    #[test]
    fn reschedule_and_remove_keep_counts() {
        let mut index = Index::default();
        index.insert(key(1), entry(0));
        index.insert(key(2), entry(0));
        assert!(
            !index.insert(key(1), entry(5)),
            "duplicate keys are refused"
        );
        let claimed = index.claim_due(0, 10);
        assert_eq!(claimed.len(), 2);
        index.reschedule(key(1), Place::Cur, 1, 5_000, 0);
        index.remove(&key(2));
        assert_eq!(index.counts(), (0, 1, 0));
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(&key(1)).map(|e| e.attempts), Some(1));
        assert!(index.claim_due(4_999, 10).is_empty());
        assert_eq!(index.claim_due(5_000, 10).len(), 1);
    }
}
