//! The decision history: a row for every screened INVITE (right action, code
//! and evidence), no record lost on a graceful shutdown under load, exports
//! that parse back, overflow counted, retention pruning.

mod common;

#[path = "common/binary.rs"]
mod binary;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sipsentry::history::query::{self, Filter};
use sipsentry::history::{HistoryWriter, Record, now_ms, open_read};

const SPAMMER: &str = "\"ACME\" <sip:+15557654321@carrier.example;user=phone>";
const DENIED: &str = "<sip:+16665550100@carrier.example;user=phone>";
const CLEAN: &str = "<sip:+15550001111@carrier.example;user=phone>";

#[tokio::test]
async fn every_screened_invite_gets_a_row_with_its_action_code_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let writer = HistoryWriter::start(&db, 90).unwrap();
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let cfg = config(
        uas.addr,
        "trying_delay_ms = 0\n[policy]\ntag_at = 50\ndeny = [\"+1666*\"]\nreject_code = 607\n",
    );
    let sink = writer.sink();
    let proxy = start(cfg, |p| {
        p.with_local(Arc::new(StaticScores(vec![(
            "+15557654321",
            85,
            "Telemarketer",
        )])))
        .with_history(sink)
    })
    .await;
    for (i, from) in [CLEAN, SPAMMER, DENIED].iter().enumerate() {
        uac.send(
            proxy.addr,
            &invite(uac.addr, "UDP", &format!("z9hG4bKh{i}"), from, ""),
        )
        .await;
        assert_eq!(status(&uac.recv().await), 100);
    }
    assert_eq!(status(&uac.recv_starting("SIP/2.0 607").await), 607);
    proxy.stop().await;
    tokio::task::spawn_blocking(move || writer.close())
        .await
        .unwrap();

    let mut conn = sipsentry::history::Reader::Sqlite(open_read(&db).unwrap());
    let mut rows = query::page(&mut conn, &Filter::default(), 1, 10).unwrap();
    rows.reverse();
    assert_eq!(rows.len(), 3);
    let want = [
        ("+15550001111", "pass", "threshold", None, 0),
        ("+15557654321", "tag", "threshold", None, 85),
        ("+16665550100", "reject", "denylist", Some(607), 100),
    ];
    for (r, (caller, action, rule, code, score)) in rows.iter().zip(want) {
        assert_eq!(
            (
                r.caller_e164.as_deref(),
                r.action.as_str(),
                r.rule.as_str(),
                r.response_code,
                r.score
            ),
            (Some(caller), action, rule, code, score)
        );
        assert_eq!(r.trust, "from");
        assert_eq!(r.called, "+15551234567");
        assert!(r.call_id.starts_with("z9hG4bKh"));
        assert!(r.source.starts_with("127.0.0.1:"));
        assert!(r.time_ms > now_ms() - 60_000);
    }
    assert_eq!(rows[1].category.as_deref(), Some("Telemarketer"));
    assert_eq!(rows[1].evidence[0]["source"], "hiya-cache");
    assert_eq!(rows[2].evidence[0]["raw"]["entry"], "+1666*");
    // Filters: by caller, by action, by time.
    let mut by = |f: Filter| query::count(&mut conn, &f).unwrap();
    assert_eq!(
        by(Filter {
            number: Some("+15557654321".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        by(Filter {
            action: Some("reject".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        by(Filter {
            from_ms: Some(now_ms() + 1000),
            ..Default::default()
        }),
        0
    );
}

fn record(i: u64, time_ms: i64) -> Record {
    Record {
        decision_id: format!("d{i}"),
        time_ms,
        call_id: format!("c{i}@x"),
        source: ([127, 0, 0, 1], 5060).into(),
        caller: format!("+1555{i:07}"),
        caller_e164: Some(format!("+1555{i:07}")),
        called: "+15551234567".into(),
        trust: "from",
        action: if i.is_multiple_of(2) {
            "pass"
        } else {
            "reject"
        },
        rule: "threshold",
        response_code: (i % 2 == 1).then_some(603),
        score: (i % 100) as u8,
        category: Some("Scam, \"quoted\"".into()),
        evidence: vec![],
        decision_us: i,
        dry_run: false,
        display: None,
        verstat: None,
        attest: None,
    }
}

#[test]
fn a_full_queue_counts_every_dropped_record_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let writer = HistoryWriter::with_capacity(&db, 0, 4).unwrap();
    let sink = writer.sink();
    for i in 0..20_000 {
        sink.record(record(i, now_ms()));
    }
    let stats = Arc::clone(&sink.stats);
    writer.close();
    let written = stats.written.load(std::sync::atomic::Ordering::Relaxed);
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 0, "a 4-record queue must overflow");
    assert_eq!(written + dropped, 20_000);
    let mut conn = sipsentry::history::Reader::Sqlite(open_read(&db).unwrap());
    assert_eq!(
        query::count(&mut conn, &Filter::default()).unwrap(),
        written
    );
}

#[test]
fn rows_older_than_the_retention_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let writer = HistoryWriter::start(&db, 0).unwrap();
    let day = 86_400_000;
    for i in 0..30 {
        // Ages 5, 15, ... 295 days.
        sink_record(&writer, record(i, now_ms() - (i as i64 * 10 + 5) * day));
    }
    writer.close();
    // Starting with a 90-day retention prunes at once.
    HistoryWriter::start(&db, 90).unwrap().close();
    let mut conn = sipsentry::history::Reader::Sqlite(open_read(&db).unwrap());
    assert_eq!(
        query::count(&mut conn, &Filter::default()).unwrap(),
        9,
        "5..85 days kept"
    );
}

#[test]
fn a_record_after_a_quiet_spell_is_written_without_waiting_for_close() {
    // After a second without records the writer blocks instead of waking
    // every 20 ms; the next record must wake it.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let writer = HistoryWriter::start(&db, 90).unwrap();
    let stats = Arc::clone(&writer.sink().stats);
    let written = || stats.written.load(std::sync::atomic::Ordering::Relaxed);
    for round in 1..=2 {
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        sink_record(&writer, record(round, now_ms()));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while written() < round && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(written(), round, "written while the writer still runs");
    }
    writer.close();
}

fn sink_record(w: &HistoryWriter, r: Record) {
    w.sink().record(r);
}

/// The real binary: SIGTERM while calls pour in; every screened INVITE has a
/// row. Then `history` exports CSV and JSON that parse back to the same rows.
#[test]
fn graceful_shutdown_under_load_loses_no_record_and_exports_parse_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = binary::free_port();
    let uas = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{port}\"\nnext_hop = \"sip:{}\"\n[policy]\ndeny = [\"+1666*\"]\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[hiya_cache]\nenabled = false\n[history]\npath = \"h.db\"\n",
            uas.local_addr().unwrap()
        ),
    )
    .unwrap();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let serve = binary::Serve::start(dir.path(), &[], listen);
    let uac = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = uac.local_addr().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let from = if i.is_multiple_of(3) {
                    "<sip:+16665550100@x>"
                } else {
                    "<sip:+15550001111@x>"
                };
                let _ = uac.send_to(
                    invite(me, "UDP", &format!("z9hG4bKload{i}"), from, "").as_bytes(),
                    listen,
                );
                i += 1;
                if i.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let pid = serve.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let (status, stderr) = serve.wait_with_stderr();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(status.success(), "serve exit {status:?}");
    let screened: u64 = stderr
        .split("screened=")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no screened count in:\n{stderr}"));
    let mut conn = sipsentry::history::Reader::Sqlite(open_read(&dir.path().join("h.db")).unwrap());
    let rows = query::count(&mut conn, &Filter::default()).unwrap();
    assert!(
        screened >= 500,
        "under load: {screened} screened of {sent} sent"
    );
    assert_eq!(rows, screened, "one row per screened INVITE");

    // Exports: CSV and JSON of the same range parse back to the same rows.
    let run = |fmt: &str| {
        let o = std::process::Command::new(binary::BIN)
            .args(["history", "--format", fmt, "--action", "reject"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let json: Vec<serde_json::Value> = serde_json::from_slice(&run("json")).unwrap();
    let csv_bytes = run("csv");
    let mut csv = csv::Reader::from_reader(&csv_bytes[..]);
    let csv_rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    let rejects = query::count(
        &mut conn,
        &Filter {
            action: Some("reject".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rejects > 0);
    assert_eq!(
        (json.len() as u64, csv_rows.len() as u64),
        (rejects, rejects)
    );
    let header = csv.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (j, c) in json.iter().zip(&csv_rows) {
        assert_eq!(j["id"].as_i64().unwrap().to_string(), c[col("id")]);
        assert_eq!(j["call_id"], c[col("call_id")]);
        assert_eq!(
            j["response_code"].as_u64().unwrap().to_string(),
            c[col("response_code")]
        );
        assert_eq!(j["time"], c[col("time")]);
        let ev: serde_json::Value = serde_json::from_str(&c[col("evidence")]).unwrap();
        assert_eq!(j["evidence"], ev);
    }
    let table = String::from_utf8(run("table")).unwrap();
    assert!(
        table.lines().count() > 1 && table.contains("denylist"),
        "{table}"
    );
}
