//! `GET /v1/messages?target=&state=&host=&since=&cursor=&limit=`: deliveries and raw messages,
//! oldest first, a page at a time, each as the status API shows it without its attempts.
//!
//! Bounded work per page, on either backend through the storage seam: the messages are listed
//! with their states (`Storage::list`: names and states, never a body), then looked at in key
//! order after the cursor; the state and `since` (the arrival time, which the key holds) are
//! judged from the listing alone, `target` and `host` from the message's head
//! (`Storage::message`, one at a time, cut to the head's size). A page stops at `limit` matches
//! or after [`MAX_SCAN`] heads read, and its `nextCursor` continues after the last message
//! looked at, so a rare filter costs several short pages rather than one long request.

use http::StatusCode;
use serde_json::{json, Value};
use spool::{Key, State};
use storage::Storage as _;

use super::api::Refusal;
use super::control::parse_since;
use super::model::Invalid;
use super::Events;
use crate::stored::{self, meta};

/// A page, unless `?limit=` says otherwise (1 to [`MAX_PAGE`]).
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// The most heads one page reads.
pub const MAX_SCAN: usize = 10_000;

/// What a listing asks for.
#[derive(Debug, Default)]
struct Query {
    target: Option<String>,
    host: Option<String>,
    state: Option<State>,
    since_ms: u64,
    cursor: String,
    limit: usize,
}

impl Events {
    /// Answers `GET /v1/messages` (already authorized).
    pub(crate) async fn list_messages(&self, query: &str) -> Result<Value, Refusal> {
        let q = parse(query)?;
        self.page(&q).await.map_err(|e| {
            tracing::error!(error = %e, "cannot list the spool; answered 503");
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot list the spool now; retry later"}),
            )
        })
    }

    async fn page(&self, q: &Query) -> Result<Value, storage::Unavailable> {
        let mut data = Vec::new();
        let mut scanned = 0;
        let mut last = None;
        let mut more = false;
        for listed in self.storage.list().await? {
            let key = listed.key.to_string();
            if key.as_str() <= q.cursor.as_str()
                || listed.key.id().timestamp_ms() < q.since_ms
                || q.state.is_some_and(|s| s != listed.state)
            {
                continue;
            }
            if data.len() == q.limit || scanned == MAX_SCAN {
                more = true;
                break;
            }
            last = Some(key.clone());
            scanned += 1;
            // Gone since it was listed (pruned, deleted): not shown.
            let Some(head) = self.head(listed.key).await? else {
                continue;
            };
            let target = stored::meta_of(&head, meta::TARGET);
            if q.target.is_some() && q.target != target {
                continue;
            }
            if q.host.is_some() && q.host != stored::host_of(&head) {
                continue;
            }
            let (method, url) = stored::request_line(&head).unwrap_or_default();
            data.push(json!({
                "id": key,
                "state": listed.state.as_str(),
                "method": method,
                "url": delivery::origin(&url),
                "attempt_count": listed.attempts,
                "next_attempt_at": listed.next_attempt_ms.map(telemetry::rfc3339),
                "last_error": listed.last_error,
                "targetId": target,
                "eventId": stored::meta_of(&head, meta::EVENT),
            }));
        }
        let next = if more { last } else { None };
        Ok(json!({"data": data, "nextCursor": next}))
    }

    /// The head of message `key` (its first bytes, up to the largest head stored), in any
    /// state; `None` if there is no such message.
    pub(super) async fn head(&self, key: Key) -> Result<Option<Vec<u8>>, storage::Unavailable> {
        self.storage
            .message(key, stored::READ_LIMITS.max_header_bytes)
            .await
    }
}

fn parse(query: &str) -> Result<Query, Refusal> {
    let mut q = Query {
        limit: PAGE,
        ..Query::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "target" => q.target = Some(value.to_owned()),
            "host" => q.host = Some(value.to_ascii_lowercase()),
            "state" => {
                q.state = Some(match value {
                    "queued" => State::Queued,
                    "retrying" => State::Retrying,
                    "delivered" => State::Delivered,
                    "dead" => State::Dead,
                    _ => {
                        return Err(Refusal::bad(Invalid::new(
                            "state",
                            "must be queued, retrying, delivered or dead",
                        )))
                    }
                })
            }
            "since" => q.since_ms = parse_since(value)?,
            "cursor" => q.cursor = value.to_owned(),
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Refusal::bad(Invalid::new(
                            "limit",
                            format!("must be a number from 1 to {MAX_PAGE}"),
                        ))
                    })?
            }
            other => {
                return Err(Refusal::bad(Invalid::new(
                    other,
                    "unknown query parameter; known: target, host, state, since, cursor, limit",
                )))
            }
        }
    }
    Ok(q)
}
