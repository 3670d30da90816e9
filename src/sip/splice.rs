//! Byte-faithful editing: a relayed message is the received bytes with a few
//! ranges replaced, inserted or deleted. Everything not edited keeps its bytes
//! and its order, which is the relay contract of docs/sip.md.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

/// Edits a relayed message usually needs (Via, Max-Forwards, a label or
/// two, Record-Route) fit inline, so building a splice allocates nothing.
const INLINE_EDITS: usize = 8;

/// A source range and what replaces it (empty for a delete, an empty range
/// for an insert).
type Edit<'a> = (Range<usize>, Cow<'a, [u8]>);

/// A set of non-overlapping edits against one source buffer. Replacement
/// bytes are borrowed when they can be (the proxy's Via line, the display
/// prefix), so most edits cost no allocation.
#[derive(Debug, Default)]
pub struct Splice<'a> {
    edits: SmallVec<[Edit<'a>; INLINE_EDITS]>,
}

impl<'a> Splice<'a> {
    pub fn new() -> Self {
        Splice::default()
    }

    /// Inserts `bytes` before source offset `at`. Inserts at one offset keep
    /// the order they were added in.
    pub fn insert(&mut self, at: usize, bytes: impl Into<Cow<'a, [u8]>>) {
        self.edits.push((at..at, bytes.into()));
    }

    pub fn replace(&mut self, range: Range<usize>, bytes: impl Into<Cow<'a, [u8]>>) {
        self.edits.push((range, bytes.into()));
    }

    pub fn delete(&mut self, range: Range<usize>) {
        self.edits.push((range, Cow::Borrowed(&[])));
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Applies the edits. Edits are sorted by position (stable, so same-offset
    /// inserts keep their order); an edit overlapping an earlier one is a bug in
    /// the caller and is skipped rather than corrupting the message.
    ///
    /// The output is allocated at its exact final size: a buffer with spare
    /// room would cost a second allocation when frozen into `Bytes`.
    pub fn apply(mut self, src: &[u8]) -> Bytes {
        self.edits.sort_by_key(|(r, _)| (r.start, r.end));
        let added: usize = self.edits.iter().map(|(_, b)| b.len()).sum();
        let removed: usize = self.edits.iter().map(|(r, _)| r.len()).sum();
        let mut out = BytesMut::with_capacity((src.len() + added).saturating_sub(removed));
        let mut pos = 0;
        for (r, bytes) in &self.edits {
            if r.start < pos || r.end > src.len() {
                debug_assert!(false, "overlapping or out-of-range splice edit {r:?}");
                continue;
            }
            out.extend_from_slice(&src[pos..r.start]);
            out.extend_from_slice(bytes);
            pos = r.end;
        }
        out.extend_from_slice(&src[pos..]);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_source_order() {
        let mut s = Splice::new();
        s.replace(6..11, &b"there"[..]);
        s.insert(0, &b"A:"[..]);
        s.insert(0, &b"B:"[..]);
        s.delete(11..12);
        assert_eq!(&s.apply(b"hello world!")[..], b"A:B:hello there");
    }
}
