//! The requests the proxy writes of its own accord: the CANCEL when Timer C
//! gives up on a forwarded INVITE the PBX never answered finally (RFC 3261
//! §16.8, §9.1), and the ACK of a 503 it absorbed to try the next target.
//!
//! CANCELs from the trunk are relayed ([`super::relay`]); these have no
//! received bytes to splice, so they are written from the INVITE as it was
//! forwarded: the same Request-URI, From, Call-ID and CSeq number, the same
//! Route set, and as their only Via the proxy's Via of that INVITE (same
//! branch), which is how the PBX finds the INVITE they belong to. With only
//! the proxy's Via, the PBX's 200 to a CANCEL ends at the proxy.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::header;
use super::message::{HeaderName, Message};
use super::respond;

/// Writes the CANCEL for `invite` as received, forwarded with `via_line`
/// (the proxy's Via, line end included) to `ruri`, without the Route elements
/// at `skip` (the proxy's own, removed when the INVITE was forwarded).
pub fn cancel_for(invite: &Message, via_line: &[u8], ruri: &[u8], skip: &[Range<usize>]) -> Bytes {
    hop_by_hop("CANCEL", invite, via_line, ruri, skip, None)
}

/// Writes the ACK for a non-2xx final response the proxy absorbed (a 503
/// from a next-hop target it then gave up, RFC 3261 §17.1.1.3): the
/// INVITE's Request-URI, Call-ID, From, CSeq number and Route set, the
/// branch it was sent with, and the response's To (with its tag), given
/// as the whole header value.
pub fn ack_for(
    invite: &Message,
    via_line: &[u8],
    ruri: &[u8],
    skip: &[Range<usize>],
    to: &[u8],
) -> Bytes {
    hop_by_hop("ACK", invite, via_line, ruri, skip, Some(to))
}

fn hop_by_hop(
    method: &str,
    invite: &Message,
    via_line: &[u8],
    ruri: &[u8],
    skip: &[Range<usize>],
    to: Option<&[u8]>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(invite.headers_end + 64);
    out.put_slice(method.as_bytes());
    out.put_slice(b" ");
    out.put_slice(ruri);
    out.put_slice(b" SIP/2.0\r\n");
    out.put_slice(via_line);
    let mut routes = Vec::new();
    for h in &invite.headers {
        match h.name {
            HeaderName::To if let Some(to) = to => {
                out.put_slice(b"To: ");
                out.put_slice(to);
                out.put_slice(b"\r\n");
            }
            HeaderName::From | HeaderName::To | HeaderName::CallId => {
                respond::copy_line(&mut out, invite, h);
            }
            HeaderName::Route => {
                let v = invite.value(h);
                for r in header::split_commas(v) {
                    let at = h.value.start + r.start..h.value.start + r.end;
                    if !skip.contains(&at) {
                        routes.push(at);
                    }
                }
            }
            _ => {}
        }
    }
    for r in routes {
        out.put_slice(b"Route: ");
        out.put_slice(&invite.buf[r]);
        out.put_slice(b"\r\n");
    }
    out.put_slice(format!("CSeq: {} {method}\r\n", invite.cseq).as_bytes());
    out.put_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+15551234567@pbx.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-trunk\r\n\
        Route: <sip:proxy.example;lr>, <sip:edge.example;lr>\r\n\
        Max-Forwards: 69\r\n\
        f: <sip:+15557654321@carrier.example>;tag=a1\r\n\
        To: <sip:+15551234567@pbx.example>\r\n\
        Call-ID: c1@carrier\r\n\
        CSeq: 4711 INVITE\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn the_cancel_matches_the_forwarded_invite_and_carries_only_the_proxys_via() {
        let invite = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
        let via = "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-ss-abc\r\n";
        let own = INVITE.find("<sip:proxy.example;lr>").unwrap();
        let own = own..own + "<sip:proxy.example;lr>".len();
        let out = cancel_for(&invite, via.as_bytes(), b"sip:vm@pbx.example", &[own]);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            "CANCEL sip:vm@pbx.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-ss-abc\r\n\
             f: <sip:+15557654321@carrier.example>;tag=a1\r\n\
             To: <sip:+15551234567@pbx.example>\r\n\
             Call-ID: c1@carrier\r\n\
             Route: <sip:edge.example;lr>\r\n\
             CSeq: 4711 CANCEL\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        let parsed = Message::parse(out).expect("a valid request");
        assert_eq!(parsed.cseq, 4711);
        assert!(parsed.body().is_empty());
    }
}
