//! INVITE transactions while screening (docs/sip.md, RFC 3261 §16–17),
//! with a deliberately slow live source so "during screening" lasts long
//! enough to act in.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

const CALLER: &str = "<sip:+15557654321@carrier.example;user=phone>";
const SCREENING: Duration = Duration::from_millis(600);

async fn slow_proxy_with(uas: &Udp, source: Arc<SlowSource>, extra: &str) -> Proxy {
    let cfg = config(
        uas.addr,
        &format!("[policy]\nlookup_budget_ms = 3000\n{extra}"),
    );
    start(cfg, |p| p.with_live(source)).await
}

/// Sends an INVITE with `branch` from `uac`, expects the 100 and returns the
/// INVITE and what the PBX side received of it.
async fn relayed_invite(uac: &Udp, uas: &Udp, proxy: &Proxy, branch: &str) -> (String, String) {
    let inv = invite(uac.addr, "UDP", branch, CALLER, "");
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv().await), 100);
    (inv, uas.recv().await)
}

async fn slow_proxy(uas: &Udp, score: u8, extra: &str) -> Proxy {
    slow_proxy_with(uas, SlowSource::new(SCREENING, score), extra).await
}

#[tokio::test]
async fn retransmissions_during_screening_are_absorbed_one_lookup_one_forward() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let source = SlowSource::new(SCREENING, 0);
    let proxy = slow_proxy_with(&uas, Arc::clone(&source), "").await;
    let inv = invite(uac.addr, "UDP", "z9hG4bKrtx", CALLER, "");
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv().await), 100);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        uac.send(proxy.addr, &inv).await;
        // Each retransmission is answered with the last response (100).
        assert_eq!(status(&uac.recv().await), 100);
    }
    let forwarded = uas.recv().await;
    assert!(forwarded.starts_with("INVITE "));
    // Answer so Timer A stops, then make sure no second INVITE arrived.
    uas.send(proxy.addr, &response_to(&forwarded, 180, "Ringing", "r1"))
        .await;
    assert!(
        uas.silent_for(Duration::from_millis(300)).await.is_none(),
        "only one forward"
    );
    // A retransmission after forwarding gets the latest provisional back.
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv_starting("SIP/2.0 180").await), 180);
    assert!(uas.silent_for(Duration::from_millis(200)).await.is_none());
    assert_eq!(source.lookups(), 1, "one lookup for all retransmissions");
    proxy.stop().await;
}

#[tokio::test]
async fn cancel_during_screening_gets_200_and_the_invite_487_and_nothing_reaches_the_pbx() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = slow_proxy(&uas, 0, "").await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKcs", CALLER, ""),
    )
    .await;
    assert_eq!(status(&uac.recv().await), 100);
    uac.send(
        proxy.addr,
        &in_transaction("CANCEL", uac.addr, "UDP", "z9hG4bKcs", None),
    )
    .await;
    let mut got = [uac.recv().await, uac.recv().await];
    got.sort_by_key(|m| status(m));
    assert_eq!(status(&got[0]), 200);
    assert!(got[0].contains("CSeq: 314159 CANCEL"));
    assert_eq!(status(&got[1]), 487);
    assert!(got[1].contains("CSeq: 314159 INVITE"));
    let tag = to_tag(&got[1]);
    uac.send(
        proxy.addr,
        &in_transaction("ACK", uac.addr, "UDP", "z9hG4bKcs", Some(&tag)),
    )
    .await;
    // Screening finishes later: the call must still not be forwarded.
    assert!(
        uas.silent_for(SCREENING + Duration::from_millis(400))
            .await
            .is_none()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn cancel_after_forwarding_is_forwarded_with_the_invites_branch() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKcf", CALLER, ""),
    )
    .await;
    let fwd_invite = uas.recv().await;
    uas.send(proxy.addr, &response_to(&fwd_invite, 180, "Ringing", "c1"))
        .await;
    uac.send(
        proxy.addr,
        &in_transaction("CANCEL", uac.addr, "UDP", "z9hG4bKcf", None),
    )
    .await;
    let fwd_cancel = uas.recv_starting("CANCEL").await;
    assert_eq!(
        split_proxy_via(&fwd_cancel).0,
        split_proxy_via(&fwd_invite).0,
        "same branch"
    );
    // The PBX answers the CANCEL and the INVITE; both reach the caller.
    uas.send(proxy.addr, &response_to(&fwd_cancel, 200, "OK", "c1"))
        .await;
    uas.send(
        proxy.addr,
        &response_to(&fwd_invite, 487, "Request Terminated", "c1"),
    )
    .await;
    let mut codes = Vec::new();
    while codes.len() < 3 {
        codes.push(status(&uac.recv().await));
    }
    codes.sort();
    // No 100: the PBX rang before it was due.
    assert_eq!(codes, [180, 200, 487]);
    assert!(uac.silent_for(Duration::from_millis(300)).await.is_none());
    // The caller's ACK for the 487 goes to the PBX with the INVITE's branch.
    uac.send(
        proxy.addr,
        &in_transaction("ACK", uac.addr, "UDP", "z9hG4bKcf", Some("c1")),
    )
    .await;
    let fwd_ack = uas.recv_starting("ACK").await;
    assert_eq!(split_proxy_via(&fwd_ack).0, split_proxy_via(&fwd_invite).0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_cancel_of_a_retargeted_call_follows_the_new_request_uri() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let extra = "divert_at = 50\ndivert_to = \"sip:vm@127.0.0.1:5999\"\n";
    let proxy = slow_proxy(&uas, 60, extra).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKrc", CALLER, ""),
    )
    .await;
    let fwd = uas.recv().await;
    assert!(
        fwd.starts_with("INVITE sip:vm@127.0.0.1:5999 SIP/2.0\r\n"),
        "{fwd}"
    );
    uac.send(
        proxy.addr,
        &in_transaction("CANCEL", uac.addr, "UDP", "z9hG4bKrc", None),
    )
    .await;
    let cancel = uas.recv_starting("CANCEL").await;
    assert!(
        cancel.starts_with("CANCEL sip:vm@127.0.0.1:5999 SIP/2.0\r\n"),
        "{cancel}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn timer_a_retransmits_a_forwarded_invite_until_the_pbx_answers() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKta", CALLER, ""),
    )
    .await;
    let first = uas.recv().await;
    let second = uas
        .recv_within(Duration::from_millis(800))
        .await
        .expect("retransmission after T1")
        .0;
    assert_eq!(first, second);
    uas.send(proxy.addr, &response_to(&first, 100, "Trying", "x"))
        .await;
    assert!(
        uas.silent_for(Duration::from_millis(1200)).await.is_none(),
        "Timer A must stop on a response"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_late_retransmission_gets_the_remembered_decision() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(
        config(uas.addr, "[policy]\ndeny = [\"+15557654321\"]\n"),
        |p| p,
    )
    .await;
    let inv = invite(uac.addr, "UDP", "z9hG4bKlate", CALLER, "");
    uac.send(proxy.addr, &inv).await;
    // Decided at once: the 603 is the first response.
    let reject = uac.recv().await;
    assert_eq!(status(&reject), 603);
    let tag = to_tag(&reject);
    uac.send(
        proxy.addr,
        &in_transaction("ACK", uac.addr, "UDP", "z9hG4bKlate", Some(&tag)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    uac.send(proxy.addr, &inv).await;
    let again = uac.recv().await;
    assert_eq!(
        again, reject,
        "same response, same To tag, same decision id"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_retransmission_after_a_relayed_200_gets_that_200_again_and_is_not_forwarded() {
    // A finished transaction lets go of its INVITE; what it still needs for
    // a late retransmission is the response, which must survive that.
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    let (inv, forwarded) = relayed_invite(&uac, &uas, &proxy, "z9hG4bKdone").await;
    uas.send(proxy.addr, &response_to(&forwarded, 200, "OK", "u1"))
        .await;
    let ok = uac.recv().await;
    assert_eq!(status(&ok), 200);
    uac.send(proxy.addr, &inv).await;
    assert_eq!(uac.recv().await, ok, "the same 200, byte for byte");
    assert!(
        uas.silent_for(Duration::from_millis(300)).await.is_none(),
        "the retransmission is absorbed, not forwarded"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_full_transaction_table_answers_new_calls_503_and_still_serves_the_calls_it_holds() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(
        config(uas.addr, "max_transactions = 2\ntrying_delay_ms = 0\n"),
        |p| p,
    )
    .await;
    let mut relayed = Vec::new();
    for branch in ["z9hG4bKfull1", "z9hG4bKfull2"] {
        relayed.push(relayed_invite(&uac, &uas, &proxy, branch).await.1);
    }
    let third = invite(uac.addr, "UDP", "z9hG4bKfull3", CALLER, "");
    uac.send(proxy.addr, &third).await;
    let refused = uac.recv().await;
    assert_eq!(status(&refused), 503, "{refused}");
    assert_eq!(header(&refused, "Retry-After"), Some("5"));
    assert!(
        uas.silent_for(Duration::from_millis(300)).await.is_none(),
        "a refused call never reaches the PBX"
    );
    // The calls already held are answered as usual.
    uas.send(proxy.addr, &response_to(&relayed[0], 200, "OK", "u1"))
        .await;
    let ok = uac.recv().await;
    assert_eq!(
        (status(&ok), header(&ok, "Call-ID")),
        (200, Some("z9hG4bKfull1@test"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn timer_c_cancels_a_call_the_pbx_never_answers_and_tells_the_trunk_408() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "timer_c_s = 1\n"), |p| p).await;
    let (_, forwarded) = relayed_invite(&uac, &uas, &proxy, "z9hG4bKtimerc").await;
    uas.send(proxy.addr, &response_to(&forwarded, 180, "Ringing", "u1"))
        .await;
    assert_eq!(status(&uac.recv().await), 180);
    // Ringing for ever: after Timer C the proxy gives up on both sides.
    let cancel = uas.recv().await;
    let (proxy_via, _) = split_proxy_via(&forwarded);
    assert!(
        cancel.starts_with("CANCEL sip:+15551234567@pbx.example SIP/2.0\r\n"),
        "{cancel}"
    );
    assert_eq!(
        cancel.matches("\r\nVia: ").count(),
        1,
        "only the proxy's Via: {cancel}"
    );
    assert!(cancel.contains(&proxy_via), "the INVITE's branch: {cancel}");
    assert_eq!(header(&cancel, "CSeq"), Some("314159 CANCEL"));
    assert_eq!(header(&cancel, "Call-ID"), header(&forwarded, "Call-ID"));
    let timeout = uac.recv().await;
    assert_eq!(status(&timeout), 408, "{timeout}");
    let fired = proxy
        .core
        .stats()
        .timer_c
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fired, 1, "counted for sipsentry_sip_timer_c_total");
    uac.send(
        proxy.addr,
        &in_transaction(
            "ACK",
            uac.addr,
            "UDP",
            "z9hG4bKtimerc",
            Some(&to_tag(&timeout)),
        ),
    )
    .await;
    // The PBX confirms: its 200 to the CANCEL and its 487 stay at the proxy.
    uas.send(proxy.addr, &response_to(&cancel, 200, "OK", "u1"))
        .await;
    uas.send(
        proxy.addr,
        &response_to(&forwarded, 487, "Request Terminated", "u1"),
    )
    .await;
    assert!(
        uac.silent_for(Duration::from_millis(700)).await.is_none(),
        "one final response upstream, the proxy's 408, and no retransmission after its ACK"
    );
    assert!(
        uas.silent_for(Duration::from_millis(100)).await.is_none(),
        "the ACK ends at the proxy"
    );
    proxy.stop().await;
}

/// Timer C set shorter than Timer B, and the PBX silent: the trunk gets the
/// 408 and the PBX no CANCEL, which RFC 3261 §9.1 forbids before a
/// provisional response; only Timer A's resends of the INVITE reach it.
#[tokio::test]
async fn timer_c_before_any_response_from_the_pbx_answers_408_and_sends_no_cancel() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "timer_c_s = 1\n"), |p| p).await;
    relayed_invite(&uac, &uas, &proxy, "z9hG4bKsilent").await;
    let timeout = uac.recv().await;
    assert_eq!(status(&timeout), 408, "{timeout}");
    let fired = proxy
        .core
        .stats()
        .timer_c
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fired, 1, "counted for sipsentry_sip_timer_c_total");
    let mut at_pbx = Vec::new();
    while let Some((m, _)) = uas.recv_within(Duration::from_millis(700)).await {
        at_pbx.push(m);
    }
    assert!(
        at_pbx.iter().all(|m| m.starts_with("INVITE ")),
        "no CANCEL without a provisional: {at_pbx:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_provider_slower_than_the_budget_fails_open() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let cfg = config(
        uas.addr,
        "[policy]\nlookup_budget_ms = 100\nreject_at = 50\n",
    );
    let proxy = start(cfg, |p| {
        p.with_live(SlowSource::new(Duration::from_secs(5), 100))
    })
    .await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKfo", CALLER, ""),
    )
    .await;
    assert_eq!(status(&uac.recv().await), 100);
    assert!(
        uas.recv().await.starts_with("INVITE "),
        "on_lookup_failure = pass forwards the call"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_calls_under_screening() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = slow_proxy(&uas, 0, "").await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKsd", CALLER, ""),
    )
    .await;
    assert_eq!(status(&uac.recv().await), 100);
    let addr = proxy.addr;
    let stopping = tokio::spawn(proxy.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New calls are refused while draining...
    uac.send(addr, &invite(uac.addr, "UDP", "z9hG4bKsd2", CALLER, ""))
        .await;
    assert_eq!(status(&uac.recv().await), 503);
    // ...and the call under screening is still forwarded.
    assert!(uas.recv().await.starts_with("INVITE "));
    stopping.await.unwrap();
}

/// Whatever the timing, a call the proxy answered with 100 Trying is decided
/// and forwarded before shutdown completes (the process would exit after
/// that); otherwise it was refused with 503, or never read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_racing_shutdown_is_forwarded_before_shutdown_completes_or_refused() {
    for i in 0..10 {
        let (uac, uas) = (Udp::new().await, Udp::new().await);
        let proxy = slow_proxy_with(&uas, SlowSource::new(Duration::from_millis(50), 0), "").await;
        uac.send(
            proxy.addr,
            &invite(uac.addr, "UDP", &format!("z9hG4bKrace{i}"), CALLER, ""),
        )
        .await;
        proxy.stop().await;
        match uac
            .recv_within(Duration::from_millis(200))
            .await
            .map(|(m, _)| status(&m))
        {
            Some(100) => assert!(
                uas.recv_within(Duration::from_millis(50)).await.is_some(),
                "round {i}: answered 100 Trying, but shutdown completed before the call was forwarded"
            ),
            Some(503) | None => {}
            other => panic!("round {i}: unexpected {other:?}"),
        }
    }
}

/// Sends the trunk's INVITE with `branch` to `proxy`; returns it and the
/// moment it was sent.
async fn send_invite(uac: &Udp, proxy: &Proxy, branch: &str) -> (String, std::time::Instant) {
    let inv = invite(uac.addr, "UDP", branch, CALLER, "");
    let sent = std::time::Instant::now();
    uac.send(proxy.addr, &inv).await;
    (inv, sent)
}

#[tokio::test]
async fn a_call_the_pbx_answers_at_once_gets_its_200_and_never_a_100() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    send_invite(&uac, &proxy, "z9hG4bKquick").await;
    let fwd = uas.recv().await;
    uas.send(proxy.addr, &response_to(&fwd, 200, "OK", "q1"))
        .await;
    assert_eq!(
        status(&uac.recv().await),
        200,
        "the 200 is the first response"
    );
    // Past the 200 ms the 100 is held: it was dropped, not sent late.
    assert_eq!(
        uac.silent_for(Duration::from_millis(500))
            .await
            .map(|m| status(&m)),
        None,
        "nothing after the 200"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_silent_pbx_gets_the_trunk_its_100_once_the_hold_runs_out() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, ""), |p| p).await;
    let (_, sent) = send_invite(&uac, &proxy, "z9hG4bKsilent").await;
    assert!(uas.recv().await.starts_with("INVITE "));
    assert_eq!(status(&uac.recv().await), 100);
    assert!(
        sent.elapsed() >= Duration::from_millis(200),
        "held for sip.trying_delay_ms (200 by default), sent after {:?}",
        sent.elapsed()
    );
    // The PBX rings later: the 180 follows, and only one 100 was sent.
    let fwd = uas.recv_starting("INVITE").await;
    uas.send(proxy.addr, &response_to(&fwd, 180, "Ringing", "s1"))
        .await;
    assert_eq!(status(&uac.recv().await), 180);
    assert!(uac.silent_for(Duration::from_millis(300)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn a_retransmitted_invite_gets_the_held_100_at_once_and_the_hold_sends_no_second() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    // Long screening: nothing but the 100 can go upstream for 600 ms.
    let proxy = slow_proxy(&uas, 0, "").await;
    let (inv, _) = send_invite(&uac, &proxy, "z9hG4bKheld").await;
    assert!(
        uac.silent_for(Duration::from_millis(20)).await.is_none(),
        "the 100 is held"
    );
    uac.send(proxy.addr, &inv).await;
    let (got, _) = uac
        .recv_within(Duration::from_millis(170))
        .await
        .expect("a retransmission is answered with the 100 at once, before the hold runs out");
    assert_eq!(status(&got), 100);
    // The hold runs out at 200 ms: the 100 already went, so nothing more
    // comes until the call is relayed and the PBX answers.
    assert!(uac.silent_for(Duration::from_millis(300)).await.is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn trying_delay_0_sends_the_100_as_the_invite_arrives() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let proxy = start(config(uas.addr, "trying_delay_ms = 0\n"), |p| p).await;
    send_invite(&uac, &proxy, "z9hG4bKnow").await;
    let fwd = uas.recv().await;
    assert_eq!(
        status(&uac.recv().await),
        100,
        "sent before the PBX answers"
    );
    uas.send(proxy.addr, &response_to(&fwd, 200, "OK", "n1"))
        .await;
    assert_eq!(status(&uac.recv().await), 200);
    proxy.stop().await;
}
