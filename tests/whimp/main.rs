//! whimp end-to-end: the real binary, real receivers and real sockets on 127.0.0.1.
//! One test binary with modules (STYLE 17), so it links once.

mod accept;
mod cli;
mod cluster;
mod conns;
mod faults;
mod forward;
mod import;
mod logs;
mod ops;
mod secrets;
mod soak;
mod tls;

use std::path::{Path, PathBuf};

use harness::Daemon;

pub const BIN: &str = env!("CARGO_BIN_EXE_whimp");

/// A whimp with its own directory (config + spool) and ephemeral ports.
pub struct Whimp {
    pub daemon: Daemon,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Whimp {
    /// Starts whimp with `body` as the config after the listener/admin/spool lines.
    pub fn start(body: &str) -> Whimp {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), body);
        let daemon = Daemon::start(Path::new(BIN), &config);
        Whimp {
            daemon,
            config,
            dir,
        }
    }

    /// Starts again on the same directory (after a kill or a stop).
    pub fn restart(&mut self) {
        self.daemon.kill();
        self.daemon = Daemon::start(Path::new(BIN), &self.config);
    }

    pub fn post(&self, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        harness::post(self.daemon.addr("public"), path, headers, body)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// File names in a spool folder (`new`, `cur`, `done`, `dead`, `tmp`).
    pub fn files(&self, folder: &str) -> Vec<String> {
        files_in(&self.spool_dir().join(folder))
    }

    /// Messages still to deliver or being written.
    pub fn pending(&self) -> usize {
        self.files("new").len() + self.files("cur").len() + self.files("tmp").len()
    }

    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config.to_str().unwrap().to_owned();
        all.push("--config");
        all.push(&config);
        harness::run_cli(Path::new(BIN), &all)
    }

    /// `spool list --json` as parsed objects.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.cli(&["spool", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Writes `whimp.yaml` in `dir` with loopback listeners on port 0 and the spool in `dir/spool`.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let text = if body.contains("listen:") {
        format!("admin: {{ addr: 127.0.0.1:0 }}\nspool: {{ dir: spool }}\n{body}")
    } else {
        format!("listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\nspool: {{ dir: spool }}\n{body}")
    };
    harness::write_file(dir, "whimp.yaml", &text)
}

pub use harness::files_in;

/// A route block forwarding `path` (named `name`) to `urls`, with fast retries for tests.
pub fn route(name: &str, path: &str, urls: &[String], extra: &str) -> String {
    let backends: Vec<String> = urls
        .iter()
        .map(|u| format!("{{ url: \"{u}\", timeout: 5s }}"))
        .collect();
    format!(
        "  - path: {path}\n    name: {name}\n    backends: [{}]\n{extra}",
        backends.join(", ")
    )
}

/// Fast retries so tests do not wait for the production backoff.
pub const FAST_RETRY: &str = "retry: { initial: 100ms, max_interval: 400ms, max_age: 1h }\n";
