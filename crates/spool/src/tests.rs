//! Unit tests of every spool operation against a real directory.

use super::*;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::AtomicBool;

struct Check {
    _dir: tempfile::TempDir,
    root: PathBuf,
    spool: Spool,
}

fn check() -> Check {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let spool = Spool::open(&root, Options::default()).unwrap();
    Check {
        _dir: dir,
        root,
        spool,
    }
}

impl Check {
    fn names(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    async fn put(&self, body: &str) -> Key {
        let keys = self
            .spool
            .enqueue(Spool::new_id(), 1, body.as_bytes().to_vec())
            .await
            .unwrap();
        keys[0]
    }

    fn reopen(self) -> Check {
        let Check { _dir, root, spool } = self;
        drop(spool);
        let spool = Spool::open(&root, Options::default()).unwrap();
        Check { _dir, root, spool }
    }
}

fn attempt(status: Option<u16>, error: Option<&str>) -> Attempt {
    Attempt {
        at_ms: now_ms(),
        target: "http://127.0.0.1:1/x".into(),
        status,
        error: error.map(str::to_owned),
        duration_ms: 3,
        excerpt: String::new(),
    }
}

#[tokio::test]
async fn enqueue_writes_the_file_into_new() {
    let c = check();
    let key = c.put("POST / HTTP/1.1\r\n\r\n").await;
    assert_eq!(c.names("new"), vec![key.to_string()]);
    assert!(c.names("tmp").is_empty());
    assert_eq!(
        fs::read(c.root.join("new").join(key.to_string())).unwrap(),
        b"POST / HTTP/1.1\r\n\r\n"
    );
    assert_eq!(
        c.spool.counts(),
        Counts {
            queued: 1,
            retrying: 0,
            in_flight: 0
        }
    );
    let status = c.spool.locate(key).unwrap();
    assert_eq!(status.state, State::Queued);
    assert_eq!(status.attempts, 0);
    assert!(c
        .spool
        .oldest_age()
        .is_some_and(|age| age < Duration::from_secs(3600)));
}

#[tokio::test]
async fn fan_out_copies_share_one_file() {
    let c = check();
    let id = Spool::new_id();
    let keys = c.spool.enqueue(id, 3, b"body".to_vec()).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        vec![format!("{id}.1"), format!("{id}.2"), format!("{id}.3")]
    );
    assert_eq!(c.names("new").len(), 3);
    let meta = fs::metadata(c.root.join("new").join(keys[0].to_string())).unwrap();
    assert_eq!(meta.nlink(), 3, "copies are hard links, not 3 writes");
    assert_eq!(c.spool.counts().queued, 3);
}

#[tokio::test]
async fn claim_read_retry_deliver() {
    let c = check();
    let key = c.put("hello").await;
    let claims = c.spool.claim_due(now_ms(), 10);
    assert_eq!(claims.len(), 1);
    assert!(
        c.spool.claim_due(now_ms(), 10).is_empty(),
        "a claim is handed out once"
    );
    let claim = claims.into_iter().next().unwrap();
    assert_eq!(claim.key, key);
    assert_eq!(c.spool.read(&claim).unwrap(), b"hello");
    // Claimed is not yet in flight: only while an attempt is out, and then not also queued.
    assert_eq!(c.spool.counts().in_flight, 0);
    let sending = c.spool.sending(&claim);
    let one_out = Counts {
        queued: 0,
        retrying: 0,
        in_flight: 1,
    };
    assert_eq!(c.spool.counts(), one_out);
    drop(sending);
    assert_eq!(c.spool.counts().queued, 1);

    let due = now_ms() + 60_000;
    c.spool
        .finish(
            claim,
            Some(&attempt(Some(503), None)),
            Outcome::Retry { due_ms: due },
        )
        .await
        .unwrap();
    assert!(c.names("new").is_empty());
    let cur = c.names("cur");
    assert_eq!(cur.len(), 1);
    let parsed = CurName::parse(&cur[0]).unwrap();
    assert_eq!((parsed.key, parsed.attempts, parsed.due_ms), (key, 1, due));
    assert_eq!(parsed.since_ms, key.arrived_ms());
    assert!(c.spool.claim_due(now_ms(), 10).is_empty(), "not due yet");
    assert_eq!(c.spool.next_due_ms(), Some(due.div_ceil(100) * 100));
    let status = c.spool.locate(key).unwrap();
    assert_eq!((status.state, status.attempts), (State::Retrying, 1));
    assert_eq!(status.next_attempt_ms, Some(due));

    // Due times are rounded up to 100 ms buckets: never early, at most a bucket late.
    let claim = c.spool.claim_due(due + 100, 10).pop().unwrap();
    assert_eq!(claim.attempts, 1);
    assert_eq!(
        c.spool.read(&claim).unwrap(),
        b"hello",
        "the file is found under its cur name"
    );
    c.spool
        .finish(claim, Some(&attempt(Some(204), None)), Outcome::Delivered)
        .await
        .unwrap();
    assert!(c.names("cur").is_empty());
    assert_eq!(c.names("done"), vec![key.to_string()]);
    let status = c.spool.locate(key).unwrap();
    assert_eq!((status.state, status.attempts), (State::Delivered, 2));
    let history = c.spool.history(key);
    assert_eq!(
        history.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![Some(503), Some(204)]
    );
    assert_eq!(c.spool.counts(), Counts::default());
    assert_eq!(c.spool.oldest_age(), None, "nothing left to deliver");
}

#[tokio::test]
async fn dead_letter_and_requeue() {
    let c = check();
    let key = c.put("x").await;
    let claim = c.spool.claim_due(now_ms(), 1).pop().unwrap();
    c.spool
        .finish(claim, Some(&attempt(Some(410), None)), Outcome::Dead)
        .await
        .unwrap();
    assert_eq!(c.names("dead"), vec![key.to_string()]);
    assert_eq!(c.spool.locate(key).unwrap().state, State::Dead);
    let (listed, _) = offline::find(&c.root, key).unwrap().unwrap();
    assert_eq!(listed.last_error.as_deref(), Some("status 410"));

    c.spool.requeue(key).await.unwrap();
    assert!(c.names("dead").is_empty());
    let status = c.spool.locate(key).unwrap();
    assert_eq!((status.state, status.attempts), (State::Retrying, 0));
    let claim = c
        .spool
        .claim_due(now_ms() + 100, 1)
        .pop()
        .expect("requeued is due now");
    assert_eq!(claim.key, key);
    assert!(
        claim.since_ms >= key.arrived_ms(),
        "a requeue starts a fresh retry budget"
    );

    let err = c.spool.requeue(key).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{key} is not a dead message"));
}

#[tokio::test]
async fn release_gives_a_claim_back() {
    let c = check();
    let key = c.put("x").await;
    let claim = c.spool.claim_due(now_ms(), 1).pop().unwrap();
    c.spool.release(claim);
    assert_eq!(c.spool.counts().in_flight, 0);
    assert_eq!(c.spool.claim_due(now_ms(), 1).pop().unwrap().key, key);
}

#[tokio::test]
async fn reopen_rebuilds_the_schedule_and_clears_tmp() {
    let c = check();
    let fresh = c.put("fresh").await;
    let retrying = c.put("retrying").await;
    let dead = c.put("dead").await;
    for claim in c.spool.claim_due(now_ms(), 10) {
        let outcome = if claim.key == retrying {
            Outcome::Retry {
                due_ms: now_ms() + 3_600_000,
            }
        } else if claim.key == dead {
            Outcome::Dead
        } else {
            c.spool.release(claim);
            continue;
        };
        c.spool
            .finish(
                claim,
                Some(&attempt(None, Some("connection refused"))),
                outcome,
            )
            .await
            .unwrap();
    }
    fs::write(c.root.join("tmp").join("half-written"), b"POST / HT").unwrap();
    fs::write(c.root.join("new").join("not-a-key"), b"x").unwrap();

    let c = c.reopen();
    assert!(
        c.names("tmp").is_empty(),
        "unacknowledged leftovers are cleared"
    );
    assert_eq!(
        c.spool.counts(),
        Counts {
            queued: 1,
            retrying: 1,
            in_flight: 0
        }
    );
    assert_eq!(c.spool.locate(fresh).unwrap().state, State::Queued);
    let r = c.spool.locate(retrying).unwrap();
    assert_eq!((r.state, r.attempts), (State::Retrying, 1));
    assert_eq!(c.spool.locate(dead).unwrap().state, State::Dead);
    let due: Vec<Key> = c
        .spool
        .claim_due(now_ms(), 10)
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(due, vec![fresh]);
}

#[tokio::test]
async fn a_second_owner_is_refused_naming_the_holder() {
    let c = check();
    let err = Spool::open(&c.root, Options::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "spool {} is locked by another process (pid {})",
            c.root.display(),
            std::process::id()
        )
    );
    let c = c.reopen();
    assert!(c.spool.unhealthy_reason().is_none());
}

#[tokio::test]
async fn failed_flush_refuses_the_message_and_keeps_nothing() {
    let c = check();
    c.spool.inject_sync_failures(1);
    let err = c
        .spool
        .enqueue(Spool::new_id(), 1, b"lost?".to_vec())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("fsync file data: Input/output error"),
        "{err}"
    );
    assert!(c.names("new").is_empty());
    assert!(c.names("tmp").is_empty());
    assert_eq!(c.spool.counts(), Counts::default());
    let reason = c
        .spool
        .unhealthy_reason()
        .expect("unhealthy after a failed flush");
    assert!(reason.contains("fsync file data failed"), "{reason}");

    // The next write that succeeds makes the spool ready again; the failure is not retried.
    c.put("next").await;
    assert!(c.spool.unhealthy_reason().is_none());
    assert_eq!(c.names("new").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_are_grouped_and_all_stored() {
    let c = check();
    let spool = c.spool.clone();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            spool
                .enqueue(Spool::new_id(), 1, format!("m{n}").into_bytes())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.names("new").len(), 200);
    assert_eq!(c.spool.counts().queued, 200);
}

#[tokio::test]
async fn prune_and_purge() {
    let c = check();
    let delivered = c.put("a").await;
    let dead = c.put("b").await;
    for claim in c.spool.claim_due(now_ms(), 10) {
        let outcome = if claim.key == delivered {
            Outcome::Delivered
        } else {
            Outcome::Dead
        };
        c.spool
            .finish(claim, Some(&attempt(Some(200), None)), outcome)
            .await
            .unwrap();
    }
    assert_eq!(
        c.spool.prune_done(Duration::from_secs(3600)).unwrap(),
        0,
        "too young"
    );
    assert_eq!(
        c.spool.prune_done(Duration::ZERO).unwrap(),
        0,
        "ctime is this second"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let logs = c.names("attempts");
    assert!(
        !logs.is_empty() && logs.len() <= 2,
        "one log per second of arrivals: {logs:?}"
    );
    assert_eq!(c.spool.prune_done(Duration::ZERO).unwrap(), 1);
    assert!(c.names("done").is_empty());
    assert_eq!(
        c.spool.history(dead).len(),
        1,
        "a dead message's log stays while it is in dead/"
    );
    assert!(c
        .names("attempts")
        .contains(&format!("{}.jsonl", &dead.to_string()[..8])));
    assert_eq!(c.spool.purge_dead().unwrap(), 1);
    assert!(c.names("dead").is_empty());
    // Nothing uses the logs any more: the next prune takes them.
    c.spool.prune_done(Duration::ZERO).unwrap();
    assert!(c.names("attempts").is_empty());
    assert!(c.spool.locate(delivered).is_none());
}

#[tokio::test]
async fn offline_listing_shows_every_state() {
    let c = check();
    let a = c.put("a").await;
    let b = c.put("b").await;
    let claim = c
        .spool
        .claim_due(now_ms(), 10)
        .into_iter()
        .find(|cl| cl.key == b)
        .unwrap();
    c.spool
        .finish(
            claim,
            Some(&attempt(None, Some("timed out"))),
            Outcome::Retry { due_ms: 42 },
        )
        .await
        .unwrap();
    let seen: Vec<_> = offline::snapshot(&c.root)
        .unwrap()
        .iter()
        .map(|s| offline::describe(&c.root, s))
        .map(|l| (l.key, l.state, l.attempts, l.last_error))
        .collect();
    assert_eq!(
        seen,
        vec![
            (a, State::Queued, 0, None),
            (b, State::Retrying, 1, Some("timed out".to_owned())),
        ]
    );
    // The seam's listing reads each log once, and lists the same.
    let snapshot = offline::snapshot(&c.root).unwrap();
    let all: Vec<_> = offline::describe_all(&c.root, &snapshot)
        .into_iter()
        .map(|l| (l.key, l.state, l.attempts, l.last_error))
        .collect();
    assert_eq!(all, seen);
    let (found, _) = offline::find(&c.root, b).unwrap().unwrap();
    assert_eq!(found.next_attempt_ms, Some(42));
    assert_eq!(offline::attempts(&c.root, b).len(), 1);
}

#[tokio::test]
async fn fsync_off_still_stores() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(
        dir.path(),
        Options {
            fsync: false,
            ..Options::default()
        },
    )
    .unwrap();
    let keys = spool
        .enqueue(Spool::new_id(), 1, b"x".to_vec())
        .await
        .unwrap();
    assert!(dir.path().join("new").join(keys[0].to_string()).exists());
}

#[tokio::test]
async fn a_finished_move_is_flushed_by_the_committer_without_being_waited_for() {
    let c = check();
    let key = c.put("hello").await;
    let claim = c.spool.claim_due(now_ms(), 1).pop().unwrap();
    c.spool
        .finish(claim, Some(&attempt(Some(200), None)), Outcome::Delivered)
        .await
        .unwrap();
    // The rename is done when finish returns; its folders wait for (or are in) a flush.
    assert_eq!(c.names("done"), vec![key.to_string()]);
    c.spool.sync().await.unwrap();
    assert_eq!(
        c.spool.inner.dirty.load(Ordering::Acquire),
        0,
        "sync returns only once no folder awaits a flush"
    );
    // A later enqueue's group flushes what was marked meanwhile, with its own.
    let key2 = c.put("two").await;
    let claim = c.spool.claim_due(now_ms(), 1).pop().unwrap();
    assert_eq!(claim.key, key2);
    c.spool
        .finish(claim, Some(&attempt(Some(200), None)), Outcome::Dead)
        .await
        .unwrap();
    let marked = c.spool.inner.dirty.load(Ordering::Acquire);
    assert!(
        marked == 0 || marked & (Folder::New.bit() | Folder::Dead.bit()) != 0,
        "either flushed already or marked: {marked:#b}"
    );
    c.put("three").await;
    c.spool.sync().await.unwrap();
    assert_eq!(c.spool.inner.dirty.load(Ordering::Acquire), 0);
    assert_eq!(c.names("dead"), vec![key2.to_string()]);
}

#[tokio::test]
async fn messages_of_one_second_share_a_log_and_read_back_only_their_own() {
    let c = check();
    // One id and its fan-out copies, and a second message: all arrive within the same second
    // (or two); every key must read back exactly its own records, `id` not those of `id.1`.
    let id = Spool::new_id();
    let copies = c.spool.enqueue(id, 2, b"fan".to_vec()).await.unwrap();
    let other = c.put("other").await;
    for round in 0..2u16 {
        for claim in c.spool.claim_due(u64::MAX / 2, 10) {
            let status = 500 + round + u16::from(claim.key == copies[1]) * 10;
            c.spool
                .finish(
                    claim,
                    Some(&attempt(Some(status), None)),
                    Outcome::Retry { due_ms: 0 },
                )
                .await
                .unwrap();
        }
    }
    let statuses =
        |key| -> Vec<Option<u16>> { c.spool.history(key).iter().map(|a| a.status).collect() };
    assert_eq!(statuses(copies[0]), vec![Some(500), Some(501)]);
    assert_eq!(statuses(copies[1]), vec![Some(510), Some(511)]);
    assert_eq!(statuses(other), vec![Some(500), Some(501)]);
    assert!(
        statuses(Key::new(id, 0)).is_empty(),
        "copy 0 of a fan-out never existed"
    );
    assert!(c.names("attempts").len() <= 2);
    assert_eq!(c.spool.locate(copies[1]).map(|s| s.attempts), Some(2));
}

#[tokio::test]
async fn a_failed_flush_of_an_outcome_turns_the_spool_unready_until_a_write_succeeds() {
    let c = check();
    let key = c.put("hello").await;
    let claim = c.spool.claim_due(now_ms(), 1).pop().unwrap();
    c.spool.inject_dir_sync_failures(1);
    // The rename itself succeeds and is reported; its flush fails later, in the committer.
    c.spool
        .finish(claim, Some(&attempt(Some(200), None)), Outcome::Delivered)
        .await
        .unwrap();
    assert_eq!(c.names("done"), vec![key.to_string()]);
    // Whichever group ran the failed flush (the wake-up's or this sync's), the spool says so.
    let _ = c.spool.sync().await;
    let reason = c
        .spool
        .unhealthy_reason()
        .expect("unready after a failed flush");
    assert!(reason.contains("Input/output error"), "{reason}");
    // A message stored (and flushed) afterwards makes it ready again.
    c.put("next").await;
    assert_eq!(c.spool.unhealthy_reason(), None);
}

#[test]
fn enqueueing_in_a_loop_without_fsync_leaves_room_for_other_tasks() {
    // Without fsync an enqueue never waits; it must still yield now and then, or a loop of them
    // starves everything else on its worker (here: the timer that ends the loop).
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let spool = Spool::open(
                dir.path(),
                Options {
                    fsync: false,
                    ..Options::default()
                },
            )
            .unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (spool, stop) = (spool.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        spool
                            .enqueue(Spool::new_id(), 1, b"x".to_vec())
                            .await
                            .unwrap();
                    }
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.store(true, Ordering::Relaxed);
            writer.await.unwrap();
        });
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the enqueue loop never let the timer run"
    );
}

#[tokio::test]
async fn an_unready_spool_probes_itself_and_turns_ready_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        probe_every: Duration::from_millis(20),
        ..Options::default()
    };
    let spool = Spool::open(dir.path(), options).unwrap();
    // The enqueue's flush fails, and so does the first probe's: the disk is still bad.
    spool.inject_sync_failures(2);
    spool
        .enqueue(Spool::new_id(), 1, b"refused".to_vec())
        .await
        .unwrap_err();
    assert!(spool.unhealthy_reason().is_some());
    // No message comes (a load balancer sends none to an unready node): the probe finds the
    // disk healed by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while spool.unhealthy_reason().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the spool to turn ready by itself"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        spool.inner.health.fail_syncs.load(Ordering::SeqCst),
        0,
        "the failing probe ran first"
    );
    assert!(fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(spool.counts(), Counts::default(), "the probe is no message");
}

#[tokio::test]
async fn folders_are_0750_and_messages_0640_whatever_the_umask() {
    use rustix::fs::Mode;
    let c = check();
    // An older version (or umask 022) left a world-readable folder behind: reopening fixes it.
    fs::set_permissions(c.root.join("new"), fs::Permissions::from_mode(0o755)).unwrap();
    let before = rustix::process::umask(Mode::from_raw_mode(0o022));
    let c = c.reopen();
    let loose = c.put("under umask 022").await;
    rustix::process::umask(Mode::from_raw_mode(0o077));
    let tight = c.put("under umask 077").await;
    rustix::process::umask(before);
    for folder in ["", "tmp", "new", "cur", "done", "dead", "attempts"] {
        let mode = fs::metadata(c.root.join(folder)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750, "{folder}/ is {mode:o}");
    }
    for key in [loose, tight] {
        let mode = fs::metadata(c.root.join("new").join(key.to_string()))
            .unwrap()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o640, "message {key} is {mode:o}");
    }
}

#[test]
fn a_directory_that_is_not_a_spool_lists_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        offline::snapshot(&dir.path().join("never")).unwrap(),
        vec![]
    );
    assert_eq!(
        offline::find(&dir.path().join("never"), unknown_key()).unwrap(),
        None
    );
}

/// A key no spool has.
fn unknown_key() -> Key {
    Key::new(Spool::new_id(), 0)
}

/// Moves a message between folders while it is being listed, as a running daemon does.
async fn listed_while_moving(
    from: (&str, &str),
    to: (&str, &str),
    when: &str,
) -> Vec<(Key, State)> {
    let c = check();
    let key = c.put("m").await;
    c.put("n").await; // one that holds still
    let (from_dir, to_dir) = (c.root.join(from.0), c.root.join(to.0));
    let name = |pattern: &str, key: Key| pattern.replace("KEY", &key.to_string());
    fs::rename(
        c.root.join("new").join(key.to_string()),
        from_dir.join(name(from.1, key)),
    )
    .unwrap();
    let mut moved = false;
    let seen = offline::snapshot_with(&c.root, |folder| {
        if folder.name() == when && !moved {
            moved = true;
            fs::rename(
                from_dir.join(name(from.1, key)),
                to_dir.join(name(to.1, key)),
            )
            .unwrap();
        }
    })
    .unwrap();
    assert!(moved);
    seen.into_iter().map(|s| (s.key, s.state)).collect()
}

#[tokio::test]
async fn a_message_delivered_while_listed_is_listed_once_as_delivered() {
    // Queued when new/ was listed, delivered before done/ was: seen twice, newest kept.
    let seen = listed_while_moving(("new", "KEY"), ("done", "KEY"), "new").await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, State::Delivered, "{seen:?}");
    assert_eq!(seen[1].1, State::Queued, "{seen:?}");
    let seen = listed_while_moving(("cur", "KEY,1,5,5"), ("dead", "KEY"), "cur").await;
    assert_eq!(seen[0].1, State::Dead, "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_message_requeued_while_listed_is_not_missed() {
    // In dead/ when cur/ was listed, in cur/ when dead/ was: the second look at cur/ finds it.
    let seen = listed_while_moving(("dead", "KEY"), ("cur", "KEY,0,5,5"), "cur").await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, State::Retrying, "{seen:?}");
}

#[tokio::test]
async fn retry_now_makes_a_retrying_message_due_and_requeues_a_dead_one() {
    let c = check();
    let a = c.put("a").await;
    let b = c.put("b").await;
    let later = now_ms() + 3_600_000;
    for claim in c.spool.claim_due(now_ms(), 10) {
        let outcome = if claim.key == a {
            Outcome::Retry { due_ms: later }
        } else {
            Outcome::Dead
        };
        let failed = attempt(Some(503), None);
        c.spool.finish(claim, Some(&failed), outcome).await.unwrap();
    }
    assert!(c.spool.claim_due(now_ms(), 10).is_empty(), "nothing due");
    c.spool.retry_now(a).await.unwrap();
    c.spool.retry_now(b).await.unwrap();
    // Due now, handed out within a bucket (100 ms) of it.
    let due = c.spool.claim_due(now_ms() + 200, 10);
    let mut keys: Vec<Key> = due.iter().map(|cl| cl.key).collect();
    keys.sort();
    assert_eq!(keys, vec![a, b]);
    let a_claim = due.iter().find(|cl| cl.key == a).unwrap();
    assert_eq!(a_claim.attempts, 1, "the attempt count is kept");
    // Claimed right now: refused; delivered: nothing to retry; unknown: not found.
    assert!(matches!(c.spool.retry_now(a).await, Err(ChangeError::InFlight(k)) if k == a));
    for claim in due {
        c.spool
            .finish(claim, None, Outcome::Delivered)
            .await
            .unwrap();
    }
    assert!(matches!(c.spool.retry_now(a).await, Err(ChangeError::Delivered(k)) if k == a));
    let unknown = unknown_key();
    let err = c.spool.retry_now(unknown).await.unwrap_err();
    assert_eq!(err.to_string(), format!("no message {unknown}"));
}

#[tokio::test]
async fn delete_removes_one_message_wherever_it_is() {
    let c = check();
    let queued = c.put("q").await;
    let retrying = c.put("r").await;
    let dead = c.put("d").await;
    for claim in c.spool.claim_due(now_ms(), 10) {
        let outcome = match claim.key {
            k if k == retrying => Outcome::Retry {
                due_ms: now_ms() + 60_000,
            },
            k if k == dead => Outcome::Dead,
            _ => {
                c.spool.release(claim);
                continue;
            }
        };
        c.spool.finish(claim, None, outcome).await.unwrap();
    }
    assert_eq!(c.spool.delete(retrying).await.unwrap(), State::Retrying);
    assert_eq!(c.spool.delete(dead).await.unwrap(), State::Dead);
    assert_eq!(c.spool.delete(queued).await.unwrap(), State::Queued);
    for folder in ["new", "cur", "dead"] {
        assert!(
            c.names(folder).is_empty(),
            "{folder}: {:?}",
            c.names(folder)
        );
    }
    assert_eq!(c.spool.counts(), Counts::default());
    assert!(c.spool.claim_due(now_ms() + 120_000, 10).is_empty());
    assert!(matches!(c.spool.delete(dead).await, Err(ChangeError::NotFound(k)) if k == dead));
    // A message being attempted is left alone.
    let busy = c.put("b").await;
    let claims = c.spool.claim_due(now_ms(), 10);
    assert!(matches!(c.spool.delete(busy).await, Err(ChangeError::InFlight(k)) if k == busy));
    drop(claims);
}

#[tokio::test]
async fn the_maildir_spool_keeps_the_storage_contract() {
    let dirs = tempfile::tempdir().unwrap();
    let mut n = 0;
    storage::conformance::storage(|| {
        n += 1;
        let dir = dirs.path().join(format!("spool{n}"));
        async move { Spool::open(&dir, Options::default()).unwrap() }
    })
    .await;
}

#[tokio::test]
async fn the_spool_records_keep_the_records_contract() {
    let dirs = tempfile::tempdir().unwrap();
    let mut spools = Vec::new();
    storage::conformance::records(|| {
        let spool = Spool::open(
            &dirs.path().join(format!("spool{}", spools.len())),
            Options::default(),
        )
        .unwrap();
        let records = spool.records();
        spools.push(spool); // keeps each spool (and its lock) open for its check
        async move { records }
    })
    .await;
}
