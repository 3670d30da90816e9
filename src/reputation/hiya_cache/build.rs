//! Building a generation from a gzip TSV, as a stream.
//!
//! The file is never held in memory: rows are validated as they are
//! decompressed, their display strings appended to `records.bin` in input
//! order, and only a 24-byte `(number, sequence, value)` entry per row is kept
//! for sorting. When those entries exceed the memory budget they are sorted
//! and spilled to a run file; the runs are merged at the end. Equal numbers
//! keep the last row (highest sequence). The sorted stream feeds an
//! `fst::Map` keyed by the number as a big-endian `u64`, whose byte order is
//! numeric order.
//!
//! Everything is written into a `.building-*` directory, fsynced, then renamed
//! to the generation name, and only then is `current` switched by atomic
//! rename. Any failure removes the temporary directory: the serving
//! generation is never touched by a failed build.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Level;
use crate::number::{E164_MAX_DIGITS, E164_MIN_DIGITS};

pub const KEYS_FILE: &str = "keys.fst";
pub const RECORDS_FILE: &str = "records.bin";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const CURRENT_FILE: &str = "current";
/// A record's "no category" marker.
pub const NO_CATEGORY: u32 = u32::MAX;
/// Bytes one row costs in the sort buffer.
const ENTRY_BYTES: usize = 24;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Uppercase ISO code; checked against the supported list.
    pub country: String,
    /// The ETag of the download, recorded in the manifest.
    pub etag: Option<String>,
    /// Refuse the file when more than this percentage of rows is bad.
    pub max_bad_percent: f64,
    /// Memory for sorting; beyond it, sorted runs spill to disk.
    pub memory_budget: usize,
}

impl BuildOptions {
    pub fn new(country: &str) -> Self {
        BuildOptions {
            country: country.to_string(),
            etag: None,
            max_bad_percent: 5.0,
            memory_budget: 256 << 20,
        }
    }
}

/// Why a file was refused; the serving generation is unchanged in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("{0}")]
    Country(String),
    #[error(
        "cannot write the cache under {path} ({source}); check the permissions and free space of hiya_cache.dir"
    )]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the gzip stream is truncated or corrupt after {rows} rows ({source}); download the file again"
    )]
    Gzip { rows: u64, source: io::Error },
    #[error(
        "{bad} of {total} rows are bad ({percent:.1}% > {limit}%): {reasons:?}; the file looks wrong, so it was refused"
    )]
    TooManyBad {
        bad: u64,
        total: u64,
        percent: f64,
        limit: f64,
        reasons: BTreeMap<String, u64>,
    },
    #[error("the file has no usable rows ({total} rows read, all rejected: {reasons:?})")]
    NoGoodRows {
        total: u64,
        reasons: BTreeMap<String, u64>,
    },
}

/// Why one row was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRow {
    Columns,
    Phone,
    Level,
    Category,
    Utf8,
    TooLong,
}

impl BadRow {
    pub fn as_str(self) -> &'static str {
        match self {
            BadRow::Columns => "wrong column count",
            BadRow::Phone => "bad phone number",
            BadRow::Level => "unknown reputation level",
            BadRow::Category => "bad category",
            BadRow::Utf8 => "bad UTF-8",
            BadRow::TooLong => "field longer than 65535 bytes",
        }
    }
}

/// `manifest.json` of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub country: String,
    pub generation: String,
    pub etag: Option<String>,
    /// Compressed bytes read.
    pub source_bytes: u64,
    pub rows_total: u64,
    pub rows_kept: u64,
    pub rows_rejected: BTreeMap<String, u64>,
    /// Rows whose number appeared again later (the later row won).
    pub duplicates: u64,
    pub built_at_ms: u64,
    /// SHA-256 (hex) of each data file.
    pub sha256: BTreeMap<String, String>,
}

/// One validated row.
struct Row<'a> {
    key: u64,
    level: Level,
    category: u32,
    texts: [&'a [u8]; 4],
}

/// `CC/national` to the E.164 digits as a number.
pub fn parse_phone(s: &[u8]) -> Option<u64> {
    let slash = s.iter().position(|&b| b == b'/')?;
    let (cc, national) = (&s[..slash], &s[slash + 1..]);
    let digits = cc.len() + national.len();
    let ok = (1..=3).contains(&cc.len())
        && cc[0] != b'0'
        && !national.is_empty()
        && (E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits)
        && cc.iter().chain(national).all(u8::is_ascii_digit);
    ok.then(|| {
        cc.iter()
            .chain(national)
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
    })
}

/// E.164 text (`+919876543210`) to the key.
pub fn key_of(e164: &str) -> Option<u64> {
    let digits = e164.strip_prefix('+')?;
    if !(E164_MIN_DIGITS..=E164_MAX_DIGITS).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    digits.parse().ok()
}

fn parse_row(line: &[u8]) -> Result<Row<'_>, BadRow> {
    let mut cols = [&line[..0]; 7];
    let mut n = 0;
    for field in line.split(|&b| b == b'\t') {
        if n == 7 {
            return Err(BadRow::Columns);
        }
        cols[n] = field;
        n += 1;
    }
    if n != 7 {
        return Err(BadRow::Columns);
    }
    let key = parse_phone(cols[0]).ok_or(BadRow::Phone)?;
    let level = Level::parse(cols[1]).ok_or(BadRow::Level)?;
    let category = match cols[2] {
        [] => NO_CATEGORY,
        c if c.iter().all(u8::is_ascii_digit) => std::str::from_utf8(c)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&v| v != NO_CATEGORY)
            .ok_or(BadRow::Category)?,
        _ => return Err(BadRow::Category),
    };
    let texts = [cols[3], cols[4], cols[5], cols[6]];
    for t in texts {
        std::str::from_utf8(t).map_err(|_| BadRow::Utf8)?;
        if t.len() > u16::MAX as usize {
            return Err(BadRow::TooLong);
        }
    }
    Ok(Row {
        key,
        level,
        category,
        texts,
    })
}

/// Counts compressed bytes as they are read.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

type Entry = (u64, u64, u64); // (key, sequence, value = offset << 2 | level)

/// Builds a generation of `opts.country` under `country_dir` from a gzip TSV
/// stream and makes it current.
pub fn build_generation(
    input: impl Read,
    country_dir: &Path,
    opts: &BuildOptions,
) -> Result<Manifest, BuildError> {
    super::check_country(&opts.country).map_err(BuildError::Country)?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { path, source }
    };
    fs::create_dir_all(country_dir).map_err(io_err(country_dir))?;
    let mut built_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // Generation names sort by time; two builds in one millisecond take the next.
    while country_dir.join(format!("g{built_at_ms}")).exists() {
        built_at_ms += 1;
    }
    let generation = format!("g{built_at_ms}");
    let tmp = country_dir.join(format!(".building-{generation}-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = build_into(input, &tmp, &generation, built_at_ms, opts).and_then(|manifest| {
        let final_dir = country_dir.join(&generation);
        fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
        switch_current(country_dir, &generation).map_err(io_err(country_dir))?;
        prune(country_dir, &generation);
        Ok(manifest)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn build_into(
    input: impl Read,
    dir: &Path,
    generation: &str,
    built_at_ms: u64,
    opts: &BuildOptions,
) -> Result<Manifest, BuildError> {
    let io_err = |path: PathBuf| move |source| BuildError::Io { path, source };
    let records_path = dir.join(RECORDS_FILE);
    let mut records =
        BufWriter::new(File::create(&records_path).map_err(io_err(records_path.clone()))?);
    let mut offset: u64 = 0;
    let mut counting = Counting {
        inner: input,
        bytes: 0,
    };
    let mut reader = BufReader::with_capacity(256 << 10, MultiGzDecoder::new(&mut counting));
    let budget_entries = (opts.memory_budget / ENTRY_BYTES).max(1024);
    let mut buffer: Vec<Entry> = Vec::new();
    let mut runs: Vec<PathBuf> = Vec::new();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total, mut kept) = (0u64, 0u64);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| BuildError::Gzip {
                rows: total,
                source,
            })?;
        if n == 0 {
            break;
        }
        while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            line.pop();
        }
        total += 1;
        let row = match parse_row(&line) {
            Ok(r) => r,
            Err(why) => {
                *rejected.entry(why.as_str().to_string()).or_default() += 1;
                continue;
            }
        };
        let mut record = Vec::with_capacity(16 + row.texts.iter().map(|t| t.len()).sum::<usize>());
        record.extend_from_slice(&row.category.to_le_bytes());
        for t in row.texts {
            record.extend_from_slice(&(t.len() as u16).to_le_bytes());
            record.extend_from_slice(t);
        }
        records
            .write_all(&record)
            .map_err(io_err(records_path.clone()))?;
        buffer.push((row.key, kept, offset << 2 | row.level as u64));
        offset += record.len() as u64;
        kept += 1;
        if buffer.len() >= budget_entries {
            runs.push(spill(dir, runs.len(), &mut buffer).map_err(io_err(dir.to_path_buf()))?);
        }
    }
    let bad = total - kept;
    let reasons = rejected.clone();
    if kept == 0 {
        return Err(BuildError::NoGoodRows { total, reasons });
    }
    let percent = bad as f64 * 100.0 / total as f64;
    if percent > opts.max_bad_percent {
        return Err(BuildError::TooManyBad {
            bad,
            total,
            percent,
            limit: opts.max_bad_percent,
            reasons,
        });
    }
    finish(records).map_err(io_err(records_path.clone()))?;

    let keys_path = dir.join(KEYS_FILE);
    let duplicates = write_index(&keys_path, buffer, &runs).map_err(io_err(keys_path.clone()))?;
    for run in &runs {
        let _ = fs::remove_file(run);
    }
    let mut sha256 = BTreeMap::new();
    for (name, path) in [(KEYS_FILE, &keys_path), (RECORDS_FILE, &records_path)] {
        sha256.insert(
            name.to_string(),
            file_sha256(path).map_err(io_err(path.clone()))?,
        );
    }
    let manifest = Manifest {
        country: opts.country.clone(),
        generation: generation.to_string(),
        etag: opts.etag.clone(),
        source_bytes: counting.bytes,
        rows_total: total,
        rows_kept: kept - duplicates,
        rows_rejected: rejected,
        duplicates,
        built_at_ms,
        sha256,
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_synced(&manifest_path, &json).map_err(io_err(manifest_path.clone()))?;
    // Read-only: the serving process maps these files, and a file changed
    // or truncated under a mapping is wrong data or a SIGBUS
    // (docs/operations.md, "The Hiya cache").
    for path in [&keys_path, &records_path, &manifest_path] {
        read_only(path).map_err(io_err(path.clone()))?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir.to_path_buf()))?;
    Ok(manifest)
}

fn read_only(path: &Path) -> io::Result<()> {
    let mut perms = fs::metadata(path)?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms)
}

fn finish(w: BufWriter<File>) -> io::Result<()> {
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Sorts the buffer and writes it as a run file.
fn spill(dir: &Path, n: usize, buffer: &mut Vec<Entry>) -> io::Result<PathBuf> {
    buffer.sort_unstable();
    let path = dir.join(format!("run-{n}.bin"));
    let mut w = BufWriter::new(File::create(&path)?);
    for (k, s, v) in buffer.drain(..) {
        w.write_all(&k.to_le_bytes())?;
        w.write_all(&s.to_le_bytes())?;
        w.write_all(&v.to_le_bytes())?;
    }
    w.flush()?;
    Ok(path)
}

struct RunReader(BufReader<File>);

impl RunReader {
    fn next(&mut self) -> io::Result<Option<Entry>> {
        let mut b = [0u8; ENTRY_BYTES];
        match self.0.read_exact(&mut b) {
            Ok(()) => {
                let word =
                    |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                Ok(Some((word(0), word(1), word(2))))
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Merges the in-memory buffer and the spilled runs into `keys.fst`, keeping
/// the last row of each number. Returns how many rows were superseded.
fn write_index(path: &Path, mut buffer: Vec<Entry>, runs: &[PathBuf]) -> io::Result<u64> {
    buffer.sort_unstable();
    let mut readers: Vec<RunReader> = runs
        .iter()
        .map(|p| File::open(p).map(|f| RunReader(BufReader::with_capacity(1 << 16, f))))
        .collect::<io::Result<_>>()?;
    // Source `readers.len()` is the in-memory buffer.
    let mut heap: BinaryHeap<Reverse<(Entry, usize)>> = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(e) = r.next()? {
            heap.push(Reverse((e, i)));
        }
    }
    let mut mem = buffer.into_iter();
    let mem_src = readers.len();
    if let Some(e) = mem.next() {
        heap.push(Reverse((e, mem_src)));
    }
    let file = File::create(path)?;
    let mut builder = fst::MapBuilder::new(BufWriter::new(file)).map_err(io::Error::other)?;
    let mut pending: Option<(u64, u64)> = None;
    let mut duplicates = 0;
    while let Some(Reverse(((key, _seq, value), src))) = heap.pop() {
        let next = if src == mem_src {
            mem.next()
        } else {
            readers[src].next()?
        };
        if let Some(e) = next {
            heap.push(Reverse((e, src)));
        }
        match pending {
            // Same number again, later in the file: it replaces the earlier row.
            Some((k, _)) if k == key => {
                duplicates += 1;
                pending = Some((key, value));
            }
            Some((k, v)) => {
                builder
                    .insert(k.to_be_bytes(), v)
                    .map_err(io::Error::other)?;
                pending = Some((key, value));
            }
            None => pending = Some((key, value)),
        }
    }
    if let Some((k, v)) = pending {
        builder
            .insert(k.to_be_bytes(), v)
            .map_err(io::Error::other)?;
    }
    let writer = builder.into_inner().map_err(io::Error::other)?;
    finish(writer)?;
    Ok(duplicates)
}

pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Points `current` at `generation` by writing a temporary file and renaming
/// it over the old pointer (atomic on POSIX file systems).
fn switch_current(country_dir: &Path, generation: &str) -> io::Result<()> {
    let tmp = country_dir.join(format!("{CURRENT_FILE}.tmp"));
    write_synced(&tmp, generation.as_bytes())?;
    fs::rename(&tmp, country_dir.join(CURRENT_FILE))?;
    File::open(country_dir)?.sync_all()
}

/// Keeps the current generation and the one before it (for rollback); removes
/// older ones and stale build directories.
fn prune(country_dir: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(country_dir) else {
        return;
    };
    let mut generations: Vec<String> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".building-") && !name.contains(&format!("-{}", std::process::id())) {
            let _ = fs::remove_dir_all(e.path());
        } else if name.starts_with('g') && e.path().is_dir() {
            generations.push(name);
        }
    }
    generations.sort_by_key(|g| g[1..].parse::<u64>().unwrap_or(0));
    let keep_from = generations
        .iter()
        .position(|g| g == current)
        .unwrap_or(generations.len());
    for old in generations.iter().take(keep_from.saturating_sub(1)) {
        let _ = fs::remove_dir_all(country_dir.join(old));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_e164_keys() {
        assert_eq!(parse_phone(b"91/9876543210"), Some(919876543210));
        assert_eq!(parse_phone(b"1/5551234567"), Some(15551234567));
        assert_eq!(parse_phone(b"919876543210"), None, "no slash");
        assert_eq!(parse_phone(b"91/98765x3210"), None);
        assert_eq!(
            parse_phone(b"0/9876543210"),
            None,
            "no country code starts with 0"
        );
        assert_eq!(parse_phone(b"91/12"), None, "too short");
        assert_eq!(key_of("+919876543210"), Some(919876543210));
    }

    #[test]
    fn rows_are_validated_with_reasons() {
        assert!(parse_row(b"91/9876543210\tSPAM\t6\tACME\t\t\t").is_ok());
        assert!(
            parse_row(b"91/9876543210\tFRAUD\t\t\t\t\t").is_ok(),
            "empty category and texts"
        );
        assert!(
            parse_row(b"91/9876543210\tSPAM\t4242\t\t\t\t").is_ok(),
            "unknown category kept"
        );
        assert_eq!(
            parse_row(b"91/9876543210\tSPAM\t6").err(),
            Some(BadRow::Columns)
        );
        assert_eq!(
            parse_row(b"91/9876543210\tSPAM\t6\t\t\t\t\t").err(),
            Some(BadRow::Columns)
        );
        assert_eq!(
            parse_row(b"91-9876543210\tSPAM\t6\t\t\t\t").err(),
            Some(BadRow::Phone)
        );
        assert_eq!(
            parse_row(b"91/9876543210\tHAM\t6\t\t\t\t").err(),
            Some(BadRow::Level)
        );
        assert_eq!(
            parse_row(b"91/9876543210\tSPAM\tsix\t\t\t\t").err(),
            Some(BadRow::Category)
        );
        assert_eq!(
            parse_row(b"91/9876543210\tSPAM\t6\t\xff\xfe\t\t\t").err(),
            Some(BadRow::Utf8)
        );
    }
}
