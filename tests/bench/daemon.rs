//! Child processes under measurement: the release daemons (and the HTTP ceiling server), started
//! with a config in a temporary directory, known by the `listening <what> <url>` and `ready`
//! lines they print, timed from spawn to `ready`, and killed when dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running child.
pub(crate) struct Daemon {
    child: Child,
    listeners: HashMap<String, SocketAddr>,
    /// From spawn to the `ready` line.
    pub(crate) ready_after: Duration,
    log: PathBuf,
}

impl Daemon {
    /// Runs `bin args…`, its stderr to `log`, and waits up to `deadline` for `ready`.
    pub(crate) fn start(
        bin: &Path,
        args: &[&str],
        log: &Path,
        deadline: Duration,
    ) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(log)?))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // Keeps reading after `ready`, so that the pipe never fills and blocks the child.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child,
            listeners: HashMap::new(),
            ready_after: Duration::ZERO,
            log: log.to_path_buf(),
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some((what, addr)) = harness::listening(&line) {
                        let addr = addr.map_err(anyhow::Error::msg)?;
                        daemon.listeners.insert(what.to_owned(), addr);
                    }
                }
                Err(_) => {
                    if let Some(status) = daemon.child.try_wait()? {
                        bail!(
                            "{} exited with {status} before it was ready:\n{}",
                            bin.display(),
                            daemon.log_text()
                        );
                    }
                    if started.elapsed() > deadline {
                        bail!("{} not ready within {deadline:?}", bin.display());
                    }
                }
            }
        }
        daemon.ready_after = started.elapsed();
        Ok(daemon)
    }

    /// The address of listener `what` (`public`, `admin`, `submit`…).
    pub(crate) fn addr(&self, what: &str) -> anyhow::Result<SocketAddr> {
        self.listeners
            .get(what)
            .copied()
            .with_context(|| format!("no listener {what:?} among {:?}", self.listeners))
    }

    /// Resident memory now, in KiB (`VmRSS` of /proc/<pid>/status).
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// What the child wrote to stderr so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
