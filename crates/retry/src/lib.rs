//! The delivery policy both daemons share: after a failed attempt, retry when, or give up.
//!
//! Exponential backoff with jitter (first retry after `initial`, doubling, capped at
//! `max_interval`), `Retry-After` honoured within the cap, and three ways to give up: a status
//! listed in `give_up_on`, `max_attempts`, or a next attempt that would fall past `max_age`.
//! A [`Policy`] can only be built valid ([`Policy::try_new`]), so a bad one never gets past config.

use std::time::{Duration, SystemTime};

/// A validated retry policy. [`Policy::default`] is the design's: first retry after 1 s,
/// doubling up to 1 h between attempts, giving up after 24 h or on a `410`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    initial: Duration,
    max_interval: Duration,
    max_age: Duration,
    max_attempts: Option<u32>,
    give_up_on: Vec<u16>,
}

/// The statuses `give_up_on` may list: failures only (2xx is success and 1xx never final), so a
/// listed status can end a delivery. A config loader refuses others where they are written.
pub const GIVE_UP_STATUSES: std::ops::RangeInclusive<u16> = 300..=599;

/// Why a policy is refused: every problem found, in the order of [`Policy::try_new`]'s
/// arguments, so that a config loader can show each where it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidPolicy {
    /// Never empty.
    pub problems: Vec<Problem>,
}

/// One thing wrong with a policy, naming the setting to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("retry.initial must be more than 0")]
    ZeroInitial,
    #[error("retry.max_interval must be more than 0")]
    ZeroMaxInterval,
    #[error("retry.max_age must be more than 0")]
    ZeroMaxAge,
    #[error("retry.initial ({initial:?}) must not exceed retry.max_interval ({max_interval:?})")]
    InitialAboveMax {
        initial: Duration,
        max_interval: Duration,
    },
    #[error("retry.max_attempts must be at least 1")]
    ZeroAttempts,
    /// The status, and where it is in `give_up_on`.
    #[error(
        "retry.give_up_on: {status} is not a failure status ({}-{})",
        GIVE_UP_STATUSES.start(),
        GIVE_UP_STATUSES.end()
    )]
    BadStatus { index: usize, status: u16 },
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

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: None,
            give_up_on: vec![410],
        }
    }
}

impl Policy {
    /// The one validation of a policy: every delay more than 0, `initial` not above
    /// `max_interval`, at least one attempt, and only [`GIVE_UP_STATUSES`] in `give_up_on`.
    pub fn try_new(
        initial: Duration,
        max_interval: Duration,
        max_age: Duration,
        max_attempts: Option<u32>,
        give_up_on: Vec<u16>,
    ) -> Result<Policy, InvalidPolicy> {
        let mut problems = Vec::new();
        for (value, problem) in [
            (initial, Problem::ZeroInitial),
            (max_interval, Problem::ZeroMaxInterval),
            (max_age, Problem::ZeroMaxAge),
        ] {
            if value.is_zero() {
                problems.push(problem);
            }
        }
        if initial > max_interval {
            problems.push(Problem::InitialAboveMax {
                initial,
                max_interval,
            });
        }
        if max_attempts == Some(0) {
            problems.push(Problem::ZeroAttempts);
        }
        problems.extend(
            give_up_on
                .iter()
                .enumerate()
                .filter(|(_, status)| !GIVE_UP_STATUSES.contains(*status))
                .map(|(index, &status)| Problem::BadStatus { index, status }),
        );
        if !problems.is_empty() {
            return Err(InvalidPolicy { problems });
        }
        Ok(Policy {
            initial,
            max_interval,
            max_age,
            max_attempts,
            give_up_on,
        })
    }

    /// The delay before the first retry.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest delay between two attempts.
    pub fn max_interval(&self) -> Duration {
        self.max_interval
    }

    /// How long after arrival (or a re-queue) the last attempt may come.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The most attempts made; `None`: no limit but `max_age`.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Statuses that dead-letter at once.
    pub fn give_up_on(&self) -> &[u16] {
        &self.give_up_on
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
            "retry.give_up_on: 1000 is not a failure status (300-599)"
        );
    }

    #[test]
    fn give_up_on_lists_failure_statuses_only() {
        // A 2xx is delivered and a 1xx never final, so listing one could never end a delivery;
        // config refused them while this constructor took anything from 100 to 599.
        let refused = Policy::try_new(S, S, S, None, vec![410, 200, 101]).unwrap_err();
        assert_eq!(
            refused.problems,
            [
                Problem::BadStatus {
                    index: 1,
                    status: 200
                },
                Problem::BadStatus {
                    index: 2,
                    status: 101
                }
            ]
        );
        assert!(Policy::try_new(S, S, S, None, vec![300, 599]).is_ok());
    }

    #[test]
    fn every_problem_is_reported_and_no_delay_is_zero() {
        let refused =
            Policy::try_new(2 * S, Duration::ZERO, Duration::ZERO, Some(0), vec![]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "retry.max_interval must be more than 0; retry.max_age must be more than 0; \
             retry.initial (2s) must not exceed retry.max_interval (0ns); \
             retry.max_attempts must be at least 1"
        );
    }

    #[test]
    fn the_default_is_the_designs_policy() {
        let p = Policy::default();
        assert_eq!(
            Policy::try_new(S, 3600 * S, 24 * 3600 * S, None, vec![410]),
            Ok(p.clone())
        );
        assert_eq!(
            (p.initial(), p.max_interval(), p.max_age()),
            (S, 3600 * S, 24 * 3600 * S)
        );
        assert_eq!((p.max_attempts(), p.give_up_on()), (None, &[410][..]));
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
