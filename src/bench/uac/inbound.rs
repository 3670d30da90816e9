//! Reading what the targets send, and answering as the inline UAS.

use std::io::{self, Read};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use super::{BATCH, Out};
use crate::bench::uas::Inline;
use crate::sip::message::frame_len;
use crate::sip::transport::udp::try_recv_from;

/// Reading what the targets send: waits with `ppoll` (microsecond timeouts),
/// then takes everything already queued without blocking.
pub(super) struct Inbound {
    buf: Vec<u8>,
    /// Per TCP stream, bytes read but not yet framed.
    partial: Vec<Vec<u8>>,
    /// Per TCP stream, whether the target closed it.
    closed: Vec<bool>,
    /// Messages of one wake-up, with the instant each was read.
    got: Vec<(Instant, Bytes)>,
}

impl Inbound {
    pub(super) fn new(out: &Out) -> Inbound {
        let streams = match out {
            Out::Udp(..) => 0,
            Out::Tcp(s) | Out::Tls(s, _) => s.len(),
        };
        Inbound {
            buf: vec![0u8; 65_536],
            partial: vec![Vec::new(); streams],
            closed: vec![false; streams],
            got: Vec::new(),
        }
    }

    /// Waits at most `timeout` for something to read (not at all when
    /// `spin`: then it looks once and yields the CPU if nothing came), answers
    /// what reached the inline UAS, and returns what reached the UAC.
    pub(super) fn wait(
        &mut self,
        out: &Out,
        uas: Option<&Inline>,
        timeout: Duration,
        spin: bool,
    ) -> io::Result<std::vec::Drain<'_, (Instant, Bytes)>> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let timeout = if spin { Duration::ZERO } else { timeout };
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        // The UAC's sockets still open (their index in `out`), then the UAS's.
        // Inline storage: this runs for every wake-up, and in `spin` mode
        // without pause.
        let mut fds: SmallVec<[PollFd<'_>; 4]> = SmallVec::new();
        let mut open: SmallVec<[usize; 4]> = SmallVec::new();
        match out {
            Out::Udp(sock, _) => {
                fds.push(PollFd::new(sock, PollFlags::IN));
                open.push(0);
            }
            Out::Tcp(streams) | Out::Tls(streams, _) => {
                for (k, stream) in streams.iter().enumerate() {
                    if !self.closed[k] {
                        fds.push(PollFd::new(stream, PollFlags::IN));
                        open.push(k);
                    }
                }
            }
        }
        if let Some(uas) = uas {
            fds.push(PollFd::new(&uas.sock, PollFlags::IN));
        }
        let ready = match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => return Err(e.into()),
        };
        if !ready {
            if spin {
                std::thread::yield_now();
            }
            return Ok(self.got.drain(..));
        }
        let is_ready = |slot: usize| !fds[slot].revents().is_empty();
        if let Some(uas) = uas
            && is_ready(fds.len() - 1)
        {
            uas.answer_queued(&mut self.buf, BATCH);
        }
        for (slot, &k) in open.iter().enumerate() {
            if !is_ready(slot) {
                continue;
            }
            match out {
                Out::Udp(sock, _) => self.drain_udp(sock),
                Out::Tcp(streams) => self.read_tcp(k, &streams[k]),
                Out::Tls(_, conns) => self.read_tls(k, &mut conns[k].borrow_mut()),
            }
        }
        Ok(self.got.drain(..))
    }

    /// The datagrams already queued on `sock` (at most [`BATCH`]), without
    /// blocking. An error is an ICMP error for an earlier send; the call it
    /// belongs to times out on its own.
    fn drain_udp(&mut self, sock: &UdpSocket) {
        for _ in 0..BATCH {
            let Ok(Some((n, _))) = try_recv_from(sock, &mut self.buf) else {
                return;
            };
            let at = Instant::now();
            self.got.push((at, Bytes::copy_from_slice(&self.buf[..n])));
        }
    }

    /// One read from a readable TLS connection, split into messages.
    fn read_tls(&mut self, k: usize, conn: &mut super::tls::TlsConn) {
        let at = Instant::now();
        match conn.read(&mut self.partial[k]) {
            Ok(true) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            _ => {
                self.closed[k] = true;
                return;
            }
        }
        let partial = &mut self.partial[k];
        while let Ok(Some(len)) = frame_len(partial) {
            let frame: Vec<u8> = partial.drain(..len).collect();
            self.got.push((at, Bytes::from(frame)));
        }
    }

    /// One read from a readable stream, split into messages. A stream the
    /// target closed (or that failed) is read no more; its calls time out.
    fn read_tcp(&mut self, k: usize, mut stream: &TcpStream) {
        let n = match stream.read(&mut self.buf) {
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            _ => {
                self.closed[k] = true;
                return;
            }
        };
        let at = Instant::now();
        let partial = &mut self.partial[k];
        partial.extend_from_slice(&self.buf[..n]);
        while let Ok(Some(len)) = frame_len(partial) {
            let frame: Vec<u8> = partial.drain(..len).collect();
            self.got.push((at, Bytes::from(frame)));
        }
    }
}
