//! Accepting connections the way a public listener must: one budget of open connections per
//! daemon with a cap per source, a deadline on every moment a connection spends without a
//! request in progress, HTTP/1.1 and HTTP/2 (by ALPN on TLS, by preface on plain TCP), and a
//! graceful drain on shutdown.
//!
//! A connection holds a slot and no worker thread. It is closed once it has spent
//! `header_timeout` without a request in progress: from accept through the TLS handshake, the
//! protocol sniff and the first request head, and again between requests (HTTP/1.1 keep-alive,
//! an HTTP/2 connection with no stream). So clients that connect and send one byte, finish a
//! handshake and fall silent, or send the HTTP/2 preface and open no stream are cut off, and one
//! source address cannot take more than its share of the slots.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounterVec;
use telemetry::names::{DROPPED_IDLE, DROPPED_SOURCE_LIMIT};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::tls::Certs;

/// A bound socket and, for HTTPS, its certificates.
#[derive(Debug)]
pub struct Endpoint {
    pub listener: TcpListener,
    pub tls: Option<Arc<Certs>>,
}

/// How the connections of a listener are bounded; clones share the [`Budget`].
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// The open connections this listener draws from, shared with the daemon's other listeners.
    pub budget: Arc<Budget>,
    /// Longest time a connection may spend without a request in progress (TLS handshake and
    /// first request head included), and HTTP/2 keep-alive ping interval and timeout.
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

/// The connections a daemon may hold open at once, over all the listeners that share it, and
/// per source: an IPv4 address, or an IPv6 /64 (what one client usually has).
///
/// Over the total, new connections wait in the kernel's backlog; over a source's share, they
/// are closed at once (counted as [`DROPPED_SOURCE_LIMIT`]).
#[derive(Debug)]
pub struct Budget {
    total: Arc<Semaphore>,
    per_source: usize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    dropped: Option<IntCounterVec>,
}

impl Budget {
    /// `max` connections in all, `per_source` of them from one source; each at least 1.
    /// `dropped`, if given, counts closed connections by reason.
    pub fn new(max: usize, per_source: usize, dropped: Option<IntCounterVec>) -> Arc<Budget> {
        Arc::new(Budget {
            total: Arc::new(Semaphore::new(max.max(1))),
            per_source: per_source.max(1),
            by_source: Mutex::new(HashMap::new()),
            dropped,
        })
    }

    /// Connections open now, over all sources.
    pub fn open(&self) -> usize {
        let by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        by_source.values().sum()
    }

    /// Takes a slot for a connection from `remote` with `permit`, or none if its source has
    /// its share already.
    fn admit(self: &Arc<Self>, permit: OwnedSemaphorePermit, remote: IpAddr) -> Option<Slot> {
        let source = source_of(remote);
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let open = by_source.entry(source).or_insert(0);
        if *open >= self.per_source {
            drop(by_source);
            self.count(DROPPED_SOURCE_LIMIT);
            return None;
        }
        *open += 1;
        Some(Slot {
            _permit: permit,
            budget: self.clone(),
            source,
        })
    }

    fn count(&self, reason: &str) {
        if let Some(dropped) = &self.dropped {
            dropped.with_label_values(&[reason]).inc();
        }
    }
}

/// One open connection's place in a [`Budget`], given back on drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    budget: Arc<Budget>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_source = self
            .budget
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = by_source.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// The source a connection is counted against: IPv4 as is (also when mapped into IPv6), IPv6
/// by its /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// The protocols a connection may speak, each configured once per listener.
struct Protocols {
    /// Plain TCP: HTTP/1.1 or HTTP/2 by the first bytes (bounded by the idle deadline).
    sniff: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `h2`.
    h2: auto::Builder<TokioExecutor>,
    /// TLS with ALPN `http/1.1` or none.
    h1: auto::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(header_timeout: Duration) -> Protocols {
        let builder = || {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // The idle deadline of `serve` bounds the head; hyper's own (30 s by default)
            // would only be a second clock for the same thing.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .keep_alive(true);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(header_timeout)
                .keep_alive_timeout(header_timeout);
            builder
        };
        Protocols {
            sniff: builder(),
            h2: builder().http2_only(),
            h1: builder().http1_only(),
        }
    }
}

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
    let graceful = GracefulShutdown::new();
    let protocols = Arc::new(Protocols::new(limits.header_timeout));
    let acceptor = endpoint
        .tls
        .as_ref()
        .map(|certs| tokio_rustls::TlsAcceptor::from(certs.server_config()));
    let local = endpoint.listener.local_addr().ok();

    loop {
        // A slot is taken before accepting, so that connections over the budget wait in the
        // kernel's backlog; a listener waiting for its next connection holds one in reserve.
        let permit = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            permit = limits.budget.total.clone().acquire_owned() => match permit {
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
        let Some(slot) = limits.budget.admit(permit, remote.ip()) else {
            tracing::debug!(%remote, "connection refused: its source has all its connections open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            remote,
            local: local.unwrap_or(remote),
            tls: acceptor.is_some(),
        };
        let activity = Activity::default();
        let service = {
            let (handle, activity) = (handle.clone(), activity.clone());
            hyper::service::service_fn(move |req| {
                let busy = activity.begin();
                let reply = handle(peer, req);
                async move {
                    let reply = reply.await;
                    drop(busy);
                    Ok::<_, Infallible>(reply)
                }
            })
        };
        let protocols = protocols.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let conn = async move {
                match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let builder = match tls.get_ref().1.alpn_protocol() {
                            Some(b"h2") => &protocols.h2,
                            _ => &protocols.h1,
                        };
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        let _ = watcher.watch(conn).await;
                    }
                    None => {
                        let conn = protocols
                            .sniff
                            .serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn).await;
                    }
                }
            };
            tokio::pin!(conn);
            tokio::select! {
                () = &mut conn => {}
                () = activity.idle_for(header_timeout) => {
                    slot.budget.count(DROPPED_IDLE);
                    tracing::debug!(%remote, "connection closed: no request within the header timeout");
                }
            }
            // The socket closes when this task ends, after the count: whoever sees the close
            // sees the count.
            drop(slot);
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

/// A connection's requests: how many are in progress, and how many have begun in all. The
/// idle deadline watches it.
#[derive(Debug, Clone, Default)]
struct Activity(Arc<watch::Sender<(usize, u64)>>);

/// A request in progress; ends on drop.
struct Busy(Activity);

impl Activity {
    fn begin(&self) -> Busy {
        self.0.send_modify(|(open, begun)| {
            *open += 1;
            *begun += 1;
        });
        Busy(self.clone())
    }

    /// Resolves once the connection has gone `limit` without a request in progress.
    async fn idle_for(&self, limit: Duration) {
        let mut changes = self.0.subscribe();
        loop {
            let Ok(begun) = changes
                .wait_for(|&(open, _)| open == 0)
                .await
                .map(|idle| idle.1)
            else {
                return;
            };
            let next = changes.wait_for(|&(open, now)| open > 0 || now != begun);
            if tokio::time::timeout(limit, next).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0 .0.send_modify(|(open, _)| *open -= 1);
    }
}

/// Resolves once shutdown is asked (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:a:b:c:d")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:2:ffff::"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:2::1")),
            source_of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_source_gets_its_share_and_the_slots_come_back() {
        let budget = Budget::new(10, 2, None);
        let take = |from: &str| {
            let permit = budget.total.clone().try_acquire_owned().unwrap();
            budget.admit(permit, ip(from))
        };
        let first = take("192.0.2.1").unwrap();
        let second = take("::ffff:192.0.2.1").unwrap();
        assert!(take("192.0.2.1").is_none(), "a third from the same source");
        assert_eq!(
            budget.total.available_permits(),
            8,
            "a refused connection gives its permit back"
        );
        let other = take("192.0.2.2").unwrap();
        assert_eq!(budget.open(), 3);
        drop(first);
        let again = take("192.0.2.1").expect("room again after one closed");
        drop((second, other, again));
        assert_eq!(budget.total.available_permits(), 10);
        assert!(
            budget.by_source.lock().unwrap().is_empty(),
            "no entry left for closed sources"
        );
    }

    async fn start(limits: ConnLimits, stop: watch::Receiver<bool>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = Endpoint {
            listener,
            tls: None,
        };
        tokio::spawn(serve(
            endpoint,
            limits,
            |_, req: Request<Incoming>| async move {
                // A request that takes longer than the header timeout, on purpose.
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                Response::new(Full::new(Bytes::from_static(b"ok")))
            },
            stop,
        ));
        addr
    }

    /// Polls `done` until it holds, failing the test after 30 s.
    pub(crate) async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn listeners_share_one_budget() {
        let (_stop, stopped) = watch::channel(false);
        let limits = ConnLimits {
            budget: Budget::new(1, 1, None),
            header_timeout: Duration::from_secs(3600),
            grace: Duration::from_secs(1),
        };
        let a = start(limits.clone(), stopped.clone()).await;
        let b = start(limits.clone(), stopped).await;
        let held = TcpStream::connect(a).await.unwrap();
        wait_until("the connection to a holds the slot", || {
            limits.budget.open() == 1
        })
        .await;
        // b's connection waits in the backlog until a's closes, then gets the slot.
        let mut waiting = TcpStream::connect(b).await.unwrap();
        waiting
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(limits.budget.open(), 1);
        drop(held);
        let mut answer = Vec::new();
        waiting.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn idle_keep_alive_is_closed_but_a_slow_request_is_not() {
        let (_stop, stopped) = watch::channel(false);
        let dropped =
            IntCounterVec::new(prometheus::Opts::new("dropped", "d"), &["reason"]).unwrap();
        let limits = ConnLimits {
            budget: Budget::new(10, 10, Some(dropped.clone())),
            header_timeout: Duration::from_millis(200),
            grace: Duration::from_secs(1),
        };
        let addr = start(limits, stopped).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Slower than the header timeout, but in progress all along: answered.
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Then kept alive and idle: closed.
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
            .await
            .expect("the idle connection is closed")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        assert_eq!(dropped.with_label_values(&[DROPPED_IDLE]).get(), 1);
    }
}
