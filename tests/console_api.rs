//! The runtime lists, reports, live events and the console's pages, black
//! box over HTTP and SIP against the real binary: every route, auth and
//! CSRF refusal, validation errors naming the field, lists surviving a
//! restart and changed from the CLI, and calls screened by what the API
//! changed.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;

use std::time::Duration;

use common::Udp;
use operator::{Operator, TOKEN};
use serde_json::json;

/// A policy where an operator's spam report (90) tags rather than rejects.
const POLICY: &str = "[policy]\nreject_code = 607\nreject_at = 95\nallow = []\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_deny_entry_from_the_api_rejects_the_next_call_and_removing_it_lets_calls_through() {
    let op = Operator::start(POLICY, Some(TOKEN)).await;
    let uac = Udp::new().await;
    let from = "<sip:+15557654321@carrier.example>";
    assert_eq!(op.call(&uac, "d1", from).await.0, 486, "relayed to the PBX");
    let (code, entry) = op
        .post_json(
            "/api/v1/lists/deny",
            json!({"pattern": "+15557654321", "comment": "robocaller"}),
        )
        .await;
    assert_eq!(code, 201, "{entry}");
    assert_eq!(entry["added_by"], "api");
    let (code, relayed) = op.call(&uac, "d2", from).await;
    assert_eq!(
        (code, relayed.is_none()),
        (607, true),
        "rejected, never relayed"
    );
    let row = op.row("d2", false).await;
    assert_eq!(
        (row["rule"].as_str(), row["response_code"].as_u64()),
        (Some("denylist"), Some(607))
    );
    assert_eq!(row["evidence"][0]["raw"]["origin"], "operator");
    assert_eq!(op.delete("/api/v1/lists/deny/+15557654321").await, 204);
    assert_eq!(op.delete("/api/v1/lists/deny/+15557654321").await, 404);
    assert_eq!(op.call(&uac, "d3", from).await.0, 486, "relayed again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spam_report_tags_the_next_call_with_operator_evidence_and_not_spam_allowlists() {
    let op = Operator::start(POLICY, Some(TOKEN)).await;
    let uac = Udp::new().await;
    let from = "<sip:+15550001111@carrier.example>";
    op.call(&uac, "s1", from).await;
    let first = op.row("s1", true).await;
    assert_eq!(first["action"], "pass");
    let (code, report) = op
        .post_json(
            "/api/v1/feedback",
            json!({"number": "+15550001111", "verdict": "spam",
                   "decision_id": first["decision_id"], "note": "sold me a cruise"}),
        )
        .await;
    assert_eq!(code, 201, "{report}");
    let (code, relayed) = op.call(&uac, "s2", from).await;
    assert_eq!(code, 486);
    let relayed = relayed.expect("a tagged call is relayed");
    assert!(relayed.contains("X-Sipsentry-Score: 90"), "{relayed}");
    assert!(relayed.contains("sources=\"operator\""), "{relayed}");
    let row = op.row("s2", false).await;
    assert_eq!(
        (row["action"].as_str(), row["score"].as_u64()),
        (Some("tag"), Some(90))
    );
    assert_eq!(row["evidence"][0]["source"], "operator");
    assert_eq!(row["evidence"][0]["raw"]["note"], "sold me a cruise");

    // Not spam: allowlisted for policy.not_spam_days, shown as such.
    let (code, _) = op
        .post_json(
            "/api/v1/feedback",
            json!({"number": "+15550001111", "verdict": "not_spam"}),
        )
        .await;
    assert_eq!(code, 201);
    let (_, allow) = op.get("/api/v1/lists/allow").await;
    let allow: serde_json::Value = serde_json::from_str(&allow).unwrap();
    let entry = allow["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pattern"] == "+15550001111")
        .expect("allowlisted")
        .clone();
    assert_eq!(entry["origin"], "not_spam");
    assert!(
        entry["expires_at"].as_str().unwrap().starts_with("2"),
        "{entry}"
    );
    op.call(&uac, "s3", from).await;
    assert_eq!(op.row("s3", false).await["rule"], "allowlist");

    // The reports are kept with their decision and exported.
    let (code, csv) = op.get("/api/v1/feedback?format=csv").await;
    assert_eq!(code, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,time,number,verdict,decision_id,note,reported_by"
    );
    assert!(lines[1].contains(&format!(
        "+15550001111,spam,{},sold me a cruise,api",
        first["decision_id"].as_str().unwrap()
    )));
    assert!(lines[2].contains("+15550001111,not_spam,,,api"), "{csv}");
    let (_, json) = op
        .get("/api/v1/feedback?format=json&number=%2B15550001111")
        .await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_list_and_feedback_fields_get_a_400_naming_the_field() {
    let op = Operator::start(POLICY, Some(TOKEN)).await;
    let cases = [
        (
            "/api/v1/lists/deny",
            json!({"pattern": "5551234567"}),
            "pattern",
        ),
        (
            "/api/v1/lists/deny",
            json!({"pattern": "+1555*x"}),
            "pattern",
        ),
        (
            "/api/v1/lists/deny",
            json!({"comment": "no pattern"}),
            "body",
        ),
        (
            "/api/v1/lists/deny",
            json!({"pattern": "+15551234567", "color": 1}),
            "color",
        ),
        (
            "/api/v1/lists/allow",
            json!({"pattern": "+15551234567", "comment": "x".repeat(201)}),
            "comment",
        ),
        (
            "/api/v1/lists/allow",
            json!({"pattern": "+15551234567", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            "/api/v1/lists/allow",
            json!({"pattern": "+15551234567", "expires_at": "soon"}),
            "expires_at",
        ),
        (
            "/api/v1/lists/allow",
            json!({"pattern": 15551234567u64}),
            "pattern",
        ),
        (
            "/api/v1/feedback",
            json!({"number": "+15551234567", "verdict": "maybe"}),
            "verdict",
        ),
        (
            "/api/v1/feedback",
            json!({"number": "+1555*", "verdict": "spam"}),
            "number",
        ),
        (
            "/api/v1/feedback",
            json!({"number": "+15551234567", "verdict": "spam", "note": "n".repeat(501)}),
            "note",
        ),
        (
            "/api/v1/feedback",
            json!({"number": "+15551234567", "verdict": "spam", "decision_id": "nope"}),
            "decision_id",
        ),
    ];
    for (path, body, field) in cases {
        let (code, v) = op.post_json(path, body.clone()).await;
        assert_eq!(
            (code, v["field"].as_str()),
            (400, Some(field)),
            "{body} → {v}"
        );
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    // Not JSON, an unknown list, a config entry.
    let r = op
        .http
        .post(format!("{}/api/v1/lists/deny", op.admin))
        .bearer_auth(TOKEN)
        .body("{\"pattern\": \"+15551234567\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        415,
        "a body without Content-Type: application/json"
    );
    let (code, _) = op
        .post_json("/api/v1/lists/grey", json!({"pattern": "+1555*"}))
        .await;
    assert_eq!(code, 404);
    let op2 = Operator::start("[policy]\ndeny = [\"+1666*\"]\n", Some(TOKEN)).await;
    assert_eq!(
        op2.delete("/api/v1/lists/deny/+1666*").await,
        409,
        "read-only"
    );
    let (_, deny) = op2.get("/api/v1/lists/deny").await;
    let deny: serde_json::Value = serde_json::from_str(&deny).unwrap();
    assert_eq!(deny["entries"][0]["read_only"], true);
    assert_eq!(deny["entries"][0]["origin"], "config");
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_survive_a_restart_and_the_cli_changes_them_under_a_running_serve() {
    let mut op = Operator::start(POLICY, Some(TOKEN)).await;
    let uac = Udp::new().await;
    let (code, _) = op
        .post_json(
            "/api/v1/lists/deny",
            json!({"pattern": "+1777*", "comment": "range", "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(code, 201);
    op.restart().await;
    let (_, deny) = op.get("/api/v1/lists/deny").await;
    assert!(
        deny.contains("\"+1777*\"") && deny.contains("2099-01-01T00:00:00Z"),
        "{deny}"
    );
    assert_eq!(op.call(&uac, "r1", "<sip:+17770001111@c>").await.0, 607);

    // The CLI, beside the running serve: in force within a second.
    let out = op.cli(&[
        "lists",
        "add",
        "deny",
        "+18880001111",
        "--comment",
        "from the cli",
        "--expires",
        "30d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    loop {
        n += 1;
        if op
            .call(&uac, &format!("c{n}"), "<sip:+18880001111@c>")
            .await
            .0
            == 607
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CLI's entry never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = op.cli(&["check", "+18880001111", "--json"]);
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        check["rule"], "denylist",
        "`check` screens with the runtime lists"
    );
    let out = op.cli(&["lists", "show", "deny", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_entry = shown
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pattern"] == "+18880001111")
        .unwrap()
        .clone();
    assert!(cli_entry["added_by"].as_str().unwrap().starts_with("cli"));
    assert_eq!(cli_entry["comment"], "from the cli");
    let out = op.cli(&["lists", "rm", "deny", "+18880001111"]);
    assert!(out.status.success());
    let out = op.cli(&["lists", "rm", "deny", "+18880001111"]);
    assert_eq!(out.status.code(), Some(2), "removing what is not there");
    let out = op.cli(&["lists", "add", "deny", "18880001111"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pattern"));

    // `report` and `reports` on the same store.
    let out = op.cli(&[
        "report",
        "+19990001111",
        "spam",
        "--note",
        "=cmd|' /C calc'!A0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = op.cli(&["reports", "--format", "csv"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.contains("+19990001111,spam,,'=cmd"),
        "the note is neutralised: {csv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_calls_row_gets_the_pbxs_final_response_and_its_time() {
    let op = Operator::start(POLICY, Some(TOKEN)).await;
    let uac = Udp::new().await;
    op.call(&uac, "f1", "<sip:+15552223333@c>").await;
    let row = op.row("f1", true).await;
    assert_eq!(row["final_code"], 486);
    assert!(
        row["final_ms"].as_u64().unwrap() >= 25,
        "the PBX waits 30 ms: {row}"
    );
    assert!(
        row["response_code"].is_null(),
        "sipsentry sent no final response itself"
    );
    let out = op.cli(&["history", "--number", "+15552223333"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(" 486 "),
        "shown in history"
    );
}

/// Reads one SSE event (`event:` and `data:` lines) from a streaming body.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String) -> (String, serde_json::Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().into();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !event.is_empty() {
                return (event, serde_json::from_str(&data).unwrap());
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_stream_each_decision_and_its_final_response_to_a_bounded_number_of_clients() {
    // Appended under [admin].
    let op = Operator::start(&format!("event_clients = 2\n{POLICY}"), Some(TOKEN)).await;
    let url = format!("{}/api/v1/events", op.admin);
    let r = op.http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "the stream needs the token too");
    let mut a = op.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(a.status().as_u16(), 200);
    assert!(
        a.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let b = op.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(b.status().as_u16(), 200);
    let c = op.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(c.status().as_u16(), 503, "a third client is one too many");
    drop(b);

    let uac = Udp::new().await;
    op.call(&uac, "e1", "\"<b>Bold</b>\" <sip:+15553334444@c>")
        .await;
    let mut buf = String::new();
    let (event, row) = next_event(&mut a, &mut buf).await;
    assert_eq!(event, "decision");
    assert_eq!(row["caller_e164"], "+15553334444");
    assert_eq!(row["display"], "<b>Bold</b>", "the row as recorded");
    let (event, fin) = next_event(&mut a, &mut buf).await;
    assert_eq!(event, "final");
    assert_eq!(
        (fin["decision_id"].clone(), fin["final_code"].clone()),
        (row["decision_id"].clone(), json!(486))
    );
    // The slot of the client that went is given back once the stream
    // notices (its next write fails): events keep coming until it does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    loop {
        let d = op.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        if d.status().as_u16() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never given back"
        );
        n += 1;
        op.call(&uac, &format!("e-more{n}"), "<sip:+15553334445@c>")
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_needs_a_login_and_refuses_cross_site_and_tokenless_changes() {
    let op = Operator::start(POLICY, Some(TOKEN)).await;
    let page = |path: &'static str| op.http.get(format!("{}{path}", op.admin)).send();
    for path in ["/", "/live", "/history", "/lists"] {
        let r = page(path).await.unwrap();
        assert_eq!(r.status().as_u16(), 303, "{path} without a session");
        assert_eq!(r.headers()["location"], "/login");
    }
    let r = op
        .http
        .post(format!("{}/login", op.admin))
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    let (cookie, csrf) = op.login().await;
    let get = |path: String| {
        op.http
            .get(format!("{}{path}", op.admin))
            .header("cookie", &cookie)
            .send()
    };
    for path in [
        "/",
        "/live",
        "/history",
        "/lists",
        "/assets/live.js",
        "/assets/console.css",
    ] {
        let r = get(path.to_string()).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = get("/".into()).await.unwrap();
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    // The API takes the session for reads; a change needs the CSRF header.
    assert_eq!(
        get("/api/v1/lists/deny".into())
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let post = |csrf: Option<&str>, origin: Option<&str>| {
        let mut r = op
            .http
            .post(format!("{}/api/v1/lists/deny", op.admin))
            .header("cookie", &cookie)
            .json(&json!({"pattern": "+15554445555"}));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(post(None, None).await.unwrap().status().as_u16(), 403);
    assert_eq!(
        post(Some("forged"), None).await.unwrap().status().as_u16(),
        403
    );
    assert_eq!(
        post(Some(&csrf), Some("http://evil.example"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    assert_eq!(
        post(Some(&csrf), None).await.unwrap().status().as_u16(),
        201
    );

    // The console's forms: CSRF field required, origin checked.
    let form = |csrf: &str, origin: Option<&str>| {
        let mut r = op
            .http
            .post(format!("{}/action/list-add", op.admin))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf),
                ("list", "allow"),
                ("pattern", "+15556667777"),
                ("comment", "customer"),
                ("back", "/lists"),
            ]);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    assert_eq!(form("", None).await.unwrap().status().as_u16(), 403);
    assert_eq!(
        form(&csrf, Some("https://evil.example"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    let ok = form(&csrf, None).await.unwrap();
    assert_eq!(ok.status().as_u16(), 303);
    assert!(
        ok.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/lists?done=")
    );
    let lists = get("/lists".into()).await.unwrap().text().await.unwrap();
    assert!(lists.contains("+15556667777") && lists.contains("customer"));
    // A form with a bad pattern says which field.
    let bad = op
        .http
        .post(format!("{}/action/list-add", op.admin))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("list", "deny"),
            ("pattern", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("pattern"));
    // A redirect elsewhere is never followed from `back`.
    let away = op
        .http
        .post(format!("{}/action/list-remove", op.admin))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("list", "allow"),
            ("pattern", "+15556667777"),
            ("back", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        away.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/?done=")
    );

    // A report from a call's detail page, kept with that call.
    let uac = Udp::new().await;
    op.call(&uac, "form1", "<sip:+15551110000@c>").await;
    let row = op.row("form1", false).await;
    let id = row["decision_id"].as_str().unwrap().to_string();
    let back = format!("/history/{id}");
    let reported = op
        .http
        .post(format!("{}/action/report", op.admin))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("number", "+15551110000"),
            ("verdict", "spam"),
            ("decision_id", id.as_str()),
            ("note", "<b>pushy</b>"),
            ("back", back.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reported.status().as_u16(), 303);
    let detail = get(reported.headers()["location"].to_str().unwrap().to_string())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(detail.contains("reported as spam"), "{detail}");
    assert!(
        detail.contains("&lt;b&gt;pushy&lt;/b&gt;"),
        "the note, escaped, with its call"
    );
    let (_, reports) = op.get("/api/v1/feedback").await;
    let reports: serde_json::Value = serde_json::from_str(&reports).unwrap();
    assert_eq!(reports[0]["decision_id"], id.as_str(), "{reports}");
    assert_eq!(reports[0]["reported_by"], "console");

    // Logging out ends the session.
    let r = op
        .http
        .post(format!("{}/logout", op.admin))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(get("/lists".into()).await.unwrap().status().as_u16(), 303);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_display_names_render_as_text_in_history_and_detail() {
    let op = Operator::start(POLICY, None).await;
    let uac = Udp::new().await;
    op.call(
        &uac,
        "x1",
        "\"<script>alert(1)</script>\" <sip:+15559990000@c>",
    )
    .await;
    let row = op.row("x1", true).await;
    // Open on loopback without a token: a session comes with the first page.
    let r = op
        .http
        .get(format!("{}/history", op.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
    let page = r.text().await.unwrap();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let detail = op
        .http
        .get(format!(
            "{}/history/{}",
            op.admin,
            row["decision_id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!detail.contains("<script>alert"));
    assert!(
        detail.contains("486 after"),
        "the PBX's answer is on the detail"
    );
    let (code, csv) = op.get("/api/v1/history/export?format=csv").await;
    assert_eq!(code, 200);
    assert!(
        csv.contains("<script>alert(1)</script>"),
        "CSV keeps the text, as text"
    );
    // Open mode: a change without the page's CSRF token is still refused.
    let r = op
        .http
        .post(format!("{}/action/list-add", op.admin))
        .form(&[("list", "deny"), ("pattern", "+15559990000")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
}
