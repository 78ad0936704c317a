//! The backend against a real nats-server (harness::Nats, R1): the seam's conformance suite, and
//! what only this backend can show (dedup by message id, an unreachable server, a fetch never
//! answered, redelivery to another node, the server's NAK delay, dead letters, 10 MiB bodies).

use std::time::Duration;

use harness::Nats;
use storage::{now_ms, Attempt, Claimed, Key, Outcome, State, Storage};
use ulid::Ulid;

use super::*;

const DEADLINE: Duration = Duration::from_secs(30);

fn options(nats: &Nats, prefix: &str) -> Options {
    Options {
        servers: nats.urls(),
        replicas: 1,
        prefix: prefix.into(),
        auth: Auth::None,
        ca_file: None,
        ack_wait: Duration::from_secs(30),
        max_message_bytes: 12 << 20,
        timeout: Duration::from_secs(2),
    }
}

/// A prefix no other test uses on the same server.
fn fresh() -> String {
    format!("t{}", Ulid::new())
}

fn attempt(status: u16) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        target: "http://127.0.0.1:9".into(),
        status: Some(status),
        error: None,
        duration_ms: 1,
        excerpt: String::new(),
    }
}

/// Polls `claim_due` at the real time until `key` is handed out, releasing anything else.
async fn claim_eventually(s: &JetStream, key: Key) -> Claim {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut found = None;
        for c in s.claim_due(now_ms(), usize::MAX).await {
            if c.key() == key {
                found = Some(c);
            } else {
                s.release(c).await;
            }
        }
        if let Some(c) = found {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never handed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes of one deployment (`o`), each with its own connection.
async fn two_nodes(o: &Options) -> (JetStream, JetStream) {
    (
        JetStream::open(o).await.unwrap(),
        JetStream::open(o).await.unwrap(),
    )
}

async fn one(s: &JetStream, body: &[u8]) -> Key {
    s.enqueue(Ulid::new(), 1, body.to_vec())
        .await
        .expect("enqueue")[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_to_the_storage_seam() {
    let Some(nats) = Nats::single() else { return };
    storage::conformance::storage(|| async {
        JetStream::open(&options(&nats, &fresh())).await.unwrap()
    })
    .await;
    storage::conformance::records(|| async {
        let o = options(&nats, &fresh());
        let s = JetStream::open(&o).await.unwrap();
        s.records(&o).await.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_with_the_same_id_is_stored_once() {
    let Some(nats) = Nats::single() else { return };
    let s = JetStream::open(&options(&nats, &fresh())).await.unwrap();
    let id = Ulid::new();
    let first = s.enqueue(id, 1, b"once".to_vec()).await.unwrap();
    let again = s.enqueue(id, 1, b"once".to_vec()).await.unwrap();
    assert_eq!(first, again);
    let info = s.inner.queue.get_info().await.unwrap();
    // One subject holds one message anyway; the sequence shows the second was never stored.
    assert_eq!(
        (info.state.messages, info.state.last_sequence),
        (1, 1),
        "Nats-Msg-Id dedups the second publish"
    );
    let claims = s.claim_due(now_ms(), usize::MAX).await;
    assert_eq!(claims.len(), 1, "one message to deliver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_unavailable_and_ready_again_after_restart() {
    let Some(mut nats) = Nats::single() else {
        return;
    };
    let s = JetStream::open(&options(&nats, &fresh())).await.unwrap();
    let kept = one(&s, b"before").await;
    nats.kill(0);
    let refused = s.enqueue(Ulid::new(), 1, b"during".to_vec()).await;
    assert!(refused.is_err(), "no success without the stream's ack");
    let reason = s
        .unhealthy_reason()
        .expect("not ready while the server is down");
    assert!(reason.starts_with("nats "), "{reason}");
    nats.restart(0);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while let Some(reason) = s.unhealthy_reason() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not ready: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one(&s, b"after").await;
    assert_eq!(
        s.status(kept).await.unwrap().map(|st| st.state),
        Some(State::Queued),
        "what was acknowledged survived"
    );
}

/// A fetch nobody answers (the consumer's leader frozen, or lost with the request in flight)
/// ends after `timeout`, unavailable: the delivery loop goes on instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_the_server_never_answers_ends_unavailable() {
    let Some(nats) = Nats::single() else { return };
    let s = JetStream::open(&options(&nats, &fresh())).await.unwrap();
    one(&s, b"waiting").await;
    nats.pause(0);
    let claimed = tokio::time::timeout(DEADLINE, s.claim_due(now_ms(), usize::MAX)).await;
    let reason = s.unhealthy_reason();
    nats.resume(0);
    assert_eq!(claimed.map(|c| c.len()).ok(), Some(0), "claim_due ends");
    let reason = reason.expect("not ready while the server does not answer");
    assert!(reason.contains("consumer deliver"), "{reason}");
}

/// The records bucket is set up as patiently as the queue: a cluster that does not answer for
/// longer than `timeout` (electing a leader after a restart) does not stop a node's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_bucket_waits_for_a_cluster_that_does_not_answer_yet() {
    let Some(nats) = Nats::single() else { return };
    let o = options(&nats, &fresh());
    let s = JetStream::open(&o).await.unwrap();
    nats.pause(0);
    let opening = tokio::spawn({
        let o = o.clone();
        async move { s.records(&o).await.map(|_| ()) }
    });
    // Frozen past the first request's timeout, then back.
    tokio::time::sleep(o.timeout * 2).await;
    nats.resume(0);
    let opened = opening.await.unwrap();
    assert!(opened.is_ok(), "{opened:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_not_finished_in_time_goes_to_another_node() {
    let Some(nats) = Nats::single() else { return };
    let mut o = options(&nats, &fresh());
    o.ack_wait = Duration::from_secs(1);
    let (a, b) = two_nodes(&o).await;
    let key = one(&a, b"hot potato").await;
    let held = claim_eventually(&a, key).await;
    // Node a "dies" mid-attempt: its connection goes (no outcome, no progress ack), and node b
    // is handed the message.
    a.inner.client.drain().await.unwrap();
    let taken = claim_eventually(&b, key).await;
    assert_eq!(b.read(&taken).await.unwrap(), b"hot potato");
    b.finish(taken, Some(&attempt(200)), Outcome::Delivered)
        .await
        .unwrap();
    let c = JetStream::open(&o).await.unwrap();
    assert_eq!(
        c.status(key).await.unwrap().map(|st| st.state),
        Some(State::Delivered),
        "any node sees the outcome"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_longer_than_the_ack_wait_keeps_its_claim() {
    let Some(nats) = Nats::single() else { return };
    let mut o = options(&nats, &fresh());
    o.ack_wait = Duration::from_secs(1);
    let (a, b) = two_nodes(&o).await;
    let key = one(&a, b"slow backend").await;
    let held = claim_eventually(&a, key).await;
    // Node a's attempt takes four ack waits; node b asks all along and is never handed it.
    let until = tokio::time::Instant::now() + 4 * o.ack_wait;
    while tokio::time::Instant::now() < until {
        for c in b.claim_due(now_ms(), usize::MAX).await {
            assert_ne!(
                c.key(),
                key,
                "handed to node b while node a still works on it"
            );
            b.release(c).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.finish(held, Some(&attempt(200)), Outcome::Delivered)
        .await
        .unwrap();
    assert_eq!(
        b.status(key).await.unwrap().map(|st| st.state),
        Some(State::Delivered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_come_back_in_due_order_and_never_early() {
    let Some(nats) = Nats::single() else { return };
    let s = JetStream::open(&options(&nats, &fresh())).await.unwrap();
    let (late, soon) = (one(&s, b"late").await, one(&s, b"soon").await);
    let now = now_ms();
    for (key, wait) in [(late, 1_500), (soon, 500)] {
        let c = claim_eventually(&s, key).await;
        s.finish(
            c,
            Some(&attempt(503)),
            Outcome::Retry { due_ms: now + wait },
        )
        .await
        .unwrap();
    }
    let mut order = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while order.len() < 2 {
        for c in s.claim_due(now_ms(), usize::MAX).await {
            let claimed_at = now_ms();
            let due = s
                .status(c.key())
                .await
                .unwrap()
                .unwrap()
                .next_attempt_ms
                .unwrap();
            assert!(
                claimed_at >= due,
                "{} handed out at {claimed_at}, due {due}",
                c.key()
            );
            order.push(c.key());
            s.finish(c, Some(&attempt(200)), Outcome::Delivered)
                .await
                .unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retries never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(order, vec![soon, late], "the sooner retry first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_requeued_by_another_node() {
    let Some(nats) = Nats::single() else { return };
    let o = options(&nats, &fresh());
    let (a, b) = two_nodes(&o).await;
    let key = one(&a, b"gave up").await;
    let c = claim_eventually(&a, key).await;
    a.finish(c, Some(&attempt(410)), Outcome::Dead)
        .await
        .unwrap();
    assert_eq!(a.inner.dead.get_info().await.unwrap().state.messages, 1);
    assert_eq!(
        b.message(key, usize::MAX).await.unwrap(),
        Some(b"gave up".to_vec())
    );
    b.requeue(key).await.unwrap();
    assert_eq!(b.inner.dead.get_info().await.unwrap().state.messages, 0);
    let c = claim_eventually(&a, key).await;
    assert_eq!(
        (c.attempts(), a.read(&c).await.unwrap()),
        (0, b"gave up".to_vec())
    );
    assert_eq!(a.attempts(key).await.unwrap().len(), 1, "history kept");
    a.release(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_mib_body_round_trips() {
    let Some(nats) = Nats::single() else { return };
    let s = JetStream::open(&options(&nats, &fresh())).await.unwrap();
    let body: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
    let key = one(&s, &body).await;
    let c = claim_eventually(&s, key).await;
    assert!(s.read(&c).await.unwrap() == body, "claimed bytes differ");
    s.release(c).await;
    assert!(
        s.message(key, usize::MAX).await.unwrap() == Some(body),
        "stored bytes differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_small_max_payload_is_refused() {
    let Some(nats) = Nats::single() else { return };
    let mut o = options(&nats, &fresh());
    o.max_message_bytes = harness::NATS_MAX_PAYLOAD + 1;
    let e = JetStream::open(&o).await.err().expect("refused");
    assert!(e.to_string().starts_with("nats max_payload: "), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_is_one_publish_and_queued_on_every_node_until_its_first_outcome() {
    let Some(nats) = Nats::single() else { return };
    let o = options(&nats, &fresh());
    let (a, b) = two_nodes(&o).await;
    let recorded = |key: Key| {
        let state = a.inner.state.clone();
        async move { state.entry(key.to_string()).await.unwrap().is_some() }
    };
    let key = one(&a, b"just in").await;
    assert!(
        !recorded(key).await,
        "the publish is the enqueue's one replicated write: no state record yet"
    );
    // Another node answers for it at once, and learns of it for its listing and gauges.
    let status = b
        .status(key)
        .await
        .unwrap()
        .expect("known on the other node");
    assert_eq!((status.state, status.attempts), (State::Queued, 0));
    assert_eq!(
        b.message(key, 100).await.unwrap().as_deref(),
        Some(&b"just in"[..])
    );
    assert_eq!(b.copies(key).await.unwrap(), vec![key]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !b.list().await.unwrap().iter().any(|l| l.key == key) || b.counts().queued != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other node never listed it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A node started now reads it at start-up.
    let c = JetStream::open(&o).await.unwrap();
    assert_eq!(c.counts().queued, 1, "a new node counts it queued");
    // Its first outcome writes the record, which every node then goes by.
    let claim = claim_eventually(&b, key).await;
    assert_eq!(claim.attempts(), 0);
    let due_ms = now_ms() + 60_000;
    b.finish(claim, Some(&attempt(503)), Outcome::Retry { due_ms })
        .await
        .unwrap();
    assert!(recorded(key).await, "the first outcome wrote the record");
    let status = a.status(key).await.unwrap().expect("known");
    assert_eq!(
        (status.state, status.attempts, status.next_attempt_ms),
        (State::Retrying, 1, Some(due_ms))
    );
    // Deleted before any outcome: a late outcome does not bring it back.
    let gone = one(&a, b"gone").await;
    let claim = claim_eventually(&b, gone).await;
    assert_eq!(a.delete(gone).await.unwrap(), State::Queued);
    b.finish(claim, Some(&attempt(200)), Outcome::Delivered)
        .await
        .unwrap();
    assert!(
        c.status(gone).await.unwrap().is_none(),
        "deleted stays deleted"
    );
}
