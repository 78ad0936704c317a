//! whomp's metrics (names from `telemetry::names`), registered once at start. Every label value
//! comes from a closed set (submission outcomes, netguard's rule names, attempt outcomes), and
//! every series is created up front so a scrape shows zeros rather than nothing.

use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};
use telemetry::{names, ConfigGauges, ConfigNames, SpoolGauges};

/// Every metric whomp exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub submissions: IntCounterVec,
    pub preflight_rejections: IntCounterVec,
    pub delivery_attempts: IntCounterVec,
    pub delivery_duration: Histogram,
    pub spool_messages: SpoolGauges,
    pub dead_letters: IntCounter,
    /// Reload outcome, certificate expiry and build info.
    pub config: ConfigGauges,
    pub connections_dropped: IntCounterVec,
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
        let submissions = telemetry::counter_vec(
            &registry,
            names::WHOMP_SUBMISSIONS_TOTAL,
            "Submissions to POST /v1/messages, by outcome.",
            &["outcome"],
        );
        let preflight_rejections = telemetry::counter_vec(
            &registry,
            names::WHOMP_PREFLIGHT_REJECTIONS_TOTAL,
            "Targets refused by pre-flight, at submission or at an attempt, by rule.",
            &["rule"],
        );
        let delivery_attempts = telemetry::counter_vec(
            &registry,
            names::WHOMP_DELIVERY_ATTEMPTS_TOTAL,
            "Delivery attempts, by outcome.",
            &["outcome"],
        );
        let delivery_duration = telemetry::duration_histogram(
            &registry,
            names::WHOMP_DELIVERY_DURATION_SECONDS,
            "Duration of delivery attempts that connected or tried to.",
        );
        let spool_messages = SpoolGauges::new(
            &registry,
            names::WHOMP_SPOOL_MESSAGES,
            names::WHOMP_SPOOL_OLDEST_MESSAGE_AGE_SECONDS,
            names::WHOMP_READY,
        );
        let dead_letters = telemetry::counter(
            &registry,
            names::WHOMP_DEAD_LETTERS_TOTAL,
            "Messages given up on (moved to dead/).",
        );
        let connections_dropped =
            telemetry::connections_dropped(&registry, names::WHOMP_CONNECTIONS_DROPPED_TOTAL);
        for outcome in SUBMISSION_OUTCOMES {
            submissions.with_label_values(&[outcome]);
        }
        for rule in netguard::Rule::ALL {
            preflight_rejections.with_label_values(&[rule.as_str()]);
        }
        for outcome in ATTEMPT_OUTCOMES {
            delivery_attempts.with_label_values(&[outcome]);
        }
        Metrics {
            submissions,
            preflight_rejections,
            delivery_attempts,
            delivery_duration,
            spool_messages,
            dead_letters,
            connections_dropped,
            config: ConfigGauges::new(
                &registry,
                ConfigNames {
                    reload_successful: names::WHOMP_CONFIG_LAST_RELOAD_SUCCESSFUL,
                    reload_success_timestamp:
                        names::WHOMP_CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
                    certificate_expiry: names::WHOMP_TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
                    build_info: names::WHOMP_BUILD_INFO,
                },
                env!("CARGO_PKG_VERSION"),
            ),
            registry,
        }
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
}

impl Metrics {
    /// What the admin listener exports, for [`daemon::Kit::open_doors`].
    pub fn exports(&self) -> daemon::kit::Exports {
        daemon::kit::Exports {
            registry: self.registry.clone(),
            gauges: self.spool_messages.clone(),
            dropped: self.connections_dropped.clone(),
        }
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
