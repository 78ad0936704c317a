//! Holding and recovering a target's deliveries: `POST /v1/webhooks/targets/<id>/pause`,
//! `/resume` and `/recover?since=`.
//!
//! A paused target's deliveries stay queued and are not attempted: the courier asks
//! [`Events::hold`] before each attempt, and a held delivery goes back to the spool due again
//! in [`HOLD`] with no attempt recorded, so its attempt count and retry budget are untouched
//! (delivery's `Courier::hold`). The pause is a field of the target's record, so it survives a
//! restart. Resuming makes every delivery held since the start due at once; one held before a
//! restart waits at most [`HOLD`]. `retry.max_age` keeps counting during a pause, but nothing
//! is decided while paused: after a resume every held delivery gets at least one attempt, and
//! only a failed attempt past `max_age` dead-letters it (recover re-queues those).
//!
//! Recover re-queues the target's dead deliveries (each with a fresh retry budget, as
//! `POST /v1/messages/<id>/retry` does) accepted since a time, found through the storage seam
//! (either backend): the dead ones of the listing, and only each one's head.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use spool::{Key, State};
use storage::Storage as _;

use super::api::Refusal;
use super::model::Invalid;
use super::{ns, Events};
use crate::stored::{self, meta};

/// How long a held delivery waits before its target is looked at again.
pub const HOLD: Duration = Duration::from_secs(10);

impl Events {
    /// Whether delivery `key` for target `target` must wait (the target is paused); if so it
    /// is remembered, so that resuming wakes it.
    pub fn hold(&self, target: &str, key: Key) -> bool {
        let paused = self.read().targets.get(target).is_some_and(|t| t.paused);
        if paused {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(target.to_owned())
                .or_default()
                .insert(key);
        }
        paused
    }

    /// Pauses or resumes target `id`; resuming makes its held deliveries due now.
    pub(super) async fn set_paused(&self, id: &str, paused: bool) -> Result<Value, Refusal> {
        {
            let _writing = self.writing.lock().await;
            let mut target = self
                .read()
                .targets
                .get(id)
                .cloned()
                .ok_or_else(|| no_target(id))?;
            if target.paused != paused {
                target.paused = paused;
                target.updated_at = telemetry::rfc3339(spool::now_ms());
                self.save(ns::TARGETS, id, &target)
                    .await
                    .map_err(|e| Refusal::unavailable(&e))?;
                self.write().targets.insert(id.to_owned(), target);
            }
        }
        tracing::info!(target = id, paused, "webhook target paused or resumed");
        if !paused {
            let held = self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id)
                .unwrap_or_default();
            for key in held {
                // One being handed back right now is due within HOLD anyway.
                let _ = self.storage.retry_now(key).await;
            }
        }
        let target = self.read().targets.get(id).map(|t| t.shown());
        target.ok_or_else(|| no_target(id))
    }

    /// Re-queues target `id`'s dead deliveries accepted since `since` (ms since the epoch);
    /// answers how many.
    pub(super) async fn recover(&self, id: &str, since_ms: u64) -> Result<Value, Refusal> {
        // A target made on another node is read in first (shared records only).
        if !self.read().targets.contains_key(id) {
            self.refresh().await.map_err(|e| {
                tracing::error!(error = %e, "cannot read the event records; answered 503");
                Refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "cannot read the event records now; retry later"}),
                )
            })?;
            if !self.read().targets.contains_key(id) {
                return Err(no_target(id));
            }
        }
        let dead = self.dead_of(id, since_ms).await.map_err(|e| {
            tracing::error!(error = %e, "cannot list dead deliveries; answered 503");
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "cannot list the spool now; retry later"}),
            )
        })?;
        let mut recovered = 0usize;
        for key in dead {
            match self.storage.requeue(key).await {
                Ok(()) => recovered += 1,
                // Re-queued or deleted meanwhile by someone else: not ours to count.
                Err(spool::RequeueError::NotDead(_)) => {}
                Err(e) => {
                    tracing::error!(id = %key, error = %e, "cannot re-queue a dead delivery");
                }
            }
        }
        tracing::info!(
            target = id,
            recovered,
            "dead deliveries of a webhook target re-queued"
        );
        Ok(json!({"targetId": id, "recovered": recovered}))
    }

    /// The dead deliveries of target `id` accepted since `since_ms`, through the storage seam:
    /// the listing's states, then each dead one's head.
    async fn dead_of(&self, id: &str, since_ms: u64) -> Result<Vec<Key>, storage::Unavailable> {
        let mut dead = Vec::new();
        for listed in self.storage.list().await? {
            if listed.state != State::Dead || listed.key.id().timestamp_ms() < since_ms {
                continue;
            }
            let head = self.head(listed.key).await?.unwrap_or_default();
            if stored::meta_of(&head, meta::TARGET).is_some_and(|t| t == id) {
                dead.push(listed.key);
            }
        }
        Ok(dead)
    }
}

/// `since=`: an RFC 3339 time, or a duration ago (`90s`, `2h`, `7d`); none: everything.
pub(super) fn since_ms(query: &str) -> Result<u64, Refusal> {
    let mut since = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "since" => since = parse_since(value)?,
            other => {
                return Err(Refusal::bad(Invalid::new(
                    other,
                    "unknown query parameter; known: since",
                )))
            }
        }
    }
    Ok(since)
}

/// One `since` value: a UTC RFC 3339 time or a duration ago, in ms since the epoch.
pub(super) fn parse_since(value: &str) -> Result<u64, Refusal> {
    let value = value.replace("%3A", ":").replace("%3a", ":");
    if let Some(ms) = parse_utc(&value) {
        return Ok(ms);
    }
    match config::parse_duration(&value) {
        Ok(ago) => Ok(spool::now_ms().saturating_sub(ago.as_millis() as u64)),
        Err(_) => Err(Refusal::bad(Invalid::new(
            "since",
            "must be a UTC RFC 3339 time (2025-01-02T03:04:05Z) or a duration ago (90s, 2h, 7d)",
        ))),
    }
}

/// `2025-01-02T03:04:05Z` or `2025-01-02T03:04:05.678Z` (as [`telemetry::rfc3339`] writes
/// them), in ms since the epoch.
fn parse_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = text.split_once(['T', 't'])?;
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut d = date.splitn(3, '-');
    let (year, month, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (h, m, sec) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let ms = match frac.len() {
        0 => 0,
        n => num(frac)? * 1000 / 10_i64.checked_pow(n as u32)?,
    };
    let days = telemetry::days_from_civil(year, month, day);
    let total = ((days * 86_400 + h * 3600 + m * 60 + sec) * 1000).checked_add(ms)?;
    u64::try_from(total).ok()
}

fn no_target(id: &str) -> Refusal {
    let shown: String = id.chars().take(100).collect();
    Refusal(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no target {shown}")}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_the_times_whomp_writes_and_durations_ago() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000] {
            assert_eq!(parse_utc(&telemetry::rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_utc("2025-01-02T03:04:05Z"), Some(1_735_787_045_000));
        for bad in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-01-02 03:04:05",
            "-5s",
        ] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
        let ago = parse_since("1h").ok().unwrap();
        assert!(spool::now_ms() - ago >= 3_600_000);
    }
}
