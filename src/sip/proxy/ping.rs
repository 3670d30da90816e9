//! OPTIONS pings to every next-hop target, every `sip.ping_interval_s`: a
//! target that leaves `sip.ping_down_after` pings in a row unanswered (or
//! answers them 408 or 503) is marked down and skipped while another is
//! up; `sip.ping_up_after` answers in a row bring it back. Any other
//! answer, even 404 or 405, shows the server is there.
//!
//! A ping is one request with a branch of its own (`z9hG4bK-ss-ping-…`);
//! its response is matched by that branch and goes no further. A ping
//! still unanswered when the next round starts counts as missed.

use std::sync::Arc;
use std::time::Duration;

use super::{BRANCH_PREFIX, Proxy, Screen};
use crate::sip::header::lossy;
use crate::sip::next_hop::health::Change;
use crate::sip::next_hop::{Health, describe};
use crate::sip::transport::Peer;

/// What the branch of every ping starts with.
pub const PING_BRANCH: &str = "z9hG4bK-ss-ping-";

/// A ping sent and not yet answered.
#[derive(Debug)]
pub(crate) struct Outstanding {
    health: Arc<Health>,
    target: String,
}

impl<S: Screen> Proxy<S> {
    /// Pings every target each `sip.ping_interval_s` until the task is
    /// dropped; returns at once when pings are off.
    pub async fn ping_next_hops(self: Arc<Self>) {
        debug_assert!(PING_BRANCH.starts_with(BRANCH_PREFIX));
        let every = u64::from(self.options.ping_interval_s);
        if every == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        loop {
            tick.tick().await;
            let limits = self.next_hops.limits();
            let missed: Vec<Outstanding> = {
                let keys: Vec<String> = self.pings.iter().map(|e| e.key().clone()).collect();
                keys.iter()
                    .filter_map(|k| self.pings.remove(k).map(|(_, v)| v))
                    .collect()
            };
            for m in missed {
                report(&m.target, m.health.missed(limits));
            }
            for target in self.next_hops.targets().iter() {
                seq += 1;
                let branch = format!("{PING_BRANCH}{seq:x}");
                self.pings.insert(
                    branch.clone(),
                    Outstanding {
                        health: Arc::clone(&target.health),
                        target: describe(&target.at),
                    },
                );
                let ping = self.options_request(target.at.peer, &branch);
                self.send(target.at.peer, ping);
            }
        }
    }

    /// A response to a ping: the target is there, unless it says 408 or
    /// 503.
    pub(super) fn on_ping_response(&self, branch: &str, code: u16) {
        let Some((_, ping)) = self.pings.remove(branch) else {
            return; // a late answer to a ping already counted as missed
        };
        let limits = self.next_hops.limits();
        let change = if code == 408 || code == 503 {
            ping.health.missed(limits)
        } else {
            ping.health.answered(limits)
        };
        report(&ping.target, change);
    }

    /// An OPTIONS request to `to` from the proxy itself.
    fn options_request(&self, to: Peer, branch: &str) -> bytes::Bytes {
        let via = self.via_line(branch, to);
        let via = lossy(&via);
        let host = &self.local.host;
        let addr = to.addr();
        let uri = match to {
            Peer::Udp(_) => format!("sip:{addr}"),
            Peer::Tcp(_) => format!("sip:{addr};transport=tcp"),
            Peer::Tls(_) => format!("sip:{addr};transport=tls"),
        };
        bytes::Bytes::from(format!(
            "OPTIONS {uri} SIP/2.0\r\n{via}Max-Forwards: 70\r\n\
             From: <sip:sipsentry@{host}>;tag={branch}\r\nTo: <{uri}>\r\n\
             Call-ID: {branch}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ))
    }
}

fn report(target: &str, change: Change) {
    match change {
        Change::WentDown => {
            tracing::warn!(
                target,
                "next hop target down: OPTIONS pings unanswered; calls skip it"
            )
        }
        Change::CameUp => tracing::info!(target, "next hop target up again"),
        Change::None => {}
    }
}
