//! A second level behind the live cache, shared by the nodes of a cluster.
//!
//! The live cache is per process. When several nodes screen the same trunk,
//! a number one node has paid to look up should not be paid for again by the
//! next: on a local miss the lookup engine asks the [`SharedTier`] first, and
//! claims the lookup there so that one node in the cluster asks the provider
//! while the others wait for its answer. The tier also spaces a provider's
//! requests across the cluster and carries webhook updates to every node.
//!
//! The engine knows only this trait; the Redis implementation lives in
//! `crate::cluster`. Every method degrades to "unavailable": the shared tier
//! is an optimisation, and a call never waits on it longer than its own
//! timeout or fails because it is down.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Evidence;

/// A boxed future borrowing the tier.
pub type SharedFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the shared tier says about one (provider, number) on a local miss.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Claim {
    /// A node already asked: its answer (`None` = the provider had no data).
    Answer(Option<Evidence>),
    /// Nobody has: this node now holds the lookup and must publish the answer
    /// (or [`SharedTier::release`] on failure).
    Claimed,
    /// Another node is asking right now: wait and look again.
    Busy,
    /// The tier is down or slow: go on with this node alone.
    Unavailable,
}

/// The cluster-wide verdict of a provider's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Slot {
    /// Send after waiting this long (the slot is reserved).
    After(Duration),
    /// No slot within the allowed wait.
    Refused,
    /// The tier is down or slow: the node's own limit alone applies.
    Unavailable,
}

/// State shared by the nodes of a cluster, in a store they all reach.
pub trait SharedTier: Send + Sync {
    /// The shared answer for `(provider, e164)`, or the claim to fetch it.
    /// `hold` bounds the claim: if this node dies, another takes over after it.
    fn fetch_or_claim<'a>(
        &'a self,
        provider: &'a str,
        e164: &'a str,
        hold: Duration,
    ) -> SharedFuture<'a, Claim>;

    /// Stores this node's answer for `ttl` and releases its claim. With
    /// `broadcast`, every node also replaces what its own live cache holds
    /// (a webhook's status change must not wait for the local entry to expire).
    fn publish<'a>(
        &'a self,
        provider: &'a str,
        e164: &'a str,
        answer: Option<&'a Evidence>,
        ttl: Duration,
        broadcast: bool,
    ) -> SharedFuture<'a, ()>;

    /// Gives up a claim without an answer (the provider failed), so another
    /// node may try at once.
    fn release<'a>(&'a self, provider: &'a str, e164: &'a str) -> SharedFuture<'a, ()>;

    /// A send slot under `per_second` requests to `provider`, cluster-wide,
    /// waiting at most `max_wait`.
    fn slot<'a>(
        &'a self,
        provider: &'a str,
        per_second: u32,
        max_wait: Duration,
    ) -> SharedFuture<'a, Slot>;
}
