//! The submit and admin listeners cut off clients that never finish a request head (after
//! `limits.header_timeout`), and one caller's address cannot take every submit slot
//! (`limits.max_connections_per_ip`).

use std::net::IpAddr;

use harness::{hold, wait_closed, Idle, Wire};

use crate::Whomp;

#[test]
fn idle_connections_to_submit_and_admin_are_closed() {
    let whomp = Whomp::start("limits: { header_timeout: 2s }\n");
    let source = IpAddr::from([127, 0, 0, 10]);
    let mut held = Vec::new();
    for idle in [Idle::Nothing, Idle::OneByte, Idle::H2Preface] {
        let submit = hold(whomp.submit_addr(), source, Wire::Plain, idle);
        held.push(("submit", submit));
        let admin = hold(whomp.daemon.addr("admin"), source, Wire::Plain, idle);
        held.push(("admin", admin));
    }
    assert_eq!(harness::get(whomp.daemon.addr("admin"), "/healthz").0, 200);
    wait_closed(&mut held);
    assert_eq!(
        whomp
            .daemon
            .metric("whomp_connections_dropped_total{reason=\"idle\"}"),
        3.0,
        "the submit listener's idle connections (the admin listener's are not counted)"
    );
}

#[test]
fn one_caller_cannot_take_every_submit_slot() {
    // A header deadline longer than the test: only the per-source cap can make room.
    let whomp = Whomp::start(
        "limits: { header_timeout: 1h, max_connections: 40, max_connections_per_ip: 5 }\n",
    );
    let source = IpAddr::from([127, 0, 0, 11]);
    let _held: Vec<_> = (0..20)
        .map(|_| hold(whomp.submit_addr(), source, Wire::Plain, Idle::OneByte))
        .collect();
    // Another caller is still served: the first one holds 5 slots of 40.
    let (status, _) = harness::get(
        whomp.submit_addr(),
        "/v1/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV",
    );
    assert_eq!(status, 404);
    assert_eq!(
        whomp
            .daemon
            .metric("whomp_connections_dropped_total{reason=\"source_limit\"}"),
        15.0
    );
}
