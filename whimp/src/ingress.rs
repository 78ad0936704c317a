//! The accept path: match the route, check method, source and size, read the body within its
//! deadline, store the request durably, and only then answer the route's status.
//!
//! Every refusal (404, 405, 403, 413, 408, 400, 503) happens before anything reaches the spool,
//! or, for 503, because the spool refused it; so a refused request leaves no trace. The stored
//! file is the request as received plus whimp's metadata (see [`crate::stored`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daemon::edge::{self, BodyError};
use daemon::kit;
use daemon::listen::{Peer, Resp};
use daemon::Current;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use spool::Spool;
use storage::Storage;

use crate::routes::{Route, Table};
use crate::stored::{self, Meta};

/// One `could not store` line a second at most, `more` saying how many 503s it stands for.
static STORE_FAILED: telemetry::Throttle =
    telemetry::Throttle::new(std::time::Duration::from_secs(1));

/// What the accept path needs, shared by every connection.
pub struct Ingress {
    pub routes: Arc<Current<Table>>,
    pub spool: kit::Storage,
    pub max_body_bytes: u64,
    pub body_timeout: Duration,
}

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
        let (parts, body) = req.into_parts();
        let body =
            match edge::read_body(&parts.headers, body, self.max_body_bytes, self.body_timeout)
                .await
            {
                Ok(body) => body,
                Err(BodyError::TooLarge) => return too_large(self.max_body_bytes),
                Err(BodyError::TimedOut) => {
                    return plain(StatusCode::REQUEST_TIMEOUT, "body not received in time\n")
                }
                Err(BodyError::Unreadable) => {
                    return plain(StatusCode::BAD_REQUEST, "body could not be read\n")
                }
            };

        let id = Spool::new_id();
        let meta = Meta::received(id.to_string(), &route.name, peer, &parts);
        let file = stored::encode(&parts, &meta, &body);
        let copies = u8::try_from(route.backends.len()).unwrap_or(u8::MAX);
        if let Err(e) = self.spool.enqueue(id, copies, file).await {
            if let Some(more) = STORE_FAILED.check() {
                tracing::error!(route = %route.name, error = %e, more, "could not store a request; answered 503");
            }
            return edge::retry_later(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the request now; retry later\n",
            ));
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
