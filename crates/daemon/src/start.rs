//! The one `main` both binaries call ([`main`]): the command line, the config, then running,
//! checking the config or working the spool; for running, the start-up every daemon shares
//! (logging, the runtime, the [`Kit`], bound [`Listeners`], signals) before the daemon's own
//! wiring ([`Daemon::run`]), and every way of failing to start mapped onto an exit code.

use std::ffi::CStr;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli::{self, exit, Command};
use crate::kit::{Kit, Listeners};
use crate::Signals;

/// Why a daemon could not start; [`StartError::exit_code`] says how it exits.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spool is locked by another process (exit 69).
    #[error(transparent)]
    Locked(spool::OpenError),
    /// The spool directory cannot be used (exit 74).
    #[error(transparent)]
    Spool(spool::OpenError),
    /// The JetStream cluster of `queue:` cannot be reached or set up (exit 69).
    #[error(transparent)]
    Queue(jetstream::NatsError),
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
            StartError::Locked(_) | StartError::Queue(_) | StartError::Bind { .. } => {
                exit::UNAVAILABLE
            }
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
    /// The `queue:` section and the largest body accepted (`limits.max_body_bytes`), which
    /// sizes a JetStream message.
    fn queue(config: &Self::Config) -> (&config::Queue, u64);
    fn admin(config: &Self::Config) -> SocketAddr;
    fn log(config: &Self::Config) -> &config::Log;
    /// The `target` column of `spool list`, from the start of a stored file.
    fn describe(head: &[u8]) -> String;
    /// What `spool list` filters targets by: `route` (whimp) or `host` (whomp).
    const DESTINATION: &'static str;
    /// The route or host a stored file is for, from its start (`spool list --route/--host`).
    fn destination(head: &[u8]) -> Option<String>;
    /// The listeners the daemon serves besides its admin listener.
    fn listen(config: &Self::Config) -> &[config::Listener];
    /// The record namespaces `spool import` copies into the cluster: what the daemon keeps for
    /// good (whomp's targets, filters, subscriptions), not what expires on its own.
    const DURABLE_RECORDS: &'static [&'static str] = &[];
    /// The daemon's own wiring: builds its parts from `config`, hands them to `kit` with
    /// `listeners`, and runs until `signals` asks for shutdown; a reload re-reads `path`.
    fn run(
        kit: Kit,
        listeners: Listeners,
        signals: Signals,
        config: Self::Config,
        path: PathBuf,
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
        | Command::Spool { config, .. }
        | Command::Import { config, .. } => config.clone(),
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
        Command::Import { from, .. } => {
            let (queue, max_body_bytes) = D::queue(&config);
            if queue.backend != config::Backend::Jetstream {
                eprintln!(
                    "error: spool import moves a maildir spool into the cluster: {} must say queue.backend: jetstream",
                    path.display()
                );
                return ExitCode::from(exit::USAGE);
            }
            ExitCode::from(crate::import::import_command(
                &from,
                D::DURABLE_RECORDS,
                &crate::queue::jetstream_options(queue, max_body_bytes),
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Spool { action, json, .. }
            if D::queue(&config).0.backend == config::Backend::Jetstream =>
        {
            let (queue, max_body_bytes) = D::queue(&config);
            ExitCode::from(cli::cluster_command(
                &action,
                json,
                &crate::queue::jetstream_options(queue, max_body_bytes),
                &cli::Reader {
                    describe: &D::describe,
                    destination: &D::destination,
                },
                &mut std::io::stdout().lock(),
            ))
        }
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
    match runtime.block_on(start::<D>(path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{name} cannot start");
            eprintln!("{name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Opens the storage, binds every listener and watches signals, in that order and before
/// anything is announced, then hands over to the daemon.
async fn start<D: Daemon>(path: PathBuf, config: D::Config) -> Result<(), StartError> {
    let (queue, max_body_bytes) = D::queue(&config);
    let kit = Kit::open(D::spool(&config), queue, max_body_bytes).await?;
    let listeners = Listeners::bind(D::listen(&config), D::admin(&config)).await?;
    let signals =
        crate::signals().map_err(|e| StartError::Runtime(format!("cannot watch signals: {e}")))?;
    D::run(kit, listeners, signals, config, path).await
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
