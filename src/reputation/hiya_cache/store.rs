//! Serving generations: memory-mapped, checksum-verified, swapped atomically.
//!
//! [`Index`] is generic over its bytes (`D: AsRef<[u8]>`) so tests can build
//! one over a `Vec` while production maps files. [`HiyaCache`] holds every
//! country's current generation behind one `ArcSwap`: a lookup loads the
//! pointer once and reads from that snapshot, so a refresh that swaps in a new
//! generation never makes a lookup fail or see half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use memmap2::Mmap;
use sha2::{Digest, Sha256};

use super::build::{
    self, CURRENT_FILE, KEYS_FILE, MANIFEST_FILE, Manifest, NO_CATEGORY, RECORDS_FILE,
};
use super::{HiyaRaw, Level, category_name};
use crate::reputation::{Evidence, LocalSource, Raw, Source};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "cannot read {path} ({source}); check that hiya_cache.dir is readable, or rebuild the generation with `sipsentry cache import`"
    )]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a valid manifest ({reason}); rebuild with `sipsentry cache import` or `cache sync`"
    )]
    Manifest { path: PathBuf, reason: String },
    #[error(
        "{file} of {generation} does not match its manifest checksum; the generation is damaged, rebuild it"
    )]
    Checksum {
        generation: String,
        file: &'static str,
    },
    #[error("{path} is not a valid index ({reason}); rebuild it")]
    Index { path: PathBuf, reason: String },
}

/// One country's entry for a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub level: Level,
    pub category: Option<u32>,
    pub name: &'a str,
    pub description: &'a str,
    pub detail: &'a str,
    pub image: &'a str,
}

/// The fst map and the records it points into.
pub struct Index<D: AsRef<[u8]>> {
    map: fst::Map<D>,
    records: D,
}

impl<D: AsRef<[u8]>> Index<D> {
    pub fn new(keys: D, records: D) -> Result<Self, fst::Error> {
        Ok(Index {
            map: fst::Map::new(keys)?,
            records,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Looks up the E.164 number `key` (its digits as an integer).
    pub fn get(&self, key: u64) -> Option<Entry<'_>> {
        let value = self.map.get(key.to_be_bytes())?;
        let offset = (value >> 2) as usize;
        let rec = self.records.as_ref().get(offset..)?;
        let category = u32::from_le_bytes(rec.get(..4)?.try_into().ok()?);
        let mut pos = 4;
        let mut texts = [""; 4];
        for t in &mut texts {
            let len = u16::from_le_bytes(rec.get(pos..pos + 2)?.try_into().ok()?) as usize;
            *t = std::str::from_utf8(rec.get(pos + 2..pos + 2 + len)?).ok()?;
            pos += 2 + len;
        }
        Some(Entry {
            level: Level::from_bits(value),
            category: (category != NO_CATEGORY).then_some(category),
            name: texts[0],
            description: texts[1],
            detail: texts[2],
            image: texts[3],
        })
    }
}

/// Maps a file read-only.
fn map_file(path: &Path) -> Result<Mmap, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: generation files are written once into a fresh directory,
    // made read-only, and never modified afterwards (a refresh builds a new
    // generation and renames a pointer), so the mapped bytes do not change
    // while mapped. Pruning deletes old directories, which on Unix leaves
    // existing mappings valid. The contents are verified against the
    // manifest over the mapped bytes before use. What this cannot prevent
    // is another process (root, or one ignoring the mode) rewriting or
    // truncating a serving file: docs/operations.md states the rule.
    unsafe { Mmap::map(&file) }.map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A country's serving generation.
pub struct CountryCache {
    pub manifest: Manifest,
    pub dir: PathBuf,
    index: Index<Mmap>,
}

impl CountryCache {
    /// Opens `<country_dir>/<generation>`, verifying both checksums.
    pub fn open(country_dir: &Path, generation: &str) -> Result<CountryCache, StoreError> {
        let dir = country_dir.join(generation);
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = fs::read(&manifest_path).map_err(|source| StoreError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| StoreError::Manifest {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
        // The checksums are taken over the mapped bytes themselves, so what
        // is verified is exactly what lookups will read.
        let keys = map_file(&dir.join(KEYS_FILE))?;
        let records = map_file(&dir.join(RECORDS_FILE))?;
        for (file, bytes) in [(KEYS_FILE, &keys[..]), (RECORDS_FILE, &records[..])] {
            let want = manifest
                .sha256
                .get(file)
                .ok_or_else(|| StoreError::Manifest {
                    path: manifest_path.clone(),
                    reason: format!("no checksum for {file}"),
                })?;
            if hex::encode(Sha256::digest(bytes)) != *want {
                return Err(StoreError::Checksum {
                    generation: generation.to_string(),
                    file,
                });
            }
        }
        let keys_path = dir.join(KEYS_FILE);
        let index = Index::new(keys, records).map_err(|e| StoreError::Index {
            path: keys_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(CountryCache {
            manifest,
            dir,
            index,
        })
    }

    /// Opens whatever `current` points at; `Ok(None)` when nothing was built yet.
    pub fn open_current(country_dir: &Path) -> Result<Option<CountryCache>, StoreError> {
        match current_generation(country_dir) {
            Some(g) => Self::open(country_dir, &g).map(Some),
            None => Ok(None),
        }
    }

    pub fn rows(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, key: u64) -> Option<Entry<'_>> {
        self.index.get(key)
    }
}

/// The generation `current` names, if any.
pub fn current_generation(country_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(country_dir.join(CURRENT_FILE)).ok()?;
    let g = text.trim();
    (!g.is_empty()).then(|| g.to_string())
}

/// Every generation directory of a country, newest first (their names are
/// `g<build ms>`).
fn generations(country_dir: &Path) -> Vec<String> {
    let mut out: Vec<(u64, String)> = fs::read_dir(country_dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let ms = name.strip_prefix('g')?.parse().ok()?;
                    Some((ms, name))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.into_iter().map(|(_, name)| name).collect()
}

/// All countries' current generations, served to the pipeline.
pub struct HiyaCache {
    dir: PathBuf,
    countries: ArcSwap<BTreeMap<String, Arc<CountryCache>>>,
    /// Generations found damaged (country, generation): not opened again,
    /// not logged again.
    damaged: parking_lot::Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Countries on disk with no intact generation at all: served without a
    /// local cache (`/readyz` and `sipsentry_hiya_cache_unavailable` say so).
    unavailable: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    /// Lookups that found / did not find the number (metrics).
    pub hits: std::sync::atomic::AtomicU64,
    pub misses: std::sync::atomic::AtomicU64,
}

impl HiyaCache {
    /// Opens every country under `dir` that has a current generation (or only
    /// `only`, when given). Countries that fail to open are logged and skipped:
    /// the proxy runs without them rather than not at all.
    pub fn open(dir: &Path, only: &[String]) -> HiyaCache {
        let cache = HiyaCache {
            dir: dir.to_path_buf(),
            countries: ArcSwap::from_pointee(BTreeMap::new()),
            damaged: Default::default(),
            unavailable: Default::default(),
            hits: Default::default(),
            misses: Default::default(),
        };
        cache.reload_changed(only);
        cache
    }

    /// Country directories present on disk.
    pub fn countries_on_disk(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join(CURRENT_FILE).exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Swaps in every country whose `current` pointer changed since it was
    /// loaded (a build by `cache import` or a sync). Returns the countries swapped.
    pub fn reload_changed(&self, only: &[String]) -> Vec<String> {
        let wanted = if only.is_empty() {
            self.countries_on_disk()
        } else {
            only.to_vec()
        };
        let loaded = self.countries.load();
        let mut swapped = Vec::new();
        for cc in wanted {
            let country_dir = self.dir.join(&cc);
            let Some(generation) = current_generation(&country_dir) else {
                continue;
            };
            if loaded
                .get(&cc)
                .is_some_and(|c| c.manifest.generation == generation)
            {
                continue;
            }
            if self
                .damaged
                .lock()
                .contains(&(cc.clone(), generation.clone()))
            {
                continue;
            }
            match CountryCache::open(&country_dir, &generation) {
                Ok(c) => {
                    self.unavailable.lock().remove(&cc);
                    self.swap_in(c);
                    swapped.push(cc);
                }
                Err(e) => {
                    self.damaged.lock().insert((cc.clone(), generation.clone()));
                    if loaded.contains_key(&cc) {
                        tracing::warn!(country = %cc, error = %e, "Hiya cache generation not loaded; keeping the previous one");
                    } else if let Some(c) = self.open_fallback(&cc, &country_dir) {
                        tracing::warn!(
                            country = %cc, damaged = %generation, error = %e, serving = %c.manifest.generation,
                            "the current Hiya cache generation is damaged; serving the previous intact one (run `cache import` or `cache sync` again)"
                        );
                        self.swap_in(c);
                        swapped.push(cc);
                    } else {
                        tracing::error!(
                            country = %cc, error = %e,
                            "no intact Hiya cache generation: calls are screened WITHOUT the local cache for this country until `cache import` or `cache sync` builds one"
                        );
                        self.unavailable.lock().insert(cc);
                    }
                }
            }
        }
        swapped
    }

    /// The newest generation of a country that opens intact, other than
    /// those known damaged.
    fn open_fallback(&self, cc: &str, country_dir: &Path) -> Option<CountryCache> {
        for g in generations(country_dir) {
            if self.damaged.lock().contains(&(cc.to_string(), g.clone())) {
                continue;
            }
            match CountryCache::open(country_dir, &g) {
                Ok(c) => return Some(c),
                Err(_) => {
                    self.damaged.lock().insert((cc.to_string(), g));
                }
            }
        }
        None
    }

    /// Countries on disk that no intact generation serves.
    pub fn unavailable(&self) -> Vec<String> {
        self.unavailable.lock().iter().cloned().collect()
    }

    /// Replaces one country's generation in a single atomic step.
    pub fn swap_in(&self, cache: CountryCache) {
        let cc = cache.manifest.country.clone();
        let cache = Arc::new(cache);
        self.countries.rcu(|current| {
            let mut next = BTreeMap::clone(current);
            next.insert(cc.clone(), Arc::clone(&cache));
            next
        });
        tracing::debug!(country = %cc, generation = %cache.manifest.generation, rows = cache.rows(), "Hiya cache generation swapped in");
    }

    /// A snapshot of what is being served.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, Arc<CountryCache>>> {
        self.countries.load_full()
    }
}

impl LocalSource for HiyaCache {
    fn lookup(&self, e164: &str) -> Option<Evidence> {
        let started = Instant::now();
        let key = build::key_of(e164)?;
        let countries = self.countries.load();
        let Some((entry, generation)) = countries
            .values()
            .find_map(|c| c.get(key).map(|e| (e, &c.manifest.generation)))
        else {
            self.misses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        };
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let category = entry.category.map(category_name);
        Some(Evidence {
            source: Source::HiyaCache,
            score: entry.level.score(),
            category: category.clone(),
            cached: true,
            latency_us: started.elapsed().as_micros() as u64,
            raw: Raw::hiya(HiyaRaw {
                category,
                category_id: entry.category,
                description: entry.description.into(),
                detail: entry.detail.into(),
                display_name: entry.name.into(),
                generation: generation.clone(),
                image: entry.image.into(),
                level: entry.level.as_str(),
            }),
        })
    }
}
