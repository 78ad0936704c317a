//! Accepting connections the way a public listener must: a cap on open connections, a deadline
//! for the TLS handshake and for the request head, HTTP/1.1 and HTTP/2 (by ALPN or preface),
//! and a graceful drain on shutdown.
//!
//! A client that connects and sends nothing, or trickles its headers, is cut off after
//! `header_timeout`; it holds one connection slot until then and no worker thread, so hundreds
//! of them do not keep a normal request from being served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::tls::Certs;

/// A bound socket and, for HTTPS, its certificates.
#[derive(Debug)]
pub struct Endpoint {
    pub listener: TcpListener,
    pub tls: Option<Arc<Certs>>,
}

/// Per-listener connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// Deadline for the TLS handshake and for each request head.
    pub header_timeout: Duration,
    /// How long open connections may finish their requests after shutdown is asked.
    pub grace: Duration,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

/// The response type every service here produces.
pub type Resp = Response<Full<Bytes>>;

/// Serves `endpoint` until `shutdown` turns true, then drains open connections within `grace`.
/// `handle` is called once per request with the connection's [`Peer`].
pub async fn serve<H, F>(
    endpoint: Endpoint,
    limits: ConnLimits,
    handle: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Peer, Request<Incoming>) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Resp> + Send + 'static,
{
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let acceptor = endpoint
        .tls
        .as_ref()
        .map(|certs| tokio_rustls::TlsAcceptor::from(certs.server_config()));
    let local = endpoint.listener.local_addr().ok();

    loop {
        let permit = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            accepted = endpoint.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            remote,
            local: local.unwrap_or(remote),
            tls: acceptor.is_some(),
        };
        let handle = handle.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let reply = handle(peer, req);
                async move { Ok::<_, Infallible>(reply.await) }
            });
            match acceptor {
                Some(acceptor) => {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn).await;
                }
                None => {
                    if !first_bytes(&stream, header_timeout).await {
                        return;
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn).await;
                }
            }
        });
    }
    drop(endpoint.listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// Waits until the client sends something (the auto builder would wait forever to sniff the
/// protocol version otherwise); false on silence past `deadline` or on close.
async fn first_bytes(stream: &TcpStream, deadline: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(deadline, stream.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

/// Resolves once shutdown is asked (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
