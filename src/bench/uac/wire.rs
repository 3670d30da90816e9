//! The messages the UAC sends: INVITE, ACK and BYE for call *i* of a run,
//! and the call index a response belongs to.

use std::net::SocketAddr;

use crate::sip::header::{self, NameAddr};
use crate::sip::message::{HeaderName, Message};

/// Per-run constants for building messages.
pub(super) struct Wire {
    pub(super) run: u32,
    pub(super) local: SocketAddr,
    pub(super) transport: &'static str,
    pub(super) targets: Vec<SocketAddr>,
    pub(super) called: String,
    pub(super) callers: Vec<String>,
    /// Header lines added to every INVITE, each ending in CRLF.
    pub(super) extra_headers: String,
}

const SDP: &str = "v=0\r\no=bench 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=sipsentry bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

impl Wire {
    pub(super) fn target_of(&self, i: u64) -> usize {
        (i % self.targets.len() as u64) as usize
    }

    pub(super) fn caller(&self, i: u64) -> String {
        if self.callers.is_empty() {
            format!("+1555{:07}", (i * 7919) % 10_000_000)
        } else {
            self.callers[(i % self.callers.len() as u64) as usize].clone()
        }
    }

    pub(super) fn ruri(&self, i: u64) -> String {
        format!(
            "sip:{}@{};user=phone",
            self.called,
            self.targets[self.target_of(i)]
        )
    }

    pub(super) fn invite(&self, i: u64) -> String {
        let (local, run, t) = (self.local, self.run, self.transport);
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK-sb{run}-{i}\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{local};user=phone>;tag=sb{i}\r\nTo: <{ruri}>\r\nCall-ID: sb{run}-{i}@bench\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:bench@{local}>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
             User-Agent: sipsentry-bench\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{SDP}",
            extra = self.extra_headers,
            ruri = self.ruri(i),
            caller = self.caller(i),
            len = SDP.len()
        )
    }

    /// ACK (`ack`) or BYE for call `i` after final response `resp`.
    pub(super) fn in_dialog(&self, method: &str, i: u64, resp: &Message, non2xx: bool) -> String {
        let (local, run, t) = (self.local, self.run, self.transport);
        let to = header::text(resp.header(HeaderName::To).unwrap_or_default()).unwrap_or_default();
        let contact = resp
            .header(HeaderName::Contact)
            .and_then(header::text)
            .and_then(|c| NameAddr::parse(&c).map(|n| n.uri.to_string()));
        // A non-2xx ACK is part of the INVITE transaction: same branch and URI.
        let (ruri, branch) = if non2xx {
            (self.ruri(i), format!("z9hG4bK-sb{run}-{i}"))
        } else {
            (
                contact.unwrap_or_else(|| self.ruri(i)),
                format!("z9hG4bK-sb{run}-{i}-{method}"),
            )
        };
        let cseq = if method == "BYE" { 2 } else { 1 };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{local};user=phone>;tag=sb{i}\r\nTo: {to}\r\nCall-ID: sb{run}-{i}@bench\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            caller = self.caller(i)
        )
    }

    /// The call index of a response of this run.
    pub(super) fn index(&self, msg: &Message) -> Option<u64> {
        let id = std::str::from_utf8(msg.call_id()).ok()?;
        let rest = id.strip_prefix("sb")?;
        let (run, rest) = rest.split_once('-')?;
        if run.parse::<u32>().ok()? != self.run {
            return None;
        }
        rest.split('@').next()?.parse().ok()
    }
}
