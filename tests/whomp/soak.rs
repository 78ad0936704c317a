//! The fault suite for whomp (issue 5): steady submissions while the daemon is SIGKILLed,
//! receivers misbehave, and the config is reloaded; with exact accounting at the end: every
//! accepted (202) message is delivered (lost = 0), duplicates are counted.
//!
//! `WHOMP_SOAK_KILLS` sets the number of kills (default 20, as in CI).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use harness::{free_port, try_post, wait_for, Load, Misbehaving, Misbehaviour, Receiver};

use crate::{envelope, local, Whomp, FAST_RETRY};

/// One numbered submission of `soak-<n>` for `url`, to whatever address `target` holds now.
fn submit_to(
    target: Arc<Mutex<SocketAddr>>,
    url: String,
) -> impl Fn(u64) -> Option<u16> + Send + Sync + 'static {
    move |n| {
        let addr = *target.lock().unwrap();
        let body = envelope("POST", &url, &[], &format!("soak-{n}")).to_string();
        try_post(
            addr,
            "/v1/messages",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        )
    }
}

#[test]
fn repeated_sigkill_under_load_loses_nothing() {
    let kills = harness::kills_from_env("WHOMP_SOAK_KILLS");
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let mut whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let target = Arc::new(Mutex::new(whomp.submit_addr()));
    let load = Load::start(
        8,
        submit_to(target.clone(), format!("http://hooks.test:{port}/in")),
    );
    let restart = || {
        whomp.restart();
        *target.lock().unwrap() = whomp.submit_addr();
    };
    harness::soak_with_kills(kills, load, restart, &[&receiver]);
}

#[test]
fn misbehaving_receivers_then_recovery() {
    for how in [
        Misbehaviour::Reset,
        Misbehaviour::Garbage,
        Misbehaviour::Silent,
    ] {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let bad = Misbehaving::start_on(addr, how);
        let whomp = Whomp::start(&format!(
            "{FAST_RETRY}delivery: {{ timeout: 1s }}\n{}",
            local(&[port], &["hooks.test"])
        ));
        let target = Arc::new(Mutex::new(whomp.submit_addr()));
        let load = Load::start(4, submit_to(target, format!("http://hooks.test:{port}/in")));
        wait_for("attempts reach the bad receiver", || bad.connections() >= 5);
        let tally = load.finish();
        assert!(
            whomp.files("done").is_empty(),
            "{how:?}: nothing counts as delivered"
        );
        drop(bad);
        let good = Receiver::start_on(addr);
        let duplicates = tally.account(&format!("{how:?} receiver"), &[&good]);
        assert_eq!(
            duplicates, 0,
            "{how:?}: failed attempts never count as delivered"
        );
        assert!(whomp.metric("whomp_delivery_attempts_total{outcome=\"error\"}") >= 1.0);
    }
}

#[test]
fn reload_under_load_keeps_accepting_and_delivering() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let config = |ua: &str| {
        format!(
            "{FAST_RETRY}delivery: {{ user_agent: {ua} }}\n{}",
            local(&[port], &["hooks.test"])
        )
    };
    let whomp = Whomp::start(&config("first"));
    let target = Arc::new(Mutex::new(whomp.submit_addr()));
    let load = Load::start(4, submit_to(target, format!("http://hooks.test:{port}/in")));
    for i in 0..10 {
        whomp.rewrite(&config(if i % 2 == 0 { "second" } else { "first" }));
        whomp.daemon.signal(rustix::process::Signal::HUP);
        let reloads = i + 1;
        wait_for("the reload is done", || {
            whomp.daemon.output().matches("config reloaded").count() >= reloads
        });
        let before = receiver.count();
        wait_for("deliveries go on after the reload", || {
            receiver.count() > before + 2
        });
    }
    let tally = load.finish();
    assert!(
        tally.refused.is_empty(),
        "no submission refused during reloads: {:?}",
        tally.refused
    );
    tally.account("reload", &[&receiver]);
    let agents: BTreeSet<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("user-agent").map(str::to_owned))
        .collect();
    assert!(
        agents.contains("second"),
        "reloaded settings apply: {agents:?}"
    );
}
