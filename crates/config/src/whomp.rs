//! The whomp (webhook out) configuration: who may submit, which destinations pre-flight refuses,
//! how names resolve, and the keys messages may be signed with.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use netguard::Rules;
use retry::Policy;
use serde::Deserialize;

use crate::check::{self, Checker};
use crate::common::{self, RawAdmin, RawListener, RawLog, RawQueue, RawRetry, RawSpool};
use crate::error::ConfigError;
use crate::locate::Ptr;
use crate::value::{
    whole, CidrValue, DnsServerValue, DurationValue, Flag, IpValue, MethodValue, TokenList,
    UniqueMap, Whole,
};
use crate::{Admin, Listener, Log, Queue, Secret, Spool};

/// The whole whomp configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Default: one plain listener on `127.0.0.1:8090`.
    pub listen: Vec<Listener>,
    pub auth: Auth,
    pub admin: Admin,
    pub spool: Spool,
    /// Default: the maildir spool.
    pub queue: Queue,
    pub log: Log,
    pub limits: Limits,
    /// Default [`Policy::default`].
    pub retry: Policy,
    pub delivery: Delivery,
    /// The operator's rules for destinations, on top of the built-in special-purpose ranges;
    /// default [`Rules::default`] (https, `POST`, ports 443 and 8443, no `*.internal`,
    /// `*.local` or `*.home.arpa`). Host patterns are lower case, without a trailing dot.
    pub preflight: Rules,
    pub dns: Dns,
    pub signing: Signing,
    /// How the event layer tells of failures (`notify_url`, `target.failing`, disabling).
    pub events: Events,
}

/// Who may submit messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Auth {
    /// Accepted bearer tokens; empty: no authentication. Each is non-empty visible ASCII.
    pub tokens: Vec<Secret<String>>,
}

/// Limits on what submitters may make whomp hold and send.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Larger submissions get `413`; default 10 MiB.
    pub max_body_bytes: u64,
    /// Attempts in flight at once to one destination host; default 8.
    pub max_in_flight_per_host: usize,
    /// Longest time a submit connection may go without a request in progress (TLS handshake,
    /// request head, keep-alive, HTTP/2 without a stream); default 10s.
    pub header_timeout: Duration,
    /// Connections open at once over all submit listeners; default 4096.
    pub max_connections: usize,
    /// Of those, from one source (an IPv4 address or an IPv6 /64); default 1024.
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            max_in_flight_per_host: 8,
            header_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_ip: 1024,
        }
    }
}

/// How messages are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Default 5s.
    pub connect_timeout: Duration,
    /// Time allowed for one whole attempt; default 30s.
    pub timeout: Duration,
    /// Default `whomp`; checked to be a valid header value.
    pub user_agent: String,
    /// Attempts in flight at once, over all hosts; default 64.
    pub concurrency: usize,
    /// Extra trusted roots (PEM), checked to be readable.
    pub ca_file: Option<PathBuf>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            user_agent: "whomp".to_owned(),
            concurrency: 64,
            ca_file: None,
        }
    }
}

/// How destination names are resolved.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dns {
    /// Name servers to ask; empty: the system resolver config. A bare IP means port 53.
    pub servers: Vec<SocketAddr>,
    /// Fixed answers by lower-case host name, each with at least one address.
    pub r#static: BTreeMap<String, Vec<IpAddr>>,
}

/// Standard Webhooks signing keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signing {
    /// The decoded secret of each `whsec_<base64>` key, by the name a submission uses in
    /// `Whomp-Signing-Key`.
    pub keys: BTreeMap<String, Secret<Vec<u8>>>,
}

/// How webhook targets' failures bubble up (docs/events.md, "Failures bubble up").
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Where notifications go for a target without a `notifyUrl` of its own; default none.
    /// Checked as a URL here, pre-flighted when a notification is made.
    pub notify_url: Option<String>,
    /// The `signing.keys` entry that signs notifications to `notify_url`; default none
    /// (unsigned).
    pub signing_key: Option<String>,
    /// A target failing every attempt for this long is told `target.failing`; default 1h.
    pub failing_after: Duration,
    /// A target failing every attempt for this long is disabled (`target.disabled`); default
    /// 5 days.
    pub disable_after: Duration,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            notify_url: None,
            signing_key: None,
            failing_after: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// Reads and parses a whomp config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    check::load(path, parse)
}

/// Parses a whomp config; `path` names the file in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    check::parse(text, path, build)
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8090);
const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9102);
const KEY_PREFIX: &str = "whsec_";

/// Standard base64, with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a whomp configuration mapping")]
struct RawConfig {
    listen: Option<Vec<RawListener>>,
    auth: Option<RawAuth>,
    admin: Option<RawAdmin>,
    spool: Option<RawSpool>,
    queue: Option<RawQueue>,
    log: Option<RawLog>,
    limits: Option<RawLimits>,
    retry: Option<RawRetry>,
    delivery: Option<RawDelivery>,
    preflight: Option<RawPreflight>,
    dns: Option<RawDns>,
    signing: Option<RawSigning>,
    events: Option<RawEvents>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an `auth` mapping")]
struct RawAuth {
    tokens: Option<TokenList>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `limits` mapping")]
struct RawLimits {
    max_body_bytes: Option<Whole<u64, 1>>,
    max_in_flight_per_host: Option<Whole<usize, 1>>,
    header_timeout: Option<DurationValue>,
    max_connections: Option<Whole<usize, 1>>,
    max_connections_per_ip: Option<Whole<usize, 1>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `delivery` mapping")]
struct RawDelivery {
    connect_timeout: Option<DurationValue>,
    timeout: Option<DurationValue>,
    user_agent: Option<String>,
    concurrency: Option<Whole<usize, 1>>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `preflight` mapping")]
struct RawPreflight {
    allow_http: Option<Flag>,
    methods: Option<Vec<MethodValue>>,
    ports: Option<Vec<Whole<u16, 1>>>,
    reject_hosts: Option<Vec<String>>,
    reject_cidrs: Option<Vec<CidrValue>>,
    allow_cidrs: Option<Vec<CidrValue>>,
    nat64_prefixes: Option<Vec<CidrValue>>,
    max_url_bytes: Option<Whole<usize, 1>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `dns` mapping")]
struct RawDns {
    servers: Option<Vec<DnsServerValue>>,
    r#static: Option<UniqueMap<Vec<IpValue>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a `signing` mapping")]
struct RawSigning {
    keys: Option<UniqueMap<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "an `events` mapping")]
struct RawEvents {
    notify_url: Option<String>,
    signing_key: Option<String>,
    failing_after: Option<DurationValue>,
    disable_after: Option<DurationValue>,
}

fn build(raw: RawConfig, ck: &mut Checker<'_>) -> Config {
    let listen_written = raw.listen.is_some();
    let admin_written = raw.admin.as_ref().is_some_and(|a| a.addr.is_some());
    let listen = common::listeners(ck, raw.listen, DEFAULT_LISTEN);
    let admin = common::admin(raw.admin, DEFAULT_ADMIN);
    common::check_distinct_addresses(ck, &listen, listen_written, &admin, admin_written);
    let signing = signing(ck, raw.signing.unwrap_or_default());
    Config {
        listen,
        auth: auth(ck, raw.auth.unwrap_or_default()),
        admin,
        spool: common::spool(ck, raw.spool, "/var/spool/whomp"),
        queue: common::queue(ck, raw.queue, "whomp"),
        log: common::log(raw.log),
        limits: limits(ck, raw.limits.unwrap_or_default()),
        retry: common::retry(ck, &raw.retry.unwrap_or_default()),
        delivery: delivery(ck, raw.delivery.unwrap_or_default()),
        preflight: preflight(ck, raw.preflight.unwrap_or_default()),
        dns: dns(ck, raw.dns.unwrap_or_default()),
        events: events(ck, raw.events.unwrap_or_default(), &signing),
        signing,
    }
}

/// The `events` section; its `signing_key` must name one of `signing`'s keys.
fn events(ck: &mut Checker<'_>, raw: RawEvents, signing: &Signing) -> Events {
    let at = Ptr::root().key("events");
    let default = Events::default();
    if let Some(url) = &raw.notify_url {
        if let Err(rejection) = netguard::parse_target(url) {
            ck.problem(
                &at.key("notify_url"),
                format_args!("notify_url is not a usable URL: {}", rejection.message),
            );
        }
    }
    if let Some(name) = &raw.signing_key {
        if !signing.keys.contains_key(name) {
            ck.problem(
                &at.key("signing_key"),
                format_args!("signing_key {name:?} is not one of signing.keys"),
            );
        }
    }
    Events {
        notify_url: raw.notify_url,
        signing_key: raw.signing_key,
        failing_after: ck.nonzero_duration(
            &at.key("failing_after"),
            "failing_after",
            raw.failing_after,
            default.failing_after,
        ),
        disable_after: ck.nonzero_duration(
            &at.key("disable_after"),
            "disable_after",
            raw.disable_after,
            default.disable_after,
        ),
    }
}

fn auth(ck: &mut Checker<'_>, raw: RawAuth) -> Auth {
    let at = Ptr::root().key("auth").key("tokens");
    let tokens = raw.tokens.unwrap_or_default().0;
    for (i, token) in tokens.iter().enumerate() {
        // The message never quotes the token: config errors end up in logs.
        if !is_visible_ascii(token) {
            ck.problem(
                &at.index(i),
                "token must be non-empty visible ASCII (no spaces), as an Authorization header \
                 carries it",
            );
        }
    }
    Auth {
        tokens: tokens.into_iter().map(Secret::new).collect(),
    }
}

fn limits(ck: &mut Checker<'_>, raw: RawLimits) -> Limits {
    let at = Ptr::root().key("limits");
    let default = Limits::default();
    Limits {
        max_body_bytes: whole(raw.max_body_bytes).unwrap_or(default.max_body_bytes),
        max_in_flight_per_host: whole(raw.max_in_flight_per_host)
            .unwrap_or(default.max_in_flight_per_host),
        header_timeout: ck.nonzero_duration(
            &at.key("header_timeout"),
            "header_timeout",
            raw.header_timeout,
            default.header_timeout,
        ),
        max_connections: whole(raw.max_connections).unwrap_or(default.max_connections),
        max_connections_per_ip: whole(raw.max_connections_per_ip)
            .unwrap_or(default.max_connections_per_ip),
    }
}

fn delivery(ck: &mut Checker<'_>, raw: RawDelivery) -> Delivery {
    let at = Ptr::root().key("delivery");
    let default = Delivery::default();
    let user_agent = raw.user_agent.unwrap_or(default.user_agent);
    if user_agent.is_empty() || http::HeaderValue::from_str(&user_agent).is_err() {
        ck.problem(
            &at.key("user_agent"),
            format_args!("user_agent {user_agent:?} is not a valid, non-empty header value"),
        );
    }
    Delivery {
        connect_timeout: ck.nonzero_duration(
            &at.key("connect_timeout"),
            "connect_timeout",
            raw.connect_timeout,
            default.connect_timeout,
        ),
        timeout: ck.nonzero_duration(&at.key("timeout"), "timeout", raw.timeout, default.timeout),
        user_agent,
        concurrency: whole(raw.concurrency).unwrap_or(default.concurrency),
        ca_file: raw
            .ca_file
            .map(|file| ck.readable_file(&at.key("ca_file"), "ca_file", &file)),
    }
}

/// Builds the rules of `preflight`, judged by [`Rules::validate`]; each problem it finds is
/// reported at the entry it names. An empty list is refused here: the rules would be valid, but
/// would refuse every message.
fn preflight(ck: &mut Checker<'_>, raw: RawPreflight) -> Rules {
    let at = Ptr::root().key("preflight");
    let default = Rules::default();
    for (key, list) in [
        ("methods", raw.methods.as_ref().map(Vec::len)),
        ("ports", raw.ports.as_ref().map(Vec::len)),
    ] {
        if list == Some(0) {
            ck.problem(
                &at.key(key),
                format_args!("{key} is empty, so every message would be refused"),
            );
        }
    }
    let methods = Listed::new(raw.methods, |m| Some(m.0?.to_string()));
    let ports = Listed::new(raw.ports, |p| p.0);
    let reject_hosts = Listed::new(raw.reject_hosts, Some);
    let nat64_prefixes = Listed::new(raw.nat64_prefixes, |n| n.0);
    let nets = |raw: Option<Vec<CidrValue>>| Listed::new(raw, |n| n.0).values.unwrap_or_default();
    let mut rules = Rules {
        allow_http: raw
            .allow_http
            .and_then(|f| f.0)
            .unwrap_or(default.allow_http),
        methods: methods.values.clone().unwrap_or(default.methods),
        ports: ports.values.clone().unwrap_or(default.ports),
        reject_hosts: reject_hosts.values.clone().unwrap_or(default.reject_hosts),
        reject_cidrs: nets(raw.reject_cidrs),
        allow_cidrs: nets(raw.allow_cidrs),
        nat64_prefixes: nat64_prefixes.values.clone().unwrap_or_default(),
        max_url_bytes: whole(raw.max_url_bytes).unwrap_or(default.max_url_bytes),
    };
    if let Err(invalid) = rules.validate() {
        for problem in invalid.problems {
            let (key, index) = match &problem {
                netguard::Problem::Method { index, .. } => ("methods", methods.position(*index)),
                netguard::Problem::ZeroPort { index } => ("ports", ports.position(*index)),
                netguard::Problem::Nat64Prefix { index, .. } => {
                    ("nat64_prefixes", nat64_prefixes.position(*index))
                }
                netguard::Problem::HostPattern { index, .. } => {
                    ("reject_hosts", reject_hosts.position(*index))
                }
                netguard::Problem::ZeroMaxUrlBytes => ("max_url_bytes", None),
            };
            let place = match index {
                Some(i) => at.key(key).index(i),
                None => at.key(key),
            };
            match problem {
                netguard::Problem::Nat64Prefix { prefix, .. } => ck.problem(
                    &place,
                    format_args!(
                        "nat64 prefix {prefix} must be an IPv6 prefix of length 32, 40, 48, 56, 64 \
                         or 96 (RFC 6052), such as \"64:ff9b::/96\""
                    ),
                ),
                netguard::Problem::HostPattern { pattern, .. } => ck.problem(
                    &place,
                    format_args!(
                        "invalid host pattern {pattern:?}: expected a host name such as \
                         \"metadata.google.internal\" or a suffix such as \"*.internal\""
                    ),
                ),
                other => ck.problem(&place, other),
            }
        }
    }
    // Matching ignores case and a trailing dot; the rules keep one spelling of each pattern.
    for pattern in &mut rules.reject_hosts {
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(name) => ("*.", name),
            None => ("", pattern.as_str()),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        *pattern = format!("{wildcard}{name}");
    }
    rules
}

/// The valid entries of a list written in the file, and where each is in it: a bad entry was
/// reported and is left out, so an entry's index in the rules may differ from its place in the
/// file. `values` is `None` when the list is left out.
struct Listed<T> {
    values: Option<Vec<T>>,
    positions: Vec<usize>,
}

impl<T> Listed<T> {
    fn new<R>(raw: Option<Vec<R>>, value: impl Fn(R) -> Option<T>) -> Listed<T> {
        let Some(raw) = raw else {
            return Listed {
                values: None,
                positions: Vec::new(),
            };
        };
        let (positions, values) = raw
            .into_iter()
            .enumerate()
            .filter_map(|(i, entry)| Some((i, value(entry)?)))
            .unzip();
        Listed {
            values: Some(values),
            positions,
        }
    }

    /// The place in the file of the entry at `index` of the rules, if the file lists it.
    fn position(&self, index: usize) -> Option<usize> {
        self.positions.get(index).copied()
    }
}

fn dns(ck: &mut Checker<'_>, raw: RawDns) -> Dns {
    let at = Ptr::root().key("dns").key("static");
    let mut fixed = BTreeMap::new();
    for (name, addrs) in raw.r#static.unwrap_or_default().0 {
        let entry = at.key(&name);
        let host = match normalize_host(&name) {
            Some(host) => host,
            None => {
                ck.problem(
                    &entry.at_key(),
                    format_args!("invalid host name {name:?}: expected e.g. \"hooks.example.com\""),
                );
                name.clone()
            }
        };
        if addrs.is_empty() {
            ck.problem(
                &entry,
                format_args!("static host {name:?} has no addresses"),
            );
        }
        if fixed.contains_key(&host) {
            ck.problem(
                &entry.at_key(),
                format_args!("host {name:?} is listed twice (names are not case-sensitive)"),
            );
        }
        fixed.insert(host, addrs.into_iter().filter_map(|ip| ip.0).collect());
    }
    Dns {
        servers: raw
            .servers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.0)
            .collect(),
        r#static: fixed,
    }
}

fn signing(ck: &mut Checker<'_>, raw: RawSigning) -> Signing {
    let at = Ptr::root().key("signing").key("keys");
    let mut keys = BTreeMap::new();
    for (name, value) in raw.keys.unwrap_or_default().0 {
        let entry = at.key(&name);
        if !is_visible_ascii(&name) {
            ck.problem(
                &entry.at_key(),
                format_args!(
                    "signing key name {name:?} must be non-empty visible ASCII (no spaces), as \
                     the Whomp-Signing-Key header carries it"
                ),
            );
        }
        // The message never quotes the key: config errors end up in logs.
        let secret = value
            .strip_prefix(KEY_PREFIX)
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .filter(|secret| !secret.is_empty());
        match secret {
            Some(secret) => {
                keys.insert(name, Secret::new(secret));
            }
            None => ck.problem(
                &entry,
                format_args!(
                    "signing key {name:?} must be \"whsec_\" followed by base64, e.g. \
                     \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\""
                ),
            ),
        }
    }
    Signing { keys }
}

/// Lower-cases a host name and drops a trailing dot; `None` if it is not a plausible name.
fn normalize_host(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let plausible = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    plausible.then_some(name)
}

fn is_visible_ascii(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}
