//! The shared tier in Redis: answers, claims and rate slots under keys named
//! by provider and number, each operation one script (one round trip).
//!
//! Keys carry a hash tag (`{provider:number}`), so an answer and its claim
//! sit in one slot should the keys ever be spread over a Redis Cluster.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo, Script};

use super::message::{CHANNEL, Update};
use super::{ClusterError, Health};
use crate::reputation::Evidence;
use crate::reputation::shared::{Claim, SharedFuture, SharedTier, Slot};

/// How long a connection attempt may take (the probe's and pub/sub's, not a
/// call's: a call's command is bounded by `redis_timeout_ms`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Returns `A<json>` (an answer), `C` (claimed for this node) or `B` (busy).
const FETCH_OR_CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return 'A' .. v end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'C' end
return 'B'
";

/// Stores the answer, drops the claim and, when asked, tells every node.
const PUBLISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
";

/// A generic cell rate algorithm on Redis' clock (so the nodes' clocks do
/// not matter): the key holds the theoretical arrival time of the next
/// request in µs; each caller reserves the next slot one interval on, or is
/// refused when that slot is further away than it may wait. Returns the wait
/// in µs, or -1.
const SLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.floor((wait + interval) / 1000) + 1000)
return wait
";

/// The cluster's shared tier, in one Redis.
pub struct RedisTier {
    conn: ConnectionManager,
    client: redis::Client,
    node_id: String,
    timeout: Duration,
    pub health: Arc<Health>,
    fetch_or_claim: Script,
    publish: Script,
    slot: Script,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisTier")
            .field("node_id", &self.node_id)
            .finish()
    }
}

fn answer_key(provider: &str, e164: &str) -> String {
    format!("sipsentry:answer:{{{provider}:{e164}}}")
}

fn claim_key(provider: &str, e164: &str) -> String {
    format!("sipsentry:claim:{{{provider}:{e164}}}")
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl RedisTier {
    /// A tier on `url`, connected on first use. Call inside a tokio runtime.
    /// `ca` (PEM) replaces the system's roots for a `rediss://` server.
    pub fn open(
        url: &str,
        password: Option<&str>,
        node_id: &str,
        timeout: Duration,
        ca: Option<Vec<u8>>,
    ) -> Result<RedisTier, ClusterError> {
        let bad = |e: redis::RedisError| ClusterError::Url {
            // The message of a parse error never repeats the URL's password.
            url: redact(url),
            message: e.to_string(),
        };
        let mut info = url.into_connection_info().map_err(bad)?;
        if let Some(pw) = password
            && info.redis_settings().password().is_none()
        {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = match ca {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(bad)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let conn = client.get_connection_manager_lazy(config).map_err(bad)?;
        Ok(RedisTier {
            conn,
            client,
            node_id: node_id.to_string(),
            timeout,
            health: Arc::new(Health::default()),
            fetch_or_claim: Script::new(FETCH_OR_CLAIM),
            publish: Script::new(PUBLISH),
            slot: Script::new(SLOT),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs one script under the call timeout and the breaker: `None` when
    /// Redis is down, slow or fails.
    async fn invoke<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Option<T> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        self.guarded(inv.invoke_async::<T>(&mut conn)).await
    }

    /// Awaits one command under the call timeout, counting its outcome in
    /// the breaker; not sent at all while Redis is marked down.
    async fn guarded<T>(&self, command: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        if !self.health.is_up() {
            self.health.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(v)) => {
                self.health.success();
                Some(v)
            }
            Ok(Err(e)) => {
                self.health.failure(&e);
                None
            }
            Err(_) => {
                let ms = self.timeout.as_millis();
                self.health
                    .failure(&format_args!("no answer within redis_timeout_ms ({ms} ms)"));
                None
            }
        }
    }

    /// Connects at once (so the first call does not pay for it), then,
    /// while Redis is marked down, pings it every [`super::PROBE_INTERVAL`];
    /// the first answer marks it up. A node that cannot reach Redis at start
    /// marks it down straight away: its calls do not wait on it.
    pub async fn probe_loop(self: Arc<Self>) {
        if !self.ping().await {
            self.health.mark_down(&"no answer at start");
        }
        let mut tick = tokio::time::interval(super::PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.health.is_up() && self.ping().await {
                self.health.success();
            }
        }
    }

    async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(CONNECT_TIMEOUT, ping).await, Ok(Ok(_)))
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

impl SharedTier for RedisTier {
    fn fetch_or_claim<'a>(
        &'a self,
        provider: &'a str,
        e164: &'a str,
        hold: Duration,
    ) -> SharedFuture<'a, Claim> {
        Box::pin(async move {
            let (answer, claim) = (answer_key(provider, e164), claim_key(provider, e164));
            let hold = millis(hold).to_string();
            let Some(reply) = self
                .invoke::<String>(
                    &self.fetch_or_claim,
                    &[&answer, &claim],
                    &[&self.node_id, &hold],
                )
                .await
            else {
                return Claim::Unavailable;
            };
            let stats = &self.health.stats;
            match reply.split_at_checked(1) {
                Some(("A", json)) => match serde_json::from_str::<Option<Evidence>>(json) {
                    Ok(ev) => {
                        stats.shared_hits.fetch_add(1, Ordering::Relaxed);
                        Claim::Answer(ev)
                    }
                    Err(e) => {
                        // Another version's record, or damage: ask again.
                        tracing::warn!(key = %answer, error = %e, "unreadable shared answer ignored");
                        Claim::Unavailable
                    }
                },
                Some(("C", _)) => {
                    stats.claims.fetch_add(1, Ordering::Relaxed);
                    Claim::Claimed
                }
                _ => {
                    stats.waits.fetch_add(1, Ordering::Relaxed);
                    Claim::Busy
                }
            }
        })
    }

    fn publish<'a>(
        &'a self,
        provider: &'a str,
        e164: &'a str,
        answer: Option<&'a Evidence>,
        ttl: Duration,
        broadcast: bool,
    ) -> SharedFuture<'a, ()> {
        Box::pin(async move {
            let Ok(stored) = serde_json::to_string(&answer) else {
                return;
            };
            let message = if broadcast {
                let update = Update::Live {
                    node: self.node_id.clone(),
                    provider: provider.to_string(),
                    number: e164.to_string(),
                    evidence: answer.cloned(),
                };
                serde_json::to_string(&update).unwrap_or_default()
            } else {
                String::new()
            };
            let channel = if broadcast { CHANNEL } else { "" };
            let ttl = millis(ttl).to_string();
            let (answer, claim) = (answer_key(provider, e164), claim_key(provider, e164));
            if self
                .invoke::<i64>(
                    &self.publish,
                    &[&answer, &claim],
                    &[&stored, &ttl, channel, &message],
                )
                .await
                .is_some()
                && broadcast
            {
                self.health
                    .stats
                    .updates_published
                    .fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn release<'a>(&'a self, provider: &'a str, e164: &'a str) -> SharedFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(claim_key(provider, e164));
            self.guarded(cmd.query_async::<i64>(&mut conn)).await;
        })
    }

    fn slot<'a>(
        &'a self,
        provider: &'a str,
        per_second: u32,
        max_wait: Duration,
    ) -> SharedFuture<'a, Slot> {
        Box::pin(async move {
            let key = format!("sipsentry:rate:{{{provider}}}");
            let interval = (1_000_000 / u64::from(per_second.max(1))).to_string();
            let max_wait = (max_wait.as_micros() as u64).to_string();
            match self
                .invoke::<i64>(&self.slot, &[&key], &[&interval, &max_wait])
                .await
            {
                Some(w) if w >= 0 => Slot::After(Duration::from_micros(w as u64)),
                Some(_) => Slot::Refused,
                None => Slot::Unavailable,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_redacted_of_its_password() {
        assert_eq!(
            redact("redis://:hunter2@db:6379/0"),
            "redis://***@db:6379/0"
        );
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
    }

    #[test]
    fn an_answer_and_its_claim_share_a_hash_tag() {
        let (a, c) = (
            answer_key("didchecks", "+1555"),
            claim_key("didchecks", "+1555"),
        );
        let tag = |k: &str| k[k.find('{').unwrap()..].to_string();
        assert_eq!(tag(&a), tag(&c));
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn a_bad_url_is_refused_with_what_to_write() {
        let e = RedisTier::open("http://x", None, "n", Duration::from_millis(5), None).unwrap_err();
        assert!(e.to_string().contains("redis://host:port"), "{e}");
    }
}
