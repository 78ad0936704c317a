//! Fuzzes the `message/http` reader that every spool file and every whomp submission goes
//! through: `parse` and `parse_head` must never panic, must agree with each other, and whatever
//! `parse` accepts must come back unchanged through `write` (the spool's round trip).
#![no_main]

use httpmsg::{parse, parse_head, write, Limits, Message, ParseError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let head = parse_head(data);
    let parsed = parse(data, &limits);
    match (&parsed, &head) {
        (Ok(msg), Ok((head, start))) => {
            assert!(*start <= data.len(), "body offset beyond the input");
            assert_eq!(head.method, msg.method);
            assert_eq!(head.target, msg.target);
            check_normalized(msg);
            round_trip(msg);
        }
        (Ok(msg), Err(e)) => panic!("parse accepted {msg:?} but parse_head refused: {e}"),
        // parse reads the head with the same limits, so it must fail the same way.
        (Err(e), Err(head_err)) => assert_eq!(e, head_err),
        (Err(_), Ok(_)) => {}
    }
    if let Err(e) = &parsed {
        check_line(data, e);
    }

    // Smaller limits may only refuse more, never change what is accepted or why a message is
    // malformed: a syntax error found under them is the one found under the defaults.
    let small = Limits {
        max_header_bytes: 256,
        max_headers: 8,
        max_body_bytes: 64,
    };
    match parse(data, &small) {
        Ok(msg) => assert_eq!(parsed.as_ref(), Ok(&msg)),
        Err(e) if !e.is_too_large() => assert_eq!(parsed.as_ref(), Err(&e)),
        Err(_) => {}
    }
});

/// An error names a line of the input, so that a person can open the file there.
fn check_line(data: &[u8], e: &ParseError) {
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(
        (1..=lines).contains(&e.line),
        "line {} of an input of {lines} lines: {e}",
        e.line
    );
}

/// A parsed message has exactly one `Content-Length`, equal to its body length, and no
/// `Transfer-Encoding`.
fn check_normalized(msg: &Message) {
    let length = msg.body.len().to_string();
    let lengths: Vec<&[u8]> = msg.headers_named("content-length").collect();
    assert_eq!(
        lengths,
        [length.as_bytes()],
        "content-length not normalized"
    );
    assert_eq!(msg.headers_named("transfer-encoding").count(), 0);
}

/// `parse(write(m)) == m`, and writing again gives the same bytes.
fn round_trip(msg: &Message) {
    let written = write(msg);
    let roomy = Limits {
        max_header_bytes: written.len() + 1,
        max_headers: msg.headers.len() + 1,
        max_body_bytes: msg.body.len(),
    };
    let again = parse(&written, &roomy)
        .unwrap_or_else(|e| panic!("written form of {msg:?} does not parse: {e}"));
    assert_eq!(&again, msg, "round trip changed the message");
    assert_eq!(write(&again), written, "writing is not idempotent");
}
