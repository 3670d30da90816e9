//! The Hiya local cache: building generations from gzip TSV (every rejection
//! case), serving them from mmap, swapping under concurrent lookups, and
//! screening calls from it end to end over SIP.

#[path = "common/binary.rs"]
mod binary;
mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;
use sipsentry::reputation::LocalSource;
use sipsentry::reputation::hiya_cache::build::{
    BuildError, BuildOptions, KEYS_FILE, RECORDS_FILE, build_generation,
};
use sipsentry::reputation::hiya_cache::sample::{self, DEMO_IN};
use sipsentry::reputation::hiya_cache::store::{
    CountryCache, HiyaCache, StoreError, current_generation,
};

fn gz(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn build(
    dir: &Path,
    bytes: &[u8],
    opts: &BuildOptions,
) -> Result<sipsentry::reputation::hiya_cache::build::Manifest, BuildError> {
    build_generation(bytes, &dir.join(&opts.country), opts)
}

/// Lets the test damage a generation file, which the build made read-only.
fn writable(path: &Path) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
}

/// The generation directories of a country, sorted.
fn generations_on_disk(country_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(country_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn opts() -> BuildOptions {
    BuildOptions::new("IN")
}

#[test]
fn a_valid_file_builds_a_current_generation_with_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts();
    o.etag = Some("\"abc123\"".into());
    let m = build(dir.path(), DEMO_IN, &o).unwrap();
    assert_eq!(m.country, "IN");
    assert_eq!(m.etag.as_deref(), Some("\"abc123\""));
    assert_eq!(
        m.rows_total,
        m.rows_kept + m.rows_rejected.values().sum::<u64>() + m.duplicates
    );
    assert_eq!(m.source_bytes, DEMO_IN.len() as u64);
    assert_eq!(
        current_generation(&dir.path().join("IN")).as_deref(),
        Some(m.generation.as_str())
    );
    for f in [KEYS_FILE, RECORDS_FILE] {
        assert_eq!(m.sha256[f].len(), 64);
    }
    let cache = HiyaCache::open(dir.path(), &[]);
    let ev = cache.lookup("+919000000001").unwrap();
    assert_eq!((ev.score, ev.category.as_deref()), (95, Some("Scam")));
    assert_eq!(ev.raw["display_name"], "Scam Caller");
    let neutral = cache.lookup("+919000000004").unwrap();
    assert_eq!(
        (neutral.score, neutral.raw["image"].as_str()),
        (0, Some("https://img.example/clinic.png"))
    );
    assert!(cache.lookup("+919000000009").is_none());
}

#[test]
fn bad_rows_are_counted_by_reason_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!("91/98765{i:05}\tSPAM\t6\tName {i}\t\t\t\n"));
    }
    text.push_str("91/987\tSPAM\t6\t\t\t\t\n"); // bad phone
    text.push_str("91/9876543210\tHAM\t6\t\t\t\t\n"); // unknown level
    text.push_str("91/9876543210\tSPAM\n"); // columns
    text.push_str("91/9876543210\tSPAM\tx\t\t\t\t\n"); // category
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"91/9876543211\tSPAM\t6\t\xff\t\t\t\n"); // UTF-8
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(&bytes).unwrap();
    let m = build(dir.path(), &e.finish().unwrap(), &opts()).unwrap();
    assert_eq!(m.rows_kept, 100);
    for reason in [
        "bad phone number",
        "unknown reputation level",
        "wrong column count",
        "bad category",
        "bad UTF-8",
    ] {
        assert_eq!(
            m.rows_rejected.get(reason),
            Some(&1),
            "{reason}: {:?}",
            m.rows_rejected
        );
    }
}

#[test]
fn unknown_categories_are_kept_and_duplicates_keep_the_last_row() {
    let dir = tempfile::tempdir().unwrap();
    let text = "91/9876543210\tSPAM\t6\tFirst\t\t\t\n91/9111111111\tSPAM\t4242\tNew kind\t\t\t\n91/9876543210\tFRAUD\t8\tSecond\t\t\t\n";
    let m = build(dir.path(), &gz(text), &opts()).unwrap();
    assert_eq!((m.rows_kept, m.duplicates), (2, 1));
    let cache = HiyaCache::open(dir.path(), &[]);
    let ev = cache.lookup("+919876543210").unwrap();
    assert_eq!(
        (ev.score, ev.raw["display_name"].as_str()),
        (95, Some("Second"))
    );
    assert_eq!(
        cache.lookup("+919111111111").unwrap().category.as_deref(),
        Some("category-4242")
    );
}

/// A generation builds, then each bad file is refused and it keeps serving.
#[test]
fn refused_files_leave_the_serving_generation_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let good = build(dir.path(), DEMO_IN, &opts()).unwrap();
    let country = dir.path().join("IN");

    let mostly_bad = gz(&format!(
        "{}91/9876543210\tSPAM\t6\t\t\t\t\n",
        "not\ta\trow\n".repeat(50)
    ));
    let err = build(dir.path(), &mostly_bad, &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::TooManyBad {
                bad: 50,
                total: 51,
                ..
            }
        ),
        "{err}"
    );

    let mut truncated = DEMO_IN.to_vec();
    truncated.truncate(DEMO_IN.len() / 2);
    let err = build(dir.path(), &truncated, &opts()).unwrap_err();
    assert!(matches!(err, BuildError::Gzip { .. }), "{err}");

    let err = build(dir.path(), &gz("junk\n\n"), &opts()).unwrap_err();
    assert!(
        matches!(err, BuildError::NoGoodRows { total: 2, .. }),
        "{err}"
    );

    let err = build(dir.path(), &gz(""), &opts()).unwrap_err();
    assert!(
        matches!(err, BuildError::NoGoodRows { total: 0, .. }),
        "{err}"
    );

    assert_eq!(
        current_generation(&country).as_deref(),
        Some(good.generation.as_str())
    );
    let leftovers: Vec<_> = std::fs::read_dir(&country)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".building"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        HiyaCache::open(dir.path(), &[])
            .lookup("+919000000001")
            .is_some()
    );
}

#[test]
fn a_bad_share_under_the_configured_limit_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    let stats = sample::write_tsv_gz(&mut bytes, "91", 2000, 0.03, 11).unwrap();
    let m = build(dir.path(), &bytes, &opts()).unwrap();
    assert_eq!(m.rows_total, 2000);
    assert_eq!(m.rows_rejected.values().sum::<u64>(), stats.bad_rows);
    let mut strict = opts();
    strict.max_bad_percent = 1.0;
    assert!(matches!(
        build(dir.path(), &bytes, &strict),
        Err(BuildError::TooManyBad { .. })
    ));
}

#[test]
fn spilling_sorted_runs_to_disk_gives_the_same_index() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bytes = Vec::new();
    sample::write_tsv_gz(&mut bytes, "91", 20_000, 0.0, 5).unwrap();
    let in_memory = build(a.path(), &bytes, &opts()).unwrap();
    let mut small = opts();
    small.memory_budget = 0; // 1024 entries per run: about 20 runs
    let spilled = build(b.path(), &bytes, &small).unwrap();
    assert_eq!(
        in_memory.sha256, spilled.sha256,
        "same keys.fst and records.bin"
    );
    assert_eq!(
        (in_memory.rows_kept, in_memory.duplicates),
        (spilled.rows_kept, spilled.duplicates)
    );
    let runs_left = std::fs::read_dir(b.path().join("IN").join(&spilled.generation))
        .unwrap()
        .count();
    assert_eq!(
        runs_left, 3,
        "only keys.fst, records.bin, manifest.json remain"
    );
}

#[test]
fn a_damaged_generation_is_refused_on_open_and_the_previous_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let first = build(dir.path(), DEMO_IN, &opts()).unwrap();
    let cache = HiyaCache::open(dir.path(), &[]);
    let second = build(dir.path(), DEMO_IN, &opts()).unwrap();
    let records = dir
        .path()
        .join("IN")
        .join(&second.generation)
        .join(RECORDS_FILE);
    let mut bytes = std::fs::read(&records).unwrap();
    bytes[10] ^= 0xff;
    writable(&records);
    std::fs::write(&records, bytes).unwrap();
    let err = CountryCache::open(&dir.path().join("IN"), &second.generation)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            StoreError::Checksum {
                file: "records.bin",
                ..
            }
        ),
        "{err}"
    );
    assert!(cache.reload_changed(&[]).is_empty());
    assert_eq!(cache.snapshot()["IN"].manifest.generation, first.generation);
}

#[test]
fn generation_files_are_written_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let m = build(dir.path(), DEMO_IN, &opts()).unwrap();
    for file in [KEYS_FILE, RECORDS_FILE, "manifest.json"] {
        let path = dir.path().join("IN").join(&m.generation).join(file);
        let perms = std::fs::metadata(&path).unwrap().permissions();
        assert!(perms.readonly(), "{file} is writable");
    }
}

#[test]
fn the_previous_generation_is_kept_for_rollback_and_older_ones_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let gens: Vec<String> = (0..4)
        .map(|_| build(dir.path(), DEMO_IN, &opts()).unwrap().generation)
        .collect();
    assert_eq!(
        generations_on_disk(&dir.path().join("IN")),
        gens[2..].to_vec()
    );
}

#[test]
fn a_swap_under_concurrent_lookups_never_fails_a_lookup() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), DEMO_IN, &opts()).unwrap();
    let cache = Arc::new(HiyaCache::open(dir.path(), &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (cache, stop, hits, misses) = (
                Arc::clone(&cache),
                Arc::clone(&stop),
                Arc::clone(&hits),
                Arc::clone(&misses),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match cache.lookup("+919000000002") {
                        Some(ev) if ev.score == 75 => hits.fetch_add(1, Ordering::Relaxed),
                        _ => misses.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let mut generations = std::collections::HashSet::new();
    for _ in 0..6 {
        build(dir.path(), DEMO_IN, &opts()).unwrap();
        for cc in cache.reload_changed(&[]) {
            generations.insert(cache.snapshot()[&cc].manifest.generation.clone());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(generations.len(), 6, "every build was swapped in");
    assert_eq!(misses.load(Ordering::Relaxed), 0);
    assert!(hits.load(Ordering::Relaxed) > 100);
}

#[tokio::test]
async fn calls_from_numbers_in_the_cache_are_tagged_or_rejected_over_sip() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), DEMO_IN, &opts()).unwrap();
    let cache: Arc<dyn LocalSource> = Arc::new(HiyaCache::open(dir.path(), &[]));
    let (uac, uas) = (common::Udp::new().await, common::Udp::new().await);
    let proxy = common::start(common::config(uas.addr, ""), move |p| p.with_local(cache)).await;

    // SPAM (75): tagged with the cache as origin and category.
    let from = "\"Example\" <sip:+919000000002@carrier.example;user=phone>";
    uac.send(
        proxy.addr,
        &common::invite(uac.addr, "UDP", "z9hG4bKhiya1", from, ""),
    )
    .await;
    let relayed = uas.recv().await;
    assert_eq!(common::header(&relayed, "X-Sipsentry-Score"), Some("75"));
    assert_eq!(
        common::header(&relayed, "X-Sipsentry-Verdict"),
        Some("spam; category=\"Telemarketer\"; sources=\"hiya-cache\"")
    );
    assert!(
        common::header(&relayed, "Call-Info")
            .unwrap()
            .contains("origin=\"hiya-cache\"")
    );

    // FRAUD (95): rejected with 603+.
    let from = "<sip:+919000000001@carrier.example;user=phone>";
    uac.send(
        proxy.addr,
        &common::invite(uac.addr, "UDP", "z9hG4bKhiya2", from, ""),
    )
    .await;
    let answer = uac.recv_starting("SIP/2.0 6").await;
    assert_eq!(common::status(&answer), 603);
    proxy.stop().await;
}

#[test]
fn cli_import_status_and_check_use_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_sipsentry");
    std::fs::write(dir.path().join("in.tsv.gz"), DEMO_IN).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[
        "cache",
        "import",
        "in.tsv.gz",
        "--country",
        "IN",
        "--etag",
        "\"e1\"",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["cache", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = &status["hiya"];
    assert_eq!(status[0]["country"], "IN");
    assert_eq!(status[0]["etag"], "\"e1\"");
    assert!(status[0]["rows"].as_u64().unwrap() > 2000);
    let out = run(&["check", "+919000000002", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["action"].as_str(), v["evidence"][0]["source"].as_str()),
        (Some("tag"), Some("hiya-cache"))
    );
    // A country the API does not serve is a usage error, before any work.
    let out = run(&["cache", "import", "in.tsv.gz", "--country", "US"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not served"));
}

/// `serve` on a Hiya cache dir; the admin API's answer to `path`.
async fn admin_get(admin: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_cache_falls_back_to_the_previous_generation_and_never_to_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let hiya = dir.path().join("hiya");
    // The operator's own data: one SPAM number, not one of the demo's.
    let file =
        gz("91/9876500001\tSPAM\t6\tOperator Spam\t\t\t\n91/9876500002\tNEUTRAL\t\t\t\t\t\n");
    let first = build(&hiya, &file, &opts()).unwrap();
    let second = build(&hiya, &file, &opts()).unwrap();
    let damage = |generation: &str| {
        let keys = hiya.join("IN").join(generation).join(KEYS_FILE);
        let len = std::fs::metadata(&keys).unwrap().len();
        writable(&keys);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&keys)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    };
    damage(&second.generation);
    let (sip, admin) = (binary::free_port(), binary::free_port());
    std::fs::write(
        dir.path().join("s.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [hiya_cache]\ndir = \"hiya\"\n[history]\nenabled = false\n"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{sip}").parse().unwrap();
    let admin = format!("127.0.0.1:{admin}");
    let check = |number: &'static str| {
        let admin = admin.clone();
        async move {
            let (code, body) = admin_get(&admin, &format!("/api/v1/check/{number}")).await;
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };

    let serve = binary::Serve::start(dir.path(), &["-c", "s.toml"], listen);
    let v = check("+919876500001").await;
    assert_eq!(v["action"], "tag", "{v}");
    assert_eq!(
        v["evidence"][0]["raw"]["generation"],
        first.generation.as_str(),
        "served from the previous, intact generation: {v}"
    );
    let demo = check("+919000000001").await;
    assert_eq!(
        (
            demo["action"].as_str(),
            demo["evidence"].as_array().map(Vec::len)
        ),
        (Some("pass"), Some(0)),
        "demo numbers are not enforced: {demo}"
    );
    assert_eq!(admin_get(&admin, "/readyz").await.0, 200);
    assert_eq!(serve.terminate().code(), Some(0));

    // No intact generation left: served without the local cache, said so.
    damage(&first.generation);
    let serve = binary::Serve::start(dir.path(), &["-c", "s.toml"], listen);
    let (code, body) = admin_get(&admin, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("IN"), "{body}");
    let (_, metrics) = admin_get(&admin, "/metrics").await;
    assert!(
        metrics.contains("sipsentry_hiya_cache_unavailable{country=\"IN\"} 1"),
        "{metrics}"
    );
    assert_eq!(check("+919000000001").await["action"], "pass");
    assert_eq!(check("+919876500001").await["action"], "pass");
    let status = serve.terminate();
    assert_eq!(status.code(), Some(0));
    // Nothing was built over the operator's generations.
    assert_eq!(
        generations_on_disk(&hiya.join("IN")),
        [first.generation, second.generation]
    );
}
