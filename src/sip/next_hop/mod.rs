//! Where initial requests go: `sip.next_hop`, one URI or a list, each
//! located by DNS as RFC 3263 says ([`resolve`]), in the order to try, with
//! each target's health ([`health`]).
//!
//! The proxy asks [`NextHops::first`] for every initial INVITE and
//! [`NextHops::after`] when one target fails (it timed out before any
//! provisional response, refused the connection, or answered 503): serial
//! forking, a new branch each (RFC 3261 §16.6–16.7). Targets marked down
//! by OPTIONS pings are skipped while another one is up. The answer is
//! looked up again when its shortest TTL runs out ([`NextHops::refresh`]);
//! a failed lookup keeps the last good answer.
//!
//! The call path reads the current list with one atomic load: the list is
//! replaced whole, never edited in place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::transport::{Peer, Transport};
use super::uri::SipUri;

pub mod health;
pub mod resolve;

pub use health::{Health, HealthLimits};
pub use resolve::{Locator, ResolveError, Resolved};

/// One target in the current list: where, how it was found, how it is.
#[derive(Debug, Clone)]
pub struct Target {
    pub at: Resolved,
    pub health: Arc<Health>,
}

/// One target as `sipsentry next-hops` and `GET /api/v1/next-hops` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetStatus {
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    pub address: String,
    /// The name its TLS certificate must carry (an SRV target or the
    /// configured host).
    pub host: Option<String>,
    pub priority: u16,
    pub weight: u16,
    /// The configured URI it came from.
    pub from: String,
    /// False once OPTIONS pings marked it down.
    pub up: bool,
}

/// The configured next hops, located.
pub struct NextHops {
    uris: Vec<SipUri>,
    locator: Option<Locator>,
    limits: HealthLimits,
    current: ArcSwap<Vec<Target>>,
    /// When the current list must be looked up again.
    valid_until: parking_lot::Mutex<Instant>,
}

impl std::fmt::Debug for NextHops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextHops")
            .field("targets", &self.current.load().len())
            .finish_non_exhaustive()
    }
}

impl NextHops {
    /// Locates every URI (DNS through `dns_servers`, or the system's
    /// resolvers when empty). Fails when a URI yields no address at all.
    pub async fn locate(
        uris: Vec<SipUri>,
        dns_servers: &[String],
        limits: HealthLimits,
    ) -> Result<NextHops, ResolveError> {
        let needs_dns = uris
            .iter()
            .any(|u| u.host.parse::<std::net::IpAddr>().is_err());
        let locator = if needs_dns {
            Some(Locator::new(dns_servers)?)
        } else {
            None
        };
        let hops = NextHops {
            uris,
            locator,
            limits,
            current: ArcSwap::from_pointee(Vec::new()),
            valid_until: parking_lot::Mutex::new(Instant::now()),
        };
        hops.refresh_now().await?;
        Ok(hops)
    }

    /// A fixed list of addresses (no DNS), for tests and embedding.
    pub fn fixed(peers: &[Peer], limits: HealthLimits) -> NextHops {
        let targets = peers
            .iter()
            .map(|p| Target {
                at: Resolved {
                    peer: *p,
                    host: None,
                    priority: 0,
                    weight: 0,
                    from: p.addr().to_string(),
                },
                health: Arc::new(Health::default()),
            })
            .collect();
        NextHops {
            uris: Vec::new(),
            locator: None,
            limits,
            current: ArcSwap::from_pointee(targets),
            valid_until: parking_lot::Mutex::new(Instant::now() + resolve::STATIC_TTL),
        }
    }

    /// Looks every URI up again and replaces the list; health carries over
    /// for targets that stay. On failure the list in use stays.
    async fn refresh_now(&self) -> Result<(), ResolveError> {
        let mut targets = Vec::new();
        let mut until = Instant::now() + resolve::STATIC_TTL;
        let old: HashMap<Peer, Arc<Health>> = self
            .current
            .load()
            .iter()
            .map(|t| (t.at.peer, Arc::clone(&t.health)))
            .collect();
        for uri in &self.uris {
            let answer = match (&self.locator, Locator::fixed(uri)) {
                (_, Some(fixed)) => fixed,
                (Some(l), None) => l.locate(uri).await?,
                (None, None) => {
                    return Err(ResolveError::NotFound {
                        uri: uri.text.clone(),
                        reason: "a host name, but no resolver".into(),
                    });
                }
            };
            until = until.min(answer.valid_until);
            for at in answer.targets {
                if targets.iter().any(|t: &Target| t.at.peer == at.peer) {
                    continue;
                }
                let health = old
                    .get(&at.peer)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Health::default()));
                targets.push(Target { at, health });
            }
        }
        let changed = {
            let now = self.current.load();
            now.len() != targets.len() || now.iter().zip(&targets).any(|(a, b)| a.at != b.at)
        };
        if changed {
            let list: Vec<String> = targets.iter().map(|t| describe(&t.at)).collect();
            tracing::info!(targets = ?list, "next hops located");
        }
        self.current.store(Arc::new(targets));
        *self.valid_until.lock() = until;
        Ok(())
    }

    /// Looks the list up again whenever its TTL runs out, until dropped
    /// from the runtime, and tells `transport` the host names the new
    /// targets' TLS certificates must carry. A failed lookup is logged and
    /// retried after a few seconds, the old list still in use.
    pub async fn refresh(self: Arc<Self>, transport: Arc<Transport>) {
        self.name_tls_targets(&transport);
        if self.locator.is_none() {
            return;
        }
        loop {
            let until = *self.valid_until.lock();
            tokio::time::sleep_until(until.into()).await;
            match self.refresh_now().await {
                Ok(()) => self.name_tls_targets(&transport),
                Err(e) => {
                    tracing::warn!(error = %e, "next hop lookup failed; keeping the targets in use");
                    *self.valid_until.lock() = Instant::now() + RETRY_LOOKUP;
                }
            }
        }
    }

    /// Outbound TLS to each target verifies its host name (an SRV target or
    /// the configured host), not just its address.
    pub fn name_tls_targets(&self, transport: &Transport) {
        for t in self.current.load().iter().filter(|t| t.at.peer.is_tls()) {
            if let Some(host) = &t.at.host {
                transport.set_tls_name(t.at.peer.addr(), host);
            }
        }
    }

    /// The current targets, in order.
    pub fn targets(&self) -> Arc<Vec<Target>> {
        self.current.load_full()
    }

    /// The current targets as shown to operators.
    pub fn status(&self) -> Vec<TargetStatus> {
        self.current
            .load()
            .iter()
            .map(|t| TargetStatus {
                transport: match t.at.peer {
                    Peer::Udp(_) => "udp",
                    Peer::Tcp(_) => "tcp",
                    Peer::Tls(_) => "tls",
                },
                address: t.at.peer.addr().to_string(),
                host: t.at.host.clone(),
                priority: t.at.priority,
                weight: t.at.weight,
                from: t.at.from.clone(),
                up: t.health.is_up(),
            })
            .collect()
    }

    /// Where an initial request goes: the first target that is up (the
    /// first of all when every one is down: a guess beats a refusal), and
    /// its place in the list.
    pub fn first(&self) -> Option<(usize, Peer)> {
        let list = self.current.load();
        list.iter()
            .position(|t| t.health.is_up())
            .or((!list.is_empty()).then_some(0))
            .map(|i| (i, list[i].at.peer))
    }

    /// The next target to try after the one at `index` failed: the next
    /// that is up, after `index` in the list.
    pub fn after(&self, index: usize) -> Option<(usize, Peer)> {
        let list = self.current.load();
        list.iter()
            .enumerate()
            .skip(index + 1)
            .find(|(_, t)| t.health.is_up())
            .map(|(i, t)| (i, t.at.peer))
    }

    /// Whether `ip` is one of the targets' (in-dialog requests from a PBX
    /// are accepted from there).
    pub fn has_ip(&self, ip: std::net::IpAddr) -> bool {
        self.current
            .load()
            .iter()
            .any(|t| t.at.peer.addr().ip() == ip)
    }

    /// The thresholds pings apply.
    pub fn limits(&self) -> HealthLimits {
        self.limits
    }
}

/// After a failed lookup, when to try again.
pub const RETRY_LOOKUP: std::time::Duration = std::time::Duration::from_secs(5);

/// A target as logged and listed: `udp 192.0.2.10:5060 (pbx1.example, priority 10)`.
pub fn describe(t: &Resolved) -> String {
    let transport = t.peer.via_name().to_ascii_lowercase();
    match &t.host {
        Some(h) => format!(
            "{transport} {} ({h}, priority {}, weight {})",
            t.peer.addr(),
            t.priority,
            t.weight
        ),
        None => format!("{transport} {}", t.peer.addr()),
    }
}

impl crate::metrics::Collect for NextHops {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        let list = self.current.load();
        let family = out.gauge(
            "sipsentry_next_hop_up",
            "1 while a next-hop target answers (or is not pinged), 0 once pings marked it down",
        );
        for t in list.iter() {
            let target = format!(
                "{}:{}",
                t.at.peer.via_name().to_ascii_lowercase(),
                t.at.peer.addr()
            );
            family.set(
                vec![("target", target)],
                f64::from(u8::from(t.health.is_up())),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<Peer> {
        (1..=3)
            .map(|i| Peer::Udp(format!("192.0.2.{i}:5060").parse().unwrap()))
            .collect()
    }

    #[test]
    fn calls_go_to_the_first_target_up_and_fail_over_past_those_down() {
        let limits = HealthLimits {
            down_after: 1,
            up_after: 1,
        };
        let hops = NextHops::fixed(&peers(), limits);
        let p = peers();
        assert_eq!(hops.first(), Some((0, p[0])));
        assert_eq!(hops.after(0), Some((1, p[1])));
        assert_eq!(hops.after(2), None, "the last has no next");
        hops.targets()[1].health.missed(limits);
        assert_eq!(hops.after(0), Some((2, p[2])), "a target down is skipped");
        hops.targets()[0].health.missed(limits);
        assert_eq!(hops.first(), Some((2, p[2])));
        hops.targets()[2].health.missed(limits);
        assert_eq!(
            hops.first(),
            Some((0, p[0])),
            "every target down: the first is tried anyway"
        );
        assert!(hops.has_ip("192.0.2.2".parse().unwrap()));
        assert!(!hops.has_ip("192.0.2.9".parse().unwrap()));
    }
}
