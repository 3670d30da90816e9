#!/usr/bin/env bash
# CPU per screened call in the shipping configuration, beside Kamailio:
#   sipsentry    history on, a deny list, the default pipeline, Hiya cache off
#   sipsentry+hiya  the same with the bundled demo Hiya cache, every call from
#                a caller it lists as SPAM (tagged from the local cache)
#   kamailio     5.6, stateless forward + htable deny check, one worker
#   kamailio-tm  5.6, tm's t_relay + htable deny check, one worker
# The same load for each (INVITE → 100 → 200, ACK, BYE → 200 from
# `sipsentry bench`, RATE calls/s, CALLS calls a round) in alternating
# rounds; per relay the added INVITE→final p50/p99 against the UAS reached
# directly, and its CPU µs per call (user + system ticks of all its
# processes, from /proc). Prints the medians over ROUNDS and each relay's
# CPU as a share of Kamailio's stateless forward.
#
#   bash bench/product-cpu.sh [RATE] [CALLS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-2000}; calls=${2:-10000}; rounds=${3:-3}
command -v kamailio >/dev/null || { echo "needs kamailio (Debian: kamailio)" >&2; exit 2; }
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
UAS=127.0.0.1:25080
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
deny='[policy]\ndeny = ["+1666*", "+15550000001", "+15550000002"]'
RELAY_HISTORY=true relay_config "$work/plain.toml" 127.0.0.1:25061 "$UAS" 0
printf '%b\n' "$deny" >>"$work/plain.toml"
RELAY_HISTORY=true relay_config "$work/hiya.toml" 127.0.0.1:25062 "$UAS" 0
printf '%b\n' "$deny" >>"$work/hiya.toml"
# The demo cache (India) is unpacked under hiya_cache.dir at start.
python3 - "$work/hiya.toml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
s = s.replace('[hiya_cache]\nenabled = false\n', '[hiya_cache]\nenabled = true\ndir = "hiya"\n')
s = s.replace('[history]\n', '[history]\npath = "hiya-history.db"\n')
open(p, "w").write(s)
PY
declare -A pid target
start_proxy plain.toml; pid[sipsentry]=$proxy
start_proxy hiya.toml; pid[sipsentry+hiya]=$proxy
target=([sipsentry]=127.0.0.1:25061 [sipsentry+hiya]=127.0.0.1:25062
        [kamailio]=127.0.0.1:27061 [kamailio-tm]=127.0.0.1:27062)
kamailio -f bench/kamailio-htable.cfg -DD -E -m 64 -M 8 -A LISTEN=udp:127.0.0.1:27061 \
  -L /usr/lib/x86_64-linux-gnu/kamailio/modules >"$work/kam.log" 2>&1 & pids+=($!); pid[kamailio]=$!
kamailio -f bench/kamailio-htable.cfg -DD -E -m 64 -M 8 -A LISTEN=udp:127.0.0.1:27062 -A TM \
  -L /usr/lib/x86_64-linux-gnu/kamailio/modules >"$work/kam-tm.log" 2>&1 & pids+=($!); pid[kamailio-tm]=$!
sleep 2
for k in kamailio kamailio-tm; do
  kill -0 "${pid[$k]}" 2>/dev/null || { echo "$k did not start:" >&2; cat "$work/kam.log" "$work/kam-tm.log" >&2; exit 1; }
done
echo "+919000000001" >"$work/spam-callers.txt"
tck=$(getconf CLK_TCK)
# All processes of a relay: the pid and its children (Kamailio's workers).
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
: >"$work/results"
for round in $(seq "$rounds"); do
  for r in sipsentry sipsentry+hiya kamailio kamailio-tm; do
    extra=()
    [ "$r" = sipsentry+hiya ] && extra=(--callers "$work/spam-callers.txt")
    c0=$(cpu_ticks "${pid[$r]}")
    json=$("$B" bench --target "${target[$r]}" --compare "$UAS" --rate $((rate * 2)) \
      --count $((calls * 2)) "${extra[@]}" --json)
    c1=$(cpu_ticks "${pid[$r]}")
    read -r p50 p99 < <(echo "$json" | field "${target[$r]}")
    printf '%s\t%s\t%s\t%s\n' "$r" "$p50" "$p99" \
      "$(python3 -c "print(($c1 - $c0) * 1e6 / $tck / $calls)")" >>"$work/results"
  done
done
python3 - "$work/results" "$rate" "$calls" "$rounds" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
rate, calls, rounds = sys.argv[2:5]
print(f"{rate} calls/s, {rounds} alternating rounds of {calls} calls, medians (CPU: each round)")
med = lambda r, i: statistics.median(float(x[i]) for x in rows if x[0] == r)
kam = [float(x[3]) for x in rows if x[0] == "kamailio"]
print(f"{'relay':<16} {'added p50 µs':>12} {'p99 µs':>8} {'CPU µs/call':>12} {'÷ kamailio':>11}  rounds")
for r in ("sipsentry", "sipsentry+hiya", "kamailio", "kamailio-tm"):
    cpu = [float(x[3]) for x in rows if x[0] == r]
    ratios = " ".join(f"{c / k:.2f}" for c, k in zip(cpu, kam))
    print(f"{r:<16} {med(r, 1):>12.0f} {med(r, 2):>8.0f} {statistics.median(cpu):>12.1f} "
          f"{statistics.median(cpu) / statistics.median(kam):>11.2f}  {ratios}")
PY
