//! The name of a message in every backend: its ULID, and which copy of a fanned-out message.
//!
//! One spelling per key (`<ULID>` or `<ULID>.<n>`, upper case, `n` in canonical decimal), so
//! that a key can be a file name, a stream subject or a bucket key without escaping, and two
//! spellings never name one message.

use std::fmt;
use std::str::FromStr;

use ulid::Ulid;

/// Identifies one deliverable copy of a stored message.
///
/// `copy == 0` is the single copy of a message with one target; `1..=255` number the copies of
/// a message fanned out to several targets (in the maildir, hard links to one file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    id: [u8; 16],
    copy: u8,
}

impl Key {
    /// The key of copy `copy` (0 = only copy) of message `id`.
    pub fn new(id: Ulid, copy: u8) -> Key {
        Key {
            id: id.to_bytes(),
            copy,
        }
    }

    /// The keys `enqueue` gives message `id` stored with `copies` deliverable copies: `id` alone
    /// for one (or none), `id.1`..`id.N` for a fan-out. Every backend lays copies out so.
    pub fn copies_of(id: Ulid, copies: u8) -> Vec<Key> {
        match copies {
            0 | 1 => vec![Key::new(id, 0)],
            n => (1..=n).map(|c| Key::new(id, c)).collect(),
        }
    }

    /// The message's ULID, shared by all of its copies.
    pub fn id(&self) -> Ulid {
        Ulid::from_bytes(self.id)
    }

    /// 0 for the only copy, `n` for the n-th copy of a fanned-out message.
    pub fn copy(&self) -> u8 {
        self.copy
    }

    /// Milliseconds since the Unix epoch at which the message arrived (from its ULID).
    pub fn arrived_ms(&self) -> u64 {
        self.id().timestamp_ms()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.copy == 0 {
            write!(f, "{}", self.id())
        } else {
            write!(f, "{}.{}", self.id(), self.copy)
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a message id (a ULID, optionally followed by .1 to .255)")]
pub struct BadKey(pub String);

impl FromStr for Key {
    type Err = BadKey;

    fn from_str(s: &str) -> Result<Key, BadKey> {
        let bad = || BadKey(s.to_owned());
        let (id, copy) = match s.split_once('.') {
            None => (s, 0),
            Some((id, n)) => {
                // Only canonical decimal 1..=255: one name, one key.
                if n.starts_with('0') || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let copy: u8 = n.parse().map_err(|_| bad())?;
                (id, copy)
            }
        };
        if id.len() != 26 {
            return Err(bad());
        }
        let ulid = Ulid::from_string(id).map_err(|_| bad())?;
        // Reject lower-case and other aliases so that a key has exactly one spelling on disk.
        if ulid.to_string() != id {
            return Err(bad());
        }
        Ok(Key::new(ulid, copy))
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_key(s: &str, ok: bool) {
        let parsed = s.parse::<Key>();
        assert_eq!(parsed.is_ok(), ok, "{s}: {parsed:?}");
        if let Ok(k) = parsed {
            assert_eq!(k.to_string(), s, "a key prints as it parsed");
        }
    }

    #[test]
    fn keys_have_one_spelling() {
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y", true);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.1", true);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.255", true);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.0", false);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.256", false);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.01", false);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y.", false);
        check_key("01fd5bkac5eej6ha8kpxt5qv4y", false);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4", false);
        check_key("01FD5BKAC5EEJ6HA8KPXT5QV4Y,1,2,3", false);
        check_key("", false);
        check_key("../../etc/passwd", false);
    }
}
