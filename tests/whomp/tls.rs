//! HTTPS delivery: whomp connects to the address pre-flight checked, yet TLS still sends the
//! host name (SNI) and checks the certificate against it, trusting `delivery.ca_file`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use harness::{wait_for, TestCa};
use http_body_util::Full;

use crate::{envelope, Whomp, FAST_RETRY};

/// An HTTPS receiver on 127.0.0.1 answering 200, recording the SNI name of each request.
struct TlsReceiver {
    addr: SocketAddr,
    names: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsReceiver {
    fn start(cert_pem: &str, key_pem: &str) -> TlsReceiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let names: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = names.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    // A handshake the client aborts (bad certificate) just ends here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    let service = hyper::service::service_fn(move |_req| {
                        seen.lock().unwrap().push(sni.clone());
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        TlsReceiver {
            addr,
            names,
            _runtime: runtime,
        }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

#[test]
fn https_uses_the_host_name_for_sni_and_the_certificate() {
    let ca = TestCa::new("whomp test CA");
    let (cert, key) = ca.issue(&["hooks.test"]);
    let receiver = TlsReceiver::start(&cert, &key);
    let port = receiver.addr.port();
    let whomp = Whomp::start_with(
        &format!(
            "{FAST_RETRY}preflight: {{ ports: [{port}], allow_cidrs: [127.0.0.1/32] }}\n\
             dns: {{ servers: [\"127.0.0.1:9\"], static: {{ hooks.test: [127.0.0.1], other.test: [127.0.0.1] }} }}\n\
             delivery: {{ ca_file: ca.pem }}\n"
        ),
        &[("ca.pem", &ca.cert_pem)],
    );

    let id = whomp.submit(&envelope(
        "POST",
        &format!("https://hooks.test:{port}/in"),
        &[],
        "tls",
    ));
    let status = whomp.wait_state(&id, "delivered");
    assert_eq!(status["attempts"][0]["status"], 200);
    assert_eq!(
        receiver.names(),
        ["hooks.test"],
        "SNI is the URL's host name"
    );

    // Same address, other name: the certificate does not match, nothing is delivered.
    let wrong = whomp.submit(&envelope(
        "POST",
        &format!("https://other.test:{port}/in"),
        &[],
        "x",
    ));
    let mut last = serde_json::Value::Null;
    wait_for("the attempt fails on the certificate", || {
        last = whomp.status(&wrong);
        // The attempt is recorded just before the message moves to cur/: wait for both.
        last["state"] == "retrying"
            && last["attempts"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("certificate"))
    });
    println!(
        "certificate mismatch recorded as: {}",
        last["attempts"][0]["error"]
    );
    assert_eq!(last["state"], "retrying");
    assert_eq!(receiver.names().len(), 1);
}
