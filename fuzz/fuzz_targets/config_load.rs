//! Fuzzes the YAML config loader of both daemons: arbitrary text must give `Ok` or a
//! `ConfigError`, never a panic, and every problem must render as one
//! `file:line:column: what is wrong` line.
#![no_main]

use std::path::Path;

use config::{parse_whimp, parse_whomp, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/fuzz/daemon.yaml");
    if let Err(e) = parse_whimp(text, path) {
        check_error(&e);
    }
    if let Err(e) = parse_whomp(text, path) {
        check_error(&e);
    }
});

/// A config error names at least one problem, and renders one line per problem, each starting
/// with the file name.
fn check_error(e: &ConfigError) {
    assert!(!e.problems.is_empty(), "config error without problems");
    let rendered = e.to_string();
    let lines: Vec<&str> = rendered.split('\n').collect();
    assert_eq!(
        lines.len(),
        e.problems.len(),
        "problem spans lines: {rendered:?}"
    );
    for line in lines {
        assert!(
            line.starts_with("/etc/fuzz/daemon.yaml:"),
            "line without file: {line:?}"
        );
    }
}
