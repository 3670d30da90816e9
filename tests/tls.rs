//! SIP over TLS on loopback, with certificates made at run time: a TLS
//! trunk's call reaches a TLS PBX and the PBX's BYE returns over the
//! connection the trunk opened; a denied caller gets 603 over TLS; mutual
//! TLS refuses a trunk without a certificate from the configured CA; a
//! renewed certificate is served after SIGHUP while established connections
//! keep working.

#[path = "common/binary.rs"]
mod binary;
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::pki::Pki;
use common::{header, invite, response_to, start, tls};
use sipsentry::config::Config;
use tokio::io::AsyncReadExt;

/// A proxy config serving TLS with `cert`/`key` from `dir`, relaying to
/// `next_hop`, denying +1666….
fn tls_config(dir: &Path, next_hop: &str, extra: &str) -> Config {
    let text = format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nnext_hop = \"{next_hop}\"\n\
         tls_cert = \"{d}/proxy.crt\"\ntls_key = \"{d}/proxy.key\"\ntls_next_hop_ca = \"{d}/ca.crt\"\n\
         record_route = true\n{extra}\n[policy]\ndeny = [\"+1666*\"]\nreject_code = 603\n",
        d = dir.display()
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

fn options(to: SocketAddr, me: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch={branch}\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=1\r\nTo: <sip:{to}>\r\nCall-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn local(conn: &tls::ClientConn) -> SocketAddr {
    conn.stream.get_ref().0.local_addr().unwrap()
}

#[tokio::test]
async fn a_tls_trunks_call_reaches_a_tls_pbx_and_the_pbxs_bye_returns_over_the_trunks_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test SIP CA");
    pki.write_ca(dir.path(), "ca");
    pki.write(dir.path(), "proxy", &["127.0.0.1"]);
    let (pbx_cert, pbx_key) = pki.issue(&["127.0.0.1"]);
    let pbx_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx_listener.local_addr().unwrap();
    let proxy = start(
        tls_config(dir.path(), &format!("sips:{pbx_addr}"), ""),
        |p| p,
    )
    .await;
    let tls_addr = proxy.tls_addr.expect("a TLS listener");

    let connector = tls::connector(&pki.ca_pem, None);
    let mut trunk = tls::connect(tls_addr, &connector).await.unwrap();
    // The trunk's Via and Contact name the port it listens on, as a TLS UA
    // does, which is not its connection's; nothing listens there, so the
    // PBX's BYE can only reach it over the connection it opened.
    let contact_port = binary::free_port();
    let me: SocketAddr = format!("127.0.0.1:{contact_port}").parse().unwrap();
    let call = invite(
        me,
        "TLS",
        "z9hG4bK-tls-1",
        "<sip:+15557654321@carrier.example>",
        "",
    )
    .replace(
        &format!("Contact: <sip:caller@{me}>"),
        &format!("Contact: <sip:caller@{me};transport=tls>"),
    );
    trunk.send(&call).await;
    assert!(trunk.recv().await.starts_with("SIP/2.0 100"));

    let mut pbx = tls::accept(&pbx_listener, &tls::acceptor(&pbx_cert, &pbx_key)).await;
    let relayed = pbx.recv_starting("INVITE ").await;
    let tls_port = tls_addr.port();
    assert!(
        relayed.contains(&format!(
            "\r\nVia: SIP/2.0/TLS 127.0.0.1:{tls_port};branch=z9hG4bK-ss-"
        )),
        "the proxy's Via names TLS and its TLS port:\n{relayed}"
    );
    assert_eq!(
        header(&relayed, "Record-Route"),
        Some(format!("<sip:127.0.0.1:{tls_port};lr;transport=tls>").as_str()),
        "TLS on both sides: one Record-Route, over TLS"
    );
    pbx.send(&response_to(&relayed, 180, "Ringing", "pbx1"))
        .await;
    pbx.send(&response_to(&relayed, 200, "OK", "pbx1")).await;
    assert!(trunk.recv().await.starts_with("SIP/2.0 180"));
    let ok = trunk.recv().await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        header(&ok, "Via").is_some_and(|v| v.starts_with("SIP/2.0/TLS")),
        "only the trunk's Via is left: {ok}"
    );

    let bye = format!(
        "BYE sip:caller@127.0.0.1:{contact_port};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {pbx_addr};branch=z9hG4bK-pbx-bye\r\n\
         Route: <sip:127.0.0.1:{tls_port};lr;transport=tls>\r\nMax-Forwards: 70\r\n\
         From: <sip:+15551234567@pbx.example>;tag=pbx1\r\n\
         To: <sip:+15557654321@carrier.example>;tag=1928301774\r\n\
         Call-ID: z9hG4bK-tls-1@test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    pbx.send(&bye).await;
    let got = trunk.recv_starting("BYE ").await;
    assert!(
        got.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{tls_port};branch=")),
        "{got}"
    );
    assert!(
        !got.contains("Route:"),
        "the proxy's own Route is consumed: {got}"
    );
    trunk.send(&response_to(&got, 200, "OK", "x")).await;
    let bye_ok = pbx.recv().await;
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    assert!(bye_ok.contains("CSeq: 1 BYE"), "{bye_ok}");

    // A denied caller over the same connection: the proxy's 603, over TLS.
    trunk
        .send(&invite(
            me,
            "TLS",
            "z9hG4bK-tls-2",
            "<sip:+16665550000@carrier.example>",
            "",
        ))
        .await;
    let denied = trunk.recv_starting("SIP/2.0 6").await;
    assert!(denied.starts_with("SIP/2.0 603"), "{denied}");
    let tls = proxy.core.transport().tls().expect("TLS configured");
    assert_eq!(tls.failures(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_trunk_without_a_certificate_from_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test SIP CA");
    pki.write_ca(dir.path(), "ca");
    pki.write(dir.path(), "proxy", &["127.0.0.1"]);
    let trunks = Pki::new("Trunk CA");
    let trunks_ca = trunks.write_ca(dir.path(), "trunks");
    let proxy = start(
        tls_config(
            dir.path(),
            "sip:127.0.0.1:9",
            &format!("tls_client_ca = \"{}\"", trunks_ca.display()),
        ),
        |p| p,
    )
    .await;
    let tls_addr = proxy.tls_addr.unwrap();
    let tls = proxy.core.transport().tls().unwrap().clone();

    // Asks the proxy for OPTIONS 200 over a connection with `identity`.
    async fn answered(to: SocketAddr, ca: &str, identity: Option<(&str, &str)>) -> bool {
        let Ok(mut conn) = tls::connect(to, &tls::connector(ca, identity)).await else {
            return false;
        };
        let me = local(&conn);
        use tokio::io::AsyncWriteExt;
        if conn
            .stream
            .write_all(options(to, me, "z9hG4bK-mtls").as_bytes())
            .await
            .is_err()
        {
            return false;
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(3), conn.stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => buf[..n].starts_with(b"SIP/2.0 200"),
            _ => false,
        }
    }

    assert!(
        !answered(tls_addr, &pki.ca_pem, None).await,
        "no client certificate: refused"
    );
    let (other_cert, other_key) = Pki::new("Someone else").issue(&["trunk.example"]);
    assert!(
        !answered(tls_addr, &pki.ca_pem, Some((&other_cert, &other_key))).await,
        "a certificate from another CA: refused"
    );
    let (cert, key) = trunks.issue(&["trunk.example"]);
    assert!(
        answered(tls_addr, &pki.ca_pem, Some((&cert, &key))).await,
        "a certificate from tls_client_ca: served"
    );
    assert_eq!(tls.failures(), 2, "both refusals are counted");
    proxy.stop().await;
}

#[test]
fn a_renewed_certificate_is_served_after_sighup_and_established_connections_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test SIP CA");
    pki.write_ca(dir.path(), "ca");
    let (cert_path, key_path) = pki.write(dir.path(), "proxy", &["127.0.0.1"]);
    let (udp, tls_port) = (binary::free_port(), binary::free_port());
    let listen: SocketAddr = format!("127.0.0.1:{udp}").parse().unwrap();
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"{listen}\"\ntls_listen = \"{tls_addr}\"\nnext_hop = \"sip:127.0.0.1:9\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let serve = binary::Serve::start(dir.path(), &[], listen);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connector = tls::connector(&pki.ca_pem, None);
    let mut first = rt.block_on(tls::connect(tls_addr, &connector)).unwrap();
    let old = tls::served_certificate(&first);

    let sighup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &serve.child.id().to_string()])
            .status()
            .unwrap();
    };
    // Renewed in place, as certbot or an ACME client would.
    let (cert, key) = pki.issue(&["127.0.0.1"]);
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    sighup();
    // A new client each time: a resumed session would report the
    // certificate of the session it resumes.
    let served_now = || {
        let fresh = tls::connector(&pki.ca_pem, None);
        let conn = rt.block_on(tls::connect(tls_addr, &fresh)).unwrap();
        tls::served_certificate(&conn)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let new = loop {
        let now = served_now();
        if now != old {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is not served after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let expected = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'_>| c.to_vec())
        .unwrap();
    assert_eq!(new, expected, "the file's new certificate");

    // The connection made before the reload still carries messages.
    let me = local(&first);
    rt.block_on(async {
        first
            .send(&options(tls_addr, me, "z9hG4bK-after-reload"))
            .await;
        assert!(first.recv().await.starts_with("SIP/2.0 200"));
    });

    // A broken file is refused and the certificate in use stays.
    std::fs::write(&key_path, "not a key").unwrap();
    sighup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_now(), new);

    let (status, stderr) = {
        std::process::Command::new("kill")
            .args(["-TERM", &serve.child.id().to_string()])
            .status()
            .unwrap();
        serve.wait_with_stderr()
    };
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("TLS certificate reloaded"), "{stderr}");
    assert!(
        stderr.contains("sip.tls_key"),
        "the refused reload names the key file:\n{stderr}"
    );
}

#[tokio::test]
async fn a_tls_trunk_and_a_udp_pbx_each_get_a_record_route_of_their_own_transport() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test SIP CA");
    pki.write_ca(dir.path(), "ca");
    pki.write(dir.path(), "proxy", &["127.0.0.1"]);
    let pbx = common::Udp::new().await;
    let proxy = start(
        tls_config(dir.path(), &format!("sip:{}", pbx.addr), ""),
        |p| p,
    )
    .await;
    let tls_addr = proxy.tls_addr.unwrap();
    let mut trunk = tls::connect(tls_addr, &tls::connector(&pki.ca_pem, None))
        .await
        .unwrap();
    let me: SocketAddr = format!("127.0.0.1:{}", binary::free_port())
        .parse()
        .unwrap();
    trunk
        .send(&invite(
            me,
            "TLS",
            "z9hG4bK-rr2",
            "<sip:+15557654321@carrier.example>",
            "",
        ))
        .await;
    let relayed = pbx.recv_starting("INVITE").await;
    let (udp, tls_port) = (proxy.addr, tls_addr.port());
    let udp_side = format!("<sip:{udp};lr>");
    let tls_side = format!("<sip:127.0.0.1:{tls_port};lr;transport=tls>");
    assert!(
        relayed.contains(&format!(
            "Record-Route: {udp_side}\r\nRecord-Route: {tls_side}\r\n"
        )),
        "the PBX's side first, then the trunk's (RFC 5658):\n{relayed}"
    );
    assert!(relayed.contains(&format!("Via: SIP/2.0/UDP {udp};branch=")));

    // The PBX's BYE with the route set as received: both of the proxy's
    // entries are consumed and the BYE reaches the trunk over TLS.
    let bye = format!(
        "BYE sip:caller@{me};transport=tls SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-pbx-bye2\r\n\
         Route: {udp_side}, {tls_side}\r\nMax-Forwards: 70\r\n\
         From: <sip:+15551234567@pbx.example>;tag=p1\r\nTo: <sip:+15557654321@carrier.example>;tag=1928301774\r\n\
         Call-ID: z9hG4bK-rr2@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        pbx.addr
    );
    pbx.send(udp, &bye).await;
    let got = trunk.recv_starting("BYE ").await;
    assert!(!got.contains("Route:"), "{got}");
    assert!(
        got.contains(&format!("Via: SIP/2.0/TLS 127.0.0.1:{tls_port};branch=")),
        "{got}"
    );
    trunk.send(&response_to(&got, 200, "OK", "x")).await;
    assert!(
        pbx.recv_starting("SIP/2.0 200")
            .await
            .contains("CSeq: 2 BYE")
    );
    proxy.stop().await;
}
