//! The submission API internal services talk to:
//! - `POST /v1/messages`: a `message/http` or JSON envelope submission, pre-flighted, stored
//!   durably, answered `202 {"id", "status_url"}` only once its file is in `new/`;
//! - `POST /v1/preflight`: the same checks, nothing stored, nothing connected to;
//! - `GET /v1/messages/<id>`: where a message stands, with its attempts;
//! - `POST /v1/messages/<id>/retry`: re-queue a dead message.
//!
//! Every refusal is a JSON object whose `error` says what is wrong and where (`line 3: ...`,
//! `headers[0]: ...`); a pre-flight refusal adds the `rule`. Order of checks: token (401),
//! content type (415), size (413), syntax (400), signing key and idempotency key (400), a
//! repeat of an idempotency key (`202` with the first id, or `422` if the key was used for a
//! different message), pre-flight of a `Whomp-Notify` URL, then of the message (422), store
//! (503). `Whomp-Notify: <url>` asks for a `delivery.dead` notification should the message
//! die (see [`crate::events::notify`]).
//!
//! What the status API shows of a message's URL is its origin (`scheme://host:port`): paths
//! and queries of webhook URLs are often credentials.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use daemon::edge::{self, BodyError};
use daemon::listen::{Peer, Resp};
use daemon::queue::Storage as Store;
use daemon::Current;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use spool::{Key, Spool};
use storage::Storage;
use telemetry::names;

use crate::idempotency::{self, Begin, Fingerprint, Keys, Reservation};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::stored::{self, meta, Idempotency, Meta};

/// One line a second at most for submissions answered 503 because nothing can be stored (the
/// spool or the cluster failing), `more` saying how many it stands for.
static STORE_FAILED: telemetry::Throttle =
    telemetry::Throttle::new(std::time::Duration::from_secs(1));

/// How long a submitter may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Room for the head of a `message/http` submission, beyond the body limit.
const HEAD_ALLOWANCE: u64 = 64 * 1024;

/// Submissions up to this size are parsed where they arrive; larger ones on the blocking pool,
/// so that a few large (or hostile) ones cannot hold every async worker while others wait.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// What the submission listener needs, shared by every connection.
#[derive(Debug)]
pub struct Submissions {
    pub live: Arc<Current<Live>>,
    pub spool: Store,
    pub keys: Arc<Keys>,
    pub events: Arc<crate::events::Events>,
    pub metrics: Metrics,
    /// The largest message body accepted (`limits.max_body_bytes`).
    pub max_body_bytes: u64,
}

/// A refusal: status, outcome label (for submissions) and JSON body.
struct Refusal {
    status: StatusCode,
    outcome: &'static str,
    /// The pre-flight rule that refused, for `422`.
    rule: Option<netguard::Rule>,
    body: Value,
}

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, error: impl std::fmt::Display) -> Refusal {
        Refusal {
            status,
            outcome,
            rule: None,
            body: json!({ "error": error.to_string() }),
        }
    }

    fn invalid(error: impl std::fmt::Display) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, names::SUBMISSION_INVALID, error)
    }

    fn too_large(error: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            names::SUBMISSION_TOO_LARGE,
            error,
        )
    }

    fn into_response(self) -> Resp {
        json_response(self.status, &self.body)
    }
}

/// A submission read and parsed, not yet pre-flighted.
struct Parsed {
    message: httpmsg::Message,
    signing_key: Option<String>,
    /// `Whomp-Notify`: where `delivery.dead` goes should the message die.
    notify: Option<String>,
}

/// A submission that passed every check.
struct Checked {
    message: httpmsg::Message,
    signing_key: Option<String>,
    /// Pre-flighted and normalised.
    notify: Option<String>,
    addresses: Vec<std::net::IpAddr>,
}

impl Submissions {
    pub async fn handle(&self, peer: Peer, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let live = self.live.get();
        if !path.starts_with("/v1/") {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        }
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !live.authorized(authorization) {
            if path == "/v1/messages" {
                self.metrics.submission(names::SUBMISSION_UNAUTHORIZED);
            }
            tracing::info!(remote = %peer.remote, path, "submission without a valid bearer token; refused");
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "a valid bearer token is required (Authorization: Bearer ...)"}),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"whomp\""),
            );
            return resp;
        }
        let caller = match authorization.and_then(|v| v.get(7..)) {
            Some(token) if !live.tokens.is_empty() => idempotency::caller(Some(token)),
            _ => idempotency::caller(None),
        };
        let method = req.method().clone();
        if path == "/v1/events" || path.starts_with("/v1/webhooks/") {
            return self.events.handle(&live, req).await;
        }
        match (path.as_str(), path.strip_prefix("/v1/messages/")) {
            ("/v1/messages", _) if method == Method::POST => self.submit(&live, &caller, req).await,
            ("/v1/preflight", _) if method == Method::POST => self.preflight(&live, req).await,
            ("/v1/messages", _) if method == Method::GET => {
                let query = req.uri().query().unwrap_or_default();
                match self.events.list_messages(query).await {
                    Ok(page) => json_response(StatusCode::OK, &page),
                    Err(refusal) => refusal.into_response(),
                }
            }
            ("/v1/messages", _) => not_allowed("GET, POST"),
            ("/v1/preflight", _) => not_allowed("POST"),
            (_, Some(rest)) => match rest.split_once('/') {
                None if method == Method::GET => self.status(rest).await,
                None => not_allowed("GET"),
                Some((id, "retry")) if method == Method::POST => self.retry(id).await,
                Some((_, "retry")) => not_allowed("POST"),
                Some(_) => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
            },
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }

    async fn submit(&self, live: &Live, caller: &str, req: Request<Incoming>) -> Resp {
        let (outcome, resp) = match self.store(live, caller, req).await {
            Ok(answer) => answer,
            Err(refusal) => {
                if let Some(rule) = refusal.rule {
                    self.metrics.rejected(rule);
                }
                (refusal.outcome, refusal.into_response())
            }
        };
        self.metrics.submission(outcome);
        resp
    }

    async fn store(
        &self,
        live: &Live,
        caller: &str,
        req: Request<Incoming>,
    ) -> Result<(&'static str, Resp), Refusal> {
        let idempotency_key = match req.headers().get("idempotency-key") {
            Some(v) => Some(idempotency::check(v.as_bytes()).map_err(Refusal::invalid)?),
            None => None,
        };
        let parsed = self.read(live, req).await?;
        // A repeat is answered with the first id before pre-flight, so a submitter retrying
        // after a lost answer gets it even if DNS has changed since.
        let mut reservation: Option<Reservation> = None;
        let mut idempotency = None;
        if let Some(key) = idempotency_key {
            let fingerprint = Fingerprint::of(&parsed.message, parsed.signing_key.as_deref());
            match self.keys.begin(caller, &key, fingerprint).await {
                Begin::Seen(id) => {
                    let mut resp = accepted(&id.to_string());
                    resp.headers_mut()
                        .insert("idempotent-replayed", HeaderValue::from_static("true"));
                    return Ok((names::SUBMISSION_DUPLICATE, resp));
                }
                Begin::Reused => {
                    return Err(Refusal {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        outcome: names::SUBMISSION_INVALID,
                        rule: None,
                        body: json!({
                            "error": format!("Idempotency-Key {key:?} was already used for a different message; a new message needs a new key"),
                            "idempotency_key": key,
                        }),
                    })
                }
                Begin::New(r) => reservation = Some(r),
                Begin::Unavailable(error) => {
                    if let Some(more) = STORE_FAILED.check() {
                        tracing::error!(error, more, "answered 503");
                    }
                    let resp = Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        names::SUBMISSION_UNAVAILABLE,
                        "cannot check the Idempotency-Key now; retry later",
                    )
                    .into_response();
                    return Ok((names::SUBMISSION_UNAVAILABLE, edge::retry_later(resp)));
                }
            }
            idempotency = Some(Idempotency {
                key,
                caller: caller.to_owned(),
                fingerprint: Some(fingerprint),
            });
        }
        let checked = self.vet(live, parsed).await?;
        let id = reservation
            .as_ref()
            .map_or_else(Spool::new_id, Reservation::id);
        let mut message = checked.message;
        message.headers.retain(|(n, _)| !stored::is_meta(n));
        let file = stored::encode(
            &message,
            &Meta {
                id: id.to_string(),
                received_at: telemetry::rfc3339(spool::now_ms()),
                signing_key: checked.signing_key,
                idempotency,
                notify: checked.notify,
                ..Default::default()
            },
        );
        if let Err(e) = self.spool.enqueue(id, 1, file).await {
            if let Some(more) = STORE_FAILED.check() {
                tracing::error!(error = %e, more, "could not store a submission; answered 503");
            }
            let resp = Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                names::SUBMISSION_UNAVAILABLE,
                "cannot store the message now; retry later",
            )
            .into_response();
            return Ok((names::SUBMISSION_UNAVAILABLE, edge::retry_later(resp)));
        }
        if let Some(reservation) = reservation {
            reservation.stored(id);
        }
        tracing::debug!(id = %id, bytes = message.body.len(), "accepted");
        Ok((names::SUBMISSION_ACCEPTED, accepted(&id.to_string())))
    }

    async fn preflight(&self, live: &Live, req: Request<Incoming>) -> Resp {
        let checked = match self.read(live, req).await {
            Ok(parsed) => self.vet(live, parsed).await,
            Err(refusal) => Err(refusal),
        };
        match checked {
            Ok(checked) => json_response(
                StatusCode::OK,
                &json!({
                    "verdict": "allow",
                    "method": checked.message.method,
                    "url": checked.message.target,
                    "addresses": checked.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            ),
            Err(refusal) => refusal.into_response(),
        }
    }

    /// Reads and parses a submission and checks its signing key.
    async fn read(&self, live: &Live, req: Request<Incoming>) -> Result<Parsed, Refusal> {
        let (parts, body) = req.into_parts();
        let form = Form::of(&parts.headers)?;
        let raw_limit = match form {
            Form::Http => self.max_body_bytes.saturating_add(HEAD_ALLOWANCE),
            // Base64 takes 4 bytes for 3.
            Form::Json => (self.max_body_bytes / 3 + 1)
                .saturating_mul(4)
                .saturating_add(HEAD_ALLOWANCE),
        };
        let bytes = match edge::read_body(&parts.headers, body, raw_limit, BODY_TIMEOUT).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                return Err(Refusal::too_large(format!(
                    "submission larger than the limit of {} bytes for a message body",
                    self.max_body_bytes
                )))
            }
            Err(BodyError::TimedOut) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    names::SUBMISSION_INVALID,
                    "submission body not received in time",
                ))
            }
            Err(BodyError::Unreadable) => {
                return Err(Refusal::invalid("submission body could not be read"))
            }
        };
        let limits = httpmsg::Limits {
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            ..httpmsg::Limits::default()
        };
        let inline = bytes.len() <= INLINE_PARSE_BYTES;
        let parse = move || {
            let parsed = match form {
                Form::Http => {
                    httpmsg::parse(&bytes, &limits).map_err(|e| (e.is_too_large(), e.to_string()))
                }
                Form::Json => httpmsg::from_json(&bytes, &limits)
                    .map_err(|e| (e.is_too_large(), e.to_string())),
            };
            parsed.map_err(|(too_large, error)| {
                if too_large {
                    Refusal::too_large(error)
                } else {
                    Refusal::invalid(error)
                }
            })
        };
        let mut message = if inline {
            parse()?
        } else {
            tokio::task::spawn_blocking(parse)
                .await
                .map_err(|_| Refusal::invalid("submission could not be parsed"))??
        };
        if let Some(problem) = not_absolute(&message.target) {
            return Err(Refusal::invalid(problem));
        }
        let signing_key = signing_key(live, &parts.headers, &message)?;
        let notify = notify_url(&parts.headers, &message)?;
        message.headers.retain(|(n, _)| !stored::is_meta(n));
        Ok(Parsed {
            message,
            signing_key,
            notify,
        })
    }

    /// Pre-flights a parsed submission; the message's target becomes the normalised URL.
    async fn vet(&self, live: &Live, parsed: Parsed) -> Result<Checked, Refusal> {
        let Parsed {
            mut message,
            signing_key,
            notify,
        } = parsed;
        // The notify URL is judged as a message to it would be, before the message itself.
        let notify = match notify {
            Some(url) => Some(
                live.guard
                    .preflight("POST", &url, &[])
                    .await
                    .map_err(|rejection| Refusal {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        outcome: names::SUBMISSION_REJECTED,
                        rule: Some(rejection.rule),
                        body: json!({
                            "error": format!("{}: {}", meta::NOTIFY, rejection.message),
                            "field": meta::NOTIFY,
                            "rule": rejection.rule.as_str(),
                        }),
                    })?
                    .target
                    .url(),
            ),
            None => None,
        };
        let verdict = live
            .guard
            .preflight(&message.method, &message.target, &message.headers)
            .await
            .map_err(|rejection| Refusal {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                outcome: names::SUBMISSION_REJECTED,
                rule: Some(rejection.rule),
                body: json!({"error": rejection.message, "rule": rejection.rule.as_str()}),
            })?;
        message.target = verdict.target.url();
        Ok(Checked {
            message,
            signing_key,
            notify,
            addresses: verdict.addrs,
        })
    }

    async fn status(&self, id: &str) -> Resp {
        let key = match parse_id(id) {
            Ok(key) => key,
            Err(resp) => return *resp,
        };
        let found = match self.spool.status(key).await {
            Ok(Some(status)) => {
                let attempts = self.spool.attempts(key).await.unwrap_or_default();
                let head = self
                    .spool
                    .message(key, stored::READ_LIMITS.max_header_bytes)
                    .await;
                Some((status, attempts, head.ok().flatten().unwrap_or_default()))
            }
            _ => None,
        };
        let Some((status, attempts, head)) = found else {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no message {id}")}),
            );
        };
        let (method, url) = stored::request_line(&head).unwrap_or_default();
        let last_error = attempts.last().and_then(spool::Attempt::failure);
        let records: Vec<Value> = attempts
            .iter()
            .map(|a| {
                json!({
                    "at": telemetry::rfc3339(a.at_ms),
                    "target": delivery::origin(&a.target),
                    "status": a.status,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                    "excerpt": a.excerpt,
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "id": key.to_string(),
                "state": status.state.as_str(),
                "method": method,
                "url": delivery::origin(&url),
                "attempt_count": status.attempts,
                "next_attempt_at": status.next_attempt_ms.map(telemetry::rfc3339),
                "last_error": last_error,
                "attempts": records,
            }),
        )
    }

    async fn retry(&self, id: &str) -> Resp {
        let key = match parse_id(id) {
            Ok(key) => key,
            Err(resp) => return *resp,
        };
        match self.spool.requeue(key).await {
            Ok(()) => {
                tracing::info!(id = %key, "dead message re-queued by the API");
                json_response(
                    StatusCode::OK,
                    &json!({"id": key.to_string(), "state": "retrying", "status_url": format!("/v1/messages/{key}")}),
                )
            }
            Err(spool::RequeueError::NotDead(_)) => {
                match self.spool.status(key).await.ok().flatten() {
                    Some(status) => json_response(
                        StatusCode::CONFLICT,
                        &json!({"error": format!("{key} is {}, not dead; only dead messages can be re-queued", status.state.as_str())}),
                    ),
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"error": format!("no message {key}")}),
                    ),
                }
            }
            Err(e) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": e.to_string()}),
            ),
        }
    }
}

/// The two submission forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Http,
    Json,
}

impl Form {
    fn of(headers: &HeaderMap) -> Result<Form, Refusal> {
        let unsupported = |what: String| {
            Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                names::SUBMISSION_INVALID,
                format!("{what}: use Content-Type: message/http or application/json"),
            )
        };
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Err(unsupported("no Content-Type".into()));
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        let media = text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "message/http" => Ok(Form::Http),
            "application/json" => Ok(Form::Json),
            _ => Err(unsupported(format!(
                "Content-Type {:?} is not a submission form",
                text.chars().take(100).collect::<String>()
            ))),
        }
    }
}

/// Why a request target is not in absolute form (`https://host/path`), if it is not.
fn not_absolute(target: &str) -> Option<String> {
    let shown: String = target.chars().take(100).collect();
    let scheme_end = target.find(':');
    let has_scheme = scheme_end
        .and_then(|end| target.get(..end))
        .is_some_and(|scheme| {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    if has_scheme {
        return None;
    }
    let form = if target.starts_with('/') {
        "origin-form"
    } else if target == "*" {
        "asterisk-form"
    } else {
        "relative"
    };
    Some(format!(
        "request target {shown:?} is {form}; whomp needs the absolute URL to send to, e.g. POST https://hooks.example.com/in HTTP/1.1"
    ))
}

/// The signing key a submission names, in a `Whomp-Signing-Key` field of the submission or of
/// the message itself; it must be configured.
fn signing_key(
    live: &Live,
    outer: &HeaderMap,
    message: &httpmsg::Message,
) -> Result<Option<String>, Refusal> {
    let outer = outer
        .get(meta::SIGNING_KEY)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut inner = message
        .headers_named(meta::SIGNING_KEY)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let first_inner = inner.next();
    if inner.next().is_some() {
        return Err(Refusal::invalid(
            "the message names more than one Whomp-Signing-Key",
        ));
    }
    let name = match (outer, first_inner) {
        (Some(a), Some(b)) if a != b => {
            return Err(Refusal::invalid(format!(
                "Whomp-Signing-Key {a:?} of the submission disagrees with {b:?} in the message"
            )))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Ok(None),
    };
    if live.keys.contains_key(&name) {
        Ok(Some(name))
    } else {
        let shown: String = name.chars().take(100).collect();
        Err(Refusal::invalid(format!(
            "Whomp-Signing-Key {shown:?} is not a configured signing key (signing.keys)"
        )))
    }
}

/// The `Whomp-Notify` URL of a submission, on the submission or in the message (once).
fn notify_url(outer: &HeaderMap, message: &httpmsg::Message) -> Result<Option<String>, Refusal> {
    let mut all = outer
        .get_all(meta::NOTIFY)
        .iter()
        .map(|v| v.as_bytes())
        .chain(message.headers_named(meta::NOTIFY));
    let first = all.next();
    if all.next().is_some() {
        return Err(Refusal::invalid(
            "the submission names more than one Whomp-Notify",
        ));
    }
    Ok(first.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// The key of message `id`, or the `400` answer saying it is not an id.
fn parse_id(id: &str) -> Result<Key, Box<Resp>> {
    match id.parse::<ulid::Ulid>() {
        Ok(ulid) => Ok(Key::new(ulid, 0)),
        Err(_) => {
            let shown: String = id.chars().take(100).collect();
            Err(Box::new(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("{shown:?} is not a message id (a ULID)")}),
            )))
        }
    }
}

fn accepted(id: &str) -> Resp {
    json_response(
        StatusCode::ACCEPTED,
        &json!({"id": id, "status_url": format!("/v1/messages/{id}")}),
    )
}

pub(crate) fn not_allowed(allow: &'static str) -> Resp {
    let mut resp = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": format!("method not allowed; use {allow}")}),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_is_required() {
        assert_eq!(not_absolute("https://hooks.example.com/in"), None);
        assert_eq!(not_absolute("ftp://x/"), None, "the scheme rule judges it");
        assert_eq!(
            not_absolute("/in").unwrap(),
            "request target \"/in\" is origin-form; whomp needs the absolute URL to send to, e.g. POST https://hooks.example.com/in HTTP/1.1"
        );
        assert!(not_absolute("*").unwrap().contains("asterisk-form"));
        assert!(not_absolute("hooks.example.com/in")
            .unwrap()
            .contains("relative"));
        assert!(not_absolute("1http://x/").unwrap().contains("relative"));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert_eq!(
            Form::of(&h).err().unwrap().body["error"],
            "no Content-Type: use Content-Type: message/http or application/json"
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(Form::of(&h).ok(), Some(Form::Json));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("message/http"),
        );
        assert_eq!(Form::of(&h).ok(), Some(Form::Http));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let refusal = Form::of(&h).err().unwrap();
        assert_eq!(refusal.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
