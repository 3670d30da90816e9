#!/usr/bin/env bash
# What each transport adds to a call: sipsentry relaying over UDP, TCP and
# TLS (trunk side and PBX side alike), at RATE INVITE/s, in alternating
# rounds of SECONDS. Each round's added INVITE→final p50/p99 (µs) is the
# call through the proxy minus the call straight to the UAS over the same
# transport (`sipsentry bench --compare`), so for TLS it is what relaying
# through a TLS proxy costs over a TLS call that does not cross one; the
# proxy's CPU µs per call is user + system from /proc. Prints the medians
# over RUNS rounds. Certificates are made with openssl at run time.
#
#   bash bench/transports.sh [RATE] [SECONDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-500}; secs=${2:-10}; runs=${3:-3}
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 2; }
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout ca.key -out ca.crt 2>/dev/null
  for who in proxy uas; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$who" \
      -keyout "$who.key" -out "$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >san.ext
    openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile san.ext -out "$who.crt" 2>/dev/null
  done
)
UAS=127.0.0.1:25080; UAS_TLS=127.0.0.1:25090
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
"$B" bench --uas "$UAS_TLS" --tls-cert "$work/uas.crt" --tls-key "$work/uas.key" >/dev/null 2>&1 & pids+=($!)
relay_config "$work/udp.toml" 127.0.0.1:25061 "$UAS" 0
relay_config "$work/tcp.toml" 127.0.0.1:25062 "$UAS;transport=tcp" 0
relay_config "$work/tls.toml" 127.0.0.1:25063 "$UAS_TLS;transport=tls" 0 \
  'tls_listen = "127.0.0.1:25064"\ntls_cert = "proxy.crt"\ntls_key = "proxy.key"\ntls_next_hop_ca = "ca.crt"'
declare -A pid target uas
for t in udp tcp tls; do start_proxy "$t.toml"; pid[$t]=$proxy; done
target=([udp]=127.0.0.1:25061 [tcp]=127.0.0.1:25062 [tls]=127.0.0.1:25064)
uas=([udp]=$UAS [tcp]=$UAS [tls]=$UAS_TLS)
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

: >"$work/results"
for run in $(seq "$runs"); do
  for t in udp tcp tls; do
    c0=$(cpu_ticks "${pid[$t]}")
    json=$("$B" bench --transport "$t" --tls-ca "$work/ca.crt" --target "${target[$t]}" \
      --compare "${uas[$t]}" --rate $((rate * 2)) --duration "$secs" --json)
    c1=$(cpu_ticks "${pid[$t]}")
    read -r p50 p99 < <(echo "$json" | field "${target[$t]}")
    printf '%s\t%s\t%s\t%s\n' "$t" "$p50" "$p99" $(( (c1 - c0) * 1000000 / tck / (rate * secs) )) >>"$work/results"
  done
done
python3 - "$work/results" "$rate" "$secs" "$runs" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
rate, secs, runs = sys.argv[2:5]
print(f"{rate} INVITE/s, {runs} rounds of {secs} s each, medians")
print(f"{'transport':<10} {'added p50 µs':>13} {'added p99 µs':>13} {'CPU µs/call':>12}")
for t in ("udp", "tcp", "tls"):
    r = [x for x in rows if x[0] == t]
    med = lambda i: statistics.median(float(x[i]) for x in r)
    print(f"{t:<10} {med(1):>13.0f} {med(2):>13.0f} {med(3):>12.0f}")
PY
