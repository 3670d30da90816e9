//! Hiya cache lookups: the fst index (over a Vec, as the mmap in production)
//! against HashMap and BTreeMap baselines holding the same 1M numbers.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sipsentry::reputation::hiya_cache::build::{
    BuildOptions, KEYS_FILE, RECORDS_FILE, build_generation, key_of,
};
use sipsentry::reputation::hiya_cache::sample::write_tsv_gz;
use sipsentry::reputation::hiya_cache::store::Index;

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // 1M numbers under `cargo bench`; a smaller index when `cargo test
    // --all-targets` runs this unoptimised just to check that it works.
    let numbers = if cfg!(debug_assertions) {
        50_000
    } else {
        1_000_000
    };
    let mut gz = Vec::new();
    write_tsv_gz(&mut gz, "91", numbers, 0.0, 3).unwrap();
    let m = build_generation(&gz[..], &dir.path().join("IN"), &BuildOptions::new("IN")).unwrap();
    let gen_dir = dir.path().join("IN").join(&m.generation);
    let keys = std::fs::read(gen_dir.join(KEYS_FILE)).unwrap();
    let records = std::fs::read(gen_dir.join(RECORDS_FILE)).unwrap();
    let index = Index::new(keys, records).unwrap();

    // Every number of the index, and 4,096 of them spread over its whole
    // range as lookups (sequential keys would flatter the baselines' caches).
    let all: Vec<(u64, u64)> = {
        use fst::Streamer;
        let map = fst::Map::new(std::fs::read(gen_dir.join(KEYS_FILE)).unwrap()).unwrap();
        let mut v = Vec::with_capacity(map.len());
        let mut s = map.stream();
        while let Some((k, val)) = s.next() {
            v.push((u64::from_be_bytes(k.try_into().unwrap()), val));
        }
        v
    };
    let hits: Vec<(u64, u64)> = all.iter().copied().step_by(all.len() / 4096).collect();
    let hash: HashMap<u64, u64> = all.iter().copied().collect();
    let btree: BTreeMap<u64, u64> = all.iter().copied().collect();
    let miss = key_of("+911234567890").unwrap();

    let mut g = c.benchmark_group("hiya_lookup_1m");
    let mut i = 0usize;
    g.bench_function("fst_hit_with_record", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            index.get(black_box(hits[i].0)).unwrap()
        })
    });
    g.bench_function("fst_miss", |b| b.iter(|| index.get(black_box(miss))));
    g.bench_function("hashmap_hit_baseline", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            *hash.get(&black_box(hits[i].0)).unwrap()
        })
    });
    g.bench_function("btreemap_hit_baseline", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            *btree.get(&black_box(hits[i].0)).unwrap()
        })
    });
    g.finish();
    eprintln!(
        "sizes for {} numbers: keys.fst {} bytes, records.bin {} bytes; the HashMap holds {} bytes of entries before overhead",
        all.len(),
        std::fs::metadata(gen_dir.join(KEYS_FILE)).unwrap().len(),
        std::fs::metadata(gen_dir.join(RECORDS_FILE)).unwrap().len(),
        all.len() * 16
    );
}

criterion_group!(benches, lookups);
criterion_main!(benches);
