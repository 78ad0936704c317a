//! HTTPS: a test CA, HTTP/1.1 and h2 by ALPN, a certificate swap on SIGHUP, and a reload
//! refused whole when its certificate does not load.

use std::sync::Arc;

use harness::{wait_for, write_file, Receiver, TestCa};
use telemetry::names;

use crate::{route, Whimp, FAST_RETRY};

/// A blocking HTTPS client trusting only `ca_pem`, offering `alpn`.
struct Client {
    rt: tokio::runtime::Runtime,
    inner: reqwest::Client,
}

impl Client {
    fn new(ca_pem: &str, alpn: &[&[u8]]) -> Client {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let inner = rt
            .block_on(async {
                reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .no_proxy()
                    .build()
            })
            .unwrap();
        Client { rt, inner }
    }

    /// POSTs `body`; the answer's status and HTTP version, or the error's text.
    fn post(&self, url: &str, body: &'static str) -> Result<(u16, reqwest::Version), String> {
        self.rt
            .block_on(self.inner.post(url).body(body).send())
            .map(|r| (r.status().as_u16(), r.version()))
            .map_err(|e| format!("{e:?}"))
    }
}

#[test]
fn https_over_h1_and_h2_and_certificate_reload() {
    let first = TestCa::new("first CA");
    let second = TestCa::new("second CA");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = first.issue(&["127.0.0.1", "localhost"]);
    write_file(certs.path(), "cert.pem", &cert);
    write_file(certs.path(), "key.pem", &key);
    let backend = Receiver::start();
    let listen = format!(
        "listen: [{{ addr: 127.0.0.1:0, tls: {{ cert: {0}/cert.pem, key: {0}/key.pem }} }}]\n{FAST_RETRY}routes:\n{1}",
        certs.path().display(),
        route("tls", "/tls/K", &[backend.url("/in")], "")
    );
    let whimp = Whimp::start(&listen);
    let url = format!(
        "https://127.0.0.1:{}/tls/K",
        whimp.daemon.addr("public").port()
    );

    let h1 = Client::new(&first.cert_pem, &[b"http/1.1"]);
    assert_eq!(
        h1.post(&url, "secure"),
        Ok((200, reqwest::Version::HTTP_11))
    );
    let h2 = Client::new(&first.cert_pem, &[b"h2"]);
    assert_eq!(h2.post(&url, "secure"), Ok((200, reqwest::Version::HTTP_2)));
    wait_for("both forwards arrive", || backend.count() == 2);
    for r in backend.received() {
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
        assert!(r
            .header("whimp-original-url")
            .unwrap()
            .starts_with("https://127.0.0.1:"));
        assert_eq!(r.body, b"secure");
    }

    // A client trusting only the second CA is refused until the swap.
    let fresh = Client::new(&second.cert_pem, &[b"h2", b"http/1.1"]);
    assert!(fresh.post(&url, "before swap").is_err());
    let (cert, key) = second.issue(&["127.0.0.1"]);
    write_file(certs.path(), "cert.pem", &cert);
    write_file(certs.path(), "key.pem", &key);
    whimp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the new certificate is served", || {
        fresh.post(&url, "after swap").is_ok()
    });
    let old = Client::new(&first.cert_pem, &[b"http/1.1"]);
    assert!(
        old.post(&url, "old CA").is_err(),
        "new handshakes get the new certificate"
    );
    assert!(
        h1.post(&url, "kept").is_ok(),
        "an open connection is not dropped by the reload"
    );

    let expiry = |whimp: &Whimp| {
        whimp.daemon.metric(&format!(
            "{}{{listener=\"127.0.0.1:0\"}}",
            names::WHIMP_TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS
        ))
    };
    assert!(expiry(&whimp) > 1e9, "{}", whimp.daemon.metrics());
    assert_eq!(
        whimp
            .daemon
            .metric(names::WHIMP_CONFIG_LAST_RELOAD_SUCCESSFUL),
        1.0
    );

    // A reload whose certificate does not load is refused whole: the route it adds stays
    // unknown, the good certificate stays in service, and the failure is logged and counted.
    crate::write_config(
        whimp.dir.path(),
        &format!(
            "{listen}{}",
            route("more", "/more/K", &[backend.url("/in")], "")
        ),
    );
    write_file(certs.path(), "cert.pem", "not a certificate");
    whimp.daemon.signal(rustix::process::Signal::HUP);
    wait_for("the failed reload is logged", || {
        whimp.daemon.output().contains("new config refused")
    });
    let output = whimp.daemon.output();
    assert!(output.contains("cannot load TLS certificate"), "{output}");
    assert_eq!(output.matches("config reloaded").count(), 1, "{output}");
    assert_eq!(
        whimp
            .daemon
            .metric(names::WHIMP_CONFIG_LAST_RELOAD_SUCCESSFUL),
        0.0
    );
    assert_eq!(
        fresh.post(&url.replace("/tls/K", "/more/K"), "not yet"),
        Ok((404, reqwest::Version::HTTP_2)),
        "the refused config's route is not served"
    );
    assert_eq!(
        fresh.post(&url, "still"),
        Ok((200, reqwest::Version::HTTP_2))
    );
    wait_for("every accepted request is forwarded", || {
        backend.count() == 5
    });
}
