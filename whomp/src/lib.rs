//! whomp, the webhook-out daemon: internal services hand it the HTTP message they want sent;
//! whomp checks where it would go (pre-flight), stores it durably, answers with an id, and
//! delivers it with backoff however long the receiver is down, connecting only to addresses it
//! checked.
//!
//! - [`submit`]: the submission API (`/v1/messages`, `/v1/preflight`, status, retry);
//! - [`stored`]: the spool file of a message;
//! - [`courier`]: one delivery attempt, after a fresh pre-flight;
//! - [`live`]: the settings SIGHUP swaps, and the client's checked-address resolver;
//! - [`idempotency`]: the `Idempotency-Key` map;
//! - [`sign`]: Standard Webhooks signatures;
//! - [`metrics`]: whomp's metric handles;
//! - [`run`]: start-up and the control loop (reload, drain), fed by signals in [`serve`].

pub mod courier;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod sign;
pub mod stored;
pub mod submit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use server::daemon::{self, Daemon};
use server::listen::{Budget, ConnLimits, Endpoint};
use server::Signal;
use storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::courier::Courier;
use crate::idempotency::Keys;
use crate::live::{Current, Live};
use crate::metrics::Metrics;
use crate::submit::Submissions;

/// How long in-flight submissions and attempts may finish after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(10);

pub use server::daemon::StartError;

/// What the control loop of [`run`] reacts to.
#[derive(Debug)]
pub enum Control {
    /// Apply this (already validated) config's reloadable parts, with fresh certificates.
    Reload(Box<config::whomp::Config>),
    /// A reload whose config file was refused (already logged): count it as failed.
    Refused,
    /// Stop accepting, finish in-flight work within [`GRACE`], return.
    Shutdown,
}

/// The bound sockets [`run`] serves: tests may bind their own.
#[derive(Debug)]
pub struct Listeners {
    /// The submission listeners, each plain or TLS.
    pub submit: Vec<Endpoint>,
    pub admin: TcpListener,
}

/// Binds every listener of `config` (certificates read now).
pub async fn bind(config: &config::whomp::Config) -> Result<Listeners, StartError> {
    let submit = daemon::bind_endpoints(&config.listen).await?;
    let admin = daemon::bind(config.admin.addr).await?;
    Ok(Listeners { submit, admin })
}

/// A short name of what a stored whomp file is for (`spool list` target column): its URL.
pub fn describe(head: &[u8]) -> String {
    stored::describe(head)
}

/// Runs whomp on `listeners` until `control` says [`Control::Shutdown`] (or is closed).
///
/// Opens (and locks) the spool, rebuilds the idempotency keys, announces every listener as
/// `listening submit|admin <url>`, prints `ready`, then serves and delivers.
pub async fn run(
    config: config::whomp::Config,
    listeners: Listeners,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    let spool = daemon::open_spool(&config.spool)?;
    let live = Arc::new(Current::new(
        Live::build(&config).map_err(|e| StartError::Config(e.to_string()))?,
    ));
    let metrics = Metrics::new();
    let keys = {
        let dir = config.spool.dir.clone();
        tokio::task::spawn_blocking(move || Keys::load(&dir, idempotency::CAPACITY))
            .await
            .map_err(|e| StartError::Runtime(format!("cannot read idempotency keys: {e}")))?
    };
    let keys = Arc::new(keys);
    let tls = daemon::TlsListeners::new(&config.listen, &listeners.submit);
    tls.export(&metrics.config);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let submissions = Arc::new(Submissions {
        live: live.clone(),
        spool: spool.clone(),
        keys: keys.clone(),
        metrics: metrics.clone(),
        max_body_bytes: config.limits.max_body_bytes,
    });
    let limits = ConnLimits {
        budget: Budget::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
            Some(metrics.connections_dropped.clone()),
        ),
        header_timeout: config.limits.header_timeout,
        grace: GRACE,
    };
    for endpoint in listeners.submit {
        daemon::announce_endpoint("submit", &endpoint)?;
        let submissions = submissions.clone();
        tasks.spawn(server::listen::serve(
            endpoint,
            limits.clone(),
            move |peer, req| {
                let submissions = submissions.clone();
                async move { submissions.handle(peer, req).await }
            },
            stop_rx.clone(),
        ));
    }
    let admin = daemon::admin(
        &listeners.admin,
        metrics.registry.clone(),
        &spool,
        metrics.spool_messages.clone(),
    )?;
    tasks.spawn(daemon::serve_admin(
        admin,
        listeners.admin,
        config.limits.header_timeout,
        GRACE,
        stop_rx.clone(),
    ));

    let courier = Arc::new(Courier {
        live: live.clone(),
        metrics: metrics.clone(),
    });
    let delivery_limits = delivery::Limits {
        concurrency: config.delivery.concurrency,
        per_destination: config.limits.max_in_flight_per_host,
        grace: GRACE,
    };
    daemon::deliver_and_announce_ready(
        &mut tasks,
        &spool,
        courier,
        delivery_limits,
        config.spool.retention,
        &stop_rx,
    );
    let counts = spool.counts();
    tracing::info!(
        spool = %config.spool.dir.display(),
        queued = counts.queued + counts.retrying,
        idempotency_keys = keys.len(),
        "whomp started"
    );

    while let Some(event) = control.recv().await {
        match event {
            Control::Reload(config) => reload(&config, &live, &tls, &metrics),
            Control::Refused => metrics.config.reloaded(false),
            Control::Shutdown => break,
        }
    }
    tracing::info!("shutting down: no new submissions; finishing attempts in flight");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    Ok(())
}

/// Runs whomp as the binary does: binds per `config`, turns SIGHUP into a reload of the file
/// at `config_path` (refused with a log line if invalid) and SIGTERM/SIGINT into a drain.
pub async fn serve(config_path: PathBuf, config: config::whomp::Config) -> Result<(), StartError> {
    let listeners = bind(&config).await?;
    let mut signals = server::Signals::new()
        .map_err(|e| StartError::Runtime(format!("cannot watch signals: {e}")))?;
    let (tx, rx) = mpsc::channel(4);
    let watcher = tokio::spawn(async move {
        loop {
            let event = match signals.next().await {
                Signal::Reload => match load(&config_path) {
                    Some(config) => Control::Reload(Box::new(config)),
                    None => Control::Refused,
                },
                Signal::Shutdown => Control::Shutdown,
            };
            let last = matches!(event, Control::Shutdown);
            if tx.send(event).await.is_err() || last {
                return;
            }
        }
    });
    let result = run(config, listeners, rx).await;
    watcher.abort();
    result
}

/// Re-reads the config file for a reload; `None` (logged) if it is invalid.
fn load(path: &Path) -> Option<config::whomp::Config> {
    match config::load_whomp(path) {
        Ok(config) => Some(config),
        Err(e) => {
            daemon::log_refused(&e.to_string());
            None
        }
    }
}

/// Swaps the reloadable settings and the certificates if `config` makes valid ones and every
/// certificate loads, else keeps the old ones (logged, and counted as a failed reload).
fn reload(
    config: &config::whomp::Config,
    live: &Current,
    tls: &daemon::TlsListeners,
    metrics: &Metrics,
) {
    let built = Live::build(config).map_err(|e| e.to_string());
    if daemon::reload(
        built.map(|fresh| move || live.set(fresh)),
        tls,
        &metrics.config,
    ) {
        tracing::info!(
            "config reloaded: pre-flight rules, dns, tokens, signing keys, retry policy, delivery \
             timeouts, user agent and CA (listeners, spool, limits and delivery.concurrency take \
             effect at the next start)"
        );
    }
}

/// whomp as `server::daemon::main` runs it.
#[derive(Debug)]
pub struct Whomp;

impl Daemon for Whomp {
    const NAME: &'static str = "whomp";
    const IDENT: &'static std::ffi::CStr = c"whomp";
    const ABOUT: &'static str = "webhook out";
    type Config = config::whomp::Config;

    fn load(path: &Path) -> Result<Self::Config, config::ConfigError> {
        config::load_whomp(path)
    }

    fn check(config: &Self::Config) -> Result<String, Vec<config::Problem>> {
        // DNS, the HTTP client and certificates are checked the way the daemon builds them (the
        // rules and the policy were checked by config), every problem told.
        let mut problems = match Live::build(config) {
            Ok(_) => Vec::new(),
            Err(e) => daemon::unplaced(&e.to_string()),
        };
        if let Err(certs) = server::tls::load_listeners(&config.listen) {
            problems.extend(certs);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(format!(
            "{} signing keys, {} tokens",
            config.signing.keys.len(),
            config.auth.tokens.len()
        ))
    }

    fn spool(config: &Self::Config) -> &config::Spool {
        &config.spool
    }

    fn admin(config: &Self::Config) -> SocketAddr {
        config.admin.addr
    }

    fn log(config: &Self::Config) -> &config::Log {
        &config.log
    }

    fn describe(head: &[u8]) -> String {
        stored::describe(head)
    }

    const DESTINATION: &'static str = "host";

    fn destination(head: &[u8]) -> Option<String> {
        stored::host_of(head)
    }

    async fn serve(path: PathBuf, config: Self::Config) -> Result<(), StartError> {
        serve(path, config).await
    }
}
