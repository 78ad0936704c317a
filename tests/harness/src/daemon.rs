//! A daemon binary under test: started with a config, known by the `listening <what> <url>`
//! lines and the final `ready` it prints, failed fast if it dies, killed on drop with its
//! output shown when a test fails; its metrics and its command line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{get, DEADLINE};

/// A running daemon binary.
pub struct Daemon {
    child: Option<Child>,
    listeners: HashMap<String, SocketAddr>,
    output: Arc<Mutex<String>>,
    pub bin: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts `bin --config config` and waits for its `ready` line.
    pub fn start(bin: &Path, config: &Path) -> Daemon {
        Daemon::start_with(bin, config, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut out = sink.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("[stdout] {line}\n"));
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            listeners: HashMap::new(),
            output,
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line == "ready" => break,
                Ok(line) => {
                    if let Some((what, addr)) = listening(&line) {
                        let addr = addr.unwrap_or_else(|e| panic!("{e}"));
                        daemon.listeners.insert(what.to_owned(), addr);
                    }
                }
                Err(_) => {
                    if let Some(status) = daemon.try_exit() {
                        panic!(
                            "{} exited with {status} before it was ready:\n{}",
                            bin.display(),
                            daemon.output()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} not ready in time:\n{}",
                        bin.display(),
                        daemon.output()
                    );
                }
            }
        }
        daemon
    }

    /// The address of listener `what` (e.g. `public`, `admin`, `submit`).
    pub fn addr(&self, what: &str) -> SocketAddr {
        *self
            .listeners
            .get(what)
            .unwrap_or_else(|| panic!("no listener {what:?} in {:?}", self.listeners))
    }

    /// Everything the daemon wrote to stderr (and stdout, marked) so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal (e.g. `SIGHUP`).
    pub fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid()) {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_exit() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop on SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The admin listener's `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = get(self.addr("admin"), "/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The value of one sample in `/metrics`, e.g. `whimp_requests_total{code="200",route="demo"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_in(&self.metrics(), sample)
    }
}

/// A sample's value in a Prometheus text page, 0 if absent.
pub fn metric_in(page: &str, sample: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- output of {}:\n{}-----",
                self.bin.display(),
                self.output()
            );
        }
    }
}

/// Runs a command-line invocation of a daemon binary; returns (exit code, stdout, stderr).
pub fn run_cli(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The listener a start-up line announces: `listening <what> <scheme>://<addr>` (as
/// `daemon::announce` prints it) gives `what` and the address, or why the address does not
/// parse; any other line gives `None`. The bench reads its children's lines with it too.
pub fn listening(line: &str) -> Option<(&str, Result<SocketAddr, String>)> {
    let mut words = line.split_whitespace();
    let (Some("listening"), Some(what), Some(url)) = (words.next(), words.next(), words.next())
    else {
        return None;
    };
    let addr = url.split("://").nth(1).unwrap_or(url);
    Some((
        what,
        addr.parse()
            .map_err(|e| format!("listener {what} announced a bad address {addr:?}: {e}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_up_lines() {
        let (what, addr) = listening("listening public https://127.0.0.1:8443").unwrap();
        assert_eq!(
            (what, addr),
            ("public", Ok("127.0.0.1:8443".parse().unwrap()))
        );
        assert_eq!(listening("ready"), None);
        assert_eq!(listening("listening admin"), None);
        let (_, bad) = listening("listening admin http://nowhere").unwrap();
        assert!(bad
            .unwrap_err()
            .starts_with("listener admin announced a bad address"));
    }
}
