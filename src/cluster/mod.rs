//! Many nodes, one view: the state a cluster of sipsentry nodes shares.
//!
//! With `[cluster] redis_url` set, each node keeps its in-process live cache
//! as the first level and puts Redis behind it ([`RedisTier`], the lookup
//! engine's [`SharedTier`](crate::reputation::shared::SharedTier)): a number
//! one node has looked up is answered from Redis on every other node, one
//! node at a time asks a provider about a number, a provider's rate limit
//! holds across the cluster, and a webhook's update reaches every node's
//! first level through pub/sub ([`updates`]).
//!
//! Redis is never in a call's way for longer than `redis_timeout_ms`: after
//! [`FAILURES_TO_DOWN`] failures in a row the node stops asking it (calls go
//! on with the first level alone) and a probe reconnects every
//! [`PROBE_INTERVAL`] until it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod message;
mod redis_tier;
pub mod updates;

pub use redis_tier::RedisTier;

/// Failures in a row (errors or timeouts) that mark Redis down.
pub const FAILURES_TO_DOWN: u32 = 3;

/// How often a node that has marked Redis down tries it again.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// `[cluster]`: how this node finds the others' shared state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://` (TLS); empty: a single node.
    pub redis_url: String,
    /// The environment variable holding the Redis password (`AUTH`), when
    /// the URL carries none.
    pub redis_password_env: String,
    /// This node's name in records and logs; empty: the host name.
    pub node_id: String,
    /// The longest a call waits for one Redis answer.
    pub redis_timeout_ms: u64,
    /// PEM roots for a `rediss://` server's certificate, in place of the
    /// system's (a private CA); empty: the system's roots.
    pub redis_ca_file: std::path::PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            redis_password_env: "SIPSENTRY_REDIS_PASSWORD".into(),
            node_id: String::new(),
            redis_timeout_ms: 5,
            redis_ca_file: std::path::PathBuf::new(),
        }
    }
}

impl ClusterConfig {
    /// Whether the node shares state with others.
    pub fn enabled(&self) -> bool {
        !self.redis_url.trim().is_empty()
    }

    /// `node_id`, or the host name when it is empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.trim().is_empty() {
            return self.node_id.trim().to_string();
        }
        host_name()
    }
}

/// The machine's host name (`node` when the system does not say).
pub fn host_name() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    if name.is_empty() {
        "node".into()
    } else {
        name.into_owned()
    }
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(
        "cluster.redis_url {url:?} is not a Redis URL ({message}); write redis://host:port/db or rediss://host:port/db"
    )]
    Url { url: String, message: String },
    #[error(
        "cluster.redis_ca_file {path}: {message} (it must hold the PEM certificate of the CA that signed the Redis server's certificate)"
    )]
    Ca {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Whether Redis is answering, as this node sees it: a breaker.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    failures: AtomicU32,
    /// Times Redis was marked down, and answers, misses, errors by kind.
    pub stats: ClusterStats,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub downs: AtomicU64,
    /// Shared answers a local miss found.
    pub shared_hits: AtomicU64,
    /// Lookups this node claimed (and so asked the provider itself).
    pub claims: AtomicU64,
    /// Looks at a number another node was asking about.
    pub waits: AtomicU64,
    /// Redis commands that failed or timed out.
    pub errors: AtomicU64,
    /// Commands not sent because Redis was marked down.
    pub skipped: AtomicU64,
    /// Webhook updates received from other nodes and applied here.
    pub updates_applied: AtomicU64,
    pub updates_published: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            stats: ClusterStats::default(),
        }
    }
}

impl Health {
    /// Whether to ask Redis at all.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("Redis answers again: shared lookups resumed");
        }
    }

    fn failure(&self, error: &dyn std::fmt::Display) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= FAILURES_TO_DOWN {
            self.mark_down(error);
        }
    }

    fn mark_down(&self, error: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.stats.downs.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = %error,
                "Redis not answering: calls go on with this node's live cache alone until it is back"
            );
        }
    }
}

impl crate::metrics::Collect for Health {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.gauge(
            "sipsentry_cluster_redis_up",
            "1 while Redis answers this node, 0 while the node screens alone",
        )
        .set(Vec::new(), if self.is_up() { 1.0 } else { 0.0 });
        out.counter(
            "sipsentry_cluster_redis_downs",
            "Times this node marked Redis down",
        )
        .count(Vec::new(), load(&self.stats.downs));
        let s = &self.stats;
        let f = out.counter(
            "sipsentry_cluster_shared",
            "Shared-tier events on a live-cache miss, by kind",
        );
        for (kind, n) in [
            ("hit", &s.shared_hits),
            ("claim", &s.claims),
            ("wait", &s.waits),
            ("error", &s.errors),
            ("skipped", &s.skipped),
            ("update_applied", &s.updates_applied),
            ("update_published", &s.updates_published),
        ] {
            f.count(vec![("kind", kind.to_string())], load(n));
        }
    }
}

/// What `serve` runs for a cluster node.
pub struct Cluster {
    pub node_id: String,
    pub tier: Arc<RedisTier>,
}

impl Cluster {
    /// Connects lazily (a node starts, and screens, with Redis down).
    pub fn from_config(c: &ClusterConfig) -> Result<Option<Cluster>, ClusterError> {
        if !c.enabled() {
            return Ok(None);
        }
        let password = std::env::var(&c.redis_password_env)
            .ok()
            .filter(|p| !p.is_empty());
        let node_id = c.node_id();
        let ca = if c.redis_ca_file.as_os_str().is_empty() {
            None
        } else {
            let pem = std::fs::read(&c.redis_ca_file).map_err(|e| ClusterError::Ca {
                path: c.redis_ca_file.clone(),
                message: e.to_string(),
            })?;
            if !pem.windows(11).any(|w| w == b"BEGIN CERTI") {
                return Err(ClusterError::Ca {
                    path: c.redis_ca_file.clone(),
                    message: "no PEM certificate in it".into(),
                });
            }
            Some(pem)
        };
        let tier = RedisTier::open(
            c.redis_url.trim(),
            password.as_deref(),
            &node_id,
            Duration::from_millis(c.redis_timeout_ms.max(1)),
            ca,
        )?;
        Ok(Some(Cluster {
            node_id,
            tier: Arc::new(tier),
        }))
    }
}
