//! What running a daemon takes, shared by whimp and whomp: the one `main` both binaries call
//! ([`start`]), the start-up kit their `run` is wired with ([`kit`]), listeners ([`listen`]),
//! what their handlers do alike ([`edge`]), reloadable TLS ([`tls`]), signals, the command line
//! ([`cli`]), and the admin endpoints of the spool.

pub mod cli;
pub mod edge;
pub mod import;
pub mod kit;
pub mod listen;
pub mod queue;
pub mod start;
pub mod tls;

pub use kit::{Caps, Current, Kit, Listeners};
pub use start::{main, Daemon, StartError};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use storage::{ChangeError, Key, Storage};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload config and certificates.
    Reload,
    /// SIGTERM or SIGINT: drain and exit 0.
    Shutdown,
}

/// What a running daemon is asked, in order; the end of the channel asks for shutdown too. The
/// binary's come from [`signals`]; whoever runs a daemon otherwise sends its own.
pub type Signals = mpsc::Receiver<Signal>;

/// SIGHUP as [`Signal::Reload`], SIGTERM and SIGINT as [`Signal::Shutdown`], from now on (the
/// handlers are installed before this returns, so a SIGHUP no longer ends the process).
pub fn signals() -> io::Result<Signals> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = hup.recv() => Signal::Reload,
                _ = term.recv() => Signal::Shutdown,
                _ = int.recv() => Signal::Shutdown,
            };
            if tx.send(signal).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Prints the stable line that tells operators and test harnesses where a listener is bound:
/// `listening <what> <scheme>://<addr>`.
pub(crate) fn announce(what: &str, scheme: &str, addr: SocketAddr) {
    say(format_args!("listening {what} {scheme}://{addr}"));
}

/// Prints the final start-up line, `ready`: every listener is bound and announced.
pub(crate) fn ready() {
    say(format_args!("ready"));
}

/// One start-up line on stdout, flushed at once (stdout is a pipe under a supervisor or a test).
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Notes the admin listener's bound address in the spool directory, for the `spool` CLI.
pub fn note_admin_addr(spool_dir: &std::path::Path, addr: SocketAddr) {
    if let Err(e) = std::fs::write(spool_dir.join(cli::ADMIN_ADDR_FILE), format!("{addr}\n")) {
        tracing::warn!(error = %e, "cannot note the admin address in the spool; spool retry/purge need the daemon stopped");
    }
}

/// Admin endpoints the `spool` CLI uses while the daemon holds the spool's lock:
/// `POST /spool/retry/<id>`, `POST /spool/delete/<id>` and `POST /spool/purge-dead`.
pub fn spool_admin<S: Storage>(spool: S) -> telemetry::Extra {
    Arc::new(move |method: Method, path: String, _body: Bytes| {
        let spool = spool.clone();
        Box::pin(async move {
            if method != Method::POST {
                return None;
            }
            let answer = if path == "/spool/purge-dead" {
                purge_dead(&spool).await
            } else if let Some(id) = path.strip_prefix("/spool/retry/") {
                retry(&spool, id).await
            } else if let Some(id) = path.strip_prefix("/spool/delete/") {
                delete(&spool, id).await
            } else {
                return None;
            };
            Some(match answer {
                Ok(text) => telemetry::text(StatusCode::OK, format!("{text}\n")),
                Err((status, why)) => telemetry::text(status, format!("{why}\n")),
            })
        })
    })
}

/// The outcome of an operator's change: what was done, or the status and reason of a refusal.
pub type Answer = Result<String, (StatusCode, String)>;

/// Has `id` attempted now: re-queues its dead copies, makes its retrying ones due (all copies
/// of a bare id that are not delivered). Logged, as every operator change is.
pub async fn retry<S: Storage>(spool: &S, id: &str) -> Answer {
    let keys = operator_keys(spool, id).await?;
    let mut changed = 0;
    let mut refused = None;
    for key in keys {
        match spool.retry_now(key).await {
            Ok(()) => changed += 1,
            // Other copies of a fanned-out message may still want it.
            Err(e @ ChangeError::Delivered(_)) => refused = Some(e),
            Err(e) => return Err(refusal(e)),
        }
    }
    if changed == 0 {
        return Err(refusal(refused.ok_or_else(|| not_found(id))?));
    }
    tracing::info!(
        id,
        copies = changed,
        "operator: message set to be attempted now"
    );
    Ok(format!("requeued {changed}"))
}

/// Deletes `id` (every copy of a bare id) wherever it is. Logged.
pub async fn delete<S: Storage>(spool: &S, id: &str) -> Answer {
    let keys = operator_keys(spool, id).await?;
    for key in &keys {
        let state = spool.delete(*key).await.map_err(refusal)?;
        tracing::info!(id = %key, state = state.as_str(), "operator: message deleted");
    }
    Ok(format!("deleted {}", keys.len()))
}

/// Deletes every dead message. Logged.
pub async fn purge_dead<S: Storage>(spool: &S) -> Answer {
    match spool.purge_dead().await {
        Ok(n) => {
            tracing::info!(removed = n, "operator: dead messages purged");
            Ok(format!("purged {n}"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "operator: purging dead/ failed");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("purge failed: {e}"),
            ))
        }
    }
}

/// The keys `id` names in `spool` ([`Storage::copies`]), or why there are none.
async fn operator_keys<S: Storage>(spool: &S, id: &str) -> Result<Vec<Key>, (StatusCode, String)> {
    let key = match id.parse::<Key>() {
        Ok(key) => key,
        Err(e) => return Err((StatusCode::BAD_REQUEST, e.to_string())),
    };
    let keys = spool.copies(key).await.unwrap_or_default();
    if keys.is_empty() {
        return Err(not_found(id));
    }
    Ok(keys)
}

fn not_found(id: &str) -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, format!("no message {id}"))
}

fn refusal(e: ChangeError) -> (StatusCode, String) {
    use ChangeError as E;
    let status = match e {
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Delivered(_) | E::InFlight(_) => StatusCode::CONFLICT,
        E::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, e.to_string())
}
