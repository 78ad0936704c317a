//! The whimp (webhook in) configuration: which public paths it answers, what it tells the
//! sender, and which internal backends get each stored request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::check::{self, Checker};
use crate::common::{self, RawAdmin, RawListener, RawLog, RawQueue, RawRetry, RawSpool};
use crate::error::ConfigError;
use crate::locate::Ptr;
use crate::value::{whole, CidrValue, DurationValue, MethodValue, UriValue, Whole};
use crate::{Admin, Listener, Log, Queue, Spool};
use retry::Policy;

/// The whole whimp configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Default: one plain listener on `127.0.0.1:8080`.
    pub listen: Vec<Listener>,
    pub admin: Admin,
    pub spool: Spool,
    /// Default: the maildir spool.
    pub queue: Queue,
    pub log: Log,
    pub limits: Limits,
    /// The global policy (default [`Policy::default`]); each route carries its own, merged, in
    /// [`Route::retry`].
    pub retry: Policy,
    pub delivery: Delivery,
    /// Distinct paths, each starting with `/`.
    pub routes: Vec<Route>,
}

/// Limits on what a sender may make whimp hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Larger bodies get `413`; default 10 MiB.
    pub max_body_bytes: u64,
    /// Time allowed for the request head; default 10s.
    pub header_timeout: Duration,
    /// Time allowed for the body; default 30s.
    pub body_timeout: Duration,
    /// Connections held open at once, over all listeners; default 10000.
    pub max_connections: usize,
    /// Of those, from one source (an IPv4 address or an IPv6 /64); default 256.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
}

/// How stored requests are forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Attempts in flight at once, over all backends; default 64.
    pub concurrency: usize,
    /// Attempts in flight at once to one backend; default 16.
    pub max_in_flight_per_backend: usize,
    /// Extra trusted roots (PEM) for https backends, checked to be readable.
    pub ca_file: Option<PathBuf>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            concurrency: 64,
            max_in_flight_per_backend: 16,
            ca_file: None,
        }
    }
}

/// One public path and where its requests go. The path is a secret (it is what keeps strangers
/// out), so problems with it are reported by line and column, never by quoting it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Exact path, starting with `/`, without query.
    pub path: String,
    /// For metrics and logs, so that the secret part of the path never shows; default: the
    /// path's first segment. Letters, digits, `_`, `-` and `.` only.
    pub name: String,
    /// Allowed methods; `None`: any.
    pub methods: Option<Vec<http::Method>>,
    /// Allowed sources; `None`: anyone.
    pub allow_from: Option<Vec<IpNet>>,
    pub response: RouteResponse,
    /// At least one; each gets its own copy.
    pub backends: Vec<Backend>,
    /// The global policy merged with this route's override.
    pub retry: Policy,
}

/// What the sender is told once its request is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteResponse {
    /// A final status, 200..=599; default 200.
    pub status: u16,
    /// Default empty.
    pub body: String,
    /// Checked to be a valid header value.
    pub content_type: Option<String>,
}

impl Default for RouteResponse {
    fn default() -> Self {
        RouteResponse {
            status: 200,
            body: String::new(),
            content_type: None,
        }
    }
}

/// One internal destination of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// Absolute, http or https, with a host.
    pub url: http::Uri,
    /// Time allowed for one attempt; default 10s.
    pub timeout: Duration,
}

/// Reads and parses a whimp config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    check::load(path, parse)
}

/// Parses a whimp config; `path` names the file in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    check::parse(text, path, build)
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(LOCALHOST), 8080);
const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(LOCALHOST), 9101);
const LOCALHOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a whimp configuration mapping")]
struct RawConfig {
    listen: Option<Vec<RawListener>>,
    admin: Option<RawAdmin>,
    spool: Option<RawSpool>,
    queue: Option<RawQueue>,
    log: Option<RawLog>,
    limits: Option<RawLimits>,
    retry: Option<RawRetry>,
    delivery: Option<RawDelivery>,
    routes: Option<Vec<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `limits` mapping")]
struct RawLimits {
    max_body_bytes: Option<Whole<u64, 1>>,
    header_timeout: Option<DurationValue>,
    body_timeout: Option<DurationValue>,
    max_connections: Option<Whole<usize, 1>>,
    max_connections_per_ip: Option<Whole<usize, 1>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `delivery` mapping")]
struct RawDelivery {
    concurrency: Option<Whole<usize, 1>>,
    max_in_flight_per_backend: Option<Whole<usize, 1>>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route mapping with `path` and `backends`"
)]
struct RawRoute {
    path: String,
    name: Option<String>,
    methods: Option<Vec<MethodValue>>,
    allow_from: Option<Vec<CidrValue>>,
    response: Option<RawResponse>,
    backends: Option<Vec<RawBackend>>,
    retry: Option<RawRetry>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `response` mapping")]
struct RawResponse {
    /// A final status.
    status: Option<Whole<u16, 200, 599>>,
    body: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a backend mapping with `url`")]
struct RawBackend {
    url: UriValue,
    timeout: Option<DurationValue>,
}

fn build(raw: RawConfig, ck: &mut Checker<'_>) -> Config {
    let listen_written = raw.listen.is_some();
    let admin_written = raw.admin.as_ref().is_some_and(|a| a.addr.is_some());
    let listen = common::listeners(ck, raw.listen, DEFAULT_LISTEN);
    let admin = common::admin(raw.admin, DEFAULT_ADMIN);
    common::check_distinct_addresses(ck, &listen, listen_written, &admin, admin_written);
    let raw_retry = raw.retry.unwrap_or_default();
    let retry = common::retry(ck, &raw_retry);
    let routes = routes(ck, raw.routes.unwrap_or_default(), &raw_retry);
    Config {
        listen,
        admin,
        spool: common::spool(ck, raw.spool, "/var/spool/whimp"),
        queue: common::queue(ck, raw.queue, "whimp"),
        log: common::log(raw.log),
        limits: limits(ck, raw.limits.unwrap_or_default()),
        retry,
        delivery: delivery(ck, raw.delivery.unwrap_or_default()),
        routes,
    }
}

fn limits(ck: &mut Checker<'_>, raw: RawLimits) -> Limits {
    let at = Ptr::root().key("limits");
    let default = Limits::default();
    Limits {
        max_body_bytes: whole(raw.max_body_bytes).unwrap_or(default.max_body_bytes),
        header_timeout: ck.nonzero_duration(
            &at.key("header_timeout"),
            "header_timeout",
            raw.header_timeout,
            default.header_timeout,
        ),
        body_timeout: ck.nonzero_duration(
            &at.key("body_timeout"),
            "body_timeout",
            raw.body_timeout,
            default.body_timeout,
        ),
        max_connections: whole(raw.max_connections).unwrap_or(default.max_connections),
        max_connections_per_ip: whole(raw.max_connections_per_ip)
            .unwrap_or(default.max_connections_per_ip),
    }
}

fn delivery(ck: &mut Checker<'_>, raw: RawDelivery) -> Delivery {
    let at = Ptr::root().key("delivery");
    let default = Delivery::default();
    Delivery {
        concurrency: whole(raw.concurrency).unwrap_or(default.concurrency),
        max_in_flight_per_backend: whole(raw.max_in_flight_per_backend)
            .unwrap_or(default.max_in_flight_per_backend),
        ca_file: raw
            .ca_file
            .map(|file| ck.readable_file(&at.key("ca_file"), "ca_file", &file)),
    }
}

fn routes(ck: &mut Checker<'_>, raw: Vec<RawRoute>, global_retry: &RawRetry) -> Vec<Route> {
    let mut first_index: HashMap<String, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, raw) in raw.into_iter().enumerate() {
        let at = Ptr::root().key("routes").index(i);
        check_route_path(ck, &at.key("path"), &raw.path);
        if let Some(&first) = first_index.get(&raw.path) {
            let first_line = ck
                .location(&Ptr::root().key("routes").index(first).key("path"))
                .map_or(String::new(), |l| {
                    format!(", first defined at line {}", l.line)
                });
            ck.problem(
                &at.key("path"),
                format_args!("duplicate route path{first_line}"),
            );
        } else {
            first_index.insert(raw.path.clone(), i);
        }
        routes.push(route(ck, &at, raw, global_retry));
    }
    routes
}

fn route(ck: &mut Checker<'_>, at: &Ptr, raw: RawRoute, global_retry: &RawRetry) -> Route {
    let name = match raw.name {
        Some(name) => {
            if !is_metric_label(&name) {
                ck.problem(
                    &at.key("name"),
                    format_args!(
                        "route name {name:?} may only contain letters, digits, \"_\", \"-\" \
                         and \".\""
                    ),
                );
            }
            name
        }
        None => {
            let name = first_segment(&raw.path).to_owned();
            if raw.path.starts_with('/') && !is_metric_label(&name) {
                ck.problem(
                    &at.key("path"),
                    "route path does not start with a usable name (letters, digits, \"_\", \"-\", \
                     \".\"): set `name`",
                );
            }
            name
        }
    };
    if raw.methods.as_ref().is_some_and(Vec::is_empty) {
        ck.problem(
            &at.key("methods"),
            "methods is empty, so every request would be refused: leave it out to allow any method",
        );
    }
    if raw.allow_from.as_ref().is_some_and(Vec::is_empty) {
        ck.problem(
            &at.key("allow_from"),
            "allow_from is empty, so every sender would be refused: leave it out to allow anyone",
        );
    }
    let response = response(ck, &at.key("response"), raw.response.unwrap_or_default());
    let backends = match raw.backends {
        Some(backends) if !backends.is_empty() => backends
            .into_iter()
            .enumerate()
            .filter_map(|(j, b)| backend(ck, &at.key("backends").index(j), b))
            .collect(),
        _ => {
            ck.problem(
                &at.key("backends"),
                "route has no backends: list at least one under `backends`",
            );
            Vec::new()
        }
    };
    Route {
        retry: common::retry_override(ck, &at.key("retry"), global_retry, raw.retry),
        path: raw.path,
        name,
        methods: raw
            .methods
            .map(|methods| methods.into_iter().filter_map(|m| m.0).collect()),
        allow_from: raw
            .allow_from
            .map(|nets| nets.into_iter().filter_map(|n| n.0).collect()),
        response,
        backends,
    }
}

fn check_route_path(ck: &mut Checker<'_>, at: &Ptr, path: &str) {
    if !path.starts_with('/') {
        ck.problem(at, "route path must start with \"/\"");
    } else if path.contains(['?', '#']) {
        ck.problem(at, "route path must not contain a query or fragment");
    } else if http::uri::PathAndQuery::from_str(path).is_err() || path.contains(' ') {
        ck.problem(
            at,
            "route path contains characters not allowed in a URL path",
        );
    }
}

fn response(ck: &mut Checker<'_>, at: &Ptr, raw: RawResponse) -> RouteResponse {
    let default = RouteResponse::default();
    let status = whole(raw.status).unwrap_or(default.status);
    if let Some(content_type) = &raw.content_type {
        if http::HeaderValue::from_str(content_type).is_err() {
            ck.problem(
                &at.key("content_type"),
                format_args!("content_type {content_type:?} is not a valid header value"),
            );
        }
    }
    RouteResponse {
        status,
        body: raw.body.unwrap_or(default.body),
        content_type: raw.content_type,
    }
}

/// `None` if its URL does not parse (already reported).
fn backend(ck: &mut Checker<'_>, at: &Ptr, raw: RawBackend) -> Option<Backend> {
    let timeout = ck.nonzero_duration(
        &at.key("timeout"),
        "timeout",
        raw.timeout,
        Duration::from_secs(10),
    );
    let url = raw.url.0?;
    // Never quoted: a URL may hold a password, a token in its path or a key in its query, and
    // config errors end up in logs.
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        ck.problem(
            &at.key("url"),
            "backend URL must not carry credentials (user:password@): URLs are shown in \
             logs and records; let the backend trust whimp by its address instead",
        );
    } else if let Some(scheme) = url.scheme_str().filter(|s| !matches!(*s, "http" | "https")) {
        ck.problem(
            &at.key("url"),
            format_args!(
                "backend URL scheme {scheme:?} must be http or https, e.g. \
                 \"http://10.0.3.7:8000/hooks\""
            ),
        );
    } else if url.host().is_none_or(str::is_empty) {
        ck.problem(
            &at.key("url"),
            "backend URL must be absolute http or https, e.g. \"http://10.0.3.7:8000/hooks\"",
        );
    }
    Some(Backend { url, timeout })
}

fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Whether `name` is safe as a metric label and log field: non-empty, plain characters.
fn is_metric_label(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}
