//! The spool file of a whimp request, written by the accept path and read before every forward
//! attempt and by `spool list`.
//!
//! It is the request as received in `message/http` form: the origin-form target, the received
//! header fields in order (framing fields replaced by one `Content-Length`; an HTTP/2
//! `:authority` kept as `Host`, so the file reads as HTTP/1.1), and whimp's own metadata as
//! `Whimp-*` fields at the end. `Whimp-*` fields sent by the outside are dropped on the way in so
//! they cannot be forged, and metadata never reaches a backend as such: the forwarder turns it
//! into `X-Forwarded-*`, `Whimp-Original-Url` and `Whimp-Id`.

use bytes::Bytes;
use daemon::listen::Peer;
use http::header;

/// Metadata header fields whimp writes into stored files.
pub mod meta {
    /// Every metadata field starts with this (lower case, for comparisons).
    pub const PREFIX: &str = "whimp-";
    /// The message id (a ULID).
    pub const ID: &str = "Whimp-Id";
    /// The name of the route the request came in on.
    pub const ROUTE: &str = "Whimp-Route";
    /// When the request was stored (RFC 3339).
    pub const RECEIVED_AT: &str = "Whimp-Received-At";
    /// The sender's address and port.
    pub const REMOTE_ADDR: &str = "Whimp-Remote-Addr";
    /// The public URL the sender used (some providers sign it).
    pub const ORIGINAL_URL: &str = "Whimp-Original-Url";
    /// `http` or `https`: how the request came in.
    pub const PROTO: &str = "Whimp-Proto";
}

/// Spool files are re-read with limits at least as generous as anything hyper accepted.
pub const READ_LIMITS: httpmsg::Limits = httpmsg::Limits {
    max_header_bytes: httpmsg::MAX_STORED_HEAD,
    max_headers: 1000,
    max_body_bytes: usize::MAX,
};

/// whimp's metadata of one stored request. Only the route is needed to forward it; the rest
/// is what whimp tells the backend about the sender, and is left out if a file lacks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub route: String,
    pub received_at: Option<String>,
    pub remote_addr: Option<String>,
    pub proto: Option<String>,
    pub original_url: Option<String>,
}

impl Meta {
    /// The metadata of request `parts`, received now from `peer` on `route`.
    pub fn received(id: String, route: &str, peer: Peer, parts: &http::request::Parts) -> Meta {
        let proto = if peer.tls { "https" } else { "http" };
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| peer.local.to_string());
        Meta {
            id,
            route: route.to_owned(),
            received_at: Some(telemetry::rfc3339(spool::now_ms())),
            remote_addr: Some(peer.remote.to_string()),
            proto: Some(proto.to_owned()),
            original_url: Some(format!("{proto}://{host}{}", target(&parts.uri))),
        }
    }
}

/// A stored request read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub method: String,
    /// The origin-form target, query included.
    pub target: String,
    /// The received header fields, in order, without metadata.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub meta: Meta,
}

/// Why a stored file cannot be forwarded; it never will be, so the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The file is not a readable request (edited by hand, truncated by a bad disk).
    #[error("stored file is not a readable request: {0}")]
    Unreadable(String),
    /// The file names no route, so it has nowhere to go.
    #[error("stored file has no Whimp-Route")]
    NoRoute,
}

/// The file for request `parts` with `body`, `meta` appended.
pub fn encode(parts: &http::request::Parts, meta: &Meta, body: &[u8]) -> Vec<u8> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(parts.headers.len() + 7);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            // HTTP/2 carries the host in :authority; keep it as Host so the file reads as HTTP/1.1.
            headers.push(("Host", authority.as_str().as_bytes()));
        }
    }
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "content-length" || n == "transfer-encoding" || n.starts_with(meta::PREFIX) {
            continue;
        }
        headers.push((n, value.as_bytes()));
    }
    headers.push((meta::ID, meta.id.as_bytes()));
    headers.push((meta::ROUTE, meta.route.as_bytes()));
    for (name, value) in [
        (meta::RECEIVED_AT, &meta.received_at),
        (meta::REMOTE_ADDR, &meta.remote_addr),
        (meta::PROTO, &meta.proto),
        (meta::ORIGINAL_URL, &meta.original_url),
    ] {
        if let Some(value) = value {
            headers.push((name, value.as_bytes()));
        }
    }
    let mut out = Vec::with_capacity(256 + body.len());
    httpmsg::write_into(
        &mut out,
        parts.method.as_str(),
        target(&parts.uri),
        headers,
        body,
    );
    out
}

/// Reads a stored file back; its body is split off the file's bytes, not copied.
pub fn decode(mut file: Vec<u8>) -> Result<Stored, ReadError> {
    let (head, body_at) = httpmsg::parse_head_with(&file, &READ_LIMITS)
        .map_err(|e| ReadError::Unreadable(e.to_string()))?;
    let value = |name: &str| {
        head.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
    };
    let meta = Meta {
        id: value(meta::ID).unwrap_or_default(),
        route: value(meta::ROUTE).ok_or(ReadError::NoRoute)?,
        received_at: value(meta::RECEIVED_AT),
        remote_addr: value(meta::REMOTE_ADDR),
        proto: value(meta::PROTO),
        original_url: value(meta::ORIGINAL_URL),
    };
    let body = Bytes::from(file.split_off(body_at.min(file.len())));
    Ok(Stored {
        method: head.method,
        target: head.target,
        headers: head
            .headers
            .into_iter()
            .filter(|(n, _)| !is_meta(n))
            .collect(),
        body,
        meta,
    })
}

/// What a stored request is for (`spool list` target column): its route.
pub fn describe(head: &[u8]) -> String {
    route_of(head).map_or_else(|| "?".into(), |route| format!("route {route}"))
}

/// The name of the route a stored request came in on (`spool list --route`).
pub fn route_of(head: &[u8]) -> Option<String> {
    let (head, _) = httpmsg::parse_head_with(head, &READ_LIMITS).ok()?;
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(meta::ROUTE))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Whether a field name is whimp metadata.
pub fn is_meta(name: &str) -> bool {
    name.get(..meta::PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(meta::PREFIX))
}

/// The origin-form target of `uri`, query included.
fn target(uri: &http::Uri) -> &str {
    uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(tls: bool) -> Peer {
        Peer {
            remote: "192.0.2.7:40000".parse().unwrap(),
            local: "127.0.0.1:8443".parse().unwrap(),
            tls,
        }
    }

    fn check(request: http::Request<()>, peer: Peer, body: &[u8]) -> (Meta, Stored) {
        let (parts, ()) = request.into_parts();
        let meta = Meta::received("01J00000000000000000000000".into(), "paypal", peer, &parts);
        let stored = decode(encode(&parts, &meta, body)).unwrap();
        (meta, stored)
    }

    #[test]
    fn round_trips_and_drops_forged_metadata() {
        let request = http::Request::post("/paypal/K1?a=1&b=2")
            .header("Host", "hooks.example.com")
            .header("Content-Type", "application/json")
            .header("Whimp-Route", "forged")
            .header("X-Tag", "a")
            .header("x-tag", "b")
            .header("Transfer-Encoding", "chunked")
            .header("Content-Length", "9")
            .body(())
            .unwrap();
        let (meta, stored) = check(request, peer(true), b"{\"a\":1}\r\n");
        assert_eq!(stored.meta, meta);
        assert_eq!(stored.meta.route, "paypal");
        assert_eq!(stored.meta.remote_addr.as_deref(), Some("192.0.2.7:40000"));
        assert_eq!(stored.meta.proto.as_deref(), Some("https"));
        assert_eq!(
            stored.meta.original_url.as_deref(),
            Some("https://hooks.example.com/paypal/K1?a=1&b=2")
        );
        assert_eq!(
            (stored.method.as_str(), stored.target.as_str()),
            ("POST", "/paypal/K1?a=1&b=2")
        );
        assert_eq!(&stored.body[..], b"{\"a\":1}\r\n");
        let fields: Vec<(&str, &[u8])> = stored
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            fields,
            [
                ("host", &b"hooks.example.com"[..]),
                ("content-type", b"application/json"),
                ("x-tag", b"a"),
                ("x-tag", b"b"),
                ("Content-Length", b"9"),
            ]
        );
    }

    #[test]
    fn http2_authority_is_kept_as_host() {
        let request = http::Request::get("https://hooks.example.com:8443/h/K")
            .body(())
            .unwrap();
        let (_, stored) = check(request, peer(false), b"");
        assert_eq!(stored.target, "/h/K");
        assert_eq!(
            stored.headers[0],
            ("Host".to_owned(), b"hooks.example.com:8443".to_vec())
        );
        assert_eq!(
            stored.meta.original_url.as_deref(),
            Some("http://hooks.example.com:8443/h/K")
        );
    }

    #[test]
    fn refuses_unreadable_files_and_describes_routes() {
        assert_eq!(
            decode(Vec::new()).unwrap_err().to_string(),
            "stored file is not a readable request: line 1: message is empty"
        );
        let no_route = b"POST /h HTTP/1.1\r\nWhimp-Id: x\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert_eq!(decode(no_route.clone()).unwrap_err(), ReadError::NoRoute);
        assert_eq!(describe(&no_route), "?");
        assert_eq!(describe(b"garbage"), "?");
        let request = http::Request::post("/h").body(()).unwrap();
        let (parts, ()) = request.into_parts();
        let meta = Meta::received("x".into(), "github", peer(false), &parts);
        assert_eq!(describe(&encode(&parts, &meta, b"")), "route github");
        assert!(is_meta("WHIMP-Route"));
        assert!(!is_meta("whim"));
    }
}
