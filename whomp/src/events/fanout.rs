//! `POST /v1/events`: `{"id"?, "type", "payload"}` (or `"payload_base64"` with
//! `"content_type"`) becomes one whomp message per active subscription whose filter matches
//! the type, each a `POST` of the payload to the subscription's target with the target's extra
//! header fields, stored in the spool like a raw submission (the target URL is pre-flighted
//! again at every attempt, as any message's). The answer, `202 {"id", "deliveries"}`, comes
//! once every delivery is durable.
//!
//! De-duplication: an event posted with an `id` is remembered with its answer (a record,
//! durable before the `202`) for `spool.retention`; the same id again fans out nothing and gets
//! the first answer (with `Idempotent-Replayed: true`), also after a restart. Posts of one id
//! at the same moment, to one node or several (the claim is a record created atomically in
//! the shared records, [`ns::CLAIMS`]): one fans out, the others wait for its answer and
//! replay it (a `409`, to be retried, if it takes longer than [`WAIT`]). Should whomp die
//! between storing the deliveries and the record, the producer's retry (it got no answer) fans
//! out again once the claim has expired ([`STALE`]): a duplicate delivery, never a lost one.
//! Answers are kept for `spool.retention` (in the cluster, the records expire by themselves).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use daemon::listen::Resp;
use http::{HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Map, Value};
use storage::{Records, Storage as _};

use super::api::{self, Refusal};
use super::model::{self, Invalid};
use super::{ns, Events, LoadError};
use crate::live::Live;
use crate::stored::{self, Meta};
use crate::submit::json_response;

/// Room for the rest of an event beyond its payload.
const ENVELOPE_ALLOWANCE: u64 = 64 * 1024;

/// What the event layer remembers of one event posted with an id.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Seen {
    at_ms: u64,
    answer: Value,
}

/// The events answered within `retention`, from their records; older records are removed.
pub(super) async fn load_seen(
    records: &impl Records,
    retention: Duration,
) -> Result<HashMap<String, (u64, Value)>, LoadError> {
    let all: std::collections::BTreeMap<String, Seen> =
        super::store::read_all(records, ns::EVENTS).await?;
    let horizon = spool::now_ms().saturating_sub(retention.as_millis() as u64);
    let mut seen = HashMap::new();
    for (id, event) in all {
        if event.at_ms < horizon {
            // Forgetting is not urgent: a failure is tried again at the next start.
            let _ = records.delete(ns::EVENTS, &id).await;
        } else {
            seen.insert(id, (event.at_ms, event.answer));
        }
    }
    Ok(seen)
}

/// How long a post of an event id that another post (on this node or another) is accepting
/// waits for that one's answer; then it is a `409`, to be retried.
const WAIT: Duration = Duration::from_secs(10);
/// How often it looks for that answer meanwhile.
const POLL: Duration = Duration::from_millis(50);
/// How long a shared claim lives: one this old is of a node that died while accepting its
/// event, and expires so that a retry may fan it out.
const STALE: Duration = Duration::from_secs(60);

/// The right to fan an event id out: on this node, its place in the pending set, and when the
/// records are shared, its claim record (`event-claims/<id>`). Its place goes when the post is
/// over, however it ends; the claim goes then if no answer was stored (so that a retry may fan
/// out at once), else it expires by itself (the answer is what later posts find).
struct Pending<'a> {
    events: &'a Events,
    id: String,
    /// The shared claim is to be removed: it was made, and no answer is stored yet.
    release: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let events = self.events;
        events
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        if self.release {
            let (records, id) = (events.records.clone(), self.id.clone());
            tokio::spawn(async move {
                if let Err(e) = records.delete(ns::CLAIMS, &id).await {
                    // It expires after STALE.
                    tracing::warn!(event = id, error = %e, "cannot remove an event claim");
                }
            });
        }
    }
}

/// What [`Events::claim`] found.
enum Claim<'a> {
    /// This post fans the event out.
    Ours(Pending<'a>),
    /// It was answered already (by this node or another): replay the answer.
    Answered(Value),
}

/// An event as posted, checked.
struct Event {
    id: String,
    /// Whether the caller named it (and so may post it again).
    named: bool,
    kind: String,
    content_type: String,
    body: Vec<u8>,
}

impl Events {
    pub(super) async fn post_event(&self, _live: &Live, req: Request<Incoming>) -> Resp {
        match self.accept(req).await {
            Ok(resp) => resp,
            Err(refusal) => refusal.into_response(),
        }
    }

    async fn accept(&self, req: Request<Incoming>) -> Result<Resp, Refusal> {
        let (parts, body) = req.into_parts();
        let limit = (self.max_body_bytes / 3 + 1)
            .saturating_mul(4)
            .saturating_add(ENVELOPE_ALLOWANCE);
        let bytes = api::read(&parts.headers, body, limit).await?;
        let event = parse(&api::object(&bytes)?, self.max_body_bytes)?;
        let mut claim = if event.named {
            match self.claim(&event.id).await? {
                Claim::Ours(guard) => Some(guard),
                Claim::Answered(answer) => {
                    let mut resp = json_response(StatusCode::ACCEPTED, &answer);
                    resp.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return Ok(resp);
                }
            }
        } else {
            None
        };

        // Targets and subscriptions other nodes made are read in first (shared records only).
        self.refresh().await.map_err(|e| {
            tracing::error!(error = %e, "cannot read the event records; answered 503");
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot read the event records now; retry later"}),
            )
        })?;
        // Matching reads memory only; the files are written after the lock is let go.
        let files: Vec<(ulid::Ulid, String, String, Vec<u8>)> = {
            let index = self.read();
            index
                .matching(&event.kind)
                .into_iter()
                .map(|(sub, target)| {
                    let id = spool::Spool::new_id();
                    let mut headers: Vec<(String, Vec<u8>)> = vec![(
                        "Content-Type".into(),
                        event.content_type.clone().into_bytes(),
                    )];
                    headers.extend(
                        target
                            .headers
                            .iter()
                            .map(|(n, v)| (n.clone(), v.clone().into_bytes())),
                    );
                    let message = httpmsg::Message {
                        method: "POST".into(),
                        target: target.url.clone(),
                        headers,
                        body: event.body.clone(),
                    };
                    let file = stored::encode(
                        &message,
                        &Meta {
                            id: id.to_string(),
                            received_at: telemetry::rfc3339(spool::now_ms()),
                            signing_key: None,
                            idempotency: None,
                            target: Some(target.id.clone()),
                            event: Some(event.id.clone()),
                            ..Default::default()
                        },
                    );
                    (id, sub.id.clone(), target.id.clone(), file)
                })
                .collect()
        };
        // Enqueued side by side, so one group flush makes them all durable.
        let mut stores = tokio::task::JoinSet::new();
        for (id, _, _, file) in &files {
            let spool = self.storage.clone();
            let (id, file) = (*id, file.clone());
            stores.spawn(async move { spool.enqueue(id, 1, file).await });
        }
        let mut failed = None;
        while let Some(result) = stores.join_next().await {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failed = Some(e.to_string()),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(error) = failed {
            tracing::error!(event = %event.id, error, "could not store an event's deliveries; answered 503");
            return Err(Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot store the event's deliveries now; retry later"}),
            ));
        }
        let deliveries: Vec<Value> = files
            .iter()
            .map(|(id, sub, target, _)| {
                json!({
                    "id": id.to_string(),
                    "subscriptionId": sub,
                    "targetId": target,
                    "status_url": format!("/v1/messages/{id}"),
                })
            })
            .collect();
        let answer = json!({"id": event.id, "type": event.kind, "deliveries": deliveries});
        if event.named {
            let at_ms = spool::now_ms();
            let seen = Seen {
                at_ms,
                answer: answer.clone(),
            };
            if let Err(e) = self.save_answer(&event.id, &seen).await {
                return Err(Refusal::unavailable(&e));
            }
            if let Some(claim) = claim.as_mut() {
                claim.release = false;
            }
            let mut all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let horizon = at_ms.saturating_sub(self.retention.as_millis() as u64);
            all.retain(|_, (at, _)| *at >= horizon);
            all.insert(event.id.clone(), (at_ms, answer.clone()));
        }
        tracing::debug!(event = %event.id, deliveries = files.len(), "event accepted");
        Ok(json_response(StatusCode::ACCEPTED, &answer))
    }

    /// Claims event `id` for this post, atomically over every node sharing the records: of
    /// several posts of one id at once, one fans out and the others wait (at most [`WAIT`]) for
    /// its answer and replay it.
    async fn claim(&self, id: &str) -> Result<Claim<'_>, Refusal> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(answer) = self.first_answer(id).await {
                return Ok(Claim::Answered(answer));
            }
            let inserted = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_owned());
            if inserted {
                // Made before the shared claim, so that the pending set is cleared however
                // this post ends.
                let mut ours = Pending {
                    events: self,
                    id: id.to_owned(),
                    release: false,
                };
                let won = !self.shared || self.claim_shared(id).await?;
                ours.release = won && self.shared;
                if won {
                    // It may have been answered between the look and the claim.
                    if let Some(answer) = self.first_answer(id).await {
                        return Ok(Claim::Answered(answer));
                    }
                    return Ok(Claim::Ours(ours));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Refusal(
                    StatusCode::CONFLICT,
                    json!({"error": format!("event {id} is being accepted right now; retry")}),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates the shared claim of event `id`; whether this node got it. A claim expires after
    /// [`STALE`] (or the retention, if shorter).
    async fn claim_shared(&self, id: &str) -> Result<bool, Refusal> {
        let value = spool::now_ms().to_string().into_bytes();
        // Never longer than the answer it stands for is kept.
        let ttl = STALE.min(self.retention);
        self.records
            .create_expiring(ns::CLAIMS, id, value, ttl)
            .await
            .map_err(|e| Refusal::unavailable(&e))
    }

    /// Stores the answer to event `id`, kept for `retention` (the cluster's records expire by
    /// themselves; the maildir's are pruned at the next start). One older than that may still
    /// be there, and is replaced.
    async fn save_answer(&self, id: &str, seen: &Seen) -> Result<(), storage::RecordError> {
        let bytes = serde_json::to_vec(seen).unwrap_or_default();
        let records = &self.records;
        let retention = self.retention;
        if !records
            .create_expiring(ns::EVENTS, id, bytes.clone(), retention)
            .await?
        {
            records.delete(ns::EVENTS, id).await?;
            records
                .create_expiring(ns::EVENTS, id, bytes, retention)
                .await?;
        }
        Ok(())
    }

    /// The answer given to event `id` within `retention`: from memory, or, when the records are
    /// shared, from the record another node wrote.
    async fn first_answer(&self, id: &str) -> Option<Value> {
        let horizon = spool::now_ms().saturating_sub(self.retention.as_millis() as u64);
        let known = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get(id)
                .filter(|(at, _)| *at >= horizon)
                .map(|(_, answer)| answer.clone())
        };
        if known.is_some() || !self.shared {
            return known;
        }
        let bytes = self.records.get(ns::EVENTS, id).await.ok().flatten()?;
        let event: Seen = serde_json::from_slice(&bytes).ok()?;
        (event.at_ms >= horizon).then_some(event.answer)
    }
}

/// Checks an event's fields.
fn parse(body: &Map<String, Value>, max_payload: u64) -> Result<Event, Refusal> {
    model::only(
        body,
        &["id", "type", "payload", "payload_base64", "content_type"],
    )
    .map_err(Refusal::bad)?;
    let (id, named) = match body.get("id") {
        None => (ulid::Ulid::new().to_string(), false),
        Some(Value::String(id)) if storage::check_name(id).is_ok() => (id.clone(), true),
        Some(_) => {
            return Err(Refusal::bad(Invalid::new(
                "id",
                "must be 1 to 128 of A-Z a-z 0-9 - _ . (not starting with .)",
            )))
        }
    };
    let kind = api::required_str(body, "type")?;
    model::check_type(&kind).map_err(|e| Refusal::bad(Invalid::new("type", e)))?;
    let (content_type, payload) = match (body.get("payload"), body.get("payload_base64")) {
        (Some(payload), None) => {
            if body.contains_key("content_type") {
                return Err(Refusal::bad(Invalid::new(
                    "content_type",
                    "goes with payload_base64; a JSON payload is sent as application/json",
                )));
            }
            (
                "application/json".to_owned(),
                serde_json::to_vec(payload).unwrap_or_default(),
            )
        }
        (None, Some(Value::String(encoded))) => {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| {
                    Refusal::bad(Invalid::new(
                        "payload_base64",
                        format!("is not base64: {e}"),
                    ))
                })?;
            let content_type = api::required_str(body, "content_type")?;
            if HeaderValue::from_str(&content_type).is_err() {
                return Err(Refusal::bad(Invalid::new(
                    "content_type",
                    "must be a header value (visible text, no CR or LF)",
                )));
            }
            (content_type, payload)
        }
        (None, Some(_)) => {
            return Err(Refusal::bad(Invalid::new(
                "payload_base64",
                "must be a string",
            )))
        }
        (Some(_), Some(_)) => {
            return Err(Refusal::bad(Invalid::new(
                "payload",
                "give payload or payload_base64, not both",
            )))
        }
        (None, None) => return Err(Refusal::bad(Invalid::new("payload", "is required"))),
    };
    if payload.len() as u64 > max_payload {
        return Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("payload larger than the limit of {max_payload} bytes"), "field": "payload"}),
        ));
    }
    Ok(Event {
        id,
        named,
        kind,
        content_type,
        body: payload,
    })
}
