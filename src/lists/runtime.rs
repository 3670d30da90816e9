//! The runtime lists as the call path reads them: a snapshot in memory,
//! replaced whole when the store changes, so a lookup takes no lock and
//! never touches the disk.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Entry, Feedback, ListKind, Origin, Report};

/// A matched entry: what the decision's evidence quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed<'a> {
    pub pattern: &'a str,
    pub origin: Origin,
    pub comment: &'a str,
}

#[derive(Debug, Default)]
struct Set {
    /// Exact numbers → index in `entries`.
    exact: HashMap<String, usize>,
    /// Prefixes (without the `*`) → index in `entries`.
    prefixes: Vec<(String, usize)>,
    entries: Vec<Entry>,
}

impl Set {
    fn push(&mut self, e: Entry) {
        let i = self.entries.len();
        match e.pattern.strip_suffix('*') {
            Some(prefix) => self.prefixes.push((prefix.to_string(), i)),
            None => {
                self.exact.insert(e.pattern.clone(), i);
            }
        }
        self.entries.push(e);
    }

    fn find(&self, e164: &str, now_ms: i64) -> Option<&Entry> {
        let live = |i: &usize| {
            let e = &self.entries[*i];
            e.expires_ms.is_none_or(|x| x > now_ms).then_some(e)
        };
        self.exact.get(e164).and_then(live).or_else(|| {
            self.prefixes
                .iter()
                .filter(|(p, _)| e164.starts_with(p.as_str()))
                .find_map(|(_, i)| live(i))
        })
    }
}

/// The lists and the reported-spam callers at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    allow: Set,
    deny: Set,
    /// Callers whose latest report says spam → that report.
    spam: HashMap<String, Report>,
    /// The store's change counter this was read at.
    pub version: i64,
}

impl Snapshot {
    pub fn new(entries: Vec<Entry>, spam: Vec<Report>, version: i64) -> Self {
        let mut s = Snapshot {
            version,
            ..Default::default()
        };
        for e in entries {
            match e.list {
                ListKind::Allow => s.allow.push(e),
                ListKind::Deny => s.deny.push(e),
            }
        }
        for r in spam {
            if r.verdict == Feedback::Spam {
                s.spam.insert(r.number.clone(), r);
            }
        }
        s
    }

    fn is_empty(&self) -> bool {
        self.allow.entries.is_empty() && self.deny.entries.is_empty() && self.spam.is_empty()
    }

    /// Runs `f` with the entry of `list` matching `e164`, if there is one
    /// that has not expired. Free when the lists are empty (no clock read).
    pub fn find<T>(
        &self,
        list: ListKind,
        e164: &str,
        f: impl FnOnce(Listed<'_>) -> T,
    ) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let set = match list {
            ListKind::Allow => &self.allow,
            ListKind::Deny => &self.deny,
        };
        let e = set.find(e164, crate::history::now_ms())?;
        Some(f(Listed {
            pattern: &e.pattern,
            origin: e.origin,
            comment: &e.comment,
        }))
    }

    /// Runs `f` with the report that marks `e164` as spam, if any.
    pub fn spam_report<T>(&self, e164: &str, f: impl FnOnce(&Report) -> T) -> Option<T> {
        self.spam.get(e164).map(f)
    }
}

/// The runtime lists shared by the pipeline, the admin API and the poller.
#[derive(Debug, Default)]
pub struct RuntimeLists {
    snapshot: ArcSwap<Snapshot>,
}

impl RuntimeLists {
    pub fn new(snapshot: Snapshot) -> Self {
        RuntimeLists {
            snapshot: ArcSwap::from_pointee(snapshot),
        }
    }

    /// Puts a new snapshot in force for the next call.
    pub fn replace(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    pub fn version(&self) -> i64 {
        self.snapshot.load().version
    }

    /// The snapshot in force, for several lookups on one load.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// [`Snapshot::find`] on the snapshot in force.
    pub fn find<T>(
        &self,
        list: ListKind,
        e164: &str,
        f: impl FnOnce(Listed<'_>) -> T,
    ) -> Option<T> {
        self.snapshot.load().find(list, e164, f)
    }

    /// [`Snapshot::spam_report`] on the snapshot in force.
    pub fn spam_report<T>(&self, e164: &str, f: impl FnOnce(&Report) -> T) -> Option<T> {
        self.snapshot.load().spam_report(e164, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(list: ListKind, pattern: &str, expires_ms: Option<i64>) -> Entry {
        Entry {
            list,
            pattern: pattern.into(),
            comment: String::new(),
            added_by: "test".into(),
            added_at: String::new(),
            expires_at: None,
            expires_ms,
            origin: Origin::Operator,
            read_only: false,
        }
    }

    #[test]
    fn exact_and_prefix_entries_match_until_they_expire() {
        let now = crate::history::now_ms();
        let lists = RuntimeLists::new(Snapshot::new(
            vec![
                entry(ListKind::Deny, "+15551234567", None),
                entry(ListKind::Deny, "+1666*", Some(now - 1)),
                entry(ListKind::Allow, "+1777*", Some(now + 60_000)),
            ],
            vec![],
            1,
        ));
        let pattern = |l, n| lists.find(l, n, |e| e.pattern.to_string());
        assert_eq!(
            pattern(ListKind::Deny, "+15551234567").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(pattern(ListKind::Deny, "+16661234567"), None, "expired");
        assert_eq!(
            pattern(ListKind::Allow, "+17771234567").as_deref(),
            Some("+1777*")
        );
        assert_eq!(pattern(ListKind::Allow, "+15551234567"), None);
    }
}
