#!/usr/bin/env bash
# Which slow calls did something else on the machine cause? Runs one
# `bench --compare` (a relay against the UAS directly, 2,000 INVITE/s each)
# while the kernel records every context switch on every CPU (ftrace
# `sched_switch`, on CLOCK_MONOTONIC), keeps each call's figures
# (`bench --samples`), and sets each call beside what ran on the CPUs while
# it was in flight. A call is "disturbed" when a thread that belongs neither
# to the relay nor to the instrument ran during it (the kernel's workers,
# other processes). Prints the added INVITE→final over all calls and over
# the undisturbed ones, and the threads that ran during the most calls,
# the relay's own non-SIP threads (timers, runtime) included.
#
# The undisturbed figures answer "what does the relay add on a machine with
# nothing else running"; they are not a benchmark result (a long call is
# likelier to overlap something, so dropping disturbed calls favours the
# tail). The foreign share of CPU time is printed to show how much is dropped.
#
# Needs root (tracefs). RELAY: sipsentry (busy_poll_us = POLL_US) or null
# (examples/null_relay.rs, polling POLL_US). HARNESS as in
# bench/e2e-floor.sh: `sleep` (UAS in its own process, nothing pinned) or
# `spin` (the UAC answers as the UAS and never sleeps, on CPU 0; the relay
# on CPU 1).
#
#   sudo bash bench/stall-trace.sh [sipsentry|null] [SECONDS] [POLL_US] [HARNESS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
relay=${1:-sipsentry}; secs=${2:-10}; poll=${3:-1000}; harness=${4:-spin}
T=/sys/kernel/tracing
[ -w "$T/tracing_on" ] || { echo "cannot write $T/tracing_on: run as root (sudo bash $0 …) on a kernel with tracefs mounted there" >&2; exit 2; }
case $relay in sipsentry|null) ;; *) echo "RELAY is sipsentry or null, not $relay" >&2; exit 2 ;; esac
case $harness in sleep|spin) ;; *) echo "HARNESS is sleep or spin, not $harness" >&2; exit 2 ;; esac
cargo build --release -q --bin sipsentry --example null_relay
B=target/release/sipsentry
work=$(mktemp -d); pids=()
old_clock=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$T/trace_clock"); old_size=$(sed 's/ .*//' "$T/buffer_size_kb")
cleanup() {
  echo 0 >"$T/tracing_on"; echo 0 >"$T/events/sched/sched_switch/enable"
  echo "$old_clock" >"$T/trace_clock"; echo "$old_size" >"$T/buffer_size_kb"; echo >"$T/trace"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
UAS=127.0.0.1:25090 RELAY=127.0.0.1:25091
if [ "$relay" = sipsentry ]; then
  relay_config "$work/s.toml" "$RELAY" "$UAS" "$poll"
  (cd "$work" && exec "$OLDPWD/$B" serve -c s.toml) >"$work/relay.log" 2>&1 & pids+=($!)
else
  target/release/examples/null_relay "$RELAY" "$UAS" "$poll" & pids+=($!)
fi
relay_pid=${pids[0]}
if [ "$harness" = sleep ]; then
  "$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
  uac=("$B" bench)
else
  taskset -a -cp 1 "$relay_pid" >/dev/null
  uac=(taskset -c 0 "$B" bench --with-uas "$UAS" --spin)
fi
sleep 1
# Threads known before the run: the relay's and the separate UAS's. The
# UAC's are found in the trace by its process id (its main thread does
# everything; its idle runtime threads count as foreign should they run).
tids() { ls "/proc/$1/task" | tr '\n' ' '; }
relay_tids=$(tids "$relay_pid")
uas_tids=$( [ "$harness" = sleep ] && tids "${pids[1]}" || true)
echo mono >"$T/trace_clock"; echo 65536 >"$T/buffer_size_kb"; echo >"$T/trace"
echo 1 >"$T/events/sched/sched_switch/enable"; echo 1 >"$T/tracing_on"
"${uac[@]}" --target "$RELAY" --compare "$UAS" --rate 4000 --duration "$secs" \
  --json --samples "$work/samples.csv" >"$work/report.json" &
bench=$!; pids+=("$bench")
wait "$bench"
echo 0 >"$T/tracing_on"
cat "$T/trace" >"$work/trace.txt"
python3 - "$work" "$relay $harness" "$RELAY" "$relay_tids" "$uas_tids $bench" <<'PY'
import bisect, collections, csv, re, sys
work, title, target = sys.argv[1:4]
relay_tids = {int(t) for t in sys.argv[4].split()}
instrument = {int(t) for t in sys.argv[5].split()}
switch = re.compile(r"\[(\d+)\].*?\s(\d+\.\d+): sched_switch: prev_comm=(.*) prev_pid=(\d+) .*==> next_comm=(.*) next_pid=(\d+) ")
events = [(int(m[1]), float(m[2]), int(m[4]), m[5], int(m[6]))
          for m in map(switch.search, open(f"{work}/trace.txt")) if m]
# Some threads' own events never reach the trace (in some containers, those
# of PID 1): they are seen switched in, never out. How
# long they ran is unknown, so each such run counts as an instant.
seen_out = {prev for _, _, prev, _, _ in events}
# (start, end, name, the relay's?) for every run of a thread that is not
# the instrument's, not the idle loop and not the relay's SIP thread.
runs, running = [], {}
for cpu, t, _, nxt, npid in events:
    if cpu in running:
        start, name, pid = running[cpu]
        if pid != 0 and pid not in instrument and not (pid in relay_tids and name in ("sip-udp", "null_relay")):
            name = re.sub(r"[/:]\d+.*|-\d+$", "", name)
            ours = pid in relay_tids
            runs.append((start, t if pid in seen_out else start, f"relay's {name}" if ours else name, ours))
    running[cpu] = (t, nxt, npid)
runs.sort()
starts = [r[0] for r in runs]
longest = max((e - s for s, e, _, _ in runs), default=0.0)
def overlapping(a, b):
    k = bisect.bisect_right(starts, b)
    found = set()
    for s, e, name, ours in reversed(runs[:k]):
        if s < a - longest:
            break
        if e >= a:
            found.add((name, ours))
    return found
def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0
rows = [r for r in csv.DictReader(open(f"{work}/samples.csv")) if r["final_us"]]
lat = {True: [], False: []}
clean = {True: [], False: []}
during = []
for r in rows:
    relayed = r["target"] == target
    a = int(r["scheduled_monotonic_ns"]) / 1e9
    us = int(r["final_us"])
    found = overlapping(a, a + us / 1e6)
    lat[relayed].append(us)
    if not any(not ours for _, ours in found):
        clean[relayed].append(us)
    during.append((relayed, us, found))
slow_at = 2 * pct(clean[True], 0.99)
blame, slow_blame = collections.Counter(), collections.Counter()
slow = slow_quiet = 0
for relayed, us, found in during:
    for name, _ in found:
        blame[name] += 1
    if relayed and us > slow_at:
        slow += 1
        slow_quiet += not found
        for name, _ in found:
            slow_blame[name] += 1
foreign = [(s, e) for s, e, _, ours in runs if not ours]
span = (events[-1][1] - events[0][1]) if events else 0.0
busy = sum(e - s for s, e in foreign)
print(f"{title}: {len(rows)} calls with a final response; foreign threads ran {len(foreign)} times, "
      f"{busy * 1e3:.1f} ms in {span:.1f} s ({100 * busy / max(span, 1e-9) / 2:.2f}% of 2 CPUs), longest {longest * 1e6:.0f} µs")
for name, sel in (("all calls", lat), ("undisturbed calls", clean)):
    r, d = sel[True], sel[False]
    print(f"  {name:18} relayed {len(r):6} direct {len(d):6}  added p50 {pct(r, .5) - pct(d, .5):+5} µs  "
          f"p90 {pct(r, .9) - pct(d, .9):+5}  p99 {pct(r, .99) - pct(d, .99):+6}")
print(f"  relayed calls slower than {slow_at} µs (twice the undisturbed p99): {slow}; nothing else ran during {slow_quiet} of them")
print("  threads that ran during the most calls (all calls / those slow ones):")
for name, n in blame.most_common(8):
    print(f"    {name:28} {n:6} / {slow_blame[name]}")
PY
