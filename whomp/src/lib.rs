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

use server::listen::{ConnLimits, Endpoint};
use server::tls::Certs;
use server::Signal;
use spool::Spool;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::courier::Courier;
use crate::idempotency::Keys;
use crate::live::{Current, Live};
use crate::metrics::Metrics;
use crate::submit::Submissions;

/// How long in-flight submissions and attempts may finish after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(10);

/// Connection limits of the submission listeners (internal callers; the config has no knobs).
const CONN_LIMITS: ConnLimits = ConnLimits {
    max_connections: 4096,
    header_timeout: Duration::from_secs(10),
    grace: GRACE,
};

/// Why whomp could not start; each maps to an exit code in `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool is locked by another process (exit 69).
    #[error(transparent)]
    Locked(spool::OpenError),
    /// The spool directory cannot be used (exit 74).
    #[error(transparent)]
    Spool(spool::OpenError),
    /// A listener address cannot be bound (exit 69).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Certificates, rules, DNS or the client could not be set up from the config (exit 64).
    #[error("{0}")]
    Config(String),
    /// Signals or the runtime failed (exit 70).
    #[error("{0}")]
    Runtime(String),
}

/// What the control loop of [`run`] reacts to.
#[derive(Debug)]
pub enum Control {
    /// Apply this (already validated) config's reloadable parts.
    Reload(Box<config::whomp::Config>),
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
    let mut submit = Vec::new();
    for listener in &config.listen {
        let socket = bind_one(listener.addr).await?;
        let tls = match &listener.tls {
            Some(tls) => Some(
                Certs::load(&tls.cert, &tls.key).map_err(|e| StartError::Config(e.to_string()))?,
            ),
            None => None,
        };
        submit.push(Endpoint {
            listener: socket,
            tls,
        });
    }
    let admin = bind_one(config.admin.addr).await?;
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
    let spool = Spool::open(
        &config.spool.dir,
        spool::Options {
            fsync: config.spool.fsync,
        },
    )
    .map_err(|e| match e {
        spool::OpenError::Locked { .. } => StartError::Locked(e),
        e => StartError::Spool(e),
    })?;
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
    let certs: Vec<Arc<Certs>> = listeners
        .submit
        .iter()
        .filter_map(|e| e.tls.clone())
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let submissions = Arc::new(Submissions {
        live: live.clone(),
        spool: spool.clone(),
        keys: keys.clone(),
        metrics: metrics.clone(),
        max_body_bytes: config.limits.max_body_bytes,
    });
    for endpoint in listeners.submit {
        let addr = endpoint
            .listener
            .local_addr()
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let scheme = if endpoint.tls.is_some() {
            "https"
        } else {
            "http"
        };
        server::announce("submit", scheme, addr);
        let submissions = submissions.clone();
        tasks.spawn(server::listen::serve(
            endpoint,
            CONN_LIMITS,
            move |peer, req| {
                let submissions = submissions.clone();
                async move { submissions.handle(peer, req).await }
            },
            stop_rx.clone(),
        ));
    }
    let admin_addr = listeners
        .admin
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    server::announce("admin", "http", admin_addr);
    let admin = telemetry::Admin {
        registry: metrics.registry.clone(),
        readiness: {
            let spool = spool.clone();
            Arc::new(move || spool.unhealthy_reason())
        },
        refresh: {
            let (spool, metrics) = (spool.clone(), metrics.clone());
            Arc::new(move || metrics.refresh(spool.counts()))
        },
        extra: Some(server::spool_admin(spool.clone())),
    };
    tasks.spawn(admin.serve(listeners.admin, stopped(stop_rx.clone())));

    let courier = Arc::new(Courier {
        live: live.clone(),
        metrics: metrics.clone(),
    });
    let delivery_limits = delivery::Limits {
        concurrency: config.delivery.concurrency,
        per_destination: config.limits.max_in_flight_per_host,
        grace: GRACE,
    };
    tasks.spawn(delivery::run(
        spool.clone(),
        courier,
        delivery_limits,
        stopped(stop_rx.clone()),
    ));
    tasks.spawn(prune(
        spool.clone(),
        config.spool.retention,
        stop_rx.clone(),
    ));
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    let counts = spool.counts();
    tracing::info!(
        spool = %config.spool.dir.display(),
        queued = counts.queued + counts.retrying,
        idempotency_keys = keys.len(),
        "whomp started"
    );

    while let Some(event) = control.recv().await {
        match event {
            Control::Reload(config) => reload(&config, &live, &certs),
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
                    None => continue,
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
            for line in e.to_string().lines() {
                tracing::error!(
                    problem = line,
                    "new config refused; the old one keeps running"
                );
            }
            None
        }
    }
}

/// Swaps the reloadable settings if `config` makes valid ones, else keeps the old.
fn reload(config: &config::whomp::Config, live: &Current, certs: &[Arc<Certs>]) {
    match Live::build(config) {
        Ok(fresh) => live.set(fresh),
        Err(e) => {
            tracing::error!(problem = %e, "new config refused; the old one keeps running");
            return;
        }
    }
    for c in certs {
        if let Err(e) = c.reload() {
            tracing::error!(error = %e, "certificate reload failed; the old certificate stays in use");
        }
    }
    tracing::info!(
        "config reloaded: pre-flight rules, dns, tokens, signing keys, retry policy, delivery \
         timeouts, user agent and CA (listeners, spool, limits and delivery.concurrency take \
         effect at the next start)"
    );
}

async fn bind_one(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Deletes delivered messages past their retention, now and then.
async fn prune(spool: Spool, retention: Duration, mut stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.prune_done(retention)).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::info!(removed = n, "pruned delivered messages past retention")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "pruning done/ failed"),
            _ => {}
        }
    }
}
