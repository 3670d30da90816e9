#![allow(dead_code)] // shared by several test crates; each uses part of it
//! A certificate authority made at run time, and the certificates it issues
//! to the servers and peers of the TLS tests.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA (ECDSA P-256) whose PEM certificate peers are told to trust.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (host names or IP addresses) and its key,
    /// both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// [`Pki::issue`], written to `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    pub fn write(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(names);
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    /// Writes the CA certificate to `<dir>/<stem>.crt`.
    pub fn write_ca(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.crt"));
        std::fs::write(&p, &self.ca_pem).unwrap();
        p
    }
}

/// A CA and a server certificate for 127.0.0.1 it signed, made now:
/// (CA PEM, certificate PEM, key PEM), for the servers' TLS ports.
pub fn loopback_pki() -> (String, String, String) {
    let pki = Pki::new("Test server CA");
    let (cert, key) = pki.issue(&["127.0.0.1"]);
    (pki.ca_pem, cert, key)
}
