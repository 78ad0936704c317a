//! examples/walkthrough.sh, run end to end as an operator would, against the binaries built
//! here: a webhook in through whimp, one out through whomp, a dead letter re-queued, the spools
//! and metrics shown, everything stopped with exit 0 and the scratch directory removed.

use std::process::Command;

use crate::support::{daemon, demo_receiver, printed, repo, run, tool};

#[test]
fn walkthrough_runs_end_to_end() {
    if tool("curl", "curl", "walkthrough_runs_end_to_end").is_none() {
        return;
    }
    // The script makes its scratch directory under TMPDIR and removes it at the end.
    let tmp = tempfile::tempdir().unwrap();
    let output = run(Command::new("bash")
        .arg(repo().join("examples/walkthrough.sh"))
        .env("WHIMP", daemon("whimp"))
        .env("WHOMP", daemon("whomp"))
        .env("DEMO_RECEIVER", demo_receiver())
        .env("TMPDIR", tmp.path())
        .env_remove("WORK_DIR")
        .env_remove("BIN_DIR"));
    let out = printed(&output);
    assert!(output.status.success(), "walkthrough failed:\n{out}");
    for wanted in [
        // whimp stored the webhook, answered 200 and forwarded it with its own header fields.
        "HTTP/1.1 200 OK",
        "received POST /hooks/demo?attempt=1 HTTP/1.1",
        "whimp-original-url: http://127.0.0.1:",
        "{\"event\":\"invoice.paid\",\"amount\":4200}",
        "whimp_forward_attempts_total{backend=\"demo/1\",outcome=\"delivered\"} 1",
        // whomp delivered the message and shows its attempt.
        "received POST /partner/hook HTTP/1.1",
        "\"state\":\"delivered\"",
        "whomp_delivery_attempts_total{outcome=\"delivered\"} 1",
        // Pre-flight refuses the metadata address.
        "inside rejected range 169.254.169.254/32 (cloud metadata)",
        // The 410 message went to dead/, was shown and re-queued, and died again.
        "\"last_error\":\"status 410\"",
        "--- attempts of ",
        "whomp_dead_letters_total 2",
        "whimp exited 0",
        "whomp exited 0",
        "walkthrough: ok",
    ] {
        assert!(
            out.contains(wanted),
            "the walkthrough did not show {wanted:?}:\n{out}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the walkthrough left {left:?} behind");
}

#[test]
fn walkthrough_refuses_missing_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-whimp");
    let output = run(Command::new("bash")
        .arg(repo().join("examples/walkthrough.sh"))
        .env("WHIMP", &missing)
        .env("TMPDIR", tmp.path()));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        printed(&output),
        format!(
            "walkthrough: {} not found; build first: cargo build --release\n",
            missing.display()
        )
    );
}
