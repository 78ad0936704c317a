//! The start-up kit both daemons are wired with, so that whimp and whomp start, serve, reload and
//! stop the same way and each daemon's `run` holds only what is its own.
//!
//! A [`Kit`] owns what every daemon has whatever it accepts: its storage (opened and locked
//! first), the set of its long-lived tasks and the signal that stops them. A daemon's `run` takes
//! a kit, its bound [`Listeners`] and its [`Signals`] (what a caller injects, as in mini-redis's
//! `run(listener, shutdown)`), builds its own parts from its config, and hands them over:
//! [`Kit::serve`] for its listeners, [`Kit::admin`], [`Kit::deliver`] (which prints `ready`), then
//! [`Kit::until_shutdown`], which reloads on SIGHUP and drains on SIGTERM. A reload swaps a
//! [`Current`] and the certificates whole or not at all ([`reload`]).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use storage::Storage as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listen::{Budget, ConnLimits, Endpoint, Peer, Resp};
use crate::start::StartError;
use crate::tls::Certs;
use crate::{Signal, Signals};

/// The durable storage a kit holds: the maildir spool or the JetStream cluster, as the config's
/// `queue.backend` says. The one place its type is named.
pub use crate::queue::Storage;

/// How long in-flight requests and delivery attempts may finish after shutdown is asked.
pub const GRACE: Duration = Duration::from_secs(10);

/// Connections the admin listener holds at once (Prometheus, probes, the CLI), a budget of its
/// own: a flood of the public listeners cannot starve scrapes, nor a flood of the admin
/// listener the public ones.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// A daemon being started: its storage, its tasks and the signal that stops them.
pub struct Kit {
    storage: Storage,
    /// How long `done/` keeps delivered messages.
    retention: Duration,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
}

/// The bound sockets a daemon serves, bound before anything is announced so that a
/// half-started daemon never looks ready.
pub struct Listeners {
    /// The daemon's own listeners (whimp's public ones, whomp's submit ones), each plain or TLS,
    /// in the order of the config.
    pub endpoints: Vec<Endpoint>,
    pub admin: TcpListener,
    /// The certificates of the TLS ones, which a reload reads again.
    pub tls: TlsListeners,
}

/// The connection limits of a daemon's own listeners, from its config's `limits`.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections open at once over all of them.
    pub max_connections: usize,
    /// Of those, from one source (an IPv4 address or an IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Longest time a connection may go without a request in progress.
    pub header_timeout: Duration,
}

/// What the admin listener exports, and the counter of connections the listeners drop.
pub struct Exports {
    /// `/metrics`.
    pub registry: prometheus::Registry,
    /// The spool gauges, refreshed at each scrape.
    pub gauges: telemetry::SpoolGauges,
    /// `*_connections_dropped_total{reason}`.
    pub dropped: prometheus::IntCounterVec,
}

impl Listeners {
    /// Binds every listener of `listen` (certificates read as `check-config` reads them) and
    /// the admin listener at `admin`.
    pub async fn bind(
        listen: &[config::Listener],
        admin: SocketAddr,
    ) -> Result<Listeners, StartError> {
        let certs = crate::tls::load_listeners(listen).map_err(|problems| {
            let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            StartError::Config(messages.join("\n"))
        })?;
        let mut endpoints = Vec::with_capacity(listen.len());
        for (listener, tls) in listen.iter().zip(certs) {
            endpoints.push(Endpoint {
                listener: bind(listener.addr).await?,
                tls,
            });
        }
        let tls = TlsListeners::new(listen, &endpoints);
        Ok(Listeners {
            endpoints,
            admin: bind(admin).await?,
            tls,
        })
    }
}

impl Kit {
    /// Opens the backend `queue` names: the spool of `spool` (locked), or the JetStream
    /// cluster, sized for bodies up to `max_body_bytes`.
    pub async fn open(
        spool: &config::Spool,
        queue: &config::Queue,
        max_body_bytes: u64,
    ) -> Result<Kit, StartError> {
        Ok(Kit {
            storage: Storage::open(spool, queue, max_body_bytes).await?,
            retention: spool.retention,
            tasks: JoinSet::new(),
            stop: watch::channel(false).0,
        })
    }

    /// The storage, for the daemon's accept path.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Opens the daemon's doors: its own `endpoints` (`what`: `public` or `submit`) under one
    /// connection budget of `caps`, serving each request with `handle`, and its `admin` listener
    /// exporting `exports`. Both daemons call this once; it is [`Kit::serve`] and
    /// [`Kit::admin`] with the budget made from the config's limits.
    pub fn open_doors<H, F>(
        &mut self,
        what: &str,
        endpoints: Vec<Endpoint>,
        admin: TcpListener,
        caps: Caps,
        exports: Exports,
        handle: H,
    ) -> Result<(), StartError>
    where
        H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Resp> + Send + 'static,
    {
        let budget = Budget::new(
            caps.max_connections,
            caps.max_connections_per_ip,
            Some(exports.dropped),
        );
        self.serve(what, endpoints, budget, caps.header_timeout, handle)?;
        self.admin(admin, exports.registry, exports.gauges, caps.header_timeout)
    }

    /// Serves `handle` on every one of `endpoints`, each announced as
    /// `listening <what> <scheme>://<addr>`, all drawing on `budget`, until shutdown.
    pub fn serve<H, F>(
        &mut self,
        what: &str,
        endpoints: Vec<Endpoint>,
        budget: Arc<Budget>,
        header_timeout: Duration,
        handle: H,
    ) -> Result<(), StartError>
    where
        H: Fn(Peer, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Resp> + Send + 'static,
    {
        let limits = ConnLimits {
            budget,
            header_timeout,
            grace: GRACE,
        };
        for endpoint in endpoints {
            let scheme = if endpoint.tls.is_some() {
                "https"
            } else {
                "http"
            };
            crate::announce(what, scheme, local_addr(&endpoint.listener)?);
            self.tasks.spawn(crate::listen::serve(
                endpoint,
                limits.clone(),
                handle.clone(),
                self.stop.subscribe(),
            ));
        }
        Ok(())
    }

    /// Serves the admin listener on `socket` until shutdown: readiness from the storage, the
    /// storage gauges of `gauges` refreshed before each scrape of `registry`, and the spool
    /// endpoints the CLI uses; a budget of [`ADMIN_MAX_CONNECTIONS`] and the daemon's
    /// `header_timeout`. Announces it as `listening admin http://<addr>` and notes its address
    /// in the spool.
    pub fn admin(
        &mut self,
        socket: TcpListener,
        registry: prometheus::Registry,
        gauges: telemetry::SpoolGauges,
        header_timeout: Duration,
    ) -> Result<(), StartError> {
        if let Some(spool) = self.storage.maildir() {
            // The offline CLI asks the daemon holding the lock; with JetStream it asks the
            // cluster itself.
            crate::note_admin_addr(spool.dir(), local_addr(&socket)?);
        }
        let (ready, counted) = (self.storage.clone(), self.storage.clone());
        let admin = Arc::new(telemetry::Admin {
            registry,
            readiness: Arc::new(move || ready.unhealthy_reason()),
            refresh: Arc::new(move || {
                let c = counted.counts();
                let oldest = counted.oldest_age().unwrap_or_default();
                gauges.set(c.queued, c.retrying, c.in_flight, oldest);
                gauges.set_ready(counted.unhealthy_reason().is_none());
            }),
            extra: Some(crate::spool_admin(self.storage.clone())),
        });
        let endpoint = Endpoint {
            listener: socket,
            tls: None,
        };
        let budget = Budget::new(ADMIN_MAX_CONNECTIONS, ADMIN_MAX_CONNECTIONS, None);
        self.serve(
            "admin",
            vec![endpoint],
            budget,
            header_timeout,
            move |_, req| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
        )
    }

    /// Starts the work beside the listeners, the delivery loop over the storage (at most
    /// `concurrency` attempts, `per_destination` to one destination) and the pruning of `done/`,
    /// both stopping with the kit; then prints `ready`: every listener is bound and announced.
    pub fn deliver<C: delivery::Courier>(
        &mut self,
        courier: Arc<C>,
        concurrency: usize,
        per_destination: usize,
    ) {
        let limits = delivery::Limits {
            concurrency,
            per_destination,
            grace: GRACE,
        };
        self.tasks.spawn(delivery::run(
            self.storage.clone(),
            courier,
            limits,
            stopped(self.stop.subscribe()),
        ));
        self.tasks.spawn(prune(
            self.storage.clone(),
            self.retention,
            self.stop.subscribe(),
        ));
        crate::ready();
    }

    /// Runs until `signals` asks for shutdown (or ends), calling `reload` at each reload; then
    /// stops accepting, lets in-flight work finish within [`GRACE`] and returns.
    pub async fn until_shutdown(mut self, mut signals: Signals, mut reload: impl FnMut()) {
        while signals.recv().await == Some(Signal::Reload) {
            reload();
        }
        tracing::info!("shutting down: nothing new accepted; finishing what is in flight");
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("stopped");
    }
}

/// A value a reload replaces whole (whimp's route table, whomp's live settings): a request or
/// an attempt takes a snapshot with [`Current::get`] and keeps it, so it sees one version.
#[derive(Debug, Default)]
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        Current(RwLock::new(Arc::new(value)))
    }

    /// A snapshot, held for one request or one attempt.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

/// The certificates of a daemon's TLS listeners, each with its configured address (the
/// `listener` label of `*_tls_certificate_expiry_timestamp_seconds`).
#[derive(Debug, Clone, Default)]
pub struct TlsListeners(Vec<(String, Arc<Certs>)>);

impl TlsListeners {
    /// The TLS ones of `endpoints`, bound from `listeners` in the same order.
    fn new(listeners: &[config::Listener], endpoints: &[Endpoint]) -> TlsListeners {
        TlsListeners(
            listeners
                .iter()
                .zip(endpoints)
                .filter_map(|(l, e)| Some((l.addr.to_string(), e.tls.clone()?)))
                .collect(),
        )
    }

    /// Sets the expiry gauge of every listener from the certificate it serves.
    pub fn export(&self, gauges: &telemetry::ConfigGauges) {
        for (listener, certs) in &self.0 {
            if let Some(not_after) = certs.not_after() {
                gauges.certificate_expiry(listener, not_after);
            }
        }
    }
}

/// Finishes a SIGHUP reload: `built` is the new config made ready to swap in, or every problem
/// found with it. The certificates are read again too; only if all of that succeeds is the new
/// config swapped in and the new certificates put in use, so that a reload takes whole or not at
/// all (the old config and certificates keep running, logged and counted as a failed reload).
/// Whether it took.
pub fn reload(
    built: Result<impl FnOnce(), String>,
    tls: &TlsListeners,
    gauges: &telemetry::ConfigGauges,
) -> bool {
    let certs: Vec<Arc<Certs>> = tls.0.iter().map(|(_, c)| c.clone()).collect();
    let ready = built.and_then(|swap| Ok((swap, crate::tls::stage(&certs)?)));
    match ready {
        Ok((swap, staged)) => {
            swap();
            staged.install();
            tls.export(gauges);
            gauges.reloaded(true);
            true
        }
        Err(problems) => {
            gauges.reloaded(false);
            for line in problems.lines() {
                tracing::error!(
                    problem = line,
                    "new config refused; the old one keeps running"
                );
            }
            false
        }
    }
}

fn local_addr(socket: &TcpListener) -> Result<SocketAddr, StartError> {
    socket
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Resolves once shutdown is asked.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Deletes delivered messages past their retention, every tenth of it (1 min to 1 h), until stop.
async fn prune(storage: Storage, retention: Duration, stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        match storage::Storage::prune(&storage, retention).await {
            Ok(n) if n > 0 => {
                tracing::info!(removed = n, "pruned delivered messages past retention")
            }
            Err(e) => tracing::warn!(error = %e, "pruning done/ failed"),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::Response;
    use telemetry::names;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;

    use super::*;
    use crate::listen::tests::wait_until;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// A `queue:` section choosing the maildir.
    pub(crate) fn maildir() -> config::Queue {
        config::Queue {
            backend: config::Backend::Maildir,
            servers: Vec::new(),
            replicas: 1,
            stream: "test".into(),
            token: None,
            user: None,
            password: None,
            ca_file: None,
            ack_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A kit on injected listeners and signals: it serves, answers on its admin listener, calls
    /// the reload at each reload and returns once shutdown is asked.
    #[tokio::test]
    async fn a_kit_serves_reloads_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let spool = config::Spool {
            dir: dir.path().join("spool"),
            fsync: false,
            retention: Duration::from_secs(3600),
        };
        let mut kit = Kit::open(&spool, &maildir(), 1024).await.unwrap();
        let public = [config::Listener {
            addr: loopback(),
            tls: None,
        }];
        let listeners = Listeners::bind(&public, loopback()).await.unwrap();
        let served = listeners.endpoints[0].listener.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let timeout = Duration::from_secs(30);
        kit.serve(
            "public",
            listeners.endpoints,
            Budget::new(4, 4, None),
            timeout,
            |_, _| async { Response::new(Full::new(Bytes::from_static(b"served"))) },
        )
        .unwrap();
        let registry = telemetry::registry();
        let gauges = telemetry::SpoolGauges::new(
            &registry,
            names::WHIMP_SPOOL_MESSAGES,
            names::WHIMP_SPOOL_OLDEST_MESSAGE_AGE_SECONDS,
            names::WHIMP_READY,
        );
        kit.admin(listeners.admin, registry, gauges, timeout)
            .unwrap();

        let (signal, signals) = mpsc::channel(1);
        let reloads = Arc::new(AtomicUsize::new(0));
        let counted = reloads.clone();
        let running = tokio::spawn(kit.until_shutdown(signals, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));

        assert!(get(served, "/").await.ends_with("served"));
        assert!(get(admin, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert_eq!(
            std::fs::read_to_string(spool.dir.join(crate::cli::ADMIN_ADDR_FILE)).unwrap(),
            format!("{admin}\n")
        );
        signal.send(Signal::Reload).await.unwrap();
        wait_until("the reload is made", || reloads.load(Ordering::SeqCst) == 1).await;
        signal.send(Signal::Shutdown).await.unwrap();
        tokio::time::timeout(timeout, running)
            .await
            .expect("the kit stops when told")
            .unwrap();
        assert!(
            TcpStream::connect(served).await.is_err(),
            "the listener is closed"
        );
        assert_eq!(reloads.load(Ordering::SeqCst), 1);
    }

    /// The end of the signal channel stops a kit too, and a stopped kit lets go of its spool.
    #[tokio::test]
    async fn a_kit_stops_when_its_signals_end_and_lets_go_of_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = config::Spool {
            dir: dir.path().to_path_buf(),
            fsync: false,
            retention: Duration::from_secs(3600),
        };
        let kit = Kit::open(&spool, &maildir(), 1024).await.unwrap();
        assert!(matches!(
            Kit::open(&spool, &maildir(), 1024).await,
            Err(StartError::Locked(_))
        ));
        let (signal, signals) = mpsc::channel(1);
        drop(signal);
        kit.until_shutdown(signals, || panic!("no reload was asked"))
            .await;
        Kit::open(&spool, &maildir(), 1024)
            .await
            .expect("the spool is free again");
    }

    #[test]
    fn a_snapshot_keeps_the_version_it_was_taken_from() {
        let current = Current::new("old");
        let before = current.get();
        current.set("new");
        assert_eq!((*before, *current.get()), ("old", "new"));
    }
}
