//! Standard Webhooks signatures as a receiver sees them, checked with an HMAC written here from
//! SHA-256 alone (not the `hmac` crate whomp uses) and, where installed, with `openssl`; keys
//! reload on SIGHUP.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use harness::{wait_for, Received, Receiver};
use sha2::{Digest, Sha256};

use crate::{envelope, local, Whomp, FAST_RETRY};

/// The key of the Standard Webhooks specification's published example.
const PUBLISHED: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_c2Vjb25kIGtleSBmb3Igd2hvbXAgdGVzdHM=";

/// HMAC-SHA256 from RFC 2104, over SHA-256 only.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The same with the `openssl` command, if it is installed.
fn openssl_hmac(key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{hex}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(message).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn secret(key: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(key.strip_prefix("whsec_").unwrap())
        .unwrap()
}

/// Verifies a received request the way a Standard Webhooks receiver does.
pub(crate) fn verify(r: &Received, key: &str, id: &str) {
    assert_eq!(
        r.header("webhook-id"),
        Some(id),
        "webhook-id is the message id"
    );
    let timestamp: u64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(timestamp) < 300,
        "timestamp {timestamp} is now ({now})"
    );
    let signed = [
        id.as_bytes(),
        b".",
        timestamp.to_string().as_bytes(),
        b".",
        &r.body,
    ]
    .concat();
    let secret = secret(key);
    let expected = hmac_sha256(&secret, &signed);
    let header = r.header("webhook-signature").unwrap();
    let signatures: Vec<Vec<u8>> = header
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        .collect();
    assert!(
        signatures.iter().any(|s| s[..] == expected[..]),
        "{header} does not verify"
    );
    if let Some(by_openssl) = openssl_hmac(&secret, &signed) {
        assert_eq!(by_openssl, expected, "openssl agrees");
    } else {
        println!("openssl is not installed; verified with the HMAC written here only");
    }
}

#[test]
fn the_independent_hmac_matches_the_published_example() {
    let signed = br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#;
    let mac = hmac_sha256(&secret(PUBLISHED), signed);
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(mac),
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn signatures_verify_and_keys_reload_on_sighup() {
    let receiver = Receiver::start();
    let port = receiver.addr.port();
    let base = format!("{FAST_RETRY}{}", local(&[port], &["hooks.test"]));
    let whomp = Whomp::start(&format!(
        "{base}signing: {{ keys: {{ partner-a: \"{PUBLISHED}\" }} }}\n"
    ));
    let url = format!("http://hooks.test:{port}/in");
    let body = r#"{"test": 2432232314}"#;

    // Named on the submission (JSON) and inside the message (message/http).
    let (status, answer) = whomp.post_json(
        "/v1/messages",
        "Whomp-Signing-Key: partner-a\r\n",
        &envelope("POST", &url, &[("Content-Type", "application/json")], body),
    );
    assert_eq!(status, 202, "{answer}");
    let first = answer["id"].as_str().unwrap().to_owned();
    let message = format!(
        "POST {url} HTTP/1.1\r\nWhomp-Signing-Key: partner-a\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = whomp.post_http("/v1/messages", "", message.as_bytes());
    assert_eq!(status, 202, "{answer}");
    let second = answer["id"].as_str().unwrap().to_owned();
    wait_for("both signed messages arrive", || receiver.count() == 2);
    for id in [&first, &second] {
        let got = receiver.received();
        let r = got
            .iter()
            .find(|r| r.header("webhook-id") == Some(id.as_str()))
            .unwrap();
        verify(r, PUBLISHED, id);
        assert_eq!(r.header("whomp-signing-key"), None);
    }

    // A new key under the same name, and partner-a's old key gone: reload.
    whomp.rewrite(&format!(
        "{base}signing: {{ keys: {{ partner-a: \"{OTHER}\" }} }}\n"
    ));
    whomp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the reload is logged", || {
        whomp.daemon.output().contains("config reloaded")
    });
    let (status, answer) = whomp.post_json(
        "/v1/messages",
        "Whomp-Signing-Key: partner-a\r\n",
        &envelope("POST", &url, &[], "after reload"),
    );
    assert_eq!(status, 202, "{answer}");
    let third = answer["id"].as_str().unwrap().to_owned();
    wait_for("the third message arrives", || receiver.count() == 3);
    let got = receiver.received();
    let r = got
        .iter()
        .find(|r| r.header("webhook-id") == Some(third.as_str()))
        .unwrap();
    verify(r, OTHER, &third);

    // A key that is gone after a reload is refused at submission.
    whomp.rewrite(&base);
    whomp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the second reload is logged", || {
        whomp.daemon.output().matches("config reloaded").count() == 2
    });
    let (status, answer) = whomp.post_json(
        "/v1/messages",
        "Whomp-Signing-Key: partner-a\r\n",
        &envelope("POST", &url, &[], "x"),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        !whomp.daemon.output().contains(PUBLISHED) && !whomp.daemon.output().contains(OTHER),
        "keys never appear in logs"
    );
}
