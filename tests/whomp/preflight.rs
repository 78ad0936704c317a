//! Pre-flight through the real binary: netguard's table of hostile and benign targets via
//! `POST /v1/preflight` (both submission forms), and DNS rebinding between submission and
//! delivery. Both run inside a loopback-only network namespace when possible.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use harness::{wait_for, Answer, Receiver};
use netguard::testing::{parse_cases, Case, Expect, Section};
use netguard::{Host, Rule};
use serde_json::{json, Value};

use crate::{isolated, Dns, Whomp, FAST_RETRY};

const TABLE: &str = include_str!("../../crates/netguard/tests/targets.txt");

/// The `preflight:` and `dns:` config of a table section.
fn section_config(section: &Section, dns: SocketAddr) -> String {
    let r = &section.rules;
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let quoted = |items: &[String]| list(items.iter().map(|i| format!("{i:?}")).collect());
    let statics: Vec<String> = section
        .static_dns()
        .into_iter()
        .map(|(name, addrs)| {
            let addrs: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
            format!("{name:?}: {}", list(addrs))
        })
        .collect();
    fn nets<T: std::fmt::Display>(nets: &[T]) -> String {
        let quoted: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
        format!("[{}]", quoted.join(", "))
    }
    format!(
        "preflight:\n  allow_http: {}\n  methods: {}\n  ports: {}\n  reject_hosts: {}\n  reject_cidrs: {}\n  allow_cidrs: {}\n  nat64_prefixes: {}\n  max_url_bytes: {}\n\
         dns:\n  servers: [\"{dns}\"]\n  static: {{ {} }}\n",
        r.allow_http,
        quoted(&r.methods),
        list(r.ports.iter().map(u16::to_string).collect()),
        quoted(&r.reject_hosts),
        nets(&r.reject_cidrs),
        nets(&r.allow_cidrs),
        nets(&r.nat64_prefixes),
        r.max_url_bytes,
        statics.join(", ")
    )
}

/// Whether a case cannot even be written as a well-formed submission, so `400` (malformed) is
/// the right answer rather than a pre-flight `422`: a URL with bytes a URI cannot hold or no
/// scheme, a method that is not a token, a header field that is not a field.
fn malformed(case: &Case) -> bool {
    let url_bytes = case.url.bytes().any(|b| !b.is_ascii_graphic());
    let scheme = case
        .url
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/'));
    let method = case.method.is_empty() || case.method.bytes().any(|b| !b.is_ascii_graphic());
    let headers = case.headers.iter().any(|(n, v)| {
        n.bytes().any(|b| !b.is_ascii_graphic())
            || v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
    });
    url_bytes || !scheme || method || headers
}

/// The case as a `message/http` submission, when it can be written as one.
fn as_message_http(case: &Case) -> Option<Vec<u8>> {
    if malformed(case) {
        return None;
    }
    let mut out = format!("{} {} HTTP/1.1\r\n", case.method, case.url).into_bytes();
    for (name, value) in &case.headers {
        if value.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return None;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(out)
}

#[test]
fn hostile_targets() {
    if isolated::reexec("preflight::hostile_targets") {
        return;
    }
    let sections = parse_cases(TABLE).unwrap();
    // Names without an answer in their section are asked here, and do not exist.
    let dns = Dns::start(HashMap::new());
    let mut failures = Vec::new();
    let (mut allowed, mut refused_by_rule, mut malformed_400, mut http_form) = (0, 0, 0, 0);
    let mut rules_seen = Vec::new();
    for section in &sections {
        let whomp = Whomp::start(&section_config(section, dns.server.addr()));
        let answers = section.static_dns();
        for case in &section.cases {
            let said = format!("line {}: {} {:?}", case.line, case.method, case.url);
            let headers: Vec<Value> = case
                .headers
                .iter()
                .map(|(n, v)| json!([n, String::from_utf8_lossy(v)]))
                .collect();
            let envelope = json!({"method": case.method, "url": case.url, "headers": headers});
            let (status, body) = whomp.post_json("/v1/preflight", "", &envelope);
            let error = body["error"].as_str().unwrap_or_default().to_owned();
            if error.chars().any(char::is_control) {
                failures.push(format!("{said}: answer has a control character: {error:?}"));
            }
            match (&case.expect, status) {
                (Expect::Allow, 200) => {
                    allowed += 1;
                    let expected: Vec<IpAddr> =
                        match netguard::parse_target(&case.url).map(|t| t.host) {
                            Ok(Host::Ip(ip)) => vec![ip],
                            Ok(Host::Name(name)) => answers.get(&name).cloned().unwrap_or_default(),
                            Err(e) => panic!("{said}: {e}"),
                        };
                    let got: Vec<IpAddr> = body["addresses"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().parse().unwrap())
                        .collect();
                    if got != expected {
                        failures.push(format!(
                            "{said}: allowed with {got:?}, expected {expected:?}"
                        ));
                    }
                }
                (Expect::Reject { rule, contains }, 422)
                    if body["rule"] == rule.as_str() && error.contains(contains.as_str()) =>
                {
                    refused_by_rule += 1;
                    rules_seen.push(*rule);
                }
                (Expect::Reject { rule, .. }, 400)
                    if malformed(case)
                        && matches!(rule, Rule::Url | Rule::Header | Rule::Method)
                        && !error.is_empty() =>
                {
                    malformed_400 += 1;
                }
                (expect, status) => {
                    failures.push(format!("{said}: expected {expect:?}, got {status} {body}"));
                }
            }
            // The same case as message/http gets the same verdict.
            if let Some(message) = as_message_http(case) {
                let (again, again_body) = whomp.post_http("/v1/preflight", "", &message);
                http_form += 1;
                if again != status || again_body["rule"] != body["rule"] {
                    failures.push(format!(
                        "{said}: message/http got {again} {again_body}, json got {status} {body}"
                    ));
                }
            }
        }
        // A dry run stores nothing.
        assert!(whomp.files("new").is_empty() && whomp.files("cur").is_empty());
    }
    println!(
        "target table through /v1/preflight: {refused_by_rule} refused by their rule (422), \
         {malformed_400} malformed (400), {allowed} allowed; {http_form} also as message/http"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        refused_by_rule >= 60,
        "only {refused_by_rule} hostile targets refused by rule"
    );
    assert!(allowed >= 10, "only {allowed} benign targets");
    for rule in Rule::ALL {
        assert!(
            rules_seen.contains(&rule),
            "no case is refused by rule {rule}"
        );
    }
}

/// Accepts connections on `addr` and counts them; whomp must never make one.
struct Tripwire {
    hits: Arc<AtomicUsize>,
}

impl Tripwire {
    fn on(addr: SocketAddr) -> Tripwire {
        let listener = TcpListener::bind(addr).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stream.is_ok() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Tripwire { hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `rebind.test` answers an allowed address (127.0.0.2, standing in for a public one) at
/// submission and the first attempt, then the loopback address 127.0.0.1 where a tripwire
/// listens, then a mix of both. whomp must refuse those attempts without connecting anywhere,
/// and deliver once the answer is allowed again.
#[test]
fn dns_rebinding_never_reaches_the_private_address() {
    if isolated::reexec("preflight::dns_rebinding_never_reaches_the_private_address") {
        return;
    }
    let allowed: IpAddr = "127.0.0.2".parse().unwrap();
    let private: IpAddr = "127.0.0.1".parse().unwrap();
    let receiver = Receiver::start_on(SocketAddr::new(allowed, 0));
    let port = receiver.addr.port();
    let tripwire = Tripwire::on(SocketAddr::new(private, port));
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    receiver.answer(move |_| {
        // The first attempt fails, so that the next one resolves again.
        match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Answer::Status(500, vec![]),
            _ => Answer::Status(200, vec![]),
        }
    });
    let dns = Dns::start(HashMap::from([("rebind.test".to_owned(), vec![allowed])]));
    let whomp = Whomp::start(&format!(
        "{FAST_RETRY}preflight: {{ allow_http: true, ports: [{port}], allow_cidrs: [127.0.0.2/32] }}\n\
         dns: {{ servers: [\"{}\"] }}\n",
        dns.server.addr()
    ));
    let id = whomp.submit(
        &json!({"method": "POST", "url": format!("http://rebind.test:{port}/hook"), "body": "x"}),
    );
    wait_for("the first attempt reaches the allowed address", || {
        receiver.count() == 1
    });

    // Waits until `n` attempts were refused, each with `text`; returns the status.
    let refused = |n: usize, text: &str| {
        let mut status = Value::Null;
        wait_for(&format!("{n} attempts are refused: {text}"), || {
            status = whomp.status(&id);
            let refusals: Vec<String> = status["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a["error"].as_str())
                .filter(|e| e.starts_with("pre-flight refused"))
                .map(str::to_owned)
                .collect();
            assert!(refusals.iter().all(|e| e == text), "{refusals:?}");
            refusals.len() >= n
        });
        status
    };
    let text = "pre-flight refused (address): host rebind.test resolves to 127.0.0.1, inside rejected range 127.0.0.0/8 (loopback)";
    dns.server.set("rebind.test", vec![private]);
    refused(1, text);
    // A mix of the allowed and the private address is refused as a whole.
    dns.server.set("rebind.test", vec![allowed, private]);
    let status = refused(2, text);
    assert_eq!(status["state"], "retrying", "{status}");
    assert_eq!(receiver.count(), 1, "no attempt went anywhere");

    dns.server.set("rebind.test", vec![allowed]);
    let status = whomp.wait_state(&id, "delivered");
    assert_eq!(receiver.count(), 2);
    assert_eq!(tripwire.hits(), 0, "whomp connected to the private address");
    assert!(
        whomp.metric("whomp_preflight_rejections_total{rule=\"address\"}") >= 2.0,
        "attempt refusals are counted"
    );
    assert!(whomp.metric("whomp_delivery_attempts_total{outcome=\"rejected\"}") >= 2.0);
    println!("rebinding attempts: {}", status["attempts"]);
}
