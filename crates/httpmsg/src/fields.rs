//! Rules about single header fields, shared by the parser, the writer, the JSON envelope and the
//! forwarding code of both daemons: what a token is, what a field value may contain, and which
//! fields describe one connection only and so must not be passed on.

/// The fields that belong to one connection (RFC 9110 7.6.1, plus the historical
/// `Keep-Alive` and `Proxy-Connection`), which a forwarder removes.
pub const HOP_BY_HOP: [&str; 9] = [
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
];

/// A header field as a name and a value, so that the functions of this crate take our own
/// `(String, Vec<u8>)` pairs as well as borrowed pairs built from another library's header map.
pub trait HeaderField {
    /// The field name, as given.
    fn name(&self) -> &str;
    /// The field value, without surrounding whitespace.
    fn value(&self) -> &[u8];
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderField for (N, V) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> HeaderField for &(N, V) {
    fn name(&self) -> &str {
        self.0.as_ref()
    }
    fn value(&self) -> &[u8] {
        self.1.as_ref()
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`], compared case-insensitively.
///
/// Fields named by the message's own `Connection` field are hop-by-hop too; see
/// [`connection_tokens`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The connection options listed in all `Connection` fields, lowercased and without duplicates,
/// in order of appearance.
///
/// A forwarder drops every field whose name is one of these (RFC 9110 7.6.1). Elements that are
/// not tokens are skipped: they cannot name a field anyway.
pub fn connection_tokens<I>(headers: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: HeaderField,
{
    let mut tokens: Vec<String> = Vec::new();
    // A set beside the list keeps a hostile field of thousands of elements from costing
    // quadratic time.
    let mut seen = std::collections::BTreeSet::new();
    for field in headers {
        if !field.name().eq_ignore_ascii_case("connection") {
            continue;
        }
        for element in field.value().split(|&b| b == b',') {
            let Ok(element) = std::str::from_utf8(trim_ows(element)) else {
                continue;
            };
            if !valid_token(element) {
                continue;
            }
            let element = element.to_ascii_lowercase();
            if seen.insert(element.clone()) {
                tokens.push(element);
            }
        }
    }
    tokens
}

/// The fields of a stored request that go on to the next hop, in order: all but the hop-by-hop
/// fields (and those its `Connection` fields name), `Host` (the client writes it from the URL)
/// and `Content-Length` (the client frames the body), and those `also_drop` says to drop (it is
/// given the name in lower case). Both daemons' forwarding goes through this one filter.
pub fn end_to_end<'a>(
    fields: &'a [(String, Vec<u8>)],
    also_drop: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a (String, Vec<u8>)> + 'a {
    let hop = connection_tokens(fields);
    fields.iter().filter(move |(name, _)| {
        let lower = name.to_ascii_lowercase();
        !(lower == "host"
            || lower == "content-length"
            || is_hop_by_hop(&lower)
            || hop.contains(&lower)
            || also_drop(&lower))
    })
}

/// Whether `s` is an RFC 9110 token: one or more of `!#$%&'*+-.^_`|~`, digits and ASCII letters.
///
/// Methods and field names must be tokens.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Whether `v` may be a field value: it contains no CR, LF or NUL.
///
/// This is the test that keeps one value from turning into two lines of a spool file. Other
/// control characters and bytes above 0x7f are let through, as most HTTP implementations do.
/// Leading and trailing whitespace is not part of a value (the parser trims it), so a value that
/// has some does not survive a round trip unchanged.
pub fn valid_header_value(v: &[u8]) -> bool {
    !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

/// Whether `b` may appear in a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `b` is optional whitespace (SP or HTAB).
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing SP and HTAB.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    trim_end_ows(trim_start_ows(s))
}

/// `s` without leading SP and HTAB.
pub(crate) fn trim_start_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().take_while(|&&b| is_ows(b)).count();
    s.get(start..).unwrap_or_default()
}

/// `s` without trailing SP and HTAB.
pub(crate) fn trim_end_ows(s: &[u8]) -> &[u8] {
    let end = s.len() - s.iter().rev().take_while(|&&b| is_ows(b)).count();
    s.get(..end).unwrap_or_default()
}

/// The first byte of a request target that is not visible ASCII, if any.
///
/// A URI is made of visible ASCII only; spaces, controls and raw UTF-8 must be percent-encoded.
pub(crate) fn forbidden_target_byte(target: &[u8]) -> Option<u8> {
    target.iter().copied().find(|b| !(0x21..=0x7e).contains(b))
}

/// A short, printable rendering of untrusted bytes for an error message.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let shown = bytes.get(..MAX).unwrap_or(bytes);
    let mut s = shown.escape_ascii().to_string();
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_fields_go_on_in_order() {
        let fields: Vec<(String, Vec<u8>)> = [
            ("Host", "a.example"),
            ("Content-Type", "text/plain"),
            ("Connection", "close, X-Drop"),
            ("X-Drop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Tag", "a"),
            ("Content-Length", "2"),
            ("Transfer-Encoding", "chunked"),
            ("X-Own", "meta"),
            ("x-tag", "b"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
        let kept: Vec<&[u8]> = end_to_end(&fields, |n| n == "x-own")
            .map(|(_, v)| v.as_slice())
            .collect();
        assert_eq!(kept, [&b"text/plain"[..], b"a", b"b"]);
    }

    #[test]
    fn tokens() {
        assert!(valid_token("POST"));
        assert!(valid_token("X-Custom_Header.v2"));
        assert!(valid_token("!#$%&'*+-.^_`|~09azAZ"));
        assert!(!valid_token(""));
        assert!(!valid_token("Two Words"));
        assert!(!valid_token("Colon:"));
        assert!(!valid_token("Quote\""));
        assert!(!valid_token("tab\t"));
        assert!(!valid_token("é"));
    }

    #[test]
    fn header_values() {
        assert!(valid_header_value(b""));
        assert!(valid_header_value(b"text/plain; charset=utf-8"));
        assert!(valid_header_value(b"tab\tand \x01 and \xff"));
        assert!(!valid_header_value(b"a\rb"));
        assert!(!valid_header_value(b"a\nb"));
        assert!(!valid_header_value(b"a\0b"));
    }

    #[test]
    fn hop_by_hop_names_ignore_case() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
            assert!(is_hop_by_hop(&name.to_ascii_lowercase()), "{name}");
            assert!(is_hop_by_hop(&name.to_ascii_uppercase()), "{name}");
        }
        assert!(!is_hop_by_hop("Content-Type"));
        assert!(!is_hop_by_hop("Content-Length"));
        assert!(!is_hop_by_hop("Host"));
        assert!(!is_hop_by_hop("Trailers"));
    }

    #[test]
    fn connection_tokens_from_every_connection_field() {
        let headers: Vec<(String, Vec<u8>)> = vec![
            ("Connection".into(), b"close, X-Secret".to_vec()),
            ("Host".into(), b"example.com".to_vec()),
            (
                "connection".into(),
                b" ,x-secret,\tX-Other , bad token, ".to_vec(),
            ),
            ("X-Secret".into(), b"1".to_vec()),
        ];
        assert_eq!(
            connection_tokens(&headers),
            vec!["close", "x-secret", "x-other"]
        );
        let borrowed = [("CONNECTION", &b"Upgrade"[..])];
        assert_eq!(connection_tokens(borrowed), vec!["upgrade"]);
        let none: [(&str, &[u8]); 0] = [];
        assert!(connection_tokens(none).is_empty());
    }

    #[test]
    fn trimming_and_snippets() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(snippet(b"gzip\r\n"), "gzip\\r\\n");
        assert_eq!(snippet(&[b'a'; 70]), format!("{}...", "a".repeat(64)));
        assert_eq!(forbidden_target_byte(b"/a?b=c"), None);
        assert_eq!(forbidden_target_byte(b"/a b"), Some(b' '));
        assert_eq!(forbidden_target_byte(b"/\x7f"), Some(0x7f));
    }
}
