//! The SIP thread: every UDP datagram is received and handled on one OS
//! thread, optionally polling instead of sleeping while traffic flows.
//!
//! Why a thread and not a task: a datagram arriving at an idle proxy wakes
//! this thread straight out of `recvfrom`, instead of going through epoll and
//! the runtime's scheduler, which removes a measurable share of the latency
//! the proxy adds (docs/performance.md). One thread also keeps arrival
//! order: a 180 and the 200 behind it leave in that order.
//!
//! Why busy polling (`sip.busy_poll_us`): on a virtual machine, waking a
//! sleeping thread costs tens of microseconds (the sender's `sendto` raises
//! an inter-processor interrupt, a VM exit, and the halted vCPU must be
//! resumed). A relay pays that twice per call, once for the request and once
//! for the response, and it dominates what the proxy adds. For a window after
//! each datagram the thread instead asks the socket without sleeping
//! (`MSG_DONTWAIT`), yielding the CPU between attempts so that any other
//! runnable thread on this core goes first. The CPU this burns scales with
//! traffic: an idle proxy sleeps as before; a window of 1 ms at 10 calls/s
//! costs about 5% of a core; past about 1,000 calls/s the thread never
//! sleeps. The kernel's `net.core.busy_read` does the same inside `recvfrom`,
//! but only for NIC queues that support NAPI busy polling; loopback and
//! packets already queued by softirq gain nothing from it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::io::Errno;
use rustix::net::RecvFlags;

use super::Peer;
use crate::sip::message::MAX_MESSAGE_BYTES;

/// Receives datagrams and hands each to `handle` before reading the next,
/// until `stop` is set (the socket's read timeout bounds how long that
/// takes to notice; [`super::Transport::wake_udp`] makes it at once).
/// `window` is `sip.busy_poll_us`: zero never polls.
pub fn serve(
    sock: &UdpSocket,
    window: Duration,
    stop: &AtomicBool,
    mut handle: impl FnMut(Bytes, Peer),
) {
    let mut rx = Receiver::new(sock, window);
    // One byte more than the largest message, so an oversized datagram is
    // seen as such rather than silently truncated to a valid-looking one.
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES + 1];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match rx.recv(&mut buf) {
            Ok(x) => x,
            // Read timeouts (to notice `stop`), ICMP errors: carry on.
            Err(_) => continue,
        };
        if n == 0 || buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keep-alive
        }
        handle(Bytes::copy_from_slice(&buf[..n]), Peer::Udp(from));
    }
}

/// A blocking UDP receive that, for `window` after each datagram, polls
/// without sleeping.
pub struct Receiver<'a> {
    sock: &'a UdpSocket,
    window: Duration,
    /// Until when to poll rather than sleep; `None` = sleep in `recvfrom`.
    poll_until: Option<Instant>,
}

impl<'a> Receiver<'a> {
    /// `window` zero: always sleep in `recvfrom` (no polling at all).
    pub fn new(sock: &'a UdpSocket, window: Duration) -> Self {
        Receiver {
            sock,
            window,
            poll_until: None,
        }
    }

    /// The next datagram: its length (at most `buf.len()`) and sender. Errors
    /// are the blocking socket's: a read timeout, or an ICMP error reported
    /// for an earlier send.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        if let Some(until) = self.poll_until {
            loop {
                if let Some(got) = try_recv_from(self.sock, buf)? {
                    self.arm();
                    return Ok(got);
                }
                if Instant::now() >= until {
                    self.poll_until = None;
                    break;
                }
                // Lets a thread woken onto this core run now rather than at
                // the next preemption tick.
                std::thread::yield_now();
            }
        }
        let got = self.sock.recv_from(buf)?;
        self.arm();
        Ok(got)
    }

    fn arm(&mut self) {
        if !self.window.is_zero() {
            self.poll_until = Some(Instant::now() + self.window);
        }
    }
}

/// One datagram if one is queued, without blocking (`recvfrom` with
/// `MSG_DONTWAIT`): its length (at most `buf.len()`) and sender, or `None`
/// when the queue is empty. Errors are ICMP errors reported for an earlier
/// send.
pub fn try_recv_from(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    loop {
        match rustix::net::recvfrom(sock, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _, Some(addr))) => {
                if let Ok(from) = SocketAddr::try_from(addr) {
                    return Ok(Some((n, from)));
                }
            }
            // No or a non-IP address cannot happen on a UDP/IP socket.
            Ok(_) => {}
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        (rx, tx)
    }

    #[test]
    fn polling_receiver_gets_datagrams_in_and_after_its_window() {
        let (sock, peer) = pair();
        let to = sock.local_addr().unwrap();
        let mut rx = Receiver::new(&sock, Duration::from_millis(500));
        let mut buf = [0u8; 64];
        peer.send_to(b"one", to).unwrap();
        let (n, from) = rx.recv(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"one"[..], peer.local_addr().unwrap()));
        let until = rx.poll_until.expect("a datagram opens the poll window");
        // Inside the window: answered by the non-blocking path.
        peer.send_to(b"two", to).unwrap();
        assert!(
            Instant::now() < until,
            "the test machine stalled past the window"
        );
        let (n, _) = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        // Nothing arrives: the window runs out and the blocking read times out.
        assert!(rx.recv(&mut buf).is_err());
        assert!(
            rx.poll_until.is_none(),
            "an expired window falls back to sleeping"
        );
        // After the window: the blocking path still receives.
        peer.send_to(b"three", to).unwrap();
        let (n, _) = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"three");
    }

    #[test]
    fn an_oversized_datagram_fills_the_buffer_on_both_paths() {
        let (sock, peer) = pair();
        let to = sock.local_addr().unwrap();
        let mut rx = Receiver::new(&sock, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        for _ in 0..2 {
            // First by the blocking read, then inside the poll window.
            peer.send_to(&[b'x'; 100], to).unwrap();
            let (n, _) = rx.recv(&mut buf).unwrap();
            assert_eq!(
                n,
                buf.len(),
                "truncated to the buffer, so the caller sees it is too long"
            );
        }
    }

    #[test]
    fn window_zero_never_polls() {
        let (sock, peer) = pair();
        let mut rx = Receiver::new(&sock, Duration::ZERO);
        peer.send_to(b"x", sock.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 8];
        rx.recv(&mut buf).unwrap();
        assert!(rx.poll_until.is_none());
    }
}
