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

use super::RedisTier;
use super::message::{CHANNEL, Update, apply};
use super::redis_tier::CONNECT_TIMEOUT;
use crate::reputation::live_cache::LiveCache;
use futures_util::StreamExt;

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
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster update subscription failed (check cluster.redis_url and the password); retrying every second")
            }
            Err(_) => tracing::debug!("cluster update subscription: connect timed out"),
        }
        tokio::time::sleep(super::PROBE_INTERVAL).await;
    }
}
