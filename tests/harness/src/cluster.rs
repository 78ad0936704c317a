//! The fault test of cluster mode (issue 12) that whimp and whomp each run, written once: three
//! nodes on a three-server NATS cluster under a steady load spread over the live nodes, through a
//! SIGKILL and restart of one nats-server, a SIGKILL and restart of one node, and the loss for
//! good of a whole node (its nats-server and its daemon). Then every acknowledged message must
//! reach the receiver (lost = 0), duplicates stay within what the faults can have had in flight,
//! and the counts and the time from each kill to deliveries resuming are printed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{wait_for, Daemon, Load, Nats, Receiver};

/// The faults [`faults_under_load`] injects; each can duplicate at most what one node had in
/// flight when it struck.
pub const FAULTS: usize = 3;

/// What a node can have in flight: the default `delivery.concurrency` of both daemons.
pub const IN_FLIGHT_PER_NODE: usize = 64;

/// Runs the fault sequence on `nodes` (node `i` a client of `nats` server `i`, its listener
/// `listener` taking the load) while `send(addr, n)` sends message `n` (body `soak-<n>`, the
/// receiver's [`Receiver::numbered`]) to one live node in turn, one every 10 ms; then stops the
/// load, waits until every acknowledged message reached `receiver`, prints the table under
/// `what` and asserts lost = 0 and duplicates within [`FAULTS`] × [`IN_FLIGHT_PER_NODE`].
pub fn faults_under_load(
    what: &str,
    nats: &mut Nats,
    nodes: &mut [&mut Daemon],
    listener: &str,
    receiver: &Receiver,
    send: impl Fn(SocketAddr, u64) -> Option<u16> + Send + Sync + 'static,
) {
    assert_eq!(nodes.len(), 3, "the sequence needs three nodes");
    let live: Arc<Mutex<Vec<Option<SocketAddr>>>> = Arc::new(Mutex::new(
        nodes.iter().map(|d| Some(d.addr(listener))).collect(),
    ));
    let load = {
        let live = live.clone();
        Load::start(1, move |n| {
            let addrs: Vec<SocketAddr> = live.lock().unwrap().iter().flatten().copied().collect();
            let status = send(addrs[n as usize % addrs.len()], n);
            std::thread::sleep(Duration::from_millis(10));
            status
        })
    };
    let set = |i: usize, addr: Option<SocketAddr>| live.lock().unwrap()[i] = addr;
    let mut resumes = Vec::new();
    resumed(what, "the start", receiver, Instant::now(), 50);

    // One nats-server SIGKILLed, then restarted on its ports and store.
    let kill = Instant::now();
    nats.kill(1);
    resumes.push(resumed(what, "a nats-server's SIGKILL", receiver, kill, 30));
    nats.restart(1);

    // One node SIGKILLed mid-load; what it claimed goes to the others after `ack_wait`.
    set(1, None);
    let kill = Instant::now();
    nodes[1].kill();
    resumes.push(resumed(what, "a node's SIGKILL", receiver, kill, 30));
    *nodes[1] = Daemon::start(&nodes[1].bin, &nodes[1].config);
    set(1, Some(nodes[1].addr(listener)));

    // Node 2 gone for good: its nats-server and its daemon; the others deliver what it took.
    set(2, None);
    let kill = Instant::now();
    nats.kill(2);
    nodes[2].kill();
    resumes.push(resumed(what, "the loss of a node", receiver, kill, 30));
    std::thread::sleep(Duration::from_secs(1));
    let tally = load.finish();

    let totals = tally.settle(&[receiver]);
    println!(
        "{what}: sent {}, acknowledged {}, delivered {}, duplicates {}, lost {}, refused {:?}; \
         deliveries resumed {:.1?} after the nats-server's kill, {:.1?} after the node's, \
         {:.1?} after the node's loss",
        tally.sent,
        tally.acked.len(),
        totals.delivered,
        totals.duplicates,
        totals.lost,
        tally.refused,
        resumes[0],
        resumes[1],
        resumes[2],
    );
    assert_eq!(totals.lost, 0, "{what}: acknowledged and lost");
    assert!(
        totals.duplicates <= FAULTS * IN_FLIGHT_PER_NODE,
        "{what}: {} duplicates",
        totals.duplicates
    );
}

/// Waits until `receiver` has had `more` deliveries beyond what it has now; prints and returns
/// the time from `since`.
fn resumed(what: &str, fault: &str, receiver: &Receiver, since: Instant, more: usize) -> Duration {
    let before = receiver.count();
    wait_for(&format!("deliveries resume after {fault}"), || {
        receiver.count() >= before + more
    });
    let took = since.elapsed();
    println!("{what}: deliveries resumed {took:.1?} after {fault}");
    took
}
