//! docs/integrations/kamailio.cfg for real: SIPp calls through Debian's
//! Kamailio, dispatching to sipsentry, which relays to a SIPp UAS. A
//! denylisted caller gets sipsentry's 603 through Kamailio; a clean call
//! completes. And SIP over TLS between Kamailio's TLS ends and sipsentry.
//! Under CI=true a missing `kamailio` or `sipp` is a failure.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/pki.rs"]
mod pki;

use binary::{Killed, Serve, free_port, installed, kamailio_dispatcher, sipp_counts as counts};
use std::process::{Command, Stdio};

/// A SIPp UAS on `port` that keeps the Record-Route (SIPp's built-in one
/// does not).
fn sipp_uas(port: u16) -> Killed {
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uas_routed.xml");
    Killed(
        Command::new("sipp")
            .args(["-sf", scenario, "-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &free_port().to_string(), "-nostdin"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn kamailio_dispatches_to_sipsentry_and_relays_its_603() {
    if !installed("kamailio", "kamailio") || !installed("sipp", "sip-tester") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (kamailio, proxy, uas) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{proxy}\"\nnext_hop = \"sip:127.0.0.1:{uas}\"\nrecord_route = true\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[policy]\ndeny = [\"+1666*\"]\nreject_code = 603\n"
        ),
    )
    .unwrap();
    let _uas = sipp_uas(uas);
    let serve = Serve::start(
        dir.path(),
        &[],
        format!("127.0.0.1:{proxy}").parse().unwrap(),
    );
    let kam = kamailio_dispatcher(
        dir.path(),
        kamailio,
        &[format!("127.0.0.1:{proxy}").parse().unwrap()],
    );
    let target = format!("127.0.0.1:{kamailio}");
    // Denylisted callers: sipsentry's 603, relayed by Kamailio.
    let scenario = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sipp/uac_denied.xml"
    ))
    .unwrap()
    .replace("REJECT_CODE", "603");
    let path = dir.path().join("uac_denied.xml");
    std::fs::write(&path, scenario).unwrap();
    let sipp = |args: &[&str]| {
        Command::new("sipp")
            .args(args)
            .args([&target, "-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-mp", &free_port().to_string(), "-r", "50", "-m", "50"])
            .args(["-timeout", "30s", "-nostdin"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let denied = sipp(&["-sf", path.to_str().unwrap()]);
    assert_eq!(
        counts(&denied),
        (50, 0),
        "{}",
        String::from_utf8_lossy(&denied.stdout)
    );
    // Clean callers: the whole call, INVITE to BYE, the in-dialog requests
    // along the Record-Route of both proxies.
    let routed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uac_routed.xml");
    let clean = sipp(&["-sf", routed]);
    assert_eq!(
        counts(&clean),
        (50, 0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    drop(kam);
    assert!(serve.terminate().success());
}

/// SIP over TLS against another implementation: Debian's Kamailio (its
/// `tls` module, OpenSSL) on both sides of sipsentry. SIPp calls Kamailio
/// over UDP (Debian's SIPp is built without TLS); Kamailio relays to
/// sipsentry over TLS, presenting a client certificate that sipsentry
/// requires (mutual TLS); sipsentry verifies Kamailio's certificate and
/// relays back to it over TLS, and Kamailio on to the SIPp UAS over UDP.
/// Whole calls (ACK and BYE along the Record-Routes, two of them TLS)
/// complete, and a denied caller gets sipsentry's 603.
#[test]
fn calls_cross_sipsentry_over_tls_between_kamailio_tls_ends() {
    if !installed("kamailio", "kamailio kamailio-tls-modules") || !installed("sipp", "sip-tester") {
        return;
    }
    let tls_module = std::path::Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so");
    if !tls_module.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kamailio-tls-modules is not installed (.ci/run installs it)"
        );
        return eprintln!("skipping: apt-get install kamailio-tls-modules");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki::Pki::new("Interop CA");
    let ca = pki.write_ca(d, "ca");
    let (proxy_cert, proxy_key) = pki.write(d, "proxy", &["127.0.0.1"]);
    let (kam_cert, kam_key) = pki.write(d, "kamailio", &["127.0.0.1"]);
    let (kam_udp, kam_tls, proxy, proxy_tls, uas) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    std::fs::write(
        d.join("tls.cfg"),
        format!(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
             private_key = {k}\ncertificate = {c}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = yes\nrequire_certificate = yes\n\
             private_key = {k}\ncertificate = {c}\nca_list = {ca}\n",
            k = kam_key.display(),
            c = kam_cert.display(),
            ca = ca.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{proxy}\"\ntls_listen = \"127.0.0.1:{proxy_tls}\"\n\
             next_hop = \"sip:127.0.0.1:{kam_tls};transport=tls\"\nrecord_route = true\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{ca}\"\ntls_next_hop_ca = \"{ca}\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[policy]\ndeny = [\"+1666*\"]\nreject_code = 603\n",
            proxy_cert.display(),
            proxy_key.display(),
            ca = ca.display()
        ),
    )
    .unwrap();
    let _uas = sipp_uas(uas);
    let serve = Serve::start(d, &[], format!("127.0.0.1:{proxy}").parse().unwrap());
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/kamailio/tls_hairpin.cfg"
    );
    let kam = binary::kamailio(
        cfg,
        &[
            ("UDP_LISTEN", format!("udp:127.0.0.1:{kam_udp}")),
            ("TLS_LISTEN", format!("tls:127.0.0.1:{kam_tls}")),
            (
                "MODULES",
                "\"/usr/lib/x86_64-linux-gnu/kamailio/modules/\"".into(),
            ),
            ("TLS_CONFIG", format!("\"{}\"", d.join("tls.cfg").display())),
            (
                "SIPSENTRY",
                format!("\"sip:127.0.0.1:{proxy_tls};transport=tls\""),
            ),
            ("UAS", format!("\"sip:127.0.0.1:{uas}\"")),
        ],
    );
    let target = format!("127.0.0.1:{kam_udp}");
    let sipp = |scenario: &str, calls: &str| {
        Command::new("sipp")
            .args(["-sf", scenario])
            .args([&target, "-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-mp", &free_port().to_string(), "-r", "20", "-m", calls])
            .args(["-timeout", "30s", "-nostdin"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let routed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/uac_routed.xml");
    let clean = sipp(routed, "20");
    assert_eq!(
        counts(&clean),
        (20, 0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    let denied = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sipp/uac_denied.xml"
    ))
    .unwrap()
    .replace("REJECT_CODE", "603");
    let path = d.join("uac_denied.xml");
    std::fs::write(&path, denied).unwrap();
    let rejected = sipp(path.to_str().unwrap(), "10");
    assert_eq!(
        counts(&rejected),
        (10, 0),
        "{}",
        String::from_utf8_lossy(&rejected.stdout)
    );
    drop(kam);
    let (status, stderr) = {
        let pid = serve.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        serve.wait_with_stderr()
    };
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("TLS handshake failed"),
        "every handshake succeeded:\n{stderr}"
    );
}
