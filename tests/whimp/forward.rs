//! Forwarding: fan-out, outages, the retry policy, dead letters and restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use harness::{free_port, wait_for, Answer, Receiver};

use crate::{route, Whimp, FAST_RETRY};

#[test]
fn fan_out_with_one_backend_down() {
    let up = Receiver::start();
    let down_port = free_port();
    let down_url = format!("http://127.0.0.1:{down_port}/in");
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("gh", "/gh/S3CR3T", &[up.url("/in"), down_url], "")
    ));
    for i in 0..5 {
        assert_eq!(
            whimp
                .post("/gh/S3CR3T", "", format!("event {i}").as_bytes())
                .0,
            200
        );
    }
    wait_for("the healthy backend has every copy", || up.count() == 5);
    wait_for("the healthy copies are done", || {
        whimp.files("done").len() == 5
    });
    wait_for("the other copies are retrying", || {
        whimp.files("cur").len() == 5
    });
    wait_for("the oldest waiting message ages", || {
        whimp
            .daemon
            .metric("whimp_spool_oldest_message_age_seconds")
            > 0.0
    });

    let down = Receiver::start_on(format!("127.0.0.1:{down_port}").parse().unwrap());
    wait_for("the second backend gets its copies once back", || {
        down.count() == 5
    });
    wait_for("every copy is done", || whimp.files("done").len() == 10);
    // The index forgets a message just after its file moves: wait for the gauge too.
    wait_for("nothing is left waiting", || {
        whimp
            .daemon
            .metric("whimp_spool_oldest_message_age_seconds")
            == 0.0
    });
    let ids = |r: &Receiver| {
        r.received()
            .iter()
            .map(|m| m.header("whimp-id").unwrap().to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        ids(&up),
        ids(&down),
        "both copies carry the message's one id"
    );
    let bodies = |r: &Receiver| {
        r.received()
            .iter()
            .map(|m| m.body.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(bodies(&up), bodies(&down));
    assert!(whimp
        .files("done")
        .iter()
        .all(|n| n.ends_with(".1") || n.ends_with(".2")));
}

#[test]
fn outage_then_recovery_with_attempts_spaced_per_policy() {
    let backend = Receiver::start();
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = failures.clone();
    backend.answer(move |_| {
        // The first four attempts fail: 503, 500, a 302 (not followed), 429 with Retry-After.
        let n = f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match n {
            0 => Answer::Status(503, vec![]),
            1 => Answer::Status(500, vec![]),
            2 => Answer::Status(
                302,
                vec![("Location".into(), "http://127.0.0.1:9/elsewhere".into())],
            ),
            3 => Answer::Status(429, vec![("Retry-After".into(), "1".into())]),
            _ => Answer::Status(204, vec![]),
        }
    });
    let whimp = Whimp::start(&format!(
        "retry: {{ initial: 200ms, max_interval: 2s, max_age: 1h }}\nroutes:\n{}",
        route("s", "/s/K", &[backend.url("/in")], "")
    ));
    assert_eq!(whimp.post("/s/K", "", b"payment").0, 200);
    wait_for("delivered at the fifth attempt", || {
        whimp.files("done").len() == 1
    });
    let got = backend.received();
    assert_eq!(got.len(), 5, "no redirect was followed");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    // Nominal delays 200, 400, 800 ms, then Retry-After 1 s; jitter takes at most a quarter off.
    let minimum = [150, 300, 600, 1000];
    for (i, (gap, min)) in gaps.iter().zip(minimum).enumerate() {
        assert!(
            *gap >= Duration::from_millis(min),
            "gap {i} was {gap:?}, policy says at least {min} ms"
        );
    }
    let listed = whimp.list();
    assert_eq!(listed[0]["state"], "delivered");
    assert_eq!(listed[0]["attempts"], 5);
    let (code, shown, _) = whimp.cli(&["spool", "show", listed[0]["id"].as_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        shown.contains("\"status\":302") && shown.contains("\"status\":204"),
        "{shown}"
    );
    assert!(shown.contains("payment"), "the stored message is shown");
}

#[test]
fn gone_dead_letters_at_once_and_spool_retry_brings_it_back() {
    let backend = Receiver::start();
    backend.answer(|_| Answer::Status(410, vec![]));
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("g", "/g/K", &[backend.url("/in")], "")
    ));
    assert_eq!(whimp.post("/g/K", "", b"bye").0, 200);
    wait_for("dead-lettered", || whimp.files("dead").len() == 1);
    assert_eq!(backend.count(), 1, "410 gives up at once");
    let listed = whimp.list();
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["last_error"], "status 410");
    assert_eq!(whimp.daemon.metric("whimp_dead_letters_total"), 1.0);

    backend.answer(|_| Answer::Status(200, vec![]));
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, out, err) = whimp.cli(&["spool", "retry", &id]);
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    wait_for("delivered after the re-queue", || {
        whimp.files("done").len() == 1
    });
    assert_eq!(backend.count(), 2);
    let (code, _, err) = whimp.cli(&["spool", "retry", &id]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is delivered; there is nothing to retry"),
        "{err}"
    );
}

#[test]
fn sigkill_with_messages_queued_loses_nothing() {
    let port = free_port();
    let mut whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("k", "/k/K", &[format!("http://127.0.0.1:{port}/in")], "")
    ));
    let sent: BTreeSet<Vec<u8>> = (0..50).map(|i| format!("msg-{i}").into_bytes()).collect();
    for body in &sent {
        assert_eq!(whimp.post("/k/K", "", body).0, 200);
    }
    whimp.daemon.kill();
    assert_eq!(
        whimp.files("new").len() + whimp.files("cur").len(),
        50,
        "all 50 on disk"
    );
    let backend = Receiver::start_on(format!("127.0.0.1:{port}").parse().unwrap());
    whimp.restart();
    wait_for(
        "every acknowledged message arrives after the restart",
        || backend.count() >= 50,
    );
    let got: BTreeSet<Vec<u8>> = backend.received().into_iter().map(|r| r.body).collect();
    assert_eq!(got, sent);
    wait_for("all done", || whimp.files("done").len() == 50);
}

#[test]
fn backend_names_resolve_without_the_system_resolver_library() {
    // whimp resolves with its own DNS client (hosts file, then resolv.conf servers).
    let backend = Receiver::start();
    let url = format!("http://localhost:{}/in", backend.addr.port());
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("n", "/n/K", &[url], "")
    ));
    assert_eq!(whimp.post("/n/K", "", b"by name").0, 200);
    wait_for("delivered to localhost", || backend.count() == 1);
    assert_eq!(
        backend.received()[0].header("host"),
        Some(format!("localhost:{}", backend.addr.port()).as_str())
    );
}
