//! Hostile conditions: a full or read-only spool, and clients that never finish their headers.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use harness::{get, wait_for, Receiver, Tmpfs};

use crate::{route, write_config, Whimp, BIN, FAST_RETRY};

#[test]
fn full_disk_gets_503_never_2xx_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(&dir.path().join("spool"), "512k") else {
        return;
    };
    let backend = Receiver::start();
    backend.answer(|_| harness::Answer::Status(503, vec![])); // keep messages in the spool
    let config = write_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}routes:\n{}",
            route("f", "/f/K", &[backend.url("/in")], "")
        ),
    );
    let daemon = harness::Daemon::start(Path::new(BIN), &config);
    let post = |body: &[u8]| harness::post(daemon.addr("public"), "/f/K", "", body);
    let spool = dir.path().join("spool");
    assert_eq!(post(b"fits").0, 200);

    // Fill the disk, leaving less room than a request needs.
    let filler = spool.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 600 * 1024]);
    let body = vec![b'z'; 64 * 1024];
    let before =
        crate::files_in(&spool.join("new")).len() + crate::files_in(&spool.join("cur")).len();
    for _ in 0..5 {
        let (status, _) = post(&body);
        assert_eq!(
            status, 503,
            "a request that cannot be stored is never acknowledged"
        );
    }
    let after =
        crate::files_in(&spool.join("new")).len() + crate::files_in(&spool.join("cur")).len();
    assert_eq!(before, after, "nothing was stored");
    assert!(
        crate::files_in(&spool.join("tmp")).is_empty(),
        "no partial files left"
    );
    assert_eq!(
        get(daemon.addr("admin"), "/readyz").0,
        503,
        "not ready while the disk is full"
    );
    let raw = harness::raw(
        daemon.addr("public"),
        format!(
            "POST /f/K HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes()
        .iter()
        .chain(body.iter())
        .copied()
        .collect::<Vec<u8>>()
        .as_slice(),
    );
    assert_eq!(raw.0, 503);

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(post(&body).0, 200, "space is back");
    assert_eq!(
        get(daemon.addr("admin"), "/readyz").0,
        200,
        "ready again after a good write"
    );
    drop(daemon);
}

#[test]
fn a_healed_disk_turns_ready_by_itself_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(&dir.path().join("spool"), "512k") else {
        return;
    };
    let backend = Receiver::start();
    let config = write_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}routes:\n{}",
            route("h", "/h/K", &[backend.url("/in")], "")
        ),
    );
    let daemon = harness::Daemon::start(Path::new(BIN), &config);
    let ready = || get(daemon.addr("admin"), "/readyz").0 == 200;
    let gauge = || daemon.metric(telemetry::names::WHIMP_READY);
    assert!(ready(), "ready at start");
    assert_eq!(gauge(), 1.0);

    // The disk fills up: a request is refused, and whimp turns not ready.
    let filler = dir.path().join("spool").join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 600 * 1024]);
    let (status, _) = harness::post(daemon.addr("public"), "/h/K", "", &[b'z'; 64 * 1024]);
    assert_eq!(status, 503);
    assert!(!ready(), "not ready while the disk is full");
    assert_eq!(gauge(), 0.0);

    // Space comes back, and no request follows (a load balancer sends none to an unready node):
    // whimp finds out by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for("ready again without a request", ready);
    assert_eq!(gauge(), 1.0);
    assert_eq!(
        daemon.metric("whimp_requests_total{code=\"503\",route=\"h\"}"),
        1.0,
        "no request came in meanwhile"
    );
    assert!(crate::files_in(&dir.path().join("spool").join("tmp")).is_empty());
}

#[test]
fn read_only_spool_gets_503_with_retry_after() {
    let backend = Receiver::start();
    let whimp = Whimp::start(&format!(
        "routes:\n{}",
        route("r", "/r/K", &[backend.url("/in")], "")
    ));
    let tmp = whimp.spool_dir().join("tmp");
    // Root ignores permissions; the immutable attribute stops even root from creating files.
    if !Command::new("chattr")
        .arg("+i")
        .arg(&tmp)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED read_only_spool: chattr +i not available here");
        return;
    }
    let (status, _) = whimp.post("/r/K", "", b"x");
    let reply = harness::raw(
        whimp.daemon.addr("public"),
        b"POST /r/K HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    );
    let _ = Command::new("chattr").arg("-i").arg(&tmp).status();
    assert_eq!(status, 503);
    assert_eq!(reply.0, 503);
    assert_eq!(whimp.pending(), 0);
    assert_eq!(backend.count(), 0);
    assert_eq!(whimp.post("/r/K", "", b"x").0, 200, "writable again");
    wait_for("delivered", || backend.count() == 1);
}

#[test]
fn idle_and_slow_clients_are_cut_off_and_do_not_block_others() {
    let backend = Receiver::start();
    let whimp = Whimp::start(&format!(
        "limits: {{ header_timeout: 1s, max_connections: 1000, max_connections_per_ip: 1000 }}\nroutes:\n{}",
        route("i", "/i/K", &[backend.url("/in")], "")
    ));
    let addr = whimp.daemon.addr("public");
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(addr).unwrap();
        if i % 2 == 0 {
            // Half send a partial head and stall.
            use std::io::Write;
            s.write_all(b"POST /i/K HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
        }
        idle.push(s);
    }
    // Meanwhile a normal request is served.
    assert_eq!(whimp.post("/i/K", "", b"normal").0, 200);
    wait_for("the normal request is forwarded", || backend.count() == 1);
    // Every idle connection is closed by whimp (EOF or reset).
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(harness::DEADLINE)).unwrap();
        let mut buf = [0u8; 512];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            assert!(total < 100_000, "connection {i} kept talking");
        }
    }
    assert_eq!(whimp.pending(), 0);
}

#[test]
fn a_body_that_never_completes_gets_408_and_is_not_stored() {
    let backend = Receiver::start();
    let whimp = Whimp::start(&format!(
        "limits: {{ body_timeout: 1s }}\nroutes:\n{}",
        route("b", "/b/K", &[backend.url("/in")], "")
    ));
    let mut s = TcpStream::connect(whimp.daemon.addr("public")).unwrap();
    use std::io::Write;
    s.write_all(b"POST /b/K HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        .unwrap();
    s.set_read_timeout(Some(harness::DEADLINE)).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(whimp.pending(), 0);
    assert_eq!(backend.count(), 0);
    assert_eq!(
        whimp
            .daemon
            .metric("whimp_requests_total{code=\"408\",route=\"b\"}"),
        1.0
    );
}
