//! Secrets in URLs (a backend's path and query, the route path, the sender's query string)
//! never reach the logs, metrics, attempt records or `spool list`: those show the backend's
//! `scheme://host:port` and its `route/n` name. A backend URL with `user:password@` is refused
//! at config load without being quoted.

use std::path::Path;

use harness::{run_cli, wait_for, Answer, Receiver};

use crate::{route, Whimp, BIN, FAST_RETRY};

const SECRETS: [&str; 4] = ["PATHSECRET", "QUERYSECRET", "ROUTESECRET", "SIGSECRET"];

#[test]
fn url_secrets_stay_out_of_logs_metrics_records_and_listings() {
    let backend = Receiver::start();
    // One failed attempt (a warn line), then delivered (an info line).
    let mut first = true;
    backend.answer(move |_| {
        let status = if std::mem::take(&mut first) { 500 } else { 200 };
        Answer::Status(status, vec![])
    });
    let whimp = Whimp::start(&format!(
        "{FAST_RETRY}routes:\n{}",
        route(
            "pay",
            "/pay/ROUTESECRET",
            &[backend.url("/hooks/PATHSECRET?key=QUERYSECRET")],
            ""
        )
    ));
    assert_eq!(
        whimp.post("/pay/ROUTESECRET?sig=SIGSECRET", "", b"x").0,
        200
    );
    wait_for("delivered on the second attempt", || {
        whimp.files("done").len() == 1
    });
    assert_eq!(
        backend.received()[1].target,
        "/hooks/PATHSECRET?key=QUERYSECRET&sig=SIGSECRET",
        "the backend still gets the whole URL"
    );

    let origin = format!("http://{}", backend.addr);
    let listed = whimp.list();
    assert_eq!(listed[0]["target"], "route pay");
    let (code, list, err) = whimp.cli(&["spool", "list"]);
    assert_eq!(code, 0, "{err}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    // `spool show` prints the stored request itself (that is what it is for); its listing line
    // and attempts show only the origin.
    let (code, show, err) = whimp.cli(&["spool", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let show_records: String = show
        .lines()
        .take(1)
        .chain(show.lines().skip_while(|l| !l.starts_with("--- attempts")))
        .collect();
    let records: String = std::fs::read_dir(whimp.spool_dir().join("attempts"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        records.contains(&format!("\"target\":\"{origin}\"")),
        "{records}"
    );
    wait_for("the delivery is logged", || {
        whimp.daemon.output().contains("delivered")
    });
    let logs = whimp.daemon.output();
    assert!(
        logs.contains("destination=pay/1"),
        "log lines name the route and backend:\n{logs}"
    );
    let metrics = whimp.daemon.metrics();
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("attempt records", &records),
        ("spool list", &list),
        ("spool show (listing and attempts)", &show_records),
    ] {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}

#[test]
fn a_backend_url_with_credentials_is_refused_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::write_config(
        dir.path(),
        &format!(
            "routes:\n{}",
            route(
                "pay",
                "/pay/K",
                &["http://hook:PWSECRET@127.0.0.1:9/in".into()],
                ""
            )
        ),
    );
    let config = config.to_str().unwrap();
    let (code, out, err) = run_cli(Path::new(BIN), &["check-config", "--config", config]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("must not carry credentials"), "{err}");
    let (code, out, err) = run_cli(Path::new(BIN), &["--config", config]);
    assert_eq!(code, 64, "the daemon refuses it too: {out}{err}");
    for text in [&out, &err] {
        assert!(!text.contains("PWSECRET"), "{text}");
    }
}
