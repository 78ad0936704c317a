//! Tests of the parser: every error with its line and text, the accepted forms, the round trip
//! through [`write`], and a mutation loop that checks nothing panics.

use super::*;
use crate::write;

fn small() -> Limits {
    Limits {
        max_header_bytes: 128,
        max_headers: 4,
        max_body_bytes: 16,
    }
}

/// Parses `input` under the default limits.
fn ok(input: &[u8]) -> Message {
    match parse(input, &Limits::default()) {
        Ok(m) => m,
        Err(e) => panic!("refused {:?}: {e}", input.escape_ascii().to_string()),
    }
}

/// Asserts that `input` is refused under `limits` with the text `expected`, and returns the error.
fn check_with(limits: &Limits, input: &[u8], expected: &str) -> ParseError {
    let refused = |input: &[u8]| match parse(input, limits) {
        Ok(m) => panic!("accepted {:?}: {m:?}", input.escape_ascii().to_string()),
        Err(e) => e,
    };
    let e = refused(input);
    assert_eq!(
        e.to_string(),
        expected,
        "for {:?}",
        input.escape_ascii().to_string()
    );
    e
}

/// [`check_with`] under the default limits.
fn check(input: &[u8], expected: &str) -> ParseError {
    check_with(&Limits::default(), input, expected)
}

fn fields(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

#[test]
fn origin_form_with_lf_only_lines() {
    let m = ok(b"GET /hooks/in?x=1&y=%20 HTTP/1.1\nHost: example.com\nAccept:*/*\n\n");
    assert_eq!(m.method, "GET");
    assert_eq!(m.target, "/hooks/in?x=1&y=%20");
    assert_eq!(
        m.headers,
        fields(&[
            ("Host", b"example.com"),
            ("Accept", b"*/*"),
            ("Content-Length", b"0")
        ])
    );
    assert!(m.body.is_empty());
}

#[test]
fn absolute_form_with_crlf_lines() {
    let m = ok(b"POST https://hooks.example.com:8443/in?a=b HTTP/1.1\r\n\
                 Content-Type: application/json\r\n\
                 Content-Length: 2\r\n\
                 \r\n\
                 {}");
    assert_eq!(m.target, "https://hooks.example.com:8443/in?a=b");
    assert_eq!(m.body, b"{}");
    assert_eq!(m.header("content-length"), Some(&b"2"[..]));
}

#[test]
fn other_target_forms_and_http_1_0() {
    assert_eq!(ok(b"OPTIONS * HTTP/1.0\n\n").target, "*");
    assert_eq!(
        ok(b"CONNECT example.com:443 HTTP/1.1\n\n").target,
        "example.com:443"
    );
}

#[test]
fn line_endings_may_differ_between_lines() {
    let m = ok(b"POST / HTTP/1.1\r\nA: 1\nB: 2\r\n\nbody\r\n");
    assert_eq!(
        m.headers,
        fields(&[("A", b"1"), ("B", b"2"), ("Content-Length", b"6")])
    );
    assert_eq!(m.body, b"body\r\n");
}

#[test]
fn values_are_trimmed_and_may_be_empty_or_odd() {
    let m = ok(b"POST / HTTP/1.1\nA:  \t spaced  out \t\nB:\nC: \x01\xff\"quoted\"\n\n");
    assert_eq!(
        m.headers,
        fields(&[
            ("A", b"spaced  out"),
            ("B", b""),
            ("C", b"\x01\xff\"quoted\""),
            ("Content-Length", b"0")
        ])
    );
}

#[test]
fn binary_body_with_nul_and_crlf() {
    let body = b"\0\r\n\r\n\rHTTP/1.1\n\0\xff";
    let mut input =
        format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    assert_eq!(ok(&input).body, body);
    // Without Content-Length the body is the rest, bare CRs and all.
    let mut input = b"POST / HTTP/1.1\n\n".to_vec();
    input.extend_from_slice(body);
    let m = ok(&input);
    assert_eq!(m.body, body);
    assert_eq!(
        m.header("Content-Length"),
        Some(body.len().to_string().as_bytes())
    );
}

#[test]
fn equal_content_lengths_are_one() {
    let m = ok(b"POST / HTTP/1.1\nContent-Length: 3\nX: y\ncontent-length: 003\nContent-Length: 3, 3\n\nabc");
    assert_eq!(m.headers, fields(&[("Content-Length", b"3"), ("X", b"y")]));
}

#[test]
fn different_content_lengths_conflict() {
    let e = check(
        b"POST / HTTP/1.1\nContent-Length: 10\nContent-Length: 12\n\n0123456789",
        "body: 2 different Content-Length values (10, 12)",
    );
    assert_eq!(e.line, 5);
    check(
        b"POST / HTTP/1.1\nContent-Length: 1, 2, 1, 3\n\nx",
        "body: 3 different Content-Length values (1, 2, 3)",
    );
    check(
        b"POST / HTTP/1.1\nContent-Length: 1,2,3,4,5,6,7\n\nx",
        "body: 7 different Content-Length values (1, 2, 3, 4, 5, ...)",
    );
}

#[test]
fn content_length_must_be_decimal() {
    for bad in [
        &b""[..],
        b"-1",
        b"+1",
        b"1.0",
        b"0x10",
        b"1,",
        b"1 2",
        b"ten",
    ] {
        let mut input = b"POST / HTTP/1.1\nA: b\nContent-Length: ".to_vec();
        input.extend_from_slice(bad);
        input.extend_from_slice(b"\n\n");
        let e = check(
            &input,
            "line 3: Content-Length value is not a decimal number",
        );
        assert_eq!(e.kind, ParseErrorKind::ContentLengthSyntax);
    }
}

#[test]
fn content_length_frames_the_body_exactly() {
    let e = check(
        b"POST / HTTP/1.1\nContent-Length: 10\n\n0123456789abcdefghij0123456789",
        "body: 20 bytes after the 10 announced by Content-Length",
    );
    assert_eq!(e.line, 4);
    check(
        b"POST / HTTP/1.1\nContent-Length: 10\n\n01234",
        "body: 10 bytes announced by Content-Length but only 5 follow",
    );
    check(
        b"POST / HTTP/1.1\nContent-Length: 99999999999999999999999999\n\n",
        "body: larger than the limit of 10485760 bytes",
    );
}

#[test]
fn chunked_body_is_decoded_with_extensions_and_trailers() {
    let m = ok(b"POST /in HTTP/1.1\r\n\
                 Host: a\r\n\
                 Transfer-Encoding: chunked\r\n\
                 \r\n\
                 5;name=value;flag ; q=\"a \\\"quoted\\\" ; value\"\r\n\
                 hello\r\n\
                 000A \t\r\n\
                 \0\r\n\r\n\r\n\r\rz\r\n\
                 0\r\n\
                 Expires: never\r\n\
                 Checksum: abc\r\n\
                 \r\n");
    assert_eq!(m.body, b"hello\0\r\n\r\n\r\n\r\rz");
    assert_eq!(
        m.headers,
        fields(&[("Host", b"a"), ("Content-Length", b"15")])
    );
}

#[test]
fn chunked_body_with_lf_only_lines() {
    let m = ok(b"POST / HTTP/1.1\nTransfer-Encoding: Chunked\n\n3\nabc\n1\nd\n0\n\n");
    assert_eq!(m.body, b"abcd");
    assert_eq!(m.headers, fields(&[("Content-Length", b"4")]));
    let empty = ok(b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n0\n\n");
    assert!(empty.body.is_empty());
}

#[test]
fn chunked_framing_errors() {
    check(
        b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 3\n\n3\nabc\n0\n\n",
        "body: Transfer-Encoding and Content-Length together",
    );
    check(
        b"POST / HTTP/1.0\nTransfer-Encoding: chunked\n\n0\n\n",
        "body: Transfer-Encoding in an HTTP/1.0 message",
    );
    check(
        b"POST / HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n0\n\n",
        "body: unsupported Transfer-Encoding \"gzip, chunked\" (only \"chunked\" alone is accepted)",
    );
    check(
        b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n\n0\n\n",
        "body: unsupported Transfer-Encoding \"chunked, chunked\" (only \"chunked\" alone is accepted)",
    );
    check(
        b"POST / HTTP/1.1\nTransfer-Encoding: \n\n",
        "body: unsupported Transfer-Encoding \"\" (only \"chunked\" alone is accepted)",
    );
    check(
        b"POST / HTTP/1.1\nTransfer-Encoding: chunked;q=1\n\n0\n\n",
        "body: unsupported Transfer-Encoding \"chunked;q=1\" (only \"chunked\" alone is accepted)",
    );
}

#[test]
fn chunk_errors_name_their_line() {
    let head = b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n".to_vec();
    let with = |chunks: &[u8]| {
        let mut input = head.clone();
        input.extend_from_slice(chunks);
        input
    };
    check(
        &with(b"3\nabc\nx\n"),
        "line 6: chunk size is not a hexadecimal number",
    );
    check(
        &with(b"\n"),
        "line 4: chunk size is not a hexadecimal number",
    );
    check(
        &with(b"0x3\nabc\n0\n\n"),
        "line 4: chunk size is not a hexadecimal number",
    );
    check(
        &with(b"-3\nabc\n0\n\n"),
        "line 4: chunk size is not a hexadecimal number",
    );
    check(
        &with(b"3;\nabc\n0\n\n"),
        "line 4: chunk extension is malformed",
    );
    check(
        &with(b"3;a=\nabc\n0\n\n"),
        "line 4: chunk extension is malformed",
    );
    check(
        &with(b"3;a=\"open\nabc\n0\n\n"),
        "line 4: chunk extension is malformed",
    );
    check(
        &with(b"3;a=b c\nabc\n0\n\n"),
        "line 4: chunk extension is malformed",
    );
    check(
        &with(b"3;a=\"\x01\"\nabc\n0\n\n"),
        "line 4: chunk extension is malformed",
    );
    check(
        &with(b"3\r\r\nabc\n0\n\n"),
        "line 4: chunk size line contains a bare CR",
    );
    check(
        &with(b"3\0\nabc\n0\n\n"),
        "line 4: chunk size line contains a NUL byte",
    );
    // Line counting goes on through chunk data that holds line breaks.
    check(
        &with(b"5\na\nb\nc\n4\nabcdX\n0\n\n"),
        "line 9: chunk data is not followed by a line break",
    );
    check(
        &with(b"3\nabc"),
        "body: chunked body ends before the last chunk",
    );
    check(
        &with(b"3\nabc\r"),
        "body: chunked body ends before the last chunk",
    );
    check(
        &with(b"3\nab"),
        "body: chunked body ends before the last chunk",
    );
    check(
        &with(b"3\nabc\n"),
        "body: chunked body ends before the last chunk",
    );
    check(&with(b""), "body: chunked body ends before the last chunk");
    check(
        &with(b"ffffffffffffffffffffffff\n"),
        "body: larger than the limit of 10485760 bytes",
    );
    let e = check(
        &with(b"3\nabc\n0\nGood: yes\n"),
        "line 8: trailer section is not terminated by a blank line",
    );
    assert_eq!(e.kind, ParseErrorKind::UnterminatedTrailer);
    check(
        &with(b"0\nBad line\n\n"),
        "line 5: header line has no colon",
    );
    check(
        &with(b"0\nBad: a\rb\n\n"),
        "line 5: header value contains a bare CR",
    );
    check(
        &with(b"3\nabc\n0\n\nextra"),
        "body: 5 bytes after the end of the chunked body",
    );
    let e = check(
        &with(b"0\n\n\n"),
        "body: 1 bytes after the end of the chunked body",
    );
    assert_eq!(e.line, 6);
}

#[test]
fn chunked_limits() {
    let head = b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n".to_vec();
    let with = |chunks: &[u8]| {
        let mut input = head.clone();
        input.extend_from_slice(chunks);
        input
    };
    let limits = small();
    assert!(parse(&with(b"8\n12345678\n8\n12345678\n0\n\n"), &limits).is_ok());
    let e = check_with(
        &limits,
        &with(b"8\n12345678\n9\n123456789\n0\n\n"),
        "body: larger than the limit of 16 bytes",
    );
    assert!(e.is_too_large());
    let e = check_with(
        &limits,
        &with(b"0\nA: 1\nB: 2\nC: 3\nD: 4\nE: 5\n\n"),
        "line 9: more than 4 header fields",
    );
    assert!(e.is_too_large());
    let long = format!("0\nA: {}\n\n", "x".repeat(200));
    let e = check_with(
        &limits,
        &with(long.as_bytes()),
        "line 5: header section exceeds 128 bytes",
    );
    assert!(e.is_too_large());
}

#[test]
fn request_line_errors() {
    let shape = "line 1: request line must be \"METHOD target HTTP/1.1\"";
    for bad in [
        &b"GET /\n\n"[..],
        b"GET  / HTTP/1.1\n\n",
        b"GET / HTTP/1.1 \n\n",
        b" GET / HTTP/1.1\n\n",
        b"GET / a HTTP/1.1\n\n",
        b"GET\t/ HTTP/1.1\n\n",
        b"\n\n",
        b"\nGET / HTTP/1.1\n\n",
    ] {
        check(bad, shape);
    }
    check(b"G(T / HTTP/1.1\n\n", "line 1: method is not a token");
    check(
        b"G\xc3\xa9T / HTTP/1.1\n\n",
        "line 1: method is not a token",
    );
    check(
        b"GET /\x7f HTTP/1.1\n\n",
        "line 1: request target contains the byte 0x7f, which is not allowed in a URI",
    );
    check(
        b"GET /\xc3\xa9 HTTP/1.1\n\n",
        "line 1: request target contains the byte 0xc3, which is not allowed in a URI",
    );
    check(
        b"GET /\x01 HTTP/1.1\n\n",
        "line 1: request target contains the byte 0x01, which is not allowed in a URI",
    );
    for version in ["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1x", "HTTP/1"] {
        check(
            format!("GET / {version}\n\n").as_bytes(),
            "line 1: HTTP version must be HTTP/1.1 or HTTP/1.0",
        );
    }
    check(
        b"GET / HTTP/1.1\r\r\n\n",
        "line 1: request line contains a bare CR",
    );
    check(
        b"GET /\r HTTP/1.1\n\n",
        "line 1: request line contains a bare CR",
    );
    check(
        b"GET /\0 HTTP/1.1\n\n",
        "line 1: request line contains a NUL byte",
    );
    check(b"", "line 1: message is empty");
}

#[test]
fn header_errors() {
    check(
        b"POST / HTTP/1.1\nA: 1\nB: x\ry\n\n",
        "line 3: header value contains a bare CR",
    );
    check(
        b"POST / HTTP/1.1\nA: 1\nB: xy\r\r\n\n",
        "line 3: header value contains a bare CR",
    );
    check(
        b"POST / HTTP/1.1\nB\r: x\n\n",
        "line 2: header name contains a bare CR",
    );
    check(
        b"POST / HTTP/1.1\nB\rx\n\n",
        "line 2: header name contains a bare CR",
    );
    check(
        b"POST / HTTP/1.1\nB: x\0y\n\n",
        "line 2: header value contains a NUL byte",
    );
    check(
        b"POST / HTTP/1.1\nB\0: x\n\n",
        "line 2: header name contains a NUL byte",
    );
    check(
        b"POST / HTTP/1.1\nA: 1\n folded\n\n",
        "line 3: header line starts with whitespace (obsolete line folding is not accepted)",
    );
    check(
        b"POST / HTTP/1.1\n\tA: 1\n\n",
        "line 2: header line starts with whitespace (obsolete line folding is not accepted)",
    );
    check(
        b"POST / HTTP/1.1\nA: 1\nno colon\n\n",
        "line 3: header line has no colon",
    );
    check(
        b"POST / HTTP/1.1\nHost : a\n\n",
        "line 2: whitespace between header name and colon",
    );
    check(
        b"POST / HTTP/1.1\n: a\n\n",
        "line 2: header name is not a token",
    );
    check(
        b"POST / HTTP/1.1\nA B: a\n\n",
        "line 2: header name is not a token",
    );
    check(
        b"POST / HTTP/1.1\n\xc3\xa9: a\n\n",
        "line 2: header name is not a token",
    );
    check(
        b"POST / HTTP/1.1\nA: 1\n",
        "line 3: header section is not terminated by a blank line",
    );
    check(
        b"POST / HTTP/1.1",
        "line 1: header section is not terminated by a blank line",
    );
    check(
        b"POST / HTTP/1.1\nA: 1\r",
        "line 2: header section is not terminated by a blank line",
    );
}

#[test]
fn head_limits() {
    let limits = small();
    let e = check_with(
        &limits,
        b"POST / HTTP/1.1\nA: 1\nB: 2\nC: 3\nD: 4\nE: 5\n\n",
        "line 6: more than 4 header fields",
    );
    assert!(e.is_too_large());
    assert!(parse(b"POST / HTTP/1.1\nA: 1\nB: 2\nC: 3\nD: 4\n\n", &limits).is_ok());

    // 128 bytes of head exactly is fine; one more is not, wherever the line ends.
    let fill = |n: usize| {
        let mut input = b"POST / HTTP/1.1\nA: ".to_vec();
        input.resize(input.len() + n, b'x');
        input.extend_from_slice(b"\n\n");
        input
    };
    let exact = fill(128 - 21);
    assert_eq!(exact.len(), 128);
    assert!(parse(&exact, &limits).is_ok());
    let e = check_with(
        &limits,
        &fill(128 - 20),
        "line 3: header section exceeds 128 bytes",
    );
    assert!(e.is_too_large());
    let e = check_with(
        &limits,
        &fill(500),
        "line 2: header section exceeds 128 bytes",
    );
    assert!(e.is_too_large());
    let e = check_with(
        &limits,
        &[b'G'; 200],
        "line 1: header section exceeds 128 bytes",
    );
    assert!(e.is_too_large());

    let body_limit = check_with(
        &limits,
        b"POST / HTTP/1.1\n\n12345678901234567",
        "body: larger than the limit of 16 bytes",
    );
    assert!(body_limit.is_too_large());
    check_with(
        &limits,
        b"POST / HTTP/1.1\nContent-Length: 17\n\n",
        "body: larger than the limit of 16 bytes",
    );
    assert!(!check(
        b"GET\n\n",
        "line 1: request line must be \"METHOD target HTTP/1.1\""
    )
    .is_too_large());
}

#[test]
fn parse_head_stops_before_the_body() {
    let input = b"POST /in HTTP/1.0\r\nWhimp-Id: 01FD5BKAC5EEJ6HA8KPXT5QV4Y\r\n\
                  Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nnot checked at all";
    let (head, start) = parse_head(input).unwrap();
    assert_eq!(head.method, "POST");
    assert_eq!(head.target, "/in");
    assert_eq!(head.version, Version::Http10);
    assert_eq!(
        head.header("whimp-id"),
        Some(&b"01FD5BKAC5EEJ6HA8KPXT5QV4Y"[..])
    );
    assert_eq!(
        head.headers.len(),
        3,
        "framing fields are left as they were"
    );
    assert_eq!(input.get(start..), Some(&b"not checked at all"[..]));

    let (_, start) = parse_head(b"GET / HTTP/1.1\n\n").unwrap();
    assert_eq!(start, 16);
    let e = parse_head_with(
        b"GET / HTTP/1.1\nA: 1\nB: 2\n\n",
        &Limits {
            max_headers: 1,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "line 3: more than 1 header fields");
    assert_eq!(
        parse_head(b"").unwrap_err().to_string(),
        "line 1: message is empty"
    );
}

/// A small seeded generator (xorshift64*), enough to vary messages without a dependency.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick(&mut self, from: &[u8]) -> u8 {
        from.get(self.below(from.len())).copied().unwrap_or(b'x')
    }

    fn token(&mut self) -> String {
        const TCHAR: &[u8] =
            b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let len = 1 + self.below(12);
        (0..len).map(|_| char::from(self.pick(TCHAR))).collect()
    }

    fn target(&mut self) -> String {
        let visible: Vec<u8> = (0x21..=0x7e).collect();
        let len = 1 + self.below(40);
        (0..len).map(|_| char::from(self.pick(&visible))).collect()
    }

    fn value(&mut self) -> Vec<u8> {
        let len = self.below(30);
        let mut v: Vec<u8> = (0..len)
            .map(|_| loop {
                let b = self.next() as u8;
                if !matches!(b, b'\r' | b'\n' | 0) {
                    break b;
                }
            })
            .collect();
        // A value has no surrounding whitespace: the parser trims it.
        while v.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            v.remove(0);
        }
        while v.last().is_some_and(|&b| b == b' ' || b == b'\t') {
            v.pop();
        }
        v
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A normalized message: valid parts and one correct `Content-Length` somewhere.
    fn message(&mut self) -> Message {
        let body = self.bytes(64);
        let mut headers: Vec<(String, Vec<u8>)> = (0..self.below(8))
            .map(|_| (self.token(), self.value()))
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("content-length")
                    && !n.eq_ignore_ascii_case("transfer-encoding")
            })
            .collect();
        let name = if self.below(2) == 0 {
            "Content-Length"
        } else {
            "content-LENGTH"
        };
        let at = self.below(headers.len() + 1);
        headers.insert(at, (name.to_owned(), body.len().to_string().into_bytes()));
        Message {
            method: self.token(),
            target: self.target(),
            headers,
            body,
        }
    }
}

#[test]
fn round_trip() {
    let mut gen = Gen(0x5eed_1234_abcd_0001);
    for _ in 0..2000 {
        let m = gen.message();
        let bytes = write(&m);
        assert_eq!(parse(&bytes, &Limits::default()), Ok(m.clone()), "{m:?}");
        let (head, start) = parse_head(&bytes).unwrap();
        assert_eq!(head.headers, m.headers);
        assert_eq!(bytes.get(start..), Some(m.body.as_slice()));
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let mut gen = Gen(0x0dd_ba11_cafe_f00d);
    let limits = small();
    let seeds: Vec<Vec<u8>> = vec![
        write(&gen.message()),
        b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n3;a=\"b\\\"c\"\nabc\r\n0\nT: 1\n\n"
            .to_vec(),
        b"GET / HTTP/1.0\nContent-Length: 1, 1\n\nx".to_vec(),
    ];
    let alphabet = b"\r\n\0 \t:;=\"\\,0aF-";
    for round in 0..20_000 {
        let mut input = seeds.get(round % seeds.len()).cloned().unwrap_or_default();
        for _ in 0..1 + gen.below(4) {
            if input.is_empty() {
                break;
            }
            let at = gen.below(input.len());
            match gen.below(4) {
                0 => input.truncate(at),
                1 => input.insert(at, gen.pick(alphabet)),
                2 => {
                    input.remove(at);
                }
                _ => {
                    if let Some(b) = input.get_mut(at) {
                        *b = gen.pick(alphabet);
                    }
                }
            }
        }
        if let Ok(m) = parse(&input, &limits) {
            // Whatever is accepted is normalized and reads back the same.
            assert_eq!(m.headers_named("content-length").count(), 1);
            assert_eq!(m.header("transfer-encoding"), None);
            assert_eq!(parse(&write(&m), &Limits::default()), Ok(m));
        }
        let _ = parse_head(&input);
    }
}
