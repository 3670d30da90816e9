#!/usr/bin/env bash
# What calls held by the proxy cost in memory: INVITEs of SIZE bytes sent
# to a PBX that never answers, so each stays in its transaction (and Timer
# A's copy) until the proxy's memory budget, `sip.max_held_mb = BUDGET_MB`,
# turns new ones away with 503. Prints the resident memory the proxy gained,
# per held call and against the budget.
#
#   bash bench/held-memory.sh [SIZE] [BUDGET_MB] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
size=${1:-60000}; budget=${2:-64}; calls=${3:-2000}
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
SIP=127.0.0.1:25062; PBX=127.0.0.1:25082
relay_config "$work/s.toml" "$SIP" "$PBX" 0 "max_held_mb = $budget"
start_proxy s.toml
python3 - "$proxy" "$SIP" "$PBX" "$size" "$budget" "$calls" <<'EOF'
import socket, sys, time
pid, sip, pbx, size, budget, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
host, port = sip.split(":")
# The PBX: a socket that reads and never answers.
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
h, p = pbx.split(":"); silent.bind((h, int(p)))
silent.setblocking(False)
uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
uac.bind(("127.0.0.1", 0)); uac.settimeout(2)
me = "%s:%d" % uac.getsockname()
def drain():
    while True:
        try: silent.recv(70000)
        except BlockingIOError: return
time.sleep(0.5)
before = rss_kb()
codes = {}
for i in range(calls):
    head = (f"INVITE sip:+15551234567@pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKheld{i}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:+15557654321@c>;tag=1\r\nTo: <sip:+15551234567@pbx.example>\r\n"
            f"Call-ID: held{i}@bench\r\nCSeq: 1 INVITE\r\n")
    pad = "X-Pad: " + "p" * max(0, size - len(head) - 40) + "\r\n"
    msg = head + pad + "Content-Length: 0\r\n\r\n"
    uac.sendto(msg.encode(), (host, int(port)))
    code = int(uac.recv(70000).split()[1])
    codes[code] = codes.get(code, 0) + 1
    drain()
time.sleep(1.0)
drain()
after = rss_kb()
held = codes.get(100, 0)
grown = (after - before) / 1024
print(f"{held} calls of {size} bytes held ({codes}), budget {budget} MiB: RSS grew {grown:.1f} MiB, "
      f"{(after - before) / max(held, 1):.1f} KiB per held call, {grown / budget:.2f} x the budget")
EOF
