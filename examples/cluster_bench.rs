//! What the cluster's shared state costs, against real servers started by
//! `bench/cluster.sh`: the latency of a shared answer in Redis after a
//! live-cache miss (p50, p99, p99.9 over many lookups), and the rate at
//! which the PostgreSQL history writer stores records.
//!
//!   cargo run --release --example cluster_bench -- REDIS_URL POSTGRES_URL

use std::sync::Arc;
use std::time::{Duration, Instant};

use sipsentry::cluster::RedisTier;
use sipsentry::history::{HistoryWriter, PgOptions, PgTarget, Record};
use sipsentry::reputation::shared::{Claim, SharedTier};
use sipsentry::reputation::{Evidence, Source};

const LOOKUPS: u64 = 20_000;
const RECORDS: u64 = 200_000;

fn evidence() -> Evidence {
    Evidence {
        source: Source::DidChecks,
        score: 85,
        category: Some("Telemarketing".into()),
        cached: false,
        latency_us: 0,
        raw: serde_json::json!({"huhu": {"isSpam": true, "spamScore": 85, "spamType": "Telemarketing",
            "numberType": "MOBILE", "countryCode": "FR", "carrier": "Orange"},
            "hiya": {"reputationLevel": "negative"},
            "truecaller": {"spamScore": 7, "spamType": "sales", "numReports": 150}})
        .into(),
    }
}

fn record(i: u64, t: i64) -> Record {
    Record {
        decision_id: format!("{t:x}{:04x}", i & 0xffff),
        time_ms: t,
        call_id: format!("{i}-a84b4c76e66710@pbx.example"),
        source: ([203, 0, 113, 7], 5060).into(),
        caller: format!("+1555{:07}", i % 10_000_000),
        caller_e164: Some(format!("+1555{:07}", i % 10_000_000)),
        called: "+15551234567".into(),
        trust: "pai",
        action: ["pass", "tag", "reject"][(i % 3) as usize],
        rule: "threshold",
        response_code: (i % 3 == 2).then_some(603),
        score: (i % 100) as u8,
        category: Some("Telemarketer".into()),
        evidence: vec![evidence()],
        decision_us: 3,
        dry_run: false,
        display: Some("ACME Sales".into()),
        verstat: None,
        attest: None,
    }
}

fn redis_hits(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tier = Arc::new(
            RedisTier::open(url, None, "bench", Duration::from_millis(100), None).unwrap(),
        );
        let ev = evidence();
        for i in 0..1000u64 {
            let n = format!("+3361{i:07}");
            tier.publish("didchecks", &n, Some(&ev), Duration::from_secs(600), false)
                .await;
        }
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for i in 0..LOOKUPS {
            let n = format!("+3361{:07}", i % 1000);
            let t = Instant::now();
            let c = tier
                .fetch_or_claim("didchecks", &n, Duration::from_secs(1))
                .await;
            h.record(t.elapsed().as_micros() as u64).unwrap();
            assert!(matches!(c, Claim::Answer(Some(_))), "{c:?}");
        }
        println!(
            "redis shared hit (fetch, decode): p50 {} µs, p99 {} µs, p99.9 {} µs over {LOOKUPS}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    });
}

fn pg_writer(url: &str, spool: &std::path::Path) {
    let password = std::env::var("SIPSENTRY_PG_PASSWORD").ok();
    let options = PgOptions {
        target: PgTarget::new(url, password.as_deref(), None).unwrap(),
        node_id: format!("bench-{}", std::process::id()),
        spool_path: spool.to_path_buf(),
        spool_max_bytes: 1 << 30,
    };
    let writer = HistoryWriter::postgres(options, 0, 1 << 20, Duration::from_millis(20)).unwrap();
    let sink = writer.sink();
    let t0 = sipsentry::history::now_ms();
    let started = Instant::now();
    for i in 0..RECORDS {
        sink.record(record(i, t0 + (i / 1000) as i64));
    }
    let queued = started.elapsed();
    let stats = Arc::clone(&sink.stats);
    while stats.written.load(std::sync::atomic::Ordering::Relaxed) < RECORDS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "writer stalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    writer.close();
    println!(
        "postgres writer: {RECORDS} records in {:.2} s = {:.0} records/s (queued in {:.2} s; dropped {}, spooled {})",
        took.as_secs_f64(),
        RECORDS as f64 / took.as_secs_f64(),
        queued.as_secs_f64(),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
        stats.spooled.load(std::sync::atomic::Ordering::Relaxed),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(redis), Some(pg)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: cluster_bench REDIS_URL POSTGRES_URL");
        std::process::exit(2);
    };
    redis_hits(redis);
    let dir = tempfile::tempdir().unwrap();
    pg_writer(pg, &dir.path().join("spool"));
}
