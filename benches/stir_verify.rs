//! What verifying a signed INVITE's Identity header costs with its
//! certificate cached: the whole check (decode, claims, the ES256 signature,
//! the chain reused from the last minute) against decoding and the claims
//! alone, the baseline that needs no cryptography.

#[path = "../tests/common/sti.rs"]
mod sti;

use std::sync::Arc;

use std::hint::black_box;

use criterion::Criterion;
use sipsentry::stir::certs::parse_chain;
use sipsentry::stir::passport::{decode, parse_identity};
use sipsentry::stir::verify::check_claims;
use sipsentry::stir::{TrustAnchors, Verified, verify_with};

const CALLER: &str = "+15557654321";
const CALLED: &str = "+15551234567";
const X5U: &str = "https://cert.example/sp.pem";

fn main() {
    let pki = sti::Pki::new("Bench STI root", false);
    let anchors = TrustAnchors::from_pem(pki.root_pem.as_bytes());
    let chain = Arc::new(parse_chain(pki.chain_pem().as_bytes()).unwrap());
    let header = sti::identity(&pki.sign(X5U, &sti::claims(CALLER, CALLED, "A", 0)), X5U);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut c = Criterion::default().configure_from_args();
    c.bench_function("stir_decode_and_claims (baseline)", |b| {
        b.iter(|| {
            let h = parse_identity(black_box(&header)).unwrap();
            let p = decode(h.jws).unwrap();
            check_claims(&h, &p, CALLER, CALLED, now, 60).unwrap();
        })
    });
    c.bench_function("stir_verify_cached_certificate", |b| {
        b.iter(|| {
            let v = verify_with(
                black_box(&header),
                CALLER,
                CALLED,
                now,
                60,
                &anchors,
                |_| Some(Ok(Arc::clone(&chain))),
            );
            assert!(matches!(v, Verified::Done(ref o) if o.passed()));
        })
    });
    c.bench_function("stir_verify_fresh_chain_check", |b| {
        b.iter(|| {
            let fresh = Arc::new(parse_chain(pki.chain_pem().as_bytes()).unwrap());
            let v = verify_with(
                black_box(&header),
                CALLER,
                CALLED,
                now,
                60,
                &anchors,
                |_| Some(Ok(Arc::clone(&fresh))),
            );
            assert!(matches!(v, Verified::Done(ref o) if o.passed()));
        })
    });
    c.final_summary();
}
