//! The accept path: match the route, check method, source and size, read the body within its
//! deadline, store the request durably, and only then answer the route's status.
//!
//! Every refusal (404, 405, 403, 413, 408, 400, 503) happens before anything reaches the spool,
//! or, for 503, because the spool refused it; so a refused request leaves no trace. The stored
//! file is the request as received (origin-form target, all header fields) plus `Whimp-*`
//! metadata; `Whimp-*` fields sent by the outside are dropped so they cannot be forged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use server::listen::{Peer, Resp};
use spool::Spool;

use crate::routes::{Current, Route};

/// Metadata header fields whimp writes into stored files (and reads back when forwarding).
pub mod meta {
    pub const PREFIX: &str = "whimp-";
    pub const ID: &str = "Whimp-Id";
    pub const ROUTE: &str = "Whimp-Route";
    pub const RECEIVED_AT: &str = "Whimp-Received-At";
    pub const REMOTE_ADDR: &str = "Whimp-Remote-Addr";
    pub const ORIGINAL_URL: &str = "Whimp-Original-Url";
    pub const PROTO: &str = "Whimp-Proto";
}

/// What the accept path needs, shared by every connection.
pub struct Ingress {
    pub routes: Arc<Current>,
    pub spool: Spool,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
}

/// Seconds a sender is told to wait when the spool cannot store.
const RETRY_AFTER_SECS: &str = "30";

impl Ingress {
    pub async fn handle(&self, peer: Peer, req: Request<Incoming>) -> Resp {
        let table = self.routes.get();
        let Some(route) = table.by_path(req.uri().path()).cloned() else {
            table.count_unknown();
            tracing::debug!(method = %req.method(), remote = %peer.remote, "no route for this path");
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        drop(table);
        let answer = self.accept(&route, peer, req).await;
        route.count(answer.status().as_u16());
        answer
    }

    async fn accept(&self, route: &Route, peer: Peer, req: Request<Incoming>) -> Resp {
        if !route.allows_method(req.method()) {
            let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            if let Some(methods) = &route.methods {
                let allow = methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    resp.headers_mut().insert(header::ALLOW, v);
                }
            }
            return resp;
        }
        if !route.allows_source(peer.remote.ip()) {
            tracing::info!(route = %route.name, remote = %peer.remote, "source not in allow_from; refused");
            return plain(StatusCode::FORBIDDEN, "forbidden\n");
        }
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > self.max_body_bytes) {
            return too_large(self.max_body_bytes);
        }
        let (parts, body) = req.into_parts();
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let body = match tokio::time::timeout(
            self.body_timeout,
            Limited::new(body, limit).collect(),
        )
        .await
        {
            Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "body not received in time\n"),
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return too_large(self.max_body_bytes)
            }
            Ok(Err(_)) => return plain(StatusCode::BAD_REQUEST, "body could not be read\n"),
            Ok(Ok(collected)) => collected.to_bytes(),
        };

        let id = Spool::new_id();
        let file = stored_file(&id.to_string(), route, peer, &parts, &body);
        let copies = u8::try_from(route.backends.len()).unwrap_or(u8::MAX);
        if let Err(e) = self.spool.enqueue(id, copies, file).await {
            tracing::error!(route = %route.name, error = %e, "could not store a request; answered 503");
            let mut resp = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the request now; retry later\n",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            return resp;
        }
        tracing::debug!(id = %id, route = %route.name, bytes = body.len(), "stored");
        let mut resp = Response::new(Full::new(route.body.clone()));
        *resp.status_mut() = StatusCode::from_u16(route.status).unwrap_or(StatusCode::OK);
        if let Some(ct) = route
            .content_type
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        resp
    }
}

/// The stored form of a request: request line, the received header fields (framing fields
/// replaced by one `Content-Length`), whimp's metadata, blank line, body.
fn stored_file(
    id: &str,
    route: &Route,
    peer: Peer,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Vec<u8> {
    let proto = if peer.tls { "https" } else { "http" };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| peer.local.to_string());
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let original_url = format!("{proto}://{host}{target}");
    let received_at = server::cli::rfc3339(spool::now_ms());
    let remote = peer.remote.to_string();

    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(parts.headers.len() + 7);
    if parts.uri.authority().is_some() && !parts.headers.contains_key(header::HOST) {
        // HTTP/2 carries the host in :authority; keep it as Host so the file reads as HTTP/1.1.
        headers.push(("Host", host.as_bytes()));
    }
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "content-length" || n == "transfer-encoding" || n.starts_with(meta::PREFIX) {
            continue;
        }
        headers.push((n, value.as_bytes()));
    }
    headers.push((meta::ID, id.as_bytes()));
    headers.push((meta::ROUTE, route.name.as_bytes()));
    headers.push((meta::RECEIVED_AT, received_at.as_bytes()));
    headers.push((meta::REMOTE_ADDR, remote.as_bytes()));
    headers.push((meta::PROTO, proto.as_bytes()));
    headers.push((meta::ORIGINAL_URL, original_url.as_bytes()));
    let mut out = Vec::with_capacity(256 + body.len());
    httpmsg::write_into(&mut out, parts.method.as_str(), target, headers, body);
    out
}

fn too_large(limit: u64) -> Resp {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {limit} bytes\n"),
    )
}

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(text.into()));
    *resp.status_mut() = status;
    resp
}
