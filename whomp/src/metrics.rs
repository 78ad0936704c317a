//! whomp's metrics (names from `telemetry::names`), registered once at start. Every label value
//! comes from a closed set (submission outcomes, netguard's rule names, attempt outcomes), and
//! every series is created up front so a scrape shows zeros rather than nothing.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use telemetry::names;

/// Every metric whomp exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub submissions: IntCounterVec,
    pub preflight_rejections: IntCounterVec,
    pub delivery_attempts: IntCounterVec,
    pub delivery_duration: Histogram,
    pub spool_messages: IntGaugeVec,
    pub dead_letters: IntCounter,
}

/// The submission outcomes, in the order they are pre-registered.
pub const SUBMISSION_OUTCOMES: [&str; 7] = [
    names::SUBMISSION_ACCEPTED,
    names::SUBMISSION_DUPLICATE,
    names::SUBMISSION_INVALID,
    names::SUBMISSION_REJECTED,
    names::SUBMISSION_UNAUTHORIZED,
    names::SUBMISSION_TOO_LARGE,
    names::SUBMISSION_UNAVAILABLE,
];

const ATTEMPT_OUTCOMES: [&str; 5] = [
    names::OUTCOME_DELIVERED,
    names::OUTCOME_RETRY,
    names::OUTCOME_ERROR,
    names::OUTCOME_DEAD,
    names::OUTCOME_REJECTED,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = telemetry::registry();
        let submissions = IntCounterVec::new(
            Opts::new(
                names::WHOMP_SUBMISSIONS_TOTAL,
                "Submissions to POST /v1/messages, by outcome.",
            ),
            &["outcome"],
        )
        .unwrap_or_else(unreachable);
        let preflight_rejections = IntCounterVec::new(
            Opts::new(
                names::WHOMP_PREFLIGHT_REJECTIONS_TOTAL,
                "Targets refused by pre-flight, at submission or at an attempt, by rule.",
            ),
            &["rule"],
        )
        .unwrap_or_else(unreachable);
        let delivery_attempts = IntCounterVec::new(
            Opts::new(
                names::WHOMP_DELIVERY_ATTEMPTS_TOTAL,
                "Delivery attempts, by outcome.",
            ),
            &["outcome"],
        )
        .unwrap_or_else(unreachable);
        let delivery_duration = Histogram::with_opts(
            HistogramOpts::new(
                names::WHOMP_DELIVERY_DURATION_SECONDS,
                "Duration of delivery attempts that connected or tried to.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .unwrap_or_else(unreachable);
        let spool_messages = IntGaugeVec::new(
            Opts::new(
                names::WHOMP_SPOOL_MESSAGES,
                "Messages in the spool waiting for delivery, by state.",
            ),
            &["state"],
        )
        .unwrap_or_else(unreachable);
        let dead_letters = IntCounter::new(
            names::WHOMP_DEAD_LETTERS_TOTAL,
            "Messages given up on (moved to dead/).",
        )
        .unwrap_or_else(unreachable);
        for collector in [
            Box::new(submissions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(preflight_rejections.clone()),
            Box::new(delivery_attempts.clone()),
            Box::new(delivery_duration.clone()),
            Box::new(spool_messages.clone()),
            Box::new(dead_letters.clone()),
        ] {
            let _ = registry.register(collector);
        }
        for outcome in SUBMISSION_OUTCOMES {
            submissions.with_label_values(&[outcome]);
        }
        for rule in netguard::Rule::ALL {
            preflight_rejections.with_label_values(&[rule.as_str()]);
        }
        for outcome in ATTEMPT_OUTCOMES {
            delivery_attempts.with_label_values(&[outcome]);
        }
        let metrics = Metrics {
            registry,
            submissions,
            preflight_rejections,
            delivery_attempts,
            delivery_duration,
            spool_messages,
            dead_letters,
        };
        metrics.refresh(spool::Counts::default());
        metrics
    }

    /// Counts one submission.
    pub fn submission(&self, outcome: &str) {
        self.submissions.with_label_values(&[outcome]).inc();
    }

    /// Counts one pre-flight refusal.
    pub fn rejected(&self, rule: netguard::Rule) {
        self.preflight_rejections
            .with_label_values(&[rule.as_str()])
            .inc();
    }

    /// Brings the spool gauges up to date (called before each scrape).
    pub fn refresh(&self, counts: spool::Counts) {
        self.spool_messages
            .with_label_values(&[names::STATE_QUEUED])
            .set(counts.queued as i64);
        self.spool_messages
            .with_label_values(&[names::STATE_RETRYING])
            .set(counts.retrying as i64);
        self.spool_messages
            .with_label_values(&[names::STATE_IN_FLIGHT])
            .set(counts.in_flight as i64);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Metric construction fails only for invalid names or label sets, which are constants here.
fn unreachable<T>(e: prometheus::Error) -> T {
    panic!("invalid metric definition: {e}")
}
