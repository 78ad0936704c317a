//! What operators see of a daemon: logs (stderr or syslog), Prometheus metrics and the admin
//! endpoints `/metrics`, `/healthz` and `/readyz` (served by `daemon::listen`, with the same
//! deadlines as the daemon's other listeners).
//!
//! Metric names live in [`names`], once, so the daemons and the tests that scrape them cannot
//! drift apart. Readiness is a cheap closure over in-memory state: no I/O in a probe.

pub mod names;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing_subscriber::fmt::MakeWriter;

/// A response from the admin listener.
pub type AdminResponse = Response<Full<Bytes>>;

/// A daemon's own admin endpoints beyond the standard three: gets method, path and body,
/// answers `None` for "not mine" (404).
pub type Extra = Arc<
    dyn Fn(Method, String, Bytes) -> Pin<Box<dyn Future<Output = Option<AdminResponse>> + Send>>
        + Send
        + Sync,
>;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open syslog (another logger is already open)")]
    Syslog,
    #[error("a logger is already installed")]
    AlreadySet,
}

/// Where syslog(3) sends its lines.
const SYSLOG_SOCKET: &str = "/dev/log";

/// Starts logging per the `log:` section: to syslog with the given facility, or to stderr, as
/// text or JSON lines. `ident` is the program name syslog shows. Syslog without a syslog socket
/// would drop every line without a word: then logging goes to stderr, and says why.
pub fn init_logging(log: &config::Log, ident: &'static std::ffi::CStr) -> Result<(), LogError> {
    let level = match log.level {
        config::LogLevel::Error => tracing::Level::ERROR,
        config::LogLevel::Warn => tracing::Level::WARN,
        config::LogLevel::Info => tracing::Level::INFO,
        config::LogLevel::Debug => tracing::Level::DEBUG,
        config::LogLevel::Trace => tracing::Level::TRACE,
    };
    let json = log.format == config::LogFormat::Json;
    let unreachable = match log.syslog {
        true => syslog_reachable(std::path::Path::new(SYSLOG_SOCKET)).err(),
        false => None,
    };
    if log.syslog && unreachable.is_none() {
        let facility = facility(log.facility);
        let writer = syslog_tracing::Syslog::new(ident, syslog_tracing::Options::LOG_PID, facility)
            .ok_or(LogError::Syslog)?;
        // syslog stamps time and host itself.
        return install(writer, level, json, false);
    }
    install(std::io::stderr, level, json, true)?;
    if let Some(error) = unreachable {
        tracing::warn!(
            socket = SYSLOG_SOCKET,
            %error,
            "log.syslog is on but the syslog socket cannot be reached; logging to stderr"
        );
    }
    Ok(())
}

/// Whether a syslog daemon listens at `socket` (a datagram socket, or a stream one).
fn syslog_reachable(socket: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::net::{UnixDatagram, UnixStream};
    match UnixDatagram::unbound()?.connect(socket) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PROTOTYPE.raw_os_error()) => {
            UnixStream::connect(socket).map(drop)
        }
        other => other,
    }
}

fn install<W>(writer: W, level: tracing::Level, json: bool, stamp: bool) -> Result<(), LogError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let result = match (json, stamp) {
        (true, _) => builder.event_format(JsonLines).try_init(),
        (false, true) => builder.try_init(),
        (false, false) => builder.without_time().try_init(),
    };
    result.map_err(|_| LogError::AlreadySet)
}

/// `log.format: json`: one object per event, `{"time", "level", "message", "fields"}`, the way
/// log shippers take them (time in RFC 3339 UTC, level in lowercase, fields with their types).
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let line = serde_json::json!({
            "time": rfc3339(now_ms()),
            "level": event.metadata().level().as_str().to_ascii_lowercase(),
            "message": fields.message,
            "fields": fields.fields,
        });
        writeln!(writer, "{line}")
    }
}

/// An event's fields as JSON values; `message` apart.
#[derive(Default)]
struct JsonFields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(text)) => self.message = text,
            (name, value) => {
                self.fields.insert(name.to_owned(), value);
            }
        }
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // `%value` and the message arrive here already in their display form.
        self.put(field, format!("{value:?}").into());
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn facility(f: config::Facility) -> syslog_tracing::Facility {
    use config::Facility as C;
    use syslog_tracing::Facility as S;
    match f {
        C::Daemon => S::Daemon,
        C::User => S::User,
        C::Local0 => S::Local0,
        C::Local1 => S::Local1,
        C::Local2 => S::Local2,
        C::Local3 => S::Local3,
        C::Local4 => S::Local4,
        C::Local5 => S::Local5,
        C::Local6 => S::Local6,
        C::Local7 => S::Local7,
    }
}

/// `2026-11-23T11:35:36.123Z` from ms since the epoch: the one way times are written, in logs,
/// the spool CLI and whomp's status API.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm): the
/// inverse of the date half of [`rfc3339`], for the places that read such times back.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// At most one log line per interval for an event that can repeat per request: while the spool
/// or the cluster cannot store, every request is answered 503, and a line for each (hundreds a
/// second during a cluster's leader election) would bury the one that matters. The metrics count
/// every such answer; the line says how many it stands for.
pub struct Throttle {
    every_ms: u64,
    /// When the last line was let through, ms since the epoch (0: never).
    last_ms: std::sync::atomic::AtomicU64,
    skipped: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub const fn new(every: std::time::Duration) -> Throttle {
        Throttle {
            every_ms: every.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` the events since the last line that had
    /// none; `None` (counted) otherwise.
    pub fn check(&self) -> Option<u64> {
        self.check_at(now_ms())
    }

    fn check_at(&self, now: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let last = self.last_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.skipped.swap(0, Relaxed));
        }
        self.skipped.fetch_add(1, Relaxed);
        None
    }
}

/// A registry with the process metrics (`process_*`: CPU, memory, file descriptors) in it.
pub fn registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    {
        // Registration only fails on a duplicate, impossible in a fresh registry.
        let _ = registry.register(Box::new(Process::new()));
    }
    registry
}

/// The `process_*` metrics of prometheus' own collector, except `process_cpu_seconds_total`:
/// that one counts whole seconds, so a daemon using a tenth of a core shows no CPU at all
/// between scrapes. Ours is read from the process CPU clock, in nanoseconds.
#[cfg(target_os = "linux")]
struct Process {
    others: prometheus::process_collector::ProcessCollector,
    cpu: prometheus::Counter,
}

#[cfg(target_os = "linux")]
impl Process {
    fn new() -> Process {
        let name = names::PROCESS_CPU_SECONDS_TOTAL;
        let help = "Total user and system CPU time spent in seconds.";
        Process {
            others: prometheus::process_collector::ProcessCollector::for_self(),
            cpu: prometheus::Counter::new(name, help).unwrap_or_else(|e| invalid(name, e)),
        }
    }
}

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for Process {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let others = self.others.desc().into_iter();
        others
            .filter(|d| d.fq_name != names::PROCESS_CPU_SECONDS_TOTAL)
            .chain(self.cpu.desc())
            .collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let used = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        let seconds = used.tv_sec as f64 + used.tv_nsec as f64 / 1e9;
        // A counter only goes up: add what was used since the last scrape (two scrapes at once
        // may both see the same past; the later one then adds nothing).
        self.cpu.inc_by((seconds - self.cpu.get()).max(0.0));
        let others = self.others.collect().into_iter();
        others
            .filter(|mf| mf.name() != names::PROCESS_CPU_SECONDS_TOTAL)
            .chain(self.cpu.collect())
            .collect()
    }
}

/// Buckets of the `*_duration_seconds` histograms: 1 ms to 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A counter family with `labels`, registered in `registry`.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| invalid(name, e));
    register(registry, name, Box::new(metric.clone()));
    metric
}

/// A plain counter, registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| invalid(name, e));
    register(registry, name, Box::new(metric.clone()));
    metric
}

/// A duration histogram with [`DURATION_BUCKETS`], registered in `registry`.
pub fn duration_histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    let metric = Histogram::with_opts(opts).unwrap_or_else(|e| invalid(name, e));
    register(registry, name, Box::new(metric.clone()));
    metric
}

/// `*_connections_dropped_total{reason}`, with both reasons at zero from the start.
pub fn connections_dropped(registry: &Registry, name: &str) -> IntCounterVec {
    let metric = counter_vec(
        registry,
        name,
        "Connections closed by the daemon unasked: over the per-source cap at accept, or idle past header_timeout.",
        &["reason"],
    );
    for reason in [names::DROPPED_SOURCE_LIMIT, names::DROPPED_IDLE] {
        metric.with_label_values(&[reason]);
    }
    metric
}

/// The spool gauges of a daemon: `*_spool_messages{state}`,
/// `*_spool_oldest_message_age_seconds` and `*_ready`.
#[derive(Clone)]
pub struct SpoolGauges {
    messages: IntGaugeVec,
    oldest: prometheus::Gauge,
    ready: IntGauge,
}

impl SpoolGauges {
    pub fn new(registry: &Registry, messages: &str, oldest: &str, ready: &str) -> SpoolGauges {
        let opts = Opts::new(
            messages,
            "Messages in the spool waiting for delivery, by state.",
        );
        let by_state = IntGaugeVec::new(opts, &["state"]).unwrap_or_else(|e| invalid(messages, e));
        register(registry, messages, Box::new(by_state.clone()));
        let help = "Age of the oldest message still to deliver, 0 when none.";
        let age = prometheus::Gauge::new(oldest, help).unwrap_or_else(|e| invalid(oldest, e));
        register(registry, oldest, Box::new(age.clone()));
        let help = "1 while the spool can store messages (/readyz answers 200), 0 otherwise.";
        let up = IntGauge::new(ready, help).unwrap_or_else(|e| invalid(ready, e));
        register(registry, ready, Box::new(up.clone()));
        let gauges = SpoolGauges {
            messages: by_state,
            oldest: age,
            ready: up,
        };
        gauges.set(0, 0, 0, std::time::Duration::ZERO);
        gauges.set_ready(true);
        gauges
    }

    /// Sets the ready gauge: whether the spool can store messages.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets the gauges: queued (never attempted), retrying, in flight right now, and the age of
    /// the oldest message still to deliver.
    pub fn set(
        &self,
        queued: usize,
        retrying: usize,
        in_flight: usize,
        oldest: std::time::Duration,
    ) {
        for (state, n) in [
            (names::STATE_QUEUED, queued),
            (names::STATE_RETRYING, retrying),
            (names::STATE_IN_FLIGHT, in_flight),
        ] {
            self.messages
                .with_label_values(&[state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.oldest.set(oldest.as_secs_f64());
    }
}

/// The names of a daemon's [`ConfigGauges`], from [`names`].
#[derive(Debug, Clone, Copy)]
pub struct ConfigNames {
    pub reload_successful: &'static str,
    pub reload_success_timestamp: &'static str,
    pub certificate_expiry: &'static str,
    pub build_info: &'static str,
}

/// What config a daemon runs: whether its last reload took, since when, when its certificates
/// expire, and its version (`*_build_info`).
#[derive(Clone)]
pub struct ConfigGauges {
    reload_successful: prometheus::IntGauge,
    reload_success_timestamp: prometheus::Gauge,
    certificate_expiry: IntGaugeVec,
}

impl ConfigGauges {
    /// Registers the gauges, with `*_build_info{version}` set to 1 and the config counted as
    /// loaded now (a daemon registers them once its config is in use).
    pub fn new(registry: &Registry, names: ConfigNames, version: &str) -> ConfigGauges {
        let help = "1 if the last config reload (or the start) succeeded, 0 if it was refused.";
        let ok = prometheus::IntGauge::new(names.reload_successful, help)
            .unwrap_or_else(|e| invalid(names.reload_successful, e));
        register(registry, names.reload_successful, Box::new(ok.clone()));
        let help = "When the config was last loaded successfully, in Unix seconds.";
        let at = prometheus::Gauge::new(names.reload_success_timestamp, help)
            .unwrap_or_else(|e| invalid(names.reload_success_timestamp, e));
        register(
            registry,
            names.reload_success_timestamp,
            Box::new(at.clone()),
        );
        let opts = Opts::new(
            names.certificate_expiry,
            "When the certificate in use expires, in Unix seconds, by listener address.",
        );
        let expiry = IntGaugeVec::new(opts, &["listener"])
            .unwrap_or_else(|e| invalid(names.certificate_expiry, e));
        register(registry, names.certificate_expiry, Box::new(expiry.clone()));
        let opts = Opts::new(names.build_info, "Always 1; the version in a label.");
        let info =
            IntGaugeVec::new(opts, &["version"]).unwrap_or_else(|e| invalid(names.build_info, e));
        register(registry, names.build_info, Box::new(info.clone()));
        info.with_label_values(&[version]).set(1);
        let gauges = ConfigGauges {
            reload_successful: ok,
            reload_success_timestamp: at,
            certificate_expiry: expiry,
        };
        gauges.reloaded(true);
        gauges
    }

    /// Records a reload's outcome; a success also moves the timestamp to now.
    pub fn reloaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.reload_success_timestamp.set(now.as_secs_f64());
        }
    }

    /// Records when the certificate of the listener at `listener` expires (Unix seconds).
    pub fn certificate_expiry(&self, listener: &str, not_after: i64) {
        self.certificate_expiry
            .with_label_values(&[listener])
            .set(not_after);
    }
}

fn register(registry: &Registry, name: &str, collector: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = registry.register(collector) {
        invalid::<()>(name, e);
    }
}

/// Metric definitions are constants: an invalid or duplicate one is a programming error that
/// the first test to start a daemon catches.
fn invalid<T>(name: &str, e: prometheus::Error) -> T {
    panic!("invalid metric definition {name}: {e}")
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec fails only on inconsistent metric families, which we never build.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    out
}

/// The admin endpoints: `/metrics`, `/healthz`, `/readyz`, and the daemon's [`Extra`] routes.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    /// `None` when ready, otherwise why not (logged by the daemon; never shown to callers).
    pub readiness: Arc<dyn Fn() -> Option<String> + Send + Sync>,
    /// Called before each scrape to bring gauges up to date.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
    pub extra: Option<Extra>,
}

impl Admin {
    /// Answers one request; the daemon serves these through its listener plumbing
    /// (`daemon::listen`), with the same deadlines as its other listeners.
    pub async fn handle<B>(&self, req: Request<B>) -> AdminResponse
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => {
                (self.refresh)();
                let mut resp = text(StatusCode::OK, render(&self.registry));
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => match (self.readiness)() {
                None => text(StatusCode::OK, "ready\n"),
                Some(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            },
            _ => {
                let Some(extra) = &self.extra else {
                    return text(StatusCode::NOT_FOUND, "not found\n");
                };
                use http_body_util::BodyExt;
                let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
                    .collect()
                    .await
                {
                    Ok(body) => body.to_bytes(),
                    Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
                };
                match extra(method, path, body).await {
                    Some(resp) => resp,
                    None => text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(std::time::Duration::from_secs(1));
        assert_eq!(throttle.check_at(10_000), Some(0));
        assert_eq!(throttle.check_at(10_001), None);
        assert_eq!(throttle.check_at(10_999), None);
        assert_eq!(throttle.check_at(11_000), Some(2), "the two held back");
        assert_eq!(throttle.check_at(11_500), None);
        assert_eq!(throttle.check_at(20_000), Some(1));
    }

    async fn call(admin: &Admin, method: Method, path: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = admin.handle(req).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A writer that keeps what is written, for checking log lines.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_time_level_message_and_typed_fields() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other("connection refused");
            tracing::warn!(id = "01J", status = 503_u16, retry = true, %error, "attempt failed; will retry");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "attempt failed; will retry");
        assert_eq!(
            line["fields"],
            serde_json::json!({"id": "01J", "status": 503, "retry": true, "error": "connection refused"})
        );
        let time = line["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    }

    #[test]
    fn syslog_is_reachable_only_where_something_listens() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        assert!(syslog_reachable(&socket).is_err(), "no socket");
        let _daemon = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        syslog_reachable(&socket).unwrap();
        let stream = dir.path().join("stream");
        let _listener = std::os::unix::net::UnixListener::bind(&stream).unwrap();
        syslog_reachable(&stream).unwrap();
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let registry = registry();
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(names::WHIMP_REQUESTS_TOTAL, "requests"),
            &["route", "code"],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.with_label_values(&["paypal", "200"]).inc();
        let ready = Arc::new(AtomicBool::new(true));
        let flag = ready.clone();
        let admin = Admin {
            registry,
            readiness: Arc::new(move || {
                (!flag.load(Ordering::SeqCst)).then(|| "disk full".to_owned())
            }),
            refresh: Arc::new(|| {}),
            extra: Some(Arc::new(|method, path, _body| {
                Box::pin(async move {
                    (method == Method::POST && path == "/spool/x")
                        .then(|| text(StatusCode::ACCEPTED, "queued\n"))
                })
            })),
        };

        let (status, metrics) = call(&admin, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{metrics}");
        assert!(
            metrics.contains("whimp_requests_total{code=\"200\",route=\"paypal\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("process_resident_memory_bytes"),
            "{metrics}"
        );
        assert_eq!(
            call(&admin, Method::GET, "/healthz").await.0,
            StatusCode::OK
        );
        assert_eq!(call(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);
        ready.store(false, Ordering::SeqCst);
        let (status, not_ready) = call(&admin, Method::GET, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !not_ready.contains("disk full"),
            "no internals in the answer"
        );
        assert_eq!(
            call(&admin, Method::GET, "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&admin, Method::POST, "/spool/x").await.0,
            StatusCode::ACCEPTED
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_seconds_are_counted_with_fractions() {
        use rustix::time::{clock_gettime, ClockId};
        let cpu = || {
            let t = clock_gettime(ClockId::ProcessCPUTime);
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        };
        // Use some CPU: far less than a second, which whole seconds would round away.
        let start = cpu();
        let mut x = 0u64;
        while cpu() < start + 0.02 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let page = String::from_utf8(render(&registry())).unwrap();
        let samples: Vec<f64> = page
            .lines()
            .filter_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(samples.len(), 1, "one sample of the family: {page}");
        let seconds = samples[0];
        assert!(seconds >= start + 0.02, "{seconds} counts the CPU used");
        assert_ne!(seconds, seconds.trunc(), "{seconds} has a fraction");
        assert!(page.contains("process_resident_memory_bytes"), "{page}");
    }
}
