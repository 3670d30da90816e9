//! The provider clients against local fakes of their documented APIs: every
//! field mapping, every error path, signatures, bulk chunking and the
//! client-side rate limit.

mod common;

use std::time::Duration;

use common::fakes::{self, DC_TOKEN, GL_KEY, GL_SECRET, HS_KEY, Mode};
use serde_json::json;
use sipsentry::config::{Config, HiyaStatusConfig};
use sipsentry::reputation::providers::didchecks::DidChecks;
use sipsentry::reputation::providers::gilraen::{Gilraen, GilraenSource};
use sipsentry::reputation::providers::hiya_status::{Grade, HiyaStatus, Status};
use sipsentry::reputation::{LiveSource, SourceError};

const T: Duration = Duration::from_secs(5);

fn dc(base: &str, token: &str) -> DidChecks {
    DidChecks::new(base, token.into(), T, 10, 100)
}

fn gl(base: &str, fields: &[&str]) -> std::sync::Arc<Gilraen> {
    let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
    std::sync::Arc::new(Gilraen::new(base, GL_KEY.into(), GL_SECRET.into(), &fields, T).unwrap())
}

#[tokio::test]
async fn didchecks_check_parses_every_documented_field_and_maps_the_huhu_score() {
    let fake = fakes::didchecks().await;
    fake.state.answer(
        "+33612345678",
        fakes::dc_data("+33612345678", 85, "Telemarketing"),
    );
    let client = dc(&fake.base, DC_TOKEN);
    let check = client.check("+33612345678").await.unwrap();
    let d = &check.data;
    let huhu = d.huhu.as_ref().unwrap();
    assert_eq!(huhu.is_spam, Some(true));
    assert_eq!(huhu.number_type.as_deref(), Some("MOBILE"));
    assert_eq!(huhu.country_code.as_deref(), Some("FR"));
    assert_eq!(huhu.carrier.as_deref(), Some("Orange"));
    assert_eq!(
        d.hiya.as_ref().unwrap().reputation_level.as_deref(),
        Some("negative")
    );
    let tc = d.truecaller.as_ref().unwrap();
    assert_eq!(
        (tc.spam_score, tc.num_reports, tc.num_reports_60days),
        (Some(7.0), Some(150), Some(45))
    );
    assert_eq!(tc.spam_type.as_deref(), Some("sales"));
    let o = d.orange.as_ref().unwrap();
    assert_eq!((o.is_spam, o.positive_reviews), (Some(true), Some(0)));
    assert_eq!(o.main_spam_type.as_deref(), Some("SCAM"));
    assert_eq!(o.spam_types_repartition[0].ratio, 0.89);
    assert_eq!((check.cost, check.balance), (Some(1), Some(14)));
    assert_eq!(client.last_balance(), Some(14));

    let ev = client.lookup("+33612345678").await.unwrap().unwrap();
    assert_eq!(
        (ev.score, ev.category.as_deref()),
        (85, Some("Telemarketing"))
    );
    assert_eq!(ev.raw["data"]["orange"]["negativeReviews"], 64);
    // Not known to the provider: no data, not an error.
    assert_eq!(client.lookup("+33600000000").await.unwrap(), None);
}

#[tokio::test]
async fn didchecks_error_bodies_become_typed_errors_with_the_providers_message() {
    let fake = fakes::didchecks().await;
    let client = dc(&fake.base, DC_TOKEN);
    for code in [400, 401, 402, 404, 429, 500] {
        fake.state.set_mode(Mode::Error(code));
        let e = client.check("+33612345678").await.unwrap_err();
        let ok = match (code, &e) {
            (400, SourceError::BadRequest { code, message, .. }) => {
                code == "INVALID_PHONE" && message.contains("Invalid phone number")
            }
            (401, SourceError::Unauthorized { message, .. }) => {
                message.contains("Invalid API token")
            }
            (402, SourceError::PaymentRequired { message, .. }) => {
                message.contains("Insufficient verifications") && message.contains("\"balance\":0")
            }
            (404, SourceError::NotFound { .. }) => true,
            (429, SourceError::RateLimited { .. }) => true,
            (
                500,
                SourceError::Server {
                    status: 500,
                    message,
                    ..
                },
            ) => message.contains("Internal error"),
            _ => false,
        };
        assert!(ok, "HTTP {code} became {e:?}");
    }
    fake.state.set_mode(Mode::Garbage);
    assert!(matches!(
        client.check("+33612345678").await,
        Err(SourceError::Malformed { .. })
    ));
    // A wrong token is refused by the fake and reported as such.
    fake.state.set_mode(Mode::Normal);
    let wrong = dc(&fake.base, "spk_live_wrong");
    assert!(matches!(
        wrong.check("+33612345678").await,
        Err(SourceError::Unauthorized { .. })
    ));
    assert_eq!(*fake.state.refused.lock(), 1);
    // The token never appears in an error.
    assert!(!format!("{:?}", wrong.check("+1").await).contains("spk_live_wrong"));
}

#[tokio::test]
async fn didchecks_bulk_sends_at_most_100_numbers_per_request() {
    let fake = fakes::didchecks().await;
    let numbers: Vec<String> = (0..250).map(|i| format!("+336{i:08}")).collect();
    for (i, n) in numbers.iter().enumerate() {
        fake.state.answer(
            n,
            fakes::dc_data(n, if i % 5 == 0 { 90 } else { 10 }, "Scam"),
        );
    }
    let bulk = dc(&fake.base, DC_TOKEN).check_bulk(&numbers).await.unwrap();
    assert_eq!(bulk.requests, 3);
    assert_eq!(fake.state.count("/check/bulk"), 3);
    assert_eq!(bulk.results.len(), 250);
    assert_eq!(bulk.summary.total_checked, 250);
    assert_eq!(bulk.summary.spam_count, 50);
    assert_eq!(bulk.cost, 250);
    assert_eq!(
        bulk.results[249].phone_number.as_deref(),
        Some(numbers[249].as_str())
    );
}

#[tokio::test]
async fn didchecks_requests_are_spaced_to_the_documented_10_per_second() {
    let fake = fakes::didchecks().await;
    fake.state
        .answer("+33612345678", fakes::dc_data("+33612345678", 1, "x"));
    let client = std::sync::Arc::new(dc(&fake.base, DC_TOKEN));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = std::sync::Arc::clone(&client);
        tasks.push(tokio::spawn(async move { c.check("+33612345678").await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let times: Vec<_> = fake.state.requests.lock().iter().map(|r| r.2).collect();
    assert_eq!(times.len(), 12);
    // Any 11 consecutive requests span at least a second (minus scheduling slack).
    for w in times.windows(11) {
        assert!(
            w[10] - w[0] >= Duration::from_millis(950),
            "{:?}",
            w[10] - w[0]
        );
    }
}

#[tokio::test]
async fn didchecks_balance_is_read_and_a_low_one_is_reported() {
    let fake = fakes::didchecks().await;
    let client = DidChecks::new(&fake.base, DC_TOKEN.into(), T, 10, 100);
    let b = client.balance().await.unwrap();
    assert_eq!((b.balance, b.check_price), (47, Some(1.0)));
    let status = sipsentry::cli::cache::didchecks_balance(&client, 100).await;
    assert!(status.below_floor, "47 < floor 100");
    assert!(
        status.line().contains("below the floor"),
        "{}",
        status.line()
    );
    fake.state.set_mode(Mode::Error(401));
    let status = sipsentry::cli::cache::didchecks_balance(&client, 10).await;
    assert!(status.error.unwrap().contains("unauthorized"));
}

#[tokio::test]
async fn gilraen_signed_requests_pass_the_fakes_independent_check() {
    let fake = fakes::gilraen().await;
    fake.state.answer(
        "79991234567",
        json!({"bans": 145, "index": 1.5, "is_unwanted": false, "comments_count": 5,
               "tags": {"categories": [{"id": 1146, "count": 245}, {"id": 1145, "count": 10}]},
               "carrier": "MegaFon", "region": "Krasnodar"}),
    );
    let client = gl(&fake.base, &["index", "unwanted", "bans"]);
    let data = client.number("+79991234567").await.unwrap();
    assert_eq!(
        (data.index, data.bans, data.is_unwanted),
        (Some(1.5), Some(145), Some(false))
    );
    // Only the configured fields were asked for (each costs a unit), and
    // nothing else came back.
    assert_eq!(fake.state.requests.lock()[0].1, "index,unwanted,bans");
    assert_eq!((data.comments_count, data.tags.is_some()), (None, false));
    assert_eq!(*fake.state.refused.lock(), 0);
    let ev = GilraenSource(client.clone())
        .lookup("+79991234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.score, 70, "(5 - 1.5) * 20");
    assert_eq!(client.limits().await.unwrap(), 354.0);
}

#[tokio::test]
async fn gilraen_tags_are_named_from_the_cached_dictionary() {
    let fake = fakes::gilraen().await;
    fake.state.answer(
        "79991234567",
        json!({"index": 2.0, "is_unwanted": true, "bans": 3,
               "tags": {"callerType": {"id": 10, "count": 1}, "categories": [{"id": 1146, "count": 245}],
                        "subcategories": [], "callReasons": [{"id": 100009, "count": 156}], "emotags": []}}),
    );
    let client = gl(&fake.base, &["index", "unwanted", "tags_top", "bans"]);
    let tags = client.tags_list().await.unwrap();
    assert_eq!(tags.len(), 6);
    assert_eq!(
        client.tag_name("CATEGORY", 1146).as_deref(),
        Some("Collectors")
    );
    let ev = GilraenSource(client)
        .lookup("+79991234567")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.score, ev.category.as_deref()),
        (80, Some("Unwanted")),
        "unwanted lifts 60 to 80"
    );
    assert_eq!(ev.raw["top_category"], "Collectors");
    assert_eq!(ev.raw["tags"]["callReasons"][0]["id"], 100009);
}

#[tokio::test]
async fn gilraen_401_and_419_become_typed_errors() {
    let fake = fakes::gilraen().await;
    let fields = vec!["index".to_string()];
    let bad_key = Gilraen::new(&fake.base, "wrong".into(), GL_SECRET.into(), &fields, T).unwrap();
    match bad_key.number("+79991234567").await {
        Err(SourceError::Unauthorized { message, .. }) => {
            assert!(message.contains("limit used up"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let bad_secret = Gilraen::new(&fake.base, GL_KEY.into(), "wrong".into(), &fields, T).unwrap();
    match bad_secret.number("+79991234567").await {
        Err(SourceError::Signature { message, .. }) => {
            assert!(message.contains("signature failed"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Neither the key nor the signed URL leaks into the error.
    let e = format!("{:?}", bad_secret.number("+7").await);
    assert!(!e.contains(GL_KEY) && !e.contains("signature="), "{e}");
    // A 200 whose body is not the documented JSON is malformed, not a panic.
    let good = gl(&fake.base, &["index"]);
    fake.state.set_mode(Mode::Garbage);
    assert!(matches!(
        good.number("+79991234567").await,
        Err(SourceError::Malformed { .. })
    ));
    fake.state.set_mode(Mode::Normal);
    // A number the service knows nothing about: index 5.00, no data.
    assert_eq!(
        GilraenSource(good).lookup("+79990000000").await.unwrap(),
        None
    );
}

fn hs_config(base: &str) -> HiyaStatusConfig {
    let toml = format!(
        "[providers.hiya_status]\nenabled = true\nbase_url = \"{base}\"\npath = \"/status/{{phone}}\"\n\
         api_key_env = \"SIPSENTRY_TEST_UNSET_VAR\"\nauth_header = \"X-Api-Key\"\nauth_scheme = \"\"\n"
    );
    Config::from_toml(&toml).unwrap().providers.hiya_status
}

#[tokio::test]
async fn hiya_status_reads_status_and_report_card_with_configured_auth() {
    let fake = fakes::hiya_status().await;
    fake.state.answer(
        "+15551234567",
        json!({"phoneNumber": "+15551234567", "status": "flagged",
               "reportCard": {"maturity": "good", "desirability": null, "engagement": "poor", "reaction": "very_poor"}}),
    );
    // The key comes from the environment variable the config names.
    let unset = HiyaStatus::from_config(&hs_config(&fake.base));
    assert!(matches!(unset, Err(SourceError::MissingCredential { .. })));
    let client = hiya_with_key(&fake.base, HS_KEY);
    let rep = client.reputation("+15551234567").await.unwrap().unwrap();
    assert_eq!(rep.status, Status::Flagged);
    assert_eq!(rep.report_card.maturity, Some(Grade::Good));
    assert_eq!(rep.report_card.desirability, None);
    assert_eq!(rep.report_card.reaction, Some(Grade::VeryPoor));
    let ev = client.lookup("+15551234567").await.unwrap().unwrap();
    assert_eq!((ev.score, ev.category.as_deref()), (90, Some("flagged")));
    assert_eq!(
        client.reputation("+15550000000").await.unwrap(),
        None,
        "404: not registered"
    );
    let wrong = hiya_with_key(&fake.base, "nope");
    assert!(matches!(
        wrong.reputation("+15551234567").await,
        Err(SourceError::Unauthorized { .. })
    ));
    fake.state.set_mode(Mode::Error(503));
    assert!(matches!(
        client.reputation("+15551234567").await,
        Err(SourceError::Server { status: 503, .. })
    ));
}

/// A client with `key` given directly (the binary tests cover the env var).
fn hiya_with_key(base: &str, key: &str) -> std::sync::Arc<HiyaStatus> {
    HiyaStatus::with_key(&hs_config(base), key.to_string())
}
