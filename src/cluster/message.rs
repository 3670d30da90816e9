//! What the nodes of a cluster tell each other on Redis pub/sub, and how a
//! node applies it.

use serde::{Deserialize, Serialize};

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
