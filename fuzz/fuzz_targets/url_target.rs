//! Fuzzes whomp's URL normaliser and the DNS-free part of its pre-flight.
//!
//! Input is text: the URL on the first line, the method on the second, then one header per line
//! as `Name:value`. The normalised target must re-parse to itself, `check_request` must agree with
//! `parse_target`, and no refusal may carry a control character from the input into a message.
#![no_main]

use std::str::FromStr;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use netguard::{parse_target, Rejection, Rule, Rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let url = lines.next().unwrap_or_default();
    let method = lines.next().unwrap_or("POST");
    let headers: Vec<(String, Vec<u8>)> = lines
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.to_owned(), value.as_bytes().to_vec()),
            None => (line.to_owned(), Vec::new()),
        })
        .collect();

    let parsed = parse_target(url);
    match &parsed {
        Ok(target) => {
            let canonical = target.url();
            let again = parse_target(&canonical)
                .unwrap_or_else(|e| panic!("canonical url {canonical:?} of {url:?} refused: {e}"));
            assert_eq!(
                &again, target,
                "canonical url {canonical:?} re-parses differently"
            );
            assert_eq!(again.url(), canonical, "normalisation is not idempotent");
        }
        Err(rejection) => check_message(rejection),
    }

    let mut rule_sets = vec![Rules::default()];
    if let Ok(target) = &parsed {
        // Rules that let this target through wherever the operator can: every check left is
        // one no configuration can lift.
        let open = Rules {
            allow_http: true,
            methods: vec![method.to_owned()],
            ports: vec![target.port],
            reject_hosts: Vec::new(),
            reject_cidrs: Vec::new(),
            allow_cidrs: ["0.0.0.0/0", "::/0"]
                .iter()
                .filter_map(|net| IpNet::from_str(net).ok())
                .collect(),
            nat64_prefixes: Vec::new(),
            max_url_bytes: usize::MAX,
        };
        // The Host header a daemon would write from the target must satisfy the header check.
        let host = vec![("Host".to_owned(), target.authority().into_bytes())];
        if let Err(rejection) = open.check_request(method, url, &host) {
            assert_ne!(
                rejection.rule,
                Rule::Header,
                "Host {:?} from the target itself refused: {rejection}",
                target.authority()
            );
        }
        rule_sets.push(open);
    }
    for rules in &rule_sets {
        match rules.check_request(method, url, &headers) {
            Ok(checked) => assert_eq!(parsed.as_ref(), Ok(&checked)),
            Err(rejection) => {
                check_message(&rejection);
                if let Err(first) = &parsed {
                    assert_eq!(&rejection, first, "url refusal is not the first check");
                }
            }
        }
    }
});

/// A refusal's message is for a human and a log line: never empty, never a control character.
fn check_message(rejection: &Rejection) {
    assert!(
        !rejection.message.is_empty(),
        "empty message for {:?}",
        rejection.rule
    );
    assert!(
        !rejection.message.chars().any(char::is_control),
        "control character in message {:?}",
        rejection.message
    );
}
