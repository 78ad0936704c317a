//! The REST API of the event layer, beside whomp's submission API and behind the same bearer
//! tokens: `/v1/webhooks/{targets,filters,subscriptions}` with `GET` (a page of the list, by
//! id, `?limit=` and `?cursor=`), `GET /<id>`, `POST`, `PATCH /<id>`, `DELETE /<id>`; and
//! `POST /v1/events` ([`super::fanout`]).
//!
//! Every refusal is JSON `{"error", "field"}`: `400` for a field that is wrong in itself, `422`
//! for a target URL pre-flight refuses (with its `rule`; it is never stored) or a subscription
//! naming a target or filter that does not exist, `404`, `409` for deleting what a
//! subscription still uses, `503` when the records cannot be written.

use std::time::Duration;

use daemon::edge;
use daemon::listen::Resp;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Map, Value};
use storage::RecordError;

use super::model::{self, Filter, Invalid, Subscription, Target};
use super::{ns, Events};
use crate::live::Live;
use crate::submit::{json_response, not_allowed};

/// The largest document a caller may send to create or change one.
const MAX_DOCUMENT_BYTES: u64 = 64 * 1024;
/// How long a caller may take to send a body.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A page of a list, unless `?limit=` says otherwise (at most [`MAX_PAGE`]).
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The three kinds of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Target,
    Filter,
    Subscription,
}

impl Kind {
    fn of(segment: &str) -> Option<Kind> {
        match segment {
            "targets" => Some(Kind::Target),
            "filters" => Some(Kind::Filter),
            "subscriptions" => Some(Kind::Subscription),
            _ => None,
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Kind::Target => ns::TARGETS,
            Kind::Filter => ns::FILTERS,
            Kind::Subscription => ns::SUBSCRIPTIONS,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Target => "target",
            Kind::Filter => "filter",
            Kind::Subscription => "subscription",
        }
    }
}

/// A refusal: its status and JSON body.
pub(crate) struct Refusal(pub StatusCode, pub Value);

impl Refusal {
    pub(super) fn field(status: StatusCode, invalid: Invalid) -> Refusal {
        Refusal(
            status,
            json!({"error": format!("{}: {}", invalid.field, invalid.error), "field": invalid.field}),
        )
    }

    pub(super) fn bad(invalid: Invalid) -> Refusal {
        Refusal::field(StatusCode::BAD_REQUEST, invalid)
    }

    fn not_found(kind: Kind, id: &str) -> Refusal {
        let shown: String = id.chars().take(100).collect();
        Refusal(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no {} {shown}", kind.noun())}),
        )
    }

    pub(super) fn unavailable(e: &RecordError) -> Refusal {
        tracing::error!(error = %e, "could not write an event-layer record; answered 503");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "cannot store the change now; retry later"}),
        )
    }

    pub(crate) fn into_response(self) -> Resp {
        let resp = json_response(self.0, &self.1);
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            edge::retry_later(resp)
        } else {
            resp
        }
    }
}

type Answer = Result<(StatusCode, Value), Refusal>;

impl Events {
    /// Answers a request under `/v1/webhooks/` or to `/v1/events` (already authorized).
    pub async fn handle(&self, live: &Live, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let method = req.method().clone();
        if path == "/v1/events" {
            return if method == Method::POST {
                self.post_event(live, req).await
            } else {
                not_allowed("POST")
            };
        }
        let rest = path.strip_prefix("/v1/webhooks/").unwrap_or_default();
        let mut parts = rest.splitn(3, '/');
        let (Some(kind), id, action) = (
            parts.next().and_then(Kind::of),
            parts.next().filter(|s| !s.is_empty()),
            parts.next(),
        ) else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        };
        if let (Kind::Target, Some(id), Some(action)) = (kind, id, action) {
            return self.target_action(id, action, &method, &query).await;
        }
        if action.is_some() {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        let answer = match (id, &method) {
            (None, &Method::GET) => self.list(kind, &query),
            (None, &Method::POST) => match document(req).await {
                Ok(body) => self.create(kind, live, body).await,
                Err(r) => Err(r),
            },
            (None, _) => return not_allowed("GET, POST"),
            (Some(id), &Method::GET) => self.one(kind, id),
            (Some(id), &Method::PATCH) => match document(req).await {
                Ok(body) => self.patch(kind, live, id, body).await,
                Err(r) => Err(r),
            },
            (Some(id), &Method::DELETE) => self.delete(kind, id).await,
            (Some(_), _) => return not_allowed("GET, PATCH, DELETE"),
        };
        match answer {
            Ok((status, body)) => json_response(status, &body),
            Err(refusal) => refusal.into_response(),
        }
    }

    /// `POST /v1/webhooks/targets/<id>/{pause,resume,recover}` ([`super::control`]).
    async fn target_action(&self, id: &str, action: &str, method: &Method, query: &str) -> Resp {
        if !matches!(action, "pause" | "resume" | "recover") {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        if method != Method::POST {
            return not_allowed("POST");
        }
        let answer = match action {
            "recover" => match super::control::since_ms(query) {
                Ok(since) => self.recover(id, since).await,
                Err(r) => Err(r),
            },
            paused => self.set_paused(id, paused == "pause").await,
        };
        match answer {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(refusal) => refusal.into_response(),
        }
    }

    fn list(&self, kind: Kind, query: &str) -> Answer {
        let mut limit = PAGE;
        let mut cursor = String::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "limit" => {
                    limit = value
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
                "cursor" => cursor = value.to_owned(),
                other => {
                    return Err(Refusal::bad(Invalid::new(
                        other,
                        "unknown query parameter; known: limit, cursor",
                    )))
                }
            }
        }
        let index = self.read();
        // Ids are ULIDs, so a page is the next `limit` ids after the cursor, oldest first.
        let range = (
            std::ops::Bound::Excluded(cursor.as_str()),
            std::ops::Bound::Unbounded,
        );
        let page: Vec<(String, Value)> = match kind {
            Kind::Target => index
                .targets
                .range::<str, _>(range)
                .take(limit + 1)
                .map(|(k, t)| (k.clone(), t.shown()))
                .collect(),
            Kind::Filter => index
                .filters
                .range::<str, _>(range)
                .take(limit + 1)
                .map(|(k, f)| (k.clone(), json!(f)))
                .collect(),
            Kind::Subscription => index
                .subscriptions
                .range::<str, _>(range)
                .take(limit + 1)
                .map(|(k, s)| (k.clone(), json!(s)))
                .collect(),
        };
        let more = page.len() > limit;
        let data: Vec<Value> = page.iter().take(limit).map(|(_, v)| v.clone()).collect();
        let next = if more {
            page.get(limit - 1).map(|(k, _)| Value::from(k.as_str()))
        } else {
            None
        };
        Ok((
            StatusCode::OK,
            json!({"data": data, "nextCursor": next.unwrap_or(Value::Null)}),
        ))
    }

    fn one(&self, kind: Kind, id: &str) -> Answer {
        let index = self.read();
        let found = match kind {
            Kind::Target => index.targets.get(id).map(Target::shown),
            Kind::Filter => index.filters.get(id).map(|f| json!(f)),
            Kind::Subscription => index.subscriptions.get(id).map(|s| json!(s)),
        };
        found
            .map(|v| (StatusCode::OK, v))
            .ok_or_else(|| Refusal::not_found(kind, id))
    }

    async fn create(&self, kind: Kind, live: &Live, body: Map<String, Value>) -> Answer {
        let id = ulid::Ulid::new().to_string();
        let now = telemetry::rfc3339(spool::now_ms());
        let _writing = self.writing.lock().await;
        match kind {
            Kind::Target => {
                let url = required_str(&body, "url")?;
                let mut target = Target {
                    id: id.clone(),
                    url: vet_url(live, &url).await?,
                    created_at: now.clone(),
                    updated_at: now,
                    ..Default::default()
                };
                if let Some(notify_url) = vet_notify_url(live, &body).await? {
                    target.notify_url = notify_url;
                }
                target.apply(&body).map_err(Refusal::bad)?;
                if target.secrets.is_empty() {
                    target.secrets.push(model::new_secret());
                }
                self.save(ns::TARGETS, &id, &target)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let mut shown = target.shown();
                // The one answer that shows the secrets: the caller needs them for its receiver.
                shown["secrets"] = json!(target.secrets);
                self.write().targets.insert(id, target);
                Ok((StatusCode::CREATED, shown))
            }
            Kind::Filter => {
                let mut filter = Filter {
                    id: id.clone(),
                    events: Vec::new(),
                    created_at: now.clone(),
                    updated_at: now,
                };
                required_str_or_list(&body, "events")?;
                filter.apply(&body).map_err(Refusal::bad)?;
                self.save(ns::FILTERS, &id, &filter)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let shown = json!(filter);
                self.write().filters.insert(id, filter);
                Ok((StatusCode::CREATED, shown))
            }
            Kind::Subscription => {
                let mut sub = Subscription {
                    id: id.clone(),
                    target_id: required_str(&body, "targetId")?,
                    filter_id: required_str(&body, "filterId")?,
                    active: true,
                    created_at: now.clone(),
                    updated_at: now,
                };
                self.apply_subscription(&mut sub, &body)?;
                self.save(ns::SUBSCRIPTIONS, &id, &sub)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let shown = json!(sub);
                self.write().subscriptions.insert(id, sub);
                Ok((StatusCode::CREATED, shown))
            }
        }
    }

    async fn patch(&self, kind: Kind, live: &Live, id: &str, body: Map<String, Value>) -> Answer {
        let now = telemetry::rfc3339(spool::now_ms());
        let _writing = self.writing.lock().await;
        match kind {
            Kind::Target => {
                let mut target = self
                    .read()
                    .targets
                    .get(id)
                    .cloned()
                    .ok_or_else(|| Refusal::not_found(kind, id))?;
                if body.contains_key("url") {
                    let url = required_str(&body, "url")?;
                    target.url = vet_url(live, &url).await?;
                }
                if let Some(notify_url) = vet_notify_url(live, &body).await? {
                    target.notify_url = notify_url;
                }
                target.apply(&body).map_err(Refusal::bad)?;
                target.updated_at = now;
                self.save(ns::TARGETS, id, &target)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let shown = target.shown();
                self.write().targets.insert(id.to_owned(), target);
                Ok((StatusCode::OK, shown))
            }
            Kind::Filter => {
                let mut filter = self
                    .read()
                    .filters
                    .get(id)
                    .cloned()
                    .ok_or_else(|| Refusal::not_found(kind, id))?;
                filter.apply(&body).map_err(Refusal::bad)?;
                filter.updated_at = now;
                self.save(ns::FILTERS, id, &filter)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let shown = json!(filter);
                self.write().filters.insert(id.to_owned(), filter);
                Ok((StatusCode::OK, shown))
            }
            Kind::Subscription => {
                let mut sub = self
                    .read()
                    .subscriptions
                    .get(id)
                    .cloned()
                    .ok_or_else(|| Refusal::not_found(kind, id))?;
                for field in ["targetId", "filterId"] {
                    if body.contains_key(field) {
                        let value = required_str(&body, field)?;
                        if field == "targetId" {
                            sub.target_id = value;
                        } else {
                            sub.filter_id = value;
                        }
                    }
                }
                self.apply_subscription(&mut sub, &body)?;
                sub.updated_at = now;
                self.save(ns::SUBSCRIPTIONS, id, &sub)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                let shown = json!(sub);
                self.write().subscriptions.insert(id.to_owned(), sub);
                Ok((StatusCode::OK, shown))
            }
        }
    }

    /// Checks a subscription's fields and that what it names exists (under the write lock).
    fn apply_subscription(
        &self,
        sub: &mut Subscription,
        body: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        model::only(body, &["targetId", "filterId", "active"]).map_err(Refusal::bad)?;
        if let Some(v) = body.get("active") {
            sub.active = v
                .as_bool()
                .ok_or_else(|| Refusal::bad(Invalid::new("active", "must be true or false")))?;
        }
        let index = self.read();
        let unknown = |field: &str, noun: &str, id: &str| {
            let shown: String = id.chars().take(100).collect();
            Refusal::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                Invalid::new(field, format!("no {noun} {shown}")),
            )
        };
        if !index.targets.contains_key(&sub.target_id) {
            return Err(unknown("targetId", "target", &sub.target_id));
        }
        if !index.filters.contains_key(&sub.filter_id) {
            return Err(unknown("filterId", "filter", &sub.filter_id));
        }
        Ok(())
    }

    async fn delete(&self, kind: Kind, id: &str) -> Answer {
        let _writing = self.writing.lock().await;
        {
            let index = self.read();
            let exists = match kind {
                Kind::Target => index.targets.contains_key(id),
                Kind::Filter => index.filters.contains_key(id),
                Kind::Subscription => index.subscriptions.contains_key(id),
            };
            if !exists {
                return Err(Refusal::not_found(kind, id));
            }
            let users = index.users_of(id);
            if kind != Kind::Subscription && !users.is_empty() {
                return Err(Refusal(
                    StatusCode::CONFLICT,
                    json!({"error": format!(
                        "{} {id} is used by subscriptions {}; delete them first",
                        kind.noun(),
                        users.join(", ")
                    )}),
                ));
            }
        }
        self.remove(kind.namespace(), id)
            .await
            .map_err(|e| Refusal::unavailable(&e))?;
        let mut index = self.write();
        match kind {
            Kind::Target => drop(index.targets.remove(id)),
            Kind::Filter => drop(index.filters.remove(id)),
            Kind::Subscription => drop(index.subscriptions.remove(id)),
        }
        Ok((StatusCode::OK, json!({"id": id, "deleted": true})))
    }
}

/// Reads a JSON object body of at most [`MAX_DOCUMENT_BYTES`].
async fn document(req: Request<Incoming>) -> Result<Map<String, Value>, Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = read(&parts.headers, body, MAX_DOCUMENT_BYTES).await?;
    object(&bytes)
}

/// Reads a request body under `limit`.
pub(super) async fn read(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: u64,
) -> Result<bytes::Bytes, Refusal> {
    match edge::read_body(headers, body, limit, BODY_TIMEOUT).await {
        Ok(bytes) => Ok(bytes),
        Err(edge::BodyError::TooLarge) => Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("body larger than the limit of {limit} bytes")}),
        )),
        Err(edge::BodyError::TimedOut) => Err(Refusal(
            StatusCode::REQUEST_TIMEOUT,
            json!({"error": "body not received in time"}),
        )),
        Err(edge::BodyError::Unreadable) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            json!({"error": "body could not be read"}),
        )),
    }
}

/// A body that must be one JSON object.
pub(super) fn object(bytes: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            json!({"error": "body must be a JSON object"}),
        )),
        Err(e) => Err(Refusal(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("body is not JSON: {e}")}),
        )),
    }
}

/// A string field that must be there.
pub(super) fn required_str(body: &Map<String, Value>, field: &str) -> Result<String, Refusal> {
    match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(Refusal::bad(Invalid::new(
            field,
            "must be a non-empty string",
        ))),
        None => Err(Refusal::bad(Invalid::new(field, "is required"))),
    }
}

fn required_str_or_list(body: &Map<String, Value>, field: &str) -> Result<(), Refusal> {
    if body.contains_key(field) {
        Ok(())
    } else {
        Err(Refusal::bad(Invalid::new(field, "is required")))
    }
}

/// Pre-flights a target URL as a `POST` with no fields: the normalised URL, or the `422` that
/// names the rule (nothing is stored).
async fn vet_url(live: &Live, url: &str) -> Result<String, Refusal> {
    vet(live, url, "url").await
}

/// A target's `notifyUrl`, if `body` sets it: a URL pre-flighted as [`vet_url`] does, or
/// `null` (notifications go to the config's `events.notify_url`).
async fn vet_notify_url(
    live: &Live,
    body: &Map<String, Value>,
) -> Result<Option<Option<String>>, Refusal> {
    match body.get("notifyUrl") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(url)) if !url.is_empty() => {
            Ok(Some(Some(vet(live, url, "notifyUrl").await?)))
        }
        Some(_) => Err(Refusal::bad(Invalid::new(
            "notifyUrl",
            "must be a URL or null",
        ))),
    }
}

/// Pre-flights URL `url`, the value of `field`, as a `POST` with no fields.
pub(crate) async fn vet(live: &Live, url: &str, field: &str) -> Result<String, Refusal> {
    match live.guard.preflight("POST", url, &[]).await {
        Ok(verdict) => Ok(verdict.target.url()),
        Err(rejection) => Err(Refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({
                "error": format!("{field}: {}", rejection.message),
                "field": field,
                "rule": rejection.rule.as_str(),
            }),
        )),
    }
}
