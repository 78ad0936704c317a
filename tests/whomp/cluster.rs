//! Cluster mode (issue 12). Two whomp nodes on one nats-server (R1) share their queue, message
//! status, idempotency keys and event records: a submission to one node is delivered once and
//! its status read from the other; one `Idempotency-Key` sent to both nodes at the same moment
//! yields one id; an event posted to one node fans out to a target made on the other, and its
//! id is de-duplicated on both. Three whimp and three whomp nodes on one three-server cluster (R3)
//! lose nothing acknowledged through the kills of `harness::faults_under_load` (this test runs
//! whimp too: it is the fault test for both daemons). The cluster unreachable: 503 with `Retry-After` and not ready, ready again by
//! itself. Skipped (SKIPPED) without nats-server locally, a failure under CI.

use std::io::{Read, Write};
use std::thread;

use std::sync::Arc;

use harness::{wait_for, Daemon, Fleet, Nats, Receiver};
use serde_json::json;

use crate::events::{post_event, subscribe};
use crate::{envelope, local, Whomp, FAST_RETRY};

/// A whomp node on server `i` of the cluster `nats`, its queue `replicas` times, delivering to
/// receivers on `port`; a short `ack_wait` so a killed node's claims go to another node soon.
fn node(nats: &Nats, i: usize, replicas: usize, port: u16) -> Whomp {
    Whomp::start(&format!(
        "queue: {{ backend: jetstream, servers: [\"{}\"], replicas: {replicas}, ack_wait: 3s }}\n\
         {FAST_RETRY}{}",
        nats.url(i),
        local(&[port], &["hooks.test"])
    ))
}

/// Bodies received at `path` equal to `body`.
fn received(receiver: &Receiver, path: &str, body: &str) -> usize {
    receiver
        .received()
        .iter()
        .filter(|m| m.target == path && m.body == body.as_bytes())
        .count()
}

#[test]
fn two_nodes_share_status_idempotency_keys_and_event_targets() {
    let Some(nats) = Nats::single() else {
        return;
    };
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let (one, two) = (node(&nats, 0, 1, port), node(&nats, 0, 1, port));
    let url = |path: &str| format!("http://hooks.test:{port}{path}");

    // Submitted to node 1, delivered once, its status read on node 2.
    let id = one.submit(&envelope("POST", &url("/raw"), &[], "hello"));
    let status = two.wait_state(&id, "delivered");
    assert_eq!(
        status["attempts"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(received(&receiver, "/raw", "hello"), 1);

    // One Idempotency-Key sent to both nodes at once: one id, one message.
    let same = envelope("POST", &url("/idem"), &[], "once");
    let answers: Vec<(u16, serde_json::Value)> = thread::scope(|s| {
        let sent: Vec<_> = [&one, &two]
            .map(|w| {
                let same = &same;
                s.spawn(move || w.post_json("/v1/messages", "Idempotency-Key: k-1\r\n", same))
            })
            .into_iter()
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 202, "{answer}");
    }
    assert_eq!(answers[0].1["id"], answers[1].1["id"], "{answers:?}");
    let first = answers[0].1["id"].as_str().unwrap().to_owned();
    one.wait_state(&first, "delivered");
    // Again on either node later: the same id.
    for w in [&one, &two] {
        let (status, answer) = w.post_json("/v1/messages", "Idempotency-Key: k-1\r\n", &same);
        assert_eq!((status, answer["id"].as_str()), (202, Some(first.as_str())));
    }
    assert_eq!(received(&receiver, "/idem", "once"), 1);

    // A target made on node 1; an event posted to node 2 fans out to it.
    subscribe(&one, &url("/events"), &["order.created"], json!({}));
    let event = json!({"id": "e-1", "type": "order.created", "payload": {"n": 1}});
    let (status, answer) = post_event(&two, &event);
    assert_eq!(status, 202, "{answer}");
    let deliveries = answer["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(deliveries.len(), 1, "{answer}");
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    one.wait_state(&delivery, "delivered");
    wait_for("the event's delivery", || {
        receiver.received().iter().any(|m| m.target == "/events")
    });
    // The same event id posted to node 1: the first answer, nothing fanned out again.
    let (status, again) = post_event(&one, &event);
    assert_eq!((status, &again), (202, &answer));
    assert_eq!(
        receiver
            .received()
            .iter()
            .filter(|m| m.target == "/events")
            .count(),
        1
    );
}

/// whimp, built beside whomp by `cargo test --workspace`; under CI it must be there.
fn whimp_bin() -> Option<std::path::PathBuf> {
    let bin = std::path::Path::new(crate::BIN).with_file_name("whimp");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is missing: build the workspace (cargo test --workspace)",
        bin.display()
    );
    eprintln!(
        "SKIPPED: {} is not built (cargo build -p whimp)",
        bin.display()
    );
    None
}

/// A whimp node on server `i` of `nats` (R3), forwarding `/gh/S3CR3T` to `backend`; its config
/// in `dir`.
fn whimp_node(
    bin: &std::path::Path,
    dir: &std::path::Path,
    nats: &Nats,
    i: usize,
    backend: &str,
) -> Daemon {
    let config = harness::write_file(
        dir,
        "whimp.yaml",
        &format!(
            "listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\nspool: {{ dir: spool }}\n\
             queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 3, ack_wait: 3s }}\n\
             retry: {{ initial: 100ms, max_interval: 400ms, max_age: 1h }}\n\
             routes:\n  - path: /gh/S3CR3T\n    name: gh\n    backends: [{{ url: \"{backend}\", timeout: 5s }}]\n",
            nats.url(i)
        ),
    );
    Daemon::start(bin, &config)
}

/// The fault test: one three-server cluster (R3) with three whimp nodes and three whomp
/// nodes on it (node `i` of each on server `i`), both under steady load, through a nats-server's
/// SIGKILL and restart, a SIGKILL of a whimp and a whomp node, and the loss of a whole node (its
/// nats-server, its whimp and its whomp): nothing acknowledged is lost on either side.
#[test]
fn three_whimp_and_three_whomp_nodes_lose_nothing_through_kills_and_the_loss_of_a_node() {
    let Some(bin) = whimp_bin() else {
        return;
    };
    let Some(mut nats) = Nats::cluster(3) else {
        return;
    };
    let (whimp_receiver, whomp_receiver) = (Receiver::start(), Receiver::start());
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut whimps: Vec<Daemon> = (0..3)
        .map(|i| whimp_node(&bin, dirs[i].path(), &nats, i, &whimp_receiver.url("/in")))
        .collect();
    let port = whomp_receiver.addr.port();
    let mut whomps: Vec<Whomp> = (0..3).map(|i| node(&nats, i, 3, port)).collect();
    let url = format!("http://hooks.test:{port}/in");
    harness::faults_under_load(
        &mut nats,
        &mut [
            Fleet {
                name: "whimp",
                nodes: whimps.iter_mut().collect(),
                listener: "public",
                receiver: &whimp_receiver,
                send: Arc::new(|addr, n| {
                    harness::try_post(addr, "/gh/S3CR3T", "", format!("soak-{n}").as_bytes())
                }),
            },
            Fleet {
                name: "whomp",
                nodes: whomps.iter_mut().map(|w| &mut w.daemon).collect(),
                listener: "submit",
                receiver: &whomp_receiver,
                send: Arc::new(move |addr, n| {
                    let submission = envelope("POST", &url, &[], &format!("soak-{n}")).to_string();
                    harness::try_post(
                        addr,
                        "/v1/messages",
                        "Content-Type: application/json\r\n",
                        submission.as_bytes(),
                    )
                }),
            },
        ],
    );
}

/// A submission's status line and header fields, lowercased.
fn submit_head(whomp: &Whomp, port: u16) -> String {
    let body = envelope("POST", &format!("http://hooks.test:{port}/in"), &[], "x").to_string();
    let mut stream = std::net::TcpStream::connect(whomp.submit_addr()).unwrap();
    stream.set_read_timeout(Some(harness::DEADLINE)).unwrap();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: whomp\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

/// The cluster gone: 503 with `Retry-After` and not ready, never a 202; back: ready and
/// accepting, no restart.
#[test]
fn an_unreachable_cluster_is_503_and_not_ready_until_it_is_back() {
    let Some(mut nats) = Nats::single() else {
        return;
    };
    let port = harness::free_port();
    let whomp = node(&nats, 0, 1, port);
    let ready = || harness::get(whomp.daemon.addr("admin"), "/readyz").0;
    assert!(submit_head(&whomp, port).starts_with("http/1.1 202"));
    assert_eq!(ready(), 200);
    nats.kill(0);
    wait_for("whomp is not ready", || ready() == 503);
    for _ in 0..3 {
        let head = submit_head(&whomp, port);
        assert!(head.starts_with("http/1.1 503"), "never a 202: {head}");
        assert!(head.contains("\r\nretry-after: "), "{head}");
    }
    nats.restart(0);
    wait_for("whomp is ready again", || ready() == 200);
    wait_for("whomp accepts again", || {
        submit_head(&whomp, port).starts_with("http/1.1 202")
    });
}
