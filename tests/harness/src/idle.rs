//! Idle clients, for the connection limits: connections that open (plain or TLS) and fall
//! silent before a request head is complete, and a wait until the server has closed them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::DEADLINE;

/// What an idle client sends before falling silent; none of it completes a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing at all.
    Nothing,
    /// One byte, `P`: the start of both `POST` and the HTTP/2 preface.
    OneByte,
    /// The HTTP/2 connection preface and an empty SETTINGS frame, and then no stream.
    H2Preface,
}

impl Idle {
    fn bytes(self) -> &'static [u8] {
        match self {
            Idle::Nothing => b"",
            Idle::OneByte => b"P",
            Idle::H2Preface => {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            }
        }
    }
}

/// How an idle client speaks to the server: plain TCP, or TLS trusting a CA and offering one
/// ALPN protocol (the handshake is completed before falling silent).
#[derive(Debug, Clone, Copy)]
pub enum Wire<'a> {
    Plain,
    Tls { ca_pem: &'a str, alpn: &'a [u8] },
}

/// Opens a connection from `source` (any `127.x.y.z`: the whole block is loopback on Linux, so
/// a test can play many clients) to `addr`, speaks `wire` and sends `idle`'s bytes, and returns
/// the connection, to be watched with [`wait_closed`]. A connection the server closes at once
/// (over a cap) is returned too: it reads as closed.
pub fn hold(addr: SocketAddr, source: std::net::IpAddr, wire: Wire<'_>, idle: Idle) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let family = if source.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(family, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::new(source, 0))
        .unwrap_or_else(|e| panic!("cannot bind a client socket to {source}: {e}"));
    rustix::net::connect(&fd, &addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let mut stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    match wire {
        Wire::Plain => {
            let _ = stream.write_all(idle.bytes());
        }
        Wire::Tls { ca_pem, alpn } => {
            let mut tls = tls_client(ca_pem, alpn, addr.ip());
            // A refused connection fails the handshake; that is for wait_closed to see.
            while tls.is_handshaking() {
                if tls.complete_io(&mut stream).is_err() {
                    return stream;
                }
            }
            let mut io = rustls::Stream::new(&mut tls, &mut stream);
            let _ = io.write_all(idle.bytes()).and_then(|()| io.flush());
        }
    }
    stream
}

fn tls_client(ca_pem: &str, alpn: &[u8], ip: std::net::IpAddr) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    rustls::ClientConnection::new(Arc::new(config), rustls::pki_types::ServerName::from(ip))
        .unwrap()
}

/// Waits until the server has closed every connection of `held` (end of file or reset),
/// discarding whatever it sends first (TLS records, HTTP/2 SETTINGS); after [`DEADLINE`],
/// panics saying how many of each label are still open.
pub fn wait_closed(held: &mut [(&str, TcpStream)]) {
    let deadline = Instant::now() + DEADLINE;
    let mut open: Vec<&str> = Vec::new();
    for (label, stream) in held.iter_mut() {
        if !closed_by(stream, deadline) {
            open.push(label);
        }
    }
    if !open.is_empty() {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for label in open {
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        panic!("connections still open after {DEADLINE:?}: {counts:?}");
    }
}

fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        // A zero timeout means none; a past deadline still gets a last short look.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
