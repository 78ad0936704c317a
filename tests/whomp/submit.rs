//! The submission API: both forms delivered exactly, every malformed submission refused with
//! what and where (and nothing stored), bearer tokens, and `Idempotency-Key` across a restart.

use base64::Engine as _;
use harness::{wait_for, Receiver};
use serde_json::{json, Value};

use crate::{envelope, local, Whomp, FAST_RETRY};

#[test]
fn both_forms_are_delivered_with_the_exact_body_and_headers() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let url = format!("http://hooks.test:{port}/in?a=1&b=%2F");
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();

    // The JSON envelope, binary body.
    let json_id = whomp.submit(&json!({
        "method": "PUT",
        "url": url,
        "headers": [["Content-Type", "application/octet-stream"], ["X-Tag", "one"], ["x-tag", "two"],
                    ["Whomp-Id", "forged"], ["Connection", "close, X-Hop"], ["X-Hop", "secret"]],
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&binary),
    }));
    // message/http, with a Host agreeing with the URL in another spelling.
    let body = br#"{"event":"invoice.paid","amount":10}"#;
    let message = [
        format!(
            "POST {url} HTTP/1.1\r\nHost: HOOKS.test:{port}\r\nContent-Type: application/json\r\n\
             User-Agent: billing/2.1\r\nX-Request-Id: r-17\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body.to_vec(),
    ]
    .concat();
    let (status, answer) = whomp.post_http("/v1/messages", "", &message);
    assert_eq!(status, 202, "{answer}");
    let http_id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["status_url"], format!("/v1/messages/{http_id}"));

    wait_for("both are delivered", || receiver.count() == 2);
    for id in [&json_id, &http_id] {
        let status = whomp.wait_state(id, "delivered");
        assert_eq!(status["attempt_count"], 1);
        assert_eq!(status["attempts"][0]["status"], 200);
        assert_eq!(
            status["url"],
            format!("http://hooks.test:{port}"),
            "shown as its origin: paths and queries may be secrets"
        );
        assert_eq!(status["next_attempt_at"], Value::Null);
    }
    let mut got = receiver.received();
    got.sort_by_key(|r| r.method.clone());
    let (post, put) = (&got[0], &got[1]);
    assert_eq!(put.method, "PUT");
    assert_eq!(put.target, "/in?a=1&b=%2F");
    assert_eq!(put.body, binary, "body byte for byte");
    assert_eq!(put.header("content-type"), Some("application/octet-stream"));
    let tags: Vec<&str> = put
        .headers
        .iter()
        .filter(|(n, _)| n == "x-tag")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(tags, ["one", "two"], "repeated fields in order");
    assert_eq!(
        put.header("user-agent"),
        Some("whomp"),
        "the configured agent"
    );
    assert_eq!(
        put.header("host"),
        Some(format!("hooks.test:{port}").as_str())
    );
    assert_eq!(
        put.header("x-hop"),
        None,
        "fields named by Connection are hop-by-hop"
    );
    for r in [post, put] {
        assert!(
            r.headers.iter().all(|(n, _)| !n.starts_with("whomp-")),
            "no whomp metadata leaves whomp: {:?}",
            r.headers
        );
        assert_eq!(r.header("webhook-signature"), None, "unsigned unless asked");
    }
    assert_eq!(post.method, "POST");
    assert_eq!(post.body, body);
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(
        post.header("user-agent"),
        Some("billing/2.1"),
        "the submitter's agent wins"
    );
    assert_eq!(post.header("x-request-id"), Some("r-17"));
    assert_eq!(
        post.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"accepted\"}"),
        2.0
    );
    assert_eq!(
        whomp.metric("whomp_delivery_attempts_total{outcome=\"delivered\"}"),
        2.0
    );
    // The stored file is the request, readable with cat.
    let (code, out, err) = whomp.cli(&["spool", "show", &http_id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("POST {url} HTTP/1.1")), "{out}");
    assert!(out.contains(&format!("Whomp-Id: {http_id}")), "{out}");
}

#[test]
fn malformed_submissions_get_400_or_413_saying_what_and_where() {
    let whomp = Whomp::start(&format!(
        "limits: {{ max_body_bytes: 1000 }}\nsigning: {{ keys: {{ partner-a: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }} }}\n{}",
        local(&[443], &["hooks.test"])
    ));
    let http = |message: &str| whomp.post_http("/v1/messages", "", message.as_bytes());
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        (
            "bad request line",
            http("POST https://hooks.test/in\r\nContent-Length: 0\r\n\r\n"),
            400,
            "line 1: request line must be \"METHOD target HTTP/1.1\"",
        ),
        (
            "relative target",
            http("POST /in HTTP/1.1\r\nHost: hooks.test\r\nContent-Length: 0\r\n\r\n"),
            400,
            "request target \"/in\" is origin-form; whomp needs the absolute URL",
        ),
        (
            "CR in a header value",
            http("POST https://hooks.test/in HTTP/1.1\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
            400,
            "line 2: header value contains a bare CR",
        ),
        (
            "CR/LF in a header value (JSON)",
            whomp.post_json(
                "/v1/messages",
                "",
                &envelope("POST", "https://hooks.test/in", &[("X-A", "ok\r\nHost: 127.0.0.1")], ""),
            ),
            400,
            "headers[0]: value contains CR, LF or NUL",
        ),
        (
            "two different Content-Lengths",
            http("POST https://hooks.test/in HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab"),
            400,
            "content-length",
        ),
        (
            "body over the limit (message/http)",
            http(&format!(
                "POST https://hooks.test/in HTTP/1.1\r\nContent-Length: 1001\r\n\r\n{}",
                "x".repeat(1001)
            )),
            413,
            "body: larger than the limit of 1000 bytes",
        ),
        (
            "body over the limit (JSON)",
            whomp.post_json(
                "/v1/messages",
                "",
                &envelope("POST", "https://hooks.test/in", &[], &"x".repeat(1001)),
            ),
            413,
            "body is larger than the limit of 1000 bytes",
        ),
        (
            "submission far over the limit",
            http(&format!(
                "POST https://hooks.test/in HTTP/1.1\r\nContent-Length: 70000\r\n\r\n{}",
                "x".repeat(70_000)
            )),
            413,
            "submission larger than the limit of 1000 bytes for a message body",
        ),
        (
            "not JSON",
            whomp.post_json("/v1/messages", "", &json!(["POST"])),
            400,
            "line 1 column",
        ),
        (
            "unknown signing key",
            whomp.post_json(
                "/v1/messages",
                "Whomp-Signing-Key: partner-b\r\n",
                &envelope("POST", "https://hooks.test/in", &[], ""),
            ),
            400,
            "Whomp-Signing-Key \"partner-b\" is not a configured signing key (signing.keys)",
        ),
        (
            "bad idempotency key",
            whomp.post_json(
                "/v1/messages",
                &format!("Idempotency-Key: {}\r\n", "k".repeat(300)),
                &envelope("POST", "https://hooks.test/in", &[], ""),
            ),
            400,
            "Idempotency-Key is longer than 255 bytes",
        ),
        (
            "a Host that disagrees with the URL",
            http("POST https://hooks.test/in HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"),
            422,
            "Host header \"127.0.0.1\" disagrees with the url authority hooks.test",
        ),
    ];
    let mut failures = Vec::new();
    for (what, (status, body), expected, text) in &cases {
        let error = body["error"].as_str().unwrap_or_default();
        if status != expected || !error.to_lowercase().contains(&text.to_lowercase()) {
            failures.push(format!(
                "{what}: expected {expected} with {text:?}, got {status} {body}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (status, text) = harness::post(
        whomp.submit_addr(),
        "/v1/messages",
        "Content-Type: text/plain\r\n",
        b"hi",
    );
    assert_eq!(status, 415, "{text}");
    assert!(whomp.files("new").is_empty(), "nothing refused is stored");
    assert!(whomp.files("tmp").is_empty());
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"invalid\"}"),
        9.0,
        "eight 400s and a 415"
    );
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"too_large\"}"),
        3.0
    );
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        whomp.metric("whomp_preflight_rejections_total{rule=\"header\"}"),
        1.0
    );
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"accepted\"}"),
        0.0
    );
}

#[test]
fn bearer_tokens_guard_every_endpoint() {
    let whomp = Whomp::start(&format!(
        "auth: {{ tokens: [t0ken-a, t0ken-b] }}\n{}",
        local(&[443], &["hooks.test"])
    ));
    let msg = envelope("POST", "https://hooks.test/in", &[], "x");
    for headers in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Basic t0ken-a\r\n",
    ] {
        let (status, body) = whomp.post_json("/v1/messages", headers, &msg);
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("bearer token"));
    }
    let (status, _) = harness::get(
        whomp.submit_addr(),
        "/v1/messages/01J0000000000000000000000",
    );
    assert_eq!(status, 401);
    let (status, body) = whomp.post_json("/v1/preflight", "", &msg);
    assert_eq!(status, 401, "{body}");
    let (status, body) = whomp.post_json("/v1/messages", "Authorization: Bearer t0ken-b\r\n", &msg);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"unauthorized\"}"),
        3.0
    );
    assert_eq!(whomp.files("new").len() + whomp.files("cur").len(), 1);
}

#[test]
fn an_idempotency_key_returns_the_first_id_even_after_a_restart() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let msg = envelope("POST", &format!("http://hooks.test:{port}/in"), &[], "once");
    let submit = |whomp: &Whomp, key: &str| {
        let (status, body) =
            whomp.post_json("/v1/messages", &format!("Idempotency-Key: {key}\r\n"), &msg);
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    // Concurrent repeats get one message.
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| submit(&whomp, "order-17")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let other = submit(&whomp, "order-18");
    assert_ne!(other, ids[0]);
    whomp.wait_state(&ids[0], "delivered");
    whomp.wait_state(&other, "delivered");
    assert_eq!(
        whomp.metric("whomp_submissions_total{outcome=\"duplicate\"}"),
        7.0
    );

    whomp.restart();
    assert_eq!(
        submit(&whomp, "order-17"),
        ids[0],
        "the key survives a restart"
    );
    assert_eq!(submit(&whomp, "order-18"), other);
    assert_eq!(receiver.count(), 2, "one delivery per key");
}

/// Hostile JSON: six ~14 MB envelopes of tiny header pairs at once. The header limits hold while
/// the JSON is read (no million-entry vector first), so peak memory stays bounded, and the
/// parses run off the async workers, so a small request is answered while they run.
#[test]
fn a_flood_of_header_pairs_is_refused_in_bounded_memory_and_others_are_answered() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Peak resident memory of the daemon (VmHWM), in KiB.
    fn peak_kib(pid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    const FLOODS: usize = 6;
    /// Generous for six requests' raw bodies (each held while it is read and parsed) and the
    /// daemon itself; the unbounded parse needed several times this.
    const CEILING_MIB: u64 = 256;

    let port = harness::free_port();
    let whomp = Whomp::start(&local(&[port], &["hooks.test"]));
    let addr = whomp.submit_addr();
    // The largest JSON submission the default 10 MiB body limit lets in, made of `["a","b"],`.
    let head = format!(r#"{{"method":"POST","url":"http://hooks.test:{port}/in","headers":["#);
    let pairs = (13 * 1024 * 1024 - head.len()) / 10;
    let mut flood = head.into_bytes();
    for _ in 0..pairs {
        flood.extend_from_slice(br#"["a","b"],"#);
    }
    flood.extend_from_slice(br#"["a","b"]]}"#);
    let flood = Arc::new(flood);
    let sent = Arc::new(AtomicUsize::new(0));
    let floods: Vec<_> = (0..FLOODS)
        .map(|_| {
            let (flood, sent) = (flood.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(harness::DEADLINE)).unwrap();
                let head = format!(
                    "POST /v1/messages HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    flood.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&flood).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    wait_for("every flood is sent", || {
        sent.load(Ordering::SeqCst) == FLOODS
    });
    // A small dry run while the floods are parsed: answered (the read deadline is the bound).
    let asked = std::time::Instant::now();
    let (status, body) = whomp.post_json(
        "/v1/preflight",
        "",
        &envelope("POST", &format!("http://hooks.test:{port}/in"), &[], "x"),
    );
    assert_eq!(status, 200, "{body}");
    eprintln!("small request answered after {:?}", asked.elapsed());
    for flood in floods {
        let answer = flood.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("more than 200 headers"), "{answer}");
    }
    let peak = peak_kib(whomp.daemon.pid()) / 1024;
    eprintln!("whomp peak RSS after {FLOODS} floods: {peak} MiB");
    assert!(
        peak < CEILING_MIB,
        "peak RSS {peak} MiB, over the ceiling of {CEILING_MIB} MiB"
    );
}

#[test]
fn an_idempotency_key_reused_for_a_different_message_is_refused() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let url = format!("http://hooks.test:{port}/in");
    let key = "Idempotency-Key: order-19\r\n";
    let (status, first) = whomp.post_json("/v1/messages", key, &envelope("POST", &url, &[], "one"));
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap();
    for (what, changed) in [
        ("body", envelope("POST", &url, &[], "two")),
        ("url", envelope("POST", &format!("{url}?x"), &[], "one")),
        ("header", envelope("POST", &url, &[("X-Tag", "a")], "one")),
        ("method", envelope("PUT", &url, &[], "one")),
    ] {
        let (status, body) = whomp.post_json("/v1/messages", key, &changed);
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["idempotency_key"], "order-19", "{what}");
        assert_eq!(
            body["error"],
            "Idempotency-Key \"order-19\" was already used for a different message; a new message needs a new key",
        );
    }
    // The same message again, in the other form, is a repeat.
    let message = format!("POST {url} HTTP/1.1\r\nContent-Length: 3\r\n\r\none");
    let (status, again) = whomp.post_http("/v1/messages", key, message.as_bytes());
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["id"], id);
    whomp.wait_state(id, "delivered");
    assert_eq!(receiver.count(), 1, "nothing else was sent");
    assert_eq!(whomp.files("new").len() + whomp.files("cur").len(), 0);
}

#[test]
fn idempotency_keys_belong_to_their_bearer_token() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let whomp = Whomp::start(&format!(
        "{FAST_RETRY}{}auth: {{ tokens: [t0ken-a, t0ken-b] }}\n",
        local(&[port], &["hooks.test"])
    ));
    let msg = envelope("POST", &format!("http://hooks.test:{port}/in"), &[], "same");
    let submit = |token: &str| {
        let headers = format!("Authorization: Bearer {token}\r\nIdempotency-Key: shared-1\r\n");
        let (status, body) = whomp.post_json("/v1/messages", &headers, &msg);
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let a = submit("t0ken-a");
    let b = submit("t0ken-b");
    assert_ne!(
        a, b,
        "another caller's key does not find the first caller's message"
    );
    assert_eq!(submit("t0ken-a"), a);
    assert_eq!(submit("t0ken-b"), b);
    wait_for("both are delivered", || receiver.count() == 2);
}

#[test]
fn a_key_of_a_message_with_a_head_near_64_kib_survives_a_restart() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let url = format!("http://hooks.test:{port}/in");
    let head = |pad: usize| {
        format!(
            "POST {url} HTTP/1.1\r\nX-Pad: {}\r\nContent-Length: 3\r\n\r\n",
            "p".repeat(pad)
        )
    };
    // A head just under the submission limit of 64 KiB; whomp's metadata goes after it.
    let pad = 64 * 1024 - 16 - head(0).len();
    let message = format!("{}big", head(pad));
    let submit = |whomp: &Whomp| {
        let (status, body) = whomp.post_http(
            "/v1/messages",
            "Idempotency-Key: big-1\r\n",
            message.as_bytes(),
        );
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    };
    let id = submit(&whomp);
    let status = whomp.wait_state(&id, "delivered");
    assert_eq!(status["method"], "POST");
    assert_eq!(status["url"], format!("http://hooks.test:{port}"));

    whomp.restart();
    assert_eq!(submit(&whomp), id, "the key survives a restart");
    let status = whomp.status(&id);
    assert_eq!(status["method"], "POST", "{status}");
    assert_eq!(status["url"], format!("http://hooks.test:{port}"));
    assert_eq!(receiver.count(), 1, "delivered once");
}
