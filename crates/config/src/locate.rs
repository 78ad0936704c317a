//! Finds where a key or value sits in the config text, so that problems found after parsing
//! (a duplicate route, a missing file) point at a line and column like syntax errors do.
//!
//! Rather than searching the text, it walks the document again with serde_yaml_ng along a path of
//! keys and indexes, and makes the node it wants fail on purpose: serde_yaml_ng then reports that
//! node's position itself, whether it is written in block or flow style, quoted or behind an
//! alias.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::Location;

/// The message of the deliberate failure, used to tell it from any other error.
const MARKER: &str = "config-locate-marker";

/// One step from a node to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A node of the document: the value reached by `segs`, or the key of its last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ptr {
    segs: Vec<Seg>,
    /// `Some(n)`: the n-th (from 0) occurrence of the last key itself rather than its value.
    key_occurrence: Option<usize>,
}

impl Ptr {
    /// The whole document.
    pub(crate) fn root() -> Ptr {
        Ptr {
            segs: Vec::new(),
            key_occurrence: None,
        }
    }

    /// The value of `key` in this mapping.
    pub(crate) fn key(&self, key: &str) -> Ptr {
        self.child(Seg::Key(key.to_owned()))
    }

    /// The `index`-th item of this sequence.
    pub(crate) fn index(&self, index: usize) -> Ptr {
        self.child(Seg::Index(index))
    }

    /// The key that leads to this value, rather than the value; for problems with the name itself.
    pub(crate) fn at_key(&self) -> Ptr {
        self.at_key_occurrence(0)
    }

    /// Like [`Ptr::at_key`], for the `n`-th repeat of a key written more than once.
    pub(crate) fn at_key_occurrence(&self, n: usize) -> Ptr {
        Ptr {
            segs: self.segs.clone(),
            key_occurrence: matches!(self.segs.last(), Some(Seg::Key(_))).then_some(n),
        }
    }

    /// Parses the dotted path serde_yaml_ng puts in front of its messages, such as
    /// `routes[0].backends[1]` (or `.` for the root).
    pub(crate) fn from_serde_path(path: &str) -> Ptr {
        let mut ptr = Ptr::root();
        if path == "." {
            return ptr;
        }
        for part in path.split('.') {
            let (name, mut indexes) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                ptr = ptr.key(name);
            }
            while let Some((index, rest)) = indexes.split_once(']') {
                if let Ok(index) = index.parse() {
                    ptr = ptr.index(index);
                }
                indexes = rest.strip_prefix('[').unwrap_or(rest);
            }
        }
        ptr
    }

    fn child(&self, seg: Seg) -> Ptr {
        let mut segs = self.segs.clone();
        segs.push(seg);
        Ptr {
            segs,
            key_occurrence: None,
        }
    }

    /// The next node to try when this one cannot be found: a key's value, then its container.
    fn parent(&self) -> Option<Ptr> {
        if self.key_occurrence.is_some() {
            return Some(Ptr {
                segs: self.segs.clone(),
                key_occurrence: None,
            });
        }
        let (_, rest) = self.segs.split_last()?;
        Some(Ptr {
            segs: rest.to_vec(),
            key_occurrence: None,
        })
    }
}

/// The location of `ptr` in `text`, or of its nearest enclosing node that exists (a value left
/// out of the file is reported where its mapping is).
pub(crate) fn locate(text: &str, ptr: &Ptr) -> Option<Location> {
    let mut ptr = Some(ptr.clone());
    while let Some(current) = ptr {
        if let Some(location) = locate_exactly(text, &current) {
            return Some(location);
        }
        ptr = current.parent();
    }
    None
}

fn locate_exactly(text: &str, ptr: &Ptr) -> Option<Location> {
    let finder = Finder {
        segs: &ptr.segs,
        key_occurrence: ptr.key_occurrence,
    };
    let err = finder
        .deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .err()?;
    if !err.to_string().contains(MARKER) {
        return None;
    }
    err.location().map(|location| Location {
        line: location.line(),
        column: location.column(),
    })
}

/// Walks down `segs` and fails at the end of them.
struct Finder<'p> {
    segs: &'p [Seg],
    key_occurrence: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for Finder<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.segs.split_first() {
            None => deserializer.deserialize_any(Here),
            Some((Seg::Key(key), rest)) => deserializer.deserialize_map(InMap {
                key,
                rest,
                key_occurrence: self.key_occurrence,
            }),
            Some((Seg::Index(index), rest)) => deserializer.deserialize_seq(InSeq {
                index: *index,
                rest,
                key_occurrence: self.key_occurrence,
            }),
        }
    }
}

/// The node wanted: every visit fails with the marker, so the error carries this node's mark.
struct Here;

impl Visitor<'_> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MARKER)
    }
}

struct InMap<'p> {
    key: &'p str,
    rest: &'p [Seg],
    key_occurrence: Option<usize>,
}

impl<'de> Visitor<'de> for InMap<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let wants_key = self.rest.is_empty() && self.key_occurrence.is_some();
        let mut seen = 0;
        loop {
            let fail_on = (wants_key && self.key_occurrence == Some(seen)).then_some(self.key);
            let Some(key) = map.next_key_seed(KeySeed { fail_on })? else {
                return Ok(());
            };
            if key != self.key {
                map.next_value::<IgnoredAny>()?;
            } else if wants_key {
                seen += 1;
                map.next_value::<IgnoredAny>()?;
            } else {
                return map.next_value_seed(Finder {
                    segs: self.rest,
                    key_occurrence: self.key_occurrence,
                });
            }
        }
    }
}

struct InSeq<'p> {
    index: usize,
    rest: &'p [Seg],
    key_occurrence: Option<usize>,
}

impl<'de> Visitor<'de> for InSeq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Finder {
            segs: self.rest,
            key_occurrence: self.key_occurrence,
        })
        .map(|_| ())
    }
}

/// Reads a mapping key as text, failing with the marker if it is the one wanted.
struct KeySeed<'p> {
    fail_on: Option<&'p str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<String, E> {
        if self.fail_on == Some(key) {
            Err(E::custom(MARKER))
        } else {
            Ok(key.to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
listen:
  - addr: 127.0.0.1:8080
  - addr: 0.0.0.0:8443
    tls: { cert: a.pem, key: b.pem }
retry: { initial: 1s }
routes:
  - path: /a
    backends: []
";

    fn check(ptr: Ptr, expected: Option<(usize, usize)>) {
        let found = locate(TEXT, &ptr).map(|l| (l.line, l.column));
        assert_eq!(found, expected, "{ptr:?}");
    }

    #[test]
    fn finds_values_keys_and_items() {
        let root = Ptr::root();
        check(root.clone(), Some((1, 1)));
        check(root.key("listen").index(1).key("addr"), Some((3, 11)));
        check(
            root.key("listen").index(1).key("tls").key("key"),
            Some((4, 30)),
        );
        check(
            root.key("listen").index(1).key("tls").key("key").at_key(),
            Some((4, 25)),
        );
        check(root.key("retry").key("initial").at_key(), Some((5, 10)));
        check(root.key("routes").index(0), Some((7, 5)));
        check(root.key("routes").index(0).key("backends"), Some((8, 15)));
    }

    #[test]
    fn falls_back_to_the_nearest_node_that_exists() {
        let root = Ptr::root();
        check(root.key("retry").key("max_age"), Some((5, 8)));
        check(root.key("listen").index(7).key("addr"), Some((2, 3)));
        check(
            root.key("routes").index(0).key("path").key("x"),
            Some((7, 11)),
        );
    }

    #[test]
    fn finds_the_repeat_of_a_key() {
        let text = "a: 1\nb: 2\na: 3\n";
        let ptr = Ptr::root().key("a");
        assert_eq!(
            locate(text, &ptr.at_key_occurrence(1)),
            Some(Location { line: 3, column: 1 })
        );
    }

    #[test]
    fn parses_serde_paths() {
        let ptr = Ptr::from_serde_path("routes[2].backends[0].url");
        assert_eq!(
            ptr,
            Ptr::root()
                .key("routes")
                .index(2)
                .key("backends")
                .index(0)
                .key("url")
        );
        assert_eq!(Ptr::from_serde_path("."), Ptr::root());
        assert_eq!(
            Ptr::from_serde_path("a[1][2]"),
            Ptr::root().key("a").index(1).index(2)
        );
    }
}
