//! HTTP requests as files and as submissions.
//!
//! Both daemons keep every message in their spool as one file in `message/http` form (RFC 9112:
//! request line, header fields, blank line, body), so that `cat`, `grep` and a replay with
//! standard tools just work. whomp also takes messages from internal services, either in that
//! same form (with an absolute-form target) or as a JSON envelope. This crate is the one place
//! that reads and writes those forms, so that every reader agrees on what a message is.
//!
//! Everything that takes bytes is strict and total: anything odd is an `Err` that says what and
//! where (`line 3: header value contains a bare CR`), nothing panics, and nothing allocates more
//! than a small multiple of the input. The functions are meant to be fuzzed.
//!
//! The one leniency is line endings: a line may end in CRLF or in a bare LF, because people write
//! these files in editors. A CR anywhere else is an error.
//!
//! After [`parse`] or [`from_json`], a [`Message`] is *normalized*: its body is decoded, it
//! carries exactly one `Content-Length` equal to the body length, and no `Transfer-Encoding`.
//! [`write()`] produces the same normal form, so `parse(&write(&m)) == Ok(m)` for every normalized
//! message.
//!
//! What this crate does not judge: whether a target is origin-form or absolute-form, whether a
//! `Host` field is present or agrees with the target, and which methods make sense. Those are
//! decisions of the daemons (whomp's pre-flight, whimp's routes).

mod envelope;
mod fields;
mod head;
mod message;
mod parse;
mod write;

pub use envelope::{from_json, EnvelopeError};
pub use fields::{
    connection_tokens, end_to_end, is_hop_by_hop, valid_header_value, valid_token, HeaderField,
    HOP_BY_HOP,
};
pub use head::{read_head, MAX_STORED_HEAD};
pub use message::{Head, Message, Version};
pub use parse::{parse, parse_head, parse_head_with, Limits, ParseError, ParseErrorKind, Part};
pub use write::{write, write_into};
