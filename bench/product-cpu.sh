#!/usr/bin/env bash
# CPU per screened call in the shipping configuration, beside Kamailio:
#   sipsentry    history on, a deny list, the default pipeline, Hiya cache off
#   sipsentry+hiya  the same with the bundled demo Hiya cache, every call from
#                a caller it lists as SPAM (tagged from the local cache)
#   kamailio     5.6, stateless forward + htable deny check, one worker
#   kamailio-tm  5.6, tm's t_relay + htable deny check, one worker
#   kamailio-fm  the stateless one on Kamailio's fast allocator (`-x fm`)
#                instead of its default `qm`, which keeps debugging records
#                for every block (bench/lib.sh)
#   null relay   examples/null_relay.rs: each datagram passed on unread, one
#                thread sleeping in `recvfrom`; the floor of this machine's
#                kernel under any UDP relay of this load (every `sendto`
#                on loopback also delivers the datagram and wakes its reader)
# The same load for each (INVITE → 100 → 200, ACK, BYE → 200 from
# `sipsentry bench`, RATE calls/s, CALLS calls a round) in alternating
# rounds; per relay the added INVITE→final p50/p99 against the UAS reached
# directly, and its CPU µs per call (user + system ticks of all its
# processes, from /proc; also each part alone). Prints the medians over ROUNDS and each relay's
# CPU as a share of Kamailio's stateless forward, on its default allocator
# and on `-x fm`, then the same shares of what each costs above the floor.
#
# PROXY_BINARY, when given, is the sipsentry that relays (another build, to
# compare); the load tool is always this tree's.
#
#   bash bench/product-cpu.sh [RATE] [CALLS] [ROUNDS] [PROXY_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-2000}; calls=${2:-10000}; rounds=${3:-3}
command -v kamailio >/dev/null || { echo "needs kamailio (Debian: kamailio)" >&2; exit 2; }
cargo build --release -q --bin sipsentry --example null_relay
B=target/release/sipsentry
PROXY_BIN=$(realpath "${4:-$B}")
with_workdir
UAS=127.0.0.1:25080
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
deny='[policy]\ndeny = ["+1666*", "+15550000001", "+15550000002"]'
RELAY_HISTORY=true relay_config "$work/plain.toml" 127.0.0.1:25061 "$UAS" 0
printf '%b\n' "$deny" >>"$work/plain.toml"
RELAY_HISTORY=true RELAY_HIYA=true relay_config "$work/hiya.toml" 127.0.0.1:25062 "$UAS" 0
printf '%b\n' "$deny" >>"$work/hiya.toml"
sed -i 's|^\[history\]$|[history]\npath = "hiya-history.db"|' "$work/hiya.toml"
declare -A pid target
start_proxy plain.toml; pid[sipsentry]=$proxy
start_proxy hiya.toml; pid[sipsentry+hiya]=$proxy
target=([sipsentry]=127.0.0.1:25061 [sipsentry+hiya]=127.0.0.1:25062
        [kamailio]=127.0.0.1:27061 [kamailio-tm]=127.0.0.1:27062 [kamailio-fm]=127.0.0.1:27063
        [null]=127.0.0.1:25064)
target/release/examples/null_relay "${target[null]}" "$UAS" 0 >"$work/null.log" 2>&1 & pids+=($!); pid[null]=$!
# `kam NAME ARGS…`: Kamailio on bench/kamailio-htable.cfg at the target
# of NAME, with ARGS (-A TM, -x fm), logging to $work/NAME.log. 1 GB of
# shared memory: tm keeps every transaction for seconds after it ends, and
# 64 or 256 MB run out at this rate (it then answers 500).
kam() {
  local name=$1; shift
  kamailio -f bench/kamailio-htable.cfg -DD -E -m 1024 -M 8 "$@" -A "LISTEN=udp:${target[$name]}" \
    -L /usr/lib/x86_64-linux-gnu/kamailio/modules >"$work/$name.log" 2>&1 & pids+=($!); pid[$name]=$!
}
kam kamailio
kam kamailio-tm -A TM
kam kamailio-fm -x fm
sleep 2
for k in kamailio kamailio-tm kamailio-fm null; do
  kill -0 "${pid[$k]}" 2>/dev/null || { echo "$k did not start:" >&2; cat "$work/$k.log" >&2; exit 1; }
done
# Listed as SPAM (score 75): tagged, and relayed like any other call.
echo "+919000000002" >"$work/spam-callers.txt"
tck=$(getconf CLK_TCK)
# User and system ticks of all processes of a relay: the pid and its
# children (Kamailio's workers).
cpu_ticks() {
  local u=0 s=0 p a b
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat")
    u=$((u + a)); s=$((s + b))
  done
  echo "$u $s"
}
: >"$work/results"
for round in $(seq "$rounds"); do
  for r in sipsentry sipsentry+hiya kamailio kamailio-tm kamailio-fm null; do
    extra=()
    [ "$r" = sipsentry+hiya ] && extra=(--callers "$work/spam-callers.txt")
    read -r u0 s0 < <(cpu_ticks "${pid[$r]}")
    json=$("$B" bench --target "${target[$r]}" --compare "$UAS" --rate $((rate * 2)) \
      --count $((calls * 2)) "${extra[@]}" --json)
    read -r u1 s1 < <(cpu_ticks "${pid[$r]}")
    # Every sipsentry call must have been relayed and answered, or the CPU
    # is not that of a screened call (a reject costs a fraction of a
    # relay). Kamailio with tm and one worker is past its capacity at this
    # rate and loses a few calls: said, not fatal; an error answer is.
    echo "$json" | python3 -c "
import json, sys
t = next(t for t in json.load(sys.stdin)['targets'] if t['target'] == '${target[$r]}')
c = t['codes']
if set(c) != {'200'} or ('$r'.startswith('sipsentry') and c['200'] != $calls):
    sys.exit(f'$r answered {c}, not $calls × 200')
if c['200'] != $calls:
    print(f'$r: {$calls - c[\"200\"]} of $calls calls unanswered', file=sys.stderr)"
    read -r p50 p99 < <(echo "$json" | field "${target[$r]}")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p50" "$p99" \
      "$(python3 -c "print(($u1 - $u0 + $s1 - $s0) * 1e6 / $tck / $calls)")" \
      "$(python3 -c "print(($u1 - $u0) * 1e6 / $tck / $calls)")" \
      "$(python3 -c "print(($s1 - $s0) * 1e6 / $tck / $calls)")" >>"$work/results"
  done
done
python3 - "$work/results" "$rate" "$calls" "$rounds" <<'PY'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]).read().split('\n') if l]
rate, calls, rounds = sys.argv[2:5]
print(f"{rate} calls/s, {rounds} alternating rounds of {calls} calls, medians (CPU: each round)")
med = lambda r, i: statistics.median(float(x[i]) for x in rows if x[0] == r)
kam = [float(x[3]) for x in rows if x[0] == "kamailio"]
fm = [float(x[3]) for x in rows if x[0] == "kamailio-fm"]
print(f"{'relay':<16} {'added p50 µs':>12} {'p99 µs':>8} {'CPU µs/call':>12} {'user':>6} {'sys':>6} "
      f"{'÷ kamailio':>11} {'÷ fm':>6}  rounds (÷ kamailio)")
for r in ("sipsentry", "sipsentry+hiya", "kamailio", "kamailio-tm", "kamailio-fm", "null"):
    cpu = [float(x[3]) for x in rows if x[0] == r]
    ratios = " ".join(f"{c / k:.2f}" for c, k in zip(cpu, kam))
    print(f"{r:<16} {med(r, 1):>12.0f} {med(r, 2):>8.0f} {statistics.median(cpu):>12.1f} "
          f"{med(r, 4):>6.0f} {med(r, 5):>6.0f} "
          f"{statistics.median(cpu) / statistics.median(kam):>11.2f} "
          f"{statistics.median(cpu) / statistics.median(fm):>6.2f}  {ratios}")
floor = statistics.median(float(x[3]) for x in rows if x[0] == "null")
above = lambda r: statistics.median(float(x[3]) for x in rows if x[0] == r) - floor
print(f"above the null relay's {floor:.1f} µs/call:", ", ".join(
    f"{r} {above(r):.1f} (÷ kamailio {above(r) / above('kamailio'):.2f}, ÷ fm {above(r) / above('kamailio-fm'):.2f})"
    for r in ("sipsentry", "sipsentry+hiya", "kamailio-fm")))
PY
