//! The accept path: what is stored and forwarded, and every refusal leaving no trace.

use harness::{wait_for, Receiver};

use crate::{route, Whimp, FAST_RETRY};

const PATH: &str = "/paypal/01FD5BKAC5EEJ6HA8KPXT5QV4Y";

#[test]
fn every_post_is_forwarded_with_exact_body_headers_and_query() {
    let backend = Receiver::start();
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route(
            "paypal",
            PATH,
            &[backend.url("/hooks/paypal")],
            "    methods: [POST, PUT]\n"
        )
    ));
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n\x00\x01\r\n\r\n--XyZ--\r\n".to_vec();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "application/json",
            br#"{"event":"PAYMENT.CAPTURE.COMPLETED","amount":"10.00"}"#.to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"a=1&b=%20two&c=".to_vec(),
        ),
        ("multipart/form-data; boundary=XyZ", multipart),
        ("application/octet-stream", binary),
        ("text/plain", Vec::new()),
    ];
    let n = 20;
    for i in 0..n {
        let (ct, body) = &bodies[i % bodies.len()];
        let headers = format!(
            "Content-Type: {ct}\r\nPaypal-Transmission-Sig: sig-{i}\r\nX-Forwarded-For: 6.6.6.6\r\nWhimp-Route: forged\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\n"
        );
        let (status, _) = whimp.post(&format!("{PATH}?seq={i}&x=a%2Fb"), &headers, body);
        assert_eq!(status, 200);
    }
    wait_for("every post is forwarded", || backend.count() == n);
    let mut got = backend.received();
    got.sort_by_key(|r| {
        r.header("paypal-transmission-sig")
            .unwrap()
            .trim_start_matches("sig-")
            .parse::<usize>()
            .unwrap()
    });
    let mut ids = std::collections::HashSet::new();
    for (i, r) in got.iter().enumerate() {
        let (ct, body) = &bodies[i % bodies.len()];
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.target,
            format!("/hooks/paypal?seq={i}&x=a%2Fb"),
            "path from the route, query kept"
        );
        assert_eq!(&r.body, body, "body byte for byte (message {i})");
        assert_eq!(r.header("content-type"), Some(*ct));
        let id = r.header("whimp-id").expect("Whimp-Id");
        assert_eq!(id.len(), 26);
        assert!(ids.insert(id.to_owned()), "ids are unique");
        assert_eq!(
            r.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "whimp's value, not the sender's"
        );
        assert_eq!(r.header("x-forwarded-proto"), Some("http"));
        let public = whimp.daemon.addr("public");
        assert_eq!(
            r.header("x-forwarded-host"),
            Some(public.to_string().as_str())
        );
        assert_eq!(
            r.header("whimp-original-url"),
            Some(format!("http://{public}{PATH}?seq={i}&x=a%2Fb").as_str())
        );
        assert_eq!(r.header("whimp-route"), None, "forged metadata is dropped");
        assert_eq!(
            r.header("x-hop"),
            None,
            "fields named in Connection are hop-by-hop"
        );
        assert_eq!(r.header("host"), Some(backend.addr.to_string().as_str()));
    }
    wait_for("all done", || whimp.files("done").len() == n);
    assert_eq!(whimp.pending(), 0);
    assert_eq!(
        whimp
            .daemon
            .metric("whimp_requests_total{code=\"200\",route=\"paypal\"}"),
        n as f64
    );
    assert_eq!(
        whimp
            .daemon
            .metric("whimp_forward_attempts_total{backend=\"paypal/1\",outcome=\"delivered\"}"),
        n as f64
    );
    let logs = whimp.daemon.output();
    assert!(
        !logs.contains(PATH),
        "the secret path never appears in logs"
    );
    assert!(!whimp.daemon.metrics().contains(PATH), "nor in metrics");
}

#[test]
fn refusals_leave_the_spool_untouched() {
    let backend = Receiver::start();
    let whimp = Whimp::start(&format!(
        "limits: {{ max_body_bytes: 1024 }}\n{FAST_RETRY}routes:\n{}{}",
        route("open", "/open/K1", &[backend.url("/a")], "    methods: [POST]\n    response: { status: 202, body: \"thanks\", content_type: text/plain }\n"),
        route("closed", "/closed/K2", &[backend.url("/b")], "    allow_from: [10.0.0.0/8, 192.0.2.0/24]\n"),
    ));
    let untouched = |what: &str| {
        assert_eq!(whimp.pending(), 0, "{what}: nothing queued");
        assert!(
            whimp.files("done").is_empty() && whimp.files("dead").is_empty(),
            "{what}"
        );
    };
    assert_eq!(whimp.post("/nope", "", b"x").0, 404);
    untouched("404");
    assert_eq!(whimp.post("/open/K1/", "", b"x").0, 404, "exact paths only");
    assert_eq!(whimp.post("/open/k1", "", b"x").0, 404, "case matters");
    let (status, _) = harness::get(whimp.daemon.addr("public"), "/open/K1");
    assert_eq!(status, 405);
    untouched("405");
    let (status, body) = whimp.post("/open/K1", "", &[b'x'; 1025]);
    assert_eq!(status, 413, "{body}");
    untouched("413 by Content-Length");
    // A chunked body has no Content-Length: the limit applies while reading.
    let chunk = vec![b'y'; 800];
    let mut req = format!(
        "POST /open/K1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    req.extend_from_slice(&chunk);
    req.extend_from_slice(format!("\r\n{:x}\r\n", chunk.len()).as_bytes());
    req.extend_from_slice(&chunk);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(harness::raw(whimp.daemon.addr("public"), &req).0, 413);
    untouched("413 chunked");
    assert_eq!(whimp.post("/closed/K2", "", b"x").0, 403);
    untouched("403");
    assert_eq!(backend.count(), 0);

    let (status, body) = whimp.post("/open/K1", "", b"ok");
    assert_eq!(
        (status, body.as_str()),
        (202, "thanks"),
        "the route's response"
    );
    wait_for("the accepted one arrives", || backend.count() == 1);
    let page = whimp.daemon.metrics();
    for (sample, want) in [
        ("whimp_requests_total{code=\"404\",route=\"unknown\"}", 3.0),
        ("whimp_requests_total{code=\"405\",route=\"open\"}", 1.0),
        ("whimp_requests_total{code=\"413\",route=\"open\"}", 2.0),
        ("whimp_requests_total{code=\"403\",route=\"closed\"}", 1.0),
        ("whimp_requests_total{code=\"202\",route=\"open\"}", 1.0),
    ] {
        assert_eq!(harness::metric_in(&page, sample), want, "{sample}");
    }
}

#[test]
fn malformed_http_gets_400_and_stores_nothing() {
    let whimp =
        Whimp::start("routes:\n  - path: /p\n    backends: [{ url: \"http://127.0.0.1:9/x\" }]\n");
    let addr = whimp.daemon.addr("public");
    for junk in [
        &b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /p HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let (status, _) = harness::raw(addr, junk);
        assert!(status == 400 || status == 0, "{status} for {junk:?}");
    }
    assert_eq!(whimp.pending(), 0);
    assert!(whimp.files("done").is_empty());
    // The daemon is still serving.
    assert_eq!(harness::get(whimp.daemon.addr("admin"), "/healthz").0, 200);
}
