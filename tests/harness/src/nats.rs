//! Real nats-server processes with JetStream for the cluster backend's tests: one server (R1) or
//! a cluster of several on loopback, each on its own ephemeral ports and store directory, that a
//! test can SIGKILL and restart on the same ports and store, or freeze (SIGSTOP) for a while.
//!
//! The binary is `nats-server` on the PATH (`.ci/setup/nats.sh` installs the tested version).
//! Without it, [`Nats::single`] and [`Nats::cluster`] fail under CI (`CI=true`) and otherwise
//! print `SKIPPED` and return `None`, so a developer without the server can still run the rest.
//! Readiness is the monitoring port's `/healthz`, polled under [`DEADLINE`], never a sleep.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, DEADLINE};

/// The largest message the servers take: whimp's and whomp's 10 MiB body limit, plus room for
/// the request head and headers (the backend's stream max message size is below it).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// One nats-server of a [`Nats`] group: its fixed ports and store, and its process while up.
struct Server {
    name: String,
    client: u16,
    monitor: u16,
    route: u16,
    config: PathBuf,
    process: Option<Child>,
}

/// A running group of nats-servers with JetStream; every process is killed on drop.
pub struct Nats {
    servers: Vec<Server>,
    clustered: bool,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// One server with JetStream (for R1 streams), or `None` when the binary is missing locally.
    pub fn single() -> Option<Nats> {
        Nats::start(1, false)
    }

    /// `n` servers routed to each other as one cluster (`harness`), each with JetStream, or
    /// `None` when the binary is missing locally. Ready when every server reports healthy,
    /// JetStream meta leader included.
    pub fn cluster(n: usize) -> Option<Nats> {
        Nats::start(n, true)
    }

    fn start(n: usize, clustered: bool) -> Option<Nats> {
        if !installed() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut servers: Vec<Server> = (0..n)
            .map(|i| Server {
                name: format!("n{i}"),
                client: free_port(),
                monitor: free_port(),
                route: free_port(),
                config: dir.path().join(format!("n{i}.conf")),
                process: None,
            })
            .collect();
        let routes: Vec<String> = servers
            .iter()
            .map(|s| format!("\"nats-route://127.0.0.1:{}\"", s.route))
            .collect();
        for s in &servers {
            let store = dir.path().join(&s.name);
            let mut text = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                 max_payload: {MAX_PAYLOAD}\njetstream {{\n  store_dir: \"{store}\"\n}}\n",
                name = s.name,
                client = s.client,
                monitor = s.monitor,
                store = store.display(),
            );
            if clustered {
                text += &format!(
                    "cluster {{\n  name: harness\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                    s.route,
                    routes.join(", ")
                );
            }
            std::fs::write(&s.config, text).unwrap();
        }
        for s in &mut servers {
            s.process = Some(spawn(s));
        }
        let nats = Nats {
            servers,
            clustered,
            _dir: dir,
        };
        for i in 0..n {
            nats.wait_ready(i);
        }
        Some(nats)
    }

    /// The client URL of server `i`: `nats://127.0.0.1:<port>`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client)
    }

    /// Every server's client URL, as a `queue.servers` list takes them.
    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// The monitoring address of server `i` (`/healthz`, `/jsz`, `/varz`).
    pub fn monitor(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.servers[i].monitor))
    }

    /// SIGKILLs server `i` and reaps it; its ports and store stay for [`Nats::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs server `i`: its connections stay open and nothing it is asked is answered (a
    /// server frozen, or lost with requests in flight), until [`Nats::resume`].
    pub fn pause(&self, i: usize) {
        self.signal(i, rustix::process::Signal::STOP);
        // A stop reaches each thread when it is next scheduled: on a busy machine a thread can
        // still answer a request after kill() returned. Frozen means every thread stopped.
        if let Some(pid) = self.servers[i].process.as_ref().map(Child::id) {
            crate::wait_for("nats-server stopped", || all_stopped(pid));
        }
    }

    /// SIGCONTs server `i` after [`Nats::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, rustix::process::Signal::CONT);
    }

    fn signal(&self, i: usize, signal: rustix::process::Signal) {
        let pid = self.servers[i].process.as_ref().map(|c| c.id() as i32);
        if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            rustix::process::kill_process(pid, signal).unwrap();
        }
    }

    /// Starts server `i` again on its ports and store, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let child = spawn(&self.servers[i]);
        self.servers[i].process = Some(child);
        self.wait_ready(i);
    }

    fn wait_ready(&self, i: usize) {
        // A lone server is ready with JetStream on; a clustered one when it also knows the
        // JetStream meta leader (plain /healthz checks that).
        let path = if self.clustered {
            "/healthz"
        } else {
            "/healthz?js-enabled-only=true"
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if healthz(self.monitor(i), path) == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} not healthy at {path} within {DEADLINE:?}",
                self.servers[i].name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// Whether nats-server runs here: panics under CI without it, says SKIPPED otherwise.
fn installed() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is not installed (run .ci/setup/nats.sh)"
        );
        eprintln!("SKIPPED: nats-server is not installed (run .ci/setup/nats.sh)");
    }
    found
}

fn spawn(s: &Server) -> Child {
    Command::new("nats-server")
        .arg("-c")
        .arg(&s.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The status of `GET path` on a monitoring port, or `None` when nothing answers yet.
fn healthz(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_server_restarts_on_its_ports() {
        let Some(mut nats) = Nats::single() else {
            return;
        };
        let url = nats.url(0);
        nats.kill(0);
        assert_eq!(healthz(nats.monitor(0), "/healthz"), None, "killed");
        nats.restart(0);
        assert_eq!(nats.url(0), url, "same port");
    }

    #[test]
    fn a_cluster_of_three_is_healthy_and_survives_a_kill() {
        let Some(mut nats) = Nats::cluster(3) else {
            return;
        };
        assert_eq!(nats.urls().len(), 3);
        nats.kill(1);
        nats.restart(1);
        for i in 0..3 {
            assert_eq!(healthz(nats.monitor(i), "/healthz"), Some(200));
        }
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    })
}
