//! Server certificates that can be swapped while the daemon runs.
//!
//! The rustls config is built once per listener; its certificate comes from a resolver holding
//! the current key pair, so SIGHUP re-reads the PEM files and new handshakes get the new
//! certificate while open connections carry on undisturbed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and key read from PEM files, reloadable.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

/// Why certificates could not be loaded; the listener does not start (or, on reload, keeps the
/// certificates it has).
#[derive(Debug, thiserror::Error)]
#[error("cannot load TLS certificate {cert} with key {key}: {reason}")]
pub struct CertError {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reason: String,
}

impl Certs {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certs>, CertError> {
        let current = read(cert, key)?;
        Ok(Arc::new(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), CertError> {
        let fresh = read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// A server config using these certificates: TLS 1.2 and 1.3, ALPN h2 then http/1.1.
    pub fn server_config(self: &Arc<Certs>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_no_client_auth()
                    .with_cert_resolver(self.clone() as Arc<dyn ResolvesServerCert>)
            })
            // The ring provider supports the default versions; this cannot fail.
            .unwrap_or_else(|_| unreachable_config());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn unreachable_config() -> rustls::ServerConfig {
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()))
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let fail = |reason: String| CertError {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(format!("reading {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("parsing {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(fail(format!("{} holds no certificate", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| fail(format!("reading {}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| fail(format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| fail(format!("key does not match certificate: {e}")))?;
    Ok(certified)
}
