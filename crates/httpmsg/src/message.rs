//! The in-memory shapes of a request: a whole [`Message`], and the [`Head`] that a daemon reads
//! from a spool file to find its metadata without copying the body.
//!
//! Header fields are kept as an ordered list of `(name, value)` pairs, names as given and values
//! as bytes, because the spool must give back exactly what a provider sent, in its order and
//! spelling; lookups are case-insensitive as HTTP demands.

/// An HTTP request: method, request target, header fields in order, and the decoded body.
///
/// After [`parse`](crate::parse) or [`from_json`](crate::from_json) it is normalized: exactly one
/// `Content-Length`, equal to the body length, and no `Transfer-Encoding`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The method, a token such as `POST`.
    pub method: String,
    /// The request target as given: origin-form (`/hooks/in?x=1`) or absolute-form
    /// (`https://hooks.example.com/in`).
    pub target: String,
    /// Header fields in order: names as given, values as bytes without surrounding whitespace.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, with any transfer coding removed.
    pub body: Vec<u8>,
}

impl Message {
    /// The value of the first field named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first(&self.headers, name)
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        named(&self.headers, name)
    }

    /// Removes every field named `name` (case-insensitive) and says how many there were.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.headers.len()
    }
}

/// The HTTP version of a parsed request line. Only HTTP/1.1 and HTTP/1.0 exist in this form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

/// A request line and header fields, as [`parse_head`](crate::parse_head) returns them.
///
/// Unlike a [`Message`], a head is not normalized: `Content-Length` and `Transfer-Encoding`
/// fields are as they were in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, a token such as `POST`.
    pub method: String,
    /// The request target as given.
    pub target: String,
    /// The version named by the request line.
    pub version: Version,
    /// Header fields in order: names as given, values as bytes without surrounding whitespace.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The value of the first field named `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        first(&self.headers, name)
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        named(&self.headers, name)
    }
}

/// The values of the fields named `name` in `headers`.
fn named<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The value of the first field named `name` in `headers`.
fn first<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Puts `headers` in normal form for a body of `body_len` bytes: no `Transfer-Encoding`, and
/// one `Content-Length` holding `body_len`, where the first one was (keeping its spelling) or
/// else at the end.
pub(crate) fn normalize_framing(headers: &mut Vec<(String, Vec<u8>)>, body_len: usize) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding"));
    let length = body_len.to_string().into_bytes();
    let mut seen = false;
    headers.retain_mut(|(n, v)| {
        if !n.eq_ignore_ascii_case("content-length") {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        v.clone_from(&length);
        true
    });
    if !seen {
        headers.push(("Content-Length".to_owned(), length));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            method: "POST".into(),
            target: "/in".into(),
            headers: vec![
                ("Host".into(), b"example.com".to_vec()),
                ("X-Tag".into(), b"a".to_vec()),
                ("x-tag".into(), b"b".to_vec()),
                ("Content-Length".into(), b"0".to_vec()),
            ],
            body: Vec::new(),
        }
    }

    #[test]
    fn lookups_ignore_case() {
        let m = sample();
        assert_eq!(m.header("HOST"), Some(&b"example.com"[..]));
        assert_eq!(m.header("x-TAG"), Some(&b"a"[..]));
        assert_eq!(m.header("Missing"), None);
        let tags: Vec<&[u8]> = m.headers_named("X-Tag").collect();
        assert_eq!(tags, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(m.headers_named("nothing").count(), 0);
    }

    #[test]
    fn remove_header_removes_all_and_counts() {
        let mut m = sample();
        assert_eq!(m.remove_header("X-TAG"), 2);
        assert_eq!(m.remove_header("X-Tag"), 0);
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.header("Host"), Some(&b"example.com"[..]));
    }

    #[test]
    fn head_lookups_ignore_case() {
        let m = sample();
        let head = Head {
            method: m.method,
            target: m.target,
            version: Version::Http11,
            headers: m.headers,
        };
        assert_eq!(head.header("content-length"), Some(&b"0"[..]));
        assert_eq!(head.headers_named("X-TAG").count(), 2);
    }

    #[test]
    fn normalize_keeps_first_length_in_place() {
        let mut h: Vec<(String, Vec<u8>)> = vec![
            ("A".into(), b"1".to_vec()),
            ("content-length".into(), b"99".to_vec()),
            ("Transfer-Encoding".into(), b"chunked".to_vec()),
            ("B".into(), b"2".to_vec()),
            ("Content-Length".into(), b"99".to_vec()),
        ];
        normalize_framing(&mut h, 5);
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("A".into(), b"1".to_vec()),
            ("content-length".into(), b"5".to_vec()),
            ("B".into(), b"2".to_vec()),
        ];
        assert_eq!(h, expected);
    }

    #[test]
    fn normalize_appends_missing_length() {
        let mut h: Vec<(String, Vec<u8>)> = vec![("A".into(), b"1".to_vec())];
        normalize_framing(&mut h, 0);
        assert_eq!(h.last(), Some(&("Content-Length".into(), b"0".to_vec())));
    }
}
