//! `sipsentry bench`: per-call latency in microseconds.
//!
//! SIPp reports response times in whole milliseconds; screening costs tens of
//! microseconds. This is the instrument for the difference: [`uac`] is the
//! trunk side (open-loop load, measured per call), [`uas`] the PBX side, and
//! [`report`] the HDR-histogram summary. `--compare` interleaves one schedule
//! over two targets (through the proxy and straight to the UAS) so the
//! difference is the latency the proxy adds, measured under the same load.
//!
//! On a small virtual machine the instrument's own wake-ups (the UAS woken by
//! each INVITE, the UAC by each response) cost tens of microseconds each and
//! vary with what else the cores are doing. `--with-uas` answers as the PBX
//! on the UAC's own thread and `--spin` keeps that thread from ever
//! sleeping, so a relay can be measured with nothing of the instrument's
//! in the difference but the extra hops.

pub mod report;
pub mod uac;
pub mod uas;

use std::net::{SocketAddr, UdpSocket};

/// What the instrument asks for as its sockets' receive queue: at 10,000
/// calls/s about 30,000 datagrams arrive per second, so the default 208 KiB
/// (~400 messages) overflows after a stall of ~15 ms, and a dropped datagram
/// becomes a retransmission in the figures. The kernel caps it at
/// `net.core.rmem_max`.
const RECV_BUFFER: usize = 4 << 20;

/// A UDP socket with the instrument's receive queue.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    // Best effort: a smaller queue only makes drops likelier.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, RECV_BUFFER);
    Ok(sock)
}
