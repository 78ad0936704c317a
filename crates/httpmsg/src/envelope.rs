//! whomp's JSON submission form, for services that would rather build JSON than HTTP bytes:
//! `{"method": "POST", "url": "https://...", "headers": [["Name", "value"], ...],
//! "body": "text"}`, with `"body_base64"` instead of `"body"` for binary bodies.
//!
//! It is checked as strictly as the `message/http` form and yields the same normalized
//! [`Message`], so that everything after submission handles one kind of thing.
//!
//! The header limits hold *while* the JSON is read, not after: a 14 MB envelope of tiny
//! `["a","b"]` pairs would otherwise become a vector of a million and a half pairs (some 300 MB)
//! before anything counted them. So the envelope is read by hand-written serde seeds that stop
//! at the first pair over [`Limits::max_headers`] or [`Limits::max_header_bytes`], and that never
//! take more than two strings from a pair.

use std::cell::Cell;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::fields::{forbidden_target_byte, snippet, trim_ows, valid_header_value, valid_token};
use crate::message::{normalize_framing, Message};
use crate::parse::Limits;

/// Standard base64 alphabet; padding may be present or not, since encoders differ on it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a JSON envelope is not acceptable. A caller answers `413` when
/// [`is_too_large`](EnvelopeError::is_too_large) and `400` otherwise; the text says what is wrong
/// and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON, not an object of the expected shape, a missing `method` or `url`, or an unknown
    /// field. The text is serde_json's, with its `line N column M`.
    #[error(transparent)]
    Json(serde_json::Error),
    /// `method` is not a token.
    #[error("method is not a token")]
    Method,
    /// `url` is empty.
    #[error("url is empty")]
    UrlEmpty,
    /// `url` contains a byte that a URI cannot contain (space, control, non-ASCII).
    #[error("url contains the byte 0x{byte:02x}, which is not allowed in a URI")]
    UrlByte {
        /// The first offending byte.
        byte: u8,
    },
    /// A header is not a list of exactly a name and a value.
    #[error("headers[{index}]: must be [name, value]")]
    HeaderShape {
        /// The 0-based position in `headers`.
        index: usize,
    },
    /// A header name is not a token.
    #[error("headers[{index}]: name \"{name}\" is not a token")]
    HeaderName {
        /// The 0-based position in `headers`.
        index: usize,
        /// The name, escaped and shortened.
        name: String,
    },
    /// A header value contains CR, LF or NUL.
    #[error("headers[{index}]: value contains CR, LF or NUL")]
    HeaderValue {
        /// The 0-based position in `headers`.
        index: usize,
    },
    /// A `Transfer-Encoding` header: the body is given whole, so it cannot be encoded.
    #[error("headers[{index}]: Transfer-Encoding is not allowed (the body is given whole)")]
    TransferEncoding {
        /// The 0-based position in `headers`.
        index: usize,
    },
    /// A `Content-Length` header that is not the body's length.
    #[error("headers[{index}]: Content-Length \"{value}\" is not the body's length {actual}")]
    ContentLength {
        /// The 0-based position in `headers`.
        index: usize,
        /// The value, escaped and shortened.
        value: String,
        /// The body's length.
        actual: usize,
    },
    /// More headers than [`Limits::max_headers`].
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Headers longer in total than [`Limits::max_header_bytes`].
    #[error("headers exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Both `body` and `body_base64`.
    #[error("both \"body\" and \"body_base64\" are given")]
    BothBodies,
    /// `body_base64` is not standard base64.
    #[error("body_base64 is not valid base64: {0}")]
    Base64(base64::DecodeError),
    /// A body longer than [`Limits::max_body_bytes`].
    #[error("body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl EnvelopeError {
    /// Whether the envelope broke one of the [`Limits`] rather than the syntax: the caller
    /// answers `413 Content Too Large` instead of `400`.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            EnvelopeError::TooManyHeaders { .. }
                | EnvelopeError::HeadersTooLarge { .. }
                | EnvelopeError::BodyTooLarge { .. }
        )
    }
}

/// The envelope as it is written, headers already counted against the limits.
struct Envelope {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    body_base64: Option<String>,
}

const FIELDS: &[&str] = &["method", "url", "headers", "body", "body_base64"];

/// Reads the envelope object; a limit it breaks is left in `broken` (serde errors carry only
/// text), and the read stops there.
struct EnvelopeSeed<'a> {
    limits: &'a Limits,
    broken: &'a Cell<Option<EnvelopeError>>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Envelope, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        fn once<T, E: de::Error>(
            slot: &mut Option<T>,
            name: &'static str,
            value: T,
        ) -> Result<(), E> {
            match slot.replace(value) {
                None => Ok(()),
                Some(_) => Err(E::duplicate_field(name)),
            }
        }
        let (mut method, mut url, mut headers) = (None, None, None);
        let (mut body, mut body_base64) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "method" => once(&mut method, "method", map.next_value::<String>()?)?,
                "url" => once(&mut url, "url", map.next_value::<String>()?)?,
                "headers" => {
                    let seed = HeadersSeed {
                        limits: self.limits,
                        broken: self.broken,
                    };
                    once(&mut headers, "headers", map.next_value_seed(seed)?)?
                }
                "body" => once(&mut body, "body", map.next_value::<Option<String>>()?)?,
                "body_base64" => once(
                    &mut body_base64,
                    "body_base64",
                    map.next_value::<Option<String>>()?,
                )?,
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(Envelope {
            method: method.ok_or_else(|| de::Error::missing_field("method"))?,
            url: url.ok_or_else(|| de::Error::missing_field("url"))?,
            headers: headers.unwrap_or_default(),
            body: body.flatten(),
            body_base64: body_base64.flatten(),
        })
    }
}

/// Reads `headers`, counting pairs and their bytes (as written: `name: value` and CRLF) as it
/// goes.
struct HeadersSeed<'a> {
    limits: &'a Limits,
    broken: &'a Cell<Option<EnvelopeError>>,
}

impl<'de> DeserializeSeed<'de> for HeadersSeed<'_> {
    type Value = Vec<(String, String)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for HeadersSeed<'_> {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut headers = Vec::new();
        let mut total = 0usize;
        let stop = |error: EnvelopeError| {
            self.broken.set(Some(error));
            Err(de::Error::custom("limit"))
        };
        loop {
            let index = headers.len();
            let seed = PairSeed {
                index,
                broken: self.broken,
            };
            let Some((name, value)) = seq.next_element_seed(seed)? else {
                return Ok(headers);
            };
            if index == self.limits.max_headers {
                return stop(EnvelopeError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            total = total.saturating_add(name.len() + trim_ows(value.as_bytes()).len() + 4);
            if total > self.limits.max_header_bytes {
                return stop(EnvelopeError::HeadersTooLarge {
                    limit: self.limits.max_header_bytes,
                });
            }
            headers.push((name, value));
        }
    }
}

/// Reads one `[name, value]` pair, and not a string more.
struct PairSeed<'a> {
    index: usize,
    broken: &'a Cell<Option<EnvelopeError>>,
}

impl<'de> DeserializeSeed<'de> for PairSeed<'_> {
    type Value = (String, String);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PairSeed<'_> {
    type Value = (String, String);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let name = seq.next_element::<String>()?;
        let value = match name {
            Some(_) => seq.next_element::<String>()?,
            None => None,
        };
        match (name, value) {
            (Some(name), Some(value)) if seq.next_element::<IgnoredAny>()?.is_none() => {
                Ok((name, value))
            }
            _ => {
                self.broken
                    .set(Some(EnvelopeError::HeaderShape { index: self.index }));
                Err(de::Error::custom("shape"))
            }
        }
    }
}

/// Reads a JSON envelope into a normalized [`Message`] whose target is the `url`.
///
/// `method` and `url` are required; `headers` defaults to none; the body is `body` (as UTF-8),
/// the decoded `body_base64`, or empty when neither is given. Header values lose surrounding
/// whitespace as in the `message/http` form. A `Content-Length` header must match the body;
/// `Transfer-Encoding` is refused. The header limits are applied while the JSON is read.
pub fn from_json(input: &[u8], limits: &Limits) -> Result<Message, EnvelopeError> {
    let broken = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(input);
    let envelope = EnvelopeSeed {
        limits,
        broken: &broken,
    }
    .deserialize(&mut deserializer)
    .and_then(|envelope| deserializer.end().map(|()| envelope))
    .map_err(|e| broken.take().unwrap_or(EnvelopeError::Json(e)))?;

    if !valid_token(&envelope.method) {
        return Err(EnvelopeError::Method);
    }
    if envelope.url.is_empty() {
        return Err(EnvelopeError::UrlEmpty);
    }
    if let Some(byte) = forbidden_target_byte(envelope.url.as_bytes()) {
        return Err(EnvelopeError::UrlByte { byte });
    }

    let body = match (envelope.body, envelope.body_base64) {
        (Some(_), Some(_)) => return Err(EnvelopeError::BothBodies),
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => BASE64.decode(encoded).map_err(EnvelopeError::Base64)?,
        (None, None) => Vec::new(),
    };
    if body.len() > limits.max_body_bytes {
        return Err(EnvelopeError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }

    let mut fields = Vec::with_capacity(envelope.headers.len());
    for (index, (name, value)) in envelope.headers.into_iter().enumerate() {
        if !valid_token(&name) {
            return Err(EnvelopeError::HeaderName {
                index,
                name: snippet(name.as_bytes()),
            });
        }
        if !valid_header_value(value.as_bytes()) {
            return Err(EnvelopeError::HeaderValue { index });
        }
        let value = trim_ows(value.as_bytes()).to_vec();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(EnvelopeError::TransferEncoding { index });
        }
        if name.eq_ignore_ascii_case("content-length") && value != body.len().to_string().as_bytes()
        {
            return Err(EnvelopeError::ContentLength {
                index,
                value: snippet(&value),
                actual: body.len(),
            });
        }
        fields.push((name, value));
    }
    normalize_framing(&mut fields, body.len());

    Ok(Message {
        method: envelope.method,
        target: envelope.url,
        headers: fields,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 100,
            max_headers: 3,
            max_body_bytes: 10,
        }
    }

    /// Parses `json` (single quotes standing for double ones) under small limits.
    fn run(json: &str) -> Result<Message, EnvelopeError> {
        from_json(json.replace('\'', "\"").as_bytes(), &limits())
    }

    /// Asserts that `json` is refused with the text `expected`.
    fn check_err(json: &str, expected: &str) {
        match run(json) {
            Ok(m) => panic!("accepted {json}: {m:?}"),
            Err(e) => assert_eq!(e.to_string(), expected, "for {json}"),
        }
    }

    #[test]
    fn text_body() {
        let m = run(
            "{'method': 'POST', 'url': 'https://hooks.example.com/in?a=1', \
             'headers': [['Content-Type', ' application/json '], ['X-A', '']], \
             'body': '{}'}",
        )
        .unwrap();
        assert_eq!(m.method, "POST");
        assert_eq!(m.target, "https://hooks.example.com/in?a=1");
        let expected: Vec<(String, Vec<u8>)> = vec![
            ("Content-Type".into(), b"application/json".to_vec()),
            ("X-A".into(), Vec::new()),
            ("Content-Length".into(), b"2".to_vec()),
        ];
        assert_eq!(m.headers, expected);
        assert_eq!(m.body, b"{}");
    }

    #[test]
    fn base64_body_with_and_without_padding() {
        let padded = run("{'method': 'PUT', 'url': '/x', 'body_base64': 'AA0KAP8='}").unwrap();
        assert_eq!(padded.body, b"\0\r\n\0\xff");
        assert_eq!(padded.header("content-length"), Some(&b"5"[..]));
        let bare = run("{'method': 'PUT', 'url': '/x', 'body_base64': 'AA0KAP8'}").unwrap();
        assert_eq!(bare.body, padded.body);
    }

    #[test]
    fn no_body_and_no_headers() {
        let m = run("{'method': 'POST', 'url': 'https://a.example/'}").unwrap();
        assert!(m.body.is_empty());
        let expected: Vec<(String, Vec<u8>)> = vec![("Content-Length".into(), b"0".to_vec())];
        assert_eq!(m.headers, expected);
        let null = run("{'method': 'POST', 'url': '/', 'body': null}").unwrap();
        assert!(null.body.is_empty());
    }

    #[test]
    fn matching_content_length_is_kept() {
        let m = run(
            "{'method': 'POST', 'url': '/', 'headers': [['content-length', '3']], 'body': 'abc'}",
        )
        .unwrap();
        let expected: Vec<(String, Vec<u8>)> = vec![("content-length".into(), b"3".to_vec())];
        assert_eq!(m.headers, expected);
    }

    #[test]
    fn json_errors_keep_line_and_column() {
        check_err(
            "{'method': 'POST', 'url': '/',\n 'bdy': 'x'}",
            "unknown field `bdy`, expected one of `method`, `url`, `headers`, `body`, \
             `body_base64` at line 2 column 6",
        );
        check_err("{'url': '/'}", "missing field `method` at line 1 column 12");
        check_err(
            "{'method': 'POST'}",
            "missing field `url` at line 1 column 18",
        );
        check_err(
            "{'method': 'POST', 'url': '/', 'headers': {'A': 'b'}}",
            "invalid type: map, expected a sequence at line 1 column 42",
        );
        check_err(
            "{'method': 'POST', 'url': '/'} x",
            "trailing characters at line 1 column 32",
        );
        check_err("", "EOF while parsing a value at line 1 column 0");
        assert!(matches!(run("[]"), Err(EnvelopeError::Json(_))));
    }

    #[test]
    fn each_error() {
        check_err("{'method': 'GE T', 'url': '/'}", "method is not a token");
        check_err("{'method': '', 'url': '/'}", "method is not a token");
        check_err("{'method': 'GET', 'url': ''}", "url is empty");
        check_err(
            "{'method': 'GET', 'url': '/a b'}",
            "url contains the byte 0x20, which is not allowed in a URI",
        );
        check_err(
            "{'method': 'GET', 'url': '/\\u00e9'}",
            "url contains the byte 0xc3, which is not allowed in a URI",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', '1'], ['B', '2', '3']]}",
            "headers[1]: must be [name, value]",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A']]}",
            "headers[0]: must be [name, value]",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', '1'], ['B\\r', '2']]}",
            "headers[1]: name \"B\\r\" is not a token",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', '1\\r\\nInjected: yes']]}",
            "headers[0]: value contains CR, LF or NUL",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', '\\u0000']]}",
            "headers[0]: value contains CR, LF or NUL",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['Transfer-Encoding', 'chunked']]}",
            "headers[0]: Transfer-Encoding is not allowed (the body is given whole)",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['Content-Length', '4']], 'body': 'abc'}",
            "headers[0]: Content-Length \"4\" is not the body's length 3",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'body': 'a', 'body_base64': 'YQ=='}",
            "both \"body\" and \"body_base64\" are given",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'body_base64': 'a b'}",
            "body_base64 is not valid base64: Invalid symbol 32, offset 1.",
        );
    }

    #[test]
    fn limits_are_too_large_errors() {
        let too_many = run("{'method': 'GET', 'url': '/', \
             'headers': [['A', '1'], ['B', '2'], ['C', '3'], ['D', '4']]}")
        .unwrap_err();
        assert_eq!(too_many.to_string(), "more than 3 headers");
        assert!(too_many.is_too_large());

        let long = format!(
            "{{'method': 'GET', 'url': '/', 'headers': [['A', '{}']]}}",
            "x".repeat(96)
        );
        let too_long = run(&long).unwrap_err();
        assert_eq!(too_long.to_string(), "headers exceed 100 bytes");
        assert!(too_long.is_too_large());
        let long = format!(
            "{{'method': 'GET', 'url': '/', 'headers': [['A', '{}']]}}",
            "x".repeat(95)
        );
        assert!(run(&long).is_ok());

        let big = run("{'method': 'GET', 'url': '/', 'body': '12345678901'}").unwrap_err();
        assert_eq!(big.to_string(), "body is larger than the limit of 10 bytes");
        assert!(big.is_too_large());
        let big =
            run("{'method': 'GET', 'url': '/', 'body_base64': 'MTIzNDU2Nzg5MDE='}").unwrap_err();
        assert!(big.is_too_large());
        assert!(run("{'method': 'GET', 'url': '/', 'body': '1234567890'}").is_ok());

        assert!(!run("{'method': 'GET', 'url': ''}")
            .unwrap_err()
            .is_too_large());
    }

    #[test]
    fn limits_stop_the_read_at_the_first_pair_over_them() {
        // Whatever follows the pair over a limit is never read: not even broken JSON.
        let too_many = run("{'method': 'GET', 'url': '/', \
             'headers': [['A', '1'], ['B', '2'], ['C', '3'], ['D', '4'], !!!")
        .unwrap_err();
        assert_eq!(too_many.to_string(), "more than 3 headers");
        let long = format!(
            "{{'method': 'GET', 'url': '/', 'headers': [['A', '{}'], !!!",
            "x".repeat(96)
        );
        assert_eq!(
            run(&long).unwrap_err().to_string(),
            "headers exceed 100 bytes"
        );
        // A pair is read as two strings and no more.
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', '1', 'x', 'y', 'z']]}",
            "headers[0]: must be [name, value]",
        );
        check_err(
            "{'method': 'GET', 'url': '/', 'headers': [['A', 1]]}",
            "invalid type: integer `1`, expected a string at line 1 column 49",
        );
        check_err(
            "{'method': 'GET', 'method': 'PUT', 'url': '/'}",
            "duplicate field `method` at line 1 column 33",
        );
    }
}
