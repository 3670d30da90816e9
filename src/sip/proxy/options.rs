//! The `[sip]` section: where the proxy listens, where calls go, whom it
//! believes, and its limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::sip::next_hop::HealthLimits;
use crate::sip::transport::{TcpLimits, TlsOptions};
use crate::sip::uri::SipUri;

/// `sip.next_hop`: one URI, or a list tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum NextHopSetting {
    One(String),
    Many(Vec<String>),
}

impl NextHopSetting {
    /// The URIs as written, in order.
    pub fn uris(&self) -> Vec<&str> {
        match self {
            NextHopSetting::One(u) => vec![u.as_str()],
            NextHopSetting::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }

    /// Each URI parsed; the first bad one's error.
    pub fn parse(&self) -> Result<Vec<SipUri>, String> {
        let uris = self.uris();
        if uris.is_empty() {
            return Err(
                "is an empty list; give at least one URI such as \"sip:pbx.example\"".into(),
            );
        }
        uris.into_iter().map(SipUri::parse_config).collect()
    }
}

impl From<&str> for NextHopSetting {
    fn from(s: &str) -> Self {
        NextHopSetting::One(s.to_string())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub next_hop: NextHopSetting,
    /// DNS servers (`"ip"` or `"ip:port"`) asked for `next_hop` names in
    /// place of the system's resolvers.
    pub dns_servers: Vec<String>,
    /// How long an INVITE waits for any response from one next-hop target
    /// before it is sent to the next (Timer B, shortened while another
    /// target is left).
    pub failover_timeout_ms: u32,
    /// OPTIONS to every next-hop target this often, in seconds (0: no
    /// pings; targets are then always up).
    pub ping_interval_s: u32,
    /// A target is marked down after this many unanswered pings in a row.
    pub ping_down_after: u32,
    /// And up again after this many answers in a row.
    pub ping_up_after: u32,
    pub accept_from: Vec<IpNet>,
    pub trusted_peers: Vec<IpNet>,
    pub record_route: bool,
    /// After each datagram, keep polling the UDP socket without sleeping for
    /// this many microseconds (0 = off). Trades CPU for latency: see
    /// [`crate::sip::transport::udp`].
    pub busy_poll_us: u32,
    /// How long a new call's 100 Trying is held, in milliseconds (0: sent
    /// as the INVITE arrives; at most 200, RFC 3261 §17.2.1): it is sent
    /// only if no other response went upstream by then.
    pub trying_delay_ms: u32,
    /// INVITE transactions remembered at once (each 64×T1 after its last
    /// change, about 1.2 KB); new calls beyond get 503 Retry-After.
    pub max_transactions: usize,
    /// What remembered calls may hold, in MiB: each counts its INVITE twice
    /// (as received and as relayed) and 2¼ KiB; new calls beyond get 503
    /// Retry-After, as past `max_transactions`.
    pub max_held_mb: u32,
    /// The largest message accepted, in bytes (at most 65,536); a larger
    /// request gets 513 Message Too Large.
    pub max_message_bytes: usize,
    /// Timer C in seconds: how long a forwarded INVITE waits for a final
    /// response after the PBX's last provisional before the proxy CANCELs
    /// it and answers 408 (RFC 3261 §16.6: over 3 minutes; carriers often
    /// use 60–120 s as a ring timeout).
    pub timer_c_s: u32,
    /// Inbound TCP connections at once; at the limit new ones wait.
    pub tcp_max_connections: usize,
    /// Outbound TCP connections at once (counted apart from inbound ones).
    pub tcp_max_outbound: usize,
    /// Inbound TCP connections from one address at once.
    pub tcp_max_per_source: usize,
    /// A TCP connection with no complete message (or keep-alive) for this
    /// many seconds is closed.
    pub tcp_idle_s: u32,
    /// Once a message's first byte has arrived over TCP, the whole message
    /// must arrive within this many milliseconds.
    pub tcp_message_timeout_ms: u32,
    /// Where SIP over TLS is accepted (`"0.0.0.0:5061"`); empty: no TLS
    /// listener. Needs `tls_cert` and `tls_key`.
    pub tls_listen: String,
    /// The certificate chain served over TLS (PEM, leaf first), re-read on
    /// reload; also offered to a TLS next hop that asks for one.
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
    /// When set, inbound TLS connections must present a certificate issued
    /// by this CA (PEM): mutual TLS with trunks.
    pub tls_client_ca: PathBuf,
    /// Trusted beside the system's roots when connecting to a TLS next hop.
    pub tls_next_hop_ca: PathBuf,
    /// A TLS handshake, in or out, must finish within this many
    /// milliseconds.
    pub tls_handshake_timeout_ms: u32,
}

/// An empty path is "not set".
fn set(p: &std::path::Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_path_buf())
}

impl SipConfig {
    /// How long a 100 Trying is held; `None` when it is sent at once.
    pub fn trying_delay(&self) -> Option<Duration> {
        (self.trying_delay_ms > 0).then(|| Duration::from_millis(u64::from(self.trying_delay_ms)))
    }

    /// The TCP limits these options set.
    pub fn tcp_limits(&self) -> TcpLimits {
        TcpLimits {
            max_inbound: self.tcp_max_connections,
            max_outbound: self.tcp_max_outbound,
            max_per_source: self.tcp_max_per_source,
            idle: Duration::from_secs(u64::from(self.tcp_idle_s)),
            message_timeout: Duration::from_millis(u64::from(self.tcp_message_timeout_ms)),
            handshake_timeout: Duration::from_millis(u64::from(self.tls_handshake_timeout_ms)),
        }
    }

    /// The ping thresholds.
    pub fn health_limits(&self) -> HealthLimits {
        HealthLimits {
            down_after: self.ping_down_after,
            up_after: self.ping_up_after,
        }
    }

    /// The TLS listener's address, if one is configured.
    pub fn tls_listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.tls_listen.is_empty() {
            return Ok(None);
        }
        self.tls_listen.parse().map(Some).map_err(|_| {
            format!(
                "{:?} is not an address:port (e.g. \"0.0.0.0:5061\")",
                self.tls_listen
            )
        })
    }

    /// The files the `tls_*` keys name.
    pub fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            cert: set(&self.tls_cert),
            key: set(&self.tls_key),
            client_ca: set(&self.tls_client_ca),
            next_hop_ca: set(&self.tls_next_hop_ca),
        }
    }

    /// Whether anything asks for TLS: a listener, a certificate, a CA for
    /// next hops, or a next hop over TLS.
    pub fn uses_tls(&self) -> bool {
        let o = self.tls_options();
        !self.tls_listen.is_empty()
            || o.cert.is_some()
            || o.next_hop_ca.is_some()
            || self
                .next_hop
                .parse()
                .is_ok_and(|uris| uris.iter().any(|u| u.tls))
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let tcp = TcpLimits::default();
        Self {
            listen: "127.0.0.1:5060".parse().expect("static address"),
            next_hop: "sip:127.0.0.1:5080".into(),
            dns_servers: Vec::new(),
            failover_timeout_ms: 2000,
            ping_interval_s: 0,
            ping_down_after: crate::sip::next_hop::health::DOWN_AFTER,
            ping_up_after: crate::sip::next_hop::health::UP_AFTER,
            accept_from: vec!["0.0.0.0/0".parse().expect("static net")],
            trusted_peers: vec!["127.0.0.1/32".parse().expect("static net")],
            record_route: false,
            busy_poll_us: 0,
            trying_delay_ms: crate::sip::transaction::TRYING_DELAY.as_millis() as u32,
            max_transactions: crate::sip::transaction::MAX_TRANSACTIONS,
            max_held_mb: crate::sip::transaction::MAX_HELD_MB as u32,
            max_message_bytes: crate::sip::message::MAX_MESSAGE_BYTES,
            timer_c_s: crate::sip::transaction::TIMER_C.as_secs() as u32,
            tcp_max_connections: tcp.max_inbound,
            tcp_max_outbound: tcp.max_outbound,
            tcp_max_per_source: tcp.max_per_source,
            tcp_idle_s: tcp.idle.as_secs() as u32,
            tcp_message_timeout_ms: tcp.message_timeout.as_millis() as u32,
            tls_listen: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            tls_next_hop_ca: PathBuf::new(),
            tls_handshake_timeout_ms: tcp.handshake_timeout.as_millis() as u32,
        }
    }
}
