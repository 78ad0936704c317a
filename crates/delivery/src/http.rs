//! One HTTP attempt with reqwest, and the TLS setup of delivery clients.
//!
//! Both daemons send with reqwest over rustls (ring), no redirects followed (a 3xx is a failed
//! attempt), no proxy taken from the environment, and read at most an excerpt of the response.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::Sent;

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    pub url: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// A header map of `fields`, in order; a field that is not a valid name and value is left out
/// (stored files are checked when written, so only a hand-edited file has one).
pub fn header_map<'a>(fields: impl Iterator<Item = &'a (String, Vec<u8>)>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for (name, value) in fields {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    headers
}

/// Sends `request` once and describes what happened. Never panics, never follows redirects.
pub async fn send(client: &reqwest::Client, request: Request) -> Sent {
    let target = request.url.clone();
    let built = client
        .request(request.method, &request.url)
        .headers(request.headers)
        .body(request.body)
        .timeout(request.timeout)
        .send()
        .await;
    let mut response = match built {
        Ok(response) => response,
        Err(e) => {
            return Sent {
                target,
                status: None,
                error: Some(describe(&e)),
                retry_after: None,
                excerpt: String::new(),
            }
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| retry::parse_retry_after(v.as_bytes(), SystemTime::now()));
    let mut excerpt = Vec::new();
    // Read only what the record keeps; the rest of the body is dropped with the connection.
    while excerpt.len() < storage::EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    Sent {
        target,
        status: Some(status),
        error: None,
        retry_after,
        excerpt: storage::excerpt(&excerpt),
    }
}

/// The error and its causes on one line, e.g. `error sending request: connection refused`.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connect failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Chains often repeat themselves; keep each distinct message once.
        if !line.is_empty() && !text.contains(&line) && line != last {
            text.push_str(": ");
            text.push_str(&line);
        }
        last = line;
        source = cause.source();
    }
    text
}

/// A rustls client config (ring) trusting the bundled Mozilla roots plus, optionally, the PEM
/// certificates in `extra_ca` (for internal or test CAs). HTTP/1.1 and HTTP/2 by ALPN.
pub fn client_tls(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
