//! HEPv3 capture, decoded by a collector socket in the test: every message
//! of a UDP call (INVITE to BYE, both legs) arrives with its addresses,
//! the Call-ID as correlation id, the agent id and the password; a TLS
//! message is captured in plaintext, marked TCP.

#[path = "common/binary.rs"]
mod binary;
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::pki::Pki;
use common::{Udp, invite, response_to, tls};

/// One decoded HEPv3 packet: chunk type → value (vendor 0 chunks).
struct Hep(HashMap<u16, Vec<u8>>);

impl Hep {
    /// Decodes a packet, checking its magic and that its chunks add up to
    /// its length.
    fn decode(p: &[u8]) -> Hep {
        assert_eq!(&p[..4], b"HEP3", "HEPv3 magic");
        let total = usize::from(u16::from_be_bytes([p[4], p[5]]));
        assert_eq!(total, p.len(), "the packet length is the datagram's");
        let mut chunks = HashMap::new();
        let mut at = 6;
        while at < total {
            let vendor = u16::from_be_bytes([p[at], p[at + 1]]);
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = usize::from(u16::from_be_bytes([p[at + 4], p[at + 5]]));
            assert!(len >= 6 && at + len <= total, "chunk {kind:#x} overruns");
            assert_eq!(vendor, 0, "generic chunks only");
            chunks.insert(kind, p[at + 6..at + len].to_vec());
            at += len;
        }
        assert_eq!(at, total);
        Hep(chunks)
    }

    fn u8(&self, kind: u16) -> u8 {
        self.0[&kind][0]
    }

    fn u16(&self, kind: u16) -> u16 {
        u16::from_be_bytes(self.0[&kind][..2].try_into().unwrap())
    }

    fn u32(&self, kind: u16) -> u32 {
        u32::from_be_bytes(self.0[&kind][..4].try_into().unwrap())
    }

    fn text(&self, kind: u16) -> String {
        String::from_utf8_lossy(&self.0[&kind]).into_owned()
    }

    fn addr(&self, ip: u16, port: u16) -> SocketAddr {
        let b: [u8; 4] = self.0[&ip][..].try_into().unwrap();
        SocketAddr::new(IpAddr::from(b), self.u16(port))
    }

    fn src(&self) -> SocketAddr {
        self.addr(0x0003, 0x0007)
    }

    fn dst(&self) -> SocketAddr {
        self.addr(0x0004, 0x0008)
    }

    /// The payload's first line.
    fn first_line(&self) -> String {
        self.text(0x000f)
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// Every HEP packet that arrives at `collector` until it is quiet for 1 s.
fn collect(collector: &std::net::UdpSocket) -> Vec<Hep> {
    collector
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Ok((n, _)) = collector.recv_from(&mut buf) {
        out.push(Hep::decode(&buf[..n]));
    }
    out
}

fn serve(dir: &std::path::Path, listen: SocketAddr) -> binary::Serve {
    let child = Command::new(binary::BIN)
        .arg("serve")
        .current_dir(dir)
        .env("SIPSENTRY_HEP_PASSWORD", "homer-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve = binary::Serve { child };
    binary::wait_until_answering(listen);
    serve
}

#[tokio::test]
async fn every_message_of_a_call_reaches_the_collector_with_its_addresses_and_call_id() {
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (trunk, pbx) = (Udp::new().await, Udp::new().await);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("Test SIP CA");
    let (cert, key) = pki.write(dir.path(), "proxy", &["127.0.0.1"]);
    let (port, tls_port) = (binary::free_port(), binary::free_port());
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"{proxy}\"\nnext_hop = \"sip:{}\"\nrecord_route = true\n\
             tls_listen = \"{tls_addr}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [hiya_cache]\nenabled = false\n[history]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [hep]\ncollector = \"{}\"\nagent_id = 2001\n",
            pbx.addr,
            cert.display(),
            key.display(),
            collector.local_addr().unwrap()
        ),
    )
    .unwrap();
    let _serve = serve(dir.path(), proxy);
    // The readiness probe's OPTIONS were captured too: start afresh.
    collect(&collector);

    let branch = "z9hG4bK-hep-call";
    let call_id = format!("{branch}@test");
    let inv = invite(
        trunk.addr,
        "UDP",
        branch,
        "<sip:+15557654321@carrier.example>",
        "",
    );
    trunk.send(proxy, &inv).await;
    let relayed = pbx.recv_starting("INVITE").await;
    pbx.send(proxy, &response_to(&relayed, 180, "Ringing", "pbx1"))
        .await;
    pbx.send(proxy, &response_to(&relayed, 200, "OK", "pbx1"))
        .await;
    trunk.recv_starting("SIP/2.0 200").await;
    let bye = format!(
        "BYE sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-hep-bye\r\nRoute: <sip:{proxy};lr>\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15557654321@carrier.example>;tag=1928301774\r\n\
         To: <sip:+15551234567@pbx.example>;tag=pbx1\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        pbx.addr, trunk.addr
    );
    trunk.send(proxy, &bye).await;
    let bye_relayed = pbx.recv_starting("BYE").await;
    pbx.send(proxy, &response_to(&bye_relayed, 200, "OK", "pbx1"))
        .await;
    trunk.recv_starting("SIP/2.0 200").await;

    let packets = collect(&collector);
    let call: Vec<&Hep> = packets
        .iter()
        .filter(|h| h.0.get(&0x0011).map(|c| c.as_slice()) == Some(call_id.as_bytes()))
        .collect();
    let seen: Vec<(String, SocketAddr, SocketAddr)> = call
        .iter()
        .map(|h| (h.first_line(), h.src(), h.dst()))
        .collect();
    let (t, p) = (trunk.addr, pbx.addr);
    let expected = [
        ("INVITE sip:+15551234567@pbx.example SIP/2.0", t, proxy),
        ("INVITE sip:+15551234567@pbx.example SIP/2.0", proxy, p),
        ("SIP/2.0 180 Ringing", p, proxy),
        ("SIP/2.0 180 Ringing", proxy, t),
        ("SIP/2.0 200 OK", p, proxy),
        ("SIP/2.0 200 OK", proxy, t),
        (&*format!("BYE sip:{p} SIP/2.0"), t, proxy),
        (&*format!("BYE sip:{p} SIP/2.0"), proxy, p),
    ];
    for (line, src, dst) in expected {
        assert!(
            seen.iter()
                .any(|(l, s, d)| l == line && *s == src && *d == dst),
            "{line} {src} → {dst} was not captured; captured: {seen:#?}"
        );
    }
    // The BYE's 200, both ways: 10 messages in all (the PBX rang before
    // the proxy's 100 was due, so none was sent).
    assert_eq!(call.len(), 10, "{seen:#?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for h in &call {
        assert_eq!(h.u8(0x0001), 2, "IPv4");
        assert_eq!(h.u8(0x0002), 17, "UDP");
        assert_eq!(h.u8(0x000b), 1, "SIP");
        assert_eq!(h.u32(0x000c), 2001, "hep.agent_id");
        assert_eq!(
            h.text(0x000e),
            "homer-secret",
            "the password from its env var"
        );
        assert!(now.abs_diff(u64::from(h.u32(0x0009))) < 60, "timestamp");
        assert!(h.u32(0x000a) < 1_000_000, "microseconds");
    }

    // Over TLS: the plaintext is captured, marked TCP, with the
    // connection's own addresses.
    let mut conn = tls::connect(tls_addr, &tls::connector(&pki.ca_pem, None))
        .await
        .unwrap();
    let me = conn.stream.get_ref().0.local_addr().unwrap();
    conn.send(&format!(
        "OPTIONS sip:{tls_addr} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK-hep-tls\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=1\r\nTo: <sip:{tls_addr}>\r\nCall-ID: hep-tls@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ))
    .await;
    assert!(conn.recv().await.starts_with("SIP/2.0 200"));
    let packets = collect(&collector);
    let tls_seen: Vec<(String, SocketAddr, SocketAddr, u8)> = packets
        .iter()
        .filter(|h| h.0.get(&0x0011).map(|c| c.as_slice()) == Some(b"hep-tls@test"))
        .map(|h| (h.first_line(), h.src(), h.dst(), h.u8(0x0002)))
        .collect();
    assert_eq!(
        tls_seen,
        vec![
            (format!("OPTIONS sip:{tls_addr} SIP/2.0"), me, tls_addr, 6),
            ("SIP/2.0 200 OK".to_string(), tls_addr, me, 6),
        ]
    );
}
