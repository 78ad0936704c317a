//! Steady load with accounting, for fault tests: senders that record which numbered messages
//! were acknowledged, a check that every one of them was delivered, and the SIGKILL soak.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Receiver;

/// Steady load for fault tests: `senders` threads call `send(n)` with distinct numbers until
/// stopped, and record which numbers were acknowledged (2xx) and how others were answered.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    acked: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    refused: Arc<Mutex<std::collections::BTreeMap<u16, u64>>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub sent: u64,
    /// The numbers answered 2xx.
    pub acked: std::collections::BTreeSet<u64>,
    /// Other answers by status (no answer at all is not counted here).
    pub refused: std::collections::BTreeMap<u16, u64>,
}

impl Load {
    /// `send(n)` makes one request and returns its status, or `None` when nothing answered.
    pub fn start(senders: u64, send: impl Fn(u64) -> Option<u16> + Send + Sync + 'static) -> Load {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let send = Arc::new(send);
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<std::collections::BTreeSet<u64>>> = Arc::default();
        let refused: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..senders)
            .map(|t| {
                let (stop, acked, refused, sent, send) = (
                    stop.clone(),
                    acked.clone(),
                    refused.clone(),
                    sent.clone(),
                    send.clone(),
                );
                std::thread::spawn(move || {
                    let mut n = t;
                    while !stop.load(Ordering::SeqCst) {
                        sent.fetch_add(1, Ordering::SeqCst);
                        match send(n) {
                            Some(code) if (200..300).contains(&code) => {
                                acked.lock().unwrap().insert(n);
                            }
                            Some(code) => *refused.lock().unwrap().entry(code).or_default() += 1,
                            None => std::thread::sleep(Duration::from_millis(5)),
                        }
                        n += senders;
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            acked,
            refused,
            sent,
        }
    }

    /// Stops the senders and returns what they saw.
    pub fn finish(self) -> Tally {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        let refused = self.refused.lock().unwrap().clone();
        Tally {
            sent: self.sent.load(Ordering::SeqCst),
            acked,
            refused,
        }
    }
}

impl Receiver {
    /// The numbers of the `soak-<n>` bodies received, and how many arrived more than once.
    pub fn numbered(&self) -> (std::collections::BTreeSet<u64>, usize) {
        let mut seen = std::collections::BTreeSet::new();
        let mut duplicates = 0;
        for r in self.received() {
            let Some(n) = String::from_utf8_lossy(&r.body)
                .strip_prefix("soak-")
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if !seen.insert(n) {
                duplicates += 1;
            }
        }
        (seen, duplicates)
    }
}

/// How a [`Tally`]'s acknowledged messages fared at the receivers.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// Distinct numbers received.
    pub delivered: usize,
    /// Receipts beyond the first of a number.
    pub duplicates: usize,
    /// Acknowledged numbers never received.
    pub lost: usize,
}

impl Tally {
    /// Waits until every acknowledged number reached one of `receivers`, prints the totals
    /// (`what`: sent, acknowledged, delivered, duplicates, lost) and asserts lost = 0.
    /// Returns the duplicates.
    pub fn account(&self, what: &str, receivers: &[&Receiver]) -> usize {
        let totals = self.settle(receivers);
        println!(
            "soak {what}: sent {}, acknowledged {}, delivered {}, duplicates {}, lost {}, refused {:?}",
            self.sent,
            self.acked.len(),
            totals.delivered,
            totals.duplicates,
            totals.lost,
            self.refused
        );
        assert_eq!(totals.lost, 0, "{what}: acknowledged and lost");
        totals.duplicates
    }

    /// Waits until every acknowledged number reached one of `receivers`, for at most
    /// [`DEADLINE`](crate::DEADLINE), and counts: what is still missing then is lost.
    pub fn settle(&self, receivers: &[&Receiver]) -> Totals {
        let delivered = || {
            let mut all = std::collections::BTreeSet::new();
            let mut duplicates = 0;
            for r in receivers {
                let (got, dup) = r.numbered();
                duplicates += dup + got.iter().filter(|n| all.contains(*n)).count();
                all.extend(got);
            }
            (all, duplicates)
        };
        let deadline = std::time::Instant::now() + crate::DEADLINE;
        while !self.acked.is_subset(&delivered().0) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (got, duplicates) = delivered();
        Totals {
            delivered: got.len(),
            duplicates,
            lost: self.acked.difference(&got).count(),
        }
    }
}

/// The number of kills of a fault test: `env_var` if set, else 20 (what CI runs).
pub fn kills_from_env(env_var: &str) -> usize {
    std::env::var(env_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// The SIGKILL soak both daemons run: kills the daemon `kills` times at random moments while
/// `load` runs, then checks that the load got through between kills, that every acknowledged
/// message reached one of `receivers` ([`Tally::account`]), and that duplicates stay within what
/// can be in flight at a kill (the default delivery concurrency, 64, per kill).
pub fn soak_with_kills(
    kills: usize,
    load: Load,
    kill_and_restart: impl FnMut(),
    receivers: &[&Receiver],
) {
    kill_at_random_moments(kills, kill_and_restart);
    std::thread::sleep(Duration::from_millis(200));
    let tally = load.finish();
    assert!(
        tally.acked.len() > kills,
        "the load got through between kills"
    );
    let duplicates = tally.account(&format!("{kills} kills"), receivers);
    assert!(duplicates <= kills * 64, "{duplicates} duplicates");
}

/// Calls `kill_and_restart` `kills` times, each after a random 50–300 ms of running under load,
/// so the kills land anywhere: mid-write, mid-flush, mid-rename, mid-delivery.
pub fn kill_at_random_moments(kills: usize, mut kill_and_restart: impl FnMut()) {
    let mut rng = u64::from(std::process::id()) | 1;
    for _ in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 250));
        kill_and_restart();
    }
}
