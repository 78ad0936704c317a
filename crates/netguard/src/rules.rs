//! The operator's pre-flight rules and every check that needs no DNS.
//!
//! The config crate reads the `preflight:` section of whomp's YAML into [`Rules`] and checks
//! them with [`Rules::validate`], the one place that says what valid rules are; the defaults
//! are the safe ones from the design (https only, `POST`, ports 443 and 8443). These checks run on the
//! submission before anything is spooled, and the address checks run again on every address
//! a name resolves to, at submission and at every delivery attempt.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::ranges::{embedded_v4, is_nat64_len, nat64_v4, special_v4, special_v6, Embedded};
use crate::target::{parse_authority, parse_target, Host, Scheme, Target};
use crate::{quoted, Rejection, Rule};

/// Names that are never on the internet whatever the configuration says (RFC 6761 `localhost`).
const BUILTIN_HOSTS: &[&str] = &["localhost", "*.localhost"];

/// What whomp may send to, on top of the built-in list of special-purpose address ranges.
///
/// The fields are plain data so that the config crate can fill them; [`Rules::validate`] says
/// whether they make sense, and config yields no rules that it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Whether plain `http` is allowed; it also allows port 80.
    pub allow_http: bool,
    /// Allowed methods, compared case-sensitively as HTTP does.
    pub methods: Vec<String>,
    /// Allowed ports; 80 is added when `allow_http` is set.
    pub ports: Vec<u16>,
    /// Refused host names: exact (`metadata.google.internal`) or a suffix (`*.internal`, which
    /// also refuses `internal` itself). Matched against names only, not literal addresses.
    pub reject_hosts: Vec<String>,
    /// Refused ranges; they win over everything, `allow_cidrs` included.
    pub reject_cidrs: Vec<IpNet>,
    /// Exceptions to the built-in special-purpose ranges (e.g. `127.0.0.1/32` in tests).
    pub allow_cidrs: Vec<IpNet>,
    /// NAT64 prefixes in use on this network (RFC 6052 lengths: /32, /40, /48, /56, /64, /96):
    /// an address inside one is judged by the IPv4 address it carries. Any other NAT64, 6to4 or
    /// Teredo address is refused whatever it carries.
    pub nat64_prefixes: Vec<IpNet>,
    /// The longest target URL accepted, in bytes.
    pub max_url_bytes: usize,
}

/// The default of [`Rules::max_url_bytes`]: longer than any webhook URL, short enough that no
/// receiver's request line limit is reached.
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;

impl Default for Rules {
    /// The design's defaults: https only, `POST` only, ports 443 and 8443, and the special-use
    /// domains `*.internal`, `*.local` (mDNS) and `*.home.arpa` refused.
    fn default() -> Self {
        Rules {
            allow_http: false,
            methods: vec!["POST".to_string()],
            ports: vec![443, 8443],
            reject_hosts: vec![
                "*.internal".to_string(),
                "*.local".to_string(),
                "*.home.arpa".to_string(),
            ],
            reject_cidrs: Vec::new(),
            allow_cidrs: Vec::new(),
            nat64_prefixes: Vec::new(),
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
        }
    }
}

/// Rules that cannot be applied; the config loader reports each problem where it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidRules {
    /// Every problem found; never empty.
    pub problems: Vec<Problem>,
}

/// One thing wrong with [`Rules`]: the field, the position in its list, and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("method {} is not an HTTP token", quoted(.method))]
    Method { index: usize, method: String },
    #[error("port 0 is not a valid port")]
    ZeroPort { index: usize },
    #[error("nat64 prefix {prefix} is not an IPv6 prefix of length 32, 40, 48, 56, 64 or 96")]
    Nat64Prefix { index: usize, prefix: IpNet },
    #[error("max_url_bytes 0 would refuse every url")]
    ZeroMaxUrlBytes,
    #[error("host pattern {} is neither a name nor *.suffix", quoted(.pattern))]
    HostPattern { index: usize, pattern: String },
}

/// Why an address is refused: which address (and which IPv4 inside it) and which range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    addr: IpAddr,
    via: Option<Embedded>,
    range: String,
    label: &'static str,
}

impl Denial {
    /// The address as messages name it, e.g. `::ffff:a00:1 (ipv4-mapped, embeds 10.0.0.1)`.
    pub(crate) fn subject(&self) -> String {
        match &self.via {
            None => self.addr.to_string(),
            Some(embedded) => format!("{} ({}, embeds {})", self.addr, embedded.form, embedded.v4),
        }
    }

    /// The range as messages name it, e.g. `inside rejected range 10.0.0.0/8 (private)`.
    pub(crate) fn range(&self) -> String {
        format!("inside rejected range {} ({})", self.range, self.label)
    }
}

impl Rules {
    /// Checks that methods are HTTP tokens, ports are not 0, NAT64 prefixes have RFC 6052
    /// lengths, URLs may have a byte and host patterns are names or `*.suffix` (at most 253
    /// characters); reports every problem at once.
    pub fn validate(&self) -> Result<(), InvalidRules> {
        let mut problems = Vec::new();
        for (index, method) in self.methods.iter().enumerate() {
            if !is_token(method) {
                problems.push(Problem::Method {
                    index,
                    method: method.clone(),
                });
            }
        }
        if let Some(index) = self.ports.iter().position(|&port| port == 0) {
            problems.push(Problem::ZeroPort { index });
        }
        for (index, net) in self.nat64_prefixes.iter().enumerate() {
            if !matches!(net, IpNet::V6(_)) || !is_nat64_len(net.prefix_len()) {
                problems.push(Problem::Nat64Prefix {
                    index,
                    prefix: *net,
                });
            }
        }
        if self.max_url_bytes == 0 {
            problems.push(Problem::ZeroMaxUrlBytes);
        }
        for (index, pattern) in self.reject_hosts.iter().enumerate() {
            let name = pattern.strip_prefix("*.").unwrap_or(pattern);
            let name = name.strip_suffix('.').unwrap_or(name);
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                });
            if !valid {
                problems.push(Problem::HostPattern {
                    index,
                    pattern: pattern.clone(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidRules { problems })
        }
    }

    /// The ports a target may use: `ports`, plus 80 when `allow_http` is set.
    pub fn allowed_ports(&self) -> Vec<u16> {
        let mut ports = self.ports.clone();
        if self.allow_http && !ports.contains(&80) {
            ports.push(80);
        }
        ports
    }

    /// Every check that needs no DNS, in this order: the URL's length and syntax, the method,
    /// the headers, then [`Rules::check_target`]. Returns the normalised target. whomp runs it at
    /// submission and again before every attempt, against the rules of the moment.
    pub fn check_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, Vec<u8>)],
    ) -> Result<Target, Rejection> {
        if url.len() > self.max_url_bytes {
            return Err(Rejection::new(
                Rule::Url,
                format!(
                    "url is {} bytes, longer than the limit of {} (preflight.max_url_bytes)",
                    url.len(),
                    self.max_url_bytes
                ),
            ));
        }
        let target = parse_target(url)?;
        self.check_method(method)?;
        check_headers(&target, headers)?;
        self.check_target(&target)?;
        Ok(target)
    }

    /// The checks of a parsed target: scheme, port, host name patterns, and a literal address.
    pub fn check_target(&self, target: &Target) -> Result<(), Rejection> {
        if target.scheme == Scheme::Http && !self.allow_http {
            return Err(Rejection::new(
                Rule::Scheme,
                "scheme http is not allowed (allowed: https)",
            ));
        }
        let ports = self.allowed_ports();
        if !ports.contains(&target.port) {
            let allowed: Vec<String> = ports.iter().map(u16::to_string).collect();
            return Err(Rejection::new(
                Rule::Port,
                format!(
                    "port {} is not allowed (allowed: {})",
                    target.port,
                    allowed.join(", ")
                ),
            ));
        }
        match &target.host {
            Host::Name(name) => self.check_name(name),
            Host::Ip(ip) => self.check_addr(*ip),
        }
    }

    /// Checks one address against `reject_cidrs`, `allow_cidrs` and the built-in ranges; an
    /// IPv4-mapped or IPv4-compatible address, or one inside a named NAT64 prefix, is judged by
    /// the IPv4 address it carries.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), Rejection> {
        match self.deny(ip) {
            None => Ok(()),
            Some(denial) => Err(Rejection::new(
                Rule::Address,
                format!("address {} is {}", denial.subject(), denial.range()),
            )),
        }
    }

    /// Why `ip` is refused, if it is.
    pub(crate) fn deny(&self, ip: IpAddr) -> Option<Denial> {
        let v6 = match ip {
            IpAddr::V4(v4) => {
                return self.deny_v4(v4).map(|(range, label)| Denial {
                    addr: ip,
                    via: None,
                    range,
                    label,
                })
            }
            IpAddr::V6(v6) => v6,
        };
        if let Some(net) = self.reject_cidrs.iter().find(|net| net.contains(&ip)) {
            return Some(Denial {
                addr: ip,
                via: None,
                range: net.to_string(),
                label: "reject_cidrs",
            });
        }
        if self.allow_cidrs.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let translated = self.nat64_prefixes.iter().find_map(|net| match net {
            IpNet::V6(net) => nat64_v4(v6, net.network(), net.prefix_len()),
            IpNet::V4(_) => None,
        });
        if let Some(inner) = translated.or_else(|| embedded_v4(v6)) {
            return self.deny_v4(inner.v4).map(|(range, label)| Denial {
                addr: ip,
                via: Some(inner),
                range,
                label,
            });
        }
        special_v6(v6).map(|special| Denial {
            addr: ip,
            via: None,
            range: special.range.to_string(),
            label: special.label,
        })
    }

    fn deny_v4(&self, v4: Ipv4Addr) -> Option<(String, &'static str)> {
        let ip = IpAddr::V4(v4);
        if let Some(net) = self.reject_cidrs.iter().find(|net| net.contains(&ip)) {
            return Some((net.to_string(), "reject_cidrs"));
        }
        if self.allow_cidrs.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        special_v4(v4).map(|special| (special.range.to_string(), special.label))
    }

    fn check_method(&self, method: &str) -> Result<(), Rejection> {
        if !is_token(method) {
            return Err(Rejection::new(
                Rule::Method,
                format!("method {} is not an HTTP token", quoted(method)),
            ));
        }
        if self.methods.iter().any(|allowed| allowed == method) {
            return Ok(());
        }
        Err(Rejection::new(
            Rule::Method,
            format!(
                "method {method} is not allowed (allowed: {})",
                self.methods.join(", ")
            ),
        ))
    }

    fn check_name(&self, name: &str) -> Result<(), Rejection> {
        if let Some(pattern) = BUILTIN_HOSTS
            .iter()
            .find(|pattern| host_matches(pattern, name))
        {
            return Err(Rejection::new(
                Rule::Host,
                format!("host {name} is a special-use name ({pattern}, always refused)"),
            ));
        }
        if let Some(pattern) = self
            .reject_hosts
            .iter()
            .find(|pattern| host_matches(pattern, name))
        {
            return Err(Rejection::new(
                Rule::Host,
                format!(
                    "host {name} is refused by reject_hosts pattern {}",
                    quoted(pattern)
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `name` (normalised) matches `pattern`: exactly, or for `*.suffix` any name ending in
/// `.suffix` and `suffix` itself. Patterns are compared lowercase without a trailing dot.
fn host_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let pattern = pattern.strip_suffix('.').unwrap_or(&pattern);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name == suffix
                || name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.ends_with('.'))
        }
        None => name == pattern,
    }
}

/// Header checks: names are tokens, values have no CR, LF, NUL or other control character
/// (HTAB aside), and at most one `Host` header, naming the URL's authority.
fn check_headers(target: &Target, headers: &[(String, Vec<u8>)]) -> Result<(), Rejection> {
    let mut host_seen = false;
    for (index, (name, value)) in headers.iter().enumerate() {
        let number = index + 1;
        if name.is_empty() {
            return Err(Rejection::new(
                Rule::Header,
                format!("header {number}: name is empty"),
            ));
        }
        if let Some(c) = name.chars().find(|&c| !is_tchar(c)) {
            return Err(Rejection::new(
                Rule::Header,
                format!(
                    "header {number}: name {} contains {}, which is not allowed in a field name",
                    quoted(name),
                    describe(c)
                ),
            ));
        }
        if let Some((at, &byte)) = value
            .iter()
            .enumerate()
            .find(|(_, &b)| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err(Rejection::new(
                Rule::Header,
                format!(
                    "header {number} ({name}): value contains {} at byte {at}",
                    describe(char::from(byte))
                ),
            ));
        }
        if name.eq_ignore_ascii_case("host") {
            if host_seen {
                return Err(Rejection::new(
                    Rule::Header,
                    format!("header {number} ({name}): more than one Host header"),
                ));
            }
            host_seen = true;
            check_host_header(target, value)?;
        }
    }
    Ok(())
}

/// A `Host` header must name the same host and port as the URL, in any equivalent spelling.
fn check_host_header(target: &Target, value: &[u8]) -> Result<(), Rejection> {
    let text = String::from_utf8_lossy(value);
    let trimmed = text.trim_matches([' ', '\t']);
    let disagrees = || {
        Rejection::new(
            Rule::Header,
            format!(
                "Host header {} disagrees with the url authority {}",
                quoted(trimmed),
                target.authority()
            ),
        )
    };
    if trimmed.contains('@') {
        return Err(disagrees());
    }
    let (host, port) = parse_authority(trimmed).map_err(|_| disagrees())?;
    if host == target.host && port.unwrap_or(target.scheme.default_port()) == target.port {
        Ok(())
    } else {
        Err(disagrees())
    }
}

/// Names a character for a message: CR, LF and NUL by name, other controls by code.
fn describe(c: char) -> String {
    match c {
        '\r' => "a CR".to_string(),
        '\n' => "an LF".to_string(),
        '\0' => "a NUL".to_string(),
        ' ' => "a space".to_string(),
        c if c.is_control() || !c.is_ascii() => format!("U+{:04X}", u32::from(c)),
        c => quoted(&c.to_string()),
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_tchar)
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            allow_http: true,
            methods: vec!["POST".into(), "PUT".into()],
            reject_hosts: vec!["*.internal".into(), "Evil.Example.".into()],
            reject_cidrs: vec![
                "5.5.5.0/24".parse().unwrap(),
                "10.99.7.0/24".parse().unwrap(),
            ],
            allow_cidrs: vec![
                "10.99.0.0/16".parse().unwrap(),
                "fd99::/16".parse().unwrap(),
            ],
            ..Rules::default()
        }
    }

    /// Runs `check_request` and compares the canonical URL or the refusal.
    fn check(
        rules: &Rules,
        method: &str,
        url: &str,
        headers: &[(&str, &[u8])],
        expected: Result<&str, (Rule, &str)>,
    ) {
        let headers: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        match (rules.check_request(method, url, &headers), expected) {
            (Ok(target), Ok(canonical)) => assert_eq!(target.url(), canonical, "{url}"),
            (Err(rejection), Err((rule, message))) => {
                assert_eq!(
                    (rejection.rule, rejection.message.as_str()),
                    (rule, message),
                    "{url}"
                )
            }
            (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn defaults_are_the_design_defaults() {
        let rules = Rules::default();
        assert_eq!(rules.allowed_ports(), [443, 8443]);
        assert_eq!(rules.validate(), Ok(()));
        check(
            &rules,
            "POST",
            "https://a.example/",
            &[],
            Ok("https://a.example/"),
        );
        check(
            &rules,
            "POST",
            "http://a.example/",
            &[],
            Err((Rule::Scheme, "scheme http is not allowed (allowed: https)")),
        );
        check(
            &rules,
            "GET",
            "https://a.example/",
            &[],
            Err((Rule::Method, "method GET is not allowed (allowed: POST)")),
        );
        check(
            &rules,
            "post",
            "https://a.example/",
            &[],
            Err((Rule::Method, "method post is not allowed (allowed: POST)")),
        );
        check(
            &rules,
            "POST",
            "https://a.example:22/",
            &[],
            Err((Rule::Port, "port 22 is not allowed (allowed: 443, 8443)")),
        );
        check(
            &rules,
            "POST",
            "https://metadata.google.internal/",
            &[],
            Err((
                Rule::Host,
                "host metadata.google.internal is refused by reject_hosts pattern \"*.internal\"",
            )),
        );
    }

    #[test]
    fn allow_http_adds_port_80() {
        let rules = rules();
        assert_eq!(rules.allowed_ports(), [443, 8443, 80]);
        check(
            &rules,
            "PUT",
            "http://a.example/",
            &[],
            Ok("http://a.example/"),
        );
        check(
            &rules,
            "POST",
            "http://a.example:8080/",
            &[],
            Err((
                Rule::Port,
                "port 8080 is not allowed (allowed: 443, 8443, 80)",
            )),
        );
    }

    #[test]
    fn refuses_bad_methods() {
        check(
            &rules(),
            "PO ST",
            "https://a.example/",
            &[],
            Err((Rule::Method, "method \"PO ST\" is not an HTTP token")),
        );
        check(
            &rules(),
            "",
            "https://a.example/",
            &[],
            Err((Rule::Method, "method \"\" is not an HTTP token")),
        );
    }

    #[test]
    fn matches_host_patterns() {
        assert!(host_matches("*.internal", "a.internal"));
        assert!(host_matches("*.internal", "a.b.internal"));
        assert!(host_matches("*.internal", "internal"));
        assert!(!host_matches("*.internal", "ainternal"));
        assert!(!host_matches("*.internal", "internal.example"));
        assert!(host_matches("Evil.Example.", "evil.example"));
        assert!(!host_matches("evil.example", "a.evil.example"));
        let rules = rules();
        check(
            &rules,
            "POST",
            "https://EVIL.example./",
            &[],
            Err((
                Rule::Host,
                "host evil.example is refused by reject_hosts pattern \"Evil.Example.\"",
            )),
        );
        check(
            &rules,
            "POST",
            "https://localhost/",
            &[],
            Err((
                Rule::Host,
                "host localhost is a special-use name (localhost, always refused)",
            )),
        );
        check(
            &rules,
            "POST",
            "https://a.localhost/",
            &[],
            Err((
                Rule::Host,
                "host a.localhost is a special-use name (*.localhost, always refused)",
            )),
        );
    }

    #[test]
    fn checks_literal_addresses() {
        let rules = rules();
        check(
            &rules,
            "POST",
            "https://0x7f.1/",
            &[],
            Err((
                Rule::Address,
                "address 127.0.0.1 is inside rejected range 127.0.0.0/8 (loopback)",
            )),
        );
        check(
            &rules,
            "POST",
            "https://[::ffff:169.254.169.254]/",
            &[],
            Err((
                Rule::Address,
                "address ::ffff:169.254.169.254 (ipv4-mapped, embeds 169.254.169.254) is inside rejected range 169.254.169.254/32 (cloud metadata)",
            )),
        );
        check(
            &rules,
            "POST",
            "https://10.99.1.1/",
            &[],
            Ok("https://10.99.1.1/"),
        );
        check(
            &rules,
            "POST",
            "https://[::ffff:10.99.1.1]/",
            &[],
            Ok("https://[::ffff:10.99.1.1]/"),
        );
        check(
            &rules,
            "POST",
            "https://[fd99::1]/",
            &[],
            Ok("https://[fd99::1]/"),
        );
        check(
            &rules,
            "POST",
            "https://10.99.7.1/",
            &[],
            Err((
                Rule::Address,
                "address 10.99.7.1 is inside rejected range 10.99.7.0/24 (reject_cidrs)",
            )),
        );
        check(
            &rules,
            "POST",
            "https://[64:ff9b::505:505]/",
            &[],
            Err((
                Rule::Address,
                "address 64:ff9b::505:505 is inside rejected range 64:ff9b::/96 (nat64)",
            )),
        );
        let nat64 = Rules {
            nat64_prefixes: vec!["64:ff9b::/96".parse().unwrap()],
            ..rules.clone()
        };
        check(
            &nat64,
            "POST",
            "https://[64:ff9b::505:505]/",
            &[],
            Err((
                Rule::Address,
                "address 64:ff9b::505:505 (nat64, embeds 5.5.5.5) is inside rejected range 5.5.5.0/24 (reject_cidrs)",
            )),
        );
        assert_eq!(
            nat64.check_addr("64:ff9b::5db8:d822".parse().unwrap()),
            Ok(())
        );
        assert_eq!(rules.check_addr("93.184.216.34".parse().unwrap()), Ok(()));
        assert_eq!(
            rules.check_addr("::ffff:93.184.216.34".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            rules.check_addr("2606:2800:220:1::1".parse().unwrap()),
            Ok(())
        );
        let rejection = rules.check_addr("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap());
        assert_eq!(
            rejection.unwrap_err().message,
            "address 2001:0:4136:e378:8000:63bf:3fff:fdd2 is inside rejected range 2001::/32 (teredo)"
        );
    }

    #[test]
    fn checks_headers() {
        let rules = rules();
        let url = "https://a.example:8443/in";
        check(
            &rules,
            "POST",
            url,
            &[("Host", b"a.example:8443"), ("X-A", b"b\tc")],
            Ok(url),
        );
        check(
            &rules,
            "POST",
            url,
            &[("host", b" A.EXAMPLE.:8443 ")],
            Ok(url),
        );
        check(
            &rules,
            "POST",
            "https://127.1/",
            &[("Host", b"127.0.0.1:443")],
            Err((
                Rule::Address,
                "address 127.0.0.1 is inside rejected range 127.0.0.0/8 (loopback)",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("Host", b"b.example:8443")],
            Err((
                Rule::Header,
                "Host header \"b.example:8443\" disagrees with the url authority a.example:8443",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("Host", b"a.example")],
            Err((
                Rule::Header,
                "Host header \"a.example\" disagrees with the url authority a.example:8443",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("Host", b"a.example:8443"), ("HOST", b"a.example:8443")],
            Err((Rule::Header, "header 2 (HOST): more than one Host header")),
        );
        check(
            &rules,
            "POST",
            url,
            &[("Host", b"x@a.example:8443")],
            Err((
                Rule::Header,
                "Host header \"x@a.example:8443\" disagrees with the url authority a.example:8443",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X-A", b"ok"), ("X-B", b"a\r\nHost: evil")],
            Err((
                Rule::Header,
                "header 2 (X-B): value contains a CR at byte 1",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X-B", b"a\nb")],
            Err((
                Rule::Header,
                "header 1 (X-B): value contains an LF at byte 1",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X-B", b"a\0")],
            Err((
                Rule::Header,
                "header 1 (X-B): value contains a NUL at byte 1",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X-B", b"\x1b[31m")],
            Err((
                Rule::Header,
                "header 1 (X-B): value contains U+001B at byte 0",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X-B\r\nHost", b"x")],
            Err((
                Rule::Header,
                "header 1: name \"X-B\\r\\nHost\" contains a CR, which is not allowed in a field name",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("X B", b"x")],
            Err((
                Rule::Header,
                "header 1: name \"X B\" contains a space, which is not allowed in a field name",
            )),
        );
        check(
            &rules,
            "POST",
            url,
            &[("", b"x")],
            Err((Rule::Header, "header 1: name is empty")),
        );
    }

    #[test]
    fn each_problem_says_where_it_is() {
        // 255 characters: no DNS name is that long, so the pattern could never match one.
        let long = format!("*.{}", vec!["a".repeat(63); 4].join("."));
        let rules = Rules {
            ports: vec![443, 0],
            reject_hosts: vec!["ok.example".into(), long.clone()],
            ..Rules::default()
        };
        assert_eq!(
            rules.validate().unwrap_err().problems,
            [
                Problem::ZeroPort { index: 1 },
                Problem::HostPattern {
                    index: 1,
                    pattern: long
                }
            ]
        );
    }

    #[test]
    fn validates_rules() {
        let rules = Rules {
            methods: vec!["POST".into(), "BAD METHOD".into()],
            ports: vec![443, 0],
            reject_hosts: vec!["*.ok".into(), "*".into(), "a.*.b".into(), "".into()],
            nat64_prefixes: vec![
                "64:ff9b::/96".parse().unwrap(),
                "64:ff9b::/95".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            max_url_bytes: 0,
            ..Rules::default()
        };
        assert_eq!(
            rules.validate().unwrap_err().to_string(),
            "method \"BAD METHOD\" is not an HTTP token; port 0 is not a valid port; \
             nat64 prefix 64:ff9b::/95 is not an IPv6 prefix of length 32, 40, 48, 56, 64 or 96; \
             nat64 prefix 10.0.0.0/8 is not an IPv6 prefix of length 32, 40, 48, 56, 64 or 96; \
             max_url_bytes 0 would refuse every url; \
             host pattern \"*\" is neither a name nor *.suffix; \
             host pattern \"a.*.b\" is neither a name nor *.suffix; \
             host pattern \"\" is neither a name nor *.suffix"
        );
    }
}
