//! File names are the spool's database: a message's key and its retry state live in the name of
//! its file, so an atomic `rename` is the only write needed to change state, and a restart
//! rebuilds the whole schedule from directory listings without opening a single file.
//!
//! Grammar (see ARCHITECTURE.md):
//! - `new/<key>`: queued, never attempted, due at once;
//! - `cur/<key>,<attempts>,<due_ms>,<since_ms>`: retrying; `since_ms` is when the current retry
//!   budget started (arrival, or the last re-queue from `dead/`);
//! - `done/<key>`, `dead/<key>`: finished;
//! - `<key>` is the ULID, or `<ULID>.<n>` for copy `n` (1-based) of a fanned-out message.

use std::fmt;

pub use storage::{BadKey, Key};

/// The retry state carried in a `cur/` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurName {
    pub key: Key,
    pub attempts: u32,
    pub due_ms: u64,
    pub since_ms: u64,
}

impl CurName {
    /// Parses `<key>,<attempts>,<due_ms>,<since_ms>`.
    pub fn parse(name: &str) -> Option<CurName> {
        let mut parts = name.split(',');
        let key = parts.next()?.parse().ok()?;
        let attempts = parse_num(parts.next()?)?;
        let due_ms = parse_num(parts.next()?)?;
        let since_ms = parse_num(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(CurName {
            key,
            attempts: u32::try_from(attempts).ok()?,
            due_ms,
            since_ms,
        })
    }
}

impl fmt::Display for CurName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.key, self.attempts, self.due_ms, self.since_ms
        )
    }
}

fn parse_num(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cur_names_round_trip() {
        let key: Key = "01FD5BKAC5EEJ6HA8KPXT5QV4Y.2".parse().unwrap();
        let name = CurName {
            key,
            attempts: 3,
            due_ms: 1_763_900_000_123,
            since_ms: 1_763_800_000_000,
        };
        let text = name.to_string();
        assert_eq!(
            text,
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y.2,3,1763900000123,1763800000000"
        );
        assert_eq!(CurName::parse(&text), Some(name));
        for bad in [
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y,1,2",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y,1,2,3,4",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y,-1,2,3",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y,99999999999,2,3",
            "01FD5BKAC5EEJ6HA8KPXT5QV4Y,1,,3",
        ] {
            assert_eq!(CurName::parse(bad), None, "{bad}");
        }
    }
}
