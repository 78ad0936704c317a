//! What of a destination URL may be shown: `scheme://host:port`, nothing more.
//!
//! URLs are credentials more often than not: `user:password@` userinfo, `?token=` queries, and
//! Slack- or Discord-style webhook URLs whose path *is* the secret. Attempt records, log lines,
//! the status API and `spool list` are read by people and shipped to log stores, so every one
//! of them shows a URL through [`origin`] and names the rest (route, backend, host) instead.

/// `scheme://host:port` of `url`: no userinfo, path, query or fragment; the port written out
/// (80 for http, 443 for https when the URL has none); scheme and host in lower case. A string
/// without a scheme is cut the same way (`user@host:1/x` gives `host:1`). Never fails and never
/// returns more of `url` than its host and port, so it is safe on any text.
pub fn origin(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, url),
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host_port = host_port.to_ascii_lowercase();
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].starts_with("]:"),
        None => host_port.contains(':'),
    };
    let default_port = match scheme.as_deref() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    };
    let host_port = match default_port {
        Some(port) if !has_port && !host_port.is_empty() => format!("{host_port}:{port}"),
        _ => host_port,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host_port}"),
        None => host_port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, shown: &str) {
        assert_eq!(origin(url), shown, "{url}");
    }

    #[test]
    fn shows_only_scheme_host_and_port() {
        check(
            "https://user:pa55@Hooks.Slack.com/services/T0/B0/XXXX?token=t#f",
            "https://hooks.slack.com:443",
        );
        check(
            "http://10.0.0.1:8000/hooks/paypal?a=1",
            "http://10.0.0.1:8000",
        );
        check("http://[::1]/x", "http://[::1]:80");
        check(
            "http://u:p@[2001:db8::1]:8443?q",
            "http://[2001:db8::1]:8443",
        );
        check("http://a@b@host.example", "http://host.example:80");
        check("https://host.example:443", "https://host.example:443");
        check("ftp://host/x", "ftp://host");
        check("user:secret@host:1/path", "host:1");
        check("x", "x");
        check("", "");
        check("http:///path", "http://");
    }
}
