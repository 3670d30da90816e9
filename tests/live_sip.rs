//! Live providers end to end over SIP: a provider slower than the lookup
//! budget never holds a call past the budget, and its late answer screens
//! the next call from that number.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fakes::{self, DC_TOKEN};
use common::*;
use sipsentry::reputation::LiveSource;
use sipsentry::reputation::providers::didchecks::DidChecks;

const CALLER: &str = "<sip:+33612345678@carrier.example;user=phone>";

#[tokio::test]
async fn a_provider_slower_than_the_budget_is_skipped_and_its_late_answer_screens_the_next_call() {
    let fake = fakes::didchecks().await;
    fake.state
        .answer("+33612345678", fakes::dc_data("+33612345678", 95, "Scam"));
    let provider_delay = Duration::from_millis(700);
    fake.state.set_delay(provider_delay);
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let cfg = config(
        uas.addr,
        "[numbers]\ndefault_country = \"FR\"\n[policy]\nlookup_budget_ms = 100\nreject_at = 90\n",
    );
    let live_cache = cfg.live_cache.clone();
    let source: Arc<dyn LiveSource> = Arc::new(DidChecks::new(
        &fake.base,
        DC_TOKEN.into(),
        Duration::from_secs(2),
        10,
        0,
    ));
    let proxy = start(cfg, |p| {
        p.with_live_cache(live_cache)
            .with_live_timeout(source, Duration::from_secs(2))
    })
    .await;

    // First call: the provider answers after 700 ms; the budget is 100 ms.
    let sent = Instant::now();
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKlate1", CALLER, ""),
    )
    .await;
    assert_eq!(status(&uac.recv().await), 100);
    let (relayed, _) = uas
        .recv_within(Duration::from_secs(2))
        .await
        .expect("forwarded on the failure policy (pass)");
    let waited = sent.elapsed();
    assert!(relayed.starts_with("INVITE "));
    assert!(
        waited < provider_delay,
        "relayed after {waited:?}: it waited for the provider"
    );
    eprintln!("first call relayed after {waited:?} (budget 100 ms)");

    // The late answer lands in the live cache.
    tokio::time::sleep(provider_delay + Duration::from_millis(300)).await;
    assert_eq!(fake.state.count("/check/"), 1);

    // Second call from that number: rejected from the cache, no request.
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKlate2", CALLER, ""),
    )
    .await;
    // Decided at once: the 603 is the first response.
    let answer = uac.recv().await;
    assert_eq!(status(&answer), 603, "{answer}");
    // (The UAS may still see Timer A retransmissions of the first call.)
    while let Some((m, _)) = uas.recv_within(Duration::from_millis(200)).await {
        assert!(!m.contains("z9hG4bKlate2@test"), "second call relayed: {m}");
    }
    assert_eq!(fake.state.count("/check/"), 1);
    proxy.stop().await;
}
