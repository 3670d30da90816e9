#![allow(dead_code)] // shared by the STIR tests; each uses part of it
//! A STIR/SHAKEN world of the tests' own, made at run time: a root STI
//! certificate authority, an intermediate, a service provider's P-256 leaf
//! that signs PASSporTs, and an HTTPS certificate repository on loopback
//! (its own web CA, trusted through `stir.x5u_ca_file`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An STI PKI: root → intermediate → leaf.
pub struct Pki {
    pub root_pem: String,
    pub leaf_pem: String,
    pub intermediate_pem: String,
    leaf_key: KeyPair,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Pki {
    /// A fresh PKI; `leaf_expired` makes the leaf's validity end in 2020.
    pub fn new(root_name: &str, leaf_expired: bool) -> Pki {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let root_key = KeyPair::generate_for(alg).unwrap();
        let root_params = ca_params(root_name);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate_for(alg).unwrap();
        let int_params = ca_params("Test STI intermediate");
        let int = int_params.signed_by(&int_key, &root_issuer).unwrap();
        let int_issuer = Issuer::new(int_params, int_key);
        let leaf_key = KeyPair::generate_for(alg).unwrap();
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "SHAKEN 1234");
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf_expired {
            leaf_params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let leaf = leaf_params.signed_by(&leaf_key, &int_issuer).unwrap();
        Pki {
            root_pem: root.pem(),
            leaf_pem: leaf.pem(),
            intermediate_pem: int.pem(),
            leaf_key,
        }
    }

    /// What an x5u serves: the leaf, then the intermediate.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.leaf_pem, self.intermediate_pem)
    }

    /// A PASSporT over `claims` with `x5u` in its header, signed by the
    /// leaf (ES256, r ‖ s).
    pub fn sign(&self, x5u: &str, claims: &serde_json::Value) -> String {
        self.sign_header(
            &serde_json::json!({"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": x5u}),
            claims,
        )
    }

    pub fn sign_header(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let input = format!("{}.{}", enc(header), enc(claims));
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.leaf_key.serialize_der(),
        )
        .unwrap();
        let sig = key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!(
            "{input}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
        )
    }
}

/// SHAKEN claims for a call from `orig` to `dest` signed now (+ `skew_s`).
pub fn claims(orig: &str, dest: &str, attest: &str, skew_s: i64) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    serde_json::json!({
        "attest": attest,
        "dest": {"tn": [dest.trim_start_matches('+')]},
        "iat": now + skew_s,
        "orig": {"tn": orig.trim_start_matches('+')},
        "origid": "123e4567-e89b-12d3-a456-426655440000",
    })
}

/// The Identity header value of a PASSporT.
pub fn identity(jws: &str, x5u: &str) -> String {
    format!("{jws};info=<{x5u}>;alg=ES256;ppt=shaken")
}

/// What the repository answers on a path.
#[derive(Clone)]
pub enum Answer {
    Ok(String),
    /// With `Cache-Control: max-age=N`.
    OkMaxAge(String, u64),
    Status(u16),
    Redirect(String),
    Slow(Duration),
    Big(usize),
}

/// An HTTPS certificate repository on loopback.
pub struct Repo {
    pub addr: SocketAddr,
    /// The web CA that issued its TLS certificate (for `stir.x5u_ca_file`).
    pub ca_pem: String,
    pub routes: Arc<Mutex<HashMap<String, Answer>>>,
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Repo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Repo {
    pub async fn start() -> Repo {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = KeyPair::generate_for(alg).unwrap();
        let ca_params = ca_params("Test web CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let ca_issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate_for(alg).unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca_issuer).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let server = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h) = (Arc::clone(&routes), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, routes, hits) = (acceptor.clone(), Arc::clone(&r), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut req = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let answer = routes.lock().unwrap().get(&path).cloned();
                    let (status, extra, body) = match answer {
                        Some(Answer::Ok(b)) => (200, String::new(), b.into_bytes()),
                        Some(Answer::OkMaxAge(b, s)) => (
                            200,
                            format!("Cache-Control: max-age={s}\r\n"),
                            b.into_bytes(),
                        ),
                        Some(Answer::Status(c)) => (c, String::new(), Vec::new()),
                        Some(Answer::Redirect(to)) => {
                            (302, format!("Location: {to}\r\n"), Vec::new())
                        }
                        Some(Answer::Slow(d)) => {
                            tokio::time::sleep(d).await;
                            (200, String::new(), Vec::new())
                        }
                        Some(Answer::Big(n)) => (200, String::new(), vec![b'A'; n]),
                        None => (404, String::new(), Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/pem-certificate-chain\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Repo {
            addr,
            ca_pem: ca.pem(),
            routes,
            hits,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn serve(&self, path: &str, answer: Answer) {
        self.routes.lock().unwrap().insert(path.to_string(), answer);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}
