//! The end-to-end test harness: real daemon binaries, real receivers, real sockets on 127.0.0.1.
//!
//! - [`Daemon`] starts a binary with a config, reads its `listening <what> <url>` lines and the
//!   final `ready`, fails fast if it dies, kills it on drop and shows its output when a test fails.
//! - [`Receiver`] is a backend that records every request it gets and answers as scripted.
//! - [`wait_for`] polls a condition under a deadline: tests wait for conditions, never for time.
//! - [`TestCa`] issues certificates for TLS tests.
//!
//! One module per seam: `daemon`, `client` (raw HTTP), `receivers`, `idle` (idle connections),
//! `load` (steady load with accounting and the kill soak), `nats` (nats-servers with
//! JetStream, one or a cluster), `cluster` (the cluster fault sequence both daemons run), `ca`
//! and `tmpfs`; everything is re-exported here, so tests say `harness::Daemon`.

mod ca;
mod client;
mod cluster;
mod daemon;
mod idle;
mod load;
mod nats;
mod receivers;
mod tmpfs;

pub use ca::TestCa;
pub use client::{get, post, raw, try_post};
pub use cluster::{faults_under_load, Fleet, Sender, FAULTS, IN_FLIGHT_PER_NODE};
pub use daemon::{listening, metric_in, run_cli, Daemon};
pub use idle::{hold, wait_closed, Idle, Wire};
pub use load::{kill_at_random_moments, kills_from_env, soak_with_kills, Load, Tally, Totals};
pub use nats::{Nats, MAX_PAYLOAD as NATS_MAX_PAYLOAD};
pub use receivers::{Answer, Misbehaving, Misbehaviour, Received, Receiver};
pub use tmpfs::Tmpfs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `done` every few milliseconds until it holds; panics naming `what` after [`DEADLINE`].
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free port on 127.0.0.1 (bound and released; for configs that must name a port up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The sorted file names in `dir` (empty if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
