//! Failures that bubble up: whomp tells someone when a delivery dies or a webhook target keeps
//! failing, instead of leaving it to be found in `dead/`.
//!
//! Four notifications, each a JSON `{"type", "timestamp", "data"}` POSTed to a notify URL:
//! - `delivery.dead`: a delivery (or a raw message submitted with `Whomp-Notify`) was
//!   dead-lettered;
//! - `target.failing`: every attempt at a target has failed for `events.failing_after`;
//! - `target.disabled`: ... for `events.disable_after`; the target is disabled (its
//!   subscriptions fan out nothing new) until a `PATCH {"disabled": false}`;
//! - `target.recovered`: an attempt succeeded after `target.failing` was sent.
//!
//! A target's notifications go to its `notifyUrl`, signed with its own secrets, or else to the
//! config's `events.notify_url`, signed with `events.signing_key` (unsigned without one); a raw
//! message's `delivery.dead` goes to its `Whomp-Notify` URL, signed with its own signing key if
//! it named one. A notification is an ordinary whomp message (pre-flighted when it is made and
//! at every attempt, stored, retried, dead-lettered), marked with `Whomp-Notification`: whomp
//! never watches one, so it can cause no other notification, even when its URL is down.
//!
//! The courier tells the event layer what it needs of a message when it prepares it
//! ([`Events::watch`]: the stored metadata, read anyway) and the outcome after the attempt
//! ([`Events::attempted`]); the failure state of a target (since when it fails, whether
//! `target.failing` was sent, disabled) is a field of its record, changed under the write lock
//! like any change (durable before it is applied), so it survives a restart. An attempt whose
//! outcome changes nothing (the usual success) costs a map lookup and no write.

use std::sync::Arc;

use serde_json::{json, Value};
use spool::Key;
use storage::{Attempt, Storage as _};

use super::{ns, Events};
use crate::live::Live;
use crate::stored::{self, Meta};
use delivery::Finished;

/// The notification types.
pub mod kind {
    pub const DELIVERY_DEAD: &str = "delivery.dead";
    pub const TARGET_FAILING: &str = "target.failing";
    pub const TARGET_DISABLED: &str = "target.disabled";
    pub const TARGET_RECOVERED: &str = "target.recovered";
}

/// What the courier read of a message when it prepared it, kept until its outcome.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// The webhook target of an event's delivery.
    pub target: Option<String>,
    pub event: Option<String>,
    /// A raw message's `Whomp-Notify` URL.
    pub notify: Option<String>,
    /// A raw message's signing key, which signs its `delivery.dead` too.
    pub signing_key: Option<String>,
    /// Where the message goes (shown only as its origin).
    pub url: String,
}

/// How a notification is signed.
#[derive(Debug, Clone)]
enum Signer {
    /// With every secret of this target.
    Target(String),
    /// With this `signing.keys` entry.
    Key(String),
    Unsigned,
}

/// A notification to make.
#[derive(Debug)]
struct Notice {
    kind: &'static str,
    to: String,
    signer: Signer,
    data: Value,
}

impl Events {
    /// Keeps what the outcome of message `key` needs (see [`Events::attempted`]).
    pub fn watch(&self, key: Key, watched: Watched) {
        self.watched().insert(key, watched);
    }

    /// Forgets message `key` (held rather than attempted, or its outcome seen).
    pub fn unwatch(&self, key: Key) -> Option<Watched> {
        self.watched().remove(&key)
    }

    /// After an attempt of message `key` (or a refusal to make one): a `delivery.dead` if it
    /// died, and the failure state of its target if the attempt reached for it (`reached`:
    /// sent, or refused by pre-flight of the target's addresses). Quick: what needs a write or
    /// a notification is done on a task of its own.
    pub fn attempted(
        self: &Arc<Self>,
        live: Arc<Live>,
        key: Key,
        reached: bool,
        attempt: &Attempt,
        finished: &Finished,
    ) {
        let Some(watched) = self.unwatch(key) else {
            return;
        };
        let mut notices = Vec::new();
        if let Finished::Dead { reason } = finished {
            notices.extend(self.dead_notice(key, &watched, attempt, reason));
        }
        let ok = matches!(finished, Finished::Delivered);
        let at_ms = attempt.at_ms;
        let change = watched
            .target
            .filter(|t| reached && self.health(t, ok, at_ms).is_some());
        if notices.is_empty() && change.is_none() {
            return;
        }
        let events = self.clone();
        tokio::spawn(async move {
            if let Some(target) = change {
                notices.extend(events.record_health(&target, ok, at_ms).await);
            }
            for notice in notices {
                events.notify(&live, notice).await;
            }
        });
    }

    /// The `delivery.dead` of message `key`, if anyone is to be told.
    fn dead_notice(
        &self,
        key: Key,
        watched: &Watched,
        attempt: &Attempt,
        reason: &str,
    ) -> Option<Notice> {
        let (to, signer) = match &watched.target {
            Some(target) => self.destination(target)?,
            None => (
                watched.notify.clone()?,
                watched
                    .signing_key
                    .clone()
                    .map_or(Signer::Unsigned, Signer::Key),
            ),
        };
        Some(Notice {
            kind: kind::DELIVERY_DEAD,
            to,
            signer,
            data: json!({
                "messageId": key.to_string(),
                "targetId": watched.target,
                "eventId": watched.event,
                "url": delivery::origin(&watched.url),
                "reason": reason,
                "lastStatus": attempt.status,
                "lastError": attempt.error,
                "statusUrl": format!("/v1/messages/{key}"),
            }),
        })
    }

    /// Where target `id`'s notifications go and how they are signed: its `notifyUrl` with its
    /// secrets, else the config's `events.notify_url`; `None`: nowhere.
    fn destination(&self, id: &str) -> Option<(String, Signer)> {
        let own = self
            .read()
            .targets
            .get(id)
            .and_then(|t| t.notify_url.clone());
        match own {
            Some(url) => Some((url, Signer::Target(id.to_owned()))),
            None => Some((
                self.settings.notify_url.clone()?,
                self.settings
                    .signing_key
                    .clone()
                    .map_or(Signer::Unsigned, Signer::Key),
            )),
        }
    }

    /// What an attempt at target `id` at `at_ms` changes of its failure state, from memory:
    /// the target with its new state and the notifications that go with it; `None`: nothing.
    fn health(
        &self,
        id: &str,
        ok: bool,
        at_ms: u64,
    ) -> Option<(super::model::Target, Vec<&'static str>)> {
        let mut target = self.read().targets.get(id)?.clone();
        let mut kinds = Vec::new();
        match (ok, target.failing_since_ms) {
            (true, None) => return None,
            (true, Some(_)) => {
                if target.failing_notified {
                    kinds.push(kind::TARGET_RECOVERED);
                }
                target.failing_since_ms = None;
                target.failing_notified = false;
            }
            (false, None) => target.failing_since_ms = Some(at_ms),
            (false, Some(since)) => {
                let failing = at_ms.saturating_sub(since);
                if !target.failing_notified
                    && failing >= self.settings.failing_after.as_millis() as u64
                {
                    target.failing_notified = true;
                    kinds.push(kind::TARGET_FAILING);
                }
                if !target.disabled && failing >= self.settings.disable_after.as_millis() as u64 {
                    target.disabled = true;
                    kinds.push(kind::TARGET_DISABLED);
                }
                if kinds.is_empty() {
                    return None;
                }
            }
        }
        Some((target, kinds))
    }

    /// Stores target `id`'s new failure state (worked out again under the write lock, so
    /// attempts finishing together change it once) and gives the notifications it calls for.
    async fn record_health(&self, id: &str, ok: bool, at_ms: u64) -> Vec<Notice> {
        let _writing = self.writing.lock().await;
        let Some((mut target, kinds)) = self.health(id, ok, at_ms) else {
            return Vec::new();
        };
        target.updated_at = telemetry::rfc3339(spool::now_ms());
        if let Err(e) = self.save(ns::TARGETS, id, &target).await {
            // Worked out again at the next attempt.
            tracing::error!(target = id, error = %e, "cannot store a webhook target's failure state");
            return Vec::new();
        }
        for kind in &kinds {
            tracing::warn!(target = id, notification = kind, "webhook target {kind}");
        }
        let data = json!({
            "targetId": id,
            "url": delivery::origin(&target.url),
            "failingSince": target.failing_since_ms.map(telemetry::rfc3339),
            "disabled": target.disabled,
        });
        self.write().targets.insert(id.to_owned(), target);
        let Some((to, signer)) = self.destination(id) else {
            return Vec::new();
        };
        kinds
            .into_iter()
            .map(|kind| Notice {
                kind,
                to: to.clone(),
                signer: signer.clone(),
                data: data.clone(),
            })
            .collect()
    }

    /// Makes `notice` a whomp message: pre-flighted (a refused URL is logged and dropped),
    /// stored, delivered and retried as any other, marked so that it is never watched.
    async fn notify(&self, live: &Live, notice: Notice) {
        let url = match live.guard.preflight("POST", &notice.to, &[]).await {
            Ok(verdict) => verdict.target.url(),
            Err(rejection) => {
                tracing::warn!(
                    notification = notice.kind,
                    url = %delivery::origin(&notice.to),
                    rule = %rejection.rule.as_str(),
                    error = %rejection.message,
                    "notify URL refused by pre-flight; notification not sent"
                );
                return;
            }
        };
        let id = spool::Spool::new_id();
        let now = spool::now_ms();
        let body = json!({
            "type": notice.kind,
            "timestamp": telemetry::rfc3339(now),
            "data": notice.data,
        });
        let (signing_key, target) = match notice.signer {
            Signer::Target(t) => (None, Some(t)),
            Signer::Key(k) => (Some(k), None),
            Signer::Unsigned => (None, None),
        };
        let message = httpmsg::Message {
            method: "POST".into(),
            target: url,
            headers: vec![("Content-Type".into(), b"application/json".to_vec())],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        let file = stored::encode(
            &message,
            &Meta {
                id: id.to_string(),
                received_at: telemetry::rfc3339(now),
                signing_key,
                target,
                notification: Some(notice.kind.to_owned()),
                ..Default::default()
            },
        );
        match self.storage.enqueue(id, 1, file).await {
            Ok(_) => tracing::info!(id = %id, notification = notice.kind, "notification queued"),
            Err(e) => {
                tracing::error!(notification = notice.kind, error = %e, "cannot store a notification; not sent")
            }
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Key, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}
