//! whomp's spool command line: `spool show --json` in the shape of the status API, and the
//! `--host` filter of `spool list`.

use harness::{Answer, Receiver};

use crate::{envelope, local, Whomp};

#[test]
fn spool_show_json_is_the_status_api_answer() {
    let receiver = Receiver::start();
    receiver.answer(|_| Answer::Status(410, vec![]));
    let port = receiver.addr.port();
    let whomp = Whomp::start(&format!(
        "retry: {{ initial: 100ms, max_interval: 1s, max_age: 1h, give_up_on: [410] }}\n{}",
        local(&[port], &["hooks.test", "other.test"])
    ));
    let id = whomp.submit(&envelope(
        "POST",
        &format!("http://hooks.test:{port}/gone?x=1"),
        &[],
        "x",
    ));
    let other = whomp.submit(&envelope(
        "POST",
        &format!("http://other.test:{port}/"),
        &[],
        "y",
    ));
    let status = whomp.wait_state(&id, "dead");
    whomp.wait_state(&other, "dead");

    let (code, out, err) = whomp.cli(&["spool", "show", "--json", &id]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        shown, status,
        "spool show --json and GET /v1/messages/{id} agree"
    );
    assert!(shown["attempts"][0]["at"].as_str().unwrap().ends_with('Z'));

    let (code, out, err) = whomp.cli(&["spool", "list", "--json", "--host", "other.test"]);
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["id"], other);
}
