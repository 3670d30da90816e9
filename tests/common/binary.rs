#![allow(dead_code)] // shared by several test crates; each uses part of it
//! Running the real `sipsentry` binary as a child process.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sipsentry");

/// A port free on both UDP and TCP, for a child process to bind later, with
/// the three ports above it free too: SIPp's `-mp` takes its media port and
/// the three above (RTP and RTCP, audio and video).
///
/// Why not bind port 0 and hand that number on: the port is free again the
/// moment the probe socket closes, and the kernel may give it to the next
/// socket any thread of this test binary binds to port 0 before the child
/// binds it. Ports below the kernel's ephemeral range are never handed out
/// that way, and a counter keeps two calls in one process apart (blocks of
/// [`PORT_BLOCK`]); the pid starts two test binaries at different blocks.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let (low, high) = unassigned_ports();
    let blocks = (high - low) / PORT_BLOCK;
    let start = (std::process::id() % u32::from(blocks)) as u16;
    for _ in 0..blocks {
        let block = (start + NEXT.fetch_add(1, Ordering::Relaxed) % blocks) % blocks;
        let port = low + block * PORT_BLOCK;
        let free = (port..port + PORT_BLOCK).all(|p| {
            UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no {PORT_BLOCK} free ports together in {low}..{high}");
}

/// How many ports each [`free_port`] answer keeps for itself.
const PORT_BLOCK: u16 = 4;

/// The ports from 20000 up to the start of the ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 by default).
fn unassigned_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (20000, ephemeral_low.max(20000 + 1000))
}

/// `sipsentry serve` in `dir`, killed with SIGTERM when dropped.
pub struct Serve {
    pub child: Child,
}

impl Serve {
    pub fn start(dir: &Path, args: &[&str], listen: SocketAddr) -> Serve {
        let child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sipsentry");
        let serve = Serve { child };
        wait_until_answering(listen);
        serve
    }

    /// Waits for exit (after a signal the test sent); the status and stderr.
    pub fn wait_with_stderr(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let mut err = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut err);
        }
        (self.child.wait().expect("wait for serve"), err)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Waits until OPTIONS to `addr` gets a 200.
pub fn wait_until_answering(addr: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let me = sock.local_addr().unwrap();
    let opts = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKready\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=1\r\nTo: <sip:{addr}>\r\nCall-ID: ready@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send_to(opts.as_bytes(), addr);
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return;
        }
    }
    panic!("sipsentry did not answer OPTIONS on {addr}");
}

/// Whether `tool` (from the Debian package `package`) can run. Outside CI
/// its absence skips the caller's check with a message; under `CI=true`,
/// where `.ci/run` installs it, it fails the test.
pub fn installed(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is not installed (.ci/run installs {package})"
        );
        eprintln!("skipping: {tool} not installed (apt-get install {package})");
    }
    found
}

/// The (successful, failed) cumulative counts from SIPp's final screen.
pub fn sipp_counts(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let cumulative = |label: &str| {
        text.lines()
            .rfind(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} line in SIPp output:\n{text}"))
    };
    (cumulative("Successful call"), cumulative("Failed call"))
}

/// Ends a child with SIGTERM when dropped (the test may fail half way).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.0.wait();
    }
}

/// Kamailio with docs/integrations/kamailio.cfg on `127.0.0.1:port`,
/// dispatching to `nodes` (a dispatcher list written in `dir`), once it has
/// survived its start.
pub fn kamailio_dispatcher(dir: &Path, port: u16, nodes: &[SocketAddr]) -> Killed {
    let list = dir.join("dispatcher.list");
    let lines: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
    std::fs::write(&list, lines).unwrap();
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/integrations/kamailio.cfg"
    );
    kamailio(
        cfg,
        &[
            ("LISTEN", format!("udp:127.0.0.1:{port}")),
            ("DISPATCHER_LIST", format!("\"{}\"", list.display())),
        ],
    )
}

/// Debian's Kamailio on `cfg` with the `-A NAME=VALUE` defines, once it is
/// still running a moment after start (else its stderr in the panic).
pub fn kamailio(cfg: &str, defines: &[(&str, String)]) -> Killed {
    let mut cmd = Command::new("kamailio");
    cmd.args(["-f", cfg, "-DD", "-E", "-m", "64", "-M", "8"]);
    for (name, value) in defines {
        cmd.arg("-A").arg(format!("{name}={value}"));
    }
    let mut kam = Killed(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        kam.0.try_wait().unwrap().is_none(),
        "kamailio exited at start: {:?}",
        kam.0.stderr.take().map(|mut e| {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
    );
    kam
}
