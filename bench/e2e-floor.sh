#!/usr/bin/env bash
# What each relay adds to INVITE→final at one rate, against the UAS reached
# directly: sipsentry sleeping and busy polling (`sip.busy_poll_us`),
# Kamailio as a stateless forwarder (when installed) on its default
# allocator and on its fast one (`-x fm`), and the null relay
# (examples/null_relay.rs: no SIP at all, the floor) sleeping and polling.
# Each target is measured on its own (`--target X --compare UAS`), RUNS times,
# in turn, so a noisy minute of the machine hits every row. Beside the latency, the
# CPU time each relay's processes used per relayed call (user + system, from
# /proc; a polling relay's includes its polling).
#
# HARNESS `sleep` (default): the UAC and the UAS (`bench --uas`) sleep until
# each message, as real endpoints do; their own wake-ups are in every figure.
# HARNESS `spin`: the UAC answers as the UAS on its own thread
# (`--with-uas`), never sleeps (`--spin`) and is pinned to CPU 0, the relays
# to CPU 1, so the instrument wakes no thread and shares no core with the
# relay: what remains is what each relay adds.
# HARNESS `onecore`: as `spin`, but the relays share CPU 0 with the
# instrument and CPU 1 stays idle. Relayed and direct calls then meet the
# same CPU's stalls (in `spin`, relayed calls meet both CPUs' and direct
# calls one CPU's), and the relay's own CPU time adds to every relayed call.
#
# HALT_POLL_NS=N (root, KVM guests with the haltpoll cpuidle driver): sets
# the guest's idle halt polling (/sys/module/haltpoll/parameters/
# guest_halt_poll_ns) to N for the runs and puts the old value back after.
# The kernel's default is 200000; a guest booted with 0 halts an idle vCPU
# at once, and every wake-up of a sleeping thread then pays a VM exit.
#
#   [HALT_POLL_NS=N] bash bench/e2e-floor.sh [RATE_PER_TARGET] [SECONDS] [RUNS] [POLL_US] [HARNESS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-2000}; secs=${2:-10}; runs=${3:-2}; poll=${4:-1000}; harness=${5:-sleep}
cargo build --release -q --bin sipsentry --example null_relay
B=target/release/sipsentry
work=$(mktemp -d); pids=()
halt_poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
halt_poll_was=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
  if [ -n "$halt_poll_was" ]; then echo "$halt_poll_was" >"$halt_poll"; fi
}
trap cleanup EXIT
if [ -n "${HALT_POLL_NS:-}" ]; then
  [ -w "$halt_poll" ] || { echo "HALT_POLL_NS needs root and the haltpoll cpuidle driver ($halt_poll)" >&2; exit 2; }
  halt_poll_was=$(cat "$halt_poll")
  echo "$HALT_POLL_NS" >"$halt_poll"
fi
UAS=127.0.0.1:25080
case $harness in
  sleep) "$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!); uac=("$B" bench) ;;
  spin | onecore) uac=(taskset -c 0 "$B" bench --with-uas "$UAS" --spin) ;;
  *) echo "HARNESS is sleep, spin or onecore, not $harness" >&2; exit 2 ;;
esac
names=(); addrs=(); who=()
for p in 0 "$poll"; do
  port=$((25060 + (p > 0)))
  relay_config "$work/s$p.toml" "127.0.0.1:$port" "$UAS" "$p"
  (cd "$work" && exec "$OLDPWD/$B" serve -c "s$p.toml") >"$work/s$p.log" 2>&1 & pids+=($!)
  names+=("sipsentry, busy_poll_us = $p"); addrs+=("127.0.0.1:$port"); who+=($!)
done
if start_kamailio "$work/kamailio.log"; then
  pids+=($!)
  names+=("Kamailio 5.6 stateless"); addrs+=("127.0.0.1:27060"); who+=(kamailio:27060)
  start_kamailio "$work/kamailio-fm.log" 127.0.0.1:27066 fm; pids+=($!)
  names+=("Kamailio 5.6 stateless, -x fm"); addrs+=("127.0.0.1:27066"); who+=(kamailio:27066)
fi
for p in 0 "$poll"; do
  port=$((25070 + (p > 0)))
  target/release/examples/null_relay "127.0.0.1:$port" "$UAS" "$p" & pids+=($!)
  names+=("null relay, poll $p µs"); addrs+=("127.0.0.1:$port"); who+=($!)
done
relay_cpu=
case $harness in spin) relay_cpu=1 ;; onecore) relay_cpu=0 ;; esac
if [ -n "$relay_cpu" ]; then
  for p in "${pids[@]}" $(pgrep -f kamailio-stateless.cfg || true); do taskset -a -cp "$relay_cpu" "$p" >/dev/null; done
fi
sleep 1
: >"$work/results"
# `cpu_ticks WHO`: user + system clock ticks used so far by a relay (a pid,
# or `kamailio:PORT` for all the processes of the Kamailio on PORT).
cpu_ticks() {
  local p t=0
  for p in $(case $1 in kamailio:*) pgrep -f "LISTEN=udp:127.0.0.1:${1#kamailio:}" ;; *) echo "$1" ;; esac); do
    [ -r "/proc/$p/stat" ] || { echo "relay process $p exited during the runs; run it by hand to see why" >&2; exit 1; }
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
tck=$(getconf CLK_TCK)
for run in $(seq "$runs"); do
  for i in "${!addrs[@]}"; do
    c0=$(cpu_ticks "${who[$i]}")
    json=$("${uac[@]}" --target "${addrs[$i]}" --compare "$UAS" --rate $((rate * 2)) --duration "$secs" --json)
    c1=$(cpu_ticks "${who[$i]}")
    read -r p50 p99 < <(echo "$json" | field "${addrs[$i]}")
    cpu_us=$(( (c1 - c0) * 1000000 / tck / (rate * secs) ))
    printf '%s\t%s\t%s\t%s\n' "${names[$i]}" "$p50" "$p99" "$cpu_us" >>"$work/results"
  done
done
# Rows in start order; medians over the runs, then every run as p50/p99.
python3 - "$work/results" "$rate" "$secs" "$harness" "${HALT_POLL_NS:+, guest_halt_poll_ns $HALT_POLL_NS}" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, p50, p99, cpu = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((int(p50), int(p99), int(cpu)))
print(f"| relay (added INVITE→final at {sys.argv[2]} INVITE/s, µs, runs of {sys.argv[3]} s, {sys.argv[4]} harness{sys.argv[5]}) | median p50 | median p99 | CPU µs per call | each run p50/p99 |")
print("|---|---|---|---|---|")
for name, r in rows.items():
    m50, m99, mcpu = (statistics.median(x[k] for x in r) for k in range(3))
    print(f"| {name} | {m50:g} | {m99:g} | {mcpu:g} | {', '.join(f'{a}/{b}' for a, b, _ in r)} |")
PY
