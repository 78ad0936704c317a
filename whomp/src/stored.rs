//! The spool file of a whomp message, written at submission and read before every attempt.
//!
//! It is the request to send in `message/http` form with the normalised absolute URL as its
//! target (so `cat` shows exactly where it goes), the submitter's header fields in order, and
//! whomp's own metadata as `Whomp-*` fields at the end. Metadata never leaves whomp: the fields
//! are dropped before sending, and `Whomp-*` fields a submitter wrote are dropped on the way in
//! so they cannot be forged.

use httpmsg::Message;

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
}

/// Spool files are re-read with limits at least as generous as anything a submission passed.
pub const READ_LIMITS: httpmsg::Limits = httpmsg::Limits {
    max_header_bytes: 1024 * 1024,
    max_headers: 10_000,
    max_body_bytes: usize::MAX,
};

/// whomp's metadata of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub received_at: String,
    pub signing_key: Option<String>,
    pub idempotency_key: Option<String>,
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
    if let Some(key) = &meta.idempotency_key {
        headers.push((meta::IDEMPOTENCY_KEY, key.as_bytes()));
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
        idempotency_key: value(meta::IDEMPOTENCY_KEY),
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

/// The value of metadata field `name` in the head of a stored file, if the head is readable.
pub fn meta_field(head: &[u8], name: &str) -> Option<String> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    head.header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// What a stored message is for, in `spool list`: its method and URL.
pub fn describe(head: &[u8]) -> String {
    match httpmsg::parse_head_with(head, &READ_LIMITS) {
        Ok((head, _)) => format!("{} {}", head.method, head.target),
        Err(_) => "?".into(),
    }
}

/// The host a stored message is for (`spool list --host`), normalised as pre-flight does.
pub fn host_of(head: &[u8]) -> Option<String> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    let target = netguard::parse_target(&head.target).ok()?;
    Some(target.host.to_string())
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
            idempotency_key: None,
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
        assert_eq!(describe(&file), "POST https://a.example/");
        assert_eq!(
            meta_field(&file, meta::SIGNING_KEY).as_deref(),
            Some("partner-a")
        );
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
        assert!(is_meta("WHOMP-Signing-Key"));
        assert!(!is_meta("whom"));
    }
}
