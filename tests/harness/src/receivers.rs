//! Backends for the daemons to deliver to: a [`Receiver`] that records every request and
//! answers as scripted (HTTP/1.1 and h2c), and a [`Misbehaving`] one that resets, answers
//! garbage or falls silent.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// One request as a receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a receiver answers: a status with extra headers, or hang until the client gives up.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16, Vec<(String, String)>),
    Hang,
}

type Script = Arc<Mutex<Box<dyn FnMut(&Received) -> Answer + Send>>>;

/// A real HTTP/1.1 + h2c server on 127.0.0.1:0 that records what it gets.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    script: Script,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A receiver on a given address (to bring one back on the port a config names).
    pub fn start_on(addr: SocketAddr) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot bind receiver on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Script = Arc::new(Mutex::new(Box::new(|_: &Received| {
            Answer::Status(200, vec![])
        })));
        let (g, s) = (got.clone(), script.clone());
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (g, s) = (g.clone(), s.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (g, s) = (g.clone(), s.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                let received = Received {
                                    method: parts.method.to_string(),
                                    target: parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.to_string())
                                        .unwrap_or_default(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (
                                                n.to_string(),
                                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                            )
                                        })
                                        .collect(),
                                    body,
                                    at: Instant::now(),
                                };
                                let answer = (s.lock().unwrap())(&received);
                                g.lock().unwrap().push(received);
                                match answer {
                                    Answer::Hang => std::future::pending::<()>().await,
                                    Answer::Status(..) => {}
                                }
                                let Answer::Status(code, headers) = answer else {
                                    unreachable!()
                                };
                                let mut resp =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                                for (n, v) in headers {
                                    resp.headers_mut().insert(
                                        hyper::header::HeaderName::from_bytes(n.as_bytes())
                                            .unwrap(),
                                        hyper::header::HeaderValue::from_str(&v).unwrap(),
                                    );
                                }
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        Receiver {
            addr,
            got,
            script,
            runtime: Some(runtime),
        }
    }

    /// Sets how the receiver answers from now on.
    pub fn answer(&self, script: impl FnMut(&Received) -> Answer + Send + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the receiver and frees its port.
    pub fn stop(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// How a [`Misbehaving`] receiver treats each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Accept, then reset the connection at once.
    Reset,
    /// Read the request, answer bytes that are not HTTP, close.
    Garbage,
    /// Read the request and say nothing for a long time (longer than any test's timeout).
    Silent,
}

/// A raw TCP server on 127.0.0.1 that misbehaves; counts the connections it got.
pub struct Misbehaving {
    pub addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepter: Option<std::thread::JoinHandle<()>>,
}

impl Misbehaving {
    pub fn start_on(addr: SocketAddr, how: Misbehaviour) -> Misbehaving {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener =
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (connections.clone(), stop.clone());
        let accepter = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let halt = halt.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                    match how {
                        Misbehaviour::Reset => {
                            let _ = rustix::net::sockopt::set_socket_linger(
                                &stream,
                                Some(Duration::ZERO),
                            );
                        }
                        Misbehaviour::Garbage => {
                            let mut buf = [0u8; 4096];
                            let _ = stream.read(&mut buf);
                            let _ =
                                stream.write_all(b"\x00\x01garbage\xff\r\n\r\nHTTP/9.9 banana\r\n");
                        }
                        Misbehaviour::Silent => {
                            let mut buf = [0u8; 4096];
                            let _ = stream.read(&mut buf);
                            while !halt.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                });
            }
        });
        Misbehaving {
            addr,
            connections,
            stop,
            accepter: Some(accepter),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Misbehaving {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // The listener closes (and its port frees) when the accept loop ends.
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}
