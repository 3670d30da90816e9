//! RFC 3261 relay over real sockets: byte-faithful forwarding, response
//! routing by Via, Max-Forwards, loops, access control, loose routing.

mod common;

use common::*;
use std::time::Duration;

const CALLER: &str = "\"ACME CORP\" <sip:+15557654321@carrier.example;user=phone>";

#[tokio::test]
async fn a_passed_call_is_relayed_byte_for_byte_both_ways_over_udp() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    relay_one_call(&proxy, &uac, &uas, "1").await;
    proxy.stop().await;
}

/// `sip.busy_poll_us` changes how the SIP thread waits, never what it sends:
/// the same bytes both ways while it polls, and again after the window has
/// run out and the thread has gone back to sleeping in `recvfrom`.
#[tokio::test]
async fn a_busy_polling_proxy_relays_the_same_bytes_and_wakes_after_idling() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "busy_poll_us = 2000\n"), |p| p).await;
    relay_one_call(&proxy, &uac, &uas, "1").await;
    tokio::time::sleep(Duration::from_millis(50)).await; // 25 windows: asleep now
    relay_one_call(&proxy, &uac, &uas, "2").await;
    proxy.stop().await;
}

/// INVITE/100/180/200, ACK and BYE/200 through the proxy, asserting that only
/// the proxy's Via and Max-Forwards differ from what each side sent.
async fn relay_one_call(proxy: &Proxy, uac: &Udp, uas: &Udp, n: &str) {
    let inv = invite(
        uac.addr,
        "UDP",
        &format!("z9hG4bKpass{n}"),
        CALLER,
        "X-Custom:   kept   as is\r\n",
    );
    uac.send(proxy.addr, &inv).await;
    let trying = uac.recv().await;
    assert_eq!(status(&trying), 100, "{trying}");

    let relayed = uas.recv().await;
    let (via, rest) = split_proxy_via(&relayed);
    assert!(
        via.starts_with(&format!(
            "Via: SIP/2.0/UDP {};branch=z9hG4bK-ss-",
            proxy.addr
        )),
        "{via}"
    );
    assert_eq!(rest, inv.replace("Max-Forwards: 70", "Max-Forwards: 69"));

    // Responses come back with the proxy's Via removed and nothing else changed.
    for (code, reason) in [(180, "Ringing"), (200, "OK")] {
        let resp = response_to(&relayed, code, reason, "uas1");
        uas.send(proxy.addr, &resp).await;
        let got = uac.recv_starting("SIP/2.0").await;
        assert_eq!(got, resp.replacen(&via, "", 1));
    }

    // The ACK for a 2xx and the BYE are new transactions, relayed to the next hop.
    let ack = in_transaction(
        "ACK",
        uac.addr,
        "UDP",
        &format!("z9hG4bKack2xx{n}"),
        Some("uas1"),
    );
    uac.send(proxy.addr, &ack).await;
    let got = uas.recv().await;
    assert_eq!(
        split_proxy_via(&got).1,
        ack.replace("Max-Forwards: 70", "Max-Forwards: 69")
    );

    let bye = in_transaction(
        "BYE",
        uac.addr,
        "UDP",
        &format!("z9hG4bKbye{n}"),
        Some("uas1"),
    );
    uac.send(proxy.addr, &bye).await;
    let got_bye = uas.recv().await;
    let ok = response_to(&got_bye, 200, "OK", "uas1");
    uas.send(proxy.addr, &ok).await;
    let got_ok = uac.recv().await;
    assert_eq!(status(&got_ok), 200);
    assert!(got_ok.contains("CSeq: 314159 BYE"));
}

#[tokio::test]
async fn tcp_calls_are_framed_by_content_length_and_answered_on_the_same_connection() {
    let uas_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uas_addr = uas_listener.local_addr().unwrap();
    let cfg = {
        let text = format!(
            "[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"sip:{uas_addr};transport=tcp\"\ntrying_delay_ms = 0\n"
        );
        sipsentry::config::Config::from_toml(&text).unwrap()
    };
    let proxy = start(cfg, |p| p).await;
    let mut uac = Tcp::connect(proxy.addr).await;
    let me = uac.local_addr();

    // Two INVITEs in one write: framing must split them by Content-Length.
    let a = invite(me, "TCP", "z9hG4bKtcpA", CALLER, "");
    let b = invite(me, "TCP", "z9hG4bKtcpB", CALLER, "");
    uac.send(&format!("{a}{b}")).await;

    let mut uas = Tcp::accept(&uas_listener).await;
    let mut got = [uas.recv().await, uas.recv().await];
    got.sort_by_key(|m| split_proxy_via(m).1);
    for (g, w) in got.iter().zip([&a, &b]) {
        let (via, rest) = split_proxy_via(g);
        assert!(via.starts_with("Via: SIP/2.0/TCP "), "{via}");
        assert_eq!(rest, w.replace("Max-Forwards: 70", "Max-Forwards: 69"));
    }
    let resp = response_to(&got[0], 486, "Busy Here", "t1");
    uas.send(&resp).await;
    assert_eq!(status(&uac.recv_starting("SIP/2.0 100").await), 100);
    let answer = uac.recv_starting("SIP/2.0 486").await;
    assert_eq!(answer, resp.replacen(&split_proxy_via(&got[0]).0, "", 1));
    proxy.stop().await;
}

/// A UDP trunk and a TCP PBX: the PBX's answers arrive on another thread
/// than the INVITE did, so the transaction must exist before the INVITE
/// leaves; its responses come back over UDP and a retransmitted INVITE is
/// answered from the transaction, not relayed again.
#[tokio::test]
async fn a_udp_call_to_a_tcp_next_hop_is_relayed_once_and_answered_over_udp() {
    let uas_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uas_addr = uas_listener.local_addr().unwrap();
    let cfg = sipsentry::config::Config::from_toml(&format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"sip:{uas_addr};transport=tcp\"\nbusy_poll_us = 1000\ntrying_delay_ms = 0\n"
    ))
    .unwrap();
    let proxy = start(cfg, |p| p).await;
    let uac = Udp::new().await;
    let inv = invite(uac.addr, "UDP", "z9hG4bKmixed1", CALLER, "");
    uac.send(proxy.addr, &inv).await;

    let mut uas = Tcp::accept(&uas_listener).await;
    let relayed = uas.recv().await;
    let (via, rest) = split_proxy_via(&relayed);
    assert!(via.starts_with("Via: SIP/2.0/TCP "), "{via}");
    assert_eq!(rest, inv.replace("Max-Forwards: 70", "Max-Forwards: 69"));
    let ringing = response_to(&relayed, 180, "Ringing", "mx1");
    uas.send(&ringing).await;
    // The 100 left before the INVITE did, so the 180 cannot overtake it.
    assert_eq!(status(&uac.recv().await), 100, "the 100 comes first");
    let got = uac.recv().await;
    assert_eq!(got, ringing.replacen(&via, "", 1));

    // The trunk retransmits: it gets the 180 again and the PBX sees nothing.
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv_starting("SIP/2.0 180").await), 180);
    let again = tokio::time::timeout(Duration::from_millis(300), uas.recv()).await;
    assert!(again.is_err(), "retransmission relayed again: {again:?}");

    let ok = response_to(&relayed, 200, "OK", "mx1");
    uas.send(&ok).await;
    assert_eq!(
        uac.recv_starting("SIP/2.0 200").await,
        ok.replacen(&via, "", 1)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn many_tcp_connections_are_served_concurrently() {
    let uas = Udp::new().await;
    let proxy = start(config(uas.addr, ""), |p| p).await;
    let mut conns = Vec::new();
    for i in 0..50 {
        let mut c = Tcp::connect(proxy.addr).await;
        let me = c.local_addr();
        c.send(&invite(me, "TCP", &format!("z9hG4bKmany{i}"), CALLER, ""))
            .await;
        conns.push(c);
    }
    for c in &mut conns {
        assert_eq!(status(&c.recv().await), 100);
    }
    // Distinct calls (the PBX never answers, so Timer A retransmits some).
    let mut calls = std::collections::HashSet::new();
    while calls.len() < 50 {
        let m = uas.recv().await;
        calls.insert(header(&m, "Call-ID").unwrap().to_string());
    }
    assert_eq!(calls.len(), 50);
    proxy.stop().await;
}

/// Sends the ACK of `refused` (a final response the proxy sent without a
/// transaction, to the INVITE with `branch`) and asserts the PBX side gets
/// nothing.
async fn assert_ack_ends_at_the_proxy(
    uac: &Udp,
    uas: &Udp,
    proxy: &Proxy,
    branch: &str,
    refused: &str,
) {
    let ack = in_transaction("ACK", uac.addr, "UDP", branch, Some(&to_tag(refused)));
    uac.send(proxy.addr, &ack).await;
    assert!(
        uas.silent_for(Duration::from_millis(200)).await.is_none(),
        "the ACK of the proxy's own {} was forwarded",
        status(refused)
    );
}

#[tokio::test]
async fn max_forwards_zero_gets_483_and_a_missing_one_is_added() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    let inv = invite(uac.addr, "UDP", "z9hG4bKmf0", CALLER, "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    uac.send(proxy.addr, &inv).await;
    let refused = uac.recv().await;
    assert_eq!(status(&refused), 483);
    // Its ACK ends at the proxy that answered.
    assert_ack_ends_at_the_proxy(&uac, &uas, &proxy, "z9hG4bKmf0", &refused).await;

    let inv =
        invite(uac.addr, "UDP", "z9hG4bKmfnone", CALLER, "").replace("Max-Forwards: 70\r\n", "");
    uac.send(proxy.addr, &inv).await;
    let relayed = uas.recv().await;
    assert_eq!(header(&relayed, "Max-Forwards"), Some("70"));
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_that_comes_back_unchanged_is_a_loop_482() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKloop", CALLER, ""),
    )
    .await;
    let relayed = uas.recv().await;
    // The PBX sends it straight back, adding its own Via.
    let looped = relayed.replacen(
        "Via: ",
        &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKpbx\r\nVia: ", uas.addr),
        1,
    );
    uas.send(proxy.addr, &looped).await;
    let answer = uas.recv_starting("SIP/2.0").await;
    assert_eq!(status(&answer), 482, "{answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn sources_outside_accept_from_get_403() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "accept_from = [\"10.0.0.0/8\"]\n"), |p| p).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKforbid", CALLER, ""),
    )
    .await;
    let refused = uac.recv().await;
    assert_eq!(status(&refused), 403);
    // Nor does the ACK of the 403 reach the PBX.
    assert_ack_ends_at_the_proxy(&uac, &uas, &proxy, "z9hG4bKforbid", &refused).await;
    // A CANCEL from there matches no call and is refused the same way.
    let cancel = in_transaction("CANCEL", uac.addr, "UDP", "z9hG4bKforbid2", None);
    uac.send(proxy.addr, &cancel).await;
    assert_eq!(status(&uac.recv().await), 403);
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn options_to_the_proxy_itself_is_answered_200() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    let opts = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKopt\r\nMax-Forwards: 70\r\n\
         From: <sip:trunk@{}>;tag=o1\r\nTo: <sip:{}>\r\nCall-ID: opt@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        proxy.addr, uac.addr, uac.addr, proxy.addr
    );
    uac.send(proxy.addr, &opts).await;
    let answer = uac.recv().await;
    assert_eq!(status(&answer), 200);
    assert!(header(&answer, "To").unwrap().contains("tag="));
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn received_and_rport_are_added_and_responses_go_to_the_real_source() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    // The UAC claims an address it is not sending from (NAT) and asks for rport.
    let inv = invite(uac.addr, "UDP", "z9hG4bKnat", CALLER, "").replace(
        &format!("{};branch=z9hG4bKnat", uac.addr),
        "192.0.2.99:5060;rport;branch=z9hG4bKnat",
    );
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv().await), 100);
    let relayed = uas.recv().await;
    let want = format!(
        "192.0.2.99:5060;rport={};branch=z9hG4bKnat;received=127.0.0.1",
        uac.addr.port()
    );
    assert!(relayed.contains(&want), "{relayed}");
    uas.send(proxy.addr, &response_to(&relayed, 180, "Ringing", "n1"))
        .await;
    assert_eq!(status(&uac.recv().await), 180);
    proxy.stop().await;
}

#[tokio::test]
async fn record_route_then_in_dialog_requests_are_loose_routed() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "record_route = true\n"), |p| p).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKrr", CALLER, ""),
    )
    .await;
    let relayed = uas.recv().await;
    let rr = format!("<sip:{};lr>", proxy.addr);
    assert_eq!(header(&relayed, "Record-Route"), Some(rr.as_str()));

    // The PBX hangs up: BYE to the caller's contact with the route set.
    let bye = format!(
        "BYE sip:caller@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKpbxbye\r\nMax-Forwards: 70\r\n\
         Route: {rr}\r\nFrom: <sip:+15551234567@pbx.example>;tag=p1\r\nTo: <sip:+15557654321@carrier.example>;tag=1928301774\r\n\
         Call-ID: rr@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        uac.addr, uas.addr
    );
    uas.send(proxy.addr, &bye).await;
    let got = uac.recv_starting("BYE").await;
    let (_, rest) = split_proxy_via(&got);
    assert_eq!(
        rest,
        bye.replace(&format!("Route: {rr}\r\n"), "")
            .replace("Max-Forwards: 70", "Max-Forwards: 69")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_ipv6_next_hop_is_reached() {
    let Ok(uas) = tokio::net::UdpSocket::bind("[::1]:0").await else {
        return assert!(std::env::var("CI").is_err(), "CI must have IPv6 loopback");
    };
    let uas_addr = uas.local_addr().unwrap();
    let text = format!(
        "[sip]\nlisten = \"[::1]:0\"\nnext_hop = \"sip:[::1]:{}\"\n\
         accept_from = [\"::/0\"]\n",
        uas_addr.port()
    );
    let proxy = start(sipsentry::config::Config::from_toml(&text).unwrap(), |p| p).await;
    let uac = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    let uac_addr = uac.local_addr().unwrap();
    let inv = invite(uac_addr, "UDP", "z9hG4bKv6", CALLER, "");
    uac.send_to(inv.as_bytes(), proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, uas.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        got.contains(&format!(
            "Via: SIP/2.0/UDP [::1]:{};branch=z9hG4bK-ss-",
            proxy.addr.port()
        )),
        "{got}"
    );
    proxy.stop().await;
}
