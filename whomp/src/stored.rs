//! The spool file of a whomp message, written at submission and read before every attempt.
//!
//! It is the request to send in `message/http` form with the normalised absolute URL as its
//! target (so `cat` shows exactly where it goes), the submitter's header fields in order, and
//! whomp's own metadata as `Whomp-*` fields at the end. Metadata never leaves whomp: the fields
//! are dropped before sending, and `Whomp-*` fields a submitter wrote are dropped on the way in
//! so they cannot be forged.

use std::path::Path;

use httpmsg::Message;

use crate::idempotency::Fingerprint;

/// Metadata header fields whomp writes into stored files.
pub mod meta {
    /// Every metadata field starts with this (lower case, for comparisons).
    pub const PREFIX: &str = "whomp-";
    /// The message id (a ULID); also sent as `webhook-id` when signing.
    pub const ID: &str = "Whomp-Id";
    /// When the submission was accepted (RFC 3339).
    pub const RECEIVED_AT: &str = "Whomp-Received-At";
    /// The name of the `signing.keys` entry to sign with, if any.
    pub const SIGNING_KEY: &str = "Whomp-Signing-Key";
    /// The submission's `Idempotency-Key`, so that the key map survives a restart.
    pub const IDEMPOTENCY_KEY: &str = "Whomp-Idempotency-Key";
    /// Whose key it is: a digest of the bearer token (empty without tokens).
    pub const IDEMPOTENCY_CALLER: &str = "Whomp-Idempotency-Caller";
    /// The fingerprint of the message the key was first used with (hex SHA-256).
    pub const IDEMPOTENCY_FINGERPRINT: &str = "Whomp-Idempotency-Fingerprint";
    /// The webhook target an event's delivery is for; it is signed with that target's secrets.
    pub const TARGET: &str = "Whomp-Target";
    /// The event a delivery carries.
    pub const EVENT: &str = "Whomp-Event";
    /// Where to send `delivery.dead` should this raw message die (the submission's
    /// `Whomp-Notify`, pre-flighted and normalised).
    pub const NOTIFY: &str = "Whomp-Notify";
    /// The kind of a failure notification (`delivery.dead`, ...): whomp never notifies about
    /// one, so a notification cannot cause another.
    pub const NOTIFICATION: &str = "Whomp-Notification";
}

/// Spool files are re-read with limits at least as generous as anything a submission passed.
pub const READ_LIMITS: httpmsg::Limits = httpmsg::Limits {
    max_header_bytes: httpmsg::MAX_STORED_HEAD,
    max_headers: 10_000,
    max_body_bytes: usize::MAX,
};

/// whomp's metadata of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub id: String,
    pub received_at: String,
    pub signing_key: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// For an event's delivery: the target ([`meta::TARGET`]) and the event id ([`meta::EVENT`]).
    pub target: Option<String>,
    pub event: Option<String>,
    /// [`meta::NOTIFY`] and [`meta::NOTIFICATION`].
    pub notify: Option<String>,
    pub notification: Option<String>,
}

/// The `Idempotency-Key` a message was submitted with, and what makes a repeat a repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// Whose key it is ([`crate::idempotency::caller`]); keys of different callers differ.
    pub caller: String,
    /// Of the first submission; `None` in files written before fingerprints were kept.
    pub fingerprint: Option<Fingerprint>,
}

/// A stored message read back: the request to send and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub method: String,
    /// The normalised absolute URL.
    pub url: String,
    /// The submitter's header fields, in order, without metadata.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub meta: Meta,
}

/// Why a stored file cannot be sent; it never will be, so the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The file is not a readable request (edited by hand, truncated by a bad disk).
    #[error("stored file is not a readable request: {0}")]
    Unreadable(String),
    /// A metadata field whomp always writes is missing.
    #[error("stored file has no {0} field")]
    Missing(&'static str),
}

/// The file for `message` (its target already the normalised URL) with `meta` appended.
pub fn encode(message: &Message, meta: &Meta) -> Vec<u8> {
    let mut headers: Vec<(&str, &[u8])> = message
        .headers
        .iter()
        .filter(|(n, _)| !is_meta(n))
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    headers.push((meta::ID, meta.id.as_bytes()));
    headers.push((meta::RECEIVED_AT, meta.received_at.as_bytes()));
    if let Some(key) = &meta.signing_key {
        headers.push((meta::SIGNING_KEY, key.as_bytes()));
    }
    let fingerprint = meta
        .idempotency
        .as_ref()
        .and_then(|i| i.fingerprint)
        .map(|f| f.to_hex());
    if let Some(i) = &meta.idempotency {
        headers.push((meta::IDEMPOTENCY_KEY, i.key.as_bytes()));
        headers.push((meta::IDEMPOTENCY_CALLER, i.caller.as_bytes()));
    }
    if let Some(f) = &fingerprint {
        headers.push((meta::IDEMPOTENCY_FINGERPRINT, f.as_bytes()));
    }
    if let Some(t) = &meta.target {
        headers.push((meta::TARGET, t.as_bytes()));
    }
    if let Some(e) = &meta.event {
        headers.push((meta::EVENT, e.as_bytes()));
    }
    if let Some(n) = &meta.notify {
        headers.push((meta::NOTIFY, n.as_bytes()));
    }
    if let Some(n) = &meta.notification {
        headers.push((meta::NOTIFICATION, n.as_bytes()));
    }
    let mut out = Vec::with_capacity(256 + message.body.len());
    httpmsg::write_into(
        &mut out,
        &message.method,
        &message.target,
        headers,
        &message.body,
    );
    out
}

/// Reads a stored file back.
pub fn decode(file: &[u8]) -> Result<Stored, ReadError> {
    let message =
        httpmsg::parse(file, &READ_LIMITS).map_err(|e| ReadError::Unreadable(e.to_string()))?;
    let value = |name: &str| {
        message
            .header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let meta = Meta {
        id: value(meta::ID).ok_or(ReadError::Missing(meta::ID))?,
        received_at: value(meta::RECEIVED_AT).unwrap_or_default(),
        signing_key: value(meta::SIGNING_KEY),
        idempotency: idempotency(&message.headers),
        target: value(meta::TARGET),
        event: value(meta::EVENT),
        notify: value(meta::NOTIFY),
        notification: value(meta::NOTIFICATION),
    };
    let Message {
        method,
        target,
        headers,
        body,
    } = message;
    Ok(Stored {
        method,
        url: target,
        headers: headers.into_iter().filter(|(n, _)| !is_meta(n)).collect(),
        body,
        meta,
    })
}

/// The idempotency metadata in the head of a stored file, if it has a key.
pub fn idempotency_of(head: &[u8]) -> Option<Idempotency> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    idempotency(&head.headers)
}

fn idempotency(fields: &[(String, Vec<u8>)]) -> Option<Idempotency> {
    let value = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    Some(Idempotency {
        key: value(meta::IDEMPOTENCY_KEY)?,
        caller: value(meta::IDEMPOTENCY_CALLER).unwrap_or_default(),
        fingerprint: value(meta::IDEMPOTENCY_FINGERPRINT).and_then(|f| Fingerprint::from_hex(&f)),
    })
}

/// The head of the stored file at `path`, through its blank line (see [`httpmsg::read_head`]).
pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    httpmsg::read_head(std::fs::File::open(path)?, READ_LIMITS.max_header_bytes)
}

/// The method and target of a stored file, from its first line alone (so a head cut short
/// still has them).
pub fn request_line(head: &[u8]) -> Option<(String, String)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

/// What a stored message is for, in `spool list`: its method and the origin of its URL (the
/// path and query may be secrets).
pub fn describe(head: &[u8]) -> String {
    match request_line(head) {
        Some((method, url)) => format!("{method} {}", delivery::origin(&url)),
        None => "?".into(),
    }
}

/// The host a stored message is for (`spool list --host`), normalised as pre-flight does.
pub fn host_of(head: &[u8]) -> Option<String> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    let target = netguard::parse_target(&head.target).ok()?;
    Some(target.host.to_string())
}

/// The value of metadata field `name` (e.g. [`meta::TARGET`]) in the head of a stored file.
pub fn meta_of(head: &[u8], name: &str) -> Option<String> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Whether a field name is whomp metadata.
pub fn is_meta(name: &str) -> bool {
    name.len() >= meta::PREFIX.len()
        && name
            .get(..meta::PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(meta::PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: Message, meta: Meta) -> Stored {
        let file = encode(&message, &meta);
        decode(&file).unwrap()
    }

    #[test]
    fn round_trips_and_drops_forged_metadata() {
        let message = Message {
            method: "POST".into(),
            target: "https://hooks.example.com/in?a=1".into(),
            headers: vec![
                ("Content-Type".into(), b"application/json".to_vec()),
                ("whomp-id".into(), b"forged".to_vec()),
                ("X-Tag".into(), b"a".to_vec()),
                ("Content-Length".into(), b"2".to_vec()),
            ],
            body: b"{}".to_vec(),
        };
        let meta = Meta {
            id: "01J00000000000000000000000".into(),
            received_at: "2026-01-01T00:00:00.000Z".into(),
            signing_key: Some("partner-a".into()),
            idempotency: Some(Idempotency {
                key: "order-17".into(),
                caller: "c0ffee".into(),
                fingerprint: Some(Fingerprint([7; 32])),
            }),
            target: Some("01J00000000000000000000001".into()),
            event: Some("order-17.created".into()),
            notify: Some("https://ops.example.com/dead".into()),
            notification: Some("delivery.dead".into()),
        };
        let stored = check(message, meta.clone());
        assert_eq!(stored.meta, meta);
        assert_eq!(stored.url, "https://hooks.example.com/in?a=1");
        assert_eq!(stored.body, b"{}");
        let names: Vec<&str> = stored.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "X-Tag", "Content-Length"]);
        let file = encode(
            &Message {
                method: "POST".into(),
                target: "https://a.example/".into(),
                ..Message::default()
            },
            &meta,
        );
        assert_eq!(describe(&file), "POST https://a.example:443");
        assert_eq!(idempotency_of(&file), meta.idempotency);
    }

    #[test]
    fn refuses_unreadable_files() {
        assert_eq!(
            decode(b"").unwrap_err().to_string(),
            "stored file is not a readable request: line 1: message is empty"
        );
        assert_eq!(
            decode(b"POST https://a.example/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .unwrap_err()
                .to_string(),
            "stored file has no Whomp-Id field"
        );
        assert_eq!(describe(b"garbage"), "?");
        assert_eq!(
            describe(b"POST https://u:p@a.example/services/SECRET?token=t HTTP/1.1\r\nX-Big: "),
            "POST https://a.example:443",
            "a head cut short still names its destination, and no more"
        );
        assert!(is_meta("WHOMP-Signing-Key"));
        assert!(!is_meta("whom"));
    }
}
