//! The local spool of a PostgreSQL history: records the database could not
//! take (it is down, or unreachable) are appended here, one JSON line each,
//! and sent in order once it answers again. The file survives a restart, so
//! a node stopped while PostgreSQL is down sends the rest when it next
//! starts.
//!
//! Sending is idempotent (rows are unique per node and decision id, final
//! responses are updates), so a spool replayed twice after a crash writes
//! each record once. The file is bounded by `history.spool_max_mb`: beyond
//! it a record is dropped, counted and logged.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub(super) struct Spool {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    /// The file's length.
    len: u64,
    /// Bytes from the start already sent (kept in memory: after a restart
    /// the whole file is sent again, harmlessly).
    sent: u64,
}

/// Why the spool could not take a line.
#[derive(Debug)]
pub(super) enum SpoolError {
    Full,
    Io(std::io::Error),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full => {
                f.write_str("spool full (raise history.spool_max_mb, or bring PostgreSQL back)")
            }
            SpoolError::Io(e) => write!(
                f,
                "spool file: {e} (check that history.spool_path is writable and its disk not full)"
            ),
        }
    }
}

impl Spool {
    pub(super) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(Spool {
            path: path.to_path_buf(),
            max_bytes,
            file,
            len,
            sent: 0,
        })
    }

    /// Whether anything is waiting to be sent.
    pub(super) fn is_empty(&self) -> bool {
        self.sent >= self.len
    }

    pub(super) fn bytes(&self) -> u64 {
        self.len.saturating_sub(self.sent)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines`; stops at the bound. Returns how many were taken.
    pub(super) fn append<T: Serialize>(
        &mut self,
        lines: impl IntoIterator<Item = T>,
    ) -> (usize, Option<SpoolError>) {
        let mut buf = Vec::new();
        let mut taken = 0;
        let mut stop = None;
        for line in lines {
            let start = buf.len();
            if serde_json::to_writer(&mut buf, &line).is_err() {
                buf.truncate(start);
                continue;
            }
            buf.push(b'\n');
            if self.len + buf.len() as u64 > self.max_bytes {
                buf.truncate(start);
                stop = Some(SpoolError::Full);
                break;
            }
            taken += 1;
        }
        if let Err(e) = self.file.write_all(&buf) {
            return (0, Some(SpoolError::Io(e)));
        }
        self.len += buf.len() as u64;
        (taken, stop)
    }

    /// Makes what was appended durable (at shutdown).
    pub(super) fn sync(&mut self) {
        let _ = self.file.sync_data();
    }

    /// Up to `max` lines after what was sent, and the offset after them.
    /// An unreadable line (damaged file) is skipped and counted in `bad`.
    pub(super) fn next_chunk<T: DeserializeOwned>(
        &mut self,
        max: usize,
    ) -> std::io::Result<(Vec<T>, u64, usize)> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        reader.seek(SeekFrom::Start(self.sent))?;
        let mut out = Vec::new();
        let mut offset = self.sent;
        let mut bad = 0;
        let mut text = String::new();
        while out.len() < max && offset < self.len {
            text.clear();
            let n = reader.read_line(&mut text)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            match serde_json::from_str(text.trim_end()) {
                Ok(line) => out.push(line),
                Err(_) => bad += 1,
            }
        }
        Ok((out, offset, bad))
    }

    /// Everything before `offset` is in the database; an emptied spool is
    /// truncated.
    pub(super) fn sent_to(&mut self, offset: u64) {
        self.sent = offset.min(self.len);
        if self.is_empty() && self.file.set_len(0).is_ok() {
            self.len = 0;
            self.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Final;

    fn fin(n: u16) -> Final {
        Final {
            decision_id: format!("d{n}"),
            final_code: n,
            final_ms: 1,
        }
    }

    #[test]
    fn lines_come_back_in_order_across_a_reopen_and_the_file_empties_when_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/history.spool");
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.append((0..5).map(fin)).0, 5);
        s.sync();
        drop(s);
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        let (first, at, bad) = s.next_chunk::<Final>(3).unwrap();
        assert_eq!((first, bad), ((0..3).map(fin).collect::<Vec<_>>(), 0));
        s.sent_to(at);
        assert!(!s.is_empty());
        let (rest, at, _) = s.next_chunk::<Final>(10).unwrap();
        assert_eq!(rest, (3..5).map(fin).collect::<Vec<_>>());
        s.sent_to(at);
        assert!(s.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_full_spool_takes_what_fits_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("x"), 200).unwrap();
        let (taken, err) = s.append((0..100).map(fin));
        assert!(taken > 0 && taken < 100, "{taken}");
        assert!(matches!(err, Some(SpoolError::Full)));
        assert!(s.bytes() <= 200);
    }

    #[test]
    fn a_damaged_line_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "not json\n").unwrap();
        let mut s = Spool::open(&path, 1 << 20).unwrap();
        s.append([fin(7)]);
        let (lines, _, bad) = s.next_chunk::<Final>(10).unwrap();
        assert_eq!((lines, bad), (vec![fin(7)], 1));
    }
}
