//! The load generator: keep-alive HTTP/1.1 connections over raw TCP, closed loop (each
//! connection sends its next request when the last is answered) or open loop (requests at fixed
//! times, whatever the answers do).
//!
//! It is written on raw sockets so that the client costs as little CPU as possible: on a 2-core
//! machine every cycle the client burns is taken from the server being measured. The same
//! generator drives the daemons and their ceilings, so its cost is in both sides of each ratio.
//! Every request carries `X-Bench-Seq: <10 digits>` so a receiver can say when it arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Latencies;

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) path: String,
    /// Extra header lines, each ending in `\r\n`.
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

impl Target {
    /// A POST of `body_len` bytes of JSON-ish text to `path`.
    pub(crate) fn post(addr: SocketAddr, path: &str, body_len: usize) -> Target {
        Target {
            addr,
            path: path.to_owned(),
            headers: "Content-Type: application/json\r\n".into(),
            body: filler(body_len),
        }
    }

    fn request(&self) -> (Vec<u8>, usize) {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n{}Content-Length: {}\r\nX-Bench-Seq: ",
            self.path,
            self.addr,
            self.headers,
            self.body.len()
        );
        let seq_at = head.len();
        let mut req = head.into_bytes();
        req.extend_from_slice(b"0000000000\r\n\r\n");
        req.extend_from_slice(&self.body);
        (req, seq_at)
    }
}

/// `n` bytes of a JSON document, so that a body looks like a webhook's.
pub(crate) fn filler(n: usize) -> Vec<u8> {
    let mut body = b"{\"type\":\"bench\",\"data\":\"".to_vec();
    while body.len() + 2 < n {
        body.push(b'a' + (body.len() % 26) as u8);
    }
    body.extend_from_slice(b"\"}");
    body.truncate(n);
    body
}

/// What a closed-loop run measured inside its window.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    /// 2xx answers per second.
    pub(crate) rate: f64,
    /// Non-2xx answers and connection errors.
    pub(crate) failed: u64,
    pub(crate) latencies: Latencies,
}

/// Runs `concurrency` connections in a closed loop for `warmup + measure`, counting what
/// completes after the warm-up.
pub(crate) fn closed_loop(
    target: &Target,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Closed> {
    let target = target.clone();
    on_own_thread(async move {
        let start = Instant::now();
        let (from, until) = (start + warmup, start + warmup + measure);
        let seq = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (target, seq) = (target.clone(), seq.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(&target).await?;
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let status = conn.roundtrip(seq.fetch_add(1, Ordering::Relaxed)).await;
                    let done = Instant::now();
                    let counted = done >= from && done < until;
                    match status {
                        Ok(s) if (200..300).contains(&s) => {
                            if counted {
                                ok += 1;
                                lat.push(micros(done - sent));
                            }
                        }
                        Ok(_) => failed += u64::from(counted),
                        Err(_) => {
                            failed += u64::from(counted);
                            conn = Conn::open(&target).await?;
                        }
                    }
                }
                anyhow::Ok((ok, failed, lat))
            }));
        }
        let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
        for task in tasks {
            let (o, f, l) = task.await??;
            ok += o;
            failed += f;
            lat.extend(l);
        }
        Ok(Closed {
            rate: ok as f64 / measure.as_secs_f64(),
            failed,
            latencies: Latencies::new(lat),
        })
    })
}

/// When each request of an open-loop run was due and answered, in µs since `epoch`.
#[derive(Debug)]
pub(crate) struct Open {
    /// The time each request was scheduled for (not when a free connection sent it, so that a
    /// backed-up server is charged for the wait).
    pub(crate) due_us: Vec<u64>,
    /// When its answer came, 0 if none; and its status.
    pub(crate) answered_us: Vec<u64>,
    pub(crate) status: Vec<u16>,
}

/// Sends `count` requests at `rate` per second over up to `concurrency` connections; request
/// `i` carries sequence number `i`.
pub(crate) fn open_loop(
    target: &Target,
    rate: f64,
    count: usize,
    concurrency: usize,
    epoch: Instant,
) -> anyhow::Result<Open> {
    let target = target.clone();
    on_own_thread(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (target, rx, done_tx) = (target.clone(), rx.clone(), done_tx.clone());
            workers.push(tokio::spawn(async move {
                let mut conn = Conn::open(&target).await?;
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((i, _due)) = next else { break };
                    let status = match conn.roundtrip(i as u64).await {
                        Ok(s) => s,
                        Err(_) => {
                            conn = Conn::open(&target).await?;
                            0
                        }
                    };
                    let _ = done_tx.send((i, micros(epoch.elapsed()) as u64, status));
                }
                anyhow::Ok(())
            }));
        }
        drop(done_tx);
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut due_us = Vec::with_capacity(count);
        for i in 0..count {
            let at = start + period.mul_f64(i as f64);
            tokio::time::sleep_until(at).await;
            let due = at.into_std();
            due_us.push(micros(due.saturating_duration_since(epoch)) as u64);
            if tx.send((i, due)).is_err() {
                bail!("every connection failed");
            }
        }
        drop(tx);
        let mut answered_us = vec![0; count];
        let mut status = vec![0; count];
        while let Some((i, at, s)) = done_rx.recv().await {
            if let (Some(a), Some(st)) = (answered_us.get_mut(i), status.get_mut(i)) {
                *a = at;
                *st = s;
            }
        }
        for w in workers {
            w.await??;
        }
        Ok(Open {
            due_us,
            answered_us,
            status,
        })
    })
}

/// One keep-alive connection with its request template.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    request: Vec<u8>,
    seq_at: usize,
}

impl Conn {
    async fn open(target: &Target) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (request, seq_at) = target.request();
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            request,
            seq_at,
        })
    }

    /// Sends the request with sequence number `seq` and reads the answer; returns its status.
    async fn roundtrip(&mut self, seq: u64) -> anyhow::Result<u16> {
        let digits = format!("{:010}", seq % 10_000_000_000);
        if let Some(slot) = self.request.get_mut(self.seq_at..self.seq_at + 10) {
            slot.copy_from_slice(digits.as_bytes());
        }
        self.stream.write_all(&self.request).await?;
        loop {
            if let Some((status, len)) = parse_response(&self.buf)? {
                self.buf.drain(..len);
                return Ok(status);
            }
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the server");
            }
        }
    }
}

/// Parses a complete response at the start of `buf`: its status and total length, or `None`
/// if more bytes are needed.
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status in the response")?;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().context("bad content-length")?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the bench client");
            }
        }
    }
    let total = end + 4 + length;
    Ok((buf.len() >= total).then_some((status, total)))
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs `work` on a thread of its own with a single-threaded runtime, so the generator uses at
/// most one core and never the daemon's.
pub(crate) fn on_own_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(work)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("load generator thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(buf: &[u8], want: Option<(u16, usize)>) {
        assert_eq!(parse_response(buf).unwrap(), want, "{buf:?}");
    }

    #[test]
    fn responses_are_framed() {
        check(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Some((200, 38)),
        );
        check(
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}X",
            Some((202, 46)),
        );
        check(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{", None);
        check(b"HTTP/1.1 200 OK\r\ncontent-le", None);
        let chunked = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(
            chunked.unwrap_err().to_string(),
            "chunked responses are not supported by the bench client"
        );
    }

    #[test]
    fn filler_has_the_asked_length() {
        for n in [0, 5, 30, 1024] {
            assert_eq!(filler(n).len(), n);
        }
        assert!(filler(1024).starts_with(b"{\"type\""));
        assert!(filler(1024).ends_with(b"\"}"));
    }

    #[test]
    fn requests_carry_a_sequence_slot() {
        let t = Target::post("127.0.0.1:9".parse().unwrap(), "/x", 3);
        let (req, at) = t.request();
        assert_eq!(&req[at..at + 10], b"0000000000");
        assert!(req.ends_with(b"\r\n\r\n{\"t"));
    }
}
