//! Connection slots under a flood: clients that connect and never finish a request head, over
//! plain TCP, TLS and HTTP/2, are cut off after `header_timeout`; one source cannot take every
//! slot; a normal request is answered meanwhile.

use std::net::{IpAddr, SocketAddr, TcpStream};

use harness::{free_port, hold, wait_closed, write_file, Idle, Receiver, TestCa, Wire};

use crate::{route, Whimp};

/// Plain and TLS listeners on fixed loopback ports, with `limits` and one route `/c/K`.
fn start(
    ca: &TestCa,
    certs: &std::path::Path,
    limits: &str,
    backend: &Receiver,
) -> (Whimp, SocketAddr, SocketAddr) {
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    write_file(certs, "cert.pem", &cert);
    write_file(certs, "key.pem", &key);
    let (plain, tls) = (free_port(), free_port());
    let whimp = Whimp::start(&format!(
        "listen: [{{ addr: 127.0.0.1:{plain} }}, {{ addr: 127.0.0.1:{tls}, tls: {{ cert: {0}/cert.pem, key: {0}/key.pem }} }}]\nlimits: {limits}\nroutes:\n{1}",
        certs.display(),
        route("c", "/c/K", &[backend.url("/in")], "")
    ));
    (
        whimp,
        SocketAddr::from(([127, 0, 0, 1], plain)),
        SocketAddr::from(([127, 0, 0, 1], tls)),
    )
}

/// Every way of holding a connection without a request: a label, the listener, how, what is
/// sent.
fn kinds<'a>(
    plain: SocketAddr,
    tls: SocketAddr,
    ca: &'a str,
) -> [(&'static str, SocketAddr, Wire<'a>, Idle); 6] {
    let h1 = Wire::Tls {
        ca_pem: ca,
        alpn: b"http/1.1",
    };
    let h2 = Wire::Tls {
        ca_pem: ca,
        alpn: b"h2",
    };
    [
        ("tls handshake, then silence", tls, h1, Idle::Nothing),
        ("tls, one byte", tls, h1, Idle::OneByte),
        ("tls h2 preface, no stream", tls, h2, Idle::H2Preface),
        ("plain, silence", plain, Wire::Plain, Idle::Nothing),
        ("plain, one byte", plain, Wire::Plain, Idle::OneByte),
        (
            "plain h2 preface, no stream",
            plain,
            Wire::Plain,
            Idle::H2Preface,
        ),
    ]
}

/// Opens `per_kind` connections of each kind, each kind from its own source address
/// (127.0.0.10 and up).
fn flood(
    plain: SocketAddr,
    tls: SocketAddr,
    ca: &str,
    per_kind: usize,
) -> Vec<(&'static str, TcpStream)> {
    let mut held = Vec::new();
    for (i, (label, addr, wire, idle)) in kinds(plain, tls, ca).into_iter().enumerate() {
        let source = IpAddr::from([127, 0, 0, 10 + i as u8]);
        for _ in 0..per_kind {
            held.push((label, hold(addr, source, wire, idle)));
        }
    }
    held
}

#[test]
fn idle_connections_of_every_kind_are_closed_after_the_header_deadline() {
    let ca = TestCa::new("idle CA");
    let certs = tempfile::tempdir().unwrap();
    let backend = Receiver::start();
    // The cap's worth: 6 kinds × 50 = max_connections, over both listeners.
    let (whimp, plain, tls) = start(
        &ca,
        certs.path(),
        "{ header_timeout: 2s, max_connections: 300 }",
        &backend,
    );
    let mut held = flood(plain, tls, &ca.cert_pem, 50);
    let admin = whimp.daemon.addr("admin");
    for idle in [Idle::Nothing, Idle::OneByte] {
        let stream = hold(admin, IpAddr::from([127, 0, 0, 20]), Wire::Plain, idle);
        held.push(("admin, idle", stream));
    }

    // A normal request is answered (once slots free up, if all were taken).
    assert_eq!(harness::post(plain, "/c/K", "", b"normal").0, 200);
    wait_closed(&mut held);
    assert_eq!(harness::post(plain, "/c/K", "", b"after").0, 200);
    assert!(
        whimp
            .daemon
            .metric("whimp_connections_dropped_total{reason=\"idle\"}")
            >= 300.0,
        "{}",
        whimp.daemon.metrics()
    );
}

#[test]
fn one_source_cannot_take_every_connection_slot() {
    let ca = TestCa::new("cap CA");
    let certs = tempfile::tempdir().unwrap();
    let backend = Receiver::start();
    // A header deadline longer than the test: only the per-source cap can make room.
    let (whimp, plain, tls) = start(
        &ca,
        certs.path(),
        "{ header_timeout: 1h, max_connections: 400, max_connections_per_ip: 50 }",
        &backend,
    );
    // 600 connections tried, more than max_connections; 50 per source are kept.
    let _held = flood(plain, tls, &ca.cert_pem, 100);
    assert_eq!(harness::post(plain, "/c/K", "", b"normal").0, 200);
    assert_eq!(
        whimp
            .daemon
            .metric("whimp_connections_dropped_total{reason=\"source_limit\"}"),
        300.0
    );
}
