//! whimp, the webhook-in daemon: a public HTTP(S) listener that stores each request durably in
//! its spool before answering, then forwards it to the backends of its route until each takes it.
//!
//! - [`ingress`]: the accept path (route, checks, store, answer);
//! - [`forward`]: turning a stored request into a request to a backend;
//! - [`stored`]: the spool file of a request (written by `ingress`, read by `forward`);
//! - [`routes`]: the route table, swapped whole on reload;
//! - [`metrics`]: whimp's metric handles;
//! - [`Whimp`]: what `daemon::main` needs to know of whimp, and [`Whimp::run`], its wiring on
//!   the start-up kit both daemons share (`daemon::kit`).

pub mod forward;
pub mod ingress;
pub mod metrics;
pub mod routes;
pub mod stored;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use daemon::kit::{self, TlsListeners};
use daemon::{Caps, Current, Daemon, Kit, Listeners, Signals, StartError};
use storage::Storage;

use crate::forward::Forwarder;
use crate::ingress::Ingress;
use crate::metrics::Metrics;
use crate::routes::Table;

/// whimp, as `daemon::main` runs it.
#[derive(Debug)]
pub struct Whimp;

impl Daemon for Whimp {
    const NAME: &'static str = "whimp";
    const IDENT: &'static std::ffi::CStr = c"whimp";
    const ABOUT: &'static str = "webhook in";
    type Config = config::whimp::Config;

    fn load(path: &Path) -> Result<Self::Config, config::ConfigError> {
        config::load_whimp(path)
    }

    fn check(config: &Self::Config) -> Result<String, Vec<config::Problem>> {
        // Routes and certificates are read the way the daemon reads them, every problem told.
        let mut problems = match Table::build(config, &Metrics::new()) {
            Ok(_) => Vec::new(),
            Err(e) => daemon::start::unplaced(&e.to_string()),
        };
        if let Err(certs) = daemon::tls::load_listeners(&config.listen) {
            problems.extend(certs);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(format!("{} routes", config.routes.len()))
    }

    fn spool(config: &Self::Config) -> &config::Spool {
        &config.spool
    }

    fn queue(config: &Self::Config) -> (&config::Queue, u64) {
        (&config.queue, config.limits.max_body_bytes)
    }

    fn admin(config: &Self::Config) -> SocketAddr {
        config.admin.addr
    }

    fn log(config: &Self::Config) -> &config::Log {
        &config.log
    }

    fn describe(head: &[u8]) -> String {
        describe(head)
    }

    const DESTINATION: &'static str = "route";

    fn destination(head: &[u8]) -> Option<String> {
        route_of(head)
    }

    fn listen(config: &Self::Config) -> &[config::Listener] {
        &config.listen
    }

    /// Serves the public listeners (route, check, store, answer) and forwards what is stored to
    /// the backends, until SIGTERM.
    async fn run(
        mut kit: Kit,
        listeners: Listeners,
        signals: Signals,
        config: Self::Config,
        path: PathBuf,
    ) -> Result<(), StartError> {
        let metrics = Metrics::new();
        let table =
            Table::build(&config, &metrics).map_err(|e| StartError::Config(e.to_string()))?;
        let routes = Arc::new(Current::new(table));
        let client = client(&config).map_err(StartError::Config)?;
        listeners.tls.export(&metrics.config);

        let ingress = Arc::new(Ingress {
            routes: routes.clone(),
            spool: kit.storage().clone(),
            max_body_bytes: config.limits.max_body_bytes,
            body_timeout: config.limits.body_timeout,
        });
        let limits = &config.limits;
        let caps = Caps {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            header_timeout: limits.header_timeout,
        };
        kit.open_doors(
            "public",
            listeners.endpoints,
            listeners.admin,
            caps,
            metrics.exports(),
            move |peer, req| {
                let ingress = ingress.clone();
                async move { ingress.handle(peer, req).await }
            },
        )?;
        let forwarder = Arc::new(Forwarder {
            routes: routes.clone(),
            client,
            metrics: metrics.clone(),
            fallback: Arc::new(config.retry.clone()),
        });
        kit.deliver(
            forwarder,
            config.delivery.concurrency,
            config.delivery.max_in_flight_per_backend,
        );
        let counts = kit.storage().counts();
        tracing::info!(
            routes = config.routes.len(),
            spool = %config.spool.dir.display(),
            queued = counts.queued + counts.retrying,
            "whimp started"
        );

        let tls = listeners.tls;
        kit.until_shutdown(signals, || reload(&path, &metrics, &routes, &tls))
            .await;
        Ok(())
    }
}

pub use stored::{describe, route_of};

/// SIGHUP: re-read the config and the certificates; swap routes and certificates if all of them
/// are valid, else keep the old ones (logged, and `whimp_config_last_reload_successful` 0).
fn reload(path: &Path, metrics: &Metrics, routes: &Current<Table>, tls: &TlsListeners) {
    let built = config::load_whimp(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let table = Table::build(&config, metrics).map_err(|e| e.to_string())?;
            Ok((config.routes.len(), table))
        });
    let count = built.as_ref().map_or(0, |(count, _)| *count);
    let swap = built.map(|(_, table)| move || routes.set(table));
    if kit::reload(swap, tls, &metrics.config) {
        tracing::info!(
            routes = count,
            "config reloaded (listeners, spool, limits and log settings take effect at the next start)"
        );
    }
}

fn client(config: &config::whimp::Config) -> Result<reqwest::Client, String> {
    let tls = delivery::client_tls(config.delivery.ca_file.as_deref())?;
    let dns = netguard::Resolver::system(Default::default()).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .dns_resolver(Arc::new(SystemDns(dns)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(config.delivery.max_in_flight_per_backend.max(1))
        .user_agent(concat!("whimp/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Backend host names are resolved by our own DNS client (/etc/hosts, then the resolv.conf
/// servers), not by getaddrinfo, so a static binary does not depend on glibc's NSS modules.
struct SystemDns(netguard::Resolver);

impl reqwest::dns::Resolve for SystemDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolver.lookup(&host).await.map_err(|e| e.message)?;
            // Port 0: the client puts the URL's port in.
            let addrs: Vec<std::net::SocketAddr> =
                addrs.into_iter().map(|ip| (ip, 0).into()).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
