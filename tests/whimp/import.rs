//! `spool import` (issue 12): a stopped maildir node's spool moved into the cluster in one
//! command. Every message still to deliver (retrying, dead) arrives in the cluster under its own
//! id, with its attempts, and leaves the directory; delivered history stays; a second run finds
//! nothing to do; a cluster node then delivers what the maildir node could not. A spool whose
//! daemon still runs is refused. Skipped (SKIPPED) without nats-server locally, a failure
//! under CI.

use std::collections::BTreeMap;
use std::path::Path;

use harness::{wait_for, Answer, Nats, Receiver};

use crate::{route, write_config, Whimp, BIN};

/// The routes of both nodes: `/r` to `retry`, `/d` to `dead`, `/ok` to `ok`.
fn routes(retry: &str, dead: &str, ok: &str) -> String {
    format!(
        "retry: {{ initial: 1h, max_interval: 1h, max_age: 24h, give_up_on: [410] }}\nroutes:\n{}{}{}",
        route("r", "/r/K", &[retry.to_owned()], ""),
        route("d", "/d/K", &[dead.to_owned()], ""),
        route("ok", "/ok/K", &[ok.to_owned()], ""),
    )
}

/// `spool list --json` through `config`: id → (state, attempts).
fn listed(config: &Path) -> BTreeMap<String, (String, u64)> {
    let config = config.to_str().unwrap();
    let (code, out, err) = harness::run_cli(
        Path::new(BIN),
        &["spool", "list", "--json", "--config", config],
    );
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                (
                    m["state"].as_str().unwrap().to_owned(),
                    m["attempts"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_stopped_maildir_spool_moves_into_the_cluster_with_its_ids_and_attempts() {
    let Some(nats) = Nats::single() else {
        return;
    };
    // The maildir node: one backend failing (retrying, next try an hour away), one gone for
    // good (410: dead), one that takes it (delivered).
    let failing = Receiver::start();
    failing.answer(|_| Answer::Status(503, vec![]));
    let gone = Receiver::start();
    gone.answer(|_| Answer::Status(410, vec![]));
    let fine = Receiver::start();
    let mut old = Whimp::start(&routes(
        &failing.url("/in"),
        &gone.url("/in"),
        &fine.url("/in"),
    ));
    for body in ["r1", "r2", "r3"] {
        assert_eq!(old.post("/r/K", "", body.as_bytes()).0, 200);
    }
    assert_eq!(old.post("/d/K", "", b"d1").0, 200);
    assert_eq!(old.post("/ok/K", "", b"ok1").0, 200);
    wait_for("each message attempted once", || {
        let states: Vec<_> = listed(&old.config).into_values().collect();
        states.len() == 5 && states.iter().all(|(_, attempts)| *attempts == 1)
    });
    let before = listed(&old.config);

    // The cluster node's configuration: the same routes, its backend for `/r` and `/d` now
    // answering.
    let now_fine = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let cluster = write_config(
        dir.path(),
        &format!(
            "queue: {{ backend: jetstream, servers: [\"{}\"], replicas: 1 }}\n{}",
            nats.url(0),
            routes(&now_fine.url("/in"), &now_fine.url("/in"), &fine.url("/in"))
        ),
    );
    let import = |from: &Path| {
        harness::run_cli(
            Path::new(BIN),
            &[
                "spool",
                "import",
                "--config",
                cluster.to_str().unwrap(),
                "--from",
                from.to_str().unwrap(),
            ],
        )
    };

    // Refused while the maildir daemon holds its spool.
    let (code, _, err) = import(&old.spool_dir());
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("stop that daemon first"), "{err}");
    assert_eq!(listed(&cluster).len(), 0);

    old.daemon.stop();
    let (code, out, err) = import(&old.spool_dir());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "imported 4 messages (0 queued, 3 retrying, 1 dead), 0 already in the cluster; 0 records"
        ) && out.trim_end().ends_with("1 delivered (history)"),
        "{out}"
    );
    // Same ids, states and attempts in the cluster; only the history left in the directory.
    let moved = listed(&cluster);
    let expected: BTreeMap<_, _> = before
        .iter()
        .filter(|(_, (state, _))| state != "delivered")
        .map(|(id, entry)| (id.clone(), entry.clone()))
        .collect();
    assert_eq!(moved, expected);
    assert_eq!(
        listed(&old.config).into_values().collect::<Vec<_>>(),
        [("delivered".to_owned(), 1)]
    );

    // Again: nothing left to move.
    let (code, out, err) = import(&old.spool_dir());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("imported 0 messages"), "{out}");
    assert_eq!(listed(&cluster), expected);

    // A cluster node delivers the retrying ones at once, and the dead one when re-queued.
    let node = harness::Daemon::start(Path::new(BIN), &cluster);
    wait_for("the retrying messages delivered", || now_fine.count() == 3);
    let dead = expected
        .iter()
        .find(|(_, (state, _))| state == "dead")
        .map(|(id, _)| id.clone())
        .unwrap();
    let (code, out, err) = harness::run_cli(
        Path::new(BIN),
        &[
            "spool",
            "retry",
            &dead,
            "--config",
            cluster.to_str().unwrap(),
        ],
    );
    assert_eq!((code, out.trim()), (0, "requeued 1"), "{err}");
    wait_for("the dead one delivered", || now_fine.count() == 4);
    let mut bodies: Vec<_> = now_fine
        .received()
        .into_iter()
        .map(|m| String::from_utf8(m.body).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["d1", "r1", "r2", "r3"]);
    drop(node);
}
