//! The fault test of cluster mode (issue 12), written once: fleets of three nodes (whimp's,
//! whomp's, or both at once) on one three-server NATS cluster, node `i` of each a client of
//! server `i`, under a steady load spread over each fleet's live nodes, through a SIGKILL and
//! restart of one nats-server, a SIGKILL and restart of one node of each fleet, and the loss for
//! good of a whole node (its nats-server and its daemons). Then every acknowledged message must
//! reach its fleet's receiver (lost = 0), duplicates stay within what the faults can have had in
//! flight, and the counts and the time from each kill to deliveries resuming are printed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{wait_for, Daemon, Load, Nats, Receiver};

/// The faults [`faults_under_load`] injects; each can duplicate at most what one node had in
/// flight when it struck.
pub const FAULTS: usize = 3;

/// What a node can have in flight: the default `delivery.concurrency` of both daemons.
pub const IN_FLIGHT_PER_NODE: usize = 64;

/// How one fleet sends message `n` (body `soak-<n>`, see [`Receiver::numbered`]) to a node's
/// listener: the status it answered, or `None` when it could not be reached.
pub type Sender = Arc<dyn Fn(SocketAddr, u64) -> Option<u16> + std::marker::Send + Sync>;

/// Three nodes of one daemon and where what they accept arrives.
pub struct Fleet<'a> {
    /// For the printed report: `whimp`, `whomp`.
    pub name: &'static str,
    /// Node `i` is a client of nats-server `i`.
    pub nodes: Vec<&'a mut Daemon>,
    /// The listener the load goes to (`public`, `submit`).
    pub listener: &'static str,
    pub receiver: &'a Receiver,
    pub send: Sender,
}

/// Runs the fault sequence on `fleets` while each gets one message every 10 ms, to one live node
/// in turn; then stops the load, waits until every acknowledged message reached its receiver,
/// prints each fleet's table and asserts lost = 0 and duplicates within [`FAULTS`] ×
/// [`IN_FLIGHT_PER_NODE`].
pub fn faults_under_load(nats: &mut Nats, fleets: &mut [Fleet<'_>]) {
    let mut loads = Vec::new();
    for fleet in fleets.iter() {
        assert_eq!(fleet.nodes.len(), 3, "the sequence needs three nodes");
        let live: Arc<Mutex<Vec<Option<SocketAddr>>>> = Arc::new(Mutex::new(
            fleet
                .nodes
                .iter()
                .map(|d| Some(d.addr(fleet.listener)))
                .collect(),
        ));
        let load = {
            let (live, send) = (live.clone(), fleet.send.clone());
            Load::start(1, move |n| {
                let addrs: Vec<SocketAddr> =
                    live.lock().unwrap().iter().flatten().copied().collect();
                let status = send(addrs[n as usize % addrs.len()], n);
                std::thread::sleep(Duration::from_millis(10));
                status
            })
        };
        loads.push((live, load));
    }
    let set = |f: usize, i: usize, addr: Option<SocketAddr>| loads[f].0.lock().unwrap()[i] = addr;
    let mut resumes = Vec::new();
    resumed(fleets, "the start", Instant::now(), 50);

    // One nats-server SIGKILLed, then restarted on its ports and store.
    let kill = Instant::now();
    nats.kill(1);
    resumes.push(resumed(fleets, "a nats-server's SIGKILL", kill, 30));
    nats.restart(1);

    // Node 1 of each fleet SIGKILLed mid-load; what it claimed goes to the others after
    // `ack_wait`.
    for f in 0..fleets.len() {
        set(f, 1, None);
    }
    let kill = Instant::now();
    for fleet in fleets.iter_mut() {
        fleet.nodes[1].kill();
    }
    resumes.push(resumed(fleets, "a node's SIGKILL", kill, 30));
    for (f, fleet) in fleets.iter_mut().enumerate() {
        let node = &mut fleet.nodes[1];
        **node = Daemon::start(&node.bin, &node.config);
        set(f, 1, Some(node.addr(fleet.listener)));
    }

    // Node 2 gone for good: its nats-server and its daemons; the others deliver what it took.
    for f in 0..fleets.len() {
        set(f, 2, None);
    }
    let kill = Instant::now();
    nats.kill(2);
    for fleet in fleets.iter_mut() {
        fleet.nodes[2].kill();
    }
    resumes.push(resumed(fleets, "the loss of a node", kill, 30));
    std::thread::sleep(Duration::from_secs(1));

    for (fleet, (_, load)) in fleets.iter().zip(loads) {
        let what = fleet.name;
        let tally = load.finish();
        let totals = tally.settle(&[fleet.receiver]);
        println!(
            "{what} cluster: sent {}, acknowledged {}, delivered {}, duplicates {}, lost {}, \
             refused {:?}; deliveries resumed {:.1?} after the nats-server's kill, {:.1?} after \
             the node's, {:.1?} after the node's loss",
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
}

/// Waits until each fleet's receiver has had `more` deliveries beyond what it has now; prints
/// and returns the time from `since` until the last of them did.
fn resumed(fleets: &[Fleet<'_>], fault: &str, since: Instant, more: usize) -> Duration {
    let before: Vec<usize> = fleets.iter().map(|f| f.receiver.count()).collect();
    let mut took = Duration::ZERO;
    for (fleet, before) in fleets.iter().zip(before) {
        wait_for(
            &format!("{} deliveries resume after {fault}", fleet.name),
            || fleet.receiver.count() >= before + more,
        );
        took = since.elapsed();
        println!(
            "{} cluster: deliveries resumed {took:.1?} after {fault}",
            fleet.name
        );
    }
    took
}
