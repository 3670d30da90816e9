#!/usr/bin/env bash
# How many instructions sipsentry (or Kamailio, with KAMAILIO below)
# executes per relayed call, counted by valgrind's callgrind in the relay's
# processes (all their threads, user space; syscalls and the kernel are
# not counted). Unlike a timing, the count does not move with the
# machine's noise: the same binary gives the same figure to within 0.1%, so
# it shows a change to the CPU side of the call path that the latency and
# /proc figures are too noisy to see.
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
# KAMAILIO=qm or KAMAILIO=fm counts Kamailio instead, under the same load:
# bench/kamailio-htable.cfg (stateless forward and an htable deny check,
# one worker; the baseline of bench/product-cpu.sh) on its default
# allocator or on `-x fm`, all its processes summed. The two programs'
# counts compare work, not time: qm's debugging walks run many cheap
# instructions (docs/performance.md, "Kamailio's allocator").
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
TARGET=127.0.0.1:25061
# Under valgrind a relay takes seconds to start; `ready CHECK…` waits until
# the command CHECK succeeds, and gives up with the relay's output if the
# relay exits or 30 s pass.
ready() {
  for _ in $(seq 150); do
    if "$@" 2>/dev/null; then return; fi
    kill -0 "$proxy" 2>/dev/null || { echo "the relay exited; its output:" >&2; cat "$work/s.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "the relay did not start within 30 s under valgrind (is $TARGET or $UAS taken?); its output:" >&2
  cat "$work/s.log" >&2; exit 1
}
listens() { ss -Hlun "sport = :${TARGET##*:}" | grep -q .; }
case ${KAMAILIO:-} in
  "")
    relay_config "$work/s.toml" "$TARGET" "$UAS" 0
    printf '%s\n' "${EXTRA_CONFIG:-}" >>"$work/s.toml"
    (cd "$work" && exec valgrind -q --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$work/cg.out" "$proxy_bin" serve -c s.toml) >"$work/s.log" 2>&1 & pids+=($!)
    proxy=$!
    ready grep -q listening "$work/s.log" ;;
  qm | fm)
    command -v kamailio >/dev/null || { echo "KAMAILIO needs kamailio (Debian: kamailio)" >&2; exit 2; }
    # Every process it forks is counted (%p: one profile each).
    valgrind -q --tool=callgrind --instr-atstart=no --trace-children=yes \
      --callgrind-out-file="$work/cg.out.%p" kamailio -f bench/kamailio-htable.cfg -DD -E \
      -m 64 -M 8 -x "$KAMAILIO" -A "LISTEN=udp:$TARGET" \
      -L /usr/lib/x86_64-linux-gnu/kamailio/modules >"$work/s.log" 2>&1 & pids+=($!)
    proxy=$!
    # The worker starts after the listener is bound; the uncounted warm-up
    # below covers the rest.
    ready listens
    sleep 2 ;;
  *) echo "KAMAILIO is qm or fm, not $KAMAILIO" >&2; exit 2 ;;
esac
load() {
  "$B" bench --with-uas "$UAS" --target "$TARGET" --compare "$UAS" \
    --rate $((rate * 2)) --duration "$1" ${CALLERS:+--callers "$CALLERS"} --json >"$work/bench.json"
}
# With no pid, callgrind_control reaches every process under callgrind:
# Kamailio's are its children.
counted() {
  if [ -n "${KAMAILIO:-}" ]; then callgrind_control "$@"; else callgrind_control "$@" "$proxy"; fi >/dev/null 2>&1
}
load 2
counted -i on
load $((calls / rate))
counted -i off
counted -d
kill -INT "$proxy"; wait "$proxy" 2>/dev/null || true
python3 - "$work" "$calls" "$TARGET" <<'EOF'
import glob, json, sys
work, calls, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
total = 0
for f in glob.glob(work + "/cg.out*"):
    for line in open(f):
        if line.startswith("totals:"):
            total += int(line.split()[1])
report = json.load(open(work + "/bench.json"))
relayed = next(t for t in report["targets"] if t["target"] == target)
if relayed["codes"].get("200") != calls:
    sys.exit(f"only {relayed['codes']} of {calls} calls answered 200; the count would be wrong")
print(f"{total:,} instructions in the relay over {calls} relayed calls: {total / calls:,.0f} per call")
EOF
# The dump holds the counted window; the file written at exit holds nothing.
# Of Kamailio's processes, the largest dump is its worker's.
if [ -n "${CALLGRIND_OUT:-}" ]; then cp "$(ls -S "$work"/cg.out*.1 | head -1)" "$CALLGRIND_OUT"; fi
