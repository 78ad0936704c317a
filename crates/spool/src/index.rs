//! The in-memory schedule of queued messages: which keys exist in `new/` and `cur/`, their retry
//! state, and when each is due. It holds no bodies and no paths, only a few dozen bytes per
//! message, and no table that is touched whole when it grows.
//!
//! Two structures, each sized to its job:
//! - **`slots`**, every queued key with its state in one `Vec` sorted by key (40 bytes each).
//!   Keys are ULIDs, so new messages arrive nearly in order: an insert is a push, or a short
//!   shift near the end. Removal marks the slot gone; gone slots are swept out when they
//!   outnumber the live ones, so the sweep's cost is shared by the removals that made it. A hash
//!   map would answer lookups in O(1) instead of O(log n), but its table keeps every slot touched
//!   and doubles past 7/8 full: whimp's RSS with 1M queued was 123 MiB with one, 61 MiB now
//!   (BENCHMARKS.md, "scale").
//! - **`buckets`**, due times in 100 ms buckets rounded *up*, so a message is never handed out
//!   before it is due and at most one bucket late. A bucket is a queue of keys (17 bytes each),
//!   first in first out, so a backlog is worked off oldest first.

use std::collections::{BTreeMap, VecDeque};

use crate::name::Key;

/// Width of a due-time bucket in milliseconds.
const BUCKET_MS: u64 = 100;

/// Gone slots tolerated before a sweep, whatever the number of live ones.
const MIN_SWEEP: usize = 1024;

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

/// One element of `slots`: a key and its entry, or a gone key awaiting the sweep. Flat, so the
/// compiler packs it into 40 bytes (a `(Key, Option<Entry>)` would take 48).
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Key,
    live: bool,
    attempts: u32,
    place: Place,
    claimed: bool,
    due_ms: u64,
    since_ms: u64,
}

impl Slot {
    fn new(key: Key, e: Entry) -> Slot {
        Slot {
            key,
            live: true,
            attempts: e.attempts,
            place: e.place,
            claimed: e.claimed,
            due_ms: e.due_ms,
            since_ms: e.since_ms,
        }
    }

    fn entry(&self) -> Entry {
        Entry {
            attempts: self.attempts,
            place: self.place,
            claimed: self.claimed,
            due_ms: self.due_ms,
            since_ms: self.since_ms,
        }
    }

    fn set(&mut self, e: Entry) {
        *self = Slot::new(self.key, e);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Sorted by key, unique keys; `live == false` marks a removed one.
    slots: Vec<Slot>,
    live: usize,
    buckets: BTreeMap<u64, VecDeque<Key>>,
    claimed: usize,
    retrying: usize,
}

/// Where `key` is in `slots` (sorted by key), or where it would go.
fn find(slots: &[Slot], key: &Key) -> Result<usize, usize> {
    slots.binary_search_by(|s| s.key.cmp(key))
}

fn bucket_of(due_ms: u64) -> u64 {
    due_ms.div_ceil(BUCKET_MS)
}

impl Index {
    /// Builds the schedule from entries in any order, as a directory listing gives them: one
    /// sort instead of an insert each. Of two entries with the same key the first is kept; the
    /// keys of the others are returned.
    pub(crate) fn from_unsorted(mut entries: Vec<(Key, Entry)>) -> (Index, Vec<Key>) {
        // Stable, so "first" means first in `entries`.
        entries.sort_by_key(|(key, _)| *key);
        let mut index = Index::default();
        let mut ignored = Vec::new();
        index.slots.reserve_exact(entries.len());
        for (key, entry) in entries {
            if index.slots.last().is_some_and(|s| s.key == key) {
                ignored.push(key);
                continue;
            }
            let entry = Entry {
                claimed: false,
                ..entry
            };
            index.slots.push(Slot::new(key, entry));
            index.account_new(key, entry);
        }
        (index, ignored)
    }

    /// Adds an unclaimed message; a key already present is left as it is and `false` returned.
    pub(crate) fn insert(&mut self, key: Key, entry: Entry) -> bool {
        let entry = Entry {
            claimed: false,
            ..entry
        };
        if self.slots.last().is_none_or(|s| s.key < key) {
            self.slots.push(Slot::new(key, entry));
        } else {
            match self.find(&key) {
                Ok(at) if self.slots[at].live => return false,
                Ok(at) => self.slots[at] = Slot::new(key, entry),
                Err(at) => self.slots.insert(at, Slot::new(key, entry)),
            }
        }
        self.account_new(key, entry);
        true
    }

    /// Counts a freshly added unclaimed entry and puts it in its bucket.
    fn account_new(&mut self, key: Key, entry: Entry) {
        self.live += 1;
        if entry.place == Place::Cur {
            self.retrying += 1;
        }
        self.buckets
            .entry(bucket_of(entry.due_ms))
            .or_default()
            .push_back(key);
    }

    fn find(&self, key: &Key) -> Result<usize, usize> {
        find(&self.slots, key)
    }

    fn live_slot(&mut self, key: &Key) -> Option<&mut Slot> {
        let at = self.find(key).ok()?;
        let slot = &mut self.slots[at];
        slot.live.then_some(slot)
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Entry> {
        let at = self.find(key).ok()?;
        let slot = &self.slots[at];
        slot.live.then(|| slot.entry())
    }

    /// Hands out up to `max` unclaimed messages due at or before `now_ms`: oldest bucket first,
    /// and within a bucket in the order they were put there.
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
            while out.len() < max {
                let Some(key) = keys.pop_front() else { break };
                // (`find` on the slots alone: the bucket is borrowed from `self` meanwhile.)
                let Ok(at) = find(&self.slots, &key) else {
                    continue;
                };
                let slot = &mut self.slots[at];
                if slot.live && !slot.claimed {
                    slot.claimed = true;
                    self.claimed += 1;
                    out.push((key, slot.entry()));
                }
            }
            if keys.is_empty() {
                first.remove();
            }
        }
        out
    }

    /// Hands out one unclaimed message, whatever its due time (an operator's change to it);
    /// `None` if it is not queued or already claimed.
    pub(crate) fn claim(&mut self, key: &Key) -> Option<Entry> {
        let slot = self.live_slot(key)?;
        if slot.claimed {
            return None;
        }
        slot.claimed = true;
        let entry = slot.entry();
        self.claimed += 1;
        self.unbucket(key, entry.due_ms);
        Some(entry)
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
        let Some(slot) = self.live_slot(&key) else {
            return;
        };
        let old = slot.entry();
        slot.set(Entry {
            attempts,
            place,
            claimed: false,
            due_ms,
            since_ms,
        });
        if old.claimed {
            self.claimed -= 1;
        } else {
            // Not handed out, so still in its bucket: take it out there, or it would be
            // handed out twice.
            self.unbucket(&key, old.due_ms);
        }
        if old.place == Place::Cur {
            self.retrying -= 1;
        }
        if place == Place::Cur {
            self.retrying += 1;
        }
        self.buckets
            .entry(bucket_of(due_ms))
            .or_default()
            .push_back(key);
    }

    fn unbucket(&mut self, key: &Key, due_ms: u64) {
        let bucket = bucket_of(due_ms);
        if let Some(keys) = self.buckets.get_mut(&bucket) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.buckets.remove(&bucket);
            }
        }
    }

    /// Forgets a message (delivered or dead-lettered).
    pub(crate) fn remove(&mut self, key: &Key) {
        let Some(slot) = self.live_slot(key) else {
            return;
        };
        slot.live = false;
        let old = slot.entry();
        self.live -= 1;
        if old.claimed {
            self.claimed -= 1;
        } else {
            self.unbucket(key, old.due_ms);
        }
        if old.place == Place::Cur {
            self.retrying -= 1;
        }
        self.sweep_if_due();
    }

    /// Drops gone slots once they outnumber the live ones (and `MIN_SWEEP`), and gives memory
    /// back once the queue has shrunk to a quarter of what it held.
    fn sweep_if_due(&mut self) {
        let gone = self.slots.len() - self.live;
        if gone < MIN_SWEEP || gone < self.live {
            return;
        }
        self.slots.retain(|s| s.live);
        if self.slots.capacity() > 4 * self.slots.len().max(MIN_SWEEP) {
            self.slots.shrink_to(2 * self.slots.len().max(MIN_SWEEP));
        }
    }

    /// The arrival time (ms since the epoch) of the oldest message still to deliver: the first
    /// live slot, since keys sort by arrival.
    pub(crate) fn oldest_arrival_ms(&self) -> Option<u64> {
        self.slots
            .iter()
            .find(|s| s.live)
            .map(|s| s.key.arrived_ms())
    }

    /// Every queued key, in key order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots.iter().filter(|s| s.live).map(|s| s.key)
    }

    /// (queued never attempted, retrying, claimed right now) counts.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (self.live - self.retrying, self.retrying, self.claimed)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live
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

    fn claimed_keys(index: &mut Index, now_ms: u64, max: usize) -> Vec<Key> {
        index
            .claim_due(now_ms, max)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_bucket_is_worked_off_first_in_first_out() {
        let mut index = Index::default();
        for n in 0..5 {
            index.insert(key(n), entry(0));
        }
        assert_eq!(claimed_keys(&mut index, 0, 2), vec![key(0), key(1)]);
        assert_eq!(
            claimed_keys(&mut index, 0, 10),
            vec![key(2), key(3), key(4)]
        );
    }

    #[test]
    fn out_of_order_inserts_stay_findable() {
        let mut index = Index::default();
        for n in [5, 1, 9, 3, 7, 2] {
            assert!(index.insert(key(n), entry(n * 1_000)));
        }
        for n in [5, 1, 9, 3, 7, 2] {
            assert_eq!(index.get(&key(n)).map(|e| e.due_ms), Some(n * 1_000));
            assert!(!index.insert(key(n), entry(0)), "{n} is refused twice");
        }
        assert_eq!(index.get(&key(4)), None);
        assert_eq!(index.oldest_arrival_ms(), Some(1));
        assert_eq!(
            claimed_keys(&mut index, 10_000, 10),
            vec![key(1), key(2), key(3), key(5), key(7), key(9)]
        );
    }

    #[test]
    fn the_first_of_two_entries_for_a_key_wins_a_rebuild() {
        let mut cur = entry(7_000);
        cur.place = Place::Cur;
        cur.attempts = 2;
        let (index, ignored) = Index::from_unsorted(vec![
            (key(3), entry(0)),
            (key(1), cur),
            (key(3), cur),
            (key(2), entry(0)),
        ]);
        assert_eq!(ignored, vec![key(3)]);
        assert_eq!(index.get(&key(3)).map(|e| e.place), Some(Place::New));
        assert_eq!(index.get(&key(1)).map(|e| e.attempts), Some(2));
        assert_eq!(index.counts(), (2, 1, 0));
        assert_eq!(index.oldest_arrival_ms(), Some(1));
    }

    #[test]
    fn removed_keys_are_swept_and_can_come_back() {
        let mut index = Index::default();
        let total = 3 * MIN_SWEEP as u64;
        for n in 0..total {
            index.insert(key(n), entry(0));
        }
        let claimed = index.claim_due(0, usize::MAX);
        assert_eq!(claimed.len(), total as usize);
        // Remove all but the last 10: the sweep runs along the way.
        for n in 0..total - 10 {
            index.remove(&key(n));
        }
        assert!(index.slots.len() < total as usize, "gone slots were swept");
        assert_eq!(index.counts(), (10, 0, 10));
        assert_eq!(index.oldest_arrival_ms(), Some(total - 10));
        for n in 0..total - 10 {
            assert_eq!(index.get(&key(n)), None, "{n} is gone");
        }
        // A removed key may be queued again (a re-queue from dead/), old or not swept.
        assert!(index.insert(key(0), entry(0)));
        assert!(index.insert(key(total - 11), entry(0)));
        assert_eq!(index.oldest_arrival_ms(), Some(0));
        assert_eq!(
            claimed_keys(&mut index, 0, 10),
            vec![key(0), key(total - 11)]
        );
    }

    #[test]
    fn removing_or_releasing_an_unclaimed_key_takes_it_out_of_its_bucket() {
        let mut index = Index::default();
        index.insert(key(1), entry(0));
        index.insert(key(2), entry(0));
        index.remove(&key(1));
        index.reschedule(key(2), Place::New, 0, 5_000, 0);
        assert!(index.claim_due(4_999, 10).is_empty());
        assert_eq!(claimed_keys(&mut index, 5_000, 10), vec![key(2)]);
        assert!(
            index.claim_due(u64::MAX / 2, 10).is_empty(),
            "handed out once"
        );
    }

    #[test]
    fn a_slot_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
    }
}
