#!/usr/bin/env bash
# How many heap allocations sipsentry makes per relayed call: a uprobe on
# glibc's malloc counts every call to it in the proxy's process (all its
# threads) while `bench --with-uas` passes RATE calls/s through it (pass
# decisions, no Hiya cache, no history). A call is INVITE, 100, 200, ACK,
# BYE and 200. Needs root and `perf`; the probe is removed again at the end.
#
#   sudo bash bench/allocs-per-call.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-2000}; secs=${2:-4}
command -v perf >/dev/null || { echo "needs perf (Debian: linux-perf)" >&2; exit 2; }
libc=$(ldconfig -p | awk '/libc\.so\.6 .*x86-64/ {print $NF; exit}')
[ -n "$libc" ] || { echo "cannot find libc.so.6 with ldconfig -p" >&2; exit 2; }
added=
if ! perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc'; then
  perf probe -q -x "$libc" malloc || {
    echo "cannot add a uprobe on $libc malloc; run as root: sudo bash $0 $*" >&2; exit 2; }
  added=1
fi
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
work=$(mktemp -d); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
  if [ -n "$added" ]; then perf probe -q -d probe_libc:malloc || true; fi
}
trap cleanup EXIT
UAS=127.0.0.1:25080
relay_config "$work/s.toml" 127.0.0.1:25061 "$UAS" 0
(cd "$work" && exec "$OLDPWD/$B" serve -c s.toml) >"$work/s.log" 2>&1 & pids+=($!)
proxy=$!
sleep 1
# One second of warm-up before counting and one after, so the window holds
# whole calls at the steady rate.
"$B" bench --with-uas "$UAS" --target 127.0.0.1:25061 --compare "$UAS" \
  --rate $((rate * 2)) --duration $((secs + 2)) --json >"$work/bench.json" & pids+=($!)
load=$!
sleep 1
perf stat -e probe_libc:malloc -p "$proxy" -x, -o "$work/stat" -- sleep "$secs"
wait "$load"
awk -F, -v calls=$((rate * secs)) '/malloc/ {printf "%d allocations in the proxy over %d relayed calls: %.1f per call\n", $1, calls, $1 / calls}' "$work/stat"
