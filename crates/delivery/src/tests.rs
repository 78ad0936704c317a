//! The delivery loop against a scripted courier: no network, real spool on disk.

use super::*;
use spool::Spool;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;

/// A courier whose messages name their destination and the status it answers, e.g. `slow 200`.
/// Destination `slow` blocks until the test opens the gate.
struct Script {
    policy: Arc<Policy>,
    gate: watch::Receiver<bool>,
    now: Mutex<HashMap<String, usize>>,
    peak: Mutex<HashMap<String, usize>>,
    sent: AtomicUsize,
    observed: Mutex<Vec<(String, Finished)>>,
    /// Destinations whose attempts were refused at send time, as observed.
    refused: Mutex<Vec<String>>,
    /// Destinations held (paused): their messages are given back without an attempt.
    paused: Mutex<Vec<String>>,
    held: AtomicUsize,
}

impl Courier for Script {
    type Payload = (String, u16);

    fn prepare(&self, _key: Key, file: Vec<u8>) -> Result<Ready<(String, u16)>, Refused> {
        let text = String::from_utf8(file).unwrap();
        let (dest, status) = text.split_once(' ').unwrap();
        if dest == "broken" {
            return Err(Refused {
                target: "x".into(),
                error: "route gone".into(),
                permanent: true,
                policy: None,
            });
        }
        Ok(Ready {
            destination: dest.into(),
            policy: self.policy.clone(),
            payload: (dest.to_owned(), status.parse().unwrap()),
        })
    }

    async fn send(&self, (dest, status): (String, u16)) -> Result<Sent, Refused> {
        if dest == "refuse" {
            return Err(Refused {
                target: "http://refuse.example/in".into(),
                error: "refused at send".into(),
                permanent: false,
                policy: None,
            });
        }
        {
            let mut now = self.now.lock().unwrap();
            let n = now.entry(dest.clone()).or_default();
            *n += 1;
            let mut peak = self.peak.lock().unwrap();
            let p = peak.entry(dest.clone()).or_default();
            *p = (*p).max(*n);
        }
        if dest == "slow" {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        *self.now.lock().unwrap().get_mut(&dest).unwrap() -= 1;
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(Sent {
            target: dest,
            status: Some(status),
            error: None,
            retry_after: None,
            excerpt: String::new(),
        })
    }

    fn hold(&self, _key: Key, (dest, _): &(String, u16)) -> Option<u64> {
        if !self.paused.lock().unwrap().contains(dest) {
            return None;
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        Some(now_ms() + 10)
    }

    fn observe(&self, _key: Key, reach: Reach<'_>, _attempt: &Attempt, outcome: &Finished) {
        if let Reach::Refused(d) = reach {
            self.refused.lock().unwrap().push(d.to_owned());
        }
        self.observed.lock().unwrap().push((
            reach.destination().unwrap_or("").to_owned(),
            outcome.clone(),
        ));
    }
}

struct Check {
    _dir: tempfile::TempDir,
    spool: Spool,
    script: Arc<Script>,
    open_gate: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    engine: Option<tokio::task::JoinHandle<()>>,
}

fn check(max_attempts: Option<u32>) -> Check {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        dir.path(),
        spool::Options {
            fsync: false,
            ..Default::default()
        },
    )
    .unwrap();
    let (open_gate, gate) = watch::channel(false);
    let policy = Policy::try_new(
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_secs(3600),
        max_attempts,
        vec![410],
    )
    .unwrap();
    let script = Arc::new(Script {
        policy: Arc::new(policy),
        gate,
        now: Mutex::default(),
        peak: Mutex::default(),
        sent: AtomicUsize::new(0),
        observed: Mutex::default(),
        refused: Mutex::default(),
        paused: Mutex::default(),
        held: AtomicUsize::new(0),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        concurrency: 8,
        per_destination: 2,
        grace: Duration::from_secs(5),
    };
    let engine = tokio::spawn(run(spool.clone(), script.clone(), limits, async {
        let _ = stopped.await;
    }));
    Check {
        _dir: dir,
        spool,
        script,
        open_gate,
        stop: Some(stop),
        engine: Some(engine),
    }
}

impl Check {
    async fn put(&self, text: &str) -> spool::Key {
        self.spool
            .enqueue(Spool::new_id(), 1, text.as_bytes().to_vec())
            .await
            .unwrap()[0]
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&Check) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn state(&self, key: spool::Key) -> spool::State {
        self.spool.locate(key).unwrap().state
    }

    /// Stops the loop and waits for its drain; the spool directory lives on in the result.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.engine.take().unwrap().await.unwrap();
        self._dir
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_does_not_hold_up_the_others() {
    let c = check(None);
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(c.put("slow 200").await);
    }
    let mut fast = Vec::new();
    for _ in 0..30 {
        fast.push(c.put("fast 200").await);
    }
    c.wait_until("every fast message is delivered", |c| {
        fast.iter().all(|k| c.state(*k) == spool::State::Delivered)
    })
    .await;
    assert!(
        slow.iter().all(|k| c.state(*k) != spool::State::Delivered),
        "slow ones are still stuck"
    );
    assert_eq!(
        c.script.peak.lock().unwrap().get("slow"),
        Some(&2),
        "per-destination limit"
    );
    assert!(
        c.script
            .peak
            .lock()
            .unwrap()
            .get("fast")
            .copied()
            .unwrap_or(0)
            <= 2
    );

    c.open_gate.send(true).unwrap();
    c.wait_until("the slow ones arrive too", |c| {
        slow.iter().all(|k| c.state(*k) == spool::State::Delivered)
    })
    .await;
    assert_eq!(
        c.script.sent.load(Ordering::SeqCst),
        50,
        "each message sent exactly once"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_die_and_410_dies_at_once() {
    let c = check(Some(3));
    let flaky = c.put("a 500").await;
    let gone = c.put("b 410").await;
    let broken = c.put("broken 200").await;
    c.wait_until("all three are dead", |c| {
        [flaky, gone, broken]
            .iter()
            .all(|k| c.state(*k) == spool::State::Dead)
    })
    .await;
    assert_eq!(
        c.spool.history(flaky).len(),
        3,
        "max_attempts attempts, then dead"
    );
    assert_eq!(c.spool.history(gone).len(), 1, "410 gives up at once");
    let refused = c.spool.history(broken);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].error.as_deref(), Some("route gone"));
    let observed = c.script.observed.lock().unwrap().clone();
    let retries = observed
        .iter()
        .filter(|(d, f)| d == "a" && matches!(f, Finished::Retry { .. }))
        .count();
    assert_eq!(retries, 2);
    assert!(observed.iter().any(|(d, f)| d == "b"
        && *f
            == Finished::Dead {
                reason: "status 410 is listed in retry.give_up_on".into()
            }));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_at_send_is_retried_by_the_ready_policy_and_frees_its_slot() {
    let c = check(Some(2));
    let mut keys = Vec::new();
    // More than the destination's two slots: each refusal must give its slot back.
    for _ in 0..3 {
        keys.push(c.put("refuse 200").await);
    }
    let unprepared = c.put("broken 200").await;
    c.wait_until("all are dead", |c| {
        keys.iter()
            .chain([&unprepared])
            .all(|k| c.state(*k) == spool::State::Dead)
    })
    .await;
    for key in &keys {
        let attempts = c.spool.history(*key);
        assert_eq!(
            attempts.len(),
            2,
            "a retry by the policy, then max_attempts"
        );
        assert_eq!(attempts[0].error.as_deref(), Some("refused at send"));
        assert_eq!(attempts[0].target, "http://refuse.example:80");
    }
    assert_eq!(c.script.sent.load(Ordering::SeqCst), 0);
    assert_eq!(*c.script.refused.lock().unwrap(), vec!["refuse"; 6]);
    let observed = c.script.observed.lock().unwrap().clone();
    assert!(
        observed.iter().any(|(d, _)| d.is_empty()),
        "a refusal in prepare has no destination"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_unfinished_work_queued() {
    let c = check(None);
    let stuck = c.put("slow 200").await;
    c.wait_until("the attempt has started", |c| {
        c.script.now.lock().unwrap().get("slow") == Some(&1)
    })
    .await;
    let spool = c.spool.clone();
    // Grace is 5 s; open the gate so the in-flight attempt can finish during the drain.
    let gate = c.open_gate.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = gate.send(true);
    });
    let _dir = c.stop().await;
    assert_eq!(
        spool.locate(stuck).unwrap().state,
        spool::State::Delivered,
        "in-flight work finishes in the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counts_attempts_being_sent_not_messages_waiting_for_a_slot() {
    let c = check(None);
    for _ in 0..20 {
        c.put("slow 200").await;
    }
    // Two attempts hang at the destination (its limit); the other 18 are claimed but parked,
    // waiting for a slot: they are still queued, and counted once.
    let expected = spool::Counts {
        queued: 18,
        retrying: 0,
        in_flight: 2,
    };
    c.wait_until("two attempts are in flight and eighteen queued", |c| {
        c.spool.counts() == expected
    })
    .await;
    assert_eq!(c.script.now.lock().unwrap().get("slow"), Some(&2));
    c.open_gate.send(true).unwrap();
    c.wait_until("everything is delivered", |c| {
        c.spool.counts() == spool::Counts::default()
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_waits_without_an_attempt_and_goes_once_released() {
    let c = check(Some(1));
    c.script.paused.lock().unwrap().push("paused".into());
    // More than the destination's two slots, so held messages also come through the wait queue.
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(c.put("paused 200").await);
    }
    let other = c.put("other 200").await;
    c.wait_until(
        "every held message was held a few times, the other delivered",
        |c| c.script.held.load(Ordering::SeqCst) >= 20 && c.state(other) == spool::State::Delivered,
    )
    .await;
    for key in &keys {
        assert!(
            c.spool.attempts(*key).await.unwrap().is_empty(),
            "a hold is not an attempt"
        );
        assert_ne!(
            c.state(*key),
            spool::State::Dead,
            "max_attempts 1 is not used up"
        );
    }
    assert_eq!(
        c.script.sent.load(Ordering::SeqCst),
        1,
        "only the other one was sent"
    );
    c.script.paused.lock().unwrap().clear();
    c.wait_until("the held ones are delivered once released", |c| {
        keys.iter().all(|k| c.state(*k) == spool::State::Delivered)
    })
    .await;
    for key in &keys {
        assert_eq!(c.spool.attempts(*key).await.unwrap().len(), 1);
    }
    assert_eq!(c.script.sent.load(Ordering::SeqCst), 6);
    c.stop().await;
}
