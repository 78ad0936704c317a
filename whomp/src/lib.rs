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
//! - [`events`]: webhook targets, filters, subscriptions and the fan-out of events;
//! - [`metrics`]: whomp's metric handles;
//! - [`Whomp`]: what `daemon::main` needs to know of whomp, and [`Whomp::run`], its wiring on
//!   the start-up kit both daemons share (`daemon::kit`).

pub mod courier;
pub mod events;
pub mod idempotency;
pub mod live;
pub mod metrics;
pub mod sign;
pub mod stored;
pub mod submit;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use daemon::kit::{self, TlsListeners};
use daemon::{Caps, Current, Daemon, Kit, Listeners, Signals, StartError};
use storage::Storage;

use crate::courier::Courier;
use crate::idempotency::Keys;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::submit::Submissions;

/// whomp, as `daemon::main` runs it.
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
            Err(e) => daemon::start::unplaced(&e.to_string()),
        };
        if let Err(certs) = daemon::tls::load_listeners(&config.listen) {
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
        stored::describe(head)
    }

    const DESTINATION: &'static str = "host";

    const DURABLE_RECORDS: &'static [&'static str] = &[
        events::ns::TARGETS,
        events::ns::FILTERS,
        events::ns::SUBSCRIPTIONS,
    ];

    fn destination(head: &[u8]) -> Option<String> {
        stored::host_of(head)
    }

    fn listen(config: &Self::Config) -> &[config::Listener] {
        &config.listen
    }

    /// Rebuilds the idempotency keys from the spool (or shares the cluster's), serves the submit
    /// listeners (pre-flight, store, answer with an id) and delivers what is stored, until
    /// SIGTERM.
    async fn run(
        mut kit: Kit,
        listeners: Listeners,
        signals: Signals,
        config: Self::Config,
        path: PathBuf,
    ) -> Result<(), StartError> {
        let storage = kit.storage().clone();
        let records = storage
            .records(&config.queue, config.limits.max_body_bytes)
            .await?;
        let live = Arc::new(Current::new(
            Live::build(&config).map_err(|e| StartError::Config(e.to_string()))?,
        ));
        let metrics = Metrics::new();
        // A node of its own rebuilds its keys from the spool; cluster nodes share theirs.
        let keys = match storage.maildir() {
            Some(_) => {
                let dir = config.spool.dir.clone();
                tokio::task::spawn_blocking(move || Keys::load(&dir, idempotency::CAPACITY))
                    .await
                    .map_err(|e| {
                        StartError::Runtime(format!("cannot read idempotency keys: {e}"))
                    })?
            }
            None => Keys::shared(
                idempotency::CAPACITY,
                records.clone(),
                config.spool.retention,
            ),
        };
        let keys = Arc::new(keys);
        let events = events::Events::load(
            &storage,
            records,
            config.limits.max_body_bytes,
            config.spool.retention,
            config.events.clone(),
        )
        .await
        .map(Arc::new)
        .map_err(|e| StartError::Runtime(e.to_string()))?;
        listeners.tls.export(&metrics.config);

        let submissions = Arc::new(Submissions {
            live: live.clone(),
            spool: storage,
            keys: keys.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            max_body_bytes: config.limits.max_body_bytes,
        });
        let limits = &config.limits;
        let caps = Caps {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            header_timeout: limits.header_timeout,
        };
        kit.open_doors(
            "submit",
            listeners.endpoints,
            listeners.admin,
            caps,
            metrics.exports(),
            move |peer, req| {
                let submissions = submissions.clone();
                async move { submissions.handle(peer, req).await }
            },
        )?;
        let courier = Arc::new(Courier {
            live: live.clone(),
            events,
            metrics: metrics.clone(),
        });
        kit.deliver(
            courier,
            config.delivery.concurrency,
            limits.max_in_flight_per_host,
        );
        let counts = kit.storage().counts();
        tracing::info!(
            spool = %config.spool.dir.display(),
            queued = counts.queued + counts.retrying,
            idempotency_keys = keys.len(),
            "whomp started"
        );

        let tls = listeners.tls;
        kit.until_shutdown(signals, || reload(&path, &live, &tls, &metrics))
            .await;
        Ok(())
    }
}

/// Swaps the reloadable settings and the certificates if the config at `path` loads and makes
/// valid ones and every certificate loads, else keeps the old ones (logged, and counted as a
/// failed reload).
fn reload(path: &Path, live: &Current<Live>, tls: &TlsListeners, metrics: &Metrics) {
    let built = config::load_whomp(path)
        .map_err(|e| e.to_string())
        .and_then(|config| Live::build(&config).map_err(|e| e.to_string()));
    if kit::reload(
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
