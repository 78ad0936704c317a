//! The submit and admin listeners cut off clients that never finish a request head (whomp's
//! header deadline is a fixed 10 s).

use std::net::IpAddr;

use harness::{hold, wait_closed, Idle, Wire};

use crate::Whomp;

#[test]
fn idle_connections_to_submit_and_admin_are_closed() {
    let whomp = Whomp::start("");
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
