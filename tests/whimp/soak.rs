//! The fault suite (issue 5): steady load while the daemon is SIGKILLed, backends misbehave,
//! the disk fills, and the config is reloaded; with exact accounting at the end:
//! every acknowledged request is delivered (lost = 0), duplicates are counted.
//!
//! `WHIMP_SOAK_KILLS` sets the number of kills (default 20, as in CI).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use harness::{
    free_port, try_post, wait_for, Daemon, Load, Misbehaving, Misbehaviour, Receiver, Tmpfs,
};

use crate::{route, Whimp, BIN, FAST_RETRY};

/// One numbered POST of `soak-<n>` to whatever address `target` holds now.
fn post_to(
    target: Arc<Mutex<SocketAddr>>,
    path: &'static str,
) -> impl Fn(u64) -> Option<u16> + Send + Sync + 'static {
    move |n| {
        let addr = *target.lock().unwrap();
        try_post(addr, path, "", format!("soak-{n}").as_bytes())
    }
}

#[test]
fn repeated_sigkill_under_load_loses_nothing() {
    let kills = harness::kills_from_env("WHIMP_SOAK_KILLS");
    let backend = Receiver::start();
    let mut whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route("soak", "/soak/K", &[backend.url("/in")], "")
    ));
    let target = Arc::new(Mutex::new(whimp.daemon.addr("public")));
    let load = Load::start(8, post_to(target.clone(), "/soak/K"));
    let restart = || {
        whimp.restart();
        *target.lock().unwrap() = whimp.daemon.addr("public");
    };
    harness::soak_with_kills(kills, load, restart, &[&backend]);
}

#[test]
fn misbehaving_backends_then_recovery() {
    for how in [
        Misbehaviour::Reset,
        Misbehaviour::Garbage,
        Misbehaviour::Silent,
    ] {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let bad = Misbehaving::start_on(addr, how);
        let whimp = Whimp::start(&format!(
            "{FAST_RETRY}routes:\n  - path: /m/K\n    name: m\n    backends: [{{ url: \"http://{addr}/in\", timeout: 1s }}]\n"
        ));
        let target = Arc::new(Mutex::new(whimp.daemon.addr("public")));
        let load = Load::start(4, post_to(target.clone(), "/m/K"));
        wait_for("attempts reach the bad backend", || bad.connections() >= 5);
        let tally = load.finish();
        assert!(
            whimp.files("done").is_empty(),
            "{how:?}: nothing counts as delivered"
        );
        drop(bad);
        let good = Receiver::start_on(addr);
        let duplicates = tally.account(&format!("{how:?} backend"), &[&good]);
        assert_eq!(
            duplicates, 0,
            "{how:?}: failed attempts never count as delivered"
        );
        let page = whimp.daemon.metrics();
        assert!(
            harness::metric_in(
                &page,
                "whimp_forward_attempts_total{backend=\"m/1\",outcome=\"error\"}"
            ) >= 1.0,
            "{page}"
        );
    }
}

#[test]
fn reload_under_load_keeps_answering_and_delivering() {
    let a = Receiver::start();
    let b = Receiver::start();
    let config = |url: String| format!("{FAST_RETRY}routes:\n{}", route("r", "/r/K", &[url], ""));
    let whimp = Whimp::start(&config(a.url("/in")));
    let target = Arc::new(Mutex::new(whimp.daemon.addr("public")));
    let load = Load::start(4, post_to(target.clone(), "/r/K"));
    for i in 0..10 {
        let url = if i % 2 == 0 {
            b.url("/in")
        } else {
            a.url("/in")
        };
        crate::write_config(whimp.dir.path(), &config(url));
        whimp.daemon.signal(rustix::process::Signal::HUP);
        let reloads = i + 1;
        wait_for("the reload is done", || {
            whimp.daemon.output().matches("config reloaded").count() >= reloads
        });
        let before = a.count() + b.count();
        wait_for("forwards go on after the reload", || {
            a.count() + b.count() > before + 2
        });
    }
    let tally = load.finish();
    assert!(
        tally.refused.is_empty(),
        "no request refused during reloads: {:?}",
        tally.refused
    );
    tally.account("reload", &[&a, &b]);
    assert!(b.count() > 0, "the backend moved with the reload");
}

#[test]
fn full_disk_under_load_never_acknowledges_what_it_did_not_store() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let Some(_disk) = Tmpfs::mount(&spool, "2m") else {
        return;
    };

    let backend = Receiver::start();
    // Deliveries wait until the end, so the spool fills up.
    let hold = Arc::new(AtomicBool::new(true));
    let h = hold.clone();
    backend.answer(move |_| {
        if h.load(Ordering::SeqCst) {
            harness::Answer::Status(503, vec![])
        } else {
            harness::Answer::Status(200, vec![])
        }
    });
    let config = crate::write_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}routes:\n{}",
            route("d", "/d/K", &[backend.url("/in")], "")
        ),
    );
    let daemon = Daemon::start(std::path::Path::new(BIN), &config);
    let target = Arc::new(Mutex::new(daemon.addr("public")));
    let load = Load::start(4, post_to(target.clone(), "/d/K"));
    let filler = spool.join("filler");
    wait_for("some requests are stored", || {
        crate::files_in(&spool.join("cur")).len() + crate::files_in(&spool.join("new")).len() > 20
    });
    // Fill the rest of the disk while requests keep coming.
    let _ = std::fs::write(&filler, vec![0u8; 2 * 1024 * 1024]);
    wait_for("the daemon reports not ready", || {
        harness::get(daemon.addr("admin"), "/readyz").0 == 503
    });
    std::fs::remove_file(&filler).unwrap();
    wait_for("ready again once space is back", || {
        harness::get(daemon.addr("admin"), "/readyz").0 == 200
    });
    let tally = load.finish();
    hold.store(false, Ordering::SeqCst);
    assert!(
        tally.refused.get(&503).copied().unwrap_or(0) > 0,
        "the full disk was noticed: {:?}",
        tally.refused
    );
    tally.account("full disk", &[&backend]);
    drop(daemon);
}
