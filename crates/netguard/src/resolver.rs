//! A small stub resolver: fixed answers, `/etc/hosts`, then A and AAAA queries over UDP/TCP.
//!
//! whomp is built as a static binary, where glibc's NSS (and so `getaddrinfo`) cannot be relied
//! on, and it must connect to exactly the addresses it checked. So it asks DNS itself: the A and
//! AAAA queries go out in parallel to the first server, each with a random id from a fresh
//! socket; an answer counts only if its id and question match; a truncated answer is fetched
//! again over TCP; a server that fails or stays silent past the timeout hands over to the next.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns::{self, Message, RCODE_NXDOMAIN, TYPE_A, TYPE_AAAA};
use crate::{quoted, Rejection, Rule};

/// How long one try (one query to one server, UDP or TCP) may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves host names to the addresses whomp will check and connect to.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    fixed: HashMap<String, Vec<IpAddr>>,
    hosts: HashMap<String, Vec<IpAddr>>,
    timeout: Duration,
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

/// What one query type got from the servers.
enum Answer {
    Addrs(Vec<IpAddr>),
    NxDomain(SocketAddr),
}

impl Resolver {
    /// A resolver asking `servers` in order, with `fixed` answers that win over DNS (like curl
    /// `--resolve`); names are matched case-insensitively, without a trailing dot.
    pub fn new(servers: Vec<SocketAddr>, fixed: HashMap<String, Vec<IpAddr>>) -> Self {
        Resolver {
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

    /// Sets how long one try may take (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The name servers, in the order they are asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The addresses of `host`: a literal address as itself, then a fixed answer, then an
    /// `/etc/hosts` entry, then the A and AAAA records from DNS (IPv4 first). Refused with
    /// [`Rule::Dns`] when the name does not exist, has no addresses, or no server answered.
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
        if let Err(problem) = dns::check_name(name) {
            return Err(Rejection::new(
                Rule::Dns,
                format!("host {} cannot be looked up: {problem}", quoted(name)),
            ));
        }
        if self.servers.is_empty() {
            return Err(Rejection::new(
                Rule::Dns,
                format!("host {name} cannot be resolved: no DNS servers are configured"),
            ));
        }
        let (v4, v6) = tokio::join!(self.ask(name, TYPE_A), self.ask(name, TYPE_AAAA));
        match (v4, v6) {
            (Ok(Answer::NxDomain(server)), _) | (_, Ok(Answer::NxDomain(server))) => {
                Err(Rejection::new(
                    Rule::Dns,
                    format!("host {name} does not exist (NXDOMAIN from {server})"),
                ))
            }
            (Ok(Answer::Addrs(mut v4)), Ok(Answer::Addrs(v6))) => {
                v4.extend(v6);
                if v4.is_empty() {
                    Err(no_addresses(name))
                } else {
                    Ok(dedup(v4))
                }
            }
            (Ok(Answer::Addrs(addrs)), Err(_)) | (Err(_), Ok(Answer::Addrs(addrs)))
                if !addrs.is_empty() =>
            {
                Ok(dedup(addrs))
            }
            (Err(failure), _) | (_, Err(failure)) => Err(Rejection::new(
                Rule::Dns,
                format!("host {name} could not be resolved: {failure}"),
            )),
        }
    }

    /// Asks the servers in turn for one record type until one gives a definite answer.
    async fn ask(&self, name: &str, qtype: u16) -> Result<Answer, String> {
        let mut failures = Vec::new();
        for &server in &self.servers {
            match self.ask_one(server, name, qtype).await {
                Ok(message) if message.rcode == 0 => {
                    return Ok(Answer::Addrs(message.addresses(name, qtype)))
                }
                Ok(message) if message.rcode == RCODE_NXDOMAIN => {
                    return Ok(Answer::NxDomain(server))
                }
                Ok(message) => {
                    failures.push(format!("{server} answered {}", rcode_name(message.rcode)))
                }
                Err(failure) => failures.push(format!("{server} {failure}")),
            }
        }
        Err(failures.join("; "))
    }

    /// One try against one server: UDP, then TCP if the answer was truncated.
    async fn ask_one(&self, server: SocketAddr, name: &str, qtype: u16) -> Result<Message, String> {
        let id: u16 = rand::random();
        let query = dns::encode_query(id, name, qtype).map_err(str::to_string)?;
        let timed_out = |_| format!("timed out after {:?}", self.timeout);
        let message =
            tokio::time::timeout(self.timeout, udp_exchange(server, &query, id, name, qtype))
                .await
                .map_err(timed_out)?
                .map_err(|e| format!("failed over udp: {e}"))?;
        if !message.truncated {
            return Ok(message);
        }
        tokio::time::timeout(self.timeout, tcp_exchange(server, &query, id, name, qtype))
            .await
            .map_err(timed_out)?
            .map_err(|e| format!("failed over tcp: {e}"))
    }
}

/// Sends `query` from a fresh socket connected to `server` and waits for the matching answer,
/// ignoring anything else that arrives (late answers, spoofing attempts, garbage).
async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: u16,
) -> io::Result<Message> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await?;
        if let Ok(message) = dns::parse(buf.get(..len).unwrap_or_default()) {
            if message.answers(id, name, qtype) {
                return Ok(message);
            }
        }
    }
}

/// The same exchange over TCP, with the two-byte length prefix.
async fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: u16,
) -> io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    let message = dns::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if message.answers(id, name, qtype) {
        Ok(message)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer does not match the question",
        ))
    }
}

fn no_addresses(name: &str) -> Rejection {
    Rejection::new(
        Rule::Dns,
        format!("host {name} has no addresses (no A or AAAA records)"),
    )
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".to_string(),
        2 => "SERVFAIL".to_string(),
        4 => "NOTIMP".to_string(),
        5 => "REFUSED".to_string(),
        other => format!("rcode {other}"),
    }
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
            format!(
                "host nope.example does not exist (NXDOMAIN from {})",
                server.addr()
            )
        );
        let rejection = resolver.lookup("empty.example").await.unwrap_err();
        assert_eq!(
            rejection.message,
            "host empty.example has no addresses (no A or AAAA records)"
        );
        let rejection = resolver.lookup("a..example").await.unwrap_err();
        assert_eq!(
            rejection.message,
            "host \"a..example\" cannot be looked up: the name has an empty label"
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
                "host a.example could not be resolved: {} timed out after 500ms",
                dead.local_addr().unwrap()
            )
        );
    }

    #[tokio::test]
    async fn ignores_answers_that_do_not_match() {
        // A hand-rolled server that first sends a forged answer (wrong id), then one for another
        // name, then the real one; only the last may be believed.
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            loop {
                let (len, peer) = socket.recv_from(&mut buf).await.unwrap();
                let query = dns::parse(&buf[..len]).unwrap();
                let question = query.questions[0].clone();
                let forged = |id: u16, name: &str, last: u8| {
                    let data = if question.qtype == TYPE_A {
                        dns::Data::A(Ipv4Addr::new(10, 0, 0, last))
                    } else {
                        dns::Data::Other
                    };
                    let record = dns::Record {
                        name: name.to_string(),
                        class: dns::CLASS_IN,
                        data,
                    };
                    let q = dns::Question {
                        name: name.to_string(),
                        ..question.clone()
                    };
                    dns::encode_response(id, &q, 0, false, &[record])
                };
                let wrong_id = forged(query.id.wrapping_add(1), &question.name, 1);
                let wrong_name = forged(query.id, "other.example", 2);
                let right = dns::encode_response(
                    query.id,
                    &question,
                    0,
                    false,
                    &[dns::Record {
                        name: question.name.clone(),
                        class: dns::CLASS_IN,
                        data: if question.qtype == TYPE_A {
                            dns::Data::A(Ipv4Addr::new(93, 184, 216, 34))
                        } else {
                            dns::Data::Other
                        },
                    }],
                );
                for packet in [wrong_id, b"garbage".to_vec(), wrong_name, right] {
                    socket.send_to(&packet, peer).await.unwrap();
                }
            }
        });
        let resolver = resolver(vec![addr], HashMap::new());
        assert_eq!(
            resolver.lookup("a.example").await.unwrap(),
            [ip("93.184.216.34")]
        );
        responder.abort();
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
