//! The admin API and metrics, black box against the real binary: bearer
//! auth, history paging and export, check, metrics parsed with a Prometheus
//! parser and matched to the calls made, reload (API and SIGHUP) that refuses
//! a bad file and keeps the policy in force.

mod common;

#[path = "common/binary.rs"]
mod binary;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Udp, invite, status};

const TOKEN: &str = "admin-secret-token";

fn config_text(sip_port: u16, admin_port: u16, uas: SocketAddr, deny: &str) -> String {
    format!(
        "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\nnext_hop = \"sip:{uas}\"\n\
         [policy]\ndeny = [{deny}]\nreject_code = 607\n\
         [hiya_cache]\nenabled = false\n[history]\npath = \"h.db\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken_env = \"TEST_ADMIN_TOKEN\"\n"
    )
}

struct Running {
    dir: tempfile::TempDir,
    serve: binary::Serve,
    sip: SocketAddr,
    sip_port: u16,
    admin_port: u16,
    uas: SocketAddr,
    admin: String,
    http: reqwest::Client,
}

async fn start() -> Running {
    let uas = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sip_port = binary::free_port();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        config_text(sip_port, admin_port, uas, "\"+1666*\""),
    )
    .unwrap();
    let sip: SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let child = std::process::Command::new(binary::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("TEST_ADMIN_TOKEN", TOKEN)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let serve = binary::Serve { child };
    tokio::task::spawn_blocking(move || binary::wait_until_answering(sip))
        .await
        .unwrap();
    Running {
        dir,
        serve,
        sip,
        sip_port,
        admin_port,
        uas,
        admin: format!("http://127.0.0.1:{admin_port}"),
        http: reqwest::Client::new(),
    }
}

impl Running {
    /// Calls from `from`; the final response code, or 0 when the INVITE was relayed.
    async fn call(&self, uac: &Udp, n: u32, from: &str) -> u16 {
        let inv = invite(
            uac.addr,
            "UDP",
            &format!("z9hG4bKapi{n}"),
            &format!("<sip:{from}@x>"),
            "",
        );
        uac.send(self.sip, &inv).await;
        // Earlier rejects are retransmitted until ACKed: only this call's
        // messages count.
        let call_id = format!("z9hG4bKapi{n}@test");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(400);
        let mut code = 0;
        while let Some((m, _)) = uac
            .recv_within(deadline - tokio::time::Instant::now())
            .await
        {
            if m.contains(&call_id) && status(&m) >= 200 {
                code = status(&m);
                break;
            }
        }
        code
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn write_config(&self, deny: &str) {
        std::fs::write(
            self.dir.path().join("sipsentry.toml"),
            config_text(self.sip_port, self.admin_port, self.uas, deny),
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_requires_the_token_pages_history_exports_and_reports_metrics() {
    let r = start().await;
    let uac = Udp::new().await;
    // 5 denied callers (607) and 3 clean ones (relayed).
    for i in 0..5 {
        assert_eq!(r.call(&uac, i, &format!("+1666555010{i}")).await, 607);
    }
    for i in 5..8 {
        assert_eq!(r.call(&uac, i, &format!("+1555555010{i}")).await, 0);
    }

    // Auth: none, wrong, right.
    let (code, body) = r.get("/api/v1/history", None).await;
    assert_eq!(code, 401);
    assert!(body.contains("TEST_ADMIN_TOKEN"), "{body}");
    assert_eq!(r.get("/api/v1/history", Some("wrong")).await.0, 401);
    assert_eq!(r.get("/healthz", None).await.0, 200);
    // The scheme is case-insensitive (RFC 6750); a prefix of the token is
    // not the token.
    for (value, want) in [
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER {TOKEN}"), 200),
        (format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]), 401),
        (format!("Basic {TOKEN}"), 401),
    ] {
        let got = r
            .http
            .get(format!("{}/api/v1/cache", r.admin))
            .header("Authorization", &value)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(got, want, "{value}");
    }

    // History rows arrive through the background writer.
    let mut total = 0;
    for _ in 0..50 {
        let (code, body) = r.get("/api/v1/history?limit=3", Some(TOKEN)).await;
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        total = v["total"].as_u64().unwrap();
        if total == 8 {
            assert_eq!(
                (v["pages"].as_u64(), v["rows"].as_array().unwrap().len()),
                (Some(3), 3)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total, 8);
    let (_, body) = r
        .get("/api/v1/history?limit=3&page=2&action=reject", Some(TOKEN))
        .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["total"].as_u64(), v["rows"].as_array().unwrap().len()),
        (Some(5), 2)
    );
    assert_eq!(v["rows"][0]["response_code"], 607);
    let (code, body) = r.get("/api/v1/history?limit=101", Some(TOKEN)).await;
    assert_eq!(code, 400);
    assert!(body.contains("1–100"), "{body}");
    let (code, body) = r.get("/api/v1/history?action=maybe", Some(TOKEN)).await;
    assert_eq!(code, 400);
    assert!(body.contains("pass, tag, divert, reject"), "{body}");

    // Export: CSV and JSON of the same range parse back to the same rows.
    let (code, json) = r
        .get(
            "/api/v1/history/export?format=json&from=2020-01-01",
            Some(TOKEN),
        )
        .await;
    assert_eq!(code, 200);
    let json: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let (_, csv_text) = r
        .get("/api/v1/history/export?format=csv", Some(TOKEN))
        .await;
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let header = rdr.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!((json.len(), rows.len()), (8, 8));
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    for (j, c) in json.iter().zip(&rows) {
        assert_eq!(j["decision_id"], c[col("decision_id")]);
        assert_eq!(j["action"], c[col("action")]);
        assert_eq!(j["caller_e164"], c[col("caller_e164")]);
        assert_eq!(
            j["evidence"],
            serde_json::from_str::<serde_json::Value>(&c[col("evidence")]).unwrap()
        );
    }

    // Check through the running pipeline.
    let (code, body) = r.get("/api/v1/check/+16665550199", Some(TOKEN)).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["rule"].as_str()),
        (Some("reject"), Some("denylist"))
    );

    // Metrics, parsed by a Prometheus text parser, match the calls.
    let (code, text) = r.get("/metrics", None).await;
    assert_eq!(code, 200);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} missing from\n{text}"))
    };
    assert_eq!(
        value(
            "sipsentry_calls_total",
            &[("action", "reject"), ("rule", "denylist")]
        ),
        5.0
    );
    assert_eq!(
        value(
            "sipsentry_calls_total",
            &[("action", "pass"), ("rule", "threshold")]
        ),
        3.0
    );
    assert!(value("sipsentry_sip_requests_total", &[("method", "INVITE")]) >= 8.0);
    // Every call is remembered for 64×T1; none was refused for room.
    assert_eq!(value("sipsentry_sip_transactions", &[]), 8.0);
    assert_eq!(value("sipsentry_sip_refused_full_total", &[]), 0.0);
    assert_eq!(
        value("sipsentry_sip_retransmissions_absorbed_total", &[]),
        0.0
    );
    assert_eq!(value("sipsentry_sip_dropped_total", &[]), 0.0);
    assert_eq!(value("sipsentry_sip_timer_c_total", &[]), 0.0);
    assert_eq!(value("sipsentry_history_written_total", &[]), 8.0);
    assert_eq!(value("sipsentry_history_dropped_total", &[]), 0.0);
    assert_eq!(value("sipsentry_history_write_errors_total", &[]), 0.0);
    assert_eq!(value("sipsentry_history_pruned_total", &[]), 0.0);
    assert!(text.contains("sipsentry_decision_seconds_bucket"), "{text}");

    // Reload: a new deny entry applies to the next call...
    r.write_config("\"+1666*\", \"+1777*\"");
    let (code, body) = r.post("/api/v1/reload").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(r.call(&uac, 100, "+17775550100").await, 607);
    // ...a bad file is refused and the policy in force stays...
    std::fs::write(
        r.dir.path().join("sipsentry.toml"),
        "[policy]\nreject_code = 404\n",
    )
    .unwrap();
    let (code, body) = r.post("/api/v1/reload").await;
    assert_eq!(code, 400);
    assert!(
        body.contains("policy.reject_code") && body.contains("unchanged"),
        "{body}"
    );
    assert_eq!(r.call(&uac, 101, "+17775550101").await, 607);
    // ...and SIGHUP does the same as the API.
    r.write_config("\"+1666*\"");
    let pid = r.serve.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let mut relayed = false;
    for i in 0..40 {
        if r.call(&uac, 200 + i, &format!("+1777555{i:04}")).await == 0 {
            relayed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relayed, "after SIGHUP +1777 is no longer denied");
}

#[test]
fn an_admin_api_on_the_network_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = binary::free_port();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{port}\"\n[hiya_cache]\nenabled = false\n[history]\npath = \"h.db\"\n\
             [admin]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"TEST_UNSET_ADMIN_TOKEN\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(binary::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TEST_UNSET_ADMIN_TOKEN") && err.contains("admin.listen"),
        "{err}"
    );
}
