//! HEP version 3 (the Homer Encapsulation Protocol): one captured message
//! as a `HEP3` packet of typed chunks.
//!
//! Each chunk is a vendor (0, generic), a type, its whole length (with
//! this 6-byte head) and the value; numbers are big-endian. The chunk types
//! are HEP's generic ones, named below.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// The packet's magic, in place of a version number.
pub const MAGIC: &[u8; 4] = b"HEP3";
/// The longest packet: its length is a 16-bit field.
pub const MAX_PACKET: usize = u16::MAX as usize;

/// HEP's generic chunk types.
pub mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const IPV4_SRC: u16 = 0x0003;
    pub const IPV4_DST: u16 = 0x0004;
    pub const IPV6_SRC: u16 = 0x0005;
    pub const IPV6_DST: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_S: u16 = 0x0009;
    pub const TIME_US: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
    pub const CORRELATION_ID: u16 = 0x0011;
}

/// `PROTO_TYPE` of SIP.
pub const PROTO_SIP: u8 = 1;
/// Address families as HEP writes them (the BSD `AF_*` numbers).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
/// `IP_PROTO` of UDP and of TCP (which TLS is carried over).
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_TCP: u8 = 6;

/// One captured message, as the capture thread encodes it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    pub ip_proto: u8,
    pub at: SystemTime,
    pub payload: bytes::Bytes,
}

/// Writes `m` as one HEPv3 packet into `out` (cleared first). False, and
/// nothing to send, when it would not fit a packet's 16-bit length.
pub fn encode(m: &Captured, capture_id: u32, auth: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]); // total length, filled in at the end
    let since = m.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (family, src, dst) = match (m.src.ip(), m.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (AF_INET, s.octets().to_vec(), d.octets().to_vec()),
        (s, d) => (AF_INET6, v6(s).to_vec(), v6(d).to_vec()),
    };
    put(out, chunk::IP_FAMILY, &[family]);
    put(out, chunk::IP_PROTO, &[m.ip_proto]);
    let (src_type, dst_type) = if family == AF_INET {
        (chunk::IPV4_SRC, chunk::IPV4_DST)
    } else {
        (chunk::IPV6_SRC, chunk::IPV6_DST)
    };
    put(out, src_type, &src);
    put(out, dst_type, &dst);
    put(out, chunk::SRC_PORT, &m.src.port().to_be_bytes());
    put(out, chunk::DST_PORT, &m.dst.port().to_be_bytes());
    put(out, chunk::TIME_S, &(since.as_secs() as u32).to_be_bytes());
    put(out, chunk::TIME_US, &since.subsec_micros().to_be_bytes());
    put(out, chunk::PROTO_TYPE, &[PROTO_SIP]);
    put(out, chunk::CAPTURE_ID, &capture_id.to_be_bytes());
    if let Some(key) = auth {
        put(out, chunk::AUTH_KEY, key);
    }
    if let Some(id) = call_id(&m.payload) {
        put(out, chunk::CORRELATION_ID, id);
    }
    put(out, chunk::PAYLOAD, &m.payload);
    let Ok(total) = u16::try_from(out.len()) else {
        return false;
    };
    out[4..6].copy_from_slice(&total.to_be_bytes());
    true
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    // Longer values are cut off here and the packet refused by its total.
    let len = (6 + value.len()).min(usize::from(u16::MAX)) as u16;
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// The Call-ID of a SIP message (`Call-ID:` or the compact `i:`), trimmed,
/// from its header section; `None` when it has none. Only lines starting
/// with `c` or `i` are looked at, found with memchr: this runs for every
/// captured message.
pub fn call_id(msg: &[u8]) -> Option<&[u8]> {
    static CANONICAL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\nCall-ID:"));
    let end = memchr::memmem::find(msg, b"\r\n\r\n").unwrap_or(msg.len());
    let head = &msg[..end];
    // Nearly every peer spells it this way: one scan finds it.
    if let Some(at) = CANONICAL.find(head) {
        let value = &head[at + b"\nCall-ID:".len()..];
        let value = &value[..memchr::memchr(b'\n', value).unwrap_or(value.len())];
        let value = value.trim_ascii();
        if !value.is_empty() {
            return Some(value);
        }
    }
    memchr::memchr_iter(b'\n', head).find_map(|nl| {
        let rest = &head[nl + 1..];
        if !matches!(rest.first(), Some(b'C' | b'c' | b'I' | b'i')) {
            return None;
        }
        let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
        let colon = memchr::memchr(b':', line)?;
        let name = line[..colon].trim_ascii();
        (name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i"))
            .then(|| line[colon + 1..].trim_ascii())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packet_is_magic_length_and_chunks_that_add_up() {
        let m = Captured {
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "198.51.100.2:5080".parse().unwrap(),
            ip_proto: IPPROTO_UDP,
            at: UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_000),
            payload: bytes::Bytes::from_static(
                b"INVITE sip:a@b SIP/2.0\r\ni: abc@host \r\nCSeq: 1 INVITE\r\n\r\n",
            ),
        };
        let mut out = Vec::new();
        assert!(encode(&m, 7, Some(b"secret"), &mut out));
        assert_eq!(&out[..4], MAGIC);
        assert_eq!(usize::from(u16::from_be_bytes([out[4], out[5]])), out.len());
        let mut chunks = std::collections::HashMap::new();
        let mut at = 6;
        while at < out.len() {
            let kind = u16::from_be_bytes([out[at + 2], out[at + 3]]);
            let len = usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]));
            chunks.insert(kind, out[at + 6..at + len].to_vec());
            at += len;
        }
        assert_eq!(at, out.len(), "the chunks fill the packet exactly");
        assert_eq!(chunks[&chunk::IPV4_SRC], [192, 0, 2, 1]);
        assert_eq!(chunks[&chunk::DST_PORT], 5080u16.to_be_bytes());
        assert_eq!(chunks[&chunk::TIME_US], 123_456u32.to_be_bytes());
        assert_eq!(chunks[&chunk::CAPTURE_ID], 7u32.to_be_bytes());
        assert_eq!(chunks[&chunk::AUTH_KEY], b"secret");
        assert_eq!(chunks[&chunk::CORRELATION_ID], b"abc@host");
        assert_eq!(chunks[&chunk::PAYLOAD], m.payload.to_vec());
    }

    #[test]
    fn a_message_too_big_for_one_packet_is_refused() {
        let m = Captured {
            src: "[2001:db8::1]:5060".parse().unwrap(),
            dst: "[2001:db8::2]:5060".parse().unwrap(),
            ip_proto: IPPROTO_TCP,
            at: SystemTime::now(),
            payload: vec![b'x'; MAX_PACKET].into(),
        };
        assert!(!encode(&m, 1, None, &mut Vec::new()));
    }

    #[test]
    fn the_call_id_is_read_from_the_headers_only() {
        assert_eq!(
            call_id(b"BYE x SIP/2.0\r\nCall-ID: a@b\r\n\r\n"),
            Some(&b"a@b"[..])
        );
        assert_eq!(
            call_id(b"BYE x SIP/2.0\r\nTo: x\r\n\r\nCall-ID: body"),
            None
        );
    }
}
