//! Locating a SIP server (RFC 3263 §4): from a configured URI to the
//! addresses to try, in order, with the transport of each.
//!
//! - an IP address: itself (the URI's transport; port 5060, 5061 for TLS);
//! - a name with a port, or with `;transport=`: A/AAAA, or SRV for that
//!   transport when there is no port;
//! - a name alone: NAPTR (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, by order and
//!   preference; `sips:` takes only `SIPS+D2T`), the first whose SRV name
//!   has records; without NAPTR, SRV for `_sip._udp`, `_sip._tcp`,
//!   `_sips._tcp` in that order (`sips:`: `_sips._tcp` only); without SRV,
//!   A/AAAA with the default port.
//!
//! SRV targets are ordered by priority, and within one priority by a
//! weighted random draw (RFC 2782), so weights spread calls over equal
//! servers. The answer is valid until the shortest TTL among the records
//! it was built from. Lookups go through hickory-resolver, with the
//! system's resolver configuration or `sip.dns_servers`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;

use crate::sip::transport::Peer;
use crate::sip::uri::{DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT, SipUri};

/// How long an answer from a static address (or one whose records carry
/// no usable TTL) is kept before it is looked up again.
pub const STATIC_TTL: Duration = Duration::from_secs(3600);
/// The shortest time an answer is kept, whatever its TTL says: a zero TTL
/// must not turn into a lookup per call.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// How long one DNS query may take, and how often it is tried, before a
/// lookup fails (and the list in use stays).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
pub const QUERY_ATTEMPTS: usize = 2;

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub peer: Peer,
    /// The host name its TLS certificate must carry (the SRV target, or the
    /// configured host); `None` for an address given as such.
    pub host: Option<String>,
    /// SRV priority and weight (0 when there was no SRV).
    pub priority: u16,
    pub weight: u16,
    /// The configured URI it came from.
    pub from: String,
}

/// A whole answer: the addresses in the order to try them, and until when
/// it holds.
#[derive(Debug, Clone)]
pub struct Answer {
    pub targets: Vec<Resolved>,
    pub valid_until: Instant,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("sip.dns_servers: {0:?} is not an address (give \"ip\" or \"ip:port\")")]
    Server(String),
    #[error("cannot read the system's resolver configuration ({0}); set sip.dns_servers")]
    System(String),
    #[error("{uri}: no address found ({reason})")]
    NotFound { uri: String, reason: String },
}

/// The DNS side of next-hop location.
pub struct Locator {
    dns: TokioResolver,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator").finish_non_exhaustive()
    }
}

/// The transports of NAPTR services and SRV prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    Tcp,
    Tls,
}

impl Kind {
    fn srv_prefix(self) -> &'static str {
        match self {
            Kind::Udp => "_sip._udp",
            Kind::Tcp => "_sip._tcp",
            Kind::Tls => "_sips._tcp",
        }
    }

    fn peer(self, addr: SocketAddr) -> Peer {
        match self {
            Kind::Udp => Peer::Udp(addr),
            Kind::Tcp => Peer::Tcp(addr),
            Kind::Tls => Peer::Tls(addr),
        }
    }

    fn default_port(self) -> u16 {
        if self == Kind::Tls {
            DEFAULT_SIPS_PORT
        } else {
            DEFAULT_SIP_PORT
        }
    }

    fn of(uri: &SipUri) -> Kind {
        if uri.tls {
            Kind::Tls
        } else if uri.tcp {
            Kind::Tcp
        } else {
            Kind::Udp
        }
    }
}

impl Locator {
    /// The answer for a URI whose host is an IP address, without DNS;
    /// `None` for a host name.
    pub fn fixed(uri: &SipUri) -> Option<Answer> {
        let ip = uri.host.parse::<IpAddr>().ok()?;
        Some(Answer {
            targets: vec![Resolved {
                peer: Kind::of(uri).peer(SocketAddr::new(ip, uri.port)),
                host: None,
                priority: 0,
                weight: 0,
                from: uri.text.clone(),
            }],
            valid_until: Instant::now() + STATIC_TTL,
        })
    }

    /// A locator asking `servers` (`ip` or `ip:port`), or the system's
    /// resolvers when empty.
    pub fn new(servers: &[String]) -> Result<Locator, ResolveError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| ResolveError::System(e.to_string()))?
        } else {
            let mut config = ResolverConfig::new();
            for s in servers {
                let addr = s
                    .parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| ResolveError::Server(s.clone()))?;
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = QUERY_ATTEMPTS;
        Ok(Locator {
            dns: builder.build(),
        })
    }

    /// Where `uri` is, in the order to try (RFC 3263 §4).
    pub async fn locate(&self, uri: &SipUri) -> Result<Answer, ResolveError> {
        let not_found = |reason: String| ResolveError::NotFound {
            uri: uri.text.clone(),
            reason,
        };
        let kind = Kind::of(uri);
        if let Some(answer) = Locator::fixed(uri) {
            return Ok(answer);
        }
        let domain = fqdn(&uri.host);
        let mut until = Instant::now() + STATIC_TTL;
        if !uri.explicit_port {
            for (kind, srv_name) in self.services(uri, &domain, &mut until).await {
                if let Some(targets) = self.srv(&srv_name, kind, uri, &mut until).await
                    && !targets.is_empty()
                {
                    return Ok(Answer {
                        targets,
                        valid_until: clamp(until),
                    });
                }
            }
        }
        let port = if uri.explicit_port {
            uri.port
        } else {
            kind.default_port()
        };
        let ips = self
            .dns
            .lookup_ip(domain.as_str())
            .await
            .map_err(|e| not_found(e.to_string()))?;
        until = until.min(ips.valid_until());
        let targets: Vec<Resolved> = ips
            .iter()
            .map(|ip| Resolved {
                peer: kind.peer(SocketAddr::new(ip, port)),
                host: Some(uri.host.clone()),
                priority: 0,
                weight: 0,
                from: uri.text.clone(),
            })
            .collect();
        if targets.is_empty() {
            return Err(not_found("no A or AAAA records".into()));
        }
        Ok(Answer {
            targets,
            valid_until: clamp(until),
        })
    }

    /// The SRV names to try for `uri`, with their transports: from NAPTR
    /// when the domain has any (and no transport was named), else the
    /// usual prefixes.
    async fn services(
        &self,
        uri: &SipUri,
        domain: &str,
        until: &mut Instant,
    ) -> Vec<(Kind, String)> {
        let wanted: &[Kind] = if uri.tls {
            &[Kind::Tls]
        } else if uri.explicit_transport {
            if uri.tcp { &[Kind::Tcp] } else { &[Kind::Udp] }
        } else {
            &[Kind::Udp, Kind::Tcp, Kind::Tls]
        };
        if !uri.explicit_transport
            && let Ok(naptr) = self.dns.lookup(domain, RecordType::NAPTR).await
        {
            *until = (*until).min(naptr.valid_until());
            let mut records: Vec<(u16, u16, Kind, String)> = naptr
                .iter()
                .filter_map(|r| match r {
                    RData::NAPTR(n) if n.flags().eq_ignore_ascii_case(b"s") => {
                        let kind = match n.services().to_ascii_uppercase().as_slice() {
                            b"SIP+D2U" => Kind::Udp,
                            b"SIP+D2T" => Kind::Tcp,
                            b"SIPS+D2T" => Kind::Tls,
                            _ => return None,
                        };
                        Some((n.order(), n.preference(), kind, n.replacement().to_ascii()))
                    }
                    _ => None,
                })
                .filter(|(_, _, k, _)| wanted.contains(k))
                .collect();
            if !records.is_empty() {
                records.sort_by_key(|(order, pref, _, _)| (*order, *pref));
                return records
                    .into_iter()
                    .map(|(_, _, k, name)| (k, name))
                    .collect();
            }
        }
        wanted
            .iter()
            .map(|k| (*k, format!("{}.{domain}", k.srv_prefix())))
            .collect()
    }

    /// The addresses an SRV name gives, ordered (priority, then a weighted
    /// draw); `None` when the name has no SRV records.
    async fn srv(
        &self,
        name: &str,
        kind: Kind,
        uri: &SipUri,
        until: &mut Instant,
    ) -> Option<Vec<Resolved>> {
        let srv = self.dns.srv_lookup(name).await.ok()?;
        *until = (*until).min(srv.as_lookup().valid_until());
        let mut records: Vec<(u16, u16, u16, String)> = srv
            .iter()
            .filter(|s| !s.target().is_root()) // "." : no service here
            .map(|s| (s.priority(), s.weight(), s.port(), s.target().to_ascii()))
            .collect();
        order_srv(&mut records, &mut rand_u32);
        let mut out = Vec::new();
        for (priority, weight, port, target) in records {
            let Ok(ips) = self.dns.lookup_ip(target.as_str()).await else {
                continue;
            };
            *until = (*until).min(ips.valid_until());
            let host = target.trim_end_matches('.').to_string();
            for ip in ips.iter() {
                out.push(Resolved {
                    peer: kind.peer(SocketAddr::new(ip, port)),
                    host: Some(host.clone()),
                    priority,
                    weight,
                    from: uri.text.clone(),
                });
            }
        }
        Some(out)
    }
}

/// A name as a fully qualified one (so the resolver's search list does not
/// apply).
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

fn clamp(until: Instant) -> Instant {
    until.max(Instant::now() + MIN_TTL)
}

/// A random number for the weighted draw (not for anything secret).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32
}

/// RFC 2782's order: by priority; within a priority, repeatedly pick one
/// at random with probability proportional to its weight (weight 0 ones
/// only when nothing heavier is left, as zero-weight records come first
/// in the running sum).
fn order_srv(records: &mut Vec<(u16, u16, u16, String)>, rand: &mut impl FnMut() -> u32) {
    records.sort_by_key(|r| (r.0, r.1));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = std::mem::take(records);
    while !rest.is_empty() {
        let priority = rest[0].0;
        let n = rest.iter().take_while(|r| r.0 == priority).count();
        let mut group: Vec<_> = rest.drain(..n).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.1)).sum();
            let pick = if total == 0 {
                0
            } else {
                let mut at = rand() % (total + 1);
                group
                    .iter()
                    .position(|r| {
                        let w = u32::from(r.1);
                        if at <= w && w > 0 {
                            true
                        } else {
                            at = at.saturating_sub(w);
                            false
                        }
                    })
                    .unwrap_or(group.len() - 1)
            };
            out.push(group.remove(pick));
        }
    }
    *records = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_records_go_by_priority_and_weights_share_within_one() {
        let rec = |p, w, name: &str| (p, w, 5060, name.to_string());
        let mut counts = std::collections::HashMap::new();
        let mut seed = 0u32;
        for _ in 0..2000 {
            let mut r = vec![rec(20, 0, "backup"), rec(10, 30, "a"), rec(10, 10, "b")];
            let mut rand = || {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                seed >> 8
            };
            order_srv(&mut r, &mut rand);
            assert_eq!(r[2].3, "backup", "the higher priority number goes last");
            *counts.entry(r[0].3.clone()).or_insert(0) += 1;
        }
        let (a, b) = (counts["a"], counts.get("b").copied().unwrap_or(0));
        assert!(
            a > 2 * b && b > 200,
            "weights 30:10 give about 3:1, got {a}:{b}"
        );
    }
}
