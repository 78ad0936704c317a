//! Name resolution: fixed answers, `/etc/hosts`, then DNS through hickory's stub resolver, cached.
//!
//! whomp is built as a static binary, where glibc's NSS (and so `getaddrinfo`) cannot be relied
//! on, and it must connect to exactly the addresses it checked, so it resolves names itself. The
//! DNS part is `hickory-resolver` (pure Rust): A and AAAA queries in parallel, answers matched to
//! their query, TCP when an answer is truncated, the servers tried fastest first within one
//! timeout and the whole lookup tried twice. Its cache keeps each answer for its TTL (a day and
//! 8192 answers at most), so that a busy destination costs two queries per TTL instead of two
//! per attempt; answers with TTL 0 are not kept, and failures never are. The cache lives as long
//! as the resolver: whomp builds a new one at every reload. Whatever the cache returns is still
//! checked by the guard at every attempt.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::TokioResolver;

use crate::{quoted, Rejection, Rule};

/// How long one lookup's pass over the name servers may take; a failed pass is tried once more.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves host names to the addresses whomp will check and connect to. Clones share the cache.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    fixed: HashMap<String, Vec<IpAddr>>,
    hosts: HashMap<String, Vec<IpAddr>>,
    timeout: Duration,
    /// hickory's resolver, or why it could not be built (it cannot without TLS features).
    dns: Result<TokioResolver, String>,
}

/// The system resolver configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResolverConfigError {
    /// A file exists but cannot be read; whomp refuses to start rather than guess.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Resolver {
    /// A resolver asking `servers`, with `fixed` answers that win over DNS (like curl
    /// `--resolve`); names are matched case-insensitively, without a trailing dot.
    pub fn new(servers: Vec<SocketAddr>, fixed: HashMap<String, Vec<IpAddr>>) -> Self {
        Resolver {
            dns: build(&servers, DEFAULT_TIMEOUT),
            servers,
            fixed: normalise_keys(fixed),
            hosts: HashMap::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A resolver using the `nameserver` lines of `/etc/resolv.conf` and the entries of
    /// `/etc/hosts`, read once now. Missing files mean what they mean to the C library: no hosts
    /// entries, and a name server on the loopback interface.
    pub fn system(fixed: HashMap<String, Vec<IpAddr>>) -> Result<Self, ResolverConfigError> {
        Resolver::from_files(
            Path::new("/etc/resolv.conf"),
            Path::new("/etc/hosts"),
            fixed,
        )
    }

    /// Like [`Resolver::system`], reading the two files from the given paths.
    pub fn from_files(
        resolv_conf: &Path,
        hosts: &Path,
        fixed: HashMap<String, Vec<IpAddr>>,
    ) -> Result<Self, ResolverConfigError> {
        let mut servers = parse_resolv_conf(&read_optional(resolv_conf)?);
        if servers.is_empty() {
            servers = vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 53),
            ];
        }
        Ok(Resolver {
            hosts: parse_hosts(&read_optional(hosts)?),
            ..Resolver::new(servers, fixed)
        })
    }

    /// Sets how long one pass over the name servers may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.dns = build(&self.servers, timeout);
        self
    }

    /// The name servers.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The addresses of `host`: a literal address as itself, then a fixed answer, then an
    /// `/etc/hosts` entry, then the A and AAAA records from DNS or its cache (IPv4 first).
    /// Refused with [`Rule::Dns`] when the name does not exist, has no addresses, or DNS failed.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, Rejection> {
        let lower = host.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(addrs) = self.fixed.get(name).or_else(|| self.hosts.get(name)) {
            if addrs.is_empty() {
                return Err(no_addresses(name));
            }
            return Ok(addrs.clone());
        }
        let mut fqdn = Name::from_ascii(name).map_err(|_| {
            Rejection::new(
                Rule::Dns,
                format!("host {} is not a valid DNS name", quoted(name)),
            )
        })?;
        fqdn.set_fqdn(true);
        if self.servers.is_empty() {
            return Err(Rejection::new(
                Rule::Dns,
                format!("host {name} cannot be resolved: no DNS servers are configured"),
            ));
        }
        let dns = self.dns.as_ref().map_err(|problem| {
            Rejection::new(
                Rule::Dns,
                format!("host {name} cannot be resolved: {problem}"),
            )
        })?;
        match dns.lookup_ip(fqdn).await {
            Ok(found) => {
                let addrs = dedup(found.iter().collect());
                if addrs.is_empty() {
                    Err(no_addresses(name))
                } else {
                    Ok(addrs)
                }
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if none.response_code == ResponseCode::NXDomain =>
            {
                Err(Rejection::new(
                    Rule::Dns,
                    format!("host {name} does not exist (NXDOMAIN)"),
                ))
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Err(no_addresses(name)),
            Err(failure) => {
                let servers: Vec<String> = self.servers.iter().map(|s| s.to_string()).collect();
                Err(Rejection::new(
                    Rule::Dns,
                    format!(
                        "host {name} could not be resolved: {failure} (asked {})",
                        servers.join(", ")
                    ),
                ))
            }
        }
    }
}

/// hickory's resolver for `servers` (UDP, then TCP for truncated answers), hosts file off.
fn build(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, String> {
    let name_servers = servers
        .iter()
        .map(|server| {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut connection| {
                    connection.port = server.port();
                    connection
                })
                .collect();
            NameServerConfig::new(server.ip(), true, connections)
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = timeout;
    options.attempts = 1;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Never;
    options.num_concurrent_reqs = 1;
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(options)
    .build()
    .map_err(|e| format!("the DNS client cannot be built: {e}"))
}

fn no_addresses(name: &str) -> Rejection {
    Rejection::new(
        Rule::Dns,
        format!("host {name} has no addresses (no A or AAAA records)"),
    )
}

fn dedup(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut unique = Vec::with_capacity(addrs.len());
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    unique
}

fn normalise_keys(map: HashMap<String, Vec<IpAddr>>) -> HashMap<String, Vec<IpAddr>> {
    map.into_iter()
        .map(|(name, addrs)| {
            let lower = name.to_ascii_lowercase();
            let name = lower.strip_suffix('.').unwrap_or(&lower).to_string();
            (name, addrs)
        })
        .collect()
}

/// The file's text, or empty when it does not exist.
fn read_optional(path: &Path) -> Result<String, ResolverConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ResolverConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The `nameserver` addresses, on port 53. Addresses with a zone id (`fe80::1%eth0`) are skipped:
/// naming an interface needs the C library.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Name to addresses, from lines of `address name [aliases...]`, `#` starting a comment.
fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut hosts: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        for name in words {
            let lower = name.to_ascii_lowercase();
            let name = lower.strip_suffix('.').unwrap_or(&lower).to_string();
            let addrs = hosts.entry(name).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DnsServer;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn answers(entries: &[(&str, &[&str])]) -> HashMap<String, Vec<IpAddr>> {
        entries
            .iter()
            .map(|(name, addrs)| (name.to_string(), addrs.iter().map(|a| ip(a)).collect()))
            .collect()
    }

    fn resolver(servers: Vec<SocketAddr>, fixed: HashMap<String, Vec<IpAddr>>) -> Resolver {
        Resolver::new(servers, fixed)
    }

    #[tokio::test]
    async fn asks_for_a_and_aaaa() {
        let server = DnsServer::start(answers(&[(
            "hooks.example.com",
            &[
                "93.184.216.34",
                "2606:2800:220:1:248:1893:25c8:1946",
                "93.184.216.35",
            ],
        )]))
        .await
        .unwrap();
        let resolver = resolver(vec![server.addr()], HashMap::new());
        assert_eq!(
            resolver.lookup("Hooks.Example.com.").await.unwrap(),
            [
                ip("93.184.216.34"),
                ip("93.184.216.35"),
                ip("2606:2800:220:1:248:1893:25c8:1946")
            ]
        );
        assert_eq!(server.queries(), 2);
    }

    #[tokio::test]
    async fn follows_cnames_and_sees_changes() {
        let server = DnsServer::start(answers(&[("target.example", &["93.184.216.34"])]))
            .await
            .unwrap();
        server.set_cname("a.example", "b.example");
        server.set_cname("b.example", "target.example");
        let resolver = resolver(vec![server.addr()], HashMap::new());
        assert_eq!(
            resolver.lookup("a.example").await.unwrap(),
            [ip("93.184.216.34")]
        );
        server.set("target.example", vec![ip("10.0.0.1")]);
        assert_eq!(
            resolver.lookup("a.example").await.unwrap(),
            [ip("10.0.0.1")]
        );
    }

    #[tokio::test]
    async fn reports_nxdomain_and_empty_answers() {
        let server = DnsServer::start(answers(&[("empty.example", &[])]))
            .await
            .unwrap();
        let resolver = resolver(vec![server.addr()], HashMap::new());
        let rejection = resolver.lookup("nope.example").await.unwrap_err();
        assert_eq!(rejection.rule, Rule::Dns);
        assert_eq!(
            rejection.message,
            format!("host nope.example does not exist (NXDOMAIN)")
        );
        let rejection = resolver.lookup("empty.example").await.unwrap_err();
        assert_eq!(
            rejection.message,
            "host empty.example has no addresses (no A or AAAA records)"
        );
        let rejection = resolver.lookup("a..example").await.unwrap_err();
        assert_eq!(
            rejection.message,
            "host \"a..example\" is not a valid DNS name"
        );
    }

    #[tokio::test]
    async fn retries_truncated_answers_over_tcp() {
        let server = DnsServer::start(answers(&[("big.example", &["93.184.216.34"])]))
            .await
            .unwrap();
        server.truncate_udp(true);
        let resolver = resolver(vec![server.addr()], HashMap::new());
        assert_eq!(
            resolver.lookup("big.example").await.unwrap(),
            [ip("93.184.216.34")]
        );
        assert_eq!(server.tcp_queries(), 2);
    }

    #[tokio::test]
    async fn moves_on_from_a_dead_server() {
        // A socket nobody reads: queries to it vanish, as they do to a dead server.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = DnsServer::start(answers(&[("a.example", &["93.184.216.34"])]))
            .await
            .unwrap();
        // A short timeout keeps the test quick; the live server only needs to answer within it.
        let timeout = Duration::from_millis(500);
        let both = resolver(
            vec![dead.local_addr().unwrap(), server.addr()],
            HashMap::new(),
        )
        .with_timeout(timeout);
        assert_eq!(
            both.lookup("a.example").await.unwrap(),
            [ip("93.184.216.34")]
        );

        let only_dead =
            resolver(vec![dead.local_addr().unwrap()], HashMap::new()).with_timeout(timeout);
        let rejection = only_dead.lookup("a.example").await.unwrap_err();
        assert_eq!(rejection.rule, Rule::Dns);
        assert_eq!(
            rejection.message,
            format!(
                "host a.example could not be resolved: request timed out (asked {})",
                dead.local_addr().unwrap()
            )
        );
    }

    #[tokio::test]
    async fn ignores_answers_that_do_not_match() {
        use hickory_resolver::proto::op::Message;
        use hickory_resolver::proto::rr::rdata::A;
        use hickory_resolver::proto::rr::{RData, Record, RecordType};
        use tokio::net::UdpSocket;

        // A hand-rolled server that first sends a forged answer (wrong id), then garbage, then
        // one for another name, then the real one; only the last may be believed.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                let query = Message::from_vec(&buf[..len]).unwrap();
                let question = query.queries[0].clone();
                let answer = |id: u16, name: &str, last: u8| {
                    let mut question = question.clone();
                    question.set_name(Name::from_ascii(name).unwrap());
                    let mut response = Message::response(id, query.metadata.op_code);
                    response.metadata.recursion_desired = true;
                    response.add_query(question.clone());
                    if question.query_type() == RecordType::A {
                        let data = RData::A(A(Ipv4Addr::new(10, 0, 0, last)));
                        response.add_answer(Record::from_rdata(question.name().clone(), 60, data));
                    }
                    response.to_vec().unwrap()
                };
                let asked = question.name().to_ascii();
                let wrong_id = answer(query.metadata.id.wrapping_add(1), &asked, 1);
                let wrong_name = answer(query.metadata.id, "other.example.", 2);
                let right = answer(query.metadata.id, &asked, 3);
                for packet in [wrong_id, b"garbage".to_vec(), wrong_name, right] {
                    socket.send_to(&packet, peer).await.unwrap();
                }
            }
        });
        let resolver = resolver(vec![addr], HashMap::new());
        assert_eq!(
            resolver.lookup("a.example").await.unwrap(),
            [ip("10.0.0.3")]
        );
        responder.abort();
    }

    #[tokio::test]
    async fn caches_answers_for_their_ttl() {
        let server = DnsServer::start(answers(&[
            ("cached.example", &["93.184.216.34"]),
            ("uncached.example", &["93.184.216.35"]),
        ]))
        .await
        .unwrap();
        let resolver = resolver(vec![server.addr()], HashMap::new());

        // TTL 300: the second lookup, from a clone as whomp's workers hold, sends no query and
        // gets the cached answer even though the server changed its mind.
        server.set_ttl(300);
        assert_eq!(
            resolver.lookup("cached.example").await.unwrap(),
            [ip("93.184.216.34")]
        );
        let asked = server.queries();
        server.set("cached.example", vec![ip("10.0.0.1")]);
        assert_eq!(
            resolver.clone().lookup("Cached.Example.").await.unwrap(),
            [ip("93.184.216.34")]
        );
        assert_eq!(server.queries(), asked, "a cached name was asked again");

        // TTL 0: nothing is kept, every lookup asks and sees the change.
        server.set_ttl(0);
        resolver.lookup("uncached.example").await.unwrap();
        let asked = server.queries();
        server.set("uncached.example", vec![ip("93.184.216.36")]);
        assert_eq!(
            resolver.lookup("uncached.example").await.unwrap(),
            [ip("93.184.216.36")]
        );
        assert!(server.queries() > asked, "a TTL 0 answer was cached");

        // TTL 1: once it expires, the name is asked again and the new answer seen.
        server.set_ttl(1);
        server.set("expiring.example", vec![ip("93.184.216.37")]);
        resolver.lookup("expiring.example").await.unwrap();
        let asked = server.queries();
        server.set("expiring.example", vec![ip("93.184.216.38")]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while resolver.lookup("expiring.example").await.unwrap() != [ip("93.184.216.38")] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the answer never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(server.queries() > asked);
    }

    #[tokio::test]
    async fn fixed_answers_and_literals_skip_dns() {
        let resolver = resolver(
            Vec::new(),
            answers(&[
                ("Hooks.Example.com.", &["93.184.216.34"]),
                ("none.example", &[]),
            ]),
        );
        assert_eq!(
            resolver.lookup("hooks.example.com").await.unwrap(),
            [ip("93.184.216.34")]
        );
        assert_eq!(resolver.lookup("::1").await.unwrap(), [ip("::1")]);
        assert_eq!(
            resolver.lookup("none.example").await.unwrap_err().message,
            "host none.example has no addresses (no A or AAAA records)"
        );
        assert_eq!(
            resolver.lookup("other.example").await.unwrap_err().message,
            "host other.example cannot be resolved: no DNS servers are configured"
        );
    }

    #[test]
    fn reads_system_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let resolv = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        std::fs::write(
            &resolv,
            "# comment\nsearch example.com\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n\
             nameserver ::1\noptions ndots:2\n",
        )
        .unwrap();
        std::fs::write(
            &hosts,
            "127.0.0.1 localhost Local.Host.\n::1 localhost # loopback\nnot-an-ip foo\n\
             10.1.1.1 db db.lan\n",
        )
        .unwrap();
        let resolver = Resolver::from_files(&resolv, &hosts, HashMap::new()).unwrap();
        assert_eq!(
            resolver.servers(),
            [
                SocketAddr::new(ip("10.0.0.53"), 53),
                SocketAddr::new(ip("::1"), 53)
            ]
        );
        assert_eq!(resolver.hosts["localhost"], [ip("127.0.0.1"), ip("::1")]);
        assert_eq!(resolver.hosts["local.host"], [ip("127.0.0.1")]);
        assert_eq!(resolver.hosts["db.lan"], [ip("10.1.1.1")]);
        assert!(!resolver.hosts.contains_key("foo"));

        let missing =
            Resolver::from_files(&dir.join("nope"), &dir.join("nope"), HashMap::new()).unwrap();
        assert_eq!(missing.servers().len(), 2);
        assert!(missing.hosts.is_empty());

        let unreadable = Resolver::from_files(dir, &hosts, HashMap::new()).unwrap_err();
        assert!(
            unreadable
                .to_string()
                .starts_with(&format!("failed to read {}: ", dir.display())),
            "{unreadable}"
        );
    }
}
