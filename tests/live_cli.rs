//! `sipsentry check` with live providers, black box: the real binary against
//! the provider fakes, credentials from environment variables.

mod common;

use common::fakes::{self, DC_TOKEN, GL_KEY, GL_SECRET, HS_KEY};
use serde_json::json;

#[path = "common/binary.rs"]
mod binary;

fn write_config(dir: &std::path::Path, dc: &str, gl: &str, hs: &str) {
    let cfg = format!(
        "[numbers]\ndefault_country = \"FR\"\n[hiya_cache]\nenabled = false\n\
         [providers.didchecks]\nenabled = true\nbase_url = \"{dc}\"\ntoken_env = \"T_DC\"\n\
         [providers.gilraen]\nenabled = true\nbase_url = \"{gl}\"\nkey_env = \"T_GL_KEY\"\nsecret_env = \"T_GL_SECRET\"\n\
         [providers.hiya_status]\nenabled = true\nbase_url = \"{hs}\"\npath = \"/status/{{phone}}\"\n\
         api_key_env = \"T_HS\"\nauth_header = \"X-Api-Key\"\nauth_scheme = \"\"\n"
    );
    std::fs::write(dir.join("sipsentry.toml"), cfg).unwrap();
}

async fn run(dir: &std::path::Path, args: &[&str], creds: bool) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(binary::BIN);
    cmd.args(args).current_dir(dir);
    if creds {
        cmd.env("T_DC", DC_TOKEN)
            .env("T_GL_KEY", GL_KEY)
            .env("T_GL_SECRET", GL_SECRET)
            .env("T_HS", HS_KEY);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_json_shows_each_providers_raw_answer_score_and_latency() {
    let (dc, gl, hs) = (
        fakes::didchecks().await,
        fakes::gilraen().await,
        fakes::hiya_status().await,
    );
    dc.state.answer(
        "+33612345678",
        fakes::dc_data("+33612345678", 85, "Telemarketing"),
    );
    gl.state.answer(
        "33612345678",
        json!({"index": 2.5, "is_unwanted": false, "bans": 12}),
    );
    hs.state.answer(
        "+33612345678",
        json!({"status": "mixed_low", "reportCard": {"maturity": "good"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &dc.base, &gl.base, &hs.base);

    let (code, stdout, stderr) =
        run(dir.path(), &["check", "06 12 34 56 78", "--json"], true).await;
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["e164"], "+33612345678");
    assert_eq!(
        (
            v["score"].as_u64(),
            v["action"].as_str(),
            v["rule"].as_str()
        ),
        (Some(85), Some("tag"), Some("threshold"))
    );
    let ev = v["evidence"].as_array().unwrap();
    let by = |s: &str| {
        ev.iter()
            .find(|e| e["source"] == s)
            .unwrap_or_else(|| panic!("{s} in {v}"))
    };
    assert_eq!(by("didchecks")["score"], 85);
    assert_eq!(
        by("didchecks")["raw"]["data"]["truecaller"]["numReports"],
        150
    );
    assert_eq!(by("gilraen")["score"], 50);
    assert_eq!(by("gilraen")["raw"]["bans"], 12);
    assert_eq!(by("hiya-status")["score"], 30);
    assert_eq!(by("hiya-status")["raw"]["reportCard"]["maturity"], "good");
    for e in ev {
        assert_eq!(e["cached"], false);
        assert!(e["latency_us"].as_u64().unwrap() > 0);
    }
    assert_eq!(v["lookups"].as_array().unwrap().len(), 3);

    // The readable form names each source and the decision.
    let (_, human, _) = run(dir.path(), &["check", "+33612345678"], true).await;
    for s in [
        "didchecks",
        "gilraen",
        "hiya-status",
        "decision tag (rule: threshold, score 85)",
    ] {
        assert!(human.contains(s), "{s} missing from:\n{human}");
    }

    // A broken provider does not fail the check: its error is shown.
    dc.state.set_mode(fakes::Mode::Error(402));
    let (code, stdout, _) = run(dir.path(), &["check", "+33612345678", "--json"], true).await;
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let dc_lookup = v["lookups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["source"] == "didchecks")
        .unwrap();
    assert_eq!(dc_lookup["outcome"], "error");
    assert!(
        dc_lookup["error"]
            .as_str()
            .unwrap()
            .contains("out of credit")
    );
    assert_eq!(v["score"], 50, "the other providers still answered");

    // Missing credentials for an enabled provider: a config error naming the variable.
    let (code, _, stderr) = run(dir.path(), &["check", "+33612345678"], false).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("T_DC"), "{stderr}");
}

#[tokio::test]
async fn check_own_reports_status_and_report_card() {
    let (dc, gl, hs) = (
        fakes::didchecks().await,
        fakes::gilraen().await,
        fakes::hiya_status().await,
    );
    hs.state.answer(
        "+33612345678",
        json!({"phoneNumber": "+33612345678", "status": "mixed_high",
               "reportCard": {"maturity": "good", "desirability": null, "engagement": "poor", "reaction": "normal"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &dc.base, &gl.base, &hs.base);
    let (code, out, err) = run(dir.path(), &["check", "--own", "+33612345678"], true).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mixed_high (score 70)"), "{out}");
    assert!(out.contains("desirability  not yet graded"), "{out}");
    assert!(out.contains("engagement    poor"), "{out}");
    let (_, json_out, _) = run(
        dir.path(),
        &["check", "--own", "+33612345678", "--json"],
        true,
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["reputation"]["status"], "mixed_high");
    assert_eq!(v["evidence"]["score"], 70);
    let (_, out, _) = run(dir.path(), &["check", "--own", "+33699999999"], true).await;
    assert!(out.contains("not registered"), "{out}");
    assert_eq!(dc.state.count("/"), 0, "--own asks only Hiya");
    assert_eq!(gl.state.count("/"), 0);
}

#[tokio::test]
async fn bulk_audits_a_list_with_the_didchecks_bulk_endpoint() {
    let dc = fakes::didchecks().await;
    let numbers: Vec<String> = (0..150).map(|i| format!("+336{i:08}")).collect();
    for (i, n) in numbers.iter().enumerate() {
        // Every third number is unknown to DIDChecks.
        if i % 3 != 0 {
            dc.state.answer(
                n,
                fakes::dc_data(n, if i % 2 == 0 { 95 } else { 20 }, "Scam"),
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[numbers]\ndefault_country = \"FR\"\n[hiya_cache]\nenabled = false\n\
             [providers.didchecks]\nenabled = true\nbase_url = \"{}\"\ntoken_env = \"T_DC\"\n",
            dc.base
        ),
    )
    .unwrap();
    let mut list = String::from("# numbers to audit\n\n");
    for n in &numbers {
        list.push_str(&format!("{n},some note\n"));
    }
    list.push_str("not-a-number\n");
    std::fs::write(dir.path().join("numbers.txt"), list).unwrap();

    let (code, out, err) = run(dir.path(), &["bulk", "numbers.txt"], true).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        dc.state.count("/check/bulk"),
        2,
        "150 numbers = 2 bulk requests"
    );
    assert_eq!(dc.state.count("/check/+"), 0, "no per-number requests");
    let mut rdr = csv::Reader::from_reader(out.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 151);
    assert_eq!(
        (&rows[2][0], &rows[2][2], &rows[2][4]),
        ("+33600000002", "reject", "95")
    );
    assert_eq!((&rows[1][2], &rows[1][4]), ("pass", "20"));
    assert_eq!((&rows[0][2], &rows[0][4]), ("pass", "0"), "no data: pass");
    assert_eq!(&rows[150][7], "not a phone number");

    let (_, json, _) = run(
        dir.path(),
        &["bulk", "numbers.txt", "--format", "json"],
        true,
    )
    .await;
    let v: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(v.len(), 151);
    assert_eq!(v[2]["action"], "reject");
    assert_eq!(v[2]["sources"], "didchecks");
}
