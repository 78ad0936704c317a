//! The sections both daemons share (listeners, admin, spool, log, retry), in their typed form and
//! their raw form, and how one becomes the other. The `retry` section becomes a
//! [`retry::Policy`] itself: its checked constructor judges it, and this module says where.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use retry::Policy;
use serde::Deserialize;

use crate::check::Checker;
use crate::error::Location;
use crate::locate::Ptr;
use crate::value::{
    format_duration, whole, AddrValue, DurationValue, Flag, NatsUrlValue, Whole, Word,
};
use crate::Secret;

/// A socket the daemon accepts requests on, plain HTTP or TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: Option<Tls>,
}

/// A PEM certificate chain and its private key, both checked to be readable at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where `cert` and `key` are written in the file, so that a certificate or key that does not
    /// load (checked by the daemon, which reads TLS) is reported there.
    pub cert_at: Option<Location>,
    pub key_at: Option<Location>,
}

/// The admin listener (`/metrics`, `/healthz`, `/readyz`); default `127.0.0.1:9101` for whimp and
/// `127.0.0.1:9102` for whomp.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub addr: SocketAddr,
}

/// The maildir spool.
#[derive(Debug, Clone, PartialEq)]
pub struct Spool {
    /// Resolved against the config file's directory; default `/var/spool/whimp` or
    /// `/var/spool/whomp`.
    pub dir: PathBuf,
    /// Whether accepting a message waits for it to be on disk; default true.
    pub fsync: bool,
    /// How long `done/` messages are kept; default 7 days.
    pub retention: Duration,
}

/// Where messages are queued (`queue:`): the local maildir spool (the default; `spool:` says
/// where), or a NATS JetStream cluster that several nodes share (issue 12, docs/configure.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub backend: Backend,
    /// JetStream servers, `nats://` or `tls://`; default `["nats://127.0.0.1:4222"]`.
    pub servers: Vec<String>,
    /// Replicas of each stream and bucket (1 to 5); default the number of `servers`, at most 3.
    pub replicas: usize,
    /// Prefix of the streams and buckets, so deployments can share a cluster (`A-Z a-z 0-9 -
    /// _`, at most 32); default `whimp` or `whomp`.
    pub stream: String,
    /// A token the servers' `authorization` expects; exclusive with `user`/`password`.
    pub token: Option<Secret<String>>,
    /// User and password the servers' `authorization` expects; both or neither.
    pub user: Option<String>,
    pub password: Option<Secret<String>>,
    /// CAs (PEM) to verify the servers by; TLS is required when set. Checked to be readable.
    pub ca_file: Option<PathBuf>,
    /// How long a claimed message may go without an outcome before another node gets it;
    /// longer than any attempt; default 5m.
    pub ack_wait: Duration,
    /// How long a publish (or any request) may take before the queue is unavailable (503, not
    /// ready); default 5s.
    pub timeout: Duration,
}

/// Which storage backend queues messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Maildir,
    Jetstream,
}

/// Where logs go and how much of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: LogLevel,
    pub syslog: bool,
    pub facility: Facility,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: LogLevel::Info,
            syslog: false,
            facility: Facility::Daemon,
            format: LogFormat::Text,
        }
    }
}

/// How a log line is written; default `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `tracing`'s readable lines: `INFO delivered id=... status=200`.
    Text,
    /// One JSON object per line, `{"time", "level", "message", "fields"}`, for log shippers.
    Json,
}

/// The most detailed log level written; default `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level as written in the config, which is also what `tracing` filters accept.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The syslog facility; default `daemon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Daemon,
    User,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a listener mapping with `addr`")]
pub(crate) struct RawListener {
    addr: AddrValue,
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a `tls` mapping with `cert` and `key`"
)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an `admin` mapping")]
pub(crate) struct RawAdmin {
    pub(crate) addr: Option<AddrValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a `spool` mapping")]
pub(crate) struct RawSpool {
    dir: Option<PathBuf>,
    fsync: Option<Flag>,
    retention: Option<DurationValue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `queue` mapping")]
pub(crate) struct RawQueue {
    backend: Option<Word<Backend>>,
    servers: Option<Vec<NatsUrlValue>>,
    replicas: Option<Whole<usize, 1, 5>>,
    stream: Option<String>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    ack_wait: Option<DurationValue>,
    timeout: Option<DurationValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a `log` mapping")]
pub(crate) struct RawLog {
    level: Option<Word<LogLevel>>,
    syslog: Option<Flag>,
    facility: Option<Word<Facility>>,
    format: Option<Word<LogFormat>>,
}

/// Both the global `retry` and a route's partial override: every field optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `retry` mapping")]
pub(crate) struct RawRetry {
    initial: Option<DurationValue>,
    max_interval: Option<DurationValue>,
    max_age: Option<DurationValue>,
    max_attempts: Option<Whole<u32, 1>>,
    give_up_on: Option<Vec<GiveUpStatus>>,
}

/// A status `give_up_on` may list ([`retry::GIVE_UP_STATUSES`]), so that another one is reported
/// where it is written, with the other bad values.
type GiveUpStatus = Whole<
    u16,
    { *retry::GIVE_UP_STATUSES.start() as u64 },
    { *retry::GIVE_UP_STATUSES.end() as u64 },
>;

/// Builds the listeners; `listen` left out means the one default address.
pub(crate) fn listeners(
    ck: &mut Checker<'_>,
    raw: Option<Vec<RawListener>>,
    default: SocketAddr,
) -> Vec<Listener> {
    let at = Ptr::root().key("listen");
    let Some(raw) = raw else {
        return vec![Listener {
            addr: default,
            tls: None,
        }];
    };
    if raw.is_empty() {
        ck.problem(&at, "listen is empty: at least one listener is required");
    }
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, listener)| {
            let tls_at = at.index(i).key("tls");
            let tls = listener.tls.map(|tls| Tls {
                cert: ck.readable_file(&tls_at.key("cert"), "tls cert", &tls.cert),
                key: ck.readable_file(&tls_at.key("key"), "tls key", &tls.key),
                cert_at: ck.location(&tls_at.key("cert")),
                key_at: ck.location(&tls_at.key("key")),
            });
            Some(Listener {
                addr: listener.addr.0?,
                tls,
            })
        })
        .collect()
}

pub(crate) fn admin(raw: Option<RawAdmin>, default: SocketAddr) -> Admin {
    Admin {
        addr: raw.and_then(|admin| admin.addr?.0).unwrap_or(default),
    }
}

pub(crate) fn spool(ck: &mut Checker<'_>, raw: Option<RawSpool>, default_dir: &str) -> Spool {
    let raw = raw.unwrap_or(RawSpool {
        dir: None,
        fsync: None,
        retention: None,
    });
    Spool {
        dir: ck.usable_dir(
            &Ptr::root().key("spool").key("dir"),
            "spool dir",
            &raw.dir.unwrap_or_else(|| PathBuf::from(default_dir)),
        ),
        fsync: raw.fsync.and_then(|f| f.0).unwrap_or(true),
        retention: duration(raw.retention).unwrap_or(Duration::from_secs(7 * 24 * 3600)),
    }
}

/// Builds `queue`; `default_stream` is the daemon's name.
pub(crate) fn queue(ck: &mut Checker<'_>, raw: Option<RawQueue>, default_stream: &str) -> Queue {
    let at = Ptr::root().key("queue");
    let raw = raw.unwrap_or_default();
    if raw.servers.as_ref().is_some_and(Vec::is_empty) {
        ck.problem(
            &at.key("servers"),
            "servers is empty: name at least one NATS server",
        );
    }
    let servers: Vec<String> = match raw.servers {
        Some(list) => list.into_iter().filter_map(|s| s.0).collect(),
        None => vec!["nats://127.0.0.1:4222".to_owned()],
    };
    let stream = raw.stream.unwrap_or_else(|| default_stream.to_owned());
    let name_ok = !stream.is_empty()
        && stream.len() <= 32
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !name_ok {
        ck.problem(
            &at.key("stream"),
            format_args!("stream {stream:?} must be 1 to 32 of A-Z a-z 0-9 - _"),
        );
    }
    if raw.token.is_some() && (raw.user.is_some() || raw.password.is_some()) {
        ck.problem(
            &at.key("token"),
            "token and user/password are exclusive: the servers expect one or the other",
        );
    }
    if raw.user.is_some() != raw.password.is_some() {
        let (key, missing) = if raw.user.is_some() {
            ("user", "password")
        } else {
            ("password", "user")
        };
        ck.problem(&at.key(key), format_args!("{key} is set without {missing}"));
    }
    let default_replicas = servers.len().clamp(1, 3);
    Queue {
        backend: raw.backend.and_then(|w| w.0).unwrap_or(Backend::Maildir),
        replicas: whole(raw.replicas).unwrap_or(default_replicas),
        servers,
        stream,
        token: raw.token.map(Secret::new),
        user: raw.user,
        password: raw.password.map(Secret::new),
        ca_file: raw
            .ca_file
            .map(|file| ck.readable_file(&at.key("ca_file"), "queue ca_file", &file)),
        ack_wait: ck.nonzero_duration(
            &at.key("ack_wait"),
            "ack_wait",
            raw.ack_wait,
            Duration::from_secs(300),
        ),
        timeout: ck.nonzero_duration(
            &at.key("timeout"),
            "timeout",
            raw.timeout,
            Duration::from_secs(5),
        ),
    }
}

pub(crate) fn log(raw: Option<RawLog>) -> Log {
    let default = Log::default();
    let Some(raw) = raw else { return default };
    Log {
        level: raw.level.and_then(|w| w.0).unwrap_or(default.level),
        syslog: raw.syslog.and_then(|f| f.0).unwrap_or(default.syslog),
        facility: raw.facility.and_then(|w| w.0).unwrap_or(default.facility),
        format: raw.format.and_then(|w| w.0).unwrap_or(default.format),
    }
}

/// Builds the global retry policy from `retry`.
pub(crate) fn retry(ck: &mut Checker<'_>, raw: &RawRetry) -> Policy {
    policy(ck, &Ptr::root().key("retry"), raw, &RawRetry::default())
}

/// Builds a route's policy: its override at `at` over the global section `global`.
pub(crate) fn retry_override(
    ck: &mut Checker<'_>,
    at: &Ptr,
    global: &RawRetry,
    raw: Option<RawRetry>,
) -> Policy {
    policy(ck, at, &raw.unwrap_or_default(), global)
}

/// A duration written in the file and valid; a bad one was reported and counts as left out.
fn duration(value: Option<DurationValue>) -> Option<Duration> {
    value.and_then(|d| d.0)
}

/// The policy of the section `written` (at `at`), each key it leaves out taken from `base`, then
/// from [`Policy::default`]. [`Policy::try_new`] judges it; each problem is reported at the key
/// of `written` it involves, and one that involves none of them (a route inheriting a bad
/// global value) was reported with the section that wrote it. A refused policy is replaced by
/// the default, which never leaves this crate: the config is refused.
fn policy(ck: &mut Checker<'_>, at: &Ptr, written: &RawRetry, base: &RawRetry) -> Policy {
    let default = Policy::default();
    let pick = |key: fn(&RawRetry) -> Option<DurationValue>, fallback: Duration| {
        duration(key(written))
            .or(duration(key(base)))
            .unwrap_or(fallback)
    };
    let give_up_on = match written.give_up_on.as_ref().or(base.give_up_on.as_ref()) {
        Some(statuses) => statuses.iter().filter_map(|s| s.0).collect(),
        None => default.give_up_on().to_vec(),
    };
    let built = Policy::try_new(
        pick(|r| r.initial, default.initial()),
        pick(|r| r.max_interval, default.max_interval()),
        pick(|r| r.max_age, default.max_age()),
        whole(written.max_attempts)
            .or(whole(base.max_attempts))
            .or(default.max_attempts()),
        give_up_on,
    );
    match built {
        Ok(policy) => policy,
        Err(invalid) => {
            for problem in invalid.problems {
                if let Some((key, message)) = retry_problem(written, problem) {
                    ck.problem(&key.resolve(at), message);
                }
            }
            default
        }
    }
}

/// Where a retry key is, under its section.
enum RetryKey {
    Named(&'static str),
    /// An entry of `give_up_on`, by its position in the file.
    Status(usize),
}

impl RetryKey {
    fn resolve(&self, at: &Ptr) -> Ptr {
        match self {
            RetryKey::Named(name) => at.key(name),
            RetryKey::Status(i) => at.key("give_up_on").index(*i),
        }
    }
}

/// The key of `written` that `problem` involves, and what to say there; `None` if `written`
/// sets none of the keys involved.
fn retry_problem(written: &RawRetry, problem: retry::Problem) -> Option<(RetryKey, String)> {
    use retry::Problem;
    let initial = duration(written.initial).is_some();
    let max_interval = duration(written.max_interval).is_some();
    let zero = |name: &'static str, is_written: bool| {
        is_written.then(|| {
            (
                RetryKey::Named(name),
                format!("{name} must be greater than zero"),
            )
        })
    };
    match problem {
        Problem::ZeroInitial => zero("initial", initial),
        Problem::ZeroMaxInterval => zero("max_interval", max_interval),
        Problem::ZeroMaxAge => zero("max_age", duration(written.max_age).is_some()),
        Problem::InitialAboveMax {
            initial: first,
            max_interval: cap,
        } => (initial || max_interval).then(|| {
            let name = if initial { "initial" } else { "max_interval" };
            (
                RetryKey::Named(name),
                format!(
                    "retry initial {} is greater than max_interval {}",
                    format_duration(first),
                    format_duration(cap)
                ),
            )
        }),
        Problem::ZeroAttempts => whole(written.max_attempts)
            .is_some()
            .then(|| (RetryKey::Named("max_attempts"), problem.to_string())),
        Problem::BadStatus { index, .. } => {
            // `index` counts the valid entries; a bad one was reported and left out.
            let position = written
                .give_up_on
                .as_ref()?
                .iter()
                .enumerate()
                .filter(|(_, s)| s.0.is_some())
                .nth(index)?
                .0;
            Some((RetryKey::Status(position), problem.to_string()))
        }
    }
}

/// Refuses two sockets that could never both be bound. `*_written` say whether the addresses come from the file or are
/// defaults.
pub(crate) fn check_distinct_addresses(
    ck: &mut Checker<'_>,
    listeners: &[Listener],
    listen_written: bool,
    admin: &Admin,
    admin_written: bool,
) {
    let listen_at = Ptr::root().key("listen");
    // Each socket: where it is written (if it is), its address, and what to call it otherwise.
    // Defaults go first, so that a clash is reported at the address the operator wrote.
    let mut sockets: Vec<(Option<Ptr>, SocketAddr, &str)> = Vec::new();
    if !admin_written {
        sockets.push((None, admin.addr, "the default admin address"));
    }
    for (i, listener) in listeners.iter().enumerate() {
        let ptr = listen_written.then(|| listen_at.index(i).key("addr"));
        sockets.push((ptr, listener.addr, "the default listener"));
    }
    if admin_written {
        let ptr = Ptr::root().key("admin").key("addr");
        sockets.push((Some(ptr), admin.addr, "the admin address"));
    }
    for (later, (ptr, addr, _)) in sockets.iter().enumerate() {
        let Some(ptr) = ptr else { continue };
        let first = sockets
            .iter()
            .take(later)
            .find(|(_, other, _)| clash(*other, *addr));
        let Some((first_ptr, first_addr, first_name)) = first else {
            continue;
        };
        let place = match first_ptr.as_ref().and_then(|p| ck.location(p)) {
            Some(location) => format!("at line {}", location.line),
            None => format!("by {first_name}"),
        };
        if first_addr == addr {
            ck.problem(ptr, format_args!("address {addr} is already used {place}"));
        } else {
            ck.problem(
                ptr,
                format_args!("address {addr} overlaps {first_addr}, used {place}"),
            );
        }
    }
}

/// Whether two sockets could not both be bound: same port (other than 0, any free port, as tests
/// use) on the same IP, or on any IP when one of them is a wildcard (`0.0.0.0`, `[::]`, which on
/// Linux also covers IPv4).
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
