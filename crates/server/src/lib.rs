//! What running a daemon takes, shared by whimp and whomp: listeners ([`listen`]), what their
//! handlers do alike ([`edge`]), reloadable TLS ([`tls`]), signals, the command line ([`cli`]),
//! and the admin endpoints of the spool.

pub mod cli;
pub mod daemon;
pub mod edge;
pub mod listen;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::signal::unix::{signal, SignalKind};

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload config and certificates.
    Reload,
    /// SIGTERM or SIGINT: drain and exit 0.
    Shutdown,
}

/// The signals a daemon listens for.
#[derive(Debug)]
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Shutdown,
            _ = self.int.recv() => Signal::Shutdown,
        }
    }
}

/// Prints the stable line that tells operators and test harnesses where a listener is bound:
/// `listening <what> <scheme>://<addr>`.
pub fn announce(what: &str, scheme: &str, addr: SocketAddr) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening {what} {scheme}://{addr}");
    let _ = out.flush();
}

/// Notes the admin listener's bound address in the spool directory, for the `spool` CLI.
pub fn note_admin_addr(spool_dir: &std::path::Path, addr: SocketAddr) {
    if let Err(e) = std::fs::write(spool_dir.join(cli::ADMIN_ADDR_FILE), format!("{addr}\n")) {
        tracing::warn!(error = %e, "cannot note the admin address in the spool; spool retry/purge need the daemon stopped");
    }
}

/// Admin endpoints the `spool` CLI uses while the daemon holds the spool's lock:
/// `POST /spool/retry/<id>` and `POST /spool/purge-dead`.
pub fn spool_admin(spool: spool::Spool) -> telemetry::Extra {
    Arc::new(move |method: Method, path: String, _body: Bytes| {
        let spool = spool.clone();
        Box::pin(async move {
            if method != Method::POST {
                return None;
            }
            if path == "/spool/purge-dead" {
                let s = spool.clone();
                let purged = tokio::task::spawn_blocking(move || s.purge_dead()).await;
                return Some(match purged {
                    Ok(Ok(n)) => telemetry::text(StatusCode::OK, format!("purged {n}\n")),
                    _ => telemetry::text(StatusCode::INTERNAL_SERVER_ERROR, "purge failed\n"),
                });
            }
            let id = path.strip_prefix("/spool/retry/")?.to_owned();
            Some(requeue(&spool, &id).await)
        })
    })
}

/// Re-queues the dead copies of `id`, answering as the admin API does.
pub async fn requeue(spool: &spool::Spool, id: &str) -> telemetry::AdminResponse {
    let dir = spool.dir().to_path_buf();
    let lookup = id.to_owned();
    let keys = tokio::task::spawn_blocking(move || cli::dead_keys(&dir, &lookup))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if keys.is_empty() {
        return telemetry::text(
            StatusCode::NOT_FOUND,
            format!("{id} is not a dead message\n"),
        );
    }
    for key in &keys {
        if let Err(e) = spool.requeue(*key).await {
            return telemetry::text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
        }
    }
    telemetry::text(StatusCode::OK, format!("requeued {}\n", keys.len()))
}
