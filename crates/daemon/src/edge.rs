//! What both daemons' request handlers do the same way at the HTTP edge: read a request's body
//! within a size limit and a deadline, and answer `503` with `Retry-After` when the spool cannot
//! store.
//!
//! The body limit is applied twice, both cheaply: an announced `Content-Length` over it is
//! refused before anything is read, and a body that grows past it (chunked, or lying about its
//! length) is refused as soon as it does, so a hostile sender costs no more than the limit.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::listen::Resp;

/// Seconds a sender is told to wait when the spool cannot store.
pub const RETRY_AFTER_SECS: &str = "30";

/// Why a body was not read; each daemon words its own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Announced or grown past the limit: `413`.
    TooLarge,
    /// Not received within the deadline: `408`.
    TimedOut,
    /// The connection failed or the framing was broken: `400`.
    Unreadable,
}

/// Reads the body of a request whose header fields are `headers`: at most `limit` bytes, within
/// `deadline` from now.
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: u64,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `resp` (a body saying the spool cannot store now) as a `503` that tells the sender when to
/// try again, so that a provider retries rather than gives up.
pub fn retry_later(mut resp: Resp) -> Resp {
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    resp
}
