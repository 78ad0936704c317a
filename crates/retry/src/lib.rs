//! The delivery policy both daemons share: after a failed attempt, retry when, or give up.
//!
//! Exponential backoff with jitter (first retry after `initial`, doubling, capped at
//! `max_interval`), `Retry-After` honoured within the cap, and three ways to give up: a status
//! listed in `give_up_on`, `max_attempts`, or a next attempt that would fall past `max_age`.
//! A [`Policy`] can only be built valid ([`Policy::try_new`]), so a bad one never gets past config.

use std::time::{Duration, SystemTime};

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    initial: Duration,
    max_interval: Duration,
    max_age: Duration,
    max_attempts: Option<u32>,
    give_up_on: Vec<u16>,
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    #[error("retry.initial must be more than 0")]
    ZeroInitial,
    #[error("retry.initial ({initial:?}) must not exceed retry.max_interval ({max_interval:?})")]
    InitialAboveMax {
        initial: Duration,
        max_interval: Duration,
    },
    #[error("retry.max_attempts must be at least 1")]
    ZeroAttempts,
    #[error("retry.give_up_on: {0} is not an HTTP status (100-599)")]
    BadStatus(u16),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop and dead-letter the message.
    GiveUp(GiveUp),
}

/// Why a message is given up on; each reads as the end of "gave up: ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The status is listed in `give_up_on`.
    Status(u16),
    /// `max_attempts` attempts were made.
    Attempts(u32),
    /// The next attempt would come after `max_age`.
    Age(Duration),
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Status(s) => write!(f, "status {s} is listed in retry.give_up_on"),
            GiveUp::Attempts(n) => write!(f, "{n} attempts made (retry.max_attempts)"),
            GiveUp::Age(age) => write!(f, "older than retry.max_age ({})", human(*age)),
        }
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The share of the nominal delay that jitter may take away: delays fall in [3/4, 1] of nominal,
/// so retries of messages that failed together spread out, yet never come sooner than 3/4 of
/// what the policy says.
const JITTER: f64 = 0.25;

impl Policy {
    pub fn try_new(
        initial: Duration,
        max_interval: Duration,
        max_age: Duration,
        max_attempts: Option<u32>,
        give_up_on: Vec<u16>,
    ) -> Result<Policy, InvalidPolicy> {
        if initial.is_zero() {
            return Err(InvalidPolicy::ZeroInitial);
        }
        if initial > max_interval {
            return Err(InvalidPolicy::InitialAboveMax {
                initial,
                max_interval,
            });
        }
        if max_attempts == Some(0) {
            return Err(InvalidPolicy::ZeroAttempts);
        }
        if let Some(bad) = give_up_on.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(InvalidPolicy::BadStatus(*bad));
        }
        Ok(Policy {
            initial,
            max_interval,
            max_age,
            max_attempts,
            give_up_on,
        })
    }

    /// The nominal delay after the `attempts`-th failed attempt (1-based), before jitter.
    pub fn nominal_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(40);
        self.initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }

    /// Decides after a failed attempt. `attempts` counts attempts made including this one;
    /// `age` is how long since the retry budget started (arrival or re-queue); `status` is the
    /// response status, if any; `retry_after` the parsed `Retry-After` of a 429 or 503.
    pub fn decide(
        &self,
        attempts: u32,
        age: Duration,
        status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Decision {
        self.decide_with(attempts, age, status, retry_after, rand::random::<f64>())
    }

    /// [`Policy::decide`] with the jitter draw (in [0, 1)) given, for tests.
    pub fn decide_with(
        &self,
        attempts: u32,
        age: Duration,
        status: Option<u16>,
        retry_after: Option<Duration>,
        draw: f64,
    ) -> Decision {
        if let Some(s) = status.filter(|s| self.give_up_on.contains(s)) {
            return Decision::GiveUp(GiveUp::Status(s));
        }
        if let Some(max) = self.max_attempts.filter(|max| attempts >= *max) {
            return Decision::GiveUp(GiveUp::Attempts(max));
        }
        let delay = match retry_after {
            // The server said when; honour it within our own bounds.
            Some(after) => after.clamp(self.initial, self.max_interval),
            None => {
                let nominal = self.nominal_delay(attempts);
                nominal.mul_f64(1.0 - JITTER * draw.clamp(0.0, 1.0))
            }
        };
        if age.saturating_add(delay) > self.max_age {
            return Decision::GiveUp(GiveUp::Age(self.max_age));
        }
        Decision::RetryAfter(delay)
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (relative to `now`).
/// Returns `None` for anything else, which callers treat as absent.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a response status counts as delivered: 2xx only (redirects are not followed and
/// count as failures).
pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy() -> Policy {
        Policy::try_new(S, 3600 * S, 24 * 3600 * S, None, vec![410]).unwrap()
    }

    fn check(
        p: &Policy,
        attempts: u32,
        age: Duration,
        status: Option<u16>,
        after: Option<Duration>,
        draw: f64,
        want: Decision,
    ) {
        assert_eq!(
            p.decide_with(attempts, age, status, after, draw),
            want,
            "attempts {attempts}, age {age:?}"
        );
    }

    #[test]
    fn doubles_from_initial_up_to_the_cap() {
        let p = policy();
        let delays: Vec<u64> = (1..=14).map(|n| p.nominal_delay(n).as_secs()).collect();
        assert_eq!(
            delays,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(
            p.nominal_delay(u32::MAX),
            3600 * S,
            "no overflow at absurd counts"
        );
    }

    #[test]
    fn jitter_stays_within_a_quarter_below_nominal() {
        let p = policy();
        for attempts in 1..30 {
            let nominal = p.nominal_delay(attempts);
            for draw in [0.0, 0.3, 0.999_999, 1.0] {
                let Decision::RetryAfter(d) =
                    p.decide_with(attempts, Duration::ZERO, Some(503), None, draw)
                else {
                    panic!("gave up at attempt {attempts}");
                };
                assert!(
                    d <= nominal && d >= nominal.mul_f64(0.75),
                    "{d:?} vs {nominal:?}"
                );
            }
        }
    }

    #[test]
    fn give_up_rules() {
        let p = policy();
        check(
            &p,
            1,
            Duration::ZERO,
            Some(410),
            None,
            0.0,
            Decision::GiveUp(GiveUp::Status(410)),
        );
        check(
            &p,
            1,
            Duration::ZERO,
            Some(404),
            None,
            0.0,
            Decision::RetryAfter(S),
        );
        check(
            &p,
            3,
            24 * 3600 * S - S,
            None,
            None,
            0.0,
            Decision::GiveUp(GiveUp::Age(24 * 3600 * S)),
        );
        let limited = Policy::try_new(S, 60 * S, 3600 * S, Some(3), vec![]).unwrap();
        check(
            &limited,
            2,
            Duration::ZERO,
            Some(500),
            None,
            0.0,
            Decision::RetryAfter(2 * S),
        );
        check(
            &limited,
            3,
            Duration::ZERO,
            Some(500),
            None,
            0.0,
            Decision::GiveUp(GiveUp::Attempts(3)),
        );
        assert_eq!(
            GiveUp::Age(24 * 3600 * S).to_string(),
            "older than retry.max_age (1d)"
        );
        assert_eq!(
            GiveUp::Status(410).to_string(),
            "status 410 is listed in retry.give_up_on"
        );
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = policy();
        check(
            &p,
            1,
            Duration::ZERO,
            Some(429),
            Some(120 * S),
            0.5,
            Decision::RetryAfter(120 * S),
        );
        check(
            &p,
            1,
            Duration::ZERO,
            Some(503),
            Some(99_999 * S),
            0.5,
            Decision::RetryAfter(3600 * S),
        );
        check(
            &p,
            1,
            Duration::ZERO,
            Some(503),
            Some(Duration::ZERO),
            0.5,
            Decision::RetryAfter(S),
        );
    }

    #[test]
    fn invalid_policies_are_refused() {
        let bad = |i, m, a, s| {
            Policy::try_new(i, m, 3600 * S, a, s)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(Duration::ZERO, S, None, vec![]),
            "retry.initial must be more than 0"
        );
        assert_eq!(
            bad(10 * S, S, None, vec![]),
            "retry.initial (10s) must not exceed retry.max_interval (1s)"
        );
        assert_eq!(
            bad(S, S, Some(0), vec![]),
            "retry.max_attempts must be at least 1"
        );
        assert_eq!(
            bad(S, S, None, vec![1000]),
            "retry.give_up_on: 1000 is not an HTTP status (100-599)"
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after(b"120", now), Some(120 * S));
        assert_eq!(parse_retry_after(b" 7 ", now), Some(7 * S));
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(60 * S)
        );
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:40:37 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in [
            &b""[..],
            b"-1",
            b"1.5",
            b"soon",
            b"99999999999999999999",
            b"\xff",
        ] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn only_2xx_is_success() {
        assert!(is_success(200) && is_success(204) && is_success(299));
        assert!(!is_success(199) && !is_success(301) && !is_success(304) && !is_success(500));
    }
}
