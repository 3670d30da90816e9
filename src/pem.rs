//! PEM files: certificate chains, private keys and the roots a TLS client
//! trusts. One reader for every TLS user (SIP over TLS, PostgreSQL), so each
//! refuses a bad file with the same clear message.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    pub message: String,
}

impl PemError {
    fn new(path: &Path, message: impl Into<String>) -> PemError {
        PemError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Every certificate in `path`, in file order (a chain: leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| PemError::new(path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| PemError::new(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::new(
            path,
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        PemError::new(
            path,
            format!("{e} (expected a PEM private key: -----BEGIN PRIVATE KEY-----)"),
        )
    })
}

/// The certificates in `ca_file`, as trust anchors; with `system`, the
/// operating system's roots too (unreadable ones are skipped: the file may
/// be all it takes).
pub fn roots(system: bool, ca_file: Option<&Path>) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    if system {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    if let Some(path) = ca_file {
        for cert in certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| PemError::new(path, format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = certificates(&path).unwrap_err().to_string();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = private_key(&path).unwrap_err().to_string();
        assert!(e.contains("BEGIN PRIVATE KEY"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert!(roots(false, Some(&missing)).is_err());
    }
}
