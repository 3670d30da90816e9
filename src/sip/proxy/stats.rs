//! The proxy's counters. Plain atomics in fixed arrays, not a registry: the
//! SIP thread bumps them per packet without hashing or locking. They are
//! read at scrape time ([`Collect`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Proxy, Screen};
use crate::metrics::{Collect, Scrape};
use crate::sip::message::Method;

/// Methods counted in [`Stats::requests`], in index order.
pub const METHODS: [&str; 7] = [
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "other",
];

#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    /// Requests received, by [`METHODS`] index.
    requests: [AtomicU64; METHODS.len()],
    /// Responses received, by class (index 0 = 1xx … 5 = 6xx).
    responses: [AtomicU64; 6],
    pub parse_errors: AtomicU64,
    pub forbidden: AtomicU64,
    pub invites_screened: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    /// New INVITEs answered 503 because the transaction table was full.
    pub refused_full: AtomicU64,
    /// Forwarded INVITEs given up on at Timer C (408 up; CANCEL down after
    /// a provisional).
    pub timer_c: AtomicU64,
    pub dropped: AtomicU64,
    /// INVITEs sent on to the next next-hop target after one failed.
    pub failovers: AtomicU64,
}

impl Stats {
    pub(super) fn count_request(&self, m: Method) {
        let i = match m {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Cancel => 2,
            Method::Bye => 3,
            Method::Options => 4,
            Method::Register => 5,
            _ => 6,
        };
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response by its status code (codes outside 100–699 are not
    /// counted).
    pub(super) fn count_response(&self, code: u16) {
        if let Some(slot) = (100..700)
            .contains(&code)
            .then(|| &self.responses[usize::from(code / 100) - 1])
        {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests received, by method name.
    pub fn requests(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        METHODS
            .iter()
            .zip(&self.requests)
            .map(|(m, n)| (*m, n.load(Ordering::Relaxed)))
    }

    /// Responses received, by class ("1xx" … "6xx").
    pub fn responses(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"]
            .into_iter()
            .zip(&self.responses)
            .map(|(c, n)| (c, n.load(Ordering::Relaxed)))
    }
}

impl<S: Screen> Collect for Proxy<S> {
    fn collect(&self, out: &mut Scrape) {
        let st = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let requests = out.counter("sipsentry_sip_requests", "SIP requests received by method");
        for (method, n) in st.requests() {
            requests.count(vec![("method", method.to_string())], n);
        }
        let responses = out.counter("sipsentry_sip_responses", "SIP responses received by class");
        for (class, n) in st.responses() {
            responses.count(vec![("class", class.to_string())], n);
        }
        for (name, help, n) in [
            (
                "sipsentry_sip_parse_errors",
                "SIP messages that could not be parsed or were malformed",
                &st.parse_errors,
            ),
            (
                "sipsentry_sip_forbidden",
                "Requests refused: source outside sip.accept_from",
                &st.forbidden,
            ),
            (
                "sipsentry_sip_retransmissions_absorbed",
                "Retransmitted INVITEs answered from their transaction, not forwarded again",
                &st.retransmissions_absorbed,
            ),
            (
                "sipsentry_sip_dropped",
                "Messages dropped without an answer (e.g. a response whose Via is not ours)",
                &st.dropped,
            ),
            (
                "sipsentry_sip_timer_c",
                "Forwarded calls the PBX left without a final response past sip.timer_c_s (408 upstream; CANCELled if the PBX sent a provisional)",
                &st.timer_c,
            ),
            (
                "sipsentry_sip_failovers",
                "INVITEs sent on to the next next-hop target after one sent nothing, refused the connection or answered 503",
                &st.failovers,
            ),
            (
                "sipsentry_sip_refused_full",
                "New calls answered 503: sip.max_transactions calls were remembered",
                &st.refused_full,
            ),
        ] {
            out.counter(name, help).count(vec![], load(n));
        }
        out.gauge(
            "sipsentry_sip_transactions",
            "INVITE transactions remembered now (kept 64xT1 after their last change)",
        )
        .set(vec![], self.transactions() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_is_counted_under_its_own_name() {
        let stats = Stats::default();
        for (i, name) in METHODS.iter().enumerate() {
            // "other" stands for every method without a slot of its own.
            let wire = if *name == "other" { "PRACK" } else { name };
            for _ in 0..=i {
                stats.count_request(Method::from_bytes(wire.as_bytes()));
            }
        }
        let counted: Vec<(&str, u64)> = stats.requests().collect();
        let expected: Vec<(&str, u64)> = METHODS
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, i as u64 + 1))
            .collect();
        assert_eq!(counted, expected);
    }

    #[test]
    fn responses_are_counted_by_class_and_nonsense_codes_are_not() {
        let stats = Stats::default();
        for code in [100, 180, 200, 302, 404, 503, 603, 99, 700, 0] {
            stats.count_response(code);
        }
        let counted: Vec<u64> = stats.responses().map(|(_, n)| n).collect();
        assert_eq!(counted, [2, 1, 1, 1, 1, 1]);
    }
}
