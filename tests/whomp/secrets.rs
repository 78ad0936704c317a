//! Secrets in destination URLs (a Slack-style path, a `?token=` query) never reach the logs,
//! metrics, attempt records, status API or `spool list`: those show `scheme://host:port` and
//! the destination's name.

use harness::{wait_for, Answer, Receiver};
use serde_json::Value;

use crate::{envelope, local, Whomp, FAST_RETRY};

#[test]
fn url_secrets_stay_out_of_logs_metrics_records_status_and_listings() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    // One failed attempt (a warn line), then delivered (an info line).
    let mut first = true;
    receiver.answer(move |_| {
        let status = if std::mem::take(&mut first) { 500 } else { 200 };
        Answer::Status(status, vec![])
    });
    let whomp = Whomp::start(&format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"])));
    let url = format!("http://hooks.test:{port}/services/T0/B0/PATHSECRET?token=QUERYSECRET");
    let id = whomp.submit(&envelope("POST", &url, &[], "hi"));
    let status = whomp.wait_state(&id, "delivered");
    assert_eq!(receiver.count(), 2);
    assert_eq!(
        receiver.received()[1].target,
        "/services/T0/B0/PATHSECRET?token=QUERYSECRET",
        "the receiver still gets the whole URL"
    );

    let origin = format!("http://hooks.test:{port}");
    assert_eq!(status["url"], origin);
    assert_eq!(status["attempts"][0]["target"], origin);
    let (code, list, err) = whomp.cli(&["spool", "list"]);
    assert_eq!(code, 0, "{err}");
    let (code, list_json, err) = whomp.cli(&["spool", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(list_json.lines().next().unwrap()).unwrap();
    assert_eq!(listed["target"], format!("POST {origin}"));
    // `spool show` prints the stored message itself (that is what it is for); its listing
    // line and attempts show only the origin.
    let (code, show, err) = whomp.cli(&["spool", "show", &id]);
    assert_eq!(code, 0, "{err}");
    let show_records: String = show
        .lines()
        .take(1)
        .chain(show.lines().skip_while(|l| !l.starts_with("--- attempts")))
        .collect();
    let attempts_dir = whomp.spool_dir().join("attempts");
    let records: String = std::fs::read_dir(&attempts_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    wait_for("the delivery is logged", || {
        whomp.daemon.output().contains("delivered")
    });
    let logs = whomp.daemon.output();
    assert!(
        logs.contains(&format!("destination=hooks.test:{port}")),
        "log lines name the destination host:\n{logs}"
    );
    let status_text = status.to_string();
    let metrics = whomp.daemon.metrics();
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("attempt records", &records),
        ("status", &status_text),
        ("spool list", &list),
        ("spool list --json", &list_json),
        ("spool show (listing and attempts)", &show_records),
    ] {
        for secret in ["PATHSECRET", "QUERYSECRET"] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
    assert!(
        records.contains(&format!("\"target\":\"{origin}\"")),
        "{records}"
    );
}
