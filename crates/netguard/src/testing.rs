//! Test helpers (feature `testing`): a DNS server on 127.0.0.1 whose answers a test can change
//! while it runs, and the loader of `tests/targets.txt`.
//!
//! whomp's tests must never let it resolve or connect to anything real, and its DNS-rebinding
//! test needs a name whose answer changes between submission and delivery; [`DnsServer`] serves
//! both. It answers with TTL 0 unless told otherwise, as a rebinding attacker's server does, so
//! that the resolver's cache keeps nothing; the cache's own tests set a TTL and count queries. The target table is shared: this crate runs it through a [`crate::Guard`], and whomp's
//! end-to-end test runs the same file through `/v1/preflight`, so its parser lives here.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::{parse_target, Host, Rule, Rules};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// A DNS server for tests on 127.0.0.1, UDP and TCP on the same port, answering A and AAAA
/// queries from a map the test may change at any time, with TTL 0 unless [`DnsServer::set_ttl`]
/// says otherwise; NXDOMAIN for names it does not know. It stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct State {
    zone: Mutex<Zone>,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    truncate_udp: AtomicBool,
    ttl: AtomicU32,
}

#[derive(Debug, Default)]
struct Zone {
    addrs: HashMap<String, Vec<IpAddr>>,
    cnames: HashMap<String, String>,
}

impl DnsServer {
    /// Starts a server answering `answers` (name to addresses; an empty list is a name with no
    /// records). Must be called inside a Tokio runtime.
    pub async fn start(answers: HashMap<String, Vec<IpAddr>>) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let state = Arc::new(State::default());
        for (name, addrs) in answers {
            state.zone().addrs.insert(normalise(&name), addrs);
        }
        let udp_task = tokio::spawn(serve_udp(udp, Arc::clone(&state)));
        let tcp_task = tokio::spawn(serve_tcp(tcp, Arc::clone(&state)));
        Ok(DnsServer {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// Where to send queries (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the addresses of `name`, replacing any earlier answer or CNAME for it.
    pub fn set(&self, name: &str, addrs: Vec<IpAddr>) {
        let mut zone = self.state.zone();
        zone.cnames.remove(&normalise(name));
        zone.addrs.insert(normalise(name), addrs);
    }

    /// Makes `name` a CNAME for `target`, replacing any addresses it had.
    pub fn set_cname(&self, name: &str, target: &str) {
        let mut zone = self.state.zone();
        zone.addrs.remove(&normalise(name));
        zone.cnames.insert(normalise(name), normalise(target));
    }

    /// Forgets `name`; it answers NXDOMAIN from now on.
    pub fn remove(&self, name: &str) {
        let mut zone = self.state.zone();
        zone.addrs.remove(&normalise(name));
        zone.cnames.remove(&normalise(name));
    }

    /// When on, every UDP answer is an empty one with the truncation bit set, so that clients
    /// must ask again over TCP.
    pub fn truncate_udp(&self, on: bool) {
        self.state.truncate_udp.store(on, Ordering::SeqCst);
    }

    /// Sets the TTL, in seconds, of the records in every answer from now on (default 0: nothing
    /// may be cached).
    pub fn set_ttl(&self, seconds: u32) {
        self.state.ttl.store(seconds, Ordering::SeqCst);
    }

    /// Queries received so far, over UDP and TCP.
    pub fn queries(&self) -> usize {
        self.state.udp_queries.load(Ordering::SeqCst) + self.tcp_queries()
    }

    /// Queries received so far over TCP.
    pub fn tcp_queries(&self) -> usize {
        self.state.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl State {
    fn zone(&self) -> MutexGuard<'_, Zone> {
        self.zone
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The response to `query`, or `None` when it is not a query we can answer.
    fn respond(&self, query: &[u8], over_udp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        if query.metadata.message_type != MessageType::Query {
            return None;
        }
        let question = query.queries.first()?.clone();
        let mut response = Message::response(query.metadata.id, query.metadata.op_code);
        response.metadata.recursion_desired = query.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_query(question.clone());
        if over_udp && self.truncate_udp.load(Ordering::SeqCst) {
            response.metadata.truncation = true;
            return response.to_vec().ok();
        }
        let ttl = self.ttl.load(Ordering::SeqCst);
        let zone = self.zone();
        let mut owner = question.name().clone();
        let mut name = normalise(&owner.to_ascii());
        for _ in 0..8 {
            let Some(target) = zone.cnames.get(&name) else {
                break;
            };
            let target_name = fqdn(target)?;
            let cname = RData::CNAME(CNAME(target_name.clone()));
            response.add_answer(Record::from_rdata(owner, ttl, cname));
            owner = target_name;
            name = target.clone();
        }
        let chain = response.answers.len();
        match zone.addrs.get(&name) {
            Some(addrs) => {
                for addr in addrs {
                    let data = match (addr, question.query_type()) {
                        (IpAddr::V4(ip), RecordType::A) => RData::A(A(*ip)),
                        (IpAddr::V6(ip), RecordType::AAAA) => RData::AAAA(AAAA(*ip)),
                        _ => continue,
                    };
                    response.add_answer(Record::from_rdata(owner.clone(), ttl, data));
                }
            }
            None if chain == 0 => response.metadata.response_code = ResponseCode::NXDomain,
            None => {}
        }
        if response.answers.len() == chain {
            // No address of the type asked: a SOA says how long that may be cached (RFC 2308).
            let zone = owner.base_name();
            let soa = SOA::new(
                fqdn("ns.test")?,
                fqdn("hostmaster.test")?,
                1,
                3600,
                600,
                86400,
                ttl,
            );
            response.add_authority(Record::from_rdata(zone, ttl, RData::SOA(soa)));
        }
        response.to_vec().ok()
    }
}

/// `name` as a fully qualified DNS name.
fn fqdn(name: &str) -> Option<Name> {
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port for the test DNS server")))
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        state.udp_queries.fetch_add(1, Ordering::SeqCst);
        if let Some(response) = state.respond(buf.get(..len).unwrap_or_default(), true) {
            // A client that went away is not the server's problem.
            let _ = socket.send_to(&response, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(stream, Arc::clone(&state)));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, state: Arc<State>) {
    while let Ok(len) = stream.read_u16().await {
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        state.tcp_queries.fetch_add(1, Ordering::SeqCst);
        let Some(response) = state.respond(&query, false) else {
            return;
        };
        let Ok(len) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

fn normalise(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    lower.strip_suffix('.').unwrap_or(&lower).to_string()
}

/// What a case of the target table expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The pre-flight passes.
    Allow,
    /// The pre-flight refuses with `rule`, and the message contains `contains` (may be empty).
    Reject {
        /// The rule that must refuse.
        rule: Rule,
        /// Text the message must contain.
        contains: String,
    },
}

/// One line of the target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The line number in the file, for messages.
    pub line: usize,
    /// The method, as given.
    pub method: String,
    /// The URL, unescaped.
    pub url: String,
    /// The header fields, unescaped.
    pub headers: Vec<(String, Vec<u8>)>,
    /// What the URL's host resolves to (empty when the case says nothing).
    pub resolves: Vec<IpAddr>,
    /// The expected outcome.
    pub expect: Expect,
}

/// The cases that share one set of rules (one `@rules` line, or the defaults before any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The line of the `@rules` directive (0 for the implicit first section).
    pub line: usize,
    /// The rules: [`Rules::default`] with the directive's settings applied.
    pub rules: Rules,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

impl Section {
    /// The fixed DNS answers of this section: each host its cases say it resolves to. The loader
    /// guarantees one answer per host within a section, so this is a valid `dns.static` map.
    pub fn static_dns(&self) -> HashMap<String, Vec<IpAddr>> {
        let mut map = HashMap::new();
        for case in &self.cases {
            if case.resolves.is_empty() {
                continue;
            }
            if let Ok(target) = parse_target(&case.url) {
                if let Host::Name(name) = target.host {
                    map.insert(name, case.resolves.clone());
                }
            }
        }
        map
    }
}

/// Parses the target table; the format is documented at the top of `tests/targets.txt`.
/// Errors name the line.
pub fn parse_cases(text: &str) -> Result<Vec<Section>, String> {
    let mut sections = vec![Section {
        line: 0,
        rules: Rules::default(),
        cases: Vec::new(),
    }];
    let mut resolved: HashMap<String, (usize, Vec<IpAddr>)> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {line}: {e}");
        if let Some(settings) = trimmed.strip_prefix("@rules") {
            sections.push(Section {
                line,
                rules: parse_rules(settings).map_err(at)?,
                cases: Vec::new(),
            });
            resolved.clear();
            continue;
        }
        let case = parse_case(line, trimmed).map_err(at)?;
        if !case.resolves.is_empty() {
            let host = match parse_target(&case.url).map(|t| t.host) {
                Ok(Host::Name(name)) => name,
                _ => return Err(at("resolves needs a url whose host is a name".to_string())),
            };
            if let Some((first, earlier)) = resolved.get(&host) {
                if *earlier != case.resolves {
                    return Err(at(format!(
                        "{host} resolves differently on line {first} of this section"
                    )));
                }
            } else {
                resolved.insert(host, (line, case.resolves.clone()));
            }
        }
        if let Some(section) = sections.last_mut() {
            section.cases.push(case);
        }
    }
    sections.retain(|section| section.line != 0 || !section.cases.is_empty());
    Ok(sections)
}

fn parse_rules(settings: &str) -> Result<Rules, String> {
    let mut rules = Rules::default();
    for setting in settings.split_whitespace() {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("rules setting {setting:?} is not key=value"))?;
        let list = || value.split(',').filter(|item| !item.is_empty());
        let bad = |what: &str| format!("rules setting {key}: {what:?} is not valid");
        match key {
            "allow_http" => rules.allow_http = value.parse().map_err(|_| bad(value))?,
            "methods" => rules.methods = list().map(str::to_string).collect(),
            "ports" => {
                rules.ports = list()
                    .map(|p| p.parse().map_err(|_| bad(p)))
                    .collect::<Result<_, _>>()?
            }
            "reject_hosts" => rules.reject_hosts = list().map(str::to_string).collect(),
            "reject_cidrs" | "allow_cidrs" | "nat64_prefixes" => {
                let nets = list()
                    .map(|n| n.parse::<IpNet>().map_err(|_| bad(n)))
                    .collect::<Result<Vec<_>, _>>()?;
                match key {
                    "reject_cidrs" => rules.reject_cidrs = nets,
                    "allow_cidrs" => rules.allow_cidrs = nets,
                    _ => rules.nat64_prefixes = nets,
                }
            }
            "max_url_bytes" => rules.max_url_bytes = value.parse().map_err(|_| bad(value))?,
            other => return Err(format!("unknown rules setting {other:?}")),
        }
    }
    rules.validate().map_err(|e| e.to_string())?;
    Ok(rules)
}

fn parse_case(line: usize, text: &str) -> Result<Case, String> {
    let (request, expect) = text
        .split_once(" => ")
        .ok_or("a case needs \" => \" and an expectation")?;
    let mut words = request.split_whitespace();
    let method = unescape_text(words.next().ok_or("a case needs a method")?)?;
    let url = unescape_text(words.next().ok_or("a case needs a url")?)?;
    let mut headers = Vec::new();
    let mut resolves = Vec::new();
    while let Some(word) = words.next() {
        match word {
            "-H" => {
                let field = words.next().ok_or("-H needs Name:value")?;
                let (name, value) = field.split_once(':').ok_or("-H needs Name:value")?;
                headers.push((unescape_text(name)?, unescape(value)?));
            }
            "resolves" => {
                let list = words.next().ok_or("resolves needs addresses")?;
                for addr in list.split(',') {
                    resolves.push(
                        addr.parse()
                            .map_err(|_| format!("{addr:?} is not an IP address"))?,
                    );
                }
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    let mut expect_words = expect.trim().splitn(3, ' ');
    let expect = match (expect_words.next(), expect_words.next()) {
        (Some("allow"), None) => Expect::Allow,
        (Some("reject"), Some(rule)) => Expect::Reject {
            rule: Rule::from_name(rule).ok_or_else(|| format!("unknown rule {rule:?}"))?,
            contains: unescape_text(expect_words.next().unwrap_or_default().trim())?,
        },
        _ => {
            return Err(format!(
                "expectation {expect:?} is not allow or reject RULE [text]"
            ))
        }
    };
    Ok(Case {
        line,
        method,
        url,
        headers,
        resolves,
        expect,
    })
}

fn unescape_text(word: &str) -> Result<String, String> {
    String::from_utf8(unescape(word)?).map_err(|_| format!("{word:?} unescapes to invalid UTF-8"))
}

/// Undoes the table's escapes: `\s` space, `\t`, `\r`, `\n`, `\0`, `\\` and `\xHH`.
fn unescape(word: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(word.len());
    let mut bytes = word.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let byte = match bytes.next() {
            Some(b's') => b' ',
            Some(b't') => b'\t',
            Some(b'r') => b'\r',
            Some(b'n') => b'\n',
            Some(b'0') => 0,
            Some(b'\\') => b'\\',
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let hex: Vec<u8> = hex.into_iter().flatten().collect();
                std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .filter(|_| hex.len() == 2)
                    .ok_or_else(|| format!("{word:?} has a bad \\x escape"))?
            }
            _ => return Err(format!("{word:?} has an unknown escape")),
        };
        out.push(byte);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_table_format() {
        let text = "\
# comment
POST https://a.example/ -H X-A:b\\r\\nc -H Host:a.example resolves 93.184.216.34,::1 => reject address ::1 (loopback)
@rules allow_http=true methods=POST,PUT ports=443,80 reject_hosts=*.internal allow_cidrs=10.99.0.0/16 reject_cidrs=5.5.5.0/24

PUT http://a\\sb/ => reject url
POST https://b.example/ resolves 1.1.1.1 => allow
POST https://B.example./x resolves 1.1.1.1 => allow
";
        let sections = parse_cases(text).unwrap();
        assert_eq!(sections.len(), 2);
        let first = &sections[0].cases[0];
        assert_eq!(first.line, 2);
        assert_eq!(
            first.headers,
            [
                ("X-A".to_string(), b"b\r\nc".to_vec()),
                ("Host".to_string(), b"a.example".to_vec())
            ]
        );
        assert_eq!(
            first.expect,
            Expect::Reject {
                rule: Rule::Address,
                contains: "::1 (loopback)".into()
            }
        );
        assert_eq!(sections[0].static_dns()["a.example"].len(), 2);
        let second = &sections[1];
        assert_eq!(second.line, 3);
        assert!(second.rules.allow_http);
        assert_eq!(second.rules.ports, [443, 80]);
        assert_eq!(second.rules.reject_cidrs.len(), 1);
        assert_eq!(second.cases[0].url, "http://a b/");
        assert_eq!(second.cases[1].expect, Expect::Allow);
    }

    #[test]
    fn reports_bad_lines() {
        let check = |text: &str, message: &str| {
            assert_eq!(parse_cases(text).unwrap_err(), message);
        };
        check(
            "POST https://a.example/",
            "line 1: a case needs \" => \" and an expectation",
        );
        check(
            "POST https://a.example/ => maybe",
            "line 1: expectation \"maybe\" is not allow or reject RULE [text]",
        );
        check(
            "POST https://a.example/ => reject nope",
            "line 1: unknown rule \"nope\"",
        );
        check(
            "POST https://a.example/ resolves x => allow",
            "line 1: \"x\" is not an IP address",
        );
        check(
            "POST https://1.1.1.1/ resolves 1.1.1.1 => allow",
            "line 1: resolves needs a url whose host is a name",
        );
        check(
            "@rules ports=http",
            "line 1: rules setting ports: \"http\" is not valid",
        );
        check(
            "@rules colour=red",
            "line 1: unknown rules setting \"colour\"",
        );
        check(
            "POST https://a\\q/ => allow",
            "line 1: \"https://a\\\\q/\" has an unknown escape",
        );
        check(
            "POST https://a.example/ resolves 1.1.1.1 => allow\nPOST https://a.example/x resolves 1.1.1.2 => allow",
            "line 2: a.example resolves differently on line 1 of this section",
        );
    }
}
