//! The life of a daemon, the same for whimp and whomp: open the spool, bind, announce, serve the
//! admin listener, prune `done/`, and the one `main` both binaries call ([`main`]), which maps
//! every way of failing to start onto an exit code.

use std::ffi::CStr;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use spool::Spool;
use storage::Storage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{self, exit, Command};
use crate::listen::{Budget, ConnLimits, Endpoint};
use crate::tls::Certs;

/// Why a daemon could not start; [`StartError::exit_code`] says how it exits.
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
    /// Certificates, routes, rules or the client could not be set up from the config (exit 64).
    #[error("{0}")]
    Config(String),
    /// Signals or the runtime failed (exit 70).
    #[error("{0}")]
    Runtime(String),
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Locked(_) | StartError::Bind { .. } => exit::UNAVAILABLE,
            StartError::Spool(_) => exit::IO,
            StartError::Config(_) => exit::USAGE,
            StartError::Runtime(_) => exit::SOFTWARE,
        }
    }
}

/// What a daemon binary is, for [`main`].
pub trait Daemon {
    /// `whimp` or `whomp`.
    const NAME: &'static str;
    /// The name syslog shows.
    const IDENT: &'static CStr;
    /// One line for `--help`.
    const ABOUT: &'static str;
    type Config: Send + 'static;

    fn load(path: &Path) -> Result<Self::Config, config::ConfigError>;
    /// Checks beyond parsing, as the daemon would build its parts; a summary line if fine, else
    /// every problem, at its place in the file where it has one.
    fn check(config: &Self::Config) -> Result<String, Vec<config::Problem>>;
    fn spool(config: &Self::Config) -> &config::Spool;
    fn admin(config: &Self::Config) -> SocketAddr;
    fn log(config: &Self::Config) -> &config::Log;
    /// The `target` column of `spool list`, from the start of a stored file.
    fn describe(head: &[u8]) -> String;
    /// What `spool list` filters targets by: `route` (whimp) or `host` (whomp).
    const DESTINATION: &'static str;
    /// The route or host a stored file is for, from its start (`spool list --route/--host`).
    fn destination(head: &[u8]) -> Option<String>;
    /// Runs the daemon until SIGTERM; SIGHUP re-reads `path`.
    fn serve(
        path: PathBuf,
        config: Self::Config,
    ) -> impl Future<Output = Result<(), StartError>> + Send;
}

/// The whole of a daemon's `main`: parse the command line, load the config, and run, check or
/// work the spool.
pub fn main<D: Daemon>() -> ExitCode {
    let name = D::NAME;
    let command = match cli::parse(std::env::args_os().skip(1), D::DESTINATION) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{name}: {e}\n\n{}", cli::usage(name, D::DESTINATION));
            return ExitCode::from(exit::USAGE);
        }
    };
    let path = match &command {
        Command::Help => {
            print!(
                "{name} {}: {}\n\n{}",
                env!("CARGO_PKG_VERSION"),
                D::ABOUT,
                cli::usage(name, D::DESTINATION)
            );
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("{name} {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run { config }
        | Command::CheckConfig { config }
        | Command::Spool { config, .. } => config.clone(),
    };
    let config = match D::load(&path) {
        Ok(config) => config,
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.trim_end());
            return ExitCode::from(exit::USAGE);
        }
    };
    match command {
        Command::CheckConfig { .. } => match D::check(&config) {
            Ok(summary) => {
                println!("{}: ok ({summary})", path.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{}", config::ConfigError::new(&path, problems));
                ExitCode::from(exit::USAGE)
            }
        },
        Command::Spool { action, json, .. } => ExitCode::from(cli::spool_command(
            &action,
            json,
            &D::spool(&config).dir,
            D::admin(&config),
            &cli::Reader {
                describe: &D::describe,
                destination: &D::destination,
            },
            &mut std::io::stdout().lock(),
        )),
        _ => run::<D>(path, config),
    }
}

fn run<D: Daemon>(path: PathBuf, config: D::Config) -> ExitCode {
    let name = D::NAME;
    if let Err(e) = telemetry::init_logging(D::log(&config), D::IDENT) {
        eprintln!("{name}: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    match runtime.block_on(D::serve(path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} cannot start");
            eprintln!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Opens and locks the spool of `config`.
pub fn open_spool(config: &config::Spool) -> Result<Spool, StartError> {
    Spool::open(
        &config.dir,
        spool::Options {
            fsync: config.fsync,
            ..spool::Options::default()
        },
    )
    .map_err(|e| match e {
        spool::OpenError::Locked { .. } => StartError::Locked(e),
        e => StartError::Spool(e),
    })
}

/// Binds one address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Problems a daemon finds in a config without a place in the file (such as a rule it refuses), one
/// per line of `text`, for `check-config` to print beside the located ones.
pub fn unplaced(text: &str) -> Vec<config::Problem> {
    text.lines()
        .map(|line| config::Problem {
            location: None,
            message: line.to_owned(),
        })
        .collect()
}

/// Binds every listener of a config, reading its certificates as `check-config` does.
pub async fn bind_endpoints(listeners: &[config::Listener]) -> Result<Vec<Endpoint>, StartError> {
    let certs = crate::tls::load_listeners(listeners).map_err(|problems| {
        let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
        StartError::Config(messages.join("\n"))
    })?;
    let mut endpoints = Vec::with_capacity(listeners.len());
    for (listener, tls) in listeners.iter().zip(certs) {
        endpoints.push(Endpoint {
            listener: bind(listener.addr).await?,
            tls,
        });
    }
    Ok(endpoints)
}

/// The address an endpoint is bound to, announced as `listening <what> <scheme>://<addr>`.
pub fn announce_endpoint(what: &str, endpoint: &Endpoint) -> Result<SocketAddr, StartError> {
    let addr = endpoint
        .listener
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    crate::announce(
        what,
        if endpoint.tls.is_some() {
            "https"
        } else {
            "http"
        },
        addr,
    );
    Ok(addr)
}

/// Starts the work beside the listeners, the delivery loop over `spool` and the pruning of
/// `done/`, both stopping with `stop`; then prints `ready`.
pub fn deliver_and_announce_ready<C: delivery::Courier, S: Storage>(
    tasks: &mut tokio::task::JoinSet<()>,
    spool: &S,
    courier: Arc<C>,
    limits: delivery::Limits,
    retention: Duration,
    stop: &watch::Receiver<bool>,
) {
    tasks.spawn(delivery::run(
        spool.clone(),
        courier,
        limits,
        stopped(stop.clone()),
    ));
    tasks.spawn(prune(spool.clone(), retention, stop.clone()));
    ready();
}

/// Prints the final `ready` line: every listener is bound and announced.
pub fn ready() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

/// The admin listener of a daemon over `spool`: readiness from the spool, gauges refreshed by
/// `refresh` before each scrape, and the spool endpoints the CLI uses. Announces it and notes
/// its address in the spool; serve it with [`serve_admin`].
pub fn admin(
    socket: &TcpListener,
    registry: prometheus::Registry,
    spool: &Spool,
    gauges: telemetry::SpoolGauges,
) -> Result<telemetry::Admin, StartError> {
    let addr = socket
        .local_addr()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    crate::announce("admin", "http", addr);
    crate::note_admin_addr(spool.dir(), addr);
    let (ready, counted) = (spool.clone(), spool.clone());
    Ok(telemetry::Admin {
        registry,
        readiness: Arc::new(move || ready.unhealthy_reason()),
        refresh: Arc::new(move || {
            let c = counted.counts();
            let oldest = counted.oldest_age().unwrap_or_default();
            gauges.set(c.queued, c.retrying, c.in_flight, oldest);
            gauges.set_ready(counted.unhealthy_reason().is_none());
        }),
        extra: Some(crate::spool_admin(spool.clone())),
    })
}

/// Connections the admin listener holds at once (Prometheus, probes, the CLI), a budget of its
/// own: a flood of the public listeners cannot starve scrapes, nor a flood of the admin
/// listener the public ones.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// Serves `admin` on `socket` until `stop`, with the daemon's `header_timeout` and a budget of
/// [`ADMIN_MAX_CONNECTIONS`].
pub async fn serve_admin(
    admin: telemetry::Admin,
    socket: TcpListener,
    header_timeout: Duration,
    grace: Duration,
    stop: watch::Receiver<bool>,
) {
    let admin = Arc::new(admin);
    let limits = ConnLimits {
        budget: Budget::new(ADMIN_MAX_CONNECTIONS, ADMIN_MAX_CONNECTIONS, None),
        header_timeout,
        grace,
    };
    let endpoint = Endpoint {
        listener: socket,
        tls: None,
    };
    crate::listen::serve(
        endpoint,
        limits,
        move |_, req| {
            let admin = admin.clone();
            async move { admin.handle(req).await }
        },
        stop,
    )
    .await;
}

/// Resolves once shutdown is asked.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Deletes delivered messages past their retention, every tenth of it (1 min to 1 h), until stop.
pub async fn prune<S: Storage>(spool: S, retention: Duration, stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        match spool.prune(retention).await {
            Ok(n) if n > 0 => {
                tracing::info!(removed = n, "pruned delivered messages past retention")
            }
            Err(e) => tracing::warn!(error = %e, "pruning done/ failed"),
            Ok(_) => {}
        }
    }
}

/// The certificates of a daemon's TLS listeners, each with its configured address (the
/// `listener` label of `*_tls_certificate_expiry_timestamp_seconds`).
#[derive(Debug, Clone, Default)]
pub struct TlsListeners(Vec<(String, Arc<Certs>)>);

impl TlsListeners {
    /// The TLS ones of `endpoints`, bound from `listeners` in the same order.
    pub fn new(listeners: &[config::Listener], endpoints: &[Endpoint]) -> TlsListeners {
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
            log_refused(&problems);
            false
        }
    }
}

/// Logs a refused reload, one line per problem.
pub fn log_refused(problems: &str) {
    for line in problems.lines() {
        tracing::error!(
            problem = line,
            "new config refused; the old one keeps running"
        );
    }
}
