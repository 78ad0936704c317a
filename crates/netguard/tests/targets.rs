//! Runs the target table (`tests/targets.txt`) through a [`Guard`] with the table's DNS answers.
//!
//! The table is the contract between netguard and whomp: whomp's end-to-end test runs the same
//! file through `/v1/preflight`. Here every case must get exactly the verdict the table states.

use std::collections::HashMap;
use std::net::IpAddr;

use netguard::testing::{parse_cases, DnsServer, Expect};
use netguard::{Guard, Host, Resolver, Rule};

#[tokio::test]
async fn every_target_gets_the_verdict_the_table_states() {
    let sections = parse_cases(include_str!("targets.txt")).unwrap();
    // Names without an answer in their section are asked here, and do not exist.
    let dns = DnsServer::start(HashMap::new()).await.unwrap();
    let mut failures = Vec::new();
    let (mut allowed, mut rejected) = (0, 0);
    let mut rules_seen = Vec::new();
    for section in &sections {
        let answers = section.static_dns();
        let resolver = Resolver::new(vec![dns.addr()], answers.clone());
        let guard = Guard::new(section.rules.clone(), resolver);
        for case in &section.cases {
            let outcome = guard
                .preflight(&case.method, &case.url, &case.headers)
                .await;
            let said = format!("line {}: {} {:?}", case.line, case.method, case.url);
            match (&case.expect, outcome) {
                (Expect::Allow, Ok(verdict)) => {
                    allowed += 1;
                    // The verdict's addresses are the literal, or the section's answer.
                    let expected: Vec<IpAddr> = match verdict.target.host {
                        Host::Ip(ip) => vec![ip],
                        Host::Name(ref name) => answers.get(name).cloned().unwrap_or_default(),
                    };
                    if verdict.addrs != expected {
                        failures.push(format!(
                            "{said}: allowed with {:?}, expected {expected:?}",
                            verdict.addrs
                        ));
                    }
                }
                (Expect::Reject { rule, contains }, Err(rejection))
                    if rejection.rule == *rule && rejection.message.contains(contains.as_str()) =>
                {
                    rejected += 1;
                    rules_seen.push(*rule);
                    if rejection.message.chars().any(char::is_control) {
                        failures.push(format!("{said}: message has a control character"));
                    }
                }
                (expect, got) => {
                    failures.push(format!("{said}: expected {expect:?}, got {got:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(rejected >= 70, "only {rejected} hostile targets");
    assert!(allowed >= 10, "only {allowed} benign targets");
    for rule in Rule::ALL {
        assert!(
            rules_seen.contains(&rule),
            "no case is refused by rule {rule}"
        );
    }
}
