#!/usr/bin/env bash
# How many instructions sipsentry executes per relayed call, counted by
# valgrind's callgrind in the proxy's process (all its threads, user space;
# syscalls and the kernel are not counted). Unlike a timing, the count does
# not move with the machine's noise: the same binary gives the same figure to
# within 0.1%, so it shows a change to the CPU side of the call path that
# the latency and /proc figures are too noisy to see.
#
# The proxy passes every call (no Hiya cache, no history); `bench
# --with-uas` sends CALLS calls at 200/s after 400 uncounted warm-up calls,
# and only the counted window is instrumented. A call is INVITE, 100, 200,
# ACK, BYE and 200. Under valgrind the sha2 crate cannot use the CPU's SHA
# extensions, so the branch hash counts several times what it costs natively.
# Needs valgrind (Debian: valgrind). CALLGRIND_OUT=FILE keeps the counted
# window's profile for `callgrind_annotate --inclusive=yes FILE`.
#
# EXTRA_CONFIG="TOML lines" adds sections to the proxy's config, to A/B an
# option (e.g. EXTRA_CONFIG=$'[log]\ndecisions = false'); RELAY_HISTORY=true
# records every call in the history, as in production; RELAY_HIYA=true
# serves the bundled demo Hiya cache. CALLERS=FILE gives the callers (one
# per line, cycled) instead of generated distinct ones.
#
#   bash bench/instructions-per-call.sh [CALLS] [PROXY_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
calls=${1:-1000}; rate=200
command -v valgrind >/dev/null || { echo "needs valgrind (Debian: valgrind)" >&2; exit 2; }
[ $((calls % rate)) = 0 ] || { echo "CALLS must be a multiple of $rate" >&2; exit 2; }
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
proxy_bin=$(realpath "${2:-$B}")
work=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
UAS=127.0.0.1:25080
relay_config "$work/s.toml" 127.0.0.1:25061 "$UAS" 0
printf '%s\n' "${EXTRA_CONFIG:-}" >>"$work/s.toml"
(cd "$work" && exec valgrind -q --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/cg.out" "$proxy_bin" serve -c s.toml) >"$work/s.log" 2>&1 & pids+=($!)
proxy=$!
load() {
  "$B" bench --with-uas "$UAS" --target 127.0.0.1:25061 --compare "$UAS" \
    --rate $((rate * 2)) --duration "$1" ${CALLERS:+--callers "$CALLERS"} --json >"$work/bench.json"
}
# Under valgrind the proxy takes seconds to start; wait until it listens.
started=
for _ in $(seq 150); do
  if grep -q "listening" "$work/s.log" 2>/dev/null; then started=1; break; fi
  kill -0 "$proxy" 2>/dev/null || { echo "the proxy exited; its output:" >&2; cat "$work/s.log" >&2; exit 1; }
  sleep 0.2
done
[ -n "$started" ] || {
  echo "the proxy did not start listening within 30 s under valgrind (is 127.0.0.1:25061 or 25080 taken?); its output:" >&2
  cat "$work/s.log" >&2; exit 1; }
load 2
callgrind_control -i on "$proxy" >/dev/null 2>&1
load $((calls / rate))
callgrind_control -i off "$proxy" >/dev/null 2>&1
callgrind_control -d "$proxy" >/dev/null 2>&1
kill -INT "$proxy"; wait "$proxy" 2>/dev/null || true
python3 - "$work" "$calls" <<'EOF'
import glob, json, sys
work, calls = sys.argv[1], int(sys.argv[2])
total = 0
for f in glob.glob(work + "/cg.out*"):
    for line in open(f):
        if line.startswith("totals:"):
            total += int(line.split()[1])
report = json.load(open(work + "/bench.json"))
relayed = next(t for t in report["targets"] if t["target"] == "127.0.0.1:25061")
if relayed["codes"].get("200") != calls:
    sys.exit(f"only {relayed['codes']} of {calls} calls answered 200; the count would be wrong")
print(f"{total:,} instructions in the proxy over {calls} relayed calls: {total / calls:,.0f} per call")
EOF
# The dump holds the counted window; the file written at exit holds nothing.
if [ -n "${CALLGRIND_OUT:-}" ]; then cp "$work/cg.out.1" "$CALLGRIND_OUT"; fi
