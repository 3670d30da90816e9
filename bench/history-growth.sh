#!/usr/bin/env bash
# What the history writer costs per row as its table grows: one proxy with
# the history on (an empty database at start) relays ROUNDS rounds of CALLS
# calls at RATE calls/s from generated callers, each new; after each round,
# the writer thread's CPU per row written in it (exact, from
# /proc/PID/task/TID/schedstat) and the size of the database and its WAL.
#
# bench/product-cpu.sh starts from an empty table, so its history cost is
# that of the first rows; this shows how it rises from there.
#
#   bash bench/history-growth.sh [RATE] [CALLS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
rate=${1:-4000}; calls=${2:-20000}; rounds=${3:-6}
cargo build --release -q --bin sipsentry
B=target/release/sipsentry
with_workdir
UAS=127.0.0.1:25080
"$B" bench --uas "$UAS" >/dev/null 2>&1 & pids+=($!)
RELAY_HISTORY=true relay_config "$work/s.toml" 127.0.0.1:25061 "$UAS" 0
start_proxy s.toml
writer=
for t in /proc/"$proxy"/task/*; do
  [ "$(cat "$t/comm")" = history ] && writer=$t
done
[ -n "$writer" ] || { echo "no history thread in the proxy" >&2; exit 1; }
echo "rows before | writer CPU per row (µs) | history.db (MB) | WAL (MB)"
rows=0
for _ in $(seq "$rounds"); do
  a=$(cut -d' ' -f1 "$writer/schedstat")
  "$B" bench --target 127.0.0.1:25061 --rate "$rate" --count "$calls" --json >/dev/null
  # The writer's round: rows reach it within history.batch_ms.
  sleep 0.5
  b=$(cut -d' ' -f1 "$writer/schedstat")
  db=$(stat -c %s "$work/sipsentry-data/history.db")
  wal=$(stat -c %s "$work/sipsentry-data/history.db-wal" 2>/dev/null || echo 0)
  python3 -c "print(f'{$rows} | {($b - $a) / $calls / 1000:.1f} | {$db / 1e6:.1f} | {$wal / 1e6:.1f}')"
  rows=$((rows + calls))
done
