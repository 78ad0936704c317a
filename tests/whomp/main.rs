//! whomp end-to-end: the real binary, real receivers and real sockets on 127.0.0.1, DNS stubbed
//! (`dns.static`, or a DNS server of the test's own on 127.0.0.1). The risky cases (hostile
//! targets, DNS rebinding) re-run themselves inside a network namespace that has only loopback
//! when `unshare -n` works, so nothing can leak out. One test binary with modules (STYLE 17).

mod cli;
mod cluster;
mod cluster_api;
mod conns;
mod delivery;
mod events;
mod import;
mod isolated;
mod notify;
mod ops;
mod preflight;
mod secrets;
mod signing;
mod soak;
mod submit;
mod targets;
mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use harness::{wait_for, Daemon};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_whomp");

/// Fast retries so tests do not wait for the production backoff.
pub const FAST_RETRY: &str = "retry: { initial: 200ms, max_interval: 1s, max_age: 1h }\n";

/// A whomp with its own directory (config + spool) and ephemeral ports.
pub struct Whomp {
    pub daemon: Daemon,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Whomp {
    /// Starts whomp with `body` as the config after the listener/admin/spool lines.
    pub fn start(body: &str) -> Whomp {
        Whomp::start_with(body, &[])
    }

    /// Like [`Whomp::start`], with extra files (name, content) written beside the config.
    pub fn start_with(body: &str, files: &[(&str, &str)]) -> Whomp {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            harness::write_file(dir.path(), name, text);
        }
        let config = harness::write_file(dir.path(), "whomp.yaml", &config_text(body));
        let daemon = Daemon::start(Path::new(BIN), &config);
        Whomp {
            daemon,
            config,
            dir,
        }
    }

    /// SIGKILL, then start again on the same directory.
    pub fn restart(&mut self) {
        self.daemon.kill();
        self.daemon = Daemon::start(Path::new(BIN), &self.config);
    }

    /// Replaces the config body (for a SIGHUP reload).
    pub fn rewrite(&self, body: &str) {
        std::fs::write(&self.config, config_text(body)).unwrap();
    }

    pub fn submit_addr(&self) -> std::net::SocketAddr {
        self.daemon.addr("submit")
    }

    /// `POST path` with a JSON body and extra header lines; the answer parsed as JSON.
    pub fn post_json(&self, path: &str, headers: &str, body: &Value) -> (u16, Value) {
        let headers = format!("Content-Type: application/json\r\n{headers}");
        let (status, text) = harness::post(
            self.submit_addr(),
            path,
            &headers,
            body.to_string().as_bytes(),
        );
        (status, parse(&text))
    }

    /// `POST path` with a `message/http` body and extra header lines.
    pub fn post_http(&self, path: &str, headers: &str, message: &[u8]) -> (u16, Value) {
        let headers = format!("Content-Type: message/http\r\n{headers}");
        let (status, text) = harness::post(self.submit_addr(), path, &headers, message);
        (status, parse(&text))
    }

    /// Submits a JSON envelope; returns the id of a `202`, or panics with the answer.
    pub fn submit(&self, envelope: &Value) -> String {
        let (status, body) = self.post_json("/v1/messages", "", envelope);
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/messages/<id>`.
    pub fn status(&self, id: &str) -> Value {
        let (status, text) = harness::get(self.submit_addr(), &format!("/v1/messages/{id}"));
        assert_eq!(status, 200, "{text}");
        parse(&text)
    }

    /// Waits until message `id` is in `state`; returns its status.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        wait_for(&format!("{id} is {state}"), || {
            last = self.status(id);
            last["state"] == state
        });
        last
    }

    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        let config = self.config.to_str().unwrap().to_owned();
        all.push("--config");
        all.push(&config);
        harness::run_cli(Path::new(BIN), &all)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// File names in a spool folder (`new`, `cur`, `done`, `dead`, `tmp`).
    pub fn files(&self, folder: &str) -> Vec<String> {
        harness::files_in(&self.spool_dir().join(folder))
    }

    pub fn metric(&self, sample: &str) -> f64 {
        self.daemon.metric(sample)
    }
}

/// The config: loopback listeners on port 0, the spool in `spool/`, then `body`.
pub fn config_text(body: &str) -> String {
    format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\nspool: {{ dir: spool }}\n{body}"
    )
}

/// Pre-flight and DNS for delivering to receivers on 127.0.0.1: plain http allowed to
/// `ports`, 127.0.0.1 allowed as an exception, `names` resolving to 127.0.0.1 by `dns.static`,
/// and a DNS server address where nothing answers, so no other name resolves.
pub fn local(ports: &[u16], names: &[&str]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let names: Vec<String> = names.iter().map(|n| format!("{n}: [127.0.0.1]")).collect();
    format!(
        "preflight: {{ allow_http: true, methods: [POST, PUT], ports: [{}], allow_cidrs: [127.0.0.1/32] }}\n\
         dns: {{ servers: [\"127.0.0.1:9\"], static: {{ {} }} }}\n",
        ports.join(", "),
        names.join(", ")
    )
}

/// A JSON envelope.
pub fn envelope(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let headers: Vec<Value> = headers
        .iter()
        .map(|(n, v)| Value::from(vec![*n, *v]))
        .collect();
    serde_json::json!({"method": method, "url": url, "headers": headers, "body": body})
}

/// Parses an answer body as JSON (`Null` if it is not).
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A DNS server on 127.0.0.1 whose answers a test changes while whomp runs.
pub struct Dns {
    pub server: netguard::testing::DnsServer,
    _runtime: tokio::runtime::Runtime,
}

impl Dns {
    pub fn start(answers: HashMap<String, Vec<IpAddr>>) -> Dns {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(netguard::testing::DnsServer::start(answers))
            .unwrap();
        Dns {
            server,
            _runtime: runtime,
        }
    }
}
