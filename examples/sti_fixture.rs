//! A STIR/SHAKEN fixture for `bench/stir-latency.sh`: a run-time STI PKI
//! and an HTTPS certificate repository on loopback, and one signed Identity
//! header for a call from CALLER to CALLED.
//!
//! Writes `DIR/sti-roots.pem` (for `stir.trust_anchors`), `DIR/web-ca.pem`
//! (for `stir.x5u_ca_file`) and `DIR/identity.txt` (the header's value),
//! then serves the certificate until killed.
//!
//!   cargo run --release --example sti_fixture -- DIR CALLER CALLED

#[path = "../tests/common/sti.rs"]
mod sti;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, caller, called] = &args[..] else {
        eprintln!("usage: sti_fixture DIR CALLER CALLED");
        std::process::exit(2);
    };
    let dir = std::path::Path::new(dir);
    let pki = sti::Pki::new("Bench STI root", false);
    let repo = sti::Repo::start().await;
    repo.serve("/sp.pem", sti::Answer::Ok(pki.chain_pem()));
    let x5u = repo.url("/sp.pem");
    let jws = pki.sign(&x5u, &sti::claims(caller, called, "A", 0));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| {
            eprintln!("cannot write {name} in {}: {e}", dir.display());
            std::process::exit(1);
        })
    };
    write("sti-roots.pem", &pki.root_pem);
    write("web-ca.pem", &repo.ca_pem);
    write("identity.txt", &sti::identity(&jws, &x5u));
    eprintln!("serving {x5u}");
    std::future::pending::<()>().await;
}
