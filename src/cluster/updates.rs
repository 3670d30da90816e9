//! Changes one node makes that every node must see at once, over Redis
//! pub/sub: a webhook's new answer for a number replaces what each node's
//! live cache holds.
//!
//! Pub/sub is fire-and-forget: a node that is disconnected when an update is
//! published misses it, and its live cache keeps the old answer until that
//! expires (`live_cache.ttl_minutes`). The shared answer in Redis is always
//! replaced, so a node that misses locally reads the new one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::RedisTier;
use super::redis_tier::CONNECT_TIMEOUT;
use crate::reputation::Evidence;
use crate::reputation::live_cache::LiveCache;

/// The pub/sub channel of every node.
pub const CHANNEL: &str = "sipsentry:updates";

/// One message on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Update {
    /// A provider's new answer for a number (`None`: no data).
    Live {
        node: String,
        provider: String,
        number: String,
        evidence: Option<Evidence>,
    },
}

/// Applies one update from another node to this node's live cache; `false`
/// when it is this node's own or names a provider not enabled here.
pub fn apply(update: Update, own_node: &str, cache: &LiveCache) -> bool {
    match update {
        Update::Live {
            node,
            provider,
            number,
            evidence,
        } => {
            if node == own_node {
                return false;
            }
            let Some(index) = cache.source_index(&provider) else {
                return false;
            };
            cache.put(index, &number, evidence);
            true
        }
    }
}

/// Subscribes to [`CHANNEL`] and applies what arrives, reconnecting after
/// [`super::PROBE_INTERVAL`] whenever the subscription drops. Runs until
/// cancelled.
pub async fn subscribe(tier: Arc<RedisTier>, cache: Arc<LiveCache>) {
    let mut connected_before = false;
    loop {
        let connect = async {
            let mut ps = tier.client().get_async_pubsub().await?;
            ps.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(mut ps)) => {
                tracing::info!(channel = CHANNEL, "subscribed to the cluster's updates");
                connected_before = true;
                let mut messages = ps.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Update>(&text) {
                        Ok(update) => {
                            if apply(update, tier.node_id(), &cache) {
                                tier.health
                                    .stats
                                    .updates_applied
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable cluster update ignored")
                        }
                    }
                }
                tracing::warn!("cluster update subscription lost; reconnecting");
            }
            Ok(Err(e)) if connected_before => {
                tracing::debug!(error = %e, "cluster update subscription: Redis not answering")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster update subscription failed"),
            Err(_) => tracing::debug!("cluster update subscription: connect timed out"),
        }
        tokio::time::sleep(super::PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::Source;
    use crate::reputation::live_cache::{Cached, LiveCacheConfig};

    fn update(node: &str, provider: &str) -> Update {
        Update::Live {
            node: node.into(),
            provider: provider.into(),
            number: "+15550001111".into(),
            evidence: Some(Evidence {
                source: Source::DidChecks,
                score: 91,
                category: Some("scam".into()),
                cached: false,
                latency_us: 0,
                raw: serde_json::json!({"webhook": "spam_status_changed"}).into(),
            }),
        }
    }

    #[test]
    fn an_update_from_another_node_replaces_the_live_answer_and_its_own_does_not() {
        let cache = LiveCache::new(&LiveCacheConfig::default(), vec!["didchecks"]);
        assert!(!apply(update("n1", "didchecks"), "n1", &cache));
        assert_eq!(cache.get(0, "+15550001111"), Cached::Miss);
        assert!(!apply(update("n2", "gilraen"), "n1", &cache));
        // Through its wire form, as it travels.
        let text = serde_json::to_string(&update("n2", "didchecks")).unwrap();
        assert!(text.contains(r#""kind":"live""#), "{text}");
        assert!(apply(serde_json::from_str(&text).unwrap(), "n1", &cache));
        assert!(matches!(cache.get(0, "+15550001111"), Cached::Hit(e) if e.score == 91));
    }
}
