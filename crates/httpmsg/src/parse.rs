//! Reading `message/http` bytes: spool files written by the daemons, files written by hand in an
//! editor, and whomp's `message/http` submissions.
//!
//! The parser is strict about everything that could make two readers disagree on where a field
//! or the body ends (bare CR, obsolete line folding, conflicting `Content-Length`, unknown
//! transfer codings), and lenient only about CRLF versus bare LF line endings. Every error names
//! the line where it was found, counting from 1 at the request line and going on through a
//! chunked body, so that a person can open the file at that line.

use std::collections::BTreeSet;
use std::fmt;

use crate::fields::{
    forbidden_target_byte, is_ows, is_tchar, snippet, trim_ows, trim_start_ows, valid_token,
};
use crate::message::{normalize_framing, Head, Message, Version};

/// Bounds on what [`parse`] accepts, so that a hostile input cannot make it work or allocate
/// without end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the request line, header fields and blank line together (and, separately, of a
    /// chunked body's trailer section). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Number of header fields (and, separately, of trailer fields). Default 200.
    pub max_headers: usize,
    /// Bytes of the decoded body. Default 10 MiB, the daemons' `limits.max_body_bytes` default.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 200,
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Why some bytes are not an acceptable message, and where.
///
/// Displays as `line 3: header value contains a bare CR`, or as `body: ...` for problems with
/// the body as a whole (its framing or its size). A caller answers `413` when
/// [`is_too_large`](ParseError::is_too_large) and `400` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The 1-based line where the problem was found (the request line is line 1). Errors about
    /// the body as a whole do not show it.
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// Whether the input broke one of the [`Limits`] rather than the syntax: the caller answers
    /// `413 Content Too Large` (or `431` for the header section) instead of `400`.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self.kind,
            ParseErrorKind::HeadTooLarge { .. }
                | ParseErrorKind::TooManyHeaders { .. }
                | ParseErrorKind::BodyTooLarge { .. }
        )
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_about_body() {
            write!(f, "body: {}", self.kind)
        } else {
            write!(f, "line {}: {}", self.line, self.kind)
        }
    }
}

impl std::error::Error for ParseError {}

/// What is wrong with a message. The texts are meant for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input has no bytes at all.
    #[error("message is empty")]
    Empty,
    /// The input ends before the blank line that closes the header section.
    #[error("header section is not terminated by a blank line")]
    UnterminatedHead,
    /// The header section (or a trailer section) is longer than [`Limits::max_header_bytes`].
    #[error("header section exceeds {limit} bytes")]
    HeadTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// There are more fields than [`Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A CR that does not end a line.
    #[error("{part} contains a bare CR")]
    BareCr {
        /// Where the CR is.
        part: Part,
    },
    /// A NUL byte where none may be.
    #[error("{part} contains a NUL byte")]
    Nul {
        /// Where the NUL is.
        part: Part,
    },
    /// The request line is not three parts separated by single spaces.
    #[error("request line must be \"METHOD target HTTP/1.1\"")]
    RequestLine,
    /// The method is not a token.
    #[error("method is not a token")]
    Method,
    /// The request target contains a byte that a URI cannot contain.
    #[error("request target contains the byte 0x{byte:02x}, which is not allowed in a URI")]
    TargetByte {
        /// The first offending byte.
        byte: u8,
    },
    /// The version is neither `HTTP/1.1` nor `HTTP/1.0`.
    #[error("HTTP version must be HTTP/1.1 or HTTP/1.0")]
    Version,
    /// A field line starts with whitespace: obsolete line folding, which is not accepted.
    #[error("header line starts with whitespace (obsolete line folding is not accepted)")]
    ObsFold,
    /// A field line has no colon.
    #[error("header line has no colon")]
    MissingColon,
    /// Whitespace between a field name and its colon.
    #[error("whitespace between header name and colon")]
    SpaceBeforeColon,
    /// A field name is empty or not a token.
    #[error("header name is not a token")]
    HeaderName,
    /// A `Content-Length` value is not a list of decimal numbers.
    #[error("Content-Length value is not a decimal number")]
    ContentLengthSyntax,
    /// `Content-Length` fields disagree.
    #[error("{} different Content-Length values ({})", values.len(), join(values))]
    ContentLengthConflict {
        /// The distinct values, in order of appearance.
        values: Vec<u64>,
    },
    /// Both `Transfer-Encoding` and `Content-Length` are present (RFC 9112 6.3).
    #[error("Transfer-Encoding and Content-Length together")]
    TransferEncodingWithContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 request, which RFC 9112 6.1 calls faulty framing.
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// A `Transfer-Encoding` other than `chunked` alone.
    #[error("unsupported Transfer-Encoding \"{value}\" (only \"chunked\" alone is accepted)")]
    UnsupportedTransferEncoding {
        /// The field values, escaped and shortened.
        value: String,
    },
    /// The input ends before the length announced by `Content-Length`.
    #[error("{announced} bytes announced by Content-Length but only {actual} follow")]
    BodyTruncated {
        /// The announced length.
        announced: u64,
        /// The bytes there are.
        actual: usize,
    },
    /// Bytes after the length announced by `Content-Length`.
    #[error("{extra} bytes after the {announced} announced by Content-Length")]
    TrailingBytes {
        /// The number of bytes too many.
        extra: usize,
        /// The announced length.
        announced: u64,
    },
    /// The body is longer than [`Limits::max_body_bytes`].
    #[error("larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A chunk-size line does not start with a hexadecimal number.
    #[error("chunk size is not a hexadecimal number")]
    ChunkSize,
    /// A chunk extension does not follow `;name` or `;name=value`.
    #[error("chunk extension is malformed")]
    ChunkExtension,
    /// Chunk data is followed by something other than a line break.
    #[error("chunk data is not followed by a line break")]
    ChunkDataEnd,
    /// The input ends inside a chunked body, before its last (zero-size) chunk.
    #[error("chunked body ends before the last chunk")]
    ChunkedTruncated,
    /// The input ends before the blank line that closes the trailer section.
    #[error("trailer section is not terminated by a blank line")]
    UnterminatedTrailer,
    /// Bytes after the end of a chunked body.
    #[error("{extra} bytes after the end of the chunked body")]
    TrailingAfterChunked {
        /// The number of bytes too many.
        extra: usize,
    },
}

impl ParseErrorKind {
    /// Whether the error is about the body as a whole, so that its line says little.
    fn is_about_body(&self) -> bool {
        matches!(
            self,
            ParseErrorKind::ContentLengthConflict { .. }
                | ParseErrorKind::TransferEncodingWithContentLength
                | ParseErrorKind::TransferEncodingInHttp10
                | ParseErrorKind::UnsupportedTransferEncoding { .. }
                | ParseErrorKind::BodyTruncated { .. }
                | ParseErrorKind::TrailingBytes { .. }
                | ParseErrorKind::BodyTooLarge { .. }
                | ParseErrorKind::ChunkedTruncated
                | ParseErrorKind::TrailingAfterChunked { .. }
        )
    }
}

/// The part of a line in which a forbidden byte was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The request line.
    RequestLine,
    /// A header (or trailer) field name, or a field line without a colon.
    HeaderName,
    /// A header (or trailer) field value.
    HeaderValue,
    /// The size line of a chunk.
    ChunkLine,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::RequestLine => "request line",
            Part::HeaderName => "header name",
            Part::HeaderValue => "header value",
            Part::ChunkLine => "chunk size line",
        })
    }
}

/// Parses a whole message and normalizes it: the body decoded, exactly one `Content-Length`
/// equal to its length (where the first one was, or appended), no `Transfer-Encoding`.
///
/// The body is exactly `Content-Length` bytes if that is given, the decoded chunks if
/// `Transfer-Encoding: chunked` is, and otherwise the rest of the input. Trailer fields of a
/// chunked body are checked and then dropped: merging them into the header section would let
/// them smuggle fields past whoever checked the head.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    let (head, start) = parse_head_with(input, limits)?;
    // Line 1 is the request line, then one line per field, then the blank line.
    let body_line = head.headers.len() + 3;
    let rest = input.get(start..).unwrap_or_default();
    let body = match framing(&head, body_line)? {
        Framing::Length(announced) => {
            let err = |kind| ParseError {
                line: body_line,
                kind,
            };
            let too_large = usize::try_from(announced).map_or(true, |n| n > limits.max_body_bytes);
            if too_large {
                return Err(err(ParseErrorKind::BodyTooLarge {
                    limit: limits.max_body_bytes,
                }));
            }
            match usize::try_from(announced) {
                Ok(n) if n == rest.len() => rest.to_vec(),
                Ok(n) if n < rest.len() => {
                    return Err(err(ParseErrorKind::TrailingBytes {
                        extra: rest.len() - n,
                        announced,
                    }))
                }
                _ => {
                    return Err(err(ParseErrorKind::BodyTruncated {
                        announced,
                        actual: rest.len(),
                    }))
                }
            }
        }
        Framing::Chunked => decode_chunked(rest, body_line, limits)?,
        Framing::Rest => {
            if rest.len() > limits.max_body_bytes {
                return Err(ParseError {
                    line: body_line,
                    kind: ParseErrorKind::BodyTooLarge {
                        limit: limits.max_body_bytes,
                    },
                });
            }
            rest.to_vec()
        }
    };
    let Head {
        method,
        target,
        headers: mut fields,
        ..
    } = head;
    normalize_framing(&mut fields, body.len());
    Ok(Message {
        method,
        target,
        headers: fields,
        body,
    })
}

/// Parses the request line and header fields under the default [`Limits`], and returns them with
/// the offset where the body starts. The body is neither read nor checked.
///
/// The daemons read spool files with this to find their metadata fields without copying bodies.
pub fn parse_head(input: &[u8]) -> Result<(Head, usize), ParseError> {
    parse_head_with(input, &Limits::default())
}

/// [`parse_head`] under the given limits (only `max_header_bytes` and `max_headers` matter).
pub fn parse_head_with(input: &[u8], limits: &Limits) -> Result<(Head, usize), ParseError> {
    if input.is_empty() {
        return Err(ParseError {
            line: 1,
            kind: ParseErrorKind::Empty,
        });
    }
    let window_end = input.len().min(limits.max_header_bytes);
    let next = |pos: usize, line: usize| match split_line(input, pos, window_end) {
        Some(found) => Ok(found),
        None if input.len() > limits.max_header_bytes => Err(ParseError {
            line,
            kind: ParseErrorKind::HeadTooLarge {
                limit: limits.max_header_bytes,
            },
        }),
        None => Err(ParseError {
            line,
            kind: ParseErrorKind::UnterminatedHead,
        }),
    };

    let (request_line, mut pos) = next(0, 1)?;
    let (method, target, version) =
        parse_request_line(request_line).map_err(|kind| ParseError { line: 1, kind })?;

    let mut fields = Vec::new();
    let mut line = 1;
    loop {
        line += 1;
        let (field_line, after) = next(pos, line)?;
        pos = after;
        if field_line.is_empty() {
            break;
        }
        if fields.len() >= limits.max_headers {
            return Err(ParseError {
                line,
                kind: ParseErrorKind::TooManyHeaders {
                    limit: limits.max_headers,
                },
            });
        }
        fields.push(parse_field_line(field_line).map_err(|kind| ParseError { line, kind })?);
    }
    let head = Head {
        method,
        target,
        version,
        headers: fields,
    };
    Ok((head, pos))
}

/// How the length of a body is known.
enum Framing {
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body is the rest of the input.
    Rest,
}

/// Decides how the body is framed from the head's `Content-Length` and `Transfer-Encoding`.
fn framing(head: &Head, body_line: usize) -> Result<Framing, ParseError> {
    let body_err = |kind| ParseError {
        line: body_line,
        kind,
    };
    let mut lengths: Vec<u64> = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut encoded = false;
    for (index, (name, value)) in head.headers.iter().enumerate() {
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 8.6 lets a recipient take `42, 42` as one value; different ones conflict.
            for element in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(element)).ok_or(ParseError {
                    line: index + 2,
                    kind: ParseErrorKind::ContentLengthSyntax,
                })?;
                if seen.insert(n) {
                    lengths.push(n);
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            codings.extend(
                value
                    .split(|&b| b == b',')
                    .map(trim_ows)
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    if encoded {
        if head.version == Version::Http10 {
            return Err(body_err(ParseErrorKind::TransferEncodingInHttp10));
        }
        if !lengths.is_empty() {
            return Err(body_err(ParseErrorKind::TransferEncodingWithContentLength));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => {
                let values: Vec<&[u8]> = head.headers_named("transfer-encoding").collect();
                Err(body_err(ParseErrorKind::UnsupportedTransferEncoding {
                    value: snippet(&values.join(&b", "[..])),
                }))
            }
        };
    }
    match lengths.as_slice() {
        [] => Ok(Framing::Rest),
        [n] => Ok(Framing::Length(*n)),
        _ => Err(body_err(ParseErrorKind::ContentLengthConflict {
            values: lengths,
        })),
    }
}

/// Decodes a chunked body that starts on line `line`, checking and dropping its trailer fields.
fn decode_chunked(input: &[u8], mut line: usize, limits: &Limits) -> Result<Vec<u8>, ParseError> {
    let err = |line, kind| ParseError { line, kind };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some((size_line, after)) = split_line(input, pos, input.len()) else {
            return Err(err(line, ParseErrorKind::ChunkedTruncated));
        };
        check_bytes(size_line, Part::ChunkLine).map_err(|kind| err(line, kind))?;
        let room = limits.max_body_bytes.saturating_sub(body.len());
        let size = parse_chunk_line(size_line, room, limits.max_body_bytes)
            .map_err(|kind| err(line, kind))?;
        pos = after;
        line += 1;
        if size == 0 {
            break;
        }
        let data = pos
            .checked_add(size)
            .and_then(|end| input.get(pos..end))
            .ok_or(err(line, ParseErrorKind::ChunkedTruncated))?;
        body.extend_from_slice(data);
        line += data.iter().filter(|&&b| b == b'\n').count();
        pos += size;
        let tail = input.get(pos..).unwrap_or_default();
        if tail.starts_with(b"\r\n") {
            pos += 2;
        } else if tail.starts_with(b"\n") {
            pos += 1;
        } else if tail.is_empty() || tail == b"\r" {
            return Err(err(line, ParseErrorKind::ChunkedTruncated));
        } else {
            return Err(err(line, ParseErrorKind::ChunkDataEnd));
        }
        line += 1;
    }

    let trailer_start = pos;
    let window_end = input
        .len()
        .min(trailer_start.saturating_add(limits.max_header_bytes));
    let mut count = 0;
    loop {
        let Some((field_line, after)) = split_line(input, pos, window_end) else {
            let kind = if input.len() > window_end {
                ParseErrorKind::HeadTooLarge {
                    limit: limits.max_header_bytes,
                }
            } else {
                ParseErrorKind::UnterminatedTrailer
            };
            return Err(err(line, kind));
        };
        pos = after;
        if field_line.is_empty() {
            break;
        }
        if count >= limits.max_headers {
            return Err(err(
                line,
                ParseErrorKind::TooManyHeaders {
                    limit: limits.max_headers,
                },
            ));
        }
        parse_field_line(field_line).map_err(|kind| err(line, kind))?;
        count += 1;
        line += 1;
    }
    // Extra bytes start on the line after the blank one.
    line += 1;
    if pos < input.len() {
        return Err(err(
            line,
            ParseErrorKind::TrailingAfterChunked {
                extra: input.len() - pos,
            },
        ));
    }
    Ok(body)
}

/// The content of the line starting at `pos` (without its LF and a CR just before it) and the
/// position after its LF, looking for the LF no further than `end`.
fn split_line(input: &[u8], pos: usize, end: usize) -> Option<(&[u8], usize)> {
    let window = input.get(pos..end)?;
    let lf = window.iter().position(|&b| b == b'\n')?;
    let content = window.get(..lf)?;
    let content = content.strip_suffix(b"\r").unwrap_or(content);
    Some((content, pos + lf + 1))
}

/// Refuses a bare CR or a NUL in `line`, naming `part`.
fn check_bytes(line: &[u8], part: Part) -> Result<(), ParseErrorKind> {
    if line.contains(&b'\r') {
        return Err(ParseErrorKind::BareCr { part });
    }
    if line.contains(&0) {
        return Err(ParseErrorKind::Nul { part });
    }
    Ok(())
}

/// Splits and checks `METHOD SP request-target SP HTTP-version`.
fn parse_request_line(line: &[u8]) -> Result<(String, String, Version), ParseErrorKind> {
    check_bytes(line, Part::RequestLine)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseErrorKind::RequestLine);
    };
    if method.is_empty() || target.is_empty() || version.is_empty() {
        return Err(ParseErrorKind::RequestLine);
    }
    let method = std::str::from_utf8(method)
        .ok()
        .filter(|m| valid_token(m))
        .ok_or(ParseErrorKind::Method)?;
    if let Some(byte) = forbidden_target_byte(target) {
        return Err(ParseErrorKind::TargetByte { byte });
    }
    // Visible ASCII is UTF-8, so this cannot fail; the error is only there to avoid a panic.
    let target = std::str::from_utf8(target).map_err(|_| ParseErrorKind::TargetByte { byte: 0 })?;
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        _ => return Err(ParseErrorKind::Version),
    };
    Ok((method.to_owned(), target.to_owned(), version))
}

/// Splits and checks `name: value`, trimming whitespace around the value.
fn parse_field_line(line: &[u8]) -> Result<(String, Vec<u8>), ParseErrorKind> {
    let colon = line.iter().position(|&b| b == b':');
    let part_at = |i: usize| match colon {
        Some(c) if i > c => Part::HeaderValue,
        _ => Part::HeaderName,
    };
    if let Some(i) = line.iter().position(|&b| b == b'\r') {
        return Err(ParseErrorKind::BareCr { part: part_at(i) });
    }
    if let Some(i) = line.iter().position(|&b| b == 0) {
        return Err(ParseErrorKind::Nul { part: part_at(i) });
    }
    if line.first().copied().is_some_and(is_ows) {
        return Err(ParseErrorKind::ObsFold);
    }
    let Some(colon) = colon else {
        return Err(ParseErrorKind::MissingColon);
    };
    let (name, value) = line.split_at(colon);
    let value = value.get(1..).unwrap_or_default();
    if name.last().copied().is_some_and(is_ows) {
        return Err(ParseErrorKind::SpaceBeforeColon);
    }
    let name = std::str::from_utf8(name)
        .ok()
        .filter(|n| valid_token(n))
        .ok_or(ParseErrorKind::HeaderName)?;
    Ok((name.to_owned(), trim_ows(value).to_vec()))
}

/// A decimal number of one or more digits; saturates at `u64::MAX`, which no limit allows.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The size of a chunk from its size line, checking any extensions. `room` is what is left of
/// the body limit `limit`.
fn parse_chunk_line(line: &[u8], room: usize, limit: usize) -> Result<usize, ParseErrorKind> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (hex, extensions) = line.split_at(digits);
    if hex.is_empty() {
        return Err(ParseErrorKind::ChunkSize);
    }
    let after = trim_start_ows(extensions);
    if !after.is_empty() && !after.starts_with(b";") {
        return Err(ParseErrorKind::ChunkSize);
    }
    check_chunk_extensions(extensions)?;
    let mut size: usize = 0;
    for &d in hex {
        let digit = char::from(d).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit as usize))
            .ok_or(ParseErrorKind::BodyTooLarge { limit })?;
    }
    if size > room {
        return Err(ParseErrorKind::BodyTooLarge { limit });
    }
    Ok(size)
}

/// Checks `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, allowing trailing
/// whitespace.
fn check_chunk_extensions(mut s: &[u8]) -> Result<(), ParseErrorKind> {
    loop {
        s = trim_start_ows(s);
        if s.is_empty() {
            return Ok(());
        }
        s = s.strip_prefix(b";").ok_or(ParseErrorKind::ChunkExtension)?;
        s = skip_token(trim_start_ows(s))?;
        let t = trim_start_ows(s);
        if let Some(value) = t.strip_prefix(b"=") {
            let value = trim_start_ows(value);
            s = match value.strip_prefix(b"\"") {
                Some(quoted) => skip_quoted(quoted)?,
                None => skip_token(value)?,
            };
        }
    }
}

/// `s` after a token of one or more characters.
fn skip_token(s: &[u8]) -> Result<&[u8], ParseErrorKind> {
    let n = s.iter().take_while(|&&b| is_tchar(b)).count();
    if n == 0 {
        return Err(ParseErrorKind::ChunkExtension);
    }
    Ok(s.get(n..).unwrap_or_default())
}

/// `s` after the rest of a quoted string whose opening quote is already gone.
fn skip_quoted(mut s: &[u8]) -> Result<&[u8], ParseErrorKind> {
    // qdtext and quoted-pair of RFC 9110 5.6.4: HTAB, SP, visible ASCII and obs-text.
    let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
    loop {
        match s.split_first() {
            Some((b'"', rest)) => return Ok(rest),
            Some((b'\\', rest)) => match rest.split_first() {
                Some((&c, rest)) if text(c) => s = rest,
                _ => return Err(ParseErrorKind::ChunkExtension),
            },
            Some((&c, rest)) if text(c) => s = rest,
            _ => return Err(ParseErrorKind::ChunkExtension),
        }
    }
}

/// `values` as `10, 12`, the first few only, so that an error message stays short.
fn join(values: &[u64]) -> String {
    const SHOWN: usize = 5;
    let mut strings: Vec<String> = values.iter().take(SHOWN).map(u64::to_string).collect();
    if values.len() > SHOWN {
        strings.push("...".to_owned());
    }
    strings.join(", ")
}

#[cfg(test)]
mod tests;
