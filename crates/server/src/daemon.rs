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
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{self, exit, Command};
use crate::listen::Endpoint;
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
    /// Checks beyond parsing, as the daemon would build its parts; a summary line if fine.
    fn check(config: &Self::Config) -> Result<String, String>;
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
            Err(e) => {
                eprintln!("{}: {e}", path.display());
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

/// Binds every listener of a config, reading its certificates.
pub async fn bind_endpoints(listeners: &[config::Listener]) -> Result<Vec<Endpoint>, StartError> {
    let mut endpoints = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let socket = bind(listener.addr).await?;
        let tls = match &listener.tls {
            Some(tls) => Some(
                Certs::load(&tls.cert, &tls.key).map_err(|e| StartError::Config(e.to_string()))?,
            ),
            None => None,
        };
        endpoints.push(Endpoint {
            listener: socket,
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
pub fn deliver_and_announce_ready<C: delivery::Courier>(
    tasks: &mut tokio::task::JoinSet<()>,
    spool: &Spool,
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
/// its address in the spool; serve it with `Admin::serve`.
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
        }),
        extra: Some(crate::spool_admin(spool.clone())),
    })
}

/// Resolves once shutdown is asked.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Deletes delivered messages past their retention, every tenth of it (1 min to 1 h), until stop.
pub async fn prune(spool: Spool, retention: Duration, stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
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

/// Logs a refused reload, one line per problem.
pub fn log_refused(problems: &str) {
    for line in problems.lines() {
        tracing::error!(
            problem = line,
            "new config refused; the old one keeps running"
        );
    }
}
