//! Writing `message/http` bytes, the form of every spool file, in the normal form that
//! [`parse`](crate::parse) gives back unchanged: CRLF line endings, the body as is, one
//! `Content-Length` equal to its length and no `Transfer-Encoding`.

use crate::fields::HeaderField;
use crate::message::Message;

/// `msg` in `message/http` form; see [`write_into`].
pub fn write(msg: &Message) -> Vec<u8> {
    let head: usize = msg.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out =
        Vec::with_capacity(msg.method.len() + msg.target.len() + head + msg.body.len() + 40);
    write_into(&mut out, &msg.method, &msg.target, &msg.headers, &msg.body);
    out
}

/// Appends a request in `message/http` form to `out`: `METHOD target HTTP/1.1`, the fields in
/// order, a blank line, the body; every line ends in CRLF.
///
/// `Transfer-Encoding` fields are dropped and the first `Content-Length` field gets the body's
/// length (other ones are dropped); without one, `Content-Length` is appended after the other
/// fields. Taking the parts separately lets a daemon write a request it holds in another
/// library's types, with its own metadata fields chained on, without building a [`Message`].
///
/// The parts must already be valid, as everything from [`parse`](crate::parse),
/// [`from_json`](crate::from_json) or an HTTP server library is: the method and names tokens
/// ([`valid_token`](crate::valid_token)), the target visible ASCII, and values passing
/// [`valid_header_value`](crate::valid_header_value) with no surrounding whitespace. Anything
/// else would not read back as the same message.
pub fn write_into<I>(out: &mut Vec<u8>, method: &str, target: &str, headers: I, body: &[u8])
where
    I: IntoIterator,
    I::Item: HeaderField,
{
    let length = body.len().to_string();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length_written = false;
    for field in headers {
        let name = field.name();
        let value = if name.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        } else if name.eq_ignore_ascii_case("content-length") {
            if length_written {
                continue;
            }
            length_written = true;
            length.as_bytes()
        } else {
            field.value()
        };
        write_field(out, name, value);
    }
    if !length_written {
        write_field(out, "Content-Length", length.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends `name: value` and CRLF.
fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Limits};

    #[test]
    fn writes_crlf_and_replaces_framing() {
        let msg = Message {
            method: "POST".into(),
            target: "https://hooks.example.com/in?a=1".into(),
            headers: vec![
                ("Host".into(), b"hooks.example.com".to_vec()),
                ("Transfer-Encoding".into(), b"chunked".to_vec()),
                ("content-length".into(), b"999".to_vec()),
                ("X-Empty".into(), Vec::new()),
                ("Content-Length".into(), b"1".to_vec()),
            ],
            body: b"a\r\nb\0".to_vec(),
        };
        assert_eq!(
            write(&msg),
            b"POST https://hooks.example.com/in?a=1 HTTP/1.1\r\n\
              Host: hooks.example.com\r\n\
              content-length: 5\r\n\
              X-Empty: \r\n\
              \r\n\
              a\r\nb\0"
        );
    }

    #[test]
    fn appends_missing_length() {
        let msg = Message {
            method: "GET".into(),
            target: "/".into(),
            headers: vec![("Host".into(), b"a".to_vec())],
            body: Vec::new(),
        };
        assert_eq!(
            write(&msg),
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn write_into_appends_and_takes_borrowed_fields() {
        let mut out = b"existing".to_vec();
        let original = [("Content-Type", &b"text/plain"[..])];
        let metadata = [("Whimp-Id", &b"01FD5BKAC5EEJ6HA8KPXT5QV4Y"[..])];
        write_into(
            &mut out,
            "PUT",
            "/x",
            original.iter().chain(metadata.iter()).copied(),
            b"hi",
        );
        assert_eq!(
            out,
            b"existingPUT /x HTTP/1.1\r\n\
              Content-Type: text/plain\r\n\
              Whimp-Id: 01FD5BKAC5EEJ6HA8KPXT5QV4Y\r\n\
              Content-Length: 2\r\n\
              \r\n\
              hi"
        );
    }

    #[test]
    fn written_empty_value_reads_back_empty() {
        let msg = Message {
            method: "POST".into(),
            target: "/".into(),
            headers: vec![
                ("X-Empty".into(), Vec::new()),
                ("Content-Length".into(), b"0".to_vec()),
            ],
            body: Vec::new(),
        };
        assert_eq!(parse(&write(&msg), &Limits::default()), Ok(msg));
    }
}
