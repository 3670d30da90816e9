//! Next hops that are a service (RFC 3263) with failover and health, on
//! loopback: a DNS server in the test answers NAPTR, SRV and A for two PBX
//! targets with priorities; calls go to the first; when it goes silent,
//! or answers 503, the INVITE goes on to the second and the trunk sees one
//! final response; OPTIONS pings mark the silent one down (skipped at once)
//! and up again when it answers; a refused TCP connection fails over at
//! once.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::{Udp, invite, response_to, start, status};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NAPTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use sipsentry::config::Config;
use tokio::sync::mpsc;

/// A DNS server answering from a fixed table, on a thread of its own.
fn dns_server(records: Vec<Record>) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let mut table: HashMap<(String, RecordType), Vec<Record>> = HashMap::new();
    for r in records {
        table
            .entry((r.name().to_ascii().to_lowercase(), r.record_type()))
            .or_default()
            .push(r);
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true)
                .set_recursion_desired(req.recursion_desired())
                .set_recursion_available(true)
                .set_response_code(ResponseCode::NoError);
            for q in req.queries() {
                resp.add_query(q.clone());
                let key = (q.name().to_ascii().to_lowercase(), q.query_type());
                for r in table.get(&key).into_iter().flatten() {
                    resp.add_answer(r.clone());
                }
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), from);
        }
    });
    addr
}

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

/// NAPTR → SRV (priorities 10 and 20) → A for two UDP PBXs on loopback.
fn pbx_service(first: SocketAddr, second: SocketAddr) -> Vec<Record> {
    let ttl = 300;
    vec![
        Record::from_rdata(
            name("pbx.test."),
            ttl,
            RData::NAPTR(NAPTR::new(
                10,
                10,
                b"s".to_vec().into(),
                b"SIP+D2U".to_vec().into(),
                Vec::new().into(),
                name("_sip._udp.pbx.test."),
            )),
        ),
        Record::from_rdata(
            name("_sip._udp.pbx.test."),
            ttl,
            RData::SRV(SRV::new(20, 0, second.port(), name("b.pbx.test."))),
        ),
        Record::from_rdata(
            name("_sip._udp.pbx.test."),
            ttl,
            RData::SRV(SRV::new(10, 0, first.port(), name("a.pbx.test."))),
        ),
        Record::from_rdata(name("a.pbx.test."), ttl, RData::A(A::new(127, 0, 0, 1))),
        Record::from_rdata(name("b.pbx.test."), ttl, RData::A(A::new(127, 0, 0, 1))),
    ]
}

const ANSWER: u8 = 0;
const SILENT: u8 = 1;
const UNAVAILABLE: u8 = 2;

/// A PBX that answers as its mode says: INVITEs 180 + 200 (or 503, or
/// nothing), OPTIONS 200 (or nothing while silent). Every INVITE and ACK
/// it receives is reported with the time it came.
struct Pbx {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    seen: mpsc::UnboundedReceiver<(String, Instant)>,
}

impl Pbx {
    async fn start() -> Pbx {
        let sock = Udp::new().await;
        let addr = sock.addr;
        let mode = Arc::new(AtomicU8::new(ANSWER));
        let (tx, seen) = mpsc::unbounded_channel();
        let m = Arc::clone(&mode);
        tokio::spawn(async move {
            while let Some((msg, from)) = sock.recv_within(Duration::from_secs(3600)).await {
                let mode = m.load(Ordering::Relaxed);
                if msg.starts_with("OPTIONS") {
                    if mode != SILENT {
                        sock.send(from, &response_to(&msg, 200, "OK", "ping")).await;
                    }
                    continue;
                }
                if msg.starts_with("INVITE") || msg.starts_with("ACK") {
                    let _ = tx.send((msg.clone(), Instant::now()));
                }
                if !msg.starts_with("INVITE") {
                    continue;
                }
                match mode {
                    ANSWER => {
                        sock.send(from, &response_to(&msg, 180, "Ringing", "pbx"))
                            .await;
                        sock.send(from, &response_to(&msg, 200, "OK", "pbx")).await;
                    }
                    UNAVAILABLE => {
                        sock.send(from, &response_to(&msg, 503, "Service Unavailable", "busy"))
                            .await
                    }
                    _ => {}
                }
            }
        });
        Pbx { addr, mode, seen }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    /// The next INVITE (or ACK, with `prefix`) it received, within `wait`.
    async fn next(&mut self, prefix: &str, wait: Duration) -> Option<(String, Instant)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = tokio::time::timeout_at(deadline, self.seen.recv())
                .await
                .ok()??;
            if got.0.starts_with(prefix) {
                return Some(got);
            }
        }
    }
}

/// Places a call; every final response the trunk got within `wait`.
async fn call(trunk: &Udp, proxy: SocketAddr, branch: &str, wait: Duration) -> Vec<u16> {
    trunk
        .send(
            proxy,
            &invite(
                trunk.addr,
                "UDP",
                branch,
                "<sip:+15557654321@carrier.example>",
                "",
            ),
        )
        .await;
    let deadline = tokio::time::Instant::now() + wait;
    let mut finals = Vec::new();
    while let Some((m, _)) = trunk
        .recv_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if m.contains(&format!("{branch}@test")) && status(&m) >= 200 {
            finals.push(status(&m));
        }
    }
    finals
}

fn branch_of(invite: &str) -> String {
    invite
        .split("\r\n")
        .find(|l| l.starts_with("Via: "))
        .and_then(|v| v.split("branch=").nth(1))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_service_name_is_located_by_naptr_and_srv_and_a_failing_target_is_passed_over() {
    let (mut first, mut second) = (Pbx::start().await, Pbx::start().await);
    let dns = dns_server(pbx_service(first.addr, second.addr));
    let config = Config::from_toml(&format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"sip:pbx.test\"\ndns_servers = [\"{dns}\"]\n\
         failover_timeout_ms = 500\nping_interval_s = 1\nping_down_after = 2\nping_up_after = 1\n"
    ))
    .unwrap();
    let proxy = start(config, |p| p).await;
    let targets: Vec<SocketAddr> = proxy
        .core
        .next_hops()
        .targets()
        .iter()
        .map(|t| t.at.peer.addr())
        .collect();
    assert_eq!(
        targets,
        [first.addr, second.addr],
        "NAPTR → SRV by priority → A"
    );
    let trunk = Udp::new().await;
    let long = Duration::from_secs(3);

    // Both up: the call goes to the priority-10 target.
    assert_eq!(call(&trunk, proxy.addr, "z9hG4bK-nh-1", long).await, [200]);
    assert!(first.next("INVITE", long).await.is_some());
    assert!(
        second
            .next("INVITE", Duration::from_millis(200))
            .await
            .is_none()
    );

    // The first goes silent: after failover_timeout_ms the INVITE goes to
    // the second under a new branch, and the trunk gets one 200.
    first.set(SILENT);
    let calling = tokio::spawn({
        let trunk = Udp::new().await;
        let proxy = proxy.addr;
        async move { call(&trunk, proxy, "z9hG4bK-nh-2", Duration::from_secs(4)).await }
    });
    let (to_first, at_first) = first.next("INVITE", long).await.expect("tried first");
    let (to_second, at_second) = second.next("INVITE", long).await.expect("then the second");
    let waited = at_second.duration_since(at_first);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(2),
        "failed over after {waited:?} (failover_timeout_ms = 500)"
    );
    assert_eq!(
        branch_of(&to_second),
        format!("{}.1", branch_of(&to_first)),
        "a new branch for the second try"
    );
    assert_eq!(calling.await.unwrap(), [200], "one final response");

    // Pings: two unanswered in a row mark the first down; calls then go
    // straight to the second.
    let deadline = Instant::now() + Duration::from_secs(6);
    while proxy.core.next_hops().targets()[0].health.is_up() {
        assert!(
            Instant::now() < deadline,
            "the silent target was never marked down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&trunk, proxy.addr, "z9hG4bK-nh-3", long).await, [200]);
    let (_, at) = second.next("INVITE", long).await.unwrap();
    assert!(
        first
            .next("INVITE", Duration::from_millis(300))
            .await
            .is_none()
    );
    let _ = at;

    // It answers pings again: up, and first in line once more.
    first.set(ANSWER);
    let deadline = Instant::now() + Duration::from_secs(6);
    while !proxy.core.next_hops().targets()[0].health.is_up() {
        assert!(Instant::now() < deadline, "the target never came back up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&trunk, proxy.addr, "z9hG4bK-nh-4", long).await, [200]);
    assert!(first.next("INVITE", long).await.is_some());

    // A 503 from the first: ACKed there, the INVITE goes to the second,
    // and the trunk never sees the 503.
    first.set(UNAVAILABLE);
    assert_eq!(
        call(&trunk, proxy.addr, "z9hG4bK-nh-5", long).await,
        [200],
        "the second's 200 only"
    );
    let (ack, _) = first.next("ACK", long).await.expect("the 503 is ACKed");
    assert!(ack.contains("tag=busy"), "{ack}");
    assert!(ack.contains("CSeq: 314159 ACK"), "{ack}");
    assert!(second.next("INVITE", long).await.is_some());
    let failovers = proxy.core.stats().failovers.load(Ordering::Relaxed);
    assert_eq!(failovers, 2, "the silent target and the 503");
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_tcp_connection_fails_over_at_once_to_the_next_uri_in_the_list() {
    let mut pbx = Pbx::start().await;
    // A TCP port nothing listens on: below the ephemeral range, so no
    // socket another test binds to port 0 can take it meanwhile.
    let closed: SocketAddr = format!("127.0.0.1:{}", binary::free_port())
        .parse()
        .unwrap();
    let config = Config::from_toml(&format!(
        "[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = [\"sip:{closed};transport=tcp\", \"sip:{}\"]\n\
         failover_timeout_ms = 10000\n",
        pbx.addr
    ))
    .unwrap();
    let proxy = start(config, |p| p).await;
    let trunk = Udp::new().await;
    let sent = Instant::now();
    let finals = call(
        &trunk,
        proxy.addr,
        "z9hG4bK-refused",
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(finals, [200]);
    let (relayed, at) = pbx.next("INVITE", Duration::from_secs(1)).await.unwrap();
    assert!(
        at.duration_since(sent) < Duration::from_secs(5),
        "the refusal, not the 10 s failover timeout, moved the call"
    );
    assert!(relayed.contains(&format!("Via: SIP/2.0/UDP {};branch=", proxy.addr)));
    proxy.stop().await;
}

#[path = "common/binary.rs"]
mod binary;

#[tokio::test]
async fn the_cli_the_api_and_metrics_show_the_located_targets_in_order() {
    let (first, second) = (Pbx::start().await, Pbx::start().await);
    let dns = dns_server(pbx_service(first.addr, second.addr));
    let dir = tempfile::tempdir().unwrap();
    let sip = binary::free_port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.path().join("sipsentry.toml"),
        format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\nnext_hop = \"sip:pbx.test\"\ndns_servers = [\"{dns}\"]\n\
             [hiya_cache]\nenabled = false\n[history]\nenabled = false\n[admin]\nlisten = \"{admin}\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(binary::BIN)
        .args(["next-hops", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let addresses = |v: &serde_json::Value| -> Vec<String> {
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["address"].as_str().unwrap().to_string())
            .collect()
    };
    let expected = [first.addr.to_string(), second.addr.to_string()];
    assert_eq!(addresses(&cli), expected);
    assert_eq!(cli["targets"][0]["host"], "a.pbx.test");
    assert_eq!(cli["targets"][1]["priority"], 20);

    let _serve = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || binary::Serve::start(&dir, &[], format!("127.0.0.1:{sip}").parse().unwrap())
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let api: serde_json::Value = http
        .get(format!("http://{admin}/api/v1/next-hops"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(addresses(&api), expected);
    assert_eq!(api["targets"][0]["up"], true);
    let metrics = http
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for addr in &expected {
        let line = format!("sipsentry_next_hop_up{{target=\"udp:{addr}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}
