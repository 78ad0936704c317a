//! The fast local receiver the daemons deliver to: a hyper HTTP/1.1 server in this process that
//! reads each request, notes when its `X-Bench-Seq` arrived, and answers `200` at once.
//!
//! It can also *hold*: accept requests and answer nothing until released. A daemon delivering to
//! a holding receiver keeps a few attempts open and queues the rest, so a backlog builds up
//! without failed attempts (history records, renames) competing with what is measured; releasing
//! it then drains the backlog at full speed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

/// A running receiver; stops when dropped.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    hold: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    epoch: Instant,
    /// Requests answered 2xx.
    answered: AtomicU64,
    /// Requests whose sequence number had already arrived.
    duplicates: AtomicU64,
    /// µs since `epoch` + 1 of the first arrival of each sequence number; 0 = not yet.
    arrived: Vec<AtomicU64>,
}

impl Receiver {
    /// Starts on 127.0.0.1:0 with room to time `seqs` sequence numbers, holding if `hold`.
    pub(crate) fn start(epoch: Instant, seqs: usize, hold: bool) -> anyhow::Result<Receiver> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch,
            answered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            arrived: (0..seqs).map(|_| AtomicU64::new(0)).collect(),
        });
        let (hold_tx, hold_rx) = watch::channel(hold);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("receiver".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept_loop(listener, serving, hold_rx) => {}
                    }
                });
            })?;
        Ok(Receiver {
            addr,
            shared,
            hold: hold_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Answers held requests and every later one.
    pub(crate) fn release(&self) {
        let _ = self.hold.send(false);
    }

    /// Requests answered so far.
    pub(crate) fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::Relaxed)
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.shared.duplicates.load(Ordering::Relaxed)
    }

    /// When sequence number `seq` first arrived, in µs since the epoch.
    pub(crate) fn arrived_us(&self, seq: usize) -> Option<u64> {
        match self.shared.arrived.get(seq)?.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - 1),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    hold: watch::Receiver<bool>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, hold) = (shared.clone(), hold.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (shared, hold) = (shared.clone(), hold.clone());
                async move { Ok::<_, Infallible>(answer(&shared, hold, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    shared: &Shared,
    mut hold: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let seq = req
        .headers()
        .get("x-bench-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let _ = req.into_body().collect().await;
    let _ = hold.wait_for(|held| !*held).await;
    if let Some(slot) = seq.and_then(|s| shared.arrived.get(s)) {
        let now = shared.epoch.elapsed().as_micros() as u64 + 1;
        if slot
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.answered.fetch_add(1, Ordering::Relaxed);
    Response::new(Full::new(Bytes::new()))
}

/// The HTTP ceiling, run as a child process (`bench serve-http`): a minimal hyper server on
/// a multi-threaded runtime, like the daemons', that reads each request and answers `200`
/// without storing anything. Prints the daemons' `listening` and `ready` lines.
pub(crate) fn serve_http() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening public http://{}", listener.local_addr()?);
        println!("ready");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
