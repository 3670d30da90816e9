//! The PBX side of `sipsentry bench`: answers INVITE (optionally 180 first,
//! optionally after a fixed delay), BYE, CANCEL and OPTIONS; absorbs ACK.
//! Stateless, so it keeps up with the UAC at any rate the machine allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use crate::sip::message::{Message, Method, frame_len};
use crate::sip::respond;

#[derive(Debug, Clone)]
pub struct UasOptions {
    pub listen: SocketAddr,
    /// Send 180 Ringing before the 200.
    pub ring: bool,
    /// Wait this long before the 200.
    pub answer_delay: Duration,
}

const SDP: &[u8] = b"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=sipsentry bench uas\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49180 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The responses to one request, and how long to wait before the last one.
fn answer(req: &Message, opts: &UasOptions, contact: &str) -> (Vec<Bytes>, Option<Bytes>) {
    let tag = Some("sbuas");
    match req.method() {
        Some(Method::Invite) => {
            let early = if opts.ring {
                vec![respond::build(req, 180, tag, &[])]
            } else {
                vec![]
            };
            let ok = respond::build_with_body(
                req,
                200,
                tag,
                &[contact.to_string()],
                Some(("application/sdp", SDP)),
            );
            (early, Some(ok))
        }
        Some(Method::Ack) | None => (vec![], None),
        Some(_) => (vec![respond::build(req, 200, tag, &[])], None),
    }
}

/// Serves until `shutdown` completes.
pub async fn run(
    opts: UasOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let udp = Arc::new(UdpSocket::bind(opts.listen).await?);
    let listen = udp.local_addr()?;
    let tcp = TcpListener::bind(listen).await?;
    let contact = format!("Contact: <sip:uas@{listen}>");
    let opts = Arc::new(opts);
    let udp_task = {
        let (udp, opts, contact) = (Arc::clone(&udp), Arc::clone(&opts), contact.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let Ok(req) = Message::parse(Bytes::copy_from_slice(&buf[..n])) else {
                    continue;
                };
                let (now, later) = answer(&req, &opts, &contact);
                for r in now {
                    let _ = udp.send_to(&r, from).await;
                }
                if let Some(r) = later {
                    if opts.answer_delay.is_zero() {
                        let _ = udp.send_to(&r, from).await;
                    } else {
                        let (udp, delay) = (Arc::clone(&udp), opts.answer_delay);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = udp.send_to(&r, from).await;
                        });
                    }
                }
            }
        })
    };
    let tcp_task = tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let (opts, contact) = (Arc::clone(&opts), contact.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (mut rd, mut wr) = stream.into_split();
                let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
                tokio::spawn(async move {
                    while let Some(b) = rx.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
                let mut buf = BytesMut::with_capacity(65_536);
                while rd.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                    while let Ok(Some(len)) = frame_len(&buf) {
                        let Ok(req) = Message::parse(buf.split_to(len).freeze()) else {
                            continue;
                        };
                        let (now, later) = answer(&req, &opts, &contact);
                        for r in now {
                            let _ = tx.send(r).await;
                        }
                        match later {
                            Some(r) if opts.answer_delay.is_zero() => {
                                let _ = tx.send(r).await;
                            }
                            Some(r) => {
                                let (tx, delay) = (tx.clone(), opts.answer_delay);
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let _ = tx.send(r).await;
                                });
                            }
                            None => {}
                        }
                    }
                }
            });
        }
    });
    eprintln!("sipsentry bench UAS listening on {listen} (UDP+TCP)");
    shutdown.await;
    udp_task.abort();
    tcp_task.abort();
    Ok(())
}
