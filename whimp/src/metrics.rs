//! whimp's metrics (names from `telemetry::names`). Handles are looked up once per route and
//! backend when the route table is built, so the hot path only bumps atomics.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use telemetry::names;

/// Every metric whimp exports, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub forward_attempts: IntCounterVec,
    pub forward_duration: Histogram,
    pub spool_messages: IntGaugeVec,
    pub dead_letters: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = telemetry::registry();
        let requests = IntCounterVec::new(
            Opts::new(
                names::WHIMP_REQUESTS_TOTAL,
                "Requests received, by route name and answer code.",
            ),
            &["route", "code"],
        )
        .unwrap_or_else(unreachable);
        let forward_attempts = IntCounterVec::new(
            Opts::new(
                names::WHIMP_FORWARD_ATTEMPTS_TOTAL,
                "Forward attempts, by backend (route/n) and outcome.",
            ),
            &["backend", "outcome"],
        )
        .unwrap_or_else(unreachable);
        let forward_duration = Histogram::with_opts(
            HistogramOpts::new(
                names::WHIMP_FORWARD_DURATION_SECONDS,
                "Duration of forward attempts.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .unwrap_or_else(unreachable);
        let spool_messages = IntGaugeVec::new(
            Opts::new(
                names::WHIMP_SPOOL_MESSAGES,
                "Messages in the spool waiting for delivery, by state.",
            ),
            &["state"],
        )
        .unwrap_or_else(unreachable);
        let dead_letters = IntCounter::new(
            names::WHIMP_DEAD_LETTERS_TOTAL,
            "Messages given up on (moved to dead/).",
        )
        .unwrap_or_else(unreachable);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(forward_attempts.clone()),
            Box::new(forward_duration.clone()),
            Box::new(spool_messages.clone()),
            Box::new(dead_letters.clone()),
        ] {
            let _ = registry.register(collector);
        }
        Metrics {
            registry,
            requests,
            forward_attempts,
            forward_duration,
            spool_messages,
            dead_letters,
        }
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
