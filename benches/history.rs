//! History: writer throughput (target ≥ 50,000 records/s) and the query for
//! one caller over 10 million rows (target ≤ 50 ms).
//!
//! `cargo bench --bench history` builds the 10M-row database once under
//! `target/bench-history/` and reuses it. Under `cargo test` (no `--bench`
//! argument) everything runs on small sizes as a smoke test.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sipsentry::history::query::{self, Filter};
use sipsentry::history::{HistoryWriter, Record, now_ms, open_read};
use sipsentry::reputation::{Evidence, Source};

fn record(i: u64, t: i64) -> Record {
    Record {
        decision_id: format!("{t:x}{:04x}", i & 0xffff),
        time_ms: t,
        call_id: format!("{i}-a84b4c76e66710@pbx.example"),
        source: ([203, 0, 113, 7], 5060).into(),
        caller: format!("+1555{:07}", i % 1_000_000),
        caller_e164: Some(format!("+1555{:07}", i % 1_000_000)),
        called: "+15551234567".into(),
        trust: "pai",
        action: ["pass", "tag", "reject"][(i % 3) as usize],
        rule: "threshold",
        response_code: (i % 3 == 2).then_some(603),
        score: (i % 100) as u8,
        category: Some("Telemarketer".into()),
        evidence: vec![Evidence {
            source: Source::HiyaCache,
            score: (i % 100) as u8,
            category: Some("Telemarketer".into()),
            cached: true,
            latency_us: 1,
            raw: serde_json::json!({"level": "SPAM", "category_id": 6, "generation": "g1"}).into(),
        }],
        decision_us: 3,
        dry_run: false,
        display: None,
        verstat: None,
        attest: None,
    }
}

/// Records/s through the sink and the writer thread, until all are on disk.
fn writer_rate(dir: &Path, n: u64) -> f64 {
    let db = dir.join(format!("w{n}.db"));
    let _ = std::fs::remove_file(&db);
    let writer = HistoryWriter::start(&db, 0).unwrap();
    let sink = writer.sink();
    let records: Vec<Record> = (0..n).map(|i| record(i, now_ms())).collect();
    let started = Instant::now();
    for r in records {
        // The producer is far faster than any disk: keep the queue from
        // overflowing so what is timed is the writer's sustained rate.
        while sink.stats.depth.load(std::sync::atomic::Ordering::Relaxed) > 30_000 {
            std::thread::sleep(Duration::from_micros(200));
        }
        sink.record(r);
    }
    writer.close();
    let secs = started.elapsed().as_secs_f64();
    let dropped = sink
        .stats
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 0, "the bench must not overflow the queue");
    n as f64 / secs
}

/// A database of `rows` rows over 1M callers, built once and kept.
fn big_db(path: &Path, rows: u64) {
    // A database an older build left is migrated first.
    if path.exists() {
        let _ = sipsentry::history::open(path);
    }
    if let Ok(mut conn) = open_read(path).map(sipsentry::history::Reader::Sqlite)
        && query::count(&mut conn, &Filter::default()).ok() == Some(rows)
    {
        return;
    }
    let _ = std::fs::remove_file(path);
    eprintln!("building {rows} rows in {} (once)...", path.display());
    let writer = HistoryWriter::start(path, 0).unwrap();
    let sink = writer.sink();
    let t0 = now_ms() - rows as i64;
    let started = Instant::now();
    for i in 0..rows {
        // Stay below the queue's capacity: this is setup, not the bench.
        while sink.stats.depth.load(std::sync::atomic::Ordering::Relaxed) > 50_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        sink.record(record(i, t0 + i as i64));
    }
    writer.close();
    eprintln!("built in {:.0} s", started.elapsed().as_secs_f64());
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-history");
    std::fs::create_dir_all(&dir).unwrap();

    let n = if full { 500_000 } else { 5_000 };
    for _ in 0..if full { 3 } else { 1 } {
        println!(
            "history writer: {n} records, {:.0} records/s",
            writer_rate(&dir, n)
        );
    }

    let rows = if full { 10_000_000 } else { 20_000 };
    let db = dir.join(format!("h{rows}.db"));
    big_db(&db, rows);
    let mut conn = sipsentry::history::Reader::Sqlite(open_read(&db).unwrap());
    let filter = |i: u64| Filter {
        number: Some(format!("+1555{:07}", i % 1_000_000)),
        ..Default::default()
    };
    let mut c = Criterion::default().configure_from_args();
    c.bench_function(&format!("history_query_one_caller/{rows}_rows"), |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 7919;
            let f = filter(i);
            let total = query::count(&mut conn, &f).unwrap();
            let page = query::page(&mut conn, &f, 1, 50).unwrap();
            assert!(total >= 1 && !page.is_empty());
        })
    });
    // The CLI's path end to end: open the file, count, first page.
    let started = Instant::now();
    let mut conn2 = sipsentry::history::Reader::Sqlite(open_read(&db).unwrap());
    let f = filter(123_457);
    let total = query::count(&mut conn2, &f).unwrap();
    let page = query::page(&mut conn2, &f, 1, 50).unwrap();
    println!(
        "history query for one caller over {rows} rows, cold connection: {} rows, first page {} in {:?}",
        total,
        page.len(),
        started.elapsed()
    );
    c.final_summary();
}
