//! whimp's metrics (names from `telemetry::names`). Handles are looked up once per route and
//! backend when the route table is built, so the hot path only bumps atomics.

use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};
use telemetry::{names, ConfigGauges, ConfigNames, SpoolGauges};

/// Every metric whimp exports, registered once at start.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub forward_attempts: IntCounterVec,
    pub forward_duration: Histogram,
    pub spool_messages: SpoolGauges,
    pub dead_letters: IntCounter,
    /// Reload outcome, certificate expiry and build info.
    pub config: ConfigGauges,
    pub connections_dropped: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = telemetry::registry();
        Metrics {
            requests: telemetry::counter_vec(
                &registry,
                names::WHIMP_REQUESTS_TOTAL,
                "Requests received, by route name and answer code.",
                &["route", "code"],
            ),
            forward_attempts: telemetry::counter_vec(
                &registry,
                names::WHIMP_FORWARD_ATTEMPTS_TOTAL,
                "Forward attempts, by backend (route/n) and outcome.",
                &["backend", "outcome"],
            ),
            forward_duration: telemetry::duration_histogram(
                &registry,
                names::WHIMP_FORWARD_DURATION_SECONDS,
                "Duration of forward attempts.",
            ),
            spool_messages: SpoolGauges::new(
                &registry,
                names::WHIMP_SPOOL_MESSAGES,
                names::WHIMP_SPOOL_OLDEST_MESSAGE_AGE_SECONDS,
                names::WHIMP_READY,
            ),
            dead_letters: telemetry::counter(
                &registry,
                names::WHIMP_DEAD_LETTERS_TOTAL,
                "Messages given up on (moved to dead/).",
            ),
            config: ConfigGauges::new(
                &registry,
                ConfigNames {
                    reload_successful: names::WHIMP_CONFIG_LAST_RELOAD_SUCCESSFUL,
                    reload_success_timestamp:
                        names::WHIMP_CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
                    certificate_expiry: names::WHIMP_TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
                    build_info: names::WHIMP_BUILD_INFO,
                },
                env!("CARGO_PKG_VERSION"),
            ),
            connections_dropped: telemetry::connections_dropped(
                &registry,
                names::WHIMP_CONNECTIONS_DROPPED_TOTAL,
            ),
            registry,
        }
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
