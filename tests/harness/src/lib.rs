//! The end-to-end test harness: real daemon binaries, real receivers, real sockets on 127.0.0.1.
//!
//! - [`Daemon`] starts a binary with a config, reads its `listening <what> <url>` lines and the
//!   final `ready`, fails fast if it dies, kills it on drop and shows its output when a test fails.
//! - [`Receiver`] is a backend that records every request it gets and answers as scripted.
//! - [`wait_for`] polls a condition under a deadline: tests wait for conditions, never for time.
//! - [`TestCa`] issues certificates for TLS tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

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
                    let mut words = line.split_whitespace();
                    if let (Some("listening"), Some(what), Some(url)) =
                        (words.next(), words.next(), words.next())
                    {
                        let addr = url.split("://").nth(1).unwrap_or(url);
                        daemon
                            .listeners
                            .insert(what.to_owned(), addr.parse().unwrap());
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

// ------------------------------------------------------------------ raw HTTP client

/// Sends raw bytes to `addr` and reads the whole answer (the request should say
/// `Connection: close`). Returns the status and the body.
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` over HTTP/1.1.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `POST path` with the given extra header lines (each ending in `\r\n`) and body.
pub fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(addr, &request)
}

// ------------------------------------------------------------------ receivers

/// One request as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a receiver answers: a status with extra headers, or hang until the client gives up.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16, Vec<(String, String)>),
    Hang,
}

type Script = Arc<Mutex<Box<dyn FnMut(&Received) -> Answer + Send>>>;

/// A real HTTP/1.1 + h2c server on 127.0.0.1:0 that records what it gets.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A receiver on a given address (to bring one back on the port a config names).
    pub fn start_on(addr: SocketAddr) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot bind receiver on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Script = Arc::new(Mutex::new(Box::new(|_: &Received| {
            Answer::Status(200, vec![])
        })));
        let (g, s) = (got.clone(), script.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (g, s) = (g.clone(), s.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                let received = Received {
                                    method: parts.method.to_string(),
                                    target: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (
                                                n.to_string(),
                                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                            )
                                        })
                                        .collect(),
                                    body,
                                    at: Instant::now(),
                                };
                                let answer = (s.lock().unwrap())(&received);
                                g.lock().unwrap().push(received);
                                match answer {
                                    Answer::Hang => std::future::pending::<()>().await,
                                    Answer::Status(..) => {}
                                }
                                let Answer::Status(code, headers) = answer else {
                                    unreachable!()
                                };
                                let mut resp =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                                for (n, v) in headers {
                                    resp.headers_mut().insert(
                                        hyper::header::HeaderName::from_bytes(n.as_bytes())
                                            .unwrap(),
                                        hyper::header::HeaderValue::from_str(&v).unwrap(),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Receiver {
            addr,
            got,
            script,
            runtime: Some(runtime),
        }
    }

    /// Sets how the receiver answers from now on.
    pub fn answer(&self, script: impl FnMut(&Received) -> Answer + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the receiver and frees its port.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
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

// ------------------------------------------------------------------ TLS

/// A throw-away certificate authority.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses): (cert PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "whimp test");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ------------------------------------------------------------------ misbehaving receivers

/// How a [`Misbehaving`] receiver treats each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Accept, then reset the connection at once.
    Reset,
    /// Read the request, answer bytes that are not HTTP, close.
    Garbage,
    /// Read the request and say nothing for a long time (longer than any test's timeout).
    Silent,
}

/// A raw TCP server on 127.0.0.1 that misbehaves; counts the connections it got.
pub struct Misbehaving {
    pub addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl Misbehaving {
    pub fn start_on(addr: SocketAddr, how: Misbehaviour) -> Misbehaving {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener =
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (connections.clone(), stop.clone());
        let accepter = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let halt = halt.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    match how {
                        Misbehaviour::Reset => {
                            let _ = rustix::net::sockopt::set_socket_linger(
                                &stream,
                                Some(Duration::ZERO),
                            );
                        }
                        Misbehaviour::Garbage => {
                            let mut buf = [0u8; 4096];
                            let _ = stream.read(&mut buf);
                            let _ =
                                stream.write_all(b"\x00\x01garbage\xff\r\n\r\nHTTP/9.9 banana\r\n");
                        }
                        Misbehaviour::Silent => {
                            let mut buf = [0u8; 4096];
                            let _ = stream.read(&mut buf);
                            while !halt.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                });
            }
        });
        Misbehaving {
            addr,
            connections,
            stop,
            accepter: Some(accepter),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // The listener closes (and its port frees) when the accept loop ends.
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
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

// ------------------------------------------------------------------ idle clients

/// What an idle client sends before falling silent; none of it completes a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing at all.
    Nothing,
    /// One byte, `P`: the start of both `POST` and the HTTP/2 preface.
    OneByte,
    /// The HTTP/2 connection preface and an empty SETTINGS frame, and then no stream.
    H2Preface,
}

impl Idle {
    fn bytes(self) -> &'static [u8] {
        match self {
            Idle::Nothing => b"",
            Idle::OneByte => b"P",
            Idle::H2Preface => {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            }
        }
    }
}

/// How an idle client speaks to the server: plain TCP, or TLS trusting a CA and offering one
/// ALPN protocol (the handshake is completed before falling silent).
#[derive(Debug, Clone, Copy)]
pub enum Wire<'a> {
    Plain,
    Tls { ca_pem: &'a str, alpn: &'a [u8] },
}

/// Opens a connection from `source` (any `127.x.y.z`: the whole block is loopback on Linux, so
/// a test can play many clients) to `addr`, speaks `wire` and sends `idle`'s bytes, and returns
/// the connection, to be watched with [`wait_closed`]. A connection the server closes at once
/// (over a cap) is returned too: it reads as closed.
pub fn hold(addr: SocketAddr, source: std::net::IpAddr, wire: Wire<'_>, idle: Idle) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let family = if source.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("cannot bind a client socket to {source}: {e}"));
    rustix::net::connect(&fd, &addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    match wire {
        Wire::Plain => {
            let _ = stream.write_all(idle.bytes());
        }
        Wire::Tls { ca_pem, alpn } => {
            let mut tls = tls_client(ca_pem, alpn, addr.ip());
            // A refused connection fails the handshake; that is for wait_closed to see.
            while tls.is_handshaking() {
                if tls.complete_io(&mut stream).is_err() {
                    return stream;
                }
            }
            let mut io = rustls::Stream::new(&mut tls, &mut stream);
            let _ = io.write_all(idle.bytes()).and_then(|()| io.flush());
        }
    }
    stream
}

fn tls_client(ca_pem: &str, alpn: &[u8], ip: std::net::IpAddr) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    rustls::ClientConnection::new(Arc::new(config), rustls::pki_types::ServerName::from(ip))
        .unwrap()
}

/// Waits until the server has closed every connection of `held` (end of file or reset),
/// discarding whatever it sends first (TLS records, HTTP/2 SETTINGS); after [`DEADLINE`],
/// panics saying how many of each label are still open.
pub fn wait_closed(held: &mut [(&str, TcpStream)]) {
    let deadline = Instant::now() + DEADLINE;
    let mut open: Vec<&str> = Vec::new();
    for (label, stream) in held.iter_mut() {
        if !closed_by(stream, deadline) {
            open.push(label);
        }
    }
    if !open.is_empty() {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for label in open {
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        panic!("connections still open after {DEADLINE:?}: {counts:?}");
    }
}

fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // A zero timeout means none; a past deadline still gets a last short look.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

// ------------------------------------------------------------------ steady load

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

/// One POST on its own connection with extra header lines (each ending in CRLF); the status, or
/// `None` when the daemon is not there or the answer is cut.
pub fn try_post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
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

impl Tally {
    /// Waits until every acknowledged number reached one of `receivers`, prints the totals
    /// (`what`: sent, acknowledged, delivered, duplicates, lost) and asserts lost = 0.
    /// Returns the duplicates.
    pub fn account(&self, what: &str, receivers: &[&Receiver]) -> usize {
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
        wait_for("every acknowledged message is delivered", || {
            self.acked.is_subset(&delivered().0)
        });
        let (got, duplicates) = delivered();
        let lost = self.acked.difference(&got).count();
        println!(
            "soak {what}: sent {}, acknowledged {}, delivered {}, duplicates {duplicates}, lost {lost}, refused {:?}",
            self.sent,
            self.acked.len(),
            got.len(),
            self.refused
        );
        assert_eq!(lost, 0, "{what}: acknowledged and lost");
        duplicates
    }
}

// ------------------------------------------------------------------ a small disk

/// A tmpfs mounted for a test (a disk that fills up); unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `512k`) at `at`; `None` where mounting is not allowed
    /// (not root), after saying SKIPPED on stderr.
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs at {} here (needs root)",
                at.display()
            );
        }
        mounted.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
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
