#!/usr/bin/env bash
# Whether idle TCP connections can take the SIP port from everyone else:
# CONNS connections from one address (127.0.0.1) sit idle on the proxy,
# then a call arrives over TCP from another address (127.0.0.2) and one
# over UDP while the PBX is reached over TCP. Prints how many of the idle
# connections the proxy serves (they answer a keep-alive), how many it
# closed, and whether both calls got through. Default limits unless LIMITS
# (TOML lines for [sip], e.g. 'tcp_max_per_source = 4096') says otherwise.
#
#   bash bench/tcp-exhaustion.sh [CONNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
conns=${1:-4200}
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
SIP=127.0.0.1:25063; PBX=127.0.0.1:25083
relay_config "$work/s.toml" "$SIP" "$PBX;transport=tcp" 0 "${LIMITS:-}"
start_proxy s.toml
python3 - "$SIP" "$PBX" "$conns" <<'EOF'
import socket, sys, time, select
sip, pbx, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = sip.split(":"); port = int(port)
pbx_l = socket.socket(); pbx_l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
h, p = pbx.split(":"); pbx_l.bind((h, int(p))); pbx_l.listen(16); pbx_l.settimeout(5)
idle = []
for _ in range(conns):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((host, port))
    except BlockingIOError: pass
    idle.append(s)
time.sleep(2)
# The connections the proxy serves answer a keep-alive ping; those it
# closed read as EOF; those it has not accepted answer nothing.
for s in idle:
    try: s.send(b"\r\n\r\n")
    except OSError: pass
time.sleep(2)
served = closed = 0
for s in idle:
    try:
        got = s.recv(16)
        if got.startswith(b"\r\n"): served += 1
        elif got == b"": closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
def invite(me, transport, branch):
    return (f"INVITE sip:+15551234567@pbx.example SIP/2.0\r\nVia: SIP/2.0/{transport} {me};branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15557654321@c>;tag=1\r\nTo: <sip:+15551234567@pbx.example>\r\n"
            f"Call-ID: {branch}@bench\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()
# A TCP call from another address.
other = socket.socket(); other.bind(("127.0.0.2", 0)); other.settimeout(5)
try:
    other.connect((host, port))
    other.sendall(invite("%s:%d" % other.getsockname(), "TCP", "z9hG4bKother"))
    tcp_ok = other.recv(2048).startswith(b"SIP/2.0 100")
except OSError:
    tcp_ok = False
# A UDP call, relayed to the PBX over TCP.
uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); uac.bind(("127.0.0.1", 0)); uac.settimeout(5)
uac.sendto(invite("%s:%d" % uac.getsockname(), "UDP", "z9hG4bKudp"), (host, port))
try:
    conn, _ = pbx_l.accept(); conn.settimeout(5)
    udp_ok = conn.recv(4096).startswith(b"INVITE ")
except OSError:
    udp_ok = False
print(f"{conns} idle connections from one address: the proxy serves {served}, closed {closed}, "
      f"left {conns - served - closed} unaccepted; "
      f"a TCP call from another address {'got its 100' if tcp_ok else 'FAILED'}; "
      f"a UDP call {'reached the PBX over TCP' if udp_ok else 'FAILED to reach the PBX'}")
EOF
