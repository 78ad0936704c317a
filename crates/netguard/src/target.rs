//! A strict parser of the absolute `http`/`https` URLs whomp is asked to send to.
//!
//! Attackers hide internal addresses in spellings that one parser reads differently from the
//! next: `127.1`, `0x7f.1`, `2130706433`, `user@host`, a backslash that a browser treats as a
//! slash. Checking the string would miss them, so the URL is parsed first, the host is normalised
//! the way the WHATWG URL standard (and thus curl, browsers and most HTTP clients) reads it, and
//! every later check looks at the normalised [`Target`]. Whatever is ambiguous is refused rather
//! than guessed: credentials, fragments, backslashes, whitespace, control characters (raw or
//! percent-encoded), percent-encoded or non-ASCII hosts and IPv6 zone ids.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{quoted, Rejection, Rule};

/// The two schemes whomp can send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain `http`, allowed only when the rules say so.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// The scheme as written in a URL, lowercase.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(&self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host of a target: a normalised DNS name or an address written literally in the URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A lowercase ASCII name without a trailing dot, e.g. `hooks.example.com`.
    Name(String),
    /// An IPv4 address (whatever spelling the URL used) or a bracketed IPv6 address.
    Ip(IpAddr),
}

impl Host {
    /// The literal address, if the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }
}

/// Writes the host as it appears in a URL: IPv6 addresses in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A parsed and normalised absolute URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The normalised host.
    pub host: Host,
    /// The explicit port, or the scheme's default.
    pub port: u16,
    /// The path and query as given, `/` when the URL had no path.
    pub path_and_query: String,
}

impl Target {
    /// The canonical URL: lowercase scheme and host, normalised address, no default port.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority(),
            self.path_and_query
        )
    }

    /// What the `Host` header must say: the host, and the port only when it is not the default.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Parses an absolute `http` or `https` URL strictly and normalises it.
///
/// Refused with [`Rule::Url`]: relative URLs, control characters, whitespace, backslashes,
/// fragments, malformed hosts, paths or percent escapes; with [`Rule::Scheme`]: other schemes;
/// with [`Rule::Userinfo`]: any `@` in the authority; with [`Rule::Port`]: a port that is empty,
/// not a number, 0 or above 65535. Non-canonical IPv4 spellings become the address they denote.
pub fn parse_target(url: &str) -> Result<Target, Rejection> {
    check_characters(url)?;
    if url.is_empty() {
        return Err(Rejection::new(Rule::Url, "url is empty"));
    }
    if url.contains('#') {
        return Err(Rejection::new(
            Rule::Url,
            "url has a fragment (#...); fragments are never sent, remove it",
        ));
    }
    let (scheme, rest) = split_scheme(url)?;
    let rest = rest.strip_prefix("//").ok_or_else(|| {
        Rejection::new(
            Rule::Url,
            format!("url has no authority: write {scheme}://host/path"),
        )
    })?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err(Rejection::new(
            Rule::Userinfo,
            "url has credentials (userinfo); they are refused",
        ));
    }
    let (host, port) = parse_authority(authority)?;
    check_path(path, url.len() - path.len())?;
    let path_and_query = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Target {
        scheme,
        host,
        port: port.unwrap_or(scheme.default_port()),
        path_and_query,
    })
}

/// Parses `host[:port]` as it appears in a URL or a `Host` header, without userinfo.
pub(crate) fn parse_authority(authority: &str) -> Result<(Host, Option<u16>), Rejection> {
    if authority.is_empty() {
        return Err(Rejection::new(Rule::Url, "url has an empty host"));
    }
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(Rejection::new(
                Rule::Url,
                format!(
                    "host {} is missing the closing ] of its IPv6 address",
                    quoted(authority)
                ),
            ));
        };
        let ip = parse_ipv6(inside)?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(parse_port(port)?),
                None => {
                    return Err(Rejection::new(
                        Rule::Url,
                        format!(
                            "unexpected {} after the IPv6 address [{inside}]",
                            quoted(after)
                        ),
                    ))
                }
            },
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (authority, None),
    };
    Ok((parse_host(host)?, port))
}

/// Refuses characters that have no place anywhere in a URL we send: they are how request
/// splitting (CR/LF), parser confusion (backslash) and hidden hosts (whitespace) get in.
fn check_characters(url: &str) -> Result<(), Rejection> {
    for (at, c) in url.char_indices() {
        let what = match c {
            '\r' => "a CR".to_string(),
            '\n' => "an LF".to_string(),
            '\0' => "a NUL".to_string(),
            '\t' => "a tab".to_string(),
            ' ' => "a space".to_string(),
            '\\' => "a backslash".to_string(),
            c if c.is_control() => format!("control character U+{:04X}", u32::from(c)),
            c if c.is_whitespace() => format!("whitespace U+{:04X}", u32::from(c)),
            _ => continue,
        };
        return Err(Rejection::new(
            Rule::Url,
            format!("url contains {what} at byte {at}; it is refused"),
        ));
    }
    Ok(())
}

/// Splits `scheme:rest`, lowercasing the scheme and refusing all but `http` and `https`.
fn split_scheme(url: &str) -> Result<(Scheme, &str), Rejection> {
    let relative = || {
        Rejection::new(
            Rule::Url,
            format!(
                "url {} is not absolute; write it like https://hooks.example.com/in",
                quoted(url)
            ),
        )
    };
    let (scheme, rest) = url.split_once(':').ok_or_else(relative)?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid = starts_with_letter
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid {
        return Err(relative());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok((Scheme::Http, rest)),
        "https" => Ok((Scheme::Https, rest)),
        other => Err(Rejection::new(
            Rule::Scheme,
            format!(
                "scheme {} is not allowed (only http and https)",
                quoted(other)
            ),
        )),
    }
}

/// Parses a port: decimal digits only, 1 to 65535.
fn parse_port(port: &str) -> Result<u16, Rejection> {
    if port.is_empty() {
        return Err(Rejection::new(
            Rule::Port,
            "port is empty; remove the colon or name a port",
        ));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::new(
            Rule::Port,
            format!("port {} is not a number", quoted(port)),
        ));
    }
    let significant = port.trim_start_matches('0');
    let value = if significant.len() > 5 {
        None
    } else {
        significant.parse::<u32>().ok().or(Some(0))
    };
    match value.map(u16::try_from) {
        Some(Ok(0)) => Err(Rejection::new(Rule::Port, "port 0 is not a valid port")),
        Some(Ok(port)) => Ok(port),
        _ => Err(Rejection::new(
            Rule::Port,
            format!("port {} is out of range (1-65535)", quoted(port)),
        )),
    }
}

/// Parses the inside of `[...]`; zone ids are refused because they name a local interface.
fn parse_ipv6(inside: &str) -> Result<Ipv6Addr, Rejection> {
    if inside.contains('%') {
        return Err(Rejection::new(
            Rule::Url,
            format!(
                "IPv6 host [{}] has a zone id (%25...); zone ids are refused",
                quoted(inside).trim_matches('"')
            ),
        ));
    }
    inside.parse().map_err(|_| {
        Rejection::new(
            Rule::Url,
            format!(
                "host [{}] is not a valid IPv6 address",
                quoted(inside).trim_matches('"')
            ),
        )
    })
}

/// Parses a host that is not bracketed: an IPv4 address in any WHATWG spelling, or a name.
fn parse_host(host: &str) -> Result<Host, Rejection> {
    if host.is_empty() {
        return Err(Rejection::new(Rule::Url, "url has an empty host"));
    }
    if !host.is_ascii() {
        return Err(Rejection::new(
            Rule::Url,
            format!(
                "host {} is not ASCII; use the punycode A-label (xn--...)",
                quoted(host)
            ),
        ));
    }
    if host.contains('%') {
        return Err(Rejection::new(
            Rule::Url,
            format!(
                "host {} is percent-encoded; write it plainly, or use the punycode A-label (xn--...)",
                quoted(host)
            ),
        ));
    }
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(Rejection::new(Rule::Url, "url has an empty host"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if let Some(last) = labels.last() {
        if ends_in_number(last) {
            return parse_ipv4(&labels)
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .ok_or_else(|| {
                    Rejection::new(
                        Rule::Url,
                        format!(
                            "host {} looks like an IPv4 address but is not a valid one",
                            quoted(host)
                        ),
                    )
                });
        }
    }
    if name.len() > 253 {
        return Err(Rejection::new(
            Rule::Url,
            format!("host {} is longer than 253 characters", quoted(host)),
        ));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(Rejection::new(
                Rule::Url,
                format!("host {} has an empty label", quoted(host)),
            ));
        }
        if label.len() > 63 {
            return Err(Rejection::new(
                Rule::Url,
                format!(
                    "host {} has a label longer than 63 characters",
                    quoted(host)
                ),
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(Rejection::new(
                Rule::Url,
                format!(
                    "host {} contains {}, which is not allowed in a host name",
                    quoted(host),
                    quoted(&c.to_string())
                ),
            ));
        }
    }
    Ok(Host::Name(name.to_string()))
}

/// The WHATWG "ends in a number" test: such a host must be an IPv4 address or nothing.
fn ends_in_number(last: &str) -> bool {
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()))
        || parse_ipv4_number(last).is_some()
}

/// The WHATWG IPv4 parser: up to four parts, each decimal, octal (leading 0) or hex (0x); all
/// but the last at most 255, the last filling the remaining bytes.
fn parse_ipv4(labels: &[&str]) -> Option<Ipv4Addr> {
    if labels.is_empty() || labels.len() > 4 {
        return None;
    }
    let numbers = labels
        .iter()
        .map(|label| parse_ipv4_number(label))
        .collect::<Option<Vec<u32>>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (5 - numbers.len() as u32);
    if last_bits < 32 && u64::from(*last) >= 1u64 << last_bits {
        return None;
    }
    let mut value = u64::from(*last);
    for (i, &n) in leading.iter().enumerate() {
        value += u64::from(n) << (8 * (3 - i as u32));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One part of a WHATWG IPv4 address; `None` when it is not a number or exceeds 32 bits.
fn parse_ipv4_number(part: &str) -> Option<u32> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if let Some(octal) = part.strip_prefix('0').filter(|rest| !rest.is_empty()) {
            (octal, 8)
        } else {
            (part, 10)
        };
    let mut value: u32 = 0;
    for c in digits.chars() {
        let digit = c.to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(digit)?;
    }
    Some(value)
}

/// Refuses paths we could not send verbatim: non-ASCII bytes and broken percent escapes, and
/// escapes of control characters (`%00`-`%1F`, `%7F`): a receiver that decodes them gets the
/// NUL, CR or LF that [`check_characters`] keeps out of the URL itself. `base` is where the
/// path starts in the URL, so that messages point into the whole URL.
fn check_path(path: &str, base: usize) -> Result<(), Rejection> {
    let bytes = path.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        if !b.is_ascii() {
            return Err(Rejection::new(
                Rule::Url,
                format!(
                    "path contains a non-ASCII character at byte {}; percent-encode it",
                    base + at
                ),
            ));
        }
        if b == b'%' {
            let escape = bytes.get(at + 1..at + 3);
            let decoded = escape
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            let Some(decoded) = decoded else {
                return Err(Rejection::new(
                    Rule::Url,
                    format!("path has a malformed percent escape at byte {}", base + at),
                ));
            };
            if decoded < 0x20 || decoded == 0x7f {
                return Err(Rejection::new(
                    Rule::Url,
                    format!(
                        "url has a percent-encoded control character (%{:02X}) at byte {}; it is refused",
                        decoded,
                        base + at
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `url` and compares the canonical form, or the rule and message of the refusal.
    fn check(url: &str, expected: Result<&str, (Rule, &str)>) {
        match (parse_target(url), expected) {
            (Ok(target), Ok(canonical)) => assert_eq!(target.url(), canonical, "{url}"),
            (Err(rejection), Err((rule, message))) => {
                assert_eq!(rejection.rule, rule, "{url}: {rejection}");
                assert_eq!(rejection.message, message, "{url}");
            }
            (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn normalises_scheme_host_and_path() {
        check(
            "HTTPS://Hooks.Example.COM./in?a=1",
            Ok("https://hooks.example.com/in?a=1"),
        );
        check("https://a.example", Ok("https://a.example/"));
        check("https://a.example?x=1", Ok("https://a.example/?x=1"));
        check("https://a.example:443/", Ok("https://a.example/"));
        check("http://a.example:80/", Ok("http://a.example/"));
        check("https://a.example:0080/", Ok("https://a.example:80/"));
        check(
            "https://a.example:8443/x%2Fy",
            Ok("https://a.example:8443/x%2Fy"),
        );
        check(
            "https://_acme.a-b.example/",
            Ok("https://_acme.a-b.example/"),
        );
        check(
            "https://xn--bcher-kva.example/",
            Ok("https://xn--bcher-kva.example/"),
        );
        check(
            "https://a.example/@b.example",
            Ok("https://a.example/@b.example"),
        );
    }

    #[test]
    fn reads_ipv4_the_whatwg_way() {
        for spelling in [
            "127.0.0.1",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "0x7F.0.0.1",
            "0177.0.0.1",
            "0177.1",
            "2130706433",
            "0x7f000001",
            "017700000001",
            "127.0.0.1.",
            "0x7f.0.0x0.1",
        ] {
            let target = parse_target(&format!("http://{spelling}/")).unwrap();
            assert_eq!(
                target.host,
                Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                "{spelling}"
            );
        }
        check("http://0/", Ok("http://0.0.0.0/"));
        check("http://0x/", Ok("http://0.0.0.0/"));
        check("http://1.2.3.0x/", Ok("http://1.2.3.0/"));
        check("http://4294967295/", Ok("http://255.255.255.255/"));
        check("http://10.0x10000/", Ok("http://10.1.0.0/"));
        check("http://169.254.43518/", Ok("http://169.254.169.254/"));
    }

    #[test]
    fn refuses_broken_ipv4() {
        for host in [
            "1.2.3.256",
            "1.2.3.4.5",
            "4294967296",
            "08",
            "0x1g.1",
            "256.1",
            "a.1",
            "99999999999999999999",
        ] {
            let message = format!(
                "host {} looks like an IPv4 address but is not a valid one",
                quoted(host)
            );
            check(&format!("http://{host}/"), Err((Rule::Url, &message)));
        }
        check("http://0x7g/", Ok("http://0x7g/"));
    }

    #[test]
    fn parses_ipv6() {
        check("https://[::1]/", Ok("https://[::1]/"));
        check("https://[0:0:0:0:0:0:0:1]:8443/", Ok("https://[::1]:8443/"));
        check(
            "https://[::FFFF:127.0.0.1]/",
            Ok("https://[::ffff:127.0.0.1]/"),
        );
        check(
            "https://[fe80::1%25eth0]/",
            Err((
                Rule::Url,
                "IPv6 host [fe80::1%25eth0] has a zone id (%25...); zone ids are refused",
            )),
        );
        check(
            "https://[::1/",
            Err((
                Rule::Url,
                "host \"[::1\" is missing the closing ] of its IPv6 address",
            )),
        );
        check(
            "https://[::1]x/",
            Err((Rule::Url, "unexpected \"x\" after the IPv6 address [::1]")),
        );
        check(
            "https://[127.0.0.1]/",
            Err((Rule::Url, "host [127.0.0.1] is not a valid IPv6 address")),
        );
        check(
            "https://[::ffff:0177.0.0.1]/",
            Err((
                Rule::Url,
                "host [::ffff:0177.0.0.1] is not a valid IPv6 address",
            )),
        );
    }

    #[test]
    fn refuses_what_is_ambiguous() {
        let userinfo = Err((
            Rule::Userinfo,
            "url has credentials (userinfo); they are refused",
        ));
        check("https://user:pass@a.example/", userinfo);
        check("https://@a.example/", userinfo);
        check("https://a.example@127.0.0.1/", userinfo);
        check(
            "https://a.example/#frag",
            Err((
                Rule::Url,
                "url has a fragment (#...); fragments are never sent, remove it",
            )),
        );
        check(
            "https://a.example\\@127.0.0.1/",
            Err((
                Rule::Url,
                "url contains a backslash at byte 17; it is refused",
            )),
        );
        check(
            "https://a.example/\r\nX: y",
            Err((Rule::Url, "url contains a CR at byte 18; it is refused")),
        );
        check(
            "https://a.example /",
            Err((Rule::Url, "url contains a space at byte 17; it is refused")),
        );
        check(
            "https://a.example/\u{a0}",
            Err((
                Rule::Url,
                "url contains whitespace U+00A0 at byte 18; it is refused",
            )),
        );
        check(
            "https://a.example/\u{7f}",
            Err((
                Rule::Url,
                "url contains control character U+007F at byte 18; it is refused",
            )),
        );
        check(
            "https://exämple.com/",
            Err((
                Rule::Url,
                "host \"exämple.com\" is not ASCII; use the punycode A-label (xn--...)",
            )),
        );
        check(
            "https://%31%32%37.0.0.1/",
            Err((
                Rule::Url,
                "host \"%31%32%37.0.0.1\" is percent-encoded; write it plainly, or use the punycode A-label (xn--...)",
            )),
        );
        check(
            "https://a.example/é",
            Err((
                Rule::Url,
                "path contains a non-ASCII character at byte 18; percent-encode it",
            )),
        );
        check(
            "https://a.example/%zz",
            Err((Rule::Url, "path has a malformed percent escape at byte 18")),
        );
        check(
            "https://a.example/100%",
            Err((Rule::Url, "path has a malformed percent escape at byte 21")),
        );
    }

    #[test]
    fn refuses_percent_encoded_control_characters() {
        for (url, escape, at) in [
            ("https://a.example/a%00b", "%00", 19),
            ("https://a.example/a%0d%0aHost:x", "%0D", 19),
            ("https://a.example/?q=%0A", "%0A", 21),
            ("https://a.example/%1f", "%1F", 18),
            ("https://a.example/%7F", "%7F", 18),
        ] {
            check(
                url,
                Err((
                    Rule::Url,
                    &format!(
                        "url has a percent-encoded control character ({escape}) at byte {at}; it is refused"
                    ),
                )),
            );
        }
        check(
            "https://a.example/%20%7E%80",
            Ok("https://a.example/%20%7E%80"),
        );
    }

    #[test]
    fn refuses_bad_shapes() {
        check("", Err((Rule::Url, "url is empty")));
        check(
            "/in",
            Err((
                Rule::Url,
                "url \"/in\" is not absolute; write it like https://hooks.example.com/in",
            )),
        );
        check(
            "//a.example/in",
            Err((
                Rule::Url,
                "url \"//a.example/in\" is not absolute; write it like https://hooks.example.com/in",
            )),
        );
        check(
            "a.example",
            Err((
                Rule::Url,
                "url \"a.example\" is not absolute; write it like https://hooks.example.com/in",
            )),
        );
        check(
            "ftp://a.example/",
            Err((
                Rule::Scheme,
                "scheme \"ftp\" is not allowed (only http and https)",
            )),
        );
        check(
            "file:///etc/passwd",
            Err((
                Rule::Scheme,
                "scheme \"file\" is not allowed (only http and https)",
            )),
        );
        check(
            "https:a.example/",
            Err((Rule::Url, "url has no authority: write https://host/path")),
        );
        check("https:///in", Err((Rule::Url, "url has an empty host")));
        check("https://:443/", Err((Rule::Url, "url has an empty host")));
        check("https://./", Err((Rule::Url, "url has an empty host")));
        check(
            "https://a..example/",
            Err((Rule::Url, "host \"a..example\" has an empty label")),
        );
        check(
            "https://a.example../",
            Err((Rule::Url, "host \"a.example..\" has an empty label")),
        );
        check(
            "https://a!b.example/",
            Err((
                Rule::Url,
                "host \"a!b.example\" contains \"!\", which is not allowed in a host name",
            )),
        );
        let long_label = "a".repeat(64);
        check(
            &format!("https://{long_label}.example/"),
            Err((
                Rule::Url,
                &format!("host \"{long_label}.example\" has a label longer than 63 characters"),
            )),
        );
    }

    #[test]
    fn refuses_bad_ports() {
        check(
            "https://a.example:0/",
            Err((Rule::Port, "port 0 is not a valid port")),
        );
        check(
            "https://a.example:65536/",
            Err((Rule::Port, "port \"65536\" is out of range (1-65535)")),
        );
        check(
            "https://a.example:99999999999999999999/",
            Err((
                Rule::Port,
                "port \"99999999999999999999\" is out of range (1-65535)",
            )),
        );
        check(
            "https://a.example:8o/",
            Err((Rule::Port, "port \"8o\" is not a number")),
        );
        check(
            "https://a.example:+443/",
            Err((Rule::Port, "port \"+443\" is not a number")),
        );
        check(
            "https://a.example:/",
            Err((Rule::Port, "port is empty; remove the colon or name a port")),
        );
        check(
            "https://a.example:443:443/",
            Err((Rule::Port, "port \"443:443\" is not a number")),
        );
        check("https://a.example:65535/", Ok("https://a.example:65535/"));
    }

    #[test]
    fn authority_is_what_the_host_header_says() {
        let target = parse_target("https://[::1]:8443/x").unwrap();
        assert_eq!(target.authority(), "[::1]:8443");
        let target = parse_target("http://0x7f.1:80").unwrap();
        assert_eq!(target.authority(), "127.0.0.1");
        assert_eq!(target.path_and_query, "/");
        assert_eq!(target.host.ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(
            parse_authority("A.Example.:443").unwrap(),
            (Host::Name("a.example".into()), Some(443))
        );
    }
}
