//! The live lookup machinery around the providers: single-flight, the live
//! cache's TTLs, circuit breaking, the lookup budget, late answers,
//! background mode, and the signed DIDChecks webhook.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::fakes::{self, DC_TOKEN, Mode};
use hmac::{Hmac, KeyInit, Mac};
use sipsentry::admin::{self, AdminState};
use sipsentry::pipeline::{CallCtx, Pipeline};
use sipsentry::policy::Action;
use sipsentry::policy::{Decision, Rule};
use sipsentry::reputation::live::Outcome;
use sipsentry::reputation::live_cache::Cached;
use sipsentry::reputation::providers::didchecks::DidChecks;
use sipsentry::reputation::{Evidence, LiveSource, LookupFuture, Source, SourceError};
use sipsentry::sip::caller::{CallerId, Trust};

fn pipeline(extra: &str) -> Pipeline {
    let cfg = common::config("127.0.0.1:5080".parse().unwrap(), extra);
    Pipeline::new(Arc::new(cfg.policy().unwrap())).with_live_cache(cfg.live_cache.clone())
}

fn ctx(number: &str) -> CallCtx {
    let caller = CallerId {
        trust: Trust::From,
        raw: number.into(),
        display: None,
        e164: Some(number.into()),
        anonymous: false,
        verstat: None,
        attest: None,
    };
    CallCtx::new(
        "t".into(),
        ([127, 0, 0, 1], 5060).into(),
        caller,
        "+15550001111".into(),
    )
}

async fn screen(p: &Pipeline, number: &str) -> (Decision, Vec<Outcome>) {
    let mut c = ctx(number);
    let d = p.screen(&mut c).await;
    (d, c.lookups.iter().map(|l| l.outcome).collect())
}

fn didchecks(fake: &fakes::Fake, timeout: Duration) -> Arc<dyn LiveSource> {
    Arc::new(DidChecks::new(
        &fake.base,
        DC_TOKEN.into(),
        timeout,
        1000,
        0,
    ))
}

#[tokio::test]
async fn a_hundred_concurrent_calls_from_one_new_number_make_one_request() {
    let fake = fakes::didchecks().await;
    fake.state
        .answer("+33612345678", fakes::dc_data("+33612345678", 95, "Scam"));
    fake.state.set_delay(Duration::from_millis(200));
    let p = Arc::new(
        pipeline("[policy]\nlookup_budget_ms = 3000\n").with_live_timeout(
            didchecks(&fake, Duration::from_secs(2)),
            Duration::from_secs(2),
        ),
    );
    let mut calls = Vec::new();
    for _ in 0..100 {
        let p = Arc::clone(&p);
        calls.push(tokio::spawn(
            async move { screen(&p, "+33612345678").await },
        ));
    }
    for c in calls {
        let (d, _) = c.await.unwrap();
        assert_eq!((d.action, d.score), (Action::Reject, 95));
    }
    assert_eq!(fake.state.count("/check/"), 1, "single flight");
    // The next call is answered from the live cache, on the packet path.
    let mut c = ctx("+33612345678");
    let d = p.screen_now(&mut c).expect("decided without waiting");
    assert_eq!(d.score, 95);
    assert!(d.evidence[0].cached);
    assert_eq!(c.lookups[0].outcome, Outcome::Cached);
    assert_eq!(fake.state.count("/check/"), 1);
}

/// An in-process source for tests under paused time (no sockets).
struct Scripted {
    calls: AtomicUsize,
    fail: AtomicBool,
    answer: Option<u8>,
}

impl Scripted {
    fn new(answer: Option<u8>) -> Arc<Self> {
        Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            answer,
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl LiveSource for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn lookup<'a>(&'a self, _e164: &'a str) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err(SourceError::Server {
                    provider: "scripted",
                    status: 503,
                    message: "down".into(),
                });
            }
            Ok(self.answer.map(|score| Evidence {
                source: Source::Custom,
                score,
                category: None,
                cached: false,
                latency_us: 1,
                raw: Default::default(),
            }))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn cached_answers_expire_after_ttl_and_no_data_after_the_negative_ttl() {
    let cache = "[live_cache]\nttl_minutes = 30\nnegative_ttl_minutes = 5\n";
    let known = Scripted::new(Some(60));
    let unknown = Scripted::new(None);
    let p = pipeline(cache).with_live(known.clone() as Arc<dyn LiveSource>);
    let q = pipeline(cache).with_live(unknown.clone() as Arc<dyn LiveSource>);
    screen(&p, "+1").await;
    screen(&q, "+1").await;
    assert_eq!((known.calls(), unknown.calls()), (1, 1));
    tokio::time::advance(Duration::from_secs(4 * 60)).await;
    assert_eq!(screen(&p, "+1").await.1, vec![Outcome::Cached]);
    assert_eq!(screen(&q, "+1").await.1, vec![Outcome::CachedNoData]);
    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    assert_eq!(
        screen(&q, "+1").await.1,
        vec![Outcome::NoData],
        "negative TTL over"
    );
    assert_eq!(screen(&p, "+1").await.1, vec![Outcome::Cached]);
    tokio::time::advance(Duration::from_secs(25 * 60)).await;
    assert_eq!(
        screen(&p, "+1").await.1,
        vec![Outcome::Found],
        "TTL over: asked again"
    );
    assert_eq!((known.calls(), unknown.calls()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn the_circuit_opens_after_repeated_failures_and_recovers_after_a_probe() {
    let src = Scripted::new(Some(40));
    src.fail.store(true, Ordering::SeqCst);
    let p = pipeline("[policy]\non_lookup_failure = \"tag\"\n")
        .with_live(src.clone() as Arc<dyn LiveSource>);
    for i in 0..5 {
        let (d, o) = screen(&p, &format!("+1{i}")).await;
        assert_eq!(
            (d.rule, d.action, o[0]),
            (Rule::FailurePolicy, Action::Tag, Outcome::Error)
        );
    }
    let breaker = &p.live().providers()[0].breaker;
    assert_eq!(breaker.state().as_str(), "open");
    // While open, calls skip the provider without a request.
    let (d, _) = screen(&p, "+19").await;
    assert_eq!(d.rule, Rule::FailurePolicy);
    assert_eq!(src.calls(), 5);
    src.fail.store(false, Ordering::SeqCst);
    tokio::time::advance(sipsentry::reputation::breaker::OPEN_FOR + Duration::from_secs(1)).await;
    let (d, o) = screen(&p, "+19").await;
    assert_eq!(
        (o[0], d.score),
        (Outcome::Found, 40),
        "the probe went through"
    );
    assert_eq!(breaker.state().as_str(), "closed");
    assert_eq!(src.calls(), 6);
}

#[tokio::test]
async fn a_broken_provider_trips_its_breaker_over_http_and_never_fails_a_call() {
    let fake = fakes::didchecks().await;
    let p = pipeline("").with_live_timeout(
        didchecks(&fake, Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    for (i, mode) in [
        Mode::Error(500),
        Mode::Garbage,
        Mode::Error(401),
        Mode::Error(429),
        Mode::Error(402),
    ]
    .into_iter()
    .enumerate()
    {
        fake.state.set_mode(mode);
        let (d, o) = screen(&p, &format!("+3361234567{i}")).await;
        assert_eq!(
            (d.rule, d.action, o[0]),
            (Rule::FailurePolicy, Action::Pass, Outcome::Error)
        );
    }
    assert_eq!(p.live().providers()[0].breaker.state().as_str(), "open");
    let before = fake.state.count("/check/");
    screen(&p, "+33612345679").await;
    assert_eq!(
        fake.state.count("/check/"),
        before,
        "open circuit: no request"
    );
}

#[tokio::test]
async fn an_exhausted_budget_applies_the_failure_policy_and_the_late_answer_fills_the_cache() {
    let fake = fakes::didchecks().await;
    fake.state
        .answer("+33612345678", fakes::dc_data("+33612345678", 95, "Scam"));
    fake.state.set_delay(Duration::from_millis(300));
    let p = pipeline("[policy]\nlookup_budget_ms = 50\non_lookup_failure = \"tag\"\n")
        .with_live_timeout(
            didchecks(&fake, Duration::from_secs(2)),
            Duration::from_secs(2),
        );
    let started = std::time::Instant::now();
    let (d, o) = screen(&p, "+33612345678").await;
    let waited = started.elapsed();
    assert_eq!(
        (d.rule, d.action, o[0]),
        (Rule::FailurePolicy, Action::Tag, Outcome::Late)
    );
    assert!(
        waited < Duration::from_millis(300),
        "decided at the budget, not the answer: {waited:?}"
    );
    // The flight goes on and fills the cache.
    let cache = p.live().cache();
    for _ in 0..100 {
        if cache.get(0, "+33612345678") != Cached::Miss {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (d, o) = screen(&p, "+33612345678").await;
    assert_eq!(
        (d.rule, d.action, d.score, o[0]),
        (Rule::Threshold, Action::Reject, 95, Outcome::Cached)
    );
    assert_eq!(fake.state.count("/check/"), 1);
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_per_provider_and_is_counted() {
    let fake = fakes::didchecks().await;
    fake.state.set_mode(Mode::Hang);
    let p = pipeline("[policy]\nlookup_budget_ms = 2000\n").with_live_timeout(
        didchecks(&fake, Duration::from_millis(100)),
        Duration::from_millis(100),
    );
    let mut c = ctx("+33612345678");
    let d = p.screen(&mut c).await;
    assert_eq!(d.rule, Rule::FailurePolicy);
    let err = c.lookups[0].error.as_deref().unwrap();
    assert!(err.contains("within 100 ms"), "{err}");
    assert_eq!(
        p.live().providers()[0].stats.errors.load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn background_mode_forwards_at_once_and_the_next_call_uses_the_answer() {
    let fake = fakes::didchecks().await;
    fake.state
        .answer("+33612345678", fakes::dc_data("+33612345678", 95, "Scam"));
    let p = pipeline("[policy]\nlive_mode = \"background\"\n").with_live_timeout(
        didchecks(&fake, Duration::from_secs(2)),
        Duration::from_secs(2),
    );
    let mut c = ctx("+33612345678");
    let d = p.screen_now(&mut c).expect("background mode never waits");
    assert_eq!((d.action, d.score), (Action::Pass, 0));
    for _ in 0..100 {
        if fake.state.count("/check/") == 1
            && p.live().cache().get(0, "+33612345678") != Cached::Miss
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = p.screen_now(&mut ctx("+33612345678")).unwrap();
    assert_eq!((d.action, d.score), (Action::Reject, 95));
}

// ------------------------------------------------------------------ webhook

const SECRET: &[u8] = b"whsec_test";

fn sign(body: &str, key: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn admin_with(p: Pipeline) -> (String, Arc<AdminState>) {
    let state = Arc::new(AdminState {
        webhook_secret: Some(SECRET.to_vec()),
        ..AdminState::new(Arc::new(sipsentry::config::Config::default()), Arc::new(p))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/v1/webhooks/didchecks",
        listener.local_addr().unwrap()
    );
    tokio::spawn(admin::serve(
        listener,
        Arc::clone(&state),
        std::future::pending(),
    ));
    (url, state)
}

fn status_changed(number: &str, score: u8) -> String {
    serde_json::json!({
        "event": "spam_status_changed", "timestamp": "2026-01-24T10:30:00Z",
        "data": {"routineId": "routine_abc123", "phoneNumber": number,
                 "previousStatus": {"isSpam": false, "spamScore": 15},
                 "currentStatus": {"isSpam": true, "spamScore": score, "spamType": "Telemarketing"}}
    })
    .to_string()
}

#[tokio::test]
async fn webhook_status_change_with_a_good_signature_updates_the_live_cache() {
    let fake = fakes::didchecks().await;
    let p = pipeline("").with_live(didchecks(&fake, Duration::from_secs(1)));
    let (url, state) = admin_with(p).await;
    let http = reqwest::Client::new();
    let body = status_changed("+33612345678", 78);
    let r = http
        .post(&url)
        .header("X-HUHU-Signature", sign(&body, SECRET))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    match state.pipeline.live().cache().get(0, "+33612345678") {
        Cached::Hit(ev) => assert_eq!(
            (ev.score, ev.category.as_deref()),
            (78, Some("Telemarketing"))
        ),
        other => panic!("{other:?}"),
    }
    // The next call from that number is screened from it, with no request.
    let (d, _) = screen(&state.pipeline, "+33612345678").await;
    assert_eq!((d.action, d.score), (Action::Tag, 78));
    assert_eq!(fake.state.count("/check/"), 0);
    assert_eq!(state.webhook.status_changes.load(Ordering::Relaxed), 1);

    // A credit event: accepted and counted, the cache unchanged.
    let other =
        r#"{"event":"credits_low","timestamp":"2026-01-24T10:30:00Z","data":{"balance":4}}"#;
    let r = http
        .post(&url)
        .header("X-HUHU-Signature", sign(other, SECRET))
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(state.webhook.credits_events.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn webhook_with_a_bad_missing_or_replayed_signature_gets_401_and_changes_nothing() {
    let fake = fakes::didchecks().await;
    let p = pipeline("").with_live(didchecks(&fake, Duration::from_secs(1)));
    let (url, state) = admin_with(p).await;
    let http = reqwest::Client::new();
    let body = status_changed("+33612345678", 99);
    let good_sig = sign(&body, SECRET);
    // The same signature over a body with one byte altered (a replay with a
    // changed score), a signature made with another key, a malformed
    // header, and none at all.
    let altered = body.replace("99", "98");
    let cases: Vec<(String, Option<String>)> = vec![
        (altered, Some(good_sig.clone())),
        (body.clone(), Some(sign(&body, b"another-key"))),
        (
            body.clone(),
            Some(good_sig.trim_start_matches("sha256=").to_string()),
        ),
        (body.clone(), Some("sha256=".to_string())),
        (body.clone(), None),
    ];
    for (b, sig) in cases {
        let mut req = http.post(&url).body(b);
        if let Some(s) = &sig {
            req = req.header("X-HUHU-Signature", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "signature {sig:?}");
        let msg: serde_json::Value = r.json().await.unwrap();
        assert!(msg["error"].as_str().unwrap().contains("X-HUHU-Signature"));
    }
    assert_eq!(
        state.pipeline.live().cache().get(0, "+33612345678"),
        Cached::Miss
    );
    assert_eq!(state.webhook.bad_signatures.load(Ordering::Relaxed), 5);
    assert_eq!(state.webhook.status_changes.load(Ordering::Relaxed), 0);
}
