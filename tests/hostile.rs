//! Requests crafted to slip past screening or to misuse the proxy, black
//! box over loopback sockets: a second From, a made-up To tag from an
//! unknown source, an extension the proxy cannot honour, a response aimed
//! at a broadcast address.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

/// A socket on another loopback address than the proxy's peers (Linux
/// routes all of 127.0.0.0/8 to the loopback interface).
async fn stranger() -> Udp {
    let sock = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    Udp { sock, addr }
}

#[tokio::test]
async fn a_second_from_to_call_id_cseq_or_max_forwards_gets_400_and_is_never_relayed() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    // The first From is allowlisted, the second denylisted.
    let cfg = "[policy]\nallow = [\"+15550001111\"]\ndeny = [\"+15557654321\"]\n";
    let proxy = start(config(uas.addr, cfg), |p| p).await;
    let dup = [
        ("From", "From: <sip:+15557654321@carrier.example>;tag=2\r\n"),
        ("To", "To: <sip:+15559990000@pbx.example>\r\n"),
        ("Call-ID", "Call-ID: second@test\r\n"),
        ("CSeq", "CSeq: 59 INVITE\r\n"),
        ("Max-Forwards", "Max-Forwards: 5\r\n"),
    ];
    for (i, (name, extra)) in dup.iter().enumerate() {
        let branch = format!("z9hG4bKdup{i}");
        let msg = invite(
            uac.addr,
            "UDP",
            &branch,
            "<sip:+15550001111@carrier.example>",
            extra,
        );
        uac.send(proxy.addr, &msg).await;
        let answer = uac.recv().await;
        assert_eq!(status(&answer), 400, "second {name}: {answer}");
        assert!(
            header(&answer, "Warning").is_some_and(|w| w.contains(name)),
            "{answer}"
        );
        assert!(
            uas.silent_for(Duration::from_millis(100)).await.is_none(),
            "a request with a second {name} reached the PBX"
        );
    }
    // RFC 4475 multi01, as written there (but for its body).
    let multi01 = format!(
        "INVITE sip:user@company.com SIP/2.0\r\nContact: <sip:caller@host25.example.net>\r\n\
         Via: SIP/2.0/UDP {};branch=z9hG4bKkdjuw\r\nMax-Forwards: 70\r\nCSeq: 5 INVITE\r\n\
         Call-ID: multi01.98asdh@192.0.2.1\r\nCSeq: 59 INVITE\r\nCall-ID: multi01.98asdh@192.0.2.2\r\n\
         From: sip:caller@example.com;tag=3413415\r\nTo: sip:user@example.com\r\n\
         To: sip:other@example.net\r\nFrom: sip:caller@example.net;tag=2923420123\r\n\
         Contact: <sip:caller@host36.example.net>\r\nMax-Forwards: 5\r\nl: 0\r\n\r\n",
        uac.addr
    );
    uac.send(proxy.addr, &multi01).await;
    assert_eq!(status(&uac.recv().await), 400);
    assert!(uas.silent_for(Duration::from_millis(100)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn in_dialog_requests_from_unknown_sources_get_403_but_the_pbx_may_send_them() {
    let (trunk, uas) = (Udp::new().await, Udp::new().await);
    let attacker = stranger().await;
    // The trunk is 127.0.0.1; 127.0.0.2 is nobody's.
    let proxy = start(
        config(uas.addr, "accept_from = [\"127.0.0.1/32\"]\n"),
        |p| p,
    )
    .await;
    // An INVITE with a made-up To tag: not screened, and not relayed either.
    let forged = invite(
        attacker.addr,
        "UDP",
        "z9hG4bKforged",
        "<sip:+15557654321@c>",
        "",
    )
    .replace(
        "To: <sip:+15551234567@pbx.example>",
        "To: <sip:+15551234567@pbx.example>;tag=madeup",
    );
    attacker.send(proxy.addr, &forged).await;
    assert_eq!(status(&attacker.recv().await), 403);
    // Its ACK, unanswerable, ends at the proxy too.
    let ack = in_transaction(
        "ACK",
        attacker.addr,
        "UDP",
        "z9hG4bKforged2",
        Some("madeup"),
    );
    attacker.send(proxy.addr, &ack).await;
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    assert_eq!(proxy.core.stats().forbidden.load(Ordering::Relaxed), 2);

    // The trunk's own in-dialog requests pass.
    let bye = in_transaction("BYE", trunk.addr, "UDP", "z9hG4bKbye", Some("dialog"));
    trunk.send(proxy.addr, &bye).await;
    assert!(uas.recv().await.starts_with("BYE "));
    proxy.stop().await;

    // Next hop on 127.0.0.2, trunk on 127.0.0.1 outside accept_from: the
    // PBX's in-dialog request passes, the trunk's new call does not.
    let pbx = stranger().await;
    let proxy = start(config(pbx.addr, "accept_from = [\"10.0.0.0/8\"]\n"), |p| p).await;
    let bye = in_transaction("BYE", pbx.addr, "UDP", "z9hG4bKpbxbye", Some("dialog"));
    pbx.send(proxy.addr, &bye).await;
    let relayed = loop {
        let (m, _) = pbx
            .recv_within(WAIT)
            .await
            .expect("the PBX's BYE is relayed");
        if m.starts_with("BYE ") {
            break m;
        }
    };
    assert!(relayed.contains("z9hG4bKpbxbye"));
    let call = invite(trunk.addr, "UDP", "z9hG4bKnew", "<sip:+15557654321@c>", "");
    trunk.send(proxy.addr, &call).await;
    assert_eq!(status(&trunk.recv().await), 403);
    proxy.stop().await;
}

#[tokio::test]
async fn a_proxy_require_the_proxy_cannot_honour_gets_420_with_unsupported() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    // RFC 4475 bext01, from the test's own address.
    let bext01 = format!(
        "OPTIONS sip:user@example.com SIP/2.0\r\nTo: sip:j_user@example.com\r\n\
         From: sip:caller@example.net;tag=242etr\r\nMax-Forwards: 6\r\n\
         Call-ID: bext01.0ha0isndaksdj\r\n\
         Require: nothingSupportsThis, nothingSupportsThisEither\r\n\
         Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n\
         CSeq: 8 OPTIONS\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKkdjuw\r\nContent-Length: 0\r\n\r\n",
        uac.addr
    );
    uac.send(proxy.addr, &bext01).await;
    let answer = uac.recv().await;
    assert_eq!(status(&answer), 420, "{answer}");
    assert_eq!(
        header(&answer, "Unsupported"),
        Some("noProxiesSupportThis, norDoAnyProxiesSupportThis")
    );
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    // Require (for the UAS, not the proxy) is relayed as it is.
    let require = bext01
        .replace(
            "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n",
            "",
        )
        .replace("z9hG4bKkdjuw", "z9hG4bKreq");
    uac.send(proxy.addr, &require).await;
    let relayed = uas.recv().await;
    assert!(
        relayed.contains("Require: nothingSupportsThis"),
        "{relayed}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_response_aimed_at_a_broadcast_address_is_dropped_and_counted() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    // A stateless request relayed, to learn the proxy's Via.
    let opts = in_transaction("OPTIONS", uac.addr, "UDP", "z9hG4bKopts", None);
    uac.send(proxy.addr, &opts).await;
    let relayed = uas.recv().await;
    let (proxy_via, _) = split_proxy_via(&relayed);
    let before = proxy.core.stats().dropped.load(Ordering::Relaxed);
    for target in ["255.255.255.255:5060", "224.0.0.1:5060", "0.0.0.0:5060"] {
        let response = format!(
            "SIP/2.0 200 OK\r\n{proxy_via}Via: SIP/2.0/UDP {target};branch=z9hG4bKbcast\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: bcast@test\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        uas.send(proxy.addr, &response).await;
    }
    // The relay of a good response shows the three before it were handled.
    let good = response_to(&relayed, 200, "OK", "t");
    uas.send(proxy.addr, &good).await;
    assert_eq!(status(&uac.recv().await), 200);
    let dropped = proxy.core.stats().dropped.load(Ordering::Relaxed) - before;
    assert_eq!(dropped, 3, "each is dropped and counted");
    proxy.stop().await;
}

/// An INVITE of about `size` bytes (a long header pads it).
fn big_invite(uac: std::net::SocketAddr, branch: &str, size: usize) -> String {
    let small = invite(uac, "UDP", branch, "<sip:+15557654321@c>", "");
    let pad = size.saturating_sub(small.len() + 20);
    invite(
        uac,
        "UDP",
        branch,
        "<sip:+15557654321@c>",
        &format!("X-Pad: {}\r\n", "p".repeat(pad)),
    )
}

#[tokio::test]
async fn held_calls_are_bounded_by_bytes_as_well_as_by_count() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    // 1 MiB for the calls held; each 60 KB INVITE counts about 121 KB.
    let proxy = start(config(uas.addr, "max_held_mb = 1\n"), |p| p).await;
    let mut answers = Vec::new();
    for i in 0..12 {
        uac.send(
            proxy.addr,
            &big_invite(uac.addr, &format!("z9hG4bKbig{i}"), 60_000),
        )
        .await;
        answers.push(status(&uac.recv().await));
    }
    // The PBX never answers: every relayed call stays held.
    let held = answers.iter().take_while(|c| **c == 100).count();
    assert_eq!(held, 9, "{answers:?}");
    assert!(answers[held..].iter().all(|c| *c == 503), "{answers:?}");
    assert_eq!(proxy.core.transactions(), 9);
    assert_eq!(proxy.core.stats().refused_full.load(Ordering::Relaxed), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_over_max_message_bytes_gets_513_and_is_not_relayed() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "max_message_bytes = 4096\n"), |p| p).await;
    uac.send(proxy.addr, &big_invite(uac.addr, "z9hG4bKhuge", 5_000))
        .await;
    assert_eq!(status(&uac.recv().await), 513);
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    uac.send(proxy.addr, &big_invite(uac.addr, "z9hG4bKfits", 3_000))
        .await;
    assert_eq!(status(&uac.recv().await), 100);
    assert!(uas.recv().await.starts_with("INVITE "));
    proxy.stop().await;
}

/// Whether the proxy closes `stream` within `wait` (a read returns EOF or
/// an error rather than timing out).
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn one_source_cannot_take_every_tcp_connection() {
    let uas = Udp::new().await;
    let proxy = start(config(uas.addr, "tcp_max_per_source = 3\n"), |p| p).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    let mut fourth = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "a fourth connection from one address is closed"
    );
    for s in &mut held {
        assert!(!closed_within(s, Duration::from_millis(100)).await);
    }
    // Another address still gets in, and its calls are served.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = Tcp {
        stream: other.connect(proxy.addr).await.unwrap(),
        buf: Vec::new(),
    };
    let me = other.local_addr();
    other
        .send(&invite(
            me,
            "TCP",
            "z9hG4bKtcpother",
            "<sip:+15557654321@c>",
            "",
        ))
        .await;
    assert_eq!(status(&other.recv().await), 100);
    // A connection that closes frees its source's slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(300)).await);
    proxy.stop().await;
}

#[tokio::test]
async fn a_trickled_message_and_an_idle_connection_are_closed_on_time() {
    use tokio::io::AsyncWriteExt;
    let uas = Udp::new().await;
    let cfg = "tcp_message_timeout_ms = 500\ntcp_idle_s = 1\n";
    let proxy = start(config(uas.addr, cfg), |p| p).await;
    // Slowloris: a byte every 100 ms of a message that never ends.
    let slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = slow.into_split();
    wr.write_all(b"INVITE sip:x@y SIP/2.0\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(b"X").await.is_err() {
                break;
            }
        }
    });
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut rd, &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a message trickled for {:?} is still open",
        started.elapsed()
    );
    trickle.abort();
    // An idle connection goes after tcp_idle_s; one that keeps sending
    // whole messages (keep-alives) stays.
    let mut idle = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut alive = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..4 {
        alive.write_all(b"\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        closed_within(&mut idle, Duration::from_millis(500)).await,
        "idle connection kept"
    );
    alive.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 64];
    let n = tokio::io::AsyncReadExt::read(&mut alive, &mut pong)
        .await
        .unwrap();
    assert!(n > 0 && pong[..n].iter().all(|b| *b == b'\r' || *b == b'\n'));
    proxy.stop().await;
}

#[tokio::test]
async fn inbound_tcp_connections_never_crowd_out_the_connection_to_the_pbx() {
    let pbx = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx.local_addr().unwrap();
    let mut cfg = config(
        pbx_addr,
        "tcp_max_connections = 2\ntcp_max_per_source = 2\n",
    );
    cfg.sip.next_hop = format!("sip:{pbx_addr};transport=tcp").as_str().into();
    let proxy = start(cfg, |p| p).await;
    // Every inbound slot taken by idle connections.
    let _a = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let _b = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A call over UDP still reaches the PBX over TCP.
    let uac = Udp::new().await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKcrowd", "<sip:+15557654321@c>", ""),
    )
    .await;
    let mut conn = Tcp::accept(&pbx).await;
    assert!(conn.recv().await.starts_with("INVITE "));
    proxy.stop().await;
}
