//! Fuzzes whomp's JSON submission form: `from_json` must never panic, and what it accepts must be
//! a normalized message that the spool can write and read back unchanged (whomp stores a JSON
//! submission as a `message/http` file).
#![no_main]

use httpmsg::{from_json, parse, write, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let result = from_json(data, &limits);
    match &result {
        Ok(msg) => {
            let length = msg.body.len().to_string();
            let lengths: Vec<&[u8]> = msg.headers_named("content-length").collect();
            assert_eq!(
                lengths,
                [length.as_bytes()],
                "content-length not normalized"
            );
            assert_eq!(msg.headers_named("transfer-encoding").count(), 0);
            let written = write(msg);
            let roomy = Limits {
                max_header_bytes: written.len() + 1,
                max_headers: msg.headers.len() + 1,
                max_body_bytes: msg.body.len(),
            };
            let again = parse(&written, &roomy).unwrap_or_else(|e| {
                panic!("envelope {msg:?} is written as an unreadable file: {e}")
            });
            assert_eq!(&again, msg, "spool round trip changed the message");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    // Smaller limits may only refuse more, never accept something different.
    let small = Limits {
        max_header_bytes: 128,
        max_headers: 4,
        max_body_bytes: 32,
    };
    if let Ok(msg) = from_json(data, &small) {
        assert_eq!(result.as_ref().ok(), Some(&msg));
    }
});
