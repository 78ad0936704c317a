//! The conformance suite (feature `testing`): the contract of [`Storage`] and [`Records`] as
//! tests, run against any implementation, so that every backend is held to the same behaviour
//! the daemons rely on.
//!
//! A backend's tests call [`storage`] and [`records`] with a function that makes a fresh, empty
//! store (a new directory, a new stream and bucket):
//!
//! ```ignore
//! #[tokio::test]
//! async fn conforms() {
//!     let dirs = Dirs::new();
//!     storage::conformance::storage(|| async { open(dirs.fresh()) }).await;
//! }
//! ```
//!
//! Each check panics with what broke. What only a backend can test (a crash at any instant, a
//! failing disk, a cluster losing quorum) stays in its own tests.

use std::future::Future;
use std::time::Duration;

use ulid::Ulid;

use crate::{
    now_ms, Attempt, ChangeError, Claimed, Counts, Key, Outcome, RecordError, Records,
    RequeueError, State, Storage,
};

/// Far enough ahead that nothing scheduled then is due during a test.
const LATER_MS: u64 = 3_600_000;

/// A retry that a check waits for: near enough to wait for in real time, since a backend may
/// keep its schedule on a server's clock (JetStream redelivers a NAK'd message after its delay),
/// where a `now_ms` ahead of the clock cannot make it due sooner.
const SOON_MS: u64 = 1_500;

/// How long a check waits for something that must happen at once.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs every [`Storage`] check, each on a fresh store from `fresh`.
pub async fn storage<S, F, Fut>(mut fresh: F)
where
    S: Storage,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    enqueued_messages_are_queued_and_read_back(fresh().await).await;
    copies_are_separate_messages(fresh().await).await;
    a_claim_is_exclusive_until_released(fresh().await).await;
    outcomes_move_messages_and_keep_attempts(fresh().await).await;
    retries_are_due_at_their_time(fresh().await).await;
    dead_messages_are_requeued_with_a_fresh_budget(fresh().await).await;
    operators_retry_and_delete(fresh().await).await;
    dead_letters_are_purged(fresh().await).await;
    counts_and_gauges_follow_the_queue(fresh().await).await;
}

/// Runs every [`Records`] check, each on a fresh store from `fresh`.
pub async fn records<R, F, Fut>(mut fresh: F)
where
    R: Records,
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
{
    records_are_put_got_listed_and_deleted(fresh().await).await;
    record_names_are_checked(fresh().await).await;
    a_record_is_created_once(fresh().await).await;
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

async fn put<S: Storage>(s: &S, content: &str) -> Key {
    let keys = s
        .enqueue(Ulid::new(), 1, content.as_bytes().to_vec())
        .await
        .expect("enqueue");
    assert_eq!(keys.len(), 1, "one copy, one key");
    keys[0]
}

/// Records a failed attempt of `c`, to retry [`LATER_MS`] from now; returns that time.
async fn fail_until_later<S: Storage>(s: &S, c: S::Claim) -> u64 {
    let due = now_ms() + LATER_MS;
    s.finish(c, Some(&attempt(503)), Outcome::Retry { due_ms: due })
        .await
        .expect("finish");
    due
}

async fn state<S: Storage>(s: &S, key: Key) -> Option<State> {
    s.status(key).await.expect("status").map(|st| st.state)
}

/// Claims `key`, which must be due at `now`, releasing whatever else was claimed.
async fn claim<S: Storage>(s: &S, key: Key, now: u64) -> S::Claim {
    let mut found = None;
    for c in s.claim_due(now, usize::MAX).await {
        if c.key() == key && found.is_none() {
            found = Some(c);
        } else {
            s.release(c).await;
        }
    }
    found.unwrap_or_else(|| panic!("{key} is not claimable at {now}"))
}

/// Claims `key`, retrying at `due_ms`, as soon as it is handed out at the real time; checks it
/// was not handed out before `due_ms`.
async fn claim_when_due<S: Storage>(s: &S, key: Key, due_ms: u64) -> S::Claim {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = now_ms();
        for c in s.claim_due(now, usize::MAX).await {
            if c.key() == key {
                assert!(
                    now >= due_ms,
                    "{key} handed out at {now}, before its due {due_ms}"
                );
                return c;
            }
            s.release(c).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} due at {due_ms} not handed out by {}",
            now_ms()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn enqueued_messages_are_queued_and_read_back<S: Storage>(s: S) {
    let id = Ulid::new();
    let keys = s.enqueue(id, 1, b"hello".to_vec()).await.expect("enqueue");
    assert_eq!(
        keys,
        vec![Key::new(id, 0)],
        "a single copy is keyed by its id"
    );
    let key = keys[0];
    let status = s.status(key).await.expect("status").expect("known");
    assert_eq!(
        (status.key, status.state, status.attempts),
        (key, State::Queued, 0)
    );
    assert!(
        status.next_attempt_ms.is_some(),
        "a queued message has a next attempt"
    );
    assert_eq!(
        s.message(key, usize::MAX).await.expect("message"),
        Some(b"hello".to_vec())
    );
    assert_eq!(
        s.message(key, 2).await.expect("message"),
        Some(b"he".to_vec())
    );
    assert_eq!(s.attempts(key).await.expect("attempts"), vec![]);
    let unknown = Key::new(Ulid::new(), 0);
    assert_eq!(s.status(unknown).await.expect("status"), None);
    assert_eq!(s.message(unknown, usize::MAX).await.expect("message"), None);
    assert_eq!(s.copies(unknown).await.expect("copies"), vec![]);
    assert_eq!(s.copies(key).await.expect("copies"), vec![key]);

    let c = claim(&s, key, now_ms()).await;
    assert_eq!((c.key(), c.attempts()), (key, 0));
    assert!(c.since_ms() <= now_ms(), "the budget starts at arrival");
    assert_eq!(s.read(&c).await.expect("read"), b"hello");
    assert!(s.unhealthy_reason().is_none(), "a fresh store is ready");
    let listed = s.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key, listed[0].state), (key, State::Queued));
    s.release(c).await;
}

async fn copies_are_separate_messages<S: Storage>(s: S) {
    let id = Ulid::new();
    let keys = s.enqueue(id, 3, b"fan".to_vec()).await.expect("enqueue");
    let expected: Vec<Key> = (1..=3).map(|n| Key::new(id, n)).collect();
    assert_eq!(keys, expected, "copies are keyed id.1 to id.N");
    assert_eq!(s.copies(Key::new(id, 0)).await.expect("copies"), expected);
    let claimed = s.claim_due(now_ms(), usize::MAX).await;
    assert_eq!(claimed.len(), 3, "each copy is claimed on its own");
    let mut claimed = claimed.into_iter();
    let first = claimed.next().expect("a claim");
    let first_key = first.key();
    assert_eq!(s.read(&first).await.expect("read"), b"fan");
    s.finish(first, Some(&attempt(200)), Outcome::Delivered)
        .await
        .expect("finish");
    for c in claimed {
        assert_eq!(
            state(&s, c.key()).await,
            Some(State::Queued),
            "its own state"
        );
        s.release(c).await;
    }
    assert_eq!(state(&s, first_key).await, Some(State::Delivered));
    assert_eq!(
        s.copies(first_key).await.expect("copies"),
        vec![first_key],
        "a copy's key names that copy alone"
    );
}

async fn a_claim_is_exclusive_until_released<S: Storage>(s: S) {
    let key = put(&s, "one").await;
    let c = claim(&s, key, now_ms()).await;
    assert!(
        s.claim_due(now_ms() + LATER_MS, usize::MAX)
            .await
            .is_empty(),
        "a claimed message is handed to no one else"
    );
    s.release(c).await;
    let again = claim(&s, key, now_ms()).await;
    assert_eq!(again.attempts(), 0, "a release counts no attempt");
    s.release(again).await;
    // At most `max` at once.
    put(&s, "two").await;
    let one = s.claim_due(now_ms(), 1).await;
    assert_eq!(one.len(), 1, "claim_due hands out at most max");
    for c in one {
        s.release(c).await;
    }
}

async fn outcomes_move_messages_and_keep_attempts<S: Storage>(s: S) {
    let delivered = put(&s, "a").await;
    let dead = put(&s, "b").await;
    let c = claim(&s, delivered, now_ms()).await;
    let sent = attempt(204);
    s.finish(c, Some(&sent), Outcome::Delivered)
        .await
        .expect("finish");
    let status = s.status(delivered).await.expect("status").expect("known");
    assert_eq!((status.state, status.attempts), (State::Delivered, 1));
    assert_eq!(status.next_attempt_ms, None, "nothing more to attempt");
    assert_eq!(s.attempts(delivered).await.expect("attempts"), vec![sent]);
    assert_eq!(
        s.message(delivered, 1).await.expect("message"),
        Some(b"a".to_vec()),
        "a delivered message is kept for its history"
    );

    let c = claim(&s, dead, now_ms()).await;
    s.finish(c, Some(&attempt(410)), Outcome::Dead)
        .await
        .expect("finish");
    assert_eq!(state(&s, dead).await, Some(State::Dead));
    assert!(
        s.claim_due(now_ms() + LATER_MS, usize::MAX)
            .await
            .is_empty(),
        "finished messages are never claimed"
    );
    let listed = s.list().await.expect("list");
    let states: Vec<(Key, State)> = listed.iter().map(|l| (l.key, l.state)).collect();
    let mut expected = vec![(delivered, State::Delivered), (dead, State::Dead)];
    expected.sort_by_key(|(k, _)| *k);
    assert_eq!(states, expected, "each message once, in key order");
    let dead_listed = listed.iter().find(|l| l.key == dead).expect("listed");
    assert_eq!(dead_listed.last_error.as_deref(), Some("status 410"));
}

async fn retries_are_due_at_their_time<S: Storage>(s: S) {
    let key = put(&s, "later").await;
    let c = claim(&s, key, now_ms()).await;
    let since = c.since_ms();
    let due = now_ms() + SOON_MS;
    s.finish(c, Some(&attempt(503)), Outcome::Retry { due_ms: due })
        .await
        .expect("finish");
    let status = s.status(key).await.expect("status").expect("known");
    assert_eq!((status.state, status.attempts), (State::Retrying, 1));
    assert_eq!(status.next_attempt_ms, Some(due));
    let next = s.next_due_ms().expect("a next due time");
    assert!(
        (due..due + 1_000).contains(&next),
        "the next due time is the retry's, or a little after: {next} for {due}"
    );
    assert!(
        s.claim_due(due - 1, usize::MAX).await.is_empty(),
        "a retry is not handed out before it is due"
    );
    let c = claim_when_due(&s, key, due).await;
    assert_eq!(c.attempts(), 1, "the attempt count survives the retry");
    assert_eq!(c.since_ms(), since, "and so does the retry budget");
    s.finish(c, Some(&attempt(200)), Outcome::Delivered)
        .await
        .expect("finish");
    assert_eq!(s.attempts(key).await.expect("attempts").len(), 2);
    assert_eq!(s.next_due_ms(), None, "nothing left to do");
}

async fn dead_messages_are_requeued_with_a_fresh_budget<S: Storage>(s: S) {
    let key = put(&s, "again").await;
    assert!(
        matches!(s.requeue(key).await, Err(RequeueError::NotDead(k)) if k == key),
        "only a dead message is re-queued"
    );
    let c = claim(&s, key, now_ms()).await;
    s.finish(c, Some(&attempt(500)), Outcome::Dead)
        .await
        .expect("finish");
    let before = now_ms();
    s.requeue(key).await.expect("requeue");
    let status = s.status(key).await.expect("status").expect("known");
    assert_eq!(status.state, State::Retrying);
    // Due now, handed out at most a little late.
    let c = claim(&s, key, now_ms() + 1_000).await;
    assert_eq!(c.attempts(), 0, "a re-queue starts the count again");
    assert!(c.since_ms() >= before, "and the retry budget");
    s.release(c).await;
    assert_eq!(
        s.attempts(key).await.expect("attempts").len(),
        1,
        "history is kept across a re-queue"
    );
    let unknown = Key::new(Ulid::new(), 0);
    assert!(matches!(
        s.requeue(unknown).await,
        Err(RequeueError::NotDead(_))
    ));
}

async fn operators_retry_and_delete<S: Storage>(s: S) {
    // Retry now: a retrying message becomes due now, keeping its count.
    let key = put(&s, "op").await;
    let c = claim(&s, key, now_ms()).await;
    fail_until_later(&s, c).await;
    s.retry_now(key).await.expect("retry now");
    let c = claim(&s, key, now_ms() + 1_000).await;
    assert_eq!(c.attempts(), 1, "retry now keeps the count");
    // While it is claimed, an operator's change is refused.
    assert!(matches!(s.retry_now(key).await, Err(ChangeError::InFlight(k)) if k == key));
    assert!(matches!(s.delete(key).await, Err(ChangeError::InFlight(k)) if k == key));
    s.finish(c, Some(&attempt(200)), Outcome::Delivered)
        .await
        .expect("finish");
    assert!(matches!(s.retry_now(key).await, Err(ChangeError::Delivered(k)) if k == key));

    // A queued message is due already; a dead one is re-queued.
    let queued = put(&s, "queued").await;
    s.retry_now(queued)
        .await
        .expect("retry now of a queued message");
    assert_eq!(state(&s, queued).await, Some(State::Queued));
    let dead = put(&s, "dead").await;
    let c = claim(&s, dead, now_ms()).await;
    s.finish(c, Some(&attempt(410)), Outcome::Dead)
        .await
        .expect("finish");
    s.retry_now(dead)
        .await
        .expect("retry now of a dead message");
    assert_eq!(state(&s, dead).await, Some(State::Retrying));

    // Delete works in every state but in flight, and says which it was.
    assert_eq!(s.delete(key).await.expect("delete"), State::Delivered);
    assert_eq!(s.delete(queued).await.expect("delete"), State::Queued);
    assert_eq!(s.delete(dead).await.expect("delete"), State::Retrying);
    for gone in [key, queued, dead] {
        assert_eq!(state(&s, gone).await, None, "{gone} is gone");
        assert!(matches!(s.delete(gone).await, Err(ChangeError::NotFound(k)) if k == gone));
        assert!(matches!(s.retry_now(gone).await, Err(ChangeError::NotFound(k)) if k == gone));
    }
    assert!(
        s.claim_due(now_ms() + LATER_MS, usize::MAX)
            .await
            .is_empty(),
        "deleted messages are not delivered"
    );
}

async fn dead_letters_are_purged<S: Storage>(s: S) {
    let mut dead = Vec::new();
    for n in 0..3 {
        let key = put(&s, &format!("dead {n}")).await;
        let c = claim(&s, key, now_ms()).await;
        s.finish(c, Some(&attempt(410)), Outcome::Dead)
            .await
            .expect("finish");
        dead.push(key);
    }
    let alive = put(&s, "alive").await;
    assert_eq!(s.purge_dead().await.expect("purge"), 3);
    for key in dead {
        assert_eq!(state(&s, key).await, None);
    }
    assert_eq!(
        state(&s, alive).await,
        Some(State::Queued),
        "only dead/ is purged"
    );
    assert_eq!(s.purge_dead().await.expect("purge"), 0);
    assert_eq!(
        s.prune(Duration::from_secs(3600)).await.expect("prune"),
        0,
        "nothing is older than the retention"
    );
}

async fn counts_and_gauges_follow_the_queue<S: Storage>(s: S) {
    assert_eq!(s.counts(), Counts::default());
    assert_eq!(s.oldest_age(), None);
    assert_eq!(s.next_due_ms(), None);
    let key = put(&s, "counted").await;
    tokio::time::timeout(DEADLINE, s.changed())
        .await
        .expect("an enqueue wakes the delivery loop");
    assert!(
        s.next_due_ms().is_some_and(|due| due <= now_ms()),
        "new is due at once"
    );
    assert!(s.oldest_age().is_some());
    assert_eq!(
        s.counts(),
        Counts {
            queued: 1,
            retrying: 0,
            in_flight: 0
        }
    );
    let c = claim(&s, key, now_ms()).await;
    let sending = s.sending(&c);
    assert_eq!(
        s.counts(),
        Counts {
            queued: 0,
            retrying: 0,
            in_flight: 1
        }
    );
    drop(sending);
    let due = now_ms() + SOON_MS;
    s.finish(c, Some(&attempt(503)), Outcome::Retry { due_ms: due })
        .await
        .expect("finish");
    assert_eq!(
        s.counts(),
        Counts {
            queued: 0,
            retrying: 1,
            in_flight: 0
        }
    );
    let c = claim_when_due(&s, key, due).await;
    s.release(c).await;
    tokio::time::timeout(DEADLINE, s.changed())
        .await
        .expect("a release wakes the delivery loop");
    let c = claim(&s, key, now_ms()).await;
    s.finish(c, Some(&attempt(200)), Outcome::Delivered)
        .await
        .expect("finish");
    assert_eq!(
        s.counts(),
        Counts::default(),
        "delivered messages are not counted"
    );
    assert_eq!(s.oldest_age(), None);
}

async fn records_are_put_got_listed_and_deleted<R: Records>(r: R) {
    assert_eq!(r.get("targets", "a").await.expect("get"), None);
    assert_eq!(r.list("targets").await.expect("list"), vec![]);
    r.put("targets", "b", b"{\"n\":2}".to_vec())
        .await
        .expect("put");
    r.put("targets", "a", b"{\"n\":1}".to_vec())
        .await
        .expect("put");
    r.put("filters", "a", b"{}".to_vec()).await.expect("put");
    assert_eq!(
        r.get("targets", "a").await.expect("get"),
        Some(b"{\"n\":1}".to_vec())
    );
    r.put("targets", "a", b"{\"n\":3}".to_vec())
        .await
        .expect("put replaces");
    assert_eq!(
        r.list("targets").await.expect("list"),
        vec![
            ("a".to_owned(), b"{\"n\":3}".to_vec()),
            ("b".to_owned(), b"{\"n\":2}".to_vec()),
        ],
        "by key, this namespace only"
    );
    assert!(r.delete("targets", "a").await.expect("delete"));
    assert!(
        !r.delete("targets", "a").await.expect("delete"),
        "already gone"
    );
    assert_eq!(r.get("targets", "a").await.expect("get"), None);
    assert_eq!(
        r.get("filters", "a").await.expect("get"),
        Some(b"{}".to_vec())
    );
    assert_eq!(r.list("nothing").await.expect("list"), vec![]);
}

async fn record_names_are_checked<R: Records>(r: R) {
    for bad in ["", "..", ".hidden", "a/b", "a b", "ü", &"x".repeat(129)] {
        assert!(
            matches!(
                r.put("targets", bad, vec![]).await,
                Err(RecordError::BadName(_))
            ),
            "{bad:?} as a key"
        );
        assert!(
            matches!(r.get(bad, "a").await, Err(RecordError::BadName(_))),
            "{bad:?} as a namespace"
        );
    }
    r.put("ok_ns", "Key-1.json", vec![1]).await.expect("a name");
    assert_eq!(
        r.get("ok_ns", "Key-1.json").await.expect("get"),
        Some(vec![1])
    );
}

async fn a_record_is_created_once<R: Records>(r: R) {
    assert!(
        matches!(
            r.create("keys", ".bad", vec![]).await,
            Err(RecordError::BadName(_))
        ),
        "create checks names"
    );
    // Several creates of one record at the same moment: exactly one wins, and its value stays.
    let racers: Vec<_> = (0u8..8)
        .map(|n| {
            let r = r.clone();
            tokio::spawn(async move { (n, r.create("keys", "k1", vec![n]).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        let (n, created) = racer.await.expect("a racer");
        if created.expect("create") {
            winners.push(n);
        }
    }
    assert_eq!(winners.len(), 1, "one create wins: {winners:?}");
    assert_eq!(
        r.get("keys", "k1").await.expect("get"),
        Some(vec![winners[0]]),
        "the winner's value stays"
    );
    assert!(
        !r.create("keys", "k1", vec![9]).await.expect("create"),
        "an existing record is not created again"
    );
    assert_eq!(
        r.list("keys").await.expect("list"),
        vec![("k1".to_owned(), vec![winners[0]])],
        "nothing else is left behind"
    );
    assert!(r.delete("keys", "k1").await.expect("delete"));
    assert!(
        r.create("keys", "k1", vec![7]).await.expect("create"),
        "a deleted record can be created again"
    );
}
