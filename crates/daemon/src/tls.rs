//! Server certificates that can be swapped while the daemon runs, read the one way that start-up,
//! `check-config` and SIGHUP all share.
//!
//! The rustls config is built once per listener; its certificate comes from a resolver holding
//! the current key pair, so SIGHUP re-reads the PEM files and new handshakes get the new
//! certificate while open connections carry on undisturbed. A reload reads every listener's
//! files first and swaps them only if all of them load ([`stage`]), so that it changes all
//! certificates or none and can be refused as a whole.

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

/// Why certificates could not be loaded; the listener does not start (or, on reload, the whole
/// reload is refused and the certificates in use stay).
#[derive(Debug, thiserror::Error)]
#[error("cannot load TLS certificate {cert} with key {key}: {reason}")]
pub struct CertError {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reason: String,
    /// Whether the key is what to fix (unreadable, unusable, not the certificate's) rather than
    /// the certificate file.
    pub in_key: bool,
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

    /// When the certificate in use expires (its `notAfter`), in seconds since the Unix epoch;
    /// `None` if that cannot be read from it.
    pub fn not_after(&self) -> Option<i64> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.end_entity_cert().ok().and_then(|c| not_after(c))
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

/// Reads the certificates of every TLS listener in `listeners` (`None` for plain ones), as
/// start-up and `check-config` both do; the error has one problem per listener that failed, at
/// its `cert` or `key` entry in the config file.
pub fn load_listeners(
    listeners: &[config::Listener],
) -> Result<Vec<Option<Arc<Certs>>>, Vec<config::Problem>> {
    let mut loaded = Vec::with_capacity(listeners.len());
    let mut problems = Vec::new();
    for listener in listeners {
        match &listener.tls {
            None => loaded.push(None),
            Some(tls) => match Certs::load(&tls.cert, &tls.key) {
                Ok(certs) => loaded.push(Some(certs)),
                Err(e) => problems.push(config::Problem {
                    location: if e.in_key { tls.key_at } else { tls.cert_at },
                    message: format!("listener {}: {e}", listener.addr),
                }),
            },
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// Certificates read again for a reload, not yet in use.
#[derive(Debug)]
pub struct Staged(Vec<(Arc<Certs>, CertifiedKey)>);

/// Re-reads the files of every one of `certs`; the error has one line per pair that failed, and
/// then none of them changes.
pub fn stage(certs: &[Arc<Certs>]) -> Result<Staged, String> {
    let mut staged = Vec::with_capacity(certs.len());
    let mut problems = Vec::new();
    for certs in certs {
        match read(&certs.cert, &certs.key) {
            Ok(fresh) => staged.push((certs.clone(), fresh)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if problems.is_empty() {
        Ok(Staged(staged))
    } else {
        Err(problems.join("\n"))
    }
}

impl Staged {
    /// Puts the new certificates in use: new handshakes get them.
    pub fn install(self) {
        for (certs, fresh) in self.0 {
            *certs.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        }
    }
}

fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let fail = |in_key: bool, reason: String| CertError {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
        in_key,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(false, format!("reading {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(false, format!("parsing {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(fail(
            false,
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| fail(true, format!("reading {}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| fail(true, format!("unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| fail(true, format!("key does not match certificate: {e}")))?;
    Ok(certified)
}

/// The `notAfter` of a DER certificate in seconds since the Unix epoch: Certificate ::=
/// SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity SEQUENCE { notBefore, notAfter }, .. }, .. } (RFC 5280, 4.1). `None` for anything
/// else; a few lines of DER rather than an X.509 library for one field.
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, certificate, _) = tlv(der)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = tlv(rest)?;
    let (_, _, validity) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(validity)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let digits = rest.strip_suffix('Z')?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| digits.get(i..i + 2).and_then(|d| d.parse::<i64>().ok());
    let (month, day) = (field(0)?, field(2)?);
    let seconds = field(4)? * 3600 + field(6)? * 60 + field(8)?;
    Some(days_from_civil(year, month, day) * 86_400 + seconds)
}

/// One DER element at the start of `input`: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(not_after: Option<(i32, u8, u8)>) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        if let Some((y, m, d)) = not_after {
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn expiry_is_read_in_both_time_forms() {
        let dir = tempfile::tempdir().unwrap();
        for (date, expected) in [((2031, 5, 6), 1_935_792_000), ((2061, 1, 2), 2_871_849_600)] {
            let (cert, key) = issue(Some(date));
            let certs = Certs::load(
                &write(dir.path(), "c.pem", &cert),
                &write(dir.path(), "k.pem", &key),
            )
            .unwrap();
            assert_eq!(certs.not_after(), Some(expected), "{date:?}");
        }
        assert_eq!(not_after(b"junk"), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn a_reload_with_one_bad_pair_changes_none() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = issue(Some((2031, 5, 6)));
        let (cert_b, key_b) = issue(Some((2032, 1, 1)));
        let a = Certs::load(
            &write(dir.path(), "a.pem", &cert_a),
            &write(dir.path(), "a.key", &key_a),
        )
        .unwrap();
        let b = Certs::load(
            &write(dir.path(), "b.pem", &cert_b),
            &write(dir.path(), "b.key", &key_b),
        )
        .unwrap();
        let before = (a.not_after(), b.not_after());
        // a gets a new certificate, b's key no longer matches its certificate.
        let (cert_new, key_new) = issue(Some((2040, 1, 1)));
        write(dir.path(), "a.pem", &cert_new);
        write(dir.path(), "a.key", &key_new);
        write(dir.path(), "b.key", &key_new);
        let err = stage(&[a.clone(), b.clone()]).unwrap_err();
        assert!(err.contains("key does not match certificate"), "{err}");
        assert_eq!((a.not_after(), b.not_after()), before);
        write(dir.path(), "b.key", &key_b);
        stage(&[a.clone(), b.clone()]).unwrap().install();
        assert_ne!(a.not_after(), before.0);
    }
}
