//! Delivery policy through the real binary: attempt spacing, `Retry-After`, `give_up_on` and
//! the retry endpoint, and a hanging receiver that must not slow the healthy ones.
//!
//! Spacing is checked from below only (jitter takes at most a quarter off the nominal delay;
//! a busy machine can only make attempts later), so these tests do not depend on speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{wait_for, Answer, Receiver};

use crate::{envelope, local, Whomp};

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn attempts_are_spaced_by_the_policy_and_retry_after_is_honoured() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    // The receiver counts attempts per path itself and scripts the answers from that.
    let attempts = Arc::new(AtomicUsize::new(0));
    let count = attempts.clone();
    let retry_after_sent = Arc::new(AtomicUsize::new(0));
    let sent = retry_after_sent.clone();
    receiver.answer(move |r| match r.target.as_str() {
        "/backoff" => {
            if count.fetch_add(1, Ordering::SeqCst) < 4 {
                Answer::Status(500, vec![])
            } else {
                Answer::Status(200, vec![])
            }
        }
        "/busy" => {
            if sent.fetch_add(1, Ordering::SeqCst) == 0 {
                Answer::Status(503, vec![("Retry-After".into(), "2".into())])
            } else {
                Answer::Status(200, vec![])
            }
        }
        _ => Answer::Status(200, vec![]),
    });
    let whomp = Whomp::start(&format!(
        "retry: {{ initial: 250ms, max_interval: 1s, max_age: 1h }}\n{}",
        local(&[port], &["hooks.test"])
    ));
    let base = format!("http://hooks.test:{port}");
    let backoff = whomp.submit(&envelope("POST", &format!("{base}/backoff"), &[], "b"));
    let busy = whomp.submit(&envelope("POST", &format!("{base}/busy"), &[], "r"));
    whomp.wait_state(&backoff, "delivered");
    whomp.wait_state(&busy, "delivered");

    let times = |path: &str| -> Vec<Instant> {
        receiver
            .received()
            .iter()
            .filter(|r| r.target == path)
            .map(|r| r.at)
            .collect()
    };
    let spacing = gaps(&times("/backoff"));
    println!("attempt spacing with initial 250ms, max_interval 1s: {spacing:?}");
    assert_eq!(spacing.len(), 4, "five attempts");
    // Nominal delays 250ms, 500ms, 1s (capped), 1s; jitter takes at most a quarter off.
    for (gap, nominal) in spacing.iter().zip([250u64, 500, 1000, 1000]) {
        // Due times are whole milliseconds, hence the 2ms of slack.
        let least = Duration::from_millis(nominal * 3 / 4 - 2);
        assert!(*gap >= least, "gap {gap:?} shorter than {least:?}");
    }
    let status = whomp.status(&backoff);
    assert_eq!(status["attempt_count"], 5);
    assert_eq!(status["attempts"][0]["status"], 500);
    assert_eq!(status["attempts"][4]["status"], 200);

    let busy_gaps = gaps(&times("/busy"));
    println!("Retry-After: 2 with max_interval 1s gave a gap of {busy_gaps:?} (capped at 1s)");
    // Honoured within the cap: max_interval 1s wins over the 2s asked for, but never less
    // than the capped value.
    assert!(busy_gaps[0] >= Duration::from_millis(1000), "{busy_gaps:?}");
}

#[test]
fn retry_after_longer_than_the_backoff_is_honoured() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    receiver.answer(move |_| {
        if s.fetch_add(1, Ordering::SeqCst) == 0 {
            Answer::Status(429, vec![("Retry-After".into(), "2".into())])
        } else {
            Answer::Status(200, vec![])
        }
    });
    let whomp = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 10s, max_age: 1h }}\n{}",
        local(&[port], &["hooks.test"])
    ));
    let id = whomp.submit(&envelope(
        "POST",
        &format!("http://hooks.test:{port}/"),
        &[],
        "x",
    ));
    whomp.wait_state(&id, "delivered");
    let got = receiver.received();
    let gap = got[1].at - got[0].at;
    println!("Retry-After: 2 on a 429 with initial 100ms: next attempt after {gap:?}");
    assert!(gap >= Duration::from_secs(2), "{gap:?}");
}

#[test]
fn gone_is_dead_at_once_and_the_retry_endpoint_requeues_it() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let g = gone.clone();
    receiver.answer(move |_| {
        if g.load(Ordering::SeqCst) {
            Answer::Status(410, vec![])
        } else {
            Answer::Status(204, vec![])
        }
    });
    let whomp = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 1s, max_age: 1h, give_up_on: [410] }}\n{}",
        local(&[port], &["hooks.test"])
    ));
    let id = whomp.submit(&envelope(
        "POST",
        &format!("http://hooks.test:{port}/gone"),
        &[],
        "x",
    ));
    let status = whomp.wait_state(&id, "dead");
    assert_eq!(status["attempt_count"], 1, "410 gives up at once: {status}");
    assert_eq!(status["attempts"][0]["status"], 410);
    assert_eq!(status["last_error"], "status 410");
    assert_eq!(whomp.metric("whomp_dead_letters_total"), 1.0);
    assert_eq!(
        whomp.metric("whomp_delivery_attempts_total{outcome=\"dead\"}"),
        1.0
    );

    // The CLI sees it while the daemon runs.
    let (code, out, err) = whomp.cli(&["spool", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(listed["id"], id);
    assert_eq!(listed["state"], "dead");
    assert_eq!(listed["target"], format!("POST http://hooks.test:{port}"));
    assert_eq!(listed["last_error"], "status 410");

    // Not dead, unknown and malformed ids are told apart.
    let post = |path: &str| harness::post(whomp.submit_addr(), path, "", b"");
    let (status, body) = post("/v1/messages/01J00000000000000000000000/retry");
    assert_eq!(status, 404, "{body}");
    let (status, body) = post("/v1/messages/nope/retry");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("\\\"nope\\\" is not a message id (a ULID)"),
        "{body}"
    );

    gone.store(false, Ordering::SeqCst);
    let (status, body) = post(&format!("/v1/messages/{id}/retry"));
    assert_eq!(status, 200, "{body}");
    let status = whomp.wait_state(&id, "delivered");
    assert_eq!(status["attempts"][1]["status"], 204);
    let (status, body) = post(&format!("/v1/messages/{id}/retry"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is delivered, not dead"), "{body}");

    // And through the CLI: another dead message, re-queued by `spool retry`, then purged.
    gone.store(true, Ordering::SeqCst);
    let second = whomp.submit(&envelope(
        "POST",
        &format!("http://hooks.test:{port}/gone"),
        &[],
        "y",
    ));
    whomp.wait_state(&second, "dead");
    let (code, out, err) = whomp.cli(&["spool", "retry", &second]);
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    whomp.wait_state(&second, "dead");
    let (code, out, err) = whomp.cli(&["spool", "purge", "--dead"]);
    assert_eq!((code, out.trim()), (0, "purged 1"), "{err}");
    assert!(whomp.files("dead").is_empty());
    assert_eq!(receiver.count(), 4);
}

/// Healthy receivers keep their latency while another receiver hangs every request until
/// the attempt timeout: its attempts hold at most `max_in_flight_per_host` slots, and its
/// queued messages hold none.
#[test]
fn a_hanging_receiver_does_not_slow_the_healthy_ones() {
    let healthy = Receiver::start();
    let hanging = Receiver::start();
    hanging.answer(|_| Answer::Hang);
    let (hp, gp) = (healthy.addr.port(), hanging.addr.port());
    let mut whomp = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 1s, max_age: 1h }}\n\
         limits: {{ max_in_flight_per_host: 2 }}\n\
         delivery: {{ timeout: 60s, concurrency: 8 }}\n{}",
        local(&[hp, gp], &["healthy.test", "hanging.test"])
    ));
    let n = 40;
    let measure = |whomp: &Whomp, round: usize| -> Vec<Duration> {
        let mut sent = Vec::new();
        for i in 0..n {
            let seq = format!("{round}-{i}");
            let msg = envelope(
                "POST",
                &format!("http://healthy.test:{hp}/in"),
                &[("X-Seq", &seq)],
                "x",
            );
            sent.push((seq, Instant::now()));
            whomp.submit(&msg);
        }
        wait_for("the healthy receiver has every message", || {
            let got = healthy.received();
            sent.iter()
                .all(|(seq, _)| got.iter().any(|r| r.header("x-seq") == Some(seq)))
        });
        let got = healthy.received();
        let mut latencies: Vec<Duration> = sent
            .iter()
            .map(|(seq, at)| {
                let r = got.iter().find(|r| r.header("x-seq") == Some(seq)).unwrap();
                r.at - *at
            })
            .collect();
        latencies.sort();
        latencies
    };
    let report = |what: &str, l: &[Duration]| {
        println!(
            "healthy-receiver latency {what}: median {:?}, p90 {:?}, max {:?} ({} messages)",
            l[l.len() / 2],
            l[l.len() * 9 / 10],
            l[l.len() - 1],
            l.len()
        )
    };
    let alone = measure(&whomp, 0);
    report("alone", &alone);

    for i in 0..20 {
        whomp.submit(&envelope(
            "POST",
            &format!("http://hanging.test:{gp}/in"),
            &[("X-Seq", &format!("hang-{i}"))],
            "x",
        ));
    }
    wait_for("the hanging receiver holds its slots", || {
        hanging.count() == 2
    });
    let beside = measure(&whomp, 1);
    report("beside a hanging receiver", &beside);
    assert_eq!(
        hanging.count(),
        2,
        "at most max_in_flight_per_host attempts to the hanging receiver"
    );

    // SIGTERM while two attempts hang: the drain is bounded, the exit clean, and the hanging
    // messages are still queued for the next start.
    let started = Instant::now();
    let exit = whomp.daemon.stop();
    println!(
        "drain with two hanging attempts took {:?}",
        started.elapsed()
    );
    assert!(exit.success(), "{exit}");
    assert_eq!(
        whomp.files("new").len() + whomp.files("cur").len(),
        20,
        "the hanging receiver's messages stay queued"
    );
}
