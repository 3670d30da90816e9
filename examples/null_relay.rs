//! The floor under any UDP relay on this machine: a "proxy" that does no SIP
//! at all. Every datagram from anyone but the UAS goes to the UAS; every
//! datagram from the UAS goes back to whoever sent last. No parsing, no Via,
//! no 100 Trying, one thread. What it adds to INVITE→final in
//! `sipsentry bench --compare` is the cost of the two extra hops alone.
//!
//! With a poll window (µs) it waits the way sipsentry's SIP thread does with
//! `sip.busy_poll_us` (the same [`Receiver`]), so the two can be compared
//! like for like.
//!
//! ```text
//! cargo run --release --example null_relay -- LISTEN UAS [POLL_US]
//! cargo run --release --example null_relay -- 127.0.0.1:5071 127.0.0.1:5080 1000
//! ```
//!
//! It relays one caller at a time correctly (responses follow the latest
//! sender), which is all a single `sipsentry bench` UAC needs.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use sipsentry::sip::transport::udp::Receiver;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(uas)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: null_relay LISTEN_ADDR UAS_ADDR [POLL_US]");
        return ExitCode::from(2);
    };
    let window = Duration::from_micros(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0));
    let sock = match UdpSocket::bind(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rx = Receiver::new(&sock, window);
    let mut buf = vec![0u8; 65_536];
    let mut caller: Option<SocketAddr> = None;
    loop {
        let Ok((n, from)) = rx.recv(&mut buf) else {
            continue;
        };
        let to = if from == uas {
            match caller {
                Some(c) => c,
                None => continue,
            }
        } else {
            caller = Some(from);
            uas
        };
        let _ = sock.send_to(&buf[..n], to);
    }
}
