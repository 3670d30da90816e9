//! Own-number monitoring, black box: `serve` checking the own numbers with
//! the Hiya status fake on a schedule and keeping every result, the `own`
//! commands, the DIDChecks routine sync against the DIDChecks fake, and
//! every DIDChecks webhook event type, with good and bad signatures.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;

use std::time::{Duration, Instant};

use common::fakes::{self, DC_TOKEN, HS_KEY, Mode};
use hmac::{Hmac, KeyInit, Mac};
use operator::{Operator, TOKEN};
use serde_json::{Value, json};

const SECRET: &str = "own-webhook-secret";

fn hiya_section(base: &str) -> String {
    format!(
        "[providers.hiya_status]\nbase_url = \"{base}\"\npath = \"/status/{{phone}}\"\n\
         api_key_env = \"T_HS\"\nauth_header = \"X-Api-Key\"\nauth_scheme = \"\"\n"
    )
}

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("T_HS", HS_KEY),
        ("T_DC", DC_TOKEN),
        ("T_DC_SECRET", SECRET),
    ]
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `own status --json` entry of `number`.
fn entry<'a>(view: &'a Value, number: &str) -> &'a Value {
    view["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["number"] == number)
        .unwrap_or_else(|| panic!("{number} in {view}"))
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `own status --json` until `done` holds (at most 20 s).
async fn wait_for(op: &Operator, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = json_of(&op.cli(&["own", "status", "--json"]));
        if done(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}: {view}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hiya_status_of(view: &Value, number: &str) -> Option<String> {
    entry(view, number)["providers"]
        .as_array()?
        .iter()
        .find(|p| p["provider"] == "hiya_status")
        .map(|p| p["status"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_checks_keep_every_result_and_show_a_change_in_status_api_metrics_and_console() {
    let hs = fakes::hiya_status().await;
    let card = json!({"maturity": "good", "desirability": null, "engagement": "poor", "reaction": "normal"});
    hs.state.answer(
        "+15550000001",
        json!({"status": "unflagged", "reportCard": card}),
    );
    hs.state.answer(
        "+15550000002",
        json!({"status": "flagged", "reportCard": {"maturity": "normal"}}),
    );
    // +15550000003 and 04 are not registered (404); +15550000000, checked
    // first, gets an answer that is not the documented shape.
    hs.state.answer("+15550000000", json!({"status": "bogus"}));
    let own = "[own_numbers]\nnumbers = [{prefix = \"+155500000\", count = 5, digits = 11}, \"+15550000001\"]\n\
               check_every_hours = 0.001\nrequests_per_second = 50\n";
    let op = Operator::start_full(
        "",
        "",
        &format!("{}{own}", hiya_section(&hs.base)),
        Some(TOKEN),
        &[],
        &env(),
    )
    .await;
    let view = wait_for(&op, "first round", |v| {
        hiya_status_of(v, "+15550000004").is_some() && hiya_status_of(v, "+15550000001").is_some()
    })
    .await;
    // {prefix, count} gave +15550000000 … 04; the repeat counts once.
    assert_eq!(view["numbers"].as_array().unwrap().len(), 5, "{view}");
    assert_eq!(
        hiya_status_of(&view, "+15550000003").as_deref(),
        Some("not_registered")
    );
    assert_eq!(
        hiya_status_of(&view, "+15550000002").as_deref(),
        Some("flagged")
    );
    let first = &entry(&view, "+15550000001")["providers"][0];
    assert_eq!(first["report_card"]["engagement"], "poor");
    assert_eq!(first["previous"], Value::Null);

    // The number turns flagged; the next scheduled round records it.
    hs.state.answer(
        "+15550000001",
        json!({"status": "flagged", "reportCard": card}),
    );
    let view = wait_for(&op, "the change", |v| {
        hiya_status_of(v, "+15550000001").as_deref() == Some("flagged")
    })
    .await;
    let p = &entry(&view, "+15550000001")["providers"][0];
    assert_eq!(
        (p["changed"].as_bool(), p["previous"]["status"].as_str()),
        (Some(true), Some("unflagged"))
    );
    assert_eq!(view["flagged"], 2);
    // A malformed answer for one number never stopped the others.
    assert_eq!(hiya_status_of(&view, "+15550000000"), None, "{view}");
    assert!(hiya_status_of(&view, "+15550000004").is_some(), "{view}");
    let text = op.cli(&["own", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("changed from unflagged"), "{text}");
    assert!(text.contains("engagement poor"), "{text}");

    // Every result is kept: the history of the number shows both.
    let history = json_of(&op.cli(&["own", "history", "+15550000001", "--json"]));
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"flagged"));
    assert!(statuses.contains(&"unflagged"), "{statuses:?}");

    let (code, api) = op.get("/api/v1/own").await;
    assert_eq!(code, 200, "{api}");
    let api: Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["flagged"], 2);
    assert_eq!(
        hiya_status_of(&api, "+15550000001").as_deref(),
        Some("flagged")
    );
    let (code, results) = op.get("/api/v1/own/%2B15550000001").await;
    assert_eq!(code, 200);
    assert!(results.contains("unflagged"), "{results}");
    assert_eq!(op.get("/api/v1/own/%2B19990000000").await.0, 404);

    let (_, metrics) = op.get("/metrics").await;
    let status = "sipsentry_own_number_status{number=\"+15550000001\",provider=\"hiya_status\"}";
    assert_eq!(metric(&metrics, status), Some(3.0), "{metrics}");
    assert_eq!(metric(&metrics, "sipsentry_own_numbers_flagged"), Some(2.0));
    assert_eq!(
        metric(&metrics, "sipsentry_own_numbers_not_registered"),
        Some(2.0)
    );
    let malformed = "sipsentry_own_checks_total{provider=\"hiya_status\",outcome=\"malformed\"}";
    assert!(
        metric(&metrics, malformed).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    let (cookie, _) = op.login().await;
    let page = op.page("/own", &cookie).await;
    assert!(
        page.contains("+15550000001") && page.contains("2 flagged"),
        "{page}"
    );
    assert!(page.contains("changed"), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_waits_for_retry_after_and_failing_credentials_open_the_breaker() {
    let hs = fakes::hiya_status().await;
    for n in ["+15550000001", "+15550000002"] {
        hs.state.answer(n, json!({"status": "unflagged"}));
    }
    hs.state.set_mode(Mode::LimitedOnce(1));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[history]\npath = \"h.db\"\n{}[own_numbers]\nnumbers = [{{prefix = \"+155500000\", count = 8, digits = 11}}]\nrequests_per_second = 100\n",
            hiya_section(&hs.base)
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(binary::BIN)
            .args(args)
            .current_dir(dir.path())
            .env("T_HS", HS_KEY)
            .output()
            .unwrap()
    };
    let view = json_of(&cli(&["own", "status", "--refresh", "--json"]));
    let requests = hs.state.requests.lock().clone();
    let first: Vec<_> = requests
        .iter()
        .filter(|(p, _, _)| p == "/status/+15550000000")
        .collect();
    assert_eq!(first.len(), 2, "the 429'd number is asked again");
    assert!(
        first[1].2 - first[0].2 >= Duration::from_millis(950),
        "after Retry-After: 1"
    );
    assert_eq!(
        hiya_status_of(&view, "+15550000001").as_deref(),
        Some("unflagged")
    );
    assert_eq!(
        hiya_status_of(&view, "+15550000007").as_deref(),
        Some("not_registered")
    );

    // 401 for everything: the breaker opens after five, the rest are not sent.
    hs.state.requests.lock().clear();
    hs.state.set_mode(Mode::Error(401));
    let out = cli(&["own", "status", "--refresh"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "every check failed: {stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert_eq!(hs.state.count("/status/"), 5, "{stderr}");
}

fn routine(id: &str, number: &str, days: u32) -> Value {
    json!({"id": id, "phoneNumber": number, "scheduleType": "interval", "intervalDays": days,
           "notifyVia": ["webhook"], "notifyOnlyIfSpam": false, "isActive": true,
           "lastScore": 12, "lastCheckedAt": "2026-11-30T09:00:00Z"})
}

#[tokio::test(flavor = "multi_thread")]
async fn routine_sync_creates_updates_and_deletes_exactly_what_differs_and_then_nothing() {
    let dc = fakes::didchecks().await;
    *dc.state.routines.lock() = vec![
        routine("keep", "+15550000001", 1),
        routine("stale", "+15550000002", 7),
        routine("gone", "+15559999999", 1),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[history]\npath = \"h.db\"\n[providers.didchecks]\nbase_url = \"{}\"\ntoken_env = \"T_DC\"\n\
             [own_numbers]\nproviders = [\"didchecks\"]\nnumbers = [{{prefix = \"+1555000\", count = 150}}]\n",
            dc.base
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(binary::BIN)
            .args(args)
            .current_dir(dir.path())
            .env("T_DC", DC_TOKEN)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let writes = || {
        let mut w: Vec<String> = dc
            .state
            .requests
            .lock()
            .iter()
            .map(|(p, _, _)| p.clone())
            .filter(|p| !p.starts_with("GET "))
            .collect();
        w.sort();
        w
    };
    let out = cli(&["own", "routines", "sync", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(
        plan.contains("create 148, update 1, delete 1, unchanged 1"),
        "{plan}"
    );
    assert!(plan.contains("$"), "the plan says what it costs: {plan}");
    assert!(writes().is_empty(), "a dry run changes nothing");

    let out = cli(&["own", "routines", "sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(writes().is_empty(), "no --yes, no change");

    // The listing is answered 429 once: the sync waits and asks again.
    let listings = dc.state.count("GET /routines");
    dc.state.set_mode(Mode::LimitedOnce(1));
    let out = cli(&["own", "routines", "sync", "--yes"]);
    assert_eq!(dc.state.count("GET /routines"), listings + 2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        writes(),
        [
            "DELETE /routines/gone",
            "POST /routines/bulk",
            "POST /routines/bulk",
            "PUT /routines/stale"
        ],
        "148 creates in two bulk requests (≤ 100 each), one update, one delete"
    );
    let bulk: Vec<Value> = dc
        .state
        .requests
        .lock()
        .iter()
        .filter(|(p, _, _)| p == "POST /routines/bulk")
        .map(|(_, body, _)| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(bulk[0]["phoneNumbers"].as_array().unwrap().len(), 100);
    assert_eq!(
        bulk[0]["defaultSettings"],
        json!({"scheduleType": "interval", "intervalDays": 1, "notifyVia": ["webhook"], "notifyOnlyIfSpam": false})
    );

    let out = cli(&["own", "routines", "sync", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    assert_eq!(writes().len(), 4, "a second sync makes no change");

    let listed = json_of(&cli(&["own", "routines", "list", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 150);
    let kept = listed.iter().find(|r| r["id"] == "keep").unwrap();
    assert_eq!(
        (kept["lastScore"].as_f64(), kept["lastCheckedAt"].as_str()),
        (Some(12.0), Some("2026-11-30T09:00:00Z"))
    );
    let text = cli(&["own", "routines", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("last score 12"));
}

fn sign(body: &str, key: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_webhook_event_type_is_handled_and_a_bad_signature_changes_nothing() {
    let dc = fakes::didchecks().await;
    let extra = format!(
        "[providers.didchecks]\nbase_url = \"{}\"\ntoken_env = \"T_DC\"\nwebhook_secret_env = \"T_DC_SECRET\"\n\
         [own_numbers]\nproviders = [\"didchecks\"]\nnumbers = [\"+15550000001\"]\n",
        dc.base
    );
    let op = Operator::start_full("", "", &extra, Some(TOKEN), &[], &env()).await;
    let url = format!("{}/api/v1/webhooks/didchecks", op.admin);
    let post = |body: Value, key: &'static str| {
        let body = body.to_string();
        let req = op
            .http
            .post(&url)
            .header("X-HUHU-Signature", sign(&body, key))
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let number = "+15550000001";
    let events = [
        json!({"event": "routine_check_completed", "timestamp": "2026-12-01T09:00:00Z",
               "data": {"routineId": "r1", "phoneNumber": number, "currentStatus": {"isSpam": false, "spamScore": 12}}}),
        json!({"event": "spam_status_changed", "timestamp": "2026-12-02T09:00:00Z",
               "data": {"routineId": "r1", "phoneNumber": number, "previousStatus": {"isSpam": false, "spamScore": 12},
                        "currentStatus": {"isSpam": true, "spamScore": 78, "spamType": "Telemarketing"}}}),
        json!({"event": "routine_check_failed", "timestamp": "2026-12-02T10:00:00Z",
               "data": {"routineId": "r1", "phoneNumber": number, "reason": "carrier lookup timed out"}}),
        json!({"event": "credits_low", "timestamp": "2026-12-02T11:00:00Z", "data": {"balance": 4}}),
        json!({"event": "credits_depleted", "timestamp": "2026-12-02T12:00:00Z", "data": {"balance": 0}}),
    ];
    // Signed with another key: refused, and nothing is counted or kept.
    for e in &events {
        assert_eq!(post(e.clone(), "not-the-secret").await, 401, "{e}");
    }
    let view = json_of(&op.cli(&["own", "status", "--json"]));
    assert_eq!(entry(&view, number)["providers"], json!([]));
    let (_, metrics) = op.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "sipsentry_webhook_events_total{result=\"bad_signature\"}"
        ),
        Some(5.0)
    );
    for result in [
        "routine_result",
        "status_change",
        "routine_failed",
        "credits",
    ] {
        let series = format!("sipsentry_webhook_events_total{{result=\"{result}\"}}");
        assert_eq!(metric(&metrics, &series), Some(0.0), "{series}");
    }

    // Signed: each handled. The credit warning is logged once, not per retry.
    for e in events.iter().chain([&events[3], &events[4]]) {
        assert_eq!(post(e.clone(), SECRET).await, 200, "{e}");
    }
    let view = json_of(&op.cli(&["own", "status", "--json"]));
    let p = &entry(&view, number)["providers"][0];
    assert_eq!(
        (
            p["provider"].as_str(),
            p["status"].as_str(),
            p["value"].as_f64()
        ),
        (Some("didchecks"), Some("spam"), Some(78.0))
    );
    assert_eq!(
        (p["previous"]["status"].as_str(), p["changed"].as_bool()),
        (Some("clean"), Some(true))
    );
    assert_eq!(p["checked_at"], "2026-12-02T09:00:00Z");
    let (_, metrics) = op.get("/metrics").await;
    for (series, want) in [
        (
            "sipsentry_own_number_status{number=\"+15550000001\",provider=\"didchecks\"}",
            78.0,
        ),
        ("sipsentry_own_numbers_flagged", 1.0),
        (
            "sipsentry_webhook_events_total{result=\"routine_result\"}",
            1.0,
        ),
        (
            "sipsentry_webhook_events_total{result=\"status_change\"}",
            1.0,
        ),
        (
            "sipsentry_webhook_events_total{result=\"routine_failed\"}",
            1.0,
        ),
        ("sipsentry_webhook_events_total{result=\"credits\"}", 4.0),
        (
            "sipsentry_own_checks_total{provider=\"didchecks\",outcome=\"routine_failed\"}",
            1.0,
        ),
        ("sipsentry_didchecks_balance", 0.0),
    ] {
        assert_eq!(metric(&metrics, series), Some(want), "{series}\n{metrics}");
    }
    let log = op
        .log_with(&[
            "carrier lookup timed out",
            "DIDChecks credits low",
            "DIDChecks credits depleted",
        ])
        .await;
    assert!(log.contains("carrier lookup timed out"), "{log}");
    assert_eq!(log.matches("DIDChecks credits low").count(), 1, "{log}");
    assert_eq!(
        log.matches("DIDChecks credits depleted").count(),
        1,
        "{log}"
    );
}
