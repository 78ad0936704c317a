//! whomp's side of the delivery loop: a stored message becomes one attempt, after a fresh
//! pre-flight against the current rules.
//!
//! Two kinds of refusal at attempt time, two outcomes:
//! - the message itself is now forbidden (the whole pre-flight that needs no DNS runs again:
//!   URL length and syntax, method, header fields, scheme, port, host pattern, literal address;
//!   the rules may have changed since submission): nothing will change that, so the message
//!   goes to `dead/` at once ([`delivery::Refused`] with `permanent`), the rule in its reason;
//! - the host's name does not resolve, or resolves to a forbidden address (DNS rebinding, or a
//!   DNS outage): DNS may change back, so it is a failed attempt retried by the policy, and no
//!   connection is made.
//!
//! Either way the attempt record says `pre-flight refused (<rule>): <why>`. Otherwise the
//! checked addresses are leased to the client's resolver for the attempt (see [`crate::live`]),
//! the request is signed if its submission named a key (an event's delivery: with every
//! current secret of its target, space-separated), and sent.
//!
//! An event's delivery whose target is paused is held, not attempted
//! ([`crate::events::Events::hold`]). What an outcome means beyond metrics (a dead delivery, a
//! target failing or recovered) is the event layer's: the courier hands it what it read of the
//! message when preparing it ([`crate::events::Events::watch`]) and the outcome after
//! ([`crate::events::Events::attempted`]); failure notifications themselves are not watched,
//! so they cannot cause another.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use daemon::Current;
use delivery::{Finished, Reach, Ready, Refused, Sent};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use netguard::{Host, Rejection, Target};
use spool::{Attempt, Key};
use telemetry::names;

use crate::events::notify::Watched;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::sign;
use crate::stored;

/// How an attempt refused by pre-flight is recorded, before the rule: `pre-flight refused (dns): ...`.
const REFUSED: &str = "pre-flight refused";

/// whomp's courier.
#[derive(Debug)]
pub struct Courier {
    pub live: Arc<Current<Live>>,
    /// An event's delivery is signed with its target's current secrets.
    pub events: Arc<crate::events::Events>,
    pub metrics: Metrics,
}

/// One attempt, ready to go.
#[derive(Debug)]
pub struct Payload {
    live: Arc<Live>,
    target: Target,
    id: String,
    request: delivery::Request,
    /// Every key signs (several during a rotation); empty: unsigned.
    keys: Vec<Vec<u8>>,
    /// The webhook target of an event's delivery.
    webhook: Option<String>,
    /// A target not in this node's index when prepared (cluster backend): its keys are looked
    /// up in the shared records before sending.
    unknown: Option<String>,
}

impl delivery::Courier for Courier {
    type Payload = Payload;

    fn prepare(&self, key: Key, file: Vec<u8>) -> Result<Ready<Payload>, Refused> {
        let live = self.live.get();
        let refuse = |target: String, error: String, permanent: bool| Refused {
            target,
            error,
            permanent,
            policy: Some(live.policy.clone()),
        };
        let message =
            stored::decode(&file).map_err(|e| refuse(String::new(), e.to_string(), true))?;
        let notification = message.meta.notification.is_some();
        if !notification {
            self.events.watch(
                key,
                Watched {
                    target: message.meta.target.clone(),
                    event: message.meta.event.clone(),
                    notify: message.meta.notify.clone(),
                    signing_key: message.meta.signing_key.clone(),
                    url: message.url.clone(),
                },
            );
        }
        let url = message.url.clone();
        let target = live
            .guard
            .rules
            .check_request(&message.method, &url, &message.headers)
            .map_err(|r| {
                self.metrics.rejected(r.rule);
                refuse(url.clone(), refused(&r), true)
            })?;
        let method = Method::from_bytes(message.method.as_bytes()).map_err(|_| {
            refuse(
                url.clone(),
                format!("stored method {:?} is not valid", message.method),
                true,
            )
        })?;
        let mut unknown = None;
        let keys = match (&message.meta.target, &message.meta.signing_key) {
            (Some(target), _) => match self.events.keys_of(target) {
                Some(keys) => keys,
                // Maybe made on another node since the index was read: looked up in `send`.
                None if self.events.shared() => {
                    unknown = Some(target.clone());
                    Vec::new()
                }
                None => {
                    return Err(refuse(
                        url,
                        format!("webhook target {target} was deleted"),
                        true,
                    ))
                }
            },
            (None, None) => Vec::new(),
            (None, Some(name)) => match live.keys.get(name) {
                Some(secret) => vec![secret.expose().clone()],
                // The operator may put the key back; until then, retry by the policy.
                None => {
                    return Err(refuse(
                        url,
                        format!("signing key {name:?} is no longer configured (signing.keys)"),
                        false,
                    ))
                }
            },
        };
        let headers = outgoing_headers(&message.headers);
        let destination: Arc<str> = format!("{}:{}", target.host, target.port).into();
        Ok(Ready {
            destination,
            policy: live.policy.clone(),
            payload: Payload {
                request: delivery::Request {
                    method,
                    url,
                    headers,
                    body: Bytes::from(message.body),
                    timeout: live.timeout,
                },
                live,
                target,
                id: message.meta.id,
                keys,
                unknown,
                // A notification about a paused target still goes.
                webhook: message.meta.target.filter(|_| !notification),
            },
        })
    }

    async fn send(&self, payload: Payload) -> Result<Sent, Refused> {
        let Payload {
            live,
            target,
            id,
            mut request,
            mut keys,
            webhook: _,
            unknown,
        } = payload;
        if let Some(target) = unknown {
            keys = match self.events.keys_of_current(&target).await {
                Ok(Some(keys)) => keys,
                Ok(None) => {
                    return Err(Refused {
                        target: request.url,
                        error: format!("webhook target {target} was deleted"),
                        permanent: true,
                        policy: None,
                    })
                }
                // Retried by the message's policy: the target is not known deleted.
                Err(e) => {
                    return Err(Refused {
                        target: request.url,
                        error: e.to_string(),
                        permanent: false,
                        policy: None,
                    })
                }
            };
        }
        let addrs = match live.guard.resolve_checked(&target).await {
            Ok(addrs) => addrs,
            Err(rejection) => {
                self.metrics.rejected(rejection.rule);
                // DNS may change back: retried by the message's policy.
                return Err(Refused {
                    target: request.url,
                    error: refused(&rejection),
                    permanent: false,
                    policy: None,
                });
            }
        };
        let _lease = match &target.host {
            Host::Name(name) => Some(live.checked.lease(name, addrs)),
            // A literal address is connected to as written; it was checked above.
            Host::Ip(_) => None,
        };
        if !keys.is_empty() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let signature = keys
                .iter()
                .map(|secret| sign::signature(secret, &id, now, &request.body))
                .collect::<Vec<_>>()
                .join(" ");
            for (name, value) in [
                (sign::ID, id.clone()),
                (sign::TIMESTAMP, now.to_string()),
                (sign::SIGNATURE, signature),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    request.headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
        Ok(delivery::send(&live.client, request).await)
    }

    fn hold(&self, key: Key, payload: &Payload) -> Option<u64> {
        let webhook = payload.webhook.as_deref()?;
        if !self.events.hold(webhook, key) {
            return None;
        }
        self.events.unwatch(key);
        Some(spool::now_ms() + crate::events::control::HOLD.as_millis() as u64)
    }

    fn observe(&self, key: Key, reach: Reach<'_>, attempt: &Attempt, outcome: &Finished) {
        self.events.attempted(
            self.live.get(),
            key,
            reach.destination().is_some(),
            attempt,
            outcome,
        );
        let label = match (outcome, reach) {
            (Finished::Delivered, _) => names::OUTCOME_DELIVERED,
            (Finished::Dead { .. }, _) => names::OUTCOME_DEAD,
            (Finished::Retry { .. }, Reach::Refused(_)) => names::OUTCOME_REJECTED,
            (Finished::Retry { .. }, _) if attempt.status.is_some() => names::OUTCOME_RETRY,
            (Finished::Retry { .. }, _) => names::OUTCOME_ERROR,
        };
        self.metrics
            .delivery_attempts
            .with_label_values(&[label])
            .inc();
        if let Reach::Sent(_) = reach {
            self.metrics
                .delivery_duration
                .observe(attempt.duration_ms as f64 / 1000.0);
        }
        if matches!(outcome, Finished::Dead { .. }) {
            self.metrics.dead_letters.inc();
        }
    }
}

/// The attempt record of a pre-flight refusal.
fn refused(rejection: &Rejection) -> String {
    format!("{REFUSED} ({}): {}", rejection.rule, rejection.message)
}

/// The submitter's fields as they go out (see [`sent_fields`]).
fn outgoing_headers(fields: &[(String, Vec<u8>)]) -> HeaderMap {
    delivery::header_map(sent_fields(fields))
}

/// The fields of `fields` that are sent, in order: the end-to-end ones
/// ([`httpmsg::end_to_end`]: `Host` is written by the client from the URL, which pre-flight made
/// sure it agrees with) without whomp's metadata; an idempotency
/// [`Fingerprint`](crate::idempotency::Fingerprint) covers these.
pub(crate) fn sent_fields(
    fields: &[(String, Vec<u8>)],
) -> impl Iterator<Item = &(String, Vec<u8>)> {
    httpmsg::end_to_end(fields, stored::is_meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_headers_keep_the_submitters_fields() {
        let fields: Vec<(String, Vec<u8>)> = [
            ("Host", "hooks.example.com"),
            ("Content-Type", "application/json"),
            ("Connection", "close, X-Drop"),
            ("X-Drop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("X-Tag", "a"),
            ("x-tag", "b"),
            ("Content-Length", "2"),
            ("Whomp-Signing-Key", "k"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
        let headers = outgoing_headers(&fields);
        let kept: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            kept,
            [
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-tag".to_owned(), "a".to_owned()),
                ("x-tag".to_owned(), "b".to_owned()),
            ]
        );
    }
}
