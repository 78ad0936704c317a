//! Every metric name and label the daemons export, in one place (DESIGN "Shared surface").
//! Label values come from closed sets: route and backend names from config, outcomes from the
//! constants below; never URLs, paths or error strings.

/// Requests received by whimp, `{route, code}`; unknown paths count under [`UNKNOWN_ROUTE`].
pub const WHIMP_REQUESTS_TOTAL: &str = "whimp_requests_total";
/// Forward attempts, `{backend, outcome}`; backend is `<route>/<n>`.
pub const WHIMP_FORWARD_ATTEMPTS_TOTAL: &str = "whimp_forward_attempts_total";
/// Forward attempt durations.
pub const WHIMP_FORWARD_DURATION_SECONDS: &str = "whimp_forward_duration_seconds";
/// Messages in whimp's spool, `{state}`.
pub const WHIMP_SPOOL_MESSAGES: &str = "whimp_spool_messages";
/// Age of the oldest message whimp still has to deliver (0 when none).
pub const WHIMP_SPOOL_OLDEST_MESSAGE_AGE_SECONDS: &str = "whimp_spool_oldest_message_age_seconds";
/// Messages whimp gave up on.
pub const WHIMP_DEAD_LETTERS_TOTAL: &str = "whimp_dead_letters_total";
/// 1 if whimp's last config reload (or its start) succeeded, 0 if the last reload was refused.
pub const WHIMP_CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "whimp_config_last_reload_successful";
/// When whimp last loaded its config successfully (start or reload), Unix seconds.
pub const WHIMP_CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "whimp_config_last_reload_success_timestamp_seconds";
/// When the certificate in use expires, Unix seconds, `{listener}` (its configured address).
pub const WHIMP_TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "whimp_tls_certificate_expiry_timestamp_seconds";
/// Always 1, `{version}`.
pub const WHIMP_BUILD_INFO: &str = "whimp_build_info";
/// 1 while whimp's spool can store messages (`/readyz` answers 200), 0 otherwise.
pub const WHIMP_READY: &str = "whimp_ready";
/// Connections whimp's public listeners closed unasked, `{reason}` (one of the `DROPPED_*`).
pub const WHIMP_CONNECTIONS_DROPPED_TOTAL: &str = "whimp_connections_dropped_total";

/// Submissions to whomp, `{outcome}` (one of the `SUBMISSION_*` values).
pub const WHOMP_SUBMISSIONS_TOTAL: &str = "whomp_submissions_total";
/// Pre-flight refusals, `{rule}` (netguard's closed rule names).
pub const WHOMP_PREFLIGHT_REJECTIONS_TOTAL: &str = "whomp_preflight_rejections_total";
/// Delivery attempts, `{outcome}`.
pub const WHOMP_DELIVERY_ATTEMPTS_TOTAL: &str = "whomp_delivery_attempts_total";
/// Delivery attempt durations.
pub const WHOMP_DELIVERY_DURATION_SECONDS: &str = "whomp_delivery_duration_seconds";
/// Messages in whomp's spool, `{state}`.
pub const WHOMP_SPOOL_MESSAGES: &str = "whomp_spool_messages";
/// Age of the oldest message whomp still has to deliver (0 when none).
pub const WHOMP_SPOOL_OLDEST_MESSAGE_AGE_SECONDS: &str = "whomp_spool_oldest_message_age_seconds";
/// Messages whomp gave up on.
pub const WHOMP_DEAD_LETTERS_TOTAL: &str = "whomp_dead_letters_total";
/// 1 if whomp's last config reload (or its start) succeeded, 0 if the last reload was refused.
pub const WHOMP_CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "whomp_config_last_reload_successful";
/// When whomp last loaded its config successfully (start or reload), Unix seconds.
pub const WHOMP_CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "whomp_config_last_reload_success_timestamp_seconds";
/// When the certificate in use expires, Unix seconds, `{listener}` (its configured address).
pub const WHOMP_TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "whomp_tls_certificate_expiry_timestamp_seconds";
/// Always 1, `{version}`.
pub const WHOMP_BUILD_INFO: &str = "whomp_build_info";
/// 1 while whomp's spool can store messages (`/readyz` answers 200), 0 otherwise.
pub const WHOMP_READY: &str = "whomp_ready";

/// CPU time the process has used, user and system, in seconds (with fractions).
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
/// Connections whomp's submit listeners closed unasked, `{reason}` (one of the `DROPPED_*`).
pub const WHOMP_CONNECTIONS_DROPPED_TOTAL: &str = "whomp_connections_dropped_total";

/// The `route` label of requests to paths no route has.
pub const UNKNOWN_ROUTE: &str = "unknown";

/// `outcome` of an attempt: a 2xx came back.
pub const OUTCOME_DELIVERED: &str = "delivered";
/// `outcome` of an attempt: another status came back, to be retried.
pub const OUTCOME_RETRY: &str = "retry";
/// `outcome` of an attempt: no response (connect error, reset, timeout).
pub const OUTCOME_ERROR: &str = "error";
/// `outcome` of an attempt that ended in giving up.
pub const OUTCOME_DEAD: &str = "dead";
/// `outcome` of an attempt refused by pre-flight before connecting (whomp).
pub const OUTCOME_REJECTED: &str = "rejected";

/// `outcome` of a submission to whomp: stored, `202`.
pub const SUBMISSION_ACCEPTED: &str = "accepted";
/// `outcome` of a submission whose `Idempotency-Key` was seen before: the first id, `202`.
pub const SUBMISSION_DUPLICATE: &str = "duplicate";
/// `outcome` of a malformed submission, `400` (or `415` for an unknown content type).
pub const SUBMISSION_INVALID: &str = "invalid";
/// `outcome` of a submission refused by pre-flight, `422`.
pub const SUBMISSION_REJECTED: &str = "rejected";
/// `outcome` of a submission without a valid bearer token, `401`.
pub const SUBMISSION_UNAUTHORIZED: &str = "unauthorized";
/// `outcome` of a submission over `limits.max_body_bytes`, `413`.
pub const SUBMISSION_TOO_LARGE: &str = "too_large";
/// `outcome` of a submission the spool could not store, `503`.
pub const SUBMISSION_UNAVAILABLE: &str = "unavailable";

/// `reason` of a dropped connection: closed at accept, its source address (an IPv4 address or
/// an IPv6 /64) had its share of the connections open already.
pub const DROPPED_SOURCE_LIMIT: &str = "source_limit";
/// `reason` of a dropped connection: closed after `header_timeout` without a request in
/// progress (TLS handshake, first request head, keep-alive, HTTP/2 without a stream).
pub const DROPPED_IDLE: &str = "idle";

/// `state` label values of `*_spool_messages`.
pub const STATE_QUEUED: &str = "queued";
pub const STATE_RETRYING: &str = "retrying";
pub const STATE_IN_FLIGHT: &str = "in_flight";
